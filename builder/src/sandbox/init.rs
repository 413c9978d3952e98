//! The sandbox's init: pid 1 of the new pid namespace, holding every capability of the new user
//! namespace (and none outside it). It builds the fresh root, forks the builder, waits for it,
//! kills what it left behind and sends a [`Report`] to the helper.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{symlink, DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::statvfs::{statvfs, FsFlags};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Gid, Pid, Uid};

use super::{sys, Report, SandboxSpec, SANDBOX_GID, SANDBOX_UID};

/// Host devices bound into the sandbox's `/dev`.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

const PASSWD: &str = "noodle:x:1000:100:noodle build user:/homeless-shelter:/noshell\n\
                      nobody:x:65534:65534::/:/noshell\n";
const GROUP: &str = "noodle:x:100:\nnogroup:x:65534:\n";
const HOSTS: &str = "127.0.0.1 localhost\n::1 localhost\n";

/// Body of the cloned child; its return value is its exit code. Failures are reported to the
/// helper, which turns them into `SandboxError::Setup`.
pub(super) fn child_main(
    spec: &SandboxSpec,
    root: &Path,
    sync_read: BorrowedFd<'_>,
    sync_write: BorrowedFd<'_>,
    report_write: BorrowedFd<'_>,
) -> isize {
    // Die with the helper (which the parent kills on timeouts); init's death takes the whole
    // pid namespace with it. Set before waiting for the go byte: if the helper died earlier,
    // the read below sees EOF instead.
    if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err() {
        return 1;
    }
    // Our copy of the write end would keep the read below from ever seeing EOF.
    let _ = nix::unistd::close(sync_write.as_raw_fd());
    let mut go = [0u8; 1];
    // The helper sends one byte once our uid/gid maps are written; EOF means it gave up.
    if !matches!(nix::unistd::read(sync_read.as_raw_fd(), &mut go), Ok(1)) {
        return 1;
    }
    let report = match init(spec, root, sync_read) {
        Ok(report) => report,
        Err(message) => Report::SetupFailed(message),
    };
    match serde_json::to_vec(&report) {
        Ok(json) if write_all(report_write, &json).is_ok() => 0,
        _ => 1,
    }
}

fn write_all(fd: BorrowedFd<'_>, mut bytes: &[u8]) -> nix::Result<()> {
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What the builder's exec needs, converted before forking.
struct Exec {
    program: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
}

fn init(spec: &SandboxSpec, root: &Path, helper_alive: BorrowedFd<'_>) -> Result<Report, String> {
    // A session of our own: no controlling terminal, so the builder's /dev/tty cannot reach
    // the terminal noodle was started from.
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    build_root(spec, root, helper_alive)?;
    nix::unistd::sethostname("localhost").map_err(|e| format!("setting the hostname: {e}"))?;
    sys::set_domainname("(none)").map_err(|e| format!("setting the domain name: {e}"))?;
    sys::bring_up_loopback().map_err(|e| format!("bringing up lo: {e}"))?;
    // Keep the builder (same uid, no capabilities) out of init's /proc entries.
    nix::sys::prctl::set_dumpable(false).map_err(|e| format!("prctl(PR_SET_DUMPABLE): {e}"))?;

    let cstring = |s: &str| CString::new(s).expect("validate() rejected NUL bytes");
    let exec = Exec {
        program: cstring(&spec.program),
        argv: spec.argv.iter().map(|a| cstring(a)).collect(),
        env: spec
            .env
            .iter()
            .map(|(k, v)| cstring(&format!("{k}={v}")))
            .collect(),
    };
    let (error_read, error_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("creating a pipe: {e}"))?;
    let builder = match sys::fork_single_threaded() {
        Ok(ForkResult::Child) => {
            drop(error_read);
            let message = exec_builder(&exec);
            let _ = write_all(error_write.as_fd(), message.as_bytes());
            sys::exit_now(127)
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => return Err(format!("forking the builder: {e}")),
    };
    drop(error_write);
    // EOF once the builder's exec succeeded (the pipe is close-on-exec); a message otherwise.
    let mut exec_error = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::fs::File::from(error_read), &mut exec_error);

    let status = wait_for(builder)?;
    if !exec_error.is_empty() {
        return Err(String::from_utf8_lossy(&exec_error).into_owned());
    }
    let left = kill_leftovers()?;
    if !left.is_empty() {
        return Ok(Report::LeftProcesses(left));
    }
    Ok(status)
}

/// In the forked builder: drop to a plain process and exec. Returns only on failure.
fn exec_builder(exec: &Exec) -> String {
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    sys::reset_signal_dispositions();
    // Not whatever noodle was started with: file modes in $out must not depend on it.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    if let Err(e) = nix::unistd::chdir("/build") {
        return format!("chdir /build: {e}");
    }
    let stdin = match std::fs::File::open("/dev/null") {
        Ok(file) => file,
        Err(e) => return format!("opening /dev/null: {e}"),
    };
    if let Err(e) = nix::unistd::dup2(stdin.as_raw_fd(), 0) {
        return format!("dup2 /dev/null to stdin: {e}");
    }
    // Nothing the builder runs may gain privileges (setuid files are on nosuid mounts anyway).
    if let Err(e) = nix::sys::prctl::set_no_new_privs() {
        return format!("prctl(PR_SET_NO_NEW_PRIVS): {e}");
    }
    // uid 1000 is not the namespace's root (uid 0 is unmapped), so execve clears every
    // capability inherited from init.
    match nix::unistd::execve(&exec.program, &exec.argv, &exec.env) {
        Err(e) => format!("executing {}: {e}", exec.program.to_string_lossy()),
        Ok(never) => match never {},
    }
}

/// Wait for the builder, reaping any other child (orphans are re-parented to init) meanwhile.
fn wait_for(builder: Pid) -> Result<Report, String> {
    loop {
        match waitpid(None::<Pid>, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == builder => return Ok(Report::Exited(code)),
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == builder => {
                return Ok(Report::Signaled(signal as i32))
            }
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => return Err(format!("waiting for the builder: {e}")),
        }
    }
}

/// List the processes still alive besides init, then SIGKILL and reap them all.
fn kill_leftovers() -> Result<Vec<String>, String> {
    reap(WaitPidFlag::WNOHANG);
    let left = other_processes()?;
    let mut remaining = left.len();
    // kill(-1) from pid 1 signals everything else in the namespace. Repeat in case something
    // forked while the signal was being delivered; once init has no children left, nothing
    // else can exist (every orphan is re-parented to init).
    for _ in 0..100 {
        if remaining == 0 {
            break;
        }
        let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
        reap(WaitPidFlag::empty());
        remaining = other_processes()?.len();
    }
    Ok(left)
}

/// Reap children until there are none (or, with WNOHANG, none has exited yet).
fn reap(flags: WaitPidFlag) {
    loop {
        match waitpid(None::<Pid>, Some(flags)) {
            Ok(WaitStatus::StillAlive) => return,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return,
        }
    }
}

/// `"pid 7: sleep 1000"` for every live process of the namespace except init.
fn other_processes() -> Result<Vec<String>, String> {
    let mut found = Vec::new();
    let entries = fs_err::read_dir("/proc").map_err(|e| e.to_string())?;
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == 1 {
            continue;
        }
        // Gone meanwhile, or a zombie (dead, merely not reaped yet): not left running.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        if matches!(state, Some('Z' | 'X') | None) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let words: Vec<_> = cmdline
            .split(|b| *b == 0)
            .filter(|w| !w.is_empty())
            .map(String::from_utf8_lossy)
            .collect();
        let command = if words.is_empty() {
            let comm = stat
                .split_once('(')
                .and_then(|(_, rest)| rest.rsplit_once(')'));
            format!("[{}]", comm.map_or("?", |(name, _)| name))
        } else {
            words.join(" ")
        };
        found.push(format!("pid {pid}: {command}"));
    }
    Ok(found)
}

/// A host file or directory opened (O_PATH) before init gives up its outside identity.
struct Source {
    file: std::fs::File,
    path: PathBuf,
}

impl Source {
    fn open(path: &Path) -> Result<Source, String> {
        // O_PATH: a handle for mounting, which needs no read permission (std adds O_CLOEXEC).
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(path)
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        Ok(Source {
            file,
            path: path.to_owned(),
        })
    }

    /// The path through which mount(2) reaches the opened file, whatever the directories
    /// leading to it allow the builder's uid.
    fn proc_path(&self) -> String {
        format!("/proc/self/fd/{}", self.file.as_raw_fd())
    }

    fn is_dir(&self) -> Result<bool, String> {
        let meta = self
            .file
            .metadata()
            .map_err(|e| format!("stat {}: {e}", self.path.display()))?;
        Ok(meta.is_dir())
    }
}

/// An input is a file or directory (bound) or a symlink (recreated as such).
enum Input {
    Bound(Source),
    Symlink(PathBuf),
}

/// Build the new root in a tmpfs on `root` and pivot into it. Relative paths below are
/// relative to the new root (our cwd until the pivot).
fn build_root(spec: &SandboxSpec, root: &Path, helper_alive: BorrowedFd<'_>) -> Result<(), String> {
    // Nothing we mount may propagate back to the host's mount namespace.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making / private: {e}"))?;
    let owner = format!("uid={SANDBOX_UID},gid={SANDBOX_GID}");
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(format!("mode=0755,{owner}").as_str()),
    )
    .map_err(|e| format!("mounting tmpfs on {}: {e}", root.display()))?;
    nix::unistd::chdir(root).map_err(|e| format!("chdir {}: {e}", root.display()))?;

    // Open every host path now, while we still are uid 0 (or the calling user) outside: the
    // build user may not be allowed to traverse the directories that lead to them.
    let build_dir = Source::open(&spec.build_dir)?;
    let store_scratch = Source::open(&spec.store_scratch)?;
    let mut inputs = Vec::with_capacity(spec.inputs.len());
    for (logical, physical) in &spec.inputs {
        let meta = fs_err::symlink_metadata(physical).map_err(|e| e.to_string())?;
        let input = if meta.file_type().is_symlink() {
            Input::Symlink(fs_err::read_link(physical).map_err(|e| e.to_string())?)
        } else {
            Input::Bound(Source::open(physical)?)
        };
        inputs.push((logical, input));
    }
    let devices = DEVICES
        .iter()
        .map(|name| Ok((*name, Source::open(&Path::new("/dev").join(name))?)))
        .collect::<Result<Vec<_>, String>>()?;

    // Become the builder's uid/gid inside. As root, init's own uid 0 is unmapped, and the
    // kernel refuses to create files (EOVERFLOW) in filesystems of this namespace for an
    // unmapped owner. uid 0 inside is unmapped too, so this keeps our capabilities.
    // Supplementary groups (root's group 0!) go where allowed; unprivileged, setgroups is
    // denied and the caller's groups stay (unmapped: nogroup).
    match nix::unistd::setgroups(&[]) {
        Ok(()) | Err(Errno::EPERM) => {}
        Err(e) => return Err(format!("setgroups: {e}")),
    }
    let (uid, gid) = (Uid::from_raw(SANDBOX_UID), Gid::from_raw(SANDBOX_GID));
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setresgid {gid}: {e}"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setresuid {uid}: {e}"))?;
    // A change of credentials (as root: uid 0 → the build user) clears the parent-death
    // signal. Set it again, then check that the helper did not die in between.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| format!("prctl(PR_SET_PDEATHSIG): {e}"))?;
    check_helper_alive(helper_alive)?;

    let store = spec.store_dir.trim_start_matches('/');
    for dir in ["build", store, "dev", "proc", "etc"] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| format!("creating /{dir}: {e}"))?;
    }
    bind(&build_dir, "build", MsFlags::MS_NOSUID | MsFlags::MS_NODEV)?;
    bind(
        &store_scratch,
        store,
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
    )?;
    for (logical, input) in &inputs {
        // Mountpoints go into the (host) store scratch, now visible at the store dir.
        let target = logical.trim_start_matches('/');
        match input {
            Input::Symlink(to) => match symlink(to, target) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(format!("creating the symlink {logical}: {e}"))
                }
                _ => {}
            },
            Input::Bound(source) => {
                mountpoint(target, source.is_dir()?, 0o555)?;
                let read_only = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
                bind(source, target, read_only)?;
            }
        }
    }

    mount_fs(
        "tmpfs",
        "dev",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755"),
    )?;
    for (name, source) in &devices {
        let target = format!("dev/{name}");
        mountpoint(&target, false, 0o666)?;
        bind(source, &target, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC)?;
    }
    for dir in ["dev/pts", "dev/shm"] {
        mountpoint(dir, true, 0o755)?;
    }
    mount_fs(
        "devpts",
        "dev/pts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    mount_fs(
        "tmpfs",
        "dev/shm",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    for (link, to) in [
        ("dev/ptmx", "pts/ptmx"),
        ("dev/fd", "/proc/self/fd"),
        ("dev/stdin", "/proc/self/fd/0"),
        ("dev/stdout", "/proc/self/fd/1"),
        ("dev/stderr", "/proc/self/fd/2"),
    ] {
        symlink(to, link).map_err(|e| format!("creating the symlink /{link}: {e}"))?;
    }
    // Before the old root goes: the kernel only lets a user namespace mount proc while a
    // fully visible proc is mounted in its mount namespace.
    let no_suid_dev_exec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_fs("proc", "proc", no_suid_dev_exec, None)?;
    for (name, contents) in [("passwd", PASSWD), ("group", GROUP), ("hosts", HOSTS)] {
        fs_err::write(format!("etc/{name}"), contents).map_err(|e| e.to_string())?;
    }

    // pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves
    // only the new root, with no path back to the host.
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detaching the old root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    let read_only = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    for (target, flags) in [
        ("/", MsFlags::MS_NOSUID | MsFlags::MS_NODEV),
        ("/dev", MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC),
    ] {
        mount(
            None::<&str>,
            target,
            None::<&str>,
            read_only | flags,
            None::<&str>,
        )
        .map_err(|e| format!("remounting {target} read-only: {e}"))?;
    }
    Ok(())
}

/// The helper holds the write end of the sync pipe until it exits: reading must block (EAGAIN
/// without blocking), not see EOF.
fn check_helper_alive(sync_read: BorrowedFd<'_>) -> Result<(), String> {
    let fd = sync_read.as_raw_fd();
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
        .map_err(|e| format!("fcntl(O_NONBLOCK): {e}"))?;
    match nix::unistd::read(fd, &mut [0u8; 1]) {
        Err(Errno::EAGAIN) => Ok(()),
        Ok(0) => Err("the sandbox helper died".into()),
        Ok(_) => Err("unexpected data from the sandbox helper".into()),
        Err(e) => Err(format!("reading the sync pipe: {e}")),
    }
}

fn mount_fs(fstype: &str, target: &str, flags: MsFlags, data: Option<&str>) -> Result<(), String> {
    mount(Some(fstype), target, Some(fstype), flags, data)
        .map_err(|e| format!("mounting {fstype} on /{target}: {e}"))
}

/// Create an empty directory or file to mount on (left alone if it exists).
fn mountpoint(target: &str, dir: bool, mode: u32) -> Result<(), String> {
    let created = if dir {
        std::fs::DirBuilder::new().mode(mode).create(target)
    } else {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(target)
            .map(drop)
    };
    match created {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(format!("creating the mountpoint /{target}: {e}"))
        }
        _ => Ok(()),
    }
}

/// Bind `source` on `target`, then set `flags` (MS_RDONLY, MS_NOSUID, ...) on the new mount.
fn bind(source: &Source, target: &str, flags: MsFlags) -> Result<(), String> {
    mount(
        Some(source.proc_path().as_str()),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("binding {} to /{target}: {e}", source.path.display()))?;
    // Flags of the source mount are locked in a user namespace: a remount that would clear
    // one fails with EPERM, so carry over what the source has.
    let source_flags = statvfs(target)
        .map_err(|e| format!("statvfs /{target}: {e}"))?
        .flags();
    let mut remount = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags;
    for (has, keep) in [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if source_flags.contains(has) {
            remount |= keep;
        }
    }
    mount(None::<&str>, target, None::<&str>, remount, None::<&str>)
        .map_err(|e| format!("remounting /{target} ({flags:?}): {e}"))
}
