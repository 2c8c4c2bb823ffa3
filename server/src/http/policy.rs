//! The admin's transfer policy page and API: settings and allowed recipient domains.

use super::extract::{Admin, Authenticated, JsonBody};
use super::form::{CsrfToken, Form};
use super::templates::{render, FormErrors, Layout};
use crate::contacts;
use crate::policy::{self, format_size, parse_size, Policy, Unverified};
use crate::{AppState, Error, Result};
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/policy", get(policy_get).post(policy_post))
        .route("/admin/policy/domains", post(domains_post))
        .route("/admin/policy/domains/remove", post(domains_remove_post))
}

pub(super) fn api_router() -> Router<AppState> {
    Router::new()
        .route("/policy", get(api_policy_get).put(api_policy_put))
        .route(
            "/policy/domains",
            get(api_domains_get)
                .post(api_domains_post)
                .delete(api_domains_delete),
        )
}

#[derive(Template)]
#[template(path = "admin_policy.html")]
struct PolicyPage {
    layout: Layout,
    policy: Policy,
    refuse: bool,
    classifications: Vec<(&'static str, bool)>,
    numbers: Vec<(&'static str, &'static str, String, &'static str)>,
    domains: Vec<String>,
    pattern: String,
    errors: FormErrors,
    notice: Option<String>,
}

/// The number fields as typed (`typed`) or from the policy.
fn numbers(
    p: &Policy,
    typed: Option<&Form>,
) -> Vec<(&'static str, &'static str, String, &'static str)> {
    let v = |name: &str, value: String| match typed {
        Some(f) => f.get(name).to_string(),
        None => value,
    };
    vec![
        (
            "default_expiry_days",
            "Default expiry (days)",
            v("default_expiry_days", p.default_expiry_days.to_string()),
            "",
        ),
        (
            "max_expiry_days",
            "Longest expiry a sender may choose (days)",
            v("max_expiry_days", p.max_expiry_days.to_string()),
            "",
        ),
        (
            "default_download_limit",
            "Default download limit",
            v(
                "default_download_limit",
                p.default_download_limit.to_string(),
            ),
            "How many times the recipient may download; senders can choose up to 20.",
        ),
        (
            "max_size",
            "Largest transfer",
            v("max_size", format_size(p.max_size_bytes)),
            "All files together, for example 5 GiB or 500 MiB.",
        ),
        (
            "wrong_passphrase_limit",
            "Wrong passphrases before a transfer locks",
            v(
                "wrong_passphrase_limit",
                p.wrong_passphrase_limit.to_string(),
            ),
            "",
        ),
        (
            "verification_valid_months",
            "How long a contact's verification lasts (months)",
            v(
                "verification_valid_months",
                p.verification_valid_months.to_string(),
            ),
            "",
        ),
        (
            "undo_window_secs",
            "Undo window after sending (seconds)",
            v("undo_window_secs", p.undo_window_secs.to_string()),
            "How long the link waits before it is emailed, so the sender can undo a mistake; 0 to 600, 0 sends at once.",
        ),
        (
            "max_token_days",
            "Longest life of an API token (days)",
            v("max_token_days", p.max_token_days.to_string()),
            "1 to 365. Lowering it also shortens tokens that already live longer.",
        ),
    ]
}

#[allow(clippy::too_many_arguments)]
async fn page(
    state: &AppState,
    auth: &Authenticated,
    csrf: &str,
    policy: Policy,
    typed: Option<&Form>,
    pattern: String,
    errors: FormErrors,
    notice: Option<String>,
) -> Result<Response> {
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let p = PolicyPage {
        layout: Layout::signed_in(auth, csrf),
        refuse: policy.unverified_contacts == Unverified::Refuse,
        classifications: crate::transfers::CLASSIFICATIONS
            .iter()
            .map(|c| (*c, policy.approval_classifications.iter().any(|x| x == c)))
            .collect(),
        numbers: numbers(&policy, typed),
        policy,
        domains: contacts::domains(&state.db).await?,
        pattern,
        errors,
        notice,
    };
    Ok((status, render(&p)).into_response())
}

async fn policy_get(
    State(state): State<AppState>,
    Admin(auth): Admin,
    csrf: CsrfToken,
) -> Result<Response> {
    let policy = policy::load(&state.db).await?;
    page(
        &state,
        &auth,
        &csrf.0,
        policy,
        None,
        String::new(),
        FormErrors::default(),
        None,
    )
    .await
}

/// Reads the policy form; problems go into `errors` by field.
fn policy_from(form: &Form, errors: &mut FormErrors) -> Policy {
    let mut p = Policy {
        staff_may_add_contacts: form.get("staff_may_add_contacts") == "1",
        self_verification: form.get("self_verification") == "1",
        approval_always: form.get("approval_always") == "1",
        approval_classifications: form
            .all("approval_classifications")
            .into_iter()
            .map(str::to_string)
            .collect(),
        approval_unverified: form.get("approval_unverified") == "1",
        approval_outside_domains: form.get("approval_outside_domains") == "1",
        approval_new_organisation: form.get("approval_new_organisation") == "1",
        ..Policy::default()
    };
    p.unverified_contacts = match form.get("unverified_contacts") {
        "attest" => Unverified::Attest,
        "refuse" => Unverified::Refuse,
        _ => {
            errors.add(
                "unverified_contacts",
                "Choose what happens when a contact is not verified.",
            );
            Unverified::Refuse
        }
    };
    let mut int = |name: &'static str, target: &mut i64| match form.get(name).trim().parse() {
        Ok(v) => *target = v,
        Err(_) => errors.add(name, "Enter a whole number."),
    };
    int("default_expiry_days", &mut p.default_expiry_days);
    int("max_expiry_days", &mut p.max_expiry_days);
    int("default_download_limit", &mut p.default_download_limit);
    int("wrong_passphrase_limit", &mut p.wrong_passphrase_limit);
    int(
        "verification_valid_months",
        &mut p.verification_valid_months,
    );
    int("undo_window_secs", &mut p.undo_window_secs);
    int("max_token_days", &mut p.max_token_days);
    match parse_size(form.get("max_size")) {
        Some(v) => p.max_size_bytes = v,
        None => errors.add("max_size", "Enter a size like 5 GiB or 500 MiB."),
    }
    if errors.is_empty() {
        if let Err((field, message)) = p.check() {
            let field = if field == "max_size_bytes" {
                "max_size"
            } else {
                field
            };
            errors.add(field, message);
        }
    }
    p
}

async fn policy_post(
    State(state): State<AppState>,
    Admin(auth): Admin,
    form: Form,
) -> Result<Response> {
    let mut errors = FormErrors::default();
    let p = policy_from(&form, &mut errors);
    if !errors.is_empty() {
        let current = policy::load(&state.db).await?;
        return page(
            &state,
            &auth,
            &form.csrf,
            current,
            Some(&form),
            String::new(),
            errors,
            None,
        )
        .await;
    }
    policy::save(&state.db, state.clock.now(), &auth.actor(), &p).await?;
    page(
        &state,
        &auth,
        &form.csrf,
        p,
        None,
        String::new(),
        errors,
        Some("Policy saved.".into()),
    )
    .await
}

async fn domains_post(
    State(state): State<AppState>,
    Admin(auth): Admin,
    form: Form,
) -> Result<Response> {
    let policy = policy::load(&state.db).await?;
    let typed = form.get("pattern").to_string();
    let mut errors = FormErrors::default();
    let notice =
        match contacts::add_domain(&state.db, state.clock.now(), &auth.actor(), &typed).await {
            Ok(p) => Some(format!("{p} added.")),
            Err(Error::BadInput(m)) => {
                errors.add("pattern", m);
                None
            }
            Err(e) => return Err(e),
        };
    let keep = if errors.is_empty() {
        String::new()
    } else {
        typed
    };
    page(
        &state, &auth, &form.csrf, policy, None, keep, errors, notice,
    )
    .await
}

async fn domains_remove_post(
    State(state): State<AppState>,
    Admin(auth): Admin,
    form: Form,
) -> Result<Response> {
    let pattern = form.get("pattern").to_string();
    contacts::remove_domain(&state.db, state.clock.now(), &auth.actor(), &pattern).await?;
    let policy = policy::load(&state.db).await?;
    page(
        &state,
        &auth,
        &form.csrf,
        policy,
        None,
        String::new(),
        FormErrors::default(),
        Some(format!("{pattern} removed.")),
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// API

async fn api_policy_get(
    State(state): State<AppState>,
    _auth: Authenticated,
) -> Result<Json<Policy>> {
    // Every signed-in caller may read the policy: senders need its limits.
    Ok(Json(policy::load(&state.db).await?))
}

async fn api_policy_put(
    State(state): State<AppState>,
    Admin(auth): Admin,
    JsonBody(p): JsonBody<Policy>,
) -> Result<Json<Policy>> {
    policy::save(&state.db, state.clock.now(), &auth.actor(), &p).await?;
    Ok(Json(policy::load(&state.db).await?))
}

async fn api_domains_get(
    State(state): State<AppState>,
    _auth: Authenticated,
) -> Result<Json<serde_json::Value>> {
    Ok(Json(
        json!({ "domains": contacts::domains(&state.db).await? }),
    ))
}

#[derive(Deserialize)]
struct DomainBody {
    pattern: String,
}

async fn api_domains_post(
    State(state): State<AppState>,
    Admin(auth): Admin,
    JsonBody(body): JsonBody<DomainBody>,
) -> Result<Response> {
    let p =
        contacts::add_domain(&state.db, state.clock.now(), &auth.actor(), &body.pattern).await?;
    Ok((StatusCode::CREATED, Json(json!({ "pattern": p }))).into_response())
}

async fn api_domains_delete(
    State(state): State<AppState>,
    Admin(auth): Admin,
    JsonBody(body): JsonBody<DomainBody>,
) -> Result<Response> {
    contacts::remove_domain(
        &state.db,
        state.clock.now(),
        &auth.actor(),
        body.pattern.trim(),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
