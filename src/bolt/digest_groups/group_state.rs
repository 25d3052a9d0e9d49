//! One group of one user's digest: exact counts, and its newest entries only.

use std::cmp::Reverse;
use std::sync::Arc;

use smallvec::SmallVec;

use super::Place;
use crate::bolt::fanout::{Entry, Slots, Tid};
use crate::digest::{DigestSpec, Group};
use crate::event::TypedId;

/// A group's distinct actors, sorted, each with their number of entries:
/// most groups have one or two, held inline (no allocation per group).
type Actors = SmallVec<[(Tid, u32); 2]>;

/// The distinct `actors`, sorted, each with its number of entries: sorted
/// once rather than inserted one by one (a popular group has hundreds of
/// actors, and each insert moved half of them). Sorts `actors` in place.
pub(super) fn actor_counts(actors: &mut [Tid]) -> Actors {
    actors.sort_unstable();
    // Sized once: a popular group's list outgrew its inline room and then
    // doubled, a reallocation each time.
    let distinct = 1 + actors.windows(2).filter(|w| w[0] != w[1]).count();
    let mut counts = Actors::with_capacity(distinct.min(actors.len()));
    for &actor in actors.iter() {
        match counts.last_mut() {
            Some((last, n)) if *last == actor => *n += 1,
            _ => counts.push((actor, 1)),
        }
    }
    counts
}

/// Counts one more entry by `actor` in `actors` (sorted by actor).
fn count_actor(actors: &mut Actors, actor: Tid) {
    match actors.binary_search_by_key(&actor, |(a, _)| *a) {
        Ok(at) => actors[at].1 += 1,
        Err(at) => actors.insert(at, (actor, 1)),
    }
}

/// One group of one user: exact counts, and its newest entries only. A
/// retraction that leaves fewer than the view shows (or takes the oldest)
/// has the group loaded again from its key's stories.
pub(super) struct GroupState {
    /// Entries in the user's feed.
    pub(super) count: u32,
    /// Distinct actors, sorted, each with their number of entries here.
    pub(super) actors: Actors,
    /// The newest entries, oldest first: every entry at or above the first
    /// is here, and at most twice the view's `shown` of them.
    pub(super) newest: SmallVec<[Entry; 2]>,
    /// The oldest entry (`None` once it left, until the group is loaded again).
    pub(super) oldest: Option<Entry>,
    /// Changed in this epoch (listed in the user's `touched`).
    pub(super) touched: bool,
}

/// What a change did to a held group.
pub(super) enum Updated {
    Done,
    /// Its newest entries or its oldest are no longer known: load it again.
    Reload,
    /// The change contradicts the group (a safety net: load it again).
    OutOfStep,
}

impl GroupState {
    pub(super) fn empty() -> GroupState {
        GroupState {
            count: 0,
            actors: Actors::new(),
            newest: SmallVec::new(),
            oldest: None,
            touched: true,
        }
    }

    pub(super) fn place(&self, key: &Arc<str>) -> Option<Place> {
        let newest = self.newest.last()?;
        Some(Place {
            last_time: newest.time,
            key: Reverse(key.clone()),
        })
    }

    fn is_complete(&self) -> bool {
        self.newest.len() == self.count as usize
    }

    /// `entry` (by `actor`) joins (`joins`) or leaves the user's feed.
    pub(super) fn update(
        &mut self,
        entry: Entry,
        actor: Tid,
        joins: bool,
        shown: usize,
        slots: &Slots,
    ) -> Updated {
        let above_known = self
            .newest
            .first()
            .is_some_and(|first| slots.cmp(&entry, first).is_gt());
        if joins {
            if self.is_complete() || above_known {
                match slots.search_slice(&self.newest, &entry) {
                    Ok(_) => return Updated::OutOfStep,
                    // The oldest of a full list: it would go at once.
                    Err(0) if self.newest.len() >= 2 * shown => {}
                    Err(at) => {
                        self.newest.insert(at, entry);
                        if self.newest.len() > 2 * shown {
                            self.newest.remove(0);
                        }
                    }
                }
            }
            if self.count == 0 || self.oldest.is_some_and(|o| slots.cmp(&entry, &o).is_lt()) {
                self.oldest = Some(entry);
            }
            self.count += 1;
            count_actor(&mut self.actors, actor);
            return Updated::Done;
        }
        let who = self.actors.binary_search_by_key(&actor, |(a, _)| *a);
        let (Ok(at), true) = (who, self.count > 0) else {
            return Updated::OutOfStep;
        };
        match slots.search_slice(&self.newest, &entry) {
            Ok(index) => {
                self.newest.remove(index);
            }
            Err(_) if above_known => return Updated::OutOfStep,
            Err(_) => {}
        }
        self.count -= 1;
        self.actors[at].1 -= 1;
        if self.actors[at].1 == 0 {
            self.actors.remove(at);
        }
        if self.oldest.is_some_and(|o| o.slot == entry.slot) {
            self.oldest = self
                .is_complete()
                .then(|| self.newest.first().copied())
                .flatten();
        }
        let short = self.newest.len() < shown && !self.is_complete();
        if self.count > 0 && (short || self.oldest.is_none()) {
            Updated::Reload
        } else {
            Updated::Done
        }
    }

    pub(super) fn view(
        &self,
        key: &Arc<str>,
        spec: &DigestSpec,
        slots: &Slots,
        members: impl FnOnce() -> Vec<Entry>,
    ) -> Group {
        let oldest = &slots
            .story(self.oldest.expect("a loaded group knows its oldest"))
            .0;
        let wanted = spec.sizes.max_actors.min(self.actors.len());
        let mut shown = shown_actors(&self.newest, wanted, slots);
        // Rarely, the shown actors lie below the newest entries kept.
        let all;
        let newest: &[Entry] = if shown.len() < wanted && !self.is_complete() {
            all = members();
            shown = shown_actors(&all, wanted, slots);
            &all
        } else {
            &self.newest
        };
        let newest_first = newest.iter().rev().map(|e| &*slots.story(*e).0);
        Group::with_actors(
            key,
            spec,
            newest_first,
            shown,
            oldest,
            self.actors.len(),
            self.count as usize,
        )
    }
}

/// The first `wanted` distinct actors of `entries` (oldest first), newest
/// first: compared by interned id, each named by its story's actor.
fn shown_actors(entries: &[Entry], wanted: usize, slots: &Slots) -> Vec<TypedId> {
    let mut seen: SmallVec<[Tid; 8]> = SmallVec::new();
    let mut shown = Vec::with_capacity(wanted);
    for entry in entries.iter().rev() {
        if shown.len() == wanted {
            break;
        }
        let actor = slots.about(*entry)[0];
        if !seen.contains(&actor) {
            seen.push(actor);
            shown.push(slots.story(*entry).0.actor.clone());
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::{actor_counts, count_actor, Actors};

    #[test]
    fn actors_counted_at_once_equal_actors_counted_one_by_one() {
        let actors = [5, 3, 5, 9, 3, 5, 1, 9, 9, 9, 2];
        let mut one_by_one = Actors::new();
        for actor in actors {
            count_actor(&mut one_by_one, actor);
        }
        let at_once = actor_counts(&mut actors.clone());
        assert_eq!(at_once.as_slice(), one_by_one.as_slice());
        assert_eq!(at_once.as_slice(), [(1, 1), (2, 1), (3, 2), (5, 3), (9, 4)]);
    }
}
