//! The home page: one section per role the person holds.

use super::extract::Authenticated;
use super::form::CsrfToken;
use super::templates::{render, HomePage, Layout, SendingRow};
use crate::accounts::{self, Role};
use crate::{AppState, Result};
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/", get(home_get))
}

async fn home_get(
    State(state): State<AppState>,
    auth: Authenticated,
    csrf: CsrfToken,
) -> Result<Response> {
    let recovery_left = accounts::recovery_codes_left(&state.db, auth.user.id).await?;
    Ok(render(&HomePage {
        layout: Layout::signed_in(&auth, &csrf.0),
        name: auth.user.name.clone(),
        roles: auth.roles.iter().map(|r| r.as_str()).collect(),
        is_staff: auth.has(Role::Staff),
        is_approver: auth.has(Role::Approver),
        is_admin: auth.has(Role::Admin),
        is_technician: auth.has(Role::Technician),
        waiting: if auth.has(Role::Approver) {
            crate::transfers::approval::queue(&state.db).await?.len() as i64
        } else {
            0
        },
        recovery_left,
        notice: None,
        sending: if auth.has(Role::Staff) {
            sending(&state, auth.user.id).await?
        } else {
            Vec::new()
        },
    }))
}

/// The user's transfers in their undo window, for the home page.
async fn sending(state: &AppState, user_id: i64) -> Result<Vec<SendingRow>> {
    let now = state.clock.now();
    Ok(
        crate::transfers::sending_for_sender(&state.db, user_id, now)
            .await?
            .into_iter()
            .filter_map(|t| {
                let left = t.undo_left(now)?;
                Some(SendingRow {
                    id: t.id,
                    to: t.recipient_email,
                    at: crate::transfers::format_clock(now + left),
                    left,
                })
            })
            .collect(),
    )
}
