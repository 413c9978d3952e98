//! Running a health check or an activation script (DESIGN.md §8): one command, in its own
//! process group, seeing the store by its logical paths, with a timeout, cancellation and a
//! bounded copy of its output.

mod capture;
mod sys;
mod view;

#[cfg(test)]
mod tests;

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::Serialize;

use capture::Capture;
pub use view::StoreView;

/// How often a running job is looked at: the latency of noticing its exit or a cancel.
const POLL: Duration = Duration::from_millis(1);
/// How long output is still collected after the command exits, when something it left
/// running keeps the pipe open.
const GRACE: Duration = Duration::from_millis(50);

#[derive(Debug, Clone)]
pub struct Job {
    /// Absolute path as the command sees it (a logical store path, or a host path).
    pub program: String,
    pub args: Vec<String>,
    /// Added to (and overriding) the environment noodle runs in.
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    /// Bytes of output kept: the first half and the last half, with a marker line between.
    pub output_limit: usize,
    /// Kill whatever the command left running in its process group once it exits (true for
    /// health checks; false for activation scripts, which may start services).
    pub kill_leftovers: bool,
}

/// Shared flag that stops running jobs: `cancel()` kills their process groups at once.
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    inner: Arc<CancelInner>,
}

#[derive(Debug, Default)]
struct CancelInner {
    cancelled: AtomicBool,
    /// Process groups of the running jobs.
    groups: Mutex<Vec<Pid>>,
}

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
        for group in self.groups().iter() {
            let _ = killpg(*group, Signal::SIGKILL);
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    fn groups(&self) -> MutexGuard<'_, Vec<Pid>> {
        // The list stays consistent whatever panicked while holding it.
        self.inner
            .groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn register(&self, group: Pid) -> Registration<'_> {
        self.groups().push(group);
        Registration {
            cancel: self,
            group,
        }
    }
}

/// A job's process group, known to its [`Cancel`] until dropped. Drop it before reaping the
/// group leader: until then the leader's zombie keeps the group id from being reused.
struct Registration<'a> {
    cancel: &'a Cancel,
    group: Pid,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut groups = self.cancel.groups();
        if let Some(at) = groups.iter().position(|g| *g == self.group) {
            groups.swap_remove(at);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Outcome {
    Exited {
        code: i32,
    },
    Signalled {
        signal: i32,
    },
    TimedOut,
    Cancelled,
    /// Could not start: the message names the program and why.
    NotStarted {
        why: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct Finished {
    pub outcome: Outcome,
    #[serde(rename = "duration_ms", serialize_with = "millis")]
    pub duration: Duration,
    /// stdout and stderr merged, lossy UTF-8, at most about output_limit bytes plus the marker
    /// `\n[… N bytes omitted …]\n` between head and tail.
    pub output: String,
    /// Everything the command printed, counted.
    pub output_bytes: u64,
}

fn millis<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

impl Finished {
    pub fn succeeded(&self) -> bool {
        self.outcome == Outcome::Exited { code: 0 }
    }

    pub fn describe(&self) -> String {
        match &self.outcome {
            Outcome::Exited { code } => format!("exit code {code}"),
            Outcome::Signalled { signal } => format!("killed by signal {signal}"),
            Outcome::TimedOut => format!("timed out after {}", rough(self.duration)),
            Outcome::Cancelled => "cancelled".to_owned(),
            Outcome::NotStarted { why } => format!("could not start: {why}"),
        }
    }

    fn not_started(why: String, started: Instant) -> Finished {
        Finished {
            outcome: Outcome::NotStarted { why },
            duration: started.elapsed(),
            output: String::new(),
            output_bytes: 0,
        }
    }
}

/// "5s", "1.5s", "300ms": rounded down, so that a timeout reads as it was set (the command
/// ran a little longer, while being killed).
fn rough(duration: Duration) -> String {
    let millis = duration.as_millis();
    match millis {
        0..=999 => format!("{}ms", millis / 10 * 10),
        _ if (millis / 100).is_multiple_of(10) => format!("{}s", millis / 1000),
        _ => format!("{}.{}s", millis / 1000, millis / 100 % 10),
    }
}

/// Runs `job` to its end (exit, timeout or cancellation) and reports how it went.
pub fn run(view: &StoreView, job: &Job, cancel: &Cancel) -> Finished {
    let started = Instant::now();
    if cancel.is_cancelled() {
        return Finished {
            outcome: Outcome::Cancelled,
            duration: Duration::ZERO,
            output: String::new(),
            output_bytes: 0,
        };
    }
    let (mut child, capture) = match start(view, job) {
        Ok(started) => started,
        Err(why) => return Finished::not_started(why, started),
    };
    let group = Pid::from_raw(i32::try_from(child.id()).expect("pids fit in pid_t"));
    let registration = cancel.register(group);
    let stopped = wait_for_exit(group, started.checked_add(job.timeout), cancel);
    if stopped.is_some() || job.kill_leftovers {
        let _ = killpg(group, Signal::SIGKILL);
    }
    drop(registration);
    let status = child.wait();
    let duration = started.elapsed();
    let (output, output_bytes) = capture.finish(Instant::now() + GRACE);
    let outcome = match (stopped, status) {
        (Some(outcome), _) => outcome,
        (None, Ok(status)) => match (status.code(), status.signal()) {
            (Some(code), _) => Outcome::Exited { code },
            (None, Some(signal)) => Outcome::Signalled { signal },
            (None, None) => Outcome::NotStarted {
                why: format!("{} ended with an unknown status {status}", job.program),
            },
        },
        (None, Err(e)) => Outcome::NotStarted {
            why: format!("waiting for {}: {e}", job.program),
        },
    };
    Finished {
        outcome,
        duration,
        output,
        output_bytes,
    }
}

/// Polls until the group leader has exited (without reaping it) or must be stopped; returns
/// why it must be stopped.
fn wait_for_exit(leader: Pid, deadline: Option<Instant>, cancel: &Cancel) -> Option<Outcome> {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    loop {
        match waitid(Id::Pid(leader), flags) {
            Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
            // Exited, or not waitable at all: either way the reaping wait reports it. Unless
            // `cancel()` killed it, so that it did not get to exit on its own.
            Ok(_) | Err(_) if !cancel.is_cancelled() => return None,
            Ok(_) | Err(_) => return Some(Outcome::Cancelled),
        }
        if cancel.is_cancelled() {
            return Some(Outcome::Cancelled);
        }
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return Some(Outcome::TimedOut);
        }
        std::thread::sleep(POLL);
    }
}

/// Spawns the command with its output pipe being drained. Errors say why it could not start.
fn start(view: &StoreView, job: &Job) -> Result<(Child, Capture), String> {
    let program = &job.program;
    if !program.starts_with('/') {
        return Err(format!("{program} is not an absolute path"));
    }
    let direct = view.is_direct();
    let host = view.host_path(program);
    // Through the view a symlink may point into the logical store dir, which the host may not
    // show: only the entry itself can be checked from here.
    let found = if direct {
        fs_err::metadata(&host)
    } else {
        fs_err::symlink_metadata(&host)
    };
    match found {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("{program} does not exist"))
        }
        Err(e) => return Err(format!("{program}: {e}")),
    }

    let pipe = |flags| nix::unistd::pipe2(flags).map_err(|e| format!("creating a pipe: {e}"));
    let (read, write) = pipe(OFlag::O_CLOEXEC)?;
    let capture = Capture::start(read, job.output_limit)
        .map_err(|e| format!("starting a thread to read the output of {program}: {e}"))?;
    let stderr = write
        .try_clone()
        .map_err(|e| format!("duplicating a pipe: {e}"))?;
    let mut command = Command::new(program);
    command
        .args(&job.args)
        .envs(job.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(write)
        .stderr(stderr)
        .process_group(0);

    let mut setup = None;
    if !direct {
        let plan = Arc::new(view.plan().map_err(|e| setup_failed(&e))?);
        // Non-blocking: a thread forking meanwhile may hold a copy of the write end.
        let (report_read, report_write) = pipe(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        sys::set_up_before_exec(&mut command, Arc::clone(&plan), report_write);
        setup = Some((plan, report_read));
    }
    let spawned = command.spawn();
    // Our copies of the pipes' write ends: the output reader sees EOF once the job's are shut.
    drop(command);
    let child = spawned.map_err(|e| {
        if let Some((plan, report)) = &setup {
            if let Some(index) = failed_step(report) {
                return setup_failed(&format!("{}: {e}", plan.describe(index)));
            }
        }
        match e.kind() {
            std::io::ErrorKind::NotFound => {
                format!("{program} could not be executed: it, its #! interpreter or its loader does not exist")
            }
            _ => format!("{program} could not be executed: {e}"),
        }
    })?;
    Ok((child, capture))
}

fn setup_failed(why: &str) -> String {
    format!("could not set up the store view: {why}")
}

/// The index of the set-up step the child reported failing, if it did.
fn failed_step(report: &OwnedFd) -> Option<u32> {
    let mut bytes = [0u8; 4];
    match nix::unistd::read(report.as_raw_fd(), &mut bytes) {
        Ok(4) => Some(u32::from_le_bytes(bytes)),
        _ => None,
    }
}
