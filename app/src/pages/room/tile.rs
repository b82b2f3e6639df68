//! One participant's tile: video, name and badges.

use super::*;

/// One participant's tile: video, name and badges (muted, hand,
/// speaking, reconnecting); the admin's kick and mute buttons on others'
/// tiles. The `<video>` shows the remote stream filed under the
/// participant's id (or our own camera), and lets go of it when the tile
/// unmounts.
#[component]
pub(super) fn Tile(participant: ParticipantView, store: CallStore, layout: Layout) -> impl IntoView {
    let me = store.is_me(&participant.id);
    let featured_id = participant.id.clone();
    let featured = Memo::new(move |_| layout.featured(store).as_ref() == Some(&featured_id));
    let pin_id = participant.id.clone();
    let pinned = Memo::new(move |_| layout.pinned.with(|p| p.as_ref() == Some(&pin_id)));
    let video = NodeRef::<leptos::html::Video>::new();
    let view_id = participant.id.clone();
    let current = Memo::new(move |_| store.participants.with(|ps| ps.iter().find(|p| p.id == view_id).cloned()));
    let presence = move || current.with(|p| p.as_ref().map_or("connected", |p| p.presence.as_str()));
    let audio_off = move || current.with(|p| p.as_ref().is_some_and(|p| p.audio_muted));
    let audio_locked = move || current.with(|p| p.as_ref().is_some_and(|p| p.audio_locked));
    let video_off = move || current.with(|p| p.as_ref().is_some_and(|p| p.video_muted));
    let paused_id = participant.id.to_string();
    let paused = Memo::new(move |_| store.paused_video.with(|s| s.contains(&paused_id)));
    let speaking_id = participant.id.clone();
    let speaking = Memo::new(move |_| store.speaker.with(|s| s.as_ref() == Some(&speaking_id)));
    let hand_id = participant.id.clone();
    let hand = Memo::new(move |_| store.hands.with(|h| h.iter().position(|x| x == &hand_id)).map(|i| i + 1));
    #[cfg(feature = "hydrate")]
    {
        let id = participant.id.to_string();
        // This tile's own stream only: the effect below reruns when it is
        // another stream, not whenever any entry of the map changes.
        let stream =
            Memo::new(move |_| if me { store.local.get() } else { store.streams.with(|m| m.get(&id).cloned()) });
        play(video, stream);
        // Remote sound plays on the chosen output.
        Effect::new(move |_| {
            let output = layout.output.get();
            if let (false, Some(device), Some(v)) = (me, output, video.get()) {
                if !crate::browser::set_output(&v, &device) {
                    leptos::logging::warn!("sound output {device} not set");
                }
            }
        });
    }
    // On the server the output is only passed along.
    #[cfg(not(feature = "hydrate"))]
    let _ = layout.output;
    let name = participant.name.clone();
    let (kick_id, mute_id) = (participant.id.to_string(), participant.id.to_string());
    let initial = name.chars().next().map(|c| c.to_uppercase().to_string()).unwrap_or_default();
    view! {
        <div
            class="tile"
            class:speaking=speaking
            class:camera-off=video_off
            class:featured=featured
            data-featured=move || featured.get().to_string()
            data-testid="participant-tile"
            data-participant-id=participant.id.to_string()
            data-self=me.to_string()
            data-state=presence
            data-speaking=move || speaking.get().to_string()
            data-hand=move || hand.get().is_some().to_string()
            data-video=move || if paused.get() { "paused" } else { "playing" }
        >
            <video node_ref=video autoplay=true playsinline=true muted=me aria-label=format!("Video of {name}")></video>
            <span class="avatar" aria-hidden="true"><span>{initial}</span></span>
            <span class="tile-name">
                {participant.name.clone()}{me.then_some(" (you)")}
                {move || audio_off().then(|| view! { <span class="badge" title="Microphone off">" · muted"</span> })}
            </span>
            {move || hand.get().map(|n| view! { <span class="hand-badge" title="Hand raised">{format!("Hand {n}")}</span> })}
            {move || paused.get().then(|| view! {
                <span class="video-paused" data-testid="video-paused" role="status">
                    "Video paused: your connection is too slow for it"
                </span>
            })}
            <button
                class="small secondary tile-pin"
                data-testid="pin"
                aria-pressed=move || pinned.get().to_string()
                aria-label={
                    let name = participant.name.clone();
                    move || format!("{} {name}", if pinned.get() { "Unpin" } else { "Pin" })
                }
                on:click={
                    let id = participant.id.clone();
                    move |_| layout.toggle_pin(&id)
                }
            >
                {move || if pinned.get() { "Unpin" } else { "Pin" }}
            </button>
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
                                        aria-label=format!("Let speak: {allow_name}")
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

/// Plays `stream` in `video`, and lets go of it when the owner unmounts.
/// The element is given a stream only when it is another one: assigning a
/// stream again, even the same one, reloads the element (the picture
/// restarts).
#[cfg(feature = "hydrate")]
pub(super) fn play(video: NodeRef<leptos::html::Video>, stream: Memo<Option<web_sys::MediaStream>>) {
    Effect::new(move |_| {
        let stream = stream.get();
        if let Some(v) = video.get() {
            if v.src_object() != stream {
                v.set_src_object(stream.as_ref());
            }
        }
    });
    on_cleanup(move || {
        if let Some(v) = video.get_untracked() {
            v.set_src_object(None);
        }
    });
}
