use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::{use_navigate, use_params_map};

use crate::api::{get_room_page, join_room, leave_room};
use crate::call::CallStore;
use crate::error::AppError;
use crate::model::{validate_display_name, Role, RoomCode, RoomPageData};
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
    #[cfg(feature = "hydrate")]
    let call = StoredValue::new_local(None::<crate::browser::Call>);

    // The one local leave: release browser resources, reset the store, tell the server.
    let leave = move || {
        let session = store.me.try_get_untracked().flatten().map(|m| m.session_id);
        #[cfg(feature = "hydrate")]
        let _ = call.try_set_value(None);
        store.reset();
        if let Some(session) = session {
            spawn_local(async move {
                if let Err(e) = leave_room(session.to_string()).await {
                    leptos::logging::warn!("leave was not confirmed: {e}");
                }
            });
        }
    };
    // Leaving the route in-app runs the same leave.
    on_cleanup(leave);

    // When the server ends the session, release the call's browser resources too.
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| {
        if store.me.with(Option::is_none) {
            let _ = call.try_set_value(None);
        }
    });

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
                        let local = crate::browser::open_camera_and_microphone().await.ok();
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

    let remembered = data.remembered_name.clone().unwrap_or_default();
    let private = data.room.private;
    let room_code = code.clone();
    view! {
        <Show
            when=move || store.me.with(Option::is_some)
            fallback=move || view! {
                <Prejoin
                    code=room_code.clone()
                    private=private
                    remembered_name=remembered.clone()
                    joining=joining.into()
                    error=join_error.into()
                    notice=store.notice.into()
                    lost=store.lost.into()
                    on_join=on_join
                />
            }
        >
            <CallView code=code.clone() store=store on_leave=on_leave/>
        </Show>
    }
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
    on_join: Callback<String>,
) -> impl IntoView {
    let name = RwSignal::new(remembered_name.clone());
    let video = NodeRef::<leptos::html::Video>::new();
    let preview_note = RwSignal::new(None::<String>);
    #[cfg(feature = "hydrate")]
    start_preview(video, preview_note);
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

/// Shows the camera in the preview; stops it when the pre-join screen goes.
#[cfg(feature = "hydrate")]
fn start_preview(video: NodeRef<leptos::html::Video>, note: RwSignal<Option<String>>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let stream = StoredValue::new_local(None::<web_sys::MediaStream>);
    let alive = Arc::new(AtomicBool::new(true));
    let still_alive = alive.clone();
    spawn_local(async move {
        match crate::browser::open_camera_and_microphone().await {
            Ok(s) if still_alive.load(Ordering::Acquire) => {
                if let Some(v) = video.get_untracked() {
                    v.set_src_object(Some(&s));
                }
                stream.set_value(Some(s));
            }
            // The screen went away while the browser was asking: release at once.
            Ok(s) => crate::browser::stop_stream(&s),
            Err(_) => {
                let _ = note.try_set(Some("Camera or microphone unavailable. You can still join.".into()));
            }
        }
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

/// The joined view: roster, connection state, Leave.
#[component]
fn CallView(code: RoomCode, store: CallStore, on_leave: Callback<()>) -> impl IntoView {
    let connection = move || store.connection.get();
    view! {
        <main class="page call" data-testid="call">
            <header class="call-bar">
                <a class="brand-link" href="/" data-testid="home-link" title="Leave and go to the lobby">"Cleanroom"</a>
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
            <section class="tiles" aria-label="Video tiles">
                <For
                    each=move || store.participants.get()
                    key=|p| p.id.clone()
                    children=move |p| view! { <Tile participant=p store=store/> }
                />
            </section>
            <section class="roster" aria-label="Participants">
                <h2>{move || format!("In the call ({})", store.participants.with(Vec::len))}</h2>
                <ul data-testid="participant-list">
                    <For
                        each=move || store.participants.get()
                        key=|p| p.id.clone()
                        children=move |p| {
                            let me = store.is_me(&p.id);
                            view! {
                                <li
                                    data-testid="participant"
                                    data-participant-id=p.id.to_string()
                                    data-self=me.to_string()
                                >
                                    <span class="name">{p.name.clone()}</span>
                                    {me.then(|| view! { <span class="tag">"you"</span> })}
                                    {(p.role == Role::Admin).then(|| view! { <span class="tag">"host"</span> })}
                                </li>
                            }
                        }
                    />
                </ul>
            </section>
            <footer class="controls">
                <button class="danger" data-testid="leave-button" on:click=move |_| on_leave.run(())>
                    "Leave"
                </button>
            </footer>
        </main>
    }
}

/// One participant's tile: name and video. The `<video>` shows the remote
/// stream filed under the participant's id (or our own camera), and lets go
/// of it when the tile unmounts.
#[component]
fn Tile(participant: crate::model::ParticipantView, store: CallStore) -> impl IntoView {
    let me = store.is_me(&participant.id);
    let video = NodeRef::<leptos::html::Video>::new();
    let presence_id = participant.id.clone();
    let presence = Memo::new(move |_| {
        store
            .participants
            .with(|ps| ps.iter().find(|p| p.id == presence_id).map_or("connected", |p| p.presence.as_str()))
    });
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
    view! {
        <div
            class="tile"
            data-testid="participant-tile"
            data-participant-id=participant.id.to_string()
            data-self=me.to_string()
            data-state=presence
            data-speaking="false"
            data-hand="false"
        >
            <video node_ref=video autoplay=true playsinline=true muted=me aria-label=format!("Video of {}", participant.name)></video>
            <span class="tile-name">{participant.name.clone()}{me.then_some(" (you)")}</span>
            <span class="tile-badge" aria-live="polite">{move || (presence.get() == "reconnecting").then_some("Reconnecting…")}</span>
        </div>
    }
}
