//! The audit log: an append-only table in which every record carries the SHA-256 of the record
//! before it, a MAC under the audit key, and, at intervals and on every export, a signed head.
//! The format (shared with `safehand audit-verify`, which checks an export offline) is in
//! [`safehand_crypto::audit_chain`].
//!
//! Records are appended with [`append`] inside the transaction of the action they record; the
//! one-row `audit_head` table is locked while a transaction appends, so instances append one
//! after another. `prev_hash` is unique as a second guard against a fork.
//!
//! The audit key lives outside the database (`audit.key` in the data folder, or given by
//! configuration), so someone who can write to the database can neither make a record's MAC
//! nor sign a head: rewriting a record and recomputing every unkeyed hash after it is caught
//! by [`verify`]. Records written before the chain was keyed (by an older release) have no
//! MAC; the key file notes where keying began (`keyed-from`), so only those may lack one, and
//! they are protected from then on by the first keyed record, whose MAC covers their last
//! hash.

use crate::clock::UnixTime;
use crate::db::{opt_i64, Db, Tx};
use crate::error::{Error, Result};
use safehand_crypto::audit_chain::{self, AuditKey, Fields};
use sqlx::Row;
use std::path::Path;

pub use audit_chain::GENESIS;

/// How often the sweeper signs the head of a growing log.
pub const SIGN_INTERVAL_SECS: i64 = 600;

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
    /// MAC of this record under the audit key (none for records from before the chain was
    /// keyed).
    pub mac: Option<String>,
}

impl Record {
    fn fields(&self) -> Fields<'_> {
        Fields {
            seq: self.seq,
            at: self.at,
            actor_id: self.actor_id,
            actor: &self.actor,
            action: &self.action,
            subject: &self.subject,
            address: &self.address,
            details: &self.details,
            prev_hash: &self.prev_hash,
        }
    }
}

const COLUMNS: &str =
    "seq, at, actor_id, actor, action, subject, address, details, prev_hash, hash, mac";

fn no_key() -> Error {
    Error::Internal("the audit key is not loaded (Db::with_audit_key)".into())
}

/// Reads the audit key file, or creates it (mode 0600) with a new random key when absent.
/// A new key notes the number of the database's next record: records before it (written by
/// an older release) may lack a MAC, every later one must have one.
pub async fn load_or_create_key(path: &Path, db: &Db) -> Result<AuditKey> {
    let key = read_or_create_key(path, db).await?;
    // The log's keyed records must be this key's: an instance with another key (a second
    // server given its own data folder) would write records that read as tampering. When
    // neither the first nor the newest keyed record has this key's MAC, it is another key;
    // when only one has, records were rewritten, which `verify` reports (and the service
    // logs) without refusing to start.
    let mut mismatched = 0;
    let mut seen = 0;
    for order in ["asc", "desc"] {
        let row = sqlx::query(&format!(
            "select hash, mac from audit_log where mac is not null order by seq {order} limit 1"
        ))
        .fetch_optional(db.pool())
        .await?;
        if let Some(row) = row {
            seen += 1;
            let (hash, mac): (String, String) = (row.try_get("hash")?, row.try_get("mac")?);
            if !key.mac_matches(&hash, &mac) {
                mismatched += 1;
            }
        }
    }
    if seen > 0 && mismatched == seen {
        return Err(Error::AuditKey(format!(
            "{} is not the audit key this database's log is kept under: every instance needs the same audit key, so copy audit.key from the data folder of the instance that made it (or point SAFEHAND_AUDIT_KEY_FILE at it)",
            path.display()
        )));
    }
    Ok(key)
}

async fn read_or_create_key(path: &Path, db: &Db) -> Result<AuditKey> {
    let file_err = |source| Error::KeyFile {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            AuditKey::parse(&text).map_err(|e| Error::AuditKey(format!("{}: {e}", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let keyed: i64 =
                sqlx::query("select count(*) as n from audit_log where mac is not null")
                    .fetch_one(db.pool())
                    .await?
                    .try_get("n")?;
            if keyed > 0 {
                return Err(Error::AuditKey(format!(
                    "there is no audit key at {}, but this database's log is already kept under one: copy audit.key from the data folder of the instance that made it (every instance needs the same one), or point SAFEHAND_AUDIT_KEY_FILE at it",
                    path.display()
                )));
            }
            let next: i64 = sqlx::query("select coalesce(max(seq), 0) + 1 as next from audit_log")
                .fetch_one(db.pool())
                .await?
                .try_get("next")?;
            let (key, text) = AuditKey::generate(next);
            crate::keys::ServerKeys::write_key_file(path, text.trim())?;
            if next > 1 {
                tracing::info!(
                    records = next - 1,
                    "new audit key: the records already in the log predate it and have no MAC"
                );
            }
            Ok(key)
        }
        Err(e) => Err(file_err(e)),
    }
}

/// Appends one record at time `now` inside the caller's transaction, so the record exists
/// exactly when the action it describes committed. Call it last in the transaction: it locks
/// the chain's head (the one `audit_head` row) until the transaction ends, which serialises
/// appends from every instance.
pub async fn append(
    tx: &mut Tx,
    now: UnixTime,
    actor: &Actor,
    action: &str,
    subject: &str,
    details: serde_json::Value,
) -> Result<()> {
    // Without the key nothing is written: an unkeyed record after keyed ones would read as
    // tampering.
    if tx.audit_key().is_none() {
        return Err(no_key());
    }
    let conn: &mut sqlx::AnyConnection = &mut *tx;
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
        mac: None,
    };
    r.hash = audit_chain::record_hash(&r.fields());
    r.mac = tx.audit_key().map(|k| k.mac(&r.hash));
    let conn: &mut sqlx::AnyConnection = &mut *tx;
    sqlx::query(
        "insert into audit_log (seq, at, actor_id, actor, action, subject, address, details, prev_hash, hash, mac) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
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
    .bind(&r.mac)
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
        mac: row.try_get("mac")?,
    })
}

/// The outcome of checking the whole chain.
#[derive(Debug, PartialEq, Eq)]
pub enum Verification {
    /// Every record links to the one before, its hash matches its contents and its MAC is
    /// right, and every signed head matches the chain and its signature.
    Intact {
        /// How many records were checked.
        records: i64,
        /// The hash of the last record (the chain's head), to note down and compare later.
        head: String,
        /// Records at the start of the log written before the chain was keyed (no MAC).
        unkeyed: i64,
        /// The newest signed head, if any.
        signed_up_to: Option<i64>,
    },
    /// The first record at which the chain breaks.
    Broken {
        /// Its sequence number.
        seq: i64,
        /// What is wrong there.
        reason: String,
    },
}

/// A signed head as stored.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SignedHead {
    /// The record signed for.
    pub seq: i64,
    /// Its hash.
    pub hash: String,
    /// When it was signed (unix seconds).
    pub at: UnixTime,
    /// The Ed25519 signature (base64).
    pub signature: String,
}

async fn signed_heads(db: &Db, up_to: i64) -> Result<Vec<SignedHead>> {
    let rows = sqlx::query(
        "select seq, hash, at, signature from audit_signatures where seq <= $1 order by seq",
    )
    .bind(up_to)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(SignedHead {
                seq: r.try_get("seq")?,
                hash: r.try_get("hash")?,
                at: r.try_get("at")?,
                signature: r.try_get("signature")?,
            })
        })
        .collect()
}

/// Walks the chain from the first record and reports the first broken link: a missing or
/// reordered record, a broken link, contents that do not match the hash, a wrong or missing
/// MAC, or a signed head that does not match the chain or its signature.
pub async fn verify(db: &Db) -> Result<Verification> {
    let key = db.audit_key().ok_or_else(no_key)?;
    let mut expected_seq = 1i64;
    let mut prev = GENESIS.to_string();
    let mut unkeyed = 0i64;
    let mut heads = signed_heads(db, i64::MAX).await?.into_iter().peekable();
    let public = key.public_key();
    loop {
        let rows = sqlx::query(&format!(
            "select {COLUMNS} from audit_log where seq >= $1 order by seq limit 1000"
        ))
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
            if audit_chain::record_hash(&r.fields()) != r.hash {
                return Ok(Verification::Broken {
                    seq: r.seq,
                    reason: "its contents do not match its hash (the record was changed)".into(),
                });
            }
            match &r.mac {
                Some(mac) if key.mac_matches(&r.hash, mac) => {}
                Some(_) => {
                    return Ok(Verification::Broken {
                        seq: r.seq,
                        reason: "its MAC is wrong: the record, or one before it, was rewritten by someone without the audit key".into(),
                    })
                }
                None if r.seq < key.keyed_from() => unkeyed += 1,
                None => {
                    return Ok(Verification::Broken {
                        seq: r.seq,
                        reason: "its MAC is missing, though it was written after the log was keyed (the record was rewritten)".into(),
                    })
                }
            }
            while let Some(h) = heads.next_if(|h| h.seq == r.seq) {
                if h.hash != r.hash
                    || !audit_chain::head_signature_valid(
                        &public,
                        h.seq,
                        &h.hash,
                        h.at,
                        &h.signature,
                    )
                {
                    return Ok(Verification::Broken {
                        seq: r.seq,
                        reason: "the head signed at this record does not match it, or its signature is not valid".into(),
                    });
                }
            }
            prev = r.hash;
            expected_seq += 1;
        }
    }
    if let Some(h) = heads.next() {
        return Ok(Verification::Broken {
            seq: h.seq,
            reason: "a signed head names a record the log no longer holds (records were removed)"
                .into(),
        });
    }
    let signed_up_to = sqlx::query("select max(seq) as m from audit_signatures")
        .fetch_one(db.pool())
        .await
        .ok()
        .and_then(|r| opt_i64(&r, "m").ok().flatten());
    Ok(Verification::Intact {
        records: expected_seq - 1,
        head: prev,
        unkeyed,
        signed_up_to,
    })
}

/// Signs the record `seq` (its hash as stored) at time `now`, unless it is signed already,
/// and returns the signed head. The caller has checked the chain up to it.
async fn sign_record(db: &Db, now: UnixTime, seq: i64, hash: &str) -> Result<SignedHead> {
    let key = db.audit_key().ok_or_else(no_key)?;
    let head = SignedHead {
        seq,
        hash: hash.to_string(),
        at: now,
        signature: key.sign_head(seq, hash, now),
    };
    sqlx::query(
        "insert into audit_signatures (seq, hash, at, signature) values ($1, $2, $3, $4) \
         on conflict (seq) do nothing",
    )
    .bind(head.seq)
    .bind(&head.hash)
    .bind(head.at)
    .bind(&head.signature)
    .execute(db.pool())
    .await?;
    let stored = signed_heads(db, seq)
        .await?
        .into_iter()
        .find(|h| h.seq == seq);
    stored.ok_or_else(|| Error::Internal("the signed head was not stored".into()))
}

/// Signs the head of the log when it has grown and the last signature is older than
/// `interval` seconds (the sweeper calls this), after checking the whole chain: a broken
/// chain is never signed (it is logged instead). Returns the new signed head's record.
pub async fn sign_head_if_due(db: &Db, now: UnixTime, interval: i64) -> Result<Option<i64>> {
    let last = sqlx::query("select seq, at from audit_signatures order by seq desc limit 1")
        .fetch_optional(db.pool())
        .await?;
    let (last_seq, last_at) = match &last {
        Some(r) => (
            r.try_get::<i64, _>("seq")?,
            Some(r.try_get::<i64, _>("at")?),
        ),
        None => (0, None),
    };
    let head = sqlx::query("select seq, hash from audit_head where id = 1")
        .fetch_one(db.pool())
        .await?;
    let head_seq: i64 = head.try_get("seq")?;
    if head_seq <= last_seq || last_at.is_some_and(|t| now.saturating_sub(t) < interval) {
        return Ok(None);
    }
    match verify(db).await? {
        Verification::Intact { records, head, .. } => {
            Ok(Some(sign_record(db, now, records, &head).await?.seq))
        }
        Verification::Broken { seq, reason } => {
            tracing::error!(seq, %reason, "the audit log is broken: its head is not signed; run `safehand-server admin audit-verify`");
            Ok(None)
        }
    }
}

/// A whole-log export: every record in order, the signed heads, and a head signed now, so
/// the export can be checked offline ([`audit_chain::verify_export`]). When the chain is
/// broken the records are still exported, unsigned, with the reason.
#[derive(Debug)]
pub struct ChainExport {
    /// Records from the first, oldest first.
    pub records: Vec<Record>,
    /// The signed heads the records cover (the last signs the last record), or none when
    /// the chain is broken.
    pub signed_heads: Vec<SignedHead>,
    /// The public key that checks them.
    pub public_key: String,
    /// Whether the chain checked out.
    pub broken: Option<String>,
}

impl ChainExport {
    /// The JSON document of `/admin/audit.json` (and `safehand-server admin audit-export`).
    pub fn document(&self) -> serde_json::Value {
        let chain = match &self.broken {
            None => serde_json::json!({
                "complete": true,
                "public_key": self.public_key,
                "signed_heads": self.signed_heads,
            }),
            Some(reason) => serde_json::json!({
                "complete": false,
                "public_key": self.public_key,
                "note": format!("This export is not signed: {reason}. Tell the data protection officer; `safehand-server admin audit-verify` on the server says more."),
            }),
        };
        export_document(&self.records, chain)
    }
}

/// An export's JSON: the records (with `details` as JSON for reading and `details_text`
/// exactly as hashed) and the `chain` section.
pub fn export_document(records: &[Record], chain: serde_json::Value) -> serde_json::Value {
    let records: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            serde_json::json!({
                "seq": r.seq, "at": crate::clock::format_rfc3339(r.at), "at_unix": r.at,
                "actor_id": r.actor_id, "actor": r.actor, "action": r.action,
                "subject": r.subject, "address": r.address,
                "details": serde_json::from_str::<serde_json::Value>(&r.details).unwrap_or(serde_json::Value::Null),
                "details_text": r.details,
                "prev_hash": r.prev_hash, "hash": r.hash,
            })
        })
        .collect();
    serde_json::json!({ "records": records, "chain": chain })
}

/// Reads the whole log for an export, checking it and signing its head first.
pub async fn export_chain(db: &Db, now: UnixTime, limit: i64) -> Result<ChainExport> {
    let key = db.audit_key().ok_or_else(no_key)?;
    let public_key = key.public_key().to_string();
    let (up_to, broken) = match verify(db).await? {
        Verification::Intact { records, head, .. } => {
            if records > 0 {
                sign_record(db, now, records, &head).await?;
            }
            (records, None)
        }
        Verification::Broken { seq, reason } => (
            i64::MAX,
            Some(format!("the chain is broken at record {seq}: {reason}")),
        ),
    };
    let rows = sqlx::query(&format!(
        "select {COLUMNS} from audit_log where seq <= $1 order by seq limit $2"
    ))
    .bind(up_to)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    let records: Vec<Record> = rows
        .iter()
        .map(|r| row_to_record(r).map_err(Into::into))
        .collect::<Result<_>>()?;
    let broken = match broken {
        None if (records.len() as i64) < up_to => Some(format!(
            "the log holds {up_to} records, more than one export's limit of {limit}"
        )),
        b => b,
    };
    let signed_heads = if broken.is_none() {
        signed_heads(db, up_to).await?
    } else {
        Vec::new()
    };
    Ok(ChainExport {
        records,
        signed_heads,
        public_key,
        broken,
    })
}

/// The public key that checks the log's signed heads, for the audit page.
pub fn public_key(db: &Db) -> Result<String> {
    Ok(db.audit_key().ok_or_else(no_key)?.public_key().to_string())
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
        "select seq, at, actor_id, actor, action, subject, address, details, prev_hash, hash, mac \
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
        "select seq, at, actor_id, actor, action, subject, address, details, prev_hash, hash, mac \
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
