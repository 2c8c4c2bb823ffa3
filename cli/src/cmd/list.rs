//! `safehand list`: names, sizes and times of a payload's entries; writes nothing to disk.

use std::fs::File;
use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use safehand_crypto::payload::{self, EntryInfo, EntryKind};
use safehand_crypto::EncryptedFile;

use crate::args::ReadPayloadArgs;
use crate::keys;
use crate::progress::{Progress, ProgressReader};
use crate::streams::{interrupt_flag, Cancellable};

fn type_letter(kind: EntryKind) -> char {
    match kind {
        EntryKind::File => '-',
        EntryKind::Folder => 'd',
        EntryKind::Symlink => 'l',
        EntryKind::HardLink => 'h',
        EntryKind::Other => '?',
    }
}

fn mode_text(kind: EntryKind, mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(type_letter(kind));
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn time_text(mtime: u64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
    i64::try_from(mtime)
        .ok()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "????-??-?? ??:??".into())
}

pub fn line(info: &EntryInfo) -> String {
    let mut s = format!(
        "{} {:>14} {} {}",
        mode_text(info.kind, info.mode),
        info.size,
        time_text(info.mtime),
        info.path
    );
    if let Some(target) = &info.link_target {
        s.push_str(if info.kind == EntryKind::HardLink {
            " link to "
        } else {
            " -> "
        });
        s.push_str(target);
    }
    s
}

pub fn run(args: ReadPayloadArgs) -> anyhow::Result<ExitCode> {
    let flag = interrupt_flag();
    let file =
        File::open(&args.input).with_context(|| format!("cannot open {}", args.input.display()))?;
    let size = file.metadata().ok().map(|m| m.len());
    let progress = Progress::new(size, "listing");
    let reader = ProgressReader::new(Cancellable::new(file, flag), progress.clone());
    let encrypted = EncryptedFile::new(reader)?;
    let key = keys::decryption_key(&args.identity, encrypted.needs_passphrase())?;
    let plaintext = encrypted.decrypt(&key)?;
    drop(key);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let count = payload::list(plaintext, |info| writeln!(out, "{}", line(info)))?;
    out.flush()?;
    progress.finish();
    eprintln!("{count} entries; the whole payload authenticated (times in UTC)");
    Ok(ExitCode::SUCCESS)
}
