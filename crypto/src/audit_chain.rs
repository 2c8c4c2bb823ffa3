//! The audit log's chain format, shared by the server (which writes the chain and checks it
//! with its audit key) and `safehand audit-verify` (which checks an exported log offline with
//! the public key alone).
//!
//! Every record carries three values:
//! - `hash`: SHA-256 over `[seq, at, actor_id, actor, action, subject, address, details,
//!   prev_hash]` as one JSON array, where `prev_hash` is the record before's `hash`. Anyone can
//!   recompute it, so it proves nothing against someone who rewrites a record and every hash
//!   after it.
//! - `mac`: HMAC-SHA-256 under the audit key (kept outside the database) over the `hash`. A
//!   database writer without the key cannot make one, so a rewritten record (with all the
//!   unkeyed hashes recomputed) fails the server's check.
//! - at intervals and on every export, a **signed head**: an Ed25519 signature by the audit
//!   key over `(seq, hash, at)`. An export carries the signed heads it covers and the public
//!   key, so the DPO can check offline that the records are exactly the ones the server held
//!   when it signed; the public key is shown on the server's audit page to note down once.

use crate::certificate::PublicKey;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, Verifier as _};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Bytes signed before a head, so the signature means nothing as any other Safehand object.
const HEAD_CONTEXT: &str = "safehand-audit-head-v1";

/// Prefix of the audit key's text form.
const KEY_PREFIX: &str = "safehand-audit-key-v1:";

/// The fields of one record that its hash covers.
#[derive(Clone, Debug)]
pub struct Fields<'a> {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// Unix seconds.
    pub at: i64,
    /// The acting user's id, if any.
    pub actor_id: Option<i64>,
    /// Who acted.
    pub actor: &'a str,
    /// What happened.
    pub action: &'a str,
    /// What it happened to.
    pub subject: &'a str,
    /// The client's address.
    pub address: &'a str,
    /// The details, exactly as stored (a JSON object as text).
    pub details: &'a str,
    /// The hash of the record before.
    pub prev_hash: &'a str,
}

/// The unkeyed SHA-256 of a record (hex).
pub fn record_hash(f: &Fields<'_>) -> String {
    let canonical = serde_json::json!([
        f.seq,
        f.at,
        f.actor_id,
        f.actor,
        f.action,
        f.subject,
        f.address,
        f.details,
        f.prev_hash
    ]);
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// What a signed head's signature covers.
fn head_message(seq: i64, hash: &str, at: i64) -> Vec<u8> {
    format!("{HEAD_CONTEXT}\n{seq}\n{hash}\n{at}").into_bytes()
}

/// The audit key: one 32-byte secret from which the chain's MAC key and the Ed25519 key that
/// signs heads are derived. Debug never shows it; it is zeroized on drop.
pub struct AuditKey {
    mac: Zeroizing<[u8; 32]>,
    signing: ed25519_dalek::SigningKey,
    keyed_from: i64,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditKey")
            .field("public_key", &self.public_key().to_string())
            .field("keyed_from", &self.keyed_from)
            .finish_non_exhaustive()
    }
}

/// HMAC-SHA-256 under a 32-byte key (which HMAC always accepts).
fn hmac_sha256(key: &[u8; 32]) -> Hmac<Sha256> {
    <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable_hmac())
}

#[allow(clippy::panic)]
fn unreachable_hmac() -> Hmac<Sha256> {
    panic!("HMAC-SHA-256 accepts keys of any length")
}

fn derive(secret: &[u8; 32], label: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut mac = hmac_sha256(secret);
    mac.update(label);
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

impl AuditKey {
    /// The key derived from a 32-byte secret, for a log whose records from `keyed_from` on
    /// must carry a MAC (the records before it were written before the log was keyed).
    pub fn from_secret(secret: &[u8; 32], keyed_from: i64) -> Self {
        let mac = derive(secret, b"safehand audit key: record macs v1");
        let seed = derive(secret, b"safehand audit key: head signatures v1");
        Self {
            mac,
            signing: ed25519_dalek::SigningKey::from_bytes(&seed),
            keyed_from: keyed_from.max(1),
        }
    }

    /// A new random key for a log whose next record is `keyed_from` (1 for a new log), and
    /// its text form (for a 0600 key file). The file keeps `keyed_from`, so nobody who can
    /// only write to the database can pass rewritten records off as older than the key.
    pub fn generate(keyed_from: i64) -> (Self, Zeroizing<String>) {
        let mut secret = Zeroizing::new([0u8; 32]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret[..]);
        let keyed_from = keyed_from.max(1);
        let text = Zeroizing::new(format!(
            "{KEY_PREFIX}{}\nkeyed-from: {keyed_from}\n",
            BASE64.encode(&secret[..])
        ));
        (Self::from_secret(&secret, keyed_from), text)
    }

    /// The first record that must carry a MAC.
    pub fn keyed_from(&self) -> i64 {
        self.keyed_from
    }

    /// Reads the text form written by [`AuditKey::generate`].
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let encoded = lines
            .next()
            .unwrap_or("")
            .strip_prefix(KEY_PREFIX)
            .ok_or_else(|| format!("an audit key starts with `{KEY_PREFIX}`"))?;
        let keyed_from = match lines.next() {
            None => 1,
            Some(l) => l
                .strip_prefix("keyed-from:")
                .and_then(|n| n.trim().parse::<i64>().ok())
                .filter(|n| *n >= 1)
                .ok_or_else(|| "the audit key's second line is `keyed-from: N`".to_string())?,
        };
        let bytes = Zeroizing::new(
            BASE64
                .decode(encoded)
                .map_err(|_| "the audit key is not valid base64".to_string())?,
        );
        let secret: &[u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| "an audit key is 32 bytes".to_string())?;
        Ok(Self::from_secret(secret, keyed_from))
    }

    /// The MAC of a record whose unkeyed hash is `hash` (hex).
    pub fn mac(&self, hash: &str) -> String {
        let mut mac = hmac_sha256(&self.mac);
        mac.update(b"safehand audit record v1\n");
        mac.update(hash.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Whether `mac` is the MAC of `hash` (compared in constant time).
    pub fn mac_matches(&self, hash: &str, mac: &str) -> bool {
        let Ok(given) = hex::decode(mac) else {
            return false;
        };
        let mut m = hmac_sha256(&self.mac);
        m.update(b"safehand audit record v1\n");
        m.update(hash.as_bytes());
        m.verify_slice(&given).is_ok()
    }

    /// The signature (base64) of the head `(seq, hash)` at time `at`.
    pub fn sign_head(&self, seq: i64, hash: &str, at: i64) -> String {
        BASE64.encode(self.signing.sign(&head_message(seq, hash, at)).to_bytes())
    }

    /// The public key that checks signed heads (`ed25519:<base64>`).
    pub fn public_key(&self) -> PublicKey {
        PublicKey::from_dalek(self.signing.verifying_key())
    }
}

/// Whether `signature` (base64) is `key`'s signature of the head `(seq, hash)` at `at`.
pub fn head_signature_valid(
    key: &PublicKey,
    seq: i64,
    hash: &str,
    at: i64,
    signature: &str,
) -> bool {
    let Ok(bytes) = BASE64.decode(signature.trim()) else {
        return false;
    };
    let Ok(sig) = ed25519_dalek::Signature::from_slice(&bytes) else {
        return false;
    };
    key.as_dalek()
        .verify(&head_message(seq, hash, at), &sig)
        .is_ok()
}

/// What an offline check of an export found.
#[derive(Debug, PartialEq, Eq)]
pub struct ExportReport {
    /// Records checked (seq 1 to `head_seq`).
    pub records: i64,
    /// The last record's sequence number.
    pub head_seq: i64,
    /// Its hash.
    pub head_hash: String,
    /// The signed heads that were checked, newest last (every one matched the chain).
    pub signed_heads: Vec<i64>,
    /// The public key the signatures were checked against.
    pub public_key: String,
}

/// Checks a JSON export (`/admin/audit.json` with no filter) offline: every record's hash is
/// recomputed from its contents and linked to the one before from the first record on, and
/// every signed head must match the chain at its record and carry a valid signature by
/// `expected_key` (or, when none is given, by the key the export names; compare that one with
/// the key on the server's audit page). The last record must be covered by a signed head.
pub fn verify_export(
    json: &[u8],
    expected_key: Option<&PublicKey>,
) -> Result<ExportReport, String> {
    let v: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("the file is not a JSON export: {e}"))?;
    let chain = v.get("chain").ok_or(
        "the export has no `chain` section: export the whole log (no filters) from the audit page",
    )?;
    if chain.get("complete").and_then(|c| c.as_bool()) != Some(true) {
        return Err(chain
            .get("note")
            .and_then(|n| n.as_str())
            .unwrap_or("the export is not a complete chain: export the whole log (no filters)")
            .to_string());
    }
    let named: PublicKey = chain
        .get("public_key")
        .and_then(|k| k.as_str())
        .ok_or("the export names no public key")?
        .parse()
        .map_err(|e| format!("the export's public key: {e}"))?;
    let key = match expected_key {
        Some(k) if *k != named => {
            return Err(format!(
                "the export was signed by {named}, not by the key you gave ({k})"
            ))
        }
        Some(k) => *k,
        None => named,
    };
    let records = v
        .get("records")
        .and_then(|r| r.as_array())
        .ok_or("the export has no records list")?;
    let mut hashes: Vec<String> = Vec::with_capacity(records.len());
    let mut prev = GENESIS.to_string();
    for (i, r) in records.iter().enumerate() {
        let seq = i as i64 + 1;
        let str_field = |name: &str| -> Result<&str, String> {
            r.get(name)
                .and_then(|x| x.as_str())
                .ok_or_else(|| format!("record {seq} has no `{name}`"))
        };
        let got_seq = r.get("seq").and_then(|x| x.as_i64());
        if got_seq != Some(seq) {
            return Err(format!(
                "record {seq} is missing or out of order (found {})",
                got_seq.map_or("none".into(), |s| s.to_string())
            ));
        }
        let at = r
            .get("at_unix")
            .and_then(|x| x.as_i64())
            .ok_or_else(|| format!("record {seq} has no `at_unix`"))?;
        let actor_id = match r.get("actor_id") {
            None | Some(serde_json::Value::Null) => None,
            Some(x) => Some(
                x.as_i64()
                    .ok_or_else(|| format!("record {seq}: bad `actor_id`"))?,
            ),
        };
        let fields = Fields {
            seq,
            at,
            actor_id,
            actor: str_field("actor")?,
            action: str_field("action")?,
            subject: str_field("subject")?,
            address: str_field("address")?,
            details: str_field("details_text")?,
            prev_hash: str_field("prev_hash")?,
        };
        if fields.prev_hash != prev {
            return Err(format!(
                "record {seq} does not link to the record before it (a record was changed, added or removed)"
            ));
        }
        let hash = record_hash(&fields);
        if hash != str_field("hash")? {
            return Err(format!(
                "record {seq}'s contents do not match its hash (the record was changed)"
            ));
        }
        prev = hash.clone();
        hashes.push(hash);
    }
    if hashes.is_empty() {
        return Err("the export holds no records".into());
    }
    let heads = chain
        .get("signed_heads")
        .and_then(|h| h.as_array())
        .ok_or("the export has no signed heads")?;
    let mut checked = Vec::new();
    for h in heads {
        let seq = h
            .get("seq")
            .and_then(|x| x.as_i64())
            .ok_or("a signed head has no seq")?;
        let hash = h
            .get("hash")
            .and_then(|x| x.as_str())
            .ok_or("a signed head has no hash")?;
        let at = h
            .get("at")
            .and_then(|x| x.as_i64())
            .ok_or("a signed head has no time")?;
        let sig = h
            .get("signature")
            .and_then(|x| x.as_str())
            .ok_or("a signed head has no signature")?;
        if !head_signature_valid(&key, seq, hash, at, sig) {
            return Err(format!(
                "the signature of the head at record {seq} is not valid for {key}"
            ));
        }
        let at_record = usize::try_from(seq - 1)
            .ok()
            .and_then(|i| hashes.get(i))
            .ok_or_else(|| format!("a signed head names record {seq}, which the export lacks"))?;
        if at_record != hash {
            return Err(format!(
                "the records up to {seq} are not the ones the server signed (a record was changed, added or removed)"
            ));
        }
        checked.push(seq);
    }
    let head_seq = hashes.len() as i64;
    if checked.last() != Some(&head_seq) {
        return Err(format!(
            "the last record ({head_seq}) is not covered by a signed head: records may have been added after the export"
        ));
    }
    Ok(ExportReport {
        records: head_seq,
        head_seq,
        head_hash: prev,
        signed_heads: checked,
        public_key: key.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_text_round_trips_and_macs_and_signatures_check() {
        let (key, text) = AuditKey::generate(42);
        let again = AuditKey::parse(&text).unwrap();
        assert_eq!(key.public_key(), again.public_key());
        assert_eq!(again.keyed_from(), 42);
        let mac = key.mac("abc");
        assert!(again.mac_matches("abc", &mac));
        assert!(!again.mac_matches("abd", &mac));
        assert!(!again.mac_matches("abc", "zz"));
        let sig = key.sign_head(7, "abc", 100);
        assert!(head_signature_valid(
            &again.public_key(),
            7,
            "abc",
            100,
            &sig
        ));
        assert!(!head_signature_valid(
            &again.public_key(),
            8,
            "abc",
            100,
            &sig
        ));
        assert!(!head_signature_valid(
            &again.public_key(),
            7,
            "abc",
            101,
            &sig
        ));
        let (other, _) = AuditKey::generate(1);
        assert!(!head_signature_valid(
            &other.public_key(),
            7,
            "abc",
            100,
            &sig
        ));
        assert!(!format!("{key:?}").contains(text.trim()));
        assert!(AuditKey::parse("safehand-audit-key-v1:AAAA").is_err());
        assert!(AuditKey::parse("nonsense").is_err());
    }

    #[test]
    fn the_hash_is_the_canonical_json_array() {
        let f = Fields {
            seq: 1,
            at: 5,
            actor_id: None,
            actor: "a",
            action: "b",
            subject: "c",
            address: "d",
            details: "{}",
            prev_hash: GENESIS,
        };
        let expected = hex::encode(Sha256::digest(
            format!("[1,5,null,\"a\",\"b\",\"c\",\"d\",\"{{}}\",\"{GENESIS}\"]").as_bytes(),
        ));
        assert_eq!(record_hash(&f), expected);
    }
}
