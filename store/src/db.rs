//! The store database (DESIGN.md §4): SQLite in WAL mode, schema version in `user_version`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{
    params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior,
};

use crate::error::{Result, StoreError};
use crate::hash::Blake3;

/// Each entry moves the schema up one version; never edit one that has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: paths, references, and the per-entry records that let `verify` name damaged files.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     CREATE TABLE paths (
         id INTEGER PRIMARY KEY,
         path TEXT NOT NULL UNIQUE,
         nar_hash TEXT NOT NULL,
         nar_size INTEGER NOT NULL,
         registered_at INTEGER NOT NULL,
         deriver TEXT,
         ca TEXT,
         signatures TEXT
     );
     CREATE TABLE refs (
         referrer INTEGER NOT NULL REFERENCES paths(id) ON DELETE CASCADE,
         reference INTEGER NOT NULL REFERENCES paths(id),
         PRIMARY KEY (referrer, reference)
     ) WITHOUT ROWID;
     CREATE INDEX refs_reference ON refs(reference);
     CREATE TRIGGER delete_self_refs BEFORE DELETE ON paths BEGIN
         DELETE FROM refs WHERE referrer = old.id AND reference = old.id;
     END;
     CREATE TABLE entries (
         path_id INTEGER NOT NULL REFERENCES paths(id) ON DELETE CASCADE,
         rel BLOB NOT NULL,
         kind TEXT NOT NULL CHECK (kind IN ('directory', 'regular', 'executable', 'symlink')),
         size INTEGER NOT NULL,
         hash BLOB,
         target BLOB,
         PRIMARY KEY (path_id, rel)
     ) WITHOUT ROWID;
     CREATE INDEX entries_hash ON entries(hash) WHERE hash IS NOT NULL;",
    // 2: build plans (what an output was built from) and build attempts with their logs.
    "CREATE TABLE plans (
         hash TEXT PRIMARY KEY,
         output TEXT NOT NULL,
         json TEXT NOT NULL
     ) WITHOUT ROWID;
     CREATE INDEX plans_output ON plans(output);
     CREATE TABLE builds (
         id INTEGER PRIMARY KEY,
         plan_hash TEXT NOT NULL,
         output TEXT NOT NULL,
         kind TEXT NOT NULL CHECK (kind IN ('build', 'check')),
         status TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
         pid INTEGER NOT NULL,
         started_at INTEGER NOT NULL,
         finished_at INTEGER,
         log TEXT,
         nar_hash TEXT,
         error TEXT
     );
     CREATE INDEX builds_output ON builds(output);",
    // 3: what each profile generation holds, in brief, so listing 1,000 generations reads no
    // manifests. The generation links stay the truth: a row whose link is gone is ignored.
    "CREATE TABLE generations (
         profile TEXT NOT NULL,
         number INTEGER NOT NULL,
         path TEXT NOT NULL,
         created_at INTEGER NOT NULL,
         summary TEXT NOT NULL,
         PRIMARY KEY (profile, number)
     ) WITHOUT ROWID;",
    // 4: the activation journal (DESIGN.md §8). A row's state is written before the work it
    // names starts; times are microseconds since the epoch.
    "CREATE TABLE activations (
         id INTEGER PRIMARY KEY,
         profile TEXT NOT NULL,
         from_generation INTEGER,
         to_generation INTEGER NOT NULL,
         to_path TEXT NOT NULL,
         strategy TEXT NOT NULL,
         state TEXT NOT NULL,
         reason TEXT,
         reverting INTEGER NOT NULL DEFAULT 0,
         awaiting_commit INTEGER NOT NULL DEFAULT 0,
         options TEXT NOT NULL,
         pid INTEGER NOT NULL,
         started_at INTEGER NOT NULL,
         finished_at INTEGER
     );
     CREATE INDEX activations_profile ON activations(profile, id);
     CREATE TABLE activation_events (
         id INTEGER PRIMARY KEY,
         activation INTEGER NOT NULL REFERENCES activations(id),
         at INTEGER NOT NULL,
         what TEXT NOT NULL,
         note TEXT
     );
     CREATE INDEX activation_events_activation ON activation_events(activation);
     CREATE TABLE activation_runs (
         id INTEGER PRIMARY KEY,
         activation INTEGER NOT NULL REFERENCES activations(id),
         generation INTEGER,
         kind TEXT NOT NULL,
         package TEXT NOT NULL,
         name TEXT NOT NULL,
         attempt INTEGER NOT NULL,
         required INTEGER NOT NULL,
         started_at INTEGER NOT NULL,
         duration_us INTEGER NOT NULL,
         ok INTEGER NOT NULL,
         outcome TEXT NOT NULL,
         output TEXT NOT NULL,
         output_bytes INTEGER NOT NULL
     );
     CREATE INDEX activation_runs_activation ON activation_runs(activation);",
];

pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub const TIMEOUT_ENV: &str = "NOODLE_DB_TIMEOUT";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryRecordKind {
    Directory,
    Regular { executable: bool, hash: Blake3 },
    Symlink { target: Vec<u8> },
}

/// What the store recorded about one entry of a path's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRecord {
    pub rel: Vec<u8>,
    pub size: u64,
    pub kind: EntryRecordKind,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PathInfo {
    #[serde(skip)]
    pub id: i64,
    pub path: String,
    pub nar_hash: String,
    pub nar_size: u64,
    pub registered_at: i64,
    pub references: Vec<String>,
    pub deriver: Option<String>,
    pub ca: Option<String>,
    pub signatures: Vec<String>,
}

/// A regular file of a valid path, as recorded.
pub struct StoredFile {
    pub path: String,
    pub rel: Vec<u8>,
    pub size: u64,
    pub hash: Blake3,
    pub executable: bool,
}

/// A path to register, with everything recorded about it.
pub struct Registration<'a> {
    pub path: &'a str,
    pub nar_hash: &'a Blake3,
    pub nar_size: u64,
    pub references: &'a [String],
    pub ca: Option<&'a str>,
    /// For a build output: the hash of the plan it was built from.
    pub deriver: Option<&'a str>,
    pub entries: &'a [EntryRecord],
    /// `name:base64` signatures over the path's fingerprint (from a cache or bundle).
    pub signatures: &'a [String],
}

/// Signatures are kept one per line in `paths.signatures` (NULL when there are none).
fn join_signatures(signatures: &[String]) -> Option<String> {
    (!signatures.is_empty()).then(|| signatures.join("\n"))
}

fn split_signatures(text: Option<String>) -> Vec<String> {
    text.map(|t| t.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

pub struct Db {
    conn: Connection,
    path: PathBuf,
    timeout: Duration,
}

fn timeout_from_env() -> Duration {
    let secs = std::env::var(TIMEOUT_ENV)
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(60.0);
    Duration::from_secs_f64(secs.max(0.0))
}

impl Db {
    /// Opens the database, creating it when `create` is set, and brings its schema up to date.
    pub fn open(path: &Path, create: bool) -> Result<Self> {
        if !create && !path.exists() {
            let root = path.ancestors().nth(4).unwrap_or(Path::new("/")).to_owned();
            return Err(StoreError::NotInitialised(root));
        }
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let conn = Connection::open_with_flags(path, flags).map_err(|e| StoreError::db(path, e))?;
        let mut db = Self {
            conn,
            path: path.to_owned(),
            timeout: timeout_from_env(),
        };
        db.configure()?;
        db.migrate()?;
        Ok(db)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) {
            return StoreError::DbBusy {
                path: self.path.clone(),
                seconds: self.timeout.as_secs(),
            };
        }
        StoreError::db(&self.path, e)
    }

    fn configure(&mut self) -> Result<()> {
        self.conn
            .busy_timeout(self.timeout)
            .map_err(|e| self.err(e))?;
        // WAL lets readers run beside a writer; FULL syncs each commit so a registration
        // that returned survives a power cut.
        let mode: String =
            self.retry(|c| c.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)))?;
        if mode != "wal" {
            return Err(StoreError::DbCorrupt {
                path: self.path.clone(),
                detail: format!("cannot switch to WAL journal mode (got {mode})"),
            });
        }
        self.conn
            .execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .map_err(|e| self.err(e))
    }

    /// Runs `f`, retrying while the database is busy beyond SQLite's own busy handler (which
    /// does not cover every case, e.g. WAL recovery), until the timeout.
    pub fn retry<T>(&self, mut f: impl FnMut(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let start = Instant::now();
        loop {
            match f(&self.conn) {
                Err(e)
                    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                        && start.elapsed() < self.timeout =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return other.map_err(|e| self.err(e)),
            }
        }
    }

    /// Runs `f` (which reads through this handle) in one read transaction: one snapshot and
    /// one lock acquisition instead of one per query, for code that makes thousands of small
    /// reads (planning a profile generation of 1,000 packages).
    pub fn reading<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        self.retry(|c| c.execute_batch("BEGIN DEFERRED"))?;
        let result = f();
        // A read transaction has nothing to keep: ending it cannot lose anything.
        let _ = self.conn.execute_batch("COMMIT");
        result
    }

    /// A write transaction, taken up front so two writers never deadlock upgrading locks.
    pub fn write<T>(&mut self, f: impl Fn(&Transaction<'_>) -> rusqlite::Result<T>) -> Result<T> {
        let start = Instant::now();
        loop {
            let attempt: rusqlite::Result<T> = (|| {
                let tx = self
                    .conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)?;
                let value = f(&tx)?;
                tx.commit()?;
                Ok(value)
            })();
            match attempt {
                Err(e)
                    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                        && start.elapsed() < self.timeout =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return other.map_err(|e| self.err(e)),
            }
        }
    }

    fn migrate(&mut self) -> Result<()> {
        let version: i64 = self.retry(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0)))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::DbTooNew {
                path: self.path.clone(),
                found: version,
                known: SCHEMA_VERSION,
            });
        }
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        self.write(|tx| {
            // Re-read inside the lock: another process may have migrated meanwhile.
            let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
                tx.execute_batch(sql)?;
                tx.pragma_update(None, "user_version", index as i64 + 1)?;
            }
            Ok(())
        })
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        self.retry(|c| {
            c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()
        })
    }

    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [key, value],
            )
        })
        .map(drop)
    }

    pub fn set_meta_if_absent(&mut self, key: &str, value: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)",
                [key, value],
            )
        })
        .map(drop)
    }

    pub fn path_id(&self, path: &str) -> Result<Option<i64>> {
        self.retry(|c| {
            c.query_row("SELECT id FROM paths WHERE path = ?1", [path], |r| r.get(0))
                .optional()
        })
    }

    pub fn is_valid(&self, path: &str) -> Result<bool> {
        Ok(self.path_id(path)?.is_some())
    }

    pub fn path_info(&self, path: &str) -> Result<Option<PathInfo>> {
        let row = self.retry(|c| {
            c.query_row(
                "SELECT id, path, nar_hash, nar_size, registered_at, deriver, ca, signatures FROM paths WHERE path = ?1",
                [path],
                |r| {
                    Ok(PathInfo {
                        id: r.get(0)?,
                        path: r.get(1)?,
                        nar_hash: r.get(2)?,
                        nar_size: r.get::<_, i64>(3)? as u64,
                        registered_at: r.get(4)?,
                        deriver: r.get(5)?,
                        ca: r.get(6)?,
                        references: Vec::new(),
                        signatures: split_signatures(r.get(7)?),
                    })
                },
            )
            .optional()
        })?;
        let Some(mut info) = row else { return Ok(None) };
        info.references = self.retry(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT p.path FROM refs JOIN paths p ON p.id = refs.reference
                 WHERE refs.referrer = ?1 ORDER BY p.path",
            )?;
            let rows = stmt.query_map([info.id], |r| r.get(0))?;
            rows.collect()
        })?;
        Ok(Some(info))
    }

    /// Registers a path, its references and its entries in one transaction. References must be
    /// valid already (invariant 1); the foreign keys refuse anything else.
    pub fn register(&mut self, reg: &Registration<'_>) -> Result<bool> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.write(|tx| {
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO paths (path, nar_hash, nar_size, registered_at, ca, deriver, signatures)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    reg.path,
                    reg.nar_hash.to_string(),
                    reg.nar_size as i64,
                    now,
                    reg.ca,
                    reg.deriver,
                    join_signatures(reg.signatures)
                ],
            )?;
            if inserted == 0 {
                return Ok(false);
            }
            let id = tx.last_insert_rowid();
            {
                let mut add_ref = tx.prepare_cached(
                    "INSERT INTO refs (referrer, reference) SELECT ?1, id FROM paths WHERE path = ?2",
                )?;
                for reference in reg.references {
                    if add_ref.execute(params![id, reference])? == 0 {
                        return Err(rusqlite::Error::SqliteFailure(
                            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY),
                            Some(format!("reference {reference} is not a valid path")),
                        ));
                    }
                }
                let mut add_entry = tx.prepare_cached(
                    "INSERT INTO entries (path_id, rel, kind, size, hash, target) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                for entry in reg.entries {
                    let (kind, hash, target) = match &entry.kind {
                        EntryRecordKind::Directory => ("directory", None, None),
                        EntryRecordKind::Regular { executable, hash } => (
                            if *executable { "executable" } else { "regular" },
                            Some(hash.as_bytes().as_slice()),
                            None,
                        ),
                        EntryRecordKind::Symlink { target } => ("symlink", None, Some(target.as_slice())),
                    };
                    add_entry.execute(params![id, entry.rel, kind, entry.size as i64, hash, target])?;
                }
            }
            Ok(true)
        })
    }

    pub fn entries(&self, path_id: i64) -> Result<Vec<EntryRecord>> {
        self.retry(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT rel, kind, size, hash, target FROM entries WHERE path_id = ?1 ORDER BY rel",
            )?;
            let rows = stmt.query_map([path_id], |r| {
                let kind: String = r.get(1)?;
                let hash: Option<Vec<u8>> = r.get(3)?;
                let hash = hash
                    .and_then(|h| <[u8; 32]>::try_from(h).ok())
                    .map(Blake3::from_bytes);
                let kind = match (kind.as_str(), hash) {
                    ("directory", _) => EntryRecordKind::Directory,
                    ("symlink", _) => EntryRecordKind::Symlink {
                        target: r.get::<_, Option<Vec<u8>>>(4)?.unwrap_or_default(),
                    },
                    (kind, Some(hash)) => EntryRecordKind::Regular {
                        executable: kind == "executable",
                        hash,
                    },
                    (kind, None) => {
                        return Err(rusqlite::Error::InvalidColumnType(
                            3,
                            format!("hash of {kind} entry"),
                            rusqlite::types::Type::Null,
                        ))
                    }
                };
                Ok(EntryRecord {
                    rel: r.get(0)?,
                    size: r.get::<_, i64>(2)? as u64,
                    kind,
                })
            })?;
            rows.collect()
        })
    }

    /// Every valid path, by id.
    pub fn all_paths(&self) -> Result<HashMap<i64, String>> {
        self.retry(|c| {
            let mut stmt = c.prepare_cached("SELECT id, path FROM paths")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }

    /// Every valid path with its NAR hash and size.
    pub fn all_path_infos(&self) -> Result<Vec<(i64, String, String, u64)>> {
        self.retry(|c| {
            let mut stmt =
                c.prepare_cached("SELECT id, path, nar_hash, nar_size FROM paths ORDER BY path")?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, i64>(3)? as u64))
            })?;
            rows.collect()
        })
    }

    /// Every reference edge (referrer, reference).
    pub fn all_refs(&self) -> Result<Vec<(i64, i64)>> {
        self.retry(|c| {
            let mut stmt = c.prepare_cached("SELECT referrer, reference FROM refs")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }

    /// The closure of `path` (following references, or referrers), `path` included, sorted.
    pub fn closure(&self, path: &str, referrers: bool) -> Result<Vec<String>> {
        let sql = if referrers {
            "WITH RECURSIVE c(id) AS (
                 SELECT id FROM paths WHERE path = ?1
                 UNION SELECT refs.referrer FROM refs JOIN c ON refs.reference = c.id)
             SELECT p.path FROM paths p JOIN c ON p.id = c.id ORDER BY p.path"
        } else {
            "WITH RECURSIVE c(id) AS (
                 SELECT id FROM paths WHERE path = ?1
                 UNION SELECT refs.reference FROM refs JOIN c ON refs.referrer = c.id)
             SELECT p.path FROM paths p JOIN c ON p.id = c.id ORDER BY p.path"
        };
        self.retry(|c| {
            let mut stmt = c.prepare_cached(sql)?;
            let rows = stmt.query_map([path], |r| r.get(0))?;
            rows.collect()
        })
    }

    /// Valid paths that refer to `id`, other than itself.
    pub fn referrers(&self, id: i64) -> Result<Vec<String>> {
        self.retry(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT p.path FROM refs JOIN paths p ON p.id = refs.referrer
                 WHERE refs.reference = ?1 AND refs.referrer != ?1 ORDER BY p.path",
            )?;
            let rows = stmt.query_map([id], |r| r.get(0))?;
            rows.collect()
        })
    }

    /// Invalidates paths in one transaction. `ids` must be closed under referrers (no valid path
    /// may keep referring to one of them); the foreign keys refuse anything else.
    pub fn invalidate(&mut self, ids: &[i64]) -> Result<()> {
        self.write(|tx| {
            tx.execute_batch("CREATE TEMP TABLE IF NOT EXISTS doomed (id INTEGER PRIMARY KEY); DELETE FROM doomed;")?;
            {
                let mut add = tx.prepare_cached("INSERT INTO doomed (id) VALUES (?1)")?;
                for id in ids {
                    add.execute([id])?;
                }
            }
            tx.execute("DELETE FROM refs WHERE referrer IN (SELECT id FROM doomed)", [])?;
            tx.execute("DELETE FROM paths WHERE id IN (SELECT id FROM doomed)", [])?;
            tx.execute("DELETE FROM doomed", [])?;
            Ok(())
        })
    }

    /// Content hashes of regular files of valid paths, for the link farm.
    pub fn regular_files(&self) -> Result<Vec<StoredFile>> {
        self.retry(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT p.path, e.rel, e.size, e.hash, e.kind = 'executable' FROM entries e
                 JOIN paths p ON p.id = e.path_id WHERE e.hash IS NOT NULL AND e.size > 0",
            )?;
            let rows = stmt.query_map([], |r| {
                let hash: Vec<u8> = r.get(3)?;
                let hash = <[u8; 32]>::try_from(hash).map_err(|_| {
                    rusqlite::Error::InvalidColumnType(
                        3,
                        "hash".into(),
                        rusqlite::types::Type::Blob,
                    )
                })?;
                Ok(StoredFile {
                    path: r.get(0)?,
                    rel: r.get(1)?,
                    size: r.get::<_, i64>(2)? as u64,
                    hash: Blake3::from_bytes(hash),
                    executable: r.get(4)?,
                })
            })?;
            rows.collect()
        })
    }

    /// The valid path `<store_dir>/<digest>-<name>` whatever its name (a binary cache is asked
    /// by digest alone). A range over the path index: every such path sorts between
    /// `<digest>-` and `<digest>.` ('.' follows '-' in ASCII).
    pub fn path_by_digest(&self, store_dir: &str, digest: &str) -> Result<Option<String>> {
        let low = format!("{store_dir}/{digest}-");
        let high = format!("{store_dir}/{digest}.");
        self.retry(|c| {
            c.query_row(
                "SELECT path FROM paths WHERE path >= ?1 AND path < ?2 ORDER BY path LIMIT 1",
                [&low, &high],
                |r| r.get(0),
            )
            .optional()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg<'a>(path: &'a str, refs: &'a [String], hash: &'a Blake3) -> Registration<'a> {
        Registration {
            path,
            nar_hash: hash,
            nar_size: 8,
            references: refs,
            ca: None,
            deriver: None,
            entries: &[],
            signatures: &[],
        }
    }

    #[test]
    fn schema_references_and_closure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("db.sqlite");
        let mut db = Db::open(&file, true).expect("open");
        let h = Blake3::of(b"x");
        assert!(db.register(&reg("/s/a", &[], &h)).expect("a"));
        assert!(
            !db.register(&reg("/s/a", &[], &h)).expect("a again"),
            "registered twice"
        );
        db.register(&reg("/s/b", &["/s/a".into()], &h)).expect("b");
        db.register(&reg("/s/c", &["/s/b".into(), "/s/c".into()], &h))
            .expect("a path may refer to itself");
        assert!(db
            .register(&reg("/s/d", &["/s/missing".into()], &h))
            .is_err());
        assert!(
            !db.is_valid("/s/d").expect("query"),
            "failed registration left nothing"
        );
        assert_eq!(
            db.closure("/s/c", false).expect("closure"),
            ["/s/a", "/s/b", "/s/c"]
        );
        assert_eq!(
            db.closure("/s/a", true).expect("referrers"),
            ["/s/a", "/s/b", "/s/c"]
        );
        let a = db.path_id("/s/a").expect("q").expect("valid");
        assert!(
            db.invalidate(&[a]).is_err(),
            "a referenced path cannot be invalidated"
        );
        let ids: Vec<i64> = ["/s/a", "/s/b", "/s/c"]
            .iter()
            .map(|p| db.path_id(p).expect("q").expect("valid"))
            .collect();
        db.invalidate(&ids).expect("whole closure");
        assert!(db.all_paths().expect("all").is_empty());
        drop(db);
        let db = Db::open(&file, false).expect("reopen");
        let version: i64 = db
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("v");
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn refuses_newer_schema_and_garbage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("db.sqlite");
        drop(Db::open(&file, true).expect("open"));
        Connection::open(&file)
            .expect("raw")
            .pragma_update(None, "user_version", 99)
            .expect("bump");
        let err = Db::open(&file, false).err().expect("too new");
        assert!(err.to_string().contains("newer"), "{err}");
        let garbage = dir.path().join("garbage.sqlite");
        std::fs::write(&garbage, vec![0x42u8; 8192]).expect("write");
        let err = Db::open(&garbage, false).err().expect("corrupt");
        assert!(matches!(err, StoreError::DbCorrupt { .. }), "{err}");
    }
}
