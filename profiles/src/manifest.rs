//! `manifest.json`: what a generation holds. Written into the generation's store path, so it
//! is as immutable as the tree beside it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{ProfileError, Result};

pub const FILE: &str = "manifest.json";
pub const FORMAT_VERSION: u32 = 1;
/// As in Nix: a lower number wins a conflict.
pub const DEFAULT_PRIORITY: i32 = 5;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub version: u32,
    /// Sorted by name; a name appears once.
    pub packages: Vec<Package>,
    /// The noodle.lock entries of the packages' closure (TOML), empty when none came from a
    /// channel.
    pub lock: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    pub name: String,
    pub version: String,
    /// Full logical store path.
    pub path: String,
    pub nar_hash: String,
    pub priority: i32,
    /// The requirement it was installed with (`^1.2`), which `update` keeps to; `None` for a
    /// store path installed as such.
    pub requested: Option<String>,
    pub health: Vec<HealthCheck>,
    pub activation: Option<String>,
}

/// A health check a package declares (its recipe's `[[health]]`), run by activation. The same
/// fields as the builder's `recipe::HealthCheck`: profiles do not depend on the builder, and
/// the CLI converts one into the other through serde, which fails loudly should they drift.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub name: String,
    pub command: Vec<String>,
    pub timeout: u64,
    pub retries: u32,
    pub interval: u64,
    pub required: bool,
    /// `pre`: run before the switch, a veto; `post` (the default): in the health window.
    #[serde(default, skip_serializing_if = "CheckTime::is_post")]
    pub when: CheckTime,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckTime {
    Pre,
    #[default]
    Post,
}

impl CheckTime {
    pub fn is_post(&self) -> bool {
        *self == CheckTime::Post
    }
}

/// How many changes a summary names before it counts the rest.
const SUMMARY_ITEMS: usize = 6;

/// What changed between two manifests, by package name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    pub added: Vec<Package>,
    pub removed: Vec<Package>,
    /// (before, after): same name, and another version, store path, requirement or priority.
    pub changed: Vec<(Package, Package)>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    /// One line: `+hello 1.0.0, crypto 1.2.3 → 1.2.5, -greeter 1.0.0`; past a few changes,
    /// the count of the rest (`… and 995 more`).
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        parts.extend(
            self.added
                .iter()
                .map(|p| format!("+{} {}", p.name, p.version)),
        );
        parts.extend(self.changed.iter().map(|(a, b)| {
            let mut text = if a.version != b.version {
                format!("{} {} → {}", b.name, a.version, b.version)
            } else if a.path != b.path {
                format!("{} {} (rebuilt)", b.name, b.version)
            } else {
                format!("{} {}", b.name, b.version)
            };
            if a.requested != b.requested {
                let shown = |r: &Option<String>| r.clone().unwrap_or_else(|| "a store path".into());
                text += &format!(
                    " (requirement {} → {})",
                    shown(&a.requested),
                    shown(&b.requested)
                );
            }
            if a.priority != b.priority {
                text += &format!(" (priority {} → {})", a.priority, b.priority);
            }
            text
        }));
        parts.extend(
            self.removed
                .iter()
                .map(|p| format!("-{} {}", p.name, p.version)),
        );
        if parts.len() > SUMMARY_ITEMS + 1 {
            let rest = parts.len() - SUMMARY_ITEMS;
            parts.truncate(SUMMARY_ITEMS);
            parts.push(format!("… and {rest} more"));
        }
        parts.join(", ")
    }
}

impl Manifest {
    pub fn new(mut packages: Vec<Package>, lock: String) -> Self {
        packages.sort_by(|a, b| a.name.cmp(&b.name));
        Self {
            version: FORMAT_VERSION,
            packages,
            lock,
        }
    }

    pub fn empty() -> Self {
        Self::new(Vec::new(), String::new())
    }

    /// Reads the manifest of a generation, given the physical path of its store path.
    pub fn read(generation: &Path, logical: &str) -> Result<Self> {
        let bad = |why: String| ProfileError::BadManifest {
            path: logical.to_owned(),
            why,
        };
        let text = fs_err::read_to_string(generation.join(FILE)).map_err(|e| bad(e.to_string()))?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if manifest.version != FORMAT_VERSION {
            return Err(bad(format!(
                "format version {} is not {FORMAT_VERSION} (written by another noodle?)",
                manifest.version
            )));
        }
        Ok(manifest)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a manifest always serialises") + "\n"
    }

    pub fn package(&self, name: &str) -> Option<&Package> {
        self.packages.iter().find(|p| p.name == name)
    }

    pub fn names(&self) -> Vec<String> {
        self.packages.iter().map(|p| p.name.clone()).collect()
    }

    /// This manifest with `packages` added, each replacing an installed package of its name.
    pub fn with(&self, packages: Vec<Package>, lock: String) -> Self {
        let mut by_name: BTreeMap<String, Package> = self
            .packages
            .iter()
            .map(|p| (p.name.clone(), p.clone()))
            .collect();
        for package in packages {
            by_name.insert(package.name.clone(), package);
        }
        Self::new(by_name.into_values().collect(), lock)
    }

    /// This manifest without the packages named.
    pub fn without(&self, names: &[String], lock: String) -> Self {
        Self::new(
            self.packages
                .iter()
                .filter(|p| !names.contains(&p.name))
                .cloned()
                .collect(),
            lock,
        )
    }

    /// Whether two manifests install exactly the same packages the same way (the lock text,
    /// which only records where they came from, aside).
    pub fn same_packages(&self, other: &Manifest) -> bool {
        self.packages == other.packages
    }

    /// What changed from `self` to `after`.
    pub fn changes_to(&self, after: &Manifest) -> Changes {
        let mut changes = Changes::default();
        for package in &after.packages {
            match self.package(&package.name) {
                None => changes.added.push(package.clone()),
                Some(before) if before != package => {
                    changes.changed.push((before.clone(), package.clone()))
                }
                Some(_) => {}
            }
        }
        for package in &self.packages {
            if after.package(&package.name).is_none() {
                changes.removed.push(package.clone());
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str, version: &str) -> Package {
        Package {
            name: name.into(),
            version: version.into(),
            path: format!("/noodle/store/{name}-{version}"),
            nar_hash: String::new(),
            priority: DEFAULT_PRIORITY,
            requested: None,
            health: Vec::new(),
            activation: None,
        }
    }

    #[test]
    fn with_replaces_by_name_and_changes_name_each_kind() {
        let before = Manifest::new(
            vec![pkg("hello", "1.0.0"), pkg("crypto", "1.2.3")],
            String::new(),
        );
        let after = before
            .with(
                vec![pkg("crypto", "1.2.5"), pkg("greeter", "1.0.0")],
                String::new(),
            )
            .without(&["hello".into()], String::new());
        assert_eq!(after.names(), ["crypto", "greeter"]);
        let changes = before.changes_to(&after);
        assert_eq!(
            changes.summary(),
            "+greeter 1.0.0, crypto 1.2.3 → 1.2.5, -hello 1.0.0"
        );
        assert!(before.changes_to(&before).is_empty());
        let mut pinned = before.clone();
        pinned.packages[0].requested = Some(">=1.2.5".into());
        pinned.packages[0].priority = 3;
        assert_eq!(
            before.changes_to(&pinned).summary(),
            "crypto 1.2.3 (requirement a store path → >=1.2.5) (priority 5 → 3)"
        );
    }

    #[test]
    fn a_long_summary_counts_the_rest() {
        let many: Vec<Package> = (0..10).map(|i| pkg(&format!("p{i}"), "1.0")).collect();
        let summary = Manifest::empty()
            .changes_to(&Manifest::new(many, String::new()))
            .summary();
        assert!(summary.starts_with("+p0 1.0, +p1 1.0,"), "{summary}");
        assert!(summary.ends_with(", +p5 1.0, … and 4 more"), "{summary}");
    }

    #[test]
    fn the_lock_text_does_not_make_a_different_package_set() {
        let a = Manifest::new(vec![pkg("hello", "1.0.0")], "a".into());
        let b = Manifest::new(vec![pkg("hello", "1.0.0")], "b".into());
        assert!(a.same_packages(&b));
        assert!(!a.same_packages(&Manifest::empty()));
    }

    #[test]
    fn a_manifest_round_trips_through_its_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let manifest = Manifest::new(vec![pkg("hello", "1.0.0")], "lock".into());
        fs_err::write(dir.path().join(FILE), manifest.to_json()).expect("write");
        assert_eq!(Manifest::read(dir.path(), "gen").expect("read"), manifest);
        fs_err::write(dir.path().join(FILE), "{\"version\": 2}").expect("write");
        let err = Manifest::read(dir.path(), "gen").expect_err("bad");
        assert!(err.to_string().contains("manifest of gen"), "{err}");
    }
}
