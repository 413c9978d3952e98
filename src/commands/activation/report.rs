//! `noodle status`, `noodle history` and `noodle health`: reading the journal, and running the
//! current generation's checks on demand.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use noodle_activate::event::{RunKind, RunRecord};
use noodle_activate::exec::{Finished, StoreView};
use noodle_activate::options::show_duration;
use noodle_activate::plan::{self, GenerationRef, Planned};
use noodle_activate::window::{self, Verdict};
use noodle_activate::{journal, Activation, State};
use noodle_profiles::{generation, records, CheckTime};
use noodle_store::Store;

use super::recover_if_abandoned;
use crate::cli::Cli;
use crate::commands::open;
use crate::commands::profile::locate;
use crate::output::{self, note, utc_time, EXIT_RED};

fn show_generation(n: Option<u64>) -> String {
    n.map_or("(none)".into(), |n| n.to_string())
}

fn took(a: &Activation) -> String {
    a.duration_us()
        .map(|us| show_duration(Duration::from_micros(us.max(0) as u64)))
        .unwrap_or_else(|| "…".into())
}

/// The first required run that was red: what history shows as the why.
fn first_red(runs: &[RunRecord]) -> Option<&RunRecord> {
    runs.iter().find(|r| !r.ok && r.required)
}

/// The latest run of each check and script.
fn latest_runs(runs: &[RunRecord]) -> Vec<&RunRecord> {
    let mut latest: BTreeMap<(Option<u64>, &str, &str, &str), &RunRecord> = BTreeMap::new();
    for run in runs {
        latest.insert(
            (run.generation, run.kind.as_str(), &run.package, &run.name),
            run,
        );
    }
    latest.into_values().collect()
}

fn run_json(run: &RunRecord) -> serde_json::Value {
    serde_json::json!({
        "generation": run.generation,
        "kind": run.kind,
        "package": run.package,
        "name": run.name,
        "attempt": run.attempt,
        "required": run.required,
        "ok": run.ok,
        "result": run.describe(),
        "duration_ms": run.duration_us as f64 / 1000.0,
        "output": run.output,
        "output_bytes": run.output_bytes,
    })
}

fn activation_json(store: &Store, a: &Activation) -> anyhow::Result<serde_json::Value> {
    let runs = journal::runs(store, a.id)?;
    let mut value = super::activation_json(a);
    let extra = serde_json::json!({
        "started_at": a.started_at / 1_000_000,
        "duration_ms": a.duration_us().map(|us| us as f64 / 1000.0),
        "window_ms": a.options.window_ms,
        "pid": a.pid,
        "red_check": first_red(&runs).map(run_json),
        "runs": runs.len(),
    });
    if let (Some(value), serde_json::Value::Object(extra)) = (value.as_object_mut(), extra) {
        value.extend(extra);
    }
    Ok(value)
}

pub fn status(cli: &Cli, follow: bool) -> anyhow::Result<ExitCode> {
    let mut store = open(cli, true)?;
    let located = locate(cli, &store)?;
    let profile = &located.profile;
    recover_if_abandoned(cli, &mut store, profile)?;
    let key = records::key(&store, profile.link());
    if follow {
        let mut seen = 0;
        while let Some(a) = journal::unfinished(&store, &key)?.filter(|a| !a.awaiting_commit) {
            let runs = journal::runs(&store, a.id)?;
            if !cli.quiet && !cli.json {
                for run in &runs[seen.min(runs.len())..] {
                    eprintln!(
                        "  {} {} '{}' of {}: {}",
                        if run.ok { "✓" } else { "✗" },
                        run.kind.as_str(),
                        run.name,
                        run.package,
                        run.describe()
                    );
                }
            }
            seen = runs.len();
            if profile.try_lock()?.is_some() {
                break; // nobody drives it any more: the next command recovers it
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let current = profile.current()?;
    let in_flight = journal::unfinished(&store, &key)?;
    let last = journal::last(&store, &key)?;
    let driven = in_flight.is_some() && profile.try_lock()?.is_none();
    let default = match &in_flight {
        Some(a) if a.strategy == noodle_activate::Strategy::Test => a.from,
        _ => current,
    };
    let runs = match &last {
        Some(a) => journal::runs(&store, a.id)?,
        None => Vec::new(),
    };
    if cli.json {
        output::json(&serde_json::json!({
            "profile": profile.link(),
            "current": current,
            "default": default,
            "in_flight": driven,
            "under_test": in_flight.as_ref().is_some_and(|a| a.awaiting_commit),
            "last": last.as_ref().map(|a| activation_json(&store, a)).transpose()?,
            "checks": latest_runs(&runs).into_iter().map(run_json).collect::<Vec<_>>(),
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    writeln!(out, "profile     {}", profile.link().display())?;
    match current {
        Some(n) => writeln!(
            out,
            "current     generation {n} ({})",
            profile.generation(n)?.path
        )?,
        None => writeln!(out, "current     (none)")?,
    }
    if default != current {
        writeln!(out, "default     generation {} (generation {} is under test: `noodle activate --commit` keeps it, `--abort` returns)", show_generation(default), show_generation(current))?;
    }
    let Some(a) = last else {
        writeln!(out, "activations (none yet)")?;
        return Ok(ExitCode::SUCCESS);
    };
    writeln!(
        out,
        "last        #{} {} → {} --strategy {}: {}{} at {} ({})",
        a.id,
        show_generation(a.from),
        a.to,
        a.strategy.as_str(),
        a.state.as_str(),
        if a.awaiting_commit {
            " (under test, healthy)"
        } else {
            ""
        },
        utc_time(a.started_at / 1_000_000),
        took(&a)
    )?;
    if driven {
        writeln!(
            out,
            "            in flight in process {} (`noodle status --follow` waits for it)",
            a.pid
        )?;
    }
    if let Some(reason) = &a.reason {
        writeln!(out, "            {reason}")?;
    }
    let latest = latest_runs(&runs);
    if !latest.is_empty() {
        writeln!(out, "checks and scripts (latest run of each):")?;
    }
    for run in latest {
        writeln!(
            out,
            "  {} gen {} {} '{}' of {}: {} ({})",
            if run.ok { "✓" } else { "✗" },
            show_generation(run.generation),
            run.kind.as_str(),
            run.name,
            run.package,
            run.describe(),
            show_duration(Duration::from_micros(run.duration_us.max(0) as u64))
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn median(mut values: Vec<i64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) as f64 / 2.0
    } else {
        values[mid] as f64
    })
}

/// From the end of the first red required run to the profile pointing back at the previous
/// generation, in microseconds.
fn red_to_reverted_us(store: &Store, a: &Activation) -> anyhow::Result<Option<i64>> {
    let runs = journal::runs(store, a.id)?;
    let Some(red) = runs
        .iter()
        .find(|r| !r.ok && r.required && r.generation == Some(a.to))
    else {
        return Ok(None);
    };
    let red_at = red.started_at + red.duration_us;
    let back = journal::events(store, a.id)?
        .into_iter()
        .find(|(what, _, _)| what == "switched-back")
        .map(|(_, at, _)| at - red_at);
    Ok(back)
}

pub fn history(cli: &Cli, stats: bool) -> anyhow::Result<ExitCode> {
    let mut store = open(cli, true)?;
    let located = locate(cli, &store)?;
    recover_if_abandoned(cli, &mut store, &located.profile)?;
    let key = records::key(&store, located.profile.link());
    let all = journal::history(&store, &key)?;
    if stats {
        let count = |s: State| all.iter().filter(|a| a.state == s).count();
        let total = all.len();
        let rate = |n: usize| {
            if total == 0 {
                0.0
            } else {
                n as f64 / total as f64
            }
        };
        let durations = |s: Option<State>| {
            median(
                all.iter()
                    .filter(|a| s.is_none_or(|s| a.state == s))
                    .filter_map(Activation::duration_us)
                    .collect(),
            )
            .map(|us| us / 1000.0)
        };
        let mut latencies = Vec::new();
        for a in all.iter().filter(|a| a.state != State::Committed) {
            latencies.extend(red_to_reverted_us(&store, a)?);
        }
        let report = serde_json::json!({
            "profile": key,
            "activations": total,
            "committed": count(State::Committed),
            "reverted": count(State::Reverted),
            "failed": count(State::Failed),
            "unfinished": all.iter().filter(|a| !a.state.is_final()).count(),
            "commit_rate": rate(count(State::Committed)),
            "revert_rate": rate(count(State::Reverted)),
            "failure_rate": rate(count(State::Failed)),
            "median_duration_ms": durations(None),
            "median_committed_duration_ms": durations(Some(State::Committed)),
            "median_reverted_duration_ms": durations(Some(State::Reverted)),
            "median_red_to_reverted_ms": median(latencies).map(|us| us / 1000.0),
        });
        if cli.json {
            output::json(&report)?;
        } else {
            let ms = |k: &str| {
                report[k]
                    .as_f64()
                    .map_or("-".into(), |v| format!("{v:.1} ms"))
            };
            let mut out = std::io::stdout().lock();
            writeln!(out, "activations of {key}: {total}")?;
            for (label, k, r) in [
                ("committed", "committed", "commit_rate"),
                ("reverted", "reverted", "revert_rate"),
                ("failed", "failed", "failure_rate"),
            ] {
                writeln!(
                    out,
                    "  {label:<10} {:>5}  ({:.0} %)",
                    report[k],
                    report[r].as_f64().unwrap_or(0.0) * 100.0
                )?;
            }
            writeln!(
                out,
                "median duration: {} (committed {}, reverted {})",
                ms("median_duration_ms"),
                ms("median_committed_duration_ms"),
                ms("median_reverted_duration_ms")
            )?;
            writeln!(
                out,
                "median time from a red required check to the previous generation active: {}",
                ms("median_red_to_reverted_ms")
            )?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if cli.json {
        let list: anyhow::Result<Vec<_>> = all.iter().map(|a| activation_json(&store, a)).collect();
        output::json(&list?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if all.is_empty() {
        note(cli, format!("{key} has never been activated"));
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for a in &all {
        writeln!(
            out,
            "#{:<4} {}  {:>6} → {:<6} {:<12} {:<9} {:>8}{}",
            a.id,
            utc_time(a.started_at / 1_000_000),
            show_generation(a.from),
            a.to,
            a.strategy.as_str(),
            a.state.as_str(),
            took(a),
            if a.awaiting_commit {
                "  (under test)"
            } else {
                ""
            }
        )?;
        if let Some(reason) = &a.reason {
            writeln!(out, "      {reason}")?;
        }
        if a.state != State::Committed {
            let runs = journal::runs(&store, a.id)?;
            if let Some(red) = first_red(&runs) {
                for line in red.output_tail(3).lines() {
                    writeln!(out, "      | {line}")?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn health(cli: &Cli) -> anyhow::Result<ExitCode> {
    let mut store = open(cli, true)?;
    let located = locate(cli, &store)?;
    let profile = &located.profile;
    recover_if_abandoned(cli, &mut store, profile)?;
    let Some(current) = profile.current()? else {
        anyhow::bail!(
            "{} has no current generation: there is nothing to check",
            profile.link().display()
        );
    };
    let (link, manifest) = generation::open(&store, profile, current)?;
    let target = GenerationRef {
        number: current,
        path: link.path.clone(),
        profile: records::key(&store, profile.link()),
    };
    let checks = plan::checks(&manifest, &target, CheckTime::Post);
    let view = StoreView::of(&store);
    let mut results: Vec<serde_json::Value> = Vec::new();
    let mut record = |planned: &Planned, attempt: u32, _: i64, finished: &Finished| {
        if !cli.quiet && !cli.json {
            eprintln!(
                "  {} check '{}' of {}: {} ({}){}",
                if finished.succeeded() { "✓" } else { "✗" },
                planned.name,
                planned.package_label,
                if finished.succeeded() {
                    "green".into()
                } else {
                    finished.describe()
                },
                show_duration(finished.duration),
                if planned.required { "" } else { " [wanted]" }
            );
            if !finished.succeeded() {
                for line in finished
                    .output
                    .trim_end()
                    .lines()
                    .rev()
                    .take(3)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                {
                    eprintln!("      | {line}");
                }
            }
        }
        results.push(serde_json::json!({
            "kind": RunKind::Check,
            "package": planned.package,
            "name": planned.name,
            "attempt": attempt,
            "required": planned.required,
            "ok": finished.succeeded(),
            "result": finished.describe(),
            "duration_ms": finished.duration.as_secs_f64() * 1000.0,
            "output": finished.output,
        }));
        Ok(())
    };
    let verdict = window::run(&view, &checks, Duration::ZERO, &mut record)?;
    let (healthy, why) = match &verdict {
        Verdict::Green { warnings } => (true, warnings.join("; ")),
        Verdict::Red { reason } => (false, reason.clone()),
        Verdict::Interrupted => (false, "interrupted".into()),
    };
    if cli.json {
        output::json(&serde_json::json!({
            "profile": profile.link(),
            "generation": current,
            "healthy": healthy,
            "reason": if why.is_empty() { None } else { Some(why) },
            "runs": results,
        }))?;
    } else if checks.is_empty() {
        note(
            cli,
            format!("generation {current} declares no health checks"),
        );
    } else if healthy {
        note(
            cli,
            format!(
                "generation {current} is healthy{}",
                if why.is_empty() {
                    String::new()
                } else {
                    format!(" (warning: {why})")
                }
            ),
        );
    } else {
        note(cli, format!("generation {current} is NOT healthy: {why}"));
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_RED)
    })
}
