//! The real `safehand-server` killed with SIGKILL in the middle of its work, then started
//! again on the same data folder and database: an upload cut off by the kill leaves no staging
//! file behind once the server is back (the local blob folder keeps a part-written upload as
//! `<key>#<n>` beside where the blob would go).

// A failed step in a test should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::server::{call, start_server, unique_token, Database};
use crate::transfers_cli::{files_under, seed};

/// The local store's staging files (`<key>#<digits>`) under `dir`.
fn staging_files(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.rsplit_once('#'))
                .is_some_and(|(_, s)| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect()
}

/// Starts an upload of one announced 64 MiB file and sends `sent` bytes of it, leaving the
/// request open: the server is mid-upload while the returned connection lives.
fn half_upload(base: &str, token: &str, contact_id: i64, sent: usize) -> TcpStream {
    let addr = base.trim_start_matches("http://");
    let mut conn = TcpStream::connect(addr).unwrap();
    let boundary = "safehand-crash-test-boundary";
    let size: usize = 64 << 20;
    let details = serde_json::json!({
        "contact_id": contact_id,
        "purpose": "Child protection referral",
        "classification": "OFFICIAL-SENSITIVE",
        "files": [{"name": "chronology.pdf", "size": size}],
    });
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"details\"\r\n\
         Content-Type: application/json\r\n\r\n{details}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"chronology.pdf\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let length = head.len() + size + tail.len();
    write!(
        conn,
        "POST /api/v1/transfers HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {length}\r\n\r\n{head}"
    )
    .unwrap();
    let chunk = vec![0x5au8; 256 * 1024];
    let mut written = 0;
    while written < sent {
        conn.write_all(&chunk).unwrap();
        written += chunk.len();
    }
    conn.flush().unwrap();
    conn
}

fn upload_cut_off_by_a_kill_leaves_nothing(postgres: bool) {
    let tag = unique_token();
    let dana = format!("dana.social.{tag}@northshire.gov.uk");
    let eli = format!("eli.early.{tag}@northshire.gov.uk");
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let database = Database::new(&rt, postgres, dir.path(), "crash_upload");
    let data = dir.path().join("data");
    let token = seed(&rt, &database.url, &data, &dana, &eli);
    let blobs = data.join("blobs");

    let server = start_server(&data, &database.url);
    let (status, contacts) = call(
        "GET",
        &format!("{}/api/v1/contacts", server.base),
        &token,
        None,
    );
    assert_eq!(status, 200, "{contacts}");
    let contact_id = contacts
        .as_array()
        .or_else(|| contacts["contacts"].as_array())
        .expect("a list of contacts")
        .iter()
        .find(|c| c["email"] == dana.as_str())
        .and_then(|c| c["id"].as_i64())
        .unwrap_or_else(|| panic!("dana among the contacts: {contacts}"));

    // Twice: the second kill finds the first restart's clean-up did not disturb anything.
    let mut server = Some(server);
    for round in 0..2 {
        let running = server.take().unwrap();
        let conn = half_upload(&running.base, &token, contact_id, 8 << 20);
        let waited = Instant::now();
        while staging_files(&blobs).is_empty() {
            assert!(
                waited.elapsed() < Duration::from_secs(30),
                "round {round}: no staging file appeared under {} while the upload ran",
                blobs.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // SIGKILL: no abort, no clean-up code runs.
        drop(running);
        drop(conn);
        let left = staging_files(&blobs);
        assert!(
            !left.is_empty(),
            "round {round}: the kill left the part-written upload (what the restart must remove)"
        );
        let restarted = start_server(&data, &database.url);
        // The server prints its address once start-up is done: the clean-up has run.
        assert_eq!(
            staging_files(&blobs),
            Vec::<PathBuf>::new(),
            "round {round}: staging files left after the restart"
        );
        let blob_files: Vec<PathBuf> = files_under(&blobs.join("transfers"));
        assert_eq!(
            blob_files,
            Vec::<PathBuf>::new(),
            "round {round}: no blob may exist for an upload that never finished"
        );
        let (status, list) = call(
            "GET",
            &format!("{}/api/v1/transfers", restarted.base),
            &token,
            None,
        );
        assert_eq!(status, 200, "{list}");
        let count = list
            .as_array()
            .or_else(|| list["transfers"].as_array())
            .map_or(0, Vec::len);
        assert_eq!(count, 0, "no transfer for the cut-off upload: {list}");
        server = Some(restarted);
    }
    drop(server);
    database.drop_with(&rt);
}

#[test]
fn upload_cut_off_by_kill_9_leaves_nothing_on_sqlite() {
    upload_cut_off_by_a_kill_leaves_nothing(false);
}

#[test]
fn upload_cut_off_by_kill_9_leaves_nothing_on_postgres() {
    upload_cut_off_by_a_kill_leaves_nothing(true);
}
