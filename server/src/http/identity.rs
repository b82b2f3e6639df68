//! Guest identity: a random user id (and last display name) in a signed,
//! HttpOnly, SameSite=Lax cookie. The middleware gives every request an
//! [`Identity`]; editing the cookie breaks its signature and yields a new
//! identity, so nobody can act as another user.
//!
//! A new identity is issued (the cookie set) only on a top-level page load
//! ([`is_page_load`]): a page's own requests always carry the cookie, while
//! a form another site submits arrives without it (SameSite=Lax), and must
//! not replace the visitor's identity. A state-changing request without a
//! valid cookie is refused (`NoIdentity`); other requests without one get a
//! throwaway identity that nothing remembers.

use axum::extract::{Request, State};
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use cookie::{Cookie, CookieJar, Key, SameSite};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use app::model::UserId;
use app::ports::{Identity, IdentityIssuer};

const COOKIE_NAME: &str = "cleanroom_id";

#[derive(Serialize, Deserialize)]
struct Payload {
    u: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    n: Option<String>,
}

/// Signs and reads identity cookies.
pub struct IdentityCookies {
    key: Key,
    /// Over HTTPS the cookie is `Secure` (never sent over plain HTTP).
    secure: bool,
}

impl std::fmt::Debug for IdentityCookies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityCookies").finish_non_exhaustive()
    }
}

impl IdentityCookies {
    /// With a configured secret (>= 32 bytes) identities survive restarts
    /// and are shared by nodes; without one a random key is used.
    pub fn new(secret: Option<&str>) -> Self {
        let key = match secret {
            Some(s) => Key::derive_from(s.as_bytes()),
            None => Key::generate(),
        };
        Self { key, secure: false }
    }

    /// Marks issued cookies `Secure` (the server speaks HTTPS).
    #[must_use]
    pub fn secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    /// The identity a request's cookies prove, if any.
    pub fn read(&self, headers: &axum::http::HeaderMap) -> Option<Identity> {
        let mut jar = CookieJar::new();
        for value in headers.get_all(COOKIE) {
            let Ok(value) = value.to_str() else { continue };
            for c in Cookie::split_parse_encoded(value).flatten() {
                if c.name() == COOKIE_NAME {
                    jar.add_original(c.into_owned());
                }
            }
        }
        let verified = jar.signed(&self.key).get(COOKIE_NAME)?;
        let payload: Payload = serde_json::from_str(verified.value()).ok()?;
        if payload.u.is_empty() || payload.u.len() > 64 {
            return None;
        }
        let display_name = payload.n.and_then(|n| app::model::validate_display_name(&n).ok());
        Some(Identity { user_id: UserId::new(payload.u), display_name })
    }

    /// A brand-new guest.
    pub fn fresh() -> Identity {
        Identity { user_id: UserId::new(format!("u{}", uuid::Uuid::new_v4().simple())), display_name: None }
    }
}

impl IdentityIssuer for IdentityCookies {
    fn set_cookie_header(&self, identity: &Identity) -> String {
        let payload = Payload { u: identity.user_id.to_string(), n: identity.display_name.clone() };
        let value = serde_json::to_string(&payload).unwrap_or_default();
        let cookie = Cookie::build((COOKIE_NAME, value))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(self.secure)
            .max_age(cookie::time::Duration::days(365))
            .build();
        let mut jar = CookieJar::new();
        jar.signed_mut(&self.key).add(cookie);
        jar.get(COOKIE_NAME).map(|c| c.encoded().to_string()).unwrap_or_default()
    }
}

/// Whether a request is a person opening a page (where an identity may be
/// issued): a GET the browser marks as a document navigation, or, from a
/// client that sends no fetch metadata, a GET of a page's path.
pub fn is_page_load(req: &Request) -> bool {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return false;
    }
    match req.headers().get("sec-fetch-dest") {
        Some(dest) => dest.as_bytes() == b"document",
        None => {
            let path = req.uri().path();
            path == "/" || path.starts_with("/r/")
        }
    }
}

/// Middleware: attaches the caller's [`Identity`]; issues one on a page load
/// when missing, refuses a state-changing request that has none.
pub async fn layer(State(cookies): State<Arc<IdentityCookies>>, mut req: Request, next: Next) -> Response {
    let (identity, issued) = match cookies.read(req.headers()) {
        Some(id) => (id, false),
        None if is_page_load(&req) => (IdentityCookies::fresh(), true),
        None if req.method().is_safe() => (IdentityCookies::fresh(), false),
        None => {
            tracing::info!(path = %req.uri().path(), method = %req.method(), "request without identity refused");
            return super::security::refusal(&app::error::AppError::NoIdentity);
        }
    };
    req.extensions_mut().insert(identity.clone());
    let mut response = next.run(req).await;
    let already_set = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.starts_with(&format!("{COOKIE_NAME}="))));
    if issued && !already_set {
        if let Ok(v) = HeaderValue::from_str(&cookies.set_cookie_header(&identity)) {
            response.headers_mut().append(SET_COOKIE, v);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_with(cookie: &str) -> axum::http::HeaderMap {
        let mut h = axum::http::HeaderMap::new();
        let pair = cookie.split(';').next().unwrap();
        h.insert(COOKIE, HeaderValue::from_str(pair).unwrap());
        h
    }

    #[test]
    fn a_signed_identity_round_trips() {
        let c = IdentityCookies::new(None);
        let id = Identity { user_id: UserId::new("u123"), display_name: Some("Ada".into()) };
        let header = c.set_cookie_header(&id);
        assert!(header.contains("HttpOnly") && header.contains("SameSite=Lax"), "{header}");
        assert_eq!(c.read(&headers_with(&header)), Some(id));
    }

    #[test]
    fn an_edited_cookie_is_refused() {
        let c = IdentityCookies::new(None);
        let header = c.set_cookie_header(&Identity { user_id: UserId::new("u123"), display_name: None });
        let forged = header.replace("u123", "u999");
        assert_eq!(c.read(&headers_with(&forged)), None);
        let other_key = IdentityCookies::new(None);
        assert_eq!(other_key.read(&headers_with(&header)), None);
    }
}
