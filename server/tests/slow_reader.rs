//! A page that stops reading its socket (a frozen tab, a stalled network
//! path with the TCP connection still open) never keeps a socket task
//! alive: the server drops a socket that does not take its messages, its
//! session follows the loss path, and the socket and task counts return to
//! where they were while the client still holds its TCP connection open.

mod common;

use std::time::Duration;

use app::model::RoomCode;
use common::{eventually, TestServer};

const WAIT: Duration = Duration::from_secs(20);

async fn counts(server: &TestServer, room: &RoomCode) -> (u64, u64, u64) {
    let r = server.resources(room).await;
    (r["sessions"].as_u64().unwrap(), r["websockets"].as_u64().unwrap(), r["tasks"].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_is_never_read_is_dropped_and_its_session_ends() {
    let server = TestServer::sqlite_with(&["--suspect-ms", "300", "--remove-ms", "1500"]).await;
    let host = server.guest();
    let room = host.create_room("Host", false).await.expect("room");
    let (_, _, tasks_before) = counts(&server, &room).await;

    let frozen = server.guest();
    let joined = frozen.join(&room, "Frozen").await.expect("join");
    let mut socket = frozen.frozen_socket(&room, &joined.session_id).await;
    eventually(WAIT, "the socket is attached", || async { (counts(&server, &room).await.1 == 1).then_some(()) }).await;

    // Its pongs pile up with nowhere to go: the server drops the socket.
    let sent = socket.ping_until_dropped(Duration::from_secs(60)).await.expect("the server drops the frozen socket");
    eprintln!("dropped after {sent} unread pings");
    eventually(WAIT, "no socket and no session left", || async {
        let (sessions, sockets, tasks) = counts(&server, &room).await;
        (sessions == 0 && sockets == 0 && tasks == tasks_before).then_some(())
    })
    .await;
    let history = server.state.rooms.db().history(joined.session_id.as_str()).await.unwrap().unwrap();
    let reason = history.leave_reason.expect("the session ended");
    assert!(["socket-closed", "heartbeat-lost"].contains(&reason.as_str()), "ended as {reason}");
    // The client still holds its end open: nothing above waited for it.
    drop(socket);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_ended_while_their_pages_do_not_read_release_their_sockets() {
    let server = TestServer::sqlite_with(&[]).await;
    let host = server.guest();
    let room = host.create_room("Host", false).await.expect("room");
    let (_, _, tasks_before) = counts(&server, &room).await;

    // Frozen tabs in one room; everyone's roster goes to all of them.
    let mut frozen = Vec::new();
    for i in 0..8 {
        let guest = server.guest();
        let joined = guest.join(&room, &format!("Frozen {i}")).await.expect("join");
        let socket = guest.frozen_socket(&room, &joined.session_id).await;
        frozen.push((guest, joined, socket));
    }
    eventually(WAIT, "eight sockets", || async { (counts(&server, &room).await.1 == 8).then_some(()) }).await;

    // Their sessions end by the Leave call while nobody reads.
    for (guest, joined, _) in &frozen {
        guest.leave(&joined.session_id).await.expect("leave");
    }
    eventually(WAIT, "every socket and task gone", || async {
        let (sessions, sockets, tasks) = counts(&server, &room).await;
        (sessions == 0 && sockets == 0 && tasks == tasks_before).then_some(())
    })
    .await;
    drop(frozen);
    server.stop().await;
}
