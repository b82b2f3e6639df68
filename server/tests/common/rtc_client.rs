//! A headless participant with media: joins through the same HTTP and
//! WebSocket path as the browser ([`Guest::join`], [`Guest::socket`]) and
//! carries the signalling of a [`loadgen::RtcClient`] over the socket ([`loadgen::Pump`]).

use std::sync::Arc;

use app::model::{JoinOutcome, RoomCode};
use app::signal::ClientMsg;
use loadgen::{ClientStats, Pump, PumpOptions, RtcClient};
use server::media::IceSettings;
use tokio::sync::mpsc;

use super::{Guest, TestServer};

/// A joined guest whose media runs.
pub struct MediaGuest {
    pub guest: Guest,
    pub outcome: JoinOutcome,
    pub room: RoomCode,
    client: Arc<RtcClient>,
    pump: Pump,
}

impl MediaGuest {
    /// A new guest joins `room` and starts media.
    pub async fn join(server: &TestServer, room: &RoomCode, name: &str) -> Self {
        Self::join_as(server.guest(), room, name).await
    }

    /// `guest` joins `room`, opens the socket and answers the server's offers.
    pub async fn join_as(guest: Guest, room: &RoomCode, name: &str) -> Self {
        Self::join_opts(guest, room, name, PumpOptions::default()).await
    }

    /// Like [`MediaGuest::join_as`], but the first `ignore_offers` offers
    /// are dropped unanswered (a browser that never answers).
    pub async fn join_with(guest: Guest, room: &RoomCode, name: &str, ignore_offers: usize) -> Self {
        Self::join_opts(guest, room, name, PumpOptions { ignore_offers, ..PumpOptions::default() }).await
    }

    /// Like [`MediaGuest::join_as`], but no ICE candidate crosses the
    /// socket either way: the connection keeps checking and never connects.
    pub async fn join_without_candidates(guest: Guest, room: &RoomCode, name: &str) -> Self {
        Self::join_opts(guest, room, name, PumpOptions { no_candidates: true, ..PumpOptions::default() }).await
    }

    /// `guest` joins `room` through its node but opens the socket through
    /// `socket_node`, another node of the deployment (a round-robin
    /// balancer sends each request wherever it likes).
    pub async fn join_through(guest: Guest, socket_node: std::net::SocketAddr, room: &RoomCode, name: &str) -> Self {
        Self::join_split(guest, Some(socket_node), room, name, PumpOptions::default()).await
    }

    async fn join_opts(guest: Guest, room: &RoomCode, name: &str, options: PumpOptions) -> Self {
        Self::join_split(guest, None, room, name, options).await
    }

    async fn join_split(
        guest: Guest,
        socket_node: Option<std::net::SocketAddr>,
        room: &RoomCode,
        name: &str,
        options: PumpOptions,
    ) -> Self {
        let outcome = guest.join(room, name).await.expect("join");
        let socket = match socket_node {
            Some(node) => guest.via(node).socket(room, &outcome.session_id).await,
            None => guest.socket(room, &outcome.session_id).await,
        };
        let (to_server, from_client) = mpsc::unbounded_channel::<ClientMsg>();
        let client =
            Arc::new(RtcClient::start(&IceSettings::loopback(), to_server).await.expect("client media starts"));
        let pump = Pump::start(socket.ws, client.clone(), from_client, options);
        Self { guest, outcome, room: room.clone(), client, pump }
    }

    /// Sends `msg` on this guest's socket, as if its page had.
    pub fn send(&self, msg: ClientMsg) {
        self.pump.send(msg);
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
        self.pump.vanish().await;
        self.client.close().await;
    }

    /// Closes the socket and the media without telling the server.
    pub async fn close(self) {
        self.pump.close().await;
        self.client.close().await;
    }
}
