//! Activation (DESIGN.md §8): making a generation the one a profile runs.
//!
//! For now [`activate`] only switches the profile link, after checking the generation is
//! complete. Health checks, activation scripts, the journal and reversion go inside it later;
//! `install`, `update`, `remove`, `switch` and `rollback` all come through here, so none of
//! them will need to change.

use noodle_profiles::{generation, Profile, ProfileError, ProfileLock};
use noodle_store::Store;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error(transparent)]
    Profile(#[from] ProfileError),
}

/// What an activation did.
#[derive(Debug, Clone, Serialize)]
pub struct Activated {
    pub from: Option<u64>,
    pub to: u64,
    pub path: String,
}

/// Makes generation `number` the profile's current one. The caller holds the profile's lock.
pub fn activate(
    store: &Store,
    profile: &Profile,
    _lock: &ProfileLock,
    number: u64,
) -> Result<Activated, ActivateError> {
    let from = profile.current()?;
    let (generation, _manifest) = generation::open(store, profile, number)?;
    if from != Some(number) {
        profile.point_at(number)?;
    }
    Ok(Activated {
        from,
        to: number,
        path: generation.path,
    })
}
