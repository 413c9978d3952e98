//! Crash safety of profiles and generations (DESIGN.md §5 invariant 4, §7): every operation
//! that changes a profile (`install`, `remove`, `update`, `profile switch`, `profile rollback`,
//! `profile delete-generations`, and `install` into a profile that has no generation yet) is
//! killed at every `add-staged:*` and `profile:*` failure point of
//! `noodle_store::failpoint::ALL` (so a new point is covered as soon as it is listed). A point
//! that is not on an operation's path lets it finish normally, with the intended result; every
//! point must be reached by at least one operation. After each crash, before any repair:
//! - the profile link, if there is one, is a symlink to `<profile>-N-link`, which names a valid
//!   store path whose `manifest.json` reads; `list --json` and `profile generations --json`
//!   work and agree on the current generation (exactly one is current);
//! - the current generation is the one before the operation or the one it intended;
//! - every generation link names a valid, complete generation (its packages valid too), and
//!   each is one the profile had before or one the operation intended;
//! - the store holds nothing worse than leftovers (unregistered entries, stale temporaries).
//!
//! Then `store gc` or `store verify --repair` leaves a fully clean store and the profile as it
//! was, and the operation run again succeeds (or, when the crash came after it took effect and
//! it cannot be repeated, refuses cleanly) and leads to the intended state; or the operation
//! runs again straight away, then `store gc`. Temporary links are planted after each crash, as
//! a writer killed inside `replace_symlink` (between its symlink and its rename, where there is
//! no failure point) leaves them; none may survive the next write to the profile.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use common::channel::Channel;
use common::{bad, Noodle};
use noodle_store::failpoint;

/// The failure points this file drives, by the prefix of their names.
const FAMILIES: &[&str] = &["add-staged", "profile"];

/// Where the test's profiles live (logical, so the same in every copy of the store).
const PROFILES: &str = "/noodle/var/profiles/per-user/tester";

/// A planted temporary link's pid: above Linux's largest pid, so never a live writer's.
const DEAD_PID: &str = "4194305";

/// Cases run at once (the machine may have only two cores; most of the time is processes).
const WORKERS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    /// `install hello`: a new generation 4 {crypto 1.2.3, hello}. (Not generation 2's store
    /// path: there hello was installed as `hello@1.0.0`.)
    Install,
    /// `remove crypto`: a new, empty generation 4.
    Remove,
    /// `update crypto ~1.2`: a new generation 4 {crypto 1.2.5}.
    Update,
    /// `profile switch 1`.
    Switch,
    /// `profile rollback`: to generation 2.
    Rollback,
    /// `profile delete-generations old`: deletes generations 1 and 2.
    DeleteGenerations,
    /// `install hello` into the profile `first`, which has no generation yet.
    FirstInstall,
}

const OPS: [Op; 7] = [
    Op::Install,
    Op::Remove,
    Op::Update,
    Op::Switch,
    Op::Rollback,
    Op::DeleteGenerations,
    Op::FirstInstall,
];

impl Op {
    fn args(self) -> &'static [&'static str] {
        match self {
            // In this process, so a crash kills the whole command (a detached activation's
            // launcher would recover at once; tests/activation_crash.rs covers that).
            Op::Install | Op::FirstInstall => &["install", "hello", "--no-detach"],
            Op::Remove => &["remove", "crypto", "--no-detach"],
            Op::Update => &["update", "crypto", "~1.2", "--no-detach"],
            Op::Switch => &["profile", "switch", "1", "--no-detach"],
            Op::Rollback => &["profile", "rollback", "--no-detach"],
            Op::DeleteGenerations => &["profile", "delete-generations", "old"],
        }
    }

    /// The name of the profile it works on.
    fn profile(self) -> &'static str {
        match self {
            Op::FirstInstall => "first",
            _ => "profile",
        }
    }

    /// Whether it adds a generation (and so may leave one it never switched to).
    fn creates(self) -> bool {
        matches!(
            self,
            Op::Install | Op::Remove | Op::Update | Op::FirstInstall
        )
    }

    /// The packages (name, version) of the generation it intends.
    fn intended_packages(self) -> Vec<(&'static str, &'static str)> {
        match self {
            Op::Install => vec![("crypto", "1.2.3"), ("hello", "1.0.0")],
            Op::Remove => vec![],
            Op::Update => vec![("crypto", "1.2.5")],
            Op::Switch | Op::FirstInstall => vec![("hello", "1.0.0")],
            Op::Rollback => vec![("crypto", "1.2.3"), ("hello", "1.0.0")],
            Op::DeleteGenerations => vec![("crypto", "1.2.3")],
        }
    }

    /// The current generation and the generations it intends.
    fn intended_numbers(self) -> (u64, &'static [u64]) {
        match self {
            Op::Install | Op::Remove | Op::Update => (4, &[1, 2, 3, 4]),
            Op::Switch => (1, &[1, 2, 3]),
            Op::Rollback => (2, &[1, 2, 3]),
            Op::DeleteGenerations => (3, &[3]),
            Op::FirstInstall => (1, &[1]),
        }
    }
}

/// What happens between the crash and the final checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recovery {
    /// `store gc` first, then the operation again.
    Gc,
    /// `store verify --repair` first, then the operation again.
    Repair,
    /// The operation again straight away, then `store gc`.
    RerunFirst,
}

/// A profile as seen from outside, once its invariants were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    /// The current generation and its store path; `None` before the first switch.
    current: Option<(u64, String)>,
    /// Every generation link: number → logical store path.
    generations: BTreeMap<u64, String>,
    /// The current generation's packages: (name, version, store path).
    packages: Vec<(String, String, String)>,
}

impl State {
    fn number(&self) -> Option<u64> {
        self.current.as_ref().map(|(n, _)| *n)
    }

    fn path(&self) -> Option<&str> {
        self.current.as_ref().map(|(_, p)| p.as_str())
    }
}

struct Template {
    noodle: Noodle,
    channel: Channel,
    /// `profile`: generations 1 {hello}, 2 {crypto 1.2.3, hello}, 3 {crypto 1.2.3}; 3 is
    /// current. (Not busybox: its hundreds of symlinks in a generation make every copy slow.)
    /// `first`: nothing at all.
    before: BTreeMap<&'static str, State>,
}

/// One profile of one store.
#[derive(Clone, Copy)]
struct Target<'a> {
    noodle: &'a Noodle,
    channel: &'a Channel,
    name: &'static str,
}

impl<'a> Target<'a> {
    /// `--channel C --profile P ARGS...`.
    fn args(&self, args: &[&'a str]) -> Vec<String> {
        let mut all = vec![
            "--channel".to_owned(),
            self.channel.dir.to_str().expect("utf-8").to_owned(),
            "--profile".to_owned(),
            format!("{PROFILES}/{}", self.name),
        ];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        all
    }

    fn run(&self, args: &[&'a str], env: &[(&str, &str)]) -> std::process::Output {
        let all = self.args(args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        self.noodle.run_env(&all, env)
    }

    fn ok(&self, args: &[&'a str]) {
        let out = self.run(args, &[]);
        assert!(
            out.status.success(),
            "noodle {args:?} on profile {} failed ({}): {}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn json(&self, args: &[&'a str]) -> serde_json::Value {
        let all = self.args(args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        self.noodle.json(&all)
    }

    fn dir(&self) -> PathBuf {
        self.noodle.physical(PROFILES)
    }

    /// `<name>-12-link` → 12.
    fn generation_number(&self, file: &str) -> Option<u64> {
        let digits = file
            .strip_prefix(self.name)?
            .strip_prefix('-')?
            .strip_suffix("-link")?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }

    /// Invariants 1 and 3, then the profile's state: the profile link, if any, is a relative
    /// symlink to `<name>-N-link`, which exists and names a valid store path holding a
    /// readable manifest; every generation link names a valid path whose manifest reads and
    /// whose packages are valid; `list --json` and `profile generations --json` succeed and
    /// agree with the links.
    fn state(&self, ctx: &str) -> State {
        let dir = self.dir();
        let mut generations = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).expect("read the profiles' directory") {
            let entry = entry.expect("entry");
            let file = entry.file_name().to_string_lossy().into_owned();
            if let Some(number) = self.generation_number(&file) {
                let path = std::fs::read_link(entry.path())
                    .unwrap_or_else(|e| panic!("{ctx}: {file} is not a link: {e}"));
                generations.insert(number, path.to_str().expect("utf-8 link").to_owned());
            }
        }

        let link = dir.join(self.name);
        let current = match link.symlink_metadata() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("{ctx}: cannot lstat the profile link: {e}"),
            Ok(meta) => {
                assert!(
                    meta.file_type().is_symlink(),
                    "{ctx}: the profile is no link"
                );
                let target = std::fs::read_link(&link).expect("readlink the profile");
                let target = target.to_str().expect("utf-8 link");
                let number = self
                    .generation_number(target)
                    .unwrap_or_else(|| panic!("{ctx}: the profile link points at '{target}'"));
                let path = generations.get(&number).unwrap_or_else(|| {
                    panic!("{ctx}: the profile names {target}, which does not exist")
                });
                Some((number, path.clone()))
            }
        };

        let valid = self.noodle.valid_paths();
        for (number, path) in &generations {
            assert!(
                path.starts_with("/noodle/store/") && path.ends_with(&format!("-{}", self.name)),
                "{ctx}: generation {number} names {path}"
            );
            assert!(
                valid.contains(path),
                "{ctx}: generation {number} names {path}, which is not valid"
            );
            for (name, _, package) in manifest_packages(self.noodle, path, ctx) {
                assert!(
                    valid.contains(&package),
                    "{ctx}: {name} of generation {number} ({package}) is not valid"
                );
            }
        }
        let mut packages = Vec::new();
        if let Some((_, path)) = &current {
            let info = self.noodle.json(&["store", "path-info", path]);
            assert_eq!(info[0]["path"], path.as_str(), "{ctx}: path-info");
            packages = manifest_packages(self.noodle, path, ctx);
        }

        // `list` and `profile generations` would first recover (revert) an activation the
        // crash left unfinished: they cross-check the links only when there is none.
        if self.noodle.unfinished_activations() == 0 {
            self.cross_check(&current, &generations, &packages, ctx);
        }
        State {
            current,
            generations,
            packages,
        }
    }

    /// What `list` and `profile generations` say agrees with the links and manifests.
    fn cross_check(
        &self,
        current: &Option<(u64, String)>,
        generations: &BTreeMap<u64, String>,
        packages: &[(String, String, String)],
        ctx: &str,
    ) {
        let list = self.json(&["list"]);
        let number = current.as_ref().map(|(n, _)| *n);
        assert_eq!(
            list["generation"].as_u64(),
            number,
            "{ctx}: list --json: {list}"
        );
        assert_eq!(
            packages_of(&list["packages"], ctx),
            *packages,
            "{ctx}: list and the manifest disagree"
        );

        let infos = self.json(&["profile", "generations"]);
        let infos = infos.as_array().expect("generations array");
        let listed: BTreeMap<u64, String> = infos
            .iter()
            .map(|g| {
                (
                    g["number"].as_u64().expect("number"),
                    g["path"].as_str().expect("path").to_owned(),
                )
            })
            .collect();
        assert_eq!(&listed, generations, "{ctx}: profile generations");
        let currents: Vec<u64> = infos
            .iter()
            .filter(|g| g["current"] == true)
            .map(|g| g["number"].as_u64().expect("number"))
            .collect();
        assert_eq!(
            currents,
            number.into_iter().collect::<Vec<_>>(),
            "{ctx}: the current generation, in `profile generations`"
        );
    }

    /// Temporary links of this profile (`.<name>*.tmp-*`).
    fn temporary_links(&self) -> Vec<String> {
        let mut found: Vec<String> = std::fs::read_dir(self.dir())
            .expect("read the profiles' directory")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&format!(".{}", self.name)) && n.contains(".tmp-"))
            .collect();
        found.sort();
        found
    }

    /// What a writer killed inside `replace_symlink` leaves: a temporary profile link naming
    /// a generation link, and a temporary generation link naming a generation's store path.
    fn plant_temporary_links(&self, state: &State) {
        let Some((number, path)) = state.generations.iter().next_back() else {
            return;
        };
        let dir = self.dir();
        let plant = |target: &str, file: String| {
            std::os::unix::fs::symlink(target, dir.join(file)).expect("plant a temporary link");
        };
        plant(
            &format!("{}-{number}-link", self.name),
            format!(".{}.tmp-{DEAD_PID}", self.name),
        );
        plant(
            path,
            format!(".{}-{}-link.tmp-{DEAD_PID}", self.name, number + 1),
        );
    }
}

/// The (name, version, path) of each package in a generation's `manifest.json`.
fn manifest_packages(noodle: &Noodle, path: &str, ctx: &str) -> Vec<(String, String, String)> {
    let file = noodle.physical(path).join("manifest.json");
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{ctx}: cannot read {}: {e}", file.display()));
    let manifest: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{ctx}: bad manifest {}: {e}", file.display()));
    packages_of(&manifest["packages"], ctx)
}

fn packages_of(packages: &serde_json::Value, ctx: &str) -> Vec<(String, String, String)> {
    packages
        .as_array()
        .unwrap_or_else(|| panic!("{ctx}: packages is not an array: {packages}"))
        .iter()
        .map(|p| {
            let field = |k: &str| p[k].as_str().expect("a string field").to_owned();
            (field("name"), field("version"), field("path"))
        })
        .collect()
}

fn template() -> Template {
    let noodle = Noodle::new();
    let channel = Channel::repo(&noodle);
    noodle.build_ok(
        &channel,
        &["busybox", "hello", "crypto@1.2.3", "crypto@1.2.5"],
    );
    let main = Target {
        noodle: &noodle,
        channel: &channel,
        name: "profile",
    };
    for step in [
        &["install", "hello@1.0.0"][..],
        &["install", "crypto@1.2.3"],
        &["remove", "hello"],
    ] {
        main.ok(step);
    }
    noodle.assert_fully_clean("template");
    let state = main.state("template");
    assert_eq!(state.number(), Some(3), "template: {state:?}");
    assert_eq!(
        state.generations.keys().copied().collect::<Vec<_>>(),
        [1, 2, 3],
        "template: {state:?}"
    );
    let paths: BTreeSet<&String> = state.generations.values().collect();
    assert_eq!(paths.len(), 3, "template: generations share a path");
    let first = Target {
        name: "first",
        ..main
    };
    let empty = first.state("template, profile first");
    assert_eq!(
        empty,
        State {
            current: None,
            generations: BTreeMap::new(),
            packages: Vec::new()
        }
    );
    let before = BTreeMap::from([("profile", state), ("first", empty)]);
    Template {
        noodle,
        channel,
        before,
    }
}

/// A copy of the template's store and channel (with its noodle.lock).
fn clone(t: &Template) -> (Noodle, Channel) {
    let noodle = Noodle::uninitialised();
    common::copy_root(&t.noodle.root(), &noodle.root());
    let channel = Channel::repo(&noodle);
    std::fs::copy(
        t.channel.dir.join("noodle.lock"),
        channel.dir.join("noodle.lock"),
    )
    .expect("copy noodle.lock");
    (noodle, channel)
}

/// What the operation does when nothing goes wrong, learnt in a copy of the template.
fn expected(t: &Template, op: Op) -> State {
    let ctx = format!("{op:?} without a crash");
    let (noodle, channel) = clone(t);
    let target = Target {
        noodle: &noodle,
        channel: &channel,
        name: op.profile(),
    };
    target.ok(op.args());
    let state = target.state(&ctx);
    let names: Vec<(&str, &str)> = state
        .packages
        .iter()
        .map(|(n, v, _)| (n.as_str(), v.as_str()))
        .collect();
    assert_eq!(names, op.intended_packages(), "{ctx}");
    let (current, all) = op.intended_numbers();
    let numbers: Vec<u64> = state.generations.keys().copied().collect();
    assert_eq!(
        (state.number(), numbers.as_slice()),
        (Some(current), all),
        "{ctx}"
    );
    if op.creates() {
        let before = &t.before[op.profile()];
        assert!(
            !before
                .generations
                .values()
                .any(|p| Some(p.as_str()) == state.path()),
            "{ctx}: the new generation must be a new store path, so that add-staged adds it"
        );
    }
    noodle.assert_fully_clean(&ctx);
    state
}

/// Invariant 2 and the generation list: the profile is on the generation it was on or on the
/// one the operation intended, and its generations are the ones it had or intended.
fn assert_before_or_intended(before: &State, want: &State, state: &State, ctx: &str) {
    assert!(
        state.current == before.current || state.current == want.current,
        "{ctx}: the profile is on {:?}, neither the generation before ({:?}) nor the intended one ({:?})",
        state.current,
        before.current,
        want.current
    );
    let packages = if state.current == want.current {
        &want.packages
    } else {
        &before.packages
    };
    assert_eq!(&state.packages, packages, "{ctx}: packages");
    for (number, path) in &state.generations {
        assert!(
            before.generations.get(number) == Some(path)
                || want.generations.get(number) == Some(path),
            "{ctx}: generation {number} ({path}) is neither one it had nor an intended one"
        );
    }
    for (number, path) in &before.generations {
        if want.generations.get(number) == Some(path) {
            assert_eq!(
                state.generations.get(number),
                Some(path),
                "{ctx}: generation {number} was lost"
            );
        }
    }
}

/// The operation's result, after it ran again: the intended generation is current.
fn assert_intended(op: Op, before: &State, want: &State, state: &State, ctx: &str) {
    assert_eq!(state.path(), want.path(), "{ctx}: the current store path");
    assert_eq!(state.packages, want.packages, "{ctx}: packages");
    if op.creates() {
        // A generation linked but never switched to before the crash stays, and running the
        // operation again adds the same store path under the next number.
        assert!(state.number() >= want.number(), "{ctx}: {state:?}");
        for (number, path) in &state.generations {
            assert!(
                before.generations.get(number) == Some(path)
                    || (Some(*number) >= want.number() && Some(path.as_str()) == want.path()),
                "{ctx}: generation {number} ({path}) is unexpected"
            );
        }
        for (number, path) in &before.generations {
            assert_eq!(state.generations.get(number), Some(path), "{ctx}: lost");
        }
    } else {
        assert_eq!(state.current, want.current, "{ctx}: current");
        assert_eq!(state.generations, want.generations, "{ctx}: generations");
    }
}

/// Runs the operation again (no failure point). A crash after the switch left the activation
/// unfinished, and this run reverts it first, so the operation is never already done.
fn rerun(op: Op, target: Target<'_>, ctx: &str) {
    let out = target.run(op.args(), &[]);
    assert!(
        out.status.success(),
        "{ctx}: {:?} again failed ({}): {}",
        op.args(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Crashes `op` at `point` in a copy of the template; `false` when the point is not on the
/// operation's path (it then finished normally, with the intended result).
fn crash_at(t: &Template, want: &State, op: Op, point: &str, recovery: Recovery) -> bool {
    let ctx = format!("{op:?} at {point} ({recovery:?})");
    let (noodle, channel) = clone(t);
    let target = Target {
        noodle: &noodle,
        channel: &channel,
        name: op.profile(),
    };
    let before = &t.before[op.profile()];

    let out = target.run(op.args(), &[(failpoint::ENV, point)]);
    if out.status.signal().is_none() {
        let ctx = format!("{ctx}, not reached");
        assert!(
            out.status.success(),
            "{ctx}: failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_intended(op, before, want, &target.state(&ctx), &ctx);
        noodle.assert_fully_clean(&ctx);
        return false;
    }
    common::assert_aborted_at(&out, point, &ctx);

    // Right after the crash: only leftovers in the store, and the profile is whole.
    let after = format!("{ctx}, after the crash");
    let (_, problems) = noodle.verify_report(&["--check-contents"]);
    let wrong = bad(&problems, &["unregistered", "stale-temp"]);
    assert!(
        wrong.is_empty(),
        "{after}: the store is inconsistent: {wrong:#?}"
    );
    noodle.assert_closure_intact();
    let crashed = target.state(&after);
    assert_before_or_intended(before, want, &crashed, &after);
    let switched = crashed.current == want.current;
    let intended_path = want.path().expect("intended path").to_owned();
    let linked = crashed.generations.values().any(|p| *p == intended_path);
    let valid = noodle.valid_paths().contains(&intended_path);
    match point {
        "profile:after-switch" => assert!(switched, "{after}: the switch was lost"),
        "profile:mid-delete" => assert_eq!(
            crashed.generations.len(),
            before.generations.len() - 1,
            "{after}: one generation deleted, the crash came before the next: {crashed:?}"
        ),
        _ if op != Op::DeleteGenerations => {
            assert!(!switched, "{after}: switched before the switch")
        }
        _ => {}
    }
    if op.creates() {
        match point {
            "add-staged:before-rename" | "add-staged:after-rename" => {
                assert!(!valid, "{after}: registered before the registration");
                assert!(!linked, "{after}: linked before being added");
            }
            "add-staged:after-register" | "profile:after-generation-path" => {
                assert!(valid, "{after}: a committed registration was lost");
                assert!(!linked, "{after}: linked too early");
            }
            "profile:after-generation-link" | "profile:before-switch" => assert_eq!(
                crashed.generations.get(&want.number().expect("number")),
                Some(&intended_path),
                "{after}: the new generation's link"
            ),
            _ => {}
        }
    }
    target.plant_temporary_links(&crashed);

    match recovery {
        Recovery::Gc | Recovery::Repair => {
            let what = if recovery == Recovery::Gc {
                noodle.ok(&["store", "gc"]);
                "gc"
            } else {
                let (code, problems) = noodle.verify_report(&["--repair"]);
                assert_eq!(code, 0, "{ctx}: verify --repair left: {problems:#?}");
                "repair"
            };
            let ctx = format!("{ctx}, after {what}");
            noodle.assert_fully_clean(&ctx);
            noodle.assert_closure_intact();
            assert_eq!(noodle.tmp_entries(), Vec::<String>::new(), "{ctx}: var/tmp");
            assert_eq!(target.state(&ctx), crashed, "{ctx}: the profile changed");
            rerun(op, target, &ctx);
        }
        Recovery::RerunFirst => {
            rerun(op, target, &ctx);
            noodle.ok(&["store", "gc"]);
        }
    }
    let end = format!("{ctx}, at the end");
    let state = target.state(&end);
    assert_intended(op, before, want, &state, &end);
    assert_eq!(target.temporary_links(), Vec::<String>::new(), "{end}");
    assert_records_match_links(&noodle, target.name, &state, &end);
    noodle.assert_fully_clean(&end);
    noodle.assert_closure_intact();
    assert_eq!(noodle.tmp_entries(), Vec::<String>::new(), "{end}: var/tmp");
    if recovery != Recovery::Gc {
        return true;
    }
    // The profile keeps working: switching back and forth, and gc, change nothing.
    let back = before.number().map(|n| n.to_string());
    let forth = state.number().expect("a current generation").to_string();
    if let Some(back) = &back {
        target.ok(&["profile", "switch", back]);
    }
    target.ok(&["profile", "switch", &forth]);
    noodle.ok(&["store", "gc"]);
    assert_eq!(target.state(&format!("{end}, later")), state, "{end}");
    noodle.assert_fully_clean(&format!("{end}, later"));
    true
}

/// The database's generation records of a profile name exactly its generation links (a
/// crash may leave a record behind; the next write of the profile forgets it).
fn assert_records_match_links(noodle: &Noodle, name: &str, state: &State, ctx: &str) {
    let key = Path::new(PROFILES).join(name);
    let db = rusqlite::Connection::open(noodle.db_file()).expect("open the db");
    let mut stmt = db
        .prepare("SELECT number, path FROM generations WHERE profile = ?1")
        .expect("query");
    let records: BTreeMap<u64, String> = stmt
        .query_map([key.to_str().expect("utf-8")], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
        })
        .expect("rows")
        .map(|r| r.expect("row"))
        .collect();
    assert_eq!(records, state.generations, "{ctx}: generation records");
}

#[test]
fn crash_during_profile_changes() {
    let started = std::time::Instant::now();
    let points: Vec<&str> = failpoint::ALL
        .iter()
        .copied()
        .filter(|p| FAMILIES.contains(&p.split(':').next().unwrap_or_default()))
        .collect();
    for family in FAMILIES {
        assert!(
            points.iter().any(|p| p.starts_with(&format!("{family}:"))),
            "no failure points for {family}"
        );
    }
    let template = template();
    let wanted: BTreeMap<Op, State> = OPS
        .iter()
        .map(|&op| (op, expected(&template, op)))
        .collect();

    // Every (operation, point), recovering with gc; then the other recoveries where the
    // point was on the operation's path.
    let pairs: Vec<(Op, &str)> = OPS
        .iter()
        .flat_map(|&op| points.iter().map(move |&p| (op, p)))
        .collect();
    let reached = common::run_cases(WORKERS, &pairs, |(op, point)| {
        crash_at(&template, &wanted[&op], op, point, Recovery::Gc)
    });
    let hit: BTreeSet<&str> = reached.iter().map(|(_, p)| *p).collect();
    let missed: Vec<&str> = points
        .iter()
        .copied()
        .filter(|p| !hit.contains(p))
        .collect();
    assert!(
        missed.is_empty(),
        "failure points no profile operation reaches: {missed:?} (reached: {reached:?})"
    );

    let more: Vec<(Op, &str, Recovery)> = reached
        .iter()
        .flat_map(|&(op, p)| [Recovery::Repair, Recovery::RerunFirst].map(|r| (op, p, r)))
        .collect();
    let again = common::run_cases(WORKERS, &more, |(op, point, recovery)| {
        crash_at(&template, &wanted[&op], op, point, recovery)
    });
    assert_eq!(again.len(), more.len(), "a crash did not happen again");
    eprintln!(
        "{} operations crashed at {} of {} points ({} runs) in {:.1} s",
        reached.len() + again.len(),
        hit.len(),
        points.len(),
        pairs.len() + more.len(),
        started.elapsed().as_secs_f64()
    );
}
