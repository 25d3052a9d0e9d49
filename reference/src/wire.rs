//! The wire format of SPEC section 1, read with `serde_json::Value` and
//! nothing of the engine's decoder.

use serde_json::Value;

/// A relation between a user and a typed id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Relation {
    /// `follow` / `unfollow`.
    Follow,
    /// `block` / `unblock`.
    Block,
}

/// An activity: something happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Activity {
    /// Its id.
    pub id: String,
    /// Unix milliseconds.
    pub time: i64,
    /// Who did it (a typed id).
    pub actor: String,
    /// What was done.
    pub verb: String,
    /// To what (a typed id).
    pub object: String,
    /// For whom, if anyone (a typed id).
    pub target: Option<String>,
}

/// One event of the wire format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `activity`.
    Activity(Activity),
    /// `follow`, `unfollow`, `block` or `unblock`.
    Relation {
        /// Which relation.
        relation: Relation,
        /// Whether it holds after the event (follow, block) or ends (unfollow, unblock).
        holds: bool,
        /// Unix milliseconds.
        time: i64,
        /// The user.
        user: String,
        /// The `interest` or the `blocked` typed id.
        other: String,
    },
    /// `delete`.
    Delete {
        /// Unix milliseconds.
        time: i64,
        /// The withdrawn activity.
        id: String,
    },
}

impl Event {
    /// The event's time, in Unix milliseconds.
    pub fn time(&self) -> i64 {
        match self {
            Event::Activity(a) => a.time,
            Event::Relation { time, .. } | Event::Delete { time, .. } => *time,
        }
    }
}

/// Parses one line of the wire format; `None` for a blank line or an event
/// the SPEC calls bad (not an object, unknown type, a missing or ill-typed
/// field).
///
/// ```
/// use feedstorm_reference::{parse, Event};
///
/// let line = r#"{"type":"delete","time":"2026-11-21T10:00:00.123987+01:00","id":"a"}"#;
/// assert_eq!(parse(line), Some(Event::Delete { time: 1_795_251_600_123, id: "a".into() }));
/// assert_eq!(parse(r#"{"type":"delete","time":1,"id":""}"#), None);
/// ```
pub fn parse(line: &str) -> Option<Event> {
    let value: Value = serde_json::from_str(line).ok()?;
    let time = millis(value.get("time")?)?;
    let relation = |relation, holds, other: &str| {
        Some(Event::Relation {
            relation,
            holds,
            time,
            user: typed(&value, "user")?,
            other: typed(&value, other)?,
        })
    };
    match value.get("type")?.as_str()? {
        "activity" => {
            if value
                .get("extra")
                .is_some_and(|e| !e.is_null() && !e.is_object())
            {
                return None;
            }
            let target = match value.get("target") {
                None | Some(Value::Null) => None,
                Some(_) => Some(typed(&value, "target")?),
            };
            Some(Event::Activity(Activity {
                id: text(&value, "id")?,
                time,
                actor: typed(&value, "actor")?,
                verb: text(&value, "verb")?,
                object: typed(&value, "object")?,
                target,
            }))
        }
        "follow" => relation(Relation::Follow, true, "interest"),
        "unfollow" => relation(Relation::Follow, false, "interest"),
        "block" => relation(Relation::Block, true, "blocked"),
        "unblock" => relation(Relation::Block, false, "blocked"),
        "delete" => Some(Event::Delete {
            time,
            id: text(&value, "id")?,
        }),
        _ => None,
    }
}

/// Parses every line, leaving out blank and bad ones.
pub fn parse_lines<S: AsRef<str>>(lines: impl IntoIterator<Item = S>) -> Vec<Event> {
    lines
        .into_iter()
        .filter_map(|l| parse(l.as_ref()))
        .collect()
}

/// A non-empty string field.
fn text(value: &Value, field: &str) -> Option<String> {
    let text = value.get(field)?.as_str()?;
    (!text.is_empty()).then(|| text.to_owned())
}

/// A typed id: `kind:id`, both parts non-empty.
fn typed(value: &Value, field: &str) -> Option<String> {
    let text = text(value, field)?;
    let (kind, id) = text.split_once(':')?;
    (!kind.is_empty() && !id.is_empty()).then_some(text)
}

/// An integer of milliseconds, or RFC 3339 with any offset, truncated to
/// the millisecond.
fn millis(time: &Value) -> Option<i64> {
    match time {
        Value::Number(n) => n.as_i64(),
        Value::String(text) => {
            let parsed =
                time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .ok()?;
            i64::try_from(parsed.unix_timestamp_nanos().div_euclid(1_000_000)).ok()
        }
        _ => None,
    }
}
