//! The operator's signing key: where it lives and how it is created (0600 file, 0700 folder).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use safehand_crypto::certificate::SigningKey;

/// `$XDG_CONFIG_HOME/safehand/signing.key`, else `~/.config/safehand/signing.key`.
pub fn default_key_path() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => PathBuf::from(home).join(".config"),
            None => bail!("neither XDG_CONFIG_HOME nor HOME is set; pass the key file with --key"),
        },
    };
    Ok(base.join("safehand").join("signing.key"))
}

/// Loads the key at `path`, creating a new one (0600, folder 0700) if there is none.
/// Returns the key and whether it was just created.
pub fn load_or_create(path: &Path) -> anyhow::Result<(SigningKey, bool)> {
    match fs::read_to_string(path) {
        Ok(text) => {
            let mode = fs::metadata(path)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0);
            if mode & 0o077 != 0 {
                bail!(
                    "the signing key {} can be read by other users (mode {mode:o}); run `chmod 600 {}` and try again",
                    path.display(),
                    path.display()
                );
            }
            let key = SigningKey::from_key_file_text(&text)
                .with_context(|| format!("{} is not a Safehand signing key", path.display()))?;
            Ok((key, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let key = SigningKey::generate();
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("cannot create the signing key {}", path.display()))?;
            file.write_all(key.to_key_file_text().as_bytes())?;
            file.sync_all()?;
            Ok((key, true))
        }
        Err(e) => Err(e).with_context(|| format!("cannot read the signing key {}", path.display())),
    }
}

/// Writes `bytes` to `path` atomically (temporary file, then rename), mode 0600.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&temp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}
