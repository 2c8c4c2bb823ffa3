//! Everything HTTP: the router, cookies, CSRF, security headers, metrics, and one module per
//! feature (each builds its own `Router`; handlers are named `<page>_<verb>`).

mod account;
mod admin;
mod api;
mod approvals;
mod auth;
mod contacts;
mod error;
mod extract;
mod form;
mod health;
mod home;
mod incidents;
mod layers;
mod policy;
mod recipient;
mod register;
mod register_api;
mod templates;
mod transfers;

pub use error::ErrorInfo;
pub use extract::{Admin, Approver, Authenticated, MaybeAuthenticated, Staff, Technician};

use crate::AppState;
use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::get;
use axum::Router;

/// Largest form body accepted (a sign-in or settings form is a few hundred bytes).
pub const MAX_FORM_BYTES: usize = 64 * 1024;

/// The session cookie's name. Under HTTPS every cookie carries the `__Host-` prefix: the
/// browser then accepts it only from this origin over HTTPS, with `Path=/` and no `Domain`, so
/// a page on a sibling subdomain cannot plant or overwrite one.
pub fn session_cookie_name(https: bool) -> &'static str {
    if https {
        "__Host-safehand_session"
    } else {
        "safehand_session"
    }
}

/// The CSRF cookie's name (see [`session_cookie_name`]).
pub fn csrf_cookie_name(https: bool) -> &'static str {
    if https {
        "__Host-safehand_csrf"
    } else {
        "safehand_csrf"
    }
}

/// The whole service's router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(health::router())
        .merge(auth::router())
        .merge(home::router())
        .merge(account::router())
        .merge(admin::router())
        .merge(register::router())
        .merge(contacts::router())
        .merge(policy::router())
        .merge(transfers::router())
        .merge(approvals::router())
        .merge(incidents::router())
        .merge(recipient::router())
        .nest(
            "/api/v1",
            api::router()
                .merge(contacts::api_router())
                .merge(policy::api_router())
                .merge(transfers::api_router())
                .merge(approvals::api_router())
                .merge(incidents::api_router())
                .merge(recipient::api_router())
                .merge(register_api::router())
                .fallback(error::not_found)
                .layer(from_fn(error::problem_json)),
        )
        .route("/static/style.css", get(layers::stylesheet))
        .fallback(error::not_found)
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(from_fn_with_state(state.clone(), form::ensure_csrf_cookie))
        .layer(from_fn_with_state(state.clone(), layers::security_headers))
        .layer(from_fn_with_state(state.clone(), layers::record_metrics))
        .layer(from_fn(layers::log_errors))
        .with_state(state)
}
