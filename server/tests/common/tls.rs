//! HTTPS test helpers: a certificate authority of the test's own, the
//! `cleanroom` binary started as a process (its listener, exit codes and
//! log are what these tests look at), and clients that trust only that CA.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};

/// A CA made for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "Cleanroom test CA");
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA");
        Self { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf certificate for `names` (DNS names or IP addresses): PEM
    /// chain, PEM key, and the certificate's DER.
    pub fn leaf(&self, names: &[&str]) -> (String, String, Vec<u8>) {
        let key = KeyPair::generate().expect("leaf key");
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("leaf params");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf");
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    /// Writes a leaf for `names` to `<dir>/<name>.crt|.key`.
    pub fn write_leaf(&self, dir: &Path, name: &str, names: &[&str]) -> (PathBuf, PathBuf, Vec<u8>) {
        let (cert, key, der) = self.leaf(names);
        let (cert_path, key_path) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        std::fs::write(&cert_path, cert).expect("write cert");
        std::fs::write(&key_path, key).expect("write key");
        (cert_path, key_path, der)
    }
}

/// A folder for one test's files.
pub fn temp_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(super::unique(&format!("cleanroom-{label}-")));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// `N` free loopback ports, all different (held together while chosen).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<std::net::TcpListener> =
        (0..N).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
    std::array::from_fn(|i| held[i].local_addr().expect("addr").port())
}

/// A client that trusts exactly `ca_pem` and opens a new connection per
/// request (so a reloaded certificate is seen), resolving `resolve` names
/// to the given address.
pub fn client(ca_pem: &str, resolve: &[(&str, SocketAddr)]) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA pem");
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .tls_info(true)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5));
    for (name, addr) in resolve {
        builder = builder.resolve(name, *addr);
    }
    builder.build().expect("client")
}

/// The DER of the certificate a response came over.
pub fn peer_certificate(response: &reqwest::Response) -> Option<Vec<u8>> {
    response.extensions().get::<reqwest::tls::TlsInfo>()?.peer_certificate().map(<[u8]>::to_vec)
}

/// The `cleanroom` binary as a process, on SQLite in a temp folder.
pub struct Binary {
    pub child: Child,
    /// The port it listens on: given, or read from its log once it bound.
    port: Option<u16>,
    pub log: PathBuf,
}

impl Binary {
    /// Starts it with `args` on a port the system picks (known from
    /// [`Binary::wait_listening`]); does not wait for readiness.
    pub fn start(dir: &Path, args: &[&str]) -> Self {
        Self::spawn(dir, None, args)
    }

    /// Starts it with `args` on `port` (to start again where a stopped
    /// process listened).
    pub fn start_on(dir: &Path, port: u16, args: &[&str]) -> Self {
        Self::spawn(dir, Some(port), args)
    }

    fn spawn(dir: &Path, port: Option<u16>, args: &[&str]) -> Self {
        let log = dir.join(super::unique("cleanroom-") + ".log");
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_cleanroom"))
            .args(["--addr", &format!("127.0.0.1:{}", port.unwrap_or(0))])
            .args(["--database-url", &format!("sqlite://{}/cleanroom.db?mode=rwc", dir.display())])
            .args(args)
            .env_remove("REDIS_URL")
            .env("RUST_LOG", "info")
            .current_dir(dir)
            .stdout(Stdio::from(out.try_clone().expect("log")))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("start cleanroom");
        Self { child, port, log }
    }

    /// Where it listens; for [`Binary::start`], known once
    /// [`Binary::wait_listening`] returned.
    pub fn addr(&self) -> SocketAddr {
        let port = self.port.expect("the port is known once the process said where it listens");
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Waits until the process says where it listens; panics with the log
    /// if it exits first or `limit` passes.
    pub async fn wait_listening(&mut self, limit: Duration) -> SocketAddr {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.port.is_none() {
                self.port = super::listening_addr(&self.log()).map(|a| a.port());
            }
            if self.port.is_some() {
                return self.addr();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("cleanroom exited ({status}) before it listened:\n{}", self.log());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "cleanroom not listening within {limit:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `url` answers 200 through `client`.
    pub async fn wait_ready(&mut self, client: &reqwest::Client, url: &str, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("cleanroom exited ({status}) before it was ready:\n{}", self.log());
            }
            if let Ok(r) = client.get(url).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "{url} not ready within {limit:?}:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary to its exit (it must exit within 30 s): code and output.
pub fn run_to_exit(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut bin = Binary::start(dir, args);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = bin.child.try_wait() {
            return (status.code(), bin.log());
        }
        assert!(std::time::Instant::now() < deadline, "cleanroom did not exit:\n{}", bin.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}
