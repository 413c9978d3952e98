//! Build plans (DESIGN.md §3, §6): everything that determines a build's output, and nothing
//! else. The plan's hash names the output path, so a change anywhere in a package's dependency
//! closure changes its path, and settings that cannot change the output (timeouts) stay out.

use std::collections::BTreeMap;

use noodle_store::path::PathError;
use noodle_store::{Blake3, StoreDir, StorePath};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::recipe::{HealthCheck, Pin};
use crate::resolve::{Graph, Pins, PkgId};

pub const SYSTEM: &str = "x86_64-linux";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub name: String,
    pub version: String,
    pub system: String,
    pub script: String,
    /// As the recipe wrote it: `$NAME` words are substituted by the sandbox. Their values are
    /// store paths already in `dependencies`/`sources`, so the hash covers them.
    pub shell: Vec<String>,
    /// The recipe's `[env]` only; the builder's own variables are fixed by the sandbox.
    pub env: BTreeMap<String, String>,
    /// Dependency name → its output store path (full path).
    pub dependencies: BTreeMap<String, String>,
    pub sources: BTreeMap<String, PlanSource>,
    pub health: Vec<HealthCheck>,
    /// The activation script.
    pub activation: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanSource {
    pub pin: Pin,
    /// The source's store path (full path).
    pub path: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{pkg}: source `{key}` has no pin (pin_sources must run before make_plans)")]
    MissingPin { pkg: PkgId, key: String },
    #[error("{pkg} depends on {dep}, which is not in the graph")]
    NotInGraph { pkg: PkgId, dep: String },
    #[error("{pkg}: {source}")]
    Path { pkg: PkgId, source: PathError },
}

impl Plan {
    /// The canonical serialisation, the input of [`Plan::hash`]: JSON with every object's keys
    /// sorted by their UTF-8 bytes, no whitespace, `null` for an absent activation, strings
    /// escaped as serde_json does. Sorting here (not relying on struct field order or on
    /// serde_json's map type) keeps the hash stable across refactors and feature flags.
    pub fn canonical_json(&self) -> Vec<u8> {
        let value = serde_json::to_value(self)
            .expect("a Plan has only string keys and plain values, so it always converts to JSON");
        let mut out = String::new();
        write_canonical(&value, &mut out);
        out.into_bytes()
    }

    pub fn hash(&self) -> Blake3 {
        Blake3::of(&self.canonical_json())
    }

    pub fn output_name(&self) -> String {
        format!("{}-{}", self.name, self.version)
    }

    pub fn output_path(&self, store_dir: &StoreDir) -> Result<StorePath, PathError> {
        StorePath::for_output(store_dir, &self.hash(), &self.output_name())
    }
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        // Scalars print compactly and deterministically.
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The store path a pinned source is fetched into.
pub fn source_path(store_dir: &StoreDir, pin: &Pin) -> Result<StorePath, PathError> {
    StorePath::for_source(store_dir, &pin.hash, &[], &pin.store_name())
}

/// Plans for every package in `graph`, bottom-up: a dependency's output path enters its
/// dependents' plans, so any change below a package changes its plan and path too.
pub fn make_plans(
    graph: &Graph,
    pins: &Pins,
    store_dir: &StoreDir,
) -> Result<BTreeMap<PkgId, Plan>, PlanError> {
    let mut plans = BTreeMap::new();
    let mut outs: BTreeMap<PkgId, String> = BTreeMap::new();
    for id in graph.topo_order() {
        let Some(resolved) = graph.get(&id) else {
            continue;
        };
        let path_err = |source| PlanError::Path {
            pkg: id.clone(),
            source,
        };
        let recipe = &resolved.recipe;
        let dependencies = resolved
            .deps
            .iter()
            .map(|(name, dep)| match outs.get(dep) {
                Some(out) => Ok((name.clone(), out.clone())),
                // topo_order visits dependencies first, so only a hand-made graph gets here.
                None => Err(PlanError::NotInGraph {
                    pkg: id.clone(),
                    dep: dep.to_string(),
                }),
            })
            .collect::<Result<_, _>>()?;
        let mut sources = BTreeMap::new();
        for key in recipe.sources.keys() {
            let pin =
                pins.get(&(id.clone(), key.clone()))
                    .ok_or_else(|| PlanError::MissingPin {
                        pkg: id.clone(),
                        key: key.clone(),
                    })?;
            let path = source_path(store_dir, pin).map_err(path_err)?;
            sources.insert(
                key.clone(),
                PlanSource {
                    pin: pin.clone(),
                    path: store_dir.display_path(&path),
                },
            );
        }
        let plan = Plan {
            name: recipe.name.clone(),
            version: recipe.version.to_string(),
            system: SYSTEM.to_owned(),
            script: recipe.build.script.clone(),
            shell: recipe.build.shell.clone(),
            env: recipe.env.clone(),
            dependencies,
            sources,
            health: recipe.health.clone(),
            activation: recipe.activation.as_ref().map(|a| a.script.clone()),
        };
        let out = plan.output_path(store_dir).map_err(path_err)?;
        outs.insert(id.clone(), store_dir.display_path(&out));
        plans.insert(id, plan);
    }
    Ok(plans)
}

#[cfg(test)]
mod tests;
