//! One user's groups of one digest, and what an epoch changed of them.

use super::group_state::{GroupState, Updated};
use super::keys::Keys;
use super::{GroupId, Place};
use crate::bolt::fanout::{Entry, FastMap, Slots};
use crate::bolt::top_k::TopK;
use crate::event::Millis;

/// One user's groups of one digest.
pub(super) struct UserDigest {
    /// Every group whose newest entry is at or after this time is held;
    /// `None`: every group is.
    pub(super) held_from: Option<Millis>,
    /// No held group's bucket starts before this (a lower bound: groups
    /// below `held_from` may stay held until trimmed), so a follow need not
    /// read the interest's older stories.
    pub(super) oldest_bucket: Millis,
    /// The held groups; none is empty at the end of an epoch.
    pub(super) groups: FastMap<GroupId, GroupState>,
    pub(super) order: TopK<Place>,
    /// Groups changed this epoch, with their place when it began.
    pub(super) touched: Vec<(GroupId, Option<Place>)>,
    /// Groups not held that a new entry may bring into the held range,
    /// each with that entry's time.
    pub(super) candidates: Vec<(GroupId, Millis)>,
    /// Held groups to load again at the end of the epoch, and whether a
    /// change found the group out of step (a safety net the oracle tests
    /// never need).
    pub(super) reload: Vec<(GroupId, bool)>,
    /// A held group lost an entry this epoch (or the digest is new): fewer
    /// than `digest_size` groups may reach `held_from`, so the end of the
    /// epoch counts them and refills. Joins alone never need it, and the
    /// count reads every held group.
    pub(super) shrank: bool,
}

impl Default for UserDigest {
    fn default() -> Self {
        UserDigest {
            held_from: None,
            oldest_bucket: Millis::MAX,
            groups: FastMap::default(),
            order: TopK::default(),
            touched: Vec::new(),
            candidates: Vec::new(),
            reload: Vec::new(),
            shrank: false,
        }
    }
}

impl UserDigest {
    /// Whether this epoch changed the digest: it has work at the epoch's end.
    pub(super) fn changed(&self) -> bool {
        !self.touched.is_empty() || !self.candidates.is_empty() || self.shrank
    }

    /// Holds a freshly loaded group (it was not held: no place before).
    pub(super) fn hold(&mut self, keys: &Keys, group: GroupId, mut state: GroupState) {
        self.oldest_bucket = self.oldest_bucket.min(keys.bucket(group));
        state.touched = true;
        self.groups.insert(group, state);
        self.touched.push((group, None));
    }

    /// `entry` of `group` (whose bucket starts at `bucket`) joins (`joins`)
    /// or leaves the user's feed.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn deliver(
        &mut self,
        keys: &Keys,
        group: GroupId,
        bucket: Millis,
        entry: Entry,
        joins: bool,
        shown: usize,
        slots: &Slots,
    ) {
        let older = self.held_from.is_some_and(|from| entry.time < from);
        if bucket < self.oldest_bucket && (older || !joins) {
            // Not held (no held group's bucket starts this early), and
            // stays older than every group that must be: no lookup needed.
            return;
        }
        let state = match self.groups.get_mut(&group) {
            Some(state) => state,
            None => {
                if !joins || older {
                    // Not held, and stays older than every group that must be.
                    return;
                }
                if self.held_from.is_some_and(|from| bucket < from) {
                    // It may have older entries: loaded at the end of the epoch.
                    self.candidates.push((group, entry.time));
                    return;
                }
                // Its bucket starts in the held range: it has no other entries.
                self.oldest_bucket = self.oldest_bucket.min(bucket);
                self.touched.push((group, None));
                self.groups.entry(group).or_insert_with(GroupState::empty)
            }
        };
        if !state.touched {
            state.touched = true;
            self.touched.push((group, state.place(keys.name(group))));
        }
        self.shrank |= !joins;
        match state.update(entry, slots.about(entry)[0], joins, shown, slots) {
            Updated::Done => {}
            Updated::Reload => self.reload.push((group, false)),
            Updated::OutOfStep => self.reload.push((group, true)),
        }
    }
}
