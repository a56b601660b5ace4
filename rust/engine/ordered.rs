//! An insertion-ordered map with O(1) removal.
//!
//! The session's new, dirty and deleted sets keep the order objects entered them (so flushes
//! are deterministic and rows keep their add order) while single objects leave them all the
//! time (flushed, expunged, changed back). `IndexMap::shift_remove` is O(n) per removal, which
//! makes a flush of n objects O(n²); here a removal empties the entry's slot, and the slots
//! are compacted when most are empty (each entry keeps its sequence number, which savepoints
//! use to take out what was inserted after them).

use std::collections::HashMap;
use std::hash::Hash;

#[derive(Debug)]
struct Slot<K, V> {
    seq: u64,
    entry: Option<(K, V)>,
}

#[derive(Debug)]
pub struct OrderedMap<K, V> {
    /// Where each key's slot is.
    pos: HashMap<K, usize, ahash::RandomState>,
    /// In insertion (sequence) order; a removed entry leaves an empty slot until the map
    /// empties or compacts.
    slots: Vec<Slot<K, V>>,
    live: usize,
    next: u64,
}

impl<K, V> Default for OrderedMap<K, V> {
    fn default() -> Self {
        OrderedMap {
            pos: HashMap::with_hasher(ahash::RandomState::new()),
            slots: Vec::new(),
            live: 0,
            next: 0,
        }
    }
}

/// Iterator over the entries of an `OrderedMap`, in order.
pub struct Iter<'a, K, V> {
    slots: std::slice::Iter<'a, Slot<K, V>>,
    left: usize,
}

impl<'a, K, V> Iterator for Iter<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        for slot in self.slots.by_ref() {
            if let Some((k, v)) = &slot.entry {
                self.left -= 1;
                return Some((k, v));
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<K, V> ExactSizeIterator for Iter<'_, K, V> {}

impl<K: Hash + Eq + Copy, V> OrderedMap<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    pub fn contains_key(&self, key: &K) -> bool {
        self.pos.contains_key(key)
    }

    /// Insert at the end unless the key is present (then its value and place are kept).
    /// Returns whether it was inserted.
    pub fn insert_if_absent(&mut self, key: K, make: impl FnOnce() -> V) -> bool {
        if self.pos.contains_key(&key) {
            return false;
        }
        self.pos.insert(key, self.slots.len());
        self.slots.push(Slot {
            seq: self.next,
            entry: Some((key, make())),
        });
        self.next += 1;
        self.live += 1;
        true
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let at = *self.pos.get(key)?;
        self.slots[at].entry.as_mut().map(|(_, v)| v)
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let at = self.pos.remove(key)?;
        let (_, v) = self.slots[at].entry.take()?;
        self.live -= 1;
        if self.live == 0 {
            self.slots.clear();
        } else if self.slots.len() >= 64 && self.live * 4 < self.slots.len() {
            self.compact();
        }
        Some(v)
    }

    /// Drop the empty slots (sequence numbers stay as they are).
    fn compact(&mut self) {
        self.slots.retain(|s| s.entry.is_some());
        for (i, slot) in self.slots.iter().enumerate() {
            if let Some((k, _)) = &slot.entry {
                self.pos.insert(*k, i);
            }
        }
    }

    pub fn values(&self) -> impl ExactSizeIterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    pub fn iter(&self) -> Iter<'_, K, V> {
        Iter {
            slots: self.slots.iter(),
            left: self.live,
        }
    }

    /// The sequence number the next insertion will get (entries inserted later have this
    /// number or a higher one).
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Take out the entries inserted at or after sequence number `seq`, in order.
    pub fn take_from(&mut self, seq: u64) -> Vec<(K, V)> {
        let at = self.slots.partition_point(|s| s.seq < seq);
        let later: Vec<(K, V)> = self.slots.drain(at..).filter_map(|s| s.entry).collect();
        for (k, _) in &later {
            self.pos.remove(k);
        }
        self.live -= later.len();
        later
    }

    /// Take every entry out, in order.
    pub fn take(&mut self) -> Vec<(K, V)> {
        self.pos.clear();
        self.live = 0;
        std::mem::take(&mut self.slots)
            .into_iter()
            .filter_map(|s| s.entry)
            .collect()
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

    #[test]
    fn compacts_and_keeps_order_and_sequence_numbers() {
        let mut m = OrderedMap::new();
        for k in 0..200u32 {
            m.insert_if_absent(k, || k);
        }
        let mark = m.next_seq();
        for k in 200..210u32 {
            m.insert_if_absent(k, || k);
        }
        // most go: the slots are compacted on the way
        for k in (0..200u32).filter(|k| k % 10 != 3) {
            assert_eq!(m.remove(&k), Some(k));
        }
        assert!(m.slots.len() < 100, "{}", m.slots.len());
        assert_eq!(m.remove(&13), Some(13));
        assert_eq!(m.remove(&13), None);
        let keys: Vec<u32> = m.iter().map(|(k, _)| *k).collect();
        let want: Vec<u32> = (0..210u32)
            .filter(|k| *k >= 200 || (k % 10 == 3 && *k != 13))
            .collect();
        assert_eq!(keys, want);
        let later: Vec<u32> = m.take_from(mark).into_iter().map(|e| e.0).collect();
        assert_eq!(later, (200..210).collect::<Vec<_>>());
        assert_eq!(m.len(), 19);
        assert_eq!(m.remove(&193), Some(193));
        assert!(m.contains_key(&3) && !m.contains_key(&193));
    }

    proptest! {
        #[test]
        fn matches_a_vector_model(
            ops in proptest::collection::vec((0u8..4, 0u8..100), 0..600)
        ) {
            let mut m = OrderedMap::new();
            let mut model: Vec<(u8, u64)> = Vec::new();
            let mut marks: Vec<u64> = Vec::new();
            let mut next = 0u64;
            for (op, k) in ops {
                match op {
                    0 | 1 => {
                        let added = m.insert_if_absent(k, || k);
                        prop_assert_eq!(added, !model.iter().any(|e| e.0 == k));
                        if added {
                            model.push((k, next));
                            next += 1;
                        }
                    }
                    2 => {
                        let removed = m.remove(&k);
                        prop_assert_eq!(removed.is_some(), model.iter().any(|e| e.0 == k));
                        prop_assert!(removed.is_none_or(|v| v == k));
                        model.retain(|e| e.0 != k);
                    }
                    _ if k % 2 == 0 => {
                        prop_assert_eq!(m.next_seq(), next);
                        marks.push(next);
                    }
                    _ => {
                        if let Some(seq) = marks.pop() {
                            let taken: Vec<u8> = m.take_from(seq).into_iter().map(|e| e.0).collect();
                            let want: Vec<u8> =
                                model.iter().filter(|e| e.1 >= seq).map(|e| e.0).collect();
                            prop_assert_eq!(taken, want);
                            model.retain(|e| e.1 < seq);
                        }
                    }
                }
                prop_assert_eq!(m.len(), model.len());
                prop_assert_eq!(m.iter().len(), model.len());
                let keys: Vec<u8> = m.iter().map(|(k, _)| *k).collect();
                let want: Vec<u8> = model.iter().map(|e| e.0).collect();
                prop_assert_eq!(&keys, &want);
                for e in &model {
                    prop_assert!(m.contains_key(&e.0));
                }
            }
            let all: Vec<u8> = m.take().into_iter().map(|e| e.0).collect();
            prop_assert_eq!(all, model.iter().map(|e| e.0).collect::<Vec<_>>());
            prop_assert!(m.is_empty());
        }
    }
}
