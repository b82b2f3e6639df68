//! The leave beacon, `POST /api/beacon/leave`: the page's last word when
//! it goes away (tab or window closed, refresh, another site), sent with
//! `navigator.sendBeacon`. The Leave button's leave is the `leave_room`
//! server function; the socket's going-away close is in [`super::socket`].

use app::error::AppError;
use app::model::LeaveReason;
use app::ports::{Identity, RoomService};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;

use crate::node::AppState;

/// The HTTP status of a domain error (chosen once, in [`AppError::http_status`]).
pub fn status_of(e: &AppError) -> StatusCode {
    StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// `POST /api/beacon/leave` with body `session=…` (any content type, as
/// `navigator.sendBeacon` sends it). Answers 204 with no body.
pub async fn leave_beacon(State(state): State<AppState>, Extension(me): Extension<Identity>, body: String) -> Response {
    let Some(session) = app::signal::beacon_session(&body) else {
        return (StatusCode::BAD_REQUEST, "expected session=<id>").into_response();
    };
    tracing::debug!(session = %session, "page going away (beacon)");
    match state.rooms.leave(&me, &session, LeaveReason::PageHidden).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => (status_of(&e), e.to_string()).into_response(),
    }
}
