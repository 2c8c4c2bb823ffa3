//! Test helpers: a fresh database per test (a SQLite file, or a new PostgreSQL database that
//! is dropped afterwards), the router driven with `oneshot`, a cookie jar, and sign-in helpers
//! that compute TOTP codes from the secret shown on the enrolment page.

#![allow(dead_code)]

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use safehand_server::clock::Clock;
use safehand_server::db::Db;
use safehand_server::keys::ServerKeys;
use safehand_server::{AppState, Settings};
use std::collections::BTreeMap;
use tower::ServiceExt;

/// Which database a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server tests use (tests/run exports it; CI has one on 127.0.0.1:5432).
pub fn postgres_admin_url() -> String {
    std::env::var("SAFEHAND_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh, migrated database for one test; dropped with the value.
pub struct TestDb {
    pub db: Db,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
                let db = Db::connect(&url)
                    .await
                    .unwrap()
                    .with_audit_key(safehand_crypto::audit_chain::AuditKey::generate(1).0);
                db.migrate().await.unwrap();
                Self {
                    db,
                    url,
                    _dir: Some(dir),
                    pg_name: None,
                }
            }
            Backend::Postgres => {
                let admin_url = postgres_admin_url();
                let admin = match Db::connect(&admin_url).await {
                    Ok(db) => db,
                    Err(e) => panic!(
                        "PostgreSQL at {admin_url} is not reachable ({e}); tests/run starts one"
                    ),
                };
                let name = format!("safehand_test_{}", hex::encode(rand::random::<[u8; 6]>()));
                sqlx::query(&format!("create database {name}"))
                    .execute(admin.pool())
                    .await
                    .unwrap();
                admin.close().await;
                let base = admin_url
                    .rsplit_once('/')
                    .map(|(b, _)| b.to_string())
                    .unwrap();
                let url = format!("{base}/{name}");
                let db = Db::connect(&url)
                    .await
                    .unwrap()
                    .with_audit_key(safehand_crypto::audit_chain::AuditKey::generate(1).0);
                db.migrate().await.unwrap();
                Self {
                    db,
                    url,
                    _dir: None,
                    pg_name: Some(name),
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        let db = self.db.clone();
        // Drop runs outside async; use a private runtime on another thread.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                db.close().await;
                if let Ok(admin) = Db::connect(&postgres_admin_url()).await {
                    let _ = sqlx::query(&format!("drop database if exists {name} with (force)"))
                        .execute(admin.pool())
                        .await;
                    admin.close().await;
                }
            });
        })
        .join();
    }
}

/// A response with its body read.
#[derive(Debug)]
pub struct Page {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    #[track_caller]
    pub fn assert_contains(&self, text: &str) {
        assert!(
            self.body.contains(text),
            "expected {text:?} in the page (status {}):\n{}",
            self.status,
            self.body
        );
    }
    /// The text between `before` and the next `after`.
    pub fn between(&self, before: &str, after: &str) -> Option<String> {
        let start = self.body.find(before)? + before.len();
        let end = self.body[start..].find(after)? + start;
        Some(self.body[start..end].to_string())
    }
}

/// Whether a test needing an external service or tool must fail rather than skip.
pub fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Which blob store a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobKind {
    /// A folder (a fresh temporary one).
    Local,
    /// The SeaweedFS S3 gateway tests/run starts (a fresh prefix in its bucket).
    S3,
}

/// The S3 store tests/run started: endpoint, bucket and keys from `SAFEHAND_TEST_S3_*`.
/// `None` (test skipped) when absent, except under CI=true, where it fails.
pub fn s3_settings() -> Option<safehand_server::blobs::S3Settings> {
    let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
    match (
        var("SAFEHAND_TEST_S3_ENDPOINT"),
        var("SAFEHAND_TEST_S3_BUCKET"),
        var("SAFEHAND_TEST_S3_ACCESS_KEY_ID"),
        var("SAFEHAND_TEST_S3_SECRET_ACCESS_KEY"),
    ) {
        (Some(endpoint), Some(bucket), Some(id), Some(secret)) => {
            Some(safehand_server::blobs::S3Settings {
                endpoint,
                bucket,
                region: "us-east-1".into(),
                access_key_id: id,
                secret_access_key: secret.into(),
                allow_http: true,
                prefix: None,
            })
        }
        _ => {
            assert!(
                !ci(),
                "SAFEHAND_TEST_S3_* are not set: tests/run starts SeaweedFS (CI=true forbids skipping)"
            );
            eprintln!("SKIPPED: no S3 store (run the tests through tests/run)");
            None
        }
    }
}

/// A fresh blob store for one test: a temporary folder, or a fresh prefix in the S3 bucket.
pub struct TestBlobs {
    pub blobs: safehand_server::blobs::Blobs,
    pub dir: Option<tempfile::TempDir>,
}

impl TestBlobs {
    /// `None` when the S3 store is not available (and CI is not set).
    pub fn new(kind: BlobKind) -> Option<Self> {
        use safehand_server::blobs::Blobs;
        match kind {
            BlobKind::Local => {
                let dir = tempfile::tempdir().unwrap();
                let blobs = Blobs::local(&dir.path().join("blobs")).unwrap();
                Some(Self {
                    blobs,
                    dir: Some(dir),
                })
            }
            BlobKind::S3 => {
                let settings = s3_settings()?;
                let prefix = format!("test-{}", hex::encode(rand::random::<[u8; 8]>()));
                let blobs = Blobs::s3(&settings).unwrap().within(&prefix).unwrap();
                Some(Self { blobs, dir: None })
            }
        }
    }
}

/// The app on a fresh database, with a manual clock and a browser-like cookie jar.
pub struct TestApp {
    pub state: AppState,
    pub clock: Clock,
    pub jar: BTreeMap<String, String>,
    pub tdb: TestDb,
    pub test_blobs: TestBlobs,
}

pub const START: i64 = 1_800_000_000;

impl TestApp {
    pub async fn new(backend: Backend) -> Self {
        Self::with_settings(backend, |_| {}).await
    }

    pub async fn with_settings(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> Self {
        let blobs = TestBlobs::new(BlobKind::Local).unwrap();
        Self::with_blobs_and_settings(backend, blobs, tweak).await
    }

    /// The app on `kind` blob storage; `None` (skip) when that store is not available.
    pub async fn with_blobs(backend: Backend, kind: BlobKind) -> Option<Self> {
        let blobs = TestBlobs::new(kind)?;
        Some(Self::with_blobs_and_settings(backend, blobs, |_| {}).await)
    }

    pub async fn with_blobs_and_settings(
        backend: Backend,
        test_blobs: TestBlobs,
        tweak: impl FnOnce(&mut Settings),
    ) -> Self {
        let tdb = TestDb::new(backend).await;
        let clock = Clock::manual(START);
        let mut settings = Settings::new("http://safehand.test");
        settings.throttle.delay_unit = std::time::Duration::ZERO;
        tweak(&mut settings);
        let keys = ServerKeys::from_master(&rand::random::<[u8; 32]>());
        let state = AppState::new(
            tdb.db.clone(),
            keys,
            settings,
            clock.clone(),
            test_blobs.blobs.clone(),
        );
        Self {
            state,
            clock,
            jar: BTreeMap::new(),
            tdb,
            test_blobs,
        }
    }

    pub fn db(&self) -> &Db {
        &self.state.db
    }

    /// Another browser on the same service (its own cookies).
    pub fn other_browser(&self) -> Browser {
        Browser {
            jar: BTreeMap::new(),
        }
    }

    pub async fn send(&mut self, request: Request<Body>) -> Page {
        let mut jar = std::mem::take(&mut self.jar);
        let page = send(&self.state, &mut jar, request).await;
        self.jar = jar;
        page
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let req = Request::get(path).body(Body::empty()).unwrap();
        self.send(req).await
    }

    /// Posts a form with this browser's CSRF token added.
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let mut jar = std::mem::take(&mut self.jar);
        let page = post(&self.state, &mut jar, path, fields).await;
        self.jar = jar;
        page
    }

    /// The CSRF token this browser's forms carry.
    pub fn csrf(&self) -> String {
        csrf_for(&self.state, &self.jar)
    }
}

/// A second browser's cookie jar, used with [`TestApp::state`].
pub struct Browser {
    pub jar: BTreeMap<String, String>,
}

impl Browser {
    pub async fn get(&mut self, app: &TestApp, path: &str) -> Page {
        send(
            &app.state,
            &mut self.jar,
            Request::get(path).body(Body::empty()).unwrap(),
        )
        .await
    }
    pub async fn post(&mut self, app: &TestApp, path: &str, fields: &[(&str, &str)]) -> Page {
        post(&app.state, &mut self.jar, path, fields).await
    }
    pub async fn send_req(&mut self, app: &TestApp, request: Request<Body>) -> Page {
        send(&app.state, &mut self.jar, request).await
    }
}

fn cookie_header(jar: &BTreeMap<String, String>) -> String {
    jar.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The CSRF token a page would give the browser holding `jar`: bound to its CSRF cookie and
/// its session cookie (under the names the service uses, `__Host-` ones under HTTPS).
pub fn csrf_for(state: &AppState, jar: &BTreeMap<String, String>) -> String {
    let https = state.settings.https;
    let session = jar
        .get(safehand_server::http::session_cookie_name(https))
        .map(String::as_str)
        .unwrap_or("");
    jar.get(safehand_server::http::csrf_cookie_name(https))
        .map(|c| state.keys.csrf_token(c, session))
        .unwrap_or_default()
}

pub async fn send(
    state: &AppState,
    jar: &mut BTreeMap<String, String>,
    mut request: Request<Body>,
) -> Page {
    if !jar.is_empty() && !request.headers().contains_key(header::COOKIE) {
        request
            .headers_mut()
            .insert(header::COOKIE, cookie_header(jar).parse().unwrap());
    }
    let response = safehand_server::app(state.clone())
        .oneshot(request)
        .await
        .unwrap();
    for v in response.headers().get_all(header::SET_COOKIE) {
        let v = v.to_str().unwrap();
        let (pair, attrs) = v.split_once(';').unwrap_or((v, ""));
        let (k, val) = pair.split_once('=').unwrap();
        if attrs.contains("Max-Age=0") || val.is_empty() {
            jar.remove(k);
        } else {
            jar.insert(k.to_string(), val.to_string());
        }
    }
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Page {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

pub async fn post(
    state: &AppState,
    jar: &mut BTreeMap<String, String>,
    path: &str,
    fields: &[(&str, &str)],
) -> Page {
    if !jar.contains_key(safehand_server::http::csrf_cookie_name(
        state.settings.https,
    )) {
        // A real browser has loaded a page (and got its CSRF cookie) before posting.
        send(
            state,
            jar,
            Request::get("/healthz").body(Body::empty()).unwrap(),
        )
        .await;
    }
    let csrf = csrf_for(state, jar);
    let mut all: Vec<(&str, &str)> = vec![("csrf", csrf.as_str())];
    all.extend_from_slice(fields);
    let body = serde_urlencoded::to_string(&all).unwrap();
    let req = Request::post(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .unwrap();
    send(state, jar, req).await
}

/// What a test needs to sign in as someone.
#[derive(Clone, Debug)]
pub struct Person {
    pub email: String,
    pub name: String,
    pub password: String,
    pub secret: String,
    pub recovery_codes: Vec<String>,
}

pub const ADMIN_PASSWORD: &str = "kettle orbit lantern";
/// The password every invited person sets.
pub const INVITE_PASSWORD: &str = "marble harbour window";

/// Parses the TOTP secret off the enrolment page.
pub fn secret_from(page: &Page) -> String {
    page.between("id=\"totp-secret\">", "<")
        .expect("secret on the enrolment page")
}

/// Parses recovery codes off the recovery-codes page.
pub fn codes_from(page: &Page) -> Vec<String> {
    page.body
        .split("<code>")
        .skip(1)
        .filter_map(|s| s.split("</code>").next())
        .map(str::to_string)
        .collect()
}

/// The current TOTP code for a secret at the app's clock.
pub fn code(app: &TestApp, secret: &str) -> String {
    safehand_server::accounts::code_for_secret(secret, app.clock.now()).unwrap()
}

/// First-run setup through the pages: creates the admin, enrols TOTP, and leaves this
/// browser signed in.
pub async fn setup_admin(app: &mut TestApp) -> Person {
    let token = safehand_server::accounts::setup_link(app.db(), app.clock.now())
        .await
        .unwrap()
        .unwrap();
    let page = app.get(&format!("/setup/{token}")).await;
    assert_eq!(page.status, StatusCode::OK);
    let page = app
        .post(
            &format!("/setup/{token}"),
            &[
                ("name", "Ada Admin"),
                ("email", "ada@school.sch.uk"),
                ("password", ADMIN_PASSWORD),
                ("confirm", ADMIN_PASSWORD),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.location(), "/enrol/totp");
    let page = app.get("/enrol/totp").await;
    let secret = secret_from(&page);
    let code = code(app, &secret);
    let page = app.post("/enrol/totp", &[("code", &code)]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let recovery_codes = codes_from(&page);
    assert_eq!(recovery_codes.len(), 10);
    Person {
        email: "ada@school.sch.uk".into(),
        name: "Ada Admin".into(),
        password: ADMIN_PASSWORD.into(),
        secret,
        recovery_codes,
    }
}

/// Signs a person in through the pages (password then TOTP), moving the clock on one TOTP
/// step first so the code has not been used before.
pub async fn sign_in(app: &mut TestApp, person: &Person) {
    app.clock.advance(30);
    let page = app
        .post(
            "/sign-in",
            &[("email", &person.email), ("password", &person.password)],
        )
        .await;
    assert_eq!(page.location(), "/sign-in/code", "{}", page.body);
    let code = code(app, &person.secret);
    let page = app.post("/sign-in/code", &[("code", &code)]).await;
    assert_eq!(page.location(), "/", "{}", page.body);
}

/// An admin creates a user on the admin page; the user (in another browser) follows the
/// link, sets a password and enrols TOTP. Returns the person and their signed-in browser.
pub async fn invite(
    app: &mut TestApp,
    email: &str,
    name: &str,
    roles: &[&str],
) -> (Person, Browser) {
    let mut fields = vec![("name", name), ("email", email)];
    for r in roles {
        fields.push(("role", r));
    }
    let page = app.post("/admin/users", &fields).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let link = page
        .between(&format!("{}/enrol/", app.state.settings.public_url), "\"")
        .map(|rest| format!("/enrol/{rest}"))
        .expect("enrolment link on the page");
    let mut browser = app.other_browser();
    let page = browser.get(app, &link).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let password = INVITE_PASSWORD;
    let page = browser
        .post(app, &link, &[("password", password), ("confirm", password)])
        .await;
    assert_eq!(page.location(), "/enrol/totp", "{}", page.body);
    let page = browser.get(app, "/enrol/totp").await;
    let secret = secret_from(&page);
    let page = browser
        .post(app, "/enrol/totp", &[("code", &code(app, &secret))])
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let recovery_codes = codes_from(&page);
    (
        Person {
            email: email.into(),
            name: name.into(),
            password: password.into(),
            secret,
            recovery_codes,
        },
        browser,
    )
}

/// Runs an async test body on both databases.
#[macro_export]
macro_rules! both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name($crate::common::Backend::Sqlite).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name($crate::common::Backend::Postgres).await } )*
        }
    };
}

/// Runs an async test body on both databases and both blob stores.
#[macro_export]
macro_rules! both_databases_and_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite_local {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name($crate::common::Backend::Sqlite, $crate::common::BlobKind::Local).await } )*
        }
        mod postgres_local {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name($crate::common::Backend::Postgres, $crate::common::BlobKind::Local).await } )*
        }
        mod sqlite_s3 {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name($crate::common::Backend::Sqlite, $crate::common::BlobKind::S3).await } )*
        }
        mod postgres_s3 {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name($crate::common::Backend::Postgres, $crate::common::BlobKind::S3).await } )*
        }
    };
}

// ---- Mail: the real SMTP server tests/run starts (aiosmtpd writing a maildir) ----

/// The test SMTP server's address (`SAFEHAND_TEST_SMTP_ADDR`). `None` (skip) when absent,
/// except under CI=true, where it fails.
pub fn smtp_addr() -> Option<std::net::SocketAddr> {
    match std::env::var("SAFEHAND_TEST_SMTP_ADDR") {
        Ok(a) => Some(a.parse().expect("SAFEHAND_TEST_SMTP_ADDR is HOST:PORT")),
        Err(_) => {
            assert!(
                !ci(),
                "SAFEHAND_TEST_SMTP_ADDR is not set: tests/run starts aiosmtpd (CI=true forbids skipping)"
            );
            eprintln!("SKIPPED: no test SMTP server (run the tests through tests/run)");
            None
        }
    }
}

/// The maildir the test SMTP server writes to (`SAFEHAND_TEST_SMTP_MAILDIR`).
pub fn smtp_maildir() -> std::path::PathBuf {
    std::env::var_os("SAFEHAND_TEST_SMTP_MAILDIR")
        .map(Into::into)
        .expect("SAFEHAND_TEST_SMTP_MAILDIR is set with SAFEHAND_TEST_SMTP_ADDR")
}

/// Mail settings for the test SMTP server (plain SMTP on loopback).
pub fn test_smtp_delivery(addr: std::net::SocketAddr) -> safehand_server::mail::Delivery {
    safehand_server::mail::Delivery::Smtp(
        safehand_server::mail::SmtpSettings::parse(&format!("smtp://{addr}?tls=none"), None)
            .unwrap(),
    )
}

/// A unique recipient address, so tests sharing one SMTP server never see each other's mail.
pub fn unique_address(name: &str) -> String {
    format!(
        "{name}.{}@example.org",
        hex::encode(rand::random::<[u8; 6]>())
    )
}

// The maildir reader shared with the end-to-end tests (the same source file, not a dependency
// on the root test package).
#[path = "../../tests/maildir.rs"]
mod maildir;
pub use maildir::{messages_in, parse_mail, ReceivedMail};

/// Messages the test SMTP server received for `address`.
pub fn messages_for(address: &str) -> Vec<ReceivedMail> {
    messages_in(&smtp_maildir(), address)
}

/// Waits (up to `timeout`) until `maildir` holds at least `count` messages for `address`.
pub async fn wait_for_mail_in(
    maildir: &std::path::Path,
    address: &str,
    count: usize,
    timeout: std::time::Duration,
) -> Vec<ReceivedMail> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let found = messages_in(maildir, address);
        if found.len() >= count {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no mail for {address} within {timeout:?} (found {})",
            found.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Waits (up to 10 s) for a message for `address` at the test SMTP server and returns it.
pub async fn wait_for_mail(address: &str) -> ReceivedMail {
    wait_for_mail_in(
        &smtp_maildir(),
        address,
        1,
        std::time::Duration::from_secs(10),
    )
    .await
    .remove(0)
}

/// Creates an API token with `scope` on the account page of the signed-in `browser`.
pub async fn api_token_scoped(app: &TestApp, browser: &mut Browser, scope: &str) -> String {
    let page = browser
        .post(
            app,
            "/account/tokens",
            &[
                ("token_name", "cli"),
                ("token_password", INVITE_PASSWORD),
                ("days", "30"),
                ("scope", scope),
            ],
        )
        .await;
    page.between(
        "id=\"token\" class=\"secret-field\" type=\"text\" readonly value=\"",
        "\"",
    )
    .unwrap()
}

/// A JSON call with an API token: the status and the JSON answer (null if it is not JSON).
pub async fn api_call(
    app: &TestApp,
    token: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (StatusCode, serde_json::Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.map(|b| b.to_string()).unwrap_or_default()))
        .unwrap();
    let page = send(&app.state, &mut BTreeMap::new(), req).await;
    (
        page.status,
        serde_json::from_str(&page.body).unwrap_or_default(),
    )
}
