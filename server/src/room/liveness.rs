//! Abrupt-loss detection (the sweep) and the node's shutdown.

use std::time::Duration;

use app::model::{LeaveReason, Presence};

use crate::participant::Liveness;

use super::*;

impl Rooms {
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

    /// Ends every live session of this node (process shutdown). When other
    /// nodes run, this node's rooms move to them first and the sessions end
    /// as `moved`: their pages join again at once, on the room's new node.
    pub async fn shutdown(&self) {
        self.start_draining();
        let reason = match self.drain().await {
            true => LeaveReason::Moved,
            false => LeaveReason::NodeShutdown,
        };
        for live in self.sessions.all() {
            if let Err(e) = self.end_session(&live.room, &live.id, &live.user, reason).await {
                tracing::warn!(session = %live.id, error = %e, "session not fully ended at shutdown");
            }
        }
        self.root.cancel();
        if let Err(e) = self.store.drop_lease(&self.node_id).await {
            tracing::warn!(error = %e, "lease not dropped at shutdown");
        }
    }
}
