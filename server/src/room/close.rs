//! The one close path of a session ([`Rooms::end_session`]): the live part
//! once, the room told at once, then the durable steps retried and
//! verified, finished in the background if a backing service stays away;
//! and a person's leave.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use app::model::{LeaveReason, RoomCode, SessionId, UserId};
use app::ports::Identity;
use backon::{ExponentialBuilder, Retryable};

use crate::db::DbError;
use crate::metrics as m;
use crate::nodes::NodeEvent;
use crate::store::StoreError;

use super::*;

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

impl Rooms {
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
    ) -> Result<(), RoomError> {
        let Some(rooms) = self.me.upgrade() else { return self.close_session(room, session, user, reason).await };
        let (room, session, user) = (room.clone(), session.clone(), user.clone());
        let close = self.tasks.spawn(async move { rooms.close_session(&room, &session, &user, reason).await });
        close.await.unwrap_or_else(|e| Err(RoomError::Internal(format!("the close task failed: {e}"))))
    }

    /// What [`Rooms::end_session`] runs.
    pub(super) async fn close_session(
        &self,
        room: &RoomCode,
        session: &SessionId,
        user: &UserId,
        reason: LeaveReason,
    ) -> Result<(), RoomError> {
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
                Err(RoomError::Unfinished(e.to_string()))
            }
        }
    }

    /// Runs [`Rooms::close_session`] on the tracked tasks without waiting
    /// for it (the liveness sweep, which must not wait on any one close).
    pub(super) fn close_in_background(&self, room: &RoomCode, session: &SessionId, user: &UserId, reason: LeaveReason) {
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

    pub(super) async fn leave_session(
        &self,
        who: &Identity,
        session: &SessionId,
        reason: LeaveReason,
    ) -> Result<(), RoomError> {
        let (room, owner) = match self.sessions.get(session) {
            Some(live) => (live.room.clone(), live.user.clone()),
            None => match self.db.participant(session.as_str()).await? {
                Some(row) => (
                    RoomCode::parse(&row.room_code).map_err(|_| RoomError::Internal("unreadable room code".into()))?,
                    UserId::new(row.user_id),
                ),
                // Already gone: leaving twice is fine.
                None => return Ok(()),
            },
        };
        if owner != who.user_id {
            tracing::warn!(session = %session, "leave refused: not the caller's session");
            return Err(RoomError::Forbidden);
        }
        self.end_session(&room, session, &owner, reason).await
    }
}
