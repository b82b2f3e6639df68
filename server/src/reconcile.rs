//! The reconciler: a background sweep that compares the three places a
//! session lives (this node's live sessions and media, the live-state
//! store, the database) and repairs any difference through the single
//! close path ([`Rooms::end_session`], reason `reaped`).
//!
//! What counts as an orphan, seen from this node:
//! - a live session (or open media) here that the store or the database no
//!   longer knows: kind `live-session`;
//! - store entries or a database row of a session that no live node holds:
//!   owned by this node but not live here, owned by a node whose lease has
//!   expired (a crashed node), or not owned by anybody (a dangling pointer):
//!   kinds `store-key` and `db-row`.
//!
//! Sessions owned by another live node are that node's business. A session
//! is reaped only when two passes in a row find it orphaned, so a join or a
//! leave in flight between two reads is never mistaken for one; except the
//! sessions of a node found dead ([`Reconciler::watch_nodes`]: its lease
//! lapsed and it does not answer at its address), which nothing can be
//! joining or leaving: they go in the pass that finds them.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use app::model::{LeaveReason, RoomCode, SessionId, UserId};

use crate::db::DbError;
use crate::metrics as m;
use crate::room::answers;
use crate::room::Rooms;
use crate::store::{NodeLease, StoreError};

/// Why a pass could not judge (it then repairs nothing).
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// The live-state store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The database could not be read.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// What one pass repaired.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    /// Sessions reaped that had store entries (kind `store-key`).
    pub store_keys: u32,
    /// Sessions reaped that had a `participants` row (kind `db-row`).
    pub db_rows: u32,
    /// Sessions reaped that were live or had media here (kind `live-session`).
    pub live_sessions: u32,
}

impl Reaped {
    /// All three counts added (a session may count in several).
    pub fn total(&self) -> u32 {
        self.store_keys + self.db_rows + self.live_sessions
    }
}

/// Everything one pass learnt of one session.
#[derive(Debug)]
struct Seen {
    room: RoomCode,
    user: Option<UserId>,
    /// The owning node, from its database row or member entry.
    node: Option<String>,
    /// A member or pending entry names it.
    entry: bool,
    /// Any store key names it.
    in_store: bool,
    db_row: bool,
    live: bool,
    media: bool,
}

impl Seen {
    fn new(room: RoomCode) -> Self {
        Self { room, user: None, node: None, entry: false, in_store: false, db_row: false, live: false, media: false }
    }

    /// Whether this node should repair it, given the nodes alive now.
    fn orphaned(&self, me: &str, live_nodes: &HashSet<String>) -> bool {
        if self.live {
            return !(self.entry && self.db_row);
        }
        if self.media {
            return true;
        }
        match &self.node {
            Some(node) => node == me || !live_nodes.contains(node),
            None => self.in_store || self.db_row,
        }
    }
}

/// The reconciler of one node. Call [`Reconciler::pass`] periodically.
pub struct Reconciler {
    rooms: Arc<Rooms>,
    /// Orphans found by the previous pass.
    suspects: HashSet<SessionId>,
    /// The other nodes' leases as last seen (their addresses, to ask one
    /// whose lease lapsed whether it is still there).
    leases: BTreeMap<String, NodeLease>,
    /// Nodes whose lease lapsed but that answer (told once, not every look).
    answering: HashSet<String>,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler").finish_non_exhaustive()
    }
}

impl Reconciler {
    /// A reconciler of the node `rooms` serves, with no suspects yet.
    pub fn new(rooms: Arc<Rooms>) -> Self {
        Self { rooms, suspects: HashSet::new(), leases: BTreeMap::new(), answering: HashSet::new() }
    }

    /// Compares the live nodes with those seen last time; a node whose lease
    /// has lapsed and that does not answer at its address (`/healthz`,
    /// within [`crate::room::PROBE_TIMEOUT`]) is dead, and a pass reaps its sessions at
    /// once. A node that still answers (its lease lapsed while the store
    /// was away from it) is left alone: it renews and goes on. Returns the
    /// dead nodes (empty when the pass was not needed).
    pub async fn watch_nodes(&mut self, probe: &reqwest::Client) -> Result<Vec<String>, PassError> {
        let now = self.rooms.store().live_nodes().await?;
        let vanished: Vec<(String, NodeLease)> = self
            .leases
            .iter()
            .filter(|(node, _)| !now.contains_key(*node))
            .map(|(n, l)| (n.clone(), l.clone()))
            .collect();
        for node in self.answering.iter().filter(|n| now.contains_key(*n)) {
            tracing::info!(node = %node, "a node's lease is back");
        }
        self.answering.retain(|n| !now.contains_key(n));
        self.leases = now;
        self.leases.remove(self.rooms.node_id());
        let mut dead = Vec::new();
        for (node, lease) in vanished {
            if node == self.rooms.node_id() {
                continue;
            }
            if answers(probe, Some(&lease)).await {
                if self.answering.insert(node.clone()) {
                    tracing::warn!(node = %node, "a node's lease lapsed but it answers: left alone");
                }
                // Asked again next time, if its lease does not come back.
                self.leases.insert(node, lease);
            } else {
                tracing::warn!(node = %node, "a node is gone (lease lapsed, no answer): reaping its sessions");
                self.answering.remove(&node);
                dead.push(node);
            }
        }
        if !dead.is_empty() {
            let reaped = self.pass_with(&dead.iter().cloned().collect()).await?;
            tracing::warn!(?reaped, nodes = ?dead, "sessions of dead nodes reaped");
        }
        Ok(dead)
    }

    /// The room service it repairs through.
    pub fn rooms(&self) -> &Arc<Rooms> {
        &self.rooms
    }

    /// One comparison, and the repair of whatever the previous pass also
    /// found orphaned.
    pub async fn pass(&mut self) -> Result<Reaped, PassError> {
        self.pass_with(&HashSet::new()).await
    }

    /// A pass in which the sessions of the `dead` nodes need no second look.
    async fn pass_with(&mut self, dead: &HashSet<String>) -> Result<Reaped, PassError> {
        let rooms = &self.rooms;
        let me = rooms.node_id().to_owned();
        let mut live_nodes: HashSet<String> = rooms.store().live_nodes().await?.into_keys().collect();
        live_nodes.insert(me.clone());
        // A node whose lease lapsed but that answered when asked is alive.
        live_nodes.extend(self.leases.keys().cloned());

        let mut seen: BTreeMap<SessionId, Seen> = BTreeMap::new();
        for live in rooms.sessions().all() {
            seen.entry(live.id.clone()).or_insert_with(|| Seen::new(live.room.clone())).live = true;
        }
        for (room, session) in rooms.media().open_sessions() {
            seen.entry(session).or_insert_with(|| Seen::new(room)).media = true;
        }
        for row in rooms.db().all_participants().await? {
            let Ok(room) = RoomCode::parse(&row.room_code) else {
                tracing::warn!(session = %row.session_id, room = %row.room_code, "participant row with a bad room code");
                continue;
            };
            let s = seen.entry(SessionId::new(row.session_id)).or_insert_with(|| Seen::new(room));
            s.db_row = true;
            s.user = Some(UserId::new(row.user_id));
            s.node = Some(row.node_id);
        }
        let store_rooms = rooms.store().rooms().await?;
        for room in &store_rooms {
            let room = room.clone();
            for r in rooms.store().session_refs(&room).await? {
                let s = seen.entry(r.session).or_insert_with(|| Seen::new(room.clone()));
                s.in_store = true;
                s.entry |= r.node.is_some();
                s.user = s.user.take().or(r.user);
                s.node = s.node.take().or(r.node);
            }
        }

        // What was said in rooms that have ended goes too.
        match rooms.sweep_chat(&store_rooms).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(n, "chat of ended rooms deleted"),
            Err(e) => tracing::warn!(error = %e, "chat of ended rooms not swept"),
        }

        let orphans: HashSet<SessionId> =
            seen.iter().filter(|(_, s)| s.orphaned(&me, &live_nodes)).map(|(id, _)| id.clone()).collect();
        let confirmed: Vec<SessionId> = orphans
            .iter()
            .filter(|id| self.suspects.contains(*id) || seen[*id].node.as_ref().is_some_and(|node| dead.contains(node)))
            .cloned()
            .collect();
        self.suspects = orphans;

        let mut reaped = Reaped::default();
        for id in confirmed {
            let Some(s) = seen.get(&id) else { continue };
            // A dangling pointer may not say whose it is; compare-and-delete
            // makes a wrong guess harmless.
            let user = s.user.clone().unwrap_or_else(|| UserId::new(""));
            tracing::warn!(
                room = %s.room, session = %id, node = s.node.as_deref().unwrap_or("?"),
                live = s.live, media = s.media, store = s.in_store, db_row = s.db_row,
                "reaping an orphaned session"
            );
            if let Err(e) = rooms.end_session(&s.room, &id, &user, LeaveReason::Reaped).await {
                tracing::warn!(session = %id, error = %e, "orphan not fully reaped; the next pass retries");
                continue;
            }
            self.suspects.remove(&id);
            let count = |kind: &'static str, yes: bool, n: &mut u32| {
                if yes {
                    metrics::counter!(m::ORPHANS_REAPED, "kind" => kind).increment(1);
                    *n += 1;
                }
            };
            count("live-session", s.live || s.media, &mut reaped.live_sessions);
            count("store-key", s.in_store, &mut reaped.store_keys);
            count("db-row", s.db_row, &mut reaped.db_rows);
        }
        Ok(reaped)
    }
}
