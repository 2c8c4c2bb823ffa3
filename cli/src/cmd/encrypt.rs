//! `safehand encrypt`.

use std::process::ExitCode;

use crate::args::EncryptArgs;

pub fn run(_args: EncryptArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`safehand encrypt` is not built yet")
}
