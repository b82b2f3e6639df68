//! Server functions: thin adapters from HTTP to the domain port.
//!
//! Each body gets the caller and the [`Ports`](crate::ports::Ports) from
//! context, validates input with the shared rules, calls one domain method
//! and returns its result. No domain logic lives here.

use leptos::prelude::*;

use crate::error::AppError;
#[cfg(feature = "ssr")]
use crate::model::{
    validate_chat, validate_display_name, LeaveReason, MediaKind, ParticipantId, RoomAction, RoomCode, RoomOptions,
    SessionId,
};
use crate::model::{JoinOutcome, RoomPageData};

#[cfg(feature = "ssr")]
async fn caller() -> Result<(crate::ports::Ports, crate::ports::Identity), AppError> {
    let ports = use_context::<crate::ports::Ports>().ok_or(AppError::Internal)?;
    let axum::Extension(me) =
        leptos_axum::extract::<axum::Extension<crate::ports::Identity>>().await.map_err(|_| AppError::Internal)?;
    Ok((ports, me))
}

/// Remembers the name the caller chose in their identity cookie.
#[cfg(feature = "ssr")]
fn remember_name(ports: &crate::ports::Ports, me: &crate::ports::Identity, name: &str) {
    if me.display_name.as_deref() == Some(name) {
        return;
    }
    let updated = crate::ports::Identity { user_id: me.user_id.clone(), display_name: Some(name.to_owned()) };
    let header = ports.identity.set_cookie_header(&updated);
    if let (Some(resp), Ok(value)) =
        (use_context::<leptos_axum::ResponseOptions>(), http::HeaderValue::from_str(&header))
    {
        resp.append_header(http::header::SET_COOKIE, value);
    }
}

/// Creates a room and sends the creator to it.
#[server(prefix = "/api", endpoint = "create-room")]
pub async fn create_room(
    display_name: String,
    private: Option<String>,
    host_unmutes: Option<String>,
) -> Result<(), AppError> {
    let (ports, me) = caller().await?;
    let name = validate_display_name(&display_name)?;
    let options = RoomOptions { private: private.is_some(), host_unmutes: host_unmutes.is_some() };
    let code = ports.rooms.create_room(&me, options).await?;
    remember_name(&ports, &me, &name);
    leptos_axum::redirect(&crate::routes::room(&code));
    Ok(())
}

/// Checks a typed room code and sends the caller to the room.
#[server(prefix = "/api", endpoint = "go-to-room")]
pub async fn go_to_room(code: String) -> Result<(), AppError> {
    let (ports, _me) = caller().await?;
    let code = RoomCode::parse(&code)?;
    ports.rooms.room_info(&code).await?;
    leptos_axum::redirect(&crate::routes::room(&code));
    Ok(())
}

/// The room page's data before joining.
#[server(prefix = "/api", endpoint = "room-page")]
pub async fn get_room_page(code: String) -> Result<RoomPageData, AppError> {
    let (ports, me) = caller().await?;
    let code = RoomCode::parse(&code).map_err(|_| AppError::RoomNotFound)?;
    let room = ports.rooms.room_info(&code).await?;
    Ok(RoomPageData { room, remembered_name: me.display_name })
}

/// Joins the room under the given name.
#[server(prefix = "/api", endpoint = "join")]
pub async fn join_room(code: String, display_name: String) -> Result<JoinOutcome, AppError> {
    let (ports, me) = caller().await?;
    let code = RoomCode::parse(&code)?;
    let name = validate_display_name(&display_name)?;
    let mut outcome = ports.rooms.join(&me, &code, &name).await?;
    outcome.ice_servers = ports.ice_servers.ice_servers(&me.user_id);
    remember_name(&ports, &me, &name);
    Ok(outcome)
}

/// Leaves the room (the Leave button and in-app navigation).
#[server(prefix = "/api", endpoint = "leave")]
pub async fn leave_room(session_id: String) -> Result<(), AppError> {
    let (ports, me) = caller().await?;
    ports.rooms.leave(&me, &SessionId::parse(&session_id)?, LeaveReason::Left).await
}

#[cfg(feature = "ssr")]
async fn act(session_id: String, action: RoomAction) -> Result<(), AppError> {
    let (ports, me) = caller().await?;
    ports.rooms.act(&me, &SessionId::parse(&session_id)?, action).await
}

/// Admin: lets a waiting participant in (`approve` = "true") or turns them away.
#[server(prefix = "/api", endpoint = "admit")]
pub async fn admit(session_id: String, participant_id: String, approve: bool) -> Result<(), AppError> {
    act(session_id, RoomAction::Admit { participant: ParticipantId::parse(&participant_id)?, approve }).await
}

/// Admin: lets a participant they muted unmute themselves again (rooms
/// where only the host lets people unmute).
#[server(prefix = "/api", endpoint = "allow-unmute")]
pub async fn allow_unmute(session_id: String, participant_id: String) -> Result<(), AppError> {
    act(session_id, RoomAction::AllowUnmute { participant: ParticipantId::parse(&participant_id)? }).await
}

/// Admin: removes a participant from the call.
#[server(prefix = "/api", endpoint = "kick")]
pub async fn kick(session_id: String, participant_id: String) -> Result<(), AppError> {
    act(session_id, RoomAction::Kick { participant: ParticipantId::parse(&participant_id)? }).await
}

/// Admin: turns a participant's microphone off.
#[server(prefix = "/api", endpoint = "mute-participant")]
pub async fn mute_participant(session_id: String, participant_id: String) -> Result<(), AppError> {
    act(session_id, RoomAction::MuteParticipant { participant: ParticipantId::parse(&participant_id)? }).await
}

/// Admin: hands the admin role to another participant.
#[server(prefix = "/api", endpoint = "make-admin")]
pub async fn make_admin(session_id: String, participant_id: String) -> Result<(), AppError> {
    act(session_id, RoomAction::MakeAdmin { participant: ParticipantId::parse(&participant_id)? }).await
}

/// Admin: ends the meeting for everyone.
#[server(prefix = "/api", endpoint = "end-meeting")]
pub async fn end_meeting(session_id: String) -> Result<(), AppError> {
    act(session_id, RoomAction::EndMeeting).await
}

/// Raises (`up` = "true") or lowers the caller's hand.
#[server(prefix = "/api", endpoint = "hand")]
pub async fn set_hand(session_id: String, up: bool) -> Result<(), AppError> {
    act(session_id, RoomAction::Hand { up }).await
}

/// Turns the caller's microphone (`kind` = "audio") or camera ("video") off or on.
#[server(prefix = "/api", endpoint = "mute")]
pub async fn set_muted(session_id: String, kind: String, muted: bool) -> Result<(), AppError> {
    let kind = MediaKind::parse(&kind).ok_or_else(|| AppError::Invalid("kind must be audio or video".into()))?;
    act(session_id, RoomAction::Mute { kind, muted }).await
}

/// Sends a chat message to everybody in the call (plain text, at most
/// [`MAX_CHAT_CHARS`](crate::model::MAX_CHAT_CHARS) characters).
#[server(prefix = "/api", endpoint = "chat")]
pub async fn send_chat(session_id: String, text: String) -> Result<(), AppError> {
    let (ports, me) = caller().await?;
    let text = validate_chat(&text)?;
    ports.rooms.send_chat(&me, &SessionId::parse(&session_id)?, &text).await
}

/// Starts (`on` = "true") or stops sharing the caller's screen.
#[server(prefix = "/api", endpoint = "screen")]
pub async fn set_screen(session_id: String, on: bool) -> Result<(), AppError> {
    act(session_id, RoomAction::Screen { on }).await
}

/// Admin: stops another participant's screen share.
#[server(prefix = "/api", endpoint = "stop-screen")]
pub async fn stop_screen(session_id: String, participant_id: String) -> Result<(), AppError> {
    act(session_id, RoomAction::StopScreen { participant: ParticipantId::parse(&participant_id)? }).await
}
