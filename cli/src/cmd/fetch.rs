//! `safehand fetch LINK`: the recipient's steps from the command line. The server emails a
//! one-time code; the code buys a 30-minute recipient session; the `.age` payload (ciphertext)
//! is downloaded into a private temporary file and opened with the same safe extraction as
//! `safehand open`. The passphrase is typed here and never sent anywhere.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::bail;

use crate::args::{FetchArgs, IdentityArgs, OpenArgs};
use crate::progress::Progress;
use crate::report::Link;

/// Reads the code from the terminal (or one line of standard input in scripts).
fn code() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        eprint!("Enter the 8-digit code from the email: ");
        std::io::stderr().flush()?;
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let code: String = line.chars().filter(|c| !c.is_whitespace()).collect();
    if code.is_empty() {
        bail!("no code given: run the same command again and type the code from the email");
    }
    Ok(code)
}

pub fn run(args: FetchArgs) -> anyhow::Result<ExitCode> {
    let link = Link::parse(&args.link)?;
    link.request_code()?;
    eprintln!("A one-time code has been emailed to you. It works for 15 minutes.");
    let (session, size) = link.session(&code()?)?;
    let dir = args
        .directory
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from("."));
    // Ciphertext only, private, removed when dropped (also on failure).
    let (temp, mut file) = super::send::TempPayload::create()?;
    let progress = Progress::new(size, "downloading");
    let on_bytes = {
        let progress = progress.clone();
        move |n: u64| progress.advance(n)
    };
    let got = link.download(&session, &mut file, &on_bytes)?;
    file.flush()?;
    drop(file);
    progress.finish();
    drop(session);
    eprintln!("Downloaded the encrypted payload ({got} bytes); opening it here.");
    let status = super::open::run(OpenArgs {
        identity: IdentityArgs {
            identities: Vec::new(),
            passphrase_file: args.passphrase_file,
        },
        input: temp.path.clone(),
        directory: Some(dir),
        force: args.force,
    });
    drop(temp);
    status
}
