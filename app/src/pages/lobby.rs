use leptos::form::ActionForm;
use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

use crate::api::{CreateRoom, GoToRoom};
use crate::model::RoomCode;
use crate::routes;

/// `/`: create a room or join one by code. Works without WASM too (plain
/// form posts that redirect).
#[component]
pub fn Lobby() -> impl IntoView {
    let create = ServerAction::<CreateRoom>::new();
    let join = ServerAction::<GoToRoom>::new();
    let create_error = move || create.value().get().and_then(Result::err).map(|e| e.to_string());
    let join_error = move || join.value().get().and_then(Result::err).map(|e| e.to_string());
    // `/?left=code`: the person just left that room (the Leave button).
    let query = use_query_map();
    let left = move || query.read().get("left").and_then(|c| RoomCode::parse(&c).ok());
    // This browser's recent rooms, read once the page runs in the browser
    // (the server knows nothing of them).
    let recent = RwSignal::new(Vec::<RoomCode>::new());
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| recent.set(crate::browser::recent_rooms()));

    view! {
        <main class="page lobby">
            <header class="brand">
                <h1>"Cleanroom"</h1>
                <p class="tagline">"Video meetings that leave nothing behind."</p>
            </header>
            {move || left().map(|code| view! {
                <div class="notice left-notice" role="status" data-testid="left-notice">
                    <span>"You left the meeting in room " <code>{code.to_string()}</code> "."</span>
                    <a class="button" data-testid="rejoin" href=routes::room(&code)>"Rejoin"</a>
                </div>
            })}
            <div class="cards">
                <section class="card" aria-labelledby="create-title">
                    <h2 id="create-title">"Start a meeting"</h2>
                    <ActionForm action=create>
                        <label for="display-name">"Your name"</label>
                        <input
                            id="display-name"
                            data-testid="display-name"
                            name="display_name"
                            autocomplete="nickname"
                            placeholder="e.g. Ada"
                        />
                        <label class="check">
                            <input type="checkbox" data-testid="room-private" name="private" value="on"/>
                            " Private room: I admit who joins"
                        </label>
                        <label class="check">
                            <input type="checkbox" data-testid="room-host-unmutes" name="host_unmutes" value="on"/>
                            " People I mute wait for me to let them speak"
                        </label>
                        <button type="submit" data-testid="create-room" disabled=move || create.pending().get()>
                            {move || if create.pending().get() { "Creating…" } else { "Create room" }}
                        </button>
                        <p class="form-error" role="alert" data-testid="create-error">{create_error}</p>
                    </ActionForm>
                </section>
                <section class="card" aria-labelledby="join-title">
                    <h2 id="join-title">"Join a meeting"</h2>
                    <ActionForm action=join>
                        <label for="join-code">"Room code"</label>
                        <input
                            id="join-code"
                            data-testid="join-code"
                            name="code"
                            placeholder="abc-defg-hij"
                            autocomplete="off"
                        />
                        <button type="submit" data-testid="join-room" disabled=move || join.pending().get()>
                            "Join"
                        </button>
                        <p class="form-error" role="alert" data-testid="join-error">{join_error}</p>
                    </ActionForm>
                    <Show when=move || recent.with(|r| !r.is_empty())>
                        <h3 id="recent-title">"Recent rooms on this browser"</h3>
                        <ul class="recent-rooms" aria-labelledby="recent-title" data-testid="recent-rooms">
                            <For
                                each=move || recent.get()
                                key=|c| c.clone()
                                children=|c| view! {
                                    <li>
                                        <a data-testid="recent-room" href=routes::room(&c)><code>{c.to_string()}</code></a>
                                    </li>
                                }
                            />
                        </ul>
                    </Show>
                </section>
            </div>
        </main>
    }
}
