//! Screen sharing as the room sees it: sharing shows in everybody's
//! roster, one share per person, only its sharer or the admin stops it,
//! and a sharer leaving takes the share along. (The media path of a share
//! is checked by the browser suite, which captures a real screen.)

mod common;

use std::time::Duration;

use app::error::AppError;
use app::model::{ParticipantId, ParticipantView};
use app::signal::ServerMsg;
use common::{Seen, Socket, TestServer};

const WAIT: Duration = Duration::from_secs(10);

/// Reads rosters until one satisfies `check`.
async fn roster_until(socket: &mut Socket, what: &str, check: impl Fn(&[ParticipantView]) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "no roster showed: {what}");
        match socket.next_non_media(left).await {
            Seen::Msg(ServerMsg::Roster { participants, .. }) if check(&participants) => return,
            Seen::Msg(_) => {}
            Seen::Closed(code) => panic!("socket closed ({code:?}) waiting for: {what}"),
        }
    }
}

fn sharing(ps: &[ParticipantView], id: &ParticipantId) -> bool {
    ps.iter().any(|p| &p.id == id && p.screen)
}

#[tokio::test]
async fn shares_are_the_sharers_or_the_admins_to_stop() {
    let server = TestServer::sqlite_with(&[]).await;
    let ada = server.guest();
    let room = ada.create_room("Ada", false).await.unwrap();
    let a = ada.join(&room, "Ada").await.unwrap();
    let mut ada_socket = ada.socket(&room, &a.session_id).await;
    let bob = server.guest();
    let b = bob.join(&room, "Bob").await.unwrap();
    let _bob_socket = bob.socket(&room, &b.session_id).await;
    let cy = server.guest();
    let c = cy.join(&room, "Cy").await.unwrap();
    let mut cy_socket = cy.socket(&room, &c.session_id).await;

    // Bob shares: everybody's roster says so.
    bob.act("screen", &b.session_id, &[("on", "true")]).await.unwrap();
    roster_until(&mut cy_socket, "Bob sharing", |ps| sharing(ps, &b.participant_id)).await;
    // Sharing again is still one share.
    bob.act("screen", &b.session_id, &[("on", "true")]).await.unwrap();
    let members = server.state.rooms.store().members(&room).await.unwrap();
    assert_eq!(members.iter().filter(|m| m.screen).count(), 1);

    // Cy is not the admin: her stop changes nothing; nor may anybody act for Bob.
    let refused = cy.act("stop-screen", &c.session_id, &[("participant_id", b.participant_id.as_str())]).await;
    assert_eq!(refused.expect_err("refused").error, Some(AppError::Forbidden));
    let forged = cy.act("screen", &b.session_id, &[("on", "false")]).await;
    assert_eq!(forged.expect_err("refused").error, Some(AppError::Forbidden));
    let members = server.state.rooms.store().members(&room).await.unwrap();
    assert!(members.iter().any(|m| m.participant == b.participant_id && m.screen), "still sharing");

    // The admin stops it.
    ada.act("stop-screen", &a.session_id, &[("participant_id", b.participant_id.as_str())]).await.unwrap();
    roster_until(&mut ada_socket, "Bob's share stopped by the admin", |ps| !sharing(ps, &b.participant_id)).await;

    // Shared again, then Bob leaves: the share goes with him.
    bob.act("screen", &b.session_id, &[("on", "true")]).await.unwrap();
    roster_until(&mut ada_socket, "Bob sharing again", |ps| sharing(ps, &b.participant_id)).await;
    bob.leave(&b.session_id).await.unwrap();
    roster_until(&mut ada_socket, "Bob and his share gone", |ps| ps.len() == 2 && ps.iter().all(|p| !p.screen)).await;
    server.stop().await;
}
