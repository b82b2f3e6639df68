#![recursion_limit = "256"]
// Library code: no panics on what may fail at run time (tests, in
// `#[cfg(test)]`, may; see clippy.toml), no `pub` that nothing outside sees.
#![warn(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]
#![warn(missing_docs)]
//! # The `cleanroom` server
//!
//! One axum process that renders the Leptos pages, answers their server
//! functions, runs the signalling sockets and the media (an SFU).
//!
//! Layout, one module per domain noun:
//! - [`config`]: flags and environment.
//! - [`node`]: the composition root: state, the node's loops, start, shutdown.
//! - [`http`]: the adapters: router and layers, the socket, the leave
//!   beacon, operations endpoints, identity, same-origin checks, limits.
//! - [`db`]: SeaORM persistence (rooms, live roster, history).
//! - [`store`]: the live-state store, in-process or Redis.
//! - [`room`]: the room domain service, home of the single close path.
//! - [`lifetime`]: the close-once guard every resource owner uses.
//! - [`participant`]: live sessions of this node and their registry.
//! - [`hub`]: per-room fan-out to sockets.
//! - [`nodes`]: events between the nodes of a deployment (Redis pub/sub).
//! - [`media`]: the SFU (peer connections, published tracks, forwarders).
//! - [`reconcile`]: the background repair of orphans (store, rows, sessions).
//! - [`metrics`]: metric names and the Prometheus recorder.
//!
//! Invariants:
//! - Every session ends through [`room::Rooms::end_session`], exactly once
//!   for its live part, idempotently for its durable part.
//! - Every task belongs to a `TaskTracker` of [`AppState`] under the
//!   process's `CancellationToken`; shutdown is cancel, close, wait.
//! - Deletes are keyed by session id, never by user.
//! - A session's media (peer connection, published tracks, forwarders from
//!   and to it) is closed by `end_session` before its store entries go; the
//!   media counts in `/api/debug/resources` and the gauges are counted from
//!   the live objects (`Weak` registries), never from counters.

pub mod config;
pub mod db;
pub mod http;
pub mod hub;
pub mod lifetime;
pub mod media;
pub mod metrics;
pub mod node;
pub mod nodes;
pub mod participant;
pub mod reconcile;
pub mod room;
pub mod store;
pub mod tls;

pub use http::router;
pub use node::{shutdown, start, AppState, StartError};
