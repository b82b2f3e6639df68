//! Creating rooms, looking them up, and joining (the role chosen by the
//! store in the arrival's own atomic step).

use std::sync::Arc;

use app::model::{
    JoinOutcome, LeaveReason, ParticipantId, ParticipantState, Presence, Role, RoomCode, RoomInfo, RoomOptions,
    SessionId,
};
use app::ports::Identity;

use crate::db::{self};
use crate::participant::LiveSession;
use crate::store::MemberEntry;

use super::*;

impl Rooms {
    pub(super) fn new_ids() -> (SessionId, ParticipantId) {
        let session = SessionId::new(uuid::Uuid::new_v4().simple().to_string());
        let participant = ParticipantId::new(format!("p{}", &uuid::Uuid::new_v4().simple().to_string()[..12]));
        (session, participant)
    }

    pub(super) async fn create(&self, creator: &Identity, options: RoomOptions) -> Result<RoomCode, RoomError> {
        let RoomOptions { private, host_unmutes } = options;
        let open = self.db.open_rooms_created_by(creator.user_id.as_str()).await?;
        if open >= MAX_OPEN_ROOMS_PER_PERSON {
            tracing::info!(user = %creator.user_id, open, "room not created: too many open rooms");
            return Err(RoomError::Limited {
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
            if self.db.room(code.as_str()).await?.is_some() {
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
                .await?;
            tracing::info!(room = %code, private, host_unmutes, "room created");
            return Ok(code);
        }
        Err(RoomError::Internal("unreadable room code".into()))
    }

    /// Whether `session` belongs to another node that holds no lease.
    async fn on_a_dead_node(&self, session: &SessionId) -> bool {
        let Ok(Some(row)) = self.db.participant(session.as_str()).await else { return false };
        row.node_id != self.node_id
            && self.store.live_nodes().await.is_ok_and(|nodes| !nodes.contains_key(&row.node_id))
    }

    pub(super) async fn info(&self, code: &RoomCode) -> Result<RoomInfo, RoomError> {
        let room = self.db.room(code.as_str()).await?.ok_or(RoomError::RoomNotFound)?;
        Ok(RoomInfo {
            code: code.clone(),
            private: room.private,
            ended: room.ended_at_ms.is_some(),
            host_unmutes: room.host_unmutes,
        })
    }

    pub(super) async fn join_as(
        &self,
        who: &Identity,
        code: &RoomCode,
        display_name: &str,
    ) -> Result<JoinOutcome, RoomError> {
        let room = self.db.room(code.as_str()).await?.ok_or(RoomError::RoomNotFound)?;
        if room.ended_at_ms.is_some() {
            return Err(RoomError::RoomEnded);
        }
        // The creator is never kept waiting; the store gives the role in the
        // same step that records the arrival (one admin, however many arrive).
        let creator = room.created_by == who.user_id.as_str();
        // Somebody the host removed may only ask to come back (the host decides).
        let removed = !creator && !room.private && self.db.was_removed(code.as_str(), who.user_id.as_str()).await?;
        let state =
            if (room.private || removed) && !creator { ParticipantState::Pending } else { ParticipantState::Active };
        if state == ParticipantState::Pending {
            let waiting = self.store.pending(code).await?;
            if waiting.iter().filter(|w| w.user != who.user_id).count() >= MAX_PENDING {
                tracing::info!(room = %code, "join request refused: too many waiting");
                return Err(RoomError::Limited {
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
            host_mutes: 0,
            screen: false,
        };

        // Store first; if the database then fails, undo the store write so
        // nothing is left half-way.
        let (replaced, role) = match state {
            ParticipantState::Active => self.store.join_member(code, &entry, creator).await,
            ParticipantState::Pending => self.store.put_pending(code, &entry).await.map(|r| (r, Role::Member)),
        }?;
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
            return Err(e.into());
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

        // A rejoin (refresh, second tab) replaces the person's older session;
        // one left on a node that died is reaped (the page rejoined for it).
        if let Some(old) = replaced {
            let reason = match self.on_a_dead_node(&old).await {
                true => LeaveReason::Reaped,
                false => LeaveReason::Replaced,
            };
            if let Err(e) = self.end_session(code, &old, &who.user_id, reason).await {
                tracing::warn!(session = %old, error = %e, "replaced session not fully ended");
            }
        }
        self.broadcast_roster(code).await;
        // Someone waiting to be let in sees nothing of the room but its name.
        let roster = match state {
            ParticipantState::Active => self.roster(code).await?,
            ParticipantState::Pending => Vec::new(),
        };
        Ok(JoinOutcome {
            session_id: session,
            participant_id: participant,
            role,
            state,
            roster,
            ice_servers: Vec::new(),
        })
    }
}
