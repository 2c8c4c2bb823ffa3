//! `safehand decrypt`: one age file or stdin back to plaintext, like `age -d`. A file output
//! appears only once the whole input authenticated.

use std::process::ExitCode;

use safehand_crypto::{decrypt_to, EncryptedFile, PrivateOutput};

use crate::args::DecryptArgs;
use crate::keys;
use crate::progress::{Progress, ProgressReader};
use crate::streams::{interrupt_flag, open_input, Cancellable, Destination};

pub fn run(args: DecryptArgs) -> anyhow::Result<ExitCode> {
    let destination = Destination::from_arg(args.output.as_deref());
    let output = match &destination {
        Destination::File(path) => Some(PrivateOutput::create(path, args.force)?),
        Destination::Stdout => None,
    };
    let flag = interrupt_flag();
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
