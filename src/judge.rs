//! The engine's settings and outputs in the plain types of the reference
//! model (the separate `feedstorm-reference` crate, which shares no code
//! with the engine), for the bench's checks and the bolts' unit tests.
#![cfg_attr(not(feature = "bench"), allow(dead_code))]

use feedstorm_reference as reference;

use crate::config::{DigestConfig, FeedConfig, KeyField, NotificationsConfig};
use crate::digest::Group;
use crate::event::{encode, Event};
use crate::feed::FeedKey;

/// The reference's feed settings for `feed`.
pub fn settings(feed: &FeedConfig) -> reference::Settings {
    reference::Settings {
        feed_size: feed.feed_size,
        follow_self: feed.follow_self,
        retention_ms: i64::try_from(feed.retention.as_millis()).unwrap_or(i64::MAX),
    }
}

/// The reference's digest settings for `digest`.
pub fn digest_settings(digest: &DigestConfig) -> reference::DigestSettings {
    let sizes = digest.sizes();
    reference::DigestSettings {
        fields: digest
            .key
            .iter()
            .map(|field| match field {
                KeyField::Verb => reference::Field::Verb,
                KeyField::Actor => reference::Field::Actor,
                KeyField::Object => reference::Field::Object,
                KeyField::Target => reference::Field::Target,
            })
            .collect(),
        window_ms: i64::try_from(digest.window.as_millis()).unwrap_or(i64::MAX),
        max_actors: sizes.max_actors,
        max_activities: sizes.max_activities,
        digest_size: sizes.digest_size,
    }
}

/// `events` as the reference reads them: written on the wire and parsed
/// by the reference's own parser.
pub fn events(events: &[Event]) -> Vec<reference::Event> {
    events
        .iter()
        .map(|event| reference::parse(&encode(event)).expect("the engine writes what it reads"))
        .collect()
}

/// The reference's settings for the notification feed: the default key
/// with `notifications`' bounds.
pub fn notification_settings(notifications: &NotificationsConfig) -> reference::DigestSettings {
    let sizes = notifications.sizes();
    reference::DigestSettings {
        max_actors: sizes.max_actors,
        max_activities: sizes.max_activities,
        digest_size: sizes.digest_size,
        ..digest_settings(&DigestConfig::default())
    }
}

/// An activity of the engine's, as the reference's.
#[cfg(test)]
pub fn activity(activity: &crate::event::Activity) -> reference::Activity {
    reference::Activity {
        id: activity.id.to_string(),
        time: activity.time,
        actor: activity.actor.to_string(),
        verb: activity.verb.to_string(),
        object: activity.object.to_string(),
        target: activity.target.as_ref().map(|t| t.to_string()),
    }
}

/// A head read from the engine, as reference entries.
pub fn entries(keys: &[FeedKey]) -> Vec<reference::Entry> {
    keys.iter()
        .map(|k| reference::Entry {
            time: k.time,
            id: k.id.to_string(),
        })
        .collect()
}

/// A group read from the engine, as the reference's.
pub fn group(group: &Group) -> reference::Group {
    reference::Group {
        key: group.key.to_string(),
        verb: group.verb.to_string(),
        object: group.object.to_string(),
        actors: group.actors.iter().map(|a| a.to_string()).collect(),
        actor_count: group.actor_count,
        activity_count: group.activity_count,
        first_time: group.first_time,
        last_time: group.last_time,
        activity_ids: group.activity_ids.iter().map(|id| id.to_string()).collect(),
    }
}
