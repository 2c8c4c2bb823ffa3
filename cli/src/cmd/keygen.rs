//! `safehand keygen`.

use std::process::ExitCode;

use crate::args::KeygenArgs;

pub fn run(_args: KeygenArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`safehand keygen` is not built yet")
}
