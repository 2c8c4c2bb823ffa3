//! Age files kept in two pieces, sealed and opened a slice at a time: the server's view of a
//! sealed payload. The **header** (which wraps the file key for the one passphrase) is small
//! and lives in a database; the **body** (the 16-byte nonce and the STREAM chunks) is large
//! and lives in blob storage. Destroying the header destroys the only way to the file key
//! ("crypto-shredding"). Header followed by body is an ordinary age file: `age -d` and
//! `safehand open` read it.
//!
//! Everything here is push-based (the caller hands in byte slices as they arrive from the
//! network and collects output in a `Vec`), so an async server can seal and open streams of
//! any size in flat memory without threads:
//!
//! - [`PayloadSealer`] builds the tar stream of a sealed payload from files whose names and
//!   sizes are known in advance, and encrypts it on the fly.
//! - [`inspect_header`] checks a header uploaded by someone else: a well-formed age v1 header
//!   with exactly one scrypt stanza whose work factor is at most [`MAX_SCRYPT_WORK_FACTOR`].
//! - [`unlock`] checks a passphrase against a header and returns the [`FileKey`];
//!   [`BodyOpener`] then decrypts the body with it, chunk by authenticated chunk.
//!
//! ```
//! use safehand_crypto::split::{unlock, BodyOpener, PayloadSealer};
//! use safehand_crypto::SecretString;
//!
//! let passphrase = SecretString::from("correct horse battery staple".to_string());
//! let mut sealer = PayloadSealer::new(&passphrase)?;
//! let header = sealer.header().to_vec();
//! let mut body = Vec::new();
//! sealer.start_file("register.csv", 11, 0, &mut body)?;
//! sealer.write(b"name,class\n", &mut body)?;
//! sealer.finish(&mut body)?;
//!
//! let key = unlock(&header, &passphrase)?;
//! let mut opener = BodyOpener::new(&key);
//! let mut tar = Vec::new();
//! opener.open(&body, &mut tar)?;
//! opener.finish(&mut tar)?;
//! assert_eq!(&tar[512..523], b"name,class\n");
//! # Ok::<(), safehand_crypto::Error>(())
//! ```

use std::fmt;

use age::secrecy::{ExposeSecret, SecretString};
use age_core::format::{FileKey as AgeFileKey, Stanza};
use base64::prelude::{Engine, BASE64_STANDARD_NO_PAD};
use hmac::Mac;
use rand::RngCore;
use tar::EntryType;
use zeroize::Zeroizing;

use crate::encryption::MAX_SCRYPT_WORK_FACTOR;
use crate::error::{Error, Result};
use crate::keys::Recipients;
use crate::payload::{entry_header, safe_relative, SealSummary};
use crate::stream::{header_for, header_mac, wrap_stanzas_with, PayloadKey, CHUNK, TAG};

/// Bytes of the nonce at the start of the body.
pub const BODY_NONCE_LEN: usize = 16;

/// The largest header [`inspect_header`] accepts (one scrypt stanza needs about 150 bytes).
pub const MAX_HEADER_LEN: usize = 4096;

const VERSION_LINE: &[u8] = b"age-encryption.org/v1\n";

/// A payload's file key (16 bytes), unwrapped from its header with the passphrase. Whoever
/// holds it can decrypt the body; it zeroizes itself and never prints.
#[derive(Clone)]
pub struct FileKey(Zeroizing<[u8; 16]>);

impl fmt::Debug for FileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FileKey([redacted])")
    }
}

impl FileKey {
    /// The key's bytes, to store sealed under another key for a short time.
    pub fn expose(&self) -> &[u8; 16] {
        &self.0
    }

    /// A key read back from storage.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let arr: [u8; 16] = bytes
            .try_into()
            .map_err(|_| Error::BadHeader("a stored file key has the wrong length".into()))?;
        Ok(Self(Zeroizing::new(arr)))
    }
}

// ---------------------------------------------------------------------------------------------
// Sealing

/// STREAM encryption (C2SP age spec, "Payload") a slice at a time. A full chunk is held back
/// until more plaintext arrives, because the final chunk carries the last-chunk flag.
struct BodySealer {
    key: PayloadKey,
    nonce: Option<[u8; BODY_NONCE_LEN]>,
    pending: Zeroizing<Vec<u8>>,
    counter: u64,
}

impl BodySealer {
    fn seal_pending(&mut self, last: bool, out: &mut Vec<u8>) -> Result<()> {
        let at = out.len();
        out.extend_from_slice(&self.pending);
        self.key.seal_chunk(self.counter, last, out, at)?;
        self.pending.clear();
        self.counter += 1;
        Ok(())
    }

    fn emit_nonce(&mut self, out: &mut Vec<u8>) {
        if let Some(n) = self.nonce.take() {
            out.extend_from_slice(&n);
        }
    }

    fn push(&mut self, mut plaintext: &[u8], out: &mut Vec<u8>) -> Result<()> {
        self.emit_nonce(out);
        while !plaintext.is_empty() {
            if self.pending.len() == CHUNK {
                self.seal_pending(false, out)?;
            }
            let take = (CHUNK - self.pending.len()).min(plaintext.len());
            self.pending.extend_from_slice(&plaintext[..take]);
            plaintext = &plaintext[take..];
        }
        Ok(())
    }

    fn finish(mut self, out: &mut Vec<u8>) -> Result<()> {
        self.emit_nonce(out);
        self.seal_pending(true, out)
    }
}

/// Builds a sealed payload (a tar stream inside an age file with one scrypt stanza) from
/// files announced one at a time with their size, and encrypts it as the content arrives.
/// Output is the body; [`PayloadSealer::header`] is the header.
///
/// The content of each file must add up to exactly the size announced for it: tar writes the
/// size before the content, so a file that ends early or runs long is an error
/// ([`Error::SealInput`]) and the output so far must be thrown away.
pub struct PayloadSealer {
    header: Vec<u8>,
    body: BodySealer,
    /// Bytes still to come for the current file, and its padding to 512.
    remaining: u64,
    padding: usize,
    /// Plaintext bytes (tar) so far.
    offset: u64,
    summary: SealSummary,
}

impl fmt::Debug for PayloadSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PayloadSealer")
            .field("offset", &self.offset)
            .field("files", &self.summary.files)
            .finish()
    }
}

impl PayloadSealer {
    /// Starts a payload for `passphrase`: a new random file key wrapped in one scrypt stanza
    /// (work factor [`crate::SCRYPT_WORK_FACTOR`]: about 256 MiB and half a second of work, so
    /// call this where blocking is fine).
    pub fn new(passphrase: &SecretString) -> Result<Self> {
        Self::with_work_factor(passphrase, crate::SCRYPT_WORK_FACTOR)
    }

    /// [`PayloadSealer::new`] with scrypt work factor `work_factor` (from 10 to
    /// [`MAX_SCRYPT_WORK_FACTOR`]): [`crate::GENERATED_SCRYPT_WORK_FACTOR`] for a generated
    /// passphrase. Needs 2^`work_factor` KiB of memory while the key is wrapped.
    pub fn with_work_factor(passphrase: &SecretString, work_factor: u8) -> Result<Self> {
        if !(10..=MAX_SCRYPT_WORK_FACTOR).contains(&work_factor) {
            return Err(Error::SealInput(format!(
                "the scrypt work factor must be from 10 to {MAX_SCRYPT_WORK_FACTOR}, not {work_factor}"
            )));
        }
        let file_key = AgeFileKey::init_with_mut(|k| rand::rngs::OsRng.fill_bytes(k));
        let recipients =
            Recipients::Passphrase(SecretString::from(passphrase.expose_secret().to_string()));
        let stanzas = wrap_stanzas_with(&recipients, &file_key, work_factor)?;
        let header = header_for(&stanzas, &file_key);
        let mut nonce = [0u8; BODY_NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let key = PayloadKey::new(file_key.expose_secret(), &nonce)?;
        Ok(Self {
            header,
            body: BodySealer {
                key,
                nonce: Some(nonce),
                pending: Zeroizing::new(Vec::with_capacity(CHUNK)),
                counter: 0,
            },
            remaining: 0,
            padding: 0,
            offset: 0,
            summary: SealSummary::default(),
        })
    }

    /// The age header (ends with the MAC line).
    pub fn header(&self) -> &[u8] {
        &self.header
    }

    fn plain(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<()> {
        self.offset += bytes.len() as u64;
        self.body.push(bytes, out)
    }

    fn end_file(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if self.remaining > 0 {
            return Err(Error::SealInput(format!(
                "a file ended {} bytes before the size announced for it",
                self.remaining
            )));
        }
        let padding = std::mem::take(&mut self.padding);
        self.plain(&[0u8; 512][..padding], out)
    }

    /// Starts the next file: `name` (a relative path without `..`), `size` bytes, modified at
    /// `mtime` (seconds since 1970). Returns where its content starts in the tar stream.
    pub fn start_file(
        &mut self,
        name: &str,
        size: u64,
        mtime: u64,
        out: &mut Vec<u8>,
    ) -> Result<u64> {
        self.end_file(out)?;
        if name.contains('\0') || name.ends_with('/') {
            return Err(Error::SealInput(format!("`{name}` is not a file name")));
        }
        safe_relative(name.as_bytes())
            .map_err(|reason| Error::SealInput(format!("`{name}`: {reason}")))?;
        let blocks = entry_header(
            EntryType::Regular,
            name.as_bytes(),
            None,
            size,
            0o600,
            mtime,
        )
        .map_err(|e| Error::io("cannot build the payload", e))?;
        self.plain(&blocks, out)?;
        self.remaining = size;
        self.padding = (512 - (size % 512) as usize) % 512;
        self.summary.files += 1;
        self.summary.bytes += size;
        Ok(self.offset)
    }

    /// Adds content of the current file.
    pub fn write(&mut self, content: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if content.len() as u64 > self.remaining {
            return Err(Error::SealInput(
                "a file is longer than the size announced for it".into(),
            ));
        }
        self.remaining -= content.len() as u64;
        self.plain(content, out)
    }

    /// Bytes still expected for the current file.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Ends the payload (the tar end-of-archive blocks and the final chunk).
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<SealSummary> {
        self.end_file(out)?;
        self.plain(&[0u8; 1024], out)?;
        self.body.finish(out)?;
        Ok(self.summary)
    }
}

// ---------------------------------------------------------------------------------------------
// Headers

/// What [`inspect_header`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderInfo {
    /// Length of the header in bytes (the body starts here).
    pub len: usize,
    /// The scrypt work factor (log2 N) of its one passphrase stanza.
    pub work_factor: u8,
}

struct ParsedHeader {
    len: usize,
    /// Bytes covered by the MAC: everything up to and including `---`.
    mac_input_len: usize,
    mac: Vec<u8>,
    stanzas: Vec<Stanza>,
}

fn bad(reason: &str) -> Error {
    Error::BadHeader(reason.to_string())
}

/// Parses the header at the start of `bytes`; `Ok(None)` when more bytes are needed.
fn parse_header(bytes: &[u8]) -> Result<Option<ParsedHeader>> {
    parse_header_within(bytes, MAX_HEADER_LEN)
}

/// Checks that `bytes` starts with a complete age v1 header written exactly as the C2SP
/// grammar says (every stanza has body lines ending in a short, possibly empty, line of
/// canonical base64; then the MAC line), as the reference implementation does. The `age`
/// crate still accepts legacy stanzas without that final line; files that rely on it are
/// refused here. `max_len` bounds the header.
pub(crate) fn check_header_grammar(bytes: &[u8], max_len: usize) -> Result<()> {
    match parse_header_within(bytes, max_len)? {
        Some(_) => Ok(()),
        None => Err(bad("its header is incomplete or malformed")),
    }
}

fn parse_header_within(bytes: &[u8], max_len: usize) -> Result<Option<ParsedHeader>> {
    let probe = &bytes[..bytes.len().min(VERSION_LINE.len())];
    if !VERSION_LINE.starts_with(probe) {
        if bytes.starts_with(b"-----BEGIN") {
            return Err(bad(
                "it is ASCII-armored; upload the binary .age file (age without -a)",
            ));
        }
        return Err(bad("it does not start with `age-encryption.org/v1`"));
    }
    let mut pos = VERSION_LINE.len();
    let mut stanzas = Vec::new();
    let line_at = |pos: usize| -> Option<&[u8]> {
        let rest = bytes.get(pos..)?;
        let end = rest.iter().position(|&b| b == b'\n')?;
        Some(&rest[..end])
    };
    loop {
        if pos > max_len {
            return Err(bad("its header is too long"));
        }
        let Some(line) = line_at(pos) else {
            return if bytes.len() - pos > max_len {
                Err(bad("its header is too long"))
            } else {
                Ok(None)
            };
        };
        if let Some(mac) = line.strip_prefix(b"--- ") {
            let mac = BASE64_STANDARD_NO_PAD
                .decode(mac)
                .ok()
                .filter(|m| m.len() == 32)
                .ok_or_else(|| bad("its header MAC line is malformed"))?;
            return Ok(Some(ParsedHeader {
                len: pos + line.len() + 1,
                mac_input_len: pos + 3,
                mac,
                stanzas,
            }));
        }
        let Some(args) = line.strip_prefix(b"-> ") else {
            return Err(bad(
                "its header has a line that is neither a stanza nor the MAC",
            ));
        };
        let args = std::str::from_utf8(args).map_err(|_| bad("a stanza is not text"))?;
        let mut words = args.split(' ');
        let tag = words.next().unwrap_or_default().to_string();
        let args: Vec<String> = words.map(str::to_string).collect();
        if tag.is_empty() || args.iter().any(String::is_empty) {
            return Err(bad("a stanza line is malformed"));
        }
        pos += line.len() + 1;
        // Body lines: 64 columns each, the last one shorter (possibly empty).
        let mut body_b64 = Vec::new();
        loop {
            let Some(body_line) = line_at(pos) else {
                return Ok(None);
            };
            if body_line.len() > 64 {
                return Err(bad("a stanza body line is longer than 64 columns"));
            }
            body_b64.extend_from_slice(body_line);
            pos += body_line.len() + 1;
            if body_line.len() < 64 {
                break;
            }
        }
        let body = BASE64_STANDARD_NO_PAD
            .decode(&body_b64)
            .map_err(|_| bad("a stanza body is not canonical base64"))?;
        stanzas.push(Stanza { tag, args, body });
    }
}

/// The one scrypt stanza of a passphrase header, with its work factor; anything else is
/// refused.
fn the_scrypt_stanza(parsed: &ParsedHeader) -> Result<(&Stanza, u8)> {
    let scrypt: Vec<&Stanza> = parsed
        .stanzas
        .iter()
        .filter(|s| s.tag == "scrypt")
        .collect();
    if scrypt.len() != 1 || parsed.stanzas.len() != 1 {
        return Err(bad(&format!(
            "it must be encrypted with exactly one passphrase (one scrypt stanza); it has {} \
             stanza(s), {} of them scrypt",
            parsed.stanzas.len(),
            scrypt.len()
        )));
    }
    let stanza = scrypt[0];
    let work_factor = match stanza.args.as_slice() {
        [_, wf]
            if wf.len() <= 2 && wf.bytes().all(|b| b.is_ascii_digit()) && !wf.starts_with('0') =>
        {
            wf.parse::<u8>()
                .map_err(|_| bad("the scrypt work factor is malformed"))?
        }
        _ => return Err(bad("the scrypt stanza is malformed")),
    };
    if work_factor > MAX_SCRYPT_WORK_FACTOR {
        return Err(Error::WorkFactorTooHigh {
            required: work_factor,
            max: MAX_SCRYPT_WORK_FACTOR,
        });
    }
    Ok((stanza, work_factor))
}

/// Checks the header at the start of `bytes` (an upload's first bytes): a well-formed age v1
/// binary header with exactly one scrypt stanza of work factor at most
/// [`MAX_SCRYPT_WORK_FACTOR`]. `Ok(None)` means more bytes are needed to see its end.
/// Without the passphrase the header's MAC cannot be checked; [`unlock`] does that.
pub fn inspect_header(bytes: &[u8]) -> Result<Option<HeaderInfo>> {
    let Some(parsed) = parse_header(bytes)? else {
        return Ok(None);
    };
    let (_, work_factor) = the_scrypt_stanza(&parsed)?;
    // The age crate's own parser must agree that this is a canonical header.
    let mut probe = bytes[..parsed.len].to_vec();
    probe.extend_from_slice(&[0u8; BODY_NONCE_LEN]);
    age::Decryptor::new_buffered(std::io::Cursor::new(probe))
        .map_err(|e| bad(&format!("its header is malformed ({e})")))?;
    Ok(Some(HeaderInfo {
        len: parsed.len,
        work_factor,
    }))
}

/// Checks `passphrase` against a passphrase header and returns the file key. Runs scrypt
/// (up to 1 GiB of memory at work factor 20): call it where blocking is fine, and not for
/// many callers at once. A wrong passphrase is [`Error::WrongKey`]; a header whose MAC does
/// not match is [`Error::HeaderAltered`].
pub fn unlock(header: &[u8], passphrase: &SecretString) -> Result<FileKey> {
    let parsed = parse_header(header)?.ok_or_else(|| bad("the header is incomplete"))?;
    let (stanza, _) = the_scrypt_stanza(&parsed)?;
    let mut identity =
        age::scrypt::Identity::new(SecretString::from(passphrase.expose_secret().to_string()));
    identity.set_max_work_factor(MAX_SCRYPT_WORK_FACTOR);
    let file_key = match age::Identity::unwrap_stanza(&identity, stanza) {
        Some(Ok(k)) => k,
        Some(Err(age::DecryptError::ExcessiveWork { required, .. })) => {
            return Err(Error::WorkFactorTooHigh {
                required,
                max: MAX_SCRYPT_WORK_FACTOR,
            })
        }
        Some(Err(age::DecryptError::InvalidHeader)) => {
            return Err(bad("the scrypt stanza is malformed"))
        }
        _ => return Err(Error::WrongKey),
    };
    let mut mac = header_mac(file_key.expose_secret());
    mac.update(&header[..parsed.mac_input_len]);
    mac.verify_slice(&parsed.mac)
        .map_err(|_| Error::HeaderAltered)?;
    Ok(FileKey(Zeroizing::new(*file_key.expose_secret())))
}

/// Whether a body of `len` bytes can be a well-formed age body (nonce, then full chunks and
/// one final chunk that is not empty unless it is the only one). Checks sizes only.
pub fn body_len_is_valid(len: u64) -> bool {
    let Some(chunks) = len.checked_sub(BODY_NONCE_LEN as u64) else {
        return false;
    };
    let full = (CHUNK + TAG) as u64;
    let last = chunks % full;
    match (chunks / full, last) {
        (0, l) => l >= TAG as u64,
        (_, 0) => true,
        (_, l) => l > TAG as u64,
    }
}

/// The plaintext length of a well-formed body of `len` bytes.
pub fn plaintext_len(len: u64) -> Option<u64> {
    if !body_len_is_valid(len) {
        return None;
    }
    let chunks = len - BODY_NONCE_LEN as u64;
    let full = (CHUNK + TAG) as u64;
    let n = chunks.div_ceil(full);
    Some(chunks - n * TAG as u64)
}

// ---------------------------------------------------------------------------------------------
// Opening

/// STREAM decryption of a body a slice at a time. Every chunk is authenticated before its
/// plaintext is released; [`BodyOpener::finish`] authenticates the final chunk and reports a
/// truncated body. After any error, nothing more is released.
pub struct BodyOpener {
    file_key: FileKey,
    nonce: Vec<u8>,
    key: Option<PayloadKey>,
    pending: Vec<u8>,
    counter: u64,
    failed: bool,
}

impl fmt::Debug for BodyOpener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodyOpener")
            .field("chunks", &self.counter)
            .finish()
    }
}

impl BodyOpener {
    /// An opener for a body whose header gave `file_key`.
    pub fn new(file_key: &FileKey) -> Self {
        Self {
            file_key: file_key.clone(),
            nonce: Vec::with_capacity(BODY_NONCE_LEN),
            key: None,
            pending: Vec::with_capacity(2 * (CHUNK + TAG)),
            counter: 0,
            failed: false,
        }
    }

    /// Opens `self.pending[start..end]` as chunk number `self.counter`.
    fn open_chunk(
        &mut self,
        start: usize,
        end: usize,
        last: bool,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let key = self.key.as_ref().ok_or(Error::Truncated)?;
        let at = out.len();
        out.extend_from_slice(&self.pending[start..end]);
        match key.open_chunk(self.counter, last, &mut out[at..]) {
            Ok(n) => {
                out.truncate(at + n);
                self.counter += 1;
                Ok(())
            }
            Err(e) => {
                out.truncate(at);
                self.failed = true;
                Err(e)
            }
        }
    }

    /// Decrypts what it can of `ciphertext` into `out`. A full chunk is kept back until more
    /// arrives (it may be the final one).
    pub fn open(&mut self, mut ciphertext: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if self.failed {
            return Err(Error::Altered);
        }
        if self.key.is_none() {
            let take = (BODY_NONCE_LEN - self.nonce.len()).min(ciphertext.len());
            self.nonce.extend_from_slice(&ciphertext[..take]);
            ciphertext = &ciphertext[take..];
            if self.nonce.len() < BODY_NONCE_LEN {
                return Ok(());
            }
            self.key = Some(PayloadKey::new(self.file_key.expose(), &self.nonce)?);
        }
        self.pending.extend_from_slice(ciphertext);
        let full = CHUNK + TAG;
        let mut start = 0;
        while self.pending.len() - start > full {
            self.open_chunk(start, start + full, false, out)?;
            start += full;
        }
        self.pending.drain(..start);
        Ok(())
    }

    /// Authenticates the final chunk and releases it.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<()> {
        if self.failed {
            return Err(Error::Altered);
        }
        if self.key.is_none() || self.pending.len() < TAG {
            return Err(Error::Truncated);
        }
        // Only a payload with no plaintext at all may end in an empty chunk.
        if self.pending.len() == TAG && self.counter > 0 {
            return Err(Error::Altered);
        }
        let end = self.pending.len();
        self.open_chunk(0, end, true, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decrypt_to, DecryptionKey, EncryptedFile};

    fn pass() -> SecretString {
        SecretString::from("test passphrase for split files".to_string())
    }

    fn seal(files: &[(&str, Vec<u8>)], step: usize) -> (Vec<u8>, Vec<u8>) {
        let mut sealer = PayloadSealer::new(&pass()).unwrap();
        let header = sealer.header().to_vec();
        let mut body = Vec::new();
        for (name, content) in files {
            sealer
                .start_file(name, content.len() as u64, 1_700_000_000, &mut body)
                .unwrap();
            for piece in content.chunks(step) {
                sealer.write(piece, &mut body).unwrap();
            }
        }
        sealer.finish(&mut body).unwrap();
        (header, body)
    }

    #[test]
    fn sealed_payload_is_an_age_file_with_a_tar_inside() {
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let files = vec![
            ("a.txt", b"hello".to_vec()),
            ("big.bin", big.clone()),
            ("empty", Vec::new()),
        ];
        let (header, body) = seal(&files, 7777);
        assert!(inspect_header(&header).unwrap().is_some());
        assert!(body_len_is_valid(body.len() as u64));
        let mut whole = header.clone();
        whole.extend_from_slice(&body);
        let file = EncryptedFile::new(std::io::Cursor::new(whole)).unwrap();
        let plain = file.decrypt(&DecryptionKey::Passphrase(pass())).unwrap();
        let (tar_bytes, n) = decrypt_to(plain, Vec::new()).unwrap();
        assert_eq!(plaintext_len(body.len() as u64), Some(n));
        let mut archive = tar::Archive::new(std::io::Cursor::new(tar_bytes.clone()));
        let mut seen = Vec::new();
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let mut content = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut content).unwrap();
            seen.push((e.path().unwrap().display().to_string(), content));
        }
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[1].0, "big.bin");
        assert_eq!(seen[1].1, big);

        // The same through the push-based opener, fed in odd pieces.
        let key = unlock(&header, &pass()).unwrap();
        let mut opener = BodyOpener::new(&key);
        let mut out = Vec::new();
        for piece in body.chunks(10_007) {
            opener.open(piece, &mut out).unwrap();
        }
        opener.finish(&mut out).unwrap();
        assert_eq!(out, tar_bytes);
    }

    #[test]
    fn generated_passphrases_use_their_own_work_factor() {
        let sealer =
            PayloadSealer::with_work_factor(&pass(), crate::GENERATED_SCRYPT_WORK_FACTOR).unwrap();
        let info = inspect_header(sealer.header()).unwrap().unwrap();
        assert_eq!(info.work_factor, 16);
        assert!(unlock(sealer.header(), &pass()).is_ok());
        for bad in [9, MAX_SCRYPT_WORK_FACTOR + 1] {
            assert!(matches!(
                PayloadSealer::with_work_factor(&pass(), bad),
                Err(Error::SealInput(_))
            ));
        }
    }

    #[test]
    fn sizes_must_match_what_was_announced() {
        let mut sealer = PayloadSealer::new(&pass()).unwrap();
        let mut body = Vec::new();
        sealer.start_file("a", 3, 0, &mut body).unwrap();
        assert!(matches!(
            sealer.write(b"abcd", &mut body),
            Err(Error::SealInput(_))
        ));
        sealer.write(b"ab", &mut body).unwrap();
        assert!(matches!(
            sealer.start_file("b", 1, 0, &mut body),
            Err(Error::SealInput(_))
        ));
        let mut sealer = PayloadSealer::new(&pass()).unwrap();
        for bad_name in ["../x", "/etc/passwd", "a/../../b", "", "dir/"] {
            assert!(
                sealer.start_file(bad_name, 0, 0, &mut body).is_err(),
                "{bad_name}"
            );
        }
    }

    #[test]
    fn wrong_passphrase_tampering_and_truncation_are_refused() {
        let (header, body) = seal(&[("a", vec![7u8; 150_000])], 65_536);
        let wrong = SecretString::from("not it".to_string());
        assert!(matches!(unlock(&header, &wrong), Err(Error::WrongKey)));
        let mut altered = header.clone();
        let at = altered.len() - 5;
        altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
        assert!(unlock(&altered, &pass()).is_err());

        let key = unlock(&header, &pass()).unwrap();
        let mut opener = BodyOpener::new(&key);
        let mut out = Vec::new();
        opener.open(&body[..body.len() - 100], &mut out).unwrap();
        assert!(matches!(opener.finish(&mut out), Err(Error::Altered)));

        let full = CHUNK + TAG;
        let mut opener = BodyOpener::new(&key);
        opener.open(&body[..16 + full], &mut out).unwrap();
        assert!(opener.finish(&mut out).is_err(), "cut at a chunk boundary");

        let mut flipped = body.clone();
        flipped[100] ^= 1;
        let mut opener = BodyOpener::new(&key);
        let mut out = Vec::new();
        assert!(opener.open(&flipped, &mut out).is_err());
        assert!(out.is_empty(), "nothing released from a bad chunk");
    }

    #[test]
    fn uploaded_headers_are_checked() {
        let (header, _) = seal(&[("a", b"x".to_vec())], 1);
        let info = inspect_header(&header).unwrap().unwrap();
        assert_eq!(info.len, header.len());
        assert_eq!(info.work_factor, 18);
        // Incomplete: more bytes needed.
        assert!(inspect_header(&header[..30]).unwrap().is_none());
        // Work factor 21.
        let text = String::from_utf8(header.clone()).unwrap();
        let raised = text.replacen(" 18\n", " 21\n", 1);
        assert!(matches!(
            inspect_header(raised.as_bytes()),
            Err(Error::WorkFactorTooHigh { required: 21, .. })
        ));
        // Two stanzas, an X25519 stanza, garbage, armor.
        let id = crate::Identity::generate();
        let (x25519, _) = crate::encrypt(
            &Recipients::Keys(vec![id.recipient()]),
            crate::Armor::Binary,
            &b"x"[..],
            Vec::new(),
        )
        .unwrap();
        assert!(matches!(
            inspect_header(&x25519),
            Err(Error::BadHeader(m)) if m.contains("exactly one passphrase")
        ));
        assert!(inspect_header(b"PK\x03\x04 not age at all").is_err());
        assert!(inspect_header(b"-----BEGIN AGE ENCRYPTED FILE-----\n").is_err());
    }

    #[test]
    fn body_lengths() {
        let full = (CHUNK + TAG) as u64;
        assert!(!body_len_is_valid(10));
        assert!(body_len_is_valid(16 + 16)); // empty payload
        assert!(body_len_is_valid(16 + full));
        assert!(!body_len_is_valid(16 + full + 16)); // empty final chunk after a full one
        assert!(body_len_is_valid(16 + full + 17));
        assert_eq!(plaintext_len(16 + full + 17), Some(CHUNK as u64 + 1));
    }
}
