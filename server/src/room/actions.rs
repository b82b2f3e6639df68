//! The room actions of participants and the admin: admit, kick, mute,
//! allow unmute, make host, end the meeting, stop a share; hands, own
//! mute, own screen share. Every action
//! first proves the caller owns its session; admin actions need the role.

use std::sync::atomic::{AtomicBool, Ordering};

use app::model::{LeaveReason, MediaKind, ParticipantId, ParticipantState, Role, RoomAction, RoomCode, SessionId};
use app::ports::Identity;

use crate::store::MemberEntry;

use super::*;

impl Rooms {
    /// The caller's own member entry, proving they own `session`.
    pub(super) async fn actor(
        &self,
        who: &Identity,
        session: &SessionId,
    ) -> Result<(RoomCode, MemberEntry), RoomError> {
        let room = match self.sessions.get(session) {
            Some(live) => live.room.clone(),
            None => {
                let row = self.db.participant(session.as_str()).await?.ok_or(RoomError::NotInRoom)?;
                RoomCode::parse(&row.room_code).map_err(|_| RoomError::Internal("unreadable room code".into()))?
            }
        };
        let members = self.store.members(&room).await?;
        match members.into_iter().find(|m| &m.session == session) {
            Some(me) if me.user == who.user_id => Ok((room, me)),
            Some(_) => Err(RoomError::Forbidden),
            None => Err(RoomError::NotInRoom),
        }
    }

    /// A participant of the room by public id, among the admitted ones or
    /// (`waiting`) the requests.
    pub(super) async fn find(
        &self,
        room: &RoomCode,
        id: &ParticipantId,
        waiting: bool,
    ) -> Result<MemberEntry, RoomError> {
        let list = if waiting { self.store.pending(room).await } else { self.store.members(room).await };
        list?.into_iter().find(|m| &m.participant == id).ok_or(RoomError::NotInRoom)
    }

    pub(super) async fn set_flag(
        &self,
        room: &RoomCode,
        session: &SessionId,
        change: &(dyn for<'e> Fn(&'e mut MemberEntry) -> bool + Send + Sync),
    ) -> Result<bool, RoomError> {
        Ok(self.store.update_member(room, session, change).await?.is_some())
    }

    /// Ends the meeting: the room is marked ended, then every session in it
    /// (admitted or waiting) ends with reason `room-ended`.
    pub(super) async fn end_meeting(&self, room: &RoomCode) -> Result<(), RoomError> {
        self.close_room(room, "ended").await?;
        let mut everyone = self.store.members(room).await?;
        everyone.extend(self.store.pending(room).await?);
        let mut result = Ok(());
        for m in everyone {
            if let Err(e) = self.end_session(room, &m.session, &m.user, LeaveReason::RoomEnded).await {
                result = Err(e);
            }
        }
        result
    }

    pub(super) async fn act_as(
        &self,
        who: &Identity,
        session: &SessionId,
        action: RoomAction,
    ) -> Result<(), RoomError> {
        let (room, me) = self.actor(who, session).await?;
        if action.needs_admin() && me.role != Role::Admin {
            tracing::warn!(room = %room, session = %session, ?action, "refused: not the admin");
            return Err(RoomError::Forbidden);
        }
        tracing::info!(room = %room, session = %session, ?action, "room action");
        match action {
            RoomAction::Admit { participant, approve: true } => {
                let mut entry = self.find(&room, &participant, true).await?;
                entry.state = ParticipantState::Active;
                if !self.store.admit(&room, &entry).await? {
                    return Err(RoomError::NotInRoom);
                }
                if let Some(live) = self.sessions.get(&entry.session) {
                    live.set_waiting(false);
                }
                self.db.set_state(entry.session.as_str(), ParticipantState::Active.as_str()).await?;
            }
            RoomAction::Admit { participant, approve: false } => {
                let entry = self.find(&room, &participant, true).await?;
                return self.end_session(&room, &entry.session, &entry.user, LeaveReason::Denied).await;
            }
            RoomAction::Kick { participant } => {
                let target = self.find(&room, &participant, false).await?;
                if target.session == me.session {
                    return Err(RoomError::Invalid("Use Leave to leave the meeting.".into()));
                }
                return self.end_session(&room, &target.session, &target.user, LeaveReason::Kicked).await;
            }
            RoomAction::MuteParticipant { participant } => {
                let target = self.find(&room, &participant, false).await?;
                let lock = self.db.room(room.as_str()).await?.is_some_and(|r| r.host_unmutes);
                // Counted even when already muted: the page learns of a
                // host's mute by the count, whatever else it last heard.
                self.set_flag(&room, &target.session, &|e| {
                    (e.audio_muted, e.audio_locked) = (true, lock);
                    e.host_mutes = e.host_mutes.wrapping_add(1);
                    true
                })
                .await?;
                self.set_forwarding(&room, &target.session, MediaKind::Audio, false);
            }
            RoomAction::AllowUnmute { participant } => {
                let target = self.find(&room, &participant, false).await?;
                self.set_flag(&room, &target.session, &|e| std::mem::take(&mut e.audio_locked)).await?;
            }
            RoomAction::MakeAdmin { participant } => {
                let target = self.find(&room, &participant, false).await?;
                if target.session != me.session {
                    // One step in the store: never two admins, never none.
                    if !self.store.transfer_admin(&room, &me.session, &target.session).await? {
                        return Err(RoomError::NotInRoom);
                    }
                    self.db.set_role(target.session.as_str(), Role::Admin.as_str()).await?;
                    self.db.set_role(me.session.as_str(), Role::Member.as_str()).await?;
                }
            }
            RoomAction::EndMeeting => return self.end_meeting(&room).await,
            RoomAction::Screen { on } => {
                // One share per person: starting again while sharing changes nothing.
                if self.set_flag(&room, session, &|e| std::mem::replace(&mut e.screen, on) != on).await? {
                    self.set_screen(&room, session, on);
                }
            }
            RoomAction::StopScreen { participant } => {
                let target = self.find(&room, &participant, false).await?;
                if self.set_flag(&room, &target.session, &|e| std::mem::take(&mut e.screen)).await? {
                    self.set_screen(&room, &target.session, false);
                }
            }
            RoomAction::Hand { up: true } => {
                self.store.raise_hand(&room, session, now_ms()).await?;
            }
            RoomAction::Hand { up: false } => {
                self.store.lower_hand(&room, session).await?;
            }
            RoomAction::Mute { kind, muted } => {
                // Checked in the same write that would unmute, so an admin's
                // mute landing meanwhile is never overwritten.
                let refused = AtomicBool::new(false);
                self.set_flag(&room, session, &|e| {
                    let locked = kind == MediaKind::Audio && !muted && e.audio_locked;
                    refused.store(locked, Ordering::Release);
                    if locked {
                        return false;
                    }
                    let flag = match kind {
                        MediaKind::Audio => &mut e.audio_muted,
                        MediaKind::Video => &mut e.video_muted,
                    };
                    std::mem::replace(flag, muted) != muted
                })
                .await?;
                if refused.load(Ordering::Acquire) {
                    return Err(RoomError::MutedByHost);
                }
                // Unmuting oneself lifts an admin's mute (where the room
                // leaves it to the admin, only once they allowed it).
                if kind == MediaKind::Audio && !muted {
                    self.set_forwarding(&room, session, MediaKind::Audio, true);
                }
            }
        }
        self.broadcast_roster(&room).await;
        Ok(())
    }
}
