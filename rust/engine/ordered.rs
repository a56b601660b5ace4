//! An insertion-ordered map with O(log n) removal.
//!
//! The session's new, dirty and deleted sets keep the order objects entered them (so flushes
//! are deterministic and rows keep their add order) while single objects leave them all the
//! time (flushed, expunged, changed back). `IndexMap::shift_remove` is O(n) per removal, which
//! makes a flush of n objects O(n²); here each entry carries a sequence number instead.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

#[derive(Debug)]
pub struct OrderedMap<K, V> {
    seq_of: HashMap<K, u64, ahash::RandomState>,
    by_seq: BTreeMap<u64, (K, V)>,
    next: u64,
}

impl<K, V> Default for OrderedMap<K, V> {
    fn default() -> Self {
        OrderedMap {
            seq_of: HashMap::with_hasher(ahash::RandomState::new()),
            by_seq: BTreeMap::new(),
            next: 0,
        }
    }
}

impl<K: Hash + Eq + Copy, V> OrderedMap<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.by_seq.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_seq.is_empty()
    }

    pub fn contains_key(&self, key: &K) -> bool {
        self.seq_of.contains_key(key)
    }

    /// Insert at the end unless the key is present (then its value and place are kept).
    /// Returns whether it was inserted.
    pub fn insert_if_absent(&mut self, key: K, make: impl FnOnce() -> V) -> bool {
        if self.seq_of.contains_key(&key) {
            return false;
        }
        let seq = self.next;
        self.next += 1;
        self.seq_of.insert(key, seq);
        self.by_seq.insert(seq, (key, make()));
        true
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let seq = self.seq_of.remove(key)?;
        self.by_seq.remove(&seq).map(|(_, v)| v)
    }

    pub fn values(&self) -> impl ExactSizeIterator<Item = &V> {
        self.by_seq.values().map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&K, &V)> {
        self.by_seq.values().map(|(k, v)| (k, v))
    }

    /// The sequence number the next insertion will get (entries inserted later have this
    /// number or a higher one).
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Take out the entries inserted at or after sequence number `seq`, in order.
    pub fn take_from(&mut self, seq: u64) -> Vec<(K, V)> {
        let later = self.by_seq.split_off(&seq);
        later
            .into_values()
            .map(|(k, v)| {
                self.seq_of.remove(&k);
                (k, v)
            })
            .collect()
    }

    /// Take every entry out, in order.
    pub fn take(&mut self) -> Vec<(K, V)> {
        self.seq_of.clear();
        std::mem::take(&mut self.by_seq).into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keeps_insertion_order_across_removals() {
        let mut m = OrderedMap::new();
        for k in [5, 3, 9, 1] {
            assert!(m.insert_if_absent(k, || k * 10));
        }
        assert!(!m.insert_if_absent(3, || 0));
        assert_eq!(m.remove(&9), Some(90));
        m.insert_if_absent(9, || 91);
        let keys: Vec<i32> = m.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, vec![5, 3, 1, 9]);
        assert_eq!(
            m.values().copied().collect::<Vec<_>>(),
            vec![50, 30, 10, 91]
        );
    }

    proptest! {
        #[test]
        fn matches_a_vector_model(ops in proptest::collection::vec((any::<bool>(), 0u8..20), 0..200)) {
            let mut m = OrderedMap::new();
            let mut model: Vec<u8> = Vec::new();
            for (insert, k) in ops {
                if insert {
                    let added = m.insert_if_absent(k, || k);
                    prop_assert_eq!(added, !model.contains(&k));
                    if added { model.push(k); }
                } else {
                    let removed = m.remove(&k).is_some();
                    prop_assert_eq!(removed, model.contains(&k));
                    model.retain(|x| *x != k);
                }
                prop_assert_eq!(m.len(), model.len());
                let keys: Vec<u8> = m.iter().map(|(k, _)| *k).collect();
                prop_assert_eq!(&keys, &model);
            }
        }
    }
}
