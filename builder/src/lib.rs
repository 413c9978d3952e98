//! noodle's builder (DESIGN.md §6): recipes → resolved versions (+ noodle.lock) → plans →
//! sandboxed builds → registered outputs.

pub mod channel;
pub mod error;
pub mod events;
pub mod fetch;
pub mod job;
pub mod lockfile;
pub mod log;
pub mod plan;
pub mod recipe;
pub mod resolve;
pub mod sandbox;
pub mod schedule;
pub mod session;
pub mod target;
