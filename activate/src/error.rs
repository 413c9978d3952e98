use noodle_profiles::ProfileError;
use noodle_store::StoreError;

pub type Result<T, E = ActivateError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("generation {generation} of profile {profile} is under test (activation #{id}); generation {default} stays the default. Commit it first (`noodle activate --commit`) or abort it (`noodle activate --abort`)")]
    UnderTest {
        profile: String,
        id: i64,
        generation: u64,
        default: String,
    },
    #[error("nothing to {verb}: {why}")]
    NothingToDo { verb: &'static str, why: String },
    #[error("{what} (--no-wait); without --no-wait this command waits for it to end, and `noodle status` follows it")]
    Busy { what: String },
}

impl ActivateError {
    /// A generation is under test: a refusal, not a fault.
    pub fn is_refusal(&self) -> bool {
        matches!(self, ActivateError::UnderTest { .. })
            || matches!(self, ActivateError::Profile(e) if e.is_refusal())
    }
}
