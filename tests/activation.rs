//! Health-gated activation (DESIGN.md §8) as a user sees it, through the real binary: a red
//! required check reverts (exit 7) and history says why; the health window; retries; checks of
//! different packages in parallel; the strategies (test/commit/recover, boot, dry-activate);
//! activation scripts, also on reversion; FAILED when the previous generation is not healthy
//! either (exit 8); a detached activation that survives its launcher; `--abort`; one activation
//! per profile, and ten profiles at once.
//!
//! Every command runs with stdin closed, so activations run detached (the default then) and the
//! command follows the worker, as from a script or CI. The harness sets NOODLE_WINDOW=0 (each
//! check runs once); tests where the window matters pass --window.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::channel::Channel;
use common::{parse_json_output, stderr_of, stdout_of, wait_until, Noodle};
use serde_json::Value;

/// A store with a copy of the repository's package set as its channel (custom recipes are
/// added to the same channel), and its default profile.
struct T {
    noodle: Noodle,
    channel: Channel,
    /// A loopback port nothing listens on, for greeter's `http` check.
    closed_port: String,
}

impl T {
    fn new() -> Self {
        let noodle = Noodle::new();
        let channel = Channel::repo(&noodle);
        let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port()
            .to_string();
        Self {
            noodle,
            channel,
            closed_port,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = self.noodle.command();
        command
            .arg("--channel")
            .arg(&self.channel.dir)
            .args(args)
            .env("GREETER_PORT", &self.closed_port)
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run noodle")
    }

    /// Runs `args`, which must exit with `code`.
    fn expect(&self, args: &[&str], code: i32) -> Output {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "noodle {args:?}: expected exit {code}, got {}\nstdout: {}\nstderr: {}",
            out.status,
            stdout_of(&out),
            stderr_of(&out)
        );
        out
    }

    /// `noodle --json ARGS`, which must exit with `code`: the last JSON line (the result).
    fn json(&self, args: &[&str], code: i32) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.expect(&all, code);
        parse_json_output(&stdout_of(&out))
            .unwrap_or_else(|e| panic!("bad JSON from {args:?}: {e}\n{}", stdout_of(&out)))
    }

    /// The `activation` object of an activating command's `--json` result.
    fn activate(&self, args: &[&str], code: i32) -> Value {
        let result = self.json(args, code);
        assert_eq!(result["event"], "result", "{result}");
        result["activation"].clone()
    }

    fn history(&self, extra: &[&str]) -> Vec<Value> {
        let mut args = extra.to_vec();
        args.push("history");
        self.json(&args, 0)
            .as_array()
            .expect("history array")
            .clone()
    }

    fn last(&self) -> Value {
        self.history(&[]).pop().expect("an activation")
    }

    fn status(&self) -> Value {
        self.json(&["status"], 0)
    }

    /// The generation the default profile points at.
    fn current(&self) -> Option<u64> {
        self.noodle
            .current_generation(&self.noodle.default_profile())
    }

    fn installed(&self) -> Vec<String> {
        self.noodle
            .installed(&[])
            .into_iter()
            .map(|(n, v, _)| format!("{n} {v}"))
            .collect()
    }

    /// A host file beside the store (visible to checks and scripts).
    fn host_file(&self, name: &str) -> PathBuf {
        self.noodle.scratch(name)
    }

    /// Every link in the default profile's directory → its target: the profile link and the
    /// generation links.
    fn profile_links(&self) -> BTreeMap<String, String> {
        let dir = self
            .noodle
            .default_profile()
            .parent()
            .expect("parent")
            .to_owned();
        std::fs::read_dir(dir)
            .expect("read profiles")
            .map(|e| {
                let e = e.expect("entry");
                let target = std::fs::read_link(e.path())
                    .map_or(String::new(), |t| t.to_string_lossy().into_owned());
                (e.file_name().to_string_lossy().into_owned(), target)
            })
            .collect()
    }

    fn count_activations(&self) -> i64 {
        let conn = rusqlite::Connection::open(self.noodle.db_file()).expect("open db");
        conn.query_row("SELECT count(*) FROM activations", [], |r| r.get(0))
            .expect("count activations")
    }

    /// The journalled runs of activation `id`, in order.
    fn runs(&self, id: i64) -> Vec<Run> {
        let conn = rusqlite::Connection::open(self.noodle.db_file()).expect("open db");
        let mut stmt = conn
            .prepare(
                "SELECT generation, kind, package, name, attempt, ok, outcome, output, started_at,
                        duration_us
                 FROM activation_runs WHERE activation = ?1 ORDER BY id",
            )
            .expect("prepare");
        stmt.query_map([id], |r| {
            Ok(Run {
                generation: r.get::<_, Option<i64>>(0)?,
                kind: r.get(1)?,
                package: r.get(2)?,
                name: r.get(3)?,
                attempt: r.get(4)?,
                ok: r.get(5)?,
                outcome: serde_json::from_str(&r.get::<_, String>(6)?).unwrap_or(Value::Null),
                output: r.get(7)?,
                started_at: r.get(8)?,
                duration_us: r.get(9)?,
            })
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
    }
}

#[derive(Debug)]
struct Run {
    generation: Option<i64>,
    kind: String,
    package: String,
    name: String,
    attempt: i64,
    ok: bool,
    outcome: Value,
    output: String,
    started_at: i64,
    duration_us: i64,
}

/// Adds `pkgs/NAME/VERSION.toml`: a package whose `bin/check` runs `body` (busybox sh, with
/// busybox first in PATH; host paths work), declared as the required health check `check`
/// with the extra [[health]] keys `health`; `extra` is appended (e.g. an [activation] table).
fn checked_package(t: &T, name: &str, version: &str, body: &str, health: &str, extra: &str) {
    t.channel.recipe(
        name,
        version,
        &format!(
            r#"[dependencies]
busybox = "^1.35"

[build]
script = '''
mkdir -p "$out/bin"
printf '#!%s/bin/sh\nPATH=%s/bin:$PATH\n' "$busybox" "$busybox" > "$out/bin/check"
cat >> "$out/bin/check" <<'EOF'
{body}
EOF
chmod 0555 "$out/bin/check"
'''

[[health]]
name = "check"
command = ["bin/check"]
{health}

{extra}
"#
        ),
    );
}

/// A check body that counts its runs in `counter` (a host file) and is red from run `red_from`
/// on (0: never).
fn counting(counter: &std::path::Path, red_on: &str) -> String {
    format!(
        r#"n=$(cat '{c}' 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > '{c}'
if {red_on}; then echo "counted run $n: red"; exit 1; fi
echo "counted run $n: green""#,
        c = counter.display()
    )
}

fn lines_of(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

// ---------------------------------------------------------------------------------------------
// 1. A red required check reverts; history and its statistics say so.

#[test]
fn update_to_a_red_selftest_reverts_and_history_says_why() {
    let t = T::new();
    let first = t.activate(&["install", "crypto@1.2.3"], 0);
    assert_eq!(first["state"], "COMMITTED", "{first}");
    assert_eq!(t.current(), Some(1));

    let second = t.activate(&["update", "crypto", "1.3.0"], 7);
    assert_eq!(second["state"], "REVERTED", "{second}");
    assert_eq!(
        t.current(),
        Some(1),
        "back on the old generation after the reversion"
    );
    assert_eq!(t.installed(), ["crypto 1.2.3"]);
    // The failed generation is kept (for inspection), it is just not current.
    assert_eq!(t.noodle.generation_numbers(&[]), [(1, true), (2, false)]);

    let history = t.history(&[]);
    assert_eq!(history.len(), 2, "{history:#?}");
    for a in &history {
        for key in ["id", "profile", "from", "to", "strategy", "state", "reason"] {
            assert!(a.get(key).is_some(), "history object without {key}: {a}");
        }
        assert_eq!(
            a["profile"],
            format!("/noodle/var/profiles/per-user/{}/profile", whoami())
        );
    }
    assert_eq!(history[0]["state"], "COMMITTED");
    assert_eq!(history[0]["from"], Value::Null);
    assert_eq!(history[0]["to"], 1);
    let reverted = &history[1];
    assert_eq!(reverted["state"], "REVERTED");
    assert_eq!(reverted["strategy"], "switch");
    assert_eq!(
        (reverted["from"].as_u64(), reverted["to"].as_u64()),
        (Some(1), Some(2))
    );
    let reason = str_of(&reverted["reason"]);
    assert!(
        reason.contains("'selftest'") && reason.contains("crypto 1.3.0"),
        "the reason names the check and the package: {reason}"
    );
    let red = &reverted["red_check"];
    assert_eq!(red["name"], "selftest", "{red}");
    assert_eq!(red["generation"], 2, "{red}");
    assert!(
        str_of(&red["output"]).contains("selftest FAILED"),
        "the red check's output is kept: {red}"
    );

    let stats = t.json(&["history", "--stats"], 0);
    assert_eq!(stats["activations"], 2, "{stats}");
    assert_eq!(stats["committed"], 1, "{stats}");
    assert_eq!(stats["reverted"], 1, "{stats}");
    assert_eq!(stats["failed"], 0, "{stats}");
    let latency = stats["median_red_to_reverted_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("a median red-to-reverted figure: {stats}"));
    assert!(latency >= 0.0, "{stats}");

    // People get the same: the table and the red check's last lines.
    let text = stdout_of(&t.expect(&["history"], 0));
    assert!(
        text.contains("REVERTED") && text.contains("selftest FAILED"),
        "{text}"
    );
}

fn whoami() -> String {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .expect("a user name")
}

// ---------------------------------------------------------------------------------------------
// 2. The health window: a check that goes red after green rounds reverts; window 0 commits.

#[test]
fn a_check_red_late_in_the_window_reverts_and_window_0_commits() {
    let t = T::new();
    let counter = t.host_file("flap-count");
    checked_package(
        &t,
        "flap",
        "1.0.0",
        &counting(&counter, "[ \"$n\" -ge 3 ]"),
        "",
        "",
    );
    t.activate(&["install", "hello"], 0);

    // interval 1 s: green at 0 s and 1 s, red at 2 s, inside the 4 s window.
    let reverted = t.activate(&["install", "flap", "--window", "4s"], 7);
    assert_eq!(reverted["state"], "REVERTED", "{reverted}");
    let reason = str_of(&reverted["reason"]);
    assert!(
        reason.contains("'check' of flap 1.0.0")
            && reason.contains("into the health window")
            && reason.contains("after 2 green rounds")
            && reason.contains("counted run 3: red"),
        "{reason}"
    );
    assert_eq!(t.current(), Some(1));
    assert_eq!(t.installed(), ["hello 1.0.0"]);
    let id = reverted["id"].as_i64().expect("id");
    let flap_runs: Vec<bool> = t
        .runs(id)
        .iter()
        .filter(|r| r.package == "flap")
        .map(|r| r.ok)
        .collect();
    assert_eq!(flap_runs, [true, true, false], "every round is journalled");

    // Window 0: each check runs once, green: committed.
    std::fs::remove_file(&counter).expect("reset the counter");
    let committed = t.activate(&["install", "flap", "--window", "0"], 0);
    assert_eq!(committed["state"], "COMMITTED", "{committed}");
    assert_eq!(t.current(), committed["to"].as_u64());
    assert_eq!(t.installed(), ["flap 1.0.0", "hello 1.0.0"]);
    assert_eq!(lines_of(&counter), ["1"], "the check ran exactly once");
}

#[test]
fn a_red_wanted_check_only_warns_and_the_activation_script_runs() {
    let t = T::new();
    // greeter's `http` check is wanted (required = false) and red: nothing serves its port.
    let out = t.activate(&["install", "greeter"], 0);
    assert_eq!(out["state"], "COMMITTED", "{out}");
    let warnings = out["warnings"].as_array().expect("warnings");
    assert!(
        warnings
            .iter()
            .any(|w| str_of(w).contains("wanted check 'http' of greeter 1.0.0 is red")),
        "{out}"
    );
    assert_eq!(t.current(), Some(1));
    let last = t.last();
    assert_eq!(last["state"], "COMMITTED");
    assert!(
        str_of(&last["reason"]).starts_with("warning: "),
        "history keeps the warning: {last}"
    );
    // Its activation script ran, and its output is in the journal.
    let id = out["id"].as_i64().expect("id");
    let runs = t.runs(id);
    let script = runs
        .iter()
        .find(|r| r.kind == "script" && r.package == "greeter")
        .unwrap_or_else(|| panic!("greeter's activation script ran: {runs:#?}"));
    assert!(script.ok, "{script:?}");
    assert!(
        script.output.contains("greeter 1.0.0: start it with"),
        "{script:?}"
    );
    // The wanted check kept all its attempts (retries = 3).
    let http: Vec<i64> = runs
        .iter()
        .filter(|r| r.name == "http")
        .map(|r| r.attempt)
        .collect();
    assert_eq!(http, [0, 1, 2, 3], "{runs:#?}");
}

// ---------------------------------------------------------------------------------------------
// 3. Retries.

#[test]
fn a_check_red_on_its_first_attempt_and_green_on_the_retry_commits() {
    let t = T::new();
    let counter = t.host_file("retry-count");
    checked_package(
        &t,
        "retry",
        "1.0.0",
        &counting(&counter, "[ \"$n\" -eq 1 ]"),
        "retries = 1\ninterval = 0",
        "",
    );
    let out = t.activate(&["install", "retry"], 0);
    assert_eq!(out["state"], "COMMITTED", "{out}");
    assert_eq!(t.current(), Some(1));
    let runs: Vec<Run> = t
        .runs(out["id"].as_i64().expect("id"))
        .into_iter()
        .filter(|r| r.package == "retry")
        .collect();
    assert_eq!(runs.len(), 2, "both attempts are journalled: {runs:#?}");
    assert_eq!((runs[0].attempt, runs[0].ok), (0, false), "{runs:#?}");
    assert_eq!(runs[0].outcome["code"], 1, "{runs:#?}");
    assert!(runs[0].output.contains("counted run 1: red"), "{runs:#?}");
    assert_eq!((runs[1].attempt, runs[1].ok), (1, true), "{runs:#?}");
    assert_eq!(runs[1].outcome["code"], 0, "{runs:#?}");
    assert!(runs[1].output.contains("counted run 2: green"), "{runs:#?}");
    assert_eq!(runs[1].generation, Some(1));
}

// ---------------------------------------------------------------------------------------------
// 4. Checks of different packages run in parallel.

#[test]
fn checks_of_different_packages_run_in_parallel() {
    let t = T::new();
    for name in ["slow-a", "slow-b"] {
        checked_package(&t, name, "1.0.0", "sleep 2; echo slept", "", "");
    }
    t.expect(&["build", "slow-a", "slow-b"], 0);
    let out = t.activate(&["install", "slow-a", "slow-b"], 0);
    assert_eq!(out["state"], "COMMITTED", "{out}");
    let last = t.last();
    let took = last["duration_ms"].as_f64().expect("duration_ms");
    assert!(
        (2000.0..3500.0).contains(&took),
        "two 2 s checks run side by side take ~2 s, not 4: {took} ms"
    );
    let runs = t.runs(out["id"].as_i64().expect("id"));
    let window = |name: &str| {
        let r = runs
            .iter()
            .find(|r| r.package == name)
            .unwrap_or_else(|| panic!("{name} ran: {runs:#?}"));
        (r.started_at, r.started_at + r.duration_us)
    };
    let (a, b) = (window("slow-a"), window("slow-b"));
    assert!(
        a.0 < b.1 && b.0 < a.1,
        "the two checks overlap in time: {a:?} {b:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Strategies.

#[test]
fn strategy_test_then_commit_or_recover() {
    let t = T::new();
    t.activate(&["install", "crypto@1.2.3"], 0);

    let under_test = t.activate(&["install", "hello", "--strategy", "test"], 0);
    assert_eq!(under_test["awaiting_commit"], true, "{under_test}");
    assert_eq!(under_test["strategy"], "test", "{under_test}");
    assert_eq!(t.current(), Some(2), "active now");
    let status = t.status();
    assert_eq!(status["current"], 2, "{status}");
    assert_eq!(
        status["default"], 1,
        "the previous one stays the default: {status}"
    );
    assert_eq!(status["under_test"], true, "{status}");
    assert_eq!(status["in_flight"], false, "{status}");

    // Nothing else activates meanwhile.
    let refused = t.expect(&["install", "hello"], 5);
    let why = stderr_of(&refused);
    assert!(
        why.contains("under test") && why.contains("--commit") && why.contains("--abort"),
        "{why}"
    );
    assert_eq!(t.current(), Some(2));

    let committed = t.activate(&["activate", "--commit"], 0);
    assert_eq!(committed["state"], "COMMITTED", "{committed}");
    assert_eq!(committed["to"], 2, "{committed}");
    let status = t.status();
    assert_eq!(
        (status["current"].as_u64(), status["default"].as_u64()),
        (Some(2), Some(2)),
        "{status}"
    );
    assert_eq!(status["under_test"], false, "{status}");
    assert_eq!(t.last()["state"], "COMMITTED");

    let again = t.expect(&["activate", "--commit"], 1);
    assert!(
        stderr_of(&again).contains("nothing to commit"),
        "{}",
        stderr_of(&again)
    );

    // Under test, then --recover (as at boot): back to the default.
    t.activate(&["update", "crypto", "1.2.5", "--strategy", "test"], 0);
    assert_eq!(t.current(), Some(3));
    let recovered = t.activate(&["activate", "--recover"], 7);
    assert_eq!(recovered["state"], "REVERTED", "{recovered}");
    assert_eq!(recovered["to"], 3, "{recovered}");
    assert!(
        str_of(&recovered["reason"]).contains("under test and not committed"),
        "{recovered}"
    );
    assert_eq!(t.current(), Some(2));
    assert_eq!(t.installed(), ["crypto 1.2.3", "hello 1.0.0"]);
    let status = t.status();
    assert_eq!(status["under_test"], false, "{status}");
    assert_eq!(status["default"], 2, "{status}");
}

#[test]
fn strategy_boot_changes_nothing_now_and_recover_activates_it() {
    let t = T::new();
    t.activate(&["install", "crypto@1.2.3"], 0);
    let links = t.noodle.default_profile();
    let before = std::fs::read_link(&links).expect("profile link");

    let result = t.json(&["update", "crypto", "1.2.5", "--strategy", "boot"], 0);
    let boot = &result["activation"];
    assert_eq!(boot["state"], "COMMITTED", "{result}");
    assert_eq!(boot["strategy"], "boot", "{result}");
    let n = result["generation"].as_u64().expect("generation");
    assert_eq!(n, 2);
    assert_eq!(
        std::fs::read_link(&links).expect("profile link"),
        before,
        "--strategy boot does not switch now"
    );
    assert_eq!(t.installed(), ["crypto 1.2.3"]);

    let booted = t.activate(&["activate", "--recover"], 0);
    assert_eq!(booted["state"], "COMMITTED", "{booted}");
    assert_eq!(
        (booted["from"].as_u64(), booted["to"].as_u64()),
        (Some(1), Some(n))
    );
    assert_eq!(t.current(), Some(n));
    assert_eq!(t.installed(), ["crypto 1.2.5"]);
    // Nothing more to do at the next boot.
    let nothing = t.json(&["activate", "--recover"], 0);
    assert_eq!(nothing["activation"], Value::Null, "{nothing}");
    assert_eq!(t.current(), Some(n));
}

#[test]
fn strategy_dry_activate_prints_the_plan_and_changes_nothing() {
    let t = T::new();
    t.activate(&["install", "crypto@1.2.3"], 0);
    t.activate(&["install", "greeter"], 0);
    t.expect(&["build", "crypto@1.3.0"], 0);
    let links = t.profile_links();
    let activations = t.count_activations();
    let unchanged = |what: &str| {
        assert_eq!(t.profile_links(), links, "{what}: profile links changed");
        assert_eq!(
            t.count_activations(),
            activations,
            "{what}: an activation was journalled"
        );
    };

    let out = t.expect(
        &["update", "crypto", "1.3.0", "--strategy", "dry-activate"],
        0,
    );
    let text = stdout_of(&out);
    assert!(text.contains("dry run"), "{text}");
    assert!(
        text.contains("crypto 1.2.3 → 1.3.0"),
        "the package change: {text}"
    );
    assert!(
        text.contains("selftest of crypto 1.3.0"),
        "the checks: {text}"
    );
    assert!(text.contains("http of greeter 1.0.0 (wanted)"), "{text}");
    unchanged("update --strategy dry-activate");

    let plan = t.json(
        &["update", "crypto", "1.3.0", "--strategy", "dry-activate"],
        0,
    );
    assert_eq!(plan["dry_run"], true, "{plan}");
    let checks: Vec<String> = plan["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| format!("{} {}", str_of(&c["name"]), str_of(&c["package"])))
        .collect();
    assert_eq!(
        checks,
        ["selftest crypto 1.3.0", "http greeter 1.0.0"],
        "{plan}"
    );
    unchanged("update --strategy dry-activate --json");

    // Activating generation 1 over 2 would remove greeter: its script would not run (it is
    // not new), and only crypto's check would.
    let back = t.json(&["activate", "1", "--strategy", "dry-activate"], 0);
    assert_eq!(back["dry_run"], true, "{back}");
    assert!(str_of(&back["changes"]).contains("greeter"), "{back}");
    assert_eq!(back["scripts"], serde_json::json!([]), "{back}");
    assert_eq!(back["checks"].as_array().map(Vec::len), Some(1), "{back}");
    // Installing greeter anew would run its script.
    t.activate(&["remove", "greeter"], 0);
    let links = t.profile_links();
    let activations = t.count_activations();
    let plan = t.json(&["install", "greeter", "--strategy", "dry-activate"], 0);
    assert_eq!(plan["scripts"][0]["package"], "greeter 1.0.0", "{plan}");
    assert_eq!(
        t.profile_links(),
        links,
        "install --strategy dry-activate: no new generation"
    );
    assert_eq!(t.count_activations(), activations);
    assert_eq!(t.current(), Some(3));
}

// ---------------------------------------------------------------------------------------------
// 6. Activation scripts.

#[test]
fn failing_scripts_revert_and_the_previous_generations_script_reruns() {
    let t = T::new();
    let log = t.host_file("marker.log");
    let script = |v: &str| {
        format!(
            "[activation]\nscript = '''\necho \"marker $version (generation $NOODLE_GENERATION)\" >> '{}'\necho \"marker {v} activated\"\n'''\n",
            log.display()
        )
    };
    checked_package(&t, "marker", "1.0.0", "echo green", "", &script("1.0.0"));
    checked_package(
        &t,
        "marker",
        "2.0.0",
        "echo 'marker 2 is broken'; exit 1",
        "",
        &script("2.0.0"),
    );
    checked_package(
        &t,
        "badscript",
        "1.0.0",
        "echo green",
        "",
        "[activation]\nscript = '''\necho 'about to fail'\nexit 3\n'''\n",
    );

    t.activate(&["install", "marker@1.0.0"], 0);
    assert_eq!(lines_of(&log), ["marker 1.0.0 (generation 1)"]);

    // 2.0.0's check is red: reverted, and 1.0.0's script runs again for generation 1.
    let reverted = t.activate(&["update", "marker", "2.0.0"], 7);
    assert_eq!(reverted["state"], "REVERTED", "{reverted}");
    assert_eq!(t.current(), Some(1));
    assert_eq!(
        lines_of(&log),
        [
            "marker 1.0.0 (generation 1)",
            "marker 2.0.0 (generation 2)",
            "marker 1.0.0 (generation 1)",
        ]
    );
    let runs = t.runs(reverted["id"].as_i64().expect("id"));
    let scripts: Vec<(Option<i64>, bool)> = runs
        .iter()
        .filter(|r| r.kind == "script")
        .map(|r| (r.generation, r.ok))
        .collect();
    assert_eq!(scripts, [(Some(2), true), (Some(1), true)], "{runs:#?}");

    // A failing activation script reverts, with a reason that names it; marker did not change,
    // so its script does not run again.
    let failed = t.activate(&["install", "badscript"], 7);
    assert_eq!(failed["state"], "REVERTED", "{failed}");
    let reason = str_of(&failed["reason"]);
    assert!(
        reason.contains("activation script of badscript 1.0.0 failed")
            && reason.contains("exit code 3")
            && reason.contains("about to fail"),
        "{reason}"
    );
    assert_eq!(t.current(), Some(1));
    assert_eq!(t.installed(), ["marker 1.0.0"]);
    assert_eq!(lines_of(&log).len(), 3, "{:?}", lines_of(&log));
    let runs = t.runs(failed["id"].as_i64().expect("id"));
    assert!(
        !runs
            .iter()
            .any(|r| r.kind == "check" && r.generation == Some(3)),
        "no check of the generation whose script failed runs: {runs:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. FAILED: the previous generation is not healthy either.

#[test]
fn a_previous_generation_that_is_red_too_ends_failed() {
    let t = T::new();
    let flag = t.host_file("fragile.flag");
    checked_package(
        &t,
        "fragile",
        "1.0.0",
        &format!(
            "if [ -e '{}' ]; then echo 'fragile: the flag is set'; exit 1; fi\necho green",
            flag.display()
        ),
        "",
        "",
    );
    t.activate(&["install", "fragile"], 0);
    std::fs::write(&flag, "").expect("set the flag");

    let out = t.expect(&["install", "crypto@1.3.0"], 8);
    let stderr = stderr_of(&out);
    assert!(stderr.contains("ACTIVATION FAILED"), "{stderr}");
    assert_eq!(
        t.current(),
        Some(1),
        "the profile stays on the previous generation"
    );
    let last = t.last();
    assert_eq!(last["state"], "FAILED", "{last}");
    let reason = str_of(&last["reason"]);
    // Why the new generation was reverted (crypto's or fragile's check, whichever was red
    // first: they run in parallel), then why the previous one is not healthy.
    let (new, previous) = reason
        .split_once("; then the previous generation 1 is not healthy either: ")
        .unwrap_or_else(|| panic!("{reason}"));
    assert!(
        new.contains("'selftest' of crypto 1.3.0") || new.contains("'check' of fragile 1.0.0"),
        "{reason}"
    );
    assert!(
        previous.contains("'check' of fragile 1.0.0 is red")
            && previous.contains("fragile: the flag is set"),
        "{reason}"
    );
    let stats = t.json(&["history", "--stats"], 0);
    assert_eq!(
        (stats["committed"].as_u64(), stats["failed"].as_u64()),
        (Some(1), Some(1)),
        "{stats}"
    );
}

// ---------------------------------------------------------------------------------------------
// 8. Detach.

/// Parses JSON lines; panics on a line that is not JSON.
fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn states(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "state")
        .map(|e| str_of(&e["state"]).to_owned())
        .collect()
}

#[test]
fn a_detached_activation_survives_its_launcher() {
    use std::os::unix::process::CommandExt;
    let t = T::new();
    t.activate(&["install", "crypto@1.2.3"], 0);
    t.activate(&["install", "hello"], 0);
    t.activate(&["profile", "switch", "1"], 0);
    assert_eq!(t.current(), Some(1));

    let events = t.host_file("events.jsonl");
    let events_arg = events.to_str().expect("utf-8");
    let started = Instant::now();
    let mut launcher = t
        .command(&[
            "activate", "2", "--window", "5s", "--detach", "--events", events_arg,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn noodle");
    wait_until(20, "the activation is in flight", || {
        let s = t.status();
        s["in_flight"] == true && s["last"]["state"] == "ACTIVE"
    });
    std::thread::sleep(Duration::from_secs(1).saturating_sub(started.elapsed()));
    // The terminal goes away: its process group hangs up, and the launcher is killed.
    launcher.kill().expect("kill the launcher");
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(launcher.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    );
    launcher.wait().expect("reap the launcher");

    let status = t.status();
    assert_eq!(status["in_flight"], true, "the worker goes on: {status}");
    assert_eq!(status["last"]["to"], 2, "{status}");
    wait_until(30, "the detached activation ends", || {
        t.status()["in_flight"] == false
    });
    let last = t.last();
    assert_eq!(last["state"], "COMMITTED", "{last}");
    assert_eq!(last["to"], 2);
    assert_eq!(t.current(), Some(2));
    assert!(
        last["duration_ms"].as_f64().expect("duration") >= 5000.0,
        "it went through its whole window: {last}"
    );
    let lines = json_lines(&std::fs::read_to_string(&events).expect("events file"));
    assert_eq!(
        states(&lines),
        ["BUILT", "VALIDATED", "STAGED", "ACTIVE", "COMMITTED"],
        "{lines:#?}"
    );
    assert!(
        lines.iter().filter(|e| e["event"] == "run").count() >= 4,
        "the window's check runs are streamed too: {lines:#?}"
    );

    // --json on stdout: the events, then the result.
    let out = t.expect(&["--json", "activate", "1", "--events", events_arg], 0);
    let lines = json_lines(&stdout_of(&out));
    assert_eq!(
        states(&lines),
        ["BUILT", "VALIDATED", "STAGED", "ACTIVE", "COMMITTED"],
        "{lines:#?}"
    );
    let result = lines.last().expect("a result line");
    assert_eq!(result["event"], "result", "{result}");
    assert_eq!(result["activation"]["state"], "COMMITTED", "{result}");
    assert_eq!(result["activation"]["to"], 1, "{result}");
    let file = json_lines(&std::fs::read_to_string(&events).expect("events file"));
    assert_eq!(states(&file).len(), 10, "--events FILE appends: {file:#?}");
}

// ---------------------------------------------------------------------------------------------
// 9. --abort.

#[test]
fn abort_stops_an_activation_in_flight_and_reverts() {
    let t = T::new();
    t.activate(&["install", "crypto@1.2.3"], 0);
    t.expect(&["build", "crypto@1.2.5"], 0);
    let background = t
        .command(&["--json", "update", "crypto", "1.2.5", "--window", "20s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn noodle");
    wait_until(20, "the activation is in its window", || {
        let s = t.status();
        s["in_flight"] == true && s["last"]["state"] == "ACTIVE"
    });
    assert_eq!(t.current(), Some(2));

    let started = Instant::now();
    let aborted = t.activate(&["activate", "--abort"], 7);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "--abort returns well before the 20 s window ends: {took:?}"
    );
    assert_eq!(aborted["state"], "REVERTED", "{aborted}");
    assert_eq!(aborted["to"], 2, "{aborted}");
    let reason = str_of(&aborted["reason"]);
    assert!(reason.contains("--abort"), "{reason}");
    assert_eq!(t.current(), Some(1));
    assert_eq!(t.installed(), ["crypto 1.2.3"]);

    let out = background.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(7), "{}", stderr_of(&out));
    let result = parse_json_output(&stdout_of(&out)).expect("JSON");
    assert_eq!(result["activation"]["state"], "REVERTED", "{result}");

    let again = t.expect(&["activate", "--abort"], 1);
    assert!(
        stderr_of(&again).contains("nothing to abort"),
        "{}",
        stderr_of(&again)
    );
}

// ---------------------------------------------------------------------------------------------
// 10. Concurrency.

#[test]
fn one_activation_per_profile_the_second_waits_or_fails_with_no_wait() {
    let t = T::new();
    t.activate(&["install", "crypto@1.2.3"], 0);
    t.expect(&["build", "hello", "crypto@1.2.5"], 0);
    let background = t
        .command(&["--json", "install", "hello", "--window", "3s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn noodle");
    wait_until(20, "the first activation is in flight", || {
        let s = t.status();
        s["in_flight"] == true && s["last"]["state"] == "ACTIVE"
    });

    let busy = t.expect(&["update", "crypto", "1.2.5", "--no-wait"], 9);
    let why = stderr_of(&busy);
    assert!(
        why.contains("activation #2") && why.contains("in flight"),
        "{why}"
    );

    let waited = t.run(&["--json", "update", "crypto", "1.2.5"]);
    assert_eq!(waited.status.code(), Some(0), "{}", stderr_of(&waited));
    assert!(
        stderr_of(&waited).contains("waiting for another noodle"),
        "{}",
        stderr_of(&waited)
    );
    let first = background.wait_with_output().expect("wait");
    assert_eq!(first.status.code(), Some(0), "{}", stderr_of(&first));

    let history = t.history(&[]);
    let summary: Vec<(u64, u64, &str)> = history
        .iter()
        .map(|a| {
            (
                a["from"].as_u64().unwrap_or(0),
                a["to"].as_u64().expect("to"),
                str_of(&a["state"]),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (0, 1, "COMMITTED"),
            (1, 2, "COMMITTED"),
            (2, 3, "COMMITTED")
        ],
        "the second change waited and was made on top of the first"
    );
    assert_eq!(t.installed(), ["crypto 1.2.5", "hello 1.0.0"]);
}

#[test]
fn ten_profiles_activated_at_once_all_commit() {
    let t = T::new();
    t.expect(&["build", "crypto@1.2.5"], 0);
    let profiles: Vec<String> = (0..10)
        .map(|n| format!("/noodle/var/profiles/p{n}"))
        .collect();
    let results: Vec<Output> = std::thread::scope(|s| {
        let handles: Vec<_> = profiles
            .iter()
            .map(|p| {
                let t = &t;
                s.spawn(move || {
                    t.run(&[
                        "--json",
                        "--profile",
                        p,
                        "install",
                        "crypto@1.2.5",
                        "--window",
                        "1s",
                    ])
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    for (p, out) in profiles.iter().zip(&results) {
        assert_eq!(out.status.code(), Some(0), "{p}: {}", stderr_of(out));
        let result = parse_json_output(&stdout_of(out)).expect("JSON");
        assert_eq!(result["activation"]["state"], "COMMITTED", "{p}: {result}");
        assert_eq!(result["activation"]["profile"], p.as_str(), "{result}");
    }
    let mut ids = std::collections::BTreeSet::new();
    for p in &profiles {
        let physical = t.noodle.physical(p);
        assert_eq!(t.noodle.current_generation(&physical), Some(1), "{p}");
        let history = t.history(&["--profile", p]);
        assert_eq!(history.len(), 1, "{p}: its own journal only: {history:#?}");
        assert_eq!(history[0]["profile"], p.as_str());
        assert_eq!(history[0]["state"], "COMMITTED");
        assert_eq!(history[0]["to"], 1);
        assert!(
            history[0]["runs"].as_u64().expect("runs") >= 2,
            "{history:#?}"
        );
        ids.insert(history[0]["id"].as_i64().expect("id"));
        let installed = t.noodle.installed(&["--profile", p]);
        assert_eq!(installed.len(), 1, "{p}");
        assert_eq!(
            (installed[0].0.as_str(), installed[0].1.as_str()),
            ("crypto", "1.2.5")
        );
    }
    assert_eq!(ids.len(), 10, "ten separate activations");
    assert_eq!(t.count_activations(), 10);
}
