//! Newtype digests, so a NAR hash can never be confused with a plan hash or a file hash.

use std::fmt;

/// A BLAKE3 digest of some byte stream (a NAR, a file, a build plan).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Blake3([u8; 32]);

impl Blake3 {
    pub const PREFIX: &'static str = "blake3:";

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn of(data: &[u8]) -> Self {
        Self(*blake3::hash(data).as_bytes())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    /// Parses `blake3:<64 hex>` (the form stored in the database) or bare hex.
    pub fn parse(text: &str) -> Option<Self> {
        let hex = text.strip_prefix(Self::PREFIX).unwrap_or(text);
        blake3::Hash::from_hex(hex)
            .ok()
            .map(|h| Self(*h.as_bytes()))
    }
}

impl From<blake3::Hash> for Blake3 {
    fn from(hash: blake3::Hash) -> Self {
        Self(*hash.as_bytes())
    }
}

/// Printed as `blake3:<hex>`, the stable text form used in the database and JSON.
impl fmt::Display for Blake3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, self.to_hex())
    }
}

impl fmt::Debug for Blake3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip() {
        let h = Blake3::of(b"noodle");
        assert_eq!(Blake3::parse(&h.to_string()), Some(h));
        assert_eq!(Blake3::parse(&h.to_hex()), Some(h));
        assert_eq!(Blake3::parse("blake3:xyz"), None);
    }
}
