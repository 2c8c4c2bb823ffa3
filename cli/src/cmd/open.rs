//! `safehand open`: safe extraction of a sealed payload.

use std::fs::File;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use safehand_crypto::{payload, EncryptedFile};

use crate::args::OpenArgs;
use crate::keys;
use crate::progress::{Progress, ProgressReader};
use crate::streams::{interrupt_flag, Cancellable};

pub fn run(args: OpenArgs) -> anyhow::Result<ExitCode> {
    let flag = interrupt_flag();
    let file =
        File::open(&args.input).with_context(|| format!("cannot open {}", args.input.display()))?;
    let size = file.metadata().ok().map(|m| m.len());
    let progress = Progress::new(size, "opening");
    let reader = ProgressReader::new(Cancellable::new(file, flag), progress.clone());
    let encrypted = EncryptedFile::new(reader)?;
    let key = keys::decryption_key(&args.identity, encrypted.needs_passphrase())?;
    let plaintext = encrypted.decrypt(&key)?;
    drop(key);
    let dir = args.directory.unwrap_or_else(|| PathBuf::from("."));
    let summary = payload::open(plaintext, &dir, args.force)?;
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
