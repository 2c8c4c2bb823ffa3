//! `safehand send`, `transfers`, `undo`, `recall` and the recipient's `safehand fetch` against
//! the real `safehand-server`, on SQLite and PostgreSQL, its mail going through the real SMTP
//! server `tests/run` starts (aiosmtpd writing a maildir): a folder and a file sealed on the
//! sender's machine, uploaded as ciphertext, released after the prompt (and with `--yes`),
//! listed, fetched with the link and code from the delivered mail, recalled; a declined prompt
//! recalls the transfer; a release taken back inside the school's undo window is never mailed;
//! unknown, unverified and policy-refused contacts exit non-zero with the reason. The server's
//! blob store, database and the delivered mail must hold neither the plaintext nor the
//! passphrase, and no temporary file is left behind.
//!
//! The staff member, API token and contacts are seeded through the server library (what the
//! account and directory pages do); everything after that goes over HTTP through the CLI. The
//! SMTP server is shared by the tests running at the same time: the contacts that get mail
//! have addresses with a random token, and mail is matched by its envelope recipient.

// A failed step in a test should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use safehand_server::accounts::{self, Role};
use safehand_server::audit::Actor;
use safehand_server::contacts::{self, ContactInput, VerificationInput};
use safehand_server::db::Db;
use safehand_server::policy::Policy;
use safehand_tests::maildir::ReceivedMail;
use safehand_tests::workspace_binary;

use crate::server::{call, private_file, start_server_with, unique_token, Database, TestSmtp};

/// A staff member (also an admin) with an API token, two verified contacts at an allowed
/// domain (`dana` and `eli`), a verified contact outside the allowed domains, and an
/// unverified contact.
pub(crate) fn seed(
    rt: &tokio::runtime::Runtime,
    url: &str,
    data: &Path,
    dana: &str,
    eli: &str,
) -> String {
    rt.block_on(async {
        // The records go under the audit key the server will load from its data folder.
        fs::create_dir_all(data).unwrap();
        let db = Db::connect(url).await.unwrap();
        db.migrate().await.unwrap();
        let audit_key = safehand_server::audit::load_or_create_key(&data.join("audit.key"), &db)
            .await
            .unwrap();
        let db = db.with_audit_key(audit_key);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let op = Actor::operator();
        let (sam, _) = accounts::create(
            &db,
            now,
            &op,
            "sam.sender@school.sch.uk",
            "Sam Sender",
            &[Role::Staff, Role::Admin],
        )
        .await
        .unwrap();
        // An approver, for transfers that policy holds.
        accounts::create(
            &db,
            now,
            &op,
            "ann.approver@school.sch.uk",
            "Ann Approver",
            &[Role::Approver],
        )
        .await
        .unwrap();
        for (email, name, verified) in [
            (dana, "Dana Social", true),
            (eli, "Eli Early", true),
            ("pat.private@gmail.com", "Pat Private", true),
            ("uma.unverified@southshire.gov.uk", "Uma Unverified", false),
        ] {
            let contact = contacts::create(
                &db,
                now,
                &op,
                &ContactInput {
                    email: email.into(),
                    name: name.into(),
                    organisation: "Northshire Children's Services".into(),
                    job_title: "Social worker".into(),
                    phone: "01632 960 999".into(),
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
            if verified {
                contacts::verify(
                    &db,
                    now,
                    &op,
                    contact.id,
                    &VerificationInput {
                        phone_called: "01632 960 123".into(),
                        phone_source: "switchboard".into(),
                        note: "Called the council switchboard and asked for Dana.".into(),
                    },
                    &safehand_server::policy::Policy::default(),
                )
                .await
                .unwrap_or_else(|e| panic!("{e:?}"));
            }
        }
        contacts::add_domain(&db, now, &op, "*.gov.uk")
            .await
            .unwrap();
        // No undo window: the link mails go at once (the window has its own tests).
        let policy = Policy {
            undo_window_secs: 0,
            ..Policy::default()
        };
        safehand_server::policy::save(&db, now, &op, &policy)
            .await
            .unwrap();
        let mut tx = db.begin().await.unwrap();
        let (token, _) = safehand_server::tokens::create(
            &mut tx,
            now,
            sam.id,
            "cli",
            &[Role::Staff, Role::Admin],
            1,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        db.close().await;
        token
    })
}

pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs the CLI with `stdin` typed in, temporary files in `tmp`.
pub(crate) fn safehand(tmp: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(workspace_binary("safehand"))
        .args(args)
        .env("TMPDIR", tmp)
        .env_remove("SAFEHAND_SERVER")
        .env_remove("SAFEHAND_TOKEN_FILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The passphrase `send` printed (the indented line after "Passphrase").
fn passphrase_of(out: &str) -> String {
    let mut lines = out.lines().skip_while(|l| !l.starts_with("Passphrase"));
    lines.next().expect("send printed a passphrase");
    let p = lines
        .find(|l| !l.trim().is_empty())
        .expect("the passphrase line")
        .trim()
        .to_string();
    assert_eq!(p.split('-').count(), 7, "seven generated words: {p}");
    p
}

pub(crate) fn transfer_id(out: &str) -> i64 {
    out.strip_prefix("Transfer ")
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("send printed its transfer number: {out}"))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every file under `dir` (recursively).
pub(crate) fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                found.extend(files_under(&p));
            } else {
                found.push(p);
            }
        }
    }
    found
}

/// The link mails among `mails` (each transfer's "A secure file is waiting for you").
fn link_mails(mails: &[ReceivedMail]) -> Vec<&ReceivedMail> {
    mails
        .iter()
        .filter(|m| m.subject() == "A secure file is waiting for you")
        .collect()
}

fn send_list_recall(postgres: bool) {
    let Some(smtp) = TestSmtp::from_env() else {
        return;
    };
    let tag = unique_token();
    let dana = format!("dana.social.{tag}@northshire.gov.uk");
    let eli = format!("eli.early.{tag}@northshire.gov.uk");
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let database = Database::new(&rt, postgres, dir.path(), "transfers_cli");
    let data = dir.path().join("data");
    let token = seed(&rt, &database.url, &data, &dana, &eli);
    // A data folder (and blob folder) made by hand, open to everyone as `mkdir` makes them: the
    // server makes them private.
    {
        use std::os::unix::fs::PermissionsExt;
        for d in [data.clone(), data.join("blobs")] {
            fs::create_dir_all(&d).unwrap();
            fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    let server = start_server_with(&data, &database.url, &smtp.server_args());
    let base = server.base.clone();
    let token_file = dir.path().join("token");
    private_file(&token_file, &format!("{token}\n"));
    let token_arg = token_file.to_str().unwrap();
    let tmp = dir.path().join("tmp");
    fs::create_dir(&tmp).unwrap();
    // The sender's commands, against this server with the seeded token.
    let sender = |args: &[&str], stdin: &str| {
        let mut all = args.to_vec();
        all.extend(["--server", base.as_str(), "--token-file", token_arg]);
        safehand(&tmp, &all, stdin)
    };

    // What is sent: a folder with two files and a nested one, and a single file. Markers that
    // must never reach the server in clear.
    let marker_folder = b"PUPIL-RECORD-7f3a9c Jamie Example, date of birth 2014-03-09".repeat(200);
    let marker_file = b"REFERRAL-41b2d8 concerns raised on 2026-11-30".repeat(300);
    let folder = dir.path().join("referral");
    fs::create_dir_all(folder.join("notes")).unwrap();
    fs::write(folder.join("chronology.txt"), &marker_folder).unwrap();
    fs::write(folder.join("notes").join("meeting.txt"), b"minutes\n").unwrap();
    let single = dir.path().join("consent.pdf");
    fs::write(&single, &marker_file).unwrap();

    // 1. A folder and a file, confirmed at the prompt; the domain typed in another case.
    let out = sender(
        &[
            "send",
            "--to",
            &format!("dana.social.{tag}@NorthShire.GOV.uk"),
            "--purpose",
            "Child protection referral",
            folder.to_str().unwrap(),
            single.to_str().unwrap(),
        ],
        "yes\n",
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    let first = transfer_id(&text);
    let passphrase1 = passphrase_of(&text);
    assert!(
        text.contains(
            "Phone Dana Social on 01632 960 123 (the number checked when they were verified)"
        ),
        "{text}"
    );
    assert!(text.contains("Released:"), "{text}");
    assert!(stderr(&out).contains("Type yes"), "{}", stderr(&out));
    let (status, t) = call(
        "GET",
        &format!("{base}/api/v1/transfers/{first}"),
        &token,
        None,
    );
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["state"], "released", "{t}");
    assert_eq!(t["sealed_on_server"], false, "{t}");
    assert_eq!(t["classification"], "OFFICIAL-SENSITIVE", "{t}");
    assert_eq!(t["recipient_email"], dana.as_str(), "{t}");
    assert_eq!(t["purpose"], "Child protection referral", "{t}");

    // 2. One file with every option, released by --yes without a prompt.
    let out = sender(
        &[
            "send",
            "--to",
            &dana,
            "--purpose",
            "Consent form",
            "--classification",
            "official",
            "--expires",
            "3",
            "--max-downloads",
            "1",
            "--yes",
            single.to_str().unwrap(),
        ],
        "",
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    let second = transfer_id(&text);
    let passphrase2 = passphrase_of(&text);
    assert_ne!(
        passphrase1, passphrase2,
        "each transfer has its own passphrase"
    );
    assert!(!stderr(&out).contains("Type yes"), "{}", stderr(&out));
    let (_, t) = call(
        "GET",
        &format!("{base}/api/v1/transfers/{second}"),
        &token,
        None,
    );
    assert_eq!(t["state"], "released", "{t}");
    assert_eq!(t["classification"], "OFFICIAL", "{t}");
    assert_eq!(t["download_limit"], 1, "{t}");

    // 3. Not confirmed at the prompt: recalled, nothing mailed, exit 1.
    let out = sender(
        &[
            "send",
            "--to",
            &dana,
            "--purpose",
            "Changed my mind",
            single.to_str().unwrap(),
        ],
        "no\n",
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let declined = transfer_id(&stdout(&out));
    assert!(
        stderr(&out).contains("not confirmed") && stderr(&out).contains("nothing was sent"),
        "{}",
        stderr(&out)
    );
    let (_, t) = call(
        "GET",
        &format!("{base}/api/v1/transfers/{declined}"),
        &token,
        None,
    );
    assert_eq!(t["state"], "recalled", "{t}");
    assert!(t["released_at"].is_null(), "{t}");

    // 4. Refusals: exit 1 with the reason, and no transfer is created.
    let refused = |to: &str| {
        sender(
            &[
                "send",
                "--to",
                to,
                "--purpose",
                "Referral",
                "--yes",
                single.to_str().unwrap(),
            ],
            "",
        )
    };
    let out = refused("nobody@northshire.gov.uk");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("nobody@northshire.gov.uk is not in the contacts directory"),
        "{}",
        stderr(&out)
    );
    let out = refused("uma.unverified@southshire.gov.uk");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("the server refused the transfer: Uma Unverified is not verified"),
        "{}",
        stderr(&out)
    );
    // The server's own reason: the domain is not in the allowed list.
    let out = refused("pat.private@gmail.com");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "the server refused the transfer: pat.private@gmail.com is not in an allowed recipient domain"
        ) && stderr(&out).contains("Nothing was sent"),
        "{}",
        stderr(&out)
    );
    assert!(!stdout(&out).contains("Passphrase"), "{}", stdout(&out));
    // The token is checked before anything else.
    let loose = dir.path().join("loose-token");
    fs::write(&loose, format!("{token}\n")).unwrap();
    let out = safehand(
        &tmp,
        &[
            "transfers",
            "--server",
            &base,
            "--token-file",
            loose.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));

    // 5. The list, through the environment variables.
    let out = Command::new(workspace_binary("safehand"))
        .arg("transfers")
        .env("SAFEHAND_SERVER", &base)
        .env("SAFEHAND_TOKEN_FILE", &token_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let list = stdout(&out);
    assert!(list.starts_with("ID "), "{list}");
    for (id, state) in [
        (first, "released"),
        (second, "released"),
        (declined, "recalled"),
    ] {
        assert!(
            list.lines().any(|l| l.starts_with(&format!("{id} "))
                && l.contains(&dana)
                && l.contains(state)),
            "transfer {id} {state} in:\n{list}"
        );
    }
    assert_eq!(list.lines().count(), 4, "{list}");

    // 5b. The undo window: with 60 s, `send --yes` queues the link mail; `undo` inside the
    // window cancels it and seals the transfer again, so the link is never emailed.
    let (status, mut policy) = call("GET", &format!("{base}/api/v1/policy"), &token, None);
    assert_eq!(status, 200, "{policy}");
    policy["undo_window_secs"] = 60.into();
    let (status, policy) = call(
        "PUT",
        &format!("{base}/api/v1/policy"),
        &token,
        Some(policy),
    );
    assert_eq!(status, 200, "{policy}");
    assert_eq!(policy["undo_window_secs"], 60, "{policy}");
    // `send --yes` of the single file to Eli; its output.
    let send_to_eli = |purpose: &str| {
        let out = sender(
            &[
                "send",
                "--to",
                &eli,
                "--purpose",
                purpose,
                "--yes",
                single.to_str().unwrap(),
            ],
            "",
        );
        assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
        stdout(&out)
    };
    let text = send_to_eli("Sent to the wrong person");
    let undone = transfer_id(&text);
    let passphrase3 = passphrase_of(&text);
    assert!(
        text.contains("Eli Early is emailed the link in ")
            && text.contains(&format!("`safehand undo {undone}` takes it back")),
        "{text}"
    );
    let undo = || sender(&["undo", &undone.to_string()], "");
    let out = undo();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains(&format!(
            "Taken back: the link was not emailed to {eli}. Transfer {undone} is sealed again"
        )) && stdout(&out).contains(&format!("`safehand recall {undone}`")),
        "{}",
        stdout(&out)
    );
    let (_, t) = call(
        "GET",
        &format!("{base}/api/v1/transfers/{undone}"),
        &token,
        None,
    );
    assert_eq!(t["state"], "sealed", "{t}");
    assert!(t["released_at"].is_null(), "{t}");
    // The queued link mail is cancelled: the worker never sends a cancelled mail.
    let eli_outbox: Vec<String> = rt.block_on(async {
        let db = Db::connect(&database.url).await.unwrap();
        let recent = safehand_server::mail::recent(&db, 100).await.unwrap();
        db.close().await;
        recent
            .into_iter()
            .filter(|m| m.recipient == eli)
            .map(|m| m.state)
            .collect()
    });
    assert_eq!(eli_outbox, ["cancelled"], "the link mail to {eli}");
    // Undoing twice says why not, and nothing changes.
    let out = undo();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains(&format!(
            "the server refused to undo transfer {undone}: Only a transfer that has just been sent can be undone."
        )) && stderr(&out).contains(&format!("`safehand recall {undone}` ends it")),
        "{}",
        stderr(&out)
    );
    // `release` sends it again: only once the sender types yes, and never twice.
    let release = |answer: &str| sender(&["release", &undone.to_string()], answer);
    let out = release("no\n");
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("Type yes once you are ready to phone")
            && stderr(&out).contains(&format!(
                "not confirmed: nothing was sent. Transfer {undone} is still sealed"
            )),
        "{}",
        stderr(&out)
    );
    let state_of = |id: i64| {
        call(
            "GET",
            &format!("{base}/api/v1/transfers/{id}"),
            &token,
            None,
        )
        .1["state"]
            .clone()
    };
    assert_eq!(state_of(undone), "sealed");
    let out = release("yes\n");
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains(&format!("Released: {eli} is emailed the link in "))
            && stdout(&out).contains(&format!("`safehand undo {undone}` takes it back")),
        "{}",
        stdout(&out)
    );
    assert_eq!(state_of(undone), "released");
    let out = release("yes\n");
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains(&format!(
            "transfer {undone} to {eli} cannot be sent again: it is released"
        )),
        "{}",
        stderr(&out)
    );
    // Taken back again inside the new window: the transfer is sealed and no link goes.
    let out = undo();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(state_of(undone), "sealed");
    // Without a window (the second transfer was sent with none) it is too late at once.
    let out = sender(&["undo", &second.to_string()], "");
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains(&format!(
            "the server refused to undo transfer {second}: Too late to undo: the undo window has closed and the link has been emailed."
        )),
        "{}",
        stderr(&out)
    );
    let (_, t) = call(
        "GET",
        &format!("{base}/api/v1/transfers/{second}"),
        &token,
        None,
    );
    assert_eq!(t["state"], "released", "{t}");
    // The taken-back transfer can still be recalled.
    let out = sender(&["recall", &undone.to_string()], "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("Transfer {undone} to {eli} is recalled")),
        "{}",
        stdout(&out)
    );

    // 5c. Approval: with a policy rule on, `send --yes` leaves the transfer waiting for an
    // approver and says so; nothing is emailed to the recipient.
    let (_, mut policy) = call("GET", &format!("{base}/api/v1/policy"), &token, None);
    policy["approval_always"] = true.into();
    let (status, policy) = call(
        "PUT",
        &format!("{base}/api/v1/policy"),
        &token,
        Some(policy),
    );
    assert_eq!(status, 200, "{policy}");
    let text = send_to_eli("Needs a second pair of eyes");
    let held = transfer_id(&text);
    assert!(
        text.contains(
            "Waiting for approval: school policy asks an approver to check this transfer first"
        ) && text.contains("Nothing has been emailed to Eli Early yet"),
        "{text}"
    );
    let (_, t) = call(
        "GET",
        &format!("{base}/api/v1/transfers/{held}"),
        &token,
        None,
    );
    assert_eq!(t["state"], "held", "{t}");
    assert_eq!(t["approval_reasons"][0], "always", "{t}");
    let out = sender(&["recall", &held.to_string()], "");
    assert!(out.status.success(), "{}", stderr(&out));
    let (_, mut policy) = call("GET", &format!("{base}/api/v1/policy"), &token, None);
    policy["approval_always"] = false.into();
    let (status, policy) = call(
        "PUT",
        &format!("{base}/api/v1/policy"),
        &token,
        Some(policy),
    );
    assert_eq!(status, 200, "{policy}");

    // 6. What the server holds: ciphertext only. Blobs, database and the delivered mail are
    // searched for the plaintext and the passphrases.
    let blobs = files_under(&data.join("blobs"));
    assert!(!blobs.is_empty(), "the payloads are in {}", data.display());
    // Everything the server keeps is for the service account only: folders 0700, files
    // 0600 (blobs, database, WAL, key), whatever umask the server was started with.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700, "the data folder");
        assert_eq!(mode(&data.join("blobs")), 0o700, "the blob folder");
        for f in files_under(&data) {
            assert_eq!(mode(&f) & 0o077, 0, "{} is open to others", f.display());
        }
        for b in &blobs {
            assert_eq!(mode(b), 0o600, "{}", b.display());
        }
    }
    // The link mails went through the SMTP server: one per released transfer, none for the
    // declined one, and nothing was written to the outbox folder instead.
    smtp.wait_for(&dana, "2 link mails", |mails| {
        (link_mails(mails).len() >= 2).then_some(())
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let delivered = smtp.mail_for(&dana);
    assert_eq!(
        link_mails(&delivered).len(),
        2,
        "one link mail per released transfer, none for the declined one"
    );
    assert!(
        !data.join("outbox").exists(),
        "mail went to the outbox folder"
    );
    let mut stored = files_under(&data);
    stored.extend(files_under(dir.path()).into_iter().filter(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("safehand.db"))
    }));
    if !postgres {
        assert!(stored.iter().any(|p| p.ends_with("safehand.db")));
    }
    let needles = [
        ("folder plaintext", &b"PUPIL-RECORD-7f3a9c"[..]),
        ("file plaintext", &b"REFERRAL-41b2d8"[..]),
        ("passphrase 1", passphrase1.as_bytes()),
        ("passphrase 2", passphrase2.as_bytes()),
        ("passphrase 3", passphrase3.as_bytes()),
    ];
    for path in &stored {
        let bytes = fs::read(path).unwrap();
        for (what, needle) in needles {
            assert!(
                !contains(&bytes, needle),
                "{what} found in {}",
                path.display()
            );
        }
    }
    for mail in &delivered {
        for (what, needle) in needles {
            assert!(
                !contains(mail.raw.as_bytes(), needle) && !contains(mail.body.as_bytes(), needle),
                "{what} found in the mail \"{}\"",
                mail.subject()
            );
        }
    }
    if postgres {
        // PostgreSQL's files are not ours to read: search every text column we can see.
        let dump = rt.block_on(async {
            let db = Db::connect(&database.url).await.unwrap();
            let mut all = String::new();
            for table in ["transfers", "transfer_files", "mail_outbox", "audit_log"] {
                let q = format!("select t::text from {table} t");
                if let Ok(rows) = sqlx::query_scalar::<_, String>(&q)
                    .fetch_all(db.pool())
                    .await
                {
                    all.extend(rows);
                }
            }
            db.close().await;
            all
        });
        assert!(!dump.is_empty());
        for (what, needle) in needles {
            assert!(
                !contains(dump.as_bytes(), needle),
                "{what} found in PostgreSQL"
            );
        }
    }

    // 6b. The recipient fetches the first transfer from the command line: the link from its
    // mail (the one that expires on the policy's default, 7 days; the second expires in 3),
    // the code from the mail that `fetch` asks for, the passphrase typed on their machine.
    let (_, t) = call(
        "GET",
        &format!("{base}/api/v1/transfers/{first}"),
        &token,
        None,
    );
    let expires = t["expires_at"].as_str().unwrap();
    let expires = format!(
        "The link stops working on {} UTC.",
        expires[..16].replace('T', " ")
    );
    let link = link_mails(&delivered)
        .iter()
        .find(|m| m.body.contains(&expires))
        .and_then(|m| {
            m.body
                .split_whitespace()
                .find(|w| w.contains("/r/"))
                .map(str::to_string)
        })
        .unwrap_or_else(|| panic!("a link mail saying \"{expires}\""));
    assert!(link.starts_with(&format!("{base}/r/")), "{link}");
    let received = dir.path().join("received");
    let pass_file = dir.path().join("pass1");
    private_file(&pass_file, &format!("{passphrase1}\n"));
    let mut child = Command::new(workspace_binary("safehand"))
        .args(["fetch", &link, "-C"])
        .arg(&received)
        .arg("--passphrase-file")
        .arg(&pass_file)
        .env("TMPDIR", &tmp)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let code = smtp.wait_for(&dana, "code mail", |mails| {
        mails.iter().find_map(|m| {
            m.body
                .split("code is: ")
                .nth(1)
                .map(|rest| rest.chars().take(8).collect::<String>())
        })
    });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{code}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(
        fs::read(received.join("referral").join("chronology.txt")).unwrap(),
        marker_folder
    );
    assert_eq!(
        fs::read(received.join("referral").join("notes").join("meeting.txt")).unwrap(),
        b"minutes\n"
    );
    assert_eq!(fs::read(received.join("consent.pdf")).unwrap(), marker_file);
    let (_, t) = call(
        "GET",
        &format!("{base}/api/v1/transfers/{first}"),
        &token,
        None,
    );
    assert_eq!(t["downloads"], 1, "the fetch counts as a download: {t}");
    // The same link with a wrong code is refused with the server's reason.
    let out = safehand(
        &tmp,
        &["fetch", &link, "-C", received.to_str().unwrap()],
        "00000000\n",
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the server refused to accept the code"),
        "{}",
        stderr(&out)
    );

    // 7. Recall the first: the payload is destroyed and the list says so.
    let out = sender(&["recall", &first.to_string()], "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("Transfer {first} to {dana} is recalled")),
        "{}",
        stdout(&out)
    );
    let (_, t) = call(
        "GET",
        &format!("{base}/api/v1/transfers/{first}"),
        &token,
        None,
    );
    assert_eq!(t["state"], "recalled", "{t}");
    assert_eq!(files_under(&data.join("blobs")).len(), blobs.len() - 1);
    // Recalling again says why not.
    let out = sender(&["recall", &first.to_string()], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already ended"), "{}", stderr(&out));

    // The sealed payloads lived only in private temporary files, all removed.
    assert_eq!(files_under(&tmp), Vec::<PathBuf>::new());
    // The link mail that was taken back never reached Eli (nor anything else).
    assert!(smtp.mail_for(&eli).is_empty(), "mail reached {eli}");

    drop(server);
    database.drop_with(&rt);
}

#[test]
fn send_list_and_recall_from_the_cli_on_sqlite() {
    send_list_recall(false);
}

#[test]
fn send_list_and_recall_from_the_cli_on_postgres() {
    send_list_recall(true);
}
