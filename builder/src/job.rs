//! One build: its inputs protected, a fresh sandbox, the log kept, and the output checked,
//! canonicalised and registered (DESIGN.md §6).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use noodle_store::builds::BuildKind;
use noodle_store::db::EntryRecord;
use noodle_store::locks::PathLock;
use noodle_store::{Blake3, Store, StoreError, StorePath};

use crate::error::BuildError;
use crate::events::{Event, Listener};
use crate::log::LogWriter;
use crate::plan::Plan;
use crate::sandbox::{self, BuildUser, Limits, Outcome, SandboxSpec};

/// Where the build script is written, inside `/build`.
pub const SCRIPT: &str = ".noodle-build.sh";

/// Everything needed to build one output, decided before any build starts.
#[derive(Debug, Clone)]
pub struct Job {
    /// `name@version`, for messages.
    pub label: String,
    pub plan: Plan,
    pub plan_hash: Blake3,
    pub output: StorePath,
    /// The output's logical store path.
    pub logical: String,
    pub timeout: Duration,
    pub max_silent: Duration,
}

pub struct Context<'a> {
    pub root: &'a Path,
    pub helper_exe: &'a Path,
    pub keep_failed: bool,
    pub cores: usize,
    pub listener: &'a dyn Listener,
    /// Binary caches asked for outputs before they are built.
    pub substituter: Option<&'a dyn noodle_store::Substitute>,
}

#[derive(Debug)]
pub enum Done {
    /// Built and registered now.
    Built { nar_hash: String, seconds: f64 },
    /// Valid already (another process built it while we waited for its lock).
    Reused,
    /// A `--check` rebuild: its NAR hash and per-file records, not registered.
    Checked {
        nar_hash: Blake3,
        entries: Vec<EntryRecord>,
    },
}

static WORKDIR_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The builder's complete environment (DESIGN.md §6).
pub fn environment(plan: &Plan, out: &str, cores: usize) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let path: Vec<String> = plan
        .dependencies
        .values()
        .map(|dep| format!("{dep}/bin"))
        .collect();
    env.insert("PATH".into(), path.join(":"));
    for (name, dep) in &plan.dependencies {
        env.insert(crate::recipe::dependency_variable(name), dep.clone());
    }
    for (key, source) in &plan.sources {
        env.insert(key.clone(), source.path.clone());
    }
    env.extend(plan.env.clone());
    for (key, value) in [
        ("HOME", "/homeless-shelter"),
        ("TMPDIR", "/build"),
        ("TMP", "/build"),
        ("TEMP", "/build"),
        ("TEMPDIR", "/build"),
        ("PWD", "/build"),
        ("SOURCE_DATE_EPOCH", "1"),
        ("TZ", "UTC"),
        ("LC_ALL", "C"),
        ("TERM", "dumb"),
    ] {
        env.insert(key.into(), value.into());
    }
    env.insert("NOODLE_BUILD_CORES".into(), cores.to_string());
    env.insert("name".into(), plan.name.clone());
    env.insert("version".into(), plan.version.clone());
    env.insert("out".into(), out.to_owned());
    env
}

/// Replaces `$NAME` and `${NAME}` with variables of `env`.
fn substitute(text: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, tail) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], &braced[end + 1..]),
                None => ("", after),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        match env.get(name) {
            Some(value) if !name.is_empty() => out.push_str(value),
            _ => {
                out.push('$');
                rest = after;
                continue;
            }
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// The program and argv that run the build script: the recipe's `shell` with variables
/// substituted, a bare name looked up in the dependencies' `bin` directories.
fn command(
    job: &Job,
    env: &BTreeMap<String, String>,
    store: &Store,
) -> Result<(String, Vec<String>), BuildError> {
    let shell: Vec<String> = job.plan.shell.iter().map(|s| substitute(s, env)).collect();
    let first = shell.first().cloned().unwrap_or_else(|| "sh".into());
    let program = if first.contains('/') {
        first
    } else {
        job.plan
            .dependencies
            .values()
            .map(|dep| format!("{dep}/bin/{first}"))
            .find(|candidate| {
                store
                    .parse_path(candidate)
                    .map(|_| ())
                    .ok()
                    .map(|_| store.dirs().physical(candidate))
                    .is_some_and(|p| p.exists())
            })
            .ok_or_else(|| BuildError::NoShell {
                package: job.label.clone(),
                shell: first.clone(),
            })?
    };
    let base = program.rsplit('/').next().unwrap_or(&program);
    // Programs in the store see their plain names: busybox run as `<digest>-busybox-1.35.0`
    // must still see a name starting with `busybox`.
    let argv0 = match StorePath::from_base_name(base) {
        Ok(path) if store.parse_path(&program).is_ok() => path.name().to_owned(),
        _ => base.to_owned(),
    };
    let mut argv = vec![argv0];
    argv.extend(shell.into_iter().skip(1));
    argv.push("-e".into());
    argv.push(format!("/build/{SCRIPT}"));
    Ok((program, argv))
}

/// The input closure: every dependency output and source with everything they refer to.
fn input_closure(store: &mut Store, job: &Job) -> Result<Vec<String>, BuildError> {
    let direct: Vec<String> = job
        .plan
        .dependencies
        .values()
        .cloned()
        .chain(job.plan.sources.values().map(|s| s.path.clone()))
        .collect();
    // Protected before they are checked: a gc that runs in between sees the temporary root.
    store.protect(&direct)?;
    let mut closure = BTreeSet::new();
    for path in &direct {
        if !store.db().is_valid(path)? {
            return Err(BuildError::InputMissing {
                package: job.label.clone(),
                input: path.clone(),
            });
        }
        closure.extend(store.db().closure(path, false)?);
    }
    let closure: Vec<String> = closure.into_iter().collect();
    store.protect(&closure)?;
    Ok(closure)
}

fn log_name(job: &Job) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}.{now}.log.zst",
        job.output.digest(),
        job.output.name()
    )
}

/// Runs one build (or, with `BuildKind::Check`, a rebuild to compare).
pub fn run(ctx: &Context<'_>, job: &Job, kind: BuildKind) -> Result<Done, BuildError> {
    let mut store = Store::open(ctx.root, None)?;
    let _lock = match kind {
        BuildKind::Build => {
            let lock = PathLock::acquire_noting(store.dirs(), job.output.digest(), || {
                ctx.listener.event(&Event::Waiting {
                    package: &job.label,
                    path: &job.logical,
                })
            })?;
            if store.db().is_valid(&job.logical)? {
                return Ok(Done::Reused);
            }
            Some(lock)
        }
        BuildKind::Check => None,
    };
    let closure = input_closure(&mut store, job)?;

    let workdir = store.dirs().tmp().join(format!(
        "{}-{}.build",
        std::process::id(),
        WORKDIR_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    fs_err::create_dir(&workdir)?;
    let result = run_in(ctx, job, kind, &mut store, &closure, &workdir);
    let keep = result.is_err() && ctx.keep_failed;
    if !keep {
        let _ = noodle_store::canon::remove_tree(&workdir);
    }
    result
}

fn run_in(
    ctx: &Context<'_>,
    job: &Job,
    kind: BuildKind,
    store: &mut Store,
    closure: &[String],
    workdir: &Path,
) -> Result<Done, BuildError> {
    let build_dir = workdir.join("build");
    let scratch = workdir.join("store");
    fs_err::create_dir(&build_dir)?;
    fs_err::create_dir(&scratch)?;
    fs_err::write(build_dir.join(SCRIPT), &job.plan.script)?;

    let env = environment(&job.plan, &job.logical, ctx.cores);
    let (program, argv) = command(job, &env, store)?;
    let inputs: Vec<(String, PathBuf)> = closure
        .iter()
        .map(|p| (p.clone(), store.dirs().physical(p)))
        .collect();
    let build_user = BuildUser::acquire(&store.dirs().locks())?;
    let spec = SandboxSpec {
        store_dir: store.store_dir().as_str().to_owned(),
        inputs,
        build_dir: build_dir.clone(),
        store_scratch: scratch.clone(),
        program,
        argv,
        env: env.into_iter().collect(),
        build_user: build_user.as_ref().map(BuildUser::ids),
    };

    let log_name = log_name(job);
    let log_path = store.dirs().log().join(&log_name);
    let build_id = store.db_mut().start_build(
        &job.plan_hash.to_string(),
        &job.logical,
        &String::from_utf8_lossy(&job.plan.canonical_json()),
        kind,
        &log_name,
    )?;
    let mut log = LogWriter::create(&log_path)?;
    ctx.listener.event(&Event::Started {
        package: &job.label,
        path: &job.logical,
        log: &log_path,
    });
    let started = Instant::now();
    let limits = Limits {
        timeout: job.timeout,
        max_silent: job.max_silent,
    };
    let mut log_error = None;
    let outcome = sandbox::run(&spec, ctx.helper_exe, workdir, &limits, &mut |data| {
        if let Err(e) = log.write(data) {
            log_error.get_or_insert(e);
        }
        ctx.listener.output(&job.label, data);
    });
    drop(build_user);
    let tail = log.tail();
    log.finish()?;
    let result = outcome
        .map_err(BuildError::from)
        .and_then(|outcome| judge(job, outcome, &scratch, closure, &tail, &log_path))
        .and_then(|staged| match log_error {
            Some(e) => Err(BuildError::Io(e)),
            None => Ok(staged),
        })
        .and_then(|staged| {
            let refused = |e: StoreError| match e {
                StoreError::BadOutput { why, .. } => BuildError::Failed {
                    package: job.label.clone(),
                    why: format!("its output is refused: {why}"),
                    tail: tail.clone(),
                    log: log_path.clone(),
                },
                other => other.into(),
            };
            match kind {
                BuildKind::Build => {
                    let plan_hash = job.plan_hash.to_string();
                    let added = store
                        .register_output(&staged, &job.output, closure, &plan_hash)
                        .map_err(refused)?;
                    Ok(Done::Built {
                        nar_hash: added.nar_hash,
                        seconds: started.elapsed().as_secs_f64(),
                    })
                }
                BuildKind::Check => {
                    let (nar_hash, entries) = store.inspect_output(&staged).map_err(refused)?;
                    Ok(Done::Checked { nar_hash, entries })
                }
            }
        });
    let (nar, error) = match &result {
        Ok(Done::Built { nar_hash, .. }) => (Some(nar_hash.clone()), None),
        Ok(Done::Checked { nar_hash, .. }) => (Some(nar_hash.to_string()), None),
        Ok(Done::Reused) => (None, None),
        Err(e) => (None, Some(e.to_string())),
    };
    store
        .db_mut()
        .finish_build(build_id, nar.as_deref(), error.as_deref())?;
    result
}

/// Turns how the sandbox ended into the staged output, or the reason the build failed.
fn judge(
    job: &Job,
    outcome: Outcome,
    scratch: &Path,
    closure: &[String],
    tail: &[String],
    log: &Path,
) -> Result<PathBuf, BuildError> {
    let fail = |why: String| BuildError::Failed {
        package: job.label.clone(),
        why,
        tail: tail.to_vec(),
        log: log.to_owned(),
    };
    match outcome {
        Outcome::Exited(0) => {}
        Outcome::Exited(code) => return Err(fail(format!("the builder exited with code {code}"))),
        Outcome::Signaled(signal) => {
            return Err(fail(format!("the builder was killed by signal {signal}")))
        }
        Outcome::TimedOut => {
            return Err(fail(format!(
                "it ran longer than its timeout of {} s and was killed (raise `timeout` in the recipe or pass --timeout)",
                job.timeout.as_secs()
            )))
        }
        Outcome::Silent => {
            return Err(fail(format!(
                "it printed nothing for {} s and was killed (raise `max-silent` in the recipe or pass --max-silent)",
                job.max_silent.as_secs()
            )))
        }
        Outcome::LeftProcesses(processes) => {
            return Err(fail(format!(
                "the builder exited but left processes running (they were killed): {}; a build must wait for everything it starts",
                processes.join(", ")
            )))
        }
    }
    let out_name = job.output.to_string();
    let inputs: BTreeSet<&str> = closure
        .iter()
        .filter_map(|p| p.rsplit('/').next())
        .collect();
    let mut stray = Vec::new();
    for entry in fs_err::read_dir(scratch)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name != out_name && !inputs.contains(name.as_str()) {
            stray.push(name);
        }
    }
    if !stray.is_empty() {
        return Err(fail(format!(
            "it wrote outside /build and $out, into the store directory: {}",
            stray.join(", ")
        )));
    }
    let staged = scratch.join(&out_name);
    if fs_err::symlink_metadata(&staged).is_err() {
        return Err(fail(format!(
            "the builder succeeded but produced no output: nothing was written at $out ({})",
            job.logical
        )));
    }
    Ok(staged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_substituted_and_unknown_ones_left_alone() {
        let env: BTreeMap<String, String> = [("busybox".to_string(), "/s/x-busybox".to_string())]
            .into_iter()
            .collect();
        assert_eq!(substitute("$busybox", &env), "/s/x-busybox");
        assert_eq!(substitute("${busybox}/bin/sh", &env), "/s/x-busybox/bin/sh");
        assert_eq!(substitute("a $nope b $", &env), "a $nope b $");
        assert_eq!(substitute("$busybox-x", &env), "/s/x-busybox-x");
    }
}
