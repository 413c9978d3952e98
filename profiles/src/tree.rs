//! The merged tree of a generation, planned from the store's per-entry records (never by
//! walking package trees) and written as symlinks into the packages' store paths.
//!
//! As Nix's buildEnv: a directory only one package provides becomes one symlink to it; a
//! directory several provide becomes a real directory holding their entries. The same file
//! from two packages is a conflict, unless both have identical contents or one has a lower
//! priority number (which wins).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use noodle_store::db::{EntryRecord, EntryRecordKind};
use noodle_store::nar::Described;
use noodle_store::Store;

use crate::error::{ProfileError, Result};
use crate::manifest::{Package, FILE as MANIFEST_FILE};

#[derive(Debug)]
enum Claim {
    /// Indexes of the packages that have this directory.
    Directory(BTreeSet<usize>),
    /// A file or symlink, by the package that provides it.
    Leaf { owner: usize, kind: EntryRecordKind },
}

/// What `write_tree` made, described for the store (which then needs no walk of it).
#[derive(Debug, Default, Clone)]
pub struct Written {
    pub described: Described,
    pub directories: usize,
    pub links: usize,
}

fn label(package: &Package) -> String {
    format!("{} {}", package.name, package.version)
}

fn ancestors(rel: &[u8]) -> impl Iterator<Item = &[u8]> {
    rel.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'/')
        .map(move |(i, _)| &rel[..i])
}

fn shadowed(set: &HashSet<Vec<u8>>, rel: &[u8]) -> bool {
    !set.is_empty() && (set.contains(rel) || ancestors(rel).any(|a| set.contains(a)))
}

/// Plans the merged tree of `packages`: every entry's claim, conflicts settled or reported.
fn plan(store: &Store, packages: &[Package]) -> Result<BTreeMap<Vec<u8>, Claim>> {
    let mut order: Vec<usize> = (0..packages.len()).collect();
    order.sort_by(|a, b| {
        (packages[*a].priority, &packages[*a].name)
            .cmp(&(packages[*b].priority, &packages[*b].name))
    });
    let entries: Vec<Vec<EntryRecord>> = store.db().reading(|| {
        packages
            .iter()
            .map(|p| entries_of(store, p))
            .collect::<Result<_>>()
    })?;
    let mut entries: Vec<Option<Vec<EntryRecord>>> = entries.into_iter().map(Some).collect();
    let mut claims: BTreeMap<Vec<u8>, Claim> = BTreeMap::new();
    for index in order {
        let package = &packages[index];
        let entries = entries[index].take().expect("each package is planned once");
        let is_dir = entries
            .first()
            .is_some_and(|e| e.rel.is_empty() && e.kind == EntryRecordKind::Directory);
        if !is_dir {
            continue; // a single file or symlink: nothing to merge, the manifest lists it
        }
        let mut skipped: HashSet<Vec<u8>> = HashSet::new();
        for entry in entries.into_iter().skip(1) {
            if shadowed(&skipped, &entry.rel) {
                continue;
            }
            if entry.rel == MANIFEST_FILE.as_bytes() {
                return Err(ProfileError::Conflict {
                    file: MANIFEST_FILE.into(),
                    first: "the generation's own manifest".into(),
                    second: label(package),
                });
            }
            let incoming_dir = entry.kind == EntryRecordKind::Directory;
            let Some(existing) = claims.get_mut(&entry.rel) else {
                let claim = if incoming_dir {
                    Claim::Directory(BTreeSet::from([index]))
                } else {
                    Claim::Leaf {
                        owner: index,
                        kind: entry.kind,
                    }
                };
                claims.insert(entry.rel, claim);
                continue;
            };
            let rival = match existing {
                Claim::Directory(owners) if incoming_dir => {
                    owners.insert(index);
                    continue;
                }
                Claim::Leaf { kind, .. } if !incoming_dir && *kind == entry.kind => continue,
                // Earlier packages have the same or a lower priority number: the first one
                // with the same number is the one this package really conflicts with.
                Claim::Directory(owners) => *owners
                    .iter()
                    .find(|o| packages[**o].priority == package.priority)
                    .unwrap_or_else(|| owners.first().expect("a directory claim has an owner")),
                Claim::Leaf { owner, .. } => *owner,
            };
            if packages[rival].priority == package.priority {
                return Err(ProfileError::Conflict {
                    file: String::from_utf8_lossy(&entry.rel).into_owned(),
                    first: label(&packages[rival]),
                    second: label(package),
                });
            }
            skipped.insert(entry.rel);
        }
    }
    Ok(claims)
}

fn entries_of(store: &Store, package: &Package) -> Result<Vec<EntryRecord>> {
    let Some(id) = store.db().path_id(&package.path)? else {
        return Err(ProfileError::MissingPackage {
            name: package.name.clone(),
            path: package.path.clone(),
        });
    };
    Ok(store.db().entries(id)?)
}

/// Writes the merged tree of `packages` into the (existing, empty) directory `dest`: the
/// directories first, then the links, in parallel.
pub fn write_tree(store: &Store, packages: &[Package], dest: &Path) -> Result<Written> {
    use rayon::prelude::*;
    let claims = plan(store, packages)?;
    let mut directories = Vec::new();
    let mut links: Vec<(&[u8], usize)> = Vec::new();
    let mut linked: HashSet<&[u8]> = HashSet::new();
    for (rel, claim) in &claims {
        if !linked.is_empty() && ancestors(rel).any(|a| linked.contains(a)) {
            continue;
        }
        match claim {
            Claim::Directory(owners) if owners.len() > 1 => directories.push(rel.as_slice()),
            Claim::Directory(owners) => {
                linked.insert(rel);
                links.push((
                    rel,
                    *owners.first().expect("a directory claim has an owner"),
                ));
            }
            Claim::Leaf { owner, .. } => links.push((rel, *owner)),
        }
    }
    let target = |rel: &[u8], owner: usize| Path::new(&packages[owner].path).join(rel_path(rel));
    let mut described = Described::default();
    for rel in &directories {
        fs_err::create_dir(dest.join(rel_path(rel)))?;
        described.directory(rel_path(rel));
    }
    links
        .par_iter()
        .try_for_each(|(rel, owner)| -> Result<()> {
            fs_err::os::unix::fs::symlink(target(rel, *owner), dest.join(rel_path(rel)))?;
            Ok(())
        })?;
    for (rel, owner) in &links {
        described.symlink(rel_path(rel), target(rel, *owner).into_os_string());
    }
    Ok(Written {
        described,
        directories: directories.len(),
        links: links.len(),
    })
}

fn rel_path(rel: &[u8]) -> &Path {
    use std::os::unix::ffi::OsStrExt;
    Path::new(std::ffi::OsStr::from_bytes(rel))
}
