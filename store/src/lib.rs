//! noodle's store: hash-addressed, read-only store paths, recorded in SQLite.
//!
//! Crate layout: `path`/`hash`/`base32` name things; `nar` serialises and hashes trees;
//! `db` records them; `add`, `gc`, `verify`, `optimise` are the operations on an open
//! [`Store`]; `locks` and `failpoint` keep them safe against each other and against crashes.

pub mod add;
pub mod base32;
mod buffers;
pub mod builds;
pub mod canon;
pub mod copy;
pub mod db;
pub mod dirs;
pub mod error;
pub mod failpoint;
pub mod gc;
pub mod hash;
pub mod import;
pub mod locks;
pub mod nar;
pub mod optimise;
pub mod output;
pub mod path;
pub mod progress;
pub mod refscan;
pub mod roots;
pub mod store;
pub mod substitute;
pub mod sync;
pub mod verify;

pub use add::{AddOptions, Added};
pub use error::{Result, StoreError};
pub use gc::{GcOptions, GcReport};
pub use hash::Blake3;
pub use optimise::OptimiseReport;
pub use path::{StoreDir, StorePath};
pub use progress::{Progress, Silent};
pub use store::Store;
pub use substitute::Substitute;
pub use verify::{Problem, ProblemKind, Restore, VerifyOptions, VerifyReport};
