//! The binary-cache text formats: `cache-info` and `<digest>.narinfo` (one `Key: value` per
//! line). Parsing is strict: a narinfo decides what gets fetched and what is promised about it,
//! so anything ambiguous (a field twice, an absurd size, a URL leaving `nar/`) is refused.

use std::collections::HashSet;
use std::fmt::Write as _;

use noodle_store::{Blake3, StoreDir, StorePath};

use crate::error::{CacheError, Result};
use crate::keys;

pub const CACHE_INFO: &str = "cache-info";

/// Nix's default priority for a cache that does not say (lower is preferred).
const DEFAULT_PRIORITY: u32 = 50;
/// No NAR or NAR file is bigger: a larger size is a corrupt or hostile narinfo.
const MAX_SIZE: u64 = 1 << 40;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheInfo {
    pub store_dir: String,
    pub want_mass_query: bool,
    pub priority: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Zstd,
    None,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::None => "none",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NarInfo {
    pub store_path: String,
    pub url: String,
    pub compression: Compression,
    pub file_hash: Option<Blake3>,
    pub file_size: Option<u64>,
    pub nar_hash: Blake3,
    pub nar_size: u64,
    /// Full logical store paths (the file holds base names).
    pub references: Vec<String>,
    pub deriver: Option<String>,
    pub ca: Option<String>,
    pub signatures: Vec<String>,
}

/// `<digest>.narinfo`, the file describing `path` in a cache.
pub fn narinfo_name(path: &StorePath) -> String {
    format!("{}.narinfo", path.digest())
}

/// `(line number, key, value)` of each non-empty line; `Key:` with nothing after is an empty value.
fn fields(text: &str) -> std::result::Result<Vec<(usize, &str, &str)>, String> {
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let (key, value) = line
            .split_once(": ")
            .or_else(|| line.strip_suffix(':').map(|key| (key, "")))
            .ok_or_else(|| {
                let shown: String = line.chars().take(60).collect();
                format!("line {} {shown:?} is not 'Key: value'", index + 1)
            })?;
        out.push((index + 1, key, value));
    }
    Ok(out)
}

/// Digits only: `u64::from_str` would also take `+5`, which no writer produces.
fn number(key: &str, value: &str) -> std::result::Result<u64, String> {
    let bad = || format!("{key} {value:?} is not a number");
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    value.parse().map_err(|_| bad())
}

fn size(key: &str, value: &str) -> std::result::Result<u64, String> {
    let n = number(key, value)?;
    if n == 0 || n > MAX_SIZE {
        return Err(format!("{key} {n} is absurd (must be 1 byte to 1 TiB)"));
    }
    Ok(n)
}

fn hash(key: &str, value: &str) -> std::result::Result<Blake3, String> {
    value
        .strip_prefix(Blake3::PREFIX)
        .and_then(Blake3::parse)
        .ok_or_else(|| format!("{key} {value:?} is not blake3:<64 hex digits>"))
}

/// Relative, under `nar/`, plain characters only: the URL is joined to the cache's root, so
/// anything else could fetch from elsewhere.
fn check_url(url: &str) -> std::result::Result<(), String> {
    let bad = |why: &str| format!("URL {url:?} {why}; expected nar/<file>");
    let rest = url
        .strip_prefix("nar/")
        .ok_or_else(|| bad("is not under nar/ (absolute or elsewhere)"))?;
    if !url
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
    {
        return Err(bad("has characters other than [A-Za-z0-9-._~+/]"));
    }
    if rest
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(bad("has an empty, '.' or '..' component"));
    }
    Ok(())
}

impl CacheInfo {
    /// `url` names where the text came from, for errors.
    pub fn parse(url: &str, text: &str) -> Result<Self> {
        Self::parse_fields(text).map_err(|why| CacheError::CacheInfo {
            url: url.to_owned(),
            why,
        })
    }

    fn parse_fields(text: &str) -> std::result::Result<Self, String> {
        let mut store_dir = None;
        let mut want_mass_query = None;
        let mut priority = None;
        for (line, key, value) in fields(text)? {
            let twice = || format!("{key} is given twice (again on line {line})");
            match key {
                "StoreDir" => {
                    StoreDir::new(value).map_err(|e| format!("StoreDir: {e}"))?;
                    store_dir
                        .replace(value.to_owned())
                        .map_or(Ok(()), |_| Err(twice()))?;
                }
                "WantMassQuery" => {
                    let want = match value {
                        "1" => true,
                        "0" => false,
                        _ => return Err(format!("WantMassQuery {value:?} is not 0 or 1")),
                    };
                    want_mass_query
                        .replace(want)
                        .map_or(Ok(()), |_| Err(twice()))?;
                }
                "Priority" => {
                    let n = u32::try_from(number(key, value)?)
                        .map_err(|_| format!("Priority {value} is too large"))?;
                    priority.replace(n).map_or(Ok(()), |_| Err(twice()))?;
                }
                _ => {}
            }
        }
        Ok(Self {
            store_dir: store_dir.ok_or("StoreDir is missing")?,
            want_mass_query: want_mass_query.unwrap_or(false),
            priority: priority.unwrap_or(DEFAULT_PRIORITY),
        })
    }

    pub fn render(&self) -> String {
        format!(
            "StoreDir: {}\nWantMassQuery: {}\nPriority: {}\n",
            self.store_dir,
            u8::from(self.want_mass_query),
            self.priority
        )
    }
}

impl NarInfo {
    /// `url` names where the text came from (for errors); `store_dir` is the local store's:
    /// StorePath must be in it and the references' base names become full paths in it.
    /// Checking that StorePath is the path asked for is the caller's job.
    pub fn parse(url: &str, text: &str, store_dir: &StoreDir) -> Result<Self> {
        Self::parse_fields(text, store_dir).map_err(|why| CacheError::NarInfo {
            url: url.to_owned(),
            why,
        })
    }

    fn parse_fields(text: &str, store_dir: &StoreDir) -> std::result::Result<Self, String> {
        let mut seen: HashSet<&str> = HashSet::new();
        let mut store_path = None;
        let mut url = None;
        let mut compression = None;
        let mut file_hash = None;
        let mut file_size = None;
        let mut nar_hash = None;
        let mut nar_size = None;
        let mut references = None;
        let mut deriver = None;
        let mut ca = None;
        let mut signatures = Vec::new();
        for (line, key, value) in fields(text)? {
            if key != "Sig" && !seen.insert(key) {
                return Err(format!("{key} is given twice (again on line {line})"));
            }
            match key {
                "StorePath" => {
                    let path = store_dir
                        .parse_path(value)
                        .ok()
                        .filter(|p| store_dir.display_path(p) == value)
                        .ok_or_else(|| {
                            format!("StorePath {value:?} is not a store path in {store_dir}")
                        })?;
                    store_path = Some(store_dir.display_path(&path));
                }
                "URL" => {
                    check_url(value)?;
                    url = Some(value.to_owned());
                }
                "Compression" => {
                    compression = Some(match value {
                        "zstd" => Compression::Zstd,
                        "none" => Compression::None,
                        _ => {
                            return Err(format!(
                                "Compression {value:?} is not supported (zstd or none)"
                            ))
                        }
                    });
                }
                "FileHash" => file_hash = Some(hash(key, value)?),
                "FileSize" => file_size = Some(size(key, value)?),
                "NarHash" => nar_hash = Some(hash(key, value)?),
                "NarSize" => nar_size = Some(size(key, value)?),
                "References" => references = Some(parse_references(value, store_dir)?),
                "Deriver" => deriver = Some(non_empty(key, value)?),
                "CA" => {
                    hash(key, value.strip_prefix("source:").unwrap_or_default()).map_err(|_| {
                        format!("CA {value:?} is not source:blake3:<64 hex digits>")
                    })?;
                    ca = Some(value.to_owned());
                }
                "Sig" => signatures.push(non_empty(key, value)?),
                // Nix ignores fields it does not know, so caches can add some.
                _ => {}
            }
        }
        let missing = |key: &str| format!("{key} is missing");
        Ok(Self {
            store_path: store_path.ok_or_else(|| missing("StorePath"))?,
            url: url.ok_or_else(|| missing("URL"))?,
            // The NAR's own hash is checked whatever the compression, so a wrong default
            // cannot let bad bytes in.
            compression: compression.unwrap_or(Compression::None),
            file_hash,
            file_size,
            nar_hash: nar_hash.ok_or_else(|| missing("NarHash"))?,
            nar_size: nar_size.ok_or_else(|| missing("NarSize"))?,
            references: references.ok_or_else(|| missing("References"))?,
            deriver,
            ca,
            signatures,
        })
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let mut line = |key: &str, value: &dyn std::fmt::Display| {
            let _ = writeln!(out, "{key}: {value}");
        };
        line("StorePath", &self.store_path);
        line("URL", &self.url);
        line("Compression", &self.compression.as_str());
        if let Some(hash) = &self.file_hash {
            line("FileHash", hash);
        }
        if let Some(size) = &self.file_size {
            line("FileSize", size);
        }
        line("NarHash", &self.nar_hash);
        line("NarSize", &self.nar_size);
        let bases: Vec<&str> = self.references.iter().map(|r| base_name(r)).collect();
        line("References", &bases.join(" "));
        if let Some(deriver) = &self.deriver {
            line("Deriver", deriver);
        }
        if let Some(ca) = &self.ca {
            line("CA", ca);
        }
        for signature in &self.signatures {
            line("Sig", signature);
        }
        out
    }

    pub fn fingerprint(&self) -> String {
        keys::fingerprint(
            &self.store_path,
            &self.nar_hash,
            self.nar_size,
            &self.references,
        )
    }
}

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn non_empty(key: &str, value: &str) -> std::result::Result<String, String> {
    if value.is_empty() {
        Err(format!("{key} is empty"))
    } else {
        Ok(value.to_owned())
    }
}

fn parse_references(value: &str, store_dir: &StoreDir) -> std::result::Result<Vec<String>, String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for base in value.split_whitespace() {
        let path = StorePath::from_base_name(base)
            .map_err(|_| format!("reference {base:?} is not <32-character hash>-<name>"))?;
        if !seen.insert(base) {
            return Err(format!("reference {base} is listed twice"));
        }
        out.push(store_dir.display_path(&path));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
