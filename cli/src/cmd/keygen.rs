//! `safehand keygen`: a new X25519 identity in `age-keygen`'s format.

use std::io::Write;
use std::process::ExitCode;

use safehand_crypto::{ExposeSecret, Identity, PrivateOutput};

use crate::args::KeygenArgs;

pub fn run(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    let identity = Identity::generate();
    let created = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    let text = identity.to_file_text(&created);
    match args.output {
        Some(path) if path.as_os_str() != "-" => {
            if std::fs::symlink_metadata(&path).is_ok() {
                anyhow::bail!(
                    "{} already exists; Safehand never overwrites an identity file (it may be \
                     the only key to some files): choose another name",
                    path.display()
                );
            }
            let mut out = PrivateOutput::create(&path, false)?;
            out.write_all(text.expose_secret().as_bytes())?;
            out.commit()?;
            eprintln!("Public key: {}", identity.recipient());
        }
        _ => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.expose_secret().as_bytes())?;
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
