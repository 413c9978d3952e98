//! Garbage collection and deletion (DESIGN.md §5, invariant 5).
//!
//! The graph is loaded once and decided in memory. Under the exclusive GC lock: read roots and
//! live temporary roots, decide, invalidate in the database, move the doomed trees into a
//! trash directory. Then, with the lock released, delete the trash in parallel.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::error::{Result, StoreError};
use crate::locks::{live_temproots, process_is_live, GcLock};
use crate::progress::Progress;
use crate::store::Store;
use crate::{canon, failpoint};

#[derive(Debug, Default, Clone)]
pub struct GcOptions {
    pub dry_run: bool,
    /// Stop after this many bytes (of NAR size) are freed.
    pub max_freed: Option<u64>,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct GcReport {
    /// Valid paths deleted (or that would be, with --dry-run).
    pub deleted: Vec<String>,
    /// Sum of the NAR sizes of the deleted paths.
    pub freed_bytes: u64,
    /// Unregistered leftovers removed from the store directory (crashed adds).
    pub leftovers: Vec<String>,
    /// Staging and trash directories of dead processes removed from var/tmp.
    pub stale_temp: usize,
    /// Link-farm entries no longer used by any store file.
    pub unused_links: usize,
}

/// The in-memory graph of valid paths.
struct Graph {
    paths: HashMap<i64, String>,
    ids: HashMap<String, i64>,
    references: HashMap<i64, Vec<i64>>,
    referrers: HashMap<i64, Vec<i64>>,
    sizes: HashMap<i64, u64>,
}

impl Graph {
    fn load(store: &Store) -> Result<Self> {
        let infos = store.db.all_path_infos()?;
        let mut paths = HashMap::with_capacity(infos.len());
        let mut sizes = HashMap::with_capacity(infos.len());
        for (id, path, _, size) in infos {
            paths.insert(id, path);
            sizes.insert(id, size);
        }
        let ids = paths.iter().map(|(id, p)| (p.clone(), *id)).collect();
        let mut references: HashMap<i64, Vec<i64>> = HashMap::new();
        let mut referrers: HashMap<i64, Vec<i64>> = HashMap::new();
        for (from, to) in store.db.all_refs()? {
            references.entry(from).or_default().push(to);
            referrers.entry(to).or_default().push(from);
        }
        Ok(Self {
            paths,
            ids,
            references,
            referrers,
            sizes,
        })
    }

    /// Everything reachable from `roots` by references.
    fn reachable<'a>(&self, roots: impl IntoIterator<Item = &'a String>) -> HashSet<i64> {
        let mut seen = HashSet::new();
        let mut stack: Vec<i64> = roots
            .into_iter()
            .filter_map(|p| self.ids.get(p).copied())
            .collect();
        while let Some(id) = stack.pop() {
            if seen.insert(id) {
                if let Some(next) = self.references.get(&id) {
                    stack.extend(next.iter().copied().filter(|n| !seen.contains(n)));
                }
            }
        }
        seen
    }

    /// `dead` ordered so that every path comes after all its referrers.
    fn referrers_first(&self, dead: &HashSet<i64>) -> Vec<i64> {
        let mut pending: HashMap<i64, usize> = dead
            .iter()
            .map(|&id| {
                let n = self
                    .referrers
                    .get(&id)
                    .map_or(0, |r| r.iter().filter(|&&r| r != id).count());
                (id, n)
            })
            .collect();
        let mut ready: Vec<i64> = pending
            .iter()
            .filter(|(_, &n)| n == 0)
            .map(|(&id, _)| id)
            .collect();
        ready.sort_by(|a, b| self.paths[b].cmp(&self.paths[a]));
        let mut order = Vec::with_capacity(dead.len());
        while let Some(id) = ready.pop() {
            order.push(id);
            for &reference in self.references.get(&id).into_iter().flatten() {
                if reference == id {
                    continue;
                }
                if let Some(n) = pending.get_mut(&reference) {
                    *n -= 1;
                    if *n == 0 {
                        ready.push(reference);
                    }
                }
            }
        }
        order
    }
}

impl Store {
    pub fn gc(&mut self, options: &GcOptions, progress: &dyn Progress) -> Result<GcReport> {
        let started = std::time::Instant::now();
        let lock = GcLock::exclusive(&self.dirs)?;
        // Temporary roots before roots: a process that makes a root and exits while the roots
        // are read (readdir may miss an entry renamed meanwhile) is still seen by its
        // temporary roots; one that exited before has its root complete before the read.
        let (temp, live_pids) = live_temproots(&self.dirs)?;
        let roots = self.find_roots()?;
        let graph = Graph::load(self)?;
        let live = graph.reachable(roots.values().chain(temp.iter()));
        let dead: HashSet<i64> = graph
            .paths
            .keys()
            .copied()
            .filter(|id| !live.contains(id))
            .collect();
        let mut report = GcReport::default();
        let mut doomed = Vec::new();
        for id in graph.referrers_first(&dead) {
            if options
                .max_freed
                .is_some_and(|max| report.freed_bytes >= max)
            {
                break;
            }
            report.freed_bytes += graph.sizes[&id];
            report.deleted.push(graph.paths[&id].clone());
            doomed.push(id);
        }
        let leftovers = self.unregistered_entries(&graph.ids, &temp)?;
        report.leftovers = leftovers
            .iter()
            .map(|n| format!("{}/{n}", self.dirs.store_dir))
            .collect();
        if options.dry_run {
            return Ok(report);
        }

        self.db.invalidate(&doomed)?;
        failpoint::hit("gc:after-invalidate");
        let trash = self.trash_dir()?;
        for path in &report.deleted {
            let base = path.rsplit('/').next().unwrap_or_default();
            self.move_to_trash(base, &trash)?;
        }
        for name in &leftovers {
            self.move_to_trash(name, &trash)?;
        }
        failpoint::hit("gc:after-trash");
        progress.note(&format!(
            "decided, invalidated and moved {} paths aside in {:.3} s",
            doomed.len(),
            started.elapsed().as_secs_f64()
        ));
        let stale = self.stale_temp_entries(&live_pids)?;
        drop(lock);

        progress.phase(
            "deleting",
            (report.deleted.len() + report.leftovers.len()) as u64,
        );
        let entries: Vec<PathBuf> = fs_err::read_dir(&trash)?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        let half = entries.len() / 2;
        entries
            .par_iter()
            .enumerate()
            .try_for_each(|(i, path)| -> Result<()> {
                if i == half {
                    failpoint::hit("gc:mid-delete");
                }
                canon::remove_tree(path)?;
                progress.advance(1);
                Ok(())
            })?;
        progress.finish();
        canon::remove_tree(&trash)?;
        progress.note(&format!(
            "deleted their files by {:.3} s",
            started.elapsed().as_secs_f64()
        ));
        report.stale_temp = stale.len();
        stale.par_iter().try_for_each(|p| canon::remove_tree(p))?;
        // Optimise links files under the shared lock; never prune the farm beside it.
        let _lock = GcLock::exclusive(&self.dirs)?;
        report.unused_links = self.remove_unused_links()?;
        Ok(report)
    }

    /// Deletes specific paths, refusing any that is still referenced or rooted.
    pub fn delete(&mut self, texts: &[String]) -> Result<Vec<String>> {
        let lock = GcLock::exclusive(&self.dirs)?;
        let mut wanted = Vec::new();
        for text in texts {
            wanted.push(self.logical(&self.valid_path(text)?));
        }
        let (temp, _) = live_temproots(&self.dirs)?;
        let roots = self.find_roots()?;
        let graph = Graph::load(self)?;
        let live = graph.reachable(roots.values().chain(temp.iter()));
        let wanted_ids: HashSet<i64> = wanted.iter().map(|p| graph.ids[p]).collect();
        for path in &wanted {
            let id = graph.ids[path];
            let referrers: Vec<&String> = graph
                .referrers
                .get(&id)
                .into_iter()
                .flatten()
                .filter(|r| **r != id && !wanted_ids.contains(r))
                .map(|r| &graph.paths[r])
                .collect();
            if let Some(referrer) = referrers.first() {
                return Err(StoreError::InUse {
                    path: path.clone(),
                    why: format!("it is referenced by {referrer}{}; delete the referrers first (see `noodle store closure --referrers {path}`)",
                        if referrers.len() > 1 { format!(" and {} more", referrers.len() - 1) } else { String::new() }),
                });
            }
            if let Some((link, _)) = roots.iter().find(|(_, p)| *p == path) {
                return Err(StoreError::InUse {
                    path: path.clone(),
                    why: format!(
                        "it is a gc root through '{}'; remove that link first",
                        link.display()
                    ),
                });
            }
            if temp.contains(path) {
                return Err(StoreError::InUse {
                    path: path.clone(),
                    why: "a running noodle process is using it; try again when it finishes".into(),
                });
            }
            if live.contains(&id) {
                return Err(StoreError::InUse {
                    path: path.clone(),
                    why: "it is reachable from a gc root".into(),
                });
            }
        }
        let ordered = graph.referrers_first(&wanted_ids);
        self.db.invalidate(&ordered)?;
        failpoint::hit("delete:after-invalidate");
        let trash = self.trash_dir()?;
        for path in &wanted {
            self.move_to_trash(path.rsplit('/').next().unwrap_or_default(), &trash)?;
        }
        drop(lock);
        failpoint::hit("delete:after-trash");
        canon::remove_tree(&trash)?;
        Ok(wanted)
    }

    fn trash_dir(&mut self) -> Result<PathBuf> {
        // The trash is named after this process, which must therefore be seen as live (hold its
        // temporary-roots lock) until the trash is gone: else a concurrent verify reports it as
        // stale, and a concurrent gc or repair deletes it under our feet.
        self.temproots()?;
        let trash = self
            .dirs
            .tmp()
            .join(format!("{}-{}.trash", std::process::id(), nanos_now()));
        fs_err::create_dir_all(&trash)?;
        Ok(trash)
    }

    fn move_to_trash(&self, base: &str, trash: &Path) -> Result<()> {
        let from = self.dirs.store().join(base);
        let to = trash.join(base);
        match std::fs::rename(&from, &to) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            // Moving a directory to another parent needs write access to it (for `..`).
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                canon::make_writable(&from)?;
                fs_err::rename(&from, &to)?;
                Ok(())
            }
            Err(e) => Err(std::io::Error::new(
                e.kind(),
                format!(
                    "failed to move '{}' to '{}': {e}",
                    from.display(),
                    to.display()
                ),
            )
            .into()),
        }
    }

    /// Names in the store directory that no valid path or live temporary root accounts for.
    pub(crate) fn unregistered_entries(
        &self,
        valid: &HashMap<String, i64>,
        temp: &HashSet<String>,
    ) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in fs_err::read_dir(self.dirs.store())? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let logical = format!("{}/{name}", self.dirs.store_dir);
            if !valid.contains_key(&logical) && !temp.contains(&logical) {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Staging and trash directories in var/tmp whose process is gone.
    pub(crate) fn stale_temp_entries(&self, live_pids: &HashSet<u32>) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for entry in fs_err::read_dir(self.dirs.tmp())? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').next().and_then(|p| p.parse::<u32>().ok());
            let live = match pid {
                Some(pid) => live_pids.contains(&pid) || process_is_live(&self.dirs, pid)?,
                None => false,
            };
            if !live {
                out.push(entry.path());
            }
        }
        Ok(out)
    }

    /// Removes link-farm entries that no store file shares any more.
    fn remove_unused_links(&self) -> Result<usize> {
        let links = self.dirs.links();
        let shards: Vec<PathBuf> = fs_err::read_dir(&links)?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        let counts: Vec<usize> = shards
            .par_iter()
            .map(|shard| -> Result<usize> {
                let mut removed = 0;
                for entry in fs_err::read_dir(shard)? {
                    let path = entry?.path();
                    if fs_err::symlink_metadata(&path)?.nlink() == 1 {
                        fs_err::remove_file(&path)?;
                        removed += 1;
                    }
                }
                Ok(removed)
            })
            .collect::<Result<_>>()?;
        Ok(counts.into_iter().sum())
    }
}

fn nanos_now() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Roots as reported to users: link → store path.
pub type Roots = BTreeMap<PathBuf, String>;
