//! The close-once guard every resource owner shares (a live session, a
//! media session, a published track, a forwarder).
//!
//! A [`Lifetime`] holds the owner's cancellation token, a child of its
//! parent's (process → session → media session → track → forwarder), and
//! the reason it closed. [`Lifetime::close`] closes exactly once: the first
//! call records the reason and cancels the token, which ends the owner's
//! tasks and cascades to its children; later calls change nothing and say
//! so. [`Lifetime::is_closed`] has one meaning everywhere: the owner's
//! token is cancelled, by its own close or by a parent's. Owners call
//! `close` from `Drop` as their backstop.

use std::sync::OnceLock;

use tokio_util::sync::CancellationToken;

/// Close once, with a reason; see the module docs.
#[derive(Debug)]
pub struct Lifetime<R: Copy> {
    token: CancellationToken,
    reason: OnceLock<R>,
}

impl<R: Copy> Lifetime<R> {
    /// A lifetime cancelled through `token` (usually a parent's child token).
    pub fn new(token: CancellationToken) -> Self {
        Self { token, reason: OnceLock::new() }
    }

    /// Closes: `true` for the one call that recorded its `reason` and
    /// cancelled the token; `false` (and nothing changes) for every other.
    pub fn close(&self, reason: R) -> bool {
        if self.reason.set(reason).is_err() {
            return false;
        }
        self.token.cancel();
        true
    }

    /// Whether the owner is closed: by its own [`Lifetime::close`] or by a
    /// parent's (the token is cancelled either way).
    pub fn is_closed(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Why it closed, when closed by [`Lifetime::close`] (`None` when open,
    /// or closed only by a parent).
    pub fn reason(&self) -> Option<R> {
        self.reason.get().copied()
    }

    /// The owner's token, for its tasks to watch.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// A token for a child owner: cancelled with this one.
    pub fn child_token(&self) -> CancellationToken {
        self.token.child_token()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    #[test]
    fn closes_once_and_keeps_the_first_reason() {
        let l = Lifetime::new(CancellationToken::new());
        assert!(!l.is_closed() && l.reason().is_none());
        assert!(l.close("left"));
        assert!(!l.close("kicked"), "a second close changes nothing");
        assert_eq!(l.reason(), Some("left"));
        assert!(l.is_closed() && l.token().is_cancelled());
    }

    #[test]
    fn a_parents_close_reaches_it_and_its_children() {
        let parent = Lifetime::new(CancellationToken::new());
        let child = Lifetime::<&str>::new(parent.child_token());
        let grandchild = Lifetime::<&str>::new(child.child_token());
        parent.close("shutdown");
        assert!(child.is_closed() && grandchild.is_closed());
        assert_eq!(child.reason(), None, "closed by its parent, not by itself");
        assert!(child.close("late"), "its own close still records a reason once");
        assert!(!child.close("later"));
    }

    #[test]
    fn racing_closes_have_one_winner() {
        for _ in 0..100 {
            let l = Arc::new(Lifetime::new(CancellationToken::new()));
            let wins = Arc::new(AtomicUsize::new(0));
            let threads: Vec<_> = (0..8)
                .map(|i| {
                    let (l, wins) = (l.clone(), wins.clone());
                    std::thread::spawn(move || {
                        if l.close(i) {
                            wins.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(wins.load(Ordering::Relaxed), 1);
            assert!(l.is_closed());
        }
    }

    #[tokio::test]
    async fn close_racing_a_task_that_starts_ends_it() {
        let l = Arc::new(Lifetime::new(CancellationToken::new()));
        let token = l.child_token();
        let closer = {
            let l = l.clone();
            tokio::spawn(async move { l.close(()) })
        };
        // A task started around the close still sees it.
        let task = tokio::spawn(async move { token.cancelled().await });
        assert!(closer.await.unwrap());
        tokio::time::timeout(std::time::Duration::from_secs(1), task).await.expect("the task ended").unwrap();
    }
}
