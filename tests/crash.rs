//! Crash safety (DESIGN.md §5, invariants 1, 2 and 5): the process is killed at every named
//! failure point of add, delete, gc and optimise (`noodle_store::failpoint::ALL`, so a new
//! point is covered as soon as it is listed), and the store must stay consistent, be cleaned by
//! the next `store gc` or `store verify --repair`, and let the operation simply be run again.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::{bad, make_tree, regular_files, Noodle};
use noodle_store::failpoint;

/// The operations the failure points belong to, by the prefix of their names.
const FAMILIES: &[&str] = &["add", "delete", "gc", "optimise"];
/// Families whose points are driven by other test files.
// tests/build_crash.rs, tests/profile_crash.rs, tests/activation_crash.rs, tests/distribution_crash.rs
const TESTED_ELSEWHERE: &[&str] = &[
    "build",
    "add-staged",
    "profile",
    "activate",
    "import",
    "repair",
];

/// What happens between the crash and the final checks.
#[derive(Debug, Clone, Copy)]
enum Recovery {
    /// `store gc` first, then the operation again.
    Gc,
    /// `store verify --repair` first, then the operation again.
    Repair,
    /// The operation again straight away, then `store gc`.
    RerunFirst,
}

/// A store prepared for one family, cloned for each (point, recovery).
struct Template {
    noodle: Noodle,
    /// top → app → lib, rooted by var/gcroots/top: must never be lost.
    kept: Vec<String>,
    /// g3, g2 (→ g3, lib), g1 (→ g2), unrooted, in the order they were added, with their trees.
    garbage: Vec<(PathBuf, String)>,
    /// add: the tree the crashed add adds, and the path it gets (learnt by adding and deleting).
    new_tree: PathBuf,
    new_path: String,
    /// optimise: two paths with identical files and a single-file path equal to one of them.
    opt: Vec<String>,
    /// The operation's command line.
    args: Vec<String>,
}

fn add(noodle: &Noodle, tree: &Path, opts: &[&str]) -> String {
    let mut args = vec!["store", "add", "--scan-references"];
    args.extend_from_slice(opts);
    args.push(tree.to_str().expect("utf-8"));
    noodle.ok(&args).trim().to_owned()
}

/// `make_tree` plus a file naming `refs`, so that `--scan-references` records them.
fn ref_tree(dir: &Path, seed: &str, refs: &[&str]) {
    make_tree(dir, seed);
    std::fs::write(
        dir.join("deps"),
        format!("{seed} needs\n{}\n", refs.join("\n")),
    )
    .expect("w");
}

fn template(family: &str) -> Template {
    let noodle = Noodle::new();
    let tree = |name: &str, refs: &[&str]| {
        let dir = noodle.scratch(name);
        ref_tree(&dir, name, refs);
        dir
    };
    let lib = add(&noodle, &tree("lib", &[]), &[]);
    let app = add(&noodle, &tree("app", &[&lib]), &[]);
    let top = add(&noodle, &tree("top", &[&app]), &["--gc-root", "top"]);
    let mut garbage = Vec::new();
    let g3_tree = tree("g3", &[]);
    let g3 = add(&noodle, &g3_tree, &[]);
    garbage.push((g3_tree, g3.clone()));
    let g2_tree = tree("g2", &[&g3, &lib]);
    let g2 = add(&noodle, &g2_tree, &[]);
    garbage.push((g2_tree, g2.clone()));
    let g1_tree = tree("g1", &[&g2]);
    let g1 = add(&noodle, &g1_tree, &[]);
    garbage.push((g1_tree, g1.clone()));
    assert_eq!(noodle.references(&g2), {
        let mut r = vec![g3.clone(), lib.clone()];
        r.sort();
        r
    });

    let new_tree = tree("new", &[&app]);
    let mut new_path = String::new();
    let mut opt = Vec::new();
    let args: Vec<String> = match family {
        "add" => {
            new_path = add(&noodle, &new_tree, &[]);
            noodle.ok(&["store", "delete", &new_path]);
            [
                "--json",
                "store",
                "add",
                "--scan-references",
                "--gc-root",
                "new",
                new_tree.to_str().expect("utf-8"),
            ]
            .map(String::from)
            .to_vec()
        }
        "delete" => vec!["store".into(), "delete".into(), g1.clone(), g2.clone()],
        "gc" => {
            // Just enough to free g1 and g2 (collected referrers first), not g3.
            let info = noodle.json(&["store", "path-info", &g1]);
            let g1_size = info[0]["nar_size"].as_u64().expect("nar_size");
            vec![
                "store".into(),
                "gc".into(),
                "--max-freed".into(),
                (g1_size + 1).to_string(),
            ]
        }
        "optimise" => {
            let one = tree("opt", &[]);
            std::fs::write(one.join("big"), "0123456789abcdef".repeat(4096)).expect("w");
            std::fs::create_dir(one.join("more")).expect("mkdir");
            std::fs::write(one.join("more/other"), "other\n".repeat(300)).expect("w");
            opt.push(add(&noodle, &one, &["--gc-root", "opt1"]));
            opt.push(add(
                &noodle,
                &one,
                &["--name", "opt-copy", "--gc-root", "opt2"],
            ));
            // A path that is a single file, identical to one inside the others: linking it
            // happens in the store directory itself.
            opt.push(add(
                &noodle,
                &one.join("big"),
                &["--name", "big-file", "--gc-root", "opt3"],
            ));
            vec!["store".into(), "optimise".into()]
        }
        other => panic!("no crash scenario for failure points of '{other}'"),
    };
    noodle.assert_fully_clean("template");
    Template {
        noodle,
        kept: vec![top, app, lib],
        garbage,
        new_tree,
        new_path,
        opt,
        args,
    }
}

/// A copy of the template's store, for one crash.
fn clone_store(template: &Template) -> Noodle {
    let noodle = Noodle::uninitialised();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(template.noodle.root())
        .arg(noodle.root())
        .status()
        .expect("cp");
    assert!(status.success(), "cp -a of the template store failed");
    noodle
}

fn args_of(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn store_dir_mode(noodle: &Noodle) -> u32 {
    std::fs::metadata(noodle.physical_store())
        .expect("stat store")
        .permissions()
        .mode()
        & 0o7777
}

/// Checks that hold at any time, right after a crash included: every valid path is there with
/// the right contents, every reference of a valid path is valid, the rooted closure is valid.
fn assert_consistent(t: &Template, noodle: &Noodle, family: &str, ctx: &str) {
    // Leftovers of the crash are allowed; a valid path that lost or changed files is not. Only
    // optimise touches valid paths at all (a directory made writable for a moment).
    let mut allowed = vec!["unregistered", "stale-temp"];
    if family == "optimise" {
        allowed.push("metadata");
    }
    let (_, problems) = noodle.verify_report(&["--check-contents"]);
    let wrong = bad(&problems, &allowed);
    assert!(
        wrong.is_empty(),
        "{ctx}: the store is inconsistent: {wrong:#?}"
    );
    noodle.assert_closure_intact();
    let valid = noodle.valid_paths();
    for path in &t.kept {
        assert!(valid.contains(path), "{ctx}: rooted path {path} was lost");
    }
    for path in &t.opt {
        assert!(valid.contains(path), "{ctx}: rooted path {path} was lost");
    }
}

fn assert_clean(noodle: &Noodle, ctx: &str) {
    noodle.assert_fully_clean(ctx);
    noodle.assert_closure_intact();
    assert_eq!(noodle.tmp_entries(), Vec::<String>::new(), "{ctx}: var/tmp");
}

/// Runs the operation again, without a failure point; it must succeed.
fn rerun(t: &Template, noodle: &Noodle, family: &str, ctx: &str) {
    let valid = noodle.valid_paths();
    match family {
        "add" => {
            let text = noodle.ok(&args_of(&t.args));
            let added: serde_json::Value = serde_json::from_str(&text).expect("json");
            assert_eq!(added[0]["path"], t.new_path.as_str(), "{ctx}: re-add");
            assert_eq!(
                added[0]["added"].as_bool(),
                Some(!valid.contains(&t.new_path)),
                "{ctx}: re-add wrote a path that was valid, or did not write one that was not"
            );
        }
        "delete" => {
            let out = noodle.run(&args_of(&t.args));
            let (g2, g1) = (&t.garbage[1].1, &t.garbage[2].1);
            if valid.contains(g1) || valid.contains(g2) {
                assert!(out.status.success(), "{ctx}: delete again failed");
            } else {
                // The crash came after the deletion committed: they are gone, and saying so
                // is the right answer (a clean failure, not a confused one).
                let err = String::from_utf8_lossy(&out.stderr);
                assert_eq!(out.status.code(), Some(1), "{ctx}: delete again: {err}");
                assert!(err.contains("is not a valid path"), "{ctx}: {err}");
            }
            // The deleted trees can be added again (leftovers in the way or not) and give the
            // same paths, which can then be deleted completely.
            for (tree, path) in &t.garbage {
                assert_eq!(&add(noodle, tree, &[]), path, "{ctx}: re-adding {tree:?}");
            }
            let (_, problems) = noodle.verify_report(&["--check-contents"]);
            let wrong = bad(&problems, &["unregistered", "stale-temp"]);
            assert!(wrong.is_empty(), "{ctx}: after re-adding: {wrong:#?}");
            let all: Vec<&str> = t.garbage.iter().map(|(_, p)| p.as_str()).collect();
            let mut args = vec!["store", "delete"];
            args.extend(all);
            noodle.ok(&args);
        }
        "gc" | "optimise" => {
            noodle.ok(&args_of(&t.args));
        }
        other => panic!("no re-run for '{other}'"),
    }
}

/// What must hold at the very end, per family.
fn assert_outcome(t: &Template, noodle: &Noodle, family: &str, ctx: &str) {
    match family {
        "add" => {
            let valid = noodle.valid_paths();
            assert!(valid.contains(&t.new_path), "{ctx}: the added path");
            let root = noodle.root().join("noodle/var/gcroots/new");
            assert_eq!(
                std::fs::read_link(&root).expect("gc root of the add"),
                PathBuf::from(&t.new_path)
            );
            let files = regular_files(&noodle.physical(&t.new_path));
            assert_eq!(files, regular_files(&t.new_tree), "{ctx}: contents");
        }
        "delete" | "gc" => {
            noodle.ok(&["store", "gc"]);
            let valid = noodle.valid_paths();
            for (_, path) in &t.garbage {
                assert!(!valid.contains(path), "{ctx}: {path} survived");
                assert!(
                    noodle.physical(path).symlink_metadata().is_err(),
                    "{ctx}: files of {path} survived"
                );
            }
        }
        "optimise" => {
            // Identical files share one inode; different ones do not.
            let inode = |path: &str, rel: &str| {
                let mut p = noodle.physical(path);
                if !rel.is_empty() {
                    p.push(rel);
                }
                std::fs::metadata(p).expect("stat").ino()
            };
            let (one, two, single) = (&t.opt[0], &t.opt[1], &t.opt[2]);
            for rel in ["big", "more/other", "bin/tool", "share/doc/README"] {
                assert_eq!(inode(one, rel), inode(two, rel), "{ctx}: {rel} not linked");
            }
            assert_eq!(inode(one, "big"), inode(single, ""), "{ctx}: single file");
            assert_ne!(inode(one, "big"), inode(one, "more/other"), "{ctx}");
            assert_ne!(inode(one, "bin/tool"), inode(one, "deps"), "{ctx}");
        }
        _ => unreachable!(),
    }
}

fn crash_at(t: &Template, family: &str, point: &str, recovery: Recovery) {
    let ctx = format!("{point} ({recovery:?})");
    let noodle = clone_store(t);
    let store_mode = store_dir_mode(&noodle);

    let out = noodle.run_env(&args_of(&t.args), &[(failpoint::ENV, point)]);
    common::assert_aborted_at(&out, point, &ctx);

    assert_consistent(t, &noodle, family, &format!("{ctx}, after the crash"));
    let valid = noodle.valid_paths();
    match family {
        "add" => {
            // Valid and intact (checked above) or not valid at all.
            if point == "add:after-register" {
                assert!(
                    valid.contains(&t.new_path),
                    "{ctx}: a committed registration was lost"
                );
            }
            if valid.contains(&t.new_path) {
                let files = regular_files(&noodle.physical(&t.new_path));
                assert_eq!(files, regular_files(&t.new_tree), "{ctx}: contents");
            }
        }
        "delete" => {
            // One transaction: both or neither.
            let (g2, g1) = (&t.garbage[1].1, &t.garbage[2].1);
            assert_eq!(
                valid.contains(g1),
                valid.contains(g2),
                "{ctx}: half a delete"
            );
            assert!(
                valid.contains(&t.garbage[0].1),
                "{ctx}: g3 was not asked for"
            );
        }
        "gc" => {
            assert!(
                valid.contains(&t.garbage[0].1),
                "{ctx}: g3 is over --max-freed"
            );
        }
        _ => {}
    }

    match recovery {
        Recovery::Gc => {
            noodle.ok(&["store", "gc"]);
            let (_, problems) = noodle.verify_report(&["--check-contents"]);
            // A collection removes every leftover; only what optimise did to a valid path's
            // directory metadata needs `verify --repair`.
            let allowed: &[&str] = if family == "optimise" {
                &["metadata"]
            } else {
                &[]
            };
            let wrong = bad(&problems, allowed);
            assert!(wrong.is_empty(), "{ctx}: left after gc: {wrong:#?}");
            assert_eq!(noodle.tmp_entries(), Vec::<String>::new(), "{ctx}: var/tmp");
            assert_consistent(t, &noodle, family, &format!("{ctx}, after gc"));
            let (code, _) = noodle.verify_report(&["--repair"]);
            assert_eq!(code, 0, "{ctx}: verify --repair left problems");
            assert_clean(&noodle, &format!("{ctx}, after gc and repair"));
            rerun(t, &noodle, family, &ctx);
        }
        Recovery::Repair => {
            let (code, problems) = noodle.verify_report(&["--repair"]);
            assert_eq!(
                code, 0,
                "{ctx}: verify --repair left problems: {problems:#?}"
            );
            assert_clean(&noodle, &format!("{ctx}, after repair"));
            rerun(t, &noodle, family, &ctx);
        }
        Recovery::RerunFirst => {
            rerun(t, &noodle, family, &ctx);
            assert_consistent(t, &noodle, family, &format!("{ctx}, after re-running"));
            noodle.ok(&["store", "gc"]);
            if family == "optimise" {
                let (code, _) = noodle.verify_report(&["--repair"]);
                assert_eq!(code, 0, "{ctx}: verify --repair left problems");
            }
        }
    }
    assert_clean(&noodle, &format!("{ctx}, at the end"));
    assert_outcome(t, &noodle, family, &ctx);
    assert_clean(&noodle, &format!("{ctx}, at the very end"));
    assert_eq!(
        store_dir_mode(&noodle),
        store_mode,
        "{ctx}: store directory mode"
    );
    let valid: BTreeSet<String> = noodle.valid_paths();
    for path in &t.kept {
        assert!(valid.contains(path), "{ctx}: {path} lost");
    }
}

/// Crashes at every listed point of `family`, each with every recovery, in parallel.
fn crash_family(family: &str) {
    let points: Vec<&str> = failpoint::ALL
        .iter()
        .copied()
        .filter(|p| p.split(':').next() == Some(family))
        .collect();
    assert!(!points.is_empty(), "no failure points for {family}");
    let template = template(family);
    std::thread::scope(|scope| {
        for point in &points {
            for recovery in [Recovery::Gc, Recovery::Repair, Recovery::RerunFirst] {
                let template = &template;
                scope.spawn(move || crash_at(template, family, point, recovery));
            }
        }
    });
}

#[test]
fn every_failure_point_belongs_to_a_tested_operation() {
    for point in failpoint::ALL {
        let family = point.split(':').next().unwrap_or_default();
        assert!(
            FAMILIES.contains(&family) || TESTED_ELSEWHERE.contains(&family),
            "failure point {point} belongs to no operation this test drives: add a scenario"
        );
    }
}

#[test]
fn crash_during_add() {
    crash_family("add");
}

#[test]
fn crash_during_delete() {
    crash_family("delete");
}

#[test]
fn crash_during_gc() {
    crash_family("gc");
}

#[test]
fn crash_during_optimise() {
    crash_family("optimise");
}
