//! Nix's archive format (NAR), byte for byte, and BLAKE3 over it.
//!
//! A tree is first *laid out*: walked once into the exact sequence of NAR bytes it serialises
//! to, with file contents left as references to the files. Any byte range of the archive can
//! then be produced independently, which lets hashing run in parallel over fixed blocks while
//! the result stays BLAKE3 of the one sequential stream.

pub mod layout;
pub mod parse;
pub mod restore;
pub mod treehash;

pub use layout::{Described, Entry, EntryKind, NarLayout};
pub use parse::{parse_nar, NarError, NarSink, NarStats};
pub use restore::restore_to_dir;
pub use treehash::{hash_layout, NarDigest};

use std::io::Write;

/// Streams the archive of `layout` to `out` (what `nix-store --dump` prints).
pub fn dump(layout: &NarLayout, out: &mut dyn Write) -> Result<(), layout::LayoutError> {
    let mut reader = layout.reader();
    let mut buf = vec![0u8; 256 * 1024];
    let mut offset = 0;
    while offset < layout.nar_size() {
        let len = buf.len().min((layout.nar_size() - offset) as usize);
        reader.fill(offset, &mut buf[..len])?;
        out.write_all(&buf[..len])
            .map_err(|source| layout::LayoutError::Write { source })?;
        offset += len as u64;
    }
    out.flush()
        .map_err(|source| layout::LayoutError::Write { source })
}
