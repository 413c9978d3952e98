//! `noodle serve`: this store as a binary cache for its peers (DESIGN.md §10).
//!
//! Three things are served, made on the fly from the store: `cache-info`, `<digest>.narinfo`
//! (signed with the server's keys) and `nar/<digest>-<nar hash>.nar.zst`, the path's NAR
//! dumped and zstd-compressed while it is sent, chunked, so that memory does not grow with
//! the NAR. The NAR URL names the NAR hash: a path replaced since its narinfo was read is a
//! 404, never a different archive under the old name.
//!
//! Each request opens the store afresh, so paths added or collected while the server runs are
//! seen at once. A path collected while its NAR is being sent ends the transfer with an
//! error; the peer checks what it received against the narinfo anyway.

use crate::pipe;
mod route;
mod stream;
#[cfg(test)]
mod tests;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use noodle_store::db::PathInfo;
use noodle_store::nar::NarLayout;
use noodle_store::{Blake3, Store, StoreDir, StoreError};
use tiny_http::{Header, Method, Request, Response, StatusCode};

use crate::error::{CacheError, Result};
use crate::keys::SecretKey;
use crate::narinfo::{CacheInfo, Compression, NarInfo};
use route::{route, Route};

pub struct ServeOptions {
    /// `HOST:PORT`; port 0 picks a free one (see [`Server::local_addr`]).
    pub listen: String,
    /// Each narinfo gets one signature per key, beside those the store already holds.
    pub keys: Vec<SecretKey>,
    pub priority: u32,
    /// Requests handled at once; each NAR being sent also has its compressing thread.
    pub threads: usize,
}

pub struct Server {
    http: tiny_http::Server,
    addr: SocketAddr,
    root: PathBuf,
    store_dir: StoreDir,
    keys: Vec<SecretKey>,
    priority: u32,
    threads: usize,
}

/// How often idle workers look at the stop flag.
const POLL: Duration = Duration::from_millis(200);

/// What a worker tells the log about one request.
struct Served {
    status: u16,
    bytes: u64,
    problem: Option<String>,
}

enum Reply {
    Text {
        status: u16,
        content_type: &'static str,
        body: String,
    },
    Nar {
        layout: Option<NarLayout>,
    },
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes())
        .expect("header names and values here are fixed ASCII")
}

fn text(status: u16, body: impl Into<String>) -> Reply {
    Reply::Text {
        status,
        content_type: "text/plain; charset=utf-8",
        body: body.into(),
    }
}

fn not_found() -> Reply {
    text(404, "not found\n")
}

fn damaged(path: &str, why: String) -> CacheError {
    CacheError::Io(io::Error::other(format!(
        "{path}: {why}: the store copy is damaged; run `noodle store verify --check-contents {path}`"
    )))
}

/// A valid path as the database records it, and where its files are.
struct Found {
    info: PathInfo,
    nar_hash: Blake3,
    physical: PathBuf,
}

impl Server {
    /// Binds `options.listen` and checks that `root` holds a store. Nothing is served until
    /// [`Server::run`].
    pub fn bind(root: &Path, options: ServeOptions) -> Result<Self> {
        let store_dir = Store::open(root, None)?.store_dir().clone();
        let listen = &options.listen;
        let cannot_listen = |why: String| {
            CacheError::Io(io::Error::other(format!(
                "cannot listen on {listen}: {why}; pass another HOST:PORT (port 0 picks a free one)"
            )))
        };
        let http =
            tiny_http::Server::http(listen.as_str()).map_err(|e| cannot_listen(e.to_string()))?;
        let addr = http
            .server_addr()
            .to_ip()
            .ok_or_else(|| cannot_listen("not an IP address".into()))?;
        Ok(Self {
            http,
            addr,
            root: root.to_owned(),
            store_dir,
            keys: options.keys,
            priority: options.priority,
            threads: options.threads.max(1),
        })
    }

    /// The address actually bound (the port chosen when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `stop` is set, `threads` requests at a time, logging one line per request.
    /// NARs still being sent when `stop` is set are cut short.
    pub fn run(&self, stop: &AtomicBool, log: &(dyn Fn(&str) + Sync)) -> Result<()> {
        std::thread::scope(|scope| {
            for _ in 0..self.threads {
                scope.spawn(|| self.work(stop, log));
            }
        });
        Ok(())
    }

    fn work(&self, stop: &AtomicBool, log: &(dyn Fn(&str) + Sync)) {
        while !stop.load(Ordering::Relaxed) {
            let request = match self.http.recv_timeout(POLL) {
                Ok(Some(request)) => request,
                Ok(None) => continue,
                Err(e) => {
                    // A failed accept (out of file descriptors, say): the next may work.
                    log(&format!("accepting a connection failed: {e}"));
                    std::thread::sleep(POLL);
                    continue;
                }
            };
            let started = Instant::now();
            let peer = request
                .remote_addr()
                .map_or_else(|| "-".to_owned(), ToString::to_string);
            // Debug formatting: a URL is the peer's bytes and must not write to the terminal.
            let what = format!("{} {:?}", request.method(), request.url());
            // One bad request must not take a worker away from all the others.
            let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.serve(request, stop)
            }))
            .unwrap_or_else(|_| Served {
                status: 500,
                bytes: 0,
                problem: Some("internal error (panic); the connection was dropped".into()),
            });
            let mut line = format!(
                "{peer} {what} {} {} bytes {} ms",
                served.status,
                served.bytes,
                started.elapsed().as_millis()
            );
            if let Some(problem) = served.problem {
                line.push_str(": ");
                line.push_str(&problem);
            }
            log(&line);
        }
    }

    fn serve(&self, request: Request, stop: &AtomicBool) -> Served {
        let (reply, problem) = match self.reply(&request) {
            Ok(reply) => (reply, None),
            // The peer gets no detail: errors name files of this machine.
            Err(e) => (
                text(500, "internal error; see the server's log\n"),
                Some(e.to_string()),
            ),
        };
        match reply {
            Reply::Text {
                status,
                content_type,
                body,
            } => {
                let bytes = body.len() as u64;
                let mut response = Response::from_string(body)
                    .with_status_code(StatusCode(status))
                    .with_header(header("Content-Type", content_type));
                if status == 405 {
                    response.add_header(header("Allow", "GET, HEAD"));
                }
                let sent = request.respond(response).err().map(|e| e.to_string());
                Served {
                    status,
                    bytes,
                    problem: problem.or(sent),
                }
            }
            Reply::Nar { layout: None } => stream::head_nar(request),
            Reply::Nar {
                layout: Some(layout),
            } => stream::stream_nar(request, &layout, stop),
        }
    }

    fn reply(&self, request: &Request) -> Result<Reply> {
        let head = match request.method() {
            Method::Get => false,
            Method::Head => true,
            _ => return Ok(text(405, "this cache serves GET and HEAD only\n")),
        };
        match route(request.url()) {
            None => Ok(not_found()),
            Some(Route::CacheInfo) => Ok(Reply::Text {
                status: 200,
                content_type: "text/x-nix-cache-info",
                body: CacheInfo {
                    store_dir: self.store_dir.as_str().to_owned(),
                    want_mass_query: true,
                    priority: self.priority,
                }
                .render(),
            }),
            Some(Route::NarInfo { digest }) => Ok(match self.find(digest)? {
                Some(found) => Reply::Text {
                    status: 200,
                    content_type: "text/x-nix-narinfo",
                    body: self.narinfo(digest, &found).render(),
                },
                None => not_found(),
            }),
            Some(Route::Nar {
                digest,
                nar_hash_hex,
            }) => {
                if let Some(refusal) = stream::cannot_stream(request) {
                    return Ok(refusal);
                }
                let Some(found) = self.find(digest)? else {
                    return Ok(not_found());
                };
                if found.nar_hash.to_hex() != nar_hash_hex {
                    return Ok(not_found());
                }
                if head {
                    return Ok(Reply::Nar { layout: None });
                }
                self.layout(digest, &found)
            }
        }
    }

    /// The valid path with this digest, read from a fresh view of the store.
    fn find(&self, digest: &str) -> Result<Option<Found>> {
        let store = Store::open(&self.root, None)?;
        let db = store.db();
        let Some(path) = db.path_by_digest(self.store_dir.as_str(), digest)? else {
            return Ok(None);
        };
        let Some(info) = db.path_info(&path)? else {
            return Ok(None);
        };
        let nar_hash = Blake3::parse(&info.nar_hash).ok_or_else(|| StoreError::DbCorrupt {
            path: db.path().to_owned(),
            detail: format!("{path} has NAR hash {:?}", info.nar_hash),
        })?;
        let physical = store.dirs().physical(&path);
        Ok(Some(Found {
            info,
            nar_hash,
            physical,
        }))
    }

    fn narinfo(&self, digest: &str, found: &Found) -> NarInfo {
        let info = &found.info;
        let mut narinfo = NarInfo {
            store_path: info.path.clone(),
            url: format!("nar/{digest}-{}.nar.zst", found.nar_hash.to_hex()),
            compression: Compression::Zstd,
            // Compressed on the fly: its hash and size are not known until it has been sent.
            file_hash: None,
            file_size: None,
            nar_hash: found.nar_hash,
            nar_size: info.nar_size,
            references: info.references.clone(),
            deriver: info.deriver.clone(),
            ca: info.ca.clone(),
            // Those it came with (from a cache or bundle), then the server's own.
            signatures: info.signatures.clone(),
        };
        let fingerprint = narinfo.fingerprint();
        for key in &self.keys {
            // Ed25519 signatures are deterministic: one already stored by this key is this one.
            let signature = key.sign(&fingerprint);
            if !narinfo.signatures.contains(&signature) {
                narinfo.signatures.push(signature);
            }
        }
        narinfo
    }

    /// The path's NAR layout, refusing a tree that no longer matches what was recorded.
    fn layout(&self, digest: &str, found: &Found) -> Result<Reply> {
        let path = &found.info.path;
        let layout = match NarLayout::of(&found.physical) {
            Ok(layout) => layout,
            // Collected since it was looked up: as if it had never been there.
            Err(_) if self.find(digest)?.is_none() => return Ok(not_found()),
            Err(e) => return Err(damaged(path, format!("its files cannot be read ({e})"))),
        };
        if layout.nar_size() != found.info.nar_size {
            return Err(damaged(
                path,
                format!(
                    "its files make a {}-byte NAR, {} bytes were recorded",
                    layout.nar_size(),
                    found.info.nar_size
                ),
            ));
        }
        Ok(Reply::Nar {
            layout: Some(layout),
        })
    }
}
