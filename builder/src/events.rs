//! What a build session reports as it goes: the CLI turns these into progress lines, or into
//! one JSON object per line with `--json`.

use std::path::Path;

#[derive(Debug, serde::Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event<'a> {
    /// A source is being fetched into the store before any build starts.
    Fetching { source: &'a str, location: &'a str },
    /// The output is valid already; nothing is built.
    Reused { package: &'a str, path: &'a str },
    /// The output was fetched from a binary cache (signed by a trusted key); nothing is built.
    Substituted {
        package: &'a str,
        path: &'a str,
        from: &'a str,
    },
    /// Another process holds the output's lock (building the same thing): waiting for it.
    Waiting { package: &'a str, path: &'a str },
    Started {
        package: &'a str,
        path: &'a str,
        log: &'a Path,
    },
    Finished {
        package: &'a str,
        path: &'a str,
        nar_hash: &'a str,
        seconds: f64,
    },
    Failed {
        package: &'a str,
        path: &'a str,
        error: &'a str,
    },
    /// A `--check` rebuild ended; `identical` says whether it matched the registered output.
    Checked {
        package: &'a str,
        path: &'a str,
        identical: bool,
    },
}

pub trait Listener: Sync {
    fn event(&self, event: &Event<'_>);
    /// A chunk of a running build's output (for `-v`).
    fn output(&self, package: &str, data: &[u8]);
    /// Something the user should know that does not stop the session (a cache that failed:
    /// the output is built instead).
    fn warning(&self, _message: &str) {}
}

/// Hears nothing (library callers and tests that only want results).
pub struct Quiet;

impl Listener for Quiet {
    fn event(&self, _: &Event<'_>) {}
    fn output(&self, _: &str, _: &[u8]) {}
}
