//! `safehand encrypt`: one file or stdin into an age file, like `age -e`.

use std::process::ExitCode;

use safehand_crypto::{encrypt, Armor, PrivateOutput};

use crate::args::EncryptArgs;
use crate::keys;
use crate::progress::{Progress, ProgressReader};
use crate::streams::{interrupt_flag, open_input, Cancellable, Destination};
use crate::usage::usage;

pub fn run(args: EncryptArgs) -> anyhow::Result<ExitCode> {
    let destination = Destination::from_arg(args.output.as_deref());
    let armor = if args.armor {
        Armor::Ascii
    } else {
        Armor::Binary
    };
    if matches!(destination, Destination::Stdout)
        && armor == Armor::Binary
        && keys::stdout_is_terminal()
    {
        return Err(usage(
            "refusing to print binary ciphertext to the terminal: use -o OUT, -a for ASCII armor, \
             or redirect stdout",
        ));
    }
    let output = match &destination {
        // Fail before asking for a passphrase if OUT exists.
        Destination::File(path) => Some(PrivateOutput::create(path, args.force)?),
        Destination::Stdout => None,
    };
    let recipients = keys::recipients(&args.recipients)?;
    let flag = interrupt_flag();
    let (input, size) = open_input(args.input.as_deref())?;
    let progress = Progress::new(size, "encrypting");
    let reader = ProgressReader::new(Cancellable::new(input, flag), progress.clone());
    match output {
        Some(out) => {
            let (out, _) = encrypt(&recipients, armor, reader, out)?;
            out.commit()?;
        }
        None => {
            encrypt(&recipients, armor, reader, std::io::stdout())?;
        }
    }
    progress.finish();
    Ok(ExitCode::SUCCESS)
}
