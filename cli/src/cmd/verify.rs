//! `safehand verify`.

use std::process::ExitCode;

use crate::args::ReadPayloadArgs;

pub fn run(_args: ReadPayloadArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`safehand verify` is not built yet")
}
