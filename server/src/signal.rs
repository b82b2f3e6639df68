//! The signalling WebSocket, `/ws/{code}?session=…`: authenticated by the
//! identity cookie and the session id issued at join. The socket task runs
//! under the session's token: closing the session closes the socket.
//!
//! For an admitted session the socket also opens (or re-attaches to) the
//! session's media ([`crate::media::Sfu::open`]): the server's `offer` and
//! `ice-candidate` messages go out here; the browser's `answer` and
//! `ice-candidate` are handed to the media session. The socket closing does
//! not close the media: only `Rooms::end_session` does.

use std::sync::Arc;

use app::model::{LeaveReason, MediaKind, Role, RoomCode, SessionId};
use app::ports::Identity;
use app::signal::{close_code, ClientMsg, ServerMsg, MAX_FRAME_BYTES};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Extension;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use crate::participant::LiveSession;
use crate::room::Rooms;
use crate::AppState;

#[derive(Debug, Deserialize)]
pub struct WsQuery {
    session: String,
}

pub async fn ws_handler(
    State(state): State<AppState>,
    Path(code): Path<String>,
    Query(query): Query<WsQuery>,
    Extension(me): Extension<Identity>,
    ws: WebSocketUpgrade,
) -> Response {
    let live = RoomCode::parse(&code).ok().and_then(|code| {
        state.rooms.sessions().get(&SessionId::new(query.session)).filter(|s| s.user == me.user_id && s.room == code)
    });
    let ws = ws.max_message_size(MAX_FRAME_BYTES).max_frame_size(MAX_FRAME_BYTES);
    let rooms = state.rooms.clone();
    let sockets = state.sockets.clone();
    ws.on_upgrade(move |socket| {
        sockets.track_future(async move {
            match live {
                Some(live) => run(rooms, live, socket).await,
                None => close(socket, close_code::UNKNOWN_SESSION, "unknown session").await,
            }
        })
    })
}

async fn close(mut socket: WebSocket, code: u16, reason: &'static str) {
    let _ = socket.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
}

fn text(msg: &ServerMsg) -> Message {
    Message::Text(serde_json::to_string(msg).unwrap_or_default().into())
}

/// What of a room update this session may see: waiting requests are for
/// admins only.
fn for_session(live: &LiveSession, msg: &ServerMsg) -> ServerMsg {
    match msg {
        ServerMsg::Roster { participants, hands, speaker, pending } => {
            let admin = participants.iter().any(|p| p.id == live.participant && p.role == Role::Admin);
            ServerMsg::Roster {
                participants: participants.clone(),
                hands: hands.clone(),
                speaker: speaker.clone(),
                pending: if admin { pending.clone() } else { Vec::new() },
            }
        }
        other => other.clone(),
    }
}

/// Whether an update shows this session admitted, and if so whether its
/// microphone is off.
fn admitted(live: &LiveSession, msg: &ServerMsg) -> Option<bool> {
    match msg {
        ServerMsg::Roster { participants, .. } => {
            participants.iter().find(|p| p.id == live.participant).map(|p| p.audio_muted)
        }
        _ => None,
    }
}

async fn run(rooms: Arc<Rooms>, live: Arc<LiveSession>, socket: WebSocket) {
    let (mut tx, mut rx) = socket.split();
    let mut updates = rooms.hub().subscribe(&live.room);
    let ended = live.token();
    let _attached = live.attach_socket();
    tracing::debug!(session = %live.id, room = %live.room, "socket open");
    // Media for admitted sessions (a waiting one gets it once admitted):
    // the server's offers and candidates come back on `from_media`.
    let (to_socket, mut from_media) = mpsc::unbounded_channel::<ServerMsg>();
    // A microphone muted before the media opened stays unforwarded.
    let open_media = |mic_off: bool| {
        live.set_waiting(false);
        let media = rooms
            .media()
            .open(&live, to_socket.clone())
            .inspect_err(|e| tracing::warn!(session = %live.id, room = %live.room, error = %e, "media not opened"))
            .ok()?;
        if mic_off {
            media.set_forwarding(MediaKind::Audio, false);
        }
        Some(media)
    };
    let mut media = None;
    let mut leaving = false;
    match rooms.room_state(&live.room).await {
        Ok(state) => {
            if let Some(mic_off) = admitted(&live, &state) {
                media = open_media(mic_off);
            }
            let _ = tx.send(text(&for_session(&live, &state))).await;
        }
        Err(e) => tracing::warn!(session = %live.id, room = %live.room, error = %e, "room state unavailable"),
    }
    loop {
        tokio::select! {
            () = ended.cancelled() => {
                if let Some(reason) = live.reason() {
                    let _ = tx.send(text(&ServerMsg::SessionEnded { reason })).await;
                }
                let frame = CloseFrame { code: close_code::SESSION_ENDED, reason: "session ended".into() };
                let _ = tx.send(Message::Close(Some(frame))).await;
                break;
            }
            update = updates.recv() => match update {
                Ok(msg) => {
                    if let Some(mic_off) = admitted(&live, &msg).filter(|_| media.is_none()) {
                        media = open_media(mic_off);
                    }
                    if tx.send(text(&for_session(&live, &msg))).await.is_err() {
                        break;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    if let Ok(state) = rooms.room_state(&live.room).await {
                        let _ = tx.send(text(&for_session(&live, &state))).await;
                    }
                }
                Err(RecvError::Closed) => break,
            },
            Some(msg) = from_media.recv() => {
                if tx.send(text(&msg)).await.is_err() {
                    break;
                }
            }
            incoming = rx.next() => match incoming.inspect(|frame| if frame.is_ok() { live.touch() }) {
                Some(Ok(Message::Text(t))) => match serde_json::from_str::<ClientMsg>(&t) {
                    Ok(ClientMsg::Ping) => {
                        if tx.send(text(&ServerMsg::Pong)).await.is_err() {
                            break;
                        }
                    }
                    Ok(ClientMsg::Answer { sdp }) => {
                        if let Some(media) = &media {
                            media.answer(sdp);
                        }
                    }
                    Ok(ClientMsg::IceCandidate { candidate }) => {
                        if let Some(media) = &media {
                            media.candidate(candidate);
                        }
                    }
                    Err(_) => {
                        let frame = CloseFrame { code: close_code::BAD_FRAME, reason: "malformed message".into() };
                        let _ = tx.send(Message::Close(Some(frame))).await;
                        break;
                    }
                },
                Some(Ok(Message::Binary(_))) => {
                    let frame = CloseFrame { code: close_code::BAD_FRAME, reason: "binary frames are not used".into() };
                    let _ = tx.send(Message::Close(Some(frame))).await;
                    break;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(Some(frame)))) if frame.code == close_code::LEAVING => {
                    // The page is going away: the leave its beacon also sends.
                    tracing::debug!(session = %live.id, room = %live.room, "page going away (socket)");
                    live.note_clean_close();
                    leaving = true;
                    break;
                }
                Some(Ok(Message::Close(_))) => {
                    // The page said goodbye (leave, tab close): not a loss by itself.
                    live.note_clean_close();
                    break;
                }
                Some(Err(_)) | None => break,
            },
        }
    }
    tracing::debug!(session = %live.id, room = %live.room, "socket closed");
    if leaving {
        // The beacon's leave, over the socket (the beacon then finds nothing).
        if let Err(e) = rooms.end_session_for_request(&live.room, &live.id, &live.user, LeaveReason::PageHidden).await {
            tracing::warn!(session = %live.id, room = %live.room, error = %e, "session not fully ended");
        }
    }
}
