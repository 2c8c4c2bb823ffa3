//! Rotating the server key (`safehand-server admin rotate-key`): every secret sealed at rest is
//! opened with the old key and sealed again under a new one; then the new key replaces the key
//! file and the old one is kept beside it as `server.key.retired-DATE-KEYID`.
//!
//! The rotation can stop anywhere (power cut, error) and be run again: the new key is written
//! first to `server.key.next`, every sealed value names its key (see [`crate::keys`]) so rows
//! already done are skipped, and the key files are swapped last. While `server.key.next`
//! exists the server refuses to start and says how to finish.
//!
//! Tables with sealed columns are listed in [`SEALED_COLUMNS`]: a feature that seals a new
//! column adds it there (the rotation test checks every listed column).

use crate::audit::{self, Actor};
use crate::clock::UnixTime;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::keys::ServerKeys;
use serde_json::json;
use sqlx::Row;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// A column holding values sealed with [`ServerKeys::seal`] under the context
/// `context_prefix` followed by the row's integer id.
#[derive(Clone, Copy, Debug)]
pub struct SealedColumn {
    /// The table.
    pub table: &'static str,
    /// Its integer primary key.
    pub id_column: &'static str,
    /// The sealed column (`blob`/`bytea`, may be null).
    pub column: &'static str,
    /// The sealing context without the id, e.g. `totp-seed:`.
    pub context_prefix: &'static str,
}

/// Every sealed column. Add new ones here.
pub const SEALED_COLUMNS: &[SealedColumn] = &[
    SealedColumn {
        table: "users",
        id_column: "user_id",
        column: "totp_seed",
        context_prefix: "totp-seed:",
    },
    SealedColumn {
        table: "users",
        id_column: "user_id",
        column: "totp_pending",
        context_prefix: "totp-pending:",
    },
    SealedColumn {
        table: "incidents",
        id_column: "incident_id",
        column: "description_sealed",
        context_prefix: "incident-description:",
    },
    SealedColumn {
        table: "incidents",
        id_column: "incident_id",
        column: "assessment_sealed",
        context_prefix: "incident-assessment:",
    },
];

/// The `server_secrets` row holding the root of the keyed hashes after a rotation.
const HMAC_ROOT: &str = "hmac-root";
const HMAC_ROOT_CONTEXT: &str = "server-secret:hmac-root";

/// Reads the secrets the database keeps under the server key (the HMAC root after a rotation)
/// into `keys`. Call once at start-up, after migrations.
pub async fn load_server_secrets(db: &Db, keys: ServerKeys) -> Result<ServerKeys> {
    match stored_hmac_root(db, &[&keys]).await? {
        Some(root) => Ok(keys.with_hmac_root(&root)),
        None => Ok(keys),
    }
}

/// The stored HMAC root, opened with whichever of `keys` it names.
async fn stored_hmac_root(db: &Db, keys: &[&ServerKeys]) -> Result<Option<Zeroizing<[u8; 32]>>> {
    let row = sqlx::query("select sealed from server_secrets where name = $1")
        .bind(HMAC_ROOT)
        .fetch_optional(db.pool())
        .await?;
    let Some(row) = row else { return Ok(None) };
    let sealed: Vec<u8> = row.try_get("sealed")?;
    let key = keys
        .iter()
        .find(|k| ServerKeys::sealed_key_id(&sealed) == Some(k.id()))
        .unwrap_or(&keys[0]);
    let root = key.unseal(HMAC_ROOT_CONTEXT, &sealed)?;
    let root: [u8; 32] = root
        .as_slice()
        .try_into()
        .map_err(|_| Error::Internal("the stored HMAC root is not 32 bytes".into()))?;
    Ok(Some(Zeroizing::new(root)))
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
    // An interrupted run may already have sealed the HMAC root under the new key.
    let old = match stored_hmac_root(db, &[&old, &new]).await? {
        Some(root) => old.with_hmac_root(&root),
        None => old,
    };
    if new.id() == old.id() {
        return Err(Error::Internal(format!(
            "{} holds the same key as {}; remove it and run the rotation again",
            next_path.display(),
            key_file.display()
        )));
    }
    // The keyed hashes keep their root: seal it under the new key.
    let new = new.with_hmac_root(old.hmac_root());
    let mut tx = db.begin().await?;
    sqlx::query("delete from server_secrets where name = $1")
        .bind(HMAC_ROOT)
        .execute(&mut *tx)
        .await?;
    sqlx::query("insert into server_secrets (name, sealed) values ($1, $2)")
        .bind(HMAC_ROOT)
        .bind(new.seal(HMAC_ROOT_CONTEXT, old.hmac_root()))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;

    let mut resealed = 0u64;
    let mut already_done = 0u64;
    for col in SEALED_COLUMNS {
        let mut after = i64::MIN;
        loop {
            let rows = sqlx::query(&format!(
                "select {id} as id, {col} as sealed from {table} \
                 where {col} is not null and {id} > $1 order by {id} limit 200",
                id = col.id_column,
                col = col.column,
                table = col.table
            ))
            .bind(after)
            .fetch_all(db.pool())
            .await?;
            if rows.is_empty() {
                break;
            }
            let mut tx = db.begin().await?;
            for row in &rows {
                let id: i64 = row.try_get("id")?;
                after = id;
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
                let context = format!("{}{id}", col.context_prefix);
                let plain = old.unseal(&context, &sealed).map_err(|e| match e {
                    Error::SealedUnderOtherKey { .. } | Error::Unseal => Error::Internal(format!(
                        "{}.{} of row {id} cannot be opened with the current key {} ({e}); nothing else was changed in that row",
                        col.table, col.column, old.id_hex()
                    )),
                    e => e,
                })?;
                // Compare-and-set: a row changed meanwhile is left for the next run.
                sqlx::query(&format!(
                    "update {table} set {col} = $1 where {id} = $2 and {col} = $3",
                    id = col.id_column,
                    col = col.column,
                    table = col.table
                ))
                .bind(new.seal(&context, &plain))
                .bind(id)
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
    let mut tx = db.begin().await?;
    audit::append(
        &mut tx,
        now,
        actor,
        "server_key_rotated",
        "server key",
        json!({ "from": old.id_hex(), "to": new.id_hex(), "resealed": resealed + already_done }),
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
