//! Slow and hostile clients against the real `safehand-server` binary over TCP: hundreds of
//! half-open connections are closed while `/healthz` keeps answering, a stalled upload body is
//! ended, a client that stops reading is cut off, and past the connection cap a client is told
//! to come back (503 with `Retry-After`) and service recovers once the crowd has gone.

use crate::browser::start_server;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn address(base: &str) -> String {
    base.trim_start_matches("http://").to_string()
}

/// One plain GET on its own connection; the whole response as text.
fn get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the server has closed `stream` (end of file or reset), waiting until `deadline`.
fn closed_by(stream: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {} // an answer (e.g. 400/408) before the close: keep reading
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(e) => panic!("reading from the server: {e}"),
        }
    }
}

#[test]
fn half_open_connections_are_closed_and_healthz_keeps_answering() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(
        &dir.path().join("data"),
        &["--header-timeout", "2s", "--body-idle-timeout", "2s"],
    );
    let addr = address(&server.base);
    // 400 connections: half send nothing, half send half a request head (slowloris).
    let mut held: Vec<TcpStream> = (0..400)
        .map(|i| {
            let mut s = TcpStream::connect(&addr).unwrap();
            if i % 2 == 1 {
                write!(s, "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ").unwrap();
            }
            s
        })
        .collect();
    let started = Instant::now();
    let health = get(&addr, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    // Keep trickling bytes on the slow half: progress on the head must not reset its clock.
    for s in held.iter_mut().skip(1).step_by(2) {
        let _ = s.write_all(b"x");
    }
    let deadline = started + Duration::from_secs(8);
    let still_open = held
        .iter_mut()
        .map(|s| closed_by(s, deadline))
        .filter(|closed| !closed)
        .count();
    assert_eq!(
        still_open, 0,
        "the server should close connections that never finish their request head"
    );
    let health = get(&addr, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
}

#[test]
fn a_stalled_request_body_is_ended() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(
        &dir.path().join("data"),
        &["--header-timeout", "5s", "--body-idle-timeout", "2s"],
    );
    let addr = address(&server.base);
    let mut stream = TcpStream::connect(&addr).unwrap();
    // Announce 100 kB of form, send 20 bytes, then nothing.
    write!(
        stream,
        "POST /sign-in HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\n\
         email=a%40b.example"
    )
    .unwrap();
    let started = Instant::now();
    assert!(
        closed_by(&mut stream, started + Duration::from_secs(8)),
        "a body that stalls must not hold the connection"
    );
    assert!(started.elapsed() >= Duration::from_millis(1500));
    let health = get(&addr, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
}

#[test]
fn a_client_that_stops_reading_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(
        &dir.path().join("data"),
        &["--header-timeout", "30s", "--body-idle-timeout", "2s"],
    );
    let addr = address(&server.base);
    let page = get(&addr, "/api/openapi.json");
    assert!(page.starts_with("HTTP/1.1 200"), "{}", &page[..80]);
    // Enough pipelined requests that the answers overflow every socket buffer between us.
    let wanted = (64 << 20) / page.len() + 1;
    let mut stream = TcpStream::connect(&addr).unwrap();
    let request = format!("GET /api/openapi.json HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let all = request.repeat(wanted);
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // The server may stop reading requests once its answers back up; that is fine.
    let _ = stream.write_all(all.as_bytes());
    std::thread::sleep(Duration::from_secs(5));
    // Now read everything the server still sends: it must end well short of every answer.
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let ended = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => total += n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    assert!(
        ended,
        "the server kept a connection whose client stopped reading"
    );
    assert!(
        total < wanted * page.len() / 2,
        "read {total} bytes of {}",
        wanted * page.len()
    );
    let health = get(&addr, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
}

#[test]
fn past_the_connection_cap_clients_are_told_to_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(
        &dir.path().join("data"),
        &["--max-connections", "30", "--header-timeout", "30s"],
    );
    let addr = address(&server.base);
    let held: Vec<TcpStream> = (0..30)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    // Let the server accept all thirty before the thirty-first arrives.
    std::thread::sleep(Duration::from_millis(500));
    let refused = get(&addr, "/healthz");
    assert!(
        refused.starts_with("HTTP/1.1 503"),
        "the 31st connection should be refused: {refused}"
    );
    let lower = refused.to_ascii_lowercase();
    assert!(lower.contains("retry-after: 5"), "{refused}");
    assert!(
        refused.contains("too many open connections") && refused.contains("try again"),
        "{refused}"
    );
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let health = get(&addr, "/healthz");
        if health.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "service did not recover after the crowd left: {health}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
