//! Named failure points, for crash tests: `NOODLE_FAILPOINT=add:after-rename` aborts the
//! process there; `NOODLE_FAILPOINT=add:after-rename=sleep:2000` pauses it instead.
//! Several may be given, separated by commas.

use std::sync::OnceLock;
use std::time::Duration;

pub const ENV: &str = "NOODLE_FAILPOINT";

/// Every failure point in noodle (the store and the crates above it), so tests can be sure to cover them all.
pub const ALL: &[&str] = &[
    "add:after-copy",
    "add:after-sync",
    "add:after-rename",
    "add:after-register",
    "delete:after-invalidate",
    "delete:after-trash",
    "gc:after-invalidate",
    "gc:after-trash",
    "gc:mid-delete",
    "optimise:after-link-farm",
    "optimise:dir-writable",
    "optimise:after-temp-link",
    "optimise:after-replace",
    "build:before-rename",
    "build:after-rename",
    "build:after-register",
    "add-staged:before-rename",
    "add-staged:after-rename",
    "add-staged:after-register",
    "import:before-rename",
    "import:after-rename",
    "import:after-register",
    "repair:after-swap",
    "profile:after-generation-path",
    "profile:after-generation-link",
    "profile:before-switch",
    "profile:after-switch",
    "profile:mid-delete",
    "activate:built",
    "activate:validated",
    "activate:staged",
    "activate:active",
    "activate:switched",
    "activate:scripts-done",
    "activate:checking",
    "activate:healthy",
    "activate:reverting",
    "activate:switched-back",
    "activate:revert-scripts-done",
];

fn configured() -> &'static Vec<(String, String)> {
    static POINTS: OnceLock<Vec<(String, String)>> = OnceLock::new();
    POINTS.get_or_init(|| {
        std::env::var(ENV)
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|spec| match spec.split_once('=') {
                Some((name, action)) => (name.to_owned(), action.to_owned()),
                None => (spec.to_owned(), "abort".to_owned()),
            })
            .collect()
    })
}

/// Reaches the failure point `name`: does nothing unless it was configured.
pub fn hit(name: &str) {
    debug_assert!(ALL.contains(&name), "unlisted failure point {name}");
    for (point, action) in configured() {
        if point == name {
            if let Some(ms) = action.strip_prefix("sleep:") {
                std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(1000)));
            } else {
                eprintln!("noodle: failure point {name} reached: aborting");
                std::process::abort();
            }
        }
    }
}
