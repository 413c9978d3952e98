use super::*;

const HEX: &str = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";

const FULL: &str = r#"name = "hello"
version = "1.0.0"
description = "says hello"

[dependencies]
busybox = "1.35"
lib-x = ">=0.2, <0.4"

[sources.src]
path = "src/hello.c"

[sources.tool]
url = "http://127.0.0.1:8000/tool"
pin = "tool@2.0#blake3=HEX"
executable = true

[build]
script = """
$tool build
"""
shell = ["$busybox", "sh"]
timeout = 600
max-silent = 30

[env]
GREETING = "Hello"

[[health]]
name = "selftest"
command = ["bin/hello", "--selftest"]

[[health]]
name = "net"
command = ["bin/hello", "--ping"]
timeout = 3
retries = 2
interval = 5
required = false
when = "pre"

[activation]
script = "echo hi"
"#;

fn parse(path: &str, text: &str) -> Result<Recipe, RecipeError> {
    Recipe::parse(Path::new(path), text)
}

/// The recipe at `pkgs/hello/1.0.0.toml` with `from` replaced by `to`; the message it fails with.
fn error_with(from: &str, to: &str) -> String {
    let text = FULL.replace("HEX", HEX);
    assert!(text.contains(from), "{from:?} not in the recipe");
    parse("pkgs/hello/1.0.0.toml", &text.replacen(from, to, 1))
        .expect_err("must be rejected")
        .to_string()
}

#[test]
fn parses_every_field() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("pkgs/hello/1.0.0.toml");
    fs_err::create_dir_all(file.parent().expect("parent")).expect("mkdir");
    fs_err::write(&file, FULL.replace("HEX", HEX)).expect("write");
    let recipe = Recipe::load(&file).expect("valid");
    assert_eq!(recipe.name, "hello");
    assert_eq!(recipe.version, semver::Version::new(1, 0, 0));
    assert_eq!(recipe.store_name(), "hello-1.0.0");
    assert_eq!(recipe.description.as_deref(), Some("says hello"));
    // Cargo semantics: a bare requirement is a caret requirement.
    let busybox = &recipe.dependencies["busybox"];
    assert!(busybox.matches(&"1.36.0".parse().expect("v")));
    assert!(!busybox.matches(&"2.0.0".parse().expect("v")));
    assert!(recipe.dependencies["lib-x"].matches(&"0.3.1".parse().expect("v")));
    assert_eq!(
        recipe.sources["src"],
        SourceSpec {
            location: SourceLocation::Path(tmp.path().join("pkgs/hello/src/hello.c")),
            declared: "src/hello.c".into(),
            pin: None,
            executable: false,
        }
    );
    let tool = &recipe.sources["tool"];
    assert_eq!(
        tool.location,
        SourceLocation::Url("http://127.0.0.1:8000/tool".into())
    );
    assert!(tool.executable);
    let pin = tool.pin.as_ref().expect("pinned");
    assert_eq!(pin.store_name(), "tool-2.0");
    assert_eq!(pin.hash.to_hex(), HEX);
    assert_eq!(recipe.build.script, "$tool build\n");
    assert_eq!(recipe.build.shell, ["$busybox", "sh"]);
    assert_eq!(
        (recipe.build.timeout, recipe.build.max_silent),
        (Some(600), Some(30))
    );
    assert_eq!(recipe.env["GREETING"], "Hello");
    assert_eq!(
        recipe.health[0],
        HealthCheck {
            name: "selftest".into(),
            command: vec!["bin/hello".into(), "--selftest".into()],
            timeout: 10,
            retries: 0,
            interval: 1,
            required: true,
            when: CheckTime::Post,
        }
    );
    assert_eq!(
        (
            recipe.health[1].timeout,
            recipe.health[1].retries,
            recipe.health[1].interval
        ),
        (3, 2, 5)
    );
    assert!(!recipe.health[1].required);
    assert_eq!(recipe.health[1].when, CheckTime::Pre);
    assert_eq!(
        recipe.activation,
        Some(Activation {
            script: "echo hi".into()
        })
    );
}

#[test]
fn minimal_recipe_defaults() {
    let recipe = parse(
        "/c/pkgs/a/0.1.0.toml",
        "name = \"a\"\nversion = \"0.1.0\"\n[build]\nscript = \"true\"\n",
    )
    .expect("valid");
    assert_eq!(recipe.build.shell, ["sh"]);
    assert!(recipe.dependencies.is_empty() && recipe.sources.is_empty());
    assert!(recipe.health.is_empty() && recipe.activation.is_none());
}

#[test]
fn bad_requirement_points_at_file_line_and_key() {
    let text = "name = \"hello\"\nversion = \"1.0.0\"\n\n[build]\nscript = \"x\"\n\n[dependencies]\nbusybox = \"^x\"\n";
    let err = parse("pkgs/hello/1.0.0.toml", text).expect_err("bad req");
    assert_eq!(
        err.to_string(),
        "pkgs/hello/1.0.0.toml:8:11: key `dependencies.busybox`: \"^x\" is not a semver requirement (expected e.g. \"^1.2\" or \">=1.2.5, <2\")"
    );
    let pos = err.pos().expect("positioned");
    assert_eq!((pos.line, pos.column), (Some(8), Some(11)));
}

#[test]
fn syntax_error_has_line_and_column() {
    let err = error_with("busybox = \"1.35\"", "busybox = =");
    assert!(err.starts_with("pkgs/hello/1.0.0.toml:6:11:"), "{err}");
    assert!(err.contains("invalid string"), "{err}");
}

#[test]
fn wrong_type_names_the_key() {
    let err = error_with("timeout = 600", "timeout = \"long\"");
    assert!(
        err.starts_with("pkgs/hello/1.0.0.toml:22:11: key `build.timeout`:"),
        "{err}"
    );
    assert!(
        err.contains("invalid type: string \"long\", expected u64"),
        "{err}"
    );
    let err = error_with("GREETING = \"Hello\"", "GREETING = 1");
    assert!(err.contains(":26:12: key `env.GREETING`"), "{err}");
    let err = error_with("retries = 2", "retries = \"2\"");
    assert!(err.contains("key `health[1].retries`"), "{err}");
}

#[test]
fn missing_field_names_the_field_and_file() {
    let err = error_with("version = \"1.0.0\"\n", "");
    assert!(err.starts_with("pkgs/hello/1.0.0.toml:"), "{err}");
    assert!(err.contains("missing field `version`"), "{err}");
    let err = error_with("script = \"\"\"\n$tool build\n\"\"\"\n", "");
    assert!(err.contains("key `build`: missing field `script`"), "{err}");
}

#[test]
fn unknown_keys_are_errors() {
    let err = error_with("max-silent", "max_silent");
    assert!(
        err.contains(":23:1: key `build.max_silent`: unknown field `max_silent`"),
        "{err}"
    );
    let err = error_with("path = \"src/hello.c\"", "paht = \"src/hello.c\"");
    assert!(
        err.contains(":10:1: key `sources.src.paht`: unknown field `paht`"),
        "{err}"
    );
    let err = error_with("description", "descripton");
    assert!(
        err.contains(":3:1: key `descripton`: unknown field"),
        "{err}"
    );
    let err = error_with("interval = 5", "intervall = 5");
    assert!(err.contains("key `health[1].intervall`"), "{err}");
}

#[test]
fn name_and_version_must_match_the_file() {
    let err = error_with("name = \"hello\"", "name = \"hullo\"");
    assert!(
        err.contains(":1:8: key `name`: name \"hullo\" does not match"),
        "{err}"
    );
    let err = error_with("version = \"1.0.0\"", "version = \"1.0.1\"");
    assert!(
        err.contains(":2:11: key `version`: version 1.0.1 does not match the file name 1.0.0.toml"),
        "{err}"
    );
    let err = error_with("version = \"1.0.0\"", "version = \"1.0\"");
    assert!(err.contains("\"1.0\" is not a semver version"), "{err}");
    let err = parse(
        "pkgs/he llo/1.0.0.toml",
        "name = \"he llo\"\nversion = \"1.0.0\"\n[build]\nscript = \"\"\n",
    )
    .expect_err("bad name")
    .to_string();
    assert!(
        err.contains("key `name`: store name 'he llo' is invalid"),
        "{err}"
    );
}

#[test]
fn dependency_checks() {
    let err = error_with("lib-x = ", "\"lib x\" = ");
    assert!(err.contains("key `dependencies.\"lib x\"`"), "{err}");
    let err = error_with("lib-x = ", "lib_x = \"1\"\nlib-x = ");
    assert!(err.contains("would both be known as $lib_x"), "{err}");
    assert_eq!(dependency_variable("lib-x"), "lib_x");
}

#[test]
fn source_checks() {
    let err = error_with("[sources.src]", "[sources.lib_x]");
    assert!(
        err.contains(
            "key `sources.lib_x`: source lib_x has the same variable name as dependency lib-x"
        ),
        "{err}"
    );
    let err = error_with("[sources.src]", "[sources.2src]");
    assert!(
        err.contains("key `sources.2src`: a source name must be an identifier"),
        "{err}"
    );
    let err = error_with(
        "path = \"src/hello.c\"",
        "path = \"a\"\nurl = \"http://x/y\"",
    );
    assert!(
        err.contains(":9:1: key `sources.src`: a source needs exactly one of `path` or `url`"),
        "{err}"
    );
    let err = error_with(
        "url = \"http://127.0.0.1:8000/tool\"",
        "url = \"https://example.org/x\"",
    );
    assert!(err.contains("key `sources.tool.url`"), "{err}");
    let err = error_with("pin = \"tool@2.0", "pin = \"tool-2.0");
    assert!(
        err.contains(":14:7: key `sources.tool.pin`: \"tool-2.0#blake3="),
        "{err}"
    );
    let err = error_with(
        "path = \"src/hello.c\"",
        "path = \"src/hello.c\"\nexecutable = true",
    );
    assert!(err.contains("key `sources.src.executable`"), "{err}");
}

#[test]
fn build_and_env_checks() {
    let err = error_with(
        "shell = [\"$busybox\", \"sh\"]",
        "shell = [\"$bosybox\", \"sh\"]",
    );
    assert!(err.contains(":21:10: key `build.shell`: $bosybox names no source or dependency (known: src, tool, busybox, lib_x)"), "{err}");
    let err = error_with("shell = [\"$busybox\", \"sh\"]", "shell = []");
    assert!(err.contains("the shell command is empty"), "{err}");
    let err = error_with("timeout = 600", "timeout = 0");
    assert!(
        err.contains("key `build.timeout`: must be at least 1"),
        "{err}"
    );
    for (key, why) in [
        ("PATH", "set by the builder"),
        ("out", "set by the builder"),
        ("src", "variable of source src"),
        ("lib_x", "variable of dependency lib-x"),
        ("\"A-B\"", "must be an identifier"),
    ] {
        let err = error_with("GREETING = ", &format!("{key} = "));
        assert!(err.contains(":26:1: key `env."), "{err}");
        assert!(err.contains(why), "{key}: {err}");
    }
}

#[test]
fn health_checks() {
    let err = error_with("name = \"net\"", "name = \"selftest\"");
    assert!(
        err.contains("key `health[1].name`: a health check named \"selftest\" already exists"),
        "{err}"
    );
    let err = error_with("command = [\"bin/hello\", \"--ping\"]", "command = []");
    assert!(
        err.contains("key `health[1].command`: the command is empty"),
        "{err}"
    );
    let err = error_with("command = [\"bin/hello\", \"--ping\"]\n", "");
    assert!(
        err.contains("key `health[1]`: missing field `command`"),
        "{err}"
    );
}

#[test]
fn pins_round_trip_and_reject_junk() {
    let text = format!("busybox@1.35.0#blake3={HEX}");
    let pin: Pin = text.parse().expect("valid");
    assert_eq!(pin.to_string(), text);
    assert_eq!(pin.store_name(), "busybox-1.35.0");
    assert_eq!(
        serde_json::to_string(&pin).expect("json"),
        format!("\"{text}\"")
    );
    for bad in [
        format!("busybox1.35.0#blake3={HEX}"),
        format!("busybox@1.35.0#sha256={HEX}"),
        format!("busybox@1.35.0#blake3={}", &HEX[1..]),
        format!("busybox@1.35.0#blake3={}", HEX.to_uppercase()),
        format!("busybox@#blake3={HEX}"),
        format!("bad name@1#blake3={HEX}"),
        "busybox@1.35.0".to_owned(),
    ] {
        assert!(bad.parse::<Pin>().is_err(), "{bad} accepted");
    }
}

#[test]
fn not_utf8_and_missing_file() {
    let err = Recipe::parse_bytes(Path::new("pkgs/a/1.0.0.toml"), b"name = \"\xff\"")
        .expect_err("not utf-8")
        .to_string();
    assert!(
        err.starts_with("pkgs/a/1.0.0.toml") && err.contains("not UTF-8"),
        "{err}"
    );
    let err = Recipe::load(Path::new("/nonexistent/pkgs/a/1.0.0.toml")).expect_err("missing");
    assert!(
        err.to_string().contains("/nonexistent/pkgs/a/1.0.0.toml"),
        "{err}"
    );
}
