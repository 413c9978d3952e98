//! Substitution: fetching closures from binary caches instead of building them.
//!
//! 1. Query: the narinfo of every missing path of the closure, level by level in parallel,
//!    from the caches in the order given; a path is accepted only if a trusted key signed
//!    it and every reference is valid here or fetched too.
//! 2. Download, in parallel and streaming: cache → (file hash) → zstd → NAR hash and size
//!    checks → staging under `var/tmp`. Nothing is registered while anything is unproven.
//! 3. Commit in dependency order. Any failure before this step drops every staged path: a
//!    download cut half-way leaves nothing valid, and running the command again retries.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
use std::time::Duration;

use noodle_store::import::{stage_nar, Expected, Staged};
use noodle_store::{Blake3, Progress, Store, StoreDir};
use rayon::prelude::*;

use crate::error::{CacheError, Result};
use crate::keys::TrustedKeys;
use crate::narinfo::{narinfo_name, CacheInfo, Compression, NarInfo, CACHE_INFO};
use crate::order::dependency_order;
use crate::pipe;
use crate::source::{self, Cache};

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct FetchReport {
    /// Paths fetched and registered, in dependency order.
    pub fetched: Vec<String>,
    /// Paths of the closures that were valid here already.
    pub already_valid: usize,
    pub nar_bytes: u64,
    /// Bytes received (compressed).
    pub file_bytes: u64,
}

/// A path a cache offers, with the narinfo that proved it.
#[derive(Debug, Clone)]
pub struct Offer {
    pub cache: String,
    pub info: NarInfo,
    /// The trusted key that signed it (`None` with `require-sigs = false`).
    pub signed_by: Option<String>,
}

pub struct Substituter {
    caches: Vec<Box<dyn Cache>>,
    trusted: TrustedKeys,
    require_sigs: bool,
    jobs: usize,
}

impl Substituter {
    pub fn new(
        urls: &[String],
        trusted: TrustedKeys,
        require_sigs: bool,
        jobs: usize,
        connect_timeout: Duration,
    ) -> Result<Self> {
        let caches = urls
            .iter()
            .map(|url| source::open(url, connect_timeout))
            .collect::<Result<_>>()?;
        Ok(Self {
            caches,
            trusted,
            require_sigs,
            jobs: jobs.max(1),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.caches.is_empty()
    }

    fn tried(&self) -> String {
        if self.caches.is_empty() {
            return "no substituters are configured: set `substituters` in noodle.toml or pass --from URL".into();
        }
        let urls: Vec<&str> = self.caches.iter().map(|c| c.url()).collect();
        format!("asked {}", urls.join(", "))
    }

    /// The caches that serve this store directory (their `cache-info` says so).
    fn usable(&self, store_dir: &str) -> Result<Vec<&dyn Cache>> {
        let mut usable = Vec::new();
        let mut problems = Vec::new();
        for cache in &self.caches {
            let info = cache.get_text(CACHE_INFO).and_then(|text| match text {
                Some(text) => CacheInfo::parse(cache.url(), &text),
                None => {
                    Err(cache.transport("it has no cache-info: not a binary cache (check the URL)"))
                }
            });
            match info {
                Ok(info) if info.store_dir == store_dir => usable.push(cache.as_ref()),
                Ok(info) => problems.push(cache.transport(&format!(
                    "it serves store directory {}, this store's is {store_dir}",
                    info.store_dir
                ))),
                Err(e) => problems.push(e),
            }
        }
        match (usable.is_empty(), problems.into_iter().next()) {
            (true, Some(problem)) => Err(problem),
            _ => Ok(usable),
        }
    }

    /// The first cache, in order, that has `path` signed by a trusted key.
    fn query(
        &self,
        caches: &[&dyn Cache],
        store_dir: &StoreDir,
        path: &str,
    ) -> Result<Option<Offer>> {
        let parsed = store_dir
            .parse_path(path)
            .map_err(noodle_store::StoreError::from)?;
        let name = narinfo_name(&parsed);
        let mut refused = None;
        for cache in caches {
            let url = format!("{}/{name}", cache.url());
            let text = match cache.get_text(&name) {
                Ok(Some(text)) => text,
                Ok(None) => continue,
                Err(CacheError::NotText { .. }) => {
                    return Err(CacheError::NarInfo {
                        url,
                        why: "it is not UTF-8 text".into(),
                    })
                }
                Err(e) => return Err(e),
            };
            let info = NarInfo::parse(&url, &text, store_dir)?;
            if info.store_path != path {
                return Err(CacheError::NarInfo {
                    url,
                    why: format!("it describes {}, not {path}", info.store_path),
                });
            }
            let signed_by = match self
                .trusted
                .check(path, &info.fingerprint(), &info.signatures)
            {
                Ok(key) => Some(key),
                Err(_) if !self.require_sigs => None,
                Err(CacheError::Untrusted { why, .. }) => {
                    refused.get_or_insert(CacheError::Untrusted {
                        path: path.to_owned(),
                        why: format!("{why} (from {})", cache.url()),
                    });
                    continue;
                }
                Err(e) => return Err(e),
            };
            return Ok(Some(Offer {
                cache: cache.url().to_owned(),
                info,
                signed_by,
            }));
        }
        refused.map_or(Ok(None), Err)
    }

    /// Which of `paths` (not valid here) the caches offer, each with its missing closure;
    /// fails naming the first path no cache offers.
    pub fn plan(&self, store: &Store, paths: &[String]) -> Result<Vec<Offer>> {
        let caches = self.usable(store.store_dir().as_str())?;
        let store_dir = store.store_dir().clone();
        let mut seen: HashSet<String> = HashSet::new();
        let mut frontier: Vec<(String, Option<String>)> = Vec::new();
        for path in paths {
            store.parse_path(path)?;
            if !store.db().is_valid(path)? && seen.insert(path.clone()) {
                frontier.push((path.clone(), None));
            }
        }
        let mut offers = Vec::new();
        while !frontier.is_empty() {
            let found: Vec<Result<Option<Offer>>> = self.pool()?.install(|| {
                frontier
                    .par_iter()
                    .map(|(path, _)| self.query(&caches, &store_dir, path))
                    .collect()
            });
            let mut next = Vec::new();
            for ((path, referrer), found) in frontier.iter().zip(found) {
                let Some(offer) = found? else {
                    let path = match referrer {
                        Some(referrer) => {
                            format!("{path} (a reference of {referrer}, not valid here)")
                        }
                        None => path.clone(),
                    };
                    return Err(CacheError::NotFound {
                        path,
                        tried: self.tried(),
                    });
                };
                for reference in &offer.info.references {
                    if reference != path
                        && !store.db().is_valid(reference)?
                        && seen.insert(reference.clone())
                    {
                        next.push((reference.clone(), Some(path.clone())));
                    }
                }
                offers.push(offer);
            }
            frontier = next;
        }
        Ok(offers)
    }

    fn pool(&self) -> Result<rayon::ThreadPool> {
        rayon::ThreadPoolBuilder::new()
            .num_threads(self.jobs)
            .build()
            .map_err(|e| CacheError::Io(io::Error::other(e.to_string())))
    }

    /// Fetches the closures of `paths` and registers them; nothing is registered unless
    /// every missing path was received whole and proven.
    pub fn fetch(
        &self,
        store: &mut Store,
        paths: &[String],
        progress: &dyn Progress,
        on_fetched: &dyn Fn(&Offer),
    ) -> Result<FetchReport> {
        let offers = self.plan(store, paths)?;
        let mut report = self.fetch_offers(store, offers, progress, on_fetched)?;
        for path in paths {
            report.already_valid += store.db().closure(path, false).map_or(0, |c| c.len());
        }
        report.already_valid -= report.fetched.len().min(report.already_valid);
        Ok(report)
    }

    /// Downloads planned offers (a closure's missing paths) and registers them.
    fn fetch_offers(
        &self,
        store: &mut Store,
        offers: Vec<Offer>,
        progress: &dyn Progress,
        on_fetched: &dyn Fn(&Offer),
    ) -> Result<FetchReport> {
        let mut report = FetchReport::default();
        let total = offers.iter().map(|o| o.info.nar_size).sum();
        progress.phase("fetching", total);
        let dirs = store.dirs().clone();
        let caches: HashMap<&str, &dyn Cache> =
            self.caches.iter().map(|c| (c.url(), c.as_ref())).collect();
        let staged: Vec<(Staged, u64)> = self.pool()?.install(|| {
            offers
                .par_iter()
                .map(|offer| download(&dirs, caches[offer.cache.as_str()], offer, progress))
                .collect::<Result<_>>()
        })?;
        progress.finish();
        let mut staged: HashMap<String, (Staged, u64)> = staged
            .into_iter()
            .map(|(s, bytes)| (s.expected().path.clone(), (s, bytes)))
            .collect();
        let by_path: HashMap<&str, &Offer> = offers
            .iter()
            .map(|o| (o.info.store_path.as_str(), o))
            .collect();
        let order = dependency_order(
            offers
                .iter()
                .map(|o| (o.info.store_path.clone(), o.info.references.clone())),
        );
        let mut ordered = Vec::with_capacity(order.len());
        for path in &order {
            let (one, file_bytes) = staged.remove(path).expect("every offer was staged");
            report.file_bytes += file_bytes;
            ordered.push(one);
        }
        store.commit_all(ordered)?;
        for path in order {
            let offer = by_path[path.as_str()];
            report.nar_bytes += offer.info.nar_size;
            on_fetched(offer);
            report.fetched.push(path);
        }
        Ok(report)
    }

    /// Restores valid paths whose files are damaged or gone with a good copy from a cache,
    /// each swapped in atomically. Returns what happened to each path.
    pub fn repair(
        &self,
        store: &mut Store,
        paths: &[String],
        progress: &dyn Progress,
    ) -> Vec<(String, Result<()>)> {
        let caches = match self.usable(store.store_dir().as_str()) {
            Ok(caches) => caches,
            Err(e) => {
                let why = e.to_string();
                return paths
                    .iter()
                    .map(|p| {
                        (
                            p.clone(),
                            Err(CacheError::Transport {
                                url: self.tried(),
                                why: why.clone(),
                            }),
                        )
                    })
                    .collect();
            }
        };
        let dirs = store.dirs().clone();
        let mut results = Vec::new();
        for path in paths {
            let result = (|| -> Result<()> {
                let recorded = store
                    .db()
                    .path_info(path)?
                    .ok_or_else(|| noodle_store::StoreError::NotValid(path.clone()))?;
                let offer = self
                    .query(&caches, store.store_dir(), path)?
                    .ok_or_else(|| CacheError::NotFound {
                        path: path.clone(),
                        tried: self.tried(),
                    })?;
                if offer.info.nar_hash.to_string() != recorded.nar_hash {
                    return Err(CacheError::Mismatch {
                        path: path.clone(),
                        url: offer.cache.clone(),
                        what: "NAR hash (the cache's copy is not the registered one)",
                        expected: recorded.nar_hash,
                        actual: offer.info.nar_hash.to_string(),
                    });
                }
                let cache = caches
                    .iter()
                    .find(|c| c.url() == offer.cache)
                    .expect("the offer came from one of these caches");
                progress.phase("fetching", offer.info.nar_size);
                let (staged, _) = download(&dirs, *cache, &offer, progress)?;
                progress.finish();
                store.replace_damaged(staged)?;
                Ok(())
            })();
            results.push((path.clone(), result));
        }
        results
    }
}

/// Streams one NAR from its cache into staging; returns it and the bytes received.
fn download(
    dirs: &noodle_store::dirs::StoreDirs,
    cache: &dyn Cache,
    offer: &Offer,
    progress: &dyn Progress,
) -> Result<(Staged, u64)> {
    let info = &offer.info;
    let url = format!("{}/{}", cache.url(), info.url);
    let body = cache.get(&info.url)?.ok_or_else(|| CacheError::Transport {
        url: url.clone(),
        why: format!(
            "{}: its narinfo names this file but the cache does not have it (an incomplete cache)",
            info.store_path
        ),
    })?;
    let received = CountingReader {
        inner: body,
        hasher: blake3::Hasher::new(),
        read: 0,
        cut: false,
    };
    let expected = Expected {
        path: info.store_path.clone(),
        nar_hash: info.nar_hash,
        nar_size: info.nar_size,
        references: info.references.clone(),
        ca: info.ca.clone(),
        deriver: info.deriver.clone(),
        signatures: info.signatures.clone(),
    };
    let advance = |n| progress.advance(n);
    // Decompression runs on its own thread, beside the unpacking and hashing: a large NAR
    // then uses two cores instead of waiting on one.
    let never = std::sync::atomic::AtomicBool::new(false);
    let (staged, received) = std::thread::scope(|scope| {
        let (mut writer, mut reader) = pipe::pipe(&never);
        let compression = info.compression;
        let decoding = scope.spawn(move || {
            let mut received = received;
            let copied = match compression {
                Compression::Zstd => zstd::Decoder::new(&mut received)
                    .and_then(|mut decoder| io::copy(&mut decoder, &mut writer)),
                Compression::None => io::copy(&mut received, &mut writer),
            };
            // Reading to the end also reads the frame's checksum (after the archive's last
            // byte) and whatever follows it, which the archive's parser then refuses.
            match copied {
                Ok(_) => {
                    let _ = writer.finish();
                }
                Err(e) => writer.fail(e),
            }
            received
        });
        let staged = stage_nar(dirs, &mut reader, expected, &advance).map_err(|e| e.to_string());
        drop(reader);
        let received = decoding
            .join()
            .map_err(|_| "the decompressing thread panicked".to_owned());
        (staged, received)
    });
    let mut received = match received {
        Ok(received) => received,
        Err(why) => return Err(CacheError::Io(io::Error::other(why))),
    };
    // A read that failed below the decoder is the connection's fault (retry); anything else
    // is what the cache sent (refused).
    let failed = |why: String, cut: bool| {
        let why = match why.starts_with(&info.store_path) {
            true => why,
            false => format!("{}: {why}", info.store_path),
        };
        match cut {
            true => CacheError::Transport {
                url: url.clone(),
                why: format!("{why}; the download was cut: run the command again to retry"),
            },
            false => CacheError::Corrupt {
                url: url.clone(),
                why,
            },
        }
    };
    let staged = staged.map_err(|why| failed(why, received.cut))?;
    io::copy(&mut received, &mut io::sink()).map_err(|e| failed(e.to_string(), received.cut))?;
    let file_hash = Blake3::from(received.hasher.finalize());
    if let Some(size) = info.file_size.filter(|size| *size != received.read) {
        return Err(CacheError::Mismatch {
            path: info.store_path.clone(),
            url,
            what: "file size",
            expected: size.to_string(),
            actual: received.read.to_string(),
        });
    }
    if let Some(hash) = info.file_hash.filter(|hash| *hash != file_hash) {
        return Err(CacheError::Mismatch {
            path: info.store_path.clone(),
            url,
            what: "file hash",
            expected: hash.to_string(),
            actual: file_hash.to_string(),
        });
    }
    Ok((staged, received.read))
}

/// Hashes and counts the compressed bytes received.
struct CountingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
    read: u64,
    /// Reading from the cache itself failed (as opposed to what was read being wrong).
    cut: bool,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf).inspect_err(|_| self.cut = true)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// `store verify --repair` restores damaged and missing paths through the substituters.
impl noodle_store::Restore for Substituter {
    fn origin(&self) -> String {
        let urls: Vec<&str> = self.caches.iter().map(|c| c.url()).collect();
        urls.join(", ")
    }

    fn restore(&self, store: &mut Store, path: &str) -> std::result::Result<(), String> {
        let mut results = self.repair(store, &[path.to_owned()], &noodle_store::Silent);
        match results.pop() {
            Some((_, result)) => result.map_err(|e| e.to_string()),
            None => Err("nothing was tried".into()),
        }
    }
}

/// Builds ask the substituters first; what no cache offers (or what fails) is built.
impl noodle_store::Substitute for Substituter {
    fn origin(&self) -> String {
        noodle_store::Restore::origin(self)
    }

    fn substitute(&self, store: &mut Store, paths: &[String], warn: &dyn Fn(&str)) -> Vec<String> {
        // Each path planned on its own, so one that no cache has does not keep the others out.
        let mut available = Vec::new();
        let mut offers: HashMap<String, Offer> = HashMap::new();
        for path in paths {
            match self.plan(store, std::slice::from_ref(path)) {
                Ok(planned) => {
                    available.push(path.clone());
                    for offer in planned {
                        offers.insert(offer.info.store_path.clone(), offer);
                    }
                }
                Err(CacheError::NotFound { .. }) => {}
                Err(e) => warn(&format!("{e}; building it instead")),
            }
        }
        if available.is_empty() {
            return Vec::new();
        }
        let offers = offers.into_values().collect();
        match self.fetch_offers(store, offers, &noodle_store::Silent, &|_| {}) {
            Ok(_) => available,
            Err(e) => {
                warn(&format!("{e}; building instead"));
                Vec::new()
            }
        }
    }
}
