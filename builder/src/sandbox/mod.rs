//! The hermetic build sandbox (DESIGN.md §6): Linux namespaces through the `nix` crate, no
//! external tools.
//!
//! The `noodle` process is multi-threaded, so it never forks or clones itself: [`run`] spawns a
//! fresh, single-threaded helper (`<helper_exe> __noodle-sandbox <work_dir>`, dispatched to
//! [`helper_main`]) which clones the sandbox's init into new user, mount, pid, ipc, uts, net and
//! cgroup namespaces. Init builds a fresh root (only the inputs read-only, `/build` and the store
//! scratch writable, a minimal `/dev`, `/proc`, `/etc`), forks the builder as uid 1000 / gid 100
//! without capabilities, waits for it, kills whatever it left behind and reports through the
//! helper into `work_dir/status.json`.
//!
//! Process tree and channels:
//! ```text
//! noodle (run) ──spawn──▶ helper ──clone──▶ init (pid 1) ──fork──▶ builder
//!   ▲ reads output pipe ◀─────────── stdout+stderr of all of them ──┘
//!   └ control pipe (helper's stdin): closing it makes the helper SIGKILL init
//!                     helper ◀── report pipe (JSON) ── init
//!                     helper ──▶ work_dir/status.json ──▶ run
//! ```

mod helper;
mod init;
mod sys;

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use serde::{Deserialize, Serialize};

pub use helper::helper_main;

/// First argument that makes the `noodle` binary act as the sandbox helper.
pub const HELPER_ARG: &str = "__noodle-sandbox";

/// Uid and gid of the builder inside the sandbox (Nix uses the same numbers).
pub const SANDBOX_UID: u32 = 1000;
pub const SANDBOX_GID: u32 = 100;

/// First uid (and gid) of the build users when running as root: Nix's auto-allocate range, far
/// away from any real account.
pub const BUILD_USER_BASE: u32 = 872_415_232;
/// Number of build user slots, i.e. concurrent builds as root.
pub const BUILD_USER_SLOTS: u32 = 64;

const SPEC_FILE: &str = "spec.json";
const STATUS_FILE: &str = "status.json";
/// How long the helper gets to kill and reap the sandbox after the control pipe closes before
/// it is SIGKILLed itself (which still kills the sandbox, through init's parent-death signal).
const KILL_GRACE: Duration = Duration::from_secs(5);

/// Outside ids the builder's uid 1000 / gid 100 map to (root only; see [`BuildUser`]).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildIds {
    pub uid: u32,
    pub gid: u32,
}

/// Everything the sandbox needs; written to `work_dir/spec.json` for the helper.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct SandboxSpec {
    /// Logical store dir, e.g. `/noodle/store`.
    pub store_dir: String,
    /// (logical store path inside, physical path outside), bound read-only; a file or a dir.
    pub inputs: Vec<(String, PathBuf)>,
    /// Host dir bound writable at `/build` (the builder's cwd).
    pub build_dir: PathBuf,
    /// Host dir bound writable at `store_dir`: the builder creates `$out` in it. The inputs'
    /// mountpoints (empty dirs/files) are created in it too; the caller ignores them.
    pub store_scratch: PathBuf,
    /// Absolute path inside the sandbox.
    pub program: String,
    /// Including argv[0].
    pub argv: Vec<String>,
    /// The complete environment of the builder.
    pub env: Vec<(String, String)>,
    /// Required when running as root, must be `None` otherwise.
    pub build_user: Option<BuildIds>,
}

/// Limits enforced by [`run`]; a `Duration::MAX` disables one.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Total wall-clock time.
    pub timeout: Duration,
    /// Longest time without any output.
    pub max_silent: Duration,
}

/// How a build ended. Every process of the build is gone when [`run`] returns one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The builder exited with this code (and left nothing running).
    Exited(i32),
    /// The builder was killed by this signal (and left nothing running).
    Signaled(i32),
    /// `Limits::timeout` was exceeded.
    TimedOut,
    /// `Limits::max_silent` was exceeded.
    Silent,
    /// The builder exited but left these processes running (`"pid 7: sleep 1000"`); they were
    /// killed. A build that does this failed, whatever its exit code.
    LeftProcesses(Vec<String>),
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// I/O of `run` itself (fs-err messages name the file).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("invalid sandbox spec: {0}")]
    InvalidSpec(String),
    #[error("starting the sandbox helper {}: {source}", exe.display())]
    Spawn {
        exe: PathBuf,
        source: std::io::Error,
    },
    /// The sandbox could not be set up (message from inside the helper, e.g. "mounting proc on
    /// proc: EPERM: Operation not permitted") or the builder could not be executed.
    #[error("sandbox setup failed: {0}")]
    Setup(String),
    /// The helper ended without writing `status.json` (wrong binary, crash, ...); its own
    /// complaint, if any, went to the output.
    #[error("the sandbox helper {status} without reporting the build's fate")]
    NoReport { status: ExitStatus },
    #[error("reading the sandbox status {}: {source}", path.display())]
    BadStatus {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("all {BUILD_USER_SLOTS} build users in {} are busy", dir.display())]
    NoBuildUser { dir: PathBuf },
}

/// What the helper writes to `status.json` (and init sends to the helper).
#[derive(Serialize, Deserialize, Debug)]
enum Report {
    Exited(i32),
    Signaled(i32),
    LeftProcesses(Vec<String>),
    SetupFailed(String),
}

/// One of the 64 build users, locked for the lifetime of the value so that concurrent builds
/// (in any process) never share a uid.
pub struct BuildUser {
    pub uid: u32,
    pub gid: u32,
    _lock: Flock<std::fs::File>,
}

impl std::fmt::Debug for BuildUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildUser")
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .finish_non_exhaustive()
    }
}

impl BuildUser {
    /// When running as root: lock a free slot file `locks_dir/build-user-<n>` and return uid =
    /// gid = `BUILD_USER_BASE + n`. `None` when not root (the sandbox then maps the caller's own
    /// ids).
    pub fn acquire(locks_dir: &Path) -> Result<Option<BuildUser>, SandboxError> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(None);
        }
        fs_err::create_dir_all(locks_dir)?;
        for n in 0..BUILD_USER_SLOTS {
            let path = locks_dir.join(format!("build-user-{n}"));
            let file = fs_err::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            match Flock::lock(file.into_parts().0, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => {
                    let id = BUILD_USER_BASE + n;
                    return Ok(Some(BuildUser {
                        uid: id,
                        gid: id,
                        _lock: lock,
                    }));
                }
                Err((_, Errno::EWOULDBLOCK)) => continue,
                Err((_, errno)) => {
                    return Err(std::io::Error::new(
                        std::io::Error::from(errno).kind(),
                        format!("locking {}: {errno}", path.display()),
                    )
                    .into())
                }
            }
        }
        Err(SandboxError::NoBuildUser {
            dir: locks_dir.to_owned(),
        })
    }

    pub fn ids(&self) -> BuildIds {
        BuildIds {
            uid: self.uid,
            gid: self.gid,
        }
    }
}

/// Run `spec` in a fresh sandbox; `work_dir` is an existing private scratch dir (it gets
/// `spec.json`, `status.json` and the empty mountpoint `root`). Output (stdout and stderr
/// interleaved) goes to `on_output` in chunks, on the calling thread.
pub fn run(
    spec: &SandboxSpec,
    helper_exe: &Path,
    work_dir: &Path,
    limits: &Limits,
    on_output: &mut dyn FnMut(&[u8]),
) -> Result<Outcome, SandboxError> {
    validate(spec).map_err(SandboxError::InvalidSpec)?;
    let status_path = work_dir.join(STATUS_FILE);
    match fs_err::remove_file(&status_path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    let spec_json = serde_json::to_vec(spec).map_err(std::io::Error::other)?;
    fs_err::write(work_dir.join(SPEC_FILE), spec_json)?;

    // O_CLOEXEC: other threads of this process may spawn children at any moment, and none of
    // them must hold our pipe ends (an extra writer would delay EOF forever).
    let (out_read, out_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
    let (control_read, control_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
    let mut command = Command::new(helper_exe);
    command
        .arg(HELPER_ARG)
        .arg(work_dir)
        .env_clear()
        .stdin(Stdio::from(control_read))
        .stdout(Stdio::from(out_write.try_clone()?))
        .stderr(Stdio::from(out_write));
    let mut helper = command.spawn().map_err(|source| SandboxError::Spawn {
        exe: helper_exe.to_owned(),
        source,
    })?;
    // The command holds our copies of the pipe ends given to the helper: close them, or the
    // output pipe never reaches EOF.
    drop(command);

    let (sender, receiver) = mpsc::sync_channel(16);
    let reader = std::thread::Builder::new()
        .name("sandbox-output".into())
        .spawn(move || read_output(out_read, &sender))?;

    let killed = supervise(&receiver, &mut helper, control_write, limits, on_output);
    // The reader ends at EOF, which the loop above has seen (or the channel is gone).
    reader
        .join()
        .map_err(|_| std::io::Error::other("the sandbox output reader panicked"))?;
    // Reaping the helper: it exits only after reaping init, and init's exit waits until the
    // kernel has killed and reaped every other process of its pid namespace.
    let status = helper.wait()?;
    if let Some(outcome) = killed {
        return Ok(outcome);
    }
    let json = match fs_err::read(&status_path) {
        Ok(json) => json,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SandboxError::NoReport { status })
        }
        Err(e) => return Err(e.into()),
    };
    let report: Report =
        serde_json::from_slice(&json).map_err(|source| SandboxError::BadStatus {
            path: status_path,
            source,
        })?;
    match report {
        Report::Exited(code) => Ok(Outcome::Exited(code)),
        Report::Signaled(signal) => Ok(Outcome::Signaled(signal)),
        Report::LeftProcesses(processes) => Ok(Outcome::LeftProcesses(processes)),
        Report::SetupFailed(message) => Err(SandboxError::Setup(message)),
    }
}

/// Forward the output pipe to the channel until EOF (`None`), which comes once every process
/// of the sandbox has closed it.
fn read_output(pipe: OwnedFd, sender: &mpsc::SyncSender<Option<Vec<u8>>>) {
    let mut pipe = std::fs::File::from(pipe);
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match pipe.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                if sender.send(Some(buffer[..n].to_vec())).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // A pipe read only fails on EINTR; treat anything else as the end.
            Err(_) => break,
        }
    }
    let _ = sender.send(None);
}

/// Pass output on until EOF while enforcing the limits; returns the limit that fired, if any.
fn supervise(
    receiver: &mpsc::Receiver<Option<Vec<u8>>>,
    helper: &mut std::process::Child,
    control: OwnedFd,
    limits: &Limits,
    on_output: &mut dyn FnMut(&[u8]),
) -> Option<Outcome> {
    let start = Instant::now();
    let deadline = start.checked_add(limits.timeout);
    let mut last_output = start;
    let mut control = Some(control);
    let mut killed = None;
    let mut kill_deadline: Option<Instant> = None;
    loop {
        let wake_up = match (killed.is_some(), kill_deadline) {
            (true, deadline) => deadline,
            (false, _) => {
                let silent_deadline = last_output.checked_add(limits.max_silent);
                [deadline, silent_deadline].into_iter().flatten().min()
            }
        };
        let message = match wake_up {
            Some(at) => receiver.recv_timeout(at.saturating_duration_since(Instant::now())),
            None => receiver
                .recv()
                .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        match message {
            Ok(Some(chunk)) => {
                on_output(&chunk);
                last_output = Instant::now();
            }
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => return killed,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                if killed.is_none() {
                    killed = Some(if deadline.is_some_and(|d| now >= d) {
                        Outcome::TimedOut
                    } else {
                        Outcome::Silent
                    });
                    // Closing the control pipe makes the helper SIGKILL init and reap it, i.e.
                    // wait until the whole pid namespace is gone, then exit: EOF here.
                    drop(control.take());
                    kill_deadline = now.checked_add(KILL_GRACE);
                } else {
                    // The helper is stuck: kill it; init follows (parent-death signal).
                    let _ = helper.kill();
                    kill_deadline = None;
                }
            }
        }
    }
}

/// Check what the sandbox relies on: absolute, normalised paths; inputs directly in the store
/// dir; no NUL bytes (they could not be passed to the kernel).
fn validate(spec: &SandboxSpec) -> Result<(), String> {
    // Split by hand rather than with `Path::components`, which hides "//", "/./" and a trailing
    // '/' that would make the input paths below ambiguous.
    let mut parts = spec.store_dir.split('/');
    let absolute = parts.next() == Some("");
    let parts: Vec<&str> = parts.collect();
    if !absolute || parts.is_empty() || parts.iter().any(|p| matches!(*p, "" | "." | "..")) {
        return Err(format!(
            "store dir {:?} is not a normalised absolute path",
            spec.store_dir
        ));
    }
    if ["build", "dev", "proc", "etc"].contains(&parts[0]) {
        return Err(format!(
            "store dir {:?} collides with the sandbox's /{}",
            spec.store_dir, parts[0]
        ));
    }
    let mut names = std::collections::HashSet::new();
    for (logical, _) in &spec.inputs {
        let name = logical
            .strip_prefix(&spec.store_dir)
            .and_then(|rest| rest.strip_prefix('/'))
            .ok_or_else(|| format!("input {logical:?} is not in the store dir"))?;
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            return Err(format!("input {logical:?} is not a store path"));
        }
        if !names.insert(name) {
            return Err(format!("input {logical:?} is given twice"));
        }
    }
    if !spec.program.starts_with('/') {
        return Err(format!("program {:?} is not absolute", spec.program));
    }
    if spec.argv.is_empty() {
        return Err("argv is empty (it includes argv[0])".into());
    }
    if spec
        .env
        .iter()
        .any(|(key, _)| key.is_empty() || key.contains('='))
    {
        return Err("an environment variable name is empty or contains '='".into());
    }
    let strings = [&spec.store_dir, &spec.program]
        .into_iter()
        .chain(spec.inputs.iter().map(|(logical, _)| logical))
        .chain(&spec.argv)
        .chain(spec.env.iter().flat_map(|(k, v)| [k, v]));
    if strings.into_iter().any(|s| s.contains('\0')) {
        return Err("a string contains a NUL byte".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SandboxSpec {
        SandboxSpec {
            store_dir: "/noodle/store".into(),
            inputs: vec![("/noodle/store/aaaa-x".into(), "/tmp/x".into())],
            build_dir: "/tmp/b".into(),
            store_scratch: "/tmp/s".into(),
            program: "/noodle/store/aaaa-x/bin/sh".into(),
            argv: vec!["sh".into()],
            env: vec![("PATH".into(), "/x".into())],
            build_user: None,
        }
    }

    #[test]
    fn validation_rejects_what_the_sandbox_cannot_build() {
        assert_eq!(validate(&spec()), Ok(()));
        let cases: [fn(&mut SandboxSpec); 10] = [
            |s| s.store_dir = "noodle/store".into(),
            |s| s.store_dir = "/noodle//store".into(),
            |s| s.store_dir = "/noodle/store/".into(),
            |s| s.store_dir = "/".into(),
            |s| s.store_dir = "/dev/store".into(),
            |s| s.store_dir = "/noodle/../store".into(),
            |s| s.inputs[0].0 = "/noodle/storex/aaaa".into(),
            |s| s.inputs[0].0 = "/noodle/store/a/b".into(),
            |s| s.argv.clear(),
            |s| s.env.push(("A=B".into(), String::new())),
        ];
        for (i, mutate) in cases.iter().enumerate() {
            let mut s = spec();
            mutate(&mut s);
            assert!(validate(&s).is_err(), "case {i} passed");
        }
    }
}
