//! One hand-made bad bundle per refusal: each must name the problem and leave the target
//! store without new paths and with nothing in `var/tmp`.

use super::*;

/// Appends `extra` after the good entries (so NARs are already staged when it comes).
fn refused_with(extra: Raw) -> String {
    let f = fixture();
    let mut entries = f.entries();
    entries.push(extra);
    let bad = craft(&f.path("bad.noodle"), &entries);
    f.refused(&mut f.target("other"), &bad)
}

fn special(name: &str, kind: EntryType) -> Raw {
    Raw {
        kind,
        ..file(name, b"")
    }
}

#[test]
fn path_traversal_and_absolute_names_are_refused() {
    for name in ["../evil", "nar/../../evil", "/etc/passwd"] {
        let err = refused_with(file(name, b"x"));
        assert!(
            err.contains("path traversal") && err.contains(name),
            "{err}"
        );
    }
}

#[test]
fn links_devices_fifos_and_directories_are_refused() {
    for (kind, what) in [
        (EntryType::Symlink, "symbolic link"),
        (EntryType::Link, "hard link"),
        (EntryType::Char, "character device"),
        (EntryType::Block, "block device"),
        (EntryType::Fifo, "fifo"),
        (EntryType::Directory, "directory"),
        (EntryType::GNULongName, "long-name"),
        (EntryType::XHeader, "pax"),
    ] {
        let err = refused_with(special("nar/thing", kind));
        assert!(err.contains(what) && err.contains("nar/thing"), "{err}");
    }
}

#[test]
fn setuid_setgid_and_sticky_modes_are_refused() {
    for mode in [0o4444, 0o2444, 0o1444] {
        let f = fixture();
        let mut entries = f.entries();
        entries[3].mode = mode;
        let bad = craft(&f.path("bad.noodle"), &entries);
        let err = f.refused(&mut f.target("other"), &bad);
        assert!(
            err.contains("setuid") && err.contains(&format!("{mode:o}")),
            "{err}"
        );
    }
}

#[test]
fn a_duplicate_entry_is_refused() {
    let f = fixture();
    let mut entries = f.entries();
    entries.push(entries[3].clone());
    let bad = craft(&f.path("bad.noodle"), &entries);
    let err = f.refused(&mut f.target("other"), &bad);
    assert!(err.contains("more than once"), "{err}");
}

#[test]
fn an_unexpected_name_is_refused() {
    for name in ["README", "nar/x.txt", "./manifest.json"] {
        let err = refused_with(file(name, b"hi"));
        assert!(err.contains("not part of a noodle bundle"), "{err}");
    }
}

#[test]
fn a_nar_the_manifest_does_not_list_is_refused() {
    let err = refused_with(file("nar/0123456789abcdfghijklmnpqrsvwxy.nar", b"x"));
    assert!(err.contains("not listed in manifest.json"), "{err}");
}

#[test]
fn a_nar_before_the_manifest_is_refused() {
    let f = fixture();
    let mut entries = f.entries();
    let nar = entries.remove(2);
    entries.insert(0, nar);
    let bad = craft(&f.path("bad.noodle"), &entries);
    let err = f.refused(&mut f.target("other"), &bad);
    assert!(err.contains("comes before manifest.json"), "{err}");
}

#[test]
fn signatures_before_the_manifest_or_after_a_nar_are_refused() {
    let f = fixture();
    let mut entries = f.entries();
    entries.swap(0, 1);
    let bad = craft(&f.path("bad.noodle"), &entries);
    let err = f.refused(&mut f.target("other"), &bad);
    assert!(
        err.contains("manifest.sig comes before manifest.json"),
        "{err}"
    );
    let mut entries = f.entries();
    let sig = entries.remove(1);
    entries.push(sig);
    let bad = craft(&f.path("bad.noodle"), &entries);
    let err = f.refused(&mut f.target("other"), &bad);
    assert!(
        err.contains("no manifest.sig before the first NAR"),
        "{err}"
    );
    let mut other = f.target("other");
    let err = import(&mut other, &bad, &f.trusted, false, &Silent).expect_err("late");
    assert_untouched(&other);
    assert!(err.to_string().contains("after the first NAR"), "{err}");
}

#[test]
fn a_missing_manifest_or_nar_is_refused() {
    let f = fixture();
    let mut entries = f.entries();
    entries.pop();
    let bad = craft(&f.path("bad.noodle"), &entries);
    let err = f.refused(&mut f.target("other"), &bad);
    assert!(
        err.contains(&f.b.path) && err.contains("has no entry"),
        "{err}"
    );
    let bad = craft(&f.path("empty.noodle"), &[]);
    let err = f.refused(&mut f.target("other"), &bad);
    assert!(err.contains("manifest.json is missing"), "{err}");
}

/// The good entries with the manifest changed by `change`, re-signed, NARs as listed.
fn remanifest(f: &Fixture, change: impl FnOnce(&mut Manifest)) -> Vec<Raw> {
    let mut entries = f.entries();
    let mut manifest = manifest_of(&entries);
    change(&mut manifest);
    entries[0].data = serde_json::to_vec(&manifest).expect("json");
    entries[1].data = f.sign(&entries[0].data);
    entries
}

#[test]
fn a_reference_neither_in_the_bundle_nor_valid_here_is_refused() {
    let f = fixture();
    let mut entries = remanifest(&f, |m| {
        m.paths.remove(0);
    });
    entries.remove(2);
    let bad = craft(&f.path("bad.noodle"), &entries);
    let err = f.refused(&mut f.target("other"), &bad);
    assert!(
        err.contains("not closure-complete") && err.contains(&f.a.path),
        "{err}"
    );
}

#[test]
fn a_manifest_out_of_dependency_order_is_refused() {
    let f = fixture();
    let mut entries = remanifest(&f, |m| m.paths.swap(0, 1));
    entries.swap(2, 3);
    let bad = craft(&f.path("bad.noodle"), &entries);
    let err = f.refused(&mut f.target("other"), &bad);
    assert!(err.contains("dependency order"), "{err}");
}

#[test]
fn bad_manifests_are_refused() {
    let f = fixture();
    type Change = Box<dyn FnOnce(&mut Manifest)>;
    let cases: Vec<(Change, &str)> = vec![
        (Box::new(|m| m.version = 2), "version 2"),
        (Box::new(|m| m.paths[1] = m.paths[0].clone()), "twice"),
        (
            Box::new(|m| m.paths[0].nar_hash = "sha256:00".into()),
            "not blake3",
        ),
        (Box::new(|m| m.paths[0].nar_size = 0), "absurd"),
        (
            Box::new(|m| m.paths[0].path.push_str("/bin")),
            "not a store path",
        ),
        (
            Box::new(|m| m.paths[1].references.push("/etc".into())),
            "not a store path",
        ),
    ];
    for (change, what) in cases {
        let bad = craft(&f.path("bad.noodle"), &remanifest(&f, change));
        let err = f.refused(&mut f.target("other"), &bad);
        assert!(err.contains(what), "{what}: {err}");
    }
    let mut entries = f.entries();
    entries[0].data = b"{\"version\": 1, \"what\": 2}".to_vec();
    entries[1].data = f.sign(&entries[0].data);
    let bad = craft(&f.path("bad.noodle"), &entries);
    let err = f.refused(&mut f.target("other"), &bad);
    assert!(err.contains("not a bundle manifest"), "{err}");
}

#[test]
fn untrusted_or_mismatched_signatures_are_refused() {
    let f = fixture();
    let mut entries = f.entries();
    let stranger = fixed_key("stranger-1", 9);
    entries[1].data = format!(
        "{}\n",
        stranger.sign(&manifest_fingerprint(&entries[0].data))
    )
    .into_bytes();
    let bad = craft(&f.path("bad.noodle"), &entries);
    let err = f.refused(&mut f.target("other"), &bad);
    assert!(
        err.contains("untrusted") && err.contains("stranger-1"),
        "{err}"
    );
    // The manifest changed after it was signed: a deriver slipped in.
    let mut entries = f.entries();
    let mut manifest = manifest_of(&entries);
    manifest.paths[0].deriver = Some("x".into());
    entries[0].data = serde_json::to_vec(&manifest).expect("json");
    let bad = craft(&f.path("bad.noodle"), &entries);
    let err = f.refused(&mut f.target("other"), &bad);
    assert!(err.contains("does not match"), "{err}");
    let mut entries = f.entries();
    entries[1].data = b"test-1:not base64\n".to_vec();
    let bad = craft(&f.path("bad.noodle"), &entries);
    f.refused(&mut f.target("other"), &bad);
}

#[test]
fn a_bundle_for_another_store_directory_is_refused() {
    let f = fixture();
    let mut other = Store::init(&f.path("other"), Some("/other/store")).expect("init");
    let err = f.refused(&mut other, &f.export());
    assert!(err.contains("store directory /noodle/store"), "{err}");
}

#[test]
fn a_nar_that_differs_from_the_manifest_is_refused() {
    let f = fixture();
    let mut entries = f.entries();
    let nar = &mut entries[2].data;
    let at = nar
        .windows(6)
        .position(|w| w == b"hello\n")
        .expect("contents");
    nar[at] ^= 1;
    let bad = craft(&f.path("bad.noodle"), &entries);
    let err = f.refused(&mut f.target("other"), &bad);
    assert!(
        err.contains("NAR hash mismatch") && err.contains(&f.a.path),
        "{err}"
    );
    let mut entries = f.entries();
    let short = entries[3].data.len() - 8;
    entries[3].data.truncate(short);
    let bad = craft(&f.path("bad.noodle"), &entries);
    let err = f.refused(&mut f.target("other"), &bad);
    assert!(err.contains("bytes, but manifest.json says"), "{err}");
}

#[test]
fn a_damaged_nar_of_a_path_valid_here_is_refused_too() {
    let f = fixture();
    let mut other = f.target("other");
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
    f.import(&mut other, &only_a).expect("import a");
    let mut entries = f.entries();
    let nar = &mut entries[2].data;
    let at = nar
        .windows(6)
        .position(|w| w == b"hello\n")
        .expect("contents");
    nar[at] ^= 1;
    let bad = craft(&f.path("bad.noodle"), &entries);
    let err = f.import(&mut other, &bad).expect_err("damaged");
    assert!(err.to_string().contains("NAR hash mismatch"), "{err}");
    assert!(!other.db().is_valid(&f.b.path).expect("db"));
}

#[test]
fn data_after_the_archive_is_refused() {
    let f = fixture();
    let bad = craft_with_trailer(&f.path("bad.noodle"), &f.entries(), b"surprise");
    let err = f.refused(&mut f.target("other"), &bad);
    assert!(err.contains("after the end of the tar archive"), "{err}");
}
