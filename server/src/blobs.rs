//! Blob storage for ciphertext: a local folder (`DATA_DIR/blobs`) by default, or any
//! S3-compatible store (AWS, MinIO, SeaweedFS, ...) by configuration, both through
//! `object_store`.
//!
//! Writes stream as multipart uploads through a [`BlobWriter`] whose memory is bounded: one
//! part being filled plus at most [`Blobs::parts_in_flight`] parts on their way, whatever the
//! blob's size. An aborted (or dropped) writer leaves no object behind: a local upload writes
//! to a staging file that is removed; an S3 upload is a multipart upload that is aborted.
//!
//! A server killed mid-upload (kill -9, power cut) runs no abort. The local folder's
//! part-written files are removed at the next start-up. In a bucket that several instances
//! share, each upload is claimed in the database (a short lease, `upload:<key>`, taken before
//! the multipart upload is created and renewed while the writer lives), and the sweeper of any
//! instance aborts the bucket's multipart uploads under Safehand's prefix whose claim has
//! lapsed: within about a minute and a half of the crash.

use crate::error::Error;
use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use std::time::Duration;

/// Where blobs live. Cheap to clone.
#[derive(Clone)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
    /// Bytes per uploaded part.
    part_size: usize,
    /// Parts uploading at once per writer.
    parts_in_flight: usize,
    /// For errors and the admin page (never a secret).
    describe: Arc<str>,
    /// The folder a local store writes to (finished blobs are made 0600 there).
    local_dir: Option<Arc<std::path::Path>>,
    /// Keys of the uploads in progress in this process: their staging files are live.
    live: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// The bucket side of an S3 store (listing and aborting multipart uploads).
    s3: Option<Arc<S3Uploads>>,
    /// Claims on uploads in progress, in the database, for a bucket shared by instances.
    claims: Option<Claims>,
}

/// What an S3 store needs beyond `ObjectStore`: the multipart uploads in progress in the
/// bucket, to abort those a crash left behind.
struct S3Uploads {
    store: Arc<object_store::aws::AmazonS3>,
    /// Where this store's keys are in the bucket: `""` or `"a/b/"`.
    prefix: String,
    http: reqwest::Client,
}

/// A multipart upload in progress in an S3 bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedUpload {
    /// The blob key it would publish (relative to the store, as [`Blobs::writer`] takes).
    pub key: String,
    /// The bucket's id for the upload.
    pub upload_id: String,
    /// When the bucket says it was started.
    pub initiated: Option<std::time::SystemTime>,
}

/// How long a claim on an upload lasts unless renewed; [`Blobs::renew_upload_claims`] renews
/// every live one (main does so every 15 seconds).
pub const UPLOAD_CLAIM_SECS: i64 = 60;

/// Claims in the database on the uploads this process is writing (leases named
/// `upload:<bucket key>` held by this process).
#[derive(Clone)]
struct Claims {
    db: crate::db::Db,
    clock: crate::clock::Clock,
    /// This process (a random token: a restarted server is a new holder).
    holder: Arc<str>,
}

impl Claims {
    fn name(prefix: &str, key: &str) -> String {
        format!("upload:{prefix}{key}")
    }
}

impl std::fmt::Debug for Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blobs")
            .field("store", &self.describe)
            .field("part_size", &self.part_size)
            .finish()
    }
}

/// Settings for an S3-compatible store. `Debug` never shows the secret key.
#[derive(Clone)]
pub struct S3Settings {
    /// Endpoint URL, e.g. `https://s3.eu-west-2.amazonaws.com` or `http://127.0.0.1:8333`.
    pub endpoint: String,
    /// Bucket name (must exist).
    pub bucket: String,
    /// Region (any value for most non-AWS stores).
    pub region: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: SecretString,
    /// Allow a plain `http://` endpoint (a store on this machine or a private network).
    pub allow_http: bool,
    /// The folder of the bucket Safehand's objects go under (`None`: the bucket's top).
    pub prefix: Option<String>,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"[redacted]")
            .field("allow_http", &self.allow_http)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// S3's smallest allowed part (except the last): 5 MiB.
pub const S3_PART_SIZE: usize = 5 * 1024 * 1024;
/// Part size for the local folder: small, since nothing forces more.
pub const LOCAL_PART_SIZE: usize = 1024 * 1024;

impl Blobs {
    /// Blobs as files under `dir` (created mode 0700 when absent, made 0700 when open to others).
    /// Finished blobs are files of mode 0600.
    pub fn local(dir: &std::path::Path) -> Result<Self, Error> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(dir).map_err(|e| {
            Error::Storage(format!(
                "cannot create the blob folder {}: {e}",
                dir.display()
            ))
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0o700);
            if mode & 0o077 != 0 {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(
                    |e| {
                        Error::Storage(format!(
                            "the blob folder {} is open to other users (mode {mode:o}) and cannot be made private ({e}); run `chmod 700` on it as its owner",
                            dir.display()
                        ))
                    },
                )?;
            }
        }
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| {
                Error::Storage(format!("cannot use the blob folder {}: {e}", dir.display()))
            })?
            .with_automatic_cleanup(true);
        Ok(Self {
            store: Arc::new(store),
            part_size: LOCAL_PART_SIZE,
            parts_in_flight: 1,
            describe: format!("the blob folder {}", dir.display()).into(),
            local_dir: Some(dir.into()),
            live: Arc::default(),
            s3: None,
            claims: None,
        })
    }

    /// Blobs in an S3-compatible bucket. Nothing is contacted yet; [`Blobs::check`] does.
    pub fn s3(settings: &S3Settings) -> Result<Self, Error> {
        let endpoint = settings.endpoint.trim_end_matches('/');
        if !(endpoint.starts_with("https://")
            || (settings.allow_http && endpoint.starts_with("http://")))
        {
            return Err(Error::Storage(format!(
                "--s3-endpoint must start with https:// (got `{endpoint}`); for a store on a trusted local network add --s3-allow-http"
            )));
        }
        let retry = object_store::RetryConfig {
            backoff: object_store::BackoffConfig::default(),
            max_retries: 3,
            retry_timeout: Duration::from_secs(30),
        };
        let client = object_store::ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(120))
            .with_allow_http(settings.allow_http);
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region)
            .with_access_key_id(&settings.access_key_id)
            .with_secret_access_key(settings.secret_access_key.expose_secret())
            .with_allow_http(settings.allow_http)
            .with_virtual_hosted_style_request(false)
            .with_retry(retry)
            .with_client_options(client)
            .build()
            .map_err(|e| Error::Storage(format!("the S3 settings are not usable: {e}")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Error::Storage(format!("the S3 settings are not usable: {e}")))?;
        let store = Arc::new(store);
        let blobs = Self {
            store: store.clone(),
            part_size: S3_PART_SIZE,
            parts_in_flight: 1,
            describe: format!("the S3 bucket {} at {endpoint}", settings.bucket).into(),
            local_dir: None,
            live: Arc::default(),
            s3: Some(Arc::new(S3Uploads {
                store,
                prefix: String::new(),
                http,
            })),
            claims: None,
        };
        match settings.prefix.as_deref() {
            Some(prefix) => blobs.within(prefix),
            None => Ok(blobs),
        }
    }

    /// Claims each S3 upload in `db` before it starts and keeps the claim while it runs, so
    /// that the sweeper of any instance sharing the bucket can tell a live upload from one a
    /// crash cut off. (The local folder needs none: it belongs to one server.)
    pub fn with_claims(mut self, db: crate::db::Db, clock: crate::clock::Clock) -> Self {
        self.claims = Some(Claims {
            db,
            clock,
            holder: crate::keys::new_token().into(),
        });
        self
    }

    /// The same store seen under `prefix/` (tests give each run its own prefix in one bucket).
    pub fn within(mut self, prefix: &str) -> Result<Self, Error> {
        let path = parse_key(prefix)?;
        self.describe = format!("{} (under {prefix}/)", self.describe).into();
        self.store = Arc::new(object_store::prefix::PrefixStore::new(self.store, path));
        self.local_dir = self.local_dir.map(|d| d.join(prefix).into());
        self.s3 = self.s3.map(|s3| {
            Arc::new(S3Uploads {
                store: s3.store.clone(),
                prefix: format!("{}{}/", s3.prefix, prefix.trim_matches('/')),
                http: s3.http.clone(),
            })
        });
        Ok(self)
    }

    /// Uses smaller or larger parts (tests; S3 refuses parts under 5 MiB except the last).
    pub fn with_part_size(mut self, part_size: usize) -> Self {
        self.part_size = part_size.max(1);
        self
    }

    /// Bytes per part.
    pub fn part_size(&self) -> usize {
        self.part_size
    }

    /// Parts uploading at once per writer; memory per writer is about
    /// `part_size * (parts_in_flight + 1)`.
    pub fn parts_in_flight(&self) -> usize {
        self.parts_in_flight
    }

    /// Where the blobs are, for the admin page and errors.
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Writes, reads back and deletes a small probe object: the start-up check that the store
    /// is reachable and the credentials and bucket are right.
    pub async fn check(&self) -> Result<(), Error> {
        let key = format!("safehand-probe/{}", crate::keys::new_token());
        let mut w = self.writer(&key).await?;
        w.write(b"probe").await?;
        w.finish().await?;
        let found = self.exists(&key).await?;
        self.delete(&key).await?;
        if found {
            Ok(())
        } else {
            Err(Error::Storage(format!(
                "{} accepted a write but the object is not there",
                self.describe
            )))
        }
    }

    /// Starts a streaming upload to `key`. Nothing is visible under `key` until
    /// [`BlobWriter::finish`].
    pub async fn writer(&self, key: &str) -> Result<BlobWriter, Error> {
        let path = parse_key(key)?;
        // Marked live (and claimed) before the staging file or multipart upload exists, so a
        // clean-up never takes it.
        self.set_live(key, true);
        if let Err(e) = self.claim(key).await {
            self.set_live(key, false);
            return Err(e);
        }
        let upload = match self.store.put_multipart(&path).await {
            Ok(u) => u,
            Err(e) => {
                self.end_upload(key).await;
                return Err(self.error("start an upload to", key, &e));
            }
        };
        Ok(BlobWriter {
            inner: Some(WriteMultipart::new_with_chunk_size(upload, self.part_size)),
            blobs: self.clone(),
            key: key.to_string(),
            written: 0,
        })
    }

    /// Streams the blob `key`; [`Error::NotFound`] when there is none.
    pub async fn get(
        &self,
        key: &str,
    ) -> Result<impl Stream<Item = Result<Bytes, Error>> + Send + 'static, Error> {
        let path = parse_key(key)?;
        let result = self.store.get(&path).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => Error::NotFound,
            e => self.error("read", key, &e),
        })?;
        let blobs = self.clone();
        let key = key.to_string();
        Ok(result
            .into_stream()
            .map_err(move |e| blobs.error("read", &key, &e)))
    }

    /// Deletes the blob `key`; deleting a blob that is not there is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        let path = parse_key(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("delete", key, &e)),
        }
    }

    /// Whether the blob `key` exists.
    pub async fn exists(&self, key: &str) -> Result<bool, Error> {
        let path = parse_key(key)?;
        match self.store.head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.error("check", key, &e)),
        }
    }

    /// Keys under `prefix` (for tests and housekeeping).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, Error> {
        let prefix = if prefix.is_empty() {
            None
        } else {
            Some(parse_key(prefix)?)
        };
        self.store
            .list(prefix.as_ref())
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .map_err(|e| self.error("list", "", &e))
    }

    /// Claims the upload to `key` in the database (S3 with claims only).
    async fn claim(&self, key: &str) -> Result<(), Error> {
        let (Some(s3), Some(c)) = (&self.s3, &self.claims) else {
            return Ok(());
        };
        let name = Claims::name(&s3.prefix, key);
        if crate::leases::acquire(&c.db, &name, &c.holder, c.clock.now(), UPLOAD_CLAIM_SECS).await?
        {
            Ok(())
        } else {
            Err(Error::Internal(format!(
                "another process is writing blob `{key}`"
            )))
        }
    }

    /// The upload to `key` is over (published, aborted or failed): no longer live, claim
    /// given back (best effort: an unreturned claim lapses by itself).
    async fn end_upload(&self, key: &str) {
        self.set_live(key, false);
        if let (Some(s3), Some(c)) = (&self.s3, &self.claims) {
            let name = Claims::name(&s3.prefix, key);
            if let Err(e) = crate::leases::release(&c.db, &name, &c.holder).await {
                tracing::warn!(key, error = %e, "could not give back the claim on an upload");
            }
        }
    }

    /// Whether uploads to a bucket are claimed in the database (S3 with [`Blobs::with_claims`]).
    pub fn staged_uploads_are_claimed(&self) -> bool {
        self.s3.is_some() && self.claims.is_some()
    }

    /// Renews this process's claims on its uploads in progress (see [`UPLOAD_CLAIM_SECS`]).
    pub async fn renew_upload_claims(&self) -> Result<(), Error> {
        let (Some(s3), Some(c)) = (&self.s3, &self.claims) else {
            return Ok(());
        };
        let live: Vec<String> = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        for key in live {
            let name = Claims::name(&s3.prefix, &key);
            if !crate::leases::acquire(&c.db, &name, &c.holder, c.clock.now(), UPLOAD_CLAIM_SECS)
                .await?
            {
                tracing::warn!(
                    key,
                    "the claim on an upload in progress was taken by another process"
                );
            }
        }
        Ok(())
    }

    /// The multipart uploads in progress in the bucket under this store's prefix (an empty
    /// list for the local folder). Uses S3's ListMultipartUploads, page by page.
    pub async fn staged_uploads(&self) -> Result<Vec<StagedUpload>, Error> {
        use object_store::signer::{SignedUrlOptions, Signer};
        let Some(s3) = &self.s3 else {
            return Ok(Vec::new());
        };
        let mut found = Vec::new();
        let mut marker: Option<(String, String)> = None;
        loop {
            let mut query = vec![("uploads".to_string(), String::new())];
            if !s3.prefix.is_empty() {
                query.push(("prefix".to_string(), s3.prefix.clone()));
            }
            if let Some((key, id)) = marker.take() {
                query.push(("key-marker".to_string(), key));
                query.push(("upload-id-marker".to_string(), id));
            }
            let url = s3
                .store
                .signed_url_opts(
                    axum::http::Method::GET,
                    &StorePath::default(),
                    Duration::from_secs(300),
                    &SignedUrlOptions::new().with_query(query),
                )
                .await
                .map_err(|e| self.error("list the uploads in progress of", "", &e))?;
            let failed = |e: String| {
                Error::Storage(format!(
                    "cannot list the uploads in progress in {}: {e}",
                    self.describe
                ))
            };
            let response = s3
                .http
                .get(url)
                .send()
                .await
                .map_err(|e| failed(e.to_string()))?;
            let status = response.status();
            let body = response.text().await.map_err(|e| failed(e.to_string()))?;
            if !status.is_success() {
                return Err(failed(format!(
                    "{status}: {}",
                    body.chars().take(300).collect::<String>()
                )));
            }
            let page: ListMultipartUploadsResult = quick_xml::de::from_str(&body)
                .map_err(|e| failed(format!("unreadable answer: {e}")))?;
            for upload in &page.uploads {
                let Some(key) = upload.key.strip_prefix(&s3.prefix) else {
                    continue;
                };
                found.push(StagedUpload {
                    key: key.to_string(),
                    upload_id: upload.upload_id.clone(),
                    initiated: upload.initiated.as_deref().and_then(|t| {
                        time::OffsetDateTime::parse(
                            t,
                            &time::format_description::well_known::Rfc3339,
                        )
                        .ok()
                        .map(std::time::SystemTime::from)
                    }),
                });
            }
            match (
                page.is_truncated,
                page.next_key_marker,
                page.next_upload_id_marker,
            ) {
                (true, Some(key), Some(id)) if !key.is_empty() => marker = Some((key, id)),
                (true, _, _) => {
                    // A truncated page with no marker to go on: go on from its last upload.
                    let Some(last) = page.uploads.last() else {
                        break;
                    };
                    marker = Some((last.key.clone(), last.upload_id.clone()));
                }
                _ => break,
            }
        }
        Ok(found)
    }

    /// Aborts the S3 multipart uploads under this store's prefix that no process is writing:
    /// not live here, not claimed by a live process (when claims are on) and started at least
    /// `min_age` ago. What a server killed mid-upload left in the bucket. Also forgets claims
    /// that lapsed over an hour ago. Returns how many uploads were aborted.
    pub async fn remove_dead_uploads_in_bucket(&self, min_age: Duration) -> Result<usize, Error> {
        use object_store::multipart::MultipartStore;
        let Some(s3) = &self.s3 else {
            return Ok(0);
        };
        let now = std::time::SystemTime::now();
        let mut removed = 0;
        for upload in self.staged_uploads().await? {
            let live_here = self
                .live
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(&upload.key);
            if live_here {
                continue;
            }
            let age = upload
                .initiated
                .and_then(|t| now.duration_since(t).ok())
                .unwrap_or(Duration::ZERO);
            if age < min_age {
                continue;
            }
            if let Some(c) = &self.claims {
                let name = Claims::name(&s3.prefix, &upload.key);
                if crate::leases::held(&c.db, &name, c.clock.now()).await? {
                    continue;
                }
            }
            let path = StorePath::parse(format!("{}{}", s3.prefix, upload.key))
                .map_err(|e| Error::Internal(format!("not a valid blob key: {e}")))?;
            match s3.store.abort_multipart(&path, &upload.upload_id).await {
                Ok(()) => {
                    tracing::info!(key = upload.key, "aborted an upload cut off by a crash");
                    removed += 1;
                }
                // Finished or aborted since it was listed.
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.error("abort the dead upload of", &upload.key, &e)),
            }
        }
        if let Some(c) = &self.claims {
            let prefix = Claims::name(&s3.prefix, "");
            crate::leases::forget_lapsed(&c.db, &prefix, c.clock.now() - 3600).await?;
        }
        Ok(removed)
    }

    fn set_live(&self, key: &str, live: bool) {
        let mut set = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if live {
            set.insert(key.to_string());
        } else {
            set.remove(key);
        }
    }

    /// Removes the staging files of uploads that are not running in this process and were
    /// last written more than `min_age` ago: what a server killed mid-upload (kill -9, power
    /// cut) left behind. The local folder keeps a part-written upload as `<key>#<n>` beside
    /// where the blob would go. A blob folder belongs to one server (several instances share
    /// an S3 bucket), so at start-up nothing is live and `min_age` is zero; the sweeper passes
    /// a margin. Returns how many files were removed. (For a bucket, see
    /// [`Blobs::remove_dead_uploads_in_bucket`].)
    pub async fn remove_dead_staging(&self, min_age: Duration) -> Result<usize, Error> {
        let Some(dir) = self.local_dir.clone() else {
            return Ok(0);
        };
        let live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        tokio::task::spawn_blocking(move || remove_staging_under(&dir, &dir, &live, min_age))
            .await
            .map_err(|e| Error::Internal(format!("staging clean-up task: {e}")))?
    }

    fn error(&self, doing: &str, key: &str, e: &object_store::Error) -> Error {
        Error::Storage(format!(
            "cannot {doing} blob `{key}` in {}: {e}",
            self.describe
        ))
    }
}

/// S3's answer to ListMultipartUploads (the fields Safehand reads).
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListMultipartUploadsResult {
    #[serde(default)]
    is_truncated: bool,
    #[serde(default)]
    next_key_marker: Option<String>,
    #[serde(default)]
    next_upload_id_marker: Option<String>,
    #[serde(default, rename = "Upload")]
    uploads: Vec<ListedUpload>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListedUpload {
    key: String,
    upload_id: String,
    #[serde(default)]
    initiated: Option<String>,
}

/// The blob key a local staging file belongs to (`<key>#<digits>`), if it is one.
fn staging_key_of(relative: &str) -> Option<&str> {
    let (key, suffix) = relative.rsplit_once('#')?;
    (!suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()) && !key.is_empty())
        .then_some(key)
}

fn remove_staging_under(
    root: &std::path::Path,
    dir: &std::path::Path,
    live: &std::collections::HashSet<String>,
    min_age: Duration,
) -> Result<usize, Error> {
    let listing = match std::fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => {
            return Err(Error::Storage(format!(
                "cannot list {} to remove dead uploads: {e}",
                dir.display()
            )))
        }
    };
    let mut removed = 0;
    for entry in listing.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            removed += remove_staging_under(root, &path, live, min_age)?;
            continue;
        }
        let Some(relative) = path
            .strip_prefix(root)
            .ok()
            .and_then(|r| r.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        let Some(key) = staging_key_of(&relative) else {
            continue;
        };
        if live.contains(key) {
            continue;
        }
        let age = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .unwrap_or(Duration::ZERO);
        if age < min_age {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::Storage(format!(
                    "cannot remove the dead upload {}: {e}",
                    path.display()
                )))
            }
        }
    }
    Ok(removed)
}

/// Keys are relative paths of letters, digits, `-`, `_`, `.` and `/` (no empty or dot
/// segments), so they mean the same in a folder and in a bucket.
fn parse_key(key: &str) -> Result<StorePath, Error> {
    let ok = !key.is_empty()
        && key.len() <= 512
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        && key
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != ".." && !seg.starts_with('.'));
    if !ok {
        return Err(Error::Internal(format!("not a valid blob key: {key:?}")));
    }
    StorePath::parse(key).map_err(|e| Error::Internal(format!("not a valid blob key: {e}")))
}

/// A streaming upload in progress. Call [`BlobWriter::finish`] to publish the blob or
/// [`BlobWriter::abort`] to discard it; dropping it unfinished aborts it in the background.
pub struct BlobWriter {
    inner: Option<WriteMultipart>,
    blobs: Blobs,
    key: String,
    written: u64,
}

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter")
            .field("key", &self.key)
            .field("written", &self.written)
            .finish()
    }
}

impl BlobWriter {
    /// Appends `bytes`. Waits while a part is uploading, so memory stays bounded however fast
    /// the caller writes.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let part_size = self.blobs.part_size;
        let in_flight = self.blobs.parts_in_flight;
        let Some(inner) = self.inner.as_mut() else {
            return Err(Error::Internal("write after the upload ended".into()));
        };
        for piece in bytes.chunks(part_size) {
            if let Err(e) = inner.wait_for_capacity(in_flight).await {
                return Err(self.blobs.error("upload", &self.key, &e));
            }
            inner.write(piece);
        }
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Uploads what is left and publishes the blob. Returns its size. On failure nothing is
    /// left under the key.
    pub async fn finish(mut self) -> Result<u64, Error> {
        let Some(inner) = self.inner.take() else {
            return Err(Error::Internal("finish after the upload ended".into()));
        };
        let finished = inner.finish().await;
        self.blobs.end_upload(&self.key).await;
        match finished {
            Ok(_) => {
                self.make_private()?;
                Ok(self.written)
            }
            Err(e) => Err(self.blobs.error("finish the upload of", &self.key, &e)),
        }
    }

    /// A finished local blob is readable by the service account only (whatever the umask).
    fn make_private(&self) -> Result<(), Error> {
        #[cfg(unix)]
        if let Some(dir) = &self.blobs.local_dir {
            use std::os::unix::fs::PermissionsExt;
            let file = dir.join(&self.key);
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).map_err(
                |e| Error::Storage(format!("cannot make the blob {} private: {e}", self.key)),
            )?;
        }
        Ok(())
    }

    /// Discards the upload: nothing is left under the key.
    pub async fn abort(mut self) -> Result<(), Error> {
        let aborted = match self.inner.take() {
            Some(inner) => inner
                .abort()
                .await
                .map_err(|e| self.blobs.error("abort the upload of", &self.key, &e)),
            None => Ok(()),
        };
        self.blobs.end_upload(&self.key).await;
        aborted
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            // Best effort: an upload cut off (client gone, error in the caller) is discarded.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let key = std::mem::take(&mut self.key);
                let blobs = self.blobs.clone();
                runtime.spawn(async move {
                    if let Err(e) = inner.abort().await {
                        tracing::warn!(key, error = %e, "could not abort an abandoned upload");
                    }
                    blobs.end_upload(&key).await;
                });
            } else {
                self.blobs.set_live(&self.key, false);
            }
        }
    }
}

/// Reads a whole blob into memory (tests and small objects only).
pub async fn read_all(blobs: &Blobs, key: &str) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    let mut stream = Box::pin(blobs.get(key).await?);
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The clean-up takes what no upload of this process writes to, keeps a live upload's
    /// staging file (which then finishes whole), and respects its age margin.
    #[tokio::test]
    async fn dead_staging_files_go_and_live_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::local(dir.path()).unwrap();
        let mut live = blobs.writer("transfers/live").await.unwrap();
        live.write(&vec![7u8; 3 * LOCAL_PART_SIZE]).await.unwrap();
        let dead = dir.path().join("transfers").join("dead#1");
        std::fs::write(&dead, b"part of an upload cut off by a crash").unwrap();
        // Not staging files: a blob whose name has a `#` and letters, and a plain blob.
        std::fs::write(dir.path().join("transfers").join("notes#a1"), b"x").unwrap();
        std::fs::write(dir.path().join("transfers").join("done"), b"x").unwrap();
        assert_eq!(
            blobs
                .remove_dead_staging(Duration::from_secs(600))
                .await
                .unwrap(),
            0,
            "a staging file written just now is inside the margin"
        );
        assert!(dead.exists());
        assert_eq!(blobs.remove_dead_staging(Duration::ZERO).await.unwrap(), 1);
        assert!(!dead.exists());
        assert!(dir.path().join("transfers").join("notes#a1").exists());
        assert!(dir.path().join("transfers").join("done").exists());
        live.write(b"the rest").await.unwrap();
        assert_eq!(live.finish().await.unwrap(), 3 * LOCAL_PART_SIZE as u64 + 8);
        assert_eq!(
            read_all(&blobs, "transfers/live").await.unwrap().len(),
            3 * LOCAL_PART_SIZE + 8
        );
        // Finished, its key is no longer live: a stray staging file of it would go.
        std::fs::write(dir.path().join("transfers").join("live#2"), b"x").unwrap();
        assert_eq!(blobs.remove_dead_staging(Duration::ZERO).await.unwrap(), 1);
    }

    #[test]
    fn keys_are_plain_relative_paths() {
        assert!(parse_key("transfers/42/payload").is_ok());
        for bad in [
            "",
            "/abs",
            "a//b",
            "../x",
            "a/../b",
            "a/.hidden",
            "sp ace",
            "é",
        ] {
            assert!(parse_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn s3_secret_never_in_debug() {
        let s = S3Settings {
            endpoint: "https://s3.example".into(),
            bucket: "b".into(),
            region: "r".into(),
            access_key_id: "id".into(),
            secret_access_key: SecretString::from("hunter2hunter2".to_string()),
            allow_http: false,
            prefix: None,
        };
        assert!(!format!("{s:?}").contains("hunter2"));
        let blobs = Blobs::s3(&s).unwrap();
        assert!(!format!("{blobs:?}").contains("hunter2"));
    }

    #[test]
    fn plain_http_needs_allow_http() {
        let s = S3Settings {
            endpoint: "http://127.0.0.1:9".into(),
            bucket: "b".into(),
            region: "r".into(),
            access_key_id: "id".into(),
            secret_access_key: SecretString::from("k".to_string()),
            allow_http: false,
            prefix: None,
        };
        let e = Blobs::s3(&s).unwrap_err().to_string();
        assert!(e.contains("--s3-allow-http"), "{e}");
    }
}
