//! Password rules (NIST SP 800-63B section 5.1.1.2) and hashing (Argon2id, RFC 9106).
//!
//! The rules: at least 12 and at most 128 characters, any characters, no composition rules,
//! and not a common or breached password (the shared list of 30,000 in
//! `safehand_crypto::passphrase`, plus the long ones in `server/data/common-passwords.txt`,
//! also with digits and symbols stripped from the ends), a single repeated character, a simple sequence, or a
//! password built from the account's own email or name.

use argon2::password_hash::{Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

/// Fewest characters a password may have.
pub const MIN_CHARS: usize = 12;
/// Most characters a password may have (Argon2 is slow on purpose; this bounds the work).
pub const MAX_CHARS: usize = 128;

static COMMON: LazyLock<HashSet<String>> = LazyLock::new(|| {
    include_str!("../data/common-passwords.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_lowercase)
        .collect()
});

/// Checks a new password; the error says what to change.
pub fn check_new(password: &str, email: &str, name: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if chars < MIN_CHARS {
        return Err(format!(
            "Your password must be at least {MIN_CHARS} characters long (a few words together work well)."
        ));
    }
    if chars > MAX_CHARS {
        return Err(format!(
            "Your password must be at most {MAX_CHARS} characters long."
        ));
    }
    let lower = password.to_lowercase();
    let squashed: String = lower.chars().filter(|c| !c.is_whitespace()).collect();
    // Also with digits and symbols stripped from the ends ("Password1234!" is "password").
    let letters_digits: String = lower.chars().filter(|c| c.is_alphanumeric()).collect();
    let letters = letters_digits.trim_matches(|c: char| c.is_ascii_digit());
    let common = |s: &str| COMMON.contains(s) || safehand_crypto::passphrase::is_common(s);
    if common(&lower) || common(&squashed) || common(&letters_digits) || common(letters) {
        return Err("This password is too common: it appears in lists of breached passwords. Choose another.".into());
    }
    let first = lower.chars().next();
    if lower.chars().all(|c| Some(c) == first) {
        return Err("Your password cannot be one character repeated. Choose another.".into());
    }
    if is_sequence(&lower) {
        return Err(
            "Your password cannot be a simple sequence like 123456… or abcdef…. Choose another."
                .into(),
        );
    }
    let local = email.split('@').next().unwrap_or("").to_lowercase();
    let name = name.trim().to_lowercase();
    let too_personal = |word: &str| word.chars().count() >= 4 && squashed.contains(word);
    if too_personal(&local) || too_personal(&name.replace(' ', "")) || lower.contains("safehand") {
        return Err("Your password cannot contain your email address, your name or the name of this service. Choose another.".into());
    }
    Ok(())
}

fn is_sequence(s: &str) -> bool {
    let bytes: Vec<u32> = s.chars().map(u32::from).collect();
    let rising = bytes.windows(2).all(|w| w[1] == w[0] + 1);
    let falling = bytes.windows(2).all(|w| w[0] == w[1] + 1);
    rising || falling
}

/// Argon2id with the RustCrypto defaults (19 MiB, 2 passes, 1 lane): OWASP's recommended
/// minimum, about 30 ms per hash here. Hashes record their parameters, so stored hashes made
/// with other parameters still verify.
fn params() -> Params {
    Params::DEFAULT
}

/// Argon2 working memory, reused. Each computation needs `m` KiB of blocks (19 MiB by
/// default); allocating and freeing that per sign-in made glibc raise its mmap threshold and
/// keep the freed buffers in its heaps (400-550 MiB under a burst of sign-ins). Buffers of the
/// default size are kept here, at most one per permit of [`argon2_permits`], zeroed after each
/// use.
static MEMORY: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());

/// Runs `f` with zeroed working memory of `block_count` blocks: a pooled buffer when the
/// count is the default one, a buffer of its own otherwise (an old hash with other parameters).
/// The memory is zeroed again afterwards, so no password-derived state lingers.
fn with_memory<R>(block_count: usize, f: impl FnOnce(&mut [Block]) -> R) -> R {
    let pooled = block_count == params().block_count();
    let reused = if pooled {
        MEMORY.lock().map(|mut pool| pool.pop()).unwrap_or(None)
    } else {
        None
    };
    let mut blocks = reused.unwrap_or_else(|| vec![Block::default(); block_count]);
    let result = f(&mut blocks);
    for block in blocks.iter_mut() {
        block.zeroize();
    }
    if pooled {
        if let Ok(mut pool) = MEMORY.lock() {
            if pool.len() < permit_count() {
                pool.push(blocks);
            }
        }
    }
    result
}

/// Hashes a password (slow on purpose: call it from a blocking thread, or [`hash_async`]).
/// The result is a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`).
pub fn hash(password: &str) -> Result<String, crate::Error> {
    let failed =
        |e: &dyn std::fmt::Display| crate::Error::Internal(format!("password hashing failed: {e}"));
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let mut salt_bytes = [0u8; Salt::MAX_LENGTH];
    let salt_bytes = salt.decode_b64(&mut salt_bytes).map_err(|e| failed(&e))?;
    let params = params();
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut out = Zeroizing::new([0u8; Params::DEFAULT_OUTPUT_LEN]);
    with_memory(params.block_count(), |blocks| {
        argon2.hash_password_into_with_memory(password.as_bytes(), salt_bytes, &mut out[..], blocks)
    })
    .map_err(|e| failed(&e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| failed(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out[..]).map_err(|e| failed(&e))?),
    };
    Ok(phc.to_string())
}

/// A fixed hash to verify against when the account does not exist, so that an unknown email
/// costs the same time as a wrong password.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| hash("not a real password, only spends time").unwrap_or_default());

/// Checks a password against a stored hash; `None` (no such account, or no password set yet)
/// spends the same time and fails.
pub fn verify(password: &str, stored: Option<&str>) -> bool {
    let (candidate, real) = match stored {
        Some(h) => (h, true),
        None => (DUMMY_HASH.as_str(), false),
    };
    verify_phc(password, candidate).unwrap_or(false) && real
}

/// Recomputes the Argon2 hash of `password` with the parameters and salt of the PHC string
/// `stored` and compares the results in constant time. `None` when `stored` is not a hash
/// this server can check.
fn verify_phc(password: &str, stored: &str) -> Option<bool> {
    let parsed = PasswordHash::new(stored).ok()?;
    let algorithm = Algorithm::try_from(parsed.algorithm).ok()?;
    let version = parsed
        .version
        .map_or(Ok(Version::default()), Version::try_from)
        .ok()?;
    let params = Params::try_from(&parsed).ok()?;
    let expected = parsed.hash?;
    let mut salt = [0u8; Salt::MAX_LENGTH];
    let salt = parsed.salt?.decode_b64(&mut salt).ok()?;
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let mut out = Zeroizing::new(vec![0u8; expected.len()]);
    with_memory(params.block_count(), |blocks| {
        argon2.hash_password_into_with_memory(password.as_bytes(), salt, &mut out, blocks)
    })
    .ok()?;
    Some(bool::from(out.as_slice().ct_eq(expected.as_bytes())))
}

/// At most one Argon2id computation per CPU at a time: each takes 19 MiB, and a burst of
/// sign-ins on unbounded blocking threads made the allocator keep about 1 GiB.
fn argon2_permits() -> &'static tokio::sync::Semaphore {
    static PERMITS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    PERMITS.get_or_init(|| tokio::sync::Semaphore::new(permit_count()))
}

fn permit_count() -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(2)
}

/// Runs [`hash`] on a blocking thread (one per CPU at most).
pub async fn hash_async(password: zeroize::Zeroizing<String>) -> Result<String, crate::Error> {
    let _permit = argon2_permits()
        .acquire()
        .await
        .map_err(|e| crate::Error::Internal(e.to_string()))?;
    tokio::task::spawn_blocking(move || hash(&password))
        .await
        .map_err(|e| crate::Error::Internal(e.to_string()))?
}

/// Runs [`verify`] on a blocking thread (one per CPU at most).
pub async fn verify_async(password: zeroize::Zeroizing<String>, stored: Option<String>) -> bool {
    let Ok(_permit) = argon2_permits().acquire().await else {
        return false;
    };
    tokio::task::spawn_blocking(move || verify(&password, stored.as_deref()))
        .await
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nist_rules() {
        assert!(check_new("short", "a@b.c", "A").is_err());
        assert!(check_new(&"x".repeat(129), "a@b.c", "A").is_err());
        assert!(check_new("Password1234", "a@b.c", "A").is_err(), "common");
        assert!(
            check_new("Sunshine!!2024", "a@b.c", "A").is_err(),
            "common word with decoration"
        );
        assert!(
            check_new("iloveyou12345678", "a@b.c", "A").is_err(),
            "shared list"
        );
        assert!(check_new("aaaaaaaaaaaaaa", "a@b.c", "A").is_err(), "repeat");
        assert!(
            check_new("abcdefghijklmnop", "a@b.c", "A").is_err(),
            "sequence"
        );
        assert!(check_new("jane.smith-rules-ok", "jane.smith@school.sch.uk", "Jane").is_err());
        assert!(check_new("kettle orbit lantern", "a@b.c", "A").is_ok());
        // No composition rules: all lower case letters and spaces is fine; so are emoji.
        assert!(check_new("🦀🦀 river stone 🦀🦀", "a@b.c", "A").is_ok());
        // 128 characters is allowed, counted in characters not bytes.
        assert!(check_new(
            &"é"
                .repeat(64)
                .chars()
                .chain("ab".repeat(32).chars())
                .collect::<String>(),
            "a@b.c",
            "A"
        )
        .is_ok());
    }

    #[test]
    fn hashes_made_before_the_memory_pool_still_verify() {
        // Made by `argon2::Argon2::default().hash_password` (PasswordHasher), as stored
        // before passwords reused their Argon2 memory.
        let stored = "$argon2id$v=19$m=19456,t=2,p=1$hNuCYKYBxnHx2pDju6vrFw$AqQ3QsNFSDd91H9zkZBAe6x3iimCR9HvgTcZ1rT2FtM";
        assert!(verify("kettle orbit lantern", Some(stored)));
        assert!(!verify("kettle orbit lanterns", Some(stored)));
        // Other parameters and the other Argon2 variants (a hash from another tool).
        use argon2::password_hash::PasswordHasher;
        for (algorithm, m) in [(Algorithm::Argon2id, 8192), (Algorithm::Argon2i, 19456)] {
            let other = Argon2::new(
                algorithm,
                Version::V0x13,
                Params::new(m, 3, 1, None).unwrap(),
            )
            .hash_password(
                b"river stone meadow",
                &SaltString::generate(&mut rand::rngs::OsRng),
            )
            .unwrap()
            .to_string();
            assert!(verify("river stone meadow", Some(&other)), "{other}");
            assert!(!verify("river stone meadows", Some(&other)), "{other}");
        }
        assert!(!verify("kettle orbit lantern", Some("not a hash")));
        assert!(!verify(
            "kettle orbit lantern",
            Some("$argon2id$v=19$m=19456,t=2,p=1$hNuCYKYBxnHx2pDju6vrFw")
        ));
    }

    #[test]
    fn new_hashes_verify_with_the_argon2_crate_and_reuse_zeroed_memory() {
        use argon2::password_hash::PasswordVerifier;
        let h = hash("kettle orbit lantern").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        let parsed = PasswordHash::new(&h).unwrap();
        assert!(Argon2::default()
            .verify_password(b"kettle orbit lantern", &parsed)
            .is_ok());
        assert_ne!(
            hash("kettle orbit lantern").unwrap(),
            h,
            "a new salt each time"
        );
        // The pool keeps at most one buffer per permit, every one zeroed.
        let pool = MEMORY.lock().unwrap();
        assert!(pool.len() <= permit_count());
        assert!(pool.iter().all(|b| b.len() == params().block_count()
            && b.iter().all(|block| block.as_ref().iter().all(|w| *w == 0))));
    }

    #[test]
    fn hash_and_verify() {
        let h = hash("kettle orbit lantern").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("kettle orbit lantern", Some(&h)));
        assert!(!verify("kettle orbit lanterns", Some(&h)));
        assert!(!verify("kettle orbit lantern", None));
    }
}
