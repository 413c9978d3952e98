//! Tests of the NAR parser and restore.
use super::*;
use crate::nar::parse::*;
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
    let deepest: PathBuf = std::iter::repeat_n("d", MAX_DEPTH).collect();
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
    let err = restore_to_dir(&bytes[..], &tmp.path().join("no/such/dir")).expect_err("no parent");
    assert!(err.to_string().contains("does not exist"), "{err}");
}
