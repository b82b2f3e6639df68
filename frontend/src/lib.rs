//! The hydrate entry point of Cleanroom: nothing but the call that makes the
//! server-rendered body interactive. Everything else lives in the `app` crate.

#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
}
