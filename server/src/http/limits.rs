//! Rate limits at the edge, per identity and per address (GCRA buckets
//! from `governor`): a request over a limit is answered 429 with
//! `Retry-After` before any handler runs, so nothing is written.
//!
//! What is limited, by class ([`Class::of`]): creating rooms, joining,
//! looking rooms up by code (pages and server functions: code guessing),
//! opening sockets, and every other room action (hands, mutes, …). Leaving
//! is never limited. Caps that are not rates (pending requests per room,
//! open rooms per person) live in the room service and answer the same way.
//!
//! Behind a proxy every request comes from the proxy's address, so the
//! per-address limits are generous and skip loopback peers (a proxy on the
//! same machine, or a local test); the per-identity ones do the work.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use app::error::AppError;
use app::ports::Identity;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::metrics as m;

/// What a request does, for its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// `POST /api/create-room`.
    Create,
    /// `POST /api/join`.
    Join,
    /// A room looked up by code: `GET /r/{code}`, `go-to-room`, `room-page`.
    Lookup,
    /// `GET /ws/{code}`.
    Socket,
    /// Any other server function (hands, mutes, admin actions).
    Action,
}

impl Class {
    /// The class of a request; `None` for what is never limited (leaving,
    /// static files, operations endpoints).
    pub fn of(method: &Method, path: &str) -> Option<Self> {
        if *method == Method::GET {
            return if path.starts_with("/r/") {
                Some(Class::Lookup)
            } else if path.starts_with("/ws/") {
                Some(Class::Socket)
            } else {
                None
            };
        }
        let endpoint = path.strip_prefix("/api/")?;
        match endpoint {
            "leave" | "beacon/leave" => None,
            "create-room" => Some(Class::Create),
            "join" => Some(Class::Join),
            "go-to-room" | "room-page" => Some(Class::Lookup),
            e if e.starts_with("debug/") => None,
            _ => Some(Class::Action),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Class::Create => "create",
            Class::Join => "join",
            Class::Lookup => "lookup",
            Class::Socket => "socket",
            Class::Action => "action",
        }
    }
}

const fn count(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(n) => n,
        None => NonZeroU32::MIN,
    }
}

/// `burst` at once, refilled at `per_minute`.
fn quota(burst: u32, per_minute: u32) -> Quota {
    Quota::per_minute(count(per_minute)).allow_burst(count(burst))
}

/// The buckets of one class: per identity and per address.
struct Rule {
    user: Option<DefaultKeyedRateLimiter<String>>,
    address: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl Rule {
    fn new(user: Option<Quota>, address: Option<Quota>) -> Self {
        Self { user: user.map(RateLimiter::keyed), address: address.map(RateLimiter::keyed) }
    }
}

/// Every class's buckets.
pub struct RateLimits {
    create: Rule,
    join: Rule,
    lookup: Rule,
    socket: Rule,
    action: Rule,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits").finish_non_exhaustive()
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            create: Rule::new(Some(quota(10, 10)), Some(quota(20, 30))),
            join: Rule::new(Some(quota(20, 60)), None),
            lookup: Rule::new(Some(quota(60, 60)), Some(quota(120, 240))),
            socket: Rule::new(Some(quota(30, 60)), Some(quota(120, 240))),
            action: Rule::new(Some(quota(30, 300)), None),
        }
    }
}

impl RateLimits {
    fn rule(&self, class: Class) -> &Rule {
        match class {
            Class::Create => &self.create,
            Class::Join => &self.join,
            Class::Lookup => &self.lookup,
            Class::Socket => &self.socket,
            Class::Action => &self.action,
        }
    }

    /// Takes one request of `class` from the buckets of `user` and
    /// `address`; `Err` is how long to wait.
    pub fn check(&self, class: Class, user: Option<&str>, address: Option<IpAddr>) -> Result<(), Duration> {
        let rule = self.rule(class);
        let now = DefaultClock::default().now();
        if let (Some(limiter), Some(user)) = (&rule.user, user) {
            limiter.check_key(&user.to_owned()).map_err(|n| n.wait_time_from(now))?;
        }
        if let (Some(limiter), Some(address)) = (&rule.address, address) {
            limiter.check_key(&address).map_err(|n| n.wait_time_from(now))?;
        }
        Ok(())
    }

    /// Forgets the buckets that are full again (keeps memory bounded).
    pub fn tidy(&self) {
        for rule in [&self.create, &self.join, &self.lookup, &self.socket, &self.action] {
            if let Some(l) = &rule.user {
                l.retain_recent();
                l.shrink_to_fit();
            }
            if let Some(l) = &rule.address {
                l.retain_recent();
                l.shrink_to_fit();
            }
        }
    }
}

/// Middleware: answers 429 with `Retry-After` when a request is over its
/// class's limit (after the identity layer, which names the caller).
pub async fn layer(State(limits): State<Arc<RateLimits>>, req: Request, next: Next) -> Response {
    let Some(class) = Class::of(req.method(), req.uri().path()) else { return next.run(req).await };
    let user = req.extensions().get::<Identity>().map(|i| i.user_id.to_string());
    let address = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()).filter(|ip| !ip.is_loopback());
    if let Err(wait) = limits.check(class, user.as_deref(), address) {
        metrics::counter!(m::RATE_LIMITED, "class" => class.as_str()).increment(1);
        tracing::info!(class = class.as_str(), path = %req.uri().path(), "rate limited");
        let retry_after_s = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
        let error = AppError::too_many(retry_after_s);
        if req.method() == Method::GET {
            // A page or a socket: a person (or a browser) reads plain text.
            let mut page = (axum::http::StatusCode::TOO_MANY_REQUESTS, error.to_string()).into_response();
            super::security::retry_after(page.headers_mut(), &error);
            return page;
        }
        return super::security::refusal(&error);
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_classed_and_leaving_is_never_limited() {
        assert_eq!(Class::of(&Method::POST, "/api/create-room"), Some(Class::Create));
        assert_eq!(Class::of(&Method::POST, "/api/join"), Some(Class::Join));
        assert_eq!(Class::of(&Method::POST, "/api/hand"), Some(Class::Action));
        assert_eq!(Class::of(&Method::GET, "/r/abc-defg-hij"), Some(Class::Lookup));
        assert_eq!(Class::of(&Method::GET, "/ws/abc-defg-hij"), Some(Class::Socket));
        assert_eq!(Class::of(&Method::POST, "/api/leave"), None);
        assert_eq!(Class::of(&Method::POST, "/api/beacon/leave"), None);
        assert_eq!(Class::of(&Method::GET, "/pkg/cleanroom.wasm"), None);
    }

    #[test]
    fn a_burst_passes_then_the_caller_waits() {
        let limits = RateLimits::default();
        for _ in 0..10 {
            assert!(limits.check(Class::Create, Some("u1"), None).is_ok());
        }
        let wait = limits.check(Class::Create, Some("u1"), None).expect_err("the eleventh room at once");
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(6), "{wait:?}");
        assert!(limits.check(Class::Create, Some("u2"), None).is_ok(), "another person has their own bucket");
    }
}
