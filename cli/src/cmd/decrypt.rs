//! `safehand decrypt`.

use std::process::ExitCode;

use crate::args::DecryptArgs;

pub fn run(_args: DecryptArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`safehand decrypt` is not built yet")
}
