//! A headless participant with media: joins through the same HTTP and
//! WebSocket path as the browser ([`Guest::join`], [`Guest::socket`]) and
//! carries the signalling of a [`server::loadgen::RtcClient`] over the socket.

use std::sync::Arc;
use std::time::Duration;

use app::model::{JoinOutcome, RoomCode};
use app::signal::{ClientMsg, ServerMsg};
use futures::{SinkExt, StreamExt};
use server::loadgen::{ClientStats, RtcClient};
use server::media::IceSettings;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::{Guest, TestServer};

/// A joined guest whose media runs.
pub struct MediaGuest {
    pub guest: Guest,
    pub outcome: JoinOutcome,
    pub room: RoomCode,
    client: Arc<RtcClient>,
    /// Extra messages for the socket, as if the page sent them.
    inject: mpsc::UnboundedSender<ClientMsg>,
    stop: CancellationToken,
    socket: tokio::task::JoinHandle<()>,
}

impl MediaGuest {
    /// A new guest joins `room` and starts media.
    pub async fn join(server: &TestServer, room: &RoomCode, name: &str) -> Self {
        Self::join_as(server.guest(), room, name).await
    }

    /// `guest` joins `room`, opens the socket and answers the server's offers.
    pub async fn join_as(guest: Guest, room: &RoomCode, name: &str) -> Self {
        Self::join_with(guest, room, name, 0).await
    }

    /// Like [`MediaGuest::join_as`], but the first `ignore_offers` offers
    /// are dropped unanswered (a browser that never answers).
    pub async fn join_with(guest: Guest, room: &RoomCode, name: &str, ignore_offers: usize) -> Self {
        Self::join_opts(guest, room, name, ignore_offers, false).await
    }

    /// Like [`MediaGuest::join_as`], but no ICE candidate crosses the
    /// socket either way: the connection keeps checking and never connects.
    pub async fn join_without_candidates(guest: Guest, room: &RoomCode, name: &str) -> Self {
        Self::join_opts(guest, room, name, 0, true).await
    }

    async fn join_opts(guest: Guest, room: &RoomCode, name: &str, ignore_offers: usize, no_candidates: bool) -> Self {
        let outcome = guest.join(room, name).await.expect("join");
        let socket = guest.socket(room, &outcome.session_id).await;
        let (to_server, mut from_client) = mpsc::unbounded_channel::<ClientMsg>();
        let (inject, mut injected) = mpsc::unbounded_channel::<ClientMsg>();
        let client =
            Arc::new(RtcClient::start(&IceSettings::loopback(), to_server).await.expect("client media starts"));
        let stop = CancellationToken::new();
        let (pump_client, pump_stop) = (client.clone(), stop.clone());
        let mut ws = socket.ws;
        let mut ignore = ignore_offers;
        let socket = tokio::spawn(async move {
            let mut heartbeat =
                tokio::time::interval(Duration::from_millis(u64::from(app::signal::HEARTBEAT_INTERVAL_MS)));
            loop {
                tokio::select! {
                    () = pump_stop.cancelled() => break,
                    _ = heartbeat.tick() => {
                        let ping = serde_json::to_string(&ClientMsg::Ping).expect("json");
                        if ws.send(Message::Text(ping.into())).await.is_err() {
                            break;
                        }
                    }
                    Some(msg) = from_client.recv() => {
                        if no_candidates && matches!(msg, ClientMsg::IceCandidate { .. }) {
                            continue;
                        }
                        let text = serde_json::to_string(&msg).expect("json");
                        if ws.send(Message::Text(text.into())).await.is_err() {
                            break;
                        }
                    }
                    Some(msg) = injected.recv() => {
                        let text = serde_json::to_string(&msg).expect("json");
                        if ws.send(Message::Text(text.into())).await.is_err() {
                            break;
                        }
                    }
                    frame = ws.next() => match frame {
                        Some(Ok(Message::Text(t))) => {
                            match serde_json::from_str::<ServerMsg>(&t) {
                                Ok(ServerMsg::Offer { .. }) if ignore > 0 => ignore -= 1,
                                Ok(ServerMsg::IceCandidate { .. }) if no_candidates => {}
                                Ok(msg) => pump_client.deliver(msg),
                                Err(_) => {}
                            }
                        }
                        Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                        Some(Ok(_)) => {}
                    },
                }
            }
            let _ = ws.close(None).await;
        });
        Self { guest, outcome, room: room.clone(), client, inject, stop, socket }
    }

    /// Sends `msg` on this guest's socket, as if its page had.
    pub fn send(&self, msg: ClientMsg) {
        let _ = self.inject.send(msg);
    }

    pub fn participant(&self) -> &str {
        self.outcome.participant_id.as_str()
    }

    pub fn stats(&self) -> &ClientStats {
        self.client.stats()
    }

    pub fn client(&self) -> &RtcClient {
        &self.client
    }

    /// Leaves with the Leave button's path, then closes the socket and the
    /// client's media.
    pub async fn leave(self) {
        self.guest.leave(&self.outcome.session_id).await.expect("leave");
        self.close().await;
    }

    /// Drops the socket without a close frame and stops the media, without
    /// telling the server: a crashed tab or a lost connection.
    pub async fn vanish(self) {
        self.socket.abort();
        let _ = self.socket.await;
        self.client.close().await;
    }

    /// Closes the socket and the media without telling the server.
    pub async fn close(self) {
        self.stop.cancel();
        let _ = self.socket.await;
        self.client.close().await;
    }
}
