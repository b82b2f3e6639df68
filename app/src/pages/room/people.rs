//! The participant list and the requests waiting for the admin.

use super::*;

/// Requests to join, for the admin.
#[component]
pub(super) fn Pending(store: CallStore) -> impl IntoView {
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
                                    aria-label=format!("Admit {}", p.name)
                                    on:click=move |_| if let Some(s) = my_session(store) {
                                        run_action(store, admit(s, yes.clone(), true));
                                    }
                                >"Admit"</button>
                                <button
                                    class="secondary"
                                    data-testid="deny"
                                    aria-label=format!("Deny {}", p.name)
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
pub(super) fn ParticipantRow(participant: ParticipantView, store: CallStore) -> impl IntoView {
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
                let on_confirm = Callback::new(move |()| {
                    if let Some(s) = my_session(store) {
                        run_action(store, make_admin(s, target.clone()));
                    }
                });
                view! {
                    <ConfirmButton
                        testid="make-admin"
                        label="Make host"
                        aria_label=format!("Make host: {name}")
                        question=format!("Make {name} the host? You will no longer be the host.")
                        yes="Make host"
                        class="small secondary"
                        on_confirm=on_confirm
                    />
                }
            })}
        </li>
    }
}
