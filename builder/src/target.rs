//! What the user asked for on the command line: `hello`, `hello@1.2.3`, `crypto@^1.2`, or a
//! path to a package directory or recipe file.

use std::fmt;
use std::path::{Path, PathBuf};

use semver::{Version, VersionReq};

use crate::channel::Channel;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("empty package name")]
    Empty,
    #[error("{text:?}: {name:?} is not a package name (names are [A-Za-z0-9+._?=-], not starting with '.')")]
    BadName { text: String, name: String },
    #[error("{text:?}: {req:?} is not a version or requirement (expected e.g. hello@1.2.3, hello@^1.2 or hello@\">=1.2.5, <2\")")]
    BadRequirement { text: String, req: String },
    #[error("{} is not in channel {}: expected {}/pkgs/<name> or {}/pkgs/<name>/<version>.toml", .path.display(), .channel.display(), .channel.display(), .channel.display())]
    NotInChannel { path: PathBuf, channel: PathBuf },
    #[error("{}: a recipe file is named <version>.toml with a semver version, e.g. 1.2.3.toml", .0.display())]
    BadRecipeFile(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `req == None`: the highest version.
    Package {
        name: String,
        req: Option<VersionReq>,
    },
    /// A package directory (highest version) or recipe file (that version).
    Path(PathBuf),
}

/// A target made concrete against a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub name: String,
    pub req: Option<VersionReq>,
}

impl Target {
    pub fn parse(text: &str) -> Result<Target, TargetError> {
        if text.contains('/') || text.ends_with(".toml") {
            return Ok(Target::Path(PathBuf::from(text)));
        }
        let (name, req) = match text.split_once('@') {
            Some((name, req)) => (name, Some(req)),
            None => (text, None),
        };
        if name.is_empty() {
            return Err(TargetError::Empty);
        }
        if noodle_store::path::validate_name(name).is_err() {
            return Err(TargetError::BadName {
                text: text.to_owned(),
                name: name.to_owned(),
            });
        }
        let req = req.map(|req| parse_cli_req(text, req)).transpose()?;
        Ok(Target::Package {
            name: name.to_owned(),
            req,
        })
    }

    /// For path targets, the path to find the channel from ([`Channel::find_for`]).
    pub fn channel_hint(&self) -> Option<&Path> {
        match self {
            Target::Path(path) => Some(path),
            Target::Package { .. } => None,
        }
    }

    /// The package and requirement this target means in `channel`.
    pub fn wanted(&self, channel: &Channel) -> Result<Wanted, TargetError> {
        let path = match self {
            Target::Package { name, req } => {
                return Ok(Wanted {
                    name: name.clone(),
                    req: req.clone(),
                })
            }
            Target::Path(path) => path,
        };
        let not_in = || TargetError::NotInChannel {
            path: path.clone(),
            channel: channel.root().to_owned(),
        };
        let abs = std::path::absolute(path).map_err(|_| not_in())?;
        let rel = abs.strip_prefix(channel.pkgs_dir()).map_err(|_| not_in())?;
        let parts: Vec<&str> = rel
            .components()
            .map(|c| c.as_os_str().to_str().ok_or_else(not_in))
            .collect::<Result<_, _>>()?;
        match parts.as_slice() {
            [name] if !name.ends_with(".toml") => Ok(Wanted {
                name: (*name).to_owned(),
                req: None,
            }),
            [name, file] => {
                let version: Version = file
                    .strip_suffix(".toml")
                    .and_then(|stem| stem.parse().ok())
                    .ok_or_else(|| TargetError::BadRecipeFile(path.clone()))?;
                Ok(Wanted {
                    name: (*name).to_owned(),
                    req: Some(exactly(&version)),
                })
            }
            _ => Err(not_in()),
        }
    }
}

/// `=1.2.3`, matching only that version (build metadata aside).
pub fn exactly(version: &Version) -> VersionReq {
    VersionReq {
        comparators: vec![semver::Comparator {
            op: semver::Op::Exact,
            major: version.major,
            minor: Some(version.minor),
            patch: Some(version.patch),
            pre: version.pre.clone(),
        }],
    }
}

/// On the command line a bare version means exactly that version (`hello@1.2.3` is `=1.2.3`),
/// unlike in recipes where `"1.2.3"` means `^1.2.3`: a user naming a version wants that one.
fn parse_cli_req(text: &str, req: &str) -> Result<VersionReq, TargetError> {
    let bad = || TargetError::BadRequirement {
        text: text.to_owned(),
        req: req.to_owned(),
    };
    let trimmed = req.trim();
    if trimmed.is_empty() {
        return Err(bad());
    }
    if trimmed.starts_with(|c: char| c.is_ascii_digit()) {
        return format!("={trimmed}").parse().map_err(|_| bad());
    }
    trimmed.parse().map_err(|_| bad())
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Package { name, req: None } => f.write_str(name),
            Target::Package {
                name,
                req: Some(req),
            } => write!(f, "{name}@{req}"),
            Target::Path(path) => write!(f, "{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(target: &str) -> VersionReq {
        match Target::parse(target).expect(target) {
            Target::Package { req: Some(req), .. } => req,
            other => panic!("{target}: {other:?}"),
        }
    }

    fn v(text: &str) -> Version {
        text.parse().expect("version")
    }

    #[test]
    fn bare_version_is_exact() {
        let r = req("hello@1.2.3");
        assert!(r.matches(&v("1.2.3")));
        assert!(
            !r.matches(&v("1.2.4")),
            "a CLI version must not mean ^1.2.3"
        );
        assert!(!r.matches(&v("1.3.0")));
        let partial = req("hello@1.2");
        assert!(partial.matches(&v("1.2.9")) && !partial.matches(&v("1.3.0")));
    }

    #[test]
    fn requirements_and_names() {
        assert_eq!(
            Target::parse("hello").expect("parse"),
            Target::Package {
                name: "hello".into(),
                req: None
            }
        );
        let r = req("crypto@>=1.2.5");
        assert!(r.matches(&v("2.0.0")) && !r.matches(&v("1.2.4")));
        let r = req("crypto@^1.2");
        assert!(r.matches(&v("1.9.0")) && !r.matches(&v("2.0.0")));
        assert_eq!(Target::parse("@1.0"), Err(TargetError::Empty));
        assert!(matches!(
            Target::parse("hel lo"),
            Err(TargetError::BadName { .. })
        ));
        let err = Target::parse("hello@^x").expect_err("bad req");
        assert!(err
            .to_string()
            .contains("\"^x\" is not a version or requirement"));
        assert!(matches!(
            Target::parse("hello@"),
            Err(TargetError::BadRequirement { .. })
        ));
    }

    #[test]
    fn paths() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        fs_err::create_dir_all(root.join("pkgs/hello")).expect("mkdir");
        let channel = Channel::open(root).expect("open");
        let dir = root.join("pkgs/hello");
        let target = Target::parse(&dir.to_string_lossy()).expect("parse");
        assert_eq!(target.channel_hint(), Some(dir.as_path()));
        assert_eq!(
            target.wanted(&channel).expect("wanted"),
            Wanted {
                name: "hello".into(),
                req: None
            }
        );
        let file = Target::parse(&dir.join("1.0.0.toml").to_string_lossy()).expect("parse");
        let wanted = file.wanted(&channel).expect("wanted");
        let r = wanted.req.expect("exact");
        assert!(r.matches(&v("1.0.0")) && !r.matches(&v("1.0.1")));
        assert!(Target::parse("1.0.0.toml")
            .expect("parse")
            .channel_hint()
            .is_some());
        let outside = Target::parse("/elsewhere/pkgs/hello").expect("parse");
        assert!(matches!(
            outside.wanted(&channel),
            Err(TargetError::NotInChannel { .. })
        ));
        let bad = Target::parse(&dir.join("latest.toml").to_string_lossy()).expect("parse");
        assert!(matches!(
            bad.wanted(&channel),
            Err(TargetError::BadRecipeFile(_))
        ));
    }
}
