//! The reference model of feedstorm: every user's feed head, digests and
//! notification feed recomputed from scratch, in plain Rust, straight from
//! SPEC sections 1 to 4 (blocks included).
//!
//! It is the oracle the tests hold the engine to, and the batch baseline of
//! `feedstorm bench`, so it shares nothing with the engine: it parses the
//! wire format itself ([`parse`]), keeps its own types (typed ids are plain
//! strings), and orders, keys and groups with its own few lines. No
//! dataflow, no incremental state, no bounds but the SPEC's.
//!
//! ```
//! use feedstorm_reference::{feeds, parse_lines, Settings};
//!
//! let events = parse_lines([
//!     r#"{"type":"follow","time":1,"user":"user:a","interest":"user:b"}"#,
//!     r#"{"type":"activity","id":"x","time":"1970-01-01T00:00:00.002Z","actor":"user:b","verb":"post","object":"note:1"}"#,
//!     r#"{"type":"unfollow","time":1,"user":"user:a","interest":"user:b"}"#,
//! ]);
//! let feeds = feeds(&events, &Settings::default());
//! // The unfollow wins the tie, so user:a sees only stories about itself (none).
//! assert!(!feeds.contains_key("user:a"));
//! assert_eq!(feeds["user:b"][0].id, "x");
//! assert_eq!(feeds["user:b"][0].time, 2);
//! ```

#![forbid(missing_docs)]

mod digest;
mod wire;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

pub use digest::{digest_of, DigestSettings, Field, Group};
pub use wire::{parse, parse_lines, Activity, Event, Relation};

/// The settings of SPEC section 2 that decide what a feed shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Entries in a feed head (default 200).
    pub feed_size: usize,
    /// Whether every user follows themselves (default true).
    pub follow_self: bool,
    /// How far behind the newest event time a story is still kept, in
    /// milliseconds (default 30 days).
    pub retention_ms: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            feed_size: 200,
            follow_self: true,
            retention_ms: 30 * 24 * 3_600_000,
        }
    }
}

/// One entry of a feed: its activity's time (Unix milliseconds) and id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entry {
    /// The activity's time.
    pub time: i64,
    /// The activity's id.
    pub id: String,
}

/// Every user's feed head (newest first), for users whose head is not empty.
pub fn feeds(events: &[Event], settings: &Settings) -> BTreeMap<String, Vec<Entry>> {
    feed_activities(events, settings)
        .into_iter()
        .map(|(user, activities)| {
            let head = activities
                .iter()
                .take(settings.feed_size)
                .map(|a| Entry {
                    time: a.time,
                    id: a.id.clone(),
                })
                .collect();
            (user, head)
        })
        .collect()
}

/// Every user's digest head (SPEC section 3), for users whose feed is not empty.
pub fn digests(
    events: &[Event],
    settings: &Settings,
    digest: &DigestSettings,
) -> BTreeMap<String, Vec<Group>> {
    feed_activities(events, settings)
        .into_iter()
        .map(|(user, activities)| (user, digest_of(activities, digest)))
        .collect()
}

/// Every user's notification digest head (SPEC section 4): the retained
/// activities whose target is the user, except the user's own and those
/// the user blocks, digested by `digest` (verb + object + day).
pub fn notifications(
    events: &[Event],
    settings: &Settings,
    digest: &DigestSettings,
) -> BTreeMap<String, Vec<Group>> {
    let blocks = in_force(events, Relation::Block);
    let mut by_target: BTreeMap<String, Vec<&Activity>> = BTreeMap::new();
    for activity in retained(events, settings) {
        if let Some(target) = &activity.target {
            if *target != activity.actor && !hidden(&blocks, target, activity) {
                by_target.entry(target.clone()).or_default().push(activity);
            }
        }
    }
    by_target
        .into_iter()
        .map(|(user, activities)| (user, digest_of(activities, digest)))
        .collect()
}

/// Each user's whole feed: every retained activity about their interests
/// that they do not block, newest first (time, then id, descending), each
/// once; users whose feed is empty are left out.
pub fn feed_activities<'a>(
    events: &'a [Event],
    settings: &Settings,
) -> BTreeMap<String, Vec<&'a Activity>> {
    let mut about: HashMap<&str, Vec<&Activity>> = HashMap::new();
    for activity in retained(events, settings) {
        let mut named = vec![&activity.actor, &activity.object];
        named.extend(&activity.target);
        named.sort();
        named.dedup();
        for id in named {
            about.entry(id).or_default().push(activity);
        }
    }
    let follows = in_force(events, Relation::Follow);
    let blocks = in_force(events, Relation::Block);
    let mut users: BTreeSet<&str> = follows.keys().copied().collect();
    for event in events {
        match event {
            Event::Activity(a) => users.insert(&a.actor),
            Event::Relation { user, .. } => users.insert(user),
            Event::Delete { .. } => false,
        };
    }
    let mut feeds = BTreeMap::new();
    for user in users {
        let mut followed: BTreeSet<&str> = follows.get(user).cloned().unwrap_or_default();
        if settings.follow_self {
            followed.insert(user);
        }
        let mut entries: Vec<&Activity> = followed
            .iter()
            .flat_map(|id| about.get(id).into_iter().flatten().copied())
            .filter(|a| !hidden(&blocks, user, a))
            .collect();
        entries.sort_by(|a, b| (b.time, &b.id).cmp(&(a.time, &a.id)));
        entries.dedup_by(|a, b| a.id == b.id);
        if !entries.is_empty() {
            feeds.insert(user.to_owned(), entries);
        }
    }
    feeds
}

/// For each user, the typed ids they `relation` (follow or block) now:
/// per (user, id) pair of the relation the event with the latest time
/// wins, and on equal times the ending one (unfollow) or block wins
/// (SPEC section 2).
pub fn in_force(events: &[Event], relation: Relation) -> HashMap<&str, BTreeSet<&str>> {
    // (time, whether the relation holds after the event), per pair.
    let mut latest: HashMap<(&str, &str), (i64, bool)> = HashMap::new();
    for event in events {
        let Event::Relation {
            relation: r,
            holds,
            time,
            user,
            other,
        } = event
        else {
            continue;
        };
        if *r != relation {
            continue;
        }
        // Follow loses ties to unfollow; block wins ties over unblock.
        let rank = |holds: bool| match relation {
            Relation::Follow => !holds,
            Relation::Block => holds,
        };
        let entry = latest
            .entry((user.as_str(), other.as_str()))
            .or_insert((*time, *holds));
        if (*time, rank(*holds)) > (entry.0, rank(entry.1)) {
            *entry = (*time, *holds);
        }
    }
    let mut in_force: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for ((user, other), (_, holds)) in latest {
        if holds {
            in_force.entry(user).or_default().insert(other);
        }
    }
    in_force
}

/// Whether `user` blocks the actor or the object of `activity`.
fn hidden(blocks: &HashMap<&str, BTreeSet<&str>>, user: &str, activity: &Activity) -> bool {
    blocks.get(user).is_some_and(|blocked| {
        blocked.contains(activity.actor.as_str()) || blocked.contains(activity.object.as_str())
    })
}

/// The activities feeds may show: the first copy of each id, never
/// deleted, and not older than the newest event time minus retention.
pub fn retained<'a>(events: &'a [Event], settings: &Settings) -> Vec<&'a Activity> {
    let newest = events.iter().map(Event::time).max().unwrap_or(i64::MIN);
    let horizon = newest.saturating_sub(settings.retention_ms);
    let deleted: HashSet<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::Delete { id, .. } => Some(id.as_str()),
            _ => None,
        })
        .collect();
    let mut seen = HashSet::new();
    events
        .iter()
        .filter_map(|e| match e {
            Event::Activity(a) => Some(a),
            _ => None,
        })
        .filter(|a| seen.insert(a.id.as_str()))
        .filter(|a| !deleted.contains(a.id.as_str()) && a.time >= horizon)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_hides_actor_and_object_but_not_a_target_and_wins_ties() {
        let events = parse_lines([
            r#"{"type":"activity","id":"a","time":10,"actor":"user:rob","verb":"love","object":"listing:x"}"#,
            r#"{"type":"activity","id":"b","time":11,"actor":"user:ann","verb":"love","object":"listing:y","target":"user:rob"}"#,
            r#"{"type":"activity","id":"c","time":12,"actor":"user:ann","verb":"love","object":"user:rob"}"#,
            r#"{"type":"follow","time":1,"user":"user:me","interest":"user:rob"}"#,
            r#"{"type":"follow","time":1,"user":"user:me","interest":"user:ann"}"#,
            r#"{"type":"unblock","time":5,"user":"user:me","blocked":"user:rob"}"#,
            r#"{"type":"block","time":5,"user":"user:me","blocked":"user:rob"}"#,
        ]);
        let ids = |events: &[Event]| -> Vec<String> {
            feeds(events, &Settings::default())["user:me"]
                .iter()
                .map(|e| e.id.clone())
                .collect()
        };
        // Actor rob (a) and object rob (c) are hidden; rob as target only (b) shows.
        assert_eq!(ids(&events), ["b"]);
        let mut later = events.clone();
        later.extend(parse_lines([
            r#"{"type":"unblock","time":6,"user":"user:me","blocked":"user:rob"}"#,
        ]));
        assert_eq!(ids(&later), ["c", "b", "a"]);
    }

    #[test]
    fn deletes_win_before_and_after_and_duplicates_show_once() {
        let events = parse_lines([
            r#"{"type":"delete","time":1,"id":"a"}"#,
            r#"{"type":"activity","id":"a","time":2,"actor":"user:rob","verb":"post","object":"note:1"}"#,
            r#"{"type":"activity","id":"b","time":3,"actor":"user:rob","verb":"post","object":"note:2"}"#,
            r#"{"type":"activity","id":"b","time":3,"actor":"user:rob","verb":"post","object":"note:2"}"#,
        ]);
        let feed = &feeds(&events, &Settings::default())["user:rob"];
        assert_eq!(
            feed,
            &[Entry {
                time: 3,
                id: "b".into()
            }]
        );
    }
}
