//! # The SFU
//!
//! (Longer than the house's ~500 lines: the node's registry, a room's
//! fan-out and the counts share one set of locks and `Weak` lists, and read
//! best together; sessions, tracks and forwarders have their own files.)
//!
//! Media of this node: one [`session::MediaSession`] per joined (admitted)
//! session whose signalling socket connected, grouped per room. The server
//! is the only offerer; browsers answer.
//!
//! Ownership (no cycles: registries hold `Arc` downwards only, callbacks
//! send events to the owning task):
//! - [`Sfu`] owns the rooms' media (`RoomMedia`); a room's media owns its
//!   sessions.
//! - A media session's task owns its peer connection, its published tracks
//!   ([`track::PublishedTrack`]) and the forwarders feeding it
//!   ([`forwarder::Forwarder`], one per (published track, subscriber)).
//! - A forwarder's token is a child of its published track's token, which
//!   is a child of the publisher session's token, which is a child of the
//!   `LiveSession` token: a close cascades down.
//!
//! Close paths: [`session::MediaSession::close`] (exactly once, atomic swap;
//! `Drop` as backstop: the session's task holds it only by `Weak`) cancels
//! the session's token; its task then closes the
//! forwarders and tracks, detaches from the room (the other sessions drop
//! their forwarders of its tracks and renegotiate), closes the peer
//! connection and removes its store resources. [`Sfu::start_close`] is
//! what `Rooms::end_session` calls: close, then wait for the task.
//!
//! Counting: [`Sfu::counts`] counts live objects through `Weak` registries
//! (`retain(alive)`), so anything leaked stays visible.
//!
//! Threads (`workers.rs`): a room's media runs on one thread, a runtime of
//! its own, one per core; a new room goes to the one with the fewest
//! rooms. Its sessions' tasks are spawned there, and so are the tasks
//! they spawn and their peer connections' drivers.
//!
//! Active speaker ([`speaker`]): each publisher's audio readers record the
//! RFC 6464 levels of its packets; each room's evaluator task (one per
//! `RoomMedia`, tracked with the media tasks, ended when the room's media
//! is forgotten or at shutdown) decides every [`speaker::EVALUATE_EVERY`]
//! and sends a [`SpeakerChange`] only when the decision changes. A
//! publisher leaving the room is dropped from the decision at once (a
//! change to nobody if it was the speaker). Changes of one room are sent
//! under that room's decision lock, so they arrive in decision order.
//!
//! Forwarding switches ([`Sfu::set_forwarding`], an admin mute): per
//! publisher and kind, remembered by its session and obeyed by every track
//! it publishes, now or later; suppressed audio never counts as speech.

pub mod announce;
pub mod candidates;
mod engine;
pub mod estimate;
pub mod forwarder;
pub mod h264;
pub mod ice_servers;
mod resend;
pub mod session;
pub mod simulcast;
pub mod speaker;
pub mod track;
mod workers;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use app::model::{LeaveReason, MediaKind, RoomCode, SessionId, UserId};
use app::signal::ServerMsg;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use webrtc::peer_connection::PeerConnection;

pub use engine::{
    build_peer_connection, is_keyframe_request, offered_video, parse_audio_level, IceSettings, PortCursor, VideoCodec,
    AUDIO_LEVEL_URI, PT_H264, PT_OPUS, PT_VP8,
};

use crate::config::Config;
use crate::participant::LiveSession;
use crate::store::LiveStore;
use forwarder::Forwarder;
use session::MediaSession;
use speaker::SpeakerTracker;
use track::PublishedTrack;

/// Media failures.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The WebRTC stack refused an operation.
    #[error("webrtc: {0}")]
    Rtc(#[from] webrtc::error::Error),
    /// No UDP port of the configured range was free.
    #[error("no free media port in {0}")]
    NoPort(String),
    /// The session is closed or closing.
    #[error("media session closed")]
    Closed,
}

/// Media settings.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Where peer connections bind and when ICE gives up.
    pub ice: IceSettings,
    /// Which browser candidates the SFU may send checks to.
    pub candidates: candidates::CandidatePolicy,
    /// The addresses our candidates announce (1:1 NAT).
    pub announce: announce::Announce,
    /// An offer unanswered this long is rolled back and sent again.
    pub offer_timeout: Duration,
    /// How long a close waits for a session's tasks.
    pub close_timeout: Duration,
    /// Browsers are asked for their camera in layers.
    pub simulcast: bool,
    /// The video codecs browsers may send, in the order they are asked to prefer.
    pub video_codecs: Vec<VideoCodec>,
}

impl MediaConfig {
    /// The media settings of the process's flags: ICE times follow the
    /// session-loss times (`suspect_ms`, `remove_ms`).
    pub fn from_config(c: &Config) -> Self {
        let suspect = Duration::from_millis(c.suspect_ms);
        let remove = Duration::from_millis(c.remove_ms);
        Self {
            ice: IceSettings {
                addrs: c.ice_addrs.clone(),
                ports: c.ice_ports,
                disconnected: suspect,
                failed: remove.saturating_sub(suspect).max(Duration::from_secs(1)),
                keepalive: Duration::from_secs(1),
            },
            candidates: candidates::CandidatePolicy::new(&c.ice_addrs, &c.ice_allow_nets),
            announce: announce::Announce::new(&c.ice_addrs, &c.ice_public_addrs),
            offer_timeout: Duration::from_millis(c.offer_timeout_ms),
            close_timeout: Duration::from_secs(5),
            simulcast: c.simulcast,
            video_codecs: c.video_codecs.clone(),
        }
    }
}

/// The media layer asks the room service to end a session (ICE failure)
/// through the single close path, `Rooms::end_session`.
#[derive(Debug, Clone)]
pub struct EndRequest {
    /// The session's room.
    pub room: RoomCode,
    /// The session to end.
    pub session: SessionId,
    /// The session's user.
    pub user: UserId,
    /// Why it ends, as recorded in its history row.
    pub reason: LeaveReason,
}

/// The active speaker of a room changed (`None`: nobody is speaking). Sent
/// only on change, a few times per second at most.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeakerChange {
    /// The room.
    pub room: RoomCode,
    /// The session now speaking, `None` for nobody.
    pub session: Option<SessionId>,
}

/// Live-object counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaCounts {
    /// Media sessions alive.
    pub sessions: usize,
    /// Peer connections alive.
    pub peer_connections: usize,
    /// Published tracks alive.
    pub tracks: usize,
    /// Forwarders alive.
    pub forwarders: usize,
    /// Media tasks running.
    pub tasks: usize,
}

/// One video track's simulcast layers, for the debug view.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrackLayersView {
    /// The published track.
    pub track: String,
    /// Layers that sent anything (1 without simulcast).
    pub layers_seen: usize,
    /// Each layer now, smallest first.
    pub layers: Vec<simulcast::LayerState>,
}

/// One video forwarder's layer, for the debug view.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ForwarderLayerView {
    /// `{track}>{subscriber}`.
    pub forwarder: String,
    /// The layer being sent (`None`: none yet, or paused).
    pub layer: Option<u8>,
    /// The layer chosen for the subscriber (`None`: paused).
    pub target: Option<u8>,
    /// Switches made so far.
    pub switches: u64,
    /// The subscriber connection's downlink estimate, bits per second (0: none yet).
    pub estimate_bps: u64,
    /// Padding packets sent while probing that downlink.
    pub padding_packets: u64,
}

/// `Weak` handles of every media object ever made; counting drops the dead.
#[derive(Default)]
pub(crate) struct LiveObjects {
    peer_connections: Mutex<Vec<Weak<dyn PeerConnection>>>,
    tracks: Mutex<Vec<Weak<PublishedTrack>>>,
    forwarders: Mutex<Vec<Weak<Forwarder>>>,
    sessions: Mutex<Vec<Weak<MediaSession>>>,
}

fn alive<T: ?Sized>(list: &Mutex<Vec<Weak<T>>>) -> usize {
    let mut list = list.lock().unwrap_or_else(|p| p.into_inner());
    list.retain(|w| w.strong_count() > 0);
    list.len()
}

fn remember<T: ?Sized>(list: &Mutex<Vec<Weak<T>>>, item: Weak<T>) {
    let mut list = list.lock().unwrap_or_else(|p| p.into_inner());
    if list.len() >= 64 && list.len().is_power_of_two() {
        list.retain(|w| w.strong_count() > 0);
    }
    list.push(item);
}

impl LiveObjects {
    pub(crate) fn peer_connection(&self, pc: &Arc<dyn PeerConnection>) {
        remember(&self.peer_connections, Arc::downgrade(pc));
    }
    pub(crate) fn track(&self, t: &Arc<PublishedTrack>) {
        remember(&self.tracks, Arc::downgrade(t));
    }
    pub(crate) fn forwarder(&self, f: &Arc<Forwarder>) {
        remember(&self.forwarders, Arc::downgrade(f));
    }
    fn session(&self, s: &Arc<MediaSession>) {
        remember(&self.sessions, Arc::downgrade(s));
    }
    fn find_session(&self, id: &SessionId) -> Option<Arc<MediaSession>> {
        let list = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        list.iter().filter_map(Weak::upgrade).find(|s| &s.id == id)
    }
}

/// What sessions share: settings, the store, counters, the task tracker.
pub(crate) struct Shared {
    pub(crate) config: MediaConfig,
    pub(crate) store: Arc<dyn LiveStore>,
    pub(crate) live: LiveObjects,
    /// Every media task of the node (each also tracked by its session).
    pub(crate) tasks: TaskTracker,
    pub(crate) ports: PortCursor,
    pub(crate) end: mpsc::UnboundedSender<EndRequest>,
    speakers: mpsc::UnboundedSender<SpeakerChange>,
    /// Cancelled at shutdown: parent of every room's token.
    stop: CancellationToken,
    rooms: Mutex<HashMap<RoomCode, Arc<RoomMedia>>>,
    /// The threads rooms' media run on.
    workers: workers::Workers,
}

impl Shared {
    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<RoomCode, Arc<RoomMedia>>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops the room's entry if it has no session left (its evaluator
    /// task ends with it).
    pub(crate) fn forget_room_if_empty(&self, code: &RoomCode) {
        let mut rooms = self.rooms();
        if rooms.get(code).is_some_and(|r| r.is_empty()) {
            if let Some(room) = rooms.remove(code) {
                room.token.cancel();
            }
        }
    }

    fn room(&self, code: &RoomCode) -> Option<Arc<RoomMedia>> {
        self.rooms().get(code).cloned()
    }
}

/// The media of one room: its sessions, by id, and its speaker decision.
pub(crate) struct RoomMedia {
    code: RoomCode,
    sessions: Mutex<HashMap<SessionId, Arc<MediaSession>>>,
    /// Lock order: this after `sessions` is released, or `sessions` inside
    /// this (the evaluation); never the other way round.
    speaker: Mutex<SpeakerTracker>,
    speakers: mpsc::UnboundedSender<SpeakerChange>,
    /// Cancelled when the room's media is forgotten: ends its evaluator.
    token: CancellationToken,
    /// The worker its tasks run on.
    worker: workers::Lease,
}

impl RoomMedia {
    /// A room's media and its evaluator task.
    fn create(shared: &Arc<Shared>, code: RoomCode) -> Arc<Self> {
        let room = Arc::new(Self {
            code,
            sessions: Mutex::new(HashMap::new()),
            speaker: Mutex::new(SpeakerTracker::default()),
            speakers: shared.speakers.clone(),
            token: shared.stop.child_token(),
            worker: shared.workers.lease(),
        });
        let (weak, token) = (Arc::downgrade(&room), room.token.clone());
        room.worker.spawn(shared.tasks.track_future(async move {
            let mut every = tokio::time::interval(speaker::EVALUATE_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    _ = every.tick() => match weak.upgrade() {
                        Some(room) => room.evaluate_speaker(),
                        None => break,
                    },
                }
            }
        }));
        room
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Arc<MediaSession>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn speaker_lock(&self) -> std::sync::MutexGuard<'_, SpeakerTracker> {
        self.speaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One evaluation of the active speaker; announces a change.
    fn evaluate_speaker(&self) {
        let now = std::time::Instant::now();
        // The decision lock is held across reading the sessions, so a
        // session detached meanwhile is removed from the decision after it.
        let mut tracker = self.speaker_lock();
        let speaking: Vec<(SessionId, u8)> =
            self.lock().iter().filter_map(|(id, s)| s.speaking(now).map(|level| (id.clone(), level))).collect();
        if let Some(session) = tracker.evaluate(now, &speaking) {
            self.announce(session);
        }
    }

    fn announce(&self, session: Option<SessionId>) {
        tracing::debug!(room = %self.code, speaker = ?session, "active speaker");
        // Fails only once the room service stopped listening (shutdown).
        let _ = self.speakers.send(SpeakerChange { room: self.code.clone(), session });
    }

    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Publishes a track: under the room lock (so a session arriving at the
    /// same time sees it exactly once), then every other session subscribes.
    pub(crate) fn publish(&self, owner: &MediaSession, track: Arc<PublishedTrack>) {
        let others: Vec<Arc<MediaSession>> = {
            let sessions = self.lock();
            if !sessions.contains_key(&owner.id) {
                // The owner already left the room: the track dies with it.
                track.close();
                return;
            }
            owner.add_published(track.clone());
            sessions.values().filter(|s| s.id != owner.id).cloned().collect()
        };
        for other in others {
            other.subscribe(track.clone());
        }
    }

    /// Withdraws one track of `owner` from every other session.
    pub(crate) fn unpublish(&self, owner: &MediaSession, track_id: &str) {
        let others: Vec<Arc<MediaSession>> = {
            let sessions = self.lock();
            owner.remove_published(track_id);
            sessions.values().filter(|s| s.id != owner.id).cloned().collect()
        };
        for other in others {
            other.unsubscribe(track_id.to_owned());
        }
    }

    /// Removes `owner` from the room: its tracks are withdrawn from the
    /// others, who renegotiate. Idempotent.
    pub(crate) fn detach(&self, owner: &MediaSession) {
        let (tracks, others) = {
            let mut sessions = self.lock();
            if sessions.remove(&owner.id).is_none() {
                return;
            }
            let tracks = owner.take_published();
            (tracks, sessions.values().cloned().collect::<Vec<_>>())
        };
        {
            let mut tracker = self.speaker_lock();
            if let Some(session) = tracker.remove(&owner.id) {
                self.announce(session);
            }
        }
        for track in &tracks {
            track.close();
        }
        for other in others {
            for track in &tracks {
                other.unsubscribe(track.id.clone());
            }
        }
        tracing::debug!(room = %self.code, session = %owner.id, "media detached from room");
    }
}

/// The SFU of this node.
pub struct Sfu {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Sfu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sfu").finish_non_exhaustive()
    }
}

impl Sfu {
    /// The SFU, the stream of its requests to end sessions and the stream
    /// of active-speaker changes (both to be served by the room service).
    /// Fails only when its threads (one per core, each running whole
    /// rooms) cannot be started.
    pub fn new(
        config: MediaConfig,
        store: Arc<dyn LiveStore>,
    ) -> std::io::Result<(Self, mpsc::UnboundedReceiver<EndRequest>, mpsc::UnboundedReceiver<SpeakerChange>)> {
        let workers = workers::Workers::per_core()?;
        let (end, end_rx) = mpsc::unbounded_channel();
        let (speakers, speakers_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            config,
            store,
            live: LiveObjects::default(),
            tasks: TaskTracker::new(),
            ports: PortCursor::default(),
            end,
            speakers,
            stop: CancellationToken::new(),
            rooms: Mutex::new(HashMap::new()),
            workers,
        });
        Ok((Self { shared }, end_rx, speakers_rx))
    }

    /// Opens the media of a live session, or re-attaches its signalling
    /// channel when it is already open (a reconnecting socket): the server's
    /// offers and candidates go to `signal`.
    pub fn open(
        &self,
        live: &LiveSession,
        signal: mpsc::UnboundedSender<ServerMsg>,
    ) -> Result<Arc<MediaSession>, MediaError> {
        if live.is_closed() {
            return Err(MediaError::Closed);
        }
        // Lock order everywhere: the room map, then one room.
        let mut rooms = self.shared.rooms();
        let room = rooms
            .entry(live.room.clone())
            .or_insert_with(|| RoomMedia::create(&self.shared, live.room.clone()))
            .clone();
        let mut sessions = room.lock();
        if let Some(existing) = sessions.get(&live.id) {
            existing.attach(signal);
            return Ok(existing.clone());
        }
        // Every track already published in the room, seen under the room lock.
        let existing: Vec<Arc<PublishedTrack>> = sessions.values().flat_map(|s| s.published()).collect();
        let session = MediaSession::spawn(&self.shared, &room, live, signal, existing);
        self.shared.live.session(&session);
        sessions.insert(live.id.clone(), session.clone());
        drop(sessions);
        drop(rooms);
        Ok(session)
    }

    /// The media session of `session`, if open.
    pub fn session(&self, room: &RoomCode, session: &SessionId) -> Option<Arc<MediaSession>> {
        let room = self.shared.room(room)?;
        let found = room.lock().get(session).cloned();
        found
    }

    /// Switches forwarding of one publisher's media of `kind` to every
    /// subscriber (an admin mute): off drops its packets before fan-out
    /// (tracks and forwarders stay, so on resumes at once; video asks for a
    /// keyframe), and its suppressed audio does not count for the active
    /// speaker. Remembered by the media session, so tracks it publishes
    /// later obey it too. Returns whether the session's media is open here;
    /// a session whose media opens later starts with everything on.
    pub fn set_forwarding(&self, room: &RoomCode, session: &SessionId, kind: MediaKind, on: bool) -> bool {
        let Some(media) = self.session(room, session) else {
            return false;
        };
        media.set_forwarding(kind, on);
        true
    }

    /// Starts or stops publishing a session's screen share, if its media
    /// is on this node; `false` when it is not here.
    pub fn set_screen(&self, room: &RoomCode, session: &SessionId, on: bool) -> bool {
        let Some(media) = self.session(room, session) else {
            return false;
        };
        media.set_screen(on);
        true
    }

    /// The room's current active speaker, as last announced.
    pub fn speaker(&self, room: &RoomCode) -> Option<SessionId> {
        let room = self.shared.room(room)?;
        let current = room.speaker_lock().current().cloned();
        current
    }

    /// How many active-speaker changes the room's media has announced (from
    /// zero again once the room's media is forgotten).
    pub fn speaker_changes(&self, room: &RoomCode) -> u64 {
        self.shared.room(room).map_or(0, |r| r.speaker_lock().changes())
    }

    /// Closes the media of a session (if any) and waits for its task to
    /// release everything. Idempotent.
    pub async fn close_session(&self, room: &RoomCode, session: &SessionId, reason: LeaveReason) {
        self.start_close(room, session, reason).wait().await;
    }

    /// Starts closing the media of a session (if any): from here no packet
    /// is forwarded from or to it. [`Closing::wait`] waits (bounded by the
    /// close timeout) for its tasks to release everything. Idempotent.
    pub fn start_close(&self, room: &RoomCode, session: &SessionId, reason: LeaveReason) -> Closing {
        // Also a session already detached from its room but still closing.
        let media = self.session(room, session).or_else(|| self.shared.live.find_session(session));
        if let Some(media) = &media {
            media.close(reason);
        }
        Closing { media, limit: self.shared.config.close_timeout }
    }

    /// Every session with media open on this node (the reconciler checks
    /// each still has a live session).
    pub fn open_sessions(&self) -> Vec<(RoomCode, SessionId)> {
        let rooms: Vec<Arc<RoomMedia>> = self.shared.rooms().values().cloned().collect();
        rooms
            .iter()
            .flat_map(|room| room.lock().keys().map(|s| (room.code.clone(), s.clone())).collect::<Vec<_>>())
            .collect()
    }

    /// Every live video track's layers and video forwarder's layer.
    pub fn layers(&self) -> (Vec<TrackLayersView>, Vec<ForwarderLayerView>) {
        let now = std::time::Instant::now();
        let live = &self.shared.live;
        let tracks: Vec<Arc<PublishedTrack>> =
            live.tracks.lock().unwrap_or_else(|p| p.into_inner()).iter().filter_map(Weak::upgrade).collect();
        let forwarders: Vec<Arc<Forwarder>> =
            live.forwarders.lock().unwrap_or_else(|p| p.into_inner()).iter().filter_map(Weak::upgrade).collect();
        let video = rtc::rtp_transceiver::rtp_sender::RtpCodecKind::Video;
        let tracks = tracks
            .iter()
            .filter(|t| t.kind == video && !t.is_closed())
            .map(|t| TrackLayersView {
                track: t.id.clone(),
                layers_seen: t.layers().seen(),
                layers: t.layers().states(now).to_vec(),
            })
            .collect();
        let forwarders = forwarders
            .iter()
            .filter(|f| f.kind == video && !f.is_closed())
            .map(|f| ForwarderLayerView {
                forwarder: f.id.clone(),
                layer: f.current(),
                target: f.target(),
                switches: f.switches(),
                estimate_bps: f.downlink.get(),
                padding_packets: f.padded(),
            })
            .collect();
        (tracks, forwarders)
    }

    /// Counts from the live objects.
    pub fn counts(&self) -> MediaCounts {
        let live = &self.shared.live;
        MediaCounts {
            sessions: alive(&live.sessions),
            peer_connections: alive(&live.peer_connections),
            tracks: alive(&live.tracks),
            forwarders: alive(&live.forwarders),
            tasks: self.shared.tasks.len(),
        }
    }

    /// Shutdown: waits (bounded) for every media task to end. Sessions are
    /// closed before, by the room service.
    pub async fn shutdown(&self, limit: Duration) {
        self.shared.stop.cancel();
        self.shared.tasks.close();
        if tokio::time::timeout(limit, self.shared.tasks.wait()).await.is_err() {
            tracing::warn!(tasks = self.shared.tasks.len(), "media tasks still running after shutdown");
        }
    }
}

/// A session's media on its way out (see [`Sfu::start_close`]).
#[must_use = "the media is still closing: wait for it before the durable steps"]
pub struct Closing {
    media: Option<Arc<MediaSession>>,
    limit: Duration,
}

impl std::fmt::Debug for Closing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Closing").finish_non_exhaustive()
    }
}

impl Closing {
    /// Resolves once the session's media tasks have released everything,
    /// or after the close timeout (logged; the reconciler reaps the rest).
    pub async fn wait(self) {
        let Some(media) = self.media else { return };
        if tokio::time::timeout(self.limit, media.closed()).await.is_err() {
            tracing::warn!(room = %media.room, session = %media.id, "media session still closing after the close timeout");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_the_live_objects() {
        let list: Mutex<Vec<Weak<u32>>> = Mutex::default();
        let kept = Arc::new(1);
        for _ in 0..100 {
            remember(&list, Arc::downgrade(&Arc::new(0)));
        }
        remember(&list, Arc::downgrade(&kept));
        assert_eq!(alive(&list), 1);
        drop(kept);
        assert_eq!(alive(&list), 0);
    }
}
