//! age v1 STREAM, the one implementation in the workspace, and encryption on every core.
//!
//! [`PayloadKey`] is the payload primitive (C2SP age spec, "Payload"): the payload key from
//! the file key and the body's 16-byte nonce (HKDF-SHA-256, info `payload`), and each 64 KiB
//! chunk sealed or opened with ChaCha20-Poly1305 (here `ring`'s) under the nonce
//! 11-byte big-endian counter || last-chunk flag. [`header_mac`] is the header's MAC key.
//! Everything that writes or reads a payload's chunks goes through these: [`encrypt`] below,
//! and the push-based sealer and opener of [`crate::split`] that the server uses (the C2SP
//! testkit runs through that opener, see `crypto/tests/testkit.rs`).
//!
//! The `age` crate wraps the file key for each recipient (X25519 or scrypt stanzas,
//! `age::Recipient::wrap_file_key`); [`encrypt`] writes the header around those stanzas and
//! encrypts the payload with the chunks of each 1 MiB batch spread over worker threads. The
//! `age` crate's own writer does the same work on one core, which made us slower than Go `age`
//! on a 2-core machine; the result is byte-for-byte the format `age` reads (the testkit, the
//! unit tests and the interoperability tests against the `age` binary check it). The command
//! line's decryption of whole files stays in the `age` crate.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};

use age::armor::{ArmoredWriter, Format};
use age::secrecy::{ExposeSecret, SecretString};
use age_core::format::{FileKey, Stanza};
use age_core::primitives::hkdf;
use base64::prelude::{Engine, BASE64_STANDARD_NO_PAD};
use hmac::{Hmac, Mac};
use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::encryption::{Armor, SCRYPT_WORK_FACTOR};
use crate::error::{Error, Result};
use crate::keys::Recipients;

/// Plaintext bytes per STREAM chunk (spec).
pub(crate) const CHUNK: usize = 64 * 1024;
/// Poly1305 tag bytes.
pub(crate) const TAG: usize = 16;
/// Chunks per batch handed to a worker.
const BATCH_CHUNKS: usize = 16;
const BATCH: usize = CHUNK * BATCH_CHUNKS;

pub(crate) fn wrap_stanzas(recipients: &Recipients, file_key: &FileKey) -> Result<Vec<Stanza>> {
    wrap_stanzas_with(recipients, file_key, SCRYPT_WORK_FACTOR)
}

/// [`wrap_stanzas`] with the scrypt work factor `work_factor` for a passphrase.
pub(crate) fn wrap_stanzas_with(
    recipients: &Recipients,
    file_key: &FileKey,
    work_factor: u8,
) -> Result<Vec<Stanza>> {
    let wrapped = match recipients {
        Recipients::Passphrase(p) => {
            let mut r = age::scrypt::Recipient::new(SecretString::from(p.expose_secret()));
            // Never the crate's auto-calibration: a fast sender must not lock out slow readers.
            r.set_work_factor(work_factor);
            age::Recipient::wrap_file_key(&r, file_key).map(|(s, _)| s)
        }
        Recipients::Keys(keys) => {
            if keys.is_empty() {
                return Err(Error::NoRecipients);
            }
            let mut all = Vec::new();
            for k in keys {
                let (s, _) = age::Recipient::wrap_file_key(&k.0, file_key)
                    .map_err(|e| Error::BadHeader(e.to_string()))?;
                all.extend(s);
            }
            Ok(all)
        }
    };
    wrapped.map_err(|e| Error::BadHeader(e.to_string()))
}

/// The header (spec "Header"): version line, stanzas (body in base64 without padding, 64
/// columns, final line shorter, possibly empty), then the MAC line.
pub(crate) fn header_for(stanzas: &[Stanza], file_key: &FileKey) -> Vec<u8> {
    let mut h = b"age-encryption.org/v1\n".to_vec();
    for s in stanzas {
        h.extend_from_slice(b"-> ");
        h.extend_from_slice(s.tag.as_bytes());
        for a in &s.args {
            h.push(b' ');
            h.extend_from_slice(a.as_bytes());
        }
        h.push(b'\n');
        let body = BASE64_STANDARD_NO_PAD.encode(&s.body);
        let mut rest = body.as_bytes();
        loop {
            let n = rest.len().min(64);
            h.extend_from_slice(&rest[..n]);
            h.push(b'\n');
            rest = &rest[n..];
            if n < 64 {
                break;
            }
        }
    }
    h.extend_from_slice(b"---");
    let mut mac = header_mac(file_key.expose_secret());
    mac.update(&h);
    let tag = mac.finalize().into_bytes();
    h.push(b' ');
    h.extend_from_slice(BASE64_STANDARD_NO_PAD.encode(tag).as_bytes());
    h.push(b'\n');
    h
}

/// The header's MAC (spec "Header": HMAC-SHA-256 under HKDF-SHA-256 of the file key, no salt,
/// info `header`), ready for the header bytes up to and including `---`.
pub(crate) fn header_mac(file_key: &[u8; 16]) -> Hmac<Sha256> {
    let mac_key = Zeroizing::new(hkdf(&[], b"header", file_key));
    <Hmac<Sha256> as Mac>::new_from_slice(mac_key.as_ref()).unwrap_or_else(|_| unreachable_hmac())
}

/// HMAC accepts keys of any length, so this cannot happen.
fn unreachable_hmac() -> Hmac<Sha256> {
    match <Hmac<Sha256> as Mac>::new_from_slice(&[0u8; 32]) {
        Ok(m) => m,
        Err(_) => std::process::abort(),
    }
}

/// A payload's key: seals and opens its STREAM chunks. Each (counter, last) pair must be used
/// for one chunk only; the callers number chunks from 0 and flag only the final one.
pub(crate) struct PayloadKey(LessSafeKey);

impl PayloadKey {
    /// The payload key for `file_key` and the body's `nonce` (16 bytes).
    pub(crate) fn new(file_key: &[u8; 16], nonce: &[u8]) -> Result<Self> {
        let payload_key = Zeroizing::new(hkdf(nonce, b"payload", file_key));
        UnboundKey::new(&CHACHA20_POLY1305, payload_key.as_ref())
            .map(|k| Self(LessSafeKey::new(k)))
            .map_err(|_| Error::Io {
                context: "cannot encrypt".into(),
                source: io::Error::other("bad payload key length"),
            })
    }

    /// Encrypts `buf[at..]` (at most one chunk of plaintext) in place as chunk `counter`, and
    /// appends its tag.
    pub(crate) fn seal_chunk(
        &self,
        counter: u64,
        last: bool,
        buf: &mut Vec<u8>,
        at: usize,
    ) -> Result<()> {
        debug_assert!(buf.len() - at <= CHUNK);
        let tag = self
            .0
            .seal_in_place_separate_tag(chunk_nonce(counter, last), Aad::empty(), &mut buf[at..])
            .map_err(|_| Error::Io {
                context: "cannot encrypt".into(),
                source: io::Error::other("ChaCha20-Poly1305 refused a chunk"),
            })?;
        buf.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Authenticates and decrypts `chunk` (ciphertext then tag) in place as chunk `counter`;
    /// returns the plaintext's length (it is at the start of `chunk`). A chunk that does not
    /// authenticate is [`Error::Altered`], and what `chunk` holds then must not be used.
    pub(crate) fn open_chunk(&self, counter: u64, last: bool, chunk: &mut [u8]) -> Result<usize> {
        self.0
            .open_in_place(chunk_nonce(counter, last), Aad::empty(), chunk)
            .map(|p| p.len())
            .map_err(|_| Error::Altered)
    }
}

/// The chunk nonce: 11-byte big-endian counter, then the last-chunk flag.
fn chunk_nonce(counter: u64, last: bool) -> Nonce {
    let mut nonce = [0u8; 12];
    nonce[3..11].copy_from_slice(&counter.to_be_bytes());
    nonce[11] = u8::from(last);
    Nonce::assume_unique_for_key(nonce)
}

struct Job {
    seq: u64,
    first_chunk: u64,
    last: bool,
    /// Always `BATCH` long (allocated once, reused); `len` bytes are plaintext.
    data: Zeroizing<Vec<u8>>,
    len: usize,
}

/// Encrypts one batch into `out` (chunk, tag, chunk, tag, ...).
fn encrypt_batch(key: &PayloadKey, job: &Job, out: &mut Vec<u8>) -> Result<()> {
    let chunks = job.len.div_ceil(CHUNK).max(1);
    out.clear();
    for i in 0..chunks {
        let start = i * CHUNK;
        let end = (start + CHUNK).min(job.len);
        let at = out.len();
        out.extend_from_slice(&job.data[start..end]);
        key.seal_chunk(
            job.first_chunk + i as u64,
            job.last && i == chunks - 1,
            out,
            at,
        )?;
    }
    Ok(())
}

/// Fills `buf` (`BATCH` long) as far as the input goes; returns the bytes read.
fn read_batch<R: Read>(input: &mut R, buf: &mut [u8]) -> Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("cannot read the input", e)),
        }
    }
    Ok(got)
}

/// A batch buffer from the free list, or a new one.
fn take_buffer(free: &Receiver<Zeroizing<Vec<u8>>>, len: usize) -> Zeroizing<Vec<u8>> {
    match free.try_recv() {
        Ok(b) => b,
        Err(_) => Zeroizing::new(vec![0u8; len]),
    }
}

/// Encrypts everything `input` yields to `recipients` as one age file written to `output`.
pub(crate) fn encrypt<R: Read, W: Write + Send + 'static>(
    recipients: &Recipients,
    armor: Armor,
    mut input: R,
    output: W,
) -> Result<(W, u64)> {
    let file_key = FileKey::init_with_mut(|k| rand::rngs::OsRng.fill_bytes(k));
    let stanzas = wrap_stanzas(recipients, &file_key)?;
    let mut head = header_for(&stanzas, &file_key);
    let mut nonce = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    head.extend_from_slice(&nonce);
    let aead = Arc::new(PayloadKey::new(file_key.expose_secret(), &nonce)?);
    drop(file_key);
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);

    let format = match armor {
        Armor::Binary => Format::Binary,
        Armor::Ascii => Format::AsciiArmor,
    };
    std::thread::scope(|scope| -> Result<(W, u64)> {
        let (job_tx, job_rx) = mpsc::sync_channel::<Job>(workers * 2);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done_rx) = mpsc::sync_channel::<(u64, Vec<u8>)>(workers * 2);
        // Used buffers flow back to be refilled: no allocation (and no page faults) per batch.
        let (free_plain_tx, free_plain_rx) =
            mpsc::sync_channel::<Zeroizing<Vec<u8>>>(workers * 4 + 4);
        let (free_ct_tx, free_ct_rx) = mpsc::sync_channel::<Vec<u8>>(workers * 4 + 4);
        let free_ct_rx = Arc::new(Mutex::new(free_ct_rx));
        // At most `in_flight` batches between reading and writing, so a worker that falls
        // behind cannot make the others pile finished batches up in memory.
        let in_flight = workers * 2 + 2;
        let (token_tx, token_rx) = mpsc::sync_channel::<()>(in_flight);
        for _ in 0..in_flight {
            let _ = token_tx.send(());
        }
        for _ in 0..workers {
            let job_rx = Arc::clone(&job_rx);
            let done_tx = done_tx.clone();
            let aead = Arc::clone(&aead);
            let free_plain_tx = free_plain_tx.clone();
            let free_ct_rx = Arc::clone(&free_ct_rx);
            scope.spawn(move || loop {
                let job = match job_rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok(job) = job else { return };
                let mut ct = free_ct_rx
                    .lock()
                    .ok()
                    .and_then(|rx| rx.try_recv().ok())
                    .unwrap_or_else(|| Vec::with_capacity(BATCH + BATCH_CHUNKS * TAG));
                // Each nonce (chunk counter, last flag) is used once per payload key.
                if encrypt_batch(&aead, &job, &mut ct).is_err() {
                    return;
                }
                let _ = free_plain_tx.try_send(job.data);
                if done_tx.send((job.seq, ct)).is_err() {
                    return;
                }
            });
        }
        drop(free_plain_tx);
        // Only the workers hold the job receiver now: if they all stop, sending fails
        // instead of blocking.
        drop(job_rx);
        drop(done_tx);
        let writer = scope
            .spawn(move || write_in_order(done_rx, free_ct_tx, token_tx, head, output, format));

        let mut total = 0u64;
        let mut seq = 0u64;
        let read = (|| -> Result<()> {
            let mut current = take_buffer(&free_plain_rx, BATCH);
            let mut current_len = read_batch(&mut input, &mut current)?;
            let mut next = take_buffer(&free_plain_rx, BATCH);
            loop {
                // Look one batch ahead: the final chunk must carry the last-chunk flag.
                let (last, next_len) = if current_len < BATCH {
                    (true, 0)
                } else {
                    let n = read_batch(&mut input, &mut next)?;
                    (n == 0, n)
                };
                total += current_len as u64;
                if token_rx.recv().is_err() {
                    return Err(Error::Io {
                        context: "cannot write the encrypted output".into(),
                        source: io::Error::other("the writing thread stopped"),
                    });
                }
                let refill = take_buffer(&free_plain_rx, BATCH);
                let data = std::mem::replace(&mut current, refill);
                let job = Job {
                    seq,
                    first_chunk: seq * BATCH_CHUNKS as u64,
                    last,
                    data,
                    len: current_len,
                };
                seq += 1;
                if job_tx.send(job).is_err() {
                    return Err(Error::Io {
                        context: "cannot write the encrypted output".into(),
                        source: io::Error::other("the writing thread stopped"),
                    });
                }
                if last {
                    return Ok(());
                }
                std::mem::swap(&mut current, &mut next);
                current_len = next_len;
            }
        })();
        drop(job_tx);
        let written = writer.join().unwrap_or_else(|_| {
            Err(Error::Io {
                context: "cannot write the encrypted output".into(),
                source: io::Error::other("the writing thread panicked"),
            })
        });
        match (read, written) {
            (Ok(()), Ok(w)) => Ok((w, total)),
            (Err(e), _) => Err(e),
            (Ok(()), Err(e)) => Err(e),
        }
    })
}

/// Writes the header, then the encrypted batches in sequence order as they come back.
fn write_in_order<W: Write>(
    done: Receiver<(u64, Vec<u8>)>,
    free: mpsc::SyncSender<Vec<u8>>,
    tokens: mpsc::SyncSender<()>,
    head: Vec<u8>,
    output: W,
    format: Format,
) -> Result<W> {
    let err = |e| Error::io("cannot write the encrypted output", e);
    let mut out = ArmoredWriter::wrap_output(output, format).map_err(err)?;
    out.write_all(&head).map_err(err)?;
    let mut pending = BTreeMap::new();
    let mut want = 0u64;
    for (seq, ct) in done {
        pending.insert(seq, ct);
        while let Some(ct) = pending.remove(&want) {
            out.write_all(&ct).map_err(err)?;
            let _ = free.try_send(ct);
            let _ = tokens.try_send(());
            want += 1;
        }
    }
    if !pending.is_empty() {
        return Err(Error::Io {
            context: "cannot write the encrypted output".into(),
            source: io::Error::other("an encryption thread stopped"),
        });
    }
    out.finish().map_err(err)
}
