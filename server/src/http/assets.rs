//! The site's own files under `/pkg` (script, WASM, stylesheet): served
//! from disk with the precompressed copy the browser accepts (`.br`, else
//! `.gz`, beside the file: `cargo leptos build --release --precompress`
//! writes them), and cached by the browser for a year when the name
//! carries a content hash (a new build has new names), else revalidated
//! on every use.

use axum::extract::Request;
use axum::http::header::{HeaderValue, CACHE_CONTROL, VARY};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use leptos::config::LeptosOptions;
use tower_http::services::ServeDir;

/// For names with a content hash: a year, never revalidated.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// For anything else: stored, but checked with the server before each use.
pub const REVALIDATE: &str = "no-cache";

/// `/pkg/…` of the site `options` names.
pub fn pkg_routes<S: Clone + Send + Sync + 'static>(options: &LeptosOptions) -> Router<S> {
    let dir = std::path::Path::new(options.site_root.as_ref()).join(options.site_pkg_dir.as_ref());
    let files = ServeDir::new(dir).precompressed_br().precompressed_gzip();
    Router::new()
        .nest_service(&format!("/{}", options.site_pkg_dir), files)
        .layer(axum::middleware::from_fn(cache_control))
}

/// Sets `Cache-Control` and `Vary` on what was found.
async fn cache_control(req: Request, next: Next) -> Response {
    let hashed = req.uri().path().rsplit('/').next().is_some_and(is_hashed);
    let mut response = next.run(req).await;
    if response.status().is_success() || response.status() == axum::http::StatusCode::NOT_MODIFIED {
        let value = if hashed { IMMUTABLE } else { REVALIDATE };
        let headers = response.headers_mut();
        headers.insert(CACHE_CONTROL, HeaderValue::from_static(value));
        // The bytes depend on what the browser accepts: caches keep one copy per encoding.
        headers.insert(VARY, HeaderValue::from_static("accept-encoding"));
    }
    response
}

/// Whether a file name carries a content hash: `name.<hash>.ext`, the hash
/// at least 16 URL-safe base64 characters (cargo-leptos writes 22).
pub fn is_hashed(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() >= 3
        && parts[1..parts.len() - 1]
            .iter()
            .any(|p| p.len() >= 16 && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_hashed_names_are_told_apart() {
        assert!(is_hashed("cleanroom.Xq3k9_2bZx-AbCdEfGhIjK.wasm"));
        assert!(is_hashed("cleanroom.Xq3k9_2bZx-AbCdEfGhIjK.js"));
        assert!(!is_hashed("cleanroom.js"));
        assert!(!is_hashed("cleanroom_bg.wasm"));
        assert!(!is_hashed("cleanroom.short.css"));
        assert!(!is_hashed("Xq3k9_2bZx-AbCdEfGhIjK"));
        assert!(!is_hashed("cleanroom.Xq3k9/2bZx+AbCdEfGh.js"));
    }
}
