//! Stores: where the sink writes feed heads and activities, and where the
//! HTTP API reads them. A feed entry is a reference (its [`FeedKey`]) to an
//! activity stored once.

pub mod activity_set;
pub mod embedded;
pub mod redis;

use std::sync::Arc;

use std::collections::{BTreeMap, HashSet};

use crate::config::NOTIFICATIONS;
use crate::digest::DigestChange;
use crate::digest::{Group, GroupOrder, MarkRequest, Marks, Notification, NotificationCounts};
use crate::error::Result;
use crate::event::{Activity, TypedId};
use crate::feed::{FeedKey, HeadChange};

pub use self::redis::RedisStore;
pub use embedded::EmbeddedStore;

/// One epoch's writes from one worker, applied in this order: `puts`, `feed`
/// and `digests`, `removes`, so that a reader never meets an entry whose activity was not
/// yet stored. Applying a batch twice changes nothing (replays are harmless).
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    /// Activities that became retained.
    pub puts: Vec<Arc<Activity>>,
    /// Head changes: `+1` the entry enters the user's head, `-1` it leaves.
    pub feed: Vec<HeadChange>,
    /// Changes to digest and notification heads.
    pub digests: Vec<DigestChange>,
    /// Activities deleted or past retention.
    pub removes: Vec<Arc<str>>,
    /// The epoch's time in the run, Unix milliseconds (the run's start plus
    /// the epoch): what the store records as when the batch's users were
    /// written ([`Store::written_since`]).
    pub written_at: u64,
}

impl WriteBatch {
    /// Empties the batch, keeping buffers of up to `keep` items each for
    /// the next epoch (a huge catch-up epoch's buffers are not kept).
    pub fn clear(&mut self, keep: usize) {
        self.puts.clear();
        self.feed.clear();
        self.digests.clear();
        self.removes.clear();
        self.puts.shrink_to(keep);
        self.feed.shrink_to(keep);
        self.digests.shrink_to(keep);
        self.removes.shrink_to(keep);
    }

    /// Whether the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty()
            && self.feed.is_empty()
            && self.digests.is_empty()
            && self.removes.is_empty()
    }
}

/// Where a page of a feed starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PageStart {
    /// Skip this many entries from the newest.
    Offset(usize),
    /// Start right after (older than) this entry: stable while new entries
    /// arrive at the head.
    After(FeedKey),
}

impl PageStart {
    /// The one paging rule of every store: at most `limit` items of a
    /// newest-first order from this start, and whether more follow.
    /// `read(after, skip, count)` reads up to `count` items newest first,
    /// those strictly older than the cursor's place `after` (`None`: from
    /// the newest), past the first `skip`; one more than `limit` is read to
    /// tell whether more follow.
    pub fn page<T>(
        &self,
        limit: usize,
        read: impl FnOnce(Option<&FeedKey>, usize, usize) -> Result<Vec<T>>,
    ) -> Result<(Vec<T>, bool)> {
        let (after, skip) = match self {
            PageStart::Offset(skip) => (None, *skip),
            PageStart::After(after) => (Some(after), 0),
        };
        let mut items = read(after, skip, limit.saturating_add(1))?;
        let more = items.len() > limit;
        items.truncate(limit);
        Ok((items, more))
    }
}

/// A page of a feed, newest first.
#[derive(Clone, Debug, Default)]
pub struct FeedPage {
    /// The entries' activities.
    pub entries: Vec<Arc<Activity>>,
    /// Cursor of the last entry, when more entries may follow.
    pub next_cursor: Option<String>,
}

/// A page of `keys` (newest first), and whether more follow.
pub fn page_of(keys: &[FeedKey], start: &PageStart, limit: usize) -> (Vec<FeedKey>, bool) {
    page_by(keys, FeedKey::clone, FeedKey::clone, start, limit)
}

/// A page of `items`, sorted by `place` descending (newest first), from
/// `start` (a cursor names a place through `cursor_place`), and whether
/// more follow. Feeds and digests page alike.
fn page_by<T: Clone, P: Ord>(
    items: &[T],
    place: impl Fn(&T) -> P,
    cursor_place: impl FnOnce(&FeedKey) -> P,
    start: &PageStart,
    limit: usize,
) -> (Vec<T>, bool) {
    let read = |after: Option<&FeedKey>, skip: usize, count: usize| {
        let after = after.map(cursor_place);
        let from = after.map_or(0, |after| {
            items.partition_point(|item| place(item) >= after)
        });
        Ok(items[from..]
            .iter()
            .skip(skip)
            .take(count)
            .cloned()
            .collect())
    };
    start
        .page(limit, read)
        .expect("a slice reads without failing")
}

/// A page of a digest, newest group first.
#[derive(Clone, Debug, Default)]
pub struct DigestPage {
    /// The groups.
    pub groups: Vec<Arc<Group>>,
    /// Cursor of the last group, when more groups may follow.
    pub next_cursor: Option<String>,
}

impl DigestPage {
    /// A page of `groups`, with a cursor after the last one when `more` follow.
    pub fn new(groups: Vec<Arc<Group>>, more: bool) -> DigestPage {
        let next_cursor = more
            .then(|| groups.last().map(|g| g.order().cursor()))
            .flatten();
        DigestPage {
            groups,
            next_cursor,
        }
    }
}

/// A page of a notification feed, with the counts over its whole head.
#[derive(Clone, Debug, Default)]
pub struct NotificationPage {
    /// The groups with their flags.
    pub groups: Vec<Notification>,
    /// Unseen and unread groups in the whole notification head.
    pub counts: NotificationCounts,
    /// Cursor of the last group, when more groups may follow.
    pub next_cursor: Option<String>,
}

/// A page of `items`, ordered by `order` descending (digest order), and the
/// next cursor when more follow. A cursor names a group's place
/// ([`GroupOrder::cursor`]), so a page after it stays right as groups change.
pub fn page_of_groups<T: Clone>(
    items: &[T],
    order: impl Fn(&T) -> GroupOrder,
    start: &PageStart,
    limit: usize,
) -> (Vec<T>, Option<String>) {
    let (page, more) = page_by(items, &order, GroupOrder::from_key, start, limit);
    let next = more
        .then(|| page.last().map(|item| order(item).cursor()))
        .flatten();
    (page, next)
}

/// Counts for `/status` and the benchmark.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Users with a non-empty feed head.
    pub feeds: u64,
    /// Entries over all feed heads.
    pub entries: u64,
    /// Stored activities.
    pub activities: u64,
}

/// A feed store: the sink's write side and the API's read side.
pub trait Store: Send + Sync + 'static {
    /// Applies one batch. An error is retryable: the sink backs off and
    /// tries the same batch again.
    fn apply(&self, batch: &WriteBatch) -> Result<()>;
    /// A page of `user`'s feed head.
    fn feed_page(&self, user: &TypedId, start: &PageStart, limit: usize) -> Result<FeedPage>;
    /// A stored activity.
    fn activity(&self, id: &str) -> Result<Option<Arc<Activity>>>;
    /// The whole head of `user`, newest first (for tests and tools).
    fn feed_keys(&self, user: &TypedId) -> Result<Vec<FeedKey>>;
    /// Users with a non-empty head.
    fn users(&self) -> Result<Vec<TypedId>>;
    /// How many feeds, entries and activities the store holds (for
    /// `/status` and `/metrics`; may walk every key: not for a request path).
    fn stats(&self) -> StoreStats;
    /// A page of `user`'s digest named `digest`.
    fn digest_page(
        &self,
        user: &TypedId,
        digest: &str,
        start: &PageStart,
        limit: usize,
    ) -> Result<DigestPage>;
    /// Users with a non-empty digest named `digest`.
    fn digest_users(&self, digest: &str) -> Result<Vec<TypedId>>;
    /// `user`'s notification marks by group key.
    fn marks(&self, user: &TypedId) -> Result<BTreeMap<String, Marks>>;
    /// Stores notification marks of `user` (replacing those of the same keys).
    fn put_marks(&self, user: &TypedId, marks: &[(String, Marks)]) -> Result<()>;

    /// The whole head of `user`'s digest named `digest`, newest first.
    fn digest_groups(&self, user: &TypedId, digest: &str) -> Result<Vec<Arc<Group>>> {
        Ok(self
            .digest_page(user, digest, &PageStart::Offset(0), usize::MAX)?
            .groups)
    }

    /// A page of `user`'s notification feed, with flags and counts.
    fn notifications_page(
        &self,
        user: &TypedId,
        start: &PageStart,
        limit: usize,
    ) -> Result<NotificationPage> {
        let all = notifications(self, user)?;
        let counts = NotificationCounts::of(&all);
        let (groups, next_cursor) = page_of_groups(&all, |n| n.group.order(), start, limit);
        Ok(NotificationPage {
            groups,
            counts,
            next_cursor,
        })
    }

    /// Marks groups of `user`'s notification feed seen or read; returns the
    /// new counts. Racing a write that adds a newer activity is harmless:
    /// the mark names the newest activity the user was shown.
    fn mark_notifications(
        &self,
        user: &TypedId,
        request: &MarkRequest,
    ) -> Result<NotificationCounts> {
        let groups = self.digest_groups(user, NOTIFICATIONS)?;
        let mut marks = self.marks(user)?;
        let changed: Vec<(String, Marks)> = groups
            .iter()
            .filter_map(|group| {
                let old = marks.get(&*group.key).cloned().unwrap_or_default();
                let new = request.apply(group, &old)?;
                (new != old).then(|| (group.key.to_string(), new))
            })
            .collect();
        if !changed.is_empty() {
            self.put_marks(user, &changed)?;
        }
        // The counts of the head just read, under the marks just written.
        marks.extend(changed);
        Ok(NotificationCounts::of(&flagged(groups, &marks)))
    }

    /// Whether the store outlives the process (then a restarted topology
    /// recovers before it writes; see the feed-head bolt).
    fn persistent(&self) -> bool {
        false
    }

    /// The users whose heads, digests or notification feeds were written at
    /// or after `since_ms` (Unix milliseconds), for a resume from a
    /// checkpoint to rewrite only those; `None` when the store does not
    /// record it, or forgot part of it (then a resume rewrites every user).
    fn written_since(&self, since_ms: u64) -> Result<Option<HashSet<TypedId>>> {
        let _ = since_ms;
        Ok(None)
    }

    /// Forgets which users were written before `before_ms`: no checkpoint
    /// kept needs it.
    fn forget_written_before(&self, before_ms: u64) -> Result<()> {
        let _ = before_ms;
        Ok(())
    }
}

/// `user`'s whole notification head with flags.
fn notifications<S: Store + ?Sized>(store: &S, user: &TypedId) -> Result<Vec<Notification>> {
    let groups = store.digest_groups(user, NOTIFICATIONS)?;
    let marks = if groups.is_empty() {
        BTreeMap::new()
    } else {
        store.marks(user)?
    };
    Ok(flagged(groups, &marks))
}

/// Notification groups with their flags under `marks`.
fn flagged(groups: Vec<Arc<Group>>, marks: &BTreeMap<String, Marks>) -> Vec<Notification> {
    groups
        .into_iter()
        .map(|group| {
            let (seen, read) = marks
                .get(&*group.key)
                .map_or((false, false), |m| m.flags(&group));
            Notification {
                group: (*group).clone(),
                seen,
                read,
            }
        })
        .collect()
}
