//! Persistence: rooms, the live roster and the session history, through
//! SeaORM on SQLite (default) or PostgreSQL.
//!
//! Invariant: a `participants` row exists exactly while its session is live;
//! its `participant_sessions` row is written at join and closed (left time
//! and reason) exactly once, in the same transaction that deletes the live
//! row. Every delete is keyed by session id, never by user.

pub mod entities;
mod migration;

use std::time::Duration;

use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait, Statement, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;

pub use entities::{chat_message, participant, participant_session, room};

/// Database failures, as the domain sees them.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL is not one we can use.
    #[error("unsupported database URL (use sqlite://… or postgres://…)")]
    BadUrl,
    /// The database did not answer or refused the statement.
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    /// A local file system step (creating the SQLite folder) failed.
    #[error("cannot create the database folder: {0}")]
    Io(#[from] std::io::Error),
}

/// The result of ending a session in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// The live `participants` row was deleted by this call.
    pub row_deleted: bool,
    /// The history row was closed by this call.
    pub history_closed: bool,
}

/// The key of the PostgreSQL advisory lock that serializes migrations
/// across the nodes of a deployment ("cleanroom" in ASCII).
const MIGRATION_LOCK: i64 = 0x636c_6561_6e72_6f6f;

/// Applies the pending migrations. On PostgreSQL every node of a deployment
/// may start at once: the whole run (the migration table's creation, the
/// check of what is applied, each migration) happens in one transaction
/// that first takes an advisory lock, so the others wait for it and then
/// find nothing left to do. Without it, two nodes on a fresh database both
/// create the same tables and one fails on `pg_type`'s unique index.
/// PostgreSQL's DDL is transactional, so a failed run leaves nothing behind.
/// SQLite serializes writers itself (and a deployment of several nodes
/// needs PostgreSQL).
async fn migrate(conn: &DatabaseConnection) -> Result<(), DbErr> {
    if conn.get_database_backend() != DbBackend::Postgres {
        return migration::Migrator::up(conn, None).await;
    }
    let txn = conn.begin().await?;
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_advisory_xact_lock($1)",
        [MIGRATION_LOCK.into()],
    ))
    .await?;
    migration::Migrator::up(&txn, None).await?;
    txn.commit().await
}

/// A handle to the database (cheap to clone: a pool inside).
#[derive(Clone, Debug)]
pub struct Db {
    conn: DatabaseConnection,
}

impl Db {
    /// Connects and runs the migrations. For a SQLite file, creates its folder.
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        if let Some(rest) = url.strip_prefix("sqlite://") {
            let path = rest.split('?').next().unwrap_or_default();
            if !path.is_empty() && path != ":memory:" {
                if let Some(parent) = std::path::Path::new(path).parent() {
                    if !parent.as_os_str().is_empty() {
                        std::fs::create_dir_all(parent)?;
                    }
                }
            }
        } else if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(DbError::BadUrl);
        }
        let mut opts = ConnectOptions::new(url.to_owned());
        opts.connect_timeout(Duration::from_secs(3)).acquire_timeout(Duration::from_secs(3)).sqlx_logging(false);
        if url.starts_with("sqlite:") {
            opts.max_connections(1).min_connections(1);
        } else {
            opts.max_connections(16);
        }
        let conn = Database::connect(opts).await?;
        migrate(&conn).await?;
        Ok(Self { conn })
    }

    /// The raw connection (tests and the reconciler inspect with it).
    pub fn connection(&self) -> &DatabaseConnection {
        &self.conn
    }

    /// Answers when the database does.
    pub async fn ping(&self) -> Result<(), DbError> {
        Ok(self.conn.ping().await?)
    }

    /// Writes a new room's row.
    pub async fn insert_room(&self, row: room::Model) -> Result<(), DbError> {
        room::Entity::insert(room::ActiveModel::from(row)).exec_without_returning(&self.conn).await?;
        Ok(())
    }

    /// The room with `code`, open or ended.
    pub async fn room(&self, code: &str) -> Result<Option<room::Model>, DbError> {
        Ok(room::Entity::find_by_id(code.to_owned()).one(&self.conn).await?)
    }

    /// Rooms that have not ended, newest first (for the debug API).
    pub async fn open_rooms(&self, limit: u64) -> Result<Vec<room::Model>, DbError> {
        Ok(room::Entity::find()
            .filter(room::Column::EndedAtMs.is_null())
            .order_by_desc(room::Column::CreatedAtMs)
            .limit(limit)
            .all(&self.conn)
            .await?)
    }

    /// How many rooms `user` created that have not ended.
    pub async fn open_rooms_created_by(&self, user: &str) -> Result<u64, DbError> {
        Ok(room::Entity::find()
            .filter(room::Column::CreatedBy.eq(user))
            .filter(room::Column::EndedAtMs.is_null())
            .count(&self.conn)
            .await?)
    }

    /// Marks a room ended with `reason` and deletes its chat messages, in
    /// one transaction; `false` when it had ended already.
    pub async fn end_room(&self, code: &str, reason: &str, now_ms: i64) -> Result<bool, DbError> {
        let txn = self.conn.begin().await?;
        let n = room::Entity::update_many()
            .col_expr(room::Column::EndedAtMs, Expr::value(now_ms))
            .col_expr(room::Column::EndReason, Expr::value(reason))
            .filter(room::Column::Code.eq(code))
            .filter(room::Column::EndedAtMs.is_null())
            .exec(&txn)
            .await?
            .rows_affected;
        chat_message::Entity::delete_many().filter(chat_message::Column::RoomCode.eq(code)).exec(&txn).await?;
        txn.commit().await?;
        Ok(n > 0)
    }

    /// Whether `user` was removed from room `code` by its host (a history
    /// row with reason `kicked`).
    pub async fn was_removed(&self, code: &str, user: &str) -> Result<bool, DbError> {
        let n = participant_session::Entity::find()
            .filter(participant_session::Column::RoomCode.eq(code))
            .filter(participant_session::Column::UserId.eq(user))
            .filter(participant_session::Column::LeaveReason.eq("kicked"))
            .count(&self.conn)
            .await?;
        Ok(n > 0)
    }

    /// Records a chat message.
    pub async fn insert_chat(&self, row: chat_message::Model) -> Result<(), DbError> {
        chat_message::Entity::insert(chat_message::ActiveModel::from(row)).exec_without_returning(&self.conn).await?;
        Ok(())
    }

    /// The room's chat messages, oldest first.
    pub async fn chat(&self, room: &str) -> Result<Vec<chat_message::Model>, DbError> {
        Ok(chat_message::Entity::find()
            .filter(chat_message::Column::RoomCode.eq(room))
            .order_by_asc(chat_message::Column::SentAtMs)
            .all(&self.conn)
            .await?)
    }

    /// Deletes the room's chat messages; how many went.
    pub async fn delete_chat(&self, room: &str) -> Result<u64, DbError> {
        Ok(chat_message::Entity::delete_many()
            .filter(chat_message::Column::RoomCode.eq(room))
            .exec(&self.conn)
            .await?
            .rows_affected)
    }

    /// Deletes the chat messages of rooms that have ended (a message that
    /// raced its room's close); how many went.
    pub async fn delete_chat_of_ended_rooms(&self) -> Result<u64, DbError> {
        let ended = room::Entity::find()
            .select_only()
            .column(room::Column::Code)
            .filter(room::Column::EndedAtMs.is_not_null())
            .into_query();
        Ok(chat_message::Entity::delete_many()
            .filter(chat_message::Column::RoomCode.in_subquery(ended))
            .exec(&self.conn)
            .await?
            .rows_affected)
    }

    /// Open rooms nobody is in that should close themselves: empty for
    /// longer than `empty_ms` since the last one left (`empty`), or never
    /// joined within `unused_ms` of their creation (`unused`).
    pub async fn idle_rooms(
        &self,
        now_ms: i64,
        empty_ms: i64,
        unused_ms: i64,
    ) -> Result<Vec<(String, &'static str)>, DbError> {
        let mut out = Vec::new();
        // Every open room, oldest first (the likeliest to be idle): a cap
        // on the list would let rooms beyond it live for ever.
        let open = room::Entity::find()
            .filter(room::Column::EndedAtMs.is_null())
            .order_by_asc(room::Column::CreatedAtMs)
            .all(&self.conn)
            .await?;
        for r in open {
            if self.count_participants(&r.code).await? > 0 {
                continue;
            }
            let last_left: Option<i64> = participant_session::Entity::find()
                .filter(participant_session::Column::RoomCode.eq(r.code.as_str()))
                .filter(participant_session::Column::LeftAtMs.is_not_null())
                .order_by_desc(participant_session::Column::LeftAtMs)
                .one(&self.conn)
                .await?
                .map(|h| h.left_at_ms.unwrap_or(now_ms));
            match last_left {
                Some(t) if now_ms - t >= empty_ms => out.push((r.code, "empty")),
                None if now_ms - r.created_at_ms >= unused_ms => out.push((r.code, "unused")),
                _ => {}
            }
        }
        Ok(out)
    }

    /// Records a live session's new role.
    pub async fn set_role(&self, session: &str, role: &str) -> Result<(), DbError> {
        participant::Entity::update_many()
            .col_expr(participant::Column::Role, Expr::value(role))
            .filter(participant::Column::SessionId.eq(session))
            .exec(&self.conn)
            .await?;
        Ok(())
    }

    /// Records a live session's new state (`pending` → `active`).
    pub async fn set_state(&self, session: &str, state: &str) -> Result<(), DbError> {
        participant::Entity::update_many()
            .col_expr(participant::Column::State, Expr::value(state))
            .filter(participant::Column::SessionId.eq(session))
            .exec(&self.conn)
            .await?;
        Ok(())
    }

    /// Writes the live row and opens the history row, atomically.
    pub async fn insert_participant(&self, row: participant::Model) -> Result<(), DbError> {
        let history = participant_session::Model {
            session_id: row.session_id.clone(),
            participant_id: row.participant_id.clone(),
            room_code: row.room_code.clone(),
            user_id: row.user_id.clone(),
            display_name: row.display_name.clone(),
            role: row.role.clone(),
            joined_at_ms: row.joined_at_ms,
            left_at_ms: None,
            leave_reason: None,
        };
        let txn = self.conn.begin().await?;
        participant::Entity::insert(participant::ActiveModel::from(row)).exec_without_returning(&txn).await?;
        participant_session::Entity::insert(participant_session::ActiveModel::from(history))
            .exec_without_returning(&txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Deletes the live row of `session` and closes its history row with
    /// `reason`, atomically. Idempotent: a second call changes nothing.
    pub async fn end_participant(&self, session: &str, reason: &str, now_ms: i64) -> Result<Ended, DbError> {
        let txn = self.conn.begin().await?;
        let deleted = participant::Entity::delete_many()
            .filter(participant::Column::SessionId.eq(session))
            .exec(&txn)
            .await?
            .rows_affected;
        let closed = participant_session::Entity::update_many()
            .col_expr(participant_session::Column::LeftAtMs, Expr::value(now_ms))
            .col_expr(participant_session::Column::LeaveReason, Expr::value(reason))
            .filter(participant_session::Column::SessionId.eq(session))
            .filter(participant_session::Column::LeftAtMs.is_null())
            .exec(&txn)
            .await?
            .rows_affected;
        txn.commit().await?;
        Ok(Ended { row_deleted: deleted > 0, history_closed: closed > 0 })
    }

    /// The live row of `session`, if it is live.
    pub async fn participant(&self, session: &str) -> Result<Option<participant::Model>, DbError> {
        Ok(participant::Entity::find_by_id(session.to_owned()).one(&self.conn).await?)
    }

    /// The live rows of a room, in arrival order.
    pub async fn participants(&self, room: &str) -> Result<Vec<participant::Model>, DbError> {
        Ok(participant::Entity::find()
            .filter(participant::Column::RoomCode.eq(room))
            .order_by_asc(participant::Column::JoinedAtMs)
            .all(&self.conn)
            .await?)
    }

    /// How many live rows a room has.
    pub async fn count_participants(&self, room: &str) -> Result<u64, DbError> {
        Ok(participant::Entity::find().filter(participant::Column::RoomCode.eq(room)).count(&self.conn).await?)
    }

    /// Every live row (the reconciler compares them with the store).
    pub async fn all_participants(&self) -> Result<Vec<participant::Model>, DbError> {
        Ok(participant::Entity::find().order_by_asc(participant::Column::JoinedAtMs).all(&self.conn).await?)
    }

    /// Live rows owned by `node` (shutdown and the reconciler use this).
    pub async fn participants_on_node(&self, node: &str) -> Result<Vec<participant::Model>, DbError> {
        Ok(participant::Entity::find().filter(participant::Column::NodeId.eq(node)).all(&self.conn).await?)
    }

    /// The history row of `session`, live or ended.
    pub async fn history(&self, session: &str) -> Result<Option<participant_session::Model>, DbError> {
        Ok(participant_session::Entity::find_by_id(session.to_owned()).one(&self.conn).await?)
    }

    /// The backend's name, for logs.
    pub fn backend(&self) -> &'static str {
        match self.conn.get_database_backend() {
            sea_orm::DatabaseBackend::Postgres => "postgres",
            sea_orm::DatabaseBackend::Sqlite => "sqlite",
            _ => "other",
        }
    }
}
