//! How a build asks binary caches for outputs before building them, without this crate (or
//! the builder) knowing what a cache is.

use crate::store::Store;

pub trait Substitute: Sync {
    /// Where paths come from, for messages.
    fn origin(&self) -> String;
    /// Makes what it can of `paths` (not valid here) valid by fetching them with their
    /// closures, proven as any fetch is; returns the paths it fetched. Never fails: what cannot
    /// be fetched is built instead, and `warn` hears why.
    fn substitute(&self, store: &mut Store, paths: &[String], warn: &dyn Fn(&str)) -> Vec<String>;
}
