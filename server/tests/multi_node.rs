//! Two nodes of one deployment (one Redis, one PostgreSQL, one secret): a
//! room lives on one node, and people reaching the other node are served
//! there all the same (their join and socket relayed to the room's node);
//! what happens on one node reaches the other at once, through the store's
//! event channel, not when the other node next reads the store or its
//! reconciler runs (it is set to a pass every 10 minutes here, so it cannot
//! be what cleans up).

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

    // Ada reaches node A, Bob and Cy node B, all in one room: it lives on
    // node A (its first arrival's), and node B relays their joins and sockets.
    let ada = a.guest();
    let room = ada.create_room("Ada", false).await.unwrap();
    let on_a = ada.join(&room, "Ada").await.unwrap();
    let mut ada_socket = ada.socket(&room, &on_a.session_id).await;
    for node in [&a, &b] {
        assert_eq!(node.state.rooms.store().room_node(&room).await.unwrap().as_deref(), Some("node-a"));
    }
    let (bob, cy) = (b.guest(), b.guest());
    let bob_in = bob.join(&room, "Bob").await.unwrap();
    let mut bob_socket = bob.socket(&room, &bob_in.session_id).await;
    roster_until(&mut ada_socket, "Bob's join (through node B) seen on node A", |m| lists(m, &bob_in.participant_id))
        .await;
    let cy_in = cy.join(&room, "Cy").await.unwrap();
    let mut cy_socket = cy.socket(&room, &cy_in.session_id).await;
    roster_until(&mut ada_socket, "Cy's join seen on node A", |m| lists(m, &cy_in.participant_id)).await;
    roster_until(&mut bob_socket, "Cy's join seen by Bob through node B", |m| lists(m, &cy_in.participant_id)).await;
    assert_eq!(a.state.rooms.sessions().len(), 3, "node A holds everyone's session");
    assert_eq!(b.state.rooms.sessions().len(), 0, "node B holds none");

    // Bob's hand (raised through node B) shows on node A.
    bob.act("hand", &bob_in.session_id, &[("up", "true")]).await.unwrap();
    roster_until(
        &mut ada_socket,
        "Bob's hand on node A",
        |m| matches!(m, ServerMsg::Roster { hands, .. } if hands.as_slice() == std::slice::from_ref(&bob_in.participant_id)),
    )
    .await;

    // The admin mutes Bob through node B: node A's SFU and Bob hear it.
    let bob_form = [("participant_id", bob_in.participant_id.as_str())];
    let ada_via_b = ada.via(b.addr);
    ada_via_b.act("mute-participant", &on_a.session_id, &bob_form).await.unwrap();
    roster_until(&mut bob_socket, "Bob muted, seen through node B", |m| {
        matches!(m, ServerMsg::Roster { participants, .. }
            if participants.iter().any(|p| p.id == bob_in.participant_id && p.audio_muted))
    })
    .await;

    // The admin removes Bob through node B: node A closes his socket and media now.
    ada_via_b.act("kick", &on_a.session_id, &bob_form).await.unwrap();
    assert_eq!(bob_socket.ended(WAIT).await, LeaveReason::Kicked);
    common::eventually(WAIT, "Bob's live part released on node A", || async {
        released_on(&a, &room, &bob_in.session_id).then_some(())
    })
    .await;
    roster_until(&mut cy_socket, "Bob gone, seen by Cy through node B", |m| !lists(m, &bob_in.participant_id)).await;

    // Cy's leave handled by node B (a request that landed on the other node):
    // Cy's socket is closed by node A, Ada sees Cy go.
    b.state
        .rooms
        .end_session(&room, &cy_in.session_id, &user_of(&a, &room, &cy_in.session_id).await, LeaveReason::Left)
        .await
        .unwrap();
    assert_eq!(cy_socket.ended(WAIT).await, LeaveReason::Left);
    common::eventually(WAIT, "Cy's live part released on node A", || async {
        released_on(&a, &room, &cy_in.session_id).then_some(())
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
