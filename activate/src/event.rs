//! What an activation reports as it goes: one [`Event`] per state change, check or script run,
//! streamed as JSON lines (`--events FILE`, `--json`) and shown to people by the CLI.

use std::io::Write;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::journal::State;

/// Which kind of command a run was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunKind {
    /// A `when = "pre"` check, before the switch.
    Pre,
    /// A health check in the window (or, on reversion, of the previous generation).
    Check,
    /// An activation script.
    Script,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Pre => "pre",
            RunKind::Check => "check",
            RunKind::Script => "script",
        }
    }
}

impl FromStr for RunKind {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        match text {
            "pre" => Ok(RunKind::Pre),
            "check" => Ok(RunKind::Check),
            "script" => Ok(RunKind::Script),
            _ => Err(()),
        }
    }
}

/// One run of a check or script, as journalled.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub activation: i64,
    /// The generation whose check or script it was.
    pub generation: Option<u64>,
    pub kind: RunKind,
    pub package: String,
    pub name: String,
    /// 0 for the first try of a round, then 1, 2… for retries.
    pub attempt: u32,
    pub required: bool,
    pub started_at: i64,
    pub duration_us: i64,
    pub ok: bool,
    /// The exec outcome (`{"kind":"exited","code":1}`, `{"kind":"timed-out"}`…).
    pub outcome: serde_json::Value,
    /// Bounded: the head and tail of what it printed.
    pub output: String,
    pub output_bytes: u64,
}

impl RunRecord {
    /// `exit code 1`, `timed out`, `could not start: …`.
    pub fn describe(&self) -> String {
        let field = |k: &str| self.outcome.get(k).cloned();
        match self.outcome.get("kind").and_then(|k| k.as_str()) {
            Some("exited") => format!(
                "exit code {}",
                field("code").unwrap_or(serde_json::Value::Null)
            ),
            Some("signalled") => format!(
                "killed by signal {}",
                field("signal").unwrap_or(serde_json::Value::Null)
            ),
            Some("timed-out") => "timed out".to_owned(),
            Some("cancelled") => "stopped (the activation was being reverted)".to_owned(),
            Some("not-started") => format!(
                "could not start: {}",
                field("why")
                    .and_then(|w| w.as_str().map(str::to_owned))
                    .unwrap_or_default()
            ),
            _ => self.outcome.to_string(),
        }
    }

    /// The last few lines of its output, for a one-glance reason.
    pub fn output_tail(&self, lines: usize) -> String {
        let all: Vec<&str> = self.output.trim_end().lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    State {
        id: i64,
        state: State,
        at_us: i64,
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// The profile now points at `generation` (`None`: at nothing).
    Switched {
        id: i64,
        generation: Option<u64>,
        at_us: i64,
    },
    Run(RunRecord),
    Warning {
        id: i64,
        message: String,
    },
    Reverting {
        id: i64,
        reason: String,
        at_us: i64,
    },
    AwaitingCommit {
        id: i64,
        at_us: i64,
    },
}

/// Receives an activation's events as they happen.
pub trait Observer {
    fn event(&mut self, event: &Event);
}

/// Discards everything.
pub struct Quiet;

impl Observer for Quiet {
    fn event(&mut self, _: &Event) {}
}

/// Writes one JSON line per event and flushes it, so a reader of the file sees it at once.
/// Write errors are ignored: a monitor that went away must not stop an activation.
pub struct JsonLines<W: Write>(pub W);

impl<W: Write> Observer for JsonLines<W> {
    fn event(&mut self, event: &Event) {
        if let Ok(line) = serde_json::to_string(event) {
            let _ = writeln!(self.0, "{line}");
            let _ = self.0.flush();
        }
    }
}

/// Passes each event to every observer.
pub struct Fanout<'a>(pub Vec<&'a mut dyn Observer>);

impl Observer for Fanout<'_> {
    fn event(&mut self, event: &Event) {
        for observer in &mut self.0 {
            observer.event(event);
        }
    }
}
