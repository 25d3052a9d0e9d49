//! The feed order of SPEC section 2 and the paging cursor.

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::event::Millis;

/// An activity's place in every feed: `time`, then `id` (byte order).
/// The derived order is ascending, so the newest entry is the largest and a
/// feed reads from the largest down.
///
/// ```
/// use feedstorm::feed::FeedKey;
/// let older = FeedKey::new(1, "b");
/// let newer = FeedKey::new(2, "a");
/// let tie = FeedKey::new(2, "b");
/// assert!(older < newer && newer < tie);
/// assert_eq!(FeedKey::from_cursor(&tie.cursor()), Some(tie));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FeedKey {
    /// Event time of the activity.
    pub time: Millis,
    /// Activity id.
    pub id: String,
}

impl FeedKey {
    /// A key for `id` at `time`.
    pub fn new(time: Millis, id: impl Into<String>) -> FeedKey {
        FeedKey {
            time,
            id: id.into(),
        }
    }

    /// An opaque cursor naming this entry (URL-safe base64 of `time:id`).
    pub fn cursor(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{}:{}", self.time, self.id))
    }

    /// The entry a cursor names, or `None` for a malformed cursor.
    pub fn from_cursor(cursor: &str) -> Option<FeedKey> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor)
            .ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let (time, id) = text.split_once(':')?;
        Some(FeedKey::new(time.parse().ok()?, id))
    }
}
