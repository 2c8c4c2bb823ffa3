//! Accounts: people who sign in, their roles, passwords, TOTP second factor, recovery codes,
//! and the one-time links that let a new person set a password (first-run setup, enrolment
//! after an admin creates the account, and admin-forced password resets).

use crate::audit::{self, Actor};
use crate::clock::UnixTime;
use crate::db::{opt_i64, Db};
use crate::error::{Error, Result};
use crate::keys::{new_token, same_bytes, token_hash, ServerKeys};
use rand::Rng;
use serde_json::json;
use sqlx::Row;
use totp_rs::{Algorithm, Secret, TOTP};
use zeroize::Zeroizing;

/// What a person may do. A user may hold several roles.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sends transfers to verified contacts.
    Staff,
    /// Approves transfers that policy holds for a second pair of eyes.
    Approver,
    /// Manages users, the directory, policy and the audit log (the DPO).
    Admin,
    /// Keeps the asset and disposal register; uploads wipe certificates.
    Technician,
}

impl Role {
    /// Every role, in display order.
    pub const ALL: [Role; 4] = [Role::Staff, Role::Approver, Role::Admin, Role::Technician];

    /// The stored and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Staff => "staff",
            Role::Approver => "approver",
            Role::Admin => "admin",
            Role::Technician => "technician",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s.trim())
    }
}

/// Parses a comma-separated role list, ignoring unknown names.
pub fn parse_roles(s: &str) -> Vec<Role> {
    let mut roles: Vec<Role> = s.split(',').filter_map(Role::parse).collect();
    roles.sort();
    roles.dedup();
    roles
}

/// Writes a role list for storage.
pub fn format_roles(roles: &[Role]) -> String {
    let mut roles = roles.to_vec();
    roles.sort();
    roles.dedup();
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// A person's account.
#[derive(Clone, Debug)]
pub struct User {
    /// Database id.
    pub id: i64,
    /// Email address (lower case): what they sign in with.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Roles held.
    pub roles: Vec<Role>,
    /// Whether an admin has disabled the account.
    pub disabled: bool,
    /// Whether a password is set.
    pub has_password: bool,
    /// Whether TOTP is enrolled.
    pub has_totp: bool,
    /// When the account was created.
    pub created_at: UnixTime,
}

impl User {
    /// Whether the user holds `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

const USER_COLUMNS: &str = "user_id, email, name, roles, disabled, created_at, \
     case when password_hash is null then 0 else 1 end as has_password, \
     case when totp_seed is null then 0 else 1 end as has_totp";

fn row_to_user(row: &sqlx::any::AnyRow) -> Result<User> {
    Ok(User {
        id: row.try_get("user_id")?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        roles: parse_roles(&row.try_get::<String, _>("roles")?),
        disabled: row.try_get::<i64, _>("disabled")? != 0,
        has_password: row.try_get::<i64, _>("has_password")? != 0,
        has_totp: row.try_get::<i64, _>("has_totp")? != 0,
        created_at: row.try_get("created_at")?,
    })
}

/// Normalises an email address for storage and comparison (trimmed, lower case).
pub fn normalise_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Checks an email address's shape; the error says what to fix.
pub fn check_email(email: &str) -> std::result::Result<(), String> {
    let email = email.trim();
    if email.is_empty() {
        return Err("Enter an email address.".into());
    }
    if email.len() > 254 {
        return Err("The email address must be at most 254 characters.".into());
    }
    let mut parts = email.split('@');
    let (local, domain) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let ok = parts.next().is_none()
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(|c| {
            c.is_whitespace() || c.is_control() || c == ':' || c == ',' || c == '<' || c == '>'
        });
    if ok {
        Ok(())
    } else {
        Err("Enter an email address in the right format, like name@school.sch.uk.".into())
    }
}

/// Checks a display name.
pub fn check_name(name: &str) -> std::result::Result<(), String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("Enter a name.".into());
    }
    if name.chars().count() > 100 {
        return Err("The name must be at most 100 characters.".into());
    }
    if crate::text::unsafe_on_one_line(name) {
        return Err(format!("The name {}.", crate::text::UNSAFE_TEXT));
    }
    Ok(())
}

/// How many accounts exist (zero means first-run setup is open).
pub async fn count(db: &Db) -> Result<i64> {
    let row = sqlx::query("select count(*) as n from users")
        .fetch_one(db.pool())
        .await?;
    Ok(row.try_get("n")?)
}

/// Finds a user by id.
pub async fn by_id(db: &Db, id: i64) -> Result<Option<User>> {
    let row = sqlx::query(&format!(
        "select {USER_COLUMNS} from users where user_id = $1"
    ))
    .bind(id)
    .fetch_optional(db.pool())
    .await?;
    row.as_ref().map(row_to_user).transpose()
}

/// Finds a user by id, inside a transaction.
pub async fn by_id_in(conn: &mut sqlx::AnyConnection, id: i64) -> Result<Option<User>> {
    let row = sqlx::query(&format!(
        "select {USER_COLUMNS} from users where user_id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(row_to_user).transpose()
}

/// Finds a user by email.
pub async fn by_email(db: &Db, email: &str) -> Result<Option<User>> {
    let row = sqlx::query(&format!(
        "select {USER_COLUMNS} from users where email = $1"
    ))
    .bind(normalise_email(email))
    .fetch_optional(db.pool())
    .await?;
    row.as_ref().map(row_to_user).transpose()
}

/// Every user, by email.
pub async fn list(db: &Db) -> Result<Vec<User>> {
    let rows = sqlx::query(&format!("select {USER_COLUMNS} from users order by email"))
        .fetch_all(db.pool())
        .await?;
    rows.iter().map(row_to_user).collect()
}

/// The stored password hash, if any.
pub async fn password_hash(db: &Db, id: i64) -> Result<Option<String>> {
    let row = sqlx::query("select password_hash from users where user_id = $1")
        .bind(id)
        .fetch_optional(db.pool())
        .await?;
    Ok(match row {
        Some(r) => r.try_get::<Option<String>, _>("password_hash")?,
        None => None,
    })
}

/// What a one-time link is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkPurpose {
    /// First-run: create the first admin account.
    Setup,
    /// A new account: set a password, then enrol TOTP.
    Enrol,
    /// An admin-forced reset: set a new password.
    Reset,
}

impl LinkPurpose {
    fn as_str(self) -> &'static str {
        match self {
            LinkPurpose::Setup => "setup",
            LinkPurpose::Enrol => "enrol",
            LinkPurpose::Reset => "reset",
        }
    }
}

/// How long setup and enrolment links stay valid.
pub const LINK_LIFETIME: i64 = 7 * 24 * 3600;

async fn issue_link(
    conn: &mut sqlx::AnyConnection,
    now: UnixTime,
    user_id: Option<i64>,
    purpose: LinkPurpose,
) -> Result<String> {
    // Only the newest link for a user (or for setup) works.
    match user_id {
        Some(id) => {
            sqlx::query("delete from enrolment_links where user_id = $1")
                .bind(id)
                .execute(&mut *conn)
                .await?;
        }
        None => {
            sqlx::query("delete from enrolment_links where user_id is null")
                .execute(&mut *conn)
                .await?;
        }
    }
    let token = new_token();
    sqlx::query(
        "insert into enrolment_links (token_hash, user_id, purpose, created_at, expires_at) values ($1, $2, $3, $4, $5)",
    )
    .bind(token_hash(&token))
    .bind(user_id)
    .bind(purpose.as_str())
    .bind(now)
    .bind(now + LINK_LIFETIME)
    .execute(&mut *conn)
    .await?;
    Ok(token)
}

/// First run: when no account exists, issues a new setup link token (replacing older ones).
/// Returns `None` once an account exists.
pub async fn setup_link(db: &Db, now: UnixTime) -> Result<Option<String>> {
    if count(db).await? > 0 {
        return Ok(None);
    }
    let mut tx = db.begin().await?;
    let token = issue_link(&mut tx, now, None, LinkPurpose::Setup).await?;
    tx.commit().await?;
    Ok(Some(token))
}

/// A valid, unused link.
#[derive(Clone, Debug)]
pub struct Link {
    /// What it is for.
    pub purpose: LinkPurpose,
    /// The account it belongs to (none for setup).
    pub user: Option<User>,
}

/// Looks up a link token without using it (a GET must change nothing).
pub async fn find_link(db: &Db, now: UnixTime, token: &str) -> Result<Link> {
    let row = sqlx::query(
        "select user_id, purpose, expires_at, used_at from enrolment_links where token_hash = $1",
    )
    .bind(token_hash(token))
    .fetch_optional(db.pool())
    .await?
    .ok_or(Error::LinkNotValid)?;
    let expires: i64 = row.try_get("expires_at")?;
    if opt_i64(&row, "used_at")?.is_some() || now >= expires {
        return Err(Error::LinkNotValid);
    }
    let purpose = match row.try_get::<String, _>("purpose")?.as_str() {
        "setup" => LinkPurpose::Setup,
        "enrol" => LinkPurpose::Enrol,
        _ => LinkPurpose::Reset,
    };
    let user = match opt_i64(&row, "user_id")? {
        Some(id) => Some(by_id(db, id).await?.ok_or(Error::LinkNotValid)?),
        None => None,
    };
    if purpose == LinkPurpose::Setup && count(db).await? > 0 {
        return Err(Error::LinkNotValid);
    }
    if user.as_ref().is_some_and(|u| u.disabled) {
        return Err(Error::LinkNotValid);
    }
    Ok(Link { purpose, user })
}

/// Marks a link used; fails if someone else used it first.
async fn use_link(conn: &mut sqlx::AnyConnection, now: UnixTime, token: &str) -> Result<()> {
    let done = sqlx::query(
        "update enrolment_links set used_at = $1 where token_hash = $2 and used_at is null and expires_at > $1",
    )
    .bind(now)
    .bind(token_hash(token))
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 1 {
        Ok(())
    } else {
        Err(Error::LinkNotValid)
    }
}

/// Creates an account and returns it with its one-time enrolment link token.
pub async fn create(
    db: &Db,
    now: UnixTime,
    actor: &Actor,
    email: &str,
    name: &str,
    roles: &[Role],
) -> Result<(User, String)> {
    let mut tx = db.begin().await?;
    check_email(email).map_err(Error::BadInput)?;
    check_name(name).map_err(Error::BadInput)?;
    if roles.is_empty() {
        return Err(Error::BadInput("Choose at least one role.".into()));
    }
    let email = normalise_email(email);
    if by_email(db, &email).await?.is_some() {
        return Err(Error::BadInput(format!(
            "An account for {email} already exists."
        )));
    }
    let row = sqlx::query(
        "insert into users (email, name, roles, created_at) values ($1, $2, $3, $4) returning user_id",
    )
    .bind(&email)
    .bind(name.trim())
    .bind(format_roles(roles))
    .bind(now)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| {
        if crate::db::is_unique_violation(&e) {
            Error::BadInput(format!("An account for {email} already exists."))
        } else {
            e.into()
        }
    })?;
    let id: i64 = row.try_get("user_id")?;
    let token = issue_link(&mut tx, now, Some(id), LinkPurpose::Enrol).await?;
    audit::append(
        &mut tx,
        now,
        actor,
        "user_created",
        &email,
        json!({ "roles": format_roles(roles), "name": name.trim() }),
    )
    .await?;
    let user = by_id_in(&mut tx, id).await?.ok_or(Error::NotFound)?;
    tx.commit().await?;
    Ok((user, token))
}

/// Completes a setup, enrolment or reset link by setting the password. For setup this creates
/// the first (admin) account. Returns the user.
pub async fn complete_link(
    db: &Db,
    now: UnixTime,
    address: &str,
    token: &str,
    email: Option<&str>,
    name: Option<&str>,
    password_hash: String,
) -> Result<User> {
    let mut tx = db.begin().await?;
    let link = find_link(db, now, token).await?;
    use_link(&mut tx, now, token).await?;
    let user = match (link.purpose, link.user) {
        (LinkPurpose::Setup, _) => {
            let email = normalise_email(email.unwrap_or(""));
            let name = name.unwrap_or("").trim();
            let row = sqlx::query(
                "insert into users (email, name, roles, password_hash, created_at) values ($1, $2, $3, $4, $5) returning user_id",
            )
            .bind(&email)
            .bind(name)
            .bind(format_roles(&[Role::Admin, Role::Staff]))
            .bind(&password_hash)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            let id: i64 = row.try_get("user_id")?;
            let user = by_id_in(&mut tx, id).await?.ok_or(Error::NotFound)?;
            let actor = Actor {
                user_id: Some(id),
                label: email.clone(),
                address: address.to_string(),
            };
            audit::append(
                &mut tx,
                now,
                &actor,
                "first_admin_created",
                &email,
                json!({}),
            )
            .await?;
            audit::append(&mut tx, now, &actor, "password_set", &email, json!({})).await?;
            user
        }
        (_, Some(user)) => {
            sqlx::query("update users set password_hash = $1 where user_id = $2")
                .bind(&password_hash)
                .bind(user.id)
                .execute(&mut *tx)
                .await?;
            let actor = Actor {
                user_id: Some(user.id),
                label: user.email.clone(),
                address: address.to_string(),
            };
            audit::append(
                &mut tx,
                now,
                &actor,
                "password_set",
                &user.email,
                json!({ "via": link.purpose.as_str() }),
            )
            .await?;
            by_id_in(&mut tx, user.id).await?.ok_or(Error::NotFound)?
        }
        (_, None) => return Err(Error::LinkNotValid),
    };
    tx.commit().await?;
    Ok(user)
}

/// Changes a password (the caller has checked the current one), ends every session and API
/// token of the account except `keep_session`.
pub async fn change_password(
    db: &Db,
    now: UnixTime,
    actor: &Actor,
    user: &User,
    password_hash: String,
    keep_session: Option<&str>,
) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query("update users set password_hash = $1 where user_id = $2")
        .bind(&password_hash)
        .bind(user.id)
        .execute(&mut *tx)
        .await?;
    crate::sessions::end_all(&mut tx, user.id, keep_session).await?;
    crate::tokens::revoke_all(&mut tx, now, user.id).await?;
    audit::append(
        &mut tx,
        now,
        actor,
        "password_changed",
        &user.email,
        json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Disables or re-enables an account. Disabling ends every session and API token at once.
pub async fn set_disabled(
    db: &Db,
    now: UnixTime,
    actor: &Actor,
    user: &User,
    disabled: bool,
) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query("update users set disabled = $1 where user_id = $2")
        .bind(i64::from(disabled))
        .bind(user.id)
        .execute(&mut *tx)
        .await?;
    if disabled {
        crate::sessions::end_all(&mut tx, user.id, None).await?;
        crate::tokens::revoke_all(&mut tx, now, user.id).await?;
        sqlx::query("delete from enrolment_links where user_id = $1")
            .bind(user.id)
            .execute(&mut *tx)
            .await?;
    } else {
        crate::throttle::clear_account(&mut tx, &user.email).await?;
    }
    let action = if disabled {
        "user_disabled"
    } else {
        "user_enabled"
    };
    audit::append(&mut tx, now, actor, action, &user.email, json!({})).await?;
    tx.commit().await?;
    Ok(())
}

/// Replaces a user's roles.
pub async fn set_roles(
    db: &Db,
    now: UnixTime,
    actor: &Actor,
    user: &User,
    roles: &[Role],
) -> Result<()> {
    let mut tx = db.begin().await?;
    if roles.is_empty() {
        return Err(Error::BadInput("Choose at least one role.".into()));
    }
    if user.has(Role::Admin) && !roles.contains(&Role::Admin) && admin_count(db).await? <= 1 {
        return Err(Error::BadInput(
            "This is the only active admin; give another account the admin role first.".into(),
        ));
    }
    sqlx::query("update users set roles = $1 where user_id = $2")
        .bind(format_roles(roles))
        .bind(user.id)
        .execute(&mut *tx)
        .await?;
    audit::append(
        &mut tx,
        now,
        actor,
        "roles_changed",
        &user.email,
        json!({ "from": format_roles(&user.roles), "to": format_roles(roles) }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

async fn admin_count(db: &Db) -> Result<i64> {
    let users = list(db).await?;
    Ok(users
        .iter()
        .filter(|u| u.has(Role::Admin) && !u.disabled)
        .count() as i64)
}

/// Removes a user's TOTP enrolment and recovery codes; they enrol again at next sign-in.
/// Their sessions end.
pub async fn reset_totp(db: &Db, now: UnixTime, actor: &Actor, user: &User) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query("update users set totp_seed = null, totp_pending = null, totp_last_step = 0 where user_id = $1")
        .bind(user.id)
        .execute(&mut *tx)
        .await?;
    delete_recovery_codes(&mut tx, user.id).await?;
    crate::sessions::end_all(&mut tx, user.id, None).await?;
    audit::append(&mut tx, now, actor, "totp_reset", &user.email, json!({})).await?;
    tx.commit().await?;
    Ok(())
}

/// An admin-forced password reset: the password stops working, sessions and tokens end, and a
/// one-time link to set a new password is returned.
pub async fn force_password_reset(
    db: &Db,
    now: UnixTime,
    actor: &Actor,
    user: &User,
) -> Result<String> {
    let mut tx = db.begin().await?;
    sqlx::query("update users set password_hash = null where user_id = $1")
        .bind(user.id)
        .execute(&mut *tx)
        .await?;
    crate::sessions::end_all(&mut tx, user.id, None).await?;
    crate::tokens::revoke_all(&mut tx, now, user.id).await?;
    let token = issue_link(&mut tx, now, Some(user.id), LinkPurpose::Reset).await?;
    audit::append(
        &mut tx,
        now,
        actor,
        "password_reset_by_admin",
        &user.email,
        json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(token)
}

/// A new enrolment link for an account that has not finished enrolling (lost link).
pub async fn new_enrolment_link(
    db: &Db,
    now: UnixTime,
    actor: &Actor,
    user: &User,
) -> Result<String> {
    let mut tx = db.begin().await?;
    let purpose = if user.has_password {
        LinkPurpose::Reset
    } else {
        LinkPurpose::Enrol
    };
    let token = issue_link(&mut tx, now, Some(user.id), purpose).await?;
    audit::append(
        &mut tx,
        now,
        actor,
        "enrolment_link_issued",
        &user.email,
        json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(token)
}

// ---- TOTP ----

const TOTP_STEP: u64 = 30;

fn totp_for(seed: &[u8], email: &str) -> Result<TOTP> {
    TOTP::new(
        Algorithm::SHA1,
        6,
        1,
        TOTP_STEP,
        seed.to_vec(),
        Some("Safehand".into()),
        email.replace(':', ""),
    )
    .map_err(|e| Error::Internal(format!("TOTP set-up failed: {e}")))
}

fn seed_context(user_id: i64, pending: bool) -> String {
    if pending {
        format!("totp-pending:{user_id}")
    } else {
        format!("totp-seed:{user_id}")
    }
}

/// What the enrolment page shows: the secret in text and as a QR code.
#[derive(Debug)]
pub struct TotpEnrolment {
    /// The secret in base32, to type into an authenticator app.
    pub secret_base32: Zeroizing<String>,
    /// A PNG QR code of the `otpauth://` URI, base64-encoded for a `data:` image.
    pub qr_png_base64: String,
}

/// Starts (or continues) TOTP enrolment: keeps a pending seed, encrypted, until confirmed.
pub async fn totp_begin(db: &Db, keys: &ServerKeys, user: &User) -> Result<TotpEnrolment> {
    let row = sqlx::query("select totp_pending from users where user_id = $1")
        .bind(user.id)
        .fetch_one(db.pool())
        .await?;
    let existing: Option<Vec<u8>> = row.try_get("totp_pending")?;
    let seed: Zeroizing<Vec<u8>> = match existing {
        Some(sealed) => keys.unseal(&seed_context(user.id, true), &sealed)?,
        None => {
            let seed = Zeroizing::new(
                Secret::generate_secret()
                    .to_bytes()
                    .map_err(|e| Error::Internal(format!("{e:?}")))?,
            );
            sqlx::query("update users set totp_pending = $1 where user_id = $2")
                .bind(keys.seal(&seed_context(user.id, true), &seed))
                .bind(user.id)
                .execute(db.pool())
                .await?;
            seed
        }
    };
    let totp = totp_for(&seed, &user.email)?;
    Ok(TotpEnrolment {
        secret_base32: Zeroizing::new(totp.get_secret_base32()),
        qr_png_base64: totp.get_qr_base64().map_err(Error::Internal)?,
    })
}

/// Finds the time step at which `code` is valid (one step of clock drift either way).
fn matching_step(totp: &TOTP, now: UnixTime, code: &str) -> Option<i64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != 6 || !code.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let current = now.max(0) / TOTP_STEP as i64;
    (current - 1..=current + 1).find(|step| {
        let expected = totp.generate((*step).max(0) as u64 * TOTP_STEP);
        crate::keys::same(&expected, &code)
    })
}

/// Confirms enrolment with a code from the app; on success stores the seed and returns ten new
/// recovery codes (shown once).
pub async fn totp_confirm(
    db: &Db,
    keys: &ServerKeys,
    now: UnixTime,
    actor: &Actor,
    user: &User,
    code: &str,
) -> Result<Option<Vec<String>>> {
    let mut tx = db.begin().await?;
    let row = sqlx::query("select totp_pending from users where user_id = $1")
        .bind(user.id)
        .fetch_one(&mut *tx)
        .await?;
    let Some(sealed) = row.try_get::<Option<Vec<u8>>, _>("totp_pending")? else {
        return Ok(None);
    };
    let seed = keys.unseal(&seed_context(user.id, true), &sealed)?;
    let totp = totp_for(&seed, &user.email)?;
    let Some(step) = matching_step(&totp, now, code) else {
        return Ok(None);
    };
    sqlx::query(
        "update users set totp_seed = $1, totp_pending = null, totp_last_step = $2 where user_id = $3",
    )
    .bind(keys.seal(&seed_context(user.id, false), &seed))
    .bind(step)
    .bind(user.id)
    .execute(&mut *tx)
    .await?;
    let codes = new_recovery_codes(&mut tx, keys, user.id).await?;
    audit::append(&mut tx, now, actor, "totp_enrolled", &user.email, json!({})).await?;
    tx.commit().await?;
    Ok(Some(codes))
}

/// The result of checking a second-factor code.
#[derive(Debug, PartialEq, Eq)]
pub enum CodeCheck {
    /// A valid TOTP code, not used before.
    Totp,
    /// One of the recovery codes (now used up); `left` remain.
    Recovery {
        /// Recovery codes still unused.
        left: i64,
    },
    /// Valid once, but already used: refused.
    Replayed,
    /// Wrong.
    Wrong,
}

/// Checks a TOTP code or a recovery code. A TOTP code is accepted only for a time step later
/// than the last one accepted, so a code cannot be used twice.
pub async fn check_code(
    conn: &mut sqlx::AnyConnection,
    keys: &ServerKeys,
    now: UnixTime,
    user: &User,
    code: &str,
) -> Result<CodeCheck> {
    let row = sqlx::query("select totp_seed, totp_last_step from users where user_id = $1")
        .bind(user.id)
        .fetch_one(&mut *conn)
        .await?;
    let Some(sealed) = row.try_get::<Option<Vec<u8>>, _>("totp_seed")? else {
        return Ok(CodeCheck::Wrong);
    };
    let seed = keys.unseal(&seed_context(user.id, false), &sealed)?;
    let totp = totp_for(&seed, &user.email)?;
    if let Some(step) = matching_step(&totp, now, code) {
        // Compare-and-set, so two requests racing with the same code cannot both win.
        let done = sqlx::query(
            "update users set totp_last_step = $1 where user_id = $2 and totp_last_step < $1",
        )
        .bind(step)
        .bind(user.id)
        .execute(&mut *conn)
        .await?;
        return Ok(if done.rows_affected() == 1 {
            CodeCheck::Totp
        } else {
            CodeCheck::Replayed
        });
    }
    let normalised = normalise_recovery_code(code);
    if normalised.len() == 10 {
        if let Some(check) = use_recovery_code(conn, keys, now, user.id, &normalised).await? {
            return Ok(check);
        }
    }
    Ok(CodeCheck::Wrong)
}

/// The sealing context of a user's recovery codes (see [`crate::key_rotation`]).
fn recovery_context(user_id: i64) -> String {
    format!("recovery-code:{user_id}")
}

/// Uses one of `user_id`'s recovery codes if `normalised` is one: `None` when it is none of
/// them. Codes are sealed under the server key and compared in constant time; the update that
/// marks a code used is conditional, so two requests cannot both use it.
async fn use_recovery_code(
    conn: &mut sqlx::AnyConnection,
    keys: &ServerKeys,
    now: UnixTime,
    user_id: i64,
    normalised: &str,
) -> Result<Option<CodeCheck>> {
    let rows = sqlx::query(
        "select code_id, code_sealed, used_at from sealed_recovery_codes where user_id = $1",
    )
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?;
    let context = recovery_context(user_id);
    let mut found = None;
    for row in &rows {
        let sealed: Vec<u8> = row.try_get("code_sealed")?;
        let code = keys.unseal(&context, &sealed)?;
        // Every stored code is compared, so the time taken does not say which one matched.
        if same_bytes(&code, normalised.as_bytes()) {
            found = Some((
                row.try_get::<i64, _>("code_id")?,
                row.try_get::<Option<i64>, _>("used_at")?,
            ));
        }
    }
    let used = match found {
        Some((_, Some(_))) => return Ok(Some(CodeCheck::Replayed)),
        Some((code_id, None)) => sqlx::query(
            "update sealed_recovery_codes set used_at = $1 where code_id = $2 and used_at is null",
        )
        .bind(now)
        .bind(code_id)
        .execute(&mut *conn)
        .await?
        .rows_affected(),
        None => {
            // A code made before codes were sealed (a keyed hash; retired by the next key
            // rotation).
            let hash = keys.recovery_code_hash(user_id, normalised);
            let used = sqlx::query(
                "update recovery_codes set used_at = $1 where code_hash = $2 and user_id = $3 and used_at is null",
            )
            .bind(now)
            .bind(&hash)
            .bind(user_id)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if used == 0 {
                let exists = sqlx::query("select used_at from recovery_codes where code_hash = $1")
                    .bind(&hash)
                    .fetch_optional(&mut *conn)
                    .await?;
                if exists.is_none() {
                    return Ok(None);
                }
            }
            used
        }
    };
    if used != 1 {
        return Ok(Some(CodeCheck::Replayed));
    }
    Ok(Some(CodeCheck::Recovery {
        left: unused_recovery_codes(conn, user_id).await?,
    }))
}

/// How many unused recovery codes `user_id` has.
async fn unused_recovery_codes(conn: &mut sqlx::AnyConnection, user_id: i64) -> Result<i64> {
    let row = sqlx::query(
        "select (select count(*) from sealed_recovery_codes where user_id = $1 and used_at is null) \
              + (select count(*) from recovery_codes where user_id = $1 and used_at is null) as n",
    )
    .bind(user_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.try_get("n")?)
}

/// Deletes every recovery code of `user_id`.
async fn delete_recovery_codes(conn: &mut sqlx::AnyConnection, user_id: i64) -> Result<()> {
    for table in ["sealed_recovery_codes", "recovery_codes"] {
        sqlx::query(&format!("delete from {table} where user_id = $1"))
            .bind(user_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

const RECOVERY_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";

fn normalise_recovery_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Replaces a user's recovery codes with ten new ones (returned once, stored only sealed).
pub async fn new_recovery_codes(
    conn: &mut sqlx::AnyConnection,
    keys: &ServerKeys,
    user_id: i64,
) -> Result<Vec<String>> {
    delete_recovery_codes(conn, user_id).await?;
    let context = recovery_context(user_id);
    let mut codes = Vec::with_capacity(10);
    for _ in 0..10 {
        let raw: Zeroizing<String> = {
            let mut rng = rand::rngs::OsRng;
            Zeroizing::new(
                (0..10)
                    .map(|_| RECOVERY_ALPHABET[rng.gen_range(0..RECOVERY_ALPHABET.len())] as char)
                    .collect(),
            )
        };
        sqlx::query("insert into sealed_recovery_codes (user_id, code_sealed) values ($1, $2)")
            .bind(user_id)
            .bind(keys.seal(&context, raw.as_bytes()))
            .execute(&mut *conn)
            .await?;
        codes.push(format!("{}-{}", &raw[..5], &raw[5..]));
    }
    Ok(codes)
}

/// How many unused recovery codes a user has.
pub async fn recovery_codes_left(db: &Db, user_id: i64) -> Result<i64> {
    let mut conn = db.pool().acquire().await?;
    unused_recovery_codes(&mut conn, user_id).await
}

/// Computes the current code for a base32 secret, as an authenticator app would (tests and
/// the benchmark use it to sign in).
pub fn code_for_secret(secret_base32: &str, now: UnixTime) -> Option<String> {
    let seed = Secret::Encoded(secret_base32.to_string()).to_bytes().ok()?;
    let totp = totp_for(&seed, "x@x.x").ok()?;
    Some(totp.generate(now.max(0) as u64))
}
