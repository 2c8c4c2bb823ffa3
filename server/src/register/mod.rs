//! The equipment and disposal register (POLICY.md R3-R5): assets and their storage media,
//! technicians' certificate signing keys, wipe certificates, physical destructions, disposal
//! records and the disposal report. Everything that changes the register writes its audit
//! record in the same transaction.
//!
//! - [`assets`]: assets and storage media; create, edit, search; CSV import and export.
//! - [`certificates`]: signing keys, wipe certificate upload (verified), destructions, evidence.
//! - [`disposals`]: disposal records, authorisation, completion, corrections.
//! - [`report`]: the disposal report for governors and auditors (CSV and PDF).

pub mod assets;
pub mod certificates;
pub mod disposals;
pub(crate) mod pdf;
pub mod report;

use crate::clock::UnixTime;

/// A problem with one field of a form (or one column of an import row). The message says
/// what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The form field (its element id).
    pub field: &'static str,
    /// What is wrong and how to put it right.
    pub message: String,
}

impl FieldError {
    pub(crate) fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// Checks a short free-text field: trimmed, at most `max` characters, no control characters.
pub(crate) fn check_text(
    errors: &mut Vec<FieldError>,
    field: &'static str,
    label: &str,
    value: &str,
    max: usize,
    required: bool,
) -> String {
    let value = value.trim();
    if required && value.is_empty() {
        errors.push(FieldError::new(field, format!("Enter the {label}.")));
    } else if value.chars().count() > max {
        errors.push(FieldError::new(
            field,
            format!("The {label} must be at most {max} characters."),
        ));
    } else if crate::text::unsafe_on_one_line(value) {
        errors.push(FieldError::new(
            field,
            format!("The {label} must be on one line, without special characters."),
        ));
    }
    value.to_string()
}

/// Checks an optional `YYYY-MM-DD` date; returns it normalised, or None when empty.
pub(crate) fn check_date(
    errors: &mut Vec<FieldError>,
    field: &'static str,
    label: &str,
    value: &str,
) -> Option<String> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    match crate::clock::parse_date(value) {
        Some(t) => Some(date_of(t)),
        None => {
            errors.push(FieldError::new(
                field,
                format!("Enter the {label} as year-month-day, like 2026-11-01."),
            ));
            None
        }
    }
}

/// The `YYYY-MM-DD` date (UTC) of a unix time.
pub fn date_of(t: UnixTime) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&format).ok())
        .unwrap_or_default()
}

/// The key a serial number is matched on: upper case, no white space.
pub fn serial_key(serial: &str) -> String {
    serial
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_uppercase)
        .collect()
}

/// Whether a user may use the register (technicians and admins).
pub fn may_use_register(user: &crate::accounts::User) -> bool {
    user.has(crate::accounts::Role::Technician) || user.has(crate::accounts::Role::Admin)
}

/// A user's display name by id, or a placeholder for an unknown id.
pub(crate) async fn user_label(db: &crate::db::Db, id: Option<i64>) -> crate::Result<String> {
    let Some(id) = id else {
        return Ok(String::new());
    };
    Ok(match crate::accounts::by_id(db, id).await? {
        Some(u) => format!("{} ({})", u.name, u.email),
        None => format!("user #{id}"),
    })
}
