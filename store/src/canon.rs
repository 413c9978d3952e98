//! Canonical metadata of store objects: read-only modes and modification time 1.

use std::fs::{File, FileTimes, Permissions};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;

use crate::error::{io_at, Result};

/// The modification time of everything in the store.
pub fn mtime() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1)
}

pub fn file_mode(executable: bool) -> u32 {
    if executable {
        0o555
    } else {
        0o444
    }
}

pub const DIR_MODE: u32 = 0o555;

/// Sets the mode and times of an open regular file.
pub fn regular(file: &File, path: &Path, executable: bool) -> Result<()> {
    file.set_permissions(Permissions::from_mode(file_mode(executable)))
        .map_err(|e| io_at("set the mode of", path, e))?;
    times(file, path)
}

/// Sets the access and modification times of an open file to the store's.
pub fn times(file: &File, path: &Path) -> Result<()> {
    file.set_times(FileTimes::new().set_accessed(mtime()).set_modified(mtime()))
        .map_err(|e| io_at("set the times of", path, e))?;
    Ok(())
}

pub fn directory(path: &Path) -> Result<()> {
    fs_err::set_permissions(path, Permissions::from_mode(DIR_MODE))?;
    set_times_nofollow(path)
}

pub fn set_times_nofollow(path: &Path) -> Result<()> {
    let one = TimeSpec::new(1, 0);
    utimensat(None, path, &one, &one, UtimensatFlags::NoFollowSymlink)
        .map_err(|errno| io_at("set the times of", path, errno))?;
    Ok(())
}

/// Makes a store directory writable for a moment (deleting, hard-linking into it).
pub fn make_writable(path: &Path) -> Result<()> {
    fs_err::set_permissions(path, Permissions::from_mode(0o755))?;
    Ok(())
}

/// Removes a tree that may hold read-only directories, in one pass: a directory is made
/// writable only when removing something from it is refused (never, for root).
pub fn remove_tree(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        // EISDIR from unlink of a directory (EPERM on some systems): empty it first.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EISDIR) | Some(libc::EPERM)) => {}
        Err(e) if is_denied(&e) => {
            make_parent_writable(path)?;
            return remove_tree(path);
        }
        Err(e) => return Err(annotate(path, "remove", e)),
    }
    empty_dir(path)?;
    retry_denied(path, || std::fs::remove_dir(path))
}

fn empty_dir(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if is_denied(&e) => {
            make_writable(dir)?;
            std::fs::read_dir(dir).map_err(|e| annotate(dir, "read", e))?
        }
        Err(e) => return Err(annotate(dir, "read", e)),
    };
    let mut writable = false;
    for entry in entries {
        let entry = entry.map_err(|e| annotate(dir, "read", e))?;
        let path = entry.path();
        let is_dir = entry
            .file_type()
            .map_err(|e| annotate(&path, "stat", e))?
            .is_dir();
        if is_dir {
            empty_dir(&path)?;
        }
        let remove = || {
            if is_dir {
                std::fs::remove_dir(&path)
            } else {
                std::fs::remove_file(&path)
            }
        };
        match remove() {
            Ok(()) => {}
            Err(e) if is_denied(&e) && !writable => {
                make_writable(dir)?;
                writable = true;
                remove().map_err(|e| annotate(&path, "remove", e))?;
            }
            Err(e) => return Err(annotate(&path, "remove", e)),
        }
    }
    Ok(())
}

fn is_denied(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::PermissionDenied
}

fn make_parent_writable(path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) => make_writable(parent),
        None => Ok(()),
    }
}

/// Runs `op` on `path`; if refused, makes its parent writable and tries once more.
pub fn retry_denied(path: &Path, op: impl Fn() -> std::io::Result<()>) -> Result<()> {
    match op() {
        Err(e) if is_denied(&e) => {
            make_parent_writable(path)?;
            op().map_err(|e| annotate(path, "remove", e))
        }
        other => other.map_err(|e| annotate(path, "remove", e)),
    }
}

fn annotate(path: &Path, what: &str, e: std::io::Error) -> crate::error::StoreError {
    io_at(what, path, e).into()
}
