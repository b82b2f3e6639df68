//! The room page, `/r/{code}`: the pre-join screen, then the call. One
//! file per part: `prejoin` (name, devices, preview, Join), `call` (the
//! waiting screen and the call: tiles, controls, notices), `people` (the
//! participant list and the admin's requests), `tile` (one participant's
//! video and badges). The browser resources they use live in
//! `crate::browser` (hydrate only).

// Leptos' `#[component]` expands a `pub(super)` component into items the
// lint reads as unreachable `pub`.
#![allow(unreachable_pub)]

mod call;
mod chat;
mod confirm;
mod icon;
mod people;
mod prejoin;
mod screen;
mod tile;

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::{use_navigate, use_params_map};

use crate::api::{
    admit, allow_unmute, end_meeting, get_room_page, join_room, kick, leave_room, make_admin, mute_participant,
    set_hand, stop_screen,
};
use crate::call::CallStore;
use crate::error::AppError;
use crate::model::{
    validate_display_name, ParticipantId, ParticipantState, ParticipantView, Role, RoomCode, RoomPageData, SessionId,
};
use crate::pages::not_found::NotFound;

use call::{CallView, Layout};
use chat::ChatPanel;
use confirm::ConfirmButton;
use icon::{Glyph, Icon};
use people::{ParticipantRow, Pending};
use prejoin::{DeviceSelect, Prejoin};
use screen::ScreenTile;
use tile::Tile;

/// How often the page tries to join again by itself after its session went
/// with its node (a second apart: the room needs a few seconds to move off
/// a node that died).
#[cfg(feature = "hydrate")]
const REJOIN_TRIES: u32 = 20;

/// `/r/{code}`: the pre-join screen, then the call.
#[component]
pub fn RoomPage() -> impl IntoView {
    let params = use_params_map();
    let code = move || params.read().get("code").unwrap_or_default();
    let page = Resource::new(code, get_room_page);
    view! {
        <Suspense fallback=|| view! { <main class="page narrow"><p>"Opening the room…"</p></main> }>
            {move || Suspend::new(async move {
                match page.await {
                    Ok(data) => view! { <Room data/> }.into_any(),
                    Err(AppError::RoomNotFound) => view! { <NotFound/> }.into_any(),
                    Err(e) => view! {
                        <main class="page narrow">
                            <h1>"Cannot open this room"</h1>
                            <p role="alert">{e.to_string()}</p>
                            <a class="button" href="/">"Back to the lobby"</a>
                        </main>
                    }.into_any(),
                }
            })}
        </Suspense>
    }
}

/// One room page's life: owns the call store and the browser resources of
/// the call, and releases them on every way out (button, route change,
/// page hidden, session ended by the server).
#[component]
fn Room(data: RoomPageData) -> impl IntoView {
    let store = CallStore::new();
    let code = data.room.code.clone();
    // The devices chosen on the pre-join screen (`None`: the browser's default).
    let camera = RwSignal::new(None::<String>);
    let microphone = RwSignal::new(None::<String>);
    // Where remote sound plays (`None`: the browser's default output).
    let speaker = RwSignal::new(None::<String>);
    // Whether to join with the camera and microphone on (the pre-join
    // toggles). After the host removed us, turned us away or ended the
    // meeting, the camera stays off until the person turns it on.
    let camera_on = RwSignal::new(true);
    let microphone_on = RwSignal::new(true);
    Effect::new(move |_| {
        if store.me.with(Option::is_none) && store.notice.with(Option::is_some) && !store.rejoin.get() {
            camera_on.set(false);
        }
    });
    // In the call they follow the buttons, so a join made again by itself
    // (the session went with its node) comes back as the person left it.
    Effect::new(move |_| {
        if store.me.with(Option::is_some) {
            camera_on.set(!store.video_muted.get());
            microphone_on.set(!store.audio_muted.get());
        }
    });
    #[cfg(feature = "hydrate")]
    let call = StoredValue::new_local(None::<crate::browser::Call>);

    // The one local leave: tell the server first (the others see us go as
    // soon as it hears), then release browser resources and reset the store.
    let leave = move || {
        if let Some(session) = store.me.try_get_untracked().flatten().map(|m| m.session_id) {
            tell_leave(session);
        }
        #[cfg(feature = "hydrate")]
        let _ = call.try_set_value(None);
        store.reset();
    };
    // Leaving the route in-app runs the same leave: at once for the
    // browser's back and forward buttons (the route's cleanup comes only
    // after the next page has rendered), and on cleanup for anything else.
    #[cfg(feature = "hydrate")]
    {
        let history = window_event_listener(leptos::ev::popstate, move |_| leave());
        on_cleanup(move || history.remove());
    }
    on_cleanup(leave);

    // When the server ends the session, release the call's browser resources too.
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| {
        if store.me.with(Option::is_none) {
            let _ = call.try_set_value(None);
        }
    });

    #[cfg(feature = "hydrate")]
    follow_mutes(store);
    // Our microphone and camera follow the mute buttons (and an admin's mute).
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| {
        let on = !store.audio_muted.get();
        let missing = call.try_with_value(|c| c.as_ref().map(|c| !c.set_microphone(on))).flatten() == Some(true);
        // Joined with the microphone off (never opened): open it now.
        if on && missing {
            store.tasks.spawn(async move {
                let Ok(track) = crate::browser::open_microphone(microphone.get_untracked().as_deref()).await else {
                    store.toast("The microphone could not be turned on.");
                    let _ = store.audio_muted.try_set(true);
                    return;
                };
                let placed =
                    call.try_with_value(|c| c.as_ref().map(|c| c.switch_microphone(Clone::clone(&track), true)));
                if !matches!(placed, Some(Some(()))) {
                    track.stop();
                }
            });
        }
    });
    #[cfg(feature = "hydrate")]
    Effect::new(move |before: Option<bool>| {
        let off = store.video_muted.get();
        if before.is_some_and(|b| b != off) {
            if off {
                let _ = call.try_with_value(|c| c.as_ref().map(crate::browser::Call::camera_off));
            } else {
                store.tasks.spawn(async move {
                    let Ok(track) = crate::browser::open_camera(camera.get_untracked().as_deref()).await else {
                        store.toast("The camera could not be turned on.");
                        let _ = store.video_muted.try_set(true);
                        return;
                    };
                    // `Clone::clone`: the inherent `MediaStreamTrack::clone` would open a second track.
                    let placed = call.try_with_value(|c| c.as_ref().map(|c| c.camera_on(Clone::clone(&track))));
                    if !matches!(placed, Some(Some(()))) {
                        track.stop();
                    }
                });
            }
        }
        off
    });

    // Another camera or microphone chosen during the call: its track
    // replaces the one in use (a camera that is off just remembers it).
    #[cfg(feature = "hydrate")]
    Effect::new(move |before: Option<Option<String>>| {
        let chosen = camera.get();
        let in_call = store.me.with_untracked(Option::is_some);
        if before.is_some_and(|b| b != chosen) && in_call && !store.video_muted.get_untracked() {
            let device = chosen.clone();
            store.tasks.spawn(async move {
                let Ok(track) = crate::browser::open_camera(device.as_deref()).await else {
                    store.toast("That camera could not be opened.");
                    return;
                };
                let placed = call.try_with_value(|c| {
                    c.as_ref().map(|c| {
                        c.camera_off();
                        c.camera_on(Clone::clone(&track));
                    })
                });
                if !matches!(placed, Some(Some(()))) {
                    track.stop();
                }
            });
        }
        chosen
    });
    #[cfg(feature = "hydrate")]
    Effect::new(move |before: Option<Option<String>>| {
        let chosen = microphone.get();
        if before.is_some_and(|b| b != chosen) && store.me.with_untracked(Option::is_some) {
            let device = chosen.clone();
            store.tasks.spawn(async move {
                let Ok(track) = crate::browser::open_microphone(device.as_deref()).await else {
                    store.toast("That microphone could not be opened.");
                    return;
                };
                let on = !store.audio_muted.get_untracked();
                let placed = call.try_with_value(|c| c.as_ref().map(|c| c.switch_microphone(Clone::clone(&track), on)));
                if !matches!(placed, Some(Some(()))) {
                    track.stop();
                }
            });
        }
        chosen
    });

    // A camera or microphone lost mid-call (unplugged, taken by the
    // system): another one takes over, or it is turned off, with a notice.
    #[cfg(feature = "hydrate")]
    {
        let watch =
            set_interval_with_handle(move || recover_lost_devices(store, call), std::time::Duration::from_millis(500));
        on_cleanup(move || {
            if let Ok(handle) = watch {
                handle.clear();
            }
        });
    }

    // The name typed last, kept for the pre-join screen after a call ends.
    let remembered = RwSignal::new(data.remembered_name.clone().unwrap_or_default());
    let joining = RwSignal::new(false);
    let join_error = RwSignal::new(None::<String>);
    let join_code = code.clone();
    let on_join = Callback::new(move |display_name: String| {
        if joining.get_untracked() {
            return;
        }
        if let Err(e) = validate_display_name(&display_name) {
            join_error.set(Some(e.to_string()));
            return;
        }
        remembered.set(display_name.clone());
        joining.set(true);
        join_error.set(None);
        let code = join_code.clone();
        // Owned: gone with the page (a join answered after that is ended by
        // the server's loss path, as its socket never comes).
        store.tasks.spawn(async move {
            match join_room(code.to_string(), display_name).await {
                Ok(outcome) => {
                    #[cfg(feature = "hydrate")]
                    {
                        let session = outcome.session_id.clone();
                        let ice_servers = outcome.ice_servers.clone();
                        crate::browser::remember_room(&code);
                        store.enter(outcome);
                        // The leave beacon is armed before anything else can go wrong.
                        call.set_value(Some(crate::browser::Call::new(store)));
                        let choice = crate::browser::DeviceChoice {
                            camera: camera.get_untracked(),
                            microphone: microphone.get_untracked(),
                            camera_off: !camera_on.get_untracked(),
                            microphone_off: !microphone_on.get_untracked(),
                        };
                        let media = crate::browser::open_local_media(&choice).await;
                        let (has_audio, has_video) = (media.has_audio(), media.has_video());
                        // Both turned off before joining: an empty stream, for
                        // the devices turned on later.
                        let local = media.stream.or_else(|| {
                            (choice.camera_off && choice.microphone_off)
                                .then(|| web_sys::MediaStream::new().ok())
                                .flatten()
                        });
                        let still_here =
                            store.me.try_with_untracked(|m| m.as_ref().is_some_and(|m| m.session_id == session));
                        let connected = still_here == Some(true)
                            && call
                                .try_update_value(|c| match c {
                                    Some(c) => {
                                        c.connect(&code, &session, store, local.clone(), &ice_servers);
                                        true
                                    }
                                    None => false,
                                })
                                .unwrap_or(false);
                        if connected {
                            store.local.set(local);
                            if let Some(problem) = media.problem {
                                store.toast(problem.message());
                            }
                            // A missing device is shown to everyone as turned off.
                            if !has_audio {
                                store.audio_muted.set(true);
                            }
                            if !has_video {
                                store.video_muted.set(true);
                            }
                        } else if let Some(stream) = local {
                            // Left while the browser was asking for the camera.
                            crate::browser::stop_stream(&stream);
                        }
                    }
                    #[cfg(not(feature = "hydrate"))]
                    store.enter(outcome);
                }
                Err(e) => {
                    let _ = join_error.try_set(Some(e.to_string()));
                }
            }
            let _ = joining.try_set(false);
        });
    });

    // The session went with its node (stopped, or died): join again by
    // ourselves, with the same name and devices, until it works or
    // `REJOIN_TRIES` attempts a second apart have failed (then the person
    // sees `disconnected` and may join by hand).
    #[cfg(feature = "hydrate")]
    {
        let tries = StoredValue::new(0u32);
        Effect::new(move |_| {
            let pending = store.rejoin.get();
            if store.me.with(Option::is_some) {
                tries.set_value(0);
                if pending {
                    store.rejoin.set(false);
                }
                return;
            }
            if !pending || joining.get() {
                return;
            }
            let n = tries.get_value();
            if n >= REJOIN_TRIES {
                store.rejoin.set(false);
                store.lost.set(true);
                return;
            }
            tries.set_value(n + 1);
            let name = remembered.get_untracked();
            let wait = std::time::Duration::from_millis(if n == 0 { 0 } else { 1_000 });
            set_timeout(
                move || {
                    if store.rejoin.try_get_untracked() == Some(true) {
                        on_join.run(name);
                    }
                },
                wait,
            );
        });
    }

    // Off to the lobby, which says so and offers the way back.
    let navigate = use_navigate();
    let left_code = code.clone();
    let on_leave = Callback::new(move |()| {
        leave();
        navigate(&format!("/?left={left_code}"), Default::default());
    });

    // Share the screen (`true`) or stop; the host stopping our share, or
    // the browser's own "Stop sharing", ends the capture here too.
    let on_share = Callback::new(move |on: bool| {
        #[cfg(feature = "hydrate")]
        if on {
            start_share(store, call);
        } else {
            stop_share(store, call, true);
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = on;
    });
    #[cfg(feature = "hydrate")]
    Effect::new(move |before: Option<bool>| {
        let me = store.me.with(|m| m.as_ref().map(|m| m.participant_id.clone()));
        let flagged = store.participants.with(|ps| ps.iter().any(|p| Some(&p.id) == me.as_ref() && p.screen));
        if before == Some(true) && !flagged && store.screen.with_untracked(Option::is_some) {
            stop_share(store, call, false);
            store.toast("The host stopped your screen share.");
        }
        flagged
    });

    let private = data.room.private;
    let room_code = code.clone();
    view! {
        <Show
            when=move || store.me.with(Option::is_some)
            fallback=move || view! {
                <Prejoin
                    code=room_code.clone()
                    private=private
                    remembered_name=remembered.get_untracked()
                    joining=joining.into()
                    error=join_error.into()
                    notice=store.notice.into()
                    lost=store.lost.into()
                    rejoining=store.rejoin.into()
                    camera=camera
                    microphone=microphone
                    camera_on=camera_on
                    microphone_on=microphone_on
                    on_join=on_join
                />
            }
        >
            <CallView
                code=code.clone()
                store=store
                on_leave=on_leave
                on_share=on_share
                devices=Devices { camera, microphone, speaker }
            />
        </Show>
    }
}

/// The devices the person chose (`None`: the browser's default), shared by
/// the pre-join screen and the call's device settings.
#[derive(Debug, Clone, Copy)]
pub(super) struct Devices {
    pub(super) camera: RwSignal<Option<String>>,
    pub(super) microphone: RwSignal<Option<String>>,
    pub(super) speaker: RwSignal<Option<String>>,
}

/// Sends our leave: in the browser as a request started right now; the
/// server function otherwise (and if the browser refused the request).
fn tell_leave(session: SessionId) {
    #[cfg(feature = "hydrate")]
    let sent = crate::browser::send_leave(&session);
    // Not owned (`crate::tasks`): the leave outlives the page it leaves.
    #[cfg(feature = "hydrate")]
    if let Ok(confirmed) = sent {
        spawn_local(async move {
            if let Err(e) = confirmed.await {
                leptos::logging::warn!("leave was not confirmed: {e}");
            }
        });
        return;
    }
    spawn_local(async move {
        if let Err(e) = leave_room(session.to_string()).await {
            leptos::logging::warn!("leave was not confirmed: {e}");
        }
    });
}

/// Asks which screen to share and shares it; the room is told.
#[cfg(feature = "hydrate")]
fn start_share(store: CallStore, call: StoredValue<Option<crate::browser::Call>, LocalStorage>) {
    store.tasks.spawn(async move {
        let Ok(stream) = crate::browser::open_screen().await else {
            store.toast("Screen sharing was cancelled or is not allowed.");
            return;
        };
        let placed = call.try_update_value(|c| c.as_mut().map(|c| c.share_screen(Clone::clone(&stream))));
        match (placed, my_session(store)) {
            (Some(Some(())), Some(session)) => {
                let _ = store.screen.try_set(Some(stream));
                run_action(store, crate::api::set_screen(session, true));
            }
            // Left while the browser was asking.
            _ => crate::browser::stop_stream(&stream),
        }
    });
}

/// Stops our screen share (the capture ends); `tell`: the room is told
/// (not when the host stopped it, the room knows).
#[cfg(feature = "hydrate")]
fn stop_share(store: CallStore, call: StoredValue<Option<crate::browser::Call>, LocalStorage>, tell: bool) {
    let _ = call.try_update_value(|c| c.as_mut().map(crate::browser::Call::stop_screen));
    let _ = store.screen.try_set(None);
    if let (true, Some(session)) = (tell, my_session(store)) {
        run_action(store, crate::api::set_screen(session, false));
    }
}

/// Replaces a device whose track ended by itself (see
/// [`crate::browser::take_lost_tracks`]) with whatever the browser offers
/// now, or turns it off (and tells the room) when there is none.
#[cfg(feature = "hydrate")]
fn recover_lost_devices(store: CallStore, call: StoredValue<Option<crate::browser::Call>, LocalStorage>) {
    // The browser's own "Stop sharing" ends the capture's track.
    if let Some(Some(screen)) = store.screen.try_get_untracked() {
        if !crate::browser::take_lost_tracks(&screen, "video").is_empty() {
            stop_share(store, call, true);
        }
    }
    let Some(Some(local)) = store.local.try_get_untracked() else { return };
    if !crate::browser::take_lost_tracks(&local, "audio").is_empty() {
        store.tasks.spawn(async move {
            match crate::browser::open_microphone(None).await {
                Ok(track) => {
                    let label = track.label();
                    let on = !store.audio_muted.get_untracked();
                    let placed =
                        call.try_with_value(|c| c.as_ref().map(|c| c.switch_microphone(Clone::clone(&track), on)));
                    if matches!(placed, Some(Some(()))) {
                        store.toast(format!("Your microphone was disconnected. Now using {label}."));
                    } else {
                        track.stop();
                    }
                }
                Err(_) => {
                    store.toast("Your microphone was disconnected and no other is available; it is off.");
                    let _ = store.audio_muted.try_set(true);
                }
            }
        });
    }
    if !crate::browser::take_lost_tracks(&local, "video").is_empty() {
        let _ = call.try_with_value(|c| c.as_ref().map(crate::browser::Call::camera_off));
        store.tasks.spawn(async move {
            match crate::browser::open_camera(None).await {
                Ok(track) => {
                    let label = track.label();
                    let placed = call.try_with_value(|c| c.as_ref().map(|c| c.camera_on(Clone::clone(&track))));
                    if matches!(placed, Some(Some(()))) {
                        store.toast(format!("Your camera was disconnected. Now using {label}."));
                    } else {
                        track.stop();
                    }
                }
                Err(_) => {
                    store.toast("Your camera was disconnected and no other is available; it is off.");
                    let _ = store.video_muted.try_set(true);
                }
            }
        });
    }
}

/// The server's mute flags follow ours (through [`crate::call::MuteSync`]):
/// whoever changes a flag (a button, a shortcut, a lost device, a host's
/// mute) only sets it.
#[cfg(feature = "hydrate")]
fn follow_mutes(store: CallStore) {
    use crate::model::MediaKind;
    for kind in [MediaKind::Audio, MediaKind::Video] {
        Effect::new(move |_| {
            store.muted(kind).track();
            store.me.track();
            send_mutes(store, kind);
        });
    }
}

/// Sends the flag of `kind` until the server holds what it says now, one
/// request at a time; a no-op while a request is on its way (that sender
/// sends the newest state next).
#[cfg(feature = "hydrate")]
fn send_mutes(store: CallStore, kind: crate::model::MediaKind) {
    let Some(session) = my_session(store) else { return };
    if store.mutes.try_update_value(|m| m.claim(kind)) != Some(true) {
        return;
    }
    let flag = store.muted(kind);
    store.tasks.spawn(async move {
        loop {
            let Some(wanted) = flag.try_get_untracked() else { return };
            let Some(Some(muted)) = store.mutes.try_update_value(|m| m.next(kind, wanted)) else { return };
            let result = crate::api::set_muted(session.clone(), kind.as_str().to_owned(), muted).await;
            if my_session(store).as_deref() != Some(session.as_str()) {
                return; // that session ended meanwhile; the store is a new one's
            }
            match result {
                Ok(()) => store.mutes.update_value(|m| m.told(kind, muted)),
                Err(AppError::MutedByHost) => {
                    // The host's mute came first: the microphone stays off.
                    store.mutes.update_value(|m| m.told(kind, true));
                    let _ = flag.try_set(true);
                    store.toast(AppError::MutedByHost.to_string());
                }
                Err(e) => {
                    store.mutes.update_value(|m| m.failed(kind));
                    store.toast(e.to_string());
                    return;
                }
            }
        }
    });
}

/// Runs a room action for our session; a refusal becomes a notice.
pub(super) fn run_action(store: CallStore, action: impl std::future::Future<Output = Result<(), AppError>> + 'static) {
    store.tasks.spawn(async move {
        if let Err(e) = action.await {
            store.toast(e.to_string());
        }
    });
}

pub(super) fn my_session(store: CallStore) -> Option<String> {
    store.me.try_get_untracked().flatten().map(|m| m.session_id.to_string())
}
