//! The register's JSON API (under `/api/v1`), for `safehand cert upload`, `safehand wipe
//! --report-to` and scripts. Changes need an API token (`Authorization: Bearer shtok_...`)
//! with the technician or admin role; errors come back as JSON.

use super::extract::Authenticated;
use super::register::RegisterUser;
use crate::accounts::Role;
use crate::register::assets::{self, Asset, AssetInput};
use crate::register::certificates::{self, Uploaded};
use crate::register::disposals::{self, Disposal, DisposalInput};
use crate::register::FieldError;
use crate::{AppState, Error, Result};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/certificates",
            post(certificates_post)
                .layer(DefaultBodyLimit::max(certificates::MAX_CERTIFICATE_BYTES)),
        )
        .route("/certificates/{id}", get(certificate_get))
        .route("/certificates/{id}/assign", post(certificate_assign_post))
        .route("/assets", post(assets_post))
        .route("/assets/{tag}", get(asset_get))
        .route("/disposals", post(disposals_post))
        .route("/disposals/{id}", get(disposal_get))
        .route("/disposals/{id}/authorise", post(disposal_authorise_post))
        .route("/disposals/{id}/complete", post(disposal_complete_post))
}

/// Changes through the API need a token: a browser session must use the pages (CSRF).
fn require_token(auth: &Authenticated) -> Result<()> {
    if auth.token.is_some() {
        Ok(())
    } else {
        Err(Error::Forbidden)
    }
}

fn invalid(errors: Vec<FieldError>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({
            "error": "bad_input",
            "message": errors.iter().map(|e| e.message.clone()).collect::<Vec<_>>().join(" "),
            "fields": errors.iter().map(|e| json!({ "field": e.field, "message": e.message })).collect::<Vec<_>>(),
        })),
    )
        .into_response()
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| {
        Error::BadInput(format!(
            "The request body is not the JSON this endpoint expects: {e}"
        ))
    })
}

fn uploaded_json(state: &AppState, up: &Uploaded) -> Value {
    json!({
        "id": up.certificate.id,
        "certificate_id": up.certificate.certificate_id,
        "result": up.certificate.result,
        "verified": true,
        "already_uploaded": up.already_uploaded,
        "evidence": up.evidence,
        "medium": up.medium.as_ref().map(|(m, tag)| json!({ "id": m.id, "serial": m.serial, "asset_tag": tag })),
        "message": up.message,
        "url": format!("{}/register/certificates/{}", state.settings.public_url, up.certificate.id),
    })
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct UploadQuery {
    medium_id: Option<i64>,
}

/// Uploads a certificate file (the body is the file's bytes, exactly as written).
async fn certificates_post(
    State(state): State<AppState>,
    RegisterUser(auth): RegisterUser,
    Query(q): Query<UploadQuery>,
    body: Bytes,
) -> Result<Response> {
    require_token(&auth)?;
    let up = certificates::upload(
        &state.db,
        state.clock.now(),
        &auth.actor(),
        &auth.user,
        &body,
        q.medium_id,
    )
    .await?;
    let status = if up.already_uploaded {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(uploaded_json(&state, &up))).into_response())
}

async fn certificate_get(
    State(state): State<AppState>,
    RegisterUser(_auth): RegisterUser,
    Path(id): Path<i64>,
) -> Result<Response> {
    let cert = certificates::by_id(&state.db, id)
        .await?
        .ok_or(Error::NotFound)?;
    let check = certificates::check(&state.db, &cert).await?;
    Ok(Json(json!({
        "id": cert.id,
        "certificate_id": cert.certificate_id,
        "result": cert.result,
        "verifies": check.verifies,
        "verification": check.detail,
        "signer": cert.signer_key,
        "device_serial": cert.device_serial,
        "asset_tag": cert.asset_tag,
        "medium_id": cert.medium_id,
        "sha256": cert.sha256,
    }))
    .into_response())
}

#[derive(serde::Deserialize)]
struct AssignBody {
    medium_id: i64,
}

async fn certificate_assign_post(
    State(state): State<AppState>,
    RegisterUser(auth): RegisterUser,
    Path(id): Path<i64>,
    body: Bytes,
) -> Result<Response> {
    require_token(&auth)?;
    let b: AssignBody = parse_json(&body)?;
    let up = certificates::assign(
        &state.db,
        state.clock.now(),
        &auth.actor(),
        &auth.user,
        id,
        b.medium_id,
    )
    .await?;
    Ok(Json(uploaded_json(&state, &up)).into_response())
}

fn asset_json(a: &Asset) -> Value {
    json!({
        "id": a.id, "tag": a.tag, "kind": a.kind.as_str(), "make": a.make, "model": a.model, "serial": a.serial,
        "location": a.location, "assigned_to": a.assigned_to, "purchase_date": a.purchase_date,
        "personal_data": a.personal_data, "status": a.status.as_str(), "notes": a.notes,
        "storage_media": a.media.iter().map(|m| json!({ "id": m.id, "serial": m.serial, "description": m.description })).collect::<Vec<_>>(),
    })
}

async fn assets_post(
    State(state): State<AppState>,
    RegisterUser(auth): RegisterUser,
    body: Bytes,
) -> Result<Response> {
    require_token(&auth)?;
    let input: AssetInput = parse_json(&body)?;
    let checked = match input.check() {
        Ok(c) => c,
        Err(e) => return Ok(invalid(e)),
    };
    let conflicts = assets::conflicts(&state.db, &checked, None).await?;
    if !conflicts.is_empty() {
        return Ok(invalid(conflicts));
    }
    let id = assets::create(&state.db, state.clock.now(), &auth.actor(), &checked).await?;
    let asset = assets::by_id(&state.db, id).await?.ok_or(Error::NotFound)?;
    Ok((StatusCode::CREATED, Json(asset_json(&asset))).into_response())
}

async fn asset_get(
    State(state): State<AppState>,
    RegisterUser(_auth): RegisterUser,
    Path(tag): Path<String>,
) -> Result<Response> {
    let asset = assets::by_tag(&state.db, &tag)
        .await?
        .ok_or(Error::NotFound)?;
    Ok(Json(asset_json(&asset)).into_response())
}

async fn disposal_json(state: &AppState, d: &Disposal) -> Result<Value> {
    let asset = assets::by_id(&state.db, d.asset_id)
        .await?
        .ok_or(Error::NotFound)?;
    let evidence: Vec<Value> = disposals::evidence(&state.db, d, &asset)
        .await?
        .into_iter()
        .map(|(m, e)| json!({ "medium_id": m.id, "serial": m.serial, "evidence": e.map(|e| e.describe()) }))
        .collect();
    let problems = disposals::completion_problems(&state.db, d, &asset, state.clock.now()).await?;
    Ok(json!({
        "id": d.id, "asset_tag": asset.tag, "state": d.state, "corrects": d.corrects_id, "corrected_by": d.corrected_by,
        "disposal_date": d.disposal_date, "disposed_by": d.disposed_by, "method": d.method,
        "receiver_name": d.receiver_name, "receiver_kind": d.receiver_kind, "receiver_registration": d.receiver_registration,
        "licence_checked": d.licence_checked, "licence_notes": d.licence_notes, "pat_date": d.pat_date,
        "authorised_by": d.authorised_by, "authorised_at": d.authorised_at,
        "completed_by": d.completed_by, "completed_at": d.completed_at,
        "evidence": evidence,
        "problems": if d.is_completed() { Vec::new() } else { problems },
    }))
}

#[derive(serde::Deserialize)]
struct NewDisposal {
    asset_tag: String,
    #[serde(flatten)]
    input: DisposalInput,
}

async fn disposals_post(
    State(state): State<AppState>,
    RegisterUser(auth): RegisterUser,
    body: Bytes,
) -> Result<Response> {
    require_token(&auth)?;
    let b: NewDisposal = parse_json(&body)?;
    let asset = assets::by_tag(&state.db, &b.asset_tag)
        .await?
        .ok_or_else(|| {
            Error::BadInput(format!(
                "There is no asset {} in the register.",
                b.asset_tag
            ))
        })?;
    match disposals::create(
        &state.db,
        state.clock.now(),
        &auth.actor(),
        &auth.user,
        &asset,
        &b.input,
    )
    .await?
    {
        Ok(id) => {
            let d = disposals::by_id(&state.db, id)
                .await?
                .ok_or(Error::NotFound)?;
            Ok((StatusCode::CREATED, Json(disposal_json(&state, &d).await?)).into_response())
        }
        Err(e) => Ok(invalid(e)),
    }
}

async fn disposal_get(
    State(state): State<AppState>,
    RegisterUser(_auth): RegisterUser,
    Path(id): Path<i64>,
) -> Result<Response> {
    let d = disposals::by_id(&state.db, id)
        .await?
        .ok_or(Error::NotFound)?;
    Ok(Json(disposal_json(&state, &d).await?).into_response())
}

async fn disposal_authorise_post(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<i64>,
) -> Result<Response> {
    require_token(&auth)?;
    if !auth.has(Role::Admin) {
        return Err(Error::Forbidden);
    }
    disposals::authorise(&state.db, state.clock.now(), &auth.actor(), &auth.user, id).await?;
    let d = disposals::by_id(&state.db, id)
        .await?
        .ok_or(Error::NotFound)?;
    Ok(Json(disposal_json(&state, &d).await?).into_response())
}

async fn disposal_complete_post(
    State(state): State<AppState>,
    RegisterUser(auth): RegisterUser,
    Path(id): Path<i64>,
) -> Result<Response> {
    require_token(&auth)?;
    match disposals::complete(&state.db, state.clock.now(), &auth.actor(), &auth.user, id).await? {
        Ok(()) => {
            let d = disposals::by_id(&state.db, id).await?.ok_or(Error::NotFound)?;
            Ok(Json(disposal_json(&state, &d).await?).into_response())
        }
        Err(problems) => Ok((
            StatusCode::CONFLICT,
            Json(json!({ "error": "not_ready", "message": format!("The disposal record cannot be completed yet: {}", problems.join(" ")), "problems": problems })),
        )
            .into_response()),
    }
}
