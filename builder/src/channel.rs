//! A channel: a directory holding `pkgs/<name>/<version>.toml` recipes and its `noodle.lock`.

use std::path::{Path, PathBuf};

use crate::recipe::{Recipe, RecipeError};

pub const LOCK_FILE: &str = "noodle.lock";

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("{} is not a channel: it has no pkgs/ directory (a channel is a directory containing pkgs/<name>/<version>.toml)", .0.display())]
    NoPkgs(PathBuf),
    #[error("no channel around {}: neither it nor any parent directory contains pkgs/", .0.display())]
    NotFound(PathBuf),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone)]
pub struct Channel {
    root: PathBuf,
}

impl Channel {
    pub fn open(root: &Path) -> Result<Channel, ChannelError> {
        // Absolute so that source paths and lock locations do not depend on how it was named.
        let root = std::path::absolute(root)?;
        if !root.join("pkgs").is_dir() {
            return Err(ChannelError::NoPkgs(root));
        }
        Ok(Channel { root })
    }

    /// The channel around a recipe file or package directory named on the command line.
    pub fn find_for(path: &Path) -> Result<Channel, ChannelError> {
        let abs = std::path::absolute(path)?;
        abs.ancestors()
            .skip(1)
            .find(|dir| dir.join("pkgs").is_dir())
            .map(|root| Channel {
                root: root.to_owned(),
            })
            .ok_or(ChannelError::NotFound(abs))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn pkgs_dir(&self) -> PathBuf {
        self.root.join("pkgs")
    }

    pub fn lock_path(&self) -> PathBuf {
        self.root.join(LOCK_FILE)
    }

    /// Package names, sorted.
    pub fn names(&self) -> Result<Vec<String>, ChannelError> {
        let mut names = Vec::new();
        for entry in fs_err::read_dir(self.pkgs_dir())? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                if let Some(name) = entry.file_name().to_str() {
                    names.push(name.to_owned());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    /// The versions with a recipe, ascending; empty for an unknown package. Other files and
    /// directories (`src/`, notes) are ignored so packages can keep helpers beside recipes.
    pub fn versions(&self, name: &str) -> Result<Vec<semver::Version>, ChannelError> {
        let dir = self.pkgs_dir().join(name);
        // A name with `/` or `..` would escape pkgs/.
        if noodle_store::path::validate_name(name).is_err() || !dir.is_dir() {
            return Ok(Vec::new());
        }
        let mut versions = Vec::new();
        for entry in fs_err::read_dir(&dir)? {
            let entry = entry?;
            let file_name = entry.file_name();
            let Some(stem) = file_name.to_str().and_then(|f| f.strip_suffix(".toml")) else {
                continue;
            };
            if let Ok(version) = stem.parse::<semver::Version>() {
                if entry.file_type()?.is_file() || entry.path().is_file() {
                    versions.push(version);
                }
            }
        }
        versions.sort();
        Ok(versions)
    }

    pub fn recipe_path(&self, name: &str, version: &semver::Version) -> PathBuf {
        self.pkgs_dir().join(name).join(format!("{version}.toml"))
    }

    pub fn load(&self, name: &str, version: &semver::Version) -> Result<Recipe, RecipeError> {
        Recipe::load(&self.recipe_path(name, version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        fs_err::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
        fs_err::write(path, text).expect("write");
    }

    #[test]
    fn lists_names_and_versions() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        assert!(matches!(Channel::open(root), Err(ChannelError::NoPkgs(_))));
        for v in ["1.10.0", "1.2.0", "1.9.0-rc1"] {
            write(&root.join(format!("pkgs/hello/{v}.toml")), "");
        }
        write(&root.join("pkgs/hello/notes.txt"), "");
        write(&root.join("pkgs/hello/src/1.0.0.toml"), "");
        fs_err::create_dir_all(root.join("pkgs/hello/9.9.9.toml.d")).expect("mkdir");
        write(&root.join("pkgs/abc/0.1.0.toml"), "");
        let channel = Channel::open(root).expect("open");
        assert_eq!(channel.names().expect("names"), ["abc", "hello"]);
        let versions: Vec<String> = channel
            .versions("hello")
            .expect("versions")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(versions, ["1.2.0", "1.9.0-rc1", "1.10.0"]);
        assert!(channel.versions("nope").expect("versions").is_empty());
        assert!(channel.versions("../hello").expect("versions").is_empty());
        assert_eq!(channel.lock_path(), root.join("noodle.lock"));
    }

    #[test]
    fn finds_the_channel_around_a_path() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("chan");
        write(&root.join("pkgs/hello/1.0.0.toml"), "");
        for p in ["pkgs/hello/1.0.0.toml", "pkgs/hello", "pkgs/hello/"] {
            let found = Channel::find_for(&root.join(p)).expect(p);
            assert_eq!(found.root(), root);
        }
        assert!(matches!(
            Channel::find_for(tmp.path()),
            Err(ChannelError::NotFound(_))
        ));
    }
}
