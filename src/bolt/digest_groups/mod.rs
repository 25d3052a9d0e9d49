//! Digests as the feed-head bolt keeps them (SPEC section 3): each user's
//! feed rolled up into groups, exactly, in bounded state.
//!
//! The bolt already has every story and its users' interests on the worker
//! ([`Fanout`]), so a delivery updates the user's group in place: no
//! delivery leaves the worker. Per user and digest the state holds groups
//! and a time `held_from`: every group whose newest entry is at or after it
//! is held. The head (the newest `digest_size` groups) is therefore always
//! among the held groups. A held group keeps exact counts (entries, and
//! entries per actor), its oldest entry and only its newest entries; a
//! retraction that leaves it short, or takes its oldest, has it loaded again
//! from its key's stories at the end of the epoch.
//!
//! - A delivery to a held group updates it. A new entry at or after
//!   `held_from` for a group not held makes it a candidate, loaded at
//!   the end of the epoch from the worker's stories of that group key
//!   (unless its bucket starts at or after `held_from`: then it had no
//!   entries, and starts empty at once).
//! - Beyond `digest_size + 2 * slack` groups, the groups older than the
//!   newest `digest_size + slack` are dropped and `held_from` moves up.
//! - When retractions leave fewer than `digest_size`, the user's feed is
//!   walked down from `held_from` (the rebuild path's merge) and the groups
//!   met are loaded, in the same epoch.
//! - A user without digests yet (a first catch-up, a resume, a new user)
//!   takes no deliveries: the same walk builds the digests at the end of
//!   the epoch, from the top, reading only the newest groups. Delivering a
//!   first catch-up's every story instead cost a fifth more time.
//!
//! A delivery is a membership change: an entry's paths into the user's feed
//! (one per interest that brings it) went from none to some, or back. So an
//! entry leaves a group with its last path, and an unfollow or delete
//! removes exactly what it brought.
//!
//! | module | holds |
//! |---|---|
//! | `keys` | a spec's group keys, each with its stories; a user's group loaded from them |
//! | `group_state` | one held group: exact counts and its newest entries; its view |
//! | `user_digest` | one user's held groups of one digest, and the epoch's changes to them |

mod group_state;
mod keys;
mod user_digest;

use std::sync::Arc;

use group_state::GroupState;
use keys::{Keys, Member};
use user_digest::UserDigest;

use crate::bolt::digest::{DigestChange, GroupChange};
use crate::bolt::fanout::{Entry, Fanout, FastMap, FastSet, Slots, Tid};
use crate::bolt::recovery::{each_recovered_user, Only};
use crate::digest::{DigestSpec, Group, GroupOrder};
use crate::event::{Millis, TypedId};
use crate::feed::FeedKey;
use crate::store::Store;

/// A group key interned on this worker.
type GroupId = u32;

/// A group's place in its digest.
type Place = GroupOrder;

/// The epoch's views of whole groups, by digest and key: every user who
/// sees all of a group's stories (who follows its object, say) sees the
/// same view, so it is rendered once and its `Arc` shared.
type WholeViews = FastMap<(usize, GroupId), Arc<Group>>;

/// The distinct groups one run's joins reached so far (newest first), to
/// know when the older joins can no longer reach the head.
#[derive(Default)]
struct JoinedGroups {
    groups: FastSet<GroupId>,
    /// The time of the last join counted.
    last: Option<Millis>,
    /// `held_from` has moved up in this run: nothing more to count.
    done: bool,
}

impl JoinedGroups {
    fn clear(&mut self) {
        self.groups.clear();
        self.last = None;
        self.done = false;
    }

    /// Before a join at `time`: the time every group with a newer join is
    /// held from, once at least `keep` of them are (then once per run).
    fn raise(&mut self, time: Millis, keep: usize) -> Option<Millis> {
        let last = self.last.filter(|last| !self.done && time < *last)?;
        if self.groups.len() < keep {
            return None;
        }
        self.done = true;
        Some(last)
    }

    fn add(&mut self, group: GroupId, time: Millis) {
        if !self.done {
            self.groups.insert(group);
            self.last = Some(time);
        }
    }
}

/// How many of a group's newest entries its view can show: the kept
/// newest are twice this, so a few retractions need no reload.
fn shown(spec: &DigestSpec) -> usize {
    spec.sizes.max_activities.max(spec.sizes.max_actors)
}

/// The digests of the users one feed-head bolt owns. See the module docs.
pub struct DigestGroups {
    specs: Vec<DigestSpec>,
    slack: usize,
    keys: Vec<Keys>,
    /// Per story slot, its group in each spec.
    story_groups: Vec<GroupId>,
    users: FastMap<Tid, Vec<UserDigest>>,
    /// Users with a digest changed this epoch.
    touched: Vec<Tid>,
    /// Per spec, scratch for [`DigestGroups::deliver_run`].
    joined: Vec<JoinedGroups>,
}

impl DigestGroups {
    /// Digests for `specs`, each holding about `digest_size + slack` groups per user.
    pub fn new(specs: Vec<DigestSpec>, slack: usize) -> DigestGroups {
        DigestGroups {
            keys: specs.iter().map(|_| Keys::default()).collect(),
            specs,
            slack,
            story_groups: Vec::new(),
            users: FastMap::default(),
            touched: Vec::new(),
            joined: Vec::new(),
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
        let (story, parties) = (slots.story(entry), slots.parties(entry));
        for (spec_index, spec) in self.specs.iter().enumerate() {
            let keys = &mut self.keys[spec_index];
            let parts = keys.parts(spec, &story.0, parties);
            let member = Member { entry, parties };
            self.story_groups[at + spec_index] = keys.acquire(parts, || spec.key(&story.0), member);
        }
    }

    /// Notes that a story was removed.
    pub fn remove_story(&mut self, entry: Entry) {
        for spec in 0..self.specs.len() {
            let group = self.group_of(entry, spec);
            self.keys[spec].release(group, entry);
        }
    }

    /// `entry` joins (`joins`) or leaves `user`'s feed: its paths there
    /// went from none to some, or back. Call once per change, not per path.
    pub fn deliver(&mut self, user: Tid, entry: Entry, joins: bool, slots: &Slots) {
        self.deliver_run(user, [(entry, joins)], slots);
    }

    /// Changes `run`, all to `user`'s feed: its leaves, then its joins
    /// newest first. Once the joins so far reach `digest_size + slack`
    /// distinct groups, every group with an entry at or after the last
    /// join's time is held (or a candidate), so `held_from` moves up to it
    /// and the older joins to groups not held are dropped at once: a
    /// catch-up epoch brings each user thousands of groups, and only the
    /// newest ones can reach the head.
    pub fn deliver_run(
        &mut self,
        user: Tid,
        run: impl IntoIterator<Item = (Entry, bool)>,
        slots: &Slots,
    ) {
        if self.specs.is_empty() {
            return;
        }
        // A user without digests yet (a first catch-up): built whole at the
        // end of the epoch by walking the feed from the top, which reads
        // only the newest groups, instead of taking every delivery.
        let n = self.specs.len();
        let Some(digests) = self.users.get_mut(&user) else {
            self.start_user(user);
            return;
        };
        let untouched = !digests.iter().any(UserDigest::changed);
        self.joined.resize_with(n, JoinedGroups::default);
        self.joined.iter_mut().for_each(JoinedGroups::clear);
        for (entry, joins) in run {
            for (spec, digest) in digests.iter_mut().enumerate() {
                let group = self.story_groups[entry.slot as usize * n + spec];
                let digest_spec = &self.specs[spec];
                if joins {
                    let keep = digest_spec.sizes.digest_size + self.slack;
                    if let Some(from) = self.joined[spec].raise(entry.time, keep) {
                        if digest.held_from.is_none_or(|held| held < from) {
                            digest.held_from = Some(from);
                        }
                    }
                }
                let bucket = digest_spec.bucket(entry.time);
                debug_assert_eq!(bucket, self.keys[spec].bucket(group));
                let shown = shown(digest_spec);
                digest.deliver(&self.keys[spec], group, bucket, entry, joins, shown, slots);
                if joins {
                    self.joined[spec].add(group, entry.time);
                }
            }
        }
        // Most leaves (retention's above all) miss every held group: such
        // a user has nothing to do at the end of the epoch.
        if untouched && digests.iter().any(UserDigest::changed) {
            self.touched.push(user);
        }
    }

    /// `user`'s interest `interest` (its stories kept before this epoch)
    /// is about to count `diff` times more: a follow or unfollow, called
    /// before the fan-out applies it, so that each story's paths before
    /// and after are known.
    pub fn follow(&mut self, user: Tid, interest: Tid, diff: isize, fanout: &Fanout) {
        if self.specs.is_empty() {
            return;
        }
        if !self.users.contains_key(&user) {
            // No digest: the user's feed is empty. An interest without
            // stories brings none into it, and the epoch's deliveries start
            // the digest if any reach it: an epoch that holds a first
            // start's graph and its first stories walks no user's feed.
            if fanout.stories_about(interest).next().is_some() {
                self.start_user(user);
            }
            return;
        }
        let oldest = self.oldest_held(user);
        for entry in fanout.stories_about(interest) {
            if entry.time < oldest {
                break;
            }
            if fanout.hides(user, entry) {
                continue; // out of the feed before and after
            }
            let before = fanout.paths(user, entry) as isize;
            let after = before + diff;
            if (before > 0) != (after > 0) {
                self.deliver(user, entry, after > 0, &fanout.slots);
            }
        }
    }

    /// `user` is about to block `blocked` (`joins` false: call before the
    /// fan-out applies it) or has just unblocked it (`joins` true: call
    /// after): the stories in the user's feed that name it as actor or
    /// object leave the user's digests, or join them.
    pub fn rejoin(&mut self, user: Tid, blocked: Tid, joins: bool, fanout: &Fanout) {
        if self.specs.is_empty() || self.start_user(user) {
            return;
        }
        let oldest = self.oldest_held(user);
        for entry in fanout.stories_about(blocked) {
            if entry.time < oldest {
                break;
            }
            if fanout.slots.names(entry, blocked) && fanout.in_feed_of(user, entry) {
                self.deliver(user, entry, joins, &fanout.slots);
            }
        }
    }

    /// Starts the digests of a user who has none yet (a new user, or a
    /// resume from a checkpoint), to be built whole at the end of the epoch
    /// by walking the feed from the top, not by a delivery per story of
    /// each interest. Whether it did.
    fn start_user(&mut self, user: Tid) -> bool {
        if self.users.contains_key(&user) {
            return false;
        }
        let digests = self
            .specs
            .iter()
            .map(|spec| UserDigest {
                held_from: Some(Millis::MAX),
                shrank: true,
                // The walk holds about this many at once: no rehash on the way.
                groups: FastMap::with_capacity_and_hasher(
                    spec.sizes.digest_size + 2 * self.slack,
                    Default::default(),
                ),
                ..UserDigest::default()
            })
            .collect();
        self.users.insert(user, digests);
        self.touched.push(user);
        true
    }

    /// Stories older than this reach none of `user`'s held groups.
    fn oldest_held(&self, user: Tid) -> Millis {
        self.users.get(&user).map_or(Millis::MIN, |digests| {
            digests
                .iter()
                .zip(&self.specs)
                .map(|(d, spec)| {
                    d.held_from
                        .map_or(Millis::MIN, |from| spec.bucket(from).min(d.oldest_bucket))
                })
                .min()
                .unwrap_or(Millis::MIN)
        })
    }

    /// Ends the epoch: loads, refills and trims the touched users' digests
    /// and emits their changes.
    pub fn end_epoch(&mut self, fanout: &Fanout, out: &mut Vec<DigestChange>) {
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        touched.dedup();
        let mut whole = WholeViews::default();
        for u in touched {
            let Some(mut digests) = self.users.remove(&u) else {
                continue;
            };
            for (spec_index, digest) in digests.iter_mut().enumerate() {
                if !digest.changed() {
                    continue;
                }
                self.load_candidates(u, spec_index, digest, fanout);
                self.refill(u, spec_index, digest, fanout);
                self.emit(u, spec_index, digest, fanout, &mut whole, out);
            }
            let empty = digests
                .iter()
                .all(|d| d.groups.is_empty() && d.held_from.is_none());
            if !empty {
                self.users.insert(u, digests);
            }
        }
        self.keys.iter_mut().for_each(Keys::end_epoch);
    }

    /// Loads the candidates that reach the held range. A candidate's
    /// newest entry is at most the newest delivered to it (its older ones
    /// are older than `held_from`), so when more groups than the bound
    /// compete, `held_from` moves up to the newest `digest_size + slack`
    /// first and only the candidates above it are loaded.
    fn load_candidates(&self, u: Tid, spec_index: usize, digest: &mut UserDigest, fanout: &Fanout) {
        let (spec, keys) = (&self.specs[spec_index], &self.keys[spec_index]);
        let shown = shown(spec);
        let mut reload = std::mem::take(&mut digest.reload);
        reload.sort_unstable();
        reload.dedup_by_key(|(group, _)| *group);
        for (group, out_of_step) in reload {
            if out_of_step {
                tracing::warn!(user = u, "digest group out of step: loaded again");
            }
            if let Some(state) = digest.groups.get_mut(&group) {
                *state = GroupState {
                    touched: state.touched,
                    ..keys.load(group, u, fanout, shown)
                };
            }
        }
        let mut candidates = std::mem::take(&mut digest.candidates);
        // Per group, the newest time delivered.
        candidates.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        candidates.dedup_by_key(|(group, _)| *group);
        candidates.retain(|(group, _)| !digest.groups.contains_key(group));
        let keep = spec.sizes.digest_size + self.slack;
        if digest.groups.len() + candidates.len() > keep + self.slack.max(1) {
            let mut newest: Vec<Millis> = digest
                .groups
                .values()
                .filter_map(|state| state.newest.last().map(|entry| entry.time))
                .chain(candidates.iter().map(|(_, time)| *time))
                .collect();
            if newest.len() > keep {
                let (_, kth, _) = newest.select_nth_unstable_by(keep - 1, |a, b| b.cmp(a));
                let kth = *kth;
                if digest.held_from.is_none_or(|from| kth > from) {
                    digest.held_from = Some(kth);
                }
            }
        }
        for (group, time) in candidates {
            if digest.held_from.is_some_and(|from| time < from) {
                continue;
            }
            let state = keys.load(group, u, fanout, shown);
            let reaches = state
                .newest
                .last()
                .is_some_and(|newest| digest.held_from.is_none_or(|from| newest.time >= from));
            if reaches {
                digest.hold(keys, group, state);
            } else {
                // The entry that made it a candidate left again in this
                // epoch (a follow brought it, then it was deleted or
                // expired): counted above at its time, it may have raised
                // `held_from` past groups the head needs, so `refill`
                // counts them.
                digest.shrank = true;
            }
        }
    }

    /// While fewer than `digest_size` groups are held, walks the feed down
    /// from `held_from` and loads the groups met, up to `digest_size + slack`.
    fn refill(&self, u: Tid, spec_index: usize, digest: &mut UserDigest, fanout: &Fanout) {
        let (spec, keys) = (&self.specs[spec_index], &self.keys[spec_index]);
        let shrank = std::mem::take(&mut digest.shrank);
        let Some(from) = digest.held_from.filter(|_| shrank) else {
            return;
        };
        // The head is exact while `digest_size` groups are held from `from` up.
        let mut count = digest
            .groups
            .values()
            .filter(|g| g.newest.last().is_some_and(|newest| newest.time >= from))
            .count();
        if count >= spec.sizes.digest_size {
            return;
        }
        let target = spec.sizes.digest_size + self.slack;
        let (mut below, mut newest_unheld) = (FeedKey::new(from, ""), from);
        loop {
            let older = fanout.merged(u, Some(&below), 256);
            let Some(last) = older.last() else {
                digest.held_from = None;
                return;
            };
            below = fanout.slots.key(*last);
            for entry in older {
                if entry.time < newest_unheld {
                    // Every group with an entry at or after `newest_unheld` is held now.
                    if count >= target {
                        digest.held_from = Some(newest_unheld);
                        return;
                    }
                    newest_unheld = entry.time;
                }
                let group = self.group_of(entry, spec_index);
                match digest.groups.get(&group) {
                    // Met at its newest entry: a held group older than `from`.
                    Some(state) => {
                        if state.newest.last() == Some(&entry) {
                            count += 1;
                        }
                    }
                    None => {
                        digest.hold(keys, group, keys.load(group, u, fanout, shown(spec)));
                        count += 1;
                    }
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
        whole: &mut WholeViews,
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
            if state.count == 0 {
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
        self.trim(spec_index, digest, &mut head_changes);
        // Net head membership by key: a group that moved inside the head
        // left at its old place and entered at its new one.
        let mut membership: FastMap<Arc<str>, isize> = FastMap::default();
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
        let mut changes: Vec<(Arc<str>, GroupChange)> = Vec::new();
        let mut put = |group: GroupId| {
            let state = &digest.groups[&group];
            GroupChange::Put(keys.view_of((spec_index, spec), group, state, u, fanout, whole))
        };
        for group in changed {
            let key = keys.name(group);
            if in_head(group) && !membership.contains_key(key) {
                changes.push((key.clone(), put(group)));
            }
        }
        for (key, diff) in membership {
            let group = keys.ids[&key];
            if in_head(group) {
                changes.push((key.clone(), put(group)));
            } else if diff < 0 {
                changes.push((key.clone(), GroupChange::Remove(key.to_string())));
            }
        }
        let user = fanout.typed_ids.name(u);
        // A stable order makes the output independent of hashing.
        changes.sort_by(|a, b| a.0.cmp(&b.0));
        out.extend(
            changes
                .into_iter()
                .map(|(_, change)| DigestChange::of(user, spec, change)),
        );
    }

    /// Beyond `digest_size + 2 * slack` held groups, drops those older than
    /// the newest `digest_size + slack` and than `held_from` (none of them
    /// in the head, which lies above both). Should one be (a broken
    /// invariant), its leaving the head goes to `head_changes` like any
    /// other, so the store never keeps a group the bolt forgot.
    fn trim(
        &self,
        spec_index: usize,
        digest: &mut UserDigest,
        head_changes: &mut Vec<(Place, isize)>,
    ) {
        let (spec, keys) = (&self.specs[spec_index], &self.keys[spec_index]);
        let keep = spec.sizes.digest_size + self.slack;
        if digest.groups.len() <= keep + self.slack.max(1) {
            return;
        }
        let Some(last_kept) = digest.order.head(keep).last() else {
            return;
        };
        let from = digest
            .held_from
            .map_or(last_kept.last_time, |held| held.max(last_kept.last_time));
        let dropped: Vec<GroupId> = digest
            .groups
            .iter()
            // By time alone: a place would clone the key's `Arc` per group.
            .filter(|(_, state)| state.newest.last().is_some_and(|e| e.time < from))
            .map(|(group, _)| *group)
            .collect();
        let changes_before = head_changes.len();
        for group in dropped {
            let state = digest.groups.remove(&group).expect("listed");
            let place = state.place(keys.name(group)).expect("non-empty");
            digest
                .order
                .update(place, -1, spec.sizes.digest_size, head_changes);
        }
        let from_head = head_changes.len() > changes_before;
        debug_assert!(!from_head, "dropped groups were outside the head");
        if from_head {
            tracing::warn!("digest trim dropped a group inside the head");
        }
        digest.held_from = Some(from);
        // A burst of candidates may have grown the map far past the bound.
        if digest.groups.capacity() > 4 * keep {
            digest.groups.shrink_to(2 * keep);
        }
        // Every group left has its newest entry at or after `from`.
        digest.oldest_bucket = spec.bucket(from);
    }

    /// Every digest of the users this worker owns, whole (a reset, then the
    /// head), and a reset for each stored digest of a user it owns but no
    /// longer has; with `only`, just those users' digests.
    pub fn recovered(
        &self,
        fanout: &Fanout,
        store: &dyn Store,
        index: usize,
        peers: usize,
        only: Only<'_>,
        out: &mut Vec<DigestChange>,
    ) {
        let state_of = |user: &TypedId| self.users.get(&fanout.typed_ids.get(user)?);
        for (spec_index, spec) in self.specs.iter().enumerate() {
            let keys = &self.keys[spec_index];
            let change = |user: &TypedId, change| DigestChange::of(user, spec, change);
            let whole = |user: &TypedId| {
                out.push(change(user, GroupChange::Reset));
                let Some(digest) = state_of(user).map(|d| &d[spec_index]) else {
                    return;
                };
                let u = fanout
                    .typed_ids
                    .get(user)
                    .expect("a user with state is interned");
                for place in digest.order.head(spec.sizes.digest_size) {
                    let key = &place.key.0;
                    let state = &digest.groups[&keys.ids[key]];
                    let members = || keys.members(keys.ids[key], u, fanout);
                    let group = state.view(key, spec, &fanout.slots, members);
                    out.push(change(user, GroupChange::Put(Arc::new(group))));
                }
            };
            let holds = self.users.keys().map(|u| fanout.typed_ids.name(*u));
            let stored = || store.digest_users(&spec.name);
            let has = |user: &TypedId| state_of(user).is_some();
            each_recovered_user(only, holds, stored, has, (index, peers), whole);
        }
    }
}
