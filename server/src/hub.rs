//! Per-room fan-out of signalling messages to this node's sockets.

use std::collections::HashMap;
use std::sync::Mutex;

use app::model::RoomCode;
use app::signal::ServerMsg;
use tokio::sync::broadcast;

/// Room → broadcast channel. A room's channel exists while a socket of the
/// room listens; publishing to a room nobody listens to drops the channel.
#[derive(Debug, Default)]
pub struct Hub {
    rooms: Mutex<HashMap<RoomCode, broadcast::Sender<ServerMsg>>>,
}

impl Hub {
    const CAPACITY: usize = 64;

    /// Listens to a room's messages, making its channel if it has none.
    pub fn subscribe(&self, room: &RoomCode) -> broadcast::Receiver<ServerMsg> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms.entry(room.clone()).or_insert_with(|| broadcast::channel(Self::CAPACITY).0).subscribe()
    }

    /// Sends `msg` to the room's listeners; a room without listeners gets
    /// nothing (and its channel, if any, is dropped).
    pub fn publish(&self, room: &RoomCode, msg: ServerMsg) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = rooms.get(room) {
            if tx.send(msg).is_err() {
                rooms.remove(room);
            }
        }
    }

    /// Rooms with a channel (for the debug API).
    pub fn len(&self) -> usize {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms.retain(|_, tx| tx.receiver_count() > 0);
        rooms.len()
    }

    /// No room has a channel.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
