//! From the wiping computer to the disposal register, on SQLite and PostgreSQL: `safehand
//! wipe` of a loop device with `--report-to` against the running `safehand-server`, the
//! certificate attached to the asset's storage medium, a disposal refused until an admin
//! authorises it, then completed with the certificate as its evidence. Also: an upload that
//! fails leaves the certificate on disk with the command to upload it later.
//!
//! Accounts, API tokens and the technician's registered key are seeded through the server
//! library (what the account pages do); everything after that goes over HTTP.

use serde_json::json;

use super::*;
use crate::server::{call, private_file, start_server, Database};

use safehand_server::accounts::{self, Role};
use safehand_server::audit::Actor;
use safehand_server::db::Db;

/// Seeds a technician with a registered key and an admin; returns their API tokens.
fn seed(
    rt: &tokio::runtime::Runtime,
    url: &str,
    data: &std::path::Path,
    public_key: &str,
) -> (String, String) {
    rt.block_on(async {
        // The records go under the audit key the server will load from its data folder.
        std::fs::create_dir_all(data).unwrap();
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
        let (tess, _) = accounts::create(
            &db,
            now,
            &op,
            "tess@school.sch.uk",
            "Tess Tech",
            &[Role::Technician],
        )
        .await
        .unwrap();
        let (ada, _) = accounts::create(
            &db,
            now,
            &op,
            "ada@school.sch.uk",
            "Ada Admin",
            &[Role::Admin],
        )
        .await
        .unwrap();
        safehand_server::register::certificates::add_key(
            &db,
            now,
            &op,
            &tess,
            public_key,
            "wipe station",
        )
        .await
        .unwrap();
        let mut tx = db.begin().await.unwrap();
        let (tess_token, _) = safehand_server::tokens::create(
            &mut tx,
            now,
            tess.id,
            "wipe station",
            &[Role::Technician],
            1,
        )
        .await
        .unwrap();
        let (ada_token, _) =
            safehand_server::tokens::create(&mut tx, now, ada.id, "e2e", &[Role::Admin], 1)
                .await
                .unwrap();
        tx.commit().await.unwrap();
        db.close().await;
        (tess_token, ada_token)
    })
}

fn wipe_to_completed_disposal(postgres: bool) {
    let Some(_lock) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let key = dir.path().join("signing.key");
    let public_key = run_ok(
        Command::new(workspace_binary("safehand"))
            .args(["cert", "key", "--key"])
            .arg(&key),
    )
    .trim()
    .to_string();
    let database = Database::new(&rt, postgres, dir.path(), "register");
    let (tess_token, ada_token) = seed(&rt, &database.url, &dir.path().join("data"), &public_key);
    let server = start_server(&dir.path().join("data"), &database.url);
    let base = server.base.clone();
    let token_file = dir.path().join("token");
    private_file(&token_file, &format!("{tess_token}\n"));

    // The asset, with the storage medium about to be wiped.
    let (status, asset) = call(
        "POST",
        &format!("{base}/api/v1/assets"),
        &tess_token,
        Some(json!({
            "tag": "LT-E2E", "kind": "laptop", "make": "Dell", "model": "Latitude", "personal_data": "yes",
            "storage_media": "LOOPDISK-1 (64 MiB test disk)",
        })),
    );
    assert_eq!(status, 201, "{asset}");
    let medium_id = asset["storage_media"][0]["id"].as_i64().unwrap();

    // A token file others can read is refused before anything is wiped.
    let dev = LoopDevice::new(&dir.path().join("disk.img"), 64 << 20);
    let loose = dir.path().join("loose-token");
    fs::write(&loose, &tess_token).unwrap();
    let out = run(Command::new(workspace_binary("safehand"))
        .args([
            "wipe",
            &dev.path,
            "--method",
            "zero",
            "--yes",
            "--expect-serial",
            &dev.path,
            "--report-to",
            &base,
            "--token-file",
        ])
        .arg(&loose)
        .arg("--key")
        .arg(&key)
        .arg("--certificate")
        .arg(dir.path().join("never.json")));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
    assert!(!dir.path().join("never.json").exists());

    // Wipe and report.
    fill_marker(&dev.path, b"PUPIL-RECORD-MARKER", 100);
    let cert_path = dir.path().join("loop.json");
    let out = run(Command::new(workspace_binary("safehand"))
        .args([
            "wipe",
            &dev.path,
            "--method",
            "nist-clear",
            "--yes",
            "--expect-serial",
            &dev.path,
            "--asset-tag",
            "LT-E2E",
            "--operator",
            "Tess Tech",
            "--report-to",
            &base,
            "--token-file",
        ])
        .arg(&token_file)
        .arg("--key")
        .arg(&key)
        .arg("--certificate")
        .arg(&cert_path));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stderr(&out).contains(&format!("certificate uploaded to {base}")),
        "{}",
        stderr(&out)
    );
    // A loop device reports no serial: the server stored it and asks which asset it is.
    assert!(
        stdout(&out).contains("choose which asset it belongs to"),
        "{}",
        stdout(&out)
    );
    let cert_url = stdout(&out)
        .lines()
        .find(|l| l.contains("/register/certificates/"))
        .unwrap()
        .trim()
        .to_string();
    let cert_id: i64 = cert_url.rsplit('/').next().unwrap().parse().unwrap();
    assert!(!contains(&dev.read_all(), b"PUPIL-RECORD-MARKER"));
    let local = certificate(&cert_path);
    assert_eq!(local["result"], "ERASED");

    let (status, body) = call(
        "POST",
        &format!("{base}/api/v1/certificates/{cert_id}/assign"),
        &tess_token,
        Some(json!({ "medium_id": medium_id })),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["evidence"], json!(true));
    let (_, stored) = call(
        "GET",
        &format!("{base}/api/v1/certificates/{cert_id}"),
        &tess_token,
        None,
    );
    assert_eq!(stored["verifies"], json!(true));
    assert_eq!(stored["certificate_id"], local["certificate_id"]);

    // The disposal record: refused until an admin authorises it, then completed.
    let (status, disposal) = call(
        "POST",
        &format!("{base}/api/v1/disposals"),
        &tess_token,
        Some(json!({
            "asset_tag": "LT-E2E", "disposal_date": "2025-01-31", "method": "waste-recycling",
            "receiver_name": "Green IT Recycling Ltd", "receiver_kind": "organisation",
            "receiver_registration": "CBDU123456", "licence_checked": "yes",
        })),
    );
    assert_eq!(status, 201, "{disposal}");
    let id = disposal["id"].as_i64().unwrap();
    let (status, body) = call(
        "POST",
        &format!("{base}/api/v1/disposals/{id}/complete"),
        &tess_token,
        None,
    );
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("must authorise it"),
        "{body}"
    );
    let (status, body) = call(
        "POST",
        &format!("{base}/api/v1/disposals/{id}/authorise"),
        &tess_token,
        None,
    );
    assert_eq!(status, 403, "a technician cannot authorise: {body}");
    let (status, body) = call(
        "POST",
        &format!("{base}/api/v1/disposals/{id}/authorise"),
        &ada_token,
        None,
    );
    assert_eq!(status, 200, "{body}");
    let (status, done) = call(
        "POST",
        &format!("{base}/api/v1/disposals/{id}/complete"),
        &tess_token,
        None,
    );
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["state"], "completed");
    let evidence = done["evidence"][0]["evidence"].as_str().unwrap();
    assert!(
        evidence.contains(local["certificate_id"].as_str().unwrap()) && evidence.contains("ERASED"),
        "{evidence}"
    );
    let (_, asset) = call(
        "GET",
        &format!("{base}/api/v1/assets/LT-E2E"),
        &tess_token,
        None,
    );
    assert_eq!(asset["status"], "disposed");

    // A failed upload never loses the certificate: it is on disk, and the message says how
    // to upload it later; doing so works.
    let free_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = format!("http://127.0.0.1:{free_port}");
    let dev2 = LoopDevice::new(&dir.path().join("disk2.img"), 16 << 20);
    let cert2 = dir.path().join("loop2.json");
    let out = run(Command::new(workspace_binary("safehand"))
        .args([
            "wipe",
            &dev2.path,
            "--method",
            "zero",
            "--yes",
            "--expect-serial",
            &dev2.path,
            "--report-to",
            &nowhere,
            "--token-file",
        ])
        .arg(&token_file)
        .arg("--key")
        .arg(&key)
        .arg("--certificate")
        .arg(&cert2));
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("the certificate was NOT uploaded")
            && err.contains(&format!("safehand cert upload {}", cert2.display())),
        "{err}"
    );
    assert_eq!(certificate(&cert2)["result"], "ERASED");
    let out = run(Command::new(workspace_binary("safehand"))
        .args(["cert", "upload"])
        .arg(&cert2)
        .args(["--server", &base, "--token-file"])
        .arg(&token_file));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("verifies (ERASED)"),
        "{}",
        stdout(&out)
    );
    // A changed certificate is refused locally and by the server, with the reason.
    let mut tampered = fs::read(&cert2).unwrap();
    let at = tampered.len() / 2;
    tampered[at] ^= 1;
    let bad = dir.path().join("tampered.json");
    fs::write(&bad, &tampered).unwrap();
    let out = run(Command::new(workspace_binary("safehand"))
        .args(["cert", "upload"])
        .arg(&bad)
        .args(["--server", &base, "--token-file"])
        .arg(&token_file));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("does not verify"), "{}", stderr(&out));
    // Plain http to another host is refused (the token would travel in clear).
    let out = run(Command::new(workspace_binary("safehand"))
        .args(["cert", "upload"])
        .arg(&cert2)
        .args(["--server", "http://safehand.example", "--token-file"])
        .arg(&token_file));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("use https://"), "{}", stderr(&out));

    drop(server);
    database.drop_with(&rt);
}

#[test]
fn wipe_reported_to_the_register_completes_a_disposal_on_sqlite() {
    wipe_to_completed_disposal(false);
}

#[test]
fn wipe_reported_to_the_register_completes_a_disposal_on_postgres() {
    wipe_to_completed_disposal(true);
}
