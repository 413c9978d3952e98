use std::path::PathBuf;

use noodle_store::StoreError;

pub type Result<T, E = ProfileError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("'{}' is not a valid profile name: use letters, digits, '.', '_' and '-', not starting with '.'", .0.display())]
    BadName(PathBuf),
    #[error("'{}' is a {kind}, not a profile link: noodle will not overwrite it. Move it away; the generations beside it are intact (`noodle profile generations`) and `noodle profile switch N` makes the link again", path.display())]
    NotALink { path: PathBuf, kind: &'static str },
    #[error("'{}' points at '{}', which is not one of its generation links ({}-<N>-link): someone changed it by hand; run `noodle profile switch N` to point it at a generation again", path.display(), target.display(), name)]
    StrangeLink {
        path: PathBuf,
        target: PathBuf,
        name: String,
    },
    #[error("profile '{}' has no generation {number}{}", profile.display(), available_text(available))]
    NoSuchGeneration {
        profile: PathBuf,
        number: u64,
        available: Vec<u64>,
    },
    #[error("profile '{}' has no generation before {current}: there is nothing to roll back to", profile.display())]
    NoPrevious { profile: PathBuf, current: u64 },
    #[error("profile '{}' has no generations yet: install something first (`noodle install NAME`)", .0.display())]
    Empty(PathBuf),
    #[error("generation {number} is damaged: {why}. Switch to another one (`noodle profile generations` lists them) and delete this one with `noodle profile delete-generations {number}`; its packages can be installed again with `noodle install`")]
    Damaged { number: u64, why: String },
    #[error("{} and {} both provide '{file}': remove one of them, or give the one that should win a lower priority number (`noodle install --priority 4 NAME`; the default is {})", first, second, crate::manifest::DEFAULT_PRIORITY)]
    Conflict {
        file: String,
        first: String,
        second: String,
    },
    #[error("{name}'s store path {path} is not valid in this store (deleted, or never added here): install {name} again")]
    MissingPackage { name: String, path: String },
    #[error("generation {0} is the current generation and cannot be deleted: switch to another one first (`noodle profile switch N` or `noodle profile rollback`)")]
    DeleteCurrent(u64),
    #[error("'{text}' does not name generations: {why}")]
    BadSelection { text: String, why: String },
    #[error("{} is not installed in profile '{}'{}", name, profile.display(), installed_text(installed))]
    NotInstalled {
        name: String,
        profile: PathBuf,
        installed: Vec<String>,
    },
    #[error("the manifest of {path} is unreadable: {why}")]
    BadManifest { path: String, why: String },
    #[error("{0} is not a generation (a profile's store path, with a manifest.json): give a generation number or a generation's store path (`noodle profile generations` lists them)")]
    NotAGeneration(String),
}

fn available_text(available: &[u64]) -> String {
    match available {
        [] => " (it has no generations)".into(),
        numbers => format!(
            "; it has {}",
            numbers
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn installed_text(installed: &[String]) -> String {
    if installed.is_empty() {
        " (nothing is installed)".into()
    } else {
        format!("; installed: {}", installed.join(", "))
    }
}

impl ProfileError {
    /// Refusals a user must resolve first (exit code 5 in the CLI), as opposed to failures.
    pub fn is_refusal(&self) -> bool {
        matches!(self, ProfileError::DeleteCurrent(_))
    }
}
