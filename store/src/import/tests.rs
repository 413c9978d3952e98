use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::{AddOptions, Silent};

/// A store with one added tree (file, executable, symlink, subdirectory), and its NAR.
fn store_with_tree() -> (tempfile::TempDir, Store, Added, Vec<u8>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = dir.path().join("tree");
    fs_err::create_dir_all(tree.join("bin")).expect("mkdir");
    fs_err::write(tree.join("README"), b"hello\n").expect("write");
    fs_err::write(tree.join("bin/run"), b"#!/bin/sh\necho hi\n").expect("write");
    fs_err::set_permissions(tree.join("bin/run"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    fs_err::os::unix::fs::symlink("bin/run", tree.join("link")).expect("symlink");
    let mut store = Store::init(&dir.path().join("root"), None).expect("init");
    let added = store
        .add_tree(&tree, &AddOptions::default(), &Silent)
        .expect("add");
    let layout = NarLayout::of(&store.dirs().physical(&added.path)).expect("layout");
    let mut nar = Vec::new();
    crate::nar::dump(&layout, &mut nar).expect("dump");
    (dir, store, added, nar)
}

fn expected_of(added: &Added) -> Expected {
    Expected {
        path: added.path.clone(),
        nar_hash: Blake3::parse(&added.nar_hash).expect("hash"),
        nar_size: added.nar_size,
        references: added.references.clone(),
        ca: Some(format!("source:{}", added.nar_hash)),
        deriver: None,
        signatures: vec!["k:c2ln".into()],
    }
}

/// A second, empty store with the same store directory.
fn empty_store(dir: &tempfile::TempDir) -> Store {
    Store::init(&dir.path().join("other"), None).expect("init")
}

fn assert_verifies_clean(store: &mut Store) {
    let options = crate::VerifyOptions {
        check_contents: true,
        ..Default::default()
    };
    let report = store.verify(&options, &Silent).expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

fn tmp_is_empty(store: &Store) -> bool {
    fs_err::read_dir(store.dirs().tmp())
        .expect("tmp")
        .next()
        .is_none()
}

#[test]
fn a_nar_is_staged_committed_and_registered_with_its_signatures() {
    let (dir, _store, added, nar) = store_with_tree();
    let mut other = empty_store(&dir);
    let staged = stage_nar(
        other.dirs(),
        &mut nar.as_slice(),
        expected_of(&added),
        &|_| {},
    )
    .expect("stage");
    let committed = other.commit_staged(staged).expect("commit");
    assert!(committed.added);
    let info = other
        .db()
        .path_info(&added.path)
        .expect("db")
        .expect("valid");
    assert_eq!(info.nar_hash, added.nar_hash);
    assert_eq!(info.signatures, vec!["k:c2ln".to_owned()]);
    assert_verifies_clean(&mut other);
    let physical = other.dirs().physical(&added.path);
    let mode = fs_err::metadata(physical.join("bin/run"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o555);
    assert!(tmp_is_empty(&other));
}

#[test]
fn a_corrupted_nar_is_refused_and_nothing_is_left() {
    let (dir, _store, added, mut nar) = store_with_tree();
    let mut other = empty_store(&dir);
    // Flip a byte of README's contents: the archive still parses, the hash must catch it.
    let at = nar
        .windows(6)
        .position(|w| w == b"hello\n")
        .expect("contents");
    nar[at] ^= 1;
    let err = stage_nar(
        other.dirs(),
        &mut nar.as_slice(),
        expected_of(&added),
        &|_| {},
    )
    .expect_err("corrupted");
    assert!(err.to_string().contains("NAR hash mismatch"), "{err}");
    assert!(tmp_is_empty(&other));
    assert!(!other.db_mut().is_valid(&added.path).expect("db"));
}

#[test]
fn a_short_or_long_nar_is_a_size_mismatch() {
    let (dir, _store, added, nar) = store_with_tree();
    let other = empty_store(&dir);
    let short = &nar[..nar.len() - 8];
    let err = stage_nar(other.dirs(), &mut &short[..], expected_of(&added), &|_| {})
        .expect_err("truncated");
    assert!(err.to_string().contains("truncated"), "{err}");
    let mut long = nar.clone();
    long.extend_from_slice(&[0; 64]);
    let err = stage_nar(
        other.dirs(),
        &mut long.as_slice(),
        expected_of(&added),
        &|_| {},
    )
    .expect_err("long");
    assert!(err.to_string().contains("NAR size mismatch"), "{err}");
    let mut smaller = expected_of(&added);
    smaller.nar_size -= 8;
    let err = stage_nar(other.dirs(), &mut nar.as_slice(), smaller, &|_| {}).expect_err("size");
    assert!(err.to_string().contains("NAR size mismatch"), "{err}");
    assert!(tmp_is_empty(&other));
}

#[test]
fn a_content_address_that_does_not_name_the_path_is_refused() {
    let (dir, _store, added, nar) = store_with_tree();
    let other = empty_store(&dir);
    let mut renamed = expected_of(&added);
    renamed.path = renamed.path.replace("-tree", "-other");
    let err = stage_nar(other.dirs(), &mut nar.as_slice(), renamed, &|_| {}).expect_err("name");
    assert!(err.to_string().contains("content-addressed"), "{err}");
}

#[test]
fn references_must_be_valid_before_commit() {
    let (dir, _store, added, nar) = store_with_tree();
    let mut other = empty_store(&dir);
    let mut expected = expected_of(&added);
    expected.ca = None;
    expected.references = vec![format!("{}/{}-dep", other.store_dir(), "0".repeat(32))];
    let staged = stage_nar(other.dirs(), &mut nar.as_slice(), expected, &|_| {}).expect("stage");
    let err = other.commit_staged(staged).expect_err("missing reference");
    assert!(
        err.to_string().contains("is not a valid path here"),
        "{err}"
    );
    assert!(!other.db_mut().is_valid(&added.path).expect("db"));
    assert!(tmp_is_empty(&other));
    assert!(!other.dirs().physical(&added.path).exists());
}

#[test]
fn a_damaged_path_is_replaced_in_place() {
    let (_dir, mut store, added, nar) = store_with_tree();
    let physical = store.dirs().physical(&added.path);
    let readme = physical.join("README");
    fs_err::set_permissions(&readme, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    fs_err::write(&readme, b"HELLO\n").expect("damage");
    let staged = stage_nar(
        store.dirs(),
        &mut nar.as_slice(),
        expected_of(&added),
        &|_| {},
    )
    .expect("stage");
    store.replace_damaged(staged).expect("replace");
    assert_eq!(fs_err::read(&readme).expect("read"), b"hello\n");
    assert_verifies_clean(&mut store);
    assert!(tmp_is_empty(&store));
}
