//! Copying a laid-out tree into staging: in parallel across files (and across ranges of big
//! files), hashing each file as it is copied, with canonical metadata.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};

use fs_err::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use blake3::hazmat::{ChainingValue, HasherExt};
use rayon::prelude::*;

use crate::buffers::with_buffer;
use crate::canon;
use crate::db::{EntryRecord, EntryRecordKind};
use crate::error::{io_at, Result};
use crate::hash::Blake3;
use crate::nar::layout::{entry_path, LayoutError};
use crate::nar::treehash::root_of_blocks;
use crate::nar::{EntryKind, NarLayout};
use crate::progress::Progress;

/// Files larger than this are copied range by range, by several threads.
const RANGE_LEN: u64 = 1024 * 1024;
const BUF_LEN: usize = 256 * 1024;
/// Buffer, offset and length alignment for direct I/O (the largest logical block size in use).
const DIRECT_ALIGN: usize = 4096;

fn annotate<'a>(path: &'a Path, what: &'a str) -> impl Fn(std::io::Error) -> std::io::Error + 'a {
    move |e| io_at(what, path, e)
}

fn open_source(path: &Path) -> Result<File> {
    Ok(fs_err::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?
        .into_parts()
        .0)
}

fn create_dest(path: &Path, mode: u32) -> Result<File> {
    Ok(fs_err::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?
        .into_parts()
        .0)
}

/// Whether files created with their final read-only mode keep it, i.e. the umask clears none
/// of its bits; then small files need no chmod after they are written (a syscall per file).
fn umask_keeps_store_modes() -> bool {
    use nix::sys::stat::{umask, Mode};
    // Read the umask by setting it and setting it back: nothing else of ours creates files now.
    let old = umask(Mode::from_bits_truncate(0o022));
    umask(old);
    old.bits() & 0o555 == 0
}

/// Fails when the source no longer looks as it did when it was hashed.
fn check_unchanged(file: &File, path: &Path, kind: &EntryKind) -> Result<()> {
    let meta = file.metadata().map_err(annotate(path, "stat"))?;
    if let EntryKind::Regular {
        size,
        mtime_ns,
        ctime_ns,
        ..
    } = kind
    {
        let mtime = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
        let ctime = i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec());
        if meta.len() != *size || mtime != *mtime_ns || ctime != *ctime_ns {
            return Err(LayoutError::Changed(path.to_owned()).into());
        }
    }
    Ok(())
}

/// Writes one range of a big file. Where the filesystem allows, with O_DIRECT: the data goes
/// to the disk without first filling fresh page cache, which on these machines costs more than
/// the disk write itself (and the contents must reach the disk before registration anyway).
/// The final range is padded to the alignment; the caller truncates the file afterwards.
fn write_range(
    dst: &Path,
    aligned: &mut [u8],
    len: usize,
    offset: u64,
    direct: &AtomicBool,
) -> Result<()> {
    if direct.load(Ordering::Relaxed) {
        let padded = len.next_multiple_of(DIRECT_ALIGN);
        aligned[len..padded].fill(0);
        match fs_err::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(dst)
        {
            Ok(output) => match output.file().write_all_at(&aligned[..padded], offset) {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    direct.store(false, Ordering::Relaxed)
                }
                Err(e) => return Err(annotate(dst, "write")(e).into()),
            },
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                direct.store(false, Ordering::Relaxed)
            }
            Err(e) => return Err(e.into()),
        }
    }
    let output = fs_err::OpenOptions::new().write(true).open(dst)?;
    output
        .file()
        .write_all_at(&aligned[..len], offset)
        .map_err(annotate(dst, "write"))?;
    Ok(())
}

/// Copies the tree of `layout` to `dest` (which must not exist) and returns what it recorded
/// of each entry. Nothing is synced here; the caller syncs the whole filesystem once.
pub fn copy_tree(
    layout: &NarLayout,
    dest: &Path,
    progress: &dyn Progress,
) -> Result<Vec<EntryRecord>> {
    let entries = layout.entries();
    let final_modes = umask_keeps_store_modes();
    let src_of = |rel: &Path| entry_path(layout.root(), rel);
    let dst_of = |rel: &Path| entry_path(dest, rel);

    // Directories and symlinks first, in walk order (parents before children).
    for entry in entries {
        match &entry.kind {
            EntryKind::Directory => fs_err::create_dir(dst_of(&entry.rel))?,
            EntryKind::Symlink { target } => {
                fs_err::os::unix::fs::symlink(target, dst_of(&entry.rel))?;
                canon::set_times_nofollow(&dst_of(&entry.rel))?;
            }
            EntryKind::Regular { .. } => {}
        }
    }

    let files: Vec<usize> = (0..entries.len())
        .filter(|&i| matches!(entries[i].kind, EntryKind::Regular { .. }))
        .collect();
    let size_of = |i: usize| match entries[i].kind {
        EntryKind::Regular { size, .. } => size,
        _ => 0,
    };
    let exec_of = |i: usize| {
        matches!(
            entries[i].kind,
            EntryKind::Regular {
                executable: true,
                ..
            }
        )
    };

    // Small files: one task each, copied and hashed in one pass.
    let small: Vec<(usize, Blake3)> = files
        .par_iter()
        .filter(|&&i| size_of(i) <= RANGE_LEN)
        .map(|&i| -> Result<(usize, Blake3)> {
            let (src, dst) = (src_of(&entries[i].rel), dst_of(&entries[i].rel));
            let mut input = open_source(&src)?;
            // Created read-only: the descriptor opened here stays writable.
            let mode = if final_modes {
                canon::file_mode(exec_of(i))
            } else {
                0o644
            };
            let mut output = create_dest(&dst, mode)?;
            let mut hasher = blake3::Hasher::new();
            let want = (size_of(i) as usize).clamp(1, BUF_LEN);
            with_buffer(want + 1, 1, |buf| -> Result<()> {
                loop {
                    let n = input.read(buf).map_err(annotate(&src, "read"))?;
                    if n == 0 {
                        return Ok(());
                    }
                    hasher.update(&buf[..n]);
                    output
                        .write_all(&buf[..n])
                        .map_err(annotate(&dst, "write"))?;
                    progress.advance(n as u64);
                }
            })?;
            check_unchanged(&input, &src, &entries[i].kind)?;
            if final_modes {
                canon::times(&output, &dst)?;
            } else {
                canon::regular(&output, &dst, exec_of(i))?;
            }
            Ok((i, hasher.finalize().into()))
        })
        .collect::<Result<_>>()?;

    // Big files: created first, then copied range by range in parallel.
    let big: Vec<usize> = files
        .iter()
        .copied()
        .filter(|&i| size_of(i) > RANGE_LEN)
        .collect();
    big.par_iter().try_for_each(|&i| -> Result<()> {
        let dst = dst_of(&entries[i].rel);
        create_dest(&dst, 0o644)?
            .set_len(size_of(i))
            .map_err(annotate(&dst, "allocate"))?;
        Ok(())
    })?;
    let ranges: Vec<(usize, u64)> = big
        .iter()
        .flat_map(|&i| (0..size_of(i).div_ceil(RANGE_LEN)).map(move |r| (i, r * RANGE_LEN)))
        .collect();
    let direct = AtomicBool::new(true);
    let cvs: Vec<ChainingValue> = ranges
        .par_iter()
        .map(|&(i, offset)| -> Result<ChainingValue> {
            let (src, dst) = (src_of(&entries[i].rel), dst_of(&entries[i].rel));
            let len = RANGE_LEN.min(size_of(i) - offset) as usize;
            with_buffer(RANGE_LEN as usize, DIRECT_ALIGN, |aligned| {
                let input = open_source(&src)?;
                input
                    .read_exact_at(&mut aligned[..len], offset)
                    .map_err(|e| match e.kind() {
                        std::io::ErrorKind::UnexpectedEof => {
                            LayoutError::Changed(src.clone()).into()
                        }
                        _ => crate::error::StoreError::from(annotate(&src, "read")(e)),
                    })?;
                let cv = blake3::Hasher::new()
                    .set_input_offset(offset)
                    .update(&aligned[..len])
                    .finalize_non_root();
                write_range(&dst, aligned, len, offset, &direct)?;
                progress.advance(len as u64);
                Ok(cv)
            })
        })
        .collect::<Result<_>>()?;
    let mut big_hashes = Vec::with_capacity(big.len());
    let mut next = 0;
    for &i in &big {
        let count = size_of(i).div_ceil(RANGE_LEN) as usize;
        big_hashes.push((
            i,
            root_of_blocks(&cvs[next..next + count], size_of(i), RANGE_LEN),
        ));
        next += count;
    }
    big.par_iter().try_for_each(|&i| -> Result<()> {
        let (src, dst) = (src_of(&entries[i].rel), dst_of(&entries[i].rel));
        check_unchanged(&open_source(&src)?, &src, &entries[i].kind)?;
        let output = fs_err::OpenOptions::new()
            .write(true)
            .open(&dst)?
            .into_parts()
            .0;
        // Direct writes of the last range were padded to the alignment.
        output
            .set_len(size_of(i))
            .map_err(annotate(&dst, "truncate"))?;
        canon::regular(&output, &dst, exec_of(i))
    })?;

    // Directories last, deepest first, once nothing more is created inside them. The root is
    // left writable: moving a directory to another parent needs write access to it (for
    // `..`); the caller canonicalises it after the rename.
    for entry in entries.iter().rev() {
        if entry.kind == EntryKind::Directory && !entry.rel.as_os_str().is_empty() {
            canon::directory(&dst_of(&entry.rel))?;
        }
    }

    let mut hashes: Vec<Option<Blake3>> = vec![None; entries.len()];
    for (i, hash) in small.into_iter().chain(big_hashes) {
        hashes[i] = Some(hash);
    }
    Ok(entries
        .iter()
        .zip(hashes)
        .map(|(entry, hash)| EntryRecord {
            rel: entry.rel.as_os_str().as_bytes().to_vec(),
            size: match &entry.kind {
                EntryKind::Regular { size, .. } => *size,
                _ => 0,
            },
            kind: match &entry.kind {
                EntryKind::Directory => EntryRecordKind::Directory,
                EntryKind::Symlink { target } => EntryRecordKind::Symlink {
                    target: target.as_bytes().to_vec(),
                },
                EntryKind::Regular { executable, .. } => EntryRecordKind::Regular {
                    executable: *executable,
                    hash: hash.expect("every regular file was hashed"),
                },
            },
        })
        .collect())
}

/// The records of an existing tree, hashing every file (used by `verify` to name damage).
pub fn record_tree(root: &Path) -> Result<Vec<EntryRecord>> {
    record_layout(root, &NarLayout::of(root)?)
}

/// The records of the tree at `root`, whose layout was just read.
pub fn record_layout(root: &Path, layout: &NarLayout) -> Result<Vec<EntryRecord>> {
    layout
        .entries()
        .par_iter()
        .map(|entry| -> Result<EntryRecord> {
            let kind = match &entry.kind {
                EntryKind::Directory => EntryRecordKind::Directory,
                EntryKind::Symlink { target } => EntryRecordKind::Symlink {
                    target: target.as_bytes().to_vec(),
                },
                EntryKind::Regular { executable, .. } => {
                    let path = entry_path(root, &entry.rel);
                    EntryRecordKind::Regular {
                        executable: *executable,
                        hash: hash_file(&path)?,
                    }
                }
            };
            Ok(EntryRecord {
                rel: entry.rel.as_os_str().as_bytes().to_vec(),
                size: match &entry.kind {
                    EntryKind::Regular { size, .. } => *size,
                    _ => 0,
                },
                kind,
            })
        })
        .collect()
}

/// BLAKE3 of one file's contents, streaming.
pub fn hash_file(path: &Path) -> Result<Blake3> {
    let mut hasher = blake3::Hasher::new();
    let mut file = open_source(path)?;
    with_buffer(BUF_LEN, 1, |buf| loop {
        let n = file.read(buf).map_err(annotate(path, "read"))?;
        if n == 0 {
            return Ok(hasher.finalize().into());
        }
        hasher.update(&buf[..n]);
    })
}
