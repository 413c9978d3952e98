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
