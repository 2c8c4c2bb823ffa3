//! Sessions live in the database, so several instances share them. The browser holds a random
//! 256-bit id; the table holds only its SHA-256. A session ends after the idle timeout, after
//! the absolute lifetime, at sign-out, or when the account is disabled or its password changes.

use crate::clock::UnixTime;
use crate::db::Db;
use crate::error::Result;
use crate::keys::{new_token, token_hash};
use sqlx::Row;

/// How far a session has got through sign-in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Password accepted; waiting for the TOTP code.
    Code,
    /// Password accepted; the account must enrol TOTP before anything else.
    Enrol,
    /// Fully signed in.
    Full,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Stage::Code => "code",
            Stage::Enrol => "enrol",
            Stage::Full => "full",
        }
    }
    fn parse(s: &str) -> Stage {
        match s {
            "full" => Stage::Full,
            "enrol" => Stage::Enrol,
            _ => Stage::Code,
        }
    }
}

/// Session timing rules.
#[derive(Clone, Copy, Debug)]
pub struct Lifetimes {
    /// Ends after this many seconds without a request.
    pub idle: i64,
    /// Ends this many seconds after sign-in whatever happens.
    pub absolute: i64,
    /// A half-finished sign-in (waiting for a code or enrolment) lasts this long.
    pub pending: i64,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            idle: 15 * 60,
            absolute: 12 * 3600,
            pending: 10 * 60,
        }
    }
}

/// A live session.
#[derive(Clone, Debug)]
pub struct Session {
    /// SHA-256 of the cookie value (the table's key).
    pub hash: String,
    /// Whose session.
    pub user_id: i64,
    /// How far sign-in has got.
    pub stage: Stage,
    /// When it started.
    pub created_at: UnixTime,
    /// Last request.
    pub last_seen_at: UnixTime,
    /// Client address at sign-in.
    pub address: String,
    /// Browser at sign-in.
    pub user_agent: String,
}

/// The result of looking a session up.
#[derive(Debug)]
pub enum Lookup {
    /// Valid now.
    Active(Session),
    /// It existed but has timed out (now removed).
    Ended,
    /// No such session.
    Unknown,
}

fn row_to_session(row: &sqlx::any::AnyRow) -> Result<Session> {
    Ok(Session {
        hash: row.try_get("session_hash")?,
        user_id: row.try_get("user_id")?,
        stage: Stage::parse(&row.try_get::<String, _>("stage")?),
        created_at: row.try_get("created_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        address: row.try_get("address")?,
        user_agent: row.try_get("user_agent")?,
    })
}

/// Starts a session; returns the cookie value (the only copy of the id).
pub async fn start(
    conn: &mut sqlx::AnyConnection,
    now: UnixTime,
    user_id: i64,
    stage: Stage,
    address: &str,
    user_agent: &str,
) -> Result<String> {
    let token = new_token();
    let agent: String = user_agent.chars().take(200).collect();
    sqlx::query(
        "insert into sessions (session_hash, user_id, stage, created_at, last_seen_at, address, user_agent) \
         values ($1, $2, $3, $4, $4, $5, $6)",
    )
    .bind(token_hash(&token))
    .bind(user_id)
    .bind(stage.as_str())
    .bind(now)
    .bind(address)
    .bind(agent)
    .execute(&mut *conn)
    .await?;
    Ok(token)
}

/// Looks up the session for a cookie value, ends it if it has timed out, and records activity.
pub async fn find(db: &Db, now: UnixTime, lifetimes: &Lifetimes, cookie: &str) -> Result<Lookup> {
    let hash = token_hash(cookie);
    let row = sqlx::query(
        "select session_hash, user_id, stage, created_at, last_seen_at, address, user_agent \
         from sessions where session_hash = $1",
    )
    .bind(&hash)
    .fetch_optional(db.pool())
    .await?;
    let Some(row) = row else {
        return Ok(Lookup::Unknown);
    };
    let session = row_to_session(&row)?;
    let expired = match session.stage {
        Stage::Full => {
            now - session.last_seen_at >= lifetimes.idle
                || now - session.created_at >= lifetimes.absolute
        }
        _ => now - session.created_at >= lifetimes.pending,
    };
    if expired {
        end(&mut *db.pool().acquire().await?, &hash).await?;
        return Ok(Lookup::Ended);
    }
    // Writing on every request would cost a write per page; a few seconds of slack is fine
    // against a 15-minute timeout.
    if now - session.last_seen_at >= 5 {
        sqlx::query("update sessions set last_seen_at = $1 where session_hash = $2")
            .bind(now)
            .bind(&hash)
            .execute(db.pool())
            .await?;
    }
    Ok(Lookup::Active(session))
}

/// Moves a session to the next stage under a new id (the old cookie stops working), so an id
/// seen before sign-in completed is useless afterwards. Returns the new cookie value.
pub async fn advance(
    conn: &mut sqlx::AnyConnection,
    now: UnixTime,
    session: &Session,
    stage: Stage,
) -> Result<String> {
    end(&mut *conn, &session.hash).await?;
    start(
        &mut *conn,
        now,
        session.user_id,
        stage,
        &session.address,
        &session.user_agent,
    )
    .await
}

/// Ends one session.
pub async fn end(conn: &mut sqlx::AnyConnection, hash: &str) -> Result<()> {
    sqlx::query("delete from sessions where session_hash = $1")
        .bind(hash)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Ends every session of a user, except `keep` (a session hash) if given.
pub async fn end_all(
    conn: &mut sqlx::AnyConnection,
    user_id: i64,
    keep: Option<&str>,
) -> Result<u64> {
    let done = sqlx::query("delete from sessions where user_id = $1 and session_hash <> $2")
        .bind(user_id)
        .bind(keep.unwrap_or(""))
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected())
}

/// A user's signed-in sessions, newest first.
pub async fn list(db: &Db, user_id: i64) -> Result<Vec<Session>> {
    let rows = sqlx::query(
        "select session_hash, user_id, stage, created_at, last_seen_at, address, user_agent \
         from sessions where user_id = $1 and stage = 'full' order by created_at desc",
    )
    .bind(user_id)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(row_to_session).collect()
}

/// Deletes sessions that can no longer be used (housekeeping).
pub async fn sweep(db: &Db, now: UnixTime, lifetimes: &Lifetimes) -> Result<u64> {
    let done = sqlx::query(
        "delete from sessions where (stage = 'full' and (last_seen_at <= $1 or created_at <= $2)) \
         or (stage <> 'full' and created_at <= $3)",
    )
    .bind(now - lifetimes.idle)
    .bind(now - lifetimes.absolute)
    .bind(now - lifetimes.pending)
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected())
}
