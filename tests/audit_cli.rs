//! The audit log checked away from the server: `safehand-server admin audit-export` writes the
//! whole log with a signed head, and `safehand audit-verify` (another computer, the public key
//! noted from the audit page) accepts it, and refuses a file whose records were changed (with
//! every hash recomputed), another key, and the export of a database whose records were
//! rewritten by someone without the audit key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

use safehand_crypto::audit_chain::{record_hash, Fields, GENESIS};
use safehand_tests::workspace_binary;

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(workspace_binary(bin))
        .args(args)
        .env_remove("DATABASE_URL")
        .output()
        .unwrap_or_else(|e| panic!("run {bin}: {e}"))
}

/// seq, at, actor_id, actor, action, subject, address, details
type AuditRow = (
    i64,
    i64,
    Option<i64>,
    String,
    String,
    String,
    String,
    String,
);

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn admin(data: &Path, args: &[&str]) -> Output {
    let mut all = vec!["--data-dir", data.to_str().unwrap(), "admin"];
    all.extend_from_slice(args);
    run("safehand-server", &all)
}

/// Recomputes every hash of an export (after its records were edited), as a forger would.
fn rehash(export: &mut serde_json::Value) {
    let mut prev = GENESIS.to_string();
    for r in export["records"].as_array_mut().unwrap() {
        r["prev_hash"] = prev.clone().into();
        let hash = record_hash(&Fields {
            seq: r["seq"].as_i64().unwrap(),
            at: r["at_unix"].as_i64().unwrap(),
            actor_id: r["actor_id"].as_i64(),
            actor: r["actor"].as_str().unwrap(),
            action: r["action"].as_str().unwrap(),
            subject: r["subject"].as_str().unwrap(),
            address: r["address"].as_str().unwrap(),
            details: r["details_text"].as_str().unwrap(),
            prev_hash: &prev,
        });
        r["hash"] = hash.clone().into();
        prev = hash;
    }
}

#[test]
fn exported_audit_log_is_checked_offline() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for email in ["dpo@school.sch.uk", "sam@school.sch.uk"] {
        let o = admin(
            &data,
            &[
                "create-user",
                "--email",
                email,
                "--name",
                "Someone",
                "--role",
                "staff",
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
    }
    assert!(admin(&data, &["disable-user", "sam@school.sch.uk"])
        .status
        .success());
    // A second instance on the same database with a data folder (and so an audit key) of
    // its own is refused, with what to do, and writes nothing.
    let other_data = dir.path().join("other-instance");
    let url = format!("sqlite://{}", data.join("safehand.db").display());
    let o = run(
        "safehand-server",
        &[
            "--data-dir",
            other_data.to_str().unwrap(),
            "--database-url",
            &url,
            "admin",
            "disable-user",
            "dpo@school.sch.uk",
        ],
    );
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("copy audit.key from the data folder"),
        "{}",
        text(&o)
    );
    assert!(!other_data.join("audit.key").exists());
    // ... and so is one given a key of its own.
    std::fs::create_dir_all(&other_data).unwrap();
    let (_, other_text) = safehand_crypto::audit_chain::AuditKey::generate(1);
    std::fs::write(other_data.join("audit.key"), other_text.as_bytes()).unwrap();
    let o = run(
        "safehand-server",
        &[
            "--data-dir",
            other_data.to_str().unwrap(),
            "--database-url",
            &url,
            "admin",
            "disable-user",
            "dpo@school.sch.uk",
        ],
    );
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("is not the audit key this database's log is kept under"),
        "{}",
        text(&o)
    );
    // The audit key is private, beside the server key.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.join("audit.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let export = dir.path().join("export.json");
    let o = admin(&data, &["audit-export", export.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let key = text(&o)
        .split_whitespace()
        .find(|w| w.starts_with("ed25519:"))
        .expect("the public key in the output")
        .trim_end_matches('.')
        .to_string();
    let mode = std::fs::metadata(&export).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // An existing file is not replaced.
    let again = admin(&data, &["audit-export", export.to_str().unwrap()]);
    assert!(!again.status.success());

    let verify = |file: &Path, key: Option<&str>| {
        let mut args = vec!["audit-verify", file.to_str().unwrap()];
        if let Some(k) = key {
            args.extend(["--public-key", k]);
        }
        run("safehand", &args)
    };
    let o = verify(&export, Some(&key));
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("is intact: 3 records"), "{}", text(&o));
    // The key can come from a file too; without one, the output says to compare it.
    let key_file = dir.path().join("audit-key.txt");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    assert!(verify(&export, Some(key_file.to_str().unwrap()))
        .status
        .success());
    let o = verify(&export, None);
    assert!(o.status.success());
    assert!(text(&o).contains("compare the key above"), "{}", text(&o));
    // Another key: refused.
    let other = run(
        "safehand",
        &[
            "cert",
            "key",
            "--key",
            dir.path().join("other.key").to_str().unwrap(),
        ],
    );
    let other_key = String::from_utf8_lossy(&other.stdout).trim().to_string();
    let o = verify(&export, Some(&other_key));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("not by the key you gave"), "{}", text(&o));
    // A record changed in the file, every hash recomputed: the signed head gives it away.
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&export).unwrap()).unwrap();
    doc["records"][1]["subject"] = "someone-else@school.sch.uk".into();
    rehash(&mut doc);
    let forged = dir.path().join("forged.json");
    std::fs::write(&forged, serde_json::to_vec(&doc).unwrap()).unwrap();
    let o = verify(&forged, Some(&key));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("NOT intact"), "{}", text(&o));
    // A record removed from the end (with the last signed head): the signatures left do
    // not cover the end.
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&export).unwrap()).unwrap();
    doc["records"].as_array_mut().unwrap().pop();
    std::fs::write(&forged, serde_json::to_vec(&doc).unwrap()).unwrap();
    assert_eq!(verify(&forged, Some(&key)).status.code(), Some(1));

    // Someone with the database but not the audit key rewrites record 2 and recomputes
    // every unkeyed hash (and the head): the server's check and the next export catch it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = format!("sqlite://{}", data.join("safehand.db").display());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        for q in [
            "drop trigger audit_log_no_update",
            "drop trigger audit_signatures_no_delete",
            "delete from audit_signatures",
            "update audit_log set subject = 'someone-else@school.sch.uk' where seq = 2",
        ] {
            sqlx::query(q).execute(&pool).await.unwrap();
        }
        let rows: Vec<AuditRow> =
            sqlx::query_as(
                "select seq, at, actor_id, actor, action, subject, address, details from audit_log order by seq",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
        let mut prev = GENESIS.to_string();
        for (seq, at, actor_id, actor, action, subject, address, details) in rows {
            let hash = record_hash(&Fields {
                seq,
                at,
                actor_id,
                actor: &actor,
                action: &action,
                subject: &subject,
                address: &address,
                details: &details,
                prev_hash: &prev,
            });
            sqlx::query("update audit_log set prev_hash = 'x' || seq where seq = $1")
                .bind(seq)
                .execute(&pool)
                .await
                .unwrap();
            sqlx::query("update audit_log set prev_hash = $1, hash = $2 where seq = $3")
                .bind(&prev)
                .bind(&hash)
                .bind(seq)
                .execute(&pool)
                .await
                .unwrap();
            prev = hash;
        }
        sqlx::query("update audit_head set hash = $1 where id = 1")
            .bind(&prev)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    });
    let o = admin(&data, &["audit-verify"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("BROKEN at record 2: its MAC is wrong"),
        "{}",
        text(&o)
    );
    let second = dir.path().join("second.json");
    let o = admin(&data, &["audit-export", second.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("NOT signed"), "{}", text(&o));
    let o = verify(&second, Some(&key));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("This export is not signed"),
        "{}",
        text(&o)
    );
}
