//! The JSON API for programs, authenticated by API tokens (or a browser session). Errors come
//! back as JSON through the layer in `http::error`.

use super::extract::Authenticated;
use crate::accounts::format_roles;
use crate::AppState;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/me", get(me_get))
}

/// Who the token belongs to and what it may do.
async fn me_get(auth: Authenticated) -> Json<serde_json::Value> {
    Json(json!({
        "email": auth.user.email,
        "name": auth.user.name,
        "roles": format_roles(&auth.roles),
        "via": if auth.token.is_some() { "token" } else { "session" },
    }))
}
