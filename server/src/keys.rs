//! The server key: a 256-bit secret kept outside the database (a key file in the data folder,
//! created with mode 0600 when absent, or given by configuration). Secrets at rest (TOTP seeds)
//! are sealed under a key derived from it with AES-256-GCM; CSRF tokens and recovery-code hashes
//! are HMAC-SHA-256 under other derived keys, so one purpose's key never serves another.
//!
//! Every sealed value names the key it was sealed under (an 8-byte key id derived from the
//! server key), so a rotation (`safehand-server admin rotate-key`, see [`crate::key_rotation`])
//! can tell done rows from rows still to do, and a value sealed under another key fails with an
//! error that says so. The keyed hashes are derived from the server key as well, so a
//! rotation changes them (an older release kept the first key as their root; see
//! [`crate::key_rotation::load_server_secrets`]).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;
use zeroize::Zeroizing;

use crate::Error;

type HmacSha256 = Hmac<Sha256>;

/// Version byte of values sealed before key ids existed: `[1][nonce][ciphertext]`, read as
/// sealed under the current key.
const SEALED_V1: u8 = 1;
/// Version byte of values that name their key: `[2][key id (8)][nonce (12)][ciphertext]`.
const SEALED_V2: u8 = 2;

/// Identifies a server key without revealing it (the first 8 bytes of an HMAC of the key).
pub type KeyId = [u8; 8];

/// The keys derived from the server key. Debug never shows them.
pub struct ServerKeys {
    id: KeyId,
    seal: Zeroizing<[u8; 32]>,
    csrf: Zeroizing<[u8; 32]>,
    codes: Zeroizing<[u8; 32]>,
}

fn derive(master: &[u8; 32], label: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&hmac(master, label));
    out
}

impl std::fmt::Debug for ServerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerKeys([redacted])")
    }
}

impl ServerKeys {
    /// Derives the purpose keys from the 32-byte server key (which is also the HMAC root until
    /// [`ServerKeys::with_hmac_root`] says otherwise).
    pub fn from_master(master: &[u8; 32]) -> Self {
        let mut id = [0u8; 8];
        id.copy_from_slice(&hmac(master, b"safehand server key: key id v1")[..8]);
        let keys = Self {
            id,
            seal: derive(master, b"safehand server key: seal secrets at rest v1"),
            csrf: Zeroizing::new([0u8; 32]),
            codes: Zeroizing::new([0u8; 32]),
        };
        keys.with_hmac_root(master)
    }

    /// Uses `root` (an earlier server key, sealed in the database by an older release's
    /// rotation) for the keyed hashes, until the next rotation drops it.
    pub fn with_hmac_root(mut self, root: &[u8; 32]) -> Self {
        self.csrf = derive(root, b"safehand server key: csrf tokens v1");
        self.codes = derive(root, b"safehand server key: recovery codes v1");
        self
    }

    /// This key's id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// This key's id in hex, as operators see it.
    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }

    /// A new random key and its text form (64 hex digits) for a key file.
    pub fn generate() -> (Self, Zeroizing<String>) {
        let mut master = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut master[..]);
        let text = Zeroizing::new(hex::encode(&master[..]));
        (Self::from_master(&master), text)
    }

    /// Writes a new key file (mode 0600, refusing to replace a file) and syncs it to disk.
    pub fn write_key_file(path: &Path, text: &str) -> Result<(), Error> {
        let file_err = |source| Error::KeyFile {
            path: path.display().to_string(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(file_err)?;
        file.write_all(text.as_bytes()).map_err(file_err)?;
        file.write_all(b"\n").map_err(file_err)?;
        file.sync_all().map_err(file_err)?;
        Ok(())
    }

    /// Parses a key written as 64 hex digits or base64 of 32 bytes.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let text = text.trim();
        let bytes = Zeroizing::new(
            hex::decode(text)
                .ok()
                .or_else(|| {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD.decode(text).ok()
                })
                .ok_or_else(|| Error::KeyMalformed("not hex or base64".into()))?,
        );
        let master: Zeroizing<[u8; 32]> = Zeroizing::new(
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| Error::KeyMalformed(format!("{} bytes", bytes.len())))?,
        );
        Ok(Self::from_master(&master))
    }

    /// Reads the key file, or creates it (mode 0600) with a new random key when it is absent.
    pub fn load_or_create(path: &Path) -> Result<Self, Error> {
        let file_err = |source| Error::KeyFile {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (keys, text) = Self::generate();
                Self::write_key_file(path, &text)?;
                Ok(keys)
            }
            Err(e) => Err(file_err(e)),
        }
    }

    /// Encrypts `plaintext` with AES-256-GCM; `context` (e.g. "totp-seed:42") is bound as
    /// associated data so a sealed value cannot be moved to another row.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Vec<u8> {
        let key: &[u8; 32] = &self.seal;
        let cipher = Aes256Gcm::new(key.into());
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let payload = Payload {
            msg: plaintext,
            aad: context.as_bytes(),
        };
        // Encryption with a valid key and a buffer in memory cannot fail.
        let body = cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .unwrap_or_default();
        let mut out = Vec::with_capacity(1 + 8 + 12 + body.len());
        out.push(SEALED_V2);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        out
    }

    /// Decrypts a value made by [`ServerKeys::seal`] with the same `context`.
    pub fn unseal(&self, context: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        let (nonce, body) = match sealed.first() {
            Some(&SEALED_V1) if sealed.len() >= 1 + 12 + 16 => (&sealed[1..13], &sealed[13..]),
            Some(&SEALED_V2) if sealed.len() >= 1 + 8 + 12 + 16 => {
                if sealed[1..9] != self.id {
                    return Err(Error::SealedUnderOtherKey {
                        found: hex::encode(&sealed[1..9]),
                        current: self.id_hex(),
                    });
                }
                (&sealed[9..21], &sealed[21..])
            }
            _ => return Err(Error::Unseal),
        };
        let key: &[u8; 32] = &self.seal;
        let cipher = Aes256Gcm::new(key.into());
        let payload = Payload {
            msg: body,
            aad: context.as_bytes(),
        };
        cipher
            .decrypt(Nonce::from_slice(nonce), payload)
            .map(Zeroizing::new)
            .map_err(|_| Error::Unseal)
    }

    /// The key a sealed value names (`None` for values sealed before key ids, or not sealed
    /// values at all).
    pub fn sealed_key_id(sealed: &[u8]) -> Option<KeyId> {
        match sealed.first() {
            Some(&SEALED_V2) if sealed.len() >= 9 => sealed[1..9].try_into().ok(),
            _ => None,
        }
    }

    /// The CSRF token for a browser's CSRF cookie value, bound to its sign-in session cookie
    /// (`""` when it has none): a token taken from one session is refused in another, even
    /// with the same CSRF cookie.
    pub fn csrf_token(&self, cookie_value: &str, session_cookie: &str) -> String {
        let message = format!("{cookie_value}\0{session_cookie}");
        hex::encode(hmac(&self.csrf, message.as_bytes()))
    }

    /// Keyed hash of a recovery code for one user: a stolen database alone cannot be searched.
    pub fn recovery_code_hash(&self, user_id: i64, code: &str) -> String {
        let message = format!("{user_id}:{code}");
        hex::encode(hmac(&self.codes, message.as_bytes()))
    }
}

impl ServerKeys {
    /// Keyed hash of a one-time code sent by mail, bound to what it is for (`context`, e.g.
    /// "recipient-code:42"), so a code for one purpose never matches another.
    pub fn one_time_code_hash(&self, context: &str, code: &str) -> String {
        let message = format!("{context}|{code}");
        hex::encode(hmac(&self.codes, message.as_bytes()))
    }
}

fn hmac(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable_hmac());
    mac.update(message);
    mac.finalize().into_bytes().into()
}

#[allow(clippy::panic)]
fn unreachable_hmac() -> HmacSha256 {
    panic!("HMAC-SHA-256 accepts keys of any length")
}

/// SHA-256 in hex: how session ids, API tokens and enrolment links are stored (they are
/// 256-bit random values, so an unsalted hash is enough to make a stolen table useless).
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new random 256-bit token, base64url without padding.
pub fn new_token() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Constant-time comparison of two strings (tokens, CSRF values).
pub fn same(a: &str, b: &str) -> bool {
    same_bytes(a.as_bytes(), b.as_bytes())
}

/// Constant-time comparison of two byte strings of public length.
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_in_their_context_and_under_their_key() {
        let keys = ServerKeys::from_master(&[7u8; 32]);
        let sealed = keys.seal("totp-seed:1", b"seed bytes");
        assert_eq!(
            keys.unseal("totp-seed:1", &sealed).unwrap().as_slice(),
            b"seed bytes"
        );
        assert!(keys.unseal("totp-seed:2", &sealed).is_err());
        let other = ServerKeys::from_master(&[8u8; 32]);
        assert!(other.unseal("totp-seed:1", &sealed).is_err());
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(keys.unseal("totp-seed:1", &tampered).is_err());
    }

    #[test]
    fn sealed_values_name_their_key() {
        let old = ServerKeys::from_master(&[1u8; 32]);
        let new = ServerKeys::from_master(&[2u8; 32]);
        assert_ne!(old.id(), new.id());
        let sealed = old.seal("c", b"secret");
        assert_eq!(ServerKeys::sealed_key_id(&sealed), Some(old.id()));
        match new.unseal("c", &sealed) {
            Err(Error::SealedUnderOtherKey { found, current }) => {
                assert_eq!((found, current), (old.id_hex(), new.id_hex()));
            }
            other => panic!("{other:?}"),
        }
        // A value from before key ids (version 1) is read under the current key.
        let v2 = old.seal("c", b"legacy");
        let mut v1 = vec![SEALED_V1];
        v1.extend_from_slice(&v2[9..]);
        assert_eq!(old.unseal("c", &v1).unwrap().as_slice(), b"legacy");
        assert_eq!(ServerKeys::sealed_key_id(&v1), None);
    }

    #[test]
    fn keyed_hashes_follow_the_hmac_root() {
        let first = ServerKeys::from_master(&[1u8; 32]);
        let rotated = ServerKeys::from_master(&[2u8; 32]).with_hmac_root(&[1u8; 32]);
        assert_eq!(
            first.recovery_code_hash(7, "abc"),
            rotated.recovery_code_hash(7, "abc")
        );
        assert_eq!(first.csrf_token("x", ""), rotated.csrf_token("x", ""));
        assert_ne!(first.id(), rotated.id());
    }

    #[test]
    fn key_file_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.key");
        let first = ServerKeys::load_or_create(&path).unwrap();
        let sealed = first.seal("x", b"y");
        let again = ServerKeys::load_or_create(&path).unwrap();
        assert_eq!(again.unseal("x", &sealed).unwrap().as_slice(), b"y");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(format!("{first:?}").contains("redacted"));
    }
}
