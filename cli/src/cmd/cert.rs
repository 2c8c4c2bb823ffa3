//! `safehand cert verify|show|pdf|key`.

use std::process::ExitCode;

use crate::args::CertCommand;

pub fn run(_command: CertCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`safehand cert` is not built yet")
}
