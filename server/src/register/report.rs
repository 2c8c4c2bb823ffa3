//! The disposal report for governors and auditors: every completed disposal in a date range,
//! with its authorisation, checks, receiver and the evidence for each storage medium, as CSV
//! and as a PDF to print.

use super::assets::{self, csv_field, Asset};
use super::certificates::Evidence;
use super::disposals::{self, Disposal};
use super::user_label;
use crate::clock::{format_time, UnixTime};
use crate::db::Db;
use crate::error::{Error, Result};

/// One disposal in the report.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The record.
    pub disposal: Disposal,
    /// The asset.
    pub asset: Asset,
    /// Who did the disposal.
    pub disposed_by: String,
    /// Who authorised it.
    pub authorised_by: String,
    /// Who completed the record.
    pub completed_by: String,
    /// Each storage medium's serial and its evidence, in words.
    pub evidence: Vec<(String, String)>,
}

/// Checks a date range typed as `YYYY-MM-DD`; the message says what to fix.
pub fn check_range(from: &str, to: &str) -> std::result::Result<(String, String), String> {
    let (f, t) = (crate::clock::parse_date(from), crate::clock::parse_date(to));
    match (f, t) {
        (Some(f), Some(t)) if f <= t => Ok((super::date_of(f), super::date_of(t))),
        (Some(_), Some(_)) => Err("The start date is after the end date.".into()),
        _ => Err("Enter both dates as year-month-day, like 2026-09-01.".into()),
    }
}

/// The completed disposals with a disposal date in `[from, to]`.
pub async fn entries(db: &Db, from: &str, to: &str) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    for d in disposals::completed_between(db, from, to).await? {
        let asset = assets::by_id(db, d.asset_id)
            .await?
            .ok_or(Error::NotFound)?;
        let evidence = disposals::evidence(db, &d, &asset)
            .await?
            .into_iter()
            .map(|(m, e)| {
                (
                    m.display(),
                    e.as_ref()
                        .map(Evidence::describe)
                        .unwrap_or_else(|| "none".into()),
                )
            })
            .collect();
        out.push(Entry {
            disposed_by: user_label(db, Some(d.disposed_by)).await?,
            authorised_by: user_label(db, d.authorised_by).await?,
            completed_by: user_label(db, d.completed_by).await?,
            disposal: d,
            asset,
            evidence,
        });
    }
    Ok(out)
}

fn when(t: Option<UnixTime>) -> String {
    t.map(format_time).unwrap_or_default()
}

/// The report as CSV (one row per disposal; storage evidence in one cell).
pub fn to_csv(entries: &[Entry]) -> String {
    let header = [
        "disposal_record",
        "disposal_date",
        "asset_tag",
        "kind",
        "make",
        "model",
        "device_serial",
        "personal_data",
        "method",
        "receiver",
        "receiver_type",
        "receiver_registration",
        "licence_check_done",
        "licence_notes",
        "pat_check_date",
        "disposed_by",
        "authorised_by",
        "authorised_at",
        "completed_by",
        "completed_at",
        "corrects_record",
        "corrected_by_record",
        "storage_evidence",
    ];
    let mut out = header.join(",");
    out.push_str("\r\n");
    for e in entries {
        let d = &e.disposal;
        let fields = [
            d.id.to_string(),
            d.disposal_date.clone().unwrap_or_default(),
            e.asset.tag.clone(),
            e.asset.kind.as_str().into(),
            e.asset.make.clone(),
            e.asset.model.clone(),
            e.asset.serial.clone(),
            if e.asset.personal_data { "yes" } else { "no" }.into(),
            d.method_label().into(),
            d.receiver_name.clone(),
            d.receiver_kind.clone(),
            d.receiver_registration.clone(),
            if d.licence_checked { "yes" } else { "no" }.into(),
            d.licence_notes.clone(),
            d.pat_date.clone().unwrap_or_default(),
            e.disposed_by.clone(),
            e.authorised_by.clone(),
            when(d.authorised_at),
            e.completed_by.clone(),
            when(d.completed_at),
            d.corrects_id.map(|i| i.to_string()).unwrap_or_default(),
            d.corrected_by.map(|i| i.to_string()).unwrap_or_default(),
            e.evidence
                .iter()
                .map(|(m, ev)| format!("{m}: {ev}"))
                .collect::<Vec<_>>()
                .join(" | "),
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
    out
}

/// The report as a PDF (A4 landscape, as many pages as needed).
pub fn to_pdf(
    entries: &[Entry],
    from: &str,
    to: &str,
    generated_at: UnixTime,
    organisation_url: &str,
) -> Vec<u8> {
    let mut doc = super::pdf::Document::new(&format!("Disposal report {from} to {to}"));
    doc.title("Equipment disposal report");
    doc.line(&format!(
        "Completed disposals with a disposal date from {from} to {to}: {}. Generated {} by Safehand ({organisation_url}).",
        entries.len(),
        format_time(generated_at)
    ));
    doc.line("Each record was authorised by an admin other than the person doing the disposal; every storage medium has evidence: a signed wipe certificate that verified and says ERASED, or a recorded destruction with the contractor's certificate.");
    if entries.is_empty() {
        doc.gap();
        doc.line("No disposals were completed in this period.");
    }
    for e in entries {
        let d = &e.disposal;
        doc.gap();
        doc.heading(&format!(
            "Record {}: {} - {} {} {} ({}), disposed {}{}",
            d.id,
            e.asset.tag,
            e.asset.kind.label(),
            e.asset.make,
            e.asset.model,
            if e.asset.serial.is_empty() {
                "no serial".to_string()
            } else {
                format!("serial {}", e.asset.serial)
            },
            d.disposal_date.clone().unwrap_or_default(),
            match (d.corrects_id, d.corrected_by) {
                (_, Some(n)) => format!("  [SUPERSEDED by record {n}]"),
                (Some(o), None) => format!("  [corrects record {o}]"),
                _ => String::new(),
            }
        ));
        doc.field(
            "May hold personal data",
            if e.asset.personal_data { "yes" } else { "no" },
        );
        doc.field(
            "How disposed of",
            &format!(
                "{} to {} ({}{})",
                d.method_label(),
                d.receiver_name,
                d.receiver_kind,
                if d.receiver_registration.is_empty() {
                    String::new()
                } else {
                    format!(", registration {}", d.receiver_registration)
                }
            ),
        );
        if let Some(pat) = &d.pat_date {
            doc.field("Electrical safety (PAT) check", pat);
        }
        doc.field(
            "Software licence check",
            &format!(
                "{}{}",
                if d.licence_checked {
                    "done"
                } else {
                    "not done"
                },
                if d.licence_notes.is_empty() {
                    String::new()
                } else {
                    format!(": {}", d.licence_notes)
                }
            ),
        );
        doc.field("Disposed by", &e.disposed_by);
        doc.field(
            "Authorised by",
            &format!("{} at {}", e.authorised_by, when(d.authorised_at)),
        );
        doc.field(
            "Record completed",
            &format!("{} by {}", when(d.completed_at), e.completed_by),
        );
        if !d.correction_reason.is_empty() {
            doc.field("Reason for correction", &d.correction_reason);
        }
        for (m, ev) in &e.evidence {
            doc.field(&format!("Storage {m}"), ev);
        }
    }
    doc.finish()
}
