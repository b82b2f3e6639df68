//! A forwarder: one published track delivered to one subscriber.
//!
//! A `TrackLocalStaticRTP` binds to one sender only, so fan-out is ours:
//! every (published track, subscriber) pair gets its own local track, added
//! to the subscriber's peer connection with the publisher's `ParticipantId`
//! as stream id and the published track's id as track id. Each packet is
//! rewritten to the subscriber side's SSRC and payload type, with its header
//! extensions stripped (their ids were negotiated with the publisher, not
//! with this subscriber). PLI/FIR from the subscriber go to the publisher.
//!
//! Of a simulcast track it sends one layer, the one its subscriber's
//! session chose ([`Forwarder::set_target`]), or none (paused). A
//! [`LayerSwitch`] moves to the chosen layer on that layer's next keyframe
//! (asked for at once, and again while it does not come) and rewrites
//! sequence numbers, timestamps and VP8 picture ids so that the subscriber
//! decodes one stream.
//!
//! While its session probes the subscriber's downlink
//! ([`Forwarder::probe`]) a video forwarder also sends padding between
//! frames, numbered into the same stream, until the probe's time is up or
//! the estimate falls (the link is full).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use app::model::ParticipantId;
use bytes::Bytes;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::PeerConnection;
use webrtc::rtp_transceiver::RtpSender;

use super::engine::is_keyframe_request;
use super::estimate::Downlink;
use super::simulcast::{LayerSwitch, Verdict};
use super::track::{Layered, PublishedTrack, TrackLayers, Want};
use super::MediaError;
use crate::lifetime::Lifetime;
use crate::metrics as m;

/// How often a forwarder waiting to switch layers asks again for the
/// keyframe it waits for.
const KEYFRAME_ASK_EVERY: Duration = Duration::from_millis(500);

/// How often a probing forwarder sends what padding it owes.
const PAD_EVERY: Duration = Duration::from_millis(20);
/// A probe stops when the estimate falls under this share of where it began
/// (the link is full).
const PROBE_STOP: f64 = 0.9;

/// A probe packet's filling (the engine's own RTP padding is at most 4
/// bytes, and it sends no header extension the subscriber did not
/// negotiate): the string extensions (MID, RID, repaired RID) as 255 zero
/// bytes each, which a browser reads as absent (a valid one never starts
/// with a zero byte), so that it numbers the packet in its transport-wide
/// feedback and then drops it as padding. About 800 bytes a packet.
const STUFFING_URIS: [&str; 3] = [
    "urn:ietf:params:rtp-hdrext:sdes:mid",
    "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
];
static STUFFING: [u8; 255] = [0; 255];

/// No layer (paused), in the forwarder's atomics.
const NO_LAYER: u8 = u8::MAX;

fn layer_from(raw: u8) -> Option<u8> {
    (raw != NO_LAYER).then_some(raw)
}

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
    /// The stream the subscriber sees it under (the tile it shows in).
    pub stream: String,
    /// Audio or video.
    pub kind: RtpCodecKind,
    /// The published track's layers, for choosing one.
    pub layers: Arc<TrackLayers>,
    /// This subscriber's say in which of them the publisher sends.
    want: Want,
    /// The subscriber connection's estimate (shown beside the layer).
    pub downlink: Downlink,
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
    keyframes: mpsc::Sender<u8>,
    /// The layer the subscriber should get ([`NO_LAYER`]: paused).
    target: AtomicU8,
    /// The layer sent now ([`NO_LAYER`]: none yet, or paused).
    current: AtomicU8,
    /// Layer switches made.
    switches: AtomicU64,
    /// The subscriber's connection is up (DTLS done): before that, packets
    /// would only be refused by the SRTP layer.
    subscriber_ready: Arc<AtomicBool>,
    /// The probe asked for last (read by the packet loop).
    probe: watch::Sender<Option<Probe>>,
    /// The subscriber connection's estimate: a probe stops when it falls.
    downlink: Downlink,
    /// Padding packets sent.
    padded: AtomicU64,
    /// The subscriber leg's ids of [`STUFFING_URIS`] (none: no probes).
    stuffing: std::sync::Mutex<Vec<u8>>,
}

/// Extra bits per second to send as padding, until when.
#[derive(Debug, Clone, Copy)]
struct Probe {
    until: Instant,
    bps: u64,
}

/// A probe under way in the packet loop.
#[derive(Debug, Clone, Copy)]
struct Probing {
    probe: Probe,
    /// The estimate when it began.
    floor: u64,
    /// Bits owed, and when they were last counted.
    owed: f64,
    at: Instant,
    /// Padding packets sent, and ticks that found the stream mid-frame.
    sent: u32,
    mid_frame: u32,
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
        downlink: Downlink,
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
            // Video starts on the smallest layer (the first to come, and
            // the cheapest); the subscriber's session moves it from there.
            target: AtomicU8::new(0),
            current: AtomicU8::new(NO_LAYER),
            switches: AtomicU64::new(0),
            subscriber_ready,
            probe: watch::Sender::new(None),
            downlink: downlink.clone(),
            padded: AtomicU64::new(0),
            stuffing: std::sync::Mutex::new(Vec::new()),
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
            stream: track.stream.clone(),
            kind: track.kind,
            layers: track.layers().clone(),
            want: Want::new(track.layers().clone()),
            downlink,
            sender,
            relay,
            lifetime,
        });
        Ok((forwarder, tasks))
    }

    /// Stops both loops and takes back its say in the layers sent. Returns
    /// `true` for the one call that closed it.
    pub fn close(&self) -> bool {
        self.want.release();
        self.lifetime.close(())
    }

    /// The largest layer this subscriber's tile wants (`None`: none), for
    /// the publisher's choice of layers to send; see [`Want`].
    pub fn set_want(&self, layer: Option<u8>) {
        if self.is_closed() {
            self.want.release();
        } else {
            self.want.set(layer);
        }
    }

    /// [`Forwarder::close`] was called, or the published track closed.
    pub fn is_closed(&self) -> bool {
        self.lifetime.is_closed()
    }

    /// Asks the publisher for a keyframe of the layer this subscriber gets
    /// or is about to get (video only).
    pub fn request_keyframe(&self) {
        let relay = &self.relay;
        let layer = layer_from(relay.target.load(Ordering::Acquire))
            .or_else(|| layer_from(relay.current.load(Ordering::Acquire)));
        if let Some(layer) = layer {
            relay.request_keyframe(layer);
        }
    }

    /// Sets the layer this subscriber should get (`None`: pause its video).
    /// A new layer is switched to on its next keyframe, asked for now.
    /// Returns whether the choice changed.
    pub fn set_target(&self, layer: Option<u8>) -> bool {
        let raw = layer.unwrap_or(NO_LAYER);
        let before = self.relay.target.swap(raw, Ordering::AcqRel);
        if before == raw {
            return false;
        }
        if let Some(layer) = layer {
            self.relay.request_keyframe(layer);
        }
        true
    }

    /// The layer chosen for this subscriber (`None`: paused).
    pub fn target(&self) -> Option<u8> {
        layer_from(self.relay.target.load(Ordering::Acquire))
    }

    /// The layer being sent (`None`: nothing yet, or paused).
    pub fn current(&self) -> Option<u8> {
        layer_from(self.relay.current.load(Ordering::Acquire))
    }

    /// Sends `bps` more to the subscriber as padding for `time`, or until
    /// its downlink estimate falls: a probe of whether a larger layer would
    /// fit. Video only; a new probe replaces the last.
    pub fn probe(&self, bps: u64, time: Duration) {
        if self.kind == RtpCodecKind::Video {
            self.relay.probe.send_replace(Some(Probe { until: Instant::now() + time, bps }));
        }
    }

    /// Padding packets sent so far.
    pub fn padded(&self) -> u64 {
        self.relay.padded.load(Ordering::Relaxed)
    }

    /// Layer switches made so far.
    pub fn switches(&self) -> u64 {
        self.relay.switches.load(Ordering::Relaxed)
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
            let ids: Vec<u8> = params
                .rtp_parameters
                .header_extensions
                .iter()
                .filter(|e| STUFFING_URIS.contains(&e.uri.as_str()))
                .filter_map(|e| u8::try_from(e.id).ok())
                .collect();
            *relay.stuffing.lock().unwrap_or_else(|e| e.into_inner()) = ids;
        }
        !relay.negotiated.swap(true, Ordering::AcqRel)
    }
}

impl Relay {
    fn request_keyframe(&self, layer: u8) {
        if self.kind == RtpCodecKind::Video {
            let _ = self.keyframes.try_send(layer);
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

    async fn forward(self: Arc<Self>, mut packets: broadcast::Receiver<Layered>, token: CancellationToken) {
        let vp8 =
            self.codec.mime_type.eq_ignore_ascii_case(rtc::peer_connection::configuration::media_engine::MIME_TYPE_VP8);
        let mut switch = LayerSwitch::new(self.codec.clock_rate, vp8);
        let mut asked: Option<Instant> = None;
        let mut probes = self.probe.subscribe();
        let mut probing: Option<Probing> = None;
        let mut pad = tokio::time::interval(PAD_EVERY);
        pad.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let next = tokio::select! {
                () = token.cancelled() => break,
                Ok(()) = probes.changed() => {
                    let now = Instant::now();
                    probing = (*probes.borrow_and_update())
                        .map(|probe| Probing { probe, floor: self.downlink.get(), owed: 0.0, at: now, sent: 0, mid_frame: 0 });
                    continue;
                }
                _ = pad.tick(), if probing.is_some() => {
                    self.pad(&mut switch, &mut probing).await;
                    continue;
                }
                next = packets.recv() => next,
            };
            match next {
                Ok(Layered { layer, keyframe, mut packet }) => {
                    if !self.negotiated.load(Ordering::Acquire) || !self.subscriber_ready.load(Ordering::Acquire) {
                        continue;
                    }
                    let target = layer_from(self.target.load(Ordering::Acquire));
                    let now = Instant::now();
                    let verdict = switch.take(layer, target, keyframe, &mut packet, now);
                    let switches = switch.switches();
                    if self.switches.swap(switches, Ordering::AcqRel) != switches {
                        metrics::counter!(m::LAYER_SWITCHES).increment(1);
                    }
                    self.current.store(switch.current().unwrap_or(NO_LAYER), Ordering::Release);
                    match verdict {
                        Verdict::Send => {
                            self.rewrite(&mut packet);
                            // Fails until the sender is bound (before the answer): dropped, as on the wire.
                            let _ = self.local.write_rtp(packet).await;
                        }
                        Verdict::AwaitKeyframe => {
                            if asked.is_none_or(|t| now.duration_since(t) >= KEYFRAME_ASK_EVERY) {
                                asked = Some(now);
                                self.request_keyframe(layer);
                            }
                        }
                        Verdict::Drop => {}
                    }
                }
                Err(RecvError::Lagged(skipped)) => {
                    tracing::debug!(forwarder = %self.id, skipped, "subscriber lagged");
                    if let Some(layer) = switch.current() {
                        self.request_keyframe(layer);
                    }
                }
                Err(RecvError::Closed) => break,
            }
        }
    }

    /// Sends the padding a probe owes by now, where the stream allows it
    /// (between frames); ends the probe when its time is up or the
    /// estimate fell well below where it began.
    async fn pad(&self, switch: &mut LayerSwitch, probing: &mut Option<Probing>) {
        let Some(p) = probing.as_mut() else { return };
        let now = Instant::now();
        let estimate = self.downlink.get();
        if now >= p.probe.until || (estimate as f64) < p.floor as f64 * PROBE_STOP {
            tracing::debug!(
                forwarder = %self.id, sent = p.sent, mid_frame = p.mid_frame, from = p.floor, estimate,
                timed_out = now >= p.probe.until, "probe ended"
            );
            *probing = None;
            return;
        }
        let pt = self.payload_type.load(Ordering::Acquire);
        let stuffing = self.stuffing.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if pt == 0
            || stuffing.is_empty()
            || !self.negotiated.load(Ordering::Acquire)
            || !self.subscriber_ready.load(Ordering::Acquire)
        {
            return;
        }
        // What is owed since the last tick (no more than a few ticks'
        // worth piles up while the stream is in a frame).
        let due = p.probe.bps as f64 * now.saturating_duration_since(p.at).as_secs_f64();
        p.owed = (p.owed + due).min(p.probe.bps as f64 * PAD_EVERY.as_secs_f64() * 4.0);
        p.at = now;
        while p.owed > 0.0 {
            let Some((seq, ts)) = switch.pad() else {
                p.mid_frame += 1;
                break;
            };
            p.sent += 1;
            let packet = padding(self.ssrc, pt, seq, ts, &stuffing);
            p.owed -= (rtc::shared::marshal::MarshalSize::marshal_size(&packet) * 8) as f64;
            if self.local.write_rtp(packet).await.is_ok() {
                self.padded.fetch_add(1, Ordering::Relaxed);
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
                        if let Some(layer) = layer_from(self.current.load(Ordering::Acquire)) {
                            self.request_keyframe(layer);
                        }
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

/// A padding-only packet in a forwarder's stream, filled under the
/// extension ids `stuffing` (at most 255 bytes each).
fn padding(ssrc: u32, payload_type: u8, sequence_number: u16, timestamp: u32, stuffing: &[u8]) -> rtp::Packet {
    let mut header = rtp::header::Header {
        version: 2,
        padding: true,
        payload_type,
        sequence_number,
        timestamp,
        ssrc,
        extension: true,
        extension_profile: rtp::header::EXTENSION_PROFILE_TWO_BYTE,
        ..Default::default()
    };
    for &id in stuffing {
        // Cannot fail for ids from 1 (two-byte form, at most 255 bytes each).
        let _ = header.set_extension(id, Bytes::from_static(&STUFFING));
    }
    rtp::Packet { header, payload: Bytes::new() }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use rtc::shared::marshal::{Marshal, Unmarshal};

    use super::*;

    #[test]
    fn a_probe_packet_is_padding_that_feedback_can_number() {
        let mut packet = padding(7, 96, 1_000, 90_000, &[1, 10, 11]);
        // The transport-wide sequence number goes in beside the filling,
        // as the engine's interceptor puts it.
        packet.header.set_extension(3, Bytes::from_static(&[0x12, 0x34])).expect("room for feedback's number");
        let wire = packet.marshal().expect("marshalled");
        assert!((780..800).contains(&wire.len()), "{}", wire.len());
        let back = rtp::Packet::unmarshal(&mut &wire[..]).expect("parsed");
        assert!(back.header.padding && back.payload.is_empty(), "padding only: nothing to decode");
        assert_eq!((back.header.ssrc, back.header.payload_type, back.header.sequence_number), (7, 96, 1_000));
        assert_eq!(back.header.get_extension(3).as_deref(), Some(&[0x12, 0x34][..]));
        assert!(back.header.extensions.iter().all(|e| e.id == 3 || [1, 10, 11].contains(&e.id)));
        // Each filling reads as no such extension: it starts with a zero byte.
        assert!([1, 10, 11]
            .iter()
            .all(|id| back.header.get_extension(*id).is_some_and(|e| e.len() == 255 && e[0] == 0)));
    }
}
