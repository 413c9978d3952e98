//! The `generations` table: for each generation, its store path, creation time and a one-line
//! summary of what changed, so `profile generations` reads one query instead of a thousand
//! manifests. The links stay the truth: a record whose link is gone, or that names another
//! store path than the link does, is not used.

use std::collections::HashMap;
use std::path::Path;

use noodle_store::Store;
use rusqlite::params;

use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub path: String,
    pub created_at: i64,
    pub summary: String,
}

/// Records are keyed by the profile's path as the store sees it: inside the root, the logical
/// path (`/noodle/var/profiles/system`), so a root copied or moved elsewhere keeps them;
/// outside it (a user's `~/.local/state/noodle/profile`), the path itself.
pub fn key(store: &Store, profile: &Path) -> String {
    match profile.strip_prefix(&store.dirs().root) {
        Ok(rel) => Path::new("/").join(rel).to_string_lossy().into_owned(),
        Err(_) => profile.to_string_lossy().into_owned(),
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn record(store: &mut Store, profile: &Path, number: u64, record: &Record) -> Result<()> {
    let profile = key(store, profile);
    store.db_mut().write(|tx| {
        tx.execute(
            "INSERT OR REPLACE INTO generations (profile, number, path, created_at, summary)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                profile,
                number as i64,
                record.path,
                record.created_at,
                record.summary
            ],
        )
    })?;
    Ok(())
}

pub fn load(store: &Store, profile: &Path) -> Result<HashMap<u64, Record>> {
    let profile = key(store, profile);
    Ok(store.db().retry(|c| {
        let mut stmt = c.prepare_cached(
            "SELECT number, path, created_at, summary FROM generations WHERE profile = ?1",
        )?;
        let rows = stmt.query_map([&profile], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                Record {
                    path: r.get(1)?,
                    created_at: r.get(2)?,
                    summary: r.get(3)?,
                },
            ))
        })?;
        rows.collect()
    })?)
}

pub fn forget(store: &mut Store, profile: &Path, numbers: &[u64]) -> Result<()> {
    let profile = key(store, profile);
    store.db_mut().write(|tx| {
        let mut stmt =
            tx.prepare_cached("DELETE FROM generations WHERE profile = ?1 AND number = ?2")?;
        for number in numbers {
            stmt.execute(params![profile, *number as i64])?;
        }
        Ok(())
    })?;
    Ok(())
}
