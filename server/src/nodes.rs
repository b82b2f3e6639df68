//! Messages between the nodes of one deployment, through the live store's
//! event channel (Redis pub/sub; the in-process store serves one node and
//! has none). A room's messages reach the sockets of every node; a session
//! ended on one node has its live part (socket, media) closed on the node
//! that holds it at once, not when that node's reconciler notices; an
//! admin's mute reaches the SFU that forwards the person's audio.

use std::sync::Arc;
use std::time::Duration;

use app::model::{LeaveReason, MediaKind, RoomCode, SessionId};
use app::signal::ServerMsg;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::store::LiveStore;

/// What one node tells the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum NodeEvent {
    /// A message for every socket of the room.
    Room {
        /// The room.
        room: RoomCode,
        /// The message.
        msg: ServerMsg,
    },
    /// The session ended (its durable state is gone): its socket and media
    /// close wherever they are.
    Ended {
        /// The session's room.
        room: RoomCode,
        /// The session.
        session: SessionId,
        /// Why it ended.
        reason: LeaveReason,
    },
    /// Forwarding of one publisher's media switched (an admin's mute).
    Forwarding {
        /// The publisher's room.
        room: RoomCode,
        /// The publisher's session.
        session: SessionId,
        /// Audio or video.
        kind: MediaKind,
        /// Forwarding is on (`false`: muted).
        on: bool,
    },
    /// A publisher's screen share started or stopped (their own, or an
    /// admin's stop).
    Screen {
        /// The publisher's room.
        room: RoomCode,
        /// The publisher's session.
        session: SessionId,
        /// Sharing now.
        on: bool,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    from: String,
    #[serde(flatten)]
    event: NodeEvent,
}

/// How long a stopping node still tries to send what it queued.
const DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// This node's sending side: events go out one at a time, in the order
/// they were sent (a room's rosters must not overtake each other).
pub struct Outbox {
    node: String,
    queue: Option<mpsc::UnboundedSender<String>>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").finish_non_exhaustive()
    }
}

impl Outbox {
    /// Starts the sender task on `tasks` when the store connects nodes.
    pub fn start(store: Arc<dyn LiveStore>, node: String, tasks: &TaskTracker, stop: CancellationToken) -> Self {
        if store.events().is_none() {
            return Self { node, queue: None };
        }
        let (queue, mut pending) = mpsc::unbounded_channel::<String>();
        tasks.spawn(async move {
            loop {
                let payload = tokio::select! {
                    () = stop.cancelled() => break,
                    p = pending.recv() => match p {
                        Some(p) => p,
                        None => return,
                    },
                };
                send(store.as_ref(), payload).await;
            }
            // Stopping: what was queued before (the node-shutdown rosters) still goes.
            let _ = tokio::time::timeout(DRAIN_LIMIT, async {
                while let Ok(payload) = pending.try_recv() {
                    send(store.as_ref(), payload).await;
                }
            })
            .await;
        });
        Self { node, queue: Some(queue) }
    }

    /// Queues `event` for the other nodes (nothing in a single-node setup).
    pub fn send(&self, event: NodeEvent) {
        let Some(queue) = &self.queue else { return };
        match serde_json::to_string(&Envelope { from: self.node.clone(), event }) {
            Ok(payload) => {
                let _ = queue.send(payload);
            }
            Err(e) => tracing::error!(error = %e, "node event not encoded"),
        }
    }

    /// Reads an event from the channel: `None` for this node's own events
    /// and for anything unreadable (logged).
    pub fn receive(&self, payload: &str) -> Option<NodeEvent> {
        match serde_json::from_str::<Envelope>(payload) {
            Ok(envelope) if envelope.from == self.node => None,
            Ok(envelope) => Some(envelope.event),
            Err(e) => {
                tracing::warn!(error = %e, "unreadable node event ignored");
                None
            }
        }
    }
}

async fn send(store: &dyn LiveStore, payload: String) {
    if let Err(e) = store.send_event(payload).await {
        // The others catch up from the store: their next roster read, and
        // their reconciler for sessions ended here.
        tracing::warn!(error = %e, "node event not sent");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(node: &str) -> Outbox {
        Outbox { node: node.into(), queue: None }
    }

    #[test]
    fn events_from_other_nodes_are_read_own_ones_skipped() {
        let event = NodeEvent::Ended {
            room: RoomCode::parse("abc-defg-hij").unwrap(),
            session: SessionId::new("s1"),
            reason: LeaveReason::Kicked,
        };
        let payload = serde_json::to_string(&Envelope { from: "node-a".into(), event: event.clone() }).unwrap();
        assert_eq!(outbox("node-b").receive(&payload), Some(event));
        assert_eq!(outbox("node-a").receive(&payload), None);
        assert_eq!(outbox("node-b").receive("{not json"), None);
        assert_eq!(outbox("node-b").receive(r#"{"from":"node-a","event":"unknown"}"#), None);
    }
}
