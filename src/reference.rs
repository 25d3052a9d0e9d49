//! The reference model: feeds, digests and notifications recomputed from scratch, in plain Rust, straight
//! from SPEC sections 2 to 4 (blocks included). No dataflow, no incremental state: the oracle that
//! tests compare the topology against, and the batch baseline of `bench`.
//!
//! ```
//! use feedstorm::config::FeedConfig;
//! use feedstorm::event::decode;
//! use feedstorm::reference::feeds;
//!
//! let events: Vec<_> = [
//!     r#"{"type":"follow","time":1,"user":"user:a","interest":"user:b"}"#,
//!     r#"{"type":"activity","id":"x","time":2,"actor":"user:b","verb":"post","object":"note:1"}"#,
//!     r#"{"type":"unfollow","time":1,"user":"user:a","interest":"user:b"}"#,
//! ].iter().map(|l| decode(l.as_bytes(), 1 << 20).unwrap()).collect();
//! let feeds = feeds(&events, &FeedConfig::default());
//! // The unfollow wins the tie, so user:a sees only stories about itself (none).
//! assert!(!feeds.contains_key(&feedstorm::event::TypedId::parse("user:a").unwrap()));
//! assert_eq!(feeds[&feedstorm::event::TypedId::parse("user:b").unwrap()].len(), 1);
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::config::FeedConfig;
use crate::digest::{DigestSpec, Group};
use crate::event::{Activity, Event, InterestOp, Millis, TypedId};
use crate::feed::FeedKey;

/// Every user's feed head (newest first), for users whose head is not empty.
pub fn feeds(events: &[Event], config: &FeedConfig) -> BTreeMap<TypedId, Vec<FeedKey>> {
    feed_activities(events, config)
        .into_iter()
        .map(|(user, activities)| {
            let head = activities
                .iter()
                .take(config.feed_size)
                .map(|a| FeedKey::new(a.time, a.id.clone()))
                .collect();
            (user, head)
        })
        .collect()
}

/// Every user's whole feed: all retained activities about their interests,
/// newest first, for users whose feed is not empty.
pub fn feed_activities<'a>(
    events: &'a [Event],
    config: &FeedConfig,
) -> BTreeMap<TypedId, Vec<&'a Activity>> {
    let retained = retained_activities(events, config);
    let mut interests: HashMap<&TypedId, BTreeSet<&TypedId>> = HashMap::new();
    for event in events {
        match event {
            Event::Interest { user, .. } => {
                interests.entry(user).or_default();
            }
            Event::Activity(a) => {
                interests.entry(&a.actor).or_default();
            }
            Event::Delete { .. } => {}
        }
    }
    for (user, interest) in relation_in_force(events, InterestOp::Follow) {
        interests.entry(user).or_default().insert(interest);
    }
    let blocks = blocks(events);
    let mut about: HashMap<&TypedId, Vec<&Activity>> = HashMap::new();
    for activity in &retained {
        for typed in activity.story_ids() {
            about.entry(typed).or_default().push(activity);
        }
    }
    let mut feeds = BTreeMap::new();
    for (user, mut followed) in interests {
        if config.follow_self {
            followed.insert(user);
        }
        let mut entries: Vec<&Activity> = followed
            .iter()
            .flat_map(|i| about.get(i).into_iter().flatten().copied())
            .filter(|a| !hidden(&blocks, user, a))
            .collect();
        entries.sort_by(|a, b| (b.time, &b.id).cmp(&(a.time, &a.id)));
        entries.dedup_by(|a, b| a.id == b.id);
        if !entries.is_empty() {
            feeds.insert(user.clone(), entries);
        }
    }
    feeds
}

/// Every user's digest head per `spec` (SPEC section 3), for users whose
/// feed is not empty.
pub fn digests(
    events: &[Event],
    config: &FeedConfig,
    spec: &DigestSpec,
) -> BTreeMap<TypedId, Vec<Group>> {
    feed_activities(events, config)
        .into_iter()
        .map(|(user, activities)| (user, digest_of(activities, spec)))
        .collect()
}

/// Every user's notification digest head (SPEC section 4): the retained
/// activities whose target is the user, except the user's own.
pub fn notifications(
    events: &[Event],
    config: &FeedConfig,
    spec: &DigestSpec,
) -> BTreeMap<TypedId, Vec<Group>> {
    let blocks = blocks(events);
    let mut by_target: BTreeMap<TypedId, Vec<&Activity>> = BTreeMap::new();
    for activity in retained_activities(events, config) {
        match &activity.target {
            Some(target) if *target != activity.actor && !hidden(&blocks, target, activity) => {
                by_target.entry(target.clone()).or_default().push(activity)
            }
            _ => {}
        }
    }
    by_target
        .into_iter()
        .map(|(user, activities)| (user, digest_of(activities, spec)))
        .collect()
}

/// The (user, typed id) pairs whose relation of `holds` (follow or block)
/// is in force: for each pair and relation, the event with the largest
/// `(time, op)` wins (unfollow and block win ties).
pub fn relation_in_force(events: &[Event], holds: InterestOp) -> Vec<(&TypedId, &TypedId)> {
    let mut winners: HashMap<(&TypedId, &TypedId), (Millis, InterestOp)> = HashMap::new();
    for event in events {
        if let Event::Interest {
            time,
            user,
            interest,
            op,
        } = event
        {
            if op.relation() == holds.relation() {
                let winner = winners.entry((user, interest)).or_insert((*time, *op));
                *winner = (*winner).max((*time, *op));
            }
        }
    }
    winners
        .into_iter()
        .filter(|(_, (_, op))| *op == holds)
        .map(|(pair, _)| pair)
        .collect()
}

/// Each user's blocked typed ids.
fn blocks(events: &[Event]) -> HashMap<&TypedId, HashSet<&TypedId>> {
    let mut blocks: HashMap<&TypedId, HashSet<&TypedId>> = HashMap::new();
    for (user, blocked) in relation_in_force(events, InterestOp::Block) {
        blocks.entry(user).or_default().insert(blocked);
    }
    blocks
}

/// Whether `user` blocks the actor or the object of `activity`.
fn hidden(blocks: &HashMap<&TypedId, HashSet<&TypedId>>, user: &TypedId, a: &Activity) -> bool {
    blocks
        .get(user)
        .is_some_and(|b| b.contains(&a.actor) || b.contains(&a.object))
}

/// The digest head of a set of distinct activities, from scratch.
pub fn digest_of(activities: Vec<&Activity>, spec: &DigestSpec) -> Vec<Group> {
    let mut groups: BTreeMap<String, Vec<&Activity>> = BTreeMap::new();
    for activity in activities {
        groups.entry(spec.key(activity)).or_default().push(activity);
    }
    let mut groups: Vec<Group> = groups
        .into_iter()
        .map(|(key, mut members)| {
            members.sort_by(|a, b| (b.time, &b.id).cmp(&(a.time, &a.id)));
            let mut actors: Vec<TypedId> = Vec::new();
            for a in &members {
                if !actors.contains(&a.actor) {
                    actors.push(a.actor.clone());
                }
            }
            let newest = members[0];
            Group {
                key: key.into(),
                verb: newest.verb.clone(),
                object: newest.object.clone(),
                actor_count: actors.len(),
                actors: actors.into_iter().take(spec.sizes.max_actors).collect(),
                activity_count: members.len(),
                first_time: members.last().expect("non-empty").time,
                last_time: newest.time,
                activity_ids: members
                    .iter()
                    .take(spec.sizes.max_activities)
                    .map(|a| a.id.clone())
                    .collect(),
            }
        })
        .collect();
    groups.sort_by(|a, b| (b.last_time, &a.key).cmp(&(a.last_time, &b.key)));
    groups.truncate(spec.sizes.digest_size);
    groups
}

/// The activities that feeds may show: first copy of each id, not deleted,
/// not older than the newest event time minus retention.
pub fn retained_activities<'a>(events: &'a [Event], config: &FeedConfig) -> Vec<&'a Activity> {
    let newest = events.iter().map(Event::time).max().unwrap_or(Millis::MIN);
    let cutoff = newest.saturating_sub(config.retention.as_millis() as Millis);
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
        .filter(|a| seen.insert(&*a.id))
        .filter(|a| !deleted.contains(&*a.id) && a.time >= cutoff)
        .collect()
}
