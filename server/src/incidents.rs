//! Incidents (policy P11): "report a problem" on a transfer (wrong recipient, wrong file,
//! suspected interception) recalls it at once and opens an incident with the 72-hour ICO
//! clock; the admins are mailed; an admin records the assessment and closes it; the incident
//! exports as the school's record (JSON and PDF).
//!
//! An incident's life (`state`): `open` ──(assessment recorded, then close)──▶ `closed`.
//!
//! `known_at` is when the school found out about the problem (the reporter says how long ago;
//! by default the moment of the report): the ICO must be told within 72 hours of it (UK GDPR
//! Article 33) if the breach is likely to result in a risk to individuals. The
//! description and the assessment may name a pupil, so they are sealed under the server key.
//! The evidence of access is read, not stored: from the audit records about the transfer's
//! recipient and from the transfer's downloads.

use crate::accounts::{self, Role};
use crate::audit::{self, Actor};
use crate::clock::{format_rfc3339, format_time, UnixTime};
use crate::db::{opt_i64, Db};
use crate::error::{Error, Result};
use crate::keys::ServerKeys;
use crate::mail::{self, OutgoingMail};
use crate::transfers::{self, Transfer};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;

/// How long the school has to decide whether to report to the ICO (UK GDPR Article 33).
pub const ICO_DEADLINE_SECS: i64 = 72 * 3600;

/// Longest description or assessment text accepted, in characters.
pub const MAX_TEXT: usize = 5000;

/// What went wrong, as the reporter says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Sent to the wrong person.
    WrongRecipient,
    /// The wrong file was sent.
    WrongFile,
    /// The link, code or passphrase may have been seen by someone else.
    Interception,
    /// Anything else.
    Other,
}

impl Kind {
    /// Every kind, in the order the form lists them.
    pub const ALL: [Kind; 4] = [
        Kind::WrongRecipient,
        Kind::WrongFile,
        Kind::Interception,
        Kind::Other,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::WrongRecipient => "wrong_recipient",
            Kind::WrongFile => "wrong_file",
            Kind::Interception => "interception",
            Kind::Other => "other",
        }
    }

    /// In words.
    pub fn label(self) -> &'static str {
        match self {
            Kind::WrongRecipient => "Sent to the wrong person",
            Kind::WrongFile => "The wrong file was sent",
            Kind::Interception => {
                "Suspected interception (the link, code or passphrase may have been seen by someone else)"
            }
            Kind::Other => "Something else",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// How likely the breach is to harm people (the ICO's three levels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    /// Unlikely to result in a risk to individuals: record it, no report.
    Unlikely,
    /// Likely to result in a risk: report to the ICO within 72 hours.
    Likely,
    /// Likely to result in a high risk: report to the ICO and tell the people affected.
    High,
}

impl Risk {
    /// Every level, lowest first.
    pub const ALL: [Risk; 3] = [Risk::Unlikely, Risk::Likely, Risk::High];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Unlikely => "unlikely",
            Risk::Likely => "likely",
            Risk::High => "high",
        }
    }

    /// In words.
    pub fn label(self) -> &'static str {
        match self {
            Risk::Unlikely => "Unlikely to result in a risk to individuals",
            Risk::Likely => "Likely to result in a risk to individuals",
            Risk::High => {
                "Likely to result in a high risk to individuals (tell them as well as the ICO)"
            }
        }
    }

    /// The level named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// An admin's assessment (sealed: it may name a pupil).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Assessment {
    /// The risk to individuals.
    pub risk: Risk,
    /// What the risk is and to whom.
    pub risk_notes: String,
    /// Whether it must be reported to the ICO.
    pub reportable: bool,
    /// What was decided (e.g. "reported to the ICO, reference ...", "not reported").
    pub decision: String,
    /// Why.
    pub reason: String,
    /// What has been done (asked the wrong recipient to delete, told the family, ...).
    pub actions: String,
}

/// An incident as stored (the sealed texts are read with [`description`] and [`assessment`]).
#[derive(Clone, Debug)]
pub struct Incident {
    /// Id.
    pub id: i64,
    /// The transfer it is about.
    pub transfer_id: i64,
    /// Who reported it.
    pub reported_by: i64,
    /// When it was reported in Safehand.
    pub reported_at: UnixTime,
    /// When the school found out about the problem (at or before `reported_at`): the ICO
    /// clock runs from here.
    pub known_at: UnixTime,
    /// What went wrong.
    pub kind: Kind,
    /// Whether reporting it recalled the transfer (false: it had already ended).
    pub recalled: bool,
    /// Closed by an admin.
    pub closed: bool,
    /// The assessment's answer on reporting to the ICO, once assessed.
    pub reportable: Option<bool>,
    /// Who assessed it.
    pub assessed_by: Option<i64>,
    /// When.
    pub assessed_at: Option<UnixTime>,
    /// Who closed it.
    pub closed_by: Option<i64>,
    /// When.
    pub closed_at: Option<UnixTime>,
}

impl Incident {
    /// When the 72 hours run out.
    pub fn deadline(&self) -> UnixTime {
        self.known_at + ICO_DEADLINE_SECS
    }

    /// The ICO clock in words at `now`.
    pub fn clock(&self, now: UnixTime) -> String {
        let deadline = format_time(self.deadline());
        if self.closed {
            return format!(
                "Closed {}; the 72-hour ICO deadline was {deadline}.",
                self.closed_at.map(format_time).unwrap_or_default()
            );
        }
        let left = self.deadline() - now;
        let span = |s: i64| format!("{} h {} min", s / 3600, (s % 3600) / 60);
        if left > 0 {
            format!(
                "{} left to decide whether to report to the ICO (deadline {deadline}).",
                span(left)
            )
        } else {
            format!(
                "Overdue: the 72-hour ICO deadline passed {} ago ({deadline}).",
                span(-left)
            )
        }
    }

    /// Open or closed.
    pub fn state(&self) -> &'static str {
        if self.closed {
            "closed"
        } else {
            "open"
        }
    }
}

const COLUMNS: &str =
    "incident_id, transfer_id, reported_by, reported_at, known_at, kind, recalled, state, \
     reportable, assessed_by, assessed_at, closed_by, closed_at";

fn row_to_incident(row: &sqlx::any::AnyRow) -> Result<Incident> {
    let kind: String = row.try_get("kind")?;
    Ok(Incident {
        id: row.try_get("incident_id")?,
        transfer_id: row.try_get("transfer_id")?,
        reported_by: row.try_get("reported_by")?,
        reported_at: row.try_get("reported_at")?,
        known_at: row.try_get("known_at")?,
        kind: Kind::parse(&kind)
            .ok_or_else(|| Error::Internal(format!("unknown incident kind {kind}")))?,
        recalled: row.try_get::<i64, _>("recalled")? != 0,
        closed: row.try_get::<String, _>("state")? == "closed",
        reportable: opt_i64(row, "reportable")?.map(|r| r != 0),
        assessed_by: opt_i64(row, "assessed_by")?,
        assessed_at: opt_i64(row, "assessed_at")?,
        closed_by: opt_i64(row, "closed_by")?,
        closed_at: opt_i64(row, "closed_at")?,
    })
}

fn description_context(id: i64) -> String {
    format!("incident-description:{id}")
}

fn assessment_context(id: i64) -> String {
    format!("incident-assessment:{id}")
}

/// One incident.
pub async fn get(db: &Db, id: i64) -> Result<Option<Incident>> {
    let row = sqlx::query(&format!(
        "select {COLUMNS} from incidents where incident_id = $1"
    ))
    .bind(id)
    .fetch_optional(db.pool())
    .await?;
    row.as_ref().map(row_to_incident).transpose()
}

/// Every incident, open ones first, newest first.
pub async fn list(db: &Db, limit: i64) -> Result<Vec<Incident>> {
    let rows = sqlx::query(&format!(
        "select {COLUMNS} from incidents order by case when state = 'open' then 0 else 1 end, \
         incident_id desc limit $1"
    ))
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(row_to_incident).collect()
}

/// The incidents about one transfer, oldest first.
pub async fn for_transfer(db: &Db, transfer_id: i64) -> Result<Vec<Incident>> {
    let rows = sqlx::query(&format!(
        "select {COLUMNS} from incidents where transfer_id = $1 order by incident_id"
    ))
    .bind(transfer_id)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(row_to_incident).collect()
}

async fn unseal_column(
    db: &Db,
    keys: &ServerKeys,
    id: i64,
    column: &'static str,
    context: String,
) -> Result<Option<Vec<u8>>> {
    debug_assert!(matches!(column, "description_sealed" | "assessment_sealed"));
    let row = sqlx::query(&format!(
        "select {column} as sealed from incidents where incident_id = $1"
    ))
    .bind(id)
    .fetch_one(db.pool())
    .await?;
    match row.try_get::<Option<Vec<u8>>, _>("sealed")? {
        Some(sealed) => Ok(Some(keys.unseal(&context, &sealed)?.to_vec())),
        None => Ok(None),
    }
}

/// What the reporter wrote, unsealed.
pub async fn description(db: &Db, keys: &ServerKeys, i: &Incident) -> Result<String> {
    let plain = unseal_column(
        db,
        keys,
        i.id,
        "description_sealed",
        description_context(i.id),
    )
    .await?;
    Ok(plain
        .map(|p| String::from_utf8_lossy(&p).into_owned())
        .unwrap_or_default())
}

/// The assessment, unsealed, once recorded.
pub async fn assessment(db: &Db, keys: &ServerKeys, i: &Incident) -> Result<Option<Assessment>> {
    let plain = unseal_column(
        db,
        keys,
        i.id,
        "assessment_sealed",
        assessment_context(i.id),
    )
    .await?;
    plain
        .map(|p| {
            serde_json::from_slice(&p)
                .map_err(|e| Error::Internal(format!("incident assessment: {e}")))
        })
        .transpose()
}

fn check_text(problems: &mut Vec<(&'static str, String)>, field: &'static str, text: &str) {
    if text.chars().count() > MAX_TEXT {
        problems.push((
            field,
            format!("Keep this to {MAX_TEXT} characters; attach longer notes to the school's own record."),
        ));
    } else if crate::text::unsafe_in_note(text) {
        problems.push((field, format!("This text {}.", crate::text::UNSAFE_TEXT)));
    }
}

/// What a report needs, as typed.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Report {
    /// A [`Kind`] name.
    pub kind: String,
    /// What happened, in the reporter's words.
    pub description: String,
    /// API: when the school found out, RFC 3339; absent or empty means now.
    #[serde(default)]
    pub known_at: String,
    /// Page: how many whole hours ago the school found out; empty means now.
    #[serde(skip)]
    pub known_hours_ago: String,
}

/// A report that passed [`Report::check`].
#[derive(Clone, Debug)]
pub struct Checked {
    /// What went wrong.
    pub kind: Kind,
    /// What happened (trimmed).
    pub description: String,
    /// When the school found out: not in the future, not before the transfer was made.
    pub known_at: UnixTime,
}

impl Report {
    /// The report, or the problems by field (`kind`, `description`, `known_at` or
    /// `known_hours_ago`). `now` is the time of the report and `since` when the transfer was
    /// made: nobody found out about a problem with it before then.
    pub fn check(
        &self,
        now: UnixTime,
        since: UnixTime,
    ) -> std::result::Result<Checked, Vec<(&'static str, String)>> {
        let mut problems = Vec::new();
        let kind = Kind::parse(self.kind.trim());
        if kind.is_none() {
            problems.push(("kind", "Choose what went wrong.".to_string()));
        }
        let description = self.description.trim();
        if description.is_empty() {
            problems.push((
                "description",
                "Say what happened: who it went to, or what was wrong, and how you found out."
                    .to_string(),
            ));
        }
        check_text(&mut problems, "description", description);
        let known_at = self.known_at(now, since, &mut problems);
        match (kind, known_at) {
            (Some(kind), Some(known_at)) if problems.is_empty() => Ok(Checked {
                kind,
                description: description.to_string(),
                known_at,
            }),
            _ => Err(problems),
        }
    }

    fn known_at(
        &self,
        now: UnixTime,
        since: UnixTime,
        problems: &mut Vec<(&'static str, String)>,
    ) -> Option<UnixTime> {
        let hours_ago = self.known_hours_ago.trim();
        let stamp = self.known_at.trim();
        let hours_available = ((now - since).max(0) + 3599) / 3600;
        if !hours_ago.is_empty() {
            let field = "known_hours_ago";
            return match hours_ago.parse::<i64>() {
                Ok(h) if (0..=hours_available).contains(&h) => Some((now - h * 3600).max(since)),
                Ok(h) if h > hours_available => {
                    problems.push((
                        field,
                        format!(
                            "The transfer was made {hours_available} hours ago, so the problem                              cannot have been known {h} hours ago. Give the hours since you found                              out, or leave this blank if it was just now."
                        ),
                    ));
                    None
                }
                _ => {
                    problems.push((
                        field,
                        "Give the number of whole hours since you found out (for example 3), or                          leave this blank if it was just now."
                            .into(),
                    ));
                    None
                }
            };
        }
        if stamp.is_empty() {
            return Some(now);
        }
        let field = "known_at";
        let Ok(t) =
            time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339)
        else {
            problems.push((
                field,
                "Give the time the school found out as RFC 3339, for example                  2026-03-02T09:30:00Z, or leave it out for now."
                    .into(),
            ));
            return None;
        };
        let t = t.unix_timestamp();
        if t > now + 60 {
            problems.push((
                field,
                "The time the school found out is in the future.".into(),
            ));
            None
        } else if t < since {
            problems.push((
                field,
                format!(
                    "The time the school found out is before the transfer was made ({}).",
                    format_rfc3339(since)
                ),
            ));
            None
        } else {
            Some(t.min(now))
        }
    }
}

/// What came of a report.
#[derive(Clone, Debug)]
pub struct Reported {
    /// The new incident.
    pub incident: Incident,
    /// The transfer's state before the report.
    pub was: transfers::State,
}

impl Reported {
    /// What happened to the transfer, in words.
    pub fn outcome(&self) -> String {
        recall_outcome(self.incident.recalled, self.was)
    }
}

fn recall_outcome(recalled: bool, was: transfers::State) -> String {
    if recalled {
        "The transfer was recalled at once: its files can never be decrypted and the link no longer works.".into()
    } else {
        format!(
            "The transfer had already ended ({}), so there was nothing to recall.",
            was.as_str()
        )
    }
}

/// Opens an incident on `t`, in one transaction: recalls the transfer if it can still be
/// recalled, records the incident, audits `incident_reported` and mails every active admin.
/// The caller has checked that `actor` may report on `t` (its sender, an approver or an admin).
#[allow(clippy::too_many_arguments)]
pub async fn report(
    db: &Db,
    keys: &ServerKeys,
    blobs: &crate::blobs::Blobs,
    now: UnixTime,
    actor: &Actor,
    reporter_id: i64,
    public_url: &str,
    t: &Transfer,
    report: &Checked,
) -> Result<Reported> {
    let Checked {
        kind,
        description,
        known_at,
    } = report;
    let (kind, known_at) = (*kind, *known_at);
    let admins: Vec<String> = accounts::list(db)
        .await?
        .into_iter()
        .filter(|u| u.has(Role::Admin) && !u.disabled)
        .map(|u| u.email)
        .collect();
    let reporter = accounts::by_id(db, reporter_id)
        .await?
        .map(|u| u.name)
        .unwrap_or_default();
    let mut tx = db.begin().await?;
    let recalled = transfers::recall_in(
        &mut tx,
        now,
        actor,
        t,
        &format!("incident reported: {}", kind.as_str()),
    )
    .await?;
    let row = sqlx::query(
        "insert into incidents (transfer_id, reported_by, reported_at, known_at, kind, recalled, \
         state) values ($1, $2, $3, $4, $5, $6, 'open') returning incident_id",
    )
    .bind(t.id)
    .bind(reporter_id)
    .bind(now)
    .bind(known_at)
    .bind(kind.as_str())
    .bind(i64::from(recalled))
    .fetch_one(&mut *tx)
    .await?;
    let id: i64 = row.try_get("incident_id")?;
    sqlx::query("update incidents set description_sealed = $1 where incident_id = $2")
        .bind(keys.seal(&description_context(id), description.as_bytes()))
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let deadline = known_at + ICO_DEADLINE_SECS;
    let found_out = if known_at < now {
        format!(" The school found out at {}.", format_time(known_at))
    } else {
        String::new()
    };
    let at = crate::transfers::recipient::mail_time(now);
    for admin in &admins {
        mail::enqueue(
            &mut tx,
            &OutgoingMail {
                to: admin.clone(),
                subject: format!("Safehand incident {id} reported: assess it within 72 hours"),
                body_text: format!(
                    "Incident {id} was reported by {reporter} at {}: {} (transfer {}).{found_out}\n\n{}\n\n\
                     The 72-hour ICO deadline is {}. Decide by then whether the breach must be \
                     reported to the ICO, and record the assessment:\n{public_url}/incidents/{id}\n",
                    format_time(now),
                    kind.label(),
                    t.id,
                    recall_outcome(recalled, t.state),
                    format_time(deadline),
                ),
            },
            at,
        )
        .await?;
    }
    audit::append(
        &mut tx,
        now,
        actor,
        "incident_reported",
        &t.recipient_email,
        json!({
            "incident_id": id, "transfer_id": t.id, "kind": kind.as_str(), "recalled": recalled,
            "was": t.state.as_str(), "known_at": known_at, "deadline": deadline,
            "admins_mailed": admins.len(),
        }),
    )
    .await?;
    tx.commit().await?;
    if recalled {
        transfers::sweeper::delete_blob(db, blobs, now, t.id, &t.blob_key).await;
    }
    let incident = get(db, id).await?.ok_or(Error::NotFound)?;
    Ok(Reported {
        incident,
        was: t.state,
    })
}

/// An assessment as typed (radio values and texts).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct AssessmentInput {
    /// A [`Risk`] name.
    pub risk: String,
    /// Notes on the risk.
    pub risk_notes: String,
    /// "yes" or "no".
    pub reportable: String,
    /// The decision.
    pub decision: String,
    /// Its reason.
    pub reason: String,
    /// Actions taken.
    pub actions: String,
}

impl AssessmentInput {
    /// The assessment, or the problems by field.
    pub fn check(&self) -> std::result::Result<Assessment, Vec<(&'static str, String)>> {
        let mut problems = Vec::new();
        let risk = Risk::parse(self.risk.trim());
        if risk.is_none() {
            problems.push((
                "risk",
                "Choose how likely it is to harm people.".to_string(),
            ));
        }
        let reportable = match self.reportable.trim() {
            "yes" => Some(true),
            "no" => Some(false),
            _ => {
                problems.push((
                    "reportable",
                    "Say whether it must be reported to the ICO.".to_string(),
                ));
                None
            }
        };
        if risk.is_some_and(|r| r != Risk::Unlikely) && reportable == Some(false) {
            problems.push((
                "reportable",
                "A breach likely to result in a risk to individuals must be reported to the ICO: answer yes, or change the risk.".to_string(),
            ));
        }
        let text = |s: &str| s.trim().to_string();
        let a = Assessment {
            risk: risk.unwrap_or(Risk::Unlikely),
            risk_notes: text(&self.risk_notes),
            reportable: reportable.unwrap_or(false),
            decision: text(&self.decision),
            reason: text(&self.reason),
            actions: text(&self.actions),
        };
        for (field, value, missing) in [
            ("risk_notes", &a.risk_notes, "Say who could be harmed and how."),
            ("decision", &a.decision, "Record the decision (for example: reported to the ICO, reference ...; or not reported)."),
            ("reason", &a.reason, "Give the reason for the decision."),
            ("actions", &a.actions, "Record what has been done (for example: asked the wrong recipient to confirm deletion)."),
        ] {
            if value.is_empty() {
                problems.push((field, missing.to_string()));
            }
            check_text(&mut problems, field, value);
        }
        if problems.is_empty() {
            Ok(a)
        } else {
            Err(problems)
        }
    }
}

/// Records (or replaces) the assessment of an open incident; audited as `incident_assessed`.
pub async fn assess(
    db: &Db,
    keys: &ServerKeys,
    now: UnixTime,
    actor: &Actor,
    assessor_id: i64,
    i: &Incident,
    a: &Assessment,
) -> Result<Incident> {
    let sealed = keys.seal(
        &assessment_context(i.id),
        &serde_json::to_vec(a).map_err(|e| Error::Internal(format!("assessment: {e}")))?,
    );
    let mut tx = db.begin().await?;
    let done = sqlx::query(
        "update incidents set assessment_sealed = $1, reportable = $2, assessed_by = $3, \
         assessed_at = $4 where incident_id = $5 and state = 'open'",
    )
    .bind(sealed)
    .bind(i64::from(a.reportable))
    .bind(assessor_id)
    .bind(now)
    .bind(i.id)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() != 1 {
        return Err(Error::BadInput(
            "This incident is closed; its assessment can no longer be changed.".into(),
        ));
    }
    audit::append(
        &mut tx,
        now,
        actor,
        "incident_assessed",
        &format!("incident {}", i.id),
        json!({
            "incident_id": i.id, "transfer_id": i.transfer_id, "risk": a.risk.as_str(),
            "reportable": a.reportable, "hours_since_known": (now - i.known_at) / 3600,
        }),
    )
    .await?;
    tx.commit().await?;
    get(db, i.id).await?.ok_or(Error::NotFound)
}

/// Closes an assessed incident; audited as `incident_closed`.
pub async fn close(
    db: &Db,
    now: UnixTime,
    actor: &Actor,
    closer_id: i64,
    i: &Incident,
) -> Result<Incident> {
    if i.closed {
        return Err(Error::BadInput("This incident is already closed.".into()));
    }
    let mut tx = db.begin().await?;
    let done = sqlx::query(
        "update incidents set state = 'closed', closed_by = $1, closed_at = $2 \
         where incident_id = $3 and state = 'open' and assessed_at is not null",
    )
    .bind(closer_id)
    .bind(now)
    .bind(i.id)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() != 1 {
        return Err(Error::BadInput(
            "Record the assessment before closing the incident.".into(),
        ));
    }
    audit::append(
        &mut tx,
        now,
        actor,
        "incident_closed",
        &format!("incident {}", i.id),
        json!({ "incident_id": i.id, "transfer_id": i.transfer_id, "reportable": i.reportable }),
    )
    .await?;
    tx.commit().await?;
    get(db, i.id).await?.ok_or(Error::NotFound)
}

// ---------------------------------------------------------------------------------------------
// Evidence of access

/// One thing the recipient's side did, from the audit log or the downloads table.
#[derive(Clone, Debug, Serialize)]
pub struct Access {
    /// When.
    pub at: UnixTime,
    /// What, in words.
    pub what: String,
    /// From which address.
    pub address: String,
}

/// A download of the transfer.
#[derive(Clone, Debug, Serialize)]
pub struct Download {
    /// What: "file 2 (report.pdf)", "all files (zip)", "encrypted payload (.age)".
    pub item: String,
    /// From which address.
    pub address: String,
    /// Started.
    pub started_at: UnixTime,
    /// Finished (the whole file was sent).
    pub completed_at: Option<UnixTime>,
    /// Cut off before the end.
    pub failed_at: Option<UnixTime>,
    /// Why it was stopped, when Safehand stopped it ("recalled", "expired", ...).
    pub cut_off_reason: Option<String>,
}

impl Download {
    /// How it ended, in words, with times written by `when`.
    pub fn outcome(&self, when: impl Fn(UnixTime) -> String) -> String {
        match (self.completed_at, self.failed_at, &self.cut_off_reason) {
            (Some(c), _, _) => format!("completed {}", when(c)),
            (None, Some(f), Some(reason)) => format!(
                "cut off by {} ({}); the recipient did not receive the whole file",
                crate::transfers::download::CutOff::by(reason),
                when(f)
            ),
            (None, Some(f), None) => format!("did not finish ({})", when(f)),
            _ => "in progress".into(),
        }
    }
}

/// What the evidence shows about access to a transfer.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Evidence {
    /// First views of the link page, one per address (perhaps a mail scanner).
    pub link_views: Vec<Access>,
    /// Codes mailed to the recipient on request.
    pub codes_requested: Vec<Access>,
    /// Codes entered: right and wrong.
    pub codes_entered: Vec<Access>,
    /// Passphrases tried: right and wrong.
    pub passphrases: Vec<Access>,
    /// Wrong passphrases.
    pub wrong_passphrases: i64,
    /// Whether the right passphrase was entered.
    pub unlocked: bool,
    /// Downloads, started or finished.
    pub downloads: Vec<Download>,
}

impl Evidence {
    /// Whether anything at all shows the link was used.
    pub fn is_empty(&self) -> bool {
        self.link_views.is_empty()
            && self.codes_requested.is_empty()
            && self.codes_entered.is_empty()
            && self.passphrases.is_empty()
            && self.downloads.is_empty()
    }

    /// Completed downloads.
    pub fn completed_downloads(&self) -> usize {
        self.downloads
            .iter()
            .filter(|d| d.completed_at.is_some())
            .count()
    }

    /// The findings in a few sentences, for the page, the export and the PDF.
    pub fn summary(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.is_empty() {
            out.push("No evidence the recipient opened the link: no view of the link page, no code requested, no passphrase tried, nothing downloaded.".into());
            return out;
        }
        let addresses = |list: &[Access]| {
            let mut a: Vec<&str> = list.iter().map(|x| x.address.as_str()).collect();
            a.dedup();
            a.join(", ")
        };
        if self.link_views.is_empty() {
            out.push("The link page: no recorded view.".into());
        } else {
            out.push(format!(
                "The link page was opened (this may be a mail scanner) from {}.",
                addresses(&self.link_views)
            ));
        }
        out.push(if self.codes_requested.is_empty() {
            "No code was requested.".into()
        } else {
            format!(
                "A code was requested {} time(s), from {}.",
                self.codes_requested.len(),
                addresses(&self.codes_requested)
            )
        });
        let right_codes = self
            .codes_entered
            .iter()
            .filter(|c| c.what.starts_with("Right"))
            .count();
        out.push(format!(
            "Codes entered: {right_codes} right, {} wrong.",
            self.codes_entered.len() - right_codes
        ));
        out.push(format!(
            "Passphrase: {}; {} wrong attempt(s).",
            if self.unlocked {
                "the right passphrase was entered"
            } else {
                "never entered correctly"
            },
            self.wrong_passphrases
        ));
        out.push(if self.downloads.is_empty() {
            "Nothing was downloaded.".into()
        } else {
            let recall_cut = self
                .downloads
                .iter()
                .filter(|d| {
                    d.completed_at.is_none() && d.cut_off_reason.as_deref() == Some("recalled")
                })
                .count();
            let mut line = format!(
                "Downloads: {} completed, {} started but not finished",
                self.completed_downloads(),
                self.downloads.len() - self.completed_downloads()
            );
            if recall_cut > 0 {
                line.push_str(&format!(
                    " ({recall_cut} of them cut off by the recall before the end)"
                ));
            }
            line.push('.');
            line
        });
        out
    }
}

/// Gathers the evidence of access to `t` from the audit log (records about its recipient that
/// name this transfer) and its downloads; `names` are its file names, in payload order, so a
/// downloaded file is named.
pub async fn evidence(db: &Db, t: &Transfer, names: &[String]) -> Result<Evidence> {
    let records = audit::about(
        db,
        &t.recipient_email,
        &[
            "recipient_link_viewed",
            "recipient_code_sent",
            "recipient_code_wrong",
            "recipient_code_accepted",
            "recipient_passphrase_wrong",
            "recipient_passphrase_accepted",
        ],
    )
    .await?;
    let mut e = Evidence::default();
    for r in records {
        let details: serde_json::Value = serde_json::from_str(&r.details).unwrap_or_default();
        if details["transfer_id"].as_i64() != Some(t.id) {
            continue;
        }
        let access = |what: &str| Access {
            at: r.at,
            what: what.to_string(),
            address: r.address.clone(),
        };
        match r.action.as_str() {
            "recipient_link_viewed" => e
                .link_views
                .push(access("Link page opened (this may be a mail scanner)")),
            "recipient_code_sent" => e.codes_requested.push(access("Code requested")),
            "recipient_code_wrong" => e.codes_entered.push(access("Wrong code entered")),
            "recipient_code_accepted" => e.codes_entered.push(access("Right code entered")),
            "recipient_passphrase_wrong" => {
                e.wrong_passphrases += 1;
                e.passphrases.push(access("Wrong passphrase"));
            }
            "recipient_passphrase_accepted" => {
                e.unlocked = true;
                e.passphrases.push(access("Right passphrase"));
            }
            _ => {}
        }
    }
    let rows = sqlx::query(
        "select item, address, started_at, completed_at, failed_at, cut_off_reason \
         from transfer_downloads where transfer_id = $1 order by download_id",
    )
    .bind(t.id)
    .fetch_all(db.pool())
    .await?;
    for r in rows {
        let mut item: String = r.try_get("item")?;
        if let Some(n) = item
            .strip_prefix("file ")
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| names.get(n.wrapping_sub(1)))
        {
            item = format!("{item} ({n})");
        }
        e.downloads.push(Download {
            item,
            address: r.try_get("address")?,
            started_at: r.try_get("started_at")?,
            completed_at: opt_i64(&r, "completed_at")?,
            failed_at: opt_i64(&r, "failed_at")?,
            cut_off_reason: r.try_get("cut_off_reason")?,
        });
    }
    Ok(e)
}

// ---------------------------------------------------------------------------------------------
// The record: JSON and PDF

/// Everything the incident's record holds, gathered for the page and the exports.
#[derive(Clone, Debug)]
pub struct Record {
    /// The incident.
    pub incident: Incident,
    /// The transfer.
    pub transfer: Transfer,
    /// What the reporter wrote.
    pub description: String,
    /// The assessment, once recorded.
    pub assessment: Option<Assessment>,
    /// The evidence of access.
    pub evidence: Evidence,
    /// Who reported, assessed and closed it (name and email).
    pub reported_by: String,
    /// Who assessed it.
    pub assessed_by: String,
    /// Who closed it.
    pub closed_by: String,
    /// The transfer's purpose (sealed with the transfer).
    pub purpose: String,
    /// The transfer's file names.
    pub files: Vec<String>,
}

async fn user_label(db: &Db, id: Option<i64>) -> Result<String> {
    Ok(match id {
        Some(id) => accounts::by_id(db, id)
            .await?
            .map(|u| format!("{} ({})", u.name, u.email))
            .unwrap_or_else(|| format!("user {id}")),
        None => String::new(),
    })
}

/// How long the school keeps database and blob-storage backups, in days: what the incident
/// record states backups still hold after a shred (server/README.md, "Crypto-shredding").
pub const BACKUP_RETENTION_DAYS: i64 = 30;

/// Reads the whole record of an incident.
pub async fn record(db: &Db, keys: &ServerKeys, i: Incident) -> Result<Record> {
    let transfer = transfers::get(db, i.transfer_id)
        .await?
        .ok_or(Error::NotFound)?;
    // File names are sealed under the server key, not the shredded header: they stay readable
    // after the transfer has ended.
    let files: Vec<String> = transfers::files(db, keys, &transfer)
        .await?
        .into_iter()
        .map(|f| f.name)
        .collect();
    Ok(Record {
        description: description(db, keys, &i).await?,
        assessment: assessment(db, keys, &i).await?,
        evidence: evidence(db, &transfer, &files).await?,
        reported_by: user_label(db, Some(i.reported_by)).await?,
        assessed_by: user_label(db, i.assessed_by).await?,
        closed_by: user_label(db, i.closed_by).await?,
        purpose: transfers::details(db, keys, &transfer).await?.purpose,
        files,
        incident: i,
        transfer,
    })
}

impl Record {
    /// What happened to the transfer when the problem was reported.
    pub fn recall_outcome(&self) -> String {
        if self.incident.recalled {
            recall_outcome(true, self.transfer.state)
        } else {
            "The transfer had already ended when the problem was reported, so there was nothing to recall.".into()
        }
    }

    /// What copies outside the live database may still hold: the file key is destroyed there,
    /// but a database backup taken before the shred, with a copy of the blob (a blob backup or a
    /// versioned bucket), can still open the files until both have aged out.
    pub fn backups(&self) -> String {
        let days = BACKUP_RETENTION_DAYS;
        match self.transfer.shredded_at {
            Some(at) => format!(
                "The file key was destroyed in the live database on {}. Database and blob-storage \
                 backups taken before then still hold what opens the files, until they age out \
                 under the school's backup retention of {days} days: until {}.",
                format_time(at),
                format_time(at + days * 86_400)
            ),
            None => format!(
                "The files have not been destroyed. Database and blob-storage backups hold what \
                 opens them for {days} days (the school's backup retention) after they are."
            ),
        }
    }

    /// The record as JSON (the API answer and the export).
    pub fn to_json(&self, now: UnixTime) -> serde_json::Value {
        let i = &self.incident;
        let t = &self.transfer;
        let time = |x: Option<i64>| x.map(format_rfc3339);
        let accesses = |list: &[Access]| {
            list.iter()
                .map(
                    |a| json!({ "at": format_rfc3339(a.at), "what": a.what, "address": a.address }),
                )
                .collect::<Vec<_>>()
        };
        json!({
            "id": i.id,
            "state": i.state(),
            "kind": i.kind.as_str(),
            "kind_label": i.kind.label(),
            "description": self.description,
            "reported_by": self.reported_by,
            "reported_at": format_rfc3339(i.reported_at),
            "known_at": format_rfc3339(i.known_at),
            "ico_deadline": format_rfc3339(i.deadline()),
            "ico_clock": i.clock(now),
            "seconds_left": if i.closed { None } else { Some(i.deadline() - now) },
            "recalled": i.recalled,
            "recall": self.recall_outcome(),
            "backups": self.backups(),
            "transfer": {
                "id": t.id,
                "state": t.state,
                "recipient_email": t.recipient_email,
                "classification": t.classification,
                "purpose": self.purpose,
                "files": self.files,
                "created_at": format_rfc3339(t.created_at),
                "released_at": time(t.released_at),
                "ended_at": time(t.ended_at),
                "shredded_at": time(t.shredded_at),
            },
            "evidence": {
                "summary": self.evidence.summary(),
                "link_opened": accesses(&self.evidence.link_views),
                "codes_requested": accesses(&self.evidence.codes_requested),
                "codes_entered": accesses(&self.evidence.codes_entered),
                "passphrases": accesses(&self.evidence.passphrases),
                "wrong_passphrases": self.evidence.wrong_passphrases,
                "unlocked": self.evidence.unlocked,
                "downloads": self.evidence.downloads.iter().map(|d| json!({
                    "item": d.item, "address": d.address,
                    "started_at": format_rfc3339(d.started_at),
                    "completed_at": time(d.completed_at), "failed_at": time(d.failed_at),
                    "cut_off_reason": d.cut_off_reason,
                    "outcome": d.outcome(format_rfc3339),
                })).collect::<Vec<_>>(),
            },
            "assessment": self.assessment.as_ref().map(|a| json!({
                "risk": a.risk.as_str(),
                "risk_label": a.risk.label(),
                "risk_notes": a.risk_notes,
                "reportable_to_ico": a.reportable,
                "decision": a.decision,
                "reason": a.reason,
                "actions": a.actions,
                "assessed_by": self.assessed_by,
                "assessed_at": time(i.assessed_at),
            })),
            "closed_by": if i.closed { Some(&self.closed_by) } else { None },
            "closed_at": time(i.closed_at),
        })
    }

    /// The record as a PDF to print and file.
    pub fn to_pdf(&self, now: UnixTime, public_url: &str) -> Vec<u8> {
        let i = &self.incident;
        let t = &self.transfer;
        let mut doc = crate::register::pdf::Document::new(&format!("Incident {}", i.id));
        doc.title(&format!("Data protection incident {}", i.id));
        doc.line(&format!(
            "The school's record of an incident reported in Safehand ({public_url}). Generated {}.",
            format_time(now)
        ));
        doc.gap();
        doc.heading("The report");
        doc.field("State", i.state());
        doc.field("What went wrong", i.kind.label());
        doc.field("Reported by", &self.reported_by);
        doc.field("Reported", &format_time(i.reported_at));
        doc.field("Problem known", &format_time(i.known_at));
        doc.field("72-hour ICO deadline", &format_time(i.deadline()));
        doc.field("ICO clock", &i.clock(now));
        doc.field("Description", &self.description);
        doc.field("The transfer", &self.recall_outcome());
        doc.field("Backups", &self.backups());
        doc.gap();
        doc.heading(&format!("Transfer {}", t.id));
        doc.field("To", &t.recipient_email);
        doc.field("Classification", &t.classification);
        doc.field("Purpose", &self.purpose);
        doc.field("Files", &self.files.join(", "));
        doc.field("Uploaded", &format_time(t.created_at));
        if let Some(r) = t.released_at {
            doc.field("Released", &format_time(r));
        }
        doc.field("State now", t.state.as_str());
        doc.gap();
        doc.heading("Evidence of access");
        for line in self.evidence.summary() {
            doc.line(&line);
        }
        let mut events: Vec<&Access> = self
            .evidence
            .link_views
            .iter()
            .chain(&self.evidence.codes_requested)
            .chain(&self.evidence.codes_entered)
            .chain(&self.evidence.passphrases)
            .collect();
        events.sort_by_key(|a| a.at);
        for a in events {
            doc.field(
                &format_time(a.at),
                &format!("{} from {}", a.what, a.address),
            );
        }
        for d in &self.evidence.downloads {
            let outcome = d.outcome(format_time);
            doc.field(
                &format_time(d.started_at),
                &format!("Downloaded {} from {}: {outcome}", d.item, d.address),
            );
        }
        doc.gap();
        doc.heading("Assessment");
        match &self.assessment {
            None => doc.line("Not assessed yet."),
            Some(a) => {
                doc.field("Risk to individuals", a.risk.label());
                doc.field("Who could be harmed and how", &a.risk_notes);
                doc.field(
                    "Reportable to the ICO",
                    if a.reportable { "yes" } else { "no" },
                );
                doc.field("Decision", &a.decision);
                doc.field("Reason", &a.reason);
                doc.field("Actions taken", &a.actions);
                doc.field(
                    "Assessed",
                    &format!(
                        "{} by {}",
                        i.assessed_at.map(format_time).unwrap_or_default(),
                        self.assessed_by
                    ),
                );
            }
        }
        if i.closed {
            doc.field(
                "Closed",
                &format!(
                    "{} by {}",
                    i.closed_at.map(format_time).unwrap_or_default(),
                    self.closed_by
                ),
            );
        }
        doc.finish()
    }
}

/// Records that an incident's record was exported (`format`: `json` or `pdf`).
pub async fn exported(
    db: &Db,
    now: UnixTime,
    actor: &Actor,
    i: &Incident,
    format: &str,
) -> Result<()> {
    audit::record(
        db,
        now,
        actor,
        "incident_exported",
        &format!("incident {}", i.id),
        json!({ "incident_id": i.id, "transfer_id": i.transfer_id, "format": format }),
    )
    .await
}
