//! Walking a tree into its NAR layout, and producing any byte range of that archive.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("'{0}' is a {1}; the store holds only regular files, directories and symlinks: remove it from the tree first")]
    SpecialFile(PathBuf, &'static str),
    #[error("'{0}' changed while it was being read (size or modification time differs): stop whatever is writing to it and try again")]
    Changed(PathBuf),
    #[error("writing the archive failed: {source}")]
    Write { source: std::io::Error },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Directory,
    Regular {
        executable: bool,
        size: u64,
        /// Modification and change times seen by the walk, to detect a file changing under us.
        mtime_ns: i128,
        ctime_ns: i128,
    },
    Symlink {
        target: OsString,
    },
}

#[derive(Debug, Clone)]
pub struct Entry {
    /// Relative to the root of the tree; empty for the root itself.
    pub rel: PathBuf,
    pub kind: EntryKind,
    /// Where the file's contents start in the archive (regular files only).
    pub contents_offset: u64,
}

#[derive(Debug, Clone)]
enum Segment {
    Literal { start: usize, len: usize },
    Contents { entry: usize, len: u64 },
}

/// The archive of one tree, as literal bytes interleaved with references to file contents.
#[derive(Debug)]
pub struct NarLayout {
    root: PathBuf,
    entries: Vec<Entry>,
    literals: Vec<u8>,
    /// Segments in archive order with their starting offsets.
    segments: Vec<(u64, Segment)>,
    size: u64,
}

/// A tree its writer describes in memory (a profile generation: thousands of symlinks it just
/// made), so that its layout needs no `lstat`/`readlink` per entry. Directories and symlinks
/// come from the description; regular files are still read from disk; each directory's
/// listing on disk is checked against the description, so an entry nobody described (or a
/// described one that is missing) is an error, not a wrong hash.
#[derive(Debug, Clone)]
pub struct Described {
    directories: HashMap<PathBuf, Vec<OsString>>,
    symlinks: HashMap<PathBuf, OsString>,
    files: Vec<PathBuf>,
}

impl Default for Described {
    fn default() -> Self {
        Self {
            directories: HashMap::from([(PathBuf::new(), Vec::new())]),
            symlinks: HashMap::new(),
            files: Vec::new(),
        }
    }
}

impl Described {
    fn add(&mut self, rel: &Path) {
        let parent = rel.parent().unwrap_or(Path::new("")).to_owned();
        let name = rel.file_name().unwrap_or_default().to_owned();
        self.directories.entry(parent).or_default().push(name);
    }

    /// A directory at `rel` (its parent described before it).
    pub fn directory(&mut self, rel: &Path) {
        self.add(rel);
        self.directories.insert(rel.to_owned(), Vec::new());
    }

    pub fn symlink(&mut self, rel: &Path, target: OsString) {
        self.add(rel);
        self.symlinks.insert(rel.to_owned(), target);
    }

    /// A regular file at `rel`, read from disk.
    pub fn file(&mut self, rel: &Path) {
        self.add(rel);
        self.files.push(rel.to_owned());
    }

    /// Every directory, the root ("") included.
    pub fn directories(&self) -> impl Iterator<Item = &Path> {
        self.directories.keys().map(PathBuf::as_path)
    }

    pub fn symlinks(&self) -> impl Iterator<Item = &Path> {
        self.symlinks.keys().map(PathBuf::as_path)
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

/// Sees the metadata of every entry a walk stats (for checks that want them without a
/// second walk).
pub type Inspect<'a> = &'a mut dyn FnMut(&Path, &std::fs::Metadata);

struct Builder<'a> {
    described: Option<&'a Described>,
    inspect: Option<Inspect<'a>>,
    root: PathBuf,
    entries: Vec<Entry>,
    literals: Vec<u8>,
    segments: Vec<(u64, Segment)>,
    offset: u64,
    pending_literal: usize,
}

impl Builder<'_> {
    fn bytes(&mut self, data: &[u8]) {
        self.literals.extend_from_slice(data);
    }

    fn str(&mut self, data: &[u8]) {
        self.bytes(&(data.len() as u64).to_le_bytes());
        self.bytes(data);
        self.bytes(&[0u8; 8][..padding(data.len() as u64)]);
    }

    fn flush_literal(&mut self) {
        let len = self.literals.len() - self.pending_literal;
        if len > 0 {
            self.segments.push((
                self.offset,
                Segment::Literal {
                    start: self.pending_literal,
                    len,
                },
            ));
            self.offset += len as u64;
            self.pending_literal = self.literals.len();
        }
    }

    /// The sorted names in directory `rel`, from the description (checked against the disk)
    /// or from the disk.
    fn listing(&self, path: &Path, rel: &Path) -> Result<Vec<OsString>, LayoutError> {
        let mut names: Vec<OsString> = fs_err::read_dir(path)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        if let Some(described) = self.described {
            let mut expected = described.directories[rel].clone();
            expected.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            if expected != names {
                return Err(LayoutError::Changed(path.to_owned()));
            }
        }
        Ok(names)
    }

    fn node(&mut self, rel: PathBuf) -> Result<(), LayoutError> {
        let path = entry_path(&self.root, &rel);
        if let Some(target) = self.described.and_then(|d| d.symlinks.get(&rel)) {
            let target = target.clone();
            self.str(b"(");
            self.str(b"type");
            self.symlink(rel, target);
            self.str(b")");
            return Ok(());
        }
        let is_described_dir = self
            .described
            .is_some_and(|d| d.directories.contains_key(&rel));
        let meta = if is_described_dir {
            None
        } else {
            let meta = fs_err::symlink_metadata(&path)?;
            if let Some(inspect) = self.inspect.as_mut() {
                inspect(&rel, &meta);
            }
            Some(meta)
        };
        let file_type = meta.as_ref().map(|m| m.file_type());
        self.str(b"(");
        self.str(b"type");
        if is_described_dir || file_type.is_some_and(|t| t.is_dir()) {
            self.str(b"directory");
            self.entries.push(Entry {
                rel: rel.clone(),
                kind: EntryKind::Directory,
                contents_offset: 0,
            });
            for name in self.listing(&path, &rel)? {
                self.str(b"entry");
                self.str(b"(");
                self.str(b"name");
                self.str(name.as_bytes());
                self.str(b"node");
                self.node(rel.join(&name))?;
                self.str(b")");
            }
        } else if file_type.is_some_and(|t| t.is_symlink()) {
            let target = fs_err::read_link(&path)?.into_os_string();
            self.symlink(rel, target);
        } else if let Some(meta) = meta.as_ref().filter(|m| m.is_file()) {
            self.str(b"regular");
            let executable = meta.mode() & 0o100 != 0;
            if executable {
                self.str(b"executable");
                self.str(b"");
            }
            self.str(b"contents");
            let size = meta.len();
            self.bytes(&size.to_le_bytes());
            self.flush_literal();
            let index = self.entries.len();
            self.entries.push(Entry {
                rel,
                kind: EntryKind::Regular {
                    executable,
                    size,
                    mtime_ns: nanos(meta.mtime(), meta.mtime_nsec()),
                    ctime_ns: nanos(meta.ctime(), meta.ctime_nsec()),
                },
                contents_offset: self.offset,
            });
            if size > 0 {
                self.segments.push((
                    self.offset,
                    Segment::Contents {
                        entry: index,
                        len: size,
                    },
                ));
                self.offset += size;
            }
            self.bytes(&[0u8; 8][..padding(size)]);
        } else {
            use std::os::unix::fs::FileTypeExt;
            let file_type = file_type.expect("only a described directory has no metadata");
            let what = if file_type.is_block_device() {
                "block device"
            } else if file_type.is_char_device() {
                "character device"
            } else if file_type.is_fifo() {
                "named pipe (fifo)"
            } else {
                "socket"
            };
            return Err(LayoutError::SpecialFile(path, what));
        }
        self.str(b")");
        Ok(())
    }

    fn symlink(&mut self, rel: PathBuf, target: OsString) {
        self.str(b"symlink");
        self.str(b"target");
        self.str(target.as_bytes());
        self.entries.push(Entry {
            rel,
            kind: EntryKind::Symlink { target },
            contents_offset: 0,
        });
    }
}

/// `root/rel`, or `root` itself for the root entry (joining "" would add a trailing slash,
/// which fails on a file).
pub fn entry_path(root: &Path, rel: &Path) -> PathBuf {
    if rel.as_os_str().is_empty() {
        root.to_owned()
    } else {
        root.join(rel)
    }
}

fn nanos(secs: i64, nsecs: i64) -> i128 {
    i128::from(secs) * 1_000_000_000 + i128::from(nsecs)
}

pub(crate) fn padding(len: u64) -> usize {
    ((8 - len % 8) % 8) as usize
}

impl NarLayout {
    /// Walks `root` (not following symlinks inside it) into its archive layout.
    pub fn of(root: &Path) -> Result<Self, LayoutError> {
        Self::build(root, None, None)
    }

    /// As [`NarLayout::of`], showing `inspect` the metadata of every entry on the way.
    pub fn of_inspecting(root: &Path, inspect: Inspect<'_>) -> Result<Self, LayoutError> {
        Self::build(root, None, Some(inspect))
    }

    /// The layout of a tree written as `described` says (see [`Described`]).
    pub fn of_described(root: &Path, described: &Described) -> Result<Self, LayoutError> {
        Self::build(root, Some(described), None)
    }

    fn build<'a>(
        root: &Path,
        described: Option<&'a Described>,
        inspect: Option<Inspect<'a>>,
    ) -> Result<Self, LayoutError> {
        let mut builder = Builder {
            described,
            inspect,
            root: root.to_owned(),
            entries: Vec::new(),
            literals: Vec::new(),
            segments: Vec::new(),
            offset: 0,
            pending_literal: 0,
        };
        builder.str(b"nix-archive-1");
        builder.node(PathBuf::new())?;
        builder.flush_literal();
        Ok(Self {
            root: builder.root,
            entries: builder.entries,
            literals: builder.literals,
            segments: builder.segments,
            size: builder.offset,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn nar_size(&self) -> u64 {
        self.size
    }

    pub fn reader(&self) -> RangeReader<'_> {
        RangeReader {
            layout: self,
            open: None,
        }
    }
}

/// Produces byte ranges of an archive, keeping the last file open for the next range.
pub struct RangeReader<'a> {
    layout: &'a NarLayout,
    open: Option<(usize, File)>,
}

impl RangeReader<'_> {
    /// Fills `buf` with the archive bytes starting at `offset`.
    pub fn fill(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), LayoutError> {
        let segments = &self.layout.segments;
        let mut index = segments.partition_point(|(start, _)| *start <= offset) - 1;
        let mut filled = 0usize;
        while filled < buf.len() {
            let (start, segment) = &segments[index];
            let at = offset + filled as u64;
            let within = at - start;
            match segment {
                Segment::Literal { start: lit, len } => {
                    let take = (len - within as usize).min(buf.len() - filled);
                    let from = lit + within as usize;
                    buf[filled..filled + take]
                        .copy_from_slice(&self.layout.literals[from..from + take]);
                    filled += take;
                }
                Segment::Contents { entry, len } => {
                    let take = ((len - within) as usize).min(buf.len() - filled);
                    self.read_contents(*entry, within, &mut buf[filled..filled + take])?;
                    filled += take;
                }
            }
            index += 1;
        }
        Ok(())
    }

    fn read_contents(&mut self, entry: usize, at: u64, buf: &mut [u8]) -> Result<(), LayoutError> {
        let path = entry_path(&self.layout.root, &self.layout.entries[entry].rel);
        if self.open.as_ref().map(|(i, _)| *i) != Some(entry) {
            let file = fs_err::File::open(&path)?;
            self.open = Some((entry, file.into_parts().0));
        }
        let (_, file) = self.open.as_ref().expect("opened just above");
        let mut done = 0;
        while done < buf.len() {
            match file.read_at(&mut buf[done..], at + done as u64) {
                Ok(0) => return Err(LayoutError::Changed(path)),
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(LayoutError::Io(crate::error::io_at("read", &path, e))),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nar::hash_layout;

    fn tree() -> (tempfile::TempDir, Described) {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let mut described = Described::default();
        std::fs::create_dir(root.join("bin")).expect("mkdir");
        described.directory(Path::new("bin"));
        for (rel, target) in [("bin/a", "/x/a"), ("bin/b", "/x/b"), ("share", "/x/share")] {
            std::os::unix::fs::symlink(target, root.join(rel)).expect("symlink");
            described.symlink(Path::new(rel), target.into());
        }
        std::fs::write(root.join("manifest.json"), "{}").expect("write");
        described.file(Path::new("manifest.json"));
        (dir, described)
    }

    #[test]
    fn a_described_tree_has_the_layout_of_the_walked_one() {
        let (dir, described) = tree();
        let walked = NarLayout::of(dir.path()).expect("walk");
        let from_description = NarLayout::of_described(dir.path(), &described).expect("described");
        let hash = |l: &NarLayout| hash_layout(l, None, &|_| {}).expect("hash").hash;
        assert_eq!(hash(&walked), hash(&from_description));
        assert_eq!(walked.nar_size(), from_description.nar_size());
    }

    #[test]
    fn an_entry_the_description_lacks_or_misses_is_an_error() {
        let (dir, described) = tree();
        std::fs::write(dir.path().join("bin/extra"), "x").expect("write");
        let err = NarLayout::of_described(dir.path(), &described).expect_err("extra entry");
        assert!(
            matches!(err, LayoutError::Changed(ref p) if p.ends_with("bin")),
            "{err}"
        );
        std::fs::remove_file(dir.path().join("bin/extra")).expect("rm");
        std::fs::remove_file(dir.path().join("bin/a")).expect("rm");
        assert!(NarLayout::of_described(dir.path(), &described).is_err());
    }
}
