//! What the database remembers about builds (DESIGN.md §4): the plan each output was built
//! from, and every build attempt with its log and result.

use rusqlite::{params, OptionalExtension};

use crate::db::Db;
use crate::error::Result;

/// Whether an attempt built an output to keep or rebuilt it to compare (`--check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildKind {
    Build,
    Check,
}

impl BuildKind {
    fn as_str(self) -> &'static str {
        match self {
            BuildKind::Build => "build",
            BuildKind::Check => "check",
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildRecord {
    pub id: i64,
    pub plan_hash: String,
    pub output: String,
    pub kind: String,
    /// `running`, `succeeded` or `failed`; a `running` row whose process is gone was interrupted.
    pub status: String,
    pub pid: u32,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    /// The compressed log file, relative to `var/log`.
    pub log: Option<String>,
    pub nar_hash: Option<String>,
    pub error: Option<String>,
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Db {
    /// Remembers the plan an output is built from (idempotent: a plan hash names its contents).
    pub fn record_plan(&mut self, hash: &str, output: &str, json: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT OR IGNORE INTO plans (hash, output, json) VALUES (?1, ?2, ?3)",
                params![hash, output, json],
            )
        })?;
        Ok(())
    }

    /// The plan (hash and canonical JSON) recorded for an output path.
    pub fn plan_of_output(&self, output: &str) -> Result<Option<(String, String)>> {
        self.retry(|c| {
            c.query_row(
                "SELECT hash, json FROM plans WHERE output = ?1",
                [output],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        })
    }

    /// Records an attempt as running, and the plan it builds, in one transaction.
    pub fn start_build(
        &mut self,
        plan_hash: &str,
        output: &str,
        plan_json: &str,
        kind: BuildKind,
        log: &str,
    ) -> Result<i64> {
        let pid = std::process::id();
        self.write(|tx| {
            tx.execute(
                "INSERT OR IGNORE INTO plans (hash, output, json) VALUES (?1, ?2, ?3)",
                params![plan_hash, output, plan_json],
            )?;
            tx.execute(
                "INSERT INTO builds (plan_hash, output, kind, status, pid, started_at, log)
                 VALUES (?1, ?2, ?3, 'running', ?4, ?5, ?6)",
                params![plan_hash, output, kind.as_str(), pid, unix_now(), log],
            )?;
            Ok(tx.last_insert_rowid())
        })
    }

    /// Records how an attempt ended: `nar_hash` on success, `error` on failure.
    pub fn finish_build(
        &mut self,
        id: i64,
        nar_hash: Option<&str>,
        error: Option<&str>,
    ) -> Result<()> {
        let status = if error.is_none() {
            "succeeded"
        } else {
            "failed"
        };
        self.write(|tx| {
            tx.execute(
                "UPDATE builds SET status = ?2, finished_at = ?3, nar_hash = ?4, error = ?5
                 WHERE id = ?1",
                params![id, status, unix_now(), nar_hash, error],
            )
        })?;
        Ok(())
    }

    /// Every attempt to build `output`, oldest first.
    pub fn builds_of(&self, output: &str) -> Result<Vec<BuildRecord>> {
        self.retry(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, plan_hash, output, kind, status, pid, started_at, finished_at, log,
                        nar_hash, error
                 FROM builds WHERE output = ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map([output], |r| {
                Ok(BuildRecord {
                    id: r.get(0)?,
                    plan_hash: r.get(1)?,
                    output: r.get(2)?,
                    kind: r.get(3)?,
                    status: r.get(4)?,
                    pid: r.get(5)?,
                    started_at: r.get(6)?,
                    finished_at: r.get(7)?,
                    log: r.get(8)?,
                    nar_hash: r.get(9)?,
                    error: r.get(10)?,
                })
            })?;
            rows.collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_are_recorded_in_order_with_their_outcome() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut db = Db::open(&dir.path().join("db.sqlite"), true).expect("open");
        db.record_plan("blake3:aa", "/s/x-out", "{}").expect("plan");
        db.record_plan("blake3:aa", "/s/x-out", "{}")
            .expect("again");
        assert_eq!(
            db.plan_of_output("/s/x-out").expect("query"),
            Some(("blake3:aa".into(), "{}".into()))
        );
        let first = db
            .start_build("blake3:aa", "/s/x-out", "{}", BuildKind::Build, "a.log.zst")
            .expect("start");
        db.finish_build(first, None, Some("exit 1"))
            .expect("finish");
        let second = db
            .start_build("blake3:aa", "/s/x-out", "{}", BuildKind::Build, "b.log.zst")
            .expect("start");
        db.finish_build(second, Some("blake3:bb"), None)
            .expect("finish");
        let builds = db.builds_of("/s/x-out").expect("builds");
        assert_eq!(builds.len(), 2);
        assert_eq!(builds[0].status, "failed");
        assert_eq!(builds[0].error.as_deref(), Some("exit 1"));
        assert_eq!(builds[1].status, "succeeded");
        assert_eq!(builds[1].nar_hash.as_deref(), Some("blake3:bb"));
        assert_eq!(builds[1].log.as_deref(), Some("b.log.zst"));
    }
}
