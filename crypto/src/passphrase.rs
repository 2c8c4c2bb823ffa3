//! Passphrases: generated ones (words read aloud over the phone) and the strength check for
//! ones people choose. The word list and the common-password list are described, with their
//! sources and licences, in `crypto/data/README.md`.
//!
//! Choices: generated passphrases are [`GENERATED_WORDS`] words from the EFF long word list
//! (7,772 words without the four hyphenated ones: 12.92 bits each, 90.4 bits in all), lower
//! case ASCII joined by `-`, so they read aloud, type on any keyboard and survive every
//! encoding. Chosen passphrases guard files that can be attacked offline, so they need at least
//! [`MIN_CHOSEN_CHARS`] characters (NIST SP 800-63B rev. 4's floor for single-factor
//! passwords) and must not be a common password, with or without digits, symbols or spaces
//! around it, nor one character repeated.

use std::sync::OnceLock;

use age::secrecy::{ExposeSecret, SecretString};
use rand::Rng;
use zeroize::Zeroizing;

/// Words in a generated passphrase.
pub const GENERATED_WORDS: usize = 7;

/// Fewest characters a chosen passphrase may have.
pub const MIN_CHOSEN_CHARS: usize = 15;

const WORD_LIST: &str = include_str!("../data/eff_large_wordlist.txt");
const COMMON_PASSWORDS: &str = include_str!("../data/common-passwords.txt");

fn words() -> &'static [&'static str] {
    static WORDS: OnceLock<Vec<&'static str>> = OnceLock::new();
    WORDS.get_or_init(|| {
        WORD_LIST
            .lines()
            .filter_map(|line| line.split('\t').nth(1))
            .map(str::trim)
            .filter(|w| !w.is_empty() && !w.contains('-'))
            .collect()
    })
}

fn common() -> &'static [&'static str] {
    static COMMON: OnceLock<Vec<&'static str>> = OnceLock::new();
    COMMON.get_or_init(|| {
        let mut list: Vec<&'static str> = COMMON_PASSWORDS
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        // The file is shipped sorted; sorting again keeps lookups right if someone edits it.
        list.sort_unstable();
        list
    })
}

/// Bits of entropy of a generated passphrase.
pub fn generated_entropy_bits() -> f64 {
    GENERATED_WORDS as f64 * (words().len() as f64).log2()
}

/// Number of entries in the common-password list.
pub fn common_list_len() -> usize {
    common().len()
}

/// A new passphrase of [`GENERATED_WORDS`] random words joined by `-`, e.g.
/// `gravy-unfasten-sprain-dwelling-lavish-opposite-rental`. Uses the operating system's
/// random source; each word is drawn uniformly.
pub fn generate() -> SecretString {
    let list = words();
    let mut rng = rand::rngs::OsRng;
    let mut out = Zeroizing::new(String::with_capacity(GENERATED_WORDS * 10));
    for i in 0..GENERATED_WORDS {
        if i > 0 {
            out.push('-');
        }
        out.push_str(list[rng.gen_range(0..list.len())]);
    }
    SecretString::from(out.as_str())
}

/// True if `candidate` (compared case-insensitively) is on the list of the 30,000 most common
/// passwords. Shared with the server for account passwords.
pub fn is_common(candidate: &str) -> bool {
    let lower = Zeroizing::new(candidate.to_lowercase());
    common().binary_search(&lower.as_str()).is_ok()
}

/// Why a chosen passphrase was refused. The message says what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WeakPassphrase {
    /// Fewer than [`MIN_CHOSEN_CHARS`] characters.
    #[error(
        "it has {chars} characters; use at least {min} (several words work well), or let \
         Safehand generate one with --generate"
    )]
    TooShort {
        /// Characters given.
        chars: usize,
        /// Characters needed.
        min: usize,
    },
    /// On the common-password list, possibly with digits, symbols or spaces added.
    #[error(
        "it is a common password (or one with a few characters added), the first thing an \
         attacker tries; choose something else, or use --generate"
    )]
    Common,
    /// One character repeated, or one short pattern repeated.
    #[error(
        "it is one character or a short pattern repeated; choose something else, or use --generate"
    )]
    Repetitive,
}

/// Checks a passphrase someone chose (generated ones always pass).
pub fn check_chosen(passphrase: &SecretString) -> Result<(), WeakPassphrase> {
    let p = passphrase.expose_secret();
    let chars = p.chars().count();
    if chars < MIN_CHOSEN_CHARS {
        return Err(WeakPassphrase::TooShort {
            chars,
            min: MIN_CHOSEN_CHARS,
        });
    }
    if is_repetitive(p) {
        return Err(WeakPassphrase::Repetitive);
    }
    let lower = Zeroizing::new(p.to_lowercase());
    let letters_digits = Zeroizing::new(
        lower
            .chars()
            .filter(|c| c.is_alphanumeric())
            .collect::<String>(),
    );
    let letters = Zeroizing::new(
        letters_digits
            .trim_matches(|c: char| c.is_ascii_digit())
            .to_owned(),
    );
    if is_common(&lower) || is_common(&letters_digits) || is_common(&letters) {
        return Err(WeakPassphrase::Common);
    }
    Ok(())
}

/// True when the whole text is one unit of at most 4 characters repeated.
fn is_repetitive(p: &str) -> bool {
    let chars: Vec<char> = p.chars().collect();
    (1..=4).any(|unit| {
        chars.len() > unit
            && chars.len() % unit == 0
            && chars.chunks(unit).all(|c| c == &chars[..unit])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_list_is_the_eff_long_list() {
        assert_eq!(WORD_LIST.lines().count(), 7776);
        assert_eq!(words().len(), 7772);
        assert!(words()
            .iter()
            .all(|w| w.bytes().all(|b| b.is_ascii_lowercase())));
        assert_eq!(words()[0], "abacus");
        assert_eq!(*words().last().unwrap(), "zoom");
    }

    #[test]
    fn generated_passphrases_are_strong_words_joined_by_hyphens() {
        assert!(
            generated_entropy_bits() >= 80.0,
            "{}",
            generated_entropy_bits()
        );
        let a = generate();
        let b = generate();
        assert_ne!(a.expose_secret(), b.expose_secret());
        let parts: Vec<&str> = a.expose_secret().split('-').collect();
        assert_eq!(parts.len(), GENERATED_WORDS);
        assert!(parts.iter().all(|w| words().contains(w)));
        assert!(a.expose_secret().is_ascii());
        assert!(check_chosen(&a).is_ok());
        assert!(!format!("{a:?}").contains(parts[0]));
    }

    #[test]
    fn common_list_is_large_sorted_and_case_insensitive() {
        assert!(common_list_len() >= 30_000);
        assert!(COMMON_PASSWORDS
            .lines()
            .zip(COMMON_PASSWORDS.lines().skip(1))
            .all(|(a, b)| a < b));
        assert!(is_common("password"));
        assert!(is_common("PassWord"));
        assert!(is_common("qwertyuiop"));
        assert!(!is_common("gravy-unfasten-sprain-dwelling"));
    }

    #[test]
    fn weak_passphrases_are_refused_with_the_reason() {
        let check = |s: &str| check_chosen(&SecretString::from(s));
        assert!(matches!(
            check("short"),
            Err(WeakPassphrase::TooShort { chars: 5, .. })
        ));
        assert_eq!(
            check("aaaaaaaaaaaaaaaaaaaa"),
            Err(WeakPassphrase::Repetitive)
        );
        assert_eq!(check("abcabcabcabcabcabc"), Err(WeakPassphrase::Repetitive));
        assert_eq!(check("1234567890987654321"), Err(WeakPassphrase::Common));
        assert_eq!(check("  Password1234567!"), Err(WeakPassphrase::Common));
        assert!(check("the owl sings at nine by the canal").is_ok());
        let msg = check("short").unwrap_err().to_string();
        assert!(msg.contains("at least 15"), "{msg}");
    }
}
