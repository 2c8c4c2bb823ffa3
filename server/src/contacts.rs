//! The contacts directory: people at other organisations that staff send to, each with the
//! record of how their email address and phone number were verified (who checked, when, the
//! number called and where that number came from), and the allowed recipient domains.
//!
//! Email addresses are stored with the local part exactly as typed and the domain in lower
//! case, and compared that way: `Sam.Smith@Council.gov.uk` and `sam.smith@council.gov.uk` are
//! different mailboxes as far as a verification is concerned (P4: the exact address).

use crate::audit::{self, Actor};
use crate::clock::UnixTime;
use crate::db::{opt_i64, Db};
use crate::error::{Error, Result};
use crate::policy::Policy;
use serde::Serialize;
use serde_json::json;
use sqlx::Row;

/// Where the number that was called came from. Never the email being verified.
pub const PHONE_SOURCES: [(&str, &str); 4] = [
    (
        "switchboard",
        "The organisation's main switchboard (a published number)",
    ),
    (
        "directory",
        "An official directory (local authority, NHS or school directory)",
    ),
    ("known", "A number we held before this request"),
    (
        "other",
        "Another independent source (say which in the note)",
    ),
];

/// A contact as shown in the directory.
#[derive(Clone, Debug, Serialize)]
pub struct Contact {
    /// Id.
    pub id: i64,
    /// Email address (local part as typed, domain in lower case).
    pub email: String,
    /// Full name.
    pub name: String,
    /// Organisation (e.g. "Northshire Children's Services").
    pub organisation: String,
    /// Role at that organisation.
    pub job_title: String,
    /// Phone number to call.
    pub phone: String,
    /// Removed from the directory (kept for the history of transfers).
    pub archived: bool,
    /// The account that last set the address and phone number (who added the contact, or who
    /// last changed either); four eyes: they may not also verify them.
    pub identity_set_by: Option<i64>,
    /// The latest verification that has not been withdrawn, if any.
    pub verification: Option<Verification>,
}

/// How a contact was verified.
#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    /// Id.
    pub id: i64,
    /// Who checked (email of the account).
    pub verified_by: String,
    /// When.
    pub verified_at: UnixTime,
    /// The number that was called.
    pub phone_called: String,
    /// Where that number came from (one of [`PHONE_SOURCES`]).
    pub phone_source: String,
    /// What was checked and said.
    pub note: String,
    /// When it lapses.
    pub expires_at: UnixTime,
}

/// Whether a contact may be sent to without an attestation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Verified and not yet lapsed.
    Verified,
    /// Verified once, but the verification has lapsed.
    Lapsed,
    /// Never verified (or the address or phone changed since).
    Unverified,
}

impl Contact {
    /// The verification status at `now`.
    pub fn status(&self, now: UnixTime) -> Status {
        match &self.verification {
            Some(v) if now < v.expires_at => Status::Verified,
            Some(_) => Status::Lapsed,
            None => Status::Unverified,
        }
    }
}

impl Status {
    /// Words for pages.
    pub fn label(self) -> &'static str {
        match self {
            Status::Verified => "verified",
            Status::Lapsed => "verification lapsed",
            Status::Unverified => "not verified",
        }
    }
}

/// What a person types to add or change a contact.
#[derive(Clone, Debug, Default)]
pub struct ContactInput {
    /// Email address.
    pub email: String,
    /// Full name.
    pub name: String,
    /// Organisation.
    pub organisation: String,
    /// Role there.
    pub job_title: String,
    /// Phone number.
    pub phone: String,
}

/// What a person records when verifying a contact.
#[derive(Clone, Debug, Default)]
pub struct VerificationInput {
    /// The number called.
    pub phone_called: String,
    /// Where it came from (a key of [`PHONE_SOURCES`]).
    pub phone_source: String,
    /// What was checked.
    pub note: String,
}

/// Field-by-field problems with input, in form order: `(field, message)`.
pub type Problems = Vec<(&'static str, String)>;

/// The stored form of an email address: trimmed, domain in lower case, local part as typed.
pub fn normalise_email(email: &str) -> String {
    let email = email.trim();
    match email.rsplit_once('@') {
        Some((local, domain)) => format!("{local}@{}", domain.to_lowercase()),
        None => email.to_string(),
    }
}

fn check_text(problems: &mut Problems, field: &'static str, value: &str, what: &str, max: usize) {
    let v = value.trim();
    if v.is_empty() {
        problems.push((field, format!("Enter {what}.")));
    } else if v.chars().count() > max {
        problems.push((field, format!("{what} must be at most {max} characters.")));
    } else if crate::text::unsafe_on_one_line(v) {
        let what = what.trim_start_matches("a ").trim_start_matches("an ");
        problems.push((field, format!("The {what} {}.", crate::text::UNSAFE_TEXT)));
    }
}

/// Checks a phone number: digits with optional `+`, spaces, brackets and dashes, 7-15 digits.
pub fn check_phone(phone: &str) -> std::result::Result<(), String> {
    let p = phone.trim();
    if p.is_empty() {
        return Err("Enter a phone number.".into());
    }
    let digits = p.chars().filter(char::is_ascii_digit).count();
    let ok = p
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '(' | ')' | '-'))
        && (7..=15).contains(&digits);
    if ok {
        Ok(())
    } else {
        Err("Enter a phone number like 01632 960 123 or +44 1632 960 123.".into())
    }
}

/// Checks contact details; allowed domains are checked separately ([`domain_allowed`]).
pub fn check_input(input: &ContactInput) -> Problems {
    let mut problems = Vec::new();
    check_text(&mut problems, "name", &input.name, "a name", 100);
    check_text(
        &mut problems,
        "organisation",
        &input.organisation,
        "an organisation",
        150,
    );
    check_text(&mut problems, "job_title", &input.job_title, "a role", 100);
    if let Err(m) = crate::accounts::check_email(&input.email) {
        problems.push(("email", m));
    }
    if let Err(m) = check_phone(&input.phone) {
        problems.push(("phone", m));
    }
    problems
}

/// Checks a verification record.
pub fn check_verification(v: &VerificationInput) -> Problems {
    let mut problems = Vec::new();
    if let Err(m) = check_phone(&v.phone_called) {
        problems.push((
            "phone_called",
            m.replace("a phone number", "the number you called"),
        ));
    }
    if !PHONE_SOURCES.iter().any(|(k, _)| *k == v.phone_source) {
        problems.push((
            "phone_source",
            "Choose where the number you called came from.".into(),
        ));
    }
    let note = v.note.trim();
    if note.chars().count() < 5 {
        problems.push((
            "note",
            "Write a short note of what you checked (for example, who answered and what they confirmed).".into(),
        ));
    } else if note.chars().count() > 1000 {
        problems.push(("note", "The note must be at most 1000 characters.".into()));
    }
    problems
}

const COLUMNS: &str = "c.contact_id, c.email, c.name, c.organisation, c.job_title, c.phone, c.archived, c.identity_set_by, \
    v.verification_id, v.verified_by_label, v.verified_at, v.phone_called, v.phone_source, v.note, v.expires_at";

/// The latest verification that is not withdrawn, joined to each contact.
const FROM: &str = "from contacts c left join contact_verifications v on v.verification_id = \
    (select max(v2.verification_id) from contact_verifications v2 \
     where v2.contact_id = c.contact_id and v2.withdrawn_at is null)";

fn row_to_contact(row: &sqlx::any::AnyRow) -> Result<Contact> {
    let verification = match opt_i64(row, "verification_id")? {
        Some(id) => Some(Verification {
            id,
            verified_by: row.try_get("verified_by_label")?,
            verified_at: row.try_get("verified_at")?,
            phone_called: row.try_get("phone_called")?,
            phone_source: row.try_get("phone_source")?,
            note: row.try_get("note")?,
            expires_at: row.try_get("expires_at")?,
        }),
        None => None,
    };
    Ok(Contact {
        id: row.try_get("contact_id")?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        organisation: row.try_get("organisation")?,
        job_title: row.try_get("job_title")?,
        phone: row.try_get("phone")?,
        identity_set_by: opt_i64(row, "identity_set_by")?,
        archived: row.try_get::<i64, _>("archived")? != 0,
        verification,
    })
}

/// The directory, by organisation then name; archived contacts only when asked for.
pub async fn list(db: &Db, include_archived: bool) -> Result<Vec<Contact>> {
    let rows = sqlx::query(&format!(
        "select {COLUMNS} {FROM} where ($1 = 1 or c.archived = 0) \
         order by lower(c.organisation), lower(c.name), c.contact_id"
    ))
    .bind(i64::from(include_archived))
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(row_to_contact).collect()
}

/// One contact.
pub async fn get(db: &Db, id: i64) -> Result<Option<Contact>> {
    let row = sqlx::query(&format!("select {COLUMNS} {FROM} where c.contact_id = $1"))
        .bind(id)
        .fetch_optional(db.pool())
        .await?;
    row.as_ref().map(row_to_contact).transpose()
}

/// The contact with exactly this address (after [`normalise_email`]).
pub async fn by_email(db: &Db, email: &str) -> Result<Option<Contact>> {
    let row = sqlx::query(&format!("select {COLUMNS} {FROM} where c.email = $1"))
        .bind(normalise_email(email))
        .fetch_optional(db.pool())
        .await?;
    row.as_ref().map(row_to_contact).transpose()
}

/// Adds a contact. Checks the input, the allowed domains and that the address is new.
pub async fn create(
    db: &Db,
    now: UnixTime,
    actor: &Actor,
    input: &ContactInput,
) -> std::result::Result<Contact, ContactError> {
    let mut problems = check_input(input);
    let email = normalise_email(&input.email);
    if problems.iter().all(|(f, _)| *f != "email") {
        if !domain_may_be_added(db, &email).await? {
            problems.push(("email", domain_refusal(db).await?));
        } else if by_email(db, &email).await?.is_some() {
            problems.push((
                "email",
                "A contact with this email address is already in the directory.".into(),
            ));
        }
    }
    if !problems.is_empty() {
        return Err(ContactError::Problems(problems));
    }
    let mut tx = db.begin().await.map_err(Error::from)?;
    let row = sqlx::query(
        "insert into contacts (email, name, organisation, job_title, phone, created_by, identity_set_by, \
         created_at, updated_at) values ($1, $2, $3, $4, $5, $6, $6, $7, $7) returning contact_id",
    )
    .bind(&email)
    .bind(input.name.trim())
    .bind(input.organisation.trim())
    .bind(input.job_title.trim())
    .bind(input.phone.trim())
    .bind(actor.user_id)
    .bind(now)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| {
        if crate::db::is_unique_violation(&e) {
            ContactError::Problems(vec![(
                "email",
                "A contact with this email address is already in the directory.".into(),
            )])
        } else {
            ContactError::Other(e.into())
        }
    })?;
    let id: i64 = row.try_get("contact_id").map_err(Error::from)?;
    audit::append(
        &mut tx,
        now,
        actor,
        "contact_added",
        &email,
        json!({ "contact_id": id, "name": input.name.trim(), "organisation": input.organisation.trim(),
                "phone": input.phone.trim() }),
    )
    .await?;
    tx.commit().await.map_err(Error::from)?;
    Ok(get(db, id).await?.ok_or(Error::NotFound)?)
}

/// Changes a contact's details. A changed email address or phone number withdraws the
/// verification (it vouched for the old ones).
pub async fn update(
    db: &Db,
    now: UnixTime,
    actor: &Actor,
    id: i64,
    input: &ContactInput,
) -> std::result::Result<Contact, ContactError> {
    let old = get(db, id).await?.ok_or(Error::NotFound)?;
    let mut problems = check_input(input);
    let email = normalise_email(&input.email);
    if problems.iter().all(|(f, _)| *f != "email") && email != old.email {
        if !domain_may_be_added(db, &email).await? {
            problems.push(("email", domain_refusal(db).await?));
        } else if by_email(db, &email).await?.is_some() {
            problems.push((
                "email",
                "A contact with this email address is already in the directory.".into(),
            ));
        }
    }
    if !problems.is_empty() {
        return Err(ContactError::Problems(problems));
    }
    let changed_identity = email != old.email || input.phone.trim() != old.phone;
    let mut tx = db.begin().await.map_err(Error::from)?;
    sqlx::query(
        "update contacts set email = $1, name = $2, organisation = $3, job_title = $4, phone = $5, \
         updated_at = $6, identity_set_by = case when $8 = 1 then $9 else identity_set_by end \
         where contact_id = $7",
    )
    .bind(&email)
    .bind(input.name.trim())
    .bind(input.organisation.trim())
    .bind(input.job_title.trim())
    .bind(input.phone.trim())
    .bind(now)
    .bind(id)
    .bind(i64::from(changed_identity))
    .bind(actor.user_id)
    .execute(&mut *tx)
    .await
    .map_err(Error::from)?;
    if changed_identity {
        sqlx::query(
            "update contact_verifications set withdrawn_at = $1 where contact_id = $2 and withdrawn_at is null",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(Error::from)?;
    }
    audit::append(
        &mut tx,
        now,
        actor,
        "contact_changed",
        &email,
        json!({ "contact_id": id, "old_email": old.email, "old_phone": old.phone,
                "phone": input.phone.trim(), "verification_withdrawn": changed_identity && old.verification.is_some() }),
    )
    .await?;
    tx.commit().await.map_err(Error::from)?;
    Ok(get(db, id).await?.ok_or(Error::NotFound)?)
}

/// Records a verification of a contact, valid for the policy's verification period. Four eyes:
/// the person who entered the address and phone number may not also vouch for them, unless the
/// policy allows self-verification.
pub async fn verify(
    db: &Db,
    now: UnixTime,
    actor: &Actor,
    id: i64,
    input: &VerificationInput,
    policy: &Policy,
) -> std::result::Result<Contact, ContactError> {
    let valid_secs = policy.verification_valid_secs();
    let contact = get(db, id).await?.ok_or(Error::NotFound)?;
    if contact.archived {
        return Err(ContactError::Other(Error::BadInput(
            "This contact has been removed from the directory. Add them again to verify them."
                .into(),
        )));
    }
    if !policy.self_verification && is_own_entry(&contact, actor) {
        return Err(ContactError::Other(Error::BadInput(
            SELF_VERIFICATION.into(),
        )));
    }
    let problems = check_verification(input);
    if !problems.is_empty() {
        return Err(ContactError::Problems(problems));
    }
    let mut tx = db.begin().await.map_err(Error::from)?;
    sqlx::query(
        "insert into contact_verifications (contact_id, verified_by, verified_by_label, verified_at, \
         phone_called, phone_source, note, expires_at) values ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(actor.user_id)
    .bind(&actor.label)
    .bind(now)
    .bind(input.phone_called.trim())
    .bind(&input.phone_source)
    .bind(input.note.trim())
    .bind(now + valid_secs)
    .execute(&mut *tx)
    .await
    .map_err(Error::from)?;
    audit::append(
        &mut tx,
        now,
        actor,
        "contact_verified",
        &contact.email,
        json!({ "contact_id": id, "phone_called": input.phone_called.trim(),
                "phone_source": input.phone_source, "note": input.note.trim(),
                "expires_at": now + valid_secs }),
    )
    .await?;
    tx.commit().await.map_err(Error::from)?;
    Ok(get(db, id).await?.ok_or(Error::NotFound)?)
}

/// Removes a contact from the directory (kept for the history of transfers sent to them).
pub async fn archive(db: &Db, now: UnixTime, actor: &Actor, id: i64) -> Result<()> {
    let contact = get(db, id).await?.ok_or(Error::NotFound)?;
    let mut tx = db.begin().await?;
    sqlx::query("update contacts set archived = 1, updated_at = $1 where contact_id = $2")
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    audit::append(
        &mut tx,
        now,
        actor,
        "contact_removed",
        &contact.email,
        json!({ "contact_id": id }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Why someone may not verify a contact they entered.
pub const SELF_VERIFICATION: &str = "You entered this contact's email address or phone number, so \
    someone else must verify them (four eyes): ask a colleague to phone the contact and record \
    the verification.";

/// Whether `actor` entered the contact's current address and phone number. An entry whose
/// author is unknown (an operator on the command line) counts as nobody's.
pub fn is_own_entry(contact: &Contact, actor: &Actor) -> bool {
    actor.user_id.is_some() && contact.identity_set_by == actor.user_id
}

/// The mail domain of a normalised address: the organisation's identity for the "first send
/// to an organisation" rule, since the free-text organisation name can be typed any way.
pub fn mail_domain(email: &str) -> &str {
    email.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
}

/// A failed add, change or verification: field problems to show next to the fields, or
/// anything else.
#[derive(Debug)]
pub enum ContactError {
    /// What to fix, by field.
    Problems(Problems),
    /// Any other failure.
    Other(Error),
}

impl From<Error> for ContactError {
    fn from(e: Error) -> Self {
        ContactError::Other(e)
    }
}

// ---------------------------------------------------------------------------------------------
// Allowed recipient domains

/// Checks a domain pattern: `nhs.net` (exactly that domain) or `*.gov.uk` (any domain under
/// it, at any depth, but not `gov.uk` itself).
pub fn check_pattern(pattern: &str) -> std::result::Result<String, String> {
    let p = pattern.trim().to_lowercase();
    let bare = p.strip_prefix("*.").unwrap_or(&p);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if bare.contains('.') && bare.split('.').all(label_ok) && p.len() <= 253 {
        Ok(p)
    } else {
        Err("Enter a domain like nhs.net, or *.gov.uk for every domain under gov.uk.".into())
    }
}

/// Whether `domain` matches `pattern` (both lower case).
pub fn pattern_matches(pattern: &str, domain: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(parent) => domain
            .strip_suffix(parent)
            .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
        None => domain == pattern,
    }
}

/// The allowed patterns, sorted.
pub async fn domains(db: &Db) -> Result<Vec<String>> {
    let rows = sqlx::query("select pattern from allowed_domains order by pattern")
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|r| r.try_get::<String, _>("pattern").map_err(Into::into))
        .collect()
}

/// Whether an address may be a recipient: any domain when no patterns are set, otherwise one
/// that matches a pattern.
pub async fn domain_allowed(db: &Db, email: &str) -> Result<bool> {
    let patterns = domains(db).await?;
    let domain = email
        .rsplit_once('@')
        .map(|(_, d)| d.to_lowercase())
        .unwrap_or_default();
    Ok(patterns.is_empty() || patterns.iter().any(|p| pattern_matches(p, &domain)))
}

/// Whether a contact with this address may be in the directory: in an allowed domain, or
/// anywhere when policy sends transfers outside the allowed domains to an approver.
async fn domain_may_be_added(db: &Db, email: &str) -> Result<bool> {
    Ok(domain_allowed(db, email).await? || crate::policy::load(db).await?.approval_outside_domains)
}

async fn domain_refusal(db: &Db) -> Result<String> {
    Ok(format!(
        "Files can only be sent to addresses in these domains: {}. Ask an administrator if this organisation should be added.",
        domains(db).await?.join(", ")
    ))
}

/// Adds an allowed domain pattern.
pub async fn add_domain(db: &Db, now: UnixTime, actor: &Actor, pattern: &str) -> Result<String> {
    let p = check_pattern(pattern).map_err(Error::BadInput)?;
    let mut tx = db.begin().await?;
    let inserted = sqlx::query(
        "insert into allowed_domains (pattern, added_by, added_at) values ($1, $2, $3) \
         on conflict (pattern) do nothing",
    )
    .bind(&p)
    .bind(&actor.label)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 1 {
        audit::append(&mut tx, now, actor, "domain_allowed", &p, json!({})).await?;
    }
    tx.commit().await?;
    Ok(p)
}

/// Removes an allowed domain pattern.
pub async fn remove_domain(db: &Db, now: UnixTime, actor: &Actor, pattern: &str) -> Result<()> {
    let mut tx = db.begin().await?;
    let removed = sqlx::query("delete from allowed_domains where pattern = $1")
        .bind(pattern)
        .execute(&mut *tx)
        .await?;
    if removed.rows_affected() == 0 {
        return Err(Error::NotFound);
    }
    audit::append(&mut tx, now, actor, "domain_removed", pattern, json!({})).await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_patterns() {
        assert!(pattern_matches("*.gov.uk", "northshire.gov.uk"));
        assert!(pattern_matches("*.gov.uk", "a.b.gov.uk"));
        assert!(!pattern_matches("*.gov.uk", "gov.uk"));
        assert!(!pattern_matches("*.gov.uk", "evilgov.uk"));
        assert!(pattern_matches("nhs.net", "nhs.net"));
        assert!(!pattern_matches("nhs.net", "x.nhs.net"));
        assert_eq!(check_pattern(" *.SCH.uk ").unwrap(), "*.sch.uk");
        assert!(check_pattern("*").is_err());
        assert!(check_pattern("uk").is_err());
        assert!(check_pattern("a..b").is_err());
        assert!(check_pattern("*.*.uk").is_err());
    }

    #[test]
    fn emails_keep_the_local_part_and_lower_the_domain() {
        assert_eq!(
            normalise_email(" Sam.Smith@Council.GOV.uk "),
            "Sam.Smith@council.gov.uk"
        );
    }

    #[test]
    fn phone_numbers() {
        assert!(check_phone("01632 960 123").is_ok());
        assert!(check_phone("+44 (0)1632-960123").is_ok());
        assert!(check_phone("123").is_err());
        assert!(check_phone("call me").is_err());
    }
}
