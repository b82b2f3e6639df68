//! A guest as a browser tab is one: an identity cookie, the app's HTTP
//! endpoints (reqwest) and its signalling socket (tungstenite), plus the
//! hostile variants the tests need (a socket that is never read). Used by
//! the server's integration tests and by `cleanroom-bench`. A request that
//! gets no answer, or an answer that is not what the app sends, panics
//! with what it was: these are tools for tests and benchmarks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use app::error::AppError;
use app::model::{JoinOutcome, RoomCode, SessionId};
use app::signal::ServerMsg;
use futures::{SinkExt, StreamExt};
use reqwest::cookie::{CookieStore, Jar};
use reqwest::StatusCode;
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

/// One guest: a cookie jar and the app's endpoints.
#[derive(Debug)]
pub struct Guest {
    addr: SocketAddr,
    jar: Arc<Jar>,
    http: reqwest::Client,
}

/// An error answer of a server function.
#[derive(Debug)]
pub struct FnError {
    pub status: StatusCode,
    pub error: Option<AppError>,
}

impl Guest {
    /// The server this guest talks to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn new(addr: SocketAddr) -> Self {
        let jar = Arc::new(Jar::default());
        let http = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            // A request that never gets an answer fails the test (naming
            // the request) instead of hanging the suite.
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        Self { addr, jar, http }
    }

    /// The same person (same cookies) reaching another node of the
    /// deployment, as a round-robin balancer may send them.
    pub fn via(&self, addr: SocketAddr) -> Self {
        Self { addr, jar: self.jar.clone(), http: self.http.clone() }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Opens the lobby once, as a person does first: the page load is what
    /// issues the identity cookie (requests without one are refused).
    pub async fn ensure_identity(&self) {
        let base: reqwest::Url = self.url("/").parse().expect("url");
        if self.jar.cookies(&base).is_none() {
            let resp = self.http.get(base).send().await.expect("lobby answers");
            assert!(resp.status().is_success(), "lobby: {}", resp.status());
        }
    }

    /// The identity cookie this guest holds (`name=value`), if any.
    pub fn cookie(&self) -> Option<String> {
        let base: reqwest::Url = self.url("/").parse().expect("url");
        self.jar.cookies(&base).and_then(|v| v.to_str().ok().map(str::to_owned))
    }

    async fn call(&self, endpoint: &str, form: &[(&str, &str)]) -> Result<reqwest::Response, FnError> {
        self.ensure_identity().await;
        let resp = self.http.post(self.url(endpoint)).form(form).send().await.expect("server answers");
        if resp.status().is_success() || resp.status().is_redirection() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        Err(FnError { status, error: serde_json::from_str(&body).ok() })
    }

    /// Creates a room through the lobby's server function; returns its code.
    pub async fn create_room(&self, name: &str, private: bool) -> Result<RoomCode, FnError> {
        self.create_room_with(name, if private { &["private"] } else { &[] }).await
    }

    /// Creates a room with the lobby's checkboxes `options` ticked
    /// (`private`, `host_unmutes`).
    pub async fn create_room_with(&self, name: &str, options: &[&str]) -> Result<RoomCode, FnError> {
        let mut form = vec![("display_name", name)];
        form.extend(options.iter().map(|o| (*o, "on")));
        let resp = self.call("/api/create-room", &form).await?;
        let location = resp
            .headers()
            .get("location")
            .or_else(|| resp.headers().get("serverfnredirect"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .expect("create-room redirects to the room");
        let code = location.trim_start_matches("/r/");
        Ok(RoomCode::parse(code).expect("a room code in the redirect"))
    }

    pub async fn join(&self, room: &RoomCode, name: &str) -> Result<JoinOutcome, FnError> {
        let resp = self.call("/api/join", &[("code", room.as_str()), ("display_name", name)]).await?;
        Ok(resp.json().await.expect("join outcome json"))
    }

    pub async fn leave(&self, session: &SessionId) -> Result<(), FnError> {
        self.call("/api/leave", &[("session_id", session.as_str())]).await.map(|_| ())
    }

    /// Calls a room action's server function (`/api/{endpoint}`) for `session`.
    pub async fn act(&self, endpoint: &str, session: &SessionId, form: &[(&str, &str)]) -> Result<(), FnError> {
        let mut all = vec![("session_id", session.as_str())];
        all.extend_from_slice(form);
        self.call(&format!("/api/{endpoint}"), &all).await.map(|_| ())
    }

    /// The leave beacon, as `navigator.sendBeacon` sends it (text/plain).
    pub async fn beacon(&self, session: &SessionId) -> StatusCode {
        self.ensure_identity().await;
        self.http
            .post(self.url("/api/beacon/leave"))
            .header("content-type", "text/plain;charset=UTF-8")
            .body(format!("session={session}"))
            .send()
            .await
            .expect("beacon answered")
            .status()
    }

    /// Opens the room's signalling socket with this guest's cookie.
    pub async fn socket(&self, room: &RoomCode, session: &SessionId) -> Socket {
        self.ensure_identity().await;
        let url = format!("ws://{}/ws/{room}?session={session}", self.addr);
        let mut req = url.into_client_request().expect("ws request");
        let base: reqwest::Url = self.url("/").parse().expect("url");
        if let Some(cookies) = self.jar.cookies(&base) {
            req.headers_mut().insert("cookie", cookies);
        }
        let (ws, _) = tokio_tungstenite::connect_async(req).await.expect("socket opens");
        Socket { ws }
    }
}

impl Guest {
    /// Opens the room's socket like [`Guest::socket`], but as a page that
    /// stopped reading it (a frozen tab, a stalled path): the receive
    /// window is tiny and nothing is ever read.
    pub async fn frozen_socket(&self, room: &RoomCode, session: &SessionId) -> FrozenSocket {
        self.ensure_identity().await;
        let url = format!("ws://{}/ws/{room}?session={session}", self.addr);
        let mut req = url.into_client_request().expect("ws request");
        if let Some(cookie) = self.cookie() {
            req.headers_mut().insert("cookie", cookie.parse().expect("cookie header"));
        }
        let tcp = tokio::net::TcpSocket::new_v4().expect("socket");
        tcp.set_recv_buffer_size(4096).expect("small receive buffer");
        let stream = tcp.connect(self.addr).await.expect("connect");
        let (ws, _) = tokio_tungstenite::client_async(req, stream).await.expect("socket opens");
        let (sink, unread) = ws.split();
        FrozenSocket { sink, _unread: unread }
    }
}

type RawWs = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A socket nobody reads (see [`Guest::frozen_socket`]); its TCP stays
/// open until it is dropped.
#[derive(Debug)]
pub struct FrozenSocket {
    sink: futures::stream::SplitSink<RawWs, Message>,
    _unread: futures::stream::SplitStream<RawWs>,
}

impl FrozenSocket {
    /// Sends heartbeats as fast as it can without ever reading the pongs,
    /// until the server drops the connection (its answers have nowhere to
    /// go) or `limit` passes. Returns the pings sent when dropped.
    pub async fn ping_until_dropped(&mut self, limit: Duration) -> Option<usize> {
        let ping = serde_json::to_string(&app::signal::ClientMsg::Ping).expect("json");
        let deadline = tokio::time::Instant::now() + limit;
        let mut sent = 0;
        while tokio::time::Instant::now() < deadline {
            let burst = async {
                for _ in 0..1000 {
                    self.sink.feed(Message::Text(ping.clone().into())).await?;
                }
                self.sink.flush().await
            };
            match tokio::time::timeout_at(deadline, burst).await {
                Ok(Ok(())) => sent += 1000,
                Ok(Err(_)) => return Some(sent),
                Err(_) => return None,
            }
        }
        None
    }
}

/// A signalling socket seen from the client side.
#[derive(Debug)]
pub struct Socket {
    pub ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

/// What the client saw next on a socket.
#[derive(Debug)]
pub enum Seen {
    Msg(ServerMsg),
    Closed(Option<u16>),
}

impl Socket {
    pub async fn next(&mut self, limit: Duration) -> Seen {
        loop {
            let item = tokio::time::timeout(limit, self.ws.next()).await.expect("socket quiet for too long");
            match item {
                Some(Ok(Message::Text(t))) => return Seen::Msg(serde_json::from_str(&t).expect("server message json")),
                Some(Ok(Message::Close(frame))) => return Seen::Closed(frame.map(|f| u16::from(f.code))),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Seen::Closed(None),
            }
        }
    }

    /// The next message that is not media signalling or the chat history
    /// (the server's offers and ICE candidates, and the room's recent chat,
    /// sent to every admitted session's socket).
    pub async fn next_non_media(&mut self, limit: Duration) -> Seen {
        loop {
            match self.next(limit).await {
                Seen::Msg(ServerMsg::Offer { .. } | ServerMsg::IceCandidate { .. } | ServerMsg::ChatHistory { .. }) => {
                    continue
                }
                seen => return seen,
            }
        }
    }

    /// Like [`Socket::next`], but `None` when nothing arrives within `limit`.
    pub async fn try_next(&mut self, limit: Duration) -> Option<Seen> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let item = tokio::time::timeout_at(deadline, self.ws.next()).await.ok()?;
            match item {
                Some(Ok(Message::Text(t))) => {
                    return Some(Seen::Msg(serde_json::from_str(&t).expect("server message json")))
                }
                Some(Ok(Message::Close(frame))) => return Some(Seen::Closed(frame.map(|f| u16::from(f.code)))),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Some(Seen::Closed(None)),
            }
        }
    }

    /// Reads until the server ends the session (a `session-ended` message,
    /// then the close code for it); returns the reason.
    pub async fn ended(&mut self, limit: Duration) -> app::model::LeaveReason {
        let mut reason = None;
        loop {
            match self.next_non_media(limit).await {
                Seen::Msg(ServerMsg::SessionEnded { reason: r }) => reason = Some(r),
                Seen::Msg(_) => {}
                Seen::Closed(code) => {
                    let reason = reason.expect("a session-ended message before the close");
                    // A session that went with its node tells the page to join again.
                    let want = match reason {
                        app::model::LeaveReason::Moved => app::signal::close_code::MOVED,
                        _ => app::signal::close_code::SESSION_ENDED,
                    };
                    assert_eq!(code, Some(want), "{reason:?}");
                    return reason;
                }
            }
        }
    }

    /// Waits for a roster with exactly `n` participants.
    pub async fn roster_of(&mut self, n: usize, limit: Duration) -> Vec<app::model::ParticipantView> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Seen::Msg(ServerMsg::Roster { participants, .. }) if participants.len() == n => return participants,
                Seen::Msg(_) => continue,
                Seen::Closed(code) => panic!("socket closed ({code:?}) while waiting for a roster of {n}"),
            }
        }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::Text(text.into())).await.expect("send");
    }
}
