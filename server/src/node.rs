//! The composition root of one node: connects the database and the store,
//! builds the shared [`AppState`], starts the node's loops (lease, media
//! ends, speakers, liveness, reconciler, node events), each on the state's
//! [`TaskTracker`] under the process token, and shuts them down once.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use leptos::prelude::*;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::http::identity::IdentityCookies;
use crate::http::limits;
use crate::room::Rooms;
use crate::store::LiveStore;
use crate::{db, media, metrics, reconcile, room, store};

use crate::room::{LEASE_EVERY, LEASE_TTL};

/// How often the reconciler looks for nodes whose lease has lapsed.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// How often the metrics recorder drains its histograms' samples into
/// their buckets, scraped or not (unscraped, they would pile up: a few bytes
/// per request and per leave).
const METRICS_UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Everything the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The Leptos settings the pages are rendered with.
    pub leptos: LeptosOptions,
    /// The room service.
    pub rooms: Arc<Rooms>,
    /// Signs and reads the identity cookies.
    pub identity: Arc<IdentityCookies>,
    /// STUN/TURN servers handed to joined sessions.
    pub ice_servers: Arc<media::ice_servers::IceServers>,
    /// Rate limits of the edge (tidied by the lease loop).
    pub limits: Arc<limits::RateLimits>,
    /// Renders the metrics for `/metrics`.
    pub metrics: PrometheusHandle,
    /// The `/api/debug/…` routes are served.
    pub debug_api: bool,
    /// Background tasks of the process (lease renewal, …).
    pub tasks: TaskTracker,
    /// One task per open signalling socket.
    pub sockets: TaskTracker,
    /// Cancelled at shutdown; parent of every session's token.
    pub shutdown: CancellationToken,
    /// HTTPS for the listen address (`None`: plain HTTP).
    pub tls: Option<crate::tls::Tls>,
    /// The client that relays joins to the node a room lives on.
    pub relay: reqwest::Client,
    /// Set once [`shutdown`] has run (it runs once, however often called).
    pub(crate) stopped: Arc<tokio::sync::OnceCell<()>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos.clone()
    }
}

/// Why the server could not start; each names the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be connected or migrated.
    #[error("DATABASE_URL (--database-url): {0}")]
    Database(#[from] db::DbError),
    /// The live-state store could not be reached.
    #[error("REDIS_URL (--redis-url): {0}")]
    Store(#[from] store::StoreError),
    /// The certificate settings or files are unusable.
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The SFU's threads could not be started.
    #[error("cannot start the media threads: {0}")]
    MediaThreads(std::io::Error),
}

/// Connects the database and the store and builds the shared state.
/// `store_prefix` namespaces the store's keys (tests use their own).
pub async fn start(config: &Config, leptos: LeptosOptions, store_prefix: &str) -> Result<AppState, StartError> {
    let tasks = TaskTracker::new();
    let shutdown = CancellationToken::new();
    // Certificates first: a bad file is reported before anything connects.
    let tls = crate::tls::Tls::from_config(config, &tasks, shutdown.child_token())?;
    let db = db::Db::connect(&config.database_url).await?;
    let store: Arc<dyn LiveStore> = match &config.redis_url {
        Some(url) => Arc::new(store::redis::RedisStore::connect(url, store_prefix).await?),
        None => Arc::new(store::memory::MemoryStore::new(store_prefix)),
    };
    let node_id = config.node_id_or_random();
    tracing::info!(node = %node_id, database = db.backend(), store = store.backend(), "starting");
    let (sfu, end_requests, speakers) =
        media::Sfu::new(media::MediaConfig::from_config(config), store.clone()).map_err(StartError::MediaThreads)?;
    let limits = room::Limits {
        pending_timeout: Duration::from_millis(config.pending_timeout_ms),
        empty_room: Duration::from_millis(config.empty_room_ms),
        unused_room: Duration::from_millis(config.unused_room_ms),
    };
    let url = config.public_url_or_derived();
    let relay = crate::http::relay::client();
    let rooms = Rooms::new(
        db,
        store,
        node_id,
        url,
        relay.clone(),
        shutdown.child_token(),
        Arc::new(sfu),
        tasks.clone(),
        limits,
    );
    let state = AppState {
        leptos,
        rooms,
        identity: Arc::new(IdentityCookies::new(config.secret.as_deref()).secure(config.https())),
        ice_servers: Arc::new(media::ice_servers::IceServers::from_config(config)),
        limits: Arc::new(limits::RateLimits::default()),
        metrics: metrics::install(),
        debug_api: config.debug_api,
        tasks,
        sockets: TaskTracker::new(),
        shutdown,
        tls,
        relay,
        stopped: Arc::default(),
    };
    spawn_lease(&state);
    spawn_media_ends(&state, end_requests);
    spawn_speakers(&state, speakers);
    spawn_liveness(&state, Duration::from_millis(config.suspect_ms), Duration::from_millis(config.remove_ms));
    spawn_reconciler(&state, Duration::from_millis(config.reconcile_ms));
    spawn_node_events(&state);
    spawn_metrics_upkeep(&state);
    Ok(state)
}

/// Drains the recorder's histogram samples every [`METRICS_UPKEEP_EVERY`].
fn spawn_metrics_upkeep(state: &AppState) {
    let handle = state.metrics.clone();
    let stop = state.shutdown.clone();
    state.tasks.spawn(async move {
        let mut tick = tokio::time::interval(METRICS_UPKEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => handle.run_upkeep(),
            }
        }
    });
}

/// Does what the other nodes of the deployment send (see [`nodes`]); one
/// at a time, in the order sent.
fn spawn_node_events(state: &AppState) {
    let Some(mut events) = state.rooms.store().events() else { return };
    let rooms = state.rooms.clone();
    let stop = state.shutdown.clone();
    state.tasks.spawn(async move {
        loop {
            let payload = tokio::select! {
                () = stop.cancelled() => break,
                p = events.recv() => p,
            };
            match payload {
                Ok(payload) => rooms.on_node_event(&payload),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "node events missed");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });
}

/// Ends the sessions whose media failed (ICE failure) through the single
/// close path.
fn spawn_media_ends(state: &AppState, mut requests: tokio::sync::mpsc::UnboundedReceiver<media::EndRequest>) {
    let rooms = state.rooms.clone();
    let stop = state.shutdown.clone();
    state.tasks.spawn(async move {
        loop {
            let request = tokio::select! {
                () = stop.cancelled() => break,
                request = requests.recv() => match request {
                    Some(r) => r,
                    None => break,
                },
            };
            if let Err(e) = rooms.end_session(&request.room, &request.session, &request.user, request.reason).await {
                tracing::warn!(room = %request.room, session = %request.session, error = %e, "session not fully ended");
            }
        }
    });
}

/// Hands the SFU's active-speaker changes to the room service.
fn spawn_speakers(state: &AppState, mut changes: tokio::sync::mpsc::UnboundedReceiver<media::SpeakerChange>) {
    let rooms = state.rooms.clone();
    let stop = state.shutdown.clone();
    state.tasks.spawn(async move {
        loop {
            let change = tokio::select! {
                () = stop.cancelled() => break,
                change = changes.recv() => match change {
                    Some(c) => c,
                    None => break,
                },
            };
            rooms.speaker_changed(&change.room, change.session.as_ref()).await;
        }
    });
}

/// Abrupt-loss detection: sweeps often enough that a session is shown as
/// reconnecting within `suspect` of its last sign of life and removed within
/// `remove` (each threshold is lowered by one tick to keep that promise).
fn spawn_liveness(state: &AppState, suspect: Duration, remove: Duration) {
    let tick = (suspect / 10).clamp(Duration::from_millis(20), Duration::from_millis(100));
    let (suspect, remove) = (suspect.saturating_sub(tick), remove.saturating_sub(tick));
    let rooms = state.rooms.clone();
    let stop = state.shutdown.clone();
    state.tasks.spawn(async move {
        let mut every = tokio::time::interval(tick);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = every.tick() => rooms.sweep(suspect, remove).await,
            }
        }
    });
}

/// The reconciler and the room lifetime check, one pass every `every`.
fn spawn_reconciler(state: &AppState, every: Duration) {
    let mut reconciler = reconcile::Reconciler::new(state.rooms.clone());
    let passes = ::metrics::counter!(metrics::RECONCILE_PASSES, "node" => state.rooms.node_id().to_owned());
    let stop = state.shutdown.clone();
    let probe = state.relay.clone();
    let several = state.rooms.store().events().is_some();
    state.tasks.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watch = tokio::time::interval(WATCH_EVERY);
        watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                // Only a store shared by several nodes can show another node die.
                _ = watch.tick(), if several => {
                    if let Err(e) = reconciler.watch_nodes(&probe).await {
                        tracing::warn!(error = %e, "nodes not watched");
                    }
                    continue;
                }
                _ = tick.tick() => match reconciler.pass().await {
                    Ok(r) => {
                        passes.increment(1);
                        if r.total() > 0 {
                            tracing::warn!(?r, "reconciler repaired orphans");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "reconciler pass skipped"),
                },
            }
            if let Err(e) = reconciler.rooms().close_idle_rooms().await {
                tracing::warn!(error = %e, "idle rooms not checked");
            }
        }
    });
}

fn spawn_lease(state: &AppState) {
    let rooms = state.rooms.clone();
    let limits = state.limits.clone();
    let stop = state.shutdown.clone();
    state.tasks.spawn(async move {
        let mut tick = tokio::time::interval(LEASE_EVERY);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {
                    limits.tidy();
                    if let Err(e) = rooms.store().renew_lease(rooms.node_id(), &rooms.lease(), LEASE_TTL).await {
                        tracing::warn!(error = %e, "lease not renewed");
                    }
                }
            }
        }
    });
}

/// Shutdown: end every session (reason `node-shutdown`), cancel, wait for
/// tasks, close the store. Runs once: a second call waits for the first.
pub async fn shutdown(state: &AppState) {
    state
        .stopped
        .get_or_init(|| async {
            state.rooms.shutdown().await;
            state.shutdown.cancel();
            state.rooms.media().shutdown(Duration::from_secs(5)).await;
            state.tasks.close();
            state.sockets.close();
            if tokio::time::timeout(Duration::from_secs(5), async {
                state.tasks.wait().await;
                state.sockets.wait().await;
            })
            .await
            .is_err()
            {
                tracing::warn!("tasks still running 5 s after shutdown");
            }
            state.rooms.store().quit().await;
        })
        .await;
}
