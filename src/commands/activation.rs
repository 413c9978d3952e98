//! `noodle activate`, and the activation every profile-changing command ends with: in this
//! process, or detached and followed; then the verdict and its exit code.

mod detach;
mod render;
mod report;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context as _;
use noodle_activate::event::{Fanout, JsonLines, Observer};
use noodle_activate::options::{DEFAULT_SCRIPT_TIMEOUT, DEFAULT_WINDOW};
use noodle_activate::{journal, ActivateError, Options, Outcome, Session, State, Strategy};
use noodle_profiles::{generation, records, Manifest, Profile, ProfileLock};
use noodle_store::Store;

use crate::cli::{ActivateArgs, ActivationArgs, Cli};
use crate::commands::open;
use crate::commands::profile::locate;
use crate::output::{note, EXIT_FAILED, EXIT_REVERTED};

pub use detach::{worker_main, WORKER_ARG};
pub use render::verdict;
pub use report::{health, history, status};

pub fn options_of(args: &ActivationArgs) -> Options {
    Options {
        strategy: args.strategy,
        window_ms: args.window.unwrap_or(DEFAULT_WINDOW).as_millis() as u64,
        verify_contents: args.verify_contents,
        script_timeout_ms: args
            .script_timeout
            .unwrap_or(DEFAULT_SCRIPT_TIMEOUT)
            .as_millis() as u64,
    }
}

/// Where events go besides the person watching: stdout as JSON lines (`--json`, `--events -`)
/// and an appended file (`--events FILE`).
struct Sinks {
    stdout: Option<JsonLines<std::io::Stdout>>,
    file: Option<JsonLines<fs_err::File>>,
}

impl Sinks {
    fn new(cli: &Cli, args: &ActivationArgs) -> anyhow::Result<Self> {
        let to_stdout = args.events.as_deref() == Some(std::path::Path::new("-"));
        let file = match &args.events {
            Some(path) if !to_stdout => Some(JsonLines(
                fs_err::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .context("cannot open the --events file")?,
            )),
            _ => None,
        };
        Ok(Self {
            stdout: (cli.json || to_stdout).then(|| JsonLines(std::io::stdout())),
            file,
        })
    }

    fn with<'a>(&'a mut self, progress: &'a mut dyn Observer) -> Fanout<'a> {
        let mut all: Vec<&mut dyn Observer> = vec![progress];
        if let Some(stdout) = self.stdout.as_mut() {
            all.push(stdout);
        }
        if let Some(file) = self.file.as_mut() {
            all.push(file);
        }
        Fanout(all)
    }
}

/// Activates generation `number` of `profile` (whose lock the caller holds) as `args` say.
pub fn run(
    cli: &Cli,
    store: &mut Store,
    profile: &Profile,
    lock: &ProfileLock,
    number: u64,
    args: &ActivationArgs,
) -> anyhow::Result<Outcome> {
    let options = options_of(args);
    let detached = args.detach || (!args.no_detach && !std::io::stdin().is_terminal());
    let mut progress = render::Progress::new(cli);
    let mut sinks = Sinks::new(cli, args)?;
    // A generation that is not there is an error, not an activation that begins.
    profile.generation(number)?;
    if !cli.quiet && !cli.json {
        eprintln!(
            "activating generation {number} of {} (--strategy {}, health window {}{})",
            profile.link().display(),
            options.strategy.as_str(),
            noodle_activate::options::show_duration(options.window()),
            if detached { ", detached" } else { "" }
        );
    }
    let mut fanout = sinks.with(&mut progress);
    let mut session = Session::new(store, profile, lock, &mut fanout);
    let started = session.start(number, &options)?;
    if !detached {
        return Ok(session.drive(started.id)?);
    }
    drop(session);
    drop(fanout);
    let events = args.events.as_deref();
    let mut child = detach::spawn(store, profile, lock, started.id, events)?;
    // So that `activate --abort` signals the worker, not this process, from now on.
    journal::set_pid(store, started.id, child.id())?;
    let echo = sinks.stdout.is_some();
    let error = detach::follow(&mut child, &mut progress, echo)?;
    let row = journal::get(store, started.id)?;
    if row.state.is_final() || row.awaiting_commit {
        let warnings = row
            .reason
            .as_deref()
            .and_then(|r| r.strip_prefix("warning: "))
            .map(|w| w.split("; ").map(str::to_owned).collect())
            .unwrap_or_default();
        return Ok(Outcome {
            activation: row,
            warnings,
        });
    }
    note(
        cli,
        format!(
            "the activation worker stopped before the end ({}): recovering",
            error
                .as_deref()
                .unwrap_or("no message; see its log under var/log/activations/")
        ),
    );
    let mut fanout = sinks.with(&mut progress);
    Session::new(store, profile, lock, &mut fanout)
        .recover(false)?
        .context("the activation ended while noodle recovered it: run `noodle status`")
}

pub fn exit_code(outcome: &Outcome) -> ExitCode {
    match outcome.activation.state {
        State::Reverted => ExitCode::from(EXIT_REVERTED),
        State::Failed => ExitCode::from(EXIT_FAILED),
        _ => ExitCode::SUCCESS,
    }
}

/// What `history --json` and every activating command's result say of an activation.
pub fn activation_json(a: &noodle_activate::Activation) -> serde_json::Value {
    serde_json::json!({
        "id": a.id,
        "profile": a.profile,
        "from": a.from,
        "to": a.to,
        "strategy": a.strategy,
        "state": a.state,
        "reason": a.reason,
        "awaiting_commit": a.awaiting_commit,
    })
}

/// The machine-readable verdict: the activation, plus the warnings.
pub fn outcome_json(outcome: &Outcome) -> serde_json::Value {
    let mut value = activation_json(&outcome.activation);
    value["warnings"] = serde_json::json!(outcome.warnings);
    value
}

/// Prints the verdict: on stderr for people (loud for FAILED), or the last JSON line.
pub fn print_outcome(
    cli: &Cli,
    outcome: &Outcome,
    extra: serde_json::Value,
) -> anyhow::Result<ExitCode> {
    if cli.json {
        let mut result =
            serde_json::json!({ "event": "result", "activation": outcome_json(outcome) });
        if let (Some(result), serde_json::Value::Object(extra)) = (result.as_object_mut(), extra) {
            result.extend(extra);
        }
        println!("{result}");
    } else if outcome.activation.state == State::Failed {
        eprintln!("noodle: {}", verdict(outcome));
    } else {
        note(cli, verdict(outcome));
    }
    Ok(exit_code(outcome))
}

/// After taking a profile's lock: an activation some crashed process left unfinished is
/// finished (reverted) first, and the user told.
pub fn recover_first(
    cli: &Cli,
    store: &mut Store,
    profile: &Profile,
    lock: &ProfileLock,
) -> anyhow::Result<()> {
    let mut progress = render::Progress::new(cli);
    if let Some(outcome) = Session::new(store, profile, lock, &mut progress).recover(false)? {
        note(
            cli,
            format!(
                "recovered activation #{}, which a crashed or killed noodle left unfinished: {}",
                outcome.activation.id,
                verdict(&outcome)
            ),
        );
    }
    Ok(())
}

/// For commands that only read a profile: recovers an unfinished activation when no live
/// process is driving it (its lock is free).
pub fn recover_if_abandoned(cli: &Cli, store: &mut Store, profile: &Profile) -> anyhow::Result<()> {
    let key = records::key(store, profile.link());
    match journal::unfinished(store, &key)? {
        Some(a) if !a.awaiting_commit => {}
        _ => return Ok(()),
    }
    match profile.try_lock()? {
        Some(lock) => recover_first(cli, store, profile, &lock),
        None => Ok(()),
    }
}

/// Refuses a new activation while a generation is under test.
pub fn refuse_if_under_test(
    store: &mut Store,
    profile: &Profile,
    lock: &ProfileLock,
) -> anyhow::Result<()> {
    Ok(
        Session::new(store, profile, lock, &mut noodle_activate::event::Quiet)
            .refuse_if_under_test()?,
    )
}

/// `--no-wait` found the profile locked: says by what.
pub fn busy(store: &Store, profile: &Profile) -> ActivateError {
    let key = records::key(store, profile.link());
    let what = match journal::unfinished(store, &key) {
        Ok(Some(a)) => format!(
            "activation #{} of profile {key} (generation {} → {}) is in flight in process {}",
            a.id,
            a.from.map_or("(none)".into(), |n| n.to_string()),
            a.to,
            a.pid
        ),
        _ => format!("another noodle is changing profile {key}"),
    };
    ActivateError::Busy { what }
}

/// `--strategy dry-activate`: what activating `to` over `from` would do. Changes nothing.
pub fn dry_activate(
    cli: &Cli,
    args: &ActivationArgs,
    from: &Manifest,
    to: &Manifest,
    label: &str,
) -> anyhow::Result<ExitCode> {
    use noodle_activate::plan::{checks, scripts, GenerationRef};
    use noodle_profiles::CheckTime;
    let target = GenerationRef {
        number: 0,
        path: String::new(),
        profile: String::new(),
    };
    let options = options_of(args);
    let names = |planned: Vec<noodle_activate::plan::Planned>| -> Vec<serde_json::Value> {
        planned
            .into_iter()
            .map(|p| serde_json::json!({ "package": p.package_label, "name": p.name, "required": p.required }))
            .collect()
    };
    let changes = from.changes_to(to);
    let report = serde_json::json!({
        "dry_run": true,
        "generation": label,
        "changes": changes.summary(),
        "scripts": names(scripts(to, Some(from), &target, false, options.script_timeout())),
        "pre_checks": names(checks(to, &target, CheckTime::Pre)),
        "checks": names(checks(to, &target, CheckTime::Post)),
        "window_ms": options.window_ms,
    });
    if cli.json {
        // One line, like every activating command's result: build events may precede it.
        println!("{report}");
        return Ok(ExitCode::SUCCESS);
    }
    let list = |key: &str| -> String {
        let items: Vec<String> = report[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| {
                let mut text = format!(
                    "{} of {}",
                    v["name"].as_str().unwrap_or(""),
                    v["package"].as_str().unwrap_or("")
                );
                if v["required"] == false {
                    text += " (wanted)";
                }
                text
            })
            .collect();
        if items.is_empty() {
            "(none)".into()
        } else {
            items.join(", ")
        }
    };
    let changed = changes.summary();
    println!("dry run: activating {label} would change nothing yet; it would:");
    println!(
        "  packages:       {}",
        if changed.is_empty() {
            "(same packages)"
        } else {
            &changed
        }
    );
    println!("  run scripts:    {}", list("scripts"));
    println!("  pass pre-checks: {}", list("pre_checks"));
    println!(
        "  keep green for {}: {}",
        noodle_activate::options::show_duration(options.window()),
        list("checks")
    );
    Ok(ExitCode::SUCCESS)
}

/// `noodle activate GEN|PATH | --recover | --abort | --commit`.
pub fn command(cli: &Cli, args: &ActivateArgs) -> anyhow::Result<ExitCode> {
    let mut store = open(cli, true)?;
    let located = locate(cli, &store)?;
    let profile = &located.profile;
    let mut progress = render::Progress::new(cli);
    if args.recover {
        let lock = located.lock_only(cli, &store, args.activation.no_wait)?;
        let mut session = Session::new(&mut store, profile, &lock, &mut progress);
        let recovered = session.recover(true)?;
        let booted = session.apply_boot_default(&options_of(&args.activation))?;
        drop(session);
        let last = booted.or(recovered);
        return match last {
            Some(outcome) => print_outcome(cli, &outcome, serde_json::json!({})),
            None => {
                if cli.json {
                    println!(
                        "{}",
                        serde_json::json!({ "event": "result", "activation": null })
                    );
                } else {
                    note(
                        cli,
                        format!(
                            "nothing to recover: no activation of {} is unfinished",
                            profile.link().display()
                        ),
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
        };
    }
    if args.commit {
        let lock = located.lock_only(cli, &store, args.activation.no_wait)?;
        recover_first(cli, &mut store, profile, &lock)?;
        let outcome = Session::new(&mut store, profile, &lock, &mut progress).commit()?;
        if !cli.json {
            note(
                cli,
                format!("generation {} is now the default", outcome.activation.to),
            );
            return Ok(ExitCode::SUCCESS);
        }
        return print_outcome(cli, &outcome, serde_json::json!({}));
    }
    if args.abort {
        let outcome = abort(cli, &mut store, profile)?;
        return print_outcome(cli, &outcome, serde_json::json!({}));
    }
    let Some(target) = &args.target else {
        anyhow::bail!("say which generation to activate (`noodle activate 5`, or a generation's store path), or pass --recover, --abort or --commit");
    };
    let lock = located.lock(cli, &mut store, args.activation.no_wait)?;
    let number = match target.parse::<u64>() {
        Ok(number) => number,
        Err(_) if !target.starts_with('/') => anyhow::bail!(
            "'{target}' is neither a generation number nor a generation's store path (`noodle profile generations` lists them)"
        ),
        Err(_) => generation::adopt(&mut store, profile, &lock, target)?,
    };
    if args.activation.strategy == Strategy::DryActivate {
        let (_, from) = generation::current_manifest(&store, profile)?;
        let (_, to) = generation::open(&store, profile, number)?;
        return dry_activate(
            cli,
            &args.activation,
            &from,
            &to,
            &format!("generation {number}"),
        );
    }
    let outcome = run(cli, &mut store, profile, &lock, number, &args.activation)?;
    print_outcome(cli, &outcome, serde_json::json!({}))
}

/// `--abort`: undo the activation in flight. When a live process drives it, that process is
/// asked (SIGTERM) to revert, and this one waits for it.
fn abort(cli: &Cli, store: &mut Store, profile: &Profile) -> anyhow::Result<Outcome> {
    let mut progress = render::Progress::new(cli);
    if let Some(lock) = profile.try_lock()? {
        return Ok(Session::new(store, profile, &lock, &mut progress).abort()?);
    }
    let key = records::key(store, profile.link());
    let in_flight = journal::unfinished(store, &key)?;
    if let Some(a) = &in_flight {
        note(
            cli,
            format!(
                "asking activation #{} (process {}) to stop and revert…",
                a.id, a.pid
            ),
        );
        let pid = nix::unistd::Pid::from_raw(a.pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }
    let lock = profile.lock(|| {})?;
    match in_flight {
        Some(a) => {
            let row = journal::get(store, a.id)?;
            if row.state.is_final() {
                return Ok(Outcome {
                    activation: row,
                    warnings: Vec::new(),
                });
            }
            Ok(Session::new(store, profile, &lock, &mut progress).abort()?)
        }
        None => Ok(Session::new(store, profile, &lock, &mut progress).abort()?),
    }
}
