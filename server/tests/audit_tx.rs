//! Every audit record is written in the same transaction as the action it records: an action
//! whose record cannot be written does not happen, and an action that fails half-way leaves
//! neither its changes nor a record. On SQLite and PostgreSQL.

use crate::common::*;
use axum::http::StatusCode;
use safehand_server::audit::{self, Verification};
use safehand_server::db::Dialect;

/// Makes the database refuse inserting audit records with this action.
async fn refuse_audit_action(app: &TestApp, action: &str) {
    let pool = app.db().pool();
    match app.db().dialect() {
        Dialect::Sqlite => {
            sqlx::query(&format!(
                "create trigger refuse_audit before insert on audit_log when new.action = '{action}' \
                 begin select raise(abort, 'audit refused by the test'); end"
            ))
            .execute(pool)
            .await
            .unwrap();
        }
        Dialect::Postgres => {
            sqlx::query(&format!(
                "create function refuse_audit() returns trigger language plpgsql as $$ begin \
                 if new.action = '{action}' then raise exception 'audit refused by the test'; end if; \
                 return new; end $$"
            ))
            .execute(pool)
            .await
            .unwrap();
            sqlx::query(
                "create trigger refuse_audit before insert on audit_log \
                 for each row execute function refuse_audit()",
            )
            .execute(pool)
            .await
            .unwrap();
        }
    }
}

/// Makes the database refuse revoking API tokens (a step in the middle of disabling a user).
async fn refuse_token_revocation(app: &TestApp) {
    let pool = app.db().pool();
    match app.db().dialect() {
        Dialect::Sqlite => {
            sqlx::query(
                "create trigger refuse_revoke before update on api_tokens \
                 begin select raise(abort, 'revocation refused by the test'); end",
            )
            .execute(pool)
            .await
            .unwrap();
        }
        Dialect::Postgres => {
            sqlx::query(
                "create function refuse_revoke() returns trigger language plpgsql as $$ begin \
                 raise exception 'revocation refused by the test'; end $$",
            )
            .execute(pool)
            .await
            .unwrap();
            sqlx::query(
                "create trigger refuse_revoke before update on api_tokens \
                 for each row execute function refuse_revoke()",
            )
            .execute(pool)
            .await
            .unwrap();
        }
    }
}

async fn count_action(app: &TestApp, action: &str) -> usize {
    audit::search(
        app.db(),
        &audit::Filter {
            action: action.into(),
            ..Default::default()
        },
        1000,
    )
    .await
    .unwrap()
    .len()
}

async fn sam_is_disabled(app: &TestApp) -> bool {
    safehand_server::accounts::by_email(app.db(), "sam@school.sch.uk")
        .await
        .unwrap()
        .unwrap()
        .disabled
}

async fn an_action_whose_record_fails_does_not_happen(backend: Backend) {
    let mut app = TestApp::new(backend).await;
    setup_admin(&mut app).await;
    let (_, mut sam) = invite(&mut app, "sam@school.sch.uk", "Sam Staff", &["staff"]).await;
    assert_eq!(sam.get(&app, "/").await.status, StatusCode::OK);
    let id = safehand_server::accounts::by_email(app.db(), "sam@school.sch.uk")
        .await
        .unwrap()
        .unwrap()
        .id;
    refuse_audit_action(&app, "user_disabled").await;
    let page = app.post(&format!("/admin/users/{id}/disable"), &[]).await;
    assert_eq!(page.status, StatusCode::INTERNAL_SERVER_ERROR);
    // Not disabled, and Sam's session (which disabling would end) still works.
    assert!(!sam_is_disabled(&app).await);
    assert_eq!(sam.get(&app, "/").await.status, StatusCode::OK);
    assert_eq!(count_action(&app, "user_disabled").await, 0);
    // Other actions still record normally, on one unbroken chain.
    let page = app
        .post(&format!("/admin/users/{id}/roles"), &[("role", "approver")])
        .await;
    assert!(
        page.status.is_success() || page.status.is_redirection(),
        "{}",
        page.status
    );
    assert_eq!(count_action(&app, "roles_changed").await, 1);
    assert!(matches!(
        audit::verify(app.db()).await.unwrap(),
        Verification::Intact { .. }
    ));
}

async fn an_action_failing_half_way_leaves_no_record(backend: Backend) {
    let mut app = TestApp::new(backend).await;
    setup_admin(&mut app).await;
    let (_, mut sam) = invite(&mut app, "sam@school.sch.uk", "Sam Staff", &["staff"]).await;
    let page = sam
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
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(count_action(&app, "token_created").await, 1);
    let id = safehand_server::accounts::by_email(app.db(), "sam@school.sch.uk")
        .await
        .unwrap()
        .unwrap()
        .id;
    let records_before = count_action(&app, "").await;
    // Disabling updates the user, ends the sessions, then revokes the tokens: make that fail.
    refuse_token_revocation(&app).await;
    let page = app.post(&format!("/admin/users/{id}/disable"), &[]).await;
    assert_eq!(page.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        !sam_is_disabled(&app).await,
        "the user update was rolled back"
    );
    assert_eq!(
        sam.get(&app, "/").await.status,
        StatusCode::OK,
        "the ended sessions were rolled back"
    );
    assert_eq!(count_action(&app, "user_disabled").await, 0);
    assert_eq!(count_action(&app, "").await, records_before);
}

crate::both_databases!(
    an_action_whose_record_fails_does_not_happen,
    an_action_failing_half_way_leaves_no_record,
    a_connection_left_in_a_transaction_does_not_lock_the_service,
);

/// A connection that comes back to the pool with its transaction still open (a rollback that
/// failed, a cancelled commit: the mixed-load soak met one) would hold its locks for ever: on
/// SQLite every other writer then fails with "database is locked" and the next `begin` on it
/// is refused, so the whole service fails. The pool closes such a connection instead (which
/// rolls its transaction back), and every later transaction works.
async fn a_connection_left_in_a_transaction_does_not_lock_the_service(backend: Backend) {
    use sqlx::Connection;
    let app = TestApp::new(backend).await;
    let db = app.db();
    sqlx::query("create table leak_probe (id integer primary key, n integer not null)")
        .execute(db.pool())
        .await
        .unwrap();
    sqlx::query("insert into leak_probe (id, n) values (1, 0)")
        .execute(db.pool())
        .await
        .unwrap();
    {
        let mut conn = db.pool().acquire().await.unwrap();
        let begin = match db.dialect() {
            Dialect::Sqlite => "begin immediate",
            Dialect::Postgres => "begin",
        };
        let mut tx = conn.begin_with(begin).await.unwrap();
        sqlx::query("update leak_probe set n = n + 1000 where id = 1")
            .execute(&mut *tx)
            .await
            .unwrap();
        // Neither committed nor rolled back: the connection goes back with it open.
        std::mem::forget(tx);
    }
    // Every pooled connection is used many times over; none may be refused or wait for the
    // leaked transaction's lock (SQLite would give up after its 10 s busy timeout; PostgreSQL
    // would wait for ever).
    let all = async {
        for i in 0..40 {
            let mut tx = db
                .begin()
                .await
                .unwrap_or_else(|e| panic!("transaction {i} could not begin: {e}"));
            sqlx::query("update leak_probe set n = n + 1 where id = 1")
                .execute(&mut *tx)
                .await
                .unwrap_or_else(|e| panic!("transaction {i} could not write: {e}"));
            tx.commit()
                .await
                .unwrap_or_else(|e| panic!("transaction {i} could not commit: {e}"));
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(8), all)
        .await
        .expect("the transactions after the leaked one finish without waiting for its lock");
    let n: i64 = sqlx::query_scalar("select n from leak_probe where id = 1")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(
        n, 40,
        "the leaked transaction's change was rolled back, every other kept"
    );
}
