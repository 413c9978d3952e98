//! `noodle store dump` must print exactly the bytes of `nix-store --dump` (DESIGN.md §3).

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use common::{make_tree, set_mode, stderr_of, Noodle};

const KIB: usize = 1024;

fn nix_dump(path: &Path) -> Vec<u8> {
    let out = match Command::new("nix-store").arg("--dump").arg(path).output() {
        Ok(out) => out,
        Err(e) => panic!(
            "cannot run nix-store ({e}): these tests compare with Nix; install it with \
             `apt-get install nix-bin` (CI installs it)"
        ),
    };
    assert!(
        out.status.success(),
        "nix-store --dump {} failed: {}",
        path.display(),
        stderr_of(&out)
    );
    out.stdout
}

/// Asserts both tools print the same archive for `path`, and returns it.
fn same_as_nix(noodle: &Noodle, path: &Path) -> Vec<u8> {
    let ours = noodle.dump(path.to_str().expect("utf-8 path"));
    let theirs = nix_dump(path);
    if ours != theirs {
        let at = ours
            .iter()
            .zip(&theirs)
            .position(|(a, b)| a != b)
            .unwrap_or(ours.len().min(theirs.len()));
        let from = at.saturating_sub(32);
        panic!(
            "archives of {} differ at byte {at} (noodle {} bytes, nix {} bytes)\n\
             noodle: {:?}\nnix:    {:?}",
            path.display(),
            ours.len(),
            theirs.len(),
            String::from_utf8_lossy(&ours[from..(at + 64).min(ours.len())]),
            String::from_utf8_lossy(&theirs[from..(at + 64).min(theirs.len())]),
        );
    }
    ours
}

fn write(path: &Path, data: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, data).expect("write");
}

/// Bytes that are not all alike, so a shifted or reordered copy would not compare equal.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
        .collect()
}

#[test]
fn nix_store_is_installed() {
    let out = Command::new("nix-store").arg("--version").output();
    assert!(
        out.as_ref().is_ok_and(|o| o.status.success()),
        "nix-store is missing: install it with `apt-get install nix-bin` (CI installs it): {out:?}"
    );
}

#[test]
fn mixed_tree() {
    let noodle = Noodle::new();
    let tree = noodle.scratch("mixed");
    make_tree(&tree, "nix");
    write(&tree.join("bin/user-exec-only"), "#!/bin/sh\n");
    set_mode(&tree.join("bin/user-exec-only"), 0o700);
    write(
        &tree.join("bin/group-exec-only"),
        "not executable for nix\n",
    );
    set_mode(&tree.join("bin/group-exec-only"), 0o654);
    write(&tree.join("bin/read-only"), "r\n");
    set_mode(&tree.join("bin/read-only"), 0o400);
    symlink("../bin/tool", tree.join("share/rel-link")).expect("symlink");
    symlink("/usr/bin/env", tree.join("share/abs-link")).expect("symlink");
    symlink("does/not/exist", tree.join("share/dangling")).expect("symlink");
    symlink(".", tree.join("share/dot")).expect("symlink");
    symlink("x".repeat(300), tree.join("share/long-target")).expect("symlink");
    std::fs::create_dir_all(tree.join("empty/nested/empty")).expect("mkdir");
    write(&tree.join("e/empty-file"), "");
    for len in [1, 7, 8, 9, 15, 16, 17] {
        write(&tree.join(format!("pad/{len}")), vec![b'p'; len]);
    }
    std::fs::hard_link(tree.join("bin/tool"), tree.join("bin/tool-hardlink")).expect("link");
    same_as_nix(&noodle, &tree);
}

#[test]
fn unusual_names_sort_bytewise() {
    let noodle = Noodle::new();
    let tree = noodle.scratch("names");
    std::fs::create_dir_all(&tree).expect("mkdir");
    let names: &[&[u8]] = &[
        b"B",
        b"a",
        "é".as_bytes(),
        "Ä".as_bytes(),
        "日本語".as_bytes(),
        b"with space",
        b" leading space",
        b"-leading-dash",
        b"--",
        b"a.b",
        b"a-b",
        b"a_b",
        b"a0",
        b"aa",
        b"Z",
        b"_",
        b"~tilde",
        b".hidden",
        b"..dots",
        b"tab\there",
        b"new\nline",
        b"back\\slash",
        b"quote'\"",
        b"non-utf8-\xff\xfe",
        b"\x01control",
    ];
    for (i, name) in names.iter().enumerate() {
        write(&tree.join(OsStr::from_bytes(name)), format!("{i}\n"));
    }
    std::fs::create_dir(tree.join("dir é")).expect("mkdir");
    write(&tree.join("dir é/-x"), "");
    write(&tree.join(OsStr::from_bytes(&[b'n'; 255])), "longest name");
    let nar = same_as_nix(&noodle, &tree);
    // And the order really is bytewise: "B" < "a" < "é".
    let find = |needle: &[u8]| {
        nar.windows(needle.len())
            .position(|w| w == needle)
            .expect("name in archive")
    };
    let pos = |s: &[u8]| {
        let mut tagged = (s.len() as u64).to_le_bytes().to_vec();
        tagged.extend_from_slice(s);
        find(&tagged)
    };
    assert!(pos(b"B") < pos(b"a") && pos(b"a") < pos("é".as_bytes()));
}

#[test]
fn deep_nesting() {
    let noodle = Noodle::new();
    let tree = noodle.scratch("deep");
    let mut dir = tree.clone();
    for level in 0..50 {
        dir.push(format!("d{level}"));
    }
    write(&dir.join("bottom"), "deep down\n");
    write(&tree.join("d0/side"), "beside\n");
    same_as_nix(&noodle, &tree);
}

#[test]
fn block_sized_and_big_files() {
    let noodle = Noodle::new();
    let tree = noodle.scratch("sizes");
    let sizes = [
        256 * KIB - 1,
        256 * KIB,
        256 * KIB + 1,
        512 * KIB,
        1024 * KIB - 1,
        1024 * KIB,
        1024 * KIB + 1,
        3 * 1024 * KIB + 7,
    ];
    for (i, size) in sizes.into_iter().enumerate() {
        write(&tree.join(format!("f{size}")), pattern(size, i as u8));
    }
    same_as_nix(&noodle, &tree);
    // Each as the only file, so the file's boundary meets the archive's block boundaries.
    for (i, size) in sizes.into_iter().enumerate() {
        let single = noodle.scratch(&format!("single-{size}"));
        write(&single.join("f"), pattern(size, 100 + i as u8));
        same_as_nix(&noodle, &single);
        same_as_nix(&noodle, &single.join("f"));
    }
}

#[test]
fn many_small_files() {
    let noodle = Noodle::new();
    let tree = noodle.scratch("many");
    for i in 0..2000 {
        write(
            &tree.join(format!("d{}/f{i}", i % 37)),
            pattern(i % 300, i as u8),
        );
    }
    same_as_nix(&noodle, &tree);
}

#[test]
fn file_and_symlink_as_root() {
    let noodle = Noodle::new();
    let file = noodle.scratch("file");
    write(&file, "a single file\n");
    same_as_nix(&noodle, &file);
    let exe = noodle.scratch("exe");
    write(&exe, "#!/bin/sh\n");
    set_mode(&exe, 0o755);
    same_as_nix(&noodle, &exe);
    let empty = noodle.scratch("empty");
    write(&empty, "");
    same_as_nix(&noodle, &empty);
    let link = noodle.scratch("link");
    symlink("somewhere/else", &link).expect("symlink");
    same_as_nix(&noodle, &link);
    let dir_link = noodle.scratch("dir-link");
    symlink(noodle.scratch("file"), &dir_link).expect("symlink");
    let nar = same_as_nix(&noodle, &dir_link);
    assert!(
        nar.windows(7).any(|w| w == b"symlink"),
        "a symlink root is archived as a symlink, not followed"
    );
    let empty_dir = noodle.scratch("empty-dir");
    std::fs::create_dir(&empty_dir).expect("mkdir");
    same_as_nix(&noodle, &empty_dir);
}

#[test]
fn store_path_restores_to_what_nix_dumps() {
    let noodle = Noodle::new();
    let tree = noodle.scratch("tree");
    make_tree(&tree, "restore");
    write(&tree.join("big"), pattern(600 * KIB + 3, 9));
    symlink("/abs/target", tree.join("abs")).expect("symlink");
    std::fs::create_dir(tree.join("empty")).expect("mkdir");
    let path = noodle.add(&tree);
    let from_store = noodle.dump(&path);
    assert_eq!(from_store, nix_dump(&noodle.physical(&path)));
    assert_eq!(from_store, nix_dump(&tree));
    let out_dir = noodle.scratch("restored");
    let out = noodle.run_stdin(
        &["store", "restore", out_dir.to_str().expect("utf-8")],
        &from_store,
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(nix_dump(&out_dir), from_store);
    // A single-file store path too.
    let file = noodle.scratch("single");
    write(&file, pattern(300 * KIB, 1));
    let path = noodle.add(&file);
    let nar = noodle.dump(&path);
    assert_eq!(nar, nix_dump(&file));
    let out_file = noodle.scratch("restored-file");
    let out = noodle.run_stdin(
        &["store", "restore", out_file.to_str().expect("utf-8")],
        &nar,
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(nix_dump(&out_file), nar);
}
