//! The room domain: create, join, leave. Implements the app's
//! [`RoomService`] port.
//!
//! Every way a session ends goes through [`Rooms::end_session`]: the live
//! part closes exactly once (the registry hands the session to one caller),
//! the room is told, then the durable state (store entries, the live row,
//! the history row) is removed keyed by session id.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use app::error::AppError;
use app::model::{
    JoinOutcome, LeaveReason, MediaKind, ParticipantId, ParticipantState, ParticipantView, Presence, Role, RoomAction,
    RoomCode, RoomInfo, RoomOptions, SessionId, UserId,
};
use app::ports::{Identity, RoomService};
use app::signal::ServerMsg;
use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::db::{self, Db, DbError};
use crate::hub::Hub;
use crate::media::Sfu;
use crate::metrics as m;
use crate::nodes::{NodeEvent, Outbox};
use crate::participant::{LiveSession, Liveness, SessionRegistry};
use crate::store::{LiveStore, MemberEntry, StoreError};

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn db_down(e: DbError) -> AppError {
    tracing::warn!(error = %e, "database call failed");
    AppError::Unavailable
}

fn store_down(e: StoreError) -> AppError {
    tracing::warn!(error = %e, "live-state store call failed");
    AppError::Unavailable
}

/// A durable cleanup step's failure.
#[derive(Debug, thiserror::Error)]
enum CleanupError {
    /// The live-state store did not answer.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The database did not answer.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The step ran but reading back still found something.
    #[error("still present after cleanup: {0}")]
    Leftover(String),
}

/// What a run of the durable cleanup achieved.
struct Cleanup {
    /// This run closed the history row (the close is counted once).
    history_closed: bool,
    /// The first step that did not complete.
    error: Option<CleanupError>,
}

/// Inside the request: a few quick tries (about 1.5 s in all).
fn quick_retries() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_millis(500))
        .with_max_times(4)
        .with_jitter()
}

/// In the background: patient tries for about five minutes.
fn patient_retries() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(70)
        .with_jitter()
}

fn note_retry(e: &CleanupError, after: Duration) {
    metrics::counter!(m::CLEANUP_RETRIES).increment(1);
    tracing::debug!(error = %e, retry_in = ?after, "cleanup step retried");
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

/// Rooms whose roster is being broadcast, each with whether it changed
/// again meanwhile.
type RosterTurns = std::sync::Mutex<std::collections::HashMap<RoomCode, bool>>;

/// The one running roster broadcast of a room; its end (or cancellation)
/// frees the room for the next.
struct RosterTurn<'a> {
    turns: &'a RosterTurns,
    room: RoomCode,
}

impl<'a> RosterTurn<'a> {
    fn lock(turns: &RosterTurns) -> std::sync::MutexGuard<'_, std::collections::HashMap<RoomCode, bool>> {
        turns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The turn, or `None` (after marking the roster changed) when a
    /// broadcast of the room is running.
    fn take(turns: &'a RosterTurns, room: &RoomCode) -> Option<Self> {
        let mut running = Self::lock(turns);
        if let Some(again) = running.get_mut(room) {
            *again = true;
            return None;
        }
        running.insert(room.clone(), false);
        Some(Self { turns, room: room.clone() })
    }

    /// Whether the roster changed since the last send (and clears it).
    fn again(turns: &RosterTurns, room: &RoomCode) -> bool {
        Self::lock(turns).get_mut(room).is_some_and(std::mem::take)
    }
}

impl Drop for RosterTurn<'_> {
    fn drop(&mut self) {
        Self::lock(self.turns).remove(&self.room);
    }
}

/// The room service of one node.
pub struct Rooms {
    /// Running roster broadcasts (see [`Rooms::broadcast_roster`]).
    rosters: RosterTurns,
    db: Db,
    store: Arc<dyn LiveStore>,
    node_id: String,
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

impl Rooms {
    pub fn new(
        db: Db,
        store: Arc<dyn LiveStore>,
        node_id: String,
        root: CancellationToken,
        media: Arc<Sfu>,
        tasks: TaskTracker,
        limits: Limits,
    ) -> Arc<Self> {
        let outbox = Outbox::start(store.clone(), node_id.clone(), &tasks, root.clone());
        Arc::new_cyclic(|me| Self {
            rosters: RosterTurns::default(),
            outbox,
            limits,
            db,
            store,
            node_id,
            sessions: SessionRegistry::default(),
            hub: Hub::default(),
            root,
            media,
            tasks,
            me: me.clone(),
        })
    }

    pub fn media(&self) -> &Sfu {
        &self.media
    }

    pub fn db(&self) -> &Db {
        &self.db
    }
    pub fn store(&self) -> &dyn LiveStore {
        self.store.as_ref()
    }
    pub fn node_id(&self) -> &str {
        &self.node_id
    }
    pub fn sessions(&self) -> &SessionRegistry {
        &self.sessions
    }
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Sends `msg` to every socket of the room, on every node.
    fn publish(&self, room: &RoomCode, msg: ServerMsg) {
        self.outbox.send(NodeEvent::Room { room: room.clone(), msg: msg.clone() });
        self.hub.publish(room, msg);
    }

    /// Switches forwarding of a publisher's media, on the node that has it.
    fn set_forwarding(&self, room: &RoomCode, session: &SessionId, kind: MediaKind, on: bool) {
        if !self.media.set_forwarding(room, session, kind, on) {
            self.outbox.send(NodeEvent::Forwarding { room: room.clone(), session: session.clone(), kind, on });
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

    /// The room's admitted participants, in arrival order.
    pub async fn roster(&self, room: &RoomCode) -> Result<Vec<ParticipantView>, StoreError> {
        Ok(self.store.members(room).await?.iter().map(MemberEntry::view).collect())
    }

    /// The room's whole live state as the `roster` message carries it
    /// (with the pending requests; sockets of non-admins strip them).
    pub async fn room_state(&self, room: &RoomCode) -> Result<ServerMsg, StoreError> {
        let members = self.store.members(room).await?;
        let pending = self.store.pending(room).await?;
        self.roster_of(room, members, pending).await
    }

    async fn roster_of(
        &self,
        room: &RoomCode,
        members: Vec<MemberEntry>,
        pending: Vec<MemberEntry>,
    ) -> Result<ServerMsg, StoreError> {
        let public_id = |s: &SessionId| members.iter().find(|m| &m.session == s).map(|m| m.participant.clone());
        let hands = self.store.hands(room).await?.iter().filter_map(public_id).collect();
        let speaker = self.store.speaker(room).await?.as_ref().and_then(public_id);
        Ok(ServerMsg::Roster {
            participants: members.iter().map(MemberEntry::view).collect(),
            hands,
            speaker,
            pending: pending.iter().map(MemberEntry::view).collect(),
        })
    }

    /// Tells the room a session is leaving before its cleanup runs: the
    /// roster as it will be without it (the full one follows once the store
    /// is clean). Nothing to tell if it is not in the room's lists.
    async fn announce_departure(&self, room: &RoomCode, session: &SessionId) {
        let lists = async {
            let mut members = self.store.members(room).await?;
            let mut pending = self.store.pending(room).await?;
            let before = members.len() + pending.len();
            members.retain(|m| &m.session != session);
            pending.retain(|m| &m.session != session);
            if members.len() + pending.len() == before {
                return Ok(None);
            }
            self.roster_of(room, members, pending).await.map(Some)
        };
        match lists.await {
            Ok(Some(msg)) => self.publish(room, msg),
            Ok(None) => {}
            Err(e) => tracing::warn!(room = %room, error = %e, "departure not announced"),
        }
    }

    /// Tells the room its current roster. Coalesced per room: while one
    /// broadcast runs, further calls only mark the roster changed, and the
    /// running one reads and sends once more (so a burst of changes, such
    /// as hands going up and down, costs at most two rosters at a time).
    async fn broadcast_roster(&self, room: &RoomCode) {
        let Some(_running) = RosterTurn::take(&self.rosters, room) else { return };
        loop {
            match self.room_state(room).await {
                Ok(msg) => self.publish(room, msg),
                Err(e) => tracing::warn!(room = %room, error = %e, "roster not broadcast"),
            }
            if !RosterTurn::again(&self.rosters, room) {
                break;
            }
        }
    }

    /// The SFU's active-speaker decision: recorded in the store and told to
    /// the room. `None`: nobody is speaking.
    pub async fn speaker_changed(&self, room: &RoomCode, session: Option<&SessionId>) {
        let recorded = match session {
            Some(s) => self.store.set_speaker(room, s).await,
            None => match self.store.speaker(room).await {
                Ok(Some(current)) => self.store.clear_speaker(room, &current).await.map(|_| ()),
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            },
        };
        if let Err(e) = recorded {
            tracing::warn!(room = %room, error = %e, "speaker not recorded");
            return;
        }
        let participant = match session {
            None => None,
            Some(s) => match self.store.members(room).await {
                Ok(members) => members.into_iter().find(|m| &m.session == s).map(|m| m.participant),
                Err(_) => return,
            },
        };
        self.publish(room, ServerMsg::Speaker { participant });
    }

    /// When the room has people but no admin (the admin left by any exit),
    /// the longest-present participant becomes admin (one atomic store
    /// step: an arrival meanwhile cannot become a second admin).
    async fn ensure_admin(&self, room: &RoomCode) {
        match self.store.ensure_admin(room).await {
            Ok(Some(heir)) => {
                if let Err(e) = self.db.set_role(heir.as_str(), Role::Admin.as_str()).await {
                    tracing::warn!(session = %heir, error = %e, "new admin not recorded in the database");
                }
                tracing::info!(room = %room, session = %heir, "admin handed over to the longest present");
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(room = %room, error = %e, "admin not ensured"),
        }
    }

    /// The one close path of a session. Idempotent: a second call for the
    /// same session finds nothing left and changes nothing. It runs on the
    /// room service's tracked tasks, so a caller that goes away mid-way (a
    /// window closing while its leave beacon is handled drops the request)
    /// never cuts a cleanup short.
    ///
    /// The live part (socket, media) closes at once; the durable steps
    /// (store entries, live row, history row) are retried with backoff and
    /// verified by reading back. If a backing service stays away, the call
    /// answers `Unavailable` and a tracked background task keeps retrying
    /// until the steps are done (or the process stops).
    pub async fn end_session(
        &self,
        room: &RoomCode,
        session: &SessionId,
        user: &UserId,
        reason: LeaveReason,
    ) -> Result<(), AppError> {
        let Some(rooms) = self.me.upgrade() else { return self.close_session(room, session, user, reason).await };
        let (room, session, user) = (room.clone(), session.clone(), user.clone());
        let close = self.tasks.spawn(async move { rooms.close_session(&room, &session, &user, reason).await });
        close.await.unwrap_or(Err(AppError::Internal))
    }

    /// What [`Rooms::end_session`] runs.
    async fn close_session(
        &self,
        room: &RoomCode,
        session: &SessionId,
        user: &UserId,
        reason: LeaveReason,
    ) -> Result<(), AppError> {
        let started = Instant::now();
        // 1. Live part, exactly once: the registry hands it to one caller.
        let live_here = self.sessions.take(session);
        let closed_here = live_here.as_ref().is_some_and(|live| live.close(reason));
        if live_here.is_none() {
            // Its socket and media may be on another node.
            self.outbox.send(NodeEvent::Ended { room: room.clone(), session: session.clone(), reason });
        }
        // Forwarding from and to it stops now, and the room hears at once
        // (the others remove the tile without waiting for the rest).
        let closing = self.media.start_close(room, session, reason);
        self.announce_departure(room, session).await;
        // Its media (peer connection, tracks, forwarders from and to it)
        // is released before the store entries, so no late resource write
        // outlives them; the others renegotiate without its tracks.
        closing.wait().await;
        // 2. Durable steps, retried and verified; the room hears of it as
        //    soon as the store entries are gone.
        let outcome = self.durable_cleanup(room, session, user, reason, quick_retries()).await;
        let counted = closed_here || outcome.history_closed;
        if counted {
            m::session_closed(reason, started.elapsed());
            tracing::info!(room = %room, session = %session, reason = reason.as_str(), "session ended");
        }
        match outcome.error {
            None => Ok(()),
            Some(e) => {
                tracing::warn!(room = %room, session = %session, error = %e, "cleanup continues in the background");
                self.finish_later(room.clone(), session.clone(), user.clone(), reason, counted, started);
                Err(AppError::Unavailable)
            }
        }
    }

    /// Runs [`Rooms::close_session`] on the tracked tasks without waiting
    /// for it (the liveness sweep, which must not wait on any one close).
    fn close_in_background(&self, room: &RoomCode, session: &SessionId, user: &UserId, reason: LeaveReason) {
        let Some(rooms) = self.me.upgrade() else { return };
        let (room, session, user) = (room.clone(), session.clone(), user.clone());
        self.tasks.spawn(async move {
            if let Err(e) = rooms.close_session(&room, &session, &user, reason).await {
                tracing::warn!(session = %session, reason = reason.as_str(), error = %e, "session not fully ended");
            }
        });
    }

    /// Removes the store entries and ends the rows, each step retried with
    /// `policy` and verified by reading back.
    async fn durable_cleanup(
        &self,
        room: &RoomCode,
        session: &SessionId,
        user: &UserId,
        reason: LeaveReason,
        policy: ExponentialBuilder,
    ) -> Cleanup {
        let store_step = || async {
            self.store.remove_session(room, session, user).await?;
            let left = self.store.session_entries(room, session, user).await?;
            if left.is_empty() {
                Ok(())
            } else {
                Err(CleanupError::Leftover(left.join(", ")))
            }
        };
        let store_result = store_step.retry(policy).notify(note_retry).await;
        if store_result.is_ok() {
            if reason != LeaveReason::RoomEnded {
                self.ensure_admin(room).await;
            }
            self.broadcast_roster(room).await;
        }
        let history_closed = AtomicBool::new(false);
        let left_at = now_ms();
        let db_step = || async {
            let ended = self.db.end_participant(session.as_str(), reason.as_str(), left_at).await?;
            history_closed.fetch_or(ended.history_closed, Ordering::AcqRel);
            let row_left = self.db.participant(session.as_str()).await?.is_some();
            let history_open = self.db.history(session.as_str()).await?.is_some_and(|h| h.left_at_ms.is_none());
            if row_left || history_open {
                return Err(CleanupError::Leftover("participant row or open history".into()));
            }
            Ok(())
        };
        let db_result = db_step.retry(policy).notify(note_retry).await;
        Cleanup { history_closed: history_closed.into_inner(), error: store_result.and(db_result).err() }
    }

    /// Keeps retrying a session's durable cleanup in the background.
    fn finish_later(
        &self,
        room: RoomCode,
        session: SessionId,
        user: UserId,
        reason: LeaveReason,
        counted: bool,
        started: Instant,
    ) {
        let Some(rooms) = self.me.upgrade() else { return };
        let stop = self.root.clone();
        self.tasks.spawn(async move {
            let cleanup = rooms.durable_cleanup(&room, &session, &user, reason, patient_retries());
            tokio::select! {
                () = stop.cancelled() => {}
                outcome = cleanup => match outcome.error {
                    None => {
                        if !counted && outcome.history_closed {
                            m::session_closed(reason, started.elapsed());
                        }
                        tracing::info!(room = %room, session = %session, reason = reason.as_str(), "session cleanup completed late");
                    }
                    Some(e) => {
                        metrics::counter!(m::CLEANUP_FAILURES).increment(1);
                        tracing::error!(room = %room, session = %session, error = %e, "session cleanup failed; left to the reconciler");
                    }
                },
            }
        });
    }

    /// One pass of abrupt-loss detection over this node's sessions: shows
    /// silent ones as reconnecting, recovers those that came back, and ends
    /// those silent for the whole grace window.
    pub async fn sweep(&self, suspect_after: Duration, remove_after: Duration) {
        for live in self.sessions.all() {
            // Closing here (once) keeps the next sweep off it; the rest of
            // the close runs in the background, so one slow close never
            // holds up liveness for everybody else.
            if live.is_closed() {
                continue;
            }
            if live.is_waiting() && live.age() >= self.limits.pending_timeout {
                if live.close(LeaveReason::Expired) {
                    self.close_in_background(&live.room, &live.id, &live.user, LeaveReason::Expired);
                }
                continue;
            }
            let presence = match live.assess(suspect_after, remove_after) {
                Liveness::Alive | Liveness::StillSuspect => continue,
                Liveness::TurnedSuspect => Presence::Reconnecting,
                Liveness::Recovered => Presence::Connected,
                Liveness::Lost(reason) => {
                    if live.close(reason) {
                        self.close_in_background(&live.room, &live.id, &live.user, reason);
                    }
                    continue;
                }
            };
            tracing::info!(room = %live.room, session = %live.id, presence = presence.as_str(), "presence");
            match self.store.set_presence(&live.room, &live.id, presence).await {
                Ok(true) => self.broadcast_roster(&live.room).await,
                Ok(false) => {}
                Err(e) => tracing::warn!(session = %live.id, error = %e, "presence not recorded"),
            }
        }
    }

    /// Ends every live session of this node (process shutdown).
    pub async fn shutdown(&self) {
        for live in self.sessions.all() {
            if let Err(e) = self.end_session(&live.room, &live.id, &live.user, LeaveReason::NodeShutdown).await {
                tracing::warn!(session = %live.id, error = %e, "session not fully ended at shutdown");
            }
        }
        self.root.cancel();
        if let Err(e) = self.store.drop_lease(&self.node_id).await {
            tracing::warn!(error = %e, "lease not dropped at shutdown");
        }
    }

    /// Closes rooms nobody is in: empty for longer than the empty-room
    /// timeout, or never joined within the unused-room timeout. Returns how
    /// many it closed.
    pub async fn close_idle_rooms(&self) -> Result<usize, DbError> {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let now = now_ms();
        let idle = self.db.idle_rooms(now, ms(self.limits.empty_room), ms(self.limits.unused_room)).await?;
        let mut closed = 0;
        for (code, reason) in idle {
            if self.db.end_room(&code, reason, now).await? {
                tracing::info!(room = %code, reason, "room closed itself");
                closed += 1;
            }
        }
        Ok(closed)
    }

    /// The caller's own member entry, proving they own `session`.
    async fn actor(&self, who: &Identity, session: &SessionId) -> Result<(RoomCode, MemberEntry), AppError> {
        let room = match self.sessions.get(session) {
            Some(live) => live.room.clone(),
            None => {
                let row = self.db.participant(session.as_str()).await.map_err(db_down)?.ok_or(AppError::NotInRoom)?;
                RoomCode::parse(&row.room_code).map_err(|_| AppError::Internal)?
            }
        };
        let members = self.store.members(&room).await.map_err(store_down)?;
        match members.into_iter().find(|m| &m.session == session) {
            Some(me) if me.user == who.user_id => Ok((room, me)),
            Some(_) => Err(AppError::Forbidden),
            None => Err(AppError::NotInRoom),
        }
    }

    /// A participant of the room by public id, among the admitted ones or
    /// (`waiting`) the requests.
    async fn find(&self, room: &RoomCode, id: &ParticipantId, waiting: bool) -> Result<MemberEntry, AppError> {
        let list = if waiting { self.store.pending(room).await } else { self.store.members(room).await };
        list.map_err(store_down)?.into_iter().find(|m| &m.participant == id).ok_or(AppError::NotInRoom)
    }

    async fn set_flag(
        &self,
        room: &RoomCode,
        session: &SessionId,
        change: &(dyn for<'e> Fn(&'e mut MemberEntry) -> bool + Send + Sync),
    ) -> Result<bool, AppError> {
        Ok(self.store.update_member(room, session, change).await.map_err(store_down)?.is_some())
    }

    /// Ends the meeting: the room is marked ended, then every session in it
    /// (admitted or waiting) ends with reason `room-ended`.
    async fn end_meeting(&self, room: &RoomCode) -> Result<(), AppError> {
        self.db.end_room(room.as_str(), "ended", now_ms()).await.map_err(db_down)?;
        let mut everyone = self.store.members(room).await.map_err(store_down)?;
        everyone.extend(self.store.pending(room).await.map_err(store_down)?);
        let mut result = Ok(());
        for m in everyone {
            if let Err(e) = self.end_session(room, &m.session, &m.user, LeaveReason::RoomEnded).await {
                result = Err(e);
            }
        }
        result
    }

    fn new_ids() -> (SessionId, ParticipantId) {
        let session = SessionId::new(uuid::Uuid::new_v4().simple().to_string());
        let participant = ParticipantId::new(format!("p{}", &uuid::Uuid::new_v4().simple().to_string()[..12]));
        (session, participant)
    }
}

#[async_trait]
impl RoomService for Rooms {
    async fn create_room(&self, creator: &Identity, options: RoomOptions) -> Result<RoomCode, AppError> {
        let RoomOptions { private, host_unmutes } = options;
        let open = self.db.open_rooms_created_by(creator.user_id.as_str()).await.map_err(db_down)?;
        if open >= MAX_OPEN_ROOMS_PER_PERSON {
            tracing::info!(user = %creator.user_id, open, "room not created: too many open rooms");
            return Err(AppError::Limited {
                message: format!(
                    "You already have {open} open rooms. Use one of them, or wait until unused ones close."
                ),
                retry_after_s: 3600,
            });
        }
        // 26^10 codes; a collision is retried with a fresh code.
        for _ in 0..5 {
            let letters: [u8; 10] = rand::random();
            let code = RoomCode::from_letters(&letters);
            if self.db.room(code.as_str()).await.map_err(db_down)?.is_some() {
                continue;
            }
            let name = match &creator.display_name {
                Some(n) => format!("{n}'s meeting"),
                None => "Meeting".to_owned(),
            };
            self.db
                .insert_room(db::room::Model {
                    code: code.to_string(),
                    name,
                    private,
                    created_by: creator.user_id.to_string(),
                    created_at_ms: now_ms(),
                    ended_at_ms: None,
                    end_reason: None,
                    host_unmutes,
                })
                .await
                .map_err(db_down)?;
            tracing::info!(room = %code, private, host_unmutes, "room created");
            return Ok(code);
        }
        Err(AppError::Internal)
    }

    async fn room_info(&self, code: &RoomCode) -> Result<RoomInfo, AppError> {
        let room = self.db.room(code.as_str()).await.map_err(db_down)?.ok_or(AppError::RoomNotFound)?;
        Ok(RoomInfo {
            code: code.clone(),
            private: room.private,
            ended: room.ended_at_ms.is_some(),
            host_unmutes: room.host_unmutes,
        })
    }

    async fn join(&self, who: &Identity, code: &RoomCode, display_name: &str) -> Result<JoinOutcome, AppError> {
        let room = self.db.room(code.as_str()).await.map_err(db_down)?.ok_or(AppError::RoomNotFound)?;
        if room.ended_at_ms.is_some() {
            return Err(AppError::RoomEnded);
        }
        // The creator is never kept waiting; the store gives the role in the
        // same step that records the arrival (one admin, however many arrive).
        let creator = room.created_by == who.user_id.as_str();
        let state = if room.private && !creator { ParticipantState::Pending } else { ParticipantState::Active };
        if state == ParticipantState::Pending {
            let waiting = self.store.pending(code).await.map_err(store_down)?;
            if waiting.iter().filter(|w| w.user != who.user_id).count() >= MAX_PENDING {
                tracing::info!(room = %code, "join request refused: too many waiting");
                return Err(AppError::Limited {
                    message: "Too many people are waiting to be let in. Please try again later.".into(),
                    retry_after_s: 30,
                });
            }
        }
        let (session, participant) = Self::new_ids();
        let entry = MemberEntry {
            session: session.clone(),
            participant: participant.clone(),
            user: who.user_id.clone(),
            name: display_name.to_owned(),
            role: Role::Member,
            state,
            node: self.node_id.clone(),
            joined_at_ms: now_ms(),
            presence: Presence::Connected,
            audio_muted: false,
            video_muted: false,
            audio_locked: false,
        };

        // Store first; if the database then fails, undo the store write so
        // nothing is left half-way.
        let (replaced, role) = match state {
            ParticipantState::Active => self.store.join_member(code, &entry, creator).await,
            ParticipantState::Pending => self.store.put_pending(code, &entry).await.map(|r| (r, Role::Member)),
        }
        .map_err(store_down)?;
        let row = db::participant::Model {
            session_id: session.to_string(),
            participant_id: participant.to_string(),
            room_code: code.to_string(),
            user_id: who.user_id.to_string(),
            display_name: display_name.to_owned(),
            role: role.as_str().to_owned(),
            state: state.as_str().to_owned(),
            node_id: self.node_id.clone(),
            joined_at_ms: entry.joined_at_ms,
        };
        if let Err(e) = self.db.insert_participant(row).await {
            if let Err(undo) = self.store.remove_session(code, &session, &who.user_id).await {
                tracing::error!(session = %session, error = %undo, "join undo failed; the reconciler must reap it");
            }
            return Err(db_down(e));
        }
        let live = Arc::new(LiveSession::new(
            session.clone(),
            code.clone(),
            who.user_id.clone(),
            participant.clone(),
            self.root.child_token(),
        ));
        live.set_waiting(state == ParticipantState::Pending);
        self.sessions.insert(live);
        tracing::info!(room = %code, session = %session, participant = %participant, role = role.as_str(), "joined");

        // A rejoin (refresh, second tab) replaces the person's older session.
        if let Some(old) = replaced {
            if let Err(e) = self.end_session(code, &old, &who.user_id, LeaveReason::Replaced).await {
                tracing::warn!(session = %old, error = %e, "replaced session not fully ended");
            }
        }
        self.broadcast_roster(code).await;
        // Someone waiting to be let in sees nothing of the room but its name.
        let roster = match state {
            ParticipantState::Active => self.roster(code).await.map_err(store_down)?,
            ParticipantState::Pending => Vec::new(),
        };
        Ok(JoinOutcome { session_id: session, participant_id: participant, role, state, roster })
    }

    async fn leave(&self, who: &Identity, session: &SessionId, reason: LeaveReason) -> Result<(), AppError> {
        let (room, owner) = match self.sessions.get(session) {
            Some(live) => (live.room.clone(), live.user.clone()),
            None => match self.db.participant(session.as_str()).await.map_err(db_down)? {
                Some(row) => {
                    (RoomCode::parse(&row.room_code).map_err(|_| AppError::Internal)?, UserId::new(row.user_id))
                }
                // Already gone: leaving twice is fine.
                None => return Ok(()),
            },
        };
        if owner != who.user_id {
            tracing::warn!(session = %session, "leave refused: not the caller's session");
            return Err(AppError::Forbidden);
        }
        self.end_session(&room, session, &owner, reason).await
    }

    async fn act(&self, who: &Identity, session: &SessionId, action: RoomAction) -> Result<(), AppError> {
        let (room, me) = self.actor(who, session).await?;
        if action.needs_admin() && me.role != Role::Admin {
            tracing::warn!(room = %room, session = %session, ?action, "refused: not the admin");
            return Err(AppError::Forbidden);
        }
        tracing::info!(room = %room, session = %session, ?action, "room action");
        match action {
            RoomAction::Admit { participant, approve: true } => {
                let mut entry = self.find(&room, &participant, true).await?;
                entry.state = ParticipantState::Active;
                if !self.store.admit(&room, &entry).await.map_err(store_down)? {
                    return Err(AppError::NotInRoom);
                }
                if let Some(live) = self.sessions.get(&entry.session) {
                    live.set_waiting(false);
                }
                self.db.set_state(entry.session.as_str(), ParticipantState::Active.as_str()).await.map_err(db_down)?;
            }
            RoomAction::Admit { participant, approve: false } => {
                let entry = self.find(&room, &participant, true).await?;
                return self.end_session(&room, &entry.session, &entry.user, LeaveReason::Denied).await;
            }
            RoomAction::Kick { participant } => {
                let target = self.find(&room, &participant, false).await?;
                if target.session == me.session {
                    return Err(AppError::Invalid("Use Leave to leave the meeting.".into()));
                }
                return self.end_session(&room, &target.session, &target.user, LeaveReason::Kicked).await;
            }
            RoomAction::MuteParticipant { participant } => {
                let target = self.find(&room, &participant, false).await?;
                let lock = self.db.room(room.as_str()).await.map_err(db_down)?.is_some_and(|r| r.host_unmutes);
                self.set_flag(&room, &target.session, &|e| {
                    let changed = !e.audio_muted || e.audio_locked != lock;
                    (e.audio_muted, e.audio_locked) = (true, lock);
                    changed
                })
                .await?;
                self.set_forwarding(&room, &target.session, MediaKind::Audio, false);
            }
            RoomAction::AllowUnmute { participant } => {
                let target = self.find(&room, &participant, false).await?;
                self.set_flag(&room, &target.session, &|e| std::mem::take(&mut e.audio_locked)).await?;
            }
            RoomAction::MakeAdmin { participant } => {
                let target = self.find(&room, &participant, false).await?;
                if target.session != me.session {
                    // One step in the store: never two admins, never none.
                    if !self.store.transfer_admin(&room, &me.session, &target.session).await.map_err(store_down)? {
                        return Err(AppError::NotInRoom);
                    }
                    self.db.set_role(target.session.as_str(), Role::Admin.as_str()).await.map_err(db_down)?;
                    self.db.set_role(me.session.as_str(), Role::Member.as_str()).await.map_err(db_down)?;
                }
            }
            RoomAction::EndMeeting => return self.end_meeting(&room).await,
            RoomAction::Hand { up: true } => {
                self.store.raise_hand(&room, session, now_ms()).await.map_err(store_down)?;
            }
            RoomAction::Hand { up: false } => {
                self.store.lower_hand(&room, session).await.map_err(store_down)?;
            }
            RoomAction::Mute { kind, muted } => {
                // Checked in the same write that would unmute, so an admin's
                // mute landing meanwhile is never overwritten.
                let refused = AtomicBool::new(false);
                self.set_flag(&room, session, &|e| {
                    let locked = kind == MediaKind::Audio && !muted && e.audio_locked;
                    refused.store(locked, Ordering::Release);
                    if locked {
                        return false;
                    }
                    let flag = match kind {
                        MediaKind::Audio => &mut e.audio_muted,
                        MediaKind::Video => &mut e.video_muted,
                    };
                    std::mem::replace(flag, muted) != muted
                })
                .await?;
                if refused.load(Ordering::Acquire) {
                    return Err(AppError::MutedByHost);
                }
                // Unmuting oneself lifts an admin's mute (where the room
                // leaves it to the admin, only once they allowed it).
                if kind == MediaKind::Audio && !muted {
                    self.set_forwarding(&room, session, MediaKind::Audio, true);
                }
            }
        }
        self.broadcast_roster(&room).await;
        Ok(())
    }
}
