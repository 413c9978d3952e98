//! Crash safety of `noodle build` (DESIGN.md §5 and §6): the build process is killed at every
//! `build:*` failure point of `noodle_store::failpoint::ALL` (so a new point is covered as soon
//! as it is listed), and then:
//! - the store is consistent: `store verify --check-contents` reports nothing but leftovers of
//!   the crash (unregistered entries, stale temporary directories), which `store gc` or
//!   `store verify --repair` clean;
//! - the output is either not valid, or valid and intact (the same NAR as a normal build);
//! - invariant 1 holds: every reference of a valid path is valid;
//! - `build` again succeeds with the same output path and contents, the store is fully clean,
//!   and the output's closure (busybox and its source) is complete.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::channel::Channel;
use common::{bad, Noodle};
use noodle_store::failpoint;

/// What happens between the crash and the final checks.
#[derive(Debug, Clone, Copy)]
enum Recovery {
    /// `store gc` first, then the build again.
    Gc,
    /// `store verify --repair` first, then the build again.
    Repair,
    /// The build again straight away, then `store verify --repair`.
    RerunFirst,
}

/// The package built: a script whose `#!` names busybox's sh and a copy of its source, whose
/// store path it also records, so its references are busybox and the source.
const PKG_SCRIPT: &str = r#"mkdir -p $out/bin $out/share
printf '#!%s/bin/sh\necho hi\n' "$busybox" > $out/bin/hi
chmod 0555 $out/bin/hi
cp $data $out/share/data
echo "$data" > $out/share/source-path
"#;

fn write_pkg(channel: &Channel) {
    channel.file("pkgs/pkg/files/data", "data of pkg\n");
    channel.recipe(
        "pkg",
        "1.0.0",
        &format!(
            "[dependencies]\nbusybox = \"^1.35\"\n\n[sources.data]\npath = \"files/data\"\n\n[build]\nscript = '''\n{PKG_SCRIPT}'''\n"
        ),
    );
}

/// A store with busybox built and rooted (var/gcroots/busybox), and the channel with `pkg`.
struct Template {
    noodle: Noodle,
    channel: Channel,
    busybox: String,
}

/// What a normal build of `pkg` gives, learnt in a clone of the template.
struct Expected {
    path: String,
    nar_hash: String,
    references: Vec<String>,
}

fn template() -> Template {
    let noodle = Noodle::new();
    let channel = Channel::new(&noodle);
    let out = noodle.build_ok(&channel, &["busybox"]);
    let busybox = out[0].clone();
    std::os::unix::fs::symlink(&busybox, noodle.root().join("noodle/var/gcroots/busybox"))
        .expect("gc root for busybox");
    write_pkg(&channel);
    Template {
        noodle,
        channel,
        busybox,
    }
}

/// A copy of the template's store and channel (with its noodle.lock).
fn clone(t: &Template) -> (Noodle, Channel) {
    let noodle = Noodle::uninitialised();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(t.noodle.root())
        .arg(noodle.root())
        .status()
        .expect("cp");
    assert!(status.success(), "cp -a of the template store failed");
    let channel = Channel::new(&noodle);
    write_pkg(&channel);
    std::fs::copy(
        t.channel.dir.join("noodle.lock"),
        channel.dir.join("noodle.lock"),
    )
    .expect("copy noodle.lock");
    (noodle, channel)
}

fn nar_hash(noodle: &Noodle, path: &str) -> String {
    let info = noodle.json(&["store", "path-info", path]);
    info[0]["nar_hash"].as_str().expect("nar_hash").to_owned()
}

fn expected(t: &Template) -> Expected {
    let (noodle, channel) = clone(t);
    let out = noodle.build_ok(&channel, &["pkg"]);
    assert_eq!(out.len(), 1, "{out:?}");
    let path = out[0].clone();
    let references = noodle.references(&path);
    assert_eq!(references.len(), 2, "pkg's references: {references:?}");
    assert!(references.contains(&t.busybox), "{references:?}");
    assert!(
        references.iter().any(|r| r.ends_with("-pkg-data-1.0.0")),
        "{references:?}"
    );
    Expected {
        nar_hash: nar_hash(&noodle, &path),
        path,
        references,
    }
}

/// Holds at any time: only leftovers of a crash, valid paths intact, invariant 1, busybox kept,
/// and pkg's output either not valid or valid with the expected NAR and references.
fn assert_consistent(t: &Template, e: &Expected, noodle: &Noodle, ctx: &str) {
    let (_, problems) = noodle.verify_report(&["--check-contents"]);
    let wrong = bad(&problems, &["unregistered", "stale-temp"]);
    assert!(
        wrong.is_empty(),
        "{ctx}: the store is inconsistent: {wrong:#?}"
    );
    noodle.assert_closure_intact();
    let valid = noodle.valid_paths();
    assert!(valid.contains(&t.busybox), "{ctx}: busybox was lost");
    if valid.contains(&e.path) {
        assert_eq!(nar_hash(noodle, &e.path), e.nar_hash, "{ctx}: pkg's NAR");
        assert_eq!(
            noodle.references(&e.path),
            e.references,
            "{ctx}: references"
        );
    }
}

/// The end state: pkg valid, intact, with its whole closure; nothing else wrong anywhere.
fn assert_done(t: &Template, e: &Expected, noodle: &Noodle, ctx: &str) {
    noodle.assert_fully_clean(ctx);
    noodle.assert_closure_intact();
    assert_eq!(noodle.tmp_entries(), Vec::<String>::new(), "{ctx}: var/tmp");
    assert_eq!(nar_hash(noodle, &e.path), e.nar_hash, "{ctx}: pkg's NAR");
    assert_eq!(
        noodle.references(&e.path),
        e.references,
        "{ctx}: references"
    );
    let closure: BTreeSet<String> = noodle
        .ok(&["store", "closure", &e.path])
        .lines()
        .map(str::to_owned)
        .collect();
    let wanted: BTreeSet<String> = e
        .references
        .iter()
        .cloned()
        .chain([e.path.clone(), t.busybox.clone()])
        .collect();
    assert_eq!(closure, wanted, "{ctx}: pkg's closure");
    let valid = noodle.valid_paths();
    for path in &closure {
        assert!(
            valid.contains(path),
            "{ctx}: {path} of the closure is not valid"
        );
    }
    let out = noodle.physical(&e.path);
    assert_eq!(
        std::fs::read_to_string(out.join("share/data")).expect("read data"),
        "data of pkg\n",
        "{ctx}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("bin/hi")).expect("read hi"),
        format!("#!{}/bin/sh\necho hi\n", t.busybox),
        "{ctx}"
    );
}

/// `build pkg` again: succeeds and gives the same path.
fn rebuild(e: &Expected, noodle: &Noodle, channel: &Channel, ctx: &str) {
    let out = noodle.run(&channel.args(&["build", "pkg"]));
    assert!(
        out.status.success(),
        "{ctx}: building again failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        vec![e.path.as_str()],
        "{ctx}: the output path changed"
    );
}

fn crash_at(t: &Template, e: &Expected, point: &str, recovery: Recovery) {
    let ctx = format!("{point} ({recovery:?})");
    let (noodle, channel) = clone(t);

    let out = noodle.run_env(&channel.args(&["build", "pkg"]), &[(failpoint::ENV, point)]);
    common::assert_aborted_at(&out, point, &ctx);

    assert_consistent(t, e, &noodle, &format!("{ctx}, after the crash"));
    let valid = noodle.valid_paths();
    if point.ends_with(":after-register") {
        assert!(
            valid.contains(&e.path),
            "{ctx}: a committed registration was lost"
        );
    }
    if point.ends_with(":before-rename") || point.ends_with(":after-rename") {
        assert!(
            !valid.contains(&e.path),
            "{ctx}: registered before the registration"
        );
    }

    match recovery {
        Recovery::Gc => {
            noodle.assert_clean_after_gc(&ctx);
            assert_consistent(t, e, &noodle, &format!("{ctx}, after gc"));
            rebuild(e, &noodle, &channel, &ctx);
        }
        Recovery::Repair => {
            let (code, problems) = noodle.verify_report(&["--repair"]);
            assert_eq!(
                code, 0,
                "{ctx}: verify --repair left problems: {problems:#?}"
            );
            noodle.assert_fully_clean(&format!("{ctx}, after repair"));
            assert_eq!(noodle.tmp_entries(), Vec::<String>::new(), "{ctx}: var/tmp");
            assert_consistent(t, e, &noodle, &format!("{ctx}, after repair"));
            rebuild(e, &noodle, &channel, &ctx);
        }
        Recovery::RerunFirst => {
            rebuild(e, &noodle, &channel, &ctx);
            assert_consistent(t, e, &noodle, &format!("{ctx}, after building again"));
            // The crashed build's working directory may remain; nothing unregistered in the
            // store (the new build replaced any leftover at its output path).
            let (_, problems) = noodle.verify_report(&[]);
            let wrong = bad(&problems, &["stale-temp"]);
            assert!(wrong.is_empty(), "{ctx}: after building again: {wrong:#?}");
            let (code, problems) = noodle.verify_report(&["--repair"]);
            assert_eq!(
                code, 0,
                "{ctx}: verify --repair left problems: {problems:#?}"
            );
        }
    }
    assert_done(t, e, &noodle, &format!("{ctx}, at the end"));
    // And it stays: one more build reuses it.
    rebuild(e, &noodle, &channel, &format!("{ctx}, reusing"));
    assert_done(t, e, &noodle, &format!("{ctx}, at the very end"));
}

#[test]
fn crash_during_build() {
    let points: Vec<&str> = failpoint::ALL
        .iter()
        .copied()
        .filter(|p| p.split(':').next() == Some("build"))
        .collect();
    assert!(!points.is_empty(), "no failure points for build");
    let template = template();
    let expected = expected(&template);
    assert!(
        !template.noodle.valid_paths().contains(&expected.path),
        "the template must not hold pkg"
    );
    assert!(Path::new(&template.channel.dir)
        .join("noodle.lock")
        .exists());
    std::thread::scope(|scope| {
        for point in &points {
            for recovery in [Recovery::Gc, Recovery::Repair, Recovery::RerunFirst] {
                let (template, expected) = (&template, &expected);
                scope.spawn(move || crash_at(template, expected, point, recovery));
            }
        }
    });
}
