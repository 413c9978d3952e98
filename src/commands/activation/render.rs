//! How an activation looks to a person: one line per check or script run on stderr as it
//! happens, then a verdict.

use std::collections::HashSet;

use noodle_activate::event::{Observer, RunKind, RunRecord};
use noodle_activate::options::show_duration;
use noodle_activate::{Event, Outcome, State, Strategy};

use crate::cli::Cli;

/// Prints events on stderr (nothing with --quiet; every run with --verbose, else each check's
/// first green run and every red one).
pub struct Progress {
    quiet: bool,
    verbose: bool,
    shown: HashSet<(Option<u64>, RunKind, String, String)>,
}

impl Progress {
    pub fn new(cli: &Cli) -> Self {
        Self {
            quiet: cli.quiet,
            verbose: cli.verbose,
            shown: HashSet::new(),
        }
    }
}

fn run_line(run: &RunRecord) -> String {
    let what = match run.kind {
        RunKind::Script => format!("activation script of {}", run.package),
        RunKind::Pre => format!("pre-activation check '{}' of {}", run.name, run.package),
        RunKind::Check => format!("check '{}' of {}", run.name, run.package),
    };
    let time = show_duration(std::time::Duration::from_micros(
        run.duration_us.max(0) as u64
    ));
    let retry = if run.attempt > 0 {
        format!(", retry {}", run.attempt)
    } else {
        String::new()
    };
    if run.ok {
        format!("  ✓ {what} ({time}{retry})")
    } else {
        let mut line = format!(
            "  ✗ {what}: {} ({time}{retry}){}",
            run.describe(),
            if run.required { "" } else { " [wanted]" }
        );
        for text in run.output_tail(3).lines() {
            line += &format!("\n      | {text}");
        }
        line
    }
}

impl Observer for Progress {
    fn event(&mut self, event: &Event) {
        if self.quiet {
            return;
        }
        let line = match event {
            Event::State { state, note, .. } if self.verbose => Some(format!(
                "  {}{}",
                state.as_str(),
                note.as_ref().map(|n| format!(": {n}")).unwrap_or_default()
            )),
            Event::Switched { generation, .. } => Some(match generation {
                Some(n) => format!("  → generation {n} is active"),
                None => "  → the profile points at no generation".to_owned(),
            }),
            Event::Run(run) => {
                let key = (
                    run.generation,
                    run.kind,
                    run.package.clone(),
                    run.name.clone(),
                );
                (self.verbose || !run.ok || self.shown.insert(key)).then(|| run_line(run))
            }
            Event::Warning { message, .. } => Some(format!("  warning: {message}")),
            Event::Reverting { reason, .. } => Some(format!("  reverting: {reason}")),
            _ => None,
        };
        if let Some(line) = line {
            eprintln!("{line}");
        }
    }
}

/// The verdict, for people.
pub fn verdict(outcome: &Outcome) -> String {
    let a = &outcome.activation;
    let from = a.from.map_or("(none)".to_owned(), |n| n.to_string());
    let took = a
        .duration_us()
        .map(|us| {
            format!(
                " in {}",
                show_duration(std::time::Duration::from_micros(us.max(0) as u64))
            )
        })
        .unwrap_or_default();
    match a.state {
        State::Committed if a.strategy == Strategy::Boot => format!(
            "generation {} will be the default from the next boot on (`noodle activate --recover` applies it now); generation {from} stays active",
            a.to
        ),
        State::Committed if a.from == Some(a.to) => {
            format!("generation {} activated again and healthy{took}", a.to)
        }
        State::Committed => format!(
            "generation {} is active and healthy (was {from}){took}{}",
            a.to,
            if outcome.warnings.is_empty() { "" } else { ", with warnings" }
        ),
        State::Active if a.awaiting_commit => format!(
            "generation {} is active under test; generation {from} stays the default: `noodle activate --commit` keeps {}, `noodle activate --abort` returns to {from}",
            a.to, a.to
        ),
        State::Reverted => format!(
            "activation of generation {} reverted{took}: {}\ngeneration {from} is active{}",
            a.to,
            a.reason.as_deref().unwrap_or("(no reason recorded)"),
            if a.from.is_some() { " again" } else { "" }
        ),
        State::Failed => format!(
            "ACTIVATION FAILED: {}",
            a.reason.as_deref().unwrap_or("(no reason recorded)")
        ),
        other => format!(
            "activation #{} of generation {} is still {} (`noodle status` follows it)",
            a.id,
            a.to,
            other.as_str()
        ),
    }
}
