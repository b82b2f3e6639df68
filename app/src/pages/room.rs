use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::{use_navigate, use_params_map};

use crate::api::{
    admit, allow_unmute, end_meeting, get_room_page, join_room, kick, leave_room, make_admin, mute_participant,
    set_hand, set_muted,
};
use crate::call::CallStore;
use crate::error::AppError;
use crate::model::{validate_display_name, ParticipantState, ParticipantView, Role, RoomCode, RoomPageData, SessionId};
use crate::pages::not_found::NotFound;

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

    // Our microphone and camera follow the mute buttons (and an admin's mute).
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| {
        let on = !store.audio_muted.get();
        let _ = call.try_with_value(|c| c.as_ref().map(|c| c.set_microphone(on)));
    });
    #[cfg(feature = "hydrate")]
    Effect::new(move |before: Option<bool>| {
        let off = store.video_muted.get();
        if before.is_some_and(|b| b != off) {
            if off {
                let _ = call.try_with_value(|c| c.as_ref().map(crate::browser::Call::camera_off));
            } else {
                spawn_local(async move {
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
        spawn_local(async move {
            match join_room(code.to_string(), display_name).await {
                Ok(outcome) => {
                    #[cfg(feature = "hydrate")]
                    {
                        let session = outcome.session_id.clone();
                        store.enter(outcome);
                        // The leave beacon is armed before anything else can go wrong.
                        call.set_value(Some(crate::browser::Call::new(store)));
                        let choice = crate::browser::DeviceChoice {
                            camera: camera.get_untracked(),
                            microphone: microphone.get_untracked(),
                        };
                        let local = crate::browser::open_camera_and_microphone(&choice).await.ok();
                        let still_here =
                            store.me.try_with_untracked(|m| m.as_ref().is_some_and(|m| m.session_id == session));
                        let connected = still_here == Some(true)
                            && call
                                .try_update_value(|c| match c {
                                    Some(c) => {
                                        c.connect(&code, &session, store, local.clone());
                                        true
                                    }
                                    None => false,
                                })
                                .unwrap_or(false);
                        if connected {
                            store.local.set(local);
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

    let navigate = use_navigate();
    let on_leave = Callback::new(move |()| {
        leave();
        navigate("/", Default::default());
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
                    camera=camera
                    microphone=microphone
                    on_join=on_join
                />
            }
        >
            <CallView code=code.clone() store=store on_leave=on_leave/>
        </Show>
    }
}

/// Sends our leave: in the browser as a request started right now; the
/// server function otherwise (and if the browser refused the request).
fn tell_leave(session: SessionId) {
    #[cfg(feature = "hydrate")]
    let sent = crate::browser::send_leave(&session);
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

/// The screen before joining: name, camera/microphone preview, Join.
#[component]
fn Prejoin(
    code: RoomCode,
    private: bool,
    remembered_name: String,
    joining: Signal<bool>,
    error: Signal<Option<String>>,
    notice: Signal<Option<String>>,
    lost: Signal<bool>,
    camera: RwSignal<Option<String>>,
    microphone: RwSignal<Option<String>>,
    on_join: Callback<String>,
) -> impl IntoView {
    let name = RwSignal::new(remembered_name.clone());
    let video = NodeRef::<leptos::html::Video>::new();
    let preview_note = RwSignal::new(None::<String>);
    // Filled once the browser lists the devices (after permission).
    let cameras = RwSignal::new(Vec::<(String, String)>::new());
    let microphones = RwSignal::new(Vec::<(String, String)>::new());
    #[cfg(feature = "hydrate")]
    start_preview(video, preview_note, camera, microphone, cameras, microphones);
    #[cfg(not(feature = "hydrate"))]
    let _ = preview_note;

    view! {
        <main class="page prejoin" data-testid="prejoin">
            <h1>"Ready to join?"</h1>
            <p class="room-code">"Room " <code>{code.to_string()}</code></p>
            {move || notice.get().map(|n| view! { <p class="notice" role="status">{n}</p> })}
            {move || lost.get().then(|| view! {
                <p class="connection" data-testid="connection-status" data-state="disconnected" role="status">
                    "Disconnected. Join again when you are back online."
                </p>
            })}
            <div class="prejoin-grid">
                <div class="preview">
                    <video node_ref=video autoplay=true muted=true playsinline=true aria-label="Your camera preview"></video>
                    <p class="preview-note">{move || preview_note.get()}</p>
                </div>
                <form class="card" on:submit=move |ev| {
                    ev.prevent_default();
                    on_join.run(name.get_untracked());
                }>
                    <label for="prejoin-name">"Your name"</label>
                    <input
                        id="prejoin-name"
                        data-testid="display-name"
                        autocomplete="nickname"
                        value=remembered_name
                        prop:value=move || name.get()
                        on:input=move |ev| name.set(event_target_value(&ev))
                    />
                    <DeviceSelect label="Camera" testid="camera-select" options=cameras chosen=camera/>
                    <DeviceSelect label="Microphone" testid="microphone-select" options=microphones chosen=microphone/>
                    {private.then(|| view! { <p class="hint">"This room is private: the host admits you."</p> })}
                    <button type="submit" data-testid="join-button" disabled=move || joining.get()>
                        {move || if joining.get() { "Joining…" } else { "Join now" }}
                    </button>
                    <p class="form-error" role="alert">{move || error.get()}</p>
                </form>
            </div>
        </main>
    }
}

/// A device picker, shown once the browser has listed the devices.
#[component]
fn DeviceSelect(
    label: &'static str,
    testid: &'static str,
    options: RwSignal<Vec<(String, String)>>,
    chosen: RwSignal<Option<String>>,
) -> impl IntoView {
    view! {
        <Show when=move || options.with(|o| o.len() > 1)>
            <label for=testid>{label}</label>
            <select id=testid data-testid=testid on:change=move |ev| chosen.set(Some(event_target_value(&ev)))>
                <For
                    each=move || options.get()
                    key=|(id, _)| id.clone()
                    children=move |(id, name)| {
                        let selected = chosen.get_untracked().as_deref() == Some(id.as_str());
                        view! { <option value=id selected=selected>{name}</option> }
                    }
                />
            </select>
        </Show>
    }
}

/// Shows the chosen camera in the preview (again whenever the choice
/// changes), lists the devices once allowed, and stops the camera when the
/// pre-join screen goes.
#[cfg(feature = "hydrate")]
fn start_preview(
    video: NodeRef<leptos::html::Video>,
    note: RwSignal<Option<String>>,
    camera: RwSignal<Option<String>>,
    microphone: RwSignal<Option<String>>,
    cameras: RwSignal<Vec<(String, String)>>,
    microphones: RwSignal<Vec<(String, String)>>,
) {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::sync::Arc;

    let stream = StoredValue::new_local(None::<web_sys::MediaStream>);
    let alive = Arc::new(AtomicBool::new(true));
    // Each choice opens the devices anew; an older, slower open is dropped.
    let generation = Arc::new(AtomicU32::new(0));
    let still_alive = alive.clone();
    Effect::new(move |_| {
        let choice = crate::browser::DeviceChoice { camera: camera.get(), microphone: microphone.get() };
        let current = generation.fetch_add(1, Ordering::AcqRel) + 1;
        if let Some(Some(old)) = stream.try_update_value(Option::take) {
            crate::browser::stop_stream(&old);
        }
        let (alive, generation) = (still_alive.clone(), generation.clone());
        spawn_local(async move {
            match crate::browser::open_camera_and_microphone(&choice).await {
                Ok(s) if alive.load(Ordering::Acquire) && generation.load(Ordering::Acquire) == current => {
                    if let Some(v) = video.get_untracked() {
                        v.set_src_object(Some(&s));
                    }
                    stream.set_value(Some(s));
                    let _ = note.try_set(None);
                    if let Ok((cams, mics)) = crate::browser::list_devices().await {
                        let _ = cameras.try_set(cams);
                        let _ = microphones.try_set(mics);
                    }
                }
                // The screen went away (or the choice changed) meanwhile: release at once.
                Ok(s) => crate::browser::stop_stream(&s),
                Err(_) => {
                    let _ = note.try_set(Some("Camera or microphone unavailable. You can still join.".into()));
                }
            }
        });
    });
    on_cleanup(move || {
        alive.store(false, Ordering::Release);
        if let Some(Some(s)) = stream.try_update_value(Option::take) {
            crate::browser::stop_stream(&s);
        }
        if let Some(v) = video.get_untracked() {
            v.set_src_object(None);
        }
    });
}

/// Runs a room action for our session; a refusal becomes a notice.
fn run_action(store: CallStore, action: impl std::future::Future<Output = Result<(), AppError>> + 'static) {
    spawn_local(async move {
        if let Err(e) = action.await {
            store.toast(e.to_string());
        }
    });
}

fn my_session(store: CallStore) -> Option<String> {
    store.me.try_get_untracked().flatten().map(|m| m.session_id.to_string())
}

/// While waiting for the host of a private room.
#[component]
fn Waiting(code: RoomCode, on_leave: Callback<()>) -> impl IntoView {
    view! {
        <main class="page narrow waiting" data-testid="waiting-for-approval">
            <h1>"Waiting for the host"</h1>
            <p role="status">"You asked to join room " <code>{code.to_string()}</code> ". The host will let you in soon."</p>
            <div class="spinner" aria-hidden="true"></div>
            <button class="secondary" data-testid="leave-button" on:click=move |_| on_leave.run(())>
                "Cancel request"
            </button>
        </main>
    }
}

/// The joined view: the waiting screen, or the call: tiles, participant
/// panel, notices, control bar.
#[component]
fn CallView(code: RoomCode, store: CallStore, on_leave: Callback<()>) -> impl IntoView {
    let waiting = move || store.me.with(|m| m.as_ref().is_some_and(|m| m.state == ParticipantState::Pending));
    let wait_code = code.clone();
    view! {
        <Show when=move || !waiting() fallback=move || view! { <Waiting code=wait_code.clone() on_leave=on_leave/> }>
            <InCall code=code.clone() store=store on_leave=on_leave/>
        </Show>
    }
}

#[component]
fn InCall(code: RoomCode, store: CallStore, on_leave: Callback<()>) -> impl IntoView {
    let connection = move || store.connection.get();
    let panel_open = RwSignal::new(false);
    // Keyboard: opening the people panel moves focus into it; Escape closes
    // it and gives focus back to the button that opened it.
    let panel_heading = NodeRef::<leptos::html::H2>::new();
    let people_button = NodeRef::<leptos::html::Button>::new();
    let toggle_panel = move |_| {
        let open = !panel_open.get_untracked();
        panel_open.set(open);
        if open {
            request_animation_frame(move || {
                if let Some(h) = panel_heading.get_untracked() {
                    let _ = h.focus();
                }
            });
        }
    };
    let close_panel = move |ev: leptos::ev::KeyboardEvent| {
        if ev.key() == "Escape" && panel_open.get_untracked() {
            panel_open.set(false);
            if let Some(b) = people_button.get_untracked() {
                let _ = b.focus();
            }
        }
    };
    let count = move || store.participants.with(Vec::len);
    let layout = move || match count() {
        0 | 1 => "tiles n1",
        2 => "tiles n2",
        3 | 4 => "tiles n4",
        5 | 6 => "tiles n6",
        _ => "tiles n9",
    };
    let my_id = move || store.me.with(|m| m.as_ref().map(|m| m.participant_id.clone()));
    let hand_up = move || {
        let me = my_id();
        store.hands.with(|h| me.is_some_and(|me| h.contains(&me)))
    };
    let locked = move || store.audio_muted.get() && store.audio_locked();
    let toggle_audio = move |_| {
        let muted = !store.audio_muted.get_untracked();
        if !muted && store.audio_locked() {
            store.toast("The host muted you. Raise your hand to ask to speak.");
            return;
        }
        store.audio_muted.set(muted);
        if let Some(session) = my_session(store) {
            run_action(store, async move {
                let result = set_muted(session, "audio".into(), muted).await;
                if result == Err(AppError::MutedByHost) {
                    // The host's mute came first: the microphone stays off.
                    let _ = store.audio_muted.try_set(true);
                }
                result
            });
        }
    };
    let toggle_video = move |_| {
        let muted = !store.video_muted.get_untracked();
        store.video_muted.set(muted);
        if let Some(session) = my_session(store) {
            run_action(store, set_muted(session, "video".into(), muted));
        }
    };
    let toggle_hand = move |_| {
        let up = !hand_up();
        if let Some(session) = my_session(store) {
            run_action(store, set_hand(session, up));
        }
    };
    let end_for_all = move |_| {
        if let Some(session) = my_session(store) {
            run_action(store, end_meeting(session));
        }
    };
    #[cfg(feature = "hydrate")]
    dismiss_toasts(store);

    view! {
        <main class="page call" data-testid="call" on:keydown=close_panel>
            <header class="call-bar">
                <a
                    class="brand-link"
                    href="/"
                    data-testid="home-link"
                    title="Leave and go to the lobby"
                    on:click=move |ev| {
                        // The leave goes out before the lobby renders (as the Leave button's).
                        if ev.button() == 0 && !(ev.ctrl_key() || ev.meta_key() || ev.shift_key() || ev.alt_key()) {
                            ev.prevent_default();
                            on_leave.run(());
                        }
                    }
                >
                    "Cleanroom"
                </a>
                <span class="room-code">"Room " <code>{code.to_string()}</code></span>
                <span
                    class="connection"
                    data-testid="connection-status"
                    data-state=move || connection().as_str()
                    role="status"
                >
                    {move || connection().label()}
                </span>
            </header>
            <div class="call-body">
                <section class=layout aria-label="Video tiles">
                    <For
                        each=move || store.participants.get()
                        key=|p| p.id.clone()
                        children=move |p| view! { <Tile participant=p store=store/> }
                    />
                </section>
                <aside
                    class="panel"
                    class:open=move || panel_open.get()
                    aria-label="Participants"
                    data-testid="participant-panel"
                >
                    <Pending store=store/>
                    <h2 node_ref=panel_heading tabindex="-1">{move || format!("In the call ({})", count())}</h2>
                    <ul data-testid="participant-list">
                        <For
                            each=move || {
                                // Raised hands first, in the order they went up; then by arrival.
                                let hands = store.hands.get();
                                let mut ps = store.participants.get();
                                ps.sort_by_key(|p| hands.iter().position(|h| h == &p.id).unwrap_or(usize::MAX));
                                ps
                            }
                            key=|p| (p.id.clone(), p.role == Role::Admin, p.audio_muted)
                            children=move |p| view! { <ParticipantRow participant=p store=store/> }
                        />
                    </ul>
                </aside>
            </div>
            <ul class="toasts" aria-live="polite">
                <For
                    each=move || store.toasts.get()
                    key=|t| t.id
                    children=|t| view! { <li class="toast">{t.text}</li> }
                />
            </ul>
            <footer class="controls" aria-label="Call controls">
                <button
                    data-testid="mute-audio"
                    class:off=move || store.audio_muted.get()
                    aria-pressed=move || store.audio_muted.get().to_string()
                    aria-disabled=move || locked().to_string()
                    title=move || locked().then_some("The host muted you; raise your hand to ask to speak")
                    on:click=toggle_audio
                >
                    {move || match (store.audio_muted.get(), locked()) {
                        (_, true) => "Muted by host",
                        (true, false) => "Unmute",
                        (false, false) => "Mute",
                    }}
                </button>
                <button
                    data-testid="mute-video"
                    class:off=move || store.video_muted.get()
                    aria-pressed=move || store.video_muted.get().to_string()
                    on:click=toggle_video
                >
                    {move || if store.video_muted.get() { "Start camera" } else { "Stop camera" }}
                </button>
                <button data-testid="raise-hand" aria-pressed=move || hand_up().to_string() on:click=toggle_hand>
                    {move || if hand_up() { "Lower hand" } else { "Raise hand" }}
                </button>
                <button
                    data-testid="participants-button"
                    node_ref=people_button
                    aria-expanded=move || panel_open.get().to_string()
                    on:click=toggle_panel
                >
                    {move || format!("People ({})", count())}
                    {move || {
                        let n = store.pending.with(Vec::len);
                        (n > 0).then(|| view! { <span class="count" aria-label="waiting">{n}</span> })
                    }}
                </button>
                {move || store.is_admin().then(|| view! {
                    <button class="secondary" data-testid="end-meeting" on:click=end_for_all>"End for all"</button>
                })}
                <button class="danger" data-testid="leave-button" on:click=move |_| on_leave.run(())>
                    "Leave"
                </button>
            </footer>
        </main>
    }
}

/// Removes each notice a few seconds after it appeared.
#[cfg(feature = "hydrate")]
fn dismiss_toasts(store: CallStore) {
    Effect::new(move |_| {
        if let Some(newest) = store.toasts.with(|t| t.last().map(|t| t.id)) {
            set_timeout(
                move || {
                    let _ = store.toasts.try_update(|t| t.retain(|x| x.id != newest));
                },
                std::time::Duration::from_secs(5),
            );
        }
    });
}

/// Requests to join, for the admin.
#[component]
fn Pending(store: CallStore) -> impl IntoView {
    view! {
        <Show when=move || store.pending.with(|p| !p.is_empty())>
            <h2>"Asking to join"</h2>
            <ul class="requests">
                <For
                    each=move || store.pending.get()
                    key=|p| p.id.clone()
                    children=move |p| {
                        let (yes, no) = (p.id.to_string(), p.id.to_string());
                        view! {
                            <li class="request" data-testid="pending-request" data-participant-id=p.id.to_string()>
                                <span class="name">{p.name.clone()}</span>
                                <button
                                    data-testid="approve"
                                    aria-label=format!("Let {} in", p.name)
                                    on:click=move |_| if let Some(s) = my_session(store) {
                                        run_action(store, admit(s, yes.clone(), true));
                                    }
                                >"Admit"</button>
                                <button
                                    class="secondary"
                                    data-testid="deny"
                                    aria-label=format!("Turn {} away", p.name)
                                    on:click=move |_| if let Some(s) = my_session(store) {
                                        run_action(store, admit(s, no.clone(), false));
                                    }
                                >"Deny"</button>
                            </li>
                        }
                    }
                />
            </ul>
        </Show>
    }
}

/// One line of the participant list.
#[component]
fn ParticipantRow(participant: ParticipantView, store: CallStore) -> impl IntoView {
    let me = store.is_me(&participant.id);
    let id = participant.id.clone();
    let hand_id = id.clone();
    let hand = move || store.hands.with(|h| h.iter().position(|x| x == &hand_id)).map(|i| i + 1);
    let target = id.to_string();
    let name = participant.name.clone();
    view! {
        <li data-testid="participant" data-participant-id=id.to_string() data-self=me.to_string()>
            <span class="name">{participant.name.clone()}</span>
            {me.then(|| view! { <span class="tag">"you"</span> })}
            {(participant.role == Role::Admin).then(|| view! { <span class="tag">"host"</span> })}
            {participant.audio_muted.then(|| view! { <span class="tag muted">"muted"</span> })}
            {move || hand().map(|n| view! { <span class="tag hand" title="Hand raised">{format!("Hand {n}")}</span> })}
            {move || (store.is_admin() && !me).then(|| {
                let (target, name) = (target.clone(), name.clone());
                view! {
                    <button
                        class="small secondary"
                        data-testid="make-admin"
                        aria-label=format!("Make {name} the host")
                        on:click=move |_| if let Some(s) = my_session(store) {
                            run_action(store, make_admin(s, target.clone()));
                        }
                    >"Make host"</button>
                }
            })}
        </li>
    }
}

/// One participant's tile: video, name and badges (muted, hand,
/// speaking, reconnecting); the admin's kick and mute buttons on others'
/// tiles. The `<video>` shows the remote stream filed under the
/// participant's id (or our own camera), and lets go of it when the tile
/// unmounts.
#[component]
fn Tile(participant: ParticipantView, store: CallStore) -> impl IntoView {
    let me = store.is_me(&participant.id);
    let video = NodeRef::<leptos::html::Video>::new();
    let view_id = participant.id.clone();
    let current = Memo::new(move |_| store.participants.with(|ps| ps.iter().find(|p| p.id == view_id).cloned()));
    let presence = move || current.with(|p| p.as_ref().map_or("connected", |p| p.presence.as_str()));
    let audio_off = move || current.with(|p| p.as_ref().is_some_and(|p| p.audio_muted));
    let audio_locked = move || current.with(|p| p.as_ref().is_some_and(|p| p.audio_locked));
    let video_off = move || current.with(|p| p.as_ref().is_some_and(|p| p.video_muted));
    let speaking_id = participant.id.clone();
    let speaking = Memo::new(move |_| store.speaker.with(|s| s.as_ref() == Some(&speaking_id)));
    let hand_id = participant.id.clone();
    let hand = Memo::new(move |_| store.hands.with(|h| h.iter().position(|x| x == &hand_id)).map(|i| i + 1));
    #[cfg(feature = "hydrate")]
    {
        let id = participant.id.to_string();
        Effect::new(move |_| {
            let stream = if me { store.local.get() } else { store.streams.with(|m| m.get(&id).cloned()) };
            if let Some(v) = video.get() {
                v.set_src_object(stream.as_ref());
            }
        });
        on_cleanup(move || {
            if let Some(v) = video.get_untracked() {
                v.set_src_object(None);
            }
        });
    }
    let name = participant.name.clone();
    let (kick_id, mute_id) = (participant.id.to_string(), participant.id.to_string());
    let initial = name.chars().next().map(|c| c.to_uppercase().to_string()).unwrap_or_default();
    view! {
        <div
            class="tile"
            class:speaking=speaking
            class:camera-off=video_off
            data-testid="participant-tile"
            data-participant-id=participant.id.to_string()
            data-self=me.to_string()
            data-state=presence
            data-speaking=move || speaking.get().to_string()
            data-hand=move || hand.get().is_some().to_string()
        >
            <video node_ref=video autoplay=true playsinline=true muted=me aria-label=format!("Video of {name}")></video>
            <span class="avatar" aria-hidden="true"><span>{initial}</span></span>
            <span class="tile-name">
                {participant.name.clone()}{me.then_some(" (you)")}
                {move || audio_off().then(|| view! { <span class="badge" title="Microphone off">" · muted"</span> })}
            </span>
            {move || hand.get().map(|n| view! { <span class="hand-badge" title="Hand raised">{format!("Hand {n}")}</span> })}
            <span class="tile-badge" aria-live="polite">{move || (presence() == "reconnecting").then_some("Reconnecting…")}</span>
            {move || (store.is_admin() && !me).then(|| {
                let (kick_id, mute_id, name) = (kick_id.clone(), mute_id.clone(), name.clone());
                let (allow_id, allow_name) = (mute_id.clone(), name.clone());
                view! {
                    <span class="tile-actions">
                        <Show
                            when=audio_locked
                            fallback={
                                let (mute_id, name) = (mute_id.clone(), name.clone());
                                move || {
                                    let (mute_id, name) = (mute_id.clone(), name.clone());
                                    view! {
                                        <button
                                            class="small secondary"
                                            data-testid="mute-participant"
                                            aria-label=format!("Mute {name}")
                                            disabled=audio_off
                                            on:click=move |_| if let Some(s) = my_session(store) {
                                                run_action(store, mute_participant(s, mute_id.clone()));
                                            }
                                        >"Mute"</button>
                                    }
                                }
                            }
                        >
                            {
                                let (allow_id, allow_name) = (allow_id.clone(), allow_name.clone());
                                view! {
                                    <button
                                        class="small secondary"
                                        data-testid="allow-unmute"
                                        aria-label=format!("Let {allow_name} unmute")
                                        on:click=move |_| if let Some(s) = my_session(store) {
                                            run_action(store, allow_unmute(s, allow_id.clone()));
                                        }
                                    >"Let speak"</button>
                                }
                            }
                        </Show>
                        <button
                            class="small danger"
                            data-testid="kick"
                            aria-label=format!("Remove {name} from the call")
                            on:click=move |_| if let Some(s) = my_session(store) {
                                run_action(store, kick(s, kick_id.clone()));
                            }
                        >"Remove"</button>
                    </span>
                }
            })}
        </div>
    }
}
