//! The DSL's operators as processors: sources and sinks, table changes, aggregations (plain,
//! time-windowed, sliding, session), suppression, and joins.

pub(crate) mod aggregate;
pub(crate) mod basic;
pub(crate) mod join;
pub(crate) mod suppress;
pub(crate) mod windowed;

/// A table update: the new value of a key (`None`: deleted) and the value it replaces.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Change<V> {
    pub(crate) new: Option<V>,
    pub(crate) old: Option<V>,
}
