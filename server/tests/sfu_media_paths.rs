//! The SFU's other paths: keyframe requests (on subscribe, and relayed from
//! a subscriber to the publisher), video packets reported lost sent again,
//! an unanswered offer rolled back and offered again, ICE failure ending
//! the session, and the media close paths (parent close, double close,
//! close racing with open).

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use app::model::{LeaveReason, RoomCode};
use common::rtc_client::MediaGuest;
use common::{eventually, Backend, TestDb, TestServer};

const MEDIA: Duration = Duration::from_secs(30);

async fn counts(server: &TestServer, room: &RoomCode) -> (u64, u64, u64) {
    let r = server.resources(room).await;
    let n = |k: &str| r[k].as_u64().unwrap_or(u64::MAX);
    (n("peer_connections"), n("tracks"), n("forwarders"))
}

async fn wait_counts(server: &TestServer, room: &RoomCode, want: (u64, u64, u64)) {
    eventually(MEDIA, &format!("(peer connections, tracks, forwarders) = {want:?}"), || async {
        (counts(server, room).await == want).then_some(())
    })
    .await;
}

async fn hear_each_other(a: &MediaGuest, b: &MediaGuest, packets: u64) {
    eventually(MEDIA, "media both ways", || async {
        (a.stats().received_from(b.participant()) >= packets && b.stats().received_from(a.participant()) >= packets)
            .then_some(())
    })
    .await;
}

/// A server on SQLite and Ada and Bob in one room, hearing each other.
async fn ada_and_bob_in_a_call() -> (TestServer, RoomCode, MediaGuest, MediaGuest) {
    let server = TestServer::start(Backend::SqliteMemory).await;
    let host = server.guest();
    let room = host.create_room("Ada", false).await.expect("room");
    let ada = MediaGuest::join_as(host, &room, "Ada").await;
    let bob = MediaGuest::join(&server, &room, "Bob").await;
    hear_each_other(&ada, &bob, 20).await;
    (server, room, ada, bob)
}

/// A server with extra flags on SQLite and the in-process store.
async fn server_with(flags: &[&str]) -> TestServer {
    let db = TestDb::sqlite();
    let mut args = vec!["cleanroom".to_owned(), "--debug-api".into(), "--database-url".into(), db.url.clone()];
    args.extend(flags.iter().map(|f| (*f).to_owned()));
    let mut server = TestServer::with_args(&args).await;
    server.db = Some(db);
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyframes_are_requested_on_subscribe_and_relayed_from_subscribers() {
    let (server, room, ada, bob) = ada_and_bob_in_a_call().await;
    // Each got a subscriber, so each was asked for a keyframe.
    for guest in [&ada, &bob] {
        eventually(MEDIA, "a keyframe request on subscribe", || async {
            (guest.stats().keyframe_requests.load(Ordering::Acquire) >= 1).then_some(())
        })
        .await;
    }
    // Bob's decoder asks for a keyframe of Ada's video: Ada is asked.
    for _ in 0..3 {
        let before = ada.stats().keyframe_requests.load(Ordering::Acquire);
        bob.client().request_keyframe(ada.participant());
        eventually(MEDIA, "Bob's PLI relayed to Ada", || async {
            (ada.stats().keyframe_requests.load(Ordering::Acquire) > before).then_some(())
        })
        .await;
    }
    ada.leave().await;
    bob.leave().await;
    wait_counts(&server, &room, (0, 0, 0)).await;
    server.stop().await;
}

/// The server's `cleanroom_packets_resent_total`.
async fn packets_resent(server: &TestServer) -> Option<u64> {
    let metrics = reqwest::get(server.url("/metrics")).await.ok()?.text().await.ok()?;
    let line = metrics.lines().find(|l| l.starts_with("cleanroom_packets_resent_total "))?;
    line.rsplit(' ').next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_packets_a_subscriber_reports_lost_are_sent_again() {
    let (server, room, ada, bob) = ada_and_bob_in_a_call().await;
    eventually(MEDIA, "Ada's video at Bob", || async {
        (bob.stats().video_received_from(ada.participant()) >= 10).then_some(())
    })
    .await;
    // The counter is the process's (other tests' servers add to it too).
    let before = packets_resent(&server).await.expect("the metric is there from the start");
    // Bob says he missed the newest 5 of Ada's video packets he got: they
    // were sent well within the second the server keeps them.
    bob.client().report_lost(ada.participant(), 5);
    eventually(MEDIA, "the 5 packets sent again", || async {
        (packets_resent(&server).await? >= before + 5).then_some(())
    })
    .await;
    ada.leave().await;
    bob.leave().await;
    wait_counts(&server, &room, (0, 0, 0)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_offer_is_rolled_back_and_offered_again() {
    let server = server_with(&["--offer-timeout-ms", "300"]).await;
    let host = server.guest();
    let room = host.create_room("Ada", false).await.expect("room");
    let ada = MediaGuest::join_as(host, &room, "Ada").await;
    // Bob's page drops the first two offers on the floor.
    let bob = MediaGuest::join_with(server.guest(), &room, "Bob", 2).await;
    hear_each_other(&ada, &bob, 20).await;
    assert!(bob.stats().answers.load(Ordering::Acquire) >= 1);
    wait_counts(&server, &room, (2, 4, 4)).await;
    ada.leave().await;
    bob.leave().await;
    wait_counts(&server, &room, (0, 0, 0)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_failure_ends_the_session() {
    let server = server_with(&["--suspect-ms", "300", "--remove-ms", "1500"]).await;
    let host = server.guest();
    let room = host.create_room("Ada", false).await.expect("room");
    let ada = MediaGuest::join_as(host, &room, "Ada").await;
    let bob = MediaGuest::join(&server, &room, "Bob").await;
    hear_each_other(&ada, &bob, 20).await;
    let bob_session = bob.outcome.session_id.clone();
    // Bob's machine vanishes: no leave, his connection just stops.
    bob.close().await;
    eventually(MEDIA, "Bob's session ended", || async {
        server.leave_reason(&bob_session).await.filter(|r| r == "ice-failed")
    })
    .await;
    wait_counts(&server, &room, (1, 2, 0)).await;
    ada.leave().await;
    wait_counts(&server, &room, (0, 0, 0)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_close_paths_release_everything_once() {
    let (server, room, ada, bob) = ada_and_bob_in_a_call().await;
    wait_counts(&server, &room, (2, 4, 4)).await;

    // Parent close: closing Bob's live session (its token) closes his media;
    // Ada's forwarders of his tracks go too.
    let rooms = &server.state.rooms;
    let live = rooms.sessions().get(&bob.outcome.session_id).expect("live");
    assert!(live.close(LeaveReason::Kicked));
    wait_counts(&server, &room, (1, 2, 0)).await;
    // Double close: the media close path finds nothing left, twice.
    rooms.media().close_session(&room, &bob.outcome.session_id, LeaveReason::Kicked).await;
    rooms.media().close_session(&room, &bob.outcome.session_id, LeaveReason::Left).await;
    rooms.end_session(&room, &bob.outcome.session_id, &live.user, LeaveReason::Kicked).await.expect("end");
    rooms.end_session(&room, &bob.outcome.session_id, &live.user, LeaveReason::Kicked).await.expect("end again");
    assert_eq!(counts(&server, &room).await, (1, 2, 0));
    bob.close().await;

    // Close racing with open: Cyd leaves right as her media opens.
    for _ in 0..5 {
        let cyd = MediaGuest::join(&server, &room, "Cyd").await;
        cyd.leave().await;
    }
    wait_counts(&server, &room, (1, 2, 0)).await;
    let r = server.resources(&room).await;
    assert_eq!(r["sessions"], 1, "{r}");

    ada.leave().await;
    wait_counts(&server, &room, (0, 0, 0)).await;
    let r = server.resources(&room).await;
    assert_eq!((r["sessions"].as_u64(), r["rooms"][0]["store_keys"].as_u64()), (Some(0), Some(0)), "{r}");
    server.stop().await;
}
