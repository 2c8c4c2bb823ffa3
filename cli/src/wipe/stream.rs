//! The seeded random stream for random passes: AES-256-CTR keyed by a fresh 32-byte seed.
//!
//! Counter mode makes the stream seekable, so the verifier regenerates exactly the bytes for
//! any offset instead of storing what was written. Only a SHA-256 digest of the seed goes on
//! the certificate; the seed itself is zeroized when the pass ends.

use aes::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

/// A random pass's stream.
pub struct RandomStream {
    seed: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for RandomStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RandomStream").field("seed_sha256", &self.seed_digest()).finish()
    }
}

impl RandomStream {
    /// A stream with a new seed from the operating system.
    pub fn new() -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(seed.as_mut());
        RandomStream { seed }
    }

    /// SHA-256 of the seed, hex: identifies the stream without revealing it.
    pub fn seed_digest(&self) -> String {
        hex::encode(Sha256::digest(self.seed.as_ref()))
    }

    /// Fills `buf` with the stream's bytes starting at byte `offset` of the target.
    pub fn fill(&self, offset: u64, buf: &mut [u8]) {
        let mut cipher = Aes256Ctr::new(self.seed.as_ref().into(), &[0u8; 16].into());
        cipher.seek(offset);
        buf.fill(0);
        cipher.apply_keystream(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seekable_and_seed_dependent() {
        let s = RandomStream::new();
        let mut whole = vec![0u8; 8192];
        s.fill(0, &mut whole);
        let mut tail = vec![0u8; 4096];
        s.fill(4096, &mut tail);
        assert_eq!(&whole[4096..], &tail[..]);
        let mut other = vec![0u8; 8192];
        RandomStream::new().fill(0, &mut other);
        assert_ne!(whole, other);
        assert!(whole.iter().filter(|b| **b == 0).count() < 100);
        assert_eq!(s.seed_digest().len(), 64);
    }
}
