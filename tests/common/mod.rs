//! Shared helpers for the integration tests: a private store under a temporary root, and the
//! real `noodle` binary run against it.
#![allow(dead_code)]

pub mod badcache;
pub mod cache;
pub mod channel;
pub mod profile;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_noodle");

pub struct Noodle {
    pub dir: tempfile::TempDir,
}

impl Noodle {
    /// A fresh, initialised store under a temporary root.
    pub fn new() -> Self {
        let noodle = Self::uninitialised();
        noodle.ok(&["init"]);
        noodle
    }

    pub fn uninitialised() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("noodle-test-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Scratch space beside the store, for input trees.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join("scratch").join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        path
    }

    pub fn physical_store(&self) -> PathBuf {
        self.root().join("noodle/store")
    }

    pub fn db_file(&self) -> PathBuf {
        self.root().join("noodle/var/db/store.sqlite")
    }

    /// Where a logical store path's files are.
    pub fn physical(&self, logical: &str) -> PathBuf {
        self.root().join(logical.trim_start_matches('/'))
    }

    pub fn command(&self) -> Command {
        let mut command = Command::new(BIN);
        command
            .arg("--root")
            .arg(self.root())
            .env_remove("NOODLE_FAILPOINT")
            .env_remove("NOODLE_ROOT")
            // Each check runs once: tests of the health window pass --window themselves.
            .env("NOODLE_WINDOW", "0")
            // Settings come from the test's own file (absent: defaults), never the user's.
            .env("NOODLE_CONFIG", self.dir.path().join("noodle.toml"));
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run noodle")
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = self.command();
        command.args(args);
        for (k, v) in env {
            command.env(k, v);
        }
        command.output().expect("run noodle")
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "noodle {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Runs a command that must fail; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> (i32, String) {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "noodle {args:?} unexpectedly succeeded:\nstdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Makes a fresh tree seeded by `name` (`make_tree`) in scratch space and adds it.
    pub fn add_new_tree(&self, name: &str) -> String {
        let tree = self.scratch(name);
        make_tree(&tree, name);
        self.add(&tree)
    }

    /// Adds a tree and returns its store path.
    pub fn add(&self, tree: &Path) -> String {
        self.ok(&["store", "add", tree.to_str().expect("utf-8 path")])
            .trim()
            .to_owned()
    }

    /// Every file under the root except the database's WAL/shm side files, with kind, mode,
    /// size and contents hash: equal snapshots mean "the store is exactly as before".
    pub fn snapshot(&self) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        for entry in walkdir::WalkDir::new(self.root()).sort_by_file_name() {
            let entry = entry.expect("walk");
            let rel = entry
                .path()
                .strip_prefix(self.root())
                .expect("under root")
                .to_owned();
            let name = rel.to_string_lossy();
            if name.ends_with("-wal")
                || name.ends_with("-shm")
                || name.contains("var/temproots")
                || name.contains("var/locks")
            {
                continue;
            }
            let meta = entry.path().symlink_metadata().expect("lstat");
            let desc = if meta.is_file() {
                let data = std::fs::read(entry.path()).expect("read");
                format!(
                    "f {:o} {} {}",
                    meta.permissions().mode(),
                    meta.len(),
                    blake3::hash(&data).to_hex()
                )
            } else if meta.is_dir() {
                format!("d {:o}", meta.permissions().mode())
            } else {
                format!(
                    "l {}",
                    std::fs::read_link(entry.path())
                        .expect("readlink")
                        .display()
                )
            };
            let _ = meta.ino();
            out.insert(rel, desc);
        }
        out
    }

    /// The database's rows as text (paths with hashes and references), for before/after checks.
    pub fn db_rows(&self) -> Vec<String> {
        let conn = rusqlite::Connection::open(self.db_file()).expect("open db");
        let mut stmt = conn
            .prepare(
                "SELECT p.path, p.nar_hash, p.nar_size, group_concat(r.path, ' ')
                 FROM paths p LEFT JOIN refs ON refs.referrer = p.id LEFT JOIN paths r ON r.id = refs.reference
                 GROUP BY p.id ORDER BY p.path",
            )
            .expect("prepare");
        stmt.query_map([], |r| {
            Ok(format!(
                "{} {} {} [{}]",
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<String>>(3)?.unwrap_or_default()
            ))
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
    }
}

/// Writes a small tree with the usual suspects: an executable, a symlink, an empty file, an
/// empty directory and nesting. `seed` changes the contents.
pub fn make_tree(dir: &Path, seed: &str) {
    std::fs::create_dir_all(dir.join("bin")).expect("mkdir");
    std::fs::create_dir_all(dir.join("share/doc/empty")).expect("mkdir");
    std::fs::write(dir.join("bin/tool"), format!("#!/bin/sh\necho {seed}\n")).expect("write");
    std::fs::set_permissions(dir.join("bin/tool"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    std::fs::write(
        dir.join("share/doc/README"),
        format!("readme {seed}\n").repeat(100),
    )
    .expect("write");
    std::fs::write(dir.join("share/empty-file"), "").expect("write");
    std::os::unix::fs::symlink("../share/doc/README", dir.join("bin/readme")).expect("symlink");
}

// ---------------------------------------------------------------------------------------------
// Helpers for cli.rs, nar_vs_nix.rs and bad_input.rs (appended; the ones above are unchanged).

/// The unprivileged user the tests switch to when they run as root ("nobody").
pub const NOBODY: u32 = 65534;

/// Whether this test process runs as root (the owner of /proc/self is our effective uid).
pub fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

pub fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Makes a temporary directory reachable by other users (tempdirs are created 0700).
pub fn open_up(dir: &Path) {
    set_mode(dir, 0o755);
}

pub fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs a prepared command and returns its output.
pub fn output_of(command: &mut Command) -> Output {
    command.output().expect("run noodle")
}

impl Noodle {
    /// An uninitialised store whose root directory is owned by `uid`; the temporary directory
    /// is opened up so that user can reach it.
    pub fn uninitialised_owned_by(uid: u32) -> Self {
        let noodle = Self::uninitialised();
        open_up(noodle.dir.path());
        std::fs::create_dir(noodle.root()).expect("mkdir root");
        std::os::unix::fs::chown(noodle.root(), Some(uid), Some(uid)).expect("chown root");
        noodle
    }

    /// `command()` running as `uid` (and gid `uid`) when we are root; as ourselves otherwise.
    pub fn command_as(&self, uid: u32) -> Command {
        use std::os::unix::process::CommandExt;
        let mut command = self.command();
        if running_as_root() {
            command.uid(uid).gid(uid);
        }
        command
    }

    pub fn run_as(&self, uid: u32, args: &[&str]) -> Output {
        output_of(self.command_as(uid).args(args))
    }

    /// Runs noodle with `input` on its stdin.
    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write;
        use std::process::Stdio;
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn noodle");
        let mut stdin = child.stdin.take().expect("stdin");
        // The child may refuse the archive before reading all of it: a broken pipe is fine.
        let _ = stdin.write_all(input);
        drop(stdin);
        child.wait_with_output().expect("wait for noodle")
    }

    /// `noodle store dump PATH`, which must succeed: the archive bytes.
    pub fn dump(&self, path: &str) -> Vec<u8> {
        let out = self.run(&["store", "dump", path]);
        assert!(
            out.status.success(),
            "noodle store dump {path} failed: {}",
            stderr_of(&out)
        );
        out.stdout
    }

    /// `noodle --json ARGS`, which must succeed, parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let text = self.ok(&all);
        parse_json_output(&text).unwrap_or_else(|e| panic!("bad JSON from {args:?}: {e}\n{text}"))
    }

    /// `store add` with extra options; returns the printed store path.
    pub fn add_with(&self, tree: &Path, options: &[&str]) -> String {
        let mut args = vec!["store", "add"];
        args.extend_from_slice(options);
        args.push(tree.to_str().expect("utf-8 path"));
        let out = self.ok(&args);
        out.trim().to_owned()
    }

    /// References of a valid path, from `path-info --json`.
    pub fn references(&self, path: &str) -> Vec<String> {
        let info = self.json(&["store", "path-info", path]);
        info[0]["references"]
            .as_array()
            .expect("references array")
            .iter()
            .map(|r| r.as_str().expect("string").to_owned())
            .collect()
    }

    /// Invariant 1 and its physical side: every reference of a valid path is valid, and every
    /// valid path's files are there.
    pub fn assert_closure_intact(&self) {
        let conn = rusqlite::Connection::open(self.db_file()).expect("open db");
        let dangling: i64 = conn
            .query_row(
                "SELECT count(*) FROM refs WHERE reference NOT IN (SELECT id FROM paths)
                 OR referrer NOT IN (SELECT id FROM paths)",
                [],
                |r| r.get(0),
            )
            .expect("query");
        assert_eq!(dangling, 0, "a valid path refers to an invalid one");
        let mut stmt = conn.prepare("SELECT path FROM paths").expect("prepare");
        let paths: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        for path in paths {
            assert!(
                self.physical(&path).symlink_metadata().is_ok(),
                "valid path {path} has no files"
            );
        }
    }

    /// Names directly in the physical store directory (without `.links`).
    pub fn store_entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.physical_store())
            .expect("read store")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n != ".links")
            .collect();
        names.sort();
        names
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers for crash.rs and concurrency.rs (appended; the ones above are unchanged).

/// One problem of `store verify --json`: its kind (e.g. "unregistered") and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: String,
    pub path: String,
}

/// The problems not of the `allowed` kinds (e.g. a crash's "unregistered" leftovers).
pub fn bad(problems: &[Problem], allowed: &[&str]) -> Vec<Problem> {
    problems
        .iter()
        .filter(|p| !allowed.contains(&p.kind.as_str()))
        .cloned()
        .collect()
}

/// `noodle` run by the unprivileged user 65534 (needs root), with `home` as HOME (which is
/// given to that user first), none of noodle's variables, and PATH=/usr/bin:/bin: a user on
/// their own store.
pub fn as_nobody(home: &Path) -> Command {
    let status = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(home)
        .status()
        .expect("chown");
    assert!(status.success(), "chown -R {}", home.display());
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "env"])
        .args([
            "-u",
            "NOODLE_ROOT",
            "-u",
            "NOODLE_CHANNEL",
            "-u",
            "NOODLE_PROFILE",
        ])
        .args([
            "-u",
            "XDG_DATA_HOME",
            "-u",
            "XDG_STATE_HOME",
            "PATH=/usr/bin:/bin",
        ])
        .arg(format!("HOME={}", home.display()))
        .arg(BIN);
    command
}

impl Noodle {
    /// `store verify --json EXTRA...`: the exit code and the problems it reported.
    pub fn verify_report(&self, extra: &[&str]) -> (i32, Vec<Problem>) {
        let mut args = vec!["--json", "store", "verify"];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        let text = String::from_utf8_lossy(&out.stdout);
        let report: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "bad JSON from verify {extra:?} ({}): {e}\n{text}\nstderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let problems = report["problems"]
            .as_array()
            .expect("problems array")
            .iter()
            .map(|p| Problem {
                kind: p["kind"].as_str().expect("kind").to_owned(),
                path: p["path"].as_str().expect("path").to_owned(),
            })
            .collect();
        (out.status.code().unwrap_or(-1), problems)
    }

    /// `store verify --check-contents` must find nothing at all (and exit 0).
    pub fn assert_fully_clean(&self, context: &str) {
        let (code, problems) = self.verify_report(&["--check-contents"]);
        assert!(
            problems.is_empty() && code == 0,
            "{context}: verify --check-contents exited {code} with problems {problems:#?}"
        );
    }

    /// After a crash: `store gc` leaves nothing for `verify --check-contents` to find, and
    /// nothing in var/tmp.
    pub fn assert_clean_after_gc(&self, ctx: &str) {
        self.ok(&["store", "gc"]);
        let (code, problems) = self.verify_report(&["--check-contents"]);
        assert!(
            code == 0 && problems.is_empty(),
            "{ctx}: left after gc ({code}): {problems:#?}"
        );
        assert_eq!(self.tmp_entries(), Vec::<String>::new(), "{ctx}: var/tmp");
    }

    /// Valid paths according to the database.
    pub fn valid_paths(&self) -> std::collections::BTreeSet<String> {
        let conn = rusqlite::Connection::open(self.db_file()).expect("open db");
        let mut stmt = conn.prepare("SELECT path FROM paths").expect("prepare");
        let paths = stmt
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        paths
    }

    /// Names in var/tmp (staging and trash directories).
    pub fn tmp_entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.root().join("noodle/var/tmp"))
            .expect("read var/tmp")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Activations the journal has not seen end (0 before the first activation).
    pub fn unfinished_activations(&self) -> i64 {
        let conn = rusqlite::Connection::open(self.db_file()).expect("open db");
        conn.query_row(
            "SELECT count(*) FROM activations
             WHERE state NOT IN ('COMMITTED', 'REVERTED', 'FAILED') AND awaiting_commit = 0",
            [],
            |r| r.get(0),
        )
        .expect("count unfinished activations")
    }

    /// Starts noodle in the background with stdout and stderr captured.
    pub fn spawn(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Child {
        use std::process::Stdio;
        let mut command = self.command();
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        command.spawn().expect("spawn noodle")
    }
}

/// A command's JSON: one document, or JSON lines (activation events) ending with the result.
pub fn parse_json_output(text: &str) -> serde_json::Result<serde_json::Value> {
    serde_json::from_str(text).or_else(|e| {
        text.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map_or(Err(e), serde_json::from_str)
    })
}

/// Polls `cond` every 10 ms until it holds; panics with `what` after `secs` seconds.
pub fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Every regular file under `dir`: path relative to `dir` → (contents, executable).
pub fn regular_files(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, bool)> {
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(dir) {
        let entry = entry.expect("walk");
        if entry.file_type().is_file() {
            let meta = entry.metadata().expect("stat");
            let rel = entry
                .path()
                .strip_prefix(dir)
                .expect("under dir")
                .to_owned();
            let data = std::fs::read(entry.path()).expect("read");
            out.insert(rel, (data, meta.permissions().mode() & 0o100 != 0));
        }
    }
    out
}

/// Processes on the host whose command line is exactly `words` (a sandbox's processes are
/// visible from the host's pid namespace too).
pub fn host_processes(words: &[&str]) -> Vec<String> {
    let wanted: Vec<u8> = words
        .iter()
        .flat_map(|w| [w.as_bytes(), b"\0"].concat())
        .collect();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc") {
        let entry = entry.expect("entry");
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if std::fs::read(entry.path().join("cmdline")).is_ok_and(|c| c == wanted) {
            found.push(pid);
        }
    }
    found
}

/// Asserts that a run was aborted at failure point `point` (`NOODLE_FAILPOINT`).
pub fn assert_aborted_at(out: &Output, point: &str, ctx: &str) {
    use std::os::unix::process::ExitStatusExt;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{ctx}: the failure point was not reached (exit {}): {stderr}",
        out.status
    );
    assert!(
        stderr.contains(&format!("failure point {point} reached")),
        "{ctx}: {stderr}"
    );
}

/// A minimal HTTP/1.0 server on loopback answering every request with `status` (`200 OK`,
/// `404 Not Found`) and `body`; returns its port and the number of requests answered so far.
pub fn serve_http(
    status: &'static str,
    body: &'static [u8],
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&count);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            counter.fetch_add(1, Ordering::SeqCst);
            let head = format!(
                "HTTP/1.0 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body);
        }
    });
    (port, count)
}

/// Copies a store's root like `cp -a`, except that symlinks are hard links to the originals:
/// a symlink never changes (noodle replaces or removes links, it never alters one), and
/// creating one can cost a millisecond on some filesystems, where busybox alone has hundreds.
pub fn copy_root(from: &Path, to: &Path) {
    let mut dirs = Vec::new();
    let mut linked: std::collections::HashMap<(u64, u64), PathBuf> = Default::default();
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.expect("walk the template");
        let dest = to.join(entry.path().strip_prefix(from).expect("under the root"));
        let meta = entry.path().symlink_metadata().expect("lstat");
        if meta.is_dir() {
            std::fs::create_dir(&dest).expect("mkdir");
            dirs.push((dest, meta));
        } else if meta.file_type().is_symlink() {
            std::fs::hard_link(entry.path(), &dest).expect("link a symlink");
        } else if let Some(first) = linked.get(&(meta.dev(), meta.ino())) {
            std::fs::hard_link(first, &dest).expect("hard link");
        } else {
            std::fs::copy(entry.path(), &dest).expect("copy a file");
            set_times(&dest, &meta);
            if meta.nlink() > 1 {
                linked.insert((meta.dev(), meta.ino()), dest);
            }
        }
    }
    // Deepest first, once their contents are in.
    for (dir, meta) in dirs.iter().rev() {
        set_times(dir, meta);
        std::fs::set_permissions(dir, meta.permissions()).expect("chmod");
    }
}

fn set_times(path: &Path, meta: &std::fs::Metadata) {
    let times = std::fs::FileTimes::new()
        .set_accessed(meta.accessed().expect("atime"))
        .set_modified(meta.modified().expect("mtime"));
    std::fs::File::open(path)
        .and_then(|f| f.set_times(times))
        .unwrap_or_else(|e| panic!("set the times of {}: {e}", path.display()));
}

/// Runs `cases` on `workers` threads; returns those for which `run` said true.
pub fn run_cases<C: Copy + Send + Sync>(
    workers: usize,
    cases: &[C],
    run: impl Fn(C) -> bool + Sync,
) -> Vec<C> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let hits = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..workers.min(cases.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&case) = cases.get(i) else { break };
                if run(case) {
                    hits.lock().expect("lock").push(i);
                }
            });
        }
    });
    let mut hits = hits.into_inner().expect("lock");
    hits.sort_unstable();
    hits.into_iter().map(|i| cases[i]).collect()
}

/// Rewrites a read-only store file as a careless admin would (`chmod u+w`, write); with
/// `restore_metadata`, then puts its mode and modification time back, so only its size or
/// contents tell.
pub fn tamper(file: &Path, contents: &[u8], restore_metadata: bool) {
    let mode = std::fs::metadata(file).expect("stat").permissions().mode() & 0o7777;
    set_mode(file, mode | 0o200);
    std::fs::write(file, contents).expect("write");
    if restore_metadata {
        set_mode(file, mode);
        std::fs::File::options()
            .write(true)
            .open(file)
            .expect("open")
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1))
            .expect("set mtime");
    }
}
