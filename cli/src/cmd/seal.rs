//! `safehand seal`.

use std::process::ExitCode;

use crate::args::SealArgs;

pub fn run(_args: SealArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`safehand seal` is not built yet")
}
