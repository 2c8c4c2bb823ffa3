//! Technicians' certificate signing keys, wipe certificates (checked on upload: signature,
//! registered key, matched to a storage medium), recorded physical destructions with the
//! contractor's certificate file, and what counts as evidence for a storage medium.

use super::assets::{self, Medium};
use super::serial_key;
use crate::accounts::{self, Role, User};
use crate::audit::{self, Actor};
use crate::clock::UnixTime;
use crate::db::{is_unique_violation, opt_i64, Db};
use crate::error::{Error, Result};
use safehand_crypto::certificate::{verify_certificate, PublicKey, WipeCertificate, WipeResult};
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::Row;

/// Largest certificate file accepted (a Gutmann certificate with many error ranges is tens of KiB).
pub const MAX_CERTIFICATE_BYTES: usize = 1024 * 1024;
/// Largest contractor's destruction certificate file accepted.
pub const MAX_DESTRUCTION_FILE_BYTES: usize = 10 * 1024 * 1024;

/// A technician's registered certificate signing key.
#[derive(Clone, Debug)]
pub struct SigningKeyRecord {
    /// Id.
    pub id: i64,
    /// Owner.
    pub user_id: i64,
    /// `ed25519:...` as `safehand cert key` prints it.
    pub public_key: String,
    /// What the owner called it (the computer it is on).
    pub label: String,
    /// Registered.
    pub created_at: UnixTime,
    /// Revoked (certificates signed with it are refused from then on).
    pub revoked_at: Option<UnixTime>,
}

fn row_to_key(row: &sqlx::any::AnyRow) -> Result<SigningKeyRecord> {
    Ok(SigningKeyRecord {
        id: row.try_get("key_id")?,
        user_id: row.try_get("user_id")?,
        public_key: row.try_get("public_key")?,
        label: row.try_get("label")?,
        created_at: row.try_get("created_at")?,
        revoked_at: opt_i64(row, "revoked_at")?,
    })
}

/// A user's keys, newest first.
pub async fn keys_of(db: &Db, user_id: i64) -> Result<Vec<SigningKeyRecord>> {
    let rows = sqlx::query(
        "select key_id, user_id, public_key, label, created_at, revoked_at from signing_keys where user_id = $1 order by key_id desc",
    )
    .bind(user_id)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(row_to_key).collect()
}

/// Registers a technician's public key (text as `safehand cert key` prints it).
pub async fn add_key(
    db: &Db,
    now: UnixTime,
    actor: &Actor,
    user: &User,
    key_text: &str,
    label: &str,
) -> std::result::Result<SigningKeyRecord, Vec<super::FieldError>> {
    let mut errors = Vec::new();
    let label = super::check_text(
        &mut errors,
        "key_label",
        "name of the key",
        label,
        100,
        true,
    );
    if !user.has(Role::Technician) {
        errors.push(super::FieldError::new(
            "public_key",
            "Only technicians sign wipe certificates: ask an admin for the technician role first.",
        ));
    }
    let key: Option<PublicKey> = match key_text.trim().parse::<PublicKey>() {
        Ok(k) => Some(k),
        Err(_) => {
            errors.push(super::FieldError::new(
                "public_key",
                "Paste the public key exactly as `safehand cert key` prints it: it starts with ed25519:",
            ));
            None
        }
    };
    let (Some(key), true) = (key, errors.is_empty()) else {
        return Err(errors);
    };
    let text = key.to_string();
    let result: Result<SigningKeyRecord> = async {
        let mut tx = db.begin().await?;
        let row = sqlx::query(
            "insert into signing_keys (user_id, public_key, label, created_at) values ($1, $2, $3, $4) \
             returning key_id, user_id, public_key, label, created_at, revoked_at",
        )
        .bind(user.id)
        .bind(&text)
        .bind(&label)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let record = row_to_key(&row)?;
        audit::append(&mut tx, now, actor, "signing_key_registered", &user.email, json!({ "key_id": record.id, "public_key": text, "label": label })).await?;
        tx.commit().await?;
        Ok(record)
    }
    .await;
    match result {
        Ok(r) => Ok(r),
        Err(Error::Database(e)) if is_unique_violation(&e) => Err(vec![super::FieldError::new(
            "public_key",
            "This key is already registered (keys cannot be shared between technicians or registered twice).",
        )]),
        Err(e) => Err(vec![super::FieldError::new("public_key", {
            tracing::error!(error = ?e, "registering a signing key failed");
            "Sorry, the key could not be saved. Try again.".to_string()
        })]),
    }
}

/// Revokes one of the user's keys: certificates it signs are refused from now on.
pub async fn revoke_key(
    db: &Db,
    now: UnixTime,
    actor: &Actor,
    user: &User,
    key_id: i64,
) -> Result<()> {
    let mut tx = db.begin().await?;
    let done = sqlx::query("update signing_keys set revoked_at = $1 where key_id = $2 and user_id = $3 and revoked_at is null")
        .bind(now)
        .bind(key_id)
        .bind(user.id)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() != 1 {
        return Err(Error::NotFound);
    }
    audit::append(
        &mut tx,
        now,
        actor,
        "signing_key_revoked",
        &user.email,
        json!({ "key_id": key_id }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The live registered key with this text and its technician, if any.
async fn registered_key(db: &Db, key: &PublicKey) -> Result<Option<(SigningKeyRecord, User)>> {
    let row = sqlx::query(
        "select key_id, user_id, public_key, label, created_at, revoked_at from signing_keys where public_key = $1 and revoked_at is null",
    )
    .bind(key.to_string())
    .fetch_optional(db.pool())
    .await?;
    let Some(record) = row.as_ref().map(row_to_key).transpose()? else {
        return Ok(None);
    };
    let Some(user) = accounts::by_id(db, record.user_id).await? else {
        return Ok(None);
    };
    if user.disabled || !user.has(Role::Technician) {
        return Ok(None);
    }
    Ok(Some((record, user)))
}

/// A stored wipe certificate (without its document bytes).
#[derive(Clone, Debug)]
pub struct StoredCertificate {
    /// Row id (in URLs).
    pub id: i64,
    /// The certificate's own id.
    pub certificate_id: String,
    /// SHA-256 of the original file.
    pub sha256: String,
    /// The key that signed it.
    pub signer_key: String,
    /// The registered key's id (set when it was accepted).
    pub key_id: Option<i64>,
    /// ERASED, FAILED, INCOMPLETE or UNVERIFIED.
    pub result: String,
    /// Device serial on the certificate ("" when the device reported none).
    pub device_serial: String,
    /// Device model.
    pub device_model: String,
    /// Device path.
    pub device_path: String,
    /// Asset tag on the certificate.
    pub asset_tag: String,
    /// Operator named on the certificate.
    pub operator: String,
    /// Wipe method.
    pub method: String,
    /// NIST SP 800-88 category.
    pub nist_category: String,
    /// When the wipe ended (RFC 3339).
    pub wiped_at: String,
    /// The storage medium it is assigned to.
    pub medium_id: Option<i64>,
    /// Who uploaded it.
    pub uploaded_by: i64,
    /// When.
    pub uploaded_at: UnixTime,
}

impl StoredCertificate {
    /// Whether this certificate says the medium was erased (the only result that is evidence).
    pub fn is_erased(&self) -> bool {
        self.result == WipeResult::Erased.to_string()
    }
}

const CERT_COLUMNS: &str = "cert_row_id, certificate_id, sha256, signer_key, key_id, result, device_serial, device_model, device_path, asset_tag, operator, method, nist_category, wiped_at, medium_id, uploaded_by, uploaded_at";

fn row_to_cert(row: &sqlx::any::AnyRow) -> Result<StoredCertificate> {
    Ok(StoredCertificate {
        id: row.try_get("cert_row_id")?,
        certificate_id: row.try_get("certificate_id")?,
        sha256: row.try_get("sha256")?,
        signer_key: row.try_get("signer_key")?,
        key_id: opt_i64(row, "key_id")?,
        result: row.try_get("result")?,
        device_serial: row.try_get("device_serial")?,
        device_model: row.try_get("device_model")?,
        device_path: row.try_get("device_path")?,
        asset_tag: row.try_get("asset_tag")?,
        operator: row.try_get("operator")?,
        method: row.try_get("method")?,
        nist_category: row.try_get("nist_category")?,
        wiped_at: row.try_get("wiped_at")?,
        medium_id: opt_i64(row, "medium_id")?,
        uploaded_by: row.try_get("uploaded_by")?,
        uploaded_at: row.try_get("uploaded_at")?,
    })
}

/// One certificate by row id.
pub async fn by_id(db: &Db, id: i64) -> Result<Option<StoredCertificate>> {
    let row = sqlx::query(&format!(
        "select {CERT_COLUMNS} from wipe_certificates where cert_row_id = $1"
    ))
    .bind(id)
    .fetch_optional(db.pool())
    .await?;
    row.as_ref().map(row_to_cert).transpose()
}

/// The original certificate file as uploaded.
pub async fn document(db: &Db, id: i64) -> Result<Option<Vec<u8>>> {
    let row = sqlx::query("select document from wipe_certificates where cert_row_id = $1")
        .bind(id)
        .fetch_optional(db.pool())
        .await?;
    row.map(|r| r.try_get::<Vec<u8>, _>("document").map_err(Into::into))
        .transpose()
}

/// Certificates, newest first: all, or only those not yet assigned to a storage medium.
pub async fn list(db: &Db, unassigned_only: bool, limit: i64) -> Result<Vec<StoredCertificate>> {
    let rows = sqlx::query(&format!(
        "select {CERT_COLUMNS} from wipe_certificates where ($1 = 0 or medium_id is null) order by cert_row_id desc limit $2"
    ))
    .bind(i64::from(unassigned_only))
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(row_to_cert).collect()
}

/// Certificates assigned to one medium, newest first.
pub async fn for_medium(db: &Db, medium_id: i64) -> Result<Vec<StoredCertificate>> {
    let rows = sqlx::query(&format!(
        "select {CERT_COLUMNS} from wipe_certificates where medium_id = $1 order by cert_row_id desc"
    ))
    .bind(medium_id)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(row_to_cert).collect()
}

/// Whether a stored certificate verifies now, and why not.
#[derive(Clone, Debug)]
pub struct Check {
    /// The signature verifies and its key was registered to a technician when uploaded.
    pub verifies: bool,
    /// What was found, in words.
    pub detail: String,
    /// The certificate's facts, when the file could be read.
    pub certificate: Option<WipeCertificate>,
    /// The signer, when the file could be read.
    pub signer: Option<PublicKey>,
}

/// Verifies a stored certificate again (signature over the stored bytes, signer matches).
pub async fn check(db: &Db, cert: &StoredCertificate) -> Result<Check> {
    let bytes = document(db, cert.id).await?.ok_or(Error::NotFound)?;
    Ok(check_bytes(cert, &bytes))
}

fn check_bytes(cert: &StoredCertificate, bytes: &[u8]) -> Check {
    let digest = hex::encode(Sha256::digest(bytes));
    match verify_certificate(bytes, None) {
        Ok(v)
            if digest == cert.sha256
                && v.signer.to_string() == cert.signer_key
                && cert.key_id.is_some() =>
        {
            Check {
                verifies: true,
                detail: format!(
                    "The signature verifies; it was made by {}, a key registered to a technician.",
                    cert.signer_key
                ),
                signer: Some(v.signer),
                certificate: Some(v.certificate),
            }
        }
        Ok(v) => Check {
            verifies: false,
            detail: "The stored file does not match what was accepted on upload.".into(),
            signer: Some(v.signer),
            certificate: Some(v.certificate),
        },
        Err(e) => Check {
            verifies: false,
            detail: format!("The signature does not verify: {e}."),
            signer: None,
            certificate: None,
        },
    }
}

/// What happened to an upload.
#[derive(Clone, Debug)]
pub struct Uploaded {
    /// The stored certificate.
    pub certificate: StoredCertificate,
    /// The same certificate had been uploaded before (nothing changed).
    pub already_uploaded: bool,
    /// The storage medium it is assigned to, with its asset's tag.
    pub medium: Option<(Medium, String)>,
    /// Whether it counts as evidence (ERASED and assigned).
    pub evidence: bool,
    /// What the uploader should read (and do next).
    pub message: String,
}

async fn describe(db: &Db, cert: StoredCertificate, already_uploaded: bool) -> Result<Uploaded> {
    let medium = match cert.medium_id {
        Some(id) => match assets::medium(db, id).await? {
            Some(m) => {
                let tag = assets::by_id(db, m.asset_id)
                    .await?
                    .map(|a| a.tag)
                    .unwrap_or_default();
                Some((m, tag))
            }
            None => None,
        },
        None => None,
    };
    let evidence = medium.is_some() && cert.is_erased();
    let message = match (&medium, cert.is_erased()) {
        (Some((m, tag)), true) => format!(
            "Certificate {} verifies ({}) and is evidence for storage medium {} of asset {tag}.",
            cert.certificate_id, cert.result, m.serial
        ),
        (Some((m, tag)), false) => format!(
            "Certificate {} verifies and is stored with storage medium {} of asset {tag}, but it says {}: it is not evidence of erasure. Wipe the medium again or record its destruction.",
            cert.certificate_id, m.serial, cert.result
        ),
        (None, _) => format!(
            "Certificate {} verifies ({}) but its device serial `{}` matches no storage medium in the register: choose which asset it belongs to on the certificate's page.",
            cert.certificate_id,
            cert.result,
            if cert.device_serial.is_empty() { "none reported" } else { &cert.device_serial }
        ),
    };
    Ok(Uploaded {
        certificate: cert,
        already_uploaded,
        medium,
        evidence,
        message,
    })
}

/// Accepts a certificate file: it must verify, be signed by a live key registered to an
/// enabled technician, and is matched to the storage medium with the same serial (or to
/// `medium_id` when given). A certificate that does not verify is refused with the reason.
/// FAILED, INCOMPLETE and UNVERIFIED certificates are stored but are never evidence.
pub async fn upload(
    db: &Db,
    now: UnixTime,
    actor: &Actor,
    uploader: &User,
    bytes: &[u8],
    medium_id: Option<i64>,
) -> Result<Uploaded> {
    if bytes.is_empty() {
        return Err(Error::BadInput(
            "Choose the certificate file (the .json that `safehand wipe` wrote).".into(),
        ));
    }
    if bytes.len() > MAX_CERTIFICATE_BYTES {
        return Err(Error::BadInput(format!(
            "The certificate was refused: the file is larger than {} KiB, so it is not a Safehand certificate.",
            MAX_CERTIFICATE_BYTES / 1024
        )));
    }
    let verified = verify_certificate(bytes, None).map_err(|e| {
        Error::BadInput(format!(
            "The certificate was refused: {e}. Upload the file exactly as `safehand wipe` wrote it; check it with `safehand cert verify`."
        ))
    })?;
    let Some((key, technician)) = registered_key(db, &verified.signer).await? else {
        return Err(Error::BadInput(format!(
            "The certificate was refused: it is signed by {}, which is not the registered key of any technician. The technician who did the wipe adds the key that `safehand cert key` prints on their account page, then uploads again.",
            verified.signer
        )));
    };
    let c = &verified.certificate;
    let sha256 = hex::encode(Sha256::digest(bytes));
    let existing = sqlx::query(&format!(
        "select {CERT_COLUMNS} from wipe_certificates where certificate_id = $1"
    ))
    .bind(&c.certificate_id)
    .fetch_optional(db.pool())
    .await?;
    if let Some(row) = existing {
        let existing = row_to_cert(&row)?;
        if existing.sha256 != sha256 {
            return Err(Error::BadInput(format!(
                "The certificate was refused: a different certificate with the id {} is already in the register.",
                c.certificate_id
            )));
        }
        return describe(db, existing, true).await;
    }
    let device_serial = c.device.serial.clone().unwrap_or_default();
    let medium = match medium_id {
        Some(id) => {
            let m = assets::medium(db, id).await?.ok_or_else(|| {
                Error::BadInput("That storage medium is not in the register.".into())
            })?;
            check_serials_agree(&m, &device_serial)?;
            Some(m)
        }
        None => assets::medium_by_serial(db, &device_serial).await?,
    };
    let mut tx = db.begin().await?;
    let row = sqlx::query(&format!(
        "insert into wipe_certificates (certificate_id, document, sha256, signer_key, key_id, result, device_serial, device_model, device_path, asset_tag, operator, method, nist_category, wiped_at, medium_id, uploaded_by, uploaded_at, assigned_by, assigned_at) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) returning {CERT_COLUMNS}"
    ))
    .bind(&c.certificate_id)
    .bind(bytes.to_vec())
    .bind(&sha256)
    .bind(verified.signer.to_string())
    .bind(key.id)
    .bind(c.result.to_string())
    .bind(&device_serial)
    .bind(c.device.model.clone().unwrap_or_default())
    .bind(&c.device.path)
    .bind(c.asset_tag.clone().unwrap_or_default())
    .bind(&c.operator)
    .bind(&c.method.name)
    .bind(c.nist.category.to_string())
    .bind(&c.ended_at)
    .bind(medium.as_ref().map(|m| m.id))
    .bind(uploader.id)
    .bind(now)
    .bind(medium.as_ref().map(|_| uploader.id))
    .bind(medium.as_ref().map(|_| now))
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            Error::BadInput("The same certificate was uploaded at the same moment; reload to see it.".into())
        } else {
            e.into()
        }
    })?;
    let stored = row_to_cert(&row)?;
    audit::append(
        &mut tx,
        now,
        actor,
        "certificate_uploaded",
        &c.certificate_id,
        json!({
            "result": stored.result, "device_serial": device_serial, "signer": stored.signer_key,
            "technician": technician.email, "medium_id": stored.medium_id, "sha256": sha256,
        }),
    )
    .await?;
    tx.commit().await?;
    describe(db, stored, false).await
}

fn check_serials_agree(m: &Medium, device_serial: &str) -> Result<()> {
    if !device_serial.is_empty() && serial_key(device_serial) != serial_key(&m.serial) {
        return Err(Error::BadInput(format!(
            "This certificate is for the device with serial {device_serial}, but the storage medium you chose has serial {}. Choose the medium the wipe was done on.",
            m.serial
        )));
    }
    Ok(())
}

/// Whether a certificate or destruction is frozen as evidence of a completed disposal.
async fn frozen(db: &Db, column: &str, id: i64) -> Result<bool> {
    let row = sqlx::query(&format!(
        "select count(*) as n from disposal_evidence where {column} = $1"
    ))
    .bind(id)
    .fetch_one(db.pool())
    .await?;
    Ok(row.try_get::<i64, _>("n")? > 0)
}

/// Whether a certificate is frozen as evidence of a completed disposal (then it cannot move).
pub async fn is_frozen(db: &Db, cert_id: i64) -> Result<bool> {
    frozen(db, "cert_row_id", cert_id).await
}

/// Assigns an uploaded certificate to a storage medium (when its serial matched nothing, or
/// was wrong). Refused once it is evidence of a completed disposal, or when the certificate
/// names a different serial.
pub async fn assign(
    db: &Db,
    now: UnixTime,
    actor: &Actor,
    user: &User,
    cert_id: i64,
    medium_id: i64,
) -> Result<Uploaded> {
    let cert = by_id(db, cert_id).await?.ok_or(Error::NotFound)?;
    let medium = assets::medium(db, medium_id)
        .await?
        .ok_or_else(|| Error::BadInput("Choose a storage medium from the register.".into()))?;
    check_serials_agree(&medium, &cert.device_serial)?;
    if frozen(db, "cert_row_id", cert.id).await? {
        return Err(Error::BadInput(
            "This certificate is evidence in a completed disposal record; it cannot be moved."
                .into(),
        ));
    }
    let asset = assets::by_id(db, medium.asset_id)
        .await?
        .ok_or(Error::NotFound)?;
    let mut tx = db.begin().await?;
    sqlx::query("update wipe_certificates set medium_id = $1, assigned_by = $2, assigned_at = $3 where cert_row_id = $4")
        .bind(medium.id)
        .bind(user.id)
        .bind(now)
        .bind(cert.id)
        .execute(&mut *tx)
        .await?;
    audit::append(
        &mut tx,
        now,
        actor,
        "certificate_assigned",
        &cert.certificate_id,
        json!({ "asset": asset.tag, "medium": medium.serial, "medium_id": medium.id }),
    )
    .await?;
    tx.commit().await?;
    let cert = by_id(db, cert_id).await?.ok_or(Error::NotFound)?;
    describe(db, cert, false).await
}

/// A recorded physical destruction of a storage medium.
#[derive(Clone, Debug)]
pub struct Destruction {
    /// Id.
    pub id: i64,
    /// The medium destroyed.
    pub medium_id: i64,
    /// The contractor that destroyed it.
    pub contractor: String,
    /// The contractor's certificate number or reference.
    pub reference: String,
    /// When it was destroyed (`YYYY-MM-DD`).
    pub destroyed_on: String,
    /// The attached certificate file's name.
    pub file_name: String,
    /// Its content type.
    pub content_type: String,
    /// Its SHA-256.
    pub file_sha256: String,
    /// Its size in bytes.
    pub file_size: i64,
    /// Who recorded it.
    pub recorded_by: i64,
    /// When.
    pub recorded_at: UnixTime,
}

const DESTRUCTION_COLUMNS: &str = "destruction_id, medium_id, contractor, reference, destroyed_on, file_name, content_type, file_sha256, file_size, recorded_by, recorded_at";

fn row_to_destruction(row: &sqlx::any::AnyRow) -> Result<Destruction> {
    Ok(Destruction {
        id: row.try_get("destruction_id")?,
        medium_id: row.try_get("medium_id")?,
        contractor: row.try_get("contractor")?,
        reference: row.try_get("reference")?,
        destroyed_on: row.try_get("destroyed_on")?,
        file_name: row.try_get("file_name")?,
        content_type: row.try_get("content_type")?,
        file_sha256: row.try_get("file_sha256")?,
        file_size: row.try_get("file_size")?,
        recorded_by: row.try_get("recorded_by")?,
        recorded_at: row.try_get("recorded_at")?,
    })
}

/// Destructions recorded for one medium, newest first.
pub async fn destructions_for(db: &Db, medium_id: i64) -> Result<Vec<Destruction>> {
    let rows = sqlx::query(&format!("select {DESTRUCTION_COLUMNS} from destructions where medium_id = $1 order by destruction_id desc"))
        .bind(medium_id)
        .fetch_all(db.pool())
        .await?;
    rows.iter().map(row_to_destruction).collect()
}

/// One destruction and its attached file.
pub async fn destruction_file(db: &Db, id: i64) -> Result<Option<(Destruction, Vec<u8>)>> {
    let row = sqlx::query(&format!(
        "select {DESTRUCTION_COLUMNS}, file from destructions where destruction_id = $1"
    ))
    .bind(id)
    .fetch_optional(db.pool())
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some((
        row_to_destruction(&row)?,
        row.try_get::<Vec<u8>, _>("file")?,
    )))
}

/// What is typed on the destruction form.
#[derive(Clone, Debug, Default)]
pub struct DestructionInput {
    /// Contractor's name.
    pub contractor: String,
    /// Their certificate number.
    pub reference: String,
    /// When (`YYYY-MM-DD`).
    pub destroyed_on: String,
    /// The attached file's name.
    pub file_name: String,
    /// Its content type.
    pub content_type: String,
    /// Its bytes.
    pub file: Vec<u8>,
}

/// Records that a medium was physically destroyed, with the contractor's certificate file.
pub async fn record_destruction(
    db: &Db,
    now: UnixTime,
    actor: &Actor,
    user: &User,
    medium_id: i64,
    input: &DestructionInput,
) -> Result<std::result::Result<i64, Vec<super::FieldError>>> {
    let medium = assets::medium(db, medium_id)
        .await?
        .ok_or(Error::NotFound)?;
    let asset = assets::by_id(db, medium.asset_id)
        .await?
        .ok_or(Error::NotFound)?;
    let mut errors = Vec::new();
    let contractor = super::check_text(
        &mut errors,
        "contractor",
        "contractor's name",
        &input.contractor,
        200,
        true,
    );
    let reference = super::check_text(
        &mut errors,
        "reference",
        "contractor's certificate number",
        &input.reference,
        100,
        true,
    );
    let destroyed_on = super::check_date(
        &mut errors,
        "destroyed_on",
        "date of destruction",
        &input.destroyed_on,
    );
    if destroyed_on.is_none() && input.destroyed_on.trim().is_empty() {
        errors.push(super::FieldError::new(
            "destroyed_on",
            "Enter the date of destruction, like 2026-11-01.",
        ));
    }
    if let Some(d) = &destroyed_on {
        if d.as_str() > super::date_of(now).as_str() {
            errors.push(super::FieldError::new(
                "destroyed_on",
                "The date of destruction cannot be in the future.",
            ));
        }
    }
    if input.file.is_empty() {
        errors.push(super::FieldError::new(
            "file",
            "Attach the contractor's certificate of destruction (PDF or a scan).",
        ));
    } else if input.file.len() > MAX_DESTRUCTION_FILE_BYTES {
        errors.push(super::FieldError::new(
            "file",
            format!(
                "The file is larger than {} MiB: attach a smaller scan.",
                MAX_DESTRUCTION_FILE_BYTES / 1024 / 1024
            ),
        ));
    }
    if !errors.is_empty() {
        return Ok(Err(errors));
    }
    let file_name: String = input
        .file_name
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control() && *c != '"')
        .take(200)
        .collect();
    let file_name = if file_name.is_empty() {
        "certificate".to_string()
    } else {
        file_name
    };
    let sha = hex::encode(Sha256::digest(&input.file));
    let mut tx = db.begin().await?;
    let row = sqlx::query(
        "insert into destructions (medium_id, contractor, reference, destroyed_on, file_name, content_type, file, file_sha256, file_size, recorded_by, recorded_at) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) returning destruction_id",
    )
    .bind(medium.id)
    .bind(&contractor)
    .bind(&reference)
    .bind(destroyed_on.clone())
    .bind(&file_name)
    .bind(input.content_type.chars().take(100).collect::<String>())
    .bind(input.file.clone())
    .bind(&sha)
    .bind(input.file.len() as i64)
    .bind(user.id)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    let id: i64 = row.try_get("destruction_id")?;
    audit::append(&mut tx, now, actor, "destruction_recorded", &asset.tag, json!({ "medium": medium.serial, "contractor": contractor, "reference": reference, "destroyed_on": destroyed_on, "file_sha256": sha, "file_size": input.file.len() })).await?;
    tx.commit().await?;
    Ok(Ok(id))
}

/// Evidence that a storage medium no longer holds data.
#[derive(Clone, Debug)]
pub enum Evidence {
    /// A verified certificate showing ERASED.
    Certificate(StoredCertificate),
    /// A recorded physical destruction with the contractor's certificate attached.
    Destruction(Destruction),
}

impl Evidence {
    /// One line for pages and reports.
    pub fn describe(&self) -> String {
        match self {
            Evidence::Certificate(c) => format!(
                "wipe certificate {} ({}; {}; NIST 800-88 {}; ended {}; operator {}; signed by {})",
                c.certificate_id,
                c.result,
                c.method,
                c.nist_category,
                c.wiped_at,
                c.operator,
                c.signer_key
            ),
            Evidence::Destruction(d) => format!(
                "destroyed by {} on {} (their certificate {}; file {} SHA-256 {})",
                d.contractor, d.destroyed_on, d.reference, d.file_name, d.file_sha256
            ),
        }
    }
}

/// The evidence a medium has now: its newest certificate that verifies and says ERASED, or
/// else its newest recorded destruction. FAILED, INCOMPLETE and UNVERIFIED never count.
pub async fn evidence_for(db: &Db, medium_id: i64) -> Result<Option<Evidence>> {
    for cert in for_medium(db, medium_id).await? {
        if cert.is_erased() && check(db, &cert).await?.verifies {
            return Ok(Some(Evidence::Certificate(cert)));
        }
    }
    Ok(destructions_for(db, medium_id)
        .await?
        .into_iter()
        .next()
        .map(Evidence::Destruction))
}

/// The evidence row of a completed disposal, read back.
pub(crate) async fn evidence_from_ids(
    db: &Db,
    cert_row_id: Option<i64>,
    destruction_id: Option<i64>,
) -> Result<Option<Evidence>> {
    if let Some(id) = cert_row_id {
        return Ok(by_id(db, id).await?.map(Evidence::Certificate));
    }
    if let Some(id) = destruction_id {
        return Ok(destruction_file(db, id)
            .await?
            .map(|(d, _)| Evidence::Destruction(d)));
    }
    Ok(None)
}
