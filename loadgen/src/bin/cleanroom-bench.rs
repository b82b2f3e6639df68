//! # `cleanroom-bench`: the SFU under load, on loopback
//!
//! A command, not a test (HOUSE_STYLE 15: benchmarks measure and print;
//! tests assert). It starts the real `cleanroom` binary as a child process
//! (a free loopback port, a temporary SQLite database, the in-process
//! store, `CLEANROOM_DEBUG_API=1`, `RUST_LOG=warn`), so the CPU and memory
//! read from `/proc/<pid>` are the server's alone. Then, per room, N
//! publishers and M subscribers join through the same HTTP and WebSocket
//! path as the browser (`/api/create-room`, `/api/join`, `/ws/{code}`) and
//! run a headless WebRTC client each ([`loadgen::RtcClient`]);
//! publishers send synthetic Opus (50 packets/s) and VP8 (~33 packets/s),
//! subscribers only receive. The SFU forwards every published track to
//! every other participant of the room, publishers included.
//!
//! Sequence of one run: server up (`/readyz`), RSS noted; all publishers
//! join (one at a time) and connect; then the subscribers join one at a
//! time without waiting for media; once every subscriber heard every
//! publisher of its room (or `--join-timeout` passed) and a one-second
//! warm-up, a steady window of `--seconds` is measured:
//!
//! - forwarded packets/s: RTP packets received by all clients in the window,
//!   divided by the window length (what the SFU delivered, not what it
//!   tried to send);
//! - server CPU seconds per 1 000 forwarded packets: utime + stime of the
//!   server process in the window (from `/proc/<pid>/stat`, in clock ticks
//!   of `getconf CLK_TCK`) over packets / 1 000; its inverse, forwarded
//!   packets per server CPU-second, is comparable with "packets/s per core";
//! - server RSS per participant: (VmRSS with everyone joined − VmRSS before
//!   anyone joined) / participants;
//! - join-to-first-packet: for each (subscriber, publisher) pair of a room,
//!   from the moment the subscriber's join call starts to its first RTP
//!   packet from that publisher; p50 and p95 over all pairs (nearest rank).
//!
//! The clients run in this process and share the machine's cores with the
//! server; their CPU (this process's `/proc/self/stat`) is printed too so
//! the split is visible. With `--runs K` the whole run (fresh server
//! included) is repeated and the median of each figure is printed.
//!
//! With `--saturate R1,R2,…` it measures capacity instead: one server, all
//! rooms joined once, then each publisher's video rate is set to R1, R2, …
//! packets per second in turn (2 s to settle, then a window each) until a
//! step sees more than 0.1 % loss (from the subscribers' sequence numbers),
//! less than 99 % of the offered packets forwarded at all (a video the SFU
//! paused for a downlink's estimate leaves no gap in the numbers), the
//! server busy 0.9 of a core, or the clients (this process) 0.9 of a
//! core. Each step prints ingress and forwarded packets/s, loss, both CPU
//! shares, forwarded packets per server CPU-second and the forwarding delay
//! p50/p99 (publisher write → subscriber read: the clients stamp each
//! payload with the time, one clock in one process); the `saturation:` line
//! gives the best step within the limits and what stopped the curve.
//! `--server-cpu` / `--client-cpu` pin the server (`taskset -c`) and this
//! process (`taskset -a -p`) to one CPU each.
//!
//! With `--churn N` it measures what comings and goings leave behind: one
//! server, the rooms' people joined and staying, then N times a visitor
//! (audio + video) joins a room (the rooms take turns), waits until it
//! hears every publisher there and everyone there hears it, and leaves as
//! the Leave button does; before the next cycle, the server's own counts
//! (`/api/debug/resources`: sessions, peer connections, tracks,
//! forwarders, sockets, tasks) must be those of the rooms' people alone
//! again, or the run fails naming the counts. The server's RSS is read
//! after the first 10 cycles, at every tenth of the run and at the end;
//! the `churn:` lines give the ratio of the last to the first.
//!
//! Invariants: the child server is stopped (SIGTERM, then wait; SIGKILL
//! after 10 s or on drop) and its database and log files are removed on
//! every exit path of a run; every client is closed before the server stops.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use app::model::{RoomCode, SessionId};
use app::signal::ClientMsg;
use clap::Parser;
use loadgen::{Guest, Pump, PumpOptions, Reception, RtcClient};
use server::media::IceSettings;
use tokio::sync::mpsc;

/// The targets the figures are compared with.
const TARGET_PPS_PER_CORE: f64 = 60_000.0;
const TARGET_BYTES_PER_PARTICIPANT: f64 = 3_000_000.0;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "cleanroom-bench",
    about = "SFU benchmark: N publishers and M subscribers per room against a real server."
)]
struct Args {
    /// Rooms running at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    rooms: u32,
    /// Publishers (audio + video) per room.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    publishers: u32,
    /// Receive-only subscribers per room.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=64))]
    subscribers: u32,
    /// Length of the measured window, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    seconds: u64,
    /// Runs (each with a fresh server); the median of each figure is printed.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=50))]
    runs: u32,
    /// The `cleanroom` binary (default: next to this executable).
    #[arg(long)]
    server: Option<PathBuf>,
    /// How long to wait for every subscriber to hear every publisher.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=300))]
    join_timeout: u64,
    /// Saturation: raise each publisher's video rate through these packets
    /// per second (a window each, one server) until the subscribers see
    /// more than 0.1 % loss or the server or the clients use 0.9 of a core.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    saturate: Option<Vec<f64>>,
    /// Pin the server to this CPU (`taskset`).
    #[arg(long)]
    server_cpu: Option<u32>,
    /// Pin this process (the clients) to this CPU.
    #[arg(long)]
    client_cpu: Option<u32>,
    /// Churn: with the rooms' participants staying, a visitor joins, is
    /// heard and hears everyone, and leaves, this many times (one server);
    /// the server's RSS along the way, after the first 10 cycles and at the
    /// end.
    #[arg(long, value_parser = clap::value_parser!(u32).range(10..=100_000))]
    churn: Option<u32>,
}

/// Saturation stops at this share of packets lost, or of a core busy.
const MAX_LOSS: f64 = 0.001;
/// A step also stops the curve when this share of what the room should
/// receive was not forwarded at all.
const MAX_SHORTFALL: f64 = 0.01;
const MAX_CORE: f64 = 0.9;

/// What can stop a run.
#[derive(Debug, thiserror::Error)]
enum BenchError {
    /// The server binary did not start or did not become ready.
    #[error("server: {0}")]
    Server(String),
    /// A socket or `/proc` read failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The server's answer was not what the browser would get.
    #[error("{0}")]
    Protocol(String),
    /// The headless client's media did not start.
    #[error("media: {0}")]
    Media(#[from] server::media::MediaError),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}

// ---------------------------------------------------------------- /proc

/// Process CPU time (utime + stime) in clock ticks; `None` = this process.
fn cpu_ticks(pid: Option<u32>) -> Result<u64, BenchError> {
    let path = pid.map_or_else(|| "/proc/self/stat".to_owned(), |p| format!("/proc/{p}/stat"));
    let stat = std::fs::read_to_string(&path).map_err(io_err(path.clone()))?;
    // Fields after the command name `(…)`: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    match (field(11), field(12)) {
        (Some(utime), Some(stime)) => Ok(utime + stime),
        _ => Err(BenchError::Protocol(format!("unexpected {path}"))),
    }
}

/// Resident set size in bytes: all of it (VmRSS), and its anonymous part
/// (RssAnon: the heap, stacks; not the pages of the binary's code and the
/// libraries, which are mapped from their files once for the process and
/// shared with the page cache).
#[derive(Debug, Clone, Copy)]
struct Rss {
    total: u64,
    anon: u64,
}

fn rss(pid: u32) -> Result<Rss, BenchError> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(io_err(path.clone()))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .ok_or_else(|| BenchError::Protocol(format!("no {name} in {path}")))
    };
    Ok(Rss { total: field("VmRSS:")?, anon: field("RssAnon:")? })
}

/// Clock ticks per second (`getconf CLK_TCK`, else the usual 100).
fn clock_tick() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned()))
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!("{cpus} CPUs ({model}), load average {}", load.join(" "))
}

// ---------------------------------------------------------------- server

/// The `cleanroom` child process and its temporary files.
struct ServerProcess {
    child: tokio::process::Child,
    pid: u32,
    addr: SocketAddr,
    /// The SQLite database and the server's log, removed at stop.
    files: Vec<PathBuf>,
}

impl ServerProcess {
    async fn start(bin: &Path, cpu: Option<u32>) -> Result<Self, BenchError> {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(io_err("a free loopback port"))?;
        let tag = format!("cleanroom-bench-{}", uuid::Uuid::new_v4().simple());
        let dir = std::env::temp_dir();
        let db = dir.join(format!("{tag}.db"));
        let log = dir.join(format!("{tag}.log"));
        let log_file = std::fs::File::create(&log).map_err(io_err(log.display().to_string()))?;
        let log_err = log_file.try_clone().map_err(io_err(log.display().to_string()))?;
        let mut files = vec![log.clone(), db.clone()];
        files.extend(["-wal", "-shm", "-journal"].map(|s| dir.join(format!("{tag}.db{s}"))));
        // Pinned: `taskset` execs the server in place (the same pid).
        let mut command = match cpu {
            Some(cpu) => {
                let mut c = tokio::process::Command::new("taskset");
                c.arg("-c").arg(cpu.to_string()).arg(bin);
                c
            }
            None => tokio::process::Command::new(bin),
        };
        let child = command
            .env_remove("REDIS_URL")
            .env("DATABASE_URL", format!("sqlite://{}?mode=rwc", db.display()))
            .env("CLEANROOM_DEBUG_API", "1")
            .env("CLEANROOM_ADDR", addr.to_string())
            .env("CLEANROOM_ICE_ADDRS", "127.0.0.1")
            .env_remove("CLEANROOM_ICE_PORTS")
            .env("RUST_LOG", "warn")
            // A plain `cargo build` leaves no hash.txt beside the binary;
            // the pages it renders then name the assets without hashes
            // (the bench loads none of them).
            .env("LEPTOS_HASH_FILES", "false")
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BenchError::Server(format!("cannot start {}: {e}", bin.display())))?;
        let pid = child.id().ok_or_else(|| BenchError::Server("no pid".into()))?;
        let mut server = Self { child, pid, addr, files };
        if let Err(e) = server.wait_ready().await {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            server.stop().await;
            return Err(BenchError::Server(format!("{e}; its log:\n{tail}")));
        }
        Ok(server)
    }

    async fn wait_ready(&mut self) -> Result<(), BenchError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(BenchError::Server(format!("exited at start ({status})")));
            }
            let ready = reqwest::get(format!("http://{}/readyz", self.addr)).await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(BenchError::Server("not ready after 30 s".into()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, wait (10 s at most, then SIGKILL), remove the files.
    async fn stop(mut self) {
        let _ = tokio::process::Command::new("kill").args(["-TERM", &self.pid.to_string()]).status().await;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.is_err() {
            eprintln!("cleanroom-bench: server {} ignored SIGTERM for 10 s; killing it", self.pid);
            let _ = self.child.kill().await;
        }
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
    }
}

// ---------------------------------------------------------------- clients

/// One joined participant: its socket pump and its headless client.
struct Participant {
    id: String,
    room: usize,
    publisher: bool,
    /// When its join call started.
    joined_at: Instant,
    client: Arc<RtcClient>,
    pump: Pump,
    /// Its cookies and its session, for a Leave.
    guest: Guest,
    session: SessionId,
}

impl Participant {
    async fn join(guest: Guest, room: usize, code: &RoomCode, name: &str, publisher: bool) -> Result<Self, BenchError> {
        let joined_at = Instant::now();
        let outcome = guest.join(code, name).await.map_err(|e| BenchError::Protocol(format!("join: {e:?}")))?;
        let socket = guest.socket(code, &outcome.session_id).await;
        let (to_server, from_client) = mpsc::unbounded_channel::<ClientMsg>();
        let ice = IceSettings::loopback();
        let client = Arc::new(if publisher {
            RtcClient::start(&ice, to_server).await?
        } else {
            RtcClient::start_receive_only(&ice, to_server).await?
        });
        let pump = Pump::start(socket.ws, client.clone(), from_client, PumpOptions::default());
        Ok(Self {
            id: outcome.participant_id.as_str().to_owned(),
            room,
            publisher,
            joined_at,
            client,
            pump,
            guest,
            session: outcome.session_id,
        })
    }

    fn received_total(&self) -> u64 {
        self.client.stats().received().values().sum()
    }

    async fn close(self) {
        self.pump.close().await;
        self.client.close().await;
    }

    /// Leaves as the Leave button does: the leave call, then the socket
    /// and the peer connection closed.
    async fn leave(self) -> Result<(), BenchError> {
        let left = self.guest.leave(&self.session).await;
        self.close().await;
        left.map_err(|e| BenchError::Protocol(format!("leave: {e:?}")))
    }
}

async fn close_all(people: Vec<Participant>) {
    let closing = futures::future::join_all(people.into_iter().map(Participant::close));
    if tokio::time::timeout(Duration::from_secs(15), closing).await.is_err() {
        eprintln!("cleanroom-bench: some clients still closing after 15 s");
    }
}

// ---------------------------------------------------------------- one run

/// The figures of one run.
#[derive(Debug, Clone, Copy)]
struct Figures {
    window_s: f64,
    egress_pps: f64,
    expected_pps: f64,
    ingress_pps: f64,
    server_cores: f64,
    cpu_s_per_1k: f64,
    pkts_per_cpu_s: f64,
    client_cores: f64,
    rss_before: f64,
    rss_joined: f64,
    rss_per_participant: f64,
    anon_per_participant: f64,
    join_p50_ms: f64,
    join_p95_ms: f64,
    pairs_heard: f64,
    pairs_total: f64,
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

async fn run_once(args: &Args, bin: &Path, tick: f64) -> Result<Figures, BenchError> {
    let server = ServerProcess::start(bin, args.server_cpu).await?;
    let mut people = Vec::new();
    let result = measure(args, &server, tick, &mut people).await;
    close_all(people).await;
    server.stop().await;
    result
}

/// One measured window: a reading before and after it, and the CPU ticks
/// the server and this process (the clients) used in it.
struct Window<T> {
    before: T,
    after: T,
    seconds: f64,
    server_ticks: u64,
    own_ticks: u64,
}

/// Reads `read`, waits `seconds`, reads it again.
async fn window<T>(server: &ServerProcess, seconds: u64, read: impl Fn() -> T) -> Result<Window<T>, BenchError> {
    let before = read();
    let (srv0, own0) = (cpu_ticks(Some(server.pid))?, cpu_ticks(None)?);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let after = read();
    let (srv1, own1) = (cpu_ticks(Some(server.pid))?, cpu_ticks(None)?);
    Ok(Window {
        before,
        after,
        seconds: t0.elapsed().as_secs_f64(),
        server_ticks: srv1.saturating_sub(srv0),
        own_ticks: own1.saturating_sub(own0),
    })
}

/// Polls `done` every 20 ms for at most `limit`; whether it became true.
async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Everyone joined, and how long each (subscriber, publisher) pair took to
/// its first packet (ms, sorted), with the number of pairs.
struct Joined {
    join_ms: Vec<f64>,
    pairs: usize,
    /// Each room's code, in room order.
    codes: Vec<RoomCode>,
}

/// Joins every room's publishers, then its subscribers, and waits until
/// every subscriber heard every publisher of its room (or the time out).
async fn join_all(args: &Args, server: &ServerProcess, people: &mut Vec<Participant>) -> Result<Joined, BenchError> {
    let mut rooms = Vec::new();
    for r in 0..args.rooms as usize {
        let host = Guest::new(server.addr);
        let code = host
            .create_room(&format!("host {r}"), false)
            .await
            .map_err(|e| BenchError::Protocol(format!("create-room: {e:?}")))?;
        rooms.push((code, Some(host)));
    }
    // Publishers first (the room creator is the first), then subscribers.
    for (r, (code, host)) in rooms.iter_mut().enumerate() {
        for p in 0..args.publishers {
            let guest = host.take().unwrap_or_else(|| Guest::new(server.addr));
            people.push(Participant::join(guest, r, code, &format!("pub {r}-{p}"), true).await?);
        }
    }
    let limit = Duration::from_secs(args.join_timeout);
    if !wait_until(limit, || people.iter().all(|p| p.client.stats().is_connected())).await {
        eprintln!("cleanroom-bench: not every publisher connected within {limit:?}");
    }
    for (r, (code, _)) in rooms.iter().enumerate() {
        for s in 0..args.subscribers {
            let guest = Guest::new(server.addr);
            people.push(Participant::join(guest, r, code, &format!("sub {r}-{s}"), false).await?);
        }
    }
    let everyone: &[Participant] = people;
    // Every (subscriber, publisher) pair of a room.
    let pairs: Vec<(usize, usize)> = (0..everyone.len())
        .filter(|&s| !everyone[s].publisher)
        .flat_map(|s| {
            (0..everyone.len())
                .filter(move |&p| everyone[p].publisher && everyone[p].room == everyone[s].room)
                .map(move |p| (s, p))
        })
        .collect();
    let heard = || {
        pairs.iter().filter(|&&(s, p)| everyone[s].client.stats().first_packet_from(&everyone[p].id).is_some()).count()
    };
    if !wait_until(limit, || heard() == pairs.len()).await {
        eprintln!("cleanroom-bench: {} of {} pairs heard within {limit:?}", heard(), pairs.len());
    }
    let mut join_ms: Vec<f64> = pairs
        .iter()
        .filter_map(|&(s, p)| {
            let first = everyone[s].client.stats().first_packet_from(&everyone[p].id)?;
            Some(first.saturating_duration_since(everyone[s].joined_at).as_secs_f64() * 1000.0)
        })
        .collect();
    join_ms.sort_by(f64::total_cmp);
    Ok(Joined { join_ms, pairs: pairs.len(), codes: rooms.into_iter().map(|(code, _)| code).collect() })
}

async fn measure(
    args: &Args,
    server: &ServerProcess,
    tick: f64,
    people: &mut Vec<Participant>,
) -> Result<Figures, BenchError> {
    let rss_before = rss(server.pid)?;
    let Joined { join_ms, pairs, .. } = join_all(args, server, people).await?;
    let everyone: &[Participant] = people;
    // Warm-up, then the steady window.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let received = || everyone.iter().map(Participant::received_total).sum::<u64>();
    let sent =
        || everyone.iter().map(|p| p.client.stats().sent.load(std::sync::atomic::Ordering::Relaxed)).sum::<u64>();
    let w = window(server, args.seconds, || (received(), sent())).await?;
    let ((rx0, tx0), (rx1, tx1), window_s) = (w.before, w.after, w.seconds);
    let rss_joined = rss(server.pid)?;

    let packets = (rx1 - rx0) as f64;
    // Every packet a publisher sent should reach the room's other participants.
    let ingress_pps = (tx1 - tx0) as f64 / window_s;
    let server_cpu_s = w.server_ticks as f64 / tick;
    let participants = f64::from(args.rooms * (args.publishers + args.subscribers));
    let (n, m) = (f64::from(args.publishers), f64::from(args.subscribers));
    Ok(Figures {
        window_s,
        egress_pps: packets / window_s,
        expected_pps: ingress_pps * (n - 1.0 + m),
        ingress_pps,
        server_cores: server_cpu_s / window_s,
        cpu_s_per_1k: if packets > 0.0 { server_cpu_s / (packets / 1000.0) } else { f64::NAN },
        pkts_per_cpu_s: if server_cpu_s > 0.0 { packets / server_cpu_s } else { f64::NAN },
        client_cores: w.own_ticks as f64 / tick / window_s,
        rss_before: rss_before.total as f64,
        rss_joined: rss_joined.total as f64,
        rss_per_participant: (rss_joined.total as f64 - rss_before.total as f64) / participants,
        anon_per_participant: (rss_joined.anon as f64 - rss_before.anon as f64) / participants,
        join_p50_ms: percentile(&join_ms, 50.0),
        join_p95_ms: percentile(&join_ms, 95.0),
        pairs_heard: join_ms.len() as f64,
        pairs_total: pairs as f64,
    })
}

// ---------------------------------------------------------------- saturation

/// One step of the saturation curve.
#[derive(Debug, Clone, Copy)]
struct Step {
    /// Video packets per second each publisher was asked for.
    rate: f64,
    ingress_pps: f64,
    /// What the room's other participants should receive of the ingress
    /// (a subscriber whose video the SFU paused sees no gap in it, so
    /// `loss` does not count it).
    offered_pps: f64,
    egress_pps: f64,
    /// Share of the packets the subscribers' sequence numbers say were
    /// forwarded that did not arrive.
    loss: f64,
    server_cores: f64,
    client_cores: f64,
    pkts_per_cpu_s: f64,
    delay_p50_ms: f64,
    delay_p99_ms: f64,
}

/// Why the curve stopped where it did.
/// Whether the SFU forwarded clearly less than the room should receive.
fn short(step: &Step) -> bool {
    step.egress_pps < step.offered_pps * (1.0 - MAX_SHORTFALL)
}

fn limit(step: &Step) -> Option<&'static str> {
    if step.loss > MAX_LOSS {
        Some("loss over 0.1 %")
    } else if short(step) {
        Some("forwarded under 99 % of what was offered (the SFU paused video it judged over a downlink's estimate)")
    } else if step.server_cores >= MAX_CORE {
        Some("server at 0.9 of its core")
    } else if step.client_cores >= MAX_CORE {
        Some("clients at 0.9 of their core (the load generator, not the server, is the limit)")
    } else {
        None
    }
}

/// One server, everyone joined once, then a window per rate.
async fn saturate(args: &Args, rates: &[f64], bin: &Path, tick: f64) -> Result<Vec<Step>, BenchError> {
    let server = ServerProcess::start(bin, args.server_cpu).await?;
    let mut people = Vec::new();
    let result = async {
        join_all(args, &server, &mut people).await?;
        let mut steps = Vec::new();
        for &rate in rates {
            let step = saturation_step(args, &server, tick, &people, rate).await?;
            print_step(&step);
            let stop = limit(&step).is_some();
            steps.push(step);
            if stop {
                break;
            }
        }
        Ok(steps)
    }
    .await;
    close_all(people).await;
    server.stop().await;
    result
}

async fn saturation_step(
    args: &Args,
    server: &ServerProcess,
    tick: f64,
    people: &[Participant],
    rate: f64,
) -> Result<Step, BenchError> {
    for p in people.iter().filter(|p| p.publisher) {
        p.client.set_video_rate(rate);
    }
    // Settle at the new rate, then the window.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reception = || {
        people.iter().map(|p| p.client.stats().reception()).fold(Reception::default(), |a, r| Reception {
            expected: a.expected + r.expected,
            received: a.received + r.received,
        })
    };
    let sent = || people.iter().map(|p| p.client.stats().sent.load(std::sync::atomic::Ordering::Relaxed)).sum::<u64>();
    for p in people {
        p.client.stats().take_delays();
        p.client.stats().record_delays(true);
    }
    let w = window(server, args.seconds, || (reception(), sent())).await?;
    let ((r0, tx0), (r1, tx1), window_s) = (w.before, w.after, w.seconds);
    let mut delays: Vec<f64> = Vec::new();
    for p in people {
        p.client.stats().record_delays(false);
        delays.extend(p.client.stats().take_delays().into_iter().map(|us| f64::from(us) / 1000.0));
    }
    delays.sort_by(f64::total_cmp);
    let expected = r1.expected.saturating_sub(r0.expected) as f64;
    let received = r1.received.saturating_sub(r0.received) as f64;
    let server_cpu_s = w.server_ticks as f64 / tick;
    Ok(Step {
        rate,
        ingress_pps: (tx1 - tx0) as f64 / window_s,
        offered_pps: (tx1 - tx0) as f64 / window_s * (f64::from(args.publishers) - 1.0 + f64::from(args.subscribers)),
        egress_pps: received / window_s,
        loss: if expected > 0.0 { (1.0 - received / expected).max(0.0) } else { f64::NAN },
        server_cores: server_cpu_s / window_s,
        client_cores: w.own_ticks as f64 / tick / window_s,
        pkts_per_cpu_s: if server_cpu_s > 0.0 { received / server_cpu_s } else { f64::NAN },
        delay_p50_ms: percentile(&delays, 50.0),
        delay_p99_ms: percentile(&delays, 99.0),
    })
}

const STEP_HEADER: &str = "video pkt/s per publisher | ingress pkt/s | forwarded pkt/s | loss % | server cores \
                           | clients cores | pkt per server CPU-s | delay p50 / p99 (ms)";

fn print_step(step: &Step) {
    println!(
        "step: | {} | {} | {} | {} | {} | {} | {} | {} / {} |",
        fmt_num(step.rate, 0),
        fmt_num(step.ingress_pps, 0),
        fmt_num(step.egress_pps, 0),
        fmt_num(step.loss * 100.0, 3),
        fmt_num(step.server_cores, 2),
        fmt_num(step.client_cores, 2),
        fmt_num(step.pkts_per_cpu_s, 0),
        fmt_num(step.delay_p50_ms, 2),
        fmt_num(step.delay_p99_ms, 2),
    );
}

fn report_saturation(args: &Args, steps: &[Step]) {
    let shape = format!("{} × {}×{}", args.rooms, args.publishers, args.subscribers);
    // The most the server forwarded per CPU-second without losing more
    // than the bar (a step that reached a core's 0.9 counts: that is the
    // saturation the curve looks for).
    let clean = steps
        .iter()
        .filter(|s| s.loss <= MAX_LOSS && !short(s))
        .max_by(|a, b| a.pkts_per_cpu_s.total_cmp(&b.pkts_per_cpu_s));
    let stopped = steps.last().and_then(limit).unwrap_or("the last rate asked for");
    match clean {
        Some(best) => {
            println!(
                "saturation: {} forwarded packets per server CPU-second ({shape}; {} pkt/s forwarded on {} server \
                 cores, loss {} %, delay p99 {} ms; stopped by: {stopped})",
                fmt_num(best.pkts_per_cpu_s, 0),
                fmt_num(best.egress_pps, 0),
                fmt_num(best.server_cores, 2),
                fmt_num(best.loss * 100.0, 3),
                fmt_num(best.delay_p99_ms, 2),
            );
        }
        None => println!("saturation: no step under 0.1 % loss ({shape}; stopped by: {stopped})"),
    }
}

// ---------------------------------------------------------------- churn

/// The live objects `/api/debug/resources` counts (the server counts them
/// from the objects themselves, not from counters of its own).
const COUNTED: [&str; 6] = ["sessions", "peer_connections", "tracks", "forwarders", "websockets", "tasks"];

/// The server's counts of [`COUNTED`], in that order.
async fn counts(server: &ServerProcess) -> Result<[u64; 6], BenchError> {
    let url = format!("http://{}/api/debug/resources", server.addr);
    let failed = |e: reqwest::Error| BenchError::Protocol(format!("{url}: {e}"));
    // Bounded: a server that stops answering fails the run, not hangs it.
    let read = async { reqwest::get(&url).await?.json::<serde_json::Value>().await };
    let body = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .map_err(|_| BenchError::Protocol(format!("{url}: no answer within 10 s")))?
        .map_err(failed)?;
    let mut counts = [0; 6];
    for (count, key) in counts.iter_mut().zip(COUNTED) {
        *count = body
            .get(key)
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| BenchError::Protocol(format!("{url} has no count of {key}: {body}")))?;
    }
    Ok(counts)
}

/// What a churn run saw.
struct Churn {
    /// Server RSS (bytes) before anyone joined and with the rooms' people in.
    rss_before: u64,
    rss_residents: u64,
    /// (cycles done, server RSS) along the way.
    rss: Vec<(u32, Rss)>,
    /// Per cycle: from the visitor's join call until it and the room heard
    /// each other (ms, sorted).
    heard_ms: Vec<f64>,
    /// Per cycle: from the visitor's Leave until the server's counts were
    /// those of the rooms' people alone again (ms, sorted).
    released_ms: Vec<f64>,
}

/// After cycle `done` of `total`, is RSS read? After the first 10, at
/// every tenth of the run, and at the end.
fn samples_rss(done: u32, total: u32) -> bool {
    done == 10 || done == total || done.is_multiple_of((total / 10).max(1))
}

async fn churn(args: &Args, cycles: u32, bin: &Path) -> Result<Churn, BenchError> {
    let server = ServerProcess::start(bin, args.server_cpu).await?;
    let mut people = Vec::new();
    let result = churn_cycles(args, cycles, &server, &mut people).await;
    close_all(people).await;
    server.stop().await;
    result
}

async fn churn_cycles(
    args: &Args,
    cycles: u32,
    server: &ServerProcess,
    people: &mut Vec<Participant>,
) -> Result<Churn, BenchError> {
    let rss_before = rss(server.pid)?.total;
    let Joined { codes, .. } = join_all(args, server, people).await?;
    let residents: &[Participant] = people;
    let limit = Duration::from_secs(args.join_timeout);
    // The baseline is taken once every resident hears every other
    // publisher of its room (publishers too: `join_all` waited only for
    // the subscribers), so all their tracks and forwarders exist.
    let all_heard = || {
        residents.iter().all(|s| {
            residents
                .iter()
                .filter(|p| p.publisher && p.room == s.room && p.id != s.id)
                .all(|p| s.client.stats().first_packet_from(&p.id).is_some())
        })
    };
    if !wait_until(limit, all_heard).await {
        return Err(BenchError::Protocol(format!("the rooms' people did not all hear each other within {limit:?}")));
    }
    let baseline = counts(server).await?;
    let rss_residents = rss(server.pid)?.total;
    let mut churn = Churn { rss_before, rss_residents, rss: Vec::new(), heard_ms: Vec::new(), released_ms: Vec::new() };
    for cycle in 1..=cycles {
        // The rooms take turns.
        let room = (cycle as usize - 1) % codes.len();
        let guest = Guest::new(server.addr);
        let visitor = Participant::join(guest, room, &codes[room], &format!("visitor {cycle}"), true).await?;
        let in_room = || residents.iter().filter(|p| p.room == room);
        let heard = || {
            in_room().filter(|p| p.publisher).all(|p| visitor.client.stats().first_packet_from(&p.id).is_some())
                && in_room().all(|p| p.client.stats().first_packet_from(&visitor.id).is_some())
        };
        if !wait_until(limit, heard).await {
            visitor.close().await;
            return Err(BenchError::Protocol(format!(
                "cycle {cycle}: the visitor and its room did not hear each other within {limit:?}"
            )));
        }
        churn.heard_ms.push(visitor.joined_at.elapsed().as_secs_f64() * 1000.0);
        let left = Instant::now();
        visitor.leave().await?;
        loop {
            let now = counts(server).await?;
            if now == baseline {
                break;
            }
            if left.elapsed() > limit {
                let named: Vec<String> = COUNTED
                    .iter()
                    .zip(now.iter().zip(baseline))
                    .map(|(k, (n, b))| format!("{k} {n} (was {b})"))
                    .collect();
                return Err(BenchError::Protocol(format!(
                    "cycle {cycle}: {limit:?} after the visitor left, the server still counts {}",
                    named.join(", ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        churn.released_ms.push(left.elapsed().as_secs_f64() * 1000.0);
        if samples_rss(cycle, cycles) {
            let rss = rss(server.pid)?;
            println!(
                "churn: after {} cycles, server RSS {} MB (anonymous {} MB)",
                fmt_num(f64::from(cycle), 0),
                fmt_num(rss.total as f64 / MB, 1),
                fmt_num(rss.anon as f64 / MB, 1)
            );
            churn.rss.push((cycle, rss));
        }
    }
    churn.heard_ms.sort_by(f64::total_cmp);
    churn.released_ms.sort_by(f64::total_cmp);
    Ok(churn)
}

fn report_churn(args: &Args, churn: &Churn) {
    let shape = format!("{} × {}×{}", args.rooms, args.publishers, args.subscribers);
    let at = |n: u32| churn.rss.iter().find(|(c, _)| *c == n).map(|(_, rss)| *rss);
    let (Some(first), Some(&(cycles, last))) = (at(10), churn.rss.last()) else {
        println!("churn: no RSS reading after 10 cycles");
        return;
    };
    println!(
        "churn: server RSS {} MB before anyone joined, {} MB with the rooms' people ({shape}) in",
        fmt_num(churn.rss_before as f64 / MB, 1),
        fmt_num(churn.rss_residents as f64 / MB, 1),
    );
    println!(
        "churn: join → heard both ways p50 / p95 {} / {} ms; Leave → the server's counts back to the rooms' own \
         p50 / p95 {} / {} ms (every cycle)",
        fmt_num(percentile(&churn.heard_ms, 50.0), 0),
        fmt_num(percentile(&churn.heard_ms, 95.0), 0),
        fmt_num(percentile(&churn.released_ms, 50.0), 0),
        fmt_num(percentile(&churn.released_ms, 95.0), 0),
    );
    println!(
        "churn: RSS after {} join/leave cycles {} MB, after the first 10 {} MB: ratio {} (anonymous: {} MB, {} MB, \
         ratio {}) ({shape})",
        fmt_num(f64::from(cycles), 0),
        fmt_num(last.total as f64 / MB, 1),
        fmt_num(first.total as f64 / MB, 1),
        fmt_num(last.total as f64 / first.total as f64, 3),
        fmt_num(last.anon as f64 / MB, 1),
        fmt_num(first.anon as f64 / MB, 1),
        fmt_num(last.anon as f64 / first.anon as f64, 3),
    );
}

// ---------------------------------------------------------------- report

fn fmt_num(v: f64, decimals: usize) -> String {
    if v.is_nan() {
        return "n/a".to_owned();
    }
    let s = format!("{v:.decimals$}");
    // Thousands separators for the integer part.
    let (int, frac) = s.split_once('.').map_or((s.as_str(), None), |(i, f)| (i, Some(f)));
    let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(' ');
        }
        grouped.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

/// One printed row: a label and how to show a figure.
struct Row {
    label: &'static str,
    value: fn(&Figures) -> f64,
    decimals: usize,
}

const MB: f64 = 1_000_000.0;

const ROWS: &[Row] = &[
    Row { label: "window (s)", value: |f| f.window_s, decimals: 2 },
    Row { label: "ingress packets/s (sent by publishers)", value: |f| f.ingress_pps, decimals: 0 },
    Row { label: "forwarded packets/s (received by all clients)", value: |f| f.egress_pps, decimals: 0 },
    Row { label: "  expected (sent × other participants of the room)", value: |f| f.expected_pps, decimals: 0 },
    Row { label: "  delivered / expected", value: |f| f.egress_pps / f.expected_pps, decimals: 3 },
    Row { label: "server CPU (cores busy)", value: |f| f.server_cores, decimals: 3 },
    Row { label: "server CPU s per 1 000 forwarded packets", value: |f| f.cpu_s_per_1k, decimals: 4 },
    Row { label: "forwarded packets per server CPU-second", value: |f| f.pkts_per_cpu_s, decimals: 0 },
    Row {
        label: "  ratio to target 60 000 pkt/s per core",
        value: |f| f.pkts_per_cpu_s / TARGET_PPS_PER_CORE,
        decimals: 3,
    },
    Row { label: "clients CPU (cores busy, bench process)", value: |f| f.client_cores, decimals: 3 },
    Row { label: "server RSS before anyone joined (MB)", value: |f| f.rss_before / MB, decimals: 1 },
    Row { label: "server RSS with everyone joined (MB)", value: |f| f.rss_joined / MB, decimals: 1 },
    Row { label: "server RSS per participant (MB)", value: |f| f.rss_per_participant / MB, decimals: 2 },
    Row { label: "  of which anonymous (heap, stacks; MB)", value: |f| f.anon_per_participant / MB, decimals: 2 },
    Row {
        label: "  ratio to target 3 MB",
        value: |f| f.rss_per_participant / TARGET_BYTES_PER_PARTICIPANT,
        decimals: 2,
    },
    Row { label: "join-to-first-packet p50 (ms)", value: |f| f.join_p50_ms, decimals: 0 },
    Row { label: "join-to-first-packet p95 (ms)", value: |f| f.join_p95_ms, decimals: 0 },
    Row { label: "(subscriber, publisher) pairs heard", value: |f| f.pairs_heard, decimals: 0 },
    Row { label: "  of pairs", value: |f| f.pairs_total, decimals: 0 },
];

fn report(args: &Args, runs: &[Figures]) {
    let width = ROWS.iter().map(|r| r.label.chars().count()).max().unwrap_or(0);
    let mut header = format!("{:width$}", "");
    for i in 1..=runs.len() {
        header.push_str(&format!("{:>12}", format!("run {i}")));
    }
    if runs.len() > 1 {
        header.push_str(&format!("{:>12}", "median"));
    }
    println!("{header}");
    for row in ROWS {
        let values: Vec<f64> = runs.iter().map(row.value).collect();
        let mut line = format!("{:width$}", row.label);
        for v in &values {
            line.push_str(&format!("{:>12}", fmt_num(*v, row.decimals)));
        }
        if runs.len() > 1 {
            line.push_str(&format!("{:>12}", fmt_num(median(values), row.decimals)));
        }
        println!("{line}");
    }
    let med = |f: fn(&Figures) -> f64| median(runs.iter().map(f).collect());
    println!(
        "summary columns: | rooms × publishers×subscribers | forwarded pkt/s | delivered/expected | server cores busy \
         | server CPU s per 1 000 pkt | pkt per server CPU-s | server RSS per participant (MB) \
         | of which anonymous (MB) | join-to-first-packet p50 / p95 (ms) | clients cores busy | pairs not heard |"
    );
    println!(
        "summary ({} of {} runs): | {} × {}×{} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} |",
        if runs.len() > 1 { "median" } else { "single" },
        runs.len(),
        args.rooms,
        args.publishers,
        args.subscribers,
        fmt_num(med(|f| f.egress_pps), 0),
        fmt_num(med(|f| f.egress_pps / f.expected_pps), 3),
        fmt_num(med(|f| f.server_cores), 2),
        fmt_num(med(|f| f.cpu_s_per_1k), 4),
        fmt_num(med(|f| f.pkts_per_cpu_s), 0),
        fmt_num(med(|f| f.rss_per_participant / MB), 2),
        fmt_num(med(|f| f.anon_per_participant / MB), 2),
        fmt_num(med(|f| f.join_p50_ms), 0),
        fmt_num(med(|f| f.join_p95_ms), 0),
        fmt_num(med(|f| f.client_cores), 2),
        fmt_num(med(|f| f.pairs_total - f.pairs_heard), 0),
    );
}

fn default_server() -> Option<PathBuf> {
    let me = std::env::current_exe().ok()?;
    Some(me.with_file_name("cleanroom"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let Some(bin) = args.server.clone().or_else(default_server) else {
        eprintln!("cleanroom-bench: no --server given and no `cleanroom` next to this executable");
        return ExitCode::from(2);
    };
    if !bin.is_file() {
        eprintln!(
            "cleanroom-bench: {} not found; build it with `cargo build --release -p server --bin cleanroom` or pass --server",
            bin.display()
        );
        return ExitCode::from(2);
    }
    let tick = clock_tick();
    let participants = args.rooms * (args.publishers + args.subscribers);
    println!(
        "cleanroom-bench: {} room(s) × ({} publishers + {} subscribers) = {participants} participants, \
         {} s window, {} run(s)",
        args.rooms, args.publishers, args.subscribers, args.seconds, args.runs
    );
    println!("machine: {}; the server and the clients share these CPUs", machine());
    println!("server: {} (SQLite temp DB, in-process store, RUST_LOG=warn); CLK_TCK {tick}", bin.display());
    if let Some(cpu) = args.client_cpu {
        // Every thread, the runtime's included (new ones inherit it).
        let pinned = std::process::Command::new("taskset")
            .args(["-a", "-p", "-c", &cpu.to_string(), &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status();
        if !pinned.is_ok_and(|s| s.success()) {
            eprintln!("cleanroom-bench: could not pin the clients to CPU {cpu} (taskset)");
            return ExitCode::FAILURE;
        }
    }
    if let Some(cpu) = args.server_cpu {
        println!(
            "pinned: server on CPU {cpu}, clients on {}",
            args.client_cpu.map_or("any".to_owned(), |c| c.to_string())
        );
    }
    if let Some(rates) = args.saturate.clone() {
        println!("saturation: {STEP_HEADER}");
        match saturate(&args, &rates, &bin, tick).await {
            Ok(steps) => {
                report_saturation(&args, &steps);
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!("cleanroom-bench: saturation failed: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some(cycles) = args.churn {
        return match churn(&args, cycles, &bin).await {
            Ok(churn) => {
                report_churn(&args, &churn);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cleanroom-bench: churn failed: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let mut runs = Vec::new();
    for i in 1..=args.runs {
        match run_once(&args, &bin, tick).await {
            Ok(f) => runs.push(f),
            Err(e) => {
                eprintln!("cleanroom-bench: run {i} failed: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    report(&args, &runs);
    ExitCode::SUCCESS
}
