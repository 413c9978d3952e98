//! Where a binary cache lives: a directory (`file:///srv/cache`) or an HTTP server
//! (`http://host:port/prefix`, a static file server or `noodle serve`). Both hold the same
//! tree (DESIGN.md §10); a directory can also be written (`noodle copy --to`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::{CacheError, Result};

/// A cache that can be read.
pub trait Cache: Send + Sync {
    /// The URL the user gave, for messages.
    fn url(&self) -> &str;
    /// The file at `rel` (relative to the cache root), streamed; `None` when the cache does
    /// not have it.
    fn get(&self, rel: &str) -> Result<Option<Box<dyn Read + Send>>>;

    /// A small text file (`cache-info`, a narinfo), read whole.
    fn get_text(&self, rel: &str) -> Result<Option<String>> {
        let Some(reader) = self.get(rel)? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        // A narinfo is a few hundred bytes; a cache answering megabytes is not a cache.
        reader
            .take(MAX_TEXT + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.transport(&format!("reading {rel}: {e}")))?;
        if bytes.len() as u64 > MAX_TEXT {
            return Err(self.transport(&format!("{rel} is larger than {MAX_TEXT} bytes")));
        }
        let text = String::from_utf8(bytes).map_err(|_| CacheError::NotText {
            url: format!("{}/{rel}", self.url()),
        })?;
        Ok(Some(text))
    }

    fn transport(&self, why: &str) -> CacheError {
        CacheError::Transport {
            url: self.url().to_owned(),
            why: why.to_owned(),
        }
    }
}

const MAX_TEXT: u64 = 1 << 20;

/// Opens the cache a URL names: `file:///dir` (or an absolute directory) or `http://…`.
pub fn open(url: &str, connect_timeout: Duration) -> Result<Box<dyn Cache>> {
    if url.starts_with("http://") {
        return Ok(Box::new(HttpCache::new(url, connect_timeout)));
    }
    if url.starts_with("https://") {
        return Err(CacheError::Transport {
            url: url.to_owned(),
            why: "https is not supported by this build: serve the cache over http on a trusted network (signatures protect the contents), or use file://".into(),
        });
    }
    Ok(Box::new(FileCache::open(url)?))
}

/// A cache in a local directory.
pub struct FileCache {
    url: String,
    dir: PathBuf,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl FileCache {
    pub fn open(url: &str) -> Result<Self> {
        let dir = match url.strip_prefix("file://") {
            Some(dir) => PathBuf::from(dir),
            None if url.starts_with('/') => PathBuf::from(url),
            None => {
                return Err(CacheError::Transport {
                    url: url.to_owned(),
                    why: "not a cache URL: use file:///absolute/dir or http://host:port".into(),
                })
            }
        };
        if !dir.is_absolute() {
            return Err(CacheError::Transport {
                url: url.to_owned(),
                why: "a file:// cache needs an absolute directory (file:///srv/cache)".into(),
            });
        }
        Ok(Self {
            url: url.to_owned(),
            dir,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the cache directory and its `nar/` if needed.
    pub fn create(&self) -> Result<()> {
        fs_err::create_dir_all(self.dir.join("nar"))?;
        Ok(())
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.dir.join(rel).exists()
    }

    /// Writes `rel` through a temporary file, synced, then renamed into place: a reader sees
    /// the whole file or none.
    pub fn put<T>(&self, rel: &str, write: impl FnOnce(&mut dyn Write) -> Result<T>) -> Result<T> {
        self.put_as(write, |_| rel.to_owned())
    }

    /// [`FileCache::put`] for a file named after what was written (a NAR, by its hash).
    pub fn put_as<T>(
        &self,
        write: impl FnOnce(&mut dyn Write) -> Result<T>,
        name: impl FnOnce(&T) -> String,
    ) -> Result<T> {
        let temp = self.dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let file = fs_err::File::create(&temp)?;
            let mut buffered = std::io::BufWriter::with_capacity(1 << 20, file);
            let value = write(&mut buffered)?;
            let file = buffered
                .into_inner()
                .map_err(|e| std::io::Error::new(e.error().kind(), e.error().to_string()))?;
            file.sync_all()?;
            fs_err::rename(&temp, self.dir.join(name(&value)))?;
            Ok(value)
        })();
        if result.is_err() {
            let _ = fs_err::remove_file(&temp);
        }
        result
    }

    /// Makes the renames into the cache durable.
    pub fn sync_dirs(&self) -> Result<()> {
        fs_err::File::open(self.dir.join("nar"))?.sync_all()?;
        fs_err::File::open(&self.dir)?.sync_all()?;
        Ok(())
    }
}

impl Cache for FileCache {
    fn url(&self) -> &str {
        &self.url
    }

    fn get(&self, rel: &str) -> Result<Option<Box<dyn Read + Send>>> {
        match fs_err::File::open(self.dir.join(rel)) {
            Ok(file) => Ok(Some(Box::new(file))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// A cache behind HTTP: any static file server, or a peer's `noodle serve`.
pub struct HttpCache {
    url: String,
    agent: ureq::Agent,
}

/// How long a read may stall before the download counts as cut.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

impl HttpCache {
    pub fn new(url: &str, connect_timeout: Duration) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(connect_timeout)
            .timeout_read(READ_TIMEOUT)
            .build();
        Self {
            url: url.trim_end_matches('/').to_owned(),
            agent,
        }
    }
}

impl Cache for HttpCache {
    fn url(&self) -> &str {
        &self.url
    }

    fn get(&self, rel: &str) -> Result<Option<Box<dyn Read + Send>>> {
        let url = format!("{}/{rel}", self.url);
        match self.agent.get(&url).call() {
            Ok(response) => Ok(Some(Box::new(response.into_reader()))),
            Err(ureq::Error::Status(404 | 410, _)) => Ok(None),
            Err(ureq::Error::Status(code, response)) => Err(CacheError::Transport {
                url,
                why: format!("the server answered {code} {}", response.status_text()),
            }),
            Err(ureq::Error::Transport(e)) => Err(CacheError::Transport {
                url,
                why: format!(
                    "{}{} (is the cache up? check the URL and your network)",
                    e.kind(),
                    e.message().map(|m| format!(": {m}")).unwrap_or_default()
                ),
            }),
        }
    }
}
