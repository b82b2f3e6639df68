//! The call store: every piece of call state the page holds, and the one
//! function, [`CallStore::reset`], that returns all of it to empty.

use leptos::prelude::*;

use crate::model::{
    ChatMessage, JoinOutcome, LeaveReason, MediaKind, ParticipantId, ParticipantState, ParticipantView, Role, SessionId,
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
    /// Those two flags on their way to the server.
    pub mutes: StoredValue<MuteSync>,
    /// How many host mutes of ours the roster last told (see
    /// [`ParticipantView::host_mutes`]).
    pub host_mutes: StoredValue<u32>,
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

/// Our own mute flags on their way to the server: one request per kind at
/// a time, each carrying the newest state when it leaves, so that quick
/// presses never land out of order and the server ends where the buttons do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MuteSync {
    audio: Sending,
    video: Sending,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sending {
    /// What the server holds, as far as we know (`None`: not known).
    told: Option<bool>,
    /// A request is on its way (its sender sends again if the flag moved).
    busy: bool,
}

impl Default for Sending {
    /// A new session starts unmuted on the server.
    fn default() -> Self {
        Self { told: Some(false), busy: false }
    }
}

impl MuteSync {
    fn slot(&mut self, kind: MediaKind) -> &mut Sending {
        match kind {
            MediaKind::Audio => &mut self.audio,
            MediaKind::Video => &mut self.video,
        }
    }

    /// Makes the caller the sender for `kind`; `false` when one runs
    /// already (it picks up the newest state when its request returns).
    pub fn claim(&mut self, kind: MediaKind) -> bool {
        !std::mem::replace(&mut self.slot(kind).busy, true)
    }

    /// The state the sender sends next, given the one wanted now; `None`
    /// when the server holds it already, and the sender stops.
    pub fn next(&mut self, kind: MediaKind, wanted: bool) -> Option<bool> {
        let slot = self.slot(kind);
        if slot.told == Some(wanted) {
            slot.busy = false;
            return None;
        }
        Some(wanted)
    }

    /// The server took `muted`.
    pub fn told(&mut self, kind: MediaKind, muted: bool) {
        self.slot(kind).told = Some(muted);
    }

    /// What the server holds is no longer known (someone else changed it).
    pub fn forget(&mut self, kind: MediaKind) {
        self.slot(kind).told = None;
    }

    /// A request failed: the sender stops, and the next change sends again.
    pub fn failed(&mut self, kind: MediaKind) {
        *self.slot(kind) = Sending { told: None, busy: false };
    }
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
            mutes: StoredValue::new(MuteSync::default()),
            host_mutes: StoredValue::new(0),
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
        // A new session: the server holds it unmuted, never muted by a host.
        self.mutes.set_value(MuteSync::default());
        self.host_mutes.set_value(0);
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
            // Only a new host mute turns the microphone off: a roster that
            // says "muted" may be older than our own unmute.
            let new_mute =
                self.host_mutes.try_update_value(|n| std::mem::replace(n, view.host_mutes) != view.host_mutes);
            if new_mute == Some(true) && view.audio_muted && self.audio_muted.try_get_untracked() == Some(false) {
                // What the server holds now is the host's doing, whatever we
                // last told it: the next request goes out whatever it says.
                let _ = self.mutes.try_update_value(|m| m.forget(MediaKind::Audio));
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
            ServerMsg::Pong
            | ServerMsg::Offer { .. }
            | ServerMsg::IceCandidate { .. }
            | ServerMsg::CameraLayers { .. } => {}
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
        let _ = self.mutes.try_set_value(MuteSync::default());
        let _ = self.host_mutes.try_set_value(0);
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

    /// Our own flag for the microphone or the camera.
    pub fn muted(&self, kind: MediaKind) -> RwSignal<bool> {
        match kind {
            MediaKind::Audio => self.audio_muted,
            MediaKind::Video => self.video_muted,
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
            host_mutes: 0,
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
        (muted.audio_muted, muted.host_mutes) = (true, 1);
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
        (locked.audio_muted, locked.audio_locked, locked.host_mutes) = (true, true, 1);
        store.apply(roster(vec![person("ada", Role::Admin), locked.clone()]));
        assert!(store.audio_muted.get_untracked() && store.audio_locked());
        assert_eq!(texts(&store), ["The host muted your microphone. Raise your hand to ask to speak."]);
        // Allowed again: still muted (the person unmutes), no longer locked.
        locked.audio_locked = false;
        store.apply(roster(vec![person("ada", Role::Admin), locked]));
        assert!(store.audio_muted.get_untracked() && !store.audio_locked());
        assert_eq!(texts(&store).last().map(String::as_str), Some("The host lets you unmute again."));
    }

    #[test]
    fn only_a_new_host_mute_turns_the_microphone_off() {
        let owner = Owner::new();
        owner.set();
        let store = entered(ParticipantState::Active, vec![person("ada", Role::Admin), person("me", Role::Member)]);
        // We muted and unmuted quickly: the roster of the mute comes after.
        let mut echo = person("me", Role::Member);
        echo.audio_muted = true;
        store.apply(roster(vec![person("ada", Role::Admin), echo.clone()]));
        assert!(!store.audio_muted.get_untracked(), "our own mute's echo is not the host's");
        assert!(texts(&store).is_empty());

        // The host mutes us: off, told, and the server's state is the host's now.
        store.mutes.update_value(|m| m.told(MediaKind::Audio, false));
        echo.host_mutes = 1;
        store.apply(roster(vec![person("ada", Role::Admin), echo.clone()]));
        assert!(store.audio_muted.get_untracked());
        assert_eq!(texts(&store), ["The host muted your microphone."]);
        let mut sync = store.mutes.get_value();
        assert_eq!(sync.next(MediaKind::Audio, true), Some(true), "the host's mute is sent as ours too");

        // We unmute; a roster from before that (same count) changes nothing.
        store.audio_muted.set(false);
        store.apply(roster(vec![person("ada", Role::Admin), echo.clone()]));
        assert!(!store.audio_muted.get_untracked());
        // A host mute overtaken by our own unmute: counted, not applied.
        (echo.audio_muted, echo.host_mutes) = (false, 2);
        store.apply(roster(vec![person("ada", Role::Admin), echo]));
        assert!(!store.audio_muted.get_untracked());
        assert_eq!(texts(&store).len(), 1);
    }

    #[test]
    fn mute_requests_go_one_at_a_time_with_the_newest_state() {
        use MediaKind::{Audio, Video};
        let mut sync = MuteSync::default();
        // Nothing to send while the server has what the button shows.
        assert!(sync.claim(Audio));
        assert_eq!(sync.next(Audio, false), None);
        // Mute: one sender; a second press meanwhile does not start another.
        assert!(sync.claim(Audio));
        assert_eq!(sync.next(Audio, true), Some(true));
        assert!(!sync.claim(Audio), "one request at a time");
        assert!(sync.claim(Video), "each kind has its own sender");
        // Back on before the mute returned: the sender sends that next, then stops.
        sync.told(Audio, true);
        assert_eq!(sync.next(Audio, false), Some(false));
        sync.told(Audio, false);
        assert_eq!(sync.next(Audio, false), None);
        assert!(sync.claim(Audio), "stopped: the next change starts a sender");
        // A failed request leaves the server's state unknown: sent again.
        sync.failed(Audio);
        assert!(sync.claim(Audio));
        assert_eq!(sync.next(Audio, false), Some(false));
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
