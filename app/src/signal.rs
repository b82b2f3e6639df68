//! The signalling wire protocol: JSON text frames on the room WebSocket
//! (`/ws/{code}?session=…`). Defined once, used by the browser and the server.

use serde::{Deserialize, Serialize};

use crate::model::{LeaveReason, ParticipantId, ParticipantView};

/// One trickled ICE candidate, as `RTCIceCandidateInit` carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceCandidate {
    pub candidate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_m_line_index: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<String>,
}

/// Largest frame either side accepts; a larger one closes the socket.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// How often the browser pings; the server answers each ping with a pong.
pub const HEARTBEAT_INTERVAL_MS: u32 = 1_000;

/// Server → browser.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMsg {
    /// The room's live state: the admitted participants in arrival order,
    /// raised hands (earliest first), the active speaker, and (for admins
    /// only; empty for everyone else) the requests waiting for approval.
    /// Sent on connect and on every change.
    Roster {
        participants: Vec<ParticipantView>,
        #[serde(default)]
        hands: Vec<ParticipantId>,
        #[serde(default)]
        speaker: Option<ParticipantId>,
        #[serde(default)]
        pending: Vec<ParticipantView>,
    },
    /// The active speaker changed (`None`: nobody is speaking).
    Speaker { participant: Option<ParticipantId> },
    /// Your session ended on the server; the page must tear down.
    SessionEnded { reason: LeaveReason },
    /// Answer to [`ClientMsg::Ping`].
    Pong,
    /// The server is the only offerer: the first offer carries two receive
    /// transceivers (audio, video) for the caller's own media plus one send
    /// transceiver per track of everyone else; later offers renegotiate as
    /// people arrive and leave. Each forwarded track's stream id is its
    /// publisher's `ParticipantId`, so the page knows whose tile it feeds.
    Offer { sdp: String },
    /// A server ICE candidate.
    IceCandidate { candidate: IceCandidate },
}

/// Browser → server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ClientMsg {
    /// Heartbeat.
    Ping,
    /// The answer to the latest [`ServerMsg::Offer`].
    Answer { sdp: String },
    /// A browser ICE candidate.
    IceCandidate { candidate: IceCandidate },
}

/// WebSocket close codes the server uses (4000–4999 is the application range).
pub mod close_code {
    /// The session is unknown or not the caller's.
    pub const UNKNOWN_SESSION: u16 = 4001;
    /// A frame was malformed or over [`super::MAX_FRAME_BYTES`].
    pub const BAD_FRAME: u16 = 4002;
    /// The session ended (leave, kick, replacement, shutdown).
    pub const SESSION_ENDED: u16 = 4003;
    /// From the page: it is going away (`pagehide`: tab or window closed,
    /// refresh, another site). The same leave as the beacon, over the
    /// connection that is already open, so it arrives first.
    pub const LEAVING: u16 = 4004;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_a_stable_shape() {
        let json = serde_json::to_string(&ClientMsg::Ping).unwrap();
        assert_eq!(json, r#"{"type":"ping"}"#);
        let msg: ServerMsg = serde_json::from_str(r#"{"type":"session-ended","reason":"kicked"}"#).unwrap();
        assert_eq!(msg, ServerMsg::SessionEnded { reason: LeaveReason::Kicked });
    }
}
