//! SIGINT and SIGTERM during an activation: instead of dying half-way, the activation stops
//! what it runs and reverts. `noodle activate --abort` sends SIGTERM to the process that
//! drives the activation.

// The one `unsafe` call, installing a handler that only stores to an atomic.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

static REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn note(_: nix::libc::c_int) {
    // Only an atomic store: the one thing a signal handler may safely do here.
    REQUESTED.store(true, Ordering::SeqCst);
}

/// From now on SIGINT and SIGTERM ask the activation to revert instead of killing noodle.
pub fn catch() {
    let action = SigAction::new(
        SigHandler::Handler(note),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        if let Err(e) = unsafe { sigaction(signal, &action) } {
            // Without the handler the signal still stops noodle, and recovery reverts.
            let _ = e;
        }
    }
}

pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
