//! A published track: one media stream a participant sends to the SFU.
//!
//! Its reader task polls the webrtc remote track and fans each RTP packet
//! out on a broadcast channel, one receiver per [`super::forwarder::Forwarder`];
//! keyframe requests from subscribers come back on a small channel and go
//! to the publisher as PLI.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use app::model::{ParticipantId, SessionId};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RtpCodecKind};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

/// Packets buffered per subscriber before it lags (then it skips ahead
/// and asks for a keyframe).
const FANOUT_CAPACITY: usize = 512;

/// One track a participant publishes. Owned by its publisher's media
/// session; forwarders hold only a receiver and a keyframe sender, so
/// dropping the track ends them.
pub struct PublishedTrack {
    /// Unique per publisher track: `{participant}-{kind}-{n}`; the
    /// forwarded track's id on every subscriber's side.
    pub id: String,
    pub publisher: ParticipantId,
    pub session: SessionId,
    pub kind: RtpCodecKind,
    /// The codec the publisher sends; each forwarder offers the same.
    pub codec: RTCRtpCodec,
    packets: broadcast::Sender<rtp::Packet>,
    keyframes: mpsc::Sender<()>,
    /// Cancelled by [`PublishedTrack::close`]; child of the session's token.
    /// Forwarders of this track run under child tokens of it.
    token: CancellationToken,
    closed: AtomicBool,
}

impl std::fmt::Debug for PublishedTrack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishedTrack").field("id", &self.id).field("kind", &self.kind).finish()
    }
}

/// The receiving half of a new track: the reader task's work.
pub struct TrackReader {
    track: Arc<PublishedTrack>,
    remote: Arc<dyn TrackRemote>,
    keyframes: mpsc::Receiver<()>,
    media_ssrc: u32,
}

impl PublishedTrack {
    /// Makes the track and its reader (to be spawned by the owner).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        publisher: ParticipantId,
        session: SessionId,
        kind: RtpCodecKind,
        codec: RTCRtpCodec,
        media_ssrc: u32,
        remote: Arc<dyn TrackRemote>,
        token: CancellationToken,
    ) -> (Arc<Self>, TrackReader) {
        let (packets, _) = broadcast::channel(FANOUT_CAPACITY);
        let (keyframes, keyframe_rx) = mpsc::channel(1);
        let track = Arc::new(Self {
            id,
            publisher,
            session,
            kind,
            codec,
            packets,
            keyframes,
            token,
            closed: AtomicBool::new(false),
        });
        let reader = TrackReader { track: track.clone(), remote, keyframes: keyframe_rx, media_ssrc };
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
        self.token.child_token()
    }

    /// Stops the reader and every forwarder of the track. Returns `true`
    /// for the one call that closed it.
    pub fn close(&self) -> bool {
        if self.closed.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.token.cancel();
        true
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.token.is_cancelled()
    }
}

impl Drop for PublishedTrack {
    fn drop(&mut self) {
        // Backstop: a track dropped unclosed still stops its forwarders.
        self.close();
    }
}

impl TrackReader {
    /// Reads until the track closes or the remote track ends. Returns the
    /// track's id so the owner can unpublish it.
    pub async fn run(mut self) -> String {
        let token = self.track.token.clone();
        loop {
            tokio::select! {
                () = token.cancelled() => break,
                event = self.remote.poll() => match event {
                    Some(TrackRemoteEvent::OnRtpPacket(packet)) => {
                        // No receiver yet is fine: nobody subscribes to it.
                        let _ = self.track.packets.send(packet);
                    }
                    Some(TrackRemoteEvent::OnEnded) | None => break,
                    Some(_) => {}
                },
                Some(()) = self.keyframes.recv() => {
                    let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc: self.media_ssrc };
                    if let Err(e) = self.remote.write_rtcp(vec![Box::new(pli)]).await {
                        tracing::debug!(track = %self.track.id, error = %e, "PLI not sent");
                    }
                }
            }
        }
        self.track.id.clone()
    }
}
