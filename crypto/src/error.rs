//! The one error type of `safehand-crypto`. Every message says what went wrong in the user's
//! words and, where there is one, what to do next. No message ever contains a secret.

use std::io;
use std::path::PathBuf;

use crate::passphrase::WeakPassphrase;

/// Everything that can go wrong in `safehand-crypto`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed; `context` says which and why.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, e.g. "cannot read /media/usb/pupils.age".
        context: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The input is not an age file, or its header is malformed.
    #[error("not a valid age-encrypted file: {0}")]
    BadHeader(String),
    /// The header's MAC does not match: the header was altered or damaged.
    #[error("the encrypted file's header has been altered or damaged (its authentication code does not match)")]
    HeaderAltered,
    /// ASCII armor (`-----BEGIN AGE ENCRYPTED FILE-----`) that breaks the strict PEM rules.
    #[error("the ASCII-armored file is malformed: {0}")]
    Armor(String),
    /// No identity or passphrase given could unwrap the file key.
    #[error("cannot decrypt: wrong passphrase, or the file was not encrypted to this identity")]
    WrongKey,
    /// The file needs a passphrase but none was given (or identities were given instead).
    #[error(
        "this file is encrypted with a passphrase; give the passphrase (not an identity file)"
    )]
    NeedsPassphrase,
    /// A passphrase-encrypted file asks for more scrypt work than we accept from untrusted input.
    #[error(
        "the file's passphrase work factor is {required}, above {max}, the most Safehand accepts \
         (it would take minutes and gigabytes of memory); ask the sender to encrypt it again with \
         Safehand or `age -p`"
    )]
    WorkFactorTooHigh {
        /// The work factor (log2 N) written in the file.
        required: u8,
        /// The largest work factor accepted.
        max: u8,
    },
    /// The payload ends before its final chunk: the file is incomplete.
    #[error("the encrypted file is truncated (incomplete): copy it again from the original")]
    Truncated,
    /// A payload chunk failed authentication: the file was altered or damaged.
    #[error(
        "the encrypted file is damaged or incomplete, or was altered: it failed authentication; \
         copy it again from the original"
    )]
    Altered,
    /// A recipient string that is not an `age1...` X25519 recipient.
    #[error("{source_name}: `{value}` is not an age recipient (expected age1...)")]
    InvalidRecipient {
        /// Where it came from (`-r`, or `FILE line N`).
        source_name: String,
        /// The text given (recipients are public).
        value: String,
    },
    /// An identity file line that is not an `AGE-SECRET-KEY-1...` identity (never echoed).
    #[error("{source_name}: not an age identity (expected AGE-SECRET-KEY-1...)")]
    InvalidIdentity {
        /// Where it came from (`FILE line N`).
        source_name: String,
    },
    /// An identity or recipients source that holds nothing usable.
    #[error("{0}: contains no age identities or recipients")]
    Empty(String),
    /// Nothing to encrypt to.
    #[error("no recipients: give -r age1..., -R FILE or -p")]
    NoRecipients,
    /// A chosen passphrase that is too weak.
    #[error("passphrase refused: {0}")]
    WeakPassphrase(#[from] WeakPassphrase),
    /// A payload entry that extraction refuses (escapes the folder, device node, ...).
    #[error("refusing to extract `{path}`: {reason}; nothing was extracted")]
    UnsafeEntry {
        /// The entry's name as written in the payload.
        path: String,
        /// Why it is refused.
        reason: String,
    },
    /// Something is already where output would go.
    #[error("{} already exists; use --force to replace it", path.display())]
    AlreadyExists {
        /// The existing path.
        path: PathBuf,
    },
    /// A file or folder that cannot be sealed.
    #[error("cannot seal {}: {reason}", path.display())]
    CannotSeal {
        /// The path on disk.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Files handed to [`crate::split::PayloadSealer`] that do not match what was announced
    /// (a size, or an unsafe name).
    #[error("cannot seal the files: {0}")]
    SealInput(String),
    /// The decrypted content is not a tar stream (not a sealed payload).
    #[error("the decrypted content is not a sealed payload (tar): {0}")]
    NotAPayload(String),
    /// The operation was interrupted (Ctrl-C); anything half-written was removed.
    #[error("interrupted; nothing was left behind")]
    Interrupted,
    /// The file is not a Safehand certificate of erasure (not JSON, wrong shape or unknown format).
    #[error("not a Safehand certificate of erasure: {0}")]
    CertificateMalformed(String),
    /// The certificate's bytes are not exactly its canonical form: it was edited after signing.
    #[error("the certificate file was changed after it was signed (it is not in its signed canonical form)")]
    CertificateNotCanonical,
    /// The certificate's signature does not match its contents.
    #[error("the signature does not match: the certificate was changed after it was signed")]
    CertificateBadSignature,
    /// The certificate verifies, but under a different key than the one trusted.
    #[error("the certificate was signed by {actual}, not by the trusted key {expected}")]
    CertificateUntrustedSigner {
        /// The key the caller trusts.
        expected: String,
        /// The key inside the certificate.
        actual: String,
    },
    /// A certificate signing or public key in text form could not be read.
    #[error("not a valid key: {0}")]
    BadSigningKey(String),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Marker placed inside `io::Error`s by our readers so that the cause survives layers (tar,
/// `io::copy`) that only pass `io::Error` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StreamFault {
    #[error("the encrypted file is truncated (incomplete)")]
    Truncated,
    #[error(
        "the encrypted file is damaged or incomplete, or was altered: it failed authentication"
    )]
    Altered,
    #[error("interrupted")]
    Interrupted,
}

impl StreamFault {
    pub(crate) fn into_io(self) -> io::Error {
        let kind = match self {
            StreamFault::Truncated => io::ErrorKind::UnexpectedEof,
            StreamFault::Altered => io::ErrorKind::InvalidData,
            // Not `Interrupted`: std's copy loops would retry that forever.
            StreamFault::Interrupted => io::ErrorKind::Other,
        };
        io::Error::new(kind, self)
    }
}

/// Armor violations found while reading the payload, carried inside an `io::Error`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ArmorFault(pub(crate) String);

/// Walks an `io::Error`'s inner errors for one of our markers.
fn find_fault(err: &io::Error) -> Option<Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = err
        .get_ref()
        .map(|e| e as &(dyn std::error::Error + 'static));
    while let Some(e) = cur {
        if let Some(f) = e.downcast_ref::<StreamFault>() {
            return Some(match f {
                StreamFault::Truncated => Error::Truncated,
                StreamFault::Altered => Error::Altered,
                StreamFault::Interrupted => Error::Interrupted,
            });
        }
        if let Some(a) = e.downcast_ref::<ArmorFault>() {
            return Some(Error::Armor(a.0.clone()));
        }
        if let Some(a) = e.downcast_ref::<age::armor::ArmoredReadError>() {
            return Some(Error::Armor(a.to_string()));
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if let Some(found) = find_fault(io) {
                return Some(found);
            }
        }
        cur = e.source();
    }
    None
}

impl Error {
    /// Turns an `io::Error` into ours: a decryption fault found inside it wins over `context`.
    pub(crate) fn io(context: impl Into<String>, err: io::Error) -> Self {
        find_fault(&err).unwrap_or_else(|| Error::Io {
            context: context.into(),
            source: err,
        })
    }

    /// The decryption fault (truncated, altered, bad armor) inside an `io::Error` returned by
    /// [`crate::PlaintextReader`], if that is what it is.
    pub fn from_plaintext_read(err: io::Error) -> Option<Self> {
        find_fault(&err)
    }

    /// True when the failure means the encrypted data itself is bad (truncated, altered,
    /// malformed), as opposed to a wrong key or a local I/O problem.
    pub fn is_damaged_input(&self) -> bool {
        matches!(
            self,
            Error::Truncated
                | Error::Altered
                | Error::Armor(_)
                | Error::BadHeader(_)
                | Error::HeaderAltered
        )
    }
}
