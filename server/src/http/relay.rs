//! Any node serves any joiner: a join or a signalling socket for a room that
//! lives on another node is relayed there (the way LiveKit relays signal
//! between its nodes), so a balancer needs no stickiness. The join request
//! is sent on whole; the socket is carried frame by frame. The media never
//! passes here: the room node's SFU gives the browser its own candidates,
//! so ICE goes straight to it. A relayed request carries [`RELAYED_BY`] and
//! is never relayed again (the room node's store decides).

use std::net::SocketAddr;
use std::time::Duration;

use app::model::RoomCode;
use axum::body::{Body, Bytes};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use leptos::server_fn::ServerFn;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame as UpstreamClose, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message as Upstream;

use tokio_util::sync::CancellationToken;

use super::socket::{READ_BUFFER_BYTES, SEND_TIMEOUT};
use crate::node::AppState;
use crate::room::Home;

/// The header a relayed request carries: the id of the node that relayed it.
pub const RELAYED_BY: &str = "x-cleanroom-relayed-by";
/// How long a relayed join or socket handshake may take.
pub const RELAY_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest join request relayed (the form is a room code and a name).
const MAX_JOIN_BODY: usize = 16 * 1024;

/// Headers that belong to one connection, never relayed.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "content-length"
            | "sec-websocket-key"
            | "sec-websocket-version"
            | "sec-websocket-extensions"
            | "sec-websocket-accept"
    )
}

/// The client the nodes relay through (no redirects, no cookie jar: the
/// person's own cookie header goes as it came).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(RELAY_TIMEOUT)
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap_or_default()
}

/// Whether this request already came through another node.
pub fn relayed(headers: &HeaderMap) -> bool {
    headers.contains_key(RELAYED_BY)
}

/// Middleware: a join for a room on another node is answered by that node.
pub async fn join(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.uri().path() != <app::api::JoinRoom as ServerFn>::PATH || relayed(req.headers()) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_JOIN_BODY).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "join request too large").into_response();
    };
    let code = form_field(&body, "code").and_then(|c| RoomCode::parse(&c).ok());
    let home = match code {
        Some(code) => state
            .rooms
            .home_of(&code)
            .await
            .map_err(|e| tracing::warn!(room = %code, error = %e, "room's node not known")),
        // A bad code: the join itself says so.
        None => Ok(Home::Here),
    };
    match home {
        Ok(Home::There { node, url }) => {
            let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
            tracing::info!(to = %node, "join relayed to the room's node");
            forward(&state, &url, &parts, body, peer).await
        }
        // Here, or the store did not answer: the join runs here and reports.
        _ => next.run(Request::from_parts(parts, Body::from(body))).await,
    }
}

/// One field of a form-encoded body.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(body).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

async fn forward(
    state: &AppState,
    url: &str,
    parts: &axum::http::request::Parts,
    body: Bytes,
    peer: Option<SocketAddr>,
) -> Response {
    let target = format!("{url}{}", parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let mut headers = relay_headers(&parts.headers, state.rooms.node_id(), peer);
    if let Some(host) = parts.headers.get(header::HOST) {
        // The room node checks the page's origin against the host it was sent to.
        headers.insert(header::HOST, host.clone());
    }
    let sent = state.relay.request(parts.method.clone(), target).headers(headers).body(body).send().await;
    let answer = match sent {
        Ok(answer) => answer,
        Err(e) => {
            tracing::warn!(to = %url, error = %e, "relayed join failed");
            return super::security::refusal(&app::error::AppError::Unavailable);
        }
    };
    let status = answer.status();
    let mut out = HeaderMap::new();
    for (name, value) in answer.headers() {
        if !hop_by_hop(name) {
            out.append(name.clone(), value.clone());
        }
    }
    match answer.bytes().await {
        Ok(bytes) => (status, out, bytes).into_response(),
        Err(e) => {
            tracing::warn!(to = %url, error = %e, "relayed join's answer lost");
            super::security::refusal(&app::error::AppError::Unavailable)
        }
    }
}

/// The request's own headers for the room node, with who relayed it and
/// for whom (`X-Forwarded-For`).
fn relay_headers(from: &HeaderMap, me: &str, peer: Option<SocketAddr>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in from {
        if !hop_by_hop(name) && name != header::HOST {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Ok(me) = HeaderValue::from_str(me) {
        headers.insert(RELAYED_BY, me);
    }
    if let Some(ip) = peer.and_then(|p| HeaderValue::from_str(&p.ip().to_string()).ok()) {
        headers.insert("x-forwarded-for", ip);
    }
    headers
}

/// Carries a page's signalling socket to the room's node and back, frame
/// by frame, until either side closes or `stop` (the process stopping) is
/// cancelled; the room node's close code (the session ended, unknown,
/// replaced) reaches the page as it was sent. If the room node cannot be
/// reached, or goes away without a close, the page sees an abnormal close
/// and reconnects, as after any lost socket. Every send is bounded by
/// [`SEND_TIMEOUT`], as the room node's own: a page (or node) that stops
/// reading drops the relay instead of holding it.
pub async fn carry_socket(
    page: WebSocket,
    url: &str,
    path_and_query: &str,
    from: &HeaderMap,
    me: &str,
    stop: CancellationToken,
) {
    tokio::select! {
        () = stop.cancelled() => {}
        () = carry(page, url, path_and_query, from, me) => {}
    }
}

async fn carry(page: WebSocket, url: &str, path_and_query: &str, from: &HeaderMap, me: &str) {
    let target = format!("{}{path_and_query}", url.replacen("http", "ws", 1));
    let Ok(mut request) = target.as_str().into_client_request() else { return };
    for (name, value) in from {
        if matches!(name.as_str(), "cookie" | "origin" | "user-agent" | "host") {
            request.headers_mut().insert(name.clone(), value.clone());
        }
    }
    if let Ok(me) = HeaderValue::from_str(me) {
        request.headers_mut().insert(RELAYED_BY, me);
    }
    // The same small read buffer as the page's side of the socket.
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
    let connect = tokio_tungstenite::connect_async_with_config(request, Some(config), false);
    let upstream = match tokio::time::timeout(RELAY_TIMEOUT, connect).await {
        Ok(Ok((upstream, _))) => upstream,
        Ok(Err(e)) => {
            tracing::warn!(to = %url, error = %e, "socket not relayed: the room's node refused");
            return;
        }
        Err(_) => {
            tracing::warn!(to = %url, "socket not relayed: the room's node did not answer");
            return;
        }
    };
    let (mut up_tx, mut up_rx) = upstream.split();
    let (mut page_tx, mut page_rx) = page.split();
    loop {
        tokio::select! {
            frame = page_rx.next() => match frame {
                Some(Ok(frame)) => {
                    let closing = matches!(frame, Message::Close(_));
                    let sent = tokio::time::timeout(SEND_TIMEOUT, up_tx.send(to_upstream(frame))).await;
                    if !matches!(sent, Ok(Ok(()))) || closing {
                        break;
                    }
                }
                _ => {
                    let _ = tokio::time::timeout(SEND_TIMEOUT, up_tx.close()).await;
                    break;
                }
            },
            frame = up_rx.next() => match frame {
                Some(Ok(frame)) => {
                    let Some(frame) = to_page(frame) else { continue };
                    let closing = matches!(frame, Message::Close(_));
                    let sent = tokio::time::timeout(SEND_TIMEOUT, page_tx.send(frame)).await;
                    if !matches!(sent, Ok(Ok(()))) || closing {
                        break;
                    }
                }
                // The room's node went away without a word: the page must
                // reconnect (and finds where the room lives then).
                _ => {
                    let _ = tokio::time::timeout(SEND_TIMEOUT, page_tx.close()).await;
                    break;
                }
            },
        }
    }
}

fn to_upstream(frame: Message) -> Upstream {
    match frame {
        Message::Text(t) => Upstream::text(t.as_str()),
        Message::Binary(b) => Upstream::binary(b),
        Message::Ping(p) => Upstream::Ping(p),
        Message::Pong(p) => Upstream::Pong(p),
        Message::Close(c) => Upstream::Close(
            c.map(|c| UpstreamClose { code: CloseCode::from(c.code), reason: c.reason.as_str().into() }),
        ),
    }
}

fn to_page(frame: Upstream) -> Option<Message> {
    Some(match frame {
        Upstream::Text(t) => Message::Text(t.as_str().into()),
        Upstream::Binary(b) => Message::Binary(b),
        Upstream::Ping(p) => Message::Ping(p),
        Upstream::Pong(p) => Message::Pong(p),
        Upstream::Close(c) => {
            Message::Close(c.map(|c| CloseFrame { code: u16::from(c.code), reason: c.reason.as_str().into() }))
        }
        Upstream::Frame(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_form_names_its_room() {
        assert_eq!(form_field(b"code=abc-defg-hij&display_name=Ada%20L", "code").as_deref(), Some("abc-defg-hij"));
        assert_eq!(form_field(b"display_name=Ada", "code"), None);
        assert_eq!(form_field(b"\xff\xfe", "code"), None);
    }

    #[test]
    fn relayed_headers_keep_the_person_and_drop_the_connection() {
        let mut from = HeaderMap::new();
        from.insert(header::COOKIE, HeaderValue::from_static("cleanroom_id=abc"));
        from.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        from.insert(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        from.insert(header::HOST, HeaderValue::from_static("meet.example"));
        let out = relay_headers(&from, "node-a", Some(SocketAddr::from(([203, 0, 113, 7], 5000))));
        assert_eq!(out[header::COOKIE], "cleanroom_id=abc");
        assert_eq!(out[RELAYED_BY], "node-a");
        assert_eq!(out["x-forwarded-for"], "203.0.113.7");
        assert!(!out.contains_key(header::CONNECTION) && !out.contains_key(header::CONTENT_LENGTH));
        assert!(!out.contains_key(header::HOST), "the host is set by the caller");
        assert!(relayed(&out));
    }
}
