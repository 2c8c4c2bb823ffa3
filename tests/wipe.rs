//! End-to-end tests of `safehand devices/wipe/cert` on loop devices (issue: wiping).
//!
//! They need root (loop devices, mkfs, mount, swapon). Without root they fail when CI=true
//! and are skipped with a message otherwise. They share the kernel's loop devices and
//! mount table, so they run one at a time (`SERIAL`).

// A failed step in a test should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use safehand_tests::{external_tool, workspace_binary};

mod passes;
mod proof;
mod register;

static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the test lock; returns None (skip) when not root and not in CI.
fn setup() -> Option<MutexGuard<'static, ()>> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if uid.as_deref() != Some("0") {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("the wipe tests need root (loop devices); CI=true forbids skipping");
        }
        eprintln!("skipping: the wipe tests need root");
        return None;
    }
    for tool in ["losetup", "mkfs.ext4", "mount", "dd"] {
        external_tool(tool)?;
    }
    Some(SERIAL.lock().unwrap_or_else(|e| e.into_inner()))
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    out
}

fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loop device over a sparse file; detached on drop.
struct LoopDevice {
    path: String,
    backing: PathBuf,
}

impl LoopDevice {
    fn new(backing: &Path, size: u64) -> Self {
        Self::with_args(backing, size, &[])
    }

    fn with_args(backing: &Path, size: u64, extra: &[&str]) -> Self {
        let file = fs::File::create(backing).expect("create backing file");
        file.set_len(size).expect("size backing file");
        let out = run_ok(
            Command::new("losetup")
                .arg("-f")
                .arg("--show")
                .args(extra)
                .arg(backing),
        );
        LoopDevice {
            path: out.trim().to_string(),
            backing: backing.to_path_buf(),
        }
    }

    fn name(&self) -> &str {
        self.path.trim_start_matches("/dev/")
    }

    /// Reads the whole device, bypassing the page cache.
    fn read_all(&self) -> Vec<u8> {
        let out = run(Command::new("dd").arg(format!("if={}", self.path)).args([
            "bs=1M",
            "iflag=direct",
            "status=none",
        ]));
        assert!(
            out.status.success(),
            "dd read failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn set_rotational(&self, rotational: bool) {
        fs::write(
            format!("/sys/block/{}/queue/rotational", self.name()),
            if rotational { "1" } else { "0" },
        )
        .expect("set rotational flag of the loop device");
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
        let _ = &self.backing;
    }
}

/// A mounted file system; unmounted on drop.
struct Mounted(PathBuf);

impl Mounted {
    fn new(device: &str, dir: &Path) -> Self {
        fs::create_dir_all(dir).expect("mount point");
        run_ok(Command::new("mount").arg(device).arg(dir));
        Mounted(dir.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The `safehand` binary with a private config folder (so the signing key is the test's).
struct Safehand {
    config: tempfile::TempDir,
}

impl Safehand {
    fn new() -> Self {
        Safehand {
            config: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn cmd(&self) -> Command {
        let mut cmd = Command::new(workspace_binary("safehand"));
        cmd.env("XDG_CONFIG_HOME", self.config.path())
            .stdin(Stdio::null());
        for var in [
            "SAFEHAND_WIPE_TEST_DIR",
            "SAFEHAND_WIPE_TEST_STEP",
            "SAFEHAND_WIPE_TEST_BEFORE_VERIFY",
            "SAFEHAND_WIPE_TEST_PAUSE_AT",
        ] {
            cmd.env_remove(var);
        }
        cmd
    }

    /// `safehand wipe DEV --method M --yes --expect-serial DEV --certificate CERT` plus `extra`.
    fn wipe(&self, target: &str, method: &str, cert: &Path, extra: &[&str]) -> Output {
        run(self
            .cmd()
            .args([
                "wipe",
                target,
                "--method",
                method,
                "--yes",
                "--expect-serial",
                target,
                "--certificate",
            ])
            .arg(cert)
            .args(extra))
    }

    fn public_key(&self) -> String {
        run_ok(self.cmd().args(["cert", "key"])).trim().to_string()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn certificate(path: &Path) -> serde_json::Value {
    let bytes =
        fs::read(path).unwrap_or_else(|e| panic!("no certificate at {}: {e}", path.display()));
    let doc: serde_json::Value = serde_json::from_slice(&bytes).expect("certificate is JSON");
    doc["certificate"].clone()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn fill_marker(device: &str, marker: &[u8], copies: usize) {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .open(device)
        .expect("open device");
    for i in 0..copies {
        let _ = i;
        file.write_all(marker).expect("write marker");
    }
    file.sync_all().expect("sync");
}

#[test]
fn devices_lists_loop_device_with_its_facts_and_use() {
    let Some(_guard) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let dev = LoopDevice::with_args(
        &dir.path().join("img"),
        16 << 20,
        &["--sector-size", "4096"],
    );
    let sh = Safehand::new();
    let find = |json: &str| -> serde_json::Value {
        let all: serde_json::Value = serde_json::from_str(json).expect("devices --json is JSON");
        all.as_array()
            .unwrap()
            .iter()
            .find(|d| d["path"] == dev.path.as_str())
            .cloned()
            .expect("loop device listed")
    };
    let entry = find(&run_ok(sh.cmd().args(["devices", "--json"])));
    assert_eq!(entry["size_bytes"], 16 << 20);
    assert_eq!(entry["logical_sector_size"], 4096);
    assert_eq!(entry["transport"], "loop");
    assert_eq!(entry["kind"], "loop");
    assert_eq!(entry["in_use"].as_array().unwrap().len(), 0);
    assert!(entry["rotational"].is_boolean() && entry["removable"].is_boolean());
    run_ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&dev.path));
    let _m = Mounted::new(&dev.path, &dir.path().join("mnt"));
    let entry = find(&run_ok(sh.cmd().args(["devices", "--json"])));
    assert!(
        entry["in_use"][0].as_str().unwrap().contains("mounted"),
        "{entry}"
    );
    let table = run_ok(sh.cmd().arg("devices"));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&dev.path) && l.contains("mounted")),
        "{table}"
    );
    let root =
        serde_json::from_str::<serde_json::Value>(&run_ok(sh.cmd().args(["devices", "--json"])))
            .unwrap();
    assert!(
        root.as_array()
            .unwrap()
            .iter()
            .any(|d| d["holds_running_system"] == true),
        "the disk holding / is marked"
    );
}

#[test]
fn refuses_a_mounted_device_and_says_what_to_do() {
    let Some(_guard) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let dev = LoopDevice::new(&dir.path().join("img"), 32 << 20);
    run_ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&dev.path));
    let mnt = dir.path().join("mnt");
    let _m = Mounted::new(&dev.path, &mnt);
    fs::write(mnt.join("keep.txt"), b"KEEP-ME-MOUNTED").unwrap();
    let sh = Safehand::new();
    let cert = dir.path().join("c.json");
    let out = sh.wipe(&dev.path, "zero", &cert, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("is mounted at") && err.contains(mnt.to_str().unwrap()),
        "{err}"
    );
    assert!(err.contains("umount"), "{err}");
    assert!(!cert.exists(), "no certificate for a refused wipe");
    assert_eq!(fs::read(mnt.join("keep.txt")).unwrap(), b"KEEP-ME-MOUNTED");
}

#[test]
fn refuses_a_disk_whose_partition_is_mounted() {
    let Some(_guard) = setup() else { return };
    let Some(sfdisk) = external_tool("sfdisk") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    fs::File::create(&img).unwrap().set_len(48 << 20).unwrap();
    let mut child = Command::new(sfdisk)
        .arg(&img)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: gpt\n,16M,L\n,,L\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let out = run_ok(
        Command::new("losetup")
            .args(["-f", "--show", "-P"])
            .arg(&img),
    );
    let dev = LoopDevice {
        path: out.trim().to_string(),
        backing: img.clone(),
    };
    let part = format!("{}p2", dev.path);
    if !Path::new(&part).exists() {
        // Some kernels do not scan loop devices' partition tables themselves; partx tells them.
        let _ = Command::new("partx").arg("-a").arg(&dev.path).output();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !Path::new(&part).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    run_ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&part));
    let _m = Mounted::new(&part, &dir.path().join("mnt"));
    let sh = Safehand::new();
    let out = sh.wipe(&dev.path, "zero", &dir.path().join("c.json"), &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains(&format!("{part} is mounted at")), "{err}");
    assert!(err.contains("Unmount"), "{err}");
}

#[test]
fn refuses_swap_in_use() {
    let Some(_guard) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let dev = LoopDevice::new(&dir.path().join("img"), 32 << 20);
    run_ok(Command::new("mkswap").arg(&dev.path));
    run_ok(Command::new("swapon").arg(&dev.path));
    struct SwapOff(String);
    impl Drop for SwapOff {
        fn drop(&mut self) {
            let _ = Command::new("swapoff").arg(&self.0).status();
        }
    }
    let _swap = SwapOff(dev.path.clone());
    let sh = Safehand::new();
    let out = sh.wipe(&dev.path, "zero", &dir.path().join("c.json"), &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("in use as swap") && err.contains("swapoff"),
        "{err}"
    );
    // A swap file in use is refused too.
    let files = tempfile::tempdir_in("/var/tmp").unwrap();
    let swapfile = files.path().join("swapfile");
    let out = run(Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", swapfile.display()))
        .args(["bs=1M", "count=16", "status=none"]));
    assert!(out.status.success());
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&swapfile, fs::Permissions::from_mode(0o600)).unwrap();
    run_ok(Command::new("mkswap").arg(&swapfile));
    run_ok(Command::new("swapon").arg(&swapfile));
    let _swapfile = SwapOff(swapfile.display().to_string());
    let target = swapfile.to_str().unwrap();
    let out = sh.wipe(target, "zero", &dir.path().join("f.json"), &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("in use as a swap file") && err.contains("swapoff"),
        "{err}"
    );
}

#[test]
fn refuses_the_disk_holding_the_running_system() {
    let Some(_guard) = setup() else { return };
    let sh = Safehand::new();
    let all: serde_json::Value =
        serde_json::from_str(&run_ok(sh.cmd().args(["devices", "--json"]))).unwrap();
    let root = all
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["holds_running_system"] == true)
        .expect("`safehand devices` names the disk holding /")
        .clone();
    let path = root["path"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A deliberately wrong --expect-serial as a second safety net: even if the refusal broke,
    // nothing would be written to this machine's own disk.
    let out = run(sh
        .cmd()
        .args([
            "wipe",
            path,
            "--method",
            "zero",
            "--yes",
            "--expect-serial",
            "not-this-disk",
            "--certificate",
        ])
        .arg(dir.path().join("c.json")));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("holds the running system"), "{err}");
    assert!(err.contains("Boot the computer from other media"), "{err}");
}

#[test]
fn write_errors_give_failed_with_the_byte_range_and_the_wipe_continues() {
    let Some(_guard) = setup() else { return };
    // A loop device over a sparse file on an 8 MiB tmpfs: every write past 8 MiB fails in the
    // kernel (ENOSPC from the backing file surfaces as a real I/O error on the device).
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    fs::create_dir(&small).unwrap();
    run_ok(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8M", "tmpfs"])
            .arg(&small),
    );
    let _m = Mounted(small.clone());
    let dev = LoopDevice::new(&small.join("img"), 16 << 20);
    let sh = Safehand::new();
    let cert = dir.path().join("c.json");
    let out = sh.wipe(&dev.path, "custom:55,aa", &cert, &["--verify", "all"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "FAILED exits 3: {}",
        stderr(&out)
    );
    assert!(stdout(&out).starts_with("FAILED"), "{}", stdout(&out));
    let c = certificate(&cert);
    assert_eq!(c["result"], "FAILED");
    assert_eq!(c["nist"]["category"], "none");
    for pass in c["passes"].as_array().unwrap() {
        // Both passes ran to the end despite the errors.
        assert_eq!(pass["status"], "done");
        assert_eq!(pass["bytes_written"], 8 << 20);
        let errors = pass["write_errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "{pass}");
        assert_eq!(errors[0]["start"], 8 << 20);
        assert_eq!(errors[0]["end"], 16 << 20);
        assert!(errors[0]["error"]
            .as_str()
            .unwrap()
            .contains("write failed"));
    }
    // The second pass's read-back shows the first 8 MiB hold 0xaa and the rest did not take it.
    let v = &c["passes"][1]["verification"];
    assert_eq!(v["result"], "failed");
    assert_eq!(v["mismatches"][0]["start"], 8 << 20);
    let shown = run_ok(sh.cmd().args(["cert", "show"]).arg(&cert));
    assert!(
        shown.contains("write error bytes 8388608-16777216"),
        "{shown}"
    );
}

/// A file served by `tests/wipe/faulty_fs.py`, a FUSE file system whose reads and writes fail
/// in given byte ranges: real I/O errors from the kernel without device-mapper.
struct FaultyFile {
    mountpoint: PathBuf,
    child: std::process::Child,
}

impl FaultyFile {
    fn new(dir: &Path, size: u64, faults: &[&str]) -> Option<Self> {
        let python = external_tool("python3")?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/wipe/faulty_fs.py");
        let ok = Command::new(&python)
            .args(["-c", "import fuse"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("the Python module fusepy is missing (pip install fusepy; Debian libfuse2)");
            }
            eprintln!("skipping: the Python module fusepy is missing");
            return None;
        }
        let backing = dir.join("backing.img");
        fs::File::create(&backing).unwrap().set_len(size).unwrap();
        let mountpoint = dir.join("faulty");
        fs::create_dir(&mountpoint).unwrap();
        let child = Command::new(python)
            .arg(script)
            .arg(&mountpoint)
            .arg(&backing)
            .args(faults)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let f = FaultyFile { mountpoint, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !f.path().exists() {
            assert!(
                Instant::now() < deadline,
                "the FUSE file system did not come up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(f)
    }

    fn path(&self) -> PathBuf {
        self.mountpoint.join("disk.img")
    }
}

impl Drop for FaultyFile {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mountpoint).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn read_errors_short_reads_and_short_writes_give_failed_with_their_byte_ranges() {
    let Some(_guard) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    const MIB: u64 = 1 << 20;
    let Some(file) = FaultyFile::new(
        dir.path(),
        16 * MIB,
        &[
            "--read-error",
            &format!("{}:{}", 4 * MIB, 4 * MIB + 4096),
            "--short-write",
            &format!("{}:{}", 8 * MIB, 8 * MIB + 4096),
            "--short-read",
            &format!("{}:{}", 12 * MIB, 12 * MIB + 4096),
        ],
    ) else {
        return;
    };
    let target = file.path();
    let target = target.to_str().unwrap();
    let sh = Safehand::new();
    let cert = dir.path().join("c.json");
    let out = sh.wipe(target, "custom:55,aa", &cert, &["--verify", "all"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "FAILED exits 3: {}",
        stderr(&out)
    );
    assert!(stdout(&out).starts_with("FAILED"), "{}", stdout(&out));
    let c = certificate(&cert);
    assert_eq!(c["result"], "FAILED");
    assert_eq!(c["nist"]["category"], "none");
    let within = |range: &serde_json::Value, at: u64| {
        (range["start"].as_u64().unwrap()..range["end"].as_u64().unwrap()).contains(&at)
    };
    for pass in c["passes"].as_array().unwrap() {
        // Each pass ran to the end: only the piece holding the refused write is missing.
        assert_eq!(pass["status"], "done", "{pass}");
        let written = pass["bytes_written"].as_u64().unwrap();
        assert!(
            (16 * MIB - (64 << 10)..16 * MIB).contains(&written),
            "{pass}"
        );
        let writes = pass["write_errors"].as_array().unwrap();
        assert_eq!(writes.len(), 1, "{pass}");
        assert!(within(&writes[0], 8 * MIB), "{pass}");
        assert!(
            writes[0]["error"].as_str().unwrap().contains("short write"),
            "{pass}"
        );
        let v = &pass["verification"];
        assert_eq!(v["result"], "failed", "{pass}");
        let reads = v["read_errors"].as_array().unwrap();
        assert_eq!(reads.len(), 2, "{pass}");
        assert!(within(&reads[0], 4 * MIB), "{pass}");
        assert!(
            reads[0]["error"]
                .as_str()
                .unwrap()
                .contains("Input/output error"),
            "{pass}"
        );
        assert!(within(&reads[1], 12 * MIB), "{pass}");
        assert!(
            reads[1]["error"].as_str().unwrap().contains("short read"),
            "{pass}"
        );
    }
    // The wipe went on past every error: the medium's last MiB holds the last pass (0xaa).
    let data = fs::read(dir.path().join("backing.img")).unwrap();
    assert!(data[(15 * MIB) as usize..].iter().all(|&b| b == 0xaa));
    assert!(data[..(4 * MIB) as usize].iter().all(|&b| b == 0xaa));
    let shown = run_ok(sh.cmd().args(["cert", "show"]).arg(&cert));
    assert!(shown.contains("short write"), "{shown}");
    assert!(shown.contains("Input/output error"), "{shown}");
    assert!(shown.contains("short read"), "{shown}");
    // The certificate still verifies: FAILED is an honest, signed result.
    run_ok(sh.cmd().args(["cert", "verify"]).arg(&cert));
}

#[test]
fn interrupt_gives_incomplete_certificate_and_nonzero_exit() {
    let Some(_guard) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let dev = LoopDevice::new(&dir.path().join("img"), 32 << 20);
    let sh = Safehand::new();
    let cert = dir.path().join("c.json");
    let hooks = dir.path().join("hooks");
    fs::create_dir(&hooks).unwrap();
    let child = sh
        .cmd()
        .args([
            "wipe",
            &dev.path,
            "--method",
            "dod-3",
            "--yes",
            "--expect-serial",
            &dev.path,
            "--certificate",
        ])
        .arg(&cert)
        .env("SAFEHAND_WIPE_TEST_DIR", &hooks)
        .env("SAFEHAND_WIPE_TEST_PAUSE_AT", (12u64 << 20).to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&hooks.join("paused"));
    run_ok(Command::new("kill").args(["-INT", &child.id().to_string()]));
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "INCOMPLETE exits 4: {}",
        stderr(&out)
    );
    let c = certificate(&cert);
    assert_eq!(c["result"], "INCOMPLETE");
    assert_ne!(c["nist"]["category"], "Clear");
    let detail = c["result_detail"].as_str().unwrap();
    assert!(
        detail.contains("pass 1 of 3") && detail.contains("at byte 12582912"),
        "{detail}"
    );
    assert_eq!(c["passes"][0]["status"], "interrupted");
    assert_eq!(c["passes"][0]["bytes_written"], 12u64 << 20);
    assert_eq!(c["passes"][1]["status"], "not-started");
    assert!(stdout(&out).starts_with("INCOMPLETE"));
    // The certificate is signed and verifies, and it does not say ERASED anywhere.
    run_ok(sh.cmd().args(["cert", "verify"]).arg(&cert));
    assert!(!fs::read_to_string(&cert).unwrap().contains("ERASED"));
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn file_target_is_wiped_in_place_and_removed_on_request() {
    let Some(_guard) = setup() else { return };
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let sh = Safehand::new();
    // One size O_DIRECT can take, one odd size that needs the flush-and-drop-cache path.
    for (name, size) in [("aligned.bin", 3usize << 20), ("odd.bin", (3 << 20) + 123)] {
        let path = dir.path().join(name);
        let marker = b"PUPIL-RECORD-MARKER-7f3a ";
        let content: Vec<u8> = marker.iter().copied().cycle().take(size).collect();
        fs::write(&path, &content).unwrap();
        let target = path.to_str().unwrap();
        let cert = dir.path().join(format!("{name}.json"));
        let out = sh.wipe(target, "one", &cert, &[]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let after = fs::read(&path).unwrap();
        assert_eq!(after.len(), size, "size unchanged");
        assert!(after.iter().all(|b| *b == 0xff), "file holds the pattern");
        let c = certificate(&cert);
        assert_eq!(c["result"], "ERASED");
        assert_eq!(c["device"]["kind"], "file");
        assert_eq!(
            c["nist"]["category"], "none",
            "a file is not a whole medium"
        );
        assert!(
            c["warnings"].to_string().contains("file system"),
            "{}",
            c["warnings"]
        );
        let bypass = c["verification"]["cache_bypass"].as_str().unwrap();
        if size % 4096 == 0 {
            assert_eq!(bypass, "O_DIRECT");
        } else {
            assert!(bypass.contains("fadvise"), "{bypass}");
        }
    }
    // --remove: wiped, verified, then gone.
    let path = dir.path().join("remove-me.txt");
    fs::write(&path, b"secret".repeat(1000)).unwrap();
    let out = sh.wipe(
        path.to_str().unwrap(),
        "zero",
        &dir.path().join("r.json"),
        &["--remove"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        !path.exists(),
        "--remove deletes the file after an ERASED wipe"
    );
    assert!(fs::read_dir(dir.path()).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("000")));
}

#[test]
fn yes_needs_the_matching_serial_and_the_prompt_needs_it_typed() {
    let Some(_guard) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let dev = LoopDevice::new(&dir.path().join("img"), 8 << 20);
    fill_marker(&dev.path, b"DO-NOT-DESTROY-UNCONFIRMED ", 1000);
    let sh = Safehand::new();
    let cert = dir.path().join("c.json");
    // --yes without --expect-serial is a usage error.
    let out = run(sh
        .cmd()
        .args(["wipe", &dev.path, "--method", "zero", "--yes"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // An unknown method is bad usage, before anything is touched.
    let out = run(sh.cmd().args([
        "wipe",
        &dev.path,
        "--method",
        "dod",
        "--yes",
        "--expect-serial",
        &dev.path,
    ]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unknown method `dod`"),
        "{}",
        stderr(&out)
    );
    // --yes with the wrong serial is refused.
    let out = run(sh
        .cmd()
        .args([
            "wipe",
            &dev.path,
            "--method",
            "zero",
            "--yes",
            "--expect-serial",
            "/dev/loop-nope",
            "--certificate",
        ])
        .arg(&cert));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("does not match"), "{}", stderr(&out));
    // The prompt: a wrong answer stops, nothing written.
    let prompt = |answer: &str| -> Output {
        let mut child = sh
            .cmd()
            .args(["wipe", &dev.path, "--method", "zero", "--certificate"])
            .arg(&cert)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(answer.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = prompt("yes\n");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("about to DESTROY") && err.contains(&format!("Type `{}`", dev.path)),
        "{err}"
    );
    assert!(err.contains("nothing was written"), "{err}");
    assert!(!cert.exists());
    assert!(
        contains(&dev.read_all(), b"DO-NOT-DESTROY-UNCONFIRMED"),
        "device untouched"
    );
    // Typing the path confirms.
    let out = prompt(&format!("{}\n", dev.path));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!contains(&dev.read_all(), b"DO-NOT-DESTROY-UNCONFIRMED"));
}

#[test]
fn certificate_verify_show_pdf_and_trusted_key() {
    let Some(_guard) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let dev = LoopDevice::new(&dir.path().join("img"), 8 << 20);
    let sh = Safehand::new();
    let cert = dir.path().join("c.json");
    let out = sh.wipe(
        &dev.path,
        "hmg-is5",
        &cert,
        &[
            "--operator",
            "Jo Bloggs",
            "--organisation",
            "Hilltop Primary",
            "--asset-tag",
            "HT-0099",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let key = sh.public_key();
    assert!(key.starts_with("ed25519:"));
    let key_file = sh.config.path().join("safehand/signing.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        fs::metadata(key_file.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    let ok = run(sh
        .cmd()
        .args(["cert", "verify"])
        .arg(&cert)
        .args(["--trusted-key", &key]));
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("ERASED"));
    // One changed byte anywhere fails.
    let bytes = fs::read(&cert).unwrap();
    for at in [10, bytes.len() / 2, bytes.len() - 5] {
        let mut tampered = bytes.clone();
        tampered[at] = if tampered[at] == b'0' { b'1' } else { b'0' };
        let bad = dir.path().join("tampered.json");
        fs::write(&bad, &tampered).unwrap();
        let out = run(sh.cmd().args(["cert", "verify"]).arg(&bad));
        assert_eq!(
            out.status.code(),
            Some(1),
            "changed byte {at} still verified"
        );
        assert!(stderr(&out).contains("does not verify"), "{}", stderr(&out));
    }
    // Another operator's key is not the trusted one.
    let other = Safehand::new();
    let out = run(sh
        .cmd()
        .args(["cert", "verify"])
        .arg(&cert)
        .args(["--trusted-key", &other.public_key()]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not by the trusted key"),
        "{}",
        stderr(&out)
    );
    // The key can also come from a file.
    let kf = dir.path().join("trusted.pub");
    fs::write(&kf, format!("{key}\n")).unwrap();
    assert!(run(sh
        .cmd()
        .args(["cert", "verify"])
        .arg(&cert)
        .arg("--trusted-key")
        .arg(&kf))
    .status
    .success());
    // show
    let shown = run_ok(sh.cmd().args(["cert", "show"]).arg(&cert));
    for fact in [
        "ERASED",
        "Jo Bloggs",
        "Hilltop Primary",
        "HT-0099",
        &dev.path,
        "hmg-is5",
        "00, ff, random",
    ] {
        assert!(shown.contains(fact), "show lacks {fact}: {shown}");
    }
    // pdf
    let Some(pdftotext) = external_tool("pdftotext") else {
        return;
    };
    let pdf = dir.path().join("c.pdf");
    run_ok(
        sh.cmd()
            .args(["cert", "pdf"])
            .arg(&cert)
            .arg("-o")
            .arg(&pdf),
    );
    let text = run_ok(Command::new(pdftotext).args(["-layout"]).arg(&pdf).arg("-"));
    let c = certificate(&cert);
    for fact in [
        "Certificate of Erasure",
        "Result: ERASED",
        "Clear",
        "Jo Bloggs",
        "Hilltop Primary",
        "HT-0099",
        &dev.path,
        "hmg-is5",
        c["certificate_id"].as_str().unwrap(),
        "Validation (second person)",
        "Signature:",
    ] {
        assert!(text.contains(fact), "PDF lacks {fact}:\n{text}");
    }
    let info = run_ok(Command::new("pdfinfo").arg(&pdf));
    assert!(info.contains("Pages:           1"), "{info}");
    // A tampered certificate gets no PDF.
    let mut tampered = bytes.clone();
    tampered[20] ^= 1;
    fs::write(dir.path().join("t.json"), &tampered).unwrap();
    let out = run(sh
        .cmd()
        .args(["cert", "pdf"])
        .arg(dir.path().join("t.json"))
        .arg("-o")
        .arg(dir.path().join("t.pdf")));
    assert!(!out.status.success());
    assert!(!dir.path().join("t.pdf").exists());
}

#[test]
fn flash_media_are_told_clear_only_and_hidden_areas_are_reported() {
    let Some(_guard) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let dev = LoopDevice::new(&dir.path().join("img"), 8 << 20);
    let sh = Safehand::new();
    dev.set_rotational(false);
    let cert = dir.path().join("flash.json");
    let out = sh.wipe(
        &dev.path,
        "zero",
        &cert,
        &["--pdf", dir.path().join("flash.pdf").to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("reaches NIST SP 800-88 Clear only")
            && err.contains("Purge needs a firmware sanitize"),
        "{err}"
    );
    let c = certificate(&cert);
    assert_eq!(c["device"]["rotational"], false);
    assert!(
        c["warnings"].to_string().contains("Clear only"),
        "{}",
        c["warnings"]
    );
    assert_eq!(c["nist"]["category"], "Clear");
    assert!(c["nist"]["reason"]
        .as_str()
        .unwrap()
        .contains("never Purge"));
    assert_eq!(c["hidden_area"]["status"], "not-applicable");
    // A spinning disk is not given the flash notice.
    dev.set_rotational(true);
    let cert = dir.path().join("hdd.json");
    let out = sh.wipe(&dev.path, "zero", &cert, &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(!stderr(&out).contains("Clear only"));
    assert!(!certificate(&cert)["warnings"]
        .to_string()
        .contains("Clear only"));
}

#[test]
fn progress_is_logged_per_pass_and_exit_code_follows_the_result() {
    let Some(_guard) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let dev = LoopDevice::new(&dir.path().join("img"), 8 << 20);
    let sh = Safehand::new();
    let out = sh.wipe(
        &dev.path,
        "custom:00,ff,random",
        &dir.path().join("a.json"),
        &["--verify", "all"],
    );
    assert_eq!(out.status.code(), Some(0));
    let err = stderr(&out);
    // An existing certificate is never replaced: the second wipe stops before writing.
    let before = dev.read_all();
    let again = sh.wipe(&dev.path, "one", &dir.path().join("a.json"), &[]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    assert!(
        dev.read_all() == before,
        "nothing was written by the refused wipe"
    );
    for n in 1..=3 {
        assert!(
            err.contains(&format!("pass {n}/3 (")),
            "log line for pass {n}: {err}"
        );
        assert!(
            err.contains(&format!(
                "pass {n}/3 verify: read back 8388608 of 8388608 bytes"
            )),
            "{err}"
        );
    }
    assert!(err.contains("MiB/s"));
    // --verify none: written but not confirmed, so not ERASED and not exit 0.
    let cert = dir.path().join("n.json");
    let out = sh.wipe(&dev.path, "zero", &cert, &["--verify", "none"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert_eq!(certificate(&cert)["result"], "UNVERIFIED");
    // The help documents the codes.
    let help = run_ok(sh.cmd().args(["wipe", "--help"]));
    for code in [
        "0 ",
        "3 ",
        "4 ",
        "5 ",
        "ERASED",
        "FAILED",
        "INCOMPLETE",
        "UNVERIFIED",
    ] {
        assert!(help.contains(code), "wipe --help lacks {code}: {help}");
    }
}

/// Reads a whole file (for recovered-file scans).
fn read(path: &Path) -> Vec<u8> {
    let mut data = Vec::new();
    if let Ok(mut f) = fs::File::open(path) {
        let _ = f.read_to_end(&mut data);
    }
    data
}

#[test]
fn a_terminal_gets_a_progress_bar_per_pass_with_throughput_and_time_left() {
    let Some(_guard) = setup() else { return };
    let Some(script) = external_tool("script") else {
        return;
    };
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let dev = LoopDevice::new(&shm.path().join("img"), 256 << 20);
    let sh = Safehand::new();
    let cert = shm.path().join("c.json");
    // `script` gives the wipe a pseudo-terminal, as an operator at a console has.
    let command = format!(
        "{} wipe {} --method custom:00,random --verify all --yes --expect-serial {} --certificate {}",
        workspace_binary("safehand").display(),
        dev.path,
        dev.path,
        cert.display()
    );
    let out = run(Command::new(script)
        .env("XDG_CONFIG_HOME", sh.config.path())
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::null()));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let screen = stdout(&out);
    for bar in [
        "pass 1/2 write 00 [",
        "pass 1/2 verify 00 [",
        "pass 2/2 write random [",
        "pass 2/2 verify random [",
    ] {
        assert!(screen.contains(bar), "no progress bar `{bar}`: {screen}");
    }
    assert!(
        screen.contains("MiB/s") && screen.contains(" left"),
        "throughput and time left: {screen}"
    );
}

#[test]
fn data_the_medium_lost_after_writing_is_caught_by_verification() {
    let Some(_guard) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let dev = LoopDevice::new(&dir.path().join("img"), 8 << 20);
    let sh = Safehand::new();
    let hooks = dir.path().join("hooks");
    fs::create_dir(&hooks).unwrap();
    for method in ["zero", "random"] {
        let cert = dir.path().join(format!("{method}.json"));
        let child = sh
            .cmd()
            .args([
                "wipe",
                &dev.path,
                "--method",
                method,
                "--yes",
                "--expect-serial",
                &dev.path,
                "--certificate",
            ])
            .arg(&cert)
            .env("SAFEHAND_WIPE_TEST_DIR", &hooks)
            .env("SAFEHAND_WIPE_TEST_BEFORE_VERIFY", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for(&hooks.join("before-verify-1"));
        // Behind the block layer: the backing file loses 8 KiB at 1 MiB after the wipe wrote
        // it, as a failing or lying medium would. A read-back from the page cache would miss it.
        {
            use std::os::unix::fs::FileExt;
            let backing = fs::OpenOptions::new()
                .write(true)
                .open(&dev.backing)
                .unwrap();
            backing.write_all_at(&[b'A'; 8192], 1 << 20).unwrap();
            backing.sync_all().unwrap();
        }
        fs::write(hooks.join("verify-1"), b"").unwrap();
        let out = child.wait_with_output().unwrap();
        fs::remove_file(hooks.join("before-verify-1")).unwrap();
        fs::remove_file(hooks.join("verify-1")).unwrap();
        assert_eq!(out.status.code(), Some(3), "{method}: {}", stderr(&out));
        let c = certificate(&cert);
        assert_eq!(c["result"], "FAILED");
        let pass = &c["passes"][0];
        assert_eq!(
            pass["write_errors"].as_array().unwrap().len(),
            0,
            "the writes themselves succeeded"
        );
        let v = &pass["verification"];
        assert_eq!(v["result"], "failed");
        assert_eq!(v["mismatches"].as_array().unwrap().len(), 1, "{v}");
        assert_eq!(v["mismatches"][0]["start"], 1 << 20);
        assert_eq!(v["mismatches"][0]["end"], (1 << 20) + 8192);
        assert!(stderr(&out).contains("FAILED"), "{}", stderr(&out));
    }
}
