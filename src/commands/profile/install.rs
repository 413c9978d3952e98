//! `noodle install`, `remove`, `update`: the new manifest, from the current one and what the
//! builder produced.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use noodle_builder::lockfile::Lockfile;
use noodle_builder::plan::Plan;
use noodle_builder::resolve::PkgId;
use noodle_builder::session::Prepared;
use noodle_builder::target::Target;
use noodle_profiles::generation;
use noodle_profiles::manifest::DEFAULT_PRIORITY;
use noodle_profiles::{HealthCheck, Manifest, Package, ProfileError};
use noodle_store::Store;

use super::{commit, locate};
use crate::cli::{ActivationArgs, Cli};
use crate::commands::build::{build_targets, parse_targets};
use crate::commands::open;

/// What `requested` records for a target with no requirement: the highest version.
const ANY_VERSION: &str = "*";

fn package_of(
    store: &Store,
    plan: &Plan,
    path: &str,
    priority: i32,
    requested: Option<String>,
) -> anyhow::Result<Package> {
    let info = store
        .db()
        .path_info(path)?
        .with_context(|| format!("{path} was built but is not valid: run the command again"))?;
    let health: Vec<HealthCheck> = serde_json::from_value(serde_json::to_value(&plan.health)?)
        .context("a recipe's health checks do not fit the manifest's (a noodle bug)")?;
    Ok(Package {
        name: plan.name.clone(),
        version: plan.version.clone(),
        path: path.to_owned(),
        nar_hash: info.nar_hash,
        priority,
        requested,
        health,
        activation: plan.activation.clone(),
    })
}

/// A valid store path installed as such: named by the plan it was built from, else by its
/// name (`<name>-<version>`).
fn package_from_store_path(store: &Store, text: &str, priority: i32) -> anyhow::Result<Package> {
    let path = store.valid_path(text)?;
    let logical = store.logical(&path);
    if let Some((_, json)) = store.db().plan_of_output(&logical)? {
        if let Ok(plan) = serde_json::from_str::<Plan>(&json) {
            return package_of(store, &plan, &logical, priority, None);
        }
    }
    let name = path.name();
    let (name, version) = match name.rfind('-') {
        Some(i) if name[i + 1..].starts_with(|c: char| c.is_ascii_digit()) => {
            (&name[..i], &name[i + 1..])
        }
        _ => (name, ""),
    };
    let info = store
        .db()
        .path_info(&logical)?
        .context("the path stopped being valid")?;
    Ok(Package {
        name: name.to_owned(),
        version: version.to_owned(),
        path: logical,
        nar_hash: info.nar_hash,
        priority,
        requested: None,
        health: Vec::new(),
        activation: None,
    })
}

/// Builds `targets` (each with the requirement to remember and its priority) and returns
/// their packages and the lock they were resolved with.
fn build_packages(
    cli: &Cli,
    store: &mut Store,
    targets: &[(Target, i32)],
    update: BTreeSet<String>,
) -> anyhow::Result<(Vec<Package>, Lockfile)> {
    if targets.is_empty() {
        return Ok((Vec::new(), Lockfile::default()));
    }
    let plain: Vec<Target> = targets.iter().map(|(t, _)| t.clone()).collect();
    let (prepared, _outputs) = build_targets(cli, store, &plain, update)?;
    let mut by_name: BTreeMap<String, (String, i32)> = BTreeMap::new();
    for (target, priority) in targets {
        let wanted = target.wanted(&prepared.channel)?;
        let requested = wanted.req.map_or(ANY_VERSION.to_owned(), |r| r.to_string());
        by_name.insert(wanted.name, (requested, *priority));
    }
    let packages = roots_as_packages(store, &prepared, &by_name)?;
    Ok((packages, prepared.lock))
}

fn roots_as_packages(
    store: &Store,
    prepared: &Prepared,
    wanted: &BTreeMap<String, (String, i32)>,
) -> anyhow::Result<Vec<Package>> {
    let mut packages = Vec::new();
    for id in &prepared.graph.roots {
        let (_, path) = prepared.output_of(id, store)?;
        let (requested, priority) = wanted
            .get(&id.name)
            .cloned()
            .unwrap_or((ANY_VERSION.to_owned(), DEFAULT_PRIORITY));
        packages.push(package_of(
            store,
            &prepared.plans[id],
            &path,
            priority,
            Some(requested),
        )?);
    }
    Ok(packages)
}

/// The lock entries of the channel packages in `packages` and their dependencies, from the
/// fresh resolution first, then from the current generation's lock.
fn profile_lock(base: &Manifest, fresh: &Lockfile, packages: &[Package]) -> anyhow::Result<String> {
    let old = if base.lock.is_empty() {
        Lockfile::default()
    } else {
        Lockfile::parse(
            Path::new("the current generation's manifest.json"),
            &base.lock,
        )?
    };
    let roots: Vec<PkgId> = packages
        .iter()
        .filter(|p| p.requested.is_some())
        .filter_map(|p| Some(PkgId::new(&p.name, p.version.parse().ok()?)))
        .collect();
    if roots.is_empty() {
        return Ok(String::new());
    }
    Ok(Lockfile::closure_of(&[fresh, &old], &roots).to_toml())
}

fn is_store_path(store: &Store, text: &str) -> bool {
    text.strip_prefix(store.store_dir().as_str())
        .is_some_and(|rest| rest.starts_with('/'))
}

pub fn install(
    cli: &Cli,
    texts: &[String],
    priority: i32,
    activation: &ActivationArgs,
) -> anyhow::Result<ExitCode> {
    let mut store = open(cli, true)?;
    let located = locate(cli, &store)?;
    // Parse everything before waiting for the lock or building.
    let mut paths = Vec::new();
    let mut targets = Vec::new();
    for text in texts {
        if is_store_path(&store, text) {
            paths.push(text.clone());
        } else {
            targets.push((
                parse_targets(std::slice::from_ref(text))?.remove(0),
                priority,
            ));
        }
    }
    let lock = located.lock(cli, &mut store, activation.no_wait)?;
    let (_, base) = generation::current_manifest(&store, &located.profile)?;
    let mut packages: Vec<Package> = store.db().reading(|| {
        paths
            .iter()
            .map(|path| package_from_store_path(&store, path, priority))
            .collect::<anyhow::Result<_>>()
    })?;
    let (built, fresh) = build_packages(cli, &mut store, &targets, BTreeSet::new())?;
    packages.extend(built);
    let names: BTreeSet<&str> = packages.iter().map(|p| p.name.as_str()).collect();
    if names.len() < packages.len() {
        anyhow::bail!("two of the targets are the same package: install one version of each");
    }
    let merged = base.with(packages, String::new());
    let lock_text = profile_lock(&base, &fresh, &merged.packages)?;
    let manifest = Manifest::new(merged.packages, lock_text);
    commit(
        cli, &mut store, &located, &lock, &base, &manifest, activation,
    )
}

pub fn remove(
    cli: &Cli,
    names: &[String],
    activation: &ActivationArgs,
) -> anyhow::Result<ExitCode> {
    let mut store = open(cli, true)?;
    let located = locate(cli, &store)?;
    let lock = located.lock(cli, &mut store, activation.no_wait)?;
    let (_, base) = generation::current_manifest(&store, &located.profile)?;
    for name in names {
        if base.package(name).is_none() {
            return Err(ProfileError::NotInstalled {
                name: name.clone(),
                profile: located.profile.link().to_owned(),
                installed: base.names(),
            }
            .into());
        }
    }
    let kept = base.without(names, String::new());
    let lock_text = profile_lock(&base, &Lockfile::default(), &kept.packages)?;
    let manifest = Manifest::new(kept.packages, lock_text);
    commit(
        cli, &mut store, &located, &lock, &base, &manifest, activation,
    )
}

/// `crypto '>=1.2.5' hello` → [(crypto, Some(>=1.2.5)), (hello, None)]; `crypto@^1.2` too.
fn parse_update_args(args: &[String]) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let mut wanted: Vec<(String, Option<String>)> = Vec::new();
    for arg in args {
        if let Some((name, req)) = arg.split_once('@') {
            wanted.push((name.to_owned(), Some(req.to_owned())));
        } else if arg.starts_with(|c: char| c.is_ascii_digit() || "<>=^~*".contains(c)) {
            match wanted.last_mut() {
                Some((_, slot @ None)) => *slot = Some(arg.clone()),
                _ => anyhow::bail!(
                    "'{arg}' is a version requirement, but no package name comes before it: write `noodle update NAME '{arg}'`"
                ),
            }
        } else {
            wanted.push((arg.clone(), None));
        }
    }
    Ok(wanted)
}

pub fn update(cli: &Cli, args: &[String], activation: &ActivationArgs) -> anyhow::Result<ExitCode> {
    let mut store = open(cli, true)?;
    let located = locate(cli, &store)?;
    let asked = parse_update_args(args)?;
    let lock = located.lock(cli, &mut store, activation.no_wait)?;
    let (_, base) = generation::current_manifest(&store, &located.profile)?;
    let asked: Vec<(String, Option<String>)> = if asked.is_empty() {
        base.packages
            .iter()
            .filter(|p| p.requested.is_some())
            .map(|p| (p.name.clone(), None))
            .collect()
    } else {
        asked
    };
    let mut targets = Vec::new();
    for (name, req) in &asked {
        let installed = base
            .package(name)
            .ok_or_else(|| ProfileError::NotInstalled {
                name: name.clone(),
                profile: located.profile.link().to_owned(),
                installed: base.names(),
            })?;
        let Some(recorded) = &installed.requested else {
            anyhow::bail!(
                "{name} was installed as a store path ({}), not from a channel: install a channel version with `noodle install {name}`",
                installed.path
            );
        };
        let req = req.as_deref().unwrap_or(recorded);
        let text = if req == ANY_VERSION {
            name.clone()
        } else {
            format!("{name}@{req}")
        };
        targets.push((Target::parse(&text)?, installed.priority));
    }
    let names: BTreeSet<String> = asked.iter().map(|(n, _)| n.clone()).collect();
    let (built, fresh) = build_packages(cli, &mut store, &targets, names)?;
    let merged = base.with(built, String::new());
    let lock_text = profile_lock(&base, &fresh, &merged.packages)?;
    let manifest = Manifest::new(merged.packages, lock_text);
    commit(
        cli, &mut store, &located, &lock, &base, &manifest, activation,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_arguments_pair_names_with_requirements() {
        let args: Vec<String> = ["crypto", ">=1.2.5", "hello", "greeter@^1"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            parse_update_args(&args).expect("parse"),
            [
                ("crypto".to_owned(), Some(">=1.2.5".to_owned())),
                ("hello".to_owned(), None),
                ("greeter".to_owned(), Some("^1".to_owned())),
            ]
        );
        assert!(parse_update_args(&[">=1".to_owned()]).is_err());
        assert!(parse_update_args(&["a".into(), "1".into(), "2".into()]).is_err());
    }
}
