//! `safehand devices`.

use std::process::ExitCode;

use crate::args::DevicesArgs;

pub fn run(_args: DevicesArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`safehand devices` is not built yet")
}
