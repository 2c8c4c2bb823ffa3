//! API tokens for programs such as the `safehand` CLI. A token is shown once when created;
//! the table keeps only its SHA-256. It carries a subset of its owner's roles (its scope), an
//! expiry, and can be revoked; disabling the owner or changing their password revokes all.

use crate::accounts::{format_roles, parse_roles, Role};
use crate::clock::UnixTime;
use crate::db::{opt_i64, Db};
use crate::error::{Error, Result};
use crate::keys::{new_token, token_hash};
use sqlx::Row;

/// Prefix that makes a Safehand token recognisable (e.g. to secret scanners).
pub const PREFIX: &str = "shtok_";

/// A token as listed on the account page (never the token itself).
#[derive(Clone, Debug)]
pub struct ApiToken {
    /// Id.
    pub id: i64,
    /// Owner.
    pub user_id: i64,
    /// What the owner called it.
    pub name: String,
    /// Roles it may act with.
    pub scopes: Vec<Role>,
    /// Created.
    pub created_at: UnixTime,
    /// Stops working at.
    pub expires_at: UnixTime,
    /// Last used.
    pub last_used_at: Option<UnixTime>,
    /// Revoked at.
    pub revoked_at: Option<UnixTime>,
}

impl ApiToken {
    /// Whether it works at `now`.
    pub fn is_live(&self, now: UnixTime) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }
}

fn row_to_token(row: &sqlx::any::AnyRow) -> Result<ApiToken> {
    Ok(ApiToken {
        id: row.try_get("token_id")?,
        user_id: row.try_get("user_id")?,
        name: row.try_get("name")?,
        scopes: parse_roles(&row.try_get::<String, _>("scopes")?),
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        last_used_at: opt_i64(row, "last_used_at")?,
        revoked_at: opt_i64(row, "revoked_at")?,
    })
}

const COLUMNS: &str =
    "token_id, user_id, name, scopes, created_at, expires_at, last_used_at, revoked_at";

/// Creates a token; returns it (the only time it is visible) and its record.
pub async fn create(
    conn: &mut sqlx::AnyConnection,
    now: UnixTime,
    user_id: i64,
    name: &str,
    scopes: &[Role],
    days: i64,
) -> Result<(String, ApiToken)> {
    if scopes.is_empty() {
        return Err(Error::BadInput(
            "Choose at least one role for the token.".into(),
        ));
    }
    let secret = format!("{PREFIX}{}", new_token());
    let row = sqlx::query(&format!(
        "insert into api_tokens (user_id, name, token_hash, scopes, created_at, expires_at) \
         values ($1, $2, $3, $4, $5, $6) returning {COLUMNS}"
    ))
    .bind(user_id)
    .bind(name.trim())
    .bind(token_hash(&secret))
    .bind(format_roles(scopes))
    .bind(now)
    .bind(now + days * 86_400)
    .fetch_one(&mut *conn)
    .await?;
    Ok((secret, row_to_token(&row)?))
}

/// Shortens every live token that would outlive `max_days` from its creation (the policy's
/// maximum was lowered); returns how many changed.
pub async fn cap_lifetimes(
    conn: &mut sqlx::AnyConnection,
    now: UnixTime,
    max_days: i64,
) -> Result<u64> {
    let done = sqlx::query(
        "update api_tokens set expires_at = created_at + $1 \
         where revoked_at is null and expires_at > $2 and expires_at > created_at + $1",
    )
    .bind(max_days * 86_400)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// Finds the live token for a presented secret and records its use.
pub async fn authenticate(
    conn: &mut sqlx::AnyConnection,
    now: UnixTime,
    secret: &str,
) -> Result<Option<ApiToken>> {
    if !secret.starts_with(PREFIX) || secret.len() > 200 {
        return Ok(None);
    }
    let row = sqlx::query(&format!(
        "select {COLUMNS} from api_tokens where token_hash = $1"
    ))
    .bind(token_hash(secret))
    .fetch_optional(&mut *conn)
    .await?;
    let Some(token) = row.as_ref().map(row_to_token).transpose()? else {
        return Ok(None);
    };
    if !token.is_live(now) {
        return Ok(None);
    }
    sqlx::query("update api_tokens set last_used_at = $1 where token_id = $2")
        .bind(now)
        .bind(token.id)
        .execute(&mut *conn)
        .await?;
    Ok(Some(token))
}

/// A user's tokens, newest first.
pub async fn list(db: &Db, user_id: i64) -> Result<Vec<ApiToken>> {
    let rows = sqlx::query(&format!(
        "select {COLUMNS} from api_tokens where user_id = $1 order by token_id desc"
    ))
    .bind(user_id)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(row_to_token).collect()
}

/// Revokes one of a user's tokens; false if it is not theirs or already revoked.
pub async fn revoke(
    conn: &mut sqlx::AnyConnection,
    now: UnixTime,
    user_id: i64,
    token_id: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "update api_tokens set revoked_at = $1 where token_id = $2 and user_id = $3 and revoked_at is null",
    )
    .bind(now)
    .bind(token_id)
    .bind(user_id)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Revokes every token of a user.
pub async fn revoke_all(
    conn: &mut sqlx::AnyConnection,
    now: UnixTime,
    user_id: i64,
) -> Result<u64> {
    let done = sqlx::query(
        "update api_tokens set revoked_at = $1 where user_id = $2 and revoked_at is null",
    )
    .bind(now)
    .bind(user_id)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}
