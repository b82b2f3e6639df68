//! A room is created, joined and left through the real HTTP and WebSocket
//! paths, against both deployments (SQLite + in-process store, PostgreSQL +
//! Redis). After every leave the leaver has no live session, no store entry
//! and no live row, and the history row carries the reason.

mod common;

use std::time::Duration;

use app::error::AppError;
use app::model::{ParticipantState, Role, RoomCode, SessionId, UserId};
use app::signal::{close_code, ServerMsg};
use common::{Backend, Seen, TestServer};

const WAIT: Duration = Duration::from_secs(5);

async fn assert_room_empty(server: &TestServer, room: &RoomCode) {
    let r = server.resources(room).await;
    let room_json = &r["rooms"][0];
    assert_eq!(room_json["code"], room.as_str());
    assert_eq!(room_json["participants"], 0, "{r}");
    assert_eq!(room_json["store_keys"], 0, "{r}");
    assert_eq!(room_json["db_participants"], 0, "{r}");
    assert_eq!(r["sessions"], 0, "{r}");
}

async fn user_of(server: &TestServer, session: &SessionId) -> UserId {
    let row = server.state.rooms.db().history(session.as_str()).await.unwrap().unwrap();
    UserId::new(row.user_id)
}

async fn two_guests_join_see_each_other_and_leave_clean(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (ada, bob) = (server.guest(), server.guest());
    let room = ada.create_room("Ada", false).await.expect("room created");

    let a = ada.join(&room, "Ada").await.expect("ada joins");
    assert_eq!((a.role, a.state), (Role::Admin, ParticipantState::Active));
    let mut ada_socket = ada.socket(&room, &a.session_id).await;
    ada_socket.roster_of(1, WAIT).await;

    let b = bob.join(&room, "Bob").await.expect("bob joins");
    assert_eq!((b.role, b.state), (Role::Member, ParticipantState::Active));
    assert_eq!(b.roster.len(), 2);
    let roster = ada_socket.roster_of(2, WAIT).await;
    assert_eq!(roster.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["Ada", "Bob"]);

    let r = server.resources(&room).await;
    assert_eq!((r["sessions"].as_u64(), r["rooms"][0]["db_participants"].as_u64()), (Some(2), Some(2)), "{r}");
    assert_eq!(r["websockets"], 1, "{r}");

    // Bob clicks Leave: Ada's roster drops him, nothing of his session stays.
    bob.leave(&b.session_id).await.expect("bob leaves");
    let roster = ada_socket.roster_of(1, WAIT).await;
    assert_eq!(roster[0].id, a.participant_id);
    assert_eq!(server.recorded_leave(&b.session_id).await, "left");
    let bob_user = user_of(&server, &b.session_id).await;
    let leftovers = server.state.rooms.store().session_entries(&room, &b.session_id, &bob_user).await.unwrap();
    assert!(leftovers.is_empty(), "store entries left: {leftovers:?}");
    let r = server.resources(&room).await;
    assert_eq!((r["sessions"].as_u64(), r["rooms"][0]["db_participants"].as_u64()), (Some(1), Some(1)), "{r}");

    // Leaving twice is fine and changes nothing.
    bob.leave(&b.session_id).await.expect("second leave is a no-op");
    assert_eq!(server.recorded_leave(&b.session_id).await, "left");

    // Ada's tab closes: the beacon ends her session, her socket is told and closed.
    assert_eq!(ada.beacon(&a.session_id).await, reqwest::StatusCode::NO_CONTENT);
    let mut saw_end = false;
    loop {
        match ada_socket.next(WAIT).await {
            Seen::Msg(ServerMsg::SessionEnded { reason }) => {
                assert_eq!(reason.as_str(), "page-hidden");
                saw_end = true;
            }
            Seen::Msg(_) => {}
            Seen::Closed(code) => {
                assert_eq!(code, Some(close_code::SESSION_ENDED));
                break;
            }
        }
    }
    assert!(saw_end, "the socket was told why the session ended");
    assert_eq!(server.recorded_leave(&a.session_id).await, "page-hidden");
    assert_room_empty(&server, &room).await;
    common::eventually(WAIT, "socket task ends", || async { (server.state.sockets.is_empty()).then_some(()) }).await;
    server.stop().await;
}

/// A page going away closes its socket with the leaving code before its
/// beacon goes out: that alone ends the session (reason `page-hidden`),
/// and only a plain close frame does not (Leave sends its own request).
#[tokio::test]
async fn a_socket_closed_as_leaving_ends_the_session() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
    use tokio_tungstenite::tungstenite::Message;

    let server = TestServer::start(Backend::SqliteMemory).await;
    let (ada, bob) = (server.guest(), server.guest());
    let room = ada.create_room("Ada", false).await.unwrap();
    let a = ada.join(&room, "Ada").await.unwrap();
    let mut ada_socket = ada.socket(&room, &a.session_id).await;
    let b = bob.join(&room, "Bob").await.unwrap();
    let mut bob_socket = bob.socket(&room, &b.session_id).await;
    ada_socket.roster_of(2, WAIT).await;

    // A plain close frame: Bob is still in the room (not a leave, not a loss yet).
    let close = |code: u16| Message::Close(Some(CloseFrame { code: CloseCode::from(code), reason: "".into() }));
    bob_socket.ws.send(close(1000)).await.unwrap();
    // Once the server has let go of the socket, the session is still there.
    common::eventually(WAIT, "Bob's socket released", || async {
        (server.resources(&room).await["websockets"] == 1).then_some(())
    })
    .await;
    assert!(server.state.rooms.sessions().get(&b.session_id).is_some(), "a plain close is not a leave");
    // Back on a new socket, then going away with the leaving code.
    let mut bob_socket = bob.socket(&room, &b.session_id).await;
    bob_socket.ws.send(close(close_code::LEAVING)).await.unwrap();
    assert_eq!(ada_socket.roster_of(1, WAIT).await[0].id, a.participant_id);
    common::eventually(WAIT, "Bob's session closed", || async {
        (server.leave_reason(&b.session_id).await.as_deref() == Some("page-hidden")).then_some(())
    })
    .await;
    // The beacon that follows finds nothing left and changes nothing.
    assert_eq!(bob.beacon(&b.session_id).await, reqwest::StatusCode::NO_CONTENT);
    assert_eq!(server.recorded_leave(&b.session_id).await, "page-hidden");
    let r = server.resources(&room).await;
    assert_eq!((r["sessions"].as_u64(), r["rooms"][0]["db_participants"].as_u64()), (Some(1), Some(1)), "{r}");
    server.stop().await;
}

#[tokio::test]
async fn join_and_leave_sqlite_memory() {
    two_guests_join_see_each_other_and_leave_clean(Backend::SqliteMemory).await;
}

#[tokio::test]
async fn join_and_leave_postgres_redis() {
    two_guests_join_see_each_other_and_leave_clean(Backend::PostgresRedis).await;
}

async fn rejoin_replaces_the_old_session(backend: Backend) {
    let server = TestServer::start(backend).await;
    let ada = server.guest();
    let room = ada.create_room("Ada", false).await.unwrap();
    let first = ada.join(&room, "Ada").await.unwrap();
    let mut old_socket = ada.socket(&room, &first.session_id).await;
    old_socket.roster_of(1, WAIT).await;
    // A refresh whose beacon was lost: the same person joins again.
    let second = ada.join(&room, "Ada").await.unwrap();
    assert_eq!(second.roster.len(), 1, "never shown twice");
    assert_eq!(second.roster[0].id, second.participant_id);
    assert_eq!(server.recorded_leave(&first.session_id).await, "replaced");
    loop {
        match old_socket.next(WAIT).await {
            Seen::Msg(ServerMsg::SessionEnded { reason }) => break assert_eq!(reason.as_str(), "replaced"),
            Seen::Msg(_) => continue,
            Seen::Closed(code) => panic!("closed ({code:?}) before saying why"),
        }
    }
    let r = server.resources(&room).await;
    assert_eq!((r["sessions"].as_u64(), r["rooms"][0]["db_participants"].as_u64()), (Some(1), Some(1)), "{r}");
    // A late leave of the old session must not touch the new one.
    ada.leave(&first.session_id).await.unwrap();
    let r = server.resources(&room).await;
    assert_eq!(r["rooms"][0]["participants"], 1, "{r}");
    assert_eq!(server.leave_reason(&second.session_id).await, None);
    ada.leave(&second.session_id).await.unwrap();
    assert_room_empty(&server, &room).await;
    server.stop().await;
}

#[tokio::test]
async fn rejoin_replaces_sqlite_memory() {
    rejoin_replaces_the_old_session(Backend::SqliteMemory).await;
}

#[tokio::test]
async fn rejoin_replaces_postgres_redis() {
    rejoin_replaces_the_old_session(Backend::PostgresRedis).await;
}

#[tokio::test]
async fn nobody_can_leave_for_someone_else() {
    let server = TestServer::start(Backend::SqliteMemory).await;
    let (ada, mallory) = (server.guest(), server.guest());
    let room = ada.create_room("Ada", false).await.unwrap();
    let a = ada.join(&room, "Ada").await.unwrap();
    mallory.join(&room, "Mallory").await.unwrap();

    let err = mallory.leave(&a.session_id).await.expect_err("forged leave refused");
    assert_eq!(err.error, Some(AppError::Forbidden));
    assert_eq!(mallory.beacon(&a.session_id).await, reqwest::StatusCode::FORBIDDEN);
    // Mallory cannot open Ada's socket either.
    let mut s = mallory.socket(&room, &a.session_id).await;
    assert!(matches!(s.next(WAIT).await, Seen::Closed(Some(close_code::UNKNOWN_SESSION))));
    let r = server.resources(&room).await;
    assert_eq!(r["rooms"][0]["participants"], 2, "{r}");
    assert_eq!(server.leave_reason(&a.session_id).await, None);
    server.stop().await;
}

#[tokio::test]
async fn bad_input_writes_nothing() {
    let server = TestServer::start(Backend::SqliteMemory).await;
    let ada = server.guest();
    for bad in ["", "   ", &"x".repeat(65), "a\u{0}b", "tab\there"] {
        let err = ada.create_room(bad, false).await.expect_err("bad name refused");
        assert!(matches!(err.error, Some(AppError::BadName(_))), "{bad:?}: {err:?}");
    }
    assert!(server.state.rooms.db().open_rooms(10).await.unwrap().is_empty(), "no room written");

    let room = ada.create_room("Ada", false).await.unwrap();
    let err = ada.join(&room, &"y".repeat(65)).await.expect_err("bad name refused");
    assert!(matches!(err.error, Some(AppError::BadName(_))));
    let unknown = RoomCode::parse("zzz-zzzz-zzz").unwrap();
    let err = ada.join(&unknown, "Ada").await.expect_err("unknown room");
    assert_eq!(err.error, Some(AppError::RoomNotFound));
    let resp = ada
        .http()
        .post(server.url("/api/join"))
        .form(&[("code", "../../x"), ("display_name", "Ada")])
        .send()
        .await
        .unwrap();
    let err: AppError = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(err, AppError::BadRoomCode);
    let r = server.resources(&room).await;
    assert_eq!(
        (r["rooms"][0]["store_keys"].as_u64(), r["rooms"][0]["db_participants"].as_u64()),
        (Some(0), Some(0)),
        "{r}"
    );

    // Garbage beacons are refused without effect.
    let resp = ada.http().post(server.url("/api/beacon/leave")).body("session=../../etc").send().await.unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::BAD_REQUEST);
    server.stop().await;
}

#[tokio::test]
async fn malformed_or_oversized_frames_close_only_that_socket() {
    let server = TestServer::start(Backend::SqliteMemory).await;
    let (ada, bob) = (server.guest(), server.guest());
    let room = ada.create_room("Ada", false).await.unwrap();
    let a = ada.join(&room, "Ada").await.unwrap();
    let b = bob.join(&room, "Bob").await.unwrap();
    let mut sa = ada.socket(&room, &a.session_id).await;
    let mut sb = bob.socket(&room, &b.session_id).await;
    sa.roster_of(2, WAIT).await;
    sb.roster_of(2, WAIT).await;

    sa.send_text(r#"{"type":"ping"}"#).await;
    assert!(matches!(sa.next_non_media(WAIT).await, Seen::Msg(ServerMsg::Pong)));
    sa.send_text("{not json").await;
    assert!(matches!(sa.next_non_media(WAIT).await, Seen::Closed(Some(close_code::BAD_FRAME))));

    let big = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(70 * 1024));
    sb.send_text(&big).await;
    assert!(matches!(sb.next_non_media(WAIT).await, Seen::Closed(_)), "oversized frame closes the socket");

    // Nothing else was affected: both are still in the room.
    let r = server.resources(&room).await;
    assert_eq!(r["rooms"][0]["participants"], 2, "{r}");
    server.stop().await;
}

/// GET `path`, failing with its name if no answer comes within 30 s (a
/// hang here was seen once in CI and never reproduced).
async fn get(server: &TestServer, path: &str) -> reqwest::Response {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    match client.get(server.url(path)).send().await {
        Ok(r) => r,
        Err(e) => panic!("GET {path}: {e}"),
    }
}

#[tokio::test]
async fn pages_and_operations_answer() {
    let server = TestServer::start(Backend::SqliteMemory).await;
    let lobby = get(&server, "/").await;
    assert_eq!(lobby.status(), 200);
    assert!(lobby.headers().get("set-cookie").is_some(), "a guest identity is issued");
    let html = lobby.text().await.unwrap();
    for hook in ["display-name", "room-private", "room-host-unmutes", "create-room", "join-code", "join-room"] {
        assert!(html.contains(&format!("data-testid=\"{hook}\"")), "lobby lacks {hook}");
    }
    let ada = server.guest();
    let room = ada.create_room("Ada", false).await.unwrap();
    let page = ada.http().get(server.url(&format!("/r/{room}"))).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("data-testid=\"prejoin\"") && html.contains("data-testid=\"join-button\""));
    assert!(html.contains("value=\"Ada\""), "the remembered name is offered");

    let missing = get(&server, "/r/zzz-zzzz-zzz").await;
    assert_eq!(missing.status(), 404);
    assert!(missing.text().await.unwrap().contains("data-testid=\"not-found\""));
    assert_eq!(get(&server, "/no/such/page").await.status(), 404);

    assert_eq!(get(&server, "/healthz").await.status(), 200);
    assert_eq!(get(&server, "/readyz").await.status(), 200);
    let metrics = get(&server, "/metrics").await.text().await.unwrap();
    for name in [
        "cleanroom_sessions_active",
        "cleanroom_peer_connections_active",
        "cleanroom_tracks_active",
        "cleanroom_forwarders_active",
        "cleanroom_session_closes_total{reason=\"left\"}",
        "cleanroom_cleanup_retries_total",
        "cleanroom_cleanup_failures_total",
        "cleanroom_orphans_reaped_total{kind=",
        // The process collector's figures.
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_threads",
        // Requests by route pattern (never the raw path) and status.
        "cleanroom_http_requests_total{method=\"GET\",route=\"/r/{code}\",status=\"200\"}",
        "cleanroom_http_requests_total{method=\"GET\",route=\"/r/{code}\",status=\"404\"}",
        "cleanroom_http_requests_total{method=\"GET\",route=\"other\",status=\"404\"}",
        "cleanroom_http_request_duration_seconds_bucket{method=\"GET\",route=\"/healthz\",le=",
    ] {
        assert!(metrics.contains(name), "metrics lack {name}");
    }
    assert!(!metrics.contains(&format!("route=\"/r/{room}\"")), "a room's code is never a label");
    server.stop().await;
}

#[tokio::test]
async fn shutdown_ends_every_session_with_its_reason() {
    let server = TestServer::start(Backend::SqliteMemory).await;
    let ada = server.guest();
    let room = ada.create_room("Ada", false).await.unwrap();
    let a = ada.join(&room, "Ada").await.unwrap();
    let mut socket = ada.socket(&room, &a.session_id).await;
    socket.roster_of(1, WAIT).await;
    server::shutdown(&server.state).await;
    assert_eq!(server.recorded_leave(&a.session_id).await, "node-shutdown");
    assert!(server.state.rooms.sessions().is_empty());
    assert!(server.state.tasks.is_empty() && server.state.sockets.is_empty(), "no task outlives shutdown");
    assert_room_empty(&server, &room).await;
    server.stop().await;
}
