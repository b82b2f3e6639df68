//! Browser-only pieces of the call (feature `hydrate`): the signalling
//! socket, the peer connection, the leave beacon and camera/microphone
//! streams. Each owner releases what it holds in `Drop`, so dropping the
//! value is the cleanup; [`Call`] owns them all.

pub mod peer;

use std::rc::Rc;

use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{CloseEvent, Event, MediaStream, MediaStreamConstraints, MediaStreamTrack, MessageEvent, WebSocket};

use leptos::prelude::{GetUntracked, Set};

use crate::call::{CallStore, ConnectionState};
use crate::model::{RoomCode, SessionId};
use crate::signal::{ClientMsg, ServerMsg, HEARTBEAT_INTERVAL_MS};

/// Where `navigator.sendBeacon` posts a leave.
pub const LEAVE_BEACON_PATH: &str = "/api/beacon/leave";

fn window() -> Result<web_sys::Window, JsValue> {
    web_sys::window().ok_or_else(|| JsValue::from_str("no window"))
}

/// The room's signalling socket with its handlers and heartbeat, and the
/// peer connection it negotiates.
pub struct Connection {
    ws: WebSocket,
    peer: Option<Rc<peer::Peer>>,
    heartbeat: Option<i32>,
    _on_open: Closure<dyn FnMut()>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
    _tick: Closure<dyn FnMut()>,
}

impl Connection {
    pub fn open(
        code: &RoomCode,
        session: &SessionId,
        store: CallStore,
        local: Option<MediaStream>,
    ) -> Result<Self, JsValue> {
        let window = window()?;
        let location = window.location();
        let scheme = if location.protocol()? == "https:" { "wss" } else { "ws" };
        let url = format!("{scheme}://{}/ws/{code}?session={session}", location.host()?);
        let ws = WebSocket::new(&url)?;
        store.connection.set(ConnectionState::Connecting);
        let peer = match peer::Peer::new(ws.clone(), local, store) {
            Ok(p) => Some(p),
            Err(e) => {
                leptos::logging::warn!("no media connection: {e:?}");
                None
            }
        };
        let media = peer.clone();

        let on_open = Closure::<dyn FnMut()>::new(move || {
            let _ = store.connection.try_set(ConnectionState::Connected);
        });
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
            let Some(text) = ev.data().as_string() else { return };
            match serde_json::from_str::<ServerMsg>(&text) {
                Ok(msg @ (ServerMsg::Offer { .. } | ServerMsg::IceCandidate { .. })) => {
                    if let Some(peer) = &media {
                        peer.handle(msg);
                    }
                }
                Ok(msg) => {
                    store.apply(msg);
                    peer::Peer::prune(store);
                }
                Err(e) => leptos::logging::warn!("ignoring a malformed signalling message: {e}"),
            }
        });
        let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |_ev: CloseEvent| {
            let _ = store.connection.try_set(ConnectionState::Disconnected);
        });
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));

        let ping = serde_json::to_string(&ClientMsg::Ping).unwrap_or_default();
        let socket = ws.clone();
        let tick = Closure::<dyn FnMut()>::new(move || {
            if socket.ready_state() == WebSocket::OPEN {
                let _ = socket.send_with_str(&ping);
            }
        });
        let heartbeat = window
            .set_interval_with_callback_and_timeout_and_arguments_0(
                tick.as_ref().unchecked_ref(),
                HEARTBEAT_INTERVAL_MS as i32,
            )
            .ok();
        Ok(Self { ws, peer, heartbeat, _on_open: on_open, _on_message: on_message, _on_close: on_close, _tick: tick })
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let (Ok(w), Some(id)) = (window(), self.heartbeat) {
            w.clear_interval_with_handle(id);
        }
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        let _ = self.ws.close_with_code_and_reason(1000, "leave");
        if let Some(peer) = self.peer.take() {
            peer.close();
        }
    }
}

/// Everything the page holds for one call: socket, peer connection, own
/// camera and microphone, the pagehide beacon. Dropping it releases all of
/// it; [`CallStore::reset`] clears the state that pointed at it.
pub struct Call {
    connection: Option<Connection>,
    local: Option<MediaStream>,
    _pagehide: Option<PageHideGuard>,
}

impl Call {
    pub fn start(code: &RoomCode, session: &SessionId, store: CallStore, local: Option<MediaStream>) -> Self {
        let connection = match Connection::open(code, session, store, local.clone()) {
            Ok(c) => Some(c),
            Err(e) => {
                leptos::logging::warn!("signalling socket not opened: {e:?}");
                store.connection.set(ConnectionState::Disconnected);
                None
            }
        };
        Self { connection, local, _pagehide: PageHideGuard::install(store) }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        drop(self.connection.take());
        if let Some(local) = self.local.take() {
            stop_stream(&local);
        }
    }
}

/// Sends the leave for `session` in a way that survives the page going away.
pub fn send_leave_beacon(session: &SessionId) -> bool {
    let body = format!("session={session}");
    window().and_then(|w| w.navigator().send_beacon_with_opt_str(LEAVE_BEACON_PATH, Some(&body))).unwrap_or(false)
}

/// While alive, a `pagehide` (tab or window closed, refresh, another site)
/// sends the leave beacon for the store's session.
pub struct PageHideGuard {
    callback: Closure<dyn FnMut(Event)>,
}

impl PageHideGuard {
    pub fn install(store: CallStore) -> Option<Self> {
        let callback = Closure::<dyn FnMut(Event)>::new(move |_ev: Event| {
            if let Some(me) = store.me.try_get_untracked().flatten() {
                send_leave_beacon(&me.session_id);
            }
        });
        window().ok()?.add_event_listener_with_callback("pagehide", callback.as_ref().unchecked_ref()).ok()?;
        Some(Self { callback })
    }
}

impl Drop for PageHideGuard {
    fn drop(&mut self) {
        if let Ok(w) = window() {
            let _ = w.remove_event_listener_with_callback("pagehide", self.callback.as_ref().unchecked_ref());
        }
    }
}

/// Asks for the camera and microphone.
pub async fn open_camera_and_microphone() -> Result<MediaStream, JsValue> {
    let devices = window()?.navigator().media_devices()?;
    let constraints = MediaStreamConstraints::new();
    constraints.set_audio(&JsValue::TRUE);
    constraints.set_video(&JsValue::TRUE);
    let stream = JsFuture::from(devices.get_user_media_with_constraints(&constraints)?).await?;
    stream.dyn_into::<MediaStream>()
}

/// Stops every track of `stream` (the camera light goes out).
pub fn stop_stream(stream: &MediaStream) {
    for track in stream.get_tracks().iter() {
        if let Ok(track) = track.dyn_into::<MediaStreamTrack>() {
            track.stop();
        }
    }
}
