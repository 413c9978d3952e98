//! `noodle.lock`: exact versions, recipe hashes, source pins and output paths (DESIGN.md §6).
//!
//! Written by hand-rolled, sorted TOML so that the same lock state always gives the same bytes
//! (diffs in version control show only real changes). Entries for packages outside the current
//! resolution are kept: over time the lock covers the whole channel.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::Path;

use noodle_store::path::PathError;
use noodle_store::{Blake3, StoreDir};
use semver::Version;
use serde::Deserialize;
use toml::Spanned;

use crate::plan::Plan;
use crate::recipe::{key_text, pos_at, pos_of_toml_error, toml_message, FilePos, Pin};
use crate::resolve::{Graph, PkgId};

pub const LOCK_VERSION: u32 = 1;
const HEADER: &str = "# This file is written by noodle; edit recipes, not this file.\n";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{pos}: {message} (noodle.lock is written by noodle: delete it, or regenerate it with `noodle lock`)")]
    Malformed { pos: FilePos, message: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Sync(#[from] noodle_store::StoreError),
    #[error("{pkg} is in the graph but has no plan")]
    MissingPlan { pkg: PkgId },
    #[error("{pkg}: {source}")]
    Path { pkg: PkgId, source: PathError },
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lockfile {
    packages: BTreeMap<PkgId, LockEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockEntry {
    pub recipe: Blake3,
    pub plan: Blake3,
    /// Full output store path.
    pub out: String,
    /// NAR hash of the built output, once built.
    pub nar: Option<Blake3>,
    pub dependencies: BTreeMap<String, Version>,
    pub sources: BTreeMap<String, LockedSource>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedSource {
    pub pin: Pin,
    /// [`crate::recipe::SourceSpec::lock_text`] when pinned; a moved source is re-pinned.
    pub location: String,
}

/// One difference between the lock and what an update writes; `--locked` lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockChange {
    Added(PkgId),
    RecipeChanged(PkgId),
    Dependency {
        pkg: PkgId,
        dep: String,
        from: Option<Version>,
        to: Option<Version>,
    },
    Source {
        pkg: PkgId,
        key: String,
        what: &'static str,
    },
    PlanChanged(PkgId),
    /// Same plan, other path: the store directory changed.
    OutChanged(PkgId),
}

impl fmt::Display for LockChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Added(pkg) => write!(f, "added {pkg}"),
            Self::RecipeChanged(pkg) => write!(f, "{pkg}: recipe changed"),
            Self::Dependency {
                pkg,
                dep,
                from: Some(from),
                to: Some(to),
            } => write!(f, "{pkg}: {dep} {from} → {to}"),
            Self::Dependency {
                pkg,
                dep,
                from: None,
                to: Some(to),
            } => write!(f, "{pkg}: new dependency {dep} {to}"),
            Self::Dependency { pkg, dep, from, .. } => {
                let from = from.as_ref().map(ToString::to_string).unwrap_or_default();
                write!(f, "{pkg}: dependency {dep} {from} removed")
            }
            Self::Source { pkg, key, what } => write!(f, "{pkg}: source `{key}` {what}"),
            Self::PlanChanged(pkg) => write!(f, "{pkg}: plan changed"),
            Self::OutChanged(pkg) => write!(f, "{pkg}: output path changed"),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLock {
    version: Spanned<u32>,
    #[serde(default)]
    package: Vec<Spanned<RawEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: Spanned<String>,
    version: Spanned<String>,
    recipe: Spanned<String>,
    plan: Spanned<String>,
    out: String,
    nar: Option<Spanned<String>>,
    #[serde(default)]
    dependencies: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    sources: BTreeMap<String, RawLockedSource>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLockedSource {
    pin: Spanned<String>,
    location: String,
}

impl Lockfile {
    /// `None` when there is no lock yet.
    pub fn load(path: &Path) -> Result<Option<Lockfile>, LockError> {
        match fs_err::read_to_string(path) {
            Ok(text) => Self::parse(path, &text).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn parse(path: &Path, text: &str) -> Result<Lockfile, LockError> {
        let raw: RawLock = toml::from_str(text).map_err(|e| LockError::Malformed {
            pos: pos_of_toml_error(path, text, &e),
            message: toml_message(&e),
        })?;
        let bad =
            |span: std::ops::Range<usize>, key: String, message: String| LockError::Malformed {
                pos: pos_at(path, text, span.start, Some(key)),
                message,
            };
        if *raw.version.get_ref() != LOCK_VERSION {
            return Err(bad(
                raw.version.span(),
                "version".into(),
                format!(
                    "lock format version {} is not supported (this noodle reads version {LOCK_VERSION})",
                    raw.version.get_ref()
                ),
            ));
        }
        let mut packages = BTreeMap::new();
        for (i, entry) in raw.package.into_iter().enumerate() {
            let span = entry.span();
            let entry = entry.into_inner();
            let key = |field: &str| format!("package[{i}].{field}");
            let version = |s: &Spanned<String>, field: &str| {
                s.get_ref().parse::<Version>().map_err(|_| {
                    bad(
                        s.span(),
                        key(field),
                        format!("{:?} is not a semver version", s.get_ref()),
                    )
                })
            };
            let hash = |s: &Spanned<String>, field: &str| {
                s.get_ref()
                    .strip_prefix(Blake3::PREFIX)
                    .and_then(Blake3::parse)
                    .ok_or_else(|| {
                        bad(
                            s.span(),
                            key(field),
                            format!("{:?} is not blake3:<64 hex digits>", s.get_ref()),
                        )
                    })
            };
            let id = PkgId::new(entry.name.get_ref(), version(&entry.version, "version")?);
            let mut dependencies = BTreeMap::new();
            for (dep, v) in &entry.dependencies {
                dependencies.insert(
                    dep.clone(),
                    version(v, &format!("dependencies.{}", key_text(dep)))?,
                );
            }
            let mut sources = BTreeMap::new();
            for (source, locked) in entry.sources {
                let pin = locked.pin.get_ref().parse::<Pin>().map_err(|e| {
                    bad(
                        locked.pin.span(),
                        key(&format!("sources.{}.pin", key_text(&source))),
                        e.to_string(),
                    )
                })?;
                sources.insert(
                    source,
                    LockedSource {
                        pin,
                        location: locked.location,
                    },
                );
            }
            let parsed = LockEntry {
                recipe: hash(&entry.recipe, "recipe")?,
                plan: hash(&entry.plan, "plan")?,
                out: entry.out,
                nar: entry.nar.as_ref().map(|n| hash(n, "nar")).transpose()?,
                dependencies,
                sources,
            };
            if packages.insert(id.clone(), parsed).is_some() {
                return Err(bad(
                    span,
                    format!("package[{i}]"),
                    format!("{id} is listed twice"),
                ));
            }
        }
        Ok(Lockfile { packages })
    }

    /// The file's exact bytes: sorted by name then version, one fixed layout.
    pub fn to_toml(&self) -> String {
        let mut out = format!("{HEADER}version = {LOCK_VERSION}\n");
        for (id, entry) in &self.packages {
            out.push_str("\n[[package]]\n");
            field(&mut out, "name", &id.name);
            field(&mut out, "version", &id.version.to_string());
            field(&mut out, "recipe", &entry.recipe.to_string());
            field(&mut out, "plan", &entry.plan.to_string());
            field(&mut out, "out", &entry.out);
            if let Some(nar) = &entry.nar {
                field(&mut out, "nar", &nar.to_string());
            }
            if !entry.dependencies.is_empty() {
                let deps: Vec<String> = entry
                    .dependencies
                    .iter()
                    .map(|(name, v)| format!("{} = {}", key_text(name), quote(&v.to_string())))
                    .collect();
                out.push_str(&format!("dependencies = {{ {} }}\n", deps.join(", ")));
            }
            if !entry.sources.is_empty() {
                let sources: Vec<String> = entry
                    .sources
                    .iter()
                    .map(|(key, s)| {
                        format!(
                            "{} = {{ pin = {}, location = {} }}",
                            key_text(key),
                            quote(&s.pin.to_string()),
                            quote(&s.location)
                        )
                    })
                    .collect();
                out.push_str(&format!("sources = {{ {} }}\n", sources.join(", ")));
            }
        }
        out
    }

    /// Atomically replaces `path`: a crash leaves the old lock or the new one, never half.
    pub fn write(&self, path: &Path) -> Result<(), LockError> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp-{}", std::process::id()));
        let tmp = std::path::PathBuf::from(tmp);
        let written = (|| -> std::io::Result<()> {
            let mut file = fs_err::File::create(&tmp)?;
            file.write_all(self.to_toml().as_bytes())?;
            file.sync_all()?;
            drop(file);
            fs_err::rename(&tmp, path)
        })();
        if let Err(e) = written {
            // Best effort: the original error is the one worth reporting.
            let _ = fs_err::remove_file(&tmp);
            return Err(e.into());
        }
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        noodle_store::sync::fsync_dir(dir)?;
        Ok(())
    }

    /// The entries of `roots` and of everything they depend on, each taken from the first of
    /// `locks` that has it (a profile's lock: its packages' closure, from the locks they were
    /// resolved with). Packages no lock knows are left out.
    pub fn closure_of(locks: &[&Lockfile], roots: &[PkgId]) -> Lockfile {
        let mut packages = BTreeMap::new();
        let mut stack: Vec<PkgId> = roots.to_vec();
        while let Some(id) = stack.pop() {
            if packages.contains_key(&id) {
                continue;
            }
            let Some(entry) = locks.iter().find_map(|lock| lock.packages.get(&id)) else {
                continue;
            };
            stack.extend(entry.dependencies.iter().map(|(name, version)| PkgId {
                name: name.clone(),
                version: version.clone(),
            }));
            packages.insert(id, entry.clone());
        }
        Lockfile { packages }
    }

    pub fn package(&self, id: &PkgId) -> Option<&LockEntry> {
        self.packages.get(id)
    }

    pub fn packages(&self) -> &BTreeMap<PkgId, LockEntry> {
        &self.packages
    }

    /// The locked pin of `id`'s source `key`, with the location it was pinned from.
    pub fn source_pin(&self, id: &PkgId, key: &str) -> Option<(&Pin, &str)> {
        let source = self.packages.get(id)?.sources.get(key)?;
        Some((&source.pin, source.location.as_str()))
    }

    /// Records a built output's NAR hash; false if `id` is not locked.
    pub fn set_nar(&mut self, id: &PkgId, nar: Blake3) -> bool {
        match self.packages.get_mut(id) {
            Some(entry) => {
                entry.nar = Some(nar);
                true
            }
            None => false,
        }
    }

    /// Brings the entries of every package in `graph` up to date and says what changed (empty:
    /// the lock already matched, which is what `--locked` requires). An entry's `nar` survives
    /// only if its plan is unchanged, since a new plan is a new output.
    pub fn update(
        &mut self,
        graph: &Graph,
        plans: &BTreeMap<PkgId, Plan>,
        store_dir: &StoreDir,
    ) -> Result<Vec<LockChange>, LockError> {
        let mut changes = Vec::new();
        for (id, resolved) in &graph.packages {
            let plan = plans
                .get(id)
                .ok_or_else(|| LockError::MissingPlan { pkg: id.clone() })?;
            let plan_hash = plan.hash();
            let out = plan
                .output_path(store_dir)
                .map_err(|source| LockError::Path {
                    pkg: id.clone(),
                    source,
                })?;
            let sources = plan
                .sources
                .iter()
                .map(|(key, s)| {
                    let location = resolved
                        .recipe
                        .sources
                        .get(key)
                        .map(|spec| spec.lock_text())
                        .unwrap_or_default();
                    let locked = LockedSource {
                        pin: s.pin.clone(),
                        location,
                    };
                    (key.clone(), locked)
                })
                .collect();
            let old = self.packages.get(id);
            let mut new = LockEntry {
                recipe: resolved.recipe_hash,
                plan: plan_hash,
                out: store_dir.display_path(&out),
                nar: None,
                dependencies: resolved
                    .deps
                    .iter()
                    .map(|(name, dep)| (name.clone(), dep.version.clone()))
                    .collect(),
                sources,
            };
            match old {
                None => changes.push(LockChange::Added(id.clone())),
                Some(old) => {
                    diff(id, old, &new, &mut changes);
                    if old.plan == new.plan {
                        new.nar = old.nar;
                    }
                }
            }
            self.packages.insert(id.clone(), new);
        }
        Ok(changes)
    }
}

fn diff(id: &PkgId, old: &LockEntry, new: &LockEntry, changes: &mut Vec<LockChange>) {
    if old.recipe != new.recipe {
        changes.push(LockChange::RecipeChanged(id.clone()));
    }
    let dep_names: std::collections::BTreeSet<&String> = old
        .dependencies
        .keys()
        .chain(new.dependencies.keys())
        .collect();
    for dep in dep_names {
        let (from, to) = (old.dependencies.get(dep), new.dependencies.get(dep));
        if from != to {
            changes.push(LockChange::Dependency {
                pkg: id.clone(),
                dep: dep.clone(),
                from: from.cloned(),
                to: to.cloned(),
            });
        }
    }
    let keys: std::collections::BTreeSet<&String> =
        old.sources.keys().chain(new.sources.keys()).collect();
    for key in keys {
        let what = match (old.sources.get(key), new.sources.get(key)) {
            (None, Some(_)) => "added",
            (Some(_), None) => "removed",
            (Some(a), Some(b)) if a.pin != b.pin => "pin changed",
            (Some(a), Some(b)) if a.location != b.location => "location changed",
            _ => continue,
        };
        changes.push(LockChange::Source {
            pkg: id.clone(),
            key: key.clone(),
            what,
        });
    }
    if old.plan != new.plan {
        changes.push(LockChange::PlanChanged(id.clone()));
    } else if old.out != new.out {
        changes.push(LockChange::OutChanged(id.clone()));
    }
}

fn quote(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

fn field(out: &mut String, key: &str, value: &str) {
    out.push_str(key);
    out.push_str(" = ");
    out.push_str(&quote(value));
    out.push('\n');
}

#[cfg(test)]
mod tests;
