//! Transfers: files sealed for one verified contact, the passphrase told by phone, the link
//! mailed, and what the recipient does with it.
//!
//! A transfer's life (`state`):
//!
//! ```text
//! sealed ──release──▶ released ──(last allowed download)──▶ downloaded
//!   ▲ │ │               ▲ │  │  └──(wrong passphrases)──▶ locked
//!   │ │ │               │ │  └──(expiry)──▶ expired
//!   └─┼─┼───────────────┼─┘ (undo, inside the undo window)
//!     │ └─(policy)─▶ held ──approve──┘
//!     │               ├──reject──▶ rejected
//!     │               └──(expiry)──▶ expired
//!     └──(24 h unconfirmed)──▶ discarded      (recall from sealed, held, released or locked) ──▶ recalled
//! ```
//!
//! `sealed` means uploaded and sealed, with the passphrase shown once, but not yet confirmed by
//! the sender ("I will phone it"); nothing has been mailed. When the sender confirms and a policy
//! rule asks for a second pair of eyes (P7, [`approval`]), the transfer is `held` until an
//! approver approves it (which releases it, with the undo window) or rejects it.
//!
//! The undo window (policy `undo_window_secs`, default 60 s): a release queues the link mail
//! with `next_attempt_at = released_at + window` and records `undo_until`. Until then nothing
//! has left the building, and [`undo_release`] cancels the queued mail and puts the transfer
//! back to `sealed` in one transaction (the sender can send it again, or recall it); a recall
//! inside the window cancels the mail too. After the window undo is refused; recall remains.
//!
//! Every state that ends a transfer crypto-shreds it: the age header is removed from the
//! database first (the body can never be decrypted again), then the sweeper deletes the blob.
//! Metadata without content stays for the audit period. Every event writes its audit record
//! (and any mail) in the same transaction as the change.

pub mod approval;
pub mod download;
pub mod names;
pub mod recipient;
pub mod sweeper;
pub mod upload;
mod zip;

use crate::audit::{self, Actor};
use crate::clock::{format_time, UnixTime};
use crate::contacts::{self, Contact, Status};
use crate::db::{opt_i64, Db};
use crate::error::{Error, Result};
use crate::keys::{new_token, token_hash, ServerKeys};
use crate::mail::{self, OutgoingMail};
use crate::policy::{format_size, Policy, Unverified, MAX_DOWNLOAD_LIMIT};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;

/// Classifications a sender chooses from (UK Government Security Classifications).
pub const CLASSIFICATIONS: [&str; 2] = ["OFFICIAL", "OFFICIAL-SENSITIVE"];

/// Most files in one transfer.
pub const MAX_FILES: usize = 100;

/// The most an upload's `details` part may hold. It carries a contact, a purpose, a
/// classification and at most [`MAX_FILES`] names, so 64 KiB is far more than a real transfer
/// needs; it is read into memory, so it must be small.
pub const MAX_DETAILS_BYTES: usize = 64 * 1024;

/// How long an unconfirmed (`sealed`) transfer waits for its sender before it is discarded.
pub const UNCONFIRMED_LIFETIME: i64 = 24 * 3600;

/// Where a transfer is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Sealed; waiting for the sender to confirm they will phone the passphrase.
    Sealed,
    /// Confirmed by the sender; waiting for an approver (policy P7).
    Held,
    /// The recipient has been mailed the link.
    Released,
    /// Downloaded as many times as allowed; shredded.
    Downloaded,
    /// Too many wrong passphrases.
    Locked,
    /// Withdrawn by the sender; shredded.
    Recalled,
    /// Past its expiry; shredded.
    Expired,
    /// Never confirmed by the sender; shredded.
    Discarded,
    /// Refused by an approver; shredded.
    Rejected,
}

impl State {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Sealed => "sealed",
            State::Held => "held",
            State::Released => "released",
            State::Downloaded => "downloaded",
            State::Locked => "locked",
            State::Recalled => "recalled",
            State::Expired => "expired",
            State::Discarded => "discarded",
            State::Rejected => "rejected",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "sealed" => State::Sealed,
            "held" => State::Held,
            "released" => State::Released,
            "downloaded" => State::Downloaded,
            "locked" => State::Locked,
            "recalled" => State::Recalled,
            "expired" => State::Expired,
            "discarded" => State::Discarded,
            "rejected" => State::Rejected,
            other => return Err(Error::Internal(format!("unknown transfer state {other}"))),
        })
    }

    /// Whether the transfer can still be opened or downloaded.
    pub fn is_live(self) -> bool {
        matches!(self, State::Released)
    }
}

/// A transfer as stored (never the passphrase; names and purpose are sealed).
#[derive(Clone, Debug)]
pub struct Transfer {
    /// Id.
    pub id: i64,
    /// Who sent it.
    pub sender_id: i64,
    /// The contact it was sent to.
    pub contact_id: i64,
    /// The contact's address at the time of sending.
    pub recipient_email: String,
    /// OFFICIAL or OFFICIAL-SENSITIVE.
    pub classification: String,
    /// Where it is.
    pub state: State,
    /// Sent to an unverified contact on the sender's written attestation.
    pub unverified_attested: bool,
    /// Uploaded.
    pub created_at: UnixTime,
    /// Mailed to the recipient.
    pub released_at: Option<UnixTime>,
    /// Stops working at.
    pub expires_at: UnixTime,
    /// Completed downloads allowed.
    pub download_limit: i64,
    /// Completed downloads so far.
    pub downloads: i64,
    /// Wrong passphrases so far.
    pub wrong_passphrases: i64,
    /// Where the body is in blob storage.
    pub blob_key: String,
    /// Body size (ciphertext) in bytes.
    pub body_size: i64,
    /// Plaintext (tar) size in bytes.
    pub plaintext_size: i64,
    /// Number of files.
    pub file_count: i64,
    /// Sealed by this server (false: uploaded already sealed).
    pub sealed_on_server: bool,
    /// First time the recipient asked for a code.
    pub code_requested_at: Option<UnixTime>,
    /// First time the recipient entered a right code.
    pub opened_at: Option<UnixTime>,
    /// First time the recipient entered the right passphrase.
    pub unlocked_at: Option<UnixTime>,
    /// First completed download.
    pub first_download_at: Option<UnixTime>,
    /// Latest completed download.
    pub last_download_at: Option<UnixTime>,
    /// When it ended (recalled, expired, locked, downloaded, discarded).
    pub ended_at: Option<UnixTime>,
    /// When its header was destroyed.
    pub shredded_at: Option<UnixTime>,
    /// When its blob was deleted.
    pub blob_deleted_at: Option<UnixTime>,
    /// Released with an undo window: the link mail waits until then.
    pub undo_until: Option<UnixTime>,
    /// The queued link mail (outbox id) of the latest release.
    pub release_mail_id: Option<i64>,
    /// When the sender's release was held for an approver.
    pub held_at: Option<UnixTime>,
    /// The policy rules that held it ([`approval::Rule`] names).
    pub approval_reasons: Vec<String>,
    /// `approved` or `rejected`, once an approver decided.
    pub decision: Option<String>,
    /// The approver's account.
    pub decided_by: Option<i64>,
    /// The approver (email), kept if the account goes.
    pub decided_by_label: Option<String>,
    /// When the approver decided.
    pub decided_at: Option<UnixTime>,
}

impl Transfer {
    /// Seconds left in the undo window (None: no window, or it has closed).
    pub fn undo_left(&self, now: UnixTime) -> Option<i64> {
        match (self.state, self.undo_until) {
            (State::Released, Some(u)) if now < u => Some(u - now),
            _ => None,
        }
    }
}

/// What the sender wrote, sealed under the server key (it may name a pupil).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Details {
    /// Why the files are sent.
    pub purpose: String,
    /// How the sender checked an unverified contact's address, when policy allowed that.
    pub attestation: Option<String>,
}

const COLUMNS: &str =
    "transfer_id, sender_id, contact_id, recipient_email, classification, state, \
    unverified_attested, created_at, released_at, expires_at, download_limit, downloads, \
    wrong_passphrases, blob_key, body_size, plaintext_size, file_count, sealed_on_server, \
    code_requested_at, opened_at, unlocked_at, first_download_at, last_download_at, ended_at, \
    shredded_at, blob_deleted_at, undo_until, release_mail_id, held_at, approval_reasons, decision, \
    decided_by, decided_by_label, decided_at";

fn row_to_transfer(row: &sqlx::any::AnyRow) -> Result<Transfer> {
    Ok(Transfer {
        id: row.try_get("transfer_id")?,
        sender_id: row.try_get("sender_id")?,
        contact_id: row.try_get("contact_id")?,
        recipient_email: row.try_get("recipient_email")?,
        classification: row.try_get("classification")?,
        state: State::parse(&row.try_get::<String, _>("state")?)?,
        unverified_attested: row.try_get::<i64, _>("unverified_attested")? != 0,
        created_at: row.try_get("created_at")?,
        released_at: opt_i64(row, "released_at")?,
        expires_at: row.try_get("expires_at")?,
        download_limit: row.try_get("download_limit")?,
        downloads: row.try_get("downloads")?,
        wrong_passphrases: row.try_get("wrong_passphrases")?,
        blob_key: row.try_get("blob_key")?,
        body_size: row.try_get("body_size")?,
        plaintext_size: row.try_get("plaintext_size")?,
        file_count: row.try_get("file_count")?,
        sealed_on_server: row.try_get::<i64, _>("sealed_on_server")? != 0,
        code_requested_at: opt_i64(row, "code_requested_at")?,
        opened_at: opt_i64(row, "opened_at")?,
        unlocked_at: opt_i64(row, "unlocked_at")?,
        first_download_at: opt_i64(row, "first_download_at")?,
        last_download_at: opt_i64(row, "last_download_at")?,
        ended_at: opt_i64(row, "ended_at")?,
        shredded_at: opt_i64(row, "shredded_at")?,
        blob_deleted_at: opt_i64(row, "blob_deleted_at")?,
        undo_until: opt_i64(row, "undo_until")?,
        release_mail_id: opt_i64(row, "release_mail_id")?,
        held_at: opt_i64(row, "held_at")?,
        approval_reasons: row
            .try_get::<Option<String>, _>("approval_reasons")?
            .and_then(|r| serde_json::from_str(&r).ok())
            .unwrap_or_default(),
        decision: row.try_get("decision")?,
        decided_by: opt_i64(row, "decided_by")?,
        decided_by_label: row.try_get("decided_by_label")?,
        decided_at: opt_i64(row, "decided_at")?,
    })
}

/// One transfer.
pub async fn get(db: &Db, id: i64) -> Result<Option<Transfer>> {
    let row = sqlx::query(&format!(
        "select {COLUMNS} from transfers where transfer_id = $1"
    ))
    .bind(id)
    .fetch_optional(db.pool())
    .await?;
    row.as_ref().map(row_to_transfer).transpose()
}

/// A transfer that `user_id` sent; anyone else's is "not found" (it is not theirs to know of).
pub async fn get_for_sender(db: &Db, id: i64, user_id: i64) -> Result<Transfer> {
    get(db, id)
        .await?
        .filter(|t| t.sender_id == user_id)
        .ok_or(Error::NotFound)
}

/// A sender's transfers, newest first.
pub async fn list_for_sender(db: &Db, user_id: i64, limit: i64) -> Result<Vec<Transfer>> {
    let rows = sqlx::query(&format!(
        "select {COLUMNS} from transfers where sender_id = $1 order by transfer_id desc limit $2"
    ))
    .bind(user_id)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(row_to_transfer).collect()
}

/// The sender's transfers whose link mail is waiting out the undo window at `now`, soonest
/// first.
pub async fn sending_for_sender(db: &Db, user_id: i64, now: UnixTime) -> Result<Vec<Transfer>> {
    let rows = sqlx::query(&format!(
        "select {COLUMNS} from transfers where sender_id = $1 and state = 'released' \
         and undo_until > $2 order by undo_until, transfer_id"
    ))
    .bind(user_id)
    .bind(now)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(row_to_transfer).collect()
}

/// The age header, unless shredded.
pub async fn header(db: &Db, id: i64) -> Result<Option<Vec<u8>>> {
    let row = sqlx::query("select age_header from transfer_keys where transfer_id = $1")
        .bind(id)
        .fetch_optional(db.pool())
        .await?;
    match row {
        Some(r) => Ok(Some(r.try_get::<Vec<u8>, _>("age_header")?)),
        None => Ok(None),
    }
}

fn details_context(blob_key: &str) -> String {
    format!("transfer-details:{blob_key}")
}

fn file_context(blob_key: &str, position: i64) -> String {
    format!("transfer-file:{blob_key}:{position}")
}

/// The sender's purpose and attestation, unsealed.
pub async fn details(db: &Db, keys: &ServerKeys, t: &Transfer) -> Result<Details> {
    let row = sqlx::query("select details_sealed from transfers where transfer_id = $1")
        .bind(t.id)
        .fetch_one(db.pool())
        .await?;
    let sealed: Vec<u8> = row.try_get("details_sealed")?;
    let plain = keys.unseal(&details_context(&t.blob_key), &sealed)?;
    serde_json::from_slice(&plain).map_err(|e| Error::Internal(format!("transfer details: {e}")))
}

/// One file of a transfer.
#[derive(Clone, Debug)]
pub struct TransferFile {
    /// Its position (0-based) in the payload.
    pub position: i64,
    /// Its name (unsealed; already made safe when it was uploaded).
    pub name: String,
    /// Size in bytes.
    pub size: i64,
    /// Where its content starts in the tar stream.
    pub data_offset: i64,
}

/// The files of a transfer, in payload order.
pub async fn files(db: &Db, keys: &ServerKeys, t: &Transfer) -> Result<Vec<TransferFile>> {
    let rows = sqlx::query(
        "select position, name_sealed, size, data_offset from transfer_files \
         where transfer_id = $1 order by position",
    )
    .bind(t.id)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            let position: i64 = r.try_get("position")?;
            let sealed: Vec<u8> = r.try_get("name_sealed")?;
            let name = keys.unseal(&file_context(&t.blob_key, position), &sealed)?;
            Ok(TransferFile {
                position,
                name: String::from_utf8_lossy(&name).into_owned(),
                size: r.try_get("size")?,
                data_offset: r.try_get("data_offset")?,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Sending

/// What a sender asks for, before any file arrives.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Request {
    /// The contact's id.
    pub contact_id: i64,
    /// Why the files are sent.
    pub purpose: String,
    /// One of [`CLASSIFICATIONS`].
    pub classification: String,
    /// Days until it expires (default: policy).
    pub expires_in_days: Option<i64>,
    /// Completed downloads allowed (default: policy).
    pub download_limit: Option<i64>,
    /// For an unverified contact when policy allows: how the sender checked the address.
    pub attestation: Option<String>,
    /// The files to come (server-sealed uploads); empty for an uploaded `.age` payload.
    #[serde(default)]
    pub files: Vec<FileEntry>,
}

/// One file announced before its content.
#[derive(Clone, Debug, Deserialize)]
pub struct FileEntry {
    /// Its name as the sender's computer has it (made safe before use).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A checked request, ready for the upload.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The contact.
    pub contact: Contact,
    /// Purpose and attestation.
    pub details: Details,
    /// Classification.
    pub classification: String,
    /// When it will expire.
    pub expires_at: UnixTime,
    /// Downloads allowed.
    pub download_limit: i64,
    /// Safe file names with their sizes (empty for an uploaded payload).
    pub files: Vec<(String, u64)>,
    /// Sent on an attestation instead of a verification.
    pub attested: bool,
}

/// Checks a request against the directory and the policy. Problems come back by field
/// (`contact`, `purpose`, `classification`, `expiry`, `download_limit`, `attestation`,
/// `files`).
pub async fn plan(
    db: &Db,
    now: UnixTime,
    policy: &Policy,
    request: &Request,
    presealed: bool,
) -> std::result::Result<Plan, contacts::ContactError> {
    let mut problems: contacts::Problems = Vec::new();
    let contact = contacts::get(db, request.contact_id)
        .await?
        .filter(|c| !c.archived);
    let mut attested = false;
    let mut attestation = None;
    match &contact {
        None => problems.push(("contact", "Choose a contact from the directory.".into())),
        Some(c) => {
            if !contacts::domain_allowed(db, &c.email).await? && !policy.approval_outside_domains {
                problems.push((
                    "contact",
                    format!(
                        "{} is not in an allowed recipient domain. Ask an administrator.",
                        c.email
                    ),
                ));
            } else if c.status(now) != Status::Verified {
                let typed = request.attestation.as_deref().unwrap_or("").trim();
                match policy.unverified_contacts {
                    Unverified::Refuse => problems.push((
                        "contact",
                        format!(
                            "{} is {}. Ask an administrator to verify them before you send.",
                            c.name,
                            c.status(now).label()
                        ),
                    )),
                    Unverified::Attest if typed.chars().count() < 20 => problems.push((
                        "attestation",
                        format!(
                            "{} is {}. Write how you checked their email address (at least 20 characters), or ask for them to be verified.",
                            c.name,
                            c.status(now).label()
                        ),
                    )),
                    Unverified::Attest => {
                        attested = true;
                        attestation = Some(typed.chars().take(2000).collect());
                    }
                }
            }
        }
    }
    let purpose = request.purpose.trim();
    if purpose.is_empty() {
        problems.push((
            "purpose",
            "Enter the purpose (for example: child protection referral).".into(),
        ));
    } else if purpose.chars().count() > 500 {
        problems.push((
            "purpose",
            "The purpose must be at most 500 characters.".into(),
        ));
    } else if crate::text::unsafe_in_note(purpose) {
        problems.push((
            "purpose",
            format!("The purpose {}.", crate::text::UNSAFE_TEXT),
        ));
    }
    if !CLASSIFICATIONS.contains(&request.classification.as_str()) {
        problems.push(("classification", "Choose a classification.".into()));
    }
    let days = request
        .expires_in_days
        .unwrap_or(policy.default_expiry_days);
    if days < 1 || days > policy.max_expiry_days {
        problems.push((
            "expiry",
            format!(
                "Choose an expiry from 1 to {} days.",
                policy.max_expiry_days
            ),
        ));
    }
    let limit = request
        .download_limit
        .unwrap_or(policy.default_download_limit);
    if !(1..=MAX_DOWNLOAD_LIMIT).contains(&limit) {
        problems.push((
            "download_limit",
            format!("Choose a download limit from 1 to {MAX_DOWNLOAD_LIMIT}."),
        ));
    }
    let mut files = Vec::new();
    if presealed {
        if !request.files.is_empty() {
            problems.push((
                "files",
                "Send either files to seal or one sealed payload, not both.".into(),
            ));
        }
    } else if request.files.is_empty() {
        problems.push(("files", "Add at least one file.".into()));
    } else if request.files.len() > MAX_FILES {
        problems.push((
            "files",
            format!("Send at most {MAX_FILES} files at once (put more in a zip file)."),
        ));
    } else {
        // Checked: announced sizes come from the client, and 2^63 + 2^63 must not wrap to 0.
        let total = request
            .files
            .iter()
            .try_fold(0u64, |sum, f| sum.checked_add(f.size));
        let limit = u64::try_from(policy.max_size_bytes).unwrap_or(0);
        match total {
            Some(total) if total <= limit => {}
            total => {
                let said = match total.and_then(|t| i64::try_from(t).ok()) {
                    Some(t) => format_size(t),
                    None => "more than any disk holds".into(),
                };
                return Err(Error::TooLarge(format!(
                    "The files add up to {said}; the most you can send is {}. Send fewer or smaller files, or ask your administrator about the limit.",
                    format_size(policy.max_size_bytes)
                ))
                .into());
            }
        }
        let mut taken = std::collections::HashSet::new();
        for f in &request.files {
            files.push((names::unique(&names::safe(&f.name), &mut taken), f.size));
        }
    }
    if !problems.is_empty() {
        return Err(contacts::ContactError::Problems(problems));
    }
    let Some(contact) = contact else {
        return Err(Error::Internal("contact vanished".into()).into());
    };
    Ok(Plan {
        contact,
        details: Details {
            purpose: purpose.to_string(),
            attestation,
        },
        classification: request.classification.clone(),
        expires_at: now + days * 86_400,
        download_limit: limit,
        files,
        attested,
    })
}

/// A payload sealed (or uploaded) into blob storage, ready to be recorded.
#[derive(Debug)]
pub struct Sealed {
    /// The age header.
    pub header: Vec<u8>,
    /// Blob key of the body.
    pub blob_key: String,
    /// Body size.
    pub body_size: u64,
    /// Plaintext size.
    pub plaintext_size: u64,
    /// `(name, size, data offset)` of each file (empty for an uploaded payload).
    pub files: Vec<(String, u64, u64)>,
    /// Sealed here.
    pub on_server: bool,
}

/// Records a sealed transfer (state `sealed`) with its audit record.
pub async fn create(
    db: &Db,
    keys: &ServerKeys,
    now: UnixTime,
    actor: &Actor,
    sender_id: i64,
    plan: &Plan,
    sealed: &Sealed,
) -> Result<Transfer> {
    let details = serde_json::to_vec(&plan.details)
        .map_err(|e| Error::Internal(format!("transfer details: {e}")))?;
    let details_sealed = keys.seal(&details_context(&sealed.blob_key), &details);
    let mut tx = db.begin().await?;
    let row = sqlx::query(
        "insert into transfers (sender_id, contact_id, recipient_email, details_sealed, classification, \
         state, unverified_attested, created_at, expires_at, download_limit, blob_key, \
         body_size, plaintext_size, file_count, sealed_on_server) \
         values ($1, $2, $3, $4, $5, 'sealed', $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         returning transfer_id",
    )
    .bind(sender_id)
    .bind(plan.contact.id)
    .bind(&plan.contact.email)
    .bind(details_sealed)
    .bind(&plan.classification)
    .bind(i64::from(plan.attested))
    .bind(now)
    .bind(plan.expires_at)
    .bind(plan.download_limit)
    .bind(&sealed.blob_key)
    .bind(sealed.body_size as i64)
    .bind(sealed.plaintext_size as i64)
    .bind(sealed.files.len() as i64)
    .bind(i64::from(sealed.on_server))
    .fetch_one(&mut *tx)
    .await?;
    let id: i64 = row.try_get("transfer_id")?;
    sqlx::query("insert into transfer_keys (transfer_id, age_header) values ($1, $2)")
        .bind(id)
        .bind(sealed.header.clone())
        .execute(&mut *tx)
        .await?;
    for (position, (name, size, offset)) in sealed.files.iter().enumerate() {
        let position = position as i64;
        sqlx::query(
            "insert into transfer_files (transfer_id, position, name_sealed, size, data_offset) \
             values ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(position)
        .bind(keys.seal(&file_context(&sealed.blob_key, position), name.as_bytes()))
        .bind(*size as i64)
        .bind(*offset as i64)
        .execute(&mut *tx)
        .await?;
    }
    audit::append(
        &mut tx,
        now,
        actor,
        "transfer_sealed",
        &plan.contact.email,
        json!({
            "transfer_id": id, "contact_id": plan.contact.id, "classification": plan.classification,
            "files": sealed.files.len(), "bytes": sealed.plaintext_size, "sealed_on_server": sealed.on_server,
            "expires_at": plan.expires_at, "download_limit": plan.download_limit,
            "unverified_attested": plan.attested,
        }),
    )
    .await?;
    tx.commit().await?;
    get(db, id).await?.ok_or(Error::NotFound)
}

/// The sender confirmed they will phone the passphrase: mail the recipient the link, after the
/// policy's undo window; or, when a policy rule asks for it, hold the transfer for an approver
/// (the returned transfer is then `held`).
pub async fn release(
    db: &Db,
    now: UnixTime,
    actor: &Actor,
    public_url: &str,
    t: &Transfer,
    sender_name: &str,
) -> Result<Transfer> {
    if t.state != State::Sealed {
        return Err(Error::BadInput(
            "This transfer has already been sent, or has ended.".into(),
        ));
    }
    if now >= t.expires_at {
        return Err(Error::BadInput(
            "This transfer expired before it was sent. Send the files again.".into(),
        ));
    }
    let policy = crate::policy::load(db).await?;
    let reasons = approval::reasons(db, &policy, t).await?;
    if !reasons.is_empty() {
        return approval::hold(db, now, actor, public_url, t, &reasons).await;
    }
    let mut tx = db.begin().await?;
    release_in(
        &mut tx,
        now,
        actor,
        public_url,
        t,
        sender_name,
        State::Sealed,
        policy.undo_window_secs,
    )
    .await?;
    tx.commit().await?;
    get(db, t.id).await?.ok_or(Error::NotFound)
}

/// Releases `t` from state `from` (sealed, or held when an approver approves) in the caller's
/// transaction: a new link, its mail queued for the end of the undo window `window`, audited.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn release_in(
    tx: &mut crate::db::Tx,
    now: UnixTime,
    actor: &Actor,
    public_url: &str,
    t: &Transfer,
    sender_name: &str,
    from: State,
    window: i64,
) -> Result<()> {
    let window = window.max(0);
    let send_at = now + window;
    let token = new_token();
    let link = format!("{public_url}/r/{token}");
    let at = |t: UnixTime| {
        time::OffsetDateTime::from_unix_timestamp(t).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    };
    let done = sqlx::query(
        "update transfers set state = 'released', released_at = $1, link_hash = $2, \
         undo_until = null, release_mail_id = null \
         where transfer_id = $3 and state = $4",
    )
    .bind(now)
    .bind(token_hash(&token))
    .bind(t.id)
    .bind(from.as_str())
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() != 1 {
        return Err(Error::BadInput(
            "This transfer has already been sent, or has ended.".into(),
        ));
    }
    let mail_id = mail::enqueue_at(
        tx,
        &OutgoingMail {
            to: t.recipient_email.clone(),
            subject: "A secure file is waiting for you".into(),
            body_text: format!(
                "Hello,\n\n{sender_name} has sent you files securely through Safehand.\n\n\
                 Open this link to collect them:\n{link}\n\n\
                 You will be asked for a one-time code, which we will email to this address, and \
                 for a passphrase, which {sender_name} will tell you by phone. The passphrase is \
                 never sent by email.\n\n\
                 The link stops working on {}.\n\n\
                 If you were not expecting this, do not open the link; tell the sender's school.\n",
                format_time(t.expires_at)
            ),
        },
        at(now),
        at(send_at),
    )
    .await?;
    sqlx::query(
        "update transfers set undo_until = $1, release_mail_id = $2 where transfer_id = $3",
    )
    .bind((window > 0).then_some(send_at))
    .bind(mail_id)
    .bind(t.id)
    .execute(&mut **tx)
    .await?;
    audit::append(
        tx,
        now,
        actor,
        "transfer_released",
        &t.recipient_email,
        json!({ "transfer_id": t.id, "undo_window_secs": window, "was": from.as_str() }),
    )
    .await
}

/// The sender takes a release back inside the undo window: the queued link mail is cancelled
/// and the transfer is `sealed` again (never mailed, no link), in one transaction. The sender
/// can then send it again or recall it. After the window this is refused: the link has been
/// (or is being) emailed, and recall is what stops it working.
pub async fn undo_release(db: &Db, now: UnixTime, actor: &Actor, t: &Transfer) -> Result<Transfer> {
    let closed = || {
        Error::BadInput(
            "Too late to undo: the undo window has closed and the link has been emailed. \
             Recall the transfer to stop the link working."
                .into(),
        )
    };
    if t.state != State::Released {
        return Err(Error::BadInput(
            "Only a transfer that has just been sent can be undone.".into(),
        ));
    }
    let (Some(until), Some(mail_id)) = (t.undo_until, t.release_mail_id) else {
        return Err(closed());
    };
    if now >= until {
        return Err(closed());
    }
    let mut tx = db.begin().await?;
    let done = sqlx::query(
        "update transfers set state = 'sealed', released_at = null, link_hash = null, \
         undo_until = null, release_mail_id = null \
         where transfer_id = $1 and state = 'released' and undo_until > $2 and release_mail_id = $3",
    )
    .bind(t.id)
    .bind(now)
    .bind(mail_id)
    .execute(&mut *tx)
    .await?;
    // The mail must still be waiting: a worker that claimed it is sending it.
    if done.rows_affected() != 1 || !mail::cancel_in(&mut tx, mail_id).await? {
        return Err(closed()); // dropping the transaction rolls the transfer back
    }
    sqlx::query("delete from recipient_sessions where transfer_id = $1")
        .bind(t.id)
        .execute(&mut *tx)
        .await?;
    audit::append(
        &mut tx,
        now,
        actor,
        "transfer_release_undone",
        &t.recipient_email,
        json!({ "transfer_id": t.id, "mail_id": mail_id, "seconds_left": until - now }),
    )
    .await?;
    tx.commit().await?;
    get(db, t.id).await?.ok_or(Error::NotFound)
}

/// Sets a transfer's end state and destroys its header, in the caller's transaction. Also ends
/// recipient sessions (they hold the file key) and deletes the recipient's codes, and marks the
/// freed space for rewriting ([`Db::erase_freed_space`]). After the commit the caller runs
/// [`Db::checkpoint_wal`] (done by [`sweeper::delete_blob`]); the blob goes then or later.
pub(crate) async fn end_in(
    conn: &mut sqlx::AnyConnection,
    now: UnixTime,
    id: i64,
    from: &[State],
    to: State,
) -> Result<bool> {
    let from: Vec<String> = from.iter().map(|s| format!("'{}'", s.as_str())).collect();
    let done = sqlx::query(&format!(
        "update transfers set state = $1, ended_at = $2, shredded_at = $2 \
         where transfer_id = $3 and state in ({})",
        from.join(", ")
    ))
    .bind(to.as_str())
    .bind(now)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    for table in ["transfer_keys", "recipient_sessions", "recipient_codes"] {
        sqlx::query(&format!("delete from {table} where transfer_id = $1"))
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    Db::erasure_due_in(&mut *conn).await?;
    Ok(true)
}

/// The states a recall (or a reported incident) can still end: nothing has been fully
/// downloaded and the transfer has not expired.
pub const RECALLABLE: [State; 4] = [State::Sealed, State::Held, State::Released, State::Locked];

/// Recalls a transfer inside the caller's transaction: the header is destroyed, a link mail
/// still waiting (undo window) is cancelled, and `transfer_recalled` is audited with `reason`.
/// Returns false, changing nothing, when the transfer has already ended. The caller deletes
/// the blob after the commit ([`sweeper::delete_blob`]).
pub(crate) async fn recall_in(
    conn: &mut crate::db::Tx,
    now: UnixTime,
    actor: &Actor,
    t: &Transfer,
    reason: &str,
) -> Result<bool> {
    if !end_in(conn, now, t.id, &RECALLABLE, State::Recalled).await? {
        return Ok(false);
    }
    // A link mail still waiting (undo window) never goes.
    let link_mail_cancelled = match t.release_mail_id {
        Some(mail_id) if t.state == State::Released => mail::cancel_in(conn, mail_id).await?,
        _ => false,
    };
    audit::append(
        conn,
        now,
        actor,
        "transfer_recalled",
        &t.recipient_email,
        json!({
            "transfer_id": t.id, "was": t.state.as_str(), "downloads": t.downloads,
            "link_mail_cancelled": link_mail_cancelled, "reason": reason,
        }),
    )
    .await?;
    Ok(true)
}

/// The sender withdraws a transfer: the header is destroyed at once, then the blob.
pub async fn recall(
    db: &Db,
    blobs: &crate::blobs::Blobs,
    now: UnixTime,
    actor: &Actor,
    t: &Transfer,
) -> Result<()> {
    let mut tx = db.begin().await?;
    if !recall_in(&mut tx, now, actor, t, "recalled by the sender").await? {
        return Err(Error::BadInput(
            "This transfer has already ended; there is nothing left to recall.".into(),
        ));
    }
    tx.commit().await?;
    // The header is gone; the body is unreadable. Delete it now; the sweeper retries on failure.
    sweeper::delete_blob(db, blobs, now, t.id, &t.blob_key).await;
    Ok(())
}

/// A time of day to the second, `12:46:30 UTC` (for the undo countdown).
pub fn format_clock(t: UnixTime) -> String {
    let format = time::macros::format_description!("[hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&format).ok())
        .unwrap_or_else(|| t.to_string())
}

/// What a sender's dashboard says about a transfer (P8 receipts).
pub fn receipt(t: &Transfer, now: UnixTime) -> String {
    let at = |x: Option<i64>| x.map(format_time).unwrap_or_default();
    match t.state {
        State::Sealed => "not sent yet: confirm you will phone the passphrase".into(),
        State::Held if now >= t.expires_at => "expired waiting for approval".into(),
        State::Held => format!(
            "waiting for an approver ({})",
            approval::reasons_text(&t.approval_reasons)
        ),
        State::Released if now >= t.expires_at => "expired".into(),
        State::Released if t.undo_left(now).is_some() => {
            let left = t.undo_left(now).unwrap_or(0);
            format!(
                "sending: the link will be emailed at {} (in {left} s); you can still undo",
                format_clock(now + left)
            )
        }
        State::Released => {
            if let Some(d) = t.first_download_at {
                format!(
                    "downloaded {} of {} times (first {})",
                    t.downloads,
                    t.download_limit,
                    format_time(d)
                )
            } else if let Some(u) = t.unlocked_at {
                format!("opened with the passphrase {}", format_time(u))
            } else if let Some(o) = t.opened_at {
                format!("code entered {}", format_time(o))
            } else if let Some(c) = t.code_requested_at {
                format!("code requested {}", format_time(c))
            } else {
                "waiting for the recipient".into()
            }
        }
        State::Downloaded => format!(
            "downloaded (first {}, last {})",
            at(t.first_download_at),
            at(t.last_download_at)
        ),
        State::Locked => format!(
            "locked after {} wrong passphrases {}",
            t.wrong_passphrases,
            at(t.ended_at)
        ),
        State::Recalled => format!("recalled {}", at(t.ended_at)),
        State::Expired => {
            if t.first_download_at.is_some() {
                format!(
                    "expired {} (downloaded {} times)",
                    at(t.ended_at),
                    t.downloads
                )
            } else {
                format!("expired unopened {}", at(t.ended_at))
            }
        }
        State::Discarded => "discarded (never sent)".into(),
        State::Rejected => format!(
            "rejected by {} {}",
            t.decided_by_label.as_deref().unwrap_or("an approver"),
            at(t.decided_at)
        ),
    }
}
