//! Crash safety of fetching from a binary cache and of repairing from one (DESIGN.md §5, §10):
//! `copy --from` is killed at every `import:*` failure point and `store verify --repair` at
//! every `repair:*` one (from `noodle_store::failpoint::ALL`, so a new point is covered as
//! soon as it is listed). Then:
//! - the store is consistent: `store verify --check-contents` reports nothing but leftovers of
//!   the crash (and, for repair, the damage not repaired yet); every reference of a valid path
//!   is valid; a valid path is intact;
//! - `store gc` or `store verify --repair` clean the leftovers;
//! - the command run again succeeds, and the closure is complete and intact.

mod common;

use std::path::PathBuf;

use common::cache::{file_url, KeyPair, Pair};
use common::{bad, regular_files, Noodle};
use noodle_store::failpoint;

/// What happens between the crash and the final checks.
#[derive(Debug, Clone, Copy)]
enum Recovery {
    /// `store gc` first, then the command again.
    Gc,
    /// `store verify --repair` first (for a repair crash: the command again).
    Repair,
    /// The command again straight away, then `store gc`.
    RerunFirst,
}

const RECOVERIES: [Recovery; 3] = [Recovery::Gc, Recovery::Repair, Recovery::RerunFirst];

/// What the crashed repair had to repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Damage {
    /// A file of lib changed (its tree is swapped with a good copy).
    Damaged,
    /// app's files gone (a good copy is moved into place).
    Missing,
}

/// A source store holding lib and app (app → lib), pushed signed into a file:// cache.
struct Template {
    source: Noodle,
    pair: Pair,
    key: KeyPair,
    cache: String,
}

fn template() -> Template {
    let source = Noodle::new();
    let pair = source.add_pair("crash");
    let key = source.generate_key("crash-1");
    source.write_config(&format!(
        "secret-key-files = [\"{}\"]\n",
        key.secret_file.display()
    ));
    let cache = file_url(&source.cache_dir());
    source.ok(&["copy", "--to", &cache, &pair.app]);
    Template {
        source,
        pair,
        key,
        cache,
    }
}

/// A fresh store that trusts the cache (its substituter), with a GC root for app in place
/// already (dangling until app is valid), so `store gc` keeps what was fetched.
fn client(t: &Template) -> Noodle {
    let noodle = Noodle::new();
    noodle.write_config(&format!(
        "substituters = [\"{}\"]\ntrusted-public-keys = [\"{}\"]\n",
        t.cache, t.key.public
    ));
    std::os::unix::fs::symlink(&t.pair.app, noodle.root().join("noodle/var/gcroots/app"))
        .expect("gc root for app");
    noodle
}

fn points(family: &str) -> Vec<&'static str> {
    let points: Vec<&str> = failpoint::ALL
        .iter()
        .copied()
        .filter(|p| p.split(':').next() == Some(family))
        .collect();
    assert!(!points.is_empty(), "no failure points for {family}");
    points
}

/// Holds at any time: only the `allowed` problems, invariant 1, valid paths intact (same
/// files as the source's).
fn assert_consistent(t: &Template, noodle: &Noodle, allowed: &[&str], ctx: &str) {
    let (_, problems) = noodle.verify_report(&["--check-contents"]);
    let wrong = bad(&problems, allowed);
    assert!(
        wrong.is_empty(),
        "{ctx}: the store is inconsistent: {wrong:#?}"
    );
    noodle.assert_closure_intact();
    let valid = noodle.valid_paths();
    for path in [&t.pair.lib, &t.pair.app] {
        let reported = problems.iter().any(|p| &p.path == path);
        if valid.contains(path) && !reported {
            assert_eq!(
                regular_files(&noodle.physical(path)),
                regular_files(&t.source.physical(path)),
                "{ctx}: files of {path}"
            );
        }
    }
}

/// The end state: lib and app valid, intact, with their references; nothing wrong anywhere.
fn assert_done(t: &Template, noodle: &Noodle, ctx: &str) {
    noodle.assert_fully_clean(ctx);
    noodle.assert_closure_intact();
    assert_eq!(noodle.tmp_entries(), Vec::<String>::new(), "{ctx}: var/tmp");
    let valid = noodle.valid_paths();
    assert!(t.pair.both().is_subset(&valid), "{ctx}: {valid:?}");
    assert_eq!(
        noodle.references(&t.pair.app),
        vec![t.pair.lib.clone()],
        "{ctx}"
    );
    for path in [&t.pair.lib, &t.pair.app] {
        assert_eq!(
            regular_files(&noodle.physical(path)),
            regular_files(&t.source.physical(path)),
            "{ctx}: files of {path}"
        );
        let info = noodle.json(&["store", "path-info", path]);
        let want = t.source.json(&["store", "path-info", path]);
        assert_eq!(info[0]["nar_hash"], want[0]["nar_hash"], "{ctx}: {path}");
    }
}

// ---------------------------------------------------------------------------------------------
// copy --from, killed while importing.

fn fetch_args(t: &Template) -> Vec<String> {
    ["copy", "--from", &t.cache, &t.pair.app]
        .map(String::from)
        .to_vec()
}

fn refetch(t: &Template, noodle: &Noodle, ctx: &str) {
    let args = fetch_args(t);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = noodle.run(&args);
    assert!(
        out.status.success(),
        "{ctx}: fetching again failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn crash_fetch(t: &Template, point: &str, recovery: Recovery) {
    let ctx = format!("{point} ({recovery:?})");
    let noodle = client(t);
    let args = fetch_args(t);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = noodle.run_env(&args, &[(failpoint::ENV, point)]);
    common::assert_aborted_at(&out, point, &ctx);

    let allowed = ["unregistered", "stale-temp"];
    assert_consistent(t, &noodle, &allowed, &format!("{ctx}, after the crash"));
    // lib is committed first (app refers to it): the crash came during lib's import.
    let valid = noodle.valid_paths();
    assert!(
        !valid.contains(&t.pair.app),
        "{ctx}: app registered before lib"
    );
    if point.ends_with(":after-register") {
        assert!(
            valid.contains(&t.pair.lib),
            "{ctx}: a committed registration was lost"
        );
    } else {
        assert!(
            valid.is_empty(),
            "{ctx}: registered before the registration: {valid:?}"
        );
    }

    match recovery {
        Recovery::Gc => {
            noodle.assert_clean_after_gc(&ctx);
            refetch(t, &noodle, &ctx);
        }
        Recovery::Repair => {
            let (code, problems) = noodle.verify_report(&["--repair"]);
            assert_eq!(
                code, 0,
                "{ctx}: verify --repair left problems: {problems:#?}"
            );
            noodle.assert_fully_clean(&format!("{ctx}, after repair"));
            assert_eq!(noodle.tmp_entries(), Vec::<String>::new(), "{ctx}: var/tmp");
            refetch(t, &noodle, &ctx);
        }
        Recovery::RerunFirst => {
            refetch(t, &noodle, &ctx);
            assert_consistent(
                t,
                &noodle,
                &allowed,
                &format!("{ctx}, after fetching again"),
            );
            noodle.ok(&["store", "gc"]);
        }
    }
    assert_done(t, &noodle, &format!("{ctx}, at the end"));
    // And a further fetch has nothing to do.
    let before = noodle.snapshot();
    refetch(t, &noodle, &format!("{ctx}, once more"));
    assert_eq!(
        noodle.snapshot(),
        before,
        "{ctx}: a no-op fetch changed the store"
    );
}

#[test]
fn crash_during_fetch() {
    let points = points("import");
    for wanted in [
        "import:before-rename",
        "import:after-rename",
        "import:after-register",
    ] {
        assert!(points.contains(&wanted), "{wanted} is not a failure point");
    }
    let template = template();
    std::thread::scope(|scope| {
        for point in &points {
            for recovery in RECOVERIES {
                let template = &template;
                scope.spawn(move || crash_fetch(template, point, recovery));
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// store verify --repair, killed while swapping in a good copy.

/// A client holding lib and app (fetched), then damaged as `damage` says.
fn damaged_client(t: &Template, damage: Damage) -> (Noodle, PathBuf) {
    let noodle = client(t);
    noodle.ok(&["copy", "--from", &t.cache, &t.pair.app]);
    noodle.assert_fully_clean("the client before the damage");
    let target = match damage {
        Damage::Damaged => {
            let file = noodle.physical(&t.pair.lib).join("share/doc/README");
            // Same mode and time: only the contents tell.
            common::tamper(&file, b"bit rot\n", true);
            file
        }
        Damage::Missing => {
            let dir = noodle.physical(&t.pair.app);
            let status = std::process::Command::new("chmod")
                .args(["-R", "u+w"])
                .arg(&dir)
                .status()
                .expect("chmod");
            assert!(status.success());
            std::fs::remove_dir_all(&dir).expect("rm -rf app");
            dir
        }
    };
    (noodle, target)
}

fn damaged_path(t: &Template, damage: Damage) -> (&str, &'static str) {
    match damage {
        Damage::Damaged => (t.pair.lib.as_str(), "damaged"),
        Damage::Missing => (t.pair.app.as_str(), "missing"),
    }
}

fn crash_repair(t: &Template, point: &str, damage: Damage, recovery: Recovery) {
    let ctx = format!("{point} {damage:?} ({recovery:?})");
    let (noodle, _) = damaged_client(t, damage);
    let (path, kind) = damaged_path(t, damage);
    let (code, problems) = noodle.verify_report(&["--check-contents"]);
    assert!(
        code != 0 && problems.iter().any(|p| p.path == path && p.kind == kind),
        "{ctx}: the damage is not seen: {problems:#?}"
    );

    let repair = ["store", "verify", "--check-contents", "--repair"];
    let out = noodle.run_env(&repair, &[(failpoint::ENV, point)]);
    common::assert_aborted_at(&out, point, &ctx);

    // The swap happened and was made durable: the good copy is in place; the damaged tree
    // (or nothing) is left in var/tmp.
    let allowed = ["unregistered", "stale-temp"];
    assert_consistent(t, &noodle, &allowed, &format!("{ctx}, after the crash"));
    assert!(
        t.pair.both().is_subset(&noodle.valid_paths()),
        "{ctx}: a repair unregistered a path"
    );
    assert_eq!(
        regular_files(&noodle.physical(path)),
        regular_files(&t.source.physical(path)),
        "{ctx}: the good copy of {path} is not in place"
    );

    match recovery {
        Recovery::Gc => {
            noodle.assert_clean_after_gc(&ctx);
        }
        Recovery::Repair | Recovery::RerunFirst => {
            let (code, problems) = noodle.verify_report(&["--check-contents", "--repair"]);
            assert_eq!(
                code, 0,
                "{ctx}: verify --repair left problems: {problems:#?}"
            );
        }
    }
    assert_done(t, &noodle, &format!("{ctx}, at the end"));
    let (code, problems) = noodle.verify_report(&["--check-contents", "--repair"]);
    assert!(
        code == 0 && problems.is_empty(),
        "{ctx}: a repair of a clean store found {problems:#?}"
    );
}

#[test]
fn crash_during_repair() {
    let points = points("repair");
    assert!(
        points.contains(&"repair:after-swap"),
        "repair:after-swap is not a failure point"
    );
    let template = template();
    std::thread::scope(|scope| {
        for point in &points {
            for damage in [Damage::Damaged, Damage::Missing] {
                for recovery in [Recovery::Gc, Recovery::Repair] {
                    let template = &template;
                    scope.spawn(move || crash_repair(template, point, damage, recovery));
                }
            }
        }
    });
}
