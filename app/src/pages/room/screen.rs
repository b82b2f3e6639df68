//! Screen shares: the tile each share is shown in (to everybody, the
//! sharer included), larger than the camera tiles; the admin's "Stop share"
//! on others' shares.

use super::*;

/// A participant's screen share (`screen-tile`). The `<video>` takes the
/// share's stream (`{id}.screen`, or our own capture) and is given a new
/// one only when it changes.
#[component]
pub(super) fn ScreenTile(participant: ParticipantView, store: CallStore) -> impl IntoView {
    let me = store.is_me(&participant.id);
    let video = NodeRef::<leptos::html::Video>::new();
    #[cfg(feature = "hydrate")]
    {
        let id = format!("{}.{}", participant.id, crate::model::SCREEN_STREAM_SUFFIX);
        let stream =
            Memo::new(move |_| if me { store.screen.get() } else { store.streams.with(|m| m.get(&id).cloned()) });
        super::tile::play(video, stream);
    }
    let name = participant.name.clone();
    let target = participant.id.to_string();
    view! {
        <div class="tile screen-tile" data-testid="screen-tile" data-participant-id=participant.id.to_string() data-self=me.to_string()>
            <video node_ref=video autoplay=true playsinline=true muted=true aria-label=format!("Screen shared by {name}")></video>
            <span class="tile-name">{if me { "Your screen".to_owned() } else { format!("{name}'s screen") }}</span>
            {move || (store.is_admin() && !me).then(|| {
                let target = target.clone();
                view! {
                    <span class="tile-actions">
                        <button
                            class="small danger"
                            data-testid="stop-share"
                            aria-label=format!("Stop share: {}", participant.name)
                            on:click=move |_| if let Some(s) = my_session(store) {
                                run_action(store, stop_screen(s, target.clone()));
                            }
                        >"Stop share"</button>
                    </span>
                }
            })}
        </div>
    }
}
