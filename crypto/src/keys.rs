//! Who a file is encrypted to and how it is opened: X25519 recipients and identities (the
//! `age1...` / `AGE-SECRET-KEY-1...` keys of `age-keygen`) and passphrases.

use std::fmt;
use std::str::FromStr;

use age::secrecy::{ExposeSecret, SecretString};

use crate::error::{Error, Result};

/// An X25519 recipient (`age1...`): a public key a file can be encrypted to.
#[derive(Clone)]
pub struct Recipient(pub(crate) age::x25519::Recipient);

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recipient({})", self.0)
    }
}

impl fmt::Display for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Recipient {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        s.trim()
            .parse::<age::x25519::Recipient>()
            .map(Recipient)
            .map_err(|_| Error::InvalidRecipient {
                source_name: "recipient".into(),
                value: s.to_owned(),
            })
    }
}

impl Recipient {
    /// Parses a recipients file (`age -R` format): one `age1...` per line, blank lines and
    /// `#` comments ignored. `name` is used in error messages.
    pub fn parse_file(name: &str, text: &str) -> Result<Vec<Recipient>> {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let r =
                line.parse::<age::x25519::Recipient>()
                    .map_err(|_| Error::InvalidRecipient {
                        source_name: format!("{name} line {}", i + 1),
                        value: line.to_owned(),
                    })?;
            out.push(Recipient(r));
        }
        if out.is_empty() {
            return Err(Error::Empty(name.to_owned()));
        }
        Ok(out)
    }
}

/// An X25519 identity (`AGE-SECRET-KEY-1...`): the secret key that opens files encrypted to
/// its [`Recipient`]. Zeroized on drop by the `age` crate; `Debug` shows only the public key.
#[derive(Clone)]
pub struct Identity(pub(crate) age::x25519::Identity);

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity(for {})", self.0.to_public())
    }
}

impl Identity {
    /// A new random identity.
    pub fn generate() -> Self {
        Identity(age::x25519::Identity::generate())
    }

    /// The recipient that files for this identity are encrypted to.
    pub fn recipient(&self) -> Recipient {
        Recipient(self.0.to_public())
    }

    /// The `AGE-SECRET-KEY-1...` text, as a secret.
    pub fn to_secret_string(&self) -> SecretString {
        self.0.to_string()
    }

    /// Parses an identity file (`age-keygen` format): `AGE-SECRET-KEY-1...` lines, blank lines
    /// and `#` comments ignored. Errors never repeat the file's content.
    pub fn parse_file(name: &str, text: &str) -> Result<Vec<Identity>> {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let id = line
                .parse::<age::x25519::Identity>()
                .map_err(|_| Error::InvalidIdentity {
                    source_name: format!("{name} line {}", i + 1),
                })?;
            out.push(Identity(id));
        }
        if out.is_empty() {
            return Err(Error::Empty(name.to_owned()));
        }
        Ok(out)
    }

    /// The identity file text `age-keygen` writes, with `created` as the creation comment.
    pub fn to_file_text(&self, created: &str) -> SecretString {
        let secret = self.0.to_string();
        SecretString::from(format!(
            "# created: {created}\n# public key: {}\n{}\n",
            self.0.to_public(),
            secret.expose_secret()
        ))
    }
}

/// Who a new file is encrypted to. The age format forbids mixing a passphrase with other
/// recipients, so this is one or the other.
pub enum Recipients {
    /// One passphrase (scrypt, work factor [`crate::SCRYPT_WORK_FACTOR`]).
    Passphrase(SecretString),
    /// One or more X25519 recipients.
    Keys(Vec<Recipient>),
}

impl fmt::Debug for Recipients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recipients::Passphrase(_) => f.write_str("Recipients::Passphrase([REDACTED])"),
            Recipients::Keys(k) => f.debug_tuple("Recipients::Keys").field(k).finish(),
        }
    }
}

/// What opens an existing file.
pub enum DecryptionKey {
    /// A passphrase, for files with an scrypt stanza.
    Passphrase(SecretString),
    /// X25519 identities; any of them may match.
    Identities(Vec<Identity>),
}

impl fmt::Debug for DecryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecryptionKey::Passphrase(_) => f.write_str("DecryptionKey::Passphrase([REDACTED])"),
            DecryptionKey::Identities(ids) => f
                .debug_tuple("DecryptionKey::Identities")
                .field(&ids.len())
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_file_round_trips_and_never_echoes_secrets() {
        let id = Identity::generate();
        let text = id.to_file_text("2026-01-01T00:00:00Z");
        let parsed = Identity::parse_file("key.txt", text.expose_secret()).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(
            parsed[0].recipient().to_string(),
            id.recipient().to_string()
        );
        assert!(!format!("{:?}", parsed[0]).contains("AGE-SECRET-KEY"));

        let bad = "AGE-SECRET-KEY-1QQQQ-not-really\n";
        let err = Identity::parse_file("key.txt", bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("key.txt line 1"), "{err}");
        assert!(!err.contains("QQQQ"), "error echoed the secret line: {err}");
    }

    #[test]
    fn recipients_file_skips_comments_and_names_bad_lines() {
        let a = Identity::generate().recipient().to_string();
        let text = format!("# team\n\n{a}\n");
        assert_eq!(Recipient::parse_file("team.txt", &text).unwrap().len(), 1);
        let err = Recipient::parse_file("team.txt", "# x\nssh-ed25519 AAAA\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("team.txt line 2"), "{err}");
        assert!(matches!(
            Recipient::parse_file("e.txt", "# nothing\n"),
            Err(Error::Empty(_))
        ));
    }
}
