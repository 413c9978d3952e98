//! BLAKE3 of an archive, computed over fixed blocks in parallel and merged into the same
//! root hash a sequential hasher would produce (BLAKE3 is a tree hash; see `blake3::hazmat`).

use std::collections::HashSet;

use blake3::hazmat::{
    merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};
use rayon::prelude::*;

use super::layout::{LayoutError, NarLayout};
use crate::buffers::with_buffer;
use crate::hash::Blake3;
use crate::refscan::{RefScanner, HASH_LEN};

/// Archive bytes hashed per task: a power of two multiple of BLAKE3's 1 KiB chunk.
pub const BLOCK_LEN: u64 = 256 * 1024;

#[derive(Debug, Clone)]
pub struct NarDigest {
    pub hash: Blake3,
    pub size: u64,
    /// Hash parts of candidate paths that occur in the archive (when asked to scan).
    pub references: HashSet<[u8; HASH_LEN]>,
}

struct BlockResult {
    cv: ChainingValue,
    found: HashSet<[u8; HASH_LEN]>,
    head: Vec<u8>,
    tail: Vec<u8>,
}

/// Hashes the archive of `layout`, scanning it for `candidates` when given.
pub fn hash_layout(
    layout: &NarLayout,
    candidates: Option<&HashSet<[u8; HASH_LEN]>>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<NarDigest, LayoutError> {
    let size = layout.nar_size();
    let blocks = size.div_ceil(BLOCK_LEN);
    if blocks <= 1 {
        let mut buf = vec![0u8; size as usize];
        layout.reader().fill(0, &mut buf)?;
        progress(size);
        let references = match candidates {
            Some(c) => scan(c, &buf),
            None => HashSet::new(),
        };
        return Ok(NarDigest {
            hash: blake3::hash(&buf).into(),
            size,
            references,
        });
    }
    let results: Vec<BlockResult> = (0..blocks)
        .into_par_iter()
        .map_init(
            || layout.reader(),
            |reader, block| {
                let start = block * BLOCK_LEN;
                let len = BLOCK_LEN.min(size - start) as usize;
                with_buffer(len, 1, |data| {
                    reader.fill(start, data)?;
                    let cv = blake3::Hasher::new()
                        .set_input_offset(start)
                        .update(data)
                        .finalize_non_root();
                    progress(len as u64);
                    let edge = HASH_LEN - 1;
                    Ok(BlockResult {
                        cv,
                        found: candidates.map(|c| scan(c, data)).unwrap_or_default(),
                        head: data[..edge.min(len)].to_vec(),
                        tail: data[len.saturating_sub(edge)..].to_vec(),
                    })
                })
            },
        )
        .collect::<Result<_, LayoutError>>()?;
    let mut references = HashSet::new();
    if let Some(candidates) = candidates {
        for result in &results {
            references.extend(result.found.iter().copied());
        }
        for pair in results.windows(2) {
            let mut seam = pair[0].tail.clone();
            seam.extend_from_slice(&pair[1].head);
            references.extend(scan(candidates, &seam));
        }
    }
    let cvs: Vec<ChainingValue> = results.iter().map(|r| r.cv).collect();
    Ok(NarDigest {
        hash: root_of_blocks(&cvs, size, BLOCK_LEN),
        size,
        references,
    })
}

fn scan(candidates: &HashSet<[u8; HASH_LEN]>, data: &[u8]) -> HashSet<[u8; HASH_LEN]> {
    let mut scanner = RefScanner::new(candidates);
    scanner.feed(data);
    scanner.finish()
}

/// The root hash of an input of `len` bytes (> `block_len`), given the chaining values of its
/// consecutive `block_len`-sized blocks (the last may be shorter).
pub fn root_of_blocks(cvs: &[ChainingValue], len: u64, block_len: u64) -> Blake3 {
    assert!(
        cvs.len() >= 2,
        "a single block is hashed as a root directly"
    );
    let left = blake3::hazmat::left_subtree_len(len);
    let split = (left / block_len) as usize;
    let l = merge(&cvs[..split], left, block_len);
    let r = merge(&cvs[split..], len - left, block_len);
    merge_subtrees_root(&l, &r, Mode::Hash).into()
}

fn merge(cvs: &[ChainingValue], len: u64, block_len: u64) -> ChainingValue {
    if cvs.len() == 1 {
        return cvs[0];
    }
    // BLAKE3's left subtree is the largest power of two number of chunks below the input, which
    // is a whole number of blocks whenever the input spans more than one block.
    let left = blake3::hazmat::left_subtree_len(len);
    let split = (left / block_len) as usize;
    let l = merge(&cvs[..split], left, block_len);
    let r = merge(&cvs[split..], len - left, block_len);
    merge_subtrees_non_root(&l, &r, Mode::Hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks_hash(data: &[u8], block_len: u64) -> Blake3 {
        let cvs: Vec<ChainingValue> = data
            .chunks(block_len as usize)
            .enumerate()
            .map(|(i, chunk)| {
                blake3::Hasher::new()
                    .set_input_offset(i as u64 * block_len)
                    .update(chunk)
                    .finalize_non_root()
            })
            .collect();
        root_of_blocks(&cvs, data.len() as u64, block_len)
    }

    #[test]
    fn block_merge_equals_sequential_hash() {
        let data: Vec<u8> = (0..5_000_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for block_len in [1024u64, 4096, 65536, BLOCK_LEN] {
            for len in [
                block_len as usize + 1,
                2 * block_len as usize,
                2 * block_len as usize + 7,
                3 * block_len as usize,
                5 * block_len as usize - 1,
                8 * block_len as usize,
                9 * block_len as usize + 1000,
                data.len(),
            ] {
                let len = len.min(data.len());
                if len as u64 <= block_len {
                    continue;
                }
                assert_eq!(
                    blocks_hash(&data[..len], block_len),
                    Blake3::of(&data[..len]),
                    "len {len}, block {block_len}"
                );
            }
        }
    }
}
