//! Asking before an action that cannot be taken back ("End for all",
//! "Make host"): the first click asks, the second (on `confirm-yes`) acts.

use super::*;

/// A button whose action runs only once the person confirms it. `testid`
/// is the button's hook; the question shows in a `confirm-dialog` with
/// `confirm-yes` and `confirm-no`.
#[component]
pub(super) fn ConfirmButton(
    /// The button's hook (`data-testid`).
    testid: &'static str,
    /// The button's text.
    label: &'static str,
    /// Its accessible name, when the text alone is not enough.
    #[prop(optional, into)]
    aria_label: Option<String>,
    /// The question asked.
    #[prop(into)]
    question: String,
    /// The confirming button's text.
    yes: &'static str,
    /// The button's classes.
    class: &'static str,
    /// What happens once confirmed.
    on_confirm: Callback<()>,
) -> impl IntoView {
    let asking = RwSignal::new(false);
    let yes_button = NodeRef::<leptos::html::Button>::new();
    let ask = move |_| {
        asking.set(true);
        request_animation_frame(move || {
            if let Some(b) = yes_button.get_untracked() {
                let _ = b.focus();
            }
        });
    };
    let on_key = move |ev: leptos::ev::KeyboardEvent| {
        if ev.key() == "Escape" {
            ev.stop_propagation();
            asking.set(false);
        }
    };
    view! {
        <span class="confirm">
            <button class=class data-testid=testid aria-label=aria_label aria-expanded=move || asking.get().to_string() on:click=ask>
                {label}
            </button>
            <Show when=move || asking.get()>
                <span class="confirm-dialog" role="alertdialog" aria-label=question.clone() data-testid="confirm-dialog" on:keydown=on_key>
                    <span>{question.clone()}</span>
                    <button
                        class="small danger"
                        data-testid="confirm-yes"
                        node_ref=yes_button
                        on:click=move |_| {
                            asking.set(false);
                            on_confirm.run(());
                        }
                    >
                        {yes}
                    </button>
                    <button class="small secondary" data-testid="confirm-no" on:click=move |_| asking.set(false)>
                        "Cancel"
                    </button>
                </span>
            </Show>
        </span>
    }
}
