//! Where a store lives on disk (DESIGN.md §2): physical root R, logical store directory S.

use std::path::{Path, PathBuf};

use crate::path::StoreDir;

#[derive(Debug, Clone)]
pub struct StoreDirs {
    pub root: PathBuf,
    pub store_dir: StoreDir,
}

impl StoreDirs {
    pub fn new(root: PathBuf, store_dir: StoreDir) -> Self {
        Self { root, store_dir }
    }

    /// Maps a logical absolute path into the physical root.
    pub fn physical(&self, logical: &str) -> PathBuf {
        self.root.join(logical.trim_start_matches('/'))
    }

    pub fn store(&self) -> PathBuf {
        self.physical(self.store_dir.as_str())
    }

    pub fn var(&self) -> PathBuf {
        self.root.join("noodle/var")
    }

    pub fn db_file(&self) -> PathBuf {
        Self::db_file_under(&self.root)
    }

    pub fn db_file_under(root: &Path) -> PathBuf {
        root.join("noodle/var/db/store.sqlite")
    }

    pub fn links(&self) -> PathBuf {
        self.store().join(".links")
    }

    pub fn tmp(&self) -> PathBuf {
        self.var().join("tmp")
    }

    pub fn temproots(&self) -> PathBuf {
        self.var().join("temproots")
    }

    pub fn gcroots(&self) -> PathBuf {
        self.var().join("gcroots")
    }

    pub fn profiles(&self) -> PathBuf {
        self.var().join("profiles")
    }

    pub fn locks(&self) -> PathBuf {
        self.var().join("locks")
    }

    pub fn gc_lock(&self) -> PathBuf {
        self.locks().join("gc.lock")
    }

    pub fn log(&self) -> PathBuf {
        self.var().join("log")
    }

    /// Every directory a store needs.
    pub fn all(&self) -> Vec<PathBuf> {
        vec![
            self.store(),
            self.links(),
            self.db_file()
                .parent()
                .expect("db file has a parent")
                .to_owned(),
            self.tmp(),
            self.temproots(),
            self.gcroots(),
            self.profiles(),
            self.locks(),
            self.log(),
        ]
    }
}
