//! Downloads that are already running, on SQLite and PostgreSQL, over real TCP: a recall (or
//! the expiry) stops the stream short of its end and is recorded as a cut-off, never as a
//! download; a download's claim on its slot is short-lived, renewed while bytes flow, so the
//! slot of a download that never reported back (its server was killed) is free again within a
//! minute.

use crate::common::*;
use crate::transfers::{recipient_session, release, send_files, unlock, world, World};
use axum::http::StatusCode;
use safehand_server::transfers::{self, download};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

crate::both_databases!(
    a_recall_stops_a_running_download,
    expiry_stops_a_running_download,
    a_crashed_download_frees_its_slot_within_a_minute,
    a_running_download_keeps_its_claim,
);

const MIB: usize = 1 << 20;

/// Serves the app on a real TCP port in this runtime; returns its address.
async fn serve_over_tcp(app: &TestApp) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let state = app.state.clone();
    tokio::spawn(safehand_server::serve(
        listener,
        state,
        std::future::pending(),
    ));
    addr
}

/// Sends a GET for `path` with the recipient's cookies; returns the stream positioned after
/// the response head, and the head.
async fn start_get(addr: &str, path: &str, r: &Browser) -> (TcpStream, String, Vec<u8>) {
    let cookies = r
        .jar
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookies}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "the server closed before the response head");
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = head.split_off(end + 4);
            return (s, String::from_utf8_lossy(&head).into_owned(), rest);
        }
    }
}

/// Reads until `want` body bytes have arrived in all (counting `already`).
async fn read_at_least(s: &mut TcpStream, already: usize, want: usize) -> usize {
    let mut got = already;
    let mut buf = vec![0u8; 256 * 1024];
    while got < want {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "the stream ended at {got} bytes, before {want}");
        got += n;
    }
    got
}

/// Reads to the end (close or reset), or until `already` + what it reads reaches `stop_at`,
/// within 30 s; returns the bytes it read.
async fn read_to_close(s: &mut TcpStream, already: usize, stop_at: usize) -> usize {
    let mut got = 0;
    let mut buf = vec![0u8; 256 * 1024];
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
            if already + got >= stop_at {
                break;
            }
        }
    })
    .await
    .expect("the server kept sending; the download was not stopped");
    got
}

/// A released 64 MiB transfer with an unlocked recipient, served over TCP.
async fn running_world(backend: Backend, size: usize) -> (World, i64, String, Browser, String) {
    let mut w = world(backend).await;
    let big: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let (id, passphrase) = send_files(&mut w, &[("records.bin", &big)]).await;
    let link = release(&mut w, id).await;
    let mut r = recipient_session(&w.app, &link).await;
    unlock(&w.app, &mut r, &link, &passphrase).await;
    let addr = serve_over_tcp(&w.app).await;
    (w, id, link, r, addr)
}

async fn download_rows(app: &TestApp, id: i64) -> Vec<(Option<i64>, Option<i64>, Option<String>)> {
    use sqlx::Row;
    sqlx::query(
        "select completed_at, failed_at, cut_off_reason from transfer_downloads \
         where transfer_id = $1 order by download_id",
    )
    .bind(id)
    .fetch_all(app.db().pool())
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.try_get("completed_at").unwrap(),
            r.try_get("failed_at").unwrap(),
            r.try_get("cut_off_reason").unwrap(),
        )
    })
    .collect()
}

/// Waits (up to 5 s) until the download's outcome is recorded.
async fn wait_for_outcome(
    app: &TestApp,
    id: i64,
) -> Vec<(Option<i64>, Option<i64>, Option<String>)> {
    for _ in 0..100 {
        let rows = download_rows(app, id).await;
        if rows.iter().all(|r| r.0.is_some() || r.1.is_some()) {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    download_rows(app, id).await
}

async fn a_recall_stops_a_running_download(backend: Backend) {
    let size = 64 * MIB;
    let (mut w, id, link, r, addr) = running_world(backend, size).await;
    let (mut s, head, rest) = start_get(&addr, &format!("{link}/files/1"), &r).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let got = read_at_least(&mut s, rest.len(), 8 * MIB).await;
    // The sender recalls while 8 MiB have arrived.
    let page = w
        .staff
        .post(&w.app, &format!("/transfers/{id}/recall"), &[])
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.assert_contains("Recalled");
    let total = got + read_to_close(&mut s, got, size).await;
    assert!(
        total < size,
        "the whole payload ({total} of {size} bytes) arrived after the recall"
    );
    // Not recorded as downloaded: a cut-off, with its reason.
    let rows = wait_for_outcome(&w.app, id).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        rows[0].0, None,
        "a recalled download was counted as completed"
    );
    assert_eq!(rows[0].2.as_deref(), Some("recalled"));
    let a = crate::transfers::actions(&w.app).await;
    assert!(
        a.contains(&"transfer_download_cut_off".to_string()),
        "{a:?}"
    );
    assert!(!a.contains(&"transfer_downloaded".to_string()), "{a:?}");
    let t = transfers::get(w.app.db(), id).await.unwrap().unwrap();
    assert_eq!(t.state, transfers::State::Recalled);
    assert_eq!(t.downloads, 0);
    // The sender's receipt and an incident's evidence say so.
    let page = w.staff.get(&w.app, &format!("/transfers/{id}")).await;
    page.assert_contains("was cut off by the recall");
    let evidence =
        safehand_server::incidents::evidence(w.app.db(), &t, &["records.bin".to_string()])
            .await
            .unwrap();
    let summary = evidence.summary().join(" ");
    assert!(summary.contains("cut off by the recall"), "{summary}");
    assert_eq!(evidence.completed_downloads(), 0);
    assert!(
        evidence.downloads[0]
            .outcome(|t| t.to_string())
            .contains("cut off by the recall"),
        "{:?}",
        evidence.downloads
    );
}

async fn expiry_stops_a_running_download(backend: Backend) {
    let size = 64 * MIB;
    let (w, id, link, r, addr) = running_world(backend, size).await;
    let (mut s, head, rest) = start_get(&addr, &format!("{link}/files/1"), &r).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let got = read_at_least(&mut s, rest.len(), 4 * MIB).await;
    // The transfer passes its expiry (7 days) while the download runs.
    w.app.clock.advance(8 * 86_400);
    let total = got + read_to_close(&mut s, got, size).await;
    assert!(total < size, "{total} of {size} bytes arrived after expiry");
    let rows = wait_for_outcome(&w.app, id).await;
    assert_eq!(rows[0].0, None);
    assert_eq!(rows[0].2.as_deref(), Some("expired"));
    let t = transfers::get(w.app.db(), id).await.unwrap().unwrap();
    assert_eq!(t.downloads, 0);
}

/// A transfer with a download limit of one, released, its recipient unlocked.
async fn limit_one(backend: Backend) -> (World, transfers::Transfer) {
    let (w, id, _link, _r, _addr) = running_world(backend, 3 * MIB).await;
    sqlx::query("update transfers set download_limit = 1 where transfer_id = $1")
        .bind(id)
        .execute(w.app.db().pool())
        .await
        .unwrap();
    let t = transfers::get(w.app.db(), id).await.unwrap().unwrap();
    (w, t)
}

fn recipient_actor() -> safehand_server::audit::Actor {
    safehand_server::audit::Actor {
        user_id: None,
        label: "recipient".into(),
        address: "192.0.2.7".into(),
    }
}

async fn a_crashed_download_frees_its_slot_within_a_minute(backend: Backend) {
    let (w, t) = limit_one(backend).await;
    let item = download::Item::Payload(Vec::new());
    let now = w.app.clock.now();
    // A download takes the only slot, and its server dies: it never reports back.
    let slot = download::begin(w.app.db(), now, &t, &item, &recipient_actor()).await;
    assert!(slot.is_ok());
    drop(slot);
    // While its claim stands, nobody else may start.
    let again = download::begin(w.app.db(), now + 30, &t, &item, &recipient_actor()).await;
    assert!(
        matches!(again, Err(safehand_server::Error::Unavailable)),
        "{again:?}"
    );
    // Within a minute, the recipient can try again.
    let again = download::begin(
        w.app.db(),
        now + download::CLAIM_LIFETIME + 1,
        &t,
        &item,
        &recipient_actor(),
    )
    .await;
    assert!(again.is_ok(), "{again:?}");
    const { assert!(download::CLAIM_LIFETIME <= 60) };
}

async fn a_running_download_keeps_its_claim(backend: Backend) {
    let size = 64 * MIB;
    let (w, id, link, r, addr) = running_world(backend, size).await;
    sqlx::query("update transfers set download_limit = 1 where transfer_id = $1")
        .bind(id)
        .execute(w.app.db().pool())
        .await
        .unwrap();
    let (mut s, head, rest) = start_get(&addr, &format!("{link}/files/1"), &r).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut got = read_at_least(&mut s, rest.len(), 2 * MIB).await;
    // Fifty seconds pass with bytes still flowing: the claim is renewed.
    w.app.clock.advance(50);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    got = read_at_least(&mut s, got, got + 24 * MIB).await;
    // Past the first claim's end: a second download must still be refused (limit 1).
    w.app.clock.advance(50);
    let t = transfers::get(w.app.db(), id).await.unwrap().unwrap();
    let item = download::Item::Payload(Vec::new());
    let second =
        download::begin(w.app.db(), w.app.clock.now(), &t, &item, &recipient_actor()).await;
    assert!(
        matches!(second, Err(safehand_server::Error::Unavailable)),
        "the running download lost its slot: {second:?}"
    );
    // The first download finishes and is counted.
    let total = got + read_to_close(&mut s, got, size).await;
    assert!(total >= size, "{total} of {size}");
    let rows = wait_for_outcome(&w.app, id).await;
    assert!(rows[0].0.is_some(), "{rows:?}");
}
