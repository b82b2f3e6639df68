//! A forwarder: one published track delivered to one subscriber.
//!
//! A `TrackLocalStaticRTP` binds to one sender only, so fan-out is ours:
//! every (published track, subscriber) pair gets its own local track, added
//! to the subscriber's peer connection with the publisher's `ParticipantId`
//! as stream id and the published track's id as track id. Each packet is
//! rewritten to the subscriber side's SSRC and payload type (its header
//! extensions were stripped by the track's reader: their ids were
//! negotiated with the publisher, not with this subscriber). PLI/FIR from
//! the subscriber go to the publisher.
//!
//! A forwarder has no task of its own. Its sending side, an [`Outlet`],
//! joins the published track's [`Fanout`], which the track's one reader
//! loop drives: it copies each packet to every outlet in turn (a header
//! copy; the payload is shared), listens to every outlet's RTCP, and sends
//! the padding of those that probe. A write never waits: a subscriber whose
//! connection has a full queue loses that packet, as on a congested link,
//! and the other subscribers do not wait for it.
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
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::FutureExt;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::PeerConnection;
use webrtc::rtp_transceiver::RtpSender;

use super::engine::is_keyframe_request;
use super::estimate::Downlink;
use super::simulcast::{LayerSwitch, Sent, Verdict};
use super::track::{PublishedTrack, TrackLayers, Want};
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

/// How long the fan-out waits before looking again for RTCP on a sender
/// that is not bound yet (bound once the answer is applied).
const UNBOUND_RETRY: Duration = Duration::from_millis(200);

/// Which send slot of the subscriber's connection a new forwarder takes.
#[derive(Debug)]
pub enum Slot {
    /// A new send-only transceiver.
    New,
    /// The first freed one of its kind (the one `add_track` fills), with
    /// the streams its last two forwarders sent.
    Freed(FreedSlot),
}

/// Where a forwarder's stream stopped: its SSRC and, once its outlet has
/// left the fan-out, how it ended.
///
/// The connection keeps state for every SSRC it ever sent (statistics, the
/// SRTP context) until it closes. So that someone who stays in a busy room
/// does not gather one of each for every track that came and went, a
/// freed slot's streams are reused: a later forwarder there sends under
/// an SSRC the slot sent before, numbered on from that stream's last
/// packet (a stream started afresh under a known SSRC would fall into the
/// receiver's SRTP replay window), or afresh if it sent nothing.
#[derive(Debug, Clone)]
pub struct StreamEnd {
    ssrc: u32,
    ended: Arc<std::sync::Mutex<Ended>>,
}

/// How a forwarder's stream ended, for the next one under its SSRC.
#[derive(Debug, Clone, Copy, Default)]
enum Ended {
    /// Its outlet has not left the fan-out yet.
    #[default]
    Open,
    /// Its outlet left without sending a packet (a video forwarder that
    /// never got a keyframe, say): the next stream starts afresh.
    Silent,
    /// Its outlet left after sending this packet: the next stream is
    /// numbered on from it.
    After(Sent),
}

impl StreamEnd {
    /// The SSRC to send under and the packet to number on from (`None`:
    /// start afresh); `None` while the outlet still holds the stream.
    fn handover(&self) -> Option<(u32, Option<Sent>)> {
        match *lock(&self.ended) {
            Ended::Open => None,
            Ended::Silent => Some((self.ssrc, None)),
            Ended::After(last) => Some((self.ssrc, Some(last))),
        }
    }
}

/// A freed send slot's streams: the one its last forwarder sent, and the
/// one its forwarder before that sent.
///
/// The next forwarder there goes on with the one before, never with the
/// last: the SSRC must change from one forwarder to the next. A browser
/// that receives the same SSRC again on a line that went inactive and
/// came back decodes the stream but shows none of it (Chromium's receiver
/// attaches its track to the new stream only when the SSRC changes: the
/// frames are counted as decoded, the tile stays black). So a slot
/// alternates between two SSRCs, and the connection's per-SSRC state
/// stays at two per slot.
#[derive(Debug, Clone)]
pub struct FreedSlot {
    last: StreamEnd,
    before: Option<StreamEnd>,
}

impl FreedSlot {
    /// The SSRC the next forwarder sends under and the packet it numbers
    /// on from: the stream before the last, if it ended and is another SSRC.
    /// (One that sent nothing is taken up too: were it left for a new SSRC,
    /// a slot whose video never got a keyframe before its sender left would
    /// take a new SSRC every other time.)
    fn handover(&self) -> Option<(u32, Option<Sent>)> {
        self.before.as_ref().and_then(StreamEnd::handover).filter(|(ssrc, _)| *ssrc != self.last.ssrc)
    }
}

/// One published track delivered to one subscriber. Owned by the
/// subscriber's media session; closed when either side goes, or when its
/// owner drops it (the track's fan-out holds the `Relay`, not the
/// forwarder, and lets go of it once it is closed).
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
    /// What the track's fan-out uses.
    relay: Arc<Relay>,
    /// The stream its slot sent before this one (freed slots only).
    before: Option<StreamEnd>,
    /// Closed once; its token is a child of the published track's, so the
    /// publisher's close ends it.
    lifetime: Lifetime<()>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder").finish_non_exhaustive()
    }
}

/// The part of a forwarder that its owner and the track's fan-out share.
struct Relay {
    id: String,
    kind: RtpCodecKind,
    codec: RTCRtpCodec,
    local: Arc<TrackLocalStaticRTP>,
    /// SSRC of the subscriber side (random, or the one of the stream this
    /// forwarder continues).
    ssrc: u32,
    /// How its stream ended, set when the outlet leaves the fan-out.
    ended: Arc<std::sync::Mutex<Ended>>,
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
    /// A probe asked for and not yet taken up by the fan-out (a new one
    /// replaces it), and the track's bell to ring for it.
    probe: std::sync::Mutex<Option<Probe>>,
    probes: Arc<Notify>,
    /// The subscriber connection's estimate: a probe stops when it falls.
    downlink: Downlink,
    /// Padding packets sent.
    padded: AtomicU64,
    /// The subscriber leg's ids of [`STUFFING_URIS`] (none: no probes).
    stuffing: std::sync::Mutex<Vec<u8>>,
    /// Packets not written because the subscriber's connection had a full
    /// queue.
    dropped: AtomicU64,
    /// The forwarder's lifetime: cancelled when it closes.
    token: CancellationToken,
}

/// Extra bits per second to send as padding, until when.
#[derive(Debug, Clone, Copy)]
struct Probe {
    until: Instant,
    bps: u64,
}

/// A probe under way in the fan-out.
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

impl Forwarder {
    /// Adds a local track for `track` to the subscriber's connection and
    /// its outlet to the track's fan-out. The caller renegotiates.
    pub async fn start(
        pc: &Arc<dyn PeerConnection>,
        track: &PublishedTrack,
        subscriber: &ParticipantId,
        subscriber_ready: Arc<AtomicBool>,
        downlink: Downlink,
        slot: Slot,
    ) -> Result<Arc<Self>, MediaError> {
        let (handover, before) = match &slot {
            Slot::Freed(freed) => {
                let handover = freed.handover();
                if handover.is_none() {
                    tracing::debug!(track = %track.id, %subscriber, "no earlier stream of the freed slot to go on with: a new SSRC");
                }
                (handover, Some(freed.last.clone()))
            }
            Slot::New => (None, None),
        };
        // A new SSRC is never the one the slot sent last (see `FreedSlot`).
        let fresh = || {
            let ssrc = rand::random::<u32>();
            if before.as_ref().is_some_and(|b| b.ssrc == ssrc) {
                ssrc.wrapping_add(1)
            } else {
                ssrc
            }
        };
        let ssrc = handover.map_or_else(fresh, |(ssrc, _)| ssrc);
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
        let sender = if let Slot::Freed(_) = slot {
            // Fills a freed send-only transceiver of this kind (the only
            // sender-less ones the session has).
            pc.add_track(local.clone() as Arc<dyn TrackLocal>).await?
        } else {
            let init = RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Sendonly, ..Default::default() };
            let transceiver = pc.add_transceiver_from_track(local.clone() as Arc<dyn TrackLocal>, Some(init)).await?;
            transceiver.sender().await?.ok_or(MediaError::Rtc(webrtc::error::Error::ErrRTPSenderNotExisted))?
        };
        let id = format!("{}>{}", track.id, subscriber);
        let lifetime = Lifetime::new(track.child_token());
        let relay = Arc::new(Relay {
            id: id.clone(),
            kind: track.kind,
            codec: track.codec.clone(),
            local,
            ssrc,
            ended: Arc::default(),
            payload_type: AtomicU8::new(0),
            negotiated: AtomicBool::new(false),
            keyframes: track.keyframe_requests(),
            // Video starts on the smallest layer (the first to come, and
            // the cheapest); the subscriber's session moves it from there.
            target: AtomicU8::new(0),
            current: AtomicU8::new(NO_LAYER),
            switches: AtomicU64::new(0),
            subscriber_ready,
            probe: std::sync::Mutex::new(None),
            probes: track.probes().clone(),
            downlink: downlink.clone(),
            padded: AtomicU64::new(0),
            stuffing: std::sync::Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
            token: lifetime.token().clone(),
        });
        // A track already closed has no fan-out left: the forwarder is
        // closed with it (its lifetime is a child of the track's).
        track.attach(Outlet::new(relay.clone(), handover.and_then(|(_, last)| last))).await;
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
            before,
            lifetime,
        });
        Ok(forwarder)
    }

    /// Its slot's streams, this one's last, for the next forwarder there
    /// once this one is closed and its track removed.
    pub fn freed_slot(&self) -> FreedSlot {
        FreedSlot {
            last: StreamEnd { ssrc: self.relay.ssrc, ended: self.relay.ended.clone() },
            before: self.before.clone(),
        }
    }

    /// Takes the forwarder out of its track's fan-out and takes back its
    /// say in the layers sent. Returns `true` for the one call that closed it.
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
            *lock(&self.relay.probe) = Some(Probe { until: Instant::now() + time, bps });
            self.relay.probes.notify_one();
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
            *lock(&relay.stuffing) = ids;
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
    }

    /// Whether packets go to the subscriber now: its answer was applied and
    /// its connection is up (before that, the SRTP layer would refuse them).
    fn sending(&self) -> bool {
        self.negotiated.load(Ordering::Acquire) && self.subscriber_ready.load(Ordering::Acquire)
    }

    /// Hands a packet to the subscriber's connection without waiting: with
    /// its queue full the packet is dropped (and counted), as on a full
    /// link. Returns whether it went. Unconstrained: the write must not be
    /// refused for the fan-out task's scheduling budget.
    fn write(&self, packet: rtp::Packet) -> bool {
        match tokio::task::unconstrained(self.local.write_rtp(packet)).now_or_never() {
            Some(Ok(())) => true,
            // Not bound yet (before the answer) or unbound: dropped, as on the wire.
            Some(Err(_)) => false,
            None => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

/// What the fan-out heard from one outlet's subscriber.
enum Said {
    /// RTCP asking for a keyframe.
    KeyframeAsked,
    /// Something else, or nothing yet (the sender is not bound).
    Nothing,
    /// The forwarder closed.
    Closed,
}

/// Waits for the next RTCP of a forwarder's subscriber, or its close.
fn listen(relay: Arc<Relay>) -> BoxFuture<'static, (Arc<Relay>, Said)> {
    Box::pin(async move {
        let said = tokio::select! {
            () = relay.token.cancelled() => Said::Closed,
            event = relay.local.poll() => match event {
                Some(TrackLocalEvent::OnRtcpPacket(packets)) if packets.iter().any(|p| is_keyframe_request(p.as_ref())) => Said::KeyframeAsked,
                Some(_) => Said::Nothing,
                // Not bound yet, or unbound: look again a little later.
                None => tokio::select! {
                    () = relay.token.cancelled() => Said::Closed,
                    () = tokio::time::sleep(UNBOUND_RETRY) => Said::Nothing,
                },
            },
        };
        (relay, said)
    })
}

/// A forwarder's sending side, driven by its track's [`Fanout`]: its
/// stream's numbering across layer switches and its probe.
pub struct Outlet {
    relay: Arc<Relay>,
    switch: LayerSwitch,
    /// When the keyframe this outlet waits for was asked for last.
    asked: Option<Instant>,
    probing: Option<Probing>,
}

impl std::fmt::Debug for Outlet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outlet").field("id", &self.relay.id).finish_non_exhaustive()
    }
}

impl Outlet {
    /// An outlet whose stream starts afresh, or goes on from `continuing`,
    /// the last packet of another forwarder's stream under the same SSRC.
    fn new(relay: Arc<Relay>, continuing: Option<Sent>) -> Self {
        let vp8 = relay
            .codec
            .mime_type
            .eq_ignore_ascii_case(rtc::peer_connection::configuration::media_engine::MIME_TYPE_VP8);
        let clock_rate = relay.codec.clock_rate;
        let switch = match continuing {
            Some(last) => LayerSwitch::continuing(clock_rate, vp8, last),
            None => LayerSwitch::new(clock_rate, vp8),
        };
        Self { relay, switch, asked: None, probing: None }
    }

    /// Sends a copy of one packet of `layer`, if this subscriber gets it.
    fn send(&mut self, layer: u8, keyframe: bool, packet: &rtp::Packet, now: Instant) {
        let relay = &self.relay;
        if !relay.sending() {
            return;
        }
        let target = layer_from(relay.target.load(Ordering::Acquire));
        // The header is copied (without extensions: nothing to allocate);
        // the payload is shared.
        let mut packet = packet.clone();
        let verdict = self.switch.take(layer, target, keyframe, &mut packet, now);
        let switches = self.switch.switches();
        if relay.switches.swap(switches, Ordering::AcqRel) != switches {
            metrics::counter!(m::LAYER_SWITCHES).increment(1);
        }
        relay.current.store(self.switch.current().unwrap_or(NO_LAYER), Ordering::Release);
        match verdict {
            Verdict::Send => {
                relay.rewrite(&mut packet);
                relay.write(packet);
            }
            Verdict::AwaitKeyframe => {
                if self.asked.is_none_or(|t| now.duration_since(t) >= KEYFRAME_ASK_EVERY) {
                    self.asked = Some(now);
                    relay.request_keyframe(layer);
                }
            }
            Verdict::Drop => {}
        }
    }

    /// Takes up a probe asked for since the last look.
    fn take_probe(&mut self, now: Instant) {
        if let Some(probe) = lock(&self.relay.probe).take() {
            let floor = self.relay.downlink.get();
            self.probing = Some(Probing { probe, floor, owed: 0.0, at: now, sent: 0, mid_frame: 0 });
        }
    }

    /// Sends the padding a probe owes by now, where the stream allows it
    /// (between frames); ends the probe when its time is up or the
    /// estimate fell well below where it began.
    fn pad(&mut self, now: Instant) {
        let relay = &self.relay;
        let Some(p) = self.probing.as_mut() else { return };
        let estimate = relay.downlink.get();
        if now >= p.probe.until || (estimate as f64) < p.floor as f64 * PROBE_STOP {
            tracing::debug!(
                forwarder = %relay.id, sent = p.sent, mid_frame = p.mid_frame, from = p.floor, estimate,
                timed_out = now >= p.probe.until, "probe ended"
            );
            self.probing = None;
            return;
        }
        let pt = relay.payload_type.load(Ordering::Acquire);
        let stuffing = lock(&relay.stuffing);
        if pt == 0 || stuffing.is_empty() || !relay.sending() {
            return;
        }
        // What is owed since the last tick (no more than a few ticks'
        // worth piles up while the stream is in a frame).
        let due = p.probe.bps as f64 * now.saturating_duration_since(p.at).as_secs_f64();
        p.owed = (p.owed + due).min(p.probe.bps as f64 * PAD_EVERY.as_secs_f64() * 4.0);
        p.at = now;
        while p.owed > 0.0 {
            let Some((seq, ts)) = self.switch.pad() else {
                p.mid_frame += 1;
                break;
            };
            p.sent += 1;
            let packet = padding(relay.ssrc, pt, seq, ts, &stuffing);
            p.owed -= (rtc::shared::marshal::MarshalSize::marshal_size(&packet) * 8) as f64;
            if relay.write(packet) {
                relay.padded.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for Outlet {
    /// Leaves where its stream stopped for the next forwarder in its slot:
    /// after this, nothing more is sent under its SSRC.
    fn drop(&mut self) {
        *lock(&self.relay.ended) = self.switch.last().map_or(Ended::Silent, Ended::After);
    }
}

/// Something for a [`Fanout`] to do besides sending packets (from
/// [`Fanout::next`], for [`Fanout::on`]).
pub struct FanoutEvent(Due);

enum Due {
    /// A new subscriber's outlet.
    Join(Outlet),
    /// An outlet's subscriber said something, or its forwarder closed.
    Heard(Arc<Relay>, Said),
    /// A probe was asked for.
    Probes,
    /// Padding is due.
    Pad,
}

impl std::fmt::Debug for FanoutEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanoutEvent").finish_non_exhaustive()
    }
}

/// A published track's subscribers, driven by the track's reader loop:
/// every packet goes to each outlet in turn ([`Fanout::send`]); between
/// packets the loop takes new outlets, listens to every outlet's RTCP and
/// pads for those that probe ([`Fanout::next`], [`Fanout::on`]). An outlet
/// leaves when its forwarder closes.
pub struct Fanout {
    outlets: Vec<Outlet>,
    joins: mpsc::Receiver<Outlet>,
    listening: FuturesUnordered<BoxFuture<'static, (Arc<Relay>, Said)>>,
    probes: Arc<Notify>,
    /// Some outlet probes: the padding tick is on.
    probing: bool,
    pad: tokio::time::Interval,
}

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout").field("outlets", &self.outlets.len()).finish_non_exhaustive()
    }
}

impl Fanout {
    /// A fan-out that takes its outlets from `joins` and hears of probes
    /// asked for on `probes`.
    pub fn new(joins: mpsc::Receiver<Outlet>, probes: Arc<Notify>) -> Self {
        let mut pad = tokio::time::interval(PAD_EVERY);
        pad.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        Self { outlets: Vec::new(), joins, listening: FuturesUnordered::new(), probes, probing: false, pad }
    }

    /// Sends one packet of `layer` to every outlet that gets it.
    pub fn send(&mut self, layer: u8, keyframe: bool, packet: &rtp::Packet, now: Instant) {
        for outlet in &mut self.outlets {
            outlet.send(layer, keyframe, packet, now);
        }
    }

    /// The next thing to do besides sending packets. Cancel-safe.
    pub async fn next(&mut self) -> FanoutEvent {
        use futures::StreamExt;
        let due = tokio::select! {
            Some(outlet) = self.joins.recv() => Due::Join(outlet),
            Some((relay, said)) = self.listening.next(), if !self.listening.is_empty() => Due::Heard(relay, said),
            () = self.probes.notified() => Due::Probes,
            _ = self.pad.tick(), if self.probing => Due::Pad,
        };
        FanoutEvent(due)
    }

    /// Does what [`Fanout::next`] found due.
    pub fn on(&mut self, FanoutEvent(due): FanoutEvent) {
        match due {
            Due::Join(outlet) => {
                self.listening.push(listen(outlet.relay.clone()));
                self.outlets.push(outlet);
            }
            Due::Heard(relay, said) => self.heard(relay, said),
            Due::Probes => {
                let now = Instant::now();
                for outlet in &mut self.outlets {
                    outlet.take_probe(now);
                }
                self.probing = self.outlets.iter().any(|o| o.probing.is_some());
            }
            Due::Pad => {
                let now = Instant::now();
                for outlet in &mut self.outlets {
                    outlet.pad(now);
                }
                self.probing = self.outlets.iter().any(|o| o.probing.is_some());
            }
        }
    }

    /// A keyframe request goes to the publisher; a closed forwarder's
    /// outlet leaves.
    fn heard(&mut self, relay: Arc<Relay>, said: Said) {
        match said {
            Said::Closed => {
                self.outlets.retain(|o| !Arc::ptr_eq(&o.relay, &relay));
                self.probing = self.outlets.iter().any(|o| o.probing.is_some());
                let dropped = relay.dropped.load(Ordering::Relaxed);
                tracing::debug!(forwarder = %relay.id, dropped, "outlet left");
                return;
            }
            Said::KeyframeAsked => {
                if let Some(layer) = layer_from(relay.current.load(Ordering::Acquire)) {
                    relay.request_keyframe(layer);
                }
            }
            Said::Nothing => {}
        }
        self.listening.push(listen(relay));
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
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

    /// A relay whose local track is bound to no connection (so writes fail
    /// and RTCP never comes), as before a subscriber's answer.
    fn unbound_relay(probes: &Arc<Notify>, keyframes: mpsc::Sender<u8>) -> Arc<Relay> {
        let ssrc = 7;
        let codec = rtc::peer_connection::configuration::media_engine::MIME_TYPE_VP8;
        let codec = RTCRtpCodec { mime_type: codec.to_owned(), clock_rate: 90_000, ..Default::default() };
        let local = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            "ada".to_owned(),
            "ada-video-1".to_owned(),
            "ada-video-1".to_owned(),
            RtpCodecKind::Video,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                codec: codec.clone(),
                ..Default::default()
            }],
        )));
        Arc::new(Relay {
            id: "ada-video-1>bob".to_owned(),
            kind: RtpCodecKind::Video,
            codec,
            local,
            ssrc,
            ended: Arc::default(),
            payload_type: AtomicU8::new(96),
            negotiated: AtomicBool::new(true),
            keyframes,
            target: AtomicU8::new(0),
            current: AtomicU8::new(NO_LAYER),
            switches: AtomicU64::new(0),
            subscriber_ready: Arc::new(AtomicBool::new(true)),
            probe: std::sync::Mutex::new(None),
            probes: probes.clone(),
            downlink: Downlink::default(),
            padded: AtomicU64::new(0),
            stuffing: std::sync::Mutex::new(vec![1]),
            dropped: AtomicU64::new(0),
            token: CancellationToken::new(),
        })
    }

    async fn step(fanout: &mut Fanout) {
        let event = fanout.next().await;
        fanout.on(event);
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_forwarders_outlet_leaves_the_fanout_and_nothing_holds_it() {
        let (joins, joins_rx) = mpsc::channel(4);
        let (keyframes, _keyframe_rx) = mpsc::channel(4);
        let probes = Arc::new(Notify::new());
        let mut fanout = Fanout::new(joins_rx, probes.clone());
        let (ada, cy) = (unbound_relay(&probes, keyframes.clone()), unbound_relay(&probes, keyframes));
        joins.send(Outlet::new(ada.clone(), None)).await.expect("fan-out listens");
        joins.send(Outlet::new(cy.clone(), None)).await.expect("fan-out listens");
        step(&mut fanout).await;
        step(&mut fanout).await;
        assert_eq!(fanout.outlets.len(), 2, "both joined");
        // Unbound: the packet goes nowhere, and neither outlet is dropped for it.
        let packet = rtp::Packet {
            header: rtp::header::Header { version: 2, payload_type: 96, ssrc: 1, ..Default::default() },
            payload: Bytes::from_static(&[0x10, 0, 0x9d, 0x01, 0x2a]),
        };
        fanout.send(0, true, &packet, Instant::now());
        assert_eq!(ada.current.load(Ordering::Acquire), 0, "the outlet took its layer");
        assert_eq!(ada.dropped.load(Ordering::Relaxed), 0, "a refused write is no full queue");

        ada.token.cancel();
        // The unbound outlets' listening wakes every UNBOUND_RETRY meanwhile.
        for _ in 0..10 {
            if fanout.outlets.len() == 1 {
                break;
            }
            step(&mut fanout).await;
        }
        assert_eq!(fanout.outlets.len(), 1, "the closed one left");
        let end = StreamEnd { ssrc: ada.ssrc, ended: ada.ended.clone() };
        let (ssrc, last) = end.handover().expect("it left where its stream stopped");
        assert_eq!((ssrc, last.map(|l| l.seq())), (7, Some(0)), "its SSRC and the number it sent last");
        assert!(Arc::ptr_eq(&fanout.outlets[0].relay, &cy), "the other one stays");
        assert_eq!(Arc::strong_count(&ada), 1, "neither its outlet nor its listening holds it any more");
        assert_eq!(Arc::strong_count(&cy), 3, "cy: the test, its outlet, its listening");
    }

    #[test]
    fn a_freed_slot_goes_on_with_the_stream_before_its_last() {
        let end = |ssrc, ended| StreamEnd { ssrc, ended: Arc::new(std::sync::Mutex::new(ended)) };
        let after = |seq| Ended::After(Sent::numbered(seq));
        // Reused once: no stream before the last one, so a new SSRC.
        assert!(FreedSlot { last: end(7, after(10)), before: None }.handover().is_none());
        // Then the stream before the last goes on, never the last one.
        let (ssrc, last) = FreedSlot { last: end(8, after(20)), before: Some(end(7, after(10))) }
            .handover()
            .expect("the stream before the last");
        assert_eq!((ssrc, last.map(|l| l.seq())), (7, Some(10)));
        // One that sent nothing: its SSRC again, started afresh.
        let (ssrc, last) = FreedSlot { last: end(8, after(20)), before: Some(end(7, Ended::Silent)) }
            .handover()
            .expect("the silent stream before the last");
        assert_eq!((ssrc, last.is_none()), (7, true));
        // Not one whose outlet still holds it, nor the last SSRC again.
        assert!(FreedSlot { last: end(8, after(20)), before: Some(end(7, Ended::Open)) }.handover().is_none());
        assert!(FreedSlot { last: end(7, after(20)), before: Some(end(7, after(10))) }.handover().is_none());
    }

    // Real time: a probe's end is read off the clock, not tokio's.
    #[tokio::test]
    async fn a_probe_asked_for_is_taken_up_and_ends_when_its_time_is_up() {
        let (_joins, joins_rx) = mpsc::channel(4);
        let (keyframes, _keyframe_rx) = mpsc::channel(4);
        let probes = Arc::new(Notify::new());
        let mut fanout = Fanout::new(joins_rx, probes.clone());
        let relay = unbound_relay(&probes, keyframes);
        fanout.on(FanoutEvent(Due::Join(Outlet::new(relay.clone(), None))));
        assert!(!fanout.probing, "no probe yet: no padding tick");
        let asked = Instant::now();
        let time = Duration::from_millis(100);
        *lock(&relay.probe) = Some(Probe { until: asked + time, bps: 100_000 });
        relay.probes.notify_one();
        step(&mut fanout).await;
        assert!(fanout.probing, "the probe was taken up");
        assert!(lock(&relay.probe).is_none(), "and taken: asked for once");
        // Padding ticks until the probe's time is up (nothing goes out:
        // unbound), then the tick stops.
        let mut ticks = 0;
        while fanout.probing && ticks < 100 {
            step(&mut fanout).await;
            ticks += 1;
        }
        assert!(!fanout.probing, "the probe ended");
        assert!(asked.elapsed() >= time, "not before its time ({ticks} steps)");
        assert_eq!(relay.padded.load(Ordering::Relaxed), 0, "an unbound track sends no padding");
    }

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
