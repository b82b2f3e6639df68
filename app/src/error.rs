//! The error a person can see. Server internals map to these at the edge
//! (in the server's adapters); the text here is what the page shows.

use leptos::server_fn::codec::JsonEncoding;
use leptos::server_fn::error::{FromServerFnError, ServerFnErrorErr};
use serde::{Deserialize, Serialize};

/// Errors of Cleanroom's server functions, as the browser receives them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AppError {
    /// No room has this code (or it never existed).
    #[error("There is no room with this code.")]
    RoomNotFound,
    /// The meeting in this room was ended.
    #[error("This meeting has ended.")]
    RoomEnded,
    /// What was typed is not a room code.
    #[error("That does not look like a room code (it has the form abc-defg-hij).")]
    BadRoomCode,
    /// The display name was refused; the text says why.
    #[error("{0}")]
    BadName(String),
    /// The session is not (or no longer) in the room.
    #[error("You are not in this room any more.")]
    NotInRoom,
    /// A request the page should never send (a bad field value).
    #[error("{0}")]
    Invalid(String),
    /// The caller may not do this.
    #[error("You are not allowed to do that.")]
    Forbidden,
    /// The host muted the caller, and in this room only the host lets
    /// people unmute.
    #[error("The host muted you. Raise your hand to ask to speak.")]
    MutedByHost,
    /// The request came without the identity cookie a page load issues
    /// (cookies blocked, or a request from outside the page).
    #[error("Your browser did not send Cleanroom's cookie. Reload the page (and allow cookies for this site).")]
    NoIdentity,
    /// A limit was reached (a rate, or a cap such as rooms per person);
    /// trying again after `retry_after_s` seconds may succeed.
    #[error("{message}")]
    Limited {
        /// What the person reads.
        message: String,
        /// Seconds to wait before trying again (the `Retry-After` header).
        retry_after_s: u64,
    },
    /// A backing service (database, live-state store) did not answer.
    #[error("The service is temporarily unavailable. Please try again in a moment.")]
    Unavailable,
    /// Something failed on the server; details are in the server's log.
    #[error("Something went wrong on our side. Please try again.")]
    Internal,
    /// The request did not reach the server or its answer was unreadable.
    #[error("Could not reach the server: {0}")]
    Transport(String),
}

impl AppError {
    /// The HTTP status an answer with this error carries: 4xx for what the
    /// caller sent or may not do, 5xx only for failures on our side.
    /// (`Transport` seen by the server means the request could not be
    /// decoded.)
    pub fn http_status(&self) -> u16 {
        match self {
            AppError::BadRoomCode | AppError::BadName(_) | AppError::Invalid(_) | AppError::Transport(_) => 400,
            AppError::Forbidden | AppError::MutedByHost | AppError::NoIdentity => 403,
            AppError::RoomNotFound => 404,
            AppError::NotInRoom => 409,
            AppError::RoomEnded => 410,
            AppError::Limited { .. } => 429,
            AppError::Internal => 500,
            AppError::Unavailable => 503,
        }
    }

    /// A rate limit's refusal.
    pub fn too_many(retry_after_s: u64) -> Self {
        AppError::Limited {
            message: format!("Too many requests. Please wait {retry_after_s} s and try again."),
            retry_after_s,
        }
    }
}

impl FromServerFnError for AppError {
    type Encoder = JsonEncoding;

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        AppError::Transport(value.to_string())
    }
}
