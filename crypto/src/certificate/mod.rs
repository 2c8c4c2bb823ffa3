//! Certificates of erasure: what a wipe did, in canonical JSON, signed with Ed25519 (RFC 8032).
//!
//! The file on disk is one canonical JSON document followed by a newline:
//! `{"certificate":{...},"signature":{"algorithm":"Ed25519","public_key":"ed25519:...","value":"..."}}`.
//! Canonical means object keys sorted, no whitespace, integers only, and strings escaped as
//! ECMAScript `JSON.stringify` does (the RFC 8785 JCS rules for the values this format uses).
//! The signature covers a domain-separation prefix and the canonical bytes of `certificate`.
//!
//! Verification is strict on purpose: the file must be byte-for-byte the canonical form of what
//! it contains, so changing any byte (even whitespace) makes [`verify_certificate`] fail. The
//! signer's public key travels inside the certificate; pass a trusted key to check *who* signed.
//!
//! ```
//! use safehand_crypto::certificate::*;
//! let signer = SigningKey::generate();
//! let cert = WipeCertificate::example();
//! let bytes = sign_certificate(&cert, &signer).unwrap();
//! let verified = verify_certificate(&bytes, Some(&signer.public_key())).unwrap();
//! assert_eq!(verified.certificate, cert);
//! let mut tampered = bytes.clone();
//! tampered[40] ^= 1;
//! assert!(verify_certificate(&tampered, None).is_err());
//! ```

mod canonical;
mod pdf;

use crate::Error;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::Signer as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use canonical::canonical_json;
pub use pdf::render_pdf;

/// The `format` value of certificates this version writes and reads.
pub const CERTIFICATE_FORMAT: &str = "safehand-wipe-certificate/1";

/// Bytes signed before the canonical certificate, so a signature can never be replayed as a
/// signature over some other Safehand object.
const SIGNATURE_CONTEXT: &[u8] = b"safehand-wipe-certificate-v1\0";

/// Prefix of a public key in text form (`cert key`, `--trusted-key`, the certificate).
const PUBLIC_KEY_PREFIX: &str = "ed25519:";

/// Prefix of the one-line private signing key file.
const SIGNING_KEY_PREFIX: &str = "safehand-signing-key-v1:";

/// The operator's Ed25519 signing key. The secret is zeroized on drop and never printed.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public_key", &self.public_key().to_string())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new key from the operating system's random generator.
    pub fn generate() -> Self {
        SigningKey(ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng))
    }

    /// Reads the one-line key file text written by [`SigningKey::to_key_file_text`].
    pub fn from_key_file_text(text: &str) -> Result<Self, Error> {
        let encoded = text
            .trim()
            .strip_prefix(SIGNING_KEY_PREFIX)
            .ok_or_else(|| {
                Error::BadSigningKey(format!(
                    "a signing key file starts with `{SIGNING_KEY_PREFIX}`"
                ))
            })?;
        let bytes = Zeroizing::new(
            BASE64
                .decode(encoded)
                .map_err(|_| Error::BadSigningKey("the signing key is not valid base64".into()))?,
        );
        let seed: &[u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| Error::BadSigningKey("a signing key is 32 bytes".into()))?;
        Ok(SigningKey(ed25519_dalek::SigningKey::from_bytes(seed)))
    }

    /// The key file text (one line, ends with a newline). Keep it in a 0600 file.
    pub fn to_key_file_text(&self) -> Zeroizing<String> {
        let seed = Zeroizing::new(self.0.to_bytes());
        Zeroizing::new(format!(
            "{SIGNING_KEY_PREFIX}{}\n",
            BASE64.encode(seed.as_slice())
        ))
    }

    /// The public half, which goes into every certificate this key signs.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }
}

/// An Ed25519 public key; text form `ed25519:<base64>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl PublicKey {
    pub(crate) fn from_dalek(key: ed25519_dalek::VerifyingKey) -> Self {
        PublicKey(key)
    }

    pub(crate) fn as_dalek(&self) -> &ed25519_dalek::VerifyingKey {
        &self.0
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PUBLIC_KEY_PREFIX}{}", BASE64.encode(self.0.as_bytes()))
    }
}

impl std::str::FromStr for PublicKey {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let encoded = text.trim().strip_prefix(PUBLIC_KEY_PREFIX).ok_or_else(|| {
            Error::BadSigningKey(format!(
                "a public key looks like `{PUBLIC_KEY_PREFIX}...` (as `safehand cert key` prints it)"
            ))
        })?;
        let bytes = BASE64
            .decode(encoded)
            .map_err(|_| Error::BadSigningKey("the public key is not valid base64".into()))?;
        let bytes: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| Error::BadSigningKey("an Ed25519 public key is 32 bytes".into()))?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|_| Error::BadSigningKey("not a valid Ed25519 public key".into()))
    }
}

/// The overall outcome of a wipe. Only `Erased` means every requested byte was written and
/// the verified passes read back as expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WipeResult {
    /// Every pass written in full without error, and every verified pass matched.
    Erased,
    /// An I/O error, a short write or a verification mismatch happened.
    Failed,
    /// The wipe was stopped (Ctrl-C, kill) before it finished.
    Incomplete,
    /// Everything was written without error, but nothing was read back (`--verify none`).
    Unverified,
}

impl std::fmt::Display for WipeResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WipeResult::Erased => "ERASED",
            WipeResult::Failed => "FAILED",
            WipeResult::Incomplete => "INCOMPLETE",
            WipeResult::Unverified => "UNVERIFIED",
        })
    }
}

/// NIST SP 800-88 sanitization category reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NistCategory {
    /// Overwrite of all user-addressable locations, verified.
    Clear,
    /// Recovery infeasible even in a laboratory (firmware sanitize, crypto erase, degauss).
    Purge,
    /// No category: the wipe did not finish, failed, or the target is not a whole medium.
    #[serde(rename = "none")]
    None,
}

impl std::fmt::Display for NistCategory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NistCategory::Clear => "Clear",
            NistCategory::Purge => "Purge",
            NistCategory::None => "none",
        })
    }
}

/// The tool that did the wipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolFacts {
    /// Program name (`safehand`).
    pub name: String,
    /// Program version.
    pub version: String,
}

/// The device (or file) that was wiped, as identified before the wipe started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceFacts {
    /// Path as given by the operator (e.g. `/dev/sdb`).
    pub path: String,
    /// `disk`, `partition`, `loop` or `file`.
    pub kind: String,
    /// Model as the device reports it, when known.
    pub model: Option<String>,
    /// Serial number as the device reports it, when known.
    pub serial: Option<String>,
    /// Size in bytes of the addressable area that was wiped.
    pub size_bytes: u64,
    /// Logical sector size in bytes.
    pub logical_sector_size: u64,
    /// Physical sector size in bytes.
    pub physical_sector_size: u64,
    /// How it is attached: `sata`, `nvme`, `usb`, `loop`, `file`, ...
    pub transport: String,
    /// Spinning disk (true), flash or SSD (false), unknown (null).
    pub rotational: Option<bool>,
    /// Removable medium, when known.
    pub removable: Option<bool>,
}

/// Hidden areas (HPA/DCO) that an overwrite through the normal interface cannot reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HiddenAreaFinding {
    /// `none` (device reports no hidden area), `detected`, `unknown` or `not-applicable`.
    pub status: String,
    /// What was checked and what was found, in words.
    pub detail: String,
}

/// The wipe method and its exact pass list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodFacts {
    /// The method as the operator named it (e.g. `dod-3`, `custom:00,ff,random`).
    pub name: String,
    /// Each pass's pattern in order: hex bytes (`00`, `55aa`) or `random`.
    pub pass_list: Vec<String>,
    /// How many times the method's pass list was repeated (`--passes`).
    pub rounds: u32,
    /// Whether a final blanking (zeros) pass was added.
    pub final_blank: bool,
}

/// How read-back verification was done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerificationFacts {
    /// `none`, `last` or `all`.
    pub mode: String,
    /// How reads avoided the page cache (`O_DIRECT`, or `fdatasync + fadvise(DONTNEED)`).
    pub cache_bypass: String,
    /// Full read-back of every byte of each verified pass.
    pub coverage: String,
}

/// A byte range `[start, end)` where something went wrong, and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByteRangeError {
    /// First byte affected.
    pub start: u64,
    /// One past the last byte affected.
    pub end: u64,
    /// What happened (the OS error, "short write", "data did not match").
    pub error: String,
}

/// Read-back of one pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassVerification {
    /// `passed`, `failed` or `interrupted`.
    pub result: String,
    /// Bytes read back and compared.
    pub bytes_verified: u64,
    /// Ranges whose content did not match what was written.
    pub mismatches: Vec<ByteRangeError>,
    /// Ranges that could not be read.
    pub read_errors: Vec<ByteRangeError>,
    /// Ranges left out of the lists above because they were too many.
    pub more_ranges_not_listed: u64,
    /// When the read-back started (RFC 3339, UTC).
    pub started_at: String,
    /// When the read-back ended.
    pub ended_at: String,
}

/// One overwrite pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassRecord {
    /// 1-based pass number.
    pub number: u32,
    /// Hex bytes repeated over the device (`00`, `55aa`) or `random`.
    pub pattern: String,
    /// For random passes: `random (AES-256-CTR, seed SHA-256 <hex>)`; else the constant.
    pub description: String,
    /// SHA-256 of the random pass's seed (never the seed itself).
    pub seed_sha256: Option<String>,
    /// `done`, `interrupted` or `not-started`.
    pub status: String,
    /// Bytes the pass had to write.
    pub bytes_planned: u64,
    /// Bytes written without error.
    pub bytes_written: u64,
    /// When the pass started (RFC 3339, UTC), if it did.
    pub started_at: Option<String>,
    /// When the pass ended, if it did.
    pub ended_at: Option<String>,
    /// Write errors and short writes.
    pub write_errors: Vec<ByteRangeError>,
    /// Write error ranges left out of the list because they were too many.
    pub more_write_errors_not_listed: u64,
    /// The read-back of this pass, if it was verified.
    pub verification: Option<PassVerification>,
}

/// The NIST SP 800-88 category reached, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NistFinding {
    /// Clear, Purge or none.
    pub category: NistCategory,
    /// Why this category (and not a higher one).
    pub reason: String,
}

/// Everything a certificate of erasure states. See the module docs for the file format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WipeCertificate {
    /// Always [`CERTIFICATE_FORMAT`].
    pub format: String,
    /// Unique id of this certificate (random, hex).
    pub certificate_id: String,
    /// Tool name and version.
    pub tool: ToolFacts,
    /// The person who did the wipe.
    pub operator: String,
    /// The school or trust, when given.
    pub organisation: Option<String>,
    /// The asset tag from the school's register, when given.
    pub asset_tag: Option<String>,
    /// The computer the wipe ran on.
    pub host: String,
    /// What was wiped.
    pub device: DeviceFacts,
    /// Hidden-area (HPA/DCO) findings.
    pub hidden_area: HiddenAreaFinding,
    /// Method and pass list.
    pub method: MethodFacts,
    /// How verification was done.
    pub verification: VerificationFacts,
    /// Every planned pass, in order, with what happened.
    pub passes: Vec<PassRecord>,
    /// NIST SP 800-88 category reached.
    pub nist: NistFinding,
    /// Things the reader must know (flash limits, hidden sectors, file-system copies).
    pub warnings: Vec<String>,
    /// ERASED, FAILED, INCOMPLETE or UNVERIFIED.
    pub result: WipeResult,
    /// Why that result, in one sentence (e.g. how far an interrupted wipe got).
    pub result_detail: String,
    /// When the wipe started (RFC 3339, UTC).
    pub started_at: String,
    /// When the wipe ended.
    pub ended_at: String,
}

impl WipeCertificate {
    /// A small, fully filled-in certificate, for examples and tests.
    pub fn example() -> Self {
        WipeCertificate {
            format: CERTIFICATE_FORMAT.into(),
            certificate_id: "0123456789abcdef0123456789abcdef".into(),
            tool: ToolFacts {
                name: "safehand".into(),
                version: "0.1.0".into(),
            },
            operator: "A. Technician".into(),
            organisation: Some("Example Primary School".into()),
            asset_tag: Some("EPS-0042".into()),
            host: "it-office".into(),
            device: DeviceFacts {
                path: "/dev/sdb".into(),
                kind: "disk".into(),
                model: Some("Example Disk".into()),
                serial: Some("SN123".into()),
                size_bytes: 1 << 20,
                logical_sector_size: 512,
                physical_sector_size: 4096,
                transport: "usb".into(),
                rotational: Some(false),
                removable: Some(true),
            },
            hidden_area: HiddenAreaFinding {
                status: "unknown".into(),
                detail: "hdparm not available".into(),
            },
            method: MethodFacts {
                name: "zero".into(),
                pass_list: vec!["00".into()],
                rounds: 1,
                final_blank: false,
            },
            verification: VerificationFacts {
                mode: "last".into(),
                cache_bypass: "O_DIRECT".into(),
                coverage: "full read-back".into(),
            },
            passes: vec![PassRecord {
                number: 1,
                pattern: "00".into(),
                description: "constant 0x00".into(),
                seed_sha256: None,
                status: "done".into(),
                bytes_planned: 1 << 20,
                bytes_written: 1 << 20,
                started_at: Some("2026-01-01T10:00:00Z".into()),
                ended_at: Some("2026-01-01T10:00:01Z".into()),
                write_errors: vec![],
                more_write_errors_not_listed: 0,
                verification: Some(PassVerification {
                    result: "passed".into(),
                    bytes_verified: 1 << 20,
                    mismatches: vec![],
                    read_errors: vec![],
                    more_ranges_not_listed: 0,
                    started_at: "2026-01-01T10:00:01Z".into(),
                    ended_at: "2026-01-01T10:00:02Z".into(),
                }),
            }],
            nist: NistFinding {
                category: NistCategory::Clear,
                reason: "verified overwrite (flash: Clear only)".into(),
            },
            warnings: vec!["Flash media: Purge needs a firmware sanitize or destruction.".into()],
            result: WipeResult::Erased,
            result_detail: "all passes written and verified".into(),
            started_at: "2026-01-01T10:00:00Z".into(),
            ended_at: "2026-01-01T10:00:02Z".into(),
        }
    }
}

/// A certificate whose signature checked out, and the key that signed it.
#[derive(Debug, Clone)]
pub struct VerifiedCertificate {
    /// The certificate's facts.
    pub certificate: WipeCertificate,
    /// The key inside the certificate that made the signature.
    pub signer: PublicKey,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureBlock {
    algorithm: String,
    public_key: String,
    value: String,
}

fn signed_message(certificate_canonical: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNATURE_CONTEXT.len() + certificate_canonical.len());
    message.extend_from_slice(SIGNATURE_CONTEXT);
    message.extend_from_slice(certificate_canonical.as_bytes());
    message
}

/// Signs a certificate and returns the bytes of the certificate file (canonical JSON + newline).
pub fn sign_certificate(certificate: &WipeCertificate, key: &SigningKey) -> Result<Vec<u8>, Error> {
    let value = serde_json::to_value(certificate)
        .map_err(|e| Error::CertificateMalformed(e.to_string()))?;
    let canonical = canonical_json(&value)?;
    let signature = key.0.sign(&signed_message(&canonical));
    let block = SignatureBlock {
        algorithm: "Ed25519".into(),
        public_key: key.public_key().to_string(),
        value: BASE64.encode(signature.to_bytes()),
    };
    let document = serde_json::json!({
        "certificate": value,
        "signature": serde_json::to_value(&block).map_err(|e| Error::CertificateMalformed(e.to_string()))?,
    });
    let mut bytes = canonical_json(&document)?.into_bytes();
    bytes.push(b'\n');
    Ok(bytes)
}

/// Checks a certificate file: canonical form, signature, and (if given) the trusted signer.
pub fn verify_certificate(
    bytes: &[u8],
    trusted: Option<&PublicKey>,
) -> Result<VerifiedCertificate, Error> {
    let document: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::CertificateMalformed(format!("not JSON ({e})")))?;
    let mut expected = canonical_json(&document)?.into_bytes();
    expected.push(b'\n');
    if expected != bytes {
        return Err(Error::CertificateNotCanonical);
    }
    let object = document
        .as_object()
        .filter(|o| o.len() == 2)
        .ok_or_else(|| {
            Error::CertificateMalformed("expected exactly `certificate` and `signature`".into())
        })?;
    let certificate_value = object
        .get("certificate")
        .ok_or_else(|| Error::CertificateMalformed("no `certificate`".into()))?;
    let block: SignatureBlock = serde_json::from_value(
        object
            .get("signature")
            .cloned()
            .ok_or_else(|| Error::CertificateMalformed("no `signature`".into()))?,
    )
    .map_err(|e| Error::CertificateMalformed(format!("signature block: {e}")))?;
    if block.algorithm != "Ed25519" {
        return Err(Error::CertificateMalformed(format!(
            "unknown signature algorithm `{}`",
            block.algorithm
        )));
    }
    let signer: PublicKey = block.public_key.parse()?;
    let signature_bytes: [u8; 64] = BASE64
        .decode(&block.value)
        .ok()
        .and_then(|b| b.as_slice().try_into().ok())
        .ok_or(Error::CertificateBadSignature)?;
    let signature = ed25519_dalek::Signature::from_bytes(&signature_bytes);
    let canonical = canonical_json(certificate_value)?;
    signer
        .0
        .verify_strict(&signed_message(&canonical), &signature)
        .map_err(|_| Error::CertificateBadSignature)?;
    if let Some(trusted) = trusted {
        if trusted != &signer {
            return Err(Error::CertificateUntrustedSigner {
                expected: trusted.to_string(),
                actual: signer.to_string(),
            });
        }
    }
    let certificate: WipeCertificate = serde_json::from_value(certificate_value.clone())
        .map_err(|e| Error::CertificateMalformed(format!("certificate fields: {e}")))?;
    if certificate.format != CERTIFICATE_FORMAT {
        return Err(Error::CertificateMalformed(format!(
            "unknown format `{}`",
            certificate.format
        )));
    }
    Ok(VerifiedCertificate {
        certificate,
        signer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_byte_matters() {
        let key = SigningKey::generate();
        let cert = WipeCertificate::example();
        let bytes = sign_certificate(&cert, &key).unwrap();
        let verified = verify_certificate(&bytes, Some(&key.public_key())).unwrap();
        assert_eq!(verified.certificate, cert);
        // Flipping any single byte must break verification.
        for i in (0..bytes.len()).step_by(7) {
            let mut t = bytes.clone();
            t[i] ^= 0x01;
            assert!(
                verify_certificate(&t, None).is_err(),
                "byte {i} changed but verified"
            );
        }
    }

    #[test]
    fn other_key_is_reported_as_untrusted() {
        let key = SigningKey::generate();
        let other = SigningKey::generate();
        let bytes = sign_certificate(&WipeCertificate::example(), &key).unwrap();
        assert!(matches!(
            verify_certificate(&bytes, Some(&other.public_key())),
            Err(Error::CertificateUntrustedSigner { .. })
        ));
    }

    #[test]
    fn key_texts_round_trip() {
        let key = SigningKey::generate();
        let again = SigningKey::from_key_file_text(&key.to_key_file_text()).unwrap();
        assert_eq!(key.public_key(), again.public_key());
        let public: PublicKey = key.public_key().to_string().parse().unwrap();
        assert_eq!(public, key.public_key());
        assert!(!format!("{key:?}").contains(&*key.to_key_file_text()));
    }

    #[test]
    fn a_changed_result_fails_even_when_re_canonicalised() {
        let key = SigningKey::generate();
        let bytes = sign_certificate(&WipeCertificate::example(), &key).unwrap();
        let text = String::from_utf8(bytes)
            .unwrap()
            .replace("\"ERASED\"", "\"FAILED\"");
        assert!(matches!(
            verify_certificate(text.as_bytes(), None),
            Err(Error::CertificateBadSignature)
        ));
    }
}
