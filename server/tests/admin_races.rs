//! One admin per room, however people arrive: the role is chosen in the
//! same atomic store step that records the arrival, so concurrent first
//! joiners get one admin, and an admin leaving while others join hands the
//! role to exactly one of them. Against both stores.

mod common;

use std::sync::Arc;
use std::time::Duration;

use app::model::{Role, RoomCode};
use common::{eventually, Backend, Guest, TestServer};

const JOINERS: usize = 24;

async fn admins(server: &TestServer, room: &RoomCode) -> usize {
    server.state.rooms.store().members(room).await.unwrap().iter().filter(|m| m.role == Role::Admin).count()
}

/// Guests that hold their identity already (the page was loaded).
async fn guests(server: &TestServer, n: usize) -> Vec<Arc<Guest>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let g = server.guest();
        g.ensure_identity().await;
        out.push(Arc::new(g));
    }
    out
}

async fn concurrent_first_joiners_get_one_admin(backend: Backend) {
    let server = TestServer::start(backend).await;
    for round in 0..3 {
        // The creator is away: nobody in the room holds the role yet.
        let room = server.guest().create_room("Creator", false).await.expect("room");
        let joiners = guests(&server, JOINERS).await;
        let joins = joiners.iter().enumerate().map(|(i, g)| {
            let (g, room) = (g.clone(), room.clone());
            tokio::spawn(async move { g.join(&room, &format!("Guest {i}")).await.expect("join") })
        });
        let outcomes = futures::future::join_all(joins).await;
        let said_admin = outcomes.iter().filter(|o| o.as_ref().expect("joined").role == Role::Admin).count();
        assert_eq!(said_admin, 1, "round {round}: joins answered with {said_admin} admins");
        assert_eq!(admins(&server, &room).await, 1, "round {round}: the store holds one admin");
        let rows = server.state.rooms.db().all_participants().await.unwrap();
        let admin_rows = rows.iter().filter(|r| r.room_code == room.as_str() && r.role == "admin").count();
        assert_eq!(admin_rows, 1, "round {round}: the database records one admin");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_joiners_get_one_admin_in_memory() {
    concurrent_first_joiners_get_one_admin(Backend::SqliteMemory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_joiners_get_one_admin_on_redis() {
    concurrent_first_joiners_get_one_admin(Backend::PostgresRedis).await;
}

async fn the_admin_leaving_while_others_join_leaves_one_admin(backend: Backend) {
    let server = TestServer::start(backend).await;
    for round in 0..3 {
        let creator = server.guest();
        let room = creator.create_room("Creator", false).await.expect("room");
        let admin = creator.join(&room, "Creator").await.expect("creator joins");
        assert_eq!(admin.role, Role::Admin);
        let first = server.guest().join(&room, "First").await.expect("first joins");
        assert_eq!(first.role, Role::Member);

        let joiners = guests(&server, JOINERS / 2).await;
        let joins: Vec<_> = joiners
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let (g, room) = (g.clone(), room.clone());
                tokio::spawn(async move { g.join(&room, &format!("Guest {i}")).await.expect("join") })
            })
            .collect();
        creator.leave(&admin.session_id).await.expect("the admin leaves");
        for j in futures::future::join_all(joins).await {
            j.expect("joined");
        }
        // Settled: the handover after the leave has run.
        let history = eventually(Duration::from_secs(10), "the admin's leave recorded", || async {
            server.state.rooms.db().history(admin.session_id.as_str()).await.ok()?.filter(|h| h.left_at_ms.is_some())
        })
        .await;
        assert_eq!(history.leave_reason.as_deref(), Some("left"));
        assert_eq!(admins(&server, &room).await, 1, "round {round}: one admin after the handover");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_admin_leaving_while_others_join_leaves_one_admin_in_memory() {
    the_admin_leaving_while_others_join_leaves_one_admin(Backend::SqliteMemory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_admin_leaving_while_others_join_leaves_one_admin_on_redis() {
    the_admin_leaving_while_others_join_leaves_one_admin(Backend::PostgresRedis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handing_over_the_role_never_makes_two_admins() {
    let server = TestServer::start(Backend::PostgresRedis).await;
    let (ada, bob, cy) = (server.guest(), server.guest(), server.guest());
    let room = ada.create_room("Ada", false).await.expect("room");
    let a = ada.join(&room, "Ada").await.expect("ada");
    let b = bob.join(&room, "Bob").await.expect("bob");
    let c = cy.join(&room, "Cy").await.expect("cy");
    // Ada hands the role to Bob and to Cy at once: one of them wins.
    let (bob_form, cy_form) =
        ([("participant_id", b.participant_id.as_str())], [("participant_id", c.participant_id.as_str())]);
    let (to_bob, to_cy) =
        tokio::join!(ada.act("make-admin", &a.session_id, &bob_form), ada.act("make-admin", &a.session_id, &cy_form),);
    assert!(to_bob.is_ok() || to_cy.is_ok(), "one handover succeeds: {to_bob:?} {to_cy:?}");
    assert_eq!(admins(&server, &room).await, 1);
    let members = server.state.rooms.store().members(&room).await.unwrap();
    let ada_now = members.iter().find(|m| m.session == a.session_id).unwrap();
    assert_eq!(ada_now.role, Role::Member, "Ada gave the role away");
    server.stop().await;
}
