//! The embedded store's activities by id: a set in shards, each entry with
//! its id's hash beside it.
//!
//! A set of `Arc<Activity>` keyed through the activity has to hash every
//! id again whenever a shard grows, and reaching an id there means two
//! pointers to memory no longer in cache: on a resume, which puts every
//! retained activity at once, that rehashing was a twentieth of the work.
//! Kept hashes make growing a shard a pass over the shard alone.
//!
//! ```
//! use std::sync::Arc;
//! use feedstorm::event::{Activity, TypedId};
//! use feedstorm::store::activity_set::ActivitySet;
//! let activity = |id: &str, time| Arc::new(Activity { id: id.into(), time,
//!     actor: TypedId::parse("user:rob").unwrap(), verb: "love".into(),
//!     object: TypedId::parse("listing:bear").unwrap(), target: None, extra: None });
//! let set = ActivitySet::default();
//! set.put_all(&[activity("a1", 1), activity("a2", 2)]);
//! set.put_all(&[activity("a1", 3)]); // a put replaces
//! assert_eq!(set.get("a1").map(|a| a.time), Some(3));
//! set.remove("a2");
//! assert!(set.get("a2").is_none());
//! assert_eq!(set.len(), 1);
//! ```

use std::hash::BuildHasher;
use std::sync::{Arc, RwLock};

use hashbrown::hash_table::{Entry, HashTable};

use crate::event::Activity;

/// Shards: enough that the sink's writers and the API's readers seldom
/// meet on one lock.
const SHARDS: usize = 64;

/// Activities by id, sharded; see the module docs.
pub struct ActivitySet {
    shards: Box<[RwLock<HashTable<Kept>>]>,
    /// Seeded per set: no producer can choose ids that collide.
    hasher: foldhash::fast::RandomState,
}

/// An activity and the hash of its id.
struct Kept {
    hash: u64,
    activity: Arc<Activity>,
}

impl Default for ActivitySet {
    fn default() -> Self {
        ActivitySet {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }
}

impl ActivitySet {
    fn hash(&self, id: &str) -> u64 {
        self.hasher.hash_one(id)
    }

    fn shard(&self, hash: u64) -> &RwLock<HashTable<Kept>> {
        // The table uses the low bits and the top seven: shard by others.
        &self.shards[(hash >> 32) as usize % SHARDS]
    }

    /// The activity with `id`.
    pub fn get(&self, id: &str) -> Option<Arc<Activity>> {
        let hash = self.hash(id);
        let shard = self.shard(hash).read().expect("activity shard");
        shard
            .find(hash, |kept| *kept.activity.id == *id)
            .map(|kept| kept.activity.clone())
    }

    /// Puts `activities`, each replacing the one with its id, if any.
    pub fn put_all(&self, activities: &[Arc<Activity>]) {
        for activity in activities {
            let hash = self.hash(&activity.id);
            let mut shard = self.shard(hash).write().expect("activity shard");
            let same_id = |kept: &Kept| kept.activity.id == activity.id;
            match shard.entry(hash, same_id, |kept| kept.hash) {
                Entry::Occupied(mut kept) => kept.get_mut().activity = activity.clone(),
                Entry::Vacant(place) => {
                    place.insert(Kept {
                        hash,
                        activity: activity.clone(),
                    });
                }
            }
        }
    }

    /// Removes the activity with `id`, if any.
    pub fn remove(&self, id: &str) {
        let hash = self.hash(id);
        let mut shard = self.shard(hash).write().expect("activity shard");
        if let Ok(kept) = shard.find_entry(hash, |kept| *kept.activity.id == *id) {
            kept.remove();
        }
    }

    /// How many activities are in the set.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.read().expect("activity shard").len())
            .sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
