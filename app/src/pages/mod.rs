//! The pages of the app, one module each.

pub mod lobby;
pub mod not_found;
pub mod room;
