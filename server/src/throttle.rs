//! Sign-in throttling. Failures are counted per account (by the email typed, so unknown and
//! known accounts behave the same) and per client address, in the database so that every
//! instance sees them. After a few failures each further attempt is slowed down; after
//! `lock_after` failures within the window the account (or address) is locked for `lock_for`.
//!
//! Attempts are counted before they are checked ([`reserve`]): each attempt first records
//! itself as a failure, then counts, and only goes ahead if the count (itself included) is
//! within the limit. An attempt that succeeds takes its record back ([`Reservation::release`]).
//! So fifty guesses sent at once get no more tries than fifty sent one after another: every
//! attempt's count includes every attempt that counted before it.

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

/// An attempt counted in advance (its failure records); keep it if the attempt fails.
#[derive(Debug)]
#[must_use = "release the reservation when the attempt succeeds"]
pub struct Reservation {
    ids: Vec<i64>,
}

impl Reservation {
    /// Takes the attempt's failure records back (it succeeded, or it was refused unchecked).
    pub async fn release(self, db: &Db) -> Result<()> {
        for id in self.ids {
            sqlx::query("delete from sign_in_failures where failure_id = $1")
                .bind(id)
                .execute(db.pool())
                .await?;
        }
        Ok(())
    }
}

/// Counts a sign-in attempt for `email` from `address` before it is checked: records it as a
/// failure (committed at once), then counts the failures in the window, itself included. When
/// the count is past the limit the attempt is refused and its records are taken back;
/// otherwise it goes ahead (after the delay) and the caller keeps the reservation if the
/// attempt fails, or releases it if it succeeds.
pub async fn reserve(
    db: &Db,
    now: UnixTime,
    policy: &Policy,
    email: &str,
    address: &str,
) -> Result<(Gate, Reservation)> {
    let mut ids = Vec::with_capacity(2);
    for key in [account_key(email), address_key(address)] {
        let row = sqlx::query(
            "insert into sign_in_failures (throttle_key, at) values ($1, $2) returning failure_id",
        )
        .bind(key)
        .bind(now)
        .fetch_one(db.pool())
        .await?;
        ids.push(row.try_get("failure_id")?);
    }
    let reservation = Reservation { ids };
    let (account, _) = recent(db, now, &account_key(email), policy.lock_for).await?;
    let (address_n, _) = recent(db, now, &address_key(address), policy.lock_for).await?;
    // Counts include this attempt.
    let key = if account > policy.lock_after {
        Some(account_key(email))
    } else if address_n > policy.address_lock_after {
        Some(address_key(address))
    } else {
        None
    };
    if let Some(key) = key {
        reservation.release(db).await?;
        // The lock lifts a window after the newest failure that is not this attempt.
        let (_, last) = recent(db, now, &key, policy.lock_for).await?;
        return Ok((
            Gate::Locked {
                until: last.max(now - policy.lock_for) + policy.lock_for,
            },
            Reservation { ids: Vec::new() },
        ));
    }
    let n = (account - 1).max((address_n - 1) / 4);
    let delay = if n >= 3 {
        policy.delay_unit * (1u32 << (n - 3).min(3))
    } else {
        Duration::ZERO
    };
    Ok((Gate::Open { delay }, reservation))
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
