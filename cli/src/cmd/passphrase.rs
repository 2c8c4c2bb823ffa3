//! `safehand passphrase`: prints a new generated passphrase.

use std::io::Write;
use std::process::ExitCode;

use safehand_crypto::{passphrase, ExposeSecret};

pub fn run() -> anyhow::Result<ExitCode> {
    let p = passphrase::generate();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", p.expose_secret())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
