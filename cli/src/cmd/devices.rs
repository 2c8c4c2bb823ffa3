//! `safehand devices`: every block device, its identity, and whether it is in use.

use std::process::ExitCode;

use anyhow::Context;

use crate::args::DevicesArgs;
use crate::wipe::device::list_devices;

fn size_text(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", units[unit])
}

fn flag(value: Option<bool>) -> &'static str {
    match value {
        Some(true) => "yes",
        Some(false) => "no",
        None => "?",
    }
}

/// Runs `safehand devices [--json]`.
pub fn run(args: DevicesArgs) -> anyhow::Result<ExitCode> {
    let devices = list_devices().context("cannot read /sys/class/block")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&devices)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<16} {:>10} {:>9} {:<9} {:<4} {:<4} {:<24} {:<20} IN USE",
        "PATH", "SIZE", "SECTORS", "TRANSPORT", "ROT", "REM", "MODEL", "SERIAL"
    );
    for d in &devices {
        let in_use = if d.in_use.is_empty() {
            "no".to_string()
        } else {
            d.in_use.join("; ")
        };
        println!(
            "{:<16} {:>10} {:>9} {:<9} {:<4} {:<4} {:<24} {:<20} {}",
            d.path,
            size_text(d.size_bytes),
            format!("{}/{}", d.logical_sector_size, d.physical_sector_size),
            d.transport,
            flag(d.rotational),
            flag(d.removable),
            d.model
                .as_deref()
                .or(d.backing_file.as_deref())
                .unwrap_or("-"),
            d.serial.as_deref().unwrap_or("-"),
            in_use
        );
    }
    Ok(ExitCode::SUCCESS)
}
