//! Digests (SPEC sections 3 and 4): aggregation keys, the groups a digest
//! shows, their order, and the seen/read marks of notification feeds. The
//! digest bolt ([`crate::bolt::digest`]) keeps groups up to date; stores and
//! the HTTP API serve them; the reference model recomputes them.
//!
//! ```
//! use feedstorm::config::DigestConfig;
//! use feedstorm::digest::DigestSpec;
//! use feedstorm::event::{Activity, TypedId};
//!
//! let spec = DigestSpec::new(&DigestConfig::default()); // verb + object + UTC day
//! let loved = Activity { id: "a1".into(), time: 1_795_255_200_000, // 2026-11-21T10:00Z
//!     actor: TypedId::parse("user:rob").unwrap(), verb: "love".into(),
//!     object: TypedId::parse("listing:bear").unwrap(), target: None, extra: None };
//! assert_eq!(spec.key(&loved), "love/listing:bear/2026-11-21T00:00:00.000Z");
//! ```

use std::cell::RefCell;
use std::cmp::Reverse;
use std::sync::Arc;

use arcstr::ArcStr;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use serde::{Deserialize, Serialize};

use crate::config::{DigestConfig, DigestSizes, KeyField, NotificationsConfig, NOTIFICATIONS};
use crate::event::{format_time, Activity, Millis, TypedId};
use crate::feed::FeedKey;

/// Characters escaped in a key component, so that `/` only separates.
const COMPONENT: &AsciiSet = &CONTROLS.add(b'/').add(b'%').add(b' ');

/// One digest's aggregation rule and bounds.
#[derive(Clone, Debug)]
pub struct DigestSpec {
    /// Store and API name (`notifications` for the notification feed).
    pub name: Arc<str>,
    /// Key fields, in canonical order (verb, actor, object, target), no repeats.
    pub fields: Vec<KeyField>,
    /// Time bucket width in milliseconds.
    pub window: Millis,
    /// Group and head bounds.
    pub sizes: DigestSizes,
}

impl DigestSpec {
    /// The spec of a configured digest.
    pub fn new(config: &DigestConfig) -> DigestSpec {
        let mut fields = config.key.clone();
        fields.sort();
        fields.dedup();
        DigestSpec {
            name: Arc::from(config.name.as_str()),
            fields,
            window: Millis::try_from(config.window.as_millis()).unwrap_or(Millis::MAX),
            sizes: config.sizes(),
        }
    }

    /// The notification feed's spec: the default key (verb + object + UTC day).
    pub fn notifications(config: &NotificationsConfig) -> DigestSpec {
        let default = DigestConfig::default();
        DigestSpec {
            name: Arc::from(NOTIFICATIONS),
            sizes: config.sizes(),
            ..DigestSpec::new(&default)
        }
    }

    /// Start of the time bucket that `time` falls in.
    pub fn bucket(&self, time: Millis) -> Millis {
        time.div_euclid(self.window) * self.window
    }

    /// The aggregation key of `activity`: its key fields, percent-encoded
    /// where they contain `/`, `%` or spaces (an absent target is empty),
    /// then the bucket start, all joined by `/`.
    pub fn key(&self, activity: &Activity) -> String {
        let mut key = String::new();
        for field in &self.fields {
            let value = match field {
                KeyField::Verb => &activity.verb,
                KeyField::Actor => activity.actor.as_str(),
                KeyField::Object => activity.object.as_str(),
                KeyField::Target => activity.target.as_ref().map_or("", |t| t.as_str()),
            };
            key.extend(utf8_percent_encode(value, COMPONENT));
            key.push('/');
        }
        let bucket = self.bucket(activity.time);
        // Stories come a bucket at a time: each bucket start is formatted
        // once, not once per story (it was most of a key's cost).
        thread_local! {
            static LAST: RefCell<Option<(Millis, String)>> = const { RefCell::new(None) };
        }
        LAST.with_borrow_mut(|last| match last {
            Some((at, text)) if *at == bucket => key.push_str(text),
            _ => {
                let text = format_time(bucket);
                key.push_str(&text);
                *last = Some((bucket, text));
            }
        });
        key
    }
}

/// One group of a digest, as stored and served (SPEC section 6's shape).
/// `verb` and `object` come from the group's newest activity (they are the
/// same for every activity when they are key fields).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// The aggregation key.
    pub key: Arc<str>,
    /// Verb of the newest activity.
    pub verb: ArcStr,
    /// Object of the newest activity.
    pub object: TypedId,
    /// Distinct actors, ordered by their newest activity in the group, newest
    /// first, at most `max_actors`.
    pub actors: Vec<TypedId>,
    /// All distinct actors.
    pub actor_count: usize,
    /// All activities.
    pub activity_count: usize,
    /// Time of the oldest activity.
    #[serde(with = "rfc3339")]
    pub first_time: Millis,
    /// Time of the newest activity.
    #[serde(with = "rfc3339")]
    pub last_time: Millis,
    /// Activity ids in feed order, newest first, at most `max_activities`.
    pub activity_ids: Vec<Arc<str>>,
}

impl Group {
    /// The view of group `key` from its activities newest first (read only
    /// as far as the shown actors and ids need), its oldest activity, and
    /// its counts of distinct actors and of activities.
    pub fn from_newest<'a>(
        key: &Arc<str>,
        spec: &DigestSpec,
        newest_first: impl Iterator<Item = &'a Activity> + Clone,
        oldest: &Activity,
        actor_count: usize,
        activity_count: usize,
    ) -> Group {
        // Distinct actors by their newest activity, as many as are shown.
        let wanted = spec.sizes.max_actors.min(actor_count);
        let mut actors: Vec<TypedId> = Vec::with_capacity(wanted);
        let mut activities = newest_first.clone();
        while actors.len() < wanted {
            let Some(activity) = activities.next() else {
                break;
            };
            if !actors.contains(&activity.actor) {
                actors.push(activity.actor.clone());
            }
        }
        Group::with_actors(
            key,
            spec,
            newest_first,
            actors,
            oldest,
            actor_count,
            activity_count,
        )
    }

    /// [`from_newest`](Self::from_newest) with the shown `actors` already
    /// picked (distinct, newest first, at most `max_actors`).
    pub fn with_actors<'a>(
        key: &Arc<str>,
        spec: &DigestSpec,
        mut newest_first: impl Iterator<Item = &'a Activity> + Clone,
        actors: Vec<TypedId>,
        oldest: &Activity,
        actor_count: usize,
        activity_count: usize,
    ) -> Group {
        let ids: Vec<Arc<str>> = newest_first
            .clone()
            .take(spec.sizes.max_activities)
            .map(|a| a.id.clone())
            .collect();
        let newest = newest_first.next().expect("non-empty group");
        Group {
            key: key.clone(),
            verb: newest.verb.clone(),
            object: newest.object.clone(),
            actors,
            actor_count,
            activity_count,
            first_time: oldest.time,
            last_time: newest.time,
            activity_ids: ids,
        }
    }

    /// The group's place in its digest.
    pub fn order(&self) -> GroupOrder {
        GroupOrder::new(self.last_time, self.key.clone())
    }

    /// The group's newest activity, the mark that seen/read compare against.
    pub fn newest(&self) -> FeedKey {
        FeedKey::new(
            self.last_time,
            self.activity_ids.first().cloned().unwrap_or_default(),
        )
    }
}

/// Where a group sits in a digest. The derived order is ascending and a
/// digest reads from the largest down: newest `last_time` first, then key
/// ascending (SPEC section 3). The key is shared with the group it places
/// (`Arc<str>`), or interned where the notification bolt keeps groups
/// (`GroupOrder<Key>`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupOrder<K = Arc<str>> {
    /// The group's newest activity time.
    pub last_time: Millis,
    /// The group's key, reversed so that smaller keys come first.
    pub key: Reverse<K>,
}

impl GroupOrder {
    /// The place of group `key` whose newest activity is at `last_time`.
    pub fn new(last_time: Millis, key: Arc<str>) -> GroupOrder {
        GroupOrder {
            last_time,
            key: Reverse(key),
        }
    }

    /// A paging cursor naming this place (the feed cursor's encoding).
    pub fn cursor(&self) -> String {
        FeedKey::new(self.last_time, self.key.0.clone()).cursor()
    }

    /// The place a cursor (as carried by [`crate::store::PageStart::After`]) names.
    pub fn from_key(key: &FeedKey) -> GroupOrder {
        GroupOrder::new(key.time, key.id.clone())
    }
}

/// A notification group's flags, as shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Notification {
    /// The group.
    #[serde(flatten)]
    pub group: Group,
    /// Seen since its newest activity arrived.
    pub seen: bool,
    /// Read since its newest activity arrived.
    pub read: bool,
}

/// What a user marked of a group: the group's newest activity at the time.
/// The group counts as seen (read) while its newest activity is not newer
/// than the mark, so a group that gains a newer activity is unseen again.
/// Marks compare event data, not wall-clock time, so a replay after a
/// restart gives the same flags.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marks {
    /// Newest activity when last marked seen.
    pub seen: Option<FeedKey>,
    /// Newest activity when last marked read.
    pub read: Option<FeedKey>,
}

impl Marks {
    /// The flags of `group` under these marks.
    pub fn flags(&self, group: &Group) -> (bool, bool) {
        let newest = group.newest();
        let covers = |mark: &Option<FeedKey>| mark.as_ref().is_some_and(|m| *m >= newest);
        (covers(&self.seen), covers(&self.read))
    }
}

/// Which groups a mark request names.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum MarkSet {
    /// `true`: every group in the notification feed.
    All(bool),
    /// The groups with these keys (unknown keys are ignored).
    Keys(Vec<String>),
}

impl MarkSet {
    /// Whether the set names the group with `key`.
    pub fn names(&self, key: &str) -> bool {
        match self {
            MarkSet::All(all) => *all,
            MarkSet::Keys(keys) => keys.iter().any(|k| k == key),
        }
    }
}

/// `POST /feeds/USER/notifications/mark`'s body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkRequest {
    /// Groups to mark seen.
    #[serde(default)]
    pub seen: Option<MarkSet>,
    /// Groups to mark read.
    #[serde(default)]
    pub read: Option<MarkSet>,
}

impl MarkRequest {
    /// The marks after applying this request to `group` marked `old`, or
    /// `None` when the request does not touch it.
    pub fn apply(&self, group: &Group, old: &Marks) -> Option<Marks> {
        let seen = self.seen.as_ref().is_some_and(|s| s.names(&group.key));
        let read = self.read.as_ref().is_some_and(|s| s.names(&group.key));
        if !seen && !read {
            return None;
        }
        let mut marks = old.clone();
        if seen {
            marks.seen = Some(group.newest());
        }
        if read {
            marks.read = Some(group.newest());
        }
        Some(marks)
    }
}

/// Unseen and unread groups in a notification feed head.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NotificationCounts {
    /// Groups not seen since their newest activity.
    pub unseen: usize,
    /// Groups not read since their newest activity.
    pub unread: usize,
}

impl NotificationCounts {
    /// Counts the flags of `notifications`.
    pub fn of<'a>(notifications: impl IntoIterator<Item = &'a Notification>) -> Self {
        let mut counts = NotificationCounts::default();
        for n in notifications {
            counts.unseen += usize::from(!n.seen);
            counts.unread += usize::from(!n.read);
        }
        counts
    }
}

/// RFC 3339 UTC with milliseconds, as the API shows every time.
mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::event::{format_time, Millis};

    pub fn serialize<S: Serializer>(time: &Millis, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_time(*time))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Millis, D::Error> {
        let text = String::deserialize(d)?;
        let parsed =
            time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
                .map_err(serde::de::Error::custom)?;
        i64::try_from(parsed.unix_timestamp_nanos().div_euclid(1_000_000))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_escape_separators_and_buckets_are_utc_aligned() {
        let config: DigestConfig =
            toml::from_str("key = [\"target\", \"verb\"]\nwindow = \"6h\"").unwrap();
        let spec = DigestSpec::new(&config);
        let mut activity = Activity {
            id: "x".into(),
            time: 1_795_219_200_000 + 7 * 3_600_000, // 07:00Z
            actor: TypedId::parse("user:a").unwrap(),
            verb: "re/pin 100%".into(),
            object: TypedId::parse("pin:1").unwrap(),
            target: None,
            extra: None,
        };
        assert_eq!(
            spec.key(&activity),
            "re%2Fpin%20100%25//2026-11-21T06:00:00.000Z"
        );
        activity.time = -1;
        assert_eq!(spec.bucket(-1), -6 * 3_600_000);
    }

    #[test]
    fn group_json_round_trips() {
        let group = Group {
            key: "k".into(),
            verb: "love".into(),
            object: TypedId::parse("listing:1").unwrap(),
            actors: vec![TypedId::parse("user:a").unwrap()],
            actor_count: 1,
            activity_count: 2,
            first_time: 1,
            last_time: 1_795_219_200_123,
            activity_ids: vec!["b".into(), "a".into()],
        };
        let json = serde_json::to_string(&group).unwrap();
        assert!(json.contains("\"last_time\":\"2026-11-21T00:00:00.123Z\""));
        assert_eq!(serde_json::from_str::<Group>(&json).unwrap(), group);
    }
}

/// A change to one user's digest in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigestChange {
    /// Whose digest.
    pub user: TypedId,
    /// Which digest (its name).
    pub digest: Arc<str>,
    /// What changes.
    pub change: GroupChange,
}

impl DigestChange {
    /// `change` to `user`'s digest of `spec`.
    pub fn of(user: &TypedId, spec: &DigestSpec, change: GroupChange) -> DigestChange {
        DigestChange {
            user: user.clone(),
            digest: spec.name.clone(),
            change,
        }
    }
}

/// What changes in a digest head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupChange {
    /// The group is in the head with this content (new or changed).
    Put(Arc<Group>),
    /// The group with this key is not in the head (any more).
    Remove(String),
    /// Clear the user's digest first (a restart's recovery writes it whole).
    Reset,
}
