use super::*;

fn write(dir: &Path, text: &str) -> PathBuf {
    let file = dir.join("noodle.toml");
    fs_err::write(&file, text).expect("write");
    file
}

/// The `(origin, why)` of a configuration error.
fn refusal(result: Result<Settings>) -> (String, String) {
    match result {
        Err(CacheError::Config { origin, why }) => (origin, why),
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

fn key_text(name: &str) -> String {
    SecretKey::generate(name)
        .expect("key generation")
        .public()
        .to_text()
}

#[test]
fn absent_file_means_defaults() {
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = Settings::load(&dir.path().join("none.toml"), &[]).expect("settings load");
    assert_eq!(settings, Settings::default());
    assert!(settings.require_sigs);
    assert_eq!(settings.connect_timeout, Duration::from_secs(5));
    assert_eq!(settings.download_jobs, 8);
    assert!(settings
        .trusted_keys()
        .expect("trusted keys parse")
        .is_empty());
    assert!(settings.secret_keys().expect("key files load").is_empty());
}

#[test]
fn file_then_overrides() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = key_text("cache-1");
    let file = write(
        dir.path(),
        &format!(
            "substituters = [\"http://peer:8080\", \"file:///srv/cache\"]\n\
             trusted-public-keys = [\"{key}\"]\n\
             secret-key-files = [\"keys/me.sec\", \"/abs/other.sec\"]\n\
             require-sigs = false\n\
             connect-timeout = 30\n\
             download-jobs = 2\n"
        ),
    );
    let settings = Settings::load(&file, &[]).expect("settings load");
    assert_eq!(
        settings.substituters,
        ["http://peer:8080", "file:///srv/cache"]
    );
    assert_eq!(settings.trusted_public_keys, std::slice::from_ref(&key));
    assert_eq!(
        settings.secret_key_files,
        [
            dir.path().join("keys/me.sec"),
            PathBuf::from("/abs/other.sec")
        ]
    );
    assert!(!settings.require_sigs);
    assert_eq!(settings.connect_timeout, Duration::from_secs(30));
    assert_eq!(settings.download_jobs, 2);
    assert_eq!(
        settings.trusted_keys().expect("trusted keys parse").names(),
        ["cache-1"]
    );

    let other = key_text("other-1");
    let overrides = [
        "substituters=https://a.example https://b.example".to_owned(),
        format!("trusted-public-keys={key} {other}"),
        "secret-key-files=rel.sec".to_owned(),
        "require-sigs=true".to_owned(),
        "connect-timeout=1".to_owned(),
        "download-jobs = 16".to_owned(),
    ];
    let settings = Settings::load(&file, &overrides).expect("settings load");
    assert_eq!(
        settings.substituters,
        ["https://a.example", "https://b.example"]
    );
    assert_eq!(
        settings.trusted_keys().expect("trusted keys parse").names(),
        ["cache-1", "other-1"]
    );
    assert_eq!(settings.secret_key_files, [PathBuf::from("rel.sec")]);
    assert!(settings.require_sigs);
    assert_eq!(settings.connect_timeout, Duration::from_secs(1));
    assert_eq!(settings.download_jobs, 16);

    // An empty list value clears the file's list.
    let settings = Settings::load(&file, &["substituters=".to_owned()]).expect("settings load");
    assert!(settings.substituters.is_empty());
}

#[test]
fn unknown_settings_list_the_known_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(dir.path(), "require-sigs = true\nsubstituter = []\n");
    let (origin, why) = refusal(Settings::load(&file, &[]));
    assert!(
        origin.contains(&file.display().to_string()) && origin.ends_with("line 2"),
        "{origin}"
    );
    assert!(why.contains("unknown setting 'substituter'"), "{why}");
    for name in SETTINGS {
        assert!(why.contains(name), "{why}");
    }

    let none = dir.path().join("absent.toml");
    let (origin, why) = refusal(Settings::load(&none, &["max-jobs=4".to_owned()]));
    assert_eq!(origin, "--option max-jobs=4");
    assert!(
        why.contains("unknown setting 'max-jobs'") && why.contains("download-jobs"),
        "{why}"
    );
    let (origin, why) = refusal(Settings::load(&none, &["require-sigs".to_owned()]));
    assert_eq!(origin, "--option require-sigs");
    assert!(why.contains("NAME=VALUE"), "{why}");
}

#[test]
fn bad_values_name_the_setting() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (line, needle) in [
        (
            "require-sigs = \"yes\"",
            "require-sigs: expected true or false, got string",
        ),
        ("connect-timeout = 0", "connect-timeout: 0 is out of range"),
        (
            "connect-timeout = -3",
            "connect-timeout: -3 is out of range",
        ),
        (
            "connect-timeout = 1.5",
            "connect-timeout: expected a whole number",
        ),
        ("download-jobs = 0", "download-jobs: 0 is out of range"),
        (
            "download-jobs = 100000",
            "download-jobs: 100000 is out of range",
        ),
        (
            "substituters = \"http://x\"",
            "substituters: expected an array of strings",
        ),
        (
            "substituters = [1]",
            "substituters: expected an array of strings",
        ),
        (
            "substituters = [\"ftp://x\"]",
            "substituters: \"ftp://x\" is not a file://",
        ),
        (
            "substituters = [\"http://\"]",
            "substituters: \"http://\" has nothing after",
        ),
        (
            "trusted-public-keys = [\"junk\"]",
            "trusted-public-keys: key 'junk'",
        ),
        (
            "secret-key-files = [true]",
            "secret-key-files: expected an array of strings",
        ),
    ] {
        let file = write(dir.path(), &format!("# comment\n{line}\n"));
        let (origin, why) = refusal(Settings::load(&file, &[]));
        assert_eq!(
            origin,
            format!("file '{}' line 2", file.display()),
            "{line}"
        );
        assert!(why.starts_with(needle), "{line}: {why}");
    }

    let none = dir.path().join("absent.toml");
    for (entry, needle) in [
        (
            "require-sigs=yes",
            "require-sigs: expected true or false, got \"yes\"",
        ),
        (
            "connect-timeout=soon",
            "connect-timeout: expected a whole number, got \"soon\"",
        ),
        ("download-jobs=-1", "download-jobs: -1 is out of range"),
        ("substituters=nonsense", "substituters: \"nonsense\" is not"),
        ("trusted-public-keys=a:b", "trusted-public-keys: key 'a:b'"),
    ] {
        let (origin, why) = refusal(Settings::load(&none, &[entry.to_owned()]));
        assert_eq!(origin, format!("--option {entry}"));
        assert!(why.starts_with(needle), "{entry}: {why}");
    }
}

#[test]
fn toml_errors_name_the_file_and_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (text, line, needle) in [
        (
            "require-sigs = true\nrequire-sigs = false\n",
            2,
            "duplicate key",
        ),
        ("download-jobs = \n", 1, "invalid TOML"),
        ("\n\n[table\n", 3, "invalid TOML"),
    ] {
        let file = write(dir.path(), text);
        let (origin, why) = refusal(Settings::load(&file, &[]));
        assert_eq!(
            origin,
            format!("file '{}' line {line}", file.display()),
            "{text}"
        );
        assert!(why.contains(needle) && !why.contains('\n'), "{text}: {why}");
    }
}

#[test]
fn unreadable_file_is_an_error_not_defaults() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A directory where the file should be.
    let error = Settings::load(dir.path(), &[])
        .expect_err("must be refused")
        .to_string();
    assert!(error.contains(&dir.path().display().to_string()), "{error}");
}

#[test]
fn secret_keys_are_loaded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = SecretKey::generate("me-1").expect("key generation");
    key.write_pair(&dir.path().join("keys"))
        .expect("key files written");
    let file = write(dir.path(), "secret-key-files = [\"keys/me-1.sec\"]\n");
    let keys = Settings::load(&file, &[])
        .expect("settings load")
        .secret_keys()
        .expect("key files load");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].to_text(), key.to_text());

    let file = write(dir.path(), "secret-key-files = [\"keys/missing.sec\"]\n");
    let error = Settings::load(&file, &[])
        .expect("settings load")
        .secret_keys()
        .expect_err("must be refused")
        .to_string();
    assert!(error.contains("missing.sec"), "{error}");
}

#[test]
fn default_file_locations() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    };
    let home = env(&[("HOME", "/home/u")]);
    assert_eq!(
        default_file_from(true, home),
        PathBuf::from("/etc/noodle/noodle.toml")
    );
    assert_eq!(
        default_file_from(false, home),
        PathBuf::from("/home/u/.config/noodle/noodle.toml")
    );
    let xdg = env(&[("HOME", "/home/u"), ("XDG_CONFIG_HOME", "/x")]);
    assert_eq!(
        default_file_from(false, xdg),
        PathBuf::from("/x/noodle/noodle.toml")
    );
    let relative_xdg = env(&[("HOME", "/home/u"), ("XDG_CONFIG_HOME", "rel")]);
    assert_eq!(
        default_file_from(false, relative_xdg),
        PathBuf::from("/home/u/.config/noodle/noodle.toml")
    );
    let forced = env(&[("HOME", "/home/u"), ("NOODLE_CONFIG", "/tmp/n.toml")]);
    assert_eq!(
        default_file_from(false, forced),
        PathBuf::from("/tmp/n.toml")
    );
    assert_eq!(
        default_file_from(true, forced),
        PathBuf::from("/tmp/n.toml")
    );
    assert_eq!(
        default_file_from(false, env(&[])),
        PathBuf::from("/etc/noodle/noodle.toml")
    );
}
