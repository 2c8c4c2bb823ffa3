//! The pages in headless Chromium: this test starts the real `safehand-server` binary on a
//! free port and runs `tests/browser/run.mjs` (Playwright driving Debian's chromium, axe-core
//! on every page): setup and sign-in, the idle time-out, transfers, and the admin Mail page;
//! `tests/browser/register.mjs`, the equipment register, and `tests/browser/incidents.mjs`,
//! reporting and assessing an incident, each on SQLite and on PostgreSQL.
//! With CI=true a missing chromium, node or npm package fails the test.

use crate::common::{Backend, TestDb};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Finds a tool; fails under CI, otherwise tells why the test is skipped.
fn tool(path_or_name: &str) -> Option<PathBuf> {
    let candidate = PathBuf::from(path_or_name);
    let found = if candidate.is_absolute() {
        candidate.is_file().then_some(candidate)
    } else {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(path_or_name))
                .find(|p| p.is_file())
        })
    };
    if found.is_none() {
        assert!(
            !ci(),
            "{path_or_name} is missing; tests/run installs it (CI=true forbids skipping)"
        );
        eprintln!("SKIPPED browser tests: {path_or_name} is not installed (tests/run installs it)");
    }
    found
}

/// A running server process, stopped on drop.
pub(crate) struct Server {
    child: Child,
    pub(crate) base: String,
    setup_url: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn start_server(data_dir: &Path, extra: &[&str]) -> Server {
    start_server_with_stderr(data_dir, extra, Stdio::inherit())
}

/// [`start_server`] with the server's standard error (warnings) sent to `stderr`.
pub(crate) fn start_server_with_stderr(data_dir: &Path, extra: &[&str], stderr: Stdio) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_safehand-server"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .env_remove("DATABASE_URL")
        .env("SAFEHAND_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start safehand-server");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut base = None;
    let mut setup_url = None;
    // A setup link (first run only) comes first; the "listening" line ends start-up.
    for line in lines.by_ref() {
        let line = line.expect("read server output");
        if line.trim_start().starts_with("http") && line.contains("/setup/") {
            setup_url = Some(line.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("Safehand is listening on ") {
            base = rest.split_whitespace().next().map(str::to_string);
            break;
        }
    }
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        base: base.expect("server printed its address"),
        setup_url,
    }
}

fn run_node(node: &Path, browser_dir: &Path, phase: &str, server: &Server, state_file: &Path) {
    run_node_with(node, browser_dir, phase, server, state_file, &[]);
}

fn run_node_with(
    node: &Path,
    browser_dir: &Path,
    phase: &str,
    server: &Server,
    state_file: &Path,
    env: &[(&str, &str)],
) {
    let mut cmd = Command::new(node);
    cmd.arg("run.mjs")
        .arg(phase)
        .current_dir(browser_dir)
        .env("BASE_URL", &server.base)
        .env("STATE_FILE", state_file)
        .env("DATA_DIR", state_file.parent().unwrap())
        .envs(env.iter().copied());
    if let Some(url) = &server.setup_url {
        cmd.env("SETUP_URL", url);
    }
    let out = cmd.output().expect("run node");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success(),
        "browser phase {phase} failed:\n{text}"
    );
}

/// node and tests/browser with its packages installed; `None` (skip) when chromium, node or
/// npm is missing outside CI.
fn browser_tools() -> Option<(PathBuf, PathBuf)> {
    let (Some(_chromium), Some(node), Some(npm)) =
        (tool("/usr/bin/chromium"), tool("node"), tool("npm"))
    else {
        return None;
    };
    let browser_dir = repo_root().join("tests/browser");
    if !browser_dir.join("node_modules/playwright-core").is_dir() {
        let status = Command::new(npm)
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&browser_dir)
            .status()
            .expect("npm ci");
        assert!(status.success(), "npm ci in tests/browser failed");
    }
    Some((node, browser_dir))
}

#[test]
fn pages_in_headless_chromium() {
    let Some((node, browser_dir)) = browser_tools() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let state_file = data.path().join("browser-state.json");
    {
        let server = start_server(data.path(), &["--sign-in-lock-after", "3"]);
        assert!(server.setup_url.is_some(), "first run prints a setup link");
        run_node(&node, &browser_dir, "main", &server, &state_file);
    }
    // Same data, restarted with a short idle timeout.
    let server = start_server(data.path(), &["--session-idle-timeout", "3s"]);
    assert!(
        server.setup_url.is_none(),
        "no setup link once an admin exists"
    );
    run_node(&node, &browser_dir, "idle", &server, &state_file);
    drop(server);
    mail_page(&node, &browser_dir, data.path(), &state_file);
    // Transfers: contacts, sending with progress, the passphrase page, the recipient, recall.
    let server = start_server(data.path(), &[]);
    run_node(&node, &browser_dir, "transfers", &server, &state_file);
    // Approval: the approver's queue and page, approve and reject.
    run_node(&node, &browser_dir, "approval", &server, &state_file);
}

/// The transfers pages (contacts, policy, sending with progress, the passphrase page, the
/// recipient, recall) and the approver's pages on PostgreSQL too, after a plain first-run setup.
#[test]
fn transfer_pages_in_headless_chromium_on_postgres() {
    let Some((node, browser_dir)) = browser_tools() else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(TestDb::new(Backend::Postgres));
    let data = tempfile::tempdir().unwrap();
    let state_file = data.path().join("browser-state.json");
    let server = start_server(data.path(), &["--database-url", &db.url]);
    assert!(server.setup_url.is_some(), "first run prints a setup link");
    run_node(&node, &browser_dir, "setup", &server, &state_file);
    run_node(&node, &browser_dir, "transfers", &server, &state_file);
    run_node(&node, &browser_dir, "approval", &server, &state_file);
    drop(server);
    drop(db);
}

/// The admin Mail page: a mail queued while the server is stopped, then the server restarted
/// with an SMTP server that is not running, so the page shows the mail waiting with its error.
fn mail_page(node: &Path, browser_dir: &Path, data: &Path, state_file: &Path) {
    use safehand_server::mail::{self, OutgoingMail};
    let to = "pat.parent@example.org";
    let url = format!("sqlite://{}", data.join("safehand.db").display());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let db = safehand_server::db::Db::connect(&url).await.unwrap();
        let mut tx = db.pool().begin().await.unwrap();
        let mail = OutgoingMail {
            to: to.into(),
            subject: "A secure file is waiting for you".into(),
            body_text: "Open it here: https://safehand.test/r/example\n".into(),
        };
        mail::enqueue(&mut tx, &mail, time::OffsetDateTime::now_utc())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        db.close().await;
    });
    // Nothing listens on this port (bound, then released).
    let smtp_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let server = start_server_with_stderr(
        data,
        &[
            "--smtp-url",
            &format!("smtp://{smtp_addr}?tls=none"),
            "--mail-from",
            "Safehand <safehand@school.sch.uk>",
        ],
        // The start-up warning that the SMTP server cannot be used is expected here.
        Stdio::null(),
    );
    run_node_with(
        node,
        browser_dir,
        "mail",
        &server,
        state_file,
        &[("MAIL_TO", to), ("SMTP_ADDR", &smtp_addr)],
    );
}

#[test]
fn register_pages_in_headless_chromium_on_sqlite() {
    register_pages(Backend::Sqlite);
}

#[test]
fn register_pages_in_headless_chromium_on_postgres() {
    register_pages(Backend::Postgres);
}

#[test]
fn incident_pages_in_headless_chromium_on_sqlite() {
    incident_pages(Backend::Sqlite);
}

#[test]
fn incident_pages_in_headless_chromium_on_postgres() {
    incident_pages(Backend::Postgres);
}

/// A fresh server on `backend` (the runtime outlives the database: declared first, dropped
/// last), with its data folder.
fn fresh_server(
    runtime: &tokio::runtime::Runtime,
    backend: Backend,
    data: &Path,
) -> (Option<TestDb>, Server) {
    let (db, database) = match backend {
        Backend::Sqlite => (None, Vec::new()),
        Backend::Postgres => {
            let db = runtime.block_on(TestDb::new(Backend::Postgres));
            let url = db.url.clone();
            (Some(db), vec!["--database-url".to_string(), url])
        }
    };
    let database: Vec<&str> = database.iter().map(String::as_str).collect();
    (db, start_server(&data.join("server"), &database))
}

/// Runs `tests/browser/{script}` against `server`; fails with its output.
fn run_script(
    node: &Path,
    browser_dir: &Path,
    script: &str,
    server: &Server,
    env: &[(&str, &str)],
) {
    let out = Command::new(node)
        .arg(script)
        .current_dir(browser_dir)
        .env("BASE_URL", &server.base)
        .env(
            "SETUP_URL",
            server
                .setup_url
                .as_deref()
                .expect("first run prints a setup link"),
        )
        .envs(env.iter().copied())
        .output()
        .expect("run node");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success(),
        "browser test {script} failed:\n{text}"
    );
}

/// `tests/browser/incidents.mjs` against the real binary on a fresh database of `backend`.
fn incident_pages(backend: Backend) {
    let Some((node, browser_dir)) = browser_tools() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_db, server) = fresh_server(&runtime, backend, data.path());
    run_script(&node, &browser_dir, "incidents.mjs", &server, &[]);
}

/// `tests/browser/register.mjs` against the real binary on a fresh database of `backend`.
fn register_pages(backend: Backend) {
    use safehand_crypto::certificate::{sign_certificate, SigningKey, WipeCertificate};
    let Some((node, browser_dir)) = browser_tools() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let key = SigningKey::generate();
    let mut cert = WipeCertificate::example();
    cert.device.serial = Some("SN-BROWSER-1".into());
    cert.asset_tag = Some("LT-100".into());
    let cert_file = data.path().join("wipe.json");
    std::fs::write(&cert_file, sign_certificate(&cert, &key).unwrap()).unwrap();
    let bad_csv = data.path().join("bad.csv");
    std::fs::write(
        &bad_csv,
        "asset_tag,kind,storage_media,personal_data\nIP-1,tablet,T1,yes\nIP-2,fridge,T2,no\n",
    )
    .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_db, server) = fresh_server(&runtime, backend, data.path());
    let (cert_file, bad_csv) = (
        cert_file.display().to_string(),
        bad_csv.display().to_string(),
    );
    let public_key = key.public_key().to_string();
    run_script(
        &node,
        &browser_dir,
        "register.mjs",
        &server,
        &[
            ("CERT_FILE", &cert_file),
            ("PUBLIC_KEY", &public_key),
            ("BAD_CSV", &bad_csv),
        ],
    );
}
