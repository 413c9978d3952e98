//! The build sandbox (noodle_builder::sandbox): each test runs busybox scripts inside it and
//! checks one of its promises from the inside and, where it matters, from the host.

mod common;

use common::host_processes;

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use noodle_builder::sandbox::{self, BuildUser, Limits, Outcome, SandboxError, SandboxSpec};

const HELPER: &str = env!("CARGO_BIN_EXE_noodle");
const STORE: &str = "/noodle/store";
const BUSYBOX: &str = "/noodle/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-busybox";
const OUT: &str = "/noodle/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-out";
const OTHER: &str = "cccccccccccccccccccccccccccccccc-other";
const APPLETS: &[&str] = &[
    "sh", "ls", "cat", "echo", "id", "hostname", "mount", "touch", "wget", "httpd", "sleep", "ip",
    "mkdir", "grep", "test", "true", "false", "kill", "wc", "tr", "cut", "setsid", "rm", "chmod",
    "ln", "seq", "stat", "nc",
];
const ENV_UNPRIVILEGED: &str = "NOODLE_SANDBOX_TEST_UNPRIVILEGED_DIR";

/// A host store holding busybox (the one input) and another path (not an input), plus the
/// build's dirs; all in one temp dir.
struct Fixture {
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    build_user: Option<BuildUser>,
}

impl Fixture {
    fn new() -> Fixture {
        let temp = tempfile::tempdir().expect("tempdir");
        let mut fixture = Fixture::at(temp.path().to_owned());
        fixture._temp = Some(temp);
        fixture
    }

    fn at(dir: PathBuf) -> Fixture {
        let bin = dir.join("host-store").join(name(BUSYBOX)).join("bin");
        std::fs::create_dir_all(&bin).expect("mkdir bin");
        std::fs::copy("/bin/busybox", bin.join("busybox")).expect("copy busybox");
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("symlink applet");
        }
        let other = dir.join("host-store").join(OTHER);
        std::fs::create_dir_all(&other).expect("mkdir other");
        std::fs::write(other.join("secret"), "other store path\n").expect("write");
        for sub in ["build", "scratch", "work"] {
            std::fs::create_dir(dir.join(sub)).expect("mkdir");
        }
        let locks = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sandbox-build-users");
        let build_user = if nix::unistd::geteuid().is_root() {
            BuildUser::acquire(&locks).expect("build user")
        } else {
            None
        };
        Fixture {
            dir,
            _temp: None,
            build_user,
        }
    }

    fn busybox(&self) -> PathBuf {
        self.dir.join("host-store").join(name(BUSYBOX))
    }

    fn scratch(&self) -> PathBuf {
        self.dir.join("scratch")
    }

    fn spec(&self, script: &str) -> SandboxSpec {
        let env = [
            ("PATH", format!("{BUSYBOX}/bin")),
            ("HOME", "/homeless-shelter".into()),
            ("TMPDIR", "/build".into()),
            ("out", OUT.into()),
        ];
        SandboxSpec {
            store_dir: STORE.into(),
            inputs: vec![(BUSYBOX.into(), self.busybox())],
            build_dir: self.dir.join("build"),
            store_scratch: self.scratch(),
            program: format!("{BUSYBOX}/bin/sh"),
            argv: vec!["sh".into(), "-e".into(), "-c".into(), script.into()],
            env: env.into_iter().map(|(k, v)| (k.into(), v)).collect(),
            build_user: self.build_user.as_ref().map(BuildUser::ids),
        }
    }

    fn run_spec(
        &self,
        spec: &SandboxSpec,
        limits: Limits,
    ) -> (Result<Outcome, SandboxError>, String) {
        let mut output = Vec::new();
        let result = sandbox::run(
            spec,
            Path::new(HELPER),
            &self.dir.join("work"),
            &limits,
            &mut |data| output.extend_from_slice(data),
        );
        (result, String::from_utf8_lossy(&output).into_owned())
    }

    fn run_with(&self, script: &str, limits: Limits) -> (Result<Outcome, SandboxError>, String) {
        self.run_spec(&self.spec(script), limits)
    }

    /// Run `script`, insist that it exits 0, return its output.
    fn run_ok(&self, script: &str) -> String {
        let (result, output) = self.run_with(script, LIMITS);
        match result {
            Ok(Outcome::Exited(0)) => output,
            other => panic!("{other:?}; output:\n{output}"),
        }
    }
}

const LIMITS: Limits = Limits {
    timeout: Duration::from_secs(30),
    max_silent: Duration::from_secs(30),
};

fn name(store_path: &str) -> &str {
    store_path
        .rsplit('/')
        .next()
        .expect("a store path has a name")
}

/// A `sleep` duration (in seconds, far longer than any test) that no other test process uses:
/// the host check below must not see another test binary's sandbox.
fn unique(seconds: u32) -> String {
    format!("{seconds}.{}", std::process::id())
}

/// The parent pid of `pid`, from /proc/<pid>/stat ("pid (comm) state ppid ...").
fn parent_of(pid: &str) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, fields) = stat.rsplit_once(')')?;
    fields.split_whitespace().nth(1)?.parse().ok()
}

/// (a) The builder's $out (a tree here, a file next to it) lands in the store scratch; its
/// output reaches the caller; /build is its writable cwd holding what the caller put there.
#[test]
fn build_writes_out_into_the_store_scratch() {
    let fx = Fixture::new();
    std::fs::write(fx.dir.join("build/source.txt"), "from the caller\n").expect("write");
    let file_out = "/noodle/store/dddddddddddddddddddddddddddddddd-file";
    let output = fx.run_ok(&format!(
        "echo building; test \"$(pwd)\" = /build; echo scratch > tmpfile
         mkdir -p $out/share/doc; echo hello > $out/share/doc/README; ln -s share $out/link
         cat source.txt > $out/copied; echo single > {file_out}; echo to-stderr >&2"
    ));
    assert!(
        output.contains("building\n") && output.contains("to-stderr\n"),
        "{output}"
    );
    let out = fx.scratch().join(name(OUT));
    let read = |p: &str| std::fs::read_to_string(out.join(p)).expect("read output");
    assert_eq!(read("share/doc/README"), "hello\n");
    assert_eq!(read("copied"), "from the caller\n");
    assert_eq!(
        std::fs::read_link(out.join("link")).expect("link"),
        Path::new("share")
    );
    let file = std::fs::read_to_string(fx.scratch().join(name(file_out))).expect("file out");
    assert_eq!(file, "single\n");
    let tmp = std::fs::read_to_string(fx.dir.join("build/tmpfile")).expect("tmpfile");
    assert_eq!(tmp, "scratch\n");
}

/// (b) No host path is visible: not a secret next to the inputs, not /etc/shadow, /root,
/// /work, /tmp, /usr, /bin/sh, nor the physical path of an input; `/` holds only the
/// sandbox's own dirs.
#[test]
fn host_files_are_invisible() {
    let fx = Fixture::new();
    let secret = fx.dir.join("secret.txt");
    std::fs::write(&secret, "host secret\n").expect("write");
    let output = fx.run_ok(&format!(
        "for p in {} {} /etc/shadow /root /work /tmp /usr /bin/sh /home /sys; do
             if test -e $p; then echo VISIBLE $p; exit 1; fi
         done
         if cat {} 2>/dev/null; then exit 1; fi
         echo ROOT $(ls /) ETC $(ls /etc)",
        secret.display(),
        fx.busybox().display(),
        secret.display(),
    ));
    assert!(!output.contains("host secret"), "{output}");
    assert!(
        output.contains("ROOT build dev etc noodle proc ETC group hosts passwd"),
        "{output}"
    );
}

/// (c) No network: neither a host address nor the usual gateway is reachable (the host's
/// server demonstrably works from the host), only `lo` exists and it is up (a server on
/// 127.0.0.1 inside answers).
#[test]
fn network_is_loopback_only() {
    let listener = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 12\r\n\r\nHOST-SECRET\n");
        }
    });
    // The address the host uses to reach the outside (no packet is sent).
    let host_ip = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("10.0.2.2:80").and_then(|()| s.local_addr()))
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| "10.0.2.2".into());
    let mut from_host = String::new();
    let mut stream = std::net::TcpStream::connect((host_ip.as_str(), port)).expect("connect");
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("send");
    stream.read_to_string(&mut from_host).expect("receive");
    assert!(
        from_host.contains("HOST-SECRET"),
        "the host server works: {from_host}"
    );

    let fx = Fixture::new();
    let output = fx.run_ok(&format!(
        // nc rather than wget, whose -T crashes busybox 1.35. 10.0.2.2:80 is the usual
        // gateway (on this VM it answers from the host).
        "for target in '{host_ip} {port}' '10.0.2.2 80' '127.0.0.1 {port}'; do
             if printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc $target; then echo REACHED $target; fi
         done
         echo IFACES $(grep : /proc/net/dev | cut -d: -f1) LINKS $(ip -o link | cut -d: -f2)
         ip link show lo | grep -q '<LOOPBACK,UP'
         mkdir www; echo loopback-works > www/index.html
         httpd -f -p 127.0.0.1:8080 -h /build/www & server=$!
         for i in $(seq 50); do
             if wget -q -O - http://127.0.0.1:8080/index.html; then break; fi; sleep 0.05
         done
         kill $server; wait $server || true"
    ));
    assert!(
        !output.contains("HTTP/") && !output.contains("REACHED"),
        "{output}"
    );
    assert!(output.contains("IFACES lo LINKS lo\n"), "{output}");
    assert!(output.contains("loopback-works"), "{output}");
}

/// (d) The store dir shows only the inputs and what the builder creates, not the other
/// paths of the host store.
#[test]
fn only_inputs_are_in_the_store() {
    let fx = Fixture::new();
    assert!(fx.busybox().parent().expect("parent").join(OTHER).exists());
    let output = fx.run_ok(&format!(
        "echo BEFORE $(ls {STORE}); mkdir $out; echo AFTER $(ls {STORE})
         if test -e {STORE}/{OTHER}; then exit 1; fi"
    ));
    let (bb, out) = (name(BUSYBOX), name(OUT));
    assert!(output.contains(&format!("BEFORE {bb}\n")), "{output}");
    assert!(output.contains(&format!("AFTER {bb} {out}\n")), "{output}");
}

/// (e) Processes left behind (a plain background job and a detached grandchild that closed
/// the output) are reported and killed: none exists on the host when `run` returns.
#[test]
fn leftover_processes_are_reported_and_killed() {
    let (a, b) = (unique(1234), unique(1235));
    let fx = Fixture::new();
    let (result, output) = fx.run_with(
        // The pause lets both exec before the builder exits, so that they have their names.
        &format!(
            "sleep {a} & (setsid sleep {b} </dev/null >/dev/null 2>&1 &); sleep 0.2; echo started"
        ),
        LIMITS,
    );
    let Ok(Outcome::LeftProcesses(left)) = result else {
        panic!("{result:?}; output:\n{output}")
    };
    assert!(
        left.iter().any(|p| p.ends_with(&format!(": sleep {a}"))),
        "{left:?}"
    );
    assert!(
        left.iter().any(|p| p.ends_with(&format!("sleep {b}"))),
        "{left:?}"
    );
    assert_eq!(host_processes(&["sleep", &a]), Vec::<String>::new());
    assert_eq!(host_processes(&["sleep", &b]), Vec::<String>::new());
    assert_eq!(
        host_processes(&["setsid", "sleep", &b]),
        Vec::<String>::new()
    );
}

/// (f) The timeout and the silence limit fire promptly and kill everything, even a builder
/// that ignores signals and a child that detached from the output; output resets the
/// silence clock.
#[test]
fn timeout_and_max_silent_kill_the_build() {
    let (a, b, c) = (unique(2345), unique(2346), unique(2347));
    let fx = Fixture::new();
    let start = Instant::now();
    let limits = Limits {
        timeout: Duration::from_secs(1),
        max_silent: Duration::from_secs(30),
    };
    let script = &format!(
        "trap '' TERM INT HUP; echo start; (setsid sleep {b} >/dev/null 2>&1 &); sleep {a}"
    );
    let (result, output) = fx.run_with(script, limits);
    let elapsed = start.elapsed();
    assert_eq!(result.expect("run"), Outcome::TimedOut, "{output}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert!(output.contains("start"), "{output}");
    assert_eq!(host_processes(&["sleep", &a]), Vec::<String>::new());
    assert_eq!(host_processes(&["sleep", &b]), Vec::<String>::new());

    let start = Instant::now();
    let limits = Limits {
        timeout: Duration::from_secs(30),
        max_silent: Duration::from_secs(1),
    };
    let (result, output) = fx.run_with(&format!("echo start; sleep {c}"), limits);
    let elapsed = start.elapsed();
    assert_eq!(result.expect("run"), Outcome::Silent, "{output}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert_eq!(host_processes(&["sleep", &c]), Vec::<String>::new());

    let limits = Limits {
        timeout: Duration::from_secs(30),
        max_silent: Duration::from_millis(800),
    };
    let chatty = "for i in 1 2 3 4 5 6; do echo $i; sleep 0.25; done";
    let (result, output) = fx.run_with(chatty, limits);
    assert_eq!(result.expect("run"), Outcome::Exited(0), "{output}");
}

/// Killing the helper (SIGKILL: Ctrl-C, the OOM killer) kills the sandbox with it: init's
/// parent-death signal, which must survive init's change of credentials.
#[test]
fn killing_the_helper_kills_the_build() {
    let fx = Fixture::new();
    let work = fx.dir.join("work");
    let (a, b) = (unique(3456), unique(3457));
    let spec = fx.spec(&format!(
        "sleep {b} >/dev/null 2>&1 & echo started; sleep {a} >/dev/null 2>&1"
    ));
    let (killed_sender, killed) = std::sync::mpsc::channel();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let helper_cmdline = [HELPER, "__noodle-sandbox", work.to_str().expect("utf-8")];
        let mut on_output = |_: &[u8]| {
            // The cloned init has the same command line; the helper is our child.
            let mut helpers = host_processes(&helper_cmdline);
            helpers.retain(|pid| parent_of(pid) == Some(std::process::id()));
            for pid in &helpers {
                let pid = nix::unistd::Pid::from_raw(pid.parse().expect("pid"));
                nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill");
            }
            let _ = killed_sender.send(helpers);
        };
        // Only init and the shell hold the output pipe, and both die with the namespace.
        let result = sandbox::run(&spec, Path::new(HELPER), &work, &LIMITS, &mut on_output);
        let _ = sender.send(result);
    });
    let helpers = killed
        .recv_timeout(Duration::from_secs(10))
        .expect("output");
    assert_eq!(helpers.len(), 1, "{helpers:?}");
    let result = receiver
        .recv_timeout(Duration::from_secs(10))
        .expect("`run` hangs: init outlived its helper");
    assert!(
        matches!(result, Err(SandboxError::NoReport { .. })),
        "{result:?}"
    );
    // init's exit and the namespace's teardown are asynchronous to `run` here.
    let start = Instant::now();
    while !host_processes(&["sleep", &a]).is_empty() && start.elapsed().as_secs() < 5 {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(host_processes(&["sleep", &a]), Vec::<String>::new());
    assert_eq!(host_processes(&["sleep", &b]), Vec::<String>::new());
}

/// (g) Everything but /build, the store scratch, /dev/shm and /dev/pts is read-only: the
/// root, /etc, /dev, /proc and the inputs.
#[test]
fn writes_outside_build_and_out_fail() {
    let fx = Fixture::new();
    let output = fx.run_ok(&format!(
        "for p in /x /nix /etc/x /etc/passwd /dev/x /proc/x /noodle/x {BUSYBOX}/x {BUSYBOX}/bin/busybox; do
             if touch $p; then echo WROTE $p; fi
         done
         if rm {BUSYBOX}/bin/sh; then echo REMOVED; fi
         if chmod 777 {BUSYBOX}/bin; then echo CHMODDED; fi
         if mkdir /tmp; then echo MKDIR; fi
         touch /build/ok /dev/shm/ok $out; echo FINE"
    ));
    assert!(
        !output.contains("WROTE") && !output.contains("REMOVED"),
        "{output}"
    );
    assert!(
        !output.contains("CHMODDED") && !output.contains("MKDIR"),
        "{output}"
    );
    assert!(
        output.contains("touch: /etc/x: Read-only file system"),
        "{output}"
    );
    assert!(
        output.contains(&format!("{BUSYBOX}/x: Read-only file system")),
        "{output}"
    );
    assert!(output.contains("FINE"), "{output}");
    let meta = std::fs::metadata(fx.busybox().join("bin/busybox")).expect("stat");
    assert!(meta.len() > 0, "the input is intact");
}

/// (h) The builder is uid 1000 / gid 100 without capabilities, pid 2 next to init, on host
/// `localhost`, with only stdin/stdout/stderr open: it can neither mount, rename the host nor
/// touch init, and sees only its own processes.
#[test]
fn builder_is_unprivileged_and_alone() {
    let fx = Fixture::new();
    let output = fx.run_ok(
        "echo ID $(id -u) $(id -g) $(id -un) $(id -gn) HOST $(hostname) PID $$
         echo CAPS $(grep CapEff /proc/self/status | cut -f2) PROCS $(ls /proc | grep -c '^[0-9]')
         cd /proc/$$/fd; echo FDS *; cd /build
         mkdir m; if mount -t tmpfs x /build/m; then echo MOUNTED; fi
         kill -9 1 || true # dropped: init has no handler, SIGKILL from inside is ignored
         sleep 0.1; if ! test -e /proc/1/stat; then echo KILLED-INIT; fi
         if cat /proc/1/environ; then echo READ-INIT; fi
         if hostname evil; then echo RENAMED; fi",
    );
    assert!(
        output.contains("ID 1000 100 noodle noodle HOST localhost PID 2\n"),
        "{output}"
    );
    assert!(output.contains("CAPS 0000000000000000 PROCS "), "{output}");
    // stdin (/dev/null), stdout and stderr (the output pipe), and 3, the shell's handle on
    // the directory it globs: nothing leaks in.
    assert!(output.contains("FDS 0 1 2 3\n"), "{output}");
    // init, the shell, the subshell of $(...), ls and grep; nothing of the host.
    let procs = output.split("PROCS ").nth(1).and_then(|s| s.lines().next());
    let procs: usize = procs.and_then(|n| n.parse().ok()).expect("a count");
    assert!((4..=5).contains(&procs), "{output}");
    for bad in ["MOUNTED", "KILLED-INIT", "READ-INIT", "RENAMED"] {
        assert!(!output.contains(bad), "{output}");
    }
}

/// (i) The builder's fate comes back: its exit code, the signal that killed it, and a
/// program that cannot be executed as a setup error.
#[test]
fn exit_status_comes_back() {
    let fx = Fixture::new();
    assert_eq!(
        fx.run_with("exit 7", LIMITS).0.expect("run"),
        Outcome::Exited(7)
    );
    assert_eq!(
        fx.run_with("kill -9 $$", LIMITS).0.expect("run"),
        Outcome::Signaled(9)
    );
    let mut spec = fx.spec("true");
    spec.program = format!("{BUSYBOX}/bin/missing");
    match fx.run_spec(&spec, LIMITS).0 {
        Err(SandboxError::Setup(message)) => {
            assert!(
                message.contains("executing") && message.contains("ENOENT"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
    let mut spec = fx.spec("true");
    spec.inputs
        .push((format!("{STORE}/{OTHER}x"), fx.dir.join("no-such-path")));
    match fx.run_spec(&spec, LIMITS).0 {
        Err(SandboxError::Setup(message)) => assert!(message.contains("no-such-path"), "{message}"),
        other => panic!("{other:?}"),
    }
}

/// (j) What the builder creates belongs on the host to the build user (root) or to the
/// caller (not root), never to root.
#[test]
fn outputs_belong_to_the_build_user() {
    let fx = Fixture::new();
    fx.run_ok("mkdir $out; echo x > $out/file");
    let meta = std::fs::metadata(fx.scratch().join(name(OUT)).join("file")).expect("stat");
    let expected = match &fx.build_user {
        Some(user) => {
            assert!(user.uid >= sandbox::BUILD_USER_BASE);
            (user.uid, user.gid)
        }
        None => (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        ),
    };
    assert_eq!((meta.uid(), meta.gid()), expected);
}

/// The unprivileged path (user namespace of an ordinary user, setgroups denied): as root,
/// re-run this test binary's `unprivileged_scenario` as nobody (with umask 077, which the
/// builder must not inherit).
#[test]
fn works_unprivileged() {
    if !nix::unistd::geteuid().is_root() {
        return unprivileged_scenario(); // all the other tests are unprivileged already
    }
    let base = tempfile::tempdir().expect("tempdir");
    use std::os::unix::fs::PermissionsExt;
    let world = std::fs::Permissions::from_mode(0o755);
    std::fs::set_permissions(base.path(), world).expect("chmod");
    let dir = base.path().join("fixture");
    std::fs::create_dir(&dir).expect("mkdir");
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).expect("chown");
    let exe = std::env::current_exe().expect("current exe");
    // A strict umask, which the builder must not inherit.
    let result = std::process::Command::new("sh")
        .args(["-c", "umask 077; exec \"$@\"", "sh", "setpriv"])
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(exe)
        .args([
            "--exact",
            "unprivileged_scenario",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV_UNPRIVILEGED, &dir)
        .output()
        .expect("run setpriv");
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let out = dir.join("scratch").join(name(OUT));
    let meta = std::fs::metadata(out.join("file")).expect("stat");
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
}

/// Entry for `works_unprivileged`; does nothing unless started by it.
#[test]
fn unprivileged_scenario() {
    let Some(dir) = std::env::var_os(ENV_UNPRIVILEGED) else {
        return;
    };
    let fx = Fixture::at(PathBuf::from(dir));
    assert!(fx.build_user.is_none());
    let output = fx.run_ok(
        "echo ID $(id -u) $(id -g) HOST $(hostname) IFACES $(grep : /proc/net/dev | cut -d: -f1) UMASK $(umask)
         if touch /etc/x; then exit 1; fi
         mkdir $out; echo x > $out/file",
    );
    assert!(
        output.contains("ID 1000 100 HOST localhost IFACES lo UMASK 0022\n"),
        "{output}"
    );
    let (result, _) = fx.run_with("sleep 1236 & echo started", LIMITS);
    assert!(
        matches!(result, Ok(Outcome::LeftProcesses(_))),
        "{result:?}"
    );
}

/// Not a check: how long a no-op build takes end to end (spawn the helper, namespaces,
/// mounts, exec, exit). `cargo test --release --test sandbox -- --nocapture noop`.
#[test]
fn noop_build_timing() {
    let fx = Fixture::new();
    let mut spec = fx.spec("");
    spec.program = format!("{BUSYBOX}/bin/true");
    spec.argv = vec!["true".into()];
    let mut times = Vec::new();
    for _ in 0..50 {
        let start = Instant::now();
        assert_eq!(
            fx.run_spec(&spec, LIMITS).0.expect("run"),
            Outcome::Exited(0)
        );
        times.push(start.elapsed());
    }
    times.sort();
    println!(
        "no-op sandboxed build: median {:?}, min {:?}, max {:?}",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    );
}
