//! The room's chat through the page's paths (the `chat` server function,
//! the socket): delivery to everybody in the call, history for later
//! arrivals, the limits (length, rate) and who may send; and that the chat
//! lives exactly as long as its room: once the room closes (ended by the
//! host, or closing itself when empty) no message is left in the live
//! store or the database, read back from both.

mod common;

use std::time::Duration;

use app::error::AppError;
use app::model::{ChatMessage, ParticipantId, ParticipantState, RoomCode, MAX_CHAT_CHARS};
use app::signal::ServerMsg;
use common::{Backend, Guest, Seen, Socket, TestServer};

const WAIT: Duration = Duration::from_secs(10);

/// Reads `socket` until a message satisfies `pick`.
async fn until<T>(socket: &mut Socket, what: &str, mut pick: impl FnMut(&ServerMsg) -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "never saw: {what}");
        match socket.next(left).await {
            Seen::Msg(msg) => {
                if let Some(v) = pick(&msg) {
                    return v;
                }
            }
            Seen::Closed(code) => panic!("socket closed ({code:?}) waiting for: {what}"),
        }
    }
}

async fn said(socket: &mut Socket, text: &str) -> ChatMessage {
    until(socket, &format!("the message {text:?}"), |m| match m {
        ServerMsg::Chat { message } if message.text == text => Some(message.clone()),
        _ => None,
    })
    .await
}

async fn history(socket: &mut Socket) -> Vec<ChatMessage> {
    until(socket, "the chat history", |m| match m {
        ServerMsg::ChatHistory { messages } => Some(messages.clone()),
        _ => None,
    })
    .await
}

async fn chat(guest: &Guest, session: &app::model::SessionId, text: &str) -> Result<(), common::FnError> {
    guest.act("chat", session, &[("text", text)]).await
}

fn refused(result: Result<(), common::FnError>, expected: AppError) {
    let err = result.expect_err("the server refused it");
    assert_eq!(err.error, Some(expected), "status {}", err.status);
}

/// What is left of the room's chat: (store, database).
async fn left_of(server: &TestServer, room: &RoomCode) -> (usize, usize) {
    let rooms = &server.state.rooms;
    (rooms.store().chat(room).await.unwrap().len(), rooms.db().chat(room.as_str()).await.unwrap().len())
}

async fn chat_lives_as_long_as_its_room(backend: Backend) {
    let server = TestServer::start(backend).await;
    let ada = server.guest();
    let room = ada.create_room("Ada", false).await.unwrap();
    let ada_in = ada.join(&room, "Ada").await.unwrap();
    let mut ada_socket = ada.socket(&room, &ada_in.session_id).await;
    assert!(history(&mut ada_socket).await.is_empty(), "a new room has said nothing");
    let bob = server.guest();
    let bob_in = bob.join(&room, "Bob").await.unwrap();
    let mut bob_socket = bob.socket(&room, &bob_in.session_id).await;
    history(&mut bob_socket).await;

    // Markup is text: it arrives exactly as typed (the page shows it escaped).
    let text = "hello <img src=x onerror=alert(1)> & line\nbreak";
    chat(&ada, &ada_in.session_id, text).await.unwrap();
    let to_bob = said(&mut bob_socket, text).await;
    let to_ada = said(&mut ada_socket, text).await;
    assert_eq!(to_bob, to_ada, "everybody hears the same message, the sender too");
    assert_eq!((to_bob.from.clone(), to_bob.name.as_str()), (ada_in.participant_id.clone(), "Ada"));
    chat(&bob, &bob_in.session_id, "hi Ada").await.unwrap();
    said(&mut ada_socket, "hi Ada").await;

    // Somebody who joins later sees what was said, in order.
    let cy = server.guest();
    let cy_in = cy.join(&room, "Cy").await.unwrap();
    let mut cy_socket = cy.socket(&room, &cy_in.session_id).await;
    let earlier: Vec<(ParticipantId, String)> =
        history(&mut cy_socket).await.into_iter().map(|m| (m.from, m.text)).collect();
    assert_eq!(earlier, [(ada_in.participant_id.clone(), text.to_owned()), (bob_in.participant_id, "hi Ada".into())]);
    assert_eq!(left_of(&server, &room).await, (2, 2), "kept in the store and the database while the room is open");

    // The host ends the meeting: the room closes and every message goes.
    ada.act("end-meeting", &ada_in.session_id, &[]).await.unwrap();
    cy_socket.ended(WAIT).await;
    let row = server.state.rooms.db().room(room.as_str()).await.unwrap().unwrap();
    assert!(row.ended_at_ms.is_some(), "the room ended");
    assert_eq!(left_of(&server, &room).await, (0, 0), "nothing said in the room is left");
    assert!(
        server.state.rooms.store().room_keys(&room).await.unwrap().is_empty(),
        "no key of the room is left in the store"
    );
    server.stop().await;
}

#[tokio::test]
async fn chat_lives_as_long_as_its_room_sqlite_memory() {
    chat_lives_as_long_as_its_room(Backend::SqliteMemory).await;
}

#[tokio::test]
async fn chat_lives_as_long_as_its_room_postgres_redis() {
    chat_lives_as_long_as_its_room(Backend::PostgresRedis).await;
}

#[tokio::test]
async fn chat_limits_and_who_may_send() {
    let server = TestServer::sqlite_with(&[]).await;
    let ada = server.guest();
    let room = ada.create_room("Ada", true).await.unwrap();
    let ada_in = ada.join(&room, "Ada").await.unwrap();
    let mut ada_socket = ada.socket(&room, &ada_in.session_id).await;
    history(&mut ada_socket).await;

    // Too long, empty, or with control characters: refused with the
    // reason, and nothing is stored or sent.
    let long = "a".repeat(MAX_CHAT_CHARS + 1);
    for bad in [long.as_str(), "   ", "bell\u{7}"] {
        let err = chat(&ada, &ada_in.session_id, bad).await.expect_err("refused");
        assert!(matches!(err.error, Some(AppError::Invalid(_))), "{bad:?}: {err:?}");
    }
    let err = chat(&ada, &ada_in.session_id, &long).await.unwrap_err();
    assert!(err.error.unwrap().to_string().contains("at most 2 000 characters"));
    chat(&ada, &ada_in.session_id, &"b".repeat(MAX_CHAT_CHARS)).await.expect("exactly the limit is fine");
    assert_eq!(left_of(&server, &room).await, (1, 1), "only the message within the rules was kept");

    // Someone else's session, or a session waiting to be let in, may not send.
    let bob = server.guest();
    let knock = bob.join(&room, "Bob").await.unwrap();
    assert_eq!(knock.state, ParticipantState::Pending);
    let mut bob_socket = bob.socket(&room, &knock.session_id).await;
    refused(chat(&bob, &ada_in.session_id, "as Ada").await, AppError::Forbidden);
    refused(chat(&bob, &knock.session_id, "from the door").await, AppError::NotInRoom);
    // Let in, Bob is told what was said before (and nothing while waiting).
    ada.act("admit", &ada_in.session_id, &[("participant_id", knock.participant_id.as_str()), ("approve", "true")])
        .await
        .unwrap();
    let seen_by_bob = until(&mut bob_socket, "Bob's history once let in", |m| match m {
        ServerMsg::Chat { .. } => panic!("a waiting person heard the chat"),
        ServerMsg::ChatHistory { messages } => Some(messages.len()),
        _ => None,
    })
    .await;
    assert_eq!(seen_by_bob, 1);
    assert_eq!(left_of(&server, &room).await, (1, 1), "refused messages were not kept");

    // A burst is fine; then the session must slow down (429, Retry-After).
    let mut sent = 1;
    let limited = loop {
        match chat(&ada, &ada_in.session_id, &format!("burst {sent}")).await {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent <= 20, "no limit after {sent} messages");
    };
    assert_eq!(limited.status, 429);
    assert!(matches!(limited.error, Some(AppError::Limited { .. })), "{limited:?}");
    assert!(sent >= 10, "a burst of ten goes through (only {sent} did)");
    // Another session's allowance is its own.
    chat(&bob, &knock.session_id, "my turn").await.expect("Bob is not limited by Ada's messages");
    server.stop().await;
}

#[tokio::test]
async fn a_room_closing_by_itself_takes_its_chat() {
    let server = TestServer::sqlite_with(&["--empty-room-ms", "300", "--reconcile-ms", "100"]).await;
    let ada = server.guest();
    let room = ada.create_room("Ada", false).await.unwrap();
    let ada_in = ada.join(&room, "Ada").await.unwrap();
    let mut socket = ada.socket(&room, &ada_in.session_id).await;
    chat(&ada, &ada_in.session_id, "anyone?").await.unwrap();
    said(&mut socket, "anyone?").await;
    ada.leave(&ada_in.session_id).await.unwrap();
    assert_eq!(left_of(&server, &room).await, (1, 1), "an empty room keeps its chat until it closes");

    let db = server.state.rooms.db();
    let row = common::eventually(WAIT, "the empty room closed", || async {
        db.room(room.as_str()).await.ok().flatten().filter(|r| r.ended_at_ms.is_some())
    })
    .await;
    assert_eq!(row.end_reason.as_deref(), Some("empty"));
    assert_eq!(left_of(&server, &room).await, (0, 0), "nothing said in the closed room is left");
    server.stop().await;
}
