//! The joined view: the waiting screen of a private room, or the call
//! (tiles, the control bar, the people panel, notices).

use super::*;

/// How the tiles are laid out: a grid, or speaker view (one featured tile
/// large, the others in a row beneath). A pinned tile is the featured one
/// in either layout; in speaker view without a pin it is whoever speaks
/// (else the first other person).
#[derive(Debug, Clone, Copy)]
pub(super) struct Layout {
    /// Speaker view (`layout-toggle`), else the grid.
    pub(super) speaker_view: RwSignal<bool>,
    /// The tile pinned large (`pin`), if any.
    pub(super) pinned: RwSignal<Option<ParticipantId>>,
    /// Where remote tiles play their sound (`None`: the default output).
    pub(super) output: RwSignal<Option<String>>,
}

impl Layout {
    fn new(output: RwSignal<Option<String>>) -> Self {
        Self { speaker_view: RwSignal::new(false), pinned: RwSignal::new(None), output }
    }

    /// The tile shown large, if any.
    pub(super) fn featured(self, store: CallStore) -> Option<ParticipantId> {
        let present = |id: &ParticipantId| store.participants.with(|ps| ps.iter().any(|p| &p.id == id));
        if let Some(pinned) = self.pinned.get().filter(present) {
            return Some(pinned);
        }
        if !self.speaker_view.get() {
            return None;
        }
        store.speaker.get().filter(present).or_else(|| {
            store.participants.with(|ps| ps.iter().find(|p| !store.is_me(&p.id)).or(ps.first()).map(|p| p.id.clone()))
        })
    }

    /// Pins `id`, or unpins it if it is the pinned one.
    pub(super) fn toggle_pin(self, id: &ParticipantId) {
        self.pinned.update(|p| *p = if p.as_ref() == Some(id) { None } else { Some(id.clone()) });
    }
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
pub(super) fn CallView(
    code: RoomCode,
    store: CallStore,
    on_leave: Callback<()>,
    on_share: Callback<bool>,
    devices: Devices,
) -> impl IntoView {
    let waiting = move || store.me.with(|m| m.as_ref().is_some_and(|m| m.state == ParticipantState::Pending));
    let wait_code = code.clone();
    view! {
        <Show when=move || !waiting() fallback=move || view! { <Waiting code=wait_code.clone() on_leave=on_leave/> }>
            <InCall code=code.clone() store=store on_leave=on_leave on_share=on_share devices=devices/>
        </Show>
    }
}

#[component]
fn InCall(
    code: RoomCode,
    store: CallStore,
    on_leave: Callback<()>,
    on_share: Callback<bool>,
    devices: Devices,
) -> impl IntoView {
    let connection = move || store.connection.get();
    let tiles = Layout::new(devices.speaker);
    let settings_open = RwSignal::new(false);
    let cameras = RwSignal::new(Vec::<(String, String)>::new());
    let microphones = RwSignal::new(Vec::<(String, String)>::new());
    let speakers = RwSignal::new(Vec::<(String, String)>::new());
    let toggle_settings = move |_| {
        let open = !settings_open.get_untracked();
        settings_open.set(open);
        #[cfg(feature = "hydrate")]
        if open {
            store.tasks.spawn(async move {
                if let Ok(lists) = crate::browser::list_devices().await {
                    let _ = cameras.try_set(lists.cameras);
                    let _ = microphones.try_set(lists.microphones);
                    // Only where the browser can choose the output (`setSinkId`).
                    if crate::browser::can_choose_output() {
                        let _ = speakers.try_set(lists.speakers);
                    }
                }
            });
        }
    };
    let link_code = code.clone();
    let alone_code = code.clone();
    let copy_link = move |_| copy_room_link(store, &link_code);
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
    // We share our screen (the roster says so, or our capture is running).
    let sharing = move || {
        let me = my_id();
        #[cfg(feature = "hydrate")]
        let capturing = store.screen.with(Option::is_some);
        #[cfg(not(feature = "hydrate"))]
        let capturing = false;
        capturing || store.participants.with(|ps| ps.iter().any(|p| Some(&p.id) == me.as_ref() && p.screen))
    };
    let toggle_audio = move || {
        let muted = !store.audio_muted.get_untracked();
        if !muted && store.audio_locked() {
            store.toast("The host muted you. Raise your hand to ask to speak.");
            return;
        }
        // The server follows (`follow_mutes`).
        store.audio_muted.set(muted);
    };
    let toggle_video = move || store.video_muted.update(|muted| *muted = !*muted);
    let toggle_hand = move |_| {
        let up = !hand_up();
        if let Some(session) = my_session(store) {
            run_action(store, set_hand(session, up));
        }
    };
    let end_for_all = Callback::new(move |()| {
        if let Some(session) = my_session(store) {
            run_action(store, end_meeting(session));
        }
    });
    #[cfg(feature = "hydrate")]
    dismiss_toasts(store);
    // Keyboard shortcuts (shown in the buttons' tooltips): Ctrl+D the
    // microphone, Ctrl+E the camera (⌘ on a Mac).
    #[cfg(feature = "hydrate")]
    {
        let keys = window_event_listener(leptos::ev::keydown, move |ev| {
            if !(ev.ctrl_key() || ev.meta_key()) || ev.alt_key() || ev.shift_key() || ev.repeat() {
                return;
            }
            match ev.key().to_ascii_lowercase().as_str() {
                "d" => {
                    ev.prevent_default();
                    toggle_audio();
                }
                "e" => {
                    ev.prevent_default();
                    toggle_video();
                }
                _ => {}
            }
        });
        on_cleanup(move || keys.remove());
    }

    view! {
        <main class="page call" data-testid="call" on:keydown=close_panel>
            <h1 class="visually-hidden">{format!("Meeting in room {code}")}</h1>
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
                <button class="small secondary" data-testid="copy-link" on:click=copy_link>"Copy link"</button>
                <span
                    class="connection"
                    data-testid="connection-status"
                    data-state=move || connection().as_str()
                    role="status"
                >
                    {move || connection().label()}
                </span>
            </header>
            <div class="call-body" class:with-chat=move || store.chat_open.get()>
                <section
                    class=layout
                    class:speaker-view=move || tiles.speaker_view.get()
                    data-layout=move || if tiles.speaker_view.get() { "speaker" } else { "grid" }
                    aria-label="Video tiles"
                >
                    <For
                        each=move || { store.participants.get().into_iter().filter(|p| p.screen).collect::<Vec<_>>() }
                        key=|p| p.id.clone()
                        children=move |p| view! { <ScreenTile participant=p store=store/> }
                    />
                    <For
                        each=move || store.participants.get()
                        key=|p| p.id.clone()
                        children=move |p| view! { <Tile participant=p store=store layout=tiles/> }
                    />
                {move || (count() == 1).then(|| {
                    let code = alone_code.clone();
                    view! {
                        <div class="card alone" role="status" data-testid="alone-invite">
                            <span>"You are the only one here. Send the link to invite people."</span>
                            <button class="small" data-testid="alone-copy-link" on:click=move |_| copy_room_link(store, &code)>
                                "Copy link"
                            </button>
                        </div>
                    }
                })}
                </section>
                <ChatPanel store=store/>
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
            <Show when=move || settings_open.get()>
                <div class="card device-settings" role="group" aria-label="Devices" data-testid="device-settings-panel">
                    <DeviceSelect label="Camera" testid="camera-select" options=cameras chosen=devices.camera always=true/>
                    <DeviceSelect
                        label="Microphone"
                        testid="microphone-select"
                        options=microphones
                        chosen=devices.microphone
                        always=true
                    />
                    <DeviceSelect label="Speaker" testid="speaker-select" options=speakers chosen=devices.speaker always=true/>
                </div>
            </Show>
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
                    aria-keyshortcuts="Control+D"
                    title=move || {
                        if locked() {
                            "The host muted you; raise your hand to ask to speak"
                        } else if store.audio_muted.get() {
                            "Turn the microphone on (Ctrl+D)"
                        } else {
                            "Turn the microphone off (Ctrl+D)"
                        }
                    }
                    on:click=move |_| toggle_audio()
                >
                    <Icon glyph=Glyph::Microphone/>
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
                    aria-keyshortcuts="Control+E"
                    title=move || if store.video_muted.get() { "Turn the camera on (Ctrl+E)" } else { "Turn the camera off (Ctrl+E)" }
                    on:click=move |_| toggle_video()
                >
                    <Icon glyph=Glyph::Camera/>
                    {move || if store.video_muted.get() { "Start camera" } else { "Stop camera" }}
                </button>
                <button
                    data-testid="share-screen"
                    aria-pressed=move || sharing().to_string()
                    title="Share your screen, a window or a tab with everybody"
                    on:click=move |_| on_share.run(!sharing())
                >
                    <Icon glyph=Glyph::Screen/>
                    {move || if sharing() { "Stop sharing" } else { "Share screen" }}
                </button>
                <button
                    data-testid="device-settings"
                    aria-expanded=move || settings_open.get().to_string()
                    title="Choose the camera, microphone and speaker"
                    on:click=toggle_settings
                >
                    <Icon glyph=Glyph::Devices/>
                    "Devices"
                </button>
                <button
                    data-testid="layout-toggle"
                    aria-pressed=move || tiles.speaker_view.get().to_string()
                    title="Switch between the grid and speaker view"
                    on:click=move |_| tiles.speaker_view.update(|on| *on = !*on)
                >
                    <Icon glyph=Glyph::Layout/>
                    {move || if tiles.speaker_view.get() { "Grid view" } else { "Speaker view" }}
                </button>
                <button
                    data-testid="raise-hand"
                    aria-pressed=move || hand_up().to_string()
                    title="Raise your hand to ask to speak"
                    on:click=toggle_hand
                >
                    <Icon glyph=Glyph::Hand/>
                    {move || if hand_up() { "Lower hand" } else { "Raise hand" }}
                </button>
                <button
                    data-testid="chat-button"
                    aria-expanded=move || store.chat_open.get().to_string()
                    title="Messages to everybody in the call"
                    on:click=move |_| store.set_chat_open(!store.chat_open.get_untracked())
                >
                    <Icon glyph=Glyph::Chat/>
                    "Chat"
                    {move || {
                        let n = store.unread.get();
                        (n > 0).then(|| view! {
                            <span class="count" data-testid="chat-unread" aria-label=format!("{n} unread")>{n}</span>
                        })
                    }}
                </button>
                <button
                    data-testid="participants-button"
                    node_ref=people_button
                    aria-expanded=move || panel_open.get().to_string()
                    title="Who is in the call"
                    on:click=toggle_panel
                >
                    <Icon glyph=Glyph::People/>
                    {move || format!("People ({})", count())}
                    {move || {
                        let n = store.pending.with(Vec::len);
                        (n > 0).then(|| view! { <span class="count" aria-label="waiting">{n}</span> })
                    }}
                </button>
                {move || store.is_admin().then(|| view! {
                    <ConfirmButton
                        testid="end-meeting"
                        label="End for all"
                        question="End the meeting for everyone?"
                        yes="End for all"
                        class="secondary"
                        on_confirm=end_for_all
                    />
                })}
                <button class="danger" data-testid="leave-button" title="Leave the meeting" on:click=move |_| on_leave.run(())>
                    <Icon glyph=Glyph::Leave/>
                    "Leave"
                </button>
            </footer>
        </main>
    }
}

/// Copies the room's link (as the browser reached this page) and says so;
/// where the clipboard is refused, the notice shows the link to copy by hand.
fn copy_room_link(store: CallStore, code: &RoomCode) {
    #[cfg(feature = "hydrate")]
    {
        use wasm_bindgen::JsCast;
        let Some(window) = web_sys::window() else { return };
        let link = format!("{}{}", window.location().origin().unwrap_or_default(), crate::routes::room(code));
        let clipboard = js_sys::Reflect::get(&window.navigator(), &"clipboard".into()).ok();
        let write = clipboard.as_ref().and_then(|c| {
            let f = js_sys::Reflect::get(c, &"writeText".into()).ok()?.dyn_into::<js_sys::Function>().ok()?;
            f.call1(c, &link.as_str().into()).ok()?.dyn_into::<js_sys::Promise>().ok()
        });
        store.tasks.spawn(async move {
            let copied = match write {
                Some(promise) => wasm_bindgen_futures::JsFuture::from(promise).await.is_ok(),
                None => false,
            };
            store.toast(if copied { format!("Link copied: {link}") } else { format!("Copy this link: {link}") });
        });
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = (store, code);
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
