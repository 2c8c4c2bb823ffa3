//! The account page: password, sessions ("sign out everywhere"), API tokens, recovery codes,
//! and the owner's own failed sign-ins.

use super::extract::{clear_session_cookie, Authenticated};
use super::form::{CsrfToken, Form};
use super::templates::{
    render, when, AccountPage, FailureRow, FormErrors, Layout, MessagePage, RecoveryCodesPage,
    SessionRow, TokenCreatedPage, TokenRow,
};
use crate::accounts::{self, format_roles, Role};
use crate::audit::{self, Filter};
use crate::throttle::{self, Gate};
use crate::{passwords, policy, sessions, tokens, AppState, Error, Result};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;
use zeroize::Zeroizing;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/account", get(account_get))
        .route("/account/password", post(account_password_post))
        .route(
            "/account/sign-out-everywhere",
            post(account_sign_out_everywhere_post),
        )
        .route("/account/tokens", post(account_tokens_post))
        .route(
            "/account/tokens/{id}/revoke",
            post(account_token_revoke_post),
        )
        .route("/account/recovery-codes", post(account_recovery_codes_post))
}

/// Failed sign-ins for an email over the last 30 days, from the audit log.
pub(super) async fn failures_for(state: &AppState, email: &str) -> Result<Vec<FailureRow>> {
    let now = state.clock.now();
    let records = audit::search(
        &state.db,
        &Filter {
            user: String::new(),
            action: "sign_in_failed".into(),
            from: String::new(),
            to: String::new(),
        },
        500,
    )
    .await?;
    Ok(records
        .into_iter()
        .filter(|r| r.subject == email && r.at >= now - 30 * 86_400)
        .take(20)
        .map(|r| FailureRow {
            at: when(r.at),
            address: r.address,
            reason: serde_json::from_str::<serde_json::Value>(&r.details)
                .ok()
                .and_then(|v| v.get("reason").and_then(|x| x.as_str()).map(str::to_string))
                .unwrap_or_default(),
        })
        .collect())
}

/// The account page showing errors of the signing-key form (which the register module handles).
pub(super) async fn account_with_errors(
    state: &AppState,
    auth: &Authenticated,
    csrf: &str,
    errors: FormErrors,
    key_text: &str,
    key_label: &str,
) -> Result<Response> {
    let mut page = account_page(state, auth, csrf, errors, None, "").await?;
    page.key_text = key_text.to_string();
    page.key_label = key_label.to_string();
    Ok((StatusCode::BAD_REQUEST, render(&page)).into_response())
}

async fn account_page(
    state: &AppState,
    auth: &Authenticated,
    csrf: &str,
    errors: FormErrors,
    notice: Option<String>,
    token_name: &str,
) -> Result<AccountPage> {
    let now = state.clock.now();
    let max_token_days = policy::load(&state.db).await?.max_token_days;
    let current = auth
        .session
        .as_ref()
        .map(|s| s.hash.clone())
        .unwrap_or_default();
    let sessions = sessions::list(&state.db, auth.user.id)
        .await?
        .into_iter()
        .map(|s| SessionRow {
            started: when(s.created_at),
            last_seen: when(s.last_seen_at),
            address: s.address,
            browser: s.user_agent,
            current: s.hash == current,
        })
        .collect();
    let tokens = tokens::list(&state.db, auth.user.id)
        .await?
        .into_iter()
        .map(|t| TokenRow {
            id: t.id,
            live: t.is_live(now),
            state: if t.revoked_at.is_some() {
                "revoked"
            } else if now >= t.expires_at {
                "expired"
            } else {
                "active"
            },
            name: t.name,
            scopes: format_roles(&t.scopes),
            created: when(t.created_at),
            expires: when(t.expires_at),
            last_used: t.last_used_at.map(when).unwrap_or_else(|| "never".into()),
        })
        .collect();
    Ok(AccountPage {
        layout: Layout::signed_in(auth, csrf),
        email: auth.user.email.clone(),
        name: auth.user.name.clone(),
        roles: format_roles(&auth.user.roles),
        role_options: auth.user.roles.iter().map(|r| r.as_str()).collect(),
        sessions,
        tokens,
        failures: failures_for(state, &auth.user.email).await?,
        recovery_left: accounts::recovery_codes_left(&state.db, auth.user.id).await?,
        errors,
        notice,
        token_name: token_name.to_string(),
        max_token_days,
        default_token_days: max_token_days.min(30),
        is_technician: auth.user.has(Role::Technician),
        signing_keys: super::register::key_rows(state, auth.user.id).await?,
        key_text: String::new(),
        key_label: String::new(),
    })
}

/// Checks the signed-in person's password again before a sensitive change. Each attempt counts
/// against the account's sign-in lock (so a borrowed browser cannot guess on and on), is
/// taken back when right, and a wrong one is audited. Returns whether it was right and the
/// status to answer with when it was not; the reason goes into `errors` under `field`.
async fn confirm_password(
    state: &AppState,
    auth: &Authenticated,
    typed: &str,
    purpose: &str,
    field: &'static str,
    wrong: &str,
    errors: &mut FormErrors,
) -> Result<(bool, StatusCode)> {
    if typed.is_empty() {
        errors.add(field, "Enter your password.");
        return Ok((false, StatusCode::BAD_REQUEST));
    }
    let now = state.clock.now();
    let (gate, reservation) = throttle::reserve(
        &state.db,
        now,
        &state.settings.throttle,
        &auth.user.email,
        &auth.address,
    )
    .await?;
    if let Gate::Locked { until } = gate {
        let minutes = ((until - now).max(1) + 59) / 60;
        errors.add(
            field,
            format!("Too many wrong passwords. Try again in {minutes} minute{}; if this was not you, tell your administrator.", if minutes == 1 { "" } else { "s" }),
        );
        return Ok((false, StatusCode::TOO_MANY_REQUESTS));
    }
    if let Gate::Open { delay } = gate {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
    let stored = accounts::password_hash(&state.db, auth.user.id).await?;
    let right = typed.chars().count() <= passwords::MAX_CHARS
        && passwords::verify_async(Zeroizing::new(typed.to_string()), stored).await;
    if right {
        reservation.release(&state.db).await?;
        return Ok((true, StatusCode::OK));
    }
    // The reservation stays as this failure's record.
    audit::record(
        &state.db,
        now,
        &auth.actor(),
        "password_confirmation_failed",
        &auth.user.email,
        json!({ "for": purpose }),
    )
    .await?;
    errors.add(field, wrong.to_string());
    Ok((false, StatusCode::BAD_REQUEST))
}

/// Pages that change the account need a browser session (not an API token).
fn require_browser(auth: &Authenticated) -> Result<()> {
    if auth.session.is_some() {
        Ok(())
    } else {
        Err(Error::Forbidden)
    }
}

async fn account_get(
    State(state): State<AppState>,
    auth: Authenticated,
    csrf: CsrfToken,
) -> Result<Response> {
    require_browser(&auth)?;
    Ok(render(
        &account_page(&state, &auth, &csrf.0, FormErrors::default(), None, "").await?,
    ))
}

async fn account_password_post(
    State(state): State<AppState>,
    auth: Authenticated,
    form: Form,
) -> Result<Response> {
    require_browser(&auth)?;
    let now = state.clock.now();
    let mut errors = FormErrors::default();
    let (confirmed, status) = confirm_password(
        &state,
        &auth,
        form.get("current"),
        "password change",
        "current",
        "Your current password is not right.",
        &mut errors,
    )
    .await?;
    if confirmed {
        let (password, confirm) = (form.get("password"), form.get("confirm"));
        if password.is_empty() {
            errors.add("password", "Enter a new password.");
        } else if let Err(m) = passwords::check_new(password, &auth.user.email, &auth.user.name) {
            errors.add("password", m);
        } else if password != confirm {
            errors.add(
                "confirm",
                "The two passwords are not the same. Type them again.",
            );
        }
    }
    if !errors.is_empty() {
        let page = account_page(&state, &auth, &form.csrf, errors, None, "").await?;
        return Ok((status, render(&page)).into_response());
    }
    let hash = passwords::hash_async(Zeroizing::new(form.get("password").to_string())).await?;
    let keep = auth.session.as_ref().map(|s| s.hash.as_str());
    accounts::change_password(&state.db, now, &auth.actor(), &auth.user, hash, keep).await?;
    let page = account_page(&state, &auth, &form.csrf, FormErrors::default(), Some("Your password has been changed. You have been signed out everywhere else and your API tokens have been revoked.".into()), "").await?;
    Ok(render(&page))
}

async fn account_sign_out_everywhere_post(
    State(state): State<AppState>,
    auth: Authenticated,
    form: Form,
) -> Result<Response> {
    require_browser(&auth)?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let ended = sessions::end_all(&mut tx, auth.user.id, None).await?;
    audit::append(
        &mut tx,
        now,
        &auth.actor(),
        "sign_out_everywhere",
        &auth.user.email,
        json!({ "sessions_ended": ended }),
    )
    .await?;
    tx.commit().await?;
    Ok((
        [(
            header::SET_COOKIE,
            clear_session_cookie(state.settings.https),
        )],
        render(&MessagePage {
            layout: Layout::visitor(&form.csrf_for_session(&state.keys, None)),
            title: "You have signed out everywhere".into(),
            message: format!("All {ended} of your sessions have ended, including this one."),
            link_href: "/sign-in".into(),
            link_text: "Sign in again".into(),
        }),
    )
        .into_response())
}

async fn account_tokens_post(
    State(state): State<AppState>,
    auth: Authenticated,
    form: Form,
) -> Result<Response> {
    require_browser(&auth)?;
    let now = state.clock.now();
    let name = form.get("token_name").trim().to_string();
    let mut errors = FormErrors::default();
    if name.is_empty() {
        errors.add(
            "token_name",
            "Enter a name for the token, such as the computer it is for.",
        );
    } else if name.chars().count() > 100 || name.chars().any(char::is_control) {
        errors.add(
            "token_name",
            "The name must be at most 100 ordinary characters.",
        );
    }
    let max = policy::load(&state.db).await?.max_token_days;
    let days: i64 = match form.get("days").trim().parse() {
        Ok(d) if (1..=max).contains(&d) => d,
        _ => {
            errors.add(
                "days",
                format!(
                    "Enter a number of days from 1 to {max} (the school's longest token life)."
                ),
            );
            0
        }
    };
    let mut scopes = Vec::new();
    for value in form.all("scope") {
        match Role::parse(value) {
            Some(r) if auth.user.has(r) => scopes.push(r),
            _ => {
                errors.add(
                    "scope-staff",
                    "A token can only have roles your account holds.",
                );
                break;
            }
        }
    }
    if scopes.is_empty() && errors.get("scope-staff").is_none() {
        errors.add("scope-staff", "Choose at least one role for the token.");
    }
    // A token outlives the session: whoever makes one proves they know the password, not only
    // that they hold a signed-in browser. Checked last, so a form with other mistakes does
    // not spend an attempt.
    let mut status = StatusCode::BAD_REQUEST;
    if errors.is_empty() {
        status = confirm_password(
            &state,
            &auth,
            form.get("token_password"),
            "api token",
            "token_password",
            "That is not your password. Enter the password you sign in with.",
            &mut errors,
        )
        .await?
        .1;
    }
    if !errors.is_empty() {
        let page = account_page(&state, &auth, &form.csrf, errors, None, &name).await?;
        return Ok((status, render(&page)).into_response());
    }
    let mut tx = state.db.begin().await?;
    let (secret, token) = tokens::create(&mut tx, now, auth.user.id, &name, &scopes, days).await?;
    audit::append(&mut tx, now, &auth.actor(), "token_created", &auth.user.email, json!({ "token_id": token.id, "name": name, "scopes": format_roles(&scopes), "expires_at": token.expires_at })).await?;
    tx.commit().await?;
    Ok(render(&TokenCreatedPage {
        layout: Layout::signed_in(&auth, &form.csrf),
        name,
        token: secret,
        scopes: format_roles(&scopes),
        expires: when(token.expires_at),
    }))
}

async fn account_token_revoke_post(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<i64>,
    _form: Form,
) -> Result<Response> {
    require_browser(&auth)?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    if !tokens::revoke(&mut tx, now, auth.user.id, id).await? {
        return Err(Error::NotFound);
    }
    audit::append(
        &mut tx,
        now,
        &auth.actor(),
        "token_revoked",
        &auth.user.email,
        json!({ "token_id": id }),
    )
    .await?;
    tx.commit().await?;
    Ok(Redirect::to("/account").into_response())
}

async fn account_recovery_codes_post(
    State(state): State<AppState>,
    auth: Authenticated,
    form: Form,
) -> Result<Response> {
    require_browser(&auth)?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let codes = accounts::new_recovery_codes(&mut tx, &state.keys, auth.user.id).await?;
    audit::append(
        &mut tx,
        now,
        &auth.actor(),
        "recovery_codes_replaced",
        &auth.user.email,
        json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(render(&RecoveryCodesPage {
        layout: Layout::signed_in(&auth, &form.csrf),
        codes,
    }))
}
