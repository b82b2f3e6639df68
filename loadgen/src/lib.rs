//! # Cleanroom's load generator
//!
//! Clients of a running Cleanroom server, for its integration tests and
//! for `cleanroom-bench` (the SFU benchmark, `src/bin`). Not part of the
//! server: `cargo tree -p server -e normal` has no WebSocket client.
//!
//! - [`guest`]: a guest as a browser tab is one: identity cookie, HTTP
//!   endpoints (reqwest), signalling socket (tungstenite).
//! - [`client`]: a headless WebRTC participant ([`client::RtcClient`]).
//! - [`pump`]: carries a client's signalling over a guest's socket.

pub mod client;
pub mod guest;
pub mod pump;

pub use client::{ClientStats, Reception, RtcClient, DEFAULT_VIDEO_PPS};
pub use guest::{FnError, FrozenSocket, Guest, Seen, Socket};
pub use pump::{Pump, PumpOptions};
