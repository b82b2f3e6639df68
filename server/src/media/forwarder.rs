//! A forwarder: one published track delivered to one subscriber.
//!
//! A `TrackLocalStaticRTP` binds to one sender only, so fan-out is ours:
//! every (published track, subscriber) pair gets its own local track, added
//! to the subscriber's peer connection with the publisher's `ParticipantId`
//! as stream id and the published track's id as track id. Each packet is
//! rewritten to the subscriber side's SSRC and payload type, with its header
//! extensions stripped (their ids were negotiated with the publisher, not
//! with this subscriber). PLI/FIR from the subscriber go to the publisher.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use app::model::ParticipantId;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::PeerConnection;
use webrtc::rtp_transceiver::RtpSender;

use super::engine::is_keyframe_request;
use super::track::PublishedTrack;
use super::MediaError;
use crate::lifetime::Lifetime;

/// How long the feedback task waits before looking again for RTCP on a
/// sender that is not bound yet (bound once the answer is applied).
const UNBOUND_RETRY: Duration = Duration::from_millis(200);

/// One published track delivered to one subscriber. Owned by the
/// subscriber's media session; closed when either side goes, or when its
/// owner drops it (its loops hold the `Relay`, not the forwarder).
pub struct Forwarder {
    /// `{track id}>{subscriber}`: the store's resource id.
    pub id: String,
    /// The published track's id (also the local track's id).
    pub track_id: String,
    /// The participant who publishes the track.
    pub publisher: ParticipantId,
    /// Audio or video.
    pub kind: RtpCodecKind,
    /// The subscriber connection's sender, for `remove_track`.
    pub sender: Arc<dyn RtpSender>,
    /// What the loops use.
    relay: Arc<Relay>,
    /// Closed once; its token is a child of the published track's, so the
    /// publisher's close ends it.
    lifetime: Lifetime<()>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder").finish_non_exhaustive()
    }
}

/// The part of a forwarder its two loops share.
struct Relay {
    id: String,
    kind: RtpCodecKind,
    codec: RTCRtpCodec,
    local: Arc<TrackLocalStaticRTP>,
    /// SSRC of the subscriber side (random per forwarder).
    ssrc: u32,
    /// Payload type negotiated with the subscriber; 0 until known (then the
    /// publisher's is kept, which is the same with our single media engine).
    payload_type: AtomicU8,
    /// Whether the subscriber's answer covering this forwarder was applied.
    negotiated: AtomicBool,
    keyframes: mpsc::Sender<()>,
    /// The subscriber's connection is up (DTLS done): before that, packets
    /// would only be refused by the SRTP layer.
    subscriber_ready: Arc<AtomicBool>,
}

/// The forwarder's two loops, for the owner to spawn under its tracker.
pub struct ForwarderTasks {
    /// Copies the published track's RTP packets to the subscriber.
    pub packets: futures::future::BoxFuture<'static, ()>,
    /// Reads the subscriber's RTCP and passes keyframe requests to the publisher.
    pub feedback: futures::future::BoxFuture<'static, ()>,
}

impl std::fmt::Debug for ForwarderTasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwarderTasks").finish_non_exhaustive()
    }
}

impl Forwarder {
    /// Adds a local track for `track` to the subscriber's connection. The
    /// caller renegotiates and spawns the returned tasks.
    pub async fn start(
        pc: &Arc<dyn PeerConnection>,
        track: &PublishedTrack,
        subscriber: &ParticipantId,
        subscriber_ready: Arc<AtomicBool>,
        reuse_slot: bool,
    ) -> Result<(Arc<Self>, ForwarderTasks), MediaError> {
        let ssrc = rand::random::<u32>();
        let local = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            track.stream.clone(),
            track.id.clone(),
            track.id.clone(),
            track.kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                codec: track.codec.clone(),
                ..Default::default()
            }],
        )));
        let packets = track.subscribe();
        let sender = if reuse_slot {
            // Fills a freed send-only transceiver of this kind (the only
            // sender-less ones the session has).
            pc.add_track(local.clone() as Arc<dyn TrackLocal>).await?
        } else {
            let init = RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Sendonly, ..Default::default() };
            let transceiver = pc.add_transceiver_from_track(local.clone() as Arc<dyn TrackLocal>, Some(init)).await?;
            transceiver.sender().await?.ok_or(MediaError::Rtc(webrtc::error::Error::ErrRTPSenderNotExisted))?
        };
        let id = format!("{}>{}", track.id, subscriber);
        let relay = Arc::new(Relay {
            id: id.clone(),
            kind: track.kind,
            codec: track.codec.clone(),
            local,
            ssrc,
            payload_type: AtomicU8::new(0),
            negotiated: AtomicBool::new(false),
            keyframes: track.keyframe_requests(),
            subscriber_ready,
        });
        let lifetime = Lifetime::new(track.child_token());
        let tasks = ForwarderTasks {
            packets: Box::pin(relay.clone().forward(packets, lifetime.token().clone())),
            feedback: Box::pin(relay.clone().relay_feedback(lifetime.token().clone())),
        };
        let forwarder = Arc::new(Self {
            id,
            track_id: track.id.clone(),
            publisher: track.publisher.clone(),
            kind: track.kind,
            sender,
            relay,
            lifetime,
        });
        Ok((forwarder, tasks))
    }

    /// Stops both loops. Returns `true` for the one call that closed it.
    pub fn close(&self) -> bool {
        self.lifetime.close(())
    }

    /// [`Forwarder::close`] was called, or the published track closed.
    pub fn is_closed(&self) -> bool {
        self.lifetime.is_closed()
    }

    /// Asks the publisher for a keyframe (video only).
    pub fn request_keyframe(&self) {
        self.relay.request_keyframe();
    }

    /// Called once the subscriber's answer is applied: learns the payload
    /// type the subscriber agreed to. Returns `true` the first time.
    pub async fn negotiated(&self) -> bool {
        let relay = &self.relay;
        if let Ok(params) = self.sender.get_parameters().await {
            let matching = params.rtp_parameters.codecs.iter().find(|c| {
                c.rtp_codec.mime_type.eq_ignore_ascii_case(&relay.codec.mime_type)
                    && (relay.codec.sdp_fmtp_line.is_empty() || c.rtp_codec.sdp_fmtp_line == relay.codec.sdp_fmtp_line)
            });
            let any_of_kind = params
                .rtp_parameters
                .codecs
                .iter()
                .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(&relay.codec.mime_type));
            if let Some(codec) = matching.or(any_of_kind) {
                relay.payload_type.store(codec.payload_type, Ordering::Release);
            }
        }
        !relay.negotiated.swap(true, Ordering::AcqRel)
    }
}

impl Relay {
    fn request_keyframe(&self) {
        if self.kind == RtpCodecKind::Video {
            let _ = self.keyframes.try_send(());
        }
    }

    fn rewrite(&self, packet: &mut rtp::Packet) {
        let header = &mut packet.header;
        header.ssrc = self.ssrc;
        let pt = self.payload_type.load(Ordering::Acquire);
        if pt != 0 {
            header.payload_type = pt;
        }
        header.extension = false;
        header.extension_profile = 0;
        header.extensions.clear();
        header.extensions_padding = 0;
    }

    async fn forward(self: Arc<Self>, mut packets: broadcast::Receiver<rtp::Packet>, token: CancellationToken) {
        loop {
            let next = tokio::select! {
                () = token.cancelled() => break,
                next = packets.recv() => next,
            };
            match next {
                Ok(mut packet) => {
                    if !self.negotiated.load(Ordering::Acquire) || !self.subscriber_ready.load(Ordering::Acquire) {
                        continue;
                    }
                    self.rewrite(&mut packet);
                    // Fails until the sender is bound (before the answer): dropped, as on the wire.
                    let _ = self.local.write_rtp(packet).await;
                }
                Err(RecvError::Lagged(skipped)) => {
                    tracing::debug!(forwarder = %self.id, skipped, "subscriber lagged");
                    self.request_keyframe();
                }
                Err(RecvError::Closed) => break,
            }
        }
    }

    async fn relay_feedback(self: Arc<Self>, token: CancellationToken) {
        loop {
            let event = tokio::select! {
                () = token.cancelled() => break,
                event = self.local.poll() => event,
            };
            match event {
                Some(TrackLocalEvent::OnRtcpPacket(packets)) => {
                    if packets.iter().any(|p| is_keyframe_request(p.as_ref())) {
                        self.request_keyframe();
                    }
                }
                Some(_) => {}
                // Not bound yet, or unbound: look again a little later.
                None => {
                    tokio::select! {
                        () = token.cancelled() => break,
                        () = tokio::time::sleep(UNBOUND_RETRY) => {}
                    }
                }
            }
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.close();
    }
}
