//! A detached activation: a worker process in its own session, holding the profile's lock
//! through a descriptor inherited from the command that started it, so it completes (or
//! reverts) even if that command, its terminal or its SSH connection dies.

// Two `unsafe` calls: `pre_exec` (only async-signal-safe syscalls in it) and taking ownership of
// the lock descriptor the worker was started with.
#![allow(unsafe_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};

use anyhow::Context as _;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use noodle_activate::event::{Fanout, JsonLines, Observer};
use noodle_activate::{Event, Session};
use noodle_profiles::{Profile, ProfileLock};
use noodle_store::Store;

/// First argument that makes `noodle` act as a detached activation worker.
pub const WORKER_ARG: &str = "__noodle-activation";

/// Starts the worker for journalled activation `id`.
pub fn spawn(
    store: &Store,
    profile: &Profile,
    lock: &ProfileLock,
    id: i64,
    events: Option<&Path>,
) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("cannot find the noodle executable")?;
    let logs = store.dirs().log().join("activations");
    fs_err::create_dir_all(&logs)?;
    let log = fs_err::File::create(logs.join(format!("{id}.log")))?;
    let fd = lock.as_fd().as_raw_fd();
    let mut command = Command::new(exe);
    command
        .arg(WORKER_ARG)
        .arg(&store.dirs().root)
        .arg(profile.link())
        .arg(id.to_string())
        .arg(fd.to_string())
        .args(events)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log.into_parts().0));
    // SAFETY: setsid and fcntl are async-signal-safe and allocate nothing.
    unsafe {
        command.pre_exec(move || {
            nix::unistd::setsid()?;
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
            Ok(())
        });
    }
    command
        .spawn()
        .context("cannot start the activation worker")
}

/// Reads the worker's event lines until it exits, passing each to `observer` and, for
/// `--json` or `--events -`, on to stdout.
pub fn follow(
    child: &mut Child,
    observer: &mut dyn Observer,
    echo: bool,
) -> anyhow::Result<Option<String>> {
    let mut error = None;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if echo {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
            match serde_json::from_str::<Event>(&line) {
                Ok(event) => observer.event(&event),
                Err(_) => {
                    if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) {
                        error = value["error"].as_str().map(str::to_owned);
                    }
                }
            }
        }
    }
    child.wait().context("waiting for the activation worker")?;
    Ok(error)
}

/// `noodle __noodle-activation ROOT PROFILE ID FD [EVENTS]`: drives activation ID to its end.
pub fn worker_main(args: &[String]) -> ExitCode {
    let mut stdout = JsonLines(std::io::stdout());
    match work(args, &mut stdout) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            stdout
                .0
                .write_all(
                    format!("{}\n", serde_json::json!({ "error": format!("{e:#}") })).as_bytes(),
                )
                .ok();
            ExitCode::FAILURE
        }
    }
}

fn work(args: &[String], stdout: &mut JsonLines<std::io::Stdout>) -> anyhow::Result<()> {
    let [root, link, id, fd, rest @ ..] = args else {
        anyhow::bail!("usage: noodle {WORKER_ARG} ROOT PROFILE ID FD [EVENTS] (internal)");
    };
    let fd: RawFd = fd.parse().context("bad descriptor")?;
    let id: i64 = id.parse().context("bad activation id")?;
    let mut store = Store::open(Path::new(root), None)?;
    let profile = Profile::new(PathBuf::from(link))?;
    // SAFETY: the launcher handed this descriptor down for exactly this purpose and nothing
    // else in this process owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let lock = profile.adopt_lock(owned)?;
    let mut file = match rest.first() {
        Some(path) if path != "-" => Some(JsonLines(
            fs_err::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        )),
        _ => None,
    };
    let mut observers: Vec<&mut dyn Observer> = vec![stdout];
    if let Some(file) = file.as_mut() {
        observers.push(file);
    }
    let mut fanout = Fanout(observers);
    let result = Session::new(&mut store, &profile, &lock, &mut fanout).drive(id);
    // The launcher holds the same lock; dropping ours would unlock it for both.
    std::mem::forget(lock);
    result?;
    Ok(())
}
