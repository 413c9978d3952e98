//! `store verify`: the database against the store directory, and optionally every path's
//! contents against its recorded hash (naming each damaged file).

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use rayon::prelude::*;

use crate::db::{EntryRecord, EntryRecordKind};
use crate::error::Result;
use crate::locks::{live_temproots, GcLock};
use crate::nar::{hash_layout, Described, NarLayout};
use crate::progress::Progress;
use crate::store::Store;
use crate::{canon, copy};

#[derive(Debug, Default, Clone)]
pub struct VerifyOptions {
    pub check_contents: bool,
    pub repair: bool,
    /// Only these paths (logical); all when empty.
    pub paths: Vec<String>,
}

/// Gets a good copy of a valid path from elsewhere (a binary cache) and swaps it in: how
/// `verify --repair` restores damaged or missing paths without this crate knowing of caches.
pub trait Restore {
    /// Where copies come from, for messages.
    fn origin(&self) -> String;
    fn restore(&self, store: &mut Store, path: &str) -> std::result::Result<(), String>;
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// Registered, but its files are gone.
    Missing,
    /// In the store directory, but not registered (e.g. left by a crash).
    Unregistered,
    /// Wrong permissions or times.
    Metadata,
    /// Contents differ from the recorded hash.
    Damaged,
    /// A staging or trash directory left in var/tmp by a dead process.
    StaleTemp,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    pub path: String,
    /// What exactly is wrong: the damaged or mis-set files, one line each.
    pub details: Vec<String>,
    pub repaired: bool,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct VerifyReport {
    pub checked: usize,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn unrepaired(&self) -> usize {
        self.problems.iter().filter(|p| !p.repaired).count()
    }
}

fn problem(kind: ProblemKind, path: &str, details: Vec<String>) -> Problem {
    Problem {
        kind,
        path: path.to_owned(),
        details,
        repaired: false,
    }
}

/// Metadata that differs from canonical, as one line per offending entry.
fn metadata_problems(root: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(root).follow_links(false) {
        let entry = entry.map_err(|e| {
            std::io::Error::other(format!("failed to walk '{}': {e}", root.display()))
        })?;
        let meta = entry.metadata().map_err(|e| {
            std::io::Error::other(format!("failed to stat '{}': {e}", entry.path().display()))
        })?;
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
        out.extend(entry_problems(rel, &meta));
    }
    Ok(out)
}

/// What is wrong with one entry's metadata (`rel` is empty for the root).
fn entry_problems(rel: &Path, meta: &std::fs::Metadata) -> Vec<String> {
    let mut out = Vec::new();
    let mode = meta.permissions().mode() & 0o7777;
    let wrong_mode = if meta.is_dir() {
        mode != canon::DIR_MODE
    } else if meta.is_file() {
        mode != 0o444 && mode != 0o555
    } else {
        false
    };
    let shown = if rel.as_os_str().is_empty() {
        ".".into()
    } else {
        rel.display().to_string()
    };
    if wrong_mode {
        out.push(format!("{shown}: mode {mode:04o}"));
    }
    if meta.mtime() != 1 {
        out.push(format!("{shown}: modification time {}", meta.mtime()));
    }
    if !meta.is_dir() && !meta.is_file() && !meta.file_type().is_symlink() {
        out.push(format!("{shown}: special file"));
    }
    out
}

/// Gives every entry of the tree its canonical metadata: files and symlinks in parallel
/// (a profile generation has thousands of symlinks), then directories, innermost first.
pub(crate) fn fix_metadata(root: &Path) -> Result<()> {
    let entries: Vec<walkdir::DirEntry> = walkdir::WalkDir::new(root)
        .follow_links(false)
        .contents_first(true)
        .into_iter()
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| std::io::Error::other(format!("failed to walk '{}': {e}", root.display())))?;
    let (directories, others): (Vec<_>, Vec<_>) =
        entries.into_iter().partition(|e| e.file_type().is_dir());
    others.par_iter().try_for_each(|entry| -> Result<()> {
        let path = entry.path();
        if entry.file_type().is_file() {
            let file = fs_err::File::open(path)?;
            let mode = file.metadata()?.permissions().mode();
            canon::regular(file.file(), path, mode & 0o100 != 0)?;
        } else {
            canon::set_times_nofollow(path)?;
        }
        Ok(())
    })?;
    for directory in directories {
        canon::directory(directory.path())?;
    }
    Ok(())
}

/// [`fix_metadata`] for a tree its writer described ([`Described`]): no walk.
pub(crate) fn fix_described_metadata(root: &Path, described: &Described) -> Result<()> {
    let symlinks: Vec<&Path> = described.symlinks().collect();
    symlinks
        .par_iter()
        .try_for_each(|rel| -> Result<()> { canon::set_times_nofollow(&root.join(rel)) })?;
    for rel in described.files() {
        let path = root.join(rel);
        let file = fs_err::File::open(&path)?;
        let mode = file.metadata()?.permissions().mode();
        canon::regular(file.file(), &path, mode & 0o100 != 0)?;
    }
    let mut directories: Vec<&Path> = described.directories().collect();
    directories.sort_by_key(|rel| std::cmp::Reverse(rel.components().count()));
    for rel in directories {
        canon::directory(&crate::nar::layout::entry_path(root, rel))?;
    }
    Ok(())
}

/// Which files differ between what was recorded and what is there.
pub fn damaged_files(recorded: &[EntryRecord], actual: &[EntryRecord]) -> Vec<String> {
    let show = |rel: &[u8]| {
        if rel.is_empty() {
            ".".to_owned()
        } else {
            String::from_utf8_lossy(rel).into_owned()
        }
    };
    let recorded: BTreeMap<&[u8], &EntryRecord> =
        recorded.iter().map(|e| (e.rel.as_slice(), e)).collect();
    let actual: BTreeMap<&[u8], &EntryRecord> =
        actual.iter().map(|e| (e.rel.as_slice(), e)).collect();
    let mut out = Vec::new();
    for (rel, want) in &recorded {
        match actual.get(rel) {
            None => out.push(format!("{}: missing", show(rel))),
            Some(have) if have != want => {
                let what = match (&want.kind, &have.kind) {
                    (
                        EntryRecordKind::Regular {
                            executable: a,
                            hash: x,
                        },
                        EntryRecordKind::Regular {
                            executable: b,
                            hash: y,
                        },
                    ) => {
                        if x != y {
                            "contents changed"
                        } else if a != b {
                            "executable bit changed"
                        } else {
                            "size changed"
                        }
                    }
                    (EntryRecordKind::Symlink { .. }, EntryRecordKind::Symlink { .. }) => {
                        "symlink target changed"
                    }
                    _ => "type changed",
                };
                out.push(format!("{}: {what}", show(rel)));
            }
            Some(_) => {}
        }
    }
    for rel in actual.keys().filter(|rel| !recorded.contains_key(*rel)) {
        out.push(format!(
            "{}: not part of the path (added afterwards)",
            show(rel)
        ));
    }
    out
}

impl Store {
    pub fn verify(
        &mut self,
        options: &VerifyOptions,
        progress: &dyn Progress,
    ) -> Result<VerifyReport> {
        self.verify_restoring(options, progress, None)
    }

    /// [`Store::verify`]; with `--repair`, damaged and missing paths are restored by `restore`.
    pub fn verify_restoring(
        &mut self,
        options: &VerifyOptions,
        progress: &dyn Progress,
        restore: Option<&dyn Restore>,
    ) -> Result<VerifyReport> {
        // Repairs remove and change files: keep collections and new temporary roots out.
        let _lock = if options.repair {
            Some(GcLock::exclusive(&self.dirs)?)
        } else {
            None
        };
        let infos = self.db.all_path_infos()?;
        let selected: Vec<_> = if options.paths.is_empty() {
            infos.clone()
        } else {
            let wanted: HashSet<&String> = options.paths.iter().collect();
            infos
                .iter()
                .filter(|(_, p, _, _)| wanted.contains(p))
                .cloned()
                .collect()
        };
        let mut report = VerifyReport {
            checked: selected.len(),
            problems: Vec::new(),
        };
        let store = self.dirs.store();
        let base = |p: &str| p.rsplit('/').next().unwrap_or_default().to_owned();

        let present: Vec<_> = selected
            .iter()
            .filter(|(_, path, _, _)| {
                let there = fs_err::symlink_metadata(store.join(base(path))).is_ok();
                if !there {
                    report.problems.push(problem(
                        ProblemKind::Missing,
                        path,
                        vec!["the whole path is gone".into()],
                    ));
                }
                there
            })
            .cloned()
            .collect();

        if options.paths.is_empty() {
            // Temporary roots before valid paths: an add that registers and exits between the
            // two reads is then in one or the other, never taken for a leftover.
            let (temp, live_pids) = live_temproots(&self.dirs)?;
            let valid = self
                .db
                .all_paths()?
                .into_iter()
                .map(|(id, p)| (p, id))
                .collect();
            for name in self.unregistered_entries(&valid, &temp)? {
                let path = format!("{}/{name}", self.dirs.store_dir);
                report
                    .problems
                    .push(problem(ProblemKind::Unregistered, &path, vec![]));
            }
            for stale in self.stale_temp_entries(&live_pids)? {
                report.problems.push(problem(
                    ProblemKind::StaleTemp,
                    &stale.display().to_string(),
                    vec![],
                ));
            }
        }

        // Without --check-contents, sizes still catch a truncated, grown or replaced file: the
        // NAR size of what is on disk against the recorded one (a walk, no reading).
        let check_sizes = !options.check_contents;
        let checked: Vec<(String, Vec<String>, Option<String>)> = present
            .par_iter()
            .map(|(_, path, _, nar_size)| {
                let physical = store.join(base(path));
                if !check_sizes {
                    return Ok((path.clone(), metadata_problems(&physical)?, None));
                }
                // One walk for both: the layout's own lstat of each entry feeds the metadata check.
                let mut details = Vec::new();
                let layout = NarLayout::of_inspecting(&physical, &mut |rel, meta| {
                    details.extend(entry_problems(rel, meta))
                });
                let size = match layout {
                    Ok(layout) if layout.nar_size() == *nar_size => None,
                    Ok(layout) => Some(format!(
                        "its size changed (NAR size {}, recorded {nar_size}): `noodle store verify --check-contents` names the files",
                        layout.nar_size()
                    )),
                    Err(e) => Some(format!("cannot be read: {e}")),
                };
                Ok((path.clone(), details, size))
            })
            .collect::<Result<_>>()?;
        for (path, details, size) in checked {
            if !details.is_empty() {
                report
                    .problems
                    .push(problem(ProblemKind::Metadata, &path, details));
            }
            if let Some(size) = size {
                report
                    .problems
                    .push(problem(ProblemKind::Damaged, &path, vec![size]));
            }
        }

        if options.check_contents {
            let total = present.iter().map(|(_, _, _, size)| size).sum();
            progress.phase("checking contents", total);
            let advance = |n| progress.advance(n);
            let db_file = self.dirs.db_file();
            let damaged: Vec<Problem> = present
                .par_iter()
                .map(|(id, path, nar_hash, _)| -> Result<Option<Problem>> {
                    let physical = store.join(base(path));
                    let actual = NarLayout::of(&physical)
                        .and_then(|layout| hash_layout(&layout, None, &advance));
                    let ok = matches!(&actual, Ok(d) if d.hash.to_string() == *nar_hash);
                    if ok {
                        return Ok(None);
                    }
                    let recorded = crate::db::Db::open(&db_file, false)?.entries(*id)?;
                    let details = match copy::record_tree(&physical) {
                        Ok(now) => damaged_files(&recorded, &now),
                        Err(e) => vec![format!("cannot be read: {e}")],
                    };
                    Ok(Some(problem(ProblemKind::Damaged, path, details)))
                })
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .flatten()
                .collect();
            progress.finish();
            report.problems.extend(damaged);
        }

        if options.repair {
            self.repair(&mut report, restore)?;
        }
        Ok(report)
    }

    fn repair(&mut self, report: &mut VerifyReport, restore: Option<&dyn Restore>) -> Result<()> {
        let store = self.dirs.store();
        for problem in &mut report.problems {
            let base = problem
                .path
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            if matches!(problem.kind, ProblemKind::Damaged | ProblemKind::Missing) {
                if let Some(restore) = restore {
                    match restore.restore(self, &problem.path) {
                        Ok(()) => {
                            problem.repaired = true;
                            problem
                                .details
                                .push(format!("restored a good copy from {}", restore.origin()));
                            continue;
                        }
                        Err(why) => problem.details.push(format!(
                            "cannot be restored from {}: {why}",
                            restore.origin()
                        )),
                    }
                }
            }
            match problem.kind {
                ProblemKind::Unregistered => {
                    canon::remove_tree(&store.join(&base))?;
                    problem.repaired = true;
                }
                ProblemKind::StaleTemp => {
                    canon::remove_tree(Path::new(&problem.path))?;
                    problem.repaired = true;
                }
                ProblemKind::Metadata => {
                    fix_metadata(&store.join(&base))?;
                    crate::sync::syncfs(&store)?;
                    problem.repaired = true;
                }
                ProblemKind::Missing => {
                    // A registration without files breaks invariant 2; unregister it when
                    // nothing depends on it, so the path can be added again.
                    if let Some(id) = self.db.path_id(&problem.path)? {
                        if self.db.referrers(id)?.is_empty() {
                            self.db.invalidate(&[id])?;
                            problem.repaired = true;
                            problem
                                .details
                                .push("unregistered it: add it again to restore it".into());
                        } else {
                            problem.details.push("cannot unregister it while other paths refer to it; restore its contents (e.g. add the same tree again after deleting its referrers)".into());
                        }
                    }
                }
                ProblemKind::Damaged => {
                    if restore.is_none() {
                        problem.details.push("cannot be restored: no substituters are configured to fetch a good copy from (see `substituters` in noodle.toml); or delete the path and add it again".into());
                    }
                }
            }
        }
        Ok(())
    }
}
