//! Safehand's formats and secrets. No network, no database.
//!
//! - Encrypted files are standard age v1 files ([`encrypt`], [`EncryptedFile`]): passphrase
//!   (scrypt, work factor fixed at [`SCRYPT_WORK_FACTOR`], or [`GENERATED_SCRYPT_WORK_FACTOR`]
//!   for server-sealed payloads whose passphrase is generated; at most
//!   [`MAX_SCRYPT_WORK_FACTOR`] accepted) or X25519 recipients, binary or ASCII-armored.
//! - Sealed payloads ([`payload`]) are age files holding a POSIX tar stream.
//! - Split files ([`split`]): header and body apart, sealed and opened a slice at a time
//!   (the server's crypto-shredded storage).
//! - Passphrases ([`passphrase`]) are generated from the EFF word list or checked for strength.
//! - Text PDFs ([`pdf`]) for the certificate of erasure and the server's disposal report.
//!
//! ```
//! use safehand_crypto::{decrypt_to, encrypt, Armor, DecryptionKey, EncryptedFile, Identity, Recipients};
//!
//! let alice = Identity::generate();
//! let to = Recipients::Keys(vec![alice.recipient()]);
//! let (ciphertext, _) = encrypt(&to, Armor::Binary, &b"pupil records"[..], Vec::new())?;
//!
//! let file = EncryptedFile::new(std::io::Cursor::new(ciphertext))?;
//! let plaintext = file.decrypt(&DecryptionKey::Identities(vec![alice]))?;
//! let (out, _) = decrypt_to(plaintext, Vec::new())?;
//! assert_eq!(out, b"pupil records");
//! # Ok::<(), safehand_crypto::Error>(())
//! ```
#![forbid(unsafe_code)]

pub mod audit_chain;
mod encryption;
mod error;
mod keys;
mod output;
pub mod passphrase;
pub mod payload;
pub mod pdf;
mod pipe;
pub mod split;
mod stream;

pub use age::secrecy::{ExposeSecret, SecretString};
pub use encryption::{
    decrypt_file_to, decrypt_to, encrypt, Armor, EncryptedFile, PlaintextReader,
    GENERATED_SCRYPT_WORK_FACTOR, MAX_SCRYPT_WORK_FACTOR, SCRYPT_WORK_FACTOR,
};
pub use error::{Error, Result};
pub use keys::{DecryptionKey, Identity, Recipient, Recipients};
pub use output::PrivateOutput;

/// An `io::Error` that, returned by a reader handed to this library, stops the work and is
/// reported as [`Error::Interrupted`] (for Ctrl-C handling in callers).
pub fn interrupted_io_error() -> std::io::Error {
    error::StreamFault::Interrupted.into_io()
}
pub mod certificate;
