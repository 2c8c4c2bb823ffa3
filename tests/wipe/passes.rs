//! Every method's pass list checked against a read-back of the device after each pass.

use std::fs;
use std::process::Stdio;

use super::*;

/// The smallest repeating unit of the device's content (up to 64 bytes), if it has one.
fn period(data: &[u8]) -> Option<Vec<u8>> {
    (1..=64usize)
        .find(|&l| data.len() >= l && data.chunks(l).all(|c| c == &data[..c.len()]))
        .map(|l| data[..l].to_vec())
}

fn minimal_unit(pattern: &[u8]) -> Vec<u8> {
    period(pattern).unwrap_or_else(|| pattern.to_vec())
}

struct Snapshot {
    unit: Option<Vec<u8>>,
    digest: Vec<u8>,
    byte_counts: [u64; 256],
}

fn snapshot(data: &[u8]) -> Snapshot {
    use sha2::Digest;
    let mut byte_counts = [0u64; 256];
    for b in data {
        byte_counts[*b as usize] += 1;
    }
    Snapshot {
        unit: period(data),
        digest: sha2::Sha256::digest(data).to_vec(),
        byte_counts,
    }
}

fn check_method(method: &str, extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    // An odd size (not a multiple of 4 MiB or of a 3-byte pattern block): the tail is the usual bug.
    let size: u64 = (9 << 20) + (12 << 10);
    let dev = LoopDevice::new(&dir.path().join("img"), size);
    fill_marker(&dev.path, b"BEFORE-WIPE ", 1000);
    let hooks = dir.path().join("hooks");
    fs::create_dir(&hooks).unwrap();
    let sh = Safehand::new();
    let cert = dir.path().join("c.json");
    let mut child = sh
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
        .args(extra)
        .env("SAFEHAND_WIPE_TEST_DIR", &hooks)
        .env("SAFEHAND_WIPE_TEST_STEP", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut snapshots = Vec::new();
    let mut n = 1;
    loop {
        let marker = hooks.join(format!("after-pass-{n}"));
        let deadline = Instant::now() + Duration::from_secs(120);
        while !marker.exists() {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{method}: pass {n} never finished"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        if !marker.exists() {
            break;
        }
        let data = dev.read_all();
        assert_eq!(data.len() as u64, size);
        snapshots.push(snapshot(&data));
        fs::write(hooks.join(format!("continue-{n}")), b"").unwrap();
        n += 1;
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{method}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = certificate(&cert);
    assert_eq!(c["result"], "ERASED");
    let list: Vec<String> = c["method"]["pass_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        list.len(),
        snapshots.len(),
        "{method}: one read-back per pass in the list"
    );
    assert_eq!(c["passes"].as_array().unwrap().len(), list.len());
    for (i, (pattern, snap)) in list.iter().zip(&snapshots).enumerate() {
        let pass = &c["passes"][i];
        assert_eq!(pass["pattern"].as_str().unwrap(), pattern);
        assert_eq!(pass["bytes_written"], size);
        if pattern == "random" {
            assert!(
                snap.unit.is_none(),
                "{method} pass {}: random pass left a repeating pattern",
                i + 1
            );
            let mean = size as f64 / 256.0;
            assert!(
                snap.byte_counts
                    .iter()
                    .all(|&c| (c as f64 - mean).abs() < mean * 0.1),
                "{method} pass {}: random pass is not uniform",
                i + 1
            );
            assert!(pass["seed_sha256"].as_str().unwrap().len() == 64);
            assert!(
                snapshots[..i].iter().all(|s| s.digest != snap.digest),
                "{method} pass {}: random pass repeated earlier content",
                i + 1
            );
        } else {
            let bytes = hex::decode(pattern).unwrap();
            assert_eq!(
                snap.unit.as_deref(),
                Some(&minimal_unit(&bytes)[..]),
                "{method} pass {}: device does not hold {pattern} repeated",
                i + 1
            );
        }
    }
}

#[test]
fn every_method_writes_its_pass_list_and_each_pass_reads_back() {
    let Some(_guard) = setup() else { return };
    for (method, extra) in [
        ("zero", &[][..]),
        ("one", &["--blank"][..]),
        ("random", &[][..]),
        ("nist-clear", &[][..]),
        ("dod-3", &[][..]),
        ("dod-7", &[][..]),
        ("hmg-is5", &[][..]),
        ("gutmann", &[][..]),
        ("custom:00,ff,random,55aa,924924", &["--passes", "2"][..]),
    ] {
        check_method(method, extra);
    }
}

#[test]
fn pass_lists_follow_the_standards() {
    let Some(_guard) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let dev = LoopDevice::new(&dir.path().join("img"), 1 << 20);
    let sh = Safehand::new();
    let list = |method: &str, extra: &[&str]| -> (Vec<String>, serde_json::Value) {
        let cert = dir
            .path()
            .join(format!("{}.json", method.replace([':', ','], "_")));
        let out = sh.wipe(&dev.path, method, &cert, extra);
        assert_eq!(out.status.code(), Some(0), "{method}: {}", stderr(&out));
        let c = certificate(&cert);
        let l = c["method"]["pass_list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect();
        (l, c)
    };
    let inv = |h: &str| format!("{:02x}", !u8::from_str_radix(h, 16).unwrap());
    assert_eq!(list("zero", &[]).0, ["00"]);
    assert_eq!(list("one", &["--blank"]).0, ["ff", "00"]);
    assert_eq!(list("random", &[]).0, ["random"]);
    let (l, c) = list("nist-clear", &["--verify", "none"]);
    assert_eq!(l, ["random"]);
    assert_eq!(
        c["passes"][0]["verification"]["result"], "passed",
        "nist-clear always verifies"
    );
    let (l, _) = list("dod-3", &[]);
    assert_eq!(l.len(), 3);
    assert_eq!(l[1], inv(&l[0]), "dod-3: pattern then its complement");
    assert_eq!(l[2], "random");
    let (l, _) = list("dod-7", &[]);
    assert_eq!(l.len(), 7);
    assert_eq!(l[1], inv(&l[0]));
    assert_eq!(l[2], "random");
    assert_eq!(l[5], inv(&l[4]));
    assert_eq!(l[6], "random");
    let (l, c) = list("hmg-is5", &["--verify", "none"]);
    assert_eq!(l, ["00", "ff", "random"]);
    assert_eq!(
        c["passes"][2]["verification"]["result"], "passed",
        "IS5 verifies its random pass"
    );
    let (l, _) = list("gutmann", &[]);
    assert_eq!(l.len(), 35);
    // Even 35 passes fit the one-page PDF for signing.
    if let Some(pdfinfo) = external_tool("pdfinfo") {
        let pdf = dir.path().join("gutmann.pdf");
        run_ok(
            sh.cmd()
                .args(["cert", "pdf"])
                .arg(dir.path().join("gutmann.json"))
                .arg("-o")
                .arg(&pdf),
        );
        let info = run_ok(Command::new(pdfinfo).arg(&pdf));
        assert!(info.contains("Pages:           1"), "{info}");
    }
    assert!(l[..4].iter().chain(&l[31..]).all(|p| p == "random"));
    let mut middle: Vec<String> = l[4..31].to_vec();
    middle.sort();
    let mut expected: Vec<String> = [
        "55", "aa", "924924", "492492", "249249", "924924", "492492", "249249", "6db6db", "b6db6d",
        "db6db6",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain((0..16u8).map(|n| format!("{:02x}", n * 0x11)))
    .collect();
    expected.sort();
    assert_eq!(middle, expected);
    let (l, c) = list(
        "custom:00,ff,random,55aa",
        &["--passes", "2", "--verify", "all"],
    );
    assert_eq!(
        l,
        ["00", "ff", "random", "55aa", "00", "ff", "random", "55aa"]
    );
    assert!(c["passes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["verification"]["result"] == "passed"));
}
