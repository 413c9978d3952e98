//! Registering a build output (DESIGN.md §6). The builder wrote it in place under `var/tmp`
//! (same filesystem as the store); it is checked, canonicalised where it lies, hashed and
//! scanned for references, renamed into the store and registered in one transaction.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use crate::add::Added;
use crate::db::EntryRecord;
use crate::error::{io_at, Result, StoreError};
use crate::locks::PathLock;
use crate::nar::NarDigest;
use crate::nar::{hash_layout, Described, NarLayout};
use crate::path::validate_name;
use crate::path::StorePath;
use crate::refscan::HASH_LEN;
use crate::store::Store;
use crate::{canon, copy, db, failpoint, sync, verify};

/// A staged tree, hashed and scanned, ready to be moved into the store.
pub(crate) struct Scanned {
    pub(crate) layout: NarLayout,
    pub(crate) digest: NarDigest,
    pub(crate) references: Vec<String>,
    pub(crate) entries: Vec<EntryRecord>,
}

/// How a staged tree came to be, and the failure points its move passes.
pub(crate) struct Provenance<'a> {
    pub(crate) ca: Option<&'a str>,
    pub(crate) deriver: Option<&'a str>,
    pub(crate) signatures: &'a [String],
    pub(crate) points: [&'static str; 3],
    /// The caller synced the staged tree already (one syncfs for a whole closure).
    pub(crate) synced: bool,
}

/// Why a build's output may not enter the store.
fn refuse(path: &Path, rel: &Path, why: &str) -> StoreError {
    StoreError::BadOutput {
        path: path.to_owned(),
        why: format!("'{}' {why}", rel.display()),
    }
}

/// Refuses special files and setuid/setgid files, makes every directory traversable and
/// (when run as root) gives every entry to the store's owner, before canonicalisation.
fn check_and_own(root: &Path) -> Result<()> {
    let euid = nix::unistd::geteuid();
    let egid = nix::unistd::getegid();
    for entry in walkdir::WalkDir::new(root).follow_links(false) {
        let entry = entry.map_err(|e| {
            std::io::Error::other(format!("failed to walk '{}': {e}", root.display()))
        })?;
        let path = entry.path();
        let rel = path.strip_prefix(root).unwrap_or(path);
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let meta = fs_err::symlink_metadata(path)?;
        let kind = meta.file_type();
        let special = if kind.is_dir() || kind.is_file() || kind.is_symlink() {
            None
        } else if kind.is_block_device() || kind.is_char_device() {
            Some("is a device file")
        } else if kind.is_fifo() {
            Some("is a fifo")
        } else {
            Some("is a socket")
        };
        if let Some(why) = special {
            return Err(refuse(
                root,
                rel,
                &format!("{why}; a store path holds only regular files, directories and symlinks"),
            ));
        }
        if !kind.is_dir() && meta.mode() & 0o6000 != 0 {
            return Err(refuse(
                root,
                rel,
                &format!(
                    "is setuid/setgid (mode {:04o}); store paths never carry those bits",
                    meta.mode() & 0o7777
                ),
            ));
        }
        if meta.uid() != euid.as_raw() || meta.gid() != egid.as_raw() {
            nix::unistd::fchownat(
                None,
                path,
                Some(euid),
                Some(egid),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| io_at("change the owner of", path, e))?;
        }
        if kind.is_dir() && meta.mode() & 0o700 != 0o700 {
            fs_err::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    Ok(())
}

impl Store {
    /// Protects paths from garbage collection for as long as this store handle lives.
    pub fn protect(&mut self, paths: &[String]) -> Result<()> {
        self.temproots()?.add(paths)
    }

    /// Moves the output a build left at `staged` into the store as `path` and registers it.
    /// References are searched among `candidates` (the build's input closure) and `path`
    /// itself. The caller holds the output's `PathLock` and protects `candidates`.
    pub fn register_output(
        &mut self,
        staged: &Path,
        path: &StorePath,
        candidates: &[String],
        plan_hash: &str,
    ) -> Result<Added> {
        let logical = self.logical(path);
        check_and_own(staged)?;
        verify::fix_metadata(staged)?;
        let own = [logical.clone()];
        let scanned = self.scan_staged(staged, candidates.iter().chain(&own))?;
        let bad_output = |why: String| StoreError::BadOutput {
            path: staged.to_owned(),
            why,
        };
        self.move_into_store(
            staged,
            path,
            &scanned,
            Provenance {
                ca: None,
                deriver: Some(plan_hash),
                signatures: &[],
                synced: false,
                points: [
                    "build:before-rename",
                    "build:after-rename",
                    "build:after-register",
                ],
            },
            &bad_output,
        )
    }

    /// Adds a tree written in place under `var/tmp` (a profile generation) as a
    /// content-addressed path named `name`, moving it rather than copying it. References are
    /// searched among `candidates`. With `described`, the writer's description of the tree
    /// stands for walking it ([`Described`]). When the path is already valid the staged tree
    /// is removed and nothing else is written.
    pub fn add_staged(
        &mut self,
        staged: &Path,
        name: &str,
        candidates: &[String],
        described: Option<&Described>,
    ) -> Result<Added> {
        validate_name(name)?;
        let scanned = match described {
            Some(described) => {
                verify::fix_described_metadata(staged, described)?;
                let layout = NarLayout::of_described(staged, described)?;
                self.scan_layout(staged, layout, candidates.iter())?
            }
            None => {
                verify::fix_metadata(staged)?;
                self.scan_staged(staged, candidates.iter())?
            }
        };
        let path = StorePath::for_source(
            &self.dirs.store_dir,
            &scanned.digest.hash,
            &scanned.references,
            name,
        )?;
        let logical = self.logical(&path);
        let mut protect = vec![logical.clone()];
        protect.extend(scanned.references.iter().cloned());
        self.protect(&protect)?;
        let existing = Added {
            path: logical.clone(),
            nar_hash: scanned.digest.hash.to_string(),
            nar_size: scanned.digest.size,
            references: scanned.references.clone(),
            added: false,
        };
        if self.db.is_valid(&logical)? {
            canon::remove_tree(staged)?;
            return Ok(existing);
        }
        let _lock = PathLock::acquire(&self.dirs, path.digest())?;
        if self.db.is_valid(&logical)? {
            canon::remove_tree(staged)?;
            return Ok(existing);
        }
        let ca = format!("source:{}", scanned.digest.hash);
        let bad_input = |why: String| StoreError::BadInput {
            path: staged.to_owned(),
            why,
        };
        self.move_into_store(
            staged,
            &path,
            &scanned,
            Provenance {
                ca: Some(&ca),
                deriver: None,
                signatures: &[],
                synced: false,
                points: [
                    "add-staged:before-rename",
                    "add-staged:after-rename",
                    "add-staged:after-register",
                ],
            },
            &bad_input,
        )
    }

    /// Hashes a staged tree and finds which of `candidates` it references.
    fn scan_staged<'a>(
        &self,
        staged: &Path,
        candidates: impl Iterator<Item = &'a String>,
    ) -> Result<Scanned> {
        self.scan_layout(staged, NarLayout::of(staged)?, candidates)
    }

    fn scan_layout<'a>(
        &self,
        staged: &Path,
        layout: NarLayout,
        candidates: impl Iterator<Item = &'a String>,
    ) -> Result<Scanned> {
        let prefix = self.dirs.store_dir.as_str().len() + 1;
        let digest_of = |p: &str| -> Option<[u8; HASH_LEN]> {
            p.as_bytes().get(prefix..prefix + HASH_LEN)?.try_into().ok()
        };
        let by_digest: HashMap<[u8; HASH_LEN], String> = candidates
            .filter_map(|p| Some((digest_of(p)?, p.clone())))
            .collect();
        let wanted: HashSet<[u8; HASH_LEN]> = by_digest.keys().copied().collect();
        let digest = hash_layout(&layout, Some(&wanted), &|_| {})?;
        let references: Vec<String> = digest
            .references
            .iter()
            .filter_map(|d| by_digest.get(d).cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let entries = copy::record_layout(staged, &layout)?;
        Ok(Scanned {
            layout,
            digest,
            references,
            entries,
        })
    }

    /// Syncs a scanned tree, renames it to `path` and registers it. The caller holds the
    /// path's lock, so whatever lies at `path` unregistered is a crashed attempt's leftover.
    pub(crate) fn move_into_store(
        &mut self,
        staged: &Path,
        path: &StorePath,
        scanned: &Scanned,
        provenance: Provenance<'_>,
        refused: &dyn Fn(String) -> StoreError,
    ) -> Result<Added> {
        let logical = self.logical(path);
        let mut protect = vec![logical.clone()];
        protect.extend(scanned.references.iter().cloned());
        self.protect(&protect)?;
        for reference in scanned.references.iter().filter(|r| **r != logical) {
            if !self.db.is_valid(reference)? {
                return Err(refused(format!(
                    "its reference {reference} is no longer valid (deleted by a concurrent gc?): run the command again"
                )));
            }
        }
        let [before_rename, after_rename, after_register] = provenance.points;
        let dest = self.physical(path);
        canon::remove_tree(&dest)?;
        if !provenance.synced {
            sync::sync_tree(staged, &scanned.layout)?;
        }
        failpoint::hit(before_rename);
        // Moving a directory to another parent rewrites its `..` entry, which needs write
        // permission on it (for anyone but root): read-only comes after the move.
        let is_dir = fs_err::symlink_metadata(staged)?.is_dir();
        if is_dir {
            canon::make_writable(staged)?;
        }
        fs_err::rename(staged, &dest)?;
        if is_dir {
            canon::directory(&dest)?;
            sync::fsync_dir(&dest)?;
        }
        sync::fsync_dir(&self.dirs.store())?;
        failpoint::hit(after_rename);
        let registered = self.db.register(&db::Registration {
            path: &logical,
            nar_hash: &scanned.digest.hash,
            nar_size: scanned.digest.size,
            references: &scanned.references,
            ca: provenance.ca,
            deriver: provenance.deriver,
            entries: &scanned.entries,
            signatures: provenance.signatures,
        });
        if registered.is_err() {
            if let Ok(false) = self.db.is_valid(&logical) {
                let _ = canon::remove_tree(&dest);
            }
        }
        registered?;
        failpoint::hit(after_register);
        Ok(Added {
            path: logical,
            nar_hash: scanned.digest.hash.to_string(),
            nar_size: scanned.digest.size,
            references: scanned.references.clone(),
            added: true,
        })
    }

    /// The NAR hash, per-entry records and references of an output that is NOT to be
    /// registered (a `--check` rebuild), after the same checks and canonicalisation.
    pub fn inspect_output(&self, staged: &Path) -> Result<(crate::Blake3, Vec<db::EntryRecord>)> {
        check_and_own(staged)?;
        verify::fix_metadata(staged)?;
        let layout = NarLayout::of(staged)?;
        let digest = hash_layout(&layout, None, &|_| {})?;
        Ok((digest.hash, copy::record_tree(staged)?))
    }
}
