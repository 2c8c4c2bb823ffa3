//! The router driven in-process, on SQLite and on PostgreSQL: every account, session, token,
//! CSRF, header and audit rule of the foundation, and bad input.

use crate::common::*;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use safehand_server::audit::{self, Verification};
use safehand_server::db::Dialect;

crate::both_databases!(
    first_run_setup_creates_an_admin_once,
    setup_refuses_weak_passwords_with_linked_errors,
    unknown_user_and_wrong_password_read_the_same,
    wrong_and_replayed_codes_are_refused_and_recovery_codes_work_once,
    failed_sign_ins_lock_the_account_then_the_lock_lifts,
    sessions_end_after_idle_timeout_and_absolute_lifetime,
    sign_out_and_sign_out_everywhere,
    disabling_a_user_ends_their_open_session_and_tokens,
    password_change_ends_other_sessions_and_tokens,
    api_tokens_are_shown_once_scoped_revocable_and_expire,
    api_tokens_need_the_password_and_keep_to_the_policy_maximum,
    roles_guard_pages,
    missing_or_wrong_csrf_changes_nothing,
    csrf_tokens_are_bound_to_the_session,
    cookies_carry_the_host_prefix_under_https,
    oversized_and_malformed_forms_change_nothing,
    tampered_and_unknown_cookies_are_treated_as_signed_out,
    security_headers_on_every_response,
    health_readiness_and_metrics,
    audit_log_is_append_only_and_verify_finds_the_first_broken_link,
    audit_chain_is_keyed_and_its_head_signed,
    audit_heads_are_signed_at_intervals,
    records_from_before_the_key_are_protected_by_the_first_keyed_one,
    audit_page_filters_and_exports,
    totp_seed_is_stored_encrypted,
    admin_resets_totp_and_password,
    concurrent_audit_appends_keep_one_chain,
    housekeeping_removes_dead_sessions_and_old_failures,
    client_address_comes_from_trusted_proxies_only,
    api_errors_are_problem_documents,
);

async fn first_run_setup_creates_an_admin_once(backend: Backend) {
    let mut app = TestApp::new(backend).await;
    // No session: the home page sends people to sign in.
    let page = app.get("/").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/sign-in");
    let token = safehand_server::accounts::setup_link(app.db(), app.clock.now())
        .await
        .unwrap()
        .unwrap();
    let admin = setup_admin_with(&mut app, &token).await;
    let page = app.get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    page.assert_contains("Hello, Ada Admin");
    page.assert_contains("Manage users");
    // The link worked once; now it is refused, and no new setup link is issued.
    let mut other = app.other_browser();
    let page = other.get(&app, &format!("/setup/{token}")).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    page.assert_contains("This link is not valid");
    assert!(
        safehand_server::accounts::setup_link(app.db(), app.clock.now())
            .await
            .unwrap()
            .is_none()
    );
    let actions: Vec<String> = audit::search(app.db(), &Default::default(), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.action)
        .collect();
    for expected in [
        "first_admin_created",
        "password_set",
        "totp_enrolled",
        "sign_in",
    ] {
        assert!(
            actions.contains(&expected.to_string()),
            "{expected} missing from {actions:?}"
        );
    }
    assert_eq!(admin.recovery_codes.len(), 10);
}

async fn setup_admin_with(app: &mut TestApp, _token: &str) -> Person {
    // setup_admin issues its own link (which replaces this one): check the replaced one fails.
    let person = setup_admin(app).await;
    person
}

async fn setup_refuses_weak_passwords_with_linked_errors(backend: Backend) {
    let mut app = TestApp::new(backend).await;
    let token = safehand_server::accounts::setup_link(app.db(), app.clock.now())
        .await
        .unwrap()
        .unwrap();
    let path = format!("/setup/{token}");
    app.get(&path).await;
    for (password, confirm, message) in [
        ("short one", "short one", "at least 12 characters"),
        ("password1234", "password1234", "too common"),
        (&"x".repeat(129) as &str, "", "at most 128 characters"),
        (
            "kettle orbit lantern",
            "kettle orbit lanterns",
            "not the same",
        ),
    ] {
        let page = app
            .post(
                &path,
                &[
                    ("name", "Ada"),
                    ("email", "ada@school.sch.uk"),
                    ("password", password),
                    ("confirm", confirm),
                ],
            )
            .await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST);
        page.assert_contains("There is a problem");
        page.assert_contains(message);
        page.assert_contains("aria-invalid=\"true\"");
    }
    let page = app
        .post(
            &path,
            &[
                ("name", ""),
                ("email", "not-an-email"),
                ("password", "kettle orbit lantern"),
                ("confirm", "kettle orbit lantern"),
            ],
        )
        .await;
    page.assert_contains("href=\"#name\"");
    page.assert_contains("href=\"#email\"");
    assert_eq!(
        safehand_server::accounts::count(app.db()).await.unwrap(),
        0,
        "nothing was created"
    );
}

async fn unknown_user_and_wrong_password_read_the_same(backend: Backend) {
    let mut app = TestApp::new(backend).await;
    let admin = setup_admin(&mut app).await;
    let mut b = app.other_browser();
    let wrong = b
        .post(
            &app,
            "/sign-in",
            &[
                ("email", &admin.email),
                ("password", "not the password at all"),
            ],
        )
        .await;
    let unknown = b
        .post(
            &app,
            "/sign-in",
            &[
                ("email", "nobody@school.sch.uk"),
                ("password", "not the password at all"),
            ],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status, wrong.status);
    wrong.assert_contains("Enter a correct email address and password.");
    unknown.assert_contains("Enter a correct email address and password.");
    let strip = |p: &Page, email: &str| {
        p.body
            .replace(email, "EMAIL")
            .replace(&p.between("name=\"csrf\" value=\"", "\"").unwrap(), "")
    };
    assert_eq!(
        strip(&wrong, &admin.email),
        strip(&unknown, "nobody@school.sch.uk")
    );
    assert!(!b.jar.contains_key("safehand_session"));
    let failures = audit::search(
        app.db(),
        &audit::Filter {
            action: "sign_in_failed".into(),
            ..Default::default()
        },
        10,
    )
    .await
    .unwrap();
    assert_eq!(failures.len(), 2);
}

async fn wrong_and_replayed_codes_are_refused_and_recovery_codes_work_once(backend: Backend) {
    let mut app = TestApp::new(backend).await;
    let admin = setup_admin(&mut app).await;
    app.jar.clear();
    app.clock.advance(30);
    app.post(
        "/sign-in",
        &[("email", &admin.email), ("password", &admin.password)],
    )
    .await;
    let right = code(&app, &admin.secret);
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    let page = app.post("/sign-in/code", &[("code", wrong)]).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    page.assert_contains("The code is not right");
    assert_eq!(
        app.get("/").await.status,
        StatusCode::SEE_OTHER,
        "not signed in after a wrong code"
    );
    let page = app.post("/sign-in/code", &[("code", &right)]).await;
    assert_eq!(page.location(), "/");
    // Same code again, in another browser, within its validity: refused as replayed.
    let mut other = app.other_browser();
    other
        .post(
            &app,
            "/sign-in",
            &[("email", &admin.email), ("password", &admin.password)],
        )
        .await;
    let page = other.post(&app, "/sign-in/code", &[("code", &right)]).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    page.assert_contains("already been used");
    // A recovery code works once (typed in upper case with spaces), then never again.
    let recovery = admin.recovery_codes[0].to_uppercase().replace('-', " ");
    let page = other
        .post(&app, "/sign-in/code", &[("code", &recovery)])
        .await;
    assert_eq!(page.location(), "/", "{}", page.body);
    let mut third = app.other_browser();
    third
        .post(
            &app,
            "/sign-in",
            &[("email", &admin.email), ("password", &admin.password)],
        )
        .await;
    let page = third
        .post(&app, "/sign-in/code", &[("code", &admin.recovery_codes[0])])
        .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    let page = other.get(&app, "/account").await;
    page.assert_contains("You have 9 unused recovery codes");
}

async fn failed_sign_ins_lock_the_account_then_the_lock_lifts(backend: Backend) {
    let mut app = TestApp::with_settings(backend, |s| {
        s.throttle.lock_after = 3;
        s.throttle.lock_for = 600;
    })
    .await;
    let admin = setup_admin(&mut app).await;
    let mut b = app.other_browser();
    for _ in 0..3 {
        let page = b
            .post(
                &app,
                "/sign-in",
                &[("email", &admin.email), ("password", "wrong wrong wrong")],
            )
            .await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    }
    // Locked: even the right password is refused, with a message that says so.
    let page = b
        .post(
            &app,
            "/sign-in",
            &[("email", &admin.email), ("password", &admin.password)],
        )
        .await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);
    page.assert_contains("Sign-in is locked for 10 more minutes");
    // An unknown account locks the same way (no way to tell which accounts exist).
    for _ in 0..3 {
        b.post(
            &app,
            "/sign-in",
            &[
                ("email", "ghost@school.sch.uk"),
                ("password", "wrong wrong wrong"),
            ],
        )
        .await;
    }
    let page = b
        .post(
            &app,
            "/sign-in",
            &[
                ("email", "ghost@school.sch.uk"),
                ("password", "wrong wrong wrong"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);
    // The owner (signed in elsewhere) and admins see the failures; admins see the lock.
    let page = app.get("/account").await;
    page.assert_contains("wrong password");
    let users = app.get("/admin/users").await;
    users.assert_contains("locked");
    app.clock.advance(601);
    sign_in(&mut app, &admin).await;
    // An admin can lift a lock at once.
    for _ in 0..3 {
        b.post(
            &app,
            "/sign-in",
            &[
                ("email", "ghost2@school.sch.uk"),
                ("password", "wrong wrong wrong"),
            ],
        )
        .await;
    }
    let (sam, _) = invite(&mut app, "sam@school.sch.uk", "Sam Staff", &["staff"]).await;
    for _ in 0..3 {
        b.post(
            &app,
            "/sign-in",
            &[("email", &sam.email), ("password", "wrong wrong wrong")],
        )
        .await;
    }
    let id = safehand_server::accounts::by_email(app.db(), &sam.email)
        .await
        .unwrap()
        .unwrap()
        .id;
    app.get(&format!("/admin/users/{id}"))
        .await
        .assert_contains("Unlock sign-in");
    app.post(&format!("/admin/users/{id}/unlock"), &[])
        .await
        .assert_contains("is unlocked");
    app.clock.advance(30);
    let page = b
        .post(
            &app,
            "/sign-in",
            &[("email", &sam.email), ("password", &sam.password)],
        )
        .await;
    assert_eq!(page.location(), "/sign-in/code", "{}", page.body);
    let metrics = app.get("/metrics").await;
    assert!(
        metrics.body.contains("safehand_sign_in_locked_total 2"),
        "{}",
        metrics.body
    );
}

async fn sessions_end_after_idle_timeout_and_absolute_lifetime(backend: Backend) {
    let mut app = TestApp::new(backend).await;
    let admin = setup_admin(&mut app).await;
    app.clock.advance(14 * 60);
    assert_eq!(
        app.get("/").await.status,
        StatusCode::OK,
        "active within 15 minutes"
    );
    app.clock.advance(15 * 60);
    let page = app.get("/").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/sign-in?ended=1");
    let page = app.get("/sign-in?ended=1").await;
    page.assert_contains("Your session has ended");
    // Absolute lifetime: busy all day still ends at 12 hours.
    sign_in(&mut app, &admin).await;
    for _ in 0..(12 * 6 - 1) {
        app.clock.advance(10 * 60);
        assert_eq!(app.get("/").await.status, StatusCode::OK);
    }
    app.clock.advance(10 * 60);
    assert_eq!(app.get("/").await.location(), "/sign-in?ended=1");
    // A half-finished sign-in (password only) cannot reach pages and expires.
    app.clock.advance(30);
    app.post(
        "/sign-in",
        &[("email", &admin.email), ("password", &admin.password)],
    )
    .await;
    assert_eq!(app.get("/").await.status, StatusCode::SEE_OTHER);
    app.clock.advance(11 * 60);
    let page = app
        .post("/sign-in/code", &[("code", &code(&app, &admin.secret))])
        .await;
    assert_eq!(page.location(), "/sign-in?ended=1");
}

async fn sign_out_and_sign_out_everywhere(backend: Backend) {
    let mut app = TestApp::new(backend).await;
    let admin = setup_admin(&mut app).await;
    let old_cookie = app.jar.get("safehand_session").cloned().unwrap();
    let page = app.post("/sign-out", &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    page.assert_contains("You have signed out");
    assert!(!app.jar.contains_key("safehand_session"));
    // The old cookie is dead even if someone kept it.
    let mut thief = app.other_browser();
    thief.jar.insert("safehand_session".into(), old_cookie);
    assert_eq!(thief.get(&app, "/").await.status, StatusCode::SEE_OTHER);
    // Two browsers; "sign out everywhere" in one ends both.
    sign_in(&mut app, &admin).await;
    let mut phone = app.other_browser();
    phone
        .post(
            &app,
            "/sign-in",
            &[("email", &admin.email), ("password", &admin.password)],
        )
        .await;
    app.clock.advance(30);
    phone
        .post(
            &app,
            "/sign-in/code",
            &[("code", &code(&app, &admin.secret))],
        )
        .await;
    assert_eq!(phone.get(&app, "/").await.status, StatusCode::OK);
    let page = app.get("/account").await;
    assert!(
        page.body.matches("<tr><td>").count() >= 2,
        "both sessions listed"
    );
    let page = app.post("/account/sign-out-everywhere", &[]).await;
    page.assert_contains("signed out everywhere");
    assert_eq!(phone.get(&app, "/").await.status, StatusCode::SEE_OTHER);
    assert_eq!(app.get("/").await.status, StatusCode::SEE_OTHER);
    let actions: Vec<String> = audit::search(app.db(), &Default::default(), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.action)
        .collect();
    assert!(
        actions.contains(&"sign_out".to_string())
            && actions.contains(&"sign_out_everywhere".to_string())
    );
}

async fn create_token(browser_post: Page) -> String {
    browser_post
        .between(
            "id=\"token\" class=\"secret-field\" type=\"text\" readonly value=\"",
            "\"",
        )
        .expect("token shown")
}

async fn me(app: &TestApp, token: &str) -> Page {
    let mut jar = Default::default();
    let req = Request::get("/api/v1/me")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    send(&app.state, &mut jar, req).await
}

/// A signed-in browser alone cannot mint a token: the password is asked again, wrong guesses
/// (even fired at once) count against the sign-in lock, and a token lives no longer than the
/// policy's maximum, which also shortens existing tokens when lowered.
async fn api_tokens_need_the_password_and_keep_to_the_policy_maximum(backend: Backend) {
    let mut app = TestApp::new(backend).await;
    setup_admin(&mut app).await;
    let (sam, mut sam_b) = invite(&mut app, "sam@school.sch.uk", "Sam Staff", &["staff"]).await;
    let tokens_of_sam = |app: &TestApp| {
        let db = app.db().clone();
        async move {
            let id = safehand_server::accounts::by_email(&db, "sam@school.sch.uk")
                .await
                .unwrap()
                .unwrap()
                .id;
            safehand_server::tokens::list(&db, id).await.unwrap().len()
        }
    };
    let page = sam_b.get(&app, "/account").await;
    page.assert_contains("Expires after (days, 1 to 90)");
    page.assert_contains("name=\"token_password\" type=\"password\"");
    // No password, a wrong one, too many days: refused, each saying what to do, no token.
    let fields = |pw: &'static str, days: &'static str| {
        vec![
            ("token_name", "laptop"),
            ("days", days),
            ("scope", "staff"),
            ("token_password", pw),
        ]
    };
    let page = sam_b.post(&app, "/account/tokens", &fields("", "30")).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    page.assert_contains("Enter your password.");
    let page = sam_b
        .post(&app, "/account/tokens", &fields("not my password", "30"))
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    page.assert_contains("That is not your password.");
    let page = sam_b
        .post(&app, "/account/tokens", &fields(INVITE_PASSWORD, "91"))
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    page.assert_contains("from 1 to 90");
    assert_eq!(tokens_of_sam(&app).await, 0);
    let failed = audit::search(
        app.db(),
        &audit::Filter {
            action: "password_confirmation_failed".into(),
            ..Default::default()
        },
        10,
    )
    .await
    .unwrap();
    assert_eq!(failed.len(), 1);
    assert!(!failed[0].details.contains("not my password"));
    // The right password: a token for at most 90 days.
    let page = sam_b
        .post(&app, "/account/tokens", &fields(INVITE_PASSWORD, "90"))
        .await;
    let token = create_token(page).await;
    assert_eq!(me(&app, &token).await.status, StatusCode::OK);
    // The admin lowers the maximum to 7 days: the 90-day token now ends after 7.
    let mut p = safehand_server::policy::load(app.db()).await.unwrap();
    p.max_token_days = 7;
    safehand_server::policy::save(app.db(), app.clock.now(), &audit::Actor::operator(), &p)
        .await
        .unwrap();
    let list = safehand_server::tokens::list(app.db(), {
        safehand_server::accounts::by_email(app.db(), &sam.email)
            .await
            .unwrap()
            .unwrap()
            .id
    })
    .await
    .unwrap();
    assert_eq!(list[0].expires_at - list[0].created_at, 7 * 86_400);
    let page = sam_b.get(&app, "/account").await;
    page.assert_contains("Expires after (days, 1 to 7)");
    page.assert_contains("value=\"7\"");
    // Guesses fired at once from the signed-in browser: no more get checked than the lock
    // allows, then even the right password is refused, and so is signing in.
    let lock_after = app.state.settings.throttle.lock_after as usize;
    let guesses = (0..lock_after + 5).map(|i| {
        let state = app.state.clone();
        let mut jar = sam_b.jar.clone();
        async move {
            let wrong = format!("guess number {i}");
            post(
                &state,
                &mut jar,
                "/account/tokens",
                &[
                    ("token_name", "x"),
                    ("days", "7"),
                    ("scope", "staff"),
                    ("token_password", &wrong),
                ],
            )
            .await
            .status
        }
    });
    let statuses = futures_util::future::join_all(guesses).await;
    let checked = statuses
        .iter()
        .filter(|s| **s == StatusCode::BAD_REQUEST)
        .count();
    // Then one after another until the lock answers: all told, no more guesses were checked
    // than the lock allows (the first wrong password above included).
    let mut checked_after = 0;
    loop {
        let page = sam_b
            .post(&app, "/account/tokens", &fields("another guess", "7"))
            .await;
        if page.status == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        assert_eq!(page.status, StatusCode::BAD_REQUEST);
        checked_after += 1;
        assert!(checked_after <= lock_after, "never locked");
    }
    assert!(
        1 + checked + checked_after <= lock_after,
        "{checked} guesses checked at once, {checked_after} after: {statuses:?}"
    );
    let page = sam_b
        .post(&app, "/account/tokens", &fields(INVITE_PASSWORD, "7"))
        .await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);
    page.assert_contains("Too many wrong passwords");
    assert_eq!(tokens_of_sam(&app).await, 1);
    let mut b = app.other_browser();
    let page = b
        .post(
            &app,
            "/sign-in",
            &[("email", &sam.email), ("password", &sam.password)],
        )
        .await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);
    // Eight days on, the shortened token has expired.
    app.clock.advance(8 * 86_400);
    assert_eq!(me(&app, &token).await.status, StatusCode::UNAUTHORIZED);
}

async fn disabling_a_user_ends_their_open_session_and_tokens(backend: Backend) {
    let mut app = TestApp::new(backend).await;
    setup_admin(&mut app).await;
    let (sam, mut sam_browser) =
        invite(&mut app, "sam@school.sch.uk", "Sam Staff", &["staff"]).await;
    assert_eq!(sam_browser.get(&app, "/").await.status, StatusCode::OK);
    let page = sam_browser
        .post(
            &app,
            "/account/tokens",
            &[
                ("token_name", "laptop"),
                ("token_password", INVITE_PASSWORD),
                ("days", "30"),
                ("scope", "staff"),
            ],
        )
        .await;
    let token = create_token(page).await;
    assert_eq!(me(&app, &token).await.status, StatusCode::OK);
    let id = safehand_server::accounts::by_email(app.db(), &sam.email)
        .await
        .unwrap()
        .unwrap()
        .id;
    let page = app.post(&format!("/admin/users/{id}/disable"), &[]).await;
    page.assert_contains("is disabled");
    let page = sam_browser.get(&app, "/").await;
    assert_eq!(
        page.status,
        StatusCode::SEE_OTHER,
        "the open session fails at once"
    );
    let page = me(&app, &token).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(page
        .headers
        .get(header::CONTENT_TYPE)
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("application/problem+json"));
    assert!(
        page.body.contains("\"error\":\"not_signed_in\""),
        "{}",
        page.body
    );
    // A disabled user cannot sign in, and sees the same message as a wrong password.
    let mut b = app.other_browser();
    let page = b
        .post(
            &app,
            "/sign-in",
            &[("email", &sam.email), ("password", &sam.password)],
        )
        .await;
    page.assert_contains("Enter a correct email address and password.");
    // Re-enabled, they can sign in again (tokens stay revoked).
    app.post(&format!("/admin/users/{id}/enable"), &[]).await;
    app.clock.advance(30);
    let page = b
        .post(
            &app,
            "/sign-in",
            &[("email", &sam.email), ("password", &sam.password)],
        )
        .await;
    assert_eq!(page.location(), "/sign-in/code");
    assert_eq!(me(&app, &token).await.status, StatusCode::UNAUTHORIZED);
}

async fn password_change_ends_other_sessions_and_tokens(backend: Backend) {
    let mut app = TestApp::new(backend).await;
    let mut admin = setup_admin(&mut app).await;
    let page = app
        .post(
            "/account/tokens",
            &[
                ("token_name", "script"),
                ("token_password", ADMIN_PASSWORD),
                ("days", "7"),
                ("scope", "admin"),
            ],
        )
        .await;
    let token = create_token(page).await;
    let mut other = app.other_browser();
    app.clock.advance(30);
    other
        .post(
            &app,
            "/sign-in",
            &[("email", &admin.email), ("password", &admin.password)],
        )
        .await;
    other
        .post(
            &app,
            "/sign-in/code",
            &[("code", &code(&app, &admin.secret))],
        )
        .await;
    assert_eq!(other.get(&app, "/").await.status, StatusCode::OK);
    // Wrong current password: refused, nothing changes.
    let page = app
        .post(
            "/account/password",
            &[
                ("current", "not it at all"),
                ("password", "granite meadow violin"),
                ("confirm", "granite meadow violin"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    page.assert_contains("current password is not right");
    assert_eq!(other.get(&app, "/").await.status, StatusCode::OK);
    let page = app
        .post(
            "/account/password",
            &[
                ("current", &admin.password),
                ("password", "granite meadow violin"),
                ("confirm", "granite meadow violin"),
            ],
        )
        .await;
    page.assert_contains("Your password has been changed");
    assert_eq!(
        app.get("/").await.status,
        StatusCode::OK,
        "this session stays"
    );
    assert_eq!(
        other.get(&app, "/").await.status,
        StatusCode::SEE_OTHER,
        "the other session ended"
    );
    assert_eq!(
        me(&app, &token).await.status,
        StatusCode::UNAUTHORIZED,
        "tokens revoked"
    );
    let mut b = app.other_browser();
    let page = b
        .post(
            &app,
            "/sign-in",
            &[("email", &admin.email), ("password", &admin.password)],
        )
        .await;
    assert_eq!(
        page.status,
        StatusCode::UNAUTHORIZED,
        "old password no longer works"
    );
    admin.password = "granite meadow violin".into();
    sign_in(&mut app, &admin).await;
}

async fn api_tokens_are_shown_once_scoped_revocable_and_expire(backend: Backend) {
    let mut app = TestApp::new(backend).await;
    let ada = setup_admin(&mut app).await;
    let (_sam, mut sam_b) = invite(
        &mut app,
        "sam@school.sch.uk",
        "Sam Staff",
        &["staff", "technician"],
    )
    .await;
    // A token cannot have a role its owner lacks.
    let page = sam_b
        .post(
            &app,
            "/account/tokens",
            &[
                ("token_name", "x"),
                ("token_password", INVITE_PASSWORD),
                ("days", "30"),
                ("scope", "admin"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    page.assert_contains("only have roles your account holds");
    for days in ["0", "366", "soon"] {
        let page = sam_b
            .post(
                &app,
                "/account/tokens",
                &[
                    ("token_name", "x"),
                    ("token_password", INVITE_PASSWORD),
                    ("days", days),
                    ("scope", "staff"),
                ],
            )
            .await;
        page.assert_contains("from 1 to 90 (the school&#39;s longest token life)");
    }
    let page = sam_b
        .post(
            &app,
            "/account/tokens",
            &[
                ("token_name", "laptop"),
                ("token_password", INVITE_PASSWORD),
                ("days", "2"),
                ("scope", "technician"),
            ],
        )
        .await;
    let token = create_token(page).await;
    assert!(token.starts_with("shtok_"));
    let page = me(&app, &token).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("\"roles\":\"technician\""),
        "scoped to technician only: {}",
        page.body
    );
    // Shown once: the account page lists it without the secret.
    let page = sam_b.get(&app, "/account").await;
    page.assert_contains("laptop");
    assert!(!page.body.contains(&token));
    // Token use is audited.
    let used = audit::search(
        app.db(),
        &audit::Filter {
            action: "token_used".into(),
            ..Default::default()
        },
        10,
    )
    .await
    .unwrap();
    assert_eq!(used.len(), 1);
    // Expiry.
    app.clock.advance(2 * 86_400);
    assert_eq!(me(&app, &token).await.status, StatusCode::UNAUTHORIZED);
    // Revocation (the admin's own session has idled out meanwhile: sign in again).
    assert_eq!(app.get("/").await.location(), "/sign-in?ended=1");
    sign_in(&mut app, &ada).await;
    let (_, mut b2) = invite(&mut app, "tess@school.sch.uk", "Tess Tech", &["technician"]).await;
    let token2 = create_token(
        b2.post(
            &app,
            "/account/tokens",
            &[
                ("token_name", "cli"),
                ("token_password", INVITE_PASSWORD),
                ("days", "30"),
                ("scope", "technician"),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(me(&app, &token2).await.status, StatusCode::OK);
    let tess = safehand_server::accounts::by_email(app.db(), "tess@school.sch.uk")
        .await
        .unwrap()
        .unwrap();
    let list = safehand_server::tokens::list(app.db(), tess.id)
        .await
        .unwrap();
    let page = b2
        .post(&app, &format!("/account/tokens/{}/revoke", list[0].id), &[])
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(me(&app, &token2).await.status, StatusCode::UNAUTHORIZED);
    // Someone else's token id cannot be revoked by another user.
    let page = sam_b
        .post(&app, &format!("/account/tokens/{}/revoke", list[0].id), &[])
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER.min(page.status));
    // A garbage bearer token is a JSON 401.
    let page = me(&app, "shtok_nonsense").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        page.headers.get(header::WWW_AUTHENTICATE).unwrap(),
        "Bearer"
    );
}

async fn roles_guard_pages(backend: Backend) {
    let mut app = TestApp::new(backend).await;
    setup_admin(&mut app).await;
    let (_sam, mut sam_b) = invite(&mut app, "sam@school.sch.uk", "Sam Staff", &["staff"]).await;
    for path in [
        "/admin/users",
        "/admin/audit",
        "/admin/audit.csv",
        "/admin/audit.json",
        "/admin/users/1",
    ] {
        let page = sam_b.get(&app, path).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}");
        page.assert_contains("You do not have permission");
    }
    let page = sam_b
        .post(
            &app,
            "/admin/users",
            &[
                ("name", "Eve"),
                ("email", "eve@x.sch.uk"),
                ("role", "admin"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(
        safehand_server::accounts::by_email(app.db(), "eve@x.sch.uk")
            .await
            .unwrap()
            .is_none()
    );
    let home = sam_b.get(&app, "/").await;
    home.assert_contains("Send files securely");
    assert!(!home.body.contains("Manage users"));
    // An admin cannot remove the last admin role or disable themselves.
    let page = app.post("/admin/users/1/roles", &[("role", "staff")]).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    page.assert_contains("only active admin");
    let page = app.post("/admin/users/1/disable", &[]).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    // Roles change, and take effect at once.
    let sam_id = safehand_server::accounts::by_email(app.db(), "sam@school.sch.uk")
        .await
        .unwrap()
        .unwrap()
        .id;
    let page = app
        .post(
            &format!("/admin/users/{sam_id}/roles"),
            &[("role", "staff"), ("role", "approver")],
        )
        .await;
    page.assert_contains("Roles saved");
    sam_b
        .get(&app, "/")
        .await
        .assert_contains("Transfers waiting for approval");
}

async fn missing_or_wrong_csrf_changes_nothing(backend: Backend) {
    let mut app = TestApp::new(backend).await;
    setup_admin(&mut app).await;
    let before = safehand_server::accounts::count(app.db()).await.unwrap();
    let cookies = app
        .jar
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    for body in [
        "name=Eve&email=eve%40x.sch.uk&role=staff",
        "csrf=forged&name=Eve&email=eve%40x.sch.uk&role=staff",
    ] {
        let req = Request::post("/admin/users")
            .header(header::COOKIE, &cookies)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap();
        let page = app.send(req).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN);
        page.assert_contains("This form has expired or was not sent from this service");
    }
    // A token from another browser's cookie does not work either.
    let mut other = app.other_browser();
    other.get(&app, "/sign-in").await;
    let foreign = crate::common::csrf_for(&app.state, &other.jar);
    let req = Request::post("/account/sign-out-everywhere")
        .header(header::COOKIE, &cookies)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("csrf={foreign}")))
        .unwrap();
    assert_eq!(app.send(req).await.status, StatusCode::FORBIDDEN);
    assert_eq!(app.get("/").await.status, StatusCode::OK, "still signed in");
    assert_eq!(
        safehand_server::accounts::count(app.db()).await.unwrap(),
        before
    );
    // The sign-in form is protected too (login CSRF).
    let req = Request::post("/sign-in")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(
            "email=ada%40school.sch.uk&password=kettle+orbit+lantern",
        ))
        .unwrap();
    let mut jar = Default::default();
    let page = send(&app.state, &mut jar, req).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
}

/// Cookie tossing: someone who can plant a cookie in the victim's browser (a sibling
/// subdomain over plain HTTP, say) plants their own CSRF cookie together with a token they
/// got for it. Bound to the session, that token is refused in the victim's session.
async fn csrf_tokens_are_bound_to_the_session(backend: Backend) {
    let mut app = TestApp::new(backend).await;
    setup_admin(&mut app).await;
    let (_, mallory) = invite(&mut app, "mal@school.sch.uk", "Mal Staff", &["staff"]).await;
    let mut visitor = app.other_browser();
    visitor.get(&app, "/sign-in").await;
    let ada_session = app.jar.get("safehand_session").cloned().unwrap();
    let ada_csrf_cookie = app.jar.get("safehand_csrf").cloned().unwrap();
    let attempts = [
        // Mallory's own signed-in pair, planted in Ada's browser.
        (
            mallory.jar.get("safehand_csrf").cloned().unwrap(),
            crate::common::csrf_for(&app.state, &mallory.jar),
        ),
        // A pair from a browser that is not signed in.
        (
            visitor.jar.get("safehand_csrf").cloned().unwrap(),
            crate::common::csrf_for(&app.state, &visitor.jar),
        ),
        // Ada's own cookie with the token it had before she signed in.
        (
            ada_csrf_cookie.clone(),
            app.state.keys.csrf_token(&ada_csrf_cookie, ""),
        ),
        // Ada's own cookie with a token for another session.
        (
            ada_csrf_cookie.clone(),
            app.state.keys.csrf_token(
                &ada_csrf_cookie,
                mallory.jar.get("safehand_session").unwrap(),
            ),
        ),
    ];
    for (planted_cookie, token) in attempts {
        let req = Request::post("/account/sign-out-everywhere")
            .header(
                header::COOKIE,
                format!("safehand_session={ada_session}; safehand_csrf={planted_cookie}"),
            )
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("csrf={token}")))
            .unwrap();
        let page = send(&app.state, &mut Default::default(), req).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
        page.assert_contains("This form has expired or was not sent from this service");
    }
    assert_eq!(
        app.get("/account").await.status,
        StatusCode::OK,
        "still signed in"
    );
    // The token on Ada's own pages is for her session, and works.
    let page = app.get("/account").await;
    let on_page = page
        .between("name=\"csrf\" value=\"", "\"")
        .expect("the account page has forms");
    assert_eq!(on_page, app.csrf());
    assert_eq!(
        on_page,
        app.state.keys.csrf_token(&ada_csrf_cookie, &ada_session)
    );
    let page = app.post("/account/sign-out-everywhere", &[]).await;
    page.assert_contains("You have signed out everywhere");
}

/// Under HTTPS the cookies carry the `__Host-` prefix (Secure, Path=/, no Domain), cookies
/// under the old names are ignored, and an ended session's cookie is removed with the same
/// name and flags (a browser ignores a `__Host-` removal without them).
async fn cookies_carry_the_host_prefix_under_https(backend: Backend) {
    let mut app = TestApp::with_settings(backend, |s| {
        s.public_url = "https://safehand.test".into();
        s.https = true;
    })
    .await;
    let page = app.get("/sign-in").await;
    let set: Vec<&str> = page
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(set.len(), 1, "{set:?}");
    assert!(set[0].starts_with("__Host-safehand_csrf="), "{set:?}");
    for attr in ["; Path=/;", "; HttpOnly", "; SameSite=Strict", "; Secure"] {
        assert!(set[0].contains(attr), "{attr} in {set:?}");
    }
    assert!(!set[0].to_ascii_lowercase().contains("domain="), "{set:?}");
    let admin = setup_admin(&mut app).await;
    let names: Vec<&String> = app.jar.keys().collect();
    assert_eq!(
        names,
        ["__Host-safehand_csrf", "__Host-safehand_session"],
        "{names:?}"
    );
    assert_eq!(app.get("/account").await.status, StatusCode::OK);
    sign_in(&mut app, &admin).await;
    let session = app.jar.get("__Host-safehand_session").cloned().unwrap();
    // The same session id under the unprefixed name (as a sibling could plant it) is no
    // session at all.
    let mut planted = app.other_browser();
    planted
        .jar
        .insert("safehand_session".into(), session.clone());
    let page = planted.get(&app, "/account").await;
    assert_eq!(page.location(), "/sign-in");
    // An ended session: the removal names the prefixed cookie, with Secure and Path=/.
    let mut stale = app.other_browser();
    stale
        .jar
        .insert("__Host-safehand_session".into(), "A".repeat(43));
    let page = stale.get(&app, "/account").await;
    assert_eq!(page.location(), "/sign-in?ended=1");
    let removal: Vec<&str> = page
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .filter(|v| v.contains("session"))
        .collect();
    assert_eq!(removal.len(), 1, "{removal:?}");
    for part in [
        "__Host-safehand_session=;",
        "Path=/;",
        "Max-Age=0",
        "; Secure",
    ] {
        assert!(removal[0].contains(part), "{part} in {removal:?}");
    }
    // Forms work with the prefixed cookies, and sign-out removes the session cookie.
    let page = app.post("/sign-out", &[]).await;
    page.assert_contains("You have signed out");
    assert!(!app.jar.contains_key("__Host-safehand_session"));
    sign_in(&mut app, &admin).await;
    assert_eq!(app.get("/account").await.status, StatusCode::OK);
}

async fn oversized_and_malformed_forms_change_nothing(backend: Backend) {
    let mut app = TestApp::new(backend).await;
    setup_admin(&mut app).await;
    let before = safehand_server::accounts::count(app.db()).await.unwrap();
    let huge = "a".repeat(100 * 1024);
    let page = app
        .post(
            "/admin/users",
            &[
                ("name", &huge),
                ("email", "eve@x.sch.uk"),
                ("role", "staff"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::PAYLOAD_TOO_LARGE);
    page.assert_contains("larger than its limit of 64 KiB");
    let long_name = "n".repeat(101);
    let page = app
        .post(
            "/admin/users",
            &[
                ("name", &long_name),
                ("email", &format!("{}@x.sch.uk", "e".repeat(250))),
                ("role", "wizard"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    page.assert_contains("at most 100 characters");
    page.assert_contains("at most 254 characters");
    page.assert_contains("Choose roles from the list");
    let page = app
        .post(
            "/admin/users",
            &[
                ("name", "Eve\u{0007}"),
                ("email", "eve@x.sch.uk"),
                ("role", "staff"),
            ],
        )
        .await;
    page.assert_contains("control characters");
    let csrf = app.csrf();
    let cookies = app
        .jar
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    for (ctype, body) in [
        ("application/json", format!("{{\"csrf\":\"{csrf}\"}}")),
        (
            "application/x-www-form-urlencoded",
            format!("csrf={csrf}&name=Eve%00&email=eve%40x.sch.uk&role=staff"),
        ),
    ] {
        let req = Request::post("/admin/users")
            .header(header::COOKIE, &cookies)
            .header(header::CONTENT_TYPE, ctype)
            .body(Body::from(body))
            .unwrap();
        let page = app.send(req).await;
        assert_eq!(
            page.status,
            StatusCode::BAD_REQUEST,
            "{ctype}: {}",
            page.body
        );
        page.assert_contains("There is a problem");
    }
    // Oversized sign-in fields get the ordinary message and lock nothing open.
    let mut b = app.other_browser();
    let page = b
        .post(
            &app,
            "/sign-in",
            &[("email", &"e".repeat(5000)), ("password", &"p".repeat(129))],
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        safehand_server::accounts::count(app.db()).await.unwrap(),
        before
    );
    // Bad audit filter dates are reported on the field.
    let page = app.get("/admin/audit?from=yesterday&to=2026-13-40").await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    page.assert_contains("href=\"#from\"");
    page.assert_contains("href=\"#to\"");
    // Unknown pages and bad ids.
    assert_eq!(
        app.get("/admin/users/999999").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/admin/users/abc").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(app.get("/no/such/page").await.status, StatusCode::NOT_FOUND);
}

async fn tampered_and_unknown_cookies_are_treated_as_signed_out(backend: Backend) {
    let mut app = TestApp::new(backend).await;
    setup_admin(&mut app).await;
    let good = app.jar.get("safehand_session").cloned().unwrap();
    let mut tampered = good.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    for value in [
        tampered.as_str(),
        "",
        "x",
        &"A".repeat(500),
        "../../etc/passwd",
        "%00%ff",
    ] {
        let mut b = app.other_browser();
        b.jar.insert("safehand_session".into(), value.to_string());
        let page = b.get(&app, "/account").await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{value:?}");
        let expected = if value.is_empty() || value.len() > 128 {
            "/sign-in"
        } else {
            "/sign-in?ended=1"
        };
        assert_eq!(page.location(), expected, "{value:?}");
    }
    assert_eq!(
        app.get("/account").await.status,
        StatusCode::OK,
        "the real session still works"
    );
}

async fn security_headers_on_every_response(backend: Backend) {
    let mut app = TestApp::new(backend).await;
    for path in ["/sign-in", "/healthz", "/no/such/page", "/static/style.css"] {
        let page = app.get(path).await;
        let h = &page.headers;
        let csp = h
            .get(header::CONTENT_SECURITY_POLICY)
            .unwrap()
            .to_str()
            .unwrap();
        assert!(
            csp.contains("default-src 'none'")
                && csp.contains("frame-ancestors 'none'")
                && !csp.contains("unsafe-inline"),
            "{path}"
        );
        // Scripts only from the site's own files: never inline, never eval, never elsewhere.
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(!csp.contains("unsafe-eval") && !csp.contains("script-src *"));
        assert_eq!(h.get(header::X_FRAME_OPTIONS).unwrap(), "DENY");
        assert_eq!(h.get(header::X_CONTENT_TYPE_OPTIONS).unwrap(), "nosniff");
        assert_eq!(h.get(header::REFERRER_POLICY).unwrap(), "no-referrer");
        assert!(
            h.get(header::STRICT_TRANSPORT_SECURITY).is_none(),
            "no HSTS over plain HTTP"
        );
    }
    let mut fresh = Default::default();
    let page = send(
        &app.state,
        &mut fresh,
        Request::get("/sign-in").body(Body::empty()).unwrap(),
    )
    .await;
    assert!(!page.body.contains("<script"), "pages carry no script");
    let cookie = page
        .headers
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && !cookie.contains("Secure")
    );
    // Under HTTPS: HSTS and Secure cookies.
    let mut app = TestApp::with_settings(backend, |s| {
        *s = safehand_server::Settings {
            throttle: s.throttle,
            ..safehand_server::Settings::new("https://safehand.test")
        }
    })
    .await;
    setup_admin(&mut app).await;
    let page = app.get("/").await;
    assert!(page
        .headers
        .get(header::STRICT_TRANSPORT_SECURITY)
        .is_some());
    let mut jar = Default::default();
    let page = send(
        &app.state,
        &mut jar,
        Request::get("/sign-in").body(Body::empty()).unwrap(),
    )
    .await;
    assert!(page
        .headers
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .contains("; Secure"));
}

async fn health_readiness_and_metrics(backend: Backend) {
    let mut app = TestApp::new(backend).await;
    let page = app.get("/healthz").await;
    assert_eq!((page.status, page.body.as_str()), (StatusCode::OK, "ok"));
    let page = app.get("/readyz").await;
    assert_eq!((page.status, page.body.as_str()), (StatusCode::OK, "ready"));
    let page = app.get("/metrics").await;
    page.assert_contains(
        "safehand_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1",
    );
    page.assert_contains(
        "safehand_http_request_duration_seconds_bucket{route=\"/readyz\",le=\"+Inf\"} 1",
    );
    let mut b = app.other_browser();
    b.post(
        &app,
        "/sign-in",
        &[("email", "x@y.sch.uk"), ("password", "wrong wrong wrong")],
    )
    .await;
    let page = app.get("/metrics").await;
    page.assert_contains(
        "safehand_http_requests_total{method=\"POST\",route=\"/sign-in\",status=\"401\"} 1",
    );
    page.assert_contains("safehand_sign_in_failures_total 1");
    page.assert_contains("safehand_sign_ins_total 0");
    // Database gone: not ready.
    app.state.db.close().await;
    let page = app.get("/readyz").await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(app.get("/healthz").await.status, StatusCode::OK);
}

async fn audit_log_is_append_only_and_verify_finds_the_first_broken_link(backend: Backend) {
    let mut app = TestApp::new(backend).await;
    let admin = setup_admin(&mut app).await;
    sign_in(&mut app, &admin).await;
    app.post("/sign-out", &[]).await;
    let Verification::Intact { records, .. } = audit::verify(app.db()).await.unwrap() else {
        panic!("intact log reported broken")
    };
    assert!(records >= 6);
    // The database itself refuses edits and deletions.
    assert!(
        sqlx::query("update audit_log set actor = 'someone else' where seq = 3")
            .execute(app.db().pool())
            .await
            .is_err()
    );
    assert!(sqlx::query("delete from audit_log where seq = 3")
        .execute(app.db().pool())
        .await
        .is_err());
    // Someone with full database access removes the guard and edits record 3.
    let drop_guard = match app.db().dialect() {
        Dialect::Sqlite => "drop trigger audit_log_no_update",
        Dialect::Postgres => "drop trigger audit_log_no_change on audit_log",
    };
    sqlx::query(drop_guard)
        .execute(app.db().pool())
        .await
        .unwrap();
    sqlx::query("update audit_log set subject = 'mallory@evil.example' where seq = 3")
        .execute(app.db().pool())
        .await
        .unwrap();
    assert_eq!(
        audit::verify(app.db()).await.unwrap(),
        Verification::Broken {
            seq: 3,
            reason: "its contents do not match its hash (the record was changed)".into()
        }
    );
}

/// Rewrites record `from` (its subject) and recomputes every unkeyed hash after it and the
/// head, as someone with full database access but without the audit key could.
async fn rewrite_from(app: &TestApp, from: i64, subject: &str) {
    use safehand_crypto::audit_chain::{record_hash, Fields};
    use sqlx::Row;
    let rows = sqlx::query(
        "select seq, at, actor_id, actor, action, subject, address, details, prev_hash from audit_log order by seq",
    )
    .fetch_all(app.db().pool())
    .await
    .unwrap();
    let mut prev = String::new();
    for row in &rows {
        let seq: i64 = row.get("seq");
        let actor_id = safehand_server::db::opt_i64(row, "actor_id").unwrap();
        let (actor, action, address, details): (String, String, String, String) = (
            row.get("actor"),
            row.get("action"),
            row.get("address"),
            row.get("details"),
        );
        let mut subj: String = row.get("subject");
        let mut prev_hash: String = row.get("prev_hash");
        if seq < from {
            prev = record_hash(&Fields {
                seq,
                at: row.get("at"),
                actor_id,
                actor: &actor,
                action: &action,
                subject: &subj,
                address: &address,
                details: &details,
                prev_hash: &prev_hash,
            });
            continue;
        }
        if seq == from {
            subj = subject.to_string();
        }
        prev_hash = prev.clone();
        let hash = record_hash(&Fields {
            seq,
            at: row.get("at"),
            actor_id,
            actor: &actor,
            action: &action,
            subject: &subj,
            address: &address,
            details: &details,
            prev_hash: &prev_hash,
        });
        // prev_hash is unique: clear the old values first.
        sqlx::query("update audit_log set prev_hash = $1 where seq = $2")
            .bind(format!("x{seq}"))
            .bind(seq)
            .execute(app.db().pool())
            .await
            .unwrap();
        sqlx::query("update audit_log set subject = $1, prev_hash = $2, hash = $3 where seq = $4")
            .bind(&subj)
            .bind(&prev_hash)
            .bind(&hash)
            .bind(seq)
            .execute(app.db().pool())
            .await
            .unwrap();
        prev = hash;
    }
    sqlx::query("update audit_head set hash = $1 where id = 1")
        .bind(&prev)
        .execute(app.db().pool())
        .await
        .unwrap();
}

async fn drop_audit_guards(app: &TestApp) {
    let statements: &[&str] = match app.db().dialect() {
        Dialect::Sqlite => &[
            "drop trigger audit_log_no_update",
            "drop trigger audit_signatures_no_update",
            "drop trigger audit_signatures_no_delete",
        ],
        Dialect::Postgres => &[
            "drop trigger audit_log_no_change on audit_log",
            "drop trigger audit_signatures_no_change on audit_signatures",
        ],
    };
    for q in statements {
        sqlx::query(q).execute(app.db().pool()).await.unwrap();
    }
}

/// The chain is keyed and its head signed: a database writer who rewrites a record and
/// recomputes every unkeyed hash is caught, on the server and in an export checked offline.
async fn audit_chain_is_keyed_and_its_head_signed(backend: Backend) {
    use safehand_crypto::audit_chain::verify_export;
    use safehand_crypto::certificate::PublicKey;
    let mut app = TestApp::new(backend).await;
    let admin = setup_admin(&mut app).await;
    sign_in(&mut app, &admin).await;
    invite(&mut app, "sam@school.sch.uk", "Sam Staff", &["staff"]).await;
    // Every record has a MAC; none predates the key.
    let Verification::Intact {
        records, unkeyed, ..
    } = audit::verify(app.db()).await.unwrap()
    else {
        panic!("intact log reported broken")
    };
    assert!(records >= 8, "{records}");
    assert_eq!(unkeyed, 0);
    // The audit page shows the signing key; the whole-log export checks out offline with it.
    let page = app.get("/admin/audit").await;
    let key_text = page
        .between("id=\"audit-public-key\">", "<")
        .expect("the signing key on the audit page");
    let key: PublicKey = key_text.parse().unwrap();
    let export = app.get("/admin/audit.json").await;
    assert_eq!(export.status, StatusCode::OK);
    let report = verify_export(export.body.as_bytes(), Some(&key)).unwrap();
    assert_eq!(report.records, records);
    assert_eq!(report.signed_heads.last(), Some(&records));
    // ... but not with another key, nor after a record in the file is changed and every hash
    // in the file recomputed.
    let (other, _) = safehand_crypto::audit_chain::AuditKey::generate(1);
    assert!(
        verify_export(export.body.as_bytes(), Some(&other.public_key()))
            .unwrap_err()
            .contains("not by the key you gave")
    );
    let mut v: serde_json::Value = serde_json::from_str(&export.body).unwrap();
    {
        use safehand_crypto::audit_chain::{record_hash, Fields, GENESIS};
        let recs = v["records"].as_array_mut().unwrap();
        recs[2]["subject"] = "mallory@evil.example".into();
        let mut prev = GENESIS.to_string();
        for r in recs.iter_mut() {
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
    let forged = serde_json::to_vec(&v).unwrap();
    let err = verify_export(&forged, Some(&key)).unwrap_err();
    assert!(err.contains("not the ones the server signed"), "{err}");
    // A filtered export says it cannot be checked as a chain.
    let filtered = app.get("/admin/audit.json?action=user_created").await;
    assert!(verify_export(filtered.body.as_bytes(), Some(&key))
        .unwrap_err()
        .contains("filtered export"));

    // On the server: someone with full database access rewrites record 3 and recomputes
    // every unkeyed hash after it and the head. The unkeyed chain is consistent again...
    drop_audit_guards(&app).await;
    // (the signed heads would give it away too; they are removed to test the MACs alone)
    sqlx::query("delete from audit_signatures")
        .execute(app.db().pool())
        .await
        .unwrap();
    rewrite_from(&app, 3, "mallory@evil.example").await;
    // ... but the MAC of record 3 no longer matches.
    assert_eq!(
        audit::verify(app.db()).await.unwrap(),
        Verification::Broken {
            seq: 3,
            reason: "its MAC is wrong: the record, or one before it, was rewritten by someone without the audit key".into()
        }
    );
    // Removing the MACs from there on does not help: a record without one after records
    // with one is a rewrite.
    sqlx::query("update audit_log set mac = null where seq >= 3")
        .execute(app.db().pool())
        .await
        .unwrap();
    assert_eq!(
        audit::verify(app.db()).await.unwrap(),
        Verification::Broken {
            seq: 3,
            reason: "its MAC is missing, though it was written after the log was keyed (the record was rewritten)".into()
        }
    );
    // Nor does removing every MAC to pass the whole log off as older than the key: the key
    // file says from which record on MACs are due (here, the first).
    sqlx::query("update audit_log set mac = null")
        .execute(app.db().pool())
        .await
        .unwrap();
    let Verification::Broken { seq, .. } = audit::verify(app.db()).await.unwrap() else {
        panic!("a rewritten log without MACs reported intact")
    };
    assert_eq!(seq, 1);
    // A broken chain is never signed: the export says so and does not check out offline.
    let export = app.get("/admin/audit.json").await;
    let err = verify_export(export.body.as_bytes(), Some(&key)).unwrap_err();
    assert!(err.contains("This export is not signed"), "{err}");
    assert_eq!(
        audit::sign_head_if_due(app.db(), app.clock.now(), 0)
            .await
            .unwrap(),
        None
    );
}

/// Heads are signed at intervals (by the sweeper), only when the log has grown; a forged or
/// altered signature is caught.
async fn audit_heads_are_signed_at_intervals(backend: Backend) {
    let mut app = TestApp::new(backend).await;
    setup_admin(&mut app).await;
    let now = app.clock.now();
    let first = audit::sign_head_if_due(app.db(), now, audit::SIGN_INTERVAL_SECS)
        .await
        .unwrap()
        .expect("the first head is signed at once");
    // Not grown: nothing to sign.
    app.clock.advance(audit::SIGN_INTERVAL_SECS + 1);
    assert_eq!(
        audit::sign_head_if_due(app.db(), app.clock.now(), audit::SIGN_INTERVAL_SECS)
            .await
            .unwrap(),
        None
    );
    // Grown, but too soon after the last signature.
    app.post("/sign-out", &[]).await;
    assert_eq!(
        audit::sign_head_if_due(app.db(), now + 10, audit::SIGN_INTERVAL_SECS)
            .await
            .unwrap(),
        None
    );
    let Verification::Intact { signed_up_to, .. } = audit::verify(app.db()).await.unwrap() else {
        panic!("broken")
    };
    assert_eq!(signed_up_to, Some(first));
    // Grown and due.
    let second = audit::sign_head_if_due(app.db(), app.clock.now(), audit::SIGN_INTERVAL_SECS)
        .await
        .unwrap()
        .expect("grown and due");
    assert!(second > first);
    // A signature row changed by a database writer is caught.
    drop_audit_guards(&app).await;
    sqlx::query("update audit_signatures set at = at + 1 where seq = $1")
        .bind(first)
        .execute(app.db().pool())
        .await
        .unwrap();
    assert_eq!(
        audit::verify(app.db()).await.unwrap(),
        Verification::Broken {
            seq: first,
            reason:
                "the head signed at this record does not match it, or its signature is not valid"
                    .into()
        }
    );
}

/// A log kept by an older release has records without MACs; a key made for it notes where
/// keying began. Those records verify, and rewriting them is caught by the first keyed
/// record, whose MAC covers their last hash.
async fn records_from_before_the_key_are_protected_by_the_first_keyed_one(backend: Backend) {
    use safehand_crypto::audit_chain::{record_hash, AuditKey, Fields, GENESIS};
    let app = TestApp::new(backend).await;
    // Two records as the older release wrote them: unkeyed hashes, no MAC.
    let mut prev = GENESIS.to_string();
    for seq in 1..=2i64 {
        let subject = format!("old-{seq}@school.sch.uk");
        let hash = record_hash(&Fields {
            seq,
            at: START + seq,
            actor_id: None,
            actor: "operator (command line)",
            action: "user_created",
            subject: &subject,
            address: "local",
            details: "{}",
            prev_hash: &prev,
        });
        sqlx::query(
            "insert into audit_log (seq, at, actor_id, actor, action, subject, address, details, prev_hash, hash) \
             values ($1, $2, null, 'operator (command line)', 'user_created', $3, 'local', '{}', $4, $5)",
        )
        .bind(seq)
        .bind(START + seq)
        .bind(&subject)
        .bind(&prev)
        .bind(&hash)
        .execute(app.db().pool())
        .await
        .unwrap();
        prev = hash;
    }
    sqlx::query("update audit_head set seq = 2, hash = $1 where id = 1")
        .bind(&prev)
        .execute(app.db().pool())
        .await
        .unwrap();
    // The upgraded server makes its key now: keyed from record 3.
    let dir = tempfile::tempdir().unwrap();
    let bare = safehand_server::db::Db::connect(&app.tdb.url)
        .await
        .unwrap();
    let key = audit::load_or_create_key(&dir.path().join("audit.key"), &bare)
        .await
        .unwrap();
    assert_eq!(key.keyed_from(), 3);
    let text = std::fs::read_to_string(dir.path().join("audit.key")).unwrap();
    assert!(text.contains("keyed-from: 3"), "{text}");
    assert_eq!(
        AuditKey::parse(&text).unwrap().public_key(),
        key.public_key()
    );
    let db = bare.with_audit_key(key);
    audit::record(
        &db,
        START + 10,
        &audit::Actor::operator(),
        "policy_changed",
        "policy",
        serde_json::json!({}),
    )
    .await
    .unwrap();
    let Verification::Intact {
        records, unkeyed, ..
    } = audit::verify(&db).await.unwrap()
    else {
        panic!("broken")
    };
    assert_eq!((records, unkeyed), (3, 2));
    // Rewriting an old record (and its hash, and the link of the next) is caught at 3.
    drop_audit_guards(&app).await;
    let hash = record_hash(&Fields {
        seq: 2,
        at: START + 2,
        actor_id: None,
        actor: "operator (command line)",
        action: "user_created",
        subject: "mallory@evil.example",
        address: "local",
        details: "{}",
        prev_hash: &sqlx::query_scalar::<_, String>("select hash from audit_log where seq = 1")
            .fetch_one(db.pool())
            .await
            .unwrap(),
    });
    sqlx::query("update audit_log set subject = 'mallory@evil.example', hash = $1 where seq = 2")
        .bind(&hash)
        .execute(db.pool())
        .await
        .unwrap();
    sqlx::query("update audit_log set prev_hash = $1 where seq = 3")
        .bind(&hash)
        .execute(db.pool())
        .await
        .unwrap();
    let Verification::Broken { seq, .. } = audit::verify(&db).await.unwrap() else {
        panic!("rewritten old record not caught")
    };
    assert_eq!(seq, 3);
}

async fn audit_page_filters_and_exports(backend: Backend) {
    let mut app = TestApp::new(backend).await;
    setup_admin(&mut app).await;
    invite(&mut app, "sam@school.sch.uk", "Sam Staff", &["staff"]).await;
    let mut b = app.other_browser();
    b.post(
        &app,
        "/sign-in",
        &[
            ("email", "sam@school.sch.uk"),
            ("password", "wrong wrong wrong"),
        ],
    )
    .await;
    let page = app.get("/admin/audit").await;
    page.assert_contains("user_created");
    page.assert_contains("sign_in_failed");
    let page = app.get("/admin/audit?action=user_created").await;
    page.assert_contains("sam@school.sch.uk");
    assert!(!page.body.contains("<td>sign_in_failed</td>"));
    let page = app.get("/admin/audit?user=sam%40school").await;
    assert!(!page.body.contains("<td>first_admin_created</td>"));
    page.assert_contains("<td>sign_in_failed</td>");
    let page = app.get("/admin/audit?from=2020-01-01&to=2020-01-02").await;
    page.assert_contains("No records match");
    let csv = app.get("/admin/audit.csv?action=sign_in_failed").await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(csv
        .headers
        .get(header::CONTENT_TYPE)
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let lines: Vec<&str> = csv.body.trim_end().split("\r\n").collect();
    assert_eq!(
        lines[0],
        "seq,at,actor,action,subject,address,details,prev_hash,hash"
    );
    assert_eq!(lines.len(), 2, "{}", csv.body);
    assert!(lines[1].contains("\"sign_in_failed\"") && lines[1].contains("\"sam@school.sch.uk\""));
    let json = app.get("/admin/audit.json?user=sam").await;
    let v: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    let records = v["records"].as_array().unwrap();
    assert!(records
        .iter()
        .all(|r| r["actor"].as_str().unwrap().contains("sam")
            || r["subject"].as_str().unwrap().contains("sam")));
    assert!(records.iter().any(|r| r["action"] == "user_created"));
    // Exports are themselves audited.
    let exported = audit::search(
        app.db(),
        &audit::Filter {
            action: "audit_exported".into(),
            ..Default::default()
        },
        10,
    )
    .await
    .unwrap();
    assert_eq!(exported.len(), 2);
    // CSV defuses spreadsheet formulas in user-controlled fields.
    let mut c = app.other_browser();
    c.post(
        &app,
        "/sign-in",
        &[
            ("email", "=HYPERLINK(\"x\")@a.b"),
            ("password", "wrong wrong wrong"),
        ],
    )
    .await;
    let csv = app.get("/admin/audit.csv").await;
    assert!(
        csv.body.contains("\"'=hyperlink(\"\"x\"\")@a.b\""),
        "{}",
        csv.body
    );
}

async fn totp_seed_is_stored_encrypted(backend: Backend) {
    let mut app = TestApp::new(backend).await;
    let admin = setup_admin(&mut app).await;
    let row: (Vec<u8>,) = {
        use sqlx::Row;
        let r = sqlx::query("select totp_seed from users where email = $1")
            .bind(&admin.email)
            .fetch_one(app.db().pool())
            .await
            .unwrap();
        (r.try_get::<Vec<u8>, _>("totp_seed").unwrap(),)
    };
    let seed = totp_rs::Secret::Encoded(admin.secret.clone())
        .to_bytes()
        .unwrap();
    assert!(row.0.len() > seed.len() + 16, "nonce and tag present");
    assert!(
        !row.0.windows(seed.len()).any(|w| w == seed.as_slice()),
        "the seed is not stored in the clear"
    );
    // Recovery codes are stored only sealed (so a key rotation can move them), never in clear.
    use sqlx::Row;
    let rows = sqlx::query("select code_sealed from sealed_recovery_codes")
        .fetch_all(app.db().pool())
        .await
        .unwrap();
    assert_eq!(rows.len(), 10);
    let legacy: i64 = sqlx::query_scalar("select count(*) from recovery_codes")
        .fetch_one(app.db().pool())
        .await
        .unwrap();
    assert_eq!(legacy, 0);
    for code in &admin.recovery_codes {
        let plain = code.replace('-', "");
        for r in &rows {
            let sealed: Vec<u8> = r.try_get("code_sealed").unwrap();
            assert_eq!(
                safehand_server::keys::ServerKeys::sealed_key_id(&sealed),
                Some(app.state.keys.id())
            );
            for form in [code.as_bytes(), plain.as_bytes()] {
                assert!(!sealed.windows(form.len()).any(|w| w == form));
            }
        }
    }
}

async fn admin_resets_totp_and_password(backend: Backend) {
    let mut app = TestApp::new(backend).await;
    setup_admin(&mut app).await;
    let (sam, mut sam_b) = invite(&mut app, "sam@school.sch.uk", "Sam Staff", &["staff"]).await;
    let id = safehand_server::accounts::by_email(app.db(), &sam.email)
        .await
        .unwrap()
        .unwrap()
        .id;
    // TOTP reset: session ends; next sign-in goes to enrolment with a new secret.
    app.post(&format!("/admin/users/{id}/reset-totp"), &[])
        .await
        .assert_contains("Authenticator app reset");
    assert_eq!(sam_b.get(&app, "/").await.status, StatusCode::SEE_OTHER);
    let page = sam_b
        .post(
            &app,
            "/sign-in",
            &[("email", &sam.email), ("password", &sam.password)],
        )
        .await;
    assert_eq!(page.location(), "/enrol/totp");
    let page = sam_b.get(&app, "/enrol/totp").await;
    let new_secret = secret_from(&page);
    assert_ne!(new_secret, sam.secret);
    // Wrong code during enrolment: refused, still enrolling.
    let page = sam_b.post(&app, "/enrol/totp", &[("code", "12")]).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    page.assert_contains("The code is not right");
    let page = sam_b
        .post(&app, "/enrol/totp", &[("code", &code(&app, &new_secret))])
        .await;
    assert_eq!(codes_from(&page).len(), 10);
    // Forced password reset: old password dead, link sets a new one, TOTP kept.
    let page = app
        .post(&format!("/admin/users/{id}/reset-password"), &[])
        .await;
    let link = page.between("http://safehand.test", "\"").unwrap();
    assert_eq!(sam_b.get(&app, "/").await.status, StatusCode::SEE_OTHER);
    let mut b = app.other_browser();
    let page = b
        .post(
            &app,
            "/sign-in",
            &[("email", &sam.email), ("password", &sam.password)],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    let page = b
        .post(
            &app,
            &link,
            &[
                ("password", "orchard pebble lighthouse"),
                ("confirm", "orchard pebble lighthouse"),
            ],
        )
        .await;
    assert_eq!(page.location(), "/sign-in?password_set=1");
    // The link worked once.
    let page = b.get(&app, &link).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    app.clock.advance(30);
    let page = b
        .post(
            &app,
            "/sign-in",
            &[
                ("email", &sam.email),
                ("password", "orchard pebble lighthouse"),
            ],
        )
        .await;
    assert_eq!(page.location(), "/sign-in/code");
    let page = b
        .post(&app, "/sign-in/code", &[("code", &code(&app, &new_secret))])
        .await;
    assert_eq!(page.location(), "/");
}

async fn concurrent_audit_appends_keep_one_chain(backend: Backend) {
    let app = TestApp::new(backend).await;
    // Several instances (here: tasks sharing nothing but the database) append at once.
    let mut tasks = Vec::new();
    for i in 0..24 {
        let db = app.db().clone();
        tasks.push(tokio::spawn(async move {
            let actor = audit::Actor::operator();
            audit::record(
                &db,
                START + i,
                &actor,
                "test_event",
                &format!("n{i}"),
                serde_json::json!({ "i": i }),
            )
            .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    match audit::verify(app.db()).await.unwrap() {
        Verification::Intact { records, .. } => assert_eq!(records, 24),
        broken => panic!("chain broken under concurrency: {broken:?}"),
    }
}

async fn housekeeping_removes_dead_sessions_and_old_failures(backend: Backend) {
    use sqlx::Row;
    let mut app = TestApp::new(backend).await;
    setup_admin(&mut app).await;
    let mut b = app.other_browser();
    b.post(
        &app,
        "/sign-in",
        &[("email", "x@y.sch.uk"), ("password", "wrong wrong wrong")],
    )
    .await;
    let count = |table: &'static str| {
        let db = app.db().clone();
        async move {
            sqlx::query(&format!("select count(*) as n from {table}"))
                .fetch_one(db.pool())
                .await
                .unwrap()
                .try_get::<i64, _>("n")
                .unwrap()
        }
    };
    assert_eq!(count("sessions").await, 1);
    assert_eq!(
        count("sign_in_failures").await,
        2,
        "one per account, one per address"
    );
    let policy = app.state.settings.throttle;
    let lifetimes = app.state.settings.sessions;
    assert_eq!(
        safehand_server::sessions::sweep(app.db(), app.clock.now(), &lifetimes)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        safehand_server::throttle::sweep(app.db(), app.clock.now(), &policy)
            .await
            .unwrap(),
        0
    );
    app.clock.advance(16 * 60);
    assert_eq!(
        safehand_server::sessions::sweep(app.db(), app.clock.now(), &lifetimes)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        safehand_server::throttle::sweep(app.db(), app.clock.now(), &policy)
            .await
            .unwrap(),
        2
    );
    assert_eq!(count("sessions").await, 0);
    assert_eq!(count("sign_in_failures").await, 0);
}

async fn client_address_comes_from_trusted_proxies_only(backend: Backend) {
    use axum::extract::ConnectInfo;
    let proxy: std::net::IpAddr = "10.0.0.1".parse().unwrap();
    let mut app = TestApp::with_settings(backend, |s| s.trusted_proxies = vec![proxy]).await;
    app.get("/sign-in").await;
    let csrf = app.csrf();
    for peer in ["10.0.0.1:5000", "10.0.0.2:5000"] {
        let mut req = Request::post("/sign-in")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("x-forwarded-for", "198.51.100.7, 203.0.113.9")
            .body(Body::from(format!(
                "csrf={csrf}&email=x%40y.sch.uk&password=wrong+wrong+wrong"
            )))
            .unwrap();
        req.extensions_mut()
            .insert(ConnectInfo::<std::net::SocketAddr>(peer.parse().unwrap()));
        assert_eq!(app.send(req).await.status, StatusCode::UNAUTHORIZED);
    }
    let failures = audit::search(
        app.db(),
        &audit::Filter {
            action: "sign_in_failed".into(),
            ..Default::default()
        },
        10,
    )
    .await
    .unwrap();
    let addresses: Vec<&str> = failures.iter().map(|r| r.address.as_str()).collect();
    // Newest first: the untrusted peer is recorded as itself; through the proxy, the last hop
    // the proxy added is the client.
    assert_eq!(addresses, ["10.0.0.2", "203.0.113.9"]);
}

/// Every error under `/api/` is `application/problem+json` (RFC 9457) with a type, a title, the
/// status, a detail that says what to do and a reference, whether the handler, the JSON
/// extractor, the body limit, the router or the sign-in check refused it.
async fn api_errors_are_problem_documents(backend: Backend) {
    let mut app = TestApp::new(backend).await;
    setup_admin(&mut app).await;
    let (_, mut sam) = invite(&mut app, "sam@school.sch.uk", "Sam Staff", &["staff"]).await;
    let token = api_token_scoped(&app, &mut sam, "staff").await;
    let bearer = format!("Bearer {token}");
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    // what, method, content type, auth, body, expected status, expected code
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        String,
        StatusCode,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "malformed JSON",
            "POST",
            Some("application/json"),
            Some(&bearer),
            "{not json".into(),
            StatusCode::BAD_REQUEST,
            "bad_input",
        ),
        (
            "wrong content type",
            "POST",
            Some("text/plain"),
            Some(&bearer),
            "{}".into(),
            StatusCode::BAD_REQUEST,
            "bad_input",
        ),
        (
            "JSON of the wrong shape",
            "POST",
            Some("application/json"),
            Some(&bearer),
            "{\"name\": 5}".into(),
            StatusCode::BAD_REQUEST,
            "bad_input",
        ),
        (
            "oversized body",
            "POST",
            Some("application/json"),
            Some(&bearer),
            big,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
        (
            "wrong method",
            "DELETE",
            None,
            Some(&bearer),
            String::new(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "no token",
            "GET",
            None,
            None,
            String::new(),
            StatusCode::UNAUTHORIZED,
            "not_signed_in",
        ),
    ];
    let mut seen = Vec::new();
    for (what, method, ct, auth, body, status, code) in cases {
        let mut req = Request::builder().method(method).uri("/api/v1/contacts");
        if let Some(ct) = ct {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let page = send(
            &app.state,
            &mut Default::default(),
            req.body(Body::from(body)).unwrap(),
        )
        .await;
        seen.push((what, page, status, code));
    }
    for path in ["/api/v1/no-such-thing", "/api/v2/contacts", "/api/nothing"] {
        let req = Request::get(path)
            .header(header::AUTHORIZATION, &bearer)
            .body(Body::empty())
            .unwrap();
        let page = send(&app.state, &mut Default::default(), req).await;
        seen.push(("unknown path", page, StatusCode::NOT_FOUND, "not_found"));
    }
    for (what, page, status, code) in seen {
        assert_eq!(page.status, status, "{what}: {}", page.body);
        assert_eq!(
            page.headers.get(header::CONTENT_TYPE).unwrap(),
            "application/problem+json",
            "{what}"
        );
        let v: serde_json::Value = serde_json::from_str(&page.body)
            .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}", page.body));
        assert_eq!(v["type"], format!("/api/problems/{code}"), "{what}: {v}");
        assert_eq!(v["status"], status.as_u16(), "{what}: {v}");
        assert_eq!(v["error"], code, "{what}: {v}");
        assert!(!v["title"].as_str().unwrap().is_empty(), "{what}: {v}");
        let detail = v["detail"].as_str().unwrap();
        assert!(detail.len() > 10, "{what}: {v}");
        assert_eq!(v["message"], v["detail"], "{what}: {v}");
        let reference = v["reference"].as_str().unwrap();
        assert!(
            reference.len() == 8 && reference.chars().all(|c| c.is_ascii_hexdigit()),
            "{what}: {v}"
        );
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(
                page.headers.get(header::WWW_AUTHENTICATE).unwrap(),
                "Bearer"
            );
        }
    }
    // A handler's field problems stay in the document.
    let (status, v) = api_call(&app, &token, "POST", "/api/v1/contacts", Some(serde_json::json!({"name": "", "email": "not an address", "organisation": "", "phone": ""}))).await;
    assert!(status.is_client_error(), "{status}: {v}");
    assert!(
        v["type"].as_str().unwrap().starts_with("/api/problems/"),
        "{v}"
    );
    assert!(!v["detail"].as_str().unwrap_or("").is_empty(), "{v}");
    // Success answers are untouched.
    let (status, _) = api_call(&app, &token, "GET", "/api/v1/contacts", None).await;
    assert_eq!(status, StatusCode::OK);
}
