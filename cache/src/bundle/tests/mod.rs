//! Bundles end to end: a closure exported from one store and imported into another, and
//! hand-made archives for each way a bundle can be wrong.

mod refusals;

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

#[test]
fn a_closure_exported_from_one_store_imports_into_another() {
    let f = fixture();
    let out = f.path("app.noodle");
    let exported = export(
        &f.store,
        std::slice::from_ref(&f.b.path),
        std::slice::from_ref(&f.key),
        &out,
        &Silent,
    )
    .expect("export");
    assert_eq!(exported.paths, 2);
    assert_eq!(exported.nar_bytes, f.a.nar_size + f.b.nar_size);
    assert_eq!(
        exported.file_bytes,
        fs_err::metadata(&out).expect("stat").len()
    );
    let mut other = f.target("other");
    let report = f.import(&mut other, &out).expect("import");
    assert_eq!(report.paths, vec![f.a.path.clone(), f.b.path.clone()]);
    assert_eq!(report.already_valid, 0);
    assert_eq!(report.signed_by.as_deref(), Some("test-1"));
    no_problems(&mut other);
    let info = other.db().path_info(&f.b.path).expect("db").expect("valid");
    assert_eq!(info.nar_hash, f.b.nar_hash);
    assert_eq!(info.references, f.b.references);
    assert_eq!(info.ca, Some(format!("source:{}", f.b.nar_hash)));
    // Each path carries the exporter's signature over its own fingerprint.
    let hash = noodle_store::Blake3::parse(&info.nar_hash).expect("hash");
    let fingerprint = crate::keys::fingerprint(&info.path, &hash, info.nar_size, &info.references);
    f.trusted
        .check(&info.path, &fingerprint, &info.signatures)
        .expect("path signature");
    let run = other.dirs().physical(&f.a.path).join("bin/run");
    let mode = fs_err::metadata(run).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o555);
    // A second import finds everything there.
    let again = f.import(&mut other, &out).expect("import again");
    assert!(again.paths.is_empty());
    assert_eq!(again.already_valid, 2);
}

#[test]
fn the_bundle_lists_the_closure_in_dependency_order_and_is_reproducible() {
    let f = fixture();
    let first = fs_err::read(f.export()).expect("read");
    let entries = f.entries();
    let names: Vec<String> = entries
        .iter()
        .map(|e| String::from_utf8_lossy(&e.name).into_owned())
        .collect();
    let digest = |path: &str| f.store.parse_path(path).expect("path").digest().to_owned();
    assert_eq!(
        names,
        vec![
            MANIFEST.to_owned(),
            SIGNATURES.to_owned(),
            nar_entry(&digest(&f.a.path)),
            nar_entry(&digest(&f.b.path)),
        ]
    );
    let manifest = manifest_of(&entries);
    let order: Vec<&str> = manifest.paths.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(order, vec![f.a.path.as_str(), f.b.path.as_str()]);
    assert_eq!(manifest.store_dir, "/noodle/store");
    assert!(entries.iter().all(|e| e.mode == 0o444));
    assert_eq!(fs_err::read(f.export()).expect("read"), first);
}

#[test]
fn an_unsigned_bundle_imports_only_when_signatures_are_not_required() {
    let f = fixture();
    let out = f.path("unsigned.noodle");
    export(
        &f.store,
        std::slice::from_ref(&f.b.path),
        &[],
        &out,
        &Silent,
    )
    .expect("export");
    let mut other = f.target("other");
    let err = f.refused(&mut other, &out);
    assert!(err.contains("unsigned"), "{err}");
    let report = import(&mut other, &out, &f.trusted, false, &Silent).expect("import");
    assert_eq!(report.paths.len(), 2);
    assert_eq!(report.signed_by, None);
    no_problems(&mut other);
}

#[test]
fn references_outside_the_bundle_may_be_valid_here_already() {
    let f = fixture();
    let only_a = f.path("a.noodle");
    let key = std::slice::from_ref(&f.key);
    export(
        &f.store,
        std::slice::from_ref(&f.a.path),
        key,
        &only_a,
        &Silent,
    )
    .expect("export a");
    let mut entries = f.entries();
    let mut manifest = manifest_of(&entries);
    manifest.paths.remove(0);
    entries[0].data = serde_json::to_vec(&manifest).expect("json");
    entries[1].data = f.sign(&entries[0].data);
    entries.remove(2);
    let only_b = craft(&f.path("b.noodle"), &entries);
    let mut other = f.target("other");
    f.import(&mut other, &only_a).expect("import a");
    let report = f.import(&mut other, &only_b).expect("import b");
    assert_eq!(report.paths, vec![f.b.path.clone()]);
    no_problems(&mut other);
}

#[test]
fn a_damaged_path_is_not_exported() {
    let f = fixture();
    let greeting = f.store.dirs().physical(&f.a.path).join("greeting");
    let mut perms = fs_err::metadata(&greeting).expect("stat").permissions();
    perms.set_mode(0o644);
    fs_err::set_permissions(&greeting, perms).expect("chmod");
    // Same size, other contents: only the hash can tell.
    fs_err::write(&greeting, b"jello\n").expect("write");
    let out = f.path("app.noodle");
    let key = std::slice::from_ref(&f.key);
    let err = export(
        &f.store,
        std::slice::from_ref(&f.b.path),
        key,
        &out,
        &Silent,
    )
    .expect_err("damaged");
    let text = err.to_string();
    assert!(
        text.contains(&f.a.path) && text.contains("NAR hash"),
        "{text}"
    );
    assert!(text.contains("noodle store verify"), "{text}");
    // Longer: the size recorded in the database no longer matches.
    fs_err::write(&greeting, b"hello, world\n").expect("write");
    let err = export(
        &f.store,
        std::slice::from_ref(&f.b.path),
        key,
        &out,
        &Silent,
    )
    .expect_err("damaged");
    let text = err.to_string();
    assert!(text.contains(&f.a.path) && text.contains("bytes"), "{text}");
    assert!(!out.exists());
    let left: Vec<_> = fs_err::read_dir(f.dir.path())
        .expect("ls")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn exporting_a_path_that_is_not_valid_names_it() {
    let f = fixture();
    let missing = f.a.path.replace(&f.a.path[15..20], "00000");
    let err = export(
        &f.store,
        std::slice::from_ref(&missing),
        &[],
        &f.path("x.noodle"),
        &Silent,
    )
    .expect_err("not valid");
    assert!(err.to_string().contains(&missing), "{err}");
}

#[test]
fn flipped_bits_anywhere_are_refused_cleanly() {
    let f = fixture();
    let good = fs_err::read(f.export()).expect("read");
    let len = good.len();
    let mut other = f.target("other");
    for at in [
        0,
        1,
        2,
        3,
        len / 5,
        len / 3,
        len / 2,
        2 * len / 3,
        len - 9,
        len - 2,
        len - 1,
    ] {
        for bit in [0x01u8, 0x80] {
            let mut bad = good.clone();
            bad[at] ^= bit;
            let file = f.path("flipped.noodle");
            fs_err::write(&file, &bad).expect("write");
            let err = f.import(&mut other, &file);
            assert!(
                err.is_err(),
                "a flip of {bit:#x} at byte {at} of {len} got through"
            );
            assert_untouched(&other);
        }
    }
    // Truncated anywhere, too.
    for keep in [0, 10, len / 2, len - 1] {
        let file = f.path("short.noodle");
        fs_err::write(&file, &good[..keep]).expect("write");
        f.refused(&mut other, &file);
    }
}
