//! `safehand seal`: files and folders into one encrypted payload (age + tar).

use std::path::Path;
use std::process::ExitCode;

use safehand_crypto::{payload, PrivateOutput};

use crate::args::SealArgs;
use crate::keys;
use crate::progress::Progress;
use crate::streams::{interrupt_flag, Cancellable};

/// Total bytes of file content under `paths`, for the progress bar.
fn total_size(path: &Path, follow: bool) -> u64 {
    let meta = if follow {
        std::fs::metadata(path)
    } else {
        std::fs::symlink_metadata(path)
    };
    match meta {
        Ok(m) if m.is_file() => m.len(),
        Ok(m) if m.is_dir() => std::fs::read_dir(path)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| total_size(&e.path(), false))
                    .sum()
            })
            .unwrap_or(0),
        _ => 0,
    }
}

pub fn run(args: SealArgs) -> anyhow::Result<ExitCode> {
    let output = PrivateOutput::create(&args.output, args.force)?;
    let recipients = keys::recipients(&args.recipients)?;
    let flag = interrupt_flag();
    let progress = Progress::new(None, "sealing");
    let progress = if progress.enabled() {
        // Only worth walking the tree twice when someone is watching.
        let total = args.paths.iter().map(|p| total_size(p, true)).sum();
        Progress::new(Some(total), "sealing")
    } else {
        progress
    };
    let on_bytes = {
        let progress = progress.clone();
        move |n: u64| progress.advance(n)
    };
    let (output, summary) = payload::seal(
        &args.paths,
        &recipients,
        Cancellable::new(output, flag),
        &on_bytes,
    )?;
    output.into_inner().commit()?;
    progress.finish();
    eprintln!(
        "Sealed {} files, {} folders and {} links ({} bytes) into {}",
        summary.files,
        summary.folders,
        summary.links,
        summary.bytes,
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
}
