//! Forms and CSRF protection. Every visitor gets a random `safehand_csrf` cookie (HttpOnly,
//! SameSite=Strict; `__Host-safehand_csrf` under HTTPS); every form carries
//! HMAC(server key, that cookie and the sign-in session cookie) in a hidden `csrf` field. A
//! POST whose field does not match its cookies is refused before anything changes. Another
//! site can neither read the cookies nor compute the token, and a token (with its CSRF
//! cookie) taken from one session, such as the attacker's own, is refused in another.

use super::csrf_cookie_name;
use super::extract::{cookie, session_cookie_value};
use crate::keys::{new_token, same, ServerKeys};
use crate::{AppState, Error};
use axum::body::{to_bytes, Body};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

/// The CSRF cookie value for this request (set by [`ensure_csrf_cookie`]) and the session
/// cookie its tokens are bound to (`""` for none).
#[derive(Clone, Debug)]
struct CsrfCookie {
    value: String,
    session: String,
}

impl CsrfCookie {
    fn token(&self, keys: &ServerKeys) -> String {
        keys.csrf_token(&self.value, &self.session)
    }
}

/// The CSRF token this request's forms must carry.
fn expected_token(extensions: &axum::http::Extensions, keys: &ServerKeys) -> Result<String, Error> {
    extensions
        .get::<CsrfCookie>()
        .map(|c| c.token(keys))
        .ok_or_else(|| Error::Internal("CSRF layer missing".into()))
}

/// Gives a browser a CSRF cookie when it has none.
pub(super) async fn ensure_csrf_cookie(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let https = state.settings.https;
    let existing = cookie(request.headers(), csrf_cookie_name(https)).filter(|v| v.len() == 43);
    let (value, fresh) = match existing {
        Some(v) => (v, false),
        None => (new_token(), true),
    };
    let session = session_cookie_value(request.headers(), https).unwrap_or_default();
    request.extensions_mut().insert(CsrfCookie {
        value: value.clone(),
        session,
    });
    let mut response = next.run(request).await;
    if fresh {
        let set = format!(
            "{}={value}; Path=/; HttpOnly; SameSite=Strict{}",
            csrf_cookie_name(https),
            if https { "; Secure" } else { "" }
        );
        if let Ok(v) = HeaderValue::from_str(&set) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    // An ended session's cookie is forgotten here, where the cookie's name and flags are known.
    if response
        .extensions()
        .get::<super::error::ForgetSession>()
        .is_some()
    {
        if let Ok(v) = HeaderValue::from_str(&super::extract::clear_session_cookie(https)) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

/// The token to put in a form's hidden `csrf` field.
#[derive(Clone, Debug)]
pub struct CsrfToken(pub String);

impl FromRequestParts<AppState> for CsrfToken {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        Ok(Self(expected_token(&parts.extensions, &state.keys)?))
    }
}

/// A submitted form whose CSRF token has been checked. Fields are read by name; repeated
/// names (checkboxes) are kept in order.
#[derive(Debug)]
pub struct Form {
    fields: Vec<(String, String)>,
    /// A fresh token for re-rendering the form.
    pub csrf: String,
    cookie: CsrfCookie,
}

impl Form {
    /// The first value of a field, or "" when absent.
    pub fn get(&self, name: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// The token for a page rendered in a response that also replaces the session cookie
    /// with `session` (`None`: removes it), so the page's forms match the cookies the browser
    /// will then send.
    pub fn csrf_for_session(&self, keys: &ServerKeys, session: Option<&str>) -> String {
        keys.csrf_token(&self.cookie.value, session.unwrap_or(""))
    }

    /// Every value of a repeated field.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

impl FromRequest<AppState> for Form {
    type Rejection = Error;

    async fn from_request(request: Request<Body>, state: &AppState) -> Result<Self, Error> {
        let (parts, body) = request.into_parts();
        let cookie = parts
            .extensions
            .get::<CsrfCookie>()
            .cloned()
            .ok_or_else(|| Error::Internal("CSRF layer missing".into()))?;
        let expected = cookie.token(&state.keys);
        let is_form = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if !is_form {
            return Err(Error::BadInput(
                "This page expects a form sent from the service's own pages.".into(),
            ));
        }
        let bytes = to_bytes(body, super::MAX_FORM_BYTES).await.map_err(|_| {
            Error::TooLarge(format!(
                "The form was larger than its limit of {} KiB. Nothing was saved; shorten what you typed and try again.",
                super::MAX_FORM_BYTES / 1024
            ))
        })?;
        let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).map_err(|_| {
            Error::BadInput(
                "The form could not be read. Go back, reload the page and try again.".into(),
            )
        })?;
        let sent = fields
            .iter()
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        if !same(sent, &expected) {
            return Err(Error::Csrf);
        }
        if fields.iter().any(|(_, v)| v.contains('\0')) {
            return Err(Error::BadInput(
                "The form contained characters the service cannot accept.".into(),
            ));
        }
        Ok(Self {
            fields,
            csrf: expected,
            cookie,
        })
    }
}

/// A file sent with a multipart form.
#[derive(Debug)]
pub struct UploadedFile {
    /// The form field it came in.
    pub field: String,
    /// The file name the browser gave (untrusted; shown and offered back only after cleaning).
    pub file_name: String,
    /// The content type the browser gave.
    pub content_type: String,
    /// The bytes (bounded by the route's body limit).
    pub bytes: Vec<u8>,
}

/// A submitted multipart form (file upload) whose CSRF token has been checked.
#[derive(Debug)]
pub struct UploadForm {
    fields: Vec<(String, String)>,
    files: Vec<UploadedFile>,
    /// A fresh token for re-rendering the form.
    pub csrf: String,
}

impl UploadForm {
    /// The first value of a text field, or "" when absent.
    pub fn get(&self, name: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// Takes the file sent in field `name` (None when no file was chosen).
    pub fn take_file(&mut self, name: &str) -> Option<UploadedFile> {
        let at = self
            .files
            .iter()
            .position(|f| f.field == name && !(f.bytes.is_empty() && f.file_name.is_empty()))?;
        Some(self.files.remove(at))
    }
}

impl FromRequest<AppState> for UploadForm {
    type Rejection = Error;

    async fn from_request(request: Request<Body>, state: &AppState) -> Result<Self, Error> {
        let expected = expected_token(request.extensions(), &state.keys)?;
        let mut multipart = axum::extract::Multipart::from_request(request, state)
            .await
            .map_err(|_| {
                Error::BadInput(
                    "This page expects a form with a file, sent from the service's own pages."
                        .into(),
                )
            })?;
        let too_large = |e: axum::extract::multipart::MultipartError| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                Error::TooLarge(format!(
                    "The upload is larger than this page accepts (a limit of {} MiB for the file and the form together). Nothing was saved; choose a smaller file and try again.",
                    super::register::UPLOAD_BODY_LIMIT / (1024 * 1024)
                ))
            } else {
                Error::BadInput(
                    "The upload was cut off or could not be read. Nothing was saved; try again."
                        .into(),
                )
            }
        };
        let mut fields = Vec::new();
        let mut files = Vec::new();
        while let Some(field) = multipart.next_field().await.map_err(too_large)? {
            let name = field.name().unwrap_or("").to_string();
            match field.file_name().map(str::to_string) {
                Some(file_name) => {
                    let content_type = field.content_type().unwrap_or("").to_string();
                    let bytes = field.bytes().await.map_err(too_large)?;
                    files.push(UploadedFile {
                        field: name,
                        file_name,
                        content_type,
                        bytes: bytes.to_vec(),
                    });
                }
                None => {
                    let text = field.text().await.map_err(too_large)?;
                    if text.contains('\0') {
                        return Err(Error::BadInput(
                            "The form contained characters the service cannot accept.".into(),
                        ));
                    }
                    fields.push((name, text));
                }
            }
        }
        let sent = fields
            .iter()
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        if !same(sent, &expected) {
            return Err(Error::Csrf);
        }
        Ok(Self {
            fields,
            files,
            csrf: expected,
        })
    }
}

/// For requests sent by the service's own scripts (uploads): the CSRF token comes in the
/// `X-CSRF-Token` header instead of a form field, and must match the cookie like a form's.
#[derive(Clone, Copy, Debug)]
pub struct CsrfHeader;

impl FromRequestParts<AppState> for CsrfHeader {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let expected = expected_token(&parts.extensions, &state.keys)?;
        let sent = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if same(sent, &expected) {
            Ok(Self)
        } else {
            Err(Error::Csrf)
        }
    }
}
