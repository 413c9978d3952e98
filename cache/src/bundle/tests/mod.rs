//! Bundles end to end: a closure exported from one store and imported into another, and
//! hand-made archives for each way a bundle can be wrong.

mod refusals;
mod roundtrip;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use noodle_store::{AddOptions, Added, Silent, Store, VerifyOptions};
use tar::EntryType;

use super::*;
use crate::keys::{SecretKey, TrustedKeys};

/// A store holding `a` and `b`, where `b` refers to `a`, and a key trusted by importers.
struct Fixture {
    dir: tempfile::TempDir,
    store: Store,
    a: Added,
    b: Added,
    key: SecretKey,
    trusted: TrustedKeys,
}

/// A fixed key: signatures, and so whole bundles, come out the same every run.
fn fixed_key(name: &str, seed: u8) -> SecretKey {
    let signing = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let text = base64::engine::general_purpose::STANDARD.encode(signing.to_keypair_bytes());
    SecretKey::parse(&format!("{name}:{text}")).expect("key")
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let tree_a = dir.path().join("a");
    fs_err::create_dir_all(tree_a.join("bin")).expect("mkdir");
    fs_err::write(tree_a.join("greeting"), b"hello\n").expect("write");
    fs_err::write(tree_a.join("bin/run"), b"#!/bin/sh\necho hi\n").expect("write");
    fs_err::set_permissions(
        tree_a.join("bin/run"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    fs_err::os::unix::fs::symlink("bin/run", tree_a.join("link")).expect("symlink");
    let mut store = Store::init(&dir.path().join("store"), None).expect("init");
    let a = store
        .add_tree(&tree_a, &AddOptions::default(), &Silent)
        .expect("add a");
    let tree_b = dir.path().join("b");
    fs_err::create_dir_all(&tree_b).expect("mkdir");
    fs_err::write(tree_b.join("uses"), format!("exec {}/bin/run\n", a.path)).expect("write");
    let scan = AddOptions {
        scan_references: true,
        ..Default::default()
    };
    let b = store.add_tree(&tree_b, &scan, &Silent).expect("add b");
    assert!(b.references.contains(&a.path), "{:?}", b.references);
    let key = fixed_key("test-1", 7);
    let trusted = TrustedKeys::parse(&[key.public().to_text()]).expect("trusted");
    Fixture {
        dir,
        store,
        a,
        b,
        key,
        trusted,
    }
}

impl Fixture {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The closure of `b`, signed by the fixture's key.
    fn export(&self) -> PathBuf {
        let out = self.path("app.noodle");
        export(
            &self.store,
            std::slice::from_ref(&self.b.path),
            std::slice::from_ref(&self.key),
            &out,
            &Silent,
        )
        .expect("export");
        out
    }

    /// A fresh, empty store with the same store directory.
    fn target(&self, name: &str) -> Store {
        Store::init(&self.path(name), None).expect("init")
    }

    fn import(&self, store: &mut Store, file: &Path) -> crate::Result<ImportReport> {
        import(store, file, &self.trusted, true, &Silent)
    }

    /// Imports `file`, which must be refused, and checks that `store` was left untouched.
    fn refused(&self, store: &mut Store, file: &Path) -> String {
        let err = self
            .import(store, file)
            .expect_err("the bundle must be refused");
        assert_untouched(store);
        let text = err.to_string();
        assert!(text.contains("nothing was registered"), "{text}");
        text
    }

    /// The good bundle's entries, to be changed by a test and written back with `craft`.
    fn entries(&self) -> Vec<Raw> {
        read_entries(&self.export())
    }

    fn sign(&self, manifest: &[u8]) -> Vec<u8> {
        format!("{}\n", self.key.sign(&manifest_fingerprint(manifest))).into_bytes()
    }
}

fn assert_untouched(store: &Store) {
    let paths = store.db().all_paths().expect("db");
    assert!(paths.is_empty(), "registered: {paths:?}");
    let tmp: Vec<_> = fs_err::read_dir(store.dirs().tmp()).expect("tmp").collect();
    assert!(tmp.is_empty(), "left in var/tmp: {tmp:?}");
}

/// One tar entry as a test wants it: any name bytes, type, mode and contents.
#[derive(Clone)]
struct Raw {
    name: Vec<u8>,
    kind: EntryType,
    mode: u32,
    data: Vec<u8>,
}

fn file(name: &str, data: &[u8]) -> Raw {
    Raw {
        name: name.as_bytes().to_vec(),
        kind: EntryType::Regular,
        mode: 0o444,
        data: data.to_vec(),
    }
}

fn read_entries(bundle: &Path) -> Vec<Raw> {
    let decoder = zstd::Decoder::new(fs_err::File::open(bundle).expect("open")).expect("zstd");
    let mut archive = tar::Archive::new(decoder);
    let mut entries = Vec::new();
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("read");
        entries.push(Raw {
            name: entry.path_bytes().into_owned(),
            kind: entry.header().entry_type(),
            mode: entry.header().mode().expect("mode"),
            data,
        });
    }
    entries
}

/// Writes `entries` as zstd(tar) exactly as given (no name checks), then `trailer` inside
/// the compressed stream after the end of the archive.
fn craft_with_trailer(out: &Path, entries: &[Raw], trailer: &[u8]) -> PathBuf {
    let encoder = zstd::Encoder::new(fs_err::File::create(out).expect("create"), 3)
        .expect("zstd")
        .auto_finish();
    let mut builder = tar::Builder::new(encoder);
    for raw in entries {
        let mut header = tar::Header::new_ustar();
        header.as_old_mut().name[..raw.name.len()].copy_from_slice(&raw.name);
        header.set_entry_type(raw.kind);
        header.set_mode(raw.mode);
        header.set_size(raw.data.len() as u64);
        if matches!(raw.kind, EntryType::Symlink | EntryType::Link) {
            header.set_link_name("manifest.json").expect("link name");
        }
        header.set_cksum();
        builder
            .append(&header, raw.data.as_slice())
            .expect("append");
    }
    let mut encoder = builder.into_inner().expect("finish tar");
    encoder.write_all(trailer).expect("trailer");
    out.to_owned()
}

fn craft(out: &Path, entries: &[Raw]) -> PathBuf {
    craft_with_trailer(out, entries, &[])
}

fn manifest_of(entries: &[Raw]) -> Manifest {
    serde_json::from_slice(&entries[0].data).expect("manifest")
}

fn no_problems(store: &mut Store) {
    let options = VerifyOptions {
        check_contents: true,
        ..Default::default()
    };
    let report = store.verify(&options, &Silent).expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}
