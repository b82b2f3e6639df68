//! The room domain's errors. They become the person-facing
//! [`AppError`] only at the port's edge ([`From<RoomError> for AppError`]),
//! where internal detail goes to the log instead of to the page.

use app::error::AppError;

use crate::db::DbError;
use crate::store::StoreError;

/// Why a room operation did not happen (or did not finish).
#[derive(Debug, thiserror::Error)]
pub enum RoomError {
    /// No room has this code.
    #[error("no such room")]
    RoomNotFound,
    /// The room's meeting was ended.
    #[error("the meeting has ended")]
    RoomEnded,
    /// The session is not (or no longer) in the room.
    #[error("the session is not in the room")]
    NotInRoom,
    /// The caller may not do this (not their session, or not the admin).
    #[error("not allowed")]
    Forbidden,
    /// The host muted the caller and keeps the unmute.
    #[error("muted by the host")]
    MutedByHost,
    /// The request makes no sense (the text says why, for the person).
    #[error("{0}")]
    Invalid(String),
    /// A cap was reached; trying again later may succeed.
    #[error("{message}")]
    Limited {
        /// What the person reads.
        message: String,
        /// Seconds to wait.
        retry_after_s: u64,
    },
    /// The live-state store did not answer.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The database did not answer.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A session's cleanup did not finish in time; it goes on in the
    /// background.
    #[error("cleanup unfinished: {0}")]
    Unfinished(String),
    /// A value we wrote could not be read back (a bug or a corrupt row).
    #[error("internal: {0}")]
    Internal(String),
}

impl From<RoomError> for AppError {
    fn from(e: RoomError) -> Self {
        match e {
            RoomError::RoomNotFound => AppError::RoomNotFound,
            RoomError::RoomEnded => AppError::RoomEnded,
            RoomError::NotInRoom => AppError::NotInRoom,
            RoomError::Forbidden => AppError::Forbidden,
            RoomError::MutedByHost => AppError::MutedByHost,
            RoomError::Invalid(text) => AppError::Invalid(text),
            RoomError::Limited { message, retry_after_s } => AppError::Limited { message, retry_after_s },
            RoomError::Store(StoreError::PlacedElsewhere(node)) => {
                // A join raced the room's placement on another node; the
                // person's retry is relayed there.
                tracing::info!(node = %node, "arrival refused: the room lives on another node");
                AppError::Unavailable
            }
            RoomError::Store(_) | RoomError::Db(_) | RoomError::Unfinished(_) => {
                tracing::warn!(error = %e, "a backing service did not answer");
                AppError::Unavailable
            }
            RoomError::Internal(_) => {
                tracing::error!(error = %e, "room operation failed");
                AppError::Internal
            }
        }
    }
}
