//! The checks of a bundle's manifest, before any NAR is read: every path belongs to this
//! store, is listed once, after the paths it refers to, and every reference outside the
//! bundle is valid here.

use std::collections::{HashMap, HashSet};

use noodle_store::import::{Expected, Staged};
use noodle_store::{Blake3, Store, StoreDir, StorePath};

use super::{ManifestPath, MANIFEST};
use crate::error::{CacheError, Result};

/// Larger NAR sizes are corruption or malice, not software.
const MAX_NAR: u64 = 1 << 40;

pub(super) struct Listed {
    pub expected: Expected,
    pub digest: String,
    /// Valid here already: its NAR is hashed, not staged.
    pub valid_here: bool,
    /// Its NAR was read and matched.
    pub proven: bool,
    pub staged: Option<Staged>,
}

/// `text` if it is exactly a store path of `store_dir` (not a path inside one).
fn canonical(store_dir: &StoreDir, text: &str) -> Option<StorePath> {
    let path = store_dir.parse_path(text).ok()?;
    (store_dir.display_path(&path) == text).then_some(path)
}

/// The references that are not paths of the bundle (checked valid here by `check_paths`).
pub(super) fn outside_references(paths: &[ManifestPath]) -> Vec<String> {
    let listed: HashSet<&str> = paths.iter().map(|p| p.path.as_str()).collect();
    let mut outside: Vec<String> = paths
        .iter()
        .flat_map(|p| &p.references)
        .filter(|r| !listed.contains(r.as_str()))
        .cloned()
        .collect();
    outside.sort();
    outside.dedup();
    outside
}

/// Every path of the manifest is a store path of this store, listed once, after the
/// paths it refers to; every reference is in the bundle or valid here.
pub(super) fn check_paths(
    store: &Store,
    paths: &[ManifestPath],
    refuse: &dyn Fn(String) -> CacheError,
) -> Result<Vec<Listed>> {
    let store_dir = store.store_dir();
    let not_a_path = |text: &str| {
        refuse(format!(
            "{MANIFEST} names '{text}', which is not a store path of {store_dir}"
        ))
    };
    let mut position: HashMap<&str, usize> = HashMap::new();
    let mut digests: HashSet<String> = HashSet::new();
    let mut listed = Vec::with_capacity(paths.len());
    for (i, p) in paths.iter().enumerate() {
        let parsed = canonical(store_dir, &p.path).ok_or_else(|| not_a_path(&p.path))?;
        if position.insert(&p.path, i).is_some() || !digests.insert(parsed.digest().into()) {
            return Err(refuse(format!("{MANIFEST} lists {} twice", p.path)));
        }
        let nar_hash = p
            .nar_hash
            .strip_prefix(Blake3::PREFIX)
            .and_then(Blake3::parse)
            .ok_or_else(|| {
                refuse(format!(
                    "{MANIFEST}: the NAR hash '{}' of {} is not blake3:<64 hex digits>",
                    p.nar_hash, p.path
                ))
            })?;
        if p.nar_size == 0 || p.nar_size > MAX_NAR {
            return Err(refuse(format!(
                "{MANIFEST}: the NAR size {} of {} is absurd",
                p.nar_size, p.path
            )));
        }
        listed.push(Listed {
            expected: Expected {
                path: p.path.clone(),
                nar_hash,
                nar_size: p.nar_size,
                references: p.references.clone(),
                ca: p.ca.clone(),
                deriver: p.deriver.clone(),
                signatures: p.signatures.clone(),
            },
            digest: parsed.digest().to_owned(),
            valid_here: store.db().is_valid(&p.path)?,
            proven: false,
            staged: None,
        });
    }
    for (i, p) in paths.iter().enumerate() {
        for reference in &p.references {
            canonical(store_dir, reference).ok_or_else(|| not_a_path(reference))?;
            match position.get(reference.as_str()) {
                Some(&at) if at <= i => {}
                Some(_) => {
                    return Err(refuse(format!(
                        "{MANIFEST} is not in dependency order: {} refers to {reference}, which is listed after it",
                        p.path
                    )))
                }
                None if store.db().is_valid(reference)? => {}
                None => {
                    return Err(refuse(format!(
                        "{} refers to {reference}, which is neither in the bundle nor valid in this store: the bundle is not closure-complete (import {reference} first, or export the whole closure)",
                        p.path
                    )))
                }
            }
        }
    }
    Ok(listed)
}
