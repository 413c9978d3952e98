//! Good bundles: what export writes, and that import brings it back whole.

use super::*;

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

/// Remembers what was reported.
#[derive(Default)]
struct Recorder {
    phases: std::sync::Mutex<Vec<(String, u64)>>,
    advanced: std::sync::atomic::AtomicU64,
    finished: std::sync::atomic::AtomicBool,
}

impl noodle_store::Progress for Recorder {
    fn phase(&self, name: &str, total: u64) {
        let mut phases = self.phases.lock().expect("lock");
        phases.push((name.to_owned(), total));
    }
    fn advance(&self, units: u64) {
        self.advanced
            .fetch_add(units, std::sync::atomic::Ordering::Relaxed);
    }
    fn finish(&self) {
        self.finished
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Recorder {
    fn check(&self, phase: &str, total: u64) {
        let phases = self.phases.lock().expect("lock");
        assert_eq!(*phases, vec![(phase.to_owned(), total)]);
        let advanced = self.advanced.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(advanced, total);
        assert!(self.finished.load(std::sync::atomic::Ordering::Relaxed));
    }
}

#[test]
fn progress_counts_the_nar_bytes() {
    let f = fixture();
    let total = f.a.nar_size + f.b.nar_size;
    let out = f.path("app.noodle");
    let exporting = Recorder::default();
    let key = std::slice::from_ref(&f.key);
    export(
        &f.store,
        std::slice::from_ref(&f.b.path),
        key,
        &out,
        &exporting,
    )
    .expect("export");
    exporting.check("exporting", total);
    let importing = Recorder::default();
    let mut other = f.target("other");
    import(&mut other, &out, &f.trusted, true, &importing).expect("import");
    importing.check("importing", total);
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
    // The frame carries a checksum of its contents (Content_Checksum_flag of the frame
    // header): the one check that covers every byte, even where nothing else looks.
    assert_eq!(good[..4], [0x28, 0xb5, 0x2f, 0xfd]);
    assert_ne!(good[4] & 0x04, 0, "no content checksum");
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
