//! Which of the three things a cache serves a request asks for. Anything not exactly one of
//! those shapes is refused before it can name a file: no decoding, no normalising, so
//! `..`, `%2e`, `//`, queries and odd case never reach the store.

use noodle_store::base32;
use noodle_store::path::DIGEST_CHARS;

use crate::narinfo::CACHE_INFO;

/// Hex characters of a BLAKE3 digest.
const HASH_HEX: usize = 64;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    CacheInfo,
    NarInfo {
        digest: &'a str,
    },
    Nar {
        digest: &'a str,
        nar_hash_hex: &'a str,
    },
}

fn is_digest(text: &str) -> bool {
    text.len() == DIGEST_CHARS && text.bytes().all(base32::is_alphabet_char)
}

/// Lower case only: the URL is the one our narinfo names, which `Blake3::to_hex` spells so.
fn is_hash_hex(text: &str) -> bool {
    text.len() == HASH_HEX && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

pub(crate) fn route(url: &str) -> Option<Route<'_>> {
    let rest = url.strip_prefix('/')?;
    if rest == CACHE_INFO {
        return Some(Route::CacheInfo);
    }
    if let Some(digest) = rest.strip_suffix(".narinfo") {
        return is_digest(digest).then_some(Route::NarInfo { digest });
    }
    let name = rest.strip_prefix("nar/")?.strip_suffix(".nar.zst")?;
    let (digest, nar_hash_hex) = name.split_once('-')?;
    (is_digest(digest) && is_hash_hex(nar_hash_hex)).then_some(Route::Nar {
        digest,
        nar_hash_hex,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "0123456789abcdfghijklmnpqrsvwxyz";

    fn hex() -> String {
        "0123456789abcdef".repeat(4)
    }

    #[test]
    fn the_three_shapes() {
        assert_eq!(route("/cache-info"), Some(Route::CacheInfo));
        assert_eq!(
            route(&format!("/{DIGEST}.narinfo")),
            Some(Route::NarInfo { digest: DIGEST })
        );
        let url = format!("/nar/{DIGEST}-{}.nar.zst", hex());
        let hex = hex();
        assert_eq!(
            route(&url),
            Some(Route::Nar {
                digest: DIGEST,
                nar_hash_hex: &hex
            })
        );
    }

    #[test]
    fn everything_else_is_refused() {
        let hex = hex();
        let refused = [
            String::new(),
            "/".into(),
            "cache-info".into(),
            "//cache-info".into(),
            "/cache-info/".into(),
            "/cache-info?x=1".into(),
            "/./cache-info".into(),
            "/nar/../cache-info".into(),
            "/../../etc/passwd".into(),
            "/%2e%2e/cache-info".into(),
            "http://host/cache-info".into(),
            // Digests: wrong length, letters outside Nix's base32 (e o t u), upper case.
            format!("/{}.narinfo", &DIGEST[1..]),
            format!("/{DIGEST}0.narinfo"),
            format!("/{}e.narinfo", &DIGEST[1..]),
            format!("/{}.narinfo", DIGEST.to_uppercase()),
            format!("/{DIGEST}.narinfo?"),
            format!("/nar/{DIGEST}.narinfo"),
            format!("/../{DIGEST}.narinfo"),
            format!("/{DIGEST}/../{DIGEST}.narinfo"),
            // NARs: the hash must be exactly 64 lower-case hex digits; only .nar.zst exists.
            format!("/nar/{DIGEST}-{}.nar.zst", &hex[1..]),
            format!("/nar/{DIGEST}-{hex}0.nar.zst"),
            format!("/nar/{DIGEST}-{}.nar.zst", hex.to_uppercase()),
            format!("/nar/{DIGEST}-{hex}.nar"),
            format!("/nar/{DIGEST}-{hex}.nar.xz"),
            format!("/nar/{DIGEST}{hex}.nar.zst"),
            format!("/nar/{DIGEST}--{hex}.nar.zst"),
            format!("/nar//{DIGEST}-{hex}.nar.zst"),
            format!("/nar/../nar/{DIGEST}-{hex}.nar.zst"),
            format!("/nar/{DIGEST}-{hex}.nar.zst/"),
            format!("/x/nar/{DIGEST}-{hex}.nar.zst"),
        ];
        for url in &refused {
            assert_eq!(route(url), None, "{url:?} must be refused");
        }
    }
}
