//! The leave as the page sends it: the Leave button's request (started at
//! once, `keepalive`), the beacon, and the `pagehide` guard that sends both
//! ways when the page goes away.

use std::rc::Rc;

use leptos::prelude::GetUntracked;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::Event;

use super::{window, SocketSlot};
use crate::call::CallStore;
use crate::model::SessionId;
use crate::signal::close_code;

/// Where the Leave button's leave goes: the `leave_room` server function.
const LEAVE_PATH: &str = <crate::api::LeaveRoom as leptos::server_fn::ServerFn>::PATH;

/// Starts the Leave button's leave at once: `fetch` is called here, not when
/// a future is first polled, so the request is on its way before the page
/// tears the call down and re-renders (which takes hundreds of milliseconds
/// in a slow tab). `keepalive` lets it outlive a navigation. The returned
/// future tells whether the server confirmed it.
pub fn send_leave(session: &SessionId) -> Result<impl std::future::Future<Output = Result<(), String>>, JsValue> {
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    // `keepalive` is not in web-sys's stable dictionary API; it is a plain field.
    js_sys::Reflect::set(&init, &JsValue::from_str("keepalive"), &JsValue::TRUE)?;
    init.set_credentials(web_sys::RequestCredentials::SameOrigin);
    let headers = web_sys::Headers::new()?;
    headers.set("Content-Type", "application/x-www-form-urlencoded")?;
    headers.set("Accept", "application/json")?;
    init.set_headers(&headers);
    init.set_body(&JsValue::from_str(&format!("session_id={session}")));
    let pending = window()?.fetch_with_str_and_init(LEAVE_PATH, &init);
    Ok(async move {
        let response: web_sys::Response =
            JsFuture::from(pending).await.and_then(|r| r.dyn_into()).map_err(|e| format!("{e:?}"))?;
        if response.ok() {
            Ok(())
        } else {
            let body = match response.text() {
                Ok(text) => JsFuture::from(text).await.ok().and_then(|t| t.as_string()).unwrap_or_default(),
                Err(_) => String::new(),
            };
            Err(format!("{} {body}", response.status()))
        }
    })
}

/// Sends the leave for `session` in a way that survives the page going away.
pub fn send_leave_beacon(session: &SessionId) -> bool {
    let body = format!("session={session}");
    window()
        .and_then(|w| w.navigator().send_beacon_with_opt_str(crate::routes::LEAVE_BEACON, Some(&body)))
        .unwrap_or(false)
}

/// While alive, a `pagehide` (tab or window closed, refresh, another site)
/// sends the leave for the store's session twice over: as a close frame on
/// the open signalling socket ([`close_code::LEAVING`]; first to arrive) and
/// as the leave beacon (which works without a socket).
pub struct PageHideGuard {
    callback: Closure<dyn FnMut(Event)>,
    socket: Rc<std::cell::RefCell<Option<SocketSlot>>>,
}

impl std::fmt::Debug for PageHideGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageHideGuard").finish_non_exhaustive()
    }
}

impl PageHideGuard {
    /// Listens for `pagehide` until dropped (`None`: no window to listen on).
    pub fn install(store: CallStore) -> Option<Self> {
        let socket: Rc<std::cell::RefCell<Option<SocketSlot>>> = Rc::default();
        let watched = socket.clone();
        let callback = Closure::<dyn FnMut(Event)>::new(move |_ev: Event| {
            if let Some(me) = store.me.try_get_untracked().flatten() {
                if let Some(ws) = watched.borrow().as_ref().and_then(|slot| slot.borrow().clone()) {
                    let _ = ws.close_with_code_and_reason(close_code::LEAVING, "page hidden");
                }
                send_leave_beacon(&me.session_id);
            }
        });
        window().ok()?.add_event_listener_with_callback("pagehide", callback.as_ref().unchecked_ref()).ok()?;
        Some(Self { callback, socket })
    }

    /// The signalling socket in use from now on (see [`Link`]).
    pub(super) fn watch(&self, slot: SocketSlot) {
        *self.socket.borrow_mut() = Some(slot);
    }
}

impl Drop for PageHideGuard {
    fn drop(&mut self) {
        if let Ok(w) = window() {
            let _ = w.remove_event_listener_with_callback("pagehide", self.callback.as_ref().unchecked_ref());
        }
    }
}
