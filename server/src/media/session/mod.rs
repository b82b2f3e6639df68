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

use std::collections::{BTreeMap, HashMap, HashSet};
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
use super::estimate::{Downlink, ProbeSchedule};
use super::forwarder::{Forwarder, FreedSlot, Slot};
use super::track::{media_kind, PublishedTrack, PublisherState};
use super::{EndRequest, MediaError, RoomMedia, Shared};
use crate::lifetime::Lifetime;
use crate::participant::LiveSession;
use crate::store::ResourceKind;

mod actor;

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
    /// The person started (`true`) or stopped sharing their screen: its
    /// track is published to the room, or withdrawn and released.
    Screen(bool),
    /// The widths (device pixels) the page shows each stream's video at;
    /// 0 for one not shown.
    Views(HashMap<String, u32>),
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
    /// The session's id.
    pub id: SessionId,
    /// The session's room.
    pub room: RoomCode,
    /// The session's user.
    pub user: UserId,
    /// The session's public handle.
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
        let actor = actor::Actor::new(session.clone(), shared.clone(), Arc::downgrade(room), signal);
        // On the room's worker: the actor's own tasks, and its peer
        // connection's driver, are spawned from there and stay there.
        room.worker.spawn(shared.tasks.track_future(session.tasks.track_future(actor.run(cmd_rx))));
        session
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

    /// The person shares their screen (`on`) or stopped: the share's
    /// track goes to everybody in the room, or is withdrawn and released.
    pub fn set_screen(&self, on: bool) {
        tracing::info!(room = %self.room, session = %self.id, on, "screen share switched");
        self.send(Command::Screen(on));
    }

    /// The page's tile widths, by stream id (device pixels; 0 = not shown):
    /// each video forwarder is sent the layer that fits its tile.
    pub fn set_views(&self, views: HashMap<String, u32>) {
        self.send(Command::Views(views));
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
                for layer in 0..super::simulcast::LAYERS as u8 {
                    track.request_keyframe(layer);
                }
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

    /// Closed by [`MediaSession::close`] or with its live session.
    pub fn is_closed(&self) -> bool {
        self.lifetime.is_closed()
    }

    /// The reason given to [`MediaSession::close`]; `None` while open or
    /// when closed only with its live session.
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
