//! Leaves while the live-state store does not answer: the live part ends at
//! once, the durable steps keep retrying, and once the store answers again
//! every leave completes with nothing left behind (store entries, rows) and
//! every history row carries its reason. The store is a Redis this test owns,
//! frozen with SIGSTOP (connections stay open, nothing answers, data
//! survives) and thawed with SIGCONT.

mod common;

use std::time::Duration;

use app::error::AppError;
use app::model::UserId;
use common::{OwnRedis, TestServer};

#[tokio::test]
async fn leaves_during_a_store_outage_complete_after_it() {
    let redis = OwnRedis::start_on(OwnRedis::free_port());
    let redis_url = format!("redis://127.0.0.1:{}", redis.port);
    // Nobody here opens a socket; keep loss detection out of the way.
    let server =
        TestServer::sqlite_with(&["--redis-url", &redis_url, "--suspect-ms", "60000", "--remove-ms", "120000"]).await;
    let guests = [server.guest(), server.guest(), server.guest()];
    let room = guests[0].create_room("Ada", false).await.unwrap();
    let mut joined = Vec::new();
    for (guest, name) in guests.iter().zip(["Ada", "Bob", "Cy"]) {
        joined.push(guest.join(&room, name).await.unwrap());
    }

    redis.freeze(true);
    let err = guests[1].leave(&joined[1].session_id).await.expect_err("not confirmed while the store is away");
    assert_eq!(err.error, Some(AppError::Unavailable));
    assert_eq!(err.status, reqwest::StatusCode::SERVICE_UNAVAILABLE, "a failure of ours is a 5xx");
    assert_eq!(guests[2].beacon(&joined[2].session_id).await, reqwest::StatusCode::SERVICE_UNAVAILABLE);
    // Their live part is gone already.
    assert_eq!(server.state.rooms.sessions().len(), 1);
    redis.freeze(false);

    let rooms = &server.state.rooms;
    common::eventually(Duration::from_secs(30), "both leaves completed", || async {
        let rows = rooms.db().participants(room.as_str()).await.ok()?;
        (rows.len() == 1).then_some(())
    })
    .await;
    for (j, reason) in [(&joined[1], "left"), (&joined[2], "page-hidden")] {
        let history = rooms.db().history(j.session_id.as_str()).await.unwrap().unwrap();
        assert_eq!(history.leave_reason.as_deref(), Some(reason));
        let user = UserId::new(history.user_id);
        common::eventually(Duration::from_secs(30), "store entries gone", || async {
            rooms.store().session_entries(&room, &j.session_id, &user).await.ok()?.is_empty().then_some(())
        })
        .await;
    }
    let r = server.resources(&room).await;
    assert_eq!(r["rooms"][0]["participants"], 1, "{r}");
    assert_eq!(r["rooms"][0]["db_participants"], 1, "{r}");
    let metrics = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
    let retries: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("cleanroom_cleanup_retries_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("retries counter");
    assert!(retries > 0.0, "the outage caused retries");
    server.stop().await;
}

/// The same with the database unreachable: PostgreSQL behind a relay the
/// test cuts (every connection dropped, new ones refused) and restores.
#[tokio::test]
async fn leaves_during_a_database_outage_complete_after_it() {
    let database = common::TestDb::postgres().await;
    let relay = common::TcpCut::to("127.0.0.1:5432".parse().unwrap()).await;
    let relayed = database.url.replacen("127.0.0.1:5432", &format!("127.0.0.1:{}", relay.port), 1);
    assert_ne!(relayed, database.url, "the test database URL names 127.0.0.1:5432");
    let args: Vec<String> =
        ["cleanroom", "--debug-api", "--database-url", &relayed, "--suspect-ms", "60000", "--remove-ms", "120000"]
            .map(String::from)
            .to_vec();
    let server = TestServer::with_args(&args).await;
    let guests = [server.guest(), server.guest(), server.guest()];
    let room = guests[0].create_room("Ada", false).await.unwrap();
    let mut joined = Vec::new();
    for (guest, name) in guests.iter().zip(["Ada", "Bob", "Cy"]) {
        joined.push(guest.join(&room, name).await.unwrap());
    }

    relay.cut(true);
    let err = guests[1].leave(&joined[1].session_id).await.expect_err("not confirmed while the database is away");
    assert_eq!(err.error, Some(AppError::Unavailable));
    assert_eq!(guests[2].beacon(&joined[2].session_id).await, reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let rooms = &server.state.rooms;
    // Their live part and their store entries are gone already; the rows wait.
    assert_eq!(rooms.sessions().len(), 1);
    assert_eq!(rooms.store().members(&room).await.unwrap().len(), 1);
    relay.cut(false);

    common::eventually(Duration::from_secs(30), "both leaves completed", || async {
        let rows = rooms.db().participants(room.as_str()).await.ok()?;
        (rows.len() == 1).then_some(())
    })
    .await;
    for (j, reason) in [(&joined[1], "left"), (&joined[2], "page-hidden")] {
        let history = rooms.db().history(j.session_id.as_str()).await.unwrap().unwrap();
        assert_eq!(history.leave_reason.as_deref(), Some(reason));
        assert!(history.left_at_ms.is_some());
    }
    let r = server.resources(&room).await;
    assert_eq!(r["rooms"][0]["participants"], 1, "{r}");
    assert_eq!(r["rooms"][0]["db_participants"], 1, "{r}");
    server.stop().await;
    drop(relay);
    database.drop_db().await;
}
