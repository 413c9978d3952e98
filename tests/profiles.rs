//! Profiles and generations (DESIGN.md §7) through the real binary: install/remove/update from
//! the repository's channel, store paths installed as such, merged trees and conflicts,
//! generations, switch/rollback, diff, delete-generations and what GC frees afterwards, the
//! system profile, and a user's own store.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::channel::Channel;
use common::{stderr_of, Noodle};

fn names(installed: &[(String, String, String)]) -> Vec<String> {
    installed
        .iter()
        .map(|(n, v, _)| format!("{n} {v}"))
        .collect()
}

/// The store path the generation link `<profile>-<n>-link` names.
fn generation_path(profile: &Path, n: u64) -> String {
    let name = profile.file_name().expect("name").to_string_lossy();
    let link = profile.with_file_name(format!("{name}-{n}-link"));
    std::fs::read_link(link)
        .expect("generation link")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn install_update_remove_rollback_from_the_channel() {
    let noodle = Noodle::new();
    let channel = Channel::repo(&noodle);
    let c = |args: &[&str]| {
        channel
            .args(args)
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    let run = |args: &[&str]| {
        let all = c(args);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        noodle.ok(&refs)
    };
    let profile = noodle.default_profile();

    run(&["install", "hello", "crypto@1.2.3"]);
    assert_eq!(
        names(&noodle.installed(&[])),
        ["crypto 1.2.3", "hello 1.0.0"]
    );
    assert_eq!(noodle.generation_numbers(&[]), [(1, true)]);
    assert_eq!(noodle.current_generation(&profile), Some(1));

    // The generation: a store path with the merged tree and the manifest, registered with
    // its packages as references.
    let gen1 = generation_path(&profile, 1);
    assert!(gen1.ends_with("-profile"), "{gen1}");
    let physical = noodle.physical(&gen1);
    let hello_link = std::fs::read_link(physical.join("bin/hello")).expect("bin/hello");
    let installed = noodle.installed(&[]);
    assert_eq!(hello_link, Path::new(&installed[1].2).join("bin/hello"));
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(physical.join("manifest.json")).expect("manifest"),
    )
    .expect("json");
    assert_eq!(manifest["packages"][0]["requested"], "=1.2.3");
    assert_eq!(manifest["packages"][1]["requested"], "*");
    assert_eq!(manifest["packages"][0]["health"][0]["name"], "selftest");
    let lock = manifest["lock"].as_str().expect("lock");
    assert!(
        lock.contains("name = \"busybox\""),
        "the lock holds the closure: {lock}"
    );
    assert!(
        !lock.contains("greeter"),
        "only the profile's closure: {lock}"
    );
    let refs = noodle.references(&gen1);
    assert_eq!(
        refs.into_iter().collect::<BTreeSet<_>>(),
        installed
            .iter()
            .map(|p| p.2.clone())
            .collect::<BTreeSet<_>>()
    );

    // The same set again: no new generation.
    let out = noodle.run(
        &c(&["install", "hello"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(out.status.success());
    assert!(
        stderr_of(&out).contains("nothing to do"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(noodle.generation_numbers(&[]).len(), 1);

    // `update crypto` keeps to the requirement it was installed with (exactly 1.2.3).
    run(&["update", "crypto"]);
    assert_eq!(noodle.generation_numbers(&[]).len(), 1);
    // A new requirement moves it, and is remembered.
    run(&["update", "crypto", "~1.2.4"]);
    assert_eq!(
        names(&noodle.installed(&[])),
        ["crypto 1.2.5", "hello 1.0.0"]
    );
    let generations = noodle.json(&["profile", "generations"]);
    assert_eq!(
        generations[1]["summary"],
        "crypto 1.2.3 → 1.2.5 (requirement =1.2.3 → ~1.2.4)"
    );

    let diff = noodle.json(&["profile", "diff"]);
    assert_eq!(diff["from"], 1);
    assert_eq!(diff["to"], 2);
    assert_eq!(diff["diff"]["upgraded"][0]["name"], "crypto");
    assert_eq!(diff["diff"]["upgraded"][0]["to"], "1.2.5");
    assert!(diff["diff"]["added"].as_array().expect("added").is_empty());
    assert!(
        diff["diff"]["closure_after"]["paths"]
            .as_u64()
            .expect("paths")
            >= 3
    );
    let human = noodle.ok(&["profile", "diff", "1", "2"]);
    assert!(human.contains("↑ crypto 1.2.3 → 1.2.5"), "{human}");

    run(&["remove", "hello"]);
    assert_eq!(names(&noodle.installed(&[])), ["crypto 1.2.5"]);
    let gen3 = noodle.physical(&generation_path(&profile, 3));
    // crypto alone provides bin/ now: one link to its bin directory.
    let crypto = &noodle.installed(&[])[0].2;
    assert_eq!(
        std::fs::read_link(gen3.join("bin")).expect("bin link"),
        Path::new(crypto).join("bin")
    );
    let diff = noodle.json(&["profile", "diff", "2", "3"]);
    assert_eq!(diff["diff"]["removed"][0]["name"], "hello");

    noodle.ok(&["profile", "rollback"]);
    assert_eq!(noodle.current_generation(&profile), Some(2));
    assert_eq!(
        names(&noodle.installed(&[])),
        ["crypto 1.2.5", "hello 1.0.0"]
    );
    noodle.ok(&["profile", "switch", "1"]);
    assert_eq!(
        names(&noodle.installed(&[])),
        ["crypto 1.2.3", "hello 1.0.0"]
    );
    let (code, err) = noodle.fails(&["profile", "rollback"]);
    assert_eq!(code, 1);
    assert!(err.contains("no generation before 1"), "{err}");
    // Installing on top of generation 1 numbers the new one after the newest (3).
    run(&["install", "greeter"]);
    assert_eq!(
        noodle.generation_numbers(&[]),
        [(1, false), (2, false), (3, false), (4, true)]
    );
    let installed = names(&noodle.installed(&[]));
    assert_eq!(installed, ["crypto 1.2.3", "greeter 1.0.0", "hello 1.0.0"]);
}

#[test]
fn store_paths_install_as_packages_and_merge_into_one_tree() {
    let noodle = Noodle::new();
    let a = noodle.package(
        "alpha",
        "1.0",
        &[
            ("bin/alpha", "a"),
            ("share/alpha/doc", "d"),
            ("lib/libshared.so", "same"),
        ],
    );
    let b = noodle.package(
        "beta",
        "2.1",
        &[
            ("bin/beta", "b"),
            ("share/beta/doc", "d"),
            ("lib/libshared.so", "same"),
        ],
    );
    noodle.ok(&["install", &a, &b]);
    assert_eq!(names(&noodle.installed(&[])), ["alpha 1.0", "beta 2.1"]);
    let profile = noodle.default_profile();
    let tree = noodle.physical(&generation_path(&profile, 1));
    // bin/ and share/ have entries from both: real directories. share/alpha comes from one
    // package only: one link to it. Identical files in both are no conflict.
    assert!(std::fs::symlink_metadata(tree.join("bin"))
        .expect("bin")
        .is_dir());
    assert!(std::fs::symlink_metadata(tree.join("share"))
        .expect("share")
        .is_dir());
    assert_eq!(
        std::fs::read_link(tree.join("share/alpha")).expect("link"),
        Path::new(&a).join("share/alpha")
    );
    assert_eq!(
        std::fs::read_link(tree.join("bin/beta")).expect("link"),
        Path::new(&b).join("bin/beta")
    );
    assert!(std::fs::read_link(tree.join("lib/libshared.so")).is_ok());
    let json = noodle.json(&["list"]);
    assert_eq!(json["packages"][0]["requested"], serde_json::Value::Null);
    // `update` of a package installed as a store path says how to get a channel version.
    let (_, err) = noodle.fails(&["update", "alpha"]);
    assert!(
        err.contains("installed as a store path") && err.contains("noodle install alpha"),
        "{err}"
    );
}

#[test]
fn a_file_two_packages_provide_is_a_conflict_unless_a_priority_settles_it() {
    let noodle = Noodle::new();
    let a = noodle.package("tool-a", "1.0", &[("bin/tool", "from a")]);
    let b = noodle.package("tool-b", "1.0", &[("bin/tool", "from b")]);
    noodle.ok(&["install", &a]);
    let profile = noodle.default_profile();
    let before = noodle.generation_numbers(&[]);
    let (code, err) = noodle.fails(&["install", &b]);
    assert_eq!(code, 1);
    assert!(
        err.contains("tool-a 1.0 and tool-b 1.0 both provide 'bin/tool'")
            && err.contains("--priority"),
        "{err}"
    );
    assert_eq!(
        noodle.generation_numbers(&[]),
        before,
        "no generation was added"
    );
    assert_eq!(noodle.current_generation(&profile), Some(1));
    // A lower number wins.
    noodle.ok(&["install", "--priority", "4", &b]);
    let tree = noodle.physical(&generation_path(&profile, 2));
    assert_eq!(
        std::fs::read_link(tree.join("bin/tool")).expect("link"),
        Path::new(&b).join("bin/tool")
    );
    // A package whose directory collides with another's file loses the same way.
    let c = noodle.package("tool-c", "1.0", &[("bin/tool/inner", "dir")]);
    let (_, err) = noodle.fails(&["install", "--priority", "4", &c]);
    assert!(err.contains("both provide 'bin/tool'"), "{err}");
    noodle.ok(&["install", "--priority", "9", &c]);
    let tree = noodle.physical(&generation_path(&profile, 3));
    assert_eq!(
        std::fs::read_link(tree.join("bin/tool")).expect("link"),
        Path::new(&b).join("bin/tool")
    );
}

/// Makes `count` generations by installing one small package each time; returns their paths.
fn many_generations(noodle: &Noodle, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            let path = noodle.package(&format!("p{i}"), "1.0", &[(&format!("bin/p{i}"), "x")]);
            noodle.ok(&["install", &path]);
            path
        })
        .collect()
}

#[test]
fn delete_generations_then_gc_frees_exactly_what_no_generation_holds() {
    let noodle = Noodle::new();
    let packages = many_generations(&noodle, 7);
    let profile = noodle.default_profile();
    let all: Vec<u64> = (1..=7).collect();
    assert_eq!(
        noodle
            .generation_numbers(&[])
            .iter()
            .map(|g| g.0)
            .collect::<Vec<_>>(),
        all
    );
    let gen_paths: Vec<String> = all.iter().map(|n| generation_path(&profile, *n)).collect();
    noodle.ok(&["profile", "switch", "5"]);

    // Deleting the current generation is refused (exit 5), and nothing is deleted.
    for which in [&["5"][..], &["4..6"][..]] {
        let mut args = vec!["profile", "delete-generations"];
        args.extend_from_slice(which);
        let (code, err) = noodle.fails(&args);
        assert_eq!(code, 5, "{err}");
        assert!(
            err.contains("generation 5 is the current generation"),
            "{err}"
        );
        assert_eq!(noodle.generation_numbers(&[]).len(), 7);
    }
    let (code, err) = noodle.fails(&["profile", "delete-generations", "9"]);
    assert_eq!(code, 1);
    assert!(err.contains("has no generation 9"), "{err}");

    noodle.ok(&["profile", "delete-generations", "1..2"]);
    let left = |n: &Noodle| {
        n.generation_numbers(&[])
            .iter()
            .map(|g| g.0)
            .collect::<Vec<_>>()
    };
    assert_eq!(left(&noodle), [3, 4, 5, 6, 7]);
    noodle.ok(&["profile", "delete-generations", "+2"]);
    // The two newest (6, 7) and the current (5) stay.
    assert_eq!(left(&noodle), [5, 6, 7]);
    let out = noodle.run(&["profile", "delete-generations", "--older-than", "1d"]);
    assert!(stderr_of(&out).contains("nothing to delete"));

    // GC frees the deleted generations and the packages only they held: p0..p3 were only
    // in generations 1..4; generation 5 holds p0..p4.
    let before = noodle.valid_paths();
    noodle.ok(&["store", "gc"]);
    let freed: BTreeSet<String> = before.difference(&noodle.valid_paths()).cloned().collect();
    let expected: BTreeSet<String> = gen_paths[..4].iter().cloned().collect();
    assert_eq!(
        freed, expected,
        "only generations 1-4 go; every package is still in one"
    );

    noodle.ok(&["profile", "delete-generations", "old"]);
    assert_eq!(left(&noodle), [5]);
    let before = noodle.valid_paths();
    noodle.ok(&["store", "gc"]);
    let freed: BTreeSet<String> = before.difference(&noodle.valid_paths()).cloned().collect();
    let mut expected: BTreeSet<String> = gen_paths[5..].iter().cloned().collect();
    expected.extend(packages[5..].iter().cloned());
    assert_eq!(
        freed, expected,
        "generations 6, 7 and the packages only they held"
    );
    assert_eq!(names(&noodle.installed(&[])).len(), 5);
}

#[test]
fn the_system_profile_and_other_named_profiles() {
    let noodle = Noodle::new();
    let a = noodle.package("base", "1.0", &[("etc/os-release", "noodle")]);
    for given in [
        "/noodle/var/profiles/system".to_owned(),
        noodle
            .root()
            .join("noodle/var/profiles/system")
            .display()
            .to_string(),
    ] {
        noodle.ok(&["--profile", &given, "install", &a]);
    }
    let system = noodle.root().join("noodle/var/profiles/system");
    assert_eq!(
        std::fs::read_link(&system).expect("system link"),
        Path::new("system-1-link")
    );
    assert!(generation_path(&system, 1).ends_with("-system"));
    assert_eq!(
        noodle.generation_numbers(&["--profile", "/noodle/var/profiles/system"]),
        [(1, true)]
    );
    // The default profile is another one, still empty.
    assert!(noodle.installed(&[]).is_empty());
    let roots = noodle.ok(&["store", "roots"]);
    assert!(roots.contains("system-1-link"), "{roots}");
}

#[test]
fn json_output_of_every_profile_command() {
    let noodle = Noodle::new();
    let a = noodle.package("a", "1.0", &[("bin/a", "a")]);
    let b = noodle.package("b", "1.0", &[("bin/b", "b")]);
    let first = noodle.json(&["install", &a]);
    assert_eq!(first["generation"], 1);
    assert_eq!(first["changed"], true);
    assert_eq!(first["changes"], "+a 1.0");
    let again = noodle.json(&["install", &a]);
    assert_eq!(again["changed"], false);
    noodle.json(&["install", &b]);
    let switched = noodle.json(&["profile", "switch", "1"]);
    assert_eq!(
        (
            switched["activation"]["from"].as_u64(),
            switched["activation"]["to"].as_u64(),
            switched["activation"]["state"].as_str()
        ),
        (Some(2), Some(1), Some("COMMITTED"))
    );
    let generations = noodle.json(&["profile", "generations"]);
    assert_eq!(generations[1]["summary"], "+b 1.0");
    assert!(generations[0]["created_at"].as_i64().expect("time") > 1_700_000_000);
    let deleted = noodle.json(&["profile", "delete-generations", "old"]);
    assert_eq!(deleted["deleted"], serde_json::json!([2]));
    let removed = noodle.json(&["remove", "a"]);
    assert_eq!(removed["changes"], "-a 1.0");
    let human = noodle.ok(&["profile", "generations"]);
    assert!(
        human.contains("(current)") && human.contains("-a 1.0"),
        "{human}"
    );
}

/// A user's own store (no --root, not root): the profile lives in ~/.local/state/noodle, its
/// generations are GC roots through var/gcroots/profiles, and the PATH hint is printed once.
#[test]
fn an_ordinary_user_gets_a_profile_in_their_state_directory() {
    if !nix::unistd::geteuid().is_root() {
        return; // needs root to become another user
    }
    let home = tempfile::Builder::new()
        .prefix("noodle-user-")
        .tempdir()
        .expect("tempdir");
    let pkg = home.path().join("pkg");
    std::fs::create_dir_all(pkg.join("bin")).expect("mkdir");
    std::fs::write(pkg.join("bin/tool"), "#!/bin/sh\n").expect("write");
    let as_user = |args: &[&str]| {
        let out = common::as_nobody(home.path())
            .args(args)
            .output()
            .expect("run as nobody");
        assert!(out.status.success(), "{args:?}: {}", stderr_of(&out));
        out
    };
    let path = String::from_utf8(
        as_user(&[
            "store",
            "add",
            "--name",
            "tool-1.0",
            pkg.to_str().expect("utf-8"),
        ])
        .stdout,
    )
    .expect("utf-8");
    // The first generation says how to use it: the PATH to add, or, when this host has no
    // /noodle/store for its programs to run from, that they cannot run here.
    let hinted = |out: &std::process::Output| {
        let err = stderr_of(out);
        err.contains("export PATH=") || err.contains("which this host does not have")
    };
    let first = as_user(&["install", path.trim()]);
    assert!(hinted(&first), "{}", stderr_of(&first));
    let other = home.path().join("pkg2");
    std::fs::create_dir_all(&other).expect("mkdir");
    std::fs::write(other.join("readme"), "2").expect("write");
    let path2 = String::from_utf8(
        as_user(&[
            "store",
            "add",
            "--name",
            "doc-1.0",
            other.to_str().expect("utf-8"),
        ])
        .stdout,
    )
    .expect("utf-8");
    let second = as_user(&["install", path2.trim()]);
    assert!(!hinted(&second), "the hint is printed once");

    let state = home.path().join(".local/state/noodle");
    assert_eq!(
        std::fs::read_link(state.join("profile")).expect("profile link"),
        Path::new("profile-2-link")
    );
    let roots = String::from_utf8(as_user(&["store", "roots"]).stdout).expect("utf-8");
    for n in [1, 2] {
        assert!(
            roots.contains(&format!("profile-{n}-link")),
            "generation {n} is a root: {roots}"
        );
    }
    // GC keeps both generations (the old one too) and everything they hold.
    as_user(&["store", "gc"]);
    let list = String::from_utf8(as_user(&["list"]).stdout).expect("utf-8");
    assert!(list.contains("tool") && list.contains("doc"), "{list}");
    as_user(&["profile", "switch", "1"]);
}
