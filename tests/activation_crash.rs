//! Crash safety of health-gated activation (issue 5, DESIGN.md §8): "a test kills the process
//! at every named point of the state machine and checks that recovery always ends on a
//! generation that is either committed-healthy or the one active before."
//!
//! The named points are every `activate:*` entry of `noodle_store::failpoint::ALL`, so a point
//! added later is covered as soon as it is listed; each must be reached by at least one
//! scenario. Every scenario runs in this process (`--no-detach`) on a copy of a template store,
//! once per point:
//! - `Good`: `activate 3` over generation 1: crypto 1.2.3 → 1.2.5, plus greeter (which has an
//!   activation script); it commits.
//! - `Bad`: `activate 4` over generation 1: crypto 1.3.0, whose self-test is red; it reverts,
//!   so the points of the reversion are reached too.
//! - `First`: `install hello` into a profile that has no generation yet (from = none).
//! - `FirstBad`: `install crypto@1.3.0` into that profile: it reverts to no generation at all.
//!
//! A point not on a scenario's path lets it finish normally, with its usual outcome. After a
//! crash, recovery is done each way a user would: `activate --recover`, `status`, `list`, or
//! the next change (`install hello`). Then: no activation is unfinished; the one
//! that crashed was reverted and the profile is back on the generation active before (or the
//! next change was made on top of it); the last activation is COMMITTED with the profile on its
//! `to` and `noodle health` green, or REVERTED with the profile on its `from`; the store
//! verifies clean; no temporary link is left in the profiles' directory.
//!
//! Also: a detached activation whose worker is killed (the launcher recovers by itself), and a
//! crash during the recovery of a crash (the next recovery finishes the job).

mod common;

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Output;

use common::channel::Channel;
use common::{stderr_of, Noodle};
use noodle_store::failpoint;

/// Where the test's profiles live (logical, so the same in every copy of the store).
const PROFILES: &str = "/noodle/var/profiles";

/// Cases run at once (the machine may have only two cores; most of the time is processes).
const WORKERS: usize = 3;

/// Exit codes of an activating command.
const EXIT_REVERTED: i32 = 7;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Good,
    Bad,
    First,
    FirstBad,
}

const SCENARIOS: [Scenario; 4] = [
    Scenario::Good,
    Scenario::Bad,
    Scenario::First,
    Scenario::FirstBad,
];

impl Scenario {
    fn profile(self) -> &'static str {
        match self {
            Scenario::First | Scenario::FirstBad => "first",
            Scenario::Good | Scenario::Bad => "main",
        }
    }

    fn args(self) -> &'static [&'static str] {
        match self {
            Scenario::Good => &["activate", "3", "--no-detach"],
            Scenario::Bad => &["activate", "4", "--no-detach"],
            Scenario::First => &["install", "hello", "--no-detach"],
            Scenario::FirstBad => &["install", "crypto@1.3.0", "--no-detach"],
        }
    }

    /// The state it ends in without a crash, and its exit code.
    fn outcome(self) -> (&'static str, i32) {
        match self {
            Scenario::Good | Scenario::First => ("COMMITTED", 0),
            Scenario::Bad | Scenario::FirstBad => ("REVERTED", EXIT_REVERTED),
        }
    }
}

/// How the user recovers after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recovery {
    /// `noodle activate --recover`.
    Recover,
    /// `noodle status`, which recovers an abandoned activation first.
    Status,
    /// `noodle list`, likewise.
    List,
    /// The next change, `noodle install hello`, which recovers first.
    Install,
}

const RECOVERIES: [Recovery; 4] = [
    Recovery::Recover,
    Recovery::Status,
    Recovery::List,
    Recovery::Install,
];

impl Recovery {
    fn args(self) -> &'static [&'static str] {
        match self {
            Recovery::Recover => &["activate", "--recover"],
            Recovery::Status => &["status"],
            Recovery::List => &["list"],
            Recovery::Install => &["install", "hello"],
        }
    }

    /// Its exit code once the crashed activation was reverted.
    fn code(self) -> i32 {
        match self {
            Recovery::Recover => EXIT_REVERTED,
            Recovery::Status | Recovery::List | Recovery::Install => 0,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Case {
    /// Crash the scenario at the point, then recover.
    Crash(Scenario, &'static str, Recovery),
    /// `Good`, detached, with its worker killed at `activate:checking`.
    Detached,
    /// `Good` crashed at `activate:checking`, then `activate --recover` crashed at this point
    /// of the reversion, then `activate --recover` again.
    CrashInRecovery(&'static str),
}

/// One copy of the template: its store and channel.
struct Env {
    noodle: Noodle,
    channel: Channel,
    /// Port of an HTTP server answering "ok", for greeter's `http` check.
    port: u16,
}

impl Env {
    fn profile_arg(name: &str) -> String {
        format!("{PROFILES}/{name}")
    }

    /// `noodle --channel C --profile P ARGS` with `env`.
    fn run(&self, profile: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let channel = self.channel.dir.to_str().expect("utf-8").to_owned();
        let profile = Self::profile_arg(profile);
        let mut all = vec!["--channel", &channel, "--profile", &profile];
        all.extend_from_slice(args);
        let port = self.port.to_string();
        let mut env = env.to_vec();
        env.push(("GREETER_PORT", &port));
        self.noodle.run_env(&all, &env)
    }

    fn ok(&self, profile: &str, args: &[&str]) {
        let out = self.run(profile, args, &[]);
        assert!(
            out.status.success(),
            "noodle {args:?} on {profile} failed ({}): {}",
            out.status,
            stderr_of(&out)
        );
    }

    /// Where the profile link is.
    fn link(&self, profile: &str) -> PathBuf {
        self.noodle.physical(&Self::profile_arg(profile))
    }

    /// The generation the profile link names; `None` when there is no link.
    fn current(&self, profile: &str, ctx: &str) -> Option<u64> {
        let link = self.link(profile);
        match link.symlink_metadata() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("{ctx}: lstat {}: {e}", link.display()),
            Ok(_) => Some(
                self.noodle
                    .current_generation(&link)
                    .unwrap_or_else(|| panic!("{ctx}: the profile link is not a generation's")),
            ),
        }
    }

    /// The package names of generation `number` of the profile, from its manifest.
    fn packages(&self, profile: &str, number: Option<u64>, ctx: &str) -> BTreeSet<String> {
        let Some(number) = number else {
            return BTreeSet::new();
        };
        let link = self
            .noodle
            .physical(&format!("{PROFILES}/{profile}-{number}-link"));
        let path = std::fs::read_link(&link)
            .unwrap_or_else(|e| panic!("{ctx}: readlink {}: {e}", link.display()));
        let manifest = self
            .noodle
            .physical(path.to_str().expect("utf-8"))
            .join("manifest.json");
        let text = std::fs::read_to_string(&manifest)
            .unwrap_or_else(|e| panic!("{ctx}: read {}: {e}", manifest.display()));
        let manifest: serde_json::Value = serde_json::from_str(&text).expect("manifest JSON");
        manifest["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .map(|p| p["name"].as_str().expect("name").to_owned())
            .collect()
    }

    /// The profile's activations, oldest first.
    fn activations(&self, profile: &str) -> Vec<Row> {
        let db = rusqlite::Connection::open(self.noodle.db_file()).expect("open the db");
        let mut stmt = db
            .prepare(
                "SELECT id, from_generation, to_generation, state, reverting, awaiting_commit,
                        reason
                 FROM activations WHERE profile = ?1 ORDER BY id",
            )
            .expect("query activations");
        stmt.query_map([Self::profile_arg(profile)], |r| {
            Ok(Row {
                id: r.get(0)?,
                from: r.get::<_, Option<i64>>(1)?.map(|n| n as u64),
                to: r.get::<_, i64>(2)? as u64,
                state: r.get(3)?,
                reverting: r.get(4)?,
                awaiting_commit: r.get(5)?,
                reason: r.get(6)?,
            })
        })
        .expect("rows")
        .map(|r| r.expect("row"))
        .collect()
    }

    /// Temporary links left in the profiles' directory (`.<name>*.tmp-*`).
    fn temporary_links(&self) -> Vec<String> {
        let mut found: Vec<String> = std::fs::read_dir(self.noodle.physical(PROFILES))
            .expect("read the profiles' directory")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.') && n.contains(".tmp-"))
            .collect();
        found.sort();
        found
    }
}

/// One row of the `activations` table.
#[derive(Debug, Clone)]
struct Row {
    id: i64,
    from: Option<u64>,
    to: u64,
    state: String,
    reverting: bool,
    awaiting_commit: bool,
    reason: Option<String>,
}

impl Row {
    fn is_final(&self) -> bool {
        matches!(self.state.as_str(), "COMMITTED" | "REVERTED" | "FAILED")
    }
}

struct Template {
    env: Env,
}

/// `main`: generations 1 {crypto 1.2.3}, 2 {crypto 1.2.5}, 3 {crypto 1.2.5, greeter},
/// 4 {crypto 1.3.0, greeter} (reverted when made); 1 is current. `first`: nothing at all.
fn template(port: u16) -> Template {
    let noodle = Noodle::new();
    let channel = Channel::repo(&noodle);
    let env = Env {
        noodle,
        channel,
        port,
    };
    env.ok("main", &["install", "crypto@1.2.3"]);
    env.ok("main", &["update", "crypto", "1.2.5"]);
    env.ok("main", &["install", "greeter"]);
    // greeter's wanted `http` check asks the server of GREETER_PORT: green, and quick (a red
    // one would retry for seconds in every case).
    let greeter = env.activations("main").pop().expect("an activation");
    assert!(
        greeter.state == "COMMITTED" && greeter.reason.is_none(),
        "template: install greeter: {greeter:?}"
    );
    let out = env.run("main", &["update", "crypto", "1.3.0"], &[]);
    assert_eq!(
        out.status.code(),
        Some(EXIT_REVERTED),
        "template: crypto 1.3.0 must revert: {}",
        stderr_of(&out)
    );
    env.ok("main", &["profile", "switch", "1"]);
    // Generation 1 {hello} of `first` must not exist yet, but hello must be built.
    env.noodle.build_ok(&env.channel, &["hello"]);

    assert_eq!(env.current("main", "template"), Some(1), "template");
    let names = |n| env.packages("main", Some(n), "template");
    assert_eq!(names(1), set(&["crypto"]), "template: generation 1");
    assert_eq!(
        names(3),
        set(&["crypto", "greeter"]),
        "template: generation 3"
    );
    assert_eq!(
        names(4),
        set(&["crypto", "greeter"]),
        "template: generation 4"
    );
    assert!(
        env.activations("main").iter().all(Row::is_final),
        "template: {:?}",
        env.activations("main")
    );
    assert_eq!(env.current("first", "template"), None, "template: first");
    assert!(env.activations("first").is_empty(), "template: first");
    Template { env }
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

/// A copy of the template's store and channel (with its noodle.lock).
fn clone(t: &Template) -> Env {
    let noodle = Noodle::uninitialised();
    common::copy_root(&t.env.noodle.root(), &noodle.root());
    let channel = Channel::repo(&noodle);
    std::fs::copy(
        t.env.channel.dir.join("noodle.lock"),
        channel.dir.join("noodle.lock"),
    )
    .expect("copy noodle.lock");
    Env {
        noodle,
        channel,
        port: t.env.port,
    }
}

/// The activation a crash left: the profile's only unfinished one, newer than any before.
fn crashed_row(env: &Env, profile: &str, before: i64, ctx: &str) -> Row {
    let rows = env.activations(profile);
    let open: Vec<&Row> = rows.iter().filter(|r| !r.is_final()).collect();
    assert_eq!(open.len(), 1, "{ctx}: unfinished activations: {rows:?}");
    let row = open[0].clone();
    assert!(row.id > before, "{ctx}: {row:?} is not the new activation");
    assert!(!row.awaiting_commit, "{ctx}: {row:?}");
    row
}

/// Right after a crash at `point`: the journal says where it stopped, and the profile is on
/// `from` or `to` accordingly.
fn assert_crashed_state(env: &Env, profile: &str, row: &Row, point: &str, ctx: &str) {
    let current = env.current(profile, ctx);
    assert!(
        current == row.from || current == Some(row.to),
        "{ctx}: the profile is on {current:?}, neither from nor to of {row:?}"
    );
    // What each point of today's machine implies (a point added later is checked only by the
    // general rules).
    let (state, reverting, on_to) = match point {
        "activate:built" => ("BUILT", false, Some(false)),
        "activate:validated" => ("VALIDATED", false, Some(false)),
        "activate:staged" => ("STAGED", false, Some(false)),
        "activate:active" => ("ACTIVE", false, Some(false)),
        "activate:switched"
        | "activate:scripts-done"
        | "activate:checking"
        | "activate:healthy" => ("ACTIVE", false, Some(true)),
        "activate:reverting" => ("ACTIVE", true, Some(true)),
        "activate:switched-back" | "activate:revert-scripts-done" => ("ACTIVE", true, Some(false)),
        _ => return,
    };
    assert_eq!(row.state, state, "{ctx}: {row:?}");
    assert_eq!(row.reverting, reverting, "{ctx}: {row:?}");
    if let Some(on_to) = on_to {
        let want = if on_to { Some(row.to) } else { row.from };
        assert_eq!(
            current, want,
            "{ctx}: the profile after the crash ({row:?})"
        );
    }
}

/// The end state: no activation is unfinished; the last one is COMMITTED with the profile on
/// its `to` and healthy, or REVERTED with the profile on its `from`; the store verifies clean;
/// no temporary link is left.
fn assert_settled(env: &Env, profile: &str, ctx: &str) -> Row {
    let rows = env.activations(profile);
    assert!(
        rows.iter().all(|r| r.is_final() && !r.awaiting_commit),
        "{ctx}: an activation is unfinished: {rows:?}"
    );
    let last = rows.last().expect("an activation").clone();
    let current = env.current(profile, ctx);
    match last.state.as_str() {
        "COMMITTED" => {
            assert_eq!(current, Some(last.to), "{ctx}: committed {last:?}");
            let out = env.run(profile, &["health"], &[]);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{ctx}: `health` of the committed generation: {}",
                stderr_of(&out)
            );
        }
        "REVERTED" => {
            assert_eq!(current, last.from, "{ctx}: reverted {last:?}");
            if last.from.is_some() {
                let out = env.run(profile, &["health"], &[]);
                assert_eq!(
                    out.status.code(),
                    Some(0),
                    "{ctx}: `health` of the generation reverted to: {}",
                    stderr_of(&out)
                );
            }
        }
        // The generation active before is healthy in every scenario here: FAILED would be a
        // wrong verdict.
        other => panic!("{ctx}: the last activation ended {other}: {last:?}"),
    }
    let out = env.noodle.run(&["store", "verify"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{ctx}: store verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr_of(&out)
    );
    assert_eq!(env.temporary_links(), Vec::<String>::new(), "{ctx}");
    last
}

/// The highest activation id of the profile so far (0 if none).
fn last_id(env: &Env, profile: &str) -> i64 {
    env.activations(profile).last().map_or(0, |r| r.id)
}

/// Crashes `scenario` at `point` in a copy of the template and recovers; `false` when the
/// point is not on its path (it then finished normally, with its usual outcome).
fn crash_at(t: &Template, scenario: Scenario, point: &str, recovery: Recovery) -> bool {
    let ctx = format!("{scenario:?} at {point}");
    let env = clone(t);
    let profile = scenario.profile();
    let before = last_id(&env, profile);
    let from = env.current(profile, &ctx);

    let out = env.run(profile, scenario.args(), &[(failpoint::ENV, point)]);
    if out.status.signal().is_none() {
        let ctx = format!("{ctx}, not reached");
        let (state, code) = scenario.outcome();
        assert_eq!(out.status.code(), Some(code), "{ctx}: {}", stderr_of(&out));
        let last = assert_settled(&env, profile, &ctx);
        assert!(last.id > before, "{ctx}: no new activation");
        assert_eq!(last.state, state, "{ctx}: {last:?}");
        assert_eq!(last.from, from, "{ctx}: {last:?}");
        return false;
    }
    common::assert_aborted_at(&out, point, &ctx);
    let crashed = crashed_row(&env, profile, before, &ctx);
    assert_eq!(crashed.from, from, "{ctx}: {crashed:?}");
    assert_crashed_state(&env, profile, &crashed, point, &ctx);

    let ctx = format!("{ctx}, recovered by {:?}", recovery.args());
    let out = env.run(profile, recovery.args(), &[]);
    assert_eq!(
        out.status.code(),
        Some(recovery.code()),
        "{ctx}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr_of(&out)
    );
    if recovery != Recovery::Recover {
        assert!(
            stderr_of(&out).contains(&format!("recovered activation #{}", crashed.id)),
            "{ctx}: the user is not told: {}",
            stderr_of(&out)
        );
    }
    let last = assert_settled(&env, profile, &ctx);
    let rows = env.activations(profile);
    let row = rows
        .iter()
        .find(|r| r.id == crashed.id)
        .expect("the crashed activation");
    // Recovery reverts anything not yet COMMITTED; the generation before is healthy.
    assert_eq!(row.state, "REVERTED", "{ctx}: {row:?}");
    if recovery == Recovery::Install {
        // The change was made on top of the generation active before the crash.
        assert!(last.id > crashed.id, "{ctx}: install made no activation");
        assert_eq!(last.state, "COMMITTED", "{ctx}: {last:?}");
        assert_eq!(last.from, from, "{ctx}: install started from {last:?}");
        let mut want = env.packages(profile, from, &ctx);
        want.insert("hello".to_owned());
        assert_eq!(
            env.packages(profile, env.current(profile, &ctx), &ctx),
            want,
            "{ctx}: the packages after install"
        );
    } else {
        assert_eq!(last.id, crashed.id, "{ctx}: {rows:?}");
        assert_eq!(env.current(profile, &ctx), from, "{ctx}: not back");
    }
    true
}

/// A detached activation (the default when stdin is no terminal) whose worker dies: the
/// command that started it notices, recovers by itself and says so.
fn detached_worker_killed(t: &Template) {
    let ctx = "detached, worker killed at activate:checking";
    let env = clone(t);
    let before = last_id(&env, "main");
    let out = env.run(
        "main",
        &["activate", "3", "--detach"],
        &[(failpoint::ENV, "activate:checking")],
    );
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(EXIT_REVERTED), "{ctx}: {stderr}");
    assert!(
        stderr.contains("worker stopped"),
        "{ctx}: no word of the worker's end: {stderr}"
    );
    let last = assert_settled(&env, "main", ctx);
    assert!(last.id > before, "{ctx}: {last:?}");
    assert_eq!(last.state, "REVERTED", "{ctx}: {last:?}");
    assert_eq!((last.from, last.to), (Some(1), 3), "{ctx}: {last:?}");
    assert_eq!(env.current("main", ctx), Some(1), "{ctx}");
}

/// `Good` crashes at `activate:checking`; `activate --recover` crashes at `point` of the
/// reversion; a second `activate --recover` finishes: REVERTED, back on generation 1.
fn crash_in_recovery(t: &Template, point: &str) {
    let ctx = format!("recovery crashed at {point}");
    let env = clone(t);
    let before = last_id(&env, "main");
    let out = env.run(
        "main",
        Scenario::Good.args(),
        &[(failpoint::ENV, "activate:checking")],
    );
    common::assert_aborted_at(&out, "activate:checking", &ctx);
    let out = env.run(
        "main",
        &["activate", "--recover"],
        &[(failpoint::ENV, point)],
    );
    common::assert_aborted_at(&out, point, &ctx);
    let crashed = crashed_row(&env, "main", before, &ctx);
    assert_crashed_state(&env, "main", &crashed, point, &ctx);
    assert!(crashed.reverting, "{ctx}: {crashed:?}");
    let reason = crashed.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("interrupted"),
        "{ctx}: the first crash's reason is lost: {crashed:?}"
    );

    let out = env.run("main", &["activate", "--recover"], &[]);
    assert_eq!(
        out.status.code(),
        Some(EXIT_REVERTED),
        "{ctx}: the second recovery: {}",
        stderr_of(&out)
    );
    let last = assert_settled(&env, "main", &ctx);
    assert_eq!(last.id, crashed.id, "{ctx}: {last:?}");
    assert_eq!(last.state, "REVERTED", "{ctx}: {last:?}");
    assert_eq!(last.reason.as_deref(), Some(reason.as_str()), "{ctx}");
    assert_eq!(env.current("main", &ctx), Some(1), "{ctx}");
}

#[test]
fn crash_at_every_activation_point() {
    let started = std::time::Instant::now();
    let points: Vec<&'static str> = failpoint::ALL
        .iter()
        .copied()
        .filter(|p| p.starts_with("activate:"))
        .collect();
    assert!(!points.is_empty(), "no activate:* failure points");
    let (port, _) = common::serve_http("200 OK", b"ok");
    let template = template(port);
    let built = started.elapsed();

    // Every (scenario, point), with the recoveries taken in turn, and the two variants; then
    // the other recoveries where the point was on the scenario's path.
    let mut cases: Vec<Case> = vec![Case::Detached];
    for point in [
        "activate:reverting",
        "activate:switched-back",
        "activate:revert-scripts-done",
    ] {
        cases.push(Case::CrashInRecovery(point));
    }
    for (s, &scenario) in SCENARIOS.iter().enumerate() {
        for (p, &point) in points.iter().enumerate() {
            let recovery = RECOVERIES[(s + p) % RECOVERIES.len()];
            cases.push(Case::Crash(scenario, point, recovery));
        }
    }
    let run = |case| match case {
        Case::Crash(scenario, point, recovery) => crash_at(&template, scenario, point, recovery),
        Case::Detached => {
            detached_worker_killed(&template);
            false
        }
        Case::CrashInRecovery(point) => {
            crash_in_recovery(&template, point);
            false
        }
    };
    let reached = common::run_cases(WORKERS, &cases, run);
    let more: Vec<Case> = reached
        .iter()
        .flat_map(|&case| match case {
            Case::Crash(scenario, point, first) => RECOVERIES
                .iter()
                .filter(|&&r| r != first)
                .map(|&r| Case::Crash(scenario, point, r))
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    let again = common::run_cases(WORKERS, &more, run);
    assert_eq!(again.len(), more.len(), "a crash did not happen again");
    let hit: BTreeSet<&str> = reached
        .iter()
        .filter_map(|c| match c {
            Case::Crash(_, point, _) => Some(*point),
            _ => None,
        })
        .collect();
    let missed: Vec<&str> = points
        .iter()
        .copied()
        .filter(|p| !hit.contains(p))
        .collect();
    assert!(
        missed.is_empty(),
        "activation failure points no scenario reaches: {missed:?}"
    );
    eprintln!(
        "{} crashes at {} points, {} cases, in {:.1} s (template {:.1} s)",
        reached.len() + again.len(),
        hit.len(),
        cases.len() + more.len(),
        started.elapsed().as_secs_f64(),
        built.as_secs_f64()
    );
}
