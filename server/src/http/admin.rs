//! Admin pages: users (create, roles, disable/enable, resets) and the audit log with filters
//! and CSV/JSON export.

use super::account::failures_for;
use super::extract::Admin;
use super::form::{CsrfToken, Form};
use super::templates::{
    render, when, AdminAuditPage, AdminMailPage, AdminUserPage, AdminUsersPage, AuditRow,
    FormErrors, Layout, MailRow, UserRow,
};
use crate::accounts::{self, format_roles, Role, User};
use crate::audit::{self, Filter};
use crate::clock::{format_rfc3339, parse_date};
use crate::{throttle, AppState, Error, Result};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/users", get(users_get).post(users_post))
        .route("/admin/users/{id}", get(user_get))
        .route("/admin/users/{id}/roles", post(user_roles_post))
        .route("/admin/users/{id}/disable", post(user_disable_post))
        .route("/admin/users/{id}/enable", post(user_enable_post))
        .route("/admin/users/{id}/reset-totp", post(user_reset_totp_post))
        .route(
            "/admin/users/{id}/reset-password",
            post(user_reset_password_post),
        )
        .route(
            "/admin/users/{id}/enrolment-link",
            post(user_enrolment_link_post),
        )
        .route("/admin/users/{id}/unlock", post(user_unlock_post))
        .route("/admin/audit", get(audit_get))
        .route("/admin/mail", get(mail_get))
        .route("/admin/audit.csv", get(audit_csv_get))
        .route("/admin/audit.json", get(audit_json_get))
}

const ROLE_OPTIONS: [&str; 4] = ["staff", "approver", "admin", "technician"];

async fn status_of(state: &AppState, u: &User) -> Result<(String, Option<i64>)> {
    let (_, locked) = throttle::status(
        &state.db,
        state.clock.now(),
        &state.settings.throttle,
        &u.email,
    )
    .await?;
    let status = if u.disabled {
        "disabled".to_string()
    } else if locked.is_some() {
        "locked (too many failed sign-ins)".to_string()
    } else if !u.has_password {
        "invited (not yet enrolled)".to_string()
    } else if !u.has_totp {
        "authenticator not set up".to_string()
    } else {
        "active".to_string()
    };
    Ok((status, locked))
}

async fn user_rows(state: &AppState) -> Result<Vec<UserRow>> {
    let mut rows = Vec::new();
    for u in accounts::list(&state.db).await? {
        let (status, _) = status_of(state, &u).await?;
        rows.push(UserRow {
            id: u.id,
            email: u.email,
            name: u.name,
            roles: format_roles(&u.roles),
            status,
        });
    }
    Ok(rows)
}

async fn users_get(
    State(state): State<AppState>,
    Admin(auth): Admin,
    csrf: CsrfToken,
) -> Result<Response> {
    Ok(render(&AdminUsersPage {
        layout: Layout::signed_in(&auth, &csrf.0),
        users: user_rows(&state).await?,
        errors: FormErrors::default(),
        email: String::new(),
        name: String::new(),
        checked: vec!["staff"],
        role_options: ROLE_OPTIONS.to_vec(),
        mail_notice: mail_notice(&state),
    }))
}

fn mail_notice(state: &AppState) -> Option<String> {
    (!state.settings.mail_sends).then(|| state.settings.mail_delivery.clone())
}

async fn mail_get(
    State(state): State<AppState>,
    Admin(auth): Admin,
    csrf: CsrfToken,
) -> Result<Response> {
    let rows = crate::mail::recent(&state.db, 100)
        .await?
        .into_iter()
        .map(|m| MailRow {
            queued: when(m.created_at),
            to: m.recipient,
            subject: m.subject,
            state: match (m.state.as_str(), m.sent_at) {
                ("sent", Some(t)) => format!("sent {}", when(t)),
                ("failed", _) => "given up".into(),
                _ => "waiting".into(),
            },
            attempts: m.attempts,
            error: m.last_error.unwrap_or_default(),
        })
        .collect();
    Ok(render(&AdminMailPage {
        layout: Layout::signed_in(&auth, &csrf.0),
        delivery: state.settings.mail_delivery.clone(),
        sends: state.settings.mail_sends,
        counts: crate::mail::counts(&state.db).await?,
        rows,
    }))
}

/// Reads the `role` checkboxes; unknown values are an error.
fn roles_from(form: &Form, errors: &mut FormErrors) -> Vec<Role> {
    let mut roles = Vec::new();
    for v in form.all("role") {
        match Role::parse(v) {
            Some(r) => roles.push(r),
            None => {
                errors.add("role-staff", "Choose roles from the list.");
                return Vec::new();
            }
        }
    }
    if roles.is_empty() && errors.get("role-staff").is_none() {
        errors.add("role-staff", "Choose at least one role.");
    }
    roles
}

async fn users_post(
    State(state): State<AppState>,
    Admin(auth): Admin,
    form: Form,
) -> Result<Response> {
    let now = state.clock.now();
    let (email, name) = (form.get("email").trim(), form.get("name").trim());
    let mut errors = FormErrors::default();
    if let Err(m) = accounts::check_name(name) {
        errors.add("name", m);
    }
    if let Err(m) = accounts::check_email(email) {
        errors.add("email", m);
    } else if accounts::by_email(&state.db, email).await?.is_some() {
        errors.add(
            "email",
            "An account with this email address already exists.",
        );
    }
    let roles = roles_from(&form, &mut errors);
    if !errors.is_empty() {
        let checked = form
            .all("role")
            .into_iter()
            .filter_map(|r| ROLE_OPTIONS.iter().find(|o| **o == r).copied())
            .collect();
        let page = AdminUsersPage {
            layout: Layout::signed_in(&auth, &form.csrf),
            users: user_rows(&state).await?,
            errors,
            email: email.to_string(),
            name: name.to_string(),
            checked,
            role_options: ROLE_OPTIONS.to_vec(),
            mail_notice: mail_notice(&state),
        };
        return Ok((StatusCode::BAD_REQUEST, render(&page)).into_response());
    }
    let (user, token) =
        accounts::create(&state.db, now, &auth.actor(), email, name, &roles).await?;
    let link = format!("{}/enrol/{token}", state.settings.public_url);
    user_page(
        &state,
        &auth,
        &form.csrf,
        &user,
        Some(link),
        Some(format!("Account created for {}.", user.email)),
        FormErrors::default(),
    )
    .await
}

async fn user_page(
    state: &AppState,
    auth: &super::Authenticated,
    csrf: &str,
    user: &User,
    link: Option<String>,
    notice: Option<String>,
    errors: FormErrors,
) -> Result<Response> {
    let (status, locked) = status_of(state, user).await?;
    let status_code = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok((
        status_code,
        render(&AdminUserPage {
            layout: Layout::signed_in(auth, csrf),
            user: UserRow {
                id: user.id,
                email: user.email.clone(),
                name: user.name.clone(),
                roles: format_roles(&user.roles),
                status,
            },
            held: user.roles.iter().map(|r| r.as_str()).collect(),
            role_options: ROLE_OPTIONS.to_vec(),
            disabled: user.disabled,
            locked_until: locked.map(when),
            failures: failures_for(state, &user.email).await?,
            link,
            notice,
            errors,
            is_self: user.id == auth.user.id,
        }),
    )
        .into_response())
}

async fn find_user(state: &AppState, id: i64) -> Result<User> {
    accounts::by_id(&state.db, id).await?.ok_or(Error::NotFound)
}

async fn user_get(
    State(state): State<AppState>,
    Admin(auth): Admin,
    csrf: CsrfToken,
    Path(id): Path<i64>,
) -> Result<Response> {
    let user = find_user(&state, id).await?;
    user_page(
        &state,
        &auth,
        &csrf.0,
        &user,
        None,
        None,
        FormErrors::default(),
    )
    .await
}

async fn user_roles_post(
    State(state): State<AppState>,
    Admin(auth): Admin,
    Path(id): Path<i64>,
    form: Form,
) -> Result<Response> {
    let user = find_user(&state, id).await?;
    let mut errors = FormErrors::default();
    let roles = roles_from(&form, &mut errors);
    if errors.is_empty() {
        match accounts::set_roles(&state.db, state.clock.now(), &auth.actor(), &user, &roles).await
        {
            Ok(()) => {}
            Err(Error::BadInput(m)) => errors.add("role-staff", m),
            Err(e) => return Err(e),
        }
    }
    let user = find_user(&state, id).await?;
    let notice = errors.is_empty().then(|| "Roles saved.".to_string());
    user_page(&state, &auth, &form.csrf, &user, None, notice, errors).await
}

async fn user_disable_post(
    State(state): State<AppState>,
    Admin(auth): Admin,
    Path(id): Path<i64>,
    form: Form,
) -> Result<Response> {
    let user = find_user(&state, id).await?;
    if user.id == auth.user.id {
        return Err(Error::BadInput(
            "You cannot disable your own account. Ask another admin.".into(),
        ));
    }
    accounts::set_disabled(&state.db, state.clock.now(), &auth.actor(), &user, true).await?;
    let user = find_user(&state, id).await?;
    user_page(
        &state,
        &auth,
        &form.csrf,
        &user,
        None,
        Some(format!(
            "{} is disabled: their sessions and API tokens have ended.",
            user.email
        )),
        FormErrors::default(),
    )
    .await
}

async fn user_enable_post(
    State(state): State<AppState>,
    Admin(auth): Admin,
    Path(id): Path<i64>,
    form: Form,
) -> Result<Response> {
    let user = find_user(&state, id).await?;
    accounts::set_disabled(&state.db, state.clock.now(), &auth.actor(), &user, false).await?;
    let user = find_user(&state, id).await?;
    user_page(
        &state,
        &auth,
        &form.csrf,
        &user,
        None,
        Some(format!("{} is enabled.", user.email)),
        FormErrors::default(),
    )
    .await
}

async fn user_reset_totp_post(
    State(state): State<AppState>,
    Admin(auth): Admin,
    Path(id): Path<i64>,
    form: Form,
) -> Result<Response> {
    let user = find_user(&state, id).await?;
    accounts::reset_totp(&state.db, state.clock.now(), &auth.actor(), &user).await?;
    let user = find_user(&state, id).await?;
    user_page(
        &state,
        &auth,
        &form.csrf,
        &user,
        None,
        Some("Authenticator app reset: they will set it up again at their next sign-in.".into()),
        FormErrors::default(),
    )
    .await
}

async fn user_reset_password_post(
    State(state): State<AppState>,
    Admin(auth): Admin,
    Path(id): Path<i64>,
    form: Form,
) -> Result<Response> {
    let user = find_user(&state, id).await?;
    let token =
        accounts::force_password_reset(&state.db, state.clock.now(), &auth.actor(), &user).await?;
    let user = find_user(&state, id).await?;
    let link = format!("{}/enrol/{token}", state.settings.public_url);
    user_page(
        &state,
        &auth,
        &form.csrf,
        &user,
        Some(link),
        Some(
            "Password reset: the old password no longer works and their sessions have ended."
                .into(),
        ),
        FormErrors::default(),
    )
    .await
}

async fn user_enrolment_link_post(
    State(state): State<AppState>,
    Admin(auth): Admin,
    Path(id): Path<i64>,
    form: Form,
) -> Result<Response> {
    let user = find_user(&state, id).await?;
    if user.disabled {
        return Err(Error::BadInput(
            "Enable the account before giving it a new link.".into(),
        ));
    }
    let token =
        accounts::new_enrolment_link(&state.db, state.clock.now(), &auth.actor(), &user).await?;
    let link = format!("{}/enrol/{token}", state.settings.public_url);
    user_page(
        &state,
        &auth,
        &form.csrf,
        &user,
        Some(link),
        None,
        FormErrors::default(),
    )
    .await
}

async fn user_unlock_post(
    State(state): State<AppState>,
    Admin(auth): Admin,
    Path(id): Path<i64>,
    form: Form,
) -> Result<Response> {
    let user = find_user(&state, id).await?;
    let mut tx = state.db.begin().await?;
    throttle::clear_account(&mut tx, &user.email).await?;
    audit::append(
        &mut tx,
        state.clock.now(),
        &auth.actor(),
        "sign_in_unlocked",
        &user.email,
        json!({}),
    )
    .await?;
    tx.commit().await?;
    user_page(
        &state,
        &auth,
        &form.csrf,
        &user,
        None,
        Some(format!("Sign-in for {} is unlocked.", user.email)),
        FormErrors::default(),
    )
    .await
}

/// Checks the filter; errors name the field.
fn check_filter(filter: &Filter) -> FormErrors {
    let mut errors = FormErrors::default();
    for (field, value) in [("from", &filter.from), ("to", &filter.to)] {
        if !value.trim().is_empty() && parse_date(value).is_none() {
            errors.add(field, "Enter a date as year-month-day, like 2026-11-01.");
        }
    }
    if filter.user.len() > 254 || filter.action.len() > 64 {
        errors.add("user", "The filter is too long.");
    }
    errors
}

fn to_row(r: audit::Record) -> AuditRow {
    AuditRow {
        seq: r.seq,
        at: when(r.at),
        actor: r.actor,
        action: r.action,
        subject: r.subject,
        address: r.address,
        details: r.details,
    }
}

async fn audit_get(
    State(state): State<AppState>,
    Admin(auth): Admin,
    csrf: CsrfToken,
    Query(filter): Query<Filter>,
) -> Result<Response> {
    let errors = check_filter(&filter);
    let rows = if errors.is_empty() {
        audit::search(&state.db, &filter, 500).await?
    } else {
        Vec::new()
    };
    let query = serde_urlencoded::to_string([
        ("user", &filter.user),
        ("action", &filter.action),
        ("from", &filter.from),
        ("to", &filter.to),
    ])
    .unwrap_or_default();
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok((
        status,
        render(&AdminAuditPage {
            layout: Layout::signed_in(&auth, &csrf.0),
            rows: rows.into_iter().map(to_row).collect(),
            actions: audit::actions(&state.db).await?,
            user: filter.user,
            action: filter.action,
            from: filter.from,
            to: filter.to,
            query,
            errors,
            public_key: audit::public_key(&state.db)?,
        }),
    )
        .into_response())
}

/// Most records one export holds.
const EXPORT_LIMIT: i64 = 100_000;

async fn export(
    state: &AppState,
    auth: &super::Authenticated,
    filter: &Filter,
    format: &str,
) -> Result<Vec<audit::Record>> {
    let errors = check_filter(filter);
    if let Some((_, m)) = errors.0.first() {
        return Err(Error::BadInput(m.clone()));
    }
    let rows = audit::search(&state.db, filter, EXPORT_LIMIT).await?;
    audit::record(&state.db, state.clock.now(), &auth.actor(), "audit_exported", "audit log", json!({ "format": format, "records": rows.len(), "user": filter.user, "action": filter.action, "from": filter.from, "to": filter.to })).await?;
    Ok(rows)
}

/// Quotes a CSV field (RFC 4180), and defuses spreadsheet formulas.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    format!("\"{}\"", s.replace('"', "\"\""))
}

async fn audit_csv_get(
    State(state): State<AppState>,
    Admin(auth): Admin,
    Query(filter): Query<Filter>,
) -> Result<Response> {
    let rows = export(&state, &auth, &filter, "csv").await?;
    let mut out = String::from("seq,at,actor,action,subject,address,details,prev_hash,hash\r\n");
    for r in rows {
        let line = [
            r.seq.to_string(),
            format_rfc3339(r.at),
            r.actor,
            r.action,
            r.subject,
            r.address,
            r.details,
            r.prev_hash,
            r.hash,
        ]
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",");
        out.push_str(&line);
        out.push_str("\r\n");
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"safehand-audit.csv\"",
            ),
        ],
        out,
    )
        .into_response())
}

async fn audit_json_get(
    State(state): State<AppState>,
    Admin(auth): Admin,
    Query(filter): Query<Filter>,
) -> Result<Response> {
    let whole_log = [&filter.user, &filter.action, &filter.from, &filter.to]
        .iter()
        .all(|f| f.trim().is_empty());
    let document = if whole_log {
        // The whole log, oldest first, checked and with its head signed now: it can be
        // checked offline with `safehand audit-verify`.
        let export = audit::export_chain(&state.db, state.clock.now(), EXPORT_LIMIT).await?;
        audit::record(&state.db, state.clock.now(), &auth.actor(), "audit_exported", "audit log", json!({ "format": "json", "records": export.records.len(), "signed": export.broken.is_none() })).await?;
        export.document()
    } else {
        let rows = export(&state, &auth, &filter, "json").await?;
        audit::export_document(
            &rows,
            json!({
                "complete": false,
                "note": "A filtered export cannot be checked as a chain: export the whole log (no filters) to check it offline.",
            }),
        )
    };
    let body =
        serde_json::to_string_pretty(&document).map_err(|e| Error::Internal(e.to_string()))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"safehand-audit.json\"",
            ),
        ],
        body,
    )
        .into_response())
}
