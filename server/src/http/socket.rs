//! The signalling WebSocket, `/ws/{code}?session=…`: authenticated by the
//! identity cookie and the session id issued at join. The socket task runs
//! under the session's token: closing the session closes the socket.
//!
//! For an admitted session the socket also opens (or re-attaches to) the
//! session's media ([`crate::media::Sfu::open`]): the server's `offer` and
//! `ice-candidate` messages go out here; the browser's `answer` and
//! `ice-candidate` are handed to the media session. The socket closing does
//! not close the media: only `Rooms::end_session` does.
//!
//! A socket is two halves polled by one task. The reading half takes the
//! page's frames, the room's updates and the media's messages, and never
//! waits on the page: what it has to send goes into `Outgoing`, a bounded
//! queue plus one slot for the latest roster (a newer roster replaces one
//! not sent yet). The writing half sends from there, each frame within
//! [`SEND_TIMEOUT`] and raced against the socket's token. A page that does
//! not take its messages (a frozen tab, a stalled path) fills the queue or
//! times a send out: the socket is closed with [`close_code::TOO_SLOW`] and
//! dropped, and its session follows the loss path like any dropped socket.
//! So no socket task outlives its session, and shutdown never waits on one.

use std::sync::Arc;
use std::time::Duration;

use app::model::{LeaveReason, MediaKind, ParticipantState, RoomCode, SessionId};
use app::ports::Identity;
use app::signal::{close_code, ClientMsg, ServerMsg, MAX_FRAME_BYTES};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::node::AppState;
use crate::participant::{LiveSession, SocketGuard};
use crate::room::{Home, Rooms};

/// Messages (other than rosters) that may wait for a slow socket; one more
/// and the socket is too slow.
pub const QUEUE_LIMIT: usize = 256;
/// How long one frame may take to be taken by the connection.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the closing frames may take before the connection is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(500);
/// How much of the socket's stream is read at a time. tungstenite's
/// default, 128 KiB, is zero-filled before every read, so each open socket
/// kept 128 KiB resident; signalling frames are a few KiB, and a longer one
/// (up to [`MAX_FRAME_BYTES`]) still arrives whole: the buffer grows to the
/// frame's length as its header announces it.
pub const READ_BUFFER_BYTES: usize = 8 * 1024;

/// The socket's query: `?session=…`, the session id issued at join.
#[derive(Debug, Deserialize)]
pub struct WsQuery {
    session: String,
}

/// `/ws/{code}`: upgrades to the session's socket when the session is live,
/// belongs to the cookie's user and is in room `code`; an unknown session
/// gets a close frame ([`close_code::UNKNOWN_SESSION`]), a foreign origin 403.
pub async fn ws_handler(
    State(state): State<AppState>,
    Path(code): Path<String>,
    Query(query): Query<WsQuery>,
    Extension(me): Extension<Identity>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    // Another site's page may open a socket with our cookie: refuse it.
    if super::security::is_foreign(&headers) {
        tracing::warn!(room = %code, "socket refused: foreign origin");
        return (StatusCode::FORBIDDEN, "cross-origin socket refused").into_response();
    }
    let room = RoomCode::parse(&code).ok();
    let session = SessionId::new(query.session);
    let live = room
        .as_ref()
        .and_then(|code| state.rooms.sessions().get(&session).filter(|s| s.user == me.user_id && &s.room == code));
    let ws = ws.max_message_size(MAX_FRAME_BYTES).max_frame_size(MAX_FRAME_BYTES).read_buffer_size(READ_BUFFER_BYTES);
    let rooms = state.rooms.clone();
    let sockets = state.sockets.clone();
    // Not a session of this node: the room may live on another one.
    if let (None, Some(room), false) = (&live, &room, super::relay::relayed(&headers)) {
        if let Ok(Home::There { node, url }) = rooms.home_of(room).await {
            tracing::info!(room = %room, to = %node, "socket relayed to the room's node");
            let path = app::routes::socket(room, &session);
            let me = rooms.node_id().to_owned();
            let stop = state.shutdown.child_token();
            return ws.on_upgrade(move |socket| {
                sockets.track_future(async move {
                    super::relay::carry_socket(socket, &url, &path, &headers, &me, stop).await
                })
            });
        }
    }
    // A session of this person that went with its node (reaped after the
    // node died): the page joins again instead of giving up.
    let gone_with_node = live.is_none() && went_with_its_node(&rooms, &session, &me).await;
    ws.on_upgrade(move |socket| {
        sockets.track_future(async move {
            match live {
                Some(live) => run(rooms, live, socket).await,
                None => {
                    let (tx, _rx) = socket.split();
                    let mut tx = tx;
                    let _ = match gone_with_node {
                        true => close_with(&mut tx, close_code::MOVED, "the room moved: join again").await,
                        false => close_with(&mut tx, close_code::UNKNOWN_SESSION, "unknown session").await,
                    };
                }
            }
        })
    })
}

/// Whether `session` was this person's and went with its node: reaped (its
/// node died), moved (its node stopped), or still open on another node that
/// is no longer where its room lives (a dead node not reaped yet). The
/// page then joins again instead of giving up.
async fn went_with_its_node(rooms: &Rooms, session: &SessionId, me: &Identity) -> bool {
    let Ok(Some(row)) = rooms.db().history(session.as_str()).await else { return false };
    if row.user_id != me.user_id.as_str() {
        return false;
    }
    match row.leave_reason.as_deref().and_then(LeaveReason::parse) {
        Some(LeaveReason::Reaped | LeaveReason::Moved) => true,
        Some(_) => false,
        None => matches!(rooms.db().participant(session.as_str()).await, Ok(Some(p)) if p.node_id != rooms.node_id()),
    }
}

/// Sends a close frame, bounded by [`CLOSE_TIMEOUT`].
async fn close_with(tx: &mut SplitSink<WebSocket, Message>, code: u16, reason: &'static str) -> bool {
    let frame = Message::Close(Some(CloseFrame { code, reason: reason.into() }));
    matches!(tokio::time::timeout(CLOSE_TIMEOUT, tx.send(frame)).await, Ok(Ok(())))
}

fn text(msg: &ServerMsg) -> Message {
    Message::Text(serde_json::to_string(msg).unwrap_or_default().into())
}

/// What of a room update this session may see: waiting requests are for
/// admins only, and someone not admitted yet sees nothing of the room
/// (no names, no hands, no speaker) until they are let in.
fn for_session(live: &LiveSession, msg: &ServerMsg) -> Option<ServerMsg> {
    match msg {
        ServerMsg::Roster { participants, hands, speaker, pending } => {
            let me = participants.iter().find(|p| p.id == live.participant);
            if me.is_none_or(|p| p.state == ParticipantState::Pending) {
                return Some(ServerMsg::Roster {
                    participants: Vec::new(),
                    hands: Vec::new(),
                    speaker: None,
                    pending: Vec::new(),
                });
            }
            let admin = me.is_some_and(|p| p.role == app::model::Role::Admin);
            Some(ServerMsg::Roster {
                participants: participants.clone(),
                hands: hands.clone(),
                speaker: speaker.clone(),
                pending: if admin { pending.clone() } else { Vec::new() },
            })
        }
        ServerMsg::Speaker { .. } | ServerMsg::Chat { .. } | ServerMsg::ChatHistory { .. } if live.is_waiting() => None,
        other => Some(other.clone()),
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

/// The page could not keep up: the socket goes.
#[derive(Debug, Clone, Copy)]
struct TooSlow;

/// What a socket has to send, waiting for its writing half.
struct Outgoing {
    queue: mpsc::Sender<Message>,
    /// The latest roster not sent yet (latest wins).
    roster: watch::Sender<Option<Message>>,
    /// Set once by the reading half when it ends: the frame to close with.
    closing: watch::Sender<Option<Option<(u16, &'static str)>>>,
}

/// The writing half's ends of `Outgoing`.
struct Pending {
    queue: mpsc::Receiver<Message>,
    roster: watch::Receiver<Option<Message>>,
    closing: watch::Receiver<Option<Option<(u16, &'static str)>>>,
}

fn outgoing() -> (Outgoing, Pending) {
    let (queue, queue_rx) = mpsc::channel(QUEUE_LIMIT);
    let (roster, roster_rx) = watch::channel(None);
    let (closing, closing_rx) = watch::channel(None);
    (Outgoing { queue, roster, closing }, Pending { queue: queue_rx, roster: roster_rx, closing: closing_rx })
}

impl Outgoing {
    /// Queues a message; a full queue means the page stopped reading.
    fn push(&self, msg: &ServerMsg) -> Result<(), TooSlow> {
        self.queue.try_send(text(msg)).map_err(|_| TooSlow)
    }

    /// A room update as this session may see it: rosters replace any
    /// roster not sent yet, everything else is queued.
    fn update(&self, live: &LiveSession, msg: &ServerMsg) -> Result<(), TooSlow> {
        match for_session(live, msg) {
            Some(roster @ ServerMsg::Roster { .. }) => {
                self.roster.send_replace(Some(text(&roster)));
                Ok(())
            }
            Some(other) => self.push(&other),
            None => Ok(()),
        }
    }

    /// Asks the writing half to close (with a frame, or just flush and go).
    fn close(&self, frame: Option<(u16, &'static str)>) {
        self.closing.send_replace(Some(frame));
    }
}

/// How the writing half ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteEnd {
    /// The session ended or a newer socket took over.
    Stopped,
    /// The reading half asked it to close.
    Closed,
    /// The connection failed.
    Gone,
    /// The page did not take its messages in time.
    TooSlow,
}

/// The writing half: sends what `Outgoing` holds until told to stop.
/// Every send is bounded by [`SEND_TIMEOUT`] and gives way at once to the
/// socket's token or to the reading half's close. Cancels `done` when it
/// ends, so the reading half stops with it.
async fn write(
    mut tx: SplitSink<WebSocket, Message>,
    mut pending: Pending,
    live: &LiveSession,
    socket: &SocketGuard,
    done: &CancellationToken,
) -> WriteEnd {
    /// One turn of the loop.
    enum Step {
        Send(Message),
        Stop,
        Close,
        Sent(Result<Result<(), axum::Error>, tokio::time::error::Elapsed>),
    }
    let stop = socket.token();
    let end = loop {
        let step = tokio::select! {
            biased;
            () = stop.cancelled() => Step::Stop,
            Ok(()) = pending.closing.changed() => Step::Close,
            Ok(()) = pending.roster.changed() => match pending.roster.borrow_and_update().clone() {
                Some(msg) => Step::Send(msg),
                None => continue,
            },
            Some(msg) = pending.queue.recv() => Step::Send(msg),
        };
        let step = match step {
            Step::Send(msg) => tokio::select! {
                biased;
                () = stop.cancelled() => Step::Stop,
                Ok(()) = pending.closing.changed() => Step::Close,
                sent = tokio::time::timeout(SEND_TIMEOUT, tx.send(msg)) => Step::Sent(sent),
            },
            other => other,
        };
        match step {
            Step::Sent(Ok(Ok(()))) | Step::Send(_) => {}
            Step::Sent(Ok(Err(_))) => break WriteEnd::Gone,
            Step::Sent(Err(_)) => break WriteEnd::TooSlow,
            Step::Stop => break WriteEnd::Stopped,
            Step::Close => {
                let frame = *pending.closing.borrow_and_update();
                match frame.flatten() {
                    Some((code, reason)) => {
                        close_with(&mut tx, code, reason).await;
                    }
                    None => {
                        let _ = tokio::time::timeout(CLOSE_TIMEOUT, tx.close()).await;
                    }
                }
                break WriteEnd::Closed;
            }
        }
    };
    done.cancel();
    match end {
        WriteEnd::Stopped if socket.replaced() => {
            close_with(&mut tx, close_code::REPLACED, "replaced by a newer connection").await;
        }
        WriteEnd::Stopped => {
            // Closed by its end, or by the process stopping.
            let reason = live.reason().unwrap_or(LeaveReason::NodeShutdown);
            let ended = text(&ServerMsg::SessionEnded { reason });
            if matches!(tokio::time::timeout(CLOSE_TIMEOUT, tx.send(ended)).await, Ok(Ok(()))) {
                match reason {
                    LeaveReason::Moved => close_with(&mut tx, close_code::MOVED, "the room moved: join again").await,
                    _ => close_with(&mut tx, close_code::SESSION_ENDED, "session ended").await,
                };
            }
        }
        WriteEnd::TooSlow => {
            tracing::warn!(session = %live.id, room = %live.room, "socket too slow to take its messages: dropped");
            close_with(&mut tx, close_code::TOO_SLOW, "too slow").await;
        }
        WriteEnd::Closed | WriteEnd::Gone => {}
    }
    end
}

/// How the reading half ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadEnd {
    /// The page closed the socket because it is going away (a leave).
    Leaving,
    /// The page closed the socket (leave, tab close): not a loss by itself.
    ClosedByPage,
    /// The connection or the writing half ended.
    Gone,
    /// The page sent something the protocol does not allow.
    BadFrame(&'static str),
    /// The page did not take its messages.
    TooSlow,
}

async fn run(rooms: Arc<Rooms>, live: Arc<LiveSession>, socket: WebSocket) {
    let (tx, rx) = socket.split();
    let attached = live.attach_socket();
    tracing::debug!(session = %live.id, room = %live.room, "socket open");
    let (out, pending) = outgoing();
    let writer_done = CancellationToken::new();
    let (read_end, write_end) = tokio::join!(
        async {
            let end = read(&rooms, &live, rx, &out, &writer_done).await;
            out.close(match end {
                ReadEnd::BadFrame(reason) => Some((close_code::BAD_FRAME, reason)),
                ReadEnd::TooSlow => {
                    tracing::warn!(session = %live.id, room = %live.room, "socket too slow to take its messages: dropped");
                    Some((close_code::TOO_SLOW, "too slow"))
                }
                _ => None,
            });
            end
        },
        write(tx, pending, &live, &attached, &writer_done),
    );
    tracing::debug!(session = %live.id, room = %live.room, ?read_end, ?write_end, "socket closed");
    match read_end {
        ReadEnd::ClosedByPage => live.note_clean_close(),
        ReadEnd::Leaving => {
            live.note_clean_close();
            // The beacon's leave, over the socket (the beacon then finds nothing).
            if let Err(e) = rooms.end_session(&live.room, &live.id, &live.user, LeaveReason::PageHidden).await {
                tracing::warn!(session = %live.id, room = %live.room, error = %e, "session not fully ended");
            }
        }
        ReadEnd::Gone | ReadEnd::BadFrame(_) | ReadEnd::TooSlow => {}
    }
    drop(attached);
}

/// Sends the room's recent chat messages (a store that does not answer
/// leaves the page without them: logged, not fatal).
/// The read races the writer's end, as the first state read does: a socket
/// that dies while the store is slow stops waiting at once.
async fn send_history(
    rooms: &Rooms,
    live: &LiveSession,
    out: &Outgoing,
    writer_done: &CancellationToken,
) -> Result<(), TooSlow> {
    let history = tokio::select! {
        // The loop sees the writer's end next and returns.
        () = writer_done.cancelled() => return Ok(()),
        history = rooms.chat_history(&live.room) => history,
    };
    match history {
        Ok(messages) => out.push(&ServerMsg::ChatHistory { messages }),
        Err(e) => {
            tracing::warn!(session = %live.id, room = %live.room, error = %e, "chat history unavailable");
            Ok(())
        }
    }
}

/// The reading half: the page's frames, the room's updates and the media's
/// messages, until the page, the connection or the writing half ends.
async fn read(
    rooms: &Rooms,
    live: &Arc<LiveSession>,
    mut rx: SplitStream<WebSocket>,
    out: &Outgoing,
    writer_done: &CancellationToken,
) -> ReadEnd {
    let mut updates = rooms.hub().subscribe(&live.room);
    // Media for admitted sessions (a waiting one gets it once admitted):
    // the server's offers and candidates come back on `from_media`.
    let (to_socket, mut from_media) = mpsc::unbounded_channel::<ServerMsg>();
    // A microphone muted before the media opened stays unforwarded.
    let open_media = |mic_off: bool| {
        live.set_waiting(false);
        let media = rooms
            .media()
            .open(live, to_socket.clone())
            .inspect_err(|e| tracing::warn!(session = %live.id, room = %live.room, error = %e, "media not opened"))
            .ok()?;
        if mic_off {
            media.set_forwarding(MediaKind::Audio, false);
        }
        Some(media)
    };
    let mut media = None;
    // Admitted (media opened, chat history sent) once per socket.
    let mut in_call = false;
    // The first state read races the writer's end: a socket that dies (or
    // is replaced) while the store is slow stops waiting at once.
    let first = tokio::select! {
        () = writer_done.cancelled() => return ReadEnd::Gone,
        state = rooms.room_state(&live.room) => state,
    };
    match first {
        Ok(state) => {
            if let Some(mic_off) = admitted(live, &state) {
                media = open_media(mic_off);
                in_call = true;
            }
            if out.update(live, &state).is_err() {
                return ReadEnd::TooSlow;
            }
            if in_call && send_history(rooms, live, out, writer_done).await.is_err() {
                return ReadEnd::TooSlow;
            }
        }
        Err(e) => tracing::warn!(session = %live.id, room = %live.room, error = %e, "room state unavailable"),
    }
    loop {
        let sent = tokio::select! {
            () = writer_done.cancelled() => return ReadEnd::Gone,
            update = updates.recv() => match update {
                Ok(msg) => {
                    let mut let_in = false;
                    if let Some(mic_off) = admitted(live, &msg) {
                        if media.is_none() {
                            media = open_media(mic_off);
                        }
                        let_in = !std::mem::replace(&mut in_call, true);
                    }
                    let sent = out.update(live, &msg);
                    // Just let in: what was said before (after the roster that says so).
                    if let_in && sent.is_ok() { send_history(rooms, live, out, writer_done).await } else { sent }
                }
                // Missed updates: the current state says it all.
                Err(RecvError::Lagged(_)) => {
                    let state = tokio::select! {
                        () = writer_done.cancelled() => return ReadEnd::Gone,
                        state = rooms.room_state(&live.room) => state,
                    };
                    match state {
                        Ok(state) => out.update(live, &state),
                        Err(_) => Ok(()),
                    }
                }
                Err(RecvError::Closed) => return ReadEnd::Gone,
            },
            Some(msg) = from_media.recv() => out.push(&msg),
            incoming = rx.next() => match incoming.inspect(|frame| if frame.is_ok() { live.touch() }) {
                Some(Ok(Message::Text(t))) => match serde_json::from_str::<ClientMsg>(&t) {
                    Ok(ClientMsg::Ping) => out.push(&ServerMsg::Pong),
                    Ok(ClientMsg::Answer { sdp }) => {
                        if let Some(media) = &media {
                            media.answer(sdp);
                        }
                        Ok(())
                    }
                    Ok(ClientMsg::IceCandidate { candidate }) => {
                        if let Some(media) = &media {
                            media.candidate(candidate);
                        }
                        Ok(())
                    }
                    Ok(ClientMsg::RestartIce) => {
                        if let Some(media) = &media {
                            media.restart_ice();
                        }
                        Ok(())
                    }
                    Ok(ClientMsg::Views { views }) => {
                        if let Some(media) = &media {
                            let views = views
                                .into_iter()
                                .take(app::signal::MAX_VIEWS)
                                .filter(|v| v.stream.len() <= 64)
                                .map(|v| (v.stream, v.width))
                                .collect();
                            media.set_views(views);
                        }
                        Ok(())
                    }
                    Err(_) => return ReadEnd::BadFrame("malformed message"),
                },
                Some(Ok(Message::Binary(_))) => return ReadEnd::BadFrame("binary frames are not used"),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
                Some(Ok(Message::Close(Some(frame)))) if frame.code == close_code::LEAVING => {
                    // The page is going away: the leave its beacon also sends.
                    tracing::debug!(session = %live.id, room = %live.room, "page going away (socket)");
                    return ReadEnd::Leaving;
                }
                Some(Ok(Message::Close(_))) => return ReadEnd::ClosedByPage,
                // Over the size limit, not UTF-8, or against the protocol
                // (a connection that failed takes the close frame nowhere).
                Some(Err(e)) => {
                    tracing::debug!(session = %live.id, room = %live.room, error = %e, "bad frame");
                    return ReadEnd::BadFrame("frame refused");
                }
                None => return ReadEnd::Gone,
            },
        };
        if sent.is_err() {
            return ReadEnd::TooSlow;
        }
    }
}
