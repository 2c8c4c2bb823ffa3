//! Password rules (NIST SP 800-63B section 5.1.1.2) and hashing (Argon2id, RFC 9106).
//!
//! The rules: at least 12 and at most 128 characters, any characters, no composition rules,
//! and not a common or breached password (the shared list of 30,000 in
//! `safehand_crypto::passphrase`, plus the long ones in `server/data/common-passwords.txt`,
//! also with digits and symbols stripped from the ends), a single repeated character, a simple sequence, or a
//! password built from the account's own email or name.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use std::collections::HashSet;
use std::sync::LazyLock;

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

fn argon2() -> Argon2<'static> {
    // Argon2id with the RustCrypto defaults (19 MiB, 2 passes, 1 lane): OWASP's recommended
    // minimum, about 30 ms per hash here.
    Argon2::default()
}

/// Hashes a password (slow on purpose: call it from a blocking thread).
pub fn hash(password: &str) -> Result<String, crate::Error> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| crate::Error::Internal(format!("password hashing failed: {e}")))
}

/// A fixed hash to verify against when the account does not exist, so that an unknown email
/// costs the same time as a wrong password.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| hash("not a real password, only spends time").unwrap_or_default());

/// Checks a password against a stored hash; `None` (no such account, or no password set yet)
/// spends the same time and fails.
pub fn verify(password: &str, stored: Option<&str>) -> bool {
    let (candidate, real) = match stored {
        Some(h) => (h.to_string(), true),
        None => (DUMMY_HASH.clone(), false),
    };
    let ok = PasswordHash::new(&candidate)
        .map(|parsed| {
            argon2()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false);
    ok && real
}

/// At most one Argon2id computation per CPU at a time: each takes 19 MiB, and a burst of
/// sign-ins on unbounded blocking threads made the allocator keep about 1 GiB.
fn argon2_permits() -> &'static tokio::sync::Semaphore {
    static PERMITS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    PERMITS.get_or_init(|| {
        tokio::sync::Semaphore::new(
            std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(2),
        )
    })
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
    fn hash_and_verify() {
        let h = hash("kettle orbit lantern").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("kettle orbit lantern", Some(&h)));
        assert!(!verify("kettle orbit lanterns", Some(&h)));
        assert!(!verify("kettle orbit lantern", None));
    }
}
