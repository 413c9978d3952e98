//! noodle's distribution (DESIGN.md §10): Ed25519 signing keys, the binary-cache format
//! (`cache-info`, `<digest>.narinfo`, `nar/<filehash>.nar.zst`), the cache backends
//! (`file://`, `http://`), pushing closures into a cache, substitution from trusted caches,
//! `noodle serve` (this store as a cache for its peers) and portable signed bundles.
//!
//! Nothing here registers a path that is not proven: a trusted signature over the path's
//! fingerprint, then the NAR hash and size of the bytes actually received.

pub mod bundle;
pub mod config;
pub mod error;
pub mod keys;
pub mod narinfo;
mod order;
mod pipe;
pub mod push;
pub mod serve;
pub mod source;
pub mod substitute;

pub use error::{CacheError, Result};
