//! Differences between two generations, read from their manifests and the database's
//! reference graph (never from their trees), so it costs the same for any profile size.

use noodle_store::db::Db;
use serde::Serialize;

use crate::error::Result;
use crate::manifest::{Changes, Manifest};

#[derive(Debug, Clone, Serialize)]
pub struct Closure {
    pub paths: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    pub added: Vec<PackageRef>,
    pub removed: Vec<PackageRef>,
    pub upgraded: Vec<VersionChange>,
    pub downgraded: Vec<VersionChange>,
    /// Same version, another store path (its recipe or a dependency changed).
    pub rebuilt: Vec<VersionChange>,
    pub closure_before: Closure,
    pub closure_after: Closure,
    pub closure_delta_bytes: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PackageRef {
    pub name: String,
    pub version: String,
    pub path: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct VersionChange {
    pub name: String,
    pub from: String,
    pub to: String,
    pub from_path: String,
    pub to_path: String,
}

/// The number of paths and NAR bytes in the closure of `path`.
pub fn closure_size(db: &Db, path: &str) -> Result<Closure> {
    let (paths, bytes): (i64, i64) = db.retry(|c| {
        c.prepare_cached(
            "WITH RECURSIVE c(id) AS (
                 SELECT id FROM paths WHERE path = ?1
                 UNION SELECT refs.reference FROM refs JOIN c ON refs.referrer = c.id)
             SELECT count(*), coalesce(sum(p.nar_size), 0) FROM paths p JOIN c ON p.id = c.id",
        )?
        .query_row([path], |r| Ok((r.get(0)?, r.get(1)?)))
    })?;
    Ok(Closure {
        paths: paths as u64,
        bytes: bytes as u64,
    })
}

fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (semver::Version::parse(a), semver::Version::parse(b)) {
        (Ok(a), Ok(b)) => a.cmp(&b),
        _ => a.cmp(b),
    }
}

pub fn diff(
    db: &Db,
    (before_path, before): (&str, &Manifest),
    (after_path, after): (&str, &Manifest),
) -> Result<Diff> {
    let Changes {
        added,
        removed,
        changed,
    } = before.changes_to(after);
    let reference = |p: crate::manifest::Package| PackageRef {
        name: p.name,
        version: p.version,
        path: p.path,
    };
    let mut diff = Diff {
        added: added.into_iter().map(reference).collect(),
        removed: removed.into_iter().map(reference).collect(),
        upgraded: Vec::new(),
        downgraded: Vec::new(),
        rebuilt: Vec::new(),
        closure_before: closure_size(db, before_path)?,
        closure_after: closure_size(db, after_path)?,
        closure_delta_bytes: 0,
    };
    diff.closure_delta_bytes = diff.closure_after.bytes as i64 - diff.closure_before.bytes as i64;
    for (a, b) in changed {
        let change = VersionChange {
            name: b.name,
            from: a.version.clone(),
            to: b.version.clone(),
            from_path: a.path,
            to_path: b.path,
        };
        match version_order(&a.version, &b.version) {
            std::cmp::Ordering::Less => diff.upgraded.push(change),
            std::cmp::Ordering::Greater => diff.downgraded.push(change),
            std::cmp::Ordering::Equal if change.from_path != change.to_path => {
                diff.rebuilt.push(change)
            }
            // Only the requirement or priority changed: the same software.
            std::cmp::Ordering::Equal => {}
        }
    }
    Ok(diff)
}
