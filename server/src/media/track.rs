//! A published track: one media stream a participant sends to the SFU.
//!
//! Its reader task polls the webrtc remote track and writes each RTP packet
//! to every subscriber itself, through the track's
//! [`Fanout`] (one outlet per [`super::forwarder::Forwarder`]: no task or
//! channel per subscriber); keyframe requests from subscribers come back on
//! a small channel and go to the publisher as PLI, for the layer they name.
//!
//! A simulcast camera is one remote track whose packets come on one SSRC
//! per layer (`rid` q, h, f): the reader tags each packet with its layer
//! and whether it starts a keyframe, and keeps each layer's
//! [`LayerMeter`] (last packet, bitrate, width), which the subscribers'
//! layer choice reads. Any other track is layer 0 alone.
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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use app::model::{MediaKind, ParticipantId, SessionId};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RtpCodecKind};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use super::engine::parse_audio_level;
use super::forwarder::{Fanout, Outlet};
use super::simulcast::{self, LayerState, LAYERS};
use super::speaker::LevelMeter;
use crate::lifetime::Lifetime;

/// New subscribers' outlets waiting for the reader to take them.
const JOINS_CAPACITY: usize = 16;

/// A layer that sent nothing for this long is not sent now (a publisher
/// drops its top layers when its own uplink or CPU is short).
const LAYER_IDLE: Duration = Duration::from_millis(1_000);

/// A layer sending less than this fraction (1/TRICKLE) of the one below is
/// not counted as sent.
const TRICKLE: u64 = 10;

/// How long a layer's bitrate is measured over.
const RATE_WINDOW: Duration = Duration::from_millis(1_000);

/// What one layer of a track sends, written by the reader and read by the
/// subscribers' layer choice.
#[derive(Debug, Default)]
pub struct LayerMeter {
    /// Milliseconds after the track's start of the last packet (0 = none yet).
    last_ms: AtomicU64,
    /// Bits per second over the last complete window.
    bitrate: AtomicU64,
    /// Frame width of the last keyframe (0 = not known).
    width: AtomicU16,
}

/// The layers of one track.
#[derive(Debug)]
pub struct TrackLayers {
    started: Instant,
    meters: [LayerMeter; LAYERS],
    /// How many subscribers' tiles want each layer as their largest
    /// ([`Want`]).
    wants: [AtomicU32; LAYERS],
}

impl TrackLayers {
    fn new() -> Self {
        Self { started: Instant::now(), meters: Default::default(), wants: Default::default() }
    }

    /// The largest layer some subscriber's tile wants (`None`: no
    /// subscriber wants this video).
    pub fn wanted(&self) -> Option<u8> {
        (0..LAYERS).rev().find(|&i| self.wants[i].load(Ordering::Acquire) > 0).map(|i| i as u8)
    }

    fn count_want(&self, raw: u8, more: bool) {
        if let Some(count) = self.wants.get(usize::from(raw)) {
            if more {
                count.fetch_add(1, Ordering::AcqRel);
            } else {
                count.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// What each layer sends now.
    pub fn states(&self, now: Instant) -> [LayerState; LAYERS] {
        let at = now.saturating_duration_since(self.started).as_millis() as u64;
        let mut below: Option<u64> = None;
        std::array::from_fn(|i| {
            let m = &self.meters[i];
            let last = m.last_ms.load(Ordering::Relaxed);
            let width = m.width.load(Ordering::Relaxed);
            let bitrate = m.bitrate.load(Ordering::Relaxed);
            let heard = last > 0 && at.saturating_sub(last) < LAYER_IDLE.as_millis() as u64;
            // A layer the publisher all but stopped (a browser short of CPU
            // sends its top layer at a trickle) is no layer to switch to.
            let trickle = below.is_some_and(|b| bitrate > 0 && bitrate * TRICKLE < b);
            if heard {
                below = Some(bitrate);
            }
            LayerState { active: heard && !trickle, bitrate, width: (width > 0).then_some(width) }
        })
    }

    /// How many layers have sent anything at all.
    pub fn seen(&self) -> usize {
        self.meters.iter().filter(|m| m.last_ms.load(Ordering::Relaxed) > 0).count()
    }
}

/// One subscriber's say in which layers of a track are sent: the largest
/// its tile wants, counted in the track's [`TrackLayers`] until changed,
/// and taken back once, by [`Want::release`] or on drop.
#[derive(Debug)]
pub struct Want {
    layers: Arc<TrackLayers>,
    /// The layer counted, or [`Want::NONE`] or [`Want::RELEASED`].
    at: AtomicU8,
}

impl Want {
    const NONE: u8 = u8::MAX;
    const RELEASED: u8 = u8::MAX - 1;

    /// A say that wants nothing yet.
    pub fn new(layers: Arc<TrackLayers>) -> Self {
        Self { layers, at: AtomicU8::new(Self::NONE) }
    }

    /// Wants `layer` as the largest now (`None`: none). Returns whether it
    /// changed; after [`Want::release`] nothing does.
    pub fn set(&self, layer: Option<u8>) -> bool {
        let new = layer.map_or(Self::NONE, |l| l.min(LAYERS as u8 - 1));
        let mut old = self.at.load(Ordering::Acquire);
        loop {
            if old == Self::RELEASED || old == new {
                return false;
            }
            match self.at.compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => old = now,
            }
        }
        self.layers.count_want(new, true);
        self.layers.count_want(old, false);
        true
    }

    /// Takes the say back (the subscriber's forwarder closed). Idempotent.
    pub fn release(&self) {
        let old = self.at.swap(Self::RELEASED, Ordering::AcqRel);
        if old != Self::RELEASED {
            self.layers.count_want(old, false);
        }
    }
}

impl Drop for Want {
    fn drop(&mut self) {
        self.release();
    }
}

/// The reader's own side of a layer: its SSRC, mute shift and bitrate window.
#[derive(Debug, Default, Clone, Copy)]
struct LayerReading {
    ssrc: u32,
    /// Packets dropped while forwarding was off: later sequence numbers
    /// are shifted down by this much.
    dropped: u16,
    last_packet: Option<Instant>,
    window_start: Option<Instant>,
    window_bytes: u64,
}

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
/// session; forwarders hold only a keyframe sender, so dropping the track
/// ends them.
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
    /// What each simulcast layer sends.
    layers: Arc<TrackLayers>,
    /// New forwarders' outlets, for the reader's fan-out.
    joins: mpsc::Sender<Outlet>,
    /// Rung when a forwarder asks for a probe.
    probes: Arc<Notify>,
    keyframes: mpsc::Sender<u8>,
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
    mime: String,
    publisher_state: Arc<PublisherState>,
    layers: Arc<TrackLayers>,
    /// The subscribers.
    fanout: Fanout,
    token: CancellationToken,
    remote: Arc<dyn TrackRemote>,
    keyframes: mpsc::Receiver<u8>,
    /// The layer of each SSRC seen (a simulcast track has one per layer).
    ssrc_layers: HashMap<u32, u8>,
    readings: [LayerReading; LAYERS],
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
        let (joins, joins_rx) = mpsc::channel(JOINS_CAPACITY);
        let probes = Arc::new(Notify::new());
        let (keyframes, keyframe_rx) = mpsc::channel(LAYERS);
        let layers = Arc::new(TrackLayers::new());
        let track = Arc::new(Self {
            id,
            publisher,
            stream,
            session,
            kind,
            codec,
            publisher_state,
            layers,
            joins,
            probes: probes.clone(),
            keyframes,
            lifetime: Lifetime::new(token),
        });
        let audio_level_id = audio_level_id.filter(|_| kind == RtpCodecKind::Audio);
        let mut readings = [LayerReading::default(); LAYERS];
        readings[0].ssrc = media_ssrc;
        let reader = TrackReader {
            id: track.id.clone(),
            kind,
            mime: track.codec.mime_type.clone(),
            publisher_state: track.publisher_state.clone(),
            layers: track.layers.clone(),
            fanout: Fanout::new(joins_rx, probes),
            token: track.lifetime.token().clone(),
            remote,
            keyframes: keyframe_rx,
            ssrc_layers: HashMap::new(),
            readings,
            audio_level_id,
        };
        (track, reader)
    }

    /// Adds a forwarder's outlet to the reader's fan-out: it gets every
    /// packet from then on. A closed track has none (the outlet is dropped).
    pub async fn attach(&self, outlet: Outlet) {
        let _ = self.joins.send(outlet).await;
    }

    /// The bell a forwarder rings when it asks for a probe.
    pub fn probes(&self) -> &Arc<Notify> {
        &self.probes
    }

    /// A handle to ask the publisher for a keyframe of a layer.
    pub fn keyframe_requests(&self) -> mpsc::Sender<u8> {
        self.keyframes.clone()
    }

    /// Asks the publisher for a keyframe of `layer` (coalesced).
    pub fn request_keyframe(&self, layer: u8) {
        let _ = self.keyframes.try_send(layer);
    }

    /// What each simulcast layer sends.
    pub fn layers(&self) -> &Arc<TrackLayers> {
        &self.layers
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
        loop {
            tokio::select! {
                () = token.cancelled() => break,
                event = self.remote.poll() => match event {
                    Some(TrackRemoteEvent::OnRtpPacket(packet)) => self.on_packet(kind, packet).await,
                    Some(TrackRemoteEvent::OnOpen(init)) => {
                        let layer = simulcast::layer_of_rid(init.rid.as_deref().unwrap_or_default());
                        self.learn(init.ssrc, layer);
                    }
                    Some(TrackRemoteEvent::OnEnded) | None => break,
                    Some(_) => {}
                },
                Some(layer) = self.keyframes.recv() => self.send_pli(layer).await,
                event = self.fanout.next() => self.fanout.on(event),
            }
        }
        self.id
    }

    fn learn(&mut self, ssrc: u32, layer: u8) {
        tracing::debug!(track = %self.id, ssrc, layer, "layer heard");
        self.ssrc_layers.insert(ssrc, layer);
        if let Some(reading) = self.readings.get_mut(usize::from(layer)) {
            reading.ssrc = ssrc;
        }
    }

    /// The layer of a packet's SSRC (asked of the remote track the first
    /// time, for a layer whose opening was not seen).
    async fn layer_of(&mut self, ssrc: u32) -> u8 {
        if let Some(layer) = self.ssrc_layers.get(&ssrc) {
            return *layer;
        }
        let rid = self.remote.rid(ssrc).await.unwrap_or_default();
        let layer = simulcast::layer_of_rid(&rid);
        self.learn(ssrc, layer);
        layer
    }

    async fn on_packet(&mut self, kind: MediaKind, mut packet: rtp::Packet) {
        let layer = self.layer_of(packet.header.ssrc).await;
        let i = usize::from(layer);
        let now = Instant::now();
        // Video back after a silence (the publisher's network dropped for a
        // moment): every subscriber's decoder has lost the picture, so ask
        // for a keyframe at once rather than waiting for each of them to ask.
        let last = self.readings[i].last_packet.replace(now);
        if kind == MediaKind::Video && last.is_some_and(|t| now.duration_since(t) > RESUME_GAP) {
            tracing::debug!(track = %self.id, layer, "video resumed after a gap: asking for a keyframe");
            self.send_pli(layer).await;
        }
        let keyframe = kind == MediaKind::Audio || simulcast::is_keyframe(&self.mime, &packet.payload);
        self.meter(i, &packet, keyframe, now, last);
        let state = &self.publisher_state;
        let reading = &mut self.readings[i];
        if !state.forwarding(kind) {
            reading.dropped = reading.dropped.wrapping_add(1);
            return;
        }
        if let Some(id) = self.audio_level_id {
            let level = packet.header.get_extension(id).and_then(|p| parse_audio_level(&p));
            if let Some((level, _voice)) = level {
                state.levels().record(now, level);
            }
        }
        packet.header.sequence_number = packet.header.sequence_number.wrapping_sub(reading.dropped);
        // Its extensions' ids were negotiated with the publisher, not with
        // the subscribers: stripped once here (so no copy has any to
        // allocate), after the audio level was read.
        let header = &mut packet.header;
        header.extension = false;
        header.extension_profile = 0;
        header.extensions.clear();
        header.extensions_padding = 0;
        self.fanout.send(layer, keyframe, &packet, now);
    }

    /// Records a packet in its layer's meter: when it came, the bitrate,
    /// and the width a keyframe announces. After a silence (`last`: the packet
    /// before) the window starts again and the bitrate it had is kept
    /// meanwhile: a layer resumed is not measured over the time it was off.
    fn meter(&mut self, i: usize, packet: &rtp::Packet, keyframe: bool, now: Instant, last: Option<Instant>) {
        let meter = &self.layers.meters[i];
        let since_start = now.saturating_duration_since(self.layers.started).as_millis() as u64;
        meter.last_ms.store(since_start.max(1), Ordering::Relaxed);
        let reading = &mut self.readings[i];
        if last.is_some_and(|t| now.saturating_duration_since(t) >= LAYER_IDLE) {
            reading.window_start = None;
            reading.window_bytes = 0;
        }
        let start = *reading.window_start.get_or_insert(now);
        reading.window_bytes += packet.payload.len() as u64 + 12;
        let span = now.saturating_duration_since(start);
        if span >= RATE_WINDOW {
            meter.bitrate.store(reading.window_bytes * 8 * 1_000 / span.as_millis().max(1) as u64, Ordering::Relaxed);
            reading.window_start = Some(now);
            reading.window_bytes = 0;
        }
        // Only keyframes announce a width (VP8's header, H.264's SPS).
        if let Some(width) = keyframe.then(|| simulcast::announced_width(&self.mime, &packet.payload)).flatten() {
            meter.width.store(width, Ordering::Relaxed);
        }
    }

    /// Asks the publisher for a keyframe of one layer.
    async fn send_pli(&mut self, layer: u8) {
        let Some(reading) = self.readings.get(usize::from(layer)).filter(|r| r.ssrc != 0) else { return };
        let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc: reading.ssrc };
        if let Err(e) = self.remote.write_rtcp(vec![Box::new(pli)]).await {
            tracing::debug!(track = %self.id, error = %e, "PLI not sent");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heard(layers: &TrackLayers, i: usize, ago_ms: u64, bitrate: u64, now: Instant) {
        let at = now.saturating_duration_since(layers.started).as_millis() as u64;
        layers.meters[i].last_ms.store(at.saturating_sub(ago_ms).max(1), Ordering::Relaxed);
        layers.meters[i].bitrate.store(bitrate, Ordering::Relaxed);
    }

    #[test]
    fn each_subscriber_wants_one_layer_and_takes_it_back_once() {
        let layers = Arc::new(TrackLayers::new());
        let (ada, bob) = (Want::new(layers.clone()), Want::new(layers.clone()));
        assert_eq!(layers.wanted(), None, "a say starts with nothing");
        assert!(ada.set(Some(0)) && bob.set(Some(2)));
        assert!(!bob.set(Some(2)), "unchanged");
        assert_eq!(layers.wanted(), Some(2));
        assert!(bob.set(Some(1)));
        assert_eq!(layers.wanted(), Some(1), "moved, not added");
        bob.release();
        bob.release();
        assert!(!bob.set(Some(2)), "released for good");
        assert_eq!(layers.wanted(), Some(0));
        assert_eq!(layers.wants.iter().map(|w| w.load(Ordering::Relaxed)).sum::<u32>(), 1);
        drop(ada);
        assert_eq!(layers.wanted(), None);
        assert!(layers.wants.iter().all(|w| w.load(Ordering::Relaxed) == 0), "nothing left counted");
    }

    #[test]
    fn a_layer_is_sent_when_heard_lately_and_more_than_a_trickle() {
        let layers = TrackLayers::new();
        let now = layers.started + Duration::from_secs(10);
        assert!(layers.states(now).iter().all(|l| !l.active), "nothing heard yet");
        heard(&layers, 0, 100, 60_000, now);
        heard(&layers, 1, 100, 200_000, now);
        heard(&layers, 2, 100, 9_000, now);
        let active: Vec<bool> = layers.states(now).iter().map(|l| l.active).collect();
        assert_eq!(active, [true, true, false], "the top layer is down to a trickle");
        heard(&layers, 2, 100, 450_000, now);
        heard(&layers, 1, 3_000, 200_000, now);
        let active: Vec<bool> = layers.states(now).iter().map(|l| l.active).collect();
        assert_eq!(active, [true, false, true], "the middle one went quiet");
        assert_eq!(layers.seen(), 3);
    }
}
