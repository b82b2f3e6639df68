//! Three headless participants in one room each receive RTP from the other
//! two through the SFU. When one leaves, the others' next offer drops its
//! tracks, they stop receiving it, and every server resource of its session
//! (peer connection, tracks, forwarders from and to it, store entries) is
//! gone; the counts in `/api/debug/resources` go down accordingly.

mod common;

use std::time::Duration;

use app::model::{RoomCode, UserId};
use common::rtc_client::MediaGuest;
use common::{eventually, Backend, TestServer};
use server::store::ResourceKind;

const MEDIA: Duration = Duration::from_secs(30);
/// Packets from every other publisher before we call it "receiving".
const ENOUGH: u64 = 50;

async fn counts(server: &TestServer, room: &RoomCode) -> (u64, u64, u64) {
    let r = server.resources(room).await;
    (
        r["peer_connections"].as_u64().expect("peer_connections"),
        r["tracks"].as_u64().expect("tracks"),
        r["forwarders"].as_u64().expect("forwarders"),
    )
}

async fn wait_counts(server: &TestServer, room: &RoomCode, want: (u64, u64, u64)) {
    eventually(MEDIA, &format!("(peer connections, tracks, forwarders) = {want:?}"), || async {
        (counts(server, room).await == want).then_some(())
    })
    .await;
}

async fn all_hear_each_other(guests: &[&MediaGuest]) {
    for listener in guests {
        for speaker in guests {
            if listener.participant() == speaker.participant() {
                continue;
            }
            eventually(MEDIA, &format!("{} hears {}", listener.participant(), speaker.participant()), || async {
                (listener.stats().received_from(speaker.participant()) >= ENOUGH).then_some(())
            })
            .await;
        }
    }
}

/// (media kind, direction, msid stream) of each m-section of an SDP.
fn sections(sdp: &str) -> Vec<(String, String, Option<String>)> {
    let mut out: Vec<(String, String, Option<String>)> = Vec::new();
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            out.push((m.split(' ').next().unwrap_or("").to_owned(), String::new(), None));
        } else if let Some(last) = out.last_mut() {
            if matches!(line, "a=sendonly" | "a=recvonly" | "a=sendrecv" | "a=inactive") {
                last.1 = line[2..].to_owned();
            } else if let Some(msid) = line.strip_prefix("a=msid:") {
                last.2 = msid.split(' ').next().map(str::to_owned);
            }
        }
    }
    out
}

async fn three_clients(backend: Backend) {
    let server = TestServer::start(backend).await;
    let host = server.guest();
    let room = host.create_room("Ada", false).await.expect("room");
    let ada = MediaGuest::join_as(host, &room, "Ada").await;
    let bob = MediaGuest::join(&server, &room, "Bob").await;
    all_hear_each_other(&[&ada, &bob]).await;
    // Cyd arrives once Ada's and Bob's tracks are published.
    let cyd = MediaGuest::join(&server, &room, "Cyd").await;

    all_hear_each_other(&[&ada, &bob, &cyd]).await;
    // 3 connections, 2 tracks each, each track forwarded to 2 others.
    wait_counts(&server, &room, (3, 6, 12)).await;

    // Every forwarded track names its publisher as stream id, with a unique track id.
    let offer = ada.stats().last_offer();
    for other in [&bob, &cyd] {
        let msids: Vec<&str> =
            offer.lines().filter(|l| l.starts_with(&format!("a=msid:{} ", other.participant()))).collect();
        assert_eq!(msids.len(), 2, "two tracks of {} in {offer}", other.participant());
        assert_ne!(msids[0], msids[1], "track ids are unique");
    }
    assert!(!offer.contains(&format!("a=msid:{} ", ada.participant())), "no own track echoed back");

    // Cyd's first offer: her own audio, video and screen share to receive,
    // then a send-only section for each of the four tracks already in the room.
    let first = sections(&cyd.stats().first_offer());
    assert_eq!(first.len(), 7, "{first:?}");
    assert_eq!((first[0].0.as_str(), first[0].1.as_str()), ("audio", "recvonly"), "{first:?}");
    assert_eq!((first[1].0.as_str(), first[1].1.as_str()), ("video", "recvonly"), "{first:?}");
    assert_eq!((first[2].0.as_str(), first[2].1.as_str()), ("video", "recvonly"), "{first:?}");
    for section in &first[3..] {
        assert_eq!(section.1, "sendonly", "{first:?}");
        let stream = section.2.as_deref().expect("msid");
        assert!(stream == ada.participant() || stream == bob.participant(), "{first:?}");
    }

    // The store records each session's media resources.
    let resources = server.state.rooms.store().resources(&room, &cyd.outcome.session_id).await.expect("store");
    let of = |kind| resources.iter().filter(|(k, _)| *k == kind).count();
    assert_eq!(
        (of(ResourceKind::PeerConnection), of(ResourceKind::Track), of(ResourceKind::Forwarder)),
        (1, 2, 4),
        "{resources:?}"
    );

    // Cyd leaves.
    let cyd_id = cyd.participant().to_owned();
    let cyd_session = cyd.outcome.session_id.clone();
    let cyd_user =
        UserId::new(server.state.rooms.db().history(cyd_session.as_str()).await.expect("db").expect("history").user_id);
    cyd.leave().await;
    wait_counts(&server, &room, (2, 4, 4)).await;
    for listener in [&ada, &bob] {
        eventually(MEDIA, "an offer without Cyd's tracks", || async {
            let offer = listener.stats().last_offer();
            (!offer.contains(&format!("a=msid:{cyd_id} "))
                && listener.stats().answers.load(std::sync::atomic::Ordering::Acquire) >= 2)
                .then_some(())
        })
        .await;
    }
    // Nothing more arrives from Cyd while the others keep flowing.
    let frozen = [ada.stats().received_from(&cyd_id), bob.stats().received_from(&cyd_id)];
    let (ada_from_bob, bob_from_ada) =
        (ada.stats().received_from(bob.participant()), bob.stats().received_from(ada.participant()));
    eventually(MEDIA, "Ada and Bob keep hearing each other", || async {
        (ada.stats().received_from(bob.participant()) >= ada_from_bob + ENOUGH
            && bob.stats().received_from(ada.participant()) >= bob_from_ada + ENOUGH)
            .then_some(())
    })
    .await;
    assert_eq!([ada.stats().received_from(&cyd_id), bob.stats().received_from(&cyd_id)], frozen);
    let left = server.state.rooms.store().session_entries(&room, &cyd_session, &cyd_user).await.expect("store");
    assert!(left.is_empty(), "Cyd's store entries remain: {left:?}");

    ada.leave().await;
    bob.leave().await;
    wait_counts(&server, &room, (0, 0, 0)).await;
    let r = server.resources(&room).await;
    assert_eq!((r["sessions"].as_u64(), r["rooms"][0]["store_keys"].as_u64()), (Some(0), Some(0)), "{r}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_sqlite_memory() {
    three_clients(Backend::SqliteMemory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_postgres_redis() {
    three_clients(Backend::PostgresRedis).await;
}
