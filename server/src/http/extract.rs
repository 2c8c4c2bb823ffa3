//! Who is asking: client address, session cookie or API token, and the typed role extractors
//! (`Staff`, `Approver`, `Admin`, `Technician`) so a handler's signature says who may call it.

use super::session_cookie_name;
use crate::accounts::{self, Role, User};
use crate::audit::{self, Actor};
use crate::sessions::{self, Lookup, Session, Stage};
use crate::tokens::{self, ApiToken};
use crate::{AppState, Error};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use std::net::{IpAddr, SocketAddr};

/// Reads one cookie from the request headers.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// `Set-Cookie` for a session id.
pub(crate) fn session_cookie(value: &str, https: bool) -> String {
    format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Strict{}",
        session_cookie_name(https),
        if https { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` that removes the session cookie.
pub(crate) fn clear_session_cookie(https: bool) -> String {
    format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        session_cookie_name(https),
        if https { "; Secure" } else { "" }
    )
}

/// The raw session cookie this request carries, if any.
pub(crate) fn session_cookie_value(headers: &HeaderMap, https: bool) -> Option<String> {
    cookie(headers, session_cookie_name(https))
}

/// The client's address: the peer, or the last hop of `X-Forwarded-For` when the peer is a
/// trusted reverse proxy.
#[derive(Clone, Debug)]
pub struct ClientAddress(pub String);

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        Ok(Self(client_address(parts, state)))
    }
}

pub(crate) fn client_address(parts: &Parts, state: &AppState) -> String {
    let peer: Option<IpAddr> = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(peer) = peer {
        if state.settings.trusted_proxies.contains(&peer) {
            let forwarded = parts
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .and_then(|v| v.trim().parse::<IpAddr>().ok());
            if let Some(ip) = forwarded {
                return ip.to_string();
            }
        }
        return peer.to_string();
    }
    "unknown".into()
}

/// A signed-in caller: a fully signed-in browser session or a live API token.
#[derive(Clone, Debug)]
pub struct Authenticated {
    /// The account.
    pub user: User,
    /// The browser session, when signed in through pages.
    pub session: Option<Session>,
    /// The API token, when called by a program.
    pub token: Option<ApiToken>,
    /// Roles this request may act with (a token's scope narrows the account's roles).
    pub roles: Vec<Role>,
    /// Client address.
    pub address: String,
}

impl Authenticated {
    /// The actor for audit records.
    pub fn actor(&self) -> Actor {
        Actor {
            user_id: Some(self.user.id),
            label: self.user.email.clone(),
            address: self.address.clone(),
        }
    }

    /// Whether this request may act as `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// The token of an `Authorization: Bearer ...` header (the scheme in any case, RFC 7235).
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

async fn authenticate(parts: &mut Parts, state: &AppState) -> Result<Authenticated, Error> {
    if let Some(done) = parts.extensions.get::<Authenticated>() {
        return Ok(done.clone());
    }
    let now = state.clock.now();
    let address = client_address(parts, state);
    let bearer = bearer_token(&parts.headers);
    // Changes through the API take a token, never the browser's session cookie: a cookie is
    // sent by the browser on its own, a token only by a program that holds it (no CSRF).
    // (Routers nested under /api see a shortened path; the original is kept aside.)
    let path = parts
        .extensions
        .get::<axum::extract::OriginalUri>()
        .map_or_else(|| parts.uri.path(), |o| o.0.path());
    if bearer.is_none() && path.starts_with("/api/") && !parts.method.is_safe() {
        return Err(Error::TokenRequired);
    }
    let auth = if let Some(secret) = bearer {
        // The use is recorded (last_used_at and the audit record) in one transaction.
        let mut tx = state.db.begin().await?;
        let token = tokens::authenticate(&mut tx, now, secret)
            .await?
            .ok_or(Error::NotSignedIn)?;
        let user = accounts::by_id_in(&mut tx, token.user_id)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(Error::NotSignedIn)?;
        let roles = token
            .scopes
            .iter()
            .copied()
            .filter(|r| user.has(*r))
            .collect();
        let actor = Actor {
            user_id: Some(user.id),
            label: user.email.clone(),
            address: address.clone(),
        };
        audit::append(
            &mut tx,
            now,
            &actor,
            "token_used",
            &user.email,
            serde_json::json!({ "token_id": token.id, "token": token.name, "path": parts.uri.path() }),
        )
        .await?;
        tx.commit().await?;
        Authenticated {
            user,
            session: None,
            token: Some(token),
            roles,
            address,
        }
    } else {
        let Some(value) = session_cookie_value(&parts.headers, state.settings.https) else {
            return Err(Error::NotSignedIn);
        };
        let session = match sessions::find(&state.db, now, &state.settings.sessions, &value).await?
        {
            Lookup::Active(s) if s.stage == Stage::Full => s,
            // Half-way through sign-in: not yet signed in, but keep that cookie.
            Lookup::Active(_) => return Err(Error::NotSignedIn),
            // A cookie the database no longer knows: signed out elsewhere, disabled, password
            // changed, or tampered with. In every case the person's session has ended.
            Lookup::Ended | Lookup::Unknown => return Err(Error::SessionEnded),
        };
        let user = accounts::by_id(&state.db, session.user_id)
            .await?
            .ok_or(Error::NotSignedIn)?;
        if user.disabled {
            sessions::end(&mut *state.db.pool().acquire().await?, &session.hash).await?;
            return Err(Error::SessionEnded);
        }
        Authenticated {
            roles: user.roles.clone(),
            user,
            session: Some(session),
            token: None,
            address,
        }
    };
    parts.extensions.insert(auth.clone());
    Ok(auth)
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        authenticate(parts, state).await
    }
}

/// The caller, if signed in (pages that look different for visitors).
#[derive(Clone, Debug)]
pub struct MaybeAuthenticated(pub Option<Authenticated>);

impl FromRequestParts<AppState> for MaybeAuthenticated {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        match authenticate(parts, state).await {
            Ok(a) => Ok(Self(Some(a))),
            Err(Error::NotSignedIn | Error::SessionEnded) => Ok(Self(None)),
            Err(e) => Err(e),
        }
    }
}

macro_rules! role_extractor {
    ($(#[$doc:meta])* $name:ident, $role:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $name(pub Authenticated);

        impl FromRequestParts<AppState> for $name {
            type Rejection = Error;

            async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
                let auth = authenticate(parts, state).await?;
                if auth.has($role) {
                    Ok(Self(auth))
                } else {
                    Err(Error::Forbidden)
                }
            }
        }

        impl std::ops::Deref for $name {
            type Target = Authenticated;
            fn deref(&self) -> &Authenticated {
                &self.0
            }
        }
    };
}

role_extractor!(
    /// A caller with the `staff` role.
    Staff,
    Role::Staff
);
role_extractor!(
    /// A caller with the `approver` role.
    Approver,
    Role::Approver
);
role_extractor!(
    /// A caller with the `admin` role.
    Admin,
    Role::Admin
);
role_extractor!(
    /// A caller with the `technician` role.
    Technician,
    Role::Technician
);

/// A browser half-way through signing in (password accepted; code or enrolment to come).
#[derive(Clone, Debug)]
pub struct Pending {
    /// The session.
    pub session: Session,
    /// The account.
    pub user: User,
    /// Client address.
    pub address: String,
}

impl Pending {
    /// The actor for audit records.
    pub fn actor(&self) -> Actor {
        Actor {
            user_id: Some(self.user.id),
            label: self.user.email.clone(),
            address: self.address.clone(),
        }
    }
}

impl FromRequestParts<AppState> for Pending {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let now = state.clock.now();
        let value =
            session_cookie_value(&parts.headers, state.settings.https).ok_or(Error::NotSignedIn)?;
        let session = match sessions::find(&state.db, now, &state.settings.sessions, &value).await?
        {
            Lookup::Active(s) if s.stage != Stage::Full => s,
            Lookup::Ended => return Err(Error::SessionEnded),
            _ => return Err(Error::NotSignedIn),
        };
        let user = accounts::by_id(&state.db, session.user_id)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(Error::NotSignedIn)?;
        Ok(Self {
            session,
            user,
            address: client_address(parts, state),
        })
    }
}

/// A JSON request body whose refusals are the API's own errors: past the body limit a 413 that
/// names the limit, otherwise a 400 saying what is wrong with the JSON (axum's own rejections
/// are plain text without a code an API client can read).
pub(crate) struct JsonBody<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Error> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(JsonBody(v)),
            Err(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(Error::TooLarge(format!(
                    "The request body is larger than its limit of {} KiB. Nothing was changed; send less.",
                    super::MAX_FORM_BYTES / 1024
                )))
            }
            Err(e) => Err(Error::BadInput(format!(
                "The request body is not the JSON this call expects ({}). Nothing was changed; send `Content-Type: application/json` and the fields in the API description.",
                e.body_text()
            ))),
        }
    }
}
