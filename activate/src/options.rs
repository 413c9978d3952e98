//! How an activation is to be done: its strategy, health window and limits.

use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What an activation changes (DESIGN.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Active now, and the default from now on.
    Switch,
    /// The default from the next boot (or `activate --recover`) on; nothing changes now.
    Boot,
    /// Active now; the previous generation stays the default until `activate --commit`.
    Test,
    /// Only say what would change.
    DryActivate,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Switch => "switch",
            Strategy::Boot => "boot",
            Strategy::Test => "test",
            Strategy::DryActivate => "dry-activate",
        }
    }
}

impl FromStr for Strategy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "switch" => Ok(Strategy::Switch),
            "boot" => Ok(Strategy::Boot),
            "test" => Ok(Strategy::Test),
            "dry-activate" => Ok(Strategy::DryActivate),
            _ => Err(format!(
                "'{text}' is not a strategy: use switch, boot, test or dry-activate"
            )),
        }
    }
}

/// Journalled with the activation, so a detached worker or a recovery knows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options {
    pub strategy: Strategy,
    /// How long the health checks must stay green after the switch.
    pub window_ms: u64,
    /// Hash every file of the closure instead of checking sizes and metadata.
    pub verify_contents: bool,
    /// How long one activation script may run.
    pub script_timeout_ms: u64,
}

/// The window when none is given: long enough to catch a service that dies right after it
/// starts, short enough not to be noticed on a desktop.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(3);
pub const DEFAULT_SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

impl Options {
    pub fn new(strategy: Strategy) -> Self {
        Self {
            strategy,
            window_ms: DEFAULT_WINDOW.as_millis() as u64,
            verify_contents: false,
            script_timeout_ms: DEFAULT_SCRIPT_TIMEOUT.as_millis() as u64,
        }
    }

    pub fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms)
    }

    pub fn script_timeout(&self) -> Duration {
        Duration::from_millis(self.script_timeout_ms)
    }
}

/// Parses `0`, `500ms`, `30s`, `5m`, `2h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let scale = match unit {
        "" | "s" => 1000.0,
        "ms" => 1.0,
        "m" | "min" => 60_000.0,
        "h" => 3_600_000.0,
        _ => f64::NAN,
    };
    match number.parse::<f64>() {
        Ok(n) if scale.is_finite() && n >= 0.0 => Ok(Duration::from_millis((n * scale) as u64)),
        _ => Err(format!(
            "'{text}' is not a duration: use e.g. 500ms, 30s, 5m or 2h"
        )),
    }
}

/// `1.2 s`, `350 ms`, `5 m 0 s`: for people.
pub fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{} m {} s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 years").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn strategies_round_trip() {
        for s in [
            Strategy::Switch,
            Strategy::Boot,
            Strategy::Test,
            Strategy::DryActivate,
        ] {
            assert_eq!(s.as_str().parse::<Strategy>(), Ok(s));
        }
        assert!("reboot".parse::<Strategy>().is_err());
    }
}
