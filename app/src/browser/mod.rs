//! Browser-only pieces of the call (feature `hydrate`): the signalling
//! socket, the peer connection, the leave beacon and camera/microphone
//! streams. Each owner releases what it holds in `Drop`, so dropping the
//! value is the cleanup; [`Call`] owns them all.

mod devices;
mod leave;
pub mod peer;
pub mod preview;
mod recent;

pub use devices::*;
pub use leave::*;
pub use recent::*;

use std::rc::Rc;

use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{CloseEvent, MediaStream, MediaStreamTrack, MessageEvent, WebSocket};

use leptos::prelude::{Set, WithUntracked};

use crate::call::{CallStore, ConnectionState};
use crate::model::{LeaveReason, RoomCode, SessionId};
use crate::signal::{close_code, socket_lost, ClientMsg, ServerMsg, DEAD_AFTER_MS, HEARTBEAT_INTERVAL_MS};

fn window() -> Result<web_sys::Window, JsValue> {
    web_sys::window().ok_or_else(|| JsValue::from_str("no window"))
}

/// How long the page keeps trying to resume the same session before it
/// joins again instead (the server's default removal time; the room page's
/// rejoin gives up after its own tries). When a quiet socket counts as
/// dead: [`crate::signal::socket_lost`].
const GIVE_UP_AFTER_MS: f64 = 10_000.0;
/// The watchdog's period.
const TICK_MS: i32 = 250;

fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// Reconnect delay after `attempts` failed tries: 250 ms doubling to 2 s.
fn backoff_ms(attempts: u32) -> f64 {
    f64::from(250u32.saturating_mul(1 << attempts.min(3)))
}

/// The socket currently in use, shared with the peer connection (which
/// sends its answers and candidates through it).
pub type SocketSlot = Rc<std::cell::RefCell<Option<WebSocket>>>;

/// One attempt's socket and its handlers; detaches and closes on drop.
struct Attempt {
    ws: WebSocket,
    _on_open: Closure<dyn FnMut()>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

impl Attempt {
    fn detach(&self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        let _ = self.ws.close_with_code_and_reason(1000, "leave");
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        self.detach();
    }
}

/// Connection state shared by the handlers (which hold it weakly).
struct Link {
    url: String,
    store: CallStore,
    peer: Option<Rc<peer::Peer>>,
    slot: SocketSlot,
    attempt: std::cell::RefCell<Option<Attempt>>,
    /// Attempts replaced from inside their own handlers, dropped on the next tick.
    retired: std::cell::RefCell<Vec<Attempt>>,
    last_heard: std::cell::Cell<f64>,
    last_ping: std::cell::Cell<f64>,
    lost_since: std::cell::Cell<Option<f64>>,
    next_try: std::cell::Cell<f64>,
    failures: std::cell::Cell<u32>,
    finished: std::cell::Cell<bool>,
}

impl Link {
    fn connect(self: &Rc<Self>) -> Result<(), JsValue> {
        let ws = WebSocket::new(&self.url)?;
        let link = Rc::downgrade(self);
        let on_open = Closure::<dyn FnMut()>::new(move || {
            let Some(link) = link.upgrade() else { return };
            link.failures.set(0);
            link.lost_since.set(None);
            link.last_heard.set(now_ms());
            let _ = link.store.connection.try_set(ConnectionState::Connected);
        });
        let link = Rc::downgrade(self);
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
            let Some(link) = link.upgrade() else { return };
            link.last_heard.set(now_ms());
            let Some(text) = ev.data().as_string() else { return };
            match serde_json::from_str::<ServerMsg>(&text) {
                Ok(msg @ (ServerMsg::Offer { .. } | ServerMsg::IceCandidate { .. })) => {
                    if let Some(peer) = &link.peer {
                        peer.handle(msg);
                    }
                }
                Ok(ServerMsg::CameraLayers { send }) => {
                    if let Some(peer) = &link.peer {
                        peer.send_layers(send);
                    }
                }
                Ok(msg) => {
                    link.store.apply(msg);
                    peer::Peer::prune(link.store);
                }
                Err(e) => leptos::logging::warn!("ignoring a malformed signalling message: {e}"),
            }
        });
        let link = Rc::downgrade(self);
        let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |ev: CloseEvent| {
            let Some(link) = link.upgrade() else { return };
            match ev.code() {
                // The server no longer knows the session: nothing to resume.
                // Another connection of this session took over: not ours to retry.
                close_code::UNKNOWN_SESSION | close_code::SESSION_ENDED | close_code::REPLACED => link.give_up(),
                // The session went with its node: join again, on the room's node of now.
                close_code::MOVED => link.rejoin(&crate::call::ended_message(LeaveReason::Moved)),
                _ => link.lose(),
            }
        });
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        *self.slot.borrow_mut() = Some(ws.clone());
        let previous =
            self.attempt.replace(Some(Attempt { ws, _on_open: on_open, _on_message: on_message, _on_close: on_close }));
        if let Some(old) = previous {
            old.detach();
            self.retired.borrow_mut().push(old);
        }
        Ok(())
    }

    /// The socket died (closed, or silent too long): show reconnecting and retry.
    fn lose(&self) {
        if self.finished.get() {
            return;
        }
        if let Some(old) = self.attempt.borrow_mut().take() {
            old.detach();
            self.retired.borrow_mut().push(old);
        }
        *self.slot.borrow_mut() = None;
        let now = now_ms();
        if self.lost_since.get().is_none() {
            self.lost_since.set(Some(now));
        }
        self.next_try.set(now + backoff_ms(self.failures.get()));
        let _ = self.store.connection.try_set(ConnectionState::Reconnecting);
    }

    /// The session cannot be resumed: tear down locally and offer a rejoin.
    fn give_up(&self) {
        if self.finished.replace(true) {
            return;
        }
        if let Some(old) = self.attempt.borrow_mut().take() {
            old.detach();
            self.retired.borrow_mut().push(old);
        }
        *self.slot.borrow_mut() = None;
        if let Some(peer) = &self.peer {
            peer.close();
        }
        if self.store.me.try_with_untracked(Option::is_some) == Some(true) {
            self.store.reset();
            let _ = self.store.lost.try_set(true);
            let _ = self.store.notice.try_set(Some("The connection was lost and you left the meeting.".into()));
        }
    }

    /// The session cannot be resumed but the person did not leave (it went
    /// with its node, or no server answered for too long): tear down
    /// locally and let the room page join again by itself.
    fn rejoin(&self, notice: &str) {
        self.give_up();
        let _ = self.store.lost.try_set(false);
        let _ = self.store.notice.try_set(Some(notice.to_owned()));
        let _ = self.store.rejoin.try_set(true);
    }

    /// The watchdog: heartbeats, dead-socket detection, retries, giving up.
    fn tick(self: &Rc<Self>) {
        self.retired.borrow_mut().clear();
        if self.finished.get() {
            return;
        }
        let now = now_ms();
        let open = self.attempt.borrow().as_ref().map(|a| a.ws.ready_state());
        match open {
            Some(WebSocket::OPEN) => {
                if now - self.last_ping.get() >= f64::from(HEARTBEAT_INTERVAL_MS) {
                    self.last_ping.set(now);
                    if let (Some(ws), Ok(ping)) = (self.slot.borrow().as_ref(), serde_json::to_string(&ClientMsg::Ping))
                    {
                        let _ = ws.send_with_str(&ping);
                    }
                }
                // Past half the dead time, every tick reads whether the media
                // transport still receives (two close readings tell).
                let quiet = now - self.last_heard.get();
                if quiet > DEAD_AFTER_MS / 2.0 {
                    if let Some(peer) = &self.peer {
                        peer.read_transport();
                    }
                }
                let transport_quiet = self.peer.as_ref().map_or(f64::INFINITY, |peer| now - peer.transport_heard());
                if socket_lost(quiet, transport_quiet) {
                    self.lose();
                } else if let Some(peer) = &self.peer {
                    peer.restart_if_down();
                    peer.report_views();
                }
            }
            Some(_) => {
                // Still connecting: a connection attempt that hangs counts as a failure.
                if self.lost_since.get().is_some() && now >= self.next_try.get() + 2_000.0 {
                    self.failures.set(self.failures.get() + 1);
                    self.lose();
                }
            }
            None => {
                if now >= self.next_try.get() {
                    self.failures.set(self.failures.get() + 1);
                    self.next_try.set(now + backoff_ms(self.failures.get()) + 2_000.0);
                    if let Err(e) = self.connect() {
                        leptos::logging::warn!("reconnect failed: {e:?}");
                    }
                }
            }
        }
        // Its node may have died: the room lives on elsewhere once the
        // others notice, so join again rather than give up.
        if self.lost_since.get().is_some_and(|since| now - since > GIVE_UP_AFTER_MS) {
            self.rejoin("The connection was lost; joining the meeting again.");
        }
    }
}

/// The room's signalling socket (reconnected with backoff after a loss,
/// resuming the same session) and the peer connection it negotiates.
pub struct Connection {
    link: Rc<Link>,
    ticker: Option<i32>,
    _tick: Closure<dyn FnMut()>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

impl Connection {
    /// Opens the signalling socket of `session` and a peer connection with
    /// `local` media and the join's ICE servers; reconnects on its own.
    pub fn open(
        code: &RoomCode,
        session: &SessionId,
        store: CallStore,
        local: Option<MediaStream>,
        ice_servers: &[crate::model::IceServer],
    ) -> Result<Self, JsValue> {
        let window = window()?;
        let location = window.location();
        let scheme = if location.protocol()? == "https:" { "wss" } else { "ws" };
        let url = format!("{scheme}://{}{}", location.host()?, crate::routes::socket(code, session));
        store.connection.set(ConnectionState::Connecting);
        let slot: SocketSlot = Rc::default();
        let peer = match peer::Peer::new(slot.clone(), local, store, ice_servers) {
            Ok(p) => Some(p),
            Err(e) => {
                leptos::logging::warn!("no media connection: {e:?}");
                None
            }
        };
        let now = now_ms();
        let link = Rc::new(Link {
            url,
            store,
            peer,
            slot,
            attempt: Default::default(),
            retired: Default::default(),
            last_heard: now.into(),
            last_ping: now.into(),
            lost_since: Default::default(),
            next_try: now.into(),
            failures: Default::default(),
            finished: Default::default(),
        });
        link.connect()?;
        let weak = Rc::downgrade(&link);
        let tick = Closure::<dyn FnMut()>::new(move || {
            if let Some(link) = weak.upgrade() {
                link.tick();
            }
        });
        let ticker =
            window.set_interval_with_callback_and_timeout_and_arguments_0(tick.as_ref().unchecked_ref(), TICK_MS).ok();
        Ok(Self { link, ticker, _tick: tick })
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let (Ok(w), Some(id)) = (window(), self.ticker) {
            w.clear_interval_with_handle(id);
        }
        self.link.finished.set(true);
        drop(self.link.attempt.borrow_mut().take());
        self.link.retired.borrow_mut().clear();
        *self.link.slot.borrow_mut() = None;
        if let Some(peer) = &self.link.peer {
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
    /// The screen we share, while we do.
    screen: Option<MediaStream>,
    pagehide: Option<PageHideGuard>,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call").finish_non_exhaustive()
    }
}

impl Call {
    /// Starts owning a call: from this moment a `pagehide` sends the leave.
    pub fn new(store: CallStore) -> Self {
        Self { connection: None, local: None, screen: None, pagehide: PageHideGuard::install(store) }
    }

    /// Opens the signalling socket and the peer connection with our media.
    pub fn connect(
        &mut self,
        code: &RoomCode,
        session: &SessionId,
        store: CallStore,
        local: Option<MediaStream>,
        ice_servers: &[crate::model::IceServer],
    ) {
        self.local = local.clone();
        self.connection = match Connection::open(code, session, store, local, ice_servers) {
            Ok(c) => {
                if let Some(guard) = &self.pagehide {
                    guard.watch(c.link.slot.clone());
                }
                Some(c)
            }
            Err(e) => {
                leptos::logging::warn!("signalling socket not opened: {e:?}");
                store.connection.set(ConnectionState::Disconnected);
                None
            }
        };
    }
}

impl Call {
    fn peer(&self) -> Option<&Rc<peer::Peer>> {
        self.connection.as_ref().and_then(|c| c.link.peer.as_ref())
    }

    /// Microphone on or off: the track stays and is enabled or disabled
    /// (a disabled track sends silence). `false` when there is no
    /// microphone track to switch (it was never opened).
    pub fn set_microphone(&self, on: bool) -> bool {
        let Some(local) = &self.local else { return false };
        let tracks = local.get_audio_tracks();
        for track in tracks.iter() {
            if let Ok(track) = track.dyn_into::<MediaStreamTrack>() {
                track.set_enabled(on);
            }
        }
        tracks.length() > 0
    }

    /// Camera off: its track is stopped and dropped (the light goes out).
    pub fn camera_off(&self) {
        let Some(local) = &self.local else { return };
        for track in local.get_video_tracks().iter() {
            if let Ok(track) = track.dyn_into::<MediaStreamTrack>() {
                track.stop();
                local.remove_track(&track);
            }
        }
        if let Some(peer) = self.peer() {
            peer.replace_local("video", None);
        }
    }

    /// Another microphone: its track replaces the current one, in our
    /// stream and toward the server, on (`on`) or off as the mute says.
    pub fn switch_microphone(&self, track: MediaStreamTrack, on: bool) {
        let Some(local) = &self.local else {
            track.stop();
            return;
        };
        for old in local.get_audio_tracks().iter() {
            if let Ok(old) = old.dyn_into::<MediaStreamTrack>() {
                old.stop();
                local.remove_track(&old);
            }
        }
        track.set_enabled(on);
        local.add_track(&track);
        if let Some(peer) = self.peer() {
            peer.replace_local("audio", Some(&track));
        }
    }

    /// Shares `stream` (a `getDisplayMedia` capture) in place of any
    /// earlier share.
    pub fn share_screen(&mut self, stream: MediaStream) {
        self.stop_screen();
        let track = stream.get_video_tracks().get(0).dyn_into::<MediaStreamTrack>().ok();
        if let Some(peer) = self.peer() {
            peer.share_screen(track.as_ref());
        }
        self.screen = Some(stream);
    }

    /// Stops sharing: the capture ends (the browser's sharing indicator
    /// goes) and nothing more is sent.
    pub fn stop_screen(&mut self) {
        if let Some(stream) = self.screen.take() {
            stop_stream(&stream);
        }
        if let Some(peer) = self.peer() {
            peer.share_screen(None);
        }
    }

    /// Camera on again with a fresh track.
    pub fn camera_on(&self, track: MediaStreamTrack) {
        let Some(local) = &self.local else {
            track.stop();
            return;
        };
        local.add_track(&track);
        if let Some(peer) = self.peer() {
            peer.replace_local("video", Some(&track));
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        drop(self.connection.take());
        if let Some(local) = self.local.take() {
            stop_stream(&local);
        }
        if let Some(screen) = self.screen.take() {
            stop_stream(&screen);
        }
    }
}
