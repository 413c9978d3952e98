//! `noodle build`, `noodle lock`, `noodle log`, `noodle channel`.

use std::collections::{BTreeSet, HashMap};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use noodle_builder::channel::Channel;
use noodle_builder::events::{Event, Listener};
use noodle_builder::job::Context;
use noodle_builder::session::{self, Limits, Request};
use noodle_builder::target::Target;
use noodle_store::Store;

use crate::cli::{BuildArgs, Cli};
use crate::commands::open;
use crate::output::{self, note, EXIT_NOT_REPRODUCIBLE};

const CHANNEL_KEY: &str = "channel";

/// The channel: --channel / NOODLE_CHANNEL, else the one a path target lives in, else the
/// store's configured one, else the current directory.
fn channel(cli: &Cli, store: &Store, targets: &[Target]) -> anyhow::Result<Channel> {
    if let Some(dir) = &cli.channel {
        return Ok(Channel::open(dir)?);
    }
    if let Some(hint) = targets.iter().find_map(|t| t.channel_hint()) {
        return Ok(Channel::find_for(hint)?);
    }
    if let Some(dir) = store.db().meta(CHANNEL_KEY)? {
        return Channel::open(Path::new(&dir)).with_context(|| {
            format!("the store's configured channel '{dir}' is unusable (set another with `noodle channel DIR`)")
        });
    }
    let here = std::env::current_dir().context("cannot read the current directory")?;
    Channel::open(&here).map_err(|e| {
        anyhow::anyhow!("{e}\nno channel given: pass --channel DIR, set NOODLE_CHANNEL, or configure one with `noodle channel DIR`")
    })
}

pub(super) fn parse_targets(texts: &[String]) -> anyhow::Result<Vec<Target>> {
    texts
        .iter()
        .map(|t| Target::parse(t).map_err(anyhow::Error::from))
        .collect()
}

/// Progress on stderr: one line per running build with its elapsed time on a terminal, plain
/// lines otherwise; or one JSON event per line on stdout with --json.
struct Reporter {
    json: bool,
    quiet: bool,
    stream_logs: bool,
    bars: Option<MultiProgress>,
    running: Mutex<HashMap<String, ProgressBar>>,
}

impl Reporter {
    fn new(cli: &Cli) -> Self {
        let terminal = std::io::stderr().is_terminal() && !cli.quiet && !cli.json;
        Self {
            json: cli.json,
            quiet: cli.quiet,
            stream_logs: cli.verbose,
            bars: terminal.then(MultiProgress::new),
            running: Mutex::new(HashMap::new()),
        }
    }

    fn line(&self, text: String) {
        if self.quiet || self.json {
            return;
        }
        match &self.bars {
            Some(bars) => {
                let _ = bars.println(text);
            }
            None => eprintln!("{text}"),
        }
    }

    fn stop_bar(&self, package: &str) {
        if let Ok(mut running) = self.running.lock() {
            if let Some(bar) = running.remove(package) {
                bar.finish_and_clear();
            }
        }
    }
}

impl Listener for Reporter {
    fn warning(&self, message: &str) {
        if self.json {
            let text = serde_json::json!({"event": "warning", "message": message});
            let _ = writeln!(std::io::stdout().lock(), "{text}");
        } else {
            self.line(format!("warning: {message}"));
        }
    }

    fn event(&self, event: &Event<'_>) {
        if self.json {
            if let Ok(text) = serde_json::to_string(event) {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{text}");
            }
            return;
        }
        match event {
            Event::Fetching { source, location } => {
                self.line(format!("fetching {source} from {location}"))
            }
            Event::Reused { package, path } => self.line(format!("reusing {package}: {path}")),
            Event::Substituted {
                package,
                path,
                from,
            } => self.line(format!("fetched {package} from {from}: {path}")),
            Event::Waiting { package, .. } => self.line(format!(
                "waiting for another process that is building {package}"
            )),
            Event::Started { package, .. } => match &self.bars {
                Some(bars) => {
                    let bar = bars.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template("{spinner} building {msg} {elapsed}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.set_message(package.to_string());
                    bar.enable_steady_tick(Duration::from_millis(200));
                    if let Ok(mut running) = self.running.lock() {
                        running.insert(package.to_string(), bar);
                    }
                }
                None => self.line(format!("building {package}")),
            },
            Event::Finished {
                package, seconds, ..
            } => {
                self.stop_bar(package);
                self.line(format!("built {package} in {seconds:.2} s"));
            }
            Event::Failed { package, .. } => {
                self.stop_bar(package);
                self.line(format!("failed {package}"));
            }
            Event::Checked {
                package, identical, ..
            } => self.line(format!(
                "checked {package}: {}",
                if *identical {
                    "the rebuild is identical"
                } else {
                    "the rebuild DIFFERS"
                }
            )),
        }
    }

    fn output(&self, package: &str, data: &[u8]) {
        if !self.stream_logs || self.json {
            return;
        }
        let text = String::from_utf8_lossy(data);
        for line in text.lines() {
            self.line(format!("{package}> {line}"));
        }
    }
}

/// What a build session needs from the command line: the progress reporter, the sandbox
/// helper (this executable) and the store's root.
pub(super) struct Runner {
    reporter: Reporter,
    helper: PathBuf,
    root: PathBuf,
    keep_failed: bool,
    pub cores: usize,
    substituter: Option<noodle_cache::substitute::Substituter>,
}

impl Runner {
    pub fn new(cli: &Cli, store: &Store, keep_failed: bool) -> anyhow::Result<Self> {
        Ok(Self {
            reporter: Reporter::new(cli),
            helper: std::env::current_exe()
                .context("cannot find the noodle executable to run the sandbox helper")?,
            root: store.dirs().root.clone(),
            keep_failed,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            substituter: {
                let settings = crate::commands::distribution::settings(cli)?;
                let substituter = crate::commands::distribution::substituter(&settings, None)?;
                (!substituter.is_empty()).then_some(substituter)
            },
        })
    }

    pub fn context(&self) -> Context<'_> {
        Context {
            root: &self.root,
            helper_exe: &self.helper,
            keep_failed: self.keep_failed,
            cores: self.cores,
            listener: &self.reporter,
            substituter: self
                .substituter
                .as_ref()
                .map(|s| s as &dyn noodle_store::Substitute),
        }
    }
}

/// Resolves and builds `targets` (reusing what is valid) for `install` and `update`; `update`
/// names packages whose locked versions may move.
pub(super) fn build_targets(
    cli: &Cli,
    store: &mut Store,
    targets: &[Target],
    update: BTreeSet<String>,
) -> anyhow::Result<(session::Prepared, Vec<String>)> {
    let channel = channel(cli, store, targets)?;
    let request = Request {
        targets: targets.to_vec(),
        locked: false,
        update,
        dry_run: false,
    };
    let mut prepared = session::prepare(store, channel, &request)?;
    let runner = Runner::new(cli, store, false)?;
    let outputs = prepared.build(store, &runner.context(), runner.cores, &Limits::default())?;
    Ok((prepared, outputs))
}

pub fn build(cli: &Cli, args: &BuildArgs) -> anyhow::Result<ExitCode> {
    let mut store = open(cli, true)?;
    let targets = parse_targets(&args.targets)?;
    let channel = channel(cli, &store, &targets)?;
    let request = Request {
        targets,
        locked: args.locked,
        update: BTreeSet::new(),
        dry_run: args.dry_run,
    };
    let mut prepared = session::prepare(&mut store, channel, &request)?;
    if args.dry_run {
        return dry_run(cli, &prepared, &store);
    }
    let runner = Runner::new(cli, &store, args.keep_failed)?;
    let ctx = runner.context();
    let limits = Limits {
        timeout: args.timeout.map(Duration::from_secs),
        max_silent: args.max_silent.map(Duration::from_secs),
    };
    let jobs = args.jobs.unwrap_or(runner.cores);
    if args.check {
        let reports = prepared.check(&mut store, &ctx, jobs, &limits)?;
        let mut differs = false;
        for (path, differences) in &reports {
            if differences.is_empty() {
                if !cli.json {
                    println!("{path}");
                }
                continue;
            }
            differs = true;
            if !cli.json {
                eprintln!("noodle: {path} is not reproducible; a rebuild differs in:");
                for line in differences {
                    eprintln!("  {line}");
                }
            }
        }
        if cli.json {
            output::json(&serde_json::json!(reports
                .iter()
                .map(|(path, diff)| serde_json::json!({"path": path, "reproducible": diff.is_empty(), "differences": diff}))
                .collect::<Vec<_>>()))?;
        }
        return Ok(if differs {
            ExitCode::from(EXIT_NOT_REPRODUCIBLE)
        } else {
            ExitCode::SUCCESS
        });
    }
    let outputs = prepared.build(&mut store, &ctx, jobs, &limits)?;
    if !cli.json {
        let mut out = std::io::stdout().lock();
        for path in outputs {
            writeln!(out, "{path}")?;
        }
    } else {
        for path in outputs {
            println!("{}", serde_json::json!({"event": "output", "path": path}));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn dry_run(cli: &Cli, prepared: &session::Prepared, store: &Store) -> anyhow::Result<ExitCode> {
    let steps = prepared.steps(store)?;
    if cli.json {
        output::json(&serde_json::json!({
            "lock_changes": prepared.lock_changes,
            "steps": steps,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    if !prepared.lock_changes.is_empty() {
        writeln!(out, "noodle.lock would change:")?;
        for change in &prepared.lock_changes {
            writeln!(out, "  {change}")?;
        }
    }
    let builds = steps.iter().filter(|s| s.action == "build").count();
    writeln!(out, "{builds} to build, {} to reuse:", steps.len() - builds)?;
    for step in &steps {
        for (source, location) in &step.fetch {
            writeln!(
                out,
                "  fetch  {}: source `{source}` from {location}",
                step.package
            )?;
        }
        writeln!(out, "  {:<6} {} → {}", step.action, step.package, step.path)?;
        writeln!(out, "         because: {}", step.why)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn lock(
    cli: &Cli,
    targets: &[String],
    update: &[String],
    locked: bool,
) -> anyhow::Result<ExitCode> {
    let mut store = open(cli, true)?;
    let mut parsed = parse_targets(targets)?;
    let channel = channel(cli, &store, &parsed)?;
    if parsed.is_empty() {
        for name in channel.names()? {
            for version in channel.versions(&name)? {
                parsed.push(Target::parse(&format!("{name}@{version}"))?);
            }
        }
    }
    let lock_path = channel.lock_path();
    let request = Request {
        targets: parsed,
        locked,
        update: update.iter().cloned().collect(),
        dry_run: false,
    };
    let mut prepared = session::prepare(&mut store, channel, &request)?;
    prepared.write_lock()?;
    if cli.json {
        output::json(&serde_json::json!({
            "lockfile": lock_path,
            "changes": prepared.lock_changes,
            "packages": prepared.graph.packages.len(),
        }))?;
    } else if prepared.lock_changes.is_empty() {
        note(
            cli,
            format!(
                "{} is up to date ({} packages)",
                lock_path.display(),
                prepared.graph.packages.len()
            ),
        );
    } else {
        note(cli, format!("updated {}:", lock_path.display()));
        for change in &prepared.lock_changes {
            note(cli, format!("  {change}"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn log(cli: &Cli, what: &str) -> anyhow::Result<ExitCode> {
    let store = open(cli, false)?;
    let output = if what.starts_with('/') {
        store.parse_path(what)?;
        what.to_owned()
    } else {
        let target = Target::parse(what)?;
        let channel = channel(cli, &store, std::slice::from_ref(&target))?;
        let mut probe = open(cli, false)?;
        let prepared = session::prepare(
            &mut probe,
            channel,
            &Request {
                targets: vec![target],
                dry_run: true,
                ..Request::default()
            },
        )?;
        prepared
            .root_outputs(&store)?
            .into_iter()
            .next()
            .context("the target resolved to no package")?
    };
    let Some(log) = session::log_of(&store, &output)? else {
        anyhow::bail!("no build of {output} is recorded in this store (it was added, fetched, or never built here)");
    };
    let mut reader = noodle_builder::log::open(&log)
        .with_context(|| format!("cannot read the build log '{}'", log.display()))?;
    let mut out = std::io::stdout().lock();
    std::io::copy(&mut reader, &mut out)
        .with_context(|| format!("cannot read the build log '{}'", log.display()))?;
    Ok(ExitCode::SUCCESS)
}

pub fn channel_command(cli: &Cli, dir: Option<&PathBuf>) -> anyhow::Result<ExitCode> {
    let mut store = open(cli, true)?;
    match dir {
        Some(dir) => {
            let absolute = std::path::absolute(dir)
                .with_context(|| format!("cannot resolve '{}'", dir.display()))?;
            Channel::open(&absolute)?;
            store
                .db_mut()
                .set_meta(CHANNEL_KEY, &absolute.to_string_lossy())?;
            note(cli, format!("default channel: {}", absolute.display()));
        }
        None => match store.db().meta(CHANNEL_KEY)? {
            Some(dir) => println!("{dir}"),
            None => note(cli, "no channel configured: builds use --channel, NOODLE_CHANNEL or the current directory"),
        },
    }
    Ok(ExitCode::SUCCESS)
}
