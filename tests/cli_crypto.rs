//! End-to-end tests of `safehand encrypt/decrypt/seal/open/list/verify/passphrase/keygen`
//! (issue: foundation). They run the real `safehand` binary, the real Debian `age` binary and
//! GNU tar, and type passphrases at real prompts through a pseudo-terminal.

// A failed step in a test should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use safehand_tests::{external_tool, workspace_binary};
use sha2::{Digest, Sha256};

/// A chosen passphrase that passes the strength check.
const PASSPHRASE: &str = "otter lantern quietly ninety harbour";

fn safehand() -> Command {
    Command::new(workspace_binary("safehand"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run command")
}

fn ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

fn sha(path: &Path) -> String {
    let mut h = Sha256::new();
    let mut f = File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// Every entry under `dir`, relative, sorted (to compare trees and to prove nothing is left).
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            if e.file_type().unwrap().is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out.sort();
    out
}

/// Asserts two trees hold the same names, kinds, contents, permission bits and times.
fn assert_same_tree(a: &Path, b: &Path) {
    assert_eq!(tree(a), tree(b), "entry names differ");
    for rel in tree(a) {
        let (pa, pb) = (a.join(&rel), b.join(&rel));
        let (ma, mb) = (
            fs::symlink_metadata(&pa).unwrap(),
            fs::symlink_metadata(&pb).unwrap(),
        );
        assert_eq!(ma.file_type(), mb.file_type(), "{rel}: kind differs");
        if ma.is_file() {
            assert_eq!(sha(&pa), sha(&pb), "{rel}: content differs");
        }
        if !ma.file_type().is_symlink() {
            assert_eq!(ma.mode() & 0o777, mb.mode() & 0o777, "{rel}: mode differs");
            assert_eq!(ma.mtime(), mb.mtime(), "{rel}: mtime differs");
        } else {
            assert_eq!(fs::read_link(&pa).unwrap(), fs::read_link(&pb).unwrap());
        }
    }
}

struct Keys {
    identity: PathBuf,
    recipient: String,
    passphrase_file: PathBuf,
}

fn keys(dir: &Path) -> Keys {
    let identity = dir.join("key.txt");
    let out = ok(safehand().arg("keygen").arg("-o").arg(&identity));
    let recipient = stderr(&out)
        .trim()
        .strip_prefix("Public key: ")
        .expect("keygen prints the public key")
        .to_owned();
    let passphrase_file = dir.join("passphrase.txt");
    fs::write(&passphrase_file, format!("{PASSPHRASE}\n")).unwrap();
    Keys {
        identity,
        recipient,
        passphrase_file,
    }
}

fn set_mtime(path: &Path, secs: i64) {
    let status = Command::new("touch")
        .arg("-h")
        .arg("-d")
        .arg(format!("@{secs}"))
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// A folder with the awkward cases: spaces, non-ASCII, empty file, empty folder, a deep tree
/// with a path longer than ustar can hold, an executable, a setuid file, an inside symlink.
fn awkward_folder(root: &Path) -> PathBuf {
    let top = root.join("Year 7 reports");
    fs::create_dir_all(top.join("empty folder")).unwrap();
    fs::write(top.join("name with spaces.txt"), b"spaces\n").unwrap();
    fs::write(top.join("Zoë Ångström – naïve.txt"), "non-ASCII ✓\n").unwrap();
    fs::write(top.join("empty.txt"), b"").unwrap();
    let mut deep = top.join("deep");
    for i in 0..40 {
        deep = deep.join(format!("level-{i:02}"));
    }
    fs::create_dir_all(&deep).unwrap();
    fs::write(
        deep.join(format!("{}.txt", "long-name-".repeat(20))),
        b"deep\n",
    )
    .unwrap();
    fs::write(top.join("run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(top.join("run.sh"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::write(top.join("readonly.txt"), b"read only\n").unwrap();
    fs::set_permissions(top.join("readonly.txt"), fs::Permissions::from_mode(0o444)).unwrap();
    std::os::unix::fs::symlink("name with spaces.txt", top.join("link to spaces")).unwrap();
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    fs::write(top.join("data.bin"), big).unwrap();
    for (i, p) in tree(&top).iter().enumerate() {
        set_mtime(&top.join(p), 1_600_000_000 + i as i64 * 3600);
    }
    set_mtime(&top, 1_500_000_000);
    top
}

// -------------------------------------------------------------------------------------------
// A pseudo-terminal, to type at prompts that read /dev/tty (age's and ours).

struct Pty {
    master: File,
    slave: File,
    screen: Arc<Mutex<Vec<u8>>>,
}

impl Pty {
    fn new() -> Pty {
        use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("openpt");
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let name = ptsname(&master, Vec::new()).unwrap();
        let slave = File::options()
            .read(true)
            .write(true)
            .open(name.to_str().unwrap())
            .unwrap();
        let master = File::from(master);
        let screen = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().unwrap();
        let sink = Arc::clone(&screen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Pty {
            master,
            slave,
            screen,
        }
    }

    /// `program args` as a session leader whose controlling terminal is this pty (stdin and
    /// stderr on the pty; stdout is the caller's choice).
    fn command(&self, program: &Path, args: &[&std::ffi::OsStr]) -> Command {
        let mut cmd = Command::new("setsid");
        cmd.arg("-c")
            .arg(program)
            .args(args)
            .stdin(self.slave.try_clone().unwrap())
            .stderr(self.slave.try_clone().unwrap());
        cmd
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap()).into_owned()
    }

    /// Waits until `text` has appeared `count` times on the terminal.
    fn expect(&self, text: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.screen().matches(text).count() < count {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {text:?}; the terminal shows: {:?}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the terminal echoes what is typed (as the program left it).
    fn echo_on(&self) -> bool {
        rustix::termios::tcgetattr(&self.slave)
            .unwrap()
            .local_modes
            .contains(rustix::termios::LocalModes::ECHO)
    }

    /// Bytes as typed, such as `\x03` for Ctrl-C.
    fn type_raw(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).unwrap();
        self.master.flush().unwrap();
    }

    fn type_line(&mut self, line: &str) {
        self.master
            .write_all(format!("{line}\r").as_bytes())
            .unwrap();
        self.master.flush().unwrap();
    }
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

// -------------------------------------------------------------------------------------------
// encrypt / decrypt

#[test]
fn encrypt_and_decrypt_with_keys_make_private_files_that_match() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path());
    assert_eq!(mode(&k.identity), 0o600, "keygen writes its identity 0600");
    assert!(k.recipient.starts_with("age1"));
    let input = dir.path().join("report.pdf");
    fs::write(&input, vec![42u8; 200_000]).unwrap();
    let enc = dir.path().join("report.pdf.age");
    ok(safehand()
        .args(["encrypt", "-r", &k.recipient, "-o"])
        .arg(&enc)
        .arg(&input));
    assert_eq!(mode(&enc), 0o600, "encrypted outputs are 0600");
    let dec = dir.path().join("back.pdf");
    ok(safehand()
        .arg("decrypt")
        .arg("-i")
        .arg(&k.identity)
        .arg("-o")
        .arg(&dec)
        .arg(&enc));
    assert_eq!(mode(&dec), 0o600, "decrypted files are 0600");
    assert_eq!(fs::read(&dec).unwrap(), fs::read(&input).unwrap());

    // No -o: plaintext on stdout.
    let out = ok(safehand()
        .arg("decrypt")
        .arg("-i")
        .arg(&k.identity)
        .arg(&enc));
    assert_eq!(out.stdout, fs::read(&input).unwrap());

    // Refuses to overwrite without --force; replaces with it.
    let again = run(safehand()
        .arg("decrypt")
        .arg("-i")
        .arg(&k.identity)
        .arg("-o")
        .arg(&dec)
        .arg(&enc));
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    ok(safehand()
        .arg("decrypt")
        .arg("--force")
        .arg("-i")
        .arg(&k.identity)
        .arg("-o")
        .arg(&dec)
        .arg(&enc));
}

#[test]
fn passphrase_files_and_armor_round_trip_and_use_work_factor_18() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path());
    let input = dir.path().join("notes.txt");
    fs::write(&input, b"safeguarding notes\n").unwrap();
    let enc = dir.path().join("notes.age");
    ok(safehand()
        .arg("encrypt")
        .arg("--passphrase-file")
        .arg(&k.passphrase_file)
        .arg("-a")
        .arg("-o")
        .arg(&enc)
        .arg(&input));
    let text = fs::read_to_string(&enc).unwrap();
    assert!(
        text.starts_with("-----BEGIN AGE ENCRYPTED FILE-----\n"),
        "{text}"
    );
    let out = ok(safehand()
        .arg("decrypt")
        .arg("--passphrase-file")
        .arg(&k.passphrase_file)
        .arg(&enc));
    assert_eq!(out.stdout, b"safeguarding notes\n");

    // Binary: the scrypt stanza says 18.
    let bin = dir.path().join("notes.bin.age");
    ok(safehand()
        .arg("encrypt")
        .arg("-p")
        .arg("--passphrase-file")
        .arg(&k.passphrase_file)
        .arg("-o")
        .arg(&bin)
        .arg(&input));
    let head = String::from_utf8_lossy(&fs::read(&bin).unwrap()[..200]).into_owned();
    let stanza = head
        .lines()
        .find(|l| l.starts_with("-> scrypt "))
        .expect("scrypt stanza");
    assert!(stanza.ends_with(" 18"), "{stanza}");
}

#[test]
fn weak_chosen_passphrases_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let pf = dir.path().join("weak.txt");
    let input = dir.path().join("in.txt");
    fs::write(&input, b"x").unwrap();
    for (weak, reason) in [
        ("letmein\n", "at least 15"),
        ("1234567890987654321\n", "common password"),
    ] {
        fs::write(&pf, weak).unwrap();
        let out = run(safehand()
            .arg("encrypt")
            .arg("--passphrase-file")
            .arg(&pf)
            .arg("-o")
            .arg(dir.path().join("o.age"))
            .arg(&input));
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains(reason), "{}", stderr(&out));
        assert!(!dir.path().join("o.age").exists());
    }
}

#[test]
fn usage_mistakes_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    fs::write(&input, b"x").unwrap();
    let out = run(safehand()
        .arg("encrypt")
        .arg("-o")
        .arg(dir.path().join("o.age"))
        .arg(&input));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("-r age1"), "{}", stderr(&out));
    let out = run(safehand().args(["encrypt", "--bogus-flag"]));
    assert_eq!(out.status.code(), Some(2));
    let help = ok(safehand().arg("--help"));
    assert!(String::from_utf8_lossy(&help.stdout).contains("Exit codes"));
    for cmd in [
        "encrypt", "decrypt", "seal", "open", "list", "verify", "keygen",
    ] {
        let help = ok(safehand().args([cmd, "--help"]));
        assert!(
            String::from_utf8_lossy(&help.stdout).contains("Example"),
            "{cmd} --help has examples"
        );
    }
}

#[test]
fn stdin_to_stdout_streams_like_age() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path());
    let mut child = safehand()
        .args(["encrypt", "-r", &k.recipient])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let chunk = vec![7u8; 1 << 20];
    for _ in 0..4 {
        stdin.write_all(&chunk).unwrap();
    }
    // Ciphertext arrives while stdin is still open: it streams, it does not buffer the whole.
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut first = vec![0u8; 64 * 1024];
        stdout.read_exact(&mut first).unwrap();
        tx.send(()).unwrap();
        let mut rest = Vec::new();
        stdout.read_to_end(&mut rest).unwrap();
        first.extend_from_slice(&rest);
        first
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("output before the input ended");
    stdin.write_all(&chunk).unwrap();
    drop(stdin);
    let ciphertext = reader.join().unwrap();
    assert!(child.wait().unwrap().success());

    let mut dec = safehand()
        .arg("decrypt")
        .arg("-i")
        .arg(&k.identity)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut dec_in = dec.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || dec_in.write_all(&ciphertext).unwrap());
    let out = dec.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout.len(), 5 << 20);
    assert!(out.stdout.iter().all(|&b| b == 7));
}

#[test]
fn bad_inputs_fail_clearly_and_leave_no_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path());
    let other = tempfile::tempdir().unwrap();
    let other_keys = keys(other.path());
    let input = dir.path().join("pupils.csv");
    fs::write(&input, vec![b'p'; 500_000]).unwrap();
    let by_key = dir.path().join("by-key.age");
    ok(safehand()
        .args(["encrypt", "-r", &k.recipient, "-o"])
        .arg(&by_key)
        .arg(&input));
    let by_pass = dir.path().join("by-pass.age");
    ok(safehand()
        .arg("encrypt")
        .arg("--passphrase-file")
        .arg(&k.passphrase_file)
        .arg("-o")
        .arg(&by_pass)
        .arg(&input));
    let sealed = dir.path().join("sealed.age");
    let folder = dir.path().join("folder");
    fs::create_dir(&folder).unwrap();
    fs::write(folder.join("a.txt"), vec![b'a'; 300_000]).unwrap();
    ok(safehand()
        .args(["seal", "-r", &k.recipient, "-o"])
        .arg(&sealed)
        .arg(&folder));

    let wrong_pass = dir.path().join("wrong.txt");
    fs::write(&wrong_pass, "a different but long passphrase\n").unwrap();
    let bytes = fs::read(&by_key).unwrap();
    let truncated = dir.path().join("truncated.age");
    fs::write(&truncated, &bytes[..bytes.len() - 70_000]).unwrap();
    let flipped = dir.path().join("flipped.age");
    let mut f = bytes.clone();
    let at = f.len() - 100;
    f[at] ^= 0x01;
    fs::write(&flipped, &f).unwrap();
    let sealed_bytes = fs::read(&sealed).unwrap();
    let sealed_truncated = dir.path().join("sealed-truncated.age");
    fs::write(
        &sealed_truncated,
        &sealed_bytes[..sealed_bytes.len() - 1000],
    )
    .unwrap();
    let sealed_flipped = dir.path().join("sealed-flipped.age");
    let mut s = sealed_bytes.clone();
    let at = s.len() - 50;
    s[at] ^= 0x80;
    fs::write(&sealed_flipped, &s).unwrap();

    let id = |p: &Path| vec![os("-i").to_owned(), p.as_os_str().to_owned()];
    let pf = |p: &Path| vec![os("--passphrase-file").to_owned(), p.as_os_str().to_owned()];
    let cases: Vec<(&str, &Path, Vec<std::ffi::OsString>, &str)> = vec![
        (
            "wrong passphrase",
            &by_pass,
            pf(&wrong_pass),
            "wrong passphrase",
        ),
        (
            "wrong identity",
            &by_key,
            id(&other_keys.identity),
            "not encrypted to this identity",
        ),
        ("truncated", &truncated, id(&k.identity), "incomplete"),
        ("flipped byte", &flipped, id(&k.identity), "was altered"),
    ];
    for (what, file, key, message) in &cases {
        let out_dir = tempfile::tempdir().unwrap();
        let out = run(safehand()
            .arg("decrypt")
            .args(key)
            .arg("-o")
            .arg(out_dir.path().join("out.csv"))
            .arg(file));
        assert_eq!(out.status.code(), Some(1), "{what}");
        assert!(stderr(&out).contains(message), "{what}: {}", stderr(&out));
        assert!(
            tree(out_dir.path()).is_empty(),
            "{what}: left {:?}",
            tree(out_dir.path())
        );
    }
    let open_cases: Vec<(&str, &Path, Vec<std::ffi::OsString>, &str)> = vec![
        (
            "wrong identity",
            &sealed,
            id(&other_keys.identity),
            "not encrypted to this identity",
        ),
        (
            "truncated payload",
            &sealed_truncated,
            id(&k.identity),
            "incomplete",
        ),
        (
            "flipped payload",
            &sealed_flipped,
            id(&k.identity),
            "was altered",
        ),
    ];
    for (what, file, key, message) in &open_cases {
        let out_dir = tempfile::tempdir().unwrap();
        let target = out_dir.path().join("received");
        let out = run(safehand()
            .arg("open")
            .args(key)
            .arg("-C")
            .arg(&target)
            .arg(file));
        assert_eq!(out.status.code(), Some(1), "{what}");
        assert!(stderr(&out).contains(message), "{what}: {}", stderr(&out));
        assert!(
            tree(out_dir.path()).is_empty(),
            "{what}: left {:?}",
            tree(out_dir.path())
        );
        for cmd in ["verify", "list"] {
            let out = run(safehand().arg(cmd).args(key).arg(file));
            assert_eq!(out.status.code(), Some(1), "{cmd} {what}");
            assert!(
                stderr(&out).contains(message),
                "{cmd} {what}: {}",
                stderr(&out)
            );
        }
    }
    // A file cut exactly at a chunk boundary has no final chunk: "truncated".
    let cut = dir.path().join("cut.age");
    let header_len = bytes.len() - (7 * 65_552 + (500_000 - 7 * 65_536) + 16);
    fs::write(&cut, &bytes[..header_len + 2 * 65_552]).unwrap();
    let out = run(safehand()
        .arg("verify")
        .arg("-i")
        .arg(&k.identity)
        .arg(&cut));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("truncated"), "{}", stderr(&out));
}

// -------------------------------------------------------------------------------------------
// seal / open / list / verify

#[test]
fn sealed_folders_round_trip_with_modes_times_and_awkward_names() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path());
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let top = awkward_folder(&src);
    let single = src.join("consent form.pdf");
    fs::write(&single, b"%PDF-1.4 consent\n").unwrap();
    let setuid = src.join("setuid-tool");
    fs::write(&setuid, b"binary").unwrap();
    fs::set_permissions(&setuid, fs::Permissions::from_mode(0o4755)).unwrap();
    let payload = dir.path().join("usb").join("pupils.age");
    fs::create_dir(dir.path().join("usb")).unwrap();
    let out = ok(safehand()
        .args(["seal", "-r", &k.recipient, "-o"])
        .arg(&payload)
        .arg(&top)
        .arg(&single)
        .arg(&setuid));
    assert!(stderr(&out).contains("Sealed"), "{}", stderr(&out));
    assert_eq!(mode(&payload), 0o600);

    let received = dir.path().join("received");
    ok(safehand()
        .arg("open")
        .arg("-i")
        .arg(&k.identity)
        .arg(&payload)
        .arg("-C")
        .arg(&received));
    assert_eq!(mode(&received), 0o700, "the folder open creates is 0700");
    assert_same_tree(&top, &received.join("Year 7 reports"));
    assert_eq!(
        fs::read(received.join("consent form.pdf")).unwrap(),
        b"%PDF-1.4 consent\n"
    );
    assert_eq!(
        mode(&received.join("setuid-tool")),
        0o755,
        "setuid is dropped"
    );
    assert_eq!(mode(&received.join("Year 7 reports/readonly.txt")), 0o444);
    assert!(
        tree(&received).iter().all(|p| !p.contains(".safehand")),
        "no temporary left"
    );

    // list: names, sizes, times; writes nothing.
    let before = tree(dir.path());
    let out = ok(safehand()
        .arg("list")
        .arg("-i")
        .arg(&k.identity)
        .arg(&payload));
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        listing.contains("Year 7 reports/Zoë Ångström – naïve.txt"),
        "{listing}"
    );
    assert!(listing.contains("Year 7 reports/empty folder"), "{listing}");
    let data_line = listing
        .lines()
        .find(|l| l.ends_with("Year 7 reports/data.bin"))
        .unwrap();
    assert!(data_line.contains(" 3000000 "), "{data_line}");
    assert!(listing.contains("-> name with spaces.txt"), "{listing}");
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("drwx") && l.contains(" 2017-07-14 02:40 Year 7 reports")),
        "{listing}"
    );
    assert_eq!(tree(dir.path()), before, "list wrote something");

    let out = ok(safehand()
        .arg("verify")
        .arg("-i")
        .arg(&k.identity)
        .arg(&payload));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("OK"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn open_never_overwrites_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path());
    let folder = dir.path().join("class");
    fs::create_dir(&folder).unwrap();
    fs::write(folder.join("a.txt"), b"new content").unwrap();
    let payload = dir.path().join("p.age");
    ok(safehand()
        .arg("seal")
        .arg("--passphrase-file")
        .arg(&k.passphrase_file)
        .arg("-o")
        .arg(&payload)
        .arg(&folder));

    // seal refuses an existing OUT.
    let again = run(safehand()
        .arg("seal")
        .arg("--passphrase-file")
        .arg(&k.passphrase_file)
        .arg("-o")
        .arg(&payload)
        .arg(&folder));
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("already exists"));
    ok(safehand()
        .arg("seal")
        .arg("--force")
        .arg("--passphrase-file")
        .arg(&k.passphrase_file)
        .arg("-o")
        .arg(&payload)
        .arg(&folder));

    let target = dir.path().join("target");
    fs::create_dir_all(target.join("class")).unwrap();
    fs::write(target.join("class/a.txt"), b"old content").unwrap();
    fs::write(target.join("class/keep.txt"), b"mine").unwrap();
    let out = run(safehand()
        .arg("open")
        .arg("--passphrase-file")
        .arg(&k.passphrase_file)
        .arg("-C")
        .arg(&target)
        .arg(&payload));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("already exists") && stderr(&out).contains("--force"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        fs::read(target.join("class/a.txt")).unwrap(),
        b"old content"
    );
    assert_eq!(
        tree(&target),
        vec!["class", "class/a.txt", "class/keep.txt"]
    );

    ok(safehand()
        .arg("open")
        .arg("--force")
        .arg("--passphrase-file")
        .arg(&k.passphrase_file)
        .arg("-C")
        .arg(&target)
        .arg(&payload));
    assert_eq!(
        fs::read(target.join("class/a.txt")).unwrap(),
        b"new content"
    );
    assert_eq!(
        fs::read(target.join("class/keep.txt")).unwrap(),
        b"mine",
        "merging keeps other files"
    );
}

/// A hand-made ustar header block, for payloads no honest tool would write.
fn ustar(name: &str, kind: u8, size: usize, link: &str, mode: u32) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(format!("{mode:07o}\0").as_bytes());
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"14000000000\0");
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

fn tar_of(entries: &[(&str, u8, &[u8], &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, data, link) in entries {
        out.extend(ustar(name, *kind, data.len(), link, 0o644));
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

#[test]
fn open_refuses_entries_that_escape_or_are_special() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path());
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "absolute path",
            tar_of(&[
                ("ok.txt", b'0', b"fine", ""),
                ("/tmp/evil.txt", b'0', b"evil", ""),
            ]),
            "absolute path",
        ),
        (
            "dot-dot",
            tar_of(&[
                ("ok.txt", b'0', b"fine", ""),
                ("a/../../evil.txt", b'0', b"evil", ""),
            ]),
            "`..`",
        ),
        (
            "symlink out",
            tar_of(&[
                ("ok.txt", b'0', b"fine", ""),
                ("link", b'2', b"", "/etc/passwd"),
            ]),
            "symbolic link pointing outside",
        ),
        (
            "symlink up",
            tar_of(&[("d/", b'5', b"", ""), ("d/link", b'2', b"", "../../x")]),
            "symbolic link pointing outside",
        ),
        (
            "write through symlink",
            tar_of(&[
                ("d/", b'5', b"", ""),
                ("d/l", b'2', b"", ".."),
                ("d/l/x.txt", b'0', b"x", ""),
            ]),
            "through a symbolic link",
        ),
        (
            "hard link out",
            tar_of(&[
                ("ok.txt", b'0', b"fine", ""),
                ("hl", b'1', b"", "/etc/passwd"),
            ]),
            "hard link",
        ),
        (
            "hard link to unknown",
            tar_of(&[("hl", b'1', b"", "elsewhere.txt")]),
            "hard link",
        ),
        (
            "device node",
            tar_of(&[("ok.txt", b'0', b"fine", ""), ("sda", b'4', b"", "")]),
            "device node",
        ),
        (
            "char device",
            tar_of(&[("null", b'3', b"", "")]),
            "device node",
        ),
        (
            "fifo",
            tar_of(&[("ok.txt", b'0', b"fine", ""), ("pipe", b'6', b"", "")]),
            "FIFO",
        ),
    ];
    for (what, tar, message) in cases {
        let tar_path = dir.path().join("evil.tar");
        fs::write(&tar_path, &tar).unwrap();
        let payload = dir.path().join("evil.age");
        ok(safehand()
            .args(["encrypt", "--force", "-r", &k.recipient, "-o"])
            .arg(&payload)
            .arg(&tar_path));
        let target = dir.path().join("target");
        let out = run(safehand()
            .arg("open")
            .arg("-i")
            .arg(&k.identity)
            .arg("-C")
            .arg(&target)
            .arg(&payload));
        assert_eq!(out.status.code(), Some(1), "{what}");
        assert!(
            stderr(&out).contains("refusing") && stderr(&out).contains(message),
            "{what}: {}",
            stderr(&out)
        );
        assert!(!target.exists(), "{what}: left {:?}", tree(&target));
    }
    assert!(!Path::new("/tmp/evil.txt").exists());
    // An inside link is fine.
    let tar = tar_of(&[
        ("d/", b'5', b"", ""),
        ("d/f.txt", b'0', b"hello", ""),
        ("d/link", b'2', b"", "f.txt"),
        ("top", b'2', b"", "d/f.txt"),
        ("hard", b'1', b"", "d/f.txt"),
    ]);
    let tar_path = dir.path().join("good.tar");
    fs::write(&tar_path, &tar).unwrap();
    let payload = dir.path().join("good.age");
    ok(safehand()
        .args(["encrypt", "-r", &k.recipient, "-o"])
        .arg(&payload)
        .arg(&tar_path));
    let target = dir.path().join("good");
    ok(safehand()
        .arg("open")
        .arg("-i")
        .arg(&k.identity)
        .arg("-C")
        .arg(&target)
        .arg(&payload));
    assert_eq!(fs::read(target.join("top")).unwrap(), b"hello");
    assert_eq!(fs::read(target.join("hard")).unwrap(), b"hello");
}

#[test]
fn open_applies_the_umask_to_modes_from_the_payload() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path());
    // A payload whose folder and files ask for 0777 (world-writable).
    let mut tar = Vec::new();
    for (name, kind, data) in [
        ("shared/", b'5', &b""[..]),
        ("shared/everyone.txt", b'0', &b"anyone may write this"[..]),
    ] {
        tar.extend(ustar(name, kind, data.len(), "", 0o777));
        tar.extend_from_slice(data);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.resize(tar.len() + 1024, 0);
    let tar_path = dir.path().join("wide.tar");
    fs::write(&tar_path, &tar).unwrap();
    let payload = dir.path().join("wide.age");
    ok(safehand()
        .args(["encrypt", "-r", &k.recipient, "-o"])
        .arg(&payload)
        .arg(&tar_path));
    for (umask, want) in [("022", 0o755), ("077", 0o700), ("002", 0o775)] {
        let target = dir.path().join(format!("out-{umask}"));
        ok(Command::new("sh")
            .arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
            .arg(workspace_binary("safehand"))
            .arg("open")
            .arg("-i")
            .arg(&k.identity)
            .arg("-C")
            .arg(&target)
            .arg(&payload));
        assert_eq!(
            mode(&target.join("shared")),
            want,
            "folder under umask {umask}"
        );
        assert_eq!(
            mode(&target.join("shared/everyone.txt")),
            want,
            "file under umask {umask}"
        );
    }
}

#[test]
fn files_over_4_gib_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path());
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let big = src.join("big video.mp4");
    let size: u64 = (4 << 30) + (3 << 20) + 123;
    {
        // Sparse: a few marked places, holes elsewhere.
        use std::os::unix::fs::FileExt;
        let f = File::create(&big).unwrap();
        f.set_len(size).unwrap();
        f.write_all_at(b"start", 0).unwrap();
        f.write_all_at(b"past four gibibytes", (4 << 30) + 1000)
            .unwrap();
        f.write_all_at(b"end", size - 3).unwrap();
    }
    let payload = dir.path().join("big.age");
    ok(safehand()
        .args(["seal", "-r", &k.recipient, "-o"])
        .arg(&payload)
        .arg(&big));
    fs::remove_file(&big).unwrap(); // keep disk use modest
    let received = dir.path().join("received");
    ok(safehand()
        .arg("open")
        .arg("-i")
        .arg(&k.identity)
        .arg("-C")
        .arg(&received)
        .arg(&payload));
    fs::remove_file(&payload).unwrap();
    let back = received.join("big video.mp4");
    assert_eq!(fs::metadata(&back).unwrap().len(), size);
    use std::os::unix::fs::FileExt;
    let f = File::open(&back).unwrap();
    let mut buf = vec![0u8; 19];
    f.read_exact_at(&mut buf, (4 << 30) + 1000).unwrap();
    assert_eq!(&buf, b"past four gibibytes");
    let mut buf = vec![0u8; 5];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"start");
    let mut buf = vec![0u8; 3];
    f.read_exact_at(&mut buf, size - 3).unwrap();
    assert_eq!(&buf, b"end");
    let mut buf = vec![1u8; 4096];
    f.read_exact_at(&mut buf, 3 << 30).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
}

// -------------------------------------------------------------------------------------------
// Interoperability with the real `age` binary and GNU tar

fn age_or_skip() -> Option<PathBuf> {
    let age = external_tool("age");
    if age.is_none() {
        eprintln!("skipping: the `age` binary is not installed (tests/run installs it)");
    }
    age
}

#[test]
fn age_opens_what_safehand_seals_with_an_identity() {
    let Some(age) = age_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path());
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let top = awkward_folder(&src);
    let payload = dir.path().join("p.age");
    ok(safehand()
        .args(["seal", "-r", &k.recipient, "-o"])
        .arg(&payload)
        .arg(&top));
    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();
    let pipeline = format!(
        "'{}' -d -i '{}' '{}' | tar x -C '{}'",
        age.display(),
        k.identity.display(),
        payload.display(),
        out.display()
    );
    let status = Command::new("bash")
        .arg("-o")
        .arg("pipefail")
        .arg("-c")
        .arg(&pipeline)
        .status()
        .unwrap();
    assert!(status.success(), "{pipeline}");
    assert_same_tree(&top, &out.join("Year 7 reports"));
}

#[test]
fn age_opens_what_safehand_seals_with_a_passphrase_typed_at_its_prompt() {
    let Some(age) = age_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path());
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let top = awkward_folder(&src);
    let payload = dir.path().join("p.age");
    ok(safehand()
        .arg("seal")
        .arg("--passphrase-file")
        .arg(&k.passphrase_file)
        .arg("-o")
        .arg(&payload)
        .arg(&top));
    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();

    age_decrypt_into_tar(&age, &payload, &out, PASSPHRASE);
    assert_same_tree(&top, &out.join("Year 7 reports"));
}

/// `age -d PAYLOAD | tar x -C OUT`, typing `passphrase` at age's prompt on a terminal; checks
/// both succeed and that age did not echo the passphrase.
fn age_decrypt_into_tar(age: &Path, payload: &Path, out: &Path, passphrase: &str) {
    let mut pty = Pty::new();
    let mut age_cmd = pty.command(age, &[os("-d"), payload.as_os_str()]);
    let mut age_child = age_cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut tar = Command::new("tar")
        .arg("x")
        .arg("-C")
        .arg(out)
        .stdin(age_child.stdout.take().unwrap())
        .spawn()
        .unwrap();
    pty.expect("passphrase", 1);
    pty.type_line(passphrase);
    assert!(
        age_child.wait().unwrap().success(),
        "age -d failed: {}",
        pty.screen()
    );
    assert!(tar.wait().unwrap().success());
    assert!(
        !pty.screen().contains(passphrase),
        "age echoed the passphrase"
    );
}

/// A transfer payload as the server seals it (generated passphrase, work factor 16, files
/// announced then streamed, header kept apart from the body) opens with stock `age -d | tar x`,
/// which is what the recipient's `.age` download promises.
#[test]
fn age_and_tar_open_a_server_sealed_transfer_payload() {
    use safehand_crypto::split::PayloadSealer;
    use safehand_crypto::{ExposeSecret, GENERATED_SCRYPT_WORK_FACTOR};
    let Some(age) = age_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let passphrase = safehand_crypto::passphrase::generate();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("Referral – Zoë.docx", b"referral notes\n".to_vec()),
        ("scan.bin", big),
        ("empty.txt", Vec::new()),
    ];
    let mut sealer =
        PayloadSealer::with_work_factor(&passphrase, GENERATED_SCRYPT_WORK_FACTOR).unwrap();
    let mut body = Vec::new();
    for (name, content) in &files {
        sealer
            .start_file(name, content.len() as u64, 1_700_000_000, &mut body)
            .unwrap();
        for piece in content.chunks(65_537) {
            sealer.write(piece, &mut body).unwrap();
        }
    }
    let header = sealer.header().to_vec();
    sealer.finish(&mut body).unwrap();
    let header_text = String::from_utf8_lossy(&header).to_string();
    assert!(
        header_text
            .lines()
            .any(|l| l.starts_with("-> scrypt") && l.ends_with(" 16")),
        "{header_text}"
    );
    let payload = dir.path().join("payload.age");
    let mut whole = header;
    whole.extend_from_slice(&body);
    fs::write(&payload, &whole).unwrap();
    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();
    age_decrypt_into_tar(&age, &payload, &out, passphrase.expose_secret());
    for (name, content) in &files {
        assert_eq!(&fs::read(out.join(name)).unwrap(), content, "{name}");
    }
}

#[test]
fn safehand_opens_tar_and_age_payloads_made_by_age() {
    let Some(age) = age_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path());
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let top = awkward_folder(&src);

    // With a recipient.
    let payload = dir.path().join("by-age.age");
    let pipeline = format!(
        "tar c -C '{}' 'Year 7 reports' | '{}' -r '{}' -o '{}'",
        src.display(),
        age.display(),
        k.recipient,
        payload.display()
    );
    let status = Command::new("bash")
        .arg("-o")
        .arg("pipefail")
        .arg("-c")
        .arg(&pipeline)
        .status()
        .unwrap();
    assert!(status.success());
    let out = dir.path().join("out");
    ok(safehand()
        .arg("open")
        .arg("-i")
        .arg(&k.identity)
        .arg("-C")
        .arg(&out)
        .arg(&payload));
    assert_same_tree(&top, &out.join("Year 7 reports"));

    // With a passphrase typed at age's prompt (twice).
    let tarball = dir.path().join("plain.tar");
    let status = Command::new("tar")
        .arg("cf")
        .arg(&tarball)
        .arg("-C")
        .arg(&src)
        .arg("Year 7 reports")
        .status()
        .unwrap();
    assert!(status.success());
    let payload = dir.path().join("by-age-pass.age");
    let mut pty = Pty::new();
    let mut child = pty
        .command(
            &age,
            &[os("-p"), os("-o"), payload.as_os_str(), tarball.as_os_str()],
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    pty.expect("passphrase", 1);
    pty.type_line(PASSPHRASE);
    pty.expect("passphrase", 2);
    pty.type_line(PASSPHRASE);
    assert!(
        child.wait().unwrap().success(),
        "age -p failed: {}",
        pty.screen()
    );
    let out = dir.path().join("out-pass");
    ok(safehand()
        .arg("open")
        .arg("--passphrase-file")
        .arg(&k.passphrase_file)
        .arg("-C")
        .arg(&out)
        .arg(&payload));
    assert_same_tree(&top, &out.join("Year 7 reports"));

    // And single files both ways.
    let file = dir.path().join("single.bin");
    fs::write(&file, vec![9u8; 100_000]).unwrap();
    let ours = dir.path().join("ours.age");
    ok(safehand()
        .args(["encrypt", "-a", "-r", &k.recipient, "-o"])
        .arg(&ours)
        .arg(&file));
    let theirs = ok(Command::new(&age)
        .arg("-d")
        .arg("-i")
        .arg(&k.identity)
        .arg(&ours));
    assert_eq!(theirs.stdout, fs::read(&file).unwrap());
    let by_age = dir.path().join("theirs.age");
    ok(Command::new(&age)
        .arg("-r")
        .arg(&k.recipient)
        .arg("-o")
        .arg(&by_age)
        .arg(&file));
    let back = ok(safehand()
        .arg("decrypt")
        .arg("-i")
        .arg(&k.identity)
        .arg(&by_age));
    assert_eq!(back.stdout, fs::read(&file).unwrap());
}

// -------------------------------------------------------------------------------------------
// Prompts and generated passphrases

#[test]
fn p_prompts_twice_without_echo_and_rejects_a_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path());
    let input = dir.path().join("in.txt");
    fs::write(&input, b"typed at the prompt\n").unwrap();
    let enc = dir.path().join("typed.age");
    let bin = workspace_binary("safehand");

    let mut pty = Pty::new();
    let mut child = pty
        .command(
            &bin,
            &[
                os("encrypt"),
                os("-p"),
                os("-o"),
                enc.as_os_str(),
                input.as_os_str(),
            ],
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    pty.expect("Enter passphrase:", 1);
    pty.type_line(PASSPHRASE);
    pty.expect("Confirm passphrase:", 1);
    pty.type_line(PASSPHRASE);
    assert!(child.wait().unwrap().success(), "{}", pty.screen());
    assert!(
        !pty.screen().contains("otter"),
        "the passphrase was echoed: {:?}",
        pty.screen()
    );
    let out = ok(safehand()
        .arg("decrypt")
        .arg("--passphrase-file")
        .arg(&k.passphrase_file)
        .arg(&enc));
    assert_eq!(out.stdout, b"typed at the prompt\n");

    // decrypt asks once.
    let mut pty = Pty::new();
    let dec = dir.path().join("typed.txt");
    let mut child = pty
        .command(
            &bin,
            &[os("decrypt"), os("-o"), dec.as_os_str(), enc.as_os_str()],
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    pty.expect("Enter passphrase:", 1);
    pty.type_line(PASSPHRASE);
    assert!(child.wait().unwrap().success(), "{}", pty.screen());
    assert_eq!(fs::read(&dec).unwrap(), b"typed at the prompt\n");

    // A mismatch encrypts nothing.
    let mut pty = Pty::new();
    let enc2 = dir.path().join("mismatch.age");
    let mut child = pty
        .command(
            &bin,
            &[
                os("encrypt"),
                os("-p"),
                os("-o"),
                enc2.as_os_str(),
                input.as_os_str(),
            ],
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    pty.expect("Enter passphrase:", 1);
    pty.type_line(PASSPHRASE);
    pty.expect("Confirm passphrase:", 1);
    pty.type_line("otter lantern quietly ninety harbours");
    assert_eq!(child.wait().unwrap().code(), Some(1));
    pty.expect("differ", 1);
    assert!(!enc2.exists());

    // Ctrl-C at a prompt cancels at once (exit 130), writes nothing and turns echo back on.
    for args in [
        vec![os("decrypt"), os("-o"), dec.as_os_str(), enc.as_os_str()],
        vec![
            os("encrypt"),
            os("-p"),
            os("-o"),
            enc2.as_os_str(),
            input.as_os_str(),
        ],
    ] {
        fs::remove_file(&dec).ok();
        let mut pty = Pty::new();
        let mut child = pty
            .command(&bin, &args)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        pty.expect("Enter passphrase:", 1);
        assert!(!pty.echo_on(), "echo is off while the prompt waits");
        pty.type_raw(b"\x03");
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                child.kill().ok();
                panic!("Ctrl-C did not end the prompt: {:?}", pty.screen());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(130), "{}", pty.screen());
        pty.expect("interrupted at the passphrase prompt; nothing was done", 1);
        assert!(pty.echo_on(), "echo is back on after Ctrl-C");
        assert!(!dec.exists() && !enc2.exists());
    }
}

#[test]
fn generated_passphrases_are_shown_once_and_work() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(safehand().arg("passphrase"));
    let p = String::from_utf8(out.stdout).unwrap();
    let words: Vec<&str> = p.trim().split('-').collect();
    assert_eq!(words.len(), 7, "{p}");
    assert!(words
        .iter()
        .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase())));
    let other = String::from_utf8(ok(safehand().arg("passphrase")).stdout).unwrap();
    assert_ne!(p, other);

    let input = dir.path().join("in.txt");
    fs::write(&input, b"generated\n").unwrap();
    let enc = dir.path().join("gen.age");
    let out = ok(safehand()
        .args(["encrypt", "-p", "--generate", "-o"])
        .arg(&enc)
        .arg(&input));
    let err = stderr(&out);
    let shown = err
        .lines()
        .map(str::trim)
        .find(|l| l.split('-').count() == 7 && !l.contains(' '))
        .unwrap_or_else(|| panic!("no passphrase shown: {err}"))
        .to_owned();
    assert_eq!(err.matches(&shown).count(), 1, "shown exactly once");
    let pf = dir.path().join("gen-pass.txt");
    fs::write(&pf, format!("{shown}\n")).unwrap();
    let back = ok(safehand()
        .arg("decrypt")
        .arg("--passphrase-file")
        .arg(&pf)
        .arg(&enc));
    assert_eq!(back.stdout, b"generated\n");
}

// -------------------------------------------------------------------------------------------
// Ctrl-C

/// Waits until `dir` holds an entry whose name contains `part`.
fn wait_for_entry(dir: &Path, part: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(rd) = fs::read_dir(dir) {
            if rd
                .flatten()
                .any(|e| e.file_name().to_string_lossy().contains(part))
            {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

/// Sends SIGINT, as Ctrl-C at a terminal does.
fn ctrl_c(child: &std::process::Child) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
}

#[test]
fn ctrl_c_during_open_or_decrypt_leaves_no_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path());
    let big = dir.path().join("big.bin");
    File::create(&big).unwrap().set_len(3 << 30).unwrap();
    let payload = dir.path().join("big.age");
    ok(safehand()
        .args(["seal", "-r", &k.recipient, "-o"])
        .arg(&payload)
        .arg(&big));
    fs::remove_file(&big).unwrap();

    let target = dir.path().join("target");
    fs::create_dir(&target).unwrap();
    let child = safehand()
        .arg("open")
        .arg("-i")
        .arg(&k.identity)
        .arg("-C")
        .arg(&target)
        .arg(&payload)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for_entry(&target, ".safehand-"),
        "no staging folder appeared"
    );
    ctrl_c(&child);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    assert!(tree(&target).is_empty(), "left {:?}", tree(&target));

    let outdir = dir.path().join("out");
    fs::create_dir(&outdir).unwrap();
    let child = safehand()
        .arg("decrypt")
        .arg("-i")
        .arg(&k.identity)
        .arg("-o")
        .arg(outdir.join("big.tar"))
        .arg(&payload)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for_entry(&outdir, ".safehand-"),
        "no temporary file appeared"
    );
    std::thread::sleep(Duration::from_millis(100));
    ctrl_c(&child);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(tree(&outdir).is_empty(), "left {:?}", tree(&outdir));
}
