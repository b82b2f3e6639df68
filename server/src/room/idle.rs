//! Rooms that close themselves: empty too long, or never joined.

use std::time::Duration;

use super::*;

impl Rooms {
    /// Closes rooms nobody is in: empty for longer than the empty-room
    /// timeout, or never joined within the unused-room timeout. Returns how
    /// many it closed.
    pub async fn close_idle_rooms(&self) -> Result<usize, RoomError> {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let now = now_ms();
        let idle = self.db.idle_rooms(now, ms(self.limits.empty_room), ms(self.limits.unused_room)).await?;
        let mut closed = 0;
        for (code, reason) in idle {
            let Ok(room) = RoomCode::parse(&code) else { continue };
            if self.close_room(&room, reason).await? {
                tracing::info!(room = %code, reason, "room closed itself");
                closed += 1;
            }
        }
        self.chat_limits.tidy();
        Ok(closed)
    }
}
