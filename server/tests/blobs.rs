//! Blob storage on a local folder and on a real S3 store (SeaweedFS, started by tests/run):
//! multi-part round trips, aborted and abandoned uploads leaving nothing, and clear errors for
//! an unreachable store.

use crate::common::*;
use futures_util::StreamExt;
use safehand_server::blobs::{read_all, Blobs, S3Settings};
use safehand_server::Error;
use sha2::{Digest, Sha256};
use std::time::Duration;

fn random_bytes(n: usize) -> Vec<u8> {
    use rand::RngCore;
    let mut v = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

/// Files left anywhere under a local store's folder (staging files included).
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A blob bigger than several parts, written in uneven pieces, reads back byte for byte; then
/// it is deleted.
async fn multi_part_round_trip(kind: BlobKind) {
    let Some(t) = TestBlobs::new(kind) else {
        return;
    };
    let blobs = match kind {
        // Small parts so a modest blob still needs many of them.
        BlobKind::Local => t.blobs.clone().with_part_size(64 * 1024),
        BlobKind::S3 => t.blobs.clone(),
    };
    let size = 2 * blobs.part_size() + blobs.part_size() / 2 + 12_345;
    let data = random_bytes(size);
    let key = "transfers/1/payload";
    let mut w = blobs.writer(key).await.unwrap();
    let mut offset = 0;
    let mut step = 1;
    while offset < data.len() {
        let end = (offset + step).min(data.len());
        w.write(&data[offset..end]).await.unwrap();
        offset = end;
        step = step * 3 + 7; // uneven pieces, some larger than a part
    }
    assert_eq!(w.written(), size as u64);
    assert!(
        !blobs.exists(key).await.unwrap(),
        "nothing is visible before finish"
    );
    assert_eq!(w.finish().await.unwrap(), size as u64);
    assert!(blobs.exists(key).await.unwrap());
    let mut stream = Box::pin(blobs.get(key).await.unwrap());
    let mut hash = Sha256::new();
    let mut read = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        read += chunk.len();
        hash.update(&chunk);
    }
    assert_eq!(read, size);
    assert_eq!(hash.finalize()[..], Sha256::digest(&data)[..]);
    assert_eq!(
        blobs.list("transfers").await.unwrap(),
        vec![key.to_string()]
    );
    blobs.delete(key).await.unwrap();
    assert!(!blobs.exists(key).await.unwrap());
    assert!(matches!(blobs.get(key).await.err(), Some(Error::NotFound)));
    // Deleting again is fine (recall and expiry may race).
    blobs.delete(key).await.unwrap();
    assert!(blobs.list("").await.unwrap().is_empty());
    if let Some(dir) = &t.dir {
        assert!(files_under(dir.path()).is_empty(), "no files left behind");
    }
}

/// An aborted upload and an abandoned (dropped) one leave no object and no part behind.
async fn aborted_and_abandoned_uploads_leave_nothing(kind: BlobKind) {
    let Some(t) = TestBlobs::new(kind) else {
        return;
    };
    let blobs = match kind {
        BlobKind::Local => t.blobs.clone().with_part_size(64 * 1024),
        BlobKind::S3 => t.blobs.clone(),
    };
    let data = random_bytes(blobs.part_size() + blobs.part_size() / 2);
    let mut w = blobs.writer("transfers/2/payload").await.unwrap();
    w.write(&data).await.unwrap();
    w.abort().await.unwrap();
    assert!(!blobs.exists("transfers/2/payload").await.unwrap());

    let mut w = blobs.writer("transfers/3/payload").await.unwrap();
    w.write(&data).await.unwrap();
    drop(w); // a client that went away half-way
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = t
            .dir
            .as_ref()
            .map(|d| files_under(d.path()))
            .unwrap_or_default();
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "staging files left: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!blobs.exists("transfers/3/payload").await.unwrap());
    assert!(blobs.list("").await.unwrap().is_empty());
}

/// The writer holds at most about two parts, however much the caller writes at once.
async fn memory_is_bounded_by_the_part_size(kind: BlobKind) {
    let Some(t) = TestBlobs::new(kind) else {
        return;
    };
    let blobs = t.blobs.clone();
    assert_eq!(blobs.parts_in_flight(), 1);
    match kind {
        BlobKind::Local => assert_eq!(blobs.part_size(), safehand_server::blobs::LOCAL_PART_SIZE),
        BlobKind::S3 => assert_eq!(blobs.part_size(), safehand_server::blobs::S3_PART_SIZE),
    }
    // One write much larger than a part goes through in part-sized steps.
    let data = random_bytes(3 * blobs.part_size() + 1);
    let mut w = blobs.writer("big/one-write").await.unwrap();
    w.write(&data).await.unwrap();
    assert_eq!(w.finish().await.unwrap(), data.len() as u64);
    assert_eq!(read_all(&blobs, "big/one-write").await.unwrap(), data);
    blobs.delete("big/one-write").await.unwrap();
}

async fn bad_keys_are_refused(kind: BlobKind) {
    let Some(t) = TestBlobs::new(kind) else {
        return;
    };
    for key in ["../escape", "/abs", "a/../b", "", "x y"] {
        assert!(t.blobs.writer(key).await.is_err(), "{key:?}");
        assert!(t.blobs.exists(key).await.is_err(), "{key:?}");
    }
    if let Some(dir) = &t.dir {
        assert!(!dir.path().join("escape").exists());
    }
}

async fn start_up_check_passes(kind: BlobKind) {
    let Some(t) = TestBlobs::new(kind) else {
        return;
    };
    t.blobs.check().await.unwrap();
    assert!(
        t.blobs.list("").await.unwrap().is_empty(),
        "the probe is removed"
    );
}

mod local {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn multi_part_round_trip() {
        super::multi_part_round_trip(BlobKind::Local).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn aborted_and_abandoned_uploads_leave_nothing() {
        super::aborted_and_abandoned_uploads_leave_nothing(BlobKind::Local).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_is_bounded_by_the_part_size() {
        super::memory_is_bounded_by_the_part_size(BlobKind::Local).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_keys_are_refused() {
        super::bad_keys_are_refused(BlobKind::Local).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn start_up_check_passes() {
        super::start_up_check_passes(BlobKind::Local).await
    }
}

mod s3 {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn multi_part_round_trip() {
        super::multi_part_round_trip(BlobKind::S3).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn aborted_and_abandoned_uploads_leave_nothing() {
        super::aborted_and_abandoned_uploads_leave_nothing(BlobKind::S3).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_is_bounded_by_the_part_size() {
        super::memory_is_bounded_by_the_part_size(BlobKind::S3).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_keys_are_refused() {
        super::bad_keys_are_refused(BlobKind::S3).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn start_up_check_passes() {
        super::start_up_check_passes(BlobKind::S3).await
    }

    /// Nothing listens at the endpoint: a clear error naming the store, quickly.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unreachable_store_gives_a_clear_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let settings = S3Settings {
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: "safehand".into(),
            region: "us-east-1".into(),
            access_key_id: "id".into(),
            secret_access_key: "secret".to_string().into(),
            allow_http: true,
            prefix: None,
        };
        let blobs = Blobs::s3(&settings).unwrap();
        let started = std::time::Instant::now();
        let e = blobs.check().await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(30));
        let text = e.to_string();
        assert!(matches!(e, Error::Storage(_)), "{e:?}");
        assert!(
            text.contains(&format!(
                "the S3 bucket safehand at http://127.0.0.1:{port}"
            )),
            "{text}"
        );
        assert!(!text.contains("secret"), "{text}");
        let e = blobs.exists("x").await.unwrap_err();
        assert!(matches!(e, Error::Storage(_)), "{e:?}");
    }

    /// Wrong credentials against the real store: refused with an error, nothing written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wrong_credentials_are_refused() {
        let Some(mut settings) = s3_settings() else {
            return;
        };
        settings.secret_access_key = "not-the-secret".to_string().into();
        let blobs = Blobs::s3(&settings)
            .unwrap()
            .within("wrong-credentials")
            .unwrap();
        let e = blobs.check().await.unwrap_err();
        assert!(matches!(e, Error::Storage(_)), "{e:?}");
    }
}

/// A local blob folder that already exists open to others is made 0700, and finished blobs
/// are 0600 even when the process umask would make them readable (the library on its own,
/// without the binary's umask; seen through `within` as the tests use it).
#[tokio::test]
async fn local_blobs_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("blobs");
    std::fs::create_dir(&folder).unwrap();
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o755)).unwrap();
    let blobs = Blobs::local(&folder).unwrap().within("run-1").unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&folder), 0o700);
    let mut w = blobs.writer("transfers/abc").await.unwrap();
    w.write(b"age ciphertext").await.unwrap();
    w.finish().await.unwrap();
    let file = folder.join("run-1/transfers/abc");
    assert_eq!(std::fs::read(&file).unwrap(), b"age ciphertext");
    assert_eq!(mode(&file), 0o600);
}

/// The keys of the uploads in progress in the bucket, sorted.
async fn staged_keys(blobs: &Blobs) -> Vec<String> {
    let mut keys: Vec<String> = blobs
        .staged_uploads()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.key)
        .collect();
    keys.sort();
    keys
}

/// Uploads to a bucket shared by instances are claimed in the database. An instance killed
/// mid-upload (here a writer forgotten without its abort, and its claims never renewed) leaves
/// a multipart upload in the bucket: another instance's clean-up keeps it while the claim
/// lasts, keeps its own upload in progress, and aborts the dead one once the claim has lapsed.
/// Lapsed claims are then forgotten.
async fn dead_bucket_uploads_are_aborted_once_their_claim_lapses(backend: Backend) {
    let Some(settings) = s3_settings() else {
        return;
    };
    let tdb = TestDb::new(backend).await;
    let clock = safehand_server::clock::Clock::manual(START);
    // Two instances on one database and one bucket (each its own process's view).
    let prefix = format!("test-{}", hex::encode(rand::random::<[u8; 8]>()));
    let instance = || {
        Blobs::s3(&settings)
            .unwrap()
            .within(&prefix)
            .unwrap()
            .with_claims(tdb.db.clone(), clock.clone())
    };
    let dead = instance();
    let alive = instance();
    assert!(dead.staged_uploads_are_claimed());

    let mut cut_off = dead.writer("transfers/cut-off").await.unwrap();
    cut_off
        .write(&random_bytes(dead.part_size() + 10))
        .await
        .unwrap();
    let mut running = alive.writer("transfers/running").await.unwrap();
    running
        .write(&random_bytes(alive.part_size() + 10))
        .await
        .unwrap();
    assert_eq!(
        staged_keys(&alive).await,
        ["transfers/cut-off", "transfers/running"]
    );
    // The kill: no abort, no more renewals.
    std::mem::forget(cut_off);

    // Inside the claim's life nothing is aborted, however old the upload.
    clock.advance(safehand_server::blobs::UPLOAD_CLAIM_SECS - 5);
    alive.renew_upload_claims().await.unwrap();
    assert_eq!(
        alive
            .remove_dead_uploads_in_bucket(Duration::ZERO)
            .await
            .unwrap(),
        0
    );
    assert_eq!(alive.staged_uploads().await.unwrap().len(), 2);

    // Past it: the dead upload goes, the renewed one stays and still finishes.
    clock.advance(10);
    assert_eq!(
        alive
            .remove_dead_uploads_in_bucket(Duration::ZERO)
            .await
            .unwrap(),
        1
    );
    assert_eq!(staged_keys(&alive).await, ["transfers/running"]);
    running.write(b"the end").await.unwrap();
    running.finish().await.unwrap();
    assert!(alive.exists("transfers/running").await.unwrap());
    assert!(!alive.exists("transfers/cut-off").await.unwrap());
    assert_eq!(alive.staged_uploads().await.unwrap(), Vec::new());

    // The finished upload gave its claim back; the dead one's is forgotten an hour after it
    // lapsed.
    let claims = |db: safehand_server::db::Db| async move {
        let rows: Vec<(String,)> =
            sqlx::query_as("select name from job_leases where name like 'upload:%' order by name")
                .fetch_all(db.pool())
                .await
                .unwrap();
        rows.into_iter().map(|r| r.0).collect::<Vec<_>>()
    };
    let names = claims(tdb.db.clone()).await;
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].ends_with("/transfers/cut-off"), "{names:?}");
    clock.advance(3600);
    alive
        .remove_dead_uploads_in_bucket(Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(claims(tdb.db.clone()).await, Vec::<String>::new());
    alive.delete("transfers/running").await.unwrap();
}

crate::both_databases!(dead_bucket_uploads_are_aborted_once_their_claim_lapses);
