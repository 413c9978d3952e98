//! How long work reports its progress; the CLI draws bars, tests and scripts ignore it.

pub trait Progress: Sync {
    /// A new phase of `total` units (bytes unless the phase says otherwise).
    fn phase(&self, _name: &str, _total: u64) {}
    fn advance(&self, _units: u64) {}
    fn finish(&self) {}
    /// A detail worth showing with --verbose (e.g. how long a phase took).
    fn note(&self, _message: &str) {}
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {}
