//! Simulcast: a publisher's camera arrives as up to three layers (by `rid`:
//! quarter, half and full resolution), and each subscriber is sent one of
//! them, switched only on a keyframe of the layer it goes to, so that what
//! it receives is one continuous stream.
//!
//! Three pure parts, used by the forwarder and the subscriber's session:
//! - [`Vp8Descriptor`] reads (and [`LayerSwitch`] rewrites in place) the VP8
//!   payload descriptor of RFC 7741: picture id, `TL0PICIDX`, and whether a
//!   packet starts a keyframe (for H.264: an IDR or SPS, [`is_keyframe`]).
//! - [`LayerSwitch`] is one forwarder's output state: which layer it sends,
//!   and the offsets that carry its sequence numbers, timestamps, picture
//!   ids and `TL0PICIDX` on across a switch (no gap and no duplicate).
//! - [`choose`] picks a subscriber's layer from what the publisher sends
//!   now, the size the page shows the tile at and the subscriber's
//!   bandwidth, or none (video paused) when even the lowest does not fit.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::rtp;

/// Layers a camera is published with at most (index 0 = the smallest).
pub const LAYERS: usize = 3;

/// The `rid` of each layer, smallest first: quarter, half and full size.
pub const RIDS: [&str; LAYERS] = ["q", "h", "f"];

/// The publisher's start bitrate (kbit/s): the three layers' caps and audio.
const START_KBPS: u32 = 1_500;

/// The layer a `rid` names (an unknown or empty `rid` is a single-layer
/// publisher's one stream: layer 0).
pub fn layer_of_rid(rid: &str) -> u8 {
    RIDS.iter().position(|r| *r == rid).unwrap_or(0) as u8
}

/// Asks for simulcast on the media section `mid` of an offer: `a=rid:<id>
/// recv` per layer and `a=simulcast:recv q;h;f`, unless it has a simulcast
/// line already. (The engine writes these itself once an answer sent
/// simulcast, but not into a first offer; a browser answering it sends its
/// camera in three layers.) Its VP8 also gets a start bitrate
/// (`x-google-start-bitrate`, kbit/s) that covers the three layers, so the
/// browser's own estimate does not hold the top layer back for its first
/// seconds. Line endings follow the SDP's.
pub fn offer_simulcast(sdp: &str, mid: &str) -> String {
    let eol = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    let mut sections: Vec<Vec<&str>> = vec![Vec::new()];
    for line in sdp.split(eol).filter(|l| !l.is_empty()) {
        if line.starts_with("m=") {
            sections.push(Vec::new());
        }
        if let Some(section) = sections.last_mut() {
            section.push(line);
        }
    }
    let mid_line = format!("a=mid:{mid}");
    let rids: Vec<String> = RIDS.iter().map(|r| format!("a=rid:{r} recv")).collect();
    let list = format!("a=simulcast:recv {}", RIDS.join(";"));
    let mut out = String::with_capacity(sdp.len() + 160);
    for section in &sections {
        let ours = section.first().is_some_and(|l| l.starts_with("m=video"))
            && section.iter().any(|l| *l == mid_line)
            && !section.iter().any(|l| l.starts_with("a=simulcast:"));
        for line in section {
            out.push_str(line);
            out.push_str(eol);
            if let Some(pt) = line.strip_prefix("a=rtpmap:").and_then(|r| r.strip_suffix(" VP8/90000")) {
                let fmtp = format!("a=fmtp:{pt} ");
                if ours && !section.iter().any(|l| l.starts_with(&fmtp)) {
                    out.push_str(&format!("{fmtp}x-google-start-bitrate={START_KBPS}{eol}"));
                }
            }
            if ours && *line == mid_line {
                for rid in &rids {
                    out.push_str(rid);
                    out.push_str(eol);
                }
                out.push_str(&list);
                out.push_str(eol);
            }
        }
    }
    out
}

/// A later answer as the engine should apply it: the camera's section (if
/// its layers are sent by `rid`) without its `a=msid` line. Applying an
/// answer makes the engine set up each section's incoming track afresh; a
/// layered one is then re-learned from the `rid` header extension of its
/// next packets, which a browser stops sending once the stream was
/// acknowledged, so the layers would go unheard. Without the msid the
/// engine leaves the section's track as it is. The first answer, which
/// sets the track up, is applied whole.
pub fn keep_layers(sdp: &str, mid: &str) -> String {
    let eol = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    let mut out = String::with_capacity(sdp.len());
    let mut section: Vec<&str> = Vec::new();
    let mid_line = format!("a=mid:{mid}");
    let flush = |section: &mut Vec<&str>, out: &mut String| {
        let layered = section.iter().any(|l| *l == mid_line) && section.iter().any(|l| l.starts_with("a=rid:"));
        for line in section.drain(..) {
            if layered && line.starts_with("a=msid:") {
                continue;
            }
            out.push_str(line);
            out.push_str(eol);
        }
    };
    for line in sdp.split(eol).filter(|l| !l.is_empty()) {
        if line.starts_with("m=") {
            flush(&mut section, &mut out);
        }
        section.push(line);
    }
    flush(&mut section, &mut out);
    out
}

/// Where the fields of a VP8 payload descriptor (RFC 7741 §4.2) are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp8Descriptor {
    /// Offset of the picture id and whether it is the 15-bit form.
    pub picture_id: Option<(usize, bool)>,
    /// Offset of `TL0PICIDX`.
    pub tl0: Option<usize>,
    /// The packet starts a frame (`S` set, partition 0).
    pub starts_frame: bool,
    /// The frame it starts is a keyframe.
    pub keyframe: bool,
    /// A keyframe's width in pixels (from its frame header).
    pub width: Option<u16>,
}

impl Vp8Descriptor {
    /// Reads a VP8 payload's descriptor; `None` for a payload too short for
    /// what its flags announce.
    pub fn parse(payload: &[u8]) -> Option<Self> {
        let first = *payload.first()?;
        let mut at = 1;
        let mut out = Self::default();
        if first & 0x80 != 0 {
            let ext = *payload.get(at)?;
            at += 1;
            if ext & 0x80 != 0 {
                let pid = *payload.get(at)?;
                let long = pid & 0x80 != 0;
                out.picture_id = Some((at, long));
                at += if long { 2 } else { 1 };
            }
            if ext & 0x40 != 0 {
                out.tl0 = Some(at);
                at += 1;
            }
            if ext & 0x30 != 0 {
                at += 1;
            }
        }
        // The descriptor's last byte must exist (a field announced but cut off).
        if at > payload.len() {
            return None;
        }
        out.starts_frame = first & 0x10 != 0 && first & 0x07 == 0;
        if out.starts_frame {
            // The frame tag's first bit is the inverse keyframe flag; a
            // keyframe's header then has the start code and its size.
            let header = &payload[at..];
            out.keyframe = header.first().is_some_and(|tag| tag & 0x01 == 0);
            if out.keyframe && header.len() >= 10 && header[3..6] == [0x9d, 0x01, 0x2a] {
                out.width = Some(u16::from_le_bytes([header[6], header[7]]) & 0x3fff);
            }
        }
        Some(out)
    }

    fn picture_id(&self, payload: &[u8]) -> Option<u16> {
        let (at, long) = self.picture_id?;
        Some(if long {
            u16::from_be_bytes([payload[at], payload[at + 1]]) & 0x7fff
        } else {
            u16::from(payload[at] & 0x7f)
        })
    }
}

/// Whether a packet of this codec starts a keyframe. Anything but VP8 and
/// H.264 (Opus) counts as one: every audio packet can be decoded alone.
pub fn is_keyframe(mime: &str, payload: &[u8]) -> bool {
    if mime.eq_ignore_ascii_case(rtc::peer_connection::configuration::media_engine::MIME_TYPE_VP8) {
        Vp8Descriptor::parse(payload).is_some_and(|d| d.keyframe)
    } else if mime.eq_ignore_ascii_case(rtc::peer_connection::configuration::media_engine::MIME_TYPE_H264) {
        super::h264::is_keyframe(payload)
    } else {
        true
    }
}

/// The picture width a packet announces, where it does: a VP8 keyframe's
/// header, an H.264 SPS (sent with each keyframe).
pub fn announced_width(mime: &str, payload: &[u8]) -> Option<u16> {
    use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MIME_TYPE_VP8};
    if mime.eq_ignore_ascii_case(MIME_TYPE_VP8) {
        Vp8Descriptor::parse(payload).and_then(|d| d.width)
    } else if mime.eq_ignore_ascii_case(MIME_TYPE_H264) {
        super::h264::sps_width(payload)
    } else {
        None
    }
}

/// `a` comes before `b` in sequence-number order (RFC 3550 wrap-around).
fn seq_before(a: u16, b: u16) -> bool {
    a != b && b.wrapping_sub(a) < 0x8000
}

/// What was sent last, to continue from across a switch, or in a later
/// forwarder that takes over the stream ([`LayerSwitch::continuing`]).
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    seq: u16,
    ts: u32,
    picture_id: Option<u16>,
    tl0: Option<u8>,
    /// It ended a frame (the next packet may begin one).
    marker: bool,
    at: Instant,
}

#[cfg(test)]
impl Sent {
    /// Its (rewritten) sequence number.
    pub(crate) fn seq(&self) -> u16 {
        self.seq
    }

    /// A packet numbered `seq` that ended a frame, sent now.
    pub(crate) fn numbered(seq: u16) -> Self {
        Self { seq, ts: 0, picture_id: None, tl0: None, marker: true, at: Instant::now() }
    }
}

/// What to do with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Rewritten: send it.
    Send,
    /// Not for this subscriber (another layer, too old, or paused).
    Drop,
    /// A packet of the layer this subscriber should switch to, but not a
    /// keyframe: the switch waits for one (ask the publisher).
    AwaitKeyframe,
}

/// One forwarder's output: the layer it sends and the offsets that make
/// the subscriber see one stream.
#[derive(Debug, Clone)]
pub struct LayerSwitch {
    /// The layer being sent; `None` before the first packet and while paused.
    current: Option<u8>,
    /// Packets of the current layer before this one are dropped (they
    /// belong to before the switch).
    floor: u16,
    seq_offset: u16,
    ts_offset: u32,
    picture_id_offset: u16,
    tl0_offset: u8,
    last: Option<Sent>,
    /// Video's RTP clock (ticks per second), for the time a switch skips.
    clock_rate: u32,
    vp8: bool,
    /// Layer switches made (the first layer is not one).
    switches: u64,
    /// `last` is another forwarder's: the first layer continues its stream
    /// and is not a switch.
    inherited: bool,
}

impl LayerSwitch {
    /// A forwarder's state before its first packet.
    pub fn new(clock_rate: u32, vp8: bool) -> Self {
        Self {
            current: None,
            floor: 0,
            seq_offset: 0,
            ts_offset: 0,
            picture_id_offset: 0,
            tl0_offset: 0,
            last: None,
            clock_rate: clock_rate.max(1),
            vp8,
            switches: 0,
            inherited: false,
        }
    }

    /// A forwarder's state before its first packet, continuing the stream
    /// that another forwarder ended with `last` (same SSRC): the numbers go
    /// on from there, as after a pause, so the receiver's SRTP replay
    /// window and jitter buffer see one stream. Video starts on a keyframe.
    pub fn continuing(clock_rate: u32, vp8: bool, last: Sent) -> Self {
        Self { last: Some(last), inherited: true, ..Self::new(clock_rate, vp8) }
    }

    /// The last packet sent, for a later forwarder to continue from.
    pub fn last(&self) -> Option<Sent> {
        self.last
    }

    /// The layer being sent (`None`: nothing yet, or paused).
    pub fn current(&self) -> Option<u8> {
        self.current
    }

    /// How many times it went from one layer to another (or resumed).
    pub fn switches(&self) -> u64 {
        self.switches
    }

    /// Takes one packet of `layer`, given the layer this subscriber should
    /// get (`None`: paused). Rewrites what it sends in place. `keyframe`:
    /// the packet starts a keyframe (see [`is_keyframe`]).
    pub fn take(
        &mut self,
        layer: u8,
        target: Option<u8>,
        keyframe: bool,
        packet: &mut rtp::Packet,
        now: Instant,
    ) -> Verdict {
        let Some(target) = target else {
            self.current = None;
            return Verdict::Drop;
        };
        if self.current != Some(layer) {
            if layer != target {
                return Verdict::Drop;
            }
            // The first layer starts at once (the subscriber's decoder asks
            // for a keyframe itself); a switch, or a resume, waits for one.
            if self.last.is_some() && !keyframe {
                return Verdict::AwaitKeyframe;
            }
            self.switch_to(layer, packet, now);
        }
        // (A packet of the current layer while another is wanted still
        // goes: the old layer is sent until the new one's keyframe.)
        if seq_before(packet.header.sequence_number, self.floor) {
            return Verdict::Drop;
        }
        self.rewrite(packet, now);
        Verdict::Send
    }

    fn switch_to(&mut self, layer: u8, packet: &rtp::Packet, now: Instant) {
        let header = &packet.header;
        if let Some(last) = self.last {
            self.seq_offset = last.seq.wrapping_add(1).wrapping_sub(header.sequence_number);
            // The time that passed since the last packet, at least a tick.
            let elapsed = now.saturating_duration_since(last.at);
            let ticks = (elapsed.as_micros() * u128::from(self.clock_rate) / 1_000_000).max(1);
            let ticks = u32::try_from(ticks).unwrap_or(u32::MAX / 2);
            self.ts_offset = last.ts.wrapping_add(ticks).wrapping_sub(header.timestamp);
            if self.vp8 {
                if let Some(d) = Vp8Descriptor::parse(&packet.payload) {
                    if let (Some(prev), Some(src)) = (last.picture_id, d.picture_id(&packet.payload)) {
                        self.picture_id_offset = prev.wrapping_add(1).wrapping_sub(src);
                    }
                    if let (Some(prev), Some(at)) = (last.tl0, d.tl0) {
                        self.tl0_offset = prev.wrapping_add(1).wrapping_sub(packet.payload[at]);
                    }
                }
            }
            if !std::mem::take(&mut self.inherited) {
                self.switches += 1;
            }
        }
        self.current = Some(layer);
        self.floor = header.sequence_number;
    }

    fn rewrite(&mut self, packet: &mut rtp::Packet, now: Instant) {
        let header = &mut packet.header;
        header.sequence_number = header.sequence_number.wrapping_add(self.seq_offset);
        header.timestamp = header.timestamp.wrapping_add(self.ts_offset);
        let (seq, ts, marker) = (header.sequence_number, header.timestamp, header.marker);
        let mut picture_id = None;
        let mut tl0 = None;
        if self.vp8 {
            if let Some(d) = Vp8Descriptor::parse(&packet.payload) {
                let shift = self.picture_id_offset != 0 || self.tl0_offset != 0;
                let mut payload = if shift { Some(BytesMut::from(&packet.payload[..])) } else { None };
                if let Some((at, long)) = d.picture_id {
                    let src = d.picture_id(&packet.payload).unwrap_or_default();
                    let id = src.wrapping_add(self.picture_id_offset) & if long { 0x7fff } else { 0x7f };
                    if let Some(p) = payload.as_mut() {
                        if long {
                            let [hi, lo] = (id | 0x8000).to_be_bytes();
                            p[at] = hi;
                            p[at + 1] = lo;
                        } else {
                            p[at] = id as u8;
                        }
                    }
                    picture_id = Some(id);
                }
                if let Some(at) = d.tl0 {
                    let idx = packet.payload[at].wrapping_add(self.tl0_offset);
                    if let Some(p) = payload.as_mut() {
                        p[at] = idx;
                    }
                    tl0 = Some(idx);
                }
                if let Some(p) = payload {
                    packet.payload = Bytes::from(p);
                }
            }
        }
        // Later in order than what was sent last: it is where a switch
        // continues from (a late packet keeps its place without moving it back).
        if self.last.is_none_or(|last| seq_before(last.seq, seq)) {
            let last = self.last;
            self.last = Some(Sent {
                seq,
                ts,
                picture_id: picture_id.or(last.and_then(|l| l.picture_id)),
                tl0: tl0.or(last.and_then(|l| l.tl0)),
                marker,
                at: now,
            });
        }
    }

    /// Takes the sequence number (and timestamp) for a padding packet sent
    /// next, moving what follows one place on: between two frames, or
    /// while paused; `None` in the middle of a frame or before anything
    /// was sent.
    pub fn pad(&mut self) -> Option<(u16, u32)> {
        let last = self.last.as_mut()?;
        if self.current.is_some() && !last.marker {
            return None;
        }
        last.seq = last.seq.wrapping_add(1);
        self.seq_offset = self.seq_offset.wrapping_add(1);
        Some((last.seq, last.ts))
    }
}

/// What a publisher sends on one layer now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct LayerState {
    /// Packets arrived lately.
    pub active: bool,
    /// Its bitrate over the last moments, bits per second (0 = not known yet).
    pub bitrate: u64,
    /// Its frame width from its last keyframe.
    pub width: Option<u16>,
}

/// How much more than a layer's bitrate the estimate must be to move up
/// to it (down moves happen as soon as it no longer fits).
pub const UP_MARGIN: f64 = 1.25;

/// A layer is counted as taking at least this much more than the active
/// layer below it: one that has just started (or restarted) is still
/// ramping up, and for a moment its measured bitrate says it fits where
/// it will not.
pub const ABOVE_BELOW: f64 = 1.5;

/// What each layer is counted as taking: its bitrate, and never less than
/// [`ABOVE_BELOW`] times what the active layer below it is counted as.
pub fn costs(layers: &[LayerState]) -> Vec<u64> {
    let mut below = 0u64;
    layers
        .iter()
        .map(|l| {
            if !l.active {
                return l.bitrate;
            }
            let cost = l.bitrate.max((below as f64 * ABOVE_BELOW) as u64);
            below = cost;
            cost
        })
        .collect()
}

/// The layer one subscriber should get of one publisher's video, or `None`
/// (paused).
/// - `view_width`: the width in device pixels the page shows the tile at
///   (`None`: not told; `Some(0)`: not shown at all, so paused).
/// - `budget`: the bits per second this video may take of the subscriber's
///   estimated downlink (`None`: no estimate yet, anything fits).
/// - `current`: the layer sent now (a move up needs a margin).
pub fn choose(layers: &[LayerState], view_width: Option<u32>, budget: Option<u64>, current: Option<u8>) -> Option<u8> {
    if view_width == Some(0) {
        return None;
    }
    let active: Vec<(u8, &LayerState)> =
        layers.iter().enumerate().filter(|(_, l)| l.active).map(|(i, l)| (i as u8, l)).collect();
    // Nothing is coming (a publisher not started, or between two packets):
    // stay where we are, or start on the lowest.
    let Some(&(lowest, _)) = active.first() else { return current.or(Some(0)) };
    // The smallest layer at least as wide as the tile (a thumbnail never
    // gets more than it shows); the largest when none is or sizes are unknown.
    let cap = match view_width {
        Some(w) => active
            .iter()
            .find(|(_, l)| l.width.is_some_and(|lw| u32::from(lw) >= w))
            .map(|(i, _)| *i)
            .unwrap_or(active.last().map(|(i, _)| *i).unwrap_or(lowest)),
        None => active.last().map(|(i, _)| *i).unwrap_or(lowest),
    };
    let Some(budget) = budget else { return Some(cap) };
    let costs = costs(layers);
    let fits = |i: u8| {
        let cost = costs[usize::from(i)] as f64;
        let needed = if current.is_some_and(|c| i > c) { cost * UP_MARGIN } else { cost };
        needed <= budget as f64
    };
    active.iter().rev().filter(|(i, _)| *i <= cap).find(|(i, _)| fits(*i)).map(|(i, _)| *i)
}

/// The largest layer a tile `view_width` wide could use, whatever the
/// publisher sends now: the smallest layer whose last known width covers
/// the tile, else the top one (`None`: a tile not shown wants none). What
/// no subscriber's tile wants, the publisher holds back ([`LayerHold`]).
pub fn wanted(layers: &[LayerState], view_width: Option<u32>) -> Option<u8> {
    let top = layers.len().saturating_sub(1) as u8;
    match view_width {
        Some(0) => None,
        None => Some(top),
        Some(w) => {
            Some(layers.iter().position(|l| l.width.is_some_and(|lw| u32::from(lw) >= w)).map_or(top, |i| i as u8))
        }
    }
}

/// How long fewer layers must be enough before the publisher is told to
/// send fewer (starting a layer again costs a keyframe on every layer:
/// Chrome's simulcast encoder starts them together).
pub const HOLD_AFTER: Duration = Duration::from_secs(5);

/// How many of its camera's layers a publisher is told to send: as many as
/// the largest wanted layer needs (at least the smallest, which a new or a
/// weak subscriber starts on), more at once, fewer once that has held for
/// [`HOLD_AFTER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerHold {
    sending: u8,
    fewer_since: Option<Instant>,
}

impl Default for LayerHold {
    /// The browser starts with every layer on.
    fn default() -> Self {
        Self { sending: LAYERS as u8, fewer_since: None }
    }
}

impl LayerHold {
    /// The layers the publisher is told to send now.
    pub fn sending(&self) -> u8 {
        self.sending
    }

    /// Takes the largest layer any subscriber wants (`None`: none wants
    /// video) at `now`; returns the new count when the publisher is to be
    /// told one.
    pub fn update(&mut self, wanted: Option<u8>, now: Instant) -> Option<u8> {
        let needed = wanted.map_or(1, |w| w.saturating_add(1)).clamp(1, LAYERS as u8);
        if needed >= self.sending {
            self.fewer_since = None;
            if needed == self.sending {
                return None;
            }
            self.sending = needed;
            return Some(needed);
        }
        let since = *self.fewer_since.get_or_insert(now);
        if now.saturating_duration_since(since) < HOLD_AFTER {
            return None;
        }
        self.fewer_since = None;
        self.sending = needed;
        Some(needed)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A VP8 packet: 15-bit picture id, TL0PICIDX, and a frame tag whose
    /// keyframe bit and size are as given.
    fn vp8(seq: u16, ts: u32, picture_id: u16, tl0: u8, start: bool, key: bool, width: u16) -> rtp::Packet {
        let mut payload = vec![0x80 | if start { 0x10 } else { 0 }, 0xc0];
        payload.extend_from_slice(&(picture_id | 0x8000).to_be_bytes());
        payload.push(tl0);
        if start {
            payload.extend_from_slice(&[if key { 0x00 } else { 0x01 }, 0, 0, 0x9d, 0x01, 0x2a]);
            payload.extend_from_slice(&width.to_le_bytes());
            payload.extend_from_slice(&(width / 2).to_le_bytes());
        }
        payload.extend_from_slice(&[0xaa; 20]);
        rtp::Packet {
            header: rtp::header::Header { sequence_number: seq, timestamp: ts, ..Default::default() },
            payload: Bytes::from(payload),
        }
    }

    #[test]
    fn a_tile_wants_the_smallest_layer_that_covers_it_sent_or_not() {
        let held = |width: u16| LayerState { active: false, bitrate: 0, width: Some(width) };
        let layers = [
            LayerState { active: true, bitrate: 80_000, width: Some(240) },
            held(480),
            LayerState { active: false, bitrate: 0, width: None },
        ];
        assert_eq!(wanted(&layers, Some(0)), None, "not shown");
        assert_eq!(wanted(&layers, None), Some(2), "size not told: the top");
        assert_eq!(wanted(&layers, Some(200)), Some(0));
        assert_eq!(wanted(&layers, Some(240)), Some(0));
        assert_eq!(wanted(&layers, Some(300)), Some(1), "held, but a tile this size wants it");
        assert_eq!(wanted(&layers, Some(900)), Some(2), "wider than any known: the top");
    }

    #[test]
    fn a_publisher_sends_more_layers_at_once_and_fewer_after_a_while() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut hold = LayerHold::default();
        assert_eq!(hold.sending(), 3);
        assert_eq!(hold.update(Some(2), at(0)), None, "all wanted: as it is");
        // Only thumbnails: fewer, once that has lasted.
        assert_eq!(hold.update(Some(0), at(500)), None);
        assert_eq!(hold.update(Some(0), at(500 + 4_900)), None);
        assert_eq!(hold.update(Some(0), at(500 + 5_000)), Some(1));
        assert_eq!(hold.update(Some(0), at(6_000)), None);
        // A large tile again: at once.
        assert_eq!(hold.update(Some(2), at(6_500)), Some(3));
        // A moment of fewer does not count; the wait starts again.
        assert_eq!(hold.update(Some(1), at(7_000)), None);
        assert_eq!(hold.update(Some(2), at(8_000)), None);
        assert_eq!(hold.update(Some(1), at(9_000)), None);
        assert_eq!(hold.update(Some(1), at(13_900)), None);
        assert_eq!(hold.update(Some(1), at(14_000)), Some(2));
        // Nobody wants video: the smallest layer stays.
        assert_eq!(hold.update(None, at(15_000)), None);
        assert_eq!(hold.update(None, at(20_000)), Some(1));
        assert_eq!(hold.sending(), 1);
    }

    #[test]
    fn a_first_offer_asks_for_simulcast_on_the_camera_only() {
        let sdp = "v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=recvonly\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=recvonly\r\na=rtpmap:96 VP8/90000\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=recvonly\r\na=rtpmap:96 VP8/90000\r\n";
        let offered = offer_simulcast(sdp, "1");
        let lines: Vec<&str> = offered.split("\r\n").collect();
        let at = lines.iter().position(|l| *l == "a=mid:1").expect("mid 1");
        assert_eq!(&lines[at + 1..at + 5], ["a=rid:q recv", "a=rid:h recv", "a=rid:f recv", "a=simulcast:recv q;h;f"]);
        assert_eq!(offered.matches("a=rid:").count(), 3, "only the camera's section");
        let added = 3 * "a=rid:q recv\r\n".len()
            + "a=simulcast:recv q;h;f\r\n".len()
            + "a=fmtp:96 x-google-start-bitrate=1500\r\n".len();
        assert!(offered.ends_with("\r\n") && offered.len() == sdp.len() + added);
        assert_eq!(offered.matches("x-google-start-bitrate=1500").count(), 1, "the camera's VP8 only");
        // Once there (an answer had simulcast), nothing is added again; an
        // audio section or an unknown mid is left alone.
        assert_eq!(offer_simulcast(&offered, "1"), offered);
        assert_eq!(offer_simulcast(sdp, "0"), sdp);
        assert_eq!(offer_simulcast(sdp, "7"), sdp);
    }

    #[test]
    fn later_answers_leave_the_layered_track_alone() {
        let answer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=msid:s a\r\n\
                      m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=msid:s v\r\na=rid:q send\r\na=simulcast:send q;h;f\r\n\
                      m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=msid:s w\r\n";
        let kept = keep_layers(answer, "1");
        assert_eq!(kept, answer.replace("a=msid:s v\r\n", ""));
        // A section sent without layers (by SSRC) is applied as it is.
        assert_eq!(keep_layers(answer, "2"), answer);
        assert_eq!(keep_layers(answer, "0"), answer);
    }

    #[test]
    fn the_vp8_descriptor_is_read() {
        let key = vp8(1, 0, 300, 7, true, true, 640);
        let d = Vp8Descriptor::parse(&key.payload).expect("parsed");
        assert_eq!(d.picture_id, Some((2, true)));
        assert_eq!(d.tl0, Some(4));
        assert!(d.starts_frame && d.keyframe);
        assert_eq!(d.width, Some(640));
        assert_eq!(d.picture_id(&key.payload), Some(300));
        let delta = Vp8Descriptor::parse(&vp8(2, 0, 301, 7, true, false, 0).payload).expect("parsed");
        assert!(delta.starts_frame && !delta.keyframe);
        let middle = Vp8Descriptor::parse(&vp8(3, 0, 301, 7, false, false, 0).payload).expect("parsed");
        assert!(!middle.starts_frame && !middle.keyframe);
        // Short picture id, no extension at all, and cut-off descriptors.
        assert_eq!(Vp8Descriptor::parse(&[0x90, 0x80, 0x05, 0x00]).and_then(|d| d.picture_id), Some((2, false)));
        assert!(Vp8Descriptor::parse(&[0x10, 0x00]).is_some_and(|d| d.keyframe && d.picture_id.is_none()));
        assert_eq!(Vp8Descriptor::parse(&[0x80, 0x80, 0x80]), None);
        assert_eq!(Vp8Descriptor::parse(&[]), None);
        assert!(is_keyframe("video/VP8", &key.payload));
        assert!(!is_keyframe("video/VP8", &[0x80]));
    }

    #[test]
    fn h264_keyframes_are_found_alone_aggregated_and_fragmented() {
        assert!(is_keyframe("video/H264", &[0x65, 0x88]));
        assert!(is_keyframe("video/H264", &[0x67, 0x42]));
        assert!(!is_keyframe("video/H264", &[0x41, 0x9a]));
        // STAP-A with a PPS (8) then an SPS (7).
        assert!(is_keyframe("video/H264", &[0x78, 0x00, 0x02, 0x68, 0xce, 0x00, 0x02, 0x67, 0x42]));
        assert!(!is_keyframe("video/H264", &[0x78, 0x00, 0x02, 0x68, 0xce]));
        // FU-A: the start of an IDR, and a later fragment of it.
        assert!(is_keyframe("video/H264", &[0x7c, 0x85, 0x00]));
        assert!(!is_keyframe("video/H264", &[0x7c, 0x05, 0x00]));
        assert!(!is_keyframe("video/H264", &[]));
        assert!(is_keyframe("audio/opus", &[0x01]));
    }

    /// Three layers of one camera, each with its own numbering, sent as a
    /// publisher would: three packets a frame, the first of each layer's
    /// GOP a keyframe.
    struct Publisher {
        seq: [u16; LAYERS],
        ts: [u32; LAYERS],
        picture_id: [u16; LAYERS],
        tl0: [u8; LAYERS],
    }

    impl Publisher {
        fn frame(&mut self, layer: usize, key: bool) -> Vec<rtp::Packet> {
            let out = (0..3)
                .map(|i| {
                    self.seq[layer] = self.seq[layer].wrapping_add(1);
                    let mut p =
                        vp8(self.seq[layer], self.ts[layer], self.picture_id[layer], self.tl0[layer], i == 0, key, 160);
                    p.header.marker = i == 2;
                    p
                })
                .collect();
            self.ts[layer] = self.ts[layer].wrapping_add(3000);
            self.picture_id[layer] = (self.picture_id[layer] + 1) & 0x7fff;
            self.tl0[layer] = self.tl0[layer].wrapping_add(1);
            out
        }
    }

    #[test]
    fn switches_keep_one_continuous_stream() {
        // Numbering near each field's wrap, so the offsets wrap too.
        let mut publisher = Publisher {
            seq: [65_500, 100, 30_000],
            ts: [u32::MAX - 10_000, 5, 2_000_000_000],
            picture_id: [0x7ff0, 10, 2_000],
            tl0: [250, 0, 128],
        };
        let mut switch = LayerSwitch::new(90_000, true);
        let start = Instant::now();
        let mut sent: Vec<(usize, rtp::Packet)> = Vec::new();
        let mut asked = 0;
        // The subscriber's wanted layer over 60 frames: up, down, paused, back.
        let target = |frame: usize| match frame {
            0..10 => Some(0),
            10..25 => Some(2),
            25..35 => Some(1),
            35..40 => None,
            _ => Some(0),
        };
        for frame in 0..60 {
            let now = start + Duration::from_millis(33 * frame as u64);
            for layer in 0..LAYERS {
                // Each layer has a keyframe every 8 frames, at its own phase.
                let key = (frame + layer * 3) % 8 == 0;
                for mut packet in publisher.frame(layer, key) {
                    let keyframe = is_keyframe("video/VP8", &packet.payload);
                    match switch.take(layer as u8, target(frame), keyframe, &mut packet, now) {
                        Verdict::Send => sent.push((layer, packet)),
                        Verdict::AwaitKeyframe => asked += 1,
                        Verdict::Drop => {}
                    }
                }
            }
        }
        assert!(asked > 0, "switches waited for keyframes");
        assert_eq!(switch.switches(), 3, "to 2, to 1, and back from the pause to 0");
        // Every sequence number once, in order; timestamps never go back;
        // picture ids and TL0PICIDX step by one from frame to frame.
        for pair in sent.windows(2) {
            let ((_, a), (_, b)) = (&pair[0], &pair[1]);
            assert_eq!(b.header.sequence_number, a.header.sequence_number.wrapping_add(1));
            let step = b.header.timestamp.wrapping_sub(a.header.timestamp);
            assert!(step < 90_000 * 2, "timestamps move forward: {step}");
            let (da, db) = (Vp8Descriptor::parse(&a.payload).unwrap(), Vp8Descriptor::parse(&b.payload).unwrap());
            let (pa, pb) = (da.picture_id(&a.payload).unwrap(), db.picture_id(&b.payload).unwrap());
            let (ta, tb) = (a.payload[da.tl0.unwrap()], b.payload[db.tl0.unwrap()]);
            if db.starts_frame {
                assert_eq!(pb, (pa + 1) & 0x7fff, "picture id steps at a new frame");
                assert_eq!(tb, ta.wrapping_add(1));
                assert!(step > 0, "a new frame has a later timestamp");
            } else {
                assert_eq!((pb, tb), (pa, ta), "one frame, one picture id");
                assert_eq!(step, 0);
            }
        }
        // Each switch begins on a keyframe of the layer switched to.
        let switches: Vec<&rtp::Packet> = sent.windows(2).filter(|w| w[0].0 != w[1].0).map(|w| &w[1].1).collect();
        assert_eq!(switches.len(), 3, "0 to 2, 2 to 1, and 1 to 0 after the pause");
        assert!(switches.iter().all(|p| Vp8Descriptor::parse(&p.payload).is_some_and(|d| d.keyframe)));
        // What was sent of each layer: the wanted ones only.
        let layers_sent: std::collections::BTreeSet<usize> = sent.iter().map(|(l, _)| *l).collect();
        assert_eq!(layers_sent, [0, 1, 2].into());
    }

    #[test]
    fn h264_switches_keep_one_continuous_stream_and_leave_the_payload_alone() {
        // Numbering near each field's wrap, so the offsets wrap too.
        let mut seq: [u16; LAYERS] = [65_530, 7, 40_000];
        let mut ts: [u32; LAYERS] = [u32::MAX - 5_000, 10, 3_000_000_000];
        let mut switch = LayerSwitch::new(90_000, false);
        let start = Instant::now();
        let mut sent: Vec<(usize, rtp::Packet)> = Vec::new();
        let target = |frame: usize| match frame {
            0..8 => Some(0),
            8..20 => Some(2),
            20..30 => Some(1),
            _ => Some(0),
        };
        for frame in 0..40 {
            let now = start + Duration::from_millis(33 * frame as u64);
            for layer in 0..LAYERS {
                // Each layer has a keyframe every 8 frames, at its own phase.
                let key = (frame + layer * 3) % 8 == 0;
                for i in 0..3u8 {
                    seq[layer] = seq[layer].wrapping_add(1);
                    // Three FU-A fragments of one IDR (5) or non-IDR (1)
                    // slice, the first with the start bit; the last two
                    // bytes name the layer and the fragment.
                    let fu = if i == 0 { 0x80 } else { 0 } | if key { 5 } else { 1 };
                    let header = rtp::header::Header {
                        sequence_number: seq[layer],
                        timestamp: ts[layer],
                        marker: i == 2,
                        ..Default::default()
                    };
                    let mut packet = rtp::Packet { header, payload: Bytes::from(vec![0x7c, fu, layer as u8, i]) };
                    let keyframe = is_keyframe("video/H264", &packet.payload);
                    if let Verdict::Send = switch.take(layer as u8, target(frame), keyframe, &mut packet, now) {
                        sent.push((layer, packet));
                    }
                }
                ts[layer] = ts[layer].wrapping_add(3000);
            }
        }
        assert_eq!(switch.switches(), 3, "to 2, to 1, back to 0");
        // Every sequence number once, in order; one timestamp per frame,
        // moving forward.
        for pair in sent.windows(2) {
            let ((_, a), (_, b)) = (&pair[0], &pair[1]);
            assert_eq!(b.header.sequence_number, a.header.sequence_number.wrapping_add(1));
            let step = b.header.timestamp.wrapping_sub(a.header.timestamp);
            assert!(step < 90_000 * 2, "timestamps move forward: {step}");
            if b.payload[1] & 0x80 != 0 {
                assert!(step > 0, "a new frame has a later timestamp");
            } else {
                assert_eq!(step, 0, "one frame, one timestamp");
            }
        }
        // Each switch begins on the first fragment of a keyframe of the
        // layer switched to; no payload is rewritten.
        let switches: Vec<&rtp::Packet> = sent.windows(2).filter(|w| w[0].0 != w[1].0).map(|w| &w[1].1).collect();
        assert_eq!(switches.len(), 3);
        assert!(switches.iter().all(|p| p.payload[1] == 0x85));
        assert!(sent.iter().all(|(layer, p)| p.payload[0] == 0x7c && usize::from(p.payload[2]) == *layer));
    }

    #[test]
    fn padding_goes_between_frames_and_numbers_stay_continuous() {
        let mut publisher =
            Publisher { seq: [65_530, 0, 0], ts: [0; LAYERS], picture_id: [0; LAYERS], tl0: [0; LAYERS] };
        let mut switch = LayerSwitch::new(90_000, true);
        let now = Instant::now();
        assert_eq!(switch.pad(), None, "nothing to continue from yet");
        // (sequence number, is padding) as the subscriber receives them.
        let mut wire: Vec<(u16, bool)> = Vec::new();
        let mut refused = 0;
        for frame in 0..12 {
            // Paused for frames 6 to 8: padding still goes (a probe while
            // paused); the resume waits for a keyframe.
            let target = if (6..9).contains(&frame) { None } else { Some(0) };
            for mut packet in publisher.frame(0, frame % 3 == 0) {
                let keyframe = is_keyframe("video/VP8", &packet.payload);
                if switch.take(0, target, keyframe, &mut packet, now) == Verdict::Send {
                    wire.push((packet.header.sequence_number, false));
                }
                // Padding asked for after every packet: it is given only
                // after a frame's last one.
                match switch.pad() {
                    Some((seq, _)) => wire.push((seq, true)),
                    None => refused += 1,
                }
            }
        }
        assert_eq!(refused, 6 * 2 + 3 * 2, "mid-frame, in the frames sent");
        for pair in wire.windows(2) {
            assert_eq!(pair[1].0, pair[0].0.wrapping_add(1), "{wire:?}");
        }
        assert_eq!(
            wire.iter().filter(|(_, pad)| *pad).count(),
            6 + 9 + 3,
            "a frame's end each, and every packet paused"
        );
    }

    #[test]
    fn late_packets_of_an_old_layer_and_from_before_a_switch_are_dropped() {
        let mut switch = LayerSwitch::new(90_000, true);
        let now = Instant::now();
        let mut p = vp8(10, 0, 1, 1, true, false, 0);
        assert_eq!(switch.take(0, Some(0), false, &mut p, now), Verdict::Send);
        let mut key = vp8(500, 9_000, 40, 9, true, true, 320);
        assert_eq!(switch.take(1, Some(1), true, &mut key, now), Verdict::Send);
        assert_eq!(key.header.sequence_number, 11);
        // Layer 0 again, and layer 1 from before its keyframe: neither goes.
        let mut old = vp8(11, 3_000, 2, 2, true, false, 0);
        assert_eq!(switch.take(0, Some(1), false, &mut old, now), Verdict::Drop);
        let mut early = vp8(499, 6_000, 39, 8, false, false, 0);
        assert_eq!(switch.take(1, Some(1), false, &mut early, now), Verdict::Drop);
        // A packet of the current layer reordered after a later one keeps
        // its own number and does not move the continuation point back.
        let mut next = vp8(502, 9_000, 40, 9, false, false, 0);
        assert_eq!(switch.take(1, Some(1), false, &mut next, now), Verdict::Send);
        let mut late = vp8(501, 9_000, 40, 9, false, false, 0);
        assert_eq!(switch.take(1, Some(1), false, &mut late, now), Verdict::Send);
        assert_eq!((next.header.sequence_number, late.header.sequence_number), (13, 12));
        // Paused: nothing goes; resuming waits for a keyframe.
        let mut paused = vp8(503, 12_000, 41, 10, true, true, 320);
        assert_eq!(switch.take(1, None, true, &mut paused, now), Verdict::Drop);
        assert_eq!(switch.current(), None);
        let mut delta = vp8(504, 15_000, 42, 11, true, false, 0);
        assert_eq!(switch.take(1, Some(1), false, &mut delta, now), Verdict::AwaitKeyframe);
        let mut again = vp8(505, 18_000, 43, 12, true, true, 320);
        assert_eq!(switch.take(1, Some(1), true, &mut again, now), Verdict::Send);
        assert_eq!(again.header.sequence_number, 14);
    }

    #[test]
    fn a_later_forwarder_continues_the_stream_another_ended() {
        // A forwarder sends three frames of one publisher's video (numbers
        // near their wrap)...
        let mut ada = Publisher {
            seq: [65_530, 0, 0],
            ts: [u32::MAX - 3_000, 0, 0],
            picture_id: [0x7ffe, 0, 0],
            tl0: [255, 0, 0],
        };
        let mut switch = LayerSwitch::new(90_000, true);
        let start = Instant::now();
        let mut wire = Vec::new();
        for frame in 0..3 {
            for mut packet in ada.frame(0, frame == 0) {
                let keyframe = is_keyframe("video/VP8", &packet.payload);
                assert_eq!(switch.take(0, Some(0), keyframe, &mut packet, start), Verdict::Send);
                wire.push(packet);
            }
        }
        let ended = switch.last().expect("it sent");
        // ...and, a second later, another takes over its SSRC with a
        // second publisher's stream, numbered its own way.
        let mut cy = Publisher { seq: [1_000, 0, 0], ts: [500, 0, 0], picture_id: [3, 0, 0], tl0: [7, 0, 0] };
        let mut next = LayerSwitch::continuing(90_000, true, ended);
        let later = start + Duration::from_secs(1);
        let mut delta = cy.frame(0, false);
        assert_eq!(
            next.take(0, Some(0), false, &mut delta[0], later),
            Verdict::AwaitKeyframe,
            "video starts on a keyframe"
        );
        for mut packet in cy.frame(0, true) {
            let keyframe = is_keyframe("video/VP8", &packet.payload);
            assert_eq!(next.take(0, Some(0), keyframe, &mut packet, later), Verdict::Send);
            wire.push(packet);
        }
        assert_eq!(next.switches(), 0, "taking a stream over is no layer switch");
        // One stream on the wire: every number once, in order, across the
        // change; the picture id and TL0PICIDX step by one; the timestamp
        // moves on by the second that passed.
        for pair in wire.windows(2) {
            assert_eq!(pair[1].header.sequence_number, pair[0].header.sequence_number.wrapping_add(1));
        }
        let (before, after) = (&wire[8], &wire[9]);
        assert_eq!(after.header.timestamp.wrapping_sub(before.header.timestamp), 90_000);
        let (db, da) = (Vp8Descriptor::parse(&before.payload).unwrap(), Vp8Descriptor::parse(&after.payload).unwrap());
        assert_eq!(da.picture_id(&after.payload), db.picture_id(&before.payload).map(|id| (id + 1) & 0x7fff));
        assert_eq!(after.payload[da.tl0.unwrap()], before.payload[db.tl0.unwrap()].wrapping_add(1));
    }

    #[test]
    fn audio_and_single_layer_video_pass_unchanged() {
        let mut switch = LayerSwitch::new(48_000, false);
        let now = Instant::now();
        for seq in [7u16, 8, 10, 9] {
            let mut p = rtp::Packet {
                header: rtp::header::Header {
                    sequence_number: seq,
                    timestamp: u32::from(seq) * 960,
                    ..Default::default()
                },
                payload: Bytes::from_static(&[1, 2, 3]),
            };
            assert_eq!(switch.take(0, Some(0), true, &mut p, now), Verdict::Send);
            assert_eq!((p.header.sequence_number, p.header.timestamp), (seq, u32::from(seq) * 960));
            assert_eq!(&p.payload[..], &[1, 2, 3]);
        }
        assert_eq!(switch.switches(), 0);
    }

    fn layers(bitrates: [u64; 3], widths: [u16; 3], active: [bool; 3]) -> Vec<LayerState> {
        (0..3).map(|i| LayerState { active: active[i], bitrate: bitrates[i], width: Some(widths[i]) }).collect()
    }

    #[test]
    fn the_chooser_fits_the_tile_and_the_bandwidth() {
        let all = layers([150_000, 500_000, 1_500_000], [320, 640, 1280], [true; 3]);
        // No size, no estimate: the top layer. A thumbnail gets the smallest
        // layer that covers it; a hidden tile nothing.
        assert_eq!(choose(&all, None, None, None), Some(2));
        assert_eq!(choose(&all, Some(200), None, None), Some(0));
        assert_eq!(choose(&all, Some(321), None, None), Some(1));
        assert_eq!(choose(&all, Some(4000), None, None), Some(2));
        assert_eq!(choose(&all, Some(0), None, None), None);
        // The bandwidth: what fits, or nothing when the lowest does not.
        assert_eq!(choose(&all, None, Some(300_000), None), Some(0));
        assert_eq!(choose(&all, None, Some(1_000_000), None), Some(1));
        assert_eq!(choose(&all, None, Some(100_000), None), None);
        // Going up needs a margin; staying does not.
        assert_eq!(choose(&all, None, Some(550_000), Some(0)), Some(0));
        assert_eq!(choose(&all, None, Some(550_000), Some(1)), Some(1));
        assert_eq!(choose(&all, None, Some(700_000), Some(0)), Some(1));
        // A layer the publisher stopped sending is not chosen.
        let no_top = layers([150_000, 500_000, 1_500_000], [320, 640, 1280], [true, true, false]);
        assert_eq!(choose(&no_top, None, None, Some(2)), Some(1));
        assert_eq!(choose(&no_top, Some(1000), None, None), Some(1));
        // A layer that has just started counts as more than the one below
        // it, whatever its first figures say (here 161 kbit/s measured,
        // counted as 1.5 × 278).
        let ramping = layers([72_000, 278_000, 161_000], [240, 480, 960], [true; 3]);
        assert_eq!(costs(&ramping), vec![72_000, 278_000, 417_000]);
        assert_eq!(choose(&ramping, None, Some(349_000), Some(0)), Some(1));
        assert_eq!(choose(&ramping, None, Some(560_000), Some(1)), Some(2));
        // The floor is taken from the active layer below, not an idle one.
        let gap = layers([150_000, 500_000, 200_000], [320, 640, 1280], [true, false, true]);
        assert_eq!(costs(&gap), vec![150_000, 500_000, 225_000]);
        // One layer only (no simulcast): that one, whatever the tile.
        let single = vec![LayerState { active: true, bitrate: 0, width: None }];
        assert_eq!(choose(&single, Some(100), Some(50_000), None), Some(0));
        assert_eq!(choose(&[], Some(100), None, Some(1)), Some(1));
    }
}
