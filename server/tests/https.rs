//! HTTPS as a person deploys it: the `cleanroom` binary started with
//! certificate files speaks only TLS on its listen address, issues a
//! `Secure` identity cookie, serves a renewed certificate without a
//! restart, and refuses bad certificate settings with one line naming the
//! setting and exit code 2.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::tls::{client, peer_certificate, run_to_exit, temp_dir, Binary, TestCa};

#[test]
fn bad_certificate_settings_exit_2_with_one_line_naming_the_setting() {
    let dir = temp_dir("tls-bad");
    let ca = TestCa::new();
    let (cert, key, _) = ca.write_leaf(&dir, "good", &["localhost"]);
    let (_, other_key, _) = ca.write_leaf(&dir, "other", &["localhost"]);
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN NOTHING-----\n").expect("write");
    let (cert, key, other_key, garbage) = (
        cert.display().to_string(),
        key.display().to_string(),
        other_key.display().to_string(),
        garbage.display().to_string(),
    );
    let missing = dir.join("missing.pem").display().to_string();

    let cases: [(&[&str], &str); 5] = [
        (&["--tls-cert", &missing, "--tls-key", &key], "CLEANROOM_TLS_CERT"),
        (&["--tls-cert", &garbage, "--tls-key", &key], "CLEANROOM_TLS_CERT"),
        (&["--tls-cert", &cert, "--tls-key", &garbage], "CLEANROOM_TLS_KEY"),
        (&["--tls-cert", &cert, "--tls-key", &other_key], "CLEANROOM_TLS_KEY"),
        (&["--tls-cert", &cert], "CLEANROOM_TLS_KEY"),
    ];
    for (args, setting) in cases {
        let (code, out) = run_to_exit(&dir, args);
        assert_eq!(code, Some(2), "{args:?} exits 2:\n{out}");
        let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("cleanroom: ")).collect();
        assert_eq!(errors.len(), 1, "{args:?}: one line:\n{out}");
        assert!(errors[0].contains(setting), "{args:?} names {setting}: {}", errors[0]);
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn https_only_with_a_secure_cookie_and_a_renewed_certificate_served_without_restart() {
    let dir = temp_dir("tls-live");
    let ca = TestCa::new();
    let (cert, key, first) = ca.write_leaf(&dir, "live", &["127.0.0.1", "localhost"]);
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
    let mut bin = Binary::start(&dir, &["--tls-cert", &cert_s, "--tls-key", &key_s, "--tls-reload-ms", "100"]);
    let https = client(&ca.pem(), &[]);
    let base = format!("https://{}", bin.wait_listening(Duration::from_secs(60)).await);
    bin.wait_ready(&https, &format!("{base}/readyz"), Duration::from_secs(60)).await;

    // A page load over HTTPS: the identity cookie is Secure.
    let page = https.get(format!("{base}/")).header("sec-fetch-dest", "document").send().await.expect("page");
    assert_eq!(page.status(), 200);
    assert_eq!(peer_certificate(&page).as_deref(), Some(first.as_slice()));
    let cookie = page.headers().get("set-cookie").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(cookie.starts_with("cleanroom_id="), "an identity is issued: {cookie}");
    assert!(cookie.split(';').any(|a| a.trim().eq_ignore_ascii_case("secure")), "Secure: {cookie}");

    // Plain HTTP on the same port gets no HTTP answer.
    let addr = bin.addr();
    let plain = tokio::task::spawn_blocking(move || {
        let mut tcp = std::net::TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        tcp.write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").expect("write");
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer);
        answer
    })
    .await
    .expect("plain request");
    assert!(!plain.starts_with(b"HTTP/"), "plain HTTP answered: {:?}", String::from_utf8_lossy(&plain));

    // A renewal: new files in place; new connections get the new certificate.
    let (next_cert, next_key, next) = ca.write_leaf(&dir, "next", &["127.0.0.1", "localhost"]);
    std::fs::rename(&next_key, &key).expect("key");
    std::fs::rename(&next_cert, &cert).expect("cert");
    let served = common::eventually(Duration::from_secs(15), "the renewed certificate served", || {
        // A new client each time: a resumed TLS session would report the old certificate.
        let (https, url, next) = (client(&ca.pem(), &[]), format!("{base}/readyz"), next.clone());
        async move {
            let r = https.get(url).send().await.ok()?;
            (peer_certificate(&r)? == next).then_some(r.status())
        }
    })
    .await;
    assert_eq!(served, 200);
    assert!(bin.log().contains("certificate reloaded"), "the reload is logged");
    bin.stop();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_self_signed_certificate_names_the_ice_addresses_and_logs_its_fingerprint() {
    let dir = temp_dir("tls-self");
    let mut bin = Binary::start(&dir, &["--tls-self-signed", "--ice-addrs", "127.0.0.1"]);
    // Trust nothing: read the certificate the server shows, then pin it as the root.
    let insecure = reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(true)
        .tls_info(true)
        .build()
        .expect("client");
    let addr = bin.wait_listening(Duration::from_secs(60)).await;
    let base = format!("https://{addr}");
    bin.wait_ready(&insecure, &format!("{base}/readyz"), Duration::from_secs(60)).await;
    let shown = peer_certificate(&insecure.get(format!("{base}/readyz")).send().await.expect("readyz")).expect("cert");
    let pem = format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", base64_lines(&shown));
    // As its own root, the certificate verifies for 127.0.0.1 and localhost.
    let pinned = client(&pem, &[("localhost", addr)]);
    for url in [format!("{base}/readyz"), format!("https://localhost:{}/readyz", addr.port())] {
        assert_eq!(pinned.get(&url).send().await.map(|r| r.status().as_u16()).ok(), Some(200), "{url}");
    }
    let fingerprint = server::tls::fingerprint(&shown);
    assert!(bin.log().contains(&fingerprint), "the log shows the SHA-256 fingerprint {fingerprint}:\n{}", bin.log());
    bin.stop();
    let _ = std::fs::remove_dir_all(dir);
}

fn base64_lines(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    b64.as_bytes().chunks(64).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join("\n")
}
