//! The approver's pages and API (policy P7): the queue of held transfers, one transfer with
//! everything except its content and passphrase, approve or reject with a reason.

use super::extract::{Approver, Authenticated, JsonBody};
use super::form::{CsrfToken, Form};
use super::templates::{render, when, FormErrors, Layout};
use super::transfers::transfer_json;
use crate::accounts;
use crate::contacts;
use crate::policy::format_size;
use crate::transfers::approval::{self, Decision};
use crate::transfers::{self, State as TState, Transfer};
use crate::{AppState, Error, Result};
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/approvals", get(approvals_get))
        .route("/approvals/{id}", get(approval_get))
        .route("/approvals/{id}/approve", post(approve_post))
        .route("/approvals/{id}/reject", post(reject_post))
}

pub(super) fn api_router() -> Router<AppState> {
    Router::new()
        .route("/approvals", get(api_approvals_get))
        .route("/approvals/{id}", get(api_approval_get))
        .route("/approvals/{id}/approve", post(api_approve_post))
        .route("/approvals/{id}/reject", post(api_reject_post))
}

/// A transfer an approver may see: one that is held, or that an approver decided on. Any
/// other transfer is "not found" here (approvers see only what comes to them).
async fn visible(state: &AppState, id: i64) -> Result<Transfer> {
    transfers::get(&state.db, id)
        .await?
        .filter(|t| t.state == TState::Held || t.decision.is_some())
        .ok_or(Error::NotFound)
}

struct QueueRow {
    id: i64,
    sender: String,
    to: String,
    classification: String,
    reasons: String,
    held: String,
    expires: String,
    own: bool,
}

struct DecidedRow {
    id: i64,
    to: String,
    decision: String,
    by: String,
    at: String,
}

#[derive(Template)]
#[template(path = "approvals.html")]
struct QueuePage {
    layout: Layout,
    rows: Vec<QueueRow>,
    decided: Vec<DecidedRow>,
}

async fn sender_label(state: &AppState, t: &Transfer) -> Result<String> {
    Ok(accounts::by_id(&state.db, t.sender_id)
        .await?
        .map(|u| format!("{} ({})", u.name, u.email))
        .unwrap_or_else(|| format!("account {}", t.sender_id)))
}

async fn organisation(state: &AppState, t: &Transfer) -> Result<String> {
    Ok(contacts::get(&state.db, t.contact_id)
        .await?
        .map(|c| format!("{} ({})", t.recipient_email, c.organisation))
        .unwrap_or_else(|| t.recipient_email.clone()))
}

async fn approvals_get(
    State(state): State<AppState>,
    Approver(auth): Approver,
    csrf: CsrfToken,
) -> Result<Response> {
    let mut rows = Vec::new();
    for t in approval::queue(&state.db).await? {
        rows.push(QueueRow {
            id: t.id,
            sender: sender_label(&state, &t).await?,
            to: organisation(&state, &t).await?,
            classification: t.classification.clone(),
            reasons: approval::reasons_text(&t.approval_reasons),
            held: t.held_at.map(when).unwrap_or_default(),
            expires: when(t.expires_at),
            own: t.sender_id == auth.user.id,
        });
    }
    let decided = approval::decided(&state.db, 20)
        .await?
        .into_iter()
        .map(|t| DecidedRow {
            id: t.id,
            to: t.recipient_email.clone(),
            decision: t.decision.clone().unwrap_or_default(),
            by: t.decided_by_label.clone().unwrap_or_default(),
            at: t.decided_at.map(when).unwrap_or_default(),
        })
        .collect();
    Ok(render(&QueuePage {
        layout: Layout::signed_in(&auth, &csrf.0),
        rows,
        decided,
    }))
}

#[derive(Template)]
#[template(path = "approval.html")]
struct ApprovalPage {
    layout: Layout,
    id: i64,
    state: String,
    sender: String,
    contact: String,
    contact_phone: String,
    verification: String,
    purpose: String,
    classification: String,
    reasons: String,
    attestation: Option<String>,
    files: Vec<(String, String)>,
    file_note: String,
    size: String,
    sealed_size: String,
    created: String,
    held: String,
    expires: String,
    decision: Option<String>,
    may_decide: bool,
    own: bool,
    note: String,
    reason: String,
    errors: FormErrors,
    notice: Option<String>,
}

#[allow(clippy::too_many_arguments)]
async fn page(
    state: &AppState,
    auth: &Authenticated,
    csrf: &str,
    t: &Transfer,
    note: String,
    reason: String,
    errors: FormErrors,
    notice: Option<String>,
) -> Result<Response> {
    let now = state.clock.now();
    let details = transfers::details(&state.db, &state.keys, t).await?;
    let contact = contacts::get(&state.db, t.contact_id).await?;
    let files = transfers::files(&state.db, &state.keys, t)
        .await?
        .into_iter()
        .map(|f| (f.name, format_size(f.size)))
        .collect();
    let decision = approval::decision_text(&state.db, &state.keys, t).await?;
    let own = t.sender_id == auth.user.id;
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let p = ApprovalPage {
        layout: Layout::signed_in(auth, csrf),
        id: t.id,
        state: transfers::receipt(t, now),
        sender: sender_label(state, t).await?,
        contact: contact
            .as_ref()
            .map(|c| {
                format!(
                    "{}, {} at {} ({})",
                    c.name, c.job_title, c.organisation, c.email
                )
            })
            .unwrap_or_else(|| t.recipient_email.clone()),
        contact_phone: contact
            .as_ref()
            .map(|c| c.phone.clone())
            .unwrap_or_default(),
        verification: contact
            .as_ref()
            .map(|c| approval::verification_text(c, now))
            .unwrap_or_default(),
        purpose: details.purpose,
        classification: t.classification.clone(),
        reasons: approval::reasons_text(&t.approval_reasons),
        attestation: details.attestation,
        files,
        file_note: if t.sealed_on_server {
            String::new()
        } else {
            "Sealed on the sender's computer: the server never saw the file names.".into()
        },
        size: format_size(t.plaintext_size),
        sealed_size: format_size(t.body_size),
        created: when(t.created_at),
        held: t.held_at.map(when).unwrap_or_default(),
        expires: when(t.expires_at),
        decision,
        may_decide: t.state == TState::Held && now < t.expires_at && !own,
        own,
        note,
        reason,
        errors,
        notice,
    };
    Ok((status, render(&p)).into_response())
}

async fn approval_get(
    State(state): State<AppState>,
    Approver(auth): Approver,
    csrf: CsrfToken,
    Path(id): Path<i64>,
) -> Result<Response> {
    let t = visible(&state, id).await?;
    page(
        &state,
        &auth,
        &csrf.0,
        &t,
        String::new(),
        String::new(),
        FormErrors::default(),
        None,
    )
    .await
}

async fn approve_post(
    State(state): State<AppState>,
    Approver(auth): Approver,
    Path(id): Path<i64>,
    form: Form,
) -> Result<Response> {
    decision_post(&state, &auth, id, &form, Decision::Approve).await
}

async fn reject_post(
    State(state): State<AppState>,
    Approver(auth): Approver,
    Path(id): Path<i64>,
    form: Form,
) -> Result<Response> {
    decision_post(&state, &auth, id, &form, Decision::Reject).await
}

/// Approve (field `note`, optional) or reject (field `reason`); a refusal goes back to the
/// page with the message on the field and what was typed kept.
async fn decision_post(
    state: &AppState,
    auth: &Authenticated,
    id: i64,
    form: &Form,
    decision: Decision,
) -> Result<Response> {
    let t = visible(state, id).await?;
    let field = match decision {
        Decision::Approve => "note",
        Decision::Reject => "reason",
    };
    let typed = form.get(field).to_string();
    let now = state.clock.now();
    let result = approval::decide(
        &state.db,
        &state.keys,
        &state.blobs,
        now,
        &auth.user,
        &auth.actor(),
        &state.settings.public_url,
        &t,
        decision,
        &typed,
    )
    .await;
    let (t, errors, notice) = match result {
        Ok(t) => {
            let notice = match (decision, t.undo_left(now)) {
                (Decision::Reject, _) => "Rejected. The files have been destroyed and the sender has been told; nothing was sent to the recipient.".to_string(),
                (Decision::Approve, Some(left)) => format!(
                    "Approved. The sender has been told; the link will be emailed to the recipient in {left} seconds (the sender can still undo until then)."
                ),
                (Decision::Approve, None) => "Approved. The sender has been told, and the link has been emailed to the recipient.".into(),
            };
            (t, FormErrors::default(), Some(notice))
        }
        Err(Error::BadInput(message)) => {
            let mut errors = FormErrors::default();
            errors.add(field, message);
            (visible(state, id).await?, errors, None)
        }
        Err(e) => return Err(e),
    };
    let (note, reason) = match (decision, errors.is_empty()) {
        (_, true) => (String::new(), String::new()),
        (Decision::Approve, false) => (typed, String::new()),
        (Decision::Reject, false) => (String::new(), typed),
    };
    page(state, auth, &form.csrf, &t, note, reason, errors, notice).await
}

// ---------------------------------------------------------------------------------------------
// API

async fn approval_json(state: &AppState, t: &Transfer) -> Result<serde_json::Value> {
    let now = state.clock.now();
    let mut body = transfer_json(t, now);
    let details = transfers::details(&state.db, &state.keys, t).await?;
    body["purpose"] = json!(details.purpose);
    body["attestation"] = json!(details.attestation);
    body["sender_id"] = json!(t.sender_id);
    body["sender"] = json!(sender_label(state, t).await?);
    body["body_bytes"] = json!(t.body_size);
    body["decision_reason"] = json!(approval::decision_reason(&state.db, &state.keys, t).await?);
    if let Some(c) = contacts::get(&state.db, t.contact_id).await? {
        body["verification"] = json!(approval::verification_text(&c, now));
        body["contact"] = json!(c);
    }
    body["files_list"] = json!(transfers::files(&state.db, &state.keys, t)
        .await?
        .into_iter()
        .map(|f| json!({ "name": f.name, "size": f.size }))
        .collect::<Vec<_>>());
    Ok(body)
}

async fn api_approvals_get(
    State(state): State<AppState>,
    Approver(_auth): Approver,
) -> Result<Json<serde_json::Value>> {
    let mut list = Vec::new();
    for t in approval::queue(&state.db).await? {
        list.push(approval_json(&state, &t).await?);
    }
    Ok(Json(json!({ "waiting": list })))
}

async fn api_approval_get(
    State(state): State<AppState>,
    Approver(_auth): Approver,
    Path(id): Path<i64>,
) -> Result<Json<serde_json::Value>> {
    let t = visible(&state, id).await?;
    Ok(Json(approval_json(&state, &t).await?))
}

#[derive(Deserialize)]
struct DecisionBody {
    #[serde(default)]
    reason: String,
}

async fn api_approve_post(
    State(state): State<AppState>,
    Approver(auth): Approver,
    Path(id): Path<i64>,
    JsonBody(body): JsonBody<DecisionBody>,
) -> Result<Json<serde_json::Value>> {
    api_decide(&state, &auth, id, &body.reason, Decision::Approve).await
}

async fn api_reject_post(
    State(state): State<AppState>,
    Approver(auth): Approver,
    Path(id): Path<i64>,
    JsonBody(body): JsonBody<DecisionBody>,
) -> Result<Json<serde_json::Value>> {
    api_decide(&state, &auth, id, &body.reason, Decision::Reject).await
}

async fn api_decide(
    state: &AppState,
    auth: &Authenticated,
    id: i64,
    reason: &str,
    decision: Decision,
) -> Result<Json<serde_json::Value>> {
    let t = visible(state, id).await?;
    let t = approval::decide(
        &state.db,
        &state.keys,
        &state.blobs,
        state.clock.now(),
        &auth.user,
        &auth.actor(),
        &state.settings.public_url,
        &t,
        decision,
        reason,
    )
    .await?;
    Ok(Json(approval_json(state, &t).await?))
}
