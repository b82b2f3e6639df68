//! The hydrate entry point of Cleanroom: nothing but the call that makes the
//! server-rendered body interactive. Everything else lives in the `app` crate.
// Release builds keep every view's full type (debug builds erase them); the
// room page's nested views need more than the default 128 levels.
#![recursion_limit = "256"]

#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
}
