//! The school's transfer policy: who may add contacts, what happens when a contact is not
//! verified, expiry and size limits, the wrong-passphrase limit, how long a contact's
//! verification lasts, the undo window after a release, and which transfers wait for an approver
//! (P7). Stored as named settings; anything never set has its default.

use crate::audit::{self, Actor};
use crate::clock::UnixTime;
use crate::db::Db;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use sqlx::Row;

/// One GiB.
pub const GIB: i64 = 1 << 30;

/// Sending to a contact whose verification is missing or has expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unverified {
    /// Refused: someone must verify the contact first.
    Refuse,
    /// Allowed when the sender writes an attestation of how they checked the address (the
    /// attested transfer is marked, so that approval can be required for it).
    Attest,
}

impl Unverified {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Unverified::Refuse => "refuse",
            Unverified::Attest => "attest",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "refuse" => Some(Unverified::Refuse),
            "attest" => Some(Unverified::Attest),
            _ => None,
        }
    }
}

/// The policy in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Staff (not only admins) may add contacts to the directory.
    pub staff_may_add_contacts: bool,
    /// What happens when the contact is not verified.
    pub unverified_contacts: Unverified,
    /// Expiry offered by default, in days.
    pub default_expiry_days: i64,
    /// Longest expiry a sender may choose, in days.
    pub max_expiry_days: i64,
    /// Download limit offered by default.
    pub default_download_limit: i64,
    /// Largest transfer (all files together, before encryption), in bytes.
    pub max_size_bytes: i64,
    /// Wrong passphrases before a transfer locks.
    pub wrong_passphrase_limit: i64,
    /// How long a contact's verification lasts, in months (30 days each).
    pub verification_valid_months: i64,
    /// Seconds after release during which the sender can undo it before the link is mailed
    /// (0: mailed at once). Absent from older API clients' requests: the default.
    #[serde(default = "default_undo_window_secs")]
    pub undo_window_secs: i64,
    /// Approval (P7): every transfer waits for an approver.
    #[serde(default)]
    pub approval_always: bool,
    /// Approval: transfers of these classifications wait for an approver.
    #[serde(default)]
    pub approval_classifications: Vec<String>,
    /// Approval: transfers to a contact who is not verified (sent on the sender's attestation)
    /// wait for an approver.
    #[serde(default)]
    pub approval_unverified: bool,
    /// Approval: contacts outside the allowed domains may be added, and transfers to them wait
    /// for an approver (otherwise such addresses are refused).
    #[serde(default)]
    pub approval_outside_domains: bool,
    /// Approval: the first transfer to an organisation that nobody has sent to yet waits for an
    /// approver.
    #[serde(default)]
    pub approval_new_organisation: bool,
    /// Four eyes off: the person who entered a contact's address and phone number may also
    /// record its verification. Off by default (someone else must verify).
    #[serde(default)]
    pub self_verification: bool,
    /// Longest life of an API token, in days (1 to 365). Lowering it shortens the tokens that
    /// already live longer. Absent from older API clients' requests: the default.
    #[serde(default = "default_max_token_days")]
    pub max_token_days: i64,
}

/// The undo window when policy never set one.
pub const DEFAULT_UNDO_WINDOW_SECS: i64 = 60;

/// The longest undo window policy may set.
pub const MAX_UNDO_WINDOW_SECS: i64 = 600;

fn default_undo_window_secs() -> i64 {
    DEFAULT_UNDO_WINDOW_SECS
}

/// The longest API token life when policy never set one: a school term, about.
pub const DEFAULT_MAX_TOKEN_DAYS: i64 = 90;

fn default_max_token_days() -> i64 {
    DEFAULT_MAX_TOKEN_DAYS
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            staff_may_add_contacts: false,
            unverified_contacts: Unverified::Refuse,
            default_expiry_days: 7,
            max_expiry_days: 30,
            default_download_limit: 3,
            max_size_bytes: 5 * GIB,
            wrong_passphrase_limit: 5,
            verification_valid_months: 12,
            undo_window_secs: DEFAULT_UNDO_WINDOW_SECS,
            approval_always: false,
            approval_classifications: Vec::new(),
            approval_unverified: false,
            approval_outside_domains: false,
            approval_new_organisation: false,
            self_verification: false,
            max_token_days: DEFAULT_MAX_TOKEN_DAYS,
        }
    }
}

/// Highest download limit a sender may choose.
pub const MAX_DOWNLOAD_LIMIT: i64 = 20;

impl Policy {
    /// Checks every value's range; the error names the setting and the range.
    pub fn check(&self) -> std::result::Result<(), (&'static str, String)> {
        let range = |field: &'static str, v: i64, lo: i64, hi: i64, what: &str| {
            if v < lo || v > hi {
                Err((
                    field,
                    format!("{what} must be a whole number from {lo} to {hi}."),
                ))
            } else {
                Ok(())
            }
        };
        range(
            "max_expiry_days",
            self.max_expiry_days,
            1,
            365,
            "The longest expiry (days)",
        )?;
        range(
            "default_expiry_days",
            self.default_expiry_days,
            1,
            self.max_expiry_days,
            "The default expiry (days)",
        )?;
        range(
            "default_download_limit",
            self.default_download_limit,
            1,
            MAX_DOWNLOAD_LIMIT,
            "The default download limit",
        )?;
        range(
            "max_size_bytes",
            self.max_size_bytes,
            1 << 20,
            64 * GIB,
            "The largest transfer (bytes)",
        )?;
        range(
            "wrong_passphrase_limit",
            self.wrong_passphrase_limit,
            1,
            20,
            "The wrong-passphrase limit",
        )?;
        range(
            "verification_valid_months",
            self.verification_valid_months,
            1,
            60,
            "How long a verification lasts (months)",
        )?;
        range(
            "undo_window_secs",
            self.undo_window_secs,
            0,
            MAX_UNDO_WINDOW_SECS,
            "The undo window (seconds)",
        )?;
        range(
            "max_token_days",
            self.max_token_days,
            1,
            365,
            "The longest API token life (days)",
        )?;
        if let Some(c) = self
            .approval_classifications
            .iter()
            .find(|c| !crate::transfers::CLASSIFICATIONS.contains(&c.as_str()))
        {
            return Err((
                "approval_classifications",
                format!(
                    "{c} is not a classification; choose from {}.",
                    crate::transfers::CLASSIFICATIONS.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// How long a verification lasts, in seconds.
    pub fn verification_valid_secs(&self) -> i64 {
        self.verification_valid_months * 30 * 86_400
    }
}

/// The policy in force (defaults for anything never set).
pub async fn load(db: &Db) -> Result<Policy> {
    let rows = sqlx::query("select name, value from policy_settings")
        .fetch_all(db.pool())
        .await?;
    let mut p = Policy::default();
    for row in rows {
        let name: String = row.try_get("name")?;
        let value: String = row.try_get("value")?;
        let int = value.parse::<i64>().ok();
        match (name.as_str(), int) {
            ("staff_may_add_contacts", _) => p.staff_may_add_contacts = value == "1",
            ("unverified_contacts", _) => {
                if let Some(u) = Unverified::parse(&value) {
                    p.unverified_contacts = u;
                }
            }
            ("default_expiry_days", Some(v)) => p.default_expiry_days = v,
            ("max_expiry_days", Some(v)) => p.max_expiry_days = v,
            ("default_download_limit", Some(v)) => p.default_download_limit = v,
            ("max_size_bytes", Some(v)) => p.max_size_bytes = v,
            ("wrong_passphrase_limit", Some(v)) => p.wrong_passphrase_limit = v,
            ("verification_valid_months", Some(v)) => p.verification_valid_months = v,
            ("undo_window_secs", Some(v)) => p.undo_window_secs = v,
            ("max_token_days", Some(v)) => p.max_token_days = v,
            ("approval_always", _) => p.approval_always = value == "1",
            ("approval_classifications", _) => {
                p.approval_classifications = value
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect()
            }
            ("approval_unverified", _) => p.approval_unverified = value == "1",
            ("approval_outside_domains", _) => p.approval_outside_domains = value == "1",
            ("approval_new_organisation", _) => p.approval_new_organisation = value == "1",
            ("self_verification", _) => p.self_verification = value == "1",
            _ => {}
        }
    }
    Ok(p)
}

/// Saves a whole policy (after [`Policy::check`]) and audits what changed.
pub async fn save(db: &Db, now: UnixTime, actor: &Actor, new: &Policy) -> Result<()> {
    if let Err((_, message)) = new.check() {
        return Err(Error::BadInput(message));
    }
    let old = load(db).await?;
    let flag = |b: bool| if b { "1" } else { "0" }.to_string();
    let mut classifications = new.approval_classifications.clone();
    classifications.sort();
    classifications.dedup();
    let values = [
        ("staff_may_add_contacts", flag(new.staff_may_add_contacts)),
        (
            "unverified_contacts",
            new.unverified_contacts.as_str().to_string(),
        ),
        ("default_expiry_days", new.default_expiry_days.to_string()),
        ("max_expiry_days", new.max_expiry_days.to_string()),
        (
            "default_download_limit",
            new.default_download_limit.to_string(),
        ),
        ("max_size_bytes", new.max_size_bytes.to_string()),
        (
            "wrong_passphrase_limit",
            new.wrong_passphrase_limit.to_string(),
        ),
        (
            "verification_valid_months",
            new.verification_valid_months.to_string(),
        ),
        ("undo_window_secs", new.undo_window_secs.to_string()),
        ("approval_always", flag(new.approval_always)),
        ("approval_classifications", classifications.join(",")),
        ("approval_unverified", flag(new.approval_unverified)),
        (
            "approval_outside_domains",
            flag(new.approval_outside_domains),
        ),
        (
            "approval_new_organisation",
            flag(new.approval_new_organisation),
        ),
        ("self_verification", flag(new.self_verification)),
        ("max_token_days", new.max_token_days.to_string()),
    ];
    let mut tx = db.begin().await?;
    for (name, value) in &values {
        sqlx::query(
            "insert into policy_settings (name, value, updated_by, updated_at) values ($1, $2, $3, $4) \
             on conflict (name) do update set value = excluded.value, updated_by = excluded.updated_by, \
             updated_at = excluded.updated_at",
        )
        .bind(*name)
        .bind(value)
        .bind(&actor.label)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    // A lower maximum applies to the tokens already made, not only to new ones.
    let shortened = crate::tokens::cap_lifetimes(&mut tx, now, new.max_token_days).await?;
    audit::append(
        &mut tx,
        now,
        actor,
        "policy_changed",
        "policy",
        serde_json::json!({ "before": old, "after": new, "tokens_shortened": shortened }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Formats a byte count for people: `5 GiB`, `300 MiB`, `12 KiB`, `80 bytes`.
pub fn format_size(bytes: i64) -> String {
    const UNITS: [(&str, i64); 3] = [("GiB", GIB), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if bytes >= size {
            let whole = bytes / size;
            let tenths = (bytes % size) * 10 / size;
            return if tenths == 0 {
                format!("{whole} {unit}")
            } else {
                format!("{whole}.{tenths} {unit}")
            };
        }
    }
    format!("{bytes} bytes")
}

/// Parses a size typed by an admin: `5 GiB`, `500MB`, `1.5 gb`, or plain bytes.
pub fn parse_size(text: &str) -> Option<i64> {
    let t = text.trim().to_ascii_lowercase().replace(' ', "");
    let (number, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => t.split_at(i),
        None => (t.as_str(), ""),
    };
    let factor: f64 = match unit {
        "" | "b" | "bytes" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => GIB as f64,
        _ => return None,
    };
    let n: f64 = number.parse().ok()?;
    if !n.is_finite() || n <= 0.0 {
        return None;
    }
    let v = (n * factor).round();
    (v <= i64::MAX as f64).then_some(v as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_trip_for_people() {
        assert_eq!(format_size(5 * GIB), "5 GiB");
        assert_eq!(format_size(3 * GIB / 2), "1.5 GiB");
        assert_eq!(format_size(300 << 20), "300 MiB");
        assert_eq!(format_size(80), "80 bytes");
        assert_eq!(parse_size("5 GiB"), Some(5 * GIB));
        assert_eq!(parse_size("1.5gb"), Some(3 * GIB / 2));
        assert_eq!(parse_size("500 MB"), Some(500 << 20));
        assert_eq!(parse_size("1234"), Some(1234));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("-1 GiB"), None);
    }

    #[test]
    fn defaults_are_valid_and_ranges_are_checked() {
        assert!(Policy::default().check().is_ok());
        let p = Policy {
            default_expiry_days: 40,
            ..Policy::default()
        };
        assert_eq!(p.check().unwrap_err().0, "default_expiry_days");
    }
}
