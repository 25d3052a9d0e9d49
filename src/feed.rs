//! The feed order of SPEC section 2, the paging cursor, and a feed entry
//! as the API and the Redis layout show it.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use base64::Engine;
use serde::{Deserialize, Serialize};

use serde_json::value::RawValue;

use crate::event::{format_time, Activity, Millis, TypedId};

/// A change to a user's feed head, as the feed-head bolt emits it and the
/// sink writes it: `+1` enters, `-1` leaves, and `0` (with an empty key, see
/// [`crate::bolt::feed_head::reset_marker`]) clears the user's head first.
pub type HeadChange = (TypedId, FeedKey, isize);

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
    /// Activity id (shared: a key held by many heads is one allocation).
    pub id: Arc<str>,
}

impl FeedKey {
    /// A key for `id` at `time`.
    pub fn new(time: Millis, id: impl Into<Arc<str>>) -> FeedKey {
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

/// A retained activity as it travels through the dataflow: shared rather
/// than copied (a story about three typed ids, delivered to many users, is one
/// allocation), and compared, ordered and hashed by its [`FeedKey`] alone,
/// which is sound because an id's content never changes (SPEC section 1).
///
/// ```
/// use std::sync::Arc;
/// use feedstorm::event::{Activity, TypedId};
/// use feedstorm::feed::{FeedKey, Story};
/// let activity = |id: &str, time| Story(Arc::new(Activity { id: id.into(), time,
///     actor: TypedId::parse("user:rob").unwrap(), verb: "love".into(),
///     object: TypedId::parse("listing:bear").unwrap(), target: None, extra: None }));
/// assert!(activity("b", 1) < activity("a", 2));
/// assert_eq!(activity("a", 2).key(), FeedKey::new(2, "a"));
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Story(pub Arc<Activity>);

impl Story {
    /// The activity's place in feeds.
    pub fn key(&self) -> FeedKey {
        FeedKey::new(self.0.time, self.0.id.clone())
    }

    fn order(&self) -> (Millis, &str) {
        (self.0.time, &self.0.id)
    }
}

impl PartialEq for Story {
    fn eq(&self, other: &Self) -> bool {
        self.order() == other.order()
    }
}

impl Eq for Story {}

impl PartialOrd for Story {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Story {
    fn cmp(&self, other: &Self) -> Ordering {
        self.order().cmp(&other.order())
    }
}

impl Hash for Story {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.order().hash(state)
    }
}

/// An activity handle that hashes and compares by id alone, so a set of
/// them is a map from id to activity without a second copy of the id's
/// handle per entry.
///
/// ```
/// use std::collections::HashSet;
/// use std::sync::Arc;
/// use feedstorm::event::{Activity, TypedId};
/// use feedstorm::feed::ById;
/// let activity = Arc::new(Activity { id: "a1".into(), time: 1,
///     actor: TypedId::parse("user:rob").unwrap(), verb: "love".into(),
///     object: TypedId::parse("listing:bear").unwrap(), target: None, extra: None });
/// let set: HashSet<ById> = [ById(activity)].into_iter().collect();
/// assert_eq!(set.get("a1").map(|a| a.0.time), Some(1));
/// ```
#[derive(Clone, Debug)]
pub struct ById(pub Arc<Activity>);

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for ById {}

impl Hash for ById {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes: `Borrow<str>` lookups must find it.
        (*self.0.id).hash(state)
    }
}

impl std::borrow::Borrow<str> for ById {
    fn borrow(&self) -> &str {
        &self.0.id
    }
}

/// A feed entry as the API shows it (and the Redis layout stores it):
/// `{"id", "time", "actor", "verb", "object", "target", "extra"}`, `time`
/// in RFC 3339, `extra` verbatim.
#[derive(Serialize)]
pub struct EntryOut<'a> {
    id: &'a str,
    time: String,
    actor: &'a TypedId,
    verb: &'a str,
    object: &'a TypedId,
    target: Option<&'a TypedId>,
    extra: Option<&'a RawValue>,
}

impl<'a> From<&'a Activity> for EntryOut<'a> {
    fn from(a: &'a Activity) -> Self {
        EntryOut {
            id: &a.id,
            time: format_time(a.time),
            actor: &a.actor,
            verb: &a.verb,
            object: &a.object,
            target: a.target.as_ref(),
            extra: a
                .extra
                .as_deref()
                .and_then(|e| serde_json::from_str(e).ok()),
        }
    }
}
