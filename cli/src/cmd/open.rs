//! `safehand open`: safe extraction of a sealed payload.

use std::fs::File;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use safehand_crypto::{payload, EncryptedFile};

use crate::args::OpenArgs;
use crate::keys;
use crate::progress::Progress;
use crate::streams::{interrupt_flag, Cancellable};

pub fn run(args: OpenArgs) -> anyhow::Result<ExitCode> {
    let flag = interrupt_flag();
    let path = args.input.clone();
    let open = || -> std::io::Result<File> { File::open(&path) };
    let header =
        EncryptedFile::new(open().with_context(|| format!("cannot open {}", path.display()))?)?;
    let key = keys::decryption_key(&args.identity, header.needs_passphrase())?;
    drop(header);
    let size = std::fs::metadata(&path).ok().map(|m| m.len());
    let progress = Progress::new(size, "opening");
    let on_bytes: Arc<dyn Fn(u64) + Send + Sync> = {
        let progress = progress.clone();
        Arc::new(move |n| progress.advance(n))
    };
    // Ctrl-C: the next read of the payload fails, which removes the staging folder.
    let opener = || -> std::io::Result<Cancellable<File>> {
        Ok(Cancellable::new(File::open(&path)?, Arc::clone(&flag)))
    };
    let dir = args.directory.unwrap_or_else(|| PathBuf::from("."));
    let summary = payload::open_file(opener, &key, &dir, args.force, on_bytes)?;
    drop(key);
    progress.finish();
    eprintln!(
        "Opened {} files, {} folders and {} links ({} bytes) into {}; the payload authenticated",
        summary.files,
        summary.folders,
        summary.links,
        summary.bytes,
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
