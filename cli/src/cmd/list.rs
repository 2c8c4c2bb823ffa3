//! `safehand list`.

use std::process::ExitCode;

use crate::args::ReadPayloadArgs;

pub fn run(_args: ReadPayloadArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`safehand list` is not built yet")
}
