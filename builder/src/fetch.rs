//! Fixed-output sources (DESIGN.md §6): a local file or directory, or a `file://` / `http://`
//! URL, pinned by the BLAKE3 of its NAR. Fetched and verified before any sandbox starts, and
//! kept in the store, where its pin alone names it (so it is fetched once).

use std::io::Write;
use std::path::PathBuf;

use noodle_store::nar::{hash_layout, NarLayout};
use noodle_store::{AddOptions, Blake3, Silent, Store, StoreError, StorePath};

use crate::error::BuildError;
use crate::recipe::{Pin, SourceLocation, SourceSpec};

/// Where a source's pin came from, for the advice given when the contents no longer match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinOrigin {
    Recipe,
    Lockfile,
}

/// Names a source in messages: `source `busybox` of pkgs/busybox/1.35.0.toml`.
#[derive(Debug, Clone)]
pub struct SourceRef {
    pub recipe: PathBuf,
    pub package: String,
    pub key: String,
}

impl std::fmt::Display for SourceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "source `{}` of {}", self.key, self.recipe.display())
    }
}

/// The store path a pinned source has (whether or not it is there yet).
pub fn source_path(store: &Store, pin: &Pin) -> Result<String, BuildError> {
    let path = StorePath::for_source(store.store_dir(), &pin.hash, &[], &pin.store_name())?;
    Ok(store.logical(&path))
}

/// A fetched source on the local disk, removed when dropped if it was downloaded.
struct Fetched {
    path: PathBuf,
    downloaded: Option<tempfile::TempDir>,
}

fn fetch(store: &Store, source: &SourceRef, spec: &SourceSpec) -> Result<Fetched, BuildError> {
    let local = match &spec.location {
        SourceLocation::Path(path) => Some(path.clone()),
        SourceLocation::Url(url) => url.strip_prefix("file://").map(PathBuf::from),
    };
    if let Some(path) = local {
        if fs_err::symlink_metadata(&path).is_err() {
            return Err(BuildError::SourceMissing {
                source_ref: source.to_string(),
                location: path.display().to_string(),
            });
        }
        return Ok(Fetched {
            path,
            downloaded: None,
        });
    }
    let SourceLocation::Url(url) = &spec.location else {
        unreachable!("local paths returned above")
    };
    let fail = |why: String| BuildError::Fetch {
        source_ref: source.to_string(),
        url: url.clone(),
        why,
    };
    if !url.starts_with("http://") {
        return Err(fail("only http:// and file:// URLs are supported".into()));
    }
    let response = ureq::get(url)
        .timeout(std::time::Duration::from_secs(300))
        .call()
        .map_err(|e| match e {
            ureq::Error::Status(404, _) => BuildError::SourceMissing {
                source_ref: source.to_string(),
                location: format!("{url} (HTTP 404)"),
            },
            other => fail(other.to_string()),
        })?;
    let dir = tempfile::Builder::new()
        .prefix("fetch-")
        .tempdir_in(store.dirs().tmp())?;
    let file_name = url
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or("download");
    let path = dir.path().join(file_name);
    let mut file = fs_err::File::create(&path)?;
    std::io::copy(&mut response.into_reader(), &mut file)
        .map_err(|e| fail(format!("download interrupted: {e}")))?;
    file.flush()?;
    if spec.executable {
        use std::os::unix::fs::PermissionsExt;
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(Fetched {
        path,
        downloaded: Some(dir),
    })
}

/// Makes sure the pinned source is in the store, fetching and verifying it if it is not.
/// Returns its store path.
pub fn ensure(
    store: &mut Store,
    source: &SourceRef,
    spec: &SourceSpec,
    pin: &Pin,
    origin: PinOrigin,
) -> Result<String, BuildError> {
    let expected = source_path(store, pin)?;
    if store.db().is_valid(&expected)? {
        return Ok(expected);
    }
    let fetched = fetch(store, source, spec)?;
    let options = AddOptions {
        name: Some(pin.store_name()),
        expect_hash: Some(pin.hash),
        ..AddOptions::default()
    };
    let added = store
        .add_tree(&fetched.path, &options, &Silent)
        .map_err(|e| match e {
            StoreError::HashMismatch {
                expected, actual, ..
            } => BuildError::SourceMismatch {
                source_ref: source.to_string(),
                location: spec.location.to_string(),
                expected,
                actual,
                advice: match origin {
                    PinOrigin::Lockfile => format!(
                        "its contents changed since noodle.lock pinned them; if the new contents are expected, run `noodle lock --update {}` to pin them again",
                        source.package
                    ),
                    PinOrigin::Recipe => "if the new contents are expected, put the new hash in the recipe's `pin`".into(),
                },
            },
            other => other.into(),
        })?;
    drop(fetched.downloaded);
    debug_assert_eq!(added.path, expected);
    Ok(added.path)
}

/// Pins a source that has no pin yet: fetches it and takes the hash of what arrived. With
/// `keep`, the source is also added to the store (a dry run only hashes it).
pub fn pin(
    store: &mut Store,
    source: &SourceRef,
    version: &str,
    spec: &SourceSpec,
    keep: bool,
) -> Result<Pin, BuildError> {
    let fetched = fetch(store, source, spec)?;
    let name = if source.key == source.package {
        source.key.clone()
    } else {
        format!("{}-{}", source.package, source.key)
    };
    let hash = if keep {
        let added = store.add_tree(
            &fetched.path,
            &AddOptions {
                name: Some(format!("{name}-{version}")),
                ..AddOptions::default()
            },
            &Silent,
        )?;
        Blake3::parse(&added.nar_hash).expect("the store prints hashes it can parse")
    } else {
        let layout = NarLayout::of(&fetched.path).map_err(StoreError::from)?;
        hash_layout(&layout, None, &|_| {})
            .map_err(StoreError::from)?
            .hash
    };
    Ok(Pin {
        name,
        version: version.to_owned(),
        hash,
    })
}
