//! Helpers for the distribution tests (binary caches, keys, bundles): key pairs, noodle.toml,
//! a small closure of two paths, and servers (`noodle serve`, `python3 -m http.server`) that
//! are killed when the test is done with them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::{make_tree, Noodle};

/// A key pair made by `noodle key generate`.
pub struct KeyPair {
    pub name: String,
    pub secret_file: PathBuf,
    /// `name:base64`, as `key generate` printed it.
    pub public: String,
}

/// Two paths: `app` references `lib` (found by `store add --scan-references`).
pub struct Pair {
    pub lib: String,
    pub app: String,
}

impl Pair {
    pub fn both(&self) -> std::collections::BTreeSet<String> {
        [self.lib.clone(), self.app.clone()].into()
    }
}

/// `file://` URL of a directory.
pub fn file_url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

/// One JSON object per line (`--json` events), every one with an `event`.
pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not one JSON object per line: {e}: {line:?}"));
            assert!(value["event"].is_string(), "no `event` in {line}");
            value
        })
        .collect()
}

impl Noodle {
    /// `key generate NAME --dir <tempdir>/keys`; the public key is what it printed.
    pub fn generate_key(&self, name: &str) -> KeyPair {
        let dir = self.dir.path().join("keys");
        let out = self.ok(&[
            "key",
            "generate",
            "--dir",
            dir.to_str().expect("utf-8"),
            name,
        ]);
        KeyPair {
            name: name.to_owned(),
            secret_file: dir.join(format!("{name}.sec")),
            public: out.trim().to_owned(),
        }
    }

    /// Writes the noodle.toml every command of this store reads (`NOODLE_CONFIG`).
    pub fn write_config(&self, text: &str) {
        std::fs::write(self.dir.path().join("noodle.toml"), text).expect("write noodle.toml");
    }

    /// A cache directory beside the store (not created).
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// Adds `lib` (seeded by `seed`) and `app`, a tree naming lib's store path.
    pub fn add_pair(&self, seed: &str) -> Pair {
        let lib = self.add_new_tree(&format!("{seed}-lib"));
        let tree = self.scratch(&format!("{seed}-app"));
        make_tree(&tree, &format!("{seed}-app"));
        std::fs::write(tree.join("deps"), format!("runs with {lib}/bin/tool\n")).expect("write");
        let app = self.add_with(&tree, &["--scan-references"]);
        assert_eq!(
            self.references(&app),
            vec![lib.clone()],
            "app refers to lib"
        );
        Pair { lib, app }
    }

    /// `noodle serve --listen 127.0.0.1:0` on this store with `options` (e.g. `--option`s
    /// before `serve`): the server and the URL it printed first.
    pub fn serve(&self, options: &[&str]) -> (Killed, String) {
        let mut command = self.command();
        command
            .args(options)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = Killed(command.spawn().expect("spawn noodle serve"));
        let stdout = child.0.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the URL noodle serve prints");
        let url = line.trim().to_owned();
        assert!(
            url.starts_with("http://127.0.0.1:") && !url.ends_with(":0"),
            "noodle serve printed {line:?} as its URL"
        );
        (child, url)
    }
}

/// A child process killed (and reaped) when dropped, so a failing test leaves no server behind.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback port: the kernel picks one, which is then released for the caller.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local address")
        .port()
}

/// `python3 -m http.server` serving `dir` (a plain static web server) on a free loopback
/// port: the server and its URL. Another process may take the port between our probe and
/// python's bind, so a server that exits at once is started again on another port.
pub fn static_http_server(dir: &Path) -> (Killed, String) {
    for _ in 0..10 {
        let port = free_port();
        let mut child = Killed(
            Command::new("python3")
                .args(["-m", "http.server", "--bind", "127.0.0.1"])
                .arg(port.to_string())
                .arg("--directory")
                .arg(dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn python3 -m http.server"),
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return (child, format!("http://127.0.0.1:{port}"));
            }
            if child.0.try_wait().expect("poll python3").is_some() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "python3 -m http.server never listened on port {port}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    panic!("python3 -m http.server could not start on any free port");
}
