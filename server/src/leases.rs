//! Leases for background jobs that only one server instance may run at a time (the expiry
//! sweeper, for example). Taking a lease is one conditional upsert, so it works the same on
//! SQLite and PostgreSQL and two instances can never both hold one.

use crate::clock::UnixTime;
use crate::db::Db;
use crate::error::Result;

/// Takes (or renews) the lease `name` for `holder` until `now + seconds`, if nobody else holds
/// it now. Returns whether `holder` holds it.
pub async fn acquire(
    db: &Db,
    name: &str,
    holder: &str,
    now: UnixTime,
    seconds: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "insert into job_leases (name, holder, lease_until) values ($1, $2, $3) \
         on conflict (name) do update set holder = excluded.holder, lease_until = excluded.lease_until \
         where job_leases.lease_until < $4 or job_leases.holder = $2",
    )
    .bind(name)
    .bind(holder)
    .bind(now + seconds)
    .bind(now)
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives the lease back early (only if `holder` still holds it).
pub async fn release(db: &Db, name: &str, holder: &str) -> Result<()> {
    sqlx::query("delete from job_leases where name = $1 and holder = $2")
        .bind(name)
        .bind(holder)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Whether somebody holds the lease `name` now.
pub async fn held(db: &Db, name: &str, now: UnixTime) -> Result<bool> {
    let row = sqlx::query("select holder from job_leases where name = $1 and lease_until >= $2")
        .bind(name)
        .bind(now)
        .fetch_optional(db.pool())
        .await?;
    Ok(row.is_some())
}

/// Forgets the leases whose names start with `prefix` that ran out before `before` (leases
/// named per object, such as the claims on uploads, would otherwise pile up).
pub async fn forget_lapsed(db: &Db, prefix: &str, before: UnixTime) -> Result<u64> {
    let done = sqlx::query(
        "delete from job_leases where substr(name, 1, length($1)) = $1 and lease_until < $2",
    )
    .bind(prefix)
    .bind(before)
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected())
}
