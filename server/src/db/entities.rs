//! SeaORM entities: one module per table.

/// `rooms`: every room ever created.
pub mod room {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "rooms")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub code: String,
        pub name: String,
        pub private: bool,
        /// The user id of the creator; their sessions join as admin.
        pub created_by: String,
        pub created_at_ms: i64,
        pub ended_at_ms: Option<i64>,
        /// `ended` (by its admin), `empty` or `unused` (closed by itself).
        pub end_reason: Option<String>,
        /// Somebody the admin muted waits for the admin to let them unmute.
        pub host_unmutes: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `participants`: the live roster, one row per live session; deleted when
/// the session ends.
pub mod participant {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "participants")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub session_id: String,
        pub participant_id: String,
        pub room_code: String,
        pub user_id: String,
        pub display_name: String,
        /// `admin` or `member`.
        pub role: String,
        /// `pending` or `active`.
        pub state: String,
        /// The node whose process owns the session.
        pub node_id: String,
        pub joined_at_ms: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `participant_sessions`: append-only history; every leave is recorded
/// here with its time and reason.
pub mod participant_session {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "participant_sessions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub session_id: String,
        pub participant_id: String,
        pub room_code: String,
        pub user_id: String,
        pub display_name: String,
        pub role: String,
        pub joined_at_ms: i64,
        pub left_at_ms: Option<i64>,
        /// A `LeaveReason` in its kebab-case form.
        pub leave_reason: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
