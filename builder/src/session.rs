//! A build session, what `noodle build` and `noodle lock` do: resolve the targets against the
//! channel and noodle.lock, pin sources, compute plans and output paths, write or check the
//! lockfile; then reuse what is valid, fetch sources, build the rest in parallel, and record
//! the outputs' NAR hashes in the lockfile.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use noodle_store::builds::BuildKind;
use noodle_store::{Store, StorePath};

use crate::channel::Channel;
use crate::error::BuildError;
use crate::events::{Event, Listener};
use crate::fetch::{self, PinOrigin, SourceRef};
use crate::job::{Context, Done, Job};
use crate::lockfile::Lockfile;
use crate::plan::{make_plans, Plan};
use crate::recipe::Pin;
use crate::resolve::{pin_sources, resolve, Graph, PkgId};
use crate::schedule::{self, Node};
use crate::target::Target;

/// Defaults when neither the recipe nor the command line sets a limit.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
pub const DEFAULT_MAX_SILENT: Duration = Duration::from_secs(600);

#[derive(Debug, Default)]
pub struct Request {
    pub targets: Vec<Target>,
    /// Fail instead of changing noodle.lock.
    pub locked: bool,
    /// Packages whose locked versions and source pins are to be refreshed.
    pub update: BTreeSet<String>,
    /// Write nothing: no lockfile, no fetched sources.
    pub dry_run: bool,
}

#[derive(Debug, Default)]
pub struct Limits {
    pub timeout: Option<Duration>,
    pub max_silent: Option<Duration>,
}

pub struct Prepared {
    pub channel: Channel,
    pub graph: Graph,
    pub plans: BTreeMap<PkgId, Plan>,
    pub pins: BTreeMap<(PkgId, String), Pin>,
    pub lock: Lockfile,
    /// How noodle.lock changed (or would change, for a dry run), one line each.
    pub lock_changes: Vec<String>,
    locked: bool,
    lock_dirty: bool,
    store_dir: noodle_store::StoreDir,
}

/// What will happen to one package of the graph.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    pub package: String,
    pub path: String,
    /// `reuse` or `build`.
    pub action: &'static str,
    pub why: String,
    /// Sources to fetch first: (source, location).
    pub fetch: Vec<(String, String)>,
}

fn source_ref(graph: &Graph, id: &PkgId, key: &str) -> SourceRef {
    SourceRef {
        recipe: graph.packages[id].recipe_path.clone(),
        package: id.name.clone(),
        key: key.to_owned(),
    }
}

pub fn prepare(
    store: &mut Store,
    channel: Channel,
    request: &Request,
) -> Result<Prepared, BuildError> {
    let lock_path = channel.lock_path();
    let existing = Lockfile::load(&lock_path)?;
    let graph = resolve(
        &channel,
        &request.targets,
        existing.as_ref(),
        &request.update,
    )?;
    let pins = pin_sources(
        &graph,
        existing.as_ref(),
        &request.update,
        &mut |resolved, key, spec| -> Result<Pin, BuildError> {
            let source = source_ref(&graph, &resolved.id, key);
            if request.locked {
                return Err(BuildError::Unpinned {
                    source_ref: source.to_string(),
                });
            }
            fetch::pin(
                store,
                &source,
                &resolved.id.version.to_string(),
                spec,
                !request.dry_run,
            )
        },
    )?;
    let plans = make_plans(&graph, &pins, store.store_dir())?;
    let mut lock = existing.unwrap_or_default();
    let lock_changes: Vec<String> = lock
        .update(&graph, &plans, store.store_dir())?
        .into_iter()
        .map(|change| change.to_string())
        .collect();
    if request.locked && !lock_changes.is_empty() {
        return Err(BuildError::LockOutdated(lock_changes));
    }
    let prepared = Prepared {
        channel,
        graph,
        plans,
        pins,
        lock,
        lock_dirty: !lock_changes.is_empty(),
        store_dir: store.store_dir().clone(),
        lock_changes,
        locked: request.locked,
    };
    Ok(prepared)
}

impl Prepared {
    /// Writes noodle.lock if the resolution (or a build's NAR hash) changed it. `build`
    /// calls this itself, once, when its builds are done.
    ///
    /// Another noodle may have written the lockfile since it was read (two builds in one
    /// channel): under a lock on the channel directory, the file is read again and this
    /// session's entries merged into it, so neither writer loses the other's packages.
    pub fn write_lock(&mut self) -> Result<(), BuildError> {
        if !self.lock_dirty || self.locked {
            return Ok(());
        }
        let path = self.channel.lock_path();
        let dir = fs_err::File::open(self.channel.root())?;
        let _guard =
            nix::fcntl::Flock::lock(dir.into_parts().0, nix::fcntl::FlockArg::LockExclusive)
                .map_err(|(_, errno)| {
                    std::io::Error::other(format!(
                        "failed to lock the channel directory '{}': {errno}",
                        self.channel.root().display()
                    ))
                })?;
        let mut merged = Lockfile::load(&path)?.unwrap_or_default();
        let before = merged.to_toml();
        merged.update(&self.graph, &self.plans, &self.store_dir)?;
        for id in self.graph.packages.keys() {
            if let Some(nar) = self.lock.package(id).and_then(|entry| entry.nar) {
                merged.set_nar(id, nar);
            }
        }
        if merged.to_toml() != before {
            merged.write(&path)?;
        }
        self.lock = merged;
        self.lock_dirty = false;
        Ok(())
    }

    pub fn output_of(&self, id: &PkgId, store: &Store) -> Result<(StorePath, String), BuildError> {
        let path = self.plans[id].output_path(store.store_dir())?;
        let logical = store.logical(&path);
        Ok((path, logical))
    }

    /// The output paths of the requested targets, in the order asked.
    pub fn root_outputs(&self, store: &Store) -> Result<Vec<String>, BuildError> {
        self.graph
            .roots
            .iter()
            .map(|id| Ok(self.output_of(id, store)?.1))
            .collect()
    }

    /// What building the targets takes: a valid output is reused (and what it was built from
    /// is not needed); anything else is built, after its dependencies.
    pub fn steps(&self, store: &Store) -> Result<Vec<Step>, BuildError> {
        let mut needed = BTreeSet::new();
        let mut steps = BTreeMap::new();
        let mut stack: Vec<PkgId> = self.graph.roots.clone();
        while let Some(id) = stack.pop() {
            if !needed.insert(id.clone()) {
                continue;
            }
            let (_, logical) = self.output_of(&id, store)?;
            if store.db().is_valid(&logical)? {
                steps.insert(
                    id.clone(),
                    Step {
                        package: id.to_string(),
                        path: logical,
                        action: "reuse",
                        why: "valid in the store".into(),
                        fetch: Vec::new(),
                    },
                );
                continue;
            }
            let mut fetch = Vec::new();
            for (key, source) in &self.plans[&id].sources {
                if !store.db().is_valid(&source.path)? {
                    let spec = &self.graph.packages[&id].recipe.sources[key];
                    fetch.push((key.clone(), spec.location.to_string()));
                }
            }
            let label = id.to_string();
            let mut why = String::from("not in the store");
            let related: Vec<&String> = self
                .lock_changes
                .iter()
                .filter(|c| c.starts_with(&format!("{label}:")) || c.ends_with(&label))
                .collect();
            if !related.is_empty() {
                why.push_str(" (noodle.lock: ");
                why.push_str(
                    &related
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join("; "),
                );
                why.push(')');
            }
            steps.insert(
                id.clone(),
                Step {
                    package: label,
                    path: logical,
                    action: "build",
                    why,
                    fetch,
                },
            );
            stack.extend(self.graph.packages[&id].deps.values().cloned());
        }
        Ok(self
            .graph
            .topo_order()
            .into_iter()
            .filter_map(|id| steps.remove(&id))
            .collect())
    }

    fn job(&self, id: &PkgId, store: &Store, limits: &Limits) -> Result<Job, BuildError> {
        let plan = self.plans[id].clone();
        let (output, logical) = self.output_of(id, store)?;
        let build = &self.graph.packages[id].recipe.build;
        Ok(Job {
            label: id.to_string(),
            plan_hash: plan.hash(),
            plan,
            output,
            logical,
            timeout: limits
                .timeout
                .or(build.timeout.map(Duration::from_secs))
                .unwrap_or(DEFAULT_TIMEOUT),
            max_silent: limits
                .max_silent
                .or(build.max_silent.map(Duration::from_secs))
                .unwrap_or(DEFAULT_MAX_SILENT),
        })
    }

    /// Asks the substituters for the outputs that would be built: the targets first (their
    /// dependencies are then not needed at all), then whatever is still to build. Returns the
    /// steps left and the outputs fetched.
    fn substitute(
        &self,
        store: &mut Store,
        ctx: &Context<'_>,
    ) -> Result<(Vec<Step>, BTreeSet<String>), BuildError> {
        let mut steps = self.steps(store)?;
        let mut substituted = BTreeSet::new();
        let Some(substituter) = ctx.substituter else {
            return Ok((steps, substituted));
        };
        let roots: BTreeSet<String> = self.root_outputs(store)?.into_iter().collect();
        let warn = |why: &str| ctx.listener.warning(why);
        for round in [true, false] {
            let wanted: Vec<&Step> = steps
                .iter()
                .filter(|s| s.action == "build" && (!round || roots.contains(&s.path)))
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let paths: Vec<String> = wanted.iter().map(|s| s.path.clone()).collect();
            let fetched: BTreeSet<String> = substituter
                .substitute(store, &paths, &warn)
                .into_iter()
                .collect();
            for step in wanted.iter().filter(|s| fetched.contains(&s.path)) {
                ctx.listener.event(&Event::Substituted {
                    package: &step.package,
                    path: &step.path,
                    from: &substituter.origin(),
                });
            }
            if !fetched.is_empty() {
                steps = self.steps(store)?;
            }
            substituted.extend(fetched);
        }
        Ok((steps, substituted))
    }

    /// Fetches the sources the builds in `steps` need, one after the other, before any
    /// sandbox starts.
    fn fetch_sources(
        &self,
        store: &mut Store,
        steps: &[Step],
        listener: &dyn Listener,
    ) -> Result<(), BuildError> {
        for step in steps.iter().filter(|s| s.action == "build") {
            let id = self.id_of(&step.package);
            let recipe = &self.graph.packages[id].recipe;
            for (key, spec) in &recipe.sources {
                let pin = &self.pins[&(id.clone(), key.clone())];
                let origin = if spec.pin.is_some() {
                    PinOrigin::Recipe
                } else {
                    PinOrigin::Lockfile
                };
                let source = source_ref(&self.graph, id, key);
                if !store.db().is_valid(&fetch::source_path(store, pin)?)? {
                    listener.event(&Event::Fetching {
                        source: &source.to_string(),
                        location: &spec.location.to_string(),
                    });
                }
                fetch::ensure(store, &source, spec, pin, origin)?;
            }
        }
        Ok(())
    }

    fn id_of(&self, label: &str) -> &PkgId {
        self.graph
            .packages
            .keys()
            .find(|id| id.to_string() == label)
            .expect("steps name packages of the graph")
    }

    /// Builds whatever the targets need; returns the targets' output paths. noodle.lock is
    /// written once at the end, whatever happened (the resolution stands even if a build
    /// failed).
    pub fn build(
        &mut self,
        store: &mut Store,
        ctx: &Context<'_>,
        jobs: usize,
        limits: &Limits,
    ) -> Result<Vec<String>, BuildError> {
        let built = self.build_unlocked(store, ctx, jobs, limits);
        self.write_lock()?;
        built
    }

    fn build_unlocked(
        &mut self,
        store: &mut Store,
        ctx: &Context<'_>,
        jobs: usize,
        limits: &Limits,
    ) -> Result<Vec<String>, BuildError> {
        let (steps, substituted) = self.substitute(store, ctx)?;
        for step in steps.iter().filter(|s| s.action == "reuse") {
            if !substituted.contains(&step.path) {
                ctx.listener.event(&Event::Reused {
                    package: &step.package,
                    path: &step.path,
                });
            }
            // An output built elsewhere (or by a run that crashed before writing the lock)
            // still gets its NAR hash into the lockfile.
            let id = self.id_of(&step.package).clone();
            if self
                .lock
                .package(&id)
                .is_some_and(|entry| entry.nar.is_none())
                && !self.locked
            {
                if let Some(info) = store.db().path_info(&step.path)? {
                    if let Some(hash) = noodle_store::Blake3::parse(&info.nar_hash) {
                        self.lock.set_nar(&id, hash);
                        self.lock_dirty = true;
                    }
                }
            }
        }
        self.fetch_sources(store, &steps, ctx.listener)?;
        let to_build: Vec<&Step> = steps.iter().filter(|s| s.action == "build").collect();
        let index: BTreeMap<&str, usize> = to_build
            .iter()
            .enumerate()
            .map(|(i, s)| (s.package.as_str(), i))
            .collect();
        let mut nodes = Vec::new();
        for step in &to_build {
            let id = self.id_of(&step.package).clone();
            let deps = self.graph.packages[&id]
                .deps
                .values()
                .filter_map(|dep| index.get(dep.to_string().as_str()).copied())
                .collect();
            nodes.push(Node {
                job: self.job(&id, store, limits)?,
                deps,
                kind: BuildKind::Build,
            });
        }
        let results = schedule::run_all(ctx, &nodes, jobs, &|job, result| {
            report(ctx.listener, job, result)
        });
        let mut errors = Vec::new();
        for (node, result) in nodes.iter().zip(results) {
            match result {
                Some(Ok(Done::Built { nar_hash, .. })) => {
                    self.record_nar(&node.job, &nar_hash, &mut errors)
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => errors.push(e),
                None => {}
            }
        }
        match errors.len() {
            0 => self.root_outputs(store),
            1 => Err(errors.remove(0)),
            count => Err(BuildError::Several {
                count,
                errors: errors.iter().map(|e| e.to_string()).collect(),
            }),
        }
    }

    fn record_nar(&mut self, job: &Job, nar_hash: &str, errors: &mut Vec<BuildError>) {
        let id = self.id_of(&job.label).clone();
        let Some(hash) = noodle_store::Blake3::parse(nar_hash) else {
            return;
        };
        if let Some(locked) = self.lock.package(&id).and_then(|p| p.nar) {
            if locked != hash {
                if self.locked {
                    errors.push(BuildError::NarMismatch {
                        package: job.label.clone(),
                        locked: locked.to_string(),
                        built: nar_hash.to_owned(),
                    });
                    return;
                }
                eprintln!(
                    "warning: {} built to {nar_hash}, but noodle.lock recorded {locked}: the build is not reproducible; the lock now records the new hash",
                    job.label
                );
            } else {
                return;
            }
        }
        if !self.locked {
            self.lock.set_nar(&id, hash);
            self.lock_dirty = true;
        }
    }

    /// `--check`: rebuilds every (already built) target in a fresh sandbox and compares.
    /// Returns, per target, its path and the files that differ (empty: reproducible).
    pub fn check(
        &mut self,
        store: &mut Store,
        ctx: &Context<'_>,
        jobs: usize,
        limits: &Limits,
    ) -> Result<Vec<(String, Vec<String>)>, BuildError> {
        let mut reports = Vec::new();
        for root in self.graph.roots.clone() {
            let (_, logical) = self.output_of(&root, store)?;
            let Some(info) = store.db().path_info(&logical)? else {
                return Err(BuildError::NothingToCheck {
                    package: root.to_string(),
                });
            };
            // What the rebuild needs must be there: dependencies are built (or reused) first.
            let saved_roots = std::mem::replace(
                &mut self.graph.roots,
                self.graph.packages[&root].deps.values().cloned().collect(),
            );
            let built = self.build(store, ctx, jobs, limits);
            self.graph.roots = saved_roots;
            built?;
            let job = self.job(&root, store, limits)?;
            let node = Node {
                job,
                deps: Vec::new(),
                kind: BuildKind::Check,
            };
            let mut results = schedule::run_all(ctx, std::slice::from_ref(&node), 1, &|_, _| {});
            let (nar_hash, entries) = match results.pop().flatten() {
                Some(Ok(Done::Checked { nar_hash, entries })) => (nar_hash, entries),
                Some(Err(e)) => {
                    report(
                        ctx.listener,
                        &node.job,
                        &Err(BuildError::Io(std::io::Error::other(e.to_string()))),
                    );
                    return Err(e);
                }
                _ => unreachable!("a check node always runs and ends checked or failed"),
            };
            let identical = nar_hash.to_string() == info.nar_hash;
            let differences = if identical {
                Vec::new()
            } else {
                let recorded = store.db().entries(info.id)?;
                let mut diff = noodle_store::verify::damaged_files(&recorded, &entries);
                if diff.is_empty() {
                    diff.push("(file contents agree; the archives differ in metadata)".into());
                }
                diff
            };
            ctx.listener.event(&Event::Checked {
                package: &node.job.label,
                path: &logical,
                identical,
            });
            reports.push((logical, differences));
        }
        Ok(reports)
    }
}

fn report(listener: &dyn Listener, job: &Job, result: &Result<Done, BuildError>) {
    match result {
        Ok(Done::Built { nar_hash, seconds }) => listener.event(&Event::Finished {
            package: &job.label,
            path: &job.logical,
            nar_hash,
            seconds: *seconds,
        }),
        Ok(Done::Reused) => listener.event(&Event::Reused {
            package: &job.label,
            path: &job.logical,
        }),
        Ok(Done::Checked { .. }) => {}
        Err(e) => listener.event(&Event::Failed {
            package: &job.label,
            path: &job.logical,
            error: &e.to_string(),
        }),
    }
}

/// The log of the newest finished attempt to build `output` (a successful one if any).
pub fn log_of(store: &Store, output: &str) -> Result<Option<PathBuf>, BuildError> {
    let builds = store.db().builds_of(output)?;
    let chosen = builds
        .iter()
        .rev()
        .find(|b| b.status == "succeeded" && b.kind == "build")
        .or_else(|| builds.last());
    Ok(chosen
        .and_then(|b| b.log.as_ref())
        .map(|name| store.dirs().log().join(name)))
}
