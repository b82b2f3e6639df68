//! The pages of the app, one module each.

/// `/`: create a room or type a code.
pub mod lobby;
/// The 404 page.
pub mod not_found;
pub mod room;
