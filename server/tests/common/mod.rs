//! Shared test harness: real servers on `127.0.0.1:0`, fresh databases,
//! unique Redis prefixes, and a guest client that speaks the app's HTTP and
//! WebSocket protocols like the browser does.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use app::model::{RoomCode, SessionId};
use leptos::prelude::LeptosOptions;
use sea_orm::{ConnectionTrait, Database};
use server::config::Config;
use server::AppState;

pub mod nodes;
pub mod rtc_client;
pub mod tls;

// Each test crate uses a part of these.
#[allow(unused_imports)]
pub use loadgen::{FnError, FrozenSocket, Guest, Seen, Socket};

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn postgres_admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Where a `cleanroom` process listens, from its "listening on
/// http(s)://ADDR" log line: processes started by the tests bind
/// `--addr 127.0.0.1:0` and say which port they got (a port chosen by the
/// test and bound later by the process could be taken in between).
pub fn listening_addr(log: &str) -> Option<SocketAddr> {
    let (_, rest) = log.split_once("listening on http")?;
    let rest = rest.strip_prefix("s://").or_else(|| rest.strip_prefix("://"))?;
    let end =
        rest.find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))).unwrap_or(rest.len());
    rest[..end].parse().ok()
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

/// The cookie key the nodes of a test deployment share (any node reads
/// any person's identity).
pub const TEST_SECRET: &str = "the-test-deployment-secret-of-32-bytes-or-more";

/// The flags of node `node` of a deployment on PostgreSQL (`database_url`)
/// and the test Redis, with the debug API, plus `extra`.
pub fn node_args(database_url: &str, node: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> =
        ["cleanroom", "--debug-api", "--database-url", database_url, "--redis-url"].map(String::from).to_vec();
    args.extend([redis_url(), "--node-id".into(), node.into(), "--secret".into(), TEST_SECRET.into()]);
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
        Self::with_site(args, prefix, LeptosOptions::builder().output_name("cleanroom").build()).await
    }

    /// Starts with explicit flags, store prefix and Leptos options (the site's files).
    pub async fn with_site(args: &[String], prefix: &str, leptos: LeptosOptions) -> Self {
        // Bound first, so the node's lease names where it is reached.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut args = args.to_vec();
        if !args.iter().any(|a| a == "--public-url") {
            args.extend(["--public-url".to_owned(), format!("http://{addr}")]);
        }
        let config = match Config::from_args(&args) {
            Ok(c) => c,
            Err(e) => panic!("test config refused: {e:?}"),
        };
        let state = server::start(&config, leptos, prefix).await.expect("server starts");
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

    /// Dies as a crashed process would, as far as the others can tell: it
    /// stops answering and its tasks stop, ending nothing.
    pub fn crash(&self) {
        self.state.shutdown.cancel();
        self.serve.abort();
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

    /// Why `session` ended, once its history row says so: the row is
    /// written after the others see the person go (the close waits for the
    /// session's media first), so a test that saw them go waits for it.
    pub async fn recorded_leave(&self, session: &SessionId) -> String {
        eventually(Duration::from_secs(10), &format!("the leave of {session} recorded"), || self.leave_reason(session))
            .await
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
