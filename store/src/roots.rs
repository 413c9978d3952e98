//! GC roots: symlinks under `var/profiles` and `var/gcroots`, followed to the store paths they
//! name (through chains of links, including links that point outside the store's root).
//!
//! A profile kept outside the root (a user store's `~/.local/state/noodle/profile`) is named
//! by a link in `var/gcroots/profiles/`: that profile's every generation link
//! (`<profile>-<N>-link` beside it) is a root, not only the one it points at.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use crate::error::Result;
use crate::store::Store;

const MAX_HOPS: usize = 40;

impl Store {
    /// Every root: the link that makes it a root → the logical store path it keeps alive.
    pub fn find_roots(&self) -> Result<BTreeMap<PathBuf, String>> {
        let mut roots = BTreeMap::new();
        for dir in [self.dirs.profiles(), self.dirs.gcroots()] {
            if !dir.exists() {
                continue;
            }
            for entry in walkdir::WalkDir::new(&dir).follow_links(false) {
                let entry = entry.map_err(|e| {
                    std::io::Error::other(format!(
                        "failed to read roots in '{}': {e}",
                        dir.display()
                    ))
                })?;
                if entry.file_type().is_symlink() {
                    if let Some(path) = self.resolve_root(entry.path()) {
                        roots.insert(entry.path().to_owned(), path);
                    }
                }
            }
        }
        for link in self.external_generation_links()? {
            if let Some(path) = self.resolve_root(&link) {
                roots.insert(link, path);
            }
        }
        Ok(roots)
    }

    /// The directory whose links name profiles kept outside the root.
    pub fn external_profiles_dir(&self) -> PathBuf {
        self.dirs.gcroots().join("profiles")
    }

    /// Every `<profile>-<N>-link` beside a profile that `var/gcroots/profiles/` names.
    fn external_generation_links(&self) -> Result<Vec<PathBuf>> {
        let dir = self.external_profiles_dir();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(Vec::new());
        };
        let mut links = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| {
                std::io::Error::other(format!("failed to read roots in '{}': {e}", dir.display()))
            })?;
            let Ok(profile) = std::fs::read_link(entry.path()) else {
                continue;
            };
            let (Some(parent), Some(base)) = (profile.parent(), profile.file_name()) else {
                continue;
            };
            let prefix = format!("{}-", base.to_string_lossy());
            let Ok(siblings) = std::fs::read_dir(parent) else {
                continue;
            };
            for sibling in siblings.flatten() {
                let name = sibling.file_name();
                let name = name.to_string_lossy();
                let is_generation = name
                    .strip_prefix(&prefix)
                    .and_then(|rest| rest.strip_suffix("-link"))
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                if is_generation {
                    links.push(sibling.path());
                }
            }
        }
        Ok(links)
    }

    /// Follows `link` to a store path (logical), if it leads to one.
    fn resolve_root(&self, link: &Path) -> Option<String> {
        let store = self.dirs.store_dir.as_str();
        let mut current = link.to_owned();
        for _ in 0..MAX_HOPS {
            let target = std::fs::read_link(&current).ok()?;
            let logical = if target.is_absolute() {
                target.clone()
            } else {
                // A relative target is relative to the link's directory, in physical terms.
                let joined = normalise(&current.parent()?.join(&target));
                match joined.strip_prefix(&self.dirs.root) {
                    Ok(rest) if self.dirs.root != Path::new("/") => Path::new("/").join(rest),
                    _ => joined,
                }
            };
            let text = logical.to_str()?;
            if let Some(rest) = text.strip_prefix(store).and_then(|r| r.strip_prefix('/')) {
                let base = rest.split('/').next()?;
                return Some(format!("{store}/{base}"));
            }
            // Not in the store: a link to another link, inside our root or on the host.
            let inside = self.dirs.physical(text);
            current = if text.starts_with("/noodle/") && std::fs::symlink_metadata(&inside).is_ok()
            {
                inside
            } else {
                logical
            };
            if !std::fs::symlink_metadata(&current)
                .ok()?
                .file_type()
                .is_symlink()
            {
                return None;
            }
        }
        None
    }
}

fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}
