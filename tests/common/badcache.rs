//! Binary caches for distribution_bad_input.rs: made by the real binary (`key generate`,
//! `copy --to`), then copied and damaged by the test. Narinfos can be re-signed here with a
//! key the test holds, by code independent of noodle's, so that one field is the only wrong
//! thing in a narinfo that is otherwise perfectly signed.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use base64::Engine as _;
use ed25519_dalek::Signer as _;

use super::{make_tree, Noodle};

use base64::engine::general_purpose::STANDARD as BASE64;
pub const STORE_DIR: &str = "/noodle/store";

/// A key made by `noodle key generate`, loaded from its files.
pub struct Key {
    pub name: String,
    pub secret_file: PathBuf,
    /// `name:base64`, for `trusted-public-keys`.
    pub public: String,
    signing: ed25519_dalek::SigningKey,
}

impl Key {
    pub fn generate(noodle: &Noodle, name: &str) -> Self {
        let dir = noodle.dir.path().join("keys");
        let dir_text = dir.to_str().expect("utf-8");
        let public = noodle
            .ok(&["key", "generate", "--dir", dir_text, name])
            .trim()
            .to_owned();
        let secret_file = dir.join(format!("{name}.sec"));
        let text = std::fs::read_to_string(&secret_file).expect("read the secret key");
        let (file_name, data) = text.trim().split_once(':').expect("name:base64");
        assert_eq!(file_name, name);
        let bytes: [u8; 64] = BASE64
            .decode(data)
            .expect("base64")
            .try_into()
            .expect("64 bytes: seed and public key");
        let signing =
            ed25519_dalek::SigningKey::from_keypair_bytes(&bytes).expect("a valid key pair");
        assert_eq!(
            public,
            format!(
                "{name}:{}",
                BASE64.encode(signing.verifying_key().as_bytes())
            ),
            "the printed public key is the secret key's public half"
        );
        Self {
            name: name.to_owned(),
            secret_file,
            public,
            signing,
        }
    }

    /// `name:base64(signature)` of `fingerprint`.
    pub fn sign(&self, fingerprint: &str) -> String {
        let signature = self.signing.sign(fingerprint.as_bytes());
        format!("{}:{}", self.name, BASE64.encode(signature.to_bytes()))
    }
}

/// A narinfo as its lines, in order, for editing.
#[derive(Clone, Debug)]
pub struct NarInfoText {
    pub lines: Vec<(String, String)>,
}

impl NarInfoText {
    pub fn parse(text: &str) -> Self {
        let lines = text
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l
                    .split_once(": ")
                    .or_else(|| l.strip_suffix(':').map(|k| (k, "")))
                    .unwrap_or_else(|| panic!("narinfo line {l:?}"));
                (k.to_owned(), v.to_owned())
            })
            .collect();
        Self { lines }
    }

    pub fn render(&self) -> String {
        self.lines
            .iter()
            .map(|(k, v)| format!("{k}: {v}\n"))
            .collect()
    }

    pub fn get(&self, key: &str) -> &str {
        self.lines
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("narinfo has no {key}"))
    }

    /// Replaces the value of the (first) `key` line.
    pub fn set(&mut self, key: &str, value: &str) -> &mut Self {
        let line = self
            .lines
            .iter_mut()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("narinfo has no {key}"));
        line.1 = value.to_owned();
        self
    }

    pub fn remove(&mut self, key: &str) -> &mut Self {
        self.lines.retain(|(k, _)| k != key);
        self
    }

    /// Repeats the `key` line right after itself with `value`.
    pub fn duplicate(&mut self, key: &str, value: &str) -> &mut Self {
        let at = self
            .lines
            .iter()
            .position(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("narinfo has no {key}"));
        self.lines
            .insert(at + 1, (key.to_owned(), value.to_owned()));
        self
    }

    /// `1;<path>;<nar hash>;<nar size>;<sorted full references joined by ','>`, from the text.
    pub fn fingerprint(&self) -> String {
        let mut references: Vec<String> = self
            .get("References")
            .split_whitespace()
            .map(|base| format!("{STORE_DIR}/{base}"))
            .collect();
        references.sort();
        format!(
            "1;{};{};{};{}",
            self.get("StorePath"),
            self.get("NarHash"),
            self.get("NarSize"),
            references.join(",")
        )
    }

    /// Drops every signature and signs the text as it now is with `key`.
    pub fn resign(&mut self, key: &Key) -> &mut Self {
        self.remove("Sig");
        let signature = key.sign(&self.fingerprint());
        self.lines.push(("Sig".into(), signature));
        self
    }
}

/// `S/<digest>-<name>` → `<digest>`.
pub fn digest(path: &str) -> &str {
    let base = path.rsplit('/').next().expect("base name");
    base.split_once('-').expect("digest-name").0
}

pub fn narinfo_file(cache: &Path, path: &str) -> PathBuf {
    cache.join(format!("{}.narinfo", digest(path)))
}

pub fn read_narinfo(cache: &Path, path: &str) -> NarInfoText {
    NarInfoText::parse(&std::fs::read_to_string(narinfo_file(cache, path)).expect("read narinfo"))
}

pub fn write_narinfo(cache: &Path, path: &str, info: &NarInfoText) {
    std::fs::write(narinfo_file(cache, path), info.render()).expect("write narinfo");
}

/// Edits the narinfo of `path` in place.
pub fn edit_narinfo(cache: &Path, path: &str, edit: impl FnOnce(&mut NarInfoText)) {
    let mut info = read_narinfo(cache, path);
    edit(&mut info);
    write_narinfo(cache, path, &info);
}

/// The `.nar.zst` file the narinfo of `path` names.
pub fn nar_file(cache: &Path, path: &str) -> PathBuf {
    cache.join(read_narinfo(cache, path).get("URL"))
}

pub fn file_url(dir: &Path) -> String {
    format!("file://{}", dir.to_str().expect("utf-8 path"))
}

pub fn copy_dir(from: &Path, to: &Path) {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.expect("walk");
        let dest = to.join(entry.path().strip_prefix(from).expect("under from"));
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&dest).expect("mkdir");
        } else {
            std::fs::copy(entry.path(), &dest).expect("copy");
        }
    }
}

/// Bytes no compressor can shrink, the same for a given seed (xorshift).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A source store holding `dep` and `app` (which refers to `dep` and holds `blob` bytes of
/// noise), two keys, and the closure of `app` pushed into three caches: signed by `key`,
/// unsigned, and signed by `other` (a key the fetching side does not trust).
pub struct Fixture {
    pub source: Noodle,
    pub key: Key,
    pub other: Key,
    pub dep: String,
    pub app: String,
    pub signed: PathBuf,
    pub unsigned: PathBuf,
    pub untrusted: PathBuf,
}

impl Fixture {
    pub fn new(blob: usize) -> Self {
        let source = Noodle::new();
        let key = Key::generate(&source, "cache.test-1");
        let other = Key::generate(&source, "stranger.test-1");
        let dep = source.add_new_tree("dep");
        let tree = source.scratch("app");
        make_tree(&tree, "app");
        std::fs::write(tree.join("share/dep-path"), format!("{dep}\n")).expect("write");
        std::fs::write(tree.join("share/blob"), noise(blob, 7)).expect("write");
        let app = source.add_with(&tree, &["--scan-references"]);
        assert!(source.references(&app).contains(&dep), "app refers to dep");
        let caches = source.dir.path().join("caches");
        let signed = caches.join("signed");
        let unsigned = caches.join("unsigned");
        let untrusted = caches.join("untrusted");
        for (dir, key) in [
            (&signed, Some(&key)),
            (&unsigned, None),
            (&untrusted, Some(&other)),
        ] {
            let url = file_url(dir);
            match key {
                Some(key) => {
                    let option = format!("secret-key-files={}", key.secret_file.display());
                    source.ok(&["--option", &option, "copy", "--to", &url, &app])
                }
                // The source's noodle.toml does not exist: no secret-key-files at all.
                None => source.ok(&["copy", "--to", &url, &app]),
            };
        }
        assert!(
            read_narinfo(&unsigned, &app)
                .lines
                .iter()
                .all(|(k, _)| k != "Sig"),
            "pushed without keys, the narinfo has no Sig"
        );
        Self {
            source,
            key,
            other,
            dep,
            app,
            signed,
            unsigned,
            untrusted,
        }
    }

    /// A store to fetch into, trusting `keys` (public key texts) and nothing else.
    pub fn target(&self, keys: &[&str]) -> Noodle {
        let target = Noodle::new();
        let list: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
        std::fs::write(
            target.dir.path().join("noodle.toml"),
            format!("trusted-public-keys = [{}]\n", list.join(", ")),
        )
        .expect("write noodle.toml");
        target
    }

    /// A store to fetch into that trusts `key`.
    pub fn trusting_target(&self) -> Noodle {
        self.target(&[&self.key.public])
    }

    /// A fresh copy of the signed cache, named `name`, to damage.
    pub fn copy_of_signed(&self, name: &str) -> PathBuf {
        let dir = self.source.dir.path().join("cases").join(name);
        copy_dir(&self.signed, &dir);
        dir
    }
}

/// How the test HTTP server answers requests for NAR files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Cut {
    /// Whole files.
    No = 0,
    /// Announces the whole length, sends half the body, closes the connection.
    HalfWithLength = 1,
    /// Sends half the body without announcing a length, then closes: a clean end of stream.
    HalfWithoutLength = 2,
}

/// A static HTTP server for a cache directory on 127.0.0.1 (a thread per connection).
pub struct HttpCache {
    pub url: String,
    cut: Arc<AtomicU8>,
    /// The one file (relative to the cache) that `cut` applies to.
    cut_file: Arc<std::sync::Mutex<String>>,
    /// Requests for the cut file (see `set_cut`) answered so far.
    pub cut_requests: Arc<AtomicUsize>,
}

impl HttpCache {
    pub fn serve(dir: &Path) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let server = Self {
            url,
            cut: Arc::new(AtomicU8::new(Cut::No as u8)),
            cut_file: Arc::default(),
            cut_requests: Arc::new(AtomicUsize::new(0)),
        };
        let dir = dir.to_owned();
        let (cut, cut_file, count) = (
            Arc::clone(&server.cut),
            Arc::clone(&server.cut_file),
            Arc::clone(&server.cut_requests),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (dir, cut, cut_file, count) = (
                    dir.clone(),
                    Arc::clone(&cut),
                    Arc::clone(&cut_file),
                    Arc::clone(&count),
                );
                std::thread::spawn(move || answer(stream, &dir, &cut, &cut_file, &count));
            }
        });
        server
    }

    /// Answers requests for `file` (relative to the cache, e.g. `nar/….nar.zst`) as `cut` says.
    pub fn set_cut(&self, cut: Cut, file: &str) {
        *self.cut_file.lock().expect("lock") = file.to_owned();
        self.cut.store(cut as u8, Ordering::SeqCst);
    }
}

fn answer(
    mut stream: std::net::TcpStream,
    dir: &Path,
    cut: &AtomicU8,
    cut_file: &std::sync::Mutex<String>,
    cut_requests: &AtomicUsize,
) {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&request).into_owned();
    let target = head.split_whitespace().nth(1).unwrap_or("/");
    let rel = target.trim_start_matches('/');
    let body = match rel.contains("..") {
        true => None,
        false => std::fs::read(dir.join(rel)).ok(),
    };
    let Some(body) = body else {
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    let cut = match *cut_file.lock().expect("lock") == rel {
        true => {
            cut_requests.fetch_add(1, Ordering::SeqCst);
            cut.load(Ordering::SeqCst)
        }
        false => Cut::No as u8,
    };
    let half = &body[..body.len() / 2];
    let _ = match cut {
        0 => stream
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            )
            .and_then(|()| stream.write_all(&body)),
        1 => stream
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            )
            .and_then(|()| stream.write_all(half)),
        _ => stream
            .write_all(b"HTTP/1.0 200 OK\r\nConnection: close\r\n\r\n")
            .and_then(|()| stream.write_all(half)),
    };
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Both);
}
