//! Streaming age v1 encryption and decryption (C2SP age spec, <https://c2sp.org/age>) through
//! the `age` crate. Memory stays flat whatever the size; writing happens on its own thread.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::sync::{Arc, Mutex};

use age::armor::ArmoredReader;
use age::secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::error::{ArmorFault, Error, Result, StreamFault};
use crate::keys::{DecryptionKey, Recipients};
use crate::pipe::{ThreadedWriter, BUFFER_SIZE};

/// scrypt work factor (log2 N) written into every passphrase-encrypted file: 256 MiB and well
/// under a second here, and within the limits of browsers (typage accepts at most 20).
pub const SCRYPT_WORK_FACTOR: u8 = 18;

/// scrypt work factor for payloads whose passphrase is generated (never chosen by a person):
/// 64 MiB and about a tenth of a second. A generated passphrase carries at least 80 bits of
/// entropy ([`crate::passphrase::generated_entropy_bits`]), so guessing it costs 2^79 tries on
/// average however cheap each try is; a higher work factor would add nothing to that but
/// memory on a server sealing and opening many payloads at once.
pub const GENERATED_SCRYPT_WORK_FACTOR: u8 = 16;

/// Highest scrypt work factor accepted when decrypting untrusted input (1 GiB of memory).
pub const MAX_SCRYPT_WORK_FACTOR: u8 = 20;

/// Whether the output is binary age or ASCII armor (PEM `AGE ENCRYPTED FILE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Armor {
    /// Binary age, the default.
    Binary,
    /// ASCII armor, for pasting into e-mail or text fields.
    Ascii,
}

/// Encrypts everything `input` yields into `output` as one age file and returns the output
/// (for example a [`crate::PrivateOutput`] to commit) with the count of plaintext bytes.
///
/// Passphrases use scrypt with the fixed work factor [`SCRYPT_WORK_FACTOR`].
pub fn encrypt<R: Read, W: Write + Send + 'static>(
    recipients: &Recipients,
    armor: Armor,
    input: R,
    output: W,
) -> Result<(W, u64)> {
    crate::stream::encrypt(recipients, armor, input, output)
}

/// The ciphertext source: binary files skip the armor reader (which copies in 8 KiB pieces
/// and cost a quarter of decryption time); anything else goes through it.
enum Inner<R: Read> {
    Binary(BufReader<R>),
    Armored(ArmoredReader<BufReader<BufReader<R>>>),
}

impl<R: Read> Read for Inner<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Inner::Binary(r) => r.read(buf),
            Inner::Armored(r) => r.read(buf),
        }
    }
}

impl<R: Read + Seek> Seek for Inner<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        match self {
            Inner::Binary(r) => r.seek(pos),
            Inner::Armored(_) => Err(io::Error::other(
                "armored input cannot be read out of order",
            )),
        }
    }
}

impl<R: Read> BufRead for Inner<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        match self {
            Inner::Binary(r) => r.fill_buf(),
            Inner::Armored(r) => r.fill_buf(),
        }
    }

    fn consume(&mut self, amt: usize) {
        match self {
            Inner::Binary(r) => r.consume(amt),
            Inner::Armored(r) => r.consume(amt),
        }
    }
}

/// Largest header [`EncryptedFile::new`] accepts (room for thousands of recipients).
const MAX_HEADER_LEN: usize = 1 << 20;

/// The header bytes the `age` crate's parser took, kept until [`EncryptedFile::new`] checks
/// them against the spec's grammar; `None` once checked, so the payload is never copied.
type Tapped = Arc<Mutex<Option<Vec<u8>>>>;

/// The ciphertext source with a copy of the header taken on the way through.
struct HeaderTap<R> {
    inner: R,
    tap: Tapped,
}

impl<R> HeaderTap<R> {
    fn record(&self, bytes: &[u8]) {
        if let Ok(mut tap) = self.tap.lock() {
            if let Some(seen) = tap.as_mut() {
                // Past the limit the header is refused anyway; stop copying.
                let room = (MAX_HEADER_LEN + 1).saturating_sub(seen.len());
                seen.extend_from_slice(&bytes[..bytes.len().min(room)]);
            }
        }
    }
}

impl<R: Read> Read for HeaderTap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.record(&buf[..n]);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for HeaderTap<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        if amt > 0 {
            // The bytes being consumed are still in the inner buffer: no I/O happens here.
            if let Ok(buffered) = self.inner.fill_buf() {
                let n = amt.min(buffered.len());
                let copy = buffered[..n].to_vec();
                self.record(&copy);
            }
        }
        self.inner.consume(amt)
    }
}

impl<R: Seek> Seek for HeaderTap<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

/// True for the whitespace PEM allows around an armored file.
fn is_pem_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// An age file whose header has been read and checked, ready to be decrypted once the caller
/// knows which key to use ([`EncryptedFile::needs_passphrase`] tells whether to ask for a
/// passphrase).
pub struct EncryptedFile<R: Read> {
    decryptor: age::Decryptor<HeaderTap<Inner<R>>>,
    kind: StreamKind,
}

impl<R: Read> fmt::Debug for EncryptedFile<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptedFile")
            .field("needs_passphrase", &self.decryptor.is_scrypt())
            .finish()
    }
}

fn map_decrypt_error(e: age::DecryptError) -> Error {
    match e {
        age::DecryptError::DecryptionFailed
        | age::DecryptError::NoMatchingKeys
        | age::DecryptError::KeyDecryptionFailed => Error::WrongKey,
        age::DecryptError::ExcessiveWork { required, .. } => Error::WorkFactorTooHigh {
            required,
            max: MAX_SCRYPT_WORK_FACTOR,
        },
        age::DecryptError::InvalidMac => Error::HeaderAltered,
        age::DecryptError::InvalidHeader => {
            Error::BadHeader("its header is malformed (damaged, or not an age file)".into())
        }
        age::DecryptError::UnknownFormat => {
            Error::BadHeader("unknown format or version (not an age v1 file)".into())
        }
        age::DecryptError::Io(io) => {
            if let Some(a) = io
                .get_ref()
                .and_then(|e| e.downcast_ref::<age::armor::ArmoredReadError>())
            {
                return Error::Armor(a.to_string());
            }
            match io.kind() {
                io::ErrorKind::UnexpectedEof => Error::BadHeader(
                    "it ends inside the header (truncated, empty, or not an age file)".into(),
                ),
                io::ErrorKind::InvalidData => Error::BadHeader(format!("{io}")),
                _ => Error::io("cannot read the encrypted file", io),
            }
        }
        other => Error::BadHeader(other.to_string()),
    }
}

fn looks_like_attempted_armor(head: &[u8]) -> bool {
    let trimmed = &head[head.iter().take_while(|&&b| is_pem_space(b)).count()..];
    // Binary age, or armor the parser recognised (then the header inside is what failed).
    if head.starts_with(b"age-encryption.org/")
        || trimmed.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----")
    {
        return false;
    }
    let lower = head.to_ascii_lowercase();
    let has = |needle: &[u8]| lower.windows(needle.len()).any(|w| w == needle);
    has(b"-----") && has(b"begin")
}

impl<R: Read> EncryptedFile<R> {
    /// Reads and checks the header (binary or ASCII-armored).
    pub fn new(input: R) -> Result<Self> {
        let mut buffered = BufReader::with_capacity(BUFFER_SIZE, input);
        let head: Vec<u8> = match buffered.fill_buf() {
            Ok(b) => b[..b.len().min(1024)].to_vec(),
            Err(e) => return Err(Error::io("cannot read the encrypted file", e)),
        };
        // The spec allows whitespace before an armored file; the age crate detects armor from
        // the very first bytes, so skip that whitespace here.
        let spaces = head.iter().take_while(|&&b| is_pem_space(b)).count();
        if spaces > 0 && head[spaces..].starts_with(b"-----BEGIN") {
            buffered.consume(spaces);
        }
        let (reader, kind) = if head.starts_with(b"age-encryption.org/") {
            (Inner::Binary(buffered), StreamKind::Binary)
        } else {
            (
                Inner::Armored(ArmoredReader::new(buffered)),
                StreamKind::Armored,
            )
        };
        let tap: Tapped = Arc::new(Mutex::new(Some(Vec::new())));
        let reader = HeaderTap {
            inner: reader,
            tap: Arc::clone(&tap),
        };
        let decryptor = age::Decryptor::new_buffered(reader).map_err(|e| {
            match map_decrypt_error(e) {
                // Something PEM-like that the armor parser did not recognise (wrong label, case,
                // garbage in front) is an armor problem, not a binary header problem.
                Error::BadHeader(_) if looks_like_attempted_armor(&head) => Error::Armor(
                    "it does not start with exactly `-----BEGIN AGE ENCRYPTED FILE-----`".into(),
                ),
                other => other,
            }
        })?;
        // The age crate's parser still accepts legacy stanzas (no final short body line);
        // the spec and the reference implementation refuse them, and so do we.
        let header = tap
            .lock()
            .ok()
            .and_then(|mut t| t.take())
            .unwrap_or_default();
        crate::split::check_header_grammar(&header, MAX_HEADER_LEN)?;
        Ok(Self { decryptor, kind })
    }

    /// True when the file is encrypted with a passphrase (one scrypt stanza).
    pub fn needs_passphrase(&self) -> bool {
        self.decryptor.is_scrypt()
    }

    /// Unwraps the file key and returns the plaintext as a stream. Every chunk is authenticated
    /// before it is released; the stream ends (`Ok(0)`) only after the final chunk
    /// authenticated, so read to the end before trusting the whole.
    pub fn decrypt(self, key: &DecryptionKey) -> Result<PlaintextReader<R>> {
        let stream = match key {
            DecryptionKey::Passphrase(p) => {
                if !self.decryptor.is_scrypt() {
                    return Err(Error::WrongKey);
                }
                let mut id = age::scrypt::Identity::new(SecretString::from(p.expose_secret()));
                id.set_max_work_factor(MAX_SCRYPT_WORK_FACTOR);
                self.decryptor
                    .decrypt(std::iter::once(&id as &dyn age::Identity))
            }
            DecryptionKey::Identities(ids) => {
                if self.decryptor.is_scrypt() {
                    return Err(Error::NeedsPassphrase);
                }
                self.decryptor
                    .decrypt(ids.iter().map(|i| &i.0 as &dyn age::Identity))
            }
        }
        .map_err(map_decrypt_error)?;
        Ok(PlaintextReader {
            stream,
            kind: self.kind,
            released: 0,
            failed: None,
        })
    }
}

/// Decrypted plaintext, chunk by authenticated chunk. Errors carry a cause that
/// [`Error`] recognises (truncated, altered, malformed armor).
pub struct PlaintextReader<R: Read> {
    stream: age::stream::StreamReader<HeaderTap<Inner<R>>>,
    kind: StreamKind,
    released: u64,
    failed: Option<(io::ErrorKind, String, Option<StreamFault>)>,
}

impl<R: Read> fmt::Debug for PlaintextReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlaintextReader")
            .field("released", &self.released)
            .finish()
    }
}

impl<R: Read> PlaintextReader<R> {
    /// Plaintext bytes released so far.
    pub fn released(&self) -> u64 {
        self.released
    }

    fn classify(e: io::Error) -> io::Error {
        if let Some(inner) = e.get_ref() {
            if let Some(a) = inner.downcast_ref::<age::armor::ArmoredReadError>() {
                return io::Error::new(io::ErrorKind::InvalidData, ArmorFault(a.to_string()));
            }
            if inner.downcast_ref::<StreamFault>().is_some() {
                return e;
            }
        }
        match e.kind() {
            // The age crate reports a stream that stops before its final chunk this way.
            io::ErrorKind::UnexpectedEof => StreamFault::Truncated.into_io(),
            // ... and a chunk that fails its Poly1305 tag (or data after the last chunk) this way.
            io::ErrorKind::InvalidData => StreamFault::Altered.into_io(),
            _ => e,
        }
    }
}

impl<R: Read + Seek> PlaintextReader<R> {
    /// The plaintext length. Authenticates the final chunk first (the spec requires it before
    /// anything relative to the end is trusted).
    fn authenticated_len(&mut self) -> io::Result<u64> {
        let len = self.stream.seek(SeekFrom::End(0)).map_err(Self::classify)?;
        self.stream
            .seek(SeekFrom::Start(0))
            .map_err(Self::classify)?;
        Ok(len)
    }

    fn seek_to(&mut self, pos: u64) -> io::Result<()> {
        self.stream
            .seek(SeekFrom::Start(pos))
            .map(|_| ())
            .map_err(Self::classify)
    }
}

impl<R: Read> Read for PlaintextReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some((kind, msg, fault)) = &self.failed {
            // Never resume after a failure: nothing past a bad chunk may be released.
            return Err(match fault {
                Some(f) => f.into_io(),
                None => io::Error::new(*kind, msg.clone()),
            });
        }
        loop {
            match self.stream.read(buf) {
                Ok(n) => {
                    self.released += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let e = Self::classify(e);
                    let fault = e
                        .get_ref()
                        .and_then(|i| i.downcast_ref::<StreamFault>())
                        .copied();
                    self.failed = Some((e.kind(), e.to_string(), fault));
                    return Err(e);
                }
            }
        }
    }
}

/// Decrypts the whole stream into `output` (on a writing thread) and returns it once the final
/// chunk authenticated, with the number of plaintext bytes.
pub fn decrypt_to<R: Read, W: Write + Send + 'static>(
    mut plaintext: PlaintextReader<R>,
    output: W,
) -> Result<(W, u64)> {
    let mut threaded =
        ThreadedWriter::new(output).map_err(|e| Error::io("cannot start writing", e))?;
    let mut buf = Zeroizing::new(vec![0u8; BUFFER_SIZE]);
    loop {
        let n = plaintext
            .read(&mut buf)
            .map_err(|e| Error::io("cannot read the encrypted file", e))?;
        if n == 0 {
            break;
        }
        threaded
            .write_all(&buf[..n])
            .map_err(|e| Error::io("cannot write the decrypted output", e))?;
    }
    let out = threaded
        .finish()
        .map_err(|e| Error::io("cannot write the decrypted output", e))?;
    Ok((out, plaintext.released()))
}

/// Plaintext bytes per segment handed to one decrypting thread (a whole number of chunks).
const SEGMENT: u64 = 32 * 64 * 1024;

/// Decrypts a binary age file that can be opened more than once (a regular file) on every
/// core: each thread opens it, unwraps the key with the same identities, and decrypts every
/// other 2 MiB segment; segments are written in order. The final chunk is authenticated
/// before anything is written, and every chunk before it is authenticated by the thread that
/// reads it, so the result is exactly what [`decrypt_to`] would give. Passphrases and armored
/// files take the one-thread path ([`decrypt_to`]): scrypt per thread would cost 256 MiB each.
pub fn decrypt_file_to<F, R, W>(open: F, key: &DecryptionKey, output: W) -> Result<(W, u64)>
where
    F: Fn() -> io::Result<R> + Sync,
    R: Read + Seek + Send,
    W: Write + Send + 'static,
{
    let opened = |what: &str| -> Result<PlaintextReader<R>> {
        let file = open().map_err(|e| Error::io(format!("cannot open {what}"), e))?;
        EncryptedFile::new(file)?.decrypt(key)
    };
    let mut first = opened("the encrypted file")?;
    let parallel = matches!(key, DecryptionKey::Identities(_))
        && matches!(first.stream_kind(), StreamKind::Binary);
    if !parallel {
        return decrypt_to(first, output);
    }
    let len = first
        .authenticated_len()
        .map_err(|e| Error::io("cannot read the encrypted file", e))?;
    let segments = len.div_ceil(SEGMENT);
    if segments <= 2 {
        return decrypt_to(first, output);
    }
    let workers: u64 = 2;
    std::thread::scope(|scope| -> Result<(W, u64)> {
        // One short queue per thread, read in segment order: each thread runs at most one
        // segment ahead, and no thread can wait on another's queue (no shared tokens).
        let mut queues = Vec::new();
        let mut returns = Vec::new();
        let mut first = Some(first);
        for k in 0..workers {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Zeroizing<Vec<u8>>>>(1);
            queues.push(rx);
            // Written buffers go back to their thread: no fresh 2 MiB (page faults, zeroizing)
            // per segment.
            let (free_tx, free_rx) = std::sync::mpsc::sync_channel::<Zeroizing<Vec<u8>>>(2);
            returns.push(free_tx);
            let reader = first.take();
            let opened = &opened;
            scope.spawn(move || {
                let mut reader = match reader {
                    Some(r) => r,
                    None => match opened("the encrypted file") {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    },
                };
                let mut s = k;
                while s < segments {
                    let start = s * SEGMENT;
                    let size = usize::try_from(SEGMENT.min(len - start)).unwrap_or(0);
                    let mut buf = free_rx
                        .try_recv()
                        .unwrap_or_else(|_| Zeroizing::new(vec![0u8; SEGMENT as usize]));
                    buf.truncate(size);
                    let result = reader
                        .seek_to(start)
                        .and_then(|()| reader.read_exact(&mut buf))
                        .map(|()| buf)
                        .map_err(|e| Error::io("cannot read the encrypted file", e));
                    let failed = result.is_err();
                    if tx.send(result).is_err() || failed {
                        return;
                    }
                    s += workers;
                }
            });
        }
        let mut threaded =
            ThreadedWriter::new(output).map_err(|e| Error::io("cannot start writing", e))?;
        for s in 0..segments {
            let queue = &queues[usize::try_from(s % workers).unwrap_or(0)];
            let buf = queue.recv().map_err(|_| Error::Io {
                context: "cannot decrypt".into(),
                source: io::Error::other("a decrypting thread stopped"),
            })??;
            threaded
                .write_all(&buf)
                .map_err(|e| Error::io("cannot write the decrypted output", e))?;
            let _ = returns[usize::try_from(s % workers).unwrap_or(0)].try_send(buf);
        }
        drop(queues);
        let out = threaded
            .finish()
            .map_err(|e| Error::io("cannot write the decrypted output", e))?;
        Ok((out, len))
    })
}

/// Whether the ciphertext is read as binary or through the armor reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamKind {
    Binary,
    Armored,
}

impl<R: Read> PlaintextReader<R> {
    fn stream_kind(&self) -> StreamKind {
        // The age crate does not hand out its inner reader; we recorded the kind ourselves.
        self.kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Identity;

    fn round_trip(
        recipients: &Recipients,
        key: &DecryptionKey,
        armor: Armor,
        data: &[u8],
    ) -> Vec<u8> {
        let (ct, n) = encrypt(recipients, armor, data, Vec::new()).unwrap();
        assert_eq!(n, data.len() as u64);
        let file = EncryptedFile::new(io::Cursor::new(ct)).unwrap();
        let (pt, _) = decrypt_to(file.decrypt(key).unwrap(), Vec::new()).unwrap();
        pt
    }

    #[test]
    fn x25519_round_trip_binary_and_armored() {
        let id = Identity::generate();
        let r = Recipients::Keys(vec![id.recipient()]);
        let k = DecryptionKey::Identities(vec![id]);
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
        assert_eq!(round_trip(&r, &k, Armor::Binary, &data), data);
        assert_eq!(round_trip(&r, &k, Armor::Ascii, &data), data);
        assert_eq!(round_trip(&r, &k, Armor::Binary, b""), b"");
    }

    #[test]
    fn chunk_and_batch_boundaries_round_trip() {
        let id = Identity::generate();
        let r = Recipients::Keys(vec![id.recipient()]);
        let k = DecryptionKey::Identities(vec![id]);
        let chunk = 64 * 1024;
        let batch = 16 * chunk;
        for size in [
            1,
            chunk - 1,
            chunk,
            chunk + 1,
            batch - 1,
            batch,
            batch + 1,
            2 * batch,
            3 * batch - 7,
        ] {
            let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
            assert_eq!(
                round_trip(&r, &k, Armor::Binary, &data),
                data,
                "size {size}"
            );
        }
        assert_eq!(
            round_trip(&r, &k, Armor::Ascii, &vec![5u8; batch]),
            vec![5u8; batch]
        );
    }

    #[test]
    fn files_decrypt_on_every_core_with_the_same_checks() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity::generate();
        let r = Recipients::Keys(vec![id.recipient()]);
        let key = DecryptionKey::Identities(vec![id]);
        let data: Vec<u8> = (0..(21 << 20) + 12345u32)
            .map(|i| (i % 249) as u8)
            .collect();
        let (ct, _) = encrypt(&r, Armor::Binary, &data[..], Vec::new()).unwrap();
        let path = dir.path().join("f.age");
        std::fs::write(&path, &ct).unwrap();
        let open = || std::fs::File::open(&path);
        let (out, n) = decrypt_file_to(open, &key, Vec::new()).unwrap();
        assert_eq!(n, data.len() as u64);
        assert!(out == data);

        // A flipped byte in a middle segment, and a cut at a chunk boundary.
        let mut bad = ct.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 4;
        std::fs::write(&path, &bad).unwrap();
        assert!(matches!(
            decrypt_file_to(open, &key, Vec::new()),
            Err(Error::Altered)
        ));
        let header_len = ct.len() - (data.len() + data.len().div_ceil(65536) * 16);
        std::fs::write(&path, &ct[..header_len + 100 * 65552]).unwrap();
        let err = decrypt_file_to(open, &key, Vec::new()).unwrap_err();
        assert!(matches!(err, Error::Altered | Error::Truncated), "{err}");
        // Data appended after the final chunk.
        let mut longer = ct.clone();
        longer.extend_from_slice(&[0u8; 70000]);
        std::fs::write(&path, &longer).unwrap();
        assert!(decrypt_file_to(open, &key, Vec::new()).is_err());
    }

    #[test]
    fn passphrase_files_use_work_factor_18() {
        let p = || SecretString::from("correct-horse-battery-staple-extra");
        let (ct, _) = encrypt(
            &Recipients::Passphrase(p()),
            Armor::Binary,
            &b"hi"[..],
            Vec::new(),
        )
        .unwrap();
        let header = String::from_utf8_lossy(&ct[..120]).to_string();
        assert!(header.contains("-> scrypt "), "{header}");
        let line = header.lines().find(|l| l.starts_with("-> scrypt")).unwrap();
        assert!(line.ends_with(" 18"), "{line}");
        let file = EncryptedFile::new(io::Cursor::new(ct.clone())).unwrap();
        assert!(file.needs_passphrase());
        let wrong = EncryptedFile::new(io::Cursor::new(ct)).unwrap();
        let err = wrong
            .decrypt(&DecryptionKey::Passphrase(SecretString::from("nope")))
            .unwrap_err();
        assert!(matches!(err, Error::WrongKey), "{err}");
    }

    #[test]
    fn truncation_and_flipped_bytes_are_reported_as_such() {
        let id = Identity::generate();
        let r = Recipients::Keys(vec![id.recipient()]);
        let data = vec![1u8; 300_000];
        let (ct, _) = encrypt(&r, Armor::Binary, &data[..], Vec::new()).unwrap();
        let key = DecryptionKey::Identities(vec![id]);

        // Cut at a chunk boundary: no final chunk at all.
        let header_len = ct.len() - (4 * (64 * 1024 + 16) + (300_000 - 4 * 65536) + 16);
        let cut = ct[..header_len + 2 * (64 * 1024 + 16)].to_vec();
        let pt = EncryptedFile::new(io::Cursor::new(cut))
            .unwrap()
            .decrypt(&key)
            .unwrap();
        assert!(matches!(decrypt_to(pt, Vec::new()), Err(Error::Truncated)));

        let mut flipped = ct.clone();
        let last = flipped.len() - 10;
        flipped[last] ^= 1;
        let pt = EncryptedFile::new(io::Cursor::new(flipped))
            .unwrap()
            .decrypt(&key)
            .unwrap();
        assert!(matches!(decrypt_to(pt, Vec::new()), Err(Error::Altered)));
    }
}
