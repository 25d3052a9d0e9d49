//! Digests as the feed-head bolt keeps them (SPEC section 3): each user's
//! feed rolled up into groups, exactly, in bounded state.
//!
//! The bolt already has every story and its users' interests on the worker
//! ([`Fanout`]), so a delivery updates the user's group in place: no
//! delivery leaves the worker. Per user and digest the state holds the feed
//! entries of whole time buckets, from `counted_from` up. A group lies in
//! one bucket, so every group held is complete, and a group older than
//! `counted_from` is older than every group held. When more than
//! `digest_size + slack` groups are held, the oldest buckets that the
//! newest `digest_size + slack` groups do not use are dropped; when
//! retractions leave fewer than `digest_size`, older buckets are counted
//! again from the story index (the rebuild path), in the same epoch.
//!
//! Each entry is counted once per interest that brings it (its paths), so
//! an unfollow or delete removes exactly what it brought.

use std::cmp::Reverse;
use std::rc::Rc;
use std::sync::Arc;

use crate::bolt::digest::{DigestChange, GroupChange};
use crate::bolt::fanout::{Entry, Fanout, FastMap, Slot, Slots, Tid};
use crate::bolt::recovery::stale_users;
use crate::bolt::top_k::TopK;
use crate::digest::{DigestSpec, Group, GroupOrder};
use crate::event::{Millis, TypedId};
use crate::feed::FeedKey;
use crate::store::Store;

/// A group key interned on this worker.
type GroupId = u32;

/// A group's place in its digest.
type Place = GroupOrder<Rc<str>>;

/// One spec's group keys on this worker, each counted by the retained
/// stories that have it, so a key lives as long as a story does.
#[derive(Default)]
struct Keys {
    ids: FastMap<Rc<str>, GroupId>,
    /// Per id: the key, its bucket start, and how many stories have it.
    names: Vec<(Rc<str>, Millis, u32)>,
    free: Vec<GroupId>,
}

impl Keys {
    fn acquire(&mut self, key: String, bucket: Millis) -> GroupId {
        if let Some(&id) = self.ids.get(key.as_str()) {
            self.names[id as usize].2 += 1;
            return id;
        }
        let key: Rc<str> = Rc::from(key);
        let id = match self.free.pop() {
            Some(id) => {
                self.names[id as usize] = (key.clone(), bucket, 1);
                id
            }
            None => {
                self.names.push((key.clone(), bucket, 1));
                GroupId::try_from(self.names.len() - 1).expect("fewer than 2^32 group keys")
            }
        };
        self.ids.insert(key, id);
        id
    }

    fn release(&mut self, id: GroupId) {
        let (key, _, stories) = &mut self.names[id as usize];
        *stories -= 1;
        if *stories == 0 {
            self.ids.remove(key);
            self.free.push(id);
        }
    }

    fn name(&self, id: GroupId) -> &Rc<str> {
        &self.names[id as usize].0
    }

    fn bucket(&self, id: GroupId) -> Millis {
        self.names[id as usize].1
    }
}

/// One group of one user: its entries with their paths, and its actors.
struct GroupState {
    /// Entries in feed order (oldest first), each with its paths (> 0).
    entries: Vec<(Entry, u32)>,
    /// Distinct actors, sorted, each with their number of entries here.
    actors: Vec<(Tid, u32)>,
    /// Changed in this epoch (listed in the user's `touched`).
    touched: bool,
}

impl GroupState {
    fn place(&self, key: &Rc<str>) -> Option<Place> {
        let (newest, _) = self.entries.last()?;
        Some(Place {
            last_time: newest.time,
            key: Reverse(key.clone()),
        })
    }

    /// Changes the paths of `entry` (by `actor`) by `diff`.
    fn update(&mut self, entry: Entry, actor: Tid, diff: isize, slots: &Slots) {
        let at = match self.entries.last() {
            Some((newest, _)) if slots.cmp(&entry, newest).is_gt() => Err(self.entries.len()),
            _ => self
                .entries
                .binary_search_by(|(probe, _)| slots.cmp(probe, &entry)),
        };
        match at {
            Ok(at) => {
                let paths = self.entries[at].1 as isize + diff;
                assert!(paths >= 0, "negative paths for {entry:?}");
                if paths > 0 {
                    self.entries[at].1 = paths as u32;
                    return;
                }
                self.entries.remove(at);
                let who = self
                    .actors
                    .binary_search_by_key(&actor, |(a, _)| *a)
                    .expect("actor of a present entry");
                self.actors[who].1 -= 1;
                if self.actors[who].1 == 0 {
                    self.actors.remove(who);
                }
            }
            Err(at) => {
                assert!(diff > 0, "negative paths for {entry:?}");
                self.entries.insert(at, (entry, diff as u32));
                match self.actors.binary_search_by_key(&actor, |(a, _)| *a) {
                    Ok(who) => self.actors[who].1 += 1,
                    Err(who) => self.actors.insert(who, (actor, 1)),
                }
            }
        }
    }

    fn view(&self, key: &str, spec: &DigestSpec, slots: &Slots) -> Group {
        let newest = slots.story(self.entries.last().expect("non-empty group").0);
        let oldest = slots.story(self.entries[0].0);
        // Distinct actors by their newest entry: newest first, as many as shown.
        let wanted = spec.sizes.max_actors.min(self.actors.len());
        let mut actors: Vec<TypedId> = Vec::with_capacity(wanted);
        for (entry, _) in self.entries.iter().rev() {
            if actors.len() == wanted {
                break;
            }
            let actor = &slots.story(*entry).0.actor;
            if !actors.contains(actor) {
                actors.push(actor.clone());
            }
        }
        Group {
            key: key.to_owned(),
            verb: newest.0.verb.clone(),
            object: newest.0.object.clone(),
            actors,
            actor_count: self.actors.len(),
            activity_count: self.entries.len(),
            first_time: oldest.0.time,
            last_time: newest.0.time,
            activity_ids: self
                .entries
                .iter()
                .rev()
                .take(spec.sizes.max_activities)
                .map(|(entry, _)| slots.story(*entry).0.id.clone())
                .collect(),
        }
    }
}

/// One user's groups of one digest.
#[derive(Default)]
struct UserDigest {
    /// Every feed entry at or after this time is counted (a bucket start);
    /// `None`: every entry is.
    counted_from: Option<Millis>,
    groups: FastMap<GroupId, GroupState>,
    /// Non-empty groups.
    held: usize,
    order: TopK<Place>,
    /// Groups changed this epoch, with their place when it began.
    touched: Vec<(GroupId, Option<Place>)>,
}

impl UserDigest {
    fn counts(&self, time: Millis) -> bool {
        self.counted_from.is_none_or(|from| time >= from)
    }

    fn deliver(&mut self, keys: &Keys, group: GroupId, entry: Entry, diff: isize, slots: &Slots) {
        if !self.counts(entry.time) {
            return;
        }
        let state = self.groups.entry(group).or_insert_with(|| GroupState {
            entries: Vec::new(),
            actors: Vec::new(),
            touched: false,
        });
        if !state.touched {
            state.touched = true;
            self.touched.push((group, state.place(keys.name(group))));
        }
        let was_empty = state.entries.is_empty();
        state.update(entry, slots.about(entry)[0], diff, slots);
        match (was_empty, state.entries.is_empty()) {
            (true, false) => self.held += 1,
            (false, true) => self.held -= 1,
            _ => {}
        }
    }
}

/// The digests of the users one feed-head bolt owns. See the module docs.
pub struct DigestGroups {
    specs: Vec<DigestSpec>,
    slack: usize,
    keys: Vec<Keys>,
    /// Per story slot, its group in each spec.
    story_groups: Vec<GroupId>,
    /// Slots whose stories were removed this epoch: their keys are released at its end.
    released: Vec<Slot>,
    users: FastMap<Tid, Vec<UserDigest>>,
    /// Users with a digest changed this epoch.
    touched: Vec<Tid>,
}

impl DigestGroups {
    /// Digests for `specs`, each holding about `digest_size + slack` groups per user.
    pub fn new(specs: Vec<DigestSpec>, slack: usize) -> DigestGroups {
        DigestGroups {
            keys: specs.iter().map(|_| Keys::default()).collect(),
            specs,
            slack,
            story_groups: Vec::new(),
            released: Vec::new(),
            users: FastMap::default(),
            touched: Vec::new(),
        }
    }

    /// Whether any digest is kept.
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    fn group_of(&self, entry: Entry, spec: usize) -> GroupId {
        self.story_groups[entry.slot as usize * self.specs.len() + spec]
    }

    /// Notes the group of a newly kept story in each spec.
    pub fn add_story(&mut self, entry: Entry, slots: &Slots) {
        let n = self.specs.len();
        let at = entry.slot as usize * n;
        if self.story_groups.len() < at + n {
            self.story_groups.resize(at + n, 0);
        }
        let story = slots.story(entry);
        for (spec_index, spec) in self.specs.iter().enumerate() {
            let id = self.keys[spec_index].acquire(spec.key(&story.0), spec.bucket(story.0.time));
            self.story_groups[at + spec_index] = id;
        }
    }

    /// Notes that a story was removed (its groups are released when the epoch ends).
    pub fn remove_story(&mut self, entry: Entry) {
        if !self.specs.is_empty() {
            self.released.push(entry.slot);
        }
    }

    /// `entry`'s paths into `user`'s feed change by `diff`.
    pub fn deliver(&mut self, user: Tid, entry: Entry, diff: isize, slots: &Slots) {
        if self.specs.is_empty() {
            return;
        }
        let n = self.specs.len();
        let digests = self.users.entry(user).or_insert_with(|| {
            self.touched.push(user);
            (0..n).map(|_| UserDigest::default()).collect()
        });
        if digests.iter().all(|d| d.touched.is_empty()) {
            self.touched.push(user);
        }
        for (spec, digest) in digests.iter_mut().enumerate() {
            let group = self.story_groups[entry.slot as usize * n + spec];
            digest.deliver(&self.keys[spec], group, entry, diff, slots);
        }
    }

    /// `user`'s interest `interest` (its stories kept before this epoch)
    /// counts `diff` times more: a follow or unfollow.
    pub fn follow(&mut self, user: Tid, interest: Tid, diff: isize, fanout: &Fanout) {
        if self.specs.is_empty() {
            return;
        }
        let oldest_counted = self.users.get(&user).map_or(Some(Millis::MIN), |digests| {
            digests.iter().map(|d| d.counted_from).min().flatten()
        });
        let oldest_counted = oldest_counted.unwrap_or(Millis::MIN);
        for entry in fanout.stories_about(interest) {
            if entry.time < oldest_counted {
                break;
            }
            self.deliver(user, entry, diff, &fanout.slots);
        }
    }

    /// Ends the epoch: refills and trims the touched users' digests and
    /// emits their changes; releases removed stories' keys.
    pub fn end_epoch(&mut self, fanout: &Fanout, out: &mut Vec<DigestChange>) {
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        touched.dedup();
        for u in touched {
            let Some(mut digests) = self.users.remove(&u) else {
                continue;
            };
            for (spec_index, digest) in digests.iter_mut().enumerate() {
                self.refill(u, spec_index, digest, fanout);
                self.emit(u, spec_index, digest, fanout, out);
            }
            let empty = digests
                .iter()
                .all(|d| d.held == 0 && d.counted_from.is_none());
            if !empty {
                self.users.insert(u, digests);
            }
        }
        let n = self.specs.len();
        for slot in self.released.drain(..) {
            for (spec, keys) in self.keys.iter_mut().enumerate() {
                keys.release(self.story_groups[slot as usize * n + spec]);
            }
        }
    }

    /// Counts older buckets again while fewer than `digest_size` groups are held.
    fn refill(&self, u: Tid, spec_index: usize, digest: &mut UserDigest, fanout: &Fanout) {
        let spec = &self.specs[spec_index];
        while digest.held < spec.sizes.digest_size {
            let Some(from) = digest.counted_from else {
                return;
            };
            let below = FeedKey::new(from, "");
            let Some(older) = fanout.merged(u, Some(&below), 1).first().copied() else {
                digest.counted_from = None;
                return;
            };
            let start = spec.bucket(older.time);
            digest.counted_from = Some(start);
            for &interest in fanout.interests(u) {
                for entry in fanout.stories_about_between(interest, start, from) {
                    let group = self.group_of(entry, spec_index);
                    digest.deliver(&self.keys[spec_index], group, entry, 1, &fanout.slots);
                }
            }
        }
    }

    /// Moves the touched groups to their new places, drops buckets beyond
    /// the bound, and emits the changes to the head.
    fn emit(
        &self,
        u: Tid,
        spec_index: usize,
        digest: &mut UserDigest,
        fanout: &Fanout,
        out: &mut Vec<DigestChange>,
    ) {
        let (spec, keys) = (&self.specs[spec_index], &self.keys[spec_index]);
        let size = spec.sizes.digest_size;
        let mut head_changes = Vec::new();
        let mut changed: Vec<GroupId> = Vec::with_capacity(digest.touched.len());
        for (group, before) in std::mem::take(&mut digest.touched) {
            let state = digest.groups.get_mut(&group).expect("touched group");
            state.touched = false;
            let after = state.place(keys.name(group));
            if state.entries.is_empty() {
                digest.groups.remove(&group);
            }
            if before != after {
                if let Some(before) = before {
                    digest.order.update(before, -1, size, &mut head_changes);
                }
                if let Some(after) = after {
                    digest.order.update(after, 1, size, &mut head_changes);
                }
            }
            changed.push(group);
        }
        self.trim(spec_index, digest);
        // Net head membership by key: a group that moved inside the head
        // left at its old place and entered at its new one.
        let mut membership: FastMap<Rc<str>, isize> = FastMap::default();
        for (place, diff) in head_changes {
            *membership.entry(place.key.0).or_default() += diff;
        }
        let in_head = |group: GroupId| {
            digest.groups.get(&group).is_some_and(|state| {
                let place = state
                    .place(keys.name(group))
                    .expect("held groups are non-empty");
                digest.order.in_head(&place)
            })
        };
        let mut changes: Vec<(Rc<str>, GroupChange)> = Vec::new();
        let put = |key: &Rc<str>, group: GroupId| {
            let state = &digest.groups[&group];
            GroupChange::Put(Arc::new(state.view(key, spec, &fanout.slots)))
        };
        for group in changed {
            let key = keys.name(group);
            if in_head(group) && !membership.contains_key(key) {
                changes.push((key.clone(), put(key, group)));
            }
        }
        for (key, diff) in membership {
            let group = keys.ids[&key];
            if in_head(group) {
                changes.push((key.clone(), put(&key, group)));
            } else if diff < 0 {
                changes.push((key.clone(), GroupChange::Remove(key.to_string())));
            }
        }
        let user = fanout.typed_ids.name(u);
        // A stable order makes the output independent of hashing.
        changes.sort_by(|a, b| a.0.cmp(&b.0));
        out.extend(changes.into_iter().map(|(_, change)| DigestChange {
            user: user.clone(),
            digest: spec.name.clone(),
            change,
        }));
    }

    /// Drops the groups in buckets older than every one of the newest
    /// `digest_size + slack` groups, once twice the slack is exceeded.
    fn trim(&self, spec_index: usize, digest: &mut UserDigest) {
        let (spec, keys) = (&self.specs[spec_index], &self.keys[spec_index]);
        let keep = spec.sizes.digest_size + self.slack;
        if digest.held <= keep + self.slack.max(1) {
            return;
        }
        let Some(last_kept) = digest.order.head(keep).last() else {
            return;
        };
        let from = spec.bucket(last_kept.last_time);
        if digest.counted_from.is_some_and(|counted| counted >= from) {
            return;
        }
        let dropped: Vec<GroupId> = digest
            .groups
            .keys()
            .copied()
            .filter(|group| keys.bucket(*group) < from)
            .collect();
        let mut head_changes = Vec::new();
        for group in dropped {
            let state = digest.groups.remove(&group).expect("listed");
            let place = state
                .place(keys.name(group))
                .expect("held groups are non-empty");
            digest
                .order
                .update(place, -1, spec.sizes.digest_size, &mut head_changes);
            digest.held -= 1;
        }
        debug_assert!(
            head_changes.is_empty(),
            "dropped groups were outside the head"
        );
        digest.counted_from = Some(from);
    }

    /// Every digest of the users this worker owns, whole (a reset, then the
    /// head), and a reset for each stored digest of a user it owns but no longer has.
    pub fn recovered(
        &self,
        fanout: &Fanout,
        store: &dyn Store,
        index: usize,
        peers: usize,
        out: &mut Vec<DigestChange>,
    ) {
        for (spec_index, spec) in self.specs.iter().enumerate() {
            let keys = &self.keys[spec_index];
            let change = |user: &TypedId, change| DigestChange {
                user: user.clone(),
                digest: spec.name.clone(),
                change,
            };
            for (u, digests) in &self.users {
                let user = fanout.typed_ids.name(*u);
                out.push(change(user, GroupChange::Reset));
                let digest = &digests[spec_index];
                for place in digest.order.head(spec.sizes.digest_size) {
                    let key = &place.key.0;
                    let state = &digest.groups[&keys.ids[key]];
                    let group = state.view(key, spec, &fanout.slots);
                    out.push(change(user, GroupChange::Put(Arc::new(group))));
                }
            }
            let has = |user: &TypedId| {
                fanout
                    .typed_ids
                    .get(user)
                    .is_some_and(|u| self.users.contains_key(&u))
            };
            for user in stale_users(store.digest_users(&spec.name), index, peers, has) {
                out.push(change(&user, GroupChange::Reset));
            }
        }
    }
}
