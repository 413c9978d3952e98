//! Distribution settings, Nix-style: a TOML file (kebab-case keys) then `--option NAME=VALUE`
//! overrides, which win. Every value is checked here, so a typo fails at startup with the
//! file, line and setting named, not halfway through a download.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use crate::error::{CacheError, Result};
use crate::keys::{SecretKey, TrustedKeys};

const SYSTEM_FILE: &str = "/etc/noodle/noodle.toml";

/// Every setting's name, as written in the file and in `--option`.
pub const SETTINGS: &[&str] = &[
    "substituters",
    "trusted-public-keys",
    "secret-key-files",
    "require-sigs",
    "connect-timeout",
    "download-jobs",
];

const MAX_CONNECT_TIMEOUT_SECS: i64 = 3600;
const MAX_DOWNLOAD_JOBS: i64 = 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Cache URLs (`file://`, `http://`, `https://`), in order of preference.
    pub substituters: Vec<String>,
    /// `name:base64` public keys whose signatures let a path in.
    pub trusted_public_keys: Vec<String>,
    pub secret_key_files: Vec<PathBuf>,
    pub require_sigs: bool,
    pub connect_timeout: Duration,
    pub download_jobs: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            substituters: Vec::new(),
            trusted_public_keys: Vec::new(),
            secret_key_files: Vec::new(),
            require_sigs: true,
            connect_timeout: Duration::from_secs(5),
            download_jobs: 8,
        }
    }
}

/// A setting's value as the file (typed) or an override (text) gives it.
enum Raw<'a> {
    Toml(&'a toml::Value),
    Text(&'a str),
}

impl Raw<'_> {
    fn list(&self, name: &str) -> std::result::Result<Vec<String>, String> {
        match self {
            Raw::Text(text) => Ok(text.split_whitespace().map(str::to_owned).collect()),
            Raw::Toml(toml::Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| format!("expected an array of strings, e.g. {name} = [\"...\"]")),
            Raw::Toml(other) => Err(format!(
                "expected an array of strings, e.g. {name} = [\"...\"], got {}",
                other.type_str()
            )),
        }
    }

    fn boolean(&self) -> std::result::Result<bool, String> {
        match self {
            Raw::Text("true") | Raw::Toml(toml::Value::Boolean(true)) => Ok(true),
            Raw::Text("false") | Raw::Toml(toml::Value::Boolean(false)) => Ok(false),
            Raw::Text(text) => Err(format!("expected true or false, got {text:?}")),
            Raw::Toml(other) => Err(format!("expected true or false, got {}", other.type_str())),
        }
    }

    fn integer(&self, min: i64, max: i64) -> std::result::Result<i64, String> {
        let n = match self {
            Raw::Toml(toml::Value::Integer(n)) => *n,
            Raw::Text(text) => text
                .parse()
                .map_err(|_| format!("expected a whole number, got {text:?}"))?,
            Raw::Toml(other) => {
                return Err(format!("expected a whole number, got {}", other.type_str()))
            }
        };
        if (min..=max).contains(&n) {
            Ok(n)
        } else {
            Err(format!("{n} is out of range ({min} to {max})"))
        }
    }
}

fn check_substituter(url: &str) -> std::result::Result<(), String> {
    let known = ["file://", "http://", "https://"];
    let rest = known
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme))
        .ok_or_else(|| format!("{url:?} is not a file://, http:// or https:// URL"))?;
    if rest.is_empty() {
        return Err(format!("{url:?} has nothing after the scheme"));
    }
    Ok(())
}

impl Settings {
    /// The config file for a store: `/etc/noodle/noodle.toml` when `system` (the store at /),
    /// else `$XDG_CONFIG_HOME/noodle/noodle.toml` (~/.config/...). `NOODLE_CONFIG=FILE`
    /// overrides both.
    pub fn default_file(system: bool) -> PathBuf {
        default_file_from(system, |name| std::env::var_os(name))
    }

    /// Reads `file` (absent = defaults), then applies `overrides` ("NAME=VALUE"; lists
    /// space-separated).
    pub fn load(file: &Path, overrides: &[String]) -> Result<Self> {
        let mut settings = Self::default();
        match fs_err::read_to_string(file) {
            Ok(text) => settings.apply_file(file, &text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        for entry in overrides {
            let origin = || format!("--option {entry}");
            let (name, value) = entry.split_once('=').ok_or_else(|| CacheError::Config {
                origin: origin(),
                why: "expected NAME=VALUE, e.g. --option require-sigs=true".to_owned(),
            })?;
            let name = name.trim();
            settings
                .apply(name, Raw::Text(value.trim()), None)
                .map_err(|why| CacheError::Config {
                    origin: origin(),
                    why,
                })?;
        }
        Ok(settings)
    }

    fn apply_file(&mut self, file: &Path, text: &str) -> Result<()> {
        let error = |line: Option<usize>, why: String| CacheError::Config {
            origin: match line {
                Some(line) => format!("file '{}' line {line}", file.display()),
                None => format!("file '{}'", file.display()),
            },
            why,
        };
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let table: BTreeMap<String, Spanned<toml::Value>> = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|span| line_of(span.start));
            // toml's messages span lines; ours are one line each.
            error(
                line,
                format!("invalid TOML: {}", e.message().trim().replace('\n', "; ")),
            )
        })?;
        // Relative key files are meant relative to the file naming them, not to wherever
        // the command happens to run.
        let base = file.parent().unwrap_or(Path::new("/"));
        for (name, value) in &table {
            self.apply(name, Raw::Toml(value.get_ref()), Some(base))
                .map_err(|why| error(Some(line_of(value.span().start)), why))?;
        }
        Ok(())
    }

    /// Sets one setting; the error is one line naming it.
    fn apply(
        &mut self,
        name: &str,
        raw: Raw<'_>,
        base: Option<&Path>,
    ) -> std::result::Result<(), String> {
        let named = |why: String| format!("{name}: {why}");
        match name {
            "substituters" => {
                let urls = raw.list(name).map_err(named)?;
                for url in &urls {
                    check_substituter(url).map_err(named)?;
                }
                self.substituters = urls;
            }
            "trusted-public-keys" => {
                let keys = raw.list(name).map_err(named)?;
                TrustedKeys::parse(&keys).map_err(|e| named(e.to_string()))?;
                self.trusted_public_keys = keys;
            }
            "secret-key-files" => {
                let files = raw.list(name).map_err(named)?;
                self.secret_key_files = files
                    .into_iter()
                    .map(|f| match base {
                        Some(base) => base.join(f),
                        None => PathBuf::from(f),
                    })
                    .collect();
            }
            "require-sigs" => self.require_sigs = raw.boolean().map_err(named)?,
            "connect-timeout" => {
                let secs = raw.integer(1, MAX_CONNECT_TIMEOUT_SECS).map_err(named)?;
                self.connect_timeout = Duration::from_secs(secs.unsigned_abs());
            }
            "download-jobs" => {
                let jobs = raw.integer(1, MAX_DOWNLOAD_JOBS).map_err(named)?;
                self.download_jobs = usize::try_from(jobs).map_err(|e| named(e.to_string()))?;
            }
            _ => {
                return Err(format!(
                    "unknown setting '{name}'; the settings are: {}",
                    SETTINGS.join(", ")
                ))
            }
        }
        Ok(())
    }

    /// Loads every file in `secret_key_files`.
    pub fn secret_keys(&self) -> Result<Vec<SecretKey>> {
        self.secret_key_files
            .iter()
            .map(|file| SecretKey::load(file))
            .collect()
    }

    pub fn trusted_keys(&self) -> Result<TrustedKeys> {
        TrustedKeys::parse(&self.trusted_public_keys)
    }
}

fn default_file_from(system: bool, var: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    if let Some(file) = var("NOODLE_CONFIG").filter(|f| !f.is_empty()) {
        return PathBuf::from(file);
    }
    if system {
        return PathBuf::from(SYSTEM_FILE);
    }
    // The XDG spec says to ignore a relative XDG_CONFIG_HOME.
    let config_home = var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .or_else(|| {
            var("HOME")
                .map(PathBuf::from)
                .filter(|home| home.is_absolute())
                .map(|home| home.join(".config"))
        });
    match config_home {
        Some(dir) => dir.join("noodle").join("noodle.toml"),
        // No home to look in (a bare service environment): the system file is the only one.
        None => PathBuf::from(SYSTEM_FILE),
    }
}

#[cfg(test)]
mod tests;
