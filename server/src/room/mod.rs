//! The room domain: create, join, leave, act, and the single close path.
//! Implements the app's [`RoomService`] port.
//!
//! Every way a session ends goes through [`Rooms::end_session`]: the live
//! part closes exactly once (the registry hands the session to one caller),
//! the room is told, then the durable state (store entries, the live row,
//! the history row) is removed keyed by session id.
//!
//! One file per use case: `join` (creating, looking up, joining),
//! `close` (the close path and its retries, leaving), `roster` (what
//! the room is told, the admin hand-over), `actions` (participants' and
//! the admin's actions), `chat` (messages, deleted with their room), `liveness` (the abrupt-loss sweep, shutdown),
//! `idle` (rooms that close themselves), `placement` (which node a room lives on).

mod actions;
mod chat;
mod close;
mod error;
mod idle;
mod join;
mod liveness;
mod placement;
mod roster;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Weak};
use std::time::Duration;

use app::error::AppError;
use app::model::{JoinOutcome, LeaveReason, MediaKind, RoomAction, RoomCode, RoomInfo, RoomOptions, SessionId};
use app::ports::{Identity, RoomService};
use app::signal::ServerMsg;
use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::db::Db;
use crate::hub::Hub;
use crate::media::Sfu;
use crate::nodes::{NodeEvent, Outbox};
use crate::participant::SessionRegistry;
use crate::store::LiveStore;

pub use chat::CHAT_HISTORY;
pub use error::RoomError;
pub use placement::{answers, Home, LEASE_EVERY, LEASE_TTL, PROBE_TIMEOUT};
use roster::RosterTurns;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Most requests that may wait for approval in one room at once.
pub const MAX_PENDING: usize = 20;
/// Most open rooms one person may have created (rooms close by themselves
/// when unused, see [`Limits`]).
pub const MAX_OPEN_ROOMS_PER_PERSON: u64 = 20;

/// Time limits of rooms and requests (their defaults are the settings' in `config`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A request to join a private room expires after this long.
    pub pending_timeout: Duration,
    /// A room everybody left closes itself after this long.
    pub empty_room: Duration,
    /// A room nobody joined closes itself after this long.
    pub unused_room: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            pending_timeout: Duration::from_secs(120),
            empty_room: Duration::from_secs(300),
            unused_room: Duration::from_secs(24 * 3600),
        }
    }
}

/// The room service of one node.
pub struct Rooms {
    /// Running roster broadcasts (see [`Rooms::broadcast_roster`]).
    rosters: RosterTurns,
    /// How fast each session may chat.
    chat_limits: chat::ChatLimits,
    db: Db,
    store: Arc<dyn LiveStore>,
    node_id: String,
    /// Where the other nodes reach this one (its lease says it).
    url: String,
    /// Stopping: no new rooms come here.
    draining: AtomicBool,
    /// Every other node's lease as last seen (its address outlives the lease).
    seen_leases: std::sync::Mutex<std::collections::BTreeMap<String, crate::store::NodeLease>>,
    /// Asks a node whose lease lapsed whether it is still there.
    probe: reqwest::Client,
    sessions: SessionRegistry,
    hub: Hub,
    /// What the other nodes of the deployment must hear.
    outbox: Outbox,
    /// Parent of every session's token; cancelled at shutdown.
    root: CancellationToken,
    /// The SFU: each session's media, closed by [`Rooms::end_session`].
    media: Arc<Sfu>,
    /// Owns the background cleanups (a child of the process's tasks).
    tasks: TaskTracker,
    /// This service itself, for background cleanups (no cycle: weak).
    me: Weak<Rooms>,
    limits: Limits,
}

impl std::fmt::Debug for Rooms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rooms").finish_non_exhaustive()
    }
}

impl Rooms {
    /// The room service of node `node_id`; its cleanups run on `tasks` and
    /// its sessions' tokens are children of `root`. Starts the node-event
    /// outbox.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        db: Db,
        store: Arc<dyn LiveStore>,
        node_id: String,
        url: String,
        probe: reqwest::Client,
        root: CancellationToken,
        media: Arc<Sfu>,
        tasks: TaskTracker,
        limits: Limits,
    ) -> Arc<Self> {
        let outbox = Outbox::start(store.clone(), node_id.clone(), &tasks, root.clone());
        Arc::new_cyclic(|me| Self {
            rosters: RosterTurns::default(),
            chat_limits: chat::ChatLimits::default(),
            outbox,
            limits,
            db,
            store,
            node_id,
            url,
            draining: AtomicBool::new(false),
            seen_leases: std::sync::Mutex::default(),
            probe,
            sessions: SessionRegistry::default(),
            hub: Hub::default(),
            root,
            media,
            tasks,
            me: me.clone(),
        })
    }

    /// The SFU.
    pub fn media(&self) -> &Sfu {
        &self.media
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The live-state store.
    pub fn store(&self) -> &dyn LiveStore {
        self.store.as_ref()
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The live sessions of this node.
    pub fn sessions(&self) -> &SessionRegistry {
        &self.sessions
    }

    /// The fan-out to this node's sockets.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Sends `msg` to every socket of the room, on every node.
    pub(super) fn publish(&self, room: &RoomCode, msg: ServerMsg) {
        self.outbox.send(NodeEvent::Room { room: room.clone(), msg: msg.clone() });
        self.hub.publish(room, msg);
    }

    /// Switches forwarding of a publisher's media, on the node that has it.
    pub(super) fn set_forwarding(&self, room: &RoomCode, session: &SessionId, kind: MediaKind, on: bool) {
        if !self.media.set_forwarding(room, session, kind, on) {
            self.outbox.send(NodeEvent::Forwarding { room: room.clone(), session: session.clone(), kind, on });
        }
    }

    /// Starts or stops publishing a session's screen share, on the node
    /// that has its media.
    pub(super) fn set_screen(&self, room: &RoomCode, session: &SessionId, on: bool) {
        if !self.media.set_screen(room, session, on) {
            self.outbox.send(NodeEvent::Screen { room: room.clone(), session: session.clone(), on });
        }
    }

    /// Does what another node asked (`payload`, from the live store's
    /// event channel); this node's own events are skipped.
    pub fn on_node_event(&self, payload: &str) {
        match self.outbox.receive(payload) {
            None => {}
            Some(NodeEvent::Room { room, msg }) => self.hub.publish(&room, msg),
            Some(NodeEvent::Forwarding { room, session, kind, on }) => {
                self.media.set_forwarding(&room, &session, kind, on);
            }
            Some(NodeEvent::Screen { room, session, on }) => {
                self.media.set_screen(&room, &session, on);
            }
            Some(NodeEvent::Ended { room, session, reason }) => {
                // Its durable state is gone already: only the live part is
                // here (counted and recorded by the node that ended it).
                let Some(live) = self.sessions.take(&session) else { return };
                live.close(reason);
                tracing::info!(room = %room, session = %session, reason = reason.as_str(), "session ended on another node");
                // Waiting for the media here would hold up the events behind it.
                let closing = self.media.start_close(&room, &session, reason);
                self.tasks.spawn(closing.wait());
            }
        }
    }
}

#[async_trait]
impl RoomService for Rooms {
    async fn create_room(&self, creator: &Identity, options: RoomOptions) -> Result<RoomCode, AppError> {
        Ok(self.create(creator, options).await?)
    }

    async fn room_info(&self, code: &RoomCode) -> Result<RoomInfo, AppError> {
        Ok(self.info(code).await?)
    }

    async fn join(&self, who: &Identity, code: &RoomCode, display_name: &str) -> Result<JoinOutcome, AppError> {
        Ok(self.join_as(who, code, display_name).await?)
    }

    async fn leave(&self, who: &Identity, session: &SessionId, reason: LeaveReason) -> Result<(), AppError> {
        Ok(self.leave_session(who, session, reason).await?)
    }

    async fn act(&self, who: &Identity, session: &SessionId, action: RoomAction) -> Result<(), AppError> {
        Ok(self.act_as(who, session, action).await?)
    }

    async fn send_chat(&self, who: &Identity, session: &SessionId, text: &str) -> Result<(), AppError> {
        Ok(self.send_chat_as(who, session, text).await?)
    }
}
