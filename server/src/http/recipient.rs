//! The recipient's pages (no account): `/r/{token}` from the email. A GET never changes or
//! counts anything (mail scanners follow links): the first view of the link page from each
//! address is only recorded in the audit log, as evidence for an incident. A code, the
//! passphrase and each download are separate steps. Any link that cannot be used gets the same page, revealing nothing.

use super::extract::{cookie, ClientAddress, JsonBody};
use super::form::{CsrfToken, Form};
use super::templates::{render, FormErrors, Layout};
use crate::transfers::download::{self, Item};
use crate::transfers::names::content_disposition;
use crate::transfers::recipient::{self, RecipientSession, Unlock};
use crate::transfers::{self, Transfer};
use crate::{policy, AppState, Error, Result};
use askama::Template;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use safehand_crypto::SecretString;

/// The recipient session cookie.
/// The recipient session cookie for one link. Over plain HTTP it is `safehand_recipient`,
/// scoped to the link's path; under HTTPS it is `__Host-safehand_recipient_<tag>` (the
/// prefix needs `Path=/`, so the name carries a tag derived from the link token instead, and
/// two links open in one browser keep their own sessions).
fn cookie_name(token: &str, https: bool) -> String {
    if https {
        use sha2::Digest;
        let tag = hex::encode(&sha2::Sha256::digest(token.as_bytes())[..8]);
        format!("__Host-safehand_recipient_{tag}")
    } else {
        "safehand_recipient".to_string()
    }
}

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/r/{token}", get(start_get))
        .route("/r/{token}/code", get(code_get).post(code_post))
        .route("/r/{token}/code/check", post(code_check_post))
        .route("/r/{token}/open", get(open_get).post(open_post))
        .route("/r/{token}/files", get(files_get))
        .route("/r/{token}/files/{n}", get(file_download))
        .route("/r/{token}/all.zip", get(zip_download))
        .route("/r/{token}/payload.age", get(payload_download))
}

/// The recipient's steps for programs (`safehand fetch`), under `/api/v1`: ask for the code,
/// trade the code for a recipient session (a bearer token), download the `.age` payload.
/// The passphrase never reaches the server on this path: the payload is ciphertext, opened on
/// the recipient's machine. Requests must be JSON (a page on another site cannot send them).
pub(super) fn api_router() -> Router<AppState> {
    Router::new()
        .route("/r/{token}/code", post(api_code_post))
        .route("/r/{token}/session", post(api_session_post))
        .route("/r/{token}/payload.age", get(api_payload_get))
}

async fn api_code_post(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    Path(token): Path<String>,
    JsonBody(_): JsonBody<serde_json::Value>,
) -> Result<Response> {
    let now = state.clock.now();
    let t = recipient::by_link(&state.db, now, &token).await?;
    recipient::request_code(&state.db, &state.keys, now, &t, &address).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(
            serde_json::json!({ "message": "A code has been emailed to the recipient's address." }),
        ),
    )
        .into_response())
}

#[derive(serde::Deserialize)]
struct CodeBody {
    code: String,
}

async fn api_session_post(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    Path(token): Path<String>,
    JsonBody(body): JsonBody<CodeBody>,
) -> Result<Response> {
    let now = state.clock.now();
    let t = recipient::by_link(&state.db, now, &token).await?;
    let session =
        recipient::check_code(&state.db, &state.keys, now, &t, &body.code, &address).await?;
    let size = transfers::header(&state.db, t.id)
        .await?
        .map_or(0, |h| h.len() as i64)
        + t.body_size;
    Ok(Json(serde_json::json!({
        "session": session,
        "expires_in": recipient::SESSION_LIFETIME,
        "payload_bytes": size,
    }))
    .into_response())
}

async fn api_payload_get(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Result<Response> {
    let now = state.clock.now();
    let t = recipient::by_link(&state.db, now, &token).await?;
    let no_session = || {
        Error::BadInput(
            "There is no recipient session for this download, or it has ended (30 minutes): ask for a new code and start again.".into(),
        )
    };
    let bearer = super::extract::bearer_token(&headers).ok_or_else(no_session)?;
    recipient::session(&state.db, &state.keys, now, &t, bearer)
        .await?
        .ok_or_else(no_session)?;
    let header_bytes = transfers::header(&state.db, t.id)
        .await?
        .ok_or(Error::Unavailable)?;
    respond(
        &state,
        &address,
        &t,
        None,
        Item::Payload(header_bytes),
        "payload.age",
        "application/octet-stream",
    )
    .await
}

#[derive(Template)]
#[template(path = "recipient.html")]
struct RecipientPage {
    layout: Layout,
    title: &'static str,
    step: &'static str,
    token: String,
    files: Vec<(i64, String, String)>,
    downloads_left: i64,
    errors: FormErrors,
    notice: Option<String>,
}

fn page(
    csrf: &str,
    token: &str,
    title: &'static str,
    step: &'static str,
    errors: FormErrors,
    notice: Option<String>,
) -> Response {
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    (
        status,
        render(&RecipientPage {
            layout: Layout::visitor(csrf),
            title,
            step,
            token: token.to_string(),
            files: Vec::new(),
            downloads_left: 0,
            errors,
            notice,
        }),
    )
        .into_response()
}

async fn start_get(
    State(state): State<AppState>,
    csrf: CsrfToken,
    ClientAddress(address): ClientAddress,
    Path(token): Path<String>,
) -> Result<Response> {
    let now = state.clock.now();
    let t = recipient::by_link(&state.db, now, &token).await?;
    recipient::link_viewed(&state.db, now, &t, &address).await?;
    Ok(page(
        &csrf.0,
        &token,
        "Files sent to you securely",
        "start",
        FormErrors::default(),
        None,
    ))
}

async fn code_get(
    State(state): State<AppState>,
    csrf: CsrfToken,
    Path(token): Path<String>,
) -> Result<Response> {
    recipient::by_link(&state.db, state.clock.now(), &token).await?;
    Ok(page(
        &csrf.0,
        &token,
        "Enter your code",
        "code",
        FormErrors::default(),
        None,
    ))
}

async fn code_post(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    Path(token): Path<String>,
    form: Form,
) -> Result<Response> {
    let now = state.clock.now();
    let t = recipient::by_link(&state.db, now, &token).await?;
    match recipient::request_code(&state.db, &state.keys, now, &t, &address).await {
        Ok(()) => Ok(Redirect::to(&format!("/r/{token}/code")).into_response()),
        Err(Error::BadInput(m)) => Ok(code_error(&form.csrf, &token, m)),
        Err(e) => Err(e),
    }
}

/// The code page again, with `message` against the code field.
fn code_error(csrf: &str, token: &str, message: String) -> Response {
    let mut errors = FormErrors::default();
    errors.add("code", message);
    page(csrf, token, "Enter your code", "code", errors, None)
}

fn session_cookie(value: &str, token: &str, https: bool) -> String {
    format!(
        "{}={value}; Path={}; HttpOnly; SameSite=Strict; Max-Age={}{}",
        cookie_name(token, https),
        if https {
            "/".to_string()
        } else {
            format!("/r/{token}")
        },
        recipient::SESSION_LIFETIME,
        if https { "; Secure" } else { "" }
    )
}

async fn code_check_post(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    Path(token): Path<String>,
    form: Form,
) -> Result<Response> {
    let now = state.clock.now();
    let t = recipient::by_link(&state.db, now, &token).await?;
    match recipient::check_code(&state.db, &state.keys, now, &t, form.get("code"), &address).await {
        Ok(session) => {
            let mut response = Redirect::to(&format!("/r/{token}/open")).into_response();
            if let Ok(v) =
                HeaderValue::from_str(&session_cookie(&session, &token, state.settings.https))
            {
                response.headers_mut().append(header::SET_COOKIE, v);
            }
            Ok(response)
        }
        Err(Error::BadInput(m)) => Ok(code_error(&form.csrf, &token, m)),
        Err(e) => Err(e),
    }
}

/// The live transfer and this browser's session for it.
async fn with_session(
    state: &AppState,
    headers: &HeaderMap,
    token: &str,
) -> Result<(Transfer, Option<RecipientSession>)> {
    let now = state.clock.now();
    let t = recipient::by_link(&state.db, now, token).await?;
    let session = match cookie(headers, &cookie_name(token, state.settings.https)) {
        Some(v) => recipient::session(&state.db, &state.keys, now, &t, &v).await?,
        None => None,
    };
    Ok((t, session))
}

async fn open_get(
    State(state): State<AppState>,
    csrf: CsrfToken,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Result<Response> {
    let (_, session) = with_session(&state, &headers, &token).await?;
    match session {
        None => Ok(Redirect::to(&format!("/r/{token}")).into_response()),
        Some(s) if s.file_key.is_some() => {
            Ok(Redirect::to(&format!("/r/{token}/files")).into_response())
        }
        Some(_) => Ok(page(
            &csrf.0,
            &token,
            "Enter the passphrase",
            "passphrase",
            FormErrors::default(),
            None,
        )),
    }
}

async fn open_post(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    Path(token): Path<String>,
    form: Form,
) -> Result<Response> {
    let (t, session) = with_session(&state, &headers, &token).await?;
    let Some(session) = session else {
        return Ok(Redirect::to(&format!("/r/{token}")).into_response());
    };
    let typed = form.get("passphrase").trim();
    let mut errors = FormErrors::default();
    if typed.is_empty() {
        errors.add("passphrase", "Enter the passphrase.");
        return Ok(page(
            &form.csrf,
            &token,
            "Enter the passphrase",
            "passphrase",
            errors,
            None,
        ));
    }
    let limit = policy::load(&state.db).await?.wrong_passphrase_limit;
    let outcome = recipient::unlock(
        &state.db,
        &state.keys,
        state.clock.now(),
        &t,
        &session,
        SecretString::from(typed.to_string()),
        limit,
        &address,
    )
    .await?;
    match outcome {
        Unlock::Opened => Ok(Redirect::to(&format!("/r/{token}/files")).into_response()),
        Unlock::Wrong { left } => {
            errors.add(
                "passphrase",
                format!(
                    "That passphrase is not right. Check it with the sender. {left} {} left before the files are locked.",
                    if left == 1 { "try" } else { "tries" }
                ),
            );
            Ok(page(
                &form.csrf,
                &token,
                "Enter the passphrase",
                "passphrase",
                errors,
                None,
            ))
        }
        Unlock::Locked => Err(Error::Unavailable),
    }
}

async fn files_get(
    State(state): State<AppState>,
    csrf: CsrfToken,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Result<Response> {
    let (t, session) = with_session(&state, &headers, &token).await?;
    if session.and_then(|s| s.file_key).is_none() {
        return Ok(Redirect::to(&format!("/r/{token}/open")).into_response());
    }
    let files = transfers::files(&state.db, &state.keys, &t)
        .await?
        .into_iter()
        .map(|f| (f.position + 1, f.name, policy::format_size(f.size)))
        .collect();
    Ok(render(&RecipientPage {
        layout: Layout::visitor(&csrf.0),
        title: "Your files",
        step: "files",
        token,
        files,
        downloads_left: t.download_limit - t.downloads,
        errors: FormErrors::default(),
        notice: None,
    }))
}

async fn send_download(
    state: &AppState,
    address: &str,
    headers: &HeaderMap,
    token: &str,
    choose: impl FnOnce(&[transfers::TransferFile]) -> Option<(Item, String, String)>,
) -> Result<Response> {
    let (t, session) = with_session(state, headers, token).await?;
    let Some(key) = session.and_then(|s| s.file_key) else {
        return Ok(Redirect::to(&format!("/r/{token}/open")).into_response());
    };
    let files = transfers::files(&state.db, &state.keys, &t).await?;
    let (item, name, content_type) = choose(&files).ok_or(Error::NotFound)?;
    respond(state, address, &t, Some(&key), item, &name, &content_type).await
}

/// Streams `item` of `t` as a counted download named `name`.
async fn respond(
    state: &AppState,
    address: &str,
    t: &Transfer,
    key: Option<&safehand_crypto::split::FileKey>,
    item: Item,
    name: &str,
    content_type: &str,
) -> Result<Response> {
    let now = state.clock.now();
    let actor = recipient::recipient_actor(t, address);
    let slot = download::begin(&state.db, now, t, &item, &actor).await?;
    let length = match &item {
        Item::File(f) => Some(f.size as u64),
        Item::Payload(h) => Some(h.len() as u64 + t.body_size as u64),
        Item::Zip(_) => None,
    };
    let stream = download::stream(
        &state.db,
        &state.blobs,
        &state.clock,
        t,
        key,
        item,
        slot,
        now,
    )
    .await?;
    let mut response = Response::new(Body::from_stream(stream));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    if let Ok(v) = HeaderValue::from_str(&content_disposition(name)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Some(len) = length {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    Ok(response)
}

async fn file_download(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    Path((token, n)): Path<(String, i64)>,
) -> Result<Response> {
    send_download(&state, &address, &headers, &token, |files| {
        files.iter().find(|f| f.position + 1 == n).map(|f| {
            (
                Item::File(f.clone()),
                f.name.clone(),
                "application/octet-stream".to_string(),
            )
        })
    })
    .await
}

async fn zip_download(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Result<Response> {
    send_download(&state, &address, &headers, &token, |files| {
        (!files.is_empty()).then(|| {
            (
                Item::Zip(files.to_vec()),
                "files.zip".to_string(),
                "application/zip".to_string(),
            )
        })
    })
    .await
}

async fn payload_download(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Result<Response> {
    let (t, _) = with_session(&state, &headers, &token).await?;
    let header_bytes = transfers::header(&state.db, t.id)
        .await?
        .ok_or(Error::Unavailable)?;
    send_download(&state, &address, &headers, &token, move |_| {
        Some((
            Item::Payload(header_bytes),
            "payload.age".to_string(),
            "application/octet-stream".to_string(),
        ))
    })
    .await
}
