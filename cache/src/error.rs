use std::path::PathBuf;

pub type Result<T, E = CacheError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    Store(#[from] noodle_store::StoreError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A key file or key text that cannot be used.
    #[error("key {what}: {why}")]
    Key { what: String, why: String },
    /// The configuration file or an `--option` is wrong.
    #[error("configuration {origin}: {why}")]
    Config { origin: String, why: String },
    /// A narinfo that is not well formed.
    #[error("{url}: bad narinfo: {why}; the cache is corrupt or not a noodle cache")]
    NarInfo { url: String, why: String },
    /// A `cache-info` that is not well formed.
    #[error("{url}: bad cache-info: {why}; the cache is corrupt or not a noodle cache")]
    CacheInfo { url: String, why: String },
    /// A path whose signatures do not let it in.
    #[error("{path}: {why}")]
    Untrusted { path: String, why: String },
    /// What a cache sent is not what its narinfo promised.
    #[error("{path}: {what} mismatch: expected {expected}, got {actual} (from {url}); nothing was registered")]
    Mismatch {
        path: String,
        url: String,
        what: &'static str,
        expected: String,
        actual: String,
    },
    /// What a cache sent is corrupt: not the archive its signed narinfo describes.
    #[error("{url}: {why}; nothing was registered")]
    Corrupt { url: String, why: String },
    /// A narinfo or cache-info that is not text.
    #[error("{url}: not UTF-8 text; the cache is corrupt or not a noodle cache")]
    NotText { url: String },
    /// A cache could not be reached or answered with an error.
    #[error("{url}: {why}")]
    Transport { url: String, why: String },
    /// No configured cache has the path.
    #[error("{path}: not found in any substituter ({tried}); build it, or copy it from a cache that has it")]
    NotFound { path: String, tried: String },
    /// A path that cannot be exported: its files are not what the database records.
    #[error("cannot export {path}: {why}")]
    Export { path: String, why: String },
    /// A bundle that cannot be imported.
    #[error("bundle '{}': {why}; nothing was registered", .file.display())]
    Bundle { file: PathBuf, why: String },
}
