//! One-page PDF rendering of a certificate, for a person to sign (NIST SP 800-88 Appendix G
//! style: the operator's attestation plus a second person's validation).
//!
//! Hand-written PDF 1.4 ([`crate::pdf`]) with the standard Helvetica fonts: no font files, no
//! images, a few kilobytes, and text that `pdftotext` and screen readers can extract. Pulling
//! in a PDF crate for one page of text would add far more code than this file.

use super::{ByteRangeError, PublicKey, WipeCertificate};
use crate::pdf::{assemble, show_text, wrap};

const PAGE_WIDTH: f32 = 595.0; // A4 in points
const PAGE_HEIGHT: f32 = 842.0;
const MARGIN: f32 = 40.0;
const BODY_SIZE: f32 = 8.5;
const LINE: f32 = 10.5;
/// Characters per body line; Helvetica at 8.5 pt averages about 4.3 pt per character.
const WRAP: usize = 112;
/// Lowest y the facts may reach; below it is the signature block.
const FACTS_FLOOR: f32 = 215.0;

struct Page {
    ops: String,
    y: f32,
    truncated: bool,
}

impl Page {
    fn text(&mut self, x: f32, y: f32, font: &str, size: f32, text: &str) {
        show_text(&mut self.ops, font, size, x, y, text);
    }

    fn rule(&mut self, x1: f32, y1: f32, x2: f32) {
        self.ops
            .push_str(&format!("0.5 w {x1:.1} {y1:.1} m {x2:.1} {y1:.1} l S\n"));
    }

    /// Adds a body line; drops it (and notes that) if the facts area is full.
    fn line(&mut self, font: &str, text: &str) {
        if self.y < FACTS_FLOOR + LINE {
            if !self.truncated {
                self.truncated = true;
                let y = self.y;
                self.text(
                    MARGIN,
                    y,
                    "F2",
                    BODY_SIZE,
                    "... more in the signed JSON certificate.",
                );
                self.y -= LINE;
            }
            return;
        }
        let y = self.y;
        self.text(MARGIN, y, font, BODY_SIZE, text);
        self.y -= LINE;
    }

    fn field(&mut self, label: &str, value: &str) {
        let mut first = true;
        for chunk in wrap(&format!("{label}: {value}"), WRAP) {
            let chunk = if first { chunk } else { format!("    {chunk}") };
            self.line("F1", &chunk);
            first = false;
        }
    }

    fn heading(&mut self, text: &str) {
        self.y -= 3.0;
        self.line("F2", text);
    }
}

fn yes_no(value: Option<bool>) -> &'static str {
    match value {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    }
}

fn ranges(list: &[ByteRangeError], more: u64) -> String {
    let mut parts: Vec<String> = list
        .iter()
        .take(4)
        .map(|r| format!("bytes {}-{} ({})", r.start, r.end, r.error))
        .collect();
    let hidden = (list.len().saturating_sub(4)) as u64 + more;
    if hidden > 0 {
        parts.push(format!("and {hidden} more"));
    }
    parts.join("; ")
}

/// Renders the certificate as a one-page A4 PDF with signature and validation blocks.
pub fn render_pdf(certificate: &WipeCertificate, signer: &PublicKey) -> Vec<u8> {
    let c = certificate;
    let mut page = Page {
        ops: String::new(),
        y: PAGE_HEIGHT - MARGIN - 14.0,
        truncated: false,
    };
    let y = page.y;
    page.text(MARGIN, y, "F2", 16.0, "Certificate of Erasure");
    page.y -= 16.0;
    let y = page.y;
    page.text(
        MARGIN,
        y,
        "F1",
        BODY_SIZE,
        "Record of media sanitization (NIST SP 800-88 Appendix G form), produced by Safehand.",
    );
    page.y -= 18.0;
    let y = page.y;
    page.text(
        MARGIN,
        y,
        "F2",
        12.0,
        &format!(
            "Result: {}     NIST SP 800-88 category: {}",
            c.result, c.nist.category
        ),
    );
    page.y -= 14.0;
    page.field("Why", &c.result_detail);
    page.field("Category reason", &c.nist.reason);

    page.heading("Media");
    page.field(
        "Device",
        &format!(
            "{} ({}, {})",
            c.device.path, c.device.kind, c.device.transport
        ),
    );
    page.field(
        "Model / serial",
        &format!(
            "{} / {}",
            c.device.model.as_deref().unwrap_or("unknown"),
            c.device.serial.as_deref().unwrap_or("unknown")
        ),
    );
    page.field(
        "Size",
        &format!(
            "{} bytes; sectors {} logical / {} physical; rotational: {}; removable: {}",
            c.device.size_bytes,
            c.device.logical_sector_size,
            c.device.physical_sector_size,
            yes_no(c.device.rotational),
            yes_no(c.device.removable)
        ),
    );
    page.field(
        "Hidden areas (HPA/DCO)",
        &format!("{}: {}", c.hidden_area.status, c.hidden_area.detail),
    );
    page.field(
        "Asset tag",
        c.asset_tag.as_deref().unwrap_or("(none given)"),
    );

    page.heading("Sanitization");
    page.field(
        "Method",
        &format!(
            "{} (overwrite), {} round(s){}; pass list: {}",
            c.method.name,
            c.method.rounds,
            if c.method.final_blank {
                ", final blanking pass"
            } else {
                ""
            },
            c.method.pass_list.join(", ")
        ),
    );
    page.field(
        "Verification",
        &format!(
            "{} ({}, reads bypass the page cache via {})",
            c.verification.mode, c.verification.coverage, c.verification.cache_bypass
        ),
    );
    page.field(
        "Tool",
        &format!("{} {} on host {}", c.tool.name, c.tool.version, c.host),
    );
    page.field(
        "Started / ended",
        &format!("{} / {}", c.started_at, c.ended_at),
    );
    // Long methods (Gutmann's 35 passes) get one summary line for the uneventful passes, so
    // the page keeps room for the ones with errors or a read-back.
    let compact = c.passes.len() > 6;
    if compact {
        let plain: Vec<String> = c
            .passes
            .iter()
            .filter(|p| p.verification.is_none() && p.write_errors.is_empty())
            .map(|p| format!("{} ({}, {})", p.number, p.pattern, p.status))
            .collect();
        if !plain.is_empty() {
            page.field(
                "Passes without read-back or errors",
                &format!(
                    "{}; each {} bytes; times and seed digests are in the JSON certificate",
                    plain.join(", "),
                    c.device.size_bytes
                ),
            );
        }
    }
    for pass in c
        .passes
        .iter()
        .filter(|p| !compact || p.verification.is_some() || !p.write_errors.is_empty())
    {
        let verify = match &pass.verification {
            Some(v) => format!("verify {} ({} bytes)", v.result, v.bytes_verified),
            None => "not verified".into(),
        };
        page.field(
            &format!("Pass {}", pass.number),
            &format!(
                "{}: {}, {} of {} bytes written, {}; {} to {}",
                pass.description,
                pass.status,
                pass.bytes_written,
                pass.bytes_planned,
                verify,
                pass.started_at.as_deref().unwrap_or("-"),
                pass.ended_at.as_deref().unwrap_or("-"),
            ),
        );
        if !pass.write_errors.is_empty() {
            page.field(
                "    write errors",
                &ranges(&pass.write_errors, pass.more_write_errors_not_listed),
            );
        }
        if let Some(v) = &pass.verification {
            if !v.mismatches.is_empty() {
                page.field(
                    "    mismatches",
                    &ranges(&v.mismatches, v.more_ranges_not_listed),
                );
            }
            if !v.read_errors.is_empty() {
                page.field("    read errors", &ranges(&v.read_errors, 0));
            }
        }
    }
    if !c.warnings.is_empty() {
        page.heading("Warnings");
        for warning in &c.warnings {
            page.field("!", warning);
        }
    }

    // Signature block: always at the same place at the foot of the page.
    let mut y = FACTS_FLOOR - 6.0;
    page.text(
        MARGIN,
        y,
        "F1",
        7.0,
        &format!(
            "Certificate id {}; signed (Ed25519) by {}.",
            c.certificate_id, signer
        ),
    );
    y -= 9.0;
    page.text(MARGIN, y, "F1", 7.0, "The signed JSON file is the authoritative record: check it with `safehand cert verify CERT.json --trusted-key KEY`.");
    y -= 16.0;
    page.text(MARGIN, y, "F2", 9.5, "Person performing sanitization");
    y -= 11.0;
    page.text(MARGIN, y, "F1", BODY_SIZE, "I attest that the information provided on this statement is accurate to the best of my knowledge.");
    y -= 18.0;
    let org = c.organisation.as_deref().unwrap_or("");
    page.text(MARGIN, y, "F1", BODY_SIZE, &format!("Name: {}", c.operator));
    page.text(300.0, y, "F1", BODY_SIZE, &format!("Organisation: {org}"));
    y -= 22.0;
    page.text(MARGIN, y, "F1", BODY_SIZE, "Signature:");
    page.rule(MARGIN + 45.0, y - 1.0, 280.0);
    page.text(300.0, y, "F1", BODY_SIZE, "Date:");
    page.rule(325.0, y - 1.0, PAGE_WIDTH - MARGIN);
    y -= 24.0;
    page.text(MARGIN, y, "F2", 9.5, "Validation (second person)");
    y -= 20.0;
    page.text(MARGIN, y, "F1", BODY_SIZE, "Name:");
    page.rule(MARGIN + 28.0, y - 1.0, 280.0);
    page.text(300.0, y, "F1", BODY_SIZE, "Title / organisation:");
    page.rule(385.0, y - 1.0, PAGE_WIDTH - MARGIN);
    y -= 22.0;
    page.text(MARGIN, y, "F1", BODY_SIZE, "Signature:");
    page.rule(MARGIN + 45.0, y - 1.0, 280.0);
    page.text(300.0, y, "F1", BODY_SIZE, "Date:");
    page.rule(325.0, y - 1.0, PAGE_WIDTH - MARGIN);
    y -= 22.0;
    page.text(
        MARGIN,
        y,
        "F1",
        BODY_SIZE,
        "Media destination (reuse / recycling / destruction / other):",
    );
    page.rule(265.0, y - 1.0, PAGE_WIDTH - MARGIN);

    assemble(
        &[page.ops],
        PAGE_WIDTH,
        PAGE_HEIGHT,
        &format!("Certificate of Erasure {}", c.certificate_id),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pdf_has_structure_and_escapes() {
        let key = super::super::SigningKey::generate();
        let pdf = render_pdf(&WipeCertificate::example(), &key.public_key());
        let text = String::from_utf8_lossy(&pdf);
        assert!(text.starts_with("%PDF-1.4"));
        assert!(text.contains("(Result: ERASED     NIST SP 800-88 category: Clear)"));
        assert!(text.trim_end().ends_with("%%EOF"));
        assert!(text.contains("/Count 1"));
    }
}
