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
    JoinOutcome, LeaveReason, ParticipantId, ParticipantState, ParticipantView, Presence, Role, RoomCode, RoomInfo,
    SessionId, UserId,
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

/// The room service of one node.
pub struct Rooms {
    db: Db,
    store: Arc<dyn LiveStore>,
    node_id: String,
    sessions: SessionRegistry,
    hub: Hub,
    /// Parent of every session's token; cancelled at shutdown.
    root: CancellationToken,
    /// The SFU: each session's media, closed by [`Rooms::end_session`].
    media: Arc<Sfu>,
    /// Owns the background cleanups (a child of the process's tasks).
    tasks: TaskTracker,
    /// This service itself, for background cleanups (no cycle: weak).
    me: Weak<Rooms>,
}

impl Rooms {
    pub fn new(
        db: Db,
        store: Arc<dyn LiveStore>,
        node_id: String,
        root: CancellationToken,
        media: Arc<Sfu>,
        tasks: TaskTracker,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
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

    /// The room's admitted participants, in arrival order.
    pub async fn roster(&self, room: &RoomCode) -> Result<Vec<ParticipantView>, StoreError> {
        Ok(self.store.members(room).await?.iter().map(MemberEntry::view).collect())
    }

    async fn broadcast_roster(&self, room: &RoomCode) {
        match self.roster(room).await {
            Ok(participants) => self.hub.publish(room, ServerMsg::Roster { participants }),
            Err(e) => tracing::warn!(room = %room, error = %e, "roster not broadcast"),
        }
    }

    /// The one close path of a session. Idempotent: a second call for the
    /// same session finds nothing left and changes nothing.
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
        let started = Instant::now();
        // 1. Live part, exactly once: the registry hands it to one caller.
        let closed_here = self.sessions.take(session).is_some_and(|live| live.close(reason));
        // Its media (peer connection, tracks, forwarders from and to it),
        // before the store entries so no late resource write outlives them;
        // the others renegotiate without its tracks.
        self.media.close_session(room, session, reason).await;
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
            let presence = match live.assess(suspect_after, remove_after) {
                Liveness::Alive | Liveness::StillSuspect => continue,
                Liveness::TurnedSuspect => Presence::Reconnecting,
                Liveness::Recovered => Presence::Connected,
                Liveness::Lost(reason) => {
                    if let Err(e) = self.end_session(&live.room, &live.id, &live.user, reason).await {
                        tracing::warn!(session = %live.id, error = %e, "lost session not fully ended");
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

    fn new_ids() -> (SessionId, ParticipantId) {
        let session = SessionId::new(uuid::Uuid::new_v4().simple().to_string());
        let participant = ParticipantId::new(format!("p{}", &uuid::Uuid::new_v4().simple().to_string()[..12]));
        (session, participant)
    }
}

#[async_trait]
impl RoomService for Rooms {
    async fn create_room(&self, creator: &Identity, private: bool) -> Result<RoomCode, AppError> {
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
                })
                .await
                .map_err(db_down)?;
            tracing::info!(room = %code, private, "room created");
            return Ok(code);
        }
        Err(AppError::Internal)
    }

    async fn room_info(&self, code: &RoomCode) -> Result<RoomInfo, AppError> {
        let room = self.db.room(code.as_str()).await.map_err(db_down)?.ok_or(AppError::RoomNotFound)?;
        Ok(RoomInfo { code: code.clone(), private: room.private, ended: room.ended_at_ms.is_some() })
    }

    async fn join(&self, who: &Identity, code: &RoomCode, display_name: &str) -> Result<JoinOutcome, AppError> {
        let room = self.db.room(code.as_str()).await.map_err(db_down)?.ok_or(AppError::RoomNotFound)?;
        if room.ended_at_ms.is_some() {
            return Err(AppError::RoomEnded);
        }
        let role = if room.created_by == who.user_id.as_str() { Role::Admin } else { Role::Member };
        let state =
            if room.private && role == Role::Member { ParticipantState::Pending } else { ParticipantState::Active };
        let (session, participant) = Self::new_ids();
        let entry = MemberEntry {
            session: session.clone(),
            participant: participant.clone(),
            user: who.user_id.clone(),
            name: display_name.to_owned(),
            role,
            state,
            node: self.node_id.clone(),
            joined_at_ms: now_ms(),
            presence: Presence::Connected,
        };

        // Store first; if the database then fails, undo the store write so
        // nothing is left half-way.
        let replaced = match state {
            ParticipantState::Active => self.store.put_member(code, &entry).await,
            ParticipantState::Pending => self.store.put_pending(code, &entry).await,
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
        self.sessions.insert(Arc::new(LiveSession::new(
            session.clone(),
            code.clone(),
            who.user_id.clone(),
            participant.clone(),
            self.root.child_token(),
        )));
        tracing::info!(room = %code, session = %session, participant = %participant, role = role.as_str(), "joined");

        // A rejoin (refresh, second tab) replaces the person's older session.
        if let Some(old) = replaced {
            if let Err(e) = self.end_session(code, &old, &who.user_id, LeaveReason::Replaced).await {
                tracing::warn!(session = %old, error = %e, "replaced session not fully ended");
            }
        }
        self.broadcast_roster(code).await;
        let roster = self.roster(code).await.map_err(store_down)?;
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
}
