//! The signalling wire protocol: JSON text frames on the room WebSocket
//! (`/ws/{code}?session=…`). Defined once, used by the browser and the server.

use serde::{Deserialize, Serialize};

use crate::model::{ChatMessage, LeaveReason, ParticipantId, ParticipantView, SessionId};

/// One trickled ICE candidate, as `RTCIceCandidateInit` carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceCandidate {
    /// The `candidate:…` attribute value (empty: end of candidates).
    pub candidate: String,
    /// The media section it belongs to, by mid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    /// The media section it belongs to, by index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_m_line_index: Option<u16>,
    /// The ICE generation's username fragment, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<String>,
}

/// Longest candidate line we read.
pub const MAX_CANDIDATE_BYTES: usize = 512;

/// The parts of an ICE candidate line (RFC 8839 `candidate-attribute`)
/// that decide whether to use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidateLine<'a> {
    /// 1 = RTP (bundled and RTCP-multiplexed, the only one used).
    pub component: u16,
    /// `udp` or `tcp`, lower case.
    pub transport: String,
    /// An IP address, or a host name (browsers hide their own addresses
    /// behind `….local` mDNS names).
    pub address: &'a str,
    /// The port at that address.
    pub port: u16,
    /// `host`, `srflx`, `prflx` or `relay`.
    pub kind: &'a str,
}

impl IceCandidate {
    /// Reads the candidate line; `None` for anything that is not one
    /// (including the empty end-of-candidates marker).
    pub fn line(&self) -> Option<CandidateLine<'_>> {
        let text = self.candidate.as_str();
        if text.len() > MAX_CANDIDATE_BYTES {
            return None;
        }
        let text = text.strip_prefix("a=").unwrap_or(text);
        let mut fields = text.strip_prefix("candidate:")?.split_ascii_whitespace();
        let foundation = fields.next()?;
        if foundation.is_empty()
            || foundation.len() > 32
            || !foundation.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
        {
            return None;
        }
        let component: u16 = fields.next()?.parse().ok()?;
        let transport = fields.next()?.to_ascii_lowercase();
        if transport != "udp" && transport != "tcp" {
            return None;
        }
        let _priority: u32 = fields.next()?.parse().ok()?;
        let address = fields.next()?;
        let port: u16 = fields.next()?.parse().ok()?;
        if fields.next()? != "typ" {
            return None;
        }
        let kind = fields.next()?;
        if !matches!(kind, "host" | "srflx" | "prflx" | "relay") {
            return None;
        }
        Some(CandidateLine { component, transport, address, port, kind })
    }
}

/// Largest frame either side accepts; a larger one closes the socket.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// How often the browser pings; the server answers each ping with a pong.
pub const HEARTBEAT_INTERVAL_MS: u32 = 1_000;

/// Silence after which the page treats its socket as dead (the server's
/// default suspect time)...
pub const DEAD_AFTER_MS: f64 = 3_000.0;
/// ...unless the media transport still receives (within
/// [`TRANSPORT_FRESH_MS`]): the server is alive and the link is only slow
/// (a weak downlink full of audio queues the socket's bytes), and a new
/// socket would cross the same link, later. Such a socket is kept up to
/// this long.
pub const SLOW_SOCKET_MS: f64 = 30_000.0;
/// How recently the transport must have received for a quiet socket to be
/// kept.
pub const TRANSPORT_FRESH_MS: f64 = 1_500.0;

/// Whether the page gives up a socket that has been quiet for `quiet_ms`,
/// when the media transport last received `transport_quiet_ms` ago.
pub fn socket_lost(quiet_ms: f64, transport_quiet_ms: f64) -> bool {
    let carried = transport_quiet_ms < TRANSPORT_FRESH_MS;
    quiet_ms > DEAD_AFTER_MS && !(carried && quiet_ms < SLOW_SOCKET_MS)
}

/// The camera's simulcast layers (quarter, half and full size, smallest
/// first, as the server's offer lists their `rid`s).
pub const CAMERA_LAYERS: usize = 3;

/// How many of the camera's layers a browser sends of a capture of `width`
/// × `height` pixels. Chromium's libwebrtc sends three simulcast streams of
/// a picture from 960×540 pixels up, two from 480×270, one below, and the
/// ones it keeps are the first of the list: without this, a 640×480 camera
/// would be seen at half its size at most and a 320×240 one at a quarter.
pub fn camera_layers_sent(width: u32, height: u32) -> usize {
    let pixels = u64::from(width) * u64::from(height);
    match pixels {
        p if p >= 960 * 540 => 3,
        p if p >= 480 * 270 => 2,
        _ => 1,
    }
}

/// Which of the usual layers (0 quarter, 1 half, 2 full size) the camera's
/// encoding `i` (smallest first) is set up as when `sent` of them are sent:
/// the largest `sent`, so that the largest layer sent is the full picture.
/// Encodings past `sent` (turned off) keep the full size.
pub fn camera_layer_setting(i: usize, sent: usize) -> usize {
    let sent = sent.clamp(1, CAMERA_LAYERS);
    (i + CAMERA_LAYERS - sent).min(CAMERA_LAYERS - 1)
}

/// Server → browser.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMsg {
    /// The room's live state: the admitted participants in arrival order,
    /// raised hands (earliest first), the active speaker, and (for admins
    /// only; empty for everyone else) the requests waiting for approval.
    /// Sent on connect and on every change.
    Roster {
        /// Everybody in the call, in order of arrival.
        participants: Vec<ParticipantView>,
        /// Raised hands, earliest first.
        #[serde(default)]
        hands: Vec<ParticipantId>,
        /// Who speaks now.
        #[serde(default)]
        speaker: Option<ParticipantId>,
        /// Waiting to be let in (admins only).
        #[serde(default)]
        pending: Vec<ParticipantView>,
    },
    /// The active speaker changed (`None`: nobody is speaking).
    Speaker {
        /// The new speaker.
        participant: Option<ParticipantId>,
    },
    /// A new chat message in the room (sent through the `chat` server
    /// function; everybody admitted hears it, the sender included).
    Chat {
        /// The message.
        message: ChatMessage,
    },
    /// The room's recent messages, oldest first: sent once the socket's
    /// session is in the call (on every connect, so a page may hear a
    /// message twice; the ids tell).
    ChatHistory {
        /// The messages.
        messages: Vec<ChatMessage>,
    },
    /// Your session ended on the server; the page must tear down.
    SessionEnded {
        /// Why it ended.
        reason: LeaveReason,
    },
    /// Answer to [`ClientMsg::Ping`].
    Pong,
    /// The server is the only offerer: the first offer carries two receive
    /// transceivers (audio, video) for the caller's own media plus one send
    /// transceiver per track of everyone else; later offers renegotiate as
    /// people arrive and leave. Each forwarded track's stream id is its
    /// publisher's `ParticipantId`, so the page knows whose tile it feeds.
    Offer {
        /// The offer's SDP.
        sdp: String,
    },
    /// A server ICE candidate.
    IceCandidate {
        /// The candidate.
        candidate: IceCandidate,
    },
    /// The streams whose video is paused for this page because its
    /// connection cannot carry even their smallest layer (audio goes on);
    /// sent when the list changes, empty once everything fits again.
    VideoPaused {
        /// Stream ids (a participant's, or its screen share's).
        streams: Vec<String>,
    },
    /// How many of its camera's simulcast layers, smallest first, the page
    /// is to send: the others no subscriber's tile wants. Sent when that
    /// changes (all three at first).
    CameraLayers {
        /// 1 to 3.
        send: u8,
    },
}

/// Browser → server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ClientMsg {
    /// Heartbeat.
    Ping,
    /// The answer to the latest [`ServerMsg::Offer`].
    Answer {
        /// The answer's SDP.
        sdp: String,
    },
    /// A browser ICE candidate.
    IceCandidate {
        /// The candidate.
        candidate: IceCandidate,
    },
    /// The browser's media connection dropped (`disconnected`/`failed`, or
    /// its network changed): offer again with new ICE credentials, on the
    /// same session.
    RestartIce,
    /// The widths the page shows each stream's video at, so that each is
    /// sent the simulcast layer that fits its tile (a thumbnail never gets
    /// the full one). Sent when they change.
    Views {
        /// One per video element with a remote stream (at most [`MAX_VIEWS`]).
        views: Vec<TileView>,
    },
}

/// The most [`ClientMsg::Views`] entries the server takes (the rest are ignored).
pub const MAX_VIEWS: usize = 64;

/// One stream's tile, as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TileView {
    /// The stream id (a participant id, or its screen share's).
    pub stream: String,
    /// Width in device pixels; 0 when the video is not shown.
    pub width: u32,
}

/// The session a leave beacon names: its body is `session=<id>` (form
/// encoded, any content type, as `navigator.sendBeacon` sends it). `None`
/// for anything else.
pub fn beacon_session(body: &str) -> Option<SessionId> {
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "session")
        .map(|(_, v)| v.trim())
        .filter(|v| SessionId::is_well_formed(v))
        .map(SessionId::new)
}

/// WebSocket close codes the server uses (4000–4999 is the application range).
pub mod close_code {
    /// The session is unknown or not the caller's.
    pub const UNKNOWN_SESSION: u16 = 4001;
    /// A frame was malformed, not UTF-8 text, over
    /// [`super::MAX_FRAME_BYTES`], or broke the WebSocket protocol.
    pub const BAD_FRAME: u16 = 4002;
    /// The session ended (leave, kick, replacement, shutdown).
    pub const SESSION_ENDED: u16 = 4003;
    /// From the page: it is going away (`pagehide`: tab or window closed,
    /// refresh, another site). The same leave as the beacon, over the
    /// connection that is already open, so it arrives first.
    pub const LEAVING: u16 = 4004;
    /// The socket did not take its messages in time (a frozen tab, a
    /// stalled network): the server dropped it; the session follows the
    /// loss path (the page may reconnect within the grace window).
    pub const TOO_SLOW: u16 = 4005;
    /// A newer socket of the same session took over (one live socket per
    /// session).
    pub const REPLACED: u16 = 4006;
    /// The session is gone with its node (stopped, or dead and reaped), not
    /// by the person's doing: the page joins the room again at once.
    pub const MOVED: u16 = 4007;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_camera_sends_fewer_layers_and_the_largest_sent_is_full_size() {
        assert_eq!(camera_layers_sent(1280, 720), 3);
        assert_eq!(camera_layers_sent(960, 540), 3);
        assert_eq!(camera_layers_sent(640, 480), 2);
        assert_eq!(camera_layers_sent(480, 270), 2);
        assert_eq!(camera_layers_sent(320, 240), 1);
        assert_eq!(camera_layers_sent(160, 120), 1);
        assert_eq!(camera_layers_sent(0, 0), 1);
        assert_eq!(camera_layers_sent(u32::MAX, u32::MAX), 3);
        // Three sent: quarter, half, full.
        assert_eq!((0..3).map(|i| camera_layer_setting(i, 3)).collect::<Vec<_>>(), [0, 1, 2]);
        // Two: half and full; the third, off, full.
        assert_eq!((0..3).map(|i| camera_layer_setting(i, 2)).collect::<Vec<_>>(), [1, 2, 2]);
        // One: the full picture.
        assert_eq!((0..3).map(|i| camera_layer_setting(i, 1)).collect::<Vec<_>>(), [2, 2, 2]);
        // Out of range counts are clamped.
        assert_eq!(camera_layer_setting(0, 0), 2);
        assert_eq!(camera_layer_setting(0, 9), 0);
    }

    fn candidate(line: &str) -> IceCandidate {
        IceCandidate { candidate: line.into(), sdp_mid: None, sdp_m_line_index: None, username_fragment: None }
    }

    #[test]
    fn a_quiet_socket_is_kept_only_while_media_arrives() {
        // Heard recently: kept.
        assert!(!socket_lost(DEAD_AFTER_MS, f64::INFINITY));
        // Quiet, nothing on the transport either: lost.
        assert!(socket_lost(DEAD_AFTER_MS + 1.0, f64::INFINITY));
        assert!(socket_lost(DEAD_AFTER_MS + 1.0, TRANSPORT_FRESH_MS));
        // Quiet while media arrives: kept, up to the slow-socket limit.
        assert!(!socket_lost(DEAD_AFTER_MS + 1.0, 0.0));
        assert!(!socket_lost(SLOW_SOCKET_MS - 1.0, TRANSPORT_FRESH_MS - 1.0));
        assert!(socket_lost(SLOW_SOCKET_MS, 0.0));
    }

    #[test]
    fn candidate_lines_are_read() {
        let c = candidate(
            "candidate:842163049 1 udp 1677729535 203.0.113.5 54321 typ srflx raddr 10.0.0.2 rport 5000 generation 0",
        );
        let line = c.line().expect("a candidate");
        assert_eq!(
            (line.component, line.transport.as_str(), line.address, line.port, line.kind),
            (1, "udp", "203.0.113.5", 54321, "srflx")
        );
        assert!(candidate("a=candidate:1 1 UDP 2122260223 127.0.0.1 4000 typ host").line().is_some());
        for bad in [
            "",
            "candidate:",
            "candidate:1 1 udp x 1.2.3.4 1 typ host",
            "candidate:1 1 sctp 1 1.2.3.4 1 typ host",
            "candidate:1 1 udp 1 1.2.3.4 70000 typ host",
            "candidate:1 1 udp 1 1.2.3.4 1 type host",
            "candidate:1 1 udp 1 1.2.3.4 1 typ sneaky",
            "not a candidate",
        ] {
            assert!(candidate(bad).line().is_none(), "{bad:?}");
        }
        assert!(candidate(&format!("candidate:1 1 udp 1 1.2.3.4 1 typ host {}", "x".repeat(600))).line().is_none());
    }

    #[test]
    fn beacon_bodies_name_one_well_formed_session() {
        assert_eq!(beacon_session("session=abc123"), Some(SessionId::new("abc123")));
        assert_eq!(beacon_session("x=1&session=abc123"), Some(SessionId::new("abc123")));
        assert_eq!(beacon_session("session="), None);
        assert_eq!(beacon_session("session=a%20b"), None);
        assert_eq!(beacon_session("nothing"), None);
    }

    #[test]
    fn messages_have_a_stable_shape() {
        let json = serde_json::to_string(&ClientMsg::Ping).unwrap();
        assert_eq!(json, r#"{"type":"ping"}"#);
        let msg: ServerMsg = serde_json::from_str(r#"{"type":"session-ended","reason":"kicked"}"#).unwrap();
        assert_eq!(msg, ServerMsg::SessionEnded { reason: LeaveReason::Kicked });
    }
}
