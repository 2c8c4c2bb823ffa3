//! Assets (a laptop, a disk, a phone...) and the storage media inside them, each with its
//! serial number. Create, edit, search and filter; import a school's spreadsheet as CSV (all
//! rows or none) and export the register in the same columns.

use super::{check_date, check_text, serial_key, FieldError};
use crate::audit::{self, Actor};
use crate::clock::UnixTime;
use crate::db::{is_unique_violation, Db};
use crate::error::{Error, Result};
use serde_json::json;
use sqlx::Row;

/// What kind of equipment an asset is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssetKind {
    /// A laptop.
    Laptop,
    /// A desktop computer.
    Desktop,
    /// A server.
    Server,
    /// A loose disk (hard disk or SSD).
    Disk,
    /// A USB stick or memory card.
    UsbStick,
    /// A phone.
    Phone,
    /// A tablet.
    Tablet,
    /// Anything else (printer, network storage, camera...).
    Other,
}

impl AssetKind {
    /// Every kind, in the order forms list them.
    pub const ALL: [AssetKind; 8] = [
        AssetKind::Laptop,
        AssetKind::Desktop,
        AssetKind::Server,
        AssetKind::Disk,
        AssetKind::UsbStick,
        AssetKind::Phone,
        AssetKind::Tablet,
        AssetKind::Other,
    ];

    /// The stored and exported name.
    pub fn as_str(self) -> &'static str {
        match self {
            AssetKind::Laptop => "laptop",
            AssetKind::Desktop => "desktop",
            AssetKind::Server => "server",
            AssetKind::Disk => "disk",
            AssetKind::UsbStick => "usb-stick",
            AssetKind::Phone => "phone",
            AssetKind::Tablet => "tablet",
            AssetKind::Other => "other",
        }
    }

    /// The name people read.
    pub fn label(self) -> &'static str {
        match self {
            AssetKind::Laptop => "Laptop",
            AssetKind::Desktop => "Desktop",
            AssetKind::Server => "Server",
            AssetKind::Disk => "Disk",
            AssetKind::UsbStick => "USB stick",
            AssetKind::Phone => "Phone",
            AssetKind::Tablet => "Tablet",
            AssetKind::Other => "Other",
        }
    }

    /// Reads a kind as people write it ("USB stick", "usb-stick", "Laptop").
    pub fn parse(s: &str) -> Option<Self> {
        let s: String = s
            .trim()
            .to_lowercase()
            .chars()
            .map(|c| if c == ' ' || c == '_' { '-' } else { c })
            .collect();
        let s = if s == "usb" {
            "usb-stick".to_string()
        } else {
            s
        };
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether this kind of equipment always has storage (so a record must list it).
    pub fn has_storage(self) -> bool {
        self != AssetKind::Other
    }
}

/// Where an asset is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssetStatus {
    /// In use.
    InUse,
    /// Retired, waiting for its disposal to be completed.
    AwaitingDisposal,
    /// Disposed of: its disposal record is completed.
    Disposed,
}

impl AssetStatus {
    /// Every status.
    pub const ALL: [AssetStatus; 3] = [
        AssetStatus::InUse,
        AssetStatus::AwaitingDisposal,
        AssetStatus::Disposed,
    ];

    /// The stored and exported name.
    pub fn as_str(self) -> &'static str {
        match self {
            AssetStatus::InUse => "in-use",
            AssetStatus::AwaitingDisposal => "awaiting-disposal",
            AssetStatus::Disposed => "disposed",
        }
    }

    /// The name people read.
    pub fn label(self) -> &'static str {
        match self {
            AssetStatus::InUse => "In use",
            AssetStatus::AwaitingDisposal => "Awaiting disposal",
            AssetStatus::Disposed => "Disposed",
        }
    }

    /// Reads a status as people write it ("In use", "in-use", "awaiting disposal").
    pub fn parse(s: &str) -> Option<Self> {
        let s: String = s
            .trim()
            .to_lowercase()
            .chars()
            .map(|c| if c == ' ' || c == '_' { '-' } else { c })
            .collect();
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A storage medium inside an asset.
#[derive(Clone, Debug)]
pub struct Medium {
    /// Id.
    pub id: i64,
    /// The asset it belongs to.
    pub asset_id: i64,
    /// Serial number as recorded.
    pub serial: String,
    /// What it is ("256 GB NVMe SSD").
    pub description: String,
}

impl Medium {
    /// The serial with its description, as forms and exports write it.
    pub fn display(&self) -> String {
        if self.description.is_empty() {
            self.serial.clone()
        } else {
            format!("{} ({})", self.serial, self.description)
        }
    }
}

/// One asset.
#[derive(Clone, Debug)]
pub struct Asset {
    /// Id.
    pub id: i64,
    /// Asset tag (unique, compared without regard to case).
    pub tag: String,
    /// Kind of equipment.
    pub kind: AssetKind,
    /// Make.
    pub make: String,
    /// Model.
    pub model: String,
    /// The device's own serial number.
    pub serial: String,
    /// Where it is.
    pub location: String,
    /// Who it is assigned to.
    pub assigned_to: String,
    /// Purchase date (`YYYY-MM-DD`).
    pub purchase_date: Option<String>,
    /// Whether it may hold personal data.
    pub personal_data: bool,
    /// Where it is in its life.
    pub status: AssetStatus,
    /// Free notes.
    pub notes: String,
    /// Created.
    pub created_at: UnixTime,
    /// Last changed.
    pub updated_at: UnixTime,
    /// Its storage media, in the order recorded.
    pub media: Vec<Medium>,
}

impl Asset {
    /// The storage media as one line per medium (the form's text area).
    pub fn media_text(&self, separator: &str) -> String {
        self.media
            .iter()
            .map(Medium::display)
            .collect::<Vec<_>>()
            .join(separator)
    }

    /// The form's fields filled from this asset (to edit it).
    pub fn to_input(&self) -> AssetInput {
        AssetInput {
            tag: self.tag.clone(),
            kind: self.kind.as_str().into(),
            make: self.make.clone(),
            model: self.model.clone(),
            serial: self.serial.clone(),
            location: self.location.clone(),
            assigned_to: self.assigned_to.clone(),
            purchase_date: self.purchase_date.clone().unwrap_or_default(),
            personal_data: if self.personal_data { "yes" } else { "no" }.into(),
            status: self.status.as_str().into(),
            storage_media: self.media_text("\n"),
            notes: self.notes.clone(),
        }
    }
}

/// An asset as typed into the form, an import row or the API (all text, checked by
/// [`AssetInput::check`]).
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct AssetInput {
    /// Asset tag.
    pub tag: String,
    /// Kind (see [`AssetKind::parse`]).
    pub kind: String,
    /// Make.
    pub make: String,
    /// Model.
    pub model: String,
    /// Device serial number.
    pub serial: String,
    /// Location.
    pub location: String,
    /// Assigned person.
    pub assigned_to: String,
    /// Purchase date, `YYYY-MM-DD` or empty.
    pub purchase_date: String,
    /// `yes` or `no`.
    pub personal_data: String,
    /// Status (see [`AssetStatus::parse`]); empty means in use.
    pub status: String,
    /// Storage media: one per line (or separated by `;`), each `SERIAL` or
    /// `SERIAL (description)`.
    pub storage_media: String,
    /// Notes.
    pub notes: String,
}

/// A checked medium: serial, its match key, description.
#[derive(Clone, Debug)]
pub(crate) struct MediumInput {
    pub serial: String,
    pub key: String,
    pub description: String,
}

/// An [`AssetInput`] that passed [`AssetInput::check`].
#[derive(Clone, Debug)]
pub struct CheckedAsset {
    tag: String,
    kind: AssetKind,
    make: String,
    model: String,
    serial: String,
    location: String,
    assigned_to: String,
    purchase_date: Option<String>,
    personal_data: bool,
    status: AssetStatus,
    media: Vec<MediumInput>,
    notes: String,
}

/// Reads `yes`/`no` as people and spreadsheets write it.
fn parse_yes_no(s: &str) -> Option<bool> {
    match s.trim().to_lowercase().as_str() {
        "yes" | "y" | "true" | "1" => Some(true),
        "no" | "n" | "false" | "0" => Some(false),
        _ => None,
    }
}

/// Splits the storage-media text into media.
fn parse_media(text: &str, errors: &mut Vec<FieldError>) -> Vec<MediumInput> {
    let mut media: Vec<MediumInput> = Vec::new();
    for item in text.split(['\n', ';']) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (serial, description) = match (item.ends_with(')'), item.find(" (")) {
            (true, Some(at)) => (item[..at].trim(), item[at + 2..item.len() - 1].trim()),
            _ => (item, ""),
        };
        if serial.is_empty() || serial.chars().count() > 100 || serial.chars().any(char::is_control)
        {
            errors.push(FieldError::new(
                "storage_media",
                format!("`{item}` is not a serial number: write each medium as its serial, optionally followed by a description in brackets, like `S4EWNX0N123456 (256 GB SSD)`."),
            ));
            continue;
        }
        if description.chars().count() > 200 {
            errors.push(FieldError::new(
                "storage_media",
                "A storage medium's description must be at most 200 characters.",
            ));
            continue;
        }
        let key = serial_key(serial);
        if media.iter().any(|m| m.key == key) {
            errors.push(FieldError::new(
                "storage_media",
                format!("The storage medium serial `{serial}` is listed twice."),
            ));
            continue;
        }
        media.push(MediumInput {
            serial: serial.to_string(),
            key,
            description: description.to_string(),
        });
    }
    if media.len() > 50 {
        errors.push(FieldError::new(
            "storage_media",
            "An asset can have at most 50 storage media.",
        ));
    }
    media
}

impl AssetInput {
    /// Checks every field; returns the checked asset or every problem found.
    pub fn check(&self) -> std::result::Result<CheckedAsset, Vec<FieldError>> {
        let mut errors = Vec::new();
        let tag = check_text(&mut errors, "tag", "asset tag", &self.tag, 64, true);
        let kind = AssetKind::parse(&self.kind);
        if kind.is_none() {
            errors.push(FieldError::new(
                "kind",
                "Choose the kind: laptop, desktop, server, disk, USB stick, phone, tablet or other.",
            ));
        }
        let make = check_text(&mut errors, "make", "make", &self.make, 100, false);
        let model = check_text(&mut errors, "model", "model", &self.model, 100, false);
        let serial = check_text(
            &mut errors,
            "serial",
            "serial number",
            &self.serial,
            100,
            false,
        );
        let location = check_text(
            &mut errors,
            "location",
            "location",
            &self.location,
            200,
            false,
        );
        let assigned_to = check_text(
            &mut errors,
            "assigned_to",
            "assigned person",
            &self.assigned_to,
            200,
            false,
        );
        let purchase_date = check_date(
            &mut errors,
            "purchase_date",
            "purchase date",
            &self.purchase_date,
        );
        let personal_data = parse_yes_no(&self.personal_data);
        if personal_data.is_none() {
            errors.push(FieldError::new(
                "personal_data",
                "Say whether it may hold personal data: yes or no.",
            ));
        }
        let status = if self.status.trim().is_empty() {
            Some(AssetStatus::InUse)
        } else {
            AssetStatus::parse(&self.status)
        };
        match status {
            None => errors.push(FieldError::new(
                "status",
                "Choose the status: in use or awaiting disposal.",
            )),
            Some(AssetStatus::Disposed) => errors.push(FieldError::new(
                "status",
                "An asset becomes disposed only when its disposal record is completed: choose in use or awaiting disposal, then record the disposal.",
            )),
            Some(_) => {}
        }
        let media = parse_media(&self.storage_media, &mut errors);
        if let Some(k) = kind {
            if k.has_storage()
                && media.is_empty()
                && errors.iter().all(|e| e.field != "storage_media")
            {
                errors.push(FieldError::new(
                    "storage_media",
                    format!("Enter the serial number of each storage medium in this {}: its disposal needs evidence for each one.", k.label().to_lowercase()),
                ));
            }
        }
        let notes = self.notes.trim().to_string();
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
        match (kind, personal_data, status) {
            (Some(kind), Some(personal_data), Some(status)) if errors.is_empty() => {
                Ok(CheckedAsset {
                    tag,
                    kind,
                    make,
                    model,
                    serial,
                    location,
                    assigned_to,
                    purchase_date,
                    personal_data,
                    status,
                    media,
                    notes,
                })
            }
            _ => Err(errors),
        }
    }
}

const ASSET_COLUMNS: &str = "asset_id, tag, kind, make, model, serial, location, assigned_to, purchase_date, personal_data, status, notes, created_at, updated_at";

fn row_to_asset(row: &sqlx::any::AnyRow) -> Result<Asset> {
    Ok(Asset {
        id: row.try_get("asset_id")?,
        tag: row.try_get("tag")?,
        kind: AssetKind::parse(&row.try_get::<String, _>("kind")?).unwrap_or(AssetKind::Other),
        make: row.try_get("make")?,
        model: row.try_get("model")?,
        serial: row.try_get("serial")?,
        location: row.try_get("location")?,
        assigned_to: row.try_get("assigned_to")?,
        purchase_date: row.try_get("purchase_date")?,
        personal_data: row.try_get::<i64, _>("personal_data")? != 0,
        status: AssetStatus::parse(&row.try_get::<String, _>("status")?)
            .unwrap_or(AssetStatus::InUse),
        notes: row.try_get("notes")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        media: Vec::new(),
    })
}

pub(crate) fn row_to_medium(row: &sqlx::any::AnyRow) -> Result<Medium> {
    Ok(Medium {
        id: row.try_get("medium_id")?,
        asset_id: row.try_get("asset_id")?,
        serial: row.try_get("serial")?,
        description: row.try_get("description")?,
    })
}

async fn media_of(db: &Db, asset_id: i64) -> Result<Vec<Medium>> {
    let rows = sqlx::query(
        "select medium_id, asset_id, serial, description from storage_media where asset_id = $1 order by position, medium_id",
    )
    .bind(asset_id)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(row_to_medium).collect()
}

/// One asset by id, with its media.
pub async fn by_id(db: &Db, id: i64) -> Result<Option<Asset>> {
    let row = sqlx::query(&format!(
        "select {ASSET_COLUMNS} from assets where asset_id = $1"
    ))
    .bind(id)
    .fetch_optional(db.pool())
    .await?;
    let Some(row) = row else { return Ok(None) };
    let mut asset = row_to_asset(&row)?;
    asset.media = media_of(db, asset.id).await?;
    Ok(Some(asset))
}

/// One asset by tag (any case), with its media.
pub async fn by_tag(db: &Db, tag: &str) -> Result<Option<Asset>> {
    let row = sqlx::query("select asset_id from assets where tag_key = $1")
        .bind(tag.trim().to_lowercase())
        .fetch_optional(db.pool())
        .await?;
    match row {
        Some(r) => by_id(db, r.try_get("asset_id")?).await,
        None => Ok(None),
    }
}

/// One storage medium by id.
pub async fn medium(db: &Db, id: i64) -> Result<Option<Medium>> {
    let row = sqlx::query(
        "select medium_id, asset_id, serial, description from storage_media where medium_id = $1",
    )
    .bind(id)
    .fetch_optional(db.pool())
    .await?;
    row.as_ref().map(row_to_medium).transpose()
}

/// The medium with this serial (compared as [`serial_key`]), if any.
pub async fn medium_by_serial(db: &Db, serial: &str) -> Result<Option<Medium>> {
    let key = serial_key(serial);
    if key.is_empty() {
        return Ok(None);
    }
    let row = sqlx::query(
        "select medium_id, asset_id, serial, description from storage_media where serial_key = $1",
    )
    .bind(key)
    .fetch_optional(db.pool())
    .await?;
    row.as_ref().map(row_to_medium).transpose()
}

/// Register-wide problems with a checked asset: its tag or a medium's serial already used by
/// another asset.
pub async fn conflicts(
    db: &Db,
    asset: &CheckedAsset,
    editing: Option<i64>,
) -> Result<Vec<FieldError>> {
    let mut errors = Vec::new();
    if let Some(other) = by_tag(db, &asset.tag).await? {
        if Some(other.id) != editing {
            errors.push(FieldError::new(
                "tag",
                format!("The asset tag {} is already in the register.", other.tag),
            ));
        }
    }
    for m in &asset.media {
        if let Some(other) = medium_by_serial(db, &m.serial).await? {
            if Some(other.asset_id) != editing {
                let tag = by_id(db, other.asset_id)
                    .await?
                    .map(|a| a.tag)
                    .unwrap_or_default();
                errors.push(FieldError::new(
                    "storage_media",
                    format!(
                        "The storage medium serial {} is already recorded in asset {tag}.",
                        m.serial
                    ),
                ));
            }
        }
    }
    Ok(errors)
}

fn unique_conflict(e: sqlx::Error) -> Error {
    if is_unique_violation(&e) {
        Error::BadInput(
            "Another change used the same asset tag or storage medium serial at the same moment. Reload and try again.".into(),
        )
    } else {
        e.into()
    }
}

async fn insert_asset(
    tx: &mut sqlx::AnyConnection,
    now: UnixTime,
    a: &CheckedAsset,
) -> Result<i64> {
    let row = sqlx::query(
        "insert into assets (tag, tag_key, kind, make, model, serial, location, assigned_to, purchase_date, personal_data, status, notes, created_at, updated_at) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13) returning asset_id",
    )
    .bind(&a.tag)
    .bind(a.tag.to_lowercase())
    .bind(a.kind.as_str())
    .bind(&a.make)
    .bind(&a.model)
    .bind(&a.serial)
    .bind(&a.location)
    .bind(&a.assigned_to)
    .bind(a.purchase_date.clone())
    .bind(i64::from(a.personal_data))
    .bind(a.status.as_str())
    .bind(&a.notes)
    .bind(now)
    .fetch_one(&mut *tx)
    .await
    .map_err(unique_conflict)?;
    let id: i64 = row.try_get("asset_id")?;
    for (position, m) in a.media.iter().enumerate() {
        sqlx::query(
            "insert into storage_media (asset_id, serial, serial_key, description, position) values ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(&m.serial)
        .bind(&m.key)
        .bind(&m.description)
        .bind(position as i64)
        .execute(&mut *tx)
        .await
        .map_err(unique_conflict)?;
    }
    Ok(id)
}

fn audit_details(a: &CheckedAsset) -> serde_json::Value {
    json!({
        "tag": a.tag, "kind": a.kind.as_str(), "make": a.make, "model": a.model, "serial": a.serial,
        "location": a.location, "assigned_to": a.assigned_to, "purchase_date": a.purchase_date,
        "personal_data": a.personal_data, "status": a.status.as_str(),
        "storage_media": a.media.iter().map(|m| m.serial.clone()).collect::<Vec<_>>(),
    })
}

/// Adds an asset (checked with [`AssetInput::check`] and [`conflicts`]).
pub async fn create(db: &Db, now: UnixTime, actor: &Actor, asset: &CheckedAsset) -> Result<i64> {
    let mut tx = db.begin().await?;
    let id = insert_asset(&mut tx, now, asset).await?;
    audit::append(
        &mut tx,
        now,
        actor,
        "asset_created",
        &asset.tag,
        audit_details(asset),
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// Whether a medium has evidence or certificates attached (then it cannot be removed).
async fn medium_in_use(tx: &mut sqlx::AnyConnection, medium_id: i64) -> Result<bool> {
    let row = sqlx::query(
        "select (select count(*) from wipe_certificates where medium_id = $1) \
              + (select count(*) from destructions where medium_id = $1) \
              + (select count(*) from disposal_evidence where medium_id = $1) as n",
    )
    .bind(medium_id)
    .fetch_one(&mut *tx)
    .await?;
    Ok(row.try_get::<i64, _>("n")? > 0)
}

/// Changes an asset. A disposed asset is read-only. Media are matched by serial: new serials
/// are added, missing ones removed (refused when certificates or destructions are attached).
pub async fn update(
    db: &Db,
    now: UnixTime,
    actor: &Actor,
    id: i64,
    asset: &CheckedAsset,
) -> Result<()> {
    let current = by_id(db, id).await?.ok_or(Error::NotFound)?;
    if current.status == AssetStatus::Disposed {
        return Err(Error::BadInput(format!(
            "{} is disposed: its record is read-only. Correct its disposal record instead.",
            current.tag
        )));
    }
    let mut tx = db.begin().await?;
    sqlx::query(
        "update assets set tag = $1, tag_key = $2, kind = $3, make = $4, model = $5, serial = $6, location = $7, \
         assigned_to = $8, purchase_date = $9, personal_data = $10, status = $11, notes = $12, updated_at = $13 \
         where asset_id = $14 and status <> 'disposed'",
    )
    .bind(&asset.tag)
    .bind(asset.tag.to_lowercase())
    .bind(asset.kind.as_str())
    .bind(&asset.make)
    .bind(&asset.model)
    .bind(&asset.serial)
    .bind(&asset.location)
    .bind(&asset.assigned_to)
    .bind(asset.purchase_date.clone())
    .bind(i64::from(asset.personal_data))
    .bind(asset.status.as_str())
    .bind(&asset.notes)
    .bind(now)
    .bind(id)
    .execute(&mut *tx)
    .await
    .map_err(unique_conflict)?;
    for old in &current.media {
        if !asset.media.iter().any(|m| m.key == serial_key(&old.serial)) {
            if medium_in_use(&mut tx, old.id).await? {
                return Err(Error::BadInput(format!(
                    "The storage medium {} has certificates or a destruction recorded, so it cannot be removed from {}.",
                    old.serial, current.tag
                )));
            }
            sqlx::query("delete from storage_media where medium_id = $1")
                .bind(old.id)
                .execute(&mut *tx)
                .await?;
        }
    }
    for (position, m) in asset.media.iter().enumerate() {
        let existing = current
            .media
            .iter()
            .find(|old| serial_key(&old.serial) == m.key);
        match existing {
            Some(old) => {
                sqlx::query(
                    "update storage_media set serial = $1, description = $2, position = $3 where medium_id = $4",
                )
                .bind(&m.serial)
                .bind(&m.description)
                .bind(position as i64)
                .bind(old.id)
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query(
                    "insert into storage_media (asset_id, serial, serial_key, description, position) values ($1, $2, $3, $4, $5)",
                )
                .bind(id)
                .bind(&m.serial)
                .bind(&m.key)
                .bind(&m.description)
                .bind(position as i64)
                .execute(&mut *tx)
                .await
                .map_err(unique_conflict)?;
            }
        }
    }
    audit::append(
        &mut tx,
        now,
        actor,
        "asset_updated",
        &asset.tag,
        audit_details(asset),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Search and filters for the asset list.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct Filter {
    /// Text found in the tag, make, model, serials, location or assigned person.
    pub q: String,
    /// Kind (`laptop`...), or empty for all.
    pub kind: String,
    /// Status (`in-use`...), or empty for all.
    pub status: String,
    /// Only assets that may hold personal data (`yes`), or that may not (`no`).
    pub personal_data: String,
}

/// Assets matching `filter`, by tag, at most `limit`.
pub async fn search(db: &Db, filter: &Filter, limit: i64) -> Result<Vec<Asset>> {
    let q = filter.q.trim().to_lowercase().replace(['%', '_', '\\'], "");
    let like = format!("%{q}%");
    let serial_like = format!("%{}%", serial_key(&q).replace(['%', '_', '\\'], ""));
    let kind = AssetKind::parse(&filter.kind)
        .map(|k| k.as_str())
        .unwrap_or("");
    let status = AssetStatus::parse(&filter.status)
        .map(|k| k.as_str())
        .unwrap_or("");
    let personal: i64 = match parse_yes_no(&filter.personal_data) {
        Some(true) => 1,
        Some(false) => 0,
        None => -1,
    };
    let rows = sqlx::query(&format!(
        "select {ASSET_COLUMNS} from assets a where \
           ($1 = '' or lower(tag) like $2 or lower(make) like $2 or lower(model) like $2 or lower(serial) like $2 \
            or lower(location) like $2 or lower(assigned_to) like $2 \
            or exists (select 1 from storage_media m where m.asset_id = a.asset_id and m.serial_key like $3)) \
           and ($4 = '' or kind = $4) and ($5 = '' or status = $5) and ($6 < 0 or personal_data = $6) \
         order by tag_key limit $7"
    ))
    .bind(q.clone())
    .bind(like)
    .bind(serial_like)
    .bind(kind)
    .bind(status)
    .bind(personal)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    let mut assets = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut a = row_to_asset(row)?;
        a.media = media_of(db, a.id).await?;
        assets.push(a);
    }
    Ok(assets)
}

/// Sets an asset's status (inside the caller's transaction).
pub(crate) async fn set_status(
    tx: &mut sqlx::AnyConnection,
    now: UnixTime,
    asset_id: i64,
    status: AssetStatus,
) -> Result<()> {
    sqlx::query("update assets set status = $1, updated_at = $2 where asset_id = $3")
        .bind(status.as_str())
        .bind(now)
        .bind(asset_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// The CSV columns, in order, for import and export.
pub const CSV_COLUMNS: [&str; 12] = [
    "asset_tag",
    "kind",
    "make",
    "model",
    "serial",
    "storage_media",
    "location",
    "assigned_to",
    "purchase_date",
    "personal_data",
    "status",
    "notes",
];

/// Largest CSV file accepted for import.
pub const MAX_IMPORT_BYTES: usize = 5 * 1024 * 1024;

/// A bad row (or the header) of an import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportProblem {
    /// Line number in the file (1 is the header).
    pub line: u64,
    /// What is wrong and what to do.
    pub message: String,
}

/// The outcome of an import: every row added, or nothing added and every problem.
#[derive(Clone, Debug)]
pub enum ImportOutcome {
    /// This many assets were added.
    Imported(usize),
    /// Nothing was added.
    Refused(Vec<ImportProblem>),
}

fn column_of(name: &str) -> Option<&'static str> {
    let n: String = name
        .trim()
        .trim_start_matches('\u{feff}')
        .to_lowercase()
        .chars()
        .map(|c| if c == ' ' || c == '-' { '_' } else { c })
        .collect();
    let n = match n.as_str() {
        "tag" | "asset" => "asset_tag",
        "serial_number" | "device_serial" => "serial",
        "storage" | "storage_serials" | "media" => "storage_media",
        "assigned" | "assigned_person" | "user" => "assigned_to",
        "purchased" => "purchase_date",
        "personal" | "holds_personal_data" | "may_hold_personal_data" => "personal_data",
        other => other,
    }
    .to_string();
    CSV_COLUMNS.iter().copied().find(|c| *c == n)
}

/// Imports assets from CSV (header row with the [`CSV_COLUMNS`] names, any order; only
/// `asset_tag` and `kind` are required). Every row is checked first; one bad row means
/// nothing is imported, and every problem is reported with its line number.
pub async fn import_csv(
    db: &Db,
    now: UnixTime,
    actor: &Actor,
    bytes: &[u8],
) -> Result<ImportOutcome> {
    let refuse = |line: u64, message: String| {
        Ok(ImportOutcome::Refused(vec![ImportProblem {
            line,
            message,
        }]))
    };
    if bytes.len() > MAX_IMPORT_BYTES {
        return refuse(
            0,
            format!(
                "The file is larger than {} MiB: split it into several files.",
                MAX_IMPORT_BYTES / 1024 / 1024
            ),
        );
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return refuse(
            0,
            "The file is not UTF-8 text: save the spreadsheet as \"CSV UTF-8\" and try again."
                .into(),
        );
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => return refuse(1, format!("The header row cannot be read: {e}")),
    };
    let mut columns: Vec<Option<&'static str>> = Vec::new();
    let mut problems = Vec::new();
    for h in headers.iter() {
        let c = column_of(h);
        if c.is_none() && !h.trim().is_empty() {
            problems.push(ImportProblem {
                line: 1,
                message: format!(
                    "Unknown column `{}`. The columns are: {}.",
                    h.trim(),
                    CSV_COLUMNS.join(", ")
                ),
            });
        }
        if c.is_some() && columns.contains(&c) {
            problems.push(ImportProblem {
                line: 1,
                message: format!("The column `{}` appears twice.", h.trim()),
            });
        }
        columns.push(c);
    }
    for required in ["asset_tag", "kind"] {
        if !columns.contains(&Some(required)) {
            problems.push(ImportProblem {
                line: 1,
                message: format!("The header row has no `{required}` column."),
            });
        }
    }
    if !problems.is_empty() {
        return Ok(ImportOutcome::Refused(problems));
    }
    let mut checked: Vec<(u64, CheckedAsset)> = Vec::new();
    let mut seen_tags: Vec<(u64, String)> = Vec::new();
    let mut seen_media: Vec<(u64, String)> = Vec::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                problems.push(ImportProblem {
                    line,
                    message: format!("This line cannot be read as CSV: {e}"),
                });
                continue;
            }
        };
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        if record.len() > columns.len() {
            problems.push(ImportProblem {
                line,
                message: format!(
                    "This row has {} fields but the header has {} columns.",
                    record.len(),
                    columns.len()
                ),
            });
            continue;
        }
        let mut input = AssetInput {
            personal_data: "no".into(),
            ..AssetInput::default()
        };
        for (i, value) in record.iter().enumerate() {
            let value = value.to_string();
            match columns[i] {
                Some("asset_tag") => input.tag = value,
                Some("kind") => input.kind = value,
                Some("make") => input.make = value,
                Some("model") => input.model = value,
                Some("serial") => input.serial = value,
                Some("storage_media") => input.storage_media = value,
                Some("location") => input.location = value,
                Some("assigned_to") => input.assigned_to = value,
                Some("purchase_date") => input.purchase_date = value,
                Some("personal_data") => input.personal_data = value,
                Some("status") => input.status = value,
                Some("notes") => input.notes = value,
                _ => {}
            }
        }
        // Duplicates are checked on what was typed, so a row with other mistakes still
        // hears about them too.
        let tag_key = input.tag.trim().to_lowercase();
        if !tag_key.is_empty() {
            if let Some(other) = by_tag(db, &tag_key).await? {
                problems.push(ImportProblem {
                    line,
                    message: format!("The asset tag {} is already in the register.", other.tag),
                });
            }
            if let Some((earlier, _)) = seen_tags.iter().find(|(_, t)| *t == tag_key) {
                problems.push(ImportProblem {
                    line,
                    message: format!(
                        "The asset tag {} is also on line {earlier}.",
                        input.tag.trim()
                    ),
                });
            }
            seen_tags.push((line, tag_key));
        }
        for m in parse_media(&input.storage_media, &mut Vec::new()) {
            if let Some(other) = medium_by_serial(db, &m.serial).await? {
                let tag = by_id(db, other.asset_id)
                    .await?
                    .map(|a| a.tag)
                    .unwrap_or_default();
                problems.push(ImportProblem {
                    line,
                    message: format!(
                        "The storage medium serial {} is already recorded in asset {tag}.",
                        m.serial
                    ),
                });
            }
            if let Some((earlier, _)) = seen_media.iter().find(|(_, k)| *k == m.key) {
                problems.push(ImportProblem {
                    line,
                    message: format!(
                        "The storage medium serial {} is also on line {earlier}.",
                        m.serial
                    ),
                });
            }
            seen_media.push((line, m.key));
        }
        match input.check() {
            Ok(asset) => checked.push((line, asset)),
            Err(errors) => {
                for e in errors {
                    problems.push(ImportProblem {
                        line,
                        message: e.message,
                    });
                }
            }
        }
    }
    if !problems.is_empty() {
        return Ok(ImportOutcome::Refused(problems));
    }
    if checked.is_empty() {
        return refuse(0, "The file has no rows to import under its header.".into());
    }
    let mut tx = db.begin().await?;
    for (_, asset) in &checked {
        insert_asset(&mut tx, now, asset).await?;
    }
    audit::append(
        &mut tx,
        now,
        actor,
        "assets_imported",
        "asset register",
        json!({ "count": checked.len(), "tags": checked.iter().map(|(_, a)| a.tag.clone()).collect::<Vec<_>>() }),
    )
    .await?;
    tx.commit().await?;
    Ok(ImportOutcome::Imported(checked.len()))
}

/// Quotes a CSV field (RFC 4180) and defuses spreadsheet formulas.
pub fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The whole register (or the assets matching `filter`) as CSV in the import's columns.
pub async fn export_csv(db: &Db, filter: &Filter) -> Result<String> {
    let assets = search(db, filter, 1_000_000).await?;
    let mut out = CSV_COLUMNS.join(",");
    out.push_str("\r\n");
    for a in assets {
        let fields = [
            a.tag.clone(),
            a.kind.as_str().to_string(),
            a.make.clone(),
            a.model.clone(),
            a.serial.clone(),
            a.media_text("; "),
            a.location.clone(),
            a.assigned_to.clone(),
            a.purchase_date.clone().unwrap_or_default(),
            if a.personal_data { "yes" } else { "no" }.to_string(),
            a.status.as_str().to_string(),
            a.notes.clone(),
        ];
        out.push_str(
            &fields
                .iter()
                .map(|f| csv_field(f))
                .collect::<Vec<_>>()
                .join(","),
        );
        out.push_str("\r\n");
    }
    Ok(out)
}
