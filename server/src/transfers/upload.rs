//! Uploads into blob storage, sealed on the fly. Plaintext lives only in the buffers between
//! the network and the cipher; what reaches the blob store is ciphertext, written in parts as
//! it is produced, so memory stays flat whatever the size. Anything that goes wrong before
//! [`SealingUpload::finish`] or [`PresealedUpload::finish`] returns must be followed by
//! `abort`, which removes every part written so far.

use super::Sealed;
use crate::blobs::{BlobWriter, Blobs};
use crate::error::{Error, Result};
use crate::keys::new_token;
use safehand_crypto::split::{self, PayloadSealer};
use safehand_crypto::{SecretString, GENERATED_SCRYPT_WORK_FACTOR};

/// Ciphertext gathered before it is handed to the blob writer.
const FLUSH_AT: usize = 1 << 20;

/// Memory for passphrase derivations (scrypt) at once per instance, in MiB. A derivation at
/// work factor `w` needs 2^(w-10) MiB: two server-sealed payloads (work factor 16, 64 MiB
/// each) at a time; a payload sealed elsewhere at a higher work factor waits for the whole
/// budget and runs alone (it still needs its own 2^(w-10) MiB).
const SCRYPT_BUDGET_MIB: u32 = 128;
static SCRYPT_MEMORY: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(SCRYPT_BUDGET_MIB as usize);

/// Waits for the memory one scrypt derivation at `work_factor` needs.
pub(crate) async fn scrypt_memory(
    work_factor: u8,
) -> Result<tokio::sync::SemaphorePermit<'static>> {
    let mib = 1u32
        .checked_shl(u32::from(work_factor.saturating_sub(10)))
        .unwrap_or(u32::MAX)
        .clamp(1, SCRYPT_BUDGET_MIB);
    SCRYPT_MEMORY
        .acquire_many(mib)
        .await
        .map_err(|_| Error::Internal("scrypt budget closed".into()))
}

fn seal_error(e: safehand_crypto::Error) -> Error {
    match e {
        safehand_crypto::Error::SealInput(m) => Error::BadInput(format!(
            "The upload did not match the list of files sent before it ({m}). Try again; if it keeps happening, reload the page."
        )),
        other => Error::Internal(format!("sealing: {other}")),
    }
}

/// A new blob key for a transfer body.
fn blob_key() -> String {
    format!("transfers/{}", new_token())
}

/// Files announced with their sizes, sealed into one payload as their content arrives.
#[derive(Debug)]
pub struct SealingUpload {
    sealer: Option<PayloadSealer>,
    writer: Option<BlobWriter>,
    key: String,
    out: Vec<u8>,
    files: Vec<(String, u64)>,
    offsets: Vec<u64>,
}

impl SealingUpload {
    /// Starts a payload for `passphrase` holding `files` (safe names and sizes).
    pub async fn begin(
        blobs: &Blobs,
        passphrase: &SecretString,
        files: Vec<(String, u64)>,
    ) -> Result<Self> {
        let sealer = {
            let _memory = scrypt_memory(GENERATED_SCRYPT_WORK_FACTOR).await?;
            let p = SecretString::from(
                safehand_crypto::ExposeSecret::expose_secret(passphrase).to_string(),
            );
            tokio::task::spawn_blocking(move || {
                PayloadSealer::with_work_factor(&p, GENERATED_SCRYPT_WORK_FACTOR)
            })
            .await
            .map_err(|e| Error::Internal(format!("sealing task: {e}")))?
            .map_err(seal_error)?
        };
        let key = blob_key();
        let writer = blobs.writer(&key).await?;
        Ok(Self {
            sealer: Some(sealer),
            writer: Some(writer),
            key,
            out: Vec::with_capacity(FLUSH_AT + 128 * 1024),
            files,
            offsets: Vec::new(),
        })
    }

    fn sealer(&mut self) -> Result<&mut PayloadSealer> {
        self.sealer
            .as_mut()
            .ok_or_else(|| Error::Internal("upload already finished".into()))
    }

    async fn flush(&mut self, all: bool) -> Result<()> {
        if self.out.len() >= FLUSH_AT || (all && !self.out.is_empty()) {
            let writer = self
                .writer
                .as_mut()
                .ok_or_else(|| Error::Internal("upload already finished".into()))?;
            writer.write(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Starts the next announced file; returns its index.
    pub fn next_file(&mut self, mtime: u64) -> Result<usize> {
        let index = self.offsets.len();
        let Some((name, size)) = self.files.get(index).cloned() else {
            return Err(Error::BadInput(
                "More files arrived than were listed before the upload. Reload the page and try again.".into(),
            ));
        };
        let mut out = std::mem::take(&mut self.out);
        let result = self.sealer()?.start_file(&name, size, mtime, &mut out);
        self.out = out;
        let offset = result.map_err(seal_error)?;
        self.offsets.push(offset);
        Ok(index)
    }

    /// Content of the current file.
    pub async fn write(&mut self, content: &[u8]) -> Result<()> {
        let mut out = std::mem::take(&mut self.out);
        let result = self.sealer()?.write(content, &mut out);
        self.out = out;
        result.map_err(seal_error)?;
        self.flush(false).await
    }

    /// Ends the payload and completes the blob. Every announced file must have arrived whole.
    /// On failure everything written is removed.
    pub async fn finish(mut self) -> Result<Sealed> {
        match self.finish_inner().await {
            Ok(s) => Ok(s),
            Err(e) => {
                self.abort().await;
                Err(e)
            }
        }
    }

    async fn finish_inner(&mut self) -> Result<Sealed> {
        if self.offsets.len() != self.files.len() {
            return Err(Error::BadInput(format!(
                "{} of {} files arrived; the upload was cut short. Try again.",
                self.offsets.len(),
                self.files.len()
            )));
        }
        let sealer = self
            .sealer
            .take()
            .ok_or_else(|| Error::Internal("upload already finished".into()))?;
        let header = sealer.header().to_vec();
        let mut out = std::mem::take(&mut self.out);
        let summary = sealer.finish(&mut out).map_err(seal_error)?;
        self.out = out;
        self.flush(true).await?;
        let writer = self
            .writer
            .take()
            .ok_or_else(|| Error::Internal("upload already finished".into()))?;
        let body_size = writer.finish().await?;
        let plaintext_size = split::plaintext_len(body_size)
            .ok_or_else(|| Error::Internal("sealed body has an impossible size".into()))?;
        let files = self
            .files
            .iter()
            .zip(&self.offsets)
            .map(|((n, s), o)| (n.clone(), *s, *o))
            .collect();
        tracing::debug!(
            files = summary.files,
            bytes = summary.bytes,
            "payload sealed"
        );
        Ok(Sealed {
            header,
            blob_key: self.key.clone(),
            body_size,
            plaintext_size,
            files,
            on_server: true,
        })
    }

    /// Throws away everything written (a failed or abandoned upload leaves nothing).
    pub async fn abort(mut self) {
        if let Some(w) = self.writer.take() {
            if let Err(e) = w.abort().await {
                tracing::warn!(error = %e, key = %self.key, "could not remove an abandoned upload");
            }
        }
    }
}

/// A payload sealed on the sender's machine: the header is checked and kept apart, the body
/// goes to blob storage.
#[derive(Debug)]
pub struct PresealedUpload {
    head: Vec<u8>,
    header_len: Option<usize>,
    writer: Option<BlobWriter>,
    key: String,
    out: Vec<u8>,
    body_size: u64,
    max_body: u64,
}

impl PresealedUpload {
    /// Starts an upload whose plaintext may be at most `max_plaintext` bytes.
    pub async fn begin(blobs: &Blobs, max_plaintext: u64) -> Result<Self> {
        let key = blob_key();
        let writer = blobs.writer(&key).await?;
        // Each 64 KiB chunk carries a 16-byte tag; the nonce adds 16 bytes.
        let max_body = max_plaintext + max_plaintext / 4096 + 64;
        Ok(Self {
            head: Vec::new(),
            header_len: None,
            writer: Some(writer),
            key,
            out: Vec::with_capacity(FLUSH_AT + 128 * 1024),
            body_size: 0,
            max_body,
        })
    }

    fn header_error(e: safehand_crypto::Error) -> Error {
        Error::BadInput(format!(
            "The uploaded payload was refused: {e}. Upload a binary .age file sealed with one passphrase (safehand seal, or age -p)."
        ))
    }

    /// More of the uploaded file.
    pub async fn write(&mut self, mut bytes: &[u8]) -> Result<()> {
        if self.header_len.is_none() {
            let room = (split::MAX_HEADER_LEN + 1).saturating_sub(self.head.len());
            let take = bytes.len().min(room);
            self.head.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            match split::inspect_header(&self.head).map_err(Self::header_error)? {
                None => {
                    if !bytes.is_empty() {
                        return Err(Self::header_error(safehand_crypto::Error::BadHeader(
                            "its header is too long".into(),
                        )));
                    }
                    return Ok(());
                }
                Some(info) => {
                    self.header_len = Some(info.len);
                    let rest = self.head.split_off(info.len);
                    self.push(&rest).await?;
                }
            }
        }
        self.push(bytes).await
    }

    async fn push(&mut self, bytes: &[u8]) -> Result<()> {
        self.body_size += bytes.len() as u64;
        if self.body_size > self.max_body {
            return Err(Error::TooLarge(
                "The payload is larger than the policy allows.".into(),
            ));
        }
        self.out.extend_from_slice(bytes);
        if self.out.len() >= FLUSH_AT {
            let writer = self
                .writer
                .as_mut()
                .ok_or_else(|| Error::Internal("upload already finished".into()))?;
            writer.write(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Checks the body's shape and completes the blob. On failure everything written is
    /// removed.
    pub async fn finish(mut self) -> Result<Sealed> {
        match self.finish_inner().await {
            Ok(s) => Ok(s),
            Err(e) => {
                self.abort().await;
                Err(e)
            }
        }
    }

    async fn finish_inner(&mut self) -> Result<Sealed> {
        if self.header_len.is_none() {
            return Err(Self::header_error(safehand_crypto::Error::BadHeader(
                "it ends inside the header (truncated, empty, or not an age file)".into(),
            )));
        }
        let Some(plaintext_size) = split::plaintext_len(self.body_size) else {
            return Err(Self::header_error(safehand_crypto::Error::Truncated));
        };
        if !self.out.is_empty() {
            let writer = self
                .writer
                .as_mut()
                .ok_or_else(|| Error::Internal("upload already finished".into()))?;
            writer.write(&self.out).await?;
            self.out.clear();
        }
        let writer = self
            .writer
            .take()
            .ok_or_else(|| Error::Internal("upload already finished".into()))?;
        let body_size = writer.finish().await?;
        Ok(Sealed {
            header: std::mem::take(&mut self.head),
            blob_key: self.key.clone(),
            body_size,
            plaintext_size,
            files: Vec::new(),
            on_server: false,
        })
    }

    /// Throws away everything written.
    pub async fn abort(mut self) {
        if let Some(w) = self.writer.take() {
            if let Err(e) = w.abort().await {
                tracing::warn!(error = %e, key = %self.key, "could not remove an abandoned upload");
            }
        }
    }
}
