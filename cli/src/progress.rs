//! Progress bars on stderr for long work. Shown only when stderr is a terminal, and only once
//! the work has taken more than a couple of seconds, so quick runs and scripts stay quiet.

use std::io::{self, IsTerminal, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How long work runs before a bar appears.
const SHOW_AFTER: Duration = Duration::from_secs(2);

/// A progress bar (or spinner, when the total is unknown) that appears only when useful.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    started: Instant,
    enabled: bool,
    shown: AtomicBool,
}

impl Progress {
    /// A bar for `total` bytes (`None`: unknown) labelled `message`.
    pub fn new(total: Option<u64>, message: &'static str) -> Arc<Self> {
        let bar = match total {
            Some(t) => ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::hidden()),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden()),
        };
        let template = if total.is_some() {
            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}"
        } else {
            "{msg} {spinner} {bytes} {binary_bytes_per_sec}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(message);
        Arc::new(Self {
            bar,
            started: Instant::now(),
            enabled: io::stderr().is_terminal(),
            shown: AtomicBool::new(false),
        })
    }

    /// Whether a bar may ever be shown (stderr is a terminal).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Counts `bytes` more done.
    pub fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
        if self.enabled
            && !self.shown.load(Ordering::Relaxed)
            && self.started.elapsed() >= SHOW_AFTER
            && !self.shown.swap(true, Ordering::Relaxed)
        {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
    }

    /// Removes the bar (the command prints its own summary).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// A reader that reports what passes through it to a [`Progress`].
#[derive(Debug)]
pub struct ProgressReader<R> {
    inner: R,
    progress: Arc<Progress>,
}

impl<R> ProgressReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R, progress: Arc<Progress>) -> Self {
        Self { inner, progress }
    }
}

impl<R: Read> Read for ProgressReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

/// A writer that reports what passes through it to a [`Progress`].
#[derive(Debug)]
pub struct ProgressWriter<W> {
    inner: W,
    progress: Arc<Progress>,
}

impl<W> ProgressWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W, progress: Arc<Progress>) -> Self {
        Self { inner, progress }
    }

    /// The wrapped writer.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: std::io::Write> std::io::Write for ProgressWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
