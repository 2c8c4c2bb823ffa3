//! The sweeper: ends transfers past their expiry (and unconfirmed ones after a day), destroying
//! the header first, then deletes blobs whose header is gone. Safe for several instances at
//! once: ending is a conditional update on the state (one instance wins), and blob deletion
//! takes a short lease on the transfer's row (`sweep_lease_until`). Each pass ends by
//! rewriting the space shreds freed ([`Db::erase_freed_space`]).

use super::{end_in, recipient::mail_time, State, UNCONFIRMED_LIFETIME};
use crate::audit::{self, Actor};
use crate::blobs::Blobs;
use crate::clock::{format_time, UnixTime};
use crate::db::{opt_i64, Db};
use crate::error::Result;
use crate::mail::{self, OutgoingMail};
use serde_json::json;
use sqlx::Row;

/// How long an instance owns a blob deletion before another may try.
const LEASE: i64 = 300;

fn sweeper() -> Actor {
    Actor {
        user_id: None,
        label: "Safehand (sweeper)".into(),
        address: "local".into(),
    }
}

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Transfers that expired (or were discarded unconfirmed) and were shredded.
    pub ended: u64,
    /// Blobs deleted.
    pub blobs_deleted: u64,
}

/// Called after a shred committed: truncates SQLite's WAL (the old page versions with the
/// header), then deletes the transfer's blob and records it; failures are left for the next
/// pass.
pub async fn delete_blob(db: &Db, blobs: &Blobs, now: UnixTime, id: i64, key: &str) {
    db.checkpoint_wal().await;
    let result = async {
        blobs.delete(key).await?;
        sqlx::query(
            "update transfers set blob_deleted_at = $1 where transfer_id = $2 and blob_deleted_at is null",
        )
        .bind(now)
        .bind(id)
        .execute(db.pool())
        .await?;
        Ok::<_, crate::Error>(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, transfer = id, "could not delete a shredded transfer's blob; will retry");
    }
}

/// One pass of the sweeper at `now`.
pub async fn sweep(db: &Db, blobs: &Blobs, now: UnixTime) -> Result<Swept> {
    let mut swept = Swept::default();
    let due = sqlx::query(
        "select transfer_id, state, recipient_email, sender_id, first_download_at, created_at from transfers \
         where (state in ('released', 'locked', 'held') and expires_at <= $1) \
            or (state = 'sealed' and (created_at <= $2 or expires_at <= $1)) \
         order by transfer_id limit 200",
    )
    .bind(now)
    .bind(now - UNCONFIRMED_LIFETIME)
    .fetch_all(db.pool())
    .await?;
    for row in due {
        let id: i64 = row.try_get("transfer_id")?;
        let state: String = row.try_get("state")?;
        let recipient: String = row.try_get("recipient_email")?;
        let (from, to) = match state.as_str() {
            "sealed" => (State::Sealed, State::Discarded),
            "locked" => (State::Locked, State::Expired),
            "held" => (State::Held, State::Expired),
            _ => (State::Released, State::Expired),
        };
        let mut tx = db.begin().await?;
        if !end_in(&mut tx, now, id, &[from], to).await? {
            continue; // another instance (or the sender) got there first
        }
        let unopened = from == State::Released && opt_i64(&row, "first_download_at")?.is_none();
        let unapproved = from == State::Held;
        audit::append(
            &mut tx,
            now,
            &sweeper(),
            if to == State::Discarded {
                "transfer_discarded"
            } else {
                "transfer_expired"
            },
            &recipient,
            json!({ "transfer_id": id, "was": state, "unopened": unopened, "unapproved": unapproved }),
        )
        .await?;
        if unopened || unapproved {
            let sender_id: i64 = row.try_get("sender_id")?;
            if let Some(sender) = crate::accounts::by_id(db, sender_id).await? {
                let created: i64 = row.try_get("created_at")?;
                let (subject, what) = if unapproved {
                    (
                        "Your transfer expired waiting for approval",
                        "expired before an approver decided on it; nothing was sent to the recipient",
                    )
                } else {
                    (
                        "Your transfer expired unopened",
                        "expired before it was downloaded",
                    )
                };
                mail::enqueue(
                    &mut tx,
                    &OutgoingMail {
                        to: sender.email,
                        subject: subject.into(),
                        body_text: format!(
                            "Hello {},\n\nThe transfer you sent on {} to {recipient} {what}. Its files \
                             have been deleted.\n\n\
                             If the recipient still needs them, send them again.\n",
                            sender.name,
                            format_time(created)
                        ),
                    },
                    mail_time(now),
                )
                .await?;
            }
        }
        tx.commit().await?;
        swept.ended += 1;
    }
    let leftovers = sqlx::query(
        "select transfer_id, blob_key from transfers where shredded_at is not null \
         and blob_deleted_at is null and sweep_lease_until < $1 order by transfer_id limit 200",
    )
    .bind(now)
    .fetch_all(db.pool())
    .await?;
    for row in leftovers {
        let id: i64 = row.try_get("transfer_id")?;
        let key: String = row.try_get("blob_key")?;
        let claimed = sqlx::query(
            "update transfers set sweep_lease_until = $1 where transfer_id = $2 and sweep_lease_until < $3",
        )
        .bind(now + LEASE)
        .bind(id)
        .bind(now)
        .execute(db.pool())
        .await?;
        if claimed.rows_affected() != 1 {
            continue;
        }
        delete_blob(db, blobs, now, id, &key).await;
        if super::get(db, id)
            .await?
            .is_some_and(|t| t.blob_deleted_at.is_some())
        {
            swept.blobs_deleted += 1;
        }
    }
    sqlx::query("delete from recipient_sessions where expires_at <= $1")
        .bind(now)
        .execute(db.pool())
        .await?;
    // Rewrites what the shreds above (and any since the last pass) freed: the WAL on SQLite,
    // the key tables on PostgreSQL. A busy moment is logged and caught up next pass.
    if let Err(e) = db.erase_freed_space().await {
        tracing::warn!(error = %e, "could not rewrite freed space after shreds; will retry");
    }
    Ok(swept)
}
