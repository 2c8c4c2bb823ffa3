//! The contacts directory pages and API: list, add, change, verify, remove. Admins manage the
//! directory; staff see it, and may add and verify contacts when the policy allows.

use super::extract::{Authenticated, JsonBody};
use super::form::{CsrfToken, Form};
use super::templates::{render, when, FormErrors, Layout};
use crate::accounts::Role;
use crate::contacts::{self, Contact, ContactError, ContactInput, VerificationInput};
use crate::policy::{self, Policy};
use crate::{AppState, Error, Result};
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/contacts", get(contacts_get).post(contacts_post))
        .route("/contacts/{id}", get(contact_get).post(contact_post))
        .route("/contacts/{id}/verify", post(contact_verify_post))
        .route("/contacts/{id}/remove", post(contact_remove_post))
}

pub(super) fn api_router() -> Router<AppState> {
    Router::new()
        .route("/contacts", get(api_contacts_get).post(api_contacts_post))
        .route("/contacts/{id}", get(api_contact_get))
        .route(
            "/contacts/{id}/verifications",
            post(api_contact_verify_post),
        )
}

/// What a caller may do with the directory.
struct Rights {
    see: bool,
    add: bool,
    edit: bool,
    verify: bool,
}

fn rights(auth: &Authenticated, policy: &Policy) -> Rights {
    let admin = auth.has(Role::Admin);
    let staff = auth.has(Role::Staff);
    Rights {
        see: admin || staff,
        add: admin || (staff && policy.staff_may_add_contacts),
        edit: admin,
        verify: admin || (staff && policy.staff_may_add_contacts),
    }
}

/// A contact row on the directory page.
struct ContactRow {
    id: i64,
    name: String,
    job_title: String,
    organisation: String,
    email: String,
    status: String,
}

type Field = (
    &'static str,
    &'static str,
    &'static str,
    String,
    &'static str,
);

fn fields(input: &ContactInput) -> Vec<Field> {
    vec![
        ("name", "Full name", "text", input.name.clone(), ""),
        (
            "organisation",
            "Organisation",
            "text",
            input.organisation.clone(),
            "",
        ),
        (
            "job_title",
            "Role",
            "text",
            input.job_title.clone(),
            "For example: Designated safeguarding lead",
        ),
        (
            "email",
            "Email address",
            "email",
            input.email.clone(),
            "Exactly as they gave it to you; it is checked when they are verified.",
        ),
        (
            "phone",
            "Phone number",
            "text",
            input.phone.clone(),
            "The number the passphrase will be read out on.",
        ),
    ]
}

#[derive(Template)]
#[template(path = "contacts.html")]
struct ContactsPage {
    layout: Layout,
    contacts: Vec<ContactRow>,
    may_add: bool,
    domains: Vec<String>,
    fields: Vec<Field>,
    errors: FormErrors,
    notice: Option<String>,
}

fn status_text(c: &Contact, now: i64) -> String {
    match (&c.verification, c.status(now)) {
        (Some(v), contacts::Status::Verified) => format!("verified until {}", when(v.expires_at)),
        (_, s) => s.label().to_string(),
    }
}

async fn contacts_page(
    state: &AppState,
    auth: &Authenticated,
    csrf: &str,
    input: &ContactInput,
    errors: FormErrors,
    notice: Option<String>,
) -> Result<Response> {
    let policy = policy::load(&state.db).await?;
    let r = rights(auth, &policy);
    if !r.see {
        return Err(Error::Forbidden);
    }
    let now = state.clock.now();
    let rows = contacts::list(&state.db, false)
        .await?
        .into_iter()
        .map(|c| ContactRow {
            status: status_text(&c, now),
            id: c.id,
            name: c.name,
            job_title: c.job_title,
            organisation: c.organisation,
            email: c.email,
        })
        .collect();
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let page = ContactsPage {
        layout: Layout::signed_in(auth, csrf),
        contacts: rows,
        may_add: r.add,
        domains: contacts::domains(&state.db).await?,
        fields: fields(input),
        errors,
        notice,
    };
    Ok((status, render(&page)).into_response())
}

async fn contacts_get(
    State(state): State<AppState>,
    auth: Authenticated,
    csrf: CsrfToken,
) -> Result<Response> {
    contacts_page(
        &state,
        &auth,
        &csrf.0,
        &ContactInput::default(),
        FormErrors::default(),
        None,
    )
    .await
}

fn input_from(form: &Form) -> ContactInput {
    ContactInput {
        email: form.get("email").to_string(),
        name: form.get("name").to_string(),
        organisation: form.get("organisation").to_string(),
        job_title: form.get("job_title").to_string(),
        phone: form.get("phone").to_string(),
    }
}

fn to_errors(problems: Vec<(&'static str, String)>) -> FormErrors {
    let mut errors = FormErrors::default();
    for (f, m) in problems {
        errors.add(f, m);
    }
    errors
}

async fn contacts_post(
    State(state): State<AppState>,
    auth: Authenticated,
    form: Form,
) -> Result<Response> {
    let policy = policy::load(&state.db).await?;
    if !rights(&auth, &policy).add {
        return Err(Error::Forbidden);
    }
    let input = input_from(&form);
    match contacts::create(&state.db, state.clock.now(), &auth.actor(), &input).await {
        Ok(c) => Ok(Redirect::to(&format!("/contacts/{}?added=1", c.id)).into_response()),
        Err(ContactError::Problems(p)) => {
            contacts_page(&state, &auth, &form.csrf, &input, to_errors(p), None).await
        }
        Err(ContactError::Other(e)) => Err(e),
    }
}

/// The verification as shown on the contact page.
struct VerificationView {
    by: String,
    at: String,
    phone_called: String,
    source: String,
    note: String,
    expires: String,
}

#[derive(Template)]
#[template(path = "contact.html")]
struct ContactPage {
    layout: Layout,
    contact: Contact,
    status: String,
    archived: bool,
    verification: Option<VerificationView>,
    may_send: bool,
    may_verify: bool,
    /// The viewer entered the address or phone, and policy wants someone else to verify.
    own_entry: bool,
    may_edit: bool,
    valid_months: i64,
    sources: Vec<(&'static str, &'static str)>,
    phone_called: String,
    phone_source: String,
    note: String,
    fields: Vec<Field>,
    errors: FormErrors,
    notice: Option<String>,
}

#[allow(clippy::too_many_arguments)]
async fn contact_page(
    state: &AppState,
    auth: &Authenticated,
    csrf: &str,
    id: i64,
    edit: Option<&ContactInput>,
    verification: Option<&VerificationInput>,
    errors: FormErrors,
    notice: Option<String>,
) -> Result<Response> {
    let policy = policy::load(&state.db).await?;
    let r = rights(auth, &policy);
    if !r.see {
        return Err(Error::Forbidden);
    }
    let contact = contacts::get(&state.db, id).await?.ok_or(Error::NotFound)?;
    let now = state.clock.now();
    let current = ContactInput {
        email: contact.email.clone(),
        name: contact.name.clone(),
        organisation: contact.organisation.clone(),
        job_title: contact.job_title.clone(),
        phone: contact.phone.clone(),
    };
    let v = verification.cloned().unwrap_or_else(|| VerificationInput {
        phone_called: contact.phone.clone(),
        ..Default::default()
    });
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let page = ContactPage {
        layout: Layout::signed_in(auth, csrf),
        status: status_text(&contact, now),
        archived: contact.archived,
        verification: contact.verification.as_ref().map(|v| VerificationView {
            by: v.verified_by.clone(),
            at: when(v.verified_at),
            phone_called: v.phone_called.clone(),
            source: contacts::PHONE_SOURCES
                .iter()
                .find(|(k, _)| *k == v.phone_source)
                .map(|(_, l)| l.to_string())
                .unwrap_or_else(|| v.phone_source.clone()),
            note: v.note.clone(),
            expires: when(v.expires_at),
        }),
        may_send: auth.has(Role::Staff) && !contact.archived,
        may_verify: r.verify,
        own_entry: !policy.self_verification && contacts::is_own_entry(&contact, &auth.actor()),
        may_edit: r.edit,
        valid_months: policy.verification_valid_months,
        sources: contacts::PHONE_SOURCES.to_vec(),
        phone_called: v.phone_called,
        phone_source: v.phone_source,
        note: v.note,
        fields: fields(edit.unwrap_or(&current)),
        errors,
        notice,
        contact,
    };
    Ok((status, render(&page)).into_response())
}

#[derive(Deserialize)]
struct Added {
    added: Option<String>,
}

async fn contact_get(
    State(state): State<AppState>,
    auth: Authenticated,
    csrf: CsrfToken,
    Path(id): Path<i64>,
    axum::extract::Query(q): axum::extract::Query<Added>,
) -> Result<Response> {
    let notice = q.added.map(|_| "Contact added.".to_string());
    contact_page(
        &state,
        &auth,
        &csrf.0,
        id,
        None,
        None,
        FormErrors::default(),
        notice,
    )
    .await
}

async fn contact_post(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<i64>,
    form: Form,
) -> Result<Response> {
    let policy = policy::load(&state.db).await?;
    if !rights(&auth, &policy).edit {
        return Err(Error::Forbidden);
    }
    let input = input_from(&form);
    let (errors, notice, edit) =
        match contacts::update(&state.db, state.clock.now(), &auth.actor(), id, &input).await {
            Ok(_) => (FormErrors::default(), Some("Changes saved.".into()), None),
            Err(ContactError::Problems(p)) => (to_errors(p), None, Some(&input)),
            Err(ContactError::Other(e)) => return Err(e),
        };
    contact_page(&state, &auth, &form.csrf, id, edit, None, errors, notice).await
}

async fn contact_verify_post(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<i64>,
    form: Form,
) -> Result<Response> {
    let policy = policy::load(&state.db).await?;
    if !rights(&auth, &policy).verify {
        return Err(Error::Forbidden);
    }
    let input = VerificationInput {
        phone_called: form.get("phone_called").to_string(),
        phone_source: form.get("phone_source").to_string(),
        note: form.get("note").to_string(),
    };
    let (errors, notice, v) = match contacts::verify(
        &state.db,
        state.clock.now(),
        &auth.actor(),
        id,
        &input,
        &policy,
    )
    .await
    {
        Ok(_) => (
            FormErrors::default(),
            Some("Verification recorded.".into()),
            None,
        ),
        Err(ContactError::Problems(p)) => (to_errors(p), None, Some(&input)),
        Err(ContactError::Other(e)) => return Err(e),
    };
    contact_page(&state, &auth, &form.csrf, id, None, v, errors, notice).await
}

async fn contact_remove_post(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<i64>,
    form: Form,
) -> Result<Response> {
    if !auth.has(Role::Admin) {
        return Err(Error::Forbidden);
    }
    contacts::archive(&state.db, state.clock.now(), &auth.actor(), id).await?;
    contacts_page(
        &state,
        &auth,
        &form.csrf,
        &ContactInput::default(),
        FormErrors::default(),
        Some("Contact removed from the directory.".into()),
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// API

/// A contact as the API shows it.
pub(super) fn contact_json(c: &Contact, now: i64) -> serde_json::Value {
    json!({
        "id": c.id,
        "email": c.email,
        "name": c.name,
        "organisation": c.organisation,
        "role": c.job_title,
        "phone": c.phone,
        "archived": c.archived,
        "status": c.status(now).label(),
        "verification": c.verification.as_ref().map(|v| json!({
            "verified_by": v.verified_by,
            "verified_at": crate::clock::format_rfc3339(v.verified_at),
            "phone_called": v.phone_called,
            "phone_source": v.phone_source,
            "note": v.note,
            "expires_at": crate::clock::format_rfc3339(v.expires_at),
        })),
    })
}

fn problems_error(p: Vec<(&'static str, String)>) -> Error {
    Error::BadInput(
        p.into_iter()
            .map(|(f, m)| format!("{f}: {m}"))
            .collect::<Vec<_>>()
            .join(" "),
    )
}

async fn api_contacts_get(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<serde_json::Value>> {
    let policy = policy::load(&state.db).await?;
    if !rights(&auth, &policy).see {
        return Err(Error::Forbidden);
    }
    let now = state.clock.now();
    let list = contacts::list(&state.db, false).await?;
    Ok(Json(json!({
        "contacts": list.iter().map(|c| contact_json(c, now)).collect::<Vec<_>>()
    })))
}

async fn api_contact_get(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<i64>,
) -> Result<Json<serde_json::Value>> {
    let policy = policy::load(&state.db).await?;
    if !rights(&auth, &policy).see {
        return Err(Error::Forbidden);
    }
    let c = contacts::get(&state.db, id).await?.ok_or(Error::NotFound)?;
    Ok(Json(contact_json(&c, state.clock.now())))
}

#[derive(Deserialize)]
struct NewContact {
    email: String,
    name: String,
    organisation: String,
    role: String,
    phone: String,
}

async fn api_contacts_post(
    State(state): State<AppState>,
    auth: Authenticated,
    JsonBody(body): JsonBody<NewContact>,
) -> Result<Response> {
    let policy = policy::load(&state.db).await?;
    if !rights(&auth, &policy).add {
        return Err(Error::Forbidden);
    }
    let input = ContactInput {
        email: body.email,
        name: body.name,
        organisation: body.organisation,
        job_title: body.role,
        phone: body.phone,
    };
    match contacts::create(&state.db, state.clock.now(), &auth.actor(), &input).await {
        Ok(c) => Ok((
            StatusCode::CREATED,
            Json(contact_json(&c, state.clock.now())),
        )
            .into_response()),
        Err(ContactError::Problems(p)) => Err(problems_error(p)),
        Err(ContactError::Other(e)) => Err(e),
    }
}

#[derive(Deserialize)]
struct NewVerification {
    phone_called: String,
    phone_source: String,
    note: String,
}

async fn api_contact_verify_post(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<i64>,
    JsonBody(body): JsonBody<NewVerification>,
) -> Result<Response> {
    let policy = policy::load(&state.db).await?;
    if !rights(&auth, &policy).verify {
        return Err(Error::Forbidden);
    }
    let input = VerificationInput {
        phone_called: body.phone_called,
        phone_source: body.phone_source,
        note: body.note,
    };
    match contacts::verify(
        &state.db,
        state.clock.now(),
        &auth.actor(),
        id,
        &input,
        &policy,
    )
    .await
    {
        Ok(c) => Ok((
            StatusCode::CREATED,
            Json(contact_json(&c, state.clock.now())),
        )
            .into_response()),
        Err(ContactError::Problems(p)) => Err(problems_error(p)),
        Err(ContactError::Other(e)) => Err(e),
    }
}
