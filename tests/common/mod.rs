//! Shared helpers for the integration tests: a private store under a temporary root, and the
//! real `noodle` binary run against it.
#![allow(dead_code)]

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
            .env_remove("NOODLE_ROOT");
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
