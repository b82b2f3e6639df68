//! How every peer connection of the SFU (and of the headless client) is
//! built: codecs, header extensions, interceptors, ICE settings. One place,
//! so the server and the test client negotiate the same payload types.
//!
//! Header extensions: besides the library defaults (mid, rid, transport-cc),
//! audio carries the RFC 6464 audio level ([`AUDIO_LEVEL_URI`]), which the
//! SFU reads from each publisher's packets to pick the active speaker. The
//! server offers it; browsers (and [`crate::loadgen`]) answer with it.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::NackGeneratorBuilder;
use rtc::interceptor::{Attribute, Interceptor, Packet, Slot, StreamInfo, TaggedPacket};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::{MediaEngine, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::sansio::Protocol;
use webrtc::peer_connection::{PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, Registry};

use rtc::interceptor::{CongestionControlBuilder, TwccSenderBuilder};

use crate::config::PortRange;

use super::estimate::{Downlink, Estimator};
use super::resend::Resender;
use super::MediaError;

/// Payload types of the codecs we offer; the server is always the offerer,
/// so every connection uses exactly these.
pub const PT_OPUS: u8 = 111;
/// VP8's payload type (Opus's is [`PT_OPUS`]).
pub const PT_VP8: u8 = 96;
/// H.264's payload type (constrained baseline, packetization mode 1).
pub const PT_H264: u8 = 102;

/// The RFC 6464 client-to-mixer audio level header extension.
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// Reads an RFC 6464 audio level extension payload: `(level, voice)`, the
/// level in −dBov (0 = loudest, 127 = silence). `None` for an empty payload.
pub fn parse_audio_level(payload: &[u8]) -> Option<(u8, bool)> {
    let first = *payload.first()?;
    Some((first & 0x7f, first & 0x80 != 0))
}

/// Acceptance waits for relayed and peer-reflexive pairs (library: 2 000 and 1 000 ms).
const RELAY_WAIT_MS: u64 = 500;
const PRFLX_WAIT_MS: u64 = 300;

/// Where and how peer connections bind and time out.
#[derive(Debug, Clone)]
pub struct IceSettings {
    /// Addresses to bind (and so to announce); never a wildcard.
    pub addrs: Vec<IpAddr>,
    /// UDP ports to pick from; `None` = an ephemeral port.
    pub ports: Option<PortRange>,
    /// ICE `disconnected` after this long without traffic.
    pub disconnected: Duration,
    /// ICE `failed` this long after `disconnected`.
    pub failed: Duration,
    /// Keepalive interval.
    pub keepalive: Duration,
}

impl IceSettings {
    /// Loopback on an ephemeral port, with the library's default timeouts.
    pub fn loopback() -> Self {
        Self {
            addrs: vec![IpAddr::from([127, 0, 0, 1])],
            ports: None,
            disconnected: Duration::from_secs(3),
            failed: Duration::from_secs(7),
            keepalive: Duration::from_secs(1),
        }
    }
}

fn video_feedback() -> Vec<RTCPFeedback> {
    [("goog-remb", ""), ("ccm", "fir"), ("nack", ""), ("nack", "pli")]
        .into_iter()
        .map(|(typ, parameter)| RTCPFeedback { typ: typ.to_owned(), parameter: parameter.to_owned() })
        .collect()
}

fn codec(mime: &str, clock_rate: u32, channels: u16, fmtp: &str, rtcp_feedback: Vec<RTCPFeedback>) -> RTCRtpCodec {
    RTCRtpCodec { mime_type: mime.to_owned(), clock_rate, channels, sdp_fmtp_line: fmtp.to_owned(), rtcp_feedback }
}

/// A video codec the engine knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// VP8 (what browsers send by default).
    Vp8,
    /// Constrained baseline, packetization mode 1.
    H264,
}

impl VideoCodec {
    /// Every one, in the engine's order.
    pub const ALL: [Self; 2] = [Self::Vp8, Self::H264];

    /// From its name in the settings (`vp8`, `h264`, any case).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name().eq_ignore_ascii_case(name))
    }

    /// Its name in the settings.
    pub fn name(self) -> &'static str {
        match self {
            Self::Vp8 => "vp8",
            Self::H264 => "h264",
        }
    }

    /// Its parameters, as registered and offered.
    pub fn parameters(self) -> RTCRtpCodecParameters {
        match self {
            Self::Vp8 => RTCRtpCodecParameters {
                rtp_codec: codec(MIME_TYPE_VP8, 90_000, 0, "", video_feedback()),
                payload_type: PT_VP8,
            },
            Self::H264 => RTCRtpCodecParameters {
                rtp_codec: codec(
                    MIME_TYPE_H264,
                    90_000,
                    0,
                    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
                    video_feedback(),
                ),
                payload_type: PT_H264,
            },
        }
    }
}

/// What a line that receives video offers, in this order. A browser sends
/// the first codec of the offer that it supports (Chrome does so whatever
/// order its answer lists), and the receiver finds a packet's codec by
/// payload type in this list.
pub fn offered_video(order: &[VideoCodec]) -> Vec<RTCRtpCodecParameters> {
    order.iter().map(|c| c.parameters()).collect()
}

/// Opus and every [`VideoCodec`]; the audio level extension on audio, in
/// every direction.
fn media_engine() -> Result<MediaEngine, MediaError> {
    let mut engine = MediaEngine::default();
    engine.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: codec(MIME_TYPE_OPUS, 48_000, 2, "minptime=10;useinbandfec=1", vec![]),
            payload_type: PT_OPUS,
        },
        RtpCodecKind::Audio,
    )?;
    for video in VideoCodec::ALL {
        engine.register_codec(video.parameters(), RtpCodecKind::Video)?;
    }
    engine.register_header_extension(
        RTCRtpHeaderExtensionCapability { uri: AUDIO_LEVEL_URI.to_owned() },
        RtpCodecKind::Audio,
        None,
    )?;
    Ok(engine)
}

/// Ports of a configured range are handed out round-robin; a port found
/// busy is skipped.
#[derive(Debug, Default)]
pub struct PortCursor(AtomicUsize);

impl PortCursor {
    fn pick(&self, addrs: &[IpAddr], range: PortRange) -> Option<u16> {
        let span = usize::from(range.max - range.min) + 1;
        for _ in 0..span {
            let offset = self.0.fetch_add(1, Ordering::Relaxed) % span;
            let port = range.min + offset as u16;
            // Probe every address; the sockets close again at once.
            let free = addrs.iter().all(|ip| UdpSocket::bind(SocketAddr::new(*ip, port)).is_ok());
            if free {
                return Some(port);
            }
        }
        None
    }
}

/// Builds one peer connection bound to the configured addresses. With a
/// `downlink` (the SFU's side of a connection), what it sends is numbered
/// for transport-wide feedback, the far end's feedback drives
/// [`Estimator`], which publishes there how much the far end can take, and
/// the packets it sends again are counted ([`crate::metrics::PACKETS_RESENT`]).
pub async fn build_peer_connection(
    ice: &IceSettings,
    ports: &PortCursor,
    handler: Arc<dyn PeerConnectionEventHandler>,
    downlink: Option<Downlink>,
) -> Result<Arc<dyn PeerConnection>, MediaError> {
    let Some(range) = ice.ports else {
        return build_on(ice, 0, handler, downlink).await;
    };
    // A port probed free may be taken before we bind it: try a few.
    let mut last = MediaError::NoPort(format!("{}-{}", range.min, range.max));
    for _ in 0..3 {
        let Some(port) = ports.pick(&ice.addrs, range) else { break };
        match build_on(ice, port, handler.clone(), downlink.clone()).await {
            Ok(pc) => return Ok(pc),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The library's default interceptors (NACK both ways, transport-wide
/// feedback for what we receive, RTCP reports, the simulcast header
/// extensions), with our own answer to NACKs ([`Resender`]: sent packets
/// kept by age, not in a fixed ring per stream; its resends counted by
/// `resent`). The video codecs list the NACK feedback themselves
/// ([`video_feedback`]).
fn interceptors(engine: &mut MediaEngine, resent: Option<metrics::Counter>) -> Result<Registry, MediaError> {
    configure_simulcast_extension_headers(engine)?;
    let registry = Registry::new()
        .with(Slot::NackResponder, Resender::new(resent))
        .with(Slot::NackGenerator, NackGeneratorBuilder::new().build());
    let registry = configure_twcc_receiver_only(registry, engine)?;
    Ok(configure_rtcp_reports(registry))
}

async fn build_on(
    ice: &IceSettings,
    port: u16,
    handler: Arc<dyn PeerConnectionEventHandler>,
    downlink: Option<Downlink>,
) -> Result<Arc<dyn PeerConnection>, MediaError> {
    let addrs: Vec<SocketAddr> = ice.addrs.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
    let mut engine = media_engine()?;
    let resent = downlink.is_some().then(|| metrics::counter!(crate::metrics::PACKETS_RESENT));
    let mut registry = interceptors(&mut engine, resent)?.with(Slot::from(14_000), KeyframeRequests::default());
    if let Some(downlink) = downlink {
        // The defaults already offer the transport-wide sequence extension
        // and feedback (for what we receive); this numbers what we send and
        // reads the feedback about it. No pacer: the layer choice keeps
        // what we send under the estimate.
        registry = registry
            .with(Slot::TwccSender, TwccSenderBuilder::new().build())
            .with(Slot::CongestionControl, CongestionControlBuilder::new(Estimator::new(downlink)).build());
    }
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .with_include_loopback_candidate(true)
        .with_ice_timeouts(Some(ice.disconnected), Some(ice.failed), Some(ice.keepalive))
        // How long the SFU (the controlling side) waits, once checks run,
        // before it settles for a pair of this kind when no better one has
        // answered. The library's 2 s for relayed pairs is the whole extra
        // join time of a browser behind TURN; a direct pair, when there is
        // one, answers within a round trip anyway.
        .with_relay_acceptance_min_wait(Some(Duration::from_millis(RELAY_WAIT_MS)))
        .with_prflx_acceptance_min_wait(Some(Duration::from_millis(PRFLX_WAIT_MS)))
        .build();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(engine)
        .with_setting_engine(settings)
        .with_interceptor_registry(registry)
        .with_handler(handler)
        .with_udp_addrs(addrs)
        .build()
        .await?;
    Ok(Arc::new(pc))
}

/// Whether an RTCP packet asks for a keyframe.
pub fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

/// Hands inbound PLI/FIR to the application (the SFU relays them to the
/// publisher); every other inbound RTCP stops at the end of the chain as
/// usual. Outbound traffic passes untouched.
#[derive(Default)]
struct KeyframeRequests {
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequests {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let requests: Vec<Box<dyn rtc::rtcp::Packet>> =
                packets.iter().filter(|p| is_keyframe_request(p.as_ref())).cloned().collect();
            if !requests.is_empty() {
                msg.message.packet = Packet::Rtcp(requests);
                msg.message.add(Attribute::DeliverToApplication);
            }
        }
        self.reads.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.writes.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.writes.pop_front()
    }
}

impl Interceptor for KeyframeRequests {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_the_range_and_skip_busy_ones() {
        let lo = IpAddr::from([127, 0, 0, 1]);
        let busy = UdpSocket::bind(SocketAddr::new(lo, 0)).expect("bind");
        let port = busy.local_addr().expect("addr").port();
        let range = PortRange { min: port, max: port.saturating_add(1) };
        let cursor = PortCursor::default();
        for _ in 0..4 {
            let picked = cursor.pick(&[lo], range);
            assert_ne!(picked, Some(port), "a busy port is skipped");
            assert!(picked.is_none_or(|p| range.range().contains(&p)));
        }
        let only_busy = PortRange { min: port, max: port };
        assert_eq!(cursor.pick(&[lo], only_busy), None);
    }

    #[test]
    fn audio_levels_are_read_from_the_extension_payload() {
        assert_eq!(parse_audio_level(&[0x80 | 30]), Some((30, true)));
        assert_eq!(parse_audio_level(&[127]), Some((127, false)));
        assert_eq!(parse_audio_level(&[0xff, 0x00]), Some((127, true)));
        assert_eq!(parse_audio_level(&[]), None);
    }
}
