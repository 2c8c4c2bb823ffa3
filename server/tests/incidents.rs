//! Incidents (P11) through the router, on SQLite and PostgreSQL: reporting a problem recalls
//! the transfer and mails the admins; the incident page shows the evidence of access (with
//! addresses) and the 72-hour ICO clock; who may report and see; the assessment, closing, and
//! the record exported as JSON and PDF; the audit records.

use crate::common::*;
use crate::transfers::{
    actions, api_token, get_bytes, last_mail, mails_to, release, send_files, world, World,
};
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use safehand_server::audit;
use safehand_server::transfers;
use sqlx::Row;
use std::collections::BTreeMap;
use std::net::SocketAddr;

crate::both_databases!(
    incident_on_an_undownloaded_transfer_recalls_it_and_shows_no_evidence,
    incident_on_a_downloaded_transfer_lists_the_evidence_with_addresses,
    only_the_sender_approvers_and_admins_report_and_only_admins_see_all,
    assessment_close_and_the_exported_record,
    the_api_reports_assesses_and_closes,
    the_clock_runs_from_when_the_school_found_out,
);

const ADMIN: &str = "ada@school.sch.uk";
const RECIPIENT: &str = "Jo.Bloggs@northshire.gov.uk";
const RECIPIENT_IP: &str = "203.0.113.7";
const SCANNER_IP: &str = "198.51.100.25";

/// A request as if from `ip` (the server reads the peer address from the connection).
async fn send_from(
    app: &TestApp,
    jar: &mut BTreeMap<String, String>,
    ip: &str,
    mut req: Request<Body>,
) -> Page {
    let peer: SocketAddr = format!("{ip}:40000").parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(peer));
    send(&app.state, jar, req).await
}

async fn get_from(app: &TestApp, jar: &mut BTreeMap<String, String>, ip: &str, path: &str) -> Page {
    send_from(
        app,
        jar,
        ip,
        Request::get(path).body(Body::empty()).unwrap(),
    )
    .await
}

async fn post_from(
    app: &TestApp,
    jar: &mut BTreeMap<String, String>,
    ip: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> Page {
    assert!(jar.contains_key("safehand_csrf"), "a page was loaded first");
    let csrf = crate::common::csrf_for(&app.state, jar);
    let mut all = vec![("csrf", csrf.as_str())];
    all.extend_from_slice(fields);
    let req = Request::post(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(serde_urlencoded::to_string(&all).unwrap()))
        .unwrap();
    send_from(app, jar, ip, req).await
}

async fn report(w: &mut World, id: i64, kind: &str, description: &str) -> Page {
    w.staff
        .post(
            &w.app,
            &format!("/transfers/{id}/incident"),
            &[("kind", kind), ("description", description)],
        )
        .await
}

async fn incident_json(app: &mut TestApp, id: i64) -> serde_json::Value {
    let page = app.get(&format!("/api/v1/incidents/{id}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    serde_json::from_str(&page.body).unwrap()
}

fn audit_intact(v: audit::Verification) -> bool {
    matches!(v, audit::Verification::Intact { .. })
}

// ---------------------------------------------------------------------------------------------

async fn incident_on_an_undownloaded_transfer_recalls_it_and_shows_no_evidence(backend: Backend) {
    let mut w = world(backend).await;
    let (id, _) = send_files(&mut w, &[("referral.txt", b"notes")]).await;
    let link = release(&mut w, id).await;
    let page = w.staff.get(&w.app, &format!("/transfers/{id}")).await;
    page.assert_contains("Report a problem");
    // Nothing chosen, nothing said: the form says what to fix and nothing happens.
    let page = report(&mut w, id, "", "").await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    page.assert_contains("Choose what went wrong.");
    page.assert_contains("Say what happened");
    assert_eq!(
        transfers::get(w.app.db(), id).await.unwrap().unwrap().state,
        transfers::State::Released
    );
    let reported_at = w.app.clock.now();
    let page = report(
        &mut w,
        id,
        "wrong_recipient",
        "Meant for Jo Bloggs at Southshire; it is about pupil Amy Example.",
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.assert_contains("Problem reported as incident 1.");
    page.assert_contains("The transfer was recalled at once");
    page.assert_contains("72 h 0 min left to decide whether to report to the ICO");
    // Recalled: the header is gone, the link is dead.
    let t = transfers::get(w.app.db(), id).await.unwrap().unwrap();
    assert_eq!(t.state, transfers::State::Recalled);
    assert!(transfers::header(w.app.db(), id).await.unwrap().is_none());
    let mut someone = w.app.other_browser();
    assert_eq!(
        someone.get(&w.app, &link).await.status,
        StatusCode::NOT_FOUND
    );
    // The admin is mailed at once with the deadline and the link, and no personal data.
    let (subject, body) = last_mail(&w.app, ADMIN).await;
    assert_eq!(
        subject,
        "Safehand incident 1 reported: assess it within 72 hours"
    );
    let deadline = safehand_server::clock::format_time(reported_at + 72 * 3600);
    assert!(
        body.contains(&format!("The 72-hour ICO deadline is {deadline}")),
        "{body}"
    );
    assert!(body.contains("http://safehand.test/incidents/1"), "{body}");
    assert!(body.contains("Sent to the wrong person"), "{body}");
    for private in ["Amy", "Southshire", "northshire", "referral.txt"] {
        assert!(
            !body.to_lowercase().contains(&private.to_lowercase()),
            "{private} in {body}"
        );
    }
    // The description is sealed at rest.
    let sealed: Vec<u8> = sqlx::query("select description_sealed from incidents")
        .fetch_one(w.app.db().pool())
        .await
        .unwrap()
        .get("description_sealed");
    assert!(!sealed.windows(3).any(|x| x == b"Amy"));
    // The admin's incident page: no evidence of access, the clock running. (Signing in again
    // moves the clock on 30 s.)
    w.app.clock.advance(30 * 3600 + 48 * 60 - 30);
    sign_in(&mut w.app, &w.admin.clone()).await;
    let page = w.app.get("/incidents/1").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.assert_contains("No evidence the recipient opened the link");
    page.assert_contains("41 h 12 min left to decide whether to report to the ICO");
    page.assert_contains("Amy Example");
    page.assert_contains("referral.txt");
    let v = incident_json(&mut w.app, 1).await;
    assert_eq!(v["evidence"]["downloads"].as_array().unwrap().len(), 0);
    assert_eq!(v["evidence"]["link_opened"].as_array().unwrap().len(), 0);
    assert_eq!(v["recalled"], true);
    assert_eq!(v["seconds_left"], 72 * 3600 - (30 * 3600 + 48 * 60));
    // Past the deadline the page says it is overdue.
    w.app.clock.advance(42 * 3600 - 30);
    sign_in(&mut w.app, &w.admin.clone()).await;
    w.app
        .get("/incidents/1")
        .await
        .assert_contains("Overdue: the 72-hour ICO deadline passed 0 h 48 min ago");
    let page = w.app.get("/incidents").await;
    page.assert_contains("Incident 1");
    page.assert_contains("Overdue");
    let a = actions(&w.app).await;
    for expected in ["transfer_recalled", "incident_reported"] {
        assert!(a.contains(&expected.to_string()), "{expected} in {a:?}");
    }
    assert!(audit_intact(audit::verify(w.app.db()).await.unwrap()));
}

async fn incident_on_a_downloaded_transfer_lists_the_evidence_with_addresses(backend: Backend) {
    let mut w = world(backend).await;
    let (id, passphrase) = send_files(&mut w, &[("a.txt", b"abc"), ("b.txt", b"def")]).await;
    let link = release(&mut w, id).await;
    // A mail scanner opens the link; then the recipient, from their own address.
    let mut scanner = BTreeMap::new();
    for _ in 0..2 {
        assert_eq!(
            get_from(&w.app, &mut scanner, SCANNER_IP, &link)
                .await
                .status,
            StatusCode::OK
        );
    }
    let mut r = BTreeMap::new();
    assert_eq!(
        get_from(&w.app, &mut r, RECIPIENT_IP, &link).await.status,
        StatusCode::OK
    );
    w.app.clock.advance(60);
    let page = post_from(&w.app, &mut r, RECIPIENT_IP, &format!("{link}/code"), &[]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let code = crate::transfers::code_from(&last_mail(&w.app, RECIPIENT).await.1);
    let wrong = if code == "00000000" {
        "11111111"
    } else {
        "00000000"
    };
    let page = post_from(
        &w.app,
        &mut r,
        RECIPIENT_IP,
        &format!("{link}/code/check"),
        &[("code", wrong)],
    )
    .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    let page = post_from(
        &w.app,
        &mut r,
        RECIPIENT_IP,
        &format!("{link}/code/check"),
        &[("code", &code)],
    )
    .await;
    assert_eq!(page.location(), format!("{link}/open"), "{}", page.body);
    let page = post_from(
        &w.app,
        &mut r,
        RECIPIENT_IP,
        &format!("{link}/open"),
        &[("passphrase", "not-the-words")],
    )
    .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    let page = post_from(
        &w.app,
        &mut r,
        RECIPIENT_IP,
        &format!("{link}/open"),
        &[("passphrase", &passphrase)],
    )
    .await;
    assert_eq!(page.location(), format!("{link}/files"), "{}", page.body);
    // Three downloads of three allowed: one file, the zip, the .age payload.
    for item in ["files/1", "all.zip", "payload.age"] {
        let page = get_from(&w.app, &mut r, RECIPIENT_IP, &format!("{link}/{item}")).await;
        assert_eq!(page.status, StatusCode::OK, "{item}");
        // Let the completion (recorded when the body ended) commit.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        transfers::get(w.app.db(), id).await.unwrap().unwrap().state,
        transfers::State::Downloaded
    );
    // Reported afterwards: nothing left to recall, and the page says so.
    let page = report(
        &mut w,
        id,
        "wrong_file",
        "The wrong year group's list was attached.",
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.assert_contains(
        "The transfer had already ended (downloaded), so there was nothing to recall.",
    );
    let (subject, body) = last_mail(&w.app, ADMIN).await;
    assert!(subject.starts_with("Safehand incident 1 reported"));
    assert!(body.contains("nothing to recall"), "{body}");
    let page = w.app.get("/incidents/1").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(!page
        .body
        .contains("No evidence the recipient opened the link"));
    for expected in [
        "Link page opened (this may be a mail scanner)",
        SCANNER_IP,
        RECIPIENT_IP,
        "Code requested",
        "Wrong code entered",
        "Right code entered",
        "Wrong passphrase",
        "Right passphrase",
        "file 1 (a.txt)",
        "all files (zip)",
        "encrypted payload (.age)",
        "Downloads: 3 completed, 0 started but not finished.",
        "72 h 0 min left",
    ] {
        page.assert_contains(expected);
    }
    let v = incident_json(&mut w.app, 1).await;
    let e = &v["evidence"];
    assert_eq!(v["recalled"], false);
    // One view recorded per address, however often the scanner looked.
    let views: Vec<&str> = e["link_opened"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["address"].as_str().unwrap())
        .collect();
    assert_eq!(views, vec![SCANNER_IP, RECIPIENT_IP]);
    assert_eq!(e["codes_requested"][0]["address"], RECIPIENT_IP);
    assert_eq!(e["codes_entered"].as_array().unwrap().len(), 2);
    assert_eq!(e["wrong_passphrases"], 1);
    assert_eq!(e["unlocked"], true);
    let downloads = e["downloads"].as_array().unwrap();
    assert_eq!(downloads.len(), 3);
    assert!(downloads
        .iter()
        .all(|d| d["address"] == RECIPIENT_IP && d["completed_at"].is_string()));
    assert!(audit_intact(audit::verify(w.app.db()).await.unwrap()));
}

async fn only_the_sender_approvers_and_admins_report_and_only_admins_see_all(backend: Backend) {
    let mut w = world(backend).await;
    let (id, _) = send_files(&mut w, &[("a.txt", b"abc")]).await;
    let (_, mut eve) = invite(&mut w.app, "eve@school.sch.uk", "Eve Staff", &["staff"]).await;
    let (_, mut tess) = invite(
        &mut w.app,
        "tess@school.sch.uk",
        "Tess Tech",
        &["technician"],
    )
    .await;
    let (_, mut amir) = invite(
        &mut w.app,
        "amir@school.sch.uk",
        "Amir Approver",
        &["approver"],
    )
    .await;
    let fields = [
        ("kind", "interception"),
        ("description", "Someone else may have the link."),
    ];
    for (who, b) in [("staff", &mut eve), ("technician", &mut tess)] {
        let path = format!("/transfers/{id}/incident");
        assert_eq!(
            b.get(&w.app, &path).await.status,
            StatusCode::NOT_FOUND,
            "{who}"
        );
        assert_eq!(
            b.post(&w.app, &path, &fields).await.status,
            StatusCode::NOT_FOUND,
            "{who}"
        );
    }
    let n: i64 = sqlx::query("select count(*) as n from incidents")
        .fetch_one(w.app.db().pool())
        .await
        .unwrap()
        .get("n");
    assert_eq!(n, 0, "nothing reported by people who may not");
    assert_eq!(
        transfers::get(w.app.db(), id).await.unwrap().unwrap().state,
        transfers::State::Sealed
    );
    // An approver may report on anyone's transfer (found by number).
    let page = amir
        .get(&w.app, &format!("/incidents/report?transfer={id}"))
        .await;
    assert_eq!(page.location(), format!("/transfers/{id}/incident"));
    let page = amir.get(&w.app, &format!("/transfers/{id}/incident")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let page = amir
        .post(&w.app, &format!("/transfers/{id}/incident"), &fields)
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.assert_contains("Problem reported as incident 1.");
    // The reporter sees their own incident; the sender and other staff do not; only admins
    // see the list.
    assert_eq!(
        amir.get(&w.app, "/incidents/1").await.status,
        StatusCode::OK
    );
    assert_eq!(
        w.staff.get(&w.app, "/incidents/1").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        eve.get(&w.app, "/incidents/1").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        eve.get(&w.app, "/api/v1/incidents/1").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        eve.get(&w.app, "/incidents").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        amir.get(&w.app, "/incidents").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(w.app.get("/incidents/1").await.status, StatusCode::OK);
    // The sender still can report on their own transfer after it ended: a second incident.
    let page = report(&mut w, id, "other", "Following up the approver's report.").await;
    page.assert_contains("Problem reported as incident 2.");
    page.assert_contains("The transfer had already ended (recalled)");
    w.staff
        .get(&w.app, &format!("/transfers/{id}"))
        .await
        .assert_contains("href=\"/incidents/2\"");
}

async fn assessment_close_and_the_exported_record(backend: Backend) {
    let mut w = world(backend).await;
    let (id, _) = send_files(&mut w, &[("list.csv", b"name,year\n")]).await;
    let page = report(
        &mut w,
        id,
        "wrong_recipient",
        "Sent to the wrong social worker.",
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    // Closing needs an assessment.
    let page = w.app.post("/incidents/1/close", &[]).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    page.assert_contains("Record the assessment before closing the incident.");
    // An incomplete assessment, and one that contradicts itself, are refused with reasons.
    let page = w
        .app
        .post("/incidents/1/assess", &[("risk", "likely")])
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    page.assert_contains("Say whether it must be reported to the ICO.");
    page.assert_contains("Give the reason for the decision.");
    let complete = |reportable: &'static str| {
        vec![
            ("risk", "likely"),
            (
                "risk_notes",
                "One pupil's safeguarding history seen by another council.",
            ),
            ("reportable", reportable),
            ("decision", "Reported to the ICO, reference IC-123456."),
            (
                "reason",
                "Special category data reached the wrong organisation.",
            ),
            (
                "actions",
                "The other council confirmed deletion in writing.",
            ),
        ]
    };
    let page = w.app.post("/incidents/1/assess", &complete("no")).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    page.assert_contains("must be reported to the ICO: answer yes");
    // Only admins assess.
    let page = w
        .staff
        .post(&w.app, "/incidents/1/assess", &complete("yes"))
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let page = w.app.post("/incidents/1/assess", &complete("yes")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.assert_contains("Assessment recorded.");
    page.assert_contains("IC-123456");
    let sealed: Vec<u8> = sqlx::query("select assessment_sealed from incidents")
        .fetch_one(w.app.db().pool())
        .await
        .unwrap()
        .get("assessment_sealed");
    assert!(
        !sealed.windows(9).any(|x| x == b"IC-123456"),
        "the assessment is sealed"
    );
    w.app.clock.advance(600);
    let page = w.app.post("/incidents/1/close", &[]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.assert_contains("Incident closed.");
    page.assert_contains("Closed ");
    let page = w.app.post("/incidents/1/assess", &complete("yes")).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    page.assert_contains("This incident is closed");
    // The record as JSON.
    let mut admin = Browser {
        jar: w.app.jar.clone(),
    };
    let (status, headers, bytes) = get_bytes(&w.app, &mut admin, "/incidents/1.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers.get(header::CONTENT_TYPE).unwrap(),
        "application/json"
    );
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["state"], "closed");
    assert_eq!(v["kind"], "wrong_recipient");
    assert_eq!(v["description"], "Sent to the wrong social worker.");
    assert_eq!(v["assessment"]["reportable_to_ico"], true);
    assert_eq!(
        v["assessment"]["decision"],
        "Reported to the ICO, reference IC-123456."
    );
    assert_eq!(v["transfer"]["files"][0], "list.csv");
    assert_eq!(v["closed_by"], "Ada Admin (ada@school.sch.uk)");
    // The record as a PDF whose text carries the facts.
    let (status, headers, pdf) = get_bytes(&w.app, &mut admin, "/incidents/1.pdf").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers.get(header::CONTENT_TYPE).unwrap(),
        "application/pdf"
    );
    assert!(pdf.starts_with(b"%PDF-1.4"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("incident.pdf");
    std::fs::write(&file, &pdf).unwrap();
    match std::process::Command::new("pdftotext")
        .arg("-layout")
        .arg(&file)
        .arg("-")
        .output()
    {
        Ok(out) => {
            assert!(out.status.success());
            let text = String::from_utf8_lossy(&out.stdout);
            for fact in [
                "Data protection incident 1",
                "Sent to the wrong person",
                "Sent to the wrong social worker.",
                "Reportable to the ICO: yes",
                "IC-123456",
                "The other council confirmed deletion in writing.",
                "No evidence the recipient opened the link",
                "list.csv",
                "Closed",
            ] {
                assert!(text.contains(fact), "{fact} in the PDF:\n{text}");
            }
        }
        Err(e) => {
            assert!(
                !ci(),
                "pdftotext is missing ({e}); tests/run installs poppler-utils"
            );
            eprintln!(
                "SKIPPED the PDF text check: pdftotext is not installed (tests/run installs it)"
            );
        }
    }
    // Exports are for admins; the reporter may read the page but not take the record away.
    let (status, _, _) = get_bytes(&w.app, &mut w.staff, "/incidents/1.pdf").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        w.staff.get(&w.app, "/incidents/1").await.status,
        StatusCode::OK
    );
    let a = actions(&w.app).await;
    for expected in [
        "incident_reported",
        "incident_assessed",
        "incident_closed",
        "incident_exported",
    ] {
        assert!(a.contains(&expected.to_string()), "{expected} in {a:?}");
    }
    assert_eq!(a.iter().filter(|x| *x == "incident_exported").count(), 2);
    // No admin mail carries the description or the assessment.
    for (_, body) in mails_to(&w.app, ADMIN).await {
        assert!(!body.contains("social worker") && !body.contains("IC-123456"));
    }
    assert!(audit_intact(audit::verify(w.app.db()).await.unwrap()));
}

async fn the_api_reports_assesses_and_closes(backend: Backend) {
    let mut w = world(backend).await;
    let (id, _) = send_files(&mut w, &[("a.txt", b"abc")]).await;
    let staff_token = api_token(&w.app, &mut w.staff).await;
    let path = format!("/api/v1/transfers/{id}/incident");
    let (status, v) = api_call(
        &w.app,
        &staff_token,
        "POST",
        &path,
        Some(serde_json::json!({"kind": "wrong", "description": ""})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("Choose what went wrong."),
        "{v}"
    );
    let (status, v) = api_call(
        &w.app,
        &staff_token,
        "POST",
        &path,
        Some(serde_json::json!({"kind": "wrong_recipient", "description": "Wrong Jo."})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["id"], 1);
    assert_eq!(v["recalled"], true);
    assert_eq!(v["state"], "open");
    assert_eq!(v["seconds_left"], 72 * 3600);
    // The staff token cannot list, assess or close.
    assert_eq!(
        api_call(&w.app, &staff_token, "GET", "/api/v1/incidents", None)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    let mut admin = Browser {
        jar: w.app.jar.clone(),
    };
    let page = admin
        .post(
            &w.app,
            "/account/tokens",
            &[
                ("token_name", "dpo"),
                ("token_password", ADMIN_PASSWORD),
                ("days", "30"),
                ("scope", "admin"),
            ],
        )
        .await;
    let admin_token = page
        .between(
            "id=\"token\" class=\"secret-field\" type=\"text\" readonly value=\"",
            "\"",
        )
        .unwrap();
    let (status, v) = api_call(&w.app, &admin_token, "GET", "/api/v1/incidents", None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["incidents"][0]["kind"], "wrong_recipient");
    let (status, _) = api_call(
        &w.app,
        &admin_token,
        "POST",
        "/api/v1/incidents/1/close",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let assessment = serde_json::json!({
        "risk": "unlikely", "risk_notes": "Never opened.", "reportable": "no",
        "decision": "Not reported.", "reason": "No access before the recall.",
        "actions": "Re-sent to the right address.",
    });
    let (status, v) = api_call(
        &w.app,
        &admin_token,
        "POST",
        "/api/v1/incidents/1/assessment",
        Some(assessment),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["assessment"]["reportable_to_ico"], false);
    let (status, v) = api_call(
        &w.app,
        &admin_token,
        "POST",
        "/api/v1/incidents/1/close",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "closed");
    assert!(v["seconds_left"].is_null());
}

/// The admin reports a wrong recipient on the form at `path`, found out `hours` ago.
async fn found_out(app: &mut TestApp, path: &str, hours: &str) -> Page {
    app.post(
        path,
        &[
            ("kind", "wrong_recipient"),
            ("description", "The head told me this morning."),
            ("known_hours_ago", hours),
        ],
    )
    .await
}

async fn the_clock_runs_from_when_the_school_found_out(backend: Backend) {
    use safehand_server::clock::{format_rfc3339, format_time};
    let mut w = world(backend).await;
    let (id, _) = send_files(&mut w, &[("plan.txt", b"plan")]).await;
    release(&mut w, id).await;
    let (other, _) = send_files(&mut w, &[("list.txt", b"list")]).await;
    let staff_token = api_token(&w.app, &mut w.staff).await;
    // Ten hours later the admin hears that the first went to the wrong person.
    w.app.clock.advance(10 * 3600);
    sign_in(&mut w.app, &w.admin.clone()).await;
    let path = format!("/transfers/{id}/incident");
    w.app
        .get(&path)
        .await
        .assert_contains("How many hours ago did you find out?");
    // Before the transfer existed, or not a number: the form says so, keeps what was typed,
    // and nothing is recalled.
    for (hours, says) in [
        ("12", "cannot have been known 12 hours ago"),
        ("three", "number of whole hours since you found out"),
    ] {
        let page = found_out(&mut w.app, &path, hours).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
        page.assert_contains(says);
        page.assert_contains(&format!("value=\"{hours}\""));
        page.assert_contains("The head told me this morning.");
        assert_eq!(
            transfers::get(w.app.db(), id).await.unwrap().unwrap().state,
            transfers::State::Released
        );
    }
    let now = w.app.clock.now();
    let page = found_out(&mut w.app, &path, "6").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    // The clock started six hours ago, not at the report.
    page.assert_contains("66 h 0 min left to decide whether to report to the ICO");
    let known = now - 6 * 3600;
    let v = incident_json(&mut w.app, 1).await;
    assert_eq!(v["reported_at"], format_rfc3339(now));
    assert_eq!(v["known_at"], format_rfc3339(known));
    assert_eq!(v["ico_deadline"], format_rfc3339(known + 72 * 3600));
    let (_, body) = last_mail(&w.app, ADMIN).await;
    assert!(
        body.contains(&format!("The school found out at {}.", format_time(known))),
        "{body}"
    );
    assert!(
        body.contains(&format!(
            "The 72-hour ICO deadline is {}",
            format_time(known + 72 * 3600)
        )),
        "{body}"
    );

    // The API takes the time as RFC 3339: not in the future, not before the transfer.
    let path = format!("/api/v1/transfers/{other}/incident");
    let now = w.app.clock.now();
    for (at, says) in [
        (format_rfc3339(now + 3600), "in the future"),
        (
            format_rfc3339(now - 11 * 3600),
            "before the transfer was made",
        ),
        ("yesterday".to_string(), "RFC 3339"),
    ] {
        let (status, v) = api_call(
            &w.app,
            &staff_token,
            "POST",
            &path,
            Some(serde_json::json!({"kind": "wrong_file", "description": "Old list.", "known_at": at})),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        assert!(v["message"].as_str().unwrap().contains(says), "{v}");
    }
    assert_ne!(
        transfers::get(w.app.db(), other)
            .await
            .unwrap()
            .unwrap()
            .state,
        transfers::State::Recalled
    );
    let (status, v) = api_call(
        &w.app,
        &staff_token,
        "POST",
        &path,
        Some(serde_json::json!({
            "kind": "wrong_file", "description": "Old list.", "known_at": format_rfc3339(now - 2 * 3600),
        })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["seconds_left"], 70 * 3600);
    assert_eq!(v["known_at"], format_rfc3339(now - 2 * 3600));
}
