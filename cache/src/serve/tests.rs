//! A real store served on 127.0.0.1, fetched the way a peer would.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use noodle_store::db::PathInfo;
use noodle_store::{AddOptions, Blake3, Silent, Store, StorePath};

use super::{ServeOptions, Server};
use crate::keys::{self, SecretKey};
use crate::narinfo::{CacheInfo, Compression, NarInfo};

/// Incompressible, and bigger than the socket buffers: a peer that stops reading leaves the
/// worker sending it blocked.
const BIG: usize = 12 << 20;

struct Fixture {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    key: SecretKey,
    /// A small path, and one referring to it with a big file.
    lib: PathInfo,
    app: PathInfo,
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

fn fixture() -> Fixture {
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
        _dir: dir,
        root,
        key: SecretKey::generate("test-cache-1").expect("key"),
        lib,
        app,
    }
}

fn digest(path: &str) -> String {
    let base = path.rsplit('/').next().expect("a path");
    StorePath::from_base_name(base)
        .expect("store path")
        .digest()
        .to_owned()
}

fn nar_url(base: &str, info: &PathInfo) -> String {
    let hash = Blake3::parse(&info.nar_hash).expect("hash");
    format!(
        "{base}/nar/{}-{}.nar.zst",
        digest(&info.path),
        hash.to_hex()
    )
}

/// Runs a server on the fixture's store for the duration of `body`; returns its log.
fn with_server(fx: &Fixture, threads: usize, body: impl FnOnce(&str)) -> Vec<String> {
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
        body(&base);
        stop.store(true, Ordering::Relaxed);
        running.join().expect("run").expect("serve");
    });
    lines.into_inner().expect("log")
}

fn status_of(result: Result<ureq::Response, ureq::Error>) -> u16 {
    match result {
        Ok(response) => response.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("transport error: {e}"),
    }
}

/// A request exactly as written: a URL library would normalise away what is being tested.
fn raw(base: &str, request_line: &str, headers: &str) -> (String, Vec<u8>) {
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

fn status_line(head: &str) -> &str {
    head.lines().next().expect("status line")
}

#[test]
fn cache_info_names_the_store() {
    let fx = fixture();
    with_server(&fx, 2, |base| {
        let url = format!("{base}/cache-info");
        let text = ureq::get(&url)
            .call()
            .expect("get")
            .into_string()
            .expect("text");
        let info = CacheInfo::parse(&url, &text).expect("parse");
        assert_eq!(info.store_dir, "/noodle/store");
        assert_eq!(info.priority, 40);
        assert!(info.want_mass_query);
        let head = ureq::head(&url).call().expect("head");
        assert_eq!(head.status(), 200);
        assert!(head.into_string().expect("body").is_empty());
    });
}

#[test]
fn narinfo_describes_the_path_and_is_signed() {
    let fx = fixture();
    let log = with_server(&fx, 2, |base| {
        let url = format!("{base}/{}.narinfo", digest(&fx.app.path));
        let text = ureq::get(&url)
            .call()
            .expect("get")
            .into_string()
            .expect("text");
        let store_dir = noodle_store::StoreDir::new("/noodle/store").expect("dir");
        let info = NarInfo::parse(&url, &text, &store_dir).expect("parse");
        let nar_hash = Blake3::parse(&fx.app.nar_hash).expect("hash");
        assert_eq!(info.store_path, fx.app.path);
        assert_eq!(info.nar_hash, nar_hash);
        assert_eq!(info.nar_size, fx.app.nar_size);
        assert_eq!(info.references, fx.app.references);
        assert_eq!(info.compression, Compression::Zstd);
        assert_eq!((info.file_hash, info.file_size), (None, None));
        assert_eq!(
            format!("{base}/{}", info.url),
            nar_url(base, &fx.app),
            "the narinfo names the NAR this server serves"
        );
        // Signed over the fingerprint of what the store recorded, by the server's key.
        let fingerprint =
            keys::fingerprint(&fx.app.path, &nar_hash, fx.app.nar_size, &fx.app.references);
        assert_eq!(info.signatures.len(), 1, "{text}");
        assert!(fx.key.public().verify(&fingerprint, &info.signatures[0]));
        let other = SecretKey::generate("test-cache-1").expect("key");
        assert!(!other.public().verify(&fingerprint, &info.signatures[0]));
    });
    assert!(
        log.iter()
            .any(|l| l.contains(".narinfo") && l.contains(" 200 ")),
        "{log:?}"
    );
}

#[test]
fn nar_is_the_paths_archive_streamed_compressed() {
    let fx = fixture();
    with_server(&fx, 2, |base| {
        for info in [&fx.lib, &fx.app] {
            let response = ureq::get(&nar_url(base, info)).call().expect("get");
            assert_eq!(response.header("Content-Type"), Some("application/zstd"));
            assert_eq!(response.header("Transfer-Encoding"), Some("chunked"));
            assert_eq!(response.header("Content-Length"), None);
            let mut nar = Vec::new();
            zstd::Decoder::new(response.into_reader())
                .expect("decoder")
                .read_to_end(&mut nar)
                .expect("a complete zstd stream");
            assert_eq!(nar.len() as u64, info.nar_size, "{}", info.path);
            assert_eq!(Blake3::of(&nar).to_string(), info.nar_hash, "{}", info.path);
        }
        let head = ureq::head(&nar_url(base, &fx.app)).call().expect("head");
        assert_eq!(head.status(), 200);
        assert!(head.into_string().expect("body").is_empty());
    });
}

#[test]
fn unknown_paths_and_stale_hashes_are_not_found() {
    let fx = fixture();
    with_server(&fx, 2, |base| {
        let unknown = "0123456789abcdfghijklmnpqrsvwxyz";
        assert_eq!(
            status_of(ureq::get(&format!("{base}/{unknown}.narinfo")).call()),
            404
        );
        let stale = format!(
            "{base}/nar/{}-{}.nar.zst",
            digest(&fx.app.path),
            "0".repeat(64)
        );
        assert_eq!(status_of(ureq::get(&stale).call()), 404);
        let elsewhere = nar_url(base, &fx.app).replace(&digest(&fx.app.path), unknown);
        assert_eq!(status_of(ureq::get(&elsewhere).call()), 404);
        // Another path's NAR under this one's digest.
        let swapped = nar_url(base, &fx.lib).replace(&digest(&fx.lib.path), &digest(&fx.app.path));
        assert_eq!(status_of(ureq::get(&swapped).call()), 404);
    });
}

#[test]
fn only_the_three_shapes_and_only_get_and_head() {
    let fx = fixture();
    let app = digest(&fx.app.path);
    with_server(&fx, 2, |base| {
        for target in [
            "/../cache-info".to_owned(),
            "/nar/../cache-info".into(),
            "/%2e%2e/cache-info".into(),
            "//cache-info".into(),
            "/cache-info?x".into(),
            format!("/./{app}.narinfo"),
            format!("/nar/../{app}.narinfo"),
            format!("/{}.narinfo", app.to_uppercase()),
            format!("/{}", fx.app.path),
            "/nar/".into(),
            "/etc/passwd".into(),
        ] {
            let (head, _) = raw(base, &format!("GET {target} HTTP/1.1"), "");
            assert_eq!(status_line(&head), "HTTP/1.1 404 Not Found", "{target}");
        }
        for method in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"] {
            let response = ureq::request(method, &format!("{base}/cache-info")).call();
            let Err(ureq::Error::Status(405, response)) = response else {
                panic!("{method} must be refused");
            };
            assert_eq!(response.header("Allow"), Some("GET, HEAD"));
        }
    });
}

#[test]
fn nars_are_never_buffered_for_peers_that_cannot_take_chunks() {
    let fx = fixture();
    with_server(&fx, 2, |base| {
        let target = nar_url("", &fx.app);
        let (head, body) = raw(base, &format!("GET {target} HTTP/1.0"), "");
        assert!(status_line(&head).contains(" 505 "), "{head}");
        assert!(String::from_utf8_lossy(&body).contains("HTTP/1.1"));
        let (head, _) = raw(base, &format!("GET {target} HTTP/1.1"), "TE: identity\r\n");
        assert!(status_line(&head).contains(" 400 "), "{head}");
        // Small text is still served to them.
        let (head, body) = raw(base, "GET /cache-info HTTP/1.0", "");
        assert!(status_line(&head).contains(" 200 "), "{head}");
        assert!(String::from_utf8_lossy(&body).contains("StoreDir: /noodle/store"));
    });
}

#[test]
fn a_stalled_peer_does_not_hold_up_the_others() {
    let fx = fixture();
    with_server(&fx, 2, |base| {
        // Headers read, body not: the worker sending it blocks once the socket is full.
        let stalled = ureq::get(&nar_url(base, &fx.app)).call().expect("get");
        std::thread::sleep(Duration::from_millis(300));
        let quick = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(5))
            .build();
        for _ in 0..5 {
            let url = format!("{base}/{}.narinfo", digest(&fx.lib.path));
            assert_eq!(status_of(quick.get(&url).call()), 200);
        }
        drop(stalled);
    });
}

#[test]
fn a_damaged_path_is_refused_not_served() {
    let fx = fixture();
    let physical = fx.root.join(fx.lib.path.trim_start_matches('/'));
    let data = physical.join("share/data");
    make_writable(&physical);
    std::fs::write(&data, "hello, but longer\n").expect("damage");
    let log = with_server(&fx, 2, |base| {
        assert_eq!(status_of(ureq::get(&nar_url(base, &fx.lib)).call()), 500);
        // The narinfo is still served: it is what the database holds.
        let narinfo = format!("{base}/{}.narinfo", digest(&fx.lib.path));
        assert_eq!(status_of(ureq::get(&narinfo).call()), 200);
    });
    let line = log.iter().find(|l| l.contains(" 500 ")).expect("logged");
    assert!(
        line.contains(&fx.lib.path) && line.contains("damaged"),
        "{line}"
    );
    assert!(line.contains("noodle store verify"), "{line}");
}

fn make_writable(dir: &Path) {
    for entry in walk(dir) {
        let mode = if entry.is_dir() { 0o755 } else { 0o644 };
        if !entry.is_symlink() {
            std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![dir.to_owned()];
    if dir.is_dir() && !dir.is_symlink() {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            out.extend(walk(&entry.expect("entry").path()));
        }
    }
    out
}
