//! One STREAM implementation in the workspace (issue: the server once decoded age payloads with
//! its own hand-written opener that the C2SP testkit never ran through). Every payload key is
//! derived, and every chunk sealed or opened, in `crypto/src/stream.rs` (`PayloadKey`,
//! `header_mac`); the sealers, the server's opener and the parallel encryptor call it. This test
//! reads the workspace's Rust sources and fails if any other file does that work itself.

use std::path::{Path, PathBuf};

/// What only the STREAM module may write: the AEAD, its in-place calls, the HKDF labels of the
/// payload key and the header MAC key.
const PRIMITIVES: &[&str] = &[
    "CHACHA20_POLY1305",
    "ChaCha20Poly1305",
    "seal_in_place",
    "open_in_place",
    "b\"payload\"",
    "b\"header\"",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn stream_chunks_and_keys_are_handled_in_one_module() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crypto crate sits in the workspace")
        .to_path_buf();
    let stream = root.join("crypto/src/stream.rs");
    let this = root.join("crypto/tests/one_stream.rs");
    let mut files = Vec::new();
    for dir in ["crypto", "cli", "server", "tests"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(
        files.len() > 20 && files.contains(&stream),
        "the workspace's sources were not found under {}",
        root.display()
    );
    let mut offenders = Vec::new();
    for file in files.iter().filter(|f| **f != stream && **f != this) {
        let text = std::fs::read_to_string(file).expect("a source file reads");
        for p in PRIMITIVES {
            if text.contains(p) {
                offenders.push(format!("{} uses {p}", file.display()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "STREAM work outside crypto/src/stream.rs (use PayloadKey / header_mac): {offenders:#?}"
    );
    let own = std::fs::read_to_string(&stream).expect("stream.rs reads");
    for p in [
        "CHACHA20_POLY1305",
        "seal_in_place",
        "open_in_place",
        "b\"payload\"",
        "b\"header\"",
    ] {
        assert!(
            own.contains(p),
            "stream.rs no longer has {p}: update this test"
        );
    }
}
