//! Printing: human text or JSON on stdout, messages and progress bars on stderr, exit codes.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use noodle_store::{Progress, StoreError};

use crate::cli::Cli;

pub const EXIT_PROBLEMS: u8 = 3;
pub const EXIT_BUSY: u8 = 4;
pub const EXIT_REFUSED: u8 = 5;
pub const EXIT_NOT_REPRODUCIBLE: u8 = 6;
pub const EXIT_REVERTED: u8 = 7;
pub const EXIT_FAILED: u8 = 8;
pub const EXIT_IN_FLIGHT: u8 = 9;
pub const EXIT_RED: u8 = 10;
pub const EXIT_UNTRUSTED: u8 = 11;

pub fn exit_code_of(error: &anyhow::Error) -> ExitCode {
    use noodle_activate::ActivateError;
    use noodle_cache::CacheError;
    if let Some(error) = error.downcast_ref::<CacheError>() {
        return match error {
            CacheError::Untrusted { .. }
            | CacheError::Mismatch { .. }
            | CacheError::NarInfo { .. }
            | CacheError::Corrupt { .. }
            | CacheError::Bundle { .. }
            | CacheError::Store(StoreError::ImportMismatch { .. }) => {
                ExitCode::from(EXIT_UNTRUSTED)
            }
            CacheError::Store(e) => store_exit_code(Some(e)),
            _ => ExitCode::FAILURE,
        };
    }
    use noodle_profiles::ProfileError;
    let activate_error = error.downcast_ref::<ActivateError>();
    let profile_error = match activate_error {
        Some(ActivateError::Busy { .. }) => return ExitCode::from(EXIT_IN_FLIGHT),
        Some(e) if e.is_refusal() => return ExitCode::from(EXIT_REFUSED),
        Some(ActivateError::Profile(e)) => Some(e),
        Some(ActivateError::Store(e)) => return store_exit_code(Some(e)),
        Some(_) => None,
        None => error.downcast_ref::<ProfileError>(),
    };
    let store_error = match profile_error {
        Some(e) if e.is_refusal() => return ExitCode::from(EXIT_REFUSED),
        Some(ProfileError::Store(e)) => Some(e),
        _ => error.downcast_ref::<StoreError>(),
    };
    store_exit_code(store_error)
}

fn store_exit_code(error: Option<&StoreError>) -> ExitCode {
    match error {
        Some(StoreError::DbBusy { .. }) => ExitCode::from(EXIT_BUSY),
        Some(StoreError::InUse { .. }) => ExitCode::from(EXIT_REFUSED),
        _ => ExitCode::FAILURE,
    }
}

pub fn print_error(cli: &Cli, error: &anyhow::Error) {
    let message = error_message(error);
    if cli.json {
        let json = serde_json::json!({ "error": message });
        eprintln!("{json}");
    } else {
        eprintln!("noodle: error: {message}");
    }
}

/// The error and its causes joined by ": ", leaving out a cause whose text the message already
/// holds (most errors quote their source, which `{:#}` would print a second time).
fn error_message(error: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

/// Writes a value as pretty JSON on stdout.
pub fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// A line for the user on stderr, unless --quiet.
pub fn note(cli: &Cli, text: impl std::fmt::Display) {
    if !cli.quiet {
        eprintln!("{text}");
    }
}

pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` from seconds since the epoch.
pub fn utc_time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Progress bars on stderr when it is a terminal (and not --quiet or --json).
pub struct Bars {
    enabled: bool,
    verbose: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl Bars {
    pub fn new(cli: &Cli) -> Self {
        Self {
            enabled: !cli.quiet && std::io::stderr().is_terminal(),
            verbose: cli.verbose,
            bar: Mutex::new(None),
        }
    }
}

impl Progress for Bars {
    fn phase(&self, name: &str, total: u64) {
        if !self.enabled {
            return;
        }
        let bar = ProgressBar::new(total);
        let style = ProgressStyle::with_template(
            "{msg:>18} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(name.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        if let Ok(mut slot) = self.bar.lock() {
            if let Some(old) = slot.replace(bar) {
                old.finish_and_clear();
            }
        }
    }

    fn advance(&self, units: u64) {
        if let Ok(slot) = self.bar.lock() {
            if let Some(bar) = slot.as_ref() {
                bar.inc(units);
            }
        }
    }

    fn note(&self, message: &str) {
        if self.verbose {
            eprintln!("{message}");
        }
    }

    fn finish(&self) {
        if let Ok(mut slot) = self.bar.lock() {
            if let Some(bar) = slot.take() {
                bar.finish_and_clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_time(1_795_000_000), "2026-11-18 11:06:40 UTC");
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
    }
}
