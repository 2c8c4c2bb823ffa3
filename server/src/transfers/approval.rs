//! Approval (policy P7): a second pair of eyes on risky sends.
//!
//! When the sender confirms a transfer ("I will phone the passphrase"), [`reasons`] checks the
//! policy's rules. If any applies, the transfer is `held` instead of released, and every
//! approver (except the sender) is mailed. An approver sees everything about it except the
//! content and the passphrase, and approves (which releases it, with the undo window) or
//! rejects it with a reason (which destroys it). Nobody may decide on a transfer they sent. A
//! held transfer nobody decides expires at its expiry like any other (see the sweeper).

use super::{end_in, get, recipient::mail_time, release_in, State, Transfer};
use crate::accounts::{self, Role, User};
use crate::audit::{self, Actor};
use crate::blobs::Blobs;
use crate::clock::{format_time, UnixTime};
use crate::contacts::{self, Status};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::keys::ServerKeys;
use crate::mail::{self, OutgoingMail};
use crate::policy::Policy;
use serde_json::json;
use sqlx::Row;

/// A policy rule that holds a transfer for an approver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Every transfer is approved.
    Always,
    /// Its classification is one that policy lists.
    Classification,
    /// The contact is not verified (sent on the sender's attestation).
    Unverified,
    /// The contact's domain is outside the allowed list.
    OutsideDomains,
    /// Nothing has been sent to the contact's organisation before.
    NewOrganisation,
}

impl Rule {
    /// Every rule, in the order they are checked and shown.
    pub const ALL: [Rule; 5] = [
        Rule::Always,
        Rule::Classification,
        Rule::Unverified,
        Rule::OutsideDomains,
        Rule::NewOrganisation,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Always => "always",
            Rule::Classification => "classification",
            Rule::Unverified => "unverified_contact",
            Rule::OutsideDomains => "outside_allowed_domains",
            Rule::NewOrganisation => "new_organisation",
        }
    }

    /// Words for pages and mail.
    pub fn label(self) -> &'static str {
        match self {
            Rule::Always => "policy asks for approval of every transfer",
            Rule::Classification => "its classification needs approval",
            Rule::Unverified => "the contact is not verified (sent on the sender's attestation)",
            Rule::OutsideDomains => "the address is outside the allowed domains",
            Rule::NewOrganisation => "it is the first transfer to this organisation",
        }
    }

    fn parse(s: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Stored rule names as words, joined: "its classification needs approval; ...".
pub fn reasons_text(names: &[String]) -> String {
    let words: Vec<&str> = names
        .iter()
        .map(|n| Rule::parse(n).map(Rule::label).unwrap_or(n.as_str()))
        .collect();
    if words.is_empty() {
        "policy".into()
    } else {
        words.join("; ")
    }
}

/// The rules that hold `t` for an approver under `policy` (empty: it may go).
pub async fn reasons(db: &Db, policy: &Policy, t: &Transfer) -> Result<Vec<Rule>> {
    let mut held = Vec::new();
    if policy.approval_always {
        held.push(Rule::Always);
    }
    if policy.approval_classifications.contains(&t.classification) {
        held.push(Rule::Classification);
    }
    if policy.approval_unverified && t.unverified_attested {
        held.push(Rule::Unverified);
    }
    if policy.approval_outside_domains && !contacts::domain_allowed(db, &t.recipient_email).await? {
        held.push(Rule::OutsideDomains);
    }
    if policy.approval_new_organisation {
        // The organisation is its mail domain, not the typed name: "Northshire Council " and
        // "northshire council" are one name, but only the domain says who runs the mailbox.
        let domain = contacts::mail_domain(&t.recipient_email).to_lowercase();
        let pattern = format!("%@{}", like_escape(&domain));
        let row = sqlx::query(
            "select count(*) as n from transfers t \
             where lower(t.recipient_email) like $1 escape '\\' and t.transfer_id <> $2 \
             and t.released_at is not null",
        )
        .bind(&pattern)
        .bind(t.id)
        .fetch_one(db.pool())
        .await?;
        if domain.is_empty() || row.try_get::<i64, _>("n")? == 0 {
            held.push(Rule::NewOrganisation);
        }
    }
    Ok(held)
}

/// `s` with LIKE's wildcards (and the escape character itself) taken literally.
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The accounts that may decide on a transfer sent by `sender_id`: approvers, not disabled,
/// other than the sender.
pub async fn approvers_for(db: &Db, sender_id: i64) -> Result<Vec<User>> {
    Ok(accounts::list(db)
        .await?
        .into_iter()
        .filter(|u| u.has(Role::Approver) && !u.disabled && u.id != sender_id)
        .collect())
}

/// Holds a sealed transfer for an approver (state `held`) and mails the approvers. Refused,
/// with the transfer left sealed, when no approver other than the sender has an account.
pub async fn hold(
    db: &Db,
    now: UnixTime,
    actor: &Actor,
    public_url: &str,
    t: &Transfer,
    reasons: &[Rule],
) -> Result<Transfer> {
    let approvers = approvers_for(db, t.sender_id).await?;
    if approvers.is_empty() {
        return Err(Error::BadInput(format!(
            "Policy needs an approver to check this transfer ({}), but there is no approver \
             other than you. Ask an administrator to give the approver role to someone; the \
             transfer stays unsent until then.",
            reasons
                .iter()
                .map(|r| r.label())
                .collect::<Vec<_>>()
                .join("; ")
        )));
    }
    let names: Vec<&str> = reasons.iter().map(|r| r.as_str()).collect();
    let sender = accounts::by_id(db, t.sender_id).await?;
    let sender_name = sender
        .as_ref()
        .map(|s| s.name.as_str())
        .unwrap_or("A colleague");
    let organisation = contacts::get(db, t.contact_id)
        .await?
        .map(|c| c.organisation)
        .unwrap_or_default();
    let mut tx = db.begin().await?;
    let done = sqlx::query(
        "update transfers set state = 'held', held_at = $1, approval_reasons = $2, \
         decision = null, decided_by = null, decided_by_label = null, decided_at = null, \
         decision_reason_sealed = null where transfer_id = $3 and state = 'sealed'",
    )
    .bind(now)
    .bind(serde_json::to_string(&names).unwrap_or_default())
    .bind(t.id)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() != 1 {
        return Err(Error::BadInput(
            "This transfer has already been sent, or has ended.".into(),
        ));
    }
    audit::append(
        &mut tx,
        now,
        actor,
        "transfer_held",
        &t.recipient_email,
        json!({ "transfer_id": t.id, "reasons": names, "approvers": approvers.len() }),
    )
    .await?;
    for a in &approvers {
        mail::enqueue(
            &mut tx,
            &OutgoingMail {
                to: a.email.clone(),
                subject: "A transfer is waiting for your approval".into(),
                body_text: format!(
                    "Hello {},\n\n{sender_name} wants to send files to {} ({organisation}), and \
                     school policy asks for an approver to check it first: {}.\n\n\
                     Approve or reject it here:\n{public_url}/approvals/{}\n\n\
                     It expires unsent on {} if nobody decides.\n",
                    a.name,
                    t.recipient_email,
                    reasons
                        .iter()
                        .map(|r| r.label())
                        .collect::<Vec<_>>()
                        .join("; "),
                    t.id,
                    format_time(t.expires_at)
                ),
            },
            mail_time(now),
        )
        .await?;
    }
    tx.commit().await?;
    get(db, t.id).await?.ok_or(Error::NotFound)
}

/// Transfers waiting for an approver, oldest first.
pub async fn queue(db: &Db) -> Result<Vec<Transfer>> {
    let rows = sqlx::query(&format!(
        "select {} from transfers where state = 'held' order by held_at, transfer_id",
        super::COLUMNS
    ))
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(super::row_to_transfer).collect()
}

/// Transfers an approver decided on, newest first.
pub async fn decided(db: &Db, limit: i64) -> Result<Vec<Transfer>> {
    let rows = sqlx::query(&format!(
        "select {} from transfers where decision is not null order by decided_at desc, transfer_id desc limit $1",
        super::COLUMNS
    ))
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(super::row_to_transfer).collect()
}

fn reason_context(blob_key: &str) -> String {
    format!("transfer-decision:{blob_key}")
}

/// The approver's reason, unsealed (empty when none was given).
pub async fn decision_reason(db: &Db, keys: &ServerKeys, t: &Transfer) -> Result<String> {
    let row = sqlx::query("select decision_reason_sealed from transfers where transfer_id = $1")
        .bind(t.id)
        .fetch_one(db.pool())
        .await?;
    match row.try_get::<Option<Vec<u8>>, _>("decision_reason_sealed")? {
        Some(sealed) => Ok(String::from_utf8_lossy(
            &keys.unseal(&reason_context(&t.blob_key), &sealed)?,
        )
        .into_owned()),
        None => Ok(String::new()),
    }
}

/// Checks that `approver` may decide on `t` now.
fn check_decision(approver: &User, t: &Transfer, now: UnixTime) -> Result<()> {
    if t.sender_id == approver.id {
        return Err(Error::BadInput(
            "You sent this transfer, so you cannot approve or reject it: another approver must \
             decide. (You can recall it from your transfers.)"
                .into(),
        ));
    }
    if t.state != State::Held {
        return Err(Error::BadInput(
            "This transfer is not waiting for approval any more: someone has decided, the \
             sender recalled it, or it expired."
                .into(),
        ));
    }
    if now >= t.expires_at {
        return Err(Error::BadInput(
            "This transfer expired while it waited for approval; nothing was sent.".into(),
        ));
    }
    Ok(())
}

/// Records the decision on `t` in the caller's transaction.
async fn record_decision(
    tx: &mut sqlx::AnyConnection,
    keys: &ServerKeys,
    now: UnixTime,
    approver: &User,
    t: &Transfer,
    decision: &str,
    reason: &str,
) -> Result<()> {
    let sealed =
        (!reason.is_empty()).then(|| keys.seal(&reason_context(&t.blob_key), reason.as_bytes()));
    sqlx::query(
        "update transfers set decision = $1, decided_by = $2, decided_by_label = $3, \
         decided_at = $4, decision_reason_sealed = $5 where transfer_id = $6",
    )
    .bind(decision)
    .bind(approver.id)
    .bind(&approver.email)
    .bind(now)
    .bind(sealed)
    .bind(t.id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

fn tidy_reason(reason: &str) -> Result<String> {
    let reason = reason.trim();
    if reason.chars().count() > 1000 {
        return Err(Error::BadInput(
            "The reason must be at most 1,000 characters.".into(),
        ));
    }
    if crate::text::unsafe_in_note(reason) {
        return Err(Error::BadInput(format!(
            "The reason {}.",
            crate::text::UNSAFE_TEXT
        )));
    }
    Ok(reason.to_string())
}

/// The sender of `t`, to be told of a decision.
async fn sender_of(db: &Db, t: &Transfer) -> Result<User> {
    accounts::by_id(db, t.sender_id)
        .await?
        .ok_or_else(|| Error::Internal(format!("transfer {} has no sender", t.id)))
}

/// An approver approves: the transfer is released (the undo window applies) and the sender is
/// mailed. `note` is optional.
#[allow(clippy::too_many_arguments)]
pub async fn approve(
    db: &Db,
    keys: &ServerKeys,
    now: UnixTime,
    approver: &User,
    actor: &Actor,
    public_url: &str,
    t: &Transfer,
    note: &str,
) -> Result<Transfer> {
    check_decision(approver, t, now)?;
    let note = tidy_reason(note)?;
    let sender = sender_of(db, t).await?;
    let window = crate::policy::load(db).await?.undo_window_secs.max(0);
    let mut tx = db.begin().await?;
    release_in(
        &mut tx,
        now,
        actor,
        public_url,
        t,
        &sender.name,
        State::Held,
        window,
    )
    .await
    .map_err(|e| match e {
        Error::BadInput(_) => Error::BadInput(
            "This transfer is not waiting for approval any more: someone else has decided, or \
             the sender recalled it."
                .into(),
        ),
        e => e,
    })?;
    record_decision(&mut tx, keys, now, approver, t, "approved", &note).await?;
    audit::append(
        &mut tx,
        now,
        actor,
        "transfer_approved",
        &t.recipient_email,
        json!({ "transfer_id": t.id, "sender_id": t.sender_id, "reasons": t.approval_reasons, "with_note": !note.is_empty() }),
    )
    .await?;
    let when = if window > 0 {
        format!(
            "The link will be emailed to the recipient at {}; until then you can undo it on the \
             transfer's page.",
            super::format_clock(now + window)
        )
    } else {
        "The link has been emailed to the recipient.".into()
    };
    mail::enqueue(
        &mut tx,
        &OutgoingMail {
            to: sender.email.clone(),
            subject: "Your transfer was approved".into(),
            body_text: format!(
                "Hello {},\n\nYour transfer to {} was approved by {} on {}. {when}\n\n\
                 Remember to phone the recipient with the passphrase.\n\n{public_url}/transfers/{}\n",
                sender.name,
                t.recipient_email,
                approver.name,
                format_time(now),
                t.id
            ),
        },
        mail_time(now),
    )
    .await?;
    tx.commit().await?;
    get(db, t.id).await?.ok_or(Error::NotFound)
}

/// An approver rejects with a reason: the transfer is destroyed (header first, then the blob)
/// and the sender is mailed (the reason is on the transfer's page, not in the mail).
#[allow(clippy::too_many_arguments)]
pub async fn reject(
    db: &Db,
    keys: &ServerKeys,
    blobs: &Blobs,
    now: UnixTime,
    approver: &User,
    actor: &Actor,
    public_url: &str,
    t: &Transfer,
    reason: &str,
) -> Result<Transfer> {
    check_decision(approver, t, now)?;
    let reason = tidy_reason(reason)?;
    if reason.is_empty() {
        return Err(Error::BadInput(
            "Write why you are rejecting the transfer: the sender will read it.".into(),
        ));
    }
    let sender = sender_of(db, t).await?;
    let mut tx = db.begin().await?;
    if !end_in(&mut tx, now, t.id, &[State::Held], State::Rejected).await? {
        return Err(Error::BadInput(
            "This transfer is not waiting for approval any more: someone else has decided, or \
             the sender recalled it."
                .into(),
        ));
    }
    record_decision(&mut tx, keys, now, approver, t, "rejected", &reason).await?;
    audit::append(
        &mut tx,
        now,
        actor,
        "transfer_rejected",
        &t.recipient_email,
        json!({ "transfer_id": t.id, "sender_id": t.sender_id, "reasons": t.approval_reasons }),
    )
    .await?;
    mail::enqueue(
        &mut tx,
        &OutgoingMail {
            to: sender.email.clone(),
            subject: "Your transfer was not approved".into(),
            body_text: format!(
                "Hello {},\n\n{} did not approve your transfer to {} on {}. Nothing was sent to \
                 the recipient and the files have been destroyed.\n\n\
                 Read the approver's reason on the transfer's page:\n{public_url}/transfers/{}\n",
                sender.name,
                approver.name,
                t.recipient_email,
                format_time(now),
                t.id
            ),
        },
        mail_time(now),
    )
    .await?;
    tx.commit().await?;
    super::sweeper::delete_blob(db, blobs, now, t.id, &t.blob_key).await;
    get(db, t.id).await?.ok_or(Error::NotFound)
}

/// An approver's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Release it (the undo window applies).
    Approve,
    /// Destroy it; a reason is required.
    Reject,
}

/// Applies `decision` ([`approve`] or [`reject`]); `reason` is the note or the reason.
#[allow(clippy::too_many_arguments)]
pub async fn decide(
    db: &Db,
    keys: &ServerKeys,
    blobs: &Blobs,
    now: UnixTime,
    approver: &User,
    actor: &Actor,
    public_url: &str,
    t: &Transfer,
    decision: Decision,
    reason: &str,
) -> Result<Transfer> {
    match decision {
        Decision::Approve => approve(db, keys, now, approver, actor, public_url, t, reason).await,
        Decision::Reject => {
            reject(db, keys, blobs, now, approver, actor, public_url, t, reason).await
        }
    }
}

/// "Approved by x on y: reason", for the sender's and the approver's pages (None: undecided).
pub async fn decision_text(db: &Db, keys: &ServerKeys, t: &Transfer) -> Result<Option<String>> {
    let (Some(d), Some(by), Some(at)) = (&t.decision, &t.decided_by_label, t.decided_at) else {
        return Ok(None);
    };
    let reason = decision_reason(db, keys, t).await?;
    let verb = if d == "approved" {
        "Approved"
    } else {
        "Rejected"
    };
    Ok(Some(if reason.is_empty() {
        format!("{verb} by {by} on {}.", format_time(at))
    } else {
        format!("{verb} by {by} on {}: {reason}", format_time(at))
    }))
}

/// What an approver sees of a held transfer's contact: its verification record, or why it
/// has none.
pub fn verification_text(contact: &contacts::Contact, now: UnixTime) -> String {
    match (&contact.verification, contact.status(now)) {
        (Some(v), status) => format!(
            "{}: {} called {} (number from {}) on {}; {}. {} {}.",
            status.label(),
            v.verified_by,
            v.phone_called,
            v.phone_source,
            format_time(v.verified_at),
            v.note,
            if status == Status::Verified {
                "Valid until"
            } else {
                "Lapsed on"
            },
            format_time(v.expires_at)
        ),
        (None, _) => {
            "not verified: nobody has recorded a check of this contact's address and phone".into()
        }
    }
}
