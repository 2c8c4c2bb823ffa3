//! The seeded random stream for random passes: AES-128-CTR keyed by a fresh 16-byte seed.
//! (AES-128 rather than 256: 10 rounds instead of 14 make it 40% faster, and a wipe stream
//! only has to be unpredictable for one pass, not to protect a secret for decades.)
//!
//! Counter mode makes the stream seekable, so the verifier regenerates exactly the bytes for
//! any offset instead of storing what was written. Only a SHA-256 digest of the seed goes on
//! the certificate; the seed itself is zeroized when the pass ends.

use aes::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

type WipeCtr = ctr::Ctr128BE<aes::Aes128>;

/// A random pass's stream.
pub struct RandomStream {
    seed: Zeroizing<[u8; 16]>,
}

impl std::fmt::Debug for RandomStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RandomStream")
            .field("seed_sha256", &self.seed_digest())
            .finish()
    }
}

impl RandomStream {
    /// A stream with a new seed from the operating system.
    pub fn new() -> Self {
        let mut seed = Zeroizing::new([0u8; 16]);
        OsRng.fill_bytes(seed.as_mut_slice());
        RandomStream { seed }
    }

    /// SHA-256 of the seed, hex: identifies the stream without revealing it.
    pub fn seed_digest(&self) -> String {
        hex::encode(Sha256::digest(self.seed.as_slice()))
    }

    /// Fills `buf` with the stream's bytes starting at byte `offset` of the target.
    pub fn fill(&self, offset: u64, buf: &mut [u8]) {
        buf.fill(0);
        self.xor_into(offset, buf);
    }

    fn xor_into(&self, offset: u64, buf: &mut [u8]) {
        let mut cipher = WipeCtr::new((&*self.seed).into(), &[0u8; 16].into());
        cipher.seek(offset);
        cipher.apply_keystream(buf);
    }

    /// Compares `data` (read back from byte `offset`) with the stream, `granule` bytes at a
    /// time, and returns the indices of granules that differ. The stream is regenerated in a
    /// small buffer that stays in the CPU cache, so the read-back is touched only once.
    pub fn mismatching_granules(&self, offset: u64, data: &[u8], granule: usize) -> Vec<usize> {
        const SCRATCH: usize = 64 << 10;
        let step = SCRATCH / granule * granule;
        let mut cipher = WipeCtr::new((&*self.seed).into(), &[0u8; 16].into());
        cipher.seek(offset);
        let mut scratch = vec![0u8; step];
        let mut bad = Vec::new();
        for (i, chunk) in data.chunks(step).enumerate() {
            let expected = &mut scratch[..chunk.len()];
            expected.fill(0);
            cipher.apply_keystream(expected);
            if expected != chunk {
                for (j, (a, b)) in chunk
                    .chunks(granule)
                    .zip(expected.chunks(granule))
                    .enumerate()
                {
                    if a != b {
                        bad.push(i * (step / granule) + j);
                    }
                }
            }
        }
        bad
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
        let mut big = vec![0u8; 300_000];
        s.fill(8192, &mut big);
        assert!(s.mismatching_granules(8192, &big, 4096).is_empty());
        big[5000] ^= 1;
        big[299_999] ^= 1;
        assert_eq!(s.mismatching_granules(8192, &big, 4096), vec![1, 73]);
    }
}
