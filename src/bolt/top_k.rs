//! A bounded top-K over a multiset, kept exactly and incrementally: the
//! shared core of the feed-head and digest bolts.
//!
//! It keeps every candidate (with its multiplicity) in an ordered map and
//! the *boundary*: the smallest candidate inside the head of the K largest.
//! An insertion above the boundary pushes the boundary out; a removal inside
//! the head pulls in the next smaller candidate. Each update costs O(log n)
//! and reports only real changes to the head.

use std::collections::BTreeMap;
use std::ops::Bound;

/// The `size` largest of a multiset of candidates.
#[derive(Debug)]
pub struct TopK<K> {
    /// Every candidate with its multiplicity (> 0).
    pub entries: BTreeMap<K, u32>,
    /// The smallest candidate in the head; `None` when there are none.
    boundary: Option<K>,
}

impl<K> Default for TopK<K> {
    fn default() -> Self {
        TopK {
            entries: BTreeMap::new(),
            boundary: None,
        }
    }
}

impl<K: Ord + Clone + std::fmt::Debug> TopK<K> {
    fn next_after(&self, entry: &K) -> Option<K> {
        self.entries
            .range((Bound::Excluded(entry), Bound::Unbounded))
            .next()
            .map(|(e, _)| e.clone())
    }

    fn prev_before(&self, entry: &K) -> Option<K> {
        self.entries
            .range(..entry)
            .next_back()
            .map(|(e, _)| e.clone())
    }

    /// Adds a new candidate (not yet present).
    fn insert(&mut self, entry: K, size: usize, changes: &mut Vec<(K, isize)>) {
        let before = self.entries.len();
        self.entries.insert(entry.clone(), 0);
        match self.boundary.clone() {
            _ if before < size => {
                if self.boundary.as_ref().is_none_or(|b| entry < *b) {
                    self.boundary = Some(entry.clone());
                }
                changes.push((entry, 1));
            }
            Some(boundary) if entry > boundary => {
                self.boundary = self.next_after(&boundary);
                changes.push((entry, 1));
                changes.push((boundary, -1));
            }
            _ => {}
        }
    }

    /// Removes a present candidate.
    fn remove(&mut self, entry: &K, changes: &mut Vec<(K, isize)>) {
        self.entries.remove(entry);
        let Some(boundary) = self.boundary.clone() else {
            return;
        };
        if *entry < boundary {
            return;
        }
        changes.push((entry.clone(), -1));
        match self.prev_before(&boundary) {
            Some(older) => {
                changes.push((older.clone(), 1));
                self.boundary = Some(older);
            }
            None if *entry == boundary => self.boundary = self.next_after(entry),
            None => {}
        }
    }

    /// Whether `entry` is a candidate inside the head.
    pub fn in_head(&self, entry: &K) -> bool {
        self.entries.contains_key(entry) && self.boundary.as_ref().is_some_and(|b| entry >= b)
    }

    /// The head, largest first.
    pub fn head(&self, size: usize) -> impl Iterator<Item = &K> {
        self.entries.keys().rev().take(size)
    }

    /// Changes `entry`'s multiplicity by `diff` and pushes the changes to
    /// the head onto `changes` (`+1` enters, `-1` leaves). Returns whether
    /// the entry stopped being a candidate.
    pub fn update(
        &mut self,
        entry: K,
        diff: isize,
        size: usize,
        changes: &mut Vec<(K, isize)>,
    ) -> bool {
        let old = self.entries.get(&entry).copied().unwrap_or(0) as isize;
        let new = old + diff;
        assert!(
            new >= 0,
            "negative delivery count for {entry:?}: {old} {diff:+}"
        );
        match (old, new) {
            (0, 0) => {}
            (0, _) => {
                self.insert(entry.clone(), size, changes);
                self.entries.insert(entry, new as u32);
            }
            (_, 0) => {
                self.remove(&entry, changes);
                return true;
            }
            _ => {
                self.entries.insert(entry, new as u32);
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The head kept incrementally equals the top of the sorted candidates
    /// after every step of a random insert/remove sequence.
    #[test]
    fn boundary_matches_sorting() {
        for seed in 0..20 {
            let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
            let size = rng.gen_range(1..6);
            let mut feed = TopK::default();
            let mut head = std::collections::BTreeSet::new();
            let mut counts: BTreeMap<(u8, u8), isize> = BTreeMap::new();
            for _ in 0..400 {
                let entry = (rng.gen_range(0..8), rng.gen_range(0..4));
                let count = counts.entry(entry).or_default();
                let diff = if *count > 0 && rng.gen_bool(0.5) {
                    -1
                } else {
                    1
                };
                *count += diff;
                let mut changes = Vec::new();
                feed.update(entry, diff, size, &mut changes);
                for (e, d) in changes {
                    if d > 0 {
                        assert!(head.insert(e));
                    } else {
                        assert!(head.remove(&e));
                    }
                }
                let expected: Vec<_> = counts
                    .iter()
                    .filter(|(_, c)| **c > 0)
                    .map(|(e, _)| *e)
                    .rev()
                    .take(size)
                    .collect();
                assert_eq!(head.iter().rev().cloned().collect::<Vec<_>>(), expected);
            }
        }
    }
}
