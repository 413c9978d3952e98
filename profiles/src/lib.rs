//! Profiles and generations (DESIGN.md §7).
//!
//! A profile `P` is a symlink to `P-<N>-link`, which names generation N: a store path holding
//! the merged tree of its packages and a `manifest.json`. [`Profile`] reads and moves those
//! links under a per-profile lock; [`manifest`] says what a generation holds; [`tree`] merges
//! packages into one tree; [`generation`] adds a new generation; [`diff`] compares two;
//! [`select`] names the generations `delete-generations` removes; [`records`] keeps, in the
//! store's database, the brief of each generation that listing needs.

pub mod diff;
pub mod error;
pub mod generation;
pub mod manifest;
pub mod profile;
pub mod records;
pub mod select;
pub mod tree;

pub use error::{ProfileError, Result};
pub use manifest::{CheckTime, HealthCheck, Manifest, Package};
pub use profile::{GenerationLink, Profile, ProfileLock};
