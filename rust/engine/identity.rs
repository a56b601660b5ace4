//! The identity map: one entry per persistent row of a session, keyed by native identity keys.
//!
//! Entries may refer to objects that can disappear (the binding holds clean objects weakly).
//! Dead entries are not removed one by one as objects die; instead an insertion that finds the
//! map at twice its size after the last sweep drops every dead entry, so the map stays within
//! a constant factor of the live objects at amortised O(1) cost per insertion.
//!
//! Entries live in one vector in insertion order, with a compact hash index over it: objects
//! loaded together sit together, so looking them up in about the order they were loaded (the
//! common case) reads memory sequentially instead of one cache miss per random bucket.

use indexmap::IndexMap;

use crate::engine::key::IdentityKey;

/// Below this many entries the map is never swept.
const MIN_SWEEP: usize = 1024;

#[derive(Debug)]
pub struct IdentityMap<E> {
    entries: IndexMap<IdentityKey, E, ahash::RandomState>,
    sweep_at: usize,
    min_sweep: usize,
}

impl<E> Default for IdentityMap<E> {
    fn default() -> Self {
        Self::with_min_sweep(MIN_SWEEP)
    }
}

impl<E> IdentityMap<E> {
    pub fn new() -> Self {
        Self::default()
    }

    /// A map that is never swept below `min_sweep` entries.
    pub fn with_min_sweep(min_sweep: usize) -> Self {
        IdentityMap {
            entries: IndexMap::with_hasher(ahash::RandomState::new()),
            sweep_at: min_sweep,
            min_sweep,
        }
    }

    pub fn get(&self, key: &IdentityKey) -> Option<&E> {
        self.entries.get(key)
    }

    pub fn remove(&mut self, key: &IdentityKey) -> Option<E> {
        self.entries.swap_remove(key)
    }

    /// Number of entries, dead ones included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn values(&self) -> impl Iterator<Item = &E> {
        self.entries.values()
    }

    /// Insert (replacing any entry with the same key), sweeping dead entries when the map has
    /// doubled since the last sweep. Returns the replaced entry.
    pub fn insert(
        &mut self,
        key: IdentityKey,
        entry: E,
        is_live: impl Fn(&E) -> bool,
    ) -> Option<E> {
        let old = self.entries.insert(key, entry);
        if self.entries.len() >= self.sweep_at {
            self.entries.retain(|_, e| is_live(e));
            self.sweep_at = (self.entries.len() * 2).max(self.min_sweep);
        }
        old
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::key::KeyValue;
    use proptest::prelude::*;
    use std::cell::RefCell;
    use std::collections::{BTreeMap, HashSet};

    const SMALL: usize = 8;

    fn key(mapper: u32, v: i64) -> IdentityKey {
        IdentityKey::new(mapper, [KeyValue::Int(v)])
    }

    #[derive(Debug, Clone)]
    enum Step {
        Insert(u32, i64),
        Remove(u32, i64),
        Die(u32, i64),
        Get(u32, i64),
    }

    fn step() -> impl Strategy<Value = Step> {
        let k = || (0u32..3, 0i64..40);
        prop_oneof![
            4 => k().prop_map(|(m, v)| Step::Insert(m, v)),
            1 => k().prop_map(|(m, v)| Step::Remove(m, v)),
            2 => k().prop_map(|(m, v)| Step::Die(m, v)),
            2 => k().prop_map(|(m, v)| Step::Get(m, v)),
        ]
    }

    proptest! {
        /// Against a model: lookups of live entries always find the latest insertion, and the
        /// map never holds more than twice the most live entries it has seen (or the minimum
        /// sweep size): dead entries cannot pile up.
        #[test]
        fn behaves_like_a_map_of_live_entries(steps in proptest::collection::vec(step(), 0..400)) {
            let dead: RefCell<HashSet<u64>> = RefCell::new(HashSet::new());
            let mut map: IdentityMap<u64> = IdentityMap::with_min_sweep(SMALL);
            let mut model: BTreeMap<IdentityKey, u64> = BTreeMap::new();
            let mut serial = 0u64;
            let mut most_live = 0usize;
            for s in steps {
                match s {
                    Step::Insert(m, v) => {
                        serial += 1;
                        map.insert(key(m, v), serial, |e| !dead.borrow().contains(e));
                        model.insert(key(m, v), serial);
                    }
                    Step::Remove(m, v) => {
                        let removed = map.remove(&key(m, v)).filter(|e| !dead.borrow().contains(e));
                        prop_assert_eq!(removed, model.remove(&key(m, v)));
                    }
                    Step::Die(m, v) => {
                        if let Some(e) = model.remove(&key(m, v)) {
                            dead.borrow_mut().insert(e);
                        }
                    }
                    Step::Get(m, v) => {
                        let got = map.get(&key(m, v)).copied().filter(|e| !dead.borrow().contains(e));
                        prop_assert_eq!(got, model.get(&key(m, v)).copied());
                    }
                }
                most_live = most_live.max(model.len());
                prop_assert!(map.len() <= (most_live * 2).max(SMALL), "{} > 2 × {}", map.len(), most_live);
            }
        }
    }

    #[test]
    fn dead_entries_are_swept_once_the_map_doubles() {
        let mut map: IdentityMap<i64> = IdentityMap::new();
        for v in 0..(MIN_SWEEP as i64 * 3) {
            // only multiples of 10 stay alive
            map.insert(key(1, v), v, |e| e % 10 == 0);
        }
        assert!(map.len() < MIN_SWEEP * 2, "{}", map.len());
        for v in (0..(MIN_SWEEP as i64 * 3)).step_by(10) {
            assert_eq!(map.get(&key(1, v)), Some(&v));
        }
    }
}
