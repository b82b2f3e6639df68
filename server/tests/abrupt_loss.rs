//! Abrupt loss: a participant whose socket drops, or stays open but goes
//! silent, is shown to the others as `reconnecting` and then removed with the
//! matching reason, leaving nothing behind; one who comes back inside the
//! grace window keeps their session. Detection times are shortened by flags
//! (suspect 300 ms, remove 1.5 s); the tests wait on states, never assert
//! wall-clock budgets.

mod common;

use std::time::Duration;

use app::model::{ParticipantId, Presence, RoomCode};
use app::signal::ServerMsg;
use common::{Seen, Socket, TestServer};

const WAIT: Duration = Duration::from_secs(10);

async fn server() -> TestServer {
    TestServer::sqlite_with(&["--suspect-ms", "300", "--remove-ms", "1500"]).await
}

/// Keeps `watcher` alive with heartbeats until its roster shows `who` with
/// `presence` (`None`: gone). Returns every presence seen for `who` meanwhile.
async fn roster_shows(watcher: &mut Socket, who: &ParticipantId, presence: Option<Presence>) -> Vec<Option<Presence>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        assert!(tokio::time::Instant::now() < deadline, "roster never showed {who} as {presence:?}; saw {seen:?}");
        watcher.send_text(r#"{"type":"ping"}"#).await;
        match watcher.try_next(Duration::from_millis(100)).await {
            Some(Seen::Msg(ServerMsg::Roster { participants, .. })) => {
                let found = participants.iter().find(|p| &p.id == who).map(|p| p.presence);
                seen.push(found);
                if found == presence {
                    return seen;
                }
            }
            Some(Seen::Closed(code)) => panic!("watcher closed ({code:?})"),
            Some(Seen::Msg(_)) | None => {}
        }
    }
}

async fn assert_only_watcher_left(server: &TestServer, room: &RoomCode) {
    let r = server.resources(room).await;
    assert_eq!(r["sessions"], 1, "{r}");
    assert_eq!(r["rooms"][0]["participants"], 1, "{r}");
    assert_eq!(r["rooms"][0]["db_participants"], 1, "{r}");
}

#[tokio::test]
async fn a_dropped_socket_is_reconnecting_then_removed() {
    let server = server().await;
    let (ada, bob) = (server.guest(), server.guest());
    let room = ada.create_room("Ada", false).await.unwrap();
    let a = ada.join(&room, "Ada").await.unwrap();
    let b = bob.join(&room, "Bob").await.unwrap();
    let mut watcher = ada.socket(&room, &a.session_id).await;
    let bob_socket = bob.socket(&room, &b.session_id).await;
    roster_shows(&mut watcher, &b.participant_id, Some(Presence::Connected)).await;

    drop(bob_socket); // the browser died: the connection closes, no leave
    roster_shows(&mut watcher, &b.participant_id, Some(Presence::Reconnecting)).await;
    roster_shows(&mut watcher, &b.participant_id, None).await;
    assert_eq!(server.recorded_leave(&b.session_id).await, "socket-closed");
    assert_only_watcher_left(&server, &room).await;
    let gone = server.resources(&room).await;
    assert_eq!(gone["websockets"], 1, "{gone}");
    server.stop().await;
}

#[tokio::test]
async fn a_silent_open_socket_is_reconnecting_then_removed() {
    let server = server().await;
    let (ada, bob) = (server.guest(), server.guest());
    let room = ada.create_room("Ada", false).await.unwrap();
    let a = ada.join(&room, "Ada").await.unwrap();
    let b = bob.join(&room, "Bob").await.unwrap();
    let mut watcher = ada.socket(&room, &a.session_id).await;
    // Bob's socket stays open but sends nothing, as after a Wi-Fi loss.
    let mut silent = bob.socket(&room, &b.session_id).await;

    roster_shows(&mut watcher, &b.participant_id, Some(Presence::Reconnecting)).await;
    roster_shows(&mut watcher, &b.participant_id, None).await;
    assert_eq!(server.recorded_leave(&b.session_id).await, "heartbeat-lost");
    // The server closed Bob's socket when it removed him.
    loop {
        match silent.next(WAIT).await {
            Seen::Closed(_) => break,
            Seen::Msg(_) => {}
        }
    }
    assert_only_watcher_left(&server, &room).await;
    server.stop().await;
}

#[tokio::test]
async fn a_blip_inside_the_grace_window_loses_nothing() {
    let server = server().await;
    let (ada, bob) = (server.guest(), server.guest());
    let room = ada.create_room("Ada", false).await.unwrap();
    let a = ada.join(&room, "Ada").await.unwrap();
    let b = bob.join(&room, "Bob").await.unwrap();
    let mut watcher = ada.socket(&room, &a.session_id).await;
    let first = bob.socket(&room, &b.session_id).await;
    roster_shows(&mut watcher, &b.participant_id, Some(Presence::Connected)).await;

    drop(first);
    roster_shows(&mut watcher, &b.participant_id, Some(Presence::Reconnecting)).await;
    // Bob's page reconnects with the same session inside the grace window.
    let mut back = bob.socket(&room, &b.session_id).await;
    back.send_text(r#"{"type":"ping"}"#).await;
    let seen = roster_shows(&mut watcher, &b.participant_id, Some(Presence::Connected)).await;
    assert!(!seen.contains(&None), "never removed: {seen:?}");
    assert_eq!(server.leave_reason(&b.session_id).await, None, "the session lives on");
    let r = server.resources(&room).await;
    assert_eq!(r["rooms"][0]["participants"], 2, "{r}");
    bob.leave(&b.session_id).await.unwrap();
    assert_eq!(server.recorded_leave(&b.session_id).await, "left");
    server.stop().await;
}

#[tokio::test]
async fn a_session_whose_page_never_connects_is_removed() {
    let server = server().await;
    let (ada, bob) = (server.guest(), server.guest());
    let room = ada.create_room("Ada", false).await.unwrap();
    let a = ada.join(&room, "Ada").await.unwrap();
    let b = bob.join(&room, "Bob").await.unwrap(); // Bob's tab crashes before opening its socket
    let mut watcher = ada.socket(&room, &a.session_id).await;
    roster_shows(&mut watcher, &b.participant_id, None).await;
    assert_eq!(server.recorded_leave(&b.session_id).await, "heartbeat-lost");
    assert_only_watcher_left(&server, &room).await;
    server.stop().await;
}
