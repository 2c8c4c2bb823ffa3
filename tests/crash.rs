//! The real `safehand-server` killed with SIGKILL in the middle of its work, then started
//! again on the same data folder and database: an upload cut off by the kill leaves no staging
//! file behind once the server is back (the local blob folder keeps a part-written upload as
//! `<key>#<n>` beside where the blob would go); a download cut off by the kill, on a transfer
//! that may be downloaded once, does not use up the link: its claim on the slot lapses within
//! a minute and the recipient's next try downloads the whole payload. On an S3 bucket that
//! several instances share, the multipart upload a kill left is aborted once its claim lapses,
//! and another instance's upload in progress is left alone.

// A failed step in a test should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use safehand_server::blobs::{Blobs, S3Settings};
use safehand_tests::maildir::parse_mail;

use crate::server::{call, private_file, start_server, start_server_with, unique_token, Database};
use crate::transfers_cli::{files_under, safehand, seed, stderr, stdout, transfer_id};

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
    let contact = contact_id(&server.base, &token, &dana);

    // Twice: the second kill finds the first restart's clean-up did not disturb anything.
    let mut server = Some(server);
    for round in 0..2 {
        let running = server.take().unwrap();
        let conn = half_upload(&running.base, &token, contact, 8 << 20);
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
        let (count, list) = transfer_count(&restarted.base, &token);
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

/// The decoded text body of every mail the server wrote to its outbox folder
/// (`DATA_DIR/outbox/*.eml`).
fn outbox(data: &Path) -> Vec<String> {
    let mut paths = files_under(&data.join("outbox"));
    paths.sort();
    paths
        .iter()
        .map(|p| parse_mail(&std::fs::read_to_string(p).unwrap()).body)
        .collect()
}

/// Waits (up to 30 s) for an outbox mail that `find` picks something from.
fn wait_for_mail<T>(data: &Path, what: &str, find: impl Fn(&[String]) -> Option<T>) -> T {
    let waited = Instant::now();
    loop {
        if let Some(found) = find(&outbox(data)) {
            return found;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "no {what} in {}",
            data.join("outbox").display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends `GET /api/v1/r/{link}/payload.age` with the recipient session over HTTP/1.0 (so the
/// body runs to the end of the connection) and returns the connection with the status code.
fn payload_request(base: &str, link: &str, session: &str) -> (u16, TcpStream, Vec<u8>) {
    let addr = base.trim_start_matches("http://");
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        conn,
        "GET /api/v1/r/{link}/payload.age HTTP/1.0\r\nHost: {addr}\r\n\
         Authorization: Bearer {session}\r\n\r\n"
    )
    .unwrap();
    // Read up to the end of the head; what follows it is the start of the body.
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let end = loop {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "the server closed the connection before answering");
        got.extend_from_slice(&buf[..n]);
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&got[..end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("an HTTP status line: {head}"));
    (status, conn, got[end..].to_vec())
}

fn download_cut_off_by_a_kill_does_not_use_up_the_link(postgres: bool) {
    let tag = unique_token();
    let dana = format!("dana.social.{tag}@northshire.gov.uk");
    let eli = format!("eli.early.{tag}@northshire.gov.uk");
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let database = Database::new(&rt, postgres, dir.path(), "crash_download");
    let data = dir.path().join("data");
    let token = seed(&rt, &database.url, &data, &dana, &eli);
    let server = start_server(&data, &database.url);
    let base = server.base.clone();
    let token_file = dir.path().join("token");
    private_file(&token_file, &format!("{token}\n"));
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();

    // A 32 MiB file sent with a download limit of one: far more than the sockets buffer, so
    // the server is mid-stream while the recipient reads slowly.
    let file = dir.path().join("chronology.pdf");
    let mut content = Vec::with_capacity(32 << 20);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while content.len() < 32 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        content.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(&file, &content).unwrap();
    let out = safehand(
        &tmp,
        &[
            "send",
            "--to",
            &dana,
            "--purpose",
            "Child protection referral",
            "--max-downloads",
            "1",
            "--yes",
            file.to_str().unwrap(),
            "--server",
            &base,
            "--token-file",
            token_file.to_str().unwrap(),
        ],
        "",
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let id = transfer_id(&stdout(&out));

    // The recipient: the link from the mail, a code, a session.
    let link = wait_for_mail(&data, "link mail", |mails| {
        mails.iter().find_map(|m| {
            let at = m.find("/r/")?;
            let token: String = m[at + 3..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            (!token.is_empty()).then_some(token)
        })
    });
    let (status, reply) = call(
        "POST",
        &format!("{base}/api/v1/r/{link}/code"),
        "",
        Some(serde_json::json!({})),
    );
    assert!(status < 300, "{status} {reply}");
    let code = wait_for_mail(&data, "code mail", |mails| {
        mails.iter().find_map(|m| {
            let rest = m.split("code is: ").nth(1)?;
            Some(rest.chars().take(8).collect::<String>())
        })
    });
    let (status, reply) = call(
        "POST",
        &format!("{base}/api/v1/r/{link}/session"),
        "",
        Some(serde_json::json!({ "code": code })),
    );
    assert_eq!(status, 200, "{reply}");
    let session = reply["session"].as_str().unwrap().to_string();
    let size = reply["payload_bytes"].as_u64().unwrap() as usize;
    assert!(size > 32 << 20, "{reply}");

    // The download starts; a little is read, then the server is killed with SIGKILL.
    let (status, conn, first) = payload_request(&base, &link, &session);
    assert_eq!(status, 200, "the download starts");
    assert!(
        first.len() < size,
        "the whole payload arrived before the kill"
    );
    drop(server);
    drop(conn);

    let server = start_server(&data, &database.url);
    let restarted = Instant::now();
    // The recipient tries again (the session survives the restart). While the dead
    // download's claim lasts, the slot is taken; it must come free within the claim's minute.
    let body = loop {
        let (status, mut conn, mut body) = payload_request(&server.base, &link, &session);
        if status == 200 {
            conn.read_to_end(&mut body).unwrap();
            break body;
        }
        assert_eq!(status, 404, "a taken slot reads as 'cannot be used'");
        assert!(
            restarted.elapsed() < Duration::from_secs(90),
            "the slot of the download the kill cut off is still taken {} s after the restart",
            restarted.elapsed().as_secs()
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    assert_eq!(
        body.len(),
        size,
        "the whole payload downloads after the restart"
    );
    assert!(
        body.starts_with(b"age-encryption.org/v1\n"),
        "an age payload"
    );
    // That download used the one allowed: the link is used up now, and the transfer says so.
    let (status, _, _) = payload_request(&server.base, &link, &session);
    assert_eq!(status, 404, "a second download past the limit of one");
    let (status, t) = call(
        "GET",
        &format!("{}/api/v1/transfers/{id}", server.base),
        &token,
        None,
    );
    assert_eq!(status, 200, "{t}");
    assert_eq!(
        t["downloads"], 1,
        "the cut-off download is not counted: {t}"
    );
    drop(server);
    database.drop_with(&rt);
}

#[test]
fn download_cut_off_by_kill_9_does_not_use_up_the_link_on_sqlite() {
    download_cut_off_by_a_kill_does_not_use_up_the_link(false);
}

#[test]
fn download_cut_off_by_kill_9_does_not_use_up_the_link_on_postgres() {
    download_cut_off_by_a_kill_does_not_use_up_the_link(true);
}

/// The S3 store tests/run started (SeaweedFS), seen under `prefix`: the server options that
/// put a server's blobs there, and a handle on it for the test's own look at the bucket.
/// `None` (the caller skips) outside tests/run, except under CI=true, where that fails.
fn test_bucket(prefix: &str) -> Option<(Vec<String>, Blobs)> {
    let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
    let (Some(endpoint), Some(bucket), Some(id), Some(secret)) = (
        var("SAFEHAND_TEST_S3_ENDPOINT"),
        var("SAFEHAND_TEST_S3_BUCKET"),
        var("SAFEHAND_TEST_S3_ACCESS_KEY_ID"),
        var("SAFEHAND_TEST_S3_SECRET_ACCESS_KEY"),
    ) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "SAFEHAND_TEST_S3_* are not set: tests/run starts SeaweedFS (CI=true forbids skipping)"
        );
        eprintln!("SKIPPED: no S3 store (run the tests through tests/run)");
        return None;
    };
    let args = [
        "--s3-endpoint",
        &endpoint,
        "--s3-bucket",
        &bucket,
        "--s3-access-key-id",
        &id,
        "--s3-secret-access-key",
        &secret,
        "--s3-allow-http",
        "--s3-prefix",
        prefix,
    ]
    .map(str::to_string)
    .to_vec();
    let blobs = Blobs::s3(&S3Settings {
        endpoint,
        bucket,
        region: "us-east-1".into(),
        access_key_id: id,
        secret_access_key: secret.into(),
        allow_http: true,
        prefix: Some(prefix.to_string()),
    })
    .unwrap();
    Some((args, blobs))
}

/// How many transfers the API lists for the token's holder, and the list itself.
fn transfer_count(base: &str, token: &str) -> (usize, serde_json::Value) {
    let (status, list) = call("GET", &format!("{base}/api/v1/transfers"), token, None);
    assert_eq!(status, 200, "{list}");
    let count = list
        .as_array()
        .or_else(|| list["transfers"].as_array())
        .map_or(0, Vec::len);
    (count, list)
}

/// The id of the contact `email` among those the API lists.
fn contact_id(base: &str, token: &str, email: &str) -> i64 {
    let (status, contacts) = call("GET", &format!("{base}/api/v1/contacts"), token, None);
    assert_eq!(status, 200, "{contacts}");
    contacts
        .as_array()
        .or_else(|| contacts["contacts"].as_array())
        .expect("a list of contacts")
        .iter()
        .find(|c| c["email"] == email)
        .and_then(|c| c["id"].as_i64())
        .unwrap_or_else(|| panic!("{email} among the contacts: {contacts}"))
}

/// Keeps the upload on `conn` (begun by [`half_upload`] with `sent` bytes) alive by sending
/// 64 KiB a second until told to finish, then sends the rest of its 64 MiB and returns the
/// server's answer: status and body.
fn trickle_then_finish(
    mut conn: TcpStream,
    mut sent: usize,
    finish: std::sync::mpsc::Receiver<()>,
) -> std::thread::JoinHandle<(u16, String)> {
    std::thread::spawn(move || {
        let size: usize = 64 << 20;
        let chunk = vec![0x5au8; 64 * 1024];
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            finish.recv_timeout(Duration::from_secs(1))
        {
            conn.write_all(&chunk).unwrap();
            sent += chunk.len();
        }
        while sent < size {
            let n = chunk.len().min(size - sent);
            conn.write_all(&chunk[..n]).unwrap();
            sent += n;
        }
        conn.write_all(b"\r\n--safehand-crash-test-boundary--\r\n")
            .unwrap();
        conn.flush().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 8192];
        let (status, body_start, length) = loop {
            let n = conn.read(&mut buf).unwrap();
            assert!(n > 0, "the server closed the upload without answering");
            answer.extend_from_slice(&buf[..n]);
            if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&answer[..end]).to_string();
                let status: u16 = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .expect("a status line");
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                break (status, end + 4, length);
            }
        };
        while answer.len() < body_start + length {
            let n = conn.read(&mut buf).unwrap();
            assert!(n > 0, "the answer to the upload was cut short");
            answer.extend_from_slice(&buf[..n]);
        }
        (
            status,
            String::from_utf8_lossy(&answer[body_start..body_start + length]).to_string(),
        )
    })
}

/// kill -9 in the middle of an upload to S3: the multipart upload it left in the bucket is
/// aborted once its claim lapses, by the restarted server or by another instance on the same
/// database and bucket, while that instance's own upload in progress (running for longer than
/// a claim lasts) is left alone and then finishes.
fn upload_to_s3_cut_off_by_a_kill_is_aborted(postgres: bool) {
    let tag = unique_token();
    let dana = format!("dana.social.{tag}@northshire.gov.uk");
    let eli = format!("eli.early.{tag}@northshire.gov.uk");
    let Some((s3_args, bucket)) = test_bucket(&format!("crash-{tag}")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let database = Database::new(&rt, postgres, dir.path(), "crash_s3_upload");
    let data = dir.path().join("data");
    let token = seed(&rt, &database.url, &data, &dana, &eli);
    let staged = || rt.block_on(bucket.staged_uploads()).unwrap();

    let killed = start_server_with(&data, &database.url, &s3_args);
    let contact = contact_id(&killed.base, &token, &dana);
    let conn = half_upload(&killed.base, &token, contact, 8 << 20);
    let waited = Instant::now();
    while staged().is_empty() {
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "no multipart upload appeared in the bucket while the upload ran"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // SIGKILL: no abort, no clean-up code runs.
    drop(killed);
    drop(conn);
    let dead = staged();
    assert_eq!(
        dead.len(),
        1,
        "the kill left its multipart upload in the bucket (what must be aborted): {dead:?}"
    );

    // Two instances on the same database, data folder and bucket: the restarted one, and one
    // more whose upload stays in progress (running well past a claim's life) throughout.
    let restarted = start_server_with(&data, &database.url, &s3_args);
    let other = start_server_with(&data, &database.url, &s3_args);
    let conn = half_upload(&other.base, &token, contact, 6 << 20);
    let other_started = Instant::now();
    let (finish, finishing) = std::sync::mpsc::channel();
    let live = trickle_then_finish(conn, 6 << 20, finishing);
    let waited = Instant::now();
    let left = loop {
        let now = staged();
        if !now.iter().any(|u| u.upload_id == dead[0].upload_id) {
            break now;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(150),
            "the dead upload was still in the bucket 150 s after the restart: {now:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(
        waited.elapsed() >= Duration::from_secs(10),
        "the dead upload went before its claim could have lapsed"
    );
    assert_eq!(
        left.len(),
        1,
        "the other instance's upload in progress is still in the bucket: {left:?}"
    );
    // Past a claim's life (60 s) and a few sweeps more: the live upload is still there.
    while other_started.elapsed() < Duration::from_secs(100) {
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(staged(), left, "the live upload was left alone");
    finish.send(()).unwrap();
    let (status, body) = live.join().unwrap();
    assert_eq!(status, 201, "the live upload finished: {body}");
    assert_eq!(
        staged(),
        Vec::new(),
        "nothing in progress is left in the bucket"
    );
    let objects = rt.block_on(bucket.list("transfers")).unwrap();
    assert_eq!(
        objects.len(),
        1,
        "one blob, of the upload that finished: {objects:?}"
    );
    let (count, list) = transfer_count(&restarted.base, &token);
    assert_eq!(
        count, 1,
        "one transfer, of the upload that finished: {list}"
    );
    for key in rt.block_on(bucket.list("")).unwrap() {
        rt.block_on(bucket.delete(&key)).unwrap();
    }
    drop(restarted);
    drop(other);
    database.drop_with(&rt);
}

#[test]
fn upload_to_s3_cut_off_by_kill_9_is_aborted_on_sqlite() {
    upload_to_s3_cut_off_by_a_kill_is_aborted(false);
}

#[test]
fn upload_to_s3_cut_off_by_kill_9_is_aborted_on_postgres() {
    upload_to_s3_cut_off_by_a_kill_is_aborted(true);
}
