//! Everything a build can fail with; each message names the thing that is wrong and what to do.

use std::path::PathBuf;

use noodle_store::StoreError;

use crate::channel::ChannelError;
use crate::lockfile::LockError;
use crate::recipe::RecipeError;
use crate::resolve::ResolveError;
use crate::sandbox::SandboxError;
use crate::target::TargetError;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Path(#[from] noodle_store::path::PathError),
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
    #[error("the build sandbox could not be set up: {0}")]
    Sandbox(#[from] SandboxError),
    #[error("{source_ref}: {location} does not exist: fix the recipe's `path` or `url`")]
    SourceMissing {
        source_ref: String,
        location: String,
    },
    #[error("{source_ref}: {location} does not match its pin: expected {expected}, got {actual}; {advice}")]
    SourceMismatch {
        source_ref: String,
        location: String,
        expected: String,
        actual: String,
        advice: String,
    },
    #[error("{source_ref}: fetching {url} failed: {why}")]
    Fetch {
        source_ref: String,
        url: String,
        why: String,
    },
    #[error("{source_ref} has no pin in its recipe or in noodle.lock, and --locked forbids pinning it now: run `noodle lock`")]
    Unpinned { source_ref: String },
    #[error("noodle.lock is out of date and --locked was given; it would change:\n  {}\nrun `noodle lock` (or build without --locked) to update it", .0.join("\n  "))]
    LockOutdated(Vec<String>),
    #[error("{package}: no `{shell}` to run the build script in its dependencies' bin directories: add a dependency that provides it (e.g. busybox) or set `shell` in [build]")]
    NoShell { package: String, shell: String },
    #[error("{package}: input {input} is not valid in the store (deleted by a concurrent gc?): run the build again")]
    InputMissing { package: String, input: String },
    #[error("building {package} failed: {why}{}\nfull log: {}", show_tail(.tail), .log.display())]
    Failed {
        package: String,
        why: String,
        tail: Vec<String>,
        log: PathBuf,
    },
    #[error("{package} built, but its output differs from noodle.lock's: locked {locked}, built {built}; the package is not reproducible (see `noodle build --check`), or the lock came from another recipe")]
    NarMismatch {
        package: String,
        locked: String,
        built: String,
    },
    #[error("{package} is not built yet, so there is nothing to --check: build it first")]
    NothingToCheck { package: String },
    #[error("{count} of the requested builds failed:\n{}", .errors.join("\n"))]
    Several { count: usize, errors: Vec<String> },
}

fn show_tail(tail: &[String]) -> String {
    if tail.is_empty() {
        return "\n(the build printed nothing)".into();
    }
    let mut text = format!("\nlast {} lines of the log:", tail.len());
    for line in tail {
        text.push_str("\n  | ");
        text.push_str(line);
    }
    text
}
