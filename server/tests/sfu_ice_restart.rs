//! ICE restart on the same session: a participant asks (as a browser does
//! when its network changed), the SFU offers again with new ICE credentials,
//! the participant answers, and media keeps flowing both ways on the same
//! session, with nobody removed and no leave recorded.

mod common;

use std::time::Duration;

use app::signal::ClientMsg;
use common::rtc_client::MediaGuest;
use common::{eventually, Backend, TestServer};

const MEDIA: Duration = Duration::from_secs(30);

fn ufrag(sdp: &str) -> Option<String> {
    sdp.lines().find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:").map(str::to_owned))
}

#[tokio::test]
async fn a_restart_renews_the_ice_credentials_and_keeps_the_session_and_its_media() {
    let server = TestServer::start(Backend::SqliteMemory).await;
    let host = server.guest();
    let room = host.create_room("Ada", false).await.expect("room");
    let ada = MediaGuest::join_as(host, &room, "Ada").await;
    let bob = MediaGuest::join(&server, &room, "Bob").await;
    for (listener, speaker) in [(&ada, &bob), (&bob, &ada)] {
        eventually(MEDIA, "media both ways", || async {
            (listener.stats().received_from(speaker.participant()) >= 50).then_some(())
        })
        .await;
    }
    let before = ufrag(&bob.stats().last_offer()).expect("ufrag");

    bob.send(ClientMsg::RestartIce);
    let after = eventually(MEDIA, "an offer with new ICE credentials", || async {
        ufrag(&bob.stats().last_offer()).filter(|u| *u != before)
    })
    .await;
    assert_ne!(after, before);

    // Media flows again after the restart, both ways, on the same session.
    let (from_ada, from_bob) =
        (bob.stats().received_from(ada.participant()), ada.stats().received_from(bob.participant()));
    for (listener, speaker, seen) in [(&bob, &ada, from_ada), (&ada, &bob, from_bob)] {
        eventually(MEDIA, "media after the restart", || async {
            (listener.stats().received_from(speaker.participant()) >= seen + 50).then_some(())
        })
        .await;
    }
    let state = server.resources(&room).await;
    assert_eq!(state["peer_connections"], 2, "{state}");
    assert_eq!(state["sessions"], 2, "{state}");
    assert_eq!(server.leave_reason(&bob.outcome.session_id).await, None, "no leave recorded");
    let metrics = reqwest::get(server.url("/metrics")).await.expect("metrics");
    let text = metrics.text().await.expect("text");
    assert!(
        text.lines().any(|l| l.starts_with("cleanroom_ice_restarts_total") && !l.ends_with(" 0")),
        "the restart is counted"
    );
    ada.close().await;
    bob.close().await;
    server.stop().await;
}
