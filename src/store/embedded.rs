//! The embedded store: in-process maps, sharded to keep the sink's writers
//! and the API's readers off each other's locks.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::sync::{Arc, RwLock};

use crate::error::Result;
use crate::event::{Activity, TypedId};
use crate::feed::FeedKey;
use crate::grouping::route;
use crate::store::{FeedPage, PageStart, Store, StoreStats, WriteBatch};

const SHARDS: usize = 64;

struct Sharded<K, V>(Vec<RwLock<HashMap<K, V>>>);

impl<K: Hash + Eq, V> Sharded<K, V> {
    fn new() -> Self {
        Sharded((0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect())
    }

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> &RwLock<HashMap<K, V>> {
        &self.0[(route(key) % SHARDS as u64) as usize]
    }
}

/// Feed heads and activities in memory.
///
/// ```
/// use std::sync::Arc;
/// use feedstorm::event::{Activity, TypedId};
/// use feedstorm::feed::FeedKey;
/// use feedstorm::store::{EmbeddedStore, PageStart, Store, WriteBatch};
///
/// let store = EmbeddedStore::new();
/// let rob = TypedId::parse("user:rob").unwrap();
/// let activity = Activity { id: "a1".into(), time: 5, actor: rob.clone(), verb: "love".into(),
///     object: TypedId::parse("listing:bear").unwrap(), target: None, extra: None };
/// store.apply(&WriteBatch {
///     puts: vec![Arc::new(activity)],
///     feed: vec![(rob.clone(), FeedKey::new(5, "a1"), 1)],
///     removes: vec![],
/// }).unwrap();
/// let page = store.feed_page(&rob, &PageStart::Offset(0), 20).unwrap();
/// assert_eq!(page.entries[0].id, "a1");
/// ```
pub struct EmbeddedStore {
    feeds: Sharded<TypedId, BTreeSet<FeedKey>>,
    activities: Sharded<String, Arc<Activity>>,
}

impl Default for EmbeddedStore {
    fn default() -> Self {
        EmbeddedStore::new()
    }
}

impl EmbeddedStore {
    /// An empty store.
    pub fn new() -> EmbeddedStore {
        EmbeddedStore {
            feeds: Sharded::new(),
            activities: Sharded::new(),
        }
    }

    fn get_activity(&self, id: &str) -> Option<Arc<Activity>> {
        self.activities
            .shard(id)
            .read()
            .expect("lock")
            .get(id)
            .cloned()
    }
}

impl Store for EmbeddedStore {
    fn apply(&self, batch: &WriteBatch) -> Result<()> {
        for activity in &batch.puts {
            let mut shard = self
                .activities
                .shard(activity.id.as_str())
                .write()
                .expect("lock");
            shard.insert(activity.id.clone(), activity.clone());
        }
        for (user, key, diff) in &batch.feed {
            let mut shard = self.feeds.shard(user).write().expect("lock");
            if *diff == 0 {
                shard.remove(user);
            } else if *diff > 0 {
                shard.entry(user.clone()).or_default().insert(key.clone());
            } else if let Some(head) = shard.get_mut(user) {
                head.remove(key);
                if head.is_empty() {
                    shard.remove(user);
                }
            }
        }
        for id in &batch.removes {
            self.activities
                .shard(id.as_str())
                .write()
                .expect("lock")
                .remove(id);
        }
        Ok(())
    }

    fn feed_page(&self, user: &TypedId, start: &PageStart, limit: usize) -> Result<FeedPage> {
        let keys: Vec<FeedKey> = {
            let shard = self.feeds.shard(user).read().expect("lock");
            let Some(head) = shard.get(user) else {
                return Ok(FeedPage::default());
            };
            // One more than asked, to know whether a next page exists.
            match start {
                PageStart::Offset(skip) => head
                    .iter()
                    .rev()
                    .skip(*skip)
                    .take(limit + 1)
                    .cloned()
                    .collect(),
                PageStart::After(after) => {
                    head.range(..after).rev().take(limit + 1).cloned().collect()
                }
            }
        };
        let more = keys.len() > limit;
        let keys = &keys[..keys.len().min(limit)];
        Ok(FeedPage {
            // An entry whose activity is being removed in the same epoch is skipped.
            entries: keys
                .iter()
                .filter_map(|k| self.get_activity(&k.id))
                .collect(),
            next_cursor: if more {
                keys.last().map(FeedKey::cursor)
            } else {
                None
            },
        })
    }

    fn activity(&self, id: &str) -> Result<Option<Arc<Activity>>> {
        Ok(self.get_activity(id))
    }

    fn feed_keys(&self, user: &TypedId) -> Result<Vec<FeedKey>> {
        let shard = self.feeds.shard(user).read().expect("lock");
        Ok(shard
            .get(user)
            .map(|h| h.iter().rev().cloned().collect())
            .unwrap_or_default())
    }

    fn users(&self) -> Result<Vec<TypedId>> {
        Ok(self
            .feeds
            .0
            .iter()
            .flat_map(|s| s.read().expect("lock").keys().cloned().collect::<Vec<_>>())
            .collect())
    }

    fn stats(&self) -> StoreStats {
        let mut stats = StoreStats::default();
        for shard in &self.feeds.0 {
            let shard = shard.read().expect("lock");
            stats.feeds += shard.len() as u64;
            stats.entries += shard.values().map(|h| h.len() as u64).sum::<u64>();
        }
        for shard in &self.activities.0 {
            stats.activities += shard.read().expect("lock").len() as u64;
        }
        stats
    }
}
