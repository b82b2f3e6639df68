//! Carries a headless client's signalling over a room's socket the way the
//! page's socket loop does: a heartbeat every second, the client's answers
//! and candidates out, the server's offers and candidates in.

use std::sync::Arc;
use std::time::Duration;

use app::signal::{ClientMsg, ServerMsg, HEARTBEAT_INTERVAL_MS};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::client::RtcClient;

/// The socket type the pump drives (what `tokio_tungstenite::connect_async` opens).
pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How the pump treats the signalling (for tests of a misbehaving page).
#[derive(Debug, Clone, Copy, Default)]
pub struct PumpOptions {
    /// The first this many offers are dropped unanswered (a page that never answers).
    pub ignore_offers: usize,
    /// No ICE candidate crosses the socket either way (the connection keeps
    /// checking and never connects).
    pub no_candidates: bool,
}

/// A running pump; its task ends on [`Pump::close`], [`Pump::vanish`], or
/// when the socket closes.
#[derive(Debug)]
pub struct Pump {
    /// Extra messages for the socket, as if the page sent them.
    inject: mpsc::UnboundedSender<ClientMsg>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Pump {
    /// Starts carrying `client`'s messages (`from_client`, the channel the
    /// client was started with) and the server's over `ws`.
    pub fn start(
        mut ws: Ws,
        client: Arc<RtcClient>,
        mut from_client: mpsc::UnboundedReceiver<ClientMsg>,
        options: PumpOptions,
    ) -> Self {
        let (inject, mut injected) = mpsc::unbounded_channel::<ClientMsg>();
        let stop = CancellationToken::new();
        let pump_stop = stop.clone();
        let mut ignore = options.ignore_offers;
        let task = tokio::spawn(async move {
            let mut heartbeat = tokio::time::interval(Duration::from_millis(u64::from(HEARTBEAT_INTERVAL_MS)));
            loop {
                let out = tokio::select! {
                    () = pump_stop.cancelled() => break,
                    _ = heartbeat.tick() => ClientMsg::Ping,
                    Some(msg) = from_client.recv() => {
                        if options.no_candidates && matches!(msg, ClientMsg::IceCandidate { .. }) {
                            continue;
                        }
                        msg
                    }
                    Some(msg) = injected.recv() => msg,
                    frame = ws.next() => match frame {
                        Some(Ok(Message::Text(t))) => {
                            match serde_json::from_str::<ServerMsg>(&t) {
                                Ok(ServerMsg::Offer { .. }) if ignore > 0 => ignore -= 1,
                                Ok(ServerMsg::IceCandidate { .. }) if options.no_candidates => {}
                                Ok(msg) => client.deliver(msg),
                                Err(_) => {}
                            }
                            continue;
                        }
                        Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                        Some(Ok(_)) => continue,
                    },
                };
                let Ok(text) = serde_json::to_string(&out) else { continue };
                if ws.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
            let _ = ws.close(None).await;
        });
        Self { inject, stop, task }
    }

    /// Sends `msg` on the socket, as if the page had.
    pub fn send(&self, msg: ClientMsg) {
        let _ = self.inject.send(msg);
    }

    /// Closes the socket with a close frame and waits for the task.
    pub async fn close(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }

    /// Drops the socket without a close frame (a crashed tab, a lost link).
    pub async fn vanish(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}
