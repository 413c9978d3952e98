//! The few system calls of the sandbox that need `unsafe`, each behind a safe function whose
//! contract is stated where it is used.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sched::{CloneCb, CloneFlags};
use nix::sys::signal::{SigHandler, Signal};
use nix::unistd::{ForkResult, Pid};

/// clone(2) `child` into new namespaces on `stack`; the child exits with its return value.
///
/// Must only be called while the calling process is single-threaded (the helper, before it
/// starts its watcher thread).
pub(super) fn clone_child(
    child: CloneCb<'_>,
    stack: &mut [u8],
    flags: CloneFlags,
) -> nix::Result<Pid> {
    // SAFETY: the helper calls this before it has any other thread, so no lock (malloc's,
    // std's) can be held by a thread that does not exist in the child, and the child may run
    // ordinary Rust code. Without CLONE_VM the child gets its own copy of the address space;
    // `stack` is a heap buffer of helper::STACK_SIZE bytes, far more than init uses.
    // SIGCHLD as exit signal so that the helper can wait for the child like for a fork.
    unsafe { nix::sched::clone(child, stack, flags, Some(libc::SIGCHLD)) }
}

/// fork(2) from the sandbox's init, which is single-threaded.
pub(super) fn fork_single_threaded() -> nix::Result<ForkResult> {
    // SAFETY: init (a clone of the single-threaded helper) never starts a thread, so the child
    // inherits no lock held by another thread and may allocate.
    unsafe { nix::unistd::fork() }
}

/// Give the builder default dispositions for all signals: ignored signals survive execve, and
/// the Rust runtime ignores SIGPIPE (anything the noodle process ignored would leak too).
pub(super) fn reset_signal_dispositions() {
    for signal in Signal::iterator() {
        if matches!(signal, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: installing SIG_DFL runs no code of ours in signal context; the process is
        // single-threaded and about to execve.
        let _ = unsafe { nix::sys::signal::signal(signal, SigHandler::SigDfl) };
    }
}

/// setdomainname(2), which nix does not wrap.
pub(super) fn set_domainname(name: &str) -> nix::Result<()> {
    // SAFETY: the pointer and length describe `name`'s bytes, which outlive the call; the
    // kernel copies at most `len` bytes and needs no NUL terminator.
    let result = unsafe { libc::setdomainname(name.as_ptr().cast::<libc::c_char>(), name.len()) };
    Errno::result(result).map(drop)
}

/// Set IFF_UP on `lo` of the current network namespace (what `ip link set lo up` does).
pub(super) fn bring_up_loopback() -> nix::Result<()> {
    // SAFETY: socket(2) with constant arguments; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    let fd = Errno::result(fd)?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by nothing else.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is a C struct of integers, arrays and a union of those: all-zero is valid.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads ifr_name and writes ifr_flags of the ifreq we own and pass by
    // a valid pointer.
    Errno::result(unsafe {
        libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut request)
    })?;
    // SAFETY: SIOCGIFFLAGS succeeded, so the union holds ifru_flags.
    unsafe { request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads ifr_name and ifr_flags of the ifreq we own.
    Errno::result(unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS as _, &request) })?;
    Ok(())
}

/// _exit(2): end a forked child without running anything of the parent's (atexit handlers,
/// buffered output) twice.
pub(super) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions.
    unsafe { libc::_exit(code) }
}
