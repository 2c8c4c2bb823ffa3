//! `safehand-server admin ...` run as a binary, as an operator would, on SQLite and PostgreSQL.

use crate::common::*;
use std::process::{Command, Output};

fn server(data_dir: &std::path::Path, database_url: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_safehand-server"));
    cmd.arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("DATABASE_URL");
    if let Some(url) = database_url {
        cmd.arg("--database-url").arg(url);
    }
    cmd.output().expect("run safehand-server")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn admin_commands(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let tdb = match backend {
        Backend::Postgres => Some(TestDb::new(backend).await),
        Backend::Sqlite => None,
    };
    let url = tdb.as_ref().map(|t| t.url.clone());
    let url = url.as_deref();
    let o = server(dir.path(), url, &["admin", "migrate"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Migrations are up to date"));
    if backend == Backend::Sqlite {
        use std::os::unix::fs::PermissionsExt;
        let key = std::fs::metadata(dir.path().join("server.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(key & 0o777, 0o600, "server key is private");
        let db = std::fs::metadata(dir.path().join("safehand.db"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(db & 0o777, 0o600, "database file is private");
    }
    let o = server(
        dir.path(),
        url,
        &[
            "admin",
            "create-user",
            "--email",
            "Sam@School.sch.uk",
            "--name",
            "Sam Staff",
            "--role",
            "staff",
            "--role",
            "approver",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("Created Sam Staff (sam@school.sch.uk) with roles staff,approver"),
        "{out}"
    );
    assert!(out.contains("http://127.0.0.1:8080/enrol/"), "{out}");
    // The same email again is refused with a clear message.
    let o = server(
        dir.path(),
        url,
        &[
            "admin",
            "create-user",
            "--email",
            "sam@school.sch.uk",
            "--name",
            "Sam",
            "--role",
            "staff",
        ],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("already exists"), "{}", text(&o));
    // Bad role and unknown user.
    let o = server(
        dir.path(),
        url,
        &[
            "admin",
            "create-user",
            "--email",
            "x@y.sch.uk",
            "--name",
            "X",
            "--role",
            "wizard",
        ],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("invalid value 'wizard'"), "{}", text(&o));
    let o = server(
        dir.path(),
        url,
        &["admin", "disable-user", "nobody@school.sch.uk"],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("no account has the email address nobody@school.sch.uk"));
    for (cmd, expect) in [
        ("disable-user", "Disabled sam@school.sch.uk"),
        ("enable-user", "Enabled sam@school.sch.uk"),
        (
            "reset-totp",
            "Reset the authenticator for sam@school.sch.uk",
        ),
        ("reset-password", "/enrol/"),
    ] {
        let o = server(dir.path(), url, &["admin", cmd, "sam@school.sch.uk"]);
        assert!(o.status.success(), "{cmd}: {}", text(&o));
        assert!(text(&o).contains(expect), "{cmd}: {}", text(&o));
    }
    let o = server(dir.path(), url, &["admin", "audit-verify"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("The audit log is intact: 5 records"),
        "{}",
        text(&o)
    );
    // Tamper with record 2 (after removing the append-only guard) and verify again.
    let tamper_url = url
        .map(str::to_string)
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("safehand.db").display()));
    let db = safehand_server::db::Db::connect(&tamper_url).await.unwrap();
    let drop_guard = match backend {
        Backend::Sqlite => "drop trigger audit_log_no_delete",
        Backend::Postgres => "drop trigger audit_log_no_change on audit_log",
    };
    sqlx::query(drop_guard).execute(db.pool()).await.unwrap();
    sqlx::query("delete from audit_log where seq = 2")
        .execute(db.pool())
        .await
        .unwrap();
    db.close().await;
    let o = server(dir.path(), url, &["admin", "audit-verify"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("The audit log is BROKEN at record 2: record 2 is missing"),
        "{}",
        text(&o)
    );
}

async fn bad_configuration_is_refused_clearly(_backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    for (args, expect) in [
        (
            vec!["--public-url", "ftp://x.example", "admin", "migrate"],
            "--public-url",
        ),
        (
            vec!["--database-url", "mysql://x", "admin", "migrate"],
            "DATABASE_URL must start with sqlite:// or postgres://",
        ),
        (
            vec!["--session-idle-timeout", "soon", "admin", "migrate"],
            "not a duration",
        ),
        (
            vec!["--session-idle-timeout", "13h", "admin", "migrate"],
            "cannot be longer than --session-max-age",
        ),
        (
            vec!["--server-key", "abcd", "admin", "migrate"],
            "the server key must be 32 bytes",
        ),
    ] {
        let o = server(dir.path(), None, &args);
        assert!(!o.status.success(), "{args:?}");
        assert!(text(&o).contains(expect), "{args:?}: {}", text(&o));
    }
    let o = Command::new(env!("CARGO_BIN_EXE_safehand-server"))
        .args(["--data-dir"])
        .arg(dir.path())
        .args(["admin", "migrate"])
        .env("SAFEHAND_LISTN", "127.0.0.1:1")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        text(&o).contains("unknown setting SAFEHAND_LISTN"),
        "{}",
        text(&o)
    );
    // DATABASE_URL_FILE works, and the URL never appears in --help output of values.
    let url_file = dir.path().join("db-url");
    std::fs::write(
        &url_file,
        format!(
            "sqlite://{}?mode=rwc\n",
            dir.path().join("other.db").display()
        ),
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_safehand-server"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["admin", "migrate"])
        .env("DATABASE_URL_FILE", &url_file)
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(dir.path().join("other.db").exists());
}

crate::both_databases!(admin_commands, bad_configuration_is_refused_clearly);
