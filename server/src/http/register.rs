//! The equipment and disposal register's pages (technicians and admins): assets, CSV import
//! and export, wipe certificates, destructions, disposal records, the disposal report, and
//! the technician's signing keys on the account page. The JSON API is in `register_api.rs`.

use super::extract::{Admin, Authenticated};
use super::form::{CsrfToken, Form, UploadForm};
use super::templates::{render, when, FormErrors, Layout};
use crate::accounts::User;
use crate::register::assets::{
    self, Asset, AssetInput, AssetKind, AssetStatus, ImportOutcome, ImportProblem,
};
use crate::register::certificates::{self, DestructionInput, StoredCertificate};
use crate::register::disposals::{self, Disposal, DisposalInput, Method};
use crate::register::{self, report, FieldError};
use crate::{AppState, Error, Result};
use askama::Template;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

/// Body limit of the upload forms: the 10 MiB destruction certificate plus the form around it.
pub(super) const UPLOAD_BODY_LIMIT: usize = certificates::MAX_DESTRUCTION_FILE_BYTES + 64 * 1024;

pub(super) fn router() -> Router<AppState> {
    let uploads = Router::new()
        .route("/register/import", get(import_get).post(import_post))
        .route(
            "/register/certificates",
            get(certificates_get).post(certificates_post),
        )
        .route(
            "/register/media/{id}/destruction",
            get(destruction_get).post(destruction_post),
        )
        .layer(DefaultBodyLimit::max(UPLOAD_BODY_LIMIT));
    Router::new()
        .merge(uploads)
        .route("/register", get(assets_get))
        .route("/register/export.csv", get(export_get))
        .route("/register/assets/new", get(asset_new_get))
        .route("/register/assets", post(assets_post))
        .route("/register/assets/{id}", get(asset_get).post(asset_post))
        .route("/register/assets/{id}/edit", get(asset_edit_get))
        .route(
            "/register/assets/{id}/disposals",
            post(asset_disposals_post),
        )
        .route("/register/certificates/{id}", get(certificate_get))
        .route(
            "/register/certificates/{id}/assign",
            post(certificate_assign_post),
        )
        .route(
            "/register/certificates/{id}/certificate.json",
            get(certificate_json_get),
        )
        .route(
            "/register/certificates/{id}/certificate.pdf",
            get(certificate_pdf_get),
        )
        .route(
            "/register/destructions/{id}/file",
            get(destruction_file_get),
        )
        .route("/register/disposals", get(disposals_get))
        .route(
            "/register/disposals/{id}",
            get(disposal_get).post(disposal_post),
        )
        .route(
            "/register/disposals/{id}/authorise",
            post(disposal_authorise_post),
        )
        .route(
            "/register/disposals/{id}/complete",
            post(disposal_complete_post),
        )
        .route(
            "/register/disposals/{id}/correct",
            post(disposal_correct_post),
        )
        .route(
            "/register/disposals/{id}/withdraw",
            post(disposal_withdraw_post),
        )
        .route("/register/report", get(report_get))
        .route("/register/report.csv", get(report_csv_get))
        .route("/register/report.pdf", get(report_pdf_get))
        .route("/account/signing-keys", post(signing_keys_post))
        .route(
            "/account/signing-keys/{id}/revoke",
            post(signing_key_revoke_post),
        )
}

/// A caller who may use the register: a technician or an admin.
#[derive(Clone, Debug)]
pub struct RegisterUser(pub Authenticated);

impl FromRequestParts<AppState> for RegisterUser {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let auth = Authenticated::from_request_parts(parts, state).await?;
        if auth.has(crate::accounts::Role::Technician) || auth.has(crate::accounts::Role::Admin) {
            Ok(Self(auth))
        } else {
            Err(Error::Forbidden)
        }
    }
}

impl std::ops::Deref for RegisterUser {
    type Target = Authenticated;
    fn deref(&self) -> &Authenticated {
        &self.0
    }
}

pub(super) fn form_errors(errors: Vec<FieldError>) -> FormErrors {
    let mut out = FormErrors::default();
    for e in errors {
        out.add(e.field, e.message);
    }
    out
}

fn attachment(content_type: &str, file_name: &str, body: Vec<u8>) -> Response {
    let safe: String = file_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    (
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{safe}\""),
            ),
        ],
        body,
    )
        .into_response()
}

// ---------- assets ----------

pub(super) struct Choice {
    pub value: &'static str,
    pub label: &'static str,
}

fn kind_choices() -> Vec<Choice> {
    AssetKind::ALL
        .iter()
        .map(|k| Choice {
            value: k.as_str(),
            label: k.label(),
        })
        .collect()
}

fn status_choices() -> Vec<Choice> {
    AssetStatus::ALL
        .iter()
        .map(|k| Choice {
            value: k.as_str(),
            label: k.label(),
        })
        .collect()
}

pub(super) struct AssetRow {
    pub id: i64,
    pub tag: String,
    pub kind: &'static str,
    pub make_model: String,
    pub serial: String,
    pub media: String,
    pub location: String,
    pub assigned_to: String,
    pub personal_data: &'static str,
    pub status: &'static str,
}

fn asset_row(a: &Asset) -> AssetRow {
    AssetRow {
        id: a.id,
        tag: a.tag.clone(),
        kind: a.kind.label(),
        make_model: format!("{} {}", a.make, a.model).trim().to_string(),
        serial: a.serial.clone(),
        media: a
            .media
            .iter()
            .map(|m| m.serial.clone())
            .collect::<Vec<_>>()
            .join(", "),
        location: a.location.clone(),
        assigned_to: a.assigned_to.clone(),
        personal_data: if a.personal_data { "Yes" } else { "No" },
        status: a.status.label(),
    }
}

#[derive(Template)]
#[template(path = "register_assets.html")]
pub(super) struct AssetsPage {
    pub layout: Layout,
    pub rows: Vec<AssetRow>,
    pub filter: assets::Filter,
    pub kinds: Vec<Choice>,
    pub statuses: Vec<Choice>,
    pub query: String,
    pub unassigned: usize,
    pub open_disposals: usize,
}

/// Most assets one list page shows.
const LIST_LIMIT: i64 = 500;

async fn assets_get(
    State(state): State<AppState>,
    RegisterUser(auth): RegisterUser,
    csrf: CsrfToken,
    Query(filter): Query<assets::Filter>,
) -> Result<Response> {
    let rows = assets::search(&state.db, &filter, LIST_LIMIT).await?;
    let query = serde_urlencoded::to_string([
        ("q", &filter.q),
        ("kind", &filter.kind),
        ("status", &filter.status),
        ("personal_data", &filter.personal_data),
    ])
    .unwrap_or_default();
    Ok(render(&AssetsPage {
        layout: Layout::signed_in(&auth, &csrf.0),
        rows: rows.iter().map(asset_row).collect(),
        filter,
        kinds: kind_choices(),
        statuses: status_choices(),
        query,
        unassigned: certificates::list(&state.db, true, 1000).await?.len(),
        open_disposals: disposals::list(&state.db, "draft", 1000).await?.len(),
    }))
}

async fn export_get(
    State(state): State<AppState>,
    RegisterUser(auth): RegisterUser,
    Query(filter): Query<assets::Filter>,
) -> Result<Response> {
    let csv = assets::export_csv(&state.db, &filter).await?;
    crate::audit::record(
        &state.db,
        state.clock.now(),
        &auth.actor(),
        "assets_exported",
        "asset register",
        serde_json::json!({ "q": filter.q, "kind": filter.kind, "status": filter.status }),
    )
    .await?;
    Ok(attachment(
        "text/csv; charset=utf-8",
        "safehand-assets.csv",
        csv.into_bytes(),
    ))
}

#[derive(Template)]
#[template(path = "register_asset_form.html")]
pub(super) struct AssetFormPage {
    pub layout: Layout,
    pub title: String,
    pub action: String,
    pub input: AssetInput,
    pub kinds: Vec<Choice>,
    pub statuses: Vec<Choice>,
    pub errors: FormErrors,
    pub cancel: String,
}

fn asset_form(
    auth: &Authenticated,
    csrf: &str,
    title: String,
    action: String,
    cancel: String,
    input: AssetInput,
    errors: FormErrors,
) -> Response {
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    (
        status,
        render(&AssetFormPage {
            layout: Layout::signed_in(auth, csrf),
            title,
            action,
            input,
            kinds: kind_choices(),
            statuses: status_choices()
                .into_iter()
                .filter(|c| c.value != AssetStatus::Disposed.as_str())
                .collect(),
            errors,
            cancel,
        }),
    )
        .into_response()
}

fn input_from(form: &Form) -> AssetInput {
    AssetInput {
        tag: form.get("tag").into(),
        kind: form.get("kind").into(),
        make: form.get("make").into(),
        model: form.get("model").into(),
        serial: form.get("serial").into(),
        location: form.get("location").into(),
        assigned_to: form.get("assigned_to").into(),
        purchase_date: form.get("purchase_date").into(),
        personal_data: form.get("personal_data").into(),
        status: form.get("status").into(),
        storage_media: form.get("storage_media").into(),
        notes: form.get("notes").into(),
    }
}

async fn asset_new_get(RegisterUser(auth): RegisterUser, csrf: CsrfToken) -> Result<Response> {
    let input = AssetInput {
        status: AssetStatus::InUse.as_str().into(),
        ..AssetInput::default()
    };
    Ok(asset_form(
        &auth,
        &csrf.0,
        "Add an asset".into(),
        "/register/assets".into(),
        "/register".into(),
        input,
        FormErrors::default(),
    ))
}

async fn assets_post(
    State(state): State<AppState>,
    RegisterUser(auth): RegisterUser,
    form: Form,
) -> Result<Response> {
    let input = input_from(&form);
    let checked = match input.check() {
        Ok(c) => c,
        Err(e) => {
            return Ok(asset_form(
                &auth,
                &form.csrf,
                "Add an asset".into(),
                "/register/assets".into(),
                "/register".into(),
                input,
                form_errors(e),
            ))
        }
    };
    let conflicts = assets::conflicts(&state.db, &checked, None).await?;
    if !conflicts.is_empty() {
        return Ok(asset_form(
            &auth,
            &form.csrf,
            "Add an asset".into(),
            "/register/assets".into(),
            "/register".into(),
            input,
            form_errors(conflicts),
        ));
    }
    let id = assets::create(&state.db, state.clock.now(), &auth.actor(), &checked).await?;
    Ok(Redirect::to(&format!("/register/assets/{id}")).into_response())
}

async fn asset_edit_get(
    State(state): State<AppState>,
    RegisterUser(auth): RegisterUser,
    csrf: CsrfToken,
    Path(id): Path<i64>,
) -> Result<Response> {
    let asset = assets::by_id(&state.db, id).await?.ok_or(Error::NotFound)?;
    if asset.status == AssetStatus::Disposed {
        return Err(Error::BadInput(format!(
            "{} is disposed: its record is read-only.",
            asset.tag
        )));
    }
    Ok(asset_form(
        &auth,
        &csrf.0,
        format!("Edit {}", asset.tag),
        format!("/register/assets/{id}"),
        format!("/register/assets/{id}"),
        asset.to_input(),
        FormErrors::default(),
    ))
}

async fn asset_post(
    State(state): State<AppState>,
    RegisterUser(auth): RegisterUser,
    Path(id): Path<i64>,
    form: Form,
) -> Result<Response> {
    let asset = assets::by_id(&state.db, id).await?.ok_or(Error::NotFound)?;
    let input = input_from(&form);
    let title = format!("Edit {}", asset.tag);
    let (action, cancel) = (
        format!("/register/assets/{id}"),
        format!("/register/assets/{id}"),
    );
    let checked = match input.check() {
        Ok(c) => c,
        Err(e) => {
            return Ok(asset_form(
                &auth,
                &form.csrf,
                title,
                action,
                cancel,
                input,
                form_errors(e),
            ))
        }
    };
    let conflicts = assets::conflicts(&state.db, &checked, Some(id)).await?;
    if !conflicts.is_empty() {
        return Ok(asset_form(
            &auth,
            &form.csrf,
            title,
            action,
            cancel,
            input,
            form_errors(conflicts),
        ));
    }
    match assets::update(&state.db, state.clock.now(), &auth.actor(), id, &checked).await {
        Ok(()) => Ok(Redirect::to(&format!("/register/assets/{id}")).into_response()),
        Err(Error::BadInput(m)) => {
            let mut errors = FormErrors::default();
            errors.add("storage_media", m);
            Ok(asset_form(
                &auth, &form.csrf, title, action, cancel, input, errors,
            ))
        }
        Err(e) => Err(e),
    }
}

pub(super) struct CertRow {
    pub id: i64,
    pub certificate_id: String,
    pub result: String,
    pub evidence: bool,
    pub device: String,
    pub wiped_at: String,
    pub operator: String,
    pub assigned_to: String,
}

async fn cert_row(state: &AppState, c: &StoredCertificate) -> Result<CertRow> {
    let assigned_to = match c.medium_id {
        Some(id) => match assets::medium(&state.db, id).await? {
            Some(m) => {
                let tag = assets::by_id(&state.db, m.asset_id)
                    .await?
                    .map(|a| a.tag)
                    .unwrap_or_default();
                format!("{tag}: {}", m.serial)
            }
            None => String::new(),
        },
        None => String::new(),
    };
    Ok(CertRow {
        id: c.id,
        certificate_id: c.certificate_id.clone(),
        result: c.result.clone(),
        evidence: c.is_erased() && c.medium_id.is_some(),
        device: format!(
            "{} {} ({})",
            c.device_path,
            c.device_model,
            if c.device_serial.is_empty() {
                "no serial"
            } else {
                &c.device_serial
            }
        ),
        wiped_at: c.wiped_at.clone(),
        operator: c.operator.clone(),
        assigned_to,
    })
}

pub(super) struct MediumRow {
    pub id: i64,
    pub serial: String,
    pub description: String,
    pub evidence: Option<String>,
    pub certificates: Vec<CertRow>,
    pub destructions: Vec<DestructionRow>,
}

pub(super) struct DestructionRow {
    pub id: i64,
    pub contractor: String,
    pub reference: String,
    pub destroyed_on: String,
    pub file_name: String,
}

pub(super) struct DisposalRow {
    pub id: i64,
    pub asset_id: i64,
    pub asset_tag: String,
    pub state: &'static str,
    pub date: String,
    pub method: &'static str,
    pub receiver: String,
    pub corrects: Option<i64>,
}

fn disposal_row(d: &Disposal, tag: &str) -> DisposalRow {
    DisposalRow {
        id: d.id,
        asset_id: d.asset_id,
        asset_tag: tag.to_string(),
        state: if d.is_completed() {
            if d.corrected_by.is_some() {
                "Completed (corrected)"
            } else {
                "Completed"
            }
        } else if d.authorised_by.is_some() {
            "Authorised, not completed"
        } else {
            "Waiting for authorisation"
        },
        date: d.disposal_date.clone().unwrap_or_default(),
        method: d.method_label(),
        receiver: d.receiver_name.clone(),
        corrects: d.corrects_id,
    }
}

#[derive(Template)]
#[template(path = "register_asset.html")]
pub(super) struct AssetPage {
    pub layout: Layout,
    pub asset: Asset,
    pub kind: &'static str,
    pub status: &'static str,
    pub media: Vec<MediumRow>,
    pub disposals: Vec<DisposalRow>,
    pub can_edit: bool,
    pub can_start_disposal: bool,
    pub created: String,
    pub updated: String,
}

async fn asset_get(
    State(state): State<AppState>,
    RegisterUser(auth): RegisterUser,
    csrf: CsrfToken,
    Path(id): Path<i64>,
) -> Result<Response> {
    let asset = assets::by_id(&state.db, id).await?.ok_or(Error::NotFound)?;
    let mut media = Vec::new();
    for m in &asset.media {
        let mut certs = Vec::new();
        for c in certificates::for_medium(&state.db, m.id).await? {
            certs.push(cert_row(&state, &c).await?);
        }
        media.push(MediumRow {
            id: m.id,
            serial: m.serial.clone(),
            description: m.description.clone(),
            evidence: certificates::evidence_for(&state.db, m.id)
                .await?
                .map(|e| e.describe()),
            certificates: certs,
            destructions: certificates::destructions_for(&state.db, m.id)
                .await?
                .into_iter()
                .map(|d| DestructionRow {
                    id: d.id,
                    contractor: d.contractor,
                    reference: d.reference,
                    destroyed_on: d.destroyed_on,
                    file_name: d.file_name,
                })
                .collect(),
        });
    }
    let records = disposals::for_asset(&state.db, id).await?;
    let open = records.iter().any(|d| !d.is_completed());
    Ok(render(&AssetPage {
        layout: Layout::signed_in(&auth, &csrf.0),
        kind: asset.kind.label(),
        status: asset.status.label(),
        media,
        disposals: records
            .iter()
            .map(|d| disposal_row(d, &asset.tag))
            .collect(),
        can_edit: asset.status != AssetStatus::Disposed,
        can_start_disposal: asset.status != AssetStatus::Disposed && !open,
        created: when(asset.created_at),
        updated: when(asset.updated_at),
        asset,
    }))
}

// ---------- import ----------

#[derive(Template)]
#[template(path = "register_import.html")]
pub(super) struct ImportPage {
    pub layout: Layout,
    pub problems: Vec<ImportProblem>,
    pub notice: Option<String>,
    pub errors: FormErrors,
    pub columns: Vec<&'static str>,
}

async fn import_get(RegisterUser(auth): RegisterUser, csrf: CsrfToken) -> Result<Response> {
    Ok(render(&ImportPage {
        layout: Layout::signed_in(&auth, &csrf.0),
        problems: Vec::new(),
        notice: None,
        errors: FormErrors::default(),
        columns: assets::CSV_COLUMNS.to_vec(),
    }))
}

async fn import_post(
    State(state): State<AppState>,
    RegisterUser(auth): RegisterUser,
    mut form: UploadForm,
) -> Result<Response> {
    let file = form.take_file("file");
    let page =
        |problems: Vec<ImportProblem>, notice: Option<String>, errors: FormErrors| ImportPage {
            layout: Layout::signed_in(&auth, &form.csrf),
            problems,
            notice,
            errors,
            columns: assets::CSV_COLUMNS.to_vec(),
        };
    let Some(file) = file else {
        let mut errors = FormErrors::default();
        errors.add("file", "Choose the CSV file to import.");
        return Ok((
            StatusCode::BAD_REQUEST,
            render(&page(Vec::new(), None, errors)),
        )
            .into_response());
    };
    match assets::import_csv(&state.db, state.clock.now(), &auth.actor(), &file.bytes).await? {
        ImportOutcome::Imported(n) => Ok(render(&page(
            Vec::new(),
            Some(format!("{n} assets imported from {}.", file.file_name)),
            FormErrors::default(),
        ))),
        ImportOutcome::Refused(problems) => {
            let mut errors = FormErrors::default();
            errors.add("file", format!("Nothing was imported: {} problem(s) in the file. Correct them and import the whole file again.", problems.len()));
            Ok((
                StatusCode::BAD_REQUEST,
                render(&page(problems, None, errors)),
            )
                .into_response())
        }
    }
}

// ---------- certificates ----------

#[derive(Template)]
#[template(path = "register_certificates.html")]
pub(super) struct CertificatesPage {
    pub layout: Layout,
    pub unassigned: Vec<CertRow>,
    pub recent: Vec<CertRow>,
    pub errors: FormErrors,
}

async fn certificates_page(
    state: &AppState,
    auth: &Authenticated,
    csrf: &str,
    errors: FormErrors,
) -> Result<Response> {
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let mut unassigned = Vec::new();
    for c in certificates::list(&state.db, true, 200).await? {
        unassigned.push(cert_row(state, &c).await?);
    }
    let mut recent = Vec::new();
    for c in certificates::list(&state.db, false, 100).await? {
        recent.push(cert_row(state, &c).await?);
    }
    Ok((
        status,
        render(&CertificatesPage {
            layout: Layout::signed_in(auth, csrf),
            unassigned,
            recent,
            errors,
        }),
    )
        .into_response())
}

async fn certificates_get(
    State(state): State<AppState>,
    RegisterUser(auth): RegisterUser,
    csrf: CsrfToken,
) -> Result<Response> {
    certificates_page(&state, &auth, &csrf.0, FormErrors::default()).await
}

async fn certificates_post(
    State(state): State<AppState>,
    RegisterUser(auth): RegisterUser,
    mut form: UploadForm,
) -> Result<Response> {
    let Some(file) = form.take_file("certificate") else {
        let mut errors = FormErrors::default();
        errors.add(
            "certificate",
            "Choose the certificate file (the .json that safehand wipe wrote).",
        );
        return certificates_page(&state, &auth, &form.csrf, errors).await;
    };
    match certificates::upload(
        &state.db,
        state.clock.now(),
        &auth.actor(),
        &auth.user,
        &file.bytes,
        None,
    )
    .await
    {
        Ok(up) => Ok(Redirect::to(&format!(
            "/register/certificates/{}?uploaded={}",
            up.certificate.id,
            if up.already_uploaded { "again" } else { "1" }
        ))
        .into_response()),
        Err(Error::BadInput(m)) => {
            let mut errors = FormErrors::default();
            errors.add("certificate", m);
            certificates_page(&state, &auth, &form.csrf, errors).await
        }
        Err(e) => Err(e),
    }
}

pub(super) struct MediumChoice {
    pub id: i64,
    pub label: String,
    pub suggested: bool,
}

#[derive(Template)]
#[template(path = "register_certificate.html")]
pub(super) struct CertificatePage {
    pub layout: Layout,
    pub cert: CertRow,
    pub verifies: bool,
    pub check_detail: String,
    pub signer: String,
    pub nist: String,
    pub method: String,
    pub result_detail: String,
    pub asset_tag: String,
    pub host: String,
    pub size: String,
    pub warnings: Vec<String>,
    pub uploaded_by: String,
    pub uploaded_at: String,
    pub sha256: String,
    pub notice: Option<String>,
    pub choices: Vec<MediumChoice>,
    pub can_assign: bool,
    pub errors: FormErrors,
}

async fn certificate_page(
    state: &AppState,
    auth: &Authenticated,
    csrf: &str,
    id: i64,
    notice: Option<String>,
    errors: FormErrors,
) -> Result<Response> {
    let cert = certificates::by_id(&state.db, id)
        .await?
        .ok_or(Error::NotFound)?;
    let check = certificates::check(&state.db, &cert).await?;
    let facts = check.certificate.clone();
    let mut choices = Vec::new();
    let suggested = assets::by_tag(&state.db, &cert.asset_tag)
        .await?
        .map(|a| a.id);
    for a in assets::search(&state.db, &assets::Filter::default(), 100_000).await? {
        if a.status == AssetStatus::Disposed {
            continue;
        }
        for m in &a.media {
            choices.push(MediumChoice {
                id: m.id,
                label: format!("{} ({}): {}", a.tag, a.kind.label(), m.display()),
                suggested: Some(a.id) == suggested,
            });
        }
    }
    choices.sort_by_key(|c| !c.suggested);
    let frozen = certificates::is_frozen(&state.db, cert.id).await?;
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok((
        status,
        render(&CertificatePage {
            layout: Layout::signed_in(auth, csrf),
            verifies: check.verifies,
            check_detail: check.detail,
            signer: cert.signer_key.clone(),
            nist: facts
                .as_ref()
                .map(|c| format!("{} ({})", c.nist.category, c.nist.reason))
                .unwrap_or_default(),
            method: facts
                .as_ref()
                .map(|c| {
                    format!(
                        "{}: {}; verify {}",
                        c.method.name,
                        c.method.pass_list.join(", "),
                        c.verification.mode
                    )
                })
                .unwrap_or_default(),
            result_detail: facts
                .as_ref()
                .map(|c| c.result_detail.clone())
                .unwrap_or_default(),
            asset_tag: cert.asset_tag.clone(),
            host: facts.as_ref().map(|c| c.host.clone()).unwrap_or_default(),
            size: facts
                .as_ref()
                .map(|c| format!("{} bytes", c.device.size_bytes))
                .unwrap_or_default(),
            warnings: facts
                .as_ref()
                .map(|c| c.warnings.clone())
                .unwrap_or_default(),
            uploaded_by: register::user_label(&state.db, Some(cert.uploaded_by)).await?,
            uploaded_at: when(cert.uploaded_at),
            sha256: cert.sha256.clone(),
            notice,
            choices,
            can_assign: !frozen,
            errors,
            cert: cert_row(state, &cert).await?,
        }),
    )
        .into_response())
}

#[derive(serde::Deserialize)]
struct UploadedQuery {
    #[serde(default)]
    uploaded: String,
}

async fn certificate_get(
    State(state): State<AppState>,
    RegisterUser(auth): RegisterUser,
    csrf: CsrfToken,
    Path(id): Path<i64>,
    Query(q): Query<UploadedQuery>,
) -> Result<Response> {
    let notice = match q.uploaded.as_str() {
        "1" | "again" => {
            let cert = certificates::by_id(&state.db, id)
                .await?
                .ok_or(Error::NotFound)?;
            let prefix = if q.uploaded == "again" {
                "This certificate was already in the register. "
            } else {
                "Certificate uploaded. "
            };
            Some(match (cert.medium_id, cert.is_erased()) {
                (Some(_), true) => format!("{prefix}It verifies, says ERASED and is evidence for the storage medium below."),
                (Some(_), false) => format!("{prefix}It verifies but says {}: it is stored, but it is not evidence of erasure.", cert.result),
                (None, _) => format!("{prefix}Its device serial matches no storage medium in the register: choose which asset it belongs to below."),
            })
        }
        _ => None,
    };
    certificate_page(&state, &auth, &csrf.0, id, notice, FormErrors::default()).await
}

async fn certificate_assign_post(
    State(state): State<AppState>,
    RegisterUser(auth): RegisterUser,
    Path(id): Path<i64>,
    form: Form,
) -> Result<Response> {
    let medium_id = form.get("medium").parse::<i64>().ok();
    let result = match medium_id {
        Some(m) => certificates::assign(
            &state.db,
            state.clock.now(),
            &auth.actor(),
            &auth.user,
            id,
            m,
        )
        .await
        .map(|u| u.message),
        None => Err(Error::BadInput(
            "Choose the storage medium the wipe was done on.".into(),
        )),
    };
    match result {
        Ok(message) => {
            certificate_page(
                &state,
                &auth,
                &form.csrf,
                id,
                Some(message),
                FormErrors::default(),
            )
            .await
        }
        Err(Error::BadInput(m)) => {
            let mut errors = FormErrors::default();
            errors.add("medium", m);
            certificate_page(&state, &auth, &form.csrf, id, None, errors).await
        }
        Err(e) => Err(e),
    }
}

async fn certificate_json_get(
    State(state): State<AppState>,
    RegisterUser(_auth): RegisterUser,
    Path(id): Path<i64>,
) -> Result<Response> {
    let cert = certificates::by_id(&state.db, id)
        .await?
        .ok_or(Error::NotFound)?;
    let bytes = certificates::document(&state.db, id)
        .await?
        .ok_or(Error::NotFound)?;
    Ok(attachment(
        "application/json",
        &format!("safehand-certificate-{}.json", cert.certificate_id),
        bytes,
    ))
}

async fn certificate_pdf_get(
    State(state): State<AppState>,
    RegisterUser(_auth): RegisterUser,
    Path(id): Path<i64>,
) -> Result<Response> {
    let cert = certificates::by_id(&state.db, id)
        .await?
        .ok_or(Error::NotFound)?;
    let check = certificates::check(&state.db, &cert).await?;
    let (Some(facts), Some(signer)) = (check.certificate, check.signer) else {
        return Err(Error::BadInput(format!(
            "The stored certificate cannot be rendered: {}",
            check.detail
        )));
    };
    let pdf = safehand_crypto::certificate::render_pdf(&facts, &signer);
    Ok(attachment(
        "application/pdf",
        &format!("safehand-certificate-{}.pdf", cert.certificate_id),
        pdf,
    ))
}

// ---------- destructions ----------

#[derive(Template)]
#[template(path = "register_destruction.html")]
pub(super) struct DestructionPage {
    pub layout: Layout,
    pub asset_id: i64,
    pub asset_tag: String,
    pub medium_id: i64,
    pub medium: String,
    pub contractor: String,
    pub reference: String,
    pub destroyed_on: String,
    pub errors: FormErrors,
    pub max_mib: usize,
}

async fn destruction_page(
    state: &AppState,
    auth: &Authenticated,
    csrf: &str,
    medium_id: i64,
    input: &DestructionInput,
    errors: FormErrors,
) -> Result<Response> {
    let m = assets::medium(&state.db, medium_id)
        .await?
        .ok_or(Error::NotFound)?;
    let a = assets::by_id(&state.db, m.asset_id)
        .await?
        .ok_or(Error::NotFound)?;
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok((
        status,
        render(&DestructionPage {
            layout: Layout::signed_in(auth, csrf),
            asset_id: a.id,
            asset_tag: a.tag,
            medium_id,
            medium: m.display(),
            contractor: input.contractor.clone(),
            reference: input.reference.clone(),
            destroyed_on: input.destroyed_on.clone(),
            errors,
            max_mib: certificates::MAX_DESTRUCTION_FILE_BYTES / 1024 / 1024,
        }),
    )
        .into_response())
}

async fn destruction_get(
    State(state): State<AppState>,
    RegisterUser(auth): RegisterUser,
    csrf: CsrfToken,
    Path(id): Path<i64>,
) -> Result<Response> {
    destruction_page(
        &state,
        &auth,
        &csrf.0,
        id,
        &DestructionInput::default(),
        FormErrors::default(),
    )
    .await
}

async fn destruction_post(
    State(state): State<AppState>,
    RegisterUser(auth): RegisterUser,
    Path(id): Path<i64>,
    mut form: UploadForm,
) -> Result<Response> {
    let file = form.take_file("file");
    let input = DestructionInput {
        contractor: form.get("contractor").into(),
        reference: form.get("reference").into(),
        destroyed_on: form.get("destroyed_on").into(),
        file_name: file
            .as_ref()
            .map(|f| f.file_name.clone())
            .unwrap_or_default(),
        content_type: file
            .as_ref()
            .map(|f| f.content_type.clone())
            .unwrap_or_default(),
        file: file.map(|f| f.bytes).unwrap_or_default(),
    };
    match certificates::record_destruction(
        &state.db,
        state.clock.now(),
        &auth.actor(),
        &auth.user,
        id,
        &input,
    )
    .await?
    {
        Ok(_) => {
            let m = assets::medium(&state.db, id)
                .await?
                .ok_or(Error::NotFound)?;
            Ok(Redirect::to(&format!("/register/assets/{}", m.asset_id)).into_response())
        }
        Err(errors) => {
            destruction_page(&state, &auth, &form.csrf, id, &input, form_errors(errors)).await
        }
    }
}

async fn destruction_file_get(
    State(state): State<AppState>,
    RegisterUser(_auth): RegisterUser,
    Path(id): Path<i64>,
) -> Result<Response> {
    let (d, bytes) = certificates::destruction_file(&state.db, id)
        .await?
        .ok_or(Error::NotFound)?;
    // Served as a download, never inline: the file came from outside.
    Ok(attachment("application/octet-stream", &d.file_name, bytes))
}

// ---------- disposals ----------

async fn asset_disposals_post(
    State(state): State<AppState>,
    RegisterUser(auth): RegisterUser,
    Path(id): Path<i64>,
    _form: Form,
) -> Result<Response> {
    let asset = assets::by_id(&state.db, id).await?.ok_or(Error::NotFound)?;
    match disposals::create(
        &state.db,
        state.clock.now(),
        &auth.actor(),
        &auth.user,
        &asset,
        &DisposalInput::default(),
    )
    .await?
    {
        Ok(d) => Ok(Redirect::to(&format!("/register/disposals/{d}")).into_response()),
        Err(errors) => Err(Error::BadInput(
            errors
                .into_iter()
                .map(|e| e.message)
                .collect::<Vec<_>>()
                .join(" "),
        )),
    }
}

#[derive(Template)]
#[template(path = "register_disposals.html")]
pub(super) struct DisposalsPage {
    pub layout: Layout,
    pub rows: Vec<DisposalRow>,
    pub state: String,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct StateQuery {
    state: String,
}

async fn disposals_get(
    State(state): State<AppState>,
    RegisterUser(auth): RegisterUser,
    csrf: CsrfToken,
    Query(q): Query<StateQuery>,
) -> Result<Response> {
    let filter = match q.state.as_str() {
        "draft" | "completed" => q.state.clone(),
        _ => String::new(),
    };
    let mut rows = Vec::new();
    for d in disposals::list(&state.db, &filter, 1000).await? {
        let tag = assets::by_id(&state.db, d.asset_id)
            .await?
            .map(|a| a.tag)
            .unwrap_or_default();
        rows.push(disposal_row(&d, &tag));
    }
    Ok(render(&DisposalsPage {
        layout: Layout::signed_in(&auth, &csrf.0),
        rows,
        state: filter,
    }))
}

pub(super) struct PersonChoice {
    pub email: String,
    pub label: String,
}

pub(super) struct EvidenceRow {
    pub medium_id: i64,
    pub serial: String,
    pub evidence: Option<String>,
}

#[derive(Template)]
#[template(path = "register_disposal.html")]
pub(super) struct DisposalPage {
    pub layout: Layout,
    pub d: Disposal,
    pub row: DisposalRow,
    pub asset: Asset,
    pub input: DisposalInput,
    pub people: Vec<PersonChoice>,
    pub methods: Vec<Choice>,
    pub evidence: Vec<EvidenceRow>,
    pub problems: Vec<String>,
    pub disposed_by: String,
    pub authorised: String,
    pub completed: String,
    pub created_by: String,
    pub can_authorise: bool,
    pub is_admin: bool,
    pub is_disposer: bool,
    pub notice: Option<String>,
    pub errors: FormErrors,
    pub reason: String,
    pub pat_days: i64,
}

async fn disposal_page(
    state: &AppState,
    auth: &Authenticated,
    csrf: &str,
    id: i64,
    input: Option<DisposalInput>,
    notice: Option<String>,
    errors: FormErrors,
) -> Result<Response> {
    let d = disposals::by_id(&state.db, id)
        .await?
        .ok_or(Error::NotFound)?;
    let asset = assets::by_id(&state.db, d.asset_id)
        .await?
        .ok_or(Error::NotFound)?;
    let disposer: Option<User> = crate::accounts::by_id(&state.db, d.disposed_by).await?;
    let disposer_email = disposer
        .as_ref()
        .map(|u| u.email.clone())
        .unwrap_or_default();
    let evidence = disposals::evidence(&state.db, &d, &asset)
        .await?
        .into_iter()
        .map(|(m, e)| EvidenceRow {
            medium_id: m.id,
            serial: m.display(),
            evidence: e.map(|e| e.describe()),
        })
        .collect();
    let problems = disposals::completion_problems(&state.db, &d, &asset, state.clock.now()).await?;
    let is_admin = auth.has(crate::accounts::Role::Admin);
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok((
        status,
        render(&DisposalPage {
            layout: Layout::signed_in(auth, csrf),
            row: disposal_row(&d, &asset.tag),
            input: input.unwrap_or_else(|| d.to_input(&disposer_email)),
            people: disposals::people(&state.db)
                .await?
                .into_iter()
                .map(|u| PersonChoice {
                    label: format!("{} ({})", u.name, u.email),
                    email: u.email,
                })
                .collect(),
            methods: Method::ALL
                .iter()
                .map(|m| Choice {
                    value: m.as_str(),
                    label: m.label(),
                })
                .collect(),
            evidence,
            problems,
            disposed_by: register::user_label(&state.db, Some(d.disposed_by)).await?,
            authorised: match d.authorised_by {
                Some(_) => format!(
                    "{}, {}",
                    register::user_label(&state.db, d.authorised_by).await?,
                    d.authorised_at.map(when).unwrap_or_default()
                ),
                None => String::new(),
            },
            completed: match d.completed_by {
                Some(_) => format!(
                    "{}, {}",
                    register::user_label(&state.db, d.completed_by).await?,
                    d.completed_at.map(when).unwrap_or_default()
                ),
                None => String::new(),
            },
            created_by: format!(
                "{}, {}",
                register::user_label(&state.db, Some(d.created_by)).await?,
                when(d.created_at)
            ),
            can_authorise: is_admin
                && !d.is_completed()
                && d.authorised_by.is_none()
                && d.disposed_by != auth.user.id,
            is_admin,
            is_disposer: d.disposed_by == auth.user.id,
            notice,
            errors,
            reason: String::new(),
            pat_days: disposals::PAT_RECENT_DAYS,
            asset,
            d,
        }),
    )
        .into_response())
}

async fn disposal_get(
    State(state): State<AppState>,
    RegisterUser(auth): RegisterUser,
    csrf: CsrfToken,
    Path(id): Path<i64>,
) -> Result<Response> {
    disposal_page(
        &state,
        &auth,
        &csrf.0,
        id,
        None,
        None,
        FormErrors::default(),
    )
    .await
}

fn disposal_input_from(form: &Form) -> DisposalInput {
    DisposalInput {
        disposal_date: form.get("disposal_date").into(),
        disposed_by: form.get("disposed_by").into(),
        method: form.get("method").into(),
        receiver_name: form.get("receiver_name").into(),
        receiver_kind: form.get("receiver_kind").into(),
        receiver_registration: form.get("receiver_registration").into(),
        licence_checked: form.get("licence_checked").into(),
        licence_notes: form.get("licence_notes").into(),
        pat_date: form.get("pat_date").into(),
        notes: form.get("notes").into(),
    }
}

async fn disposal_post(
    State(state): State<AppState>,
    RegisterUser(auth): RegisterUser,
    Path(id): Path<i64>,
    form: Form,
) -> Result<Response> {
    let input = disposal_input_from(&form);
    match disposals::update(
        &state.db,
        state.clock.now(),
        &auth.actor(),
        &auth.user,
        id,
        &input,
    )
    .await?
    {
        Ok(()) => {
            disposal_page(
                &state,
                &auth,
                &form.csrf,
                id,
                None,
                Some("Disposal record saved.".into()),
                FormErrors::default(),
            )
            .await
        }
        Err(errors) => {
            disposal_page(
                &state,
                &auth,
                &form.csrf,
                id,
                Some(input),
                None,
                form_errors(errors),
            )
            .await
        }
    }
}

async fn disposal_authorise_post(
    State(state): State<AppState>,
    Admin(auth): Admin,
    Path(id): Path<i64>,
    form: Form,
) -> Result<Response> {
    match disposals::authorise(&state.db, state.clock.now(), &auth.actor(), &auth.user, id).await {
        Ok(()) => {
            disposal_page(
                &state,
                &auth,
                &form.csrf,
                id,
                None,
                Some("Disposal authorised.".into()),
                FormErrors::default(),
            )
            .await
        }
        Err(Error::BadInput(m)) => {
            let mut errors = FormErrors::default();
            errors.add("authorise", m);
            disposal_page(&state, &auth, &form.csrf, id, None, None, errors).await
        }
        Err(e) => Err(e),
    }
}

async fn disposal_complete_post(
    State(state): State<AppState>,
    RegisterUser(auth): RegisterUser,
    Path(id): Path<i64>,
    form: Form,
) -> Result<Response> {
    match disposals::complete(&state.db, state.clock.now(), &auth.actor(), &auth.user, id).await? {
        Ok(()) => {
            disposal_page(
                &state,
                &auth,
                &form.csrf,
                id,
                None,
                Some("Disposal record completed. It is now read-only.".into()),
                FormErrors::default(),
            )
            .await
        }
        Err(problems) => {
            let mut errors = FormErrors::default();
            for p in problems {
                errors.add("complete", p);
            }
            disposal_page(&state, &auth, &form.csrf, id, None, None, errors).await
        }
    }
}

async fn disposal_correct_post(
    State(state): State<AppState>,
    RegisterUser(auth): RegisterUser,
    Path(id): Path<i64>,
    form: Form,
) -> Result<Response> {
    match disposals::correct(
        &state.db,
        state.clock.now(),
        &auth.actor(),
        &auth.user,
        id,
        form.get("reason"),
    )
    .await?
    {
        Ok(new_id) => Ok(Redirect::to(&format!("/register/disposals/{new_id}")).into_response()),
        Err(errors) => {
            disposal_page(
                &state,
                &auth,
                &form.csrf,
                id,
                None,
                None,
                form_errors(errors),
            )
            .await
        }
    }
}

async fn disposal_withdraw_post(
    State(state): State<AppState>,
    RegisterUser(auth): RegisterUser,
    Path(id): Path<i64>,
    _form: Form,
) -> Result<Response> {
    let d = disposals::by_id(&state.db, id)
        .await?
        .ok_or(Error::NotFound)?;
    disposals::withdraw(&state.db, state.clock.now(), &auth.actor(), id).await?;
    Ok(Redirect::to(&format!("/register/assets/{}", d.asset_id)).into_response())
}

// ---------- report ----------

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct RangeQuery {
    from: String,
    to: String,
}

pub(super) struct ReportRow {
    pub id: i64,
    pub date: String,
    pub asset: String,
    pub method: String,
    pub authorised_by: String,
    pub evidence: Vec<(String, String)>,
    pub superseded: bool,
}

#[derive(Template)]
#[template(path = "register_report.html")]
pub(super) struct ReportPage {
    pub layout: Layout,
    pub from: String,
    pub to: String,
    pub rows: Vec<ReportRow>,
    pub shown: bool,
    pub query: String,
    pub errors: FormErrors,
}

async fn report_get(
    State(state): State<AppState>,
    RegisterUser(auth): RegisterUser,
    csrf: CsrfToken,
    Query(q): Query<RangeQuery>,
) -> Result<Response> {
    let mut errors = FormErrors::default();
    let mut rows = Vec::new();
    let shown = !(q.from.is_empty() && q.to.is_empty());
    if shown {
        match report::check_range(&q.from, &q.to) {
            Ok((from, to)) => {
                for e in report::entries(&state.db, &from, &to).await? {
                    rows.push(ReportRow {
                        id: e.disposal.id,
                        date: e.disposal.disposal_date.clone().unwrap_or_default(),
                        asset: format!(
                            "{} ({} {} {})",
                            e.asset.tag,
                            e.asset.kind.label(),
                            e.asset.make,
                            e.asset.model
                        ),
                        method: format!(
                            "{} to {}",
                            e.disposal.method_label(),
                            e.disposal.receiver_name
                        ),
                        authorised_by: e.authorised_by.clone(),
                        evidence: e.evidence.clone(),
                        superseded: e.disposal.corrected_by.is_some(),
                    });
                }
            }
            Err(m) => errors.add("from", m),
        }
    }
    let query = serde_urlencoded::to_string([("from", &q.from), ("to", &q.to)]).unwrap_or_default();
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok((
        status,
        render(&ReportPage {
            layout: Layout::signed_in(&auth, &csrf.0),
            from: q.from,
            to: q.to,
            rows,
            shown,
            query,
            errors,
        }),
    )
        .into_response())
}

async fn report_data(
    state: &AppState,
    auth: &Authenticated,
    q: &RangeQuery,
    format: &str,
) -> Result<(String, String, Vec<report::Entry>)> {
    let (from, to) = report::check_range(&q.from, &q.to).map_err(Error::BadInput)?;
    let entries = report::entries(&state.db, &from, &to).await?;
    crate::audit::record(
        &state.db,
        state.clock.now(),
        &auth.actor(),
        "disposal_report_exported",
        "disposal report",
        serde_json::json!({ "from": from, "to": to, "format": format, "records": entries.len() }),
    )
    .await?;
    Ok((from, to, entries))
}

async fn report_csv_get(
    State(state): State<AppState>,
    RegisterUser(auth): RegisterUser,
    Query(q): Query<RangeQuery>,
) -> Result<Response> {
    let (from, to, entries) = report_data(&state, &auth, &q, "csv").await?;
    Ok(attachment(
        "text/csv; charset=utf-8",
        &format!("safehand-disposals-{from}-to-{to}.csv"),
        report::to_csv(&entries).into_bytes(),
    ))
}

async fn report_pdf_get(
    State(state): State<AppState>,
    RegisterUser(auth): RegisterUser,
    Query(q): Query<RangeQuery>,
) -> Result<Response> {
    let (from, to, entries) = report_data(&state, &auth, &q, "pdf").await?;
    let pdf = report::to_pdf(
        &entries,
        &from,
        &to,
        state.clock.now(),
        &state.settings.public_url,
    );
    Ok(attachment(
        "application/pdf",
        &format!("safehand-disposals-{from}-to-{to}.pdf"),
        pdf,
    ))
}

// ---------- signing keys (account page) ----------

/// A key row on the account page.
pub(super) struct KeyRow {
    pub id: i64,
    pub label: String,
    pub public_key: String,
    pub created: String,
    pub state: &'static str,
    pub live: bool,
}

/// The account page's signing-key rows.
pub(super) async fn key_rows(state: &AppState, user_id: i64) -> Result<Vec<KeyRow>> {
    Ok(certificates::keys_of(&state.db, user_id)
        .await?
        .into_iter()
        .map(|k| KeyRow {
            id: k.id,
            label: k.label,
            public_key: k.public_key,
            created: when(k.created_at),
            state: if k.revoked_at.is_some() {
                "revoked"
            } else {
                "active"
            },
            live: k.revoked_at.is_none(),
        })
        .collect())
}

async fn signing_keys_post(
    State(state): State<AppState>,
    auth: Authenticated,
    form: Form,
) -> Result<Response> {
    if auth.session.is_none() {
        return Err(Error::Forbidden);
    }
    match certificates::add_key(
        &state.db,
        state.clock.now(),
        &auth.actor(),
        &auth.user,
        form.get("public_key"),
        form.get("key_label"),
    )
    .await
    {
        Ok(_) => Ok(Redirect::to("/account#signing-keys").into_response()),
        Err(errors) => {
            super::account::account_with_errors(
                &state,
                &auth,
                &form.csrf,
                form_errors(errors),
                form.get("public_key"),
                form.get("key_label"),
            )
            .await
        }
    }
}

async fn signing_key_revoke_post(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<i64>,
    _form: Form,
) -> Result<Response> {
    if auth.session.is_none() {
        return Err(Error::Forbidden);
    }
    certificates::revoke_key(&state.db, state.clock.now(), &auth.actor(), &auth.user, id).await?;
    Ok(Redirect::to("/account#signing-keys").into_response())
}
