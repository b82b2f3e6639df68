//! Where a room lives. A room's media is on one node: the one its first
//! arrival was recorded on ([`crate::store::LiveStore::join_member`] places an unplaced
//! room in the same atomic step). Before a join, any node asks
//! [`Rooms::home_of`]: a room on this node is joined here; a room on another
//! live node is joined there (the edge relays the request); an unplaced
//! room goes to the live node with the fewest sessions that is not
//! draining; a room whose node's lease has lapsed is moved off it first.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use app::model::RoomCode;

use crate::store::NodeLease;

use super::{RoomError, Rooms};

/// How long a node's lease lasts unless renewed (every
/// [`LEASE_EVERY`]): a dead node's rooms move, and its sessions are reaped,
/// soon after.
pub const LEASE_TTL: Duration = Duration::from_secs(9);
/// How often a node renews its lease.
pub const LEASE_EVERY: Duration = Duration::from_secs(3);

/// Where a room's joins and sockets are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Home {
    /// On this node.
    Here,
    /// On another live node, reached at `url`.
    There {
        /// The node's id.
        node: String,
        /// Its `CLEANROOM_PUBLIC_URL`.
        url: String,
    },
}

impl Rooms {
    /// This node's lease as the other nodes should read it now.
    pub fn lease(&self) -> NodeLease {
        NodeLease {
            url: self.url.clone(),
            sessions: u64::try_from(self.sessions.len()).unwrap_or(u64::MAX),
            draining: self.draining.load(Ordering::Relaxed),
        }
    }

    /// From now on this node takes no new rooms (it is stopping); its lease
    /// says so at the next renewal.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Where `room` lives now, placing it (on the least-loaded live node)
    /// when it is on no node, or on a node whose lease has lapsed and that
    /// does not answer when asked, and moving it off this node while it
    /// drains. A node whose lease lapsed but that answers keeps its room
    /// (its store was away from it): the join goes there, and waits for it.
    pub async fn home_of(&self, room: &RoomCode) -> Result<Home, RoomError> {
        let nodes = self.store.live_nodes().await?;
        let last_seen = self.remember_leases(&nodes);
        let placed = match self.store.room_node(room).await? {
            Some(node) if node == self.node_id && self.draining.load(Ordering::Relaxed) => {
                let to = self.least_loaded(&nodes);
                self.store.move_room(room, &node, &to).await?
            }
            Some(node) if node == self.node_id => return Ok(Home::Here),
            Some(node) if nodes.contains_key(&node) => node,
            Some(node) if answers(&self.probe, last_seen.get(&node)).await => {
                let url = last_seen.get(&node).map(|l| l.url.clone()).unwrap_or_default();
                return Ok(Home::There { node, url });
            }
            Some(dead) => {
                let to = self.least_loaded(&nodes);
                tracing::info!(room = %room, from = %dead, to = %to, "room moved off a node without a lease");
                self.store.move_room(room, &dead, &to).await?
            }
            None => self.least_loaded(&nodes),
        };
        Ok(self.home_on(placed, &nodes))
    }

    /// Adds the leases seen now to those seen before (a node's address
    /// outlives its lease here, to ask it whether it is still there);
    /// returns them all.
    fn remember_leases(&self, now: &BTreeMap<String, NodeLease>) -> BTreeMap<String, NodeLease> {
        let mut seen = self.seen_leases.lock().unwrap_or_else(|p| p.into_inner());
        seen.extend(now.iter().map(|(n, l)| (n.clone(), l.clone())));
        seen.clone()
    }

    /// Draining with other nodes running: says so in the lease, then moves
    /// every room this node holds sessions of to the least-loaded other
    /// node. `false` when no other node can take them (nothing moved).
    pub(super) async fn drain(&self) -> bool {
        let Ok(mut nodes) = self.store.live_nodes().await else { return false };
        nodes.retain(|node, lease| node != &self.node_id && !lease.draining && !lease.url.is_empty());
        if nodes.is_empty() {
            return false;
        }
        if let Err(e) = self.store.renew_lease(&self.node_id, &self.lease(), LEASE_TTL).await {
            tracing::warn!(error = %e, "draining not told in the lease");
        }
        let rooms: std::collections::BTreeSet<RoomCode> =
            self.sessions.all().into_iter().map(|s| s.room.clone()).collect();
        for room in rooms {
            let to = self.least_loaded(&nodes);
            match self.store.move_room(&room, &self.node_id, &to).await {
                Ok(now) => tracing::info!(room = %room, to = %now, "room moved off this draining node"),
                Err(e) => tracing::warn!(room = %room, error = %e, "room not moved; its pages place it again"),
            }
            // The next room goes to the next least-loaded node.
            if let Some(lease) = nodes.get_mut(&to) {
                lease.sessions += 1;
            }
        }
        true
    }

    fn home_on(&self, node: String, nodes: &BTreeMap<String, NodeLease>) -> Home {
        match nodes.get(&node) {
            Some(lease) if node != self.node_id && !lease.url.is_empty() => {
                Home::There { node, url: lease.url.clone() }
            }
            // This node, or one that cannot be reached (no address known):
            // the join is tried here, and the store's placement decides.
            _ => Home::Here,
        }
    }

    fn least_loaded(&self, nodes: &BTreeMap<String, NodeLease>) -> String {
        least_loaded(&self.node_id, &self.lease(), nodes)
    }
}

/// Whether the node of `lease` answers at its address (`/healthz`, within
/// [`PROBE_TIMEOUT`]): alive, whatever its lease says.
pub async fn answers(probe: &reqwest::Client, lease: Option<&NodeLease>) -> bool {
    let Some(lease) = lease.filter(|l| !l.url.is_empty()) else { return false };
    matches!(
        probe.get(format!("{}/healthz", lease.url)).timeout(PROBE_TIMEOUT).send().await,
        Ok(r) if r.status().is_success()
    )
}

/// How long a node whose lease lapsed has to answer at its address.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The node a new room goes to: the live node that is not draining with
/// the fewest sessions (`me` on a tie, then by id); `me` when no other is
/// known or reachable (a node without an address cannot be relayed to).
fn least_loaded(me: &str, mine: &NodeLease, nodes: &BTreeMap<String, NodeLease>) -> String {
    let mut best = (mine.draining, mine.sessions, false, me);
    for (node, lease) in nodes {
        if node == me || lease.url.is_empty() {
            continue;
        }
        let candidate = (lease.draining, lease.sessions, true, node.as_str());
        if candidate < best {
            best = candidate;
        }
    }
    best.3.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(sessions: u64, draining: bool) -> NodeLease {
        NodeLease { url: "http://10.0.0.9:3000".into(), sessions, draining }
    }

    #[test]
    fn a_new_room_goes_to_the_least_loaded_node_that_takes_rooms() {
        let nodes: BTreeMap<String, NodeLease> =
            [("b", lease(3, false)), ("c", lease(1, false)), ("d", lease(0, true))]
                .into_iter()
                .map(|(n, l)| (n.to_owned(), l))
                .collect();
        assert_eq!(least_loaded("a", &lease(5, false), &nodes), "c", "fewest sessions");
        assert_eq!(least_loaded("a", &lease(1, false), &nodes), "a", "a tie stays here");
        assert_eq!(least_loaded("a", &lease(0, true), &nodes), "c", "a draining node takes no room");
        let all_draining: BTreeMap<_, _> = [("b".to_owned(), lease(0, true))].into_iter().collect();
        assert_eq!(least_loaded("a", &lease(9, true), &all_draining), "b", "then the least loaded of the draining");
        let unreachable: BTreeMap<_, _> = [("b".to_owned(), NodeLease::default())].into_iter().collect();
        assert_eq!(least_loaded("a", &lease(9, false), &unreachable), "a", "a node without an address is skipped");
        assert_eq!(least_loaded("a", &lease(9, false), &BTreeMap::new()), "a");
    }
}
