//! The room's chat: messages from admitted participants to everybody in
//! the call, a few per second per session; recent ones kept for later
//! arrivals. The chat lives exactly as long as its room: closing the room
//! ([`Rooms::close_room`]) deletes every message from the database (in the
//! transaction that marks the room ended) and from the live store.
//!
//! A message sent while its room closes cannot outlive it: the send
//! writes the database and the store, then reads the room again and
//! deletes both if the room has ended by then; the close marks the room
//! ended first, then deletes. Whichever order the two run in, the last
//! step of one of them sees the other's writes.

use std::num::NonZeroU32;

use app::model::{ChatMessage, RoomCode, SessionId};
use app::ports::Identity;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::db::chat_message;
use crate::metrics as m;

use super::*;

/// How many recent messages a later arrival is shown.
pub const CHAT_HISTORY: usize = 100;

/// Messages one session may send at once, then one per second.
const CHAT_BURST: u32 = 10;

/// The chat's per-session limit.
pub(super) struct ChatLimits(DefaultKeyedRateLimiter<SessionId>);

impl Default for ChatLimits {
    fn default() -> Self {
        let burst = NonZeroU32::new(CHAT_BURST).unwrap_or(NonZeroU32::MIN);
        Self(RateLimiter::keyed(Quota::per_second(NonZeroU32::MIN).allow_burst(burst)))
    }
}

impl ChatLimits {
    /// Takes one message from the session's allowance; `Err`: seconds to wait.
    fn check(&self, session: &SessionId) -> Result<(), u64> {
        self.0.check_key(session).map_err(|n| n.wait_time_from(DefaultClock::default().now()).as_secs().max(1))
    }

    /// Forgets sessions whose allowance is full again.
    pub(super) fn tidy(&self) {
        self.0.retain_recent();
    }
}

impl Rooms {
    /// Sends `text` (validated by the caller) from the owner of `session`
    /// to everybody in the call.
    pub(super) async fn send_chat_as(&self, who: &Identity, session: &SessionId, text: &str) -> Result<(), RoomError> {
        let (room, me) = self.actor(who, session).await?;
        if let Err(retry_after_s) = self.chat_limits.check(session) {
            metrics::counter!(m::RATE_LIMITED, "class" => "chat").increment(1);
            return Err(RoomError::Limited {
                message: format!("You are sending messages too fast. Please wait {retry_after_s} s."),
                retry_after_s,
            });
        }
        let message = ChatMessage {
            id: uuid::Uuid::new_v4().simple().to_string(),
            from: me.participant.clone(),
            name: me.name.clone(),
            text: text.to_owned(),
            sent_at_ms: now_ms(),
        };
        self.db
            .insert_chat(chat_message::Model {
                id: message.id.clone(),
                room_code: room.to_string(),
                participant_id: message.from.to_string(),
                display_name: message.name.clone(),
                body: message.text.clone(),
                sent_at_ms: message.sent_at_ms,
            })
            .await?;
        self.store.push_chat(&room, &message, CHAT_HISTORY).await?;
        // The room may have closed meanwhile: then nothing of it may stay.
        if self.db.room(room.as_str()).await?.is_none_or(|r| r.ended_at_ms.is_some()) {
            self.forget_chat(&room).await?;
            return Err(RoomError::RoomEnded);
        }
        metrics::counter!(m::CHAT_MESSAGES).increment(1);
        self.publish(&room, ServerMsg::Chat { message });
        Ok(())
    }

    /// The room's recent messages, oldest first.
    pub async fn chat_history(&self, room: &RoomCode) -> Result<Vec<ChatMessage>, RoomError> {
        Ok(self.store.chat(room).await?)
    }

    /// Deletes the room's messages from the database and the live store.
    async fn forget_chat(&self, room: &RoomCode) -> Result<(), RoomError> {
        self.db.delete_chat(room.as_str()).await?;
        self.store.drop_chat(room).await?;
        Ok(())
    }

    /// Closes a room: marks it ended with `reason` and deletes its chat
    /// (database rows in the same transaction; the live store's list
    /// after, retried in the background if the store is away). `false`
    /// when it had ended already.
    pub(super) async fn close_room(&self, room: &RoomCode, reason: &'static str) -> Result<bool, RoomError> {
        let closed = self.db.end_room(room.as_str(), reason, now_ms()).await?;
        if let Err(e) = self.store.drop_chat(room).await {
            tracing::warn!(room = %room, error = %e, "chat not yet deleted from the store; retrying");
            self.drop_chat_later(room.clone());
        }
        Ok(closed)
    }

    /// Keeps trying to delete a closed room's messages from the store (the
    /// reconciler also deletes those of ended rooms on every pass).
    fn drop_chat_later(&self, room: RoomCode) {
        let Some(rooms) = self.me.upgrade() else { return };
        let stop = self.root.clone();
        self.tasks.spawn(async move {
            let mut delay = std::time::Duration::from_millis(250);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                if rooms.store.drop_chat(&room).await.is_ok() {
                    return;
                }
                delay = (delay * 2).min(std::time::Duration::from_secs(5));
            }
        });
    }

    /// Deletes what is left of the chat of rooms that have ended (a
    /// message that raced its room's close, a store that was away): the
    /// database rows, and the store lists of `in_store` rooms that ended.
    /// Returns how many rooms' or rows' messages went.
    pub async fn sweep_chat(&self, in_store: &[RoomCode]) -> Result<u64, RoomError> {
        let mut gone = self.db.delete_chat_of_ended_rooms().await?;
        for room in in_store {
            if self.db.room(room.as_str()).await?.is_none_or(|r| r.ended_at_ms.is_some())
                && self.store.drop_chat(room).await?
            {
                gone += 1;
            }
        }
        Ok(gone)
    }
}
