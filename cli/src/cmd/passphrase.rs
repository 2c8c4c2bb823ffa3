//! `safehand passphrase`.

use std::process::ExitCode;

pub fn run() -> anyhow::Result<ExitCode> {
    anyhow::bail!("`safehand passphrase` is not built yet")
}
