//! Private output files that appear only when complete: written under a temporary name in the
//! destination's folder (mode 0600), then renamed into place once complete. A failure, a dropped
//! writer or Ctrl-C leaves no partial file and never a half-written file under the real name.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rand::Rng;

use crate::error::{Error, Result};

/// An output file being written. [`PrivateOutput::commit`] makes it visible; dropping it
/// without committing removes the temporary file.
#[derive(Debug)]
pub struct PrivateOutput {
    file: Option<File>,
    temp: PathBuf,
    dest: PathBuf,
    replace: bool,
}

/// A name in `dir` that nothing uses yet, hidden (leading dot) and recognisable.
pub(crate) fn temp_name(dir: &Path, stem: &str) -> PathBuf {
    let tag: u64 = rand::rngs::OsRng.gen();
    dir.join(format!(".{stem}.safehand-{tag:016x}.part"))
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

impl PrivateOutput {
    /// Starts writing `dest`. Fails at once if `dest` exists and `replace` is false, so no work
    /// is wasted.
    pub fn create(dest: &Path, replace: bool) -> Result<Self> {
        if !replace && fs::symlink_metadata(dest).is_ok() {
            return Err(Error::AlreadyExists {
                path: dest.to_path_buf(),
            });
        }
        let dir = parent_of(dest);
        let stem = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "output".into());
        let temp = temp_name(&dir, &stem);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(|e| Error::io(format!("cannot create a file in {}", dir.display()), e))?;
        Ok(Self {
            file: Some(file),
            temp,
            dest: dest.to_path_buf(),
            replace,
        })
    }

    /// Where the file will appear.
    pub fn destination(&self) -> &Path {
        &self.dest
    }

    /// Renames the finished file into place.
    pub fn commit(mut self) -> Result<()> {
        let dest_text = self.dest.display().to_string();
        let file = self.file.take().ok_or_else(|| Error::Io {
            context: format!("cannot write {dest_text}"),
            source: io::Error::other("already committed"),
        })?;
        // No fsync, like age, tar and cp: flushing is the operating system's job (eject USB
        // sticks safely). Renaming only after every byte was written is what keeps a failed or
        // interrupted run from leaving a partial file under the real name.
        drop(file);
        if self.replace {
            fs::rename(&self.temp, &self.dest)
                .map_err(|e| Error::io(format!("cannot create {dest_text}"), e))?;
        } else {
            // A hard link fails if the name was taken meanwhile: no silent overwrite. FAT and
            // exFAT sticks have no hard links, so there we fall back to check-then-rename.
            match fs::hard_link(&self.temp, &self.dest) {
                Ok(()) => {
                    let _ = fs::remove_file(&self.temp);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(Error::AlreadyExists {
                        path: self.dest.clone(),
                    })
                }
                Err(_) => {
                    if fs::symlink_metadata(&self.dest).is_ok() {
                        return Err(Error::AlreadyExists {
                            path: self.dest.clone(),
                        });
                    }
                    fs::rename(&self.temp, &self.dest)
                        .map_err(|e| Error::io(format!("cannot create {dest_text}"), e))?;
                }
            }
        }
        self.temp = PathBuf::new();
        Ok(())
    }
}

impl Write for PrivateOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.file.as_mut() {
            Some(f) => f.write(buf),
            None => Err(io::Error::other("output already committed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for PrivateOutput {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn appears_only_on_commit_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.age");
        let mut out = PrivateOutput::create(&dest, false).unwrap();
        out.write_all(b"data").unwrap();
        assert!(!dest.exists());
        out.commit().unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"data");
        let mode = fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn dropping_leaves_nothing_and_existing_files_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let mut out = PrivateOutput::create(&dest, false).unwrap();
        out.write_all(b"secret").unwrap();
        drop(out);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);

        fs::write(&dest, b"keep").unwrap();
        assert!(matches!(
            PrivateOutput::create(&dest, false),
            Err(Error::AlreadyExists { .. })
        ));
        let mut out = PrivateOutput::create(&dest, true).unwrap();
        out.write_all(b"new").unwrap();
        out.commit().unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"new");
    }
}
