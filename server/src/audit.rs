//! The audit log: an append-only table in which every record carries the SHA-256 of the record
//! before it, so that changing or removing any record breaks the chain at that point.
//!
//! A record's hash covers `[seq, at, actor_id, actor, action, subject, address, details,
//! prev_hash]` serialised as one JSON array. Records are appended with [`append`] inside the
//! transaction of the action they record; the one-row `audit_head` table is locked while a
//! transaction appends, so instances append one after another. `prev_hash` is unique as a
//! second guard against a fork.

use crate::clock::UnixTime;
use crate::db::{opt_i64, Db};
use crate::error::Result;
use sha2::{Digest, Sha256};
use sqlx::Row;

/// The `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Who did something: a signed-in user, an operator at the command line, or someone not
/// (yet) identified.
#[derive(Clone, Debug)]
pub struct Actor {
    /// The user's id, when a user acted.
    pub user_id: Option<i64>,
    /// A readable label: the user's email, or "command line".
    pub label: String,
    /// The client's address, or "local".
    pub address: String,
}

impl Actor {
    /// An operator using `safehand-server admin` on the server itself.
    pub fn operator() -> Self {
        Self {
            user_id: None,
            label: "operator (command line)".into(),
            address: "local".into(),
        }
    }
}

/// One record as stored.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Record {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// When it happened (unix seconds).
    pub at: UnixTime,
    /// The acting user's id, if any.
    pub actor_id: Option<i64>,
    /// Who acted.
    pub actor: String,
    /// What happened, e.g. `sign_in_failed`.
    pub action: String,
    /// What it happened to, e.g. a user's email.
    pub subject: String,
    /// The client's address.
    pub address: String,
    /// Further facts as a JSON object (never secrets).
    pub details: String,
    /// Hash of the record before.
    pub prev_hash: String,
    /// Hash of this record.
    pub hash: String,
}

/// The SHA-256 over a record's fields (everything except its own `hash`).
fn record_hash(r: &Record) -> String {
    let canonical = serde_json::json!([
        r.seq,
        r.at,
        r.actor_id,
        r.actor,
        r.action,
        r.subject,
        r.address,
        r.details,
        r.prev_hash
    ]);
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// Appends one record at time `now` inside the caller's transaction, so the record exists
/// exactly when the action it describes committed. Call it last in the transaction: it locks
/// the chain's head (the one `audit_head` row) until the transaction ends, which serialises
/// appends from every instance. (`&mut Transaction<'_, Any>` derefs to `AnyConnection`.)
pub async fn append(
    conn: &mut sqlx::AnyConnection,
    now: UnixTime,
    actor: &Actor,
    action: &str,
    subject: &str,
    details: serde_json::Value,
) -> Result<()> {
    // Taking the lock first: an update holds the row (PostgreSQL) or the database (SQLite).
    sqlx::query("update audit_head set seq = seq where id = 1")
        .execute(&mut *conn)
        .await?;
    let head = sqlx::query("select seq, hash from audit_head where id = 1")
        .fetch_one(&mut *conn)
        .await?;
    let mut r = Record {
        seq: head.try_get::<i64, _>("seq")? + 1,
        at: now,
        actor_id: actor.user_id,
        actor: actor.label.clone(),
        action: action.to_string(),
        subject: subject.to_string(),
        address: actor.address.clone(),
        details: details.to_string(),
        prev_hash: head.try_get("hash")?,
        hash: String::new(),
    };
    r.hash = record_hash(&r);
    sqlx::query(
        "insert into audit_log (seq, at, actor_id, actor, action, subject, address, details, prev_hash, hash) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(r.seq)
    .bind(r.at)
    .bind(r.actor_id)
    .bind(&r.actor)
    .bind(&r.action)
    .bind(&r.subject)
    .bind(&r.address)
    .bind(&r.details)
    .bind(&r.prev_hash)
    .bind(&r.hash)
    .execute(&mut *conn)
    .await?;
    sqlx::query("update audit_head set seq = $1, hash = $2 where id = 1")
        .bind(r.seq)
        .bind(&r.hash)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Appends one record in a transaction of its own: for events that change nothing else
/// (a failed sign-in, an export). Anything that changes data calls [`append`] inside its
/// own transaction instead.
pub async fn record(
    db: &Db,
    now: UnixTime,
    actor: &Actor,
    action: &str,
    subject: &str,
    details: serde_json::Value,
) -> Result<()> {
    let mut tx = db.begin().await?;
    append(&mut tx, now, actor, action, subject, details).await?;
    tx.commit().await?;
    Ok(())
}

fn row_to_record(row: &sqlx::any::AnyRow) -> Result<Record, sqlx::Error> {
    Ok(Record {
        seq: row.try_get("seq")?,
        at: row.try_get("at")?,
        actor_id: opt_i64(row, "actor_id")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        subject: row.try_get("subject")?,
        address: row.try_get("address")?,
        details: row.try_get("details")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

/// The outcome of checking the whole chain.
#[derive(Debug, PartialEq, Eq)]
pub enum Verification {
    /// Every record links to the one before and its hash matches its contents.
    Intact {
        /// How many records were checked.
        records: i64,
        /// The hash of the last record (the chain's head), to note down and compare later.
        head: String,
    },
    /// The first record at which the chain breaks.
    Broken {
        /// Its sequence number.
        seq: i64,
        /// What is wrong there.
        reason: String,
    },
}

/// Walks the chain from the first record and reports the first broken link.
pub async fn verify(db: &Db) -> Result<Verification> {
    let mut expected_seq = 1i64;
    let mut prev = GENESIS.to_string();
    loop {
        let rows = sqlx::query(
            "select seq, at, actor_id, actor, action, subject, address, details, prev_hash, hash \
             from audit_log where seq >= $1 order by seq limit 1000",
        )
        .bind(expected_seq)
        .fetch_all(db.pool())
        .await?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let r = row_to_record(row)?;
            if r.seq != expected_seq {
                return Ok(Verification::Broken {
                    seq: expected_seq,
                    reason: format!(
                        "record {expected_seq} is missing (the next record is {})",
                        r.seq
                    ),
                });
            }
            if r.prev_hash != prev {
                return Ok(Verification::Broken {
                    seq: r.seq,
                    reason: "it does not link to the record before it (that record was changed or removed)".into(),
                });
            }
            let computed = record_hash(&r);
            if computed != r.hash {
                return Ok(Verification::Broken {
                    seq: r.seq,
                    reason: "its contents do not match its hash (the record was changed)".into(),
                });
            }
            prev = r.hash;
            expected_seq += 1;
        }
    }
    Ok(Verification::Intact {
        records: expected_seq - 1,
        head: prev,
    })
}

/// Filters for the audit page and its exports.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct Filter {
    /// Actor or subject contains this text (an email, usually).
    #[serde(default)]
    pub user: String,
    /// Exact action name.
    #[serde(default)]
    pub action: String,
    /// From this date (YYYY-MM-DD), inclusive.
    #[serde(default)]
    pub from: String,
    /// To this date (YYYY-MM-DD), inclusive.
    #[serde(default)]
    pub to: String,
}

/// Records matching `filter`, newest first, at most `limit`.
pub async fn search(db: &Db, filter: &Filter, limit: i64) -> Result<Vec<Record>> {
    let from = crate::clock::parse_date(&filter.from).unwrap_or(i64::MIN);
    let to = crate::clock::parse_date(&filter.to)
        .map(|t| t + 86_400 - 1)
        .unwrap_or(i64::MAX);
    let user = filter.user.trim().to_lowercase();
    let rows = sqlx::query(
        "select seq, at, actor_id, actor, action, subject, address, details, prev_hash, hash \
         from audit_log \
         where at >= $1 and at <= $2 \
           and ($3 = '' or lower(actor) like $4 or lower(subject) like $4) \
           and ($5 = '' or action = $5) \
         order by seq desc limit $6",
    )
    .bind(from)
    .bind(to)
    .bind(user.clone())
    .bind(format!("%{}%", user.replace(['%', '_'], "")))
    .bind(filter.action.trim().to_string())
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| row_to_record(r).map_err(Into::into))
        .collect()
}

/// The records about `subject` (e.g. a recipient's address) with one of `actions`, oldest
/// first.
pub async fn about(db: &Db, subject: &str, actions: &[&str]) -> Result<Vec<Record>> {
    let placeholders: Vec<String> = (0..actions.len()).map(|i| format!("${}", i + 2)).collect();
    let sql = format!(
        "select seq, at, actor_id, actor, action, subject, address, details, prev_hash, hash \
         from audit_log where subject = $1 and action in ({}) order by seq",
        placeholders.join(", ")
    );
    let mut query = sqlx::query(&sql).bind(subject);
    for a in actions {
        query = query.bind(*a);
    }
    let rows = query.fetch_all(db.pool()).await?;
    rows.iter()
        .map(|r| row_to_record(r).map_err(Into::into))
        .collect()
}

/// The action names present in the log, for the filter's drop-down.
pub async fn actions(db: &Db) -> Result<Vec<String>> {
    let rows = sqlx::query("select distinct action from audit_log order by action")
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|r| r.try_get::<String, _>("action").map_err(Into::into))
        .collect()
}
