//! Incident pages and API (policy P11): "report a problem" on a transfer (its sender, an
//! approver or an admin), the incident page with the ICO clock and the evidence of access
//! (admins; the reporter sees their own), the assessment and closing (admins), and the record
//! exported as PDF and JSON.

use super::extract::{Admin, Authenticated, JsonBody};
use super::form::{CsrfToken, Form};
use super::templates::{render, when, FormErrors, Layout};
use crate::accounts::Role;
use crate::incidents::{self, Assessment, AssessmentInput, Incident, Kind, Risk};
use crate::transfers::{self, Transfer};
use crate::{AppState, Error, Result};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/incidents", get(incidents_get))
        .route("/incidents/report", get(report_find_get))
        .route("/incidents/{id}", get(incident_get))
        .route("/incidents/{id}/assess", post(assess_post))
        .route("/incidents/{id}/close", post(close_post))
        .route(
            "/transfers/{id}/incident",
            get(report_get).post(report_post),
        )
}

pub(super) fn api_router() -> Router<AppState> {
    Router::new()
        .route("/incidents", get(api_incidents_get))
        .route("/incidents/{id}", get(api_incident_get))
        .route("/incidents/{id}/assessment", post(api_assess_post))
        .route("/incidents/{id}/close", post(api_close_post))
        .route("/transfers/{id}/incident", post(api_report_post))
}

/// The transfer, if `auth` may report a problem on it: its sender, an approver or an admin.
/// Anyone else is told it does not exist (it is not theirs to know of).
async fn reportable(state: &AppState, auth: &Authenticated, id: i64) -> Result<Transfer> {
    transfers::get(&state.db, id)
        .await?
        .filter(|t| {
            t.sender_id == auth.user.id || auth.has(Role::Approver) || auth.has(Role::Admin)
        })
        .ok_or(Error::NotFound)
}

/// The incident, if `auth` may see it: an admin, or whoever reported it.
async fn visible(state: &AppState, auth: &Authenticated, id: i64) -> Result<Incident> {
    incidents::get(&state.db, id)
        .await?
        .filter(|i| auth.has(Role::Admin) || i.reported_by == auth.user.id)
        .ok_or(Error::NotFound)
}

async fn admin_incident(state: &AppState, id: i64) -> Result<Incident> {
    incidents::get(&state.db, id).await?.ok_or(Error::NotFound)
}

/// The kinds for the report form: (value, label).
pub(super) fn kind_options() -> Vec<(&'static str, &'static str)> {
    Kind::ALL.iter().map(|k| (k.as_str(), k.label())).collect()
}

fn problems_to_errors(problems: Vec<(&'static str, String)>) -> FormErrors {
    let mut errors = FormErrors::default();
    for (field, message) in problems {
        errors.add(field, message);
    }
    errors
}

// ---------------------------------------------------------------------------------------------
// Reporting

#[derive(Template)]
#[template(path = "incident_report.html")]
struct ReportPage {
    layout: Layout,
    id: i64,
    to_email: String,
    state: String,
    created: String,
    kinds: Vec<(&'static str, &'static str)>,
    report_kind: String,
    report_description: String,
    report_known_hours_ago: String,
    errors: FormErrors,
}

async fn report_page(
    state: &AppState,
    auth: &Authenticated,
    csrf: &str,
    t: &Transfer,
    input: &incidents::Report,
    errors: FormErrors,
) -> Response {
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let page = ReportPage {
        layout: Layout::signed_in(auth, csrf),
        id: t.id,
        to_email: t.recipient_email.clone(),
        state: transfers::receipt(t, state.clock.now()),
        created: when(t.created_at),
        kinds: kind_options(),
        report_kind: input.kind.clone(),
        report_description: input.description.clone(),
        report_known_hours_ago: input.known_hours_ago.clone(),
        errors,
    };
    (status, render(&page)).into_response()
}

async fn report_get(
    State(state): State<AppState>,
    auth: Authenticated,
    csrf: CsrfToken,
    Path(id): Path<i64>,
) -> Result<Response> {
    let t = reportable(&state, &auth, id).await?;
    Ok(report_page(
        &state,
        &auth,
        &csrf.0,
        &t,
        &incidents::Report::default(),
        FormErrors::default(),
    )
    .await)
}

#[derive(Deserialize)]
struct FindQuery {
    #[serde(default)]
    transfer: String,
}

/// An approver or admin names a transfer by number; the report form for it follows.
async fn report_find_get(auth: Authenticated, Query(q): Query<FindQuery>) -> Result<Response> {
    if !(auth.has(Role::Approver) || auth.has(Role::Admin)) {
        return Err(Error::Forbidden);
    }
    match q.transfer.trim().trim_start_matches('#').parse::<i64>() {
        Ok(n) => Ok(Redirect::to(&format!("/transfers/{n}/incident")).into_response()),
        Err(_) => Err(Error::BadInput(
            "Enter the transfer's number (it is in the address of its page, /transfers/NUMBER)."
                .into(),
        )),
    }
}

async fn do_report(
    state: &AppState,
    auth: &Authenticated,
    t: &Transfer,
    report: &incidents::Checked,
) -> Result<incidents::Reported> {
    incidents::report(
        &state.db,
        &state.keys,
        &state.blobs,
        state.clock.now(),
        &auth.actor(),
        auth.user.id,
        &state.settings.public_url,
        t,
        report,
    )
    .await
}

async fn report_post(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<i64>,
    form: Form,
) -> Result<Response> {
    let t = reportable(&state, &auth, id).await?;
    let input = incidents::Report {
        kind: form.get("kind").to_string(),
        description: form.get("description").to_string(),
        known_hours_ago: form.get("known_hours_ago").to_string(),
        known_at: String::new(),
    };
    let checked = match input.check(state.clock.now(), t.created_at) {
        Ok(x) => x,
        Err(p) => {
            return Ok(
                report_page(&state, &auth, &form.csrf, &t, &input, problems_to_errors(p)).await,
            )
        }
    };
    let reported = do_report(&state, &auth, &t, &checked).await?;
    let notice = format!(
        "Problem reported as incident {}. {} The administrators have been emailed.",
        reported.incident.id,
        reported.outcome()
    );
    incident_page(
        &state,
        &auth,
        &form.csrf,
        reported.incident,
        FormErrors::default(),
        None,
        Some(notice),
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// The list and the incident page

struct IncidentRow {
    id: i64,
    reported: String,
    kind: &'static str,
    transfer_id: i64,
    state: &'static str,
    clock: String,
}

#[derive(Template)]
#[template(path = "incidents.html")]
struct ListPage {
    layout: Layout,
    rows: Vec<IncidentRow>,
}

async fn incidents_get(
    State(state): State<AppState>,
    Admin(auth): Admin,
    csrf: CsrfToken,
) -> Result<Response> {
    let now = state.clock.now();
    let rows = incidents::list(&state.db, 500)
        .await?
        .into_iter()
        .map(|i| IncidentRow {
            id: i.id,
            reported: when(i.reported_at),
            kind: i.kind.label(),
            transfer_id: i.transfer_id,
            state: i.state(),
            clock: i.clock(now),
        })
        .collect();
    Ok(render(&ListPage {
        layout: Layout::signed_in(&auth, &csrf.0),
        rows,
    }))
}

struct AccessRow {
    at: String,
    what: String,
    address: String,
}

struct DownloadRow {
    item: String,
    address: String,
    started: String,
    outcome: String,
}

#[derive(Template)]
#[template(path = "incident.html")]
struct IncidentPage {
    layout: Layout,
    id: i64,
    kind: &'static str,
    state: &'static str,
    closed: bool,
    overdue: bool,
    clock: String,
    reported_by: String,
    reported: String,
    known: String,
    deadline: String,
    description: String,
    recall: String,
    backups: String,
    transfer_id: i64,
    to_email: String,
    classification: String,
    purpose: String,
    files: String,
    transfer_state: String,
    evidence_empty: bool,
    summary: Vec<String>,
    accesses: Vec<AccessRow>,
    downloads: Vec<DownloadRow>,
    assessment: Option<Assessment>,
    risk_label: String,
    assessed: String,
    closed_line: String,
    is_admin: bool,
    risks: Vec<(&'static str, &'static str)>,
    input: AssessmentInput,
    errors: FormErrors,
    notice: Option<String>,
}

async fn incident_page(
    state: &AppState,
    auth: &Authenticated,
    csrf: &str,
    i: Incident,
    errors: FormErrors,
    input: Option<AssessmentInput>,
    notice: Option<String>,
) -> Result<Response> {
    let now = state.clock.now();
    let r = incidents::record(&state.db, &state.keys, i).await?;
    let i = &r.incident;
    let mut accesses: Vec<&incidents::Access> = r
        .evidence
        .link_views
        .iter()
        .chain(&r.evidence.codes_requested)
        .chain(&r.evidence.codes_entered)
        .chain(&r.evidence.passphrases)
        .collect();
    accesses.sort_by_key(|a| a.at);
    let input = input.unwrap_or_else(|| match &r.assessment {
        Some(a) => AssessmentInput {
            risk: a.risk.as_str().into(),
            risk_notes: a.risk_notes.clone(),
            reportable: if a.reportable { "yes" } else { "no" }.into(),
            decision: a.decision.clone(),
            reason: a.reason.clone(),
            actions: a.actions.clone(),
        },
        None => AssessmentInput::default(),
    });
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let page = IncidentPage {
        layout: Layout::signed_in(auth, csrf),
        id: i.id,
        kind: i.kind.label(),
        state: i.state(),
        closed: i.closed,
        overdue: !i.closed && now >= i.deadline(),
        clock: i.clock(now),
        reported_by: r.reported_by.clone(),
        reported: when(i.reported_at),
        known: when(i.known_at),
        deadline: when(i.deadline()),
        description: r.description.clone(),
        recall: r.recall_outcome(),
        backups: r.backups(),
        transfer_id: r.transfer.id,
        to_email: r.transfer.recipient_email.clone(),
        classification: r.transfer.classification.clone(),
        purpose: r.purpose.clone(),
        files: if r.files.is_empty() {
            "sealed on the sender's computer (names not known to the server)".into()
        } else {
            r.files.join(", ")
        },
        transfer_state: transfers::receipt(&r.transfer, now),
        evidence_empty: r.evidence.is_empty(),
        summary: r.evidence.summary(),
        accesses: accesses
            .into_iter()
            .map(|a| AccessRow {
                at: when(a.at),
                what: a.what.clone(),
                address: a.address.clone(),
            })
            .collect(),
        downloads: r
            .evidence
            .downloads
            .iter()
            .map(|d| DownloadRow {
                item: d.item.clone(),
                address: d.address.clone(),
                started: when(d.started_at),
                outcome: d.outcome(when),
            })
            .collect(),
        risk_label: r
            .assessment
            .as_ref()
            .map(|a| a.risk.label().to_string())
            .unwrap_or_default(),
        assessment: r.assessment.clone(),
        assessed: format!(
            "{} by {}",
            i.assessed_at.map(when).unwrap_or_default(),
            r.assessed_by
        ),
        closed_line: format!(
            "{} by {}",
            i.closed_at.map(when).unwrap_or_default(),
            r.closed_by
        ),
        is_admin: auth.has(Role::Admin),
        risks: Risk::ALL.iter().map(|r| (r.as_str(), r.label())).collect(),
        input,
        errors,
        notice,
    };
    Ok((status, render(&page)).into_response())
}

fn attachment(content_type: &str, file_name: &str, body: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file_name}\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// `/incidents/{id}` (the page), `/incidents/{id}.json` and `/incidents/{id}.pdf` (the record;
/// admins only).
async fn incident_get(
    State(state): State<AppState>,
    auth: Authenticated,
    csrf: CsrfToken,
    Path(file): Path<String>,
) -> Result<Response> {
    // One route for the page and the exports: a path segment is one parameter.
    let (id, format) = match file.split_once('.') {
        Some((id, f @ ("json" | "pdf"))) => (id, Some(f)),
        Some(_) => return Err(Error::NotFound),
        None => (file.as_str(), None),
    };
    let id: i64 = id.parse().map_err(|_| Error::NotFound)?;
    let i = visible(&state, &auth, id).await?;
    let Some(format) = format else {
        return incident_page(&state, &auth, &csrf.0, i, FormErrors::default(), None, None).await;
    };
    if !auth.has(Role::Admin) {
        return Err(Error::Forbidden);
    }
    let now = state.clock.now();
    incidents::exported(&state.db, now, &auth.actor(), &i, format).await?;
    let record = incidents::record(&state.db, &state.keys, i).await?;
    let name = format!("safehand-incident-{}.{format}", record.incident.id);
    Ok(if format == "json" {
        let body = serde_json::to_vec_pretty(&record.to_json(now))
            .map_err(|e| Error::Internal(format!("incident json: {e}")))?;
        attachment("application/json", &name, body)
    } else {
        attachment(
            "application/pdf",
            &name,
            record.to_pdf(now, &state.settings.public_url),
        )
    })
}

fn assessment_input(form: &Form) -> AssessmentInput {
    AssessmentInput {
        risk: form.get("risk").into(),
        risk_notes: form.get("risk_notes").into(),
        reportable: form.get("reportable").into(),
        decision: form.get("decision").into(),
        reason: form.get("reason").into(),
        actions: form.get("actions").into(),
    }
}

async fn assess_post(
    State(state): State<AppState>,
    Admin(auth): Admin,
    Path(id): Path<i64>,
    form: Form,
) -> Result<Response> {
    let i = admin_incident(&state, id).await?;
    let input = assessment_input(&form);
    let a = match input.check() {
        Ok(a) => a,
        Err(p) => {
            return incident_page(
                &state,
                &auth,
                &form.csrf,
                i,
                problems_to_errors(p),
                Some(input),
                None,
            )
            .await
        }
    };
    let result = incidents::assess(
        &state.db,
        &state.keys,
        state.clock.now(),
        &auth.actor(),
        auth.user.id,
        &i,
        &a,
    )
    .await;
    after_action(
        &state,
        &auth,
        &form.csrf,
        i,
        result,
        "Assessment recorded.",
        "risk",
        Some(input),
    )
    .await
}

/// The incident page after an admin's action: `done` when it worked, or the refusal on
/// `field` with what was typed kept.
#[allow(clippy::too_many_arguments)]
async fn after_action(
    state: &AppState,
    auth: &Authenticated,
    csrf: &str,
    before: Incident,
    result: Result<Incident>,
    done: &str,
    field: &str,
    typed: Option<AssessmentInput>,
) -> Result<Response> {
    match result {
        Ok(i) => {
            incident_page(
                state,
                auth,
                csrf,
                i,
                FormErrors::default(),
                None,
                Some(done.into()),
            )
            .await
        }
        Err(Error::BadInput(m)) => {
            let mut errors = FormErrors::default();
            errors.add(field, m);
            incident_page(state, auth, csrf, before, errors, typed, None).await
        }
        Err(e) => Err(e),
    }
}

async fn close_post(
    State(state): State<AppState>,
    Admin(auth): Admin,
    Path(id): Path<i64>,
    form: Form,
) -> Result<Response> {
    let i = admin_incident(&state, id).await?;
    let result = incidents::close(
        &state.db,
        state.clock.now(),
        &auth.actor(),
        auth.user.id,
        &i,
    )
    .await;
    after_action(
        &state,
        &auth,
        &form.csrf,
        i,
        result,
        "Incident closed. Download the record below for the school's files.",
        "close-h",
        None,
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// API

async fn api_incidents_get(
    State(state): State<AppState>,
    Admin(_auth): Admin,
) -> Result<Json<serde_json::Value>> {
    let now = state.clock.now();
    let list = incidents::list(&state.db, 500).await?;
    Ok(Json(json!({
        "incidents": list.iter().map(|i| json!({
            "id": i.id,
            "state": i.state(),
            "kind": i.kind.as_str(),
            "transfer_id": i.transfer_id,
            "reported_at": crate::clock::format_rfc3339(i.reported_at),
            "ico_deadline": crate::clock::format_rfc3339(i.deadline()),
            "ico_clock": i.clock(now),
            "reportable_to_ico": i.reportable,
        })).collect::<Vec<_>>()
    })))
}

async fn api_incident_get(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<i64>,
) -> Result<Json<serde_json::Value>> {
    let i = visible(&state, &auth, id).await?;
    let record = incidents::record(&state.db, &state.keys, i).await?;
    Ok(Json(record.to_json(state.clock.now())))
}

fn problems_message(problems: Vec<(&'static str, String)>) -> Error {
    Error::BadInput(
        problems
            .into_iter()
            .map(|(f, m)| format!("{f}: {m}"))
            .collect::<Vec<_>>()
            .join(" "),
    )
}

async fn api_report_post(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<i64>,
    JsonBody(body): JsonBody<incidents::Report>,
) -> Result<Response> {
    let t = reportable(&state, &auth, id).await?;
    let checked = body
        .check(state.clock.now(), t.created_at)
        .map_err(problems_message)?;
    let reported = do_report(&state, &auth, &t, &checked).await?;
    let record = incidents::record(&state.db, &state.keys, reported.incident).await?;
    Ok((StatusCode::CREATED, Json(record.to_json(state.clock.now()))).into_response())
}

async fn api_assess_post(
    State(state): State<AppState>,
    Admin(auth): Admin,
    Path(id): Path<i64>,
    JsonBody(body): JsonBody<AssessmentInput>,
) -> Result<Json<serde_json::Value>> {
    let i = admin_incident(&state, id).await?;
    let a = body.check().map_err(problems_message)?;
    let i = incidents::assess(
        &state.db,
        &state.keys,
        state.clock.now(),
        &auth.actor(),
        auth.user.id,
        &i,
        &a,
    )
    .await?;
    let record = incidents::record(&state.db, &state.keys, i).await?;
    Ok(Json(record.to_json(state.clock.now())))
}

async fn api_close_post(
    State(state): State<AppState>,
    Admin(auth): Admin,
    Path(id): Path<i64>,
) -> Result<Json<serde_json::Value>> {
    let i = admin_incident(&state, id).await?;
    let i = incidents::close(
        &state.db,
        state.clock.now(),
        &auth.actor(),
        auth.user.id,
        &i,
    )
    .await?;
    let record = incidents::record(&state.db, &state.keys, i).await?;
    Ok(Json(record.to_json(state.clock.now())))
}
