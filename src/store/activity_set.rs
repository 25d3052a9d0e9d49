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

/// Puts from which [`ActivitySet::put_all`] goes shard by shard.
const BULK: usize = 4096;

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
        &self.shards[Self::shard_of(hash)]
    }

    fn shard_of(hash: u64) -> usize {
        // The table uses the low bits and the top seven: shard by others.
        (hash >> 32) as usize % SHARDS
    }

    /// The activity with `id`.
    pub fn get(&self, id: &str) -> Option<Arc<Activity>> {
        let hash = self.hash(id);
        let shard = self.shard(hash).read().expect("activity shard");
        shard
            .find(hash, |kept| kept.hash == hash && *kept.activity.id == *id)
            .map(|kept| kept.activity.clone())
    }

    /// Puts `activities`, each replacing the one with its id, if any.
    pub fn put_all(&self, activities: &[Arc<Activity>]) {
        if activities.len() < BULK {
            for activity in activities {
                let hash = self.hash(&activity.id);
                let mut shard = self.shard(hash).write().expect("activity shard");
                Self::put(&mut shard, hash, activity);
            }
            return;
        }
        // Many at once (a resume puts every retained activity): sorted by
        // shard, so each shard is locked once and grows once.
        let mut hashed: Vec<(u64, &Arc<Activity>)> = activities
            .iter()
            .map(|activity| (self.hash(&activity.id), activity))
            .collect();
        hashed.sort_unstable_by_key(|(hash, _)| Self::shard_of(*hash));
        for run in hashed.chunk_by(|a, b| Self::shard_of(a.0) == Self::shard_of(b.0)) {
            let mut shard = self.shards[Self::shard_of(run[0].0)]
                .write()
                .expect("activity shard");
            shard.reserve(run.len(), |kept| kept.hash);
            for (hash, activity) in run {
                Self::put(&mut shard, *hash, activity);
            }
        }
    }

    fn put(shard: &mut HashTable<Kept>, hash: u64, activity: &Arc<Activity>) {
        // The hash first: most candidates differ there, and reading an
        // id is a trip to memory.
        let same_id = |kept: &Kept| kept.hash == hash && kept.activity.id == activity.id;
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

    /// Removes the activity with `id`, if any.
    pub fn remove(&self, id: &str) {
        let hash = self.hash(id);
        let mut shard = self.shard(hash).write().expect("activity shard");
        if let Ok(kept) =
            shard.find_entry(hash, |kept| kept.hash == hash && *kept.activity.id == *id)
        {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::TypedId;

    fn activity(n: usize, time: i64) -> Arc<Activity> {
        Arc::new(Activity {
            id: format!("a{n}").into(),
            time,
            actor: TypedId::parse("user:rob").unwrap(),
            verb: "post".into(),
            object: TypedId::parse("thing:t").unwrap(),
            target: None,
            extra: None,
        })
    }

    /// A put of many goes shard by shard: it must hold what one at a time holds.
    #[test]
    fn a_bulk_put_holds_what_single_puts_hold() {
        let many: Vec<_> = (0..3 * BULK).map(|n| activity(n, 1)).collect();
        let (bulk, single) = (ActivitySet::default(), ActivitySet::default());
        bulk.put_all(&many);
        for a in &many {
            single.put_all(std::slice::from_ref(a));
        }
        // A second bulk put replaces every other one, with a few new ids.
        let again: Vec<_> = (BULK..3 * BULK + 10)
            .step_by(2)
            .map(|n| activity(n, 2))
            .collect();
        bulk.put_all(&again);
        for a in &again {
            single.put_all(std::slice::from_ref(a));
        }
        assert_eq!(bulk.len(), 3 * BULK + 5);
        assert_eq!(bulk.len(), single.len());
        for n in 0..3 * BULK + 10 {
            let id = format!("a{n}");
            let time = |set: &ActivitySet| set.get(&id).map(|a| a.time);
            assert_eq!(time(&bulk), time(&single), "{id}");
        }
    }
}
