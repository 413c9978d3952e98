//! An open store: its directories, its database, and this process's temporary roots.

use std::path::{Path, PathBuf};

use crate::db::Db;
use crate::dirs::StoreDirs;
use crate::error::{Result, StoreError};
use crate::locks::TempRoots;
use crate::path::{PathError, StoreDir, StorePath, DEFAULT_STORE_DIR};

const META_STORE_DIR: &str = "store_dir";

pub struct Store {
    pub(crate) dirs: StoreDirs,
    pub(crate) db: Db,
    temproots: Option<std::sync::Arc<TempRoots>>,
}

impl Store {
    /// Creates the store under `root` if needed (idempotent), then opens it.
    pub fn init(root: &Path, store_dir: Option<&str>) -> Result<Self> {
        let requested = StoreDir::new(store_dir.unwrap_or(DEFAULT_STORE_DIR))?;
        let db_file = StoreDirs::db_file_under(root);
        if db_file.exists() {
            return Self::open(root, store_dir);
        }
        let dirs = StoreDirs::new(root.to_owned(), requested.clone());
        for dir in dirs.all() {
            fs_err::create_dir_all(&dir)?;
        }
        let mut db = Db::open(&db_file, true)?;
        db.set_meta_if_absent(META_STORE_DIR, requested.as_str())?;
        drop(db);
        crate::sync::fsync_dir(&dirs.var())?;
        Self::open(root, store_dir)
    }

    /// Opens an existing store. `store_dir`, when given, must match the one recorded.
    pub fn open(root: &Path, store_dir: Option<&str>) -> Result<Self> {
        let db = Db::open(&StoreDirs::db_file_under(root), false)?;
        let recorded = db
            .meta(META_STORE_DIR)?
            .ok_or_else(|| StoreError::DbCorrupt {
                path: db.path().to_owned(),
                detail: "the store directory is not recorded".into(),
            })?;
        if let Some(requested) = store_dir {
            if requested.trim_end_matches('/') != recorded {
                return Err(StoreError::StoreDirMismatch {
                    recorded,
                    requested: requested.to_owned(),
                });
            }
        }
        let dirs = StoreDirs::new(root.to_owned(), StoreDir::new(&recorded)?);
        Ok(Self {
            dirs,
            db,
            temproots: None,
        })
    }

    pub fn dirs(&self) -> &StoreDirs {
        &self.dirs
    }

    pub fn db_mut(&mut self) -> &mut Db {
        &mut self.db
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn store_dir(&self) -> &StoreDir {
        &self.dirs.store_dir
    }

    /// The logical path, `/noodle/store/<digest>-<name>`.
    pub fn logical(&self, path: &StorePath) -> String {
        self.dirs.store_dir.display_path(path)
    }

    /// Where the path's files are.
    pub fn physical(&self, path: &StorePath) -> PathBuf {
        path.physical_in(&self.dirs.store())
    }

    /// Accepts a logical store path, a path inside one, or the physical location of either.
    pub fn parse_path(&self, text: &str) -> Result<StorePath> {
        let physical_store = self.dirs.store();
        let text = match Path::new(text).strip_prefix(&physical_store) {
            Ok(rest) if self.dirs.root != Path::new("/") => {
                format!("{}/{}", self.dirs.store_dir, rest.display())
            }
            _ => text.to_owned(),
        };
        Ok(self.dirs.store_dir.parse_path(&text)?)
    }

    /// Parses a path and checks that it is valid.
    pub fn valid_path(&self, text: &str) -> Result<StorePath> {
        let path = self.parse_path(text).map_err(|e| match e {
            StoreError::Path(PathError::NotAStorePath(..)) => StoreError::NotValid(text.to_owned()),
            other => other,
        })?;
        if !self.db.is_valid(&self.logical(&path))? {
            return Err(StoreError::NotValid(self.logical(&path)));
        }
        Ok(path)
    }

    pub(crate) fn temproots(&mut self) -> Result<&TempRoots> {
        if self.temproots.is_none() {
            self.temproots = Some(TempRoots::shared(&self.dirs)?);
        }
        Ok(self.temproots.as_ref().expect("created just above"))
    }
}
