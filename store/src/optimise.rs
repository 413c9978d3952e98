//! `store optimise`: hard-link identical files of valid paths through the link farm
//! `.links/<xx>/<blake3 hex>` (`<blake3 hex>-x` for executables: files with equal contents but
//! different modes are not identical, and a hard link has one mode).
//!
//! Only files of *registered* paths are considered, and their content hashes come from the
//! database, recorded when the path was added: a file still being written lives in var/tmp
//! and is not registered, so it can never be linked to anything (the Nix bug where a file
//! being written was linked to a different one cannot happen). A new farm entry is hashed
//! again before it is created, so damage cannot spread through the farm.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use crate::error::Result;
use crate::hash::Blake3;
use crate::locks::GcLock;
use crate::progress::Progress;
use crate::store::Store;
use crate::{canon, copy, failpoint};

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct OptimiseReport {
    /// Files replaced by a hard link to an identical file.
    pub files_linked: u64,
    /// Bytes no longer stored twice.
    pub bytes_saved: u64,
    /// New link-farm entries.
    pub farm_entries: u64,
    /// Files whose contents no longer match their recorded hash (left alone; see verify).
    pub skipped_damaged: Vec<String>,
}

struct File {
    path: PathBuf,
    size: u64,
}

impl Store {
    pub fn optimise(&mut self, progress: &dyn Progress) -> Result<OptimiseReport> {
        // Shared: adds go on; a collection cannot prune the farm under us.
        let _lock = GcLock::shared(&self.dirs)?;
        // New links are made in var/tmp, named after this process: it must be seen as live.
        self.temproots()?;
        let tmp = self.dirs.tmp();
        let store = self.dirs.store();
        let mut groups: HashMap<(Blake3, bool), Vec<File>> = HashMap::new();
        for crate::db::StoredFile {
            path,
            rel,
            size,
            hash,
            executable,
        } in self.db.regular_files()?
        {
            let base = path.rsplit('/').next().unwrap_or_default();
            let mut physical = store.join(base);
            if !rel.is_empty() {
                physical.push(std::ffi::OsStr::from_bytes(&rel));
            }
            groups.entry((hash, executable)).or_default().push(File {
                path: physical,
                size,
            });
        }
        let mut groups: Vec<((Blake3, bool), Vec<File>)> = groups.into_iter().collect();
        groups.sort_by_key(|(hash, _)| *hash);
        let started = std::time::Instant::now();
        progress.phase("linking", groups.len() as u64);

        // Phase 1: make sure each content has a farm entry; decide which files to replace.
        let links = self.dirs.links();
        let decided: Vec<Decision> = groups
            .par_iter()
            .map(|((hash, executable), files)| {
                let decision = decide(&links, hash, *executable, files);
                progress.advance(1);
                decision
            })
            .collect::<Result<_>>()?;
        progress.finish();

        let mut report = OptimiseReport::default();
        let mut by_dir: HashMap<PathBuf, Vec<(PathBuf, PathBuf, u64)>> = HashMap::new();
        for decision in decided {
            report.farm_entries += u64::from(decision.created);
            report.skipped_damaged.extend(decision.damaged);
            for (file, size) in decision.replace {
                let dir = file.parent().unwrap_or(Path::new("/")).to_owned();
                by_dir
                    .entry(dir)
                    .or_default()
                    .push((file, decision.link.clone(), size));
            }
        }

        // Phase 2: replace files, one directory per task, since a directory is made writable
        // only for as long as its own replacements take.
        progress.note(&format!(
            "checked {} distinct contents in {:.3} s",
            groups.len(),
            started.elapsed().as_secs_f64()
        ));
        let results: Vec<(u64, u64)> = by_dir
            .par_iter()
            .map(|(dir, files)| replace_in_dir(dir, files, *dir != store, &tmp))
            .collect::<Result<_>>()?;
        for (linked, saved) in results {
            report.files_linked += linked;
            report.bytes_saved += saved;
        }
        progress.note(&format!(
            "linked by {:.3} s",
            started.elapsed().as_secs_f64()
        ));
        crate::sync::syncfs(&store)?;
        progress.note(&format!(
            "synced by {:.3} s",
            started.elapsed().as_secs_f64()
        ));
        Ok(report)
    }
}

struct Decision {
    link: PathBuf,
    created: bool,
    replace: Vec<(PathBuf, u64)>,
    damaged: Vec<String>,
}

fn decide(links: &Path, hash: &Blake3, executable: bool, files: &[File]) -> Result<Decision> {
    let hex = hash.to_hex();
    let name = if executable {
        format!("{hex}-x")
    } else {
        hex.clone()
    };
    let link = links.join(&hex[..2]).join(name);
    let mut decision = Decision {
        link: link.clone(),
        created: false,
        replace: Vec::new(),
        damaged: Vec::new(),
    };
    let farm = match fs_err::metadata(&link) {
        Ok(meta) => Some(meta),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let farm_ino = match farm {
        Some(meta) => meta.ino(),
        None => {
            // Seed the farm from the first file whose contents really are `hash`.
            let mut seeded = None;
            for file in files {
                if copy::hash_file(&file.path)? == *hash {
                    fs_err::create_dir_all(link.parent().expect("farm entries are in shards"))?;
                    match fs_err::hard_link(&file.path, &link) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(e.into()),
                    }
                    failpoint::hit("optimise:after-link-farm");
                    decision.created = true;
                    seeded = Some(fs_err::metadata(&link)?.ino());
                    break;
                }
                decision.damaged.push(file.path.display().to_string());
            }
            match seeded {
                Some(ino) => ino,
                None => return Ok(decision),
            }
        }
    };
    for file in files {
        let meta = fs_err::symlink_metadata(&file.path)?;
        if meta.ino() != farm_ino
            && meta.len() == file.size
            && !decision.damaged.contains(&file.path.display().to_string())
        {
            let saved = if meta.nlink() == 1 { file.size } else { 0 };
            decision.replace.push((file.path.clone(), saved));
        }
    }
    Ok(decision)
}

/// `in_path`: `dir` belongs to a store path (made writable for the moment, then canonical
/// again); otherwise it is the store directory itself (a path that is a single file), which is
/// writable already and must stay so.
///
/// Each new link is made in var/tmp and renamed over the file: a crash leaves a stale entry in
/// var/tmp (removed by the next gc or repair), never an extra file inside a valid path.
fn replace_in_dir(
    dir: &Path,
    files: &[(PathBuf, PathBuf, u64)],
    in_path: bool,
    tmp_dir: &Path,
) -> Result<(u64, u64)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    if in_path {
        canon::make_writable(dir)?;
    }
    failpoint::hit("optimise:dir-writable");
    let mut linked = 0;
    let mut saved = 0;
    let result = (|| -> Result<()> {
        for (file, link, size) in files {
            let tmp = tmp_dir.join(format!(
                "{}-{}.link",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            // A file of that name was left by a dead process that had our pid.
            let _ = std::fs::remove_file(&tmp);
            fs_err::hard_link(link, &tmp)?;
            failpoint::hit("optimise:after-temp-link");
            if let Err(e) = fs_err::rename(&tmp, file) {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.into());
            }
            failpoint::hit("optimise:after-replace");
            linked += 1;
            saved += size;
        }
        Ok(())
    })();
    // Put the directory back whatever happened: read-only again, time 1.
    if in_path {
        canon::directory(dir)?;
    }
    result.map(|()| (linked, saved))
}
