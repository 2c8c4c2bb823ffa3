//! `safehand verify`: checks that every byte of a payload authenticates; writes nothing.

use std::fs::File;
use std::process::ExitCode;

use anyhow::Context;
use safehand_crypto::{payload, EncryptedFile};

use crate::args::ReadPayloadArgs;
use crate::keys;
use crate::progress::{Progress, ProgressReader};
use crate::streams::{interrupt_flag, Cancellable};

pub fn run(args: ReadPayloadArgs) -> anyhow::Result<ExitCode> {
    let flag = interrupt_flag();
    let file =
        File::open(&args.input).with_context(|| format!("cannot open {}", args.input.display()))?;
    let size = file.metadata().ok().map(|m| m.len());
    let progress = Progress::new(size, "verifying");
    let reader = ProgressReader::new(Cancellable::new(file, flag), progress.clone());
    let encrypted = EncryptedFile::new(reader)?;
    let key = keys::decryption_key(&args.identity, encrypted.needs_passphrase())?;
    let plaintext = encrypted.decrypt(&key)?;
    drop(key);
    let summary = payload::verify(plaintext)?;
    progress.finish();
    match summary.entries {
        Some(n) => println!(
            "OK: {} authenticated: a sealed payload of {n} entries ({} bytes of plaintext)",
            args.input.display(),
            summary.plaintext_bytes
        ),
        None => println!(
            "OK: {} authenticated: one encrypted file of {} bytes",
            args.input.display(),
            summary.plaintext_bytes
        ),
    }
    Ok(ExitCode::SUCCESS)
}
