//! A deployment of `cleanroom` processes: one fresh PostgreSQL database, the
//! test Redis under a prefix of its own and one shared secret, each node a
//! real process on its own loopback port (so it can be killed for real).
//! Each node binds port 0 and the harness reads the port it got from its
//! log: a port chosen by the test and bound later by the node could be
//! taken in between by any of the other tests running at the same time.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::{redis_url, tls, unique, TestDb};

/// What the nodes of one deployment share.
pub struct Deployment {
    pub db: TestDb,
    pub prefix: String,
    secret: String,
    dir: PathBuf,
}

impl Deployment {
    /// A fresh PostgreSQL database and a Redis prefix nobody else uses.
    pub async fn postgres() -> Self {
        Self {
            db: TestDb::postgres().await,
            prefix: unique("cleanroom-nodes-"),
            secret: unique("secret-of-the-test-deployment-"),
            dir: tls::temp_dir("nodes"),
        }
    }

    /// Starts node `id` with the debug API and `extra` flags; does not wait.
    pub fn spawn(&self, id: &str, extra: &[&str]) -> Node {
        self.spawn_with_redis(id, &redis_url(), extra)
    }

    /// Starts every node of `ids` and waits until each is ready.
    pub async fn start(&self, ids: &[&str]) -> Vec<Node> {
        let mut nodes: Vec<Node> = ids.iter().map(|id| self.spawn(id, &[])).collect();
        for node in &mut nodes {
            node.wait_ready(Duration::from_secs(60)).await;
        }
        nodes
    }

    /// Like [`Deployment::spawn`], reaching Redis at `redis` (a relay the
    /// test can cut, say).
    pub fn spawn_with_redis(&self, id: &str, redis: &str, extra: &[&str]) -> Node {
        let log = self.dir.join(format!("{id}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_cleanroom"))
            .args(["--addr", "127.0.0.1:0", "--debug-api"])
            .args(["--database-url", &self.db.url, "--redis-url", redis])
            .args(["--store-prefix", &self.prefix, "--node-id", id, "--secret", &self.secret])
            .args(extra)
            .env("RUST_LOG", "info")
            .current_dir(&self.dir)
            .stdout(Stdio::from(out.try_clone().expect("log")))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("start cleanroom");
        Node { id: id.to_owned(), port: None, child, log }
    }

    /// Drops the database and the nodes' folder.
    pub async fn drop_all(self) {
        self.db.drop_db().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One node's process; killed when dropped.
pub struct Node {
    pub id: String,
    /// The port it listens on, from its log, once it is ready.
    port: Option<u16>,
    child: Child,
    log: PathBuf,
}

impl Node {
    /// Where it listens; known once [`Node::wait_ready`] returned.
    pub fn addr(&self) -> SocketAddr {
        let port = self.port.unwrap_or_else(|| panic!("node {}: its address is known once it is ready", self.id));
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// Everything the node logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `/readyz` says 200; panics with the log if the process
    /// exits first or `limit` passes.
    pub async fn wait_ready(&mut self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("node {} exited ({status}) before it was ready:\n{}", self.id, self.log());
            }
            if self.port.is_none() {
                self.port = super::listening_addr(&self.log()).map(|a| a.port());
            }
            if self.port.is_some() {
                if let Ok(r) = reqwest::get(self.url("/readyz")).await {
                    if r.status().is_success() {
                        return;
                    }
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {} not ready within {limit:?}:\n{}",
                self.id,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: the process dies without a word to anyone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits (at most `limit`) for the exit.
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "node {} did not exit:\n{}", self.id, self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}
