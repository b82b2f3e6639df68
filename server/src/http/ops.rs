//! Operational endpoints: health, readiness, metrics and the debug API.

use std::time::Duration;

use app::model::{RoomCode, SessionId, UserId};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::metrics::{self as m, LiveCounts};
use crate::node::AppState;

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `/healthz`: answers `ok` while the process serves.
pub async fn healthz() -> &'static str {
    "ok"
}

#[derive(Serialize)]
struct Readiness {
    database: &'static str,
    store: &'static str,
}

/// `/readyz`: 200 when the database and the store both answer within two
/// seconds (`PROBE_TIMEOUT`), else 503; the body says which is unavailable.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let db = tokio::time::timeout(PROBE_TIMEOUT, state.rooms.db().ping()).await;
    let store = tokio::time::timeout(PROBE_TIMEOUT, state.rooms.store().ping()).await;
    let verdict = |ok: bool| if ok { "ok" } else { "unavailable" };
    let body = Readiness { database: verdict(matches!(db, Ok(Ok(())))), store: verdict(matches!(store, Ok(Ok(())))) };
    let status =
        if body.database == "ok" && body.store == "ok" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

fn live_counts(state: &AppState) -> LiveCounts {
    let media = state.rooms.media().counts();
    LiveCounts {
        sessions: state.rooms.sessions().len(),
        peer_connections: media.peer_connections,
        tracks: media.tracks,
        forwarders: media.forwarders,
    }
}

/// `/metrics`: the Prometheus text, with the live gauges counted now.
pub async fn metrics(State(state): State<AppState>) -> Response {
    m::set_live(live_counts(&state));
    let (_, forwarders) = state.rooms.media().layers();
    metrics::gauge!(m::FORWARDERS_PAUSED).set(forwarders.iter().filter(|f| f.target.is_none()).count() as f64);
    m::collect_process();
    ([("content-type", "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

/// Middleware: counts every request by method, route pattern and status,
/// and how long its answer took ([`m::HTTP_REQUESTS`], [`m::HTTP_DURATION`]).
/// The site's files count under `static`, requests no route matched
/// under `other`.
pub async fn count_requests(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let route = match req.extensions().get::<axum::extract::MatchedPath>() {
        _ if req.uri().path().starts_with("/pkg/") => "static".to_owned(),
        Some(matched) => matched.as_str().to_owned(),
        None => "other".to_owned(),
    };
    let response = next.run(req).await;
    m::http_request(method.as_str(), &route, response.status().as_u16(), started.elapsed());
    response
}

/// The query of [`debug_resources`].
#[derive(Debug, Deserialize)]
pub struct DebugQuery {
    room: Option<String>,
}

#[derive(Serialize)]
struct RoomResources {
    code: String,
    participants: usize,
    pending: usize,
    store_keys: usize,
    db_participants: u64,
    /// Chat messages of the room in the live store.
    chat_store: usize,
    /// Chat messages of the room in the database.
    chat_db: usize,
    /// The room has ended (closed).
    ended: bool,
    /// The node the room lives on (none while nobody is in it).
    node: Option<String>,
}

#[derive(Serialize)]
struct Resources {
    node_id: String,
    sessions: usize,
    peer_connections: usize,
    tracks: usize,
    forwarders: usize,
    websockets: usize,
    tasks: usize,
    rooms: Vec<RoomResources>,
    /// Each live video track's simulcast layers.
    video_tracks: Vec<crate::media::TrackLayersView>,
    /// Each live video forwarder's layer (sent now and chosen).
    video_forwarders: Vec<crate::media::ForwarderLayerView>,
}

/// `/api/debug/resources`: counted from the live objects, the store and the
/// database. `?room=code` limits the room list to one room.
pub async fn debug_resources(State(state): State<AppState>, Query(q): Query<DebugQuery>) -> Response {
    let rooms = &state.rooms;
    let codes: Vec<RoomCode> = match q.room {
        Some(code) => match RoomCode::parse(&code) {
            Ok(c) => vec![c],
            Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        },
        None => match rooms.db().open_rooms(200).await {
            Ok(list) => list.into_iter().filter_map(|r| RoomCode::parse(&r.code).ok()).collect(),
            Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
        },
    };
    let mut out = Vec::with_capacity(codes.len());
    for code in codes {
        let gathered = async {
            let members = rooms.store().members(&code).await.map_err(|e| e.to_string())?;
            let pending = rooms.store().pending(&code).await.map_err(|e| e.to_string())?;
            let keys = rooms.store().room_keys(&code).await.map_err(|e| e.to_string())?;
            let db_rows = rooms.db().count_participants(code.as_str()).await.map_err(|e| e.to_string())?;
            let chat_store = rooms.store().chat(&code).await.map_err(|e| e.to_string())?.len();
            let chat_db = rooms.db().chat(code.as_str()).await.map_err(|e| e.to_string())?.len();
            let room = rooms.db().room(code.as_str()).await.map_err(|e| e.to_string())?;
            let node = rooms.store().room_node(&code).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(RoomResources {
                code: code.to_string(),
                participants: members.len(),
                pending: pending.len(),
                store_keys: keys.len(),
                db_participants: db_rows,
                chat_store,
                chat_db,
                ended: room.is_some_and(|r| r.ended_at_ms.is_some()),
                node,
            })
        };
        match gathered.await {
            Ok(r) => out.push(r),
            Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
        }
    }
    let counts = live_counts(&state);
    let (video_tracks, video_forwarders) = state.rooms.media().layers();
    Json(Resources {
        node_id: rooms.node_id().to_owned(),
        sessions: counts.sessions,
        peer_connections: counts.peer_connections,
        tracks: counts.tracks,
        forwarders: counts.forwarders,
        websockets: state.sockets.len(),
        tasks: state.tasks.len() + state.sockets.len() + state.rooms.media().counts().tasks,
        rooms: out,
        video_tracks,
        video_forwarders,
    })
    .into_response()
}

#[derive(Serialize)]
struct SessionResources {
    session: String,
    /// A live session object exists on this node.
    live: bool,
    /// Store entries that still name the session.
    store_entries: Vec<String>,
    /// The `participants` row exists.
    db_row: bool,
    joined_at_ms: Option<i64>,
    left_at_ms: Option<i64>,
    leave_reason: Option<String>,
}

/// `/api/debug/sessions/{session}`: what is left of one session, counted
/// from the registry, the store and the database (history included).
pub async fn debug_session(State(state): State<AppState>, Path(session): Path<String>) -> Response {
    let rooms = &state.rooms;
    let id = SessionId::new(session);
    let gathered = async {
        let history = rooms.db().history(id.as_str()).await.map_err(|e| e.to_string())?;
        let Some(history) = history else { return Ok(None) };
        let room = RoomCode::parse(&history.room_code).map_err(|e| e.to_string())?;
        let user = UserId::new(history.user_id.clone());
        let store_entries = rooms.store().session_entries(&room, &id, &user).await.map_err(|e| e.to_string())?;
        let db_row = rooms.db().participant(id.as_str()).await.map_err(|e| e.to_string())?.is_some();
        Ok::<_, String>(Some(SessionResources {
            session: id.to_string(),
            live: rooms.sessions().get(&id).is_some(),
            store_entries,
            db_row,
            joined_at_ms: Some(history.joined_at_ms),
            left_at_ms: history.left_at_ms,
            leave_reason: history.leave_reason,
        }))
    };
    match gathered.await {
        Ok(Some(r)) => Json(r).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no such session").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
    }
}
