//! A profile's links: `P` → `P-<N>-link` → the generation's store path. Every change is a
//! temporary symlink renamed over the old one, then an fsync of the directory; writers take
//! the profile's lock (`.P.lock` beside it) first.

use std::path::{Path, PathBuf};

use noodle_store::locks::FileLock;
use noodle_store::{failpoint, sync};

use crate::error::{ProfileError, Result};

#[derive(Debug, Clone)]
pub struct Profile {
    link: PathBuf,
    dir: PathBuf,
    name: String,
}

/// Generation N: the link that names it and the store path it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationLink {
    pub number: u64,
    pub link: PathBuf,
    /// The logical store path (the link's target).
    pub path: String,
}

/// Held while a writer changes the profile; dropping it lets the next writer in.
pub struct ProfileLock {
    _lock: FileLock,
}

impl ProfileLock {
    /// The locked descriptor, for a child process to inherit (see [`Profile::adopt_lock`]).
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self._lock.as_fd()
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Profile {
    /// The profile whose link is `link` (a physical, absolute path).
    pub fn new(link: PathBuf) -> Result<Self> {
        let name = link
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = link.parent().map(Path::to_owned);
        match dir {
            Some(dir) if valid_name(&name) && link.is_absolute() => Ok(Self { link, dir, name }),
            _ => Err(ProfileError::BadName(link)),
        }
    }

    pub fn link(&self) -> &Path {
        &self.link
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn generation_link(&self, number: u64) -> PathBuf {
        self.dir.join(self.generation_link_name(number))
    }

    fn generation_link_name(&self, number: u64) -> String {
        format!("{}-{number}-link", self.name)
    }

    fn parse_generation_link_name(&self, file: &str) -> Option<u64> {
        let number = file
            .strip_prefix(&self.name)?
            .strip_prefix('-')?
            .strip_suffix("-link")?;
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        number.parse().ok()
    }

    /// Takes the profile's lock, creating its directory if needed; `on_wait` is called first
    /// when another process holds it. Leftover temporary links of a crashed writer go.
    pub fn lock(&self, on_wait: impl FnOnce()) -> Result<ProfileLock> {
        fs_err::create_dir_all(&self.dir)?;
        let lock = FileLock::exclusive_noting(&self.lock_file(), on_wait)?;
        self.remove_leftover_temporaries()?;
        Ok(ProfileLock { _lock: lock })
    }

    /// Takes the profile's lock if no other process holds it (`--no-wait`).
    pub fn try_lock(&self) -> Result<Option<ProfileLock>> {
        fs_err::create_dir_all(&self.dir)?;
        let Some(lock) = FileLock::try_exclusive(&self.lock_file())? else {
            return Ok(None);
        };
        self.remove_leftover_temporaries()?;
        Ok(Some(ProfileLock { _lock: lock }))
    }

    /// Takes over the lock a parent process holds and handed down as `fd` (a detached
    /// activation worker keeps the profile locked after the command that started it is gone).
    pub fn adopt_lock(&self, fd: std::os::fd::OwnedFd) -> Result<ProfileLock> {
        Ok(ProfileLock {
            _lock: FileLock::adopt(fd, &self.lock_file())?,
        })
    }

    fn lock_file(&self) -> PathBuf {
        self.dir.join(format!(".{}.lock", self.name))
    }

    /// `sync::replace_symlink` names its temporary `.<link name>.tmp-<pid>`; one that survived
    /// its writer would keep a generation alive for ever (it is a GC root). Only this
    /// profile's own are removed (`.P.tmp-N`, `.P-<N>-link.tmp-N`): another profile's, whose
    /// name starts the same, are protected by that profile's lock, not ours.
    fn remove_leftover_temporaries(&self) -> Result<()> {
        for entry in fs_err::read_dir(&self.dir)? {
            let entry = entry?;
            if self.is_own_temporary(&entry.file_name().to_string_lossy()) {
                fs_err::remove_file(entry.path())?;
            }
        }
        Ok(())
    }

    fn is_own_temporary(&self, file: &str) -> bool {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let Some((link, pid)) = file
            .strip_prefix('.')
            .and_then(|rest| rest.rsplit_once(".tmp-"))
        else {
            return false;
        };
        digits(pid) && (link == self.name || self.parse_generation_link_name(link).is_some())
    }

    /// Every generation link's number and file name, ascending, from the directory listing.
    fn listed(&self) -> Result<Vec<(u64, std::ffi::OsString)>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(fs_err::read_dir(&self.dir).err().unwrap_or(e).into()),
        };
        let mut listed = Vec::new();
        for entry in entries {
            let file = entry?.file_name();
            if let Some(number) = self.parse_generation_link_name(&file.to_string_lossy()) {
                listed.push((number, file));
            }
        }
        listed.sort_unstable();
        Ok(listed)
    }

    /// The numbers of every generation, ascending (no link is read).
    pub fn numbers(&self) -> Result<Vec<u64>> {
        Ok(self.listed()?.into_iter().map(|(n, _)| n).collect())
    }

    pub fn generation(&self, number: u64) -> Result<GenerationLink> {
        let link = self.generation_link(number);
        match std::fs::read_link(&link) {
            Ok(target) => Ok(GenerationLink {
                number,
                link,
                path: target.to_string_lossy().into_owned(),
            }),
            Err(_) => Err(ProfileError::NoSuchGeneration {
                profile: self.link.clone(),
                number,
                available: self.numbers()?,
            }),
        }
    }

    /// The generation the profile points at; `None` for a profile that has never been
    /// switched. A profile link replaced by a file, or pointed elsewhere, is an error.
    pub fn current(&self) -> Result<Option<u64>> {
        let meta = match std::fs::symlink_metadata(&self.link) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(_) => {
                return Err(fs_err::symlink_metadata(&self.link).err().map_or_else(
                    || std::io::Error::other("cannot read the profile link").into(),
                    ProfileError::Io,
                ))
            }
        };
        if !meta.file_type().is_symlink() {
            return Err(ProfileError::NotALink {
                path: self.link.clone(),
                kind: if meta.is_dir() {
                    "directory"
                } else {
                    "regular file"
                },
            });
        }
        let target = fs_err::read_link(&self.link)?;
        let strange = || ProfileError::StrangeLink {
            path: self.link.clone(),
            target: target.clone(),
            name: self.name.clone(),
        };
        let same_dir = match target.parent() {
            None => true,
            Some(parent) => parent.as_os_str().is_empty() || parent == self.dir,
        };
        if !same_dir {
            return Err(strange());
        }
        let file = target.file_name().ok_or_else(strange)?;
        let number = self
            .parse_generation_link_name(&file.to_string_lossy())
            .ok_or_else(strange)?;
        Ok(Some(number))
    }

    /// Makes the link of generation `number`, naming `store_path` (logical).
    pub fn add_generation_link(&self, number: u64, store_path: &str) -> Result<()> {
        fs_err::create_dir_all(&self.dir)?;
        sync::replace_symlink(Path::new(store_path), &self.generation_link(number))?;
        Ok(())
    }

    /// Points the profile at generation `number`: one rename, then an fsync of the directory.
    /// The caller has checked the generation is complete.
    pub fn point_at(&self, number: u64) -> Result<()> {
        failpoint::hit("profile:before-switch");
        sync::replace_symlink(Path::new(&self.generation_link_name(number)), &self.link)?;
        failpoint::hit("profile:after-switch");
        Ok(())
    }

    /// Leaves the profile pointing at no generation, as before its first switch: what
    /// reverting a profile's first activation returns to.
    pub fn point_at_nothing(&self) -> Result<()> {
        match std::fs::remove_file(&self.link) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(_) => fs_err::remove_file(&self.link)?,
        }
        sync::fsync_dir(&self.dir)?;
        Ok(())
    }

    /// Removes the links of `numbers` (never the current one: the caller checked), then
    /// fsyncs the directory once.
    pub fn remove_generation_links(&self, numbers: &[u64]) -> Result<()> {
        for (i, number) in numbers.iter().enumerate() {
            fs_err::remove_file(self.generation_link(*number))?;
            if i == 0 && numbers.len() > 1 {
                failpoint::hit("profile:mid-delete");
            }
        }
        sync::fsync_dir(&self.dir)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_link_names_parse_back_and_nothing_else_does() {
        let profile = Profile::new("/p/my-profile".into()).expect("profile");
        assert_eq!(
            profile.generation_link(12),
            Path::new("/p/my-profile-12-link")
        );
        for (file, number) in [
            ("my-profile-12-link", Some(12)),
            ("my-profile-0-link", Some(0)),
            ("my-profile--link", None),
            ("my-profile-1x-link", None),
            ("my-profile-12", None),
            ("other-12-link", None),
            ("my-profile-3-4-link", None),
        ] {
            assert_eq!(profile.parse_generation_link_name(file), number, "{file}");
        }
    }

    #[test]
    fn only_the_profiles_own_temporaries_are_leftovers() {
        let profile = Profile::new("/p/profile".into()).expect("profile");
        for (file, own) in [
            (".profile.tmp-12", true),
            (".profile-3-link.tmp-12", true),
            (".profile-dev.tmp-12", false),
            (".profile-dev-3-link.tmp-12", false),
            (".profile.tmp-", false),
            (".profile.lock", false),
            ("profile-3-link", false),
        ] {
            assert_eq!(profile.is_own_temporary(file), own, "{file}");
        }
    }

    #[test]
    fn profile_names_are_plain_file_names() {
        for bad in ["/p/.hidden", "relative", "/p/a b", "/"] {
            assert!(Profile::new(bad.into()).is_err(), "{bad}");
        }
    }

    #[test]
    fn current_refuses_a_file_and_a_foreign_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let profile = Profile::new(dir.path().join("profile")).expect("profile");
        assert_eq!(profile.current().expect("none"), None);
        fs_err::write(profile.link(), "x").expect("write");
        let err = profile.current().expect_err("file");
        assert!(err.to_string().contains("is a regular file"), "{err}");
        fs_err::remove_file(profile.link()).expect("rm");
        std::os::unix::fs::symlink("/etc", profile.link()).expect("symlink");
        assert!(matches!(
            profile.current(),
            Err(ProfileError::StrangeLink { .. })
        ));
        fs_err::remove_file(profile.link()).expect("rm");
        profile.point_at(3).expect("point");
        assert_eq!(profile.current().expect("current"), Some(3));
    }
}
