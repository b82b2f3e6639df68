//! Live sessions on this node: one [`LiveSession`] per joined session, held
//! by the [`SessionRegistry`]. A session's tasks (its socket, later its media)
//! run under its cancellation token, a child of the process token; closing
//! the session cancels them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use app::model::{LeaveReason, ParticipantId, RoomCode, SessionId, UserId};
use tokio_util::sync::CancellationToken;

use crate::lifetime::Lifetime;

/// One joined session living on this node.
#[derive(Debug)]
pub struct LiveSession {
    /// The session's id.
    pub id: SessionId,
    /// The session's room.
    pub room: RoomCode,
    /// The session's user.
    pub user: UserId,
    /// The session's public handle.
    pub participant: ParticipantId,
    /// Closed once by [`LiveSession::close`]; its token ends the session's
    /// tasks (socket, media).
    lifetime: Lifetime<LeaveReason>,
    /// Process-clock milliseconds of the last sign of life (join, any frame).
    last_seen_ms: AtomicU64,
    /// Signalling sockets attached right now (0 or 1: a new socket replaces
    /// the old one, whose guard may drop a moment later).
    sockets: AtomicUsize,
    /// The token of the socket attached last; cancelled when another one
    /// replaces it (one live socket per session).
    socket: Mutex<Option<(CancellationToken, Arc<AtomicBool>)>>,
    /// Whether a socket was ever attached.
    connected_once: AtomicBool,
    /// Whether peers are shown this session as reconnecting.
    suspect: AtomicBool,
    /// The last socket ended with a close frame from the page (a leave or a
    /// tab close follows): only silence, not the missing socket, is suspect.
    closed_cleanly: AtomicBool,
    /// Waiting for an admin's approval (private rooms).
    waiting: AtomicBool,
    /// When the session was created (a waiting request expires from here).
    created: Instant,
}

/// Milliseconds since the first call in this process (monotonic). Tokio's
/// clock, so tests can pause and advance time instead of sleeping.
fn clock_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What the liveness sweep should do with a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Answering; nothing to do.
    Alive,
    /// Just turned silent or lost its socket: show it as reconnecting.
    TurnedSuspect,
    /// Came back: show it as connected again.
    Recovered,
    /// Still suspect, inside the grace window.
    StillSuspect,
    /// Silent for the whole grace window: remove it for this reason.
    Lost(LeaveReason),
}

impl LiveSession {
    /// A new session, seen now and not waiting (see
    /// [`LiveSession::set_waiting`]); `cancel` (a child of the process
    /// token) becomes its token.
    pub fn new(
        id: SessionId,
        room: RoomCode,
        user: UserId,
        participant: ParticipantId,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            id,
            room,
            user,
            participant,
            lifetime: Lifetime::new(cancel),
            last_seen_ms: AtomicU64::new(clock_ms()),
            sockets: AtomicUsize::new(0),
            socket: Mutex::new(None),
            connected_once: AtomicBool::new(false),
            suspect: AtomicBool::new(false),
            closed_cleanly: AtomicBool::new(false),
            waiting: AtomicBool::new(false),
            created: Instant::now(),
        }
    }

    /// Marks the session as waiting for approval (`true`) or admitted.
    pub fn set_waiting(&self, waiting: bool) {
        self.waiting.store(waiting, Ordering::Release);
    }

    /// Waiting for an admin's approval.
    pub fn is_waiting(&self) -> bool {
        self.waiting.load(Ordering::Acquire)
    }

    /// How long ago the session was created.
    pub fn age(&self) -> Duration {
        self.created.elapsed()
    }

    /// Records that the page closed its socket with a close frame.
    pub fn note_clean_close(&self) {
        self.closed_cleanly.store(true, Ordering::Release);
    }

    /// Records a sign of life (a frame from the client).
    pub fn touch(&self) {
        self.last_seen_ms.store(clock_ms(), Ordering::Release);
    }

    /// How long the session has been silent.
    pub fn silent_for(&self) -> Duration {
        Duration::from_millis(clock_ms().saturating_sub(self.last_seen_ms.load(Ordering::Acquire)))
    }

    /// Attaches a signalling socket until the guard drops. A session has
    /// one live socket: the one attached before is told to go (its token,
    /// [`SocketGuard::token`], is cancelled), as a reconnect replaces it.
    pub fn attach_socket(self: &Arc<Self>) -> SocketGuard {
        let token = self.lifetime.child_token();
        let replaced = Arc::new(AtomicBool::new(false));
        let previous = self.socket.lock().unwrap_or_else(|p| p.into_inner()).replace((token.clone(), replaced.clone()));
        if let Some((previous, was_replaced)) = previous {
            // Marked before the cancel, so its writer reads it when it wakes.
            was_replaced.store(true, Ordering::Release);
            previous.cancel();
        }
        self.sockets.fetch_add(1, Ordering::AcqRel);
        self.connected_once.store(true, Ordering::Release);
        self.closed_cleanly.store(false, Ordering::Release);
        self.touch();
        SocketGuard { session: self.clone(), token, replaced }
    }

    /// Decides the session's liveness: suspect once silent for `suspect_after`
    /// or when its socket is gone; lost once silent for `remove_after`.
    pub fn assess(&self, suspect_after: Duration, remove_after: Duration) -> Liveness {
        let silent = self.silent_for();
        let detached = self.sockets.load(Ordering::Acquire) == 0;
        let connected_once = self.connected_once.load(Ordering::Acquire);
        if silent >= remove_after {
            return Liveness::Lost(if detached && connected_once {
                LeaveReason::SocketClosed
            } else {
                LeaveReason::HeartbeatLost
            });
        }
        let dropped = detached && connected_once && !self.closed_cleanly.load(Ordering::Acquire);
        let suspect = silent >= suspect_after || dropped;
        match (suspect, self.suspect.swap(suspect, Ordering::AcqRel)) {
            (true, false) => Liveness::TurnedSuspect,
            (true, true) => Liveness::StillSuspect,
            (false, true) => Liveness::Recovered,
            (false, false) => Liveness::Alive,
        }
    }

    /// Closes the live part of the session: records the reason and cancels
    /// its tasks. Returns `true` for the one call that closed it.
    pub fn close(&self, reason: LeaveReason) -> bool {
        self.lifetime.close(reason)
    }

    /// Closed (by its close, or by the process shutting down).
    pub fn is_closed(&self) -> bool {
        self.lifetime.is_closed()
    }

    /// The reason of the close, once closed.
    pub fn reason(&self) -> Option<LeaveReason> {
        self.lifetime.reason()
    }

    /// A token cancelled when the session closes.
    pub fn token(&self) -> CancellationToken {
        self.lifetime.token().clone()
    }
}

/// A socket's attachment to its session; detaches on drop.
#[derive(Debug)]
pub struct SocketGuard {
    session: Arc<LiveSession>,
    /// Cancelled when the session closes or a newer socket replaces this one.
    token: CancellationToken,
    /// Set (before the cancel) when a newer socket replaced this one. Not
    /// derived from the tokens: a parent's cancel reaches the children
    /// before the parent reads as cancelled.
    replaced: Arc<AtomicBool>,
}

impl SocketGuard {
    /// Cancelled when this socket must go: its session closed, or a newer
    /// socket of the same session replaced it.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Whether a newer socket replaced this one (the session lives on).
    pub fn replaced(&self) -> bool {
        self.replaced.load(Ordering::Acquire)
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        // The session's slot may keep this token: cancelling a finished
        // socket's token later is harmless.
        self.session.sockets.fetch_sub(1, Ordering::AcqRel);
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

    /// Adds a session, under its id.
    pub fn insert(&self, session: Arc<LiveSession>) {
        self.lock().insert(session.id.clone(), session);
    }

    /// The session with `id`, left in the registry.
    pub fn get(&self, id: &SessionId) -> Option<Arc<LiveSession>> {
        self.lock().get(id).cloned()
    }

    /// Removes and returns the session: the one caller that gets `Some`
    /// owns its close.
    pub fn take(&self, id: &SessionId) -> Option<Arc<LiveSession>> {
        self.lock().remove(id)
    }

    /// How many sessions live on this node.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// No session lives on this node.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Every session of this node.
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

    #[tokio::test(start_paused = true)]
    async fn liveness_goes_suspect_then_lost_and_recovers_on_a_frame() {
        let s = Arc::new(session());
        let (suspect, remove) = (Duration::from_millis(40), Duration::from_millis(120));
        assert_eq!(s.assess(suspect, remove), Liveness::Alive);
        let guard = s.attach_socket();
        tokio::time::advance(Duration::from_millis(60)).await;
        assert_eq!(s.assess(suspect, remove), Liveness::TurnedSuspect);
        assert_eq!(s.assess(suspect, remove), Liveness::StillSuspect);
        s.touch();
        assert_eq!(s.assess(suspect, remove), Liveness::Recovered);
        drop(guard);
        assert_eq!(s.assess(suspect, remove), Liveness::TurnedSuspect, "a dropped socket is suspect at once");
        let again = s.attach_socket();
        s.note_clean_close();
        drop(again);
        assert_eq!(s.assess(suspect, remove), Liveness::Recovered, "a clean close alone is not suspect");
        tokio::time::advance(Duration::from_millis(60)).await;
        assert_eq!(s.assess(suspect, remove), Liveness::TurnedSuspect, "silence still is");
        tokio::time::advance(Duration::from_millis(130)).await;
        assert_eq!(s.assess(suspect, remove), Liveness::Lost(LeaveReason::SocketClosed));
        s.close(LeaveReason::SocketClosed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_that_never_connects_is_lost_as_silent() {
        let s = session();
        tokio::time::advance(Duration::from_millis(30)).await;
        let lost = s.assess(Duration::from_millis(10), Duration::from_millis(20));
        assert_eq!(lost, Liveness::Lost(LeaveReason::HeartbeatLost));
        s.close(LeaveReason::HeartbeatLost);
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

    #[test]
    fn a_new_socket_replaces_the_old_one() {
        let s = Arc::new(session());
        let first = s.attach_socket();
        let second = s.attach_socket();
        assert!(first.token().is_cancelled() && first.replaced(), "the older socket is told to go");
        assert!(!second.token().is_cancelled());
        drop(first);
        assert_eq!(s.assess(Duration::from_secs(5), Duration::from_secs(10)), Liveness::Alive, "still attached");
        s.close(LeaveReason::Left);
        assert!(second.token().is_cancelled() && !second.replaced(), "a closed session ends its socket");
    }
}
