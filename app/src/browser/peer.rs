//! The browser's one `RTCPeerConnection` to the SFU. The server is the only
//! offerer: each offer is applied in arrival order; the receive-only
//! m-lines the server opens for our own media get the camera and microphone
//! tracks; every remote stream is filed under its id, which is the
//! publisher's participant id.

use std::cell::{Cell, RefCell};
use std::collections::{HashSet, VecDeque};
use std::rc::Rc;

use leptos::prelude::{Update, WithUntracked};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    Event, MediaStream, MediaStreamTrack, RtcConfiguration, RtcIceCandidateInit, RtcPeerConnection,
    RtcPeerConnectionIceEvent, RtcPeerConnectionState, RtcRtpTransceiver, RtcRtpTransceiverDirection, RtcSdpType,
    RtcSessionDescriptionInit, RtcTrackEvent, WebSocket,
};

use crate::call::CallStore;
use crate::signal::{self, ClientMsg, IceCandidate, ServerMsg, TileView, CAMERA_LAYERS};

/// The camera's simulcast layers when the server asks for them (its offer's
/// `a=simulcast:recv q;h;f`): quarter, half and full size, each capped. A
/// camera too small for three is sent in its largest ones
/// ([`signal::camera_layer_setting`]).
const LAYER_SCALE: [f64; CAMERA_LAYERS] = [4.0, 2.0, 1.0];
/// Bits per second of each layer at most.
const LAYER_MAX_BITRATE: [u32; CAMERA_LAYERS] = [80_000, 350_000, 1_000_000];

/// The size the sender's track is captured at, when the browser says.
fn capture_size(t: &RtcRtpTransceiver) -> Option<(u32, u32)> {
    let settings = t.sender().track()?.get_settings();
    let side = |v: Option<i32>| v.and_then(|v| u32::try_from(v).ok()).filter(|v| *v > 0);
    Some((side(settings.get_width())?, side(settings.get_height())?))
}

/// Changes each of a simulcast sender's encodings with `change` (index,
/// encoding) and applies them. `Ok(false)`: not a sender with our layers.
async fn set_layers(t: &RtcRtpTransceiver, change: impl Fn(usize, &JsValue)) -> Result<bool, JsValue> {
    let sender = t.sender();
    let get: js_sys::Function = js_sys::Reflect::get(&sender, &"getParameters".into())?.dyn_into()?;
    let params = get.call0(&sender)?;
    let encodings: js_sys::Array = js_sys::Reflect::get(&params, &"encodings".into())?.dyn_into()?;
    if encodings.length() != LAYER_SCALE.len() as u32 {
        return Ok(false);
    }
    for (i, encoding) in encodings.iter().enumerate() {
        change(i, &encoding);
    }
    let set: js_sys::Function = js_sys::Reflect::get(&sender, &"setParameters".into())?.dyn_into()?;
    JsFuture::from(js_sys::Promise::from(set.call1(&sender, &params)?)).await?;
    Ok(true)
}

/// One m-line of an SDP: its mid, media kind and direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MLine {
    /// `a=mid`.
    pub mid: String,
    /// `audio` or `video`.
    pub kind: String,
    /// `sendonly`, `recvonly`, `sendrecv` or `inactive`.
    pub direction: String,
}

/// Reads the m-lines of an SDP (enough of it to route our own tracks).
pub fn m_lines(sdp: &str) -> Vec<MLine> {
    let mut out: Vec<MLine> = Vec::new();
    for line in sdp.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("m=") {
            let kind = rest.split_whitespace().next().unwrap_or_default().to_owned();
            out.push(MLine { mid: String::new(), kind, direction: "sendrecv".into() });
        } else if let Some(current) = out.last_mut() {
            if let Some(mid) = line.strip_prefix("a=mid:") {
                current.mid = mid.to_owned();
            } else if let Some(dir) =
                ["a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive"].iter().find(|d| line == **d)
            {
                current.direction = dir[2..].to_owned();
            }
        }
    }
    out
}

fn send(slot: &super::SocketSlot, msg: &ClientMsg) {
    let Some(ws) = slot.borrow().clone() else { return };
    if ws.ready_state() == WebSocket::OPEN {
        if let Ok(text) = serde_json::to_string(msg) {
            let _ = ws.send_with_str(&text);
        }
    }
}

/// `RTCConfiguration` with the STUN/TURN servers the join handed us (as
/// plain objects: `RTCIceServer` is a dictionary).
fn configuration(servers: &[crate::model::IceServer]) -> Result<RtcConfiguration, JsValue> {
    let config = RtcConfiguration::new();
    let list = js_sys::Array::new();
    for server in servers {
        let entry = js_sys::Object::new();
        let urls: js_sys::Array = server.urls.iter().map(|u| JsValue::from_str(u)).collect();
        js_sys::Reflect::set(&entry, &"urls".into(), &urls)?;
        if let (Some(user), Some(credential)) = (&server.username, &server.credential) {
            js_sys::Reflect::set(&entry, &"username".into(), &user.into())?;
            js_sys::Reflect::set(&entry, &"credential".into(), &credential.into())?;
        }
        list.push(&entry);
    }
    js_sys::Reflect::set(&config, &"iceServers".into(), &list)?;
    Ok(config)
}

/// How often a page whose media path stays down asks again for an ICE
/// restart (an offer and its answer take well under this).
const RESTART_EVERY_MS: f64 = 3_000.0;

/// Two readings of the transport's received bytes further apart than this
/// do not tell when the bytes arrived, so a change between them is not
/// counted as traffic heard now.
const READINGS_APART_MS: f64 = 1_000.0;

/// The sum of `bytesReceived` over the `transport` entries of a
/// `getStats()` report (one transport: everything is bundled).
fn transport_bytes(report: &JsValue) -> f64 {
    let values = js_sys::Reflect::get(report, &"values".into())
        .ok()
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
        .and_then(|f| f.call0(report).ok());
    let Some(Ok(Some(entries))) = values.map(|v| js_sys::try_iter(&v)) else { return 0.0 };
    let field = |stat: &JsValue, name: &str| js_sys::Reflect::get(stat, &name.into()).ok();
    entries
        .flatten()
        .filter(|stat| field(stat, "type").and_then(|t| t.as_string()).as_deref() == Some("transport"))
        .filter_map(|stat| field(&stat, "bytesReceived").and_then(|b| b.as_f64()))
        .sum()
}

/// The peer connection and what it needs to answer offers.
pub struct Peer {
    pc: RtcPeerConnection,
    /// The signalling socket of the moment (it changes on reconnect).
    ws: super::SocketSlot,
    local: Option<MediaStream>,
    /// Mids whose sender already carries our track.
    attached: RefCell<HashSet<String>>,
    /// The m-line where the server receives our screen share (the second
    /// of its receive-only video lines), once an offer named it.
    screen_mid: RefCell<Option<String>>,
    /// What we share now (sent as soon as the screen's m-line is known).
    screen: RefCell<Option<MediaStreamTrack>>,
    /// Offers and candidates waiting to be applied, in arrival order.
    queue: RefCell<VecDeque<ServerMsg>>,
    busy: Cell<bool>,
    closed: Cell<bool>,
    /// When we last asked the server for an ICE restart (ms since epoch).
    restart_asked: Cell<f64>,
    /// The tile widths last told to the server.
    views: RefCell<Vec<TileView>>,
    /// Mids whose sender's simulcast layers were configured.
    layered: RefCell<HashSet<String>>,
    /// How many of the camera's layers the server wants sent (smallest
    /// first), and whether that is being applied.
    camera_layers: Cell<u8>,
    applying_layers: Cell<bool>,
    /// How many layers the browser sends of the camera's picture (fewer
    /// for a small camera); the others stay off.
    camera_fits: Cell<usize>,
    /// The transport's received bytes at the last reading, when that was
    /// (ms since epoch), and when a reading last found them grown.
    transport: Cell<(f64, f64)>,
    transport_heard: Cell<f64>,
    reading: Cell<bool>,
    _on_track: Closure<dyn FnMut(RtcTrackEvent)>,
    _on_ice: Closure<dyn FnMut(RtcPeerConnectionIceEvent)>,
    _on_state: Closure<dyn FnMut(Event)>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").finish_non_exhaustive()
    }
}

impl Peer {
    /// A peer connection that answers the server's offers over `ws`, sends
    /// `local` media and puts remote streams into `store`.
    pub fn new(
        ws: super::SocketSlot,
        local: Option<MediaStream>,
        store: CallStore,
        ice_servers: &[crate::model::IceServer],
    ) -> Result<Rc<Self>, JsValue> {
        let pc = RtcPeerConnection::new_with_configuration(&configuration(ice_servers)?)?;
        let on_track = Closure::<dyn FnMut(RtcTrackEvent)>::new(move |ev: RtcTrackEvent| {
            let Ok(stream) = ev.streams().get(0).dyn_into::<MediaStream>() else { return };
            let id = stream.id();
            store.streams.update(|m| {
                m.insert(id, stream);
            });
        });
        let ice_ws = ws.clone();
        let on_ice = Closure::<dyn FnMut(RtcPeerConnectionIceEvent)>::new(move |ev: RtcPeerConnectionIceEvent| {
            let Some(c) = ev.candidate() else { return };
            if c.candidate().is_empty() {
                return;
            }
            let candidate = IceCandidate {
                candidate: c.candidate(),
                sdp_mid: c.sdp_mid(),
                sdp_m_line_index: c.sdp_m_line_index(),
                username_fragment: None,
            };
            send(&ice_ws, &ClientMsg::IceCandidate { candidate });
        });
        let state_pc = pc.clone();
        let on_state = Closure::<dyn FnMut(Event)>::new(move |_ev: Event| {
            if state_pc.connection_state() == RtcPeerConnectionState::Failed {
                leptos::logging::warn!("media connection failed");
            }
        });
        pc.set_ontrack(Some(on_track.as_ref().unchecked_ref()));
        pc.set_onicecandidate(Some(on_ice.as_ref().unchecked_ref()));
        pc.set_onconnectionstatechange(Some(on_state.as_ref().unchecked_ref()));
        Ok(Rc::new(Self {
            pc,
            ws,
            local,
            attached: RefCell::new(HashSet::new()),
            screen_mid: RefCell::new(None),
            screen: RefCell::new(None),
            queue: RefCell::new(VecDeque::new()),
            busy: Cell::new(false),
            closed: Cell::new(false),
            restart_asked: Cell::new(0.0),
            views: RefCell::new(Vec::new()),
            layered: RefCell::new(HashSet::new()),
            camera_layers: Cell::new(LAYER_SCALE.len() as u8),
            camera_fits: Cell::new(CAMERA_LAYERS),
            applying_layers: Cell::new(false),
            transport: Cell::new((0.0, 0.0)),
            transport_heard: Cell::new(0.0),
            reading: Cell::new(false),
            _on_track: on_track,
            _on_ice: on_ice,
            _on_state: on_state,
        }))
    }

    /// While the media path is down (ICE `disconnected` or `failed`: the
    /// network dropped or changed), asks the server for an ICE restart, at
    /// most every [`RESTART_EVERY_MS`]; the server re-offers with new
    /// credentials and the browser gathers candidates on its network of now.
    /// Called by the connection's watchdog while the socket is open.
    pub fn restart_if_down(&self) {
        if self.closed.get() {
            return;
        }
        let state = js_sys::Reflect::get(&self.pc, &"iceConnectionState".into())
            .ok()
            .and_then(|s| s.as_string())
            .unwrap_or_default();
        if state != "disconnected" && state != "failed" {
            return;
        }
        let now = js_sys::Date::now();
        if now - self.restart_asked.get() < RESTART_EVERY_MS {
            return;
        }
        self.restart_asked.set(now);
        leptos::logging::log!("media path {state}: asking for an ICE restart");
        send(&self.ws, &ClientMsg::RestartIce);
    }

    /// Reads the connection's statistics once (unless a reading is under
    /// way) to learn whether the server's packets still arrive; see
    /// [`Self::transport_heard`]. Called by the connection's watchdog while
    /// the socket is quiet.
    pub fn read_transport(self: &Rc<Self>) {
        if self.closed.get() || self.reading.replace(true) {
            return;
        }
        let this = self.clone();
        leptos::task::spawn_local(async move {
            if let Ok(report) = JsFuture::from(this.pc.get_stats()).await {
                let bytes = transport_bytes(&report);
                let now = js_sys::Date::now();
                let (before, read_at) = this.transport.replace((bytes, now));
                if bytes != before && now - read_at <= READINGS_APART_MS {
                    this.transport_heard.set(now);
                }
            }
            this.reading.set(false);
        });
    }

    /// When two close readings last found that the transport received
    /// something (ms since epoch; 0 if never): the server and the path to
    /// it are alive even if the socket is quiet.
    pub fn transport_heard(&self) -> f64 {
        self.transport_heard.get()
    }

    /// Queues an offer or candidate; they are applied one at a time, in order.
    pub fn handle(self: &Rc<Self>, msg: ServerMsg) {
        self.queue.borrow_mut().push_back(msg);
        if self.busy.replace(true) {
            return;
        }
        let this = self.clone();
        // Owned by the peer: the loop ends at the first step after `close`
        // (a negotiation step in progress finishes on the closed connection).
        leptos::task::spawn_local(async move {
            loop {
                let next = this.queue.borrow_mut().pop_front();
                let Some(msg) = next else { break };
                if this.closed.get() {
                    break;
                }
                if let Err(e) = this.apply(msg).await {
                    leptos::logging::warn!("signalling step failed: {e:?}");
                }
            }
            this.busy.set(false);
        });
    }

    async fn apply(&self, msg: ServerMsg) -> Result<(), JsValue> {
        match msg {
            ServerMsg::Offer { sdp } => self.answer(&sdp).await,
            ServerMsg::IceCandidate { candidate } => {
                let init = RtcIceCandidateInit::new(&candidate.candidate);
                init.set_sdp_mid(candidate.sdp_mid.as_deref());
                init.set_sdp_m_line_index(candidate.sdp_m_line_index);
                JsFuture::from(self.pc.add_ice_candidate_with_opt_rtc_ice_candidate_init(Some(&init))).await?;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn answer(&self, sdp: &str) -> Result<(), JsValue> {
        let offer = RtcSessionDescriptionInit::new(RtcSdpType::Offer);
        offer.set_sdp(sdp);
        JsFuture::from(self.pc.set_remote_description(&offer)).await?;
        self.attach_local_tracks(sdp).await?;
        let answer = JsFuture::from(self.pc.create_answer()).await?;
        let answer: RtcSessionDescriptionInit = answer.unchecked_into();
        JsFuture::from(self.pc.set_local_description(&answer)).await?;
        let sdp = self.pc.local_description().map(|d| d.sdp()).unwrap_or_default();
        send(&self.ws, &ClientMsg::Answer { sdp });
        self.configure_layers().await;
        Ok(())
    }

    /// Gives each simulcast sender (the camera, once the server asked for
    /// layers) its sizes and bitrate caps, smallest layer first.
    async fn configure_layers(&self) {
        for item in self.pc.get_transceivers().iter() {
            let t: RtcRtpTransceiver = item.unchecked_into();
            let Some(mid) = t.mid() else { continue };
            if self.layered.borrow().contains(&mid) {
                continue;
            }
            // As many layers as the browser sends of this camera's picture.
            let fits = capture_size(&t).map_or(CAMERA_LAYERS, |(w, h)| signal::camera_layers_sent(w, h));
            let send = usize::from(self.camera_layers.get()).min(fits);
            let set = set_layers(&t, |i, encoding| {
                let layer = signal::camera_layer_setting(i, fits);
                let _ = js_sys::Reflect::set(encoding, &"scaleResolutionDownBy".into(), &LAYER_SCALE[layer].into());
                let _ = js_sys::Reflect::set(encoding, &"maxBitrate".into(), &LAYER_MAX_BITRATE[layer].into());
                let _ = js_sys::Reflect::set(encoding, &"active".into(), &(i < send).into());
            });
            match set.await {
                Ok(true) => {
                    self.layered.borrow_mut().insert(mid);
                    self.camera_fits.set(fits);
                }
                Ok(false) => {}
                Err(e) => leptos::logging::warn!("simulcast layers not set: {e:?}"),
            }
        }
    }

    /// Sends the camera's smallest `send` layers and stops the others
    /// (no subscriber's tile wants them), as the server asks. Applied one
    /// change at a time, the newest last.
    pub fn send_layers(self: &Rc<Self>, send: u8) {
        let send = send.clamp(1, LAYER_SCALE.len() as u8);
        // The same again (a re-attached socket is told it): nothing to do.
        if self.camera_layers.replace(send) == send {
            return;
        }
        if self.closed.get() || self.applying_layers.replace(true) {
            return;
        }
        let this = self.clone();
        leptos::task::spawn_local(async move {
            loop {
                let send = this.camera_layers.get();
                this.apply_layers(send).await;
                if this.closed.get() || this.camera_layers.get() == send {
                    break;
                }
            }
            this.applying_layers.set(false);
        });
    }

    /// Sets `active` on the configured camera sender's encodings.
    async fn apply_layers(&self, send: u8) {
        for item in self.pc.get_transceivers().iter() {
            let t: RtcRtpTransceiver = item.unchecked_into();
            // Not configured yet: its configuration applies the count.
            if !t.mid().is_some_and(|mid| self.layered.borrow().contains(&mid)) {
                continue;
            }
            let send = usize::from(send).min(self.camera_fits.get());
            let set = set_layers(&t, |i, encoding| {
                let _ = js_sys::Reflect::set(encoding, &"active".into(), &(i < send).into());
            });
            if let Err(e) = set.await {
                leptos::logging::warn!("camera layers not changed: {e:?}");
            }
        }
    }

    /// Tells the server the width each remote video is shown at (device
    /// pixels; 0 while not shown), when that changed, so that each is sent
    /// the simulcast layer that fits. Called by the connection's watchdog.
    pub fn report_views(&self) {
        if self.closed.get() {
            return;
        }
        let Some(window) = web_sys::window() else { return };
        let Some(document) = window.document() else { return };
        let Ok(videos) = document.query_selector_all("video") else { return };
        let ratio = window.device_pixel_ratio();
        let mut views: Vec<TileView> = Vec::new();
        for i in 0..videos.length() {
            let Some(video) = videos.item(i).and_then(|n| n.dyn_into::<web_sys::HtmlVideoElement>().ok()) else {
                continue;
            };
            let Some(stream) = video.src_object() else { continue };
            let width = (f64::from(video.client_width()) * ratio).round() as u32;
            let stream = stream.id();
            // The same stream in two places: the larger one counts.
            match views.iter_mut().find(|v| v.stream == stream) {
                Some(v) => v.width = v.width.max(width),
                None => views.push(TileView { stream, width }),
            }
        }
        views.sort_by(|a, b| a.stream.cmp(&b.stream));
        views.truncate(crate::signal::MAX_VIEWS);
        if *self.views.borrow() == views {
            return;
        }
        send(&self.ws, &ClientMsg::Views { views: views.clone() });
        *self.views.borrow_mut() = views;
    }

    /// Puts our camera/microphone on the m-lines where the server receives,
    /// and our screen share (or nothing yet) on the one for the screen.
    async fn attach_local_tracks(&self, sdp: &str) -> Result<(), JsValue> {
        let mut wanted: Vec<MLine> = m_lines(sdp).into_iter().filter(|m| m.direction == "recvonly").collect();
        // The server's receive-only lines: audio, video, then the screen's video.
        if let Some(at) = wanted.iter().enumerate().filter(|(_, m)| m.kind == "video").nth(1).map(|(i, _)| i) {
            let screen = wanted.remove(at);
            if self.screen_mid.borrow().is_none() {
                if let Some(t) = self.transceiver(&screen.mid) {
                    t.set_direction(RtcRtpTransceiverDirection::Sendonly);
                    let track = self.screen.borrow().clone();
                    JsFuture::from(t.sender().replace_track(track.as_ref())).await?;
                    *self.screen_mid.borrow_mut() = Some(screen.mid);
                }
            }
        }
        let Some(local) = &self.local else { return Ok(()) };
        for item in self.pc.get_transceivers().iter() {
            let t: RtcRtpTransceiver = item.unchecked_into();
            let Some(mid) = t.mid() else { continue };
            let Some(line) = wanted.iter().find(|m| m.mid == mid) else { continue };
            if self.attached.borrow().contains(&mid) {
                continue;
            }
            // Without a track of the kind (the camera turned off before
            // joining) the line is ours all the same: turning it on later
            // puts the track there.
            let tracks = if line.kind == "audio" { local.get_audio_tracks() } else { local.get_video_tracks() };
            let track = tracks.get(0).dyn_into::<MediaStreamTrack>().ok();
            t.set_direction(RtcRtpTransceiverDirection::Sendonly);
            JsFuture::from(t.sender().replace_track(track.as_ref())).await?;
            self.attached.borrow_mut().insert(mid);
        }
        Ok(())
    }

    fn transceiver(&self, mid: &str) -> Option<RtcRtpTransceiver> {
        self.pc
            .get_transceivers()
            .iter()
            .map(|item| item.unchecked_into::<RtcRtpTransceiver>())
            .find(|t| t.mid().as_deref() == Some(mid))
    }

    /// Sends `track` as our screen share, or nothing (`None`): no
    /// renegotiation, the server's screen m-line is always there.
    pub fn share_screen(&self, track: Option<&MediaStreamTrack>) {
        *self.screen.borrow_mut() = track.cloned();
        let mid = self.screen_mid.borrow().clone();
        if let Some(t) = mid.and_then(|mid| self.transceiver(&mid)) {
            let _ = t.sender().replace_track(track);
        }
    }

    /// Puts `track` (or nothing) on the senders of `kind` ("audio" or
    /// "video") that carry our media: a camera turned off and on again
    /// needs no renegotiation.
    pub fn replace_local(&self, kind: &str, track: Option<&MediaStreamTrack>) {
        for item in self.pc.get_transceivers().iter() {
            let t: RtcRtpTransceiver = item.unchecked_into();
            let ours = t.mid().is_some_and(|mid| self.attached.borrow().contains(&mid));
            if ours && t.receiver().track().kind() == kind {
                let _ = t.sender().replace_track(track);
            }
        }
    }

    /// Stops every received track and closes the connection. Idempotent.
    pub fn close(&self) {
        if self.closed.replace(true) {
            return;
        }
        for item in self.pc.get_transceivers().iter() {
            let t: RtcRtpTransceiver = item.unchecked_into();
            t.receiver().track().stop();
        }
        self.pc.set_ontrack(None);
        self.pc.set_onicecandidate(None);
        self.pc.set_onconnectionstatechange(None);
        self.pc.close();
    }

    /// Forgets remote streams of people no longer in the roster. Their
    /// tracks are not stopped here: the server reuses freed m-lines, so a
    /// receiver's track may soon carry someone else (it ends when the
    /// connection closes).
    pub fn prune(store: CallStore) {
        let live: HashSet<String> =
            store.participants.with_untracked(|ps| ps.iter().map(|p| p.id.to_string()).collect());
        // A screen share's stream is `{id}.screen`.
        let owner = |id: &str| {
            let suffix = format!(".{}", crate::model::SCREEN_STREAM_SUFFIX);
            id.strip_suffix(suffix.as_str()).unwrap_or(id).to_owned()
        };
        store.streams.update(|m| m.retain(|id, _| live.contains(&owner(id))));
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.close();
    }
}
