//! The site's files under `/pkg`: the precompressed copy the browser
//! accepts (brotli before gzip, the file itself for neither), with the
//! encoding and `Vary` said; a year's cache for content-hashed names and
//! revalidation for the others; nothing for what is not there.

mod common;

use common::{unique, TestServer};
use leptos::config::LeptosOptions;
use reqwest::header::{ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, VARY};

const HASHED: &str = "cleanroom.Xq3k9_2bZx-AbCdEfGhIjK.wasm";

#[tokio::test]
async fn site_files_are_sent_precompressed_and_cached_by_name() {
    let site = std::env::temp_dir().join(unique("cleanroom-site-"));
    let pkg = site.join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join(HASHED), b"raw wasm bytes").unwrap();
    std::fs::write(pkg.join(format!("{HASHED}.br")), b"brotli bytes").unwrap();
    std::fs::write(pkg.join(format!("{HASHED}.gz")), b"gzip bytes").unwrap();
    std::fs::write(pkg.join("snippet.js"), b"export {}").unwrap();

    let db = common::TestDb::sqlite();
    let args: Vec<String> = ["cleanroom", "--database-url", &db.url].map(String::from).to_vec();
    let options = LeptosOptions::builder()
        .output_name("cleanroom")
        .site_root(site.display().to_string())
        .site_pkg_dir("pkg")
        .build();
    let server = TestServer::with_site(&args, &unique("cleanroom-test-"), options).await;
    // No automatic decompression (not enabled): the bytes sent are seen.
    let client = reqwest::Client::new();
    let get = |accept: &'static str, path: String| {
        let mut req = client.get(server.url(&path));
        if !accept.is_empty() {
            req = req.header(ACCEPT_ENCODING, accept);
        }
        req.send()
    };

    for (accept, encoding, body) in [
        ("gzip, deflate, br, zstd", Some("br"), "brotli bytes"),
        ("gzip", Some("gzip"), "gzip bytes"),
        ("", None, "raw wasm bytes"),
    ] {
        let resp = get(accept, format!("/pkg/{HASHED}")).await.unwrap();
        assert_eq!(resp.status(), 200, "{accept:?}");
        let header =
            |name| resp.headers().get(name).map(|v: &reqwest::header::HeaderValue| v.to_str().unwrap().to_owned());
        assert_eq!(header(CONTENT_ENCODING).as_deref(), encoding, "{accept:?}");
        assert_eq!(header(CACHE_CONTROL).as_deref(), Some("public, max-age=31536000, immutable"));
        assert!(header(VARY).is_some_and(|v| v.to_ascii_lowercase().contains("accept-encoding")), "{accept:?}");
        assert_eq!(resp.headers().get("content-type").unwrap(), "application/wasm");
        assert!(resp.headers().get("set-cookie").is_none(), "a file needs no identity");
        assert_eq!(resp.text().await.unwrap(), body, "{accept:?}");
    }
    // A name without a hash may change under the same name: revalidated.
    let resp = get("br", "/pkg/snippet.js".into()).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers().get(CACHE_CONTROL).unwrap(), "no-cache");
    assert!(resp.headers().get(CONTENT_ENCODING).is_none(), "no precompressed copy, sent as it is");
    // What is not there: 404, not cached.
    let resp = get("br", "/pkg/cleanroom.missing000000000000.wasm".into()).await.unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.headers().get(CACHE_CONTROL).is_none());
    let metrics = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("cleanroom_http_requests_total{method=\"GET\",route=\"static\",status=\"200\"}"));
    server.stop().await;
    std::fs::remove_dir_all(&site).unwrap();
}
