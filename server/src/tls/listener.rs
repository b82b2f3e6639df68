//! The HTTPS listener handed to `axum::serve`: TCP connections are accepted
//! in a task of their own and each handshake runs in its own task (bounded
//! in number and in time), so a client that opens a connection and says
//! nothing holds up no one. `axum::serve` receives only finished TLS
//! streams. A connection whose first bytes are not a TLS ClientHello (plain
//! HTTP, say) fails its handshake and is closed without an answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_acme::is_tls_alpn_challenge;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Tls;

/// A handshake not finished by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further connections wait to be accepted.
const MAX_HANDSHAKES: usize = 256;

/// Finished TLS connections, as `axum::serve` takes them.
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `tcp` until `stop`, on `tasks`.
    pub fn new(tcp: TcpListener, tls: Tls, tasks: &TaskTracker, stop: CancellationToken) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (send, ready) = mpsc::channel(64);
        let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let handshakes = tasks.clone();
        tasks.spawn(async move {
            loop {
                let permit = tokio::select! {
                    () = stop.cancelled() => break,
                    permit = permits.clone().acquire_owned() => match permit {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                };
                let accepted = tokio::select! {
                    () = stop.cancelled() => break,
                    accepted = tcp.accept() => accepted,
                };
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, then go on.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (tls, send, stop) = (tls.clone(), send.clone(), stop.clone());
                handshakes.spawn(async move {
                    let _permit = permit;
                    let done = tokio::select! {
                        () = stop.cancelled() => return,
                        done = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(stream, &tls)) => done,
                    };
                    match done {
                        // `serve` stops taking connections at shutdown: never wait on it past that.
                        Ok(Some(stream)) => tokio::select! {
                            () = stop.cancelled() => {}
                            _ = send.send((stream, peer)) => {}
                        },
                        Ok(None) => {}
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { ready, local })
    }
}

/// One handshake: the ACME validation gets the challenge certificate and is
/// closed; everyone else gets the site's certificate.
async fn handshake(stream: TcpStream, tls: &Tls) -> Option<TlsStream<TcpStream>> {
    let start = match LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await {
        Ok(start) => start,
        Err(e) => {
            tracing::debug!(error = %e, "not a TLS connection");
            return None;
        }
    };
    if let Some(challenge) = tls.challenge.as_ref().filter(|_| is_tls_alpn_challenge(&start.client_hello())) {
        tracing::info!("answering the ACME TLS-ALPN-01 validation");
        if let Ok(mut validation) = start.into_stream(challenge.clone()).await {
            let _ = validation.shutdown().await;
        }
        return None;
    }
    match start.into_stream(tls.default.clone()).await {
        Ok(stream) => Some(stream),
        Err(e) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            // The accept loop ended (shutdown): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
