//! `safehand wipe`: identify, refuse or confirm, overwrite and verify, then sign a certificate.
//!
//! Exit codes: 0 ERASED; 1 nothing was written (refused, not confirmed, bad input); 2 bad
//! usage; 3 FAILED; 4 INCOMPLETE (interrupted); 5 UNVERIFIED (`--verify none`); 6 ERASED but
//! the upload to `--report-to` failed (the certificate is on disk; the message says how to
//! upload it later).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context};
use rand_core::{OsRng, RngCore};
use safehand_crypto::certificate::{
    render_pdf, sign_certificate, HiddenAreaFinding, MethodFacts, NistCategory, NistFinding,
    PassRecord, ToolFacts, VerificationFacts, WipeCertificate, WipeResult, CERTIFICATE_FORMAT,
};

use crate::args::WipeArgs;
use crate::wipe::engine::{Engine, Medium, StoppedAt, TestHooks};
use crate::wipe::method::{plan, VerifyMode};
use crate::wipe::target::{identify, open, refusal, Target};
use crate::wipe::{hidden, keys};

/// What flash and SSD media get told, on screen and on the certificate.
pub const FLASH_NOTICE: &str = "Flash/SSD or removable medium: an overwrite reaches NIST SP 800-88 Clear only. \
Spare, remapped and over-provisioned flash blocks are out of its reach; Purge needs a firmware sanitize \
(ATA/NVMe Sanitize block or crypto erase) or physical destruction.";

fn exit_code(result: WipeResult) -> ExitCode {
    ExitCode::from(match result {
        WipeResult::Erased => 0,
        WipeResult::Failed => 3,
        WipeResult::Incomplete => 4,
        WipeResult::Unverified => 5,
    })
}

fn human_size(bytes: u64) -> String {
    let units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {} ({bytes} bytes)", units[unit])
    }
}

fn operator_name() -> String {
    ["SUDO_USER", "LOGNAME", "USER"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".into())
}

/// Warnings that hold whatever the outcome.
fn warnings_for(target: &Target, hidden: &HiddenAreaFinding, medium_direct: bool) -> Vec<String> {
    let mut warnings = Vec::new();
    let facts = &target.facts;
    if facts.rotational == Some(false) || facts.removable == Some(true) {
        warnings.push(FLASH_NOTICE.to_string());
    }
    match &hidden.status[..] {
        "detected" => warnings.push(hidden.detail.clone()),
        "unknown" => warnings.push(format!(
            "Hidden sectors (HPA/DCO) could not be ruled out: {}.",
            hidden.detail
        )),
        _ => {}
    }
    match &facts.kind[..] {
        "file" => warnings.push(
            "A file was overwritten in place through its file system: journaling, copy-on-write or snapshotting \
             file systems, backups and flash media may keep earlier copies of its data elsewhere."
                .into(),
        ),
        "partition" => warnings.push(
            "Only this partition was overwritten; the partition table and the rest of the disk were not touched."
                .into(),
        ),
        "loop" => {
            let backing = target.device.as_ref().and_then(|d| d.backing_file.clone()).unwrap_or_else(|| "a file".into());
            warnings.push(format!(
                "A loop device (backed by {backing}) was overwritten: copies the backing file's own storage may keep \
                 (file system, flash) are outside its reach."
            ));
        }
        _ => {}
    }
    if !medium_direct {
        warnings.push(
            "O_DIRECT was not available: verification flushed the writes and dropped the page cache before reading back."
                .into(),
        );
    }
    warnings
}

fn nist_for(target: &Target, hidden: &HiddenAreaFinding, result: WipeResult) -> NistFinding {
    let none = |reason: String| NistFinding {
        category: NistCategory::None,
        reason,
    };
    if result != WipeResult::Erased {
        return none(format!(
            "the wipe ended {result}: not every byte was written and read back as expected"
        ));
    }
    if hidden.status == "detected" {
        return none("a host-protected area hides sectors the overwrite did not reach".into());
    }
    match &target.facts.kind[..] {
        "file" => none(
            "NIST SP 800-88 categories apply to whole media; only one file was overwritten".into(),
        ),
        "partition" => none(
            "NIST SP 800-88 categories apply to whole media; only one partition was overwritten"
                .into(),
        ),
        _ => {
            let flash =
                target.facts.rotational == Some(false) || target.facts.removable == Some(true);
            NistFinding {
                category: NistCategory::Clear,
                reason: format!(
                    "every user-addressable sector was overwritten and read back (Clear). An overwrite is never Purge: \
                     Purge needs a firmware sanitize, crypto erase, degaussing (magnetic only) or destruction{}.",
                    if flash { "; on flash media spare and remapped blocks are beyond an overwrite" } else { "" }
                ),
            }
        }
    }
}

fn outcome(
    passes: &[PassRecord],
    stopped: Option<StoppedAt>,
    size: u64,
    total: usize,
) -> (WipeResult, String) {
    if let Some(stop) = stopped {
        let pct = if size == 0 {
            100.0
        } else {
            stop.offset as f64 * 100.0 / size as f64
        };
        return (
            WipeResult::Incomplete,
            format!(
                "stopped by a signal during pass {} of {total} ({}) at byte {} of {size} ({pct:.1}%); {} pass(es) finished before that",
                stop.pass,
                if stop.verifying { "verifying" } else { "writing" },
                stop.offset,
                stop.pass.saturating_sub(1)
            ),
        );
    }
    let write_errors: usize = passes
        .iter()
        .map(|p| p.write_errors.len() + p.more_write_errors_not_listed as usize)
        .sum();
    let short: bool = passes.iter().any(|p| p.bytes_written < p.bytes_planned);
    let (mut mismatches, mut read_errors) = (0usize, 0usize);
    for v in passes.iter().filter_map(|p| p.verification.as_ref()) {
        mismatches += v.mismatches.len();
        read_errors += v.read_errors.len() + v.more_ranges_not_listed as usize;
    }
    if write_errors > 0 || short || mismatches > 0 || read_errors > 0 {
        return (
            WipeResult::Failed,
            format!(
                "{write_errors} write error range(s), {mismatches} verification mismatch range(s), {read_errors} read error range(s); \
                 the byte ranges are listed per pass"
            ),
        );
    }
    let verified: Vec<String> = passes
        .iter()
        .filter(|p| p.verification.is_some())
        .map(|p| p.number.to_string())
        .collect();
    if verified.is_empty() {
        return (
            WipeResult::Unverified,
            format!("all {total} pass(es) written without error, but nothing was read back (--verify none), so erasure is not confirmed"),
        );
    }
    (
        WipeResult::Erased,
        format!(
            "all {total} pass(es) written in full without error; pass(es) {} read back exactly as written",
            verified.join(", ")
        ),
    )
}

fn describe(target: &Target) -> String {
    let f = &target.facts;
    let mut lines = vec![
        format!("  target:     {} ({})", f.path, f.kind),
        format!("  size:       {}", human_size(f.size_bytes)),
    ];
    if f.kind != "file" {
        lines.push(format!(
            "  model:      {}",
            f.model.as_deref().unwrap_or("unknown")
        ));
        lines.push(format!(
            "  serial:     {}",
            f.serial.as_deref().unwrap_or("none reported")
        ));
        lines.push(format!("  transport:  {}", f.transport));
        lines.push(format!(
            "  sectors:    {} logical / {} physical bytes",
            f.logical_sector_size, f.physical_sector_size
        ));
    }
    if let Some(device) = &target.device {
        if !device.partitions.is_empty() {
            lines.push(format!("  partitions: {}", device.partitions.join(", ")));
        }
        if let Some(backing) = &device.backing_file {
            lines.push(format!("  backed by:  {backing}"));
        }
    }
    lines.join("\n")
}

/// Runs `safehand wipe`; the exit code follows the result (see the module docs).
pub fn run(args: WipeArgs) -> anyhow::Result<ExitCode> {
    let verify = VerifyMode::parse(&args.verify)?;
    let wipe_plan = plan(&args.method, verify, args.passes.unwrap_or(1), args.blank)?;
    let target = identify(&args.target)?;
    if let Some(why) = refusal(&target) {
        bail!("{why}");
    }
    if args.remove && !target.is_file() {
        return Err(crate::usage::usage(format!(
            "--remove only applies to a regular file; {} is a {}",
            target.path.display(),
            target.facts.kind
        )));
    }
    // The server and token are checked before anything is destroyed, too.
    let destination = match (&args.report_to, &args.token_file) {
        (Some(server), Some(token_file)) => Some(crate::report::destination(server, token_file)?),
        _ => None,
    };
    // The key comes before anything is destroyed: a wipe must always end in a certificate.
    let key_path = match &args.key {
        Some(path) => path.clone(),
        None => keys::default_key_path()?,
    };
    let (key, created) = keys::load_or_create(&key_path)?;
    if created {
        eprintln!(
            "safehand: created a new signing key at {} (public key {})",
            key_path.display(),
            key.public_key()
        );
    }
    let certificate_id = {
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        hex::encode(id)
    };
    let certificate_path = args.certificate.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "safehand-certificate-{}.json",
            &certificate_id[..12]
        ))
    });
    for out in [Some(&certificate_path), args.pdf.as_ref()]
        .into_iter()
        .flatten()
    {
        let dir = out
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        if !dir.is_dir() {
            bail!(
                "the folder for {} does not exist; create it first (nothing was written)",
                out.display()
            );
        }
    }
    if certificate_path.exists() {
        // A certificate is a register record: never replace one by accident.
        bail!(
            "{} already exists; choose another --certificate name (nothing was written)",
            certificate_path.display()
        );
    }

    let hidden = hidden::check(
        &target.facts.path,
        &target.facts.kind,
        &target.facts.transport,
    );
    eprintln!(
        "safehand: about to DESTROY everything on:\n{}",
        describe(&target)
    );
    eprintln!(
        "  method:     {} ({} pass(es): {}), verify {}",
        wipe_plan.method,
        wipe_plan.passes.len(),
        wipe_plan
            .passes
            .iter()
            .map(|p| p.pattern.label())
            .collect::<Vec<_>>()
            .join(", "),
        verify.name()
    );
    let expected = target.confirmation_text();
    if let Some(given) = &args.expect_serial {
        if !target.confirms(given) {
            bail!(
                "--expect-serial `{given}` does not match {}: expected `{expected}` ({}). Nothing was written.",
                target.path.display(),
                if target.facts.serial.is_some() && target.facts.kind != "file" && target.facts.kind != "loop" {
                    "its serial number"
                } else {
                    "its path"
                }
            );
        }
    }
    if !args.yes {
        eprint!("Type `{expected}` to confirm, or anything else to stop: ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .context("cannot read the confirmation")?;
        if !target.confirms(&answer) {
            bail!("the confirmation did not match `{expected}`; nothing was written");
        }
    }

    let interrupt = Arc::new(AtomicBool::new(false));
    for signal in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        // A second Ctrl-C ends the program at once; the first one stops the wipe cleanly.
        signal_hook::flag::register_conditional_shutdown(
            signal,
            128 + signal,
            Arc::clone(&interrupt),
        )
        .context("cannot install the signal handler")?;
        signal_hook::flag::register(signal, Arc::clone(&interrupt))
            .context("cannot install the signal handler")?;
    }

    let medium: Medium = open(&target)?;
    let warnings = warnings_for(&target, &hidden, medium.direct);
    for warning in &warnings {
        eprintln!("safehand: note: {warning}");
    }
    let started_at = now();
    let engine = Engine {
        medium: &medium,
        interrupt: &interrupt,
        hooks: TestHooks::from_env(),
        show_progress: std::io::stderr().is_terminal(),
    };
    let (passes, stopped) = engine.run(&wipe_plan.passes);
    let ended_at = now();
    let cache_bypass = medium.cache_bypass().to_string();
    drop(medium);

    let (result, result_detail) = outcome(
        &passes,
        stopped,
        target.facts.size_bytes,
        wipe_plan.passes.len(),
    );
    let certificate = WipeCertificate {
        format: CERTIFICATE_FORMAT.into(),
        certificate_id,
        tool: ToolFacts {
            name: "safehand".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        operator: args.operator.clone().unwrap_or_else(operator_name),
        organisation: args.organisation.clone(),
        asset_tag: args.asset_tag.clone(),
        host: host_name(),
        device: target.facts.clone(),
        nist: nist_for(&target, &hidden, result),
        hidden_area: hidden,
        method: MethodFacts {
            name: wipe_plan.method.clone(),
            pass_list: wipe_plan.passes.iter().map(|p| p.pattern.label()).collect(),
            rounds: wipe_plan.rounds,
            final_blank: wipe_plan.blank,
        },
        verification: VerificationFacts {
            mode: verify.name().into(),
            cache_bypass,
            coverage: "full read-back of every byte of each verified pass".into(),
        },
        passes,
        warnings,
        result,
        result_detail: result_detail.clone(),
        started_at,
        ended_at,
    };
    let signed = sign_certificate(&certificate, &key)?;
    keys::write_private_file(&certificate_path, &signed)?;
    eprintln!(
        "safehand: certificate written to {}",
        certificate_path.display()
    );
    if let Some(pdf_path) = &args.pdf {
        keys::write_private_file(pdf_path, &render_pdf(&certificate, &key.public_key()))?;
        eprintln!("safehand: PDF written to {}", pdf_path.display());
    }
    if args.remove {
        if result == WipeResult::Erased {
            remove_file(&target.path)?;
            eprintln!("safehand: removed {}", target.path.display());
        } else {
            eprintln!(
                "safehand: not removing {}: the wipe ended {result}",
                target.path.display()
            );
        }
    }
    println!("{result}: {result_detail}");
    println!(
        "NIST SP 800-88 category: {} ({})",
        certificate.nist.category, certificate.nist.reason
    );
    if let (Some(destination), Some(token_file)) = (&destination, &args.token_file) {
        match destination.upload(&signed) {
            Ok(receipt) => {
                eprintln!("safehand: certificate uploaded to {}", destination.server());
                println!("{}", receipt.message);
                if !receipt.url.is_empty() {
                    println!("{}", receipt.url);
                }
            }
            Err(err) => {
                eprintln!(
                    "safehand: error: the certificate was NOT uploaded to {}: {err:#}\n\
                     It is saved at {}. Upload it later with:\n  safehand cert upload {} --server {} --token-file {}",
                    destination.server(),
                    certificate_path.display(),
                    certificate_path.display(),
                    destination.server(),
                    token_file.display()
                );
                if result == WipeResult::Erased {
                    return Ok(ExitCode::from(6));
                }
            }
        }
    }
    Ok(exit_code(result))
}

/// Renames the wiped file to a meaningless name, then unlinks it, so its old name does not
/// linger in the directory entry.
fn remove_file(path: &std::path::Path) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let len = path.file_name().map(|n| n.len()).unwrap_or(1).max(1);
    let anonymous = dir.join("0".repeat(len));
    let victim = if !anonymous.exists() && std::fs::rename(path, &anonymous).is_ok() {
        anonymous
    } else {
        path.to_path_buf()
    };
    std::fs::remove_file(&victim).with_context(|| format!("cannot remove {}", victim.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
