//! A real store (two paths, one referring to the other) and a server on it, and ways of
//! asking it things.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use noodle_store::db::PathInfo;
use noodle_store::import::{stage_nar, Expected};
use noodle_store::nar::{self, NarLayout};
use noodle_store::{AddOptions, Blake3, Silent, Store, StorePath};

use super::super::{ServeOptions, Server};
use crate::keys::SecretKey;

/// Incompressible, and bigger than the socket buffers: a peer that stops reading leaves the
/// worker sending it blocked.
const BIG: usize = 12 << 20;

pub(super) struct Fixture {
    _dir: Option<tempfile::TempDir>,
    pub root: PathBuf,
    pub key: SecretKey,
    /// A small path, and one referring to it with a big file.
    pub lib: PathInfo,
    pub app: PathInfo,
}

fn pseudo_random(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

pub(super) fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    let mut store = Store::init(&root, None).expect("init");
    let src = dir.path().join("src");
    let lib_src = src.join("lib");
    std::fs::create_dir_all(lib_src.join("share")).expect("mkdir");
    std::fs::write(lib_src.join("share/data"), "hello\n").expect("write");
    let tool = lib_src.join("tool");
    std::fs::write(&tool, "#!/bin/sh\necho hi\n").expect("write");
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::os::unix::fs::symlink("share/data", lib_src.join("link")).expect("symlink");
    let options = AddOptions {
        scan_references: true,
        ..AddOptions::default()
    };
    let lib = store
        .add_tree(&lib_src, &options, &Silent)
        .expect("add lib");

    let app_src = src.join("app");
    std::fs::create_dir_all(&app_src).expect("mkdir");
    std::fs::write(app_src.join("uses"), format!("{}/tool\n", lib.path)).expect("write");
    std::fs::write(app_src.join("big"), pseudo_random(BIG)).expect("write");
    let app = store
        .add_tree(&app_src, &options, &Silent)
        .expect("add app");
    assert_eq!(
        app.references,
        [lib.path.as_str()],
        "the fixture needs a reference"
    );

    let info = |path: &str| store.db().path_info(path).expect("query").expect("valid");
    let (lib, app) = (info(&lib.path), info(&app.path));
    Fixture {
        _dir: Some(dir),
        root,
        key: SecretKey::generate("test-cache-1").expect("key"),
        lib,
        app,
    }
}

pub(super) fn digest(path: &str) -> String {
    let base = path.rsplit('/').next().expect("a path");
    StorePath::from_base_name(base)
        .expect("store path")
        .digest()
        .to_owned()
}

pub(super) fn nar_url(base: &str, info: &PathInfo) -> String {
    let hash = Blake3::parse(&info.nar_hash).expect("hash");
    format!(
        "{base}/nar/{}-{}.nar.zst",
        digest(&info.path),
        hash.to_hex()
    )
}

/// Runs a server on the fixture's store for the duration of `body`; returns its log.
pub(super) fn with_server(fx: &Fixture, threads: usize, body: impl FnOnce(&str)) -> Vec<String> {
    let options = ServeOptions {
        listen: "127.0.0.1:0".into(),
        keys: vec![fx.key.clone()],
        priority: 40,
        threads,
    };
    let server = Server::bind(&fx.root, options).expect("bind");
    let base = format!("http://{}", server.local_addr());
    let stop = AtomicBool::new(false);
    let lines = Mutex::new(Vec::new());
    let log = |line: &str| lines.lock().expect("log").push(line.to_owned());
    std::thread::scope(|scope| {
        let running = scope.spawn(|| server.run(&stop, &log));
        // A failed assertion must still stop the server, or the scope would wait for it.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&base)));
        stop.store(true, Ordering::Relaxed);
        running.join().expect("run").expect("serve");
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    });
    lines.into_inner().expect("log")
}

pub(super) fn status_of(result: Result<ureq::Response, ureq::Error>) -> u16 {
    match result {
        Ok(response) => response.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("transport error: {e}"),
    }
}

/// A request exactly as written: a URL library would normalise away what is being tested.
pub(super) fn raw(base: &str, request_line: &str, headers: &str) -> (String, Vec<u8>) {
    let mut stream = TcpStream::connect(base.trim_start_matches("http://")).expect("connect");
    write!(
        stream,
        "{request_line}\r\nHost: test\r\nConnection: close\r\n{headers}\r\n"
    )
    .expect("send");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read");
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header");
    let head = String::from_utf8_lossy(&answer[..end]).into_owned();
    (head, answer[end + 4..].to_vec())
}

pub(super) fn status_line(head: &str) -> &str {
    head.lines().next().expect("status line")
}

/// A copy of `fx.lib` in a new store, registered with `signatures` as if fetched from a cache.
pub(super) fn imported_lib(fx: &Fixture, dir: &Path, signatures: Vec<String>) -> Fixture {
    let root = dir.join("peer");
    let mut store = Store::init(&root, None).expect("init");
    let physical = fx.root.join(fx.lib.path.trim_start_matches('/'));
    let mut archive = Vec::new();
    nar::dump(&NarLayout::of(&physical).expect("layout"), &mut archive).expect("dump");
    let expected = Expected {
        path: fx.lib.path.clone(),
        nar_hash: Blake3::parse(&fx.lib.nar_hash).expect("hash"),
        nar_size: fx.lib.nar_size,
        references: fx.lib.references.clone(),
        ca: fx.lib.ca.clone(),
        deriver: None,
        signatures,
    };
    let staged =
        stage_nar(store.dirs(), &mut archive.as_slice(), expected, &|_| {}).expect("stage");
    store.commit_staged(staged).expect("commit");
    let lib = store
        .db()
        .path_info(&fx.lib.path)
        .expect("query")
        .expect("valid");
    Fixture {
        _dir: None,
        root,
        key: fx.key.clone(),
        app: lib.clone(),
        lib,
    }
}

pub(super) fn make_writable(dir: &Path) {
    for entry in walk(dir) {
        let mode = if entry.is_dir() { 0o755 } else { 0o644 };
        if !entry.is_symlink() {
            std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_owned()];
    if dir.is_dir() && !dir.is_symlink() {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            out.extend(walk(&entry.expect("entry").path()));
        }
    }
    out
}
