use leptos::prelude::*;

/// Shown for unknown routes and unknown room codes, with status 404.
#[component]
pub fn NotFound() -> impl IntoView {
    #[cfg(feature = "ssr")]
    if let Some(resp) = use_context::<leptos_axum::ResponseOptions>() {
        resp.set_status(http::StatusCode::NOT_FOUND);
    }
    view! {
        <main class="page narrow" data-testid="not-found">
            <h1>"Not found"</h1>
            <p>"There is no room at this address. It may have never existed, or the code has a typo."</p>
            <a class="button" href="/">"Back to the lobby"</a>
        </main>
    }
}
