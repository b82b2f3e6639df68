//! The task that owns one session's connection: its start, the commands and
//! connection events it takes one at a time, the tracks it publishes and
//! the forwarders feeding it, and its teardown. Negotiation is in
//! [`negotiation`].

mod negotiation;

use tokio_util::sync::CancellationToken;

use crate::media::simulcast;

use super::*;

/// The offer in flight.
struct InFlight {
    /// Rolled back and offered again after this.
    deadline: Instant,
    /// The offer's SDP, sent again to a re-attached socket.
    sdp: String,
    /// Published track ids whose forwarders this offer negotiates.
    covers: Vec<String>,
}

/// The task that owns one session's connection. It holds its session by
/// `Weak` (the room's registry owns it) and a copy of what it needs; when
/// the last owner lets go, the session's `Drop` cancels the token and this
/// task tears down.
pub(super) struct Actor {
    session: Weak<MediaSession>,
    /// The session's id, room, user and public handle.
    id: SessionId,
    code: RoomCode,
    user: UserId,
    participant: ParticipantId,
    /// The session's lifetime token (cancelled on close or drop).
    token: CancellationToken,
    /// The session's forwarding switches and levels, for its tracks.
    publisher_state: Arc<PublisherState>,
    /// The session's tasks (the node's tracker also tracks them).
    tasks: TaskTracker,
    shared: Arc<Shared>,
    /// `Weak`: the room owns the session, not the other way round.
    room: Weak<RoomMedia>,
    signal: Option<mpsc::UnboundedSender<ServerMsg>>,
    pc: Option<Arc<dyn PeerConnection>>,
    /// For readers to report their end.
    events: Option<mpsc::UnboundedSender<PcEvent>>,
    /// Forwarders feeding this session, by published track id.
    forwarders: HashMap<String, Arc<Forwarder>>,
    offer: Option<InFlight>,
    /// Something changed since the last offer.
    dirty: bool,
    /// The next offer carries new ICE credentials.
    restart_ice: bool,
    /// Incoming SSRCs already published (a renegotiation may report a track again).
    seen_ssrcs: HashSet<u32>,
    next_track: u32,
    /// Store resources recorded for this session, removed at the end.
    resources: Vec<(ResourceKind, String)>,
    /// The connection is up (shared with the forwarders feeding it).
    connected: Arc<AtomicBool>,
    /// Remote candidates handed to the connection (capped).
    remote_candidates: usize,
    /// When the browser last had an ICE restart granted.
    last_restart: Option<Instant>,
    /// Send-only transceivers freed by `remove_track`, per kind (audio,
    /// video), by transceiver index, with where their streams stopped: the
    /// next forwarder of that kind takes the first one (as `add_track`
    /// does) and goes on with the stream before its last (see
    /// [`FreedSlot`]), so the SDP grows only to the most tracks ever
    /// forwarded at once, and the connection's per-SSRC state only to
    /// twice the most streams ever sent at once.
    free_slots: [BTreeMap<usize, FreedSlot>; 2],
    /// The screen share: where it is received, its remote track once its
    /// first packet came, whether the person shares now, and the published
    /// track while they do.
    screen: Screen,
    /// The page's tile widths by stream id (device pixels; 0 = not shown).
    views: HashMap<String, u32>,
    /// The camera's receive-only transceiver: its offers ask for simulcast.
    camera: Option<rtc::rtp_transceiver::RTCRtpTransceiverId>,
    /// An answer was applied (its camera section set the track up).
    camera_answered: bool,
    /// How much this session's connection can take (bits per second).
    downlink: Downlink,
    /// The streams whose video is paused for this connection (told to the page).
    paused: Vec<String>,
    /// When to probe the downlink next, while it holds a layer back.
    probes: ProbeSchedule,
    /// How many of its camera's layers the page is told to send.
    layer_hold: simulcast::LayerHold,
}

/// Bits per second kept for each forwarded audio track before video is
/// given the rest of the estimate (Opus in a meeting: 30–50 kbit/s).
const AUDIO_RESERVE_BPS: u64 = 40_000;

/// The most a probe may add when the estimate is lower than this.
const PROBE_MIN_BPS: u64 = 40_000;

/// A probe brings what arrives to at least this many times the estimate
/// (over the estimator's bar for raising its ceiling, 1.25).
const PROBE_OVER: f64 = 1.35;

/// How often each subscriber's video layers are chosen again (what the
/// publishers send changes without telling).
const CHOOSE_EVERY: Duration = Duration::from_millis(500);

/// How long a probe sends its padding (unless the estimate falls first):
/// longer than the estimator's 500 ms measure of what arrives, so that
/// when the link carries it the measure is the probe's.
const PROBE_FOR: Duration = Duration::from_millis(600);

/// One session's screen share, received on a third receive-only (video)
/// transceiver next to the camera's. The page sends on it only while
/// sharing (`replaceTrack`, no renegotiation); the share is published to
/// the room while the person says they share, and withdrawn (forwarders
/// removed, track released) when they stop.
#[derive(Default)]
struct Screen {
    transceiver: Option<rtc::rtp_transceiver::RTCRtpTransceiverId>,
    remote: Option<Arc<dyn TrackRemote>>,
    on: bool,
    published: Option<String>,
}

fn slot(kind: RtpCodecKind) -> usize {
    usize::from(kind != RtpCodecKind::Audio)
}

fn kind_name(kind: RtpCodecKind) -> &'static str {
    match kind {
        RtpCodecKind::Audio => "audio",
        _ => "video",
    }
}

impl Actor {
    pub(super) fn new(
        session: Arc<MediaSession>,
        shared: Arc<Shared>,
        room: Weak<RoomMedia>,
        signal: mpsc::UnboundedSender<ServerMsg>,
    ) -> Self {
        Self {
            session: Arc::downgrade(&session),
            id: session.id.clone(),
            code: session.room.clone(),
            user: session.user.clone(),
            participant: session.participant.clone(),
            token: session.lifetime.token().clone(),
            publisher_state: session.publisher_state.clone(),
            tasks: session.tasks.clone(),
            shared,
            room,
            signal: Some(signal),
            pc: None,
            events: None,
            forwarders: HashMap::new(),
            offer: None,
            dirty: true,
            restart_ice: false,
            seen_ssrcs: HashSet::new(),
            next_track: 0,
            resources: Vec::new(),
            connected: Arc::new(AtomicBool::new(false)),
            remote_candidates: 0,
            last_restart: None,
            free_slots: Default::default(),
            screen: Screen::default(),
            views: HashMap::new(),
            camera: None,
            camera_answered: false,
            downlink: Downlink::default(),
            paused: Vec::new(),
            probes: ProbeSchedule::default(),
            layer_hold: simulcast::LayerHold::default(),
        }
    }

    pub(super) async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Command>) {
        let token = self.token.clone();
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let started = tokio::select! {
            () = token.cancelled() => Err(MediaError::Closed),
            started = self.start(events_tx) => started,
        };
        if let Err(e) = started {
            if !matches!(e, MediaError::Closed) {
                // No media for this session: end it as a media failure, so
                // the page is told instead of waiting for offers forever.
                tracing::warn!(room = %self.code, session = %self.id, error = %e, "media not started");
                self.request_end(LeaveReason::IceFailed);
            }
            self.close(LeaveReason::IceFailed);
        } else {
            // The room's tracks queued at creation go into the first offer.
            while let Ok(cmd) = cmds.try_recv() {
                self.handle(cmd).await;
            }
            let mut choose = tokio::time::interval(CHOOSE_EVERY);
            choose.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                self.maybe_offer().await;
                let deadline = self.offer.as_ref().map(|o| o.deadline);
                tokio::select! {
                    _ = choose.tick() => {
                        self.choose_layers();
                        self.hold_layers();
                    }
                    () = token.cancelled() => break,
                    Some(cmd) = cmds.recv() => {
                        self.handle(cmd).await;
                        // Batch whatever else is queued into the same offer.
                        while let Ok(cmd) = cmds.try_recv() {
                            self.handle(cmd).await;
                        }
                    }
                    Some(event) = events.recv() => self.on_event(event).await,
                    () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                        self.offer_timed_out().await;
                    }
                }
            }
        }
        cmds.close();
        self.teardown().await;
    }

    async fn start(&mut self, events_tx: mpsc::UnboundedSender<PcEvent>) -> Result<(), MediaError> {
        let handler = Arc::new(Events(events_tx.clone()));
        let pc =
            build_peer_connection(&self.shared.config.ice, &self.shared.ports, handler, Some(self.downlink.clone()))
                .await?;
        self.shared.live.peer_connection(&pc);
        self.pc = Some(pc.clone());
        self.events = Some(events_tx);
        // The participant's own audio and video: two receive-only
        // transceivers. Each carries an idle placeholder sender (stream "-",
        // which says "no stream"), so that `add_track` never picks them for a
        // forwarded track: it fills the first sender-less transceiver of the
        // kind, and those must only be the freed forwarder slots.
        // A third, for the screen share (always last of the three).
        for (kind, what) in
            [(RtpCodecKind::Audio, "audio"), (RtpCodecKind::Video, "video"), (RtpCodecKind::Video, "screen")]
        {
            let placeholder = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
                "-".to_owned(),
                format!("{}-self-{what}", self.participant),
                format!("{}-self-{what}", self.participant),
                kind,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(rand::random()), ..Default::default() },
                    codec: default_codec(kind),
                    ..Default::default()
                }],
            )));
            let init = RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Sendrecv, ..Default::default() };
            let transceiver = pc.add_transceiver_from_track(placeholder, Some(init)).await?;
            transceiver.set_direction(RTCRtpTransceiverDirection::Recvonly).await?;
            // The placeholder's codec would be the only one offered: the
            // person's browser may send video in the codecs of the
            // settings, and sends the first of them it supports.
            if kind == RtpCodecKind::Video {
                let codecs = crate::media::offered_video(&self.shared.config.video_codecs);
                transceiver.set_codec_preferences(codecs).await?;
            }
            match what {
                "screen" => self.screen.transceiver = Some(transceiver.id()),
                "video" => self.camera = Some(transceiver.id()),
                _ => {}
            }
        }
        self.add_resource(ResourceKind::PeerConnection, self.id.to_string()).await;
        tracing::info!(room = %self.code, session = %self.id, participant = %self.participant, "media session started");
        Ok(())
    }

    async fn add_resource(&mut self, kind: ResourceKind, id: String) {
        if let Err(e) = self.shared.store.add_resource(&self.code, &self.id, kind, &id).await {
            tracing::warn!(room = %self.code, session = %self.id, error = %e, "media resource not recorded");
        }
        self.resources.push((kind, id));
    }

    async fn remove_resource(&mut self, kind: ResourceKind, id: &str) {
        self.resources.retain(|(k, i)| !(*k == kind && i == id));
        if let Err(e) = self.shared.store.remove_resource(&self.code, &self.id, kind, id).await {
            tracing::warn!(room = %self.code, session = %self.id, error = %e, "media resource not removed");
        }
    }

    fn send_browser(&mut self, msg: ServerMsg) -> bool {
        let sent = self.signal.as_ref().is_some_and(|tx| tx.send(msg).is_ok());
        if !sent {
            // The socket went away; a reconnecting one re-attaches.
            self.signal = None;
        }
        sent
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Attach(signal) => {
                self.signal = Some(signal);
                if let Some(sdp) = self.offer.as_ref().map(|o| o.sdp.clone()) {
                    self.send_browser(ServerMsg::Offer { sdp });
                }
                // Always, even when nothing is paused: a change sent just
                // before the page gave up on its last socket was lost with
                // it, and the page still shows what that socket told it.
                self.send_browser(ServerMsg::VideoPaused { streams: self.paused.clone() });
                self.send_browser(ServerMsg::CameraLayers { send: self.layer_hold.sending() });
            }
            Command::Answer(sdp) => self.on_answer(sdp).await,
            Command::RestartIce => self.on_restart_request(),
            Command::Candidate(c) => self.on_candidate(c).await,
            Command::Screen(on) => self.set_screen(on).await,
            Command::Views(views) => {
                self.views = views;
                self.choose_layers();
            }
            Command::Subscribe(track) => self.subscribe(track).await,
            Command::Unsubscribe(track_id) => self.unsubscribe(&track_id).await,
        }
    }

    async fn subscribe(&mut self, track: Arc<PublishedTrack>) {
        if track.is_closed() || track.session == self.id || self.forwarders.contains_key(&track.id) {
            return;
        }
        let Some(pc) = self.pc.clone() else { return };
        let (free, reuse) = match self.free_slots[slot(track.kind)].first_key_value() {
            Some((index, freed)) => (Some(*index), Slot::Freed(freed.clone())),
            None => (None, Slot::New),
        };
        match Forwarder::start(&pc, &track, &self.participant, self.connected.clone(), self.downlink.clone(), reuse)
            .await
        {
            Ok(forwarder) => {
                if let Some(index) = free {
                    self.free_slots[slot(track.kind)].remove(&index);
                    let filled = rtc::rtp_transceiver::RTCRtpTransceiverId::from(forwarder.sender.id());
                    if filled != index {
                        tracing::warn!(session = %self.id, expected = index, filled, "a forwarder filled another freed slot than its stream's");
                    }
                }
                self.shared.live.forwarder(&forwarder);
                tracing::debug!(room = %self.code, session = %self.id, track = %track.id, "forwarder added");
                let id = forwarder.id.clone();
                self.forwarders.insert(track.id.clone(), forwarder);
                self.dirty = true;
                self.add_resource(ResourceKind::Forwarder, id).await;
            }
            Err(e) => {
                tracing::warn!(room = %self.code, session = %self.id, track = %track.id, error = %e, "forwarder not added");
            }
        }
    }

    /// Tells the page how many of its camera's layers to send: up to the
    /// largest some subscriber's tile wants (a thumbnail everywhere: the
    /// smallest only), so that what nobody receives costs the person's
    /// uplink nothing. Every tick, with [`Self::choose_layers`].
    fn hold_layers(&mut self) {
        let Some(session) = self.session.upgrade() else { return };
        // The camera: the layered video under the participant's own stream
        // (a screen share's is another).
        let stream = self.participant.as_str();
        let wanted = session
            .published_lock()
            .iter()
            .find(|t| t.kind == RtpCodecKind::Video && t.stream == stream && !t.is_closed() && t.layers().seen() > 1)
            .map(|t| t.layers().wanted());
        let Some(wanted) = wanted else { return };
        if let Some(send) = self.layer_hold.update(wanted, std::time::Instant::now()) {
            tracing::info!(room = %self.code, session = %self.id, send, ?wanted, "camera layers to send");
            self.send_browser(ServerMsg::CameraLayers { send });
        }
    }

    /// Chooses each video forwarder's layer from what its publisher sends,
    /// the width the page shows it at and this connection's estimate:
    /// audio is set aside first, then the largest tiles are served first.
    /// A track without layers is never held back (there is nothing smaller
    /// to send). The page is told which videos are paused.
    /// Each forwarder also says which layer its tile could use, for
    /// [`Self::hold_layers`] of the publisher's session.
    fn choose_layers(&mut self) {
        let now = std::time::Instant::now();
        let estimate = self.downlink.get();
        // Audio that is sent now (a muted microphone sends nothing).
        let audio = self
            .forwarders
            .values()
            .filter(|f| f.kind == RtpCodecKind::Audio && f.layers.states(now)[0].active)
            .count() as u64;
        let mut budget = (estimate > 0).then(|| estimate.saturating_sub(audio * AUDIO_RESERVE_BPS));
        let mut video: Vec<(&Arc<Forwarder>, Option<u32>)> = self
            .forwarders
            .values()
            .filter(|f| f.kind == RtpCodecKind::Video)
            .map(|f| (f, self.views.get(&f.stream).copied()))
            .collect();
        video.sort_by_key(|(f, view)| (std::cmp::Reverse(view.unwrap_or(u32::MAX)), f.id.clone()));
        let mut paused = Vec::new();
        // The largest tile the downlink holds back, and what its next
        // layer up would take more.
        let mut held_back: Option<(&Arc<Forwarder>, u64)> = None;
        let mut sending_video = 0u64;
        for (forwarder, view) in video {
            let layers = forwarder.layers.states(now);
            let costs = simulcast::costs(&layers);
            let layered = forwarder.layers.seen() > 1;
            forwarder.set_want(simulcast::wanted(&layers, view));
            let target = simulcast::choose(&layers, view, budget.filter(|_| layered), forwarder.target());
            if layered && budget.is_some() && held_back.is_none() {
                let wanted = simulcast::choose(&layers, view, None, forwarder.target());
                let next = layers
                    .iter()
                    .enumerate()
                    .filter(|(i, l)| l.active && target.is_none_or(|t| *i > usize::from(t)))
                    .find(|(i, _)| wanted.is_some_and(|w| *i <= usize::from(w)));
                if let Some((next, _)) = next {
                    let sent = target.map_or(0, |t| layers[usize::from(t)].bitrate);
                    // What the next layer needs to be chosen, and a tenth
                    // more (the estimate is what arrives, all of it)...
                    let more = (costs[next] as f64 * simulcast::UP_MARGIN * 1.1) as u64;
                    held_back = Some((forwarder, more.saturating_sub(sent)));
                }
            }
            if let (Some(left), Some(layer)) = (budget.as_mut(), target) {
                *left = left.saturating_sub(costs[usize::from(layer)]);
            }
            if let Some(layer) = target {
                sending_video += layers[usize::from(layer)].bitrate;
            }
            if target.is_none() && view != Some(0) {
                paused.push(forwarder.stream.clone());
            }
            if forwarder.set_target(target) {
                tracing::debug!(
                    room = %self.code, session = %self.id, forwarder = %forwarder.id, ?target, ?view, estimate,
                    "layer chosen"
                );
            }
        }
        if self.probes.due(now, held_back.is_some(), estimate) {
            if let Some((forwarder, more)) = held_back {
                // ...and at least enough that all that arrives is well over
                // the estimate (what raises its ceiling).
                // What is sent now: the layers' bitrates and the audio
                // reserve, or what the feedback says arrives when that is
                // less (the reserve is a bound, and a probe that falls
                // short of the bar shows no room where there is some).
                let assumed = audio * AUDIO_RESERVE_BPS + sending_video;
                let received = self.downlink.received();
                let sending = if received > 0 { assumed.min(received) } else { assumed };
                let over = (estimate as f64 * PROBE_OVER) as u64;
                // No more than doubles what the estimate says (on a link
                // that is as narrow as it says, a probe only queues for a
                // moment, and loses nothing), so from far down it climbs
                // in steps, a second apart while each finds room.
                let bps = more.max(over.saturating_sub(sending)).min(estimate.max(PROBE_MIN_BPS));
                tracing::debug!(
                    room = %self.code, session = %self.id, forwarder = %forwarder.id, bps, estimate, assumed, received,
                    "probing"
                );
                metrics::counter!(crate::metrics::PROBES).increment(1);
                forwarder.probe(bps, PROBE_FOR);
            }
        }
        paused.sort();
        if paused != self.paused {
            tracing::info!(room = %self.code, session = %self.id, ?paused, estimate, "paused videos changed");
            self.paused = paused.clone();
            self.send_browser(ServerMsg::VideoPaused { streams: paused });
        }
    }

    async fn unsubscribe(&mut self, track_id: &str) {
        let Some(forwarder) = self.forwarders.remove(track_id) else { return };
        // Close it first: the track's fan-out listens to it under the local
        // track's event lock that `remove_track` (unbind) takes, and lets go
        // of it once it hears of the close.
        forwarder.close();
        if let Some(pc) = &self.pc {
            match pc.remove_track(&forwarder.sender).await {
                Ok(()) => {
                    // The slot keeps the codecs of the track it carried; the
                    // next forwarder there may be of another codec (VP8 after
                    // H.264), so it offers what the next track brings.
                    let slot_id = rtc::rtp_transceiver::RTCRtpTransceiverId::from(forwarder.sender.id());
                    let freed = pc.get_transceivers().await.into_iter().find(|t| t.id() == slot_id);
                    if let Some(transceiver) = freed {
                        if let Err(e) = transceiver.set_codec_preferences(vec![]).await {
                            tracing::warn!(session = %self.id, error = %e, "freed slot keeps its codecs");
                        }
                    }
                    self.free_slots[slot(forwarder.kind)].insert(slot_id, forwarder.freed_slot());
                }
                Err(e) => {
                    tracing::debug!(session = %self.id, track = %track_id, error = %e, "remove_track failed")
                }
            }
        }
        self.dirty = true;
        let id = forwarder.id.clone();
        drop(forwarder);
        self.remove_resource(ResourceKind::Forwarder, &id).await;
        tracing::debug!(room = %self.code, session = %self.id, track = %track_id, "forwarder removed");
    }

    async fn on_event(&mut self, event: PcEvent) {
        match event {
            PcEvent::Candidate(init) => {
                let candidate = IceCandidate {
                    candidate: self.shared.config.announce.candidate(&init.candidate),
                    // Bundled: every candidate belongs to the first m-line.
                    sdp_mid: Some("0".to_owned()),
                    sdp_m_line_index: Some(0),
                    username_fragment: None,
                };
                self.send_browser(ServerMsg::IceCandidate { candidate });
            }
            PcEvent::Track(remote) => self.publish(remote).await,
            PcEvent::Ice(state) => {
                tracing::debug!(session = %self.id, state = %state, "ICE state");
                if state == RTCIceConnectionState::Failed {
                    self.request_end(LeaveReason::IceFailed);
                }
            }
            PcEvent::State(state) => {
                tracing::debug!(session = %self.id, state = %state, "connection state");
                if state == RTCPeerConnectionState::Connected && !self.connected.swap(true, Ordering::AcqRel) {
                    // Subscribers' video starts with a keyframe.
                    for forwarder in self.forwarders.values() {
                        forwarder.request_keyframe();
                    }
                }
                if state == RTCPeerConnectionState::Failed {
                    self.request_end(LeaveReason::IceFailed);
                }
            }
            PcEvent::TrackEnded(track_id) => {
                if self.screen.published.as_deref() == Some(track_id.as_str()) {
                    self.screen.published = None;
                }
                let session = self.session.upgrade();
                let still_published =
                    session.as_ref().is_some_and(|s| s.published_lock().iter().any(|t| t.id == track_id));
                if let (true, Some(session)) = (still_published, session) {
                    if let Some(room) = self.room.upgrade() {
                        room.unpublish(&session, &track_id);
                    }
                    self.remove_resource(ResourceKind::Track, &track_id).await;
                }
            }
        }
    }

    /// Asks the room service to end the session through its close path.
    fn request_end(&self, reason: LeaveReason) {
        tracing::info!(room = %self.code, session = %self.id, reason = reason.as_str(), "media asks to end the session");
        let _ = self.shared.end.send(EndRequest {
            room: self.code.clone(),
            session: self.id.clone(),
            user: self.user.clone(),
            reason,
        });
    }

    /// Closes the session (if anybody still holds it) or at least its token.
    fn close(&self, reason: LeaveReason) {
        match self.session.upgrade() {
            Some(session) => {
                session.close(reason);
            }
            None => self.token.cancel(),
        }
    }

    /// Spawns a task tracked by this session and by the node, on the
    /// thread the actor runs on (its room's worker).
    fn spawn_task<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        tokio::spawn(self.shared.tasks.track_future(self.tasks.track_future(task)));
    }

    async fn publish(&mut self, remote: Arc<dyn TrackRemote>) {
        let ssrcs = remote.ssrcs().await;
        let Some(&ssrc) = ssrcs.first() else { return };
        if !self.seen_ssrcs.insert(ssrc) {
            return;
        }
        if self.is_screen(&remote).await {
            tracing::debug!(room = %self.code, session = %self.id, "screen share received");
            self.screen.remote = Some(remote);
            if self.screen.on {
                self.publish_screen().await;
            }
            return;
        }
        let stream = self.participant.to_string();
        self.publish_remote(remote, stream).await;
    }

    /// Whether `remote` arrived on the screen share's transceiver.
    async fn is_screen(&self, remote: &Arc<dyn TrackRemote>) -> bool {
        let (Some(pc), Some(screen)) = (&self.pc, self.screen.transceiver) else { return false };
        for t in pc.get_transceivers().await {
            if t.id() != screen {
                continue;
            }
            if let Ok(Some(receiver)) = t.receiver().await {
                return std::ptr::addr_eq(Arc::as_ptr(receiver.track()), Arc::as_ptr(remote));
            }
        }
        false
    }

    /// The person shares (`on`) or stopped: publish the share (once its
    /// first packet came), or withdraw it from everybody and release it.
    async fn set_screen(&mut self, on: bool) {
        self.screen.on = on;
        if on {
            if self.screen.published.is_none() && self.screen.remote.is_some() {
                self.publish_screen().await;
            }
            return;
        }
        let Some(id) = self.screen.published.take() else { return };
        if let Some(session) = self.session.upgrade() {
            let track = session.published_lock().iter().find(|t| t.id == id).cloned();
            if let Some(room) = self.room.upgrade() {
                room.unpublish(&session, &id);
            }
            if let Some(track) = track {
                track.close();
            }
        }
        self.remove_resource(ResourceKind::Track, &id).await;
        tracing::info!(room = %self.code, session = %self.id, track = %id, "screen share withdrawn");
    }

    /// Publishes the screen share's remote track (again) as a new track.
    async fn publish_screen(&mut self) {
        let Some(remote) = self.screen.remote.clone() else { return };
        let stream = super::super::track::screen_stream(&self.participant);
        self.screen.published = Some(self.publish_remote(remote, stream).await);
    }

    /// Publishes a remote track under `stream`; returns its id.
    async fn publish_remote(&mut self, remote: Arc<dyn TrackRemote>, stream: String) -> String {
        let ssrc = remote.ssrcs().await.first().copied().unwrap_or_default();
        let kind = remote.kind().await;
        let codec = remote.codec(ssrc).await.unwrap_or_else(|| default_codec(kind));
        let audio_level_id = match (&self.pc, kind) {
            (Some(pc), RtpCodecKind::Audio) => audio_level_id(pc, &remote).await,
            _ => None,
        };
        self.next_track += 1;
        let id = format!("{}-{}-{}", self.participant, kind_name(kind), self.next_track);
        let (track, reader) = PublishedTrack::new(
            id.clone(),
            self.participant.clone(),
            stream,
            self.id.clone(),
            kind,
            codec,
            ssrc,
            audio_level_id,
            self.publisher_state.clone(),
            remote,
            self.token.child_token(),
        );
        self.shared.live.track(&track);
        let events = self.events.clone();
        self.spawn_task(async move {
            let id = reader.run().await;
            if let Some(events) = events {
                let _ = events.send(PcEvent::TrackEnded(id));
            }
        });
        tracing::info!(
            room = %self.code, session = %self.id, track = %id, mime = %track.codec.mime_type,
            audio_level_id = ?audio_level_id, "track published"
        );
        self.add_resource(ResourceKind::Track, id.clone()).await;
        match (self.room.upgrade(), self.session.upgrade()) {
            (Some(room), Some(session)) => room.publish(&session, track),
            _ => {
                track.close();
            }
        }
        id
    }

    async fn teardown(mut self) {
        // Forwarders first (they hold locks `close` takes), then our tracks.
        for (_, forwarder) in self.forwarders.drain() {
            forwarder.close();
        }
        // Gone already: the room let go of it, and its tracks went with it.
        let session = self.session.upgrade();
        if let Some(s) = &session {
            for track in s.published() {
                track.close();
            }
            if let Some(room) = self.room.upgrade() {
                room.detach(s);
                self.shared.forget_room_if_empty(&self.code);
            }
        }
        self.events = None;
        if let Some(pc) = self.pc.take() {
            match tokio::time::timeout(self.shared.config.close_timeout, pc.close()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(session = %self.id, error = %e, "peer connection close failed"),
                Err(_) => tracing::warn!(session = %self.id, "peer connection close timed out"),
            }
        }
        for (kind, id) in std::mem::take(&mut self.resources) {
            if let Err(e) = self.shared.store.remove_resource(&self.code, &self.id, kind, &id).await {
                tracing::warn!(room = %self.code, session = %self.id, error = %e, "media resource not removed");
            }
        }
        tracing::info!(
            room = %self.code, session = %self.id, participant = %self.participant,
            reason = session.and_then(|s| s.reason()).map(|r| r.as_str()).unwrap_or("cancelled"),
            "media session closed"
        );
    }
}

/// The id the publisher's audio level extension was negotiated with: from
/// the track's receiver, else from the remote description.
async fn audio_level_id(pc: &Arc<dyn PeerConnection>, remote: &Arc<dyn TrackRemote>) -> Option<u8> {
    let same = |a: &Arc<dyn TrackRemote>| std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(remote));
    for receiver in pc.get_receivers().await {
        if !same(receiver.track()) {
            continue;
        }
        if let Ok(params) = receiver.get_parameters().await {
            let id = params.rtp_parameters.header_extensions.iter().find(|e| e.uri == AUDIO_LEVEL_URI);
            if let Some(id) = id.and_then(|e| u8::try_from(e.id).ok()) {
                return Some(id);
            }
        }
    }
    let sdp = pc.remote_description().await?.sdp;
    extmap_id(&sdp, AUDIO_LEVEL_URI)
}

/// The id of an `a=extmap:<id>[/<direction>] <uri>` line of an SDP.
fn extmap_id(sdp: &str, uri: &str) -> Option<u8> {
    sdp.lines().find_map(|line| {
        let rest = line.trim_end().strip_prefix("a=extmap:")?;
        let (id, rest) = rest.split_once(' ')?;
        let found = rest.split_whitespace().next()? == uri;
        let id = id.split('/').next()?.parse::<u8>().ok()?;
        (found && id != 0).then_some(id)
    })
}

fn default_codec(kind: RtpCodecKind) -> RTCRtpCodec {
    use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
    match kind {
        RtpCodecKind::Audio => RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        _ => RTCRtpCodec {
            mime_type: MIME_TYPE_VP8.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_ids_are_read_from_extmap_lines() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
                   a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
                   a=extmap:1/sendrecv urn:ietf:params:rtp-hdrext:ssrc-audio-level vad=on\r\n";
        assert_eq!(extmap_id(sdp, AUDIO_LEVEL_URI), Some(1));
        assert_eq!(extmap_id(sdp, "urn:ietf:params:rtp-hdrext:sdes:mid"), Some(4));
        assert_eq!(extmap_id(sdp, "urn:x"), None);
        assert_eq!(extmap_id("a=extmap:0 urn:x\r\na=extmap:zz urn:x", "urn:x"), None);
    }
}
