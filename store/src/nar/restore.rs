//! Unpacking a NAR into a new directory, atomically: into a temporary sibling that is renamed
//! into place only once the whole archive was read, validated and synced.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use fs_err::os::unix::fs::OpenOptionsExt;

use super::parse::{io_error, parse_nar, NarError, NarSink, NarStats};

/// Buffer used to copy file contents to disk.
const COPY_BUFFER_SIZE: usize = 256 * 1024;
/// Longest part of the destination's name reused in the temporary name, so
/// the temporary name stays below the usual 255-byte limit.
const MAX_TEMP_STEM: usize = 200;

/// Restores the NAR read from `reader` to `dest`, which must not exist and
/// whose parent directory must exist.
///
/// The archive is written to a temporary sibling
/// (`.<dest-name>.restore-<pid>-<counter>`); every file and directory is
/// synced, the temporary is renamed to `dest` and the parent directory is
/// synced. On any error everything created is removed again, so the
/// filesystem is left as it was. Regular files get mode 0644 (0755 when
/// executable), directories 0755.
pub fn restore_to_dir<R: Read>(reader: R, dest: &Path) -> Result<NarStats, NarError> {
    let invalid = |reason: String| NarError::InvalidDestination {
        path: dest.to_path_buf(),
        reason,
    };
    let name = dest
        .file_name()
        .ok_or_else(|| invalid("the path has no final name component".to_owned()))?;
    let parent = match dest.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => return Err(invalid("the path has no parent directory".to_owned())),
    };
    match fs_err::metadata(parent) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(invalid(format!(
                "'{}' is not a directory",
                parent.display()
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(invalid(format!(
                "its parent directory '{}' does not exist; create it first",
                parent.display()
            )))
        }
        Err(e) => return Err(io_error(parent, e)),
    }
    if exists(dest)? {
        return Err(NarError::DestinationExists {
            path: dest.to_path_buf(),
        });
    }

    let temp = temp_path(parent, name)?;
    let mut sink = RestoreSink {
        root: temp,
        created_root: false,
        dirs: Vec::new(),
        buf: vec![0; COPY_BUFFER_SIZE],
    };
    let stats = match parse_nar(reader, &mut sink).and_then(|stats| {
        sink.sync_dirs()?;
        Ok(stats)
    }) {
        Ok(stats) => stats,
        Err(e) => {
            sink.cleanup();
            return Err(e);
        }
    };
    if let Err(e) = rename_noreplace(&sink.root, dest) {
        sink.cleanup();
        return Err(if e.kind() == io::ErrorKind::AlreadyExists {
            NarError::DestinationExists {
                path: dest.to_path_buf(),
            }
        } else {
            io_error(dest, e)
        });
    }
    if let Err(e) = fs_err::File::open(parent).and_then(|dir| dir.sync_all()) {
        remove_tree(dest);
        return Err(io_error(parent, e));
    }
    Ok(stats)
}

/// Writes the archive below `root`, which it creates.
struct RestoreSink {
    root: PathBuf,
    /// Whether `root` has been created (and so must be removed on failure).
    created_root: bool,
    /// Every directory created, in creation order, to be synced.
    dirs: Vec<PathBuf>,
    buf: Vec<u8>,
}

impl RestoreSink {
    fn target(&self, path: &Path) -> PathBuf {
        if path.as_os_str().is_empty() {
            self.root.clone()
        } else {
            self.root.join(path)
        }
    }

    fn created(&mut self, path: &Path) {
        if path.as_os_str().is_empty() {
            self.created_root = true;
        }
    }

    fn sync_dirs(&self) -> Result<(), NarError> {
        for dir in self.dirs.iter().rev() {
            fs_err::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error(dir, e))?;
        }
        Ok(())
    }

    /// Removes everything this sink created (best effort).
    fn cleanup(&self) {
        if self.created_root {
            remove_tree(&self.root);
        }
    }
}

impl NarSink for RestoreSink {
    fn directory(&mut self, path: &Path) -> Result<(), NarError> {
        let full = self.target(path);
        fs_err::create_dir(&full).map_err(|e| io_error(&full, e))?;
        self.created(path);
        fs_err::set_permissions(&full, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| io_error(&full, e))?;
        self.dirs.push(full);
        Ok(())
    }

    fn file(
        &mut self,
        path: &Path,
        executable: bool,
        _size: u64,
        contents: &mut dyn Read,
    ) -> Result<(), NarError> {
        let full = self.target(path);
        let mut file = create_file(&full)?;
        self.created(path);
        write_contents(contents, &mut file, &full, &mut self.buf, |_| {})?;
        let mode = if executable { 0o755 } else { 0o644 };
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| io_error(&full, e))?;
        file.sync_all().map_err(|e| io_error(&full, e))
    }

    fn symlink(&mut self, path: &Path, target: &OsStr) -> Result<(), NarError> {
        let full = self.target(path);
        fs_err::os::unix::fs::symlink(target, &full).map_err(|e| io_error(&full, e))?;
        self.created(path);
        Ok(())
    }
}

/// A new file for an archive's entry, private until its contents are written.
pub(crate) fn create_file(full: &Path) -> Result<fs_err::File, NarError> {
    fs_err::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(full)
        .map_err(|e| io_error(full, e))
}

/// Copies an entry's contents from the archive into `file` through `buf`, showing each chunk
/// to `seen` (to hash it on the way).
pub(crate) fn write_contents(
    contents: &mut dyn Read,
    file: &mut fs_err::File,
    full: &Path,
    buf: &mut [u8],
    mut seen: impl FnMut(&[u8]),
) -> Result<(), NarError> {
    loop {
        let n = match contents.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(NarError::Io { path: None, source }),
        };
        seen(&buf[..n]);
        file.write_all(&buf[..n]).map_err(|e| io_error(full, e))?;
    }
}

/// Whether anything (even a dangling symlink) exists at `path`.
fn exists(path: &Path) -> Result<bool, NarError> {
    match fs_err::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error(path, e)),
    }
}

/// Picks an unused `<parent>/.<name>.restore-<pid>-<counter>`.
fn temp_path(parent: &Path, name: &OsStr) -> Result<PathBuf, NarError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let stem = &name.as_bytes()[..name.len().min(MAX_TEMP_STEM)];
    for _ in 0..1000 {
        let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut temp = OsString::from(".");
        temp.push(OsStr::from_bytes(stem));
        temp.push(format!(".restore-{}-{counter}", std::process::id()));
        let temp = parent.join(temp);
        if !exists(&temp)? {
            return Ok(temp);
        }
    }
    Err(NarError::InvalidDestination {
        path: parent.join(name),
        reason: format!(
            "could not find an unused temporary name in '{}'; remove stale '.*.restore-*' entries there",
            parent.display()
        ),
    })
}

/// Removes `path` and, if it is a directory, everything below it, without
/// following symlinks. Best effort: errors are ignored.
fn remove_tree(path: &Path) {
    let _ = match fs_err::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs_err::remove_dir_all(path),
        Ok(_) => fs_err::remove_file(path),
        Err(_) => Ok(()),
    };
}

/// Renames `from` to `to`, failing with `AlreadyExists` if `to` exists.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::errno::Errno;
        use nix::fcntl::{renameat2, RenameFlags};
        match renameat2(None, from, None, to, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => return Ok(()),
            // Not supported by this kernel or filesystem: fall back below.
            Err(Errno::EINVAL | Errno::ENOSYS) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
    if fs_err::symlink_metadata(to).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("'{}' already exists", to.display()),
        ));
    }
    fs_err::rename(from, to)
}

#[cfg(test)]
mod tests;
