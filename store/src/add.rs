//! Adding a tree to the store (DESIGN.md §5, invariant 2):
//! hash (parallel, read-only) → temporary root → already valid? done → copy into staging
//! (parallel, hashing each file) → canonical metadata → syncfs → rename into the store →
//! fsync the store directory → register in one transaction.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::error::{Result, StoreError};
use crate::hash::Blake3;
use crate::locks::PathLock;
use crate::nar::{hash_layout, NarLayout};
use crate::path::{validate_name, StorePath};
use crate::progress::Progress;
use crate::refscan::HASH_LEN;
use crate::store::Store;
use crate::{canon, copy, db, failpoint, sync};

#[derive(Debug, Default, Clone)]
pub struct AddOptions {
    /// The name part of the store path; defaults to the source's file name.
    pub name: Option<String>,
    /// Record references to valid store paths found in the tree's bytes.
    pub scan_references: bool,
    /// Also make `var/gcroots/<name>` a root of the result.
    pub gc_root: Option<String>,
    /// Refuse the tree, writing nothing, unless its NAR hash is this (a pinned source).
    pub expect_hash: Option<Blake3>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Added {
    pub path: String,
    pub nar_hash: String,
    pub nar_size: u64,
    pub references: Vec<String>,
    /// False when the path was already valid and nothing was written.
    pub added: bool,
}

static STAGING_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Resolves the argument the user named (following a symlink given on the command line).
fn resolve_source(source: &Path) -> Result<PathBuf> {
    // std, not fs_err: fs_err's wrapped error has no raw OS error to recognise a loop by.
    std::fs::canonicalize(source).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            StoreError::BadInput {
                path: source.to_owned(),
                why: "it is a symlink loop (too many levels of symbolic links)".into(),
            }
        } else {
            std::io::Error::new(
                e.kind(),
                format!("failed to canonicalize path `{}`: {e}", source.display()),
            )
            .into()
        }
    })
}

/// A gc root name is a plain file name; checked before anything is written.
fn check_gc_root_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(StoreError::BadInput {
            path: PathBuf::from(name),
            why: "a gc root name is a plain file name (no '/', not starting with '.')".into(),
        });
    }
    Ok(())
}

fn default_name(source: &Path) -> Result<String> {
    let name = source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    validate_name(&name).map_err(|_| StoreError::BadInput {
        path: source.to_owned(),
        why: format!(
            "its name '{name}' is not a valid store name ([A-Za-z0-9+._?=-], not starting with '.', at most 211 characters): pass --name NAME"
        ),
    })?;
    Ok(name)
}

impl Store {
    /// The hash parts of every valid path, for the reference scanner.
    fn reference_candidates(&self) -> Result<HashMap<[u8; HASH_LEN], String>> {
        let prefix = self.dirs.store_dir.as_str().len() + 1;
        Ok(self
            .db
            .all_paths()?
            .into_values()
            .filter_map(|path| {
                let digest: [u8; HASH_LEN] = path
                    .as_bytes()
                    .get(prefix..prefix + HASH_LEN)?
                    .try_into()
                    .ok()?;
                Some((digest, path))
            })
            .collect())
    }

    pub fn add_tree(
        &mut self,
        source: &Path,
        options: &AddOptions,
        progress: &dyn Progress,
    ) -> Result<Added> {
        let source = resolve_source(source)?;
        if let Some(root) = &options.gc_root {
            check_gc_root_name(root)?;
        }
        let name = match &options.name {
            Some(name) => {
                validate_name(name)?;
                name.clone()
            }
            None => default_name(&source)?,
        };
        let started = Instant::now();
        let layout = NarLayout::of(&source)?;

        let candidates = if options.scan_references {
            Some(self.reference_candidates()?)
        } else {
            None
        };
        let candidate_set: Option<HashSet<[u8; HASH_LEN]>> =
            candidates.as_ref().map(|c| c.keys().copied().collect());
        progress.phase("hashing", layout.nar_size());
        let advance = |n| progress.advance(n);
        let digest = hash_layout(&layout, candidate_set.as_ref(), &advance)?;
        progress.finish();
        progress.note(&format!(
            "hashed {} in {:.3} s",
            source.display(),
            started.elapsed().as_secs_f64()
        ));
        let references: Vec<String> = match &candidates {
            Some(c) => digest
                .references
                .iter()
                .filter_map(|d| c.get(d).cloned())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            None => Vec::new(),
        };
        if let Some(expected) = &options.expect_hash {
            if *expected != digest.hash {
                return Err(StoreError::HashMismatch {
                    path: source.clone(),
                    expected: expected.to_string(),
                    actual: digest.hash.to_string(),
                });
            }
        }
        let path = StorePath::for_source(&self.dirs.store_dir, &digest.hash, &references, &name)?;
        let logical = self.logical(&path);

        let mut protect = vec![logical.clone()];
        protect.extend(references.iter().cloned());
        self.temproots()?.add(&protect)?;

        let added = Added {
            path: logical.clone(),
            nar_hash: digest.hash.to_string(),
            nar_size: digest.size,
            references: references.clone(),
            added: false,
        };
        if self.db.is_valid(&logical)? {
            self.make_gc_root(options, &logical)?;
            return Ok(added);
        }
        for reference in &references {
            if !self.db.is_valid(reference)? {
                return Err(StoreError::BadInput {
                    path: source.clone(),
                    why: format!("its reference {reference} was deleted while adding (by a concurrent gc?): run the command again"),
                });
            }
        }

        let _lock = PathLock::acquire(&self.dirs, path.digest())?;
        if self.db.is_valid(&logical)? {
            self.make_gc_root(options, &logical)?;
            return Ok(added);
        }
        let dest = self.physical(&path);
        // Unregistered, and we hold its lock and a temporary root: a crash's leftover.
        canon::remove_tree(&dest)?;

        let staging = self.dirs.tmp().join(format!(
            "{}-{}.add",
            std::process::id(),
            STAGING_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = self.stage_and_register(
            &layout,
            &staging,
            &dest,
            &logical,
            &digest.hash,
            digest.size,
            &references,
            progress,
        );
        if result.is_err() {
            let _ = canon::remove_tree(&staging);
            // Renamed into the store but not registered (e.g. the database stayed locked): we
            // hold the path's lock, so the tree is ours and incomplete; don't leave it behind.
            if let Ok(false) = self.db.is_valid(&logical) {
                let _ = canon::remove_tree(&dest);
            }
        }
        result?;
        self.make_gc_root(options, &logical)?;
        Ok(Added {
            added: true,
            ..added
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn stage_and_register(
        &mut self,
        layout: &NarLayout,
        staging: &Path,
        dest: &Path,
        logical: &str,
        nar_hash: &Blake3,
        nar_size: u64,
        references: &[String],
        progress: &dyn Progress,
    ) -> Result<()> {
        progress.phase("copying", layout.nar_size());
        let started = Instant::now();
        let entries = copy::copy_tree(layout, staging, progress)?;
        progress.finish();
        let copied = started.elapsed().as_secs_f64();
        failpoint::hit("add:after-copy");
        sync::syncfs(&self.dirs.tmp())?;
        failpoint::hit("add:after-sync");
        fs_err::rename(staging, dest)?;
        if layout.entries().first().map(|e| &e.kind) == Some(&crate::nar::EntryKind::Directory) {
            canon::directory(dest)?;
            sync::fsync_dir(dest)?;
        }
        sync::fsync_dir(&self.dirs.store())?;
        failpoint::hit("add:after-rename");
        let ca = format!("source:{nar_hash}");
        self.db.register(&db::Registration {
            path: logical,
            nar_hash,
            nar_size,
            references,
            ca: Some(&ca),
            deriver: None,
            entries: &entries,
            signatures: &[],
        })?;
        failpoint::hit("add:after-register");
        progress.note(&format!(
            "copied in {copied:.3} s, synced and registered in {:.3} s",
            started.elapsed().as_secs_f64() - copied
        ));
        Ok(())
    }

    fn make_gc_root(&self, options: &AddOptions, logical: &str) -> Result<()> {
        let Some(name) = &options.gc_root else {
            return Ok(());
        };
        check_gc_root_name(name)?;
        sync::replace_symlink(Path::new(logical), &self.dirs.gcroots().join(name))
    }
}
