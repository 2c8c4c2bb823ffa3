//! `safehand decrypt`: one age file or stdin back to plaintext, like `age -d`. A file output
//! appears only once the whole input authenticated.

use std::fs::File;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use safehand_crypto::{decrypt_file_to, decrypt_to, EncryptedFile, PrivateOutput};

use crate::args::DecryptArgs;
use crate::keys;
use crate::progress::{Progress, ProgressReader, ProgressWriter};
use crate::streams::{interrupt_flag, open_input, Cancellable, Destination};

pub fn run(args: DecryptArgs) -> anyhow::Result<ExitCode> {
    let destination = Destination::from_arg(args.output.as_deref());
    let output = match &destination {
        Destination::File(path) => Some(PrivateOutput::create(path, args.force)?),
        Destination::Stdout => None,
    };
    let flag = interrupt_flag();
    let regular_file = args
        .input
        .as_deref()
        .filter(|p| p.as_os_str() != "-")
        .filter(|p| std::fs::metadata(p).map(|m| m.is_file()).unwrap_or(false));
    if let Some(path) = regular_file {
        // A regular file can be read by several threads at once.
        let header = EncryptedFile::new(
            File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        )?;
        let key = keys::decryption_key(&args.identity, header.needs_passphrase())?;
        drop(header);
        let size = std::fs::metadata(path).ok().map(|m| m.len());
        let progress = Progress::new(size, "decrypting");
        let open = || -> std::io::Result<Cancellable<File>> {
            Ok(Cancellable::new(File::open(Path::new(path))?, flag.clone()))
        };
        match output {
            Some(out) => {
                let out = ProgressWriter::new(out, progress.clone());
                let (out, _) = decrypt_file_to(open, &key, out)?;
                out.into_inner().commit()?;
            }
            None => {
                let out = ProgressWriter::new(std::io::stdout(), progress.clone());
                decrypt_file_to(open, &key, out)?;
            }
        }
        progress.finish();
        return Ok(ExitCode::SUCCESS);
    }
    let (input, size) = open_input(args.input.as_deref())?;
    let progress = Progress::new(size, "decrypting");
    let reader = ProgressReader::new(Cancellable::new(input, flag), progress.clone());
    let file = EncryptedFile::new(reader)?;
    let key = keys::decryption_key(&args.identity, file.needs_passphrase())?;
    let plaintext = file.decrypt(&key)?;
    drop(key);
    match output {
        Some(out) => {
            let (out, _) = decrypt_to(plaintext, out)?;
            out.commit()?;
        }
        None => {
            decrypt_to(plaintext, std::io::stdout())?;
        }
    }
    progress.finish();
    Ok(ExitCode::SUCCESS)
}
