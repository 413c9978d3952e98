//! Bad input from binary caches (issue 6): every way a cache can lie, break or vanish is
//! refused with a non-zero exit — 11 when the path itself is refused (unsigned, untrusted,
//! a bad signature, contents or narinfo that do not match), 1 when the cache cannot be used —
//! with a message naming what failed, for which path and key, and the fetching store exactly
//! as it was (the closure is all or nothing).
//!
//! Narinfos whose only fault is a hash or a size are re-signed by the test with the cache's
//! own key (`badcache::Key`, independent of noodle's signing code); a control case proves the
//! re-signing itself is accepted.

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;

use common::badcache::{
    copy_dir, digest, edit_narinfo, file_url, nar_file, narinfo_file, read_narinfo, Cut, Fixture,
    HttpCache, NarInfoText,
};
use common::{run_cases, Noodle};

const REFUSED: i32 = 11;
const FAILURE: i32 = 1;
const WORKERS: usize = 8;
const STORE: &str = common::badcache::STORE_DIR;

/// One damaged cache: what is done to a copy of a cache, and what the fetch must answer.
struct Case {
    name: &'static str,
    /// The exit code `copy --from` must end with.
    code: i32,
    /// The cache the case starts from (a copy of it is damaged).
    from: fn(&Fixture) -> &Path,
    /// Damages the copy; returns what stderr must contain.
    damage: fn(&Fixture, &Path) -> Vec<String>,
}

fn signed(f: &Fixture) -> &Path {
    &f.signed
}

/// Runs `copy --from <damaged copy> APP` for each case in a fresh store; returns a
/// description of every case that did not behave.
fn check_cases(fixture: &Fixture, cases: &[Case]) -> Vec<String> {
    let failures = std::sync::Mutex::new(Vec::new());
    let refs: Vec<&Case> = cases.iter().collect();
    let counter = std::sync::atomic::AtomicUsize::new(0);
    run_cases(WORKERS, &refs, |case| {
        // Not named after the case: a needle must not be found in the cache's own URL.
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = fixture.source.dir.path().join("cases").join(n.to_string());
        copy_dir((case.from)(fixture), &dir);
        let mut needles = (case.damage)(fixture, &dir);
        // A refusal always names the refused path (a narinfo's problems, by its file name):
        // app, unless the case is about its dependency (whose needles then name it).
        if case.code == REFUSED && !needles.contains(&fixture.dep) {
            needles.push(digest(&fixture.app).to_owned());
        }
        let problems = fetch_refused(fixture, &file_url(&dir), &fixture.app, case.code, &needles);
        if !problems.is_empty() {
            failures.lock().expect("lock").push(format!(
                "case {}:\n  {}",
                case.name,
                problems.join("\n  ")
            ));
        }
        !problems.is_empty()
    });
    failures.into_inner().expect("lock")
}

/// Fetches `path` from `url` into a fresh store trusting the fixture's key; returns what was
/// wrong with the outcome (nothing when it failed with `code`, said all of `needles`, and left
/// the store as it was).
fn fetch_refused(
    fixture: &Fixture,
    url: &str,
    path: &str,
    code: i32,
    needles: &[String],
) -> Vec<String> {
    let target = fixture.trusting_target();
    fetch_refused_into(&target, url, path, &[code], needles)
}

/// As `fetch_refused`, into `target`, accepting any of `codes`.
fn fetch_refused_into(
    target: &Noodle,
    url: &str,
    path: &str,
    codes: &[i32],
    needles: &[String],
) -> Vec<String> {
    let before = target.snapshot();
    let valid_before = target.valid_paths();
    let out = target.run(&["copy", "--from", url, path]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut problems = Vec::new();
    if !out.status.code().is_some_and(|code| codes.contains(&code)) {
        problems.push(format!(
            "exit {:?}, expected {codes:?}; stderr: {}",
            out.status.code(),
            stderr.trim()
        ));
    }
    for needle in needles {
        if !stderr.contains(needle.as_str()) {
            problems.push(format!(
                "stderr does not name {needle:?}: {}",
                stderr.trim()
            ));
        }
    }
    if !out.stdout.is_empty() {
        problems.push(format!(
            "stdout is not empty: {}",
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    if target.valid_paths() != valid_before {
        problems.push(format!(
            "valid paths changed: {:?} -> {:?}",
            valid_before,
            target.valid_paths()
        ));
    }
    let tmp = target.tmp_entries();
    if !tmp.is_empty() {
        problems.push(format!("var/tmp is not empty: {tmp:?}"));
    }
    let after = target.snapshot();
    if after != before {
        let changed: Vec<_> = before
            .keys()
            .chain(after.keys())
            .filter(|k| before.get(*k) != after.get(*k))
            .collect();
        problems.push(format!("the store changed: {changed:?}"));
    }
    problems
}

fn assert_no_failures(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} case(s) misbehaved:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn app_narinfo(f: &Fixture, dir: &Path, edit: impl FnOnce(&mut NarInfoText)) {
    edit_narinfo(dir, &f.app, edit);
}

/// The NAR hash of another path (a real, well-formed hash that is not this NAR's).
fn dep_nar_hash(f: &Fixture, dir: &Path) -> String {
    read_narinfo(dir, &f.dep).get("NarHash").to_owned()
}

fn nar_size(info: &NarInfoText) -> u64 {
    info.get("NarSize").parse().expect("NarSize")
}

fn flip_middle_byte(file: &Path) {
    let mut data = std::fs::read(file).expect("read NAR file");
    let middle = data.len() / 2;
    data[middle] ^= 0x55;
    std::fs::write(file, data).expect("write NAR file");
}

fn truncate_half(file: &Path) {
    let data = std::fs::read(file).expect("read NAR file");
    std::fs::write(file, &data[..data.len() / 2]).expect("write NAR file");
}

/// A base name no cache has and no store holds.
const GHOST: &str = "0123456789abcdfghijklmnpqrsvwxyz-ghost";

fn signature_cases() -> Vec<Case> {
    vec![
        Case {
            name: "unsigned",
            code: REFUSED,
            from: |f| &f.unsigned,
            damage: |f, _| vec![f.app.clone(), "unsigned".into()],
        },
        Case {
            name: "untrusted-key",
            code: REFUSED,
            from: |f| &f.untrusted,
            damage: |f, _| vec![f.app.clone(), f.other.name.clone(), "untrusted".into()],
        },
        Case {
            name: "sig-base64-edited",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                app_narinfo(f, dir, |info| {
                    let sig = info.get("Sig").to_owned();
                    let (name, data) = sig.split_once(':').expect("name:base64");
                    let mut chars: Vec<char> = data.chars().collect();
                    let middle = chars.len() / 2;
                    chars[middle] = if chars[middle] == 'A' { 'B' } else { 'A' };
                    let data: String = chars.into_iter().collect();
                    info.set("Sig", &format!("{name}:{data}"));
                });
                vec![f.app.clone(), f.key.name.clone(), "does not match".into()]
            },
        },
        Case {
            name: "sig-not-base64",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                let name = f.key.name.clone();
                app_narinfo(f, dir, |info| {
                    info.set("Sig", &format!("{name}:!!not*base64!!"));
                });
                vec![f.app.clone(), f.key.name.clone(), "does not match".into()]
            },
        },
        Case {
            name: "sig-no-key-name",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                app_narinfo(f, dir, |info| {
                    let sig = info.get("Sig").to_owned();
                    let data = sig.split_once(':').expect("name:base64").1.to_owned();
                    info.set("Sig", &data);
                });
                vec![f.app.clone()]
            },
        },
        Case {
            name: "narsize-changed-not-resigned",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                app_narinfo(f, dir, |info| {
                    let size = nar_size(info) + 1;
                    info.set("NarSize", &size.to_string());
                });
                vec![f.app.clone(), f.key.name.clone(), "does not match".into()]
            },
        },
        Case {
            name: "narhash-changed-not-resigned",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                let other = dep_nar_hash(f, dir);
                app_narinfo(f, dir, |info| {
                    info.set("NarHash", &other);
                });
                vec![f.app.clone(), f.key.name.clone(), "does not match".into()]
            },
        },
        Case {
            name: "reference-dropped-not-resigned",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                app_narinfo(f, dir, |info| {
                    let refs: Vec<String> = info
                        .get("References")
                        .split_whitespace()
                        .filter(|r| !f.dep.ends_with(*r))
                        .map(str::to_owned)
                        .collect();
                    info.set("References", &refs.join(" "));
                });
                vec![f.app.clone(), f.key.name.clone(), "does not match".into()]
            },
        },
        Case {
            name: "reference-added-not-resigned",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                app_narinfo(f, dir, |info| {
                    let refs = format!("{} {GHOST}", info.get("References"));
                    info.set("References", refs.trim());
                });
                vec![f.app.clone(), f.key.name.clone(), "does not match".into()]
            },
        },
        Case {
            // Another path's genuine narinfo and signature, relabelled as this path.
            name: "signature-of-another-path-replayed",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                let mut info = read_narinfo(dir, &f.dep);
                info.set("StorePath", &f.app);
                std::fs::write(narinfo_file(dir, &f.app), info.render()).expect("write");
                vec![f.app.clone(), f.key.name.clone(), "does not match".into()]
            },
        },
    ]
}

/// Narinfos perfectly signed by the trusted key whose hash or size is not the NAR's, and NAR
/// files that are not what the narinfo describes. The fixture's paths are content-addressed
/// (`store add`): with their `CA:` line a wrong NAR hash is caught before a byte is fetched;
/// without it (as for build outputs) only the received bytes can tell.
fn contents_cases() -> Vec<Case> {
    vec![
        Case {
            name: "narhash-mismatch-resigned",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                let other = dep_nar_hash(f, dir);
                app_narinfo(f, dir, |info| {
                    info.set("NarHash", &other).resign(&f.key);
                });
                vec![f.app.clone(), "mismatch".into()]
            },
        },
        Case {
            name: "narhash-mismatch-resigned-no-ca",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                let other = dep_nar_hash(f, dir);
                app_narinfo(f, dir, |info| {
                    info.remove("CA").set("NarHash", &other).resign(&f.key);
                });
                vec![f.app.clone(), "NAR hash mismatch".into(), other]
            },
        },
        Case {
            // CA and NarHash agree with each other, but the path is not named after them.
            name: "ca-and-narhash-consistently-wrong-resigned",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                let other = dep_nar_hash(f, dir);
                app_narinfo(f, dir, |info| {
                    info.set("NarHash", &other)
                        .set("CA", &format!("source:{other}"))
                        .resign(&f.key);
                });
                vec![f.app.clone(), "mismatch".into()]
            },
        },
        Case {
            name: "narsize-larger-resigned",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                app_narinfo(f, dir, |info| {
                    let size = nar_size(info) + 1;
                    info.set("NarSize", &size.to_string()).resign(&f.key);
                });
                vec![f.app.clone(), "NAR size mismatch".into()]
            },
        },
        Case {
            name: "narsize-smaller-resigned",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                app_narinfo(f, dir, |info| {
                    let size = nar_size(info) - 1;
                    info.set("NarSize", &size.to_string()).resign(&f.key);
                });
                vec![f.app.clone(), "NAR size mismatch".into()]
            },
        },
        Case {
            // The dependency is bad, the requested path is fine: nothing of the closure enters.
            name: "dependency-narhash-mismatch-resigned-no-ca",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                let other = read_narinfo(dir, &f.app).get("NarHash").to_owned();
                edit_narinfo(dir, &f.dep, |info| {
                    info.remove("CA").set("NarHash", &other).resign(&f.key);
                });
                vec![f.dep.clone(), "NAR hash mismatch".into()]
            },
        },
        Case {
            name: "nar-file-truncated",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                truncate_half(&nar_file(dir, &f.app));
                vec![f.app.clone()]
            },
        },
        Case {
            name: "nar-file-byte-flipped",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                flip_middle_byte(&nar_file(dir, &f.app));
                vec![f.app.clone()]
            },
        },
        Case {
            // As `noodle serve` writes them: no FileHash/FileSize, only the NAR hash protects.
            name: "nar-file-byte-flipped-no-file-hash",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                app_narinfo(f, dir, |info| {
                    info.remove("FileHash").remove("FileSize");
                });
                flip_middle_byte(&nar_file(dir, &f.app));
                vec![f.app.clone()]
            },
        },
        Case {
            name: "nar-file-truncated-no-file-hash",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                app_narinfo(f, dir, |info| {
                    info.remove("FileHash").remove("FileSize");
                });
                truncate_half(&nar_file(dir, &f.app));
                vec![f.app.clone()]
            },
        },
        Case {
            // A well-formed NAR file of another path in place of this one's.
            name: "nar-file-swapped-no-file-hash",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                app_narinfo(f, dir, |info| {
                    info.remove("FileHash").remove("FileSize");
                });
                std::fs::copy(nar_file(dir, &f.dep), nar_file(dir, &f.app)).expect("copy");
                vec![f.app.clone(), "mismatch".into()]
            },
        },
        Case {
            // Uncompressed, so the NAR itself is damaged (not the compressed stream).
            name: "uncompressed-nar-byte-flipped",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                let plain = dir.join("nar/plain.nar");
                std::fs::write(&plain, f.source.dump(&f.app)).expect("write");
                flip_middle_byte(&plain);
                app_narinfo(f, dir, |info| {
                    info.set("URL", "nar/plain.nar")
                        .set("Compression", "none")
                        .remove("FileHash")
                        .remove("FileSize");
                });
                vec![f.app.clone(), "NAR hash mismatch".into()]
            },
        },
        Case {
            name: "nar-file-missing",
            code: FAILURE,
            from: signed,
            damage: |f, dir| {
                std::fs::remove_file(nar_file(dir, &f.app)).expect("rm");
                vec![f.app.clone(), "incomplete".into()]
            },
        },
    ]
}

fn narinfo_cases() -> Vec<Case> {
    macro_rules! missing {
        ($name:literal, $field:literal) => {
            Case {
                name: $name,
                code: REFUSED,
                from: signed,
                damage: |f, dir| {
                    app_narinfo(f, dir, |info| {
                        info.remove($field);
                    });
                    vec![concat!($field, " is missing").into()]
                },
            }
        };
    }
    vec![
        missing!("missing-storepath", "StorePath"),
        missing!("missing-url", "URL"),
        missing!("missing-narhash", "NarHash"),
        missing!("missing-narsize", "NarSize"),
        missing!("missing-references", "References"),
        Case {
            name: "duplicate-narhash",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                let other = dep_nar_hash(f, dir);
                app_narinfo(f, dir, |info| {
                    info.duplicate("NarHash", &other);
                });
                vec!["NarHash is given twice".into()]
            },
        },
        Case {
            name: "duplicate-storepath",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                let dep = f.dep.clone();
                app_narinfo(f, dir, |info| {
                    info.duplicate("StorePath", &dep);
                });
                vec!["StorePath is given twice".into()]
            },
        },
        Case {
            name: "duplicate-narsize-same-value",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                app_narinfo(f, dir, |info| {
                    let size = info.get("NarSize").to_owned();
                    info.duplicate("NarSize", &size);
                });
                vec!["NarSize is given twice".into()]
            },
        },
        Case {
            name: "absurd-narsize-resigned",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                app_narinfo(f, dir, |info| {
                    info.set("NarSize", &(1u64 << 60).to_string())
                        .resign(&f.key);
                });
                vec!["NarSize 1152921504606846976".into(), "absurd".into()]
            },
        },
        Case {
            name: "narsize-overflows-u64",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                app_narinfo(f, dir, |info| {
                    info.set("NarSize", "99999999999999999999999");
                });
                vec!["NarSize".into(), "99999999999999999999999".into()]
            },
        },
        Case {
            name: "narsize-zero-resigned",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                app_narinfo(f, dir, |info| {
                    info.set("NarSize", "0").resign(&f.key);
                });
                vec!["NarSize 0".into(), "absurd".into()]
            },
        },
        Case {
            name: "absurd-filesize",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                app_narinfo(f, dir, |info| {
                    info.set("FileSize", &(1u64 << 60).to_string());
                });
                vec!["FileSize 1152921504606846976".into(), "absurd".into()]
            },
        },
        Case {
            name: "narhash-not-a-hash",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                app_narinfo(f, dir, |info| {
                    info.set(
                        "NarHash",
                        "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s",
                    );
                });
                vec![
                    "NarHash".into(),
                    "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s".into(),
                ]
            },
        },
        Case {
            name: "narinfo-of-another-path",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                std::fs::copy(narinfo_file(dir, &f.dep), narinfo_file(dir, &f.app)).expect("copy");
                vec![f.app.clone(), f.dep.clone()]
            },
        },
        Case {
            // Same digest, another name: still not the path that was asked for.
            name: "narinfo-same-digest-other-name",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                let renamed = format!("{STORE}/{}-evil", digest(&f.app));
                let key = &f.key;
                app_narinfo(f, dir, |info| {
                    info.set("StorePath", &renamed).resign(key);
                });
                vec![f.app.clone(), "-evil".into()]
            },
        },
        Case {
            name: "storepath-in-another-store-dir",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                let elsewhere = f.app.replacen(STORE, "/other/store", 1);
                app_narinfo(f, dir, |info| {
                    info.set("StorePath", &elsewhere).resign(&f.key);
                });
                vec!["StorePath".into(), "/other/store".into()]
            },
        },
        Case {
            name: "url-escapes-the-cache",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                app_narinfo(f, dir, |info| {
                    info.set("URL", "nar/../../../etc/passwd");
                });
                vec!["URL".into(), "nar/../../../etc/passwd".into()]
            },
        },
        Case {
            name: "url-absolute",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                app_narinfo(f, dir, |info| {
                    info.set("URL", "/etc/passwd");
                });
                vec!["URL".into(), "\"/etc/passwd\"".into()]
            },
        },
        Case {
            name: "url-another-host",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                app_narinfo(f, dir, |info| {
                    info.set("URL", "http://evil.example/x.nar.zst");
                });
                vec!["URL".into(), "http://evil.example/x.nar.zst".into()]
            },
        },
        Case {
            name: "unknown-compression",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                app_narinfo(f, dir, |info| {
                    info.set("Compression", "xz");
                });
                vec!["Compression".into(), "\"xz\"".into()]
            },
        },
        Case {
            name: "line-without-colon",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                let file = narinfo_file(dir, &f.app);
                let text = std::fs::read_to_string(&file).expect("read");
                std::fs::write(&file, format!("{text}this line is garbage\n")).expect("write");
                vec!["this line is garbage".into()]
            },
        },
        Case {
            name: "reference-not-a-store-path",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                app_narinfo(f, dir, |info| {
                    let refs = format!("{} not-a-path", info.get("References"));
                    info.set("References", &refs);
                });
                vec!["not-a-path".into()]
            },
        },
        Case {
            name: "reference-listed-twice",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                app_narinfo(f, dir, |info| {
                    let refs = info.get("References").to_owned();
                    info.set("References", &format!("{refs} {refs}"));
                });
                vec!["listed twice".into()]
            },
        },
        Case {
            name: "empty-narinfo",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                std::fs::write(narinfo_file(dir, &f.app), "").expect("write");
                vec!["StorePath is missing".into()]
            },
        },
        Case {
            name: "binary-narinfo",
            code: REFUSED,
            from: signed,
            damage: |f, dir| {
                let mut data = std::fs::read(narinfo_file(dir, &f.app)).expect("read");
                data.splice(0..0, [0xff, 0xfe, 0x00, 0x80]);
                std::fs::write(narinfo_file(dir, &f.app), data).expect("write");
                vec![]
            },
        },
        Case {
            // A path no cache has and this store does not hold: the closure cannot be completed.
            name: "reference-outside-the-closure",
            code: FAILURE,
            from: signed,
            damage: |f, dir| {
                app_narinfo(f, dir, |info| {
                    let refs = format!("{} {GHOST}", info.get("References"));
                    info.set("References", refs.trim()).resign(&f.key);
                });
                vec![
                    format!("{STORE}/{GHOST}"),
                    f.app.clone(),
                    "not found".into(),
                ]
            },
        },
    ]
}

/// Caches that cannot be used at all: exit 1, the cache named.
fn cache_cases() -> Vec<Case> {
    vec![
        Case {
            name: "no-cache-info",
            code: FAILURE,
            from: signed,
            damage: |_, dir| {
                std::fs::remove_file(dir.join("cache-info")).expect("rm");
                vec![file_url(dir), "cache-info".into()]
            },
        },
        Case {
            name: "cache-info-other-store-dir",
            code: FAILURE,
            from: signed,
            damage: |_, dir| {
                std::fs::write(
                    dir.join("cache-info"),
                    "StoreDir: /other/store\nWantMassQuery: 1\nPriority: 40\n",
                )
                .expect("write");
                vec![file_url(dir), "/other/store".into(), STORE.into()]
            },
        },
        Case {
            name: "cache-info-without-store-dir",
            code: FAILURE,
            from: signed,
            damage: |_, dir| {
                std::fs::write(dir.join("cache-info"), "WantMassQuery: 1\n").expect("write");
                vec![file_url(dir), "StoreDir".into()]
            },
        },
        Case {
            name: "cache-info-garbage",
            code: FAILURE,
            from: signed,
            damage: |_, dir| {
                std::fs::write(dir.join("cache-info"), "<html>not found</html>\n").expect("write");
                vec![file_url(dir), "cache-info".into()]
            },
        },
    ]
}

#[test]
fn the_fixture_cache_is_good_and_re_signing_is_accepted() {
    let fixture = Fixture::new(64 << 10);
    // Control: the pristine cache, and a copy whose narinfos the test re-signed without any
    // other change, are both accepted — so the re-signed bad cases fail for their one fault.
    let resigned = fixture.copy_of_signed("resigned");
    for path in [&fixture.app, &fixture.dep] {
        edit_narinfo(&resigned, path, |info| {
            info.resign(&fixture.key);
        });
    }
    for cache in [&fixture.signed, &resigned] {
        let target = fixture.trusting_target();
        let out = target.ok(&["copy", "--from", &file_url(cache), &fixture.app]);
        assert_eq!(out.trim(), fixture.app);
        assert_eq!(
            target.valid_paths(),
            [fixture.app.clone(), fixture.dep.clone()].into(),
        );
        assert!(target.tmp_entries().is_empty());
        target.assert_fully_clean("after a good fetch");
    }
}

#[test]
fn bad_signatures_are_refused_with_exit_11() {
    let fixture = Fixture::new(64 << 10);
    assert_no_failures(check_cases(&fixture, &signature_cases()));
}

#[test]
fn contents_that_do_not_match_the_signed_narinfo_are_refused() {
    let fixture = Fixture::new(64 << 10);
    assert_no_failures(check_cases(&fixture, &contents_cases()));
}

#[test]
fn malformed_narinfos_are_refused_with_exit_11() {
    let fixture = Fixture::new(64 << 10);
    assert_no_failures(check_cases(&fixture, &narinfo_cases()));
}

#[test]
fn unusable_caches_fail_with_exit_1() {
    let fixture = Fixture::new(64 << 10);
    let mut failures = check_cases(&fixture, &cache_cases());

    // A directory that does not exist, a relative file URL, an https URL.
    let missing = fixture.source.dir.path().join("no-such-cache");
    for (url, needles) in [
        (
            file_url(&missing),
            vec![file_url(&missing), "cache-info".to_owned()],
        ),
        (
            "file://relative/dir".to_owned(),
            vec!["file://relative/dir".to_owned()],
        ),
        ("not-a-url".to_owned(), vec!["not-a-url".to_owned()]),
        ("https://127.0.0.1:9/".to_owned(), vec!["https".to_owned()]),
    ] {
        let problems = fetch_refused(&fixture, &url, &fixture.app, FAILURE, &needles);
        if !problems.is_empty() {
            failures.push(format!("cache {url}:\n  {}", problems.join("\n  ")));
        }
    }

    // Nothing listens on the port (it was just free): connection refused, at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let started = std::time::Instant::now();
    let problems = fetch_refused(
        &fixture,
        &url,
        &fixture.app,
        FAILURE,
        std::slice::from_ref(&url),
    );
    if !problems.is_empty() {
        failures.push(format!("cache {url}:\n  {}", problems.join("\n  ")));
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "a refused connection took {:?}",
        started.elapsed()
    );
    assert_no_failures(failures);
}

/// The NAR file of `path` in `cache`, relative to it (as the narinfo's URL names it).
fn nar_rel(cache: &Path, path: &str) -> String {
    read_narinfo(cache, path).get("URL").to_owned()
}

#[test]
fn a_cache_that_vanishes_mid_download_leaves_nothing_and_a_rerun_succeeds() {
    // 1 MiB of noise: the NAR file is as big, so half of it is well into the archive.
    let fixture = Fixture::new(1 << 20);
    let server = HttpCache::serve(&fixture.signed);
    let app_nar = nar_rel(&fixture.signed, &fixture.app);
    let target = fixture.trusting_target();
    let mut failures = Vec::new();
    // Announced length, half the body: the client knows the transfer was cut (exit 1).
    // No length, half the body, clean close: what arrived is indistinguishable from a
    // truncated file, so a refusal (11) is as right as a transport failure (1).
    for (cut, codes) in [
        (Cut::HalfWithLength, &[FAILURE][..]),
        (Cut::HalfWithoutLength, &[FAILURE, REFUSED][..]),
    ] {
        server.set_cut(cut, &app_nar);
        let asked = server.cut_requests.load(Ordering::SeqCst);
        let problems = fetch_refused_into(
            &target,
            &server.url,
            &fixture.app,
            codes,
            &[server.url.clone(), fixture.app.clone()],
        );
        if !problems.is_empty() {
            failures.push(format!("{cut:?}:\n  {}", problems.join("\n  ")));
        }
        assert!(
            server.cut_requests.load(Ordering::SeqCst) > asked,
            "{cut:?}: the NAR of app was not requested: the cut was not exercised"
        );
    }

    // The cache is back: the same command now fetches the whole closure.
    server.set_cut(Cut::No, &app_nar);
    let out = target.run(&["copy", "--from", &server.url, &fixture.app]);
    if !out.status.success() {
        failures.push(format!(
            "the re-run failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    assert_no_failures(failures);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), fixture.app);
    assert_eq!(
        target.valid_paths(),
        [fixture.app.clone(), fixture.dep.clone()].into()
    );
    assert!(target.tmp_entries().is_empty());
    target.assert_fully_clean("after the re-run");
}

#[test]
fn a_download_cut_short_then_another_good_cache_succeeds() {
    let fixture = Fixture::new(256 << 10);
    let server = HttpCache::serve(&fixture.signed);
    server.set_cut(Cut::HalfWithLength, &nar_rel(&fixture.signed, &fixture.app));
    let target = fixture.trusting_target();
    let problems = fetch_refused_into(
        &target,
        &server.url,
        &fixture.app,
        &[FAILURE],
        std::slice::from_ref(&server.url),
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    target.ok(&["copy", "--from", &file_url(&fixture.signed), &fixture.app]);
    assert_eq!(
        target.valid_paths(),
        [fixture.app.clone(), fixture.dep.clone()].into()
    );
    assert!(target.tmp_entries().is_empty());
    target.assert_fully_clean("after the fetch from the good cache");
}
