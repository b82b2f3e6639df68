//! The reconciler: orphans in the store, the database or this node's live
//! sessions are repaired through the single close path (reason `reaped`)
//! and counted by kind; sessions owned by another live node, and joins in
//! flight, are never touched; a crashed node's sessions are reaped by a
//! surviving node once its lease is gone.
//!
//! Most tests drive passes by hand (the server's own reconciler is set to
//! an hour), so each step is deterministic; one runs the background sweep.

mod common;

use std::time::Duration;

use app::model::{ParticipantId, ParticipantState, Presence, Role, RoomCode, SessionId, UserId};
use common::{Backend, Seen, TestServer};
use server::db;
use server::reconcile::{Reaped, Reconciler};
use server::store::MemberEntry;

const HOUR: &str = "3600000";

async fn quiet(backend: Backend) -> TestServer {
    let db = match backend {
        Backend::SqliteMemory => common::TestDb::sqlite(),
        Backend::PostgresRedis => common::TestDb::postgres().await,
    };
    let mut args: Vec<String> =
        ["cleanroom", "--debug-api", "--reconcile-ms", HOUR, "--database-url", &db.url].map(String::from).to_vec();
    if backend == Backend::PostgresRedis {
        args.extend(["--redis-url".into(), common::redis_url()]);
    }
    let mut server = TestServer::with_args(&args).await;
    server.db = Some(db);
    server
}

/// A session as `node` would have recorded it at join: member entry, user
/// pointer, live row and open history row.
async fn plant(server: &TestServer, room: &RoomCode, node: &str, store: bool, row: bool) -> (SessionId, UserId) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (session, user) = (SessionId::new(&id), UserId::new(format!("u{}", &id[..12])));
    let entry = MemberEntry {
        session: session.clone(),
        participant: ParticipantId::new(format!("p{}", &id[..12])),
        user: user.clone(),
        name: "Ghost".into(),
        role: Role::Member,
        state: ParticipantState::Active,
        node: node.to_owned(),
        joined_at_ms: chrono::Utc::now().timestamp_millis(),
        presence: Presence::Connected,
        audio_muted: false,
        video_muted: false,
        audio_locked: false,
        host_mutes: 0,
        screen: false,
    };
    let rooms = &server.state.rooms;
    if store {
        rooms.store().put_member(room, &entry).await.unwrap();
    }
    if row {
        rooms
            .db()
            .insert_participant(db::participant::Model {
                session_id: id.clone(),
                participant_id: entry.participant.to_string(),
                room_code: room.to_string(),
                user_id: user.to_string(),
                display_name: entry.name.clone(),
                role: "member".into(),
                state: "active".into(),
                node_id: node.to_owned(),
                joined_at_ms: entry.joined_at_ms,
            })
            .await
            .unwrap();
    }
    (session, user)
}

/// Nothing of `session` is left in the store or the live rows.
async fn assert_gone(server: &TestServer, room: &RoomCode, session: &SessionId, user: &UserId) {
    let rooms = &server.state.rooms;
    assert_eq!(rooms.store().session_entries(room, session, user).await.unwrap(), Vec::<String>::new());
    assert!(rooms.db().participant(session.as_str()).await.unwrap().is_none(), "live row of {session} left");
}

async fn crashed_node_is_reaped_and_live_ones_are_not(backend: Backend) {
    let server = quiet(backend).await;
    let rooms = &server.state.rooms;
    let ada = server.guest();
    let room = ada.create_room("Ada", false).await.unwrap();
    let a = ada.join(&room, "Ada").await.unwrap();
    // Another node of the deployment, alive (its lease is fresh; asked at
    // its address, it answers), with a room of its own.
    let busy_lease = server::store::NodeLease { url: server.url(""), ..Default::default() };
    rooms.store().renew_lease("busy-node", &busy_lease, Duration::from_secs(600)).await.unwrap();
    let busy_room = ada.create_room("Ada", false).await.unwrap();
    let (busy, busy_user) = plant(&server, &busy_room, "busy-node", true, true).await;
    // A node that crashed: its lease expired, its room's session stayed behind.
    let ghost_room = ada.create_room("Ada", false).await.unwrap();
    let (ghost, ghost_user) = plant(&server, &ghost_room, "crashed-node", true, true).await;

    let mut reconciler = Reconciler::new(rooms.clone());
    assert_eq!(reconciler.pass().await.unwrap(), Reaped::default(), "the first sighting only suspects");
    let reaped = reconciler.pass().await.unwrap();
    assert_eq!(reaped, Reaped { store_keys: 1, db_rows: 1, live_sessions: 0 });
    assert_gone(&server, &ghost_room, &ghost, &ghost_user).await;
    assert_eq!(server.recorded_leave(&ghost).await, "reaped");

    // Untouched: this node's live session and the other live node's one.
    assert_eq!(reconciler.pass().await.unwrap(), Reaped::default());
    for (r, s, u) in [(&room, &a.session_id, &ada_user(&server, &a.session_id).await), (&busy_room, &busy, &busy_user)]
    {
        assert!(!rooms.store().session_entries(r, s, u).await.unwrap().is_empty(), "{s} kept in the store");
        assert!(rooms.db().participant(s.as_str()).await.unwrap().is_some(), "{s} kept its row");
    }
    // Once the busy node's lease is gone too, its session goes the same way.
    rooms.store().drop_lease("busy-node").await.unwrap();
    reconciler.pass().await.unwrap();
    assert_eq!(reconciler.pass().await.unwrap(), Reaped { store_keys: 1, db_rows: 1, live_sessions: 0 });
    assert_gone(&server, &busy_room, &busy, &busy_user).await;
    let r = server.resources(&room).await;
    assert_eq!(r["rooms"][0]["participants"], 1, "{r}");
    assert_eq!(r["rooms"][0]["db_participants"], 1, "{r}");
    server.stop().await;
}

async fn ada_user(server: &TestServer, session: &SessionId) -> UserId {
    UserId::new(server.state.rooms.db().participant(session.as_str()).await.unwrap().unwrap().user_id)
}

#[tokio::test]
async fn crashed_node_is_reaped_sqlite_memory() {
    crashed_node_is_reaped_and_live_ones_are_not(Backend::SqliteMemory).await;
}

#[tokio::test]
async fn crashed_node_is_reaped_postgres_redis() {
    crashed_node_is_reaped_and_live_ones_are_not(Backend::PostgresRedis).await;
}

async fn this_nodes_orphans_are_reaped(backend: Backend) {
    let server = quiet(backend).await;
    let rooms = &server.state.rooms;
    let me = rooms.node_id().to_owned();
    let (ada, bob) = (server.guest(), server.guest());
    let room = ada.create_room("Ada", false).await.unwrap();
    let a = ada.join(&room, "Ada").await.unwrap();
    let b = bob.join(&room, "Bob").await.unwrap();
    let mut bob_socket = bob.socket(&room, &b.session_id).await;
    let bob_user = ada_user(&server, &b.session_id).await;

    // A live session the store forgot (say, a flushed Redis).
    rooms.store().remove_session(&room, &b.session_id, &bob_user).await.unwrap();
    // A row of this node with no live session (a join whose process step failed).
    let (row_only, row_user) = plant(&server, &room, &me, false, true).await;
    // A store entry of this node with no row and no session (a failed join undo).
    let (store_only, store_user) = plant(&server, &room, &me, true, false).await;
    // Pointers to a session that does not exist anywhere.
    let dangling = SessionId::new("0123456789abcdef0123456789abcdef");
    rooms.store().set_speaker(&room, &dangling).await.unwrap();
    rooms.store().raise_hand(&room, &dangling, 1).await.unwrap();

    let mut reconciler = Reconciler::new(rooms.clone());
    assert_eq!(reconciler.pass().await.unwrap(), Reaped::default());
    let reaped = reconciler.pass().await.unwrap();
    // Bob: live session + row (and a store key if his media, opening with
    // the socket, recorded a resource after the forgetting); the planted
    // row; the store-only entry and the pointers.
    assert_eq!((reaped.db_rows, reaped.live_sessions), (2, 1), "{reaped:?}");
    assert!((2..=3).contains(&reaped.store_keys), "{reaped:?}");
    assert_eq!(reconciler.pass().await.unwrap(), Reaped::default(), "nothing left to repair");

    // Bob's page is told its session ended, and everything of it is gone.
    loop {
        match bob_socket.next(Duration::from_secs(10)).await {
            Seen::Closed(code) => {
                assert_eq!(code, Some(app::signal::close_code::SESSION_ENDED));
                break;
            }
            Seen::Msg(_) => continue,
        }
    }
    assert!(rooms.sessions().get(&b.session_id).is_none());
    assert_gone(&server, &room, &b.session_id, &bob_user).await;
    assert_eq!(server.recorded_leave(&b.session_id).await, "reaped");
    assert_gone(&server, &room, &row_only, &row_user).await;
    assert_eq!(server.recorded_leave(&row_only).await, "reaped");
    assert_gone(&server, &room, &store_only, &store_user).await;
    assert_eq!(rooms.store().speaker(&room).await.unwrap(), None);
    assert!(rooms.store().hands(&room).await.unwrap().is_empty());

    // Ada, live and recorded everywhere, is untouched.
    assert!(rooms.sessions().get(&a.session_id).is_some());
    let r = server.resources(&room).await;
    assert_eq!(r["sessions"], 1, "{r}");
    assert_eq!(r["rooms"][0]["participants"], 1, "{r}");
    assert_eq!(r["rooms"][0]["db_participants"], 1, "{r}");
    server.stop().await;
}

#[tokio::test]
async fn this_nodes_orphans_are_reaped_sqlite_memory() {
    this_nodes_orphans_are_reaped(Backend::SqliteMemory).await;
}

#[tokio::test]
async fn this_nodes_orphans_are_reaped_postgres_redis() {
    this_nodes_orphans_are_reaped(Backend::PostgresRedis).await;
}

#[tokio::test]
async fn a_join_in_flight_is_not_an_orphan() {
    let server = quiet(Backend::SqliteMemory).await;
    let rooms = &server.state.rooms;
    let me = rooms.node_id().to_owned();
    let ada = server.guest();
    let room = ada.create_room("Ada", false).await.unwrap();
    // Seen half-way (store written, row not yet) by one pass ...
    let (session, user) = plant(&server, &room, &me, true, false).await;
    let mut reconciler = Reconciler::new(rooms.clone());
    reconciler.pass().await.unwrap();
    // ... and complete by the next: the real join finishes and is live.
    rooms.store().remove_session(&room, &session, &user).await.unwrap();
    let a = ada.join(&room, "Ada").await.unwrap();
    assert_eq!(reconciler.pass().await.unwrap(), Reaped::default());
    assert_eq!(reconciler.pass().await.unwrap(), Reaped::default());
    assert!(rooms.sessions().get(&a.session_id).is_some());
    server.stop().await;
}

fn orphan_count(metrics: &str, kind: &str) -> f64 {
    let prefix = format!("cleanroom_orphans_reaped_total{{kind=\"{kind}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
}

/// Two nodes on one Redis and one PostgreSQL; the node holding a session
/// crashes (its tasks stop, nothing is cleaned, its lease lapses). The
/// survivor's background reconciler reaps the session; the survivor's own
/// session is never touched.
#[tokio::test]
async fn a_surviving_node_reaps_a_crashed_node() {
    let database = common::TestDb::postgres().await;
    let prefix = common::unique("cleanroom-test-");
    let args = |node: &str| common::node_args(&database.url, node, &["--reconcile-ms", "150"]);
    let a = TestServer::with_args_prefix(&args("node-a"), &prefix).await;
    let b = TestServer::with_args_prefix(&args("node-b"), &prefix).await;
    // Ada's room lives on node A, Bob's on node B.
    let (ada, bob) = (a.guest(), b.guest());
    let room = ada.create_room("Ada", false).await.unwrap();
    let on_a = ada.join(&room, "Ada").await.unwrap();
    let bobs_room = bob.create_room("Bob", false).await.unwrap();
    let on_b = bob.join(&bobs_room, "Bob").await.unwrap();
    let mut bob_socket = bob.socket(&bobs_room, &on_b.session_id).await;

    // Both alive: several passes on both nodes (counted, a positive signal)
    // repair nothing.
    let passes = |metrics: &str, node: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with("cleanroom_reconcile_passes_total") && l.contains(&format!("node=\"{node}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let before = reqwest::get(b.url("/metrics")).await.unwrap().text().await.unwrap();
    let (a0, b0) = (passes(&before, "node-a"), passes(&before, "node-b"));
    common::eventually(Duration::from_secs(15), "three more passes on each node", || async {
        let now = reqwest::get(b.url("/metrics")).await.ok()?.text().await.ok()?;
        (passes(&now, "node-a") >= a0 + 3.0 && passes(&now, "node-b") >= b0 + 3.0).then_some(())
    })
    .await;
    let rooms = &b.state.rooms;
    for r in [&room, &bobs_room] {
        assert_eq!(rooms.db().count_participants(r.as_str()).await.unwrap(), 1);
        assert_eq!(rooms.store().members(r).await.unwrap().len(), 1);
    }

    // Node A crashes: it stops answering, its tasks stop without ending
    // anything, its lease lapses.
    a.crash();
    rooms.store().drop_lease("node-a").await.unwrap();

    common::eventually(Duration::from_secs(15), "node B reaped node A's session", || async {
        let row = rooms.db().participant(on_a.session_id.as_str()).await.ok()?;
        row.is_none().then_some(())
    })
    .await;
    assert_eq!(b.recorded_leave(&on_a.session_id).await, "reaped");
    assert!(rooms.store().members(&room).await.unwrap().is_empty());
    assert_eq!(bob_socket.roster_of(1, Duration::from_secs(10)).await[0].id, on_b.participant_id);
    let members = rooms.store().members(&bobs_room).await.unwrap();
    assert_eq!(members.iter().map(|m| m.session.clone()).collect::<Vec<_>>(), vec![on_b.session_id.clone()]);
    assert!(rooms.sessions().get(&on_b.session_id).is_some(), "the survivor's own session is kept");
    let metrics = reqwest::get(b.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(orphan_count(&metrics, "db-row") >= 1.0 && orphan_count(&metrics, "store-key") >= 1.0, "{metrics}");

    b.stop().await;
    a.stop().await;
    database.drop_db().await;
}
