//! Digests (SPEC section 3), grouped from scratch.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::wire::Activity;

/// A part of an activity a digest's key may include.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Field {
    /// The verb.
    Verb,
    /// The actor.
    Actor,
    /// The object.
    Object,
    /// The target (empty when absent).
    Target,
}

/// One digest's key and bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigestSettings {
    /// The key's fields, in any order.
    pub fields: Vec<Field>,
    /// The time bucket, in milliseconds (default one day).
    pub window_ms: i64,
    /// Actors a group shows.
    pub max_actors: usize,
    /// Activity ids a group shows.
    pub max_activities: usize,
    /// Groups in a digest head.
    pub digest_size: usize,
}

impl Default for DigestSettings {
    /// The SPEC default: verb + object + UTC day, 15 actors, 15 ids, 100 groups.
    fn default() -> Self {
        DigestSettings {
            fields: vec![Field::Verb, Field::Object],
            window_ms: 24 * 3_600_000,
            max_actors: 15,
            max_activities: 15,
            digest_size: 100,
        }
    }
}

/// One group, as the HTTP API shows it (times in Unix milliseconds here).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// The aggregation key.
    pub key: String,
    /// The newest activity's verb.
    pub verb: String,
    /// The newest activity's object.
    pub object: String,
    /// Distinct actors, newest first, at most `max_actors`.
    pub actors: Vec<String>,
    /// All distinct actors.
    pub actor_count: usize,
    /// All activities.
    pub activity_count: usize,
    /// The oldest activity's time.
    pub first_time: i64,
    /// The newest activity's time.
    pub last_time: i64,
    /// Activity ids newest first, at most `max_activities`.
    pub activity_ids: Vec<String>,
}

impl DigestSettings {
    /// The key of `activity`: each key field (in the order verb, actor,
    /// object, target) percent-encoded where it has `/`, `%`, a space, a
    /// control or a non-ASCII byte, then `/`, then the bucket's start as
    /// RFC 3339 UTC with milliseconds.
    ///
    /// ```
    /// use feedstorm_reference::{parse, DigestSettings, Event};
    ///
    /// let line = r#"{"type":"activity","id":"a","time":1795255200000,"actor":"user:rob","verb":"love it","object":"listing:a/b"}"#;
    /// let Some(Event::Activity(a)) = parse(line) else { unreachable!() };
    /// assert_eq!(DigestSettings::default().key(&a), "love%20it/listing:a%2Fb/2026-11-21T00:00:00.000Z");
    /// ```
    pub fn key(&self, activity: &Activity) -> String {
        let mut fields = self.fields.clone();
        fields.sort();
        fields.dedup();
        let mut key = String::new();
        for field in fields {
            let value = match field {
                Field::Verb => &activity.verb,
                Field::Actor => &activity.actor,
                Field::Object => &activity.object,
                Field::Target => activity.target.as_deref().unwrap_or(""),
            };
            for byte in value.bytes() {
                if !(0x20..0x7f).contains(&byte) || matches!(byte, b'/' | b'%' | b' ') {
                    key.push_str(&format!("%{byte:02X}"));
                } else {
                    key.push(byte as char);
                }
            }
            key.push('/');
        }
        let bucket = activity.time.div_euclid(self.window_ms) * self.window_ms;
        let start = time::OffsetDateTime::from_unix_timestamp_nanos(bucket as i128 * 1_000_000)
            .expect("a time within the calendar");
        let format = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        key.push_str(&start.format(&format).expect("formats"));
        key
    }
}

/// The digest head of distinct activities, from scratch: groups by key,
/// newest group first (ties by key ascending), at most `digest_size`.
pub fn digest_of(activities: Vec<&Activity>, settings: &DigestSettings) -> Vec<Group> {
    let mut groups: BTreeMap<String, Vec<&Activity>> = BTreeMap::new();
    for activity in activities {
        groups
            .entry(settings.key(activity))
            .or_default()
            .push(activity);
    }
    let mut groups: Vec<Group> = groups
        .into_iter()
        .map(|(key, mut members)| {
            members.sort_by(|a, b| (b.time, &b.id).cmp(&(a.time, &a.id)));
            let mut actors: Vec<String> = Vec::new();
            for a in &members {
                if !actors.contains(&a.actor) {
                    actors.push(a.actor.clone());
                }
            }
            let newest = members[0];
            Group {
                key,
                verb: newest.verb.clone(),
                object: newest.object.clone(),
                actor_count: actors.len(),
                actors: actors.into_iter().take(settings.max_actors).collect(),
                activity_count: members.len(),
                first_time: members.last().expect("a group has members").time,
                last_time: newest.time,
                activity_ids: members
                    .iter()
                    .take(settings.max_activities)
                    .map(|a| a.id.clone())
                    .collect(),
            }
        })
        .collect();
    groups.sort_by(|a, b| (b.last_time, &a.key).cmp(&(a.last_time, &b.key)));
    groups.truncate(settings.digest_size);
    groups
}
