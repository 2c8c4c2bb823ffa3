//! Page templates (askama, checked at compile time; files in `server/templates/`).

use crate::clock::format_time;
use askama::Template;
use axum::response::{Html, IntoResponse, Response};

/// Renders a template, or a plain error if rendering fails (it cannot fail on our data).
pub(super) fn render<T: Template>(page: &T) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template failed to render");
            (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "Sorry, there is a problem with the service.",
            )
                .into_response()
        }
    }
}

/// The signed-in person shown in the header.
#[derive(Clone, Debug)]
pub(super) struct NavUser {
    pub name: String,
    pub is_admin: bool,
    /// Technicians and admins see the equipment register.
    pub is_register: bool,
    pub is_staff: bool,
    pub is_approver: bool,
}

/// What every page's layout needs.
#[derive(Clone, Debug)]
pub(super) struct Layout {
    pub user: Option<NavUser>,
    pub csrf: String,
}

impl Layout {
    /// A page with no one signed in.
    pub fn bare() -> Self {
        Self {
            user: None,
            csrf: String::new(),
        }
    }

    /// A page for a signed-in person.
    pub fn signed_in(auth: &super::Authenticated, csrf: &str) -> Self {
        Self {
            user: Some(NavUser {
                name: auth.user.name.clone(),
                is_admin: auth.has(crate::accounts::Role::Admin),
                is_register: auth.has(crate::accounts::Role::Admin)
                    || auth.has(crate::accounts::Role::Technician),
                is_staff: auth.has(crate::accounts::Role::Staff),
                is_approver: auth.has(crate::accounts::Role::Approver),
            }),
            csrf: csrf.to_string(),
        }
    }

    /// A visitor page that has forms.
    pub fn visitor(csrf: &str) -> Self {
        Self {
            user: None,
            csrf: csrf.to_string(),
        }
    }
}

/// Validation messages, in field order, each linked from the error summary.
#[derive(Clone, Debug, Default)]
pub(super) struct FormErrors(pub Vec<(String, String)>);

impl FormErrors {
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0.push((field.to_string(), message.into()));
    }
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, m)| m.as_str())
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Template)]
#[template(path = "error.html")]
pub(super) struct ErrorPage {
    pub layout: Layout,
    pub title: &'static str,
    pub message: String,
    pub reference: Option<String>,
}

#[derive(Template)]
#[template(path = "message.html")]
pub(super) struct MessagePage {
    pub layout: Layout,
    pub title: String,
    pub message: String,
    pub link_href: String,
    pub link_text: String,
}

#[derive(Template)]
#[template(path = "sign_in.html")]
pub(super) struct SignInPage {
    pub layout: Layout,
    pub email: String,
    pub errors: FormErrors,
    pub notice: Option<String>,
}

#[derive(Template)]
#[template(path = "sign_in_code.html")]
pub(super) struct CodePage {
    pub layout: Layout,
    pub errors: FormErrors,
}

#[derive(Template)]
#[template(path = "set_password.html")]
pub(super) struct SetPasswordPage {
    pub layout: Layout,
    pub title: String,
    pub intro: String,
    pub action: String,
    pub ask_identity: bool,
    pub email: String,
    pub name: String,
    pub errors: FormErrors,
}

#[derive(Template)]
#[template(path = "totp_enrol.html")]
pub(super) struct TotpEnrolPage {
    pub layout: Layout,
    pub secret: String,
    pub qr_base64: String,
    pub errors: FormErrors,
}

#[derive(Template)]
#[template(path = "recovery_codes.html")]
pub(super) struct RecoveryCodesPage {
    pub layout: Layout,
    pub codes: Vec<String>,
}

#[derive(Template)]
#[template(path = "home.html")]
pub(super) struct HomePage {
    pub layout: Layout,
    pub name: String,
    pub roles: Vec<&'static str>,
    pub is_staff: bool,
    pub is_approver: bool,
    pub is_admin: bool,
    pub is_technician: bool,
    pub waiting: i64,
    pub recovery_left: i64,
    pub notice: Option<String>,
    /// The user's transfers in their undo window.
    pub sending: Vec<SendingRow>,
}

/// A transfer whose link mail waits out the undo window, on the home page.
pub(super) struct SendingRow {
    pub id: i64,
    pub to: String,
    pub at: String,
    pub left: i64,
}

/// A session row on the account page.
pub(super) struct SessionRow {
    pub started: String,
    pub last_seen: String,
    pub address: String,
    pub browser: String,
    pub current: bool,
}

/// A token row on the account page.
pub(super) struct TokenRow {
    pub id: i64,
    pub name: String,
    pub scopes: String,
    pub created: String,
    pub expires: String,
    pub last_used: String,
    pub state: &'static str,
    pub live: bool,
}

/// A failed sign-in shown to the account owner or an admin.
pub(super) struct FailureRow {
    pub at: String,
    pub address: String,
    pub reason: String,
}

#[derive(Template)]
#[template(path = "account.html")]
pub(super) struct AccountPage {
    pub layout: Layout,
    pub email: String,
    pub name: String,
    pub roles: String,
    pub role_options: Vec<&'static str>,
    pub sessions: Vec<SessionRow>,
    pub tokens: Vec<TokenRow>,
    pub failures: Vec<FailureRow>,
    pub recovery_left: i64,
    pub errors: FormErrors,
    pub notice: Option<String>,
    pub token_name: String,
    /// The policy's longest token life, and the days offered (30, or less if that is longer).
    pub max_token_days: i64,
    pub default_token_days: i64,
    /// Technicians register the public keys that sign their wipe certificates.
    pub is_technician: bool,
    pub signing_keys: Vec<super::register::KeyRow>,
    pub key_text: String,
    pub key_label: String,
}

#[derive(Template)]
#[template(path = "token_created.html")]
pub(super) struct TokenCreatedPage {
    pub layout: Layout,
    pub name: String,
    pub token: String,
    pub scopes: String,
    pub expires: String,
}

/// A user row on the admin page.
pub(super) struct UserRow {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub roles: String,
    pub status: String,
}

#[derive(Template)]
#[template(path = "admin_users.html")]
pub(super) struct AdminUsersPage {
    pub layout: Layout,
    pub users: Vec<UserRow>,
    pub errors: FormErrors,
    pub email: String,
    pub name: String,
    pub checked: Vec<&'static str>,
    pub role_options: Vec<&'static str>,
    /// Shown when mail is written to files instead of sent.
    pub mail_notice: Option<String>,
}

#[derive(Template)]
#[template(path = "admin_mail.html")]
pub(super) struct AdminMailPage {
    pub layout: Layout,
    pub delivery: String,
    pub sends: bool,
    pub counts: crate::mail::OutboxCounts,
    pub rows: Vec<MailRow>,
}

/// One outbox entry on the mail page.
pub(super) struct MailRow {
    pub queued: String,
    pub to: String,
    pub subject: String,
    pub state: String,
    pub attempts: i64,
    pub error: String,
}

#[derive(Template)]
#[template(path = "admin_user.html")]
pub(super) struct AdminUserPage {
    pub layout: Layout,
    pub user: UserRow,
    pub held: Vec<&'static str>,
    pub role_options: Vec<&'static str>,
    pub disabled: bool,
    pub locked_until: Option<String>,
    pub failures: Vec<FailureRow>,
    pub link: Option<String>,
    pub notice: Option<String>,
    pub errors: FormErrors,
    pub is_self: bool,
}

/// An audit record as shown on the page.
pub(super) struct AuditRow {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub address: String,
    pub details: String,
}

#[derive(Template)]
#[template(path = "admin_audit.html")]
pub(super) struct AdminAuditPage {
    pub layout: Layout,
    pub rows: Vec<AuditRow>,
    pub actions: Vec<String>,
    pub user: String,
    pub action: String,
    pub from: String,
    pub to: String,
    pub query: String,
    pub errors: FormErrors,
    /// The key that checks the log's signed heads.
    pub public_key: String,
}

/// Formats a time for a page.
pub(super) fn when(t: i64) -> String {
    format_time(t)
}
