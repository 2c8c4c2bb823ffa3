//! `safehand open`.

use std::process::ExitCode;

use crate::args::OpenArgs;

pub fn run(_args: OpenArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`safehand open` is not built yet")
}
