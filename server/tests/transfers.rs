//! Contacts, policy and transfers through the router, on SQLite and PostgreSQL: the directory
//! and its verifications, the policy and allowed domains, sending (sealed on the fly or
//! uploaded sealed), the recipient's journey (link, code, passphrase, downloads), receipts,
//! recall, expiry and the sweeper, and the bad input of issue 5.

use crate::common::*;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use safehand_crypto::SecretString;
use safehand_server::audit;
use safehand_server::transfers;
use sqlx::Row;
use std::collections::BTreeMap;

crate::both_databases!(
    contacts_are_added_verified_and_lapse,
    contacts_are_verified_by_someone_other_than_who_entered_them,
    policy_and_allowed_domains_are_enforced,
    whole_journey_from_upload_to_download,
    recipient_cookies_carry_the_host_prefix_under_https,
    link_page_changes_nothing_and_bad_links_read_the_same,
    codes_are_time_and_attempt_limited,
    wrong_passphrases_lock_the_transfer_and_tell_the_sender,
    other_staff_cannot_see_or_recall,
    upload_cut_off_leaves_no_transfer_and_no_blob,
    buffered_parts_are_small_and_say_their_limit,
    hostile_file_names_are_stored_and_served_safely,
    presealed_payloads_are_checked,
    concurrent_downloads_hold_the_limit,
    recall_and_expiry_shred_then_delete,
    full_disk_during_upload_keeps_nothing,
    unreachable_s3_during_upload_keeps_nothing,
    two_sweepers_at_once_do_each_job_once,
    undo_window_holds_the_link_mail_back,
    undo_window_of_zero_sends_at_once,
);

pub(crate) const PHONE: &str = "01632 960 123";

/// Admin, a verified contact, and a staff member with their browser.
pub(crate) struct World {
    pub(crate) app: TestApp,
    pub(crate) admin: Person,
    pub(crate) staff: Browser,
    pub(crate) contact_id: i64,
}

pub(crate) async fn add_contact(app: &mut TestApp, email: &str, name: &str) -> i64 {
    add_contact_at(app, email, name, "Northshire Children's Services").await
}

/// Adds a contact at `organisation` (as the admin browser); returns its id.
pub(crate) async fn add_contact_at(
    app: &mut TestApp,
    email: &str,
    name: &str,
    organisation: &str,
) -> i64 {
    let page = app
        .post(
            "/contacts",
            &[
                ("name", name),
                ("organisation", organisation),
                ("job_title", "Social worker"),
                ("email", email),
                ("phone", PHONE),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    page.location()
        .trim_start_matches("/contacts/")
        .split('?')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Verifies a contact as a second admin (four eyes: the admin who added it may not); returns
/// the verifier's email.
pub(crate) async fn verify_contact(app: &mut TestApp, id: i64) -> String {
    static VERIFIERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = VERIFIERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let email = format!("vera{n}@school.sch.uk");
    let (_, mut vera) = invite(app, &email, "Vera Verifier", &["admin"]).await;
    let page = vera
        .post(
            app,
            &format!("/contacts/{id}/verify"),
            &[
                ("phone_called", PHONE),
                ("phone_source", "switchboard"),
                (
                    "note",
                    "Spoke to them via the council switchboard; address read back.",
                ),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.assert_contains("Verification recorded.");
    email
}

pub(crate) async fn world(backend: Backend) -> World {
    world_on(TestApp::new(backend).await).await
}

pub(crate) async fn world_on(mut app: TestApp) -> World {
    let admin = setup_admin(&mut app).await;
    let (_, staff) = invite(&mut app, "sam@school.sch.uk", "Sam Staff", &["staff"]).await;
    let contact_id = add_contact(&mut app, "Jo.Bloggs@Northshire.gov.uk", "Jo Bloggs").await;
    verify_contact(&mut app, contact_id).await;
    World {
        app,
        admin,
        staff,
        contact_id,
    }
}

/// A multipart/form-data body.
pub(crate) fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "----safehandtestboundary7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (name, filename, content) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match filename {
            Some(f) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{}\"\r\nContent-Type: application/octet-stream\r\n\r\n",
                    // As browsers do: quotes and line breaks escaped (the manifest has the real name).
                    f.replace('"', "%22").replace('\n', "%0A").replace('\r', "%0D")
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn details(contact_id: i64, files: &[(&str, usize)]) -> String {
    serde_json::json!({
        "contact_id": contact_id,
        "purpose": "Child protection referral for a pupil",
        "classification": "OFFICIAL-SENSITIVE",
        "expires_in_days": 7,
        "download_limit": 3,
        "files": files.iter().map(|(n, s)| serde_json::json!({"name": n, "size": s})).collect::<Vec<_>>(),
    })
    .to_string()
}

/// Posts an upload from a signed-in browser (the page's script sends the CSRF header).
pub(crate) async fn upload_from(
    app: &TestApp,
    browser: &mut Browser,
    body: (String, Vec<u8>),
) -> Page {
    if !browser.jar.contains_key("safehand_csrf") {
        browser.get(app, "/transfers/new").await;
    }
    let csrf = crate::common::csrf_for(&app.state, &browser.jar);
    let req = Request::post("/transfers/new")
        .header(header::CONTENT_TYPE, body.0)
        .header("x-csrf-token", csrf)
        .body(Body::from(body.1))
        .unwrap();
    send(&app.state, &mut browser.jar, req).await
}

/// Uploads files as the staff member; returns (transfer id, passphrase).
pub(crate) async fn send_files(w: &mut World, files: &[(&str, &[u8])]) -> (i64, String) {
    let announced: Vec<(&str, usize)> = files.iter().map(|(n, c)| (*n, c.len())).collect();
    let d = details(w.contact_id, &announced);
    let mut parts: Vec<(&str, Option<&str>, &[u8])> = vec![("details", None, d.as_bytes())];
    for (n, c) in files {
        parts.push(("file", Some(n), c));
    }
    let page = upload_from(&w.app, &mut w.staff, multipart(&parts)).await;
    assert_eq!(page.status, StatusCode::CREATED, "{}", page.body);
    let v: serde_json::Value = serde_json::from_str(&page.body).unwrap();
    assert_eq!(v["state"], "sealed");
    assert_eq!(v["recipient"]["phone"], PHONE);
    (
        v["id"].as_i64().unwrap(),
        v["passphrase"].as_str().unwrap().to_string(),
    )
}

/// The staff member confirms they will phone the passphrase (the release form).
pub(crate) async fn confirm_release(w: &mut World, id: i64) -> Page {
    w.staff
        .post(
            &w.app,
            &format!("/transfers/{id}/release"),
            &[("will_phone", "yes")],
        )
        .await
}

pub(crate) async fn release(w: &mut World, id: i64) -> String {
    let page = confirm_release(w, id).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.assert_contains("The link will be emailed to the recipient in 60 seconds");
    // Past the undo window: the link mail is due (and would now be delivered).
    w.app.clock.advance(61);
    let mail = last_mail(&w.app, "Jo.Bloggs@northshire.gov.uk").await;
    assert_eq!(mail.0, "A secure file is waiting for you");
    let link = mail
        .1
        .lines()
        .find(|l| l.starts_with("http://safehand.test/r/"))
        .expect("link in the mail")
        .trim_start_matches("http://safehand.test")
        .to_string();
    link
}

/// The newest mail queued for `to`: (subject, body).
pub(crate) async fn last_mail(app: &TestApp, to: &str) -> (String, String) {
    let row = sqlx::query(
        "select subject, body_text from mail_outbox where recipient = $1 order by mail_id desc limit 1",
    )
    .bind(to)
    .fetch_one(app.db().pool())
    .await
    .unwrap();
    (row.get("subject"), row.get("body_text"))
}

pub(crate) async fn mails_to(app: &TestApp, to: &str) -> Vec<(String, String)> {
    sqlx::query("select subject, body_text from mail_outbox where recipient = $1 order by mail_id")
        .bind(to)
        .fetch_all(app.db().pool())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("subject"), r.get("body_text")))
        .collect()
}

pub(crate) fn code_from(body: &str) -> String {
    body.split("code is: ")
        .nth(1)
        .unwrap()
        .chars()
        .take(8)
        .collect()
}

/// The recipient gets a code and enters it, in their own browser.
pub(crate) async fn recipient_session(app: &TestApp, link: &str) -> Browser {
    let mut r = app.other_browser();
    let page = r.get(app, link).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let page = r.post(app, &format!("{link}/code"), &[]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let (subject, body) = last_mail(app, "Jo.Bloggs@northshire.gov.uk").await;
    assert_eq!(subject, "Your Safehand code");
    let page = r
        .post(
            app,
            &format!("{link}/code/check"),
            &[("code", &code_from(&body))],
        )
        .await;
    assert_eq!(page.location(), format!("{link}/open"), "{}", page.body);
    r
}

pub(crate) async fn unlock(app: &TestApp, r: &mut Browser, link: &str, passphrase: &str) {
    let page = r
        .post(app, &format!("{link}/open"), &[("passphrase", passphrase)])
        .await;
    assert_eq!(page.location(), format!("{link}/files"), "{}", page.body);
}

pub(crate) async fn get_bytes(
    app: &TestApp,
    r: &mut Browser,
    path: &str,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let mut req = Request::get(path).body(Body::empty()).unwrap();
    let cookies = r
        .jar
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    req.headers_mut()
        .insert(header::COOKIE, cookies.parse().unwrap());
    let response = safehand_server::app(app.state.clone())
        .oneshot(req)
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    // Let the completion (recorded when the body ended) commit.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    (status, headers, bytes.to_vec())
}

pub(crate) async fn actions(app: &TestApp) -> Vec<String> {
    audit::search(app.db(), &Default::default(), 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.action)
        .collect()
}

pub(crate) async fn blob_count(app: &TestApp) -> usize {
    app.state.blobs.list("transfers").await.unwrap().len()
}

async fn transfer_count(app: &TestApp) -> i64 {
    sqlx::query("select count(*) as n from transfers")
        .fetch_one(app.db().pool())
        .await
        .unwrap()
        .get("n")
}

// ---------------------------------------------------------------------------------------------

async fn contacts_are_added_verified_and_lapse(backend: Backend) {
    let mut app = TestApp::new(backend).await;
    setup_admin(&mut app).await;
    // Bad input: every problem linked to its field, nothing stored.
    let page = app
        .post(
            "/contacts",
            &[
                ("name", ""),
                ("organisation", "Council"),
                ("job_title", "SW"),
                ("email", "not an email"),
                ("phone", "call me"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    page.assert_contains("href=\"#name\"");
    page.assert_contains("href=\"#email\"");
    page.assert_contains("href=\"#phone\"");
    let id = add_contact(&mut app, "Jo.Bloggs@Northshire.GOV.uk", "Jo Bloggs").await;
    // The same address again (domain case differs) is refused; a different local part is not
    // the same mailbox.
    let page = app
        .post(
            "/contacts",
            &[
                ("name", "Jo again"),
                ("organisation", "Council"),
                ("job_title", "SW"),
                ("email", "Jo.Bloggs@northshire.gov.uk"),
                ("phone", PHONE),
            ],
        )
        .await;
    page.assert_contains("already in the directory");
    let page = app.get(&format!("/contacts/{id}")).await;
    page.assert_contains("Jo.Bloggs@northshire.gov.uk");
    page.assert_contains("not verified");
    // A verification needs the number, where it came from and a note (asked of a colleague:
    // Ada added the contact, so she may not verify it).
    let (_, mut val) = invite(&mut app, "val@school.sch.uk", "Val Admin", &["admin"]).await;
    let page = val
        .post(
            &app,
            &format!("/contacts/{id}/verify"),
            &[
                ("phone_called", ""),
                ("phone_source", "email"),
                ("note", ""),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    page.assert_contains("href=\"#phone_called\"");
    page.assert_contains("href=\"#phone_source\"");
    page.assert_contains("href=\"#note\"");
    let verifier = verify_contact(&mut app, id).await;
    let page = app.get(&format!("/contacts/{id}")).await;
    page.assert_contains("verified until");
    page.assert_contains(&verifier);
    page.assert_contains("main switchboard");
    let c = safehand_server::contacts::get(app.db(), id)
        .await
        .unwrap()
        .unwrap();
    let v = c.verification.clone().unwrap();
    assert_eq!(v.expires_at - v.verified_at, 12 * 30 * 86_400);
    // A changed phone number withdraws the verification.
    let page = app
        .post(
            &format!("/contacts/{id}"),
            &[
                ("name", "Jo Bloggs"),
                ("organisation", "Northshire Children's Services"),
                ("job_title", "Social worker"),
                ("email", "Jo.Bloggs@northshire.gov.uk"),
                ("phone", "01632 960 999"),
            ],
        )
        .await;
    page.assert_contains("Changes saved.");
    page.assert_contains("not verified");
    verify_contact(&mut app, id).await;
    // A verification lapses after the configured period.
    let c = safehand_server::contacts::get(app.db(), id)
        .await
        .unwrap()
        .unwrap();
    let now = app.clock.now();
    assert_eq!(c.status(now), safehand_server::contacts::Status::Verified);
    assert_eq!(
        c.status(now + 361 * 86_400),
        safehand_server::contacts::Status::Lapsed
    );
    // Staff see the directory but may not add unless the policy says so.
    let (_, mut sam) = invite(&mut app, "sam@school.sch.uk", "Sam Staff", &["staff"]).await;
    let page = sam.get(&app, "/contacts").await;
    page.assert_contains("Jo Bloggs");
    assert!(!page.body.contains("Add a contact"));
    let page = sam
        .post(
            &app,
            "/contacts",
            &[
                ("name", "X"),
                ("organisation", "Y"),
                ("job_title", "Z"),
                ("email", "x@y.gov.uk"),
                ("phone", PHONE),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let a = actions(&app).await;
    for expected in ["contact_added", "contact_verified", "contact_changed"] {
        assert!(a.contains(&expected.to_string()), "{expected} in {a:?}");
    }
    // Removed contacts leave the directory.
    app.post(&format!("/contacts/{id}/remove"), &[]).await;
    let page = sam.get(&app, "/contacts").await;
    assert!(!page.body.contains("Jo Bloggs"));
}

/// Four eyes on the directory: whoever typed a contact's address or phone number cannot also
/// vouch for it (page and API), until policy allows self-verification.
async fn contacts_are_verified_by_someone_other_than_who_entered_them(backend: Backend) {
    let mut app = TestApp::new(backend).await;
    setup_admin(&mut app).await;
    let (_, mut val) = invite(&mut app, "val@school.sch.uk", "Val Admin", &["admin"]).await;
    let id = add_contact(&mut app, "jo@northshire.gov.uk", "Jo Bloggs").await;
    let verification = [
        ("phone_called", PHONE),
        ("phone_source", "switchboard"),
        (
            "note",
            "Spoke to them via the switchboard; address read back.",
        ),
    ];
    let status = |app: &TestApp| {
        let db = app.db().clone();
        let now = app.clock.now();
        async move {
            safehand_server::contacts::get(&db, id)
                .await
                .unwrap()
                .unwrap()
                .status(now)
        }
    };
    use safehand_server::contacts::Status;
    // Ada added Jo: her page has no verification form, and posting one anyway is refused.
    let page = app.get(&format!("/contacts/{id}")).await;
    page.assert_contains("id=\"verify-own\"");
    assert!(!page.body.contains("action=\"/contacts/{id}/verify\""));
    let page = app
        .post(&format!("/contacts/{id}/verify"), &verification)
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    page.assert_contains("someone else must verify them");
    assert_eq!(status(&app).await, Status::Unverified);
    // ... and through the API: Val adds a contact and tries to verify it with her token.
    let kim = {
        let page = val
            .post(
                &app,
                "/contacts",
                &[
                    ("name", "Kim Officer"),
                    ("organisation", "Northshire Police"),
                    ("job_title", "PC"),
                    ("email", "kim@northshire.police.uk"),
                    ("phone", PHONE),
                ],
            )
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        page.location()
            .trim_start_matches("/contacts/")
            .split('?')
            .next()
            .unwrap()
            .parse::<i64>()
            .unwrap()
    };
    let token = api_token_scoped(&app, &mut val, "admin").await;
    let (code, body) = api_call(
        &app,
        &token,
        "POST",
        &format!("/api/v1/contacts/{kim}/verifications"),
        Some(
            serde_json::json!({ "phone_called": PHONE, "phone_source": "switchboard",
                                 "note": "Spoke to them via the switchboard." }),
        ),
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body.to_string().contains("someone else must verify them"),
        "{body}"
    );
    let kim_status = safehand_server::contacts::get(app.db(), kim)
        .await
        .unwrap()
        .unwrap()
        .status(app.clock.now());
    assert_eq!(kim_status, Status::Unverified);
    // Val, who did not enter it, verifies.
    let page = val
        .post(&app, &format!("/contacts/{id}/verify"), &verification)
        .await;
    page.assert_contains("Verification recorded.");
    assert_eq!(status(&app).await, Status::Verified);
    // Val changes the address: the verification is withdrawn, and now she is the one who
    // entered it, so she cannot verify it but Ada can.
    let changed = [
        ("name", "Jo Bloggs"),
        ("organisation", "Northshire Children's Services"),
        ("job_title", "Social worker"),
        ("email", "jo.bloggs@northshire.gov.uk"),
        ("phone", PHONE),
    ];
    val.post(&app, &format!("/contacts/{id}"), &changed)
        .await
        .assert_contains("Changes saved.");
    assert_eq!(status(&app).await, Status::Unverified);
    let page = val
        .post(&app, &format!("/contacts/{id}/verify"), &verification)
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    assert_eq!(status(&app).await, Status::Unverified);
    app.post(&format!("/contacts/{id}/verify"), &verification)
        .await
        .assert_contains("Verification recorded.");
    assert_eq!(status(&app).await, Status::Verified);
    // A school that allows self-verification says so in its policy.
    let other = add_contact(&mut app, "sam@northshire.gov.uk", "Sam Worker").await;
    let mut policy = safehand_server::policy::load(app.db()).await.unwrap();
    policy.self_verification = true;
    safehand_server::policy::save(
        app.db(),
        app.clock.now(),
        &safehand_server::audit::Actor::operator(),
        &policy,
    )
    .await
    .unwrap();
    app.post(&format!("/contacts/{other}/verify"), &verification)
        .await
        .assert_contains("Verification recorded.");
}

async fn policy_and_allowed_domains_are_enforced(backend: Backend) {
    let mut app = TestApp::new(backend).await;
    setup_admin(&mut app).await;
    let page = app.get("/admin/policy").await;
    page.assert_contains("5 GiB");
    // Out-of-range values are refused with the field named.
    let page = app
        .post(
            "/admin/policy",
            &[
                ("unverified_contacts", "refuse"),
                ("default_expiry_days", "60"),
                ("max_expiry_days", "30"),
                ("default_download_limit", "3"),
                ("max_size", "lots"),
                ("wrong_passphrase_limit", "5"),
                ("verification_valid_months", "12"),
                ("undo_window_secs", "60"),
                ("max_token_days", "90"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    page.assert_contains("href=\"#max_size\"");
    let page = app
        .post(
            "/admin/policy",
            &[
                ("staff_may_add_contacts", "1"),
                ("unverified_contacts", "attest"),
                ("default_expiry_days", "5"),
                ("max_expiry_days", "14"),
                ("default_download_limit", "2"),
                ("max_size", "2 GiB"),
                ("wrong_passphrase_limit", "3"),
                ("verification_valid_months", "6"),
                ("undo_window_secs", "30"),
                ("max_token_days", "90"),
            ],
        )
        .await;
    page.assert_contains("Policy saved.");
    let p = safehand_server::policy::load(app.db()).await.unwrap();
    assert!(p.staff_may_add_contacts);
    assert_eq!(p.max_size_bytes, 2 << 30);
    assert_eq!(p.wrong_passphrase_limit, 3);
    assert_eq!(p.undo_window_secs, 30);
    assert!(actions(&app).await.contains(&"policy_changed".to_string()));
    // Domains.
    let page = app.post("/admin/policy/domains", &[("pattern", "*")]).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    for d in ["*.gov.uk", "nhs.net", "*.sch.uk"] {
        app.post("/admin/policy/domains", &[("pattern", d)]).await;
    }
    let page = app
        .post(
            "/contacts",
            &[
                ("name", "Dr X"),
                ("organisation", "Clinic"),
                ("job_title", "GP"),
                ("email", "x@gmail.com"),
                ("phone", PHONE),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    page.assert_contains("only be sent to addresses in these domains");
    add_contact(&mut app, "gp@nhs.net", "Dr Y").await;
    add_contact(&mut app, "head@oakfield.sch.uk", "Head").await;
    // The API reads the same policy and domains, with a token.
    let (_, mut sam) = invite(&mut app, "sam@school.sch.uk", "Sam Staff", &["staff"]).await;
    let page = sam
        .post(
            &app,
            "/account/tokens",
            &[
                ("token_name", "cli"),
                ("token_password", INVITE_PASSWORD),
                ("days", "30"),
                ("scope", "staff"),
            ],
        )
        .await;
    let token = page
        .between(
            "id=\"token\" class=\"secret-field\" type=\"text\" readonly value=\"",
            "\"",
        )
        .unwrap();
    let mut jar = BTreeMap::new();
    let page = send(
        &app.state,
        &mut jar,
        Request::get("/api/v1/policy/domains")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    page.assert_contains("nhs.net");
    // Staff may now add contacts (policy), through the API too.
    let page = send(
        &app.state,
        &mut jar,
        Request::post("/api/v1/contacts")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"email":"sw@council.gov.uk","name":"S W","organisation":"Council","role":"SW","phone":"01632 960 555"}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(page.status, StatusCode::CREATED, "{}", page.body);
    // But only admins change the policy.
    let page = send(
        &app.state,
        &mut jar,
        Request::put("/api/v1/policy")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_string(&p).unwrap()))
            .unwrap(),
    )
    .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let page = send(
        &app.state,
        &mut jar,
        Request::get("/api/openapi.json")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let doc: serde_json::Value = serde_json::from_str(&page.body).unwrap();
    assert!(doc["paths"]["/transfers"]["post"].is_object());
}

async fn whole_journey_from_upload_to_download(backend: Backend) {
    let mut w = world(backend).await;
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let (id, passphrase) = send_files(
        &mut w,
        &[("report.pdf", b"%PDF-1.4 hello"), ("data.bin", &big)],
    )
    .await;
    assert_eq!(
        passphrase.split('-').count(),
        7,
        "seven words to read aloud"
    );
    // The passphrase is stored nowhere: not in the database, not in the audit log.
    let dump: Vec<String> = sqlx::query("select details from audit_log")
        .fetch_all(w.app.db().pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>("details"))
        .collect();
    assert!(!dump.iter().any(|d| d.contains(&passphrase)));
    let names: Vec<Vec<u8>> = sqlx::query("select name_sealed from transfer_files")
        .fetch_all(w.app.db().pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<Vec<u8>, _>("name_sealed"))
        .collect();
    assert!(
        !names.iter().any(|n| n.windows(6).any(|x| x == b"report")),
        "file names are encrypted"
    );
    // Nothing mailed before the sender confirms.
    assert!(mails_to(&w.app, "Jo.Bloggs@northshire.gov.uk")
        .await
        .is_empty());
    let page = w.staff.get(&w.app, &format!("/transfers/{id}")).await;
    page.assert_contains("not sent yet");
    let page = w
        .staff
        .post(&w.app, &format!("/transfers/{id}/release"), &[])
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    let link = release(&mut w, id).await;
    let (subject, body) = last_mail(&w.app, "Jo.Bloggs@northshire.gov.uk").await;
    assert_eq!(subject, "A secure file is waiting for you");
    for secret in [
        &passphrase as &str,
        "report.pdf",
        "data.bin",
        "Child protection",
    ] {
        assert!(!body.contains(secret), "{secret} must not be in the mail");
    }
    let mut r = recipient_session(&w.app, &link).await;
    unlock(&w.app, &mut r, &link, &passphrase).await;
    let page = r.get(&w.app, &format!("{link}/files")).await;
    page.assert_contains("report.pdf");
    page.assert_contains("data.bin");
    let (status, headers, bytes) = get_bytes(&w.app, &mut r, &format!("{link}/files/2")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bytes, big);
    assert_eq!(
        headers.get(header::CONTENT_DISPOSITION).unwrap(),
        "attachment; filename=\"data.bin\"; filename*=UTF-8''data.bin"
    );
    // The sender is told of the first download.
    let (subject, body) = last_mail(&w.app, "sam@school.sch.uk").await;
    assert_eq!(subject, "Your transfer was downloaded");
    assert!(!body.contains("data.bin"));
    // All as a zip: a real ZIP reader agrees.
    let (status, _, zip) = get_bytes(&w.app, &mut r, &format!("{link}/all.zip")).await;
    assert_eq!(status, StatusCode::OK);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("all.zip"), &zip).unwrap();
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys,zipfile;z=zipfile.ZipFile(sys.argv[1]);assert z.testzip() is None;print('|'.join(f'{i.filename}:{len(z.read(i))}' for i in z.infolist()))",
        ])
        .arg(dir.path().join("all.zip"))
        .output()
        .expect("python3 reads the zip");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "report.pdf:14|data.bin:300000"
    );
    // The .age payload opens offline with the passphrase (third and last download).
    let (status, _, payload) = get_bytes(&w.app, &mut r, &format!("{link}/payload.age")).await;
    assert_eq!(status, StatusCode::OK);
    let file = safehand_crypto::EncryptedFile::new(std::io::Cursor::new(payload)).unwrap();
    let plain = file
        .decrypt(&safehand_crypto::DecryptionKey::Passphrase(
            SecretString::from(passphrase.clone()),
        ))
        .unwrap();
    let mut listed = Vec::new();
    safehand_crypto::payload::list(plain, |e| {
        listed.push((e.path.clone(), e.size));
        Ok(())
    })
    .unwrap();
    assert_eq!(
        listed,
        vec![
            ("report.pdf".to_string(), 14),
            ("data.bin".to_string(), 300_000)
        ]
    );
    // Three downloads of three allowed: used up, shredded, blob gone, link dead.
    let t = transfers::get(w.app.db(), id).await.unwrap().unwrap();
    assert_eq!(t.state, transfers::State::Downloaded);
    assert!(transfers::header(w.app.db(), id).await.unwrap().is_none());
    assert!(!w.app.state.blobs.exists(&t.blob_key).await.unwrap());
    let page = r.get(&w.app, &link).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    page.assert_contains("This link cannot be used");
    // Receipts.
    let page = w.staff.get(&w.app, &format!("/transfers/{id}")).await;
    page.assert_contains("downloaded (first");
    page.assert_contains("Downloaded all files (zip)");
    let a = actions(&w.app).await;
    for expected in [
        "transfer_sealed",
        "transfer_released",
        "recipient_code_sent",
        "recipient_code_accepted",
        "recipient_passphrase_accepted",
        "transfer_downloaded",
        "transfer_shredded",
    ] {
        assert!(a.contains(&expected.to_string()), "{expected} in {a:?}");
    }
    assert!(matches!(
        audit::verify(w.app.db()).await.unwrap(),
        audit::Verification::Intact { .. }
    ));
}

/// Under HTTPS the recipient's session cookie is a `__Host-` cookie (so `Path=/`), named for
/// its link, so two links open in one browser keep their own sessions.
async fn recipient_cookies_carry_the_host_prefix_under_https(backend: Backend) {
    use sha2::Digest;
    let app = TestApp::with_settings(backend, |s| {
        s.public_url = "https://safehand.test".into();
        s.https = true;
    })
    .await;
    let mut w = world_on(app).await;
    let mut links = Vec::new();
    for name in ["first.txt", "second.txt"] {
        let (id, passphrase) = send_files(&mut w, &[(name, b"hello")]).await;
        let page = confirm_release(&mut w, id).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        w.app.clock.advance(61);
        let (_, body) = last_mail(&w.app, "Jo.Bloggs@northshire.gov.uk").await;
        let link = body
            .lines()
            .find_map(|l| l.strip_prefix("https://safehand.test"))
            .filter(|l| l.starts_with("/r/"))
            .expect("an https link in the mail")
            .to_string();
        links.push((link, passphrase, name));
    }
    let mut browser = w.app.other_browser();
    for (link, passphrase, _) in &links {
        let mut r = recipient_session(&w.app, link).await;
        unlock(&w.app, &mut r, link, passphrase).await;
        let token = link.trim_start_matches("/r/");
        let tag = hex::encode(&sha2::Sha256::digest(token.as_bytes())[..8]);
        let name = format!("__Host-safehand_recipient_{tag}");
        let value = r
            .jar
            .get(&name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {:?}", r.jar.keys().collect::<Vec<_>>()));
        assert!(!r.jar.contains_key("safehand_recipient"));
        // Both sessions in one browser.
        browser.jar.insert(name, value);
        browser.jar.insert(
            "__Host-safehand_csrf".into(),
            r.jar["__Host-safehand_csrf"].clone(),
        );
    }
    for (link, _, name) in &links {
        let page = browser.get(&w.app, &format!("{link}/files")).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        page.assert_contains(name);
    }
}

async fn link_page_changes_nothing_and_bad_links_read_the_same(backend: Backend) {
    let mut w = world(backend).await;
    let (id, _) = send_files(&mut w, &[("a.txt", b"abc")]).await;
    let link = release(&mut w, id).await;
    let before = actions(&w.app).await.len();
    let mut scanner = w.app.other_browser();
    for _ in 0..3 {
        let page = scanner.get(&w.app, &link).await;
        assert_eq!(page.status, StatusCode::OK);
        scanner.get(&w.app, &format!("{link}/code")).await;
        scanner.get(&w.app, &format!("{link}/files")).await;
    }
    // GETs change nothing; the link page's first view from this address is recorded once
    // (an incident's evidence that the link was opened, perhaps by a mail scanner).
    let after = actions(&w.app).await;
    assert_eq!(after.len(), before + 1, "{after:?}");
    assert_eq!(after[0], "recipient_link_viewed");
    let t = transfers::get(w.app.db(), id).await.unwrap().unwrap();
    assert!(t.code_requested_at.is_none() && t.opened_at.is_none());
    assert_eq!(
        mails_to(&w.app, "Jo.Bloggs@northshire.gov.uk").await.len(),
        1
    );
    // Tampered, unknown and malformed links: one page that reveals nothing.
    let mut tampered = link.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let unavailable = scanner.get(&w.app, &tampered).await;
    assert_eq!(unavailable.status, StatusCode::NOT_FOUND);
    unavailable.assert_contains("This link cannot be used");
    for bad in ["/r/nothing", "/r/%2e%2e%2fetc", &format!("{tampered}/code")] {
        let page = scanner.get(&w.app, bad).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{bad}");
        page.assert_contains("This link cannot be used");
        assert!(!page.body.contains("Jo"), "nothing about the transfer");
    }
}

async fn codes_are_time_and_attempt_limited(backend: Backend) {
    let mut w = world(backend).await;
    let (id, _) = send_files(&mut w, &[("a.txt", b"abc")]).await;
    let link = release(&mut w, id).await;
    let mut r = w.app.other_browser();
    r.post(&w.app, &format!("{link}/code"), &[]).await;
    let code = code_from(&last_mail(&w.app, "Jo.Bloggs@northshire.gov.uk").await.1);
    // Wrong codes: five tries, then even the right one is refused.
    for _ in 0..5 {
        let page = r
            .post(
                &w.app,
                &format!("{link}/code/check"),
                &[("code", "00000000")],
            )
            .await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST);
    }
    let page = r
        .post(&w.app, &format!("{link}/code/check"), &[("code", &code)])
        .await;
    page.assert_contains("Too many wrong codes");
    // Expired.
    r.post(&w.app, &format!("{link}/code"), &[]).await;
    let code = code_from(&last_mail(&w.app, "Jo.Bloggs@northshire.gov.uk").await.1);
    w.app.clock.advance(16 * 60);
    let page = r
        .post(&w.app, &format!("{link}/code/check"), &[("code", &code)])
        .await;
    page.assert_contains("expired");
    // A newer code replaces the older one; a used code cannot be reused.
    r.post(&w.app, &format!("{link}/code"), &[]).await;
    let old = code_from(&last_mail(&w.app, "Jo.Bloggs@northshire.gov.uk").await.1);
    r.post(&w.app, &format!("{link}/code"), &[]).await;
    let new = code_from(&last_mail(&w.app, "Jo.Bloggs@northshire.gov.uk").await.1);
    if old != new {
        let page = r
            .post(&w.app, &format!("{link}/code/check"), &[("code", &old)])
            .await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST);
    }
    let page = r
        .post(&w.app, &format!("{link}/code/check"), &[("code", &new)])
        .await;
    assert_eq!(page.location(), format!("{link}/open"));
    let mut other = w.app.other_browser();
    let page = other
        .post(&w.app, &format!("{link}/code/check"), &[("code", &new)])
        .await;
    assert_eq!(
        page.status,
        StatusCode::BAD_REQUEST,
        "a used code is refused"
    );
    // At most five codes an hour.
    let page = r.post(&w.app, &format!("{link}/code"), &[]).await;
    assert_eq!(
        page.status,
        StatusCode::SEE_OTHER,
        "the fifth code this hour"
    );
    let page = r.post(&w.app, &format!("{link}/code"), &[]).await;
    page.assert_contains("Too many codes");
    // The session ends after 30 minutes.
    w.app.clock.advance(31 * 60);
    let page = r.get(&w.app, &format!("{link}/open")).await;
    assert_eq!(page.location(), link);
}

async fn wrong_passphrases_lock_the_transfer_and_tell_the_sender(backend: Backend) {
    let mut w = world(backend).await;
    let (id, passphrase) = send_files(&mut w, &[("a.txt", b"abc")]).await;
    let link = release(&mut w, id).await;
    let mut r = recipient_session(&w.app, &link).await;
    for left in (1..5).rev() {
        let page = r
            .post(
                &w.app,
                &format!("{link}/open"),
                &[("passphrase", "wrong words here")],
            )
            .await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST);
        page.assert_contains(&format!("{left} tr"));
    }
    let page = r
        .post(
            &w.app,
            &format!("{link}/open"),
            &[("passphrase", "still wrong")],
        )
        .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    page.assert_contains("This link cannot be used");
    // Locked even for the right passphrase; header destroyed; the sender told.
    let page = r
        .post(
            &w.app,
            &format!("{link}/open"),
            &[("passphrase", &passphrase)],
        )
        .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    let t = transfers::get(w.app.db(), id).await.unwrap().unwrap();
    assert_eq!(t.state, transfers::State::Locked);
    assert_eq!(t.wrong_passphrases, 5);
    assert!(transfers::header(w.app.db(), id).await.unwrap().is_none());
    let (subject, _) = last_mail(&w.app, "sam@school.sch.uk").await;
    assert_eq!(subject, "A transfer you sent has been locked");
    let page = w.staff.get(&w.app, "/transfers").await;
    page.assert_contains("locked after 5 wrong passphrases");
}

async fn other_staff_cannot_see_or_recall(backend: Backend) {
    let mut w = world(backend).await;
    let (id, _) = send_files(&mut w, &[("a.txt", b"abc")]).await;
    let (_, mut eve) = invite(&mut w.app, "eve@school.sch.uk", "Eve Staff", &["staff"]).await;
    let page = eve.get(&w.app, &format!("/transfers/{id}")).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    let page = eve
        .post(&w.app, &format!("/transfers/{id}/recall"), &[])
        .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    let page = eve
        .post(
            &w.app,
            &format!("/transfers/{id}/release"),
            &[("will_phone", "yes")],
        )
        .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    let page = eve.get(&w.app, "/transfers").await;
    assert!(!page.body.contains("northshire"));
    let t = transfers::get(w.app.db(), id).await.unwrap().unwrap();
    assert_eq!(t.state, transfers::State::Sealed);
    // A user without the staff role cannot send at all.
    let (_, mut tess) = invite(
        &mut w.app,
        "tess@school.sch.uk",
        "Tess Tech",
        &["technician"],
    )
    .await;
    assert_eq!(
        tess.get(&w.app, "/transfers/new").await.status,
        StatusCode::FORBIDDEN
    );
}

async fn upload_cut_off_leaves_no_transfer_and_no_blob(backend: Backend) {
    let mut w = world(backend).await;
    let content = vec![9u8; 200_000];
    let d = details(w.contact_id, &[("a.bin", content.len()), ("b.bin", 10)]);
    // Cut off half-way through the first file: the multipart body ends without its boundary.
    let (ct, body) = multipart(&[
        ("details", None, d.as_bytes()),
        ("file", Some("a.bin"), &content),
    ]);
    let cut = body[..body.len() / 2].to_vec();
    let page = upload_from(&w.app, &mut w.staff, (ct.clone(), cut)).await;
    assert!(
        page.status.is_client_error(),
        "{} {}",
        page.status,
        page.body
    );
    // The second file never arrives.
    let page = upload_from(&w.app, &mut w.staff, (ct, body)).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    page.assert_contains("cut short");
    // A file shorter or longer than announced.
    let d1 = details(w.contact_id, &[("a.bin", 100)]);
    let page = upload_from(
        &w.app,
        &mut w.staff,
        multipart(&[
            ("details", None, d1.as_bytes()),
            ("file", Some("a.bin"), &[1u8; 101]),
        ]),
    )
    .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    let page = upload_from(
        &w.app,
        &mut w.staff,
        multipart(&[
            ("details", None, d1.as_bytes()),
            ("file", Some("a.bin"), &[1u8; 99]),
        ]),
    )
    .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    // Over the policy's size: refused before anything is written.
    let huge = details(w.contact_id, &[("a.bin", 6 << 30)]);
    let page = upload_from(
        &w.app,
        &mut w.staff,
        multipart(&[
            ("details", None, huge.as_bytes()),
            ("file", Some("a.bin"), b"x"),
        ]),
    )
    .await;
    assert_eq!(page.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", page.body);
    page.assert_contains("the most you can send is 5 GiB");
    // Sizes that overflow when added (2^63 + 2^63 wraps to 0) or do not fit a signed size.
    for sizes in [
        vec![("a.bin", 1u64 << 63), ("b.bin", 1u64 << 63)],
        vec![("a.bin", u64::MAX)],
        vec![("a.bin", u64::MAX), ("b.bin", 2)],
    ] {
        let announced = serde_json::json!({
            "contact_id": w.contact_id,
            "purpose": "Child protection referral for a pupil",
            "classification": "OFFICIAL-SENSITIVE",
            "expires_in_days": 7,
            "download_limit": 3,
            "files": sizes.iter().map(|(n, s)| serde_json::json!({"name": n, "size": s})).collect::<Vec<_>>(),
        })
        .to_string();
        let page = upload_from(
            &w.app,
            &mut w.staff,
            multipart(&[
                ("details", None, announced.as_bytes()),
                ("file", Some("a.bin"), b"x"),
            ]),
        )
        .await;
        assert_eq!(
            page.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{sizes:?}: {}",
            page.body
        );
        page.assert_contains("the most you can send is 5 GiB");
    }
    // Without the CSRF header the page's upload is refused.
    let mut jar = w.staff.jar.clone();
    let (ct, body) = multipart(&[
        ("details", None, d1.as_bytes()),
        ("file", Some("a.bin"), &[1u8; 100]),
    ]);
    let page = send(
        &w.app.state,
        &mut jar,
        Request::post("/transfers/new")
            .header(header::CONTENT_TYPE, ct)
            .body(Body::from(body))
            .unwrap(),
    )
    .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(transfer_count(&w.app).await, 0);
    assert_eq!(blob_count(&w.app).await, 0, "no blob left behind");
}

/// The `details` part is read into memory, so it has a small limit: past it the upload is
/// refused with 413 and the limit, without reading the rest of the part (a 300 MB part once
/// took the server from 137 to 692 MB), on the page and on the API alike.
async fn buffered_parts_are_small_and_say_their_limit(backend: Backend) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let mut w = world(backend).await;
    let limit = transfers::MAX_DETAILS_BYTES;
    // Valid JSON padded past the limit with whitespace: refused for its size, not its content.
    let d = details(w.contact_id, &[("a.bin", 1)]);
    let padded = format!("{d}{}", " ".repeat(limit));
    let page = upload_from(
        &w.app,
        &mut w.staff,
        multipart(&[
            ("details", None, padded.as_bytes()),
            ("file", Some("a.bin"), b"x"),
        ]),
    )
    .await;
    assert_eq!(page.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", page.body);
    page.assert_contains("limit of 64 KiB");
    // Just under the limit is accepted.
    let fits = format!("{d}{}", " ".repeat(limit - d.len() - 1));
    let page = upload_from(
        &w.app,
        &mut w.staff,
        multipart(&[
            ("details", None, fits.as_bytes()),
            ("file", Some("a.bin"), b"x"),
        ]),
    )
    .await;
    assert_eq!(page.status, StatusCode::CREATED, "{}", page.body);
    // On the API, a `details` part of 256 MiB that never ends early: the server stops reading
    // soon after the limit instead of buffering it.
    let token = api_token(&w.app, &mut w.staff).await;
    let pulled = Arc::new(AtomicUsize::new(0));
    let boundary = "----safehandtestboundary7MA4YWxkTrZu0gW";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"details\"\r\n\r\n{{\"purpose\": \""
    );
    let counter = pulled.clone();
    let chunks = std::iter::once(bytes::Bytes::from(head))
        .chain((0..4096).map(|_| bytes::Bytes::from(vec![b'a'; 64 * 1024])));
    // Bytes arrive as from a network, a chunk at a time (a stream that is always ready would
    // be drained whole by the multipart reader's buffer, whatever the handler does).
    let stream = futures_util::stream::unfold(chunks, move |mut chunks| {
        let counter = counter.clone();
        async move {
            tokio::task::yield_now().await;
            let c = chunks.next()?;
            counter.fetch_add(c.len(), Ordering::SeqCst);
            Some((Ok::<_, std::io::Error>(c), chunks))
        }
    });
    let mut jar = BTreeMap::new();
    let page = send(
        &w.app.state,
        &mut jar,
        Request::post("/api/v1/transfers")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(
                header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(Body::from_stream(stream))
            .unwrap(),
    )
    .await;
    assert_eq!(page.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", page.body);
    page.assert_contains("limit of 64 KiB");
    let read = pulled.load(Ordering::SeqCst);
    assert!(
        read < 4 * limit,
        "the server read {read} bytes of an oversized details part"
    );
    assert_eq!(
        transfer_count(&w.app).await,
        1,
        "only the upload that fitted"
    );
    // JSON bodies of the API: too large is a 413 naming the limit, malformed is a 400, both
    // as the API's JSON errors an API client can read.
    let huge = serde_json::json!({ "name": "x".repeat(100 * 1024) }).to_string();
    for (body, status, code, says) in [
        (
            huge.as_str(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "limit of 64 KiB",
        ),
        (
            "{\"name\": ",
            StatusCode::BAD_REQUEST,
            "bad_input",
            "not the JSON this call expects",
        ),
    ] {
        let page = send(
            &w.app.state,
            &mut jar,
            Request::post("/api/v1/contacts")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await;
        assert_eq!(page.status, status, "{}", page.body);
        let v: serde_json::Value = serde_json::from_str(&page.body).expect("a JSON error");
        assert_eq!(v["error"], code, "{v}");
        assert!(v["message"].as_str().unwrap().contains(says), "{v}");
    }
}

async fn hostile_file_names_are_stored_and_served_safely(backend: Backend) {
    let mut w = world(backend).await;
    let long = format!("{}.txt", "x".repeat(400));
    let hostile = [
        "../../etc/passwd",
        "quote\"d; name.txt",
        "new\nline.txt",
        "<img src=x onerror=alert(1)>.html",
        long.as_str(),
        "Élève – notes.txt",
        "report\u{202E}fdp.exe",
        "CON.txt",
        "what?.docx",
    ];
    let files: Vec<(&str, &[u8])> = hostile.iter().map(|n| (*n, b"x" as &[u8])).collect();
    let (id, passphrase) = send_files(&mut w, &files).await;
    let t = transfers::get(w.app.db(), id).await.unwrap().unwrap();
    let stored = transfers::files(w.app.db(), &w.app.state.keys, &t)
        .await
        .unwrap();
    for f in &stored {
        assert!(
            !f.name.contains('/') && !f.name.contains('\n') && f.name.len() <= 200,
            "{:?}",
            f.name
        );
    }
    assert_eq!(stored[0].name, ".._.._etc_passwd");
    assert_eq!(stored[1].name, "quote_d; name.txt");
    // A direction override cannot disguise an extension; Windows names and characters that
    // would stop the recipient saving the file on Windows are neutralised.
    assert_eq!(stored[6].name, "report_fdp.exe");
    assert_eq!(stored[7].name, "_CON.txt");
    assert_eq!(stored[8].name, "what_.docx");
    let page = w.staff.get(&w.app, &format!("/transfers/{id}")).await;
    assert!(!page.body.contains("<img src=x"), "no HTML from names");
    page.assert_contains("_img src=x onerror=alert(1)_.html");
    assert!(!page.body.contains('\u{202E}'));
    // Contact details and the purpose with a direction override are refused, saying why.
    let page = w
        .app
        .post(
            "/contacts",
            &[
                ("name", "Jo \u{202E}sggolB"),
                ("organisation", "Northshire Children's Services"),
                ("job_title", "Social worker"),
                ("email", "jo.other@northshire.gov.uk"),
                ("phone", PHONE),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    page.assert_contains("change the direction of text");
    let mut d: serde_json::Value =
        serde_json::from_str(&details(w.contact_id, &[("a.txt", 1)])).unwrap();
    d["purpose"] = "Referral \u{202E}lasrefer".into();
    let d = d.to_string();
    let page = upload_from(
        &w.app,
        &mut w.staff,
        multipart(&[
            ("details", None, d.as_bytes()),
            ("file", Some("a.txt"), b"x"),
        ]),
    )
    .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    assert!(
        page.body.contains("change the direction of text"),
        "{}",
        page.body
    );
    let link = release(&mut w, id).await;
    let mut r = recipient_session(&w.app, &link).await;
    unlock(&w.app, &mut r, &link, &passphrase).await;
    let (status, headers, _) = get_bytes(&w.app, &mut r, &format!("{link}/files/2")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers.get(header::CONTENT_DISPOSITION).unwrap(),
        "attachment; filename=\"quote_d_ name.txt\"; filename*=UTF-8''quote_d%3B%20name.txt"
    );
    let (_, headers, _) = get_bytes(&w.app, &mut r, &format!("{link}/files/6")).await;
    let cd = headers
        .get(header::CONTENT_DISPOSITION)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        cd.ends_with("filename*=UTF-8''%C3%89l%C3%A8ve%20%E2%80%93%20notes.txt"),
        "{cd}"
    );
}

pub(crate) async fn api_token(app: &TestApp, browser: &mut Browser) -> String {
    api_token_scoped(app, browser, "staff").await
}

async fn presealed_payloads_are_checked(backend: Backend) {
    let mut w = world(backend).await;
    let token = api_token(&w.app, &mut w.staff).await;
    let post = |body: (String, Vec<u8>)| {
        Request::post("/api/v1/transfers")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, body.0)
            .body(Body::from(body.1))
            .unwrap()
    };
    let d = details(w.contact_id, &[]);
    let passphrase = SecretString::from("orbit kettle lantern marble harbour".to_string());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"pupil notes").unwrap();
    let (sealed, _) = safehand_crypto::payload::seal(
        &[dir.path().join("notes.txt")],
        &safehand_crypto::Recipients::Passphrase(passphrase.clone()),
        Vec::new(),
        &|_| {},
    )
    .unwrap();
    let mut jar = BTreeMap::new();
    // Not age; armored; work factor 21; two stanzas: refused, nothing kept.
    let text = String::from_utf8_lossy(&sealed[..200]).to_string();
    let wf = sealed.iter().position(|&b| b == b'\n').unwrap();
    let header_line_end = sealed[wf + 1..].iter().position(|&b| b == b'\n').unwrap() + wf + 1;
    let mut raised = sealed.clone();
    assert_eq!(
        &raised[header_line_end - 2..header_line_end],
        b"18",
        "{text}"
    );
    raised[header_line_end - 2..header_line_end].copy_from_slice(b"21");
    for (bad, why) in [
        (
            b"PK\x03\x04 this is a zip file, not age".to_vec(),
            "age-encryption.org",
        ),
        (
            b"-----BEGIN AGE ENCRYPTED FILE-----\nYWdl\n-----END AGE ENCRYPTED FILE-----\n"
                .to_vec(),
            "ASCII-armored",
        ),
        (raised, "work factor is 21"),
        (sealed[..header_line_end + 80].to_vec(), "truncated"),
    ] {
        let page = send(
            &w.app.state,
            &mut jar,
            post(multipart(&[
                ("details", None, d.as_bytes()),
                ("payload", Some("p.age"), &bad),
            ])),
        )
        .await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{why}: {}", page.body);
        page.assert_contains(why);
    }
    assert_eq!(transfer_count(&w.app).await, 0);
    assert_eq!(blob_count(&w.app).await, 0);
    // A browser session may not use the API upload (no CSRF there).
    let mut staff_jar = w.staff.jar.clone();
    let (ct, body) = multipart(&[
        ("details", None, d.as_bytes()),
        ("payload", Some("p.age"), &sealed),
    ]);
    let page = send(
        &w.app.state,
        &mut staff_jar,
        Request::post("/api/v1/transfers")
            .header(header::CONTENT_TYPE, ct)
            .body(Body::from(body))
            .unwrap(),
    )
    .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(page.body.contains("token_required"), "{}", page.body);
    // A good one is accepted, released through the API and opens with the sender's passphrase.
    let page = send(
        &w.app.state,
        &mut jar,
        post(multipart(&[
            ("details", None, d.as_bytes()),
            ("payload", Some("p.age"), &sealed),
        ])),
    )
    .await;
    assert_eq!(page.status, StatusCode::CREATED, "{}", page.body);
    let v: serde_json::Value = serde_json::from_str(&page.body).unwrap();
    assert!(v.get("passphrase").is_none());
    assert_eq!(v["sealed_on_server"], false);
    let id = v["id"].as_i64().unwrap();
    let page = send(
        &w.app.state,
        &mut jar,
        Request::post(format!("/api/v1/transfers/{id}/release"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"will_phone": true}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let link = last_mail(&w.app, "Jo.Bloggs@northshire.gov.uk")
        .await
        .1
        .lines()
        .find(|l| l.contains("/r/"))
        .unwrap()
        .trim_start_matches("http://safehand.test")
        .to_string();
    let mut r = recipient_session(&w.app, &link).await;
    unlock(&w.app, &mut r, &link, "orbit kettle lantern marble harbour").await;
    let (status, _, payload) = get_bytes(&w.app, &mut r, &format!("{link}/payload.age")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(payload, sealed, "the payload comes back byte for byte");
}

async fn concurrent_downloads_hold_the_limit(backend: Backend) {
    let mut w = world(backend).await;
    let content = vec![5u8; 400_000];
    let d = serde_json::json!({
        "contact_id": w.contact_id, "purpose": "Records", "classification": "OFFICIAL",
        "download_limit": 2, "files": [{"name": "a.bin", "size": content.len()}],
    })
    .to_string();
    let page = upload_from(
        &w.app,
        &mut w.staff,
        multipart(&[
            ("details", None, d.as_bytes()),
            ("file", Some("a.bin"), &content),
        ]),
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&page.body).unwrap();
    let (id, passphrase) = (
        v["id"].as_i64().unwrap(),
        v["passphrase"].as_str().unwrap().to_string(),
    );
    let link = release(&mut w, id).await;
    let mut r = recipient_session(&w.app, &link).await;
    unlock(&w.app, &mut r, &link, &passphrase).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let state = w.app.state.clone();
        let cookies = r
            .jar
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let path = format!("{link}/files/1");
        tasks.push(tokio::spawn(async move {
            use http_body_util::BodyExt;
            use tower::ServiceExt;
            let req = Request::get(path)
                .header(header::COOKIE, cookies)
                .body(Body::empty())
                .unwrap();
            let resp = safehand_server::app(state).oneshot(req).await.unwrap();
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes().len())
                .unwrap_or(0);
            (status, body)
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let (status, len) = t.await.unwrap();
        if status == StatusCode::OK && len == content.len() {
            ok += 1;
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(ok, 2, "exactly the limit of downloads completed");
    let t = transfers::get(w.app.db(), id).await.unwrap().unwrap();
    assert_eq!(t.downloads, 2);
    assert_eq!(t.state, transfers::State::Downloaded);
}

async fn recall_and_expiry_shred_then_delete(backend: Backend) {
    let mut w = world(backend).await;
    // Recall.
    let (id, passphrase) = send_files(&mut w, &[("a.txt", b"abc")]).await;
    let link = release(&mut w, id).await;
    let mut r = recipient_session(&w.app, &link).await;
    let page = w
        .staff
        .post(&w.app, &format!("/transfers/{id}/recall"), &[])
        .await;
    page.assert_contains("Recalled");
    let t = transfers::get(w.app.db(), id).await.unwrap().unwrap();
    assert_eq!(t.state, transfers::State::Recalled);
    assert!(transfers::header(w.app.db(), id).await.unwrap().is_none());
    assert!(!w.app.state.blobs.exists(&t.blob_key).await.unwrap());
    let page = r
        .post(
            &w.app,
            &format!("{link}/open"),
            &[("passphrase", &passphrase)],
        )
        .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    let page = w
        .staff
        .post(&w.app, &format!("/transfers/{id}/recall"), &[])
        .await;
    assert_eq!(
        page.status,
        StatusCode::BAD_REQUEST,
        "nothing left to recall"
    );
    // Expiry: the sweeper shreds, deletes, and tells the sender it expired unopened.
    let (id2, _) = send_files(&mut w, &[("b.txt", b"def")]).await;
    let link2 = release(&mut w, id2).await;
    let (id3, _) = send_files(&mut w, &[("c.txt", b"ghi")]).await; // never confirmed
    let t2 = transfers::get(w.app.db(), id2).await.unwrap().unwrap();
    w.app.clock.advance(7 * 86_400 + 1);
    let page = w.app.other_browser().get(&w.app, &link2).await;
    assert_eq!(
        page.status,
        StatusCode::NOT_FOUND,
        "expired before the sweeper runs"
    );
    let swept = transfers::sweeper::sweep(w.app.db(), &w.app.state.blobs, w.app.clock.now())
        .await
        .unwrap();
    assert_eq!(swept.ended, 2);
    let t2 = transfers::get(w.app.db(), t2.id).await.unwrap().unwrap();
    assert_eq!(t2.state, transfers::State::Expired);
    assert!(t2.shredded_at.is_some() && t2.blob_deleted_at.is_some());
    assert_eq!(
        transfers::get(w.app.db(), id3)
            .await
            .unwrap()
            .unwrap()
            .state,
        transfers::State::Discarded
    );
    assert_eq!(blob_count(&w.app).await, 0);
    let (subject, _) = last_mail(&w.app, "sam@school.sch.uk").await;
    assert_eq!(subject, "Your transfer expired unopened");
    // A second pass (another instance) finds nothing to do.
    let again = transfers::sweeper::sweep(w.app.db(), &w.app.state.blobs, w.app.clock.now())
        .await
        .unwrap();
    assert_eq!(again, transfers::sweeper::Swept::default());
    let a = actions(&w.app).await;
    for expected in [
        "transfer_recalled",
        "transfer_expired",
        "transfer_discarded",
    ] {
        assert!(a.contains(&expected.to_string()), "{expected} in {a:?}");
    }
}

/// The whole journey on both databases and both blob stores, with mail delivered by the real
/// SMTP server tests/run starts: the test reads the messages it received and follows them.
mod journey {
    use super::*;

    crate::both_databases_and_stores!(whole_journey_through_real_smtp);

    async fn whole_journey_through_real_smtp(backend: Backend, kind: BlobKind) {
        let Some(smtp) = smtp_addr() else { return };
        let Some(mut app) = TestApp::with_blobs(backend, kind).await else {
            return;
        };
        let worker = safehand_server::mail::Worker::new(
            app.db().clone(),
            app.clock.clone(),
            &test_smtp_delivery(smtp),
            "Safehand <safehand@school.sch.uk>",
            Default::default(),
        )
        .unwrap();
        let admin = setup_admin(&mut app).await;
        let sam_email = unique_address("sam");
        let (_, staff) = invite(&mut app, &sam_email, "Sam Staff", &["staff"]).await;
        let jo = unique_address("jo");
        let contact_id = add_contact(&mut app, &jo, "Jo Bloggs").await;
        verify_contact(&mut app, contact_id).await;
        let mut w = World {
            app,
            admin,
            staff,
            contact_id,
        };
        let content: Vec<u8> = (0..2_000_000u32).map(|i| (i % 239) as u8).collect();
        let (id, passphrase) = send_files(&mut w, &[("minutes.docx", &content)]).await;
        let page = confirm_release(&mut w, id).await;
        page.assert_contains("The link will be emailed to the recipient in 60 seconds");
        // The link mail waits for the undo window.
        w.app.clock.advance(61);
        worker.run_once().await.unwrap();
        let mail = wait_for_mail(&jo).await;
        assert_eq!(mail.subject(), "A secure file is waiting for you");
        assert!(!mail.raw.contains("minutes.docx") && !mail.raw.contains(&passphrase));
        let link = mail
            .first_link()
            .unwrap()
            .trim_start_matches("http://safehand.test")
            .to_string();
        let mut r = w.app.other_browser();
        r.get(&w.app, &link)
            .await
            .assert_contains("Email me a code");
        r.post(&w.app, &format!("{link}/code"), &[]).await;
        worker.run_once().await.unwrap();
        let mails =
            wait_for_mail_in(&smtp_maildir(), &jo, 2, std::time::Duration::from_secs(10)).await;
        let code_mail = mails
            .iter()
            .find(|m| m.subject() == "Your Safehand code")
            .unwrap();
        let code = code_from(&code_mail.body);
        let page = r
            .post(&w.app, &format!("{link}/code/check"), &[("code", &code)])
            .await;
        assert_eq!(page.location(), format!("{link}/open"));
        unlock(&w.app, &mut r, &link, &passphrase).await;
        let (status, _, bytes) = get_bytes(&w.app, &mut r, &format!("{link}/files/1")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(bytes, content);
        worker.run_once().await.unwrap();
        let receipt = wait_for_mail(&sam_email).await;
        assert_eq!(receipt.subject(), "Your transfer was downloaded");
        // Recall what is left: header first, then the blob, on this store.
        let t = transfers::get(w.app.db(), id).await.unwrap().unwrap();
        assert!(w.app.state.blobs.exists(&t.blob_key).await.unwrap());
        w.staff
            .post(&w.app, &format!("/transfers/{id}/recall"), &[])
            .await;
        let t = transfers::get(w.app.db(), id).await.unwrap().unwrap();
        assert!(t.shredded_at.is_some());
        assert!(!w.app.state.blobs.exists(&t.blob_key).await.unwrap());
    }
}

// ---------------------------------------------------------------------------------------------
// The blob store failing during an upload: a full disk (a 3 MiB tmpfs as the blob folder) and
// an S3 store that goes away half-way (SeaweedFS behind a proxy the test cuts).

/// A body that arrives in pieces: the first `first` bytes at once, the rest after `gate`.
fn gated_body(body: Vec<u8>, first: usize, gate: tokio::sync::oneshot::Receiver<()>) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    tokio::spawn(async move {
        for piece in body[..first].chunks(256 << 10) {
            if tx.send(Ok(piece.to_vec())).await.is_err() {
                return;
            }
        }
        let _ = gate.await;
        for piece in body[first..].chunks(256 << 10) {
            if tx.send(Ok(piece.to_vec())).await.is_err() {
                return;
            }
        }
    });
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

async fn upload_stream(app: &TestApp, browser: &mut Browser, ct: String, body: Body) -> Page {
    browser.get(app, "/transfers/new").await;
    let csrf = crate::common::csrf_for(&app.state, &browser.jar);
    let req = Request::post("/transfers/new")
        .header(header::CONTENT_TYPE, ct)
        .header("x-csrf-token", csrf)
        .body(body)
        .unwrap();
    send(&app.state, &mut browser.jar, req).await
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A small tmpfs, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mib: u32) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "could not mount a tmpfs (the tests run as root under tests/run; CI=true forbids skipping)"
            );
            eprintln!("SKIPPED: mounting a tmpfs needs root");
            return None;
        }
        Some(Self { dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

async fn full_disk_during_upload_keeps_nothing(backend: Backend) {
    let Some(disk) = SmallDisk::mount(3) else {
        return;
    };
    let blob_dir = disk.dir.path().join("blobs");
    let blobs = TestBlobs {
        blobs: safehand_server::blobs::Blobs::local(&blob_dir).unwrap(),
        dir: None,
    };
    let app = TestApp::with_blobs_and_settings(backend, blobs, |_| {}).await;
    let mut w = world_on(app).await;
    let content: Vec<u8> = (0..8_000_000u32).map(|i| (i % 241) as u8).collect();
    let d = details(w.contact_id, &[("census.xlsx", content.len())]);
    let page = upload_from(
        &w.app,
        &mut w.staff,
        multipart(&[
            ("details", None, d.as_bytes()),
            ("file", Some("census.xlsx"), &content),
        ]),
    )
    .await;
    assert_eq!(
        page.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        page.body
    );
    page.assert_contains("nothing was saved");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(transfer_count(&w.app).await, 0);
    assert_eq!(files_under(&blob_dir), Vec::<std::path::PathBuf>::new());
    // With room again, the same upload goes through.
    let small = vec![5u8; 100_000];
    let (id, _) = send_files(&mut w, &[("census.xlsx", &small)]).await;
    assert!(id > 0);
    drop(w);
    drop(disk);
}

/// A TCP proxy to the S3 store that can be cut: open connections drop and new ones are
/// refused, as when the store's network goes away.
struct CutProxy {
    addr: std::net::SocketAddr,
    upstream_bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
    cut: tokio::sync::watch::Sender<bool>,
}

impl CutProxy {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream_bytes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (cut, cut_rx) = tokio::sync::watch::channel(false);
        let counter = upstream_bytes.clone();
        tokio::spawn(async move {
            let mut stop = cut_rx.clone();
            loop {
                let conn = tokio::select! {
                    _ = stop.changed() => break, // the listener closes: connections refused
                    c = listener.accept() => c,
                };
                let Ok((client, _)) = conn else { continue };
                let mut stop = cut_rx.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = async {
                        let mut buf = vec![0u8; 64 << 10];
                        while let Ok(n) = cr.read(&mut buf).await {
                            if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            counter.fetch_add(n as u64, Ordering::SeqCst);
                        }
                    };
                    let down = async {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    };
                    tokio::select! {
                        _ = stop.changed() => {}
                        _ = async { tokio::join!(up, down) } => {}
                    }
                });
            }
        });
        Self {
            addr,
            upstream_bytes,
            cut,
        }
    }
}

async fn unreachable_s3_during_upload_keeps_nothing(backend: Backend) {
    use std::sync::atomic::Ordering;
    let Some(mut settings) = s3_settings() else {
        return;
    };
    let upstream: std::net::SocketAddr = settings
        .endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("SAFEHAND_TEST_S3_ENDPOINT is http://HOST:PORT");
    let proxy = CutProxy::start(upstream).await;
    let direct = safehand_server::blobs::Blobs::s3(&settings).unwrap();
    settings.endpoint = format!("http://{}", proxy.addr);
    let prefix = format!("test-{}", hex::encode(rand::random::<[u8; 8]>()));
    let blobs = TestBlobs {
        blobs: safehand_server::blobs::Blobs::s3(&settings)
            .unwrap()
            .within(&prefix)
            .unwrap(),
        dir: None,
    };
    let direct = direct.within(&prefix).unwrap();
    let app = TestApp::with_blobs_and_settings(backend, blobs, |_| {}).await;
    let mut w = world_on(app).await;
    let content: Vec<u8> = (0..24_000_000u32).map(|i| (i % 239) as u8).collect();
    let d = details(w.contact_id, &[("register.pdf", content.len())]);
    let (ct, body) = multipart(&[
        ("details", None, d.as_bytes()),
        ("file", Some("register.pdf"), &content),
    ]);
    let (open_gate, gate) = tokio::sync::oneshot::channel();
    let first = 14 << 20;
    let cutter = {
        let counter = proxy.upstream_bytes.clone();
        let cut = proxy.cut.clone();
        tokio::spawn(async move {
            // Once a part (5 MiB) has reached the store, the store goes away.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while counter.load(Ordering::SeqCst) < 6 << 20 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no part reached the store"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            cut.send(true).unwrap();
            let _ = open_gate.send(());
        })
    };
    let page = upload_stream(&w.app, &mut w.staff, ct, gated_body(body, first, gate)).await;
    cutter.await.unwrap();
    assert_eq!(
        page.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        page.body
    );
    page.assert_contains("nothing was saved");
    assert_eq!(transfer_count(&w.app).await, 0);
    let left = direct.list("").await.unwrap();
    assert!(left.is_empty(), "objects left in the bucket: {left:?}");
    let audit = actions(&w.app).await;
    assert!(!audit.iter().any(|a| a == "transfer_sealed"), "{audit:?}");
}

/// Two instances sweeping at the same moment: every expired transfer is ended, shredded,
/// audited and reported to its sender exactly once, and every blob deleted.
async fn two_sweepers_at_once_do_each_job_once(backend: Backend) {
    let mut w = world(backend).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let name = format!("f{i}.txt");
        let (id, _) = send_files(&mut w, &[(name.as_str(), b"content")]).await;
        release(&mut w, id).await;
        ids.push(id);
    }
    w.app.clock.advance(7 * 86_400 + 1);
    let now = w.app.clock.now();
    let (a, b) = tokio::join!(
        transfers::sweeper::sweep(w.app.db(), &w.app.state.blobs, now),
        transfers::sweeper::sweep(w.app.db(), &w.app.state.blobs, now),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.ended + b.ended, 6, "{a:?} {b:?}");
    assert_eq!(a.blobs_deleted + b.blobs_deleted, 6, "{a:?} {b:?}");
    assert_eq!(blob_count(&w.app).await, 0);
    for id in ids {
        let t = transfers::get(w.app.db(), id).await.unwrap().unwrap();
        assert_eq!(t.state, transfers::State::Expired);
        assert!(t.shredded_at.is_some() && t.blob_deleted_at.is_some());
    }
    let expired = actions(&w.app)
        .await
        .into_iter()
        .filter(|a| a == "transfer_expired")
        .count();
    assert_eq!(expired, 6);
    let told = mails_to(&w.app, "sam@school.sch.uk")
        .await
        .into_iter()
        .filter(|(subject, _)| subject == "Your transfer expired unopened")
        .count();
    assert_eq!(told, 6);
}

// ---------------------------------------------------------------------------------------------
// The undo window (issue 6): the link mail waits in the outbox; undo inside the window cancels
// it and seals the transfer again; after it the mail goes and undo is refused.

const LINK_SUBJECT: &str = "A secure file is waiting for you";

/// A mail worker writing .eml files into `dir` on the test's clock.
fn folder_worker(app: &TestApp, dir: &std::path::Path) -> safehand_server::mail::Worker {
    safehand_server::mail::Worker::new(
        app.db().clone(),
        app.clock.clone(),
        &safehand_server::mail::Delivery::Folder(dir.to_path_buf()),
        "Safehand <safehand@school.sch.uk>",
        Default::default(),
    )
    .unwrap()
}

/// The link mails the worker delivered into `dir`.
fn delivered_links(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "eml") {
            let text = std::fs::read_to_string(&path).unwrap();
            if text.contains(LINK_SUBJECT) {
                assert!(text.to_lowercase().contains("jo.bloggs@northshire.gov.uk"));
                out.push(text);
            }
        }
    }
    out
}

/// States of the link mails in the outbox, oldest first.
async fn link_mail_states(app: &TestApp) -> Vec<String> {
    sqlx::query("select state from mail_outbox where subject = $1 order by mail_id")
        .bind(LINK_SUBJECT)
        .fetch_all(app.db().pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get("state"))
        .collect()
}

async fn undo_window_holds_the_link_mail_back(backend: Backend) {
    let mut w = world(backend).await;
    let out = tempfile::tempdir().unwrap();
    let worker = folder_worker(&w.app, out.path());
    let (id, _) = send_files(&mut w, &[("a.txt", b"abc")]).await;
    let page = confirm_release(&mut w, id).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.assert_contains("The link will be emailed to the recipient in 60 seconds");
    page.assert_contains("Sending in 60 seconds");
    page.assert_contains(&format!("action=\"/transfers/{id}/undo\""));
    assert!(!page.body.contains("Link emailed"), "nothing has left yet");
    // The dashboard and the transfer page count down (computed on the server; a script
    // ticks it on in the browser) with an Undo button on each.
    w.app.clock.advance(15);
    let page = w.staff.get(&w.app, "/transfers").await;
    page.assert_contains("(in 45 s); you can still undo");
    page.assert_contains(&format!(
        "<form id=\"undo-{id}\" class=\"inline\" method=\"post\" action=\"/transfers/{id}/undo\">"
    ));
    page.assert_contains("data-seconds-left=\"45\"");
    page.assert_contains("<script src=\"/static/countdown.js\"></script>");
    let home = w.staff.get(&w.app, "/").await;
    home.assert_contains("Being sent now: you can still take these back");
    home.assert_contains("To Jo.Bloggs@northshire.gov.uk: the link will be emailed at");
    home.assert_contains(&format!("action=\"/transfers/{id}/undo\""));
    let script = w.staff.get(&w.app, "/static/countdown.js").await;
    assert_eq!(script.status, StatusCode::OK);
    script.assert_contains("data-seconds-left");
    let page = w.staff.get(&w.app, &format!("/transfers/{id}")).await;
    page.assert_contains("Sending in 45 seconds");
    page.assert_contains("(in 45 s)");
    // Inside the window the worker does not send it.
    worker.run_once().await.unwrap();
    assert!(delivered_links(out.path()).is_empty());
    // Undo: the mail is cancelled and the transfer is sealed again, ready to send again.
    let page = w
        .staff
        .post(&w.app, &format!("/transfers/{id}/undo"), &[])
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.assert_contains("Undone: nothing was emailed");
    page.assert_contains("Send the link to the recipient");
    let t = transfers::get(w.app.db(), id).await.unwrap().unwrap();
    assert_eq!(t.state, transfers::State::Sealed);
    assert!(t.released_at.is_none() && t.undo_until.is_none());
    assert_eq!(link_mail_states(&w.app).await, ["cancelled"]);
    let (_, body) = last_mail(&w.app, "Jo.Bloggs@northshire.gov.uk").await;
    assert!(body.is_empty(), "the cancelled mail's link is erased");
    // Well after the window (within the sender's idle time-out): still nothing delivered.
    w.app.clock.advance(300);
    worker.run_once().await.unwrap();
    assert!(delivered_links(out.path()).is_empty());
    // Sent again: after the window the mail goes, and undo is refused (recall remains).
    let link = release(&mut w, id).await;
    worker.run_once().await.unwrap();
    let delivered = delivered_links(out.path());
    assert_eq!(delivered.len(), 1);
    assert!(delivered[0].contains(&link));
    let page = w
        .staff
        .post(&w.app, &format!("/transfers/{id}/undo"), &[])
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    page.assert_contains("Too late to undo");
    page.assert_contains("Recall this transfer");
    page.assert_contains("Link emailed");
    // After the window neither the home page nor the dashboard offers undo.
    let home = w.staff.get(&w.app, "/").await;
    assert!(!home.body.contains("Being sent now"), "{}", home.body);
    let list = w.staff.get(&w.app, "/transfers").await;
    assert!(!list.body.contains("/undo\""), "{}", list.body);
    assert_eq!(
        transfers::get(w.app.db(), id).await.unwrap().unwrap().state,
        transfers::State::Released
    );
    assert_eq!(link_mail_states(&w.app).await, ["cancelled", "sent"]);
    // A recall inside the window cancels the mail too.
    let (id2, _) = send_files(&mut w, &[("b.txt", b"def")]).await;
    w.staff
        .post(
            &w.app,
            &format!("/transfers/{id2}/release"),
            &[("will_phone", "yes")],
        )
        .await
        .assert_contains("Sending in 60 seconds");
    w.staff
        .post(&w.app, &format!("/transfers/{id2}/recall"), &[])
        .await
        .assert_contains("Recalled");
    w.app.clock.advance(120);
    worker.run_once().await.unwrap();
    assert_eq!(delivered_links(out.path()).len(), 1);
    assert_eq!(
        link_mail_states(&w.app).await,
        ["cancelled", "sent", "cancelled"]
    );
    // Through the API: release, the countdown, undo.
    let token = api_token(&w.app, &mut w.staff).await;
    let (id3, _) = send_files(&mut w, &[("c.txt", b"ghi")]).await;
    let api = |method: &str, path: String, body: &str| {
        Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let mut jar = BTreeMap::new();
    let page = send(
        &w.app.state,
        &mut jar,
        api(
            "POST",
            format!("/api/v1/transfers/{id3}/release"),
            r#"{"will_phone": true}"#,
        ),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let v: serde_json::Value = serde_json::from_str(&page.body).unwrap();
    assert_eq!(v["state"], "released");
    assert_eq!(v["undo_seconds_left"], 60);
    let page = send(
        &w.app.state,
        &mut jar,
        api("POST", format!("/api/v1/transfers/{id3}/undo"), ""),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let v: serde_json::Value = serde_json::from_str(&page.body).unwrap();
    assert_eq!(v["state"], "sealed");
    let a = actions(&w.app).await;
    assert_eq!(
        a.iter()
            .filter(|x| x.as_str() == "transfer_release_undone")
            .count(),
        2,
        "{a:?}"
    );
    assert!(matches!(
        audit::verify(w.app.db()).await.unwrap(),
        audit::Verification::Intact { .. }
    ));
}

async fn undo_window_of_zero_sends_at_once(backend: Backend) {
    let mut w = world(backend).await;
    let out = tempfile::tempdir().unwrap();
    let worker = folder_worker(&w.app, out.path());
    let page = w.app.get("/admin/policy").await;
    page.assert_contains("id=\"undo_window_secs\"");
    // Out of range is refused with the field named.
    let mut form = vec![
        ("unverified_contacts", "refuse"),
        ("default_expiry_days", "7"),
        ("max_expiry_days", "30"),
        ("default_download_limit", "3"),
        ("max_size", "5 GiB"),
        ("wrong_passphrase_limit", "5"),
        ("verification_valid_months", "12"),
        ("max_token_days", "90"),
        ("undo_window_secs", "601"),
    ];
    let page = w.app.post("/admin/policy", &form).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    page.assert_contains("href=\"#undo_window_secs\"");
    page.assert_contains("from 0 to 600");
    form.pop();
    form.push(("undo_window_secs", "0"));
    w.app
        .post("/admin/policy", &form)
        .await
        .assert_contains("Policy saved.");
    let (id, _) = send_files(&mut w, &[("a.txt", b"abc")]).await;
    let page = confirm_release(&mut w, id).await;
    page.assert_contains("The link has been emailed");
    assert!(!page.body.contains("/undo\""), "no undo without a window");
    // Due at once: delivered without the clock moving.
    worker.run_once().await.unwrap();
    assert_eq!(delivered_links(out.path()).len(), 1);
    let page = w
        .staff
        .post(&w.app, &format!("/transfers/{id}/undo"), &[])
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    page.assert_contains("Too late to undo");
    assert_eq!(link_mail_states(&w.app).await, ["sent"]);
}
