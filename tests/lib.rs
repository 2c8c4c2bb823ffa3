//! Shared helpers for Safehand's end-to-end tests: locating the built binaries, temporary
//! folders, and the external tools (the `age` binary, loop devices, ...) the tests drive.
//! The tests themselves live in `tests/tests.rs` and the modules it lists. The server's own
//! tests use [`maildir`] too.

use std::path::PathBuf;

pub mod maildir;

/// Path of a binary built from this workspace (`safehand`, `safehand-server`).
///
/// Tests run `cargo build` output; `tests/run` builds the binaries before the tests start.
pub fn workspace_binary(name: &str) -> PathBuf {
    let profile_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().and_then(|d| d.parent()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("target/debug"));
    profile_dir.join(name)
}

/// Finds an external tool on `PATH`. When `CI=true` a missing tool fails the test (CI must
/// have everything installed by `tests/run`); elsewhere the caller may skip with a message.
pub fn external_tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() && std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "required tool `{name}` is missing; tests/run installs it (CI=true forbids skipping)"
        );
    }
    found
}
