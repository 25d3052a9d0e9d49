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
//! let head: Vec<_> = fanout.merged(ann, None, 5).into_iter().map(|k| k.id.to_string()).collect();
//! assert_eq!(head, ["a2", "a1"]);
//! ```

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::ops::Bound;

use crate::event::TypedId;
use crate::feed::{FeedKey, Story};

/// A typed id interned on this worker.
pub type Tid = u32;

/// Typed ids interned to small integers on one worker, so that the indexes
/// below hold and compare integers, not strings.
#[derive(Default)]
pub struct TypedIds {
    ids: HashMap<TypedId, Tid>,
    names: Vec<TypedId>,
}

impl TypedIds {
    /// The integer of `typed`, assigned on first sight.
    pub fn intern(&mut self, typed: &TypedId) -> Tid {
        if let Some(&tid) = self.ids.get(typed) {
            return tid;
        }
        let tid = Tid::try_from(self.names.len()).expect("fewer than 2^32 typed ids per worker");
        self.ids.insert(typed.clone(), tid);
        self.names.push(typed.clone());
        tid
    }

    /// The integer of `typed`, if it was ever seen here.
    pub fn get(&self, typed: &TypedId) -> Option<Tid> {
        self.ids.get(typed).copied()
    }

    /// The typed id of `tid`.
    pub fn name(&self, tid: Tid) -> &TypedId {
        &self.names[tid as usize]
    }
}

/// A retained story as this worker keeps it.
struct Kept {
    story: Story,
    about: Vec<Tid>,
}

/// The fan-out state of one worker. See the module docs.
#[derive(Default)]
pub struct Fanout {
    /// Typed ids seen on this worker.
    pub typed_ids: TypedIds,
    /// Every retained story, by activity id.
    stories: HashMap<std::sync::Arc<str>, Kept>,
    /// Retained stories about each typed id, oldest first.
    about: HashMap<Tid, BTreeSet<FeedKey>>,
    /// The interests of each user this worker owns.
    interests: HashMap<Tid, Vec<Tid>>,
    /// The followers on this worker of each interest.
    followers: HashMap<Tid, Vec<Tid>>,
}

impl Fanout {
    /// Keeps a newly retained story; returns the typed ids it is about.
    pub fn add_story(&mut self, story: &Story) -> Vec<Tid> {
        let about: Vec<Tid> = story
            .0
            .story_ids()
            .map(|t| self.typed_ids.intern(t))
            .collect();
        let key = story.key();
        for tid in &about {
            self.about.entry(*tid).or_default().insert(key.clone());
        }
        self.stories.insert(
            key.id.clone(),
            Kept {
                story: story.clone(),
                about: about.clone(),
            },
        );
        about
    }

    /// Forgets a story (deleted or expired); returns the typed ids it was about.
    pub fn remove_story(&mut self, story: &Story) -> Vec<Tid> {
        let Some(kept) = self.stories.remove(story.0.id.as_str()) else {
            return Vec::new();
        };
        let key = story.key();
        for tid in &kept.about {
            if let Some(set) = self.about.get_mut(tid) {
                set.remove(&key);
                if set.is_empty() {
                    self.about.remove(tid);
                }
            }
        }
        kept.about
    }

    /// The story with this key, if retained.
    pub fn story(&self, key: &FeedKey) -> Option<&Story> {
        self.stories.get(&key.id).map(|kept| &kept.story)
    }

    /// The typed ids the retained story with this key is about.
    pub fn about(&self, key: &FeedKey) -> &[Tid] {
        self.stories.get(&key.id).map_or(&[], |kept| &kept.about)
    }

    /// Retained stories about `tid`, newest first.
    pub fn stories_about(&self, tid: Tid) -> impl Iterator<Item = &FeedKey> {
        self.about
            .get(&tid)
            .into_iter()
            .flat_map(|set| set.iter().rev())
    }

    /// `user` (owned here) now follows `interest`. Edges are a multiset:
    /// a user who follows themselves explicitly, with `follow_self`, holds
    /// the edge twice, so one unfollow leaves it in place.
    pub fn follow(&mut self, user: Tid, interest: Tid) {
        self.interests.entry(user).or_default().push(interest);
        self.followers.entry(interest).or_default().push(user);
    }

    /// `user` follows `interest` once less.
    pub fn unfollow(&mut self, user: Tid, interest: Tid) {
        fn remove_one(map: &mut HashMap<Tid, Vec<Tid>>, key: Tid, value: Tid) {
            if let Some(values) = map.get_mut(&key) {
                if let Some(at) = values.iter().position(|v| *v == value) {
                    values.swap_remove(at);
                }
                if values.is_empty() {
                    map.remove(&key);
                }
            }
        }
        remove_one(&mut self.interests, user, interest);
        remove_one(&mut self.followers, interest, user);
    }

    /// The followers on this worker of `interest`.
    pub fn followers(&self, interest: Tid) -> &[Tid] {
        self.followers.get(&interest).map_or(&[], Vec::as_slice)
    }

    /// The interests of `user`.
    pub fn interests(&self, user: Tid) -> &[Tid] {
        self.interests.get(&user).map_or(&[], Vec::as_slice)
    }

    /// Whether the story with this key is about one of `user`'s interests.
    pub fn in_feed_of(&self, user: Tid, key: &FeedKey) -> bool {
        let interests = self.interests(user);
        self.about(key).iter().any(|t| interests.contains(t))
    }

    /// The newest `limit` entries of `user`'s feed strictly older than
    /// `below` (`None`: from the top), newest first: a k-way merge of the
    /// newest stories of each interest, stopping once `limit` are found.
    pub fn merged(&self, user: Tid, below: Option<&FeedKey>, limit: usize) -> Vec<FeedKey> {
        let upper = below.map_or(Bound::Unbounded, Bound::Excluded);
        let mut sources: Vec<_> = self
            .interests(user)
            .iter()
            .filter_map(|tid| self.about.get(tid))
            .map(|set| set.range((Bound::Unbounded, upper)).rev())
            .collect();
        let mut heap: BinaryHeap<(&FeedKey, Reverse<usize>)> = BinaryHeap::new();
        for (index, source) in sources.iter_mut().enumerate() {
            if let Some(key) = source.next() {
                heap.push((key, Reverse(index)));
            }
        }
        let mut out: Vec<FeedKey> = Vec::with_capacity(limit.min(1024));
        while out.len() < limit {
            let Some((key, Reverse(index))) = heap.pop() else {
                break;
            };
            // A story about two of the user's interests comes from both: once.
            if out.last() != Some(key) {
                out.push(key.clone());
            }
            if let Some(next) = sources[index].next() {
                heap.push((next, Reverse(index)));
            }
        }
        out
    }
}
