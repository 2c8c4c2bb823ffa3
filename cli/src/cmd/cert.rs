//! `safehand cert verify|show|pdf|upload|key`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use safehand_crypto::certificate::{
    render_pdf, verify_certificate, PublicKey, VerifiedCertificate, WipeCertificate,
};

use crate::args::CertCommand;
use crate::wipe::keys;

fn read_verified(path: &Path, trusted: Option<&PublicKey>) -> anyhow::Result<VerifiedCertificate> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    verify_certificate(&bytes, trusted)
        .with_context(|| format!("{} does not verify", path.display()))
}

/// `--trusted-key` takes the key text itself or a file holding it.
pub(crate) fn trusted_key(text: &str) -> anyhow::Result<PublicKey> {
    let from_file;
    let text = if Path::new(text).is_file() {
        from_file = std::fs::read_to_string(text).with_context(|| format!("cannot read {text}"))?;
        from_file.trim()
    } else {
        text.trim()
    };
    text.parse().context("--trusted-key takes a public key as `safehand cert key` prints it (ed25519:...), or a file holding one")
}

fn yes_no(value: Option<bool>) -> &'static str {
    match value {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    }
}

fn opt(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("-")
}

fn show(c: &WipeCertificate, signer: &PublicKey) {
    println!("Certificate of erasure {}", c.certificate_id);
    println!("  result:        {} ({})", c.result, c.result_detail);
    println!("  NIST 800-88:   {} ({})", c.nist.category, c.nist.reason);
    println!("  signed by:     {signer}");
    println!("  operator:      {}", c.operator);
    println!("  organisation:  {}", opt(&c.organisation));
    println!("  asset tag:     {}", opt(&c.asset_tag));
    println!("  host:          {}", c.host);
    println!("  tool:          {} {}", c.tool.name, c.tool.version);
    let d = &c.device;
    println!("  device:        {} ({}, {})", d.path, d.kind, d.transport);
    println!("  model/serial:  {} / {}", opt(&d.model), opt(&d.serial));
    println!(
        "  size:          {} bytes, sectors {}/{}, rotational: {}, removable: {}",
        d.size_bytes,
        d.logical_sector_size,
        d.physical_sector_size,
        yes_no(d.rotational),
        yes_no(d.removable)
    );
    println!(
        "  hidden areas:  {} ({})",
        c.hidden_area.status, c.hidden_area.detail
    );
    println!(
        "  method:        {} x{}{}: {}",
        c.method.name,
        c.method.rounds,
        if c.method.final_blank { " + blank" } else { "" },
        c.method.pass_list.join(", ")
    );
    println!(
        "  verification:  {} ({}; {})",
        c.verification.mode, c.verification.coverage, c.verification.cache_bypass
    );
    println!("  started/ended: {} / {}", c.started_at, c.ended_at);
    for p in &c.passes {
        let verify = p
            .verification
            .as_ref()
            .map(|v| format!(", verify {} ({} bytes)", v.result, v.bytes_verified))
            .unwrap_or_default();
        println!(
            "  pass {:>2}:       {} - {}, {}/{} bytes written{verify}",
            p.number, p.description, p.status, p.bytes_written, p.bytes_planned
        );
        for e in &p.write_errors {
            println!(
                "                 write error bytes {}-{}: {}",
                e.start, e.end, e.error
            );
        }
        if let Some(v) = &p.verification {
            for e in v.mismatches.iter().chain(&v.read_errors) {
                println!(
                    "                 verify bytes {}-{}: {}",
                    e.start, e.end, e.error
                );
            }
        }
    }
    for w in &c.warnings {
        println!("  note: {w}");
    }
}

/// Runs `safehand cert verify|show|pdf|key`; exits 1 when a certificate does not verify.
pub fn run(command: CertCommand) -> anyhow::Result<ExitCode> {
    match command {
        CertCommand::Verify {
            certificate,
            trusted_key: trusted,
        } => {
            let trusted = trusted.as_deref().map(trusted_key).transpose()?;
            let verified = read_verified(&certificate, trusted.as_ref())?;
            println!(
                "OK: {} is signed by {}{}; it says {} for {} ({}).",
                certificate.display(),
                verified.signer,
                if trusted.is_some() {
                    " (the trusted key)"
                } else {
                    " (no --trusted-key given: check this key is the operator's)"
                },
                verified.certificate.result,
                verified.certificate.device.path,
                opt(&verified.certificate.device.serial),
            );
        }
        CertCommand::Show { certificate } => {
            let verified = read_verified(&certificate, None)?;
            show(&verified.certificate, &verified.signer);
        }
        CertCommand::Pdf {
            certificate,
            output,
        } => {
            let verified = read_verified(&certificate, None)?;
            keys::write_private_file(
                &output,
                &render_pdf(&verified.certificate, &verified.signer),
            )?;
            eprintln!("safehand: PDF written to {}", output.display());
        }
        CertCommand::Upload {
            certificate,
            server,
            token_file,
        } => {
            let destination = crate::report::destination(&server, &token_file)?;
            // Check it here first: a changed file gets a clear local message.
            read_verified(&certificate, None)?;
            let bytes = std::fs::read(&certificate)
                .with_context(|| format!("cannot read {}", certificate.display()))?;
            let receipt = destination.upload(&bytes).with_context(|| {
                format!(
                    "{} was not uploaded to {}",
                    certificate.display(),
                    destination.server()
                )
            })?;
            println!("{}", receipt.message);
            if !receipt.url.is_empty() {
                println!("{}", receipt.url);
            }
        }
        CertCommand::Key { key } => {
            let path = match key {
                Some(path) => path,
                None => keys::default_key_path()?,
            };
            let (key, created) = keys::load_or_create(&path)?;
            if created {
                eprintln!(
                    "safehand: created a new signing key at {} (mode 0600)",
                    path.display()
                );
            } else {
                eprintln!("safehand: signing key {}", path.display());
            }
            println!("{}", key.public_key());
        }
    }
    Ok(ExitCode::SUCCESS)
}
