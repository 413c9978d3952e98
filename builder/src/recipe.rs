//! Recipes: `<channel>/pkgs/<name>/<version>.toml` (DESIGN.md §6).
//!
//! Parsing is strict (unknown keys are errors) because a typo in a recipe would otherwise silently
//! change what gets built. Every error names the file, line, column and key, so a user can jump
//! straight to the problem.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use noodle_store::path::validate_name;
use noodle_store::Blake3;
use serde::{Deserialize, Serialize};
use toml::Spanned;

#[cfg(test)]
mod tests;

/// Environment variables the builder sets itself; a recipe overriding them would break the
/// sandbox's guarantees or make the build depend on the host.
pub const RESERVED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "TMP",
    "TEMP",
    "TEMPDIR",
    "SOURCE_DATE_EPOCH",
    "TZ",
    "LC_ALL",
    "out",
    "name",
    "version",
    "NOODLE_BUILD_CORES",
    "TERM",
];

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// fs_err's message already names the file.
    #[error("cannot read recipe: {0}")]
    Io(#[from] std::io::Error),
    #[error("{pos}: {message}")]
    Invalid { pos: FilePos, message: String },
}

impl RecipeError {
    pub fn pos(&self) -> Option<&FilePos> {
        match self {
            Self::Io(_) => None,
            Self::Invalid { pos, .. } => Some(pos),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    pub name: String,
    pub version: semver::Version,
    pub description: Option<String>,
    pub dependencies: BTreeMap<String, semver::VersionReq>,
    pub sources: BTreeMap<String, SourceSpec>,
    pub build: BuildSpec,
    pub env: BTreeMap<String, String>,
    pub health: Vec<HealthCheck>,
    pub activation: Option<Activation>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpec {
    pub location: SourceLocation,
    /// The `path` or `url` exactly as the recipe writes it: what noodle.lock records, so a
    /// channel checked out anywhere gives the same lockfile.
    pub declared: String,
    pub pin: Option<Pin>,
    /// Only ever true for `url` sources.
    pub executable: bool,
}

impl SourceSpec {
    /// The text recorded in `noodle.lock`; a lock pin is only reused while this is unchanged.
    pub fn lock_text(&self) -> String {
        self.declared.clone()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceLocation {
    /// Absolute: resolved against the recipe's directory, not canonicalised (symlinks are kept,
    /// so the lock records what the recipe says, not where the host's links happen to point).
    Path(PathBuf),
    Url(String),
}

impl fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Path(path) => write!(f, "{}", path.display()),
            Self::Url(url) => f.write_str(url),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSpec {
    pub script: String,
    /// `$NAME` elements name a source or dependency variable; the sandbox substitutes them.
    pub shell: Vec<String>,
    pub timeout: Option<u64>,
    pub max_silent: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub name: String,
    /// A relative program is looked up inside the package output.
    pub command: Vec<String>,
    pub timeout: u64,
    pub retries: u32,
    pub interval: u64,
    /// false = "wanted": a failure is reported but does not fail activation.
    pub required: bool,
    /// `pre`: run before the profile switches, and may veto it. Left out when `post` so
    /// plans (and their hashes) of recipes without one stay as they were.
    #[serde(default, skip_serializing_if = "CheckTime::is_post")]
    pub when: CheckTime,
}

/// When a health check runs: before the switch (`pre`, a veto) or after it (`post`, the
/// health window).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckTime {
    Pre,
    #[default]
    Post,
}

impl CheckTime {
    pub fn is_post(&self) -> bool {
        *self == CheckTime::Post
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    pub script: String,
}

/// A fixed-output source: `name@version#blake3=<hex of the NAR's BLAKE3>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pin {
    pub name: String,
    pub version: String,
    pub hash: Blake3,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a pin: {why} (expected name@version#blake3=<64 lowercase hex digits>)")]
pub struct PinError {
    text: String,
    why: &'static str,
}

impl Pin {
    /// The name of the source's store path.
    pub fn store_name(&self) -> String {
        format!("{}-{}", self.name, self.version)
    }
}

impl FromStr for Pin {
    type Err = PinError;

    fn from_str(text: &str) -> Result<Self, PinError> {
        let bad = |why| PinError {
            text: text.to_owned(),
            why,
        };
        let (id, hash) = text.split_once('#').ok_or_else(|| bad("no `#`"))?;
        let (name, version) = id.split_once('@').ok_or_else(|| bad("no `@`"))?;
        let hex = hash
            .strip_prefix("blake3=")
            .ok_or_else(|| bad("the hash must start with `blake3=`"))?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad("the hash is not 64 lowercase hex digits"));
        }
        let hash = Blake3::parse(hex).ok_or_else(|| bad("the hash is not 64 hex digits"))?;
        if validate_name(name).is_err() {
            return Err(bad("the name is not a valid store name"));
        }
        let pin = Pin {
            name: name.to_owned(),
            version: version.to_owned(),
            hash,
        };
        if version.is_empty() || validate_name(&pin.store_name()).is_err() {
            return Err(bad("`name-version` is not a valid store name"));
        }
        Ok(pin)
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}#blake3={}",
            self.name,
            self.version,
            self.hash.to_hex()
        )
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Serialised as its text form, so plans and locks show the same string a recipe author writes.
impl Serialize for Pin {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Pin {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The variable a dependency is known by in `shell` and the build environment.
pub fn dependency_variable(name: &str) -> String {
    name.replace('-', "_")
}

pub(crate) fn is_identifier(text: &str) -> bool {
    let mut bytes = text.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecipe {
    name: Spanned<String>,
    version: Spanned<String>,
    description: Option<String>,
    #[serde(default)]
    dependencies: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    sources: BTreeMap<Spanned<String>, Spanned<RawSource>>,
    build: RawBuild,
    #[serde(default)]
    env: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    health: Vec<RawHealth>,
    activation: Option<RawActivation>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    path: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    pin: Option<Spanned<String>>,
    executable: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuild {
    script: String,
    shell: Option<Spanned<Vec<Spanned<String>>>>,
    timeout: Option<Spanned<u64>>,
    #[serde(rename = "max-silent")]
    max_silent: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    name: Spanned<String>,
    command: Spanned<Vec<String>>,
    timeout: Option<Spanned<u64>>,
    retries: Option<u32>,
    interval: Option<Spanned<u64>>,
    required: Option<bool>,
    when: Option<CheckTime>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawActivation {
    script: String,
}

/// Builds errors that point into one recipe file.
struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    fn err(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> RecipeError {
        RecipeError::Invalid {
            pos: pos_at(self.file, self.text, span.start, Some(key.to_owned())),
            message: message.into(),
        }
    }
}

impl Recipe {
    pub fn load(path: &Path) -> Result<Recipe, RecipeError> {
        let bytes = fs_err::read(path)?;
        Self::parse_bytes(path, &bytes)
    }

    /// Parses a recipe already read from `path` (the resolver hashes the same bytes, so it reads
    /// each file once). `path` names the file in errors, anchors relative source paths and gives
    /// the name and version the recipe must declare.
    pub fn parse_bytes(path: &Path, bytes: &[u8]) -> Result<Recipe, RecipeError> {
        let text = std::str::from_utf8(bytes).map_err(|e| RecipeError::Invalid {
            pos: pos_at(path, "", 0, None),
            message: format!("not UTF-8 (bad byte at offset {})", e.valid_up_to()),
        })?;
        Self::parse(path, text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Recipe, RecipeError> {
        let raw: RawRecipe = toml::from_str(text).map_err(|e| RecipeError::Invalid {
            pos: pos_of_toml_error(path, text, &e),
            message: toml_message(&e),
        })?;
        let abs = std::path::absolute(path)?;
        validate(&Ctx { file: path, text }, &abs, raw)
    }

    pub fn store_name(&self) -> String {
        format!("{}-{}", self.name, self.version)
    }
}

fn file_part(part: Option<&std::ffi::OsStr>) -> String {
    part.map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn validate(cx: &Ctx<'_>, abs: &Path, raw: RawRecipe) -> Result<Recipe, RecipeError> {
    let dir = abs.parent().unwrap_or(Path::new("/"));
    let dir_name = file_part(dir.file_name());
    let stem = file_part(abs.file_stem());

    let name = raw.name.get_ref();
    if let Err(e) = validate_name(name) {
        return Err(cx.err(raw.name.span(), "name", e.to_string()));
    }
    if *name != dir_name {
        return Err(cx.err(
            raw.name.span(),
            "name",
            format!("name {name:?} does not match the recipe's directory {dir_name:?} (a recipe for {name} belongs in pkgs/{name}/)"),
        ));
    }
    let version: semver::Version = raw.version.get_ref().parse().map_err(|_| {
        cx.err(
            raw.version.span(),
            "version",
            format!(
                "{:?} is not a semver version (expected e.g. \"1.2.3\")",
                raw.version.get_ref()
            ),
        )
    })?;
    if *raw.version.get_ref() != stem {
        return Err(cx.err(
            raw.version.span(),
            "version",
            format!("version {version} does not match the file name {stem}.toml"),
        ));
    }
    if let Err(e) = validate_name(&format!("{name}-{version}")) {
        return Err(cx.err(raw.version.span(), "version", e.to_string()));
    }

    let mut dependencies = BTreeMap::new();
    // variable -> dependency name, to catch `foo-bar` vs `foo_bar` clashing.
    let mut variables: BTreeMap<String, String> = BTreeMap::new();
    for (dep, req) in &raw.dependencies {
        let key = format!("dependencies.{}", key_text(dep.get_ref()));
        if let Err(e) = validate_name(dep.get_ref()) {
            return Err(cx.err(dep.span(), &key, e.to_string()));
        }
        let var = dependency_variable(dep.get_ref());
        if let Some(other) = variables.insert(var.clone(), dep.get_ref().clone()) {
            return Err(cx.err(
                dep.span(),
                &key,
                format!(
                    "dependencies {other} and {dep} would both be known as ${var}",
                    dep = dep.get_ref()
                ),
            ));
        }
        let parsed: semver::VersionReq = req.get_ref().parse().map_err(|_| {
            cx.err(
                req.span(),
                &key,
                format!(
                    "{:?} is not a semver requirement (expected e.g. \"^1.2\" or \">=1.2.5, <2\")",
                    req.get_ref()
                ),
            )
        })?;
        dependencies.insert(dep.get_ref().clone(), parsed);
    }

    let mut sources = BTreeMap::new();
    for (key, source) in raw.sources {
        let key_path = format!("sources.{}", key_text(key.get_ref()));
        if !is_identifier(key.get_ref()) {
            return Err(cx.err(
                key.span(),
                &key_path,
                "a source name must be an identifier ([A-Za-z_][A-Za-z0-9_]*)",
            ));
        }
        if let Some(dep) = variables.get(key.get_ref()) {
            return Err(cx.err(
                key.span(),
                &key_path,
                format!("source {key} has the same variable name as dependency {dep}; rename the source", key = key.get_ref()),
            ));
        }
        let spec = validate_source(cx, dir, &key_path, source)?;
        sources.insert(key.into_inner(), spec);
    }

    let build = validate_build(cx, raw.build, &sources, &variables)?;

    let mut env = BTreeMap::new();
    for (key, value) in raw.env {
        let key_path = format!("env.{}", key_text(key.get_ref()));
        let k = key.get_ref();
        let problem = if !is_identifier(k) {
            Some(
                "an environment variable name must be an identifier ([A-Za-z_][A-Za-z0-9_]*)"
                    .to_owned(),
            )
        } else if RESERVED_ENV.contains(&k.as_str()) {
            Some(format!(
                "{k} is set by the builder and cannot be overridden"
            ))
        } else if sources.contains_key(k) {
            Some(format!("{k} is already the variable of source {k}"))
        } else {
            variables
                .get(k)
                .map(|dep| format!("{k} is already the variable of dependency {dep}"))
        };
        if let Some(problem) = problem {
            return Err(cx.err(key.span(), &key_path, problem));
        }
        env.insert(key.into_inner(), value.into_inner());
    }

    let health = validate_health(cx, raw.health)?;

    Ok(Recipe {
        name: name.clone(),
        version,
        description: raw.description,
        dependencies,
        sources,
        build,
        env,
        health,
        activation: raw.activation.map(|a| Activation { script: a.script }),
    })
}

fn validate_source(
    cx: &Ctx<'_>,
    dir: &Path,
    key_path: &str,
    source: Spanned<RawSource>,
) -> Result<SourceSpec, RecipeError> {
    let span = source.span();
    let raw = source.into_inner();
    let declared = raw
        .path
        .as_ref()
        .or(raw.url.as_ref())
        .map(|text| text.get_ref().clone())
        .unwrap_or_default();
    let location = match (raw.path, raw.url) {
        (Some(path), None) => {
            if path.get_ref().is_empty() {
                return Err(cx.err(path.span(), &format!("{key_path}.path"), "empty path"));
            }
            if let Some(exe) = &raw.executable {
                return Err(cx.err(
                    exe.span(),
                    &format!("{key_path}.executable"),
                    "`executable` only applies to `url` sources (a `path` source keeps its own permissions)",
                ));
            }
            // `absolute` only tidies `.` and `//`; symlinks and `..` are kept as written.
            SourceLocation::Path(std::path::absolute(dir.join(path.get_ref()))?)
        }
        (None, Some(url)) => {
            let text = url.get_ref();
            let ok = ["http://", "file://"]
                .iter()
                .any(|scheme| text.len() > scheme.len() && text.starts_with(scheme));
            if !ok {
                return Err(cx.err(
                    url.span(),
                    &format!("{key_path}.url"),
                    format!("{text:?} is not a supported URL (only http:// and file:// URLs can be fetched)"),
                ));
            }
            SourceLocation::Url(text.clone())
        }
        (Some(_), Some(_)) | (None, None) => {
            return Err(cx.err(
                span,
                key_path,
                "a source needs exactly one of `path` or `url`",
            ));
        }
    };
    let pin = match raw.pin {
        Some(pin) => Some(
            pin.get_ref()
                .parse::<Pin>()
                .map_err(|e| cx.err(pin.span(), &format!("{key_path}.pin"), e.to_string()))?,
        ),
        None => None,
    };
    Ok(SourceSpec {
        location,
        declared,
        pin,
        executable: raw.executable.is_some_and(|e| e.into_inner()),
    })
}

fn positive(
    cx: &Ctx<'_>,
    value: Option<Spanned<u64>>,
    key: &str,
) -> Result<Option<u64>, RecipeError> {
    match value {
        Some(v) if *v.get_ref() == 0 => Err(cx.err(v.span(), key, "must be at least 1 (seconds)")),
        Some(v) => Ok(Some(v.into_inner())),
        None => Ok(None),
    }
}

fn validate_build(
    cx: &Ctx<'_>,
    raw: RawBuild,
    sources: &BTreeMap<String, SourceSpec>,
    variables: &BTreeMap<String, String>,
) -> Result<BuildSpec, RecipeError> {
    let shell = match raw.shell {
        None => vec!["sh".to_owned()],
        Some(shell) => {
            if shell.get_ref().is_empty() {
                return Err(cx.err(shell.span(), "build.shell", "the shell command is empty"));
            }
            let mut words = Vec::new();
            for word in shell.into_inner() {
                let text = word.get_ref();
                let unknown = text
                    .strip_prefix('$')
                    .filter(|var| !sources.contains_key(*var) && !variables.contains_key(*var));
                if text.is_empty() || unknown.is_some() {
                    let known: Vec<&str> = sources
                        .keys()
                        .chain(variables.keys())
                        .map(String::as_str)
                        .collect();
                    let message = if text.is_empty() {
                        "empty shell word".to_owned()
                    } else {
                        format!(
                            "{text} names no source or dependency (known: {})",
                            if known.is_empty() {
                                "none".to_owned()
                            } else {
                                known.join(", ")
                            }
                        )
                    };
                    return Err(cx.err(word.span(), "build.shell", message));
                }
                words.push(word.into_inner());
            }
            words
        }
    };
    Ok(BuildSpec {
        script: raw.script,
        shell,
        timeout: positive(cx, raw.timeout, "build.timeout")?,
        max_silent: positive(cx, raw.max_silent, "build.max-silent")?,
    })
}

fn validate_health(cx: &Ctx<'_>, raw: Vec<RawHealth>) -> Result<Vec<HealthCheck>, RecipeError> {
    let mut names = BTreeSet::new();
    let mut checks = Vec::new();
    for (i, check) in raw.into_iter().enumerate() {
        let key = format!("health[{i}]");
        let name = check.name.get_ref();
        if name.is_empty() {
            return Err(cx.err(check.name.span(), &format!("{key}.name"), "empty name"));
        }
        if !names.insert(name.clone()) {
            return Err(cx.err(
                check.name.span(),
                &format!("{key}.name"),
                format!("a health check named {name:?} already exists in this recipe"),
            ));
        }
        if check.command.get_ref().first().is_none_or(String::is_empty) {
            return Err(cx.err(
                check.command.span(),
                &format!("{key}.command"),
                "the command is empty (expected e.g. [\"bin/tool\", \"--selftest\"])",
            ));
        }
        checks.push(HealthCheck {
            name: name.clone(),
            command: check.command.into_inner(),
            timeout: positive(cx, check.timeout, &format!("{key}.timeout"))?.unwrap_or(10),
            retries: check.retries.unwrap_or(0),
            interval: check.interval.map(Spanned::into_inner).unwrap_or(1),
            required: check.required.unwrap_or(true),
            when: check.when.unwrap_or_default(),
        });
    }
    Ok(checks)
}

/// Where in a TOML file something went wrong: `file:line:column: key `a.b``.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePos {
    pub file: PathBuf,
    /// 1-based; `None` when the problem has no position (e.g. the file is not UTF-8).
    pub line: Option<usize>,
    /// 1-based, in characters.
    pub column: Option<usize>,
    /// Dotted TOML key path, e.g. `dependencies.busybox` or `health[0].command`.
    pub key: Option<String>,
}

impl fmt::Display for FilePos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, ":{line}:{column}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        Ok(())
    }
}

pub(crate) fn pos_at(file: &Path, text: &str, offset: usize, key: Option<String>) -> FilePos {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    FilePos {
        file: file.to_owned(),
        line: Some(before.matches('\n').count() + 1),
        column: Some(before[line_start..].chars().count() + 1),
        key,
    }
}

/// toml's own messages can span lines; errors here are one line each.
pub(crate) fn toml_message(error: &toml::de::Error) -> String {
    error.message().trim().replace('\n', "; ")
}

pub(crate) fn pos_of_toml_error(file: &Path, text: &str, error: &toml::de::Error) -> FilePos {
    match error.span() {
        Some(span) => {
            let key = key_at(text, &span);
            pos_at(file, text, span.start, key)
        }
        None => FilePos {
            file: file.to_owned(),
            line: None,
            column: None,
            key: None,
        },
    }
}

/// A key as written in a dotted TOML path.
pub(crate) fn key_text(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

/// serde's errors carry a span but not the key they happened at: walk a span-preserving parse
/// of the same text (only on the error path) for the deepest key whose key or value holds it.
fn key_at(text: &str, span: &Range<usize>) -> Option<String> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut path = Vec::new();
    find_in_table(entries(doc.as_table()), span, &mut path).then(|| path.concat())
}

fn entries(table: &toml_edit::Table) -> impl Iterator<Item = (&toml_edit::Key, &toml_edit::Item)> {
    table.iter().filter_map(|(k, _)| table.get_key_value(k))
}

fn within(outer: Option<Range<usize>>, span: &Range<usize>) -> bool {
    outer.is_some_and(|outer| outer.start <= span.start && span.end <= outer.end)
}

/// Depth-first, not trusting container spans: toml_edit gives implicit tables (`sources` in
/// `[sources.src]`) no span, and a header table's span is only its header line.
fn find_in_table<'a>(
    entries: impl Iterator<Item = (&'a toml_edit::Key, &'a toml_edit::Item)>,
    span: &Range<usize>,
    path: &mut Vec<String>,
) -> bool {
    for (key, item) in entries {
        let sep = if path.is_empty() { "" } else { "." };
        path.push(format!("{sep}{}", key_text(key.get())));
        if find_in_item(item, span, path) || within(key.span(), span) || within(item.span(), span) {
            return true;
        }
        path.pop();
    }
    false
}

fn find_in_item(item: &toml_edit::Item, span: &Range<usize>, path: &mut Vec<String>) -> bool {
    match item {
        toml_edit::Item::Table(table) => find_in_table(entries(table), span, path),
        toml_edit::Item::ArrayOfTables(tables) => tables.iter().enumerate().any(|(i, table)| {
            path.push(format!("[{i}]"));
            let found = find_in_table(entries(table), span, path) || within(table.span(), span);
            if !found {
                path.pop();
            }
            found
        }),
        toml_edit::Item::Value(value) => find_in_value(value, span, path),
        toml_edit::Item::None => false,
    }
}

fn find_in_value(value: &toml_edit::Value, span: &Range<usize>, path: &mut Vec<String>) -> bool {
    match value {
        toml_edit::Value::InlineTable(table) => {
            let entries = table.iter().filter_map(|(k, _)| table.get_key_value(k));
            find_in_table(entries, span, path)
        }
        toml_edit::Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
            path.push(format!("[{i}]"));
            let found = find_in_value(item, span, path) || within(item.span(), span);
            if !found {
                path.pop();
            }
            found
        }),
        _ => false,
    }
}
