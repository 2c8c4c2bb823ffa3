//! Approval (policy P7) through the router, on SQLite and PostgreSQL: each policy rule holds a
//! transfer (and only then), the approver's queue and page, approval (released with the undo
//! window), rejection with a reason, self-approval refused, a held transfer that nobody decides
//! expiring, the sender told by page and mail, and the API.

use crate::common::*;
use crate::transfers::{
    actions, add_contact, add_contact_at, confirm_release, last_mail, mails_to, multipart,
    upload_from, verify_contact, world, World,
};
use axum::http::StatusCode;
use safehand_server::audit::Actor;
use safehand_server::policy::{self, Policy, Unverified};
use safehand_server::transfers::{self, State};

crate::both_databases!(
    approval_by_each_policy_rule,
    approvers_approve_and_reject_but_never_their_own,
    a_held_transfer_nobody_decides_expires,
);

const RECIPIENT: &str = "Jo.Bloggs@northshire.gov.uk";

async fn set_policy(app: &TestApp, change: impl FnOnce(&mut Policy)) {
    let mut p = policy::load(app.db()).await.unwrap();
    change(&mut p);
    policy::save(app.db(), app.clock.now(), &Actor::operator(), &p)
        .await
        .unwrap();
}

/// Uploads one small file from `browser` to `contact_id`; returns the transfer id.
async fn upload(
    app: &TestApp,
    browser: &mut Browser,
    contact_id: i64,
    classification: &str,
    attestation: Option<&str>,
) -> i64 {
    upload_with_passphrase(app, browser, contact_id, classification, attestation)
        .await
        .0
}

/// Like [`upload`]; also returns the passphrase shown once.
async fn upload_with_passphrase(
    app: &TestApp,
    browser: &mut Browser,
    contact_id: i64,
    classification: &str,
    attestation: Option<&str>,
) -> (i64, String) {
    let details = serde_json::json!({
        "contact_id": contact_id,
        "purpose": "Child protection referral for a pupil",
        "classification": classification,
        "expires_in_days": 7,
        "download_limit": 3,
        "attestation": attestation,
        "files": [{"name": "referral.txt", "size": 17}],
    })
    .to_string();
    let page = upload_from(
        app,
        browser,
        multipart(&[
            ("details", None, details.as_bytes()),
            ("file", Some("referral.txt"), b"referral contents"),
        ]),
    )
    .await;
    assert_eq!(page.status, StatusCode::CREATED, "{}", page.body);
    let v: serde_json::Value = serde_json::from_str(&page.body).unwrap();
    (
        v["id"].as_i64().unwrap(),
        v["passphrase"].as_str().unwrap().to_string(),
    )
}

/// Staff sends to `contact_id` and confirms; returns the id and the transfer as it is then.
async fn send_and_confirm(
    w: &mut World,
    contact_id: i64,
    classification: &str,
    attestation: Option<&str>,
) -> (i64, transfers::Transfer) {
    let id = upload(
        &w.app,
        &mut w.staff,
        contact_id,
        classification,
        attestation,
    )
    .await;
    let page = confirm_release(w, id).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let t = transfers::get(w.app.db(), id).await.unwrap().unwrap();
    if t.state == State::Held {
        page.assert_contains("School policy asks for an approver to check this transfer first");
        page.assert_contains("Waiting for an approver");
    }
    (id, t)
}

/// The admin saves the policy page with the default values and one approval field.
async fn post_policy_page(app: &mut TestApp, approval: (&str, &str)) -> Page {
    app.post(
        "/admin/policy",
        &[
            ("unverified_contacts", "refuse"),
            approval,
            ("default_expiry_days", "7"),
            ("max_expiry_days", "30"),
            ("default_download_limit", "3"),
            ("max_size", "5 GiB"),
            ("wrong_passphrase_limit", "5"),
            ("verification_valid_months", "12"),
            ("undo_window_secs", "60"),
            ("max_token_days", "90"),
        ],
    )
    .await
}

async fn state(app: &TestApp, id: i64) -> State {
    transfers::get(app.db(), id).await.unwrap().unwrap().state
}

async fn approval_by_each_policy_rule(backend: Backend) {
    let mut w = world(backend).await;
    let jo = w.contact_id;
    let (_, mut alex) = invite(
        &mut w.app,
        "alex@school.sch.uk",
        "Alex Approver",
        &["approver"],
    )
    .await;

    // No rule on: released at once, nobody asked.
    let (_, t) = send_and_confirm(&mut w, jo, "OFFICIAL-SENSITIVE", None).await;
    assert_eq!(t.state, State::Released);
    assert!(mails_to(&w.app, "alex@school.sch.uk")
        .await
        .iter()
        .all(|m| m.0 != "A transfer is waiting for your approval"));

    // "Always", set on the admin's policy page.
    let page = post_policy_page(&mut w.app, ("approval_always", "1")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.assert_contains("Policy saved.");
    assert!(policy::load(w.app.db()).await.unwrap().approval_always);
    let links_before = mails_to(&w.app, RECIPIENT).await.len();
    let (id, t) = send_and_confirm(&mut w, jo, "OFFICIAL", None).await;
    assert_eq!(t.state, State::Held);
    assert_eq!(t.approval_reasons, ["always"]);
    assert!(t.released_at.is_none() && t.release_mail_id.is_none());
    let (subject, body) = last_mail(&w.app, "alex@school.sch.uk").await;
    assert_eq!(subject, "A transfer is waiting for your approval");
    assert!(
        body.contains(&format!("http://safehand.test/approvals/{id}")),
        "{body}"
    );
    assert!(
        !body.contains("Child protection"),
        "no purpose in mail: {body}"
    );
    assert_eq!(
        mails_to(&w.app, RECIPIENT).await.len(),
        links_before,
        "nothing sent"
    );
    let page = w.staff.get(&w.app, "/transfers").await;
    page.assert_contains("waiting for an approver (policy asks for approval of every transfer)");
    // A classification that is not in the policy's list is a problem on the form.
    let page = post_policy_page(&mut w.app, ("approval_classifications", "TOP SECRET")).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    page.assert_contains("TOP SECRET is not a classification");

    // By classification: OFFICIAL-SENSITIVE waits, OFFICIAL goes.
    set_policy(&w.app, |p| {
        p.approval_always = false;
        p.approval_classifications = vec!["OFFICIAL-SENSITIVE".into()];
    })
    .await;
    let (_, t) = send_and_confirm(&mut w, jo, "OFFICIAL", None).await;
    assert_eq!(t.state, State::Released);
    let (_, t) = send_and_confirm(&mut w, jo, "OFFICIAL-SENSITIVE", None).await;
    assert_eq!(t.state, State::Held);
    assert_eq!(t.approval_reasons, ["classification"]);

    // An unverified contact, sent on the sender's attestation.
    set_policy(&w.app, |p| {
        p.approval_classifications.clear();
        p.unverified_contacts = Unverified::Attest;
        p.approval_unverified = true;
    })
    .await;
    let unverified = add_contact(&mut w.app, "pat.new@northshire.gov.uk", "Pat New").await;
    let attestation = "Phoned the council switchboard and was put through to Pat.";
    let (_, t) = send_and_confirm(&mut w, unverified, "OFFICIAL", Some(attestation)).await;
    assert_eq!(t.state, State::Held);
    assert_eq!(t.approval_reasons, ["unverified_contact"]);
    let (_, t) = send_and_confirm(&mut w, jo, "OFFICIAL", None).await;
    assert_eq!(t.state, State::Released, "a verified contact is not held");

    // Outside the allowed domains: refused unless policy sends it to an approver.
    set_policy(&w.app, |p| p.approval_unverified = false).await;
    safehand_server::contacts::add_domain(
        w.app.db(),
        w.app.clock.now(),
        &Actor::operator(),
        "northshire.gov.uk",
    )
    .await
    .unwrap();
    let page = w
        .app
        .post(
            "/contacts",
            &[
                ("name", "Chris Elsewhere"),
                ("organisation", "Elsewhere Trust"),
                ("job_title", "Safeguarding lead"),
                ("email", "chris@elsewhere.org.uk"),
                ("phone", crate::transfers::PHONE),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    page.assert_contains("Files can only be sent to addresses in these domains");
    set_policy(&w.app, |p| p.approval_outside_domains = true).await;
    let outside = add_contact_at(
        &mut w.app,
        "chris@elsewhere.org.uk",
        "Chris Elsewhere",
        "Elsewhere Trust",
    )
    .await;
    verify_contact(&mut w.app, outside).await;
    let page = w.staff.get(&w.app, "/transfers/new").await;
    page.assert_contains("chris@elsewhere.org.uk");
    let (_, t) = send_and_confirm(&mut w, outside, "OFFICIAL", None).await;
    assert_eq!(t.state, State::Held);
    assert_eq!(t.approval_reasons, ["outside_allowed_domains"]);
    let (_, t) = send_and_confirm(&mut w, jo, "OFFICIAL", None).await;
    assert_eq!(t.state, State::Released, "inside the allowed domains");
    // Turned off again: sending there is refused before anything is sealed.
    set_policy(&w.app, |p| p.approval_outside_domains = false).await;
    let details = serde_json::json!({
        "contact_id": outside, "purpose": "Referral", "classification": "OFFICIAL",
        "files": [{"name": "a.txt", "size": 1}],
    })
    .to_string();
    let page = upload_from(
        &w.app,
        &mut w.staff,
        multipart(&[
            ("details", None, details.as_bytes()),
            ("file", Some("a.txt"), b"a"),
        ]),
    )
    .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    assert!(page.body.contains("is not in an allowed recipient domain"));
    safehand_server::contacts::remove_domain(
        w.app.db(),
        w.app.clock.now(),
        &Actor::operator(),
        "northshire.gov.uk",
    )
    .await
    .unwrap();

    // The first transfer to an organisation; the next one to it goes (whatever the case or
    // spacing of its name), and so does one to an organisation sent to before.
    set_policy(&w.app, |p| p.approval_new_organisation = true).await;
    let health = add_contact_at(
        &mut w.app,
        "morgan@northshire.nhs.uk",
        "Morgan Nurse",
        "Northshire Health",
    )
    .await;
    verify_contact(&mut w.app, health).await;
    let (first, t) = send_and_confirm(&mut w, health, "OFFICIAL", None).await;
    assert_eq!(t.state, State::Held);
    assert_eq!(t.approval_reasons, ["new_organisation"]);
    let page = alex
        .post(
            &w.app,
            &format!("/approvals/{first}/approve"),
            &[("note", "")],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(state(&w.app, first).await, State::Released);
    let colleague = add_contact_at(
        &mut w.app,
        "sam.nurse@northshire.nhs.uk",
        "Sam Nurse",
        " northshire HEALTH ",
    )
    .await;
    verify_contact(&mut w.app, colleague).await;
    let (_, t) = send_and_confirm(&mut w, colleague, "OFFICIAL", None).await;
    assert_eq!(t.state, State::Released, "sent to this organisation before");
    // The organisation is its mail domain: a contact who types a known organisation's name
    // but has an address elsewhere is a new organisation.
    let impostor = add_contact_at(
        &mut w.app,
        "northshire.health@mailbox.example",
        "Pat Impostor",
        "Northshire Health",
    )
    .await;
    verify_contact(&mut w.app, impostor).await;
    let (_, t) = send_and_confirm(&mut w, impostor, "OFFICIAL", None).await;
    assert_eq!(t.state, State::Held, "a known name at a new domain waits");
    assert_eq!(t.approval_reasons, ["new_organisation"]);
    let (_, t) = send_and_confirm(&mut w, jo, "OFFICIAL", None).await;
    assert_eq!(t.state, State::Released);

    // Several rules at once are all named.
    set_policy(&w.app, |p| {
        p.approval_always = true;
        p.approval_classifications = vec!["OFFICIAL-SENSITIVE".into()];
    })
    .await;
    let (_, t) = send_and_confirm(&mut w, jo, "OFFICIAL-SENSITIVE", None).await;
    assert_eq!(t.approval_reasons, ["always", "classification"]);
    let held = actions(&w.app)
        .await
        .iter()
        .filter(|a| *a == "transfer_held")
        .count();
    assert_eq!(held, 7);
}

async fn approvers_approve_and_reject_but_never_their_own(backend: Backend) {
    let mut w = world(backend).await;
    let (_, mut alex) = invite(
        &mut w.app,
        "alex@school.sch.uk",
        "Alex Approver",
        &["approver"],
    )
    .await;
    let (_, mut pat) = invite(
        &mut w.app,
        "pat@school.sch.uk",
        "Pat Deputy",
        &["staff", "approver"],
    )
    .await;
    set_policy(&w.app, |p| p.approval_always = true).await;

    // Staff without the approver role have no queue.
    let page = w.staff.get(&w.app, "/approvals").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);

    // Pat sends: held; Pat may not decide on it, by page or by API.
    let id = upload(&w.app, &mut pat, w.contact_id, "OFFICIAL-SENSITIVE", None).await;
    let page = pat
        .post(
            &w.app,
            &format!("/transfers/{id}/release"),
            &[("will_phone", "yes")],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(state(&w.app, id).await, State::Held);
    // Pat is an approver too, but is not mailed about their own transfer.
    assert!(mails_to(&w.app, "pat@school.sch.uk")
        .await
        .iter()
        .all(|m| m.0 != "A transfer is waiting for your approval"));
    let page = pat.get(&w.app, &format!("/approvals/{id}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.assert_contains("You sent this transfer, so you cannot approve or reject it");
    assert!(!page.body.contains("Approve and send"));
    let page = pat
        .post(&w.app, &format!("/approvals/{id}/approve"), &[("note", "")])
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    page.assert_contains("You sent this transfer, so you cannot approve or reject it");
    let pat_token = api_token_scoped(&w.app, &mut pat, "approver").await;
    let (status, v) = api_call(
        &w.app,
        &pat_token,
        "POST",
        &format!("/api/v1/approvals/{id}/approve"),
        Some(serde_json::json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("You sent this transfer"));
    assert_eq!(state(&w.app, id).await, State::Held);

    // Alex sees the queue and everything except the content and the passphrase.
    let page = alex.get(&w.app, "/approvals").await;
    page.assert_contains("Pat Deputy (pat@school.sch.uk)");
    page.assert_contains(&format!("href=\"/approvals/{id}\""));
    let page = alex.get(&w.app, &format!("/approvals/{id}")).await;
    page.assert_contains("Child protection referral for a pupil");
    page.assert_contains("OFFICIAL-SENSITIVE");
    page.assert_contains("referral.txt");
    page.assert_contains("17 bytes");
    page.assert_contains("verified: vera");
    page.assert_contains("@school.sch.uk called 01632 960 123 (number from switchboard)");
    page.assert_contains("Approve and send");
    page.assert_contains(&format!("href=\"/transfers/{id}/incident\""));
    assert!(!page.body.contains("referral contents"));
    // Approved with a note: released with the undo window, the sender told by mail and page.
    let page = alex
        .post(
            &w.app,
            &format!("/approvals/{id}/approve"),
            &[("note", "Checked with the DSL")],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.assert_contains("Approved. The sender has been told; the link will be emailed to the recipient in 60 seconds");
    let t = transfers::get(w.app.db(), id).await.unwrap().unwrap();
    assert_eq!(t.state, State::Released);
    assert_eq!(t.decision.as_deref(), Some("approved"));
    assert_eq!(t.decided_by_label.as_deref(), Some("alex@school.sch.uk"));
    assert!(t.undo_until.is_some());
    let (subject, body) = last_mail(&w.app, "pat@school.sch.uk").await;
    assert_eq!(subject, "Your transfer was approved");
    assert!(body.contains("approved by Alex Approver"), "{body}");
    let page = pat.get(&w.app, &format!("/transfers/{id}")).await;
    page.assert_contains("Approved by alex@school.sch.uk on");
    page.assert_contains("Checked with the DSL");
    // The link mail waits for the undo window, then goes.
    let (subject, _) = last_mail(&w.app, RECIPIENT).await;
    assert_eq!(subject, "A secure file is waiting for you");
    // Deciding twice is refused.
    let page = alex
        .post(
            &w.app,
            &format!("/approvals/{id}/reject"),
            &[("reason", "Second thoughts")],
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    page.assert_contains("not waiting for approval any more");

    // Sam's transfer is rejected: a reason is required; the files are destroyed.
    let id = upload(&w.app, &mut w.staff, w.contact_id, "OFFICIAL", None).await;
    confirm_release(&mut w, id).await;
    assert_eq!(state(&w.app, id).await, State::Held);
    let page = alex
        .post(
            &w.app,
            &format!("/approvals/{id}/reject"),
            &[("reason", "  ")],
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    page.assert_contains("Write why you are rejecting the transfer");
    assert_eq!(state(&w.app, id).await, State::Held);
    let page = alex
        .post(
            &w.app,
            &format!("/approvals/{id}/reject"),
            &[("reason", "This is the referral for another pupil")],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.assert_contains("Rejected. The files have been destroyed");
    let t = transfers::get(w.app.db(), id).await.unwrap().unwrap();
    assert_eq!(t.state, State::Rejected);
    assert!(t.shredded_at.is_some() && t.blob_deleted_at.is_some());
    assert!(transfers::header(w.app.db(), id).await.unwrap().is_none());
    let (subject, body) = last_mail(&w.app, "sam@school.sch.uk").await;
    assert_eq!(subject, "Your transfer was not approved");
    assert!(
        !body.contains("another pupil"),
        "the reason stays on the page: {body}"
    );
    let page = w.staff.get(&w.app, &format!("/transfers/{id}")).await;
    page.assert_contains("Rejected by alex@school.sch.uk on");
    page.assert_contains("This is the referral for another pupil");
    page.assert_contains("rejected by alex@school.sch.uk");

    // The sender can still recall a held transfer; it leaves the queue.
    let id = upload(&w.app, &mut w.staff, w.contact_id, "OFFICIAL", None).await;
    confirm_release(&mut w, id).await;
    let page = w
        .staff
        .post(&w.app, &format!("/transfers/{id}/recall"), &[])
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(state(&w.app, id).await, State::Recalled);
    let page = alex.get(&w.app, "/approvals").await;
    assert!(!page.body.contains(&format!("href=\"/approvals/{id}\"")));

    // An approver reports a problem on a held transfer: it is recalled at once and leaves the
    // queue, and an incident is opened.
    let id = upload(&w.app, &mut w.staff, w.contact_id, "OFFICIAL", None).await;
    confirm_release(&mut w, id).await;
    let page = alex
        .post(
            &w.app,
            &format!("/transfers/{id}/incident"),
            &[
                ("kind", "wrong_file"),
                (
                    "description",
                    "The sender attached last year's report, not this year's.",
                ),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.assert_contains("The transfer was recalled at once");
    assert_eq!(state(&w.app, id).await, State::Recalled);
    assert!(transfers::header(w.app.db(), id).await.unwrap().is_none());
    assert!(transfers::approval::queue(w.app.db())
        .await
        .unwrap()
        .is_empty());

    // The API: the queue carries what an approver needs, never the passphrase or content.
    let (id, passphrase) =
        upload_with_passphrase(&w.app, &mut w.staff, w.contact_id, "OFFICIAL", None).await;
    confirm_release(&mut w, id).await;
    let token = api_token_scoped(&w.app, &mut alex, "approver").await;
    let (status, v) = api_call(&w.app, &token, "GET", "/api/v1/approvals", None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let waiting = v["waiting"].as_array().unwrap();
    assert_eq!(waiting.len(), 1, "{v}");
    assert_eq!(waiting[0]["id"], id);
    assert_eq!(
        waiting[0]["purpose"],
        "Child protection referral for a pupil"
    );
    assert_eq!(waiting[0]["approval_reasons"][0], "always");
    assert_eq!(waiting[0]["contact"]["phone"], crate::transfers::PHONE);
    assert!(waiting[0].get("passphrase").is_none());
    assert!(!v.to_string().contains(&passphrase));
    assert!(!v.to_string().contains("referral contents"));
    let (status, _) = api_call(
        &w.app,
        &token,
        "POST",
        &format!("/api/v1/approvals/{id}/reject"),
        Some(serde_json::json!({ "reason": "" })),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, v) = api_call(
        &w.app,
        &token,
        "POST",
        &format!("/api/v1/approvals/{id}/approve"),
        Some(serde_json::json!({ "reason": "Fine" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "released");
    assert_eq!(v["decision"], "approved");
    // The sender undoes inside the window; sending it again goes back to an approver.
    let page = w
        .staff
        .post(&w.app, &format!("/transfers/{id}/undo"), &[])
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    confirm_release(&mut w, id).await;
    let t = transfers::get(w.app.db(), id).await.unwrap().unwrap();
    assert_eq!(t.state, State::Held);
    assert!(t.decision.is_none(), "a new hold needs a new decision");
    // A transfer that was never held is not an approver's to see.
    set_policy(&w.app, |p| p.approval_always = false).await;
    let plain = upload(&w.app, &mut w.staff, w.contact_id, "OFFICIAL", None).await;
    let page = alex.get(&w.app, &format!("/approvals/{plain}")).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);

    let all = actions(&w.app).await;
    for a in ["transfer_held", "transfer_approved", "transfer_rejected"] {
        assert!(all.iter().any(|x| x == a), "{a} audited: {all:?}");
    }
}

async fn a_held_transfer_nobody_decides_expires(backend: Backend) {
    let mut w = world(backend).await;
    invite(
        &mut w.app,
        "alex@school.sch.uk",
        "Alex Approver",
        &["approver"],
    )
    .await;
    set_policy(&w.app, |p| p.approval_always = true).await;
    let id = upload(&w.app, &mut w.staff, w.contact_id, "OFFICIAL", None).await;
    confirm_release(&mut w, id).await;
    assert_eq!(state(&w.app, id).await, State::Held);
    // Before its expiry the sweeper leaves it alone.
    w.app.clock.advance(6 * 86_400);
    let swept = transfers::sweeper::sweep(w.app.db(), &w.app.state.blobs, w.app.clock.now())
        .await
        .unwrap();
    assert_eq!(swept.ended, 0);
    assert_eq!(state(&w.app, id).await, State::Held);
    // After it: expired, shredded, the sender told; nothing ever reached the recipient.
    w.app.clock.advance(86_400 + 1);
    let swept = transfers::sweeper::sweep(w.app.db(), &w.app.state.blobs, w.app.clock.now())
        .await
        .unwrap();
    assert_eq!(swept.ended, 1);
    let t = transfers::get(w.app.db(), id).await.unwrap().unwrap();
    assert_eq!(t.state, State::Expired);
    assert!(t.blob_deleted_at.is_some());
    assert!(transfers::header(w.app.db(), id).await.unwrap().is_none());
    let (subject, body) = last_mail(&w.app, "sam@school.sch.uk").await;
    assert_eq!(subject, "Your transfer expired waiting for approval");
    assert!(body.contains("nothing was sent to the recipient"), "{body}");
    assert!(mails_to(&w.app, RECIPIENT).await.is_empty());
    // Too late to approve, and gone from the queue.
    let alex = safehand_server::accounts::by_email(w.app.db(), "alex@school.sch.uk")
        .await
        .unwrap()
        .unwrap();
    let err = transfers::approval::approve(
        w.app.db(),
        &w.app.state.keys,
        w.app.clock.now(),
        &alex,
        &Actor::operator(),
        "http://safehand.test",
        &t,
        "",
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("not waiting for approval any more"),
        "{err}"
    );
    assert!(transfers::approval::queue(w.app.db())
        .await
        .unwrap()
        .is_empty());
    assert!(actions(&w.app)
        .await
        .iter()
        .any(|a| a == "transfer_expired"));
}
