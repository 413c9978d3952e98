//! The helper process (`noodle __noodle-sandbox <work_dir>`): a fresh, single-threaded process
//! that may clone. It clones init into the namespaces, writes its uid/gid maps, relays init's
//! report to `status.json` and kills the sandbox when the parent closes the control pipe.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use nix::fcntl::{FcntlArg, FdFlag, OFlag};
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::{Gid, Pid, Uid};

use super::{init, sys, validate, BuildIds, Report, SandboxSpec, SANDBOX_GID, SANDBOX_UID};
use super::{SPEC_FILE, STATUS_FILE};

/// Stack of the cloned init. It runs ordinary Rust (serde, formatting) but nothing deep; the
/// memory is only touched where used.
const STACK_SIZE: usize = 8 << 20;

/// Entry of `<helper_exe> __noodle-sandbox <work_dir>`; never returns. Everything it has to say
/// goes to `work_dir/status.json`; only when even that is impossible does it complain on
/// stderr (which is the build output) and exit with 125.
pub fn helper_main() -> ! {
    let Some(work_dir) = std::env::args_os().nth(2).map(PathBuf::from) else {
        eprintln!(
            "noodle sandbox helper: usage: noodle {} <work dir>",
            super::HELPER_ARG
        );
        std::process::exit(125)
    };
    mark_inherited_fds_cloexec();
    let report = match sandbox(&work_dir) {
        Ok(report) => report,
        Err(message) => Report::SetupFailed(message),
    };
    let written = serde_json::to_vec(&report)
        .map_err(std::io::Error::other)
        .and_then(|json| fs_err::write(work_dir.join(STATUS_FILE), json));
    if let Err(e) = written {
        eprintln!("noodle sandbox helper: {e}");
        std::process::exit(125)
    }
    std::process::exit(0)
}

/// Descriptors that noodle leaked to us without O_CLOEXEC must not reach the builder.
fn mark_inherited_fds_cloexec() {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // Fails harmlessly for the directory's own descriptor, closed by now.
        let _ = nix::fcntl::fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    }
}

/// The ids init gets mapped to in the parent user namespace.
enum Mapping {
    /// Running as root: the build user's ids.
    BuildUser(BuildIds),
    /// Not root: our own ids (the only ones an unprivileged process may map).
    Own { uid: Uid, gid: Gid },
}

fn sandbox(work_dir: &Path) -> Result<Report, String> {
    let spec_path = work_dir.join(SPEC_FILE);
    let json = fs_err::read(&spec_path).map_err(|e| e.to_string())?;
    let spec: SandboxSpec = serde_json::from_slice(&json)
        .map_err(|e| format!("parsing {}: {e}", spec_path.display()))?;
    validate(&spec).map_err(|e| format!("invalid sandbox spec: {e}"))?;

    let mapping = match (nix::unistd::geteuid().is_root(), spec.build_user) {
        (true, Some(ids)) => {
            // The builder runs as the build user: it must own what it writes to.
            chown_tree(&spec.build_dir, ids)?;
            chown_tree(&spec.store_scratch, ids)?;
            Mapping::BuildUser(ids)
        }
        (true, None) => {
            return Err("running as root needs a build user (SandboxSpec::build_user)".into())
        }
        (false, None) => Mapping::Own {
            uid: nix::unistd::geteuid(),
            gid: nix::unistd::getegid(),
        },
        (false, Some(_)) => return Err("a build user needs root".into()),
    };

    let root = work_dir.join("root");
    match fs_err::create_dir(&root) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e.to_string()),
        _ => {}
    }

    let (sync_read, sync_write) = pipe()?;
    let (report_read, report_write) = pipe()?;
    let mut stack = vec![0u8; STACK_SIZE];
    let flags = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWCGROUP;
    let child = {
        let (spec, root) = (&spec, root.as_path());
        let (sync_read, sync_write) = (sync_read.as_fd(), sync_write.as_fd());
        let report_write = report_write.as_fd();
        sys::clone_child(
            Box::new(move || init::child_main(spec, root, sync_read, sync_write, report_write)),
            &mut stack,
            flags,
        )
        .map_err(|e| format!("cloning the sandbox (user namespaces unavailable?): {e}"))?
    };
    // Only the child's copies of these must stay open: EOF then tells each side that the
    // other is gone.
    drop(sync_read);
    drop(report_write);

    if let Err(message) = write_maps(child, &mapping) {
        // Closing the sync pipe without the go byte makes the child exit.
        drop(sync_write);
        let _ = kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
        return Err(message);
    }
    nix::unistd::write(&sync_write, b"G").map_err(|e| format!("starting the sandbox: {e}"))?;
    // Kept open until we exit: init checks that we are still alive through it (see
    // init::build_root).
    let _alive = sync_write;

    // The parent closes our stdin (the control pipe) to stop the build, or dies: either way
    // the read ends, and SIGKILL to init makes the kernel kill its whole pid namespace.
    // `reaped` keeps the kill away from a reaped (hence reusable) pid.
    let reaped = Arc::new(Mutex::new(false));
    let control_reaped = Arc::clone(&reaped);
    std::thread::Builder::new()
        .name("sandbox-control".into())
        .spawn(move || {
            let mut buffer = [0u8; 1];
            let _ = std::io::stdin().read(&mut buffer);
            if !*control_reaped
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
            {
                let _ = kill(child, Signal::SIGKILL);
            }
        })
        .map_err(|e| format!("starting the control thread: {e}"))?;

    let mut report = Vec::new();
    let read = std::fs::File::from(report_read).read_to_end(&mut report);
    // WNOWAIT: wait for init's death without reaping it, then reap it under the lock.
    let status = loop {
        match waitid(Id::Pid(child), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other,
        }
    };
    // init's exit waited for every other process of the namespace to be reaped: the build is
    // gone now.
    let status = status.map_err(|e| format!("waiting for the sandbox's init: {e}"))?;
    {
        let mut reaped = reaped.lock().unwrap_or_else(PoisonError::into_inner);
        *reaped = true;
        let _ = waitpid(child, None);
    }
    read.map_err(|e| format!("reading the sandbox's report: {e}"))?;
    if report.is_empty() {
        return Err(format!(
            "the sandbox's init ended without a report ({})",
            describe(status)
        ));
    }
    serde_json::from_slice(&report).map_err(|e| format!("decoding the sandbox's report: {e}"))
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("creating a pipe: {e}"))
}

fn describe(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exit code {code}"),
        WaitStatus::Signaled(_, signal, _) => format!("killed by {signal}"),
        other => format!("{other:?}"),
    }
}

/// Map the builder's uid/gid inside to the outside ids. Written from outside the namespace,
/// which is what lets root map the build user's ids rather than its own.
fn write_maps(child: Pid, mapping: &Mapping) -> Result<(), String> {
    let proc_dir = PathBuf::from(format!("/proc/{child}"));
    let write = |name: &str, contents: String| {
        fs_err::write(proc_dir.join(name), contents).map_err(|e| e.to_string())
    };
    let (uid, gid) = match mapping {
        Mapping::BuildUser(ids) => (ids.uid, ids.gid),
        Mapping::Own { uid, gid } => {
            // An unprivileged process may only write a gid map once setgroups is denied
            // (otherwise it could drop groups that deny it access).
            write("setgroups", "deny".into())?;
            (uid.as_raw(), gid.as_raw())
        }
    };
    write("gid_map", format!("{SANDBOX_GID} {gid} 1\n"))?;
    write("uid_map", format!("{SANDBOX_UID} {uid} 1\n"))
}

/// Give `dir` and everything below it (not following symlinks) to the build user.
fn chown_tree(dir: &Path, ids: BuildIds) -> Result<(), String> {
    for entry in walkdir::WalkDir::new(dir) {
        let entry = entry.map_err(|e| format!("walking {}: {e}", dir.display()))?;
        std::os::unix::fs::lchown(entry.path(), Some(ids.uid), Some(ids.gid))
            .map_err(|e| format!("chowning {}: {e}", entry.path().display()))?;
    }
    Ok(())
}
