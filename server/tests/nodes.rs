//! Several nodes as real processes sharing one PostgreSQL database, one
//! Redis and one secret: how they start together, how any node serves any
//! joiner while a room's media lives on one node, how the survivors reap a
//! node that was killed (with the real lease TTL), and how a node stopping
//! on SIGTERM moves its rooms instead of ending the meeting. (The pages'
//! own rejoin is end2end/tests/several_nodes.spec.ts, through haproxy.)

mod common;

use std::time::Duration;

use app::model::LeaveReason;
use app::model::RoomCode;
use app::signal::close_code;
use common::nodes::{Deployment, Node};
use common::rtc_client::MediaGuest;
use common::{eventually, Guest, Seen, TcpCut};
use sea_orm::{ConnectionTrait, Database, Statement};

const MEDIA: Duration = Duration::from_secs(30);
/// Packets from every other publisher before we call it "hearing".
const ENOUGH: u64 = 50;

/// Every migration the server knows (`server/src/db/migration.rs`).
const MIGRATIONS: i64 = 4;

#[tokio::test(flavor = "multi_thread")]
async fn nodes_started_together_all_come_up_on_a_fresh_and_on_a_migrated_database() {
    let deployment = Deployment::postgres().await;
    for round in ["fresh", "migrated"] {
        // Three at the same moment: each runs the migrations at start.
        let mut nodes: Vec<_> = (0..3).map(|i| deployment.spawn(&format!("{round}-{i}"), &[])).collect();
        for node in &mut nodes {
            node.wait_ready(Duration::from_secs(60)).await;
        }
        for node in &mut nodes {
            let status = node.terminate(Duration::from_secs(20));
            assert!(status.success(), "node {} exited with {status}:\n{}", node.id, node.log());
            assert!(!node.log().contains("duplicate key"), "{round}: node {}:\n{}", node.id, node.log());
        }
    }
    // Each migration was applied exactly once.
    let conn = Database::connect(&deployment.db.url).await.expect("database");
    let row = conn
        .query_one_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT COUNT(*) AS n, COUNT(DISTINCT version) AS d FROM seaql_migrations",
        ))
        .await
        .expect("migration table read")
        .expect("a row");
    let (n, d): (i64, i64) = (row.try_get("", "n").unwrap(), row.try_get("", "d").unwrap());
    assert_eq!((n, d), (MIGRATIONS, MIGRATIONS));
    let _ = conn.close().await;
    deployment.drop_all().await;
}

async fn all_hear_each_other(guests: &[&MediaGuest]) {
    for listener in guests {
        for speaker in guests.iter().filter(|s| s.participant() != listener.participant()) {
            eventually(MEDIA, &format!("{} hears {}", listener.participant(), speaker.participant()), || async {
                (listener.stats().received_from(speaker.participant()) >= ENOUGH).then_some(())
            })
            .await;
        }
    }
}

/// `/api/debug/resources?room=…` of one node.
async fn resources(node: &Node, room: &RoomCode) -> serde_json::Value {
    reqwest::get(node.url(&format!("/api/debug/resources?room={room}"))).await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn any_node_serves_any_joiner_and_the_media_stays_on_the_rooms_node() {
    let deployment = Deployment::postgres().await;
    let mut nodes = deployment.start(&["node-a", "node-b", "node-c"]).await;
    let [a, b, c] = [&nodes[0], &nodes[1], &nodes[2]];

    // The room's first arrival comes through node A: the room lives there.
    let ada = Guest::new(a.addr());
    let room = ada.create_room("Ada", false).await.unwrap();
    let ada = MediaGuest::join_as(ada, &room, "Ada").await;
    // The others' joins and sockets each reach another node.
    let bob = MediaGuest::join_through(Guest::new(b.addr()), c.addr(), &room, "Bob").await;
    let cyd = MediaGuest::join_through(Guest::new(c.addr()), b.addr(), &room, "Cyd").await;
    all_hear_each_other(&[&ada, &bob, &cyd]).await;

    // Every node tells the same room; only node A holds its media.
    let on_a = resources(a, &room).await;
    assert_eq!(on_a["rooms"][0]["participants"], 3, "{on_a}");
    assert_eq!(on_a["rooms"][0]["node"], "node-a", "{on_a}");
    assert_eq!((on_a["peer_connections"].as_u64(), on_a["forwarders"].as_u64()), (Some(3), Some(12)), "{on_a}");
    for other in [b, c] {
        let r = resources(other, &room).await;
        assert_eq!(r["rooms"][0]["participants"], 3, "{r}");
        assert_eq!(r["rooms"][0]["node"], "node-a", "{r}");
        assert_eq!((r["sessions"].as_u64(), r["peer_connections"].as_u64()), (Some(0), Some(0)), "{r}");
    }

    // Bob leaves through node B (his socket runs through node C): everyone
    // else stops hearing him, and node A releases everything of his.
    bob.leave().await;
    eventually(MEDIA, "Bob's media released on node A", || async {
        let r = resources(a, &room).await;
        (r["peer_connections"].as_u64() == Some(2) && r["forwarders"].as_u64() == Some(4)).then_some(())
    })
    .await;
    ada.leave().await;
    cyd.leave().await;
    eventually(MEDIA, "the room empty on every node", || async {
        for node in [a, b, c] {
            let r = resources(node, &room).await;
            if r["rooms"][0]["participants"] != 0 || r["sessions"] != 0 || !r["rooms"][0]["node"].is_null() {
                return None;
            }
        }
        Some(())
    })
    .await;
    for node in &mut nodes {
        let status = node.terminate(Duration::from_secs(20));
        assert!(status.success(), "node {} exited with {status}:\n{}", node.id, node.log());
        assert!(!node.log().contains("panicked"), "node {}:\n{}", node.id, node.log());
    }
    drop(nodes);
    deployment.drop_all().await;
}

/// The leave reason of every session of `room` in the history table.
async fn reasons(url: &str, room: &RoomCode) -> Vec<Option<String>> {
    let conn = Database::connect(url).await.expect("database");
    let rows = conn
        .query_all_raw(Statement::from_sql_and_values(
            conn.get_database_backend(),
            "SELECT leave_reason FROM participant_sessions WHERE room_code = $1 ORDER BY joined_at_ms",
            [room.to_string().into()],
        ))
        .await
        .expect("history read");
    let _ = conn.close().await;
    rows.iter().map(|r| r.try_get::<Option<String>>("", "leave_reason").unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_nodes_sessions_are_reaped_by_the_survivors_once_its_lease_expires() {
    let deployment = Deployment::postgres().await;
    let mut nodes = deployment.start(&["node-a", "node-b"]).await;
    // The room lives on node A; Bob reaches it through node B.
    let ada = Guest::new(nodes[0].addr());
    let room = ada.create_room("Ada", false).await.unwrap();
    let ada = MediaGuest::join_as(ada, &room, "Ada").await;
    let bob = MediaGuest::join_through(Guest::new(nodes[1].addr()), nodes[1].addr(), &room, "Bob").await;
    all_hear_each_other(&[&ada, &bob]).await;
    assert_eq!(reasons(&deployment.db.url, &room).await, [None, None]);

    // Node A dies without a word (SIGKILL): its lease stays until it expires.
    nodes[0].kill();
    let b = &nodes[1];
    // Reaped by node B with the real lease TTL (9 s) plus its look each second.
    eventually(Duration::from_secs(15), "node A's sessions reaped by node B", || async {
        let r = resources(b, &room).await;
        let room_state = &r["rooms"][0];
        (room_state["participants"] == 0
            && room_state["db_participants"] == 0
            && room_state["store_keys"] == 0
            && room_state["node"].is_null())
        .then_some(())
    })
    .await;
    assert_eq!(
        reasons(&deployment.db.url, &room).await,
        [Some("reaped".to_owned()), Some("reaped".to_owned())],
        "each session closed once, as reaped"
    );
    assert!(b.log().contains("a node is gone"), "{}", b.log());
    // Bob's page, reconnecting its socket, is told to join again (not that
    // its session is unknown), and a new join lands on node B.
    let bob_again = bob.guest.via(b.addr());
    let mut old_socket = bob_again.socket(&room, &bob.outcome.session_id).await;
    assert!(matches!(old_socket.next(MEDIA).await, Seen::Closed(Some(close_code::MOVED))));
    let rejoined = bob_again.join(&room, "Bob").await.unwrap();
    assert_eq!(resources(b, &room).await["rooms"][0]["node"], "node-b");
    bob_again.leave(&rejoined.session_id).await.unwrap();
    ada.close().await;
    bob.close().await;
    let status = nodes[1].terminate(Duration::from_secs(20));
    assert!(status.success(), "node B exited with {status}:\n{}", nodes[1].log());
    drop(nodes);
    deployment.drop_all().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_draining_node_moves_its_rooms_and_nobody_is_told_node_shutdown() {
    let deployment = Deployment::postgres().await;
    let mut nodes = deployment.start(&["node-a", "node-b"]).await;
    let (a, b) = (nodes[0].addr(), nodes[1].addr());
    // The room lives on node A; Bob's join and socket come through node B.
    let ada = Guest::new(a);
    let room = ada.create_room("Ada", false).await.unwrap();
    let ada_in = ada.join(&room, "Ada").await.unwrap();
    let mut ada_socket = ada.socket(&room, &ada_in.session_id).await;
    let bob = Guest::new(b);
    let bob_in = bob.join(&room, "Bob").await.unwrap();
    let mut bob_socket = bob.socket(&room, &bob_in.session_id).await;
    bob_socket.roster_of(2, MEDIA).await;
    assert_eq!(resources(&nodes[1], &room).await["rooms"][0]["node"], "node-a");

    // SIGTERM on node A while node B runs: both pages are told to join again.
    let status = nodes[0].terminate(Duration::from_secs(30));
    assert!(status.success(), "node A exited with {status}:\n{}", nodes[0].log());
    assert_eq!(ada_socket.ended(MEDIA).await, LeaveReason::Moved);
    assert_eq!(bob_socket.ended(MEDIA).await, LeaveReason::Moved);
    assert_eq!(reasons(&deployment.db.url, &room).await, [Some("moved".to_owned()), Some("moved".to_owned())]);

    // They join again (their pages do it by themselves): one call, on node B.
    let ada = ada.via(b);
    let ada_again = ada.join(&room, "Ada").await.unwrap();
    let mut ada_socket = ada.socket(&room, &ada_again.session_id).await;
    let bob_again = bob.join(&room, "Bob").await.unwrap();
    let mut bob_socket = bob.socket(&room, &bob_again.session_id).await;
    ada_socket.roster_of(2, MEDIA).await;
    bob_socket.roster_of(2, MEDIA).await;
    let on_b = resources(&nodes[1], &room).await;
    assert_eq!((on_b["rooms"][0]["node"].as_str(), on_b["sessions"].as_u64()), (Some("node-b"), Some(2)), "{on_b}");
    ada.leave(&ada_again.session_id).await.unwrap();
    bob.leave(&bob_again.session_id).await.unwrap();
    let status = nodes[1].terminate(Duration::from_secs(20));
    assert!(status.success(), "node B exited with {status}:\n{}", nodes[1].log());
    drop(nodes);
    deployment.drop_all().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_cut_off_from_redis_for_longer_than_its_lease_keeps_its_rooms() {
    let deployment = Deployment::postgres().await;
    // Node A reaches Redis through a relay the test cuts; node B directly.
    let redis: std::net::SocketAddr = common::redis_url()
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .parse()
        .expect("TEST_REDIS_URL as redis://host:port");
    let relay = TcpCut::to(redis).await;
    let mut a = deployment.spawn_with_redis("node-a", &format!("redis://127.0.0.1:{}", relay.port), &[]);
    let mut b = deployment.spawn("node-b", &[]);
    a.wait_ready(Duration::from_secs(60)).await;
    b.wait_ready(Duration::from_secs(60)).await;
    let ada = Guest::new(a.addr());
    let room = ada.create_room("Ada", false).await.unwrap();
    let ada = MediaGuest::join_as(ada, &room, "Ada").await;
    let bob = MediaGuest::join_through(Guest::new(b.addr()), b.addr(), &room, "Bob").await;
    all_hear_each_other(&[&ada, &bob]).await;

    // Longer than the lease (9 s): node B sees it lapse, asks node A, which
    // answers, and leaves its sessions alone.
    relay.cut(true);
    eventually(Duration::from_secs(20), "node B finds node A's lease lapsed but A answering", || async {
        b.log().contains("a node's lease lapsed but it answers").then_some(())
    })
    .await;
    // Someone joining meanwhile through node B does not split the room onto
    // node B: the join goes to node A, which cannot record it yet.
    let cyd = Guest::new(b.addr());
    let refused = cyd.join(&room, "Cyd").await.expect_err("node A cannot record a join without its store");
    assert_eq!(refused.error, Some(app::error::AppError::Unavailable), "{refused:?}");
    relay.cut(false);
    let store = server::store::redis::RedisStore::connect(&common::redis_url(), &deployment.prefix).await.unwrap();
    eventually(Duration::from_secs(15), "node A's lease renewed", || async {
        use server::store::LiveStore;
        store.live_nodes().await.ok()?.contains_key("node-a").then_some(())
    })
    .await;

    eventually(Duration::from_secs(10), "node B sees node A's lease back", || async {
        b.log().contains("a node's lease is back").then_some(())
    })
    .await;
    // Told once while it lasted, not at every look.
    assert_eq!(b.log().matches("a node's lease lapsed but it answers").count(), 1, "{}", b.log());
    // Nothing was reaped: the call goes on, on node A, and Cyd's join, tried
    // again through node B, lands there too.
    assert!(!b.log().contains("a node is gone"), "{}", b.log());
    assert_eq!(reasons(&deployment.db.url, &room).await, [None, None]);
    let cyd_in = cyd.join(&room, "Cyd").await.expect("the join works once node A has its store again");
    let on_a = resources(&a, &room).await;
    assert_eq!(on_a["rooms"][0]["node"], "node-a", "{on_a}");
    assert_eq!((on_a["sessions"].as_u64(), on_a["rooms"][0]["participants"].as_u64()), (Some(3), Some(3)), "{on_a}");
    cyd.leave(&cyd_in.session_id).await.unwrap();
    let heard = bob.stats().received_from(ada.participant());
    eventually(MEDIA, "Bob still hears Ada", || async {
        (bob.stats().received_from(ada.participant()) > heard + ENOUGH).then_some(())
    })
    .await;
    ada.leave().await;
    bob.leave().await;
    drop((a, b));
    deployment.drop_all().await;
}
