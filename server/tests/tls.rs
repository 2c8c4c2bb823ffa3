//! Serving HTTPS directly: a real TLS handshake with curl against the running binary, HSTS and
//! `Secure` cookies, and clear errors for a bad certificate or key.

use crate::browser::start_server;
use std::process::Command;

fn tool(name: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name} is missing; tests/run installs it"
        );
        eprintln!("SKIPPED: {name} is not installed");
    }
    found
}

#[test]
fn serves_https_with_hsts_and_secure_cookies() {
    if !(tool("openssl") && tool("curl")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let data = dir.path().join("data");
    let server = start_server(
        &data,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(
        server.base.starts_with("https://127.0.0.1:"),
        "{}",
        server.base
    );
    let out = Command::new("curl")
        .args(["-s", "-D", "-", "-o", "/dev/null", "--cacert"])
        .arg(&cert)
        .arg(format!("{}/sign-in", server.base))
        .output()
        .unwrap();
    let headers = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(headers.starts_with("http/1.1 200"), "{headers}");
    assert!(
        headers.contains("strict-transport-security: max-age=31536000"),
        "{headers}"
    );
    assert!(
        headers.contains("set-cookie: __host-safehand_csrf=") && headers.contains("; secure"),
        "{headers}"
    );
    // Plain HTTP to the TLS port gets nothing useful.
    let plain = Command::new("curl")
        .args(["-s", "-m", "5"])
        .arg(format!(
            "{}/healthz",
            server.base.replace("https://", "http://")
        ))
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&plain.stdout), "ok");
    // A client that never finishes the handshake does not block others.
    let _silent = std::net::TcpStream::connect(server.base.trim_start_matches("https://")).unwrap();
    let out = Command::new("curl")
        .args(["-s", "-m", "5", "--cacert"])
        .arg(&cert)
        .arg(format!("{}/healthz", server.base))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok");

    // Bad certificate or key: a clear error at start-up.
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a pem file").unwrap();
    for (c, k, expect) in [
        (garbage.as_path(), key.as_path(), "holds no certificate"),
        (
            cert.as_path(),
            garbage.as_path(),
            "cannot read a private key",
        ),
        (
            dir.path().join("missing.pem").as_path(),
            key.as_path(),
            "cannot read the TLS certificate",
        ),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_safehand-server"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .arg("--tls-cert")
            .arg(c)
            .arg("--tls-key")
            .arg(k)
            .output()
            .unwrap();
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(expect), "{expect}: {err}");
    }
    let o = Command::new(env!("CARGO_BIN_EXE_safehand-server"))
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--tls-key"));
}
