//! Reading a bundle: one pass over the compressed archive, every entry mapped to a checked
//! action (never unpacked by the tar reader), every NAR staged and hash-checked, and only
//! when all of it is proven are the paths registered.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
use std::path::Path;

use noodle_store::import::{stage_nar, Expected};
use noodle_store::{Blake3, Progress, Store};
use tar::EntryType;

use super::listing::{check_paths, outside_references, Listed};
use super::{
    manifest_fingerprint, nar_entry, ImportReport, Manifest, MANIFEST, SIGNATURES, VERSION,
};
use crate::error::{CacheError, Result};
use crate::keys::TrustedKeys;

/// A manifest is a few hundred bytes per path; this is far beyond any real closure.
const MAX_MANIFEST: u64 = 64 << 20;
const MAX_SIGNATURES: u64 = 1 << 20;
const HASH_BUFFER: usize = 256 * 1024;

/// Imports the paths of the bundle at `file` that are not valid yet. The manifest must carry
/// a signature by one of `trusted` unless `require_sigs` is false. A bundle that is wrong in
/// any way is refused whole (`CacheError::Bundle`): nothing registered, nothing left in the
/// store's `var/tmp`. Only a failure of the store itself while committing (a full disk) can
/// leave part of the closure in: each committed path then is complete, with its references.
pub fn import(
    store: &mut Store,
    file: &Path,
    trusted: &TrustedKeys,
    require_sigs: bool,
    progress: &dyn Progress,
) -> Result<ImportReport> {
    let result = read_and_commit(store, file, trusted, require_sigs, progress);
    progress.finish();
    result
}

fn read_and_commit(
    store: &mut Store,
    file: &Path,
    trusted: &TrustedKeys,
    require_sigs: bool,
    progress: &dyn Progress,
) -> Result<ImportReport> {
    let mut reading = Reading {
        file,
        store,
        trusted,
        require_sigs,
        progress,
        seen: HashSet::new(),
        listing: None,
    };
    let input = fs_err::File::open(file)?;
    let decoder = zstd::Decoder::new(input).map_err(|e| reading.damaged(e))?;
    let mut archive = tar::Archive::new(decoder);
    // Raw: extension records (long names, pax headers) are entries of their own, refused
    // like any other non-file, instead of being read into memory and applied.
    for entry in archive.entries().map_err(|e| reading.damaged(e))?.raw(true) {
        let mut entry = entry.map_err(|e| reading.damaged(e))?;
        reading.entry(&mut entry)?;
    }
    // The tar reader stops at the end-of-archive block: reading the rest lets zstd check the
    // frame's checksum, and shows anything hidden after the archive.
    let mut rest = archive.into_inner();
    let mut buf = vec![0; HASH_BUFFER];
    loop {
        let n = rest.read(&mut buf).map_err(|e| reading.damaged(e))?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|b| *b != 0) {
            return Err(reading.refuse("there is data after the end of the tar archive"));
        }
    }
    let (listing, store) = reading.finish()?;
    let mut report = ImportReport {
        paths: Vec::new(),
        already_valid: 0,
        signed_by: listing.signed_by,
    };
    // Dependency order (checked with the manifest): each path's references are in already.
    let mut staged = Vec::new();
    for listed in listing.paths {
        match listed.staged {
            Some(one) => staged.push(one),
            None => {
                // Valid when the bundle was read, and protected since: still valid.
                store.valid_path(&listed.expected.path)?;
                report.already_valid += 1;
            }
        }
    }
    for added in store.commit_all(staged)? {
        match added.added {
            true => report.paths.push(added.path),
            false => report.already_valid += 1,
        }
    }
    Ok(report)
}

/// What the manifest said, and what has been proven of it so far.
struct Listing {
    fingerprint: String,
    paths: Vec<Listed>,
    by_digest: HashMap<String, usize>,
    signatures_checked: bool,
    signed_by: Option<String>,
}

struct Reading<'a> {
    file: &'a Path,
    store: &'a mut Store,
    trusted: &'a TrustedKeys,
    require_sigs: bool,
    progress: &'a dyn Progress,
    seen: HashSet<Vec<u8>>,
    listing: Option<Listing>,
}

fn shown(name: &[u8]) -> String {
    String::from_utf8_lossy(name).escape_debug().to_string()
}

fn describe(kind: EntryType) -> String {
    match kind {
        EntryType::Symlink => "a symbolic link".into(),
        EntryType::Link => "a hard link".into(),
        EntryType::Char => "a character device".into(),
        EntryType::Block => "a block device".into(),
        EntryType::Fifo => "a fifo (named pipe)".into(),
        EntryType::Directory => "a directory".into(),
        EntryType::GNULongName | EntryType::GNULongLink => "a GNU long-name record".into(),
        EntryType::XHeader | EntryType::XGlobalHeader => "a pax extended header".into(),
        EntryType::GNUSparse => "a sparse file".into(),
        other => format!("of tar type '{}'", other.as_byte().escape_ascii()),
    }
}

/// Reads all of `entry`, which must hold at most `limit` bytes.
fn read_small(entry: &mut dyn Read, limit: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    entry.take(limit).read_to_end(&mut bytes)?;
    Ok(bytes)
}

impl<'a> Reading<'a> {
    fn refuse(&self, why: impl Into<String>) -> CacheError {
        CacheError::Bundle {
            file: self.file.to_owned(),
            why: why.into(),
        }
    }

    fn damaged(&self, e: io::Error) -> CacheError {
        self.refuse(format!("the file is damaged or not a noodle bundle ({e})"))
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let bytes = entry.path_bytes().into_owned();
        let name = shown(&bytes);
        if bytes.starts_with(b"/") || bytes.split(|b| *b == b'/').any(|c| c == b"..") {
            return Err(self.refuse(format!(
                "entry '{name}' has an absolute name or one with '..' (path traversal): refused"
            )));
        }
        let kind = entry.header().entry_type();
        if kind != EntryType::Regular {
            return Err(self.refuse(format!(
                "entry '{name}' is {}; a bundle holds only regular files",
                describe(kind)
            )));
        }
        let mode = entry
            .header()
            .mode()
            .map_err(|e| self.refuse(format!("entry '{name}' has an unreadable mode ({e})")))?;
        if mode & 0o7000 != 0 {
            return Err(self.refuse(format!(
                "entry '{name}' has mode {mode:o}, with setuid, setgid or sticky bits: refused"
            )));
        }
        if !self.seen.insert(bytes) {
            return Err(self.refuse(format!("entry '{name}' appears more than once")));
        }
        match name.as_str() {
            MANIFEST => self.manifest(entry),
            SIGNATURES => self.signatures(entry),
            _ => match name.strip_prefix("nar/").and_then(|n| n.strip_suffix(".nar")) {
                Some(digest) if !digest.is_empty() && !digest.contains('/') => {
                    self.nar(&name, digest, entry)
                }
                _ => Err(self.refuse(format!(
                    "entry '{name}' is not part of a noodle bundle (expected {MANIFEST}, {SIGNATURES} and nar/<digest>.nar)"
                ))),
            },
        }
    }

    fn manifest(&mut self, entry: &mut dyn Read) -> Result<()> {
        if self.seen.len() > 1 {
            return Err(self.refuse(format!("{MANIFEST} is not the first entry")));
        }
        let bytes = read_small(entry, MAX_MANIFEST + 1).map_err(|e| self.damaged(e))?;
        if bytes.len() as u64 > MAX_MANIFEST {
            return Err(self.refuse(format!(
                "{MANIFEST} is larger than {MAX_MANIFEST} bytes: not a real manifest"
            )));
        }
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| self.refuse(format!("{MANIFEST} is not a bundle manifest: {e}")))?;
        if manifest.version != VERSION {
            return Err(self.refuse(format!(
                "{MANIFEST} has version {}, this noodle reads version {VERSION}: upgrade noodle",
                manifest.version
            )));
        }
        let ours = self.store.store_dir().as_str().to_owned();
        if manifest.store_dir != ours {
            return Err(self.refuse(format!(
                "it was made for store directory {} but this store's is {ours}: paths cannot move between store directories",
                manifest.store_dir
            )));
        }
        let paths = check_paths(self.store, &manifest.paths, &|why| self.refuse(why))?;
        let protect: Vec<String> = paths
            .iter()
            .filter(|l| l.valid_here)
            .map(|l| l.expected.path.clone())
            .chain(outside_references(&manifest.paths))
            .collect();
        // Keep what the bundle relies on from being collected before it is committed.
        self.store.protect(&protect)?;
        let total = paths.iter().map(|l| l.expected.nar_size).sum();
        self.progress.phase("importing", total);
        let by_digest = paths
            .iter()
            .enumerate()
            .map(|(i, l)| (l.digest.clone(), i))
            .collect();
        self.listing = Some(Listing {
            fingerprint: manifest_fingerprint(&bytes),
            paths,
            by_digest,
            signatures_checked: false,
            signed_by: None,
        });
        Ok(())
    }

    fn signatures(&mut self, entry: &mut dyn Read) -> Result<()> {
        match &self.listing {
            None => return Err(self.refuse(format!("{SIGNATURES} comes before {MANIFEST}"))),
            Some(listing) if listing.signatures_checked => {
                return Err(self.refuse(format!("{SIGNATURES} comes after the first NAR")))
            }
            Some(_) => {}
        }
        let bytes = read_small(entry, MAX_SIGNATURES + 1).map_err(|e| self.damaged(e))?;
        if bytes.len() as u64 > MAX_SIGNATURES {
            return Err(self.refuse(format!(
                "{SIGNATURES} is larger than {MAX_SIGNATURES} bytes"
            )));
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| self.refuse(format!("{SIGNATURES} is not text")))?;
        let signatures: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        self.check_signatures(&signatures, "")
    }

    /// Decides, once, whether the manifest's signatures let the bundle in.
    fn check_signatures(&mut self, signatures: &[String], absent: &str) -> Result<()> {
        let Some(listing) = self.listing.as_mut() else {
            return Ok(());
        };
        listing.signatures_checked = true;
        match self
            .trusted
            .check(MANIFEST, &listing.fingerprint, signatures)
        {
            Ok(name) => listing.signed_by = Some(name),
            Err(CacheError::Untrusted { why, .. }) if self.require_sigs => {
                return Err(self.refuse(format!(
                    "the signature check of {MANIFEST} failed: {why}{absent}"
                )))
            }
            Err(CacheError::Untrusted { .. }) => {}
            Err(other) => return Err(other),
        }
        Ok(())
    }

    fn nar(
        &mut self,
        name: &str,
        digest: &str,
        entry: &mut tar::Entry<'_, impl Read>,
    ) -> Result<()> {
        let Some(listing) = &self.listing else {
            return Err(self.refuse(format!(
                "entry '{name}' comes before {MANIFEST}: the manifest must be the first entry"
            )));
        };
        if !listing.signatures_checked {
            self.check_signatures(&[], &format!(" (no {SIGNATURES} before the first NAR)"))?;
        }
        let listing = self.listing.as_ref().expect("checked above");
        let Some(&at) = listing.by_digest.get(digest) else {
            return Err(self.refuse(format!("entry '{name}' is not listed in {MANIFEST}")));
        };
        let listed = &listing.paths[at];
        debug_assert_eq!(name, nar_entry(&listed.digest));
        if entry.size() != listed.expected.nar_size {
            return Err(self.refuse(format!(
                "entry '{name}' is {} bytes, but {MANIFEST} says the NAR of {} is {} bytes",
                entry.size(),
                listed.expected.path,
                listed.expected.nar_size
            )));
        }
        let progress = self.progress;
        let staged = if listed.valid_here {
            self.hash_only(name, &listed.expected, entry)?;
            None
        } else {
            let staged = stage_nar(self.store.dirs(), entry, listed.expected.clone(), &|n| {
                progress.advance(n)
            })
            .map_err(|e| {
                let why = e.to_string();
                let why = why.trim_end_matches("; nothing was registered");
                self.refuse(format!("entry '{name}': {why}"))
            })?;
            Some(staged)
        };
        if let Some(listing) = self.listing.as_mut() {
            listing.paths[at].proven = true;
            listing.paths[at].staged = staged;
        }
        Ok(())
    }

    /// Checks the NAR of a path that is valid here already: it is not kept, but a bundle
    /// with a damaged NAR is refused whole, whatever the receiving store holds.
    fn hash_only(&self, name: &str, expected: &Expected, entry: &mut dyn Read) -> Result<()> {
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0; HASH_BUFFER];
        let mut read = 0u64;
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.damaged(e)),
            };
            hasher.update(&buf[..n]);
            read += n as u64;
            self.progress.advance(n as u64);
        }
        let hash = Blake3::from(hasher.finalize());
        if read != expected.nar_size || hash != expected.nar_hash {
            return Err(self.refuse(format!(
                "entry '{name}': NAR hash mismatch for {}: expected {}, got {hash} ({read} bytes)",
                expected.path, expected.nar_hash
            )));
        }
        Ok(())
    }

    /// After the last entry: the manifest was there and signed as required, and every path
    /// it lists had its NAR.
    fn finish(mut self) -> Result<(Listing, &'a mut Store)> {
        if self.listing.is_none() {
            return Err(self.refuse(format!(
                "{MANIFEST} is missing: this is not a noodle bundle"
            )));
        }
        if self.listing.as_ref().is_some_and(|l| !l.signatures_checked) {
            self.check_signatures(&[], &format!(" (the bundle has no {SIGNATURES})"))?;
        }
        let listing = self.listing.take().expect("checked above");
        if let Some(missing) = listing.paths.iter().find(|l| !l.proven) {
            return Err(self.refuse(format!(
                "{MANIFEST} lists {} but the bundle has no entry {} (truncated or incomplete bundle)",
                missing.expected.path,
                nar_entry(&missing.digest)
            )));
        }
        Ok((listing, self.store))
    }
}
