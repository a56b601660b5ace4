//! Committed-value snapshots: the change tracking of one object.
//!
//! The first change of an attribute keeps the value it had when loaded (its committed value);
//! later changes keep that first value. Setting the committed value back removes the entry, so
//! an object whose snapshot is empty has no net change. Only changed attributes are stored.

use smallvec::SmallVec;
use thin_vec::ThinVec;

/// What an attribute held before its first change.
#[derive(Clone, Debug, PartialEq)]
pub enum Committed<V> {
    /// It was loaded with this value.
    Value(V),
    /// It was not loaded (expired or deferred): any assignment is a change.
    Unknown,
}

/// A thin vector (one word; length and capacity live in its heap block): most objects never
/// change, and every persistent object carries its snapshot, so the empty case is one pointer
/// to a shared empty header, with no allocation.
#[derive(Clone, Debug)]
pub struct Snapshot<V> {
    entries: ThinVec<(u16, Committed<V>)>,
}

impl<V> Default for Snapshot<V> {
    fn default() -> Self {
        Snapshot {
            entries: ThinVec::new(),
        }
    }
}

impl<V> Snapshot<V> {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn get(&self, attr: u16) -> Option<&Committed<V>> {
        self.entries
            .iter()
            .find(|(a, _)| *a == attr)
            .map(|(_, v)| v)
    }

    pub fn contains(&self, attr: u16) -> bool {
        self.entries.iter().any(|(a, _)| *a == attr)
    }

    /// Record an assignment of `new` to `attr`, whose current value is `current`.
    ///
    /// `eq` compares two values; it is called at most once. Returns whether the object has any
    /// net change afterwards.
    pub fn record_set<F>(&mut self, attr: u16, current: Committed<V>, new: &V, eq: F) -> bool
    where
        F: FnOnce(&V, &V) -> bool,
    {
        let pos = self.entries.iter().position(|(a, _)| *a == attr);
        match pos {
            None => {
                let unchanged = matches!(&current, Committed::Value(v) if eq(v, new));
                if !unchanged {
                    self.entries.push((attr, current));
                }
            }
            Some(i) => {
                let back_to_committed =
                    matches!(&self.entries[i].1, Committed::Value(v) if eq(v, new));
                if back_to_committed {
                    self.entries.remove(i);
                }
            }
        }
        !self.entries.is_empty()
    }

    /// Changed attribute indexes, ascending.
    pub fn changed_attrs(&self) -> SmallVec<[u16; 4]> {
        let mut v: SmallVec<[u16; 4]> = self.entries.iter().map(|(a, _)| *a).collect();
        v.sort_unstable();
        v
    }

    /// Forget every change (after a flush, commit or rollback).
    pub fn clear(&mut self) -> ThinVec<(u16, Committed<V>)> {
        std::mem::take(&mut self.entries)
    }

    pub fn iter(&self) -> impl Iterator<Item = &(u16, Committed<V>)> {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn eq(a: &i32, b: &i32) -> bool {
        a == b
    }

    #[test]
    fn an_unchanged_snapshot_is_one_word() {
        // every persistent object carries one (BENCHMARKS.md: memory per persistent object)
        assert_eq!(
            std::mem::size_of::<Snapshot<usize>>(),
            std::mem::size_of::<usize>()
        );
        let s: Snapshot<usize> = Snapshot::default();
        assert_eq!(s.entries.capacity(), 0);
    }

    #[test]
    fn setting_back_is_no_change() {
        let mut s = Snapshot::default();
        assert!(s.record_set(0, Committed::Value(1), &2, eq));
        assert!(s.record_set(0, Committed::Value(2), &3, eq));
        assert_eq!(s.get(0), Some(&Committed::Value(1)));
        assert!(!s.record_set(0, Committed::Value(3), &1, eq));
        assert!(s.is_empty());
    }

    #[test]
    fn unknown_committed_value_is_always_a_change() {
        let mut s: Snapshot<i32> = Snapshot::default();
        assert!(s.record_set(1, Committed::Unknown, &5, eq));
        assert!(s.record_set(1, Committed::Value(5), &5, eq));
        assert_eq!(s.changed_attrs().as_slice(), &[1]);
    }

    proptest! {
        /// Against a reference model: an attribute is changed iff its latest value differs
        /// from the value it had at the start.
        #[test]
        fn matches_reference_model(
            start in proptest::collection::vec(0i32..4, 1..6),
            sets in proptest::collection::vec((0usize..6, 0i32..4), 0..40),
        ) {
            let mut snap = Snapshot::default();
            let mut current: Vec<i32> = start.clone();
            for (attr, value) in sets {
                let attr = attr % start.len();
                let any = snap.record_set(attr as u16, Committed::Value(current[attr]), &value, eq);
                current[attr] = value;
                let model: HashMap<usize, i32> = start
                    .iter()
                    .enumerate()
                    .filter(|(i, v)| current[*i] != **v)
                    .map(|(i, v)| (i, *v))
                    .collect();
                prop_assert_eq!(any, !model.is_empty());
                prop_assert_eq!(snap.len(), model.len());
                for (i, v) in &model {
                    prop_assert_eq!(snap.get(*i as u16), Some(&Committed::Value(*v)));
                }
            }
        }
    }
}
