//! The Safehand secure file-exchange service, as a library: `app(state)` builds the router,
//! `serve(listener, state, shutdown)` runs it. `main.rs` only reads configuration and starts it.

use axum::{routing::get, Router};

/// Builds the service's router. Does no I/O.
pub fn app() -> Router {
    Router::new().route("/healthz", get(|| async { "ok" }))
}
