//! Bolts: the dataflow operators that turn events into feeds. One operator per
//! file, each an extension trait named after what it does:
//!
//! | file | trait | input → output |
//! |---|---|---|
//! | [`interests`] | [`ResolveInterests`] | follow/unfollow events → current (interest, user) edges (last writer wins) |
//! | [`stories`] | [`KeepStories`] | activity/delete events → retained stories per typed id, and activity writes |
//! | [`feed_head`] | [`MaintainHead`] | interest edges + every story → exact changes to each user's bounded feed head and digests, rebuild answers |
//! | [`fanout`] | — | the fan-out state a feed-head bolt keeps: all stories by typed id, its users' interests, their followers |
//! | [`digest`] | [`Digest`] | notifications (stories by target) → exact changes to each notification feed |
//! | [`digest_groups`] | — | the digests a feed-head bolt keeps of its users' feeds, bounded by time buckets |
//! | [`top_k`] | — | the bounded top-K that heads and digests share |
//! | [`user_runs`] | — | an epoch's deliveries grouped by user, newest joins first, for heads and digests |
//! | [`recovery`] | — | the gate that holds output while a restart recovers on a persistent store |
//! | [`write_to`] | [`WriteTo`] | heads, digests and activity writes → the store, one batch per epoch; its frontier is the ack |
//!
//! The stateful operators process whole epochs in epoch order ([`EpochStash`]),
//! so their output never depends on how events were split between workers or
//! interleaved in flight.

pub mod digest;
pub mod digest_groups;
pub mod fanout;
pub mod feed_head;
pub mod interests;
pub mod recovery;
pub mod stories;
pub mod top_k;
pub mod user_runs;
pub mod write_to;

use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;

use timely::dataflow::operators::{Capability, InputCapability};
use timely::progress::frontier::MutableAntichain;

pub use digest::Digest;
pub use feed_head::MaintainHead;
pub use interests::{InterestEvent, ResolveInterests};
pub use stories::{ActivityChange, KeepStories, StoryEvent};
pub use write_to::{Write, WriteTo};

/// Lets a reused output buffer give back the capacity of a burst: a catch-up
/// epoch can carry millions of changes, and a buffer that kept their capacity
/// would hold that memory for the rest of the run.
pub(crate) fn release_burst<T>(buffer: &mut Vec<T>) {
    const KEEP: usize = 1 << 14;
    if buffer.capacity() > KEEP {
        buffer.shrink_to(KEEP);
    }
}

/// After a use of a reused scratch buffer that took `used` elements (its
/// contents are not needed any more): lets most of it go once a use took a
/// quarter of it or less, so that catching up, epochs of like size reuse
/// it, and live, small epochs do not hold a catch-up's buffers for good.
/// Above 32 MiB it goes after every use: glibc maps a buffer that large on
/// its own, so allocating it again costs only page faults, small beside the
/// epoch that fills it, and a topology that has just caught up does not
/// hold its last epoch's buffers.
pub(crate) fn release_unused<T>(buffer: &mut Vec<T>, used: usize) {
    const MAPPED: usize = 32 << 20;
    let used = used.max(1024);
    if buffer.capacity() * std::mem::size_of::<T>() > MAPPED {
        *buffer = Vec::new();
    } else if buffer.capacity() > 4 * used {
        buffer.clear();
        buffer.shrink_to(2 * used);
    }
}

/// Sums the diffs of equal records and drops those that cancel, leaving
/// them sorted. As differential's `consolidate`, but with an unstable sort:
/// an epoch of a catch-up holds hundreds of thousands of updates, and its
/// stable sort's merge buffer was a tenth of the time.
///
/// ```
/// let mut updates = vec![("b", 1), ("a", 1), ("b", -1), ("a", 1)];
/// feedstorm::bolt::consolidate(&mut updates);
/// assert_eq!(updates, [("a", 2)]);
/// ```
pub fn consolidate<D: Ord>(updates: &mut Vec<(D, isize)>) {
    updates.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    consolidate_sorted(updates);
}

/// [`consolidate`] for updates already sorted by their data.
pub(crate) fn consolidate_sorted<D: Ord>(updates: &mut Vec<(D, isize)>) {
    updates.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            kept.1 += later.1;
        }
        same
    });
    updates.retain(|(_, diff)| *diff != 0);
}

/// The least time the `frontiers` can still bring, if any input is open: an
/// operator has seen every epoch before it.
pub(crate) fn passed(frontiers: &[MutableAntichain<u64>]) -> Option<u64> {
    frontiers
        .iter()
        .filter_map(|f| f.frontier().first().copied())
        .min()
}

/// What an [`EpochStash`] keeps of one epoch: a list of its items, or (for
/// an operator that handles each kind of item on its own) the items split
/// by kind as they arrive, so that a big epoch is not copied once more.
pub trait Stashed<D>: Default {
    /// Adds one item of the epoch.
    fn push(&mut self, item: D);
}

impl<D> Stashed<D> for Vec<D> {
    fn push(&mut self, item: D) {
        Vec::push(self, item);
    }
}

/// Data stashed by epoch until no input can add to the epoch any more; then
/// handed back oldest first, with a capability per output port to answer it.
pub struct EpochStash<D, C = Vec<D>> {
    ports: usize,
    epochs: BTreeMap<u64, (Vec<Capability<u64>>, C)>,
    item: std::marker::PhantomData<D>,
}

impl<D> EpochStash<D> {
    /// A stash for an operator with `ports` outputs, each epoch a list.
    pub fn new(ports: usize) -> Self {
        Self::split(ports)
    }
}

impl<D, C: Stashed<D>> EpochStash<D, C> {
    /// A stash for an operator with `ports` outputs, each epoch kept as a `C`.
    pub fn split(ports: usize) -> Self {
        EpochStash {
            ports,
            epochs: BTreeMap::new(),
            item: std::marker::PhantomData,
        }
    }

    /// Keeps `data`, received under `cap`, at the capability's time (for
    /// streams whose records carry no time of their own). Every message of
    /// our dataflows has a stamp; one without could not be placed in an epoch.
    pub fn stash(&mut self, cap: &InputCapability<u64>, data: impl IntoIterator<Item = D>) {
        let Some(&time) = cap.least() else { return };
        self.stash_timed(cap, data.into_iter().map(|d| (time, d)));
    }

    /// Keeps items each under its own time, received under `cap`: an
    /// operator may send an update at a time later than the capability it
    /// sends it under (differential's join does).
    pub fn stash_timed(
        &mut self,
        cap: &InputCapability<u64>,
        items: impl IntoIterator<Item = (u64, D)>,
    ) {
        let ports = self.ports;
        for (time, item) in items {
            // Items mostly come in runs of one time: no lookup for those.
            if let Some(mut last) = self.epochs.last_entry() {
                if *last.key() == time {
                    last.get_mut().1.push(item);
                    continue;
                }
            }
            let entry = self.epochs.entry(time).or_insert_with(|| {
                (
                    (0..ports).map(|port| cap.delayed(&time, port)).collect(),
                    C::default(),
                )
            });
            entry.1.push(item);
        }
    }

    /// Removes and returns the epochs that every input frontier has passed,
    /// oldest first.
    pub fn take_ready(
        &mut self,
        frontiers: &[&MutableAntichain<u64>],
    ) -> Vec<(Vec<Capability<u64>>, C)> {
        let mut ready = Vec::new();
        while let Some(entry) = self.epochs.first_entry() {
            let time = *entry.key();
            if frontiers.iter().any(|f| f.less_equal(&time)) {
                break;
            }
            ready.push(entry.remove());
        }
        ready
    }
}

/// The hasher of the bolts' maps keyed by producers' text (ids, typed ids,
/// group keys): foldhash, fast on short text, and seeded per map so that no
/// producer can choose ids that collide.
pub type Seeded = foldhash::fast::RandomState;

/// One handle per distinct value (a typed id's or a verb's text): the
/// spouts and decoders make a fresh copy per record, and a celebrity's id
/// would otherwise be held once per story or follower naming them.
pub(crate) struct Pool<T> {
    handles: HashSet<T, Seeded>,
    /// Pool size after the last sweep: the next sweep waits for it to double.
    swept_at: usize,
    /// Whether anything besides the pool still holds the handle.
    in_use: fn(&T) -> bool,
}

impl<T: std::hash::Hash + Eq + Clone> Pool<T> {
    /// An empty pool; a sweep forgets the handles `in_use` says are not.
    pub(crate) fn new(in_use: fn(&T) -> bool) -> Self {
        Pool {
            handles: HashSet::default(),
            swept_at: 0,
            in_use,
        }
    }

    /// Replaces `handle` by the pool's handle of its value, pooling it if new.
    pub(crate) fn share(&mut self, handle: &mut T) {
        match self.handles.get(handle) {
            Some(pooled) => *handle = pooled.clone(),
            None => {
                self.handles.insert(handle.clone());
                if self.handles.len() > 2 * self.swept_at.max(1024) {
                    // Forget handles that nothing else holds any more.
                    self.handles.retain(self.in_use);
                    self.swept_at = self.handles.len();
                }
            }
        }
    }
}

/// Interned strings (activity ids, group keys), shared by all users' state on
/// one worker, so that a string held by many users is stored once.
#[derive(Default)]
pub struct Interner(HashSet<Rc<str>, Seeded>);

impl Interner {
    /// The shared copy of `text`.
    pub fn intern(&mut self, text: &str) -> Rc<str> {
        if let Some(rc) = self.0.get(text) {
            return rc.clone();
        }
        let rc: Rc<str> = Rc::from(text);
        self.0.insert(rc.clone());
        rc
    }

    /// Forgets `text` once the caller's copy is the last one outside the interner.
    pub fn release(&mut self, text: &Rc<str>) {
        if Rc::strong_count(text) == 2 {
            self.0.remove(text);
        }
    }

    /// Forgets every string that nobody else holds any more.
    pub fn sweep(&mut self) {
        self.0.retain(|text| Rc::strong_count(text) > 1);
    }

    /// Strings held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no string is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
