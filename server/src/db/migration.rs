//! Schema migrations, run at start-up.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(Debug)]
pub(super) struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(M0001Init), Box::new(M0002RoomEndReason), Box::new(M0003HostUnmutes), Box::new(M0004ChatMessages)]
    }
}

#[derive(DeriveIden)]
enum Rooms {
    Table,
    Code,
    Name,
    Private,
    CreatedBy,
    CreatedAtMs,
    EndedAtMs,
    EndReason,
    HostUnmutes,
}

#[derive(DeriveIden)]
enum ChatMessages {
    Table,
    Id,
    RoomCode,
    ParticipantId,
    DisplayName,
    Body,
    SentAtMs,
}

#[derive(DeriveIden)]
enum Participants {
    Table,
    SessionId,
    ParticipantId,
    RoomCode,
    UserId,
    DisplayName,
    Role,
    State,
    NodeId,
    JoinedAtMs,
}

#[derive(DeriveIden)]
enum ParticipantSessions {
    Table,
    SessionId,
    ParticipantId,
    RoomCode,
    UserId,
    DisplayName,
    Role,
    JoinedAtMs,
    LeftAtMs,
    LeaveReason,
}

struct M0001Init;

impl MigrationName for M0001Init {
    fn name(&self) -> &str {
        "m0001_init"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0001Init {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Rooms::Table)
                .if_not_exists()
                .col(string_len(Rooms::Code, 16).primary_key())
                .col(string_len(Rooms::Name, 200))
                .col(boolean(Rooms::Private))
                .col(string_len(Rooms::CreatedBy, 64))
                .col(big_integer(Rooms::CreatedAtMs))
                .col(big_integer_null(Rooms::EndedAtMs))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Participants::Table)
                .if_not_exists()
                .col(string_len(Participants::SessionId, 64).primary_key())
                .col(string_len(Participants::ParticipantId, 64))
                .col(string_len(Participants::RoomCode, 16))
                .col(string_len(Participants::UserId, 64))
                .col(string_len(Participants::DisplayName, 300))
                .col(string_len(Participants::Role, 16))
                .col(string_len(Participants::State, 16))
                .col(string_len(Participants::NodeId, 64))
                .col(big_integer(Participants::JoinedAtMs))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("idx_participants_room")
                .table(Participants::Table)
                .col(Participants::RoomCode)
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(ParticipantSessions::Table)
                .if_not_exists()
                .col(string_len(ParticipantSessions::SessionId, 64).primary_key())
                .col(string_len(ParticipantSessions::ParticipantId, 64))
                .col(string_len(ParticipantSessions::RoomCode, 16))
                .col(string_len(ParticipantSessions::UserId, 64))
                .col(string_len(ParticipantSessions::DisplayName, 300))
                .col(string_len(ParticipantSessions::Role, 16))
                .col(big_integer(ParticipantSessions::JoinedAtMs))
                .col(big_integer_null(ParticipantSessions::LeftAtMs))
                .col(string_len_null(ParticipantSessions::LeaveReason, 32))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("idx_participant_sessions_room")
                .table(ParticipantSessions::Table)
                .col(ParticipantSessions::RoomCode)
                .to_owned(),
        )
        .await
    }
}

/// Why a room ended: `ended` (by its admin), `empty` (everybody left and
/// nobody came back in time), `unused` (nobody ever joined in time).
struct M0002RoomEndReason;

impl MigrationName for M0002RoomEndReason {
    fn name(&self) -> &str {
        "m0002_room_end_reason"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0002RoomEndReason {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(Table::alter().table(Rooms::Table).add_column(string_len_null(Rooms::EndReason, 32)).to_owned())
            .await
    }
}

/// A room setting: somebody the admin muted may unmute only once the admin
/// allows it. Rooms from before keep the old rule (they may unmute).
struct M0003HostUnmutes;

impl MigrationName for M0003HostUnmutes {
    fn name(&self) -> &str {
        "m0003_room_host_unmutes"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0003HostUnmutes {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter().table(Rooms::Table).add_column(boolean(Rooms::HostUnmutes).default(false)).to_owned(),
        )
        .await
    }
}

/// Chat: the messages of open rooms (deleted when their room closes).
struct M0004ChatMessages;

impl MigrationName for M0004ChatMessages {
    fn name(&self) -> &str {
        "m0004_chat_messages"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0004ChatMessages {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(ChatMessages::Table)
                .if_not_exists()
                .col(string_len(ChatMessages::Id, 64).primary_key())
                .col(string_len(ChatMessages::RoomCode, 16))
                .col(string_len(ChatMessages::ParticipantId, 64))
                .col(string_len(ChatMessages::DisplayName, 300))
                .col(text(ChatMessages::Body))
                .col(big_integer(ChatMessages::SentAtMs))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("idx_chat_messages_room")
                .table(ChatMessages::Table)
                .col(ChatMessages::RoomCode)
                .col(ChatMessages::SentAtMs)
                .to_owned(),
        )
        .await
    }
}
