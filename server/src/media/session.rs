//! One media session: the peer connection of one joined session, owned by
//! one task (the "actor") that also owns its negotiation state, its
//! published tracks' readers and the forwarders feeding it.
//!
//! Everything reaches the task as a message: commands from the socket and
//! the room (`Command`), events from the connection's callbacks
//! (`PcEvent`, sent from the driver task, which must never own the
//! connection). The server is the only offerer: one offer in flight at a
//! time; changes made meanwhile set `dirty` and go into the next offer; an
//! offer unanswered for `offer_timeout` is rolled back and offered again.
//!
//! The session's [`PublisherState`] (forwarding switches, audio levels) is
//! shared with every track it publishes, now or after a renegotiation; the
//! room reads its levels to decide the active speaker.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant as StdInstant};

use app::model::{LeaveReason, MediaKind, ParticipantId, RoomCode, SessionId, UserId};
use app::signal::{IceCandidate, ServerMsg};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCOfferOptions;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCIceCandidateInit, RTCIceConnectionState, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription,
};

use super::engine::{build_peer_connection, AUDIO_LEVEL_URI};
use super::forwarder::Forwarder;
use super::track::{media_kind, PublishedTrack, PublisherState};
use super::{EndRequest, MediaError, RoomMedia, Shared};
use crate::lifetime::Lifetime;
use crate::participant::LiveSession;
use crate::store::ResourceKind;

/// ICE restarts granted to one session at most this often.
const RESTART_EVERY: Duration = Duration::from_secs(2);

/// What the socket and the room ask of a media session.
enum Command {
    /// A (re)connected socket: offers and candidates go there from now on.
    Attach(mpsc::UnboundedSender<ServerMsg>),
    /// The browser's answer to the latest offer.
    Answer(String),
    /// A browser ICE candidate.
    Candidate(IceCandidate),
    /// Forward another participant's track to this session.
    Subscribe(Arc<PublishedTrack>),
    /// Stop forwarding that track (its publisher left or unpublished).
    Unsubscribe(String),
    /// The browser lost its media path: the next offer restarts ICE.
    RestartIce,
}

/// What the connection's callbacks and this session's readers report.
enum PcEvent {
    Candidate(RTCIceCandidateInit),
    Track(Arc<dyn TrackRemote>),
    Ice(RTCIceConnectionState),
    State(RTCPeerConnectionState),
    /// A published track's reader stopped (remote track ended).
    TrackEnded(String),
}

/// The connection's event handler: holds only a sender to the owning task.
struct Events(mpsc::UnboundedSender<PcEvent>);

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Events {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self.0.send(PcEvent::Candidate(init));
        }
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.0.send(PcEvent::Track(track));
    }
    async fn on_ice_connection_state_change(&self, state: RTCIceConnectionState) {
        let _ = self.0.send(PcEvent::Ice(state));
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.0.send(PcEvent::State(state));
    }
}

/// The handle of one media session, held by its room (and its task).
pub struct MediaSession {
    pub id: SessionId,
    pub room: RoomCode,
    pub user: UserId,
    pub participant: ParticipantId,
    cmds: mpsc::UnboundedSender<Command>,
    /// Closed once; its token is a child of the `LiveSession` token, so
    /// ending the session closes its media.
    lifetime: Lifetime<LeaveReason>,
    /// Tracks this session publishes (read by arriving sessions under the
    /// room lock).
    published: Mutex<Vec<Arc<PublishedTrack>>>,
    /// Forwarding switches and audio levels, shared with its tracks.
    publisher_state: Arc<PublisherState>,
    /// This session's tasks (the actor, readers, forwarders); closed at
    /// creation, so `wait` resolves once they have all ended.
    tasks: TaskTracker,
}

impl std::fmt::Debug for MediaSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaSession").field("id", &self.id).field("room", &self.room).finish()
    }
}

impl MediaSession {
    /// Makes the session and starts its task; `existing` are the room's
    /// tracks to subscribe to in the first offer.
    pub(crate) fn spawn(
        shared: &Arc<Shared>,
        room: &Arc<RoomMedia>,
        live: &LiveSession,
        signal: mpsc::UnboundedSender<ServerMsg>,
        existing: Vec<Arc<PublishedTrack>>,
    ) -> Arc<Self> {
        let (cmds, cmd_rx) = mpsc::unbounded_channel();
        for track in existing {
            let _ = cmds.send(Command::Subscribe(track));
        }
        let tasks = TaskTracker::new();
        tasks.close();
        let session = Arc::new(Self {
            id: live.id.clone(),
            room: live.room.clone(),
            user: live.user.clone(),
            participant: live.participant.clone(),
            cmds,
            lifetime: Lifetime::new(live.token().child_token()),
            published: Mutex::new(Vec::new()),
            publisher_state: Arc::new(PublisherState::default()),
            tasks,
        });
        let actor = Actor {
            session: session.clone(),
            shared: shared.clone(),
            room: Arc::downgrade(room),
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
            free_slots: [0, 0],
        };
        session.spawn_task(shared, actor.run(cmd_rx));
        session
    }

    /// Spawns a task tracked by this session and by the node.
    fn spawn_task<F>(&self, shared: &Shared, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        tokio::spawn(shared.tasks.track_future(self.tasks.track_future(task)));
    }

    fn send(&self, cmd: Command) {
        // Fails only once the task has ended: nothing left to do then.
        let _ = self.cmds.send(cmd);
    }

    /// A (re)connected socket.
    pub fn attach(&self, signal: mpsc::UnboundedSender<ServerMsg>) {
        self.send(Command::Attach(signal));
    }

    /// The browser's answer to the latest offer.
    pub fn answer(&self, sdp: String) {
        self.send(Command::Answer(sdp));
    }

    /// A browser ICE candidate.
    pub fn candidate(&self, candidate: IceCandidate) {
        self.send(Command::Candidate(candidate));
    }

    /// The browser asks for an ICE restart (its network changed).
    pub fn restart_ice(&self) {
        self.send(Command::RestartIce);
    }

    pub(crate) fn subscribe(&self, track: Arc<PublishedTrack>) {
        self.send(Command::Subscribe(track));
    }

    pub(crate) fn unsubscribe(&self, track_id: String) {
        self.send(Command::Unsubscribe(track_id));
    }

    fn published_lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<PublishedTrack>>> {
        self.published.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The tracks this session publishes now.
    pub fn published(&self) -> Vec<Arc<PublishedTrack>> {
        self.published_lock().iter().filter(|t| !t.is_closed()).cloned().collect()
    }

    pub(crate) fn add_published(&self, track: Arc<PublishedTrack>) {
        self.published_lock().push(track);
    }

    pub(crate) fn remove_published(&self, track_id: &str) {
        self.published_lock().retain(|t| {
            if t.id == track_id {
                t.close();
                false
            } else {
                true
            }
        });
    }

    pub(crate) fn take_published(&self) -> Vec<Arc<PublishedTrack>> {
        std::mem::take(&mut *self.published_lock())
    }

    /// Switches forwarding of this session's media of `kind` to every
    /// subscriber (tracks and forwarders stay). Video switched back on asks
    /// for a keyframe, so subscribers resume at once.
    pub fn set_forwarding(&self, kind: MediaKind, on: bool) {
        let was = self.publisher_state.set_forwarding(kind, on);
        tracing::info!(room = %self.room, session = %self.id, kind = kind.as_str(), on, "forwarding switched");
        if on && !was && kind == MediaKind::Video {
            for track in self.published().iter().filter(|t| media_kind(t.kind) == MediaKind::Video) {
                track.request_keyframe();
            }
        }
    }

    /// Whether this session's media of `kind` is forwarded.
    pub fn forwarding(&self, kind: MediaKind) -> bool {
        self.publisher_state.forwarding(kind)
    }

    /// The mean audio level of the last moment if this session is speaking
    /// (and its audio is forwarded).
    pub(crate) fn speaking(&self, now: StdInstant) -> Option<u8> {
        if !self.publisher_state.forwarding(MediaKind::Audio) {
            return None;
        }
        self.publisher_state.levels().speaking(now)
    }

    /// The one close path: records the reason and cancels the session's
    /// token; its task then releases everything. Returns `true` for the one
    /// call that closed it.
    pub fn close(&self, reason: LeaveReason) -> bool {
        self.lifetime.close(reason)
    }

    pub fn is_closed(&self) -> bool {
        self.lifetime.is_closed()
    }

    pub fn reason(&self) -> Option<LeaveReason> {
        self.lifetime.reason()
    }

    /// Resolves once every task of the session has ended.
    pub async fn closed(&self) {
        self.tasks.wait().await;
    }
}

impl Drop for MediaSession {
    fn drop(&mut self) {
        // Backstop: a session dropped without a close still stops its tasks.
        if !self.is_closed() {
            tracing::warn!(session = %self.id, room = %self.room, "media session dropped without close");
            self.close(LeaveReason::Reaped);
        }
    }
}

/// The offer in flight.
struct InFlight {
    /// Rolled back and offered again after this.
    deadline: Instant,
    /// The offer's SDP, sent again to a re-attached socket.
    sdp: String,
    /// Published track ids whose forwarders this offer negotiates.
    covers: Vec<String>,
}

/// The task that owns one session's connection.
struct Actor {
    session: Arc<MediaSession>,
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
    /// video): the next forwarder of that kind reuses one, so the SDP grows
    /// only to the most tracks ever forwarded at once.
    free_slots: [usize; 2],
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
    async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Command>) {
        let token = self.session.lifetime.token().clone();
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let started = tokio::select! {
            () = token.cancelled() => Err(MediaError::Closed),
            started = self.start(events_tx) => started,
        };
        if let Err(e) = started {
            if !matches!(e, MediaError::Closed) {
                // No media for this session: end it as a media failure, so
                // the page is told instead of waiting for offers forever.
                tracing::warn!(room = %self.session.room, session = %self.session.id, error = %e, "media not started");
                self.request_end(LeaveReason::IceFailed);
            }
            self.session.close(LeaveReason::IceFailed);
        } else {
            // The room's tracks queued at creation go into the first offer.
            while let Ok(cmd) = cmds.try_recv() {
                self.handle(cmd).await;
            }
            loop {
                self.maybe_offer().await;
                let deadline = self.offer.as_ref().map(|o| o.deadline);
                tokio::select! {
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
        let pc = build_peer_connection(&self.shared.config.ice, &self.shared.ports, handler).await?;
        self.shared.live.peer_connection(&pc);
        self.pc = Some(pc.clone());
        self.events = Some(events_tx);
        // The participant's own audio and video: two receive-only
        // transceivers. Each carries an idle placeholder sender (stream "-",
        // which says "no stream"), so that `add_track` never picks them for a
        // forwarded track: it fills the first sender-less transceiver of the
        // kind, and those must only be the freed forwarder slots.
        for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
            let placeholder = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
                "-".to_owned(),
                format!("{}-self-{}", self.session.participant, kind_name(kind)),
                format!("{}-self-{}", self.session.participant, kind_name(kind)),
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
        }
        self.add_resource(ResourceKind::PeerConnection, self.session.id.to_string()).await;
        tracing::info!(room = %self.session.room, session = %self.session.id, participant = %self.session.participant, "media session started");
        Ok(())
    }

    async fn add_resource(&mut self, kind: ResourceKind, id: String) {
        let s = &self.session;
        if let Err(e) = self.shared.store.add_resource(&s.room, &s.id, kind, &id).await {
            tracing::warn!(room = %s.room, session = %s.id, error = %e, "media resource not recorded");
        }
        self.resources.push((kind, id));
    }

    async fn remove_resource(&mut self, kind: ResourceKind, id: &str) {
        self.resources.retain(|(k, i)| !(*k == kind && i == id));
        let s = &self.session;
        if let Err(e) = self.shared.store.remove_resource(&s.room, &s.id, kind, id).await {
            tracing::warn!(room = %s.room, session = %s.id, error = %e, "media resource not removed");
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
            }
            Command::Answer(sdp) => self.on_answer(sdp).await,
            Command::RestartIce => {
                // One restart per RESTART_EVERY at most, however often a page
                // asks (each makes an offer); an offer in flight is answered
                // first, then the restart follows.
                let now = Instant::now();
                if self.last_restart.is_some_and(|at| now.duration_since(at) < RESTART_EVERY) {
                    return;
                }
                self.last_restart = Some(now);
                metrics::counter!(crate::metrics::ICE_RESTARTS).increment(1);
                tracing::info!(room = %self.session.room, session = %self.session.id, "ICE restart asked");
                self.restart_ice = true;
                self.dirty = true;
                // The browser gathers anew: its new candidates get a fresh allowance.
                self.remote_candidates = 0;
            }
            Command::Candidate(c) => {
                // The empty candidate marks the end of the browser's list.
                if c.candidate.is_empty() {
                    return;
                }
                let Some(pc) = &self.pc else { return };
                if let Err(why) = self.shared.config.candidates.judge(&c, self.remote_candidates) {
                    metrics::counter!(crate::metrics::REMOTE_CANDIDATES, "verdict" => "refused").increment(1);
                    tracing::debug!(session = %self.session.id, ?why, "remote candidate not used");
                    return;
                }
                let init = RTCIceCandidateInit {
                    candidate: c.candidate,
                    sdp_mid: c.sdp_mid,
                    sdp_mline_index: c.sdp_m_line_index,
                    username_fragment: c.username_fragment,
                    ..Default::default()
                };
                match pc.add_ice_candidate(init).await {
                    Ok(()) => {
                        self.remote_candidates += 1;
                        metrics::counter!(crate::metrics::REMOTE_CANDIDATES, "verdict" => "accepted").increment(1);
                    }
                    Err(e) => {
                        metrics::counter!(crate::metrics::REMOTE_CANDIDATES, "verdict" => "refused").increment(1);
                        tracing::debug!(session = %self.session.id, error = %e, "remote candidate refused");
                    }
                }
            }
            Command::Subscribe(track) => self.subscribe(track).await,
            Command::Unsubscribe(track_id) => self.unsubscribe(&track_id).await,
        }
    }

    async fn subscribe(&mut self, track: Arc<PublishedTrack>) {
        if track.is_closed() || track.session == self.session.id || self.forwarders.contains_key(&track.id) {
            return;
        }
        let Some(pc) = self.pc.clone() else { return };
        let reuse = self.free_slots[slot(track.kind)] > 0;
        match Forwarder::start(&pc, &track, &self.session.participant, self.connected.clone(), reuse).await {
            Ok((forwarder, tasks)) => {
                if reuse {
                    self.free_slots[slot(track.kind)] -= 1;
                }
                self.shared.live.forwarder(&forwarder);
                self.session.spawn_task(&self.shared, tasks.packets);
                self.session.spawn_task(&self.shared, tasks.feedback);
                tracing::debug!(room = %self.session.room, session = %self.session.id, track = %track.id, "forwarder added");
                let id = forwarder.id.clone();
                self.forwarders.insert(track.id.clone(), forwarder);
                self.dirty = true;
                self.add_resource(ResourceKind::Forwarder, id).await;
            }
            Err(e) => {
                tracing::warn!(room = %self.session.room, session = %self.session.id, track = %track.id, error = %e, "forwarder not added");
            }
        }
    }

    async fn unsubscribe(&mut self, track_id: &str) {
        let Some(forwarder) = self.forwarders.remove(track_id) else { return };
        // Stop its loops first: they hold the local track's event lock that
        // `remove_track` (unbind) takes.
        forwarder.close();
        if let Some(pc) = &self.pc {
            match pc.remove_track(&forwarder.sender).await {
                Ok(()) => self.free_slots[slot(forwarder.kind)] += 1,
                Err(e) => {
                    tracing::debug!(session = %self.session.id, track = %track_id, error = %e, "remove_track failed")
                }
            }
        }
        self.dirty = true;
        let id = forwarder.id.clone();
        drop(forwarder);
        self.remove_resource(ResourceKind::Forwarder, &id).await;
        tracing::debug!(room = %self.session.room, session = %self.session.id, track = %track_id, "forwarder removed");
    }

    async fn maybe_offer(&mut self) {
        if !self.dirty || self.offer.is_some() || self.signal.is_none() {
            return;
        }
        let Some(pc) = self.pc.clone() else { return };
        self.dirty = false;
        let restart = std::mem::take(&mut self.restart_ice);
        let deadline = Instant::now() + self.shared.config.offer_timeout;
        let made = async {
            let options = restart.then_some(RTCOfferOptions { ice_restart: true });
            let offer = pc.create_offer(options).await?;
            pc.set_local_description(offer).await?;
            let sdp = pc.local_description().await.map(|d| d.sdp).unwrap_or_default();
            Ok::<_, MediaError>(self.shared.config.announce.sdp(&sdp))
        }
        .await;
        match made {
            Ok(sdp) => {
                self.send_browser(ServerMsg::Offer { sdp: sdp.clone() });
                let covers = self.forwarders.keys().cloned().collect();
                self.offer = Some(InFlight { deadline, sdp, covers });
                tracing::debug!(room = %self.session.room, session = %self.session.id, "offer sent");
            }
            Err(e) => {
                tracing::warn!(room = %self.session.room, session = %self.session.id, error = %e, "offer not made; retrying");
                self.rollback().await;
                self.dirty = true;
                // Retry at the next deadline rather than spinning.
                self.offer = Some(InFlight { deadline, sdp: String::new(), covers: Vec::new() });
            }
        }
    }

    async fn rollback(&mut self) {
        let Some(pc) = &self.pc else { return };
        match RTCSessionDescription::rollback(None) {
            Ok(desc) => {
                if let Err(e) = pc.set_local_description(desc).await {
                    tracing::debug!(session = %self.session.id, error = %e, "rollback refused");
                }
            }
            Err(e) => tracing::debug!(session = %self.session.id, error = %e, "rollback not built"),
        }
    }

    async fn offer_timed_out(&mut self) {
        if self.offer.take().is_some_and(|o| !o.sdp.is_empty()) {
            tracing::warn!(room = %self.session.room, session = %self.session.id, "offer unanswered; rolling back and offering again");
            self.rollback().await;
        }
        self.dirty = true;
    }

    async fn on_answer(&mut self, sdp: String) {
        let Some(pc) = self.pc.clone() else { return };
        let Some(offer) = self.offer.take() else {
            tracing::warn!(session = %self.session.id, "answer without an offer in flight; ignored");
            return;
        };
        let applied = match RTCSessionDescription::answer(sdp) {
            Ok(desc) => pc.set_remote_description(desc).await,
            Err(e) => Err(e),
        };
        if let Err(e) = applied {
            tracing::warn!(room = %self.session.room, session = %self.session.id, error = %e, "answer refused; offering again");
            self.rollback().await;
            self.dirty = true;
            return;
        }
        // New forwarders now have a negotiated sender: learn the payload
        // type and ask their publishers for a keyframe.
        for forwarder in offer.covers.iter().filter_map(|id| self.forwarders.get(id)) {
            if forwarder.negotiated().await {
                forwarder.request_keyframe();
            }
        }
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
                tracing::debug!(session = %self.session.id, state = %state, "ICE state");
                if state == RTCIceConnectionState::Failed {
                    self.request_end(LeaveReason::IceFailed);
                }
            }
            PcEvent::State(state) => {
                tracing::debug!(session = %self.session.id, state = %state, "connection state");
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
                let still_published = self.session.published_lock().iter().any(|t| t.id == track_id);
                if still_published {
                    if let Some(room) = self.room.upgrade() {
                        room.unpublish(&self.session, &track_id);
                    }
                    self.remove_resource(ResourceKind::Track, &track_id).await;
                }
            }
        }
    }

    /// Asks the room service to end the session through its close path.
    fn request_end(&self, reason: LeaveReason) {
        let s = &self.session;
        tracing::info!(room = %s.room, session = %s.id, reason = reason.as_str(), "media asks to end the session");
        let _ = self.shared.end.send(EndRequest {
            room: s.room.clone(),
            session: s.id.clone(),
            user: s.user.clone(),
            reason,
        });
    }

    async fn publish(&mut self, remote: Arc<dyn TrackRemote>) {
        let ssrcs = remote.ssrcs().await;
        let Some(&ssrc) = ssrcs.first() else { return };
        if !self.seen_ssrcs.insert(ssrc) {
            return;
        }
        let kind = remote.kind().await;
        let codec = remote.codec(ssrc).await.unwrap_or_else(|| default_codec(kind));
        let audio_level_id = match (&self.pc, kind) {
            (Some(pc), RtpCodecKind::Audio) => audio_level_id(pc, &remote).await,
            _ => None,
        };
        self.next_track += 1;
        let id = format!("{}-{}-{}", self.session.participant, kind_name(kind), self.next_track);
        let (track, reader) = PublishedTrack::new(
            id.clone(),
            self.session.participant.clone(),
            self.session.id.clone(),
            kind,
            codec,
            ssrc,
            audio_level_id,
            self.session.publisher_state.clone(),
            remote,
            self.session.lifetime.child_token(),
        );
        self.shared.live.track(&track);
        let events = self.events.clone();
        self.session.spawn_task(&self.shared, async move {
            let id = reader.run().await;
            if let Some(events) = events {
                let _ = events.send(PcEvent::TrackEnded(id));
            }
        });
        tracing::info!(
            room = %self.session.room, session = %self.session.id, track = %id, mime = %track.codec.mime_type,
            audio_level_id = ?audio_level_id, "track published"
        );
        self.add_resource(ResourceKind::Track, id).await;
        if let Some(room) = self.room.upgrade() {
            room.publish(&self.session, track);
        } else {
            track.close();
        }
    }

    async fn teardown(mut self) {
        let s = self.session.clone();
        // Forwarders first (they hold locks `close` takes), then our tracks.
        for (_, forwarder) in self.forwarders.drain() {
            forwarder.close();
        }
        for track in s.published() {
            track.close();
        }
        if let Some(room) = self.room.upgrade() {
            room.detach(&s);
            self.shared.forget_room_if_empty(&s.room);
        }
        self.events = None;
        if let Some(pc) = self.pc.take() {
            match tokio::time::timeout(self.shared.config.close_timeout, pc.close()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(session = %s.id, error = %e, "peer connection close failed"),
                Err(_) => tracing::warn!(session = %s.id, "peer connection close timed out"),
            }
        }
        for (kind, id) in std::mem::take(&mut self.resources) {
            if let Err(e) = self.shared.store.remove_resource(&s.room, &s.id, kind, &id).await {
                tracing::warn!(room = %s.room, session = %s.id, error = %e, "media resource not removed");
            }
        }
        tracing::info!(
            room = %s.room, session = %s.id, participant = %s.participant,
            reason = s.reason().map(|r| r.as_str()).unwrap_or("cancelled"),
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
