//! Request hygiene at the edge: which requests come from our own pages,
//! the security headers every answer carries, and the HTTP status of a
//! server function's refusal.
//!
//! - A state-changing request (any method but GET, HEAD, OPTIONS) that
//!   another site's page sent is refused (403) before it reaches a handler:
//!   the browser's `Sec-Fetch-Site` decides where it sends one, else the
//!   `Origin` header must name this host. Requests without either (tools,
//!   tests) pass: they carry no victim's cookie.
//! - The WebSocket upgrade is checked the same way ([`is_foreign`]).
//! - Every answer says `nosniff`, may not be framed, and sends the referrer
//!   only to this origin; pages add their own Content-Security-Policy with
//!   the response's nonce (`app::content_security_policy`), everything else
//!   gets a policy that allows nothing.

use app::error::AppError;
use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::set_header::SetResponseHeaderLayer;

/// The header server functions put on their error answers.
const SERVER_FN_ERROR: &str = "serverfnerror";

/// The largest error body a server function sends (its JSON is small).
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Whether a browser says the request comes from another site's page.
/// `Sec-Fetch-Site` (set by the browser, not by the page) decides where
/// present; otherwise an `Origin` header must name the host the request was
/// sent to. A request with neither is not a browser's cross-site request.
pub fn is_foreign(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return !matches!(site.to_str(), Ok("same-origin" | "none"));
    }
    let Some(origin) = headers.get(header::ORIGIN) else { return false };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let authority = origin.to_str().ok().and_then(|o| o.split_once("://")).map(|(_, a)| a.trim_end_matches('/'));
    !matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
}

/// A refusal as the pages' server-function client reads it: the status of
/// the error, its JSON as the body (and `Retry-After` for a limit).
pub fn refusal(error: &AppError) -> Response {
    let status = StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_string(error).unwrap_or_default();
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    retry_after(response.headers_mut(), error);
    response
}

/// `Retry-After` for a limit's refusal (nothing for other errors).
pub fn retry_after(headers: &mut HeaderMap, error: &AppError) {
    if let AppError::Limited { retry_after_s, .. } = error {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_s));
    }
}

/// Middleware: refuses state-changing requests that another site sent.
pub async fn same_origin(req: Request, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe && is_foreign(req.headers()) {
        tracing::warn!(path = %req.uri().path(), "cross-site request refused");
        return refusal(&AppError::Forbidden);
    }
    next.run(req).await
}

/// Middleware: a server function's error answer gets the status of its
/// error (the framework answers every error with 500): 4xx for a refusal,
/// 5xx only for a failure, `Retry-After` for a limit.
pub async fn server_fn_status(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    if response.status() != StatusCode::INTERNAL_SERVER_ERROR || !response.headers().contains_key(SERVER_FN_ERROR) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, ERROR_BODY_LIMIT).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "error answer unreadable").into_response();
    };
    if let Ok(error) = serde_json::from_slice::<AppError>(&bytes) {
        parts.status = StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        retry_after(&mut parts.headers, &error);
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// The headers every answer carries (pages set a stricter CSP themselves).
pub fn headers() -> [SetResponseHeaderLayer<HeaderValue>; 6] {
    let set = |name: HeaderName, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
    };
    [
        set(header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        set(header::X_FRAME_OPTIONS, "DENY"),
        set(header::REFERRER_POLICY, "same-origin"),
        set(HeaderName::from_static("cross-origin-opener-policy"), "same-origin"),
        set(HeaderName::from_static("permissions-policy"), "camera=(self), microphone=(self), display-capture=(self)"),
        set(header::CONTENT_SECURITY_POLICY, "default-src 'none'; frame-ancestors 'none'"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn fetch_metadata_decides_where_present() {
        assert!(!is_foreign(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(!is_foreign(&headers(&[("sec-fetch-site", "none")])));
        assert!(is_foreign(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(is_foreign(&headers(&[("sec-fetch-site", "same-site")])), "a sibling subdomain is another site");
        let lying_origin = headers(&[("sec-fetch-site", "cross-site"), ("origin", "http://a:1"), ("host", "a:1")]);
        assert!(is_foreign(&lying_origin));
    }

    #[test]
    fn the_origin_must_name_this_host() {
        assert!(!is_foreign(&headers(&[("origin", "http://127.0.0.1:3000"), ("host", "127.0.0.1:3000")])));
        assert!(!is_foreign(&headers(&[("origin", "https://Meet.Example"), ("host", "meet.example")])));
        assert!(is_foreign(&headers(&[("origin", "https://evil.example"), ("host", "meet.example")])));
        assert!(is_foreign(&headers(&[("origin", "null"), ("host", "meet.example")])));
        assert!(is_foreign(&headers(&[("origin", "http://meet.example:8080"), ("host", "meet.example")])));
        assert!(!is_foreign(&HeaderMap::new()), "no browser, no victim's cookie");
    }
}
