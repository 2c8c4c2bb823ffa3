//! Where the bytes come from and go to for the encryption commands: files or stdin/stdout,
//! private output files, and Ctrl-C handling that stops the work cleanly so temporary files
//! and folders are removed (a second Ctrl-C ends the program at once).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;

/// Catches SIGINT and SIGTERM: the first sets the returned flag, the second terminates.
pub fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Order matters: the conditional shutdown sees the flag set by an earlier signal.
        let _ = signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&flag));
        let _ = signal_hook::flag::register(signal, Arc::clone(&flag));
    }
    flag
}

/// A reader that fails (and so stops the library cleanly) once Ctrl-C was pressed.
#[derive(Debug)]
pub struct Cancellable<R> {
    inner: R,
    flag: Arc<AtomicBool>,
}

impl<R> Cancellable<R> {
    /// Wraps `inner`.
    pub fn new(inner: R, flag: Arc<AtomicBool>) -> Self {
        Self { inner, flag }
    }

    /// The wrapped reader or writer.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for Cancellable<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.flag.load(Ordering::Relaxed) {
            return Err(safehand_crypto::interrupted_io_error());
        }
        self.inner.read(buf)
    }
}

impl<R: std::io::Seek> std::io::Seek for Cancellable<R> {
    fn seek(&mut self, pos: std::io::SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

impl<W: Write> Write for Cancellable<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.flag.load(Ordering::Relaxed) {
            return Err(safehand_crypto::interrupted_io_error());
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// An input: a file, or stdin for `None` and `-`. Returns its size when known.
pub fn open_input(path: Option<&Path>) -> anyhow::Result<(Box<dyn Read + Send>, Option<u64>)> {
    match path {
        None => Ok((Box::new(io::stdin()), None)),
        Some(p) if p.as_os_str() == "-" => Ok((Box::new(io::stdin()), None)),
        Some(p) => {
            let file = File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
            let size = file
                .metadata()
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len());
            Ok((Box::new(file), size))
        }
    }
}

/// Where output goes.
#[derive(Debug)]
pub enum Destination {
    /// Standard output (streams as it goes, like `age`).
    Stdout,
    /// A file, created 0600 and visible only when complete.
    File(PathBuf),
}

impl Destination {
    /// `None` and `-` mean stdout.
    pub fn from_arg(arg: Option<&Path>) -> Self {
        match arg {
            None => Destination::Stdout,
            Some(p) if p.as_os_str() == "-" => Destination::Stdout,
            Some(p) => Destination::File(p.to_path_buf()),
        }
    }
}
