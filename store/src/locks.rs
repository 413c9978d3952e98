//! Locks between noodle processes: the GC lock, per-path locks, and temporary roots.
//!
//! Protocol (the GC side is in gc.rs):
//! - every process that creates store paths holds an exclusive lock on `temproots/<pid>` for
//!   its whole life; a lock the GC can take means the owner is dead;
//! - a path is added to that file under a *shared* GC lock, and the GC holds the lock
//!   *exclusively* while it reads roots and invalidates, so a temporary root is either seen by a
//!   running collection or written after that collection has decided;
//! - adding one path is serialised by a lock file named after its digest.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::dirs::StoreDirs;
use crate::error::{io_at, Result};

fn open_lock_file(path: &Path) -> Result<File> {
    Ok(fs_err::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?
        .into_parts()
        .0)
}

fn lock(file: File, arg: FlockArg, path: &Path) -> Result<Flock<File>> {
    Flock::lock(file, arg).map_err(|(_, errno)| io_at("lock", path, errno).into())
}

/// Locks `path` exclusively, retrying until the locked file is the one the name points to
/// (whoever unlinks a lock file does so while holding it, so a waiter may end up holding the
/// lock of an unlinked file, which excludes nobody).
fn lock_linked(path: &Path) -> Result<Flock<File>> {
    loop {
        let file = open_lock_file(path)?;
        let held = lock(file, FlockArg::LockExclusive, path)?;
        let ours = held.metadata()?;
        match fs_err::metadata(path) {
            Ok(now) if now.ino() == ours.ino() && now.dev() == ours.dev() => return Ok(held),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Tries to lock without waiting; `None` when someone else holds it.
fn try_lock(file: File, exclusive: bool, path: &Path) -> Result<Option<Flock<File>>> {
    let arg = if exclusive {
        FlockArg::LockExclusiveNonblock
    } else {
        FlockArg::LockSharedNonblock
    };
    match Flock::lock(file, arg) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(io_at("lock", path, errno).into()),
    }
}

/// The GC lock: exclusive for a collection's decision, shared to publish a temporary root.
pub struct GcLock {
    _lock: Flock<File>,
}

impl GcLock {
    pub fn exclusive(dirs: &StoreDirs) -> Result<Self> {
        let path = dirs.gc_lock();
        let file = open_lock_file(&path)?;
        Ok(Self {
            _lock: lock(file, FlockArg::LockExclusive, &path)?,
        })
    }

    pub fn shared(dirs: &StoreDirs) -> Result<Self> {
        let path = dirs.gc_lock();
        let file = open_lock_file(&path)?;
        Ok(Self {
            _lock: lock(file, FlockArg::LockShared, &path)?,
        })
    }
}

/// This process's temporary roots: paths it is creating or about to return.
pub struct TempRoots {
    file: Mutex<Flock<File>>,
    path: PathBuf,
    dirs: StoreDirs,
}

/// One temporary-roots file per process and store, shared by every `Store` handle the
/// process opens (builds open one per thread): the file's lock is per open file, so a second
/// handle locking it again would wait for the first forever.
static SHARED_TEMPROOTS: Mutex<Vec<(PathBuf, Weak<TempRoots>)>> = Mutex::new(Vec::new());

impl TempRoots {
    /// This process's temporary roots in the store of `dirs`, created on first use.
    pub fn shared(dirs: &StoreDirs) -> Result<Arc<Self>> {
        let path = dirs.temproots().join(std::process::id().to_string());
        let mut shared = SHARED_TEMPROOTS
            .lock()
            .map_err(|_| std::io::Error::other("temporary roots registry poisoned"))?;
        shared.retain(|(_, weak)| weak.strong_count() > 0);
        if let Some(existing) = shared
            .iter()
            .find(|(p, _)| *p == path)
            .and_then(|(_, weak)| weak.upgrade())
        {
            return Ok(existing);
        }
        let created = Arc::new(Self::create(dirs)?);
        shared.push((path, Arc::downgrade(&created)));
        Ok(created)
    }

    fn create(dirs: &StoreDirs) -> Result<Self> {
        let path = dirs.temproots().join(std::process::id().to_string());
        // A collection that opened the file before we locked it takes it for a dead process's
        // and unlinks it; a lock on an unlinked file protects nothing, so start again.
        let file = lock_linked(&path)?;
        // A file left by a dead process with our pid holds nothing of ours.
        file.set_len(0)?;
        Ok(Self {
            file: Mutex::new(file),
            path,
            dirs: dirs.clone(),
        })
    }

    /// Protects `paths` (logical store paths) from any collection that has not yet decided.
    pub fn add(&self, paths: &[String]) -> Result<()> {
        let _gc = GcLock::shared(&self.dirs)?;
        let mut text = String::new();
        for path in paths {
            text.push_str(path);
            text.push('\n');
        }
        let file = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("temporary roots file poisoned"))?;
        (&**file)
            .write_all(text.as_bytes())
            .map_err(|e| io_at("write", &self.path, e))?;
        Ok(())
    }
}

impl Drop for TempRoots {
    fn drop(&mut self) {
        // Best effort: a file left behind is removed by the next GC, which can lock it.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The temporary roots of live processes, and the pids of those processes. Files of dead
/// processes are removed. Call with the GC lock held exclusively.
pub fn live_temproots(dirs: &StoreDirs) -> Result<(HashSet<String>, HashSet<u32>)> {
    let mut roots = HashSet::new();
    let mut pids = HashSet::new();
    let own = std::process::id();
    for entry in fs_err::read_dir(dirs.temproots())? {
        let entry = entry?;
        let path = entry.path();
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let mut file = match fs_err::File::open(&path) {
            Ok(f) => f.into_parts().0,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        if pid != own {
            if let Some(_dead) = try_lock(file, false, &path)? {
                let _ = fs_err::remove_file(&path);
                continue;
            }
        }
        pids.insert(pid);
        roots.extend(text.lines().map(str::to_owned));
    }
    Ok((roots, pids))
}

/// Serialises work on one store path between processes.
pub struct PathLock {
    lock: Option<Flock<File>>,
    path: PathBuf,
}

impl PathLock {
    /// Like `acquire`, but calls `on_wait` first when another process holds the lock (so the
    /// user learns why nothing happens, e.g. another build of the same output).
    pub fn acquire_noting(dirs: &StoreDirs, digest: &str, on_wait: impl FnOnce()) -> Result<Self> {
        let path = dirs.locks().join(format!("{digest}.lock"));
        let file = open_lock_file(&path)?;
        if let Some(held) = try_lock(file, true, &path)? {
            let ours = held.metadata()?;
            if let Ok(now) = fs_err::metadata(&path) {
                if now.ino() == ours.ino() && now.dev() == ours.dev() {
                    return Ok(Self {
                        lock: Some(held),
                        path,
                    });
                }
            }
        } else {
            on_wait();
        }
        Self::acquire(dirs, digest)
    }

    pub fn acquire(dirs: &StoreDirs, digest: &str) -> Result<Self> {
        let path = dirs.locks().join(format!("{digest}.lock"));
        // The previous holder unlinks the file when done.
        let lock = lock_linked(&path)?;
        Ok(Self {
            lock: Some(lock),
            path,
        })
    }
}

impl Drop for PathLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        drop(self.lock.take());
    }
}

/// Whether the process with this pid holds its temporary-roots lock (so is alive and ours).
pub fn process_is_live(dirs: &StoreDirs, pid: u32) -> Result<bool> {
    if pid == std::process::id() {
        return Ok(true);
    }
    let path = dirs.temproots().join(pid.to_string());
    let file = match fs_err::File::open(&path) {
        Ok(f) => f.into_parts().0,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    Ok(try_lock(file, false, &path)?.is_none())
}

/// An exclusive lock on a long-lived lock file (a profile's), held until dropped. The file is
/// never unlinked, so waiters always queue on the same inode.
pub struct FileLock {
    _lock: Flock<File>,
}

impl FileLock {
    /// Takes the lock if no other process holds it.
    pub fn try_exclusive(path: &Path) -> Result<Option<Self>> {
        Ok(try_lock(open_lock_file(path)?, true, path)?.map(|held| Self { _lock: held }))
    }

    /// The locked descriptor, to hand to a child process: the lock belongs to the open file
    /// description, so the child holds it too, and keeps holding it if this process dies.
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self._lock.as_fd()
    }

    /// Takes over a lock handed down by a parent as descriptor `fd`; fails unless it really is
    /// the held lock on `path` (locking an open file description that already holds the lock
    /// succeeds at once; another file's would not be the same inode).
    pub fn adopt(fd: std::os::fd::OwnedFd, path: &Path) -> Result<Self> {
        let file = File::from(fd);
        let ours = file.metadata().map_err(|e| io_at("stat", path, e))?;
        let theirs = fs_err::metadata(path)?;
        if (ours.dev(), ours.ino()) != (theirs.dev(), theirs.ino()) {
            return Err(io_at("adopt lock", path, Errno::EBADF).into());
        }
        match try_lock(file, true, path)? {
            Some(held) => Ok(Self { _lock: held }),
            None => Err(io_at("adopt lock", path, Errno::EWOULDBLOCK).into()),
        }
    }

    /// Takes the lock, calling `on_wait` first when another process holds it.
    pub fn exclusive_noting(path: &Path, on_wait: impl FnOnce()) -> Result<Self> {
        if let Some(held) = try_lock(open_lock_file(path)?, true, path)? {
            return Ok(Self { _lock: held });
        }
        on_wait();
        Ok(Self {
            _lock: lock(open_lock_file(path)?, FlockArg::LockExclusive, path)?,
        })
    }
}
