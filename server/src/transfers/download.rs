//! Downloads: one file, all files as a ZIP, or the `.age` payload, streamed from blob storage
//! and decrypted on the fly with the file key the recipient's passphrase unlocked.
//!
//! The download limit holds under concurrency: a download first takes a slot in a transaction
//! that locks the transfer's row, and only `completed + running < limit` gives one. A download
//! counts when its last byte has been handed to the connection; one that stops half-way gives
//! its slot back. A slot is held by a claim of [`CLAIM_LIFETIME`] seconds, renewed while bytes
//! flow, so the slot of a download whose server crashed is free again within a minute.
//!
//! A recall, expiry or lock-out stops a download that is already running: while it streams, a
//! download checks at least once a second that its transfer is still released and unexpired,
//! and its completion is recorded only if it still is. A download stopped this way is recorded
//! as cut off (`transfer_download_cut_off`, with the reason), never as downloaded, and its last
//! bytes are withheld, so the recipient is left with an incomplete file.

use super::{end_in, get, recipient::mail_time, State, Transfer, TransferFile};
use crate::audit::{self, Actor};
use crate::blobs::Blobs;
use crate::clock::{Clock, UnixTime};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::mail::{self, OutgoingMail};
use axum::body::Bytes;
use futures_util::{Stream, StreamExt};
use safehand_crypto::split::{BodyOpener, FileKey};
use serde_json::json;
use sqlx::Row;
use std::pin::Pin;
use std::time::{Duration, Instant};

/// How long a download's claim on its slot lasts unless renewed (seconds).
pub const CLAIM_LIFETIME: i64 = 60;

/// How often a running download renews its claim (seconds).
const RENEW_EVERY: i64 = 10;

/// How often a running download checks that its transfer may still be downloaded.
const RECHECK_EVERY: Duration = Duration::from_secs(1);

/// Why a running download was stopped before its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutOff {
    /// The sender (or an incident report) recalled the transfer.
    Recalled,
    /// The transfer expired.
    Expired,
    /// Too many wrong passphrases locked the transfer.
    Locked,
    /// Other downloads used up the download limit first.
    LimitReached,
    /// The transfer ended some other way (shredded, rejected).
    Ended,
}

impl CutOff {
    /// The stored reason.
    pub fn as_str(self) -> &'static str {
        match self {
            CutOff::Recalled => "recalled",
            CutOff::Expired => "expired",
            CutOff::Locked => "locked",
            CutOff::LimitReached => "download limit reached",
            CutOff::Ended => "transfer ended",
        }
    }

    /// In words, after "cut off by ...": "the recall", "the expiry".
    pub fn by(reason: &str) -> &'static str {
        match reason {
            "recalled" => "the recall",
            "expired" => "the expiry",
            "locked" => "the lock-out",
            "download limit reached" => "other downloads using up the limit",
            _ => "the end of the transfer",
        }
    }

    /// What the recipient's connection is told (it ends the response early).
    fn message(self) -> String {
        format!(
            "the download was stopped: the transfer was {}",
            match self {
                CutOff::Recalled => "recalled by its sender",
                CutOff::Expired => "past its expiry",
                CutOff::Locked => "locked",
                CutOff::LimitReached => "downloaded as many times as allowed",
                CutOff::Ended => "ended",
            }
        )
    }
}

/// How a finished download was recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Counted; `shred` is the blob to delete when it used up the limit.
    Counted {
        /// The blob key to delete (the transfer has just been shredded).
        shred: Option<String>,
    },
    /// Not counted: the transfer could no longer be downloaded; recorded as cut off.
    CutOff(CutOff),
    /// This download had already been reported (completed, failed or cut off).
    AlreadyReported,
}

/// Whether transfer `id` may still be downloaded at `now`: `None` if it may, or why not.
pub async fn still_allowed(db: &Db, now: UnixTime, id: i64) -> Result<Option<CutOff>> {
    let row = sqlx::query("select state, expires_at from transfers where transfer_id = $1")
        .bind(id)
        .fetch_optional(db.pool())
        .await?;
    let Some(row) = row else {
        return Ok(Some(CutOff::Ended));
    };
    let state: String = row.try_get("state")?;
    let expires_at: i64 = row.try_get("expires_at")?;
    Ok(match state.as_str() {
        "released" if expires_at > now => None,
        "released" | "expired" => Some(CutOff::Expired),
        "recalled" => Some(CutOff::Recalled),
        "locked" => Some(CutOff::Locked),
        "downloaded" => Some(CutOff::LimitReached),
        _ => Some(CutOff::Ended),
    })
}

/// What is being downloaded.
#[derive(Clone, Debug)]
pub enum Item {
    /// One file.
    File(TransferFile),
    /// Every file, as one ZIP.
    Zip(Vec<TransferFile>),
    /// The encrypted payload (header and body), to open offline.
    Payload(Vec<u8>),
}

impl Item {
    fn label(&self) -> String {
        match self {
            Item::File(f) => format!("file {}", f.position + 1),
            Item::Zip(_) => "all files (zip)".into(),
            Item::Payload(_) => "encrypted payload (.age)".into(),
        }
    }
}

/// A download in progress.
#[derive(Clone, Debug)]
pub struct Slot {
    id: i64,
    transfer_id: i64,
    item: String,
    actor: Actor,
}

/// Takes a download slot, or refuses when the limit is reached.
pub async fn begin(
    db: &Db,
    now: UnixTime,
    t: &Transfer,
    item: &Item,
    actor: &Actor,
) -> Result<Slot> {
    let mut tx = db.begin().await?;
    // Locks the transfer's row (PostgreSQL) or the database (SQLite) until commit.
    let locked = sqlx::query(
        "update transfers set downloads = downloads where transfer_id = $1 and state = 'released' \
         returning downloads, download_limit",
    )
    .bind(t.id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = locked else {
        return Err(Error::Unavailable);
    };
    let downloads: i64 = row.try_get("downloads")?;
    let limit: i64 = row.try_get("download_limit")?;
    let running: i64 = sqlx::query(
        "select count(*) as n from transfer_downloads where transfer_id = $1 \
         and completed_at is null and failed_at is null and claimed_until > $2",
    )
    .bind(t.id)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?
    .try_get("n")?;
    if downloads + running >= limit {
        return Err(Error::Unavailable);
    }
    let label = item.label();
    let row = sqlx::query(
        "insert into transfer_downloads (transfer_id, item, address, started_at, claimed_until) \
         values ($1, $2, $3, $4, $5) returning download_id",
    )
    .bind(t.id)
    .bind(&label)
    .bind(&actor.address)
    .bind(now)
    .bind(now + CLAIM_LIFETIME)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Slot {
        id: row.try_get("download_id")?,
        transfer_id: t.id,
        item: label,
        actor: actor.clone(),
    })
}

/// Renews a running download's claim on its slot.
pub async fn renew(db: &Db, now: UnixTime, slot: &Slot) -> Result<()> {
    sqlx::query(
        "update transfer_downloads set claimed_until = $1 where download_id = $2 \
         and completed_at is null and failed_at is null",
    )
    .bind(now + CLAIM_LIFETIME)
    .bind(slot.id)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Records that a running download was stopped for `reason` (once; later calls do nothing).
pub async fn cut_off(db: &Db, now: UnixTime, slot: &Slot, reason: CutOff) -> Result<()> {
    let mut tx = db.begin().await?;
    let done = sqlx::query(
        "update transfer_downloads set failed_at = $1, cut_off_reason = $2 where download_id = $3 \
         and completed_at is null and failed_at is null",
    )
    .bind(now)
    .bind(reason.as_str())
    .bind(slot.id)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 1 {
        let recipient: String =
            sqlx::query("select recipient_email from transfers where transfer_id = $1")
                .bind(slot.transfer_id)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get("recipient_email"))
                .transpose()?
                .unwrap_or_default();
        audit::append(
            &mut tx,
            now,
            &slot.actor,
            "transfer_download_cut_off",
            &recipient,
            json!({ "transfer_id": slot.transfer_id, "item": slot.item, "reason": reason.as_str() }),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Records a completed download, if its transfer may still be downloaded: counts it, tells the
/// sender on the first one, and shreds the transfer when it was the last one allowed. If the
/// transfer was recalled, expired, locked or used up while the download ran, the download is
/// recorded as cut off instead and not counted.
pub async fn complete(db: &Db, now: UnixTime, slot: &Slot) -> Result<Outcome> {
    let mut tx = db.begin().await?;
    // Conditional: the row lock orders this against a recall, which changes the state first.
    let row = sqlx::query(
        "update transfers set downloads = downloads + 1, \
         first_download_at = coalesce(first_download_at, $1), last_download_at = $1 \
         where transfer_id = $2 and state = 'released' and expires_at > $1 \
         and downloads < download_limit \
         returning downloads, download_limit, sender_id, recipient_email, blob_key, created_at",
    )
    .bind(now)
    .bind(slot.transfer_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        drop(tx);
        let reason = still_allowed(db, now, slot.transfer_id)
            .await?
            .unwrap_or(CutOff::LimitReached);
        cut_off(db, now, slot, reason).await?;
        return Ok(Outcome::CutOff(reason));
    };
    let done = sqlx::query(
        "update transfer_downloads set completed_at = $1 where download_id = $2 and completed_at is null and failed_at is null",
    )
    .bind(now)
    .bind(slot.id)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() != 1 {
        // Dropping the transaction takes the count back.
        return Ok(Outcome::AlreadyReported);
    }
    let downloads: i64 = row.try_get("downloads")?;
    let limit: i64 = row.try_get("download_limit")?;
    let recipient: String = row.try_get("recipient_email")?;
    audit::append(
        &mut tx,
        now,
        &slot.actor,
        "transfer_downloaded",
        &recipient,
        json!({ "transfer_id": slot.transfer_id, "item": slot.item, "downloads": downloads, "limit": limit }),
    )
    .await?;
    if downloads == 1 {
        let sender_id: i64 = row.try_get("sender_id")?;
        if let Some(sender) = crate::accounts::by_id(db, sender_id).await? {
            let created: i64 = row.try_get("created_at")?;
            mail::enqueue(
                &mut tx,
                &OutgoingMail {
                    to: sender.email,
                    subject: "Your transfer was downloaded".into(),
                    body_text: format!(
                        "Hello {},\n\nThe transfer you sent on {} to {recipient} was downloaded on {}.\n\n\
                         See the transfer in Safehand for every download.\n",
                        sender.name,
                        crate::clock::format_time(created),
                        crate::clock::format_time(now)
                    ),
                },
                mail_time(now),
            )
            .await?;
        }
    }
    let mut shred = None;
    if downloads >= limit
        && end_in(
            &mut tx,
            now,
            slot.transfer_id,
            &[State::Released],
            State::Downloaded,
        )
        .await?
    {
        audit::append(
            &mut tx,
            now,
            &Actor {
                user_id: None,
                label: "Safehand".into(),
                address: "local".into(),
            },
            "transfer_shredded",
            &recipient,
            json!({ "transfer_id": slot.transfer_id, "reason": "download limit reached" }),
        )
        .await?;
        shred = Some(row.try_get::<String, _>("blob_key")?);
    }
    tx.commit().await?;
    Ok(Outcome::Counted { shred })
}

/// Gives back the slot of a download that stopped half-way.
pub async fn fail(db: &Db, now: UnixTime, slot: &Slot) -> Result<()> {
    let mut tx = db.begin().await?;
    let done = sqlx::query(
        "update transfer_downloads set failed_at = $1 where download_id = $2 and completed_at is null and failed_at is null",
    )
    .bind(now)
    .bind(slot.id)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 1 {
        let recipient = get(db, slot.transfer_id)
            .await?
            .map(|t| t.recipient_email)
            .unwrap_or_default();
        audit::append(
            &mut tx,
            now,
            &slot.actor,
            "download_incomplete",
            &recipient,
            json!({ "transfer_id": slot.transfer_id, "item": slot.item }),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Reports back when dropped: completed if [`Guard::complete`] ran, failed otherwise.
struct Guard {
    db: Db,
    blobs: Blobs,
    clock: Clock,
    slot: Slot,
    done: bool,
    /// When the transfer was last checked.
    checked: Instant,
    /// When the claim was last renewed (service time).
    renewed: UnixTime,
}

impl Guard {
    /// Records the download as complete; `Err` (with the reason) if it may not be.
    async fn complete(&mut self) -> std::result::Result<(), std::io::Error> {
        let now = self.clock.now();
        match complete(&self.db, now, &self.slot).await {
            Ok(Outcome::Counted { shred }) => {
                self.done = true;
                if let Some(key) = shred {
                    super::sweeper::delete_blob(
                        &self.db,
                        &self.blobs,
                        now,
                        self.slot.transfer_id,
                        &key,
                    )
                    .await;
                }
                Ok(())
            }
            Ok(Outcome::CutOff(reason)) => {
                self.done = true;
                Err(std::io::Error::other(reason.message()))
            }
            Ok(Outcome::AlreadyReported) => {
                self.done = true;
                Err(std::io::Error::other(
                    "the download had already been reported as stopped",
                ))
            }
            Err(e) => {
                // Not counted, so not handed over; the drop records it as incomplete.
                tracing::warn!(error = %e, "could not record a completed download");
                Err(std::io::Error::other(
                    "the download could not be recorded; please try again",
                ))
            }
        }
    }

    /// Stops the download if its transfer may no longer be downloaded (checked at most once a
    /// second) and renews its claim now and then.
    async fn checkpoint(&mut self) -> std::result::Result<(), std::io::Error> {
        if self.checked.elapsed() < RECHECK_EVERY {
            return Ok(());
        }
        self.checked = Instant::now();
        let now = self.clock.now();
        match still_allowed(&self.db, now, self.slot.transfer_id).await {
            Ok(None) => {}
            Ok(Some(reason)) => {
                if let Err(e) = cut_off(&self.db, now, &self.slot, reason).await {
                    tracing::warn!(error = %e, "could not record a download cut off");
                }
                self.done = true;
                return Err(std::io::Error::other(reason.message()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not check a running download");
                return Err(std::io::Error::other(
                    "the download could not be checked; please try again",
                ));
            }
        }
        if now - self.renewed >= RENEW_EVERY {
            self.renewed = now;
            if let Err(e) = renew(&self.db, now, &self.slot).await {
                tracing::warn!(error = %e, "could not renew a download's claim");
            }
        }
        Ok(())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (db, clock, slot) = (self.db.clone(), self.clock.clone(), self.slot.clone());
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = fail(&db, clock.now(), &slot).await {
                    tracing::warn!(error = %e, "could not record an incomplete download");
                }
            });
        }
    }
}

type BlobStream = Pin<Box<dyn Stream<Item = std::result::Result<Bytes, Error>> + Send>>;

/// Where the plaintext goes.
enum Shape {
    Payload {
        header: Option<Vec<u8>>,
        /// Body bytes still to send.
        left: u64,
    },
    File {
        start: u64,
        end: u64,
    },
    Zip {
        files: Vec<TransferFile>,
        next: usize,
        open: bool,
        zip: Option<super::zip::ZipStream>,
    },
}

struct Download {
    blob: BlobStream,
    opener: Option<BodyOpener>,
    shape: Shape,
    /// Plaintext position.
    pos: u64,
    plain: Vec<u8>,
    guard: Guard,
    finished: bool,
}

impl Download {
    /// Routes plaintext `plain` (starting at `self.pos`) into `out`.
    fn route(&mut self, out: &mut Vec<u8>) -> bool {
        let plain = std::mem::take(&mut self.plain);
        let mut p: &[u8] = &plain;
        let mut complete = false;
        match &mut self.shape {
            Shape::Payload { .. } => {}
            Shape::File { start, end } => {
                let from = (*start).saturating_sub(self.pos).min(p.len() as u64) as usize;
                let to = (*end).saturating_sub(self.pos).min(p.len() as u64) as usize;
                out.extend_from_slice(&p[from..to.max(from)]);
                self.pos += p.len() as u64;
                complete = self.pos >= *end;
            }
            Shape::Zip {
                files,
                next,
                open,
                zip,
            } => {
                let Some(z) = zip.as_mut() else { return true };
                loop {
                    let Some(f) = files.get(*next) else {
                        self.pos += p.len() as u64;
                        break;
                    };
                    let (start, end) = (f.data_offset as u64, (f.data_offset + f.size) as u64);
                    if !*open && self.pos >= start {
                        z.begin(&f.name, out);
                        *open = true;
                    }
                    if *open && self.pos >= end {
                        z.end(out);
                        *open = false;
                        *next += 1;
                        continue;
                    }
                    if p.is_empty() {
                        break;
                    }
                    let n = if *open {
                        let n = ((end - self.pos) as usize).min(p.len());
                        z.data(&p[..n], out);
                        n
                    } else {
                        ((start - self.pos) as usize).min(p.len())
                    };
                    self.pos += n as u64;
                    p = &p[n..];
                }
                if *next >= files.len() {
                    if let Some(z) = zip.take() {
                        z.finish(out);
                    }
                    complete = true;
                }
            }
        }
        let mut plain = plain;
        plain.clear();
        self.plain = plain;
        complete
    }

    /// Hands over the last piece, counting the download first: with a `Content-Length` the
    /// connection takes the last byte and drops the stream without asking for its end, so the
    /// moment the last byte is handed over is the moment the download is complete.
    async fn last(&mut self, piece: Bytes) -> Option<std::result::Result<Bytes, std::io::Error>> {
        self.finished = true;
        match self.guard.complete().await {
            Ok(()) => Some(Ok(piece)),
            Err(e) => Some(Err(e)),
        }
    }

    async fn next_piece(&mut self) -> Option<std::result::Result<Bytes, std::io::Error>> {
        if self.finished {
            return None;
        }
        let io = |e: String| std::io::Error::other(e);
        loop {
            if let Err(e) = self.guard.checkpoint().await {
                self.finished = true;
                return Some(Err(e));
            }
            let mut out = Vec::new();
            if let Shape::Payload { header, left } = &mut self.shape {
                if let Some(h) = header.take() {
                    if *left == 0 {
                        return self.last(Bytes::from(h)).await;
                    }
                    return Some(Ok(Bytes::from(h)));
                }
            }
            match self.blob.next().await {
                Some(Ok(chunk)) => {
                    let Some(opener) = self.opener.as_mut() else {
                        if let Shape::Payload { left, .. } = &mut self.shape {
                            *left = left.saturating_sub(chunk.len() as u64);
                            if *left == 0 {
                                return self.last(chunk).await;
                            }
                        }
                        return Some(Ok(chunk));
                    };
                    let mut plain = std::mem::take(&mut self.plain);
                    if let Err(e) = opener.open(&chunk, &mut plain) {
                        return Some(Err(io(format!("decryption failed: {e}"))));
                    }
                    self.plain = plain;
                    let complete = self.route(&mut out);
                    if complete {
                        // The rest of the body is not needed: what was sent has authenticated.
                        return self.last(Bytes::from(out)).await;
                    }
                }
                Some(Err(e)) => return Some(Err(io(format!("blob storage: {e}")))),
                None => {
                    if let Some(opener) = self.opener.take() {
                        let mut plain = std::mem::take(&mut self.plain);
                        if let Err(e) = opener.finish(&mut plain) {
                            return Some(Err(io(format!("decryption failed: {e}"))));
                        }
                        self.plain = plain;
                        if !self.route(&mut out) {
                            return Some(Err(io("the payload ended early".into())));
                        }
                    }
                    if let Shape::Payload { left, .. } = self.shape {
                        if left > 0 {
                            return Some(Err(io("the stored payload ended early".into())));
                        }
                    }
                    return self.last(Bytes::from(out)).await;
                }
            }
            if !out.is_empty() {
                return Some(Ok(Bytes::from(out)));
            }
        }
    }
}

/// The bytes of a download, counted when the last of them has been taken.
#[allow(clippy::too_many_arguments)]
pub async fn stream(
    db: &Db,
    blobs: &Blobs,
    clock: &Clock,
    t: &Transfer,
    file_key: Option<&FileKey>,
    item: Item,
    slot: Slot,
    now: UnixTime,
) -> Result<impl Stream<Item = std::result::Result<Bytes, std::io::Error>> + Send + 'static> {
    let guard = Guard {
        db: db.clone(),
        blobs: blobs.clone(),
        clock: clock.clone(),
        slot,
        done: false,
        checked: Instant::now(),
        renewed: now,
    };
    let blob: BlobStream = Box::pin(blobs.get(&t.blob_key).await?);
    let (shape, opener) = match item {
        Item::Payload(header) => (
            Shape::Payload {
                header: Some(header),
                left: t.body_size as u64,
            },
            None,
        ),
        Item::File(f) => (
            Shape::File {
                start: f.data_offset as u64,
                end: (f.data_offset + f.size) as u64,
            },
            Some(BodyOpener::new(file_key.ok_or(Error::Unavailable)?)),
        ),
        Item::Zip(files) => (
            Shape::Zip {
                files,
                next: 0,
                open: false,
                zip: Some(super::zip::ZipStream::new(now)),
            },
            Some(BodyOpener::new(file_key.ok_or(Error::Unavailable)?)),
        ),
    };
    let state = Download {
        blob,
        opener,
        shape,
        pos: 0,
        plain: Vec::new(),
        guard,
        finished: false,
    };
    Ok(futures_util::stream::unfold(state, |mut d| async move {
        let piece = d.next_piece().await?;
        Some((piece, d))
    }))
}

/// The downloads of a transfer for its sender's receipt, oldest first, in words.
pub async fn list(db: &Db, transfer_id: i64) -> Result<Vec<String>> {
    let rows = sqlx::query(
        "select item, address, started_at, completed_at, failed_at, cut_off_reason \
         from transfer_downloads where transfer_id = $1 order by download_id",
    )
    .bind(transfer_id)
    .fetch_all(db.pool())
    .await?;
    let mut out = Vec::new();
    for r in rows {
        let item: String = r.try_get("item")?;
        let address: String = r.try_get("address")?;
        let line = match (
            crate::db::opt_i64(&r, "completed_at")?,
            crate::db::opt_i64(&r, "failed_at")?,
        ) {
            (Some(at), _) => format!(
                "Downloaded {item} from {address}: {}",
                crate::clock::format_time(at)
            ),
            (None, Some(at)) => match r.try_get::<Option<String>, _>("cut_off_reason")? {
                Some(reason) => format!(
                    "Download of {item} from {address} was cut off by {}: {}",
                    CutOff::by(&reason),
                    crate::clock::format_time(at)
                ),
                None => format!(
                    "Download of {item} from {address} did not finish: {}",
                    crate::clock::format_time(at)
                ),
            },
            _ => format!(
                "Downloading {item} from {address} since {}",
                crate::clock::format_time(r.try_get("started_at")?)
            ),
        };
        out.push(line);
    }
    Ok(out)
}
