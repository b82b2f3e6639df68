//! SeaORM entities: one module per table.

/// `rooms`: every room ever created.
pub mod room {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    /// One room.
    #[sea_orm(table_name = "rooms")]
    pub struct Model {
        /// The room's code (`abc-defg-hij`), its key.
        #[sea_orm(primary_key, auto_increment = false)]
        pub code: String,
        /// The room's name, shown to those who join (e.g. "Ann's meeting").
        pub name: String,
        /// Joining needs the admin's approval (except for the creator).
        pub private: bool,
        /// The user id of the creator; their sessions join as admin.
        pub created_by: String,
        /// When the room was created, Unix milliseconds.
        pub created_at_ms: i64,
        /// When the room ended, Unix milliseconds; `None` while it is open.
        pub ended_at_ms: Option<i64>,
        /// `ended` (by its admin), `empty` or `unused` (closed by itself).
        pub end_reason: Option<String>,
        /// Somebody the admin muted waits for the admin to let them unmute.
        pub host_unmutes: bool,
    }

    /// No relations are declared.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `participants`: the live roster, one row per live session; deleted when
/// the session ends.
pub mod participant {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    /// One live session.
    #[sea_orm(table_name = "participants")]
    pub struct Model {
        /// The session's id, the key (secret to its owner).
        #[sea_orm(primary_key, auto_increment = false)]
        pub session_id: String,
        /// The session's public handle, shown to the others in the room.
        pub participant_id: String,
        /// The code of the session's room.
        pub room_code: String,
        /// The user id of the person (from their identity cookie).
        pub user_id: String,
        /// The name the person joined with.
        pub display_name: String,
        /// `admin` or `member`.
        pub role: String,
        /// `pending` or `active`.
        pub state: String,
        /// The node whose process owns the session.
        pub node_id: String,
        /// When the session joined, Unix milliseconds.
        pub joined_at_ms: i64,
    }

    /// No relations are declared.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `participant_sessions`: append-only history; every leave is recorded
/// here with its time and reason.
pub mod participant_session {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    /// One session, past or live.
    #[sea_orm(table_name = "participant_sessions")]
    pub struct Model {
        /// The session's id, the key.
        #[sea_orm(primary_key, auto_increment = false)]
        pub session_id: String,
        /// The session's public handle.
        pub participant_id: String,
        /// The code of the session's room.
        pub room_code: String,
        /// The user id of the person.
        pub user_id: String,
        /// The name the person joined with.
        pub display_name: String,
        /// The role at join, `admin` or `member`.
        pub role: String,
        /// When the session joined, Unix milliseconds.
        pub joined_at_ms: i64,
        /// When the session ended, Unix milliseconds; `None` while it is live.
        pub left_at_ms: Option<i64>,
        /// A `LeaveReason` in its kebab-case form.
        pub leave_reason: Option<String>,
    }

    /// No relations are declared.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `chat_messages`: what was said in open rooms; a room's rows are deleted
/// when the room closes (in the same transaction that marks it ended).
pub mod chat_message {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    /// One message.
    #[sea_orm(table_name = "chat_messages")]
    pub struct Model {
        /// The message's id (unique), the key.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// The code of the room it was said in.
        pub room_code: String,
        /// The sender's public handle.
        pub participant_id: String,
        /// The sender's display name when they sent it.
        pub display_name: String,
        /// The text (plain).
        pub body: String,
        /// When the server received it, Unix milliseconds.
        pub sent_at_ms: i64,
    }

    /// No relations are declared.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
