//! Lock-outs hold under parallel guessing, on SQLite and PostgreSQL: sixty wrong passwords,
//! sixty wrong sign-in codes, fifty wrong recipient codes and fifty wrong passphrases sent at
//! once get no more tries than the limit, because every attempt is counted before it is
//! checked. Changes through `/api/` take an API token, never the session cookie.
//! (A burst may get fewer: an attempt refused at once still counted for the others
//! while it was in flight. Refusing more is the safe side.)

use crate::common::*;
use crate::transfers::{
    actions, code_from, last_mail, recipient_session, release, send_files, world,
};
use axum::http::StatusCode;
use safehand_server::transfers;
use std::collections::BTreeMap;

crate::both_databases!(
    parallel_password_guesses_get_no_more_tries,
    parallel_sign_in_code_guesses_get_no_more_tries,
    parallel_recipient_code_guesses_get_no_more_tries,
    parallel_passphrase_guesses_get_no_more_tries,
    api_changes_need_a_token_not_the_session_cookie,
);

/// Posts `fields` to `path` from `n` tasks at once, each with its own copy of `jar`.
async fn at_once(
    app: &TestApp,
    jar: &BTreeMap<String, String>,
    n: usize,
    path: &str,
    fields: &[(&str, &str)],
) -> Vec<Page> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let state = app.state.clone();
        let mut jar = jar.clone();
        let path = path.to_string();
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        tasks.push(tokio::spawn(async move {
            let fields: Vec<(&str, &str)> = fields
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            post(&state, &mut jar, &path, &fields).await
        }));
    }
    let mut pages = Vec::new();
    for t in tasks {
        pages.push(t.await.unwrap());
    }
    pages
}

fn count(pages: &[Page], status: StatusCode) -> usize {
    pages.iter().filter(|p| p.status == status).count()
}

async fn parallel_password_guesses_get_no_more_tries(backend: Backend) {
    let mut app = TestApp::with_settings(backend, |s| {
        s.throttle.lock_after = 10;
        s.throttle.delay_unit = std::time::Duration::from_millis(1);
    })
    .await;
    let admin = setup_admin(&mut app).await;
    let mut visitor = app.other_browser();
    visitor.get(&app, "/sign-in").await;
    let pages = at_once(
        &app,
        &visitor.jar,
        60,
        "/sign-in",
        &[("email", &admin.email), ("password", "wrong wrong wrong")],
    )
    .await;
    let checked = count(&pages, StatusCode::UNAUTHORIZED);
    let refused = count(&pages, StatusCode::TOO_MANY_REQUESTS);
    let others: Vec<_> = pages
        .iter()
        .filter(|p| ![StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS].contains(&p.status))
        .map(|p| (p.status, p.body.chars().take(300).collect::<String>()))
        .collect();
    assert_eq!(
        checked + refused,
        60,
        "every guess is answered; others: {others:?}"
    );
    assert!(
        checked <= 10,
        "{checked} of 60 parallel guesses were checked; the limit is 10"
    );
    let failed = actions(&app)
        .await
        .iter()
        .filter(|a| *a == "sign_in_failed")
        .count();
    assert_eq!(failed, checked);
    // Guesses one after another still reach the same limit, and then even the right password
    // is refused.
    for _ in checked..10 {
        let page = visitor
            .post(
                &app,
                "/sign-in",
                &[("email", &admin.email), ("password", "wrong wrong wrong")],
            )
            .await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    }
    {
        let page = visitor
            .post(
                &app,
                "/sign-in",
                &[("email", &admin.email), ("password", &admin.password)],
            )
            .await;
        assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);
    }
}

async fn parallel_sign_in_code_guesses_get_no_more_tries(backend: Backend) {
    let mut app = TestApp::with_settings(backend, |s| {
        s.throttle.lock_after = 10;
        s.throttle.delay_unit = std::time::Duration::from_millis(1);
    })
    .await;
    let admin = setup_admin(&mut app).await;
    app.clock.advance(30);
    let mut b = app.other_browser();
    let page = b
        .post(
            &app,
            "/sign-in",
            &[("email", &admin.email), ("password", &admin.password)],
        )
        .await;
    assert_eq!(page.location(), "/sign-in/code", "{}", page.body);
    // Not six digits: read as a recovery code, and wrong.
    let pages = at_once(
        &app,
        &b.jar,
        60,
        "/sign-in/code",
        &[("code", "wrong-guess")],
    )
    .await;
    let checked = count(&pages, StatusCode::UNAUTHORIZED);
    assert!(
        checked <= 10,
        "{checked} of 60 parallel code guesses were checked; the limit is 10"
    );
    // The guess that reaches the lock ends the half-signed-in session, so a guess whose
    // session is looked up after that is sent back to sign in again: refused as well.
    let sent_back = |p: &Page| {
        p.status == StatusCode::SEE_OTHER
            && p.location().starts_with("/sign-in")
            && p.location() != "/sign-in/code"
    };
    let refused = count(&pages, StatusCode::TOO_MANY_REQUESTS)
        + pages.iter().filter(|p| sent_back(p)).count();
    let others: Vec<_> = pages
        .iter()
        .filter(|p| {
            ![StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS].contains(&p.status)
                && !sent_back(p)
        })
        .map(|p| (p.status, p.location().to_string()))
        .collect();
    assert_eq!(
        checked + refused,
        60,
        "every guess is answered, checked or refused; others: {others:?}"
    );
    assert_eq!(
        checked,
        actions(&app)
            .await
            .iter()
            .filter(|a| *a == "sign_in_failed")
            .count(),
        "every checked guess is on the audit log"
    );
    // Signing in afresh and guessing one code after another reaches the same limit.
    let mut fresh = app.other_browser();
    let page = fresh
        .post(
            &app,
            "/sign-in",
            &[("email", &admin.email), ("password", &admin.password)],
        )
        .await;
    if checked < 10 {
        assert_eq!(page.location(), "/sign-in/code", "{}", page.body);
        for _ in checked..10 {
            let page = fresh
                .post(&app, "/sign-in/code", &[("code", "wrong-guess")])
                .await;
            assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{}", page.body);
        }
        let page = fresh
            .post(&app, "/sign-in/code", &[("code", "wrong-guess")])
            .await;
        assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS, "{}", page.body);
    } else {
        assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS, "{}", page.body);
    }
}

async fn parallel_recipient_code_guesses_get_no_more_tries(backend: Backend) {
    let mut w = world(backend).await;
    let (id, _) = send_files(&mut w, &[("a.txt", b"abc")]).await;
    let link = release(&mut w, id).await;
    let mut r = w.app.other_browser();
    r.get(&w.app, &link).await;
    r.post(&w.app, &format!("{link}/code"), &[]).await;
    let code = code_from(&last_mail(&w.app, "Jo.Bloggs@northshire.gov.uk").await.1);
    let wrong = if code == "00000000" {
        "11111111"
    } else {
        "00000000"
    };
    let pages = at_once(
        &w.app,
        &r.jar,
        50,
        &format!("{link}/code/check"),
        &[("code", wrong)],
    )
    .await;
    let checked = pages
        .iter()
        .filter(|p| p.body.contains("That code is not right"))
        .count();
    assert!(
        checked <= 5,
        "{checked} of 50 parallel code guesses were checked; a code has 5 tries"
    );
    let wrong_records = actions(&w.app)
        .await
        .iter()
        .filter(|a| *a == "recipient_code_wrong")
        .count();
    assert_eq!(wrong_records, checked);
    if checked == 5 {
        let page = r
            .post(&w.app, &format!("{link}/code/check"), &[("code", &code)])
            .await;
        page.assert_contains("Too many wrong codes");
    }
}

async fn parallel_passphrase_guesses_get_no_more_tries(backend: Backend) {
    let mut w = world(backend).await;
    let (id, passphrase) = send_files(&mut w, &[("a.txt", b"abc")]).await;
    let link = release(&mut w, id).await;
    let mut r = recipient_session(&w.app, &link).await;
    // Four wrong tries one after another: one try is left.
    for _ in 0..4 {
        let page = r
            .post(
                &w.app,
                &format!("{link}/open"),
                &[("passphrase", "wrong words here")],
            )
            .await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST);
    }
    // Then fifty guesses at once, the right passphrase among them: one of them may be tried.
    let mut tasks = Vec::new();
    for i in 0..50 {
        let state = w.app.state.clone();
        let mut jar = r.jar.clone();
        let path = format!("{link}/open");
        let guess = if i == 25 {
            passphrase.clone()
        } else {
            format!("wrong guess {i}")
        };
        tasks.push(tokio::spawn(async move {
            post(&state, &mut jar, &path, &[("passphrase", &guess)]).await
        }));
    }
    let mut pages = Vec::new();
    for t in tasks {
        pages.push(t.await.unwrap());
    }
    let opened = pages
        .iter()
        .filter(|p| p.location() == format!("{link}/files"))
        .count();
    let wrong_tried = actions(&w.app)
        .await
        .iter()
        .filter(|a| *a == "recipient_passphrase_wrong")
        .count()
        - 4;
    assert!(
        wrong_tried + opened <= 1,
        "{wrong_tried} wrong guesses were tried and {opened} opened, with one try left"
    );
    let t = transfers::get(w.app.db(), id).await.unwrap().unwrap();
    assert!(t.wrong_passphrases <= 5, "{}", t.wrong_passphrases);
    if wrong_tried == 1 {
        assert_eq!(t.state, transfers::State::Locked);
        let page = r
            .post(
                &w.app,
                &format!("{link}/open"),
                &[("passphrase", &passphrase)],
            )
            .await;
        assert_eq!(page.status, StatusCode::NOT_FOUND);
    }
}

async fn api_changes_need_a_token_not_the_session_cookie(backend: Backend) {
    let mut w = world(backend).await;
    let (id, _) = send_files(&mut w, &[("a.txt", b"abc")]).await;
    // A cross-site text/plain POST carrying the signed-in staff member's cookies.
    let req = axum::http::Request::post(format!("/api/v1/transfers/{id}/recall"))
        .header(axum::http::header::CONTENT_TYPE, "text/plain")
        .body(axum::body::Body::from("{}"))
        .unwrap();
    let page = w.staff.send_req(&w.app, req).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{}", page.body);
    assert!(page.body.contains("token_required"), "{}", page.body);
    assert!(page.body.contains("Authorization: Bearer"), "{}", page.body);
    let t = transfers::get(w.app.db(), id).await.unwrap().unwrap();
    assert_eq!(t.state, transfers::State::Sealed, "the cookie recalled it");
    // Reading through the API with the session still works.
    let page = w.staff.get(&w.app, "/api/v1/me").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    // A token works, whatever the case of the scheme.
    let token = crate::transfers::api_token(&w.app, &mut w.staff).await;
    let req = axum::http::Request::post(format!("/api/v1/transfers/{id}/recall"))
        .header(axum::http::header::AUTHORIZATION, format!("bEaReR {token}"))
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from("{}"))
        .unwrap();
    let page = send(&w.app.state, &mut BTreeMap::new(), req).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let t = transfers::get(w.app.db(), id).await.unwrap().unwrap();
    assert_eq!(t.state, transfers::State::Recalled);
}
