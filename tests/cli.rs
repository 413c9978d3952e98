//! The user-visible behaviour of the `noodle` command line, driven through the real binary.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::{
    make_tree, open_up, output_of, set_mode, stderr_of, stdout_of, tamper, Noodle, BIN, NOBODY,
};

/// Block size of the parallel hasher and reference scanner (store/src/nar/treehash.rs).
const BLOCK: usize = 256 * 1024;

fn write(path: &Path, data: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, data).expect("write");
}

fn lines(text: &str) -> BTreeSet<String> {
    text.lines().map(str::to_owned).collect()
}

fn set_of(items: &[&String]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).clone()).collect()
}

// ----------------------------------------------------------------------------------- init ---

#[test]
fn init_creates_the_store_and_is_idempotent() {
    let noodle = Noodle::uninitialised();
    let out = noodle.run(&["init"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(out.stdout.is_empty(), "init prints nothing on stdout");
    assert!(noodle.physical_store().is_dir());
    assert!(noodle.db_file().is_file());
    for dir in ["tmp", "gcroots", "profiles", "temproots"] {
        assert!(noodle.root().join("noodle/var").join(dir).is_dir(), "{dir}");
    }
    let tree = noodle.scratch("tree");
    make_tree(&tree, "x");
    let path = noodle.add(&tree);
    let before = noodle.snapshot();
    let rows = noodle.db_rows();
    noodle.ok(&["init"]);
    noodle.ok(&["init", "--store-dir", "/noodle/store"]);
    assert_eq!(noodle.snapshot(), before, "a second init changed files");
    assert_eq!(noodle.db_rows(), rows, "a second init changed the database");
    noodle.ok(&["store", "path-info", &path]);
}

#[test]
fn init_refuses_a_different_store_dir_naming_both() {
    let noodle = Noodle::new();
    let before = noodle.snapshot();
    let (code, err) = noodle.fails(&["init", "--store-dir", "/other/store"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("/noodle/store"),
        "recorded dir not named: {err}"
    );
    assert!(
        err.contains("/other/store"),
        "requested dir not named: {err}"
    );
    let out = noodle.run_env(&["init"], &[("NOODLE_STORE_DIR", "/other/store")]);
    assert!(!out.status.success(), "NOODLE_STORE_DIR is --store-dir");
    assert!(stderr_of(&out).contains("/other/store"));
    assert_eq!(noodle.snapshot(), before);
}

#[test]
fn custom_store_dir_names_paths() {
    let noodle = Noodle::uninitialised();
    noodle.ok(&["init", "--store-dir", "/opt/x/store"]);
    let tree = noodle.scratch("tree");
    make_tree(&tree, "custom");
    let path = noodle.add(&tree);
    assert!(path.starts_with("/opt/x/store/"), "{path}");
    let base = path.strip_prefix("/opt/x/store/").expect("prefix");
    assert_eq!(base.len(), 32 + 1 + "tree".len(), "{base}");
    assert!(noodle
        .root()
        .join("opt/x/store")
        .join(base)
        .join("bin/tool")
        .is_file());
    let info = noodle.json(&["store", "path-info", &path]);
    assert_eq!(info[0]["path"], path.as_str());
    // Same contents in a default store: another path (the store dir is in the fingerprint).
    let other = Noodle::new();
    assert_ne!(other.add(&tree), path);
    // Opening it again with the default logical dir is refused.
    let (_, err) = noodle.fails(&["init"]);
    assert!(
        err.contains("/opt/x/store") && err.contains("/noodle/store"),
        "{err}"
    );
}

// --------------------------------------------------------------------------- default root ---

#[test]
fn default_root_for_a_user_is_xdg_data_home() {
    let base = tempfile::tempdir().expect("tempdir");
    open_up(base.path());
    let home = base.path().join("home");
    let xdg = home.join("data");
    std::fs::create_dir_all(&xdg).expect("mkdir");
    std::os::unix::fs::chown(&home, Some(NOBODY), Some(NOBODY)).expect("chown");
    std::os::unix::fs::chown(&xdg, Some(NOBODY), Some(NOBODY)).expect("chown");
    let tree = base.path().join("tree");
    make_tree(&tree, "user");

    let as_user = |xdg_set: bool, args: &[&str]| {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env_remove("NOODLE_ROOT")
            .env_remove("NOODLE_FAILPOINT")
            .env("HOME", &home);
        if xdg_set {
            command.env("XDG_DATA_HOME", &xdg);
        } else {
            command.env_remove("XDG_DATA_HOME");
        }
        if common::running_as_root() {
            use std::os::unix::process::CommandExt;
            command.uid(NOBODY).gid(NOBODY);
        }
        output_of(&mut command)
    };

    // No `init`, no --root: `store add` just works, in $XDG_DATA_HOME/noodle.
    let out = as_user(true, &["store", "add", tree.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let path = stdout_of(&out).trim().to_owned();
    let root = xdg.join("noodle");
    let physical = root.join(path.trim_start_matches('/'));
    assert!(
        physical.join("bin/tool").is_file(),
        "{}",
        physical.display()
    );
    let db = root.join("noodle/var/db/store.sqlite");
    assert!(db.is_file());
    if common::running_as_root() {
        assert_eq!(std::fs::metadata(&db).expect("stat").uid(), NOBODY);
        assert_eq!(std::fs::metadata(&physical).expect("stat").uid(), NOBODY);
    }
    let out = as_user(true, &["store", "path-info", &path]);
    assert!(out.status.success(), "{}", stderr_of(&out));

    // Without XDG_DATA_HOME: $HOME/.local/share/noodle.
    let out = as_user(false, &["store", "add", tree.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out).trim(), path);
    assert!(home
        .join(".local/share/noodle")
        .join(path.trim_start_matches('/'))
        .is_dir());
}

#[test]
fn noodle_root_env_is_like_root_option() {
    let noodle = Noodle::uninitialised();
    let tree = noodle.scratch("tree");
    make_tree(&tree, "env");
    let env_run = |args: &[&str]| {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env("NOODLE_ROOT", noodle.root())
            .env_remove("NOODLE_FAILPOINT");
        output_of(&mut command)
    };
    let out = env_run(&["init"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(noodle.db_file().is_file(), "NOODLE_ROOT ignored by init");
    let out = env_run(&["store", "add", tree.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let path = stdout_of(&out).trim().to_owned();
    assert!(noodle.physical(&path).is_dir());
    // The --root store is the same store.
    assert_eq!(noodle.references(&path), Vec::<String>::new());
    let out = env_run(&["store", "path-info", &path]);
    assert!(out.status.success(), "{}", stderr_of(&out));
}

// ------------------------------------------------------------------------------------ add ---

#[test]
fn add_prints_exactly_the_path() {
    let noodle = Noodle::new();
    let tree = noodle.scratch("tree");
    make_tree(&tree, "print");
    for _ in 0..2 {
        let out = noodle.run(&["store", "add", tree.to_str().expect("utf-8")]);
        assert!(out.status.success(), "{}", stderr_of(&out));
        let text = stdout_of(&out);
        assert_eq!(text.lines().count(), 1, "stdout: {text:?}");
        assert!(text.ends_with('\n'));
        let path = text.trim_end();
        assert!(
            path.starts_with("/noodle/store/") && path.ends_with("-tree"),
            "{text:?}"
        );
        assert_eq!(path.trim(), path, "no stray whitespace: {text:?}");
        assert!(noodle.physical(path).is_dir());
    }
}

#[test]
fn add_json_reports_hash_size_references_and_added() {
    let noodle = Noodle::new();
    let tree = noodle.scratch("tree");
    make_tree(&tree, "json");
    let tree_arg = tree.to_str().expect("utf-8");
    let first = noodle.json(&["store", "add", tree_arg]);
    let first = &first.as_array().expect("array of results")[0];
    let path = first["path"].as_str().expect("path");
    assert!(path.starts_with("/noodle/store/"), "{first}");
    let nar = noodle.dump(tree_arg);
    assert_eq!(
        first["nar_size"].as_u64(),
        Some(nar.len() as u64),
        "{first}"
    );
    assert_eq!(
        first["nar_hash"]
            .as_str()
            .map(|h| h.contains(&blake3::hash(&nar).to_hex().to_string())),
        Some(true),
        "nar_hash is BLAKE3 of the NAR: {first}"
    );
    assert_eq!(first["references"], serde_json::json!([]));
    assert_eq!(first["added"], true);
    let second = noodle.json(&["store", "add", tree_arg]);
    let second = &second[0];
    assert_eq!(second["added"], false);
    assert_eq!(second["path"], first["path"]);
    assert_eq!(second["nar_hash"], first["nar_hash"]);
}

#[test]
fn add_with_name_single_file_and_symlink_argument() {
    let noodle = Noodle::new();
    let tree = noodle.scratch("tree");
    make_tree(&tree, "name");

    let named = noodle.add_with(&tree, &["--name", "hello-1.0"]);
    assert!(named.ends_with("-hello-1.0"), "{named}");
    assert_ne!(named, noodle.add(&tree), "the name is part of the path");

    // A single regular file, and an executable one.
    let file = noodle.scratch("notes.txt");
    write(&file, "just a file\n");
    let path = noodle.add(&file);
    assert!(path.ends_with("-notes.txt"), "{path}");
    let physical = noodle.physical(&path);
    let meta = std::fs::symlink_metadata(&physical).expect("stat");
    assert!(meta.is_file());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o444);
    assert_eq!(std::fs::read(&physical).expect("read"), b"just a file\n");
    assert_eq!(
        noodle.dump(&path),
        noodle.dump(file.to_str().expect("utf-8"))
    );
    let script = noodle.scratch("run.sh");
    write(&script, "#!/bin/sh\n");
    set_mode(&script, 0o750);
    let path = noodle.add(&script);
    let mode = std::fs::metadata(noodle.physical(&path))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o555);

    // A symlink to a directory, given as the argument, is followed.
    let link = noodle.scratch("link-to-tree");
    std::os::unix::fs::symlink(&tree, &link).expect("symlink");
    let by_link = noodle.json(&[
        "store",
        "add",
        "--name",
        "tree",
        link.to_str().expect("utf-8"),
    ]);
    let direct = noodle.json(&["store", "add", tree.to_str().expect("utf-8")]);
    assert_eq!(by_link[0]["nar_hash"], direct[0]["nar_hash"]);
    assert_eq!(by_link[0]["path"], direct[0]["path"]);
    let unnamed = noodle.add(&link);
    let meta = std::fs::symlink_metadata(noodle.physical(&unnamed)).expect("stat");
    assert!(meta.is_dir(), "the link was stored, not its target");
    assert!(noodle.physical(&unnamed).join("bin/tool").is_file());
}

// ------------------------------------------------------------- path-info, closure, refs ---

/// Adds a tree made of one file holding `text`, with reference scanning.
fn add_referrer(noodle: &Noodle, name: &str, contents: &[u8]) -> String {
    let dir = noodle.scratch(name);
    write(&dir.join("data"), contents);
    noodle.add_with(&dir, &["--scan-references"])
}

#[test]
fn path_info_closure_and_referrers_on_a_chain() {
    let noodle = Noodle::new();
    let a_tree = noodle.scratch("liba");
    make_tree(&a_tree, "a");
    let a = noodle.add(&a_tree);
    let b = add_referrer(
        &noodle,
        "libb",
        format!("#!/bin/sh\nexec {a}/bin/tool\n").as_bytes(),
    );
    let c = add_referrer(
        &noodle,
        "app",
        format!("LD_LIBRARY_PATH={b}/lib\n").as_bytes(),
    );
    let lone = add_referrer(&noodle, "lone", b"no references here\n");

    assert_eq!(noodle.references(&b), [a.as_str()]);
    assert_eq!(noodle.references(&c), [b.as_str()]);
    assert!(noodle.references(&lone).is_empty());
    assert!(noodle.references(&a).is_empty());

    // Human path-info.
    let text = noodle.ok(&["store", "path-info", &c]);
    assert!(text.contains(&format!("path:        {c}")), "{text}");
    assert!(text.contains("nar hash:"), "{text}");
    assert!(text.contains("nar size:"), "{text}");
    assert!(text.contains("registered:"), "{text}");
    assert!(text.contains(&format!("references:  {b}")), "{text}");
    let text = noodle.ok(&["store", "path-info", &a]);
    assert!(text.contains("references:  (none)"), "{text}");

    // JSON path-info, several paths at once.
    let info = noodle.json(&["store", "path-info", &c, &a]);
    assert_eq!(info.as_array().expect("array").len(), 2);
    assert_eq!(info[0]["path"], c.as_str());
    assert_eq!(info[0]["references"], serde_json::json!([b]));
    assert!(info[0]["nar_size"].as_u64().expect("size") > 0);
    assert!(info[0]["registered_at"].as_i64().expect("time") > 1_600_000_000);
    assert!(info[0]["nar_hash"].as_str().expect("hash").len() >= 64);
    let nar = noodle.dump(&c);
    assert_eq!(info[0]["nar_size"].as_u64(), Some(nar.len() as u64));

    // Closures.
    assert_eq!(
        lines(&noodle.ok(&["store", "closure", &c])),
        set_of(&[&a, &b, &c])
    );
    assert_eq!(
        lines(&noodle.ok(&["store", "closure", &b])),
        set_of(&[&a, &b])
    );
    assert_eq!(lines(&noodle.ok(&["store", "closure", &a])), set_of(&[&a]));
    assert_eq!(
        lines(&noodle.ok(&["store", "closure", "--referrers", &a])),
        set_of(&[&a, &b, &c])
    );
    assert_eq!(
        lines(&noodle.ok(&["store", "closure", "--referrers", &c])),
        set_of(&[&c])
    );
    assert_eq!(
        lines(&noodle.ok(&["store", "closure", &c, &lone])),
        set_of(&[&a, &b, &c, &lone])
    );
    // A path inside a store path names that store path.
    let inside = format!("{a}/bin/tool");
    assert_eq!(
        lines(&noodle.ok(&["store", "closure", "--referrers", &inside])).len(),
        3
    );

    // Without --scan-references nothing is recorded.
    let dir = noodle.scratch("unscanned");
    write(&dir.join("data"), a.as_bytes());
    let unscanned = noodle.add(&dir);
    assert!(noodle.references(&unscanned).is_empty());
}

/// The offset in `noodle store dump` of a tree at which the contents of its only file begin.
fn contents_offset(noodle: &Noodle, dir: &Path, marker: &[u8]) -> usize {
    let nar = noodle.dump(dir.to_str().expect("utf-8"));
    nar.windows(marker.len())
        .position(|w| w == marker)
        .expect("marker in the archive")
}

#[test]
fn references_far_into_a_big_file() {
    let noodle = Noodle::new();
    let dep = noodle.add_new_tree("dep");
    // 1.5 MiB of filler with the full path 1.3 MiB in, inside a block, not at its edge.
    let mut data = vec![b'_'; 3 * 512 * 1024];
    let at = 1_300_000;
    data[at..at + dep.len()].copy_from_slice(dep.as_bytes());
    let big = add_referrer(&noodle, "big", &data);
    assert_eq!(noodle.references(&big), [dep.as_str()]);
    assert!(lines(&noodle.ok(&["store", "closure", &big])).contains(&dep));
    assert!(lines(&noodle.ok(&["store", "closure", "--referrers", &dep])).contains(&big));
}

#[test]
fn references_straddling_block_boundaries() {
    let noodle = Noodle::new();
    let size = 5 * BLOCK / 2 + 100; // spans three blocks of the archive
                                    // Where the hash part starts relative to the second block boundary of the archive:
                                    // straddling it by 1, 16 and 31 characters, starting exactly on it, ending exactly on it.
    let cases: [(&str, isize); 5] = [
        ("straddle-1", -1),
        ("straddle-16", -16),
        ("straddle-31", -31),
        ("starts-on", 0),
        ("ends-on", -32),
    ];
    for (name, shift) in cases {
        let dep_tree = noodle.scratch(&format!("dep-{name}"));
        make_tree(&dep_tree, name);
        let dep = noodle.add(&dep_tree);
        let hash_part = &dep["/noodle/store/".len().."/noodle/store/".len() + 32];

        // Find where the file's contents start in the archive, then place the hash.
        let dir = noodle.scratch(name);
        let mut data = vec![b'_'; size];
        let marker = b"@@MARKER@@";
        data[..marker.len()].copy_from_slice(marker);
        write(&dir.join("data"), &data);
        let start = contents_offset(&noodle, &dir, marker);
        let hash_at_nar = (2 * BLOCK) as isize + shift;
        let in_file = (hash_at_nar - start as isize) as usize;
        let prefix = "/noodle/store/".len();
        let mut data = vec![b'_'; size];
        data[in_file - prefix..in_file - prefix + dep.len()].copy_from_slice(dep.as_bytes());
        write(&dir.join("data"), &data);
        let nar = noodle.dump(dir.to_str().expect("utf-8"));
        assert_eq!(
            &nar[hash_at_nar as usize..hash_at_nar as usize + 32],
            hash_part.as_bytes(),
            "test set-up: the hash is not where intended"
        );
        let path = noodle.add_with(&dir, &["--scan-references"]);
        assert_eq!(noodle.references(&path), [dep.as_str()], "case {name}");
    }
}

// --------------------------------------------------------------------------- dump/restore ---

#[test]
fn dump_restore_round_trip() {
    let noodle = Noodle::new();
    let tree = noodle.scratch("tree");
    make_tree(&tree, "round");
    write(&tree.join("big"), vec![7u8; 600 * 1024]);
    let path = noodle.add(&tree);
    let from_store = noodle.dump(&path);
    let from_source = noodle.dump(tree.to_str().expect("utf-8"));
    assert_eq!(
        from_store, from_source,
        "dump of a store path equals dump of its source"
    );
    assert_eq!(&from_store[8..21], b"nix-archive-1");

    let out_dir = noodle.scratch("restored");
    let out = noodle.run_stdin(
        &["store", "restore", out_dir.to_str().expect("utf-8")],
        &from_store,
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(out.stdout.is_empty(), "restore prints nothing on stdout");
    assert_eq!(noodle.dump(out_dir.to_str().expect("utf-8")), from_store);
    let tool = std::fs::metadata(out_dir.join("bin/tool")).expect("stat");
    assert!(
        tool.permissions().mode() & 0o100 != 0,
        "executable restored"
    );
    assert_eq!(
        std::fs::read_link(out_dir.join("bin/readme")).expect("readlink"),
        Path::new("../share/doc/README")
    );
    // A path inside a store path dumps that part.
    let inner = noodle.dump(&format!("{path}/share/doc"));
    assert_eq!(
        inner,
        noodle.dump(tree.join("share/doc").to_str().expect("utf-8"))
    );
    // Restoring over an existing directory is refused.
    let out = noodle.run_stdin(
        &["store", "restore", out_dir.to_str().expect("utf-8")],
        &from_store,
    );
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("already exists"),
        "{}",
        stderr_of(&out)
    );
}

// --------------------------------------------------------------------------------- verify ---

#[test]
fn verify_clean_store() {
    let noodle = Noodle::new();
    let tree = noodle.scratch("tree");
    make_tree(&tree, "clean");
    noodle.add(&tree);
    for args in [
        &["store", "verify"][..],
        &["store", "verify", "--check-contents"],
        &["store", "verify", "--check-contents", "--repair"],
    ] {
        let out = noodle.run(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr_of(&out));
        assert!(
            out.stdout.is_empty(),
            "no problems listed: {}",
            stdout_of(&out)
        );
    }
    let report = noodle.json(&["store", "verify", "--check-contents"]);
    assert_eq!(report["checked"], 1);
    assert_eq!(report["problems"], serde_json::json!([]));
}

#[test]
fn verify_check_contents_names_the_damaged_file() {
    let noodle = Noodle::new();
    let tree = noodle.scratch("tree");
    make_tree(&tree, "damage");
    let path = noodle.add(&tree);
    let other_tree = noodle.scratch("other");
    make_tree(&other_tree, "intact");
    let other = noodle.add(&other_tree);

    // Same size, same metadata, other bytes: only hashing can tell.
    let file = noodle.physical(&path).join("share/doc/README");
    let mut data = std::fs::read(&file).expect("read");
    data[10] ^= 1;
    tamper(&file, &data, true);
    let out = noodle.run(&["store", "verify"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "metadata is canonical: {}",
        stdout_of(&out)
    );
    let out = noodle.run(&["store", "verify", "--check-contents"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    assert!(text.contains(&format!("Damaged: {path}")), "{text}");
    assert!(
        text.contains("share/doc/README: contents changed"),
        "{text}"
    );
    assert!(
        !text.contains(&other),
        "the intact path is not reported: {text}"
    );
    let out = noodle.run(&["--json", "store", "verify", "--check-contents"]);
    assert_eq!(out.status.code(), Some(3));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["problems"][0]["kind"], "damaged");
    assert_eq!(report["problems"][0]["path"], path.as_str());
    assert_eq!(
        report["problems"][0]["details"],
        serde_json::json!(["share/doc/README: contents changed"])
    );
    // Damage cannot be repaired from nowhere: still exit 3.
    let out = noodle.run(&["store", "verify", "--check-contents", "--repair"]);
    assert_eq!(out.status.code(), Some(3));
    // Checking only the intact path is clean.
    let out = noodle.run(&["store", "verify", "--check-contents", &other]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout_of(&out));
}

#[test]
fn verify_reports_changed_contents_and_mode() {
    let noodle = Noodle::new();
    let tree = noodle.scratch("tree");
    make_tree(&tree, "tamper");
    let path = noodle.add(&tree);
    // As a careless admin would: chmod u+w, edit.
    tamper(
        &noodle.physical(&path).join("bin/tool"),
        b"#!/bin/sh\nrm -rf /\n",
        false,
    );
    let out = noodle.run(&["store", "verify", "--check-contents"]);
    assert_eq!(out.status.code(), Some(3));
    let text = stdout_of(&out);
    assert!(text.contains("Damaged"), "{text}");
    assert!(text.contains("bin/tool: contents changed"), "{text}");
    assert!(text.contains("Metadata"), "{text}");
}

#[test]
fn verify_without_contents_catches_a_size_change_with_metadata_restored() {
    let noodle = Noodle::new();
    let tree = noodle.scratch("tree");
    make_tree(&tree, "resize");
    let path = noodle.add(&tree);
    // Mode and time put back as they were: only the size tells, and no file is read.
    tamper(
        &noodle.physical(&path).join("bin/tool"),
        b"#!/bin/sh\n",
        true,
    );
    let out = noodle.run(&["store", "verify"]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout_of(&out));
    let text = stdout_of(&out);
    assert!(text.contains("Damaged"), "{text}");
    assert!(text.contains("its size changed"), "{text}");
    assert!(!text.contains("Metadata"), "{text}");
    // Repair cannot restore contents: it says so and does not claim to have.
    let out = noodle.run(&["store", "verify", "--repair"]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout_of(&out));
}

#[test]
fn verify_repair_fixes_metadata() {
    let noodle = Noodle::new();
    let tree = noodle.scratch("tree");
    make_tree(&tree, "meta");
    let path = noodle.add(&tree);
    let file = noodle.physical(&path).join("share/doc/README");
    set_mode(&file, 0o644);
    let out = noodle.run(&["store", "verify"]);
    assert_eq!(out.status.code(), Some(3));
    let text = stdout_of(&out);
    assert!(text.contains(&format!("Metadata: {path}")), "{text}");
    assert!(text.contains("share/doc/README: mode 0644"), "{text}");
    let out = noodle.run(&["store", "verify", "--repair"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout_of(&out));
    assert!(stdout_of(&out).contains("(repaired)"));
    let meta = std::fs::metadata(&file).expect("stat");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o444);
    assert_eq!(meta.mtime(), 1);
    let out = noodle.run(&["store", "verify", "--check-contents"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout_of(&out));
    assert!(out.stdout.is_empty());
}

#[test]
fn verify_repair_removes_unregistered_directory() {
    let noodle = Noodle::new();
    let tree = noodle.scratch("tree");
    make_tree(&tree, "keep");
    let path = noodle.add(&tree);
    let junk_name = "0123456789abcdfghijklmnpqrsvwxyz-junk";
    let junk = noodle.physical_store().join(junk_name);
    write(&junk.join("file"), "leftover");
    let out = noodle.run(&["store", "verify"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stdout_of(&out).contains(&format!("Unregistered: /noodle/store/{junk_name}")),
        "{}",
        stdout_of(&out)
    );
    let out = noodle.run(&["store", "verify", "--repair"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout_of(&out));
    assert!(!junk.exists(), "leftover not removed");
    assert!(
        noodle.physical(&path).join("bin/tool").is_file(),
        "valid path kept"
    );
    let out = noodle.run(&["store", "verify", "--check-contents"]);
    assert_eq!(out.status.code(), Some(0));
}

// ------------------------------------------------------------------------------------- gc ---

#[test]
fn gc_deletes_unrooted_paths() {
    let noodle = Noodle::new();
    let a_tree = noodle.scratch("a");
    make_tree(&a_tree, "a");
    let a = noodle.add(&a_tree);
    let b = add_referrer(&noodle, "b", a.as_bytes());
    let out = noodle.ok(&["store", "gc"]);
    assert_eq!(lines(&out), set_of(&[&a, &b]));
    assert!(!noodle.physical(&a).exists() && !noodle.physical(&b).exists());
    assert!(noodle.db_rows().is_empty());
    assert!(
        noodle.store_entries().is_empty(),
        "{:?}",
        noodle.store_entries()
    );
    let tmp: Vec<_> = std::fs::read_dir(noodle.root().join("noodle/var/tmp"))
        .expect("ls")
        .collect();
    assert!(tmp.is_empty(), "trash left in var/tmp");
    let (code, _) = noodle.fails(&["store", "path-info", &a]);
    assert_eq!(code, 1);
    // The same tree can be added again afterwards.
    assert_eq!(noodle.add(&a_tree), a);
    assert!(noodle.physical(&a).join("bin/tool").is_file());
}

#[test]
fn gc_keeps_gc_root_and_its_closure() {
    let noodle = Noodle::new();
    let a = noodle.add_new_tree("a");
    let b_dir = noodle.scratch("b");
    write(&b_dir.join("data"), a.as_bytes());
    let b = noodle.add_with(&b_dir, &["--scan-references", "--gc-root", "myroot"]);
    let c = noodle.add_new_tree("c");

    let link = noodle.root().join("noodle/var/gcroots/myroot");
    assert_eq!(
        std::fs::read_link(&link).expect("gc root link"),
        Path::new(&b)
    );
    let roots = noodle.ok(&["store", "roots"]);
    assert!(roots.contains("myroot") && roots.contains(&b), "{roots}");

    let out = noodle.ok(&["store", "gc"]);
    assert_eq!(lines(&out), set_of(&[&c]));
    assert!(noodle.physical(&a).join("bin/tool").is_file());
    assert!(noodle.physical(&b).join("data").is_file());
    assert!(!noodle.physical(&c).exists());
    assert_eq!(noodle.db_rows().len(), 2);
    assert_eq!(
        noodle
            .run(&["store", "verify", "--check-contents"])
            .status
            .code(),
        Some(0)
    );

    // Dropping the root frees both.
    std::fs::remove_file(&link).expect("rm root");
    assert_eq!(lines(&noodle.ok(&["store", "gc"])), set_of(&[&a, &b]));
}

#[test]
fn gc_keeps_profile_roots() {
    let noodle = Noodle::new();
    let profiles = noodle.root().join("noodle/var/profiles");
    let mut kept = Vec::new();
    for name in ["direct", "chained", "peruser"] {
        let tree = noodle.scratch(name);
        make_tree(&tree, name);
        kept.push(noodle.add(&tree));
    }
    // A direct link to the logical path.
    std::os::unix::fs::symlink(&kept[0], profiles.join("direct")).expect("symlink");
    // system -> system-1-link (relative) -> store path.
    std::os::unix::fs::symlink(&kept[1], profiles.join("system-1-link")).expect("symlink");
    std::os::unix::fs::symlink("system-1-link", profiles.join("system")).expect("symlink");
    // Nested per-user profile.
    let user = profiles.join("per-user/alice");
    std::fs::create_dir_all(&user).expect("mkdir");
    std::os::unix::fs::symlink(&kept[2], user.join("profile")).expect("symlink");
    let doomed = noodle.add_new_tree("doomed");

    let out = noodle.ok(&["store", "gc"]);
    assert_eq!(lines(&out), set_of(&[&doomed]));
    for path in &kept {
        assert!(
            noodle.physical(path).join("bin/tool").is_file(),
            "{path} collected"
        );
    }
    // A profile chain whose generation link is gone keeps nothing.
    std::fs::remove_file(profiles.join("system-1-link")).expect("rm");
    assert_eq!(lines(&noodle.ok(&["store", "gc"])), set_of(&[&kept[1]]));
}

#[test]
fn gc_dry_run_changes_nothing() {
    let noodle = Noodle::new();
    let a = noodle.add_new_tree("a");
    let junk = noodle
        .physical_store()
        .join("0123456789abcdfghijklmnpqrsvwxyz-junk");
    write(&junk.join("f"), "x");
    let before = noodle.snapshot();
    let rows = noodle.db_rows();
    let out = noodle.run(&["store", "gc", "--dry-run"]);
    assert!(out.status.success());
    assert_eq!(lines(&stdout_of(&out)), set_of(&[&a]));
    assert!(
        stderr_of(&out).contains("would delete"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(noodle.snapshot(), before, "--dry-run changed files");
    assert_eq!(noodle.db_rows(), rows, "--dry-run changed the database");
    let report = noodle.json(&["store", "gc", "--dry-run"]);
    assert_eq!(report["deleted"], serde_json::json!([a]));
    assert_eq!(noodle.snapshot(), before);
}

#[test]
fn gc_max_freed_stops_early_and_keeps_closure() {
    let noodle = Noodle::new();
    // a <- b <- c, a <- e, d alone: every step of a partial collection must keep closure.
    let a = noodle.add_new_tree("a");
    let b = add_referrer(&noodle, "b", a.as_bytes());
    let c = add_referrer(&noodle, "c", b.as_bytes());
    let e = add_referrer(&noodle, "e", format!("{a} and again {a}").as_bytes());
    let d = add_referrer(&noodle, "d", b"alone");
    let mut remaining = set_of(&[&a, &b, &c, &d, &e]);
    let mut rounds = 0;
    while !remaining.is_empty() {
        rounds += 1;
        assert!(rounds <= 5, "gc --max-freed 1 made no progress");
        let out = noodle.ok(&["store", "gc", "--max-freed", "1"]);
        let deleted = lines(&out);
        assert_eq!(deleted.len(), 1, "--max-freed 1 deletes one path: {out}");
        for path in &deleted {
            assert!(remaining.remove(path), "{path} deleted twice?");
            assert!(!noodle.physical(path).exists());
        }
        noodle.assert_closure_intact();
        let valid: BTreeSet<String> = noodle
            .db_rows()
            .iter()
            .map(|r| r.split(' ').next().expect("path").to_owned())
            .collect();
        assert_eq!(valid, remaining);
        for path in &remaining {
            for reference in noodle.references(path) {
                assert!(remaining.contains(&reference), "{path} lost {reference}");
            }
        }
        assert_eq!(
            noodle
                .run(&["store", "verify", "--check-contents"])
                .status
                .code(),
            Some(0)
        );
    }
    // A larger budget frees several paths at once, but stops before all.
    let noodle = Noodle::new();
    let mut all = Vec::new();
    for i in 0..6 {
        let dir = noodle.scratch(&format!("p{i}"));
        write(&dir.join("data"), vec![b'x'; 10_000]);
        write(&dir.join("id"), format!("{i}"));
        all.push(noodle.add(&dir));
    }
    let out = noodle.ok(&["store", "gc", "--max-freed", "15K"]);
    assert_eq!(lines(&out).len(), 2, "{out}");
    assert_eq!(noodle.db_rows().len(), 4);
}

// --------------------------------------------------------------------------------- delete ---

#[test]
fn delete_refuses_referenced_and_rooted_paths() {
    let noodle = Noodle::new();
    let a_tree = noodle.scratch("a");
    make_tree(&a_tree, "a");
    let a = noodle.add(&a_tree);
    let b = add_referrer(&noodle, "b", a.as_bytes());
    let r_tree = noodle.scratch("r");
    make_tree(&r_tree, "r");
    let r = noodle.add_with(&r_tree, &["--gc-root", "keepme"]);

    let before = noodle.snapshot();
    let (code, err) = noodle.fails(&["store", "delete", &a]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains(&b), "referrer not named: {err}");
    let (code, err) = noodle.fails(&["store", "delete", &r]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("gcroots/keepme"), "root not named: {err}");
    assert_eq!(noodle.snapshot(), before, "a refused delete changed files");

    // Referrer first, then the reference; or both at once.
    assert_eq!(noodle.ok(&["store", "delete", &b]).trim(), b);
    assert!(!noodle.physical(&b).exists());
    assert_eq!(noodle.ok(&["store", "delete", &a]).trim(), a);
    assert!(!noodle.physical(&a).exists());
    let a = noodle.add(&a_tree);
    let b = add_referrer(&noodle, "b", a.as_bytes());
    assert_eq!(
        lines(&noodle.ok(&["store", "delete", &a, &b])),
        set_of(&[&a, &b])
    );
    noodle.assert_closure_intact();
    assert_eq!(noodle.db_rows().len(), 1, "only the rooted path is left");
    let (code, _) = noodle.fails(&["store", "path-info", &a]);
    assert_eq!(code, 1);
}

// ------------------------------------------------------------------------------- optimise ---

#[test]
fn optimise_shares_identical_files() {
    let noodle = Noodle::new();
    let shared = "the same text in both paths\n".repeat(500);
    let mut paths = Vec::new();
    for name in ["one", "two"] {
        let dir = noodle.scratch(name);
        write(&dir.join("lib/shared.txt"), &shared);
        write(&dir.join("own"), name);
        paths.push(noodle.add_with(&dir, &["--gc-root", name]));
    }
    let file = |p: &String| noodle.physical(p).join("lib/shared.txt");
    let ino = |p: &String| std::fs::metadata(file(p)).expect("stat").ino();
    assert_ne!(ino(&paths[0]), ino(&paths[1]));
    let report = noodle.json(&["store", "optimise"]);
    assert!(report["files_linked"].as_u64().expect("n") >= 1, "{report}");
    assert_eq!(ino(&paths[0]), ino(&paths[1]), "identical files not shared");
    let links = noodle.physical_store().join(".links");
    let entries = walkdir::WalkDir::new(&links)
        .into_iter()
        .filter(|e| e.as_ref().is_ok_and(|e| e.file_type().is_file()))
        .count();
    assert!(entries >= 1, ".links is empty");
    let out = noodle.run(&["store", "verify", "--check-contents"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout_of(&out));
    // Optimising again changes nothing.
    let before = noodle.snapshot();
    noodle.ok(&["store", "optimise"]);
    assert_eq!(noodle.snapshot(), before);

    // Deleting one path and collecting keeps the other intact.
    let gcroots = noodle.root().join("noodle/var/gcroots");
    std::fs::remove_file(gcroots.join("one")).expect("rm root");
    noodle.ok(&["store", "delete", &paths[0]]);
    noodle.ok(&["store", "gc"]);
    assert_eq!(
        std::fs::read_to_string(file(&paths[1])).expect("read"),
        shared
    );
    let out = noodle.run(&["store", "verify", "--check-contents"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout_of(&out));
    // With the last user gone, gc prunes the farm.
    std::fs::remove_file(gcroots.join("two")).expect("rm root");
    assert_eq!(lines(&noodle.ok(&["store", "gc"])), set_of(&[&paths[1]]));
    let entries = walkdir::WalkDir::new(&links)
        .into_iter()
        .filter(|e| e.as_ref().is_ok_and(|e| e.file_type().is_file()))
        .count();
    assert_eq!(entries, 0, "unused farm entries left");
}

// ----------------------------------------------------------------------------------- help ---

#[test]
fn help_documents_exit_codes() {
    let out = output_of(Command::new(BIN).arg("--help"));
    assert!(out.status.success());
    let text = stdout_of(&out);
    assert!(text.contains("Exit codes"), "{text}");
    for code in [
        "0  success",
        "2  usage",
        "3  `store verify`",
        "4  the store database",
        "5  refused",
    ] {
        assert!(text.contains(code), "{code:?} missing from --help");
    }
    let out = output_of(Command::new(BIN).args(["store", "bogus"]));
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
}
