//! Stores: where the sink writes feed heads and activities, and where the
//! HTTP API reads them. A feed entry is a reference (its [`FeedKey`]) to an
//! activity stored once.

pub mod embedded;
pub mod redis;
pub mod sink;

use std::sync::Arc;

use crate::error::Result;
use crate::event::{Activity, TypedId};
use crate::feed::FeedKey;

pub use self::redis::RedisStore;
pub use embedded::EmbeddedStore;
pub use sink::WriteTo;

/// One epoch's writes from one worker, applied in this order: `puts`, `feed`,
/// `removes`, so that a reader never meets an entry whose activity was not
/// yet stored. Applying a batch twice changes nothing (replays are harmless).
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    /// Activities that became retained.
    pub puts: Vec<Arc<Activity>>,
    /// Head changes: `+1` the entry enters the user's head, `-1` it leaves.
    pub feed: Vec<(TypedId, FeedKey, isize)>,
    /// Activities deleted or past retention.
    pub removes: Vec<String>,
}

impl WriteBatch {
    /// Whether the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.feed.is_empty() && self.removes.is_empty()
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
    let from = match start {
        PageStart::Offset(skip) => (*skip).min(keys.len()),
        PageStart::After(after) => keys.partition_point(|k| k >= after),
    };
    let page: Vec<FeedKey> = keys[from..].iter().take(limit).cloned().collect();
    (page, keys.len() > from + limit)
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
    /// Sizes.
    fn stats(&self) -> StoreStats;
    /// Whether the store outlives the process (then a restarted topology
    /// recovers before it writes; see the feed-head bolt).
    fn persistent(&self) -> bool {
        false
    }
}
