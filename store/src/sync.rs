//! Durability helpers: contents reach the disk before the database says they exist.

use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::Result;

pub fn fsync_dir(dir: &Path) -> Result<()> {
    fs_err::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Flushes everything written to the filesystem holding `dir`, in one call: far cheaper than
/// an fsync per file when a tree of thousands of files was just written.
pub fn syncfs(dir: &Path) -> Result<()> {
    let file = fs_err::File::open(dir)?;
    nix::unistd::syncfs(file.as_raw_fd())
        .map_err(|errno| crate::error::io_at("sync the filesystem of", dir, errno))?;
    Ok(())
}

/// Trees with at most this many files and directories are synced entry by entry; larger ones
/// with syncfs. Symlinks do not count: their parent directory's fsync covers them.
const SMALL_TREE: usize = 256;

/// Makes a freshly written tree durable: fsync of each file and directory when the tree is
/// small (cheap, and independent of what else is being written to the filesystem), one
/// syncfs when it is large. A profile generation (thousands of symlinks in a few directories)
/// is small.
pub fn sync_tree(root: &Path, layout: &crate::nar::NarLayout) -> Result<()> {
    use crate::nar::EntryKind;
    let entries = layout.entries();
    let to_sync = entries
        .iter()
        .filter(|e| !matches!(e.kind, EntryKind::Symlink { .. }))
        .count();
    if to_sync > SMALL_TREE {
        return syncfs(root);
    }
    for entry in entries {
        let path = crate::nar::layout::entry_path(root, &entry.rel);
        match entry.kind {
            EntryKind::Regular { .. } | EntryKind::Directory => {
                fs_err::File::open(&path)?.sync_all()?
            }
            // A symlink's target lives in its inode, written with the directory entry that
            // the parent directory's fsync flushes.
            EntryKind::Symlink { .. } => {}
        }
    }
    Ok(())
}

/// Replaces `link` by a symlink to `target` atomically (temp name, rename, fsync the directory).
pub fn replace_symlink(target: &Path, link: &Path) -> Result<()> {
    let dir = link.parent().unwrap_or(Path::new("."));
    let name = link.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    fs_err::os::unix::fs::symlink(target, &tmp)?;
    fs_err::rename(&tmp, link)?;
    fsync_dir(dir)
}
