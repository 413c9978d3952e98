//! How a command sees the store. Programs name each other by logical store path, so when the
//! store's files live elsewhere (`--root`, a user's own store) the command runs in a private
//! mount namespace whose root shows the host's top-level entries plus the logical store
//! directory bound to the physical one.
//!
//! The [`Plan`] is made in the parent; its steps run in the forked child before exec, where
//! only async-signal-safe calls are allowed (noodle is multi-threaded): every path is a
//! `CString` made beforehand, and each step is one or two raw system calls.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;

use super::sys;

/// How commands see the store: its logical directory, and where its files really are.
#[derive(Debug, Clone)]
pub struct StoreView {
    logical: String,
    physical: PathBuf,
    /// Mountpoint for the tmpfs root of the namespace; each process mounts on it in its own.
    scratch: PathBuf,
    /// Use a user namespace even as root (tests of the unprivileged path).
    force_user_namespace: bool,
}

impl StoreView {
    pub fn of(store: &noodle_store::Store) -> StoreView {
        StoreView {
            logical: store.store_dir().as_str().to_owned(),
            physical: store.dirs().store(),
            scratch: store.dirs().var().join("lib/exec-root"),
            force_user_namespace: false,
        }
    }

    /// The logical dir already shows the physical one: commands run without a namespace.
    pub fn is_direct(&self) -> bool {
        match (
            fs_err::metadata(&self.logical),
            fs_err::metadata(&self.physical),
        ) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }

    /// Where a program named as the command sees it is on the host.
    pub(super) fn host_path(&self, program: &str) -> PathBuf {
        match program.strip_prefix(self.logical.as_str()) {
            Some(rest) if rest.starts_with('/') => self.physical.join(rest.trim_start_matches('/')),
            _ => PathBuf::from(program),
        }
    }

    #[cfg(test)]
    pub(super) fn new(logical: &str, physical: &Path, scratch: &Path) -> StoreView {
        StoreView {
            logical: logical.to_owned(),
            physical: physical.to_owned(),
            scratch: scratch.to_owned(),
            force_user_namespace: false,
        }
    }

    #[cfg(test)]
    pub(super) fn with_user_namespace(mut self) -> StoreView {
        self.force_user_namespace = true;
        self
    }

    /// The steps that make the view in a forked child. Errors say what could not be prepared.
    pub(super) fn plan(&self) -> Result<Plan, String> {
        fs_err::create_dir_all(&self.scratch).map_err(|e| e.to_string())?;
        let mut steps = Vec::new();
        let uid = nix::unistd::geteuid();
        if uid.is_root() && !self.force_user_namespace {
            steps.push(Step::Unshare(CloneFlags::CLONE_NEWNS));
        } else {
            let gid = nix::unistd::getegid();
            steps.push(Step::Unshare(
                CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS,
            ));
            // Map our own ids only, so the command runs as who we are (and its exec drops the
            // namespace's capabilities). gid_map needs setgroups denied first.
            for (file, text) in [
                ("setgroups", "deny".to_owned()),
                ("uid_map", format!("{uid} {uid} 1")),
                ("gid_map", format!("{gid} {gid} 1")),
            ] {
                steps.push(Step::WriteFile {
                    path: cstring(format!("/proc/self/{file}"))?,
                    text: cstring(text)?,
                });
            }
        }
        let scratch = path_cstring(&self.scratch)?;
        steps.push(Step::MakePrivate);
        steps.push(Step::Tmpfs(scratch.clone()));
        // Binding a host directory that contains the scratch mountpoint must not copy the
        // view into itself.
        steps.push(Step::Unbindable(scratch.clone()));

        let components: Vec<&str> = self.logical.split('/').filter(|c| !c.is_empty()).collect();
        let hidden = components.first().copied().unwrap_or_default();
        let mut names: Vec<_> = fs_err::read_dir("/")
            .and_then(|entries| entries.collect::<io::Result<Vec<_>>>())
            .map_err(|e| e.to_string())?;
        names.sort_by_key(|entry| entry.file_name());
        for entry in names {
            let name = entry.file_name();
            if name.as_bytes() == hidden.as_bytes() {
                continue;
            }
            let host = Path::new("/").join(&name);
            let inside = path_cstring(&self.scratch.join(&name))?;
            let kind = entry.file_type().map_err(|e| e.to_string())?;
            if kind.is_symlink() {
                let target = fs_err::read_link(&host).map_err(|e| e.to_string())?;
                steps.push(Step::Symlink {
                    target: path_cstring(&target)?,
                    link: inside,
                });
            } else if kind.is_dir() {
                steps.push(Step::Mkdir(inside.clone()));
                steps.push(Step::Bind {
                    source: path_cstring(&host)?,
                    target: inside,
                });
            } else if kind.is_file() {
                steps.push(Step::EmptyFile(inside.clone()));
                steps.push(Step::Bind {
                    source: path_cstring(&host)?,
                    target: inside,
                });
            }
        }

        let mut inside = self.scratch.clone();
        for component in &components {
            inside.push(component);
            steps.push(Step::Mkdir(path_cstring(&inside)?));
        }
        steps.push(Step::Bind {
            source: path_cstring(&self.physical)?,
            target: path_cstring(&inside)?,
        });
        // Writes to the new root's own directory would vanish with the namespace: refuse them.
        steps.push(Step::ReadOnly(scratch.clone()));
        steps.push(Step::Chroot(scratch));
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        steps.push(Step::Chdir(path_cstring(&cwd)?));
        Ok(Plan { steps })
    }
}

fn cstring(text: String) -> Result<CString, String> {
    CString::new(text).map_err(|e| format!("a path contains a NUL byte: {e}"))
}

fn path_cstring(path: &Path) -> Result<CString, String> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("{} contains a NUL byte", path.display()))
}

/// The steps, in order.
#[derive(Debug)]
pub(super) struct Plan {
    steps: Vec<Step>,
}

#[derive(Debug)]
enum Step {
    Unshare(CloneFlags),
    WriteFile {
        path: CString,
        text: CString,
    },
    MakePrivate,
    Tmpfs(CString),
    Unbindable(CString),
    Mkdir(CString),
    EmptyFile(CString),
    Bind {
        source: CString,
        target: CString,
    },
    Symlink {
        target: CString,
        link: CString,
    },
    ReadOnly(CString),
    Chroot(CString),
    /// To the caller's directory, or `/` when it is not in the view.
    Chdir(CString),
}

impl Plan {
    /// Runs in the forked child: async-signal-safe calls only, no allocation. On failure the
    /// step's index goes to `report` so the parent can say which step failed.
    pub(super) fn apply(&self, report: BorrowedFd<'_>) -> io::Result<()> {
        for (index, step) in self.steps.iter().enumerate() {
            if let Err(errno) = step.apply() {
                let _ = nix::unistd::write(report, &(index as u32).to_le_bytes());
                return Err(io::Error::from(errno));
            }
        }
        Ok(())
    }

    /// What step `index` (as reported by [`Plan::apply`]) was doing.
    pub(super) fn describe(&self, index: u32) -> String {
        let Some(step) = self.steps.get(index as usize) else {
            return "an unknown step".to_owned();
        };
        let show = |c: &CStr| c.to_string_lossy().into_owned();
        match step {
            Step::Unshare(flags) if flags.contains(CloneFlags::CLONE_NEWUSER) => {
                "creating a user and mount namespace".to_owned()
            }
            Step::Unshare(_) => "creating a mount namespace".to_owned(),
            Step::WriteFile { path, text } => format!("writing {:?} to {}", show(text), show(path)),
            Step::MakePrivate => "making / a private mount".to_owned(),
            Step::Tmpfs(target) => format!("mounting a tmpfs on {}", show(target)),
            Step::Unbindable(target) => format!("making {} unbindable", show(target)),
            Step::Mkdir(path) | Step::EmptyFile(path) => format!("creating {}", show(path)),
            Step::Bind { source, target } => {
                format!("bind-mounting {} on {}", show(source), show(target))
            }
            Step::Symlink { target, link } => {
                format!("creating the symlink {} -> {}", show(link), show(target))
            }
            Step::ReadOnly(target) => format!("making {} read-only", show(target)),
            Step::Chroot(path) => format!("changing root to {}", show(path)),
            Step::Chdir(path) => format!("changing directory to {} or /", show(path)),
        }
    }
}

impl Step {
    fn apply(&self) -> nix::Result<()> {
        const NONE: Option<&CStr> = None;
        match self {
            Step::Unshare(flags) => nix::sched::unshare(*flags),
            Step::WriteFile { path, text } => sys::write_file(path, text.to_bytes()),
            Step::MakePrivate => mount(
                NONE,
                c"/",
                NONE,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                NONE,
            ),
            Step::Tmpfs(target) => mount(
                Some(c"tmpfs"),
                target.as_c_str(),
                Some(c"tmpfs"),
                MsFlags::empty(),
                Some(c"mode=0755"),
            ),
            Step::Unbindable(target) => {
                mount(NONE, target.as_c_str(), NONE, MsFlags::MS_UNBINDABLE, NONE)
            }
            Step::Mkdir(path) => {
                nix::unistd::mkdir(path.as_c_str(), Mode::from_bits_truncate(0o755))
            }
            Step::EmptyFile(path) => {
                let fd = nix::fcntl::open(
                    path.as_c_str(),
                    OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o644),
                )?;
                nix::unistd::close(fd)
            }
            // Recursive: in a user namespace the submounts are locked to their parent mount.
            Step::Bind { source, target } => mount(
                Some(source.as_c_str()),
                target.as_c_str(),
                NONE,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                NONE,
            ),
            Step::Symlink { target, link } => {
                nix::unistd::symlinkat(target.as_c_str(), None, link.as_c_str())
            }
            Step::ReadOnly(target) => mount(
                NONE,
                target.as_c_str(),
                NONE,
                MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
                NONE,
            ),
            Step::Chroot(path) => nix::unistd::chroot(path.as_c_str()),
            Step::Chdir(path) => {
                nix::unistd::chdir(path.as_c_str()).or_else(|_| nix::unistd::chdir(c"/"))
            }
        }
    }
}
