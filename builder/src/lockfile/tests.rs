use std::collections::BTreeSet;

use super::*;
use crate::plan::make_plans;
use crate::resolve::tests::{id, TestChannel};
use crate::resolve::{pin_sources, Resolved};

fn store() -> StoreDir {
    StoreDir::new("/noodle/store").expect("valid")
}

/// Resolves `targets` against `lock`, plans, and updates a copy of the lock.
fn relock(
    t: &TestChannel,
    targets: &[&str],
    lock: &Lockfile,
    update: &[&str],
) -> (Lockfile, Vec<String>) {
    let graph = t.resolve(targets, Some(lock), update).expect("resolves");
    let update: BTreeSet<String> = update.iter().map(|s| (*s).to_owned()).collect();
    let mut pinner = |r: &Resolved, key: &str, _: &_| -> Result<Pin, ()> {
        Ok(Pin {
            name: key.to_owned(),
            version: r.id.version.to_string(),
            hash: Blake3::of(key.as_bytes()),
        })
    };
    let pins = pin_sources(&graph, Some(lock), &update, &mut pinner).expect("pins");
    let plans = make_plans(&graph, &pins, &store()).expect("plans");
    let mut new = lock.clone();
    let changes = new.update(&graph, &plans, &store()).expect("update");
    (new, changes.iter().map(ToString::to_string).collect())
}

fn channel() -> TestChannel {
    let t = TestChannel::new();
    t.recipe_with(
        "hello",
        "1.0.0",
        &[("busybox", "1")],
        "[sources.src]\npath = \"/bin/sh\"\n",
    );
    t.recipe("busybox", "1.35.0", &[]);
    t
}

#[test]
fn round_trip_is_byte_identical() {
    let t = channel();
    let (mut lock, changes) = relock(&t, &["hello"], &Lockfile::default(), &[]);
    assert_eq!(changes, ["added busybox@1.35.0", "added hello@1.0.0"]);
    assert!(lock.set_nar(&id("busybox@1.35.0"), Blake3::of(b"nar")));
    assert!(!lock.set_nar(&id("nope@1.0.0"), Blake3::of(b"nar")));

    let path = t.channel.lock_path();
    lock.write(&path).expect("write");
    let bytes = fs_err::read_to_string(&path).expect("read");
    let loaded = Lockfile::load(&path).expect("load").expect("exists");
    assert_eq!(loaded, lock);
    assert_eq!(loaded.to_toml(), bytes);

    let hello = lock.package(&id("hello@1.0.0")).expect("locked");
    let expected =
        "# This file is written by noodle; edit recipes, not this file.\nversion = 1\n\n\
         [[package]]\nname = \"busybox\"\nversion = \"1.35.0\"\n";
    assert!(bytes.starts_with(expected), "{bytes}");
    assert!(
        bytes.contains(&format!("nar = \"{}\"\n", Blake3::of(b"nar"))),
        "{bytes}"
    );
    assert!(
        bytes.contains("dependencies = { busybox = \"1.35.0\" }\n"),
        "{bytes}"
    );
    assert!(
        bytes.contains(&format!(
            "sources = {{ src = {{ pin = \"src@1.0.0#blake3={}\", location = \"/bin/sh\" }} }}\n",
            Blake3::of(b"src").to_hex()
        )),
        "{bytes}"
    );
    assert!(
        bytes.contains(&format!("out = \"{}\"\n", hello.out)),
        "{bytes}"
    );
    let (pin, location) = lock.source_pin(&id("hello@1.0.0"), "src").expect("pinned");
    assert_eq!(
        (pin.store_name().as_str(), location),
        ("src-1.0.0", "/bin/sh")
    );
    assert!(!path
        .with_extension(format!("lock.tmp-{}", std::process::id()))
        .exists());
    assert_eq!(
        Lockfile::load(&t.channel.root().join("absent.lock")).expect("ok"),
        None
    );
}

#[test]
fn nothing_changed_means_no_changes() {
    let t = channel();
    let (mut lock, _) = relock(&t, &["hello"], &Lockfile::default(), &[]);
    lock.set_nar(&id("hello@1.0.0"), Blake3::of(b"nar"));
    let (again, changes) = relock(&t, &["hello"], &lock, &[]);
    assert!(changes.is_empty(), "{changes:?}");
    assert_eq!(again, lock, "nar kept while the plan is unchanged");
}

#[test]
fn changes_are_listed() {
    let t = channel();
    let (mut lock, _) = relock(&t, &["hello"], &Lockfile::default(), &[]);
    lock.set_nar(&id("hello@1.0.0"), Blake3::of(b"nar"));

    t.recipe("busybox", "1.36.0", &[]);
    let (_, changes) = relock(&t, &["hello"], &lock, &[]);
    assert!(changes.is_empty(), "locked edge: {changes:?}");
    let (updated, changes) = relock(&t, &["hello"], &lock, &["busybox"]);
    assert_eq!(
        changes,
        [
            "added busybox@1.36.0",
            "hello@1.0.0: busybox 1.35.0 → 1.36.0",
            "hello@1.0.0: plan changed"
        ]
    );
    assert_eq!(
        updated.package(&id("hello@1.0.0")).expect("locked").nar,
        None,
        "new plan, no nar"
    );
    assert!(
        updated.package(&id("busybox@1.35.0")).is_some(),
        "old entries are kept"
    );

    t.recipe_with(
        "hello",
        "1.0.0",
        &[("busybox", "1")],
        "[sources.src]\npath = \"/bin/ls\"\n",
    );
    let (_, changes) = relock(&t, &["hello"], &lock, &[]);
    assert_eq!(
        changes,
        [
            "added busybox@1.36.0",
            "hello@1.0.0: recipe changed",
            "hello@1.0.0: busybox 1.35.0 → 1.36.0",
            "hello@1.0.0: source `src` location changed",
            "hello@1.0.0: plan changed",
        ]
    );
}

#[test]
fn malformed_locks_say_where_and_what_to_do() {
    let path = Path::new("chan/noodle.lock");
    let bad = |text: &str| {
        Lockfile::parse(path, text)
            .expect_err("malformed")
            .to_string()
    };
    let err = bad("version = 1\n[[package]]\nname = \"a\"\nversion = \"x\"\nrecipe = \"\"\nplan = \"\"\nout = \"\"\n");
    assert!(
        err.starts_with(
            "chan/noodle.lock:4:11: key `package[0].version`: \"x\" is not a semver version"
        ),
        "{err}"
    );
    assert!(
        err.ends_with(
            "(noodle.lock is written by noodle: delete it, or regenerate it with `noodle lock`)"
        ),
        "{err}"
    );
    let err = bad("version = 2\n");
    assert!(
        err.contains(":1:11: key `version`: lock format version 2 is not supported"),
        "{err}"
    );
    let err = bad("version = 1\n[[package]]\nname = \"a\"\nversoin = \"1\"\n");
    assert!(
        err.contains(":4:1: key `package[0].versoin`: unknown field"),
        "{err}"
    );
    let err = bad("version = 1\n[[package\n");
    assert!(err.starts_with("chan/noodle.lock:2:"), "{err}");
}
