//! Automatic certificates by ACME against a real ACME server: Debian's
//! `pebble` (Let's Encrypt's test CA) and its `pebble-challtestsrv` (the DNS
//! that sends the test domain to this machine), started by this test. The
//! `cleanroom` binary orders a certificate for the domain, answers the
//! TLS-ALPN-01 validation on its own listen port, and then serves a
//! certificate that verifies against pebble's root, by that domain name.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::tls::{client, free_ports, temp_dir, Binary, TestCa};

const DOMAIN: &str = "cleanroom.test";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(program: &str, args: &[&str], envs: &[(&str, &str)], log: &std::path::Path) -> Killed {
    let out = std::fs::File::create(log).expect("log");
    let child = Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .stdout(Stdio::from(out.try_clone().expect("log")))
        .stderr(Stdio::from(out))
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{program} not started ({e}); scripts/test.sh installs it (apt-get install pebble)")
        });
    Killed(child)
}

#[tokio::test]
async fn a_certificate_ordered_from_pebble_is_served_for_the_domain() {
    let dir = temp_dir("acme");
    // Pebble's own HTTPS (its directory) uses a certificate of our test CA,
    // which Cleanroom is told to trust for the directory.
    let ca = TestCa::new();
    let (pebble_cert, pebble_key, _) = ca.write_leaf(&dir, "pebble", &["127.0.0.1", "localhost"]);
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).expect("ca");

    // Six different ports (taken one at a time, two could come back equal).
    let [dns, challtest_mgmt, acme, acme_mgmt, port, http_port] = free_ports();
    let config = serde_json::json!({
        "pebble": {
            "listenAddress": format!("127.0.0.1:{acme}"),
            "managementListenAddress": format!("127.0.0.1:{acme_mgmt}"),
            "certificate": pebble_cert,
            "privateKey": pebble_key,
            "httpPort": http_port,
            "tlsPort": port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false
        }
    });
    let config_path = dir.join("pebble.json");
    std::fs::write(&config_path, config.to_string()).expect("pebble config");

    let _dns = spawn(
        "pebble-challtestsrv",
        &[
            "-defaultIPv4",
            "127.0.0.1",
            "-defaultIPv6",
            "",
            "-dns01",
            &format!("127.0.0.1:{dns}"),
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-management",
            &format!("127.0.0.1:{challtest_mgmt}"),
        ],
        &[],
        &dir.join("challtestsrv.log"),
    );
    let _pebble = spawn(
        "pebble",
        &["-config", &config_path.display().to_string(), "-dnsserver", &format!("127.0.0.1:{dns}")],
        // No random validation delay, no deliberately rejected nonces.
        &[("PEBBLE_VA_NOSLEEP", "1"), ("PEBBLE_WFE_NONCEREJECT", "0")],
        &dir.join("pebble.log"),
    );

    let directory_client = client(&ca.pem(), &[]);
    let directory = format!("https://127.0.0.1:{acme}/dir");
    common::eventually(Duration::from_secs(30), "pebble's directory answering", || {
        let (c, url) = (directory_client.clone(), directory.clone());
        async move { c.get(url).send().await.ok().filter(|r| r.status().is_success()) }
    })
    .await;

    let cache = dir.join("acme-cache");
    let args = [
        "--acme-domains",
        DOMAIN,
        "--acme-directory",
        &directory,
        "--acme-directory-ca",
        &ca_path.display().to_string(),
        "--acme-cache",
        &cache.display().to_string(),
    ];
    let mut bin = Binary::start_on(&dir, port, &args);

    // Pebble's root of this run (it makes a new one every start).
    let root = directory_client
        .get(format!("https://127.0.0.1:{acme_mgmt}/roots/0"))
        .send()
        .await
        .expect("pebble root")
        .text()
        .await
        .expect("root pem");
    let by_domain = client(&root, &[(DOMAIN, bin.addr())]);
    let url = format!("https://{DOMAIN}:{port}/readyz");
    bin.wait_ready(&by_domain, &url, Duration::from_secs(90)).await;
    assert!(bin.log().contains("DeployedNewCert"), "a new certificate was ordered:\n{}", bin.log());
    assert!(std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0) > 0, "the account and certificate are cached");
    bin.stop();

    // Restarted on the same cache: the cached certificate is served at once.
    let mut again = Binary::start_on(&dir, port, &args);
    again.wait_ready(&by_domain, &url, Duration::from_secs(30)).await;
    assert!(again.log().contains("DeployedCachedCert"), "served from the cache:\n{}", again.log());
    again.stop();
    let _ = std::fs::remove_dir_all(dir);
}
