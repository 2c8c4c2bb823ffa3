//! Rotating the server key (`safehand-server admin rotate-key`): every secret sealed at rest is
//! opened with the old key and sealed again under a new one; then the new key replaces the key
//! file and the old one is kept beside it as `server.key.retired-DATE-KEYID`.
//!
//! The rotation can stop anywhere (power cut, error) and be run again: the new key is written
//! first to `server.key.next`, every sealed value names its key (see [`crate::keys`]) so rows
//! already done are skipped, and the key files are swapped last. While `server.key.next`
//! exists the server refuses to start and says how to finish.
//!
//! Sealed columns are listed in [`SEALED_COLUMNS`]: a feature that seals a new column adds it
//! there (the rotation test fails on any value left under the old key, in any column).
//!
//! The keyed hashes (CSRF tokens, recipient codes, older recovery codes) are derived from the
//! server key too, so after a rotation the old key can compute none of them. Stored hashes
//! cannot be keyed again: recovery codes are therefore sealed, not hashed; recipient codes
//! still waiting to be used expire (the recipient asks for a new one, as after ten minutes);
//! and recovery codes hashed by an older release are retired, naming their owners.

use crate::audit::{self, Actor};
use crate::clock::UnixTime;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::keys::ServerKeys;
use serde_json::json;
use sqlx::Row;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// A column holding values sealed with [`ServerKeys::seal`]. The SQL fragments name the
/// table's columns unqualified or as `table.column`, and run on SQLite and PostgreSQL.
#[derive(Clone, Copy, Debug)]
pub struct SealedColumn {
    /// The table.
    pub table: &'static str,
    /// The sealed column (`blob`/`bytea`, may be null).
    pub column: &'static str,
    /// SQL giving each row a unique text key (paging and the compare-and-set update).
    pub row_key: &'static str,
    /// SQL giving the row's sealing context, exactly as the code that seals it builds it.
    pub context: &'static str,
}

/// Every sealed column: the rotation seals each again, and the rotation test looks for values
/// under the old key in every column of every table, so a sealed column missing here fails it.
pub const SEALED_COLUMNS: &[SealedColumn] = &[
    SealedColumn {
        table: "users",
        column: "totp_seed",
        row_key: "cast(user_id as text)",
        context: "'totp-seed:' || cast(user_id as text)",
    },
    SealedColumn {
        table: "users",
        column: "totp_pending",
        row_key: "cast(user_id as text)",
        context: "'totp-pending:' || cast(user_id as text)",
    },
    SealedColumn {
        table: "sealed_recovery_codes",
        column: "code_sealed",
        row_key: "cast(code_id as text)",
        context: "'recovery-code:' || cast(user_id as text)",
    },
    SealedColumn {
        table: "incidents",
        column: "description_sealed",
        row_key: "cast(incident_id as text)",
        context: "'incident-description:' || cast(incident_id as text)",
    },
    SealedColumn {
        table: "incidents",
        column: "assessment_sealed",
        row_key: "cast(incident_id as text)",
        context: "'incident-assessment:' || cast(incident_id as text)",
    },
    SealedColumn {
        table: "transfers",
        column: "details_sealed",
        row_key: "cast(transfer_id as text)",
        context: "'transfer-details:' || blob_key",
    },
    SealedColumn {
        table: "transfers",
        column: "decision_reason_sealed",
        row_key: "cast(transfer_id as text)",
        context: "'transfer-decision:' || blob_key",
    },
    SealedColumn {
        table: "transfer_files",
        column: "name_sealed",
        row_key: "cast(transfer_files.transfer_id as text) || ':' || cast(transfer_files.position as text)",
        context: "(select 'transfer-file:' || transfers.blob_key || ':' || cast(transfer_files.position as text) \
                  from transfers where transfers.transfer_id = transfer_files.transfer_id)",
    },
    SealedColumn {
        table: "recipient_sessions",
        column: "file_key_sealed",
        row_key: "session_hash",
        context: "'recipient-file-key:' || session_hash",
    },
];

/// The `server_secrets` row that, on data from before keyed hashes followed the server key,
/// holds the first server key as the root of the keyed hashes. The next rotation deletes it.
const HMAC_ROOT: &str = "hmac-root";
const HMAC_ROOT_CONTEXT: &str = "server-secret:hmac-root";

/// Reads the secrets the database keeps under the server key into `keys`: only an HMAC root
/// left by an older release's rotation, until the next rotation removes it. Call once at
/// start-up, after migrations.
pub async fn load_server_secrets(db: &Db, keys: ServerKeys) -> Result<ServerKeys> {
    let row = sqlx::query("select sealed from server_secrets where name = $1")
        .bind(HMAC_ROOT)
        .fetch_optional(db.pool())
        .await?;
    let Some(row) = row else { return Ok(keys) };
    let sealed: Vec<u8> = row.try_get("sealed")?;
    let root = keys.unseal(HMAC_ROOT_CONTEXT, &sealed)?;
    let root: Zeroizing<[u8; 32]> = Zeroizing::new(
        root.as_slice()
            .try_into()
            .map_err(|_| Error::Internal("the stored HMAC root is not 32 bytes".into()))?,
    );
    Ok(keys.with_hmac_root(&root))
}

/// Where a rotation keeps the new key until it is finished.
pub fn next_key_path(key_file: &Path) -> PathBuf {
    let mut name = key_file.file_name().unwrap_or_default().to_os_string();
    name.push(".next");
    key_file.with_file_name(name)
}

/// Whether a rotation of `key_file` was started and not finished.
pub fn unfinished(key_file: &Path) -> bool {
    next_key_path(key_file).exists()
}

/// What a rotation did.
#[derive(Debug)]
pub struct Rotation {
    /// The retired key's id (hex).
    pub old_id: String,
    /// The new key's id (hex).
    pub new_id: String,
    /// Values sealed again in this run.
    pub resealed: u64,
    /// Values found already under the new key (an earlier, interrupted run did them).
    pub already_done: u64,
    /// Where the old key file now is.
    pub retired_key_file: PathBuf,
    /// People whose recovery codes (made before codes were sealed) were retired: they make new
    /// ones on their account page.
    pub retired_recovery_codes: Vec<String>,
    /// Recipient codes not yet used that expired (they were keyed under the old key).
    pub expired_recipient_codes: u64,
}

/// Options for [`rotate`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Stop (with an error) after sealing this many values again: simulates an interrupted
    /// rotation in tests.
    pub stop_after: Option<u64>,
}

/// Rotates the key in `key_file` (see the module docs). The service must be stopped: running
/// instances hold the old key. Errors name the file or row that stopped the rotation; running
/// the command again resumes.
pub async fn rotate(
    db: &Db,
    key_file: &Path,
    now: UnixTime,
    actor: &Actor,
    options: Options,
) -> Result<Rotation> {
    let next_path = next_key_path(key_file);
    let read = |path: &Path| -> Result<ServerKeys> {
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| Error::KeyFile {
                    path: path.display().to_string(),
                    source,
                })?,
            );
        ServerKeys::parse(&text)
    };
    if !key_file.exists() {
        // Stopped between the two renames: the old key is retired, the new one waits.
        if let (true, Some(retired)) = (next_path.exists(), retired_beside(key_file)) {
            let new = read(&next_path)?;
            std::fs::rename(&next_path, key_file).map_err(|e| {
                Error::Internal(format!("cannot rename {}: {e}", next_path.display()))
            })?;
            sync_dir(key_file);
            return Ok(Rotation {
                old_id: retired
                    .to_string_lossy()
                    .rsplit('-')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                new_id: new.id_hex(),
                resealed: 0,
                already_done: 0,
                retired_key_file: retired,
                retired_recovery_codes: Vec::new(),
                expired_recipient_codes: 0,
            });
        }
        return Err(Error::BadInput(format!(
            "there is no key file at {} to rotate",
            key_file.display()
        )));
    }
    let old = read(key_file)?;
    let new = if next_path.exists() {
        read(&next_path)?
    } else {
        let (keys, text) = ServerKeys::generate();
        ServerKeys::write_key_file(&next_path, &text)?;
        sync_dir(&next_path);
        keys
    };
    if new.id() == old.id() {
        return Err(Error::Internal(format!(
            "{} holds the same key as {}; remove it and run the rotation again",
            next_path.display(),
            key_file.display()
        )));
    }

    let mut resealed = 0u64;
    let mut already_done = 0u64;
    for col in SEALED_COLUMNS {
        let mut after = String::new();
        loop {
            let rows = sqlx::query(&format!(
                "select {key} as k, {context} as ctx, {col} as sealed from {table} \
                 where {col} is not null and {key} > $1 order by {key} limit 200",
                key = col.row_key,
                context = col.context,
                col = col.column,
                table = col.table
            ))
            .bind(&after)
            .fetch_all(db.pool())
            .await?;
            if rows.is_empty() {
                break;
            }
            let mut tx = db.begin().await?;
            for row in &rows {
                let key: String = row.try_get("k")?;
                after = key.clone();
                let context: String = row.try_get("ctx")?;
                let sealed: Vec<u8> = row.try_get("sealed")?;
                if ServerKeys::sealed_key_id(&sealed) == Some(new.id()) {
                    already_done += 1;
                    continue;
                }
                if options.stop_after.is_some_and(|n| resealed >= n) {
                    tx.commit().await?;
                    return Err(Error::Internal(format!(
                        "rotation stopped after {resealed} values (test); run it again to finish"
                    )));
                }
                let plain = old.unseal(&context, &sealed).map_err(|e| match e {
                    Error::SealedUnderOtherKey { .. } | Error::Unseal => Error::Internal(format!(
                        "{}.{} of row {key} cannot be opened with the current key {} ({e}); nothing else was changed in that row",
                        col.table, col.column, old.id_hex()
                    )),
                    e => e,
                })?;
                // Compare-and-set: a row changed meanwhile is left for the next run.
                sqlx::query(&format!(
                    "update {table} set {col} = $1 where {key} = $2 and {col} = $3",
                    key = col.row_key,
                    col = col.column,
                    table = col.table
                ))
                .bind(new.seal(&context, &plain))
                .bind(&key)
                .bind(&sealed)
                .execute(&mut *tx)
                .await?;
                resealed += 1;
            }
            tx.commit().await?;
        }
    }
    // Anything left under another key (a row written meanwhile) stops the swap.
    for col in SEALED_COLUMNS {
        let rows = sqlx::query(&format!(
            "select {col} as sealed from {table} where {col} is not null",
            col = col.column,
            table = col.table
        ))
        .fetch_all(db.pool())
        .await?;
        for row in rows {
            let sealed: Vec<u8> = row.try_get("sealed")?;
            if ServerKeys::sealed_key_id(&sealed) != Some(new.id()) {
                return Err(Error::Internal(format!(
                    "{}.{} still holds values under the old key (was the service running?); stop the service and run the rotation again",
                    col.table, col.column
                )));
            }
        }
    }
    let date = time::OffsetDateTime::from_unix_timestamp(now)
        .ok()
        .and_then(|d| {
            d.format(time::macros::format_description!("[year][month][day]"))
                .ok()
        })
        .unwrap_or_else(|| now.to_string());
    let mut retired_name = key_file.file_name().unwrap_or_default().to_os_string();
    retired_name.push(format!(".retired-{date}-{}", old.id_hex()));
    let retired = key_file.with_file_name(retired_name);
    // The keyed hashes now hang off the new key. What was keyed under the old one cannot be
    // keyed again (only its hash is stored): recovery codes from before codes were sealed are
    // retired (their owners are named), and recipient codes not yet used expire (the recipient
    // asks for a new one). CSRF tokens in open pages are refused once, and the form is shown
    // again with a fresh one.
    let mut tx = db.begin().await?;
    let retired_recovery_codes: Vec<String> = sqlx::query(
        "select distinct users.email as email from recovery_codes \
         join users on users.user_id = recovery_codes.user_id \
         where recovery_codes.used_at is null order by users.email",
    )
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(|r| r.try_get("email"))
    .collect::<std::result::Result<_, _>>()?;
    sqlx::query("delete from recovery_codes")
        .execute(&mut *tx)
        .await?;
    let expired_recipient_codes = sqlx::query(
        "update recipient_codes set expires_at = $1 where used_at is null and expires_at > $1",
    )
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query("delete from server_secrets where name = $1")
        .bind(HMAC_ROOT)
        .execute(&mut *tx)
        .await?;
    audit::append(
        &mut tx,
        now,
        actor,
        "server_key_rotated",
        "server key",
        json!({
            "from": old.id_hex(),
            "to": new.id_hex(),
            "resealed": resealed + already_done,
            "recovery_codes_retired_for": retired_recovery_codes,
            "recipient_codes_expired": expired_recipient_codes,
        }),
    )
    .await?;
    tx.commit().await?;
    let io = |e: std::io::Error| Error::Internal(format!("cannot swap the key files: {e}"));
    std::fs::rename(key_file, &retired).map_err(io)?;
    std::fs::rename(&next_path, key_file).map_err(io)?;
    sync_dir(key_file);
    Ok(Rotation {
        old_id: old.id_hex(),
        new_id: new.id_hex(),
        resealed,
        already_done,
        retired_key_file: retired,
        retired_recovery_codes,
        expired_recipient_codes,
    })
}

/// The newest retired key file beside `key_file`, if any.
fn retired_beside(key_file: &Path) -> Option<PathBuf> {
    let dir = key_file.parent()?;
    let prefix = format!("{}.retired-", key_file.file_name()?.to_string_lossy());
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .collect();
    found.sort();
    found.pop()
}

/// Makes a rename or a new file in `path`'s folder durable (best effort).
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}
