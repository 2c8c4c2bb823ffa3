//! Block-device discovery from /sys/class/block, /proc/self/mountinfo, /proc/swaps, holders
//! and the udev database: the facts `safehand devices` prints and `safehand wipe` checks.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

/// One block device (disk, partition or loop device) and whether anything uses it.
#[derive(Debug, Clone, Serialize)]
pub struct BlockDevice {
    /// Kernel name (`sda`, `sda1`, `nvme0n1`, `loop3`).
    pub name: String,
    /// `/dev/<name>`.
    pub path: String,
    /// `disk`, `partition` or `loop`.
    pub kind: String,
    /// `major:minor`.
    pub dev: String,
    /// The whole disk a partition belongs to.
    pub parent: Option<String>,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Logical sector size in bytes (the unit of addressing).
    pub logical_sector_size: u64,
    /// Physical sector size in bytes (the unit the medium writes).
    pub physical_sector_size: u64,
    /// Model, from sysfs or the udev database.
    pub model: Option<String>,
    /// Serial number, from udev, sysfs or SCSI VPD page 0x80.
    pub serial: Option<String>,
    /// `sata`, `nvme`, `usb`, `mmc`, `virtio`, `scsi`, `loop`, ...
    pub transport: String,
    /// Spinning disk (true) or flash/SSD (false), as the kernel reports it.
    pub rotational: Option<bool>,
    /// Removable medium (USB sticks, card readers), as the kernel reports it.
    pub removable: Option<bool>,
    /// Read-only (write-protect switch or `blockdev --setro`).
    pub read_only: bool,
    /// For loop devices: the file behind it.
    pub backing_file: Option<String>,
    /// Partitions of a disk (kernel names).
    pub partitions: Vec<String>,
    /// Where this device itself is mounted.
    pub mountpoints: Vec<String>,
    /// Everything that makes it unsafe to wipe, for it and its partitions, in words.
    pub in_use: Vec<String>,
    /// True for the disk holding `/`.
    pub holds_running_system: bool,
}

fn read_trimmed(path: impl AsRef<Path>) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn read_u64(path: impl AsRef<Path>) -> Option<u64> {
    read_trimmed(path).and_then(|s| s.parse().ok())
}

fn dev_string(rdev: u64) -> String {
    format!("{}:{}", rustix::fs::major(rdev), rustix::fs::minor(rdev))
}

/// Decodes the `\040`-style escapes in /proc mount tables.
fn unescape_octal(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `major:minor` of a device node path, if it is a block device.
pub fn block_dev_of(path: &Path) -> Option<String> {
    let meta = fs::metadata(path).ok()?;
    meta.file_type()
        .is_block_device()
        .then(|| dev_string(meta.rdev()))
}

/// What the system is using: mounts by device number, swap devices and swap files.
#[derive(Debug, Default)]
pub struct SystemUse {
    /// `major:minor` -> mount points.
    pub mounts: HashMap<String, Vec<String>>,
    /// `major:minor` of swap devices in use.
    pub swap_devices: Vec<String>,
    /// Swap files in use (canonical paths).
    pub swap_files: Vec<PathBuf>,
    /// `major:minor` of the file system holding `/`.
    pub root_dev: Option<String>,
}

impl SystemUse {
    /// Reads the mount table and the swap list now.
    pub fn read() -> Self {
        let mut usage = SystemUse::default();
        if let Ok(text) = fs::read_to_string("/proc/self/mountinfo") {
            for line in text.lines() {
                let fields: Vec<&str> = line.split(' ').collect();
                if fields.len() < 5 {
                    continue;
                }
                let mountpoint = unescape_octal(fields[4]);
                let mut devs = vec![fields[2].to_string()];
                // The mount source (after " - fstype ") names the device for file systems
                // whose st_dev is anonymous (btrfs): resolve it to its device number too.
                if let Some(dash) = fields.iter().position(|f| *f == "-") {
                    if let Some(source) = fields.get(dash + 2) {
                        let source = unescape_octal(source);
                        if source.starts_with("/dev/") {
                            if let Some(dev) = block_dev_of(Path::new(&source)) {
                                devs.push(dev);
                            }
                        }
                    }
                }
                devs.dedup();
                for dev in devs {
                    if mountpoint == "/" {
                        usage.root_dev.get_or_insert(dev.clone());
                    }
                    let list = usage.mounts.entry(dev).or_default();
                    if !list.contains(&mountpoint) {
                        list.push(mountpoint.clone());
                    }
                }
            }
        }
        if let Ok(text) = fs::read_to_string("/proc/swaps") {
            for line in text.lines().skip(1) {
                if let Some(name) = line.split_whitespace().next() {
                    let path = PathBuf::from(unescape_octal(name));
                    match block_dev_of(&path) {
                        Some(dev) => usage.swap_devices.push(dev),
                        None => usage
                            .swap_files
                            .push(fs::canonicalize(&path).unwrap_or(path)),
                    }
                }
            }
        }
        usage
    }
}

fn transport_of(name: &str, sys_path: &str) -> String {
    let checks = [
        ("/usb", "usb"),
        ("/nvme", "nvme"),
        ("/mmc", "mmc"),
        ("/ata", "sata"),
        ("/virtio", "virtio"),
        ("/sas", "sas"),
        ("/scsi", "scsi"),
        ("/host", "scsi"),
    ];
    if name.starts_with("loop") {
        return "loop".into();
    }
    for (needle, transport) in checks {
        if sys_path.contains(needle) {
            return transport.into();
        }
    }
    if sys_path.contains("/virtual/") {
        return "virtual".into();
    }
    "unknown".into()
}

/// The udev database's properties for a device (`E:KEY=VALUE` lines).
fn udev_properties(dev: &str) -> HashMap<String, String> {
    let mut map = HashMap::new();
    if let Ok(text) = fs::read_to_string(format!("/run/udev/data/b{dev}")) {
        for line in text.lines() {
            if let Some((key, value)) = line.strip_prefix("E:").and_then(|l| l.split_once('=')) {
                map.insert(key.to_string(), value.to_string());
            }
        }
    }
    map
}

fn serial_from_vpd(path: &Path) -> Option<String> {
    let data = fs::read(path).ok()?;
    let text: String = data
        .get(4..)?
        .iter()
        .filter(|b| b.is_ascii_graphic())
        .map(|b| *b as char)
        .collect();
    (!text.is_empty()).then_some(text)
}

/// Every block device the kernel knows, except empty loop devices and RAM disks.
pub fn list_devices() -> std::io::Result<Vec<BlockDevice>> {
    let usage = SystemUse::read();
    let mut devices = Vec::new();
    for entry in fs::read_dir("/sys/class/block")? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("ram") || name.starts_with("zram") {
            continue;
        }
        let sys = entry.path();
        let real = fs::canonicalize(&sys).unwrap_or_else(|_| sys.clone());
        let real_text = real.to_string_lossy().into_owned();
        let is_partition = sys.join("partition").exists();
        let parent = if is_partition {
            real.parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
        } else {
            None
        };
        let disk_sys = match &parent {
            Some(p) => PathBuf::from("/sys/class/block").join(p),
            None => sys.clone(),
        };
        let size_bytes = read_u64(sys.join("size")).unwrap_or(0) * 512;
        if size_bytes == 0 {
            continue;
        }
        let dev = read_trimmed(sys.join("dev")).unwrap_or_default();
        let udev = udev_properties(&dev);
        let model = read_trimmed(disk_sys.join("device/model"))
            .or_else(|| udev.get("ID_MODEL").cloned())
            .map(|m| m.replace('_', " "));
        let serial = udev
            .get("ID_SERIAL_SHORT")
            .cloned()
            .or_else(|| read_trimmed(disk_sys.join("device/serial")))
            .or_else(|| serial_from_vpd(&disk_sys.join("device/vpd_pg80")));
        let kind = if is_partition {
            "partition"
        } else if name.starts_with("loop") {
            "loop"
        } else {
            "disk"
        };
        devices.push(BlockDevice {
            path: format!("/dev/{name}"),
            kind: kind.into(),
            parent,
            size_bytes,
            logical_sector_size: read_u64(disk_sys.join("queue/logical_block_size")).unwrap_or(512),
            physical_sector_size: read_u64(disk_sys.join("queue/physical_block_size"))
                .unwrap_or(512),
            model,
            serial,
            transport: transport_of(&name, &real_text),
            rotational: read_u64(disk_sys.join("queue/rotational")).map(|v| v == 1),
            removable: read_u64(disk_sys.join("removable")).map(|v| v == 1),
            read_only: read_u64(sys.join("ro")) == Some(1),
            backing_file: read_trimmed(sys.join("loop/backing_file")),
            partitions: Vec::new(),
            mountpoints: usage.mounts.get(&dev).cloned().unwrap_or_default(),
            in_use: Vec::new(),
            holds_running_system: false,
            dev,
            name,
        });
    }
    devices.sort_by(|a, b| a.name.cmp(&b.name));
    // Partitions to their disks.
    let names: Vec<(String, Option<String>)> = devices
        .iter()
        .map(|d| (d.name.clone(), d.parent.clone()))
        .collect();
    for device in &mut devices {
        device.partitions = names
            .iter()
            .filter(|(_, p)| p.as_deref() == Some(&device.name))
            .map(|(n, _)| n.clone())
            .collect();
    }
    // The disks under the root file system (through dm/md holders, via their slaves).
    let root_disks = usage
        .root_dev
        .as_deref()
        .map(disks_under)
        .unwrap_or_default();
    // What uses each device itself.
    let own_use: HashMap<String, Vec<String>> = devices
        .iter()
        .map(|d| {
            let mut reasons = Vec::new();
            for mountpoint in &d.mountpoints {
                reasons.push(format!("{} is mounted at {mountpoint}", d.path));
            }
            if usage.swap_devices.contains(&d.dev) {
                reasons.push(format!("{} is in use as swap", d.path));
            }
            let holders = holders_of(&d.name);
            if !holders.is_empty() {
                reasons.push(format!(
                    "{} is held by {} (LVM, RAID or encryption)",
                    d.path,
                    holders
                        .iter()
                        .map(|h| format!("/dev/{h}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            (d.name.clone(), reasons)
        })
        .collect();
    for device in &mut devices {
        let mut reasons = own_use.get(&device.name).cloned().unwrap_or_default();
        for part in &device.partitions {
            reasons.extend(own_use.get(part).cloned().unwrap_or_default());
        }
        let whole_disk = device.parent.as_deref().unwrap_or(&device.name).to_string();
        if device.parent.is_none() && root_disks.contains(&whole_disk) {
            device.holds_running_system = true;
            reasons.push(format!(
                "{} holds the running system (the / file system is on it)",
                device.path
            ));
        }
        device.in_use = reasons;
    }
    Ok(devices)
}

fn holders_of(name: &str) -> Vec<String> {
    fs::read_dir(format!("/sys/class/block/{name}/holders"))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The whole disks a device number lives on (following dm/md slaves down).
fn disks_under(dev: &str) -> Vec<String> {
    let Ok(sys) = fs::canonicalize(format!("/sys/dev/block/{dev}")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    collect_disks(&sys, &mut out, 0);
    out
}

fn collect_disks(sys: &Path, out: &mut Vec<String>, depth: u32) {
    if depth > 8 {
        return;
    }
    let name = sys
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let slaves: Vec<PathBuf> = fs::read_dir(sys.join("slaves"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| fs::canonicalize(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    if !slaves.is_empty() {
        for slave in slaves {
            collect_disks(&slave, out, depth + 1);
        }
    } else if sys.join("partition").exists() {
        if let Some(parent) = sys.parent().and_then(|p| p.file_name()) {
            out.push(parent.to_string_lossy().into_owned());
        }
    } else {
        out.push(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_table_escapes() {
        assert_eq!(unescape_octal("/mnt/my\\040disk"), "/mnt/my disk");
        assert_eq!(unescape_octal("plain\\"), "plain\\");
    }

    #[test]
    fn transports() {
        assert_eq!(
            transport_of(
                "sdb",
                "/sys/devices/pci0000:00/0000:00:14.0/usb2/2-1/host3/target3:0:0/3:0:0:0/block/sdb"
            ),
            "usb"
        );
        assert_eq!(
            transport_of(
                "sda",
                "/sys/devices/pci0000:00/0000:00:17.0/ata1/host0/block/sda"
            ),
            "sata"
        );
        assert_eq!(
            transport_of("nvme0n1", "/sys/devices/pci0000:00/nvme/nvme0/nvme0n1"),
            "nvme"
        );
        assert_eq!(
            transport_of("loop0", "/sys/devices/virtual/block/loop0"),
            "loop"
        );
    }
}
