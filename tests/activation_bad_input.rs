//! Bad input to health-gated activation (issue 5): unknown generations, health checks that do
//! not exist, hang, flood their output or flap, activation scripts that fail, journal entries
//! left by crashed runs, `--abort`/`--commit` with nothing to do, bad options, and two
//! activations of one profile at once. Each gets a clear reason naming the problem (and what to
//! do), the documented non-zero exit code, and nothing half-switched: the profile link is where
//! it was (or the activation reverted cleanly), and no activation is left unfinished.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::channel::Channel;
use common::profile::profile_dir_state;
use common::{assert_aborted_at, stderr_of, stdout_of, wait_until, Noodle};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Helpers.

/// A fresh store and a channel holding only busybox, with busybox installed (generation 1).
fn store_with_busybox() -> (Noodle, Channel) {
    let noodle = Noodle::new();
    let channel = Channel::new(&noodle);
    noodle.ok(&channel.args(&["install", "busybox"]));
    (noodle, channel)
}

/// Writes a recipe `name version` whose build writes each `(program, body)` into `$out/bin` as
/// a `#!$busybox/bin/sh` script (`@bb@` in a body stands for busybox's store path), followed
/// by `extra` TOML ([[health]] checks, [activation]).
fn package(channel: &Channel, name: &str, version: &str, programs: &[(&str, &str)], extra: &str) {
    let mut script = String::from("mkdir -p \"$out/bin\"\n");
    for (program, body) in programs {
        script += &format!(
            "{{ echo \"#!$busybox/bin/sh\"; cat <<'NOODLE_EOF'\n{body}\nNOODLE_EOF\n}} > \"$out/bin/{program}\"\n\
             sed -i \"s|@bb@|$busybox|g\" \"$out/bin/{program}\"\n\
             chmod 0555 \"$out/bin/{program}\"\n"
        );
    }
    channel.recipe(
        name,
        version,
        &format!(
            "[dependencies]\nbusybox = \"^1.35\"\n\n[build]\nscript = '''\n{script}'''\n\n{extra}"
        ),
    );
}

/// One `[[health]]` table.
fn health(name: &str, command: &str, settings: &str) -> String {
    format!("[[health]]\nname = \"{name}\"\ncommand = [\"{command}\"]\n{settings}\n")
}

/// What an activating command did.
struct Ran {
    code: i32,
    /// The `activation` object of the last JSON line (`Null` when there was none).
    result: Value,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

fn ran(out: Output, started: Instant) -> Ran {
    let stdout = stdout_of(&out);
    let result = common::parse_json_output(&stdout)
        .map(|v| v["activation"].clone())
        .unwrap_or(Value::Null);
    Ran {
        code: out.status.code().unwrap_or(-1),
        result,
        stdout,
        stderr: stderr_of(&out),
        elapsed: started.elapsed(),
    }
}

/// `noodle --json ARGS` with `env`.
fn run_json(noodle: &Noodle, args: &[&str], env: &[(&str, &str)]) -> Ran {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let started = Instant::now();
    ran(noodle.run_env(&all, env), started)
}

/// One row of the activations table.
#[derive(Debug, Clone)]
struct Row {
    id: i64,
    from: Option<i64>,
    to: i64,
    state: String,
    reason: Option<String>,
}

fn rows(noodle: &Noodle) -> Vec<Row> {
    let conn = rusqlite::Connection::open(noodle.db_file()).expect("open db");
    let mut stmt = conn
        .prepare(
            "SELECT id, from_generation, to_generation, state, reason FROM activations ORDER BY id",
        )
        .expect("prepare");
    let rows = stmt
        .query_map([], |r| {
            Ok(Row {
                id: r.get(0)?,
                from: r.get(1)?,
                to: r.get(2)?,
                state: r.get(3)?,
                reason: r.get(4)?,
            })
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    rows
}

fn last_row(noodle: &Noodle) -> Row {
    rows(noodle).pop().expect("an activation was journalled")
}

/// The journalled runs of activation `id`: (kind, package, ok, output, output_bytes).
fn runs_of(noodle: &Noodle, id: i64) -> Vec<(String, String, bool, String, i64)> {
    let conn = rusqlite::Connection::open(noodle.db_file()).expect("open db");
    let mut stmt = conn
        .prepare(
            "SELECT kind, package, ok, output, output_bytes FROM activation_runs
             WHERE activation = ?1 ORDER BY id",
        )
        .expect("prepare");
    let runs = stmt
        .query_map([id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("runs");
    runs
}

/// The notes of activation `id`'s journalled events named `what`.
fn event_notes(noodle: &Noodle, id: i64, what: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(noodle.db_file()).expect("open db");
    let mut stmt = conn
        .prepare("SELECT coalesce(note, '') FROM activation_events WHERE activation = ?1 AND what = ?2 ORDER BY id")
        .expect("prepare");
    let notes = stmt
        .query_map(rusqlite::params![id, what], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("notes");
    notes
}

/// Asserts a run ended REVERTED (exit 7) back on generation `back`, with a reason containing
/// every one of `needles`, and nothing left unfinished.
fn assert_reverted(noodle: &Noodle, run: &Ran, back: u64, needles: &[&str]) {
    let ctx = format!("stdout: {}\nstderr: {}", run.stdout, run.stderr);
    assert_eq!(run.code, 7, "expected REVERTED (exit 7): {ctx}");
    assert_eq!(run.result["state"], "REVERTED", "{ctx}");
    let reason = run.result["reason"].as_str().unwrap_or_default();
    for needle in needles {
        assert!(
            reason.contains(needle),
            "expected '{needle}' in the reason: {reason}"
        );
    }
    let row = last_row(noodle);
    assert_eq!(row.state, "REVERTED");
    assert_eq!(
        row.reason.as_deref(),
        Some(reason),
        "journal and result agree"
    );
    assert_eq!(
        noodle.current_generation(&noodle.default_profile()),
        Some(back),
        "the profile is back on generation {back}"
    );
    assert_eq!(
        noodle.unfinished_activations(),
        0,
        "an unfinished activation is left"
    );
}

/// Processes whose command line is `program` (by that name or a path ending in `/program`)
/// followed by `args`.
fn processes_running(program: &str, args: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc") {
        let entry = entry.expect("entry");
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let words: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|w| !w.is_empty())
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect();
        let Some((first, rest)) = words.split_first() else {
            continue;
        };
        if (first == program || first.ends_with(&format!("/{program}"))) && rest == args {
            found.push(pid);
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// 1. Unknown generations.

#[test]
fn unknown_generations_are_refused_with_the_ones_there_are() {
    let noodle = Noodle::new();
    let a = noodle.package("a", "1.0", &[("bin/a", "a")]);
    let b = noodle.package("b", "1.0", &[("bin/b", "b")]);
    noodle.ok(&["install", &a]);
    noodle.ok(&["install", &b]);
    let profile = noodle.default_profile();
    let before = profile_dir_state(&profile);
    let journalled = rows(&noodle).len();

    for args in [&["activate", "99"][..], &["profile", "switch", "99"]] {
        let (code, err) = noodle.fails(args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(
            err.contains("has no generation 99; it has 1, 2"),
            "{args:?}: {err}"
        );
        assert!(
            !err.contains("activating generation 99"),
            "{args:?} announced an activation it could not begin: {err}"
        );
    }

    let bogus = "/noodle/store/00000000000000000000000000000000-profile";
    let (code, err) = noodle.fails(&["activate", bogus]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(bogus) && err.contains("not a valid path"),
        "{err}"
    );

    // A valid store path that is not a generation (a package).
    let (code, err) = noodle.fails(&["activate", &a]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&a) && err.contains("not a generation"),
        "the error should say that {a} is not a generation: {err}"
    );

    let (code, err) = noodle.fails(&["activate", "latest"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("'latest' is neither a generation number nor a generation's store path"),
        "{err}"
    );

    assert_eq!(profile_dir_state(&profile), before, "the profile changed");
    assert_eq!(
        rows(&noodle).len(),
        journalled,
        "a refused activation was journalled"
    );
    assert_eq!(noodle.unfinished_activations(), 0);

    // The store path of a generation that is there does work.
    let first = std::fs::read_link(profile.with_file_name("profile-1-link"))
        .expect("generation 1")
        .display()
        .to_string();
    noodle.ok(&["activate", &first]);
    assert_eq!(noodle.current_generation(&profile), Some(1));
    assert_eq!(last_row(&noodle).state, "COMMITTED");
}

// ---------------------------------------------------------------------------------------------
// 2. A health check whose command does not exist.

#[test]
fn a_check_command_that_does_not_exist_is_refused_before_anything_changes() {
    let (noodle, channel) = store_with_busybox();
    let marker = noodle.scratch("script-ran");
    package(
        &channel,
        "nope",
        "1.0.0",
        &[("ok", "echo ok")],
        &format!(
            "{}[activation]\nscript = '''\necho ran > {}\n'''\n",
            health("missing", "bin/nope", ""),
            marker.display()
        ),
    );
    let profile = noodle.default_profile();
    let before = profile_dir_state(&profile);

    let run = run_json(&noodle, &channel.args(&["install", "nope"]), &[]);
    assert_reverted(
        &noodle,
        &run,
        1,
        &[
            "validation failed",
            "does not exist",
            "-nope-1.0.0/bin/nope",
            "[[health]]",
        ],
    );
    assert_eq!(run.result["from"], 1);
    assert_eq!(run.result["to"], 2);
    // The profile link never moved; only the new generation's link was added.
    let after = profile_dir_state(&profile);
    assert_eq!(after.get("profile"), before.get("profile"));
    for (name, target) in &before {
        assert_eq!(after.get(name), Some(target), "{name} changed");
    }
    assert!(
        !marker.exists(),
        "the new package's activation script ran although validation refused it"
    );
    let id = last_row(&noodle).id;
    assert!(
        runs_of(&noodle, id).iter().all(|r| r.0 != "script"),
        "a script run was journalled: {:?}",
        runs_of(&noodle, id)
    );
    assert_eq!(
        event_notes(&noodle, id, "REVERTED"),
        vec!["nothing had changed".to_owned()]
    );
    assert!(
        event_notes(&noodle, id, "ACTIVE").is_empty(),
        "it got as far as ACTIVE"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Hanging checks and scripts.

#[test]
fn a_hanging_check_times_out_and_reverts_leaving_nothing_behind() {
    let (noodle, channel) = store_with_busybox();
    package(
        &channel,
        "hangs",
        "1.0.0",
        &[("hang", "sleep 1371\nexit 0")],
        &health("hang", "bin/hang", "timeout = 1"),
    );
    let run = run_json(&noodle, &channel.args(&["install", "hangs"]), &[]);
    assert!(
        run.elapsed < Duration::from_secs(30),
        "a 1 s check timeout took {:?}",
        run.elapsed
    );
    assert_reverted(
        &noodle,
        &run,
        1,
        &["required check 'hang' of hangs 1.0.0", "timed out after 1s"],
    );
    wait_until(5, "the check's sleep is gone", || {
        processes_running("sleep", &["1371"]).is_empty()
    });
}

#[test]
fn a_hanging_activation_script_times_out_and_reverts() {
    let (noodle, channel) = store_with_busybox();
    package(
        &channel,
        "stuck",
        "1.0.0",
        &[("ok", "echo ok")],
        "[activation]\nscript = '''\nsleep 1372\n'''\n",
    );
    let run = run_json(
        &noodle,
        &channel.args(&["install", "stuck", "--script-timeout", "1s"]),
        &[],
    );
    assert!(run.elapsed < Duration::from_secs(30), "{:?}", run.elapsed);
    assert_reverted(
        &noodle,
        &run,
        1,
        &["the activation script of stuck 1.0.0", "timed out after 1s"],
    );
    wait_until(5, "the script's sleep is gone", || {
        processes_running("sleep", &["1372"]).is_empty()
    });
}

// ---------------------------------------------------------------------------------------------
// 4. A check that floods its output.

#[test]
fn a_flooding_check_is_captured_bounded() {
    const FLOOD: i64 = 64 * 1024 * 1024;
    let (noodle, channel) = store_with_busybox();
    package(
        &channel,
        "flood",
        "1.0.0",
        &[(
            "flood",
            &format!("yes noodle-flood | head -c {FLOOD}\necho last words\nexit 1"),
        )],
        &health("flood", "bin/flood", "timeout = 60"),
    );
    let run = run_json(&noodle, &channel.args(&["install", "flood"]), &[]);
    assert_reverted(
        &noodle,
        &run,
        1,
        &[
            "check 'flood' of flood 1.0.0 is red (exit code 1)",
            "last words",
        ],
    );
    let id = last_row(&noodle).id;
    let runs = runs_of(&noodle, id);
    let (_, _, ok, output, bytes) = runs
        .iter()
        .find(|r| r.0 == "check" && r.1 == "flood")
        .unwrap_or_else(|| panic!("no run of the flood check: {runs:?}"));
    assert!(!ok);
    assert!(
        output.len() < 64 * 1024,
        "{} bytes of output were kept",
        output.len()
    );
    assert!(
        *bytes > FLOOD,
        "output_bytes {bytes} should count all the output"
    );
    assert!(output.starts_with("noodle-flood\n"), "the head is kept");
    assert!(
        output.trim_end().ends_with("last words"),
        "the tail is kept"
    );
    assert!(output.contains("bytes omitted"), "the cut is marked");
    // What was printed (events with the run's output, then the result) is bounded too.
    assert!(
        run.stdout.len() < 1024 * 1024,
        "{} bytes of JSON lines",
        run.stdout.len()
    );
}

// ---------------------------------------------------------------------------------------------
// 5. A flapping check.

/// A check that counts its runs in `counter` and is red on the second only.
fn flapping(counter: &Path) -> String {
    format!(
        "n=$(cat {c} 2>/dev/null || echo 0)\nn=$((n + 1))\necho $n > {c}\n[ \"$n\" != 2 ]",
        c = counter.display()
    )
}

#[test]
fn a_check_red_once_in_the_window_reverts_unless_its_retries_cover_it() {
    let (noodle, channel) = store_with_busybox();
    let strict = noodle.scratch("strict-count");
    let lenient = noodle.scratch("lenient-count");
    package(
        &channel,
        "flap",
        "1.0.0",
        &[("flap", &flapping(&strict))],
        &health("flap", "bin/flap", "timeout = 5\ninterval = 1\nretries = 0"),
    );
    package(
        &channel,
        "flap",
        "2.0.0",
        &[("flap", &flapping(&lenient))],
        &health("flap", "bin/flap", "timeout = 5\ninterval = 1\nretries = 2"),
    );

    let run = run_json(
        &noodle,
        &channel.args(&["install", "flap@1.0.0", "--window", "4s"]),
        &[],
    );
    assert_reverted(
        &noodle,
        &run,
        1,
        &[
            "required check 'flap' of flap 1.0.0 is red (exit code 1)",
            "into the health window, after 1 green round",
        ],
    );
    assert_eq!(
        std::fs::read_to_string(&strict).expect("counter").trim(),
        "2",
        "the check ran again after it was red"
    );

    let run = run_json(
        &noodle,
        &channel.args(&["install", "flap@2.0.0", "--window", "4s"]),
        &[],
    );
    assert_eq!(
        run.code, 0,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    assert_eq!(run.result["state"], "COMMITTED");
    assert_eq!(
        noodle.current_generation(&noodle.default_profile()),
        Some(3)
    );
    let runs = runs_of(&noodle, last_row(&noodle).id);
    let flaps: Vec<bool> = runs
        .iter()
        .filter(|r| r.0 == "check" && r.1 == "flap")
        .map(|r| r.2)
        .collect();
    assert!(
        flaps.len() >= 4 && flaps[..3] == [true, false, true] && flaps[3..].iter().all(|ok| *ok),
        "runs of the flapping check: {flaps:?}"
    );
    assert_eq!(noodle.unfinished_activations(), 0);
}

// ---------------------------------------------------------------------------------------------
// 6. An activation script that fails.

#[test]
fn a_failing_activation_script_reverts_naming_the_script() {
    let (noodle, channel) = store_with_busybox();
    package(
        &channel,
        "fails",
        "1.0.0",
        &[("ok", "echo ok")],
        "[activation]\nscript = '''\necho starting\necho boom >&2\nexit 3\n'''\n",
    );
    let run = run_json(&noodle, &channel.args(&["install", "fails"]), &[]);
    assert_reverted(
        &noodle,
        &run,
        1,
        &["the activation script of fails 1.0.0 failed (exit code 3): boom"],
    );
    // It had switched: the switch back is journalled, and busybox's check confirmed gen 1.
    let id = last_row(&noodle).id;
    assert_eq!(event_notes(&noodle, id, "switched-back").len(), 1);
    let runs = runs_of(&noodle, id);
    assert!(
        runs.iter()
            .any(|r| r.0 == "check" && r.1 == "busybox" && r.2),
        "the previous generation was not checked: {runs:?}"
    );
    // And the human-readable form says the same.
    let out = noodle.run(&channel.args(&["install", "fails"]));
    assert_eq!(out.status.code(), Some(7));
    let err = stderr_of(&out);
    assert!(
        err.contains("activation script of fails 1.0.0 failed (exit code 3): boom")
            && err.contains("generation 1 is active again"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Journal entries from crashed runs.

#[test]
fn unfinished_journal_entries_are_recovered_first() {
    let (noodle, channel) = store_with_busybox();
    package(
        &channel,
        "steady",
        "1.0.0",
        &[("steady", "exit 0")],
        &health("steady", "bin/steady", ""),
    );
    package(&channel, "other", "1.0.0", &[("other", "exit 0")], "");
    let profile = noodle.default_profile();

    // A run killed in its health window: switched to generation 2, journal row ACTIVE.
    let out = noodle.run_env(
        &channel.args(&["install", "steady", "--no-detach"]),
        &[("NOODLE_FAILPOINT", "activate:checking")],
    );
    assert_aborted_at(&out, "activate:checking", "install steady");
    let crashed = last_row(&noodle);
    assert_eq!(crashed.state, "ACTIVE");
    assert_eq!(noodle.current_generation(&profile), Some(2));

    // Any command that looks at the profile finishes it first.
    let out = noodle.run(&["status"]);
    assert!(out.status.success(), "status: {}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains(&format!("recovered activation #{}", crashed.id)),
        "status did not say it recovered: {err}"
    );
    let row = last_row(&noodle);
    assert_eq!(row.id, crashed.id);
    assert_eq!(row.state, "REVERTED");
    let reason = row.reason.unwrap_or_default();
    assert!(
        reason.starts_with("interrupted in state ACTIVE")
            && reason.contains("stopped before it finished"),
        "{reason}"
    );
    assert_eq!(noodle.current_generation(&profile), Some(1));
    assert_eq!(noodle.unfinished_activations(), 0);

    // A hand-made unfinished row: STAGED (nothing switched yet), driven by a process that is
    // gone, towards generation 2, which exists.
    let dead = {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait");
        pid
    };
    let to_path = std::fs::read_link(profile.with_file_name("profile-2-link"))
        .expect("generation 2")
        .display()
        .to_string();
    let id = {
        let conn = rusqlite::Connection::open(noodle.db_file()).expect("open db");
        conn.execute(
            "INSERT INTO activations (profile, from_generation, to_generation, to_path, strategy,
                 state, options, pid, started_at)
             SELECT profile, 1, 2, ?1, 'switch', 'STAGED', options, ?2, started_at
             FROM activations WHERE id = ?3",
            rusqlite::params![to_path, dead, crashed.id],
        )
        .expect("insert");
        conn.last_insert_rowid()
    };
    assert_eq!(noodle.unfinished_activations(), 1);

    let out = noodle.run(&channel.args(&["install", "other"]));
    let err = stderr_of(&out);
    assert!(out.status.success(), "install after a crash: {err}");
    assert!(
        err.contains(&format!("recovered activation #{id}")),
        "install did not say it recovered: {err}"
    );
    let all = rows(&noodle);
    let recovered = all.iter().find(|r| r.id == id).expect("the row");
    assert_eq!(recovered.state, "REVERTED");
    assert!(
        recovered
            .reason
            .as_deref()
            .unwrap_or_default()
            .starts_with("interrupted in state STAGED"),
        "{recovered:?}"
    );
    assert_eq!(
        event_notes(&noodle, id, "REVERTED"),
        vec!["nothing had changed".to_owned()]
    );
    // Then the install went ahead.
    let last = all.last().expect("rows");
    assert!(last.id > id);
    assert_eq!((last.from, last.to), (Some(1), 3));
    assert_eq!(last.state, "COMMITTED");
    assert_eq!(noodle.current_generation(&profile), Some(3));
    assert_eq!(noodle.unfinished_activations(), 0);
}

// ---------------------------------------------------------------------------------------------
// 8. --abort and --commit with nothing to do.

#[test]
fn abort_and_commit_with_nothing_to_do() {
    let noodle = Noodle::new();
    let profile = noodle.default_profile();

    // Never activated.
    for verb in ["--abort", "--commit"] {
        let (code, err) = noodle.fails(&["activate", verb]);
        assert_eq!(code, 1, "{verb}: {err}");
        assert!(err.contains("has never been activated"), "{verb}: {err}");
    }

    let a = noodle.package("a", "1.0", &[("bin/a", "a")]);
    noodle.ok(&["install", &a]);
    let id = last_row(&noodle).id;
    let before = profile_dir_state(&profile);
    let journalled = rows(&noodle).len();

    let (code, err) = noodle.fails(&["activate", "--abort"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("nothing to abort: no activation is in flight")
            && err.contains(&format!("its last activation, #{id}, (none) → 1"))
            && err.contains("ended COMMITTED"),
        "{err}"
    );
    let (code, err) = noodle.fails(&["activate", "--commit"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("nothing to commit: no generation is under test")
            && err.contains(&format!("#{id}")),
        "{err}"
    );
    assert_eq!(profile_dir_state(&profile), before);
    assert_eq!(rows(&noodle).len(), journalled);
    assert_eq!(last_row(&noodle).state, "COMMITTED");
}

// ---------------------------------------------------------------------------------------------
// 9. Bad options.

#[test]
fn bad_windows_and_strategies_are_usage_errors() {
    let noodle = Noodle::new();
    let a = noodle.package("a", "1.0", &[("bin/a", "a")]);
    noodle.ok(&["install", &a]);
    let profile = noodle.default_profile();
    let before = profile_dir_state(&profile);
    let journalled = rows(&noodle).len();

    let usage_error = |args: &[&str], env: &[(&str, &str)], needles: &[&str]| {
        let out = noodle.run_env(args, env);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {err}");
        for needle in needles {
            assert!(
                err.contains(needle),
                "{args:?}: expected '{needle}' in: {err}"
            );
        }
    };
    usage_error(
        &["activate", "1", "--window", "banana"],
        &[],
        &["'banana' is not a duration", "30s"],
    );
    usage_error(
        &["install", &a, "--window", "banana"],
        &[],
        &["'banana' is not a duration"],
    );
    usage_error(
        &["activate", "1"],
        &[("NOODLE_WINDOW", "banana")],
        &["'banana' is not a duration"],
    );
    usage_error(
        &["activate", "1", "--script-timeout", "soon"],
        &[],
        &["'soon' is not a duration"],
    );
    usage_error(
        &["activate", "1", "--strategy", "reboot"],
        &[],
        &[
            "'reboot' is not a strategy",
            "switch, boot, test or dry-activate",
        ],
    );

    let (code, err) = noodle.fails(&["activate"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("say which generation to activate"), "{err}");

    assert_eq!(profile_dir_state(&profile), before);
    assert_eq!(rows(&noodle).len(), journalled);
}

// ---------------------------------------------------------------------------------------------
// 10. Two activations of one profile at once.

#[test]
fn a_second_activation_waits_or_with_no_wait_is_refused() {
    let (noodle, channel) = store_with_busybox();
    package(
        &channel,
        "slow",
        "1.0.0",
        &[("slow", "sleep 3")],
        &health("slow", "bin/slow", "timeout = 20"),
    );
    let profile = noodle.default_profile();

    let first = noodle.spawn(&channel.args(&["install", "slow"]), &[]);
    wait_until(20, "the first activation is in flight", || {
        noodle.unfinished_activations() == 1
    });
    let in_flight = last_row(&noodle);

    let out = noodle.run(&["activate", "1", "--no-wait"]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(9), "--no-wait: {err}");
    assert!(
        err.contains(&format!("activation #{} of profile", in_flight.id))
            && err.contains("is in flight")
            && err.contains("--no-wait"),
        "{err}"
    );

    let second = noodle.spawn(&["activate", "1"], &[]);
    let first = first.wait_with_output().expect("wait for the first");
    let second = second.wait_with_output().expect("wait for the second");
    assert!(first.status.success(), "first: {}", stderr_of(&first));
    let err = stderr_of(&second);
    assert!(second.status.success(), "second: {err}");
    assert!(
        err.contains("waiting for another noodle that is changing profile"),
        "the second did not say that it waits: {err}"
    );

    // One after the other, both complete: 1 → 2, then 2 → 1; the refused one left no row.
    let all = rows(&noodle);
    let tail: Vec<(Option<i64>, i64, &str)> = all
        .iter()
        .skip(1)
        .map(|r| (r.from, r.to, r.state.as_str()))
        .collect();
    assert_eq!(
        tail,
        vec![(Some(1), 2, "COMMITTED"), (Some(2), 1, "COMMITTED")]
    );
    assert_eq!(noodle.current_generation(&profile), Some(1));
    assert_eq!(noodle.unfinished_activations(), 0);
}

// ---------------------------------------------------------------------------------------------
// A damaged closure: the validation gate refuses it before anything changes.

#[test]
fn a_damaged_closure_is_refused_by_validation() {
    let (noodle, channel) = store_with_busybox();
    package(&channel, "tool", "1.0.0", &[("tool", "echo tool-1")], "");
    noodle.ok(&channel.args(&["install", "tool"]));
    noodle.ok(&channel.args(&["profile", "switch", "1"]));
    let list = noodle.json(&channel.args(&["profile", "generations"]));
    let tool_path = noodle
        .store_entries()
        .into_iter()
        .find(|e| e.ends_with("-tool-1.0.0"))
        .expect("tool's store path");
    let program = noodle.physical_store().join(&tool_path).join("bin/tool");
    let before = profile_dir_state(&noodle.default_profile());

    // A different size: the fast check (no file is read) catches it.
    let original = std::fs::read(&program).expect("read");
    common::tamper(&program, b"#!/bin/sh\necho evil\n", true);
    let run = run_json(&noodle, &channel.args(&["profile", "switch", "2"]), &[]);
    assert_reverted(
        &noodle,
        &run,
        1,
        &["validation failed", "its size changed", "-tool-1.0.0"],
    );
    assert_eq!(profile_dir_state(&noodle.default_profile()), before);
    assert_eq!(
        noodle.json(&channel.args(&["profile", "generations"])),
        list
    );

    // The same size, other bytes: only --verify-contents (every file hashed) catches it.
    let mut same_size = original.clone();
    let last = same_size.len() - 2;
    same_size[last] = if same_size[last] == b'X' { b'Y' } else { b'X' };
    common::tamper(&program, &same_size, true);
    let run = run_json(
        &noodle,
        &channel.args(&["profile", "switch", "2", "--verify-contents"]),
        &[],
    );
    assert_reverted(&noodle, &run, 1, &["validation failed", "-tool-1.0.0"]);
    let run = run_json(&noodle, &channel.args(&["profile", "switch", "2"]), &[]);
    assert_eq!(
        run.code, 0,
        "the fast check reads no contents: {}",
        run.stderr
    );
    assert_eq!(run.result["state"], "COMMITTED");
}
