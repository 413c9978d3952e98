//! The activation journal: the `activations`, `activation_events` and `activation_runs`
//! tables. Every write is its own committed transaction, so what the journal says survives a
//! crash one instant later.

use std::time::{SystemTime, UNIX_EPOCH};

use noodle_store::Store;
use rusqlite::{params, OptionalExtension, Row as SqlRow};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::event::{Event, RunRecord};
use crate::options::{Options, Strategy};

/// Where an activation is (DESIGN.md §8). A state is journalled before the work it names
/// starts: ACTIVE is written before the profile switches, so a crash in ACTIVE may or may
/// not have switched, and recovery treats it as switched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    Built,
    Validated,
    Staged,
    Active,
    Committed,
    Reverted,
    Failed,
}

impl State {
    pub const ALL: [State; 7] = [
        State::Built,
        State::Validated,
        State::Staged,
        State::Active,
        State::Committed,
        State::Reverted,
        State::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Built => "BUILT",
            State::Validated => "VALIDATED",
            State::Staged => "STAGED",
            State::Active => "ACTIVE",
            State::Committed => "COMMITTED",
            State::Reverted => "REVERTED",
            State::Failed => "FAILED",
        }
    }

    fn parse(text: &str) -> rusqlite::Result<State> {
        State::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| {
                rusqlite::Error::InvalidColumnType(0, text.into(), rusqlite::types::Type::Text)
            })
    }

    pub fn is_final(self) -> bool {
        matches!(self, State::Committed | State::Reverted | State::Failed)
    }

    /// The profile may already point at the new generation.
    pub fn may_have_switched(self) -> bool {
        self == State::Active
    }
}

/// One activation, as journalled.
#[derive(Debug, Clone, Serialize)]
pub struct Activation {
    pub id: i64,
    pub profile: String,
    pub from: Option<u64>,
    pub to: u64,
    pub to_path: String,
    pub strategy: Strategy,
    pub state: State,
    pub reason: Option<String>,
    /// Reverting has begun (the reason is written first).
    pub reverting: bool,
    /// A `test` activation whose checks passed: active, but not the default until committed.
    pub awaiting_commit: bool,
    pub options: Options,
    pub pid: u32,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

impl Activation {
    pub fn duration_us(&self) -> Option<i64> {
        self.finished_at.map(|f| f - self.started_at)
    }
}

/// Microseconds since the epoch.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

const COLUMNS: &str =
    "id, profile, from_generation, to_generation, to_path, strategy, state, reason, \
     reverting, awaiting_commit, options, pid, started_at, finished_at";

fn from_row(r: &SqlRow<'_>) -> rusqlite::Result<Activation> {
    let strategy: String = r.get(5)?;
    let options: String = r.get(10)?;
    Ok(Activation {
        id: r.get(0)?,
        profile: r.get(1)?,
        from: r.get::<_, Option<i64>>(2)?.map(|n| n as u64),
        to: r.get::<_, i64>(3)? as u64,
        to_path: r.get(4)?,
        strategy: strategy.parse().map_err(|_| {
            rusqlite::Error::InvalidColumnType(5, strategy.clone(), rusqlite::types::Type::Text)
        })?,
        state: State::parse(&r.get::<_, String>(6)?)?,
        reason: r.get(7)?,
        reverting: r.get(8)?,
        awaiting_commit: r.get(9)?,
        options: serde_json::from_str(&options).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(10, rusqlite::types::Type::Text, e.into())
        })?,
        pid: r.get(11)?,
        started_at: r.get(12)?,
        finished_at: r.get(13)?,
    })
}

/// Journals a new activation in state BUILT (the generation exists and is linked).
pub fn begin(
    store: &mut Store,
    profile: &str,
    from: Option<u64>,
    to: u64,
    to_path: &str,
    options: &Options,
) -> Result<Activation> {
    let now = now_us();
    let options_json = serde_json::to_string(options).expect("options serialise");
    let pid = std::process::id();
    let id = store.db_mut().write(|tx| {
        tx.execute(
            "INSERT INTO activations (profile, from_generation, to_generation, to_path, strategy,
                 state, options, pid, started_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'BUILT', ?6, ?7, ?8)",
            params![
                profile,
                from.map(|n| n as i64),
                to as i64,
                to_path,
                options.strategy.as_str(),
                options_json,
                pid,
                now
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO activation_events (activation, at, what) VALUES (?1, ?2, 'BUILT')",
            params![id, now],
        )?;
        Ok(id)
    })?;
    get(store, id)
}

/// Moves `id` to `state` (finishing it when final), with an optional note for the stream.
pub fn set_state(store: &mut Store, id: i64, state: State, note: Option<&str>) -> Result<Event> {
    let now = now_us();
    store.db_mut().write(|tx| {
        tx.execute(
            "UPDATE activations SET state = ?2,
                 finished_at = CASE WHEN ?3 THEN ?4 ELSE finished_at END,
                 awaiting_commit = CASE WHEN ?3 THEN 0 ELSE awaiting_commit END
             WHERE id = ?1",
            params![id, state.as_str(), state.is_final(), now],
        )?;
        tx.execute(
            "INSERT INTO activation_events (activation, at, what, note) VALUES (?1, ?2, ?3, ?4)",
            params![id, now, state.as_str(), note],
        )
    })?;
    Ok(Event::State {
        id,
        state,
        at_us: now,
        note: note.map(str::to_owned),
    })
}

/// Writes why the activation is being undone before anything is undone.
pub fn mark_reverting(store: &mut Store, id: i64, reason: &str) -> Result<Event> {
    let now = now_us();
    store.db_mut().write(|tx| {
        tx.execute(
            "UPDATE activations SET reverting = 1, reason = ?2, awaiting_commit = 0 WHERE id = ?1",
            params![id, reason],
        )?;
        tx.execute(
            "INSERT INTO activation_events (activation, at, what, note) VALUES (?1, ?2, 'reverting', ?3)",
            params![id, now, reason],
        )
    })?;
    Ok(Event::Reverting {
        id,
        reason: reason.to_owned(),
        at_us: now,
    })
}

/// Sets or clears the activation's reason without any other change (a warning that stays).
pub fn set_reason(store: &mut Store, id: i64, reason: &str) -> Result<()> {
    store.db_mut().write(|tx| {
        tx.execute(
            "UPDATE activations SET reason = ?2 WHERE id = ?1",
            params![id, reason],
        )
    })?;
    Ok(())
}

pub fn mark_awaiting_commit(store: &mut Store, id: i64) -> Result<Event> {
    let now = now_us();
    store.db_mut().write(|tx| {
        tx.execute(
            "UPDATE activations SET awaiting_commit = 1 WHERE id = ?1",
            params![id],
        )?;
        tx.execute(
            "INSERT INTO activation_events (activation, at, what) VALUES (?1, ?2, 'awaiting-commit')",
            params![id, now],
        )
    })?;
    Ok(Event::AwaitingCommit { id, at_us: now })
}

/// The process now driving the activation (a detached worker takes over from its launcher).
pub fn set_pid(store: &mut Store, id: i64, pid: u32) -> Result<()> {
    store.db_mut().write(|tx| {
        tx.execute(
            "UPDATE activations SET pid = ?2 WHERE id = ?1",
            params![id, pid],
        )
    })?;
    Ok(())
}

/// Records a point in time worth measuring (`switched`, `switched-back`).
pub fn mark(store: &mut Store, id: i64, what: &str, note: Option<&str>) -> Result<i64> {
    let now = now_us();
    store.db_mut().write(|tx| {
        tx.execute(
            "INSERT INTO activation_events (activation, at, what, note) VALUES (?1, ?2, ?3, ?4)",
            params![id, now, what, note],
        )
    })?;
    Ok(now)
}

pub fn record_run(store: &mut Store, run: &RunRecord) -> Result<()> {
    let outcome = serde_json::to_string(&run.outcome).expect("outcome serialises");
    store.db_mut().write(|tx| {
        tx.execute(
            "INSERT INTO activation_runs (activation, generation, kind, package, name, attempt,
                 required, started_at, duration_us, ok, outcome, output, output_bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                run.activation,
                run.generation.map(|n| n as i64),
                run.kind.as_str(),
                run.package,
                run.name,
                run.attempt,
                run.required,
                run.started_at,
                run.duration_us,
                run.ok,
                outcome,
                run.output,
                run.output_bytes as i64
            ],
        )
    })?;
    Ok(())
}

pub fn get(store: &Store, id: i64) -> Result<Activation> {
    Ok(store.db().retry(|c| {
        c.query_row(
            &format!("SELECT {COLUMNS} FROM activations WHERE id = ?1"),
            [id],
            from_row,
        )
    })?)
}

/// The profile's activation that has not reached a final state, if any (there is at most one:
/// activations of a profile run under its lock, and each recovers the previous first).
pub fn unfinished(store: &Store, profile: &str) -> Result<Option<Activation>> {
    Ok(store.db().retry(|c| {
        c.query_row(
            &format!(
                "SELECT {COLUMNS} FROM activations
                 WHERE profile = ?1 AND state NOT IN ('COMMITTED', 'REVERTED', 'FAILED')
                 ORDER BY id DESC LIMIT 1"
            ),
            [profile],
            from_row,
        )
        .optional()
    })?)
}

/// The profile's latest activation.
pub fn last(store: &Store, profile: &str) -> Result<Option<Activation>> {
    Ok(store.db().retry(|c| {
        c.query_row(
            &format!(
                "SELECT {COLUMNS} FROM activations WHERE profile = ?1 ORDER BY id DESC LIMIT 1"
            ),
            [profile],
            from_row,
        )
        .optional()
    })?)
}

/// Every activation of the profile, oldest first.
pub fn history(store: &Store, profile: &str) -> Result<Vec<Activation>> {
    Ok(store.db().retry(|c| {
        let mut stmt = c.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM activations WHERE profile = ?1 ORDER BY id"
        ))?;
        let rows = stmt.query_map([profile], from_row)?;
        rows.collect()
    })?)
}

pub fn runs(store: &Store, id: i64) -> Result<Vec<RunRecord>> {
    Ok(store.db().retry(|c| {
        let mut stmt = c.prepare_cached(
            "SELECT activation, generation, kind, package, name, attempt, required, started_at,
                 duration_us, ok, outcome, output, output_bytes
             FROM activation_runs WHERE activation = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([id], |r| {
            let kind: String = r.get(2)?;
            let outcome: String = r.get(10)?;
            Ok(RunRecord {
                activation: r.get(0)?,
                generation: r.get::<_, Option<i64>>(1)?.map(|n| n as u64),
                kind: kind.parse().map_err(|_| {
                    rusqlite::Error::InvalidColumnType(2, kind.clone(), rusqlite::types::Type::Text)
                })?,
                package: r.get(3)?,
                name: r.get(4)?,
                attempt: r.get(5)?,
                required: r.get(6)?,
                started_at: r.get(7)?,
                duration_us: r.get(8)?,
                ok: r.get(9)?,
                outcome: serde_json::from_str(&outcome).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        10,
                        rusqlite::types::Type::Text,
                        e.into(),
                    )
                })?,
                output: r.get(11)?,
                output_bytes: r.get::<_, i64>(12)? as u64,
            })
        })?;
        rows.collect()
    })?)
}

/// The journalled points in time of one activation: (what, at µs, note).
pub fn events(store: &Store, id: i64) -> Result<Vec<(String, i64, Option<String>)>> {
    Ok(store.db().retry(|c| {
        let mut stmt = c.prepare_cached(
            "SELECT what, at, note FROM activation_events WHERE activation = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect()
    })?)
}
