//! Version resolution: targets + recipes (+ noodle.lock) → a graph of exact package versions.
//!
//! Each dependency edge resolves on its own to the highest version satisfying its requirement;
//! there is no global unification, so two packages may use different versions of a third and
//! both end up in the graph (their store paths differ, so they never clash). A lockfile keeps
//! edges where they were, like Cargo.lock, until the recipe changes or `--update` names them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::PathBuf;

use noodle_store::Blake3;
use semver::{Version, VersionReq};

use crate::channel::{Channel, ChannelError};
use crate::lockfile::Lockfile;
use crate::recipe::{Pin, Recipe, RecipeError, SourceSpec};
use crate::target::{Target, TargetError};

#[cfg(test)]
pub(crate) mod tests;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PkgId {
    pub name: String,
    pub version: Version,
}

impl PkgId {
    pub fn new(name: &str, version: Version) -> Self {
        Self {
            name: name.to_owned(),
            version,
        }
    }
}

impl fmt::Display for PkgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

#[derive(Debug, Clone)]
pub struct Resolved {
    pub id: PkgId,
    pub recipe: Recipe,
    pub recipe_path: PathBuf,
    /// BLAKE3 of the recipe file's bytes: the lock notices any edit, even a comment.
    pub recipe_hash: Blake3,
    /// Dependency name → the version this package's edge resolved to.
    pub deps: BTreeMap<String, PkgId>,
}

#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// The targets, in command-line order, without duplicates.
    pub roots: Vec<PkgId>,
    pub packages: BTreeMap<PkgId, Resolved>,
}

impl Graph {
    pub fn get(&self, id: &PkgId) -> Option<&Resolved> {
        self.packages.get(id)
    }

    /// Every package, dependencies before dependents; ties broken by (name, version) order so
    /// that the same graph always gives the same order.
    pub fn topo_order(&self) -> Vec<PkgId> {
        let mut seen = BTreeSet::new();
        let mut order = Vec::with_capacity(self.packages.len());
        for id in self.packages.keys() {
            self.post_order(id, &mut seen, &mut order);
        }
        order
    }

    fn post_order<'a>(
        &'a self,
        id: &'a PkgId,
        seen: &mut BTreeSet<&'a PkgId>,
        order: &mut Vec<PkgId>,
    ) {
        if !seen.insert(id) {
            return;
        }
        if let Some(resolved) = self.packages.get(id) {
            for dep in resolved.deps.values() {
                self.post_order(dep, seen, order);
            }
        }
        order.push(id.clone());
    }

    /// `id` and everything it depends on, directly or not.
    pub fn closure_of(&self, id: &PkgId) -> BTreeSet<PkgId> {
        let mut closure = BTreeSet::new();
        let mut todo = vec![id];
        while let Some(next) = todo.pop() {
            if closure.insert(next.clone()) {
                if let Some(resolved) = self.packages.get(next) {
                    todo.extend(resolved.deps.values());
                }
            }
        }
        closure
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("unknown package `{name}` ({}){}", asked_by_text(.asked_by), listing(.channel_packages))]
    UnknownPackage {
        name: String,
        /// The asker first, then who asked for it, back to the root; empty = the command line.
        asked_by: Vec<PkgId>,
        channel_packages: Vec<String>,
    },
    #[error("no version of `{name}` satisfies `{req}` (available: {}); {}", join(.available), required_by_text(.chain))]
    Unsatisfiable {
        name: String,
        req: String,
        available: Vec<Version>,
        /// Root first, ending with the asker; empty = the command line.
        chain: Vec<PkgId>,
    },
    #[error("dependency cycle: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join(" → "))]
    Cycle(Vec<PkgId>),
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error(transparent)]
    Target(#[from] TargetError),
}

fn join(items: &[impl fmt::Display]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn asked_by_text(asked_by: &[PkgId]) -> String {
    if asked_by.is_empty() {
        "asked for on the command line".to_owned()
    } else {
        let chain: Vec<String> = asked_by.iter().map(ToString::to_string).collect();
        format!("asked for by {}", chain.join(" ← "))
    }
}

fn required_by_text(chain: &[PkgId]) -> String {
    if chain.is_empty() {
        "asked for on the command line".to_owned()
    } else {
        let chain: Vec<String> = chain.iter().map(ToString::to_string).collect();
        format!("required by {}", chain.join(" → "))
    }
}

/// Small channels are listed in full, which usually shows the typo; big ones would drown it.
fn listing(names: &[String]) -> String {
    match names.len() {
        0 => "; the channel has no packages".to_owned(),
        1..=20 => format!("; the channel has: {}", names.join(", ")),
        n => format!("; the channel has {n} packages"),
    }
}

/// Resolves `targets` in `channel`. `update` names packages whose locked edges may move (both
/// edges *to* them and edges *from* them).
pub fn resolve(
    channel: &Channel,
    targets: &[Target],
    lock: Option<&Lockfile>,
    update: &BTreeSet<String>,
) -> Result<Graph, ResolveError> {
    let mut resolver = Resolver {
        channel,
        lock,
        update,
        versions: HashMap::new(),
        packages: BTreeMap::new(),
    };
    let mut roots = Vec::new();
    for target in targets {
        let wanted = target.wanted(channel)?;
        let version = resolver.pick_root(&wanted.name, wanted.req.as_ref())?;
        let id = PkgId::new(&wanted.name, version);
        resolver.visit(&id, &mut Vec::new())?;
        if !roots.contains(&id) {
            roots.push(id);
        }
    }
    Ok(Graph {
        roots,
        packages: resolver.packages,
    })
}

struct Resolver<'a> {
    channel: &'a Channel,
    lock: Option<&'a Lockfile>,
    update: &'a BTreeSet<String>,
    versions: HashMap<String, Vec<Version>>,
    /// Fully resolved packages; one load and parse per recipe per resolution.
    packages: BTreeMap<PkgId, Resolved>,
}

impl Resolver<'_> {
    fn versions(&mut self, name: &str, chain: &[PkgId]) -> Result<&[Version], ResolveError> {
        if !self.versions.contains_key(name) {
            let versions = self.channel.versions(name)?;
            if versions.is_empty() {
                return Err(ResolveError::UnknownPackage {
                    name: name.to_owned(),
                    asked_by: chain.iter().rev().cloned().collect(),
                    channel_packages: self.channel.names()?,
                });
            }
            self.versions.insert(name.to_owned(), versions);
        }
        Ok(&self.versions[name])
    }

    fn pick_root(&mut self, name: &str, req: Option<&VersionReq>) -> Result<Version, ResolveError> {
        let versions = self.versions(name, &[])?;
        let picked = match req {
            Some(req) => versions.iter().rev().find(|v| req.matches(v)),
            // A bare name prefers releases, as Cargo does, but a pre-release-only package
            // is still buildable by name.
            None => versions
                .iter()
                .rev()
                .find(|v| v.pre.is_empty())
                .or(versions.last()),
        };
        picked.cloned().ok_or_else(|| ResolveError::Unsatisfiable {
            name: name.to_owned(),
            req: req.map(ToString::to_string).unwrap_or_default(),
            available: versions.to_vec(),
            chain: Vec::new(),
        })
    }

    /// The version `chain.last()` (whose recipe hashes to `recipe_hash`) gets for `dep`.
    fn pick_edge(
        &mut self,
        chain: &[PkgId],
        recipe_hash: &Blake3,
        dep: &str,
        req: &VersionReq,
    ) -> Result<Version, ResolveError> {
        let (lock, update) = (self.lock, self.update);
        let versions = self.versions(dep, chain)?;
        let asker = chain
            .last()
            .expect("an edge always has the package that declares it");
        let locked = lock
            .filter(|_| !update.contains(dep) && !update.contains(&asker.name))
            .and_then(|lock| lock.package(asker))
            .filter(|entry| entry.recipe == *recipe_hash)
            .and_then(|entry| entry.dependencies.get(dep))
            .filter(|v| req.matches(v) && versions.contains(v));
        if let Some(version) = locked {
            return Ok(version.clone());
        }
        match versions.iter().rev().find(|v| req.matches(v)) {
            Some(version) => Ok(version.clone()),
            None => Err(ResolveError::Unsatisfiable {
                name: dep.to_owned(),
                req: req.to_string(),
                available: versions.to_vec(),
                chain: chain.to_vec(),
            }),
        }
    }

    /// Depth-first; `chain` is the path from the root to `id`'s dependent, for cycle and
    /// "who asked" messages.
    fn visit(&mut self, id: &PkgId, chain: &mut Vec<PkgId>) -> Result<(), ResolveError> {
        if self.packages.contains_key(id) {
            return Ok(());
        }
        if let Some(start) = chain.iter().position(|c| c == id) {
            let mut cycle = chain[start..].to_vec();
            cycle.push(id.clone());
            return Err(ResolveError::Cycle(cycle));
        }
        let recipe_path = self.channel.recipe_path(&id.name, &id.version);
        let bytes = fs_err::read(&recipe_path).map_err(RecipeError::from)?;
        let recipe_hash = Blake3::of(&bytes);
        let recipe = Recipe::parse_bytes(&recipe_path, &bytes)?;

        chain.push(id.clone());
        let mut deps = BTreeMap::new();
        for (dep, req) in &recipe.dependencies {
            let version = self.pick_edge(chain, &recipe_hash, dep, req)?;
            let dep_id = PkgId::new(dep, version);
            self.visit(&dep_id, chain)?;
            deps.insert(dep.clone(), dep_id);
        }
        chain.pop();

        self.packages.insert(
            id.clone(),
            Resolved {
                id: id.clone(),
                recipe,
                recipe_path,
                recipe_hash,
                deps,
            },
        );
        Ok(())
    }
}

/// The pin of every source of every package in `graph`, keyed by (package, source key).
pub type Pins = BTreeMap<(PkgId, String), Pin>;

/// Decides each source's pin: the recipe's own pin wins; else the lock's, as long as the
/// source still points at the same location and the package is not being updated; else
/// `pinner` fetches and hashes it.
pub fn pin_sources<E>(
    graph: &Graph,
    lock: Option<&Lockfile>,
    update: &BTreeSet<String>,
    pinner: &mut dyn FnMut(&Resolved, &str, &SourceSpec) -> Result<Pin, E>,
) -> Result<Pins, E> {
    let mut pins = Pins::new();
    for (id, resolved) in &graph.packages {
        for (key, spec) in &resolved.recipe.sources {
            let locked = || {
                lock.filter(|_| !update.contains(&id.name))
                    .and_then(|lock| lock.source_pin(id, key))
                    .filter(|(_, location)| *location == spec.lock_text())
                    .map(|(pin, _)| pin.clone())
            };
            let pin = match spec.pin.clone().or_else(locked) {
                Some(pin) => pin,
                None => pinner(resolved, key, spec)?,
            };
            pins.insert((id.clone(), key.clone()), pin);
        }
    }
    Ok(pins)
}
