//! The judge: what the reference model (the `feedstorm-reference` crate,
//! its own parser and types) says a topology must show, and what the
//! topology shows, read back as an app reads it: over HTTP, or from Redis
//! with a plain client following the documented layout. Nothing here uses
//! the engine's decoder, ordering, keys or store readers.

use std::collections::BTreeMap;

use feedstorm::config::{DigestConfig, FeedConfig, KeyField, NotificationsConfig, TopologyConfig};
pub use feedstorm_reference as reference;
use reference::{DigestSettings, Entry, Event, Group, Settings};
use serde_json::Value;

/// Each user's (typed id's) head, newest first; empty heads left out.
pub type Heads = BTreeMap<String, Vec<Entry>>;

/// Each user's digest head; empty ones left out.
pub type Digests = BTreeMap<String, Vec<Group>>;

/// Everything a topology shows: flat heads, and each digest by name (the
/// notification feed as `notifications`).
#[derive(Debug, PartialEq)]
pub struct Shown {
    pub heads: Heads,
    pub digests: BTreeMap<String, Digests>,
}

/// The lines as the reference reads them (blank and bad lines left out).
pub fn events(lines: &[String]) -> Vec<Event> {
    reference::parse_lines(lines)
}

/// The reference's settings for `feed`.
pub fn settings(feed: &FeedConfig) -> Settings {
    Settings {
        feed_size: feed.feed_size,
        follow_self: feed.follow_self,
        retention_ms: feed.retention.as_millis() as i64,
    }
}

/// The reference's settings for `digest`.
pub fn digest_settings(digest: &DigestConfig) -> DigestSettings {
    DigestSettings {
        fields: digest
            .key
            .iter()
            .map(|f| match f {
                KeyField::Verb => reference::Field::Verb,
                KeyField::Actor => reference::Field::Actor,
                KeyField::Object => reference::Field::Object,
                KeyField::Target => reference::Field::Target,
            })
            .collect(),
        window_ms: digest.window.as_millis() as i64,
        max_actors: digest.max_actors,
        max_activities: digest.max_activities,
        digest_size: digest.digest_size,
    }
}

/// The reference's settings for the notification feed (SPEC section 4:
/// the default key, the feed's own bounds).
pub fn notification_settings(notifications: &NotificationsConfig) -> DigestSettings {
    DigestSettings {
        max_actors: notifications.max_actors,
        max_activities: notifications.max_activities,
        digest_size: notifications.digest_size,
        ..DigestSettings::default()
    }
}

/// The reference's flat heads for `lines`.
pub fn expected_heads(lines: &[String], feed: &FeedConfig) -> Heads {
    reference::feeds(&events(lines), &settings(feed))
}

/// What the reference says `topology` must show after reading `lines`.
pub fn expected(lines: &[String], topology: &TopologyConfig) -> Shown {
    let events = events(lines);
    let feed = settings(&topology.feed);
    let mut digests = BTreeMap::new();
    for digest in &topology.digests {
        let groups = reference::digests(&events, &feed, &digest_settings(digest));
        digests.insert(digest.name.clone(), groups);
    }
    if topology.notifications.enabled {
        let spec = notification_settings(&topology.notifications);
        digests.insert(
            feedstorm::config::NOTIFICATIONS.to_owned(),
            reference::notifications(&events, &feed, &spec),
        );
    }
    Shown {
        heads: reference::feeds(&events, &feed),
        digests,
    }
}

/// Every typed id the lines name: the users whose feeds an app may read.
pub fn typed_ids(lines: &[String]) -> Vec<String> {
    let mut ids = std::collections::BTreeSet::new();
    for event in events(lines) {
        match event {
            Event::Activity(a) => {
                ids.insert(a.actor);
                ids.insert(a.object);
                ids.extend(a.target);
            }
            Event::Relation { user, other, .. } => {
                ids.insert(user);
                ids.insert(other);
            }
            Event::Delete { .. } => {}
        }
    }
    ids.into_iter().collect()
}

/// RFC 3339, as the API and the Redis layout write times, to milliseconds.
pub fn millis(time: &Value) -> i64 {
    let text = time.as_str().expect("a time");
    let parsed = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text}: {e}"));
    (parsed.unix_timestamp_nanos() / 1_000_000) as i64
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

/// A group as the API or Redis shows it (JSON).
pub fn group_of_json(g: &Value) -> Group {
    Group {
        key: g["key"].as_str().expect("key").to_owned(),
        verb: g["verb"].as_str().expect("verb").to_owned(),
        object: g["object"].as_str().expect("object").to_owned(),
        actors: strings(&g["actors"]),
        actor_count: g["actor_count"].as_u64().expect("actor_count") as usize,
        activity_count: g["activity_count"].as_u64().expect("activity_count") as usize,
        first_time: millis(&g["first_time"]),
        last_time: millis(&g["last_time"]),
        activity_ids: strings(&g["activity_ids"]),
    }
}

/// Feed entries as the API shows them.
pub fn entries_of_json(entries: &Value) -> Vec<Entry> {
    entries
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| Entry {
            time: millis(&e["time"]),
            id: e["id"].as_str().expect("id").to_owned(),
        })
        .collect()
}

/// `user` in a URL path.
pub fn path_of(user: &str) -> String {
    user.replace('%', "%25")
        .replace(':', "%3A")
        .replace('/', "%2F")
}

fn get(url: &str) -> Value {
    ureq::get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .into_json()
        .unwrap()
}

/// `user`'s head over HTTP (`GET /feeds/USER`), newest first.
pub fn head_over_http(base: &str, user: &str, limit: usize) -> Vec<Entry> {
    entries_of_json(&get(&format!("{base}/feeds/{}?limit={limit}", path_of(user)))["entries"])
}

/// Reads every feed, digest and notification feed of `users` from the
/// HTTP API at `base`, as an app would.
pub fn read_over_http(base: &str, users: &[String], topology: &TopologyConfig) -> Shown {
    let mut shown = Shown {
        heads: Heads::new(),
        digests: BTreeMap::new(),
    };
    let mut routes: Vec<(String, String)> = topology
        .digests
        .iter()
        .map(|d| (d.name.clone(), format!("digest?name={}&", d.name)))
        .collect();
    if topology.notifications.enabled {
        routes.push((
            feedstorm::config::NOTIFICATIONS.to_owned(),
            "notifications?".to_owned(),
        ));
    }
    for user in users {
        let head = head_over_http(base, user, topology.feed.feed_size);
        if !head.is_empty() {
            shown.heads.insert(user.clone(), head);
        }
        for (name, route) in &routes {
            let url = format!("{base}/feeds/{}/{route}limit=1000", path_of(user));
            let groups: Vec<Group> = get(&url)["groups"]
                .as_array()
                .expect("groups")
                .iter()
                .map(group_of_json)
                .collect();
            let digests = shown.digests.entry(name.clone()).or_default();
            if !groups.is_empty() {
                digests.insert(user.clone(), groups);
            }
        }
    }
    shown
}

/// Panics with the first differences when `actual` is not `expected`.
pub fn assert_same<V: PartialEq + std::fmt::Debug>(
    what: &str,
    expected: &BTreeMap<String, V>,
    actual: &BTreeMap<String, V>,
) {
    if actual == expected {
        return;
    }
    let diff: Vec<_> = expected
        .iter()
        .filter(|(u, v)| actual.get(*u) != Some(v))
        .map(|(u, v)| format!("{u}: expected {v:?}\n   got {:?}", actual.get(u)))
        .chain(
            actual
                .keys()
                .filter(|u| !expected.contains_key(*u))
                .map(|u| format!("{u}: unexpected {:?}", actual[u])),
        )
        .take(3)
        .collect();
    panic!("{what} differ\n{}", diff.join("\n"));
}

/// [`assert_same`] for the heads and every digest.
pub fn assert_shown(what: &str, expected: &Shown, actual: &Shown) {
    assert_same(&format!("{what}: feeds"), &expected.heads, &actual.heads);
    for (name, digests) in &expected.digests {
        let empty = Digests::new();
        let got = actual.digests.get(name).unwrap_or(&empty);
        assert_same(&format!("{what}: digest {name}"), digests, got);
    }
}
