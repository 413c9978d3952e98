//! Activation (DESIGN.md §8): making a generation the one a profile runs, gated by its health.
//!
//! An activation is a journalled state machine ([`journal`], [`machine`]): the generation is
//! validated, staged, switched to, its activation scripts run ([`plan`], [`exec`]) and its
//! health checks must stay green for a window ([`window`]); anything else switches back to the
//! previous generation and checks that one. `install`, `update`, `remove`, `profile switch`,
//! `rollback` and `activate` all come through [`machine::Session`].

pub mod error;
pub mod event;
pub mod exec;
pub mod interrupt;
pub mod journal;
pub mod machine;
pub mod options;
pub mod plan;
pub mod window;

pub use error::{ActivateError, Result};
pub use event::{Event, Observer};
pub use journal::{Activation, State};
pub use machine::{Outcome, Session};
pub use options::{Options, Strategy};
