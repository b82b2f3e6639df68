//! The call store: every piece of call state the page holds, and the one
//! function, [`CallStore::reset`], that returns all of it to empty.

use leptos::prelude::*;

use crate::model::{JoinOutcome, ParticipantId, ParticipantState, ParticipantView, Role, SessionId};
use crate::signal::ServerMsg;

/// The signalling connection as the person sees it (`connection-status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    Connecting,
    Connected,
    Reconnecting,
    Disconnected,
}

impl ConnectionState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionState::Connecting => "connecting",
            ConnectionState::Connected => "connected",
            ConnectionState::Reconnecting => "reconnecting",
            ConnectionState::Disconnected => "disconnected",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            ConnectionState::Connecting => "Connecting…",
            ConnectionState::Connected => "Connected",
            ConnectionState::Reconnecting => "Reconnecting…",
            ConnectionState::Disconnected => "Disconnected",
        }
    }
}

/// The caller's own session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Me {
    pub session_id: SessionId,
    pub participant_id: ParticipantId,
    pub role: Role,
    pub state: ParticipantState,
}

/// All call state of one room page. Copyable handles to signals.
#[derive(Debug, Clone, Copy)]
pub struct CallStore {
    /// `Some` while this page holds a session.
    pub me: RwSignal<Option<Me>>,
    /// The room's roster as last told by the server.
    pub participants: RwSignal<Vec<ParticipantView>>,
    /// The signalling connection's state.
    pub connection: RwSignal<ConnectionState>,
    /// A message for the person that outlives the call (e.g. why it ended).
    pub notice: RwSignal<Option<String>>,
    /// The last call ended because the connection was lost (shown as
    /// `disconnected`, with a way to rejoin).
    pub lost: RwSignal<bool>,
    /// Remote media by stream id (= the publisher's participant id).
    #[cfg(feature = "hydrate")]
    pub streams: RwSignal<std::collections::HashMap<String, web_sys::MediaStream>, LocalStorage>,
    /// Our own camera and microphone while in the call.
    #[cfg(feature = "hydrate")]
    pub local: RwSignal<Option<web_sys::MediaStream>, LocalStorage>,
}

impl Default for CallStore {
    fn default() -> Self {
        Self::new()
    }
}

impl CallStore {
    pub fn new() -> Self {
        Self {
            me: RwSignal::new(None),
            participants: RwSignal::new(Vec::new()),
            connection: RwSignal::new(ConnectionState::Disconnected),
            notice: RwSignal::new(None),
            lost: RwSignal::new(false),
            #[cfg(feature = "hydrate")]
            streams: RwSignal::new_local(std::collections::HashMap::new()),
            #[cfg(feature = "hydrate")]
            local: RwSignal::new_local(None),
        }
    }

    /// Takes the server's answer to a join.
    pub fn enter(&self, outcome: JoinOutcome) {
        self.notice.set(None);
        self.lost.set(false);
        self.participants.set(outcome.roster);
        self.connection.set(ConnectionState::Connecting);
        self.me.set(Some(Me {
            session_id: outcome.session_id,
            participant_id: outcome.participant_id,
            role: outcome.role,
            state: outcome.state,
        }));
    }

    /// Applies one signalling message.
    pub fn apply(&self, msg: ServerMsg) {
        match msg {
            ServerMsg::Roster { participants } => {
                let _ = self.participants.try_set(participants);
            }
            ServerMsg::SessionEnded { reason } => {
                self.reset();
                let _ = self.notice.try_set(Some(format!("You left the meeting ({}).", reason.as_str())));
            }
            // Media negotiation belongs to the peer connection, not the store.
            ServerMsg::Pong | ServerMsg::Offer { .. } | ServerMsg::IceCandidate { .. } => {}
        }
    }

    /// Back to empty: no session, no roster, disconnected. Safe to call
    /// after the owning component is gone (it then does nothing).
    pub fn reset(&self) {
        let _ = self.me.try_set(None);
        let _ = self.participants.try_set(Vec::new());
        let _ = self.connection.try_set(ConnectionState::Disconnected);
        #[cfg(feature = "hydrate")]
        {
            let _ = self.streams.try_set(std::collections::HashMap::new());
            let _ = self.local.try_set(None);
        }
    }

    /// Whether a participant id is the caller's own.
    pub fn is_me(&self, id: &ParticipantId) -> bool {
        self.me.with_untracked(|me| me.as_ref().is_some_and(|m| &m.participant_id == id))
    }
}
