//! Usage errors: a command line that cannot work as given. `main` turns them into exit code 2
//! (the same code clap uses for its own usage errors).

/// A mistake in how the command was called; the message says what to change.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Returns a [`UsageError`] as an `anyhow::Error`.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError(message.into()).into()
}
