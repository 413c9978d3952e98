//! `noodle build`, `noodle lock` and `noodle log` driven end to end through the real binary:
//! the example package set, versions side by side, reuse, noodle.lock, sources (host paths,
//! recipe pins, HTTP), --dry-run, --check, logs and events, concurrent builders and what a
//! recipe can see of the host.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Output;
use std::sync::atomic::Ordering;

use common::channel::Channel;
use common::{stderr_of, stdout_of, Noodle};

const STORE: &str = "/noodle/store/";

// ---------------------------------------------------------------------------------------------
// Helpers.

fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        stdout_of(out),
        stderr_of(out)
    );
}

/// `noodle --channel C build ARGS` with progress on stderr; must succeed.
fn build(noodle: &Noodle, channel: &Channel, args: &[&str]) -> Output {
    let mut all = vec!["build"];
    all.extend_from_slice(args);
    let out = noodle.in_channel(channel, &all);
    assert_success(&out, &format!("noodle build {args:?}"));
    out
}

/// `noodle --json --channel C build ARGS`, which must succeed: its events, one per line.
fn build_events(noodle: &Noodle, channel: &Channel, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["--json", "build"];
    all.extend_from_slice(args);
    let out = noodle.in_channel(channel, &all);
    assert_success(&out, &format!("noodle --json build {args:?}"));
    parse_events(&stdout_of(&out))
}

fn parse_events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not one JSON object per line: {e}: {line:?}"));
            assert!(value.is_object(), "not a JSON object: {line}");
            assert!(value["event"].is_string(), "no `event` in {line}");
            value
        })
        .collect()
}

fn events_named<'a>(events: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

fn packages_with(events: &[serde_json::Value], kind: &str) -> BTreeSet<String> {
    events_named(events, kind)
        .iter()
        .map(|e| e["package"].as_str().expect("package").to_owned())
        .collect()
}

/// The single path a one-target build printed on stdout.
fn single_path(out: &Output) -> String {
    let text = stdout_of(out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "expected one output path, got {text:?}");
    assert!(lines[0].starts_with(STORE), "not a store path: {text:?}");
    lines[0].to_owned()
}

fn build_one(noodle: &Noodle, channel: &Channel, target: &str) -> String {
    single_path(&build(noodle, channel, &["-q", target]))
}

/// Rows of the `builds` table: (output, kind, status), in order.
fn build_rows(noodle: &Noodle) -> Vec<(String, String, String)> {
    let conn = rusqlite::Connection::open(noodle.db_file()).expect("open db");
    let mut stmt = conn
        .prepare("SELECT output, kind, status FROM builds ORDER BY id")
        .expect("prepare");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

fn builds_of(noodle: &Noodle, output: &str) -> usize {
    build_rows(noodle)
        .iter()
        .filter(|(o, _, _)| o == output)
        .count()
}

/// The one valid path whose name ends with `suffix` (e.g. `-fetchy-payload-1.0.0`).
fn valid_ending(noodle: &Noodle, suffix: &str) -> String {
    let found: Vec<String> = noodle
        .valid_paths()
        .into_iter()
        .filter(|p| p.ends_with(suffix))
        .collect();
    assert_eq!(found.len(), 1, "valid paths ending in {suffix}: {found:?}");
    found[0].clone()
}

/// The one built output (a valid path with a deriver; sources have none) whose name ends with
/// `suffix` (e.g. `-crypto-1.2.5`): busybox's source is also called busybox-1.35.0.
fn output_ending(noodle: &Noodle, suffix: &str) -> String {
    let conn = rusqlite::Connection::open(noodle.db_file()).expect("open db");
    let mut stmt = conn
        .prepare("SELECT path FROM paths WHERE deriver IS NOT NULL")
        .expect("prepare");
    let found: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .expect("query")
        .collect::<Result<Vec<_>, _>>()
        .expect("rows")
        .into_iter()
        .filter(|p| p.ends_with(suffix))
        .collect();
    assert_eq!(found.len(), 1, "outputs ending in {suffix}: {found:?}");
    found[0].clone()
}

fn read_out(noodle: &Noodle, path: &str, rel: &str) -> String {
    std::fs::read_to_string(noodle.physical(path).join(rel))
        .unwrap_or_else(|e| panic!("read {path}/{rel}: {e}"))
}

fn closure(noodle: &Noodle, path: &str) -> BTreeSet<String> {
    noodle
        .ok(&["store", "closure", path])
        .lines()
        .map(str::to_owned)
        .collect()
}

fn nar_hash(noodle: &Noodle, path: &str) -> String {
    let info = noodle.json(&["store", "path-info", path]);
    info[0]["nar_hash"].as_str().expect("nar_hash").to_owned()
}

/// noodle.lock's `[[package]]` tables as key → raw value text (strings unquoted).
fn lock_entries(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut entries = Vec::new();
    for block in text.split("[[package]]").skip(1) {
        let mut entry = BTreeMap::new();
        for line in block.lines() {
            if let Some((key, value)) = line.split_once(" = ") {
                let value = value.trim();
                let value = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value);
                entry.insert(key.trim().to_owned(), value.to_owned());
            }
        }
        entries.push(entry);
    }
    entries
}

fn lock_entry(text: &str, name: &str, version: &str) -> BTreeMap<String, String> {
    lock_entries(text)
        .into_iter()
        .find(|e| e.get("name").map(String::as_str) == Some(name) && e["version"] == version)
        .unwrap_or_else(|| panic!("no {name}@{version} in noodle.lock:\n{text}"))
}

fn is_blake3(text: &str) -> bool {
    text.strip_prefix("blake3:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// Our effective uid: the owner of /proc/self.
fn current_euid() -> u32 {
    std::fs::metadata("/proc/self")
        .expect("stat /proc/self")
        .uid()
}

/// Every entry of a store path is canonical: read-only (0444 files, 0555 executables and
/// directories), mtime 1, owned by us.
fn assert_canonical(noodle: &Noodle, path: &str) {
    let euid = current_euid();
    let mut seen = 0;
    for entry in walkdir::WalkDir::new(noodle.physical(path)) {
        let entry = entry.expect("walk");
        let meta = entry.path().symlink_metadata().expect("lstat");
        seen += 1;
        assert_eq!(
            meta.mtime(),
            1,
            "{} has mtime {}",
            entry.path().display(),
            meta.mtime()
        );
        assert_eq!(
            meta.uid(),
            euid,
            "{} is owned by {}",
            entry.path().display(),
            meta.uid()
        );
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_dir() {
            assert_eq!(mode, 0o555, "{} has mode {mode:o}", entry.path().display());
        } else if meta.is_file() {
            assert!(
                mode == 0o444 || mode == 0o555,
                "{} has mode {mode:o}",
                entry.path().display()
            );
        }
    }
    assert!(seen > 1, "{path} has no files");
}

/// A recipe depending on busybox and `deps` (name = requirement), with `extra` TOML after
/// [dependencies] (e.g. sources) and `script` as its build.
fn recipe_with(
    channel: &Channel,
    name: &str,
    version: &str,
    deps: &[(&str, &str)],
    extra: &str,
    script: &str,
) -> std::path::PathBuf {
    let mut body = String::from("[dependencies]\nbusybox = \"^1.35\"\n");
    for (dep, req) in deps {
        body.push_str(&format!("{dep} = \"{req}\"\n"));
    }
    body.push_str(extra);
    body.push_str(&format!("\n[build]\nscript = '''\n{script}\n'''\n"));
    channel.recipe(name, version, &body)
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.expect("walk");
        let dest = to.join(entry.path().strip_prefix(from).expect("prefix"));
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&dest).expect("mkdir");
        } else {
            std::fs::copy(entry.path(), &dest).expect("copy");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. The repository's package set.

#[test]
fn builds_the_repository_package_set() {
    let noodle = Noodle::new();
    let channel = Channel::repo(&noodle);
    let out = build(
        &noodle,
        &channel,
        &["hello", "crypto@1.2.3", "crypto@>=1.2.5", "greeter"],
    );
    let stdout = stdout_of(&out);
    assert!(stdout.ends_with('\n'), "stdout: {stdout:?}");
    let paths: Vec<&str> = stdout.lines().collect();
    let suffixes = [
        "-hello-1.0.0",
        "-crypto-1.2.3",
        "-crypto-1.3.0",
        "-greeter-1.0.0",
    ];
    assert_eq!(
        paths.len(),
        suffixes.len(),
        "stdout must hold only the four output paths:\n{stdout}"
    );
    for (path, suffix) in paths.iter().zip(suffixes) {
        assert!(
            path.starts_with(STORE) && path.ends_with(suffix),
            "expected a store path ending in {suffix}, got {path:?}"
        );
        assert!(noodle.valid_paths().contains(*path), "{path} is not valid");
    }
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("hello@1.0.0") && stderr.contains("busybox@1.35.0"),
        "progress belongs on stderr:\n{stderr}"
    );
    let (hello, crypto123, crypto130, greeter) = (paths[0], paths[1], paths[2], paths[3]);

    // hello keeps busybox by reference: its #! line names busybox's sh.
    let busybox = output_ending(&noodle, "-busybox-1.35.0");
    let script = read_out(&noodle, hello, "bin/hello");
    assert_eq!(
        script.lines().next(),
        Some(format!("#!{busybox}/bin/sh").as_str())
    );
    assert_eq!(
        closure(&noodle, hello),
        BTreeSet::from([hello.to_owned(), busybox.clone()])
    );
    assert_eq!(noodle.references(hello), vec![busybox.clone()]);

    // crypto's CLI sources its own library by store path: a self-reference.
    for crypto in [crypto123, crypto130] {
        let refs: BTreeSet<String> = noodle.references(crypto).into_iter().collect();
        assert_eq!(
            refs,
            BTreeSet::from([crypto.to_owned(), busybox.clone()]),
            "references of {crypto}"
        );
    }
    // greeter asks for crypto ~1.2 (1.2.5) and its CGI sources crypto's library: a runtime
    // reference found by the scan.
    let crypto125 = output_ending(&noodle, "-crypto-1.2.5");
    let refs: BTreeSet<String> = noodle.references(greeter).into_iter().collect();
    assert!(refs.contains(&crypto125), "greeter's references: {refs:?}");
    assert!(!refs.contains(crypto130), "greeter's references: {refs:?}");

    for path in [hello, crypto123, crypto130, greeter, &busybox, &crypto125] {
        assert_canonical(&noodle, path);
    }
    noodle.assert_fully_clean("after building the package set");
}

// ---------------------------------------------------------------------------------------------
// 2. Two versions of one package side by side.

#[test]
fn different_versions_live_side_by_side() {
    let noodle = Noodle::new();
    let channel = Channel::repo(&noodle);
    let script = r#"mkdir -p "$out"
"$crypto/bin/crypto" --version > "$out/version"
echo "$crypto" > "$out/uses""#;
    recipe_with(
        &channel,
        "old-user",
        "1.0.0",
        &[("crypto", "=1.2.3")],
        "",
        script,
    );
    recipe_with(
        &channel,
        "new-user",
        "1.0.0",
        &[("crypto", "^1.2.5, <1.3")],
        "",
        script,
    );
    let out = build(&noodle, &channel, &["-q", "old-user", "new-user"]);
    let paths: Vec<String> = stdout_of(&out).lines().map(str::to_owned).collect();
    assert_eq!(paths.len(), 2, "{paths:?}");
    assert_eq!(read_out(&noodle, &paths[0], "version"), "crypto 1.2.3\n");
    assert_eq!(read_out(&noodle, &paths[1], "version"), "crypto 1.2.5\n");
    let old = output_ending(&noodle, "-crypto-1.2.3");
    let new = output_ending(&noodle, "-crypto-1.2.5");
    assert_ne!(old, new);
    assert_eq!(read_out(&noodle, &paths[0], "uses").trim(), old);
    assert_eq!(read_out(&noodle, &paths[1], "uses").trim(), new);
    assert!(noodle.references(&paths[0]).contains(&old));
    assert!(noodle.references(&paths[1]).contains(&new));
    let valid = noodle.valid_paths();
    assert!(valid.contains(&old) && valid.contains(&new));
    noodle.assert_closure_intact();
}

// ---------------------------------------------------------------------------------------------
// 3. A valid output is never rebuilt.

#[test]
fn a_valid_output_is_never_rebuilt() {
    let noodle = Noodle::new();
    let channel = Channel::repo(&noodle);
    let first = build_events(&noodle, &channel, &["hello"]);
    assert_eq!(
        packages_with(&first, "started"),
        BTreeSet::from(["busybox@1.35.0".to_owned(), "hello@1.0.0".to_owned()])
    );
    let hello = events_named(&first, "output")[0]["path"]
        .as_str()
        .expect("path")
        .to_owned();
    let busybox = output_ending(&noodle, "-busybox-1.35.0");
    let rows_before = noodle.db_rows();
    let lock_before = channel.lockfile();

    let second = build_events(&noodle, &channel, &["hello"]);
    assert!(
        events_named(&second, "started").is_empty(),
        "a second build started a build: {second:?}"
    );
    let reused = events_named(&second, "reused");
    assert_eq!(reused.len(), 1, "{second:?}");
    assert_eq!(reused[0]["package"], "hello@1.0.0");
    assert_eq!(reused[0]["path"], hello.as_str());
    assert_eq!(events_named(&second, "output")[0]["path"], hello.as_str());
    assert_eq!(noodle.db_rows(), rows_before);
    assert_eq!(channel.lockfile(), lock_before);

    // Its log is still there.
    noodle.ok(&["log", &hello]);
    noodle.ok(&channel.args(&["log", "hello@1.0.0"]));

    // One build per output, ever.
    let rows = build_rows(&noodle);
    assert_eq!(rows.len(), 2, "{rows:?}");
    for output in [&busybox, &hello] {
        assert_eq!(
            rows.iter()
                .filter(|(o, kind, status)| o == output && kind == "build" && status == "succeeded")
                .count(),
            1,
            "builds of {output}: {rows:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 4. noodle.lock.

#[test]
fn the_lockfile_records_versions_hashes_and_outputs() {
    let noodle = Noodle::new();
    let channel = Channel::repo(&noodle);
    assert!(!channel.dir.join("noodle.lock").exists());
    let hello = build_one(&noodle, &channel, "hello");
    let lock = channel.lockfile();
    let entry = lock_entry(&lock, "hello", "1.0.0");
    let recipe_file = channel.dir.join("pkgs/hello/1.0.0.toml");
    let recipe_bytes = std::fs::read(&recipe_file).expect("read recipe");
    assert_eq!(
        entry["recipe"],
        format!("blake3:{}", blake3::hash(&recipe_bytes).to_hex())
    );
    assert!(is_blake3(&entry["plan"]), "plan: {}", entry["plan"]);
    assert_eq!(entry["out"], hello);
    assert_eq!(entry["nar"], nar_hash(&noodle, &hello));
    assert_eq!(entry["dependencies"], "{ busybox = \"1.35.0\" }");
    assert!(
        entry["sources"].contains("pin = \"hello-src@1.0.0#blake3="),
        "{lock}"
    );
    let busybox = lock_entry(&lock, "busybox", "1.35.0");
    assert_eq!(busybox["out"], output_ending(&noodle, "-busybox-1.35.0"));
    assert_eq!(busybox["nar"], nar_hash(&noodle, &busybox["out"]));

    // --locked: nothing changed, so it works and writes nothing.
    let again = build(&noodle, &channel, &["-q", "--locked", "hello"]);
    assert_eq!(single_path(&again), hello);
    assert_eq!(channel.lockfile(), lock);

    // A recipe edit: --locked refuses, lists the change, touches neither lock nor store.
    let text = std::fs::read_to_string(&recipe_file).expect("read");
    let edited = text.replace(
        "[build]\nscript = '''\n",
        "[build]\nscript = '''\necho edited\n",
    );
    assert_ne!(edited, text);
    std::fs::write(&recipe_file, &edited).expect("write");
    let lock_bytes = std::fs::read(channel.dir.join("noodle.lock")).expect("read lock");
    let valid_before = noodle.valid_paths();
    let rows_before = build_rows(&noodle);
    let (code, stderr) = noodle.fails(&channel.args(&["build", "--locked", "hello"]));
    assert_ne!(code, 0);
    assert!(
        stderr.contains("hello@1.0.0: recipe changed") && stderr.contains("noodle lock"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(channel.dir.join("noodle.lock")).expect("read lock"),
        lock_bytes
    );
    assert_eq!(noodle.valid_paths(), valid_before);
    assert_eq!(build_rows(&noodle), rows_before);

    // `noodle lock` takes the edit in; then --locked builds the new recipe.
    noodle.ok(&channel.args(&["lock", "hello"]));
    let relocked = lock_entry(&channel.lockfile(), "hello", "1.0.0");
    assert_eq!(
        relocked["recipe"],
        format!("blake3:{}", blake3::hash(edited.as_bytes()).to_hex())
    );
    assert_ne!(relocked["plan"], entry["plan"]);
    assert_ne!(relocked["out"], hello);
    let rebuilt = single_path(&build(&noodle, &channel, &["-q", "--locked", "hello"]));
    assert_eq!(rebuilt, relocked["out"]);
    assert_ne!(rebuilt, hello);
}

#[test]
fn the_same_lockfile_gives_the_same_paths_in_another_store() {
    let a = Noodle::new();
    let channel = Channel::repo(&a);
    let built_a: Vec<String> = stdout_of(&build(&a, &channel, &["-q", "hello", "greeter"]))
        .lines()
        .map(str::to_owned)
        .collect();
    let lock = channel.lockfile();
    assert!(!lock.is_empty());

    let b = Noodle::new();
    let moved = Channel {
        dir: b.dir.path().join("elsewhere/channel"),
    };
    copy_tree(&channel.dir, &moved.dir);
    assert_eq!(moved.lockfile(), lock);
    let built_b: Vec<String> =
        stdout_of(&build(&b, &moved, &["-q", "--locked", "hello", "greeter"]))
            .lines()
            .map(str::to_owned)
            .collect();
    assert_eq!(built_a, built_b);
    assert_eq!(built_a.len(), 2);
    let closure_a: BTreeSet<String> = built_a.iter().flat_map(|p| closure(&a, p)).collect();
    let closure_b: BTreeSet<String> = built_b.iter().flat_map(|p| closure(&b, p)).collect();
    assert_eq!(closure_a, closure_b);
    for path in &closure_a {
        assert_eq!(nar_hash(&a, path), nar_hash(&b, path), "NAR hash of {path}");
    }
    for (path, name) in built_a.iter().zip(["hello", "greeter"]) {
        assert_eq!(lock_entry(&lock, name, "1.0.0")["nar"], nar_hash(&b, path));
    }
    assert_eq!(moved.lockfile(), lock, "--locked must not touch the lock");
}

#[test]
fn a_locked_edge_stays_until_updated() {
    let noodle = Noodle::new();
    let channel = Channel::new(&noodle);
    let lib_script = |v: &str| format!("mkdir -p \"$out\"\necho {v} > \"$out/v\"");
    recipe_with(&channel, "lib", "1.0.0", &[], "", &lib_script("1.0.0"));
    recipe_with(
        &channel,
        "app",
        "1.0.0",
        &[("lib", "^1")],
        "",
        "mkdir -p \"$out\"\ncat \"$lib/v\" > \"$out/lib-version\"\necho \"$lib\" > \"$out/lib\"",
    );
    let app = build_one(&noodle, &channel, "app");
    assert_eq!(read_out(&noodle, &app, "lib-version"), "1.0.0\n");
    assert_eq!(
        lock_entry(&channel.lockfile(), "app", "1.0.0")["dependencies"],
        "{ busybox = \"1.35.0\", lib = \"1.0.0\" }"
    );

    // A newer lib appears: app's locked edge does not move.
    recipe_with(&channel, "lib", "1.1.0", &[], "", &lib_script("1.1.0"));
    let lock = channel.lockfile();
    assert_eq!(build_one(&noodle, &channel, "app"), app);
    assert_eq!(
        single_path(&build(&noodle, &channel, &["-q", "--locked", "app"])),
        app
    );
    assert_eq!(
        lock_entry(&channel.lockfile(), "app", "1.0.0")["dependencies"],
        "{ busybox = \"1.35.0\", lib = \"1.0.0\" }"
    );
    assert_eq!(channel.lockfile(), lock);
    // A bare target still means the highest version.
    assert!(build_one(&noodle, &channel, "lib").ends_with("-lib-1.1.0"));

    // `noodle lock --update lib` moves it.
    noodle.ok(&channel.args(&["lock", "--update", "lib"]));
    assert_eq!(
        lock_entry(&channel.lockfile(), "app", "1.0.0")["dependencies"],
        "{ busybox = \"1.35.0\", lib = \"1.1.0\" }"
    );
    let moved = build_one(&noodle, &channel, "app");
    assert_ne!(moved, app);
    assert_eq!(read_out(&noodle, &moved, "lib-version"), "1.1.0\n");
    let lib11 = output_ending(&noodle, "-lib-1.1.0");
    assert!(noodle.references(&moved).contains(&lib11));
}

// ---------------------------------------------------------------------------------------------
// 5. Sources that change on the host, and recipe pins.

#[test]
fn a_changed_host_source_is_reported_until_updated() {
    let a = Noodle::new();
    let channel = Channel::new(&a);
    let file = a.scratch("data.txt");
    std::fs::write(&file, "first contents\n").expect("write");
    let extra = format!(
        "\n[sources.data]\npath = \"{}\"\n",
        file.to_str().expect("utf-8")
    );
    recipe_with(
        &channel,
        "hostsrc",
        "1.0.0",
        &[],
        &extra,
        "mkdir -p \"$out\"\ncp \"$data\" \"$out/data\"",
    );
    let first = build_one(&a, &channel, "hostsrc");
    assert_eq!(read_out(&a, &first, "data"), "first contents\n");

    std::fs::write(&file, "second contents\n").expect("write");
    let lock = channel.lockfile();
    // A fresh store does not have the pinned source, so it must fetch it: and it changed.
    let b = Noodle::new();
    let (_, stderr) = b.fails(&channel.args(&["build", "hostsrc"]));
    assert!(
        stderr.contains("contents changed")
            && stderr.contains("noodle lock --update hostsrc")
            && stderr.contains("source `data`")
            && stderr.contains(file.to_str().expect("utf-8")),
        "{stderr}"
    );
    assert_eq!(channel.lockfile(), lock);
    assert!(b
        .valid_paths()
        .iter()
        .all(|p| !p.ends_with("-hostsrc-1.0.0")));

    b.ok(&channel.args(&["lock", "--update", "hostsrc"]));
    let second = build_one(&b, &channel, "hostsrc");
    assert_eq!(read_out(&b, &second, "data"), "second contents\n");
    assert_ne!(second, first);
}

#[test]
fn a_wrong_recipe_pin_names_both_hashes_and_the_recipe() {
    let noodle = Noodle::new();
    let channel = Channel::new(&noodle);
    let file = noodle.scratch("pinned.txt");
    std::fs::write(&file, "pinned contents\n").expect("write");
    let wrong = "0".repeat(64);
    let pinned = |hex: &str| {
        format!(
            "\n[sources.data]\npath = \"{}\"\npin = \"data@1.0#blake3={hex}\"\n",
            file.to_str().expect("utf-8")
        )
    };
    let script = "mkdir -p \"$out\"\ncp \"$data\" \"$out/data\"";
    let recipe = recipe_with(&channel, "pinned", "1.0.0", &[], &pinned(&wrong), script);
    let (_, stderr) = noodle.fails(&channel.args(&["build", "pinned"]));
    assert!(
        stderr.contains(&format!("expected blake3:{wrong}"))
            && stderr.contains(recipe.to_str().expect("utf-8"))
            && stderr.contains("recipe's `pin`"),
        "{stderr}"
    );
    let actual = stderr
        .split("got blake3:")
        .nth(1)
        .map(|rest| rest[..64.min(rest.len())].to_owned())
        .unwrap_or_else(|| panic!("no actual hash in: {stderr}"));
    assert!(is_blake3(&format!("blake3:{actual}")), "{stderr}");
    assert!(noodle
        .valid_paths()
        .iter()
        .all(|p| !p.ends_with("-data-1.0")));

    // The hash it reports is the right one: pinning it makes the build work.
    recipe_with(&channel, "pinned", "1.0.0", &[], &pinned(&actual), script);
    let out = build_one(&noodle, &channel, "pinned");
    assert_eq!(read_out(&noodle, &out, "data"), "pinned contents\n");
    assert!(noodle
        .valid_paths()
        .iter()
        .any(|p| p.ends_with("-data-1.0")));
}

// ---------------------------------------------------------------------------------------------
// 6. HTTP sources are fetched once.

#[test]
fn an_http_source_is_fetched_once_and_kept() {
    let (port, requests) = common::serve_http("200 OK", b"payload over http\n");
    let noodle = Noodle::new();
    let channel = Channel::new(&noodle);
    let extra = format!("\n[sources.payload]\nurl = \"http://127.0.0.1:{port}/payload.txt\"\n");
    let build_http = |marker: &str| {
        recipe_with(
            &channel,
            "fetchy",
            "1.0.0",
            &[],
            &extra,
            &format!("mkdir -p \"$out\"\ncp \"$payload\" \"$out/payload\"\necho {marker} > \"$out/marker\""),
        );
        let mut command = noodle.command();
        for var in ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"] {
            command.env_remove(var);
        }
        let out = command
            .args(channel.args(&["build", "fetchy"]))
            .output()
            .expect("run noodle");
        assert_success(&out, "build fetchy");
        (single_path(&out), stderr_of(&out))
    };
    let (first, _) = build_http("one");
    assert_eq!(read_out(&noodle, &first, "payload"), "payload over http\n");
    assert_eq!(requests.load(Ordering::SeqCst), 1);
    // Kept in the store under its pin's name.
    valid_ending(&noodle, "-fetchy-payload-1.0.0");

    // Another build needing the same source (the recipe changed, the source did not).
    let (second, stderr) = build_http("two");
    assert_ne!(second, first);
    assert_eq!(read_out(&noodle, &second, "payload"), "payload over http\n");
    assert_eq!(
        requests.load(Ordering::SeqCst),
        1,
        "the source was fetched again: {stderr}"
    );
    assert!(!stderr.contains("fetching"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// 7. --dry-run.

#[test]
fn dry_run_explains_and_changes_nothing() {
    let noodle = Noodle::new();
    let channel = Channel::repo(&noodle);
    let snapshot = noodle.snapshot();
    let rows = noodle.db_rows();
    let out = noodle.in_channel(&channel, &["build", "--dry-run", "hello"]);
    assert_success(&out, "dry run");
    let text = stdout_of(&out);
    for wanted in [
        "noodle.lock would change:",
        "added hello@1.0.0",
        "added busybox@1.35.0",
        "2 to build, 0 to reuse",
        "fetch  hello@1.0.0: source `src` from",
        "fetch  busybox@1.35.0: source `busybox` from /bin/busybox",
        "build  busybox@1.35.0 → /noodle/store/",
        "build  hello@1.0.0 → /noodle/store/",
        "because: not in the store",
    ] {
        assert!(text.contains(wanted), "no {wanted:?} in:\n{text}");
    }
    assert_eq!(noodle.snapshot(), snapshot, "a dry run changed the store");
    assert_eq!(noodle.db_rows(), rows);
    assert!(build_rows(&noodle).is_empty());
    assert!(
        !channel.dir.join("noodle.lock").exists(),
        "a dry run wrote noodle.lock"
    );

    // With busybox built, hello's plan reuses it; the predicted path is the real one.
    build_one(&noodle, &channel, "busybox");
    let lock = channel.lockfile();
    let snapshot = noodle.snapshot();
    let rows = noodle.db_rows();
    let text = stdout_of(&noodle.in_channel(&channel, &["build", "--dry-run", "hello"]));
    assert!(text.contains("1 to build, 1 to reuse"), "{text}");
    assert!(text.contains("reuse  busybox@1.35.0 →"), "{text}");
    assert!(text.contains("because: valid in the store"), "{text}");
    assert!(!text.contains("fetch  busybox"), "{text}");
    let predicted = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("build  hello@1.0.0 → "))
        .unwrap_or_else(|| panic!("no hello step in:\n{text}"))
        .to_owned();
    assert_eq!(noodle.snapshot(), snapshot);
    assert_eq!(noodle.db_rows(), rows);
    assert_eq!(channel.lockfile(), lock);
    assert_eq!(build_one(&noodle, &channel, "hello"), predicted);
}

// ---------------------------------------------------------------------------------------------
// 8. --check.

#[test]
fn check_rebuilds_and_compares() {
    let noodle = Noodle::new();
    let channel = Channel::repo(&noodle);
    recipe_with(
        &channel,
        "random",
        "1.0.0",
        &[],
        "",
        "mkdir -p \"$out\"\necho stable > \"$out/y\"\n{ cat /proc/sys/kernel/random/uuid 2>/dev/null || true; date +%s%N; echo \"$$ $RANDOM\"; } > \"$out/x\"",
    );
    let hello = build_one(&noodle, &channel, "hello");
    let out = noodle.in_channel(&channel, &["build", "--check", "hello"]);
    assert_success(&out, "check hello");
    assert_eq!(single_path(&out), hello);

    let random = build_one(&noodle, &channel, "random");
    let rows = noodle.db_rows();
    let out = noodle.in_channel(&channel, &["build", "--check", "random"]);
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(
        stderr.contains(&random) && stderr.contains("not reproducible"),
        "{stderr}"
    );
    let differing: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("  "))
        .collect();
    assert!(
        differing.iter().any(|l| l.starts_with("x:")),
        "x not named: {stderr}"
    );
    assert!(
        !differing.iter().any(|l| l.starts_with("y:")),
        "y is identical: {stderr}"
    );
    assert_eq!(
        noodle.db_rows(),
        rows,
        "a check must not change the registered output"
    );

    // Nothing to check when the package was never built.
    recipe_with(&channel, "unbuilt", "1.0.0", &[], "", "mkdir -p \"$out\"");
    let (code, stderr) = noodle.fails(&channel.args(&["build", "--check", "unbuilt"]));
    assert_ne!(code, 6);
    assert!(
        stderr.contains("unbuilt@1.0.0") && stderr.contains("not built yet"),
        "{stderr}"
    );
    assert!(noodle
        .valid_paths()
        .iter()
        .all(|p| !p.ends_with("-unbuilt-1.0.0")));
}

// ---------------------------------------------------------------------------------------------
// 9. Logs and events.

#[test]
fn logs_streaming_and_json_events() {
    let noodle = Noodle::new();
    let channel = Channel::new(&noodle);
    let script = |tag: &str| {
        format!("echo MARKER-{tag}-out\necho MARKER-{tag}-err >&2\nmkdir -p \"$out\"\necho {tag} > \"$out/t\"")
    };
    recipe_with(&channel, "quiet", "1.0.0", &[], "", &script("quiet"));
    recipe_with(&channel, "loud", "1.0.0", &[], "", &script("loud"));
    recipe_with(&channel, "evented", "1.0.0", &[], "", &script("evented"));

    // Without -v the build's output goes only to its log.
    let out = build(&noodle, &channel, &["quiet"]);
    let quiet = single_path(&out);
    assert!(!stderr_of(&out).contains("MARKER"), "{}", stderr_of(&out));
    let log = noodle.ok(&["log", &quiet]);
    assert!(
        log.contains("MARKER-quiet-out") && log.contains("MARKER-quiet-err"),
        "log: {log:?}"
    );
    let log_by_name = noodle.ok(&channel.args(&["log", "quiet@1.0.0"]));
    assert_eq!(log_by_name, log);

    // -v streams it on stderr; stdout keeps only the path.
    let out = build(&noodle, &channel, &["-v", "loud"]);
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("MARKER-loud-out") && stderr.contains("MARKER-loud-err"),
        "{stderr}"
    );
    let loud = single_path(&out);
    assert!(noodle.ok(&["log", &loud]).contains("MARKER-loud-out"));

    // --json: one event object per line.
    let events = build_events(&noodle, &channel, &["evented"]);
    let known = [
        "fetching", "reused", "waiting", "started", "finished", "failed", "checked", "output",
    ];
    for event in &events {
        let kind = event["event"].as_str().expect("event");
        assert!(known.contains(&kind), "unknown event {event}");
    }
    assert_eq!(
        packages_with(&events, "started"),
        BTreeSet::from(["evented@1.0.0".to_owned()])
    );
    assert_eq!(
        packages_with(&events, "finished"),
        BTreeSet::from(["evented@1.0.0".to_owned()])
    );
    assert_eq!(
        packages_with(&events, "reused"),
        BTreeSet::from(["busybox@1.35.0".to_owned()])
    );
    let finished = events_named(&events, "finished")[0];
    let evented = events_named(&events, "output")[0]["path"]
        .as_str()
        .expect("path");
    assert_eq!(finished["path"], evented);
    assert_eq!(
        finished["nar_hash"].as_str(),
        Some(nar_hash(&noodle, evented).as_str())
    );
    let started = events_named(&events, "started")[0];
    assert!(
        started["log"]
            .as_str()
            .is_some_and(|l| Path::new(l).exists()),
        "{started}"
    );
    assert!(!events.iter().any(|e| e.to_string().contains("MARKER")));

    let again = build_events(&noodle, &channel, &["evented"]);
    assert_eq!(
        packages_with(&again, "reused"),
        BTreeSet::from(["evented@1.0.0".to_owned()])
    );
    assert!(events_named(&again, "started").is_empty());
}

// ---------------------------------------------------------------------------------------------
// 10. Two processes asking for the same output.

#[test]
fn concurrent_builds_of_one_output_build_it_once() {
    let noodle = Noodle::new();
    let channel = Channel::new(&noodle);
    recipe_with(
        &channel,
        "slow",
        "1.0.0",
        &[],
        "",
        "sleep 1\nmkdir -p \"$out\"\necho done > \"$out/done\"",
    );
    build_one(&noodle, &channel, "busybox");
    let args = channel.args(&["--json", "build", "-j", "2", "slow"]);
    let children: Vec<_> = (0..2).map(|_| noodle.spawn(&args, &[])).collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait"))
        .collect();
    let mut paths = Vec::new();
    let mut started = 0;
    for out in &outputs {
        assert_success(out, "concurrent build");
        let events = parse_events(&stdout_of(out));
        let produced = events_named(&events, "output");
        assert_eq!(produced.len(), 1, "{events:?}");
        paths.push(produced[0]["path"].as_str().expect("path").to_owned());
        started += events_named(&events, "started").len();
    }
    assert_eq!(paths[0], paths[1]);
    assert_eq!(started, 1, "both processes built slow");
    // The other one waited for it (or came after it) and reused its output.
    let reused = outputs
        .iter()
        .filter(|out| {
            packages_with(&parse_events(&stdout_of(out)), "reused").contains("slow@1.0.0")
        })
        .count();
    assert_eq!(reused, 1);
    assert_eq!(read_out(&noodle, &paths[0], "done"), "done\n");
    assert_eq!(
        builds_of(&noodle, &paths[0]),
        1,
        "{:?}",
        build_rows(&noodle)
    );
    noodle.assert_fully_clean("after two concurrent builds");
}

/// Two processes building different packages of one channel at the same time: noodle.lock
/// must end up with both (each process loads the lock when it starts and writes it back when
/// it ends; neither may drop what the other wrote).
#[test]
fn concurrent_builds_of_different_packages_both_stay_in_the_lock() {
    let noodle = Noodle::new();
    let channel = Channel::new(&noodle);
    for name in ["left", "right"] {
        recipe_with(
            &channel,
            name,
            "1.0.0",
            &[],
            "",
            &format!("sleep 1\nmkdir -p \"$out\"\necho {name} > \"$out/name\""),
        );
    }
    build_one(&noodle, &channel, "busybox");
    let children: Vec<_> = ["left", "right"]
        .iter()
        .map(|name| noodle.spawn(&channel.args(&["build", "-q", name]), &[]))
        .collect();
    let mut paths = Vec::new();
    for child in children {
        let out = child.wait_with_output().expect("wait");
        assert_success(&out, "concurrent build");
        paths.push(single_path(&out));
    }
    let lock = channel.lockfile();
    for (name, path) in ["left", "right"].iter().zip(&paths) {
        let entry = lock_entries(&lock)
            .into_iter()
            .find(|e| e.get("name").map(String::as_str) == Some(*name));
        let entry = entry.unwrap_or_else(|| panic!("{name} is missing from noodle.lock:\n{lock}"));
        assert_eq!(&entry["out"], path, "{lock}");
        assert_eq!(
            entry.get("nar").map(String::as_str),
            Some(nar_hash(&noodle, path).as_str()),
            "{name}'s NAR hash is missing from noodle.lock:\n{lock}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 11. What a recipe sees.

#[test]
fn a_recipe_cannot_read_host_files() {
    let noodle = Noodle::new();
    let channel = Channel::new(&noodle);
    let secret = noodle.scratch("secret.txt");
    std::fs::write(&secret, "top secret contents\n").expect("write");
    let secret = secret.to_str().expect("utf-8");
    recipe_with(
        &channel,
        "peek",
        "1.0.0",
        &[],
        "",
        &format!("mkdir -p \"$out\"\ncat {secret} > \"$out/stolen\""),
    );
    let (_, stderr) = noodle.fails(&channel.args(&["build", "peek"]));
    assert!(
        stderr.contains("building peek@1.0.0 failed") && stderr.contains(secret),
        "{stderr}"
    );
    assert!(!stderr.contains("top secret contents"), "{stderr}");
    assert!(noodle
        .valid_paths()
        .iter()
        .all(|p| !p.ends_with("-peek-1.0.0")));
    // The failed attempt's log says why.
    let log = noodle.ok(&channel.args(&["log", "peek@1.0.0"]));
    assert!(
        log.contains(secret) && log.contains("can't open"),
        "log: {log:?}"
    );
}

#[test]
fn a_build_sees_only_its_inputs_as_an_unprivileged_user() {
    let noodle = Noodle::new();
    let channel = Channel::repo(&noodle);
    // Valid in the store but no input of the probe.
    let crypto = build_one(&noodle, &channel, "crypto@1.2.3");
    let file = noodle.scratch("probe-input");
    std::fs::write(&file, "input\n").expect("write");
    let extra = format!(
        "\n[sources.src]\npath = \"{}\"\n",
        file.to_str().expect("utf-8")
    );
    recipe_with(
        &channel,
        "probe",
        "1.0.0",
        &[("hello", "*")],
        &extra,
        "ls -a /noodle/store > /build/listing\nmkdir -p \"$out\"\nmv /build/listing \"$out/listing\"\nid -u > \"$out/uid\"\nhostname > \"$out/hostname\"",
    );
    let probe = build_one(&noodle, &channel, "probe");
    let listing: BTreeSet<String> = read_out(&noodle, &probe, "listing")
        .lines()
        .filter(|l| *l != "." && *l != "..")
        .map(str::to_owned)
        .collect();
    let hello = output_ending(&noodle, "-hello-1.0.0");
    let busybox = output_ending(&noodle, "-busybox-1.35.0");
    let source = valid_ending(&noodle, "-probe-src-1.0.0");
    let mut inputs: BTreeSet<String> = closure(&noodle, &hello);
    inputs.extend(closure(&noodle, &busybox));
    inputs.extend(closure(&noodle, &source));
    let expected: BTreeSet<String> = inputs
        .iter()
        .map(|p| p.strip_prefix(STORE).expect("store path").to_owned())
        .collect();
    assert_eq!(listing, expected);
    assert!(!listing.iter().any(|n| crypto.ends_with(n.as_str())));
    assert_eq!(read_out(&noodle, &probe, "uid"), "1000\n");
    assert_eq!(read_out(&noodle, &probe, "hostname"), "localhost\n");
}

/// An ordinary user builds in a sandbox of their own (an unprivileged user namespace), into a
/// store under their home, and gets the same store paths as root.
#[test]
fn an_unprivileged_user_builds_the_same_paths() {
    if !nix::unistd::geteuid().is_root() {
        return; // needs root to become another user; as a non-root run, every test covers it
    }
    let noodle = Noodle::new();
    let channel = Channel::repo(&noodle);
    let as_root = noodle.build_ok(&channel, &["hello"]);

    let home = tempfile::Builder::new()
        .prefix("noodle-user-")
        .tempdir()
        .expect("tempdir");
    let user_channel = home.path().join("channel");
    std::fs::create_dir_all(&user_channel).expect("mkdir");
    std::fs::copy(
        channel.dir.join("noodle.lock"),
        user_channel.join("noodle.lock"),
    )
    .expect("cp");
    let status = std::process::Command::new("cp")
        .args(["-r"])
        .arg(channel.dir.join("pkgs"))
        .arg(&user_channel)
        .status()
        .expect("cp");
    assert!(status.success());
    let out = common::as_nobody(home.path())
        .arg("--channel")
        .arg(&user_channel)
        .args(["build", "--locked", "hello"])
        .output()
        .expect("run as nobody");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "unprivileged build failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().collect::<Vec<_>>(), as_root, "{stderr}");
    let store = home.path().join(".local/share/noodle/noodle/store");
    let built = store.join(as_root[0].rsplit('/').next().expect("base"));
    let meta = std::fs::metadata(&built).expect("output in the user's store");
    assert_eq!(meta.uid(), 65534, "the output belongs to the user");
}
