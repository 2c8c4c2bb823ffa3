//! `safehand audit-verify`: checks an exported audit log offline.

use std::process::ExitCode;

use anyhow::Context;
use safehand_crypto::audit_chain::verify_export;

use crate::args::AuditVerifyArgs;

pub fn run(args: AuditVerifyArgs) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&args.export)
        .with_context(|| format!("cannot read {}", args.export.display()))?;
    let expected = args
        .public_key
        .as_deref()
        .map(super::cert::trusted_key)
        .transpose()
        .context("--public-key takes the key the server's audit page shows (ed25519:...), or a file holding it")?;
    match verify_export(&bytes, expected.as_ref()) {
        Ok(report) => {
            println!(
                "The audit log in {} is intact: {} records, head {}.",
                args.export.display(),
                report.records,
                report.head_hash
            );
            println!(
                "Signed by {} at records {}.",
                report.public_key,
                report
                    .signed_heads
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if expected.is_none() {
                println!("No --public-key was given: compare the key above with the one on the server's audit page (or noted in your records).");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(reason) => {
            eprintln!(
                "safehand: the audit log in {} is NOT intact: {reason}.",
                args.export.display()
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
