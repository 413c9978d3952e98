//! The activation state machine (DESIGN.md §8): BUILT → VALIDATED → STAGED → ACTIVE →
//! COMMITTED, or REVERTED, or FAILED. Each state is journalled before its work starts; every
//! path out of ACTIVE that is not COMMITTED goes through [`Session::revert`].

use std::time::Duration;

use noodle_profiles::{generation, CheckTime, Manifest, Profile, ProfileLock};
use noodle_store::verify::VerifyOptions;
use noodle_store::{failpoint, progress, Store};
use serde::Serialize;

use crate::error::{ActivateError, Result};
use crate::event::{Event, Observer, RunRecord};
use crate::exec::{self, Cancel, Finished, StoreView};
use crate::interrupt;
use crate::journal::{self, Activation, State};
use crate::options::{Options, Strategy};
use crate::plan::{self, GenerationRef, Planned};
use crate::window::{self, Verdict};

/// How an activation ended (or, for `test`, where it waits).
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub activation: Activation,
    /// Wanted checks that were red.
    pub warnings: Vec<String>,
}

/// An activation's work on one profile, under the profile's lock.
pub struct Session<'a> {
    store: &'a mut Store,
    profile: &'a Profile,
    key: String,
    view: StoreView,
    observer: &'a mut dyn Observer,
}

impl<'a> Session<'a> {
    /// `_lock` proves the caller holds the profile's lock for as long as the session lives.
    pub fn new(
        store: &'a mut Store,
        profile: &'a Profile,
        _lock: &'a ProfileLock,
        observer: &'a mut dyn Observer,
    ) -> Self {
        let key = noodle_profiles::records::key(store, profile.link());
        let view = StoreView::of(store);
        Self {
            store,
            profile,
            key,
            view,
            observer,
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    fn emit(&mut self, event: Event) {
        self.observer.event(&event);
    }

    fn enter(&mut self, id: i64, state: State, note: Option<&str>) -> Result<()> {
        let event = journal::set_state(self.store, id, state, note)?;
        self.emit(event);
        Ok(())
    }

    fn record(
        &mut self,
        id: i64,
        generation: u64,
        planned: &Planned,
        attempt: u32,
        started_at: i64,
        finished: &Finished,
    ) -> Result<()> {
        let run = run_record(id, generation, planned, attempt, started_at, finished);
        journal::record_run(self.store, &run)?;
        self.emit(Event::Run(run));
        Ok(())
    }

    /// Runs `checks` of `generation` for `window`, journalling every run; `first_point` is a
    /// failure point hit after the first run is journalled.
    fn run_checks(
        &mut self,
        id: i64,
        generation: u64,
        checks: &[Planned],
        window: Duration,
        first_point: Option<&'static str>,
    ) -> Result<Verdict> {
        let view = self.view.clone();
        let (store, observer) = (&mut *self.store, &mut *self.observer);
        let mut first = first_point;
        let mut record = |planned: &Planned, attempt: u32, started_at: i64, finished: &Finished| {
            let run = run_record(id, generation, planned, attempt, started_at, finished);
            journal::record_run(store, &run)?;
            observer.event(&Event::Run(run));
            if let Some(point) = first.take() {
                failpoint::hit(point);
            }
            Ok(())
        };
        window::run(&view, checks, window, &mut record)
    }

    /// Refuses while a generation is under test: it must be committed or aborted first.
    pub fn refuse_if_under_test(&self) -> Result<()> {
        if let Some(open) = journal::unfinished(self.store, &self.key)? {
            return Err(ActivateError::UnderTest {
                profile: self.key.clone(),
                id: open.id,
                generation: open.to,
                default: open.from.map_or("(none)".into(), |n| n.to_string()),
            });
        }
        Ok(())
    }

    /// Journals the activation of generation `to` (BUILT) and drives it to its end.
    pub fn activate(&mut self, to: u64, options: &Options) -> Result<Outcome> {
        let activation = self.start(to, options)?;
        self.drive(activation.id)
    }

    /// Journals the activation of generation `to` in state BUILT; [`Session::drive`] does it.
    pub fn start(&mut self, to: u64, options: &Options) -> Result<Activation> {
        self.refuse_if_under_test()?;
        let from = self.profile.current()?;
        let link = self.profile.generation(to)?;
        let activation = journal::begin(self.store, &self.key, from, to, &link.path, options)?;
        self.emit(Event::State {
            id: activation.id,
            state: State::Built,
            at_us: activation.started_at,
            note: None,
        });
        failpoint::hit("activate:built");
        Ok(activation)
    }

    fn generation_ref(&self, number: u64, path: &str) -> GenerationRef {
        GenerationRef {
            number,
            path: path.to_owned(),
            profile: self.key.clone(),
        }
    }

    /// Runs a journalled activation (in state BUILT) to its end.
    pub fn drive(&mut self, id: i64) -> Result<Outcome> {
        interrupt::catch();
        journal::set_pid(self.store, id, std::process::id())?;
        let activation = journal::get(self.store, id)?;
        let options = activation.options.clone();

        self.enter(id, State::Validated, None)?;
        failpoint::hit("activate:validated");
        let manifest = match self.validate(&activation) {
            Ok(manifest) => manifest,
            Err(why) => return self.revert(id, &format!("validation failed: {why}")),
        };

        self.enter(id, State::Staged, None)?;
        failpoint::hit("activate:staged");
        if options.strategy == Strategy::Boot {
            self.enter(
                id,
                State::Committed,
                Some("the default from the next boot (or `noodle activate --recover`) on; nothing changed now"),
            )?;
            return self.outcome(id, Vec::new());
        }

        self.enter(id, State::Active, None)?;
        failpoint::hit("activate:active");
        if self.profile.current()? != Some(activation.to) {
            self.profile.point_at(activation.to)?;
        }
        let at_us = journal::mark(self.store, id, "switched", None)?;
        self.emit(Event::Switched {
            id,
            generation: Some(activation.to),
            at_us,
        });
        failpoint::hit("activate:switched");

        let previous = match activation.from {
            Some(from) if from != activation.to => generation::open(self.store, self.profile, from)
                .ok()
                .map(|(_, m)| m),
            _ => None,
        };
        let target = self.generation_ref(activation.to, &activation.to_path);
        let scripts = plan::scripts(
            &manifest,
            previous.as_ref(),
            &target,
            activation.from == Some(activation.to),
            options.script_timeout(),
        );
        if let Err(why) = self.run_scripts(id, activation.to, &scripts) {
            return self.revert(id, &why);
        }
        failpoint::hit("activate:scripts-done");

        let checks = plan::checks(&manifest, &target, CheckTime::Post);
        let verdict = self.run_checks(
            id,
            activation.to,
            &checks,
            options.window(),
            Some("activate:checking"),
        )?;
        match verdict {
            Verdict::Red { reason } => self.revert(id, &reason),
            Verdict::Interrupted => self.revert(id, "interrupted (`noodle activate --abort`, Ctrl-C or SIGTERM) during the health window"),
            Verdict::Green { warnings } => {
                for message in &warnings {
                    self.emit(Event::Warning {
                        id,
                        message: message.clone(),
                    });
                }
                if !warnings.is_empty() {
                    journal::set_reason(self.store, id, &format!("warning: {}", warnings.join("; ")))?;
                }
                failpoint::hit("activate:healthy");
                if options.strategy == Strategy::Test {
                    let event = journal::mark_awaiting_commit(self.store, id)?;
                    self.emit(event);
                } else {
                    self.enter(id, State::Committed, None)?;
                }
                self.outcome(id, warnings)
            }
        }
    }

    fn outcome(&self, id: i64, warnings: Vec<String>) -> Result<Outcome> {
        Ok(Outcome {
            activation: journal::get(self.store, id)?,
            warnings,
        })
    }

    /// The gates before anything changes: the generation opens, its closure is complete and
    /// intact, every check's program exists, and the `pre` checks pass. The error is the reason.
    fn validate(&mut self, activation: &Activation) -> std::result::Result<Manifest, String> {
        let (link, manifest) =
            generation::open(self.store, self.profile, activation.to).map_err(|e| e.to_string())?;
        let closure = self
            .store
            .db()
            .closure(&link.path, false)
            .map_err(|e| e.to_string())?;
        let report = self
            .store
            .verify(
                &VerifyOptions {
                    check_contents: activation.options.verify_contents,
                    repair: false,
                    paths: closure,
                },
                &progress::Silent,
            )
            .map_err(|e| e.to_string())?;
        if let Some(problem) = report.problems.first() {
            return Err(format!(
                "{} of its closure {} ({}{}); `noodle store verify --repair` says more",
                report.problems.len(),
                if report.problems.len() == 1 {
                    "path is damaged"
                } else {
                    "paths are damaged"
                },
                problem.path,
                problem
                    .details
                    .first()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            ));
        }
        let target = self.generation_ref(activation.to, &link.path);
        let pre = plan::checks(&manifest, &target, CheckTime::Pre);
        for planned in pre
            .iter()
            .chain(&plan::checks(&manifest, &target, CheckTime::Post))
        {
            if plan::resolve(self.store, &planned.job.program).is_none() {
                return Err(format!(
                    "health check '{}' of {}: its command {} does not exist; fix the recipe's [[health]] command (relative to the package, e.g. [\"bin/tool\", \"--selftest\"])",
                    planned.name, planned.package_label, planned.job.program
                ));
            }
        }
        let id = activation.id;
        let to = activation.to;
        let verdict = self
            .run_checks(id, to, &pre, Duration::ZERO, None)
            .map_err(|e| e.to_string())?;
        match verdict {
            Verdict::Green { warnings } => {
                for message in warnings {
                    self.emit(Event::Warning { id, message });
                }
                Ok(manifest)
            }
            Verdict::Red { reason } => Err(format!("pre-activation {reason}")),
            Verdict::Interrupted => Err("interrupted before the switch".into()),
        }
    }

    /// Runs scripts one after the other; the error says which failed and how.
    fn run_scripts(
        &mut self,
        id: i64,
        generation: u64,
        scripts: &[Planned],
    ) -> std::result::Result<(), String> {
        for script in scripts {
            if interrupt::requested() {
                return Err("interrupted (`noodle activate --abort`, Ctrl-C or SIGTERM) during the activation scripts".into());
            }
            let started_at = journal::now_us();
            let finished = exec::run(&self.view, &script.job, &Cancel::new());
            self.record(id, generation, script, 0, started_at, &finished)
                .map_err(|e| e.to_string())?;
            if !finished.succeeded() {
                let last = finished
                    .output
                    .trim_end()
                    .lines()
                    .last()
                    .map(|l| format!(": {l}"))
                    .unwrap_or_default();
                return Err(format!(
                    "the activation script of {} failed ({}){last}",
                    script.package_label,
                    finished.describe()
                ));
            }
        }
        Ok(())
    }

    /// Undoes activation `id`: journals why, switches back to the generation it came from,
    /// re-runs that one's activation and checks it once. REVERTED when it is healthy; FAILED,
    /// staying on it, when it is not.
    pub fn revert(&mut self, id: i64, reason: &str) -> Result<Outcome> {
        let event = journal::mark_reverting(self.store, id, reason)?;
        self.emit(event);
        failpoint::hit("activate:reverting");
        let activation = journal::get(self.store, id)?;
        let switched = activation.state.may_have_switched()
            || (self.profile.current()? == Some(activation.to)
                && activation.from != Some(activation.to));
        if !switched {
            self.enter(id, State::Reverted, Some("nothing had changed"))?;
            return self.outcome(id, Vec::new());
        }
        match activation.from {
            Some(from) if self.profile.current()? != Some(from) => self.profile.point_at(from)?,
            Some(_) => {}
            None => self.profile.point_at_nothing()?,
        }
        let at_us = journal::mark(self.store, id, "switched-back", None)?;
        self.emit(Event::Switched {
            id,
            generation: activation.from,
            at_us,
        });
        failpoint::hit("activate:switched-back");
        let Some(from) = activation.from else {
            self.enter(
                id,
                State::Reverted,
                Some("the profile points at no generation again, as before"),
            )?;
            return self.outcome(id, Vec::new());
        };
        let previous = match generation::open(self.store, self.profile, from) {
            Ok((_, manifest)) => manifest,
            Err(e) => return self.fail(id, from, &format!("it cannot be opened: {e}")),
        };
        let failed = generation::open(self.store, self.profile, activation.to)
            .ok()
            .map(|(_, m)| m);
        let target = self.generation_ref(from, &journal_path(self.profile, from));
        let scripts = plan::scripts(
            &previous,
            failed.as_ref(),
            &target,
            false,
            activation.options.script_timeout(),
        );
        if let Err(why) = self.run_scripts(id, from, &scripts) {
            return self.fail(id, from, &why);
        }
        failpoint::hit("activate:revert-scripts-done");
        let checks = plan::checks(&previous, &target, CheckTime::Post);
        let verdict = self.run_checks(id, from, &checks, Duration::ZERO, None)?;
        match verdict {
            Verdict::Red { reason } => self.fail(id, from, &reason),
            Verdict::Interrupted | Verdict::Green { .. } => {
                self.enter(
                    id,
                    State::Reverted,
                    Some(&format!("generation {from} is active again and healthy")),
                )?;
                self.outcome(id, Vec::new())
            }
        }
    }

    fn fail(&mut self, id: i64, from: u64, why: &str) -> Result<Outcome> {
        let activation = journal::get(self.store, id)?;
        let reason = format!(
            "{}; then the previous generation {from} is not healthy either: {why}. The profile stays on generation {from}: fix what the check says, or switch to a generation known to work (`noodle profile generations`, `noodle profile switch N`)",
            activation.reason.unwrap_or_default()
        );
        journal::set_reason(self.store, id, &reason)?;
        self.enter(id, State::Failed, Some(&reason))?;
        self.outcome(id, Vec::new())
    }

    /// Finishes what a crashed or killed activation left: anything not COMMITTED is reverted.
    /// A `test` activation whose checks passed is left alone unless `explicit` (then, as at
    /// boot, the profile returns to its default). `Ok(None)` when there was nothing to do.
    pub fn recover(&mut self, explicit: bool) -> Result<Option<Outcome>> {
        let Some(activation) = journal::unfinished(self.store, &self.key)? else {
            return Ok(None);
        };
        if activation.awaiting_commit && !explicit {
            return Ok(None);
        }
        let reason = if activation.reverting {
            activation.reason.clone().unwrap_or_default()
        } else if activation.awaiting_commit {
            format!(
                "generation {} was under test and not committed: back to the default, generation {}",
                activation.to,
                activation.from.map_or("(none)".into(), |n| n.to_string())
            )
        } else {
            format!(
                "interrupted in state {}: the process driving it (pid {}) stopped before it finished",
                activation.state.as_str(),
                activation.pid
            )
        };
        Ok(Some(self.revert(activation.id, &reason)?))
    }

    /// `activate --abort` once no live process drives the activation: undoes it now.
    pub fn abort(&mut self) -> Result<Outcome> {
        match journal::unfinished(self.store, &self.key)? {
            Some(activation) => self.revert(activation.id, "aborted by `noodle activate --abort`"),
            None => Err(ActivateError::NothingToDo {
                verb: "abort",
                why: self.last_words("no activation is in flight"),
            }),
        }
    }

    /// At boot (`activate --recover`): a generation activated with `--strategy boot` that is
    /// still the latest word becomes active now, health-gated like any switch.
    pub fn apply_boot_default(&mut self, options: &Options) -> Result<Option<Outcome>> {
        let Some(last) = journal::last(self.store, &self.key)? else {
            return Ok(None);
        };
        if last.strategy != Strategy::Boot
            || last.state != State::Committed
            || self.profile.current()? == Some(last.to)
        {
            return Ok(None);
        }
        let options = Options {
            strategy: Strategy::Switch,
            ..options.clone()
        };
        Ok(Some(self.activate(last.to, &options)?))
    }

    /// `no activation of profile P is in flight (the last one, #3, 1 → 2 with --strategy
    /// switch, ended COMMITTED)`.
    fn last_words(&self, what: &str) -> String {
        match journal::last(self.store, &self.key) {
            Ok(Some(last)) => format!(
                "{what} in profile {} (its last activation, #{}, {} → {} with --strategy {}, ended {})",
                self.key,
                last.id,
                last.from.map_or("(none)".into(), |n| n.to_string()),
                last.to,
                last.strategy.as_str(),
                last.state.as_str()
            ),
            _ => format!("profile {} has never been activated", self.key),
        }
    }

    /// Ends a `test` activation by making its generation the default.
    pub fn commit(&mut self) -> Result<Outcome> {
        let open = journal::unfinished(self.store, &self.key)?;
        match open {
            Some(activation) if activation.awaiting_commit => {
                self.enter(
                    activation.id,
                    State::Committed,
                    Some("committed by `noodle activate --commit`"),
                )?;
                self.outcome(activation.id, Vec::new())
            }
            _ => {
                let why = self.last_words("no generation is under test");
                Err(ActivateError::NothingToDo {
                    verb: "commit",
                    why,
                })
            }
        }
    }
}

fn journal_path(profile: &Profile, number: u64) -> String {
    profile
        .generation(number)
        .map(|g| g.path)
        .unwrap_or_default()
}

fn run_record(
    id: i64,
    generation: u64,
    planned: &Planned,
    attempt: u32,
    started_at: i64,
    finished: &Finished,
) -> RunRecord {
    RunRecord {
        activation: id,
        generation: Some(generation),
        kind: planned.kind,
        package: planned.package.clone(),
        name: planned.name.clone(),
        attempt,
        required: planned.required,
        started_at,
        duration_us: finished.duration.as_micros() as i64,
        ok: finished.succeeded(),
        outcome: serde_json::to_value(&finished.outcome).unwrap_or_default(),
        output: finished.output.clone(),
        output_bytes: finished.output_bytes,
    }
}
