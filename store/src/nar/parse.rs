//! Streaming NAR (Nix archive) parser.
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

use std::ffi::OsStr;
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

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

pub(crate) fn io_error(path: &Path, source: io::Error) -> NarError {
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
