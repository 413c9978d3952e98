//! Runs checks in parallel, repeatedly, for the health window; stops everything the moment a
//! required check is red.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::exec::{self, Cancel, Finished, StoreView};
use crate::journal::now_us;
use crate::plan::Planned;
use crate::{interrupt, options};

/// How a set of checks went.
#[derive(Debug)]
pub enum Verdict {
    /// Every required check stayed green; `warnings` name the wanted ones that did not.
    Green { warnings: Vec<String> },
    /// A required check was red after its retries: why, in one line.
    Red { reason: String },
    /// `activate --abort`, or a signal, asked to stop.
    Interrupted,
}

enum Message {
    Run {
        index: usize,
        attempt: u32,
        started_at: i64,
        finished: Finished,
    },
    /// A round ended red (every retry failed) `at` into the window, after `green` green rounds.
    Red {
        index: usize,
        at: Duration,
        green: u32,
        finished: Finished,
    },
    Done,
}

/// Sleeps up to `d`, waking early when cancelled; false when cancelled.
fn pause(d: Duration, cancel: &Cancel) -> bool {
    let until = Instant::now() + d;
    while !cancel.is_cancelled() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(5)));
    }
    false
}

fn run_check(
    index: usize,
    check: Planned,
    view: StoreView,
    window: Duration,
    cancel: Cancel,
    tx: mpsc::Sender<Message>,
) {
    let start = Instant::now();
    let mut green = 0;
    loop {
        let mut last = None;
        for attempt in 0..=check.retries {
            if attempt > 0 && !pause(check.interval, &cancel) {
                return;
            }
            let started_at = now_us();
            let finished = exec::run(&view, &check.job, &cancel);
            let ok = finished.succeeded();
            if tx
                .send(Message::Run {
                    index,
                    attempt,
                    started_at,
                    finished: finished.clone(),
                })
                .is_err()
                || cancel.is_cancelled()
            {
                return;
            }
            if ok {
                last = None;
                break;
            }
            last = Some(finished);
        }
        if let Some(finished) = last {
            let _ = tx.send(Message::Red {
                index,
                at: start.elapsed(),
                green,
                finished,
            });
            if check.required {
                return;
            }
        } else {
            green += 1;
        }
        let elapsed = start.elapsed();
        if elapsed >= window || !pause(check.interval.min(window - elapsed), &cancel) {
            break;
        }
    }
    let _ = tx.send(Message::Done);
}

/// Runs `checks` for `window` (each at least once), calling `record` for every run. Returns as
/// soon as a required check is red, with the others killed.
pub fn run(
    view: &StoreView,
    checks: &[Planned],
    window: Duration,
    record: &mut dyn FnMut(&Planned, u32, i64, &Finished) -> crate::Result<()>,
) -> crate::Result<Verdict> {
    let cancel = Cancel::new();
    let (tx, rx) = mpsc::channel();
    for (index, check) in checks.iter().enumerate() {
        let (check, view, cancel, tx) = (check.clone(), view.clone(), cancel.clone(), tx.clone());
        std::thread::spawn(move || run_check(index, check, view, window, cancel, tx));
    }
    drop(tx);
    let mut warnings = Vec::new();
    let mut running = checks.len();
    // Threads left running after a red check are cancelled, not joined: the switch back must
    // not wait for them.
    let stop = |verdict: Verdict| {
        cancel.cancel();
        Ok(verdict)
    };
    while running > 0 {
        if interrupt::requested() {
            return stop(Verdict::Interrupted);
        }
        let message = match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(message) => message,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        match message {
            Message::Run {
                index,
                attempt,
                started_at,
                finished,
            } => record(&checks[index], attempt, started_at, &finished)?,
            Message::Red {
                index,
                at,
                green,
                finished,
            } => {
                let check = &checks[index];
                let mut why = format!(
                    "{} check '{}' of {} is red ({})",
                    if check.required { "required" } else { "wanted" },
                    check.name,
                    check.package_label,
                    finished.describe()
                );
                if green > 0 {
                    why += &format!(
                        " {} into the health window, after {green} green round{}",
                        options::show_duration(at),
                        if green == 1 { "" } else { "s" }
                    );
                }
                if let Some(line) = finished.output.trim_end().lines().last() {
                    why += &format!(": {line}");
                }
                if check.required {
                    return stop(Verdict::Red { reason: why });
                }
                warnings.push(why);
            }
            Message::Done => running -= 1,
        }
    }
    Ok(Verdict::Green { warnings })
}
