//! A running `safehand-server` for the end-to-end tests: the real binary on a loopback port
//! with a fresh database (a SQLite file, or a PostgreSQL database dropped afterwards), and a
//! small JSON client for checking what the server holds, and the mail the test SMTP server
//! received from it.

// A failed step in a test should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use safehand_server::db::Db;
use safehand_tests::maildir::{messages_in, ReceivedMail};
use safehand_tests::workspace_binary;

pub(crate) struct Server {
    child: Child,
    pub(crate) base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the real server binary on a free loopback port, its data in `data`.
pub(crate) fn start_server(data: &Path, database_url: &str) -> Server {
    start_server_with(data, database_url, &[])
}

/// As [`start_server`], with more command-line options (e.g. [`TestSmtp::server_args`]).
pub(crate) fn start_server_with(data: &Path, database_url: &str, extra: &[String]) -> Server {
    let mut child = Command::new(workspace_binary("safehand-server"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(["--database-url", database_url])
        .args(extra)
        .env("SAFEHAND_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start safehand-server (tests/run builds it)");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut base = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("Safehand is listening on ") {
            base = rest.split_whitespace().next().map(str::to_string);
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        base: base.expect("the server printed its address"),
    }
}

/// The real SMTP server `tests/run` starts (aiosmtpd on `SAFEHAND_TEST_SMTP_ADDR`, writing the
/// maildir `SAFEHAND_TEST_SMTP_MAILDIR`). It is shared by every test running at the same time,
/// so a test reads only the mail for addresses of its own ([`unique_token`]).
pub(crate) struct TestSmtp {
    addr: String,
    maildir: PathBuf,
}

impl TestSmtp {
    /// The test SMTP server; `None` (the caller skips) when `tests/run` did not start one,
    /// except under CI=true, where that fails the test.
    pub(crate) fn from_env() -> Option<Self> {
        let Ok(addr) = std::env::var("SAFEHAND_TEST_SMTP_ADDR") else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "SAFEHAND_TEST_SMTP_ADDR is not set: tests/run starts aiosmtpd (CI=true forbids skipping)"
            );
            eprintln!("SKIPPED: no test SMTP server (run the tests through tests/run)");
            return None;
        };
        let maildir = std::env::var_os("SAFEHAND_TEST_SMTP_MAILDIR")
            .map(PathBuf::from)
            .expect("SAFEHAND_TEST_SMTP_MAILDIR is set with SAFEHAND_TEST_SMTP_ADDR");
        Some(Self { addr, maildir })
    }

    /// `safehand-server` options that send its mail here (plain SMTP on loopback).
    pub(crate) fn server_args(&self) -> Vec<String> {
        vec![
            "--smtp-url".into(),
            format!("smtp://{}?tls=none", self.addr),
            "--mail-from".into(),
            "Safehand <safehand@school.sch.uk>".into(),
        ]
    }

    /// The messages delivered for `address` (the envelope recipient).
    pub(crate) fn mail_for(&self, address: &str) -> Vec<ReceivedMail> {
        messages_in(&self.maildir, address)
    }

    /// Waits (up to 30 s) until `found` picks something out of the mail for `address`.
    pub(crate) fn wait_for<T>(
        &self,
        address: &str,
        what: &str,
        found: impl Fn(&[ReceivedMail]) -> Option<T>,
    ) -> T {
        let waited = Instant::now();
        loop {
            if let Some(t) = found(&self.mail_for(address)) {
                return t;
            }
            assert!(
                waited.elapsed() < Duration::from_secs(30),
                "no {what} for {address} at the test SMTP server within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A random hex token, for addresses and names no other test uses at the same time.
pub(crate) fn unique_token() -> String {
    let mut bytes = [0u8; 6];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .expect("read /dev/urandom");
    hex::encode(bytes)
}

/// The database for one run: a SQLite file, or a fresh PostgreSQL database dropped after.
pub(crate) struct Database {
    pub(crate) url: String,
    pg: Option<String>,
}

fn postgres_admin_url() -> String {
    std::env::var("SAFEHAND_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

impl Database {
    /// `label` names the PostgreSQL database (with the process id): tests of one run that use
    /// PostgreSQL at the same time need different labels.
    pub(crate) fn new(
        rt: &tokio::runtime::Runtime,
        postgres: bool,
        dir: &Path,
        label: &str,
    ) -> Self {
        if !postgres {
            return Self {
                url: format!("sqlite://{}?mode=rwc", dir.join("safehand.db").display()),
                pg: None,
            };
        }
        let name = format!("safehand_e2e_{label}_{}", std::process::id());
        let admin = postgres_admin_url();
        rt.block_on(async {
            let db = Db::connect(&admin).await.unwrap_or_else(|e| {
                panic!("PostgreSQL at {admin} is not reachable ({e}); tests/run starts one")
            });
            sqlx::query(&format!("drop database if exists {name} with (force)"))
                .execute(db.pool())
                .await
                .unwrap();
            sqlx::query(&format!("create database {name}"))
                .execute(db.pool())
                .await
                .unwrap();
            db.close().await;
        });
        let base = admin.rsplit_once('/').unwrap().0.to_string();
        Self {
            url: format!("{base}/{name}"),
            pg: Some(name),
        }
    }

    pub(crate) fn drop_with(&self, rt: &tokio::runtime::Runtime) {
        if let Some(name) = &self.pg {
            rt.block_on(async {
                if let Ok(db) = Db::connect(&postgres_admin_url()).await {
                    let _ = sqlx::query(&format!("drop database if exists {name} with (force)"))
                        .execute(db.pool())
                        .await;
                    db.close().await;
                }
            });
        }
    }
}

/// One JSON API call with a bearer token: (status, body or `Null`).
pub(crate) fn call(method: &str, url: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let auth = format!("Bearer {token}");
    let mut response = match (method, body) {
        ("GET", _) => agent.get(url).header("Authorization", &auth).call(),
        ("PUT", Some(b)) => agent
            .put(url)
            .header("Authorization", &auth)
            .content_type("application/json")
            .send(b.to_string().as_bytes()),
        (_, Some(b)) => agent
            .post(url)
            .header("Authorization", &auth)
            .content_type("application/json")
            .send(b.to_string().as_bytes()),
        (_, None) => agent.post(url).header("Authorization", &auth).send_empty(),
    }
    .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Writes `text` to a new file with mode 0600 (token files).
pub(crate) fn private_file(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}
