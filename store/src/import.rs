//! Importing a path whose NAR comes from outside: a binary cache, a peer, a bundle.
//!
//! The archive is streamed into staging under `var/tmp` (never held in memory), hashed as it
//! is read and refused the moment it runs past the size it was promised. Only a staged path
//! whose NAR hash and size match what was promised can be committed: moved into the store
//! and registered, in one transaction, with the same durability steps as a local add.
//! A staged path that is dropped uncommitted is removed.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::add::Added;
use crate::db::{EntryRecord, EntryRecordKind};
use crate::dirs::StoreDirs;
use crate::error::{Result, StoreError};
use crate::hash::Blake3;
use crate::locks::PathLock;
use crate::nar::parse::{io_error, parse_nar, NarError, NarSink};
use crate::nar::restore::{create_file, write_contents};
use crate::nar::{NarDigest, NarLayout};
use crate::output::{Provenance, Scanned};
use crate::path::StorePath;
use crate::store::Store;
use crate::{canon, failpoint, sync};

/// What a cache or bundle promised about one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The logical store path.
    pub path: String,
    pub nar_hash: Blake3,
    pub nar_size: u64,
    /// Logical store paths; may include the path itself.
    pub references: Vec<String>,
    pub ca: Option<String>,
    pub deriver: Option<String>,
    pub signatures: Vec<String>,
}

/// A NAR unpacked under `var/tmp` whose hash and size matched; removed on drop unless committed.
#[derive(Debug)]
pub struct Staged {
    expected: Expected,
    staging: PathBuf,
    entries: Vec<EntryRecord>,
    done: bool,
}

impl Staged {
    pub fn expected(&self) -> &Expected {
        &self.expected
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.done {
            let _ = canon::remove_tree(&self.staging);
        }
    }
}

static STAGING_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Largest chunk copied from the archive to a file at once.
const COPY_BUFFER: usize = 256 * 1024;

/// Checks what can be checked before a byte is read: the path belongs to this store, and a
/// content-addressed path is named after the hash and references it claims.
fn check_name(dirs: &StoreDirs, expected: &Expected) -> Result<StorePath> {
    let path = dirs.store_dir.parse_path(&expected.path)?;
    for reference in &expected.references {
        dirs.store_dir.parse_path(reference)?;
    }
    let Some(ca) = &expected.ca else {
        return Ok(path);
    };
    let Some(hash) = ca.strip_prefix("source:") else {
        return Err(mismatch(
            expected,
            "content address",
            "source:blake3:<hex>",
            ca,
        ));
    };
    if Blake3::parse(hash) != Some(expected.nar_hash) {
        return Err(mismatch(
            expected,
            "content address",
            &format!("source:{}", expected.nar_hash),
            ca,
        ));
    }
    let others: Vec<String> = expected
        .references
        .iter()
        .filter(|r| **r != expected.path)
        .cloned()
        .collect();
    let named = StorePath::for_source(&dirs.store_dir, &expected.nar_hash, &others, path.name())?;
    if named != path {
        return Err(mismatch(
            expected,
            "store path (content-addressed: named by its NAR hash and references)",
            &dirs.store_dir.display_path(&named),
            &expected.path,
        ));
    }
    Ok(path)
}

fn mismatch(expected: &Expected, what: &str, wanted: &str, actual: &str) -> StoreError {
    StoreError::ImportMismatch {
        path: expected.path.clone(),
        what: what.to_owned(),
        expected: wanted.to_owned(),
        actual: actual.to_owned(),
    }
}

/// Streams the uncompressed NAR from `reader` into staging, hashing it as it goes. Fails,
/// leaving nothing behind, when the archive is malformed or is not what `expected` says.
pub fn stage_nar(
    dirs: &StoreDirs,
    reader: &mut dyn Read,
    expected: Expected,
    advance: &dyn Fn(u64),
) -> Result<Staged> {
    check_name(dirs, &expected)?;
    let staging = dirs.tmp().join(format!(
        "{}-{}.import",
        std::process::id(),
        STAGING_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let mut staged = Staged {
        expected,
        staging,
        entries: Vec::new(),
        done: false,
    };
    let mut hashing = HashingReader {
        inner: reader,
        hasher: blake3::Hasher::new(),
        read: 0,
        limit: staged.expected.nar_size,
        advance,
    };
    let mut sink = ImportSink {
        root: staged.staging.clone(),
        entries: Vec::new(),
        directories: Vec::new(),
        buf: vec![0; COPY_BUFFER],
    };
    match parse_nar(&mut hashing, &mut sink) {
        Ok(_) => {}
        Err(NarError::Read { source, .. }) if source.kind() == io::ErrorKind::FileTooLarge => {
            return Err(mismatch(
                &staged.expected,
                "NAR size",
                &staged.expected.nar_size.to_string(),
                "more (the archive runs on past it)",
            ))
        }
        Err(e) => return Err(e.into()),
    }
    let actual = Blake3::from(hashing.hasher.finalize());
    if hashing.read != staged.expected.nar_size {
        let (wanted, read) = (
            staged.expected.nar_size.to_string(),
            hashing.read.to_string(),
        );
        return Err(mismatch(&staged.expected, "NAR size", &wanted, &read));
    }
    if actual != staged.expected.nar_hash {
        let wanted = staged.expected.nar_hash.to_string();
        return Err(mismatch(
            &staged.expected,
            "NAR hash",
            &wanted,
            &actual.to_string(),
        ));
    }
    sink.canonical_directories()?;
    staged.entries = sink.entries;
    Ok(staged)
}

/// Hashes and counts what the parser reads, and refuses to read past the promised size.
struct HashingReader<'a> {
    inner: &'a mut dyn Read,
    hasher: blake3::Hasher,
    read: u64,
    limit: u64,
    advance: &'a dyn Fn(u64),
}

impl Read for HashingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // One byte past the limit is asked for, so a longer archive is caught, not truncated.
        let room = (self.limit + 1).saturating_sub(self.read);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        if want == 0 {
            return Err(io::ErrorKind::FileTooLarge.into());
        }
        let n = self.inner.read(&mut buf[..want])?;
        if self.read + n as u64 > self.limit {
            return Err(io::ErrorKind::FileTooLarge.into());
        }
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        (self.advance)(n as u64);
        Ok(n)
    }
}

/// Writes the archive with the store's canonical metadata and records each entry as
/// [`crate::db::Db::register`] wants it (file hashes computed while writing).
struct ImportSink {
    root: PathBuf,
    entries: Vec<EntryRecord>,
    directories: Vec<PathBuf>,
    buf: Vec<u8>,
}

impl ImportSink {
    fn target(&self, rel: &Path) -> PathBuf {
        crate::nar::layout::entry_path(&self.root, rel)
    }

    fn record(&mut self, rel: &Path, size: u64, kind: EntryRecordKind) {
        self.entries.push(EntryRecord {
            rel: rel.as_os_str().as_bytes().to_vec(),
            size,
            kind,
        });
    }

    /// Read-only directories, innermost first (a parent must stay writable while its
    /// children are changed).
    fn canonical_directories(&self) -> Result<()> {
        for dir in self.directories.iter().rev() {
            canon::directory(dir)?;
        }
        Ok(())
    }
}

impl NarSink for ImportSink {
    fn directory(&mut self, rel: &Path) -> Result<(), NarError> {
        let full = self.target(rel);
        fs_err::create_dir(&full).map_err(|e| io_error(&full, e))?;
        self.directories.push(full);
        self.record(rel, 0, EntryRecordKind::Directory);
        Ok(())
    }

    fn file(
        &mut self,
        rel: &Path,
        executable: bool,
        size: u64,
        contents: &mut dyn Read,
    ) -> Result<(), NarError> {
        let full = self.target(rel);
        let mut file = create_file(&full)?;
        let mut hasher = blake3::Hasher::new();
        write_contents(contents, &mut file, &full, &mut self.buf, |chunk| {
            hasher.update(chunk);
        })?;
        canon::regular(file.file(), &full, executable)
            .map_err(|e| NarError::Sink(e.to_string()))?;
        let hash = Blake3::from(hasher.finalize());
        self.record(rel, size, EntryRecordKind::Regular { executable, hash });
        Ok(())
    }

    fn symlink(&mut self, rel: &Path, target: &OsStr) -> Result<(), NarError> {
        let full = self.target(rel);
        fs_err::os::unix::fs::symlink(target, &full).map_err(|e| io_error(&full, e))?;
        canon::set_times_nofollow(&full).map_err(|e| NarError::Sink(e.to_string()))?;
        let target = target.as_bytes().to_vec();
        self.record(rel, 0, EntryRecordKind::Symlink { target });
        Ok(())
    }
}

impl Store {
    /// Moves a staged path into the store and registers it with its signatures. Its
    /// references other than itself must be valid already: commit in dependency order.
    /// A path that is valid already is left as it is (`added: false`).
    pub fn commit_staged(&mut self, staged: Staged) -> Result<Added> {
        self.commit(staged, false)
    }

    /// Commits staged paths in the order given (dependency order), with one `syncfs` for all
    /// of them instead of a sync per path. Stops at the first failure; what was committed
    /// before it stays valid (each with its references).
    pub fn commit_all(&mut self, staged: Vec<Staged>) -> Result<Vec<Added>> {
        if staged.is_empty() {
            return Ok(Vec::new());
        }
        sync::syncfs(&self.dirs.tmp())?;
        staged
            .into_iter()
            .map(|one| self.commit(one, true))
            .collect()
    }

    fn commit(&mut self, mut staged: Staged, synced: bool) -> Result<Added> {
        let expected = staged.expected.clone();
        let path = self.dirs.store_dir.parse_path(&expected.path)?;
        let mut references = expected.references.clone();
        references.sort();
        references.dedup();
        let mut protect = vec![expected.path.clone()];
        protect.extend(references.iter().cloned());
        self.protect(&protect)?;
        let existing = Added {
            path: expected.path.clone(),
            nar_hash: expected.nar_hash.to_string(),
            nar_size: expected.nar_size,
            references: references.clone(),
            added: false,
        };
        if self.db.is_valid(&expected.path)? {
            return Ok(existing);
        }
        let _lock = PathLock::acquire(&self.dirs, path.digest())?;
        if self.db.is_valid(&expected.path)? {
            return Ok(existing);
        }
        for reference in references.iter().filter(|r| **r != expected.path) {
            if !self.db.is_valid(reference)? {
                return Err(StoreError::BadInput {
                    path: PathBuf::from(&expected.path),
                    why: format!("its reference {reference} is not a valid path here: import the references first (the whole closure, in dependency order)"),
                });
            }
        }
        let scanned = Scanned {
            layout: NarLayout::of(&staged.staging)?,
            digest: NarDigest {
                hash: expected.nar_hash,
                size: expected.nar_size,
                references: Default::default(),
            },
            references,
            entries: std::mem::take(&mut staged.entries),
        };
        let refused = |why: String| StoreError::BadInput {
            path: PathBuf::from(&expected.path),
            why,
        };
        let added = self.move_into_store(
            &staged.staging,
            &path,
            &scanned,
            Provenance {
                ca: expected.ca.as_deref(),
                deriver: expected.deriver.as_deref(),
                signatures: &expected.signatures,
                synced,
                points: [
                    "import:before-rename",
                    "import:after-rename",
                    "import:after-register",
                ],
            },
            &refused,
        )?;
        staged.done = true;
        Ok(added)
    }

    /// Atomically puts a good copy in place of a valid path whose files are damaged or gone:
    /// the staged tree and the damaged one swap places in one `renameat2(RENAME_EXCHANGE)`,
    /// then the damaged one is removed. The staged copy must have the recorded NAR hash.
    pub fn replace_damaged(&mut self, mut staged: Staged) -> Result<()> {
        let expected = staged.expected.clone();
        let Some(info) = self.db.path_info(&expected.path)? else {
            return Err(StoreError::NotValid(expected.path));
        };
        if info.nar_hash != expected.nar_hash.to_string() {
            return Err(mismatch(
                &expected,
                "NAR hash (of the replacement, against the registered one)",
                &info.nar_hash,
                &expected.nar_hash.to_string(),
            ));
        }
        let path = self.dirs.store_dir.parse_path(&expected.path)?;
        let _lock = PathLock::acquire(&self.dirs, path.digest())?;
        let dest = self.physical(&path);
        let layout = NarLayout::of(&staged.staging)?;
        sync::sync_tree(&staged.staging, &layout)?;
        let is_dir = fs_err::symlink_metadata(&staged.staging)?.is_dir();
        if is_dir {
            canon::make_writable(&staged.staging)?;
        }
        let present = fs_err::symlink_metadata(&dest).is_ok();
        if present {
            if fs_err::symlink_metadata(&dest)?.is_dir() {
                canon::make_writable(&dest)?;
            }
            nix::fcntl::renameat2(
                None,
                &staged.staging,
                None,
                &dest,
                nix::fcntl::RenameFlags::RENAME_EXCHANGE,
            )
            .map_err(|errno| crate::error::io_at("swap in the repaired copy of", &dest, errno))?;
        } else {
            fs_err::rename(&staged.staging, &dest)?;
            staged.done = true;
        }
        if is_dir {
            canon::directory(&dest)?;
            sync::fsync_dir(&dest)?;
        }
        sync::fsync_dir(&self.dirs.store())?;
        failpoint::hit("repair:after-swap");
        // What now lies at the staging name is the damaged tree: the drop removes it.
        Ok(())
    }
}

#[cfg(test)]
mod tests;
