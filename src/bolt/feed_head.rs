//! Feed heads: the newest `feed_size` entries of each user's feed, kept
//! exactly in bounded state.
//!
//! The bolt owns its users (fields grouping by user) and receives every
//! story (all grouping), so fan-out is a local lookup in [`Fanout`]. Per
//! user it keeps at most `feed_size + slack` *candidates*, the newest
//! entries of the feed, and a bound below which older entries may exist
//! unstored. A delivery below the bound is dropped without being stored;
//! when retractions (unfollow, delete, expiry) leave fewer than `feed_size`
//! candidates while older entries may exist, the bolt refills the user in
//! the same epoch by merging the newest stories of the user's interests
//! below the bound (the rebuild path), so every head is exact at every
//! epoch. A follow backfills from the interest's newest stories down to the
//! bound. Rebuild-feed requests are answered by the same merge.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use differential_dataflow::VecCollection;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

use crate::bolt::digest::DigestChange;
use crate::bolt::digest_groups::DigestGroups;
use crate::bolt::fanout::{Entry, Fanout, FastMap, Slots, Tid};
use crate::bolt::interests::Edge;
use crate::bolt::recovery::{each_recovered_user, Only, RecoveryGate};
use crate::bolt::stories::RestoredStories;
use crate::bolt::user_runs::UserRuns;
use crate::bolt::EpochStash;
use crate::config::Materialize;
use crate::digest::DigestSpec;
use crate::drpc::{Answer, Drpc, Request};
use crate::event::{Millis, Relation, TypedId};
use crate::feed::{FeedKey, Story};
use crate::grouping::route;
use crate::status::Status;
use crate::store::Store;

pub use crate::feed::HeadChange;

/// What the feed-head bolt emits for the sink: head changes and digest changes.
pub type HeadsAndDigests<'scope> = (
    StreamVec<'scope, u64, HeadChange>,
    StreamVec<'scope, u64, DigestChange>,
    StreamVec<'scope, u64, Answer>,
);

/// How the feed-head bolt keeps heads.
#[derive(Clone)]
pub struct HeadSettings {
    /// Entries per head.
    pub feed_size: usize,
    /// Candidates kept beyond `feed_size`, so that most retractions need no refill.
    pub slack: usize,
    /// Every user's head, or only recently read ones.
    pub materialize: Materialize,
    /// In `active` mode, a head not read for this long is evicted.
    pub active_window: Duration,
    /// A store that outlives the process (Redis): after a start, write
    /// nothing until the topology has caught up (the old heads keep serving),
    /// then replace every head this worker owns with the recovered one.
    pub recover_into: Option<Arc<dyn Store>>,
    /// The digests kept of each user's feed (SPEC section 3).
    pub digests: Vec<DigestSpec>,
}

/// Maintains bounded feed heads and answers rebuild-feed requests.
pub trait MaintainHead<'scope> {
    /// From the interest and block edges, every retained story (each worker
    /// must see all of them: broadcast), the stories a resume restored
    /// (broadcast too, a batch per worker that restored them) and the
    /// rebuild requests: changes to
    /// each user's head of `feed_size` entries in SPEC order, and to each
    /// user's digests (`settings.digests`). At the epoch of
    /// each request it answers through `drpc`; in `active` mode the answer
    /// makes the user live, and only live users have heads.
    fn maintain_head(
        self,
        stories: VecCollection<'scope, u64, Story, isize>,
        restored: StreamVec<'scope, u64, RestoredStories>,
        requests: StreamVec<'scope, u64, Request>,
        settings: HeadSettings,
        drpc: Arc<Drpc>,
        status: Arc<Status>,
    ) -> HeadsAndDigests<'scope>;
}

/// One user's candidates.
#[derive(Default)]
struct UserHead {
    /// The newest entries of the feed, each once, oldest first; the head is
    /// the last `feed_size`. A ring: new entries mostly arrive at the back
    /// while the oldest leave at the front.
    entries: VecDeque<Entry>,
    /// Every feed entry at or above this is a candidate; older ones may
    /// exist unstored. `None`: every entry is a candidate. A key, not an
    /// entry: the story may be gone (and its slot reused) while it bounds.
    unknown_below: Option<FeedKey>,
    /// Head changes of the current epoch, logged while they are few.
    changes: Vec<(Entry, isize)>,
    /// The head as the epoch began (oldest first), once the log grew past
    /// [`CHANGE_LOG_LIMIT`]: a user with many deliveries in an epoch is
    /// diffed once at its end instead of sorting a long log.
    before: Option<Vec<Entry>>,
    /// Already listed among the users this epoch touched.
    touched: bool,
}

/// What inserting an entry did.
#[derive(PartialEq, Eq)]
enum Inserted {
    Added,
    Present,
    /// Below the candidates: older entries need not be offered either.
    Below,
}

/// An edge with its typed ids interned: `(of, user, relation)`.
type Pair = (Tid, Tid, Relation);

/// Stories added in one epoch from which the fan-out makes room for them
/// all first (a catch-up's big epochs, a resume on another worker count;
/// a resume on the same count goes through [`Fanout::restore`]).
const RESERVE_FOR_ADDITIONS: usize = 4096;

/// Candidates held beyond the cap before the oldest are dropped in one go
/// (which moves the bound once, not per delivery).
const TRIM_BATCH: usize = 32;

/// Head changes logged per user and epoch before the head is diffed instead.
const CHANGE_LOG_LIMIT: usize = 64;

impl UserHead {
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// Index of the oldest entry inside the head.
    fn head_start(&self, size: usize) -> usize {
        self.entries.len().saturating_sub(size)
    }

    fn insert(&mut self, entry: Entry, size: usize, cap: usize, slots: &Slots) -> Inserted {
        if let Some(bound) = &self.unknown_below {
            if slots.cmp_key(&entry, bound).is_lt() {
                return Inserted::Below;
            }
        }
        // Most deliveries are the newest entry: no search for them.
        let at = match self.entries.back() {
            // A story about two of the user's interests arrives twice in a row.
            Some(newest) if newest.slot == entry.slot => return Inserted::Present,
            Some(newest) if slots.cmp(&entry, newest).is_gt() => self.entries.len(),
            None => 0,
            _ => match slots.search(&self.entries, &entry) {
                Ok(_) => return Inserted::Present,
                Err(at) => at,
            },
        };
        if at == 0 && self.len() >= cap {
            self.unknown_below = Some(slots.key(self.entries[0]));
            return Inserted::Below;
        }
        if self.entries.len() == self.entries.capacity() {
            // Grow to the trim point at most, not to the next power of two.
            let room = (cap + TRIM_BATCH + 1).saturating_sub(self.len());
            self.entries
                .reserve_exact(self.len().max(8).min(room.max(1)));
        }
        self.add_at(at, entry, size);
        if self.len() > cap + TRIM_BATCH {
            self.trim(cap, slots);
        }
        self.bound_log(size, slots);
        Inserted::Added
    }

    /// One user's share of an epoch's stories: leaves, then joins newest
    /// first ([`UserRuns`]), so a full head stops at the
    /// first join below its candidates: a catch-up brings a user thousands
    /// of joins and only the newest can enter. Whether the head changed.
    fn deliver_run(
        &mut self,
        run: &[(Entry, bool)],
        size: usize,
        cap: usize,
        slots: &Slots,
    ) -> bool {
        let mut changed = false;
        for &(entry, joins) in run {
            if !joins {
                changed |= self.remove(entry, size, slots);
                continue;
            }
            match self.insert(entry, size, cap, slots) {
                Inserted::Added => changed = true,
                Inserted::Present => {}
                Inserted::Below => break,
            }
        }
        changed
    }

    /// Drops the candidates beyond `cap` (all outside the head), oldest first.
    fn trim(&mut self, cap: usize, slots: &Slots) {
        if self.len() > cap {
            self.entries.drain(..self.len() - cap);
            // Below the new oldest, entries may exist unstored.
            self.unknown_below = Some(slots.key(self.entries[0]));
        }
    }

    /// Inserts a new entry at its sorted place `at`, noting head changes.
    fn add_at(&mut self, at: usize, entry: Entry, size: usize) {
        let boundary = self.head_start(size);
        if self.before.is_some() {
            // Diffed at the end of the epoch.
        } else if self.len() < size {
            self.changes.push((entry, 1));
        } else if at > boundary {
            // Above the head's oldest entry, which leaves the head.
            self.changes.push((entry, 1));
            self.changes.push((self.entries[boundary], -1));
        }
        self.entries.insert(at, entry);
    }

    fn remove(&mut self, entry: Entry, size: usize, slots: &Slots) -> bool {
        let Ok(at) = slots.search(&self.entries, &entry) else {
            return false;
        };
        let boundary = self.head_start(size);
        if at >= boundary && self.before.is_none() {
            self.changes.push((entry, -1));
            if boundary > 0 {
                self.changes.push((self.entries[boundary - 1], 1));
            }
        }
        self.entries.remove(at);
        self.bound_log(size, slots);
        true
    }

    /// Adds entries older than every candidate (a refill), newest first.
    fn extend_below(&mut self, older: &[Entry], size: usize, slots: &Slots) {
        if self.entries.is_empty()
            && self.changes.is_empty()
            && self.before.is_none()
            && older.len() > CHANGE_LOG_LIMIT
        {
            // Empty with nothing logged: empty as the epoch began (every
            // change to the head is logged). A head filled whole (a new
            // user, a resume) is diffed against that, not logged and sorted.
            self.before = Some(Vec::new());
        }
        for entry in older {
            self.add_at(0, *entry, size);
        }
        self.bound_log(size, slots);
    }

    /// Once the change log is long, replaces it with the head as the epoch
    /// began: the head now, with the logged changes undone.
    fn bound_log(&mut self, size: usize, slots: &Slots) {
        if self.changes.len() <= CHANGE_LOG_LIMIT {
            return;
        }
        let (added, removed): (Vec<_>, Vec<_>) = consolidated(&mut self.changes, slots)
            .into_iter()
            .partition(|(_, diff)| *diff > 0);
        let was_added =
            |entry: &Entry| added.binary_search_by(|(a, _)| slots.cmp(a, entry)).is_ok();
        let mut before: Vec<Entry> = self
            .entries
            .range(self.head_start(size)..)
            .filter(|entry| !was_added(entry))
            .copied()
            .chain(removed.into_iter().map(|(entry, _)| entry))
            .collect();
        before.sort_unstable_by(|a, b| slots.cmp(a, b));
        self.before = Some(before);
    }

    fn head(&self, size: usize) -> Vec<Entry> {
        self.entries.iter().rev().take(size).copied().collect()
    }

    /// The epoch's head changes, consolidated, in feed order.
    fn take_changes<'a>(
        &mut self,
        size: usize,
        slots: &'a Slots,
    ) -> impl Iterator<Item = (FeedKey, isize)> + 'a {
        let changes = match self.before.take() {
            None => consolidated(&mut self.changes, slots),
            Some(before) => {
                let after = self.entries.range(self.head_start(size)..).copied();
                diff_sorted(before.into_iter(), after, slots)
            }
        };
        // The log of a busy epoch keeps its capacity for no one.
        self.changes.clear();
        if self.changes.capacity() > 16 {
            self.changes = Vec::new();
        }
        changes
            .into_iter()
            .map(move |(entry, diff)| (slots.key(entry), diff))
    }
}

/// The log's net changes, in feed order, without zeros; empties the log.
/// Sums the diffs of equal stories, drops those that cancel, and leaves
/// them oldest first (time, then id). A catch-up or resume epoch holds
/// hundreds of thousands of stories: with its time beside each (put there
/// as the story is stashed), the sort reads a story through its pointer
/// only on equal times. Each stories bolt sends its stories mostly oldest
/// first (a resume's exactly), so the log is long runs already in order,
/// which a stable sort merges instead of sorting afresh.
fn consolidate_stories(stories: &mut Vec<((Millis, Story), isize)>) {
    stories.sort_by(|a, b| a.0.cmp(&b.0));
    crate::bolt::consolidate_sorted(stories);
}

fn consolidated(log: &mut Vec<(Entry, isize)>, slots: &Slots) -> Vec<(Entry, isize)> {
    slots.sort(log);
    let mut merged: Vec<(Entry, isize)> = Vec::with_capacity(log.len());
    for (entry, diff) in log.drain(..) {
        match merged.last_mut() {
            Some((last, sum)) if slots.cmp(last, &entry).is_eq() => *sum += diff,
            _ => merged.push((entry, diff)),
        }
    }
    merged.retain(|(_, diff)| *diff != 0);
    merged
}

/// What turns the sorted set `before` into the sorted set `after`, in feed order.
fn diff_sorted(
    before: impl Iterator<Item = Entry>,
    after: impl Iterator<Item = Entry>,
    slots: &Slots,
) -> Vec<(Entry, isize)> {
    let (mut before, mut after) = (before.peekable(), after.peekable());
    let mut out = Vec::new();
    loop {
        match (before.peek(), after.peek()) {
            (Some(b), Some(a)) => match slots.cmp(b, a) {
                std::cmp::Ordering::Less => out.push((before.next().expect("peeked"), -1)),
                std::cmp::Ordering::Greater => out.push((after.next().expect("peeked"), 1)),
                std::cmp::Ordering::Equal => {
                    before.next();
                    after.next();
                }
            },
            (Some(_), None) => out.push((before.next().expect("peeked"), -1)),
            (None, Some(_)) => out.push((after.next().expect("peeked"), 1)),
            (None, None) => return out,
        }
    }
}

enum Input {
    Edge(Edge, isize),
    Story(Story, isize),
    Restored(Arc<Vec<Story>>),
    Request(Request),
}

impl Input {
    fn edge((edge, time, diff): (Edge, u64, isize)) -> (u64, Input) {
        (time, Input::Edge(edge, diff))
    }

    fn story((story, time, diff): (Story, u64, isize)) -> (u64, Input) {
        (time, Input::Story(story, diff))
    }

    fn batch(restored: RestoredStories) -> (u64, Input) {
        (restored.time, Input::Restored(restored.stories))
    }
}

/// The bolt's state on one worker.
struct Heads {
    settings: HeadSettings,
    fanout: Fanout,
    digests: DigestGroups,
    /// Users with a head here: everyone with a non-empty feed (`all`), or the live ones (`active`).
    heads: FastMap<Tid, UserHead>,
    /// The epoch's deliveries grouped by user.
    runs: UserRuns,
    last_eviction: Instant,
}

/// What one epoch brings, split by kind.
#[derive(Default)]
struct EpochInput {
    edges: Vec<(Edge, isize)>,
    /// Each with its time beside it, for [`consolidate_stories`].
    stories: Vec<((Millis, Story), isize)>,
    /// Batches of restored stories, each oldest first.
    restored: Vec<Arc<Vec<Story>>>,
    requests: Vec<Request>,
}

impl crate::bolt::Stashed<Input> for EpochInput {
    fn push(&mut self, item: Input) {
        match item {
            Input::Edge(edge, diff) => self.edges.push((edge, diff)),
            Input::Story(story, diff) => self.stories.push(((story.0.time, story), diff)),
            Input::Restored(batch) => self.restored.push(batch),
            Input::Request(request) => self.requests.push(request),
        }
    }
}

impl Heads {
    fn new(settings: HeadSettings) -> Heads {
        Heads {
            digests: DigestGroups::new(settings.digests.clone(), settings.slack),
            settings,
            fanout: Fanout::default(),
            heads: FastMap::default(),
            runs: UserRuns::default(),
            last_eviction: Instant::now(),
        }
    }

    fn cap(&self) -> usize {
        self.settings.feed_size + self.settings.slack
    }

    /// A user's head, created empty (`all` mode) if missing; `None` for a
    /// user who is not live (`active` mode).
    fn head_mut(&mut self, user: Tid) -> Option<&mut UserHead> {
        match self.settings.materialize {
            Materialize::All => Some(self.heads.entry(user).or_default()),
            Materialize::Active => self.heads.get_mut(&user),
        }
    }

    /// The user's candidates, fresh from the stories (the rebuild path).
    fn rebuilt(&self, user: Tid) -> UserHead {
        let cap = self.cap();
        let newest = self.fanout.merged(user, None, cap);
        UserHead {
            unknown_below: (newest.len() == cap).then(|| self.fanout.slots.key(newest[cap - 1])),
            entries: newest.into_iter().rev().collect(),
            changes: Vec::new(),
            before: None,
            touched: false,
        }
    }

    /// One epoch, in steps: interests and blocks, then stories, then the
    /// heads (drops, deliveries, backfills, refills), then rebuild answers.
    fn epoch(
        &mut self,
        time: u64,
        input: EpochInput,
        drpc: &Drpc,
        status: &Status,
        out: &mut Vec<HeadChange>,
        digest_out: &mut Vec<DigestChange>,
    ) -> Vec<Answer> {
        let EpochInput {
            edges,
            mut stories,
            restored,
            requests,
        } = input;
        let edges = self.interned(edges);
        if !stories.is_empty() {
            // Batches beside other stories (never in practice: a resume's
            // epoch holds only its batches) join the consolidation.
            for batch in &restored {
                stories.extend(batch.iter().map(|story| ((story.0.time, story.clone()), 1)));
            }
        }
        consolidate_stories(&mut stories);
        // Interests first: what a changed edge brings to digests is the
        // interest's stories before this epoch's (this epoch's stories then
        // reach the followers as they are after the edges).
        let (backfills, narrowed) = self.apply_edges(edges);
        let changed = if stories.is_empty() {
            self.apply_restored(&restored)
        } else {
            self.apply_stories(&stories)
        };
        let mut touched: Vec<Tid> = Vec::new();
        self.drop_unshown(narrowed, &mut touched);
        let mut considered = self.deliver(&changed, &mut touched);
        considered += self.backfill(backfills, &mut touched);
        considered += self.refill_and_emit(touched, out);
        status.add_deliveries(considered);

        let answers = requests
            .into_iter()
            .map(|request| self.answer(time, request, drpc, status, out))
            .collect();
        self.evict_idle(drpc, out);
        self.digests.end_epoch(&self.fanout, digest_out);
        self.fanout.end_epoch();
        answers
    }

    /// The epoch's edges with their typed ids interned, consolidated:
    /// integers sort faster than the ids' text, and a resume's epoch
    /// brings every edge of the worker's users at once. Consolidated edges
    /// are distinct pairs, each applied on its own, so their order (here
    /// by interned integers, which differ between workers) changes nothing.
    fn interned(&mut self, edges: Vec<(Edge, isize)>) -> Vec<(Pair, isize)> {
        let typed_ids = &mut self.fanout.typed_ids;
        let mut pairs: Vec<(Pair, isize)> = (edges.into_iter())
            .map(|(edge, diff)| {
                let (of, user) = (typed_ids.intern(&edge.of), typed_ids.intern(&edge.user));
                ((of, user, edge.relation), diff)
            })
            .collect();
        crate::bolt::consolidate(&mut pairs);
        pairs
    }

    /// Applies the epoch's follows, unfollows, blocks and unblocks to the
    /// fan-out and the digests. Returns the `(user, typed id)` pairs whose
    /// stories may now enter the user's head (a follow or an unblock) and
    /// the users whose heads may now hold entries no longer in their feed
    /// (an unfollow or a block).
    fn apply_edges(&mut self, edges: Vec<(Pair, isize)>) -> (Vec<(Tid, Tid)>, Vec<Tid>) {
        let (mut backfills, mut narrowed) = (Vec::new(), Vec::new());
        for ((i, u, relation), diff) in edges {
            match relation {
                Relation::Follows => {
                    self.digests.follow(u, i, diff, &self.fanout);
                    for _ in 0..diff.unsigned_abs() {
                        if diff > 0 {
                            self.fanout.follow(u, i);
                        } else {
                            self.fanout.unfollow(u, i);
                        }
                    }
                }
                // Digests see the feed as it is before a block and after an unblock.
                Relation::Blocks if diff > 0 => {
                    self.digests.rejoin(u, i, false, &self.fanout);
                    self.fanout.block(u, i);
                }
                Relation::Blocks => {
                    self.fanout.unblock(u, i);
                    self.digests.rejoin(u, i, true, &self.fanout);
                }
            }
            if (relation == Relation::Follows) == (diff > 0) {
                backfills.push((u, i));
            } else {
                narrowed.push(u);
            }
        }
        (backfills, narrowed)
    }

    /// Keeps or forgets the epoch's stories, removals before additions,
    /// each oldest first (a story newer than all about its ids is appended
    /// to their index). Returns the entries kept or forgotten, with their
    /// diffs.
    /// `stories` come consolidated, oldest first ([`consolidate_stories`]).
    fn apply_stories(&mut self, stories: &[((Millis, Story), isize)]) -> Vec<(Entry, isize)> {
        let removals = stories.iter().filter(|(_, diff)| *diff < 0);
        let additions = stories.iter().filter(|(_, diff)| *diff > 0);
        if additions.clone().count() >= RESERVE_FOR_ADDITIONS {
            let added = additions.clone().map(|((_, story), _)| story);
            self.fanout.reserve_for(added);
        }
        (removals.chain(additions))
            .filter_map(|((_, story), diff)| self.keep_or_forget(story, *diff))
            .collect()
    }

    /// Keeps (`diff > 0`) or forgets one story, in the fan-out and the
    /// digests; its entry and diff if it was new or kept.
    fn keep_or_forget(&mut self, story: &Story, diff: isize) -> Option<(Entry, isize)> {
        let entry = if diff < 0 {
            self.fanout.remove_story(story)
        } else {
            self.fanout.add_story(story)
        }?;
        if !self.digests.is_empty() {
            if diff > 0 {
                self.digests.add_story(entry, &self.fanout.slots);
            } else {
                self.digests.remove_story(entry);
            }
        }
        Some((entry, diff))
    }

    /// [`Heads::apply_stories`] for batches of restored stories, each oldest
    /// first, alone in their epoch: added oldest first across the batches
    /// (merged as they are read), with nothing to consolidate.
    fn apply_restored(&mut self, batches: &[Arc<Vec<Story>>]) -> Vec<(Entry, isize)> {
        if batches.is_empty() {
            return Vec::new();
        }
        let total = batches.iter().map(|batch| batch.len()).sum();
        let mut merged = Vec::with_capacity(total);
        let mut next = vec![0; batches.len()];
        // The oldest of the batches' next stories, each time: few batches
        // (one per worker), so a scan beats a heap.
        loop {
            let oldest = (batches.iter().enumerate())
                .filter_map(|(at, batch)| Some((at, batch.get(next[at])?)))
                .min_by(|(_, a), (_, b)| a.cmp(b));
            let Some((at, story)) = oldest else { break };
            next[at] += 1;
            merged.push(story);
        }
        let entries = self.fanout.restore(merged.into_iter());
        if !self.digests.is_empty() {
            for &entry in &entries {
                self.digests.add_story(entry, &self.fanout.slots);
            }
        }
        entries.into_iter().map(|entry| (entry, 1)).collect()
    }

    /// Drops from the heads of `users` what is no longer in their feed.
    fn drop_unshown(&mut self, mut users: Vec<Tid>, touched: &mut Vec<Tid>) {
        let size = self.settings.feed_size;
        users.sort_unstable();
        users.dedup();
        for u in users {
            let Some(head) = self.heads.get(&u) else {
                continue;
            };
            let gone: Vec<Entry> = head
                .entries
                .iter()
                .filter(|entry| !self.fanout.in_feed_of(u, **entry))
                .copied()
                .collect();
            let head = self.heads.get_mut(&u).expect("present");
            for entry in gone {
                head.remove(entry, size, &self.fanout.slots);
            }
            touched.push(u);
        }
    }

    /// Stories removed and added reach the followers of what they are
    /// about: with digests, grouped by user ([`UserRuns`]), each user's
    /// run feeding the digests and then the flat head; without, story by
    /// story (grouped, a flat run was faster but held about 80 more bytes
    /// per head entry, over the 256 the engine keeps to).
    fn deliver(&mut self, changed: &[(Entry, isize)], touched: &mut Vec<Tid>) -> u64 {
        if self.digests.is_empty() {
            return self.deliver_each(changed, touched);
        }
        let (size, cap) = (self.settings.feed_size, self.cap());
        let create = self.settings.materialize == Materialize::All;
        let (heads, digests) = (&mut self.heads, &mut self.digests);
        let slots = &self.fanout.slots;
        let mut considered = 0;
        self.runs.for_each(changed, &self.fanout, |u, run| {
            considered += run.len() as u64;
            digests.deliver_run(u, run.iter().copied(), slots);
            let head = match heads.get_mut(&u) {
                Some(head) => head,
                None if create && run.iter().any(|(_, joins)| *joins) => {
                    heads.entry(u).or_default()
                }
                None => return,
            };
            if head.deliver_run(run, size, cap, slots) && !head.touched {
                head.touched = true;
                touched.push(u);
            }
        });
        considered
    }

    /// [`Heads::deliver`] story by story: each to each follower.
    fn deliver_each(&mut self, changed: &[(Entry, isize)], touched: &mut Vec<Tid>) -> u64 {
        let (size, cap) = (self.settings.feed_size, self.cap());
        let mut considered = 0;
        let slots = &self.fanout.slots;
        for &(entry, diff) in changed {
            for tid in slots.about(entry) {
                for &u in self.fanout.followers(*tid) {
                    considered += 1;
                    let head = match self.settings.materialize {
                        Materialize::All if diff > 0 => self.heads.entry(u).or_default(),
                        _ => match self.heads.get_mut(&u) {
                            Some(head) => head,
                            None => continue,
                        },
                    };
                    let changed = if diff < 0 {
                        head.remove(entry, size, slots)
                    } else if self.fanout.hides(u, entry) {
                        false
                    } else {
                        head.insert(entry, size, cap, slots) == Inserted::Added
                    };
                    if changed && !head.touched {
                        head.touched = true;
                        touched.push(u);
                    }
                }
            }
        }
        considered
    }

    /// Follows and unblocks backfill from the newest stories about the
    /// typed id down to the bound.
    fn backfill(&mut self, backfills: Vec<(Tid, Tid)>, touched: &mut Vec<Tid>) -> u64 {
        let (size, cap) = (self.settings.feed_size, self.cap());
        let mut considered = 0;
        for (u, i) in backfills {
            let Some(head) = self.head_mut(u) else {
                continue;
            };
            touched.push(u);
            if head.len() == 0 {
                // An empty head (a new user, or a resume from a checkpoint)
                // is filled by one merge of all its interests below, not
                // by a backfill per interest.
                head.unknown_below = Some(FeedKey::new(Millis::MAX, ""));
                continue;
            }
            let head = self.heads.get_mut(&u).expect("present");
            for entry in self.fanout.stories_about(i) {
                considered += 1;
                if !self.fanout.in_feed_of(u, entry) {
                    continue; // hidden by a block, or (after an unblock) not followed
                }
                if head.insert(entry, size, cap, &self.fanout.slots) == Inserted::Below {
                    break;
                }
            }
        }
        considered
    }

    /// Refills the `touched` users that retractions left short, and emits
    /// their head changes. Users touched by edges are listed once per
    /// edge, by stories once.
    fn refill_and_emit(&mut self, mut touched: Vec<Tid>, out: &mut Vec<HeadChange>) -> u64 {
        let (size, cap) = (self.settings.feed_size, self.cap());
        let mut considered = 0;
        touched.sort_unstable();
        touched.dedup();
        for u in touched {
            let Some(head) = self.heads.get_mut(&u) else {
                continue;
            };
            head.touched = false;
            if head.len() < size {
                if let Some(bound) = head.unknown_below.take() {
                    let need = cap - head.len();
                    let older = self.fanout.merged(u, Some(&bound), need);
                    considered += older.len() as u64;
                    if older.len() == need {
                        head.unknown_below = older.last().map(|e| self.fanout.slots.key(*e));
                    }
                    head.extend_below(&older, size, &self.fanout.slots);
                }
            }
            let user = self.fanout.typed_ids.name(u);
            out.extend(
                head.take_changes(size, &self.fanout.slots)
                    .map(|(key, diff)| (user.clone(), key, diff)),
            );
            if head.len() == 0
                && head.unknown_below.is_none()
                && self.settings.materialize == Materialize::All
            {
                self.heads.remove(&u);
            }
        }
        considered
    }

    fn is_live_mode(&self) -> bool {
        self.settings.materialize == Materialize::Active
    }

    /// Answers a rebuild request from the stories as of this epoch; in
    /// `active` mode the answer becomes the user's live head.
    fn answer(
        &mut self,
        time: u64,
        (user, id): Request,
        drpc: &Drpc,
        status: &Status,
        out: &mut Vec<HeadChange>,
    ) -> Answer {
        let size = self.settings.feed_size;
        let u = self.fanout.typed_ids.intern(&user);
        let rebuilt = self.rebuilt(u);
        let newest = rebuilt.head(size);
        let answer: Vec<FeedKey> = newest.iter().map(|e| self.fanout.slots.key(*e)).collect();
        match self.heads.get(&u) {
            Some(live) => {
                // The fan-in answer must equal the head kept live, at the same epoch.
                if live.head(size) != newest {
                    status.add_drpc_mismatch();
                }
            }
            None if self.is_live_mode() => {
                out.extend(answer.iter().map(|key| (user.clone(), key.clone(), 1)));
                self.heads.insert(u, rebuilt);
                drpc.activate_at(time, &user);
            }
            None => {
                if !answer.is_empty() {
                    status.add_drpc_mismatch();
                }
            }
        }
        (id, answer)
    }

    /// In `active` mode, at most once a second: drops the heads of users
    /// not read within the window.
    fn evict_idle(&mut self, drpc: &Drpc, out: &mut Vec<HeadChange>) {
        if !self.is_live_mode() || self.last_eviction.elapsed() <= Duration::from_secs(1) {
            return;
        }
        self.last_eviction = Instant::now();
        let live: std::collections::HashSet<TypedId> = self
            .heads
            .keys()
            .map(|u| self.fanout.typed_ids.name(*u).clone())
            .collect();
        for user in drpc.evict_idle(&live, self.settings.active_window) {
            let u = self
                .fanout
                .typed_ids
                .get(&user)
                .expect("live user interned");
            if let Some(head) = self.heads.remove(&u) {
                out.extend(
                    head.head(self.settings.feed_size)
                        .into_iter()
                        .map(|entry| (user.clone(), self.fanout.slots.key(entry), -1)),
                );
            }
        }
    }

    /// Every digest of the users this worker owns, whole (see
    /// [`DigestGroups::recovered`]).
    fn recovered_digests(
        &self,
        store: &dyn Store,
        index: usize,
        peers: usize,
        only: Only<'_>,
        out: &mut Vec<DigestChange>,
    ) {
        let fanout = &self.fanout;
        self.digests
            .recovered(fanout, store, index, peers, only, out);
    }

    /// Every head this worker owns, whole: a reset then its entries, and a
    /// reset for each user the store has but this worker no longer does;
    /// with `only`, just those users' heads (a reset, then the entries).
    fn recovered_heads(
        &self,
        store: &dyn Store,
        index: usize,
        peers: usize,
        only: Only<'_>,
        out: &mut Vec<HeadChange>,
    ) {
        let size = self.settings.feed_size;
        let head_of = |user: &TypedId| {
            let u = self.fanout.typed_ids.get(user)?;
            self.heads.get(&u).filter(|head| head.len() > 0)
        };
        let holds = (self.heads.iter())
            .filter(|(_, head)| head.len() > 0)
            .map(|(u, _)| self.fanout.typed_ids.name(*u));
        let has = |user: &TypedId| head_of(user).is_some();
        each_recovered_user(
            only,
            holds,
            || store.users(),
            has,
            (index, peers),
            |user| {
                out.push(reset_marker(user));
                if let Some(head) = head_of(user) {
                    out.extend(
                        head.head(size)
                            .into_iter()
                            .map(|entry| (user.clone(), self.fanout.slots.key(entry), 1)),
                    );
                }
            },
        );
    }
}

/// The gates of the heads' and the digests' outputs, from the operator's
/// initial capabilities: each output recovers on its own (the digests'
/// only with digests). The answers' capability is dropped: answers go out
/// under their epoch's capability only.
fn gates(caps: &mut Vec<Capability<u64>>, settings: &HeadSettings) -> (RecoveryGate, RecoveryGate) {
    caps.pop();
    let digests_cap = caps.pop().filter(|_| !settings.digests.is_empty());
    let digests = RecoveryGate::new(digests_cap, settings.recover_into.clone());
    let heads = RecoveryGate::new(caps.pop(), settings.recover_into.clone());
    (heads, digests)
}

/// The head-change marker that clears a user's head in the store.
pub fn reset_marker(user: &TypedId) -> HeadChange {
    (user.clone(), FeedKey::new(0, ""), 0)
}

impl<'scope> MaintainHead<'scope> for VecCollection<'scope, u64, Edge, isize> {
    fn maintain_head(
        self,
        stories: VecCollection<'scope, u64, Story, isize>,
        restored: StreamVec<'scope, u64, RestoredStories>,
        requests: StreamVec<'scope, u64, Request>,
        settings: HeadSettings,
        drpc: Arc<Drpc>,
        status: Arc<Status>,
    ) -> HeadsAndDigests<'scope> {
        let scope = self.inner.scope();
        let (index, peers) = (scope.index(), scope.peers());
        let mut builder = OperatorBuilder::new("MaintainHead".to_owned(), scope);
        let mut edges = builder.new_input(
            self.inner,
            Exchange::new(|(edge, _, _): &(Edge, u64, isize)| route(&edge.user)),
        );
        let mut stories = builder.new_input(stories.inner, Pipeline);
        let mut restored = builder.new_input(restored, Pipeline);
        let mut requests =
            builder.new_input(requests, Exchange::new(|(user, _): &Request| route(user)));
        let (heads_out, heads_stream) = builder.new_output();
        let (digests_out, digests_stream) = builder.new_output();
        let (answers_out, answers_stream) = builder.new_output();
        let mut heads_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<HeadChange>>>::from(heads_out);
        let mut digests_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<DigestChange>>>::from(digests_out);
        let mut answers_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<Answer>>>::from(answers_out);
        builder.build(move |mut caps: Vec<Capability<u64>>| {
            let mut stash = EpochStash::<Input, EpochInput>::split(3);
            let (mut heads_gate, mut digests_gate) = gates(&mut caps, &settings);
            let mut heads = Heads::new(settings);
            let (mut out, mut digested) = (Vec::new(), Vec::new());
            move |frontiers| {
                edges
                    .for_each(|cap, data| stash.stash_timed(&cap, data.drain(..).map(Input::edge)));
                stories.for_each(|cap, data| {
                    stash.stash_timed(&cap, data.drain(..).map(Input::story))
                });
                restored.for_each(|cap, data| {
                    stash.stash_timed(&cap, data.drain(..).map(Input::batch))
                });
                requests
                    .for_each(|cap, data| stash.stash(&cap, data.drain(..).map(Input::Request)));
                let mut heads_out = heads_out.activate();
                let mut digests_out = digests_out.activate();
                let mut answers_out = answers_out.activate();
                for (caps, inputs) in
                    stash.take_ready(&[&frontiers[0], &frontiers[1], &frontiers[2], &frontiers[3]])
                {
                    let time = *caps[0].time();
                    let answered =
                        heads.epoch(time, inputs, &drpc, &status, &mut out, &mut digested);
                    // Each answer goes back to the process that asked.
                    answers_out
                        .session(&caps[2])
                        .give_iterator(answered.into_iter());
                    status.add_digest_updates(digested.len() as u64);
                    digests_gate.pass(time, &mut digested, |changes| {
                        digests_out.session(&caps[1]).give_iterator(changes)
                    });
                    heads_gate.pass(time, &mut out, |changes| {
                        heads_out.session(&caps[0]).give_iterator(changes)
                    });
                }
                heads_gate.step(&status, frontiers, |cap, store, only| {
                    heads.recovered_heads(store, index, peers, only, &mut out);
                    heads_out.session(cap).give_iterator(out.drain(..));
                });
                digests_gate.step(&status, frontiers, |cap, store, only| {
                    heads.recovered_digests(store, index, peers, only, &mut digested);
                    digests_out.session(cap).give_iterator(digested.drain(..));
                });
                crate::bolt::release_burst(&mut out);
                crate::bolt::release_burst(&mut digested);
            }
        });
        (heads_stream, digests_stream, answers_stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Activity;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeSet;

    /// Random inserts and removals, few or many per epoch (so that both the
    /// change log and the end-of-epoch diff are used): replaying the emitted
    /// changes gives the newest `size` entries of what is present. With the
    /// larger head, every seventh epoch starts over from an empty head
    /// filled whole by a refill, as after a resume.
    #[test]
    fn emitted_changes_replay_to_the_head() {
        for (size, cap, stories, resume_every) in [(10, 14, 300, None), (100, 140, 1000, Some(7))] {
            emitted_changes_replay(size, cap, stories, resume_every);
        }
    }

    fn emitted_changes_replay(
        size: usize,
        cap: usize,
        stories: usize,
        resume_every: Option<usize>,
    ) {
        for seed in 0..20u64 {
            let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
            let mut fanout = Fanout::default();
            let entries: Vec<Entry> = (0..stories)
                .map(|i| {
                    let story = Story(Arc::new(Activity {
                        id: format!("a{i}").into(),
                        time: rng.gen_range(0..stories as i64 * 2 / 3),
                        actor: TypedId::parse("user:rob").unwrap(),
                        verb: "post".into(),
                        object: TypedId::parse("thing:t").unwrap(),
                        target: None,
                        extra: None,
                    }));
                    fanout.add_story(&story).expect("new id")
                })
                .collect();
            let slots = &fanout.slots;
            let mut head = UserHead::default();
            let mut present: BTreeSet<FeedKey> = BTreeSet::new();
            let mut shown: BTreeSet<FeedKey> = BTreeSet::new();
            for epoch in 0..40 {
                if resume_every.is_some_and(|every| epoch % every == every - 1) {
                    // A new head for what is present, and a store to match.
                    head = UserHead::default();
                    head.unknown_below = Some(FeedKey::new(Millis::MAX, ""));
                    shown.clear();
                }
                if epoch % 5 == 4 {
                    // Retraction-heavy: half of what is present goes, so the
                    // refill of a head still holding entries is long.
                    for &entry in &entries {
                        if present.contains(&slots.key(entry)) && rng.gen_bool(0.5) {
                            present.remove(&slots.key(entry));
                            head.remove(entry, size, slots);
                        }
                    }
                }
                let ops = if epoch % 2 == 0 { 3 } else { stories * 2 / 5 };
                for _ in 0..ops {
                    let entry = entries[rng.gen_range(0..entries.len())];
                    let key = slots.key(entry);
                    if present.contains(&key) && rng.gen_bool(0.3) {
                        present.remove(&key);
                        head.remove(entry, size, slots);
                    } else if !present.contains(&key) {
                        present.insert(key);
                        head.insert(entry, size, cap, slots);
                    }
                }
                // Refill as the bolt does: the model knows every present entry.
                if head.len() < size {
                    if let Some(bound) = head.unknown_below.take() {
                        let mut older: Vec<Entry> = entries
                            .iter()
                            .copied()
                            .filter(|e| present.contains(&slots.key(*e)))
                            .filter(|e| slots.cmp_key(e, &bound).is_lt())
                            .collect();
                        older.sort_by(|a, b| slots.cmp(b, a));
                        older.truncate(cap - head.len());
                        if older.len() == cap - head.len() {
                            head.unknown_below = older.last().map(|e| slots.key(*e));
                        }
                        head.extend_below(&older, size, slots);
                    }
                }
                for (key, diff) in head.take_changes(size, slots) {
                    if diff > 0 {
                        assert!(shown.insert(key), "seed {seed}: added twice");
                    } else {
                        assert!(shown.remove(&key), "seed {seed}: removed absent");
                    }
                }
                let expected: BTreeSet<FeedKey> =
                    present.iter().rev().take(size).cloned().collect();
                assert_eq!(shown, expected, "seed {seed}, epoch {epoch}");
            }
        }
    }
}
