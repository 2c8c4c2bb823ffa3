//! The recipient's side (no account): the link from the email, a one-time code sent to the same
//! mailbox (P5: the link works only for that mailbox), a short session bound to the transfer,
//! and the passphrase told by phone.
//!
//! Codes: 8 digits, valid 15 minutes, 5 tries each; only the newest code works; at most 5 codes
//! an hour per transfer. Stored as HMAC-SHA-256 under a server-derived key. Sessions: 30
//! minutes from the right code, cookie value hashed in the table. After the right passphrase
//! the session holds the file key sealed under the server key (never the passphrase); the
//! session row dies with the transfer's header.

use super::{end_in, get, State, Transfer};
use crate::audit::{self, Actor};
use crate::clock::UnixTime;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::keys::{new_token, same, token_hash, ServerKeys};
use crate::mail::{self, OutgoingMail};
use rand::Rng;
use safehand_crypto::split::{self, FileKey};
use safehand_crypto::{SecretString, MAX_SCRYPT_WORK_FACTOR};
use serde_json::json;
use sqlx::Row;

/// How long a code works.
pub const CODE_LIFETIME: i64 = 15 * 60;
/// Tries per code.
pub const CODE_ATTEMPTS: i64 = 5;
/// Codes per transfer per hour.
pub const CODES_PER_HOUR: i64 = 5;
/// How long a recipient session lasts.
pub const SESSION_LIFETIME: i64 = 30 * 60;

pub(crate) fn mail_time(now: UnixTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(now).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// The actor for a recipient's audit records (no account: the mailbox and the address).
pub fn recipient_actor(t: &Transfer, address: &str) -> Actor {
    Actor {
        user_id: None,
        label: format!("recipient {}", t.recipient_email),
        address: address.to_string(),
    }
}

/// The transfer behind a link, if the link can still be used at `now`. Every other case
/// (unknown, expired, recalled, locked, used up, never sent) is [`Error::Unavailable`].
pub async fn by_link(db: &Db, now: UnixTime, token: &str) -> Result<Transfer> {
    if token.len() != 43 {
        return Err(Error::Unavailable);
    }
    let row = sqlx::query("select transfer_id from transfers where link_hash = $1")
        .bind(token_hash(token))
        .fetch_optional(db.pool())
        .await?;
    let Some(row) = row else {
        return Err(Error::Unavailable);
    };
    let t = get(db, row.try_get("transfer_id")?)
        .await?
        .ok_or(Error::Unavailable)?;
    if t.state != State::Released || now >= t.expires_at || t.downloads >= t.download_limit {
        return Err(Error::Unavailable);
    }
    Ok(t)
}

/// Records that the link page was shown to `address`: once per address per transfer, and
/// nothing about the transfer changes (a mail scanner may be what opened it). An incident's
/// evidence of access reads these records.
pub async fn link_viewed(db: &Db, now: UnixTime, t: &Transfer, address: &str) -> Result<()> {
    let details = json!({ "transfer_id": t.id });
    let mut tx = db.begin().await?;
    // Hold the audit chain's head first, so two first views at once record one.
    sqlx::query("update audit_head set seq = seq where id = 1")
        .execute(&mut *tx)
        .await?;
    let seen: i64 = sqlx::query(
        "select count(*) as n from audit_log where subject = $1 and action = 'recipient_link_viewed' \
         and address = $2 and details = $3",
    )
    .bind(&t.recipient_email)
    .bind(address)
    .bind(details.to_string())
    .fetch_one(&mut *tx)
    .await?
    .try_get("n")?;
    if seen == 0 {
        audit::append(
            &mut tx,
            now,
            &recipient_actor(t, address),
            "recipient_link_viewed",
            &t.recipient_email,
            details,
        )
        .await?;
        tx.commit().await?;
    }
    Ok(())
}

fn code_hash(keys: &ServerKeys, transfer_id: i64, code: &str) -> String {
    keys.one_time_code_hash(&format!("recipient-code:{transfer_id}"), code)
}

/// Mails a new one-time code to the transfer's recipient.
pub async fn request_code(
    db: &Db,
    keys: &ServerKeys,
    now: UnixTime,
    t: &Transfer,
    address: &str,
) -> Result<()> {
    let mut tx = db.begin().await?;
    let recent: i64 = sqlx::query(
        "select count(*) as n from recipient_codes where transfer_id = $1 and created_at > $2",
    )
    .bind(t.id)
    .bind(now - 3600)
    .fetch_one(&mut *tx)
    .await?
    .try_get("n")?;
    if recent >= CODES_PER_HOUR {
        return Err(Error::BadInput(
            "Too many codes have been asked for in the last hour. Wait an hour, then ask again."
                .into(),
        ));
    }
    let code = format!("{:08}", rand::rngs::OsRng.gen_range(0..100_000_000u32));
    // Only the newest code works.
    sqlx::query(
        "update recipient_codes set used_at = $1 where transfer_id = $2 and used_at is null",
    )
    .bind(now)
    .bind(t.id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into recipient_codes (transfer_id, code_hash, created_at, expires_at) values ($1, $2, $3, $4)",
    )
    .bind(t.id)
    .bind(code_hash(keys, t.id, &code))
    .bind(now)
    .bind(now + CODE_LIFETIME)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "update transfers set code_requested_at = coalesce(code_requested_at, $1) where transfer_id = $2",
    )
    .bind(now)
    .bind(t.id)
    .execute(&mut *tx)
    .await?;
    mail::enqueue(
        &mut tx,
        &OutgoingMail {
            to: t.recipient_email.clone(),
            subject: "Your Safehand code".into(),
            body_text: format!(
                "Your one-time code is: {code}\n\n\
                 Enter it on the page where you asked for it. It works once, for 15 minutes.\n\n\
                 If you did not ask for a code, you can ignore this email.\n"
            ),
        },
        mail_time(now),
    )
    .await?;
    audit::append(
        &mut tx,
        now,
        &recipient_actor(t, address),
        "recipient_code_sent",
        &t.recipient_email,
        json!({ "transfer_id": t.id }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Checks a code; on success returns a new session cookie value.
pub async fn check_code(
    db: &Db,
    keys: &ServerKeys,
    now: UnixTime,
    t: &Transfer,
    typed: &str,
    address: &str,
) -> Result<String> {
    let typed: String = typed.chars().filter(|c| !c.is_whitespace()).collect();
    let actor = recipient_actor(t, address);
    let mut tx = db.begin().await?;
    let row = sqlx::query(
        "select code_id, code_hash, expires_at, attempts from recipient_codes \
         where transfer_id = $1 and used_at is null order by code_id desc limit 1",
    )
    .bind(t.id)
    .fetch_optional(&mut *tx)
    .await?;
    let refuse = |m: &str| Err(Error::BadInput(m.to_string()));
    let Some(row) = row else {
        return refuse("That code is not valid. It may have been used or replaced by a newer one. Ask for a new code.");
    };
    let code_id: i64 = row.try_get("code_id")?;
    if now >= row.try_get::<i64, _>("expires_at")? {
        return refuse("That code has expired. Ask for a new code.");
    }
    // The attempt is counted before the code is compared, by a conditional update: parallel
    // guesses each take one of the code's tries, and none gets past the last.
    let counted = sqlx::query(
        "update recipient_codes set attempts = attempts + 1 where code_id = $1 and attempts < $2",
    )
    .bind(code_id)
    .bind(CODE_ATTEMPTS)
    .execute(&mut *tx)
    .await?;
    if counted.rows_affected() != 1 {
        return refuse("Too many wrong codes. Ask for a new code.");
    }
    let stored: String = row.try_get("code_hash")?;
    if !same(&code_hash(keys, t.id, &typed), &stored) {
        audit::append(
            &mut tx,
            now,
            &actor,
            "recipient_code_wrong",
            &t.recipient_email,
            json!({ "transfer_id": t.id }),
        )
        .await?;
        tx.commit().await?;
        return refuse(
            "That code is not right. Check the latest email from Safehand and try again.",
        );
    }
    sqlx::query("update recipient_codes set used_at = $1 where code_id = $2")
        .bind(now)
        .bind(code_id)
        .execute(&mut *tx)
        .await?;
    let session = new_token();
    sqlx::query(
        "insert into recipient_sessions (session_hash, transfer_id, created_at, expires_at, address) \
         values ($1, $2, $3, $4, $5)",
    )
    .bind(token_hash(&session))
    .bind(t.id)
    .bind(now)
    .bind(now + SESSION_LIFETIME)
    .bind(address)
    .execute(&mut *tx)
    .await?;
    first_time(
        &mut tx,
        now,
        t,
        &actor,
        "opened_at",
        "recipient_code_accepted",
    )
    .await?;
    tx.commit().await?;
    Ok(session)
}

/// Records the first time a recipient reached a step (`column`: `opened_at` or `unlocked_at`)
/// and audits this time as `action`.
async fn first_time(
    tx: &mut crate::db::Tx,
    now: UnixTime,
    t: &Transfer,
    actor: &Actor,
    column: &'static str,
    action: &str,
) -> Result<()> {
    debug_assert!(matches!(column, "opened_at" | "unlocked_at"));
    sqlx::query(&format!(
        "update transfers set {column} = coalesce({column}, $1) where transfer_id = $2"
    ))
    .bind(now)
    .bind(t.id)
    .execute(&mut **tx)
    .await?;
    audit::append(
        tx,
        now,
        actor,
        action,
        &t.recipient_email,
        json!({ "transfer_id": t.id }),
    )
    .await
}

/// A recipient's session for one transfer.
#[derive(Clone, Debug)]
pub struct RecipientSession {
    /// Hash of the cookie value.
    pub hash: String,
    /// The file key, once the right passphrase was entered.
    pub file_key: Option<FileKey>,
}

fn key_context(session_hash: &str) -> String {
    format!("recipient-file-key:{session_hash}")
}

/// The live session for `cookie` on transfer `t`, if any.
pub async fn session(
    db: &Db,
    keys: &ServerKeys,
    now: UnixTime,
    t: &Transfer,
    cookie: &str,
) -> Result<Option<RecipientSession>> {
    let hash = token_hash(cookie);
    let row = sqlx::query(
        "select transfer_id, expires_at, file_key_sealed from recipient_sessions where session_hash = $1",
    )
    .bind(&hash)
    .fetch_optional(db.pool())
    .await?;
    let Some(row) = row else { return Ok(None) };
    if row.try_get::<i64, _>("transfer_id")? != t.id
        || now >= row.try_get::<i64, _>("expires_at")?
    {
        return Ok(None);
    }
    let file_key = match row.try_get::<Option<Vec<u8>>, _>("file_key_sealed")? {
        Some(sealed) => {
            let plain = keys.unseal(&key_context(&hash), &sealed)?;
            Some(FileKey::from_bytes(&plain).map_err(|e| Error::Internal(e.to_string()))?)
        }
        None => None,
    };
    Ok(Some(RecipientSession { hash, file_key }))
}

/// The outcome of a passphrase attempt.
#[derive(Debug)]
pub enum Unlock {
    /// Right: the session now holds the file key.
    Opened,
    /// Wrong; this many tries are left before the transfer locks.
    Wrong {
        /// Tries left.
        left: i64,
    },
    /// Wrong, and that was the last try: the transfer is locked and the sender told.
    Locked,
}

/// Checks a passphrase typed by the recipient.
#[allow(clippy::too_many_arguments)]
pub async fn unlock(
    db: &Db,
    keys: &ServerKeys,
    now: UnixTime,
    t: &Transfer,
    session: &RecipientSession,
    passphrase: SecretString,
    limit: i64,
    address: &str,
) -> Result<Unlock> {
    let header = super::header(db, t.id).await?.ok_or(Error::Unavailable)?;
    // The attempt is counted as wrong before the passphrase is tried (a conditional update,
    // committed at once), and given back if it is right: however many guesses arrive at once,
    // no more than `limit` are ever tried.
    let reserved = sqlx::query(
        "update transfers set wrong_passphrases = wrong_passphrases + 1 \
         where transfer_id = $1 and state = 'released' and wrong_passphrases < $2 \
         returning wrong_passphrases, sender_id",
    )
    .bind(t.id)
    .bind(limit)
    .fetch_optional(db.pool())
    .await?;
    let Some(reserved) = reserved else {
        return Err(Error::Unavailable);
    };
    let give_back = || {
        sqlx::query(
            "update transfers set wrong_passphrases = wrong_passphrases - 1 \
             where transfer_id = $1 and state = 'released' and wrong_passphrases > 0",
        )
        .bind(t.id)
    };
    let attempt = async {
        let work_factor = split::inspect_header(&header)
            .ok()
            .flatten()
            .map_or(MAX_SCRYPT_WORK_FACTOR, |h| h.work_factor);
        let _memory = super::upload::scrypt_memory(work_factor).await?;
        tokio::task::spawn_blocking(move || split::unlock(&header, &passphrase))
            .await
            .map_err(|e| Error::Internal(format!("passphrase task: {e}")))
    }
    .await;
    let attempt = match attempt {
        Ok(attempt) => attempt,
        Err(e) => {
            // Never tried: the attempt does not count.
            give_back().execute(db.pool()).await?;
            return Err(e);
        }
    };
    let actor = recipient_actor(t, address);
    let mut tx = db.begin().await?;
    match attempt {
        Ok(file_key) => {
            if give_back().execute(&mut *tx).await?.rows_affected() != 1 {
                // Locked (or ended) while this passphrase was being checked.
                return Err(Error::Unavailable);
            }
            let sealed = keys.seal(&key_context(&session.hash), file_key.expose());
            sqlx::query(
                "update recipient_sessions set file_key_sealed = $1 where session_hash = $2",
            )
            .bind(sealed)
            .bind(&session.hash)
            .execute(&mut *tx)
            .await?;
            first_time(
                &mut tx,
                now,
                t,
                &actor,
                "unlocked_at",
                "recipient_passphrase_accepted",
            )
            .await?;
            tx.commit().await?;
            Ok(Unlock::Opened)
        }
        Err(safehand_crypto::Error::WrongKey) => {
            let row = reserved;
            let wrong: i64 = row.try_get("wrong_passphrases")?;
            audit::append(
                &mut tx,
                now,
                &actor,
                "recipient_passphrase_wrong",
                &t.recipient_email,
                json!({ "transfer_id": t.id, "wrong": wrong, "limit": limit }),
            )
            .await?;
            if wrong < limit {
                tx.commit().await?;
                return Ok(Unlock::Wrong {
                    left: limit - wrong,
                });
            }
            end_in(&mut tx, now, t.id, &[State::Released], State::Locked).await?;
            let sender_id: i64 = row.try_get("sender_id")?;
            let sender = crate::accounts::by_id(db, sender_id)
                .await?
                .ok_or(Error::NotFound)?;
            mail::enqueue(
                &mut tx,
                &OutgoingMail {
                    to: sender.email.clone(),
                    subject: "A transfer you sent has been locked".into(),
                    body_text: format!(
                        "Hello {},\n\nSomeone entered the wrong passphrase {wrong} times for a transfer you \
                         sent on {}, so it has been locked and can no longer be opened.\n\n\
                         If this was not your recipient, report it to your data protection officer. \
                         See the transfer in Safehand for details.\n",
                        sender.name,
                        crate::clock::format_time(t.created_at)
                    ),
                },
                mail_time(now),
            )
            .await?;
            audit::append(
                &mut tx,
                now,
                &Actor {
                    user_id: None,
                    label: "Safehand".into(),
                    address: "local".into(),
                },
                "transfer_locked",
                &t.recipient_email,
                json!({ "transfer_id": t.id, "wrong_passphrases": wrong }),
            )
            .await?;
            tx.commit().await?;
            // The header is gone: truncate the WAL that still holds it (the sweeper deletes
            // the blob).
            db.checkpoint_wal().await;
            Ok(Unlock::Locked)
        }
        Err(e) => {
            give_back().execute(&mut *tx).await?;
            tx.commit().await?;
            Err(Error::Internal(format!("passphrase check: {e}")))
        }
    }
}
