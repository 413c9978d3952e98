//! Distribution (binary caches, peers, bundles) through the real binary: `key generate`,
//! `copy --to file://`, `copy --from` a directory, a static web server and `noodle serve`,
//! signatures and trust, `store verify --repair` restoring from the substituters of
//! noodle.toml, builds and installs that fetch instead of building, `--option`, and bundles.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::cache::{file_url, json_lines, static_http_server, KeyPair, Pair};
use common::channel::Channel;
use common::{regular_files, stderr_of, stdout_of, Noodle};

/// Exit code of a path refused for its signature or contents (see `noodle --help`).
const EXIT_REFUSED: i32 = 11;
/// Exit code of `store verify` when problems remain.
const EXIT_PROBLEMS: i32 = 3;

// ---------------------------------------------------------------------------------------------
// Fixtures.

/// A store holding a pair of paths, pushed (signed by its key, from its noodle.toml) into a
/// `file://` cache beside it.
struct Pushed {
    source: Noodle,
    pair: Pair,
    key: KeyPair,
    cache: std::path::PathBuf,
}

impl Pushed {
    fn url(&self) -> String {
        file_url(&self.cache)
    }
}

fn signing_config(key: &KeyPair) -> String {
    format!("secret-key-files = [\"{}\"]\n", key.secret_file.display())
}

fn trusting_config(key: &KeyPair, substituters: &[&str]) -> String {
    let subs: Vec<String> = substituters.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "substituters = [{}]\ntrusted-public-keys = [\"{}\"]\n",
        subs.join(", "),
        key.public
    )
}

fn pushed(seed: &str) -> Pushed {
    let source = Noodle::new();
    let pair = source.add_pair(seed);
    let key = source.generate_key(&format!("cache.{seed}-1"));
    source.write_config(&signing_config(&key));
    let cache = source.cache_dir();
    source.ok(&["copy", "--to", &file_url(&cache), &pair.app]);
    Pushed {
        source,
        pair,
        key,
        cache,
    }
}

/// A fresh store whose noodle.toml trusts `key` (and names no substituters).
fn trusting(key: &KeyPair) -> Noodle {
    let noodle = Noodle::new();
    noodle.write_config(&trusting_config(key, &[]));
    noodle
}

/// The `Key: value` fields of a narinfo (Sig may repeat: all kept, in order).
fn fields(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let (key, value) = line
            .split_once(": ")
            .or_else(|| line.strip_suffix(':').map(|k| (k, "")))
            .unwrap_or_else(|| panic!("narinfo line without ': ': {line:?}"));
        out.entry(key.to_owned())
            .or_default()
            .push(value.to_owned());
    }
    out
}

fn field<'a>(fields: &'a BTreeMap<String, Vec<String>>, key: &str) -> &'a str {
    let values = fields
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in {fields:?}"));
    assert_eq!(values.len(), 1, "{key} given {} times", values.len());
    &values[0]
}

/// `<digest>-<name>` of a logical store path.
fn base_name(path: &str) -> &str {
    path.rsplit('/').next().expect("base name")
}

fn digest(path: &str) -> &str {
    &base_name(path)[..32]
}

fn path_info(noodle: &Noodle, path: &str) -> serde_json::Value {
    noodle.json(&["store", "path-info", path])[0].clone()
}

/// The signatures recorded for a valid path.
fn signatures(noodle: &Noodle, path: &str) -> Vec<String> {
    path_info(noodle, path)["signatures"]
        .as_array()
        .expect("signatures array")
        .iter()
        .map(|s| s.as_str().expect("string").to_owned())
        .collect()
}

/// The destination holds both paths of the pair, with the source's hashes and files, the
/// right references, signatures by `key` (when given), and nothing else is wrong with it.
fn assert_has_pair(dest: &Noodle, source: &Noodle, pair: &Pair, key: Option<&KeyPair>, ctx: &str) {
    let valid = dest.valid_paths();
    assert!(
        pair.both().is_subset(&valid),
        "{ctx}: {:?} not valid in {valid:?}",
        pair.both()
    );
    for path in [&pair.lib, &pair.app] {
        let (got, want) = (path_info(dest, path), path_info(source, path));
        assert_eq!(got["nar_hash"], want["nar_hash"], "{ctx}: {path}");
        assert_eq!(got["nar_size"], want["nar_size"], "{ctx}: {path}");
        assert_eq!(
            regular_files(&dest.physical(path)),
            regular_files(&source.physical(path)),
            "{ctx}: files of {path}"
        );
        let Some(key) = key else { continue };
        let sigs = signatures(dest, path);
        assert!(
            sigs.iter()
                .any(|s| s.starts_with(&format!("{}:", key.name))),
            "{ctx}: {path} is not recorded as signed by {}: {sigs:?}",
            key.name
        );
    }
    assert_eq!(dest.references(&pair.app), vec![pair.lib.clone()], "{ctx}");
    dest.assert_fully_clean(ctx);
    dest.assert_closure_intact();
    assert_eq!(dest.tmp_entries(), Vec::<String>::new(), "{ctx}: var/tmp");
}

// ---------------------------------------------------------------------------------------------
// Keys.

#[test]
fn key_generate_writes_a_secret_file_only_its_owner_reads_and_never_overwrites() {
    let noodle = Noodle::new();
    let dir = noodle.dir.path().join("keys");
    let dir_arg = dir.to_str().expect("utf-8");
    let out = noodle.ok(&["key", "generate", "--dir", dir_arg, "cache.example.org-1"]);
    let public = out.trim();
    assert_eq!(
        out.lines().count(),
        1,
        "only the public key on stdout: {out:?}"
    );
    assert!(public.starts_with("cache.example.org-1:"), "{public}");

    let sec = dir.join("cache.example.org-1.sec");
    let publ = dir.join("cache.example.org-1.pub");
    let mode = std::fs::metadata(&sec)
        .expect("NAME.sec")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the secret key file's mode");
    assert_eq!(
        std::fs::read_to_string(&publ).expect("NAME.pub").trim(),
        public,
        "NAME.pub holds what was printed"
    );
    // The two files are one pair, in Nix's format.
    let secret = noodle_cache::keys::SecretKey::load(&sec).expect("NAME.sec parses");
    assert_eq!(secret.name(), "cache.example.org-1");
    assert_eq!(secret.public().to_text(), public);
    let parsed = noodle_cache::keys::PublicKey::parse(public).expect("public key parses");
    let sig = secret.sign("1;/noodle/store/x;blake3:00;1;");
    assert!(parsed.verify("1;/noodle/store/x;blake3:00;1;", &sig));

    // A second key of the same name is refused; the first is untouched.
    let before = (
        std::fs::read(&sec).expect("read"),
        std::fs::read(&publ).expect("read"),
    );
    let (code, err) = noodle.fails(&["key", "generate", "--dir", dir_arg, "cache.example.org-1"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("already exists") && err.contains("cache.example.org-1.sec"),
        "the error names the file in the way: {err}"
    );
    let after = (
        std::fs::read(&sec).expect("read"),
        std::fs::read(&publ).expect("read"),
    );
    assert_eq!(before, after, "the existing key pair was changed");

    // --json: the same facts, as one object.
    let json = noodle.json(&["key", "generate", "--dir", dir_arg, "other-1"]);
    assert_eq!(json["name"], "other-1");
    let other_pub = std::fs::read_to_string(dir.join("other-1.pub")).expect("other-1.pub");
    assert_eq!(json["public_key"], other_pub.trim());

    // A name that is not a key name (here one that would escape --dir) writes nothing.
    let (code, err) = noodle.fails(&["key", "generate", "--dir", dir_arg, "../evil"]);
    assert_ne!(code, 0, "{err}");
    assert!(!noodle.dir.path().join("evil.sec").exists());
    assert!(!dir.join("../evil.sec").exists());
}

// ---------------------------------------------------------------------------------------------
// Pushing.

#[test]
fn copy_to_writes_a_signed_static_cache_of_the_closure() {
    let Pushed {
        source,
        pair,
        key,
        cache,
    } = pushed("push");
    let info = std::fs::read_to_string(cache.join("cache-info")).expect("cache-info");
    let info = fields(&info);
    assert_eq!(field(&info, "StoreDir"), "/noodle/store");

    let trusted = noodle_cache::keys::PublicKey::parse(&key.public).expect("public key");
    for path in [&pair.lib, &pair.app] {
        let file = cache.join(format!("{}.narinfo", digest(path)));
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("no narinfo for {path} ({}): {e}", file.display()));
        let narinfo = fields(&text);
        let local = path_info(&source, path);
        assert_eq!(field(&narinfo, "StorePath"), path.as_str());
        assert_eq!(
            field(&narinfo, "NarHash"),
            local["nar_hash"].as_str().expect("hash")
        );
        assert_eq!(
            field(&narinfo, "NarSize"),
            local["nar_size"].to_string(),
            "{path}"
        );
        assert_eq!(field(&narinfo, "Compression"), "zstd");
        let url = field(&narinfo, "URL");
        assert!(
            url.starts_with("nar/") && url.ends_with(".nar.zst"),
            "URL {url}"
        );
        let nar = cache.join(url);
        let compressed = std::fs::read(&nar).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(
            field(&narinfo, "FileSize"),
            compressed.len().to_string(),
            "FileSize of {path}"
        );
        assert_eq!(
            field(&narinfo, "FileHash"),
            format!("blake3:{}", blake3::hash(&compressed).to_hex()),
            "FileHash of {path}"
        );
        // The compressed file is the path's NAR (checked where the zstd tool is installed;
        // fetching checks it everywhere).
        if let Ok(out) = std::process::Command::new("zstd")
            .args(["-q", "-d", "-c"])
            .arg(&nar)
            .output()
        {
            assert!(out.status.success(), "zstd -d {url}: {}", stderr_of(&out));
            assert_eq!(out.stdout, source.dump(path), "NAR of {path}");
        }
        let references: Vec<String> = local["references"]
            .as_array()
            .expect("references")
            .iter()
            .map(|r| base_name(r.as_str().expect("string")).to_owned())
            .collect();
        assert_eq!(field(&narinfo, "References"), references.join(" "));
        // Signed by the configured key, over the fingerprint of exactly these fields.
        let sigs = narinfo.get("Sig").cloned().unwrap_or_default();
        assert_eq!(sigs.len(), 1, "{path}: {sigs:?}");
        let full_refs: Vec<String> = local["references"]
            .as_array()
            .expect("references")
            .iter()
            .map(|r| r.as_str().expect("string").to_owned())
            .collect();
        let fingerprint = format!(
            "1;{path};{};{};{}",
            field(&narinfo, "NarHash"),
            field(&narinfo, "NarSize"),
            full_refs.join(",")
        );
        assert!(
            trusted.verify(&fingerprint, &sigs[0]),
            "{path}: {} does not verify over {fingerprint:?}",
            sigs[0]
        );
    }
    let nars = std::fs::read_dir(cache.join("nar")).expect("nar/").count();
    assert_eq!(nars, 2, "one NAR per path of the closure");

    // Pushing again writes nothing.
    let before = common_snapshot(&cache);
    let events = json_lines(&source.ok(&["--json", "copy", "--to", &file_url(&cache), &pair.app]));
    let result = events.last().expect("events");
    assert_eq!(result["event"], "result", "{events:?}");
    assert_eq!(result["pushed"]["already_there"], 2, "{result}");
    assert_eq!(
        result["pushed"]["pushed"],
        serde_json::json!([]),
        "{result}"
    );
    assert_eq!(
        common_snapshot(&cache),
        before,
        "a second push changed the cache"
    );
}

/// Every file under `dir` with its contents.
fn common_snapshot(dir: &Path) -> BTreeMap<std::path::PathBuf, Vec<u8>> {
    walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.expect("walk"))
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let data = std::fs::read(e.path()).expect("read");
            (e.path().to_owned(), data)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Fetching.

#[test]
fn copy_from_a_file_cache_needs_a_trusted_key_and_registers_the_closure() {
    let p = pushed("fetch");
    let dest = Noodle::new();

    // No trusted key: refused, nothing registered, nothing left behind.
    let before = dest.snapshot();
    let out = dest.run(&["copy", "--from", &p.url(), &p.pair.app]);
    assert_eq!(out.status.code(), Some(EXIT_REFUSED), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains(&p.key.name),
        "the refusal names the untrusted key: {}",
        stderr_of(&out)
    );
    assert_eq!(dest.snapshot(), before, "a refused fetch changed the store");

    // Another key trusted: refused too.
    let other = dest.generate_key("someone-else-1");
    dest.write_config(&trusting_config(&other, &[]));
    let out = dest.run(&["copy", "--from", &p.url(), &p.pair.app]);
    assert_eq!(out.status.code(), Some(EXIT_REFUSED), "{}", stderr_of(&out));
    assert!(dest.valid_paths().is_empty());

    // The cache's key trusted: the whole closure, dependencies first, as JSON lines.
    dest.write_config(&trusting_config(&p.key, &[]));
    let events = json_lines(&dest.ok(&["--json", "copy", "--from", &p.url(), &p.pair.app]));
    let fetched: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "fetched")
        .map(|e| e["path"].as_str().expect("path"))
        .collect();
    assert_eq!(
        fetched,
        [p.pair.lib.as_str(), p.pair.app.as_str()],
        "{events:?}"
    );
    for event in events.iter().filter(|e| e["event"] == "fetched") {
        assert_eq!(event["signed_by"], p.key.name.as_str(), "{event}");
    }
    let result = events.last().expect("events");
    assert_eq!(
        result["event"], "result",
        "the last line is the result: {events:?}"
    );
    assert_eq!(
        result["fetched"]["fetched"],
        serde_json::json!([p.pair.lib, p.pair.app]),
        "{result}"
    );
    assert_has_pair(&dest, &p.source, &p.pair, Some(&p.key), "after the fetch");

    // Fetching again is a no-op.
    let before = dest.snapshot();
    let events = json_lines(&dest.ok(&["--json", "copy", "--from", &p.url(), &p.pair.app]));
    assert!(
        !events.iter().any(|e| e["event"] == "fetched"),
        "fetched again: {events:?}"
    );
    let result = events.last().expect("events");
    assert_eq!(result["event"], "result");
    assert_eq!(
        result["fetched"]["fetched"],
        serde_json::json!([]),
        "{result}"
    );
    assert_eq!(result["fetched"]["already_valid"], 2, "{result}");
    assert_eq!(dest.snapshot(), before, "a second fetch changed the store");

    // Human output: the requested paths on stdout.
    let third = trusting(&p.key);
    let out = third.ok(&["copy", "--from", &p.url(), &p.pair.app]);
    assert_eq!(out.lines().collect::<Vec<_>>(), [p.pair.app.as_str()]);
}

#[test]
fn copy_from_refuses_a_tampered_narinfo_and_registers_nothing() {
    let p = pushed("tamper");
    let dest = trusting(&p.key);
    // Claim that app has no references: the signature no longer matches.
    let file = p.cache.join(format!("{}.narinfo", digest(&p.pair.app)));
    let text = std::fs::read_to_string(&file).expect("narinfo");
    let forged: String = text
        .lines()
        .map(|l| match l.starts_with("References:") {
            true => "References: ".to_owned(),
            false => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    assert_ne!(forged, text);
    std::fs::write(&file, forged).expect("write");
    let before = dest.snapshot();
    let out = dest.run(&["copy", "--from", &p.url(), &p.pair.app]);
    assert_eq!(out.status.code(), Some(EXIT_REFUSED), "{}", stderr_of(&out));
    assert_eq!(dest.snapshot(), before, "a refused fetch changed the store");
}

#[test]
fn copy_from_a_static_web_server() {
    let p = pushed("http");
    let (_server, url) = static_http_server(&p.cache);
    let dest = trusting(&p.key);
    let out = dest.ok(&["copy", "--from", &url, &p.pair.app]);
    assert_eq!(out.trim(), p.pair.app);
    assert_has_pair(&dest, &p.source, &p.pair, Some(&p.key), "fetched over HTTP");
    let before = dest.snapshot();
    let events = json_lines(&dest.ok(&["--json", "copy", "--from", &url, &p.pair.app]));
    assert_eq!(
        events.last().expect("events")["fetched"]["fetched"],
        serde_json::json!([])
    );
    assert_eq!(dest.snapshot(), before, "a second fetch changed the store");

    // A path the cache does not have: an error naming it, nothing registered.
    let missing = Noodle::new().add_new_tree("not-in-the-cache");
    let out = dest.run(&["copy", "--from", &url, &missing]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains(&missing), "{}", stderr_of(&out));
    assert_eq!(dest.snapshot(), before);
}

#[test]
fn copy_from_a_peer_running_noodle_serve() {
    let source = Noodle::new();
    let pair = source.add_pair("peer");
    let key = source.generate_key("peer-1");
    source.write_config(&signing_config(&key));
    let (server, url) = source.serve(&[]);

    let dest = trusting(&key);
    let out = dest.ok(&["copy", "--from", &url, &pair.app]);
    assert_eq!(out.trim(), pair.app);
    assert_has_pair(
        &dest,
        &source,
        &pair,
        Some(&key),
        "fetched from noodle serve",
    );
    let before = dest.snapshot();
    let events = json_lines(&dest.ok(&["--json", "copy", "--from", &url, &pair.app]));
    assert_eq!(events.last().expect("events")["event"], "result");
    assert_eq!(
        events.last().expect("events")["fetched"]["fetched"],
        serde_json::json!([])
    );
    assert_eq!(dest.snapshot(), before, "a second fetch changed the store");
    drop(server);

    // A peer that signs nothing is refused by a host that requires signatures.
    let (_unsigned, url) = source.serve(&["--option", "secret-key-files="]);
    let other = trusting(&key);
    let out = other.run(&["copy", "--from", &url, &pair.app]);
    assert_eq!(out.status.code(), Some(EXIT_REFUSED), "{}", stderr_of(&out));
    assert!(other.valid_paths().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Repair from the substituters.

#[test]
fn verify_repair_restores_damaged_and_missing_paths_from_configured_substituters() {
    let p = pushed("repair");
    let store = &p.source;
    let lib_file = store.physical(&p.pair.lib).join("share/doc/README");
    let original = std::fs::read(&lib_file).expect("read");
    common::tamper(&lib_file, b"damaged\n", false);

    // Without substituters the damage is found but cannot be undone.
    store.write_config(&signing_config(&p.key));
    let (code, problems) = store.verify_report(&["--check-contents", "--repair"]);
    assert_eq!(code, EXIT_PROBLEMS, "{problems:#?}");
    assert!(
        problems
            .iter()
            .any(|pr| pr.kind == "damaged" && pr.path == p.pair.lib),
        "{problems:#?}"
    );
    let json = store.run(&["--json", "store", "verify", "--check-contents", "--repair"]);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    let damaged = report["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .find(|pr| pr["kind"] == "damaged")
        .expect("the damaged path is still reported");
    assert_eq!(damaged["repaired"], false, "{damaged}");
    assert_eq!(std::fs::read(&lib_file).expect("read"), b"damaged\n");
    assert!(store.valid_paths().contains(&p.pair.lib));

    // With the cache configured in noodle.toml: the damaged path and a missing one come back.
    let app_dir = store.physical(&p.pair.app);
    let status = std::process::Command::new("chmod")
        .args(["-R", "u+w"])
        .arg(&app_dir)
        .status()
        .expect("chmod");
    assert!(status.success());
    std::fs::remove_dir_all(&app_dir).expect("rm -rf app");
    store.write_config(&trusting_config(&p.key, &[&p.url()]));
    let out = store.run(&["--json", "store", "verify", "--check-contents", "--repair"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout_of(&out), stderr_of(&out)));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{report:#}\n{}",
        stderr_of(&out)
    );
    let problems = report["problems"].as_array().expect("problems");
    for (kind, path) in [("damaged", &p.pair.lib), ("missing", &p.pair.app)] {
        let found = problems
            .iter()
            .find(|pr| pr["kind"] == kind && pr["path"] == path.as_str())
            .unwrap_or_else(|| panic!("no {kind} problem for {path}: {report:#}"));
        assert_eq!(found["repaired"], true, "{found}");
    }
    assert_eq!(std::fs::read(&lib_file).expect("read"), original);
    let valid = store.valid_paths();
    assert!(
        p.pair.both().is_subset(&valid),
        "repair unregistered a path: {valid:?}"
    );
    assert_eq!(store.references(&p.pair.app), vec![p.pair.lib.clone()]);
    assert!(app_dir.join("deps").exists(), "app's files are back");
    store.assert_fully_clean("after the repair");
    store.assert_closure_intact();
    assert_eq!(store.tmp_entries(), Vec::<String>::new(), "var/tmp");
}

// ---------------------------------------------------------------------------------------------
// Builds and installs ask the substituters.

/// A package whose output refers to busybox's (its `#!`) and to its own source.
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

/// A store configured with `cache` (trusting `key`), and a channel like `from`'s.
fn client(key: &KeyPair, cache: &str, from: &Channel) -> (Noodle, Channel) {
    let noodle = Noodle::new();
    noodle.write_config(&trusting_config(key, &[cache]));
    let channel = Channel::new(&noodle);
    write_pkg(&channel);
    std::fs::copy(
        from.dir.join("noodle.lock"),
        channel.dir.join("noodle.lock"),
    )
    .expect("copy noodle.lock");
    (noodle, channel)
}

fn builds_table(noodle: &Noodle) -> Vec<String> {
    let conn = rusqlite::Connection::open(noodle.db_file()).expect("open db");
    let mut stmt = conn.prepare("SELECT output FROM builds").expect("prepare");
    stmt.query_map([], |r| r.get::<_, String>(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// Build logs (`var/log/<output>.<time>.log.zst`; activations keep theirs in a subdirectory).
fn build_logs(noodle: &Noodle) -> Vec<String> {
    walkdir::WalkDir::new(noodle.root().join("noodle/var/log"))
        .max_depth(1)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().display().to_string())
        .collect()
}

#[test]
fn build_and_install_fetch_from_the_substituters_instead_of_building() {
    let source = Noodle::new();
    let key = source.generate_key("builder-1");
    source.write_config(&signing_config(&key));
    let channel = Channel::new(&source);
    write_pkg(&channel);
    let out = source.build_ok(&channel, &["pkg"]);
    assert_eq!(out.len(), 1, "{out:?}");
    let pkg = out[0].clone();
    let closure: BTreeSet<String> = source
        .ok(&["store", "closure", &pkg])
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(
        closure.len() >= 3,
        "pkg, busybox and the source: {closure:?}"
    );
    let cache = file_url(&source.cache_dir());
    source.ok(&["copy", "--to", &cache, &pkg]);

    // build: the output is fetched, nothing is built, no log is written.
    let (b, b_channel) = client(&key, &cache, &channel);
    let out = b.in_channel(&b_channel, &["--json", "build", "pkg"]);
    assert!(out.status.success(), "build failed: {}", stderr_of(&out));
    let events = json_lines(&stdout_of(&out));
    let substituted: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "substituted")
        .collect();
    assert!(
        substituted.iter().any(|e| e["path"] == pkg.as_str()),
        "pkg was not substituted: {events:?}"
    );
    assert!(
        !events.iter().any(|e| e["event"] == "started"),
        "something was built: {events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "output" && e["path"] == pkg.as_str()),
        "{events:?}"
    );
    let valid = b.valid_paths();
    assert!(
        closure.is_subset(&valid),
        "{closure:?} not all in {valid:?}"
    );
    assert_eq!(builds_table(&b), Vec::<String>::new(), "build rows");
    assert_eq!(build_logs(&b), Vec::<String>::new(), "build logs");
    assert!(
        !b.run(&["log", &pkg]).status.success(),
        "a log for a fetched path"
    );
    assert!(
        signatures(&b, &pkg)
            .iter()
            .any(|s| s.starts_with("builder-1:")),
        "the fetched output keeps its signature"
    );
    assert_eq!(
        std::fs::read_to_string(b.physical(&pkg).join("share/data")).expect("data"),
        "data of pkg\n"
    );
    b.assert_fully_clean("after the substituted build");
    // Building again reuses it.
    let again = json_lines(&stdout_of(
        &b.in_channel(&b_channel, &["--json", "build", "pkg"]),
    ));
    assert!(
        again
            .iter()
            .any(|e| e["event"] == "reused" && e["path"] == pkg.as_str()),
        "{again:?}"
    );

    // install: the same, and the profile holds the fetched output.
    let (c, c_channel) = client(&key, &cache, &channel);
    let out = c.in_channel(&c_channel, &["install", "pkg"]);
    assert!(out.status.success(), "install failed: {}", stderr_of(&out));
    let installed = c.installed(&[]);
    assert_eq!(
        installed,
        [("pkg".to_owned(), "1.0.0".to_owned(), pkg.clone())],
        "{installed:?}"
    );
    assert_eq!(builds_table(&c), Vec::<String>::new(), "build rows");
    assert_eq!(build_logs(&c), Vec::<String>::new(), "build logs");
    c.assert_closure_intact();
}

// ---------------------------------------------------------------------------------------------
// --option.

#[test]
fn option_overrides_the_config_file() {
    // An unsigned push (no secret-key-files).
    let source = Noodle::new();
    let pair = source.add_pair("unsigned");
    let cache = file_url(&source.cache_dir());
    let out = source.run(&["copy", "--to", &cache, &pair.app]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("unsigned"),
        "a warning about pushing unsigned: {}",
        stderr_of(&out)
    );

    let dest = Noodle::new();
    let key = dest.generate_key("dest-1");
    dest.write_config(&trusting_config(&key, &[]));
    let before = dest.snapshot();
    let out = dest.run(&["copy", "--from", &cache, &pair.app]);
    assert_eq!(out.status.code(), Some(EXIT_REFUSED), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("unsigned"), "{}", stderr_of(&out));
    assert_eq!(dest.snapshot(), before);

    // The file says require-sigs = false; the command line says true: refused.
    dest.write_config(&format!(
        "{}require-sigs = false\n",
        trusting_config(&key, &[])
    ));
    let out = dest.run(&[
        "--option",
        "require-sigs=true",
        "copy",
        "--from",
        &cache,
        &pair.app,
    ]);
    assert_eq!(out.status.code(), Some(EXIT_REFUSED), "{}", stderr_of(&out));
    assert_eq!(dest.snapshot(), before);

    // The file requires signatures; --option require-sigs=false lets the unsigned paths in.
    dest.write_config(&trusting_config(&key, &[]));
    dest.ok(&[
        "--option",
        "require-sigs=false",
        "copy",
        "--from",
        &cache,
        &pair.app,
    ]);
    assert!(pair.both().is_subset(&dest.valid_paths()));
    dest.assert_fully_clean("after the unsigned fetch");

    // Substituters from --option for verify --repair (the file has none).
    let lib_file = dest.physical(&pair.lib).join("bin/tool");
    common::tamper(&lib_file, b"#!/bin/sh\necho evil\n", true);
    let (code, _) = dest.verify_report(&["--check-contents", "--repair"]);
    assert_eq!(code, EXIT_PROBLEMS);
    let substituters = format!("substituters={cache}");
    let out = dest.run(&[
        "--option",
        &substituters,
        "--option",
        "require-sigs=false",
        "store",
        "verify",
        "--check-contents",
        "--repair",
    ]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    dest.assert_fully_clean("after repairing with --option substituters");

    // An unknown setting, on the command line or in the file, is an error naming it.
    let (code, err) = dest.fails(&[
        "--option",
        "no-such-setting=1",
        "copy",
        "--from",
        &cache,
        &pair.app,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no-such-setting"), "{err}");
    assert!(
        err.contains("require-sigs"),
        "the known settings are listed: {err}"
    );
    let (code, err) = dest.fails(&["--option", "require-sigs", "store", "verify", "--repair"]);
    assert_eq!(code, 1, "{err}");
    dest.write_config("substituterz = [\"file:///nowhere\"]\n");
    let (code, err) = dest.fails(&["store", "verify", "--repair"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("substituterz") && err.contains("noodle.toml"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Bundles.

#[test]
fn bundle_export_then_import_into_a_fresh_store() {
    let source = Noodle::new();
    let pair = source.add_pair("bundle");
    let key = source.generate_key("bundler-1");
    source.write_config(&signing_config(&key));
    let file = source.scratch("app.noodle");
    let file_arg = file.to_str().expect("utf-8");
    source.ok(&["bundle", "export", "-o", file_arg, &pair.app]);
    assert!(file.is_file());

    // Untrusted (no keys, then another key): refused with 11, the store unchanged.
    let dest = Noodle::new();
    let before = dest.snapshot();
    let out = dest.run(&["bundle", "import", file_arg]);
    assert_eq!(out.status.code(), Some(EXIT_REFUSED), "{}", stderr_of(&out));
    assert_eq!(
        dest.snapshot(),
        before,
        "a refused import changed the store"
    );
    let other = dest.generate_key("other-1");
    dest.write_config(&trusting_config(&other, &[]));
    let out = dest.run(&["bundle", "import", file_arg]);
    assert_eq!(out.status.code(), Some(EXIT_REFUSED), "{}", stderr_of(&out));
    assert_eq!(
        dest.snapshot(),
        before,
        "a refused import changed the store"
    );

    // Trusted: both paths, dependencies first.
    dest.write_config(&trusting_config(&key, &[]));
    let out = dest.ok(&["bundle", "import", file_arg]);
    let printed: BTreeSet<String> = out.lines().map(str::to_owned).collect();
    assert_eq!(printed, pair.both(), "{out}");
    assert_eq!(dest.valid_paths(), pair.both());
    assert_has_pair(&dest, &source, &pair, None, "after the import");

    // Importing again changes nothing.
    let before = dest.snapshot();
    let again = dest.json(&["bundle", "import", file_arg]);
    assert_eq!(again["paths"], serde_json::json!([]), "{again}");
    assert_eq!(again["already_valid"], 2, "{again}");
    assert_eq!(dest.snapshot(), before);
}
