//! Bad input to profile commands, and writers at the same time: each case gets a clear error
//! naming the problem and what to do, a non-zero exit, and leaves the profile exactly as it
//! was; concurrent writers never lose an update.

mod common;

use std::path::{Path, PathBuf};

use common::channel::Channel;
use common::profile::profile_dir_state;
use common::{stderr_of, wait_until, Noodle};

/// A store whose default profile has generations 1 (a) and 2 (a, b), current 2.
fn two_generations() -> (Noodle, PathBuf) {
    let noodle = Noodle::new();
    let a = noodle.package("a", "1.0", &[("bin/a", "a")]);
    let b = noodle.package("b", "1.0", &[("bin/b", "b")]);
    noodle.ok(&["install", &a]);
    noodle.ok(&["install", &b]);
    let profile = noodle.default_profile();
    (noodle, profile)
}

/// Runs `args`, which must fail with a message containing every one of `needles`, and leave
/// the profile directory as it was.
fn refused(noodle: &Noodle, profile: &Path, args: &[&str], needles: &[&str]) -> i32 {
    let before = profile_dir_state(profile);
    let (code, err) = noodle.fails(args);
    for needle in needles {
        assert!(
            err.contains(needle),
            "{args:?}: expected '{needle}' in: {err}"
        );
    }
    assert_eq!(
        profile_dir_state(profile),
        before,
        "{args:?} changed the profile"
    );
    code
}

#[test]
fn unknown_packages_and_unsatisfiable_requirements_change_nothing() {
    let (noodle, profile) = two_generations();
    let channel = Channel::repo(&noodle);
    let code = refused(
        &noodle,
        &profile,
        &channel.args(&["install", "no-such-package"]),
        &["no-such-package"],
    );
    assert_eq!(code, 1);
    refused(
        &noodle,
        &profile,
        &channel.args(&["install", "crypto@^9"]),
        &["crypto", "^9"],
    );
    refused(
        &noodle,
        &profile,
        &["remove", "zzz"],
        &["zzz is not installed", "installed: a, b"],
    );
    refused(
        &noodle,
        &profile,
        &channel.args(&["update", "zzz"]),
        &["zzz is not installed"],
    );
    refused(
        &noodle,
        &profile,
        &[
            "install",
            "/noodle/store/00000000000000000000000000000000-gone",
        ],
        &["/noodle/store/00000000000000000000000000000000-gone"],
    );
}

#[test]
fn switching_to_a_generation_that_is_not_there() {
    let (noodle, profile) = two_generations();
    refused(
        &noodle,
        &profile,
        &["profile", "switch", "42"],
        &["has no generation 42; it has 1, 2"],
    );
    noodle.ok(&["profile", "delete-generations", "1"]);
    refused(
        &noodle,
        &profile,
        &["profile", "switch", "1"],
        &["has no generation 1; it has 2"],
    );
    refused(
        &noodle,
        &profile,
        &["profile", "rollback"],
        &["no generation before 2"],
    );
    refused(
        &noodle,
        &profile,
        &["profile", "delete-generations", "x..y"],
        &["does not name generations"],
    );
}

#[test]
fn a_profile_outside_the_root_is_refused() {
    let (noodle, _) = two_generations();
    let elsewhere = noodle.scratch("elsewhere/profile");
    let dotdot = format!(
        "{}/noodle/var/profiles/../../../x/profile",
        noodle.root().display()
    );
    for given in [
        elsewhere.to_str().expect("utf-8"),
        &dotdot,
        "/noodle/var/profiles",
    ] {
        let (code, err) = noodle.fails(&["--profile", given, "list"]);
        assert_eq!(code, 1);
        assert!(
            err.contains("is outside the store's root"),
            "{given}: {err}"
        );
    }
    assert!(!elsewhere
        .parent()
        .expect("parent")
        .join(".profile.lock")
        .exists());
}

#[test]
fn a_profile_link_replaced_by_a_file_is_left_alone() {
    let (noodle, profile) = two_generations();
    std::fs::remove_file(&profile).expect("rm link");
    std::fs::write(&profile, "someone's notes").expect("write");
    let a = noodle.package("c", "1.0", &[("bin/c", "c")]);
    for args in [
        &["install", a.as_str()][..],
        &["list"],
        &["profile", "switch", "1"],
    ] {
        refused(
            &noodle,
            &profile,
            args,
            &["is a regular file, not a profile link", "Move it away"],
        );
    }
    assert_eq!(
        std::fs::read_to_string(&profile).expect("file"),
        "someone's notes"
    );
    // Moved away, the generations are all there and switching makes the link again.
    std::fs::rename(&profile, profile.with_file_name("notes")).expect("mv");
    noodle.ok(&["profile", "switch", "1"]);
    assert_eq!(noodle.current_generation(&profile), Some(1));
}

#[test]
fn a_generation_whose_store_path_went_missing_says_how_to_recover() {
    let (noodle, profile) = two_generations();
    let gen1 = std::fs::read_link(profile.with_file_name("profile-1-link")).expect("link");
    let physical = noodle.physical(gen1.to_str().expect("utf-8"));
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "chmod -R u+w '{0}' && rm -rf '{0}'",
            physical.display()
        ))
        .status()
        .expect("rm");
    assert!(status.success());
    refused(
        &noodle,
        &profile,
        &["profile", "switch", "1"],
        &[
            "generation 1 is damaged",
            "missing from the disk",
            "delete-generations 1",
        ],
    );
    refused(
        &noodle,
        &profile,
        &["profile", "rollback"],
        &["generation 1 is damaged"],
    );
    // The current one is intact: listing works, and the damaged one can go.
    assert_eq!(noodle.installed(&[]).len(), 2);
    noodle.ok(&["profile", "delete-generations", "1"]);
    noodle.ok(&["store", "verify", "--repair"]);
    noodle.ok(&["store", "gc"]);
    let (code, problems) = noodle.verify_report(&[]);
    assert_eq!((code, problems.len()), (0, 0), "{problems:?}");
}

/// A second writer of the same profile waits for the first and builds on its result.
#[test]
fn two_writers_of_one_profile_lose_nothing() {
    let noodle = Noodle::new();
    let a = noodle.package("a", "1.0", &[("bin/a", "a")]);
    let b = noodle.package("b", "1.0", &[("bin/b", "b")]);
    let profile = noodle.default_profile();
    let first = noodle.spawn(
        &["install", &a],
        &[("NOODLE_FAILPOINT", "profile:before-switch=sleep:1500")],
    );
    wait_until(20, "the first writer's generation link", || {
        std::fs::symlink_metadata(profile.with_file_name("profile-1-link")).is_ok()
    });
    let second = noodle.run(&["install", &b]);
    let first = first.wait_with_output().expect("wait");
    assert!(first.status.success(), "{}", stderr_of(&first));
    assert!(second.status.success(), "{}", stderr_of(&second));
    assert!(
        stderr_of(&second).contains("waiting for another noodle that is changing profile"),
        "{}",
        stderr_of(&second)
    );
    let installed: Vec<String> = noodle.installed(&[]).into_iter().map(|p| p.0).collect();
    assert_eq!(
        installed,
        ["a", "b"],
        "the second install kept the first's package"
    );
    assert_eq!(noodle.generation_numbers(&[]), [(1, false), (2, true)]);
}

/// Different profiles do not wait for each other: ten updated at once all end on their new
/// generation.
#[test]
fn ten_profiles_updated_at_once_all_land() {
    let noodle = Noodle::new();
    let profiles: Vec<String> = (0..10)
        .map(|i| format!("/noodle/var/profiles/p{i}"))
        .collect();
    let firsts: Vec<String> = (0..10)
        .map(|i| {
            noodle.package(
                &format!("first{i}"),
                "1.0",
                &[(&format!("bin/first{i}"), "1")],
            )
        })
        .collect();
    let seconds: Vec<String> = (0..10)
        .map(|i| {
            noodle.package(
                &format!("second{i}"),
                "1.0",
                &[(&format!("bin/second{i}"), "2")],
            )
        })
        .collect();
    for (profile, first) in profiles.iter().zip(&firsts) {
        noodle.ok(&["--profile", profile, "install", first]);
    }
    let children: Vec<_> = profiles
        .iter()
        .zip(&seconds)
        .map(|(profile, second)| noodle.spawn(&["--profile", profile, "install", second], &[]))
        .collect();
    for child in children {
        let out = child.wait_with_output().expect("wait");
        assert!(out.status.success(), "{}", stderr_of(&out));
    }
    for (i, profile) in profiles.iter().enumerate() {
        assert_eq!(
            noodle.generation_numbers(&["--profile", profile]),
            [(1, false), (2, true)],
            "{profile}"
        );
        let names: Vec<String> = noodle
            .installed(&["--profile", profile])
            .into_iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(names, [format!("first{i}"), format!("second{i}")]);
    }
}
