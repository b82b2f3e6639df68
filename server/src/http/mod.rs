//! The HTTP adapters: the router and its layers, the site's files, the signalling socket,
//! the leave beacon, the operations endpoints, and the edge (identity,
//! same-origin checks, security headers, rate limits), and the relay to the node a room lives on. They translate
//! between HTTP and the room service and hold no domain logic.
//!
//! Layers, outermost first: trace, request metrics, security headers, server-function error
//! statuses, the same-origin check, identity, rate limits (which name the
//! caller), then the routes.

pub mod assets;
pub mod identity;
pub mod leave;
pub mod limits;
pub mod ops;
pub mod relay;
pub mod security;
pub mod socket;

use std::sync::Arc;

use app::ports::{Ports, RoomService};
use axum::routing::{get, post};
use axum::Router;
use leptos::prelude::*;
use leptos_axum::{generate_route_list, LeptosRoutes};
use tower_http::trace::TraceLayer;

use crate::node::AppState;

/// The HTTP routes.
pub fn router(state: &AppState) -> Router {
    let ports = Ports {
        rooms: state.rooms.clone() as Arc<dyn RoomService>,
        identity: state.identity.clone(),
        ice_servers: state.ice_servers.clone(),
    };
    let routes = generate_route_list(app::App);
    let mut router = Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route(app::routes::LEAVE_BEACON, post(leave::leave_beacon))
        .route(app::routes::SOCKET, get(socket::ws_handler));
    if state.debug_api {
        router = router
            .route(app::routes::DEBUG_RESOURCES, get(ops::debug_resources))
            .route(app::routes::DEBUG_SESSION, get(ops::debug_session));
    }
    let options = state.leptos.clone();
    let mut router = router
        .leptos_routes_with_context(
            state,
            routes,
            move || provide_context(ports.clone()),
            move || app::shell(options.clone()),
        )
        .merge(assets::pkg_routes(&state.leptos))
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(app::shell))
        // Outermost last: trace, headers, error statuses, same-origin
        // check, identity, the rate limits (which name the caller), then
        // the relay of joins for rooms on another node.
        .layer(axum::middleware::from_fn_with_state(state.clone(), relay::join))
        .layer(axum::middleware::from_fn_with_state(state.limits.clone(), limits::layer))
        .layer(axum::middleware::from_fn_with_state(state.identity.clone(), identity::layer))
        .layer(axum::middleware::from_fn(security::same_origin))
        .layer(axum::middleware::from_fn(security::server_fn_status));
    for header in security::headers() {
        router = router.layer(header);
    }
    router
        .layer(axum::middleware::from_fn(ops::count_requests))
        .layer(TraceLayer::new_for_http())
        .with_state(state.clone())
}
