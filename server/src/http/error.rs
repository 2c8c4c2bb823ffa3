//! The one `IntoResponse` for [`crate::Error`]: a page for browsers, JSON under `/api`.
//! Internal details are logged with a short id that the page shows; they are never sent.

use super::templates::{render, ErrorPage, Layout};
use crate::Error;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;

/// Marks a response whose session cookie must be removed (the session has ended); the CSRF
/// layer, which knows the cookie's name and flags, adds the `Set-Cookie`.
#[derive(Clone, Copy, Debug)]
pub(super) struct ForgetSession;

/// What went wrong, attached to the response so the API layer can re-render it as JSON and the
/// logging layer can log it.
#[derive(Clone, Debug)]
pub struct ErrorInfo {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// What the user should read.
    pub message: String,
    /// Id quoted to operators (internal errors only).
    pub id: Option<String>,
    /// Internal detail for the log (never sent).
    pub detail: Option<String>,
}

impl Error {
    fn info(&self) -> ErrorInfo {
        let (status, code) = match self {
            Error::NotSignedIn => (StatusCode::UNAUTHORIZED, "not_signed_in"),
            Error::TokenRequired => (StatusCode::UNAUTHORIZED, "token_required"),
            Error::SessionEnded => (StatusCode::UNAUTHORIZED, "session_ended"),
            Error::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            Error::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Error::Csrf => (StatusCode::FORBIDDEN, "csrf"),
            Error::BadInput(_) => (StatusCode::BAD_REQUEST, "bad_input"),
            Error::LinkNotValid => (StatusCode::NOT_FOUND, "link_not_valid"),
            Error::Unavailable => (StatusCode::NOT_FOUND, "unavailable"),
            Error::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            Error::Database(e) if database_busy(e) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            Error::Database(_)
            | Error::Internal(_)
            | Error::KeyFile { .. }
            | Error::KeyMalformed(_)
            | Error::AuditKey(_)
            | Error::Unseal
            | Error::SealedUnderOtherKey { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            Error::Storage(_) => (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable"),
        };
        let internal = status == StatusCode::INTERNAL_SERVER_ERROR
            || status == StatusCode::SERVICE_UNAVAILABLE;
        let id = internal.then(|| {
            use rand::Rng;
            format!("{:08x}", rand::rngs::OsRng.gen::<u32>())
        });
        let message = if code == "busy" {
            "The service is busy right now, so nothing was changed. Wait a minute and try again; if it keeps happening, tell your administrator the error reference below.".to_string()
        } else if matches!(self, Error::Storage(_)) {
            "The file store is full or cannot be reached right now, so nothing was saved. Try again in a few minutes; if it keeps happening, tell your administrator the error reference below.".to_string()
        } else if internal {
            "Sorry, something went wrong on our side. Try again; if it keeps happening, tell your administrator the error reference below.".to_string()
        } else {
            self.to_string()
        };
        ErrorInfo {
            status,
            code,
            message,
            id,
            detail: internal.then(|| format!("{self:?}")),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let info = self.info();
        let mut response = match &self {
            // A browser without a session goes to the sign-in page.
            Error::NotSignedIn => Redirect::to("/sign-in").into_response(),
            Error::SessionEnded => Redirect::to("/sign-in?ended=1").into_response(),
            _ => {
                let page = ErrorPage {
                    layout: Layout::bare(),
                    title: match info.status {
                        _ if matches!(self, Error::Unavailable) => "This link cannot be used",
                        StatusCode::NOT_FOUND => "Page not found",
                        StatusCode::FORBIDDEN => "You cannot do that",
                        StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => {
                            "There is a problem"
                        }
                        _ => "Sorry, there is a problem with the service",
                    },
                    message: info.message.clone(),
                    reference: info.id.clone(),
                };
                (info.status, render(&page)).into_response()
            }
        };
        if info.code == "busy" {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        }
        if matches!(self, Error::SessionEnded) {
            // Forget a cookie that no longer works. (Not for `NotSignedIn`: that cookie may be
            // a sign-in still waiting for its code, which must survive a visit to another page.)
            response.extensions_mut().insert(ForgetSession);
        }
        response.extensions_mut().insert(info);
        response
    }
}

/// Whether a database error means the database is overloaded rather than broken: no pooled
/// connection came free in time, PostgreSQL has no connection slot left (53300) or is starting
/// or stopping (57P03), or SQLite's lock stayed busy past its timeout. The request changed
/// nothing (its transaction, if any, rolled back), so the client may safely try again.
fn database_busy(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(db) => matches!(
            db.code().as_deref(),
            Some("53300") | Some("57P03") | Some("5") | Some("6") | Some("261") | Some("517")
        ),
        _ => false,
    }
}

/// A short title for an error status, the same for every error of that kind (RFC 9457).
fn title(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "The request could not be used",
        401 => "Sign-in needed",
        403 => "Not allowed",
        404 => "Not found",
        405 => "Method not allowed",
        409 => "Conflict with the current state",
        413 => "Too large",
        415 => "Unsupported content type",
        422 => "The request could not be read",
        429 => "Too many requests",
        503 => "Service unavailable",
        s if s >= 500 => "Server error",
        _ => "The request failed",
    }
}

/// A stable code for an error the handlers did not describe (axum's own rejections).
fn code_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 422 => "bad_input",
        401 => "not_signed_in",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        413 => "too_large",
        415 => "unsupported_media_type",
        429 => "too_many_requests",
        s if s >= 500 => "internal",
        _ => "failed",
    }
}

/// The `application/problem+json` (RFC 9457) document for an API error: `type` (a stable
/// URI reference per code, `/api/problems/<code>`), `title`, `status`, `detail` (what to do),
/// `reference` (the id in the server's log), and, kept for existing clients, `error` (the
/// code) and `message` (= `detail`). Members a handler added (`problems`, the field
/// problems; ...) are kept.
fn problem(
    status: StatusCode,
    code: &str,
    detail: &str,
    reference: &str,
    mut extra: serde_json::Map<String, serde_json::Value>,
) -> Response {
    for (k, v) in [
        ("type", format!("/api/problems/{code}")),
        ("title", title(status).to_string()),
        ("detail", detail.to_string()),
        ("error", code.to_string()),
        ("message", detail.to_string()),
        ("reference", reference.to_string()),
    ] {
        extra.insert(k.into(), v.into());
    }
    extra.insert("status".into(), status.as_u16().into());
    let mut out = (status, Json(serde_json::Value::Object(extra))).into_response();
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if status == StatusCode::UNAUTHORIZED {
        out.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    out
}

fn new_reference() -> String {
    use rand::Rng;
    format!("{:08x}", rand::rngs::OsRng.gen::<u32>())
}

/// API responses: every error under `/api/` becomes `application/problem+json`, whether it
/// came from a handler's [`Error`], a handler's own JSON (kept, with the problem members
/// added), or axum itself (a body that is not JSON, a wrong content type, a wrong method, a
/// body over the limit: plain text or empty until here). Errors without an internal
/// reference get one, logged with the route and code, so the reference always leads to a
/// log line.
pub(super) async fn problem_json(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = super::layers::loggable_route(&request);
    let method = request.method().clone();
    let response = next.run(request).await;
    // An `Error` carries its status (a page answer may be a redirect to the sign-in page).
    let status = response
        .extensions()
        .get::<ErrorInfo>()
        .map_or(response.status(), |i| i.status);
    let already = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v == "application/problem+json");
    if !(status.is_client_error() || status.is_server_error()) || already {
        return response;
    }
    let info = response.extensions().get::<ErrorInfo>().cloned();
    let (parts, body) = response.into_parts();
    let is_json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.starts_with("application/json") || v.starts_with("application/problem+json")
        });
    let bytes = axum::body::to_bytes(body, 256 * 1024)
        .await
        .unwrap_or_default();
    let mut extra = if is_json {
        match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        }
    } else {
        serde_json::Map::new()
    };
    let text = String::from_utf8_lossy(&bytes).trim().to_string();
    let (code, detail) = match &info {
        Some(i) if i.code == "not_signed_in" => (
            i.code.to_string(),
            "Send an API token in the header `Authorization: Bearer shtok_...`; make one on your account page.".to_string(),
        ),
        Some(i) => (i.code.to_string(), i.message.clone()),
        None => {
            let code = extra
                .get("error")
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| code_for(status).to_string());
            let detail = extra
                .get("message")
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| match status.as_u16() {
                    405 => format!("This address does not take {method}: /api/openapi.json lists the methods each route takes."),
                    415 => "Send the body as JSON, with the header `Content-Type: application/json`.".to_string(),
                    413 => "The body is larger than this route accepts; send less.".to_string(),
                    404 => "There is nothing at this address: /api/openapi.json lists the routes.".to_string(),
                    400 | 422 if !text.is_empty() => format!("The request body could not be used ({text}); check it against /api/openapi.json."),
                    _ if !text.is_empty() && !is_json => text.clone(),
                    _ => title(status).to_string(),
                });
            (code, detail)
        }
    };
    let reference = match info.as_ref().and_then(|i| i.id.clone()) {
        Some(id) => id,
        None => {
            let id = new_reference();
            tracing::info!(reference = %id, route = %route, status = status.as_u16(), code = %code, "API request refused");
            id
        }
    };
    extra.remove("type");
    let mut out = problem(status, &code, &detail, &reference, extra);
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().append(name.clone(), value.clone());
        }
    }
    if let Some(i) = info {
        out.extensions_mut().insert(i);
    }
    out
}

/// Fallback for unknown paths: a page, or under `/api/` a problem document.
pub(super) async fn not_found(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/api/") {
        let reference = new_reference();
        tracing::info!(reference = %reference, status = 404, code = "not_found", "API request refused: no such route");
        return problem(
            StatusCode::NOT_FOUND,
            "not_found",
            "There is nothing at this address: /api/openapi.json lists the routes.",
            &reference,
            serde_json::Map::new(),
        );
    }
    Error::NotFound.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overloaded_database_is_busy_not_broken() {
        let response = Error::Database(sqlx::Error::PoolTimedOut).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "60");
        let info = response.extensions().get::<ErrorInfo>().unwrap();
        assert_eq!(info.code, "busy");
        assert!(
            info.message.contains("nothing was changed"),
            "{}",
            info.message
        );
        assert!(
            info.id.is_some(),
            "a busy answer carries a logged reference"
        );
        // Anything else from the database stays an internal error.
        let response = Error::Database(sqlx::Error::RowNotFound).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
    }
}
