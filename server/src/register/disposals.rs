//! Disposal records (POLICY.md R5): date; authorisation by an admin who is not the person doing
//! the disposal; software licence check; evidence for every storage medium; how it was disposed
//! of; who received it (with their waste-carrier or company registration where relevant); a
//! recent PAT check for a sale or gift. A record completes only when all of that is there; a
//! completed record is read-only (the database refuses changes too), and a correction is a new
//! record that references the old one.

use super::assets::{self, Asset, AssetStatus};
use super::certificates::{self, Evidence};
use super::{check_date, check_text, date_of, FieldError};
use crate::accounts::{self, Role, User};
use crate::audit::{self, Actor};
use crate::clock::{parse_date, UnixTime};
use crate::db::{is_unique_violation, opt_i64, Db};
use crate::error::{Error, Result};
use serde_json::json;
use sqlx::Row;

/// How long before the disposal date a PAT check still counts as recent, for a sale or gift.
pub const PAT_RECENT_DAYS: i64 = 90;

/// How an asset left the school.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// To a licensed waste or recycling contractor.
    WasteRecycling,
    /// Given away.
    Gift,
    /// Sold.
    Sale,
    /// Returned to the leasing company.
    ReturnToLessor,
}

impl Method {
    /// Every method, in form order.
    pub const ALL: [Method; 4] = [
        Method::WasteRecycling,
        Method::Gift,
        Method::Sale,
        Method::ReturnToLessor,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::WasteRecycling => "waste-recycling",
            Method::Gift => "gift",
            Method::Sale => "sale",
            Method::ReturnToLessor => "return-to-lessor",
        }
    }

    /// The name people read.
    pub fn label(self) -> &'static str {
        match self {
            Method::WasteRecycling => "Waste or recycling",
            Method::Gift => "Gift",
            Method::Sale => "Sale",
            Method::ReturnToLessor => "Return to lessor",
        }
    }

    /// Reads a stored or typed name.
    pub fn parse(s: &str) -> Option<Self> {
        let s: String = s
            .trim()
            .to_lowercase()
            .chars()
            .map(|c| if c == ' ' || c == '_' { '-' } else { c })
            .collect();
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// Sales and gifts need a recent electrical safety (PAT) check.
    pub fn needs_pat(self) -> bool {
        matches!(self, Method::Gift | Method::Sale)
    }
}

/// A disposal record.
#[derive(Clone, Debug)]
pub struct Disposal {
    /// Id.
    pub id: i64,
    /// The asset disposed of.
    pub asset_id: i64,
    /// The completed record this one corrects.
    pub corrects_id: Option<i64>,
    /// Why the correction was made.
    pub correction_reason: String,
    /// `draft` or `completed`.
    pub state: String,
    /// Date of disposal (`YYYY-MM-DD`).
    pub disposal_date: Option<String>,
    /// The person doing the disposal.
    pub disposed_by: i64,
    /// Method (stored name, "" until chosen).
    pub method: String,
    /// Who received it.
    pub receiver_name: String,
    /// `organisation` or `individual`.
    pub receiver_kind: String,
    /// Their waste-carrier or company registration number.
    pub receiver_registration: String,
    /// Software licence check done.
    pub licence_checked: bool,
    /// What the licence check found.
    pub licence_notes: String,
    /// Date of the PAT check (sale or gift).
    pub pat_date: Option<String>,
    /// Notes.
    pub notes: String,
    /// The admin who authorised it.
    pub authorised_by: Option<i64>,
    /// When.
    pub authorised_at: Option<UnixTime>,
    /// Who completed it.
    pub completed_by: Option<i64>,
    /// When.
    pub completed_at: Option<UnixTime>,
    /// Who created it.
    pub created_by: i64,
    /// When.
    pub created_at: UnixTime,
    /// The record that corrects this one, if any.
    pub corrected_by: Option<i64>,
}

impl Disposal {
    /// Whether the record is completed (and so read-only).
    pub fn is_completed(&self) -> bool {
        self.state == "completed"
    }

    /// The method's label, or "" when not chosen.
    pub fn method_label(&self) -> &'static str {
        Method::parse(&self.method).map(Method::label).unwrap_or("")
    }

    /// The form's fields filled from this record.
    pub fn to_input(&self, disposed_by_email: &str) -> DisposalInput {
        DisposalInput {
            disposal_date: self.disposal_date.clone().unwrap_or_default(),
            disposed_by: disposed_by_email.to_string(),
            method: self.method.clone(),
            receiver_name: self.receiver_name.clone(),
            receiver_kind: self.receiver_kind.clone(),
            receiver_registration: self.receiver_registration.clone(),
            licence_checked: if self.licence_checked { "yes" } else { "" }.into(),
            licence_notes: self.licence_notes.clone(),
            pat_date: self.pat_date.clone().unwrap_or_default(),
            notes: self.notes.clone(),
        }
    }
}

/// A disposal record as typed into the form or sent to the API. Everything may be filled in
/// over time; completion checks that it is all there.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct DisposalInput {
    /// `YYYY-MM-DD`.
    pub disposal_date: String,
    /// Email of the person doing the disposal (a technician or admin); empty means the creator.
    pub disposed_by: String,
    /// See [`Method::parse`].
    pub method: String,
    /// Receiver's name.
    pub receiver_name: String,
    /// `organisation` or `individual`.
    pub receiver_kind: String,
    /// Waste-carrier or company registration number.
    pub receiver_registration: String,
    /// `yes` when the software licence check is done.
    pub licence_checked: String,
    /// What the licence check found.
    pub licence_notes: String,
    /// `YYYY-MM-DD` of the PAT check.
    pub pat_date: String,
    /// Notes.
    pub notes: String,
}

struct CheckedDisposal {
    disposal_date: Option<String>,
    disposed_by: i64,
    method: String,
    receiver_name: String,
    receiver_kind: String,
    receiver_registration: String,
    licence_checked: bool,
    licence_notes: String,
    pat_date: Option<String>,
    notes: String,
}

/// People who may do a disposal (enabled technicians and admins), by name.
pub async fn people(db: &Db) -> Result<Vec<User>> {
    Ok(accounts::list(db)
        .await?
        .into_iter()
        .filter(|u| !u.disabled && super::may_use_register(u))
        .collect())
}

async fn check_input(
    db: &Db,
    input: &DisposalInput,
    creator: &User,
) -> Result<std::result::Result<CheckedDisposal, Vec<FieldError>>> {
    let mut errors = Vec::new();
    let disposal_date = check_date(
        &mut errors,
        "disposal_date",
        "date of disposal",
        &input.disposal_date,
    );
    let disposed_by = if input.disposed_by.trim().is_empty() {
        Some(creator.clone())
    } else {
        accounts::by_email(db, input.disposed_by.trim()).await?
    };
    let disposed_by = match disposed_by {
        Some(u) if !u.disabled && super::may_use_register(&u) => u.id,
        _ => {
            errors.push(FieldError::new(
                "disposed_by",
                "Choose the person doing the disposal: a technician or admin.",
            ));
            0
        }
    };
    let method = if input.method.trim().is_empty() {
        String::new()
    } else {
        match Method::parse(&input.method) {
            Some(m) => m.as_str().to_string(),
            None => {
                errors.push(FieldError::new("method", "Choose how it is disposed of: waste or recycling, gift, sale or return to lessor."));
                String::new()
            }
        }
    };
    let receiver_name = check_text(
        &mut errors,
        "receiver_name",
        "receiver's name",
        &input.receiver_name,
        200,
        false,
    );
    let receiver_kind = match input.receiver_kind.trim() {
        "" => String::new(),
        k @ ("organisation" | "individual") => k.to_string(),
        _ => {
            errors.push(FieldError::new(
                "receiver_kind",
                "Say whether the receiver is an organisation or an individual.",
            ));
            String::new()
        }
    };
    let receiver_registration = check_text(
        &mut errors,
        "receiver_registration",
        "registration number",
        &input.receiver_registration,
        100,
        false,
    );
    let licence_checked = matches!(input.licence_checked.trim(), "yes" | "on" | "true" | "1");
    let licence_notes = check_text(
        &mut errors,
        "licence_notes",
        "licence check notes",
        &input.licence_notes,
        1000,
        false,
    );
    let pat_date = check_date(
        &mut errors,
        "pat_date",
        "date of the PAT check",
        &input.pat_date,
    );
    let notes = input.notes.trim().to_string();
    if notes.chars().count() > 2000 {
        errors.push(FieldError::new(
            "notes",
            "Notes must be at most 2000 characters.",
        ));
    } else if crate::text::unsafe_in_note(&notes) {
        errors.push(FieldError::new(
            "notes",
            format!("Notes {}.", crate::text::UNSAFE_TEXT),
        ));
    }
    if !errors.is_empty() {
        return Ok(Err(errors));
    }
    Ok(Ok(CheckedDisposal {
        disposal_date,
        disposed_by,
        method,
        receiver_name,
        receiver_kind,
        receiver_registration,
        licence_checked,
        licence_notes,
        pat_date,
        notes,
    }))
}

const COLUMNS: &str = "d.disposal_id, d.asset_id, d.corrects_id, d.correction_reason, d.state, d.disposal_date, d.disposed_by, d.method, \
    d.receiver_name, d.receiver_kind, d.receiver_registration, d.licence_checked, d.licence_notes, d.pat_date, d.notes, \
    d.authorised_by, d.authorised_at, d.completed_by, d.completed_at, d.created_by, d.created_at, \
    (select c.disposal_id from disposals c where c.corrects_id = d.disposal_id) as corrected_by";

fn row_to_disposal(row: &sqlx::any::AnyRow) -> Result<Disposal> {
    Ok(Disposal {
        id: row.try_get("disposal_id")?,
        asset_id: row.try_get("asset_id")?,
        corrects_id: opt_i64(row, "corrects_id")?,
        correction_reason: row.try_get("correction_reason")?,
        state: row.try_get("state")?,
        disposal_date: row.try_get("disposal_date")?,
        disposed_by: row.try_get("disposed_by")?,
        method: row.try_get("method")?,
        receiver_name: row.try_get("receiver_name")?,
        receiver_kind: row.try_get("receiver_kind")?,
        receiver_registration: row.try_get("receiver_registration")?,
        licence_checked: row.try_get::<i64, _>("licence_checked")? != 0,
        licence_notes: row.try_get("licence_notes")?,
        pat_date: row.try_get("pat_date")?,
        notes: row.try_get("notes")?,
        authorised_by: opt_i64(row, "authorised_by")?,
        authorised_at: opt_i64(row, "authorised_at")?,
        completed_by: opt_i64(row, "completed_by")?,
        completed_at: opt_i64(row, "completed_at")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        corrected_by: opt_i64(row, "corrected_by")?,
    })
}

/// One record by id.
pub async fn by_id(db: &Db, id: i64) -> Result<Option<Disposal>> {
    let row = sqlx::query(&format!(
        "select {COLUMNS} from disposals d where d.disposal_id = $1"
    ))
    .bind(id)
    .fetch_optional(db.pool())
    .await?;
    row.as_ref().map(row_to_disposal).transpose()
}

/// An asset's records, newest first.
pub async fn for_asset(db: &Db, asset_id: i64) -> Result<Vec<Disposal>> {
    let rows = sqlx::query(&format!(
        "select {COLUMNS} from disposals d where d.asset_id = $1 order by d.disposal_id desc"
    ))
    .bind(asset_id)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(row_to_disposal).collect()
}

/// Records, newest first: drafts only, completed only, or all (`state` "", "draft", "completed").
pub async fn list(db: &Db, state: &str, limit: i64) -> Result<Vec<Disposal>> {
    let rows = sqlx::query(&format!("select {COLUMNS} from disposals d where ($1 = '' or d.state = $1) order by d.disposal_id desc limit $2"))
        .bind(state)
        .bind(limit)
        .fetch_all(db.pool())
        .await?;
    rows.iter().map(row_to_disposal).collect()
}

/// Completed records whose disposal date is within `[from, to]` (`YYYY-MM-DD`), by date.
pub async fn completed_between(db: &Db, from: &str, to: &str) -> Result<Vec<Disposal>> {
    let rows = sqlx::query(&format!(
        "select {COLUMNS} from disposals d where d.state = 'completed' and d.disposal_date >= $1 and d.disposal_date <= $2 order by d.disposal_date, d.disposal_id"
    ))
    .bind(from)
    .bind(to)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(row_to_disposal).collect()
}

fn details(d: &CheckedDisposal) -> serde_json::Value {
    json!({
        "disposal_date": d.disposal_date, "disposed_by": d.disposed_by, "method": d.method,
        "receiver_name": d.receiver_name, "receiver_kind": d.receiver_kind,
        "receiver_registration": d.receiver_registration, "licence_checked": d.licence_checked,
        "licence_notes": d.licence_notes, "pat_date": d.pat_date,
    })
}

async fn insert(
    tx: &mut sqlx::AnyConnection,
    now: UnixTime,
    asset_id: i64,
    corrects: Option<(i64, &str)>,
    d: &CheckedDisposal,
    creator: &User,
) -> Result<i64> {
    let row = sqlx::query(
        "insert into disposals (asset_id, corrects_id, correction_reason, state, disposal_date, disposed_by, method, receiver_name, receiver_kind, \
         receiver_registration, licence_checked, licence_notes, pat_date, notes, created_by, created_at, updated_at) \
         values ($1, $2, $3, 'draft', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15) returning disposal_id",
    )
    .bind(asset_id)
    .bind(corrects.map(|c| c.0))
    .bind(corrects.map(|c| c.1.to_string()).unwrap_or_default())
    .bind(d.disposal_date.clone())
    .bind(d.disposed_by)
    .bind(&d.method)
    .bind(&d.receiver_name)
    .bind(&d.receiver_kind)
    .bind(&d.receiver_registration)
    .bind(i64::from(d.licence_checked))
    .bind(&d.licence_notes)
    .bind(d.pat_date.clone())
    .bind(&d.notes)
    .bind(creator.id)
    .bind(now)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            Error::BadInput("This record has already been corrected: correct the newest record instead.".into())
        } else {
            e.into()
        }
    })?;
    Ok(row.try_get("disposal_id")?)
}

/// Starts a disposal record for an asset (which then shows as awaiting disposal).
pub async fn create(
    db: &Db,
    now: UnixTime,
    actor: &Actor,
    creator: &User,
    asset: &Asset,
    input: &DisposalInput,
) -> Result<std::result::Result<i64, Vec<FieldError>>> {
    if asset.status == AssetStatus::Disposed {
        return Err(Error::BadInput(format!(
            "{} is already disposed; to change its record, correct the completed disposal record.",
            asset.tag
        )));
    }
    if let Some(open) = for_asset(db, asset.id)
        .await?
        .into_iter()
        .find(|d| !d.is_completed())
    {
        return Err(Error::BadInput(format!(
            "{} already has a disposal record in progress (number {}): continue that one.",
            asset.tag, open.id
        )));
    }
    let checked = match check_input(db, input, creator).await? {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let mut tx = db.begin().await?;
    let id = insert(&mut tx, now, asset.id, None, &checked, creator).await?;
    assets::set_status(&mut tx, now, asset.id, AssetStatus::AwaitingDisposal).await?;
    let mut d = details(&checked);
    d["disposal_id"] = json!(id);
    audit::append(&mut tx, now, actor, "disposal_created", &asset.tag, d).await?;
    tx.commit().await?;
    Ok(Ok(id))
}

/// Changes a record that is not completed. Changing the person doing the disposal withdraws
/// an authorisation (the authoriser may now be that person).
pub async fn update(
    db: &Db,
    now: UnixTime,
    actor: &Actor,
    editor: &User,
    id: i64,
    input: &DisposalInput,
) -> Result<std::result::Result<(), Vec<FieldError>>> {
    let current = by_id(db, id).await?.ok_or(Error::NotFound)?;
    if current.is_completed() {
        return Err(Error::BadInput(
            "This disposal record is completed and read-only. To change it, make a correction."
                .into(),
        ));
    }
    let checked = match check_input(db, input, editor).await? {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let asset = assets::by_id(db, current.asset_id)
        .await?
        .ok_or(Error::NotFound)?;
    let keep_authorisation = checked.disposed_by == current.disposed_by;
    let mut tx = db.begin().await?;
    let done = sqlx::query(
        "update disposals set disposal_date = $1, disposed_by = $2, method = $3, receiver_name = $4, receiver_kind = $5, \
         receiver_registration = $6, licence_checked = $7, licence_notes = $8, pat_date = $9, notes = $10, updated_at = $11, \
         authorised_by = case when $12 = 1 then authorised_by else null end, \
         authorised_at = case when $12 = 1 then authorised_at else null end \
         where disposal_id = $13 and state = 'draft'",
    )
    .bind(checked.disposal_date.clone())
    .bind(checked.disposed_by)
    .bind(&checked.method)
    .bind(&checked.receiver_name)
    .bind(&checked.receiver_kind)
    .bind(&checked.receiver_registration)
    .bind(i64::from(checked.licence_checked))
    .bind(&checked.licence_notes)
    .bind(checked.pat_date.clone())
    .bind(&checked.notes)
    .bind(now)
    .bind(i64::from(keep_authorisation))
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() != 1 {
        return Err(Error::BadInput(
            "This disposal record was completed meanwhile and is read-only.".into(),
        ));
    }
    let mut d = details(&checked);
    d["disposal_id"] = json!(id);
    d["authorisation_withdrawn"] = json!(!keep_authorisation && current.authorised_by.is_some());
    audit::append(&mut tx, now, actor, "disposal_updated", &asset.tag, d).await?;
    tx.commit().await?;
    Ok(Ok(()))
}

/// An admin authorises a disposal. The admin must not be the person doing the disposal.
pub async fn authorise(db: &Db, now: UnixTime, actor: &Actor, admin: &User, id: i64) -> Result<()> {
    if !admin.has(Role::Admin) {
        return Err(Error::Forbidden);
    }
    let d = by_id(db, id).await?.ok_or(Error::NotFound)?;
    if d.is_completed() {
        return Err(Error::BadInput(
            "This disposal record is completed and read-only.".into(),
        ));
    }
    if d.disposed_by == admin.id {
        return Err(Error::BadInput(
            "You are recorded as the person doing this disposal, so you cannot authorise it: another admin must.".into(),
        ));
    }
    if d.authorised_by.is_some() {
        return Err(Error::BadInput(
            "This disposal is already authorised.".into(),
        ));
    }
    let asset = assets::by_id(db, d.asset_id)
        .await?
        .ok_or(Error::NotFound)?;
    let mut tx = db.begin().await?;
    let done = sqlx::query(
        "update disposals set authorised_by = $1, authorised_at = $2, updated_at = $2 where disposal_id = $3 and state = 'draft' and authorised_by is null and disposed_by <> $1",
    )
    .bind(admin.id)
    .bind(now)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() != 1 {
        return Err(Error::BadInput(
            "The record changed meanwhile: reload the page and check it again.".into(),
        ));
    }
    audit::append(
        &mut tx,
        now,
        actor,
        "disposal_authorised",
        &asset.tag,
        json!({ "disposal_id": id, "disposed_by": d.disposed_by }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Each storage medium of an asset with its evidence (now, or as frozen at completion).
pub async fn evidence(
    db: &Db,
    d: &Disposal,
    asset: &Asset,
) -> Result<Vec<(assets::Medium, Option<Evidence>)>> {
    let mut out = Vec::new();
    if d.is_completed() {
        let rows = sqlx::query("select medium_id, cert_row_id, destruction_id from disposal_evidence where disposal_id = $1")
            .bind(d.id)
            .fetch_all(db.pool())
            .await?;
        for row in rows {
            let medium_id: i64 = row.try_get("medium_id")?;
            let Some(m) = assets::medium(db, medium_id).await? else {
                continue;
            };
            let e = certificates::evidence_from_ids(
                db,
                opt_i64(&row, "cert_row_id")?,
                opt_i64(&row, "destruction_id")?,
            )
            .await?;
            out.push((m, e));
        }
    } else {
        for m in &asset.media {
            out.push((m.clone(), certificates::evidence_for(db, m.id).await?));
        }
    }
    Ok(out)
}

/// What still stands in the way of completing a record, in words (empty: it can complete).
pub async fn completion_problems(
    db: &Db,
    d: &Disposal,
    asset: &Asset,
    now: UnixTime,
) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    if d.is_completed() {
        problems.push("The record is already completed.".into());
        return Ok(problems);
    }
    if asset.status == AssetStatus::Disposed && d.corrects_id.is_none() {
        problems.push(format!("{} is already disposed.", asset.tag));
    }
    match &d.disposal_date {
        None => problems.push("Enter the date of disposal.".into()),
        Some(date) if date.as_str() > date_of(now).as_str() => problems.push(
            "The date of disposal is in the future: complete the record on or after that day."
                .into(),
        ),
        Some(_) => {}
    }
    match d.authorised_by {
        None => problems
            .push("An admin who is not the person doing the disposal must authorise it.".into()),
        Some(a) if a == d.disposed_by => problems.push(
            "The disposal was authorised by the person doing it: another admin must authorise it."
                .into(),
        ),
        Some(_) => {}
    }
    if !d.licence_checked {
        problems.push(
            "Confirm that the software licence check is done (licences removed or transferred)."
                .into(),
        );
    }
    let method = Method::parse(&d.method);
    match method {
        None => problems.push("Choose how it is disposed of.".into()),
        Some(m) => {
            if d.receiver_name.trim().is_empty() {
                problems.push("Enter the person or organisation who received it.".into());
            }
            let organisation = d.receiver_kind == "organisation";
            match m {
                Method::WasteRecycling | Method::ReturnToLessor => {
                    if !organisation {
                        problems.push(format!(
                            "{} goes to an organisation: set the receiver to an organisation.",
                            m.label()
                        ));
                    }
                }
                Method::Gift | Method::Sale => {
                    if d.receiver_kind.is_empty() {
                        problems.push(
                            "Say whether the receiver is an organisation or an individual.".into(),
                        );
                    }
                }
            }
            if organisation && d.receiver_registration.trim().is_empty() {
                problems.push(match m {
                    Method::WasteRecycling => "Enter the receiver's waste carrier registration number (for example CBDU123456).".to_string(),
                    _ => "Enter the receiving organisation's company or charity registration number.".to_string(),
                });
            }
            if m.needs_pat() {
                match (&d.pat_date, &d.disposal_date) {
                    (None, _) => problems.push(format!(
                        "A {} needs a recent electrical safety (PAT) check: enter its date.",
                        m.label().to_lowercase()
                    )),
                    (Some(pat), Some(date)) => {
                        let (p, t) = (parse_date(pat).unwrap_or(0), parse_date(date).unwrap_or(0));
                        if p > t {
                            problems
                                .push("The PAT check date is after the date of disposal.".into());
                        } else if t - p > PAT_RECENT_DAYS * 86_400 {
                            problems.push(format!("The PAT check is more than {PAT_RECENT_DAYS} days before the disposal: test it again."));
                        }
                    }
                    (Some(_), None) => {}
                }
            }
        }
    }
    if asset.media.is_empty() && asset.kind.has_storage() {
        problems.push(format!(
            "Record the storage media of {} (each needs evidence) before completing.",
            asset.tag
        ));
    }
    for (m, e) in evidence(db, d, asset).await? {
        if e.is_none() {
            problems.push(format!(
                "Storage medium {} has no evidence: upload a verified wipe certificate showing ERASED, or record its destruction with the contractor's certificate.",
                m.serial
            ));
        }
    }
    Ok(problems)
}

/// Why someone other than the person doing the disposal may not complete it.
pub const ONLY_DISPOSER_COMPLETES: &str = "Only the person doing the disposal can complete the \
    record: completing it is their confirmation that it was done as recorded. Ask them to sign \
    in and complete it, or change the person doing the disposal (that withdraws the \
    authorisation).";

/// Completes a record when nothing stands in the way: freezes the evidence, marks the asset
/// disposed, and makes the record read-only. Returns the problems otherwise. Four eyes: only
/// the person doing the disposal (a real account) completes it, confirming their part, and the
/// authorising admin must be someone else, so no one person can dispose of an asset alone.
pub async fn complete(
    db: &Db,
    now: UnixTime,
    actor: &Actor,
    user: &User,
    id: i64,
) -> Result<std::result::Result<(), Vec<String>>> {
    let d = by_id(db, id).await?.ok_or(Error::NotFound)?;
    let asset = assets::by_id(db, d.asset_id)
        .await?
        .ok_or(Error::NotFound)?;
    let mut problems = completion_problems(db, &d, &asset, now).await?;
    if d.disposed_by != user.id && !d.is_completed() {
        problems.insert(0, ONLY_DISPOSER_COMPLETES.into());
    }
    if !problems.is_empty() {
        return Ok(Err(problems));
    }
    let evidence = evidence(db, &d, &asset).await?;
    let mut tx = db.begin().await?;
    let done = sqlx::query("update disposals set state = 'completed', completed_by = $1, completed_at = $2, updated_at = $2 where disposal_id = $3 and state = 'draft' and authorised_by is not null and disposed_by = $1 and authorised_by <> $1")
        .bind(user.id)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() != 1 {
        return Ok(Err(vec![
            "The record changed meanwhile: reload the page and check it again.".into(),
        ]));
    }
    let mut frozen = Vec::new();
    for (m, e) in &evidence {
        let (cert, destruction) = match e {
            Some(Evidence::Certificate(c)) => (Some(c.id), None),
            Some(Evidence::Destruction(x)) => (None, Some(x.id)),
            None => (None, None),
        };
        sqlx::query("insert into disposal_evidence (disposal_id, medium_id, cert_row_id, destruction_id) values ($1, $2, $3, $4)")
            .bind(id)
            .bind(m.id)
            .bind(cert)
            .bind(destruction)
            .execute(&mut *tx)
            .await?;
        frozen.push(json!({ "medium": m.serial, "evidence": e.as_ref().map(Evidence::describe) }));
    }
    assets::set_status(&mut tx, now, asset.id, AssetStatus::Disposed).await?;
    audit::append(
        &mut tx,
        now,
        actor,
        "disposal_completed",
        &asset.tag,
        json!({ "disposal_id": id, "corrects": d.corrects_id, "evidence": frozen, "authorised_by": d.authorised_by, "disposed_by": d.disposed_by }),
    )
    .await?;
    tx.commit().await?;
    Ok(Ok(()))
}

/// Starts a correction of a completed record: a new draft that references it, with the same
/// facts to edit, needing authorisation and completion again.
pub async fn correct(
    db: &Db,
    now: UnixTime,
    actor: &Actor,
    user: &User,
    id: i64,
    reason: &str,
) -> Result<std::result::Result<i64, Vec<FieldError>>> {
    let d = by_id(db, id).await?.ok_or(Error::NotFound)?;
    if !d.is_completed() {
        return Err(Error::BadInput(
            "Only a completed record is corrected; this one can still be edited.".into(),
        ));
    }
    if let Some(newer) = d.corrected_by {
        return Err(Error::BadInput(format!(
            "This record has already been corrected by record {newer}: correct that one instead."
        )));
    }
    let mut errors = Vec::new();
    let reason = check_text(
        &mut errors,
        "reason",
        "reason for the correction",
        reason,
        1000,
        true,
    );
    if !errors.is_empty() {
        return Ok(Err(errors));
    }
    let asset = assets::by_id(db, d.asset_id)
        .await?
        .ok_or(Error::NotFound)?;
    let checked = CheckedDisposal {
        disposal_date: d.disposal_date.clone(),
        disposed_by: d.disposed_by,
        method: d.method.clone(),
        receiver_name: d.receiver_name.clone(),
        receiver_kind: d.receiver_kind.clone(),
        receiver_registration: d.receiver_registration.clone(),
        licence_checked: d.licence_checked,
        licence_notes: d.licence_notes.clone(),
        pat_date: d.pat_date.clone(),
        notes: d.notes.clone(),
    };
    let mut tx = db.begin().await?;
    let new_id = insert(
        &mut tx,
        now,
        d.asset_id,
        Some((d.id, &reason)),
        &checked,
        user,
    )
    .await?;
    audit::append(
        &mut tx,
        now,
        actor,
        "disposal_correction_started",
        &asset.tag,
        json!({ "disposal_id": new_id, "corrects": d.id, "reason": reason }),
    )
    .await?;
    tx.commit().await?;
    Ok(Ok(new_id))
}

/// Deletes a record that is not completed (a mistake); the asset goes back to "in use" when it
/// has no completed record.
pub async fn withdraw(db: &Db, now: UnixTime, actor: &Actor, id: i64) -> Result<()> {
    let d = by_id(db, id).await?.ok_or(Error::NotFound)?;
    if d.is_completed() {
        return Err(Error::BadInput(
            "A completed disposal record cannot be withdrawn; make a correction instead.".into(),
        ));
    }
    let asset = assets::by_id(db, d.asset_id)
        .await?
        .ok_or(Error::NotFound)?;
    let mut tx = db.begin().await?;
    sqlx::query("delete from disposals where disposal_id = $1 and state = 'draft'")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if d.corrects_id.is_none() {
        assets::set_status(&mut tx, now, asset.id, AssetStatus::InUse).await?;
    }
    audit::append(
        &mut tx,
        now,
        actor,
        "disposal_withdrawn",
        &asset.tag,
        json!({ "disposal_id": id }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
