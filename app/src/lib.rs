#![recursion_limit = "256"]
// Library code: no panics on what may fail at run time (tests, in
// `#[cfg(test)]`, may; see clippy.toml), no `pub` that nothing outside sees.
#![warn(clippy::unwrap_used, clippy::expect_used, unreachable_pub, missing_docs)]
//! Cleanroom's shared Leptos code.
//!
//! Compiled twice: with `ssr` into the server (rendering, server functions)
//! and with `hydrate` into the browser's WASM. Never both.
//!
//! Layout:
//! - [`model`]: ids (newtypes), views sent to the browser, validation rules.
//! - [`error`]: the errors a person can see.
//! - [`signal`](mod@signal): the signalling wire protocol (WebSocket messages).
//! - [`routes`]: the HTTP paths both sides use.
//! - [`ports`] (`ssr`): the domain port the server implements.
//! - [`api`]: server functions, thin adapters onto the port.
//! - [`call`]: the call store, reset by one function.
//! - `browser` (`hydrate`): socket, beacon and media owners that release in `Drop`.
//! - [`pages`]: lobby, room, not-found.

// The `#[server]` macro turns each function's arguments into the fields of
// a generated struct, which cannot carry doc comments; the functions are
// documented.
#[allow(missing_docs)]
pub mod api;
#[cfg(feature = "hydrate")]
pub mod browser;
pub mod call;
pub mod error;
pub mod model;
pub mod pages;
#[cfg(feature = "ssr")]
pub mod ports;
pub mod routes;
pub mod signal;
pub mod tasks;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, HashedStylesheet, MetaTags, Title};
use leptos_router::components::{Route, Router, Routes};
use leptos_router::{path, SsrMode};

use pages::{lobby::Lobby, not_found::NotFound, room::RoomPage};

/// The page's Content-Security-Policy: scripts from this origin, or inline
/// with this response's `nonce` (Leptos puts it on every inline script it
/// renders); WebAssembly may compile; styles, images and connections only
/// from this origin; no plug-ins, no `<base>`, and no framing (which also
/// keeps the host's buttons from being clickjacked).
pub fn content_security_policy(nonce: &str) -> String {
    format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; style-src 'self'; \
         img-src 'self' data: blob:; media-src 'self' blob: mediastream:; connect-src 'self'; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// The HTML document the server renders around [`App`].
pub fn shell(options: LeptosOptions) -> impl IntoView {
    #[cfg(feature = "ssr")]
    if let (Some(response), Some(nonce)) = (use_context::<leptos_axum::ResponseOptions>(), leptos::nonce::use_nonce()) {
        if let Ok(policy) = http::HeaderValue::from_str(&content_security_policy(&nonce)) {
            response.insert_header(http::header::CONTENT_SECURITY_POLICY, policy);
        }
    }
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <AutoReload options=options.clone()/>
                <HashedStylesheet options=options.clone() id="leptos"/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// The application's routes.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    // Marks the document once the WASM has taken over (tests and tools wait for it).
    #[cfg(feature = "hydrate")]
    Effect::new(|_| {
        if let Some(body) = web_sys::window().and_then(|w| w.document()).and_then(|d| d.body()) {
            let _ = body.set_attribute("data-hydrated", "true");
        }
    });
    view! {
        <Title text="Cleanroom"/>
        <leptos_meta::Link rel="icon" href="/favicon.svg" type_="image/svg+xml"/>
        <Router>
            <Routes fallback=|| view! { <NotFound/> }>
                <Route path=path!("/") view=Lobby/>
                <Route path=path!("/r/:code") view=RoomPage ssr=SsrMode::Async/>
            </Routes>
        </Router>
    }
}
