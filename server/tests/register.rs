//! The equipment and disposal register on SQLite and PostgreSQL: assets and CSV import,
//! certificate upload (refusals with their reasons), evidence, authorisation and completion
//! of disposal records, corrections, and the disposal report.

use crate::both_databases;
use crate::common::*;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use safehand_crypto::certificate::{sign_certificate, SigningKey, WipeCertificate, WipeResult};
use serde_json::{json, Value};
use std::collections::BTreeMap;

both_databases!(
    assets_are_created_edited_searched_and_exported,
    csv_import_reports_every_bad_row_and_imports_nothing,
    certificates_are_verified_matched_and_refused_with_reasons,
    disposal_needs_authorisation_by_another_admin_and_evidence,
    destruction_with_the_contractors_file_is_evidence,
);

/// A signed certificate for a device serial with a result.
fn certificate(key: &SigningKey, id: &str, serial: Option<&str>, result: WipeResult) -> Vec<u8> {
    let mut c = WipeCertificate::example();
    c.certificate_id = id.into();
    c.device.serial = serial.map(str::to_string);
    c.result = result;
    c.asset_tag = Some("LT-001".into());
    sign_certificate(&c, key).unwrap()
}

async fn api(
    app: &TestApp,
    method: &str,
    path: &str,
    token: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut jar = BTreeMap::new();
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap();
    let page = send(&app.state, &mut jar, req).await;
    let value = serde_json::from_str(&page.body).unwrap_or(Value::Null);
    (page.status, value)
}

/// A multipart form post from a browser, with its CSRF token.
async fn upload(
    app: &TestApp,
    jar: &mut BTreeMap<String, String>,
    path: &str,
    fields: &[(&str, &str)],
    file: (&str, &str, &[u8]),
) -> Page {
    if !jar.contains_key("safehand_csrf") {
        send(
            &app.state,
            jar,
            Request::get("/healthz").body(Body::empty()).unwrap(),
        )
        .await;
    }
    let csrf = crate::common::csrf_for(&app.state, jar);
    let boundary = "----safehandtestboundary7d93";
    let mut body = Vec::new();
    let mut all = vec![("csrf", csrf.as_str())];
    all.extend_from_slice(fields);
    for (k, v) in all {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    let (field, name, bytes) = file;
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let req = Request::post(path)
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Body::from(body))
        .unwrap();
    send(&app.state, jar, req).await
}

/// The technician: invited, with a registered signing key and an API token.
struct Tech {
    browser: Browser,
    key: SigningKey,
    token: String,
}

async fn technician(app: &mut TestApp, email: &str, name: &str, roles: &[&str]) -> Tech {
    let (_p, mut browser) = invite(app, email, name, roles).await;
    let key = SigningKey::generate();
    let page = browser
        .post(
            app,
            "/account/signing-keys",
            &[
                ("key_label", "wipe station"),
                ("public_key", &key.public_key().to_string()),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let page = browser
        .post(
            app,
            "/account/tokens",
            &[
                ("token_name", "wipe station"),
                ("token_password", INVITE_PASSWORD),
                ("days", "30"),
                ("scope", "technician"),
            ],
        )
        .await;
    let token = page
        .between(
            "id=\"token\" class=\"secret-field\" type=\"text\" readonly value=\"",
            "\"",
        )
        .expect("token shown");
    Tech {
        browser,
        key,
        token,
    }
}

async fn new_asset(app: &mut TestApp, tag: &str, media: &str) -> i64 {
    let page = app
        .post(
            "/register/assets",
            &[
                ("tag", tag),
                ("kind", "laptop"),
                ("make", "Dell"),
                ("model", "Latitude 5400"),
                ("serial", &format!("{tag}-DEV")),
                ("location", "Room 4"),
                ("assigned_to", "Ms Jones"),
                ("purchase_date", "2021-09-01"),
                ("personal_data", "yes"),
                ("status", "in-use"),
                ("storage_media", media),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    page.location().rsplit('/').next().unwrap().parse().unwrap()
}

async fn assets_are_created_edited_searched_and_exported(backend: Backend) {
    let mut app = TestApp::new(backend).await;
    setup_admin(&mut app).await;
    // Staff cannot see the register.
    let (_sam, mut sam_b) = invite(&mut app, "sam@school.sch.uk", "Sam Staff", &["staff"]).await;
    assert_eq!(
        sam_b.get(&app, "/register").await.status,
        StatusCode::FORBIDDEN
    );
    // Bad input: every problem, linked to its field; nothing stored.
    let page = app
        .post(
            "/register/assets",
            &[
                ("tag", ""),
                ("kind", "toaster"),
                ("personal_data", "maybe"),
                ("purchase_date", "1/9/21"),
                ("storage_media", "A1\na1"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    for text in [
        "Enter the asset tag.",
        "Choose the kind",
        "Say whether it may hold personal data",
        "Enter the purchase date as year-month-day",
        "listed twice",
        "href=\"#tag\"",
        "href=\"#storage_media\"",
    ] {
        page.assert_contains(text);
    }
    let page = app
        .post(
            "/register/assets",
            &[
                ("tag", "LT-9"),
                ("kind", "laptop"),
                ("personal_data", "yes"),
            ],
        )
        .await;
    page.assert_contains("Enter the serial number of each storage medium");
    let id = new_asset(&mut app, "LT-001", "S4EW N0N1 (256 GB SSD)\nWD-777").await;
    // Tags and media serials are unique across the register (case and spaces ignored).
    let page = app
        .post(
            "/register/assets",
            &[
                ("tag", "lt-001"),
                ("kind", "disk"),
                ("personal_data", "no"),
                ("storage_media", "s4ewn0n1"),
            ],
        )
        .await;
    page.assert_contains("The asset tag LT-001 is already in the register.");
    page.assert_contains("already recorded in asset LT-001");
    let page = app.get(&format!("/register/assets/{id}")).await;
    page.assert_contains("Storage medium S4EW N0N1 (256 GB SSD)");
    page.assert_contains("No evidence yet.");
    // Edit: move it and drop one medium.
    let page = app
        .post(
            &format!("/register/assets/{id}"),
            &[
                ("tag", "LT-001"),
                ("kind", "laptop"),
                ("make", "Dell"),
                ("model", "Latitude 5400"),
                ("location", "Store room"),
                ("personal_data", "yes"),
                ("status", "awaiting-disposal"),
                ("storage_media", "S4EWN0N1 (256 GB SSD)"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let asset = safehand_server::register::assets::by_id(app.db(), id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(asset.location, "Store room");
    assert_eq!(asset.media.len(), 1);
    new_asset(&mut app, "DT-002", "ZZ-1").await;
    // Search and filters.
    let page = app.get("/register?q=store").await;
    page.assert_contains("LT-001");
    assert!(!page.body.contains("DT-002"));
    let page = app.get("/register?q=zz-1").await;
    page.assert_contains("DT-002");
    let page = app.get("/register?status=awaiting-disposal").await;
    page.assert_contains("LT-001");
    assert!(!page.body.contains("DT-002"));
    // Export in the import's columns.
    let page = app.get("/register/export.csv").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .starts_with("asset_tag,kind,make,model,serial,storage_media,"),
        "{}",
        page.body
    );
    page.assert_contains("\"LT-001\",\"laptop\",\"Dell\",\"Latitude 5400\"");
    page.assert_contains("\"S4EWN0N1 (256 GB SSD)\"");
    let actions: Vec<String> = safehand_server::audit::search(app.db(), &Default::default(), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.action)
        .collect();
    for a in ["asset_created", "asset_updated", "assets_exported"] {
        assert!(actions.contains(&a.to_string()), "{a} in {actions:?}");
    }
}

async fn csv_import_reports_every_bad_row_and_imports_nothing(backend: Backend) {
    let mut app = TestApp::new(backend).await;
    setup_admin(&mut app).await;
    new_asset(&mut app, "LT-001", "OLD-1").await;
    let mut jar = std::mem::take(&mut app.jar);
    let bad = "Asset Tag,Kind,Make,Storage media,Personal data,Purchase date\n\
               IP-1,tablet,Apple,DMP1 (64 GB),yes,2020-01-01\n\
               ,laptop,Dell,X1,yes,\n\
               IP-2,fridge,Bosch,,no,\n\
               LT-001,laptop,HP,H1,yes,2020-13-01\n\
               IP-3,tablet,Apple,DMP1,maybe,\n\
               IP-4,phone,Apple,OLD-1,no,\n";
    let page = upload(
        &app,
        &mut jar,
        "/register/import",
        &[],
        ("file", "assets.csv", bad.as_bytes()),
    )
    .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    page.assert_contains("Nothing was imported: 7 problem(s)");
    for (line, text) in [
        (3, "Enter the asset tag."),
        (4, "Choose the kind"),
        (5, "The asset tag LT-001 is already in the register."),
        (5, "Enter the purchase date as year-month-day"),
        (6, "Say whether it may hold personal data"),
        (6, "The storage medium serial DMP1 is also on line 2."),
        (
            7,
            "The storage medium serial OLD-1 is already recorded in asset LT-001.",
        ),
    ] {
        let row = format!("<tr><td>{line}</td><td>{text}");
        assert!(
            page.body.contains(&row),
            "line {line}: {text}\n{}",
            page.body
        );
    }
    assert_eq!(
        safehand_server::register::assets::search(app.db(), &Default::default(), 100)
            .await
            .unwrap()
            .len(),
        1,
        "nothing imported"
    );
    // Unknown columns are named; a clean file imports in full.
    let page = upload(
        &app,
        &mut jar,
        "/register/import",
        &[],
        ("file", "a.csv", b"asset_tag,kind,colour\nX,other,red\n"),
    )
    .await;
    page.assert_contains("Unknown column `colour`");
    let good = "asset_tag,kind,make,storage_media,personal_data,status\nIP-1,tablet,Apple,DMP1 (64 GB),yes,in use\nUSB-7,USB stick,SanDisk,USB7,no,awaiting disposal\n";
    let page = upload(
        &app,
        &mut jar,
        "/register/import",
        &[],
        ("file", "a.csv", good.as_bytes()),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.assert_contains("2 assets imported");
    // A file past the upload limit is refused with 413 and the limit, and imports nothing.
    let big = vec![b'a'; 11 * 1024 * 1024];
    let page = upload(
        &app,
        &mut jar,
        "/register/import",
        &[],
        ("file", "big.csv", &big),
    )
    .await;
    assert_eq!(page.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", page.body);
    page.assert_contains("a limit of 10 MiB");
    app.jar = jar;
    let usb = safehand_server::register::assets::by_tag(app.db(), "usb-7")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        usb.kind,
        safehand_server::register::assets::AssetKind::UsbStick
    );
    assert_eq!(
        usb.status,
        safehand_server::register::assets::AssetStatus::AwaitingDisposal
    );
    assert_eq!(usb.media[0].serial, "USB7");
}

async fn certificates_are_verified_matched_and_refused_with_reasons(backend: Backend) {
    let mut app = TestApp::new(backend).await;
    setup_admin(&mut app).await;
    let mut tess = technician(&mut app, "tess@school.sch.uk", "Tess Tech", &["technician"]).await;
    new_asset(&mut app, "LT-001", "SN-A\nSN-B").await;
    // A key that is not a valid key, and a key given to a non-technician, are refused.
    let page = tess
        .browser
        .post(
            &app,
            "/account/signing-keys",
            &[("key_label", "x"), ("public_key", "ed25519:nope")],
        )
        .await;
    page.assert_contains("Paste the public key exactly as `safehand cert key` prints it");
    // Tampered: one byte changed in the signed file.
    let good = certificate(&tess.key, "c1", Some("SN-A"), WipeResult::Erased);
    let mut tampered = good.clone();
    let at = String::from_utf8_lossy(&tampered).find("SN-A").unwrap();
    tampered[at + 3] = b'B';
    let (status, body) = api(&app, "POST", "/api/v1/certificates", &tess.token, tampered).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with("The certificate was refused: the signature does not match"),
        "{message}"
    );
    // Signed by a key nobody registered.
    let stranger = SigningKey::generate();
    let (status, body) = api(
        &app,
        "POST",
        "/api/v1/certificates",
        &tess.token,
        certificate(&stranger, "c2", Some("SN-A"), WipeResult::Erased),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(&stranger.public_key().to_string())
            && message.contains("not the registered key of any technician"),
        "{message}"
    );
    // Not JSON at all.
    let (status, body) = api(
        &app,
        "POST",
        "/api/v1/certificates",
        &tess.token,
        b"hello".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("not a Safehand certificate"));
    let count = safehand_server::register::certificates::list(app.db(), false, 100)
        .await
        .unwrap()
        .len();
    assert_eq!(count, 0, "refused certificates are not stored");
    // A good one: matched by serial (case and spaces ignored), evidence.
    let (status, body) = api(
        &app,
        "POST",
        "/api/v1/certificates",
        &tess.token,
        certificate(&tess.key, "c3", Some("sn-a"), WipeResult::Erased),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["evidence"], json!(true));
    assert_eq!(body["medium"]["serial"], json!("SN-A"));
    assert_eq!(body["medium"]["asset_tag"], json!("LT-001"));
    // The same file again is accepted without a duplicate.
    let (status, body) = api(
        &app,
        "POST",
        "/api/v1/certificates",
        &tess.token,
        certificate(&tess.key, "c3", Some("sn-a"), WipeResult::Erased),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["already_uploaded"], json!(true));
    // FAILED is stored with its medium but is not evidence.
    let (status, body) = api(
        &app,
        "POST",
        "/api/v1/certificates",
        &tess.token,
        certificate(&tess.key, "c4", Some("SN-B"), WipeResult::Failed),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["evidence"], json!(false));
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("it is not evidence of erasure"));
    // No serial (a loop device, a card reader): stored, and the register asks which asset.
    let (status, body) = api(
        &app,
        "POST",
        "/api/v1/certificates",
        &tess.token,
        certificate(&tess.key, "c5", None, WipeResult::Erased),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["medium"], Value::Null);
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("choose which asset it belongs to"));
    let c5 = body["id"].as_i64().unwrap();
    let page = tess
        .browser
        .get(&app, &format!("/register/certificates/{c5}"))
        .await;
    page.assert_contains("Which asset does it belong to?");
    page.assert_contains("LT-001 (Laptop): SN-B (asset tag on the certificate)");
    page.assert_contains("<strong>Verifies.</strong>");
    let asset = safehand_server::register::assets::by_tag(app.db(), "LT-001")
        .await
        .unwrap()
        .unwrap();
    let sn_b = asset.media.iter().find(|m| m.serial == "SN-B").unwrap().id;
    let page = tess
        .browser
        .post(
            &app,
            &format!("/register/certificates/{c5}/assign"),
            &[("medium", &sn_b.to_string())],
        )
        .await;
    page.assert_contains("is evidence for storage medium SN-B of asset LT-001");
    // A certificate naming another serial cannot be attached to the wrong medium.
    let c3 = safehand_server::register::certificates::list(app.db(), false, 100)
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.certificate_id == "c3")
        .unwrap()
        .id;
    let (status, body) = api(
        &app,
        "POST",
        &format!("/api/v1/certificates/{c3}/assign"),
        &tess.token,
        json!({ "medium_id": sn_b }).to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("is for the device with serial sn-a"));
    // Upload from the page: a tampered file is refused with the reason on the page.
    let mut jar = std::mem::take(&mut tess.browser.jar);
    let mut tampered = certificate(&tess.key, "c6", Some("SN-A"), WipeResult::Erased);
    let n = tampered.len();
    tampered.insert(n - 1, b' ');
    let page = upload(
        &app,
        &mut jar,
        "/register/certificates",
        &[],
        ("certificate", "c6.json", &tampered),
    )
    .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    page.assert_contains(
        "The certificate was refused: the certificate file was changed after it was signed",
    );
    let page = upload(
        &app,
        &mut jar,
        "/register/certificates",
        &[],
        (
            "certificate",
            "c7.json",
            &certificate(&tess.key, "c7", Some("SN-A"), WipeResult::Incomplete),
        ),
    )
    .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let page = send(
        &app.state,
        &mut jar,
        Request::get(page.location()).body(Body::empty()).unwrap(),
    )
    .await;
    page.assert_contains("it is not evidence of erasure");
    page.assert_contains("INCOMPLETE (not evidence of erasure)");
    // Downloads: the original bytes, and the PDF rendering.
    let page = send(
        &app.state,
        &mut jar,
        Request::get(format!("/register/certificates/{c3}/certificate.json"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(
        page.body.as_bytes(),
        certificate(&tess.key, "c3", Some("sn-a"), WipeResult::Erased).as_slice()
    );
    let page = send(
        &app.state,
        &mut jar,
        Request::get(format!("/register/certificates/{c3}/certificate.pdf"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(page.body.starts_with("%PDF-1.4"));
    assert!(page.body.contains("Certificate of Erasure"));
    // A revoked key is refused from then on.
    let key_id = safehand_server::register::certificates::keys_of(
        app.db(),
        safehand_server::accounts::by_email(app.db(), "tess@school.sch.uk")
            .await
            .unwrap()
            .unwrap()
            .id,
    )
    .await
    .unwrap()[0]
        .id;
    tess.browser.jar = jar;
    let page = tess
        .browser
        .post(&app, &format!("/account/signing-keys/{key_id}/revoke"), &[])
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let (status, _) = api(
        &app,
        "POST",
        "/api/v1/certificates",
        &tess.token,
        certificate(&tess.key, "c8", Some("SN-A"), WipeResult::Erased),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // A browser session cannot change things through the API (CSRF): it must use the pages.
    let req = Request::post("/api/v1/certificates")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(good))
        .unwrap();
    let page = tess.browser.send_req(&app, req).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(page.body.contains("token_required"), "{}", page.body);
}

async fn disposal_needs_authorisation_by_another_admin_and_evidence(backend: Backend) {
    let mut app = TestApp::new(backend).await;
    setup_admin(&mut app).await;
    let tess = technician(&mut app, "tess@school.sch.uk", "Tess Tech", &["technician"]).await;
    // Max is an admin and a technician.
    let mut max = technician(
        &mut app,
        "max@school.sch.uk",
        "Max Both",
        &["technician", "admin"],
    )
    .await;
    let mut tess_b = tess.browser;
    let asset_id = new_asset(&mut app, "LT-001", "SN-A").await;
    let page = tess_b
        .post(&app, &format!("/register/assets/{asset_id}/disposals"), &[])
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let d: i64 = page.location().rsplit('/').next().unwrap().parse().unwrap();
    let details = [
        ("disposal_date", "2026-12-01"),
        ("disposed_by", "max@school.sch.uk"),
        ("method", "sale"),
        ("receiver_name", "Jo Parent"),
        ("receiver_kind", "individual"),
        ("licence_checked", "yes"),
        ("licence_notes", "Office licence removed"),
        ("pat_date", "2026-11-20"),
    ];
    let page = tess_b
        .post(&app, &format!("/register/disposals/{d}"), &details)
        .await;
    page.assert_contains("Disposal record saved.");
    // Completing without authorisation is refused, naming what is missing.
    let page = tess_b
        .post(&app, &format!("/register/disposals/{d}/complete"), &[])
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    page.assert_contains("An admin who is not the person doing the disposal must authorise it.");
    page.assert_contains("Storage medium SN-A has no evidence");
    // A technician cannot authorise at all.
    let page = tess_b
        .post(&app, &format!("/register/disposals/{d}/authorise"), &[])
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    // Max, who does the disposal, cannot authorise it (page and API).
    let page = max
        .browser
        .post(&app, &format!("/register/disposals/{d}/authorise"), &[])
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    page.assert_contains(
        "You are recorded as the person doing this disposal, so you cannot authorise it",
    );
    let max_admin_token = {
        let page = max
            .browser
            .post(
                &app,
                "/account/tokens",
                &[
                    ("token_name", "admin"),
                    ("token_password", INVITE_PASSWORD),
                    ("days", "1"),
                    ("scope", "admin"),
                    ("scope", "technician"),
                ],
            )
            .await;
        page.between(
            "id=\"token\" class=\"secret-field\" type=\"text\" readonly value=\"",
            "\"",
        )
        .unwrap()
    };
    let (status, body) = api(
        &app,
        "POST",
        &format!("/api/v1/disposals/{d}/authorise"),
        &max_admin_token,
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let record = safehand_server::register::disposals::by_id(app.db(), d)
        .await
        .unwrap()
        .unwrap();
    assert!(record.authorised_by.is_none());
    // A FAILED certificate is not evidence.
    let (status, _) = api(
        &app,
        "POST",
        "/api/v1/certificates",
        &tess.token,
        certificate(&tess.key, "f1", Some("SN-A"), WipeResult::Failed),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    // Ada (another admin) authorises.
    let page = app
        .post(&format!("/register/disposals/{d}/authorise"), &[])
        .await;
    page.assert_contains("Disposal authorised.");
    let (status, body) = api(
        &app,
        "POST",
        &format!("/api/v1/disposals/{d}/complete"),
        &tess.token,
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let problems = body["problems"].to_string();
    assert!(
        problems.contains("Storage medium SN-A has no evidence"),
        "{problems}"
    );
    assert!(!problems.contains("authorise"), "{problems}");
    // An old PAT check is refused for a sale.
    let mut stale = details.to_vec();
    stale[7] = ("pat_date", "2026-01-01");
    tess_b
        .post(&app, &format!("/register/disposals/{d}"), &stale)
        .await
        .assert_contains("Disposal record saved.");
    let page = tess_b
        .post(&app, &format!("/register/disposals/{d}/complete"), &[])
        .await;
    page.assert_contains("The PAT check is more than 90 days before the disposal");
    tess_b
        .post(&app, &format!("/register/disposals/{d}"), &details)
        .await;
    // Now a verified ERASED certificate: the record completes (the clock is past the date).
    let (status, _) = api(
        &app,
        "POST",
        "/api/v1/certificates",
        &tess.token,
        certificate(&tess.key, "e1", Some("SN-A"), WipeResult::Erased),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    // Four eyes: only Max, the person doing the disposal, completes it (his confirmation);
    // Tess, who drafted it, and Ada, who authorised it, cannot finish it for him.
    let page = tess_b
        .post(&app, &format!("/register/disposals/{d}/complete"), &[])
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    page.assert_contains("Only the person doing the disposal can complete the record");
    let page = app
        .post(&format!("/register/disposals/{d}/complete"), &[])
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    page.assert_contains("Only the person doing the disposal can complete the record");
    let page = max
        .browser
        .post(&app, &format!("/register/disposals/{d}/complete"), &[])
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.assert_contains("Disposal record completed. It is now read-only.");
    page.assert_contains("wipe certificate e1 (ERASED");
    let asset = safehand_server::register::assets::by_id(app.db(), asset_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        asset.status,
        safehand_server::register::assets::AssetStatus::Disposed
    );
    // Read-only: the page refuses, and so does the database itself.
    let page = tess_b
        .post(&app, &format!("/register/disposals/{d}"), &details)
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    page.assert_contains("completed and read-only");
    let direct =
        sqlx::query("update disposals set receiver_name = 'someone else' where disposal_id = $1")
            .bind(d)
            .execute(app.db().pool())
            .await;
    assert!(
        direct.is_err(),
        "the database refuses to change a completed record"
    );
    let page = tess_b
        .post(
            &app,
            &format!("/register/assets/{asset_id}"),
            &[
                ("tag", "LT-001"),
                ("kind", "laptop"),
                ("personal_data", "yes"),
                ("storage_media", "SN-A"),
            ],
        )
        .await;
    page.assert_contains("is disposed: its record is read-only");
    // A correction is a new record referring to the old one, authorised and completed again.
    let page = tess_b
        .post(
            &app,
            &format!("/register/disposals/{d}/correct"),
            &[("reason", "The buyer's name was misspelt")],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let d2: i64 = page.location().rsplit('/').next().unwrap().parse().unwrap();
    let mut fixed = details.to_vec();
    fixed[3] = ("receiver_name", "Jo Parrent");
    tess_b
        .post(&app, &format!("/register/disposals/{d2}"), &fixed)
        .await
        .assert_contains("Disposal record saved.");
    let page = tess_b
        .post(&app, &format!("/register/disposals/{d2}/complete"), &[])
        .await;
    page.assert_contains("An admin who is not the person doing the disposal must authorise it.");
    app.post(&format!("/register/disposals/{d2}/authorise"), &[])
        .await
        .assert_contains("Disposal authorised.");
    max.browser
        .post(&app, &format!("/register/disposals/{d2}/complete"), &[])
        .await
        .assert_contains("Disposal record completed.");
    let old = app.get(&format!("/register/disposals/{d}")).await;
    old.assert_contains(&format!(
        "It was corrected by <a href=\"/register/disposals/{d2}\">record {d2}</a>"
    ));
    old.assert_contains("Jo Parent");
    // The report for governors: both records, the old one marked superseded, with evidence.
    let page = app
        .get("/register/report.csv?from=2026-11-01&to=2026-12-31")
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let lines: Vec<&str> = page.body.lines().collect();
    assert_eq!(lines.len(), 3, "{}", page.body);
    assert!(
        lines[1].contains("\"Jo Parent\"") && lines[1].contains(&format!("\"{d2}\"")),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains("\"Jo Parrent\"") && lines[2].contains("wipe certificate e1 (ERASED"),
        "{}",
        lines[2]
    );
    assert!(
        lines[2].contains("Ada Admin (ada@school.sch.uk)")
            && lines[2].contains("Max Both (max@school.sch.uk)")
    );
    let page = app
        .get("/register/report.pdf?from=2026-11-01&to=2026-12-31")
        .await;
    assert!(page.body.starts_with("%PDF-1.4"));
    assert!(
        page.body.contains(&format!("SUPERSEDED by record {d2}")),
        "the PDF marks the corrected record"
    );
    assert!(page
        .body
        .contains("(Authorised by: Ada Admin \\(ada@school.sch.uk\\)"));
    let page = app
        .get("/register/report.csv?from=2027-01-01&to=2027-12-31")
        .await;
    assert_eq!(page.body.lines().count(), 1, "nothing outside the range");
    let page = app
        .get("/register/report?from=2026-12-31&to=2026-01-01")
        .await;
    page.assert_contains("The start date is after the end date.");
    // Everything is in the audit log, and the chain is intact.
    let actions: Vec<String> = safehand_server::audit::search(app.db(), &Default::default(), 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.action)
        .collect();
    for a in [
        "disposal_created",
        "disposal_updated",
        "disposal_authorised",
        "disposal_completed",
        "disposal_correction_started",
        "certificate_uploaded",
        "signing_key_registered",
        "disposal_report_exported",
    ] {
        assert!(actions.contains(&a.to_string()), "{a} in {actions:?}");
    }
    assert!(matches!(
        safehand_server::audit::verify(app.db()).await.unwrap(),
        safehand_server::audit::Verification::Intact { .. }
    ));
}

async fn destruction_with_the_contractors_file_is_evidence(backend: Backend) {
    let mut app = TestApp::new(backend).await;
    setup_admin(&mut app).await;
    let asset_id = new_asset(&mut app, "PH-1", "IMEI-1 (phone storage)").await;
    let asset = safehand_server::register::assets::by_id(app.db(), asset_id)
        .await
        .unwrap()
        .unwrap();
    let medium = asset.media[0].id;
    let mut jar = std::mem::take(&mut app.jar);
    let path = format!("/register/media/{medium}/destruction");
    // No file: refused, nothing recorded.
    let page = upload(
        &app,
        &mut jar,
        &path,
        &[
            ("contractor", "Shred Ltd"),
            ("reference", "SH-1"),
            ("destroyed_on", "2026-01-02"),
        ],
        ("file", "", b""),
    )
    .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    page.assert_contains("Attach the contractor&#39;s certificate of destruction");
    // Too large: refused.
    let big = vec![b'x'; 10 * 1024 * 1024 + 1];
    let page = upload(
        &app,
        &mut jar,
        &path,
        &[
            ("contractor", "Shred Ltd"),
            ("reference", "SH-1"),
            ("destroyed_on", "2026-01-02"),
        ],
        ("file", "big.pdf", &big),
    )
    .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(
        safehand_server::register::certificates::destructions_for(app.db(), medium)
            .await
            .unwrap()
            .is_empty()
    );
    let pdf = b"%PDF-1.4 contractor certificate SH-1".to_vec();
    let page = upload(
        &app,
        &mut jar,
        &path,
        &[
            ("contractor", "Shred Ltd"),
            ("reference", "SH-1"),
            ("destroyed_on", "2026-01-02"),
        ],
        ("file", "sh-1.pdf", &pdf),
    )
    .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    app.jar = jar;
    let page = app.get(&format!("/register/assets/{asset_id}")).await;
    page.assert_contains("Evidence:</strong> destroyed by Shred Ltd on 2026-01-02 (their certificate SH-1; file sh-1.pdf SHA-256");
    let d = safehand_server::register::certificates::destructions_for(app.db(), medium)
        .await
        .unwrap()[0]
        .id;
    let file = app.get(&format!("/register/destructions/{d}/file")).await;
    assert_eq!(file.body.as_bytes(), pdf.as_slice());
    assert!(file.headers[header::CONTENT_DISPOSITION]
        .to_str()
        .unwrap()
        .contains("attachment; filename=\"sh-1.pdf\""));
}
