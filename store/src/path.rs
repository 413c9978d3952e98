//! Store paths: `<store dir>/<digest>-<name>`, and the fingerprints that name them.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::base32;
use crate::hash::Blake3;

/// Characters of the 32-character digest part of a store path.
pub const DIGEST_CHARS: usize = 32;
const DIGEST_BYTES: usize = 20;
pub const MAX_NAME_LEN: usize = 211;
pub const DEFAULT_STORE_DIR: &str = "/noodle/store";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("store name '{0}' is invalid: names are 1-{MAX_NAME_LEN} characters of [A-Za-z0-9+._?=-] and do not start with '.'; pass --name to choose another")]
    BadName(String),
    #[error("'{0}' is not a store path: expected {1}/<32-character hash>-<name>")]
    NotAStorePath(String, String),
    #[error("store directory '{0}' must be an absolute, normalised path like /noodle/store")]
    BadStoreDir(String),
}

/// The logical store directory (`/noodle/store` by default), fixed when a store is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreDir(String);

impl StoreDir {
    pub fn new(dir: &str) -> Result<Self, PathError> {
        let ok = dir.starts_with('/')
            && dir.len() > 1
            && !dir.ends_with('/')
            && dir[1..]
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..");
        if ok {
            Ok(Self(dir.to_owned()))
        } else {
            Err(PathError::BadStoreDir(dir.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses a full logical path (or one below a store path, which is cut back to the store path).
    pub fn parse_path(&self, text: &str) -> Result<StorePath, PathError> {
        let not_store = || PathError::NotAStorePath(text.to_owned(), self.0.clone());
        let rest = text
            .strip_prefix(self.0.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(not_store)?;
        let base = rest.split('/').next().unwrap_or_default();
        StorePath::from_base_name(base).map_err(|_| not_store())
    }

    pub fn display_path(&self, path: &StorePath) -> String {
        format!("{}/{}", self.0, path)
    }
}

impl fmt::Display for StoreDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A store object's name within the store directory: `<digest>-<name>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath {
    digest: String,
    name: String,
}

pub fn validate_name(name: &str) -> Result<(), PathError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+._?=-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(PathError::BadName(name.to_owned()))
    }
}

impl StorePath {
    /// The path whose fingerprint is `fingerprint` (DESIGN.md §3).
    pub fn from_fingerprint(fingerprint: &str, name: &str) -> Result<Self, PathError> {
        validate_name(name)?;
        let full = blake3::hash(fingerprint.as_bytes());
        let digest = base32::encode(&full.as_bytes()[..DIGEST_BYTES]);
        Ok(Self {
            digest,
            name: name.to_owned(),
        })
    }

    /// A content-addressed source object: its NAR hash and its references name it.
    pub fn for_source(
        store_dir: &StoreDir,
        nar_hash: &Blake3,
        references: &[String],
        name: &str,
    ) -> Result<Self, PathError> {
        let mut kind = String::from("source");
        for reference in references {
            kind.push(':');
            kind.push_str(reference);
        }
        let fingerprint = format!("{kind}:blake3:{}:{store_dir}:{name}", nar_hash.to_hex());
        Self::from_fingerprint(&fingerprint, name)
    }

    /// A build output, named by its plan hash.
    pub fn for_output(
        store_dir: &StoreDir,
        plan_hash: &Blake3,
        name: &str,
    ) -> Result<Self, PathError> {
        let fingerprint = format!(
            "output:out:blake3:{}:{store_dir}:{name}",
            plan_hash.to_hex()
        );
        Self::from_fingerprint(&fingerprint, name)
    }

    /// Parses `<digest>-<name>`.
    pub fn from_base_name(base: &str) -> Result<Self, PathError> {
        let bad = || PathError::NotAStorePath(base.to_owned(), String::new());
        let (digest, name) = base.split_at_checked(DIGEST_CHARS).ok_or_else(bad)?;
        let name = name.strip_prefix('-').ok_or_else(bad)?;
        if !digest.bytes().all(base32::is_alphabet_char) {
            return Err(bad());
        }
        validate_name(name)?;
        Ok(Self {
            digest: digest.to_owned(),
            name: name.to_owned(),
        })
    }

    pub fn digest(&self) -> &str {
        &self.digest
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where this path lives relative to the store directory.
    pub fn relative(&self) -> PathBuf {
        PathBuf::from(self.to_string())
    }

    pub fn physical_in(&self, physical_store: &Path) -> PathBuf {
        physical_store.join(self.to_string())
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.digest, self.name)
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> StoreDir {
        StoreDir::new(DEFAULT_STORE_DIR).expect("default is valid")
    }

    #[test]
    fn names() {
        for good in ["hello", "hello-1.2.3", "a+b_c?d=e", &"x".repeat(211)] {
            validate_name(good).expect(good);
        }
        for bad in ["", ".hidden", "a/b", "sp ace", "ü", &"x".repeat(212)] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn fingerprint_names_the_path() {
        let h = Blake3::of(b"nar");
        let a = StorePath::for_source(&dir(), &h, &[], "foo").expect("valid");
        let b = StorePath::for_source(&dir(), &h, &[], "foo").expect("valid");
        assert_eq!(a, b);
        assert_eq!(a.digest().len(), DIGEST_CHARS);
        let with_ref =
            StorePath::for_source(&dir(), &h, &[dir().display_path(&a)], "foo").expect("valid");
        assert_ne!(a, with_ref, "references are part of the fingerprint");
        let other_dir = StoreDir::new("/other/store").expect("valid");
        assert_ne!(
            a,
            StorePath::for_source(&other_dir, &h, &[], "foo").expect("valid")
        );
        assert_ne!(a, StorePath::for_output(&dir(), &h, "foo").expect("valid"));
    }

    #[test]
    fn parses_full_paths() {
        let p = StorePath::for_source(&dir(), &Blake3::of(b"x"), &[], "foo").expect("valid");
        let text = dir().display_path(&p);
        assert_eq!(dir().parse_path(&text), Ok(p.clone()));
        assert_eq!(dir().parse_path(&format!("{text}/bin/foo")), Ok(p));
        assert!(dir().parse_path("/tmp/foo").is_err());
        assert!(dir().parse_path("/noodle/store/short-foo").is_err());
        assert!(dir()
            .parse_path(&format!("/noodle/store/{}-foo", "e".repeat(32)))
            .is_err());
        assert!(StoreDir::new("relative").is_err());
        assert!(StoreDir::new("/a/../b").is_err());
    }
}
