//! Room features through the same HTTP and WebSocket paths as the page:
//! private rooms (knock, approve, deny, expiry, a requester who leaves),
//! admin controls (kick, mute, hand-over, end meeting) and who may use
//! them, automatic hand-over when the admin leaves, raised hands, mute
//! flags, and rooms that close themselves. Every refusal is checked to
//! have changed nothing.

mod common;

use std::time::Duration;

use app::error::AppError;
use app::model::{LeaveReason, ParticipantId, ParticipantState, Role, RoomCode, SessionId};
use app::signal::ServerMsg;
use common::{Guest, Seen, Socket, TestServer};
use futures::SinkExt;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

/// Reads `socket` (answering nothing) until a roster satisfies `check`.
async fn roster_until(
    socket: &mut Socket,
    what: &str,
    check: impl Fn(&[app::model::ParticipantView], &[ParticipantId], &[app::model::ParticipantView]) -> bool,
) -> ServerMsg {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "no roster showed: {what}");
        match socket.next_non_media(left).await {
            Seen::Msg(msg @ ServerMsg::Roster { .. }) => {
                if let ServerMsg::Roster { participants, hands, pending, .. } = &msg {
                    if check(participants, hands, pending) {
                        return msg;
                    }
                }
            }
            Seen::Msg(_) => {}
            Seen::Closed(code) => panic!("socket closed ({code:?}) waiting for: {what}"),
        }
    }
}

fn refused(result: Result<(), common::FnError>, expected: AppError) {
    let err = result.expect_err("the server refused it");
    assert_eq!(err.error, Some(expected), "status {}", err.status);
}

async fn roles(server: &TestServer, room: &RoomCode) -> Vec<(String, Role)> {
    let members = server.state.rooms.store().members(room).await.unwrap();
    members.into_iter().map(|m| (m.name, m.role)).collect()
}

struct Person {
    guest: Guest,
    session: SessionId,
    id: ParticipantId,
    socket: Socket,
}

async fn enter(server: &TestServer, guest: Guest, room: &RoomCode, name: &str) -> (Person, ParticipantState) {
    let joined = guest.join(room, name).await.unwrap();
    let socket = guest.socket(room, &joined.session_id).await;
    let _ = server;
    (Person { guest, session: joined.session_id, id: joined.participant_id, socket }, joined.state)
}

#[tokio::test]
async fn private_room_knock_approve_and_deny() {
    let server = TestServer::sqlite_with(&[]).await;
    let ada_guest = server.guest();
    let room = ada_guest.create_room("Ada", true).await.unwrap();
    let (mut ada, state) = enter(&server, ada_guest, &room, "Ada").await;
    assert_eq!(state, ParticipantState::Active, "the creator is never kept waiting");

    let bob_guest = server.guest();
    let knock = bob_guest.join(&room, "Bob").await.unwrap();
    assert_eq!(knock.state, ParticipantState::Pending);
    assert!(knock.roster.is_empty(), "a requester is told nothing of who is inside: {:?}", knock.roster);
    let bob_socket = bob_guest.socket(&room, &knock.session_id).await;
    let mut bob = Person { guest: bob_guest, session: knock.session_id, id: knock.participant_id, socket: bob_socket };
    roster_until(&mut ada.socket, "Bob's request for the admin", |_, _, p| p.iter().any(|v| v.id == bob.id)).await;
    // Ada raises her hand: the room changes, yet the requester still sees
    // nothing of it (no names, hands or requests), and is not in the call.
    ada.guest.act("hand", &ada.session, &[("up", "true")]).await.unwrap();
    roster_until(&mut ada.socket, "Ada's hand", |_, hands, _| !hands.is_empty()).await;
    let msg = roster_until(&mut bob.socket, "the room for Bob", |_, _, _| true).await;
    assert_eq!(
        msg,
        ServerMsg::Roster { participants: vec![], hands: vec![], speaker: None, pending: vec![] },
        "a requester sees nothing of the room"
    );
    while let Some(common::Seen::Msg(msg)) = bob.socket.try_next(Duration::from_millis(300)).await {
        if let ServerMsg::Roster { participants, hands, .. } = &msg {
            assert!(participants.is_empty() && hands.is_empty(), "leaked to a requester: {msg:?}");
        }
    }
    assert_eq!(server.resources(&room).await["peer_connections"], 1, "Ada's media only: a waiting session has none");

    // A waiting requester may not let themselves in.
    refused(
        bob.guest.act("admit", &bob.session, &[("participant_id", bob.id.as_str()), ("approve", "true")]).await,
        AppError::NotInRoom,
    );
    // Forged: Bob's cookie with Ada's session.
    refused(
        bob.guest.act("admit", &ada.session, &[("participant_id", bob.id.as_str()), ("approve", "true")]).await,
        AppError::Forbidden,
    );
    assert_eq!(server.state.rooms.store().pending(&room).await.unwrap().len(), 1, "still waiting");

    // Approved: Bob is in the call, with media, everywhere.
    ada.guest.act("admit", &ada.session, &[("participant_id", bob.id.as_str()), ("approve", "true")]).await.unwrap();
    roster_until(&mut bob.socket, "Bob admitted", |p, _, _| p.iter().any(|v| v.id == bob.id)).await;
    roster_until(&mut ada.socket, "Bob in, request gone", |p, _, pending| p.len() == 2 && pending.is_empty()).await;
    let row = server.state.rooms.db().participant(bob.session.as_str()).await.unwrap().unwrap();
    assert_eq!(row.state, "active");
    common::eventually(WAIT, "Bob's media opened", || async {
        (server.resources(&room).await["peer_connections"] == 2).then_some(())
    })
    .await;

    // A member who is not the admin may not answer requests.
    let (mut cy, _) = enter(&server, server.guest(), &room, "Cy").await;
    roster_until(&mut ada.socket, "Cy's request", |_, _, p| p.iter().any(|v| v.id == cy.id)).await;
    refused(
        bob.guest.act("admit", &bob.session, &[("participant_id", cy.id.as_str()), ("approve", "true")]).await,
        AppError::Forbidden,
    );
    assert_eq!(server.state.rooms.store().pending(&room).await.unwrap().len(), 1, "Cy still waiting");

    // Denied: Cy is told, and nothing of Cy is left.
    ada.guest.act("admit", &ada.session, &[("participant_id", cy.id.as_str()), ("approve", "false")]).await.unwrap();
    assert_eq!(cy.socket.ended(WAIT).await, LeaveReason::Denied);
    roster_until(&mut ada.socket, "Cy's request gone", |_, _, p| p.is_empty()).await;
    assert_eq!(server.recorded_leave(&cy.session).await, "denied");
    let r = server.resources(&room).await;
    assert_eq!(r["rooms"][0]["pending"], 0, "{r}");
    assert_eq!(r["rooms"][0]["db_participants"], 2, "{r}");
    server.stop().await;
}

#[tokio::test]
async fn a_request_never_outlives_its_requester() {
    let server =
        TestServer::sqlite_with(&["--pending-timeout-ms", "1500", "--suspect-ms", "300", "--remove-ms", "1000"]).await;
    let ada_guest = server.guest();
    let room = ada_guest.create_room("Ada", true).await.unwrap();
    let (mut ada, _) = enter(&server, ada_guest, &room, "Ada").await;

    // The requester closes the tab (the beacon).
    let (dan, _) = enter(&server, server.guest(), &room, "Dan").await;
    roster_until(&mut ada.socket, "Dan's request", |_, _, p| p.len() == 1).await;
    assert!(dan.guest.beacon(&dan.session).await.is_success());
    roster_until(&mut ada.socket, "Dan's request gone", |_, _, p| p.is_empty()).await;
    assert_eq!(server.recorded_leave(&dan.session).await, "page-hidden");

    // The requester's connection drops: gone after the grace window.
    let (eve, _) = enter(&server, server.guest(), &room, "Eve").await;
    roster_until(&mut ada.socket, "Eve's request", |_, _, p| p.len() == 1).await;
    drop(eve.socket);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        ada.socket.send_text(r#"{"type":"ping"}"#).await;
        if let Some(Seen::Msg(ServerMsg::Roster { pending, .. })) =
            ada.socket.try_next(Duration::from_millis(100)).await
        {
            if pending.is_empty() {
                break;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "Eve's request outlived her connection");
    }
    assert_eq!(server.recorded_leave(&eve.session).await, "socket-closed");

    // Nobody answers: the request expires and the requester is told.
    let (mut fay, _) = enter(&server, server.guest(), &room, "Fay").await;
    let keepalive = async {
        loop {
            // Both stay answering: only the unanswered request may end.
            ada.socket.send_text(r#"{"type":"ping"}"#).await;
            let _ = ada.socket.try_next(Duration::from_millis(1)).await;
            let ping = Message::Text(r#"{"type":"ping"}"#.into());
            if fay.socket.ws.send(ping).await.is_err() {
                return;
            }
            if let Some(Seen::Closed(_)) = fay.socket.try_next(Duration::from_millis(200)).await {
                return;
            }
        }
    };
    tokio::time::timeout(WAIT, keepalive).await.expect("Fay's request expired");
    assert_eq!(server.recorded_leave(&fay.session).await, "expired");
    let r = server.resources(&room).await;
    assert_eq!(r["rooms"][0]["pending"], 0, "{r}");
    assert_eq!(
        r["rooms"][0]["store_keys"], 4,
        "only Ada's members, session and user keys, and the room's placement: {r}"
    );
    server.stop().await;
}

#[tokio::test]
async fn admin_controls_are_the_admins_alone() {
    let server = TestServer::sqlite_with(&[]).await;
    let ada_guest = server.guest();
    let room = ada_guest.create_room("Ada", false).await.unwrap();
    let (mut ada, _) = enter(&server, ada_guest, &room, "Ada").await;
    let (mut bob, _) = enter(&server, server.guest(), &room, "Bob").await;
    let (mut cy, _) = enter(&server, server.guest(), &room, "Cy").await;
    roster_until(&mut ada.socket, "three in the call", |p, _, _| p.len() == 3).await;

    // Bob is not the admin: every admin action is refused and changes nothing.
    let cy_form = [("participant_id", cy.id.as_str())];
    refused(bob.guest.act("kick", &bob.session, &cy_form).await, AppError::Forbidden);
    refused(bob.guest.act("mute-participant", &bob.session, &cy_form).await, AppError::Forbidden);
    refused(
        bob.guest.act("make-admin", &bob.session, &[("participant_id", bob.id.as_str())]).await,
        AppError::Forbidden,
    );
    refused(bob.guest.act("end-meeting", &bob.session, &[]).await, AppError::Forbidden);
    // Nor with the admin's session id (forged).
    refused(bob.guest.act("kick", &ada.session, &cy_form).await, AppError::Forbidden);
    refused(bob.guest.act("end-meeting", &ada.session, &[]).await, AppError::Forbidden);
    // A bad field is a clear error.
    refused(
        bob.guest.act("mute", &bob.session, &[("kind", "smell"), ("muted", "true")]).await,
        AppError::Invalid("kind must be audio or video".into()),
    );
    assert_eq!(
        roles(&server, &room).await,
        vec![("Ada".into(), Role::Admin), ("Bob".into(), Role::Member), ("Cy".into(), Role::Member)]
    );
    assert!(server.state.rooms.store().members(&room).await.unwrap().iter().all(|m| !m.audio_muted));
    assert!(server.state.rooms.db().room(room.as_str()).await.unwrap().unwrap().ended_at_ms.is_none());

    // Admin mute: Bob's microphone flag goes on; Bob may turn it off again.
    let bob_form = [("participant_id", bob.id.as_str())];
    ada.guest.act("mute-participant", &ada.session, &bob_form).await.unwrap();
    roster_until(&mut bob.socket, "Bob muted, free to unmute", |p, _, _| {
        p.iter().any(|v| v.id == bob.id && v.audio_muted && !v.audio_locked && v.host_mutes == 1)
    })
    .await;
    bob.guest.act("mute", &bob.session, &[("kind", "audio"), ("muted", "false")]).await.unwrap();
    roster_until(&mut ada.socket, "Bob unmuted", |p, _, _| p.iter().any(|v| v.id == bob.id && !v.audio_muted)).await;
    // Bob's own mute is not counted as the host's (his page tells the two
    // apart by the count); a host's mute of someone already muted is.
    bob.guest.act("mute", &bob.session, &[("kind", "audio"), ("muted", "true")]).await.unwrap();
    roster_until(&mut ada.socket, "Bob muted himself", |p, _, _| {
        p.iter().any(|v| v.id == bob.id && v.audio_muted && v.host_mutes == 1)
    })
    .await;
    ada.guest.act("mute-participant", &ada.session, &bob_form).await.unwrap();
    roster_until(&mut bob.socket, "Bob muted by the host again", |p, _, _| {
        p.iter().any(|v| v.id == bob.id && v.audio_muted && v.host_mutes == 2)
    })
    .await;
    bob.guest.act("mute", &bob.session, &[("kind", "audio"), ("muted", "false")]).await.unwrap();
    roster_until(&mut ada.socket, "Bob unmuted again", |p, _, _| p.iter().any(|v| v.id == bob.id && !v.audio_muted))
        .await;
    // Own camera off and on: peers see it.
    bob.guest.act("mute", &bob.session, &[("kind", "video"), ("muted", "true")]).await.unwrap();
    roster_until(&mut cy.socket, "Bob's camera off", |p, _, _| p.iter().any(|v| v.id == bob.id && v.video_muted)).await;

    // Kick: Cy is told why, and nothing of Cy is left.
    ada.guest.act("kick", &ada.session, &cy_form).await.unwrap();
    assert_eq!(cy.socket.ended(WAIT).await, LeaveReason::Kicked);
    assert_eq!(server.recorded_leave(&cy.session).await, "kicked");
    roster_until(&mut ada.socket, "Cy gone", |p, _, _| p.len() == 2).await;
    // Removed, Cy may only ask to come back; the host turns her away.
    let again = cy.guest.join(&room, "Cy").await.unwrap();
    assert_eq!(again.state, ParticipantState::Pending, "a removed person knocks");
    assert!(again.roster.is_empty(), "and is told nothing of who is inside");
    let again_form = [("participant_id", again.participant_id.as_str()), ("approve", "false")];
    ada.guest.act("admit", &ada.session, &again_form).await.unwrap();
    assert_eq!(server.recorded_leave(&again.session_id).await, "denied");

    // Hand-over: Bob is admin, Ada is not any more (and is refused).
    ada.guest.act("make-admin", &ada.session, &bob_form).await.unwrap();
    roster_until(&mut ada.socket, "Bob is admin", |p, _, _| {
        p.iter().any(|v| v.id == bob.id && v.role == Role::Admin)
            && p.iter().any(|v| v.id == ada.id && v.role == Role::Member)
    })
    .await;
    let bob_row = server.state.rooms.db().participant(bob.session.as_str()).await.unwrap().unwrap();
    assert_eq!(bob_row.role, "admin");
    refused(ada.guest.act("end-meeting", &ada.session, &[]).await, AppError::Forbidden);

    // End meeting: everyone is told, the room is ended, nobody can join.
    bob.guest.act("end-meeting", &bob.session, &[]).await.unwrap();
    assert_eq!(ada.socket.ended(WAIT).await, LeaveReason::RoomEnded);
    assert_eq!(bob.socket.ended(WAIT).await, LeaveReason::RoomEnded);
    let row = server.state.rooms.db().room(room.as_str()).await.unwrap().unwrap();
    assert!(row.ended_at_ms.is_some());
    assert_eq!(row.end_reason.as_deref(), Some("ended"));
    refused(server.guest().join(&room, "Late").await.map(|_| ()), AppError::RoomEnded);
    let r = server.resources(&room).await;
    assert_eq!((r["sessions"].as_u64(), r["rooms"][0]["store_keys"].as_u64()), (Some(0), Some(0)), "{r}");
    assert_eq!(r["rooms"][0]["db_participants"], 0, "{r}");
    server.stop().await;
}

/// A member's (audio muted, audio locked) flags in the store.
async fn audio_flags(server: &TestServer, room: &RoomCode, session: &SessionId) -> (bool, bool) {
    let members = server.state.rooms.store().members(room).await.unwrap();
    let m = members.iter().find(|m| &m.session == session).expect("still in the room");
    (m.audio_muted, m.audio_locked)
}

#[tokio::test]
async fn where_the_host_unmutes_a_muted_person_waits_for_the_host() {
    let server = TestServer::sqlite_with(&[]).await;
    let ada_guest = server.guest();
    let room = ada_guest.create_room_with("Ada", &["host_unmutes"]).await.unwrap();
    let row = server.state.rooms.db().room(room.as_str()).await.unwrap().unwrap();
    assert!(row.host_unmutes && !row.private, "{row:?}");
    let (mut ada, _) = enter(&server, ada_guest, &room, "Ada").await;
    let (mut bob, _) = enter(&server, server.guest(), &room, "Bob").await;
    roster_until(&mut ada.socket, "two in the call", |p, _, _| p.len() == 2).await;
    let bob_form = [("participant_id", bob.id.as_str())];

    // Only the admin may let people speak again.
    refused(bob.guest.act("allow-unmute", &bob.session, &bob_form).await, AppError::Forbidden);

    ada.guest.act("mute-participant", &ada.session, &bob_form).await.unwrap();
    roster_until(&mut bob.socket, "Bob muted and locked", |p, _, _| {
        p.iter().any(|v| v.id == bob.id && v.audio_muted && v.audio_locked)
    })
    .await;
    // Bob cannot unmute himself: refused, nothing changed, still not forwarded.
    refused(bob.guest.act("mute", &bob.session, &[("kind", "audio"), ("muted", "false")]).await, AppError::MutedByHost);
    assert_eq!(audio_flags(&server, &room, &bob.session).await, (true, true));
    // His camera is still his own.
    bob.guest.act("mute", &bob.session, &[("kind", "video"), ("muted", "true")]).await.unwrap();
    assert_eq!(audio_flags(&server, &room, &bob.session).await, (true, true));

    // The admin lets him: still muted until he unmutes himself.
    ada.guest.act("allow-unmute", &ada.session, &bob_form).await.unwrap();
    roster_until(&mut bob.socket, "Bob free to unmute", |p, _, _| {
        p.iter().any(|v| v.id == bob.id && v.audio_muted && !v.audio_locked)
    })
    .await;
    bob.guest.act("mute", &bob.session, &[("kind", "audio"), ("muted", "false")]).await.unwrap();
    roster_until(&mut ada.socket, "Bob unmuted", |p, _, _| p.iter().any(|v| v.id == bob.id && !v.audio_muted)).await;
    assert_eq!(audio_flags(&server, &room, &bob.session).await, (false, false));
    server.stop().await;
}

#[tokio::test]
async fn admin_passes_to_the_longest_present_by_any_exit() {
    let server = TestServer::sqlite_with(&["--suspect-ms", "300", "--remove-ms", "1000"]).await;
    let ada_guest = server.guest();
    let room = ada_guest.create_room("Ada", false).await.unwrap();
    let (ada, _) = enter(&server, ada_guest, &room, "Ada").await;
    let (bob, _) = enter(&server, server.guest(), &room, "Bob").await;
    let (mut cy, _) = enter(&server, server.guest(), &room, "Cy").await;

    ada.guest.leave(&ada.session).await.unwrap();
    roster_until(&mut cy.socket, "Bob took over", |p, _, _| p.iter().any(|v| v.id == bob.id && v.role == Role::Admin))
        .await;
    // Bob's connection drops: Cy takes over once Bob is removed.
    drop(bob.socket);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        cy.socket.send_text(r#"{"type":"ping"}"#).await;
        if let Some(Seen::Msg(ServerMsg::Roster { participants, .. })) =
            cy.socket.try_next(Duration::from_millis(100)).await
        {
            if participants.len() == 1 && participants[0].role == Role::Admin {
                break;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "Cy never became admin");
    }
    let row = server.state.rooms.db().participant(cy.session.as_str()).await.unwrap().unwrap();
    assert_eq!(row.role, "admin");
    server.stop().await;
}

#[tokio::test]
async fn raised_hands_queue_in_order_and_clear_on_leave() {
    let server = TestServer::sqlite_with(&[]).await;
    let ada_guest = server.guest();
    let room = ada_guest.create_room("Ada", false).await.unwrap();
    let (mut ada, _) = enter(&server, ada_guest, &room, "Ada").await;
    let (bob, _) = enter(&server, server.guest(), &room, "Bob").await;
    let (cy, _) = enter(&server, server.guest(), &room, "Cy").await;

    for p in [&bob, &cy, &ada] {
        p.guest.act("hand", &p.session, &[("up", "true")]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Raising twice keeps one's place.
    bob.guest.act("hand", &bob.session, &[("up", "true")]).await.unwrap();
    let order = [bob.id.clone(), cy.id.clone(), ada.id.clone()];
    roster_until(&mut ada.socket, "three hands in order", |_, h, _| h == order).await;
    bob.guest.act("hand", &bob.session, &[("up", "false")]).await.unwrap();
    roster_until(&mut ada.socket, "Bob lowered", |_, h, _| h == [cy.id.clone(), ada.id.clone()]).await;
    cy.guest.leave(&cy.session).await.unwrap();
    roster_until(&mut ada.socket, "Cy's hand gone with Cy", |_, h, _| h == [ada.id.clone()]).await;
    // A stranger's session may not raise a hand here.
    refused(server.guest().act("hand", &bob.session, &[("up", "true")]).await, AppError::Forbidden);
    server.stop().await;
}

#[tokio::test]
async fn rooms_close_themselves() {
    let server =
        TestServer::sqlite_with(&["--empty-room-ms", "400", "--unused-room-ms", "400", "--reconcile-ms", "100"]).await;
    let host = server.guest();
    let unused = host.create_room("Host", false).await.unwrap();
    let emptied = host.create_room("Host", false).await.unwrap();
    let busy = host.create_room("Host", false).await.unwrap();
    let left = host.join(&emptied, "Host").await.unwrap();
    host.leave(&left.session_id).await.unwrap();
    let stays = server.guest().join(&busy, "Stays").await.unwrap();

    let db = server.state.rooms.db();
    for (room, reason) in [(&unused, "unused"), (&emptied, "empty")] {
        let row = common::eventually(WAIT, &format!("{room} closed"), || async {
            db.room(room.as_str()).await.ok().flatten().filter(|r| r.ended_at_ms.is_some())
        })
        .await;
        assert_eq!(row.end_reason.as_deref(), Some(reason));
    }
    // Every pass looks at every open room: the pass that closed the last of
    // the two idle ones looked at the busy one too.
    assert!(db.room(busy.as_str()).await.unwrap().unwrap().ended_at_ms.is_none(), "a room in use stays open");
    refused(server.guest().join(&unused, "Late").await.map(|_| ()), AppError::RoomEnded);
    assert!(server.state.rooms.sessions().get(&stays.session_id).is_some());
    server.stop().await;
}
