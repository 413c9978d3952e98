use std::path::PathBuf;

use crate::nar::layout::LayoutError;
use crate::nar::NarError;
use crate::path::PathError;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// An I/O error that says what was being done to which path, as fs-err's do, for the calls
/// fs-err does not wrap (open descriptors, nix syscalls). Keeps the error's kind.
pub(crate) fn io_at(
    what: &str,
    path: &std::path::Path,
    error: impl Into<std::io::Error>,
) -> std::io::Error {
    let error = error.into();
    std::io::Error::new(
        error.kind(),
        format!("failed to {what} '{}': {error}", path.display()),
    )
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}", describe_io(.0))]
    Io(#[from] std::io::Error),
    #[error("store database '{path}': {source}")]
    Db {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("store database '{path}' has been locked by another process for more than {seconds} s: wait for it to finish (see `fuser {path}`), or raise NOODLE_DB_TIMEOUT")]
    DbBusy { path: PathBuf, seconds: u64 },
    #[error("store database '{path}' is corrupt ({detail}): the store's files are untouched; move the database aside and restore it from a backup")]
    DbCorrupt { path: PathBuf, detail: String },
    #[error("store database '{path}' has schema version {found}, newer than this noodle understands ({known}): upgrade noodle")]
    DbTooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("no noodle store at '{0}': run `noodle init` (or pass --root DIR / set NOODLE_ROOT to use another store)")]
    NotInitialised(PathBuf),
    #[error("this store was created with store directory '{recorded}', not '{requested}': the store directory is fixed when a store is created; drop --store-dir or use another --root")]
    StoreDirMismatch { recorded: String, requested: String },
    #[error(transparent)]
    Path(#[from] PathError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Nar(#[from] NarError),
    #[error("'{0}' is not a valid path in this store: add it first, or check the name with `noodle store verify`")]
    NotValid(String),
    #[error("refusing to delete '{path}': {why}")]
    InUse { path: String, why: String },
    #[error("'{path}' has NAR hash {actual}, expected {expected}")]
    HashMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("the build output at '{path}' is refused: {why}")]
    BadOutput { path: PathBuf, why: String },
    #[error("{path}: {what} mismatch: expected {expected}, got {actual}; nothing was registered")]
    ImportMismatch {
        path: String,
        what: String,
        expected: String,
        actual: String,
    },
    #[error("'{path}' cannot be added: {why}")]
    BadInput { path: PathBuf, why: String },
}

fn describe_io(err: &std::io::Error) -> String {
    let full = matches!(err.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || matches!(
            err.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        );
    match full {
        true => format!(
            "{err}: the disk is full; free some space (`noodle store gc` may help) and try again. Nothing was registered."
        ),
        false => err.to_string(),
    }
}

impl StoreError {
    pub(crate) fn db(path: &std::path::Path, source: rusqlite::Error) -> Self {
        use rusqlite::ffi::ErrorCode;
        match source.sqlite_error_code() {
            Some(ErrorCode::DatabaseCorrupt) | Some(ErrorCode::NotADatabase) => Self::DbCorrupt {
                path: path.to_owned(),
                detail: source.to_string(),
            },
            _ => Self::Db {
                path: path.to_owned(),
                source,
            },
        }
    }

    /// Whether this error means the store's contents are damaged (as opposed to bad input).
    pub fn is_busy(&self) -> bool {
        matches!(self, Self::DbBusy { .. })
    }
}
