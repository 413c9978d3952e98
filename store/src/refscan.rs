//! Finding references: the 32-character hash parts of candidate store paths in a byte stream.

use std::collections::HashSet;

use crate::base32::is_alphabet_char;

pub const HASH_LEN: usize = crate::path::DIGEST_CHARS;

/// Scans bytes fed in pieces of any size; a hash split across two pieces is still found.
pub struct RefScanner<'c> {
    candidates: &'c HashSet<[u8; HASH_LEN]>,
    found: HashSet<[u8; HASH_LEN]>,
    /// The last `HASH_LEN - 1` bytes seen, which may begin a hash the next piece completes.
    carry: Vec<u8>,
}

impl<'c> RefScanner<'c> {
    pub fn new(candidates: &'c HashSet<[u8; HASH_LEN]>) -> Self {
        Self {
            candidates,
            found: HashSet::new(),
            carry: Vec::with_capacity(2 * HASH_LEN),
        }
    }

    pub fn feed(&mut self, data: &[u8]) {
        if self.candidates.is_empty() || data.is_empty() {
            return;
        }
        if !self.carry.is_empty() {
            let take = data.len().min(HASH_LEN - 1);
            let mut seam = std::mem::take(&mut self.carry);
            seam.extend_from_slice(&data[..take]);
            self.scan(&seam);
            // Keep what may still start a hash: the seam's last HASH_LEN - 1 bytes.
            if data.len() < HASH_LEN - 1 {
                let keep = seam.len().saturating_sub(HASH_LEN - 1);
                self.carry = seam[keep..].to_vec();
                return;
            }
        }
        self.scan(data);
        self.carry = data[data.len() - (HASH_LEN - 1).min(data.len())..].to_vec();
    }

    /// Scans one contiguous buffer, skipping ahead past any byte outside the alphabet.
    fn scan(&mut self, data: &[u8]) {
        let mut i = 0;
        while i + HASH_LEN <= data.len() {
            let window = &data[i..i + HASH_LEN];
            match window.iter().rposition(|&b| !is_alphabet_char(b)) {
                Some(bad) => i += bad + 1,
                None => {
                    let key: [u8; HASH_LEN] = window.try_into().expect("window is HASH_LEN long");
                    if self.candidates.contains(&key) {
                        self.found.insert(key);
                    }
                    i += 1;
                }
            }
        }
    }

    pub fn finish(self) -> HashSet<[u8; HASH_LEN]> {
        self.found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> [u8; HASH_LEN] {
        s.as_bytes().try_into().expect("32 chars")
    }

    const A: &str = "0123456789abcdfghijklmnpqrsvwxyz";
    const B: &str = "zyxwvsrqpnmlkjihgfdcba9876543210";

    fn scan_in_pieces(
        data: &[u8],
        piece: usize,
        set: &HashSet<[u8; HASH_LEN]>,
    ) -> HashSet<[u8; HASH_LEN]> {
        let mut scanner = RefScanner::new(set);
        for chunk in data.chunks(piece) {
            scanner.feed(chunk);
        }
        scanner.finish()
    }

    #[test]
    fn finds_hashes_across_every_split() {
        let set: HashSet<_> = [key(A), key(B)].into();
        let text = format!("xx/noodle/store/{A}-foo\0 and then {B}!");
        for piece in 1..text.len() + 1 {
            let found = scan_in_pieces(text.as_bytes(), piece, &set);
            assert_eq!(found, set, "piece size {piece}");
        }
    }

    #[test]
    fn ignores_non_candidates_and_partial_hashes() {
        let set: HashSet<_> = [key(A)].into();
        let near = &A[1..];
        let text = format!("{near}-{B} {}", &A[..31]);
        for piece in [1, 5, 31, 32, 33, 1000] {
            assert!(scan_in_pieces(text.as_bytes(), piece, &set).is_empty());
        }
    }

    #[test]
    fn finds_hash_inside_longer_base32_run() {
        let set: HashSet<_> = [key(A)].into();
        let text = format!("000{A}000");
        for piece in [1, 3, 7, 40] {
            assert_eq!(scan_in_pieces(text.as_bytes(), piece, &set).len(), 1);
        }
    }
}
