//! The screen before joining: name, camera and microphone, a preview, Join.

use super::*;

/// The screen before joining: name, camera/microphone preview, Join.
#[component]
pub(super) fn Prejoin(
    code: RoomCode,
    private: bool,
    remembered_name: String,
    joining: Signal<bool>,
    error: Signal<Option<String>>,
    notice: Signal<Option<String>>,
    lost: Signal<bool>,
    rejoining: Signal<bool>,
    camera: RwSignal<Option<String>>,
    microphone: RwSignal<Option<String>>,
    camera_on: RwSignal<bool>,
    microphone_on: RwSignal<bool>,
    on_join: Callback<String>,
) -> impl IntoView {
    let name = RwSignal::new(remembered_name.clone());
    let video = NodeRef::<leptos::html::Video>::new();
    let preview_note = RwSignal::new(None::<String>);
    // Off a secure context the browser offers no camera or microphone at all.
    let insecure = RwSignal::new(false);
    // Filled once the browser lists the devices (after permission).
    let cameras = RwSignal::new(Vec::<(String, String)>::new());
    let microphones = RwSignal::new(Vec::<(String, String)>::new());
    #[cfg(feature = "hydrate")]
    crate::browser::preview::start(
        crate::browser::preview::Shown { video, note: preview_note, insecure, cameras, microphones },
        crate::browser::preview::Wanted { camera, microphone, camera_on, microphone_on },
    );
    #[cfg(not(feature = "hydrate"))]
    let _ = (preview_note, insecure);

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
            {move || rejoining.get().then(|| view! {
                <p class="connection" data-testid="connection-status" data-state="reconnecting" role="status">
                    "Reconnecting…"
                </p>
            })}
            <div class="prejoin-grid">
                <div class="preview">
                    <video node_ref=video autoplay=true muted=true playsinline=true aria-label="Your camera preview"></video>
                    {move || if insecure.get() {
                        view! {
                            <p class="preview-note form-error" data-testid="secure-context-error" role="alert">
                                {preview_note.get()}
                            </p>
                        }.into_any()
                    } else {
                        view! { <p class="preview-note" data-testid="device-note">{preview_note.get()}</p> }.into_any()
                    }}
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
                    <div class="prejoin-toggles" role="group" aria-label="Join with">
                        <button
                            type="button"
                            data-testid="prejoin-microphone"
                            class:off=move || !microphone_on.get()
                            aria-pressed=move || (!microphone_on.get()).to_string()
                            on:click=move |_| microphone_on.update(|on| *on = !*on)
                        >
                            {move || if microphone_on.get() { "Microphone on" } else { "Microphone off" }}
                        </button>
                        <button
                            type="button"
                            data-testid="prejoin-camera"
                            class:off=move || !camera_on.get()
                            aria-pressed=move || (!camera_on.get()).to_string()
                            on:click=move |_| camera_on.update(|on| *on = !*on)
                        >
                            {move || if camera_on.get() { "Camera on" } else { "Camera off" }}
                        </button>
                    </div>
                    {move || (!camera_on.get()).then(|| view! {
                        <p class="hint" data-testid="camera-off-note">"You will join with your camera off."</p>
                    })}
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

/// A device picker, shown once the browser has listed more than one
/// device of the kind (`always`: once it listed any).
#[component]
pub(super) fn DeviceSelect(
    label: &'static str,
    testid: &'static str,
    options: RwSignal<Vec<(String, String)>>,
    chosen: RwSignal<Option<String>>,
    #[prop(optional)] always: bool,
) -> impl IntoView {
    let least = if always { 1 } else { 2 };
    view! {
        <Show when=move || options.with(|o| o.len() >= least)>
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
