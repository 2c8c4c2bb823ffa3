//! Sealed payloads: several files and folders in one age file whose plaintext is a POSIX tar
//! stream (ustar headers, pax extended headers for long or non-ASCII names, long link targets
//! and sizes of 8 GiB and more). Anyone without Safehand opens one with `age -d f.age | tar x`.
//!
//! - [`seal`] streams: a tar-building thread feeds the encrypting thread through a bounded
//!   pipe, and a third thread writes the output, so memory stays flat and both cores work.
//! - [`list`] and [`verify`] read the whole payload and write nothing.
//! - [`open`] extracts safely. Entries go into a hidden temporary folder inside the target
//!   (mode 0700); only after the final chunk of the payload authenticated are they renamed
//!   into place. Absolute names, `..`, links that leave the folder, device nodes and FIFOs
//!   stop the whole extraction and nothing is left behind. Existing files are replaced only
//!   with `replace`; a file never replaces a folder or the reverse.
//!
//! Choices where the format is silent: entries are stored with uid/gid 0 and no user or group
//! names (names of staff accounts would leak, and `tar x` as root would chown to strangers);
//! modification times are whole seconds; hard links inside the sealed folders are stored as
//! separate files; symbolic links are stored as links and must point inside the payload (seal
//! refuses others, since open would refuse them); a path given on the command line that is
//! itself a link is followed. Implicit folders (parents missing from a payload) are created
//! 0700.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use filetime::FileTime;
use tar::{Archive, Builder, EntryType, Header};
use zeroize::Zeroizing;

use crate::encryption::{encrypt, Armor, PlaintextReader};
use crate::error::{Error, Result};
use crate::keys::{DecryptionKey, Recipients};
use crate::output::temp_name;
use crate::pipe::{pipe, PipeClosed, PipeWriter, BUFFER_SIZE};

/// What [`seal`] put into a payload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SealSummary {
    /// Regular files.
    pub files: u64,
    /// Folders.
    pub folders: u64,
    /// Symbolic links.
    pub links: u64,
    /// Bytes of file content.
    pub bytes: u64,
}

/// What [`open`] extracted.
pub type OpenSummary = SealSummary;

/// The kind of a payload entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A folder.
    Folder,
    /// A symbolic link.
    Symlink,
    /// A hard link to an earlier file.
    HardLink,
    /// Anything else (device node, FIFO, ...); [`open`] refuses these.
    Other,
}

/// One entry of a payload, as [`list`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    /// The name inside the payload (invalid UTF-8 shown with U+FFFD).
    pub path: String,
    /// What it is.
    pub kind: EntryKind,
    /// Size in bytes (0 for folders and links).
    pub size: u64,
    /// Modification time, seconds since 1970-01-01 UTC.
    pub mtime: u64,
    /// Permission bits.
    pub mode: u32,
    /// Where a link points.
    pub link_target: Option<String>,
}

/// What [`verify`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifySummary {
    /// Plaintext bytes, all authenticated.
    pub plaintext_bytes: u64,
    /// Entries, when the plaintext is a sealed payload (tar); `None` for a single encrypted file.
    pub entries: Option<u64>,
}

// ---------------------------------------------------------------------------------------------
// Sealing

/// Seals `paths` (files and folders, each stored under its own name) into one encrypted
/// payload written to `output`. `progress` is called with the number of file-content bytes
/// read each time some are. Returns the output (e.g. a [`crate::PrivateOutput`] to commit).
pub fn seal<W: Write + Send + 'static>(
    paths: &[PathBuf],
    recipients: &Recipients,
    output: W,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(W, SealSummary)> {
    let inputs = seal_inputs(paths)?;
    std::thread::scope(|scope| {
        let (pipe_writer, pipe_reader) = pipe();
        let inputs = &inputs;
        let tar_thread = std::thread::Builder::new()
            .name("safehand-tar".into())
            .stack_size(16 << 20)
            .spawn_scoped(scope, move || -> Result<SealSummary> {
                let mut sealer = Sealer {
                    builder: Builder::new(pipe_writer),
                    summary: SealSummary::default(),
                    progress,
                    buf: Zeroizing::new(vec![0u8; 256 * 1024]),
                };
                for (path, name) in inputs {
                    let meta = fs::metadata(path)
                        .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
                    sealer.add(path, name, &meta)?;
                }
                let mut builder = sealer.builder;
                builder
                    .finish()
                    .map_err(|e| Error::io("cannot build the payload", e))?;
                let pipe_writer = builder
                    .into_inner()
                    .map_err(|e| Error::io("cannot build the payload", e))?;
                pipe_writer
                    .finish()
                    .map_err(|e| Error::io("cannot build the payload", e))?;
                Ok(sealer.summary)
            })
            .map_err(|e| Error::io("cannot start sealing", e))?;
        let encrypted = encrypt(recipients, Armor::Binary, pipe_reader, output);
        let built = tar_thread.join().unwrap_or_else(|_| {
            Err(Error::Io {
                context: "sealing stopped".into(),
                source: io::Error::other("the tar thread panicked"),
            })
        });
        match (built, encrypted) {
            (Ok(summary), Ok((out, _))) => Ok((out, summary)),
            // The tar side's own failure explains more, unless it only saw the pipe close.
            (Err(e), Err(enc)) => Err(if is_pipe_closed(&e) { enc } else { e }),
            (Err(e), Ok(_)) => Err(e),
            (Ok(_), Err(enc)) => Err(enc),
        }
    })
}

fn is_pipe_closed(e: &Error) -> bool {
    match e {
        Error::Io { source, .. } => {
            let mut cur: Option<&(dyn std::error::Error + 'static)> = source
                .get_ref()
                .map(|e| e as &(dyn std::error::Error + 'static));
            while let Some(inner) = cur {
                if inner.is::<PipeClosed>() {
                    return true;
                }
                cur = inner.source();
            }
            false
        }
        _ => false,
    }
}

/// Checks the command-line paths and works out each one's name in the payload.
fn seal_inputs(paths: &[PathBuf]) -> Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut names = HashSet::new();
    for path in paths {
        fs::metadata(path).map_err(|e| Error::CannotSeal {
            path: path.clone(),
            reason: match e.kind() {
                io::ErrorKind::NotFound => "no such file or folder".into(),
                _ => e.to_string(),
            },
        })?;
        let name = match path.file_name() {
            Some(n) => n.to_os_string(),
            None => fs::canonicalize(path)
                .ok()
                .and_then(|p| p.file_name().map(OsStr::to_os_string))
                .ok_or_else(|| Error::CannotSeal {
                    path: path.clone(),
                    reason: "it has no name to store it under (the root folder?)".into(),
                })?,
        };
        let name = name.as_bytes().to_vec();
        if !names.insert(name.clone()) {
            return Err(Error::CannotSeal {
                path: path.clone(),
                reason: format!(
                    "another input is also called `{}`; names must be unique in a payload",
                    String::from_utf8_lossy(&name)
                ),
            });
        }
        out.push((path.clone(), name));
    }
    Ok(out)
}

struct Sealer<'a> {
    builder: Builder<PipeWriter>,
    summary: SealSummary,
    progress: &'a (dyn Fn(u64) + Sync),
    buf: Zeroizing<Vec<u8>>,
}

impl Sealer<'_> {
    fn add(&mut self, path: &Path, name: &[u8], meta: &fs::Metadata) -> Result<()> {
        let mode = meta.mode() & 0o7777;
        let mtime = u64::try_from(meta.mtime()).unwrap_or(0);
        let ft = meta.file_type();
        let cannot = |reason: String| Error::CannotSeal {
            path: path.to_path_buf(),
            reason,
        };
        if ft.is_dir() {
            let mut dir_name = name.to_vec();
            dir_name.push(b'/');
            append(
                &mut self.builder,
                EntryType::Directory,
                &dir_name,
                None,
                0,
                mode,
                mtime,
            )
            .map_err(|e| Error::io("cannot build the payload", e))?;
            self.summary.folders += 1;
            let mut children: Vec<fs::DirEntry> = fs::read_dir(path)
                .map_err(|e| Error::io(format!("cannot read the folder {}", path.display()), e))?
                .collect::<io::Result<_>>()
                .map_err(|e| Error::io(format!("cannot read the folder {}", path.display()), e))?;
            children.sort_by_key(|c| c.file_name());
            for child in children {
                let child_path = child.path();
                let child_meta = fs::symlink_metadata(&child_path)
                    .map_err(|e| Error::io(format!("cannot read {}", child_path.display()), e))?;
                let mut child_name = name.to_vec();
                child_name.push(b'/');
                child_name.extend_from_slice(child.file_name().as_bytes());
                self.add(&child_path, &child_name, &child_meta)?;
            }
            Ok(())
        } else if ft.is_file() {
            let file = File::open(path)
                .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
            let size = file
                .metadata()
                .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?
                .len();
            let mut reader = ExactReader {
                inner: file,
                remaining: size,
                progress: self.progress,
            };
            let fail = |e| Error::io(format!("cannot seal {}", path.display()), e);
            // The header, then the content through one reused buffer (the tar crate would copy
            // in 8 KiB steps, and a BufReader per file costs an allocation per file).
            append(
                &mut self.builder,
                EntryType::Regular,
                name,
                None,
                size,
                mode,
                mtime,
            )
            .map_err(fail)?;
            let out = self.builder.get_mut();
            loop {
                let n = reader.read(&mut self.buf).map_err(fail)?;
                if n == 0 {
                    break;
                }
                out.write_all(&self.buf[..n]).map_err(fail)?;
            }
            let padding = (512 - (size % 512) as usize) % 512;
            out.write_all(&[0u8; 512][..padding]).map_err(fail)?;
            self.summary.files += 1;
            self.summary.bytes += size;
            Ok(())
        } else if ft.is_symlink() {
            let target = fs::read_link(path)
                .map_err(|e| Error::io(format!("cannot read the link {}", path.display()), e))?;
            let target = target.as_os_str().as_bytes();
            let entry = safe_relative(name).map_err(cannot)?;
            if link_target_inside(&entry, target).is_none() {
                return Err(cannot(format!(
                    "it is a symbolic link to `{}`, outside what is being sealed, and \
                     `safehand open` would refuse it; seal the file it points to instead",
                    String::from_utf8_lossy(target)
                )));
            }
            append(
                &mut self.builder,
                EntryType::Symlink,
                name,
                Some(target),
                0,
                0o777,
                mtime,
            )
            .map_err(|e| Error::io("cannot build the payload", e))?;
            self.summary.links += 1;
            Ok(())
        } else {
            Err(cannot(
                "it is a device, FIFO or socket; only files, folders and links can be sealed"
                    .into(),
            ))
        }
    }
}

/// Reads exactly `remaining` bytes, failing if the file shrank while being sealed (a tar
/// header already promised the size).
struct ExactReader<'a> {
    inner: File,
    remaining: u64,
    progress: &'a (dyn Fn(u64) + Sync),
}

impl Read for ExactReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file got shorter while it was being sealed; try again when nothing is writing to it",
            ));
        }
        self.remaining -= n as u64;
        (self.progress)(n as u64);
        Ok(n)
    }
}

/// The process's umask (Linux reports it in /proc/self/status; 022, the usual default,
/// elsewhere or if it cannot be read). Read once: `umask(2)` itself would need `unsafe` and
/// changes the mask to read it.
fn process_umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .unwrap_or(0o022)
            & 0o777
    })
}

/// Largest value an 11-digit octal ustar size field holds.
const USTAR_MAX_SIZE: u64 = 0o77777777777;

/// Appends an entry's header (with a pax header first when needed). The content follows from
/// the caller for regular files (`size` bytes, then padding to 512); other entries have none.
#[allow(clippy::too_many_arguments)]
fn append<W: Write>(
    builder: &mut Builder<W>,
    kind: EntryType,
    path: &[u8],
    link: Option<&[u8]>,
    size: u64,
    mode: u32,
    mtime: u64,
) -> io::Result<()> {
    // Written as raw blocks; the builder's own `append` would want the content as a reader.
    let blocks = entry_header(kind, path, link, size, mode, mtime)?;
    builder.get_mut().write_all(&blocks)
}

/// The header blocks of one entry: a pax extended header (with its records, padded to 512)
/// when a name, link or size does not fit ustar, then the ustar header block.
pub(crate) fn entry_header(
    kind: EntryType,
    path: &[u8],
    link: Option<&[u8]>,
    size: u64,
    mode: u32,
    mtime: u64,
) -> io::Result<Vec<u8>> {
    let mut pax = Vec::new();
    let mut header = Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header.set_size(size);
    if size > USTAR_MAX_SIZE {
        pax_record(&mut pax, "size", size.to_string().as_bytes());
    }
    let ustar = header
        .as_ustar_mut()
        .ok_or_else(|| io::Error::other("ustar header expected"))?;
    if !set_ustar_path(&mut ustar.name, &mut ustar.prefix, path) {
        pax_record(&mut pax, "path", path);
        let placeholder = ascii_placeholder(path, 99);
        ustar.name[..placeholder.len()].copy_from_slice(&placeholder);
    }
    if let Some(target) = link {
        if target.is_ascii() && target.len() <= 100 {
            ustar.linkname[..target.len()].copy_from_slice(target);
        } else {
            pax_record(&mut pax, "linkpath", target);
            let placeholder = ascii_placeholder(target, 99);
            ustar.linkname[..placeholder.len()].copy_from_slice(&placeholder);
        }
    }
    header.set_cksum();
    let mut out = Vec::with_capacity(1536 + pax.len());
    if !pax.is_empty() {
        let mut pax_header = Header::new_ustar();
        pax_header.set_entry_type(EntryType::XHeader);
        pax_header.set_mode(0o644);
        pax_header.set_mtime(mtime);
        pax_header.set_size(pax.len() as u64);
        let name = b"PaxHeaders/entry";
        if let Some(u) = pax_header.as_ustar_mut() {
            u.name[..name.len()].copy_from_slice(name);
        }
        pax_header.set_cksum();
        out.extend_from_slice(pax_header.as_bytes());
        out.extend_from_slice(&pax);
        out.resize(out.len() + (512 - pax.len() % 512) % 512, 0);
    }
    out.extend_from_slice(header.as_bytes());
    Ok(out)
}

/// Stores an ASCII path in ustar's name (100 bytes) and prefix (155 bytes) fields; false when
/// it needs a pax `path` record instead.
fn set_ustar_path(name: &mut [u8; 100], prefix: &mut [u8; 155], path: &[u8]) -> bool {
    if !path.is_ascii() {
        return false;
    }
    if path.len() <= 100 {
        name[..path.len()].copy_from_slice(path);
        return true;
    }
    // Split at a '/' so that prefix <= 155 and name <= 100 (name must not be empty).
    let body = path.strip_suffix(b"/").unwrap_or(path);
    for (i, &b) in body.iter().enumerate().rev() {
        if b != b'/' {
            continue;
        }
        let (p, n) = (&path[..i], &path[i + 1..]);
        if n.len() > 100 {
            return false;
        }
        if p.len() <= 155 && !n.is_empty() {
            prefix[..p.len()].copy_from_slice(p);
            name[..n.len()].copy_from_slice(n);
            return true;
        }
    }
    false
}

fn ascii_placeholder(bytes: &[u8], max: usize) -> Vec<u8> {
    bytes
        .iter()
        .map(|&b| if b.is_ascii_graphic() { b } else { b'_' })
        .take(max)
        .collect()
}

/// Appends one pax record: "<length> <key>=<value>\n", where length counts itself.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let base = key.len() + value.len() + 3;
    let mut len = base + 1;
    while base + len.to_string().len() != len {
        len = base + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

// ---------------------------------------------------------------------------------------------
// Names

/// A payload name as a relative path of plain components, or why it is refused.
pub(crate) fn safe_relative(raw: &[u8]) -> std::result::Result<PathBuf, String> {
    if raw.is_empty() {
        return Err("it has an empty name".into());
    }
    if raw.starts_with(b"/") {
        return Err("it has an absolute path (it would be written outside the folder)".into());
    }
    let mut out = PathBuf::new();
    for (i, part) in raw.split(|&b| b == b'/').enumerate() {
        match part {
            b"" | b"." => continue,
            b".." => {
                return Err(
                    "its name contains `..` (it would be written outside the folder)".into(),
                )
            }
            _ => {
                if i == 0 && part.len() == 2 && part[1] == b':' && part[0].is_ascii_alphabetic() {
                    return Err("it has a Windows drive path".into());
                }
                out.push(OsStr::from_bytes(part));
            }
        }
    }
    Ok(out)
}

/// Where a symbolic link at `entry` pointing to `target` lands, relative to the payload root,
/// or `None` if it may leave it. Only `..` at the start is accepted (then the walk up passes
/// only real folders of the payload), and the result must stay inside.
fn link_target_inside(entry: &Path, target: &[u8]) -> Option<PathBuf> {
    if target.is_empty() || target.starts_with(b"/") {
        return None;
    }
    let mut stack: Vec<&OsStr> = entry
        .parent()
        .map(|p| {
            p.components()
                .filter_map(|c| match c {
                    Component::Normal(n) => Some(n),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let mut seen_normal = false;
    for part in target.split(|&b| b == b'/') {
        match part {
            b"" | b"." => continue,
            b".." => {
                if seen_normal {
                    return None;
                }
                stack.pop()?;
            }
            _ => {
                seen_normal = true;
                stack.push(OsStr::from_bytes(part));
            }
        }
    }
    Some(stack.iter().collect())
}

fn kind_of(t: EntryType) -> EntryKind {
    match t {
        EntryType::Regular | EntryType::Continuous => EntryKind::File,
        EntryType::Directory => EntryKind::Folder,
        EntryType::Symlink => EntryKind::Symlink,
        EntryType::Link => EntryKind::HardLink,
        _ => EntryKind::Other,
    }
}

fn is_metadata_entry(t: EntryType) -> bool {
    matches!(
        t,
        EntryType::XGlobalHeader
            | EntryType::XHeader
            | EntryType::GNULongName
            | EntryType::GNULongLink
    )
}

/// Maps an error met while reading the tar stream: a decryption fault wins, anything else
/// means the plaintext is not a well-formed tar stream.
fn tar_error(e: io::Error) -> Error {
    match Error::io("cannot read the payload", e) {
        Error::Io { source, .. }
            if matches!(
                source.kind(),
                io::ErrorKind::Other | io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
            ) =>
        {
            Error::NotAPayload(source.to_string())
        }
        other => other,
    }
}

// ---------------------------------------------------------------------------------------------
// Listing and verifying

/// Lists every entry, calling `each` as entries are read (nothing is written to disk), then
/// reads to the end so the whole payload is authenticated. Returns the number of entries.
pub fn list<R: Read>(
    plaintext: PlaintextReader<R>,
    mut each: impl FnMut(&EntryInfo) -> io::Result<()>,
) -> Result<u64> {
    let mut archive = Archive::new(plaintext);
    let mut count = 0u64;
    {
        let entries = archive.entries().map_err(tar_error)?;
        for entry in entries {
            let entry = entry.map_err(tar_error)?;
            let header = entry.header();
            let t = header.entry_type();
            if is_metadata_entry(t) {
                continue;
            }
            let info = EntryInfo {
                path: String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
                kind: kind_of(t),
                size: if kind_of(t) == EntryKind::File {
                    entry.size()
                } else {
                    0
                },
                mtime: header.mtime().unwrap_or(0),
                mode: header.mode().unwrap_or(0) & 0o7777,
                link_target: entry
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned()),
            };
            count += 1;
            each(&info).map_err(|e| Error::io("cannot print the list", e))?;
        }
    }
    drain(archive.into_inner())?;
    Ok(count)
}

/// Reads the rest of the plaintext so the final chunk is authenticated.
fn drain<R: Read>(mut reader: R) -> Result<u64> {
    let mut buf = Zeroizing::new(vec![0u8; BUFFER_SIZE]);
    let mut total = 0u64;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("cannot read the encrypted file", e)),
        }
    }
}

/// Checks that the whole file authenticates, without writing anything. If the plaintext is
/// a sealed payload its entries are counted too.
pub fn verify<R: Read>(mut plaintext: PlaintextReader<R>) -> Result<VerifySummary> {
    let mut first = Zeroizing::new(vec![0u8; 512]);
    let mut got = 0;
    while got < first.len() {
        match plaintext.read(&mut first[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("cannot read the encrypted file", e)),
        }
    }
    let looks_like_tar = got == 512 && &first[257..262] == b"ustar";
    if !looks_like_tar {
        drain(&mut plaintext)?;
        return Ok(VerifySummary {
            plaintext_bytes: plaintext.released(),
            entries: None,
        });
    }
    let head = io::Cursor::new(first);
    let mut archive = Archive::new(head.chain(&mut plaintext));
    let mut entries = 0u64;
    for entry in archive.entries().map_err(tar_error)? {
        let entry = entry.map_err(tar_error)?;
        if !is_metadata_entry(entry.header().entry_type()) {
            entries += 1;
        }
    }
    drain(archive.into_inner())?;
    Ok(VerifySummary {
        plaintext_bytes: plaintext.released(),
        entries: Some(entries),
    })
}

// ---------------------------------------------------------------------------------------------
// Opening

/// Extracts a sealed payload into `dir` (created 0700 if missing). Nothing appears in `dir`
/// until the whole payload has authenticated; on any error nothing is left behind. Existing
/// entries are replaced only if `replace` is true.
pub fn open<R: Read + Send>(
    plaintext: PlaintextReader<R>,
    dir: &Path,
    replace: bool,
) -> Result<OpenSummary> {
    open_with(
        dir,
        replace,
        move |mut pipe_writer: PipeWriter| -> Result<()> {
            let mut plaintext = plaintext;
            let mut buf = Zeroizing::new(vec![0u8; BUFFER_SIZE]);
            loop {
                let n = plaintext
                    .read(&mut buf)
                    .map_err(|e| Error::io("cannot read the encrypted file", e))?;
                if n == 0 {
                    break;
                }
                pipe_writer
                    .write_all(&buf[..n])
                    .map_err(|e| Error::io("extraction stopped", e))?;
            }
            pipe_writer
                .finish()
                .map_err(|e| Error::io("extraction stopped", e))
        },
    )
}

/// Like [`open`], for a payload in a regular file that `open_file` can open again: decryption
/// then runs on every core ([`crate::decrypt_file_to`]) while extraction writes the files.
/// `progress` is called with the number of plaintext bytes decrypted, as they are.
pub fn open_file<F, R>(
    open_file: F,
    key: &DecryptionKey,
    dir: &Path,
    replace: bool,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
) -> Result<OpenSummary>
where
    F: Fn() -> io::Result<R> + Sync + Send,
    R: Read + std::io::Seek + Send,
{
    open_with(dir, replace, move |pipe_writer: PipeWriter| -> Result<()> {
        let counting = Counting {
            inner: pipe_writer,
            progress,
        };
        let (counting, _) = crate::encryption::decrypt_file_to(open_file, key, counting)?;
        counting
            .inner
            .finish()
            .map_err(|e| Error::io("extraction stopped", e))
    })
}

/// Reports bytes written to a progress callback.
struct Counting<W> {
    inner: W,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        (self.progress)(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn open_with<P>(dir: &Path, replace: bool, produce: P) -> Result<OpenSummary>
where
    P: FnOnce(PipeWriter) -> Result<()> + Send,
{
    let created = match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => false,
        Ok(_) => {
            return Err(Error::Io {
                context: format!("cannot extract into {}", dir.display()),
                source: io::Error::other("it exists and is not a folder"),
            })
        }
        Err(_) => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| Error::io(format!("cannot create the folder {}", dir.display()), e))?;
            true
        }
    };
    let result = open_into(produce, dir, replace);
    if result.is_err() && created {
        // Only removes it if it is empty, i.e. we never got as far as committing.
        let _ = fs::remove_dir(dir);
    }
    result
}

/// Removes the staging folder unless disarmed.
struct Staging {
    path: PathBuf,
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

fn open_into<P>(produce: P, dir: &Path, replace: bool) -> Result<OpenSummary>
where
    P: FnOnce(PipeWriter) -> Result<()> + Send,
{
    let staging_path = temp_name(dir, "open");
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging_path)
        .map_err(|e| Error::io(format!("cannot create a folder in {}", dir.display()), e))?;
    let staging = Staging { path: staging_path };

    let mut extractor = Extractor {
        dir,
        staging: &staging.path,
        replace,
        symlinks: HashSet::new(),
        files: HashSet::new(),
        folders: HashSet::new(),
        folder_meta: Vec::new(),
        summary: SealSummary::default(),
        buf: Zeroizing::new(vec![0u8; 256 * 1024]),
    };

    std::thread::scope(|scope| -> Result<()> {
        let (pipe_writer, pipe_reader) = pipe();
        // Decryption on one core, extraction (file writes) on the other.
        let decrypt_thread = std::thread::Builder::new()
            .name("safehand-decrypt".into())
            .spawn_scoped(scope, move || produce(pipe_writer))
            .map_err(|e| Error::io("cannot start decrypting", e))?;

        let extracted = extractor.extract_all(pipe_reader);
        let decrypted = decrypt_thread.join().unwrap_or_else(|_| {
            Err(Error::Io {
                context: "decryption stopped".into(),
                source: io::Error::other("the decryption thread panicked"),
            })
        });
        match (extracted, decrypted) {
            (Ok(()), Ok(())) => Ok(()),
            // A decryption failure (truncated, altered) explains a broken tar stream.
            (Err(_), Err(d)) if !is_pipe_closed(&d) => Err(d),
            (Err(e), _) => Err(e),
            (Ok(()), Err(d)) => Err(d),
        }
    })?;

    // The final chunk authenticated: now, and only now, entries become visible.
    extractor.commit()?;
    let summary = extractor.summary;
    drop(staging);
    Ok(summary)
}

struct Extractor<'a> {
    dir: &'a Path,
    staging: &'a Path,
    replace: bool,
    symlinks: HashSet<PathBuf>,
    files: HashSet<PathBuf>,
    folders: HashSet<PathBuf>,
    folder_meta: Vec<(PathBuf, u32, u64)>,
    summary: SealSummary,
    buf: Zeroizing<Vec<u8>>,
}

fn refuse(path: &[u8], reason: impl Into<String>) -> Error {
    Error::UnsafeEntry {
        path: String::from_utf8_lossy(path).into_owned(),
        reason: reason.into(),
    }
}

impl Extractor<'_> {
    fn extract_all<R: Read>(&mut self, reader: R) -> Result<()> {
        let mut archive = Archive::new(reader);
        {
            let entries = archive.entries().map_err(tar_error)?;
            for entry in entries {
                let mut entry = entry.map_err(tar_error)?;
                self.extract(&mut entry)?;
            }
        }
        drain(archive.into_inner())?;
        Ok(())
    }

    fn make_parent(&self, rel: &Path) -> Result<()> {
        if let Some(parent) = rel.parent() {
            if !parent.as_os_str().is_empty() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(self.staging.join(parent))
                    .map_err(|e| Error::io(format!("cannot create {}", parent.display()), e))?;
            }
        }
        Ok(())
    }

    fn extract<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let t = entry.header().entry_type();
        if is_metadata_entry(t) {
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let rel = safe_relative(&raw).map_err(|r| refuse(&raw, r))?;
        match t {
            EntryType::Char | EntryType::Block => {
                return Err(refuse(
                    &raw,
                    "it is a device node; Safehand never creates device nodes",
                ))
            }
            EntryType::Fifo => {
                return Err(refuse(
                    &raw,
                    "it is a FIFO (named pipe); Safehand never creates FIFOs",
                ))
            }
            EntryType::GNUSparse => {
                return Err(refuse(
                    &raw,
                    "it is a GNU sparse-file entry, which Safehand does not extract",
                ))
            }
            EntryType::Regular
            | EntryType::Continuous
            | EntryType::Directory
            | EntryType::Symlink
            | EntryType::Link => {}
            _ => {
                return Err(refuse(
                    &raw,
                    "it has an entry type Safehand does not extract",
                ))
            }
        }
        if rel.as_os_str().is_empty() {
            if t == EntryType::Directory {
                return Ok(()); // "./": the folder itself
            }
            return Err(refuse(&raw, "it has an empty name"));
        }
        for ancestor in rel.ancestors().skip(1) {
            if self.symlinks.contains(ancestor) {
                return Err(refuse(&raw, "it would be written through a symbolic link"));
            }
            if self.files.contains(ancestor) {
                return Err(refuse(&raw, "its parent is a file in the payload"));
            }
        }
        let is_dir = t == EntryType::Directory;
        if self.files.contains(&rel) || (!is_dir && self.folders.contains(&rel)) {
            return Err(refuse(&raw, "it appears more than once in the payload"));
        }
        // Fail early (before decrypting gigabytes) if it would clash with what is in DIR.
        let dest = self.dir.join(&rel);
        if let Ok(existing) = fs::symlink_metadata(&dest) {
            if existing.is_dir() != is_dir {
                return Err(conflict(&dest, existing.is_dir()));
            }
            if !is_dir && !self.replace {
                return Err(Error::AlreadyExists { path: dest });
            }
        }

        let header = entry.header();
        // Keep permission bits, never setuid/setgid/sticky, and never more than the user's
        // umask allows (as tar and cp do): a 0777 entry becomes 0755 under umask 022.
        let mode = header.mode().unwrap_or(0o600) & 0o777 & !process_umask();
        let mtime = header.mtime().unwrap_or(0);
        let staged = self.staging.join(&rel);
        match t {
            EntryType::Directory => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&staged)
                    .map_err(|e| Error::io(format!("cannot create {}", rel.display()), e))?;
                if self.folders.insert(rel.clone()) {
                    self.summary.folders += 1;
                }
                self.folder_meta.push((rel, mode, mtime));
            }
            EntryType::Regular | EntryType::Continuous => {
                self.make_parent(&rel)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&staged)
                    .map_err(|e| Error::io(format!("cannot create {}", rel.display()), e))?;
                let mut written = 0u64;
                loop {
                    let n = entry
                        .read(&mut self.buf)
                        .map_err(|e| Error::io("cannot read the payload", e))?;
                    if n == 0 {
                        break;
                    }
                    file.write_all(&self.buf[..n])
                        .map_err(|e| Error::io(format!("cannot write {}", rel.display()), e))?;
                    written += n as u64;
                }
                file.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(|e| {
                        Error::io(format!("cannot set the mode of {}", rel.display()), e)
                    })?;
                filetime::set_file_handle_times(
                    &file,
                    None,
                    Some(FileTime::from_unix_time(mtime as i64, 0)),
                )
                .map_err(|e| Error::io(format!("cannot set the time of {}", rel.display()), e))?;
                self.files.insert(rel);
                self.summary.files += 1;
                self.summary.bytes += written;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|c| c.into_owned())
                    .ok_or_else(|| refuse(&raw, "it is a symbolic link without a target"))?;
                if link_target_inside(&rel, &target).is_none() {
                    return Err(refuse(
                        &raw,
                        format!(
                            "it is a symbolic link pointing outside the folder (to `{}`)",
                            String::from_utf8_lossy(&target)
                        ),
                    ));
                }
                self.make_parent(&rel)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &staged)
                    .map_err(|e| Error::io(format!("cannot create {}", rel.display()), e))?;
                let t = FileTime::from_unix_time(mtime as i64, 0);
                let _ = filetime::set_symlink_file_times(&staged, t, t);
                self.symlinks.insert(rel.clone());
                self.files.insert(rel);
                self.summary.links += 1;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|c| c.into_owned())
                    .ok_or_else(|| refuse(&raw, "it is a hard link without a target"))?;
                let target_rel = safe_relative(&target)
                    .map_err(|_| refuse(&raw, "it is a hard link pointing outside the folder"))?;
                let is_plain_file = self.files.contains(&target_rel)
                    && !self.symlinks.contains(&target_rel)
                    && fs::symlink_metadata(self.staging.join(&target_rel))
                        .map(|m| m.is_file())
                        .unwrap_or(false);
                if !is_plain_file {
                    return Err(refuse(
                        &raw,
                        format!(
                            "it is a hard link to `{}`, which is not a file earlier in the payload \
                             (links to anything outside the folder are refused)",
                            String::from_utf8_lossy(&target)
                        ),
                    ));
                }
                self.make_parent(&rel)?;
                fs::hard_link(self.staging.join(&target_rel), &staged)
                    .map_err(|e| Error::io(format!("cannot create {}", rel.display()), e))?;
                self.files.insert(rel);
                self.summary.links += 1;
            }
            _ => unreachable_entry()?,
        }
        Ok(())
    }

    /// Moves the staged entries into `dir`, after checking that none clashes.
    fn commit(&mut self) -> Result<()> {
        let mut moves = Vec::new();
        let mut merged = HashSet::new();
        plan(
            self.staging,
            self.dir,
            Path::new(""),
            self.replace,
            &mut moves,
            &mut merged,
        )?;
        for (from, to) in &moves {
            fs::rename(from, to)
                .map_err(|e| Error::io(format!("cannot move {} into place", to.display()), e))?;
        }
        // Folder modes and times last, deepest first: filling a folder changes its time, and a
        // read-only folder could not have been filled.
        self.folder_meta
            .sort_by_key(|(p, _, _)| std::cmp::Reverse(p.components().count()));
        for (rel, mode, mtime) in &self.folder_meta {
            if merged.contains(rel) {
                continue; // an existing folder of the user's: leave it as it was
            }
            let path = self.dir.join(rel);
            if fs::symlink_metadata(&path)
                .map(|m| m.is_dir())
                .unwrap_or(false)
            {
                let _ = fs::set_permissions(&path, fs::Permissions::from_mode(*mode));
                let _ = filetime::set_file_mtime(&path, FileTime::from_unix_time(*mtime as i64, 0));
            }
        }
        Ok(())
    }
}

fn unreachable_entry() -> Result<()> {
    Err(Error::NotAPayload("unexpected entry type".into()))
}

fn conflict(dest: &Path, existing_is_dir: bool) -> Error {
    Error::Io {
        context: format!("cannot extract to {}", dest.display()),
        source: io::Error::other(if existing_is_dir {
            "a folder of that name exists there and a file cannot replace it; move it away first"
        } else {
            "a file of that name exists there and a folder cannot replace it; move it away first"
        }),
    }
}

fn plan(
    staged: &Path,
    dest: &Path,
    rel: &Path,
    replace: bool,
    moves: &mut Vec<(PathBuf, PathBuf)>,
    merged: &mut HashSet<PathBuf>,
) -> Result<()> {
    let mut children: Vec<_> = fs::read_dir(staged)
        .map_err(|e| Error::io("cannot read the staging folder", e))?
        .collect::<io::Result<_>>()
        .map_err(|e| Error::io("cannot read the staging folder", e))?;
    children.sort_by_key(|c| c.file_name());
    for child in children {
        let name = child.file_name();
        let from = staged.join(&name);
        let to = dest.join(&name);
        let child_rel = rel.join(&name);
        let staged_is_dir = child
            .file_type()
            .map_err(|e| Error::io("cannot read the staging folder", e))?
            .is_dir();
        match fs::symlink_metadata(&to) {
            Err(_) => moves.push((from, to)),
            Ok(existing) => {
                if existing.is_dir() && staged_is_dir {
                    merged.insert(child_rel.clone());
                    plan(&from, &to, &child_rel, replace, moves, merged)?;
                } else if existing.is_dir() != staged_is_dir {
                    return Err(conflict(&to, existing.is_dir()));
                } else if !replace {
                    return Err(Error::AlreadyExists { path: to });
                } else {
                    moves.push((from, to));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_leave_the_folder_are_refused() {
        assert!(safe_relative(b"/etc/passwd").is_err());
        assert!(safe_relative(b"a/../../x").is_err());
        assert!(safe_relative(b"..").is_err());
        assert!(safe_relative(b"C:/x").is_err());
        assert_eq!(safe_relative(b"./a//b/").unwrap(), PathBuf::from("a/b"));
    }

    #[test]
    fn link_targets_must_stay_inside() {
        let e = Path::new("a/b/link");
        assert_eq!(link_target_inside(e, b"../c"), Some(PathBuf::from("a/c")));
        assert_eq!(link_target_inside(e, b"../../c"), Some(PathBuf::from("c")));
        assert_eq!(link_target_inside(e, b"../../../c"), None);
        assert_eq!(link_target_inside(e, b"/etc"), None);
        // `..` after a name could walk up through another link: refused.
        assert_eq!(link_target_inside(e, b"s/../c"), None);
    }

    #[test]
    fn pax_records_count_their_own_length() {
        let mut out = Vec::new();
        pax_record(&mut out, "path", b"abc");
        assert_eq!(out, b"12 path=abc\n");
        let mut out = Vec::new();
        let long = vec![b'x'; 95];
        pax_record(&mut out, "path", &long);
        let text = String::from_utf8(out.clone()).unwrap();
        let len: usize = text.split(' ').next().unwrap().parse().unwrap();
        assert_eq!(len, out.len());
    }

    #[test]
    fn long_ascii_paths_split_into_prefix_and_name() {
        let mut name = [0u8; 100];
        let mut prefix = [0u8; 155];
        let path = format!("{}/{}", "d".repeat(120), "f".repeat(50));
        assert!(set_ustar_path(&mut name, &mut prefix, path.as_bytes()));
        assert_eq!(&prefix[..120], "d".repeat(120).as_bytes());
        let mut name = [0u8; 100];
        let mut prefix = [0u8; 155];
        assert!(!set_ustar_path(&mut name, &mut prefix, "é".as_bytes()));
        assert!(!set_ustar_path(
            &mut name,
            &mut prefix,
            "x".repeat(300).as_bytes()
        ));
    }
}
