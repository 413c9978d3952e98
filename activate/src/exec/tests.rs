use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;

const HASH: &str = "0123456789abcdfghijklmnpqrsvwxyz";

/// A store under a temporary root, holding `<HASH>-tool` with a data file that scripts read
/// by its logical path: reading it proves the view shows the store.
struct Fixture {
    dir: tempfile::TempDir,
    view: StoreView,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = noodle_store::Store::init(dir.path(), None).expect("store");
        let tool = store.dirs().store().join(format!("{HASH}-tool"));
        fs_err::create_dir_all(tool.join("bin")).expect("bin");
        fs_err::write(tool.join("data"), "data via the logical path\n").expect("data");
        Fixture {
            view: StoreView::of(&store),
            dir,
        }
    }

    /// Writes `bin/<name>` (a `#!/bin/sh` script) and returns its logical path.
    fn script(&self, name: &str, body: &str) -> String {
        let path = self
            .dir
            .path()
            .join(format!("noodle/store/{HASH}-tool/bin/{name}"));
        fs_err::write(&path, format!("#!/bin/sh\n{body}\n")).expect("script");
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        format!("/noodle/store/{HASH}-tool/bin/{name}")
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.path().join("pid")
    }
}

fn job(program: String) -> Job {
    Job {
        program,
        args: Vec::new(),
        env: Vec::new(),
        timeout: Duration::from_secs(10),
        output_limit: 4096,
        kill_leftovers: true,
    }
}

/// Runs the job; `None` (with a note) when namespaces are not available to a non-root user.
fn run_or_skip(view: &StoreView, job: &Job) -> Option<Finished> {
    let finished = run(view, job, &Cancel::new());
    (!unavailable(&finished)).then_some(finished)
}

fn unavailable(finished: &Finished) -> bool {
    if let Outcome::NotStarted { why } = &finished.outcome {
        if why.contains("store view") && !nix::unistd::geteuid().is_root() {
            eprintln!("note: skipped, namespaces unavailable without root: {why}");
            return true;
        }
    }
    false
}

fn pid_in(file: &Path) -> Pid {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if let Some(pid) = fs_err::read_to_string(file)
            .ok()
            .and_then(|text| text.trim().parse().ok())
        {
            return Pid::from_raw(pid);
        }
        assert!(Instant::now() < deadline, "no pid in {}", file.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Alive and not a zombie (which nobody may reap in a container without an init).
fn alive(pid: Pid) -> bool {
    match fs_err::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next()),
            Some('Z' | 'X')
        ),
        Err(_) => false,
    }
}

fn gone_soon(pid: Pid) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

#[test]
fn runs_through_the_logical_store_dir() {
    let fx = Fixture::new();
    assert!(!fx.view.is_direct());
    let program = fx.script("check", &format!("cat /noodle/store/{HASH}-tool/data; pwd"));
    let Some(finished) = run_or_skip(&fx.view, &job(program)) else {
        return;
    };
    assert_eq!(
        finished.outcome,
        Outcome::Exited { code: 0 },
        "{finished:?}"
    );
    assert!(finished.succeeded());
    let cwd = std::env::current_dir().expect("cwd");
    let expected = format!("data via the logical path\n{}\n", cwd.display());
    assert_eq!(finished.output, expected);
    assert_eq!(finished.output_bytes, expected.len() as u64);
}

#[test]
fn reports_exit_codes_signals_and_env() {
    let fx = Fixture::new();
    let program = fx.script("check", "echo \"$GREETING\" >&2; exit 3");
    let mut job = job(program);
    job.env.push(("GREETING".into(), "hello".into()));
    let Some(finished) = run_or_skip(&fx.view, &job) else {
        return;
    };
    assert_eq!(finished.outcome, Outcome::Exited { code: 3 });
    assert_eq!(finished.output, "hello\n");
    assert_eq!(finished.describe(), "exit code 3");

    job.program = fx.script("killed", "kill -9 $$");
    let finished = run(&fx.view, &job, &Cancel::new());
    assert_eq!(finished.outcome, Outcome::Signalled { signal: 9 });
    assert_eq!(finished.describe(), "killed by signal 9");
}

#[test]
fn timeout_kills_the_whole_group() {
    let fx = Fixture::new();
    let program = fx.script("check", "sleep 100 & echo $! > \"$PID_FILE\"; wait");
    let mut job = job(program);
    job.env
        .push(("PID_FILE".into(), fx.pid_file().display().to_string()));
    job.timeout = Duration::from_millis(300);
    let Some(finished) = run_or_skip(&fx.view, &job) else {
        return;
    };
    assert_eq!(finished.outcome, Outcome::TimedOut, "{finished:?}");
    assert_eq!(finished.describe(), "timed out after 300ms");
    assert!(finished.duration < Duration::from_secs(2));
    assert!(gone_soon(pid_in(&fx.pid_file())), "the grandchild survived");
}

#[test]
fn cancel_stops_a_running_job_promptly() {
    let fx = Fixture::new();
    let program = fx.script("check", "sleep 100");
    let cancel = Cancel::new();
    let canceller = {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            cancel.cancel();
            Instant::now()
        })
    };
    let finished = run(&fx.view, &job(program), &cancel);
    let returned = Instant::now();
    let cancelled_at = canceller.join().expect("canceller");
    if unavailable(&finished) {
        return;
    }
    assert_eq!(finished.outcome, Outcome::Cancelled, "{finished:?}");
    assert!(returned - cancelled_at < Duration::from_millis(200));
    // Cancelled before it starts: nothing runs.
    let finished = run(&fx.view, &job(fx.script("other", "true")), &cancel);
    assert_eq!(finished.outcome, Outcome::Cancelled);
}

#[test]
fn a_flood_is_counted_but_bounded() {
    let fx = Fixture::new();
    let program = fx.script("check", "head -c 50000000 /dev/zero; echo; echo end");
    let mut job = job(program);
    job.output_limit = 1000;
    let Some(finished) = run_or_skip(&fx.view, &job) else {
        return;
    };
    assert!(finished.succeeded(), "{finished:?}");
    assert_eq!(finished.output_bytes, 50_000_005);
    let marker = format!("\n[… {} bytes omitted …]\n", 50_000_005 - 1000);
    assert!(finished.output.contains(&marker));
    assert_eq!(finished.output.len(), 1000 + marker.len());
    assert!(finished.output.ends_with("\0\nend\n"));
}

#[test]
fn a_missing_program_is_named() {
    let fx = Fixture::new();
    let program = format!("/noodle/store/{HASH}-crypto-1.3.0/bin/cryptox");
    let finished = run(&fx.view, &job(program.clone()), &Cancel::new());
    assert_eq!(
        finished.outcome,
        Outcome::NotStarted {
            why: format!("{program} does not exist")
        }
    );
    assert_eq!(
        finished.describe(),
        format!("could not start: {program} does not exist")
    );
}

#[test]
fn a_missing_interpreter_is_an_exec_error() {
    let fx = Fixture::new();
    let program = fx.script("check", "");
    let path = fx.view.host_path(&program);
    fs_err::write(&path, "#!/noodle/store/nothing-here/bin/sh\n").expect("script");
    let Some(finished) = run_or_skip(&fx.view, &job(program.clone())) else {
        return;
    };
    let Outcome::NotStarted { why } = &finished.outcome else {
        panic!("{finished:?}");
    };
    assert!(
        why.starts_with(&format!("{program} could not be executed")),
        "{why}"
    );
}

#[test]
fn leftovers_survive_when_asked_and_do_not_hold_us() {
    let fx = Fixture::new();
    let program = fx.script(
        "activate",
        "sleep 100 & echo $! > \"$PID_FILE\"; echo started",
    );
    let mut job = job(program);
    job.env
        .push(("PID_FILE".into(), fx.pid_file().display().to_string()));
    job.kill_leftovers = false;
    let Some(finished) = run_or_skip(&fx.view, &job) else {
        return;
    };
    assert!(finished.succeeded(), "{finished:?}");
    assert_eq!(finished.output, "started\n");
    assert!(finished.duration < Duration::from_millis(500));
    let pid = pid_in(&fx.pid_file());
    assert!(alive(pid), "the background sleep was killed");
    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);

    // And health checks lose theirs.
    fs_err::remove_file(fx.pid_file()).expect("pid file");
    job.kill_leftovers = true;
    let finished = run(&fx.view, &job, &Cancel::new());
    assert!(finished.succeeded(), "{finished:?}");
    assert!(gone_soon(pid_in(&fx.pid_file())), "the leftover survived");
}

#[test]
fn runs_directly_when_the_logical_dir_is_the_physical_one() {
    let fx = Fixture::new();
    let physical = fx.dir.path().join("noodle/store");
    let logical = physical.display().to_string();
    let view = StoreView::new(&logical, &physical, &fx.dir.path().join("unused"));
    assert!(view.is_direct());
    let program = format!("{logical}/{HASH}-tool/bin/check");
    fx.script("check", &format!("cat {logical}/{HASH}-tool/data"));
    let finished = run(&view, &job(program), &Cancel::new());
    assert!(finished.succeeded(), "{finished:?}");
    assert_eq!(finished.output, "data via the logical path\n");
    assert!(!fx.dir.path().join("unused").exists());

    let missing = format!("{logical}/{HASH}-tool/bin/missing");
    let finished = run(&view, &job(missing.clone()), &Cancel::new());
    assert_eq!(
        finished.outcome,
        Outcome::NotStarted {
            why: format!("{missing} does not exist")
        }
    );
}

#[test]
fn the_unprivileged_path_works_too() {
    let fx = Fixture::new();
    let program = fx.script(
        "check",
        &format!("cat /noodle/store/{HASH}-tool/data; id -u"),
    );
    let view = fx.view.clone().with_user_namespace();
    let finished = run(&view, &job(program), &Cancel::new());
    if let Outcome::NotStarted { why } = &finished.outcome {
        if why.contains("user and mount namespace") {
            eprintln!("note: skipped, user namespaces are not available: {why}");
            return;
        }
    }
    assert!(finished.succeeded(), "{finished:?}");
    let uid = nix::unistd::geteuid();
    assert_eq!(
        finished.output,
        format!("data via the logical path\n{uid}\n")
    );
}

#[test]
fn set_up_failures_name_the_step() {
    let fx = Fixture::new();
    // A physical store that is not there fails in the child, after the fork.
    let view = StoreView::new(
        "/noodle/store",
        &fx.dir.path().join("nowhere"),
        &fx.dir.path().join("scratch"),
    );
    let mut job = job("/bin/sh".into());
    job.args = vec!["-c".into(), "true".into()];
    let finished = run(&view, &job, &Cancel::new());
    let Outcome::NotStarted { why } = &finished.outcome else {
        panic!("{finished:?}");
    };
    let expected = format!(
        "could not set up the store view: bind-mounting {}/nowhere on ",
        fx.dir.path().display()
    );
    assert!(why.starts_with(&expected), "{why}");

    // One that cannot even be prepared fails before it.
    let file = fx.dir.path().join("file");
    fs_err::write(&file, "").expect("file");
    let view = StoreView::new(
        "/noodle/store",
        &fx.dir.path().join("noodle/store"),
        &file.join("below"),
    );
    let finished = run(&view, &job, &Cancel::new());
    let Outcome::NotStarted { why } = &finished.outcome else {
        panic!("{finished:?}");
    };
    assert!(
        why.starts_with("could not set up the store view: "),
        "{why}"
    );
}

#[test]
fn finished_serializes_with_a_kind_and_milliseconds() {
    let finished = Finished {
        outcome: Outcome::Exited { code: 1 },
        duration: Duration::from_millis(1500),
        output: "x".into(),
        output_bytes: 1,
    };
    let json = serde_json::to_value(&finished).expect("json");
    assert_eq!(
        json,
        serde_json::json!({
            "outcome": {"kind": "exited", "code": 1},
            "duration_ms": 1500,
            "output": "x",
            "output_bytes": 1,
        })
    );
    assert_eq!(rough(Duration::from_millis(5003)), "5s");
    assert_eq!(rough(Duration::from_millis(1503)), "1.5s");
}
