//! Which checks and scripts a generation runs, as jobs for [`crate::exec`].

use std::time::Duration;

use noodle_profiles::{CheckTime, Manifest, Package};

use crate::event::RunKind;
use crate::exec::Job;

/// Bytes of a run's output kept in the journal (head and tail).
pub const OUTPUT_LIMIT: usize = 16 * 1024;

/// The generation a check or script belongs to, as its commands see it.
#[derive(Debug, Clone)]
pub struct GenerationRef {
    pub number: u64,
    /// Logical store path.
    pub path: String,
    /// The profile's key (logical path).
    pub profile: String,
}

#[derive(Debug, Clone)]
pub struct Planned {
    pub kind: RunKind,
    pub package: String,
    /// `crypto 1.3.0`: for messages.
    pub package_label: String,
    pub name: String,
    pub job: Job,
    pub retries: u32,
    pub interval: Duration,
    pub required: bool,
}

fn environment(generation: &GenerationRef, package: &Package) -> Vec<(String, String)> {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    vec![
        ("out".into(), package.path.clone()),
        ("name".into(), package.name.clone()),
        ("version".into(), package.version.clone()),
        ("NOODLE_PROFILE".into(), generation.profile.clone()),
        ("NOODLE_GENERATION".into(), generation.number.to_string()),
        ("NOODLE_GENERATION_PATH".into(), generation.path.clone()),
        ("PATH".into(), format!("{}/bin:{path}", generation.path)),
    ]
}

fn label(package: &Package) -> String {
    format!("{} {}", package.name, package.version)
}

/// The health checks of every package, of one kind (`pre` or `post`), in package order.
pub fn checks(manifest: &Manifest, generation: &GenerationRef, when: CheckTime) -> Vec<Planned> {
    let mut planned = Vec::new();
    for package in &manifest.packages {
        for check in package.health.iter().filter(|c| c.when == when) {
            let (program, args) = check
                .command
                .split_first()
                .map(|(p, a)| (p.clone(), a.to_vec()))
                .unwrap_or_default();
            let program = if program.starts_with('/') {
                program
            } else {
                format!("{}/{program}", package.path)
            };
            planned.push(Planned {
                kind: if when == CheckTime::Pre {
                    RunKind::Pre
                } else {
                    RunKind::Check
                },
                package: package.name.clone(),
                package_label: label(package),
                name: check.name.clone(),
                job: Job {
                    program,
                    args,
                    env: environment(generation, package),
                    timeout: Duration::from_secs(check.timeout),
                    output_limit: OUTPUT_LIMIT,
                    kill_leftovers: true,
                },
                retries: check.retries,
                interval: Duration::from_secs(check.interval),
                required: check.required,
            });
        }
    }
    planned
}

/// The activation scripts to run when `manifest` becomes active after `previous`: those of
/// packages that are new or changed (another store path), or all of them when the generation
/// is activated again over itself.
pub fn scripts(
    manifest: &Manifest,
    previous: Option<&Manifest>,
    generation: &GenerationRef,
    again: bool,
    timeout: Duration,
) -> Vec<Planned> {
    manifest
        .packages
        .iter()
        .filter(|package| {
            again
                || previous.is_none_or(|before| {
                    !before
                        .packages
                        .iter()
                        .any(|p| p.name == package.name && p.path == package.path)
                })
        })
        .filter_map(|package| {
            let script = package.activation.as_ref()?;
            Some(Planned {
                kind: RunKind::Script,
                package: package.name.clone(),
                package_label: label(package),
                name: "activation".into(),
                job: Job {
                    program: "/bin/sh".into(),
                    args: vec!["-ec".into(), script.clone(), package.name.clone()],
                    env: environment(generation, package),
                    timeout,
                    output_limit: OUTPUT_LIMIT,
                    kill_leftovers: false,
                },
                retries: 0,
                interval: Duration::ZERO,
                required: true,
            })
        })
        .collect()
}

/// Where `program` (as commands see it: logical store paths) really is, following symlinks
/// through the store's logical paths; `None` when it does not exist.
pub fn resolve(store: &noodle_store::Store, program: &str) -> Option<std::path::PathBuf> {
    let store_dir = format!("{}/", store.store_dir().as_str());
    let physical = |logical: &std::path::Path| match logical.to_str()?.strip_prefix(&store_dir) {
        Some(rest) => Some(store.dirs().store().join(rest)),
        None => Some(logical.to_owned()),
    };
    let mut logical = std::path::PathBuf::from(program);
    // As many hops as the kernel allows (MAXSYMLINKS).
    for _ in 0..40 {
        let here = physical(&logical)?;
        let meta = std::fs::symlink_metadata(&here).ok()?;
        if !meta.file_type().is_symlink() {
            return Some(here);
        }
        let target = std::fs::read_link(&here).ok()?;
        logical = match logical.parent() {
            Some(parent) if target.is_relative() => parent.join(target),
            _ => target,
        };
    }
    None
}
