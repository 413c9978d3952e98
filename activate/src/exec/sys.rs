//! The few calls of `exec` that need `unsafe`, each behind a safe function.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::view::Plan;

/// Makes `command`'s child apply `plan` between fork and exec, reporting a failed step's index
/// on `report` (which should be close-on-exec).
pub(super) fn set_up_before_exec(command: &mut Command, plan: Arc<Plan>, report: OwnedFd) {
    let hook = move || plan.apply(report.as_fd());
    // SAFETY: the hook runs in the forked child of a possibly multi-threaded process, where
    // only async-signal-safe calls are sound. `Plan::apply` makes raw system calls (through
    // nix, on `CStr`s made before the fork, which nix passes on without copying), allocates
    // nothing and takes no lock; the io::Error it may return is the allocation-free OS kind.
    unsafe {
        command.pre_exec(hook);
    }
}

/// Writes `text` to the file at `path` in one write(2) call (as /proc/self/uid_map requires).
pub(super) fn write_file(path: &CStr, text: &[u8]) -> nix::Result<()> {
    let fd = nix::fcntl::open(path, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty())?;
    // SAFETY: `fd` was just returned by open(2) and nothing else owns it.
    let file = unsafe { OwnedFd::from_raw_fd(fd) };
    let written = nix::unistd::write(&file, text)?;
    if written != text.len() {
        return Err(nix::errno::Errno::EIO);
    }
    Ok(())
}
