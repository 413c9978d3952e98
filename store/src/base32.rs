//! Nix's base32: the alphabet and bit order of Nix store path digests.

pub const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Length of the base32 text for `len` bytes.
pub const fn encoded_len(len: usize) -> usize {
    (len * 8).div_ceil(5)
}

/// Encodes like Nix: the last character holds the lowest bits of the first byte.
pub fn encode(bytes: &[u8]) -> String {
    let len = encoded_len(bytes.len());
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let bit = n * 5;
        let (i, j) = (bit / 8, bit % 8);
        let low = u16::from(bytes[i]) >> j;
        let high = if i + 1 < bytes.len() {
            u16::from(bytes[i + 1]) << (8 - j)
        } else {
            0
        };
        out.push(char::from(ALPHABET[usize::from((low | high) & 0x1f)]));
    }
    out
}

pub fn is_alphabet_char(byte: u8) -> bool {
    matches!(byte, b'0'..=b'9' | b'a'..=b'd' | b'f'..=b'n' | b'p'..=b's' | b'v'..=b'z')
}

/// Decodes Nix base32 text into `out.len()` bytes; `None` on a bad character or length.
pub fn decode(text: &str, out: &mut [u8]) -> Option<()> {
    if text.len() != encoded_len(out.len()) {
        return None;
    }
    out.fill(0);
    for (n, c) in text.bytes().rev().enumerate() {
        let digit = ALPHABET.iter().position(|&a| a == c)? as u16;
        let bit = n * 5;
        let (i, j) = (bit / 8, bit % 8);
        out[i] |= (digit << j) as u8;
        let carry = (digit >> (8 - j)) as u8;
        if i + 1 < out.len() {
            out[i + 1] |= carry;
        } else if carry != 0 {
            return None;
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_nix_for_known_digest() {
        // `nix-hash --type sha1 --to-base32 0000000000000000000000000000000000000000` style:
        // 20 zero bytes encode to 32 zeros.
        assert_eq!(encode(&[0u8; 20]), "0".repeat(32));
        // From Nix's test suite: sha256 of "" in base32.
        let sha256_empty: [u8; 32] = [
            0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f,
            0xb9, 0x24, 0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b,
            0x78, 0x52, 0xb8, 0x55,
        ];
        assert_eq!(
            encode(&sha256_empty),
            "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
        );
    }

    #[test]
    fn round_trips() {
        for len in [1usize, 5, 20, 32] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text = encode(&bytes);
            assert!(text.bytes().all(is_alphabet_char));
            let mut back = vec![0u8; len];
            decode(&text, &mut back).expect("valid text");
            assert_eq!(back, bytes);
        }
    }

    #[test]
    fn rejects_bad_text() {
        let mut out = [0u8; 20];
        assert!(decode(&"e".repeat(32), &mut out).is_none());
        assert!(decode("abc", &mut out).is_none());
        assert!(
            decode("zz", &mut [0u8; 1]).is_none(),
            "overflowing top bits"
        );
    }
}
