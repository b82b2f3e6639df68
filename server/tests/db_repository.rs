//! Repository suite of the database layer ([`Db`]): migrations, rooms, the live roster and the
//! exactly-once session history.
//!
//! Every case is one `async fn(&Db, url)` and runs twice, through the `repository!` macro at the
//! bottom: once on SQLite (a fresh temporary file, removed afterwards) and once on PostgreSQL (a
//! fresh database `cleanroom_test_<uuid>` created through `TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`, and dropped afterwards). The PostgreSQL tests fail
//! (never skip) when PostgreSQL is unreachable.
//!
//! Cases: migrations are idempotent (connecting twice works), rooms, open rooms, joining writes
//! the live row and opens the history row atomically, arrival order and counts, ending a session
//! exactly once, ending one session never touches another of the same user, rows per node.

use std::panic::{resume_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::Duration;

use app::model::{LeaveReason, RoomCode};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};
use server::db::{participant, participant_session, room, Db, Ended};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const ROOM: &str = "abc-defg-hij";
const OTHER_ROOM: &str = "xyz-wxyz-xyz";

fn room_row(code: &str, created_at_ms: i64) -> room::Model {
    room::Model {
        code: code.into(),
        name: format!("Room {code}"),
        private: false,
        created_by: "u-creator".into(),
        created_at_ms,
        ended_at_ms: None,
        end_reason: None,
        host_unmutes: false,
    }
}

fn participant_row(session: &str, user: &str, room: &str, node: &str, joined_at_ms: i64) -> participant::Model {
    participant::Model {
        session_id: session.into(),
        participant_id: format!("p-{session}"),
        room_code: room.into(),
        user_id: user.into(),
        display_name: format!("Guest {user}"),
        role: "member".into(),
        state: "active".into(),
        node_id: node.into(),
        joined_at_ms,
    }
}

/// The history row `insert_participant(row)` must open.
fn open_history(row: &participant::Model) -> participant_session::Model {
    participant_session::Model {
        session_id: row.session_id.clone(),
        participant_id: row.participant_id.clone(),
        room_code: row.room_code.clone(),
        user_id: row.user_id.clone(),
        display_name: row.display_name.clone(),
        role: row.role.clone(),
        joined_at_ms: row.joined_at_ms,
        left_at_ms: None,
        leave_reason: None,
    }
}

fn closed_history(row: &participant::Model, left_at_ms: i64, reason: LeaveReason) -> participant_session::Model {
    participant_session::Model {
        left_at_ms: Some(left_at_ms),
        leave_reason: Some(reason.as_str().to_owned()),
        ..open_history(row)
    }
}

fn session_ids(rows: &[participant::Model]) -> Vec<&str> {
    rows.iter().map(|r| r.session_id.as_str()).collect()
}

const BOTH: Ended = Ended { row_deleted: true, history_closed: true };
const NEITHER: Ended = Ended { row_deleted: false, history_closed: false };

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

/// Connecting again to a migrated database re-runs the migrations harmlessly, and both handles
/// see the same data.
async fn migrations_are_idempotent(db: &Db, url: &str) {
    let expected_backend = if url.starts_with("sqlite:") { "sqlite" } else { "postgres" };
    assert_eq!(db.backend(), expected_backend);
    db.ping().await.unwrap();

    let again = Db::connect(url).await.expect("a second connect (migrations already applied) works");
    again.ping().await.unwrap();
    assert_eq!(again.backend(), expected_backend);

    let row = room_row(ROOM, 100);
    db.insert_room(row.clone()).await.unwrap();
    assert_eq!(again.room(ROOM).await.unwrap(), Some(row));
    let live = participant_row("s-1", "u-1", ROOM, "node-1", 100);
    again.insert_participant(live.clone()).await.unwrap();
    assert_eq!(db.participant("s-1").await.unwrap(), Some(live));

    again.connection().close_by_ref().await.unwrap();
}

/// `insert_room` then `room()`.
async fn rooms_insert_and_read(db: &Db, _url: &str) {
    assert_eq!(db.room(ROOM).await.unwrap(), None);

    let public = room_row(ROOM, 100);
    let private = room::Model { private: true, ended_at_ms: Some(500), ..room_row(OTHER_ROOM, 200) };
    db.insert_room(public.clone()).await.unwrap();
    db.insert_room(private.clone()).await.unwrap();

    assert_eq!(db.room(ROOM).await.unwrap(), Some(public.clone()));
    assert_eq!(db.room(OTHER_ROOM).await.unwrap(), Some(private));
    assert_eq!(db.room("zzz-zzzz-zzz").await.unwrap(), None);

    // The code is the primary key: a second room with it is refused and the first is kept.
    assert!(db.insert_room(room::Model { name: "Impostor".into(), ..room_row(ROOM, 300) }).await.is_err());
    assert_eq!(db.room(ROOM).await.unwrap(), Some(public));
}

/// `open_rooms`: rooms not ended, newest first, at most `limit`.
async fn open_rooms_newest_first(db: &Db, _url: &str) {
    assert!(db.open_rooms(10).await.unwrap().is_empty());

    let oldest = room_row("aaa-aaaa-aaa", 100);
    let newest = room_row("bbb-bbbb-bbb", 300);
    let ended = room::Model { ended_at_ms: Some(400), ..room_row("ccc-cccc-ccc", 200) };
    let middle = room_row("ddd-dddd-ddd", 250);
    for r in [&oldest, &newest, &ended, &middle] {
        db.insert_room(r.clone()).await.unwrap();
    }

    assert_eq!(db.open_rooms(10).await.unwrap(), vec![newest.clone(), middle.clone(), oldest]);
    assert_eq!(db.open_rooms(2).await.unwrap(), vec![newest.clone(), middle]);
    assert_eq!(db.open_rooms(1).await.unwrap(), vec![newest]);
}

/// `insert_participant` writes the live row and opens the history row, in one transaction.
async fn insert_participant_writes_live_and_history(db: &Db, _url: &str) {
    let row = participant_row("s-1", "u-1", ROOM, "node-1", 100);
    assert_eq!(db.participant("s-1").await.unwrap(), None);
    assert_eq!(db.history("s-1").await.unwrap(), None);

    db.insert_participant(row.clone()).await.unwrap();
    assert_eq!(db.participant("s-1").await.unwrap(), Some(row.clone()));
    assert_eq!(db.history("s-1").await.unwrap(), Some(open_history(&row)));

    // The same session twice is refused, and nothing changes.
    let again = participant_row("s-1", "u-2", ROOM, "node-2", 200);
    assert!(db.insert_participant(again.clone()).await.is_err());
    assert_eq!(db.participant("s-1").await.unwrap(), Some(row.clone()));
    assert_eq!(db.history("s-1").await.unwrap(), Some(open_history(&row)));

    // Atomicity: once the session has ended, re-inserting it fails on the history row, and the
    // live row written before it in the same transaction is rolled back.
    assert_eq!(db.end_participant("s-1", LeaveReason::Left.as_str(), 300).await.unwrap(), BOTH);
    assert!(db.insert_participant(again).await.is_err());
    assert_eq!(db.participant("s-1").await.unwrap(), None, "live row rolled back with the history insert");
    assert_eq!(db.history("s-1").await.unwrap(), Some(closed_history(&row, 300, LeaveReason::Left)));
    assert_eq!(db.count_participants(ROOM).await.unwrap(), 0);
}

/// `participants(room)` in arrival order; `count_participants` per room.
async fn participants_in_arrival_order(db: &Db, _url: &str) {
    let late = participant_row("s-late", "u-1", ROOM, "node-1", 300);
    let early = participant_row("s-early", "u-2", ROOM, "node-1", 100);
    let middle = participant_row("s-mid", "u-3", ROOM, "node-2", 200);
    let elsewhere = participant_row("s-else", "u-4", OTHER_ROOM, "node-1", 50);
    for r in [&late, &early, &middle, &elsewhere] {
        db.insert_participant(r.clone()).await.unwrap();
    }

    assert_eq!(db.participants(ROOM).await.unwrap(), vec![early, middle.clone(), late.clone()]);
    assert_eq!(db.participants(OTHER_ROOM).await.unwrap(), vec![elsewhere]);
    assert!(db.participants("zzz-zzzz-zzz").await.unwrap().is_empty());
    assert_eq!(db.count_participants(ROOM).await.unwrap(), 3);
    assert_eq!(db.count_participants(OTHER_ROOM).await.unwrap(), 1);
    assert_eq!(db.count_participants("zzz-zzzz-zzz").await.unwrap(), 0);

    db.end_participant("s-early", LeaveReason::Left.as_str(), 400).await.unwrap();
    assert_eq!(db.participants(ROOM).await.unwrap(), vec![middle, late]);
    assert_eq!(db.count_participants(ROOM).await.unwrap(), 2);
    assert_eq!(db.count_participants(OTHER_ROOM).await.unwrap(), 1);
}

/// `end_participant` deletes the live row and closes the history once; a second call changes
/// nothing.
async fn end_participant_exactly_once(db: &Db, _url: &str) {
    let row = participant_row("s-1", "u-1", ROOM, "node-1", 100);
    db.insert_participant(row.clone()).await.unwrap();

    assert_eq!(db.end_participant("s-1", LeaveReason::PageHidden.as_str(), 1_000).await.unwrap(), BOTH);
    assert_eq!(db.participant("s-1").await.unwrap(), None);
    assert_eq!(db.count_participants(ROOM).await.unwrap(), 0);
    assert_eq!(db.history("s-1").await.unwrap(), Some(closed_history(&row, 1_000, LeaveReason::PageHidden)));

    // A later close path (other reason, later time) finds nothing left to do.
    assert_eq!(db.end_participant("s-1", LeaveReason::NodeShutdown.as_str(), 2_000).await.unwrap(), NEITHER);
    assert_eq!(db.history("s-1").await.unwrap(), Some(closed_history(&row, 1_000, LeaveReason::PageHidden)));

    // Ending a session that never existed is a no-op too.
    assert_eq!(db.end_participant("s-unknown", LeaveReason::Reaped.as_str(), 3_000).await.unwrap(), NEITHER);
    assert_eq!(db.history("s-unknown").await.unwrap(), None);
}

/// Ending one session of a user never touches their other session in the same room.
async fn end_participant_is_keyed_by_session(db: &Db, _url: &str) {
    let a = participant_row("s-a", "u-1", ROOM, "node-1", 100);
    let b = participant_row("s-b", "u-1", ROOM, "node-1", 200);
    db.insert_participant(a.clone()).await.unwrap();
    db.insert_participant(b.clone()).await.unwrap();
    assert_eq!(db.count_participants(ROOM).await.unwrap(), 2);

    assert_eq!(db.end_participant("s-a", LeaveReason::Replaced.as_str(), 300).await.unwrap(), BOTH);
    assert_eq!(db.participant("s-b").await.unwrap(), Some(b.clone()));
    assert_eq!(db.history("s-b").await.unwrap(), Some(open_history(&b)));
    assert_eq!(db.participants(ROOM).await.unwrap(), vec![b.clone()]);
    assert_eq!(db.history("s-a").await.unwrap(), Some(closed_history(&a, 300, LeaveReason::Replaced)));

    // Repeating the old session's end still leaves the new one alone.
    assert_eq!(db.end_participant("s-a", LeaveReason::SocketClosed.as_str(), 400).await.unwrap(), NEITHER);
    assert_eq!(db.participant("s-b").await.unwrap(), Some(b.clone()));
    assert_eq!(db.history("s-b").await.unwrap(), Some(open_history(&b)));

    assert_eq!(db.end_participant("s-b", LeaveReason::Left.as_str(), 500).await.unwrap(), BOTH);
    assert_eq!(db.history("s-a").await.unwrap(), Some(closed_history(&a, 300, LeaveReason::Replaced)));
    assert_eq!(db.history("s-b").await.unwrap(), Some(closed_history(&b, 500, LeaveReason::Left)));
    assert_eq!(db.count_participants(ROOM).await.unwrap(), 0);
}

/// `participants_on_node`: the live rows a node owns, across rooms.
async fn participants_on_node(db: &Db, _url: &str) {
    let one_a = participant_row("s-1", "u-1", ROOM, "node-1", 100);
    let two_a = participant_row("s-2", "u-2", ROOM, "node-2", 200);
    let one_b = participant_row("s-3", "u-3", OTHER_ROOM, "node-1", 300);
    for r in [&one_a, &two_a, &one_b] {
        db.insert_participant(r.clone()).await.unwrap();
    }

    // No order is promised: compare by session id.
    let on = |node: &'static str| async move {
        let mut rows = db.participants_on_node(node).await.unwrap();
        rows.sort_by(|x, y| x.session_id.cmp(&y.session_id));
        rows
    };
    assert_eq!(on("node-1").await, vec![one_a, one_b.clone()]);
    assert_eq!(on("node-2").await, vec![two_a]);
    assert!(on("node-3").await.is_empty());

    db.end_participant("s-1", LeaveReason::NodeShutdown.as_str(), 400).await.unwrap();
    assert_eq!(session_ids(&on("node-1").await), vec!["s-3"]);
    assert_eq!(on("node-1").await, vec![one_b]);
}

// ---------------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------------

/// A fresh SQLite file in the temporary folder; removed (with its journal files) on drop.
struct SqliteFile {
    path: PathBuf,
    url: String,
}

impl SqliteFile {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("cr-{}.db", uuid::Uuid::new_v4().simple()));
        let url = format!("sqlite://{}?mode=rwc", path.display());
        Self { path, url }
    }
}

impl Drop for SqliteFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut name = self.path.clone().into_os_string();
            name.push(suffix);
            let _ = std::fs::remove_file(name);
        }
    }
}

/// A fresh PostgreSQL database, created through an admin connection that also drops it.
struct PgDatabase {
    admin: DatabaseConnection,
    name: String,
    url: String,
}

impl PgDatabase {
    async fn create() -> Self {
        let admin_url =
            std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let mut options = ConnectOptions::new(admin_url.clone());
        options.connect_timeout(Duration::from_secs(3)).acquire_timeout(Duration::from_secs(3)).sqlx_logging(false);
        let admin = Database::connect(options)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {admin_url} (TEST_POSTGRES_URL) is required: {e}"));
        let name = format!("cleanroom_test_{}", uuid::Uuid::new_v4().simple());
        admin.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await.unwrap();
        let url = with_database(&admin_url, &name);
        Self { admin, name, url }
    }

    async fn drop_database(self) {
        self.admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name))
            .await
            .unwrap();
        self.admin.close().await.unwrap();
    }
}

/// `url` with its path (the database name) replaced by `database`; the query string is kept.
fn with_database(url: &str, database: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, format!("?{query}")),
        None => (rest, String::new()),
    };
    let authority = rest.split_once('/').map_or(rest, |(authority, _)| authority);
    format!("{scheme}://{authority}/{database}{query}")
}

#[test]
fn with_database_replaces_only_the_path() {
    assert_eq!(with_database("postgres://u@h:5432/postgres", "t"), "postgres://u@h:5432/t");
    assert_eq!(with_database("postgres://u:p@h/db?sslmode=disable", "t"), "postgres://u:p@h/t?sslmode=disable");
    assert_eq!(with_database("postgresql://h", "t"), "postgresql://h/t");
}

/// Runs each case once per backend: `sqlite::<case>` and `postgres::<case>`.
macro_rules! repository {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let file = super::SqliteFile::new();
                    let db = super::Db::connect(&file.url).await.expect("SQLite connects and migrates");
                    super::$case(&db, &file.url).await;
                    db.connection().close_by_ref().await.unwrap();
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    let pg = super::PgDatabase::create().await;
                    let outcome = futures::FutureExt::catch_unwind(super::AssertUnwindSafe(async {
                        let db = super::Db::connect(&pg.url).await.expect("PostgreSQL connects and migrates");
                        super::$case(&db, &pg.url).await;
                        db.connection().close_by_ref().await.unwrap();
                    }))
                    .await;
                    pg.drop_database().await;
                    if let Err(panic) = outcome {
                        super::resume_unwind(panic);
                    }
                }
            )*
        }
    };
}

/// Every open room is checked for idleness, however many there are (the
/// check once looked only at the newest 1 000), and a person's open rooms
/// are counted.
async fn idle_rooms_are_found_among_any_number(db: &Db, _url: &str) {
    let rooms = 1_005;
    for i in 0..rooms {
        let code =
            RoomCode::from_letters(&[(i / 676 % 26) as u8, (i / 26 % 26) as u8, (i % 26) as u8, 3, 4, 5, 6, 7, 8, 9]);
        db.insert_room(room_row(code.as_str(), i)).await.unwrap();
    }
    let idle = db.idle_rooms(10_000, 1_000, 1_000).await.unwrap();
    assert_eq!(idle.len(), rooms as usize, "every unused room is found");
    assert!(idle.iter().all(|(_, reason)| *reason == "unused"));
    assert_eq!(db.open_rooms_created_by("u-creator").await.unwrap(), rooms as u64);
    assert_eq!(db.open_rooms_created_by("u-nobody").await.unwrap(), 0);
}

repository!(
    idle_rooms_are_found_among_any_number,
    migrations_are_idempotent,
    rooms_insert_and_read,
    open_rooms_newest_first,
    insert_participant_writes_live_and_history,
    participants_in_arrival_order,
    end_participant_exactly_once,
    end_participant_is_keyed_by_session,
    participants_on_node,
);
