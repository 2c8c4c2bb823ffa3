//! Signing in and out, first-run setup, enrolment links, TOTP enrolment and recovery codes.

use super::extract::{clear_session_cookie, session_cookie, ClientAddress, Pending};
use super::form::{CsrfToken, Form};
use super::templates::{
    render, CodePage, FormErrors, Layout, MessagePage, RecoveryCodesPage, SetPasswordPage,
    SignInPage, TotpEnrolPage,
};
use crate::accounts::{self, CodeCheck, LinkPurpose};
use crate::audit::{self, Actor};
use crate::sessions::{self, Stage};
use crate::throttle::{self, Gate};
use crate::{passwords, AppState, Error, Result};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;
use std::sync::atomic::Ordering;
use zeroize::Zeroizing;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/sign-in", get(sign_in_get).post(sign_in_post))
        .route(
            "/sign-in/code",
            get(sign_in_code_get).post(sign_in_code_post),
        )
        .route("/sign-out", post(sign_out_post))
        .route("/setup/{token}", get(setup_get).post(setup_post))
        .route("/enrol/totp", get(totp_enrol_get).post(totp_enrol_post))
        .route("/enrol/{token}", get(enrol_get).post(enrol_post))
}

/// A redirect that also sets the session cookie.
fn redirect_with_session(to: &str, value: &str, https: bool) -> Response {
    (
        [(header::SET_COOKIE, session_cookie(value, https))],
        Redirect::to(to),
    )
        .into_response()
}

/// The message for every failed password step: the same for unknown accounts, wrong
/// passwords and disabled accounts, so the page reveals nothing about who has an account.
const WRONG_PASSWORD: &str = "Enter a correct email address and password.";

#[derive(serde::Deserialize)]
pub(super) struct SignInQuery {
    #[serde(default)]
    ended: Option<String>,
    #[serde(default)]
    password_set: Option<String>,
}

fn lock_message(now: i64, until: i64) -> String {
    let minutes = ((until - now).max(1) + 59) / 60;
    format!("Too many failed sign-in attempts. Sign-in is locked for {minutes} more minute{}. If this was not you, tell your administrator.", if minutes == 1 { "" } else { "s" })
}

async fn sign_in_get(csrf: CsrfToken, Query(q): Query<SignInQuery>) -> Response {
    let notice = if q.ended.is_some() {
        Some("Your session has ended. Sign in again.".to_string())
    } else if q.password_set.is_some() {
        Some("Your password is set. Sign in with it.".to_string())
    } else {
        None
    };
    render(&SignInPage {
        layout: Layout::visitor(&csrf.0),
        email: String::new(),
        errors: FormErrors::default(),
        notice,
    })
}

async fn sign_in_post(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    form: Form,
) -> Result<Response> {
    let now = state.clock.now();
    let email: String = form.get("email").trim().chars().take(254).collect();
    let password = Zeroizing::new(form.get("password").to_string());
    let page = |errors: FormErrors, status: StatusCode| {
        (
            status,
            render(&SignInPage {
                layout: Layout::visitor(&form.csrf),
                email: email.clone(),
                errors,
                notice: None,
            }),
        )
            .into_response()
    };
    let mut errors = FormErrors::default();
    if email.is_empty() {
        errors.add("email", "Enter your email address.");
    }
    if password.is_empty() {
        errors.add("password", "Enter your password.");
    } else if password.chars().count() > passwords::MAX_CHARS {
        errors.add("password", WRONG_PASSWORD);
    }
    if !errors.is_empty() {
        return Ok(page(errors, StatusCode::BAD_REQUEST));
    }
    // Counted before it is checked, so parallel guesses cannot slip past the limit.
    let (gate, reservation) =
        throttle::reserve(&state.db, now, &state.settings.throttle, &email, &address).await?;
    match gate {
        Gate::Locked { until } => {
            state.metrics.sign_in_locked.fetch_add(1, Ordering::Relaxed);
            audit::record(
                &state.db,
                now,
                &Actor {
                    user_id: None,
                    label: email.clone(),
                    address: address.clone(),
                },
                "sign_in_refused_locked",
                &accounts::normalise_email(&email),
                json!({}),
            )
            .await?;
            errors.add("email", lock_message(now, until));
            return Ok(page(errors, StatusCode::TOO_MANY_REQUESTS));
        }
        Gate::Open { delay } => {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
    }
    let user = accounts::by_email(&state.db, &email).await?;
    let stored = match &user {
        Some(u) => accounts::password_hash(&state.db, u.id).await?,
        None => None,
    };
    let password_ok = passwords::verify_async(password, stored).await;
    let user = match user {
        Some(u) if password_ok && !u.disabled => u,
        other => {
            // The reservation stays as this failure's record.
            let mut tx = state.db.begin().await?;
            state
                .metrics
                .sign_in_failures
                .fetch_add(1, Ordering::Relaxed);
            let reason = match &other {
                None => "unknown account",
                Some(u) if u.disabled && password_ok => "account disabled",
                Some(_) => "wrong password",
            };
            audit::append(
                &mut tx,
                now,
                &Actor {
                    user_id: other.as_ref().map(|u| u.id),
                    label: accounts::normalise_email(&email),
                    address: address.clone(),
                },
                "sign_in_failed",
                &accounts::normalise_email(&email),
                json!({ "step": "password", "reason": reason }),
            )
            .await?;
            tx.commit().await?;
            errors.add("email", WRONG_PASSWORD);
            return Ok(page(errors, StatusCode::UNAUTHORIZED));
        }
    };
    reservation.release(&state.db).await?;
    let stage = if user.has_totp {
        Stage::Code
    } else {
        Stage::Enrol
    };
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown");
    let value = sessions::start(
        &mut *state.db.pool().acquire().await?,
        now,
        user.id,
        stage,
        &address,
        agent,
    )
    .await?;
    let to = if stage == Stage::Code {
        "/sign-in/code"
    } else {
        "/enrol/totp"
    };
    Ok(redirect_with_session(to, &value, state.settings.https))
}

async fn sign_in_code_get(_pending: Pending, csrf: CsrfToken) -> Response {
    render(&CodePage {
        layout: Layout::visitor(&csrf.0),
        errors: FormErrors::default(),
    })
}

async fn sign_in_code_post(
    State(state): State<AppState>,
    pending: Pending,
    form: Form,
) -> Result<Response> {
    let now = state.clock.now();
    if pending.session.stage != Stage::Code {
        return Ok(Redirect::to("/enrol/totp").into_response());
    }
    let user = &pending.user;
    let code_page = |message: &str, status: StatusCode| {
        let mut errors = FormErrors::default();
        errors.add("code", message);
        (
            status,
            render(&CodePage {
                layout: Layout::visitor(&form.csrf),
                errors,
            }),
        )
            .into_response()
    };
    // Counted before it is checked (see `throttle::reserve`).
    let (gate, reservation) = throttle::reserve(
        &state.db,
        now,
        &state.settings.throttle,
        &user.email,
        &pending.address,
    )
    .await?;
    if let Gate::Locked { until } = gate {
        state.metrics.sign_in_locked.fetch_add(1, Ordering::Relaxed);
        sessions::end(
            &mut *state.db.pool().acquire().await?,
            &pending.session.hash,
        )
        .await?;
        let mut errors = FormErrors::default();
        errors.add("email", lock_message(now, until));
        return Ok((
            StatusCode::TOO_MANY_REQUESTS,
            [(
                header::SET_COOKIE,
                clear_session_cookie(state.settings.https),
            )],
            render(&SignInPage {
                layout: Layout::visitor(&form.csrf_for_session(&state.keys, None)),
                email: user.email.clone(),
                errors,
                notice: None,
            }),
        )
            .into_response());
    }
    let code = form.get("code").trim();
    if code.is_empty() {
        // Not an attempt: nothing was checked.
        reservation.release(&state.db).await?;
        return Ok(code_page(
            "Enter the 6-digit code from your authenticator app.",
            StatusCode::BAD_REQUEST,
        ));
    }
    if code.len() > 32 {
        reservation.release(&state.db).await?;
        return Ok(code_page(
            "The code is too long. Enter the 6-digit code from your app, or a recovery code.",
            StatusCode::BAD_REQUEST,
        ));
    }
    // The code's use, the session change, the throttle and the audit record: one transaction.
    let mut tx = state.db.begin().await?;
    let result = accounts::check_code(&mut tx, &state.keys, now, user, code).await?;
    match result {
        CodeCheck::Totp | CodeCheck::Recovery { .. } => {
            let value = sessions::advance(&mut tx, now, &pending.session, Stage::Full).await?;
            throttle::clear_account(&mut tx, &user.email).await?;
            state.metrics.sign_ins.fetch_add(1, Ordering::Relaxed);
            let method = if result == CodeCheck::Totp {
                "totp"
            } else {
                "recovery code"
            };
            audit::append(
                &mut tx,
                now,
                &pending.actor(),
                "sign_in",
                &user.email,
                json!({ "second_factor": method }),
            )
            .await?;
            if let CodeCheck::Recovery { left } = result {
                audit::append(
                    &mut tx,
                    now,
                    &pending.actor(),
                    "recovery_code_used",
                    &user.email,
                    json!({ "left": left }),
                )
                .await?;
            }
            tx.commit().await?;
            reservation.release(&state.db).await?;
            Ok(redirect_with_session("/", &value, state.settings.https))
        }
        CodeCheck::Replayed | CodeCheck::Wrong => {
            // The reservation stays as this failure's record.
            state
                .metrics
                .sign_in_failures
                .fetch_add(1, Ordering::Relaxed);
            let reason = if result == CodeCheck::Replayed {
                "code already used"
            } else {
                "wrong code"
            };
            audit::append(
                &mut tx,
                now,
                &pending.actor(),
                "sign_in_failed",
                &user.email,
                json!({ "step": "code", "reason": reason }),
            )
            .await?;
            tx.commit().await?;
            let message = if result == CodeCheck::Replayed {
                "That code has already been used. Wait for your app to show a new code, then enter it."
            } else {
                "The code is not right. Enter the current 6-digit code from your authenticator app."
            };
            Ok(code_page(message, StatusCode::UNAUTHORIZED))
        }
    }
}

async fn sign_out_post(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    form: Form,
) -> Result<Response> {
    let now = state.clock.now();
    if let Some(value) = super::extract::session_cookie_value(&headers, state.settings.https) {
        if let sessions::Lookup::Active(s) =
            sessions::find(&state.db, now, &state.settings.sessions, &value).await?
        {
            let mut tx = state.db.begin().await?;
            sessions::end(&mut tx, &s.hash).await?;
            if let Some(user) = accounts::by_id_in(&mut tx, s.user_id).await? {
                let actor = Actor {
                    user_id: Some(user.id),
                    label: user.email.clone(),
                    address,
                };
                audit::append(&mut tx, now, &actor, "sign_out", &user.email, json!({})).await?;
            }
            tx.commit().await?;
        }
    }
    Ok((
        [(
            header::SET_COOKIE,
            clear_session_cookie(state.settings.https),
        )],
        render(&MessagePage {
            layout: Layout::visitor(&form.csrf_for_session(&state.keys, None)),
            title: "You have signed out".into(),
            message: "You have signed out of Safehand.".into(),
            link_href: "/sign-in".into(),
            link_text: "Sign in again".into(),
        }),
    )
        .into_response())
}

/// Checks a new password and its confirmation; adds messages to `errors`.
fn check_password_fields(
    errors: &mut FormErrors,
    password: &str,
    confirm: &str,
    email: &str,
    name: &str,
) {
    if password.is_empty() {
        errors.add("password", "Enter a password.");
    } else if let Err(message) = passwords::check_new(password, email, name) {
        errors.add("password", message);
    } else if password != confirm {
        errors.add(
            "confirm",
            "The two passwords are not the same. Type them again.",
        );
    }
}

async fn setup_get(
    State(state): State<AppState>,
    csrf: CsrfToken,
    Path(token): Path<String>,
) -> Result<Response> {
    let link = accounts::find_link(&state.db, state.clock.now(), &token).await?;
    if link.purpose != LinkPurpose::Setup {
        return Err(Error::LinkNotValid);
    }
    Ok(render(&setup_page(
        &csrf.0,
        &token,
        "",
        "",
        FormErrors::default(),
    )))
}

fn setup_page(
    csrf: &str,
    token: &str,
    email: &str,
    name: &str,
    errors: FormErrors,
) -> SetPasswordPage {
    SetPasswordPage {
        layout: Layout::visitor(csrf),
        title: "Set up Safehand".into(),
        intro: "Create the first administrator account. You will then set up an authenticator app for the security codes.".into(),
        action: format!("/setup/{token}"),
        ask_identity: true,
        email: email.into(),
        name: name.into(),
        errors,
    }
}

async fn setup_post(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    Path(token): Path<String>,
    form: Form,
) -> Result<Response> {
    let now = state.clock.now();
    let link = accounts::find_link(&state.db, now, &token).await?;
    if link.purpose != LinkPurpose::Setup {
        return Err(Error::LinkNotValid);
    }
    let (email, name) = (form.get("email").trim(), form.get("name").trim());
    let mut errors = FormErrors::default();
    if let Err(m) = accounts::check_name(name) {
        errors.add("name", m);
    }
    if let Err(m) = accounts::check_email(email) {
        errors.add("email", m);
    }
    check_password_fields(
        &mut errors,
        form.get("password"),
        form.get("confirm"),
        email,
        name,
    );
    if !errors.is_empty() {
        return Ok((
            StatusCode::BAD_REQUEST,
            render(&setup_page(&form.csrf, &token, email, name, errors)),
        )
            .into_response());
    }
    let hash = passwords::hash_async(Zeroizing::new(form.get("password").to_string())).await?;
    let user = accounts::complete_link(
        &state.db,
        now,
        &address,
        &token,
        Some(email),
        Some(name),
        hash,
    )
    .await?;
    start_enrolment(&state, &headers, &address, user.id).await
}

async fn start_enrolment(
    state: &AppState,
    headers: &HeaderMap,
    address: &str,
    user_id: i64,
) -> Result<Response> {
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown");
    let value = sessions::start(
        &mut *state.db.pool().acquire().await?,
        state.clock.now(),
        user_id,
        Stage::Enrol,
        address,
        agent,
    )
    .await?;
    Ok(redirect_with_session(
        "/enrol/totp",
        &value,
        state.settings.https,
    ))
}

fn enrol_page(
    csrf: &str,
    token: &str,
    email: &str,
    purpose: LinkPurpose,
    errors: FormErrors,
) -> SetPasswordPage {
    SetPasswordPage {
        layout: Layout::visitor(csrf),
        title: if purpose == LinkPurpose::Reset {
            "Set a new password".into()
        } else {
            "Set up your Safehand account".into()
        },
        intro: if purpose == LinkPurpose::Reset {
            "Your administrator asked you to set a new password.".into()
        } else {
            "Create a password. You will then set up an authenticator app for the security codes."
                .into()
        },
        action: format!("/enrol/{token}"),
        ask_identity: false,
        email: email.into(),
        name: String::new(),
        errors,
    }
}

async fn enrol_get(
    State(state): State<AppState>,
    csrf: CsrfToken,
    Path(token): Path<String>,
) -> Result<Response> {
    let link = accounts::find_link(&state.db, state.clock.now(), &token).await?;
    let user = link.user.ok_or(Error::LinkNotValid)?;
    Ok(render(&enrol_page(
        &csrf.0,
        &token,
        &user.email,
        link.purpose,
        FormErrors::default(),
    )))
}

async fn enrol_post(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    Path(token): Path<String>,
    form: Form,
) -> Result<Response> {
    let now = state.clock.now();
    let link = accounts::find_link(&state.db, now, &token).await?;
    let user = link.user.clone().ok_or(Error::LinkNotValid)?;
    let mut errors = FormErrors::default();
    check_password_fields(
        &mut errors,
        form.get("password"),
        form.get("confirm"),
        &user.email,
        &user.name,
    );
    if !errors.is_empty() {
        return Ok((
            StatusCode::BAD_REQUEST,
            render(&enrol_page(
                &form.csrf,
                &token,
                &user.email,
                link.purpose,
                errors,
            )),
        )
            .into_response());
    }
    let hash = passwords::hash_async(Zeroizing::new(form.get("password").to_string())).await?;
    let user = accounts::complete_link(&state.db, now, &address, &token, None, None, hash).await?;
    if user.has_totp {
        Ok(Redirect::to("/sign-in?password_set=1").into_response())
    } else {
        start_enrolment(&state, &headers, &address, user.id).await
    }
}

async fn totp_enrol_get(
    State(state): State<AppState>,
    pending: Pending,
    csrf: CsrfToken,
) -> Result<Response> {
    if pending.session.stage != Stage::Enrol {
        return Ok(Redirect::to("/sign-in/code").into_response());
    }
    let enrolment = accounts::totp_begin(&state.db, &state.keys, &pending.user).await?;
    Ok(render(&TotpEnrolPage {
        layout: Layout::visitor(&csrf.0),
        secret: enrolment.secret_base32.to_string(),
        qr_base64: enrolment.qr_png_base64,
        errors: FormErrors::default(),
    }))
}

async fn totp_enrol_post(
    State(state): State<AppState>,
    pending: Pending,
    form: Form,
) -> Result<Response> {
    let now = state.clock.now();
    if pending.session.stage != Stage::Enrol {
        return Ok(Redirect::to("/sign-in/code").into_response());
    }
    let code = form.get("code");
    let codes = if code.trim().is_empty() || code.len() > 32 {
        None
    } else {
        accounts::totp_confirm(
            &state.db,
            &state.keys,
            now,
            &pending.actor(),
            &pending.user,
            code,
        )
        .await?
    };
    let Some(codes) = codes else {
        let enrolment = accounts::totp_begin(&state.db, &state.keys, &pending.user).await?;
        let mut errors = FormErrors::default();
        errors.add("code", "The code is not right. Check the app shows Safehand and enter the 6-digit code it shows now.");
        return Ok((
            StatusCode::BAD_REQUEST,
            render(&TotpEnrolPage {
                layout: Layout::visitor(&form.csrf),
                secret: enrolment.secret_base32.to_string(),
                qr_base64: enrolment.qr_png_base64,
                errors,
            }),
        )
            .into_response());
    };
    let mut tx = state.db.begin().await?;
    let value = sessions::advance(&mut tx, now, &pending.session, Stage::Full).await?;
    audit::append(
        &mut tx,
        now,
        &pending.actor(),
        "sign_in",
        &pending.user.email,
        json!({ "second_factor": "totp enrolment" }),
    )
    .await?;
    tx.commit().await?;
    state.metrics.sign_ins.fetch_add(1, Ordering::Relaxed);
    let layout = Layout {
        user: Some(super::templates::NavUser {
            name: pending.user.name.clone(),
            is_admin: pending.user.has(accounts::Role::Admin),
            is_register: crate::register::may_use_register(&pending.user),
            is_staff: pending.user.has(accounts::Role::Staff),
            is_approver: pending.user.has(accounts::Role::Approver),
        }),
        csrf: form.csrf_for_session(&state.keys, Some(&value)),
    };
    Ok((
        [(
            header::SET_COOKIE,
            session_cookie(&value, state.settings.https),
        )],
        render(&RecoveryCodesPage { layout, codes }),
    )
        .into_response())
}
