//! Streaming NAR (Nix archive) parser and atomic restore to the filesystem.
//!
//! The format, where `str(s)` is a little-endian `u64` length, the bytes of
//! `s`, and zero padding up to a multiple of 8 bytes:
//!
//! ```text
//! archive = str("nix-archive-1") node
//! node    = str("(") str("type") ( regular | symlink | directory ) str(")")
//! regular = str("regular") [ str("executable") str("") ] str("contents") str(contents)
//! symlink = str("symlink") str("target") str(target)
//! directory = str("directory")
//!             { str("entry") str("(") str("name") str(name) str("node") node str(")") }*
//! ```
//!
//! Directory entries must be strictly increasing by name in byte order.
//!
//! [`parse_nar`] validates an archive while streaming it into a [`NarSink`];
//! file contents are never held in memory. [`restore_to_dir`] builds on it to
//! materialise an archive atomically: into a temporary sibling of the
//! destination, which is renamed into place only once the whole archive has
//! been read, validated and synced to disk.
//!
//! **Depth.** The root node is at depth 0, the entries of a root directory
//! are at depth 1, their entries at depth 2, and so on: the depth of a node is
//! the number of components of its path. A node deeper than [`MAX_DEPTH`] is
//! refused, so the deepest accepted path has exactly `MAX_DEPTH` components.

use std::ffi::{OsStr, OsString};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use fs_err::os::unix::fs::OpenOptionsExt;

/// Maximum depth of a node (see the module documentation: the root is at
/// depth 0, its entries at depth 1, ...). Deeper nodes are refused.
pub const MAX_DEPTH: usize = 64;
/// Directory entry names longer than this many bytes are refused.
pub const MAX_NAME_LEN: usize = 255;
/// Symlink targets longer than this many bytes are refused.
pub const MAX_TARGET_LEN: usize = 4095;

/// The archive's leading magic string.
const NAR_MAGIC: &[u8] = b"nix-archive-1";
/// Longest structural token (such as `"type"` or `"directory"`) we are
/// prepared to read before deciding it is garbage.
const MAX_TOKEN_LEN: u64 = 256;
/// How many characters of an unexpected token an error message shows.
const SHOWN_TOKEN_CHARS: usize = 64;
/// Buffer between the reader and the parser.
const READ_BUFFER_SIZE: usize = 64 * 1024;
/// Buffer used to copy file contents to disk.
const COPY_BUFFER_SIZE: usize = 256 * 1024;
/// Longest part of the destination's name reused in the temporary name, so
/// the temporary name stays below the usual 255-byte limit.
const MAX_TEMP_STEM: usize = 200;

/// Counts of what an archive contained.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NarStats {
    /// Size of the archive in bytes.
    pub nar_size: u64,
    /// Number of regular files (executable or not).
    pub files: u64,
    /// Number of directories, including a root directory.
    pub directories: u64,
    /// Number of symlinks.
    pub symlinks: u64,
}

/// Everything that can go wrong reading or restoring a NAR.
///
/// Offsets are byte positions in the archive stream (0 is its first byte).
#[derive(Debug, thiserror::Error)]
pub enum NarError {
    /// The stream does not start with the NAR magic string.
    #[error("not a NAR archive (bad magic) at byte {offset}: the input does not start with 'nix-archive-1'")]
    BadMagic { offset: u64 },

    /// The stream ended before the archive was complete.
    #[error("NAR is truncated at byte {offset} (expected {expected} more bytes): the archive is incomplete; re-create or re-download it")]
    Truncated { offset: u64, expected: u64 },

    /// A structural token other than the one(s) the format requires here.
    #[error("unexpected token '{found}' at byte {offset} in {}: expected {expected}; the archive is corrupt", show_path(.path))]
    UnexpectedToken {
        offset: u64,
        /// Path of the node (or directory) being read.
        path: PathBuf,
        /// What the format allows here, e.g. `'type'`.
        expected: String,
        /// What was found, lossily decoded and cut to 64 characters.
        found: String,
    },

    /// A string whose declared length is over the limit for its context;
    /// it is refused before anything is allocated.
    #[error("{what} too long at byte {offset} in {}: {len} bytes, the limit is {limit}; the archive is corrupt or not supported", show_path(.path))]
    StringTooLong {
        offset: u64,
        /// Path of the node (or directory) being read.
        path: PathBuf,
        /// `"token"`, `"entry name"` or `"symlink target"`.
        what: &'static str,
        len: u64,
        limit: u64,
    },

    /// Padding after a string is not all zero bytes.
    #[error("non-zero padding at byte {offset}: the archive is corrupt")]
    NonZeroPadding { offset: u64 },

    /// Directory entries out of order, or the same name twice.
    #[error("unsorted or duplicate directory entry '{name}' after '{previous}' in {} at byte {offset}: the archive is corrupt (entries must be in strictly increasing byte order)", show_path(.dir))]
    UnsortedEntry {
        offset: u64,
        dir: PathBuf,
        name: String,
        previous: String,
    },

    /// An entry name that could escape its directory or is otherwise unusable.
    #[error("forbidden entry name '{name}' in {} at byte {offset}: {reason}", show_path(.dir))]
    ForbiddenName {
        offset: u64,
        dir: PathBuf,
        name: String,
        reason: &'static str,
    },

    /// A symlink target that is empty or contains a NUL byte.
    #[error("invalid symlink target '{target}' for {} at byte {offset}: {reason}", show_path(.path))]
    InvalidSymlinkTarget {
        offset: u64,
        path: PathBuf,
        target: String,
        reason: &'static str,
    },

    /// A node nested deeper than [`MAX_DEPTH`].
    #[error("directory nesting too deep at {} (byte {offset}): more than {max} levels are refused", show_path(.path))]
    TooDeep {
        offset: u64,
        path: PathBuf,
        max: usize,
    },

    /// Bytes after the end of the root node.
    #[error("trailing data at byte {offset} after the end of the NAR archive: the input is corrupt or has extra data appended")]
    TrailingData { offset: u64 },

    /// Reading the archive stream failed.
    #[error("I/O error reading the NAR stream at byte {offset}: {source}")]
    Read { offset: u64, source: io::Error },

    /// A filesystem (or other sink) I/O error; `path` is the file concerned.
    #[error("{}", show_io(.path.as_deref(), .source))]
    Io {
        path: Option<PathBuf>,
        source: io::Error,
    },

    /// A problem reported by a [`NarSink`] in its own words.
    #[error("{0}")]
    Sink(String),

    /// The restore destination already exists.
    #[error("cannot restore to '{}': it already exists; remove it or choose another destination", .path.display())]
    DestinationExists { path: PathBuf },

    /// The restore destination cannot be used (no file name, no parent, ...).
    #[error("cannot restore to '{}': {reason}", .path.display())]
    InvalidDestination { path: PathBuf, reason: String },
}

/// Receives the nodes of an archive, in archive order (a directory before
/// its entries, entries in increasing name order).
pub trait NarSink {
    /// `path` is relative to the archive root; the root itself is the empty path.
    fn directory(&mut self, path: &Path) -> Result<(), NarError>;
    /// `contents` yields exactly `size` bytes; whatever the sink leaves
    /// unread is skipped by the parser.
    fn file(
        &mut self,
        path: &Path,
        executable: bool,
        size: u64,
        contents: &mut dyn Read,
    ) -> Result<(), NarError>;
    /// `target` is non-empty, contains no NUL and is at most
    /// [`MAX_TARGET_LEN`] bytes.
    fn symlink(&mut self, path: &Path, target: &OsStr) -> Result<(), NarError>;
}

/// Parses and validates a whole NAR from `reader`, handing its nodes to
/// `sink`. The stream must end exactly where the archive ends.
pub fn parse_nar<R: Read>(reader: R, sink: &mut dyn NarSink) -> Result<NarStats, NarError> {
    let mut parser = Parser {
        input: Input {
            inner: BufReader::with_capacity(READ_BUFFER_SIZE, reader),
            offset: 0,
        },
        sink,
        stats: NarStats::default(),
        path: PathBuf::new(),
        depth: 0,
    };
    parser.magic()?;
    parser.node()?;
    parser.input.expect_eof()?;
    parser.stats.nar_size = parser.input.offset;
    Ok(parser.stats)
}

/// Restores the NAR read from `reader` to `dest`, which must not exist and
/// whose parent directory must exist.
///
/// The archive is written to a temporary sibling
/// (`.<dest-name>.restore-<pid>-<counter>`); every file and directory is
/// synced, the temporary is renamed to `dest` and the parent directory is
/// synced. On any error everything created is removed again, so the
/// filesystem is left as it was. Regular files get mode 0644 (0755 when
/// executable), directories 0755.
pub fn restore_to_dir<R: Read>(reader: R, dest: &Path) -> Result<NarStats, NarError> {
    let invalid = |reason: String| NarError::InvalidDestination {
        path: dest.to_path_buf(),
        reason,
    };
    let name = dest
        .file_name()
        .ok_or_else(|| invalid("the path has no final name component".to_owned()))?;
    let parent = match dest.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => return Err(invalid("the path has no parent directory".to_owned())),
    };
    match fs_err::metadata(parent) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(invalid(format!(
                "'{}' is not a directory",
                parent.display()
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(invalid(format!(
                "its parent directory '{}' does not exist; create it first",
                parent.display()
            )))
        }
        Err(e) => return Err(io_error(parent, e)),
    }
    if exists(dest)? {
        return Err(NarError::DestinationExists {
            path: dest.to_path_buf(),
        });
    }

    let temp = temp_path(parent, name)?;
    let mut sink = RestoreSink {
        root: temp,
        created_root: false,
        dirs: Vec::new(),
        buf: vec![0; COPY_BUFFER_SIZE],
    };
    let stats = match parse_nar(reader, &mut sink).and_then(|stats| {
        sink.sync_dirs()?;
        Ok(stats)
    }) {
        Ok(stats) => stats,
        Err(e) => {
            sink.cleanup();
            return Err(e);
        }
    };
    if let Err(e) = rename_noreplace(&sink.root, dest) {
        sink.cleanup();
        return Err(if e.kind() == io::ErrorKind::AlreadyExists {
            NarError::DestinationExists {
                path: dest.to_path_buf(),
            }
        } else {
            io_error(dest, e)
        });
    }
    if let Err(e) = fs_err::File::open(parent).and_then(|dir| dir.sync_all()) {
        remove_tree(dest);
        return Err(io_error(parent, e));
    }
    Ok(stats)
}

// ---------------------------------------------------------------------------
// Error formatting helpers

/// Quotes a path for a message, naming the root explicitly.
fn show_path(path: &Path) -> String {
    if path.as_os_str().is_empty() {
        "the archive root".to_owned()
    } else {
        format!("'{}'", show_bytes(path.as_os_str().as_bytes(), usize::MAX))
    }
}

fn show_io(path: Option<&Path>, source: &io::Error) -> String {
    match path {
        Some(path) => format!("I/O error on '{}': {source}", path.display()),
        None => format!("I/O error: {source}"),
    }
}

/// Lossily decodes `bytes`, escaping control characters and keeping at most
/// `max_chars` characters (marking a cut with `…`).
fn show_bytes(bytes: &[u8], max_chars: usize) -> String {
    let mut out = String::new();
    for (i, c) in String::from_utf8_lossy(bytes).chars().enumerate() {
        if i == max_chars {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

fn io_error(path: &Path, source: io::Error) -> NarError {
    NarError::Io {
        path: Some(path.to_path_buf()),
        source,
    }
}

// ---------------------------------------------------------------------------
// Parser

/// The archive stream with its current offset.
struct Input<R> {
    inner: R,
    offset: u64,
}

impl<R: Read> Input<R> {
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), NarError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) => {
                    return Err(NarError::Truncated {
                        offset: self.offset,
                        expected: (buf.len() - filled) as u64,
                    })
                }
                Ok(n) => {
                    let n = n.min(buf.len() - filled);
                    filled += n;
                    self.offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(NarError::Read {
                        offset: self.offset,
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    fn read_u64(&mut self) -> Result<u64, NarError> {
        let mut buf = [0; 8];
        self.read_exact(&mut buf)?;
        Ok(u64::from_le_bytes(buf))
    }

    /// Reads and checks the padding following a string of `len` bytes.
    fn padding(&mut self, len: u64) -> Result<(), NarError> {
        let pad = ((8 - len % 8) % 8) as usize;
        let start = self.offset;
        let mut buf = [0; 8];
        self.read_exact(&mut buf[..pad])?;
        match buf[..pad].iter().position(|&b| b != 0) {
            Some(i) => Err(NarError::NonZeroPadding {
                offset: start + i as u64,
            }),
            None => Ok(()),
        }
    }

    /// Reads a string of at most `limit` bytes; returns its offset too.
    fn string(
        &mut self,
        limit: u64,
        what: &'static str,
        path: &Path,
    ) -> Result<(u64, Vec<u8>), NarError> {
        let offset = self.offset;
        let len = self.read_u64()?;
        if len > limit {
            return Err(NarError::StringTooLong {
                offset,
                path: path.to_path_buf(),
                what,
                len,
                limit,
            });
        }
        // `len <= limit`, and every limit is small.
        let mut buf = vec![0; len as usize];
        self.read_exact(&mut buf)?;
        self.padding(len)?;
        Ok((offset, buf))
    }

    fn token(&mut self, path: &Path) -> Result<(u64, Vec<u8>), NarError> {
        self.string(MAX_TOKEN_LEN, "token", path)
    }

    fn expect(&mut self, want: &str, path: &Path) -> Result<(), NarError> {
        let (offset, found) = self.token(path)?;
        if found == want.as_bytes() {
            Ok(())
        } else {
            Err(unexpected(offset, path, format!("'{want}'"), &found))
        }
    }

    /// Checks that the stream ends here.
    fn expect_eof(&mut self) -> Result<(), NarError> {
        let mut byte = [0; 1];
        loop {
            match self.inner.read(&mut byte) {
                Ok(0) => return Ok(()),
                Ok(_) => {
                    return Err(NarError::TrailingData {
                        offset: self.offset,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(NarError::Read {
                        offset: self.offset,
                        source,
                    })
                }
            }
        }
    }
}

fn unexpected(offset: u64, path: &Path, expected: String, found: &[u8]) -> NarError {
    NarError::UnexpectedToken {
        offset,
        path: path.to_path_buf(),
        expected,
        found: show_bytes(found, SHOWN_TOKEN_CHARS),
    }
}

/// The contents of one file, as handed to [`NarSink::file`]: yields exactly
/// the remaining bytes, and remembers a truncated or failing stream so the
/// parser can report it as such whatever the sink made of the I/O error.
struct Contents<'a, R> {
    input: &'a mut Input<R>,
    remaining: u64,
    failure: Option<NarError>,
}

impl<R: Read> Read for Contents<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failure.is_some() {
            return Err(io::Error::other("the NAR stream already failed"));
        }
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(self.remaining).map_or(buf.len(), |r| r.min(buf.len()));
        loop {
            match self.input.inner.read(&mut buf[..want]) {
                Ok(0) => {
                    let error = NarError::Truncated {
                        offset: self.input.offset,
                        expected: self.remaining,
                    };
                    let message = error.to_string();
                    self.failure = Some(error);
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, message));
                }
                Ok(n) => {
                    let n = n.min(want);
                    self.input.offset += n as u64;
                    self.remaining -= n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    let copy = io::Error::new(source.kind(), source.to_string());
                    self.failure = Some(NarError::Read {
                        offset: self.input.offset,
                        source,
                    });
                    return Err(copy);
                }
            }
        }
    }
}

struct Parser<'s, R> {
    input: Input<R>,
    sink: &'s mut dyn NarSink,
    stats: NarStats,
    /// Path of the node being parsed, relative to the root.
    path: PathBuf,
    /// Depth of the node being parsed (the number of components of `path`).
    depth: usize,
}

impl<R: Read> Parser<'_, R> {
    fn magic(&mut self) -> Result<(), NarError> {
        let offset = self.input.offset;
        let len = self.input.read_u64()?;
        if len != NAR_MAGIC.len() as u64 {
            return Err(NarError::BadMagic { offset });
        }
        let mut buf = [0; NAR_MAGIC.len()];
        self.input.read_exact(&mut buf)?;
        if buf != NAR_MAGIC {
            return Err(NarError::BadMagic { offset });
        }
        self.input.padding(len)
    }

    /// Parses one node, from its `(` to its `)`, at `self.path`.
    fn node(&mut self) -> Result<(), NarError> {
        self.input.expect("(", &self.path)?;
        self.input.expect("type", &self.path)?;
        let (offset, kind) = self.input.token(&self.path)?;
        match kind.as_slice() {
            b"regular" => self.regular(),
            b"symlink" => self.symlink(),
            b"directory" => self.directory(),
            _ => Err(unexpected(
                offset,
                &self.path,
                "one of 'regular', 'symlink', 'directory'".to_owned(),
                &kind,
            )),
        }
    }

    fn regular(&mut self) -> Result<(), NarError> {
        let (offset, token) = self.input.token(&self.path)?;
        let executable = match token.as_slice() {
            b"executable" => {
                let (offset, value) = self.input.token(&self.path)?;
                if !value.is_empty() {
                    return Err(unexpected(
                        offset,
                        &self.path,
                        "'' (empty string after 'executable')".to_owned(),
                        &value,
                    ));
                }
                self.input.expect("contents", &self.path)?;
                true
            }
            b"contents" => false,
            _ => {
                return Err(unexpected(
                    offset,
                    &self.path,
                    "'executable' or 'contents'".to_owned(),
                    &token,
                ))
            }
        };
        let size = self.input.read_u64()?;
        let mut contents = Contents {
            input: &mut self.input,
            remaining: size,
            failure: None,
        };
        let result = self.sink.file(&self.path, executable, size, &mut contents);
        if let Some(failure) = contents.failure.take() {
            return Err(failure);
        }
        result?;
        // Skip whatever the sink did not read.
        let drained = io::copy(&mut contents, &mut io::sink());
        if let Some(failure) = contents.failure.take() {
            return Err(failure);
        }
        if let Err(source) = drained {
            return Err(NarError::Read {
                offset: self.input.offset,
                source,
            });
        }
        self.input.padding(size)?;
        self.stats.files += 1;
        self.input.expect(")", &self.path)
    }

    fn symlink(&mut self) -> Result<(), NarError> {
        self.input.expect("target", &self.path)?;
        let (offset, target) =
            self.input
                .string(MAX_TARGET_LEN as u64, "symlink target", &self.path)?;
        let reason = if target.is_empty() {
            Some("the target is empty")
        } else if target.contains(&0) {
            Some("the target contains a NUL byte")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(NarError::InvalidSymlinkTarget {
                offset,
                path: self.path.clone(),
                target: show_bytes(&target, usize::MAX),
                reason,
            });
        }
        self.sink.symlink(&self.path, OsStr::from_bytes(&target))?;
        self.stats.symlinks += 1;
        self.input.expect(")", &self.path)
    }

    /// Parses a directory's entries and the `)` that closes the directory.
    fn directory(&mut self) -> Result<(), NarError> {
        self.sink.directory(&self.path)?;
        self.stats.directories += 1;
        let mut previous: Option<Vec<u8>> = None;
        loop {
            let (offset, token) = self.input.token(&self.path)?;
            match token.as_slice() {
                b")" => return Ok(()),
                b"entry" => {}
                _ => {
                    return Err(unexpected(
                        offset,
                        &self.path,
                        "'entry' or ')'".to_owned(),
                        &token,
                    ))
                }
            }
            self.input.expect("(", &self.path)?;
            self.input.expect("name", &self.path)?;
            let (offset, name) =
                self.input
                    .string(MAX_NAME_LEN as u64, "entry name", &self.path)?;
            if let Some(reason) = forbidden_name(&name) {
                return Err(NarError::ForbiddenName {
                    offset,
                    dir: self.path.clone(),
                    name: show_bytes(&name, usize::MAX),
                    reason,
                });
            }
            if let Some(previous) = previous.as_deref() {
                if name.as_slice() <= previous {
                    return Err(NarError::UnsortedEntry {
                        offset,
                        dir: self.path.clone(),
                        name: show_bytes(&name, usize::MAX),
                        previous: show_bytes(previous, usize::MAX),
                    });
                }
            }
            if self.depth + 1 > MAX_DEPTH {
                return Err(NarError::TooDeep {
                    offset,
                    path: self.path.join(OsStr::from_bytes(&name)),
                    max: MAX_DEPTH,
                });
            }
            self.path.push(OsStr::from_bytes(&name));
            self.depth += 1;
            self.input.expect("node", &self.path)?;
            self.node()?;
            self.depth -= 1;
            self.path.pop();
            self.input.expect(")", &self.path)?;
            previous = Some(name);
        }
    }
}

/// Why an entry name is refused, if it is.
fn forbidden_name(name: &[u8]) -> Option<&'static str> {
    if name.is_empty() {
        Some("names must not be empty")
    } else if name == b"." || name == b".." {
        Some("'.' and '..' are not allowed as names")
    } else if name.contains(&b'/') {
        Some("names must not contain '/'")
    } else if name.contains(&0) {
        Some("names must not contain a NUL byte")
    } else {
        None
    }
}

// ---------------------------------------------------------------------------
// Filesystem restore

/// Writes the archive below `root`, which it creates.
struct RestoreSink {
    root: PathBuf,
    /// Whether `root` has been created (and so must be removed on failure).
    created_root: bool,
    /// Every directory created, in creation order, to be synced.
    dirs: Vec<PathBuf>,
    buf: Vec<u8>,
}

impl RestoreSink {
    fn target(&self, path: &Path) -> PathBuf {
        if path.as_os_str().is_empty() {
            self.root.clone()
        } else {
            self.root.join(path)
        }
    }

    fn created(&mut self, path: &Path) {
        if path.as_os_str().is_empty() {
            self.created_root = true;
        }
    }

    fn sync_dirs(&self) -> Result<(), NarError> {
        for dir in self.dirs.iter().rev() {
            fs_err::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error(dir, e))?;
        }
        Ok(())
    }

    /// Removes everything this sink created (best effort).
    fn cleanup(&self) {
        if self.created_root {
            remove_tree(&self.root);
        }
    }
}

impl NarSink for RestoreSink {
    fn directory(&mut self, path: &Path) -> Result<(), NarError> {
        let full = self.target(path);
        fs_err::create_dir(&full).map_err(|e| io_error(&full, e))?;
        self.created(path);
        fs_err::set_permissions(&full, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| io_error(&full, e))?;
        self.dirs.push(full);
        Ok(())
    }

    fn file(
        &mut self,
        path: &Path,
        executable: bool,
        _size: u64,
        contents: &mut dyn Read,
    ) -> Result<(), NarError> {
        let full = self.target(path);
        let mut file = fs_err::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&full)
            .map_err(|e| io_error(&full, e))?;
        self.created(path);
        loop {
            let n = match contents.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(NarError::Io {
                        path: None,
                        source: e,
                    })
                }
            };
            file.write_all(&self.buf[..n])
                .map_err(|e| io_error(&full, e))?;
        }
        let mode = if executable { 0o755 } else { 0o644 };
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| io_error(&full, e))?;
        file.sync_all().map_err(|e| io_error(&full, e))
    }

    fn symlink(&mut self, path: &Path, target: &OsStr) -> Result<(), NarError> {
        let full = self.target(path);
        fs_err::os::unix::fs::symlink(target, &full).map_err(|e| io_error(&full, e))?;
        self.created(path);
        Ok(())
    }
}

/// Whether anything (even a dangling symlink) exists at `path`.
fn exists(path: &Path) -> Result<bool, NarError> {
    match fs_err::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error(path, e)),
    }
}

/// Picks an unused `<parent>/.<name>.restore-<pid>-<counter>`.
fn temp_path(parent: &Path, name: &OsStr) -> Result<PathBuf, NarError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let stem = &name.as_bytes()[..name.len().min(MAX_TEMP_STEM)];
    for _ in 0..1000 {
        let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut temp = OsString::from(".");
        temp.push(OsStr::from_bytes(stem));
        temp.push(format!(".restore-{}-{counter}", std::process::id()));
        let temp = parent.join(temp);
        if !exists(&temp)? {
            return Ok(temp);
        }
    }
    Err(NarError::InvalidDestination {
        path: parent.join(name),
        reason: format!(
            "could not find an unused temporary name in '{}'; remove stale '.*.restore-*' entries there",
            parent.display()
        ),
    })
}

/// Removes `path` and, if it is a directory, everything below it, without
/// following symlinks. Best effort: errors are ignored.
fn remove_tree(path: &Path) {
    let _ = match fs_err::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs_err::remove_dir_all(path),
        Ok(_) => fs_err::remove_file(path),
        Err(_) => Ok(()),
    };
}

/// Renames `from` to `to`, failing with `AlreadyExists` if `to` exists.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::errno::Errno;
        use nix::fcntl::{renameat2, RenameFlags};
        match renameat2(None, from, None, to, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => return Ok(()),
            // Not supported by this kernel or filesystem: fall back below.
            Err(Errno::EINVAL | Errno::ENOSYS) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
    if fs_err::symlink_metadata(to).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("'{}' already exists", to.display()),
        ));
    }
    fs_err::rename(from, to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    // -- Test-only NAR writer ------------------------------------------------

    #[derive(Clone)]
    enum Node {
        File(Vec<u8>, bool),
        Link(Vec<u8>),
        /// Entries are written in the given order (not sorted), so tests can
        /// build invalid archives.
        Dir(Vec<(Vec<u8>, Node)>),
    }

    fn file(contents: &[u8]) -> Node {
        Node::File(contents.to_vec(), false)
    }

    fn exe(contents: &[u8]) -> Node {
        Node::File(contents.to_vec(), true)
    }

    fn link(target: &[u8]) -> Node {
        Node::Link(target.to_vec())
    }

    fn dir(entries: Vec<(&[u8], Node)>) -> Node {
        Node::Dir(
            entries
                .into_iter()
                .map(|(name, node)| (name.to_vec(), node))
                .collect(),
        )
    }

    fn put_str(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s);
        out.resize(out.len() + (8 - s.len() % 8) % 8, 0);
    }

    fn put_node(out: &mut Vec<u8>, node: &Node) {
        put_str(out, b"(");
        put_str(out, b"type");
        match node {
            Node::File(contents, executable) => {
                put_str(out, b"regular");
                if *executable {
                    put_str(out, b"executable");
                    put_str(out, b"");
                }
                put_str(out, b"contents");
                put_str(out, contents);
            }
            Node::Link(target) => {
                put_str(out, b"symlink");
                put_str(out, b"target");
                put_str(out, target);
            }
            Node::Dir(entries) => {
                put_str(out, b"directory");
                for (name, child) in entries {
                    put_str(out, b"entry");
                    put_str(out, b"(");
                    put_str(out, b"name");
                    put_str(out, name);
                    put_str(out, b"node");
                    put_node(out, child);
                    put_str(out, b")");
                }
            }
        }
        put_str(out, b")");
    }

    fn nar(node: &Node) -> Vec<u8> {
        let mut out = Vec::new();
        put_str(&mut out, b"nix-archive-1");
        put_node(&mut out, node);
        out
    }

    /// Test-only dumper: serialises a filesystem tree as a NAR.
    fn dump(path: &Path) -> Vec<u8> {
        fn node_of(path: &Path) -> Node {
            let meta = fs_err::symlink_metadata(path).expect("lstat");
            if meta.file_type().is_symlink() {
                let target = fs_err::read_link(path).expect("readlink");
                Node::Link(target.as_os_str().as_bytes().to_vec())
            } else if meta.is_dir() {
                let mut entries: Vec<(Vec<u8>, Node)> = fs_err::read_dir(path)
                    .expect("read_dir")
                    .map(|e| {
                        let e = e.expect("dir entry");
                        (e.file_name().as_bytes().to_vec(), node_of(&e.path()))
                    })
                    .collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                Node::Dir(entries)
            } else {
                let contents = fs_err::read(path).expect("read");
                Node::File(contents, meta.permissions().mode() & 0o100 != 0)
            }
        }
        nar(&node_of(path))
    }

    fn sample_tree() -> Node {
        dir(vec![
            (
                b"bin",
                dir(vec![
                    (b"hello", exe(b"#!/bin/sh\necho hello\n")),
                    (b"hi", link(b"hello")),
                ]),
            ),
            (b"empty-dir", dir(vec![])),
            (b"empty-file", file(b"")),
            (
                b"share",
                dir(vec![(
                    b"doc",
                    dir(vec![("naïve name – ü.txt".as_bytes(), file(b"exactly8"))]),
                )]),
            ),
            (b"with space", file(b"x")),
        ])
    }

    /// Lists everything below `dir` (names, types, modes, contents).
    fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in fs_err::read_dir(&d).expect("read_dir") {
                let path = entry.expect("entry").path();
                let meta = fs_err::symlink_metadata(&path).expect("lstat");
                let desc = if meta.file_type().is_symlink() {
                    format!("link {:?}", fs_err::read_link(&path).expect("readlink"))
                } else if meta.is_dir() {
                    stack.push(path.clone());
                    format!("dir {:o}", meta.permissions().mode() & 0o7777)
                } else {
                    format!(
                        "file {:o} {:?}",
                        meta.permissions().mode() & 0o7777,
                        fs_err::read(&path).expect("read")
                    )
                };
                out.insert(path, desc);
            }
        }
        out
    }

    fn parent_with_marker() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs_err::write(tmp.path().join("keep"), b"untouched").expect("write marker");
        tmp
    }

    /// Restores `bytes`, expecting an error whose message contains every one
    /// of `words`, and checks that the parent directory is unchanged.
    fn rejected(bytes: &[u8], words: &[&str]) -> NarError {
        let tmp = parent_with_marker();
        let before = snapshot(tmp.path());
        let dest = tmp.path().join("out");
        let err = restore_to_dir(bytes, &dest).expect_err("restore should fail");
        let message = err.to_string();
        for word in words {
            assert!(
                message.contains(word),
                "message {message:?} does not contain {word:?}"
            );
        }
        assert_eq!(
            snapshot(tmp.path()),
            before,
            "parent changed after: {message}"
        );
        err
    }

    fn restore_ok(bytes: &[u8]) -> (tempfile::TempDir, PathBuf, NarStats) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dest = tmp.path().join("out");
        let stats = restore_to_dir(bytes, &dest).expect("restore");
        (tmp, dest, stats)
    }

    /// Header of a root directory whose first entry's name is about to follow.
    fn entry_prefix() -> Vec<u8> {
        let mut out = Vec::new();
        for t in [
            &b"nix-archive-1"[..],
            b"(",
            b"type",
            b"directory",
            b"entry",
            b"(",
            b"name",
        ] {
            put_str(&mut out, t);
        }
        out
    }

    fn chain(depth: usize) -> Node {
        let mut node = dir(vec![]);
        for _ in 0..depth {
            node = dir(vec![(b"d", node)]);
        }
        node
    }

    // -- Round trips ---------------------------------------------------------

    #[test]
    fn round_trip_tree() {
        let bytes = nar(&sample_tree());
        let (tmp, dest, stats) = restore_ok(&bytes);
        assert_eq!(
            stats,
            NarStats {
                nar_size: bytes.len() as u64,
                files: 4,
                directories: 5,
                symlinks: 1,
            }
        );
        assert_eq!(dump(&dest), bytes);
        let mode = |p: &str| {
            fs_err::symlink_metadata(dest.join(p))
                .expect("lstat")
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("bin/hello"), 0o755);
        assert_eq!(mode("empty-file"), 0o644);
        assert_eq!(mode("bin"), 0o755);
        assert_eq!(mode(""), 0o755);
        assert_eq!(
            fs_err::read_link(dest.join("bin/hi")).expect("readlink"),
            Path::new("hello")
        );
        assert!(dest.join("empty-dir").is_dir());
        assert_eq!(
            fs_err::read(dest.join("share/doc/naïve name – ü.txt")).expect("read"),
            b"exactly8"
        );
        // Only the destination is left: no temporary directory.
        let names: Vec<_> = fs_err::read_dir(tmp.path())
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("out")]);
    }

    #[test]
    fn round_trip_large_file_and_max_lengths() {
        let big: Vec<u8> = (0..COPY_BUFFER_SIZE * 3 + 5)
            .map(|i| (i % 251) as u8)
            .collect();
        let long_name = vec![b'n'; MAX_NAME_LEN];
        let long_target = vec![b't'; MAX_TARGET_LEN];
        let bytes = nar(&dir(vec![
            (b"big", file(&big)),
            (b"link", link(&long_target)),
            (&long_name, file(b"")),
        ]));
        let (_tmp, dest, _) = restore_ok(&bytes);
        assert_eq!(dump(&dest), bytes);
    }

    #[test]
    fn root_is_a_file() {
        for node in [exe(b"\x7fELF..."), file(b"plain")] {
            let bytes = nar(&node);
            let (tmp, dest, stats) = restore_ok(&bytes);
            assert_eq!(stats.files, 1);
            assert_eq!(stats.directories, 0);
            assert!(fs_err::symlink_metadata(&dest).expect("lstat").is_file());
            assert_eq!(dump(&dest), bytes);
            assert_eq!(fs_err::read_dir(tmp.path()).expect("read_dir").count(), 1);
        }
    }

    #[test]
    fn root_is_a_symlink() {
        let bytes = nar(&link(b"/nonexistent/target"));
        let (_tmp, dest, stats) = restore_ok(&bytes);
        assert_eq!(stats.symlinks, 1);
        assert_eq!(
            fs_err::read_link(&dest).expect("readlink"),
            Path::new("/nonexistent/target")
        );
        assert_eq!(dump(&dest), bytes);
    }

    #[test]
    fn max_depth_is_accepted() {
        // The innermost directory is at depth MAX_DEPTH.
        let bytes = nar(&chain(MAX_DEPTH));
        let (_tmp, dest, stats) = restore_ok(&bytes);
        assert_eq!(stats.directories, MAX_DEPTH as u64 + 1);
        let deepest: PathBuf = std::iter::repeat("d").take(MAX_DEPTH).collect();
        assert!(dest.join(deepest).is_dir());
    }

    // -- parse_nar with other sinks -----------------------------------------

    #[derive(Default)]
    struct Recorder {
        events: Vec<String>,
        read_contents: bool,
    }

    impl NarSink for Recorder {
        fn directory(&mut self, path: &Path) -> Result<(), NarError> {
            self.events.push(format!("dir {}", path.display()));
            Ok(())
        }
        fn file(
            &mut self,
            path: &Path,
            executable: bool,
            size: u64,
            contents: &mut dyn Read,
        ) -> Result<(), NarError> {
            let mut data = Vec::new();
            if self.read_contents {
                contents.read_to_end(&mut data).expect("read contents");
                assert_eq!(data.len() as u64, size);
            }
            self.events.push(format!(
                "file {} {executable} {size} {:?}",
                path.display(),
                String::from_utf8_lossy(&data)
            ));
            Ok(())
        }
        fn symlink(&mut self, path: &Path, target: &OsStr) -> Result<(), NarError> {
            self.events.push(format!(
                "link {} {}",
                path.display(),
                target.to_string_lossy()
            ));
            Ok(())
        }
    }

    #[test]
    fn parse_reports_nodes_in_order() {
        let bytes = nar(&sample_tree());
        for read_contents in [true, false] {
            let mut sink = Recorder {
                read_contents,
                ..Recorder::default()
            };
            let stats = parse_nar(&bytes[..], &mut sink).expect("parse");
            assert_eq!(stats.nar_size, bytes.len() as u64);
            assert_eq!(sink.events[0], "dir ");
            assert_eq!(sink.events[1], "dir bin");
            let hello = if read_contents {
                "\"#!/bin/sh\\necho hello\\n\""
            } else {
                "\"\""
            };
            assert_eq!(sink.events[2], format!("file bin/hello true 21 {hello}"));
            assert_eq!(sink.events[3], "link bin/hi hello");
            assert_eq!(sink.events.len(), 10);
        }
    }

    struct Failing;

    impl NarSink for Failing {
        fn directory(&mut self, _: &Path) -> Result<(), NarError> {
            Ok(())
        }
        fn file(&mut self, _: &Path, _: bool, _: u64, c: &mut dyn Read) -> Result<(), NarError> {
            let mut byte = [0; 1];
            c.read_exact(&mut byte)
                .map_err(|source| NarError::Io { path: None, source })?;
            Err(NarError::Sink("the sink refuses files".to_owned()))
        }
        fn symlink(&mut self, _: &Path, _: &OsStr) -> Result<(), NarError> {
            Ok(())
        }
    }

    #[test]
    fn sink_errors_propagate_but_truncation_wins() {
        let bytes = nar(&dir(vec![(b"f", file(b"data"))]));
        let err = parse_nar(&bytes[..], &mut Failing).expect_err("sink error");
        assert!(matches!(err, NarError::Sink(_)), "{err}");
        // Cut inside the file contents: the sink sees an I/O error, but the
        // parser reports the truncation.
        let contents_at = bytes
            .windows(4)
            .position(|w| w == b"data")
            .expect("contents");
        let cut = &bytes[..contents_at];
        let err = parse_nar(cut, &mut Failing).expect_err("truncated");
        assert!(matches!(err, NarError::Truncated { .. }), "{err}");
    }

    // -- Rejections ----------------------------------------------------------

    #[test]
    fn truncated_at_every_point() {
        let bytes = nar(&sample_tree());
        for len in 0..bytes.len() {
            let err = rejected(&bytes[..len], &["truncated", "incomplete"]);
            match err {
                NarError::Truncated { offset, expected } => {
                    assert_eq!(offset, len as u64);
                    assert!(expected > 0);
                }
                other => panic!("cut at {len}: {other}"),
            }
        }
    }

    #[test]
    fn truncated_inside_large_file() {
        let big = vec![7u8; COPY_BUFFER_SIZE * 2];
        let bytes = nar(&dir(vec![(b"big", file(&big))]));
        let cut = bytes.len() - 40 - COPY_BUFFER_SIZE;
        rejected(&bytes[..cut], &["truncated at byte", "incomplete"]);
        // A file size of u64::MAX is not allocated, just found truncated.
        let mut bytes = entry_prefix();
        for t in [&b"f"[..], b"node", b"(", b"type", b"regular", b"contents"] {
            put_str(&mut bytes, t);
        }
        let at = bytes.len() as u64 + 8;
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        bytes.extend_from_slice(b"abc");
        let err = rejected(&bytes, &["truncated", &format!("at byte {}", at + 3)]);
        assert!(err
            .to_string()
            .contains(&format!("{} more bytes", u64::MAX - 3)));
    }

    #[test]
    fn unsorted_and_duplicate_entries() {
        let tree = dir(vec![(
            b"dir",
            dir(vec![(
                b"sub",
                dir(vec![(b"c", file(b"")), (b"b", file(b""))]),
            )]),
        )]);
        rejected(
            &nar(&tree),
            &["unsorted or duplicate directory entry 'b' after 'c' in 'dir/sub' at byte"],
        );
        let tree = dir(vec![(b"a", file(b"1")), (b"a", file(b"2"))]);
        rejected(
            &nar(&tree),
            &["unsorted or duplicate", "'a' after 'a'", "the archive root"],
        );
        // Byte order, not locale order: "B" (0x42) sorts before "a" (0x61).
        let ok = dir(vec![(b"B", file(b"")), (b"a", file(b""))]);
        restore_ok(&nar(&ok));
    }

    #[test]
    fn forbidden_names() {
        let long = vec![b'x'; MAX_NAME_LEN + 1];
        let cases: [(&[u8], &[&str]); 6] = [
            (b"..", &["forbidden entry name '..' in 'dir' at byte"]),
            (b".", &["forbidden entry name '.' in 'dir'"]),
            (b"a/b", &["forbidden entry name 'a/b'", "'/'"]),
            (b"a\0b", &["forbidden entry name 'a\\0b'", "NUL"]),
            (b"", &["forbidden entry name ''", "empty"]),
            (
                &long,
                &["entry name too long", "in 'dir'", "256 bytes", "255"],
            ),
        ];
        for (name, words) in cases {
            let tree = dir(vec![(b"dir", dir(vec![(name, file(b"evil"))]))]);
            rejected(&nar(&tree), words);
        }
    }

    #[test]
    fn too_deep() {
        let err = rejected(&nar(&chain(MAX_DEPTH + 1)), &["nesting too deep", "64"]);
        match err {
            NarError::TooDeep { path, .. } => assert_eq!(path.components().count(), 65),
            other => panic!("{other}"),
        }
        // A file at depth 65 too.
        let mut node = dir(vec![(b"f", file(b""))]);
        for _ in 0..MAX_DEPTH {
            node = dir(vec![(b"d", node)]);
        }
        rejected(&nar(&node), &["too deep"]);
    }

    #[test]
    fn absurd_lengths() {
        // Entry name.
        let mut bytes = entry_prefix();
        let at = bytes.len();
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        let words = format!("entry name too long at byte {at} in the archive root");
        rejected(&bytes, &[&words, &u64::MAX.to_string()]);
        // Token.
        let mut bytes = Vec::new();
        put_str(&mut bytes, b"nix-archive-1");
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        rejected(&bytes, &["token too long at byte 24"]);
        // Symlink target.
        let mut bytes = Vec::new();
        for t in [&b"nix-archive-1"[..], b"(", b"type", b"symlink", b"target"] {
            put_str(&mut bytes, t);
        }
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        rejected(&bytes, &["symlink target too long"]);
        // Magic.
        rejected(&u64::MAX.to_le_bytes(), &["not a NAR archive (bad magic)"]);
    }

    #[test]
    fn bad_symlink_targets() {
        let long = vec![b't'; MAX_TARGET_LEN + 1];
        rejected(&nar(&link(b"")), &["invalid symlink target", "empty"]);
        rejected(
            &nar(&dir(vec![(b"l", link(b"a\0b"))])),
            &["invalid symlink target 'a\\0b' for 'l'", "NUL"],
        );
        rejected(&nar(&link(&long)), &["symlink target too long", "4096"]);
    }

    #[test]
    fn bad_magic() {
        let mut bytes = Vec::new();
        put_str(&mut bytes, b"nix-archive-2");
        put_node(&mut bytes, &file(b""));
        rejected(&bytes, &["not a NAR archive (bad magic)"]);
        rejected(
            b"#!/bin/sh\necho this is not an archive\n",
            &["not a NAR archive (bad magic)"],
        );
        rejected(b"", &["truncated at byte 0"]);
    }

    #[test]
    fn non_zero_padding() {
        // In the padding of the magic (13 bytes + 3 padding).
        let mut bytes = nar(&file(b"abc"));
        bytes[8 + 13 + 1] = 1;
        rejected(&bytes, &["non-zero padding at byte 22"]);
        // In the padding of file contents.
        let mut bytes = nar(&file(b"abc"));
        let at = bytes.len() - 16 - 5;
        bytes[at] = 0xff;
        rejected(&bytes, &[&format!("non-zero padding at byte {at}")]);
    }

    #[test]
    fn trailing_data() {
        let mut bytes = nar(&sample_tree());
        let len = bytes.len();
        bytes.push(0);
        rejected(&bytes, &[&format!("trailing data at byte {len}")]);
        bytes.extend_from_slice(&[0; 7]);
        rejected(&bytes, &["trailing data"]);
    }

    #[test]
    fn unexpected_tokens() {
        let mut bytes = Vec::new();
        for t in [&b"nix-archive-1"[..], b"(", b"tipe"] {
            put_str(&mut bytes, t);
        }
        rejected(
            &bytes,
            &["unexpected token 'tipe' at byte 40 in the archive root: expected 'type'"],
        );
        // Found tokens are cut to 64 characters.
        let long = [b'z'; 100];
        let mut bytes = Vec::new();
        for t in [&b"nix-archive-1"[..], b"(", b"type", &long] {
            put_str(&mut bytes, t);
        }
        let err = rejected(&bytes, &["one of 'regular', 'symlink', 'directory'"]);
        let shown = format!("'{}…'", "z".repeat(64));
        assert!(err.to_string().contains(&shown), "{err}");
        // `executable` must be followed by an empty string.
        let mut bytes = Vec::new();
        for t in [
            &b"nix-archive-1"[..],
            b"(",
            b"type",
            b"regular",
            b"executable",
            b"yes",
        ] {
            put_str(&mut bytes, t);
        }
        rejected(&bytes, &["unexpected token 'yes'", "empty string"]);
        // Garbage where an entry should be.
        let mut bytes = Vec::new();
        for t in [
            &b"nix-archive-1"[..],
            b"(",
            b"type",
            b"directory",
            b"\x01\n",
        ] {
            put_str(&mut bytes, t);
        }
        rejected(&bytes, &["'\\u{1}\\n'", "expected 'entry' or ')'"]);
    }

    #[test]
    fn destination_must_not_exist() {
        let bytes = nar(&file(b"x"));
        let tmp = parent_with_marker();
        let dest = tmp.path().join("keep");
        let before = snapshot(tmp.path());
        let err = restore_to_dir(&bytes[..], &dest).expect_err("exists");
        assert!(err.to_string().contains("already exists"), "{err}");
        assert!(err.to_string().contains("keep"), "{err}");
        assert_eq!(snapshot(tmp.path()), before);
        // A dangling symlink counts as existing.
        let dangling = tmp.path().join("dangling");
        fs_err::os::unix::fs::symlink("nowhere", &dangling).expect("symlink");
        let err = restore_to_dir(&bytes[..], &dangling).expect_err("exists");
        assert!(matches!(err, NarError::DestinationExists { .. }), "{err}");
        // Missing parent.
        let err =
            restore_to_dir(&bytes[..], &tmp.path().join("no/such/dir")).expect_err("no parent");
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}
