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
        let message = if matches!(self, Error::Storage(_)) {
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
        if matches!(self, Error::SessionEnded) {
            // Forget a cookie that no longer works. (Not for `NotSignedIn`: that cookie may be
            // a sign-in still waiting for its code, which must survive a visit to another page.)
            response.extensions_mut().insert(ForgetSession);
        }
        response.extensions_mut().insert(info);
        response
    }
}

/// API responses: any error becomes `{"error": code, "message": ..., "reference": ...}`.
pub(super) async fn json_errors(response: Response) -> Response {
    let Some(info) = response.extensions().get::<ErrorInfo>().cloned() else {
        return response;
    };
    let mut out = (
        info.status,
        Json(serde_json::json!({
            "error": info.code,
            "message": info.message,
            "reference": info.id,
        })),
    )
        .into_response();
    if info.status == StatusCode::UNAUTHORIZED {
        out.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    out.extensions_mut().insert(info);
    out
}

/// Fallback for unknown paths.
pub(super) async fn not_found() -> Error {
    Error::NotFound
}
