//! Digests: each user's feed activities rolled up into groups (SPEC
//! sections 3 and 4), kept exactly and incrementally.
//!
//! Per user and digest the operator keeps every group's activities (with
//! their delivery counts) and distinct actors in sorted vectors, and the
//! groups' order in a [`TopK`]. A delivery touches one group per digest (a
//! binary search and an insertion in that group, O(log n) in the user's
//! groups for the order); at the end of the epoch only the touched groups,
//! and the groups that enter or leave the head, are written, each rendered
//! from its own state. A user's whole digest is never recomputed.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;

use differential_dataflow::VecCollection;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::StreamVec;

use crate::bolt::recovery::{each_recovered_user, Only, RecoveryGate};
use crate::bolt::top_k::TopK;
use crate::bolt::{EpochStash, Interner, Seeded};
use crate::digest::{DigestSpec, Group, GroupOrder};
use crate::event::{Activity, TypedId};
use crate::feed::Story;
use crate::grouping::route;
use crate::status::Status;
use crate::store::Store;

pub use crate::digest::{DigestChange, GroupChange};

/// Keeps digests of `(user, story)` deliveries.
pub trait Digest<'scope> {
    /// Changes to each user's digest heads, one set per spec, from the
    /// deliveries (with multiplicity: an activity counts once however many
    /// times it is delivered), leaving out those whose actor or object the
    /// user blocks (`blocks`: `(user, blocked)` pairs in force). With
    /// `recover_into` (a store that outlives the process) nothing is
    /// written until the topology has caught up; then every digest this
    /// worker owns is written whole.
    fn digest(
        self,
        blocks: VecCollection<'scope, u64, (TypedId, TypedId), isize>,
        specs: Vec<DigestSpec>,
        recover_into: Option<Arc<dyn Store>>,
        status: Arc<Status>,
    ) -> StreamVec<'scope, u64, DigestChange>;
}

/// The bolt's maps, keyed by group keys and typed ids: [`Seeded`].
type Map<K, V> = HashMap<K, V, Seeded>;

/// The bolt's sets: [`Seeded`].
type Set<K> = HashSet<K, Seeded>;

/// A group key, interned: every user's group of one key on a worker shares it.
type Key = Rc<str>;

/// A group's place in its digest, with its interned key.
type Place = GroupOrder<Key>;

/// One group's activities, kept small: most groups hold a few activities, so
/// sorted vectors beat trees and maps by far in memory.
#[derive(Default)]
struct GroupState {
    /// Activities in feed order (oldest first), each with its delivery count (> 0).
    activities: Vec<(Story, u32)>,
    /// Distinct actors, sorted by actor, each named by one of their stories
    /// (no copy of the actor id), with their number of activities here.
    actors: Vec<(Story, u32)>,
}

impl GroupState {
    fn place(&self, key: &Key) -> Option<Place> {
        let (newest, _) = self.activities.last()?;
        Some(Place {
            last_time: newest.0.time,
            key: Reverse(key.clone()),
        })
    }

    /// Changes `story`'s delivery count by `diff`.
    fn update(&mut self, story: &Story, diff: isize) {
        let by_actor = |(s, _): &(Story, u32)| s.0.actor.cmp(&story.0.actor);
        match self.activities.binary_search_by(|(s, _)| s.cmp(story)) {
            Ok(at) => {
                let count = self.activities[at].1 as isize + diff;
                assert!(count >= 0, "negative delivery count for {story:?}");
                if count > 0 {
                    self.activities[at].1 = count as u32;
                    return;
                }
                self.activities.remove(at);
                let actor = self
                    .actors
                    .binary_search_by(by_actor)
                    .expect("actor of a present story");
                self.actors[actor].1 -= 1;
                if self.actors[actor].1 == 0 {
                    self.actors.remove(actor);
                }
            }
            Err(at) => {
                assert!(diff > 0, "negative delivery count for {story:?}");
                // Most groups never grow past one activity: start at capacity one.
                if self.activities.is_empty() {
                    self.activities.reserve_exact(1);
                }
                self.activities.insert(at, (story.clone(), diff as u32));
                match self.actors.binary_search_by(by_actor) {
                    Ok(actor) => self.actors[actor].1 += 1,
                    Err(actor) => {
                        if self.actors.is_empty() {
                            self.actors.reserve_exact(1);
                        }
                        self.actors.insert(actor, (story.clone(), 1))
                    }
                }
            }
        }
    }

    fn view(&self, key: &str, spec: &DigestSpec) -> Group {
        let newest_first = self.activities.iter().rev().map(|(s, _)| &*s.0);
        let oldest = &self.activities.first().expect("non-empty group").0 .0;
        Group::from_newest(
            &Arc::from(key),
            spec,
            newest_first,
            oldest,
            self.actors.len(),
            self.activities.len(),
        )
    }
}

/// One user's groups of one digest.
#[derive(Default)]
struct UserDigest {
    groups: Map<Key, GroupState>,
    order: TopK<Place>,
}

impl UserDigest {
    /// Applies one delivery to the group `key`; notes the groups whose
    /// content or head membership changed in `touched`.
    fn update(
        &mut self,
        spec: &DigestSpec,
        key: &Key,
        story: &Story,
        diff: isize,
        touched: &mut Set<Key>,
    ) {
        let group = self.groups.entry(key.clone()).or_default();
        let before = group.place(key);
        group.update(story, diff);
        let after = group.place(key);
        if group.activities.is_empty() {
            self.groups.remove(key);
        }
        if before != after {
            let mut head_changes = Vec::new();
            let size = spec.sizes.digest_size;
            if let Some(before) = before {
                self.order.update(before, -1, size, &mut head_changes);
            }
            if let Some(after) = after {
                self.order.update(after, 1, size, &mut head_changes);
            }
            touched.extend(head_changes.into_iter().map(|(place, _)| place.key.0));
        }
        touched.insert(key.clone());
    }

    /// The store changes for the `touched` groups.
    fn changes(&self, spec: &DigestSpec, touched: Set<Key>) -> Vec<GroupChange> {
        let mut changes: Vec<GroupChange> = touched
            .into_iter()
            .map(|key| match self.groups.get(&key) {
                Some(group)
                    if self
                        .order
                        .in_head(&group.place(&key).expect("non-empty group")) =>
                {
                    GroupChange::Put(Arc::new(group.view(&key, spec)))
                }
                _ => GroupChange::Remove(key.to_string()),
            })
            .collect();
        // A stable order makes the output independent of hashing.
        changes.sort_by(|a, b| change_key(a).cmp(change_key(b)));
        changes
    }

    /// The whole head, as puts.
    fn head(&self, spec: &DigestSpec) -> Vec<GroupChange> {
        self.order
            .head(spec.sizes.digest_size)
            .map(|place| {
                let group = &self.groups[&place.key.0];
                GroupChange::Put(Arc::new(group.view(&place.key.0, spec)))
            })
            .collect()
    }
}

fn change_key(change: &GroupChange) -> &str {
    match change {
        GroupChange::Put(group) => &group.key,
        GroupChange::Remove(key) => key,
        GroupChange::Reset => "",
    }
}

/// Each spec's group keys on one worker: interned, and cached per activity
/// for the epoch (an activity delivered to many users is keyed once).
#[derive(Default)]
struct Keys {
    interned: Interner,
    /// The live count at the last sweep: sweep when it has doubled.
    swept_at: usize,
    of_activity: Map<*const Activity, Key>,
}

impl Keys {
    fn key(&mut self, spec: &DigestSpec, story: &Story) -> Key {
        if let Some(key) = self.of_activity.get(&Arc::as_ptr(&story.0)) {
            return key.clone();
        }
        let key = self.interned.intern(&spec.key(&story.0));
        self.of_activity.insert(Arc::as_ptr(&story.0), key.clone());
        key
    }

    /// Ends an epoch: forgets the per-activity cache (its pointers may be
    /// reused) and, now and then, keys that no group holds any more.
    fn end_epoch(&mut self) {
        self.of_activity.clear();
        if self.interned.len() > 2 * self.swept_at.max(1024) {
            self.interned.sweep();
            self.swept_at = self.interned.len();
        }
    }
}

/// One user's blocks, and the deliveries they hide (SPEC section 2).
#[derive(Default)]
struct Blocked {
    /// The typed ids blocked, sorted.
    ids: Vec<TypedId>,
    /// Deliveries whose actor or object is blocked, sorted, with their counts
    /// (> 0): an unblock shows them again.
    hidden: Vec<(Story, u32)>,
}

impl Blocked {
    fn hides(&self, story: &Story) -> bool {
        self.ids.binary_search(&story.0.actor).is_ok()
            || self.ids.binary_search(&story.0.object).is_ok()
    }

    fn hide(&mut self, story: &Story, diff: isize) {
        match self.hidden.binary_search_by(|(s, _)| s.cmp(story)) {
            Ok(at) => {
                let count = self.hidden[at].1 as isize + diff;
                if count > 0 {
                    self.hidden[at].1 = count as u32;
                } else {
                    self.hidden.remove(at);
                }
            }
            Err(at) if diff > 0 => self.hidden.insert(at, (story.clone(), diff as u32)),
            Err(_) => {}
        }
    }
}

/// Whether `story` names `id` as its actor or object.
fn names(story: &Story, id: &TypedId) -> bool {
    story.0.actor == *id || story.0.object == *id
}

/// The groups each delivery of an epoch touched, per user and spec.
type Touched = std::collections::BTreeMap<TypedId, Vec<Set<Key>>>;

/// The operator's state on one worker.
struct Digests {
    specs: Vec<DigestSpec>,
    keys: Vec<Keys>,
    /// Per user, one digest per spec.
    users: Map<TypedId, Vec<UserDigest>>,
    /// The users with blocks.
    blocks: Map<TypedId, Blocked>,
}

impl Digests {
    fn epoch(
        &mut self,
        mut blocks: Vec<((TypedId, TypedId), isize)>,
        mut deliveries: Vec<((TypedId, Story), isize)>,
        out: &mut Vec<DigestChange>,
    ) {
        crate::bolt::consolidate(&mut blocks);
        crate::bolt::consolidate(&mut deliveries);
        let mut touched = Touched::new();
        // Blocks first: this epoch's deliveries then meet the blocks as they are after it.
        for ((user, blocked), diff) in blocks {
            let moved = self.block(&user, blocked, diff > 0);
            self.apply(&user, moved, &mut touched);
        }
        let mut deliveries = deliveries.into_iter().peekable();
        while let Some(((user, _), _)) = deliveries.peek() {
            let user = user.clone();
            let mut blocked = self.blocks.get_mut(&user);
            let mut run = Vec::new();
            while let Some(((_, story), diff)) = deliveries.next_if(|((u, _), _)| *u == user) {
                match blocked.as_mut() {
                    Some(blocked) if blocked.hides(&story) => blocked.hide(&story, diff),
                    _ => run.push((story, diff)),
                }
            }
            self.apply(&user, run, &mut touched);
        }
        for (user, touched) in touched {
            let Some(digests) = self.users.get(&user) else {
                continue;
            };
            for ((spec, digest), touched) in self.specs.iter().zip(digests).zip(touched) {
                out.extend(
                    digest
                        .changes(spec, touched)
                        .into_iter()
                        .map(|change| DigestChange::of(&user, spec, change)),
                );
            }
            if digests.iter().all(|d| d.groups.is_empty()) {
                self.users.remove(&user);
            }
        }
        self.keys.iter_mut().for_each(Keys::end_epoch);
    }

    /// `user` blocks (`blocks`) or unblocks `blocked`: returns the
    /// deliveries that leave the user's groups (hidden now) or come back.
    fn block(&mut self, user: &TypedId, blocked: TypedId, blocks: bool) -> Vec<(Story, isize)> {
        let state = self.blocks.entry(user.clone()).or_default();
        let moved = if blocks {
            if let Err(at) = state.ids.binary_search(&blocked) {
                state.ids.insert(at, blocked.clone());
            }
            // Every spec holds the same deliveries: the first one lists them.
            let shown = self.users.get(user).and_then(|digests| digests.first());
            let leaving: Vec<(Story, isize)> = shown
                .into_iter()
                .flat_map(|digest| digest.groups.values())
                .flat_map(|group| &group.activities)
                .filter(|(story, _)| names(story, &blocked))
                .map(|(story, count)| (story.clone(), -(*count as isize)))
                .collect();
            for (story, count) in &leaving {
                state.hide(story, -count);
            }
            leaving
        } else {
            if let Ok(at) = state.ids.binary_search(&blocked) {
                state.ids.remove(at);
            }
            let hidden = std::mem::take(&mut state.hidden);
            let (back, still): (Vec<_>, Vec<_>) = hidden
                .into_iter()
                .partition(|(story, _)| !state.hides(story));
            state.hidden = still;
            back.into_iter()
                .map(|(story, count)| (story, count as isize))
                .collect()
        };
        if state.ids.is_empty() && state.hidden.is_empty() {
            self.blocks.remove(user);
        }
        moved
    }

    /// Applies deliveries to `user`'s digests, noting what they touched.
    fn apply(&mut self, user: &TypedId, run: Vec<(Story, isize)>, touched: &mut Touched) {
        if run.is_empty() {
            return;
        }
        let n = self.specs.len();
        let digests = self
            .users
            .entry(user.clone())
            .or_insert_with(|| (0..n).map(|_| UserDigest::default()).collect());
        let touched = touched
            .entry(user.clone())
            .or_insert_with(|| vec![Set::default(); n]);
        for (story, diff) in run {
            for (((spec, keys), digest), touched) in self
                .specs
                .iter()
                .zip(&mut self.keys)
                .zip(digests.iter_mut())
                .zip(touched.iter_mut())
            {
                let key = keys.key(spec, &story);
                digest.update(spec, &key, &story, diff, touched);
            }
        }
    }

    /// Every digest this worker owns, whole (a reset, then the head), and a
    /// reset for each stored digest of a user this worker owns but no
    /// longer has; with `only`, just those users' digests.
    fn recovered(
        &self,
        store: &dyn Store,
        index: usize,
        peers: usize,
        only: Only<'_>,
        out: &mut Vec<DigestChange>,
    ) {
        for (spec_index, spec) in self.specs.iter().enumerate() {
            let change = |user: &TypedId, change| DigestChange::of(user, spec, change);
            let whole = |user: &TypedId| {
                out.push(change(user, GroupChange::Reset));
                if let Some(digests) = self.users.get(user) {
                    let head = digests[spec_index].head(spec).into_iter();
                    out.extend(head.map(|c| change(user, c)));
                }
            };
            let stored = || store.digest_users(&spec.name);
            let has = |user: &TypedId| self.users.contains_key(user);
            each_recovered_user(only, self.users.keys(), stored, has, (index, peers), whole);
        }
    }
}

/// One input of the digest operator.
enum Input {
    Block((TypedId, TypedId), isize),
    Delivery((TypedId, Story), isize),
}

impl<'scope> Digest<'scope> for VecCollection<'scope, u64, (TypedId, Story), isize> {
    fn digest(
        self,
        blocks: VecCollection<'scope, u64, (TypedId, TypedId), isize>,
        specs: Vec<DigestSpec>,
        recover_into: Option<Arc<dyn Store>>,
        status: Arc<Status>,
    ) -> StreamVec<'scope, u64, DigestChange> {
        let scope = self.inner.scope();
        let (index, peers) = (scope.index(), scope.peers());
        let mut builder = OperatorBuilder::new("Digest".to_owned(), scope);
        let mut deliveries = builder.new_input(
            self.inner,
            Exchange::new(|((user, _), _, _): &((TypedId, Story), u64, isize)| route(user)),
        );
        let mut blocks = builder.new_input(
            blocks.inner,
            Exchange::new(|((user, _), _, _): &((TypedId, TypedId), u64, isize)| route(user)),
        );
        let (output, stream) = builder.new_output();
        let mut output =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<DigestChange>>>::from(output);
        builder.build(move |mut caps| {
            let mut stash = EpochStash::new(1);
            let mut recovery = RecoveryGate::new(caps.pop(), recover_into);
            let mut digests = Digests {
                keys: specs.iter().map(|_| Keys::default()).collect(),
                specs,
                users: Map::default(),
                blocks: Map::default(),
            };
            let mut out = Vec::new();
            move |frontiers| {
                deliveries.for_each(|cap, data| {
                    let items = data.drain(..).map(|(d, t, r)| (t, Input::Delivery(d, r)));
                    stash.stash_timed(&cap, items)
                });
                blocks.for_each(|cap, data| {
                    let items = data.drain(..).map(|(b, t, r)| (t, Input::Block(b, r)));
                    stash.stash_timed(&cap, items)
                });
                let mut output = output.activate();
                for (caps, inputs) in stash.take_ready(&[&frontiers[0], &frontiers[1]]) {
                    let (mut blocked, mut delivered) = (Vec::new(), Vec::new());
                    for input in inputs {
                        match input {
                            Input::Block(pair, diff) => blocked.push((pair, diff)),
                            Input::Delivery(delivery, diff) => delivered.push((delivery, diff)),
                        }
                    }
                    digests.epoch(blocked, delivered, &mut out);
                    status.add_digest_updates(out.len() as u64);
                    recovery.pass(*caps[0].time(), &mut out, |changes| {
                        output.session(&caps[0]).give_iterator(changes)
                    });
                }
                recovery.step(&status, frontiers, |cap, store, only| {
                    digests.recovered(store, index, peers, only, &mut out);
                    output.session(cap).give_iterator(out.drain(..));
                });
                crate::bolt::release_burst(&mut out);
            }
        });
        stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DigestConfig;
    use rand::{Rng, SeedableRng};

    fn story(id: u8, time: i64, actor: u8, object: u8) -> Story {
        Story(Arc::new(Activity {
            id: format!("a{id}").into(),
            time,
            actor: TypedId::parse(&format!("user:{actor}")).unwrap(),
            verb: "love".into(),
            object: TypedId::parse(&format!("thing:{object}")).unwrap(),
            target: None,
            extra: None,
        }))
    }

    /// After every step of random deliveries and retractions, the head kept
    /// incrementally (replayed from the emitted changes) equals the groups
    /// computed from the present activities.
    #[test]
    fn incremental_groups_match_recomputation() {
        let config: DigestConfig = toml::from_str(
            "window = \"10ms\"\nmax_actors = 2\nmax_activities = 3\ndigest_size = 3",
        )
        .unwrap();
        let spec = DigestSpec::new(&config);
        for seed in 0..10 {
            let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
            let stories: Vec<Story> = (0..30)
                .map(|i| {
                    story(
                        i,
                        rng.gen_range(0..40),
                        rng.gen_range(0..4),
                        rng.gen_range(0..3),
                    )
                })
                .collect();
            let mut counts = vec![0isize; stories.len()];
            let mut digest = UserDigest::default();
            let mut shown: std::collections::BTreeMap<String, Arc<Group>> = Default::default();
            for _ in 0..300 {
                let i = rng.gen_range(0..stories.len());
                let diff = if counts[i] > 0 && rng.gen_bool(0.5) {
                    -1
                } else {
                    1
                };
                counts[i] += diff;
                let mut touched = Set::default();
                let key: Key = Rc::from(spec.key(&stories[i].0));
                digest.update(&spec, &key, &stories[i], diff, &mut touched);
                for change in digest.changes(&spec, touched) {
                    match change {
                        GroupChange::Put(g) => {
                            shown.insert(g.key.to_string(), g);
                        }
                        GroupChange::Remove(k) => {
                            shown.remove(&k);
                        }
                        GroupChange::Reset => unreachable!(),
                    }
                }
                let present: Vec<feedstorm_reference::Activity> = stories
                    .iter()
                    .zip(&counts)
                    .filter(|(_, c)| **c > 0)
                    .map(|(s, _)| crate::judge::activity(&s.0))
                    .collect();
                let expected = feedstorm_reference::digest_of(
                    present.iter().collect(),
                    &crate::judge::digest_settings(&config),
                );
                let mut got: Vec<&Arc<Group>> = shown.values().collect();
                got.sort_by_key(|g| std::cmp::Reverse(g.order()));
                let got: Vec<_> = got.into_iter().map(|g| crate::judge::group(g)).collect();
                assert_eq!(got, expected, "seed {seed}");
            }
        }
    }
}
