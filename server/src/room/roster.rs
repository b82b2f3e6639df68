//! What the room is told: rosters (coalesced per room), the departure
//! roster sent before a cleanup, speaker changes, and the admin hand-over.

use app::model::{ParticipantView, Role, RoomCode, SessionId};
use app::signal::ServerMsg;

use crate::store::{MemberEntry, StoreError};

use super::*;

/// Rooms whose roster is being broadcast, each with whether it changed
/// again meanwhile.
pub(super) type RosterTurns = std::sync::Mutex<std::collections::HashMap<RoomCode, bool>>;

/// The one running roster broadcast of a room; its end (or cancellation)
/// frees the room for the next.
pub(super) struct RosterTurn<'a> {
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

impl Rooms {
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

    pub(super) async fn roster_of(
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
    pub(super) async fn announce_departure(&self, room: &RoomCode, session: &SessionId) {
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
    pub(super) async fn broadcast_roster(&self, room: &RoomCode) {
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
    pub(super) async fn ensure_admin(&self, room: &RoomCode) {
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
}
