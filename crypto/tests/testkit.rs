//! The C2SP age testkit (CCTV `age/testdata`, copied in `shared/testdata/age-testkit/`) run
//! through safehand-crypto's public API: every vector except the post-quantum ones (listed by
//! name below) must give the expected result, and no failing vector may release plaintext
//! beyond what its `payload` hash allows. There are no known deviations: the `age` crate's
//! leniency towards legacy stanzas (`stanza_missing_body`, `stanza_missing_final_line`) is
//! closed by the strict header check in `EncryptedFile::new`. The server's download path (the
//! header apart from the body, `split::unlock` and `split::BodyOpener`) is run through the
//! same vectors by the second test.

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

/// The server's download path (`split`): the header kept apart from the body, the passphrase
/// checked with [`unlock`] (scrypt, then the header MAC), and the body opened by
/// [`BodyOpener`] slice by slice as it arrives from blob storage. Every vector is run through
/// it:
/// - each vector with a `file key` whose header is well formed has its body opened by
///   `BodyOpener` with that key, slices of odd sizes, and must give the vector's result
///   (success with the payload's hash, or a payload failure releasing no more than allowed);
/// - each passphrase vector goes the whole way (`inspect_header`, `unlock`, `BodyOpener`);
/// - every other header (X25519 and the rest) is refused by `inspect_header`, as the server
///   accepts only one scrypt stanza.
#[test]
fn c2sp_age_testkit_through_the_server_download_path() {
    use safehand_crypto::split::{inspect_header, unlock, BodyOpener, FileKey};
    let dir = testkit_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "README.md" && n != "LICENSE" && !n.starts_with('.'))
        .collect();
    names.sort();
    let mut problems = Vec::new();
    let (mut bodies, mut whole_path, mut refused) = (0, 0, 0);
    for name in &names {
        if POST_QUANTUM.contains(&name.as_str()) || name.starts_with("armor") {
            continue;
        }
        let v = Vector::parse(&std::fs::read(dir.join(name)).unwrap());
        let expect = v.one("expect").unwrap();
        let allowed = v.one("payload");
        // The header ends with the line that starts with `---`.
        let header_len = v
            .body
            .windows(4)
            .position(|w| w == b"\n---")
            .and_then(|at| {
                v.body[at + 1..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map(|nl| at + 1 + nl + 1)
            });
        let Some(header_len) = header_len else {
            if expect == "success" {
                problems.push(format!("{name}: no header end found in a good file"));
            }
            continue;
        };
        let (header, body) = v.body.split_at(header_len);
        let open_body = |key: &FileKey| -> (String, Vec<u8>) {
            let mut opener = BodyOpener::new(key);
            let mut out = Vec::new();
            for slice in body.chunks(7001) {
                if let Err(e) = opener.open(slice, &mut out) {
                    return (category(&e).into(), out);
                }
            }
            match opener.finish(&mut out) {
                Ok(()) => ("success".into(), out),
                Err(e) => (category(&e).into(), out),
            }
        };
        // What the vector allows out, as the age crate's path releases it (the test above
        // checks that against the vector's hash). The server's opener holds a full chunk
        // back until it knows whether it is the last, so on a failure it may release less.
        let (_, reference) = run(&v);
        let check = |path: &str, got: &str, released: &[u8], problems: &mut Vec<String>| {
            let hash = hex::encode(Sha256::digest(released));
            match allowed {
                Some(want) if expect == "success" && hash != want => problems.push(format!(
                    "{name} ({path}): plaintext hashes to {hash}, the vector says {want}"
                )),
                Some(_) if !reference.starts_with(released) => problems.push(format!(
                    "{name} ({path}): released {} bytes that are not a prefix of the {} the vector allows",
                    released.len(),
                    reference.len()
                )),
                None if !released.is_empty() && expect != "success" => problems.push(format!(
                    "{name} ({path}): released {} bytes although the vector allows none",
                    released.len()
                )),
                _ => {}
            }
            if got != expect {
                problems.push(format!("{name} ({path}): expected {expect}, got {got}"));
            }
        };
        // The body opener alone, wherever the vector's result is about the body.
        if let (Some(hex_key), "success" | "payload failure") = (v.one("file key"), expect) {
            let key = FileKey::from_bytes(&hex::decode(hex_key).unwrap()).unwrap();
            let (got, released) = open_body(&key);
            check("body opener", &got, &released, &mut problems);
            bodies += 1;
        }
        match inspect_header(&v.body) {
            Ok(Some(info)) => {
                assert_eq!(info.len, header_len, "{name}: header length");
                let passphrase = SecretString::from(v.one("passphrase").unwrap_or("").to_owned());
                let (got, released) = match unlock(header, &passphrase) {
                    Ok(key) => open_body(&key),
                    Err(e) => (category(&e).into(), Vec::new()),
                };
                check("whole path", &got, &released, &mut problems);
                whole_path += 1;
            }
            Ok(None) => problems.push(format!("{name}: inspect_header wants more bytes")),
            Err(_) => {
                // Refused: fine for anything but a good passphrase file.
                if expect == "success" && v.one("passphrase").is_some() {
                    problems.push(format!("{name}: a good passphrase file was refused"));
                }
                refused += 1;
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems on the server path:\n{}",
        problems.len(),
        problems.join("\n")
    );
    // The testkit is fixed: every non-armored vector went through the header check, and
    // each path ran on its share (counts as measured on the 143-vector testkit).
    assert_eq!(
        (bodies, whole_path, refused),
        (33, 8, 83),
        "bodies opened by key, passphrase files end to end, headers refused"
    );
    eprintln!("server path: {bodies} bodies opened by key, {whole_path} passphrase files end to end, {refused} headers refused");
}
