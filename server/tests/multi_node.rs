//! Two nodes of one deployment (one Redis, one PostgreSQL), each holding
//! the socket of a person in the same room: what happens on one node
//! reaches the other at once, through the store's event channel, not when
//! the other node next reads the store or its reconciler runs (it is set
//! to a pass every 10 minutes here, so it cannot be what cleans up).

mod common;

use std::time::Duration;

use app::model::{LeaveReason, ParticipantId, Role, RoomCode, SessionId};
use app::signal::ServerMsg;
use common::{Seen, Socket, TestServer};

const WAIT: Duration = Duration::from_secs(5);

/// Reads `socket` until a roster satisfies `check`.
async fn roster_until(socket: &mut Socket, what: &str, check: impl Fn(&ServerMsg) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "not seen in time: {what}");
        match socket.next_non_media(left).await {
            Seen::Msg(msg @ ServerMsg::Roster { .. }) if check(&msg) => return,
            Seen::Msg(_) => {}
            Seen::Closed(code) => panic!("socket closed ({code:?}) waiting for: {what}"),
        }
    }
}

fn lists(msg: &ServerMsg, id: &ParticipantId) -> bool {
    matches!(msg, ServerMsg::Roster { participants, .. } if participants.iter().any(|p| &p.id == id))
}

/// Nothing of `session` is live on `node` any more: no live session, no media.
fn released_on(node: &TestServer, room: &RoomCode, session: &SessionId) -> bool {
    let rooms = &node.state.rooms;
    rooms.sessions().get(session).is_none() && rooms.media().session(room, session).is_none()
}

#[tokio::test]
async fn what_happens_on_one_node_reaches_the_other_at_once() {
    let database = common::TestDb::postgres().await;
    let prefix = common::unique("cleanroom-test-");
    let args = |node: &str| common::node_args(&database.url, node, &["--reconcile-ms", "600000"]);
    let a = TestServer::with_args_prefix(&args("node-a"), &prefix).await;
    let b = TestServer::with_args_prefix(&args("node-b"), &prefix).await;

    // Ada is on node A, Bob and Cy on node B, all in one room.
    let ada = a.guest();
    let room = ada.create_room("Ada", false).await.unwrap();
    let on_a = ada.join(&room, "Ada").await.unwrap();
    let mut ada_socket = ada.socket(&room, &on_a.session_id).await;
    let (bob, cy) = (b.guest(), b.guest());
    let bob_in = bob.join(&room, "Bob").await.unwrap();
    let mut bob_socket = bob.socket(&room, &bob_in.session_id).await;
    roster_until(&mut ada_socket, "Bob's join (node B) seen on node A", |m| lists(m, &bob_in.participant_id)).await;
    let cy_in = cy.join(&room, "Cy").await.unwrap();
    let mut cy_socket = cy.socket(&room, &cy_in.session_id).await;
    roster_until(&mut ada_socket, "Cy's join seen on node A", |m| lists(m, &cy_in.participant_id)).await;

    // Bob's hand (node B) shows on node A.
    bob.act("hand", &bob_in.session_id, &[("up", "true")]).await.unwrap();
    roster_until(
        &mut ada_socket,
        "Bob's hand on node A",
        |m| matches!(m, ServerMsg::Roster { hands, .. } if hands.as_slice() == std::slice::from_ref(&bob_in.participant_id)),
    )
    .await;

    // The admin on node A mutes Bob: Bob's socket on node B hears it.
    let bob_form = [("participant_id", bob_in.participant_id.as_str())];
    ada.act("mute-participant", &on_a.session_id, &bob_form).await.unwrap();
    roster_until(&mut bob_socket, "Bob muted, seen on node B", |m| {
        matches!(m, ServerMsg::Roster { participants, .. }
            if participants.iter().any(|p| p.id == bob_in.participant_id && p.audio_muted))
    })
    .await;

    // The admin on node A removes Bob: node B closes his socket and media now.
    ada.act("kick", &on_a.session_id, &bob_form).await.unwrap();
    assert_eq!(bob_socket.ended(WAIT).await, LeaveReason::Kicked);
    common::eventually(WAIT, "Bob's live part released on node B", || async {
        released_on(&b, &room, &bob_in.session_id).then_some(())
    })
    .await;
    roster_until(&mut cy_socket, "Bob gone, seen by Cy on node B", |m| !lists(m, &bob_in.participant_id)).await;

    // Cy's leave handled by node A (a request that landed on the other node):
    // Cy's socket on node B is closed, Ada sees Cy go.
    a.state
        .rooms
        .end_session(&room, &cy_in.session_id, &user_of(&b, &room, &cy_in.session_id).await, LeaveReason::Left)
        .await
        .unwrap();
    assert_eq!(cy_socket.ended(WAIT).await, LeaveReason::Left);
    common::eventually(WAIT, "Cy's live part released on node B", || async {
        released_on(&b, &room, &cy_in.session_id).then_some(())
    })
    .await;
    roster_until(&mut ada_socket, "only Ada left, on node A", |m| {
        matches!(m, ServerMsg::Roster { participants, .. }
            if participants.len() == 1 && participants[0].id == on_a.participant_id && participants[0].role == Role::Admin)
    })
    .await;

    // Nothing of Bob or Cy anywhere: store, rows, either node.
    let rooms = &a.state.rooms;
    assert_eq!(rooms.store().members(&room).await.unwrap().len(), 1);
    assert_eq!(rooms.db().count_participants(room.as_str()).await.unwrap(), 1);
    for node in [&a, &b] {
        let r = node.resources(&room).await;
        assert_eq!(r["rooms"][0]["participants"], 1, "{r}");
    }
    assert_eq!(b.state.rooms.sessions().len(), 0, "node B holds no session");
    assert_eq!(b.state.rooms.media().counts().sessions, 0, "node B has no media open");

    b.stop().await;
    a.stop().await;
    database.drop_db().await;
}

/// The user of a live session (as the node holding it knows it).
async fn user_of(node: &TestServer, room: &RoomCode, session: &SessionId) -> app::model::UserId {
    let members = node.state.rooms.store().members(room).await.unwrap();
    members.into_iter().find(|m| &m.session == session).expect("still in the room").user
}
