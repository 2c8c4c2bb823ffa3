//! Staff pages and API for transfers: the send page (files streamed with a progress bar and
//! sealed on the fly), the passphrase shown once, the dashboard with receipts, recall.

use super::extract::{Authenticated, JsonBody, Staff};
use super::form::{CsrfHeader, CsrfToken, Form};
use super::templates::{render, when, FormErrors, Layout};
use crate::contacts::{self, Contact, ContactError, Problems};
use crate::policy::{self, format_size, Unverified};
use crate::transfers::upload::{PresealedUpload, SealingUpload};
use crate::transfers::{self, Request, State as TState, Transfer};
use crate::{AppState, Error, Result};
use askama::Template;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use safehand_crypto::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/transfers", get(transfers_get))
        .route(
            "/transfers/new",
            get(new_get)
                .post(new_post)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/transfers/{id}", get(transfer_get))
        .route("/transfers/{id}/release", post(release_post))
        .route("/transfers/{id}/recall", post(recall_post))
        .route("/transfers/{id}/undo", post(undo_post))
        .route("/static/send.js", get(send_js))
        .route("/static/countdown.js", get(countdown_js))
        .route("/api/openapi.json", get(openapi_get))
}

pub(super) fn api_router() -> Router<AppState> {
    Router::new()
        .route(
            "/transfers",
            get(api_transfers_get)
                .post(api_transfers_post)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/transfers/{id}", get(api_transfer_get))
        .route("/transfers/{id}/release", post(api_release_post))
        .route("/transfers/{id}/recall", post(api_recall_post))
        .route("/transfers/{id}/undo", post(api_undo_post))
}

/// A script of the pages (the CSP allows only scripts served from here).
fn script(body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn send_js() -> Response {
    script(include_str!("../../static/send.js"))
}

/// The undo window's countdown, on the home page, the transfers list and the transfer page.
async fn countdown_js() -> Response {
    script(include_str!("../../static/countdown.js"))
}

async fn openapi_get() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("../../static/openapi.json"),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// Receiving an upload (pages and API share it)

/// What came of an upload.
enum Received {
    Sent {
        transfer: Box<Transfer>,
        contact: Box<Contact>,
        passphrase: Option<SecretString>,
    },
    Problems(Problems),
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> Error {
    Error::BadInput(format!(
        "The upload was cut off or could not be read ({}). Nothing was sent; try again.",
        e.body_text()
    ))
}

/// An upload in progress, of either kind.
enum Upload {
    Sealing(Box<SealingUpload>),
    Presealed(Box<PresealedUpload>),
}

impl Upload {
    async fn abort(self) {
        match self {
            Upload::Sealing(u) => u.abort().await,
            Upload::Presealed(u) => u.abort().await,
        }
    }
}

/// Reads a part that is buffered in memory, refusing it (413, naming the limit) as soon as it
/// passes `limit` bytes, before the rest of it is read.
async fn small_part(
    mut field: axum::extract::multipart::Field<'_>,
    limit: usize,
    name: &str,
) -> Result<String> {
    let mut buf = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if buf.len() + chunk.len() > limit {
            return Err(Error::TooLarge(format!(
                "The `{name}` part is larger than its limit of {} KiB. Nothing was sent; send only the transfer's details there, and the files as `file` parts.",
                limit / 1024
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    String::from_utf8(buf).map_err(|_| {
        Error::BadInput(format!(
            "The `{name}` part is not UTF-8 text. Nothing was sent; send it as JSON."
        ))
    })
}

/// Reads `details` (JSON), then either `file` parts (sealed here) or one `payload` part (an
/// `.age` file sealed by the sender). Nothing is left behind when anything fails.
async fn receive(
    state: &AppState,
    auth: &Authenticated,
    mut multipart: Multipart,
) -> Result<Received> {
    let now = state.clock.now();
    let policy = policy::load(&state.db).await?;
    let request: Request = {
        let first = multipart.next_field().await.map_err(multipart_error)?;
        let Some(first) = first.filter(|f| f.name() == Some("details")) else {
            return Err(Error::BadInput(
                "The upload must start with a `details` part (JSON) before any file.".into(),
            ));
        };
        let text = small_part(first, transfers::MAX_DETAILS_BYTES, "details").await?;
        serde_json::from_str(&text).map_err(|e| {
            Error::BadInput(format!(
                "The `details` part is not valid JSON for a transfer: {e}"
            ))
        })?
    };
    let mut upload: Option<Upload> = None;
    let mut plan = None;
    let mut passphrase = None;
    let pumped: Result<Option<Problems>> = async {
        loop {
            let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? else {
                return Ok(None);
            };
            let name = field.name().unwrap_or("").to_string();
            match (&mut upload, name.as_str()) {
                (None, "file" | "payload") => {
                    let presealed = name == "payload";
                    match transfers::plan(&state.db, now, &policy, &request, presealed).await {
                        Ok(p) => plan = Some(p),
                        Err(ContactError::Problems(p)) => return Ok(Some(p)),
                        Err(ContactError::Other(e)) => return Err(e),
                    }
                    let files = plan.as_ref().map(|p| p.files.clone()).unwrap_or_default();
                    upload = Some(if presealed {
                        Upload::Presealed(Box::new(
                            PresealedUpload::begin(&state.blobs, policy.max_size_bytes as u64)
                                .await?,
                        ))
                    } else {
                        let p = safehand_crypto::passphrase::generate();
                        let u = SealingUpload::begin(&state.blobs, &p, files).await?;
                        passphrase = Some(p);
                        Upload::Sealing(Box::new(u))
                    });
                }
                (Some(Upload::Sealing(_)), "file") => {}
                (Some(Upload::Presealed(_)), _) => {
                    return Err(Error::BadInput(
                        "Send one sealed payload and nothing after it.".into(),
                    ))
                }
                (_, other) => {
                    return Err(Error::BadInput(format!(
                        "Unexpected part `{other}` in the upload: send `file` parts (or one `payload`) after `details`."
                    )))
                }
            }
            match upload.as_mut() {
                Some(Upload::Sealing(u)) => {
                    u.next_file(now as u64)?;
                    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                        u.write(&chunk).await?;
                    }
                }
                Some(Upload::Presealed(u)) => {
                    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                        u.write(&chunk).await?;
                    }
                }
                None => {}
            }
        }
    }
    .await;
    let problems = match pumped {
        Ok(p) => p,
        Err(e) => {
            if let Some(u) = upload {
                u.abort().await;
            }
            return Err(e);
        }
    };
    if let Some(p) = problems {
        return Ok(Received::Problems(p));
    }
    let (Some(upload), Some(plan)) = (upload, plan) else {
        // No file at all: check the rest of the request too, so every problem shows at once.
        let mut problems = match transfers::plan(&state.db, now, &policy, &request, false).await {
            Ok(_) => Vec::new(),
            Err(ContactError::Problems(p)) => p,
            Err(ContactError::Other(e)) => return Err(e),
        };
        if !problems.iter().any(|(f, _)| *f == "files") {
            problems.push(("files", "No file arrived. Add at least one file.".into()));
        }
        return Ok(Received::Problems(problems));
    };
    let sealed = match upload {
        Upload::Sealing(u) => u.finish().await?,
        Upload::Presealed(u) => u.finish().await?,
    };
    let created = transfers::create(
        &state.db,
        &state.keys,
        now,
        &auth.actor(),
        auth.user.id,
        &plan,
        &sealed,
    )
    .await;
    match created {
        Ok(transfer) => Ok(Received::Sent {
            transfer: Box::new(transfer),
            contact: Box::new(plan.contact),
            passphrase,
        }),
        Err(e) => {
            if let Err(d) = state.blobs.delete(&sealed.blob_key).await {
                tracing::warn!(error = %d, "could not remove the blob of a transfer that was not recorded");
            }
            Err(e)
        }
    }
}

fn problems_json(problems: Problems) -> Response {
    let message = problems
        .iter()
        .map(|(_, m)| m.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    (
        StatusCode::BAD_REQUEST,
        Json(json!({
            "error": "bad_input",
            "message": message,
            "problems": problems.iter().map(|(f, m)| json!({ "field": f, "message": m })).collect::<Vec<_>>(),
        })),
    )
        .into_response()
}

fn error_json(e: Error) -> Response {
    // The page's script reads JSON; the error layer turns `Error` into a page, so render here.
    let status = match &e {
        Error::BadInput(_) => StatusCode::BAD_REQUEST,
        Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        Error::Forbidden | Error::Csrf => StatusCode::FORBIDDEN,
        Error::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status == StatusCode::SERVICE_UNAVAILABLE {
        tracing::error!(error = ?e, "upload failed: blob storage");
        return (
            status,
            Json(json!({ "error": "storage_unavailable", "message": "The file store is full or cannot be reached right now, so nothing was saved and nothing was sent. Try again in a few minutes; if it keeps happening, tell your administrator." })),
        )
            .into_response();
    }
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(error = ?e, "upload failed");
        return (
            status,
            Json(json!({ "error": "internal", "message": "The upload failed on our side; nothing was sent. Try again, and tell your administrator if it keeps happening." })),
        )
            .into_response();
    }
    (
        status,
        Json(json!({ "error": "bad_input", "message": e.to_string() })),
    )
        .into_response()
}

pub(super) fn transfer_json(t: &Transfer, now: i64) -> serde_json::Value {
    let time = |x: Option<i64>| x.map(crate::clock::format_rfc3339);
    json!({
        "id": t.id,
        "state": t.state,
        "receipt": transfers::receipt(t, now),
        "recipient_email": t.recipient_email,
        "contact_id": t.contact_id,
        "classification": t.classification,
        "created_at": crate::clock::format_rfc3339(t.created_at),
        "released_at": time(t.released_at),
        "expires_at": crate::clock::format_rfc3339(t.expires_at),
        "download_limit": t.download_limit,
        "downloads": t.downloads,
        "wrong_passphrases": t.wrong_passphrases,
        "files": t.file_count,
        "bytes": t.plaintext_size,
        "sealed_on_server": t.sealed_on_server,
        "unverified_attested": t.unverified_attested,
        "code_requested_at": time(t.code_requested_at),
        "opened_at": time(t.opened_at),
        "unlocked_at": time(t.unlocked_at),
        "first_download_at": time(t.first_download_at),
        "last_download_at": time(t.last_download_at),
        "ended_at": time(t.ended_at),
        "shredded_at": time(t.shredded_at),
        "undo_until": t.undo_left(now).and(t.undo_until).map(crate::clock::format_rfc3339),
        "undo_seconds_left": t.undo_left(now),
        "held_at": time(t.held_at),
        "approval_reasons": t.approval_reasons,
        "decision": t.decision,
        "decided_by": t.decided_by_label,
        "decided_at": time(t.decided_at),
    })
}

// ---------------------------------------------------------------------------------------------
// Pages

struct TransferRow {
    id: i64,
    created: String,
    to: String,
    files: i64,
    state: String,
    /// Seconds left to undo, while the link mail waits.
    undo_left: Option<i64>,
}

#[derive(Template)]
#[template(path = "transfers.html")]
struct TransfersPage {
    layout: Layout,
    rows: Vec<TransferRow>,
    notice: Option<String>,
}

async fn transfers_get(
    State(state): State<AppState>,
    Staff(auth): Staff,
    csrf: CsrfToken,
) -> Result<Response> {
    let now = state.clock.now();
    let rows = transfers::list_for_sender(&state.db, auth.user.id, 200)
        .await?
        .into_iter()
        .map(|t| TransferRow {
            id: t.id,
            created: when(t.created_at),
            to: t.recipient_email.clone(),
            files: t.file_count,
            state: transfers::receipt(&t, now),
            undo_left: t.undo_left(now),
        })
        .collect();
    Ok(render(&TransfersPage {
        layout: Layout::signed_in(&auth, &csrf.0),
        rows,
        notice: None,
    }))
}

struct ContactOption {
    id: i64,
    label: String,
}

#[derive(Template)]
#[template(path = "transfer_new.html")]
struct NewPage {
    layout: Layout,
    contacts: Vec<ContactOption>,
    selected: i64,
    may_add_contacts: bool,
    attest: bool,
    classifications: Vec<&'static str>,
    default_expiry: i64,
    max_expiry: i64,
    default_limit: i64,
    max_size: i64,
    max_size_text: String,
    sender_name: String,
}

#[derive(Deserialize)]
struct NewQuery {
    contact: Option<i64>,
}

async fn new_get(
    State(state): State<AppState>,
    Staff(auth): Staff,
    csrf: CsrfToken,
    Query(q): Query<NewQuery>,
) -> Result<Response> {
    let now = state.clock.now();
    let policy = policy::load(&state.db).await?;
    let attest = policy.unverified_contacts == Unverified::Attest;
    let mut options = Vec::new();
    for c in contacts::list(&state.db, false).await? {
        let status = c.status(now);
        if status != contacts::Status::Verified && !attest {
            continue;
        }
        if !policy.approval_outside_domains
            && !contacts::domain_allowed(&state.db, &c.email).await?
        {
            continue;
        }
        options.push(ContactOption {
            id: c.id,
            label: format!(
                "{} ({}, {}) {}: {}",
                c.name,
                c.job_title,
                c.organisation,
                c.email,
                status.label()
            ),
        });
    }
    Ok(render(&NewPage {
        layout: Layout::signed_in(&auth, &csrf.0),
        contacts: options,
        selected: q.contact.unwrap_or(0),
        may_add_contacts: policy.staff_may_add_contacts,
        attest,
        classifications: transfers::CLASSIFICATIONS.to_vec(),
        default_expiry: policy.default_expiry_days,
        max_expiry: policy.max_expiry_days,
        default_limit: policy.default_download_limit,
        max_size: policy.max_size_bytes,
        max_size_text: format_size(policy.max_size_bytes),
        sender_name: auth.user.name.clone(),
    }))
}

fn sent_json(
    transfer: &Transfer,
    contact: &Contact,
    passphrase: Option<SecretString>,
    now: i64,
) -> Response {
    let mut body = transfer_json(transfer, now);
    body["recipient"] =
        json!({ "name": contact.name, "phone": contact.phone, "email": contact.email });
    if let Some(p) = passphrase {
        body["passphrase"] = json!(p.expose_secret());
    }
    (StatusCode::CREATED, Json(body)).into_response()
}

/// The send page's upload (XHR): answers JSON, including the passphrase, once.
async fn new_post(
    State(state): State<AppState>,
    Staff(auth): Staff,
    _csrf: CsrfHeader,
    multipart: Multipart,
) -> Response {
    match receive(&state, &auth, multipart).await {
        Ok(Received::Sent {
            transfer,
            contact,
            passphrase,
        }) => sent_json(&transfer, &contact, passphrase, state.clock.now()),
        Ok(Received::Problems(p)) => problems_json(p),
        Err(e) => error_json(e),
    }
}

#[derive(Template)]
#[template(path = "transfer.html")]
struct TransferPage {
    layout: Layout,
    id: i64,
    state: String,
    to_name: String,
    to_email: String,
    purpose: String,
    classification: String,
    created: String,
    released: Option<String>,
    expires: String,
    downloads: i64,
    limit: i64,
    attested: bool,
    attestation: String,
    files: Vec<(String, String)>,
    file_note: String,
    events: Vec<String>,
    sealed: bool,
    held: Option<String>,
    decision: Option<String>,
    undo_left: Option<i64>,
    undo_at: String,
    may_recall: bool,
    kinds: Vec<(&'static str, &'static str)>,
    report_kind: String,
    report_description: String,
    report_known_hours_ago: String,
    incidents: Vec<i64>,
    errors: FormErrors,
    notice: Option<String>,
}

async fn transfer_page(
    state: &AppState,
    auth: &Authenticated,
    csrf: &str,
    t: &Transfer,
    errors: FormErrors,
    notice: Option<String>,
) -> Result<Response> {
    transfer_page_at(state, auth, csrf, t, state.clock.now(), errors, notice).await
}

/// The transfer page as at `now` (a handler that just acted shows the time it acted at, so
/// its notice and the countdown agree).
async fn transfer_page_at(
    state: &AppState,
    auth: &Authenticated,
    csrf: &str,
    t: &Transfer,
    now: i64,
    errors: FormErrors,
    notice: Option<String>,
) -> Result<Response> {
    let details = transfers::details(&state.db, &state.keys, t).await?;
    let contact = contacts::get(&state.db, t.contact_id).await?;
    let files = transfers::files(&state.db, &state.keys, t)
        .await?
        .into_iter()
        .map(|f| (f.name, format_size(f.size)))
        .collect();
    let mut events = Vec::new();
    let mut push = |what: &str, at: Option<i64>| {
        if let Some(at) = at {
            events.push(format!("{what}: {}", when(at)));
        }
    };
    if t.undo_left(now).is_none() {
        push(
            "Link emailed",
            t.released_at.map(|r| t.undo_until.unwrap_or(r)),
        );
    }
    push("Asked for a code", t.code_requested_at);
    push("Entered the code", t.opened_at);
    push("Entered the passphrase", t.unlocked_at);
    push("First download", t.first_download_at);
    push("Latest download", t.last_download_at);
    for d in transfers::download::list(&state.db, t.id).await? {
        events.push(d);
    }
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let page = TransferPage {
        layout: Layout::signed_in(auth, csrf),
        id: t.id,
        state: transfers::receipt(t, now),
        to_name: contact
            .map(|c| c.name)
            .unwrap_or_else(|| t.recipient_email.clone()),
        to_email: t.recipient_email.clone(),
        purpose: details.purpose,
        classification: t.classification.clone(),
        created: when(t.created_at),
        released: t
            .released_at
            .filter(|_| t.undo_left(now).is_none())
            .map(|r| when(t.undo_until.unwrap_or(r))),
        expires: when(t.expires_at),
        downloads: t.downloads,
        limit: t.download_limit,
        attested: t.unverified_attested,
        attestation: details.attestation.unwrap_or_default(),
        files,
        file_note: if t.sealed_on_server {
            String::new()
        } else {
            "Sealed on the sender's computer: the server never saw the file names.".into()
        },
        events,
        sealed: t.state == TState::Sealed,
        held: (t.state == TState::Held)
            .then(|| transfers::approval::reasons_text(&t.approval_reasons)),
        decision: transfers::approval::decision_text(&state.db, &state.keys, t).await?,
        undo_left: t.undo_left(now),
        undo_at: t
            .undo_until
            .map(transfers::format_clock)
            .unwrap_or_default(),
        may_recall: transfers::RECALLABLE.contains(&t.state),
        kinds: super::incidents::kind_options(),
        report_kind: String::new(),
        report_description: String::new(),
        report_known_hours_ago: String::new(),
        incidents: crate::incidents::for_transfer(&state.db, t.id)
            .await?
            .into_iter()
            .filter(|i| i.reported_by == auth.user.id)
            .map(|i| i.id)
            .collect(),
        errors,
        notice,
    };
    Ok((status, render(&page)).into_response())
}

async fn transfer_get(
    State(state): State<AppState>,
    Staff(auth): Staff,
    csrf: CsrfToken,
    Path(id): Path<i64>,
) -> Result<Response> {
    let t = transfers::get_for_sender(&state.db, id, auth.user.id).await?;
    transfer_page(&state, &auth, &csrf.0, &t, FormErrors::default(), None).await
}

async fn release_post(
    State(state): State<AppState>,
    Staff(auth): Staff,
    Path(id): Path<i64>,
    form: Form,
) -> Result<Response> {
    let t = transfers::get_for_sender(&state.db, id, auth.user.id).await?;
    if form.get("will_phone") != "yes" {
        let mut errors = FormErrors::default();
        errors.add(
            "will_phone",
            "Confirm that you will phone the recipient with the passphrase.",
        );
        return transfer_page(&state, &auth, &form.csrf, &t, errors, None).await;
    }
    // One time for the release, its notice and the countdown, so that they agree.
    let now = state.clock.now();
    let t = transfers::release(
        &state.db,
        now,
        &auth.actor(),
        &state.settings.public_url,
        &t,
        &auth.user.name,
    )
    .await?;
    transfer_page_at(
        &state,
        &auth,
        &form.csrf,
        &t,
        now,
        FormErrors::default(),
        Some(match t.undo_left(now) {
            _ if t.state == TState::Held => {
                "School policy asks for an approver to check this transfer first. The approvers have been emailed; you will be told by email when one decides. Nothing has been sent to the recipient yet."
                    .into()
            }
            Some(left) => format!(
                "The link will be emailed to the recipient in {left} seconds. Until then you can undo. Phone them with the passphrase."
            ),
            None => {
                "The link has been emailed to the recipient. Now phone them with the passphrase."
                    .into()
            }
        }),
    )
    .await
}

async fn undo_post(
    State(state): State<AppState>,
    Staff(auth): Staff,
    Path(id): Path<i64>,
    form: Form,
) -> Result<Response> {
    let t = transfers::get_for_sender(&state.db, id, auth.user.id).await?;
    match transfers::undo_release(&state.db, state.clock.now(), &auth.actor(), &t).await {
        Ok(t) => {
            transfer_page(
                &state,
                &auth,
                &form.csrf,
                &t,
                FormErrors::default(),
                Some(
                    "Undone: nothing was emailed. The transfer is not sent; send it again below, or recall it."
                        .into(),
                ),
            )
            .await
        }
        Err(Error::BadInput(message)) => {
            let t = transfers::get_for_sender(&state.db, id, auth.user.id).await?;
            let mut errors = FormErrors::default();
            errors.add("recall-h", message);
            transfer_page(&state, &auth, &form.csrf, &t, errors, None).await
        }
        Err(e) => Err(e),
    }
}

async fn recall_post(
    State(state): State<AppState>,
    Staff(auth): Staff,
    Path(id): Path<i64>,
    form: Form,
) -> Result<Response> {
    let t = transfers::get_for_sender(&state.db, id, auth.user.id).await?;
    transfers::recall(
        &state.db,
        &state.blobs,
        state.clock.now(),
        &auth.actor(),
        &t,
    )
    .await?;
    let t = transfers::get_for_sender(&state.db, id, auth.user.id).await?;
    transfer_page(
        &state,
        &auth,
        &form.csrf,
        &t,
        FormErrors::default(),
        Some("Recalled: the files are destroyed and the link no longer works.".into()),
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// API

async fn api_transfers_get(
    State(state): State<AppState>,
    Staff(auth): Staff,
) -> Result<Json<serde_json::Value>> {
    let now = state.clock.now();
    let list = transfers::list_for_sender(&state.db, auth.user.id, 500).await?;
    Ok(Json(json!({
        "transfers": list.iter().map(|t| transfer_json(t, now)).collect::<Vec<_>>()
    })))
}

async fn api_transfer_get(
    State(state): State<AppState>,
    Staff(auth): Staff,
    Path(id): Path<i64>,
) -> Result<Json<serde_json::Value>> {
    let t = transfers::get_for_sender(&state.db, id, auth.user.id).await?;
    let mut body = transfer_json(&t, state.clock.now());
    body["files_list"] = json!(transfers::files(&state.db, &state.keys, &t)
        .await?
        .into_iter()
        .map(|f| json!({ "name": f.name, "size": f.size }))
        .collect::<Vec<_>>());
    body["purpose"] = json!(
        transfers::details(&state.db, &state.keys, &t)
            .await?
            .purpose
    );
    Ok(Json(body))
}

async fn api_transfers_post(
    State(state): State<AppState>,
    Staff(auth): Staff,
    multipart: Multipart,
) -> Result<Response> {
    if auth.token.is_none() {
        // A browser session must use the page (it carries the CSRF token).
        return Err(Error::Forbidden);
    }
    match receive(&state, &auth, multipart).await? {
        Received::Sent {
            transfer,
            contact,
            passphrase,
        } => Ok(sent_json(
            &transfer,
            &contact,
            passphrase,
            state.clock.now(),
        )),
        Received::Problems(p) => Ok(problems_json(p)),
    }
}

#[derive(Deserialize)]
struct ReleaseBody {
    #[serde(default)]
    will_phone: bool,
}

async fn api_release_post(
    State(state): State<AppState>,
    Staff(auth): Staff,
    Path(id): Path<i64>,
    JsonBody(body): JsonBody<ReleaseBody>,
) -> Result<Json<serde_json::Value>> {
    let t = transfers::get_for_sender(&state.db, id, auth.user.id).await?;
    if !body.will_phone {
        return Err(Error::BadInput(
            "Set \"will_phone\": true to confirm you will phone the recipient with the passphrase."
                .into(),
        ));
    }
    let t = transfers::release(
        &state.db,
        state.clock.now(),
        &auth.actor(),
        &state.settings.public_url,
        &t,
        &auth.user.name,
    )
    .await?;
    Ok(Json(transfer_json(&t, state.clock.now())))
}

async fn api_undo_post(
    State(state): State<AppState>,
    Staff(auth): Staff,
    Path(id): Path<i64>,
) -> Result<Json<serde_json::Value>> {
    let t = transfers::get_for_sender(&state.db, id, auth.user.id).await?;
    let t = transfers::undo_release(&state.db, state.clock.now(), &auth.actor(), &t).await?;
    Ok(Json(transfer_json(&t, state.clock.now())))
}

async fn api_recall_post(
    State(state): State<AppState>,
    Staff(auth): Staff,
    Path(id): Path<i64>,
) -> Result<Json<serde_json::Value>> {
    let t = transfers::get_for_sender(&state.db, id, auth.user.id).await?;
    transfers::recall(
        &state.db,
        &state.blobs,
        state.clock.now(),
        &auth.actor(),
        &t,
    )
    .await?;
    let t = transfers::get_for_sender(&state.db, id, auth.user.id).await?;
    Ok(Json(transfer_json(&t, state.clock.now())))
}
