//! A published track: one media stream a participant sends to the SFU.
//!
//! Its reader task polls the webrtc remote track and fans each RTP packet
//! out on a broadcast channel, one receiver per [`super::forwarder::Forwarder`];
//! keyframe requests from subscribers come back on a small channel and go
//! to the publisher as PLI.
//!
//! Before fan-out the reader applies what its publisher's
//! [`PublisherState`] (shared by every track of the publisher, including
//! tracks published later) says:
//! - forwarding of the track's kind switched off (an admin mute): the packet
//!   is dropped, and the sequence numbers of the packets forwarded later are
//!   shifted down so that subscribers see no gap (a pause, not a loss);
//! - audio: the RFC 6464 level of each forwarded packet is recorded in the
//!   publisher's [`LevelMeter`] (suppressed audio is not recorded, so it
//!   never counts for the active speaker).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use app::model::{MediaKind, ParticipantId, SessionId};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RtpCodecKind};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use super::engine::parse_audio_level;
use super::speaker::LevelMeter;
use crate::lifetime::Lifetime;

/// Packets buffered per subscriber before it lags (then it skips ahead
/// and asks for a keyframe).
const FANOUT_CAPACITY: usize = 512;

/// What every track of one publisher shares: the forwarding switches (on
/// unless switched off, for an admin mute) and the audio levels.
#[derive(Debug)]
pub struct PublisherState {
    audio: AtomicBool,
    video: AtomicBool,
    levels: LevelMeter,
}

impl Default for PublisherState {
    fn default() -> Self {
        Self { audio: AtomicBool::new(true), video: AtomicBool::new(true), levels: LevelMeter::default() }
    }
}

impl PublisherState {
    fn switch(&self, kind: MediaKind) -> &AtomicBool {
        match kind {
            MediaKind::Audio => &self.audio,
            MediaKind::Video => &self.video,
        }
    }

    /// Whether this publisher's media of `kind` goes to its subscribers.
    pub fn forwarding(&self, kind: MediaKind) -> bool {
        self.switch(kind).load(Ordering::Acquire)
    }

    /// Switches forwarding of `kind`; returns the previous setting. Audio
    /// switched off also forgets its levels.
    pub fn set_forwarding(&self, kind: MediaKind, on: bool) -> bool {
        let was = self.switch(kind).swap(on, Ordering::AcqRel);
        if kind == MediaKind::Audio && !on {
            self.levels.clear();
        }
        was
    }

    /// The publisher's recent audio levels.
    pub fn levels(&self) -> &LevelMeter {
        &self.levels
    }
}

/// The app's media kind of a codec kind (anything not audio is video).
pub fn media_kind(kind: RtpCodecKind) -> MediaKind {
    if kind == RtpCodecKind::Audio {
        MediaKind::Audio
    } else {
        MediaKind::Video
    }
}

/// One track a participant publishes. Owned by its publisher's media
/// session; forwarders hold only a receiver and a keyframe sender, so
/// dropping the track ends them.
pub struct PublishedTrack {
    /// Unique per publisher track: `{participant}-{kind}-{n}`; the
    /// forwarded track's id on every subscriber's side.
    pub id: String,
    /// The participant who publishes it.
    pub publisher: ParticipantId,
    /// The stream id subscribers see it under: the publisher's id for the
    /// camera and microphone, [`screen_stream`] of it for a screen share.
    pub stream: String,
    /// The publisher's session.
    pub session: SessionId,
    /// Audio or video.
    pub kind: RtpCodecKind,
    /// The codec the publisher sends; each forwarder offers the same.
    pub codec: RTCRtpCodec,
    /// Shared with the publisher's session and its other tracks.
    publisher_state: Arc<PublisherState>,
    packets: broadcast::Sender<rtp::Packet>,
    keyframes: mpsc::Sender<()>,
    /// Closed once by [`PublishedTrack::close`] (or its `Drop`); its token
    /// is a child of the session's, and forwarders of this track run under
    /// child tokens of it.
    lifetime: Lifetime<()>,
}

impl std::fmt::Debug for PublishedTrack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishedTrack").field("id", &self.id).field("kind", &self.kind).finish()
    }
}

/// The receiving half of a new track: the reader task's work. It holds
/// what it needs of the track, not the track itself, so the track's last
/// owner dropping it closes it (and so ends the reader).
pub struct TrackReader {
    id: String,
    kind: RtpCodecKind,
    publisher_state: Arc<PublisherState>,
    packets: broadcast::Sender<rtp::Packet>,
    token: CancellationToken,
    remote: Arc<dyn TrackRemote>,
    keyframes: mpsc::Receiver<()>,
    media_ssrc: u32,
    /// The negotiated id of the audio level extension (audio tracks).
    audio_level_id: Option<u8>,
}

impl std::fmt::Debug for TrackReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackReader").finish_non_exhaustive()
    }
}

/// The stream id of a participant's screen share (`{participant}.screen`).
pub fn screen_stream(participant: &ParticipantId) -> String {
    format!("{participant}.{}", app::model::SCREEN_STREAM_SUFFIX)
}

impl PublishedTrack {
    /// Makes the track and its reader (to be spawned by the owner).
    /// `audio_level_id`: the negotiated id of the audio level extension, if
    /// the publisher sends it on this track.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        publisher: ParticipantId,
        stream: String,
        session: SessionId,
        kind: RtpCodecKind,
        codec: RTCRtpCodec,
        media_ssrc: u32,
        audio_level_id: Option<u8>,
        publisher_state: Arc<PublisherState>,
        remote: Arc<dyn TrackRemote>,
        token: CancellationToken,
    ) -> (Arc<Self>, TrackReader) {
        let (packets, _) = broadcast::channel(FANOUT_CAPACITY);
        let (keyframes, keyframe_rx) = mpsc::channel(1);
        let track = Arc::new(Self {
            id,
            publisher,
            stream,
            session,
            kind,
            codec,
            publisher_state,
            packets,
            keyframes,
            lifetime: Lifetime::new(token),
        });
        let audio_level_id = audio_level_id.filter(|_| kind == RtpCodecKind::Audio);
        let reader = TrackReader {
            id: track.id.clone(),
            kind,
            publisher_state: track.publisher_state.clone(),
            packets: track.packets.clone(),
            token: track.lifetime.token().clone(),
            remote,
            keyframes: keyframe_rx,
            media_ssrc,
            audio_level_id,
        };
        (track, reader)
    }

    /// A receiver of every packet from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<rtp::Packet> {
        self.packets.subscribe()
    }

    /// A handle to ask the publisher for a keyframe.
    pub fn keyframe_requests(&self) -> mpsc::Sender<()> {
        self.keyframes.clone()
    }

    /// Asks the publisher for a keyframe (coalesced: one pending at most).
    pub fn request_keyframe(&self) {
        let _ = self.keyframes.try_send(());
    }

    /// A child token for a forwarder of this track.
    pub fn child_token(&self) -> CancellationToken {
        self.lifetime.child_token()
    }

    /// Stops the reader and every forwarder of the track. Returns `true`
    /// for the one call that closed it.
    pub fn close(&self) -> bool {
        self.lifetime.close(())
    }

    /// Closed by [`PublishedTrack::close`] or with its session.
    pub fn is_closed(&self) -> bool {
        self.lifetime.is_closed()
    }
}

impl Drop for PublishedTrack {
    fn drop(&mut self) {
        // Backstop: a track dropped unclosed still stops its forwarders.
        self.close();
    }
}

/// A video track silent this long and then sending again has lost its
/// subscribers' picture (a frame lasts 33 ms at 30 fps; a camera never
/// pauses this long on its own).
const RESUME_GAP: std::time::Duration = std::time::Duration::from_millis(500);

impl TrackReader {
    /// Reads until the track closes or the remote track ends. Returns the
    /// track's id so the owner can unpublish it.
    pub async fn run(mut self) -> String {
        let token = self.token.clone();
        let kind = media_kind(self.kind);
        // Packets dropped while forwarding was off: later sequence numbers
        // are shifted down by this much.
        let mut dropped = 0u16;
        let mut last_packet: Option<Instant> = None;
        loop {
            tokio::select! {
                () = token.cancelled() => break,
                event = self.remote.poll() => match event {
                    Some(TrackRemoteEvent::OnRtpPacket(mut packet)) => {
                        // Video back after a silence (the publisher's network
                        // dropped for a moment): every subscriber's decoder has
                        // lost the picture, so ask for a keyframe at once
                        // rather than waiting for each of them to ask.
                        let now = Instant::now();
                        if kind == MediaKind::Video && last_packet.is_some_and(|t| now.duration_since(t) > RESUME_GAP) {
                            tracing::debug!(track = %self.id, "video resumed after a gap: asking for a keyframe");
                            self.send_pli().await;
                        }
                        last_packet = Some(now);
                        let state = &self.publisher_state;
                        if !state.forwarding(kind) {
                            dropped = dropped.wrapping_add(1);
                            continue;
                        }
                        if let Some(id) = self.audio_level_id {
                            let level = packet.header.get_extension(id).and_then(|p| parse_audio_level(&p));
                            if let Some((level, _voice)) = level {
                                state.levels().record(Instant::now(), level);
                            }
                        }
                        packet.header.sequence_number = packet.header.sequence_number.wrapping_sub(dropped);
                        // No receiver yet is fine: nobody subscribes to it.
                        let _ = self.packets.send(packet);
                    }
                    Some(TrackRemoteEvent::OnEnded) | None => break,
                    Some(_) => {}
                },
                Some(()) = self.keyframes.recv() => self.send_pli().await,
            }
        }
        self.id
    }

    /// Asks the publisher for a keyframe.
    async fn send_pli(&self) {
        let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc: self.media_ssrc };
        if let Err(e) = self.remote.write_rtcp(vec![Box::new(pli)]).await {
            tracing::debug!(track = %self.id, error = %e, "PLI not sent");
        }
    }
}
