//! The server log never holds a link token: an internal error on a token-bearing path (a
//! recipient's link, a set-up or enrolment link) is logged with the route it matched, not the
//! path, on SQLite and PostgreSQL.

use crate::common::*;
use std::io::Write;
use std::sync::{Arc, Mutex};

crate::both_databases!(internal_errors_log_the_route_not_the_link_token);

/// Everything the log subscriber wrote.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

async fn internal_errors_log_the_route_not_the_link_token(backend: Backend) {
    let mut app = TestApp::new(backend).await;
    // Break the tables the token pages read, so each request below fails inside the server.
    for table in ["transfers", "enrolment_links"] {
        let _ = sqlx::query(&format!("alter table {table} rename to {table}_gone"))
            .execute(app.db().pool())
            .await;
    }
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let token = "Q7hT3kLm9pXv2RsW8yZc4NbF6gJd1HaE5uKo0iVqTxY";
    let mut failed = 0;
    for path in [
        format!("/r/{token}"),
        format!("/r/{token}/code"),
        format!("/setup/{token}"),
        format!("/enrol/{token}"),
    ] {
        let page = app.get(&path).await;
        if page.status == axum::http::StatusCode::INTERNAL_SERVER_ERROR {
            failed += 1;
        }
    }
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        failed >= 2,
        "the broken tables should make the token pages fail inside the server; log:\n{log}"
    );
    assert!(
        log.matches("request failed").count() >= failed,
        "every internal error is logged with its reference id; log:\n{log}"
    );
    assert!(
        log.contains("/r/{token}"),
        "the log names the route; log:\n{log}"
    );
    assert!(!log.contains(token), "a link token reached the log:\n{log}");
}
