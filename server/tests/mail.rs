//! The outbox and its worker, on SQLite and PostgreSQL, delivering to a real SMTP server
//! (aiosmtpd over TCP): delivery, retry with backoff until the server is back, giving up, two
//! workers sharing one database, `.eml` files without SMTP, STARTTLS and implicit TLS with a
//! private CA, a relay that wants a password (`tests/smtp/auth_server.py`) driven by the real
//! binary, and the admin page.

use crate::common::*;
use axum::http::StatusCode;
use safehand_server::clock::Clock;
use safehand_server::db::Db;
use safehand_server::mail::{self, Delivery, OutgoingMail, RetryPolicy, SmtpSettings, Worker};
use sqlx::Row;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const FROM: &str = "Safehand <safehand@school.sch.uk>";

fn policy() -> RetryPolicy {
    RetryPolicy {
        first_retry: Duration::from_secs(60),
        max_wait: Duration::from_secs(3600),
        max_attempts: 5,
        lease: Duration::from_secs(300),
        poll: Duration::from_millis(50),
    }
}

fn now(clock: &Clock) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(clock.now()).unwrap()
}

fn waiting_mail(to: &str) -> OutgoingMail {
    OutgoingMail {
        to: to.into(),
        subject: "A secure file is waiting for you".into(),
        body_text: format!(
            "Someone at Example School has sent you a file.\n\nOpen it here: https://safehand.test/r/{}\n",
            hex::encode(rand::random::<[u8; 8]>())
        ),
    }
}

/// Queues one mail in its own committed transaction.
async fn queue(db: &Db, clock: &Clock, mail: &OutgoingMail) {
    let mut tx = db.pool().begin().await.unwrap();
    mail::enqueue(&mut tx, mail, now(clock)).await.unwrap();
    tx.commit().await.unwrap();
}

async fn outbox_row(db: &Db, to: &str) -> (String, i64, String, Option<String>) {
    let row = sqlx::query(
        "select state, attempts, body_text, last_error from mail_outbox where recipient = $1",
    )
    .bind(to)
    .fetch_one(db.pool())
    .await
    .unwrap();
    (
        row.get("state"),
        row.get("attempts"),
        row.get("body_text"),
        row.get("last_error"),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn aiosmtpd_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            !ci(),
            "python3 with aiosmtpd is missing; tests/run installs it (CI=true forbids skipping)"
        );
        eprintln!("SKIPPED: aiosmtpd is not installed");
    }
    ok
}

/// An aiosmtpd of this test's own (to stop and start, or to speak TLS), writing a maildir.
struct PrivateSmtp {
    child: Child,
    maildir: PathBuf,
}

impl PrivateSmtp {
    async fn start(port: u16, maildir: &Path, extra: &[&str]) -> Self {
        // aiosmtpd creates the maildir only when the folder does not exist yet.
        let maildir = &maildir.join("maildir");
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(extra)
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start aiosmtpd");
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Self {
                    child,
                    maildir: maildir.to_path_buf(),
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
        panic!("aiosmtpd did not start listening on port {port}");
    }
}

impl Drop for PrivateSmtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn enqueue_is_part_of_the_callers_transaction(backend: Backend) {
    let tdb = TestDb::new(backend).await;
    let clock = Clock::manual(START);
    let rolled_back = unique_address("rolled-back");
    let mut tx = tdb.db.pool().begin().await.unwrap();
    mail::enqueue(&mut tx, &waiting_mail(&rolled_back), now(&clock))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let committed = unique_address("committed");
    queue(&tdb.db, &clock, &waiting_mail(&committed)).await;
    let n: i64 = sqlx::query("select count(*) as n from mail_outbox")
        .fetch_one(tdb.db.pool())
        .await
        .unwrap()
        .get("n");
    assert_eq!(n, 1, "only the committed mail is in the outbox");
    assert_eq!(outbox_row(&tdb.db, &committed).await.0, "queued");
}

async fn enqueue_refuses_bad_addresses_and_subjects(backend: Backend) {
    let tdb = TestDb::new(backend).await;
    let clock = Clock::manual(START);
    let mut conn = tdb.db.pool().acquire().await.unwrap();
    for (to, subject) in [
        ("not an address", "Hello"),
        ("a@b.example\r\nBcc: x@evil.example", "Hello"),
        ("ok@example.org", "Two\r\nBcc: x@evil.example"),
        ("ok@example.org", "  "),
    ] {
        let mail = OutgoingMail {
            to: to.into(),
            subject: subject.into(),
            body_text: "x".into(),
        };
        let e = mail::enqueue(&mut conn, &mail, now(&clock))
            .await
            .unwrap_err();
        assert!(
            matches!(e, safehand_server::Error::BadInput(_)),
            "{to:?} {subject:?}: {e:?}"
        );
    }
    assert_eq!(mail::counts(&tdb.db).await.unwrap().queued, 0);
}

async fn delivers_through_a_real_smtp_server(backend: Backend) {
    let Some(addr) = smtp_addr() else { return };
    let tdb = TestDb::new(backend).await;
    let clock = Clock::manual(START);
    let to = unique_address("recipient");
    let sent = waiting_mail(&to);
    queue(&tdb.db, &clock, &sent).await;
    let worker = Worker::new(
        tdb.db.clone(),
        clock.clone(),
        &test_smtp_delivery(addr),
        FROM,
        policy(),
    )
    .unwrap();
    let pass = worker.run_once().await.unwrap();
    assert_eq!(pass.sent, 1, "{pass:?}");
    let got = wait_for_mail(&to).await;
    assert_eq!(got.subject(), sent.subject);
    assert_eq!(got.body.trim_end(), sent.body_text.trim_end());
    assert_eq!(got.mail_from, "safehand@school.sch.uk");
    assert!(got
        .header("from")
        .unwrap()
        .contains("safehand@school.sch.uk"));
    assert!(got.header("message-id").is_some());
    assert!(got
        .first_link()
        .unwrap()
        .starts_with("https://safehand.test/r/"));
    let (state, attempts, body, error) = outbox_row(&tdb.db, &to).await;
    assert_eq!((state.as_str(), attempts), ("sent", 1));
    assert_eq!(body, "", "a delivered body is erased from the outbox");
    assert_eq!(error, None);
    // Nothing is sent twice: another pass finds no work.
    assert_eq!(worker.run_once().await.unwrap(), mail::Pass::default());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(messages_for(&to).len(), 1);
}

async fn retries_with_backoff_until_the_server_is_back(backend: Backend) {
    if !aiosmtpd_available() {
        return;
    }
    let tdb = TestDb::new(backend).await;
    let clock = Clock::manual(START);
    let to = unique_address("retry");
    queue(&tdb.db, &clock, &waiting_mail(&to)).await;
    // Nothing listens on this port yet.
    let port = free_port();
    let delivery = Delivery::Smtp(
        SmtpSettings::parse(&format!("smtp://127.0.0.1:{port}?tls=none"), None).unwrap(),
    );
    let worker = Worker::new(tdb.db.clone(), clock.clone(), &delivery, FROM, policy()).unwrap();
    let pass = worker.run_once().await.unwrap();
    assert_eq!(pass.retrying, 1, "{pass:?}");
    let (state, attempts, body, error) = outbox_row(&tdb.db, &to).await;
    assert_eq!((state.as_str(), attempts), ("queued", 1));
    assert!(!body.is_empty(), "the body waits for the next attempt");
    assert!(error.unwrap().to_lowercase().contains("connect"));
    // Not due again before the backoff (60 s after the first failure).
    clock.advance(59);
    assert_eq!(worker.run_once().await.unwrap(), mail::Pass::default());
    clock.advance(2);
    assert_eq!(worker.run_once().await.unwrap().retrying, 1);
    assert_eq!(outbox_row(&tdb.db, &to).await.1, 2);
    // The second wait is twice as long.
    clock.advance(119);
    assert_eq!(worker.run_once().await.unwrap(), mail::Pass::default());
    // The SMTP server comes up on that port; the same worker now delivers.
    let maildir = tempfile::tempdir().unwrap();
    let smtp = PrivateSmtp::start(port, maildir.path(), &[]).await;
    clock.advance(2);
    assert_eq!(worker.run_once().await.unwrap().sent, 1);
    let got = wait_for_mail_in(&smtp.maildir, &to, 1, Duration::from_secs(10)).await;
    assert_eq!(got[0].subject(), "A secure file is waiting for you");
    let (state, attempts, _, error) = outbox_row(&tdb.db, &to).await;
    assert_eq!((state.as_str(), attempts, error), ("sent", 3, None));
}

async fn gives_up_after_the_last_attempt(backend: Backend) {
    let tdb = TestDb::new(backend).await;
    let clock = Clock::manual(START);
    let to = unique_address("give-up");
    queue(&tdb.db, &clock, &waiting_mail(&to)).await;
    let port = free_port();
    let delivery = Delivery::Smtp(
        SmtpSettings::parse(&format!("smtp://127.0.0.1:{port}?tls=none"), None).unwrap(),
    );
    let policy = RetryPolicy {
        max_attempts: 3,
        ..policy()
    };
    let worker = Worker::new(tdb.db.clone(), clock.clone(), &delivery, FROM, policy).unwrap();
    let mut failed = 0;
    for _ in 0..5 {
        failed += worker.run_once().await.unwrap().failed;
        clock.advance(3600);
    }
    assert_eq!(failed, 1);
    let (state, attempts, _, error) = outbox_row(&tdb.db, &to).await;
    assert_eq!((state.as_str(), attempts), ("failed", 3));
    assert!(error.is_some());
    let counts = mail::counts(&tdb.db).await.unwrap();
    assert_eq!((counts.queued, counts.failed), (0, 1));
}

async fn two_workers_never_send_the_same_mail(backend: Backend) {
    let tdb = TestDb::new(backend).await;
    let clock = Clock::manual(START);
    let total = 60;
    for i in 0..total {
        queue(&tdb.db, &clock, &waiting_mail(&format!("r{i}@example.org"))).await;
    }
    // Two instances: separate connection pools on one database, separate outbox folders.
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut workers = Vec::new();
    for dir in &dirs {
        let db = Db::connect(&tdb.url)
            .await
            .unwrap()
            .with_audit_key_of(&tdb.db);
        let delivery = Delivery::Folder(dir.path().join("outbox"));
        workers.push(Worker::new(db, clock.clone(), &delivery, FROM, policy()).unwrap());
    }
    let (a, b) = tokio::join!(workers[0].run_once(), workers[1].run_once());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.sent + b.sent, total, "{a:?} {b:?}");
    let files = |d: &tempfile::TempDir| -> Vec<String> {
        std::fs::read_dir(d.path().join("outbox"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let (fa, fb) = (files(&dirs[0]), files(&dirs[1]));
    assert_eq!(fa.len() + fb.len(), total);
    assert!(
        fa.iter().all(|f| !fb.contains(f)),
        "a mail was written by both workers"
    );
    assert_eq!(mail::counts(&tdb.db).await.unwrap().sent, total as i64);
}

async fn writes_eml_files_without_smtp(backend: Backend) {
    let tdb = TestDb::new(backend).await;
    let clock = Clock::manual(START);
    let data = tempfile::tempdir().unwrap();
    let outbox = data.path().join("outbox");
    let to = unique_address("eml");
    let sent = waiting_mail(&to);
    queue(&tdb.db, &clock, &sent).await;
    let worker = Worker::new(
        tdb.db.clone(),
        clock.clone(),
        &Delivery::Folder(outbox.clone()),
        FROM,
        policy(),
    )
    .unwrap();
    let handle = worker.spawn();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let file = loop {
        let found: Vec<PathBuf> = std::fs::read_dir(&outbox)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        if let Some(f) = found.into_iter().next() {
            break f;
        }
        assert!(std::time::Instant::now() < deadline, "no .eml file");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Stopping waits for the worker; it returns promptly.
    tokio::time::timeout(Duration::from_secs(5), handle.stop())
        .await
        .expect("the worker stops");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "outbox files are private");
    let dir_mode = std::fs::metadata(&outbox).unwrap().permissions().mode();
    assert_eq!(dir_mode & 0o777, 0o700);
    let got = parse_mail(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(got.header("to"), Some(to.as_str()));
    assert_eq!(got.subject(), sent.subject);
    assert_eq!(got.body.trim_end(), sent.body_text.trim_end());
    assert_eq!(outbox_row(&tdb.db, &to).await.0, "sent");
}

async fn admin_page_shows_the_outbox(backend: Backend) {
    let mut app = TestApp::new(backend).await;
    setup_admin(&mut app).await;
    let to = unique_address("shown");
    queue(app.db(), &app.clock, &waiting_mail(&to)).await;
    let page = app.get("/admin/users").await;
    page.assert_contains("Mail is not being sent.");
    let page = app.get("/admin/mail").await;
    assert_eq!(page.status, StatusCode::OK);
    page.assert_contains("Mail is not being sent.");
    page.assert_contains(&to);
    page.assert_contains("Waiting: 1.");
    // Mail bodies (links, codes) are never shown on the page.
    assert!(!page.body.contains("https://safehand.test/r/"));
    let mut other = app.other_browser();
    let page = other.get(&app, "/admin/mail").await;
    assert_eq!(page.location(), "/sign-in");
}

crate::both_databases!(
    enqueue_is_part_of_the_callers_transaction,
    enqueue_refuses_bad_addresses_and_subjects,
    delivers_through_a_real_smtp_server,
    retries_with_backoff_until_the_server_is_back,
    gives_up_after_the_last_attempt,
    two_workers_never_send_the_same_mail,
    writes_eml_files_without_smtp,
    admin_page_shows_the_outbox,
    delivers_through_a_relay_that_wants_a_password,
    a_wrong_smtp_password_is_reported_and_the_mail_waits,
);

/// A CA and a certificate for `localhost` signed by it (openssl).
fn private_ca(dir: &Path) -> Option<(PathBuf, PathBuf, PathBuf)> {
    let ok = Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(!ci(), "openssl is missing; tests/run installs it");
        eprintln!("SKIPPED: openssl is not installed");
        return None;
    }
    let run = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "openssl {args:?}");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=Safehand test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    ]);
    Some((
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    ))
}

fn got_no_mail(maildir: &Path, to: &str) -> bool {
    messages_in(maildir, to).is_empty()
}

async fn tls_delivery(implicit: bool) {
    if !aiosmtpd_available() {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let Some((ca, cert, key)) = private_ca(certs.path()) else {
        return;
    };
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let port = free_port();
    let maildir = tempfile::tempdir().unwrap();
    let tls_args: Vec<&str> = if implicit {
        vec!["--smtpscert", cert, "--smtpskey", key]
    } else {
        vec!["--tlscert", cert, "--tlskey", key]
    };
    let smtp = PrivateSmtp::start(port, maildir.path(), &tls_args).await;
    let scheme = if implicit { "smtps" } else { "smtp" };
    let url = format!("{scheme}://localhost:{port}");
    let tdb = TestDb::new(Backend::Sqlite).await;
    let clock = Clock::manual(START);
    let to = unique_address("tls");
    queue(&tdb.db, &clock, &waiting_mail(&to)).await;

    // Without the private CA the certificate is not trusted: the mail waits.
    let untrusting = Delivery::Smtp(SmtpSettings::parse(&url, None).unwrap());
    let worker = Worker::new(tdb.db.clone(), clock.clone(), &untrusting, FROM, policy()).unwrap();
    assert_eq!(worker.run_once().await.unwrap().retrying, 1);
    let error = outbox_row(&tdb.db, &to).await.3.unwrap();
    assert!(error.to_lowercase().contains("certificate"), "{error}");

    let mut settings = SmtpSettings::parse(&url, None).unwrap();
    settings.ca_pem = Some(std::fs::read(&ca).unwrap());
    let worker = Worker::new(
        tdb.db.clone(),
        clock.clone(),
        &Delivery::Smtp(settings),
        FROM,
        policy(),
    )
    .unwrap();
    worker.check_connection().await.unwrap();
    assert!(got_no_mail(&smtp.maildir, &to));
    clock.advance(61);
    let pass = worker.run_once().await.unwrap();
    assert_eq!(
        pass.sent,
        1,
        "{pass:?} {:?}",
        outbox_row(&tdb.db, &to).await
    );
    let got = wait_for_mail_in(&smtp.maildir, &to, 1, Duration::from_secs(10)).await;
    assert_eq!(got[0].subject(), "A secure file is waiting for you");
}

/// `tests/smtp/auth_server.py`: a relay that wants STARTTLS (certificate from [`private_ca`])
/// and then AUTH PLAIN or LOGIN as `RELAY_USER`, writing a maildir; stopped on drop.
struct AuthSmtp {
    child: Child,
    port: u16,
    maildir: PathBuf,
    log: PathBuf,
    ca: PathBuf,
    _dir: tempfile::TempDir,
}

const RELAY_USER: &str = "relay@school.sch.uk";
const RELAY_PASSWORD: &str = "correct horse 7 battery staple";

impl AuthSmtp {
    fn start() -> Option<Self> {
        if !aiosmtpd_available() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = private_ca(dir.path())?;
        let password_file = dir.path().join("relay-password");
        std::fs::write(&password_file, format!("{RELAY_PASSWORD}\n")).unwrap();
        let (maildir, log) = (dir.path().join("maildir"), dir.path().join("relay.log"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/smtp/auth_server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--listen", "127.0.0.1:0", "--user", RELAY_USER])
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .arg("--password-file")
            .arg(&password_file)
            .arg("--maildir")
            .arg(&maildir)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start tests/smtp/auth_server.py");
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Some(port) = line
            .trim()
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
        else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "auth_server.py did not start ({line:?}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        Some(Self {
            child,
            port,
            maildir,
            log,
            ca,
            _dir: dir,
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }

    /// Starts the real `safehand-server` on `tdb`'s database, sending through this relay with
    /// `password` from a file, the relay's CA trusted with `--smtp-ca-file`. Its standard
    /// error goes to the returned file.
    fn start_server(
        &self,
        tdb: &TestDb,
        data: &Path,
        password: &str,
    ) -> (crate::browser::Server, PathBuf) {
        let password_file = data.join("smtp-password");
        std::fs::create_dir_all(data).unwrap();
        std::fs::write(&password_file, password).unwrap();
        let stderr = data.join("server.err");
        // The user is an email address, percent-encoded in the URL as operators write it.
        let url = format!(
            "smtp://{}@127.0.0.1:{}",
            RELAY_USER.replace('@', "%40"),
            self.port
        );
        let server = crate::browser::start_server_with_stderr(
            &data.join("server"),
            &[
                "--database-url",
                &tdb.url,
                "--smtp-url",
                &url,
                "--smtp-password-file",
                password_file.to_str().unwrap(),
                "--smtp-ca-file",
                self.ca.to_str().unwrap(),
                "--mail-from",
                FROM,
            ],
            Stdio::from(std::fs::File::create(&stderr).unwrap()),
        );
        (server, stderr)
    }
}

impl Drop for AuthSmtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Mail queued in the database reaches a relay that requires STARTTLS and a password, sent by
/// the real binary configured as an operator would (`--smtp-url smtp://USER@HOST:PORT`,
/// `--smtp-password-file`, `--smtp-ca-file`).
async fn delivers_through_a_relay_that_wants_a_password(backend: Backend) {
    let Some(relay) = AuthSmtp::start() else {
        return;
    };
    let tdb = TestDb::new(backend).await;
    let data = tempfile::tempdir().unwrap();
    let (server, stderr) = relay.start_server(&tdb, data.path(), RELAY_PASSWORD);
    let to = unique_address("relay");
    let sent = waiting_mail(&to);
    queue(&tdb.db, &Clock::system(), &sent).await;
    let got = wait_for_mail_in(&relay.maildir, &to, 1, Duration::from_secs(30)).await;
    assert_eq!(got[0].subject(), sent.subject);
    assert_eq!(got[0].body.trim_end(), sent.body_text.trim_end());
    assert_eq!(got[0].mail_from, "safehand@school.sch.uk");
    let log = relay.log();
    assert!(
        log.contains(&format!("auth ok PLAIN {RELAY_USER}")),
        "{log}"
    );
    assert!(!log.contains("auth refused"), "{log}");
    // The worker records the delivery just after the relay accepted it.
    let mut row = outbox_row(&tdb.db, &to).await;
    for _ in 0..100 {
        if row.0 == "sent" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        row = outbox_row(&tdb.db, &to).await;
    }
    assert_eq!((row.0.as_str(), row.1, row.3), ("sent", 1, None));
    drop(server);
    let err = std::fs::read_to_string(stderr).unwrap();
    assert!(!err.contains("warning"), "{err}");
    assert!(!err.contains(RELAY_PASSWORD));
}

/// A wrong password is not a silent drop: the start-up check says so, and the mail stays
/// queued for a retry with an error that names the setting to fix (shown on the Mail page).
async fn a_wrong_smtp_password_is_reported_and_the_mail_waits(backend: Backend) {
    let Some(relay) = AuthSmtp::start() else {
        return;
    };
    let tdb = TestDb::new(backend).await;
    let data = tempfile::tempdir().unwrap();
    let wrong = "not the relay password";
    let (server, stderr) = relay.start_server(&tdb, data.path(), wrong);
    let to = unique_address("wrong-password");
    let before = Clock::system().now();
    queue(&tdb.db, &Clock::system(), &waiting_mail(&to)).await;
    let mut row = outbox_row(&tdb.db, &to).await;
    for _ in 0..300 {
        if row.1 > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        row = outbox_row(&tdb.db, &to).await;
    }
    drop(server);
    let (state, attempts, body, error) = row;
    assert_eq!((state.as_str(), attempts), ("queued", 1), "{error:?}");
    let error = error.expect("the failure is recorded");
    assert!(
        error.contains("refused Safehand's user name or password")
            && error.contains("--smtp-password-file")
            && error.contains("535"),
        "{error}"
    );
    assert!(!error.contains(wrong), "{error}");
    assert!(!body.is_empty(), "the body waits for the next attempt");
    let next: i64 = sqlx::query("select next_attempt_at from mail_outbox where recipient = $1")
        .bind(&to)
        .fetch_one(tdb.db.pool())
        .await
        .unwrap()
        .get("next_attempt_at");
    assert!(
        next >= before + 60,
        "retried a minute later ({next}, {before})"
    );
    assert!(got_no_mail(&relay.maildir, &to));
    assert!(relay
        .log()
        .contains(&format!("auth refused PLAIN {RELAY_USER}")));
    let err = std::fs::read_to_string(stderr).unwrap();
    assert!(
        err.contains("warning: the SMTP server cannot be used now")
            && err.contains("refused Safehand's user name or password"),
        "{err}"
    );
    assert!(!err.contains(wrong), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_over_starttls_with_a_private_ca() {
    tls_delivery(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_over_implicit_tls_with_a_private_ca() {
    tls_delivery(true).await;
}

/// The binary checks the mail settings at start-up and says what is wrong.
#[test]
fn bad_mail_settings_stop_the_server_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_safehand-server"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--smtp-url", "ftp://mail.example.org"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("must start with smtp://"), "{err}");
    let (code, err) = run(&["--smtp-url", "smtp://relay.example.org"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--mail-from"), "{err}");
    let (code, err) = run(&[
        "--smtp-url",
        "smtp://sam@relay.example.org",
        "--mail-from",
        "safehand@school.sch.uk",
        "--smtp-password-file",
        "/nonexistent/password",
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("cannot read --smtp-password-file"), "{err}");
    let (code, err) = run(&[
        "--smtp-url",
        "smtp://relay.example.org?tls=none",
        "--mail-from",
        "a@b.org",
    ]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("only allowed for a relay on this machine"),
        "{err}"
    );
}
