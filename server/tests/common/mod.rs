//! Shared test harness: real servers on `127.0.0.1:0`, fresh databases,
//! unique Redis prefixes, and a guest client that speaks the app's HTTP and
//! WebSocket protocols like the browser does.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use app::error::AppError;
use app::model::{JoinOutcome, RoomCode, SessionId};
use app::signal::ServerMsg;
use futures::{SinkExt, StreamExt};
use leptos::prelude::LeptosOptions;
use reqwest::cookie::{CookieStore, Jar};
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Database};
use server::config::Config;
use server::AppState;
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

pub mod rtc_client;

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn postgres_admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// A database made for one test, dropped by [`TestDb::drop_db`].
pub struct TestDb {
    pub url: String,
    name: Option<String>,
}

impl TestDb {
    pub fn sqlite() -> Self {
        let path = std::env::temp_dir().join(format!("{}.db", unique("cleanroom-test-")));
        Self { url: format!("sqlite://{}?mode=rwc", path.display()), name: None }
    }

    /// A fresh PostgreSQL database; fails the test when PostgreSQL is away.
    pub async fn postgres() -> Self {
        let admin = postgres_admin_url();
        let name = unique("cleanroom_test_");
        let conn = Database::connect(&admin).await.expect("PostgreSQL reachable at TEST_POSTGRES_URL");
        conn.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await.expect("create test database");
        let _ = conn.close().await;
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        Self { url: format!("{base}/{name}"), name: Some(name) }
    }

    pub async fn drop_db(self) {
        match self.name {
            Some(name) => {
                if let Ok(conn) = Database::connect(&postgres_admin_url()).await {
                    let _ = conn.execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await;
                    let _ = conn.close().await;
                }
            }
            None => {
                if let Some(path) = self.url.strip_prefix("sqlite://").and_then(|p| p.split('?').next()) {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }
}

/// The flags of node `node` of a deployment on PostgreSQL (`database_url`)
/// and the test Redis, with the debug API, plus `extra`.
pub fn node_args(database_url: &str, node: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> =
        ["cleanroom", "--debug-api", "--database-url", database_url, "--redis-url"].map(String::from).to_vec();
    args.extend([redis_url(), "--node-id".into(), node.into()]);
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// The two deployments every behaviour is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The defaults: SQLite and the in-process store.
    SqliteMemory,
    /// Production: PostgreSQL and Redis.
    PostgresRedis,
}

/// A running server on a free loopback port.
pub struct TestServer {
    pub addr: SocketAddr,
    pub state: AppState,
    pub db: Option<TestDb>,
    serve: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub async fn start(backend: Backend) -> Self {
        let db = match backend {
            Backend::SqliteMemory => TestDb::sqlite(),
            Backend::PostgresRedis => TestDb::postgres().await,
        };
        let mut args = vec!["cleanroom".to_owned(), "--debug-api".into(), "--database-url".into(), db.url.clone()];
        if backend == Backend::PostgresRedis {
            args.extend(["--redis-url".into(), redis_url()]);
        }
        let mut server = Self::with_args(&args).await;
        server.db = Some(db);
        server
    }

    /// SQLite in a fresh file, the debug API, and `extra` flags.
    pub async fn sqlite_with(extra: &[&str]) -> Self {
        let db = TestDb::sqlite();
        let mut args: Vec<String> = ["cleanroom", "--debug-api", "--database-url", &db.url].map(String::from).to_vec();
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut server = Self::with_args(&args).await;
        server.db = Some(db);
        server
    }

    /// Starts with explicit flags (the store prefix is always unique).
    pub async fn with_args(args: &[String]) -> Self {
        Self::with_args_prefix(args, &unique("cleanroom-test-")).await
    }

    /// Starts with explicit flags and store prefix: servers sharing a
    /// prefix, a Redis and a database are nodes of one deployment.
    pub async fn with_args_prefix(args: &[String], prefix: &str) -> Self {
        let config = match Config::from_args(args) {
            Ok(c) => c,
            Err(e) => panic!("test config refused: {e:?}"),
        };
        let leptos = LeptosOptions::builder().output_name("cleanroom").build();
        let state = server::start(&config, leptos, prefix).await.expect("server starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = server::router(&state);
        let serve = tokio::spawn(async move {
            let _ = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>()).await;
        });
        Self { addr, state, db: None, serve }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn guest(&self) -> Guest {
        Guest::new(self.addr)
    }

    /// `/api/debug/resources?room=…` as JSON.
    pub async fn resources(&self, room: &RoomCode) -> serde_json::Value {
        reqwest::get(self.url(&format!("/api/debug/resources?room={room}")))
            .await
            .expect("debug api answers")
            .json()
            .await
            .expect("debug api json")
    }

    /// Shuts the server down and drops its database.
    pub async fn stop(mut self) {
        server::shutdown(&self.state).await;
        self.serve.abort();
        if let Some(db) = self.db.take() {
            db.drop_db().await;
        }
    }
}

impl TestServer {
    /// Why `session` ended, from its history row (`None` while it is open,
    /// or when it never existed). The row's left time and reason are set
    /// together, or neither.
    pub async fn leave_reason(&self, session: &SessionId) -> Option<String> {
        let row = self.state.rooms.db().history(session.as_str()).await.expect("history read")?;
        assert_eq!(row.left_at_ms.is_some(), row.leave_reason.is_some(), "left time and reason go together");
        row.leave_reason
    }
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One guest: a cookie jar and the app's endpoints.
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

    /// The next message that is not media signalling (the server's offers
    /// and ICE candidates, sent to every admitted session's socket).
    pub async fn next_non_media(&mut self, limit: Duration) -> Seen {
        loop {
            match self.next(limit).await {
                Seen::Msg(ServerMsg::Offer { .. } | ServerMsg::IceCandidate { .. }) => continue,
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
                    assert_eq!(code, Some(app::signal::close_code::SESSION_ENDED));
                    return reason.expect("a session-ended message before the close");
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

/// A private redis-server on a free port, killed on drop.
pub struct OwnRedis {
    pub port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    pub fn start_on(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { port, child: Some(child) }
    }

    /// Freezes (`true`) or thaws the server: its connections stay open but
    /// nothing answers, and its data survives.
    pub fn freeze(&self, frozen: bool) {
        let Some(child) = &self.child else { return };
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let status = Command::new("kill").args([signal, &child.id().to_string()]).status().expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP relay to a backing service that a test can cut and restore, the
/// way a network failure looks to the server: when cut, every relayed
/// connection is dropped and new ones are closed at once.
pub struct TcpCut {
    pub port: u16,
    state: Arc<std::sync::Mutex<CutState>>,
    accept: tokio::task::JoinHandle<()>,
}

struct CutState {
    down: bool,
    /// Cancelled to drop the connections relayed so far.
    conns: tokio_util::sync::CancellationToken,
}

impl TcpCut {
    /// Relays a free loopback port to `target`.
    pub async fn to(target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let port = listener.local_addr().expect("relay addr").port();
        let state = Arc::new(std::sync::Mutex::new(CutState {
            down: false,
            conns: tokio_util::sync::CancellationToken::new(),
        }));
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let conns = {
                    let s = shared.lock().unwrap();
                    if s.down {
                        continue; // dropped: closed at once
                    }
                    s.conns.clone()
                };
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else { return };
                    tokio::select! {
                        () = conns.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Self { port, state, accept }
    }

    /// Cuts (`true`) or restores the relay.
    pub fn cut(&self, down: bool) {
        let mut s = self.state.lock().unwrap();
        s.down = down;
        if down {
            s.conns.cancel();
            s.conns = tokio_util::sync::CancellationToken::new();
        }
    }
}

impl Drop for TcpCut {
    fn drop(&mut self) {
        self.cut(true);
        self.accept.abort();
    }
}
