//! `safehand wipe`.

use std::process::ExitCode;

use crate::args::WipeArgs;

pub fn run(_args: WipeArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`safehand wipe` is not built yet")
}
