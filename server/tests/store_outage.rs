//! The live-state store goes away while the server runs: joins answer
//! "temporarily unavailable" and write nothing half-way, `/readyz` turns 503,
//! the process keeps serving, and everything recovers by itself when the
//! store returns. Uses a Redis server this test starts and stops itself.

mod common;

use std::time::Duration;

use app::error::AppError;
use common::{OwnRedis, TestDb, TestServer};

async fn ready_status(server: &TestServer) -> u16 {
    reqwest::get(server.url("/readyz")).await.map(|r| r.status().as_u16()).unwrap_or(0)
}

#[tokio::test]
async fn redis_outage_is_reported_and_recovered_from() {
    let mut redis = OwnRedis::start_on(OwnRedis::free_port());
    let server = TestServer::sqlite_with(&["--redis-url", &format!("redis://127.0.0.1:{}", redis.port)]).await;

    let (ada, bob) = (server.guest(), server.guest());
    let room = ada.create_room("Ada", false).await.unwrap();
    let a = ada.join(&room, "Ada").await.expect("join while everything is up");
    assert_eq!(ready_status(&server).await, 200);

    redis.stop();
    let err = bob.join(&room, "Bob").await.expect_err("join fails while the store is away");
    assert_eq!(err.error, Some(AppError::Unavailable), "{err:?}");
    assert!(err.error.unwrap().to_string().contains("temporarily unavailable"));
    assert_eq!(ready_status(&server).await, 503);
    assert_eq!(reqwest::get(server.url("/healthz")).await.unwrap().status(), 200, "the process keeps serving");
    // Nothing half-way: only Ada's row exists.
    let rows = server.state.rooms.db().participants(room.as_str()).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].session_id, a.session_id.as_str());

    let _redis = OwnRedis::start_on(redis.port);
    common::eventually(Duration::from_secs(20), "readyz back to 200", || async {
        (ready_status(&server).await == 200).then_some(())
    })
    .await;
    let b = bob.join(&room, "Bob").await.expect("join works again after recovery");
    assert_eq!(b.roster.len(), 1, "the restarted Redis is empty; Ada's entry went with it");
    bob.leave(&b.session_id).await.unwrap();
    let r = server.resources(&room).await;
    assert_eq!(r["rooms"][0]["store_keys"], 0, "{r}");
    server.stop().await;
}

#[tokio::test]
async fn database_outage_is_reported_and_writes_nothing() {
    let db = TestDb::postgres().await;
    let args: Vec<String> = ["cleanroom", "--debug-api", "--database-url", &db.url].map(String::from).to_vec();
    let mut server = TestServer::with_args(&args).await;
    server.db = Some(db);
    let ada = server.guest();
    let room = ada.create_room("Ada", false).await.unwrap();

    // Make the database unreachable for this server: terminate its connections
    // and forbid new ones, as a database restart or network cut would.
    let name = server.db.as_ref().unwrap().url.rsplit('/').next().unwrap().to_owned();
    let admin = sea_orm::Database::connect(&common::postgres_admin_url()).await.unwrap();
    use sea_orm::ConnectionTrait;
    admin.execute_unprepared(&format!("ALTER DATABASE \"{name}\" WITH ALLOW_CONNECTIONS false")).await.unwrap();
    admin
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        ))
        .await
        .unwrap();

    let err = ada.join(&room, "Ada").await.expect_err("join fails while the database is away");
    assert_eq!(err.error, Some(AppError::Unavailable), "{err:?}");
    assert_eq!(ready_status(&server).await, 503);
    let keys = server.state.rooms.store().room_keys(&room).await.unwrap();
    assert!(keys.is_empty(), "the store write was undone: {keys:?}");

    admin.execute_unprepared(&format!("ALTER DATABASE \"{name}\" WITH ALLOW_CONNECTIONS true")).await.unwrap();
    let _ = admin.close().await;
    common::eventually(Duration::from_secs(20), "readyz back to 200", || async {
        (ready_status(&server).await == 200).then_some(())
    })
    .await;
    let a = ada.join(&room, "Ada").await.expect("join works again");
    ada.leave(&a.session_id).await.unwrap();
    server.stop().await;
}
