use super::*;
use crate::keys::{SecretKey, TrustedKeys};

const DIGEST: &str = "0123456789abcdfghijklmnpqrsvwxyz";
const DEP: &str = "zyxwvsrqpnmlkjihgfdcba9876543210-dep";

fn store_dir() -> StoreDir {
    StoreDir::new("/noodle/store").expect("store dir")
}

fn sample() -> NarInfo {
    NarInfo {
        store_path: format!("/noodle/store/{DIGEST}-hello"),
        url: "nar/abc.nar.zst".to_owned(),
        compression: Compression::Zstd,
        file_hash: Some(Blake3::of(b"file")),
        file_size: Some(100),
        nar_hash: Blake3::of(b"nar"),
        nar_size: 1000,
        references: vec![
            format!("/noodle/store/{DEP}"),
            format!("/noodle/store/{DIGEST}-hello"),
        ],
        deriver: Some(Blake3::of(b"plan").to_hex()),
        ca: Some(format!("source:{}", Blake3::of(b"nar"))),
        signatures: vec!["k1:AAAA".to_owned(), "k2:BBBB".to_owned()],
    }
}

fn parse(text: &str) -> Result<NarInfo> {
    NarInfo::parse("http://cache/x.narinfo", text, &store_dir())
}

/// The reason a narinfo is refused; also checks the error names where it came from.
fn refusal(text: &str) -> String {
    match parse(text) {
        Err(CacheError::NarInfo { url, why }) => {
            assert_eq!(url, "http://cache/x.narinfo");
            why
        }
        other => panic!("expected a narinfo error for\n{text}\ngot {other:?}"),
    }
}

/// The sample's text with the line for `key` replaced by `line` (or removed if empty).
fn with(key: &str, line: &str) -> String {
    let mut out = String::new();
    for l in sample().render().lines() {
        if l.starts_with(&format!("{key}:")) {
            if !line.is_empty() {
                out.push_str(line);
                out.push('\n');
            }
        } else {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

#[test]
fn render_is_the_documented_format() {
    let nar = Blake3::of(b"nar");
    let expected = format!(
        "StorePath: /noodle/store/{DIGEST}-hello\n\
         URL: nar/abc.nar.zst\n\
         Compression: zstd\n\
         FileHash: {}\n\
         FileSize: 100\n\
         NarHash: {nar}\n\
         NarSize: 1000\n\
         References: {DEP} {DIGEST}-hello\n\
         Deriver: {}\n\
         CA: source:{nar}\n\
         Sig: k1:AAAA\n\
         Sig: k2:BBBB\n",
        Blake3::of(b"file"),
        Blake3::of(b"plan").to_hex()
    );
    assert_eq!(sample().render(), expected);
}

#[test]
fn round_trips() {
    assert_eq!(parse(&sample().render()).expect("parses"), sample());
    let minimal = NarInfo {
        compression: Compression::None,
        file_hash: None,
        file_size: None,
        references: vec![],
        deriver: None,
        ca: None,
        signatures: vec![],
        ..sample()
    };
    let text = minimal.render();
    assert!(text.contains("\nReferences: \n"), "{text}");
    assert!(
        !text.contains("FileHash") && !text.contains("Sig"),
        "{text}"
    );
    assert_eq!(parse(&text).expect("parses"), minimal);
}

#[test]
fn tolerates_what_nix_tolerates() {
    let text = format!("{}Unknown: whatever\n\n", with("References", "References:"));
    let info = parse(&text).expect("parses");
    assert!(info.references.is_empty());
    // No Compression line: the NAR hash is checked anyway, so "none" is a safe reading.
    assert_eq!(
        parse(&with("Compression", "")).expect("parses").compression,
        Compression::None
    );
}

#[test]
fn refuses_missing_fields() {
    for key in ["StorePath", "URL", "NarHash", "NarSize", "References"] {
        let why = refusal(&with(key, ""));
        assert_eq!(why, format!("{key} is missing"));
    }
}

#[test]
fn refuses_duplicated_fields() {
    let text = sample().render();
    for key in [
        "StorePath",
        "URL",
        "Compression",
        "FileHash",
        "FileSize",
        "NarHash",
        "NarSize",
        "References",
        "Deriver",
        "CA",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{key}:")))
            .expect("line present");
        let why = refusal(&format!("{text}{line}\n"));
        assert!(why.starts_with(&format!("{key} is given twice")), "{why}");
    }
}

#[test]
fn refuses_absurd_sizes_and_bad_numbers() {
    for (key, value, needle) in [
        ("NarSize", "0", "absurd"),
        ("NarSize", "1099511627777", "absurd"),
        ("FileSize", "1099511627777", "absurd"),
        ("FileSize", "0", "absurd"),
        ("NarSize", "99999999999999999999999", "not a number"),
        ("NarSize", "+5", "not a number"),
        ("NarSize", "-5", "not a number"),
        ("FileSize", "12k", "not a number"),
        ("NarSize", "", "not a number"),
    ] {
        let why = refusal(&with(key, &format!("{key}: {value}")));
        assert!(
            why.contains(key) && why.contains(needle),
            "{key} {value}: {why}"
        );
    }
    // The largest size allowed is 1 TiB.
    let info = parse(&with("NarSize", "NarSize: 1099511627776")).expect("parses");
    assert_eq!(info.nar_size, 1 << 40);
}

#[test]
fn refuses_bad_urls() {
    for url in [
        "/nar/abc.nar.zst",
        "http://elsewhere/nar/abc.nar.zst",
        "nar/../secret",
        "nar/a/../../b",
        "nar/",
        "nar//x",
        "nar/./x",
        "abc.nar.zst",
        "nar/a b",
        "nar/x?y=1",
        "nar/x%2e%2e",
        "../nar/x",
        "",
    ] {
        let why = refusal(&with("URL", &format!("URL: {url}")));
        assert!(why.contains("URL"), "{url}: {why}");
    }
    assert!(parse(&with("URL", "URL: nar/sub/abc-1.2_x+y.nar")).is_ok());
}

#[test]
fn refuses_bad_hashes() {
    let hex = Blake3::of(b"x").to_hex();
    for (key, value) in [
        ("NarHash", hex.clone()),
        ("NarHash", "blake3:xyz".to_owned()),
        ("NarHash", format!("sha256:{hex}")),
        ("NarHash", format!("blake3:{}", &hex[1..])),
        ("FileHash", "blake3:".to_owned()),
        ("CA", hex.clone()),
        ("CA", format!("fixed:blake3:{hex}")),
    ] {
        let why = refusal(&with(key, &format!("{key}: {value}")));
        assert!(
            why.starts_with(key) && why.contains("blake3:<64 hex digits>"),
            "{key}: {why}"
        );
    }
}

#[test]
fn refuses_unknown_compression() {
    for value in ["xz", "bzip2", "ZSTD", ""] {
        let why = refusal(&with("Compression", &format!("Compression: {value}")));
        assert!(
            why.contains("Compression") && why.contains("not supported"),
            "{why}"
        );
    }
}

#[test]
fn refuses_bad_paths_and_references() {
    for line in [
        "StorePath: /other/store/0123456789abcdfghijklmnpqrsvwxyz-hello",
        "StorePath: /noodle/store/0123456789abcdfghijklmnpqrsvwxyz-hello/bin",
        "StorePath: /noodle/store/short-hello",
        "StorePath: /noodle/store/0123456789abcdfghijklmnpqrsvwxyz-",
        "StorePath: 0123456789abcdfghijklmnpqrsvwxyz-hello",
    ] {
        let why = refusal(&with("StorePath", line));
        assert!(
            why.contains("is not a store path in /noodle/store"),
            "{line}: {why}"
        );
    }
    for (line, needle) in [
        ("References: ../etc", "is not <32-character hash>-<name>"),
        (
            "References: /noodle/store/zyxwvsrqpnmlkjihgfdcba9876543210-dep",
            "is not <32-character",
        ),
        (&format!("References: {DEP} {DEP}") as &str, "listed twice"),
    ] {
        let why = refusal(&with("References", line));
        assert!(why.contains(needle), "{line}: {why}");
    }
}

#[test]
fn refuses_lines_that_are_not_fields() {
    let why = refusal(&format!("{}garbage line\n", sample().render()));
    assert!(
        why.contains("line 13") && why.contains("garbage line"),
        "{why}"
    );
    let why = refusal(&with("Deriver", "Deriver:"));
    assert!(why.contains("Deriver is empty"), "{why}");
    let why = refusal(&format!("{}Sig: \n", sample().render()));
    assert!(why.contains("Sig is empty"), "{why}");
}

#[test]
fn fingerprint_and_signature_round_trip() {
    let key = SecretKey::generate("cache-1").expect("key generation");
    let trusted = TrustedKeys::parse(&[key.public().to_text()]).expect("parses");
    let mut info = sample();
    info.signatures = vec![key.sign(&info.fingerprint())];
    assert_eq!(
        info.fingerprint(),
        format!(
            "1;/noodle/store/{DIGEST}-hello;{};1000;/noodle/store/{DIGEST}-hello,/noodle/store/{DEP}",
            Blake3::of(b"nar")
        )
    );
    let parsed = parse(&info.render()).expect("parses");
    let who = trusted
        .check(
            &parsed.store_path,
            &parsed.fingerprint(),
            &parsed.signatures,
        )
        .expect("trusted signature");
    assert_eq!(who, "cache-1");
    // Any change to a signed field breaks the signature.
    let tampered = parse(&info.render().replace("NarSize: 1000", "NarSize: 1001")).expect("parses");
    assert!(trusted
        .check(
            &tampered.store_path,
            &tampered.fingerprint(),
            &tampered.signatures
        )
        .is_err());
}

#[test]
fn narinfo_name_is_the_digest() {
    let path = StorePath::from_base_name(&format!("{DIGEST}-hello")).expect("base name");
    assert_eq!(narinfo_name(&path), format!("{DIGEST}.narinfo"));
}

#[test]
fn cache_info_round_trip_and_refusals() {
    let info = CacheInfo {
        store_dir: "/noodle/store".to_owned(),
        want_mass_query: true,
        priority: 40,
    };
    let text = info.render();
    assert_eq!(
        text,
        "StoreDir: /noodle/store\nWantMassQuery: 1\nPriority: 40\n"
    );
    assert_eq!(CacheInfo::parse("u", &text).expect("parses"), info);
    let defaults = CacheInfo::parse("u", "StoreDir: /s\nOther: x\n").expect("parses");
    assert_eq!((defaults.want_mass_query, defaults.priority), (false, 50));

    for (text, needle) in [
        ("WantMassQuery: 1\n", "StoreDir is missing"),
        ("StoreDir: relative\n", "StoreDir"),
        ("StoreDir: /s\nStoreDir: /t\n", "StoreDir is given twice"),
        (
            "StoreDir: /s\nPriority: x\n",
            "Priority \"x\" is not a number",
        ),
        ("StoreDir: /s\nPriority: 99999999999\n", "too large"),
        ("StoreDir: /s\nWantMassQuery: yes\n", "not 0 or 1"),
        ("<html>\n", "is not 'Key: value'"),
    ] {
        match CacheInfo::parse("http://c/cache-info", text) {
            Err(CacheError::CacheInfo { url, why }) => {
                assert_eq!(url, "http://c/cache-info");
                assert!(why.contains(needle), "{text}: {why}");
            }
            other => panic!("{text}: {other:?}"),
        }
    }
}
