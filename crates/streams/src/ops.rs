//! The DSL's operators as processors: sources and sinks, table changes, aggregations (plain,
//! time-windowed, sliding, session), suppression, and joins.

pub(crate) mod aggregate;
pub(crate) mod basic;
pub(crate) mod join;
pub(crate) mod suppress;
pub(crate) mod windowed;

use std::sync::Arc;

/// Combines two session aggregates when a record bridges their sessions.
pub(crate) type Merger<K, A> = Arc<dyn Fn(&K, A, A) -> A + Send + Sync>;
/// Joins a record with a looked-up value (`None`: no match).
pub(crate) type LookupJoiner<K, V, VT, VO> = Arc<dyn Fn(&K, &V, Option<&VT>) -> VO + Send + Sync>;
/// Computes a key from a record (the global table key of a stream-global join).
pub(crate) type KeyMapper<K, V, GK> = Arc<dyn Fn(&K, &V) -> GK + Send + Sync>;
/// Re-keys a table entry (`KTable::group_by`).
pub(crate) type Selector<K, V, K2, V2> = Arc<dyn Fn(&K, &V) -> (K2, V2) + Send + Sync>;
/// Makes an aggregate of a first value (`reduce`).
pub(crate) type FirstValue<V, A> = Arc<dyn Fn(V) -> A + Send + Sync>;

/// A table update: the new value of a key (`None`: deleted) and the value it replaces.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Change<V> {
    pub(crate) new: Option<V>,
    pub(crate) old: Option<V>,
}
