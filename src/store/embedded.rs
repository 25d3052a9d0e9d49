//! The embedded store: in-process maps, sharded ([`DashMap`]) to keep the
//! sink's writers and the API's readers off each other's locks.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use crate::digest::GroupChange;
use crate::digest::{Group, GroupOrder, Marks};
use crate::error::{Error, Result};
use crate::event::{Activity, TypedId};
use crate::feed::FeedKey;
use crate::store::activity_set::ActivitySet;
use crate::store::{DigestPage, FeedPage, PageStart, Store, StoreStats, WriteBatch};

/// A sharded map with foldhash, seeded per map: fast on ids and typed
/// ids, and no producer can choose ids that collide.
type Map<K, V> = DashMap<K, V, foldhash::fast::RandomState>;

/// An unsharded map with the same hash: each is behind one of [`Map`]'s locks.
type Inner<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

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
///     ..WriteBatch::default()
/// }).unwrap();
/// let page = store.feed_page(&rob, &PageStart::Offset(0), 20).unwrap();
/// assert_eq!(&*page.entries[0].id, "a1");
/// ```
pub struct EmbeddedStore {
    feeds: Map<TypedId, BTreeSet<FeedKey>>,
    activities: ActivitySet,
    /// Per user, each digest's head by name.
    digests: Map<TypedId, Inner<Arc<str>, Digest>>,
    marks: Map<TypedId, BTreeMap<String, Marks>>,
    /// Where marks are appended, to survive restarts.
    marks_file: Option<(PathBuf, Mutex<File>)>,
}

/// One user's digest head: groups by key and in digest order.
#[derive(Default)]
struct Digest {
    by_key: Inner<Arc<str>, GroupOrder>,
    ordered: BTreeMap<GroupOrder, Arc<Group>>,
}

/// One line of the marks file.
#[derive(Serialize, Deserialize)]
struct MarksLine {
    user: TypedId,
    key: String,
    #[serde(flatten)]
    marks: Marks,
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
            feeds: Map::default(),
            activities: ActivitySet::default(),
            digests: Map::default(),
            marks: Map::default(),
            marks_file: None,
        }
    }

    /// An empty store whose notification marks are kept in `path` (a JSONL
    /// file, created if missing, read back here and appended to on marking).
    pub fn with_marks_file(path: &Path) -> Result<EmbeddedStore> {
        let io = |source| Error::ReadFile {
            path: path.to_owned(),
            source,
        };
        let mut store = EmbeddedStore::new();
        if path.exists() {
            let reader = BufReader::new(File::open(path).map_err(io)?);
            for (number, line) in reader.lines().enumerate() {
                let line = line.map_err(io)?;
                if line.trim().is_empty() {
                    continue;
                }
                // A torn last line (a crash mid-write) loses only that mark.
                match serde_json::from_str::<MarksLine>(&line) {
                    Ok(m) => {
                        store
                            .marks
                            .entry(m.user)
                            .or_default()
                            .insert(m.key, m.marks);
                    }
                    Err(error) => {
                        tracing::warn!(%error, line = number + 1, path = %path.display(), "skipping a bad marks line")
                    }
                }
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        store.marks_file = Some((path.to_owned(), Mutex::new(file)));
        Ok(store)
    }

    /// Applies one user's run of digest changes under one lock.
    fn apply_digests(&self, user: &TypedId, run: &[crate::digest::DigestChange]) {
        let mut digests = self.digests.entry(user.clone()).or_default();
        for same in run.chunk_by(|a, b| a.digest == b.digest) {
            let name = &same[0].digest;
            let digest = digests.entry(name.clone()).or_default();
            for change in same {
                apply_group_change(digest, &change.change);
            }
            if digest.ordered.is_empty() {
                digests.remove(name);
            }
        }
        drop(digests);
        self.digests.remove_if(user, |_, d| d.is_empty());
    }
}

fn apply_group_change(digest: &mut Digest, change: &GroupChange) {
    match change {
        GroupChange::Reset => *digest = Digest::default(),
        GroupChange::Put(group) => {
            let order = group.order();
            if let Some(old) = digest.by_key.insert(group.key.clone(), order.clone()) {
                digest.ordered.remove(&old);
            }
            digest.ordered.insert(order, group.clone());
        }
        GroupChange::Remove(key) => {
            if let Some(old) = digest.by_key.remove(key.as_str()) {
                digest.ordered.remove(&old);
            }
        }
    }
}

/// Changes in one run from which a head is merged with them in one pass
/// instead of key by key (when they are a quarter of it or more): a
/// catch-up's or a resume's epoch replaces whole heads.
const MERGE_RUN: usize = 32;

/// Applies `run` to `head` in one pass over both, when the run is in feed
/// order with each key once and holds no reset (the heads bolt's runs);
/// otherwise leaves `head` untouched and returns false.
fn merge_into(head: &mut BTreeSet<FeedKey>, run: &[(TypedId, FeedKey, isize)]) -> bool {
    let in_order = run.windows(2).all(|pair| pair[0].1 < pair[1].1);
    if !in_order || run.iter().any(|(_, _, diff)| *diff == 0) {
        return false;
    }
    let mut changes = run.iter().peekable();
    let mut kept = Vec::with_capacity(head.len() + run.len());
    for key in std::mem::take(head) {
        while let Some((_, change, diff)) = changes.next_if(|(_, change, _)| *change < key) {
            if *diff > 0 {
                kept.push(change.clone());
            }
        }
        match changes.next_if(|(_, change, _)| *change == key) {
            Some((_, _, diff)) if *diff < 0 => {}
            _ => kept.push(key),
        }
    }
    kept.extend(
        changes
            .filter(|(_, _, diff)| *diff > 0)
            .map(|(_, key, _)| key.clone()),
    );
    // Sorted and distinct already: the set is built in one pass.
    *head = kept.into_iter().collect();
    true
}

impl Store for EmbeddedStore {
    fn apply(&self, batch: &WriteBatch) -> Result<()> {
        self.activities.put_all(&batch.puts);
        // A user's changes come in a run: one lock per run.
        for run in batch.feed.chunk_by(|(a, _, _), (b, _, _)| a == b) {
            let user = &run[0].0;
            let mut head = self.feeds.entry(user.clone()).or_default();
            if head.is_empty() && run.iter().all(|(_, _, diff)| *diff > 0) {
                // A head written whole (a start, a resume): built in one
                // pass from its sorted keys, not key by key.
                *head = run.iter().map(|(_, key, _)| key.clone()).collect();
                continue;
            }
            let long = run.len() >= MERGE_RUN && run.len() * 4 >= head.len();
            if !(long && merge_into(&mut head, run)) {
                for (_, key, diff) in run {
                    if *diff == 0 {
                        head.clear();
                    } else if *diff > 0 {
                        head.insert(key.clone());
                    } else {
                        head.remove(key);
                    }
                }
            }
            drop(head);
            self.feeds.remove_if(user, |_, head| head.is_empty());
        }
        // A user's changes come in a run too.
        for run in batch.digests.chunk_by(|a, b| a.user == b.user) {
            self.apply_digests(&run[0].user, run);
        }
        for id in &batch.removes {
            self.activities.remove(id);
        }
        Ok(())
    }

    fn feed_page(&self, user: &TypedId, start: &PageStart, limit: usize) -> Result<FeedPage> {
        let (keys, more) = start.page(limit, |after, skip, count| {
            let Some(head) = self.feeds.get(user) else {
                return Ok(Vec::new());
            };
            let newest_first: Box<dyn Iterator<Item = &FeedKey>> = match after {
                None => Box::new(head.iter().rev()),
                Some(after) => Box::new(head.range(..after).rev()),
            };
            Ok(newest_first.skip(skip).take(count).cloned().collect())
        })?;
        Ok(FeedPage {
            // An entry whose activity is being removed in the same epoch is skipped.
            entries: keys
                .iter()
                .filter_map(|k| self.activities.get(&k.id))
                .collect(),
            next_cursor: if more {
                keys.last().map(FeedKey::cursor)
            } else {
                None
            },
        })
    }

    fn activity(&self, id: &str) -> Result<Option<Arc<Activity>>> {
        Ok(self.activities.get(id))
    }

    fn feed_keys(&self, user: &TypedId) -> Result<Vec<FeedKey>> {
        Ok(self
            .feeds
            .get(user)
            .map(|h| h.iter().rev().cloned().collect())
            .unwrap_or_default())
    }

    fn users(&self) -> Result<Vec<TypedId>> {
        Ok(self.feeds.iter().map(|e| e.key().clone()).collect())
    }

    fn digest_page(
        &self,
        user: &TypedId,
        digest: &str,
        start: &PageStart,
        limit: usize,
    ) -> Result<DigestPage> {
        let Some(digests) = self.digests.get(user) else {
            return Ok(DigestPage::default());
        };
        let Some(digest) = digests.get(digest) else {
            return Ok(DigestPage::default());
        };
        let (groups, more) = start.page(limit, |after, skip, count| {
            let newest_first: Box<dyn Iterator<Item = &Arc<Group>>> = match after {
                None => Box::new(digest.ordered.values().rev()),
                Some(after) => Box::new(
                    digest
                        .ordered
                        .range(..GroupOrder::from_key(after))
                        .rev()
                        .map(|(_, g)| g),
                ),
            };
            Ok(newest_first.skip(skip).take(count).cloned().collect())
        })?;
        Ok(DigestPage::new(groups, more))
    }

    fn digest_users(&self, digest: &str) -> Result<Vec<TypedId>> {
        Ok(self
            .digests
            .iter()
            .filter(|e| e.value().contains_key(digest))
            .map(|e| e.key().clone())
            .collect())
    }

    fn marks(&self, user: &TypedId) -> Result<BTreeMap<String, Marks>> {
        Ok(self
            .marks
            .get(user)
            .map(|m| m.value().clone())
            .unwrap_or_default())
    }

    fn put_marks(&self, user: &TypedId, marks: &[(String, Marks)]) -> Result<()> {
        if let Some((path, file)) = &self.marks_file {
            let mut text = String::new();
            for (key, m) in marks {
                let line = MarksLine {
                    user: user.clone(),
                    key: key.clone(),
                    marks: m.clone(),
                };
                text.push_str(&serde_json::to_string(&line).expect("marks serialize"));
                text.push('\n');
            }
            let mut file = file.lock().expect("lock");
            file.write_all(text.as_bytes())
                .and_then(|()| file.sync_data())
                .map_err(|e| Error::Sink(format!("marks file {}: {e}", path.display())))?;
        }
        let mut stored = self.marks.entry(user.clone()).or_default();
        for (key, m) in marks {
            stored.insert(key.clone(), m.clone());
        }
        Ok(())
    }

    fn stats(&self) -> StoreStats {
        let mut stats = StoreStats::default();
        for head in self.feeds.iter() {
            stats.feeds += 1;
            stats.entries += head.len() as u64;
        }
        stats.activities = self.activities.len() as u64;
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// A head merged with a run holds what applying the run key by key
    /// gives; a run out of order or with a reset is left to that path.
    #[test]
    fn a_merged_head_equals_one_changed_key_by_key() {
        let user = TypedId::parse("user:ann").unwrap();
        let key = |i: u32| FeedKey::new(i64::from(i / 3), format!("a{i:03}"));
        for seed in 0..200u64 {
            let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
            let head: BTreeSet<FeedKey> = (0..300).filter(|_| rng.gen_bool(0.3)).map(key).collect();
            let mut run: Vec<(TypedId, FeedKey, isize)> = Vec::new();
            for i in 0..300 {
                if rng.gen_bool(0.4) {
                    run.push((user.clone(), key(i), if rng.gen_bool(0.5) { 1 } else { -1 }));
                }
            }
            let mut expected = head.clone();
            for (_, key, diff) in &run {
                if *diff > 0 {
                    expected.insert(key.clone());
                } else {
                    expected.remove(key);
                }
            }
            let mut merging = head.clone();
            assert!(merge_into(&mut merging, &run), "seed {seed}: merged");
            assert_eq!(merging, expected, "seed {seed}");
        }
        let mut head: BTreeSet<FeedKey> = (0..10).map(key).collect();
        let backwards = vec![(user.clone(), key(5), 1), (user.clone(), key(2), -1)];
        assert!(!merge_into(&mut head, &backwards));
        let reset = vec![(user.clone(), key(5), 0), (user.clone(), key(6), 1)];
        assert!(!merge_into(&mut head, &reset));
        assert_eq!(head.len(), 10, "left untouched");
    }
}
