//! The call store: every piece of call state the page holds, and the one
//! function, [`CallStore::reset`], that returns all of it to empty.

use leptos::prelude::*;

use crate::model::{
    ChatMessage, JoinOutcome, LeaveReason, ParticipantId, ParticipantState, ParticipantView, Role, SessionId,
};
use crate::signal::ServerMsg;

/// The signalling connection as the person sees it (`connection-status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// The first socket is opening.
    Connecting,
    /// The socket is open and answering.
    Connected,
    /// The socket was lost; the page is resuming the same session.
    Reconnecting,
    /// No socket and no call (gave up, or never connected).
    Disconnected,
}

impl ConnectionState {
    /// The state as `data-state` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionState::Connecting => "connecting",
            ConnectionState::Connected => "connected",
            ConnectionState::Reconnecting => "reconnecting",
            ConnectionState::Disconnected => "disconnected",
        }
    }

    /// The state as the person reads it.
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
    /// Our session (it authorises leave and the socket).
    pub session_id: SessionId,
    /// Our public handle.
    pub participant_id: ParticipantId,
    /// Admin or member (changes with a hand-over).
    pub role: Role,
    /// In the call, or waiting to be let in.
    pub state: ParticipantState,
}

/// A short notice shown for a few seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toast {
    /// Increasing, for keyed rendering.
    pub id: u64,
    /// What the person reads.
    pub text: String,
}

/// How many notices are shown at once.
const MAX_TOASTS: usize = 3;

/// How many chat messages the page keeps (the oldest go first).
pub const MAX_CHAT_KEPT: usize = 500;

/// What the page tells the person when their session ended on the server.
pub fn ended_message(reason: LeaveReason) -> String {
    match reason {
        LeaveReason::Kicked => "The host removed you from the meeting.".into(),
        LeaveReason::RoomEnded => "The host ended the meeting for everyone.".into(),
        LeaveReason::Denied => "The host declined your request to join.".into(),
        LeaveReason::Expired => "Nobody answered your request to join in time. You can ask again.".into(),
        LeaveReason::Replaced => "You joined this meeting from another tab or window.".into(),
        LeaveReason::NodeShutdown => "The server restarted. Please join again.".into(),
        LeaveReason::IceFailed => {
            "Your audio and video connection could not be kept up, so you left the meeting. Check your network and join again.".into()
        }
        LeaveReason::SocketClosed | LeaveReason::HeartbeatLost => {
            "Your connection to the meeting was lost. Check your network and join again.".into()
        }
        LeaveReason::Reaped => "The server lost track of your session. Please join again.".into(),
        LeaveReason::Moved => "The meeting is now on another server; you are joining it again.".into(),
        LeaveReason::Left | LeaveReason::PageHidden => "You left the meeting.".into(),
    }
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
    /// The session went with its node (stopped, or dead): the page joins
    /// again by itself, showing `reconnecting` meanwhile.
    pub rejoin: RwSignal<bool>,
    /// Raised hands, earliest first.
    pub hands: RwSignal<Vec<ParticipantId>>,
    /// Who is speaking now.
    pub speaker: RwSignal<Option<ParticipantId>>,
    /// Requests to join waiting for approval (sent to admins only).
    pub pending: RwSignal<Vec<ParticipantView>>,
    /// Our own microphone is off.
    pub audio_muted: RwSignal<bool>,
    /// Our own camera is off.
    pub video_muted: RwSignal<bool>,
    /// Short notices (joins, leaves, a new host), oldest first.
    pub toasts: RwSignal<Vec<Toast>>,
    /// The room's chat as this page heard it, oldest first, each once.
    pub chat: RwSignal<Vec<ChatMessage>>,
    /// The chat panel is open.
    pub chat_open: RwSignal<bool>,
    /// Messages from others that arrived while the chat panel was closed.
    pub unread: RwSignal<usize>,
    /// Streams whose video the server paused for our connection's sake.
    pub paused_video: RwSignal<Vec<String>>,
    /// The page's tasks for this call (joining, actions, the camera): aborted
    /// with the component that made the store.
    pub tasks: crate::tasks::Tasks,
    /// Remote media by stream id (= the publisher's participant id).
    #[cfg(feature = "hydrate")]
    pub streams: RwSignal<std::collections::HashMap<String, web_sys::MediaStream>, LocalStorage>,
    /// Our own camera and microphone while in the call.
    #[cfg(feature = "hydrate")]
    pub local: RwSignal<Option<web_sys::MediaStream>, LocalStorage>,
    /// The screen we share, while we do.
    #[cfg(feature = "hydrate")]
    pub screen: RwSignal<Option<web_sys::MediaStream>, LocalStorage>,
}

impl Default for CallStore {
    fn default() -> Self {
        Self::new()
    }
}

impl CallStore {
    /// An empty store (no call), owned by the current component.
    pub fn new() -> Self {
        Self {
            me: RwSignal::new(None),
            participants: RwSignal::new(Vec::new()),
            connection: RwSignal::new(ConnectionState::Disconnected),
            notice: RwSignal::new(None),
            lost: RwSignal::new(false),
            rejoin: RwSignal::new(false),
            hands: RwSignal::new(Vec::new()),
            speaker: RwSignal::new(None),
            pending: RwSignal::new(Vec::new()),
            audio_muted: RwSignal::new(false),
            video_muted: RwSignal::new(false),
            toasts: RwSignal::new(Vec::new()),
            chat: RwSignal::new(Vec::new()),
            chat_open: RwSignal::new(false),
            unread: RwSignal::new(0),
            paused_video: RwSignal::new(Vec::new()),
            tasks: crate::tasks::Tasks::new(),
            #[cfg(feature = "hydrate")]
            streams: RwSignal::new_local(std::collections::HashMap::new()),
            #[cfg(feature = "hydrate")]
            local: RwSignal::new_local(None),
            #[cfg(feature = "hydrate")]
            screen: RwSignal::new_local(None),
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

    /// Shows a short notice.
    pub fn toast(&self, text: impl Into<String>) {
        let text = text.into();
        let _ = self.toasts.try_update(|t| {
            let id = t.last().map_or(1, |last| last.id + 1);
            t.push(Toast { id, text });
            let excess = t.len().saturating_sub(MAX_TOASTS);
            t.drain(..excess);
        });
    }

    /// Takes a new roster: our own role, admission and admin mute follow
    /// it, and joins, leaves and a new host become notices.
    fn take_roster(&self, participants: Vec<ParticipantView>) {
        let Some(me) = self.me.try_get_untracked().flatten() else { return };
        let before = self.participants.try_get_untracked().unwrap_or_default();
        let mine = participants.iter().find(|p| p.id == me.participant_id);
        if let Some(view) = mine {
            if me.state == ParticipantState::Pending {
                self.toast("You were let in.");
            }
            if view.audio_muted && self.audio_muted.try_get_untracked() == Some(false) {
                let _ = self.audio_muted.try_set(true);
                self.toast(if view.audio_locked {
                    "The host muted your microphone. Raise your hand to ask to speak."
                } else {
                    "The host muted your microphone."
                });
            }
            let was_locked = before.iter().any(|b| b.id == me.participant_id && b.audio_locked);
            if was_locked && !view.audio_locked {
                self.toast("The host lets you unmute again.");
            }
            if view.role != me.role || view.state != me.state {
                let _ = self.me.try_set(Some(Me { role: view.role, state: view.state, ..me.clone() }));
                if view.role == Role::Admin && me.state == ParticipantState::Active {
                    self.toast("You are now the host.");
                }
            }
        }
        // Notices only once we were in the call (not for the first roster).
        if me.state == ParticipantState::Active && !before.is_empty() {
            for p in participants.iter().filter(|p| p.id != me.participant_id) {
                if !before.iter().any(|b| b.id == p.id) {
                    self.toast(format!("{} joined", p.name));
                }
                let was_admin = before.iter().any(|b| b.id == p.id && b.role == Role::Admin);
                if p.role == Role::Admin && !was_admin {
                    self.toast(format!("{} is now the host", p.name));
                }
            }
            for b in before.iter().filter(|b| b.id != me.participant_id) {
                if !participants.iter().any(|p| p.id == b.id) {
                    self.toast(format!("{} left", b.name));
                }
            }
        }
        let _ = self.participants.try_set(participants);
    }

    /// Adds messages not heard yet, in the order they were sent; new ones
    /// from others count as unread while the panel is closed (`live`: they
    /// were just said, not the history a connect brings).
    fn take_chat(&self, messages: Vec<ChatMessage>, live: bool) {
        let open = self.chat_open.try_get_untracked().unwrap_or(false);
        let mut fresh = 0;
        let _ = self.chat.try_update(|chat| {
            for m in messages {
                if chat.iter().any(|c| c.id == m.id) {
                    continue;
                }
                if live && !open && !self.is_me(&m.from) {
                    fresh += 1;
                }
                let at = chat.partition_point(|c| (c.sent_at_ms, &c.id) <= (m.sent_at_ms, &m.id));
                chat.insert(at, m);
            }
            let excess = chat.len().saturating_sub(MAX_CHAT_KEPT);
            chat.drain(..excess);
        });
        if fresh > 0 {
            let _ = self.unread.try_update(|n| *n += fresh);
        }
    }

    /// Opens or closes the chat panel; opening reads everything.
    pub fn set_chat_open(&self, open: bool) {
        self.chat_open.set(open);
        if open {
            self.unread.set(0);
        }
    }

    /// Applies one signalling message.
    pub fn apply(&self, msg: ServerMsg) {
        match msg {
            ServerMsg::Roster { participants, hands, speaker, pending } => {
                self.take_roster(participants);
                let _ = self.hands.try_set(hands);
                let _ = self.speaker.try_set(speaker);
                let _ = self.pending.try_set(pending);
            }
            ServerMsg::Speaker { participant } => {
                let _ = self.speaker.try_set(participant);
            }
            ServerMsg::Chat { message } => self.take_chat(vec![message], true),
            ServerMsg::ChatHistory { messages } => self.take_chat(messages, false),
            ServerMsg::SessionEnded { reason } => {
                self.reset();
                let _ = self.notice.try_set(Some(ended_message(reason)));
                if reason == LeaveReason::Moved {
                    let _ = self.rejoin.try_set(true);
                }
            }
            ServerMsg::VideoPaused { streams } => {
                let _ = self.paused_video.try_set(streams);
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
        let _ = self.hands.try_set(Vec::new());
        let _ = self.speaker.try_set(None);
        let _ = self.pending.try_set(Vec::new());
        let _ = self.audio_muted.try_set(false);
        let _ = self.video_muted.try_set(false);
        let _ = self.toasts.try_set(Vec::new());
        let _ = self.chat.try_set(Vec::new());
        let _ = self.chat_open.try_set(false);
        let _ = self.unread.try_set(0);
        let _ = self.paused_video.try_set(Vec::new());
        #[cfg(feature = "hydrate")]
        {
            let _ = self.streams.try_set(std::collections::HashMap::new());
            let _ = self.local.try_set(None);
            let _ = self.screen.try_set(None);
        }
    }

    /// Whether we hold the admin role now.
    pub fn is_admin(&self) -> bool {
        self.me.with(|me| me.as_ref().is_some_and(|m| m.role == Role::Admin))
    }

    /// Whether the host muted us and only the host may let us unmute.
    pub fn audio_locked(&self) -> bool {
        let Some(me) = self.me.with(|me| me.as_ref().map(|m| m.participant_id.clone())) else { return false };
        self.participants.with(|ps| ps.iter().any(|p| p.id == me && p.audio_locked))
    }

    /// Whether a participant id is the caller's own.
    pub fn is_me(&self, id: &ParticipantId) -> bool {
        self.me.with_untracked(|me| me.as_ref().is_some_and(|m| &m.participant_id == id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Presence;

    fn person(id: &str, role: Role) -> ParticipantView {
        ParticipantView {
            id: ParticipantId::new(id),
            name: id.to_uppercase(),
            role,
            state: ParticipantState::Active,
            joined_at_ms: 0,
            presence: Presence::Connected,
            audio_muted: false,
            video_muted: false,
            audio_locked: false,
            screen: false,
        }
    }

    fn roster(participants: Vec<ParticipantView>) -> ServerMsg {
        ServerMsg::Roster { participants, hands: vec![], speaker: None, pending: vec![] }
    }

    fn texts(store: &CallStore) -> Vec<String> {
        store.toasts.get_untracked().into_iter().map(|t| t.text).collect()
    }

    /// A store that joined as member "me" in `state`, seeing `roster`.
    fn entered(state: ParticipantState, roster: Vec<ParticipantView>) -> CallStore {
        let store = CallStore::new();
        store.enter(JoinOutcome {
            session_id: SessionId::new("s"),
            participant_id: ParticipantId::new("me"),
            role: Role::Member,
            state,
            roster,
            ice_servers: vec![],
        });
        store
    }

    #[test]
    fn a_waiting_caller_is_let_in_and_follows_the_roster() {
        let owner = Owner::new();
        owner.set();
        let store = entered(ParticipantState::Pending, vec![person("ada", Role::Admin)]);
        store.apply(roster(vec![person("ada", Role::Admin), person("me", Role::Member)]));
        assert_eq!(store.me.get_untracked().unwrap().state, ParticipantState::Active);
        assert_eq!(texts(&store), ["You were let in."]);

        // An admin mute turns our microphone off; joins, leaves and a new host are told.
        let mut muted = person("me", Role::Member);
        muted.audio_muted = true;
        store.apply(roster(vec![person("ada", Role::Admin), muted.clone(), person("bob", Role::Member)]));
        assert!(store.audio_muted.get_untracked());
        assert_eq!(texts(&store), ["You were let in.", "The host muted your microphone.", "BOB joined"]);
        store.apply(roster(vec![muted, person("bob", Role::Admin)]));
        // At most three notices at once: the oldest go first.
        assert_eq!(texts(&store), ["BOB joined", "BOB is now the host", "ADA left"]);
        assert!(!store.is_admin());
    }

    #[test]
    fn a_host_only_unmute_is_told_and_lifted() {
        let owner = Owner::new();
        owner.set();
        let store = entered(ParticipantState::Active, vec![person("ada", Role::Admin), person("me", Role::Member)]);
        assert!(!store.audio_locked());
        let mut locked = person("me", Role::Member);
        (locked.audio_muted, locked.audio_locked) = (true, true);
        store.apply(roster(vec![person("ada", Role::Admin), locked.clone()]));
        assert!(store.audio_muted.get_untracked() && store.audio_locked());
        assert_eq!(texts(&store), ["The host muted your microphone. Raise your hand to ask to speak."]);
        // Allowed again: still muted (the person unmutes), no longer locked.
        locked.audio_locked = false;
        store.apply(roster(vec![person("ada", Role::Admin), locked]));
        assert!(store.audio_muted.get_untracked() && !store.audio_locked());
        assert_eq!(texts(&store).last().map(String::as_str), Some("The host lets you unmute again."));
    }

    fn said(id: &str, from: &str, at: i64) -> ChatMessage {
        ChatMessage {
            id: id.into(),
            from: ParticipantId::new(from),
            name: from.into(),
            text: id.into(),
            sent_at_ms: at,
        }
    }

    #[test]
    fn chat_is_kept_once_in_order_and_counted_while_closed() {
        let owner = Owner::new();
        owner.set();
        let store = entered(ParticipantState::Active, vec![person("ada", Role::Admin), person("me", Role::Member)]);
        store.apply(ServerMsg::Chat { message: said("b", "ada", 20) });
        store.apply(ServerMsg::Chat { message: said("mine", "me", 25) });
        // A reconnect's history repeats what was heard and adds what was missed.
        store.apply(ServerMsg::ChatHistory { messages: vec![said("a", "ada", 10), said("b", "ada", 20)] });
        let ids: Vec<String> = store.chat.get_untracked().into_iter().map(|m| m.id).collect();
        assert_eq!(ids, ["a", "b", "mine"]);
        // Only others' live messages count; opening the panel reads them.
        assert_eq!(store.unread.get_untracked(), 1);
        store.set_chat_open(true);
        store.apply(ServerMsg::Chat { message: said("c", "ada", 30) });
        assert_eq!(store.unread.get_untracked(), 0);
        store.reset();
        assert!(store.chat.get_untracked().is_empty() && !store.chat_open.get_untracked());
    }

    #[test]
    fn every_end_is_told_in_words_not_codes() {
        for reason in LeaveReason::ALL {
            let text = ended_message(reason);
            assert!(!text.contains(reason.as_str()) || reason.as_str().len() < 5, "{reason:?}: {text}");
            assert!(text.ends_with('.'), "{reason:?}: {text}");
        }
    }

    #[test]
    fn reset_empties_every_piece_of_call_state() {
        let owner = Owner::new();
        owner.set();
        let store = CallStore::new();
        store.enter(JoinOutcome {
            session_id: SessionId::new("s"),
            participant_id: ParticipantId::new("me"),
            role: Role::Admin,
            state: ParticipantState::Active,
            roster: vec![],
            ice_servers: vec![],
        });
        store.apply(ServerMsg::Roster {
            participants: vec![person("me", Role::Admin), person("bob", Role::Member)],
            hands: vec![ParticipantId::new("bob")],
            speaker: Some(ParticipantId::new("bob")),
            pending: vec![person("cy", Role::Member)],
        });
        store.audio_muted.set(true);
        store.video_muted.set(true);
        store.toast("hello");
        store.reset();
        assert!(store.me.get_untracked().is_none());
        assert!(store.participants.get_untracked().is_empty());
        assert!(store.hands.get_untracked().is_empty());
        assert!(store.speaker.get_untracked().is_none());
        assert!(store.pending.get_untracked().is_empty());
        assert!(!store.audio_muted.get_untracked() && !store.video_muted.get_untracked());
        assert!(store.toasts.get_untracked().is_empty());
        assert_eq!(store.connection.get_untracked(), ConnectionState::Disconnected);
    }
}
