//! The rooms this browser joined lately, newest first, kept in
//! `localStorage` (nothing of them leaves the browser).

use crate::model::RoomCode;

/// The `localStorage` key.
const KEY: &str = "cleanroom.recent-rooms";
/// How many rooms are remembered.
const KEEP: usize = 5;

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok().flatten()
}

/// The remembered rooms, newest first (unreadable entries are skipped).
pub fn recent_rooms() -> Vec<RoomCode> {
    let Some(raw) = storage().and_then(|s| s.get_item(KEY).ok().flatten()) else { return Vec::new() };
    serde_json::from_str::<Vec<String>>(&raw)
        .unwrap_or_default()
        .iter()
        .filter_map(|c| RoomCode::parse(c).ok())
        .take(KEEP)
        .collect()
}

/// Puts `code` first among the remembered rooms.
pub fn remember_room(code: &RoomCode) {
    let Some(storage) = storage() else { return };
    let mut rooms = recent_rooms();
    rooms.retain(|c| c != code);
    rooms.insert(0, code.clone());
    rooms.truncate(KEEP);
    let list: Vec<&str> = rooms.iter().map(RoomCode::as_str).collect();
    if let Ok(json) = serde_json::to_string(&list) {
        let _ = storage.set_item(KEY, &json);
    }
}
