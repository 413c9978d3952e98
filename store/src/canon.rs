//! Canonical metadata of store objects: read-only modes and modification time 1.

use std::fs::{File, FileTimes, Permissions};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;

use crate::error::Result;

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
    let annotate = |e: std::io::Error| {
        std::io::Error::new(
            e.kind(),
            format!("failed to set metadata of '{}': {e}", path.display()),
        )
    };
    file.set_permissions(Permissions::from_mode(file_mode(executable)))
        .map_err(annotate)?;
    file.set_times(FileTimes::new().set_accessed(mtime()).set_modified(mtime()))
        .map_err(annotate)?;
    Ok(())
}

pub fn directory(path: &Path) -> Result<()> {
    fs_err::set_permissions(path, Permissions::from_mode(DIR_MODE))?;
    set_times_nofollow(path)
}

pub fn set_times_nofollow(path: &Path) -> Result<()> {
    let one = TimeSpec::new(1, 0);
    utimensat(None, path, &one, &one, UtimensatFlags::NoFollowSymlink).map_err(|errno| {
        std::io::Error::new(
            std::io::Error::from(errno).kind(),
            format!("failed to set the times of '{}': {errno}", path.display()),
        )
    })?;
    Ok(())
}

/// Makes a store directory writable for a moment (deleting, hard-linking into it).
pub fn make_writable(path: &Path) -> Result<()> {
    fs_err::set_permissions(path, Permissions::from_mode(0o755))?;
    Ok(())
}

/// Removes a tree that may hold read-only directories.
pub fn remove_tree(path: &Path) -> Result<()> {
    let meta = match fs_err::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if meta.is_dir() {
        for entry in walkdir::WalkDir::new(path).follow_links(false) {
            let entry = entry.map_err(|e| {
                std::io::Error::other(format!("failed to walk '{}': {e}", path.display()))
            })?;
            if entry.file_type().is_dir()
                && entry
                    .metadata()
                    .map(|m| m.permissions().mode() & 0o200 == 0)
                    .unwrap_or(false)
            {
                make_writable(entry.path())?;
            }
        }
        fs_err::remove_dir_all(path)?;
    } else {
        fs_err::remove_file(path)?;
    }
    Ok(())
}
