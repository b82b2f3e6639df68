//! The active speaker and the per-publisher forwarding switch.
//!
//! Headless participants stamp their audio with an RFC 6464 level (silence
//! unless a test makes them speak); the SFU reads the levels before fan-out
//! and decides, with smoothing, who speaks. The decision is observed on the
//! SFU ([`server::media::Sfu::speaker`], [`server::media::Sfu::speaker_changes`])
//! and, through the room service's `speaker_changed`, in the store. The
//! smoothing itself (bursts, people taking turns) is tested on an injected
//! clock in `media::speaker`'s unit tests.
//! Switching a publisher's audio off stops it reaching every subscriber and
//! takes it out of the speaker decision; its video keeps flowing.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use app::model::{MediaKind, RoomCode, SessionId};
use common::rtc_client::MediaGuest;
use common::{eventually, Backend, TestServer};

const MEDIA: Duration = Duration::from_secs(30);
/// Packets from every other publisher before we call it "receiving".
const ENOUGH: u64 = 30;
/// A clearly speaking voice, in −dBov.
const LOUD: u8 = 20;

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

fn session(guest: &MediaGuest) -> SessionId {
    guest.outcome.session_id.clone()
}

fn speak(guest: &MediaGuest, level: u8) {
    guest.client().set_audio_level(level, true);
}

fn hush(guest: &MediaGuest) {
    guest.client().set_audio_level(127, false);
}

/// Waits for the SFU's decision, then for the store to record it.
async fn wait_speaker(server: &TestServer, room: &RoomCode, want: Option<&SessionId>) {
    let sfu = server.state.rooms.media();
    eventually(MEDIA, &format!("SFU speaker {want:?}"), || async {
        (sfu.speaker(room).as_ref() == want).then_some(())
    })
    .await;
    eventually(MEDIA, &format!("stored speaker {want:?}"), || async {
        (server.state.rooms.store().speaker(room).await.ok()?.as_ref() == want).then_some(())
    })
    .await;
}

/// Waits until `guest` received `more` video packets from `publisher`
/// (time passing, measured in media).
async fn video_flows(guest: &MediaGuest, publisher: &MediaGuest, more: u64) {
    let from = guest.stats().video_received_from(publisher.participant());
    eventually(MEDIA, "video keeps flowing", || async {
        (guest.stats().video_received_from(publisher.participant()) >= from + more).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loudest_publisher_is_the_speaker_and_a_leaving_speaker_is_cleared() {
    let server = TestServer::start(Backend::SqliteMemory).await;
    let host = server.guest();
    let room = host.create_room("Ada", false).await.expect("room");
    let ada = MediaGuest::join_as(host, &room, "Ada").await;
    let bob = MediaGuest::join(&server, &room, "Bob").await;
    let cyd = MediaGuest::join(&server, &room, "Cyd").await;
    all_hear_each_other(&[&ada, &bob, &cyd]).await;
    let sfu = server.state.rooms.media();
    // Everybody silent: nobody speaks, nothing was announced.
    video_flows(&ada, &bob, 30).await;
    assert_eq!(sfu.speaker(&room), None);
    assert_eq!(sfu.speaker_changes(&room), 0);

    // One loud, two silent.
    speak(&ada, LOUD);
    wait_speaker(&server, &room, Some(&session(&ada))).await;

    // The loudness moves to Bob: the speaker follows.
    hush(&ada);
    speak(&bob, LOUD);
    wait_speaker(&server, &room, Some(&session(&bob))).await;

    // Two speak, one clearly louder.
    speak(&cyd, 5);
    speak(&bob, 45);
    wait_speaker(&server, &room, Some(&session(&cyd))).await;

    // Everybody silent: cleared.
    hush(&bob);
    hush(&cyd);
    wait_speaker(&server, &room, None).await;

    // The speaker leaves: cleared at once (before its leave returns).
    speak(&bob, LOUD);
    wait_speaker(&server, &room, Some(&session(&bob))).await;
    let changes = sfu.speaker_changes(&room);
    bob.leave().await;
    assert_eq!(sfu.speaker(&room), None, "a leaving speaker is cleared with its media");
    assert_eq!(sfu.speaker_changes(&room), changes + 1);
    wait_speaker(&server, &room, None).await;

    // The others go on: a new speaker can be found.
    speak(&ada, LOUD);
    wait_speaker(&server, &room, Some(&session(&ada))).await;

    ada.leave().await;
    cyd.leave().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_switched_off_stops_one_kind_for_every_subscriber() {
    let server = TestServer::start(Backend::SqliteMemory).await;
    let host = server.guest();
    let room = host.create_room("Ada", false).await.expect("room");
    let ada = MediaGuest::join_as(host, &room, "Ada").await;
    let bob = MediaGuest::join(&server, &room, "Bob").await;
    let cyd = MediaGuest::join(&server, &room, "Cyd").await;
    all_hear_each_other(&[&ada, &bob, &cyd]).await;
    let sfu = server.state.rooms.media();
    let subscribers = [&bob, &cyd];
    assert!(!sfu.set_forwarding(&room, &SessionId::new("nobody"), MediaKind::Audio, false), "unknown session");

    speak(&ada, LOUD);
    wait_speaker(&server, &room, Some(&session(&ada))).await;

    // Ada's audio off (an admin mute): it stops reaching both subscribers,
    // her video goes on, and she is no longer the speaker though she still
    // sends loud audio.
    assert!(sfu.set_forwarding(&room, &session(&ada), MediaKind::Audio, false));
    for s in subscribers {
        // Let what was in flight arrive.
        video_flows(s, &ada, 10).await;
    }
    let audio: Vec<u64> = subscribers.iter().map(|s| s.stats().audio_received_from(ada.participant())).collect();
    wait_speaker(&server, &room, None).await;
    for s in subscribers {
        video_flows(s, &ada, 30).await;
    }
    for (s, before) in subscribers.iter().zip(&audio) {
        assert_eq!(s.stats().audio_received_from(ada.participant()), *before, "no audio from Ada while off");
    }
    // Others are not affected.
    let from_bob = cyd.stats().audio_received_from(bob.participant());
    eventually(MEDIA, "Bob's audio still flows", || async {
        (cyd.stats().audio_received_from(bob.participant()) >= from_bob + 20).then_some(())
    })
    .await;

    // Back on: audio resumes at once on the same tracks, and she speaks again.
    assert!(sfu.set_forwarding(&room, &session(&ada), MediaKind::Audio, true));
    for (s, before) in subscribers.iter().zip(&audio) {
        eventually(MEDIA, "Ada's audio resumes", || async {
            (s.stats().audio_received_from(ada.participant()) >= before + 20).then_some(())
        })
        .await;
        assert_eq!(s.stats().live_tracks_from(ada.participant()), 2, "the same two tracks");
    }
    wait_speaker(&server, &room, Some(&session(&ada))).await;

    // Video off: video stops, audio goes on; on again asks Ada for a keyframe.
    assert!(sfu.set_forwarding(&room, &session(&ada), MediaKind::Video, false));
    for s in subscribers {
        let audio = s.stats().audio_received_from(ada.participant());
        eventually(MEDIA, "audio flows while video is off", || async {
            (s.stats().audio_received_from(ada.participant()) >= audio + 10).then_some(())
        })
        .await;
    }
    let video: Vec<u64> = subscribers.iter().map(|s| s.stats().video_received_from(ada.participant())).collect();
    for s in subscribers {
        let audio = s.stats().audio_received_from(ada.participant());
        eventually(MEDIA, "audio flows while video is off", || async {
            (s.stats().audio_received_from(ada.participant()) >= audio + 50).then_some(())
        })
        .await;
    }
    for (s, before) in subscribers.iter().zip(&video) {
        assert_eq!(s.stats().video_received_from(ada.participant()), *before, "no video from Ada while off");
    }
    let keyframes = ada.stats().keyframe_requests.load(Ordering::Acquire);
    assert!(sfu.set_forwarding(&room, &session(&ada), MediaKind::Video, true));
    for s in subscribers {
        video_flows(s, &ada, 20).await;
    }
    eventually(MEDIA, "a keyframe request on resume", || async {
        (ada.stats().keyframe_requests.load(Ordering::Acquire) > keyframes).then_some(())
    })
    .await;

    ada.leave().await;
    bob.leave().await;
    cyd.leave().await;
    server.stop().await;
}
