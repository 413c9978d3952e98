//! `noodle copy --to file:///dir`: closures into a static binary cache.
//!
//! Each path's NAR is dumped, hashed (a damaged path is refused, not published), compressed
//! and written to a temporary file named after its own hash once complete; the narinfos are
//! written last, in dependency order, so a narinfo never names a NAR or a reference that a
//! reader cannot fetch yet. Paths already in the cache are left alone.

use std::io::{self, Write};

use noodle_store::nar::{dump, NarLayout};
use noodle_store::{Blake3, Progress, Store};
use rayon::prelude::*;

use crate::error::{CacheError, Result};
use crate::keys::SecretKey;
use crate::narinfo::{narinfo_name, CacheInfo, Compression, NarInfo, CACHE_INFO};
use crate::order::dependency_order;
use crate::source::{Cache, FileCache};

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PushReport {
    /// Paths written to the cache, in dependency order.
    pub pushed: Vec<String>,
    /// Paths of the closure the cache had already.
    pub already_there: usize,
    pub nar_bytes: u64,
    /// Compressed bytes written.
    pub file_bytes: u64,
}

/// NARs above this size are compressed with several threads.
const MULTITHREAD_ABOVE: u64 = 8 << 20;
pub const ZSTD_LEVEL: i32 = 3;

/// Pushes the closures of `paths` into the cache, signing each narinfo with `keys`.
pub fn push(
    store: &Store,
    cache: &FileCache,
    paths: &[String],
    keys: &[SecretKey],
    progress: &dyn Progress,
    on_pushed: &(dyn Fn(&NarInfo) + Sync),
) -> Result<PushReport> {
    cache.create()?;
    ensure_cache_info(store, cache)?;
    let mut closure = Vec::new();
    for path in paths {
        closure.extend(store.db().closure(path, false)?);
    }
    closure.sort();
    closure.dedup();
    let mut infos = Vec::new();
    let mut report = PushReport::default();
    for path in &closure {
        let parsed = store.parse_path(path)?;
        if cache.exists(&narinfo_name(&parsed)) {
            report.already_there += 1;
            continue;
        }
        let info = store
            .db()
            .path_info(path)?
            .ok_or_else(|| noodle_store::StoreError::NotValid(path.clone()))?;
        infos.push(info);
    }
    let total = infos.iter().map(|i| i.nar_size).sum();
    progress.phase("pushing", total);
    let dirs = store.dirs();
    let written: Vec<NarInfo> = infos
        .par_iter()
        .map(|info| write_nar(dirs, cache, info, progress))
        .collect::<Result<_>>()?;
    progress.finish();
    cache.sync_dirs()?;

    let order = dependency_order(
        written
            .iter()
            .map(|n| (n.store_path.clone(), n.references.clone())),
    );
    let mut by_path: std::collections::HashMap<String, NarInfo> = written
        .into_iter()
        .map(|n| (n.store_path.clone(), n))
        .collect();
    for path in order {
        let mut info = by_path
            .remove(&path)
            .expect("the order lists the written paths");
        let fingerprint = info.fingerprint();
        for key in keys {
            let signature = key.sign(&fingerprint);
            if !info.signatures.contains(&signature) {
                info.signatures.push(signature);
            }
        }
        let parsed = store.parse_path(&path)?;
        cache.put(&narinfo_name(&parsed), |out| {
            Ok(out.write_all(info.render().as_bytes())?)
        })?;
        report.nar_bytes += info.nar_size;
        report.file_bytes += info.file_size.unwrap_or(0);
        on_pushed(&info);
        report.pushed.push(path);
    }
    cache.sync_dirs()?;
    Ok(report)
}

/// Writes `cache-info` for a new cache; refuses a cache made for another store directory.
fn ensure_cache_info(store: &Store, cache: &FileCache) -> Result<()> {
    let ours = store.store_dir().as_str();
    match cache.get_text(CACHE_INFO)? {
        Some(text) => {
            let info = CacheInfo::parse(cache.url(), &text)?;
            if info.store_dir != ours {
                return Err(CacheError::Transport {
                    url: cache.url().to_owned(),
                    why: format!(
                        "this cache holds paths of store directory {}, this store's is {ours}: use another cache directory",
                        info.store_dir
                    ),
                });
            }
            Ok(())
        }
        None => {
            let info = CacheInfo {
                store_dir: ours.to_owned(),
                want_mass_query: true,
                priority: 40,
            };
            cache.put(CACHE_INFO, |out| {
                Ok(out.write_all(info.render().as_bytes())?)
            })
        }
    }
}

/// Dumps, checks, compresses and writes one NAR; returns its (unsigned) narinfo.
fn write_nar(
    dirs: &noodle_store::dirs::StoreDirs,
    cache: &FileCache,
    info: &noodle_store::db::PathInfo,
    progress: &dyn Progress,
) -> Result<NarInfo> {
    let physical = dirs.physical(&info.path);
    let layout = NarLayout::of(&physical).map_err(noodle_store::StoreError::from)?;
    let damaged = |why: String| {
        CacheError::Transport {
        url: info.path.clone(),
        why: format!("{why}: the path is damaged in this store and is not published; run `noodle store verify --check-contents --repair`"),
    }
    };
    if layout.nar_size() != info.nar_size {
        return Err(damaged(format!(
            "its NAR size is {}, {} was recorded",
            layout.nar_size(),
            info.nar_size
        )));
    }
    let (nar_hash, file_hash, file_size) = cache.put_as(
        |out| {
            let mut counted = HashingWriter::new(out);
            let mut encoder = zstd::Encoder::new(&mut counted, ZSTD_LEVEL)?;
            encoder.include_checksum(true)?;
            if info.nar_size > MULTITHREAD_ABOVE {
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                encoder.multithread(threads as u32)?;
            }
            let mut nar = HashingWriter::new(encoder);
            {
                let mut reporting = Reporting {
                    inner: &mut nar,
                    progress,
                };
                dump(&layout, &mut reporting).map_err(noodle_store::StoreError::from)?;
            }
            let nar_hash = nar.digest();
            nar.into_inner().finish()?;
            Ok((nar_hash, counted.digest(), counted.written))
        },
        |(_, file_hash, _)| format!("nar/{}.nar.zst", file_hash.to_hex()),
    )?;
    if nar_hash.to_string() != info.nar_hash {
        return Err(damaged(format!(
            "its NAR hash is {nar_hash}, {} was recorded",
            info.nar_hash
        )));
    }
    Ok(NarInfo {
        store_path: info.path.clone(),
        url: format!("nar/{}.nar.zst", file_hash.to_hex()),
        compression: Compression::Zstd,
        file_hash: Some(file_hash),
        file_size: Some(file_size),
        nar_hash,
        nar_size: info.nar_size,
        references: info.references.clone(),
        deriver: info.deriver.clone(),
        ca: info.ca.clone(),
        signatures: info.signatures.clone(),
    })
}

/// Passes bytes on, hashing and counting them.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
    pub(crate) written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: blake3::Hasher::new(),
            written: 0,
        }
    }

    pub(crate) fn digest(&self) -> Blake3 {
        Blake3::from(self.hasher.finalize())
    }

    pub(crate) fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Advances the progress bar by the NAR bytes written through it.
struct Reporting<'a, W> {
    inner: &'a mut W,
    progress: &'a dyn Progress,
}

impl<W: Write> Write for Reporting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
