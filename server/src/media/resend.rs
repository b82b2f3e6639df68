//! Video packets sent again when the far end reports them lost (generic
//! NACK, RFC 4585 §6.2.1): each connection keeps what it sent on every
//! stream that negotiated NACK for [`RESEND_WINDOW`], and answers a NACK
//! with the packets it still has, on their own SSRC and numbers (the SFU
//! negotiates no RTX stream).
//!
//! In place of the library's responder, whose history is a fixed ring of
//! packets per stream, allocated and zeroed when the stream is bound: 256
//! slots (29 KB) per sent video stream, the receive-only lines' idle
//! senders included, filled with however many seconds of packets 256 is at
//! the stream's rate. Here a history is kept by age, so it holds about the
//! same second of a top layer and a fraction of that of a small one, and
//! costs nothing until the stream sends.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rtc::interceptor::{Attribute, AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;
use rtc::shared::TransportContext;

/// How long a sent packet can be asked for again: a receiver that asks
/// later than this has asked for a keyframe instead (libwebrtc keeps its
/// own sent packets at least this long, and three round trips).
const RESEND_WINDOW: Duration = Duration::from_secs(1);

/// At most this many packets per stream, whatever the rate (about a
/// second of a top layer).
const RESEND_MAX: usize = 256;

/// A packet is sent again at most this many times: a resend lost in turn
/// is asked for again, but a receiver that keeps asking (or a NACK that
/// names one packet thousands of times) gets no more than this, so the
/// resends of a stream stay within a small multiple of its own rate.
const RESENDS_PER_PACKET: u8 = 3;

/// The interceptor: sent packets of NACK streams, by SSRC.
pub(super) struct Resender {
    streams: HashMap<u32, History>,
    counter: Option<metrics::Counter>,
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

impl Resender {
    /// Resends counted by `counter`, if any.
    pub(super) fn new(counter: Option<metrics::Counter>) -> Self {
        Self { streams: HashMap::new(), counter, reads: VecDeque::new(), writes: VecDeque::new() }
    }

    fn on_nack(&mut self, now: Instant, nack: &TransportLayerNack) {
        let Some(history) = self.streams.get_mut(&nack.media_ssrc) else { return };
        let Some(first) = history.packets.front().map(|kept| kept.packet.header.sequence_number) else { return };
        // Each number once per report, however often the report names it
        // (pairs may overlap or repeat), in the order they were sent.
        let mut asked: Vec<u16> = nack.nacks.iter().flat_map(|pair| pair.into_iter()).collect();
        asked.sort_unstable_by_key(|seq| seq.wrapping_sub(first));
        asked.dedup();
        let mut resent = 0;
        for seq in asked {
            if let Some(packet) = history.take_for_resend(seq, now) {
                let message = AttributedPacket::new(Packet::Rtp(packet)).with(Attribute::Retransmission);
                self.writes.push_back(TaggedPacket { now, transport: TransportContext::default(), message });
                resent += 1;
            }
        }
        if let (Some(counter), true) = (&self.counter, resent > 0) {
            counter.increment(resent);
        }
    }
}

/// One stream's packets, oldest first, in sequence order (numbers as
/// offsets from the oldest's, modulo 2^16).
#[derive(Default)]
struct History {
    packets: VecDeque<Kept>,
}

/// A sent packet, when it was sent and how often it was sent again.
struct Kept {
    sent: Instant,
    resends: u8,
    packet: rtc::rtp::Packet,
}

impl History {
    fn add(&mut self, now: Instant, packet: &rtc::rtp::Packet) {
        let seq = packet.header.sequence_number;
        if let Some(last) = self.packets.back() {
            let ahead = seq.wrapping_sub(last.packet.header.sequence_number);
            if ahead == 0 {
                return;
            }
            if ahead >= 1 << 15 {
                // Behind the newest: a numbering that started again. What
                // is kept belongs to the old one.
                self.packets.clear();
            }
        }
        while self.packets.front().is_some_and(|kept| now.saturating_duration_since(kept.sent) > RESEND_WINDOW)
            || self.packets.len() >= RESEND_MAX
        {
            self.packets.pop_front();
        }
        self.packets.push_back(Kept { sent: now, resends: 0, packet: packet.clone() });
    }

    /// A copy of the packet numbered `seq` to send again, if it was sent
    /// within the window before `now` and has resends left; counted as
    /// sent again.
    fn take_for_resend(&mut self, seq: u16, now: Instant) -> Option<rtc::rtp::Packet> {
        let first = self.packets.front()?.packet.header.sequence_number;
        let offset = |kept: &Kept| kept.packet.header.sequence_number.wrapping_sub(first);
        let wanted = seq.wrapping_sub(first);
        // Without gaps, the packet is at its offset; with gaps, before it.
        let at = usize::from(wanted);
        let index = match self.packets.get(at) {
            Some(kept) if kept.packet.header.sequence_number == seq => at,
            _ => self.packets.partition_point(|kept| offset(kept) < wanted),
        };
        let kept = self.packets.get_mut(index)?;
        let resend = kept.packet.header.sequence_number == seq
            && now.saturating_duration_since(kept.sent) <= RESEND_WINDOW
            && kept.resends < RESENDS_PER_PACKET;
        resend.then(|| {
            kept.resends += 1;
            kept.packet.clone()
        })
    }
}

/// Whether a stream negotiated generic NACK (`nack` without a parameter;
/// `nack pli` is a keyframe request).
fn negotiated_nack(info: &StreamInfo) -> bool {
    info.rtcp_feedback.iter().any(|fb| fb.typ == "nack" && fb.parameter.is_empty())
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for Resender {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            for nack in packets.iter().filter_map(|p| p.as_any().downcast_ref::<TransportLayerNack>()) {
                self.on_nack(msg.now, nack);
            }
        }
        self.reads.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(packet) = &msg.message.packet {
            if let Some(history) = self.streams.get_mut(&packet.header.ssrc) {
                history.add(msg.now, packet);
            }
        }
        self.writes.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.writes.pop_front()
    }
}

impl Interceptor for Resender {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        if negotiated_nack(info) {
            self.streams.entry(info.ssrc).or_default();
        }
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.streams.remove(&info.ssrc);
    }

    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use rtc::interceptor::RTCPFeedback;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair;

    use super::*;

    const SSRC: u32 = 0x5eed;

    fn stream(ssrc: u32, feedback: &[(&str, &str)]) -> StreamInfo {
        StreamInfo {
            ssrc,
            rtcp_feedback: feedback
                .iter()
                .map(|(typ, parameter)| RTCPFeedback { typ: (*typ).to_owned(), parameter: (*parameter).to_owned() })
                .collect(),
            ..Default::default()
        }
    }

    fn rtp(ssrc: u32, seq: u16) -> rtc::rtp::Packet {
        let mut packet = rtc::rtp::Packet::default();
        packet.header.ssrc = ssrc;
        packet.header.sequence_number = seq;
        packet.payload = vec![seq as u8; 3].into();
        packet
    }

    fn tagged(now: Instant, packet: Packet) -> TaggedPacket {
        TaggedPacket { now, transport: TransportContext::default(), message: AttributedPacket::new(packet) }
    }

    fn send(r: &mut Resender, now: Instant, ssrc: u32, seq: u16) {
        r.handle_write(tagged(now, Packet::Rtp(rtp(ssrc, seq)))).expect("write");
        let out = r.poll_write().expect("passed on");
        assert!(!out.message.has(&Attribute::Retransmission));
    }

    /// NACKs `seqs` of `ssrc` at `now`, one pair each; the sequence
    /// numbers sent again.
    fn nack(r: &mut Resender, now: Instant, ssrc: u32, seqs: &[u16]) -> Vec<u16> {
        report(r, now, ssrc, seqs.iter().map(|&s| NackPair::new(s)).collect())
    }

    /// A NACK of `ssrc` with these pairs at `now`; the sequence numbers
    /// sent again.
    fn report(r: &mut Resender, now: Instant, ssrc: u32, nacks: Vec<NackPair>) -> Vec<u16> {
        let report = TransportLayerNack { sender_ssrc: 1, media_ssrc: ssrc, nacks };
        r.handle_read(tagged(now, Packet::Rtcp(vec![Box::new(report)]))).expect("read");
        assert!(r.poll_read().is_some(), "the report goes on up the chain");
        std::iter::from_fn(|| r.poll_write())
            .map(|out| {
                assert!(out.message.has(&Attribute::Retransmission));
                match out.message.packet {
                    Packet::Rtp(p) => {
                        assert_eq!(p.header.ssrc, ssrc, "on the stream's own SSRC");
                        assert_eq!(p.payload[0], p.header.sequence_number as u8, "the packet as sent");
                        p.header.sequence_number
                    }
                    _ => panic!("only RTP is sent again"),
                }
            })
            .collect()
    }

    fn resender() -> Resender {
        let mut r = Resender::new(None);
        r.bind_local_stream(&stream(SSRC, &[("nack", ""), ("nack", "pli")]));
        r
    }

    /// A resender that has just sent packets 10 to 19, and when.
    fn sent_10_to_19() -> (Resender, Instant) {
        let mut r = resender();
        let t0 = Instant::now();
        for seq in 10..20 {
            send(&mut r, t0, SSRC, seq);
        }
        (r, t0)
    }

    #[test]
    fn packets_asked_for_within_the_window_are_sent_again_once_per_ask() {
        let (mut r, t0) = sent_10_to_19();
        assert_eq!(nack(&mut r, t0, SSRC, &[12, 15, 19]), [12, 15, 19]);
        // One pair and its bitmap: 13, then 14, 15 and 17 (bits 0, 1 and 3).
        let pairs = vec![NackPair { packet_id: 13, lost_packets: 0b1011 }];
        assert_eq!(report(&mut r, t0, SSRC, pairs), [13, 14, 15, 17]);
        // Never sent, not yet sent, other streams: nothing.
        assert!(nack(&mut r, t0, SSRC, &[9, 20, 40_000]).is_empty());
        assert!(nack(&mut r, t0, SSRC + 1, &[12]).is_empty());
    }

    #[test]
    fn a_packet_named_many_times_is_sent_once_per_report_and_at_most_its_share_of_times() {
        let (mut r, t0) = sent_10_to_19();
        // One report naming 12 a thousand times, 13 twice (once as a pair,
        // once in 12's bitmap): each is sent once.
        let mut pairs = vec![NackPair::new(12); 1000];
        pairs.push(NackPair::new(13));
        pairs.push(NackPair { packet_id: 12, lost_packets: 0b1 });
        assert_eq!(report(&mut r, t0, SSRC, pairs), [12, 13]);
        // Asked again (the resend was lost too): sent again, up to the cap.
        for _ in 1..RESENDS_PER_PACKET {
            assert_eq!(nack(&mut r, t0, SSRC, &[12]), [12]);
        }
        assert!(nack(&mut r, t0, SSRC, &[12]).is_empty(), "no more than {RESENDS_PER_PACKET} times");
        assert_eq!(nack(&mut r, t0, SSRC, &[12, 14]), [14], "other packets keep their own count");
    }

    #[test]
    fn a_packet_older_than_the_window_is_not_sent_again() {
        let mut r = resender();
        let t0 = Instant::now();
        send(&mut r, t0, SSRC, 1);
        send(&mut r, t0 + Duration::from_millis(600), SSRC, 2);
        let late = t0 + RESEND_WINDOW + Duration::from_millis(1);
        // Still kept (no packet since pushed it out), but too old to send.
        assert_eq!(nack(&mut r, late, SSRC, &[1, 2]), [2]);
        // The next packet pushes it out.
        send(&mut r, late, SSRC, 3);
        assert_eq!(r.streams[&SSRC].packets.len(), 2);
        assert_eq!(nack(&mut r, late, SSRC, &[1, 2, 3]), [2, 3]);
    }

    #[test]
    fn a_fast_stream_keeps_at_most_its_cap() {
        let mut r = resender();
        let t0 = Instant::now();
        let n = RESEND_MAX as u16 + 50;
        for seq in 0..n {
            send(&mut r, t0, SSRC, seq.wrapping_add(65_400));
        }
        assert_eq!(r.streams[&SSRC].packets.len(), RESEND_MAX);
        let oldest_kept = (n - RESEND_MAX as u16).wrapping_add(65_400);
        assert_eq!(nack(&mut r, t0, SSRC, &[oldest_kept.wrapping_sub(1), oldest_kept]), [oldest_kept]);
        // Across the wrap of the numbers.
        assert_eq!(nack(&mut r, t0, SSRC, &[65_535, 0, 1]), [65_535, 0, 1]);
    }

    #[test]
    fn gaps_and_a_new_numbering_are_found_or_dropped() {
        let mut r = resender();
        let t0 = Instant::now();
        for seq in [100, 101, 105, 106, 200] {
            send(&mut r, t0, SSRC, seq);
        }
        assert_eq!(nack(&mut r, t0, SSRC, &[101, 102, 105, 106, 199, 200]), [101, 105, 106, 200]);
        // A repeat of the newest number is not kept twice.
        send(&mut r, t0, SSRC, 200);
        assert_eq!(r.streams[&SSRC].packets.len(), 5);
        // Numbers far behind: a new numbering, the old packets are let go.
        send(&mut r, t0, SSRC, 7);
        assert_eq!(nack(&mut r, t0, SSRC, &[100, 200, 7]), [7]);
        assert_eq!(r.streams[&SSRC].packets.len(), 1);
    }

    #[test]
    fn only_streams_that_negotiated_nack_are_kept_and_a_bound_stream_costs_nothing_until_it_sends() {
        let mut r = Resender::new(None);
        r.bind_local_stream(&stream(1, &[("nack", "")]));
        r.bind_local_stream(&stream(2, &[("nack", "pli"), ("goog-remb", "")]));
        assert_eq!(r.streams[&1].packets.capacity(), 0);
        let t0 = Instant::now();
        send(&mut r, t0, 1, 5);
        send(&mut r, t0, 2, 5);
        send(&mut r, t0, 3, 5);
        assert_eq!(r.streams.len(), 1);
        assert_eq!(nack(&mut r, t0, 1, &[5]), [5]);
        assert!(nack(&mut r, t0, 2, &[5]).is_empty());
        r.unbind_local_stream(&stream(1, &[("nack", "")]));
        assert!(r.streams.is_empty());
        assert!(nack(&mut r, t0, 1, &[5]).is_empty());
    }
}
