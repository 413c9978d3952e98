//! Bad input: each case gives a clear error, exits non-zero, and leaves the store exactly as it
//! was (every file under the root, and every database row).

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{make_tree, set_mode, stderr_of, stdout_of, Noodle, BIN, NOBODY};

/// The store's state: every file under the root and every row of the database.
struct State {
    files: BTreeMap<PathBuf, String>,
    rows: Vec<String>,
}

fn state(noodle: &Noodle) -> State {
    State {
        files: noodle.snapshot(),
        rows: noodle.db_rows(),
    }
}

fn assert_unchanged(noodle: &Noodle, before: &State, what: &str) {
    let after = state(noodle);
    if after.files != before.files {
        let added: Vec<_> = after
            .files
            .iter()
            .filter(|(k, v)| before.files.get(*k) != Some(v))
            .map(|(k, _)| k)
            .collect();
        let removed: Vec<_> = before
            .files
            .iter()
            .filter(|(k, v)| after.files.get(*k) != Some(v))
            .map(|(k, _)| k)
            .collect();
        panic!("{what}: files changed: new/changed {added:?}, gone/changed {removed:?}");
    }
    assert_eq!(after.rows, before.rows, "{what}: database changed");
}

/// A store that already holds something, so "unchanged" means something.
fn store_with_content() -> Noodle {
    let noodle = Noodle::new();
    let tree = noodle.scratch("existing");
    make_tree(&tree, "existing");
    noodle.add(&tree);
    noodle
}

/// Runs `noodle ARGS`, which must fail with a message containing every one of `words`
/// (case-insensitive), and leave the store as it was. Returns stderr.
fn refused(noodle: &Noodle, args: &[&str], words: &[&str]) -> String {
    let before = state(noodle);
    let out = noodle.run(args);
    check_refused(&out, args, words);
    assert_unchanged(noodle, &before, &format!("{args:?}"));
    stderr_of(&out)
}

fn check_refused(out: &Output, args: &[&str], words: &[&str]) {
    let err = stderr_of(out);
    assert!(
        !out.status.success(),
        "{args:?} succeeded: {}",
        stdout_of(out)
    );
    assert!(
        out.stdout.is_empty(),
        "{args:?} printed on stdout: {}",
        stdout_of(out)
    );
    assert!(err.contains("noodle: error: "), "{args:?}: {err}");
    let lower = err.to_lowercase();
    for word in words {
        assert!(
            lower.contains(&word.to_lowercase()),
            "{args:?}: {word:?} not in: {err}"
        );
    }
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

// ---------------------------------------------------------------------------- source trees ---

#[test]
fn missing_source() {
    let noodle = store_with_content();
    let missing = noodle.scratch("does-not-exist");
    let err = refused(
        &noodle,
        &["store", "add", s(&missing)],
        &["does-not-exist", "no such file"],
    );
    assert_eq!(
        err.matches("No such file").count(),
        1,
        "cause repeated: {err}"
    );
}

#[test]
fn unreadable_file_as_unprivileged_user() {
    let noodle = Noodle::uninitialised_owned_by(NOBODY);
    let out = noodle.run_as(NOBODY, &["init"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let tree = noodle.scratch("tree");
    make_tree(&tree, "ok");
    let out = noodle.run_as(NOBODY, &["store", "add", s(&tree)]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let secret = tree.join("share/secret");
    std::fs::write(&secret, "top secret").expect("write");
    set_mode(&secret, 0o000);
    let before = state(&noodle);
    let out = noodle.run_as(NOBODY, &["store", "add", s(&tree)]);
    check_refused(
        &out,
        &["add", "unreadable"],
        &["share/secret", "permission denied"],
    );
    assert_unchanged(&noodle, &before, "unreadable file");
    // An unreadable directory too.
    set_mode(&secret, 0o644);
    let closed = tree.join("closed");
    std::fs::create_dir(&closed).expect("mkdir");
    std::fs::write(closed.join("inside"), "x").expect("write");
    set_mode(&closed, 0o000);
    let out = noodle.run_as(NOBODY, &["store", "add", s(&tree)]);
    check_refused(
        &out,
        &["add", "closed dir"],
        &["closed", "permission denied"],
    );
    assert_unchanged(&noodle, &before, "unreadable directory");
    set_mode(&closed, 0o755);
}

fn special_file_case(make: impl FnOnce(&Path), words: &[&str]) {
    let noodle = store_with_content();
    let tree = noodle.scratch("tree");
    make_tree(&tree, "special");
    let special = tree.join("share/doc/special-thing");
    make(&special);
    let err = refused(&noodle, &["store", "add", s(&tree)], words);
    assert!(
        err.contains(s(&special)) || err.contains("share/doc/special-thing"),
        "{err}"
    );
}

#[test]
fn fifo_in_tree() {
    special_file_case(
        |p| {
            let status = Command::new("mkfifo").arg(p).status().expect("mkfifo");
            assert!(status.success());
        },
        &["special-thing", "fifo"],
    );
}

#[test]
fn socket_in_tree() {
    let mut keep = None;
    special_file_case(
        |p| keep = Some(std::os::unix::net::UnixListener::bind(p).expect("bind")),
        &["special-thing", "socket"],
    );
    drop(keep);
}

#[test]
fn char_device_in_tree() {
    special_file_case(
        |p| {
            let status = Command::new("mknod")
                .arg(p)
                .args(["c", "1", "3"])
                .status()
                .expect("mknod");
            assert!(status.success(), "mknod needs root");
        },
        &["special-thing", "character device"],
    );
}

#[test]
fn forbidden_names() {
    let noodle = store_with_content();
    let tree = noodle.scratch("tree");
    make_tree(&tree, "names");
    for name in [
        "bad/name",
        ".hidden",
        "",
        "with space",
        "ü",
        &"x".repeat(212),
    ] {
        let err = refused(
            &noodle,
            &["store", "add", "--name", name, s(&tree)],
            &["name", "invalid"],
        );
        assert!(err.contains(&format!("'{name}'")), "{err}");
    }
    let spaced = noodle.scratch("my tree");
    make_tree(&spaced, "spaced");
    refused(
        &noodle,
        &["store", "add", s(&spaced)],
        &["my tree", "--name"],
    );
    let hidden = noodle.scratch(".dotted");
    make_tree(&hidden, "dotted");
    refused(
        &noodle,
        &["store", "add", s(&hidden)],
        &[".dotted", "--name"],
    );
    // A bad gc root name is refused before anything is written.
    refused(
        &noodle,
        &["store", "add", "--gc-root", "a/b", s(&tree)],
        &["gc root"],
    );
}

#[test]
fn symlink_loop_argument() {
    let noodle = store_with_content();
    let a = noodle.scratch("loop-a");
    let b = noodle.scratch("loop-b");
    symlink(&b, &a).expect("symlink");
    symlink(&a, &b).expect("symlink");
    refused(
        &noodle,
        &["store", "add", s(&a)],
        &["loop-a", "symlink loop"],
    );
    let self_loop = noodle.scratch("self");
    symlink("self", &self_loop).expect("symlink");
    refused(&noodle, &["store", "add", s(&self_loop)], &["self", "loop"]);
}

// ------------------------------------------------------------------------------------ NARs ---

fn put_str(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(data);
    out.resize(out.len() + (8 - data.len() % 8) % 8, 0);
}

fn file_node(contents: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for token in ["(", "type", "regular", "contents"] {
        put_str(&mut out, token.as_bytes());
    }
    put_str(&mut out, contents);
    put_str(&mut out, b")");
    out
}

/// A directory node with these entries, in the order given (sorted or not).
fn dir_node(entries: &[(&[u8], Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for token in ["(", "type", "directory"] {
        put_str(&mut out, token.as_bytes());
    }
    for (name, node) in entries {
        for token in ["entry", "(", "name"] {
            put_str(&mut out, token.as_bytes());
        }
        put_str(&mut out, name);
        put_str(&mut out, b"node");
        out.extend_from_slice(node);
        put_str(&mut out, b")");
    }
    put_str(&mut out, b")");
    out
}

fn archive(node: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_str(&mut out, b"nix-archive-1");
    out.extend_from_slice(node);
    out
}

/// A file `levels` directories deep: its path has `levels` components (`d/d/…/d`).
fn nested(levels: usize) -> Vec<u8> {
    let mut node = file_node(b"bottom");
    for _ in 0..levels {
        node = dir_node(&[(b"d", node)]);
    }
    node
}

/// Restores `nar` into a fresh directory, which must fail with all of `words` in the message,
/// create nothing (no destination, no temporary beside it) and leave the store alone.
fn bad_nar(noodle: &Noodle, nar: &[u8], words: &[&str]) {
    let parent = noodle.scratch("restores");
    std::fs::create_dir_all(&parent).expect("mkdir");
    let listing = || {
        let mut names: Vec<_> = std::fs::read_dir(&parent)
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        names
    };
    let before_listing = listing();
    let before = state(noodle);
    let dest = parent.join("out");
    let out = noodle.run_stdin(&["store", "restore", s(&dest)], nar);
    check_refused(&out, &["store", "restore"], words);
    assert!(!dest.exists(), "a refused archive left {}", dest.display());
    assert_eq!(
        listing(),
        before_listing,
        "a refused archive left something beside it"
    );
    assert_unchanged(noodle, &before, "restore");
}

#[test]
fn nar_good_archives_restore() {
    // The builders above make archives noodle accepts: the bad ones below differ in one way.
    let noodle = Noodle::new();
    let nar = archive(&dir_node(&[(b"a", file_node(b"x")), (b"b", nested(3))]));
    let dest = noodle.scratch("good");
    let out = noodle.run_stdin(&["store", "restore", s(&dest)], &nar);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(
        std::fs::read(dest.join("b/d/d/d")).expect("read"),
        b"bottom"
    );
    assert_eq!(noodle.dump(s(&dest)), nar);
}

#[test]
fn nar_truncated() {
    let noodle = store_with_content();
    let tree = noodle.scratch("tree");
    make_tree(&tree, "truncate");
    std::fs::write(tree.join("big"), vec![1u8; 100_000]).expect("write");
    let nar = noodle.dump(s(&tree));
    for cut in [0, 7, 20, nar.len() / 2, nar.len() - 8, nar.len() - 1] {
        let words: &[&str] = if cut < 16 { &["nar"] } else { &["truncated"] };
        bad_nar(&noodle, &nar[..cut], words);
    }
}

#[test]
fn nar_unsorted_and_duplicate_entries() {
    let noodle = store_with_content();
    let unsorted = archive(&dir_node(&[
        (b"b", file_node(b"1")),
        (b"a", file_node(b"2")),
    ]));
    bad_nar(&noodle, &unsorted, &["unsorted", "'a'"]);
    let duplicate = archive(&dir_node(&[
        (b"a", file_node(b"1")),
        (b"a", file_node(b"2")),
    ]));
    bad_nar(&noodle, &duplicate, &["duplicate"]);
    // Bytewise, "a" < "B" is wrong.
    let case = archive(&dir_node(&[
        (b"a", file_node(b"1")),
        (b"B", file_node(b"2")),
    ]));
    bad_nar(&noodle, &case, &["unsorted"]);
}

#[test]
fn nar_forbidden_names() {
    let noodle = store_with_content();
    for name in [&b".."[..], b".", b"a/b", b"", b"nul\0byte"] {
        let nar = archive(&dir_node(&[(name, file_node(b"escape"))]));
        bad_nar(&noodle, &nar, &["forbidden entry name"]);
    }
    // Deeper down too.
    let nar = archive(&dir_node(&[(
        b"sub",
        dir_node(&[(b"..", file_node(b"x"))]),
    )]));
    bad_nar(&noodle, &nar, &["forbidden", "sub"]);
}

#[test]
fn nar_absurd_lengths() {
    let noodle = store_with_content();
    // File contents claiming u64::MAX bytes: refused (not allocated, not waited for).
    let mut node = Vec::new();
    for token in ["(", "type", "regular", "contents"] {
        put_str(&mut node, token.as_bytes());
    }
    node.extend_from_slice(&u64::MAX.to_le_bytes());
    node.extend_from_slice(b"only a few bytes");
    let started = Instant::now();
    bad_nar(&noodle, &archive(&node), &["truncated"]);
    // An entry name claiming u64::MAX bytes.
    let mut dir = Vec::new();
    for token in ["(", "type", "directory", "entry", "(", "name"] {
        put_str(&mut dir, token.as_bytes());
    }
    dir.extend_from_slice(&u64::MAX.to_le_bytes());
    dir.extend_from_slice(&[b'a'; 64]);
    bad_nar(&noodle, &archive(&dir), &["too long", "entry name"]);
    // A structural token claiming u64::MAX bytes, and the magic.
    let mut token = Vec::new();
    put_str(&mut token, b"nix-archive-1");
    token.extend_from_slice(&u64::MAX.to_le_bytes());
    token.extend_from_slice(b"(");
    bad_nar(&noodle, &token, &["too long"]);
    let mut magic = u64::MAX.to_le_bytes().to_vec();
    magic.extend_from_slice(b"nix-archive-1");
    bad_nar(&noodle, &magic, &["not a nar"]);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "absurd lengths took long"
    );
}

#[test]
fn nar_too_deep() {
    let noodle = store_with_content();
    // The deepest accepted path has 64 components (store/src/nar/restore.rs).
    let ok = noodle.scratch("deep-ok");
    let out = noodle.run_stdin(&["store", "restore", s(&ok)], &archive(&nested(64)));
    assert!(
        out.status.success(),
        "64 levels refused: {}",
        stderr_of(&out)
    );
    assert!(ok.join("d/".repeat(63)).join("d").is_file());
    bad_nar(&noodle, &archive(&nested(65)), &["too deep", "64"]);
    bad_nar(&noodle, &archive(&nested(200)), &["too deep"]);
}

#[test]
fn nar_trailing_garbage_and_bad_tokens() {
    let noodle = store_with_content();
    let mut trailing = archive(&file_node(b"x"));
    trailing.extend_from_slice(b"extra");
    bad_nar(&noodle, &trailing, &["trailing data"]);
    let mut wrong = Vec::new();
    put_str(&mut wrong, b"nix-archive-1");
    for token in ["(", "type", "fifo", ")"] {
        put_str(&mut wrong, token.as_bytes());
    }
    bad_nar(&noodle, &wrong, &["unexpected token", "fifo"]);
    bad_nar(&noodle, b"", &["nar"]);
    bad_nar(&noodle, b"this is not an archive at all", &["not a nar"]);
}

// ----------------------------------------------------------------------------- store paths ---

#[test]
fn paths_not_in_the_store() {
    let noodle = store_with_content();
    let unknown = "/noodle/store/0123456789abcdfghijklmnpqrsvwxyz-x";
    let outside = noodle.scratch("foo");
    let outside = s(&outside).to_owned();
    for command in [
        &["store", "path-info"][..],
        &["store", "closure"],
        &["store", "closure", "--referrers"],
        &["store", "delete"],
        &["store", "verify"],
    ] {
        for path in [unknown, &format!("{unknown}/bin/sh"), &outside, "/tmp/foo"] {
            let mut args = command.to_vec();
            args.push(path);
            let err = refused(&noodle, &args, &["not a valid path"]);
            assert!(
                err.contains(path.split("/bin").next().expect("path")),
                "{err}"
            );
        }
    }
    refused(
        &noodle,
        &["store", "dump", unknown],
        &[unknown, "not a valid path"],
    );
    // Outside the store, dump reads the filesystem: a missing file is named.
    refused(
        &noodle,
        &["store", "dump", &outside],
        &[&outside, "no such file"],
    );
    // Malformed store paths.
    for bad in ["/noodle/store/short-x", "/noodle/store/", "relative"] {
        refused(&noodle, &["store", "path-info", bad], &[bad]);
    }
}

#[test]
fn no_store_at_root() {
    let noodle = Noodle::uninitialised();
    for args in [
        &[
            "store",
            "path-info",
            "/noodle/store/0123456789abcdfghijklmnpqrsvwxyz-x",
        ][..],
        &["store", "gc"],
        &["store", "verify"],
    ] {
        let out = noodle.run(args);
        check_refused(&out, args, &["no noodle store", "noodle init"]);
        assert!(!noodle.root().exists(), "{args:?} created the root");
    }
}

// ------------------------------------------------------------------------------- database ---

#[test]
fn database_locked_by_another_process() {
    let noodle = store_with_content();
    let tree = noodle.scratch("tree");
    make_tree(&tree, "locked");
    let before = state(&noodle);
    let holder = rusqlite::Connection::open(noodle.db_file()).expect("open db");
    holder
        .execute_batch("BEGIN EXCLUSIVE")
        .expect("lock the database");
    let started = Instant::now();
    let out = noodle.run_env(&["store", "add", s(&tree)], &[("NOODLE_DB_TIMEOUT", "1")]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(4), "{}", stderr_of(&out));
    check_refused(&out, &["store", "add"], &["locked", "NOODLE_DB_TIMEOUT"]);
    assert!(took >= Duration::from_millis(900), "gave up after {took:?}");
    assert!(
        took < Duration::from_secs(20),
        "waited {took:?} for a 1 s timeout"
    );
    // Deleting needs the lock too.
    let existing = noodle.db_rows()[0]
        .split(' ')
        .next()
        .expect("path")
        .to_owned();
    let out = noodle.run_env(
        &["store", "delete", &existing],
        &[("NOODLE_DB_TIMEOUT", "1")],
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr_of(&out));
    holder.execute_batch("ROLLBACK").expect("unlock");
    drop(holder);
    assert_unchanged(&noodle, &before, "add against a locked database");
    let path = noodle.add(&tree);
    assert!(noodle.physical(&path).join("bin/tool").is_file());
    assert_eq!(noodle.run(&["store", "verify"]).status.code(), Some(0));
}

#[test]
fn corrupt_database() {
    let noodle = store_with_content();
    let tree = noodle.scratch("tree");
    make_tree(&tree, "corrupt");
    let db = noodle.db_file();
    for side in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{side}", db.display()));
    }
    std::fs::write(
        &db,
        b"this is not a database at all, just garbage bytes\n".repeat(200),
    )
    .expect("write");
    let before = noodle.snapshot();
    for args in [
        &["store", "add", s(&tree)][..],
        &[
            "store",
            "path-info",
            "/noodle/store/0123456789abcdfghijklmnpqrsvwxyz-x",
        ],
        &["store", "verify"],
        &["store", "gc"],
        &["init"],
    ] {
        let out = noodle.run(args);
        check_refused(&out, args, &["corrupt", "store.sqlite"]);
        assert_eq!(noodle.snapshot(), before, "{args:?} changed the store");
    }
}

// ------------------------------------------------------------------------------ full disk ---

#[test]
fn disk_full_during_add() {
    let base = tempfile::tempdir().expect("tempdir");
    let mnt = base.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let small = base.path().join("small");
    make_tree(&small, "fits");
    let big = base.path().join("big");
    std::fs::create_dir(&big).expect("mkdir");
    std::fs::write(big.join("blob"), vec![0x5au8; 8 << 20]).expect("write");
    let script = r#"
        set -u
        mount -t tmpfs -o size=4m tmpfs "$MNT" || { echo MOUNT_FAILED; exit 99; }
        R="$MNT/r"
        "$BIN" --root "$R" init && echo INIT_OK
        "$BIN" --root "$R" store add "$SMALL" && echo SMALL_OK
        "$BIN" --root "$R" store add "$BIG" 2>"$MNT/err"; echo "BIG_RC=$?"
        echo "BIG_ERR=$(grep 'noodle: error' "$MNT/err")"
        rm -f "$MNT/err"
        "$BIN" --root "$R" store verify --check-contents; echo "VERIFY_RC=$?"
        echo "TMP=[$(ls -A "$R/noodle/var/tmp")]"
        echo "STORE=[$(ls "$R/noodle/store" | tr '\n' ' ')]"
        "$BIN" --root "$R" store add "$SMALL" >/dev/null && echo SMALL_AGAIN_OK
    "#;
    let mut command = Command::new("unshare");
    if common::running_as_root() {
        command.arg("--mount");
    } else {
        command.arg("-rm");
    }
    let out = command
        .args(["sh", "-c", script])
        .env("MNT", &mnt)
        .env("BIN", BIN)
        .env("SMALL", &small)
        .env("BIG", &big)
        .env_remove("NOODLE_ROOT")
        .env_remove("NOODLE_FAILPOINT")
        .output()
        .expect("run unshare");
    let text = stdout_of(&out);
    let all = format!("stdout:\n{text}\nstderr:\n{}", stderr_of(&out));
    assert!(
        !text.contains("MOUNT_FAILED"),
        "cannot mount a tmpfs: {all}"
    );
    assert!(text.contains("INIT_OK"), "{all}");
    assert!(text.contains("SMALL_OK"), "{all}");
    let rc = text
        .lines()
        .find_map(|l| l.strip_prefix("BIG_RC="))
        .expect("BIG_RC");
    assert_ne!(rc, "0", "adding 8 MiB to a 4 MiB disk succeeded: {all}");
    let err = text
        .lines()
        .find_map(|l| l.strip_prefix("BIG_ERR="))
        .expect("BIG_ERR");
    assert!(
        err.contains("disk is full") && err.contains("No space"),
        "{all}"
    );
    assert!(
        text.contains("VERIFY_RC=0"),
        "something incomplete was left: {all}"
    );
    assert!(text.contains("TMP=[]"), "garbage left in var/tmp: {all}");
    let store = text
        .lines()
        .find_map(|l| l.strip_prefix("STORE=["))
        .expect("STORE");
    assert!(store.contains("-small"), "{all}");
    assert!(
        !store.contains("-big"),
        "partial big path left in the store: {all}"
    );
    assert!(text.contains("SMALL_AGAIN_OK"), "{all}");
}
