//! # A headless WebRTC participant
//!
//! [`RtcClient`] is what a browser tab does for media, without a browser:
//! it answers the server's offers with its own webrtc peer connection,
//! publishes synthetic Opus (50 packets/s) and VP8 (~33 packets/s) RTP, and
//! counts the RTP it receives per remote publisher (the stream id of each
//! incoming track, which the SFU sets to the publisher's `ParticipantId`),
//! noting when the first packet of each publisher arrived. A receive-only
//! client ([`RtcClient::start_receive_only`]) publishes nothing.
//!
//! Every audio packet carries the RFC 6464 audio level extension (negotiated
//! like a browser does), stamped with the level set by
//! [`RtcClient::set_audio_level`]: silence (127, no voice) until told
//! otherwise, so a client is never the active speaker unless a test makes
//! it speak.
//!
//! Every packet it publishes carries the time it was written (a marker and
//! microseconds since a process-wide epoch, inside the payload, which the
//! SFU forwards untouched), so a subscriber in the same process measures
//! the forwarding delay; it also counts each received stream's sequence
//! gaps (the SFU's own drops: it renumbers what it forwards without gaps).
//! The video rate can be raised ([`RtcClient::set_video_rate`]) to offer
//! the SFU more load.
//!
//! It speaks the app's wire types ([`ServerMsg`] in, [`ClientMsg`] out) but
//! not the transport: the caller carries the messages over the room's
//! WebSocket (the integration tests do; a load generator would too).
//!
//! Ownership mirrors the server's: one task owns the peer connection and
//! receives everything as messages; callbacks only send events to it;
//! [`RtcClient::close`] cancels, closes the connection and waits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use app::signal::{ClientMsg, IceCandidate, ServerMsg};
use bytes::Bytes;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{nack_pairs_from_sequence_numbers, TransportLayerNack};
use rtc::rtp;
use rtc::rtp::extension::audio_level_extension::AudioLevelExtension;
use rtc::rtp::extension::HeaderExtension;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCIceCandidateInit, RTCPeerConnectionIceEvent, RTCPeerConnectionState,
    RTCSessionDescription,
};

use server::media::{build_peer_connection, is_keyframe_request, IceSettings, MediaError, PortCursor, PT_OPUS, PT_VP8};

/// What the client has seen so far.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// RTP packets received, by remote stream id (= publisher).
    received: Mutex<HashMap<String, u64>>,
    /// RTP packets received, by remote stream id and kind (audio: `true`).
    received_by_kind: Mutex<HashMap<(String, bool), u64>>,
    /// When the first RTP packet of each remote stream id arrived.
    first_packet: Mutex<HashMap<String, Instant>>,
    /// Remote tracks not ended yet: track id → stream id.
    live_tracks: Mutex<HashMap<String, String>>,
    /// RTP packets handed to the connection for sending.
    pub sent: AtomicU64,
    /// Offers received and answers sent.
    pub offers: AtomicU64,
    pub answers: AtomicU64,
    /// The first and the latest offer's SDP.
    first_offer: Mutex<String>,
    last_offer: Mutex<String>,
    /// The connection reached `connected`.
    pub connected: AtomicBool,
    /// PLI/FIR received for the video this client publishes.
    pub keyframe_requests: AtomicU64,
    /// Video packets per second to publish, in thousandths (0: the default).
    video_mpps: AtomicU32,
    /// Each received stream's sequence numbers, by SSRC.
    flows: Mutex<HashMap<u32, Flow>>,
    /// Forwarding delays seen (microseconds), while `recording` is on.
    delays: Mutex<Vec<u32>>,
    recording: AtomicBool,
}

/// One received stream: the first and highest sequence number seen
/// (extended past wrap-around) and how many packets came.
#[derive(Debug, Clone, Copy)]
struct Flow {
    first: u64,
    highest: u64,
    received: u64,
}

impl Flow {
    fn new(seq: u16) -> Self {
        Self { first: u64::from(seq), highest: u64::from(seq), received: 1 }
    }

    fn record(&mut self, seq: u16) {
        // The extension of `seq` nearest the highest seen.
        let base = self.highest & !0xffff;
        let candidates = [base.wrapping_sub(0x1_0000), base, base + 0x1_0000];
        let ext = candidates
            .into_iter()
            .map(|b| b.wrapping_add(u64::from(seq)))
            .min_by_key(|e| e.abs_diff(self.highest))
            .unwrap_or(u64::from(seq));
        self.highest = self.highest.max(ext);
        self.first = self.first.min(ext);
        self.received += 1;
    }

    /// Packets the numbers say were sent (first to highest).
    fn expected(&self) -> u64 {
        self.highest - self.first + 1
    }
}

/// Received-packet totals of all streams: what their sequence numbers say
/// was sent, and what came.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reception {
    pub expected: u64,
    pub received: u64,
}

/// The video rate a client publishes unless told otherwise (one packet
/// every 30 ms).
pub const DEFAULT_VIDEO_PPS: f64 = 100.0 / 3.0;

/// What marks a payload stamped with its send time (the 8 bytes after it).
const STAMP: [u8; 2] = [0xc1, 0xea];

/// Where the stamp goes: after the VP8 descriptor and its keyframe-looking
/// header, after the Opus TOC byte.
const VIDEO_STAMP_AT: usize = 10;
const AUDIO_STAMP_AT: usize = 1;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Microseconds since the process-wide epoch.
fn now_us() -> u64 {
    Instant::now().saturating_duration_since(epoch()).as_micros() as u64
}

/// `template` with the stamp and the time now at `at`.
fn stamped(template: &[u8], at: usize) -> Bytes {
    let mut payload = template.to_vec();
    payload[at..at + 2].copy_from_slice(&STAMP);
    payload[at + 2..at + 10].copy_from_slice(&now_us().to_be_bytes());
    Bytes::from(payload)
}

/// The send time a payload carries at `at`, if stamped.
fn stamp_of(payload: &[u8], at: usize) -> Option<u64> {
    let marker = payload.get(at..at + 2)?;
    let time = payload.get(at + 2..at + 10)?;
    (marker == STAMP).then(|| u64::from_be_bytes(time.try_into().unwrap_or_default()))
}

impl ClientStats {
    /// RTP packets received from one publisher.
    pub fn received_from(&self, publisher: &str) -> u64 {
        self.received.lock().unwrap_or_else(|p| p.into_inner()).get(publisher).copied().unwrap_or(0)
    }

    /// Audio RTP packets received from one publisher.
    pub fn audio_received_from(&self, publisher: &str) -> u64 {
        self.received_of(publisher, true)
    }

    /// Video RTP packets received from one publisher.
    pub fn video_received_from(&self, publisher: &str) -> u64 {
        self.received_of(publisher, false)
    }

    fn received_of(&self, publisher: &str, audio: bool) -> u64 {
        let received = self.received_by_kind.lock().unwrap_or_else(|p| p.into_inner());
        received.get(&(publisher.to_owned(), audio)).copied().unwrap_or(0)
    }

    /// When the first RTP packet from one publisher arrived, if any has.
    pub fn first_packet_from(&self, publisher: &str) -> Option<Instant> {
        self.first_packet.lock().unwrap_or_else(|p| p.into_inner()).get(publisher).copied()
    }

    /// Every publisher heard from, with its packet count.
    pub fn received(&self) -> HashMap<String, u64> {
        self.received.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Remote tracks of one publisher that have not ended.
    pub fn live_tracks_from(&self, publisher: &str) -> usize {
        self.live_tracks.lock().unwrap_or_else(|p| p.into_inner()).values().filter(|s| *s == publisher).count()
    }

    /// The first offer's SDP.
    pub fn first_offer(&self) -> String {
        self.first_offer.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The latest offer's SDP.
    pub fn last_offer(&self) -> String {
        self.last_offer.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// How many streams (SSRCs) have been received so far.
    pub fn streams(&self) -> usize {
        self.flows.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Sequence-number totals over every stream received so far.
    pub fn reception(&self) -> Reception {
        let flows = self.flows.lock().unwrap_or_else(|p| p.into_inner());
        flows.values().fold(Reception::default(), |r, f| Reception {
            expected: r.expected + f.expected(),
            received: r.received + f.received,
        })
    }

    /// Starts (or stops) keeping the forwarding delay of each packet.
    pub fn record_delays(&self, on: bool) {
        self.recording.store(on, Ordering::Release);
    }

    /// The delays kept so far (microseconds), emptied.
    pub fn take_delays(&self) -> Vec<u32> {
        std::mem::take(&mut *self.delays.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn video_rate_mpps(&self) -> u32 {
        match self.video_mpps.load(Ordering::Relaxed) {
            0 => (DEFAULT_VIDEO_PPS * 1000.0) as u32,
            rate => rate,
        }
    }

    fn on_packet(&self, packet: &rtp::Packet, audio: bool) {
        let ssrc = packet.header.ssrc;
        let seq = packet.header.sequence_number;
        self.flows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(ssrc)
            .and_modify(|f| f.record(seq))
            .or_insert_with(|| Flow::new(seq));
        if self.recording.load(Ordering::Relaxed) {
            let at = if audio { AUDIO_STAMP_AT } else { VIDEO_STAMP_AT };
            if let Some(sent) = stamp_of(&packet.payload, at) {
                let delay = now_us().saturating_sub(sent).min(u64::from(u32::MAX)) as u32;
                self.delays.lock().unwrap_or_else(|p| p.into_inner()).push(delay);
            }
        }
    }
}

/// What the owner task is asked to do.
enum Input {
    /// A message from the server.
    Server(ServerMsg),
    /// Send a PLI for every video track received from this publisher.
    RequestKeyframe(String),
    /// Report the newest `n` video packets received from this publisher
    /// lost (a NACK for each of its video streams).
    ReportLost(String, u16),
}

enum Event {
    Candidate(RTCIceCandidateInit),
    Track(Arc<dyn TrackRemote>),
    State(RTCPeerConnectionState),
}

struct Events(mpsc::UnboundedSender<Event>);

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Events {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self.0.send(Event::Candidate(init));
        }
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.0.send(Event::Track(track));
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.0.send(Event::State(state));
    }
}

/// The level stamped on published audio: bit 7 voice, bits 0-6 the level in
/// −dBov (RFC 6464's one-byte layout).
#[derive(Debug)]
struct AudioLevel(AtomicU8);

impl AudioLevel {
    /// Silence: level 127, no voice.
    const SILENT: u8 = 127;

    fn set(&self, level_dbov: u8, voice: bool) {
        self.0.store(level_dbov.min(127) | if voice { 0x80 } else { 0 }, Ordering::Release);
    }

    fn extension(&self) -> HeaderExtension {
        let raw = self.0.load(Ordering::Acquire);
        HeaderExtension::AudioLevel(AudioLevelExtension { level: raw & 0x7f, voice: raw & 0x80 != 0 })
    }
}

/// One headless participant's media.
pub struct RtcClient {
    inbound: mpsc::UnboundedSender<Input>,
    stats: Arc<ClientStats>,
    audio_level: Arc<AudioLevel>,
    token: CancellationToken,
    tasks: TaskTracker,
}

impl std::fmt::Debug for RtcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtcClient").finish_non_exhaustive()
    }
}

fn local_track(kind: RtpCodecKind, mime: &str, clock_rate: u32, channels: u16, ssrc: u32) -> Arc<TrackLocalStaticRTP> {
    let name = if kind == RtpCodecKind::Audio { "audio" } else { "video" };
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "loadgen".to_owned(),
        format!("loadgen-{name}"),
        format!("loadgen-{name}"),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
            codec: RTCRtpCodec {
                mime_type: mime.to_owned(),
                clock_rate,
                channels,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: vec![],
            },
            ..Default::default()
        }],
    )))
}

impl RtcClient {
    /// Builds the connection (bound as `ice` says), adds the audio and
    /// video tracks it will publish and starts its tasks. Messages for the
    /// server come out of `outbound`.
    pub async fn start(ice: &IceSettings, outbound: mpsc::UnboundedSender<ClientMsg>) -> Result<Self, MediaError> {
        Self::start_with(ice, outbound, true).await
    }

    /// Like [`RtcClient::start`], but publishes nothing: it only receives
    /// (a viewer whose camera and microphone are off).
    pub async fn start_receive_only(
        ice: &IceSettings,
        outbound: mpsc::UnboundedSender<ClientMsg>,
    ) -> Result<Self, MediaError> {
        Self::start_with(ice, outbound, false).await
    }

    async fn start_with(
        ice: &IceSettings,
        outbound: mpsc::UnboundedSender<ClientMsg>,
        publish: bool,
    ) -> Result<Self, MediaError> {
        let (events_tx, events) = mpsc::unbounded_channel();
        let pc = build_peer_connection(ice, &PortCursor::default(), Arc::new(Events(events_tx)), None).await?;
        let audio_ssrc = rand::random::<u32>();
        let video_ssrc = rand::random::<u32>();
        let audio = local_track(RtpCodecKind::Audio, MIME_TYPE_OPUS, 48_000, 2, audio_ssrc);
        let video = local_track(RtpCodecKind::Video, MIME_TYPE_VP8, 90_000, 0, video_ssrc);
        if publish {
            let added = async {
                pc.add_track(audio.clone() as Arc<dyn TrackLocal>).await?;
                pc.add_track(video.clone() as Arc<dyn TrackLocal>).await?;
                Ok::<_, MediaError>(())
            }
            .await;
            if let Err(e) = added {
                let _ = pc.close().await;
                return Err(e);
            }
        }
        let (inbound, inbound_rx) = mpsc::unbounded_channel();
        let client = Self {
            inbound,
            stats: Arc::new(ClientStats::default()),
            audio_level: Arc::new(AudioLevel(AtomicU8::new(AudioLevel::SILENT))),
            token: CancellationToken::new(),
            tasks: TaskTracker::new(),
        };
        let owner = Owner {
            pc,
            outbound,
            stats: client.stats.clone(),
            token: client.token.clone(),
            tasks: client.tasks.clone(),
            remote_tracks: HashMap::new(),
        };
        client.tasks.spawn(owner.run(inbound_rx, events));
        if publish {
            client.tasks.spawn(count_keyframe_requests(client.token.clone(), client.stats.clone(), video.clone()));
            let media = Media { audio, audio_ssrc, level: client.audio_level.clone(), video, video_ssrc };
            client.tasks.spawn(pump(client.token.clone(), client.stats.clone(), media));
        }
        Ok(client)
    }

    /// A message from the server (offers and candidates; others are ignored).
    pub fn deliver(&self, msg: ServerMsg) {
        let _ = self.inbound.send(Input::Server(msg));
    }

    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// The audio level stamped on every audio packet from now on:
    /// `level_dbov` in −dBov (0 = loudest, 127 = silence; larger is taken as
    /// 127) and whether it is voice. The default is silence.
    pub fn set_audio_level(&self, level_dbov: u8, voice: bool) {
        self.audio_level.set(level_dbov, voice);
    }

    /// Publishes `packets_per_s` video packets per second from now on (the
    /// default is [`DEFAULT_VIDEO_PPS`]); more than one per 10 ms tick go
    /// as one frame of several packets.
    pub fn set_video_rate(&self, packets_per_s: f64) {
        let mpps = (packets_per_s.clamp(1.0, 100_000.0) * 1000.0) as u32;
        self.stats.video_mpps.store(mpps, Ordering::Relaxed);
    }

    /// Sends a keyframe request (PLI) for the video received from `publisher`,
    /// as a browser's decoder does after loss.
    pub fn request_keyframe(&self, publisher: &str) {
        let _ = self.inbound.send(Input::RequestKeyframe(publisher.to_owned()));
    }

    /// Reports the newest `n` video packets received from `publisher` lost,
    /// as a receiver that missed them would (generic NACK): the server
    /// sends again those it still has.
    pub fn report_lost(&self, publisher: &str, n: u16) {
        let _ = self.inbound.send(Input::ReportLost(publisher.to_owned(), n));
    }

    /// Closes the connection and waits for every task of the client.
    pub async fn close(&self) {
        self.token.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Drop for RtcClient {
    fn drop(&mut self) {
        // Backstop: the owner task closes the connection on cancel.
        self.token.cancel();
    }
}

/// The task that owns the client's peer connection.
struct Owner {
    pc: Arc<dyn PeerConnection>,
    outbound: mpsc::UnboundedSender<ClientMsg>,
    stats: Arc<ClientStats>,
    token: CancellationToken,
    tasks: TaskTracker,
    /// The counting task of each remote track, by track id. webrtc 0.21.1
    /// never ends a remote track the remote side stopped sending (only a
    /// closed connection ends them), so, as a browser does on `removetrack`,
    /// a track missing from the latest offer is ended here.
    remote_tracks: HashMap<String, RemoteTrack>,
}

/// A received track and the token of its counting task.
struct RemoteTrack {
    track: Arc<dyn TrackRemote>,
    stream: String,
    token: CancellationToken,
}

/// Track ids the remote side sends on, from an SDP's `a=msid` lines of
/// sending m-sections.
/// The offer without its request for simulcast (`a=rid`, `a=simulcast`):
/// this client sends one encoding per track, and the engine, answering a
/// request it cannot honour, would promise layers it never sends.
fn without_simulcast(sdp: &str) -> String {
    let eol = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    sdp.split(eol).filter(|l| !l.starts_with("a=rid:") && !l.starts_with("a=simulcast:")).collect::<Vec<_>>().join(eol)
}

fn sending_track_ids(sdp: &str) -> std::collections::HashSet<String> {
    let mut ids = std::collections::HashSet::new();
    let mut section_msids = Vec::new();
    let mut sending = false;
    let mut flush = |msids: &mut Vec<String>, sending: bool| {
        if sending {
            ids.extend(msids.drain(..));
        }
        msids.clear();
    };
    for line in sdp.lines() {
        let line = line.trim_end();
        if line.starts_with("m=") {
            flush(&mut section_msids, sending);
            sending = false;
        } else if line == "a=sendonly" || line == "a=sendrecv" {
            sending = true;
        } else if let Some(msid) = line.strip_prefix("a=msid:") {
            if let Some((_, track)) = msid.split_once(' ') {
                section_msids.push(track.to_owned());
            }
        }
    }
    flush(&mut section_msids, sending);
    ids
}

impl Owner {
    async fn run(mut self, mut inbound: mpsc::UnboundedReceiver<Input>, mut events: mpsc::UnboundedReceiver<Event>) {
        loop {
            tokio::select! {
                () = self.token.cancelled() => break,
                Some(input) = inbound.recv() => match input {
                    Input::Server(msg) => self.on_message(msg).await,
                    Input::RequestKeyframe(publisher) => self.request_keyframe(&publisher).await,
                    Input::ReportLost(publisher, n) => self.report_lost(&publisher, n).await,
                },
                Some(event) = events.recv() => self.on_event(event).await,
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.pc.close()).await;
    }

    async fn request_keyframe(&self, publisher: &str) {
        for remote in self.remote_tracks.values().filter(|r| r.stream == publisher) {
            if remote.track.kind().await != RtpCodecKind::Video {
                continue;
            }
            for media_ssrc in remote.track.ssrcs().await {
                let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc };
                if let Err(e) = remote.track.write_rtcp(vec![Box::new(pli)]).await {
                    tracing::debug!(error = %e, "loadgen: PLI not sent");
                }
            }
        }
    }

    async fn report_lost(&self, publisher: &str, n: u16) {
        for remote in self.remote_tracks.values().filter(|r| r.stream == publisher) {
            if remote.track.kind().await != RtpCodecKind::Video {
                continue;
            }
            for media_ssrc in remote.track.ssrcs().await {
                let newest =
                    self.stats.flows.lock().unwrap_or_else(|p| p.into_inner()).get(&media_ssrc).map(|f| f.highest);
                let Some(newest) = newest else { continue };
                let seqs: Vec<u16> = (0..n).rev().map(|back| (newest as u16).wrapping_sub(back)).collect();
                let nack =
                    TransportLayerNack { sender_ssrc: 0, media_ssrc, nacks: nack_pairs_from_sequence_numbers(&seqs) };
                if let Err(e) = remote.track.write_rtcp(vec![Box::new(nack)]).await {
                    tracing::debug!(error = %e, "loadgen: NACK not sent");
                }
            }
        }
    }

    async fn on_message(&mut self, msg: ServerMsg) {
        match msg {
            ServerMsg::Offer { sdp } => {
                if self.stats.offers.fetch_add(1, Ordering::AcqRel) == 0 {
                    *self.stats.first_offer.lock().unwrap_or_else(|p| p.into_inner()) = sdp.clone();
                }
                *self.stats.last_offer.lock().unwrap_or_else(|p| p.into_inner()) = sdp.clone();
                let sending = sending_track_ids(&sdp);
                self.remote_tracks.retain(|id, remote| {
                    let keep = sending.contains(id);
                    if !keep {
                        remote.token.cancel();
                    }
                    keep
                });
                let answered = async {
                    let sdp = without_simulcast(&sdp);
                    self.pc.set_remote_description(RTCSessionDescription::offer(sdp)?).await?;
                    let answer = self.pc.create_answer(None).await?;
                    self.pc.set_local_description(answer).await?;
                    Ok::<_, webrtc::error::Error>(self.pc.local_description().await.map(|d| d.sdp).unwrap_or_default())
                }
                .await;
                match answered {
                    Ok(sdp) => {
                        self.stats.answers.fetch_add(1, Ordering::AcqRel);
                        let _ = self.outbound.send(ClientMsg::Answer { sdp });
                    }
                    Err(e) => tracing::warn!(error = %e, "loadgen: offer not answered"),
                }
            }
            ServerMsg::IceCandidate { candidate } => {
                let init = RTCIceCandidateInit {
                    candidate: candidate.candidate,
                    sdp_mid: candidate.sdp_mid,
                    sdp_mline_index: candidate.sdp_m_line_index,
                    username_fragment: candidate.username_fragment,
                    ..Default::default()
                };
                if let Err(e) = self.pc.add_ice_candidate(init).await {
                    tracing::debug!(error = %e, "loadgen: server candidate refused");
                }
            }
            _ => {}
        }
    }

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::Candidate(init) => {
                let candidate = IceCandidate {
                    candidate: init.candidate,
                    sdp_mid: Some("0".to_owned()),
                    sdp_m_line_index: Some(0),
                    username_fragment: None,
                };
                let _ = self.outbound.send(ClientMsg::IceCandidate { candidate });
            }
            Event::State(state) => {
                if state == RTCPeerConnectionState::Connected {
                    self.stats.connected.store(true, Ordering::Release);
                }
            }
            Event::Track(track) => {
                let token = self.token.child_token();
                let id = track.track_id().await;
                let stream = track.stream_id().await;
                let remote = RemoteTrack { track: track.clone(), stream, token: token.clone() };
                if let Some(old) = self.remote_tracks.insert(id, remote) {
                    old.token.cancel();
                }
                self.tasks.spawn(count_packets(track, self.stats.clone(), token));
            }
        }
    }
}

async fn count_packets(track: Arc<dyn TrackRemote>, stats: Arc<ClientStats>, token: CancellationToken) {
    let stream = track.stream_id().await;
    let id = track.track_id().await;
    let audio = track.kind().await == RtpCodecKind::Audio;
    stats.live_tracks.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), stream.clone());
    loop {
        let event = tokio::select! {
            () = token.cancelled() => break,
            event = track.poll() => event,
        };
        match event {
            Some(TrackRemoteEvent::OnRtpPacket(packet)) => {
                stats.on_packet(&packet, audio);
                let first = {
                    let mut received = stats.received.lock().unwrap_or_else(|p| p.into_inner());
                    let count = received.entry(stream.clone()).or_default();
                    *count += 1;
                    *count == 1
                };
                *stats
                    .received_by_kind
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry((stream.clone(), audio))
                    .or_default() += 1;
                if first {
                    let now = Instant::now();
                    stats.first_packet.lock().unwrap_or_else(|p| p.into_inner()).entry(stream.clone()).or_insert(now);
                }
            }
            Some(TrackRemoteEvent::OnEnded) | None => break,
            Some(_) => {}
        }
    }
    stats.live_tracks.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
}

/// Counts the keyframe requests the server sends for our video.
async fn count_keyframe_requests(token: CancellationToken, stats: Arc<ClientStats>, video: Arc<TrackLocalStaticRTP>) {
    loop {
        let event = tokio::select! {
            () = token.cancelled() => break,
            event = video.poll() => event,
        };
        match event {
            Some(TrackLocalEvent::OnRtcpPacket(packets)) => {
                let n = packets.iter().filter(|p| is_keyframe_request(p.as_ref())).count();
                stats.keyframe_requests.fetch_add(n as u64, Ordering::AcqRel);
            }
            Some(_) => {}
            // Not bound yet: look again shortly.
            None => tokio::select! {
                () = token.cancelled() => break,
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            },
        }
    }
}

/// What the pump publishes.
struct Media {
    audio: Arc<TrackLocalStaticRTP>,
    audio_ssrc: u32,
    level: Arc<AudioLevel>,
    video: Arc<TrackLocalStaticRTP>,
    video_ssrc: u32,
}

/// Synthetic media: Opus every 20 ms (960 samples, with the audio level
/// extension), VP8 at the client's video rate (by default a one-packet
/// frame every 30 ms), each packet stamped with the time it is written.
/// Writes fail until the tracks are bound (after the first answer); those
/// packets are simply not sent.
async fn pump(token: CancellationToken, stats: Arc<ClientStats>, media: Media) {
    let Media { audio, audio_ssrc, level, video, video_ssrc } = media;
    let opus = [0xfc; 60];
    // A VP8 payload descriptor (start of partition) and a keyframe-looking header.
    let vp8 = {
        let mut v = vec![0x10, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00];
        v.resize(400, 0x55);
        v
    };
    const TICK: Duration = Duration::from_millis(10);
    const TICKS_PER_S: u32 = 100;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (mut n, mut audio_seq, mut video_seq) = (0u64, 0u16, 0u16);
    // Thousandths of a video packet owed (the rate accrues every tick).
    let mut owed = 0u64;
    loop {
        tokio::select! {
            () = token.cancelled() => break,
            _ = tick.tick() => {}
        }
        if !stats.is_connected() {
            continue;
        }
        n += 1;
        if n % 2 == 0 {
            audio_seq = audio_seq.wrapping_add(1);
            let payload = stamped(&opus, AUDIO_STAMP_AT);
            let packet = packet(PT_OPUS, audio_seq, (n / 2) as u32 * 960, audio_ssrc, true, payload);
            // The extension goes with the id negotiated for this sender (none
            // if it was not negotiated).
            if audio.write_rtp_with_extensions(packet, &[level.extension()]).await.is_ok() {
                stats.sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        owed += u64::from(stats.video_rate_mpps() / TICKS_PER_S);
        let frame = owed / 1000;
        owed %= 1000;
        // A frame of this tick's packets: one timestamp, the marker on the last.
        let timestamp = (n as u32).wrapping_mul(90_000 / TICKS_PER_S);
        for i in 0..frame {
            video_seq = video_seq.wrapping_add(1);
            let payload = stamped(&vp8, VIDEO_STAMP_AT);
            let packet = packet(PT_VP8, video_seq, timestamp, video_ssrc, i + 1 == frame, payload);
            if video.write_rtp(packet).await.is_ok() {
                stats.sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn packet(
    payload_type: u8,
    sequence_number: u16,
    timestamp: u32,
    ssrc: u32,
    marker: bool,
    payload: Bytes,
) -> rtp::Packet {
    rtp::Packet {
        header: rtp::header::Header {
            version: 2,
            marker,
            payload_type,
            sequence_number,
            timestamp,
            ssrc,
            ..Default::default()
        },
        payload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flow_counts_what_its_sequence_numbers_say_was_sent_across_wrap_around() {
        let mut flow = Flow::new(65_533);
        for seq in [65_534, 65_535, 1, 2, 0] {
            flow.record(seq);
        }
        // 65 533 … 2 is six numbers; 0 came late, and nothing is missing.
        assert_eq!((flow.expected(), flow.received), (6, 6));
        flow.record(5);
        assert_eq!((flow.expected(), flow.received), (9, 7));
    }

    #[test]
    fn a_stamp_is_read_back_only_where_it_was_written() {
        let payload = stamped(&[0u8; 40], VIDEO_STAMP_AT);
        let sent = stamp_of(&payload, VIDEO_STAMP_AT).expect("stamped");
        assert!(sent <= now_us());
        assert_eq!(stamp_of(&payload, AUDIO_STAMP_AT), None);
        assert_eq!(stamp_of(&[0u8; 40], VIDEO_STAMP_AT), None);
        assert_eq!(stamp_of(&payload[..15], VIDEO_STAMP_AT), None);
    }

    #[test]
    fn only_sending_sections_name_remote_tracks() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\na=msid:- self-audio\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=msid:p1 p1-video-1\r\na=sendonly\r\n\
                   m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=inactive\r\na=msid:p2 p2-audio-1\r\n";
        let ids = sending_track_ids(sdp);
        assert_eq!(ids.into_iter().collect::<Vec<_>>(), vec!["p1-video-1".to_owned()]);
    }
}
