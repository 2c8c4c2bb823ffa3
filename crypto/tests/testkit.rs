//! The C2SP age testkit (CCTV `age/testdata`, copied in `shared/testdata/age-testkit/`) run
//! through safehand-crypto's public API: every vector except the post-quantum ones (listed by
//! name below) must give the expected result, and no failing vector may release plaintext
//! beyond what its `payload` hash allows. There are no known deviations: the `age` crate's
//! leniency towards legacy stanzas (`stanza_missing_body`, `stanza_missing_final_line`) is
//! closed by the strict header check in `EncryptedFile::new`.

// A malformed vector file should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::path::PathBuf;

use flate2::read::ZlibDecoder;
use safehand_crypto::{DecryptionKey, EncryptedFile, Error, Identity, SecretString};
use sha2::{Digest, Sha256};

/// Post-quantum (ML-KEM-768 + X25519 hybrid) vectors: the `age` crate does not implement the
/// `mlkem768x25519` recipient type, and neither does Safehand.
const POST_QUANTUM: &[&str] = &[
    "armor_hybrid",
    "hybrid",
    "hybrid_and_x25519",
    "hybrid_bad_tag",
    "hybrid_currupted_enc_mlkem",
    "hybrid_currupted_enc_x25519",
    "hybrid_extra_argument",
    "hybrid_grease",
    "hybrid_identity",
    "hybrid_long_file_key",
    "hybrid_long_share",
    "hybrid_low_order",
    "hybrid_multiple_recipients",
    "hybrid_no_match",
    "hybrid_not_canonical_body",
    "hybrid_not_canonical_enc",
    "hybrid_short_share",
    "hybrid_uppercase",
    "hybrid_x25519_arg",
];

fn testkit_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/age-testkit")
}

struct Vector {
    fields: BTreeMap<String, Vec<String>>,
    body: Vec<u8>,
}

impl Vector {
    fn parse(bytes: &[u8]) -> Vector {
        let split = bytes
            .windows(2)
            .position(|w| w == b"\n\n")
            .expect("vector header ends with an empty line");
        let header = std::str::from_utf8(&bytes[..split]).expect("vector header is text");
        let mut fields: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in header.lines() {
            let (k, v) = line.split_once(": ").expect("key: value");
            fields.entry(k.to_owned()).or_default().push(v.to_owned());
        }
        let mut body = bytes[split + 2..].to_vec();
        if fields.get("compressed").map(|v| v[0].as_str()) == Some("zlib") {
            let mut out = Vec::new();
            ZlibDecoder::new(&body[..])
                .read_to_end(&mut out)
                .expect("zlib body");
            body = out;
        }
        Vector { fields, body }
    }

    fn one(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(|v| v[0].as_str())
    }

    fn all(&self, key: &str) -> Vec<&str> {
        self.fields
            .get(key)
            .map(|v| v.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }
}

fn category(e: &Error) -> &'static str {
    match e {
        Error::Armor(_) => "armor failure",
        Error::BadHeader(_) | Error::WorkFactorTooHigh { .. } | Error::NeedsPassphrase => {
            "header failure"
        }
        Error::HeaderAltered => "HMAC failure",
        Error::WrongKey => "no match",
        Error::Truncated | Error::Altered => "payload failure",
        _ => "unexpected error",
    }
}

/// Runs one vector: the outcome category and every plaintext byte the API released.
fn run(v: &Vector) -> (String, Vec<u8>) {
    let file = match EncryptedFile::new(Cursor::new(v.body.clone())) {
        Ok(f) => f,
        Err(e) => return (category(&e).into(), Vec::new()),
    };
    let key = if file.needs_passphrase() {
        let p = v
            .all("passphrase")
            .first()
            .copied()
            .unwrap_or("")
            .to_owned();
        DecryptionKey::Passphrase(SecretString::from(p))
    } else {
        let ids = v
            .all("identity")
            .iter()
            .map(|line| Identity::parse_file("vector", line).expect("vector identity")[0].clone())
            .collect();
        DecryptionKey::Identities(ids)
    };
    let mut reader = match file.decrypt(&key) {
        Ok(r) => r,
        Err(e) => return (category(&e).into(), Vec::new()),
    };
    let mut released = Vec::new();
    let mut buf = vec![0u8; 7000]; // odd size: chunk boundaries fall mid-read
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return ("success".into(), released),
            Ok(n) => released.extend_from_slice(&buf[..n]),
            Err(e) => {
                let err = match Error::from_plaintext_read(e) {
                    Some(err) => err,
                    None => return ("unexpected error".into(), released),
                };
                // Reading again after a failure must release nothing more.
                assert!(reader.read(&mut buf).is_err());
                return (category(&err).into(), released);
            }
        }
    }
}

#[test]
fn c2sp_age_testkit() {
    let dir = testkit_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the age testkit must be at {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "README.md" && n != "LICENSE" && !n.starts_with('.'))
        .collect();
    names.sort();
    assert_eq!(names.len(), 143, "the testkit has 143 vectors");

    let mut ran = 0;
    let mut skipped = 0;
    let mut problems = Vec::new();
    for name in &names {
        let v = Vector::parse(&std::fs::read(dir.join(name)).unwrap());
        if POST_QUANTUM.contains(&name.as_str()) {
            assert!(
                v.all("identity")
                    .iter()
                    .any(|i| i.starts_with("AGE-SECRET-KEY-PQ-"))
                    || v.body.windows(14).any(|w| w == b"mlkem768x25519"),
                "{name} is listed as post-quantum but is not"
            );
            skipped += 1;
            continue;
        }
        ran += 1;
        let expect = v.one("expect").expect("expect field");
        let (got, released) = run(&v);
        let hash = hex::encode(Sha256::digest(&released));
        match v.one("payload") {
            Some(want) if hash != want => problems.push(format!(
                "{name}: released plaintext hashes to {hash}, the vector allows {want} ({} bytes released)",
                released.len()
            )),
            None if !released.is_empty() && expect != "success" => problems.push(format!(
                "{name}: released {} bytes although the vector allows none",
                released.len()
            )),
            _ => {}
        }
        if got != expect {
            problems.push(format!("{name}: expected {expect}, got {got}"));
        }
    }
    assert_eq!(skipped, 19);
    assert_eq!(ran, 124);
    assert!(
        problems.is_empty(),
        "{} testkit problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
