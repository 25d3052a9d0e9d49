//! Fan-out on one worker: the stories every worker keeps (Storm's *all
//! grouping*), the interests of the users this worker owns, and the local
//! index from each interest to its followers here.
//!
//! A new story reaches its followers by a local lookup, so deliveries never
//! cross threads or processes: only stories (one copy per worker) and
//! interest edges (to the follower's worker) travel. Stories are indexed by
//! each typed id they are about, newest last, so a feed can be rebuilt (or
//! refilled below a bound) by merging the newest stories of the user's
//! interests until the head is full, reading no more than the head needs.
//!
//! It also keeps the blocks of the users it owns (SPEC section 2): a story
//! whose actor or object a user blocks is not in that user's feed, so
//! [`Fanout::in_feed_of`], [`Fanout::merged`] and [`Reach`] leave it out.
//!
//! Everything the fan-out moves per delivery is fixed-size: typed ids are
//! interned to [`Tid`]s and each retained story has a [`Slot`], so a feed
//! entry is an [`Entry`] (its time and slot, 16 bytes, `Copy`) and a
//! delivery allocates nothing and touches no shared reference count.
//!
//! ```
//! use std::sync::Arc;
//! use feedstorm::bolt::fanout::Fanout;
//! use feedstorm::event::{Activity, TypedId};
//! use feedstorm::feed::Story;
//! let id = |s: &str| TypedId::parse(s).unwrap();
//! let story = |n: &str, time, actor: &str| Story(Arc::new(Activity { id: n.into(), time,
//!     actor: id(actor), verb: "post".into(), object: id("thing:t"), target: None, extra: None }));
//! let mut fanout = Fanout::default();
//! let (rob, ann) = (fanout.typed_ids.intern(&id("user:rob")), fanout.typed_ids.intern(&id("user:ann")));
//! fanout.follow(ann, rob);
//! fanout.add_story(&story("a1", 10, "user:rob"));
//! fanout.add_story(&story("a2", 20, "user:rob"));
//! let head: Vec<_> = fanout.merged(ann, None, 5).into_iter()
//!     .map(|entry| fanout.slots.key(entry).id.to_string()).collect();
//! assert_eq!(head, ["a2", "a1"]);
//! ```

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use crate::event::{Millis, TypedId};
use crate::feed::{FeedKey, Story};

/// A typed id interned on this worker.
pub type Tid = u32;

/// A retained story's place in this worker's [`Slots`].
pub type Slot = u32;

/// Hash maps keyed by small integers or interned strings: a fast hash, since
/// keys come from this process, not from an attacker choosing collisions.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// The set kind of [`FastMap`].
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::FixedState>;

/// A feed entry as the fan-out keeps it: the story's time and slot. Entries
/// order as their [`FeedKey`]s do (time, then activity id), which needs the
/// ids: compare them with [`Slots::cmp`].
///
/// Packed to 12 bytes (no padding after the slot): the fan-out's indexes
/// and the heads hold one per story they list, so this is most of their
/// memory. Read its fields by value (`{entry.time}`), never by reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C, packed(4))]
pub struct Entry {
    /// The activity's time.
    pub time: Millis,
    /// Where the story is kept.
    pub slot: Slot,
}

const _: () = assert!(std::mem::size_of::<Entry>() == 12);

/// Typed ids interned to small integers on one worker, so that the indexes
/// below hold and compare integers, not strings.
#[derive(Default)]
pub struct TypedIds {
    ids: FastMap<TypedId, Tid>,
    names: Vec<TypedId>,
    /// The integers of the handles seen last, by address: the stories bolt
    /// shares one handle per typed id, so most lookups hash an integer
    /// instead of the text. Each entry holds its handle, so no address in
    /// here is freed and reused for other text.
    by_address: FastMap<usize, (TypedId, Tid)>,
}

impl TypedIds {
    /// How many typed ids were interned: every [`Tid`] is below this.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The integer of `typed`, assigned on first sight.
    pub fn intern(&mut self, typed: &TypedId) -> Tid {
        let address = typed.address();
        if let Some(&(_, tid)) = self.by_address.get(&address) {
            return tid;
        }
        let tid = match self.ids.get(typed) {
            Some(&tid) => tid,
            None => {
                let tid =
                    Tid::try_from(self.names.len()).expect("fewer than 2^32 typed ids per worker");
                self.ids.insert(typed.clone(), tid);
                self.names.push(typed.clone());
                tid
            }
        };
        // Handles that are not shared (parsed once) would fill it: bounded.
        if self.by_address.len() > 2 * self.names.len() + 1024 {
            self.by_address.clear();
        }
        self.by_address.insert(address, (typed.clone(), tid));
        tid
    }

    /// The integer of `typed`, if it was ever seen here.
    pub fn get(&self, typed: &TypedId) -> Option<Tid> {
        match self.by_address.get(&typed.address()) {
            Some(&(_, tid)) => Some(tid),
            None => self.ids.get(typed).copied(),
        }
    }

    /// The typed id of `tid`.
    pub fn name(&self, tid: Tid) -> &TypedId {
        &self.names[tid as usize]
    }
}

/// A retained story as this worker keeps it: 24 bytes, its id and every
/// other field stay in the shared activity.
struct Kept {
    story: Story,
    /// The typed ids it is about: actor, object and target, each once.
    about: [Tid; 3],
    about_len: u8,
    /// Where the object is in `about`: 0 when it is the actor, else 1.
    object_at: u8,
    /// Removed in this epoch: its slot is freed when the epoch ends.
    removed: bool,
}

impl Kept {
    fn about(&self) -> &[Tid] {
        &self.about[..self.about_len as usize]
    }

    /// Whether its actor or object is in `blocked` (sorted).
    fn names_any(&self, blocked: &[Tid]) -> bool {
        names_any(self.about[0], self.about[self.object_at as usize], blocked)
    }
}

/// Whether `actor` or `object` is in `blocked` (sorted): a block of either
/// hides a story.
fn names_any(actor: Tid, object: Tid, blocked: &[Tid]) -> bool {
    blocked.binary_search(&actor).is_ok() || blocked.binary_search(&object).is_ok()
}

/// The typed ids a story is about, by role: what decides whether it is in
/// a user's feed, kept where a story is listed many times over (a group
/// key's members) so that the test reads no slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parties {
    /// The actor.
    pub actor: Tid,
    /// The object (may equal the actor).
    pub object: Tid,
    /// The target, when it is neither the actor nor the object.
    pub target: Option<Tid>,
}

/// The retained stories of one worker, each in a slot. A removed story's
/// slot is reused only after the epoch ends ([`Slots::end_epoch`]), so
/// entries of it that heads still hold during the epoch keep their id.
#[derive(Default)]
pub struct Slots {
    kept: Vec<Option<Kept>>,
    free: Vec<Slot>,
    freed_this_epoch: Vec<Slot>,
}

impl Slots {
    fn kept(&self, slot: Slot) -> &Kept {
        self.kept[slot as usize]
            .as_ref()
            .expect("an entry names a kept story")
    }

    fn id(&self, slot: Slot) -> &str {
        &self.kept(slot).story.0.id
    }

    /// The feed order of two entries: time, then activity id.
    #[inline]
    pub fn cmp(&self, a: &Entry, b: &Entry) -> Ordering {
        { a.time }.cmp(&{ b.time }).then_with(|| {
            if a.slot == b.slot {
                Ordering::Equal
            } else {
                self.id(a.slot).cmp(self.id(b.slot))
            }
        })
    }

    /// The order of `entry` against a feed key (which need not be retained).
    #[inline]
    pub fn cmp_key(&self, entry: &Entry, key: &FeedKey) -> Ordering {
        { entry.time }
            .cmp(&key.time)
            .then_with(|| self.id(entry.slot).cmp(&key.id))
    }

    /// The story in `entry`.
    pub fn story(&self, entry: Entry) -> &Story {
        &self.kept(entry.slot).story
    }

    /// The feed key of `entry`.
    pub fn key(&self, entry: Entry) -> FeedKey {
        self.kept(entry.slot).story.key()
    }

    /// The typed ids the story in `entry` is about.
    pub fn about(&self, entry: Entry) -> &[Tid] {
        self.kept(entry.slot).about()
    }

    /// The typed ids of the story in `entry`, as a group key lists them.
    pub fn parties(&self, entry: Entry) -> Parties {
        let kept = self.kept(entry.slot);
        let about = kept.about();
        Parties {
            actor: about[0],
            object: about[kept.object_at as usize],
            // Listed after the object, when distinct from both.
            target: about.get(kept.object_at as usize + 1).copied(),
        }
    }

    /// Whether the story in `entry` has `tid` as its actor or object (so
    /// that a block of `tid` hides it).
    pub fn names(&self, entry: Entry, tid: Tid) -> bool {
        self.kept(entry.slot).names_any(&[tid])
    }

    /// Where `story` is, or would go, in `sorted` (oldest first).
    fn find(&self, sorted: &VecDeque<Entry>, story: &Story) -> Result<usize, usize> {
        let (time, id) = (story.0.time, &*story.0.id);
        // Most lookups are of the newest or the oldest: no search for them.
        let probe = |entry: &Entry| {
            { entry.time }
                .cmp(&time)
                .then_with(|| self.id(entry.slot).cmp(id))
        };
        match (sorted.front(), sorted.back()) {
            (_, None) => Err(0),
            (_, Some(newest)) if probe(newest).is_lt() => Err(sorted.len()),
            (Some(oldest), _) if probe(oldest).is_eq() => Ok(0),
            _ => sorted.binary_search_by(probe),
        }
    }

    /// Sorts `entries` in feed order.
    pub fn sort(&self, entries: &mut [(Entry, isize)]) {
        entries.sort_unstable_by(|a, b| self.cmp(&a.0, &b.0));
    }

    /// Where `entry` is, or would go, in `sorted` (oldest first).
    pub fn search(&self, sorted: &VecDeque<Entry>, entry: &Entry) -> Result<usize, usize> {
        sorted.binary_search_by(|probe| self.cmp(probe, entry))
    }

    /// Where `entry` is, or would go, in the sorted slice `sorted`; the
    /// newest place without a search.
    pub fn search_slice(&self, sorted: &[Entry], entry: &Entry) -> Result<usize, usize> {
        match sorted.last() {
            Some(newest) if self.cmp(entry, newest).is_gt() => Err(sorted.len()),
            _ => sorted.binary_search_by(|probe| self.cmp(probe, entry)),
        }
    }

    /// Makes the slots of the stories removed in this epoch reusable.
    pub fn end_epoch(&mut self) {
        self.free.append(&mut self.freed_this_epoch);
    }
}

/// The fan-out state of one worker. See the module docs.
#[derive(Default)]
pub struct Fanout {
    /// Typed ids seen on this worker.
    pub typed_ids: TypedIds,
    /// Every retained story.
    pub slots: Slots,
    /// Retained stories about each typed id, oldest first.
    about: FastMap<Tid, VecDeque<Entry>>,
    /// The interests of each user this worker owns.
    interests: FastMap<Tid, Vec<Tid>>,
    /// The followers on this worker of each interest.
    followers: FastMap<Tid, Vec<Tid>>,
    /// The typed ids each user this worker owns blocks, sorted.
    blocks: FastMap<Tid, Vec<Tid>>,
    /// One user's interests as a bitmap, for [`Fanout::in_feed_of`].
    marked: RefCell<Marked>,
}

/// The interests of the user last asked about, as a bitmap: membership is
/// tested in bursts for one user (a digest group's load tests every story
/// of its key), so a bit test replaces a search of the user's interests.
#[derive(Default)]
struct Marked {
    user: Option<Tid>,
    bits: Vec<u64>,
    set: Vec<Tid>,
}

impl Marked {
    fn mark(&mut self, user: Tid, interests: &[Tid], tids: usize) {
        for tid in self.set.drain(..) {
            self.bits[tid as usize / 64] = 0;
        }
        self.bits.resize(self.bits.len().max(tids.div_ceil(64)), 0);
        for &tid in interests {
            self.bits[tid as usize / 64] |= 1 << (tid % 64);
            self.set.push(tid);
        }
        self.user = Some(user);
    }

    fn has(&self, tid: Tid) -> bool {
        self.bits
            .get(tid as usize / 64)
            .is_some_and(|word| word & (1 << (tid % 64)) != 0)
    }
}

impl Fanout {
    /// Keeps a newly retained story; returns its entry (`None` if a story
    /// with its id is kept already).
    pub fn add_story(&mut self, story: &Story) -> Option<Entry> {
        let activity = &story.0;
        let actor = self.typed_ids.intern(&activity.actor);
        if let Some(sorted) = self.about.get(&actor) {
            if self.slots.find(sorted, story).is_ok() {
                return None;
            }
        }
        let kept = self.kept(story, actor);
        let slot = match self.slots.free.pop() {
            Some(slot) => {
                self.slots.kept[slot as usize] = Some(kept);
                slot
            }
            None => {
                // Grown by an eighth, not doubled (as the indexes below).
                let kept_all = &mut self.slots.kept;
                if kept_all.len() == kept_all.capacity() {
                    kept_all.reserve_exact(kept_all.len() / 8 + 1024);
                }
                kept_all.push(Some(kept));
                Slot::try_from(self.slots.kept.len() - 1)
                    .expect("fewer than 2^32 stories per worker")
            }
        };
        let entry = Entry {
            time: story.0.time,
            slot,
        };
        for &tid in self.slots.about(entry) {
            let sorted = self.about.entry(tid).or_default();
            // Grown by a quarter, not doubled: these hold every story (twice
            // or more), and doubling would leave up to half of them empty.
            if sorted.len() == sorted.capacity() {
                sorted.reserve_exact((sorted.len() / 4).max(4));
            }
            // Most stories are the newest about their ids: no search for them.
            match sorted.back() {
                Some(newest) if self.slots.cmp(newest, &entry).is_ge() => {
                    let at = self.slots.search(sorted, &entry).unwrap_or_else(|at| at);
                    sorted.insert(at, entry);
                }
                _ => sorted.push_back(entry),
            }
        }
        Some(entry)
    }

    /// `story` as a slot keeps it, its actor interned as `actor` already.
    fn kept(&mut self, story: &Story, actor: Tid) -> Kept {
        let activity = &story.0;
        let object = self.typed_ids.intern(&activity.object);
        let target = activity.target.as_ref().map(|t| self.typed_ids.intern(t));
        // As `Activity::story_ids`: actor, object and target, each once.
        let mut about = [actor, 0, 0];
        let mut about_len = 1;
        for tid in std::iter::once(object).chain(target) {
            if !about[..about_len].contains(&tid) {
                about[about_len] = tid;
                about_len += 1;
            }
        }
        Kept {
            story: story.clone(),
            about,
            about_len: about_len as u8,
            object_at: u8::from(object != actor),
            removed: false,
        }
    }

    /// Keeps `stories`, given oldest first, in a fan-out that keeps none
    /// yet (a resume's restored stories); returns the entries of those
    /// kept. As [`Fanout::add_story`] one by one, but nothing is searched:
    /// each story goes to the back of the slots and of its typed ids'
    /// indexes, each grown once to its size. A story not newer than the
    /// one before (never expected) takes [`Fanout::add_story`]'s way, as do
    /// all when stories are kept already.
    pub fn restore<'a>(&mut self, stories: impl ExactSizeIterator<Item = &'a Story>) -> Vec<Entry> {
        if !self.slots.kept.is_empty() {
            return stories.filter_map(|story| self.add_story(story)).collect();
        }
        self.slots.kept.reserve_exact(stories.len());
        let mut entries = Vec::with_capacity(stories.len());
        let mut counts: Vec<u32> = Vec::new();
        let mut newest: Option<&Story> = None;
        let mut out_of_order = Vec::new();
        for story in stories {
            if newest.is_some_and(|newest| newest >= story) {
                out_of_order.push(story);
                continue;
            }
            newest = Some(story);
            let actor = self.typed_ids.intern(&story.0.actor);
            let kept = self.kept(story, actor);
            counts.resize(self.typed_ids.len(), 0);
            for &tid in kept.about() {
                counts[tid as usize] += 1;
            }
            let slot =
                Slot::try_from(self.slots.kept.len()).expect("fewer than 2^32 stories per worker");
            entries.push(Entry {
                time: story.0.time,
                slot,
            });
            self.slots.kept.push(Some(kept));
        }
        for (tid, &count) in counts.iter().enumerate() {
            if count > 0 {
                self.about
                    .insert(tid as Tid, VecDeque::with_capacity(count as usize));
            }
        }
        // In feed order already: every entry is the newest about its ids.
        for (entry, kept) in entries.iter().zip(&self.slots.kept) {
            let kept = kept.as_ref().expect("restored just now");
            for tid in kept.about() {
                let sorted = self.about.get_mut(tid).expect("made room for it");
                sorted.push_back(*entry);
            }
        }
        entries.extend(
            out_of_order
                .into_iter()
                .filter_map(|story| self.add_story(story)),
        );
        entries
    }

    /// Makes room for `stories`, about to be added in one epoch (a big
    /// catch-up epoch, or a resume that routes stories one by one): the slots and each typed id's
    /// index grow once, to their size, instead of by an eighth or a
    /// quarter at a time, each growth a copy onto new pages.
    pub fn reserve_for<'a>(&mut self, stories: impl Iterator<Item = &'a Story>) {
        let mut counts: Vec<u32> = Vec::new();
        let mut added: usize = 0;
        for story in stories {
            added += 1;
            let activity = &story.0;
            let actor = self.typed_ids.intern(&activity.actor);
            let object = self.typed_ids.intern(&activity.object);
            let target = activity.target.as_ref().map(|t| self.typed_ids.intern(t));
            counts.resize(self.typed_ids.len(), 0);
            counts[actor as usize] += 1;
            if object != actor {
                counts[object as usize] += 1;
            }
            if let Some(target) = target.filter(|t| *t != actor && *t != object) {
                counts[target as usize] += 1;
            }
        }
        let kept = &mut self.slots.kept;
        let more = added.saturating_sub(self.slots.free.len());
        if kept.capacity() - kept.len() < more {
            // At least an eighth, as one at a time: epochs of a catch-up
            // would otherwise copy the slots once each.
            kept.reserve_exact(more.max(kept.len() / 8));
        }
        for (tid, &count) in counts.iter().enumerate() {
            if count > 0 {
                let sorted = self.about.entry(tid as Tid).or_default();
                if sorted.capacity() - sorted.len() < count as usize {
                    sorted.reserve_exact((count as usize).max(sorted.len() / 4));
                }
            }
        }
    }

    /// The entry of `story`, if it is kept. Found in the index of the
    /// story's actor, so no map from activity id is needed.
    pub fn entry_of(&self, story: &Story) -> Option<Entry> {
        let sorted = self.about.get(&self.typed_ids.get(&story.0.actor)?)?;
        let at = self.slots.find(sorted, story).ok()?;
        Some(sorted[at])
    }

    /// Forgets `story` (deleted or expired); returns its entry, whose slot
    /// stays readable until [`Fanout::end_epoch`].
    pub fn remove_story(&mut self, story: &Story) -> Option<Entry> {
        let entry = self.entry_of(story)?;
        for &tid in self.slots.about(entry) {
            if let Some(sorted) = self.about.get_mut(&tid) {
                if let Ok(at) = self.slots.find(sorted, story) {
                    sorted.remove(at);
                }
                if sorted.is_empty() {
                    self.about.remove(&tid);
                }
            }
        }
        if let Some(kept) = self.slots.kept[entry.slot as usize].as_mut() {
            kept.removed = true;
        }
        self.slots.freed_this_epoch.push(entry.slot);
        Some(entry)
    }

    /// Ends an epoch: the slots of removed stories are dropped and reusable.
    pub fn end_epoch(&mut self) {
        for &slot in &self.slots.freed_this_epoch {
            self.slots.kept[slot as usize] = None;
        }
        self.slots.end_epoch();
    }

    /// Retained stories about `tid`, newest first.
    pub fn stories_about(&self, tid: Tid) -> impl Iterator<Item = Entry> + '_ {
        self.about
            .get(&tid)
            .into_iter()
            .flat_map(|sorted| sorted.iter().rev().copied())
    }

    /// Retained stories about `tid` at times in `from..to`, oldest first.
    pub fn stories_about_between(
        &self,
        tid: Tid,
        from: Millis,
        to: Millis,
    ) -> impl Iterator<Item = Entry> + '_ {
        self.about.get(&tid).into_iter().flat_map(move |sorted| {
            let start = sorted.partition_point(|e| e.time < from);
            let end = sorted.partition_point(|e| e.time < to);
            sorted.range(start..end.max(start)).copied()
        })
    }

    /// `user` (owned here) now follows `interest`. Edges are a multiset:
    /// a user who follows themselves explicitly, with `follow_self`, holds
    /// the edge twice, so one unfollow leaves it in place. Followers are a
    /// set: each user is listed once per interest, however often it follows.
    pub fn follow(&mut self, user: Tid, interest: Tid) {
        self.forget_marks(user);
        let interests = self.interests.entry(user).or_default();
        let at = interests.partition_point(|i| *i < interest);
        let already = interests.get(at) == Some(&interest);
        interests.insert(at, interest);
        if !already {
            self.followers.entry(interest).or_default().push(user);
        }
    }

    /// `user` follows `interest` once less.
    pub fn unfollow(&mut self, user: Tid, interest: Tid) {
        self.forget_marks(user);
        if let Some(interests) = self.interests.get_mut(&user) {
            if let Ok(at) = interests.binary_search(&interest) {
                interests.remove(at);
            }
            let still = interests.binary_search(&interest).is_ok();
            if interests.is_empty() {
                self.interests.remove(&user);
            }
            if still {
                return;
            }
        }
        if let Some(followers) = self.followers.get_mut(&interest) {
            if let Some(at) = followers.iter().position(|v| *v == user) {
                followers.swap_remove(at);
            }
            if followers.is_empty() {
                self.followers.remove(&interest);
            }
        }
    }

    /// The followers on this worker of `interest`.
    pub fn followers(&self, interest: Tid) -> &[Tid] {
        self.followers.get(&interest).map_or(&[], Vec::as_slice)
    }

    /// The interests of `user`, sorted, each as often as it is followed.
    pub fn interests(&self, user: Tid) -> &[Tid] {
        self.interests.get(&user).map_or(&[], Vec::as_slice)
    }

    /// Through how many of `user`'s interests (counted as often as each
    /// is followed) the retained story in `entry` reaches the user's feed.
    pub fn paths(&self, user: Tid, entry: Entry) -> u32 {
        let interests = self.interests(user);
        let Some(kept) = self.slots.kept[entry.slot as usize].as_ref() else {
            return 0;
        };
        if kept.removed {
            return 0;
        }
        kept.about()
            .iter()
            .map(|t| {
                let start = interests.partition_point(|i| i < t);
                let end = interests.partition_point(|i| i <= t);
                (end - start) as u32
            })
            .sum()
    }

    /// `user` (owned here) now blocks `blocked`: its stories as actor or
    /// object leave the user's feed.
    pub fn block(&mut self, user: Tid, blocked: Tid) {
        let blocks = self.blocks.entry(user).or_default();
        if let Err(at) = blocks.binary_search(&blocked) {
            blocks.insert(at, blocked);
        }
    }

    /// `user` no longer blocks `blocked`.
    pub fn unblock(&mut self, user: Tid, blocked: Tid) {
        if let Some(blocks) = self.blocks.get_mut(&user) {
            if let Ok(at) = blocks.binary_search(&blocked) {
                blocks.remove(at);
            }
            if blocks.is_empty() {
                self.blocks.remove(&user);
            }
        }
    }

    /// Whether `user` blocks the actor or the object of the story in
    /// `entry` (which then never shows in their feed).
    #[inline]
    pub fn hides(&self, user: Tid, entry: Entry) -> bool {
        if self.blocks.is_empty() {
            return false;
        }
        let (Some(blocked), Some(kept)) = (
            self.blocks.get(&user),
            self.slots.kept[entry.slot as usize].as_ref(),
        ) else {
            return false;
        };
        kept.names_any(blocked)
    }

    fn forget_marks(&mut self, user: Tid) {
        let marked = self.marked.get_mut();
        if marked.user == Some(user) {
            marked.user = None;
        }
    }

    /// Whether the retained story in `entry` is about one of `user`'s
    /// interests and not hidden by a block of theirs. Fastest when asked
    /// for one user many times in a row.
    pub fn in_feed_of(&self, user: Tid, entry: Entry) -> bool {
        match self.slots.kept[entry.slot as usize].as_ref() {
            Some(kept) if !kept.removed => self.reaches(user, &self.slots.parties(entry)),
            _ => false,
        }
    }

    /// Whether a kept story (not removed) with these [`Parties`] is in
    /// `user`'s feed: about one of the user's interests and not hidden by
    /// a block of theirs. Reads no slot, for scans over many stories.
    pub fn reaches(&self, user: Tid, parties: &Parties) -> bool {
        self.reaching(user)(parties)
    }

    /// [`Fanout::reaches`] for one `user` and many stories in a row (a
    /// digest group's load tests every story of its key): the user's
    /// blocks are looked up and their interests marked once. Panics if
    /// another test of it is alive (the marks are borrowed).
    pub fn reaching(&self, user: Tid) -> impl Fn(&Parties) -> bool + '_ {
        // As `hides`: most topologies have no blocks, and need no lookup.
        let blocked = if self.blocks.is_empty() {
            &[][..]
        } else {
            self.blocks.get(&user).map_or(&[][..], Vec::as_slice)
        };
        let mut marked = self.marked.borrow_mut();
        if marked.user != Some(user) {
            marked.mark(user, self.interests(user), self.typed_ids.len());
        }
        move |parties: &Parties| {
            (blocked.is_empty() || !names_any(parties.actor, parties.object, blocked))
                && (marked.has(parties.actor)
                    || marked.has(parties.object)
                    || parties.target.is_some_and(|t| marked.has(t)))
        }
    }

    /// The newest `limit` entries of `user`'s feed strictly older than
    /// `below` (`None`: from the top), newest first: a k-way merge of the
    /// newest stories of each interest, stopping once `limit` are found.
    /// Stories the user's blocks hide are passed over.
    pub fn merged(&self, user: Tid, below: Option<&FeedKey>, limit: usize) -> Vec<Entry> {
        let slots = &self.slots;
        let blocked = self.blocks.get(&user).map_or(&[][..], Vec::as_slice);
        let mut sources: Vec<_> = self
            .interests(user)
            .iter()
            .filter_map(|tid| self.about.get(tid))
            .map(|sorted| {
                let end = match (below, sorted.back()) {
                    // All below it (a head filled whole): no search.
                    (Some(below), Some(newest)) if slots.cmp_key(newest, below).is_lt() => {
                        sorted.len()
                    }
                    (Some(below), _) => sorted
                        .binary_search_by(|probe| slots.cmp_key(probe, below))
                        .unwrap_or_else(|at| at),
                    (None, _) => sorted.len(),
                };
                sorted.range(..end).rev().copied()
            })
            .collect();
        let mut heap = BinaryHeap::new();
        for (index, source) in sources.iter_mut().enumerate() {
            if let Some(entry) = source.next() {
                heap.push(Newest {
                    entry,
                    index,
                    slots,
                });
            }
        }
        let mut out: Vec<Entry> = Vec::with_capacity(limit.min(1024));
        while out.len() < limit {
            let Some(Newest { entry, index, .. }) = heap.pop() else {
                break;
            };
            // A story about two of the user's interests comes from both: once.
            if out.last() != Some(&entry)
                && (blocked.is_empty() || !slots.kept(entry.slot).names_any(blocked))
            {
                out.push(entry);
            }
            if let Some(next) = sources[index].next() {
                heap.push(Newest {
                    entry: next,
                    index,
                    slots,
                });
            }
        }
        out
    }
}

/// A merge source's next entry, ordered newest first in a max-heap.
struct Newest<'a> {
    entry: Entry,
    index: usize,
    slots: &'a Slots,
}

impl PartialEq for Newest<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for Newest<'_> {}
impl PartialOrd for Newest<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Newest<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.slots
            .cmp(&self.entry, &other.entry)
            .then_with(|| other.index.cmp(&self.index))
    }
}

/// Lists the users a story reaches, each once however many of the typed
/// ids it is about they follow: a mark per typed id (the story it was last
/// reached by), so a story costs one pass over its followers and no lookup
/// in their interests.
#[derive(Default)]
pub struct Reach {
    marks: Vec<u32>,
    story: u32,
}

impl Reach {
    /// Calls `f` once for each user the retained story in `entry` reaches
    /// (a follower whose blocks hide it is not reached).
    pub fn each(&mut self, fanout: &Fanout, entry: Entry, mut f: impl FnMut(Tid)) {
        if !fanout.blocks.is_empty() {
            let mut f = |u| {
                if !fanout.hides(u, entry) {
                    f(u)
                }
            };
            return self.each_follower(fanout, entry, &mut f);
        }
        self.each_follower(fanout, entry, &mut f)
    }

    fn each_follower(&mut self, fanout: &Fanout, entry: Entry, f: &mut impl FnMut(Tid)) {
        let about = fanout.slots.about(entry);
        if let [only] = about {
            fanout.followers(*only).iter().for_each(|u| f(*u));
            return;
        }
        self.story = self.story.wrapping_add(1);
        if self.story == 0 {
            self.marks.fill(0);
            self.story = 1;
        }
        if self.marks.len() < fanout.typed_ids.len() {
            self.marks.resize(fanout.typed_ids.len(), 0);
        }
        for tid in about {
            for &u in fanout.followers(*tid) {
                let mark = &mut self.marks[u as usize];
                if *mark != self.story {
                    *mark = self.story;
                    f(u);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Activity;
    use rand::{Rng, SeedableRng};
    use std::sync::Arc;

    fn typed(n: u32) -> TypedId {
        TypedId::parse(&format!("user:u{n}")).unwrap()
    }

    /// `n` stories with random times below `times`, about typed ids below
    /// `ids`, their activity ids `a{i % distinct}`.
    fn random_stories(seed: u64, n: usize, distinct: usize, times: i64, ids: u32) -> Vec<Story> {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        (0..n)
            .map(|i| {
                Story(Arc::new(Activity {
                    id: format!("a{}", i % distinct).into(),
                    time: rng.gen_range(0..times),
                    actor: typed(rng.gen_range(0..ids)),
                    verb: "post".into(),
                    object: typed(rng.gen_range(0..ids)),
                    target: rng.gen_bool(0.3).then(|| typed(rng.gen_range(0..ids))),
                    extra: None,
                }))
            })
            .collect()
    }

    /// A restore ([`Fanout::restore`]) lists what adding the same stories
    /// one by one lists, stories out of order and repeated included.
    #[test]
    fn a_restore_lists_what_adding_one_by_one_lists() {
        let mut stories = random_stories(11, 3_000, 2_900, 500, 30);
        stories.sort();
        // A few out of place, as a corrupt part could send them.
        stories.swap(10, 2_000);
        stories.swap(500, 501);
        let (mut restored, mut added) = (Fanout::default(), Fanout::default());
        let entries = restored.restore(stories.iter());
        let one_by_one: Vec<Entry> = stories.iter().filter_map(|s| added.add_story(s)).collect();
        let keys = |fanout: &Fanout, entries: &[Entry]| {
            let mut keys: Vec<_> = entries.iter().map(|e| fanout.slots.key(*e)).collect();
            keys.sort();
            keys
        };
        assert_eq!(keys(&restored, &entries), keys(&added, &one_by_one));
        for n in 0..30 {
            let tid = |fanout: &Fanout| fanout.typed_ids.get(&typed(n));
            let listed = |fanout: &Fanout| {
                let stories = tid(fanout)
                    .into_iter()
                    .flat_map(|t| fanout.stories_about(t));
                stories.map(|e| fanout.slots.key(e)).collect::<Vec<_>>()
            };
            assert_eq!(listed(&restored), listed(&added), "typed id {n}");
        }
        // Restoring into a fan-out that keeps stories adds one by one.
        assert!(restored.restore(stories[..100].iter()).is_empty());
    }

    /// Room made ahead ([`Fanout::reserve_for`]) changes no index: the
    /// same stories, with and without it, list the same entries.
    #[test]
    fn reserving_ahead_changes_no_index() {
        let stories = random_stories(7, 5_000, 5_000, 2_000, 40);
        let (mut reserved, mut plain) = (Fanout::default(), Fanout::default());
        reserved.reserve_for(stories[..4_000].iter());
        for story in &stories {
            assert_eq!(reserved.add_story(story), plain.add_story(story));
        }
        reserved.reserve_for(stories[4_000..].iter()); // all present: no change
        for n in 0..40 {
            let tid = plain.typed_ids.get(&typed(n)).expect("interned");
            assert_eq!(reserved.typed_ids.get(&typed(n)), Some(tid));
            let listed = |fanout: &Fanout| fanout.stories_about(tid).collect::<Vec<_>>();
            assert_eq!(listed(&reserved), listed(&plain), "typed id {n}");
        }
    }
}
