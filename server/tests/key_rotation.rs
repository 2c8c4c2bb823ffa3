//! Rotating the server key on SQLite and PostgreSQL: every sealed secret moves to the new key,
//! people still sign in (TOTP and recovery codes), an interrupted rotation resumes, and the
//! binary's `admin rotate-key` keeps the old key file and refuses to serve mid-rotation.

use crate::common::*;
use axum::http::StatusCode;
use safehand_server::audit::{self, Actor, Verification};
use safehand_server::key_rotation::{self, Options, SEALED_COLUMNS};
use safehand_server::keys::ServerKeys;
use sqlx::Row;
use std::path::Path;
use std::sync::Arc;

/// Key ids of every sealed value in the database.
async fn sealed_key_ids(app: &TestApp) -> Vec<Option<[u8; 8]>> {
    let mut out = Vec::new();
    for col in SEALED_COLUMNS {
        let rows = sqlx::query(&format!(
            "select {} as v from {} where {} is not null",
            col.column, col.table, col.column
        ))
        .fetch_all(app.db().pool())
        .await
        .unwrap();
        for r in rows {
            let v: Vec<u8> = r.get("v");
            out.push(ServerKeys::sealed_key_id(&v));
        }
    }
    out
}

/// An app whose server key lives in `dir/server.key`, with an admin (TOTP enrolled, recovery
/// codes) and a second user half-way through TOTP enrolment (a pending seed).
async fn app_with_key_file(backend: Backend, dir: &Path) -> (TestApp, Person) {
    let mut app = TestApp::new(backend).await;
    let keys = ServerKeys::load_or_create(&dir.join("server.key")).unwrap();
    app.state.keys = Arc::new(keys);
    let admin = setup_admin(&mut app).await;
    let (_, _) = invite(&mut app, "sam@school.sch.uk", "Sam Staff", &["staff"]).await;
    // A third user who has set a password and opened the enrolment page (pending seed).
    let page = app
        .post(
            "/admin/users",
            &[
                ("name", "Pat Pending"),
                ("email", "pat@school.sch.uk"),
                ("role", "staff"),
            ],
        )
        .await;
    let link = page.between("http://safehand.test", "\"").unwrap();
    let mut pat = app.other_browser();
    let password = "violet anchor meadow";
    pat.post(
        &app,
        &link,
        &[("password", password), ("confirm", password)],
    )
    .await;
    let page = pat.get(&app, "/enrol/totp").await;
    assert_eq!(page.status, StatusCode::OK);
    (app, admin)
}

async fn recovery_code_count(app: &TestApp) -> u64 {
    let n: i64 = sqlx::query_scalar("select count(*) from sealed_recovery_codes")
        .fetch_one(app.db().pool())
        .await
        .unwrap();
    n as u64
}

fn reload_keys(key_file: &Path) -> ServerKeys {
    ServerKeys::load_or_create(key_file).unwrap()
}

async fn rotation_moves_every_secret_and_sign_in_still_works(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("server.key");
    let (mut app, admin) = app_with_key_file(backend, dir.path()).await;
    let old_text = std::fs::read_to_string(&key_file).unwrap();
    let old_id = app.state.keys.id();
    // A recovery code from before codes were sealed (a keyed hash, version 0001's table).
    let sam_id: i64 =
        sqlx::query_scalar("select user_id from users where email = 'sam@school.sch.uk'")
            .fetch_one(app.db().pool())
            .await
            .unwrap();
    sqlx::query("insert into recovery_codes (code_hash, user_id) values ($1, $2)")
        .bind(app.state.keys.recovery_code_hash(sam_id, "legacycode"))
        .bind(sam_id)
        .execute(app.db().pool())
        .await
        .unwrap();
    assert_eq!(
        safehand_server::accounts::recovery_codes_left(app.db(), sam_id)
            .await
            .unwrap(),
        11
    );
    let before = sealed_key_ids(&app).await;
    let codes = recovery_code_count(&app).await;
    assert_eq!(codes, 20, "ten recovery codes for each enrolled user");
    assert_eq!(
        before.len() as u64,
        3 + codes,
        "two TOTP seeds, one pending seed and the recovery codes"
    );
    assert!(before.iter().all(|id| *id == Some(old_id)));

    let rotation = key_rotation::rotate(
        app.db(),
        &key_file,
        app.clock.now(),
        &Actor::operator(),
        Options::default(),
    )
    .await
    .unwrap();
    assert_eq!((rotation.resealed, rotation.already_done), (3 + codes, 0));
    // The legacy code cannot be re-keyed: retired, its owner named; the sealed ones stay.
    assert_eq!(rotation.retired_recovery_codes, vec!["sam@school.sch.uk"]);
    assert_eq!(
        safehand_server::accounts::recovery_codes_left(app.db(), sam_id)
            .await
            .unwrap(),
        10
    );
    assert_eq!(rotation.old_id, hex::encode(old_id));
    // The old key is kept, private, under a clear name; the key file holds the new key.
    let retired = &rotation.retired_key_file;
    let name = retired.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("server.key.retired-") && name.ends_with(&rotation.old_id),
        "{name}"
    );
    assert_eq!(std::fs::read_to_string(retired).unwrap(), old_text);
    use std::os::unix::fs::PermissionsExt;
    for f in [retired.as_path(), key_file.as_path()] {
        assert_eq!(
            std::fs::metadata(f).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert!(!key_rotation::unfinished(&key_file));
    let new = reload_keys(&key_file);
    assert_eq!(hex::encode(new.id()), rotation.new_id);
    let after = sealed_key_ids(&app).await;
    assert!(after.iter().all(|id| *id == Some(new.id())), "{after:?}");

    // The old key no longer opens anything; the new one does.
    let old = ServerKeys::parse(&old_text).unwrap();
    let seed: Vec<u8> =
        sqlx::query("select totp_seed from users where email = 'ada@school.sch.uk'")
            .fetch_one(app.db().pool())
            .await
            .unwrap()
            .get("totp_seed");
    assert!(matches!(
        old.unseal("totp-seed:1", &seed),
        Err(safehand_server::Error::SealedUnderOtherKey { .. })
    ));
    let new = key_rotation::load_server_secrets(app.db(), new)
        .await
        .unwrap();
    app.state.keys = Arc::new(new);
    app.jar.clear();
    sign_in(&mut app, &admin).await;
    assert_eq!(app.get("/admin/users").await.status, StatusCode::OK);
    // A recovery code made under the old key still works.
    app.jar.clear();
    app.clock.advance(30);
    let page = app
        .post(
            "/sign-in",
            &[("email", &admin.email), ("password", &admin.password)],
        )
        .await;
    assert_eq!(page.location(), "/sign-in/code");
    let page = app
        .post("/sign-in/code", &[("code", &admin.recovery_codes[0])])
        .await;
    assert_eq!(page.location(), "/", "{}", page.body);
    // The rotation is in the audit log, and the chain is intact.
    let found = audit::search(
        app.db(),
        &audit::Filter {
            action: "server_key_rotated".into(),
            ..Default::default()
        },
        10,
    )
    .await
    .unwrap();
    assert_eq!(found.len(), 1);
    assert!(found[0].details.contains(&rotation.new_id));
    assert!(matches!(
        audit::verify(app.db()).await.unwrap(),
        Verification::Intact { .. }
    ));
}

async fn an_interrupted_rotation_resumes(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("server.key");
    let (mut app, admin) = app_with_key_file(backend, dir.path()).await;
    let old_id = app.state.keys.id();
    let e = key_rotation::rotate(
        app.db(),
        &key_file,
        app.clock.now(),
        &Actor::operator(),
        Options {
            stop_after: Some(1),
        },
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("run it again"), "{e}");
    // Half done, and detectably so.
    assert!(key_rotation::unfinished(&key_file));
    let next = ServerKeys::load_or_create(&key_rotation::next_key_path(&key_file)).unwrap();
    let ids = sealed_key_ids(&app).await;
    let total = ids.len() as u64;
    assert_eq!(ids.iter().filter(|i| **i == Some(next.id())).count(), 1);
    assert_eq!(
        ids.iter().filter(|i| **i == Some(old_id)).count() as u64,
        total - 1
    );
    // The old key file is untouched until the end.
    assert_eq!(reload_keys(&key_file).id(), old_id);

    let rotation = key_rotation::rotate(
        app.db(),
        &key_file,
        app.clock.now(),
        &Actor::operator(),
        Options::default(),
    )
    .await
    .unwrap();
    assert_eq!((rotation.resealed, rotation.already_done), (total - 1, 1));
    assert_eq!(rotation.new_id, next.id_hex());
    assert!(!key_rotation::unfinished(&key_file));
    let new = reload_keys(&key_file);
    assert!(sealed_key_ids(&app)
        .await
        .iter()
        .all(|i| *i == Some(new.id())));

    // Stopped between the two renames: the next run only puts the new key in place.
    std::fs::rename(&key_file, key_rotation::next_key_path(&key_file)).unwrap();
    let finish = key_rotation::rotate(
        app.db(),
        &key_file,
        app.clock.now(),
        &Actor::operator(),
        Options::default(),
    )
    .await
    .unwrap();
    assert_eq!(finish.resealed, 0);
    assert_eq!(reload_keys(&key_file).id(), new.id());
    let new = key_rotation::load_server_secrets(app.db(), new)
        .await
        .unwrap();
    app.state.keys = Arc::new(new);
    app.jar.clear();
    sign_in(&mut app, &admin).await;
}

crate::both_databases!(
    rotation_moves_every_secret_and_sign_in_still_works,
    an_interrupted_rotation_resumes,
    rotation_reaches_every_sealed_value_in_a_working_school,
);

/// The binary: `admin rotate-key` on a data folder, and no serving while a rotation is
/// unfinished.
#[test]
fn rotate_key_command() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_safehand-server"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        (
            o.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    let (code, out) = run(&[
        "admin",
        "create-user",
        "--email",
        "sam@school.sch.uk",
        "--name",
        "Sam Staff",
        "--role",
        "staff",
    ]);
    assert_eq!(code, Some(0), "{out}");
    let old = std::fs::read_to_string(dir.path().join("server.key")).unwrap();
    let (code, out) = run(&["admin", "rotate-key"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("The server key is now"), "{out}");
    assert!(out.contains("server.key.retired-"), "{out}");
    let new = std::fs::read_to_string(dir.path().join("server.key")).unwrap();
    assert_ne!(old, new);
    let retired: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("server.key.retired-"))
        .collect();
    assert_eq!(retired.len(), 1);
    assert_eq!(
        std::fs::read_to_string(dir.path().join(&retired[0])).unwrap(),
        old
    );
    let (code, out) = run(&["admin", "audit-verify"]);
    assert_eq!(code, Some(0), "{out}");
    // A half-done rotation stops every other command with a message saying what to do.
    std::fs::write(dir.path().join("server.key.next"), new.trim()).unwrap();
    let (code, out) = run(&["admin", "migrate"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("run `safehand-server admin rotate-key` again"),
        "{out}"
    );
    std::fs::remove_file(dir.path().join("server.key.next")).unwrap();
    // With the key in the environment there is no file to rotate.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_safehand-server"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["admin", "rotate-key"])
        .env("SAFEHAND_SERVER_KEY", new.trim())
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("SAFEHAND_SERVER_KEY"));
}

/// Every value sealed under `key_id` (version 2 prefix and the key id), found by reading every
/// column of every table, not only the ones the rotation knows: "table.column" per value.
async fn values_sealed_under(app: &TestApp, backend: Backend, key_id: [u8; 8]) -> Vec<String> {
    let pool = app.db().pool();
    let columns: Vec<(String, String)> = match backend {
        Backend::Sqlite => {
            let tables: Vec<String> = sqlx::query_scalar(
                "select name from sqlite_master where type = 'table' and name not like 'sqlite_%'",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            let mut out = Vec::new();
            for t in tables {
                let cols: Vec<String> =
                    sqlx::query_scalar(&format!("select name from pragma_table_info('{t}')"))
                        .fetch_all(pool)
                        .await
                        .unwrap();
                out.extend(cols.into_iter().map(|c| (t.clone(), c)));
            }
            out
        }
        Backend::Postgres => sqlx::query(
            "select table_name::text as t, column_name::text as c from information_schema.columns \
             where table_schema = current_schema() and data_type = 'bytea'",
        )
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("t"), r.get("c")))
        .collect(),
    };
    assert!(columns.len() > 10, "{columns:?}");
    let mut prefix = vec![2u8];
    prefix.extend_from_slice(&key_id);
    let mut found = Vec::new();
    for (t, c) in columns {
        let filter = match backend {
            Backend::Sqlite => format!("typeof(\"{c}\") = 'blob'"),
            Backend::Postgres => format!("\"{c}\" is not null"),
        };
        let rows = sqlx::query(&format!("select \"{c}\" as v from \"{t}\" where {filter}"))
            .fetch_all(pool)
            .await
            .unwrap();
        for r in rows {
            let v: Vec<u8> = r.get("v");
            if v.starts_with(&prefix) {
                found.push(format!("{t}.{c}"));
            }
        }
    }
    found
}

/// A school in full flow when the key is rotated: a recipient half-way through a download, a
/// recipient waiting for their code, a rejected transfer with its reason, an assessed incident,
/// staff with TOTP and recovery codes. Afterwards nothing anywhere is sealed under the old key,
/// every page still reads, the recipient still downloads, and the keyed hashes have moved.
async fn rotation_reaches_every_sealed_value_in_a_working_school(backend: Backend) {
    use crate::transfers::*;
    use safehand_server::policy;
    const JO: &str = "Jo.Bloggs@northshire.gov.uk";
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("server.key");
    let mut app = TestApp::new(backend).await;
    app.state.keys = Arc::new(ServerKeys::load_or_create(&key_file).unwrap());
    let old_text = std::fs::read_to_string(&key_file).unwrap();
    let old = ServerKeys::parse(&old_text).unwrap();
    let mut w = world_on(app).await;

    // A: released, the recipient has unlocked it (their session holds the file key).
    let content = b"Referral notes for a pupil, 2026".to_vec();
    let (a, passphrase) = send_files(&mut w, &[("referral-notes.txt", &content)]).await;
    let link_a = release(&mut w, a).await;
    let mut jo = recipient_session(&w.app, &link_a).await;
    unlock(&w.app, &mut jo, &link_a, &passphrase).await;
    // B: released, the recipient asked for a code and has not entered it yet.
    let (b, _) = send_files(&mut w, &[("plan.txt", b"support plan")]).await;
    let link_b = release(&mut w, b).await;
    let mut jo_b = w.app.other_browser();
    jo_b.post(&w.app, &format!("{link_b}/code"), &[]).await;
    let pending = code_from(&last_mail(&w.app, JO).await.1);
    // C: held for approval and rejected with a reason.
    let (_, mut alex) = invite(
        &mut w.app,
        "alex@school.sch.uk",
        "Alex Approver",
        &["approver"],
    )
    .await;
    let mut p = policy::load(w.app.db()).await.unwrap();
    p.approval_always = true;
    policy::save(w.app.db(), w.app.clock.now(), &Actor::operator(), &p)
        .await
        .unwrap();
    let (c, _) = send_files(&mut w, &[("held.txt", b"held")]).await;
    confirm_release(&mut w, c).await;
    let page = alex
        .post(
            &w.app,
            &format!("/approvals/{c}/reject"),
            &[("reason", "Referral for another pupil attached")],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    p.approval_always = false;
    policy::save(w.app.db(), w.app.clock.now(), &Actor::operator(), &p)
        .await
        .unwrap();
    // D: an incident, reported and assessed.
    let (d, _) = send_files(&mut w, &[("list.csv", b"name,year\n")]).await;
    let page = w
        .staff
        .post(
            &w.app,
            &format!("/transfers/{d}/incident"),
            &[
                ("kind", "wrong_recipient"),
                ("description", "Sent to the Southshire team by mistake."),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let page = w
        .app
        .post(
            "/incidents/1/assess",
            &[
                ("risk", "likely"),
                ("risk_notes", "A pupil list seen by another council."),
                ("reportable", "yes"),
                ("decision", "Reported to the ICO, reference IC-654321."),
                ("reason", "Personal data reached the wrong organisation."),
                ("actions", "Deletion confirmed in writing."),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);

    let before = values_sealed_under(&w.app, backend, old.id()).await;
    for column in [
        "users.totp_seed",
        "sealed_recovery_codes.code_sealed",
        "transfers.details_sealed",
        "transfers.decision_reason_sealed",
        "transfer_files.name_sealed",
        "recipient_sessions.file_key_sealed",
        "incidents.description_sealed",
        "incidents.assessment_sealed",
    ] {
        assert!(before.iter().any(|f| f == column), "{column} in {before:?}");
    }

    let rotation = key_rotation::rotate(
        w.app.db(),
        &key_file,
        w.app.clock.now(),
        &Actor::operator(),
        Options::default(),
    )
    .await
    .unwrap();
    assert_eq!(rotation.resealed as usize, before.len());
    assert_eq!(rotation.expired_recipient_codes, 1, "B's pending code");
    let new = key_rotation::load_server_secrets(w.app.db(), reload_keys(&key_file))
        .await
        .unwrap();
    let left = values_sealed_under(&w.app, backend, old.id()).await;
    assert!(left.is_empty(), "still under the old key: {left:?}");
    assert_eq!(
        values_sealed_under(&w.app, backend, new.id()).await.len(),
        before.len()
    );
    // The old key opens nothing it used to: a file name, for one.
    let row = sqlx::query(
        "select f.name_sealed, t.blob_key from transfer_files f \
         join transfers t on t.transfer_id = f.transfer_id \
         where f.transfer_id = $1 and f.position = 0",
    )
    .bind(a)
    .fetch_one(w.app.db().pool())
    .await
    .unwrap();
    let name: Vec<u8> = row.get("name_sealed");
    let context = format!("transfer-file:{}:0", row.get::<String, _>("blob_key"));
    assert!(matches!(
        old.unseal(&context, &name),
        Err(safehand_server::Error::SealedUnderOtherKey { .. })
    ));
    assert_eq!(
        new.unseal(&context, &name).unwrap().as_slice(),
        b"referral-notes.txt"
    );
    // The keyed hashes moved with the key.
    assert_ne!(old.csrf_token("cookie", ""), new.csrf_token("cookie", ""));
    assert_ne!(
        old.one_time_code_hash("recipient", "12345678"),
        new.one_time_code_hash("recipient", "12345678")
    );
    assert!(sqlx::query("select 1 from server_secrets")
        .fetch_optional(w.app.db().pool())
        .await
        .unwrap()
        .is_none());
    w.app.state.keys = Arc::new(new);

    // Everyone carries on.
    let page = w.staff.get(&w.app, &format!("/transfers/{a}")).await;
    page.assert_contains("referral-notes.txt");
    page.assert_contains("Child protection referral for a pupil");
    let page = w.staff.get(&w.app, &format!("/transfers/{c}")).await;
    page.assert_contains("Referral for another pupil attached");
    let page = w.app.get("/incidents/1").await;
    page.assert_contains("Sent to the Southshire team by mistake.");
    page.assert_contains("IC-654321");
    let (status, _, bytes) = get_bytes(&w.app, &mut jo, &format!("{link_a}/files/1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bytes, content);
    // B's recipient is told their code has gone and asks for another, which works.
    let page = jo_b
        .post(
            &w.app,
            &format!("{link_b}/code/check"),
            &[("code", &pending)],
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    page.assert_contains("expired");
    jo_b.post(&w.app, &format!("{link_b}/code"), &[]).await;
    let fresh = code_from(&last_mail(&w.app, JO).await.1);
    let page = jo_b
        .post(&w.app, &format!("{link_b}/code/check"), &[("code", &fresh)])
        .await;
    assert_eq!(page.location(), format!("{link_b}/open"), "{}", page.body);
    // TOTP and a recovery code both still sign the admin in.
    w.app.jar.clear();
    sign_in(&mut w.app, &w.admin).await;
    w.app.jar.clear();
    w.app.clock.advance(30);
    w.app
        .post(
            "/sign-in",
            &[("email", &w.admin.email), ("password", &w.admin.password)],
        )
        .await;
    let page = w
        .app
        .post("/sign-in/code", &[("code", &w.admin.recovery_codes[1])])
        .await;
    assert_eq!(page.location(), "/", "{}", page.body);
    assert!(matches!(
        audit::verify(w.app.db()).await.unwrap(),
        Verification::Intact { .. }
    ));
}
