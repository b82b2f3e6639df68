//! The domain port: what the pages' server functions may ask of the server.
//!
//! Server functions fetch a [`Ports`] from context, call one method and map
//! the result; the implementation lives in the `server` crate.

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::AppError;
use crate::model::{
    IceServer, JoinOutcome, LeaveReason, RoomAction, RoomCode, RoomInfo, RoomOptions, SessionId, UserId,
};

/// The caller as the identity cookie proves them. Inserted into every
/// request's extensions by the server's identity middleware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The guest's stable id.
    pub user_id: UserId,
    /// The display name this guest used last, if any.
    pub display_name: Option<String>,
}

/// Room operations, as the pages need them.
#[async_trait]
pub trait RoomService: Send + Sync + 'static {
    /// Creates a room; the creator becomes its admin when they join.
    async fn create_room(&self, creator: &Identity, options: RoomOptions) -> Result<RoomCode, AppError>;
    /// Looks a room up by code.
    async fn room_info(&self, code: &RoomCode) -> Result<RoomInfo, AppError>;
    /// Joins `who` to the room under `display_name` (already validated).
    async fn join(&self, who: &Identity, code: &RoomCode, display_name: &str) -> Result<JoinOutcome, AppError>;
    /// Ends `session` if it belongs to `who`. Idempotent: ending an ended
    /// session is `Ok`.
    async fn leave(&self, who: &Identity, session: &SessionId, reason: LeaveReason) -> Result<(), AppError>;
    /// Does `action` as the owner of `session` (admin actions need the
    /// admin role; a forged or unauthorised request changes nothing).
    async fn act(&self, who: &Identity, session: &SessionId, action: RoomAction) -> Result<(), AppError>;
    /// Sends a chat message (already validated) as the owner of `session`,
    /// an admitted participant; at most a few per second per session.
    async fn send_chat(&self, who: &Identity, session: &SessionId, text: &str) -> Result<(), AppError>;
}

/// Issues the identity cookie (the signing key stays on the server).
pub trait IdentityIssuer: Send + Sync + 'static {
    /// A `Set-Cookie` header value that carries `identity`.
    fn set_cookie_header(&self, identity: &Identity) -> String;
}

/// The STUN/TURN servers a joined session's peer connection may use.
pub trait IceServerSource: Send + Sync + 'static {
    /// The servers for `user`, TURN ones with fresh time-limited credentials.
    fn ice_servers(&self, user: &UserId) -> Vec<IceServer>;
}

/// Everything server functions can reach, provided as Leptos context.
#[derive(Clone)]
pub struct Ports {
    /// The room service.
    pub rooms: Arc<dyn RoomService>,
    /// Issues identity cookies.
    pub identity: Arc<dyn IdentityIssuer>,
    /// STUN/TURN servers for joined sessions.
    pub ice_servers: Arc<dyn IceServerSource>,
}

impl std::fmt::Debug for Ports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ports").finish_non_exhaustive()
    }
}
