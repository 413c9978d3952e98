//! `noodle build` given bad input: broken recipes, impossible dependency graphs, sources that
//! are missing or not what their pin says, and builders that fail, misbehave or produce what
//! a store may not hold. Each must fail with a message naming the problem, and register
//! NOTHING: the store's files and its `paths`/`refs`/`entries` tables are exactly as before.
//!
//! What a failed build may legitimately leave:
//! - its log under var/log and one `builds` row with status `failed` (that is how
//!   `noodle log` shows why it failed), and its plan in `plans`;
//! - noodle.lock in the channel (outside the store), once resolution succeeded;
//! - sources fetched and verified before the build failed: they are fixed-output paths named by
//!   their pin, valid on their own (no referrers) and reused by the next attempt; `store gc`
//!   removes them. A source that does not match its pin is never kept.
//!
//! Every test builds busybox (the bootstrap) in its setup, so only the failing package's
//! effects are compared.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::channel::Channel;
use common::{host_processes, Noodle};

// ---------------------------------------------------------------------------------------------
// Setup and the "nothing registered" check.

/// A store where busybox is built, and a channel holding only busybox.
fn setup() -> (Noodle, Channel) {
    let noodle = Noodle::new();
    let channel = Channel::new(&noodle);
    let out = noodle.build_ok(&channel, &["busybox"]);
    assert_eq!(out.len(), 1, "busybox output: {out:?}");
    (noodle, channel)
}

/// `noodle --channel C build ARGS`, which must fail: (exit code, stderr).
fn build_fails(noodle: &Noodle, channel: &Channel, args: &[&str]) -> (i32, String) {
    let mut all = vec!["build"];
    all.extend_from_slice(args);
    noodle.fails(&channel.args(&all))
}

const LOG_DIR: &str = "noodle/var/log";
const DB_FILE: &str = "noodle/var/db/store.sqlite";

#[derive(Debug, Clone, PartialEq, Eq)]
struct BuildRow {
    id: i64,
    output: String,
    kind: String,
    status: String,
    log: Option<String>,
    error: Option<String>,
}

/// Everything a failed build must leave as it was (plus what it may add: logs and builds).
struct State {
    /// `snapshot()` without the log files and the database file (compared by table below).
    files: BTreeMap<PathBuf, String>,
    logs: BTreeSet<String>,
    rows: Vec<String>,
    paths: Vec<String>,
    refs: Vec<String>,
    entries: Vec<String>,
    builds: Vec<BuildRow>,
    lock: String,
}

fn query_strings(noodle: &Noodle, sql: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(noodle.db_file()).expect("open db");
    let mut stmt = conn.prepare(sql).expect("prepare");
    let columns = stmt.column_count();
    stmt.query_map([], |row| {
        let mut text = Vec::new();
        for i in 0..columns {
            let value: rusqlite::types::Value = row.get(i)?;
            text.push(format!("{value:?}"));
        }
        Ok(text.join(" | "))
    })
    .expect("query")
    .collect::<Result<_, _>>()
    .expect("rows")
}

fn builds(noodle: &Noodle) -> Vec<BuildRow> {
    let conn = rusqlite::Connection::open(noodle.db_file()).expect("open db");
    let mut stmt = conn
        .prepare("SELECT id, output, kind, status, log, error FROM builds ORDER BY id")
        .expect("prepare");
    stmt.query_map([], |r| {
        Ok(BuildRow {
            id: r.get(0)?,
            output: r.get(1)?,
            kind: r.get(2)?,
            status: r.get(3)?,
            log: r.get(4)?,
            error: r.get(5)?,
        })
    })
    .expect("query")
    .collect::<Result<_, _>>()
    .expect("rows")
}

fn state(noodle: &Noodle, channel: &Channel) -> State {
    let mut files = noodle.snapshot();
    let logs = files
        .keys()
        .filter(|p| p.starts_with(LOG_DIR) && p.as_path() != Path::new(LOG_DIR))
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    files.retain(|p, _| {
        !(p.starts_with(LOG_DIR) && p.as_path() != Path::new(LOG_DIR))
            && p.as_path() != Path::new(DB_FILE)
    });
    State {
        files,
        logs,
        rows: noodle.db_rows(),
        paths: query_strings(noodle, "SELECT * FROM paths ORDER BY id"),
        refs: query_strings(noodle, "SELECT * FROM refs ORDER BY referrer, reference"),
        entries: query_strings(
            noodle,
            "SELECT path_id, hex(rel), kind, size, hex(hash), hex(target) FROM entries ORDER BY path_id, rel",
        ),
        builds: builds(noodle),
        lock: channel.lockfile(),
    }
}

/// What the failure is expected to have recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    /// It failed before any build started (bad recipe, resolution, source): no log, no
    /// `builds` row. `lock_unchanged`: it failed before noodle.lock is written.
    None { lock_unchanged: bool },
    /// A build of the package ran and failed: one new `builds` row and its log.
    Failed,
}

/// Asserts that the failure registered nothing; `kept` are valid paths that may have been added
/// legitimately (fetched sources). Returns the new builds row, if any.
fn assert_nothing_registered(
    noodle: &Noodle,
    channel: &Channel,
    before: &State,
    attempt: Attempt,
    kept: &[String],
    ctx: &str,
) -> Option<BuildRow> {
    let after = state(noodle, channel);
    let kept_names: Vec<PathBuf> = kept
        .iter()
        .map(|p| Path::new("noodle/store").join(p.rsplit('/').next().expect("base")))
        .collect();
    let mut files = after.files.clone();
    files.retain(|p, _| !kept_names.iter().any(|k| p.starts_with(k)));
    let changed: Vec<String> = before
        .files
        .iter()
        .filter(|(p, d)| files.get(*p) != Some(d))
        .map(|(p, d)| format!("- {} {d}", p.display()))
        .chain(
            files
                .iter()
                .filter(|(p, d)| before.files.get(*p) != Some(d))
                .map(|(p, d)| format!("+ {} {d}", p.display())),
        )
        .collect();
    assert!(
        changed.is_empty(),
        "{ctx}: files under the root changed:\n{}",
        changed.join("\n")
    );

    let rows: Vec<String> = after
        .rows
        .iter()
        .filter(|r| !kept.iter().any(|k| r.starts_with(&format!("{k} "))))
        .cloned()
        .collect();
    assert_eq!(rows, before.rows, "{ctx}: db_rows changed");
    if kept.is_empty() {
        assert_eq!(after.paths, before.paths, "{ctx}: the paths table changed");
        assert_eq!(after.refs, before.refs, "{ctx}: the refs table changed");
        assert_eq!(
            after.entries, before.entries,
            "{ctx}: the entries table changed"
        );
    } else {
        // Added rows only: nothing that was there changed, and nothing refers to the kept paths.
        assert_eq!(
            &after.paths[..before.paths.len()],
            &before.paths[..],
            "{ctx}: existing paths rows changed"
        );
        assert_eq!(after.paths.len(), before.paths.len() + kept.len(), "{ctx}");
        assert_eq!(after.refs, before.refs, "{ctx}: the refs table changed");
    }
    noodle.assert_closure_intact();
    noodle.assert_fully_clean(ctx);
    assert_eq!(noodle.tmp_entries(), Vec::<String>::new(), "{ctx}: var/tmp");

    assert_eq!(
        &after.builds[..before.builds.len()],
        &before.builds[..],
        "{ctx}: earlier builds rows changed"
    );
    let new_logs: Vec<&String> = after.logs.difference(&before.logs).collect();
    assert!(
        before.logs.is_subset(&after.logs),
        "{ctx}: a log was removed"
    );
    match attempt {
        Attempt::None { lock_unchanged } => {
            assert_eq!(after.builds, before.builds, "{ctx}: a build was recorded");
            assert!(new_logs.is_empty(), "{ctx}: new logs {new_logs:?}");
            if lock_unchanged {
                assert_eq!(after.lock, before.lock, "{ctx}: noodle.lock changed");
            }
            None
        }
        Attempt::Failed => {
            let added = &after.builds[before.builds.len()..];
            assert_eq!(added.len(), 1, "{ctx}: builds rows added: {added:#?}");
            let row = added[0].clone();
            assert_eq!(row.status, "failed", "{ctx}: {row:#?}");
            assert_eq!(row.kind, "build", "{ctx}: {row:#?}");
            assert!(row.error.is_some(), "{ctx}: no error recorded: {row:#?}");
            assert_eq!(new_logs.len(), 1, "{ctx}: new logs {new_logs:?}");
            assert_eq!(row.log.as_ref(), Some(new_logs[0]), "{ctx}: the row's log");
            // The output path was not left in the store, registered or not.
            assert!(
                noodle.physical(&row.output).symlink_metadata().is_err(),
                "{ctx}: {} exists",
                row.output
            );
            assert!(!noodle.valid_paths().contains(&row.output), "{ctx}");
            Some(row)
        }
    }
}

/// Runs a build that must fail after a build started; checks nothing was registered and
/// returns stderr and the recorded attempt.
fn failed_build(
    noodle: &Noodle,
    channel: &Channel,
    args: &[&str],
    ctx: &str,
) -> (String, BuildRow) {
    let before = state(noodle, channel);
    let (code, err) = build_fails(noodle, channel, args);
    assert_eq!(code, 1, "{ctx}: exit code; stderr: {err}");
    let row = assert_nothing_registered(noodle, channel, &before, Attempt::Failed, &[], ctx)
        .expect("a build row");
    (err, row)
}

/// Runs a build that must fail before any build starts; checks nothing at all was written.
fn refused(
    noodle: &Noodle,
    channel: &Channel,
    args: &[&str],
    lock_unchanged: bool,
    ctx: &str,
) -> String {
    let before = state(noodle, channel);
    let (code, err) = build_fails(noodle, channel, args);
    assert_eq!(code, 1, "{ctx}: exit code; stderr: {err}");
    assert_nothing_registered(
        noodle,
        channel,
        &before,
        Attempt::None { lock_unchanged },
        &[],
        ctx,
    );
    err
}

fn assert_mentions(err: &str, needles: &[&str], ctx: &str) {
    for needle in needles {
        assert!(
            err.contains(needle),
            "{ctx}: the message does not mention {needle:?}:\n{err}"
        );
    }
}

/// Writes `toml` as `pkgs/bad/1.0.0.toml`, builds `bad`, which must be refused with nothing
/// changed, and checks the message mentions each of `needles` (`{file}` stands for the
/// recipe's path).
fn bad_recipe(noodle: &Noodle, channel: &Channel, toml: &str, needles: &[&str], ctx: &str) {
    let file = channel.file("pkgs/bad/1.0.0.toml", toml);
    let err = refused(noodle, channel, &["bad"], true, ctx);
    let needles: Vec<String> = needles
        .iter()
        .map(|n| n.replace("{file}", &file.display().to_string()))
        .collect();
    let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
    assert_mentions(&err, &needles, ctx);
}

// ---------------------------------------------------------------------------------------------
// Recipes.

#[test]
fn malformed_toml_names_file_line_and_column() {
    let (noodle, channel) = setup();
    bad_recipe(
        &noodle,
        &channel,
        "name = \"bad\"\nversion = \"1.0.0\"\n\n[build\nscript = \"true\"\n",
        &["{file}:4:7:", "table header"],
        "malformed",
    );
    // A well-formed file with a value of the wrong type: the key is named too.
    bad_recipe(
        &noodle,
        &channel,
        "name = \"bad\"\nversion = \"1.0.0\"\n\n[build]\nscript = \"true\"\ntimeout = \"ten\"\n",
        &["{file}:6:11: key `build.timeout`", "\"ten\""],
        "wrong type",
    );
}

#[test]
fn missing_version_or_build_is_named() {
    let (noodle, channel) = setup();
    bad_recipe(
        &noodle,
        &channel,
        "name = \"bad\"\n\n[build]\nscript = \"true\"\n",
        &["{file}:1:1", "missing field `version`"],
        "no version",
    );
    bad_recipe(
        &noodle,
        &channel,
        "name = \"bad\"\nversion = \"1.0.0\"\n\n[dependencies]\nbusybox = \"^1.35\"\n",
        &["{file}:1:1", "missing field `build`"],
        "no build",
    );
    bad_recipe(
        &noodle,
        &channel,
        "name = \"bad\"\nversion = \"1.0.0\"\n\n[build]\ntimeout = 3\n",
        &["{file}:4:1: key `build`", "missing field `script`"],
        "no script",
    );
}

#[test]
fn unknown_dependency_names_who_asked() {
    let (noodle, channel) = setup();
    channel.recipe(
        "top",
        "1.0.0",
        "[dependencies]\nmid = \"^1\"\n\n[build]\nscript = \"true\"\n",
    );
    channel.recipe(
        "mid",
        "1.0.0",
        "[dependencies]\nnosuch = \"^1\"\n\n[build]\nscript = \"true\"\n",
    );
    let err = refused(&noodle, &channel, &["top"], true, "unknown");
    assert_mentions(
        &err,
        &[
            "unknown package `nosuch`",
            "asked for by mid@1.0.0 ← top@1.0.0",
            "busybox, mid, top",
        ],
        "unknown",
    );
    // And on the command line.
    let err = refused(&noodle, &channel, &["nosuch"], true, "unknown target");
    assert_mentions(
        &err,
        &["unknown package `nosuch`", "command line"],
        "unknown target",
    );
}

#[test]
fn unsatisfiable_constraint_names_the_chain() {
    let (noodle, channel) = setup();
    channel.recipe(
        "top",
        "1.0.0",
        "[dependencies]\nmid = \"^1\"\n\n[build]\nscript = \"true\"\n",
    );
    channel.recipe(
        "mid",
        "1.0.0",
        "[dependencies]\nlow = \"^1\"\n\n[build]\nscript = \"true\"\n",
    );
    channel.recipe(
        "low",
        "1.0.0",
        "[dependencies]\nleaf = \"^2\"\n\n[build]\nscript = \"true\"\n",
    );
    channel.recipe("leaf", "1.0.0", "[build]\nscript = \"true\"\n");
    channel.recipe("leaf", "1.5.0", "[build]\nscript = \"true\"\n");
    let err = refused(&noodle, &channel, &["top"], true, "unsatisfiable");
    assert_mentions(
        &err,
        &[
            "no version of `leaf` satisfies `^2`",
            "available: 1.0.0, 1.5.0",
            "top@1.0.0 → mid@1.0.0 → low@1.0.0",
        ],
        "unsatisfiable",
    );
}

#[test]
fn dependency_cycle_is_named() {
    let (noodle, channel) = setup();
    channel.recipe(
        "top",
        "1.0.0",
        "[dependencies]\nmid = \"^1\"\n\n[build]\nscript = \"true\"\n",
    );
    channel.recipe(
        "mid",
        "1.0.0",
        "[dependencies]\nlow = \"^1\"\n\n[build]\nscript = \"true\"\n",
    );
    channel.recipe(
        "low",
        "1.0.0",
        "[dependencies]\nmid = \"^1\"\n\n[build]\nscript = \"true\"\n",
    );
    let err = refused(&noodle, &channel, &["top"], true, "cycle");
    assert_mentions(
        &err,
        &["dependency cycle: mid@1.0.0 → low@1.0.0 → mid@1.0.0"],
        "cycle",
    );
}

// ---------------------------------------------------------------------------------------------
// Sources.

const ZERO_PIN: &str =
    "data@1#blake3=0000000000000000000000000000000000000000000000000000000000000000";

fn source_recipe(channel: &Channel, location: &str, pin: Option<&str>) -> PathBuf {
    let pin = pin.map(|p| format!("pin = \"{p}\"\n")).unwrap_or_default();
    channel.recipe(
        "src",
        "1.0.0",
        &format!(
            "[dependencies]\nbusybox = \"^1.35\"\n\n[sources.data]\n{location}\n{pin}\n[build]\nscript = 'mkdir $out; cp $data $out/data'\n"
        ),
    )
}

#[test]
fn source_hash_mismatch_names_expected_actual_and_recipe() {
    let (noodle, channel) = setup();
    channel.file("pkgs/src/files/data", "the real contents\n");
    let recipe = source_recipe(&channel, "path = \"files/data\"", Some(ZERO_PIN));
    let err = refused(&noodle, &channel, &["src"], false, "mismatch");
    assert_mentions(
        &err,
        &[
            &format!("source `data` of {}", recipe.display()),
            "does not match its pin",
            "expected blake3:0000000000000000000000000000000000000000000000000000000000000000",
            "put the new hash in the recipe's `pin`",
        ],
        "mismatch",
    );
    let actual = err
        .split("got blake3:")
        .nth(1)
        .and_then(|rest| rest.get(..64))
        .unwrap_or_else(|| panic!("no actual hash in: {err}"))
        .to_owned();
    assert!(actual.bytes().all(|b| b.is_ascii_hexdigit()), "{err}");
    assert_ne!(actual, "0".repeat(64), "{err}");
    // The hash reported is the real one: pinning it makes the build work.
    source_recipe(
        &channel,
        "path = \"files/data\"",
        Some(&format!("data@1#blake3={actual}")),
    );
    let out = noodle.build_ok(&channel, &["src"]);
    let data = std::fs::read_to_string(noodle.physical(&out[0]).join("data")).expect("read");
    assert_eq!(data, "the real contents\n");
}

#[test]
fn missing_source_path_is_named() {
    let (noodle, channel) = setup();
    let recipe = source_recipe(&channel, "path = \"files/nope\"", None);
    let missing = channel.dir.join("pkgs/src/files/nope");
    let err = refused(&noodle, &channel, &["src"], true, "missing, unpinned");
    assert_mentions(
        &err,
        &[
            &format!("source `data` of {}", recipe.display()),
            &format!("{} does not exist", missing.display()),
        ],
        "missing, unpinned",
    );
    // Pinned: it is fetched later, after noodle.lock is written, and fails the same way.
    source_recipe(&channel, "path = \"files/nope\"", Some(ZERO_PIN));
    let err = refused(&noodle, &channel, &["src"], false, "missing, pinned");
    assert_mentions(
        &err,
        &[
            &format!("source `data` of {}", recipe.display()),
            &format!("{} does not exist", missing.display()),
        ],
        "missing, pinned",
    );
}

#[test]
fn http_source_with_nothing_listening_fails() {
    let (noodle, channel) = setup();
    // A port that was just free: nothing listens there any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("http://127.0.0.1:{port}/data.txt");
    let recipe = source_recipe(&channel, &format!("url = \"{url}\""), None);
    let err = refused(&noodle, &channel, &["src"], true, "refused");
    assert_mentions(
        &err,
        &[
            &format!("source `data` of {}", recipe.display()),
            &format!("fetching {url} failed"),
            "onnect",
        ],
        "refused",
    );
}

#[test]
fn http_source_returning_404_is_missing() {
    let (noodle, channel) = setup();
    let (port, _) = common::serve_http("404 Not Found", b"not found\n");
    let url = format!("http://127.0.0.1:{port}/data.txt");
    let recipe = source_recipe(&channel, &format!("url = \"{url}\""), None);
    let err = refused(&noodle, &channel, &["src"], true, "404, unpinned");
    assert_mentions(
        &err,
        &[
            &format!("source `data` of {}", recipe.display()),
            &format!("{url} (HTTP 404) does not exist"),
        ],
        "404, unpinned",
    );
    source_recipe(&channel, &format!("url = \"{url}\""), Some(ZERO_PIN));
    let err = refused(&noodle, &channel, &["src"], false, "404, pinned");
    assert_mentions(
        &err,
        &[
            &format!("source `data` of {}", recipe.display()),
            &format!("{url} (HTTP 404) does not exist"),
        ],
        "404, pinned",
    );
}

/// Decision: a source fetched and verified before the build failed stays valid (it is a
/// fixed-output path named by its pin; the next attempt reuses it), unreferenced, so `store gc`
/// removes it. Nothing else is registered.
#[test]
fn source_fetched_before_a_failed_build_stays_valid_and_collectable() {
    let (noodle, channel) = setup();
    channel.file("pkgs/src/files/data", "some data\n");
    channel.recipe(
        "src",
        "1.0.0",
        "[dependencies]\nbusybox = \"^1.35\"\n\n[sources.data]\npath = \"files/data\"\n\n[build]\nscript = 'cat $data; exit 4'\n",
    );
    let before = state(&noodle, &channel);
    let valid_before = noodle.valid_paths();
    let (code, err) = build_fails(&noodle, &channel, &["src"]);
    assert_eq!(code, 1, "{err}");
    assert_mentions(
        &err,
        &[
            "building src@1.0.0 failed",
            "exited with code 4",
            "| some data",
        ],
        "src",
    );
    let added: Vec<String> = noodle
        .valid_paths()
        .difference(&valid_before)
        .cloned()
        .collect();
    assert_eq!(added.len(), 1, "added: {added:?}");
    assert!(added[0].ends_with("-src-data-1.0.0"), "{added:?}");
    assert_eq!(noodle.references(&added[0]), Vec::<String>::new());
    assert_nothing_registered(&noodle, &channel, &before, Attempt::Failed, &added, "src");
    noodle.ok(&["store", "gc"]);
    assert!(
        !noodle.valid_paths().contains(&added[0]),
        "gc kept the source"
    );
    noodle.assert_fully_clean("after gc");
}

// ---------------------------------------------------------------------------------------------
// Builders that fail.

#[test]
fn builder_exiting_non_zero_shows_code_and_log_tail() {
    let (noodle, channel) = setup();
    channel.script("fail", "1.0.0", "echo first-line\necho marker-line\nexit 3");
    let (err, row) = failed_build(&noodle, &channel, &["fail"], "exit 3");
    let log = noodle
        .root()
        .join(LOG_DIR)
        .join(row.log.as_ref().expect("log"));
    assert_mentions(
        &err,
        &[
            "building fail@1.0.0 failed",
            "the builder exited with code 3",
            "  | first-line\n  | marker-line",
            &format!("full log: {}", log.display()),
        ],
        "exit 3",
    );
    assert!(
        row.error
            .as_deref()
            .is_some_and(|e| e.contains("exited with code 3")),
        "{row:#?}"
    );
    // The kept log is readable with `noodle log`.
    let text = noodle.ok(&channel.args(&["log", "fail"]));
    assert_eq!(text, "first-line\nmarker-line\n");
}

#[test]
fn builder_producing_no_output_fails() {
    let (noodle, channel) = setup();
    channel.script("noout", "1.0.0", "echo did-nothing");
    let (err, row) = failed_build(&noodle, &channel, &["noout"], "no output");
    assert_mentions(
        &err,
        &[
            "building noout@1.0.0 failed",
            "produced no output",
            &row.output,
            "| did-nothing",
        ],
        "no output",
    );
}

/// A refused output fails its build like any other failure does: the message names the package
/// as the user knows it (`name@version`), not only the output path deep in a working directory
/// that is deleted by the time the message is read.
fn assert_names_package(err: &str, label: &str, ctx: &str) {
    assert!(
        err.contains(&format!("building {label} failed")),
        "{ctx}: the message does not say which package failed ({label}):\n{err}"
    );
}

#[test]
fn output_with_a_setuid_file_is_refused() {
    let (noodle, channel) = setup();
    channel.script(
        "suid",
        "1.0.0",
        "mkdir -p $out/bin\necho '#!/bin/sh' > $out/bin/tool\nchmod 4755 $out/bin/tool",
    );
    let (suid_err, _) = failed_build(&noodle, &channel, &["suid"], "setuid");
    assert_mentions(&suid_err, &["suid-1.0.0", "'bin/tool'", "setuid"], "setuid");

    channel.script(
        "sgid",
        "1.0.0",
        "mkdir -p $out\necho x > $out/f\nchmod g+s $out/f",
    );
    let (sgid_err, _) = failed_build(&noodle, &channel, &["sgid"], "setgid");
    assert_mentions(&sgid_err, &["sgid-1.0.0", "'f'", "setgid"], "setgid");

    assert_names_package(&suid_err, "suid@1.0.0", "setuid");
    assert_names_package(&sgid_err, "sgid@1.0.0", "setgid");
}

#[test]
fn output_with_a_fifo_is_refused() {
    let (noodle, channel) = setup();
    channel.script("fifo", "1.0.0", "mkdir -p $out/run\nmkfifo $out/run/pipe");
    let (err, _) = failed_build(&noodle, &channel, &["fifo"], "fifo");
    assert_mentions(&err, &["fifo-1.0.0", "'run/pipe'", "is a fifo"], "fifo");
    assert_names_package(&err, "fifo@1.0.0", "fifo");
}

#[test]
fn output_with_a_device_fails() {
    let (noodle, channel) = setup();
    // mknod is not allowed in the sandbox's user namespace (the build fails there); were it
    // allowed, the output check would refuse the device. Either way nothing is registered.
    channel.script("dev", "1.0.0", "mkdir -p $out\nmknod $out/null c 1 3");
    let (err, _) = failed_build(&noodle, &channel, &["dev"], "device");
    assert!(
        err.contains("is a device file")
            || (err.contains("exited with code") && err.contains("mknod")),
        "device: {err}"
    );
}

#[test]
fn build_timeout_kills_everything() {
    let (noodle, channel) = setup();
    channel.script("slow", "1.0.0", "echo started\nsleep 30\nmkdir $out");
    let (err, _) = failed_build(&noodle, &channel, &["--timeout", "1", "slow"], "timeout");
    assert_mentions(
        &err,
        &[
            "building slow@1.0.0 failed",
            "timeout of 1 s",
            "killed",
            "| started",
        ],
        "timeout",
    );
    assert_eq!(
        host_processes(&["sleep", "30"]),
        Vec::<String>::new(),
        "sleep 30 survived"
    );
}

#[test]
fn max_silent_kills_a_quiet_build() {
    let (noodle, channel) = setup();
    channel.script("quiet", "1.0.0", "echo started\nsleep 29\nmkdir $out");
    let (err, _) = failed_build(
        &noodle,
        &channel,
        &["--max-silent", "1", "quiet"],
        "max-silent",
    );
    assert_mentions(
        &err,
        &[
            "building quiet@1.0.0 failed",
            "printed nothing for 1 s",
            "max-silent",
            "| started",
        ],
        "max-silent",
    );
    assert_eq!(
        host_processes(&["sleep", "29"]),
        Vec::<String>::new(),
        "sleep 29 survived"
    );
}

#[test]
fn writing_to_host_directories_fails() {
    let (noodle, channel) = setup();
    let escape = "/etc/noodle-build-bad-input-escape";
    assert!(
        !Path::new(escape).exists(),
        "{escape} exists before the test"
    );
    channel.script("etc", "1.0.0", &format!("mkdir $out\ntouch {escape}"));
    let (err, _) = failed_build(&noodle, &channel, &["etc"], "/etc");
    assert_mentions(
        &err,
        &["building etc@1.0.0 failed", "exited with code 1", escape],
        "/etc",
    );
    assert!(
        !Path::new(escape).exists(),
        "the build wrote {escape} on the host"
    );
}

#[test]
fn writing_a_stray_store_entry_fails() {
    let (noodle, channel) = setup();
    channel.script("stray", "1.0.0", "mkdir $out\necho > /noodle/store/stray");
    let (err, _) = failed_build(&noodle, &channel, &["stray"], "stray");
    assert_mentions(
        &err,
        &[
            "building stray@1.0.0 failed",
            "wrote outside /build and $out",
            "stray",
        ],
        "stray",
    );
    assert!(!noodle.store_entries().contains(&"stray".to_owned()));
}

#[test]
fn a_daemon_left_running_fails_the_build_and_is_killed() {
    let (noodle, channel) = setup();
    channel.script(
        "daemon",
        "1.0.0",
        // Waits until both have exec'd sleep, so that the report names them (a process caught
        // between fork and exec is still `sh`).
        "sleep 100 &\n\
         p=$!\n\
         ( setsid sleep 101 & echo $! > /build/daemon.pid )\n\
         d=$(cat /build/daemon.pid)\n\
         for pid in $p $d; do\n\
           until tr '\\0' ' ' < /proc/$pid/cmdline | grep -q '^sleep 10'; do :; done\n\
         done\n\
         mkdir $out",
    );
    let (err, _) = failed_build(&noodle, &channel, &["daemon"], "daemon");
    assert_mentions(
        &err,
        &[
            "building daemon@1.0.0 failed",
            "left processes running",
            "sleep 100",
            "sleep 101",
        ],
        "daemon",
    );
    assert_eq!(
        host_processes(&["sleep", "100"]),
        Vec::<String>::new(),
        "sleep 100 survived"
    );
    assert_eq!(
        host_processes(&["sleep", "101"]),
        Vec::<String>::new(),
        "sleep 101 survived"
    );
}

// ---------------------------------------------------------------------------------------------
// --locked.

#[test]
fn locked_without_a_lockfile_writes_nothing() {
    // Not even busybox is built: a fresh store, a channel with no noodle.lock.
    let noodle = Noodle::new();
    let channel = Channel::new(&noodle);
    let lock_path = channel.dir.join("noodle.lock");
    let before = noodle.snapshot();
    let rows = noodle.db_rows();
    let (code, err) = noodle.fails(&channel.args(&["build", "--locked", "busybox"]));
    assert_eq!(code, 1, "{err}");
    assert_mentions(
        &err,
        &["source `busybox`", "--locked", "noodle lock"],
        "locked",
    );
    assert!(!lock_path.exists(), "--locked wrote noodle.lock");
    assert_eq!(noodle.snapshot(), before, "--locked changed the store");
    assert_eq!(noodle.db_rows(), rows);
    assert_eq!(builds(&noodle), Vec::new());
}

#[test]
fn locked_with_an_outdated_lockfile_writes_nothing() {
    let (noodle, channel) = setup();
    channel.script("pkg", "1.0.0", "mkdir $out");
    let err = refused(
        &noodle,
        &channel,
        &["--locked", "pkg"],
        true,
        "outdated lock",
    );
    assert_mentions(
        &err,
        &["noodle.lock is out of date", "pkg@1.0.0", "noodle lock"],
        "outdated lock",
    );
    // Without the lock file at all, busybox's source cannot be pinned either.
    std::fs::remove_file(channel.dir.join("noodle.lock")).expect("rm noodle.lock");
    let err = refused(&noodle, &channel, &["--locked", "pkg"], true, "no lock");
    assert_mentions(&err, &["has no pin", "--locked"], "no lock");
    assert!(!channel.dir.join("noodle.lock").exists());
}
