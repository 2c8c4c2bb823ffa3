//! Hidden-area (HPA) detection through `hdparm -N`, where the device can report one.
//!
//! An overwrite through the normal block interface cannot reach sectors hidden behind a
//! host-protected area; the certificate must say so rather than imply the whole medium was
//! wiped. Safehand never changes the HPA itself.

use std::process::Command;

use safehand_crypto::certificate::HiddenAreaFinding;

/// What `hdparm -N` said, decoded.
#[derive(Debug, PartialEq, Eq)]
pub struct HpaReport {
    /// Sectors the operating system can address.
    pub visible_sectors: u64,
    /// Sectors the drive really has.
    pub native_sectors: u64,
}

/// Parses `max sectors   = 976773168/976773168, HPA is disabled` (also the newer
/// `accessible max address` wording).
pub fn parse_hdparm_n(output: &str) -> Option<HpaReport> {
    for line in output.lines() {
        let line = line.trim();
        let Some(rest) = line
            .strip_prefix("max sectors")
            .or_else(|| line.strip_prefix("accessible max address"))
        else {
            continue;
        };
        let rest = rest.trim_start().strip_prefix('=')?.trim();
        let numbers = rest.split(',').next()?.trim();
        let (visible, native) = numbers.split_once('/')?;
        return Some(HpaReport {
            visible_sectors: visible.trim().parse().ok()?,
            native_sectors: native.trim().parse().ok()?,
        });
    }
    None
}

fn finding(status: &str, detail: String) -> HiddenAreaFinding {
    HiddenAreaFinding {
        status: status.into(),
        detail,
    }
}

/// Checks a target for a host-protected area. Only ATA-style disks can report one.
pub fn check(path: &str, kind: &str, transport: &str) -> HiddenAreaFinding {
    match kind {
        "file" => {
            return finding(
                "not-applicable",
                "a regular file has no hidden sectors of its own".into(),
            )
        }
        "loop" => {
            return finding(
                "not-applicable",
                "a loop device has no host-protected area".into(),
            )
        }
        "partition" => {
            return finding(
                "not-applicable",
                "a partition cannot hold a host-protected area (check the whole disk)".into(),
            )
        }
        _ => {}
    }
    if transport == "nvme" || transport == "virtio" || transport == "mmc" {
        return finding(
            "not-applicable",
            format!("{transport} devices have no ATA host-protected area or device configuration overlay"),
        );
    }
    let output = match Command::new("hdparm").arg("-N").arg(path).output() {
        Ok(output) => output,
        Err(_) => {
            return finding(
                "unknown",
                "hdparm is not installed, so a host-protected area could not be checked".into(),
            )
        }
    };
    let text = String::from_utf8_lossy(&output.stdout);
    match parse_hdparm_n(&text) {
        Some(r) if r.native_sectors > r.visible_sectors => finding(
            "detected",
            format!(
                "HIDDEN SECTORS NOT WIPED: the device hides {} sectors behind a host-protected area \
                 (hdparm -N: {}/{}). Remove it (hdparm -N p{}) and wipe again to cover them.",
                r.native_sectors - r.visible_sectors,
                r.visible_sectors,
                r.native_sectors,
                r.native_sectors
            ),
        ),
        Some(r) => finding(
            "none",
            format!("the device reports no host-protected area (hdparm -N: {}/{} sectors)", r.visible_sectors, r.native_sectors),
        ),
        None => finding(
            "unknown",
            "the device did not answer hdparm -N (common behind USB bridges), so hidden sectors could not be ruled out"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hdparm_output() {
        let enabled = "\n/dev/sda:\n max sectors   = 976771055/976773168, HPA is enabled\n";
        assert_eq!(
            parse_hdparm_n(enabled),
            Some(HpaReport {
                visible_sectors: 976771055,
                native_sectors: 976773168
            })
        );
        let newer =
            "\n/dev/sdb:\n accessible max address = 1000215216/1000215216, HPA is disabled\n";
        assert_eq!(
            parse_hdparm_n(newer).map(|r| r.native_sectors),
            Some(1000215216)
        );
        assert_eq!(
            parse_hdparm_n("/dev/sdc:\n SG_IO: bad/missing sense data"),
            None
        );
    }
}
