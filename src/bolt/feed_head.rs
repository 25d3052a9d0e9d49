//! Feed heads: the newest `feed_size` entries of each user's feed, kept
//! exactly and incrementally.
//!
//! Per user the operator keeps every candidate entry (with how many of the
//! user's interests delivered it) in an ordered map, and the *boundary*: the
//! oldest entry inside the head. An insertion above the boundary pushes the
//! boundary out; a removal inside the head pulls in the next older entry.
//! Each delivery costs O(log n) and emits only real changes to the head.
//! Entries hold interned ids, so an activity delivered to many users on a
//! worker stores its id once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use differential_dataflow::VecCollection;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::StreamVec;

use crate::bolt::EpochStash;
use crate::event::{Millis, TypedId};
use crate::feed::FeedKey;
use crate::grouping::route;

/// A change to a user's feed head: `+1` enters, `-1` leaves.
pub type HeadChange = (TypedId, FeedKey, isize);

/// Maintains bounded feed heads.
pub trait MaintainHead<'scope> {
    /// Changes to each user's head of `feed_size` entries, in SPEC order
    /// (newest `time`, then largest `id`). `deliveries` counts the updates
    /// consumed (the benchmark's "feed deliveries").
    fn maintain_head(
        self,
        feed_size: usize,
        deliveries: Arc<AtomicU64>,
    ) -> StreamVec<'scope, u64, HeadChange>;
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    time: Millis,
    id: Rc<str>,
}

/// One user's candidates and head boundary.
#[derive(Default)]
struct UserFeed {
    /// Every candidate entry with its number of deliveries (> 0).
    entries: BTreeMap<Entry, u32>,
    /// The oldest entry in the head; `None` when there are no entries.
    boundary: Option<Entry>,
}

impl UserFeed {
    fn next_after(&self, entry: &Entry) -> Option<Entry> {
        self.entries
            .range((Bound::Excluded(entry), Bound::Unbounded))
            .next()
            .map(|(e, _)| e.clone())
    }

    fn prev_before(&self, entry: &Entry) -> Option<Entry> {
        self.entries
            .range(..entry)
            .next_back()
            .map(|(e, _)| e.clone())
    }

    /// Adds a new candidate (not yet present).
    fn insert(&mut self, entry: Entry, size: usize, changes: &mut Vec<(Entry, isize)>) {
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
    fn remove(&mut self, entry: &Entry, changes: &mut Vec<(Entry, isize)>) {
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

    fn update(
        &mut self,
        entry: Entry,
        diff: isize,
        size: usize,
        changes: &mut Vec<(Entry, isize)>,
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

/// Interned activity ids, shared by all users' entries on one worker.
#[derive(Default)]
struct Interner(HashSet<Rc<str>>);

impl Interner {
    fn intern(&mut self, id: &str) -> Rc<str> {
        if let Some(rc) = self.0.get(id) {
            return rc.clone();
        }
        let rc: Rc<str> = Rc::from(id);
        self.0.insert(rc.clone());
        rc
    }

    /// Forgets `id` once the caller's copy is the last one outside the interner.
    fn release(&mut self, id: &Rc<str>) {
        if Rc::strong_count(id) == 2 {
            self.0.remove(id);
        }
    }
}

impl<'scope> MaintainHead<'scope> for VecCollection<'scope, u64, (TypedId, FeedKey), isize> {
    fn maintain_head(
        self,
        feed_size: usize,
        deliveries: Arc<AtomicU64>,
    ) -> StreamVec<'scope, u64, HeadChange> {
        let pact =
            Exchange::new(|((user, _), _, _): &((TypedId, FeedKey), u64, isize)| route(user));
        self.inner
            .unary_frontier(pact, "MaintainHead", move |_cap, _info| {
                let mut stash = EpochStash::new(1);
                let mut feeds: HashMap<TypedId, UserFeed> = HashMap::new();
                let mut ids = Interner::default();
                let mut changes = Vec::new();
                move |(input, frontier), output| {
                    input.for_each(|cap, data| stash.stash_updates(&cap, data.drain(..)));
                    for (caps, mut updates) in stash.take_ready(&[frontier]) {
                        deliveries.fetch_add(updates.len() as u64, Ordering::Relaxed);
                        differential_dataflow::consolidation::consolidate(&mut updates);
                        let mut session = output.session(&caps[0]);
                        let mut updates = updates.into_iter().peekable();
                        while let Some(((user, _), _)) = updates.peek() {
                            let user = user.clone();
                            let feed = feeds.entry(user.clone()).or_default();
                            while let Some(((_, key), diff)) =
                                updates.next_if(|((u, _), _)| *u == user)
                            {
                                let entry = Entry {
                                    time: key.time,
                                    id: ids.intern(&key.id),
                                };
                                let id = entry.id.clone();
                                let removed = feed.update(entry, diff, feed_size, &mut changes);
                                if removed {
                                    ids.release(&id);
                                }
                            }
                            if feed.entries.is_empty() {
                                feeds.remove(&user);
                            }
                            differential_dataflow::consolidation::consolidate(&mut changes);
                            session.give_iterator(changes.drain(..).map(|(entry, diff)| {
                                (user.clone(), FeedKey::new(entry.time, &*entry.id), diff)
                            }));
                        }
                    }
                }
            })
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
            let mut feed = UserFeed::default();
            let mut head: std::collections::BTreeSet<Entry> = Default::default();
            let mut counts: BTreeMap<Entry, isize> = BTreeMap::new();
            for _ in 0..400 {
                let entry = Entry {
                    time: rng.gen_range(0..8),
                    id: Rc::from(format!("a{}", rng.gen_range(0..4))),
                };
                let count = counts.entry(entry.clone()).or_default();
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
                    .map(|(e, _)| e.clone())
                    .rev()
                    .take(size)
                    .collect();
                assert_eq!(head.iter().rev().cloned().collect::<Vec<_>>(), expected);
            }
        }
    }
}
