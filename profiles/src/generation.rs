//! Generations: adding one (merged tree + manifest → store path → record → link), opening one
//! to switch to it, listing them, deleting them. Callers hold the profile's lock to write.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};

use noodle_store::{failpoint, Store};
use serde::Serialize;

use crate::error::{ProfileError, Result};
use crate::manifest::{Manifest, FILE as MANIFEST_FILE};
use crate::profile::{GenerationLink, Profile, ProfileLock};
use crate::records::{self, Record};
use crate::tree;

static STAGING_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A generation added by [`create`].
#[derive(Debug, Clone, Serialize)]
pub struct Created {
    pub number: u64,
    pub path: String,
    /// What changed from the generation it was based on, in one line.
    pub summary: String,
}

/// One line of `profile generations`.
#[derive(Debug, Clone, Serialize)]
pub struct GenerationInfo {
    pub number: u64,
    pub path: String,
    /// Seconds since the epoch.
    pub created_at: i64,
    pub summary: String,
    pub current: bool,
}

/// The manifest of the profile's current generation (empty when there is none).
pub fn current_manifest(store: &Store, profile: &Profile) -> Result<(Option<u64>, Manifest)> {
    match profile.current()? {
        None => Ok((None, Manifest::empty())),
        Some(number) => Ok((Some(number), open(store, profile, number)?.1)),
    }
}

/// Generation `number`, checked complete: its link exists, its store path is valid and
/// present, and its manifest reads.
pub fn open(store: &Store, profile: &Profile, number: u64) -> Result<(GenerationLink, Manifest)> {
    let generation = profile.generation(number)?;
    let damaged = |why: String| ProfileError::Damaged { number, why };
    let path = store.parse_path(&generation.path).map_err(|_| {
        damaged(format!(
            "its link names '{}', which is not a store path",
            generation.path
        ))
    })?;
    if !store.db().is_valid(&generation.path)? {
        return Err(damaged(format!(
            "its store path {} is not valid in the store database (deleted outside noodle?)",
            generation.path
        )));
    }
    let physical = store.physical(&path);
    if std::fs::symlink_metadata(&physical).is_err() {
        return Err(damaged(format!(
            "its store path {} is missing from the disk ({}); `noodle store verify --repair` forgets it",
            generation.path,
            physical.display()
        )));
    }
    let manifest = Manifest::read(&physical, &generation.path)?;
    Ok((generation, manifest))
}

/// Adds `manifest` as a new generation of `profile`, complete and registered, with its link;
/// the profile is not switched to it. `Ok(None)` when it installs exactly what `base` (the
/// current generation) installs.
pub fn create(
    store: &mut Store,
    profile: &Profile,
    _lock: &ProfileLock,
    base: &Manifest,
    manifest: &Manifest,
) -> Result<Option<Created>> {
    if base.same_packages(manifest) {
        return Ok(None);
    }
    let staging = store.dirs().tmp().join(format!(
        "{}-{}.generation",
        std::process::id(),
        STAGING_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let added = (|| -> Result<_> {
        fs_err::create_dir(&staging)?;
        let mut written = tree::write_tree(store, &manifest.packages, &staging)?;
        fs_err::write(staging.join(MANIFEST_FILE), manifest.to_json())?;
        written.described.file(std::path::Path::new(MANIFEST_FILE));
        let paths: Vec<String> = manifest.packages.iter().map(|p| p.path.clone()).collect();
        Ok(store.add_staged(&staging, profile.name(), &paths, Some(&written.described))?)
    })();
    let added = match added {
        Ok(added) => added,
        Err(e) => {
            let _ = noodle_store::canon::remove_tree(&staging);
            return Err(e);
        }
    };
    failpoint::hit("profile:after-generation-path");
    let summary = base.changes_to(manifest).summary();
    let number = link_new(store, profile, &added.path, &summary)?;
    Ok(Some(Created {
        number,
        path: added.path,
        summary,
    }))
}

/// Records and links `path` as the profile's next generation.
fn link_new(store: &mut Store, profile: &Profile, path: &str, summary: &str) -> Result<u64> {
    let number = profile.numbers()?.last().map_or(1, |n| n + 1);
    records::record(
        store,
        profile.link(),
        number,
        &Record {
            path: path.to_owned(),
            created_at: records::now(),
            summary: summary.to_owned(),
        },
    )?;
    profile.add_generation_link(number, path)?;
    failpoint::hit("profile:after-generation-link");
    Ok(number)
}

/// The generation of `profile` whose store path is `path`; a valid generation store path that
/// no generation names yet (one from another profile, or copied from another machine) is
/// linked as a new generation, as `nix-env --set` does.
pub fn adopt(store: &mut Store, profile: &Profile, _lock: &ProfileLock, path: &str) -> Result<u64> {
    for number in profile.numbers()?.into_iter().rev() {
        if profile.generation(number)?.path == path {
            return Ok(number);
        }
    }
    let parsed = store.valid_path(path)?;
    let physical = store.physical(&parsed);
    if fs_err::symlink_metadata(physical.join(MANIFEST_FILE)).is_err() {
        return Err(ProfileError::NotAGeneration(path.to_owned()));
    }
    let manifest = Manifest::read(&physical, path)?;
    let (_, base) = current_manifest(store, profile)?;
    let summary = base.changes_to(&manifest).summary();
    link_new(store, profile, path, &summary)
}

/// Every generation with its store path, date and summary. Where a generation has a record,
/// it is used without reading the link: noodle writes a record before the link it describes,
/// replaces it whenever the number is reused, and forgets it after the link is deleted, so a
/// record whose link exists names the link's path. (Switching and diffs read the links.)
/// A generation without one (made by a crashed writer, or in a store whose records were lost)
/// is described from its link's time and the manifests.
pub fn list(store: &Store, profile: &Profile) -> Result<Vec<GenerationInfo>> {
    let numbers = profile.numbers()?;
    let current = profile.current()?;
    let records = records::load(store, profile.link())?;
    let mut infos = Vec::with_capacity(numbers.len());
    for (i, number) in numbers.iter().enumerate() {
        let (path, created_at, summary) = match records.get(number) {
            Some(record) => (
                record.path.clone(),
                record.created_at,
                record.summary.clone(),
            ),
            None => {
                let link = profile.generation(*number)?;
                let created = fs_err::symlink_metadata(&link.link)?.mtime();
                let before = match i {
                    0 => Ok(Manifest::empty()),
                    _ => profile
                        .generation(numbers[i - 1])
                        .and_then(|l| manifest_of(store, &l)),
                };
                let summary = match (before, manifest_of(store, &link)) {
                    (Ok(before), Ok(after)) => before.changes_to(&after).summary(),
                    _ => "(damaged: its manifest is unreadable)".into(),
                };
                (link.path, created, summary)
            }
        };
        infos.push(GenerationInfo {
            number: *number,
            path,
            created_at,
            summary,
            current: current == Some(*number),
        });
    }
    Ok(infos)
}

fn manifest_of(store: &Store, link: &GenerationLink) -> Result<Manifest> {
    let path = store.parse_path(&link.path)?;
    Manifest::read(&store.physical(&path), &link.path)
}

/// Deletes the links of `numbers` and forgets their records. Refuses the current generation
/// before deleting anything. The store paths stay until `noodle store gc`.
pub fn delete(
    store: &mut Store,
    profile: &Profile,
    _lock: &ProfileLock,
    numbers: &BTreeSet<u64>,
) -> Result<()> {
    if let Some(current) = profile.current()? {
        if numbers.contains(&current) {
            return Err(ProfileError::DeleteCurrent(current));
        }
    }
    let existing: BTreeSet<u64> = profile.numbers()?.into_iter().collect();
    if let Some(missing) = numbers.iter().find(|n| !existing.contains(n)) {
        return Err(ProfileError::NoSuchGeneration {
            profile: profile.link().to_owned(),
            number: *missing,
            available: existing.into_iter().collect(),
        });
    }
    let links: Vec<u64> = numbers.iter().copied().collect();
    profile.remove_generation_links(&links)?;
    // Also the records a crash between these two steps left behind: their links are gone.
    let orphans = records::load(store, profile.link())?
        .into_keys()
        .filter(|n| !existing.contains(n));
    let forgotten: Vec<u64> = links.iter().copied().chain(orphans).collect();
    records::forget(store, profile.link(), &forgotten)?;
    Ok(())
}
