//! Concurrency (DESIGN.md §5, invariants 2 and 5): processes adding overlapping trees while
//! collections run, identical big adds racing, optimise beside an add that is still writing, and
//! collections and repairs beside an add whose path is renamed into the store but not yet
//! registered, or beside a collection or deletion still emptying its trash.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::{make_tree, regular_files, wait_until, Noodle};

/// `store add --json` output: (path, added) per tree.
fn added_of(out: &Output, what: &str) -> (String, bool) {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("add --json");
    let first = &json[0];
    (
        first["path"].as_str().expect("path").to_owned(),
        first["added"].as_bool().expect("added"),
    )
}

/// Deterministic bytes, different for each seed.
fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn write(path: &Path, bytes: &[u8], executable: bool) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, bytes).expect("write");
    let mode = if executable { 0o755 } else { 0o644 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn db_query_i64(noodle: &Noodle, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(noodle.db_file()).expect("open db");
    conn.query_row(sql, [], |r| r.get(0)).expect("query")
}

/// No path registered twice, no entry recorded twice.
fn assert_no_duplicate_rows(noodle: &Noodle) {
    assert_eq!(
        db_query_i64(noodle, "SELECT count(*) - count(DISTINCT path) FROM paths"),
        0,
        "duplicate path rows"
    );
    assert_eq!(
        db_query_i64(
            noodle,
            "SELECT count(*) FROM (SELECT 1 FROM entries GROUP BY path_id, rel HAVING count(*) > 1)"
        ),
        0,
        "duplicate entry rows"
    );
    assert_eq!(
        db_query_i64(
            noodle,
            "SELECT count(*) FROM entries WHERE path_id NOT IN (SELECT id FROM paths)"
        ),
        0,
        "entries of invalid paths"
    );
}

/// The roots `store roots --json` reports: link → store path.
fn roots(noodle: &Noodle) -> BTreeMap<PathBuf, String> {
    let json = noodle.json(&["store", "roots"]);
    json.as_object()
        .expect("roots object")
        .iter()
        .map(|(k, v)| (PathBuf::from(k), v.as_str().expect("path").to_owned()))
        .collect()
}

fn wait_output(child: Child) -> Output {
    child.wait_with_output().expect("wait for noodle")
}

#[test]
fn concurrent_adds_of_overlapping_trees_while_collecting() {
    const PROCESSES: usize = 6;
    const TREES: usize = 4;
    let noodle = Noodle::new();

    // Tree t: its own files plus one file shared by all trees. Each process adds every tree
    // (from its own identical copy, so the sources differ but the contents do not), starting at
    // a different one.
    let source = |p: usize, t: usize| noodle.scratch(&format!("p{p}/tree-{t}"));
    for p in 0..PROCESSES {
        for t in 0..TREES {
            let dir = source(p, t);
            make_tree(&dir, &format!("tree {t}"));
            write(&dir.join("shared/common"), &data(99, 20_000), false);
            write(
                &dir.join(format!("own-{t}")),
                &data(t as u64, 5_000),
                t % 2 == 0,
            );
        }
    }

    let adding = AtomicBool::new(true);
    let collections = AtomicUsize::new(0);
    let results: Vec<(usize, usize, String, bool)> = std::thread::scope(|scope| {
        let collector = scope.spawn(|| {
            while adding.load(Ordering::SeqCst) {
                let report = noodle.json(&["store", "gc"]);
                // Every path is rooted, by a gc root or by its adder's temporary root, and no
                // add crashes: there is never anything to collect.
                assert_eq!(
                    report["deleted"],
                    serde_json::json!([]),
                    "gc deleted a live path"
                );
                assert_eq!(
                    report["leftovers"],
                    serde_json::json!([]),
                    "gc took an add's path"
                );
                assert_eq!(
                    report["stale_temp"], 0,
                    "gc took an add's staging directory"
                );
                collections.fetch_add(1, Ordering::SeqCst);
            }
        });
        let adders: Vec<_> = (0..PROCESSES)
            .map(|p| {
                let noodle = &noodle;
                let source = &source;
                scope.spawn(move || {
                    let mut out = Vec::new();
                    for i in 0..TREES {
                        let t = (p + i) % TREES;
                        let src = source(p, t);
                        let (root, name) = (format!("p{p}-t{t}"), format!("tree-{t}"));
                        let args = [
                            "--json",
                            "store",
                            "add",
                            "--gc-root",
                            &root,
                            "--name",
                            &name,
                            src.to_str().expect("utf-8"),
                        ];
                        let (path, added) = added_of(&noodle.run(&args), &root);
                        out.push((p, t, path, added));
                    }
                    out
                })
            })
            .collect();
        let results = adders
            .into_iter()
            .flat_map(|h| h.join().expect("adder"))
            .collect();
        adding.store(false, Ordering::SeqCst);
        collector.join().expect("collector");
        results
    });
    assert!(
        collections.load(Ordering::SeqCst) >= 2,
        "the collections did not overlap the adds"
    );

    // One path per tree, and exactly one process was told it added it.
    let mut by_tree: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    let mut added: BTreeMap<String, usize> = BTreeMap::new();
    for (_, t, path, was_added) in &results {
        by_tree.entry(*t).or_default().insert(path.clone());
        *added.entry(path.clone()).or_default() += usize::from(*was_added);
    }
    assert_eq!(results.len(), PROCESSES * TREES);
    assert!(
        by_tree.values().all(|paths| paths.len() == 1),
        "{by_tree:#?}"
    );
    assert_eq!(added.len(), TREES);
    for (path, count) in &added {
        assert_eq!(*count, 1, "{path} was reported added {count} times");
    }

    // Everything valid and intact, every root resolves, nothing else in the store.
    noodle.assert_fully_clean("after the concurrent adds");
    noodle.assert_closure_intact();
    assert_no_duplicate_rows(&noodle);
    let valid = noodle.valid_paths();
    assert_eq!(valid, added.keys().cloned().collect::<BTreeSet<_>>());
    for (path, t) in by_tree.iter().map(|(t, p)| (p.first().expect("one"), t)) {
        assert_eq!(
            regular_files(&noodle.physical(path)),
            regular_files(&source(0, *t)),
            "{path}"
        );
    }
    let roots = roots(&noodle);
    let gcroots = noodle.root().join("noodle/var/gcroots");
    for (p, t, path, _) in &results {
        let link = gcroots.join(format!("p{p}-t{t}"));
        assert_eq!(roots.get(&link), Some(path), "root {}", link.display());
    }
    assert_eq!(roots.len(), results.len());
    let mut physical: Vec<String> = noodle.store_entries();
    physical.sort();
    let expected: Vec<String> = valid
        .iter()
        .map(|p| p.rsplit('/').next().expect("base").to_owned())
        .collect();
    assert_eq!(
        physical, expected,
        "the store directory holds exactly the valid paths"
    );
    assert_eq!(noodle.tmp_entries(), Vec::<String>::new());
}

#[test]
fn concurrent_adds_of_the_same_big_tree() {
    for failpoint in [None, Some("add:after-copy=sleep:300")] {
        let noodle = Noodle::new();
        let tree = noodle.scratch("big");
        write(&tree.join("blob"), &data(1, 4 << 20), false);
        write(&tree.join("lib/part"), &data(2, 1_500_000), true);
        make_tree(&tree, "big");
        let env: Vec<(&str, &str)> = failpoint
            .map(|f| vec![("NOODLE_FAILPOINT", f)])
            .unwrap_or_default();
        let src = tree.to_str().expect("utf-8");
        let children: Vec<Child> = (0..2)
            .map(|i| {
                let root = format!("big-{i}");
                noodle.spawn(&["--json", "store", "add", "--gc-root", &root, src], &env)
            })
            .collect();
        let results: Vec<(String, bool)> = children
            .into_iter()
            .map(|c| added_of(&wait_output(c), "big add"))
            .collect();
        let ctx = format!("failpoint {failpoint:?}");
        assert_eq!(results[0].0, results[1].0, "{ctx}: same tree, same path");
        assert_eq!(
            results.iter().filter(|(_, added)| *added).count(),
            1,
            "{ctx}: exactly one add writes: {results:?}"
        );
        noodle.assert_fully_clean(&ctx);
        assert_no_duplicate_rows(&noodle);
        assert_eq!(noodle.valid_paths().len(), 1, "{ctx}");
        assert_eq!(
            regular_files(&noodle.physical(&results[0].0)),
            regular_files(&tree),
            "{ctx}"
        );
        assert_eq!(noodle.tmp_entries(), Vec::<String>::new(), "{ctx}");
        assert_eq!(noodle.store_entries().len(), 1, "{ctx}");
    }
}

/// Every regular, non-empty file of every valid path: (inode, contents hash, executable).
fn stored_files(noodle: &Noodle) -> Vec<(PathBuf, u64, blake3::Hash, bool)> {
    let mut out = Vec::new();
    for path in noodle.valid_paths() {
        let top = noodle.physical(&path);
        for entry in walkdir::WalkDir::new(&top) {
            let entry = entry.expect("walk");
            let meta = entry.metadata().expect("stat");
            if entry.file_type().is_file() && meta.len() > 0 {
                let bytes = std::fs::read(entry.path()).expect("read");
                out.push((
                    entry.path().to_owned(),
                    meta.ino(),
                    blake3::hash(&bytes),
                    meta.permissions().mode() & 0o100 != 0,
                ));
            }
        }
    }
    out
}

#[test]
fn optimise_beside_an_add_that_is_still_writing() {
    let noodle = Noodle::new();
    // In the store: two paths with one identical file, and one file whose contents equal
    // another's but which is executable (a hard link cannot be both).
    let e1 = noodle.scratch("e1");
    write(&e1.join("a.txt"), &data(1, 1000), false);
    write(&e1.join("b.txt"), &data(2, 500), false);
    write(&e1.join("run"), &data(3, 300), true);
    let e2 = noodle.scratch("e2");
    write(&e2.join("a.txt"), &data(1, 1000), false);
    write(&e2.join("data"), &data(3, 300), false);
    write(&e2.join("c.txt"), &data(4, 700), false);
    // The new tree: sizes equal to files in the store, contents different, except for a.txt
    // and run, which are identical to files in the store.
    let new = noodle.scratch("new");
    write(&new.join("a.txt"), &data(1, 1000), false);
    write(&new.join("b.txt"), &data(5, 500), false);
    write(&new.join("c.txt"), &data(6, 700), false);
    write(&new.join("d.txt"), &data(7, 1000), false);
    write(&new.join("run"), &data(3, 300), true);
    for (tree, root) in [(&e1, "e1"), (&e2, "e2")] {
        noodle.ok(&[
            "store",
            "add",
            "--gc-root",
            root,
            tree.to_str().expect("utf-8"),
        ]);
    }

    let child = noodle.spawn(
        &[
            "--json",
            "store",
            "add",
            "--gc-root",
            "new",
            new.to_str().expect("utf-8"),
        ],
        &[("NOODLE_FAILPOINT", "add:after-copy=sleep:3000")],
    );
    // Paused once its staging copy is complete.
    let tmp = noodle.root().join("noodle/var/tmp");
    let want = regular_files(&new);
    wait_until(20, "the add's staging copy is complete", || {
        std::fs::read_dir(&tmp)
            .expect("var/tmp")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".add"))
            .any(|e| {
                want.iter().all(|(rel, (bytes, _))| {
                    std::fs::metadata(e.path().join(rel))
                        .is_ok_and(|m| m.len() == bytes.len() as u64 && m.mode() & 0o222 == 0)
                })
            })
    });
    let mut child = child;
    noodle.json(&["store", "optimise"]);
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "the add finished before optimise did: the test proves nothing"
    );
    noodle.assert_fully_clean("after optimising beside the paused add");

    let (path, added) = added_of(&wait_output(child), "the paused add");
    assert!(added);
    noodle.assert_fully_clean("after the add");
    let physical = noodle.physical(&path);
    assert_eq!(regular_files(&physical), want, "the new path's contents");
    for rel in want.keys() {
        let nlink = std::fs::metadata(physical.join(rel)).expect("stat").nlink();
        assert_eq!(
            nlink,
            1,
            "{} was linked before it was registered",
            rel.display()
        );
    }

    // Now registered, its identical files are linked, and only those.
    noodle.json(&["store", "optimise"]);
    noodle.assert_fully_clean("after the second optimise");
    let files = stored_files(&noodle);
    for (p, ino_p, hash_p, exec_p) in &files {
        for (q, ino_q, hash_q, exec_q) in &files {
            let identical = hash_p == hash_q && exec_p == exec_q;
            assert_eq!(
                ino_p == ino_q,
                identical,
                "{} and {}: identical {identical}, same inode {}",
                p.display(),
                q.display(),
                ino_p == ino_q
            );
        }
    }
    let ino = |rel: &str| std::fs::metadata(physical.join(rel)).expect("stat").ino();
    // a.txt is in all three paths (plus the link farm).
    let a_links = std::fs::metadata(physical.join("a.txt"))
        .expect("a")
        .nlink();
    assert!(a_links >= 3, "a.txt has {a_links} links");
    assert_ne!(ino("a.txt"), ino("d.txt"));
}

#[test]
fn collection_and_repair_beside_an_add_not_yet_registered() {
    let noodle = Noodle::new();
    let garbage = noodle.scratch("garbage");
    make_tree(&garbage, "garbage");
    let garbage = noodle.add(&garbage);
    let tree = noodle.scratch("paused");
    make_tree(&tree, "paused");

    let mut child = noodle.spawn(
        &[
            "--json",
            "store",
            "add",
            "--gc-root",
            "paused",
            tree.to_str().expect("utf-8"),
        ],
        &[("NOODLE_FAILPOINT", "add:after-rename=sleep:3000")],
    );
    let mut renamed = String::new();
    wait_until(
        20,
        "the add renamed its path into the store",
        || match noodle
            .store_entries()
            .into_iter()
            .find(|n| n.ends_with("-paused"))
        {
            Some(name) => {
                renamed = format!("/noodle/store/{name}");
                true
            }
            None => false,
        },
    );
    assert!(!noodle.valid_paths().contains(&renamed));

    let report = noodle.json(&["store", "gc"]);
    assert_eq!(report["deleted"], serde_json::json!([garbage]));
    assert_eq!(
        report["leftovers"],
        serde_json::json!([]),
        "gc took the add's path"
    );
    assert!(
        noodle.physical(&renamed).exists(),
        "gc deleted the add's path"
    );
    let (code, problems) = noodle.verify_report(&["--repair"]);
    assert!(problems.is_empty() && code == 0, "{problems:#?}");
    assert!(
        noodle.physical(&renamed).exists(),
        "repair deleted the add's path"
    );
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "the add finished early: the test proves nothing"
    );

    let (path, added) = added_of(&wait_output(child), "the paused add");
    assert_eq!(path, renamed);
    assert!(added);
    noodle.assert_fully_clean("after the add");
    assert_eq!(regular_files(&noodle.physical(&path)), regular_files(&tree));
    noodle.ok(&["store", "gc"]);
    assert!(
        noodle.valid_paths().contains(&path),
        "the rooted path was collected"
    );
    noodle.assert_fully_clean("after another gc");
}

/// A collection or deletion that has released the GC lock and is still emptying its trash is a
/// live process: its trash is not a stale leftover for `verify`, `verify --repair` or another gc.
#[test]
fn trash_of_a_running_collection_or_deletion_is_not_stale() {
    std::thread::scope(|scope| {
        scope.spawn(|| trash_is_not_stale(&["store", "gc"], "gc:mid-delete=sleep:2000"));
        scope.spawn(|| trash_is_not_stale(&["store", "delete"], "delete:after-trash=sleep:2000"));
    });
}

fn trash_is_not_stale(args: &[&str], point: &str) {
    let noodle = Noodle::new();
    let doomed = noodle.add_new_tree("doomed");
    let mut args = args.to_vec();
    if args[1] == "delete" {
        args.push(&doomed);
    }
    let mut child = noodle.spawn(&args, &[("NOODLE_FAILPOINT", point)]);
    wait_until(20, "the doomed path is in the trash", || {
        !noodle.physical(&doomed).exists() && !noodle.tmp_entries().is_empty()
    });
    let ctx = format!("{args:?} paused at {point}");
    let (code, problems) = noodle.verify_report(&[]);
    assert!(
        problems.is_empty() && code == 0,
        "{ctx}: verify: {problems:#?}"
    );
    let (code, problems) = noodle.verify_report(&["--repair"]);
    assert!(
        problems.is_empty() && code == 0,
        "{ctx}: repair: {problems:#?}"
    );
    let report = noodle.json(&["store", "gc"]);
    assert_eq!(report["stale_temp"], 0, "{ctx}: another gc took the trash");
    assert!(
        !noodle.tmp_entries().is_empty(),
        "{ctx}: the trash was taken"
    );
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "{ctx}: finished early: the test proves nothing"
    );
    let out = wait_output(child);
    assert!(
        out.status.success(),
        "{ctx}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    noodle.assert_fully_clean(&ctx);
    assert_eq!(noodle.tmp_entries(), Vec::<String>::new(), "{ctx}");
}
