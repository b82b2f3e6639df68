//! Join/leave cycles with media leave nothing behind: after `SFU_LEAK_CYCLES`
//! (default 30; run with 200 for the full check) participants each joined a
//! resident, exchanged RTP with it and left, the server holds only the
//! resident's connection and tracks, no forwarder, the runtime's task count
//! is back to its baseline and RSS stays within a bound of its level after
//! the first 10 cycles.

mod common;

use std::time::Duration;

use app::model::RoomCode;
use common::rtc_client::MediaGuest;
use common::{eventually, Backend, TestServer};

const MEDIA: Duration = Duration::from_secs(30);
/// Allowed RSS growth after the first 10 cycles, in KiB, for any cycle count.
const RSS_SLACK_KIB: u64 = 64 * 1024;

fn cycles() -> usize {
    std::env::var("SFU_LEAK_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(30)
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current().metrics().num_alive_tasks()
}

async fn media_counts(server: &TestServer, room: &RoomCode) -> (u64, u64, u64, u64) {
    let r = server.resources(room).await;
    let n = |k: &str| r[k].as_u64().unwrap_or(u64::MAX);
    (n("peer_connections"), n("tracks"), n("forwarders"), n("sessions"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_leave_cycles_leave_nothing_behind() {
    let cycles = cycles();
    let server = TestServer::start(Backend::SqliteMemory).await;
    let host = server.guest();
    let room = host.create_room("Resident", false).await.expect("room");
    let resident = MediaGuest::join_as(host, &room, "Resident").await;
    eventually(MEDIA, "resident connected", || async { resident.stats().is_connected().then_some(()) }).await;
    eventually(MEDIA, "resident's tracks published", || async {
        (media_counts(&server, &room).await == (1, 2, 0, 1)).then_some(())
    })
    .await;
    let baseline_tasks = alive_tasks();
    let mut rss_after_10 = None;

    for i in 0..cycles {
        let visitor = MediaGuest::join(&server, &room, "Visitor").await;
        let before = resident.stats().received_from(visitor.participant());
        eventually(MEDIA, &format!("cycle {i}: media both ways"), || async {
            (resident.stats().received_from(visitor.participant()) > before + 5
                && visitor.stats().received_from(resident.participant()) > 5)
                .then_some(())
        })
        .await;
        visitor.leave().await;
        if (i + 1) % 50 == 0 {
            eprintln!("sfu_leak: after {} cycles RSS {} KiB, tasks {}", i + 1, rss_kib(), alive_tasks());
        }
        if i + 1 == 10 {
            rss_after_10 = Some(rss_kib());
        }
    }

    eventually(MEDIA, "only the resident's media left", || async {
        (media_counts(&server, &room).await == (1, 2, 0, 1)).then_some(())
    })
    .await;
    // Freed send slots are reused: the resident's SDP holds its own three
    // sections (audio, video, screen share) plus one audio and one video
    // slot, however many came and went.
    let offer = resident.stats().last_offer();
    assert_eq!(offer.lines().filter(|l| l.starts_with("m=")).count(), 5, "{offer}");
    // And each slot's visitors take turns with two SSRCs, each going on
    // from where it stopped (the connection keeps state for every SSRC it
    // ever sent; a browser needs a new SSRC from one visitor to the next),
    // with media every cycle (waited for above).
    assert_eq!(resident.stats().streams(), 4, "two audio and two video streams, however many visitors came");
    let tasks = eventually(MEDIA, "tasks back to the baseline", || async {
        let now = alive_tasks();
        (now <= baseline_tasks).then_some(now)
    })
    .await;
    let rss_end = rss_kib();
    let rss_10 = rss_after_10.unwrap_or(rss_end);
    eprintln!(
        "sfu_leak: {cycles} cycles; tasks {baseline_tasks} -> {tasks}; RSS after 10 cycles {rss_10} KiB, at the end {rss_end} KiB ({:+} KiB)",
        rss_end as i64 - rss_10 as i64
    );
    assert!(rss_end <= rss_10 + RSS_SLACK_KIB, "RSS grew from {rss_10} KiB to {rss_end} KiB");

    resident.leave().await;
    eventually(MEDIA, "nothing left", || async { (media_counts(&server, &room).await == (0, 0, 0, 0)).then_some(()) })
        .await;
    server.stop().await;
}
