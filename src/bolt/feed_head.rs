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

use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use differential_dataflow::VecCollection;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::StreamVec;

use crate::bolt::recovery::{stale_users, RecoveryGate};
use crate::bolt::top_k::TopK;
use crate::bolt::{EpochStash, Interner};
use crate::config::Materialize;
use crate::drpc::{Drpc, Request, Requests, Snapshots};
use crate::event::{Millis, TypedId};
use crate::feed::{FeedKey, Story};
use crate::grouping::route;
use crate::status::Status;
use crate::store::Store;

/// A change to a user's feed head: `+1` enters, `-1` leaves, and `0` (with
/// an empty key, see [`reset_marker`]) clears the user's head first.
pub type HeadChange = (TypedId, FeedKey, isize);

/// How the feed-head bolt keeps heads.
#[derive(Clone)]
pub struct HeadSettings {
    /// Entries per head.
    pub feed_size: usize,
    /// Every user's head, or only recently read ones.
    pub materialize: Materialize,
    /// In `active` mode, a head not read for this long is evicted.
    pub active_window: Duration,
    /// A store that outlives the process (Redis): after a start, write
    /// nothing until the topology has caught up (the old heads keep serving),
    /// then replace every head this worker owns with the recovered one.
    pub recover_into: Option<Arc<dyn Store>>,
}

/// Maintains bounded feed heads and answers rebuild-feed requests.
pub trait MaintainHead<'scope> {
    /// Changes to each user's head of `feed_size` entries, in SPEC order
    /// (newest `time`, then largest `id`), from the `(user, entry)`
    /// deliveries. At the epoch of each rebuild request it answers the
    /// request through `drpc` from the request's snapshot; in `active` mode
    /// the snapshot becomes the user's live state, and only live users'
    /// deliveries are kept.
    fn maintain_head(
        self,
        snapshots: Snapshots<'scope>,
        requests: Requests<'scope>,
        settings: HeadSettings,
        drpc: Arc<Drpc>,
        status: Arc<Status>,
    ) -> StreamVec<'scope, u64, HeadChange>;
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    time: Millis,
    id: Rc<str>,
}

/// One user's candidates and head boundary.
type UserFeed = TopK<Entry>;

enum Input {
    Live((TypedId, Story), isize),
    Snapshot((Request, Story), isize),
    Request(Request, isize),
}

/// The bolt's state on one worker.
struct Heads {
    settings: HeadSettings,
    feeds: HashMap<TypedId, UserFeed>,
    ids: Interner,
    /// Users whose head is live here (`active` mode).
    live: HashSet<TypedId>,
    /// Users with rebuild requests received but not yet answered.
    pending: HashMap<TypedId, usize>,
    last_eviction: Instant,
}

impl Heads {
    fn apply(
        &mut self,
        user: &TypedId,
        story: &Story,
        diff: isize,
        changes: &mut Vec<(Entry, isize)>,
    ) {
        let entry = Entry {
            time: story.0.time,
            id: self.ids.intern(&story.0.id),
        };
        let id = entry.id.clone();
        let feed = self.feeds.entry(user.clone()).or_default();
        if feed.update(entry, diff, self.settings.feed_size, changes) {
            self.ids.release(&id);
        }
        if feed.entries.is_empty() {
            self.feeds.remove(user);
        }
    }

    /// Every head this worker owns, whole: a reset then its entries, and a
    /// reset for each user the store has but this worker no longer does.
    fn recovered_heads(
        &self,
        store: &dyn Store,
        index: usize,
        peers: usize,
        out: &mut Vec<HeadChange>,
    ) {
        for user in self.feeds.keys() {
            let head = self.head(user);
            if !head.is_empty() {
                out.push(reset_marker(user));
                out.extend(head.into_iter().map(|key| (user.clone(), key, 1)));
            }
        }
        let has = |user: &TypedId| self.feeds.get(user).is_some_and(|f| !f.entries.is_empty());
        for user in stale_users(store.users(), index, peers, has) {
            out.push(reset_marker(&user));
        }
    }

    fn head(&self, user: &TypedId) -> Vec<FeedKey> {
        self.feeds.get(user).map_or_else(Vec::new, |feed| {
            feed.entries
                .keys()
                .rev()
                .take(self.settings.feed_size)
                .map(|e| FeedKey::new(e.time, &*e.id))
                .collect()
        })
    }

    /// One complete epoch.
    fn epoch(
        &mut self,
        time: u64,
        inputs: Vec<Input>,
        drpc: &Drpc,
        status: &Status,
        out: &mut Vec<HeadChange>,
    ) {
        let (mut live, mut snapshots, mut requests) = (Vec::new(), Vec::new(), Vec::new());
        for input in inputs {
            match input {
                Input::Live(d, r) => live.push((d, r)),
                Input::Snapshot(d, r) => snapshots.push((d, r)),
                Input::Request(d, r) => requests.push((d, r)),
            }
        }
        status.add_deliveries(live.len() as u64);
        differential_dataflow::consolidation::consolidate(&mut live);
        differential_dataflow::consolidation::consolidate(&mut snapshots);
        differential_dataflow::consolidation::consolidate(&mut requests);
        // Requests are present at their epoch (+1) and retracted at the next (-1).
        let requests: Vec<Request> = requests
            .into_iter()
            .filter(|(_, r)| *r > 0)
            .map(|(q, _)| q)
            .collect();
        let active_mode = self.settings.materialize == Materialize::Active;
        let activating: HashSet<TypedId> = requests
            .iter()
            .filter(|(user, _)| active_mode && !self.live.contains(user))
            .map(|(user, _)| user.clone())
            .collect();

        let mut changes = Vec::new();
        let mut live = live.into_iter().peekable();
        while let Some(((user, _), _)) = live.peek() {
            let user = user.clone();
            let keep = !active_mode || (self.live.contains(&user) && !activating.contains(&user));
            while let Some(((_, key), diff)) = live.next_if(|((u, _), _)| *u == user) {
                if keep {
                    self.apply(&user, &key, diff, &mut changes);
                }
            }
            emit(&user, &mut changes, out);
        }

        // Each request's snapshot, as of this epoch: positive counts only
        // (the request's retraction at the next epoch is not wanted).
        let mut by_request: HashMap<Request, Vec<(Story, isize)>> = HashMap::new();
        for ((request, key), count) in snapshots {
            if count > 0 {
                by_request.entry(request).or_default().push((key, count));
            }
        }
        for request in requests {
            let mut snapshot = by_request.remove(&request).unwrap_or_default();
            snapshot.sort_by(|a, b| b.0.cmp(&a.0));
            let (user, id) = request;
            if let Some(count) = self.pending.get_mut(&user) {
                *count -= 1;
                if *count == 0 {
                    self.pending.remove(&user);
                }
            }
            if activating.contains(&user) && !self.live.contains(&user) {
                self.feeds.remove(&user);
                for (key, count) in &snapshot {
                    self.apply(&user, key, *count, &mut changes);
                }
                emit(&user, &mut changes, out);
                self.live.insert(user.clone());
                drpc.activate_at(time, &user);
            }
            let answer: Vec<FeedKey> = snapshot
                .into_iter()
                .take(self.settings.feed_size)
                .map(|(story, _)| story.key())
                .collect();
            if !active_mode || self.live.contains(&user) {
                // The fan-in answer must equal the head kept live, at the same epoch.
                if answer != self.head(&user) {
                    status.add_drpc_mismatch();
                }
            }
            drpc.answer_at(time, id, answer);
        }

        if active_mode && self.last_eviction.elapsed() > Duration::from_secs(1) {
            self.last_eviction = Instant::now();
            for user in drpc.evict_idle(&self.live, self.settings.active_window) {
                self.live.remove(&user);
                for key in self.head(&user) {
                    out.push((user.clone(), key, -1));
                }
                if let Some(feed) = self.feeds.remove(&user) {
                    for entry in feed.entries.into_keys() {
                        self.ids.release(&entry.id);
                    }
                }
            }
        }
    }
}

/// The head-change marker that clears a user's head in the store.
pub fn reset_marker(user: &TypedId) -> HeadChange {
    (user.clone(), FeedKey::new(0, ""), 0)
}

fn emit(user: &TypedId, changes: &mut Vec<(Entry, isize)>, out: &mut Vec<HeadChange>) {
    differential_dataflow::consolidation::consolidate(changes);
    out.extend(
        changes
            .drain(..)
            .map(|(entry, diff)| (user.clone(), FeedKey::new(entry.time, &*entry.id), diff)),
    );
}

impl<'scope> MaintainHead<'scope> for VecCollection<'scope, u64, (TypedId, Story), isize> {
    fn maintain_head(
        self,
        snapshots: Snapshots<'scope>,
        requests: Requests<'scope>,
        settings: HeadSettings,
        drpc: Arc<Drpc>,
        status: Arc<Status>,
    ) -> StreamVec<'scope, u64, HeadChange> {
        let scope = self.inner.scope();
        let (builder_index, builder_peers) = (scope.index(), scope.peers());
        let mut builder = OperatorBuilder::new("MaintainHead".to_owned(), scope);
        let mut live = builder.new_input(
            self.inner,
            Exchange::new(|((user, _), _, _): &((TypedId, Story), u64, isize)| route(user)),
        );
        let mut snapshots = builder.new_input(
            snapshots.inner,
            Exchange::new(|(((user, _), _), _, _): &((Request, Story), u64, isize)| route(user)),
        );
        let mut requests = builder.new_input(
            requests.inner,
            Exchange::new(|((user, _), _, _): &(Request, u64, isize)| route(user)),
        );
        let (output, stream) = builder.new_output();
        let (index, peers) = (builder_index, builder_peers);
        let mut output =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<HeadChange>>>::from(output);
        builder.build(move |mut caps| {
            let mut stash = EpochStash::new(1);
            let mut recovery = RecoveryGate::new(caps.pop(), settings.recover_into.clone());
            let mut heads = Heads {
                settings,
                feeds: HashMap::new(),
                ids: Interner::default(),
                live: HashSet::new(),
                pending: HashMap::new(),
                last_eviction: Instant::now(),
            };
            let mut out = Vec::new();
            move |frontiers| {
                requests.for_each(|cap, data| {
                    for ((user, _), _, diff) in data.iter() {
                        if *diff > 0 {
                            *heads.pending.entry(user.clone()).or_default() += 1;
                        }
                    }
                    stash.stash_timed(
                        &cap,
                        data.drain(..).map(|(d, t, r)| (t, Input::Request(d, r))),
                    )
                });
                // In active mode, drop at once the deliveries of users who are
                // not live and cannot become live by then: no rebuild of theirs
                // is pending, and none can still arrive for a time up to `t`.
                let requests_frontier = &frontiers[2];
                live.for_each(|cap, data| {
                    let kept = data.drain(..).filter(|((user, _), t, _)| {
                        heads.settings.materialize == Materialize::All
                            || heads.live.contains(user)
                            || heads.pending.contains_key(user)
                            || requests_frontier.less_equal(t)
                    });
                    stash.stash_timed(&cap, kept.map(|(d, t, r)| (t, Input::Live(d, r))))
                });
                snapshots.for_each(|cap, data| {
                    stash.stash_timed(
                        &cap,
                        data.drain(..).map(|(d, t, r)| (t, Input::Snapshot(d, r))),
                    )
                });
                let mut output = output.activate();
                for (caps, inputs) in
                    stash.take_ready(&[&frontiers[0], &frontiers[1], &frontiers[2]])
                {
                    heads.epoch(*caps[0].time(), inputs, &drpc, &status, &mut out);
                    if recovery.holding() {
                        out.clear(); // the recovered heads are written whole at the end
                    } else {
                        output.session(&caps[0]).give_iterator(out.drain(..));
                    }
                }
                recovery.step(&status, frontiers, |cap, store| {
                    heads.recovered_heads(store, index, peers, &mut out);
                    output.session(cap).give_iterator(out.drain(..));
                });
            }
        });
        stream
    }
}
