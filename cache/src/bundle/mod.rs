//! Portable signed bundles: a closure in one file (`app.noodle`) that can be carried to a
//! machine without network and imported there.
//!
//! The file is zstd(tar) holding, in order, `manifest.json` (every path of the closure with
//! its NAR hash, size and references, in dependency order), `manifest.sig` (signatures over
//! the manifest's hash) and `nar/<digest>.nar` per path. The manifest signature covers every
//! NAR hash, so one trusted signature and the NAR hashes prove the whole bundle.

mod export;
mod import;
mod listing;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use export::export;
pub use import::import;

/// The first entry: what the bundle holds.
pub(crate) const MANIFEST: &str = "manifest.json";
/// The second entry: `name:base64` signatures over [`manifest_fingerprint`], one per line.
pub(crate) const SIGNATURES: &str = "manifest.sig";
pub(crate) const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportReport {
    pub paths: usize,
    pub nar_bytes: u64,
    /// The size of the bundle file (compressed).
    pub file_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// The paths newly registered, in dependency order.
    pub paths: Vec<String>,
    pub already_valid: usize,
    /// The trusted key whose signature over the manifest let the bundle in.
    pub signed_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Manifest {
    pub version: u32,
    pub store_dir: String,
    pub paths: Vec<ManifestPath>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ManifestPath {
    pub path: String,
    pub nar_hash: String,
    pub nar_size: u64,
    /// Full logical store paths.
    pub references: Vec<String>,
    pub ca: Option<String>,
    pub deriver: Option<String>,
    pub signatures: Vec<String>,
}

/// What `manifest.sig` signs. The prefix keeps a bundle signature from ever being mistaken
/// for a path signature (those start with `1;`).
pub(crate) fn manifest_fingerprint(manifest: &[u8]) -> String {
    format!("noodle-bundle-1;{}", blake3::hash(manifest).to_hex())
}

/// The tar entry of a path's NAR.
pub(crate) fn nar_entry(digest: &str) -> String {
    format!("nar/{digest}.nar")
}
