//! Crypto-shredding on disk, on SQLite and PostgreSQL: once a transfer is recalled, expired,
//! locked or its download limit used up, no byte that opens its body (the age header, the recipient session's sealed file
//! key) and no recipient link or mailed code is left in the live database's files, and a copy
//! of the blob taken before the shred cannot be opened with everything left plus the
//! passphrase and the server key.
//!
//! SQLite: the database file, its `-wal` and `-shm`. PostgreSQL: every file of the test
//! database's directory (`base/<oid>/`, after a `checkpoint` so the buffers are on disk);
//! `pg_wal` is not searched (see server/README.md, "Crypto-shredding").

use crate::common::*;
use crate::transfers::{
    code_from, get_bytes, last_mail, recipient_session, release, send_files, unlock, world, World,
};
use axum::http::StatusCode;
use futures_util::TryStreamExt;
use safehand_crypto::{DecryptionKey, EncryptedFile, SecretString};
use safehand_server::mail::{Delivery, RetryPolicy, Worker};
use safehand_server::transfers::{self, sweeper};
use sqlx::Row;
use std::io::Read;
use std::path::PathBuf;

crate::both_databases!(
    recall_leaves_nothing_that_opens_the_files,
    expiry_leaves_nothing_that_opens_the_files,
    lock_leaves_nothing_that_opens_the_files,
    used_up_download_limit_leaves_nothing_that_opens_the_files,
    incident_recall_shreds_and_the_record_says_what_backups_hold,
    an_older_snapshot_keeps_the_rewrite_due,
);

/// What an attacker could have kept from before the shred, and what must not survive it.
struct Before {
    id: i64,
    passphrase: String,
    link: String,
    header: Vec<u8>,
    blob: Vec<u8>,
    /// The recipient session's file key, sealed under the server key (after an unlock).
    session_key: Option<Vec<u8>>,
    code: String,
}

/// Sends a transfer, releases it, and has the recipient enter the mailed code (and, when
/// `unlocked`, the passphrase); the mails are delivered, which erases their bodies.
async fn sent_and_opened(w: &mut World, unlocked: bool) -> (Before, Browser) {
    let (id, passphrase) = send_files(w, &[("pupil.txt", b"Pupil: Alex Example, DOB 2014")]).await;
    let header = transfers::header(w.app.db(), id).await.unwrap().unwrap();
    let t = transfers::get(w.app.db(), id).await.unwrap().unwrap();
    let blob: Vec<u8> = w
        .app
        .state
        .blobs
        .get(&t.blob_key)
        .await
        .unwrap()
        .try_fold(Vec::new(), |mut all, chunk| async move {
            all.extend_from_slice(&chunk);
            Ok(all)
        })
        .await
        .unwrap();
    assert!(
        opens(&header, &blob, &passphrase),
        "before the shred, header + blob + passphrase open the files"
    );
    let link = release(w, id).await;
    let mut r = recipient_session(&w.app, &link).await;
    let code = code_from(&last_mail(&w.app, "Jo.Bloggs@northshire.gov.uk").await.1);
    let mut session_key = None;
    if unlocked {
        unlock(&w.app, &mut r, &link, &passphrase).await;
        let row =
            sqlx::query("select file_key_sealed from recipient_sessions where transfer_id = $1")
                .bind(id)
                .fetch_one(w.app.db().pool())
                .await
                .unwrap();
        session_key = row.get::<Option<Vec<u8>>, _>("file_key_sealed");
        assert!(
            session_key.is_some(),
            "an unlocked session holds the file key"
        );
    }
    deliver_mail(&w.app).await;
    let before = Before {
        id,
        passphrase,
        link,
        header,
        blob,
        session_key,
        code,
    };
    // The search below finds what it looks for while it is there.
    let files = database_files(&w.app).await;
    assert!(
        files.iter().any(|(_, b)| find(b, &before.header).is_some()),
        "the header is in the database files before the shred"
    );
    (before, r)
}

/// Delivers the queued mails into a folder, which erases their bodies from the outbox.
async fn deliver_mail(app: &TestApp) {
    let dir = tempfile::tempdir().unwrap();
    let worker = Worker::new(
        app.db().clone(),
        app.clock.clone(),
        &Delivery::Folder(dir.path().to_path_buf()),
        "Safehand <safehand@school.sch.uk>",
        RetryPolicy::default(),
    )
    .unwrap();
    assert!(
        worker.run_once().await.unwrap().sent >= 2,
        "link and code mails"
    );
}

/// Whether `header` followed by `body` opens with `passphrase` (the whole plaintext reads).
fn opens(header: &[u8], body: &[u8], passphrase: &str) -> bool {
    let mut file = header.to_vec();
    file.extend_from_slice(body);
    let Ok(encrypted) = EncryptedFile::new(std::io::Cursor::new(file)) else {
        return false;
    };
    let Ok(mut plain) = encrypted.decrypt(&DecryptionKey::Passphrase(SecretString::from(
        passphrase.to_string(),
    ))) else {
        return false;
    };
    let mut out = Vec::new();
    plain.read_to_end(&mut out).is_ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Every file of the live database, read from disk: (path, bytes).
async fn database_files(app: &TestApp) -> Vec<(PathBuf, Vec<u8>)> {
    let paths: Vec<PathBuf> = if app.tdb.url.starts_with("sqlite:") {
        let db = app
            .tdb
            .url
            .trim_start_matches("sqlite://")
            .split('?')
            .next()
            .unwrap()
            .to_string();
        ["", "-wal", "-shm"]
            .iter()
            .map(|s| PathBuf::from(format!("{db}{s}")))
            .filter(|p| p.exists())
            .collect()
    } else {
        // Buffers reach the relation files at a checkpoint.
        sqlx::query("checkpoint")
            .execute(app.db().pool())
            .await
            .unwrap();
        let row = sqlx::query(
            "select current_setting('data_directory') as dir, \
             (select oid from pg_database where datname = current_database())::bigint as oid",
        )
        .fetch_one(app.db().pool())
        .await
        .unwrap();
        let dir = PathBuf::from(row.get::<String, _>("dir"))
            .join("base")
            .join(row.get::<i64, _>("oid").to_string());
        let listing = std::fs::read_dir(&dir).unwrap_or_else(|e| {
            panic!(
                "cannot read {} ({e}): these tests need the local PostgreSQL's data folder",
                dir.display()
            )
        });
        listing.map(|e| e.unwrap().path()).collect()
    };
    assert!(!paths.is_empty());
    paths
        .into_iter()
        .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
        .collect()
}

/// The checks every shred must pass, on what is on disk now.
async fn nothing_left_opens(app: &TestApp, before: &Before) {
    // The rewrite of freed space is best effort per pass (a busy table makes `vacuum (full)`
    // give up after its lock timeout, and the sweeper's next pass retries): wait for a pass
    // that reports it done, as the sweeper would, before looking.
    let mut done = false;
    for _ in 0..40 {
        if app.db().erase_freed_space().await.unwrap() {
            done = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(done, "the freed space was never rewritten");
    let token = before.link.trim_start_matches("/r/");
    let mut needles: Vec<(&str, &[u8])> = vec![
        ("the age header", &before.header),
        ("the recipient link token", token.as_bytes()),
        ("the mailed code", before.code.as_bytes()),
    ];
    if let Some(key) = &before.session_key {
        needles.push(("the recipient session's sealed file key", key));
    }
    let files = database_files(app).await;
    for (path, bytes) in &files {
        for (what, needle) in &needles {
            assert!(
                find(bytes, needle).is_none(),
                "{what} is still in {}",
                path.display()
            );
        }
    }
    // Every age header left anywhere on disk, tried with the pre-shred blob and the passphrase.
    let magic = b"age-encryption.org/v1\n";
    for (path, bytes) in &files {
        let mut from = 0;
        while let Some(at) = find(&bytes[from..], magic) {
            let start = from + at;
            if let Some(mac) = find(&bytes[start..], b"\n--- ") {
                let line_end = find(&bytes[start + mac + 1..], b"\n")
                    .map_or(bytes.len(), |n| start + mac + 1 + n + 1);
                assert!(
                    !opens(&bytes[start..line_end], &before.blob, &before.passphrase),
                    "a header left in {} opens the pre-shred blob",
                    path.display()
                );
            }
            from = start + 1;
        }
    }
    // What the server key could unseal: no session of the transfer is left.
    let sessions =
        sqlx::query("select count(*) as n from recipient_sessions where transfer_id = $1")
            .bind(before.id)
            .fetch_one(app.db().pool())
            .await
            .unwrap()
            .get::<i64, _>("n");
    assert_eq!(sessions, 0);
    assert!(transfers::header(app.db(), before.id)
        .await
        .unwrap()
        .is_none());
}

async fn recall_leaves_nothing_that_opens_the_files(backend: Backend) {
    let mut w = world(backend).await;
    let (before, _r) = sent_and_opened(&mut w, true).await;
    let page = w
        .staff
        .post(&w.app, &format!("/transfers/{}/recall", before.id), &[])
        .await;
    page.assert_contains("Recalled");
    if backend == Backend::Sqlite {
        // On SQLite the recall itself truncates the WAL: nothing waits for the sweeper.
        nothing_left_opens(&w.app, &before).await;
    }
    // On PostgreSQL the sweeper's pass rewrites the tables that held the keys.
    sweeper::sweep(w.app.db(), &w.app.state.blobs, w.app.clock.now())
        .await
        .unwrap();
    nothing_left_opens(&w.app, &before).await;
}

async fn expiry_leaves_nothing_that_opens_the_files(backend: Backend) {
    let mut w = world(backend).await;
    let (before, _r) = sent_and_opened(&mut w, true).await;
    w.app.clock.advance(7 * 86_400 + 1);
    let swept = sweeper::sweep(w.app.db(), &w.app.state.blobs, w.app.clock.now())
        .await
        .unwrap();
    assert_eq!(swept.ended, 1);
    let t = transfers::get(w.app.db(), before.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.state, transfers::State::Expired);
    nothing_left_opens(&w.app, &before).await;
}

async fn lock_leaves_nothing_that_opens_the_files(backend: Backend) {
    let mut w = world(backend).await;
    let (before, mut r) = sent_and_opened(&mut w, false).await;
    for _ in 0..5 {
        r.post(
            &w.app,
            &format!("{}/open", before.link),
            &[("passphrase", "wrong words here")],
        )
        .await;
    }
    let page = r
        .post(
            &w.app,
            &format!("{}/open", before.link),
            &[("passphrase", &before.passphrase)],
        )
        .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND, "locked");
    // A lock truncates the WAL itself; the sweeper's pass rewrites the key tables (PostgreSQL).
    sweeper::sweep(w.app.db(), &w.app.state.blobs, w.app.clock.now())
        .await
        .unwrap();
    nothing_left_opens(&w.app, &before).await;
}

async fn used_up_download_limit_leaves_nothing_that_opens_the_files(backend: Backend) {
    let mut w = world(backend).await;
    let (before, mut r) = sent_and_opened(&mut w, true).await;
    let path = format!("{}/payload.age", before.link);
    let mut downloads = 0;
    loop {
        let (status, _, _) = get_bytes(&w.app, &mut r, &path).await;
        if status != StatusCode::OK {
            break;
        }
        downloads += 1;
        assert!(downloads <= 10, "the download limit never ran out");
    }
    assert!(downloads >= 1);
    let t = transfers::get(w.app.db(), before.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.state, transfers::State::Downloaded);
    if backend == Backend::Sqlite {
        // The last download's shred truncates the WAL itself.
        nothing_left_opens(&w.app, &before).await;
    }
    sweeper::sweep(w.app.db(), &w.app.state.blobs, w.app.clock.now())
        .await
        .unwrap();
    nothing_left_opens(&w.app, &before).await;
}

async fn incident_recall_shreds_and_the_record_says_what_backups_hold(backend: Backend) {
    let mut w = world(backend).await;
    let (before, _r) = sent_and_opened(&mut w, true).await;
    let page = w
        .staff
        .post(
            &w.app,
            &format!("/transfers/{}/incident", before.id),
            &[
                ("kind", "wrong_recipient"),
                ("description", "Sent to the wrong social worker."),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.assert_contains("The transfer was recalled at once");
    page.assert_contains("backup retention of 30 days");
    sweeper::sweep(w.app.db(), &w.app.state.blobs, w.app.clock.now())
        .await
        .unwrap();
    nothing_left_opens(&w.app, &before).await;
    // The admin's view of the record says what backups still hold, and until when.
    let t = transfers::get(w.app.db(), before.id)
        .await
        .unwrap()
        .unwrap();
    let shredded = t.shredded_at.unwrap();
    let until = safehand_server::clock::format_time(
        shredded + safehand_server::incidents::BACKUP_RETENTION_DAYS * 86_400,
    );
    let page = w.app.get("/incidents/1.json").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let v: serde_json::Value = serde_json::from_str(&page.body).unwrap();
    let backups = v["backups"].as_str().unwrap();
    assert!(
        backups.contains("backups taken before then still hold what opens the files")
            && backups.contains("30 days")
            && backups.contains(&until),
        "{backups}"
    );
    let page = w.app.get("/incidents/1").await;
    page.assert_contains("backup retention of 30 days");
}

/// Recalls the transfer and runs the sweeper: the rewrite of freed space must not be done yet
/// (`why` says what holds it).
async fn recall_while_the_rewrite_must_wait(w: &mut World, before: &Before, why: &str) {
    let page = w
        .staff
        .post(&w.app, &format!("/transfers/{}/recall", before.id), &[])
        .await;
    page.assert_contains("Recalled");
    sweeper::sweep(w.app.db(), &w.app.state.blobs, w.app.clock.now())
        .await
        .unwrap();
    assert!(!w.app.db().erase_freed_space().await.unwrap(), "{why}");
}

/// A reader that took its snapshot before the shred (a report, a backup tool, another
/// instance's long query) can still see the deleted rows, so PostgreSQL's `vacuum full` copies
/// them into the new file and SQLite cannot truncate the WAL under it. The rewrite must not be
/// called done while such a reader lives, and is done once it ends.
async fn an_older_snapshot_keeps_the_rewrite_due(backend: Backend) {
    use sqlx::Connection;
    let mut w = world(backend).await;
    let (before, _r) = sent_and_opened(&mut w, true).await;
    let mut reader = sqlx::AnyConnection::connect(&w.app.tdb.url).await.unwrap();
    if backend == Backend::Postgres {
        sqlx::query("begin isolation level repeatable read")
            .execute(&mut reader)
            .await
            .unwrap();
    } else {
        sqlx::query("begin").execute(&mut reader).await.unwrap();
    }
    // The snapshot is taken by a read of another table, so the reader holds no lock that
    // would make the rewrite wait: only its snapshot keeps the deleted rows visible.
    let seen: i64 = sqlx::query("select count(*) as n from transfers")
        .fetch_one(&mut reader)
        .await
        .unwrap()
        .get("n");
    assert_eq!(seen, 1, "the reader's snapshot is taken");
    recall_while_the_rewrite_must_wait(&mut w, &before, "the rewrite was called done while a snapshot from before the shred could still see the keys").await;
    sqlx::query("commit").execute(&mut reader).await.unwrap();
    reader.close().await.unwrap();
    nothing_left_opens(&w.app, &before).await;
}

/// A write transaction in another database on the same PostgreSQL server (another
/// application, another test), begun before the shred and still running: every new snapshot's
/// xmin, the rewrite's own included, stays at or below it, so `vacuum full` would still copy
/// the deleted rows. This database's pg_stat_activity does not show it; the rewrite must wait
/// for it all the same, and is done once it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_in_another_database_keeps_the_rewrite_due() {
    use sqlx::Connection;
    let mut w = world(Backend::Postgres).await;
    let elsewhere = TestDb::new(Backend::Postgres).await;
    let (before, _r) = sent_and_opened(&mut w, true).await;
    let mut writer = sqlx::AnyConnection::connect(&elsewhere.url).await.unwrap();
    sqlx::query("begin").execute(&mut writer).await.unwrap();
    // A transaction id is assigned at its first write.
    sqlx::query("create table elsewhere_work (n bigint)")
        .execute(&mut writer)
        .await
        .unwrap();
    recall_while_the_rewrite_must_wait(&mut w, &before, "the rewrite was called done while a transaction older than the shred ran in another database").await;
    sqlx::query("commit").execute(&mut writer).await.unwrap();
    writer.close().await.unwrap();
    nothing_left_opens(&w.app, &before).await;
}
