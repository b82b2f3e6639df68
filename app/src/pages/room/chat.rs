//! The chat panel: the room's messages and a box to write one. Enter
//! sends, Shift+Enter starts a new line; a message over the limit is
//! refused here with the reason and stays in the box (nothing is lost).

use crate::api::send_chat;
use crate::model::{validate_chat, ChatMessage, MAX_CHAT_CHARS};

use super::*;

/// `(HH:MM in the viewer's time zone, ISO 8601 for `<time datetime>`)`.
/// Messages are only ever rendered in the browser (the server renders the
/// panel empty), so the server has nothing to format.
fn when(ms: i64) -> (String, String) {
    #[cfg(feature = "hydrate")]
    {
        let d = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ms as f64));
        (format!("{:02}:{:02}", d.get_hours(), d.get_minutes()), String::from(d.to_iso_string()))
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = ms;
        (String::new(), String::new())
    }
}

/// One message: who, when, what (text only; Leptos escapes it).
#[component]
fn Message(message: ChatMessage, mine: bool) -> impl IntoView {
    let (at, iso) = when(message.sent_at_ms);
    view! {
        <li class="chat-message" class:mine=mine data-testid="chat-message" data-participant-id=message.from.to_string()>
            <div class="chat-meta">
                <span class="chat-name" data-testid="chat-name">{if mine { "You".to_owned() } else { message.name }}</span>
                <time datetime=iso data-testid="chat-time">{at}</time>
            </div>
            <p class="chat-text" data-testid="chat-text">{message.text}</p>
        </li>
    }
}

/// The chat panel (`chat-panel`), shown while `store.chat_open`.
#[component]
pub(super) fn ChatPanel(store: CallStore) -> impl IntoView {
    let draft = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let sending = RwSignal::new(false);
    let list = NodeRef::<leptos::html::Ol>::new();
    let input = NodeRef::<leptos::html::Textarea>::new();
    let length = move || draft.with(|d| d.trim().chars().count());

    let send = move || {
        if sending.get_untracked() {
            return;
        }
        let text = match validate_chat(&draft.get_untracked()) {
            Ok(text) => text,
            Err(e) => {
                error.set(Some(e.to_string()));
                return;
            }
        };
        let Some(session) = my_session(store) else { return };
        error.set(None);
        sending.set(true);
        store.tasks.spawn(async move {
            match send_chat(session, text).await {
                // Sent: the box empties (the message comes back over the socket).
                Ok(()) => {
                    let _ = draft.try_set(String::new());
                }
                Err(e) => {
                    let _ = error.try_set(Some(e.to_string()));
                }
            }
            let _ = sending.try_set(false);
            if let Some(input) = input.get_untracked() {
                let _ = input.focus();
            }
        });
    };
    let on_key = move |ev: leptos::ev::KeyboardEvent| {
        if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() {
            ev.prevent_default();
            send();
        }
    };
    // Newest in view: scroll down when a message arrives.
    Effect::new(move |_| {
        store.chat.track();
        request_animation_frame(move || {
            if let Some(list) = list.get_untracked() {
                list.set_scroll_top(list.scroll_height());
            }
        });
    });
    // Opened: the box takes the focus.
    Effect::new(move |_| {
        if store.chat_open.get() {
            request_animation_frame(move || {
                if let Some(input) = input.get_untracked() {
                    let _ = input.focus();
                }
            });
        }
    });

    view! {
        <aside
            class="chat-panel"
            class:open=move || store.chat_open.get()
            aria-label="Chat"
            data-testid="chat-panel"
            hidden=move || !store.chat_open.get()
        >
            <div class="chat-head">
                <h2>"Chat"</h2>
                <button class="small secondary" data-testid="chat-close" on:click=move |_| store.set_chat_open(false)>
                    "Close"
                </button>
            </div>
            <ol class="chat-list" node_ref=list aria-live="polite" data-testid="chat-list">
                <For
                    each=move || store.chat.get()
                    key=|m| m.id.clone()
                    children=move |m| {
                        let mine = store.is_me(&m.from);
                        view! { <Message message=m mine=mine/> }
                    }
                />
            </ol>
            {move || store.chat.with(Vec::is_empty).then(|| view! {
                <p class="hint">"Messages are seen by everybody in the call and deleted when the room closes."</p>
            })}
            <form class="chat-form" on:submit=move |ev| {
                ev.prevent_default();
                send();
            }>
                <label class="visually-hidden" for="chat-input">"Message"</label>
                <textarea
                    id="chat-input"
                    data-testid="chat-input"
                    node_ref=input
                    rows="2"
                    placeholder="Message everyone (Enter sends, Shift+Enter: new line)"
                    aria-invalid=move || error.with(Option::is_some).to_string()
                    aria-describedby="chat-error chat-count"
                    prop:value=move || draft.get()
                    on:input=move |ev| {
                        draft.set(event_target_value(&ev));
                        if error.with_untracked(Option::is_some) {
                            error.set(None);
                        }
                    }
                    on:keydown=on_key
                ></textarea>
                <div class="chat-row">
                    <span id="chat-count" class="chat-count" class:over=move || { length() > MAX_CHAT_CHARS }>
                        {move || format!("{} / {}", length(), MAX_CHAT_CHARS)}
                    </span>
                    <button type="submit" data-testid="chat-send" disabled=move || sending.get()>"Send"</button>
                </div>
                <p id="chat-error" class="form-error" role="alert" data-testid="chat-error">
                    {move || error.get().unwrap_or_default()}
                </p>
            </form>
        </aside>
    }
}
