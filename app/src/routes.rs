//! The HTTP paths the browser and the server both use, written once. The
//! server functions' own paths come from their `#[server]` attributes
//! (`<Fn as ServerFn>::PATH`, e.g. [`crate::api::LeaveRoom`]).

use crate::model::{RoomCode, SessionId};

/// Where `navigator.sendBeacon` posts a leave (body `session=…`).
pub const LEAVE_BEACON: &str = "/api/beacon/leave";

/// The signalling socket's route, as the router writes it.
pub const SOCKET: &str = "/ws/{code}";

/// What the live-resources debug view answers on (with the debug API).
pub const DEBUG_RESOURCES: &str = "/api/debug/resources";

/// One session's debug view's route (with the debug API).
pub const DEBUG_SESSION: &str = "/api/debug/sessions/{session}";

/// The room page of `code`.
pub fn room(code: &RoomCode) -> String {
    format!("/r/{code}")
}

/// The signalling socket of `session` in room `code` (path and query).
pub fn socket(code: &RoomCode, session: &SessionId) -> String {
    format!("/ws/{code}?session={session}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_their_routes() {
        let code = RoomCode::parse("abc-defg-hij").unwrap();
        assert_eq!(room(&code), "/r/abc-defg-hij");
        let socket_path = socket(&code, &SessionId::new("s1"));
        assert_eq!(socket_path, SOCKET.replace("{code}", code.as_str()) + "?session=s1");
    }
}
