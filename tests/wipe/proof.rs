//! Proof that it erases: files planted on ext4 are recoverable before the wipe (by grep,
//! photorec and foremost), gone after a full wipe, and still there after a wipe stopped
//! half-way (whose certificate says INCOMPLETE).

use std::fs;
use std::path::Path;
use std::process::Stdio;

use super::*;

const DEVICE_SIZE: u64 = 64 << 20;
/// Written first so the planted files land in the second half of the device.
const FILLER: usize = 36 << 20;

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A valid 96x96 RGB PNG (stored deflate blocks) whose pixels spell the marker.
fn png_with(marker: &str) -> Vec<u8> {
    let (w, h) = (96u32, 96u32);
    let mut text = marker.bytes().cycle();
    let raw: Vec<u8> = (0..h)
        .flat_map(|_| {
            std::iter::once(0)
                .chain((0..w * 3).map(|_| text.next().unwrap_or(b'x')))
                .collect::<Vec<u8>>()
        })
        .collect();
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65535).collect();
    for (i, block) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        z.extend_from_slice(&(block.len() as u16).to_le_bytes());
        z.extend_from_slice(&(!(block.len() as u16)).to_le_bytes());
        z.extend_from_slice(block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &raw {
        a = (a + byte as u32) % 65521;
        b = (b + a) % 65521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    png_chunk(&mut out, b"tEXt", format!("Comment\0{marker}").as_bytes());
    png_chunk(&mut out, b"IDAT", &z);
    png_chunk(&mut out, b"IEND", b"");
    out
}

/// A one-page PDF whose text is the marker, repeated (written like Safehand's own PDFs).
fn pdf_with(marker: &str) -> Vec<u8> {
    let mut content = String::new();
    for i in 0..400 {
        let y = (800 - (i % 90) * 9) as f32;
        safehand_crypto::pdf::show_text(
            &mut content,
            "F1",
            8.0,
            20.0,
            y,
            &format!("{marker} line {i}"),
        );
    }
    safehand_crypto::pdf::assemble(&[content], 595.0, 842.0, marker)
}

/// ext4 on the device with a filler file, then PNG, PDF and text files carrying markers.
fn plant(dev: &LoopDevice, dir: &Path) -> Vec<String> {
    // 4 KiB blocks: one block group, so ext4 allocates the files after the filler.
    run_ok(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-b", "4096"])
            .arg(&dev.path),
    );
    let mnt = dir.join("mnt");
    let mounted = Mounted::new(&dev.path, &mnt);
    fs::write(mnt.join("filler.bin"), vec![0u8; FILLER]).unwrap();
    run_ok(&mut Command::new("sync"));
    let mut markers = Vec::new();
    for i in 0..3 {
        let m = format!("SAFEHAND-CANARY-PNG-{i}-4b1d");
        fs::write(mnt.join(format!("photo{i}.png")), png_with(&m)).unwrap();
        markers.push(m);
        let m = format!("SAFEHAND-CANARY-PDF-{i}-93ce");
        fs::write(mnt.join(format!("report{i}.pdf")), pdf_with(&m)).unwrap();
        markers.push(m);
        let m = format!("SAFEHAND-CANARY-TXT-{i}-a07f");
        fs::write(
            mnt.join(format!("pupil{i}.txt")),
            format!("Pupil record. {m}\n").repeat(200),
        )
        .unwrap();
        markers.push(m);
    }
    drop(mounted);
    markers
}

/// Files photorec and foremost carve from the device that contain one of the markers.
fn carved_planted_files(dev: &LoopDevice, work: &Path, markers: &[String]) -> (usize, usize) {
    let photorec = external_tool("photorec").expect("photorec (testdisk) is needed");
    let foremost = external_tool("foremost").expect("foremost is needed");
    let _ = fs::remove_dir_all(work);
    fs::create_dir_all(work.join("photorec")).unwrap();
    let out = run(Command::new("timeout")
        .arg("300")
        .arg(photorec)
        .args(["/log", "/d"])
        .arg(work.join("photorec/r"))
        .args([
            "/cmd",
            &dev.path,
            "partition_none,options,paranoid,fileopt,everything,enable,search",
        ])
        .current_dir(work)
        .env("TERM", "dumb")
        .stdin(Stdio::null()));
    assert!(out.status.success(), "photorec failed: {}", stderr(&out));
    let out = run(Command::new("timeout")
        .arg("300")
        .arg(foremost)
        .args(["-i", &dev.path, "-o"])
        .arg(work.join("foremost")));
    assert!(out.status.success(), "foremost failed: {}", stderr(&out));
    let count = |root: &Path| -> usize {
        let mut n = 0;
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let data = read(&p);
                    if markers.iter().any(|m| contains(&data, m.as_bytes())) {
                        n += 1;
                    }
                }
            }
        }
        n
    };
    (count(&work.join("photorec")), count(&work.join("foremost")))
}

fn markers_on(dev: &LoopDevice, markers: &[String]) -> Vec<String> {
    let raw = dev.read_all();
    markers
        .iter()
        .filter(|m| contains(&raw, m.as_bytes()))
        .cloned()
        .collect()
}

#[test]
fn a_full_wipe_leaves_nothing_for_grep_photorec_or_foremost() {
    let Some(_guard) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let dev = LoopDevice::new(&dir.path().join("img"), DEVICE_SIZE);
    let markers = plant(&dev, dir.path());
    // Control: before the wipe every marker is on the device and both tools recover files.
    assert_eq!(
        markers_on(&dev, &markers).len(),
        markers.len(),
        "all markers are on the raw device before the wipe"
    );
    let (photorec, foremost) = carved_planted_files(&dev, &dir.path().join("before"), &markers);
    assert!(
        photorec >= 3,
        "photorec must recover planted files before the wipe (got {photorec})"
    );
    assert!(
        foremost >= 3,
        "foremost must recover planted files before the wipe (got {foremost})"
    );

    let sh = Safehand::new();
    let cert = dir.path().join("c.json");
    let out = sh.wipe(&dev.path, "nist-clear", &cert, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(certificate(&cert)["result"], "ERASED");
    assert!(
        markers_on(&dev, &markers).is_empty(),
        "no marker anywhere on the raw device after the wipe"
    );
    let (photorec, foremost) = carved_planted_files(&dev, &dir.path().join("after"), &markers);
    assert_eq!(
        (photorec, foremost),
        (0, 0),
        "no planted file is recoverable after the wipe"
    );
}

#[test]
fn a_wipe_stopped_half_way_leaves_data_and_says_incomplete() {
    let Some(_guard) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let dev = LoopDevice::new(&dir.path().join("img"), DEVICE_SIZE);
    let markers = plant(&dev, dir.path());
    let raw = dev.read_all();
    let half = (DEVICE_SIZE / 2) as usize;
    for m in &markers {
        assert!(
            contains(&raw[half..], m.as_bytes()) && !contains(&raw[..half], m.as_bytes()),
            "precondition: planted file {m} lies in the second half of the device"
        );
    }
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
            "zero",
            "--yes",
            "--expect-serial",
            &dev.path,
            "--certificate",
        ])
        .arg(&cert)
        .env("SAFEHAND_WIPE_TEST_DIR", &hooks)
        .env("SAFEHAND_WIPE_TEST_PAUSE_AT", (DEVICE_SIZE / 2).to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&hooks.join("paused"));
    run_ok(Command::new("kill").args(["-TERM", &child.id().to_string()]));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let c = certificate(&cert);
    assert_eq!(c["result"], "INCOMPLETE");
    assert_eq!(c["passes"][0]["bytes_written"], DEVICE_SIZE / 2);
    // The first half is zeros, and the planted files in the second half are still there.
    let raw = dev.read_all();
    assert!(
        raw[..(DEVICE_SIZE / 2) as usize].iter().all(|b| *b == 0),
        "the first half was wiped"
    );
    let left = markers_on(&dev, &markers);
    assert_eq!(
        left.len(),
        markers.len(),
        "markers survive a wipe stopped half-way"
    );
    let (photorec, foremost) = carved_planted_files(&dev, &dir.path().join("carve"), &markers);
    assert!(
        photorec >= 3 && foremost >= 3,
        "tools still recover planted files ({photorec}, {foremost})"
    );
}
