//! Sign-in throttling. Failures are counted per account (by the email typed, so unknown and
//! known accounts behave the same) and per client address, in the database so that every
//! instance sees them. After a few failures each further attempt is slowed down; after
//! `lock_after` failures within the window the account (or address) is locked for `lock_for`.

use crate::clock::UnixTime;
use crate::db::Db;
use crate::error::Result;
use sqlx::Row;
use std::time::Duration;

/// Throttling rules.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Failures per account before it locks.
    pub lock_after: i64,
    /// Failures per address before it locks (higher: a school may share one address).
    pub address_lock_after: i64,
    /// Lock length, and the window failures are counted over (seconds).
    pub lock_for: i64,
    /// Delay unit for slowed attempts (doubles per failure after the third, up to 8 units).
    pub delay_unit: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            lock_after: 10,
            address_lock_after: 100,
            lock_for: 15 * 60,
            delay_unit: Duration::from_millis(500),
        }
    }
}

/// Whether an attempt may go ahead.
#[derive(Debug, PartialEq, Eq)]
pub enum Gate {
    /// Go ahead after waiting `delay`.
    Open {
        /// How long to hold the response.
        delay: Duration,
    },
    /// Locked until this time.
    Locked {
        /// When the lock lifts.
        until: UnixTime,
    },
}

/// The throttle key for an account.
pub fn account_key(email: &str) -> String {
    format!("account:{}", crate::accounts::normalise_email(email))
}

/// The throttle key for a client address.
pub fn address_key(address: &str) -> String {
    format!("address:{address}")
}

async fn recent(db: &Db, now: UnixTime, key: &str, window: i64) -> Result<(i64, UnixTime)> {
    let row = sqlx::query(
        "select count(*) as n, coalesce(max(at), 0) as last from sign_in_failures where throttle_key = $1 and at > $2",
    )
    .bind(key)
    .bind(now - window)
    .fetch_one(db.pool())
    .await?;
    Ok((row.try_get("n")?, row.try_get("last")?))
}

/// Checks whether a sign-in attempt for `email` from `address` may proceed.
pub async fn check(
    db: &Db,
    now: UnixTime,
    policy: &Policy,
    email: &str,
    address: &str,
) -> Result<Gate> {
    let (account_failures, account_last) =
        recent(db, now, &account_key(email), policy.lock_for).await?;
    let (address_failures, address_last) =
        recent(db, now, &address_key(address), policy.lock_for).await?;
    if account_failures >= policy.lock_after {
        return Ok(Gate::Locked {
            until: account_last + policy.lock_for,
        });
    }
    if address_failures >= policy.address_lock_after {
        return Ok(Gate::Locked {
            until: address_last + policy.lock_for,
        });
    }
    let n = account_failures.max(address_failures / 4);
    let delay = if n >= 3 {
        policy.delay_unit * (1u32 << (n - 3).min(3))
    } else {
        Duration::ZERO
    };
    Ok(Gate::Open { delay })
}

/// Records a failed attempt.
pub async fn fail(
    conn: &mut sqlx::AnyConnection,
    now: UnixTime,
    email: &str,
    address: &str,
) -> Result<()> {
    for key in [account_key(email), address_key(address)] {
        sqlx::query("insert into sign_in_failures (throttle_key, at) values ($1, $2)")
            .bind(key)
            .bind(now)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Forgets an account's failures (after a successful sign-in, or when an admin unlocks it).
pub async fn clear_account(conn: &mut sqlx::AnyConnection, email: &str) -> Result<()> {
    sqlx::query("delete from sign_in_failures where throttle_key = $1")
        .bind(account_key(email))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Failures counted against an account now, and when its lock lifts if it is locked.
pub async fn status(
    db: &Db,
    now: UnixTime,
    policy: &Policy,
    email: &str,
) -> Result<(i64, Option<UnixTime>)> {
    let (n, last) = recent(db, now, &account_key(email), policy.lock_for).await?;
    let locked = (n >= policy.lock_after).then_some(last + policy.lock_for);
    Ok((n, locked))
}

/// Deletes failures too old to count any more (housekeeping).
pub async fn sweep(db: &Db, now: UnixTime, policy: &Policy) -> Result<u64> {
    let done = sqlx::query("delete from sign_in_failures where at <= $1")
        .bind(now - policy.lock_for)
        .execute(db.pool())
        .await?;
    Ok(done.rows_affected())
}
