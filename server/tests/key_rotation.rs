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

fn reload_keys(key_file: &Path) -> ServerKeys {
    ServerKeys::load_or_create(key_file).unwrap()
}

async fn rotation_moves_every_secret_and_sign_in_still_works(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("server.key");
    let (mut app, admin) = app_with_key_file(backend, dir.path()).await;
    let old_text = std::fs::read_to_string(&key_file).unwrap();
    let old_id = app.state.keys.id();
    let before = sealed_key_ids(&app).await;
    assert_eq!(before.len(), 3, "two TOTP seeds and one pending seed");
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
    assert_eq!((rotation.resealed, rotation.already_done), (3, 0));
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

    // The old key no longer opens anything; the new one (with the sealed HMAC root) does.
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
    assert_eq!(ids.iter().filter(|i| **i == Some(next.id())).count(), 1);
    assert_eq!(ids.iter().filter(|i| **i == Some(old_id)).count(), 2);
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
    assert_eq!((rotation.resealed, rotation.already_done), (2, 1));
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
