//! Churn: headless participants with media join and leave two rooms at
//! random for a fixed time (`CHURN_SECS`, default 15), through every way
//! out the server can see: the Leave call, the tab-close beacon, a clean
//! socket close, and (30 %) an abrupt drop (socket gone without a close
//! frame, no leave), with frozen readers mixed in (a page that stops
//! reading its socket while its TCP connection stays open, until the
//! server drops the socket). Afterwards nothing is left: no session, peer
//! connection, track, forwarder, socket, store key or live row, and every
//! history row is closed with a reason that fits how its session ended.
//! Production deployment: PostgreSQL and Redis. The seed is printed
//! (`CHURN_SEED` replays one).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use app::model::{RoomCode, SessionId};
use common::rtc_client::MediaGuest;
use common::{eventually, TestServer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sea_orm::EntityTrait;
use server::db::participant_session;

const WORKERS: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    Leave,
    Beacon,
    /// A clean close frame but no leave (the beacon was lost).
    CloseOnly,
    /// No close frame, no leave.
    Vanish,
    /// The page stops reading its socket (its TCP stays open to the end).
    Frozen,
}

impl Exit {
    fn pick(rng: &mut StdRng) -> Self {
        match rng.random_range(0..100) {
            0..30 => Exit::Vanish,
            30..65 => Exit::Leave,
            65..85 => Exit::Beacon,
            _ => Exit::CloseOnly,
        }
    }

    /// Reasons the server may record for this exit.
    fn reasons(self) -> &'static [&'static str] {
        match self {
            Exit::Leave => &["left"],
            Exit::Beacon => &["page-hidden"],
            // Silent after the close: removed at the end of the grace window,
            // unless its media failed first.
            Exit::CloseOnly | Exit::Vanish => &["socket-closed", "heartbeat-lost", "ice-failed"],
            // Dropped by the server, then silent.
            Exit::Frozen => &["socket-closed", "heartbeat-lost"],
        }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_churn_leaves_nothing_behind() {
    let secs = env_u64("CHURN_SECS", 15);
    let seed = env_u64("CHURN_SEED", rand::random::<u32>() as u64);
    eprintln!("churn: {secs} s, seed {seed} (CHURN_SEED={seed} replays it)");

    let database = common::TestDb::postgres().await;
    let args: Vec<String> = [
        "cleanroom",
        "--debug-api",
        "--database-url",
        &database.url,
        "--redis-url",
        &common::redis_url(),
        "--suspect-ms",
        "300",
        "--remove-ms",
        "1500",
    ]
    .map(String::from)
    .to_vec();
    let server = Arc::new(TestServer::with_args(&args).await);
    let host = server.guest();
    let rooms: Vec<RoomCode> =
        vec![host.create_room("Host", false).await.unwrap(), host.create_room("Host", false).await.unwrap()];
    let ended: Arc<Mutex<HashMap<SessionId, Exit>>> = Arc::default();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (server, rooms, ended) = (server.clone(), rooms.clone(), ended.clone());
        workers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(w as u64));
            while tokio::time::Instant::now() < deadline {
                let room = &rooms[rng.random_range(0..rooms.len())];
                let guest = MediaGuest::join(&server, room, &format!("Churner {w}")).await;
                tokio::time::sleep(Duration::from_millis(rng.random_range(100..1500))).await;
                let exit = Exit::pick(&mut rng);
                let session = guest.outcome.session_id.clone();
                match exit {
                    Exit::Leave => guest.leave().await,
                    Exit::Beacon => {
                        let status = guest.guest.beacon(&session).await;
                        assert!(status.is_success(), "beacon answered {status}");
                        guest.close().await;
                    }
                    Exit::CloseOnly => guest.close().await,
                    // (Frozen readers have a worker of their own.)
                    Exit::Vanish | Exit::Frozen => guest.vanish().await,
                }
                ended.lock().unwrap().insert(session, exit);
            }
        }));
    }
    // Frozen readers, one after another, through the same window.
    let frozen = {
        let (server, room, ended) = (server.clone(), rooms[0].clone(), ended.clone());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while tokio::time::Instant::now() < deadline {
                let guest = server.guest();
                let joined = guest.join(&room, "Frozen").await.expect("frozen reader joins");
                let mut socket = guest.frozen_socket(&room, &joined.session_id).await;
                let dropped = socket.ping_until_dropped(Duration::from_secs(60)).await;
                assert!(dropped.is_some(), "the server dropped the frozen reader's socket");
                ended.lock().unwrap().insert(joined.session_id, Exit::Frozen);
                held.push(socket);
                // A handful through the window, not a flood of them.
                tokio::time::sleep(Duration::from_millis(1000)).await;
            }
            held
        })
    };
    for w in workers {
        w.await.expect("a churn worker failed");
    }
    let frozen = frozen.await.expect("the frozen readers");
    eprintln!("churn: {} frozen readers, their TCP still open", frozen.len());
    let ended = std::mem::take(&mut *ended.lock().unwrap());
    let vanished = ended.values().filter(|e| matches!(e, Exit::Vanish)).count();
    eprintln!("churn: {} sessions, {vanished} vanished abruptly", ended.len());
    assert!(ended.len() >= 2 * WORKERS, "too few sessions to mean anything: {}", ended.len());

    // Everything goes: the last silent ones within the grace window.
    let state = &server.state;
    eventually(Duration::from_secs(20), "every session ended everywhere", || async {
        let mut clean = true;
        for room in &rooms {
            let r = server.resources(room).await;
            let node = ["sessions", "peer_connections", "tracks", "forwarders", "websockets"].iter().all(|k| r[k] == 0);
            let here =
                ["participants", "pending", "store_keys", "db_participants"].iter().all(|k| r["rooms"][0][k] == 0);
            clean &= node && here;
        }
        clean &= state.rooms.db().all_participants().await.ok()?.is_empty();
        clean.then_some(())
    })
    .await;
    for room in &rooms {
        assert_eq!(state.rooms.store().room_keys(room).await.unwrap(), Vec::<String>::new());
    }

    // One history row per session, each closed with a fitting reason.
    let history = participant_session::Entity::find().all(state.rooms.db().connection()).await.unwrap();
    assert_eq!(history.len(), ended.len(), "one history row per session");
    let mut by_reason: HashMap<String, usize> = HashMap::new();
    for row in &history {
        let exit = ended.get(&SessionId::new(&row.session_id)).expect("a session this test made");
        let reason = row.leave_reason.as_deref().unwrap_or_else(|| panic!("{} has no reason", row.session_id));
        assert!(row.left_at_ms.is_some(), "{} has no left time", row.session_id);
        assert!(exit.reasons().contains(&reason), "{} ended by {exit:?} recorded as {reason}", row.session_id);
        *by_reason.entry(reason.to_owned()).or_default() += 1;
    }
    eprintln!("churn: reasons {by_reason:?}");

    drop(frozen);
    let server = Arc::into_inner(server).expect("workers are done");
    server.stop().await;
    database.drop_db().await;
}
