//! `safehand`: the command-line tool. Thin: argument types in `args.rs`, one file per
//! subcommand in `cmd/`, the work itself in `safehand-crypto` and the modules here.

mod args;
mod cmd;
mod keys;
mod progress;
mod report;
mod streams;
mod usage;
mod wipe;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Encrypt(a) => cmd::encrypt::run(a),
        Command::Decrypt(a) => cmd::decrypt::run(a),
        Command::Seal(a) => cmd::seal::run(a),
        Command::Open(a) => cmd::open::run(a),
        Command::List(a) => cmd::list::run(a),
        Command::Verify(a) => cmd::verify::run(a),
        Command::Passphrase => cmd::passphrase::run(),
        Command::Keygen(a) => cmd::keygen::run(a),
        Command::Devices(a) => cmd::devices::run(a),
        Command::Wipe(a) => cmd::wipe::run(a),
        Command::Cert(c) => cmd::cert::run(c),
        Command::Send(a) => cmd::send::run(a),
        Command::Transfers(a) => cmd::transfers::run(a),
        Command::Recall(a) => cmd::transfers::recall(a),
        Command::Undo(a) => cmd::transfers::undo(a),
        Command::Release(a) => cmd::transfers::release(a),
        Command::Fetch(a) => cmd::fetch::run(a),
        Command::AuditVerify(a) => cmd::audit::run(a),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                // `safehand decrypt f.age | head` is not a failure.
                return ExitCode::SUCCESS;
            }
            if err.downcast_ref::<keys::Interrupted>().is_some() {
                eprintln!("safehand: {err}");
                return ExitCode::from(130);
            }
            if let Some(usage) = err.downcast_ref::<usage::UsageError>() {
                eprintln!("safehand: error: {usage}\n(see `safehand help`)");
                return ExitCode::from(2);
            }
            eprintln!("safehand: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
