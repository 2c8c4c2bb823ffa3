//! What the operator asked to wipe: identify it, refuse it when it is in use, open it.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use safehand_crypto::certificate::DeviceFacts;

use super::device::{block_dev_of, list_devices, BlockDevice, SystemUse};
use super::engine::Medium;

/// A target identified before anything is written.
#[derive(Debug)]
pub struct Target {
    /// The path as the operator typed it.
    pub path: PathBuf,
    /// Facts for the certificate.
    pub facts: DeviceFacts,
    /// The block device, when the target is one.
    pub device: Option<BlockDevice>,
}

impl Target {
    /// What the operator must type (or pass to `--expect-serial`) to confirm: the serial for
    /// disks and partitions that report one; the path for files, loop devices and disks
    /// without a serial.
    pub fn confirmation_text(&self) -> String {
        match (&self.facts.kind[..], &self.facts.serial) {
            ("disk" | "partition", Some(serial)) => serial.clone(),
            _ => self.path.display().to_string(),
        }
    }

    /// Whether `given` names this target (`--expect-serial` or the typed confirmation).
    pub fn confirms(&self, given: &str) -> bool {
        let given = given.trim();
        if given.is_empty() {
            return false;
        }
        if given == self.confirmation_text() {
            return true;
        }
        // For path-confirmed targets, accept any spelling of the same path.
        if self.facts.serial.is_none() || !matches!(&self.facts.kind[..], "disk" | "partition") {
            let canonical = std::fs::canonicalize(&self.path).ok();
            return canonical.is_some() && std::fs::canonicalize(given).ok() == canonical;
        }
        false
    }

    /// The target is a regular file.
    pub fn is_file(&self) -> bool {
        self.facts.kind == "file"
    }
}

/// Identifies TARGET: a block device (disk, partition, loop) or a regular file.
pub fn identify(path: &Path) -> anyhow::Result<Target> {
    let meta = std::fs::metadata(path).with_context(|| {
        format!(
            "cannot open {}: check the path (see `safehand devices`)",
            path.display()
        )
    })?;
    let file_type = meta.file_type();
    if file_type.is_file() {
        let size = meta.len();
        return Ok(Target {
            path: path.to_path_buf(),
            facts: DeviceFacts {
                path: path.display().to_string(),
                kind: "file".into(),
                model: None,
                serial: None,
                size_bytes: size,
                logical_sector_size: 512,
                physical_sector_size: meta.blksize(),
                transport: "file".into(),
                rotational: None,
                removable: None,
            },
            device: None,
        });
    }
    if !file_type.is_block_device() {
        bail!(
            "{} is not a disk, partition, loop device or regular file; `safehand devices` lists what can be wiped",
            path.display()
        );
    }
    let dev = block_dev_of(path).unwrap_or_default();
    let devices = list_devices().context("cannot list block devices from /sys/class/block")?;
    let Some(device) = devices.into_iter().find(|d| d.dev == dev) else {
        bail!(
            "{} is a block device the kernel does not list in /sys/class/block (or it is empty); \
             Safehand only wipes devices it can identify",
            path.display()
        );
    };
    Ok(Target {
        path: path.to_path_buf(),
        facts: DeviceFacts {
            path: path.display().to_string(),
            kind: device.kind.clone(),
            model: device.model.clone(),
            serial: device.serial.clone(),
            size_bytes: device.size_bytes,
            logical_sector_size: device.logical_sector_size,
            physical_sector_size: device.physical_sector_size,
            transport: device.transport.clone(),
            rotational: device.rotational,
            removable: device.removable,
        },
        device: Some(device),
    })
}

/// Why the target must not be wiped now, and what to do, if anything stands in the way.
pub fn refusal(target: &Target) -> Option<String> {
    if let Some(device) = &target.device {
        if device.holds_running_system {
            return Some(format!(
                "refusing to wipe {}: it holds the running system (the / file system is on it). \
                 Boot the computer from other media (e.g. a live USB stick) and wipe it from there.",
                target.path.display()
            ));
        }
        if !device.in_use.is_empty() {
            let advice = if device.in_use.iter().any(|r| r.contains("mounted")) {
                "Unmount it first (`umount MOUNTPOINT` for each mount point above) and try again."
            } else if device.in_use.iter().any(|r| r.contains("swap")) {
                "Stop using it as swap first (`swapoff DEVICE`) and try again."
            } else {
                "Release it first (e.g. `vgchange -an`, `mdadm --stop` or `cryptsetup close`) and try again."
            };
            return Some(format!(
                "refusing to wipe {}: {}. {advice}",
                target.path.display(),
                device.in_use.join("; ")
            ));
        }
        if device.read_only {
            return Some(format!(
                "refusing to wipe {}: the device is read-only (write-protect switch or `blockdev --setro`); \
                 make it writable and try again.",
                target.path.display()
            ));
        }
    } else {
        let usage = SystemUse::read();
        let canonical = std::fs::canonicalize(&target.path).unwrap_or_else(|_| target.path.clone());
        if usage.swap_files.contains(&canonical) {
            return Some(format!(
                "refusing to wipe {}: it is in use as a swap file. Run `swapoff {}` first and try again.",
                target.path.display(),
                target.path.display()
            ));
        }
    }
    None
}

/// Opens the target for overwriting: `O_DIRECT` where possible, exclusive for block devices
/// (the kernel then refuses if anything mounted or claimed it meanwhile).
pub fn open(target: &Target) -> anyhow::Result<Medium> {
    let block_device = target.device.is_some();
    let size = target.facts.size_bytes;
    let flags = if block_device { libc::O_EXCL } else { 0 };
    // A file whose size is not a multiple of 4 KiB cannot take O_DIRECT writes at its tail.
    let try_direct = block_device || size % 4096 == 0;
    let open_with = |extra: i32| -> std::io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(flags | extra)
            .open(&target.path)
    };
    let (mut file, direct) = match try_direct.then(|| open_with(libc::O_DIRECT)) {
        Some(Ok(file)) => (file, true),
        Some(Err(e)) if e.raw_os_error() == Some(libc::EBUSY) => {
            bail!(
                "{} is busy (mounted or in use by the kernel); unmount or release it and try again",
                target.path.display()
            )
        }
        _ => (
            open_with(0)
                .with_context(|| format!("cannot open {} for writing", target.path.display()))?,
            false,
        ),
    };
    // The size the kernel reports right now wins over the listing (a file may have changed).
    let actual = file
        .seek(SeekFrom::End(0))
        .context("cannot find the target's size")?;
    if actual != size {
        bail!(
            "{} changed size while it was being identified ({size} -> {actual} bytes); try again",
            target.path.display()
        );
    }
    Ok(Medium { file, direct, size })
}
