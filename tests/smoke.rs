mod common;

use common::{make_tree, Noodle};

#[test]
fn add_is_idempotent_and_read_only() {
    let noodle = Noodle::new();
    let tree = noodle.scratch("tree");
    make_tree(&tree, "one");
    let path = noodle.add(&tree);
    assert!(path.starts_with("/noodle/store/"), "{path}");
    let before = noodle.snapshot();
    assert_eq!(noodle.add(&tree), path, "same contents, same path");
    assert_eq!(noodle.snapshot(), before, "the second add wrote nothing");
    let tool = noodle.physical(&path).join("bin/tool");
    let meta = std::fs::metadata(&tool).expect("stat");
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(meta.permissions().mode() & 0o7777, 0o555);
    assert_eq!(meta.mtime(), 1);
}

/// Files are created with their final mode when the umask allows it; a strict umask must
/// still give canonical modes.
#[test]
fn strict_umask_still_gives_canonical_modes() {
    let noodle = Noodle::new();
    let tree = noodle.scratch("tree");
    make_tree(&tree, "umask");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("umask 077; exec \"$0\" --root \"$1\" store add \"$2\"")
        .arg(common::BIN)
        .arg(noodle.root())
        .arg(&tree)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8(out.stdout).expect("utf-8");
    use std::os::unix::fs::PermissionsExt;
    let mode = |rel: &str| {
        std::fs::metadata(noodle.physical(path.trim()).join(rel))
            .expect("stat")
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("bin/tool"), 0o555);
    assert_eq!(mode("share/doc/README"), 0o444);
    noodle.ok(&["store", "verify"]);
}
