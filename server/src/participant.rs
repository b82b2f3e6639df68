//! Live sessions on this node: one [`LiveSession`] per joined session, held
//! by the [`SessionRegistry`]. A session's tasks (its socket, later its media)
//! run under its cancellation token, a child of the process token; closing
//! the session cancels them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use app::model::{LeaveReason, ParticipantId, RoomCode, SessionId, UserId};
use tokio_util::sync::CancellationToken;

/// One joined session living on this node.
#[derive(Debug)]
pub struct LiveSession {
    pub id: SessionId,
    pub room: RoomCode,
    pub user: UserId,
    pub participant: ParticipantId,
    /// Cancelled by [`LiveSession::close`]; the session's tasks watch it.
    cancel: CancellationToken,
    /// Set once by the first close; the guard of "exactly once".
    closed: AtomicBool,
    /// Why the session closed (set with `closed`).
    reason: OnceLock<LeaveReason>,
}

impl LiveSession {
    pub fn new(
        id: SessionId,
        room: RoomCode,
        user: UserId,
        participant: ParticipantId,
        cancel: CancellationToken,
    ) -> Self {
        Self { id, room, user, participant, cancel, closed: AtomicBool::new(false), reason: OnceLock::new() }
    }

    /// Closes the live part of the session: records the reason and cancels
    /// its tasks. Returns `true` for the one call that closed it.
    pub fn close(&self, reason: LeaveReason) -> bool {
        if self.closed.swap(true, Ordering::AcqRel) {
            return false;
        }
        let _ = self.reason.set(reason);
        self.cancel.cancel();
        true
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The reason of the close, once closed.
    pub fn reason(&self) -> Option<LeaveReason> {
        self.reason.get().copied()
    }

    /// A token cancelled when the session closes.
    pub fn token(&self) -> CancellationToken {
        self.cancel.clone()
    }
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        // Backstop: a session dropped without a close still stops its tasks.
        if !self.is_closed() {
            tracing::warn!(session = %self.id, room = %self.room, "live session dropped without close");
            self.close(LeaveReason::Reaped);
        }
    }
}

/// The live sessions of this node, by id.
#[derive(Debug, Default)]
pub struct SessionRegistry {
    map: Mutex<HashMap<SessionId, Arc<LiveSession>>>,
}

impl SessionRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Arc<LiveSession>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert(&self, session: Arc<LiveSession>) {
        self.lock().insert(session.id.clone(), session);
    }

    pub fn get(&self, id: &SessionId) -> Option<Arc<LiveSession>> {
        self.lock().get(id).cloned()
    }

    /// Removes and returns the session: the one caller that gets `Some`
    /// owns its close.
    pub fn take(&self, id: &SessionId) -> Option<Arc<LiveSession>> {
        self.lock().remove(id)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    pub fn all(&self) -> Vec<Arc<LiveSession>> {
        self.lock().values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> LiveSession {
        LiveSession::new(
            SessionId::new("s1"),
            RoomCode::parse("abc-defg-hij").unwrap(),
            UserId::new("u1"),
            ParticipantId::new("p1"),
            CancellationToken::new(),
        )
    }

    #[test]
    fn close_happens_once_and_keeps_the_first_reason() {
        let s = session();
        let token = s.token();
        assert!(s.close(LeaveReason::Left));
        assert!(!s.close(LeaveReason::Kicked));
        assert_eq!(s.reason(), Some(LeaveReason::Left));
        assert!(token.is_cancelled());
    }

    #[test]
    fn drop_without_close_cancels_tasks() {
        let s = session();
        let token = s.token();
        drop(s);
        assert!(token.is_cancelled());
    }

    #[test]
    fn parent_cancel_reaches_the_session() {
        let parent = CancellationToken::new();
        let s = LiveSession::new(
            SessionId::new("s2"),
            RoomCode::parse("abc-defg-hij").unwrap(),
            UserId::new("u"),
            ParticipantId::new("p"),
            parent.child_token(),
        );
        parent.cancel();
        assert!(s.token().is_cancelled());
    }

    #[test]
    fn take_hands_the_session_to_one_caller() {
        let r = SessionRegistry::default();
        let s = Arc::new(session());
        r.insert(s.clone());
        assert_eq!(r.len(), 1);
        assert!(r.take(&s.id).is_some());
        assert!(r.take(&s.id).is_none());
        assert!(r.is_empty());
        s.close(LeaveReason::Left);
    }
}
