//! Turning command-line options into recipients, identities and passphrases: reading key
//! files, asking for passphrases at the terminal (twice, no echo), generating them, and
//! checking the strength of chosen ones.

use std::fs;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use rustix::termios;
use safehand_crypto::passphrase;
use safehand_crypto::{DecryptionKey, ExposeSecret, Identity, Recipient, Recipients, SecretString};
use zeroize::Zeroizing;

use crate::args::{IdentityArgs, RecipientArgs};
use crate::usage::usage;

/// Reads the passphrase from the first line of `path` (a trailing newline is not part of it).
pub fn passphrase_from_file(path: &Path) -> anyhow::Result<SecretString> {
    let text = Zeroizing::new(
        fs::read_to_string(path)
            .with_context(|| format!("cannot read the passphrase file {}", path.display()))?,
    );
    let first = text.lines().next().unwrap_or("");
    if first.is_empty() {
        anyhow::bail!(
            "the passphrase file {} is empty: put the passphrase on its first line",
            path.display()
        );
    }
    Ok(SecretString::from(first))
}

/// Asks for a secret at the terminal. Echo is turned off before the prompt is shown, so
/// nothing typed as soon as the prompt appears can reach the screen, and turned back on
/// afterwards whatever happens.
fn prompt(message: &str) -> anyhow::Result<SecretString> {
    let no_terminal = |e: std::io::Error| {
        anyhow::anyhow!(
            "cannot ask for the passphrase ({e}): there is no terminal; use --passphrase-file F"
        )
    };
    let tty = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(no_terminal)?;
    // Ctrl-C (or SIGTERM, SIGHUP) at the prompt cancels it at once, with the terminal put
    // back; the commands' own handlers would otherwise wait for the work that has not begun.
    // Caught before echo goes off, so no signal can end the program with it off.
    let interrupted = Arc::new(AtomicBool::new(false));
    let _handlers = InterruptHandlers::register(&interrupted);
    let saved = termios::tcgetattr(&tty).map_err(|e| no_terminal(e.into()))?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(termios::LocalModes::ECHO);
    quiet.local_modes.insert(termios::LocalModes::ECHONL);
    termios::tcsetattr(&tty, termios::OptionalActions::Now, &quiet)
        .map_err(|e| no_terminal(e.into()))?;
    let _restore = RestoreTerminal { tty: &tty, saved };

    (&tty).write_all(message.as_bytes())?;
    (&tty).flush()?;
    // In canonical mode one read returns at most one line, so nothing typed ahead for a
    // later prompt is consumed here.
    let mut line = Zeroizing::new(Vec::with_capacity(128));
    let mut chunk = Zeroizing::new([0u8; 256]);
    loop {
        wait_for_line(&tty, &interrupted)?;
        let n = std::io::Read::read(&mut &tty, &mut chunk[..])?;
        if n == 0 {
            anyhow::bail!("no passphrase was entered (end of input); nothing was done");
        }
        line.extend_from_slice(&chunk[..n]);
        if line.ends_with(b"\n") {
            break;
        }
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    let text = std::str::from_utf8(&line).map_err(|_| {
        anyhow::anyhow!("the passphrase typed is not valid UTF-8; nothing was done")
    })?;
    Ok(SecretString::from(text))
}

/// Waits until a line can be read from `tty`, or fails once `interrupted` is set.
fn wait_for_line(tty: &fs::File, interrupted: &AtomicBool) -> anyhow::Result<()> {
    let tick = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 200_000_000,
    };
    loop {
        if interrupted.load(Ordering::SeqCst) {
            let _ = writeln!(&mut &*tty);
            return Err(Interrupted.into());
        }
        let mut fds = [rustix::event::PollFd::new(
            tty,
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(&mut fds, Some(&tick)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => return Ok(()),
            Err(e) => return Err(std::io::Error::from(e).into()),
        }
    }
}

/// The prompt was cancelled with Ctrl-C; `main` exits with 130 like a shell does.
#[derive(Debug, thiserror::Error)]
#[error("interrupted at the passphrase prompt; nothing was done")]
pub struct Interrupted;

/// Signal handlers that set a flag while a prompt waits, removed when dropped.
struct InterruptHandlers(Vec<signal_hook::SigId>);

impl InterruptHandlers {
    fn register(flag: &Arc<AtomicBool>) -> Self {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        Self(
            [SIGINT, SIGTERM, SIGHUP]
                .into_iter()
                .filter_map(|s| signal_hook::flag::register(s, Arc::clone(flag)).ok())
                .collect(),
        )
    }
}

impl Drop for InterruptHandlers {
    fn drop(&mut self) {
        for id in self.0.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// Puts the terminal back as it was when dropped.
struct RestoreTerminal<'a> {
    tty: &'a fs::File,
    saved: termios::Termios,
}

impl Drop for RestoreTerminal<'_> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.tty, termios::OptionalActions::Now, &self.saved);
    }
}

fn warn_if_not_ascii(p: &SecretString) {
    if !p.expose_secret().is_ascii() {
        eprintln!(
            "safehand: warning: the passphrase has non-ASCII characters; another computer or \
             keyboard may produce different bytes for them and fail to decrypt"
        );
    }
}

/// Who to encrypt to, from `-r`, `-R`, `-p`, `--generate` and `--passphrase-file`.
pub fn recipients(args: &RecipientArgs) -> anyhow::Result<Recipients> {
    let wants_passphrase = args.passphrase || args.passphrase_file.is_some();
    let has_keys = !args.recipients.is_empty() || !args.recipients_files.is_empty();
    if wants_passphrase && has_keys {
        return Err(usage(
            "a passphrase (-p) cannot be combined with recipients (-r/-R): the age format \
             allows one or the other",
        ));
    }
    if args.generate && args.passphrase_file.is_some() {
        return Err(usage(
            "--generate and --passphrase-file cannot be used together",
        ));
    }
    if wants_passphrase {
        let p = if let Some(file) = &args.passphrase_file {
            let p = passphrase_from_file(file)?;
            passphrase::check_chosen(&p)
                .map_err(|e| anyhow::anyhow!("the passphrase in {}: {e}", file.display()))?;
            p
        } else if args.generate {
            let p = passphrase::generate();
            let mut err = std::io::stderr().lock();
            writeln!(
                err,
                "Generated passphrase (read it to the recipient by phone; it is shown only once):\n\n    {}\n",
                p.expose_secret()
            )?;
            p
        } else {
            let first = prompt("Enter passphrase: ")?;
            passphrase::check_chosen(&first)?;
            let second = prompt("Confirm passphrase: ")?;
            let same: bool = subtle_eq(first.expose_secret(), second.expose_secret());
            if !same {
                anyhow::bail!("the two passphrases differ; nothing was encrypted");
            }
            first
        };
        warn_if_not_ascii(&p);
        return Ok(Recipients::Passphrase(p));
    }
    let mut keys = Vec::new();
    for r in &args.recipients {
        keys.push(r.parse::<Recipient>()?);
    }
    for f in &args.recipients_files {
        let text = fs::read_to_string(f)
            .with_context(|| format!("cannot read the recipients file {}", f.display()))?;
        keys.extend(Recipient::parse_file(&f.display().to_string(), &text)?);
    }
    if keys.is_empty() {
        return Err(usage(
            "say who can decrypt: -r age1... (repeatable), -R RECIPIENTS_FILE, or -p for a passphrase",
        ));
    }
    Ok(Recipients::Keys(keys))
}

/// Compares two passphrases without an early exit.
fn subtle_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What opens a file, given whether its header says it needs a passphrase.
pub fn decryption_key(
    args: &IdentityArgs,
    needs_passphrase: bool,
) -> anyhow::Result<DecryptionKey> {
    if needs_passphrase {
        let p = match &args.passphrase_file {
            Some(f) => passphrase_from_file(f)?,
            None => {
                if !args.identities.is_empty() {
                    eprintln!("safehand: this file is encrypted with a passphrase, not to a key");
                }
                prompt("Enter passphrase: ")?
            }
        };
        return Ok(DecryptionKey::Passphrase(p));
    }
    if args.identities.is_empty() {
        anyhow::bail!(
            "this file is encrypted to an age key, not a passphrase: give the identity file with -i KEY_FILE"
        );
    }
    let mut ids = Vec::new();
    for f in &args.identities {
        let text = Zeroizing::new(
            fs::read_to_string(f)
                .with_context(|| format!("cannot read the identity file {}", f.display()))?,
        );
        if text.trim_start().starts_with("age-encryption.org/")
            || text
                .trim_start()
                .starts_with("-----BEGIN AGE ENCRYPTED FILE")
        {
            anyhow::bail!(
                "{} is an encrypted identity file, which Safehand does not open; decrypt it \
                 first with `age -d`",
                f.display()
            );
        }
        ids.extend(Identity::parse_file(&f.display().to_string(), &text)?);
    }
    Ok(DecryptionKey::Identities(ids))
}

/// True when stdout is a terminal (binary data must not be dumped there).
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}
