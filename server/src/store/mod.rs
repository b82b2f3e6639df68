//! The live-state store: who is in which room right now, and what each
//! session holds. Two implementations behind [`LiveStore`]: in-process
//! ([`memory::MemoryStore`], the default) and Redis ([`redis::RedisStore`],
//! for production and multi-node). Both pass one conformance suite
//! (`tests/store_conformance.rs`).
//!
//! Key space (shared by both, see [`Keys`]); `{room}` is literal braces, a
//! Redis Cluster hash tag, so a room's keys live in one slot and a Lua
//! script may touch them all:
//! - `P:{room}:members`         hash  session → member JSON (admitted sessions)
//! - `P:{room}:pending`         hash  session → member JSON (waiting for approval)
//! - `P:{room}:session:{sid}`   hash  `user`, and one `res:{kind}:{id}` field per media resource
//! - `P:{room}:user:{uid}`      string the user's current session in the room
//! - `P:{room}:hands`           zset  session, scored by raise time
//! - `P:{room}:speaker`         string the active speaker's session
//! - `P:{room}:chat`            list  the room's recent chat messages (JSON), oldest first
//! - `P:{room}:node`            string the node the room's media lives on (its placement)
//! - `P:node:{node}`            string a node's lease (JSON [`NodeLease`], expires)
//!
//! Placement: an arrival (join, knock, admission) is recorded only on the
//! room's node, in the same atomic step that places an unplaced room there;
//! the step that removes a room's last session (admitted or waiting) also
//! removes the placement. So a room is on one node at a time, and an empty
//! room is on none.
//!
//! Invariant: removing a session is compare-and-delete: pointers (`user`,
//! `speaker`) are deleted only while they still name that session, so a late
//! cleanup of an old session never touches a newer one.

pub mod memory;
pub mod redis;

use std::collections::BTreeMap;
use std::time::Duration;

use app::model::{
    ChatMessage, ParticipantId, ParticipantState, ParticipantView, Presence, Role, RoomCode, SessionId, UserId,
};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Store failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store did not answer (connection lost, timeout).
    #[error("live-state store unavailable: {0}")]
    Unavailable(String),
    /// A stored value could not be read back.
    #[error("live-state store holds a malformed value: {0}")]
    Corrupt(String),
    /// The arrival was not recorded: the room lives on this other node.
    #[error("the room lives on node {0}")]
    PlacedElsewhere(String),
}

/// What a node's lease tells the other nodes (its key expires unless the
/// node renews it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLease {
    /// The node's own base URL (`CLEANROOM_PUBLIC_URL`): where the other
    /// nodes relay a room's joins and sockets to it.
    #[serde(default)]
    pub url: String,
    /// How many sessions the node holds (placement prefers the fewest).
    #[serde(default)]
    pub sessions: u64,
    /// The node is stopping: it takes no new rooms.
    #[serde(default)]
    pub draining: bool,
}

impl NodeLease {
    fn to_json(&self) -> Result<String, StoreError> {
        serde_json::to_string(self).map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    /// Reads a lease's value; one that cannot be read (an older node's `1`)
    /// still says the node is alive, with nothing else known.
    fn from_json(s: &str) -> Self {
        serde_json::from_str(s).unwrap_or_default()
    }
}

/// One session as the room's live state records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberEntry {
    /// The session's id.
    pub session: SessionId,
    /// The session's public handle.
    pub participant: ParticipantId,
    /// The session's user.
    pub user: UserId,
    /// The display name the person joined with.
    pub name: String,
    /// Admin or member.
    pub role: Role,
    /// In the call, or waiting to be let in.
    pub state: ParticipantState,
    /// The node whose process owns the session.
    pub node: String,
    /// Milliseconds since the Unix epoch; orders the room by arrival.
    pub joined_at_ms: i64,
    /// Connected, or silent and awaiting removal.
    #[serde(default)]
    pub presence: Presence,
    /// The microphone is off (by the person, or by an admin).
    #[serde(default)]
    pub audio_muted: bool,
    /// The camera is off.
    #[serde(default)]
    pub video_muted: bool,
    /// Muted by the admin in a room where only the admin lets them unmute.
    #[serde(default)]
    pub audio_locked: bool,
    /// How many times an admin has muted them (see [`ParticipantView::host_mutes`]).
    #[serde(default)]
    pub host_mutes: u32,
    /// Sharing their screen now.
    #[serde(default)]
    pub screen: bool,
}

impl MemberEntry {
    /// The participant as everybody in the room sees them.
    pub fn view(&self) -> ParticipantView {
        ParticipantView {
            id: self.participant.clone(),
            name: self.name.clone(),
            role: self.role,
            state: self.state,
            joined_at_ms: self.joined_at_ms,
            presence: self.presence,
            audio_muted: self.audio_muted,
            video_muted: self.video_muted,
            audio_locked: self.audio_locked,
            host_mutes: self.host_mutes,
            screen: self.screen,
        }
    }

    fn to_json(&self) -> Result<String, StoreError> {
        serde_json::to_string(self).map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    fn from_json(s: &str) -> Result<Self, StoreError> {
        serde_json::from_str(s).map_err(|e| StoreError::Corrupt(e.to_string()))
    }
}

/// Encodes a chat message for the store.
fn chat_to_json(message: &ChatMessage) -> Result<String, StoreError> {
    serde_json::to_string(message).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Reads the store's chat messages back.
fn chat_from_json(raw: &[String]) -> Result<Vec<ChatMessage>, StoreError> {
    raw.iter().map(|s| serde_json::from_str(s).map_err(|e| StoreError::Corrupt(e.to_string()))).collect()
}

/// The kinds of media resource a session owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKind {
    /// The session's peer connection.
    PeerConnection,
    /// A track the session publishes.
    Track,
    /// A forwarder delivering another's track to the session.
    Forwarder,
}

impl ResourceKind {
    /// The kind's name in the store's field names (`res:{kind}:{id}`).
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::PeerConnection => "pc",
            ResourceKind::Track => "track",
            ResourceKind::Forwarder => "fwd",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [ResourceKind::PeerConnection, ResourceKind::Track, ResourceKind::Forwarder]
            .into_iter()
            .find(|k| k.as_str() == s)
    }

    fn field(self, id: &str) -> String {
        format!("res:{}:{id}", self.as_str())
    }

    fn parse_field(field: &str) -> Option<(Self, String)> {
        let rest = field.strip_prefix("res:")?;
        let (kind, id) = rest.split_once(':')?;
        Some((Self::parse(kind)?, id.to_owned()))
    }
}

/// Builds the key names of the key space (see the module docs).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Key names starting with `prefix` (`P` in the module docs).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }
    fn room(&self, room: &RoomCode, rest: &str) -> String {
        format!("{}:{{{room}}}:{rest}", self.prefix)
    }
    /// `P:{room}:members`: the admitted sessions.
    pub fn members(&self, room: &RoomCode) -> String {
        self.room(room, "members")
    }
    /// `P:{room}:pending`: the sessions waiting for approval.
    pub fn pending(&self, room: &RoomCode) -> String {
        self.room(room, "pending")
    }
    /// `P:{room}:session:{sid}`: the session's user and media resources.
    pub fn session(&self, room: &RoomCode, session: &SessionId) -> String {
        self.room(room, &format!("session:{session}"))
    }
    /// `P:{room}:user:{uid}`: the user's current session in the room.
    pub fn user(&self, room: &RoomCode, user: &UserId) -> String {
        self.room(room, &format!("user:{user}"))
    }
    /// `P:{room}:hands`: raised hands, scored by raise time.
    pub fn hands(&self, room: &RoomCode) -> String {
        self.room(room, "hands")
    }
    /// `P:{room}:speaker`: the active speaker's session.
    pub fn speaker(&self, room: &RoomCode) -> String {
        self.room(room, "speaker")
    }
    /// `P:{room}:chat`: the room's recent chat messages.
    pub fn chat(&self, room: &RoomCode) -> String {
        self.room(room, "chat")
    }
    /// `P:{room}:node`: the node the room lives on.
    pub fn placement(&self, room: &RoomCode) -> String {
        self.room(room, "node")
    }
    /// The pub/sub channel between the nodes of one deployment.
    pub fn events(&self) -> String {
        format!("{}:events", self.prefix)
    }
    /// Prefix shared by every key of a room.
    pub fn room_prefix(&self, room: &RoomCode) -> String {
        format!("{}:{{{room}}}:", self.prefix)
    }
    /// The keys that may name a session, in a fixed order: members,
    /// pending, session, user, hands, speaker (the Redis scripts rely on it).
    pub fn session_scope(&self, room: &RoomCode, session: &SessionId, user: &UserId) -> [String; 6] {
        [
            self.members(room),
            self.pending(room),
            self.session(room, session),
            self.user(room, user),
            self.hands(room),
            self.speaker(room),
        ]
    }
    /// `P:node:{node}`: the node's lease.
    pub fn lease(&self, node: &str) -> String {
        format!("{}:node:{node}", self.prefix)
    }
    /// Prefix shared by every node lease.
    pub fn lease_prefix(&self) -> String {
        format!("{}:node:", self.prefix)
    }
    /// Prefix shared by every room key of the store.
    pub fn rooms_prefix(&self) -> String {
        format!("{}:{{", self.prefix)
    }
    /// The room a key belongs to, if it is a room key of this store.
    pub fn room_of(&self, key: &str) -> Option<RoomCode> {
        let rest = key.strip_prefix(&self.rooms_prefix())?;
        let (code, _) = rest.split_once('}')?;
        RoomCode::parse(code).ok().filter(|c| c.as_str() == code)
    }
}

/// A session named somewhere in a room's keys, with what the keys say of
/// its owner (the reconciler's view of the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRef {
    /// The session named.
    pub session: SessionId,
    /// Known when a member entry or the user's pointer names the session.
    pub user: Option<UserId>,
    /// The node that owns it, known from its member entry.
    pub node: Option<String>,
}

/// The live-state store's operations.
#[async_trait]
pub trait LiveStore: Send + Sync + 'static {
    /// `memory` or `redis`, for logs and the debug API.
    fn backend(&self) -> &'static str;

    /// Answers when the store does.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Records an admitted session and points its user at it. Returns the
    /// user's previous session in this room if it was a different one.
    /// Like every arrival, it is recorded only while the room is placed on
    /// `member.node` or on no node (then it is placed there); otherwise it
    /// fails with [`StoreError::PlacedElsewhere`] and changes nothing.
    async fn put_member(&self, room: &RoomCode, member: &MemberEntry) -> Result<Option<SessionId>, StoreError>;

    /// Records an admitted session like [`LiveStore::put_member`], choosing
    /// its role in the same atomic step ([`role_on_arrival`]): concurrent
    /// first arrivals get one admin, never several. `member.role` is
    /// ignored. Returns the user's previous session (if another one) and
    /// the role given.
    async fn join_member(
        &self,
        room: &RoomCode,
        member: &MemberEntry,
        creator: bool,
    ) -> Result<(Option<SessionId>, Role), StoreError>;

    /// When no admitted session is admin, makes the longest-present one
    /// admin, atomically (no arrival can become admin meanwhile). Returns
    /// the session promoted, if any.
    async fn ensure_admin(&self, room: &RoomCode) -> Result<Option<SessionId>, StoreError>;

    /// Hands the admin role from `from` to `to` in one step, only while
    /// `from` is admin and `to` a member. Returns whether it did.
    async fn transfer_admin(&self, room: &RoomCode, from: &SessionId, to: &SessionId) -> Result<bool, StoreError>;

    /// Records a session waiting for approval (and points its user at it).
    async fn put_pending(&self, room: &RoomCode, member: &MemberEntry) -> Result<Option<SessionId>, StoreError>;

    /// An admitted session's entry as stored (the token for [`LiveStore::cas_member`]).
    async fn member_raw(&self, room: &RoomCode, session: &SessionId) -> Result<Option<String>, StoreError>;

    /// Replaces an admitted session's entry only while it still reads
    /// `expected` (never re-creates a removed one). Returns whether it wrote.
    async fn cas_member(
        &self,
        room: &RoomCode,
        session: &SessionId,
        expected: &str,
        new: &MemberEntry,
    ) -> Result<bool, StoreError>;

    /// Changes an admitted session's entry with `change` (which returns
    /// whether it changed anything), retried on a concurrent write. Returns
    /// the new entry; `None` when the session is not a member or nothing
    /// changed.
    async fn update_member(
        &self,
        room: &RoomCode,
        session: &SessionId,
        change: &(dyn for<'e> Fn(&'e mut MemberEntry) -> bool + Send + Sync),
    ) -> Result<Option<MemberEntry>, StoreError> {
        for _ in 0..16 {
            let Some(raw) = self.member_raw(room, session).await? else { return Ok(None) };
            let mut entry = MemberEntry::from_json(&raw)?;
            if !change(&mut entry) {
                return Ok(None);
            }
            if self.cas_member(room, session, &raw, &entry).await? {
                return Ok(Some(entry));
            }
        }
        Err(StoreError::Unavailable(format!("the entry of {session} kept changing")))
    }

    /// Sets an admitted session's presence, only while it is still a member.
    /// Returns whether it changed anything.
    async fn set_presence(&self, room: &RoomCode, session: &SessionId, presence: Presence) -> Result<bool, StoreError> {
        let changed = self
            .update_member(room, session, &|e| {
                let differs = e.presence != presence;
                e.presence = presence;
                differs
            })
            .await?;
        Ok(changed.is_some())
    }

    /// Moves a waiting session into the members, as `entry`. Returns `false`
    /// (and changes nothing) when it was not waiting.
    async fn admit(&self, room: &RoomCode, entry: &MemberEntry) -> Result<bool, StoreError>;

    /// Deletes the speaker pointer only while it names `session`.
    async fn clear_speaker(&self, room: &RoomCode, session: &SessionId) -> Result<bool, StoreError>;

    /// Admitted sessions of the room, in arrival order.
    async fn members(&self, room: &RoomCode) -> Result<Vec<MemberEntry>, StoreError>;

    /// Waiting sessions of the room, in arrival order.
    async fn pending(&self, room: &RoomCode) -> Result<Vec<MemberEntry>, StoreError>;

    /// The session the user's pointer names in this room.
    async fn current_session(&self, room: &RoomCode, user: &UserId) -> Result<Option<SessionId>, StoreError>;

    /// Records a media resource the session owns (a `res:{kind}:{id}`
    /// field of its session hash).
    async fn add_resource(
        &self,
        room: &RoomCode,
        session: &SessionId,
        kind: ResourceKind,
        id: &str,
    ) -> Result<(), StoreError>;
    /// Returns whether it was there.
    async fn remove_resource(
        &self,
        room: &RoomCode,
        session: &SessionId,
        kind: ResourceKind,
        id: &str,
    ) -> Result<bool, StoreError>;
    /// The media resources recorded for the session.
    async fn resources(&self, room: &RoomCode, session: &SessionId) -> Result<Vec<(ResourceKind, String)>, StoreError>;

    /// Raises the session's hand at `at_ms` (a hand already up keeps its time).
    async fn raise_hand(&self, room: &RoomCode, session: &SessionId, at_ms: i64) -> Result<(), StoreError>;
    /// Returns whether the hand was up.
    async fn lower_hand(&self, room: &RoomCode, session: &SessionId) -> Result<bool, StoreError>;
    /// Raised hands, earliest first.
    async fn hands(&self, room: &RoomCode) -> Result<Vec<SessionId>, StoreError>;

    /// Points the room's speaker at `session`.
    async fn set_speaker(&self, room: &RoomCode, session: &SessionId) -> Result<(), StoreError>;
    /// The session the speaker pointer names.
    async fn speaker(&self, room: &RoomCode) -> Result<Option<SessionId>, StoreError>;

    /// Removes everything of `session` in `room`, compare-and-delete (see
    /// the module docs), and the room's placement when nobody is left in it
    /// (admitted or waiting). Returns how many of the session's entries
    /// went; 0 when already gone.
    async fn remove_session(&self, room: &RoomCode, session: &SessionId, user: &UserId) -> Result<u32, StoreError>;

    /// Appends a chat message to the room's recent ones, keeping the
    /// newest `keep`.
    async fn push_chat(&self, room: &RoomCode, message: &ChatMessage, keep: usize) -> Result<(), StoreError>;

    /// The room's recent chat messages, oldest first.
    async fn chat(&self, room: &RoomCode) -> Result<Vec<ChatMessage>, StoreError>;

    /// Deletes the room's chat messages (the room closed); `true` if there were any.
    async fn drop_chat(&self, room: &RoomCode) -> Result<bool, StoreError>;

    /// Every key of the room.
    async fn room_keys(&self, room: &RoomCode) -> Result<Vec<String>, StoreError>;

    /// Every room that has at least one key.
    async fn rooms(&self) -> Result<Vec<RoomCode>, StoreError>;

    /// The store's key names.
    fn keys(&self) -> &Keys;

    /// Every session the room's keys name (member and pending entries,
    /// session hashes, user pointers, raised hands, the speaker), each once.
    async fn session_refs(&self, room: &RoomCode) -> Result<Vec<SessionRef>, StoreError> {
        let mut refs: BTreeMap<SessionId, SessionRef> = BTreeMap::new();
        let mut note = |session: SessionId, user: Option<UserId>, node: Option<String>| {
            let entry = refs.entry(session.clone()).or_insert(SessionRef { session, user: None, node: None });
            entry.user = entry.user.take().or(user);
            entry.node = entry.node.take().or(node);
        };
        let mut entries = self.members(room).await?;
        entries.extend(self.pending(room).await?);
        for e in entries {
            note(e.session, Some(e.user), Some(e.node));
        }
        let prefix = self.keys().room_prefix(room);
        for key in self.room_keys(room).await? {
            let Some(rest) = key.strip_prefix(&prefix) else { continue };
            if let Some(sid) = rest.strip_prefix("session:") {
                note(SessionId::new(sid), None, None);
            } else if let Some(uid) = rest.strip_prefix("user:") {
                let user = UserId::new(uid);
                if let Some(sid) = self.current_session(room, &user).await? {
                    note(sid, Some(user), None);
                }
            }
        }
        for sid in self.hands(room).await? {
            note(sid, None, None);
        }
        if let Some(sid) = self.speaker(room).await? {
            note(sid, None, None);
        }
        Ok(refs.into_values().collect())
    }

    /// Every entry that names `session` (keys, and `key#field` for hash and
    /// set members). Empty once the session is fully removed.
    async fn session_entries(
        &self,
        room: &RoomCode,
        session: &SessionId,
        user: &UserId,
    ) -> Result<Vec<String>, StoreError>;

    /// Renews this node's lease for `ttl`, saying `lease`.
    async fn renew_lease(&self, node: &str, lease: &NodeLease, ttl: Duration) -> Result<(), StoreError>;
    /// Drops this node's lease (clean shutdown).
    async fn drop_lease(&self, node: &str) -> Result<(), StoreError>;
    /// The nodes whose lease has not expired, with what each says.
    async fn live_nodes(&self) -> Result<BTreeMap<String, NodeLease>, StoreError>;

    /// The node the room lives on, if it is placed.
    async fn room_node(&self, room: &RoomCode) -> Result<Option<String>, StoreError>;
    /// Moves the room from `from` (a node found dead) to `to`, or places it
    /// on `to` when it is on no node; a room on any other node stays.
    /// Returns the room's node after the step.
    async fn move_room(&self, room: &RoomCode, from: &str, to: &str) -> Result<String, StoreError>;

    /// Sends `payload` to every node of the deployment (this one too), in
    /// the order sent. The in-process store serves one node: nothing to do.
    async fn send_event(&self, _payload: String) -> Result<(), StoreError> {
        Ok(())
    }

    /// Closes the store's connections and ends its own tasks (shutdown);
    /// nothing to do for the in-process store.
    async fn quit(&self) {}

    /// What the nodes send with [`LiveStore::send_event`]; `None` for a
    /// store that serves a single node.
    fn events(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        None
    }
}

/// The role of a person arriving in a room whose admitted sessions are
/// `members` (the rule [`LiveStore::join_member`] applies atomically):
/// member while another person is admin; otherwise admin when they created
/// the room, held the role in their previous session (a refresh), or find
/// nobody else there.
pub fn role_on_arrival(members: &[MemberEntry], user: &UserId, creator: bool) -> Role {
    let (mine, others): (Vec<&MemberEntry>, Vec<&MemberEntry>) = members.iter().partition(|m| &m.user == user);
    if others.iter().any(|m| m.role == Role::Admin) {
        Role::Member
    } else if creator || mine.iter().any(|m| m.role == Role::Admin) || others.is_empty() {
        Role::Admin
    } else {
        Role::Member
    }
}

/// Who becomes admin of a room without one: the longest present (arrival
/// order as `by_arrival`); `None` while someone is admin.
pub fn heir(members: &[MemberEntry]) -> Option<&MemberEntry> {
    if members.iter().any(|m| m.role == Role::Admin) {
        return None;
    }
    members.iter().min_by(|a, b| a.joined_at_ms.cmp(&b.joined_at_ms).then_with(|| a.session.cmp(&b.session)))
}

/// Sorts members by arrival, ties by session id (stable across backends).
fn by_arrival(mut v: Vec<MemberEntry>) -> Vec<MemberEntry> {
    v.sort_by(|a, b| a.joined_at_ms.cmp(&b.joined_at_ms).then_with(|| a.session.cmp(&b.session)));
    v
}
