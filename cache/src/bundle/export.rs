//! Writing a bundle: the closure of some paths, in dependency order, each NAR streamed from
//! the store straight into the compressed archive (nothing is held in memory whole).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use fs_err::os::unix::fs::OpenOptionsExt;
use noodle_store::db::PathInfo;
use noodle_store::nar::layout::{LayoutError, RangeReader};
use noodle_store::nar::NarLayout;
use noodle_store::{Blake3, Progress, Store, StoreError};

use super::{
    manifest_fingerprint, nar_entry, ExportReport, Manifest, ManifestPath, MANIFEST, SIGNATURES,
    VERSION,
};
use crate::error::{CacheError, Result};
use crate::keys::{self, SecretKey};
use crate::order::dependency_order;

/// zstd's default level: fast enough to keep up with reading the store.
const ZSTD_LEVEL: i32 = 3;
/// How much of a NAR is produced per read of the store's files.
const READ_BUFFER: usize = 256 * 1024;

/// Writes the closure of `paths` to `out` as a bundle, signed by each of `keys` (the
/// manifest, and each path's fingerprint). `out` appears complete or not at all.
pub fn export(
    store: &Store,
    paths: &[String],
    keys: &[SecretKey],
    out: &Path,
    progress: &dyn Progress,
) -> Result<ExportReport> {
    let infos = closure_in_order(store, paths)?;
    let listed = infos
        .iter()
        .map(|info| manifest_path(info, keys))
        .collect::<Result<Vec<_>>>()?;
    let manifest = Manifest {
        version: VERSION,
        store_dir: store.store_dir().as_str().to_owned(),
        paths: listed,
    };
    let mut manifest = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| io::Error::other(format!("cannot serialise the bundle manifest: {e}")))?;
    manifest.push(b'\n');
    let fingerprint = manifest_fingerprint(&manifest);
    let signatures: String = keys
        .iter()
        .map(|key| format!("{}\n", key.sign(&fingerprint)))
        .collect();
    let nar_bytes = infos.iter().map(|info| info.nar_size).sum();
    progress.phase("exporting", nar_bytes);
    let written = write_bundle(
        store,
        &infos,
        &manifest,
        signatures.as_bytes(),
        out,
        progress,
    );
    progress.finish();
    Ok(ExportReport {
        paths: infos.len(),
        nar_bytes,
        file_bytes: written?,
    })
}

/// The closure of `roots`, each path after everything it refers to (the order an importer
/// can register them in), ties broken by name so the same closure gives the same bundle.
fn closure_in_order(store: &Store, roots: &[String]) -> Result<Vec<PathInfo>> {
    let mut closure = BTreeSet::new();
    for root in roots {
        let path = store.valid_path(root)?;
        closure.extend(store.db().closure(&store.logical(&path), false)?);
    }
    let mut infos = BTreeMap::new();
    for path in closure {
        let info = store
            .db()
            .path_info(&path)?
            .ok_or_else(|| StoreError::NotValid(path.clone()))?;
        infos.insert(path, info);
    }
    let order = dependency_order(
        infos
            .values()
            .map(|info| (info.path.clone(), info.references.clone())),
    );
    Ok(order.iter().filter_map(|path| infos.remove(path)).collect())
}

fn damaged(path: &str, why: impl std::fmt::Display) -> CacheError {
    CacheError::Export {
        path: path.to_owned(),
        why: format!(
            "{why}; the path is damaged in this store: run `noodle store verify --check-contents` to see what is wrong (and --repair to fix it)"
        ),
    }
}

/// The manifest's record of one path. Signatures by `keys` replace older ones by the same
/// key names, so a re-export with a key does not pile up copies.
fn manifest_path(info: &PathInfo, keys: &[SecretKey]) -> Result<ManifestPath> {
    let nar_hash = Blake3::parse(&info.nar_hash).ok_or_else(|| {
        damaged(
            &info.path,
            format!(
                "the database records a malformed NAR hash '{}'",
                info.nar_hash
            ),
        )
    })?;
    let mut references = info.references.clone();
    references.sort();
    let fingerprint = keys::fingerprint(&info.path, &nar_hash, info.nar_size, &references);
    let by_our_keys = |signature: &String| {
        let name = signature.split_once(':').map(|(name, _)| name);
        keys.iter().any(|key| Some(key.name()) == name)
    };
    let mut signatures: Vec<String> = info
        .signatures
        .iter()
        .filter(|s| !by_our_keys(s))
        .cloned()
        .collect();
    signatures.extend(keys.iter().map(|key| key.sign(&fingerprint)));
    Ok(ManifestPath {
        path: info.path.clone(),
        nar_hash: nar_hash.to_string(),
        nar_size: info.nar_size,
        references,
        ca: info.ca.clone(),
        deriver: info.deriver.clone(),
        signatures,
    })
}

/// A file being written next to its destination; removed unless it was renamed into place.
struct TempFile {
    path: PathBuf,
    renamed: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = fs_err::remove_file(&self.path);
        }
    }
}

fn parent_of(out: &Path) -> &Path {
    match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Writes the bundle to a temporary file beside `out`, syncs it and renames it into place.
/// Returns the size of the file.
fn write_bundle(
    store: &Store,
    infos: &[PathInfo],
    manifest: &[u8],
    signatures: &[u8],
    out: &Path,
    progress: &dyn Progress,
) -> Result<u64> {
    let name = out.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "'{}' does not name a file to write the bundle to",
                out.display()
            ),
        )
    })?;
    let parent = parent_of(out);
    let mut temp = TempFile {
        path: parent.join(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        )),
        renamed: false,
    };
    let file = fs_err::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&temp.path)?;
    let mut encoder = zstd::Encoder::new(file, ZSTD_LEVEL)?;
    // A flipped bit anywhere in the frame is then caught on import, before anything is used.
    encoder.include_checksum(true)?;
    // Compression is the slow step of an export: it runs on every core, beside the reading.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    encoder.multithread(threads as u32)?;
    let mut tar = tar::Builder::new(encoder);
    tar.append_data(&mut header(manifest.len() as u64), MANIFEST, manifest)?;
    tar.append_data(&mut header(signatures.len() as u64), SIGNATURES, signatures)?;
    for info in infos {
        append_nar(&mut tar, store, info, progress)?;
    }
    let file = tar.into_inner()?.finish()?;
    file.sync_all()?;
    let size = file.metadata()?.len();
    drop(file);
    fs_err::rename(&temp.path, out)?;
    temp.renamed = true;
    noodle_store::sync::fsync_dir(parent)?;
    Ok(size)
}

/// A plain, read-only, ownerless entry: nothing in it depends on who exported it when.
fn header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o444);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header
}

/// Streams one path's NAR into the archive, checking it is the NAR the database records: a
/// damaged path is refused here rather than shipped to fail on every machine it reaches.
fn append_nar<W: Write>(
    tar: &mut tar::Builder<W>,
    store: &Store,
    info: &PathInfo,
    progress: &dyn Progress,
) -> Result<()> {
    let path = store.parse_path(&info.path)?;
    let layout = NarLayout::of(&store.physical(&path)).map_err(|e| damaged(&info.path, e))?;
    if layout.nar_size() != info.nar_size {
        return Err(damaged(
            &info.path,
            format!(
                "its files make a NAR of {} bytes, the database records {}",
                layout.nar_size(),
                info.nar_size
            ),
        ));
    }
    let mut nar = NarReader {
        range: layout.reader(),
        offset: 0,
        size: info.nar_size,
        hasher: blake3::Hasher::new(),
        progress,
        failure: None,
    };
    let appended = tar.append_data(
        &mut header(info.nar_size),
        nar_entry(path.digest()),
        BufReader::with_capacity(READ_BUFFER, &mut nar),
    );
    if let Some(failure) = nar.failure.take() {
        return Err(damaged(&info.path, failure));
    }
    appended?;
    let hash = Blake3::from(nar.hasher.finalize());
    if hash.to_string() != info.nar_hash {
        return Err(damaged(
            &info.path,
            format!(
                "its files have NAR hash {hash}, the database records {}",
                info.nar_hash
            ),
        ));
    }
    Ok(())
}

/// The bytes of a NAR, produced from the store's files at increasing offsets and hashed on
/// the way. Stops at `size`, which was checked to be the layout's size.
struct NarReader<'a> {
    range: RangeReader<'a>,
    offset: u64,
    size: u64,
    hasher: blake3::Hasher,
    progress: &'a dyn Progress,
    /// Why reading the store failed (the tar writer only passes on an `io::Error`).
    failure: Option<LayoutError>,
}

impl Read for NarReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.size - self.offset;
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if n == 0 {
            return Ok(0);
        }
        if let Err(e) = self.range.fill(self.offset, &mut buf[..n]) {
            let message = e.to_string();
            self.failure = Some(e);
            return Err(io::Error::other(message));
        }
        self.hasher.update(&buf[..n]);
        self.offset += n as u64;
        self.progress.advance(n as u64);
        Ok(n)
    }
}
