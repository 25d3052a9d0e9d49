//! The wire format (SPEC section 1): one JSON object per Kafka message or JSONL line.
//!
//! ```
//! use feedstorm::event::{decode, Event};
//!
//! let line = br#"{"type":"activity","id":"a1","time":"2026-11-21T11:00:00+01:00",
//!                 "actor":"user:rob","verb":"love","object":"listing:guy-with-bear"}"#;
//! let Event::Activity(a) = decode(line, 1 << 20).unwrap() else { panic!() };
//! assert_eq!(a.time, 1_795_255_200_000); // 10:00 UTC, in milliseconds
//! assert_eq!(a.actor.as_str(), "user:rob");
//! assert!(decode(br#"{"type":"poke"}"#, 1 << 20).is_err());
//! ```

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use arcstr::ArcStr;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::DecodeError;

/// Milliseconds since the Unix epoch, the unit of every event time.
pub type Millis = i64;

/// A typed id, `kind:id` with a non-empty kind and id, such as `user:rob`.
/// One pointer wide (the length lives beside the text): an activity holds
/// three, and every interest two.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TypedId(ArcStr);

impl TypedId {
    /// Checks the `kind:id` shape.
    ///
    /// ```
    /// use feedstorm::event::TypedId;
    /// assert!(TypedId::parse("listing:guy-with-bear").is_some());
    /// assert!(TypedId::parse("rob").is_none());
    /// assert!(TypedId::parse(":rob").is_none());
    /// ```
    pub fn parse(s: &str) -> Option<TypedId> {
        match s.split_once(':') {
            Some((kind, id)) if !kind.is_empty() && !id.is_empty() => {
                Some(TypedId(ArcStr::from(s)))
            }
            _ => None,
        }
    }

    /// Whether another handle shares this id's text (so dropping this one
    /// would free nothing).
    pub fn is_shared(&self) -> bool {
        ArcStr::strong_count(&self.0).is_none_or(|count| count > 1)
    }

    /// The id as written, `kind:id`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Where this handle's text is: equal for handles that share it.
    pub fn address(&self) -> usize {
        self.0.as_ptr() as usize
    }
}

impl fmt::Debug for TypedId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for TypedId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Something that happened: `actor` did `verb` to `object` (on `target`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Activity {
    /// Unique id; a second activity with the same id is a duplicate.
    pub id: Arc<str>,
    /// When it happened.
    pub time: Millis,
    /// Who did it.
    pub actor: TypedId,
    /// What they did (`love`, `post`, ...): shared, as a topology sees few verbs.
    pub verb: ArcStr,
    /// What they did it to.
    pub object: TypedId,
    /// Optional target (whose listing, which board).
    pub target: Option<TypedId>,
    /// Optional JSON object, kept verbatim as its source text.
    pub extra: Option<Box<str>>,
}

// Every retained story is one in an `Arc`: at most 72 bytes keeps that
// allocation in a 96-byte malloc chunk (88 bytes took 112).
const _: () = assert!(std::mem::size_of::<Activity>() <= 72);

impl Activity {
    /// The typed ids this activity is a story about: actor, object and target,
    /// each once.
    pub fn story_ids(&self) -> impl Iterator<Item = &TypedId> {
        let object = (self.object != self.actor).then_some(&self.object);
        let target = self
            .target
            .as_ref()
            .filter(|t| **t != self.actor && **t != self.object);
        std::iter::once(&self.actor).chain(object).chain(target)
    }
}

/// What an interest event does to its (user, typed id) pair: follow and
/// unfollow start and end an interest, block and unblock start and end a
/// block (SPEC section 2: a block hides whatever names the blocked id as
/// actor or object, a mute when it is a thing). Each [`Relation`] resolves
/// last-writer-wins on its own; on equal times the larger op wins (unfollow,
/// block), so the derived order is part of the contract. New variants go at
/// the end: checkpoints store ops by their index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum InterestOp {
    /// `follow`
    Follow,
    /// `unfollow`
    Unfollow,
    /// `unblock`
    Unblock,
    /// `block`
    Block,
}

/// The two relations a user has with a typed id, each resolved on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Relation {
    /// The user follows it: its stories reach the user's feed.
    Follows,
    /// The user blocks (or mutes) it: stories with it as actor or object never do.
    Blocks,
}

impl InterestOp {
    /// The relation this op changes.
    pub fn relation(self) -> Relation {
        match self {
            InterestOp::Follow | InterestOp::Unfollow => Relation::Follows,
            InterestOp::Unblock | InterestOp::Block => Relation::Blocks,
        }
    }

    /// Whether the relation holds after this op (follow, block).
    pub fn holds(self) -> bool {
        matches!(self, InterestOp::Follow | InterestOp::Block)
    }

    /// The op of an event `type` on the wire, if it is one.
    pub fn from_wire_name(kind: &str) -> Option<InterestOp> {
        [
            InterestOp::Follow,
            InterestOp::Unfollow,
            InterestOp::Unblock,
            InterestOp::Block,
        ]
        .into_iter()
        .find(|op| op.wire_name() == kind)
    }

    /// The event `type` on the wire.
    pub fn wire_name(self) -> &'static str {
        match self {
            InterestOp::Follow => "follow",
            InterestOp::Unfollow => "unfollow",
            InterestOp::Unblock => "unblock",
            InterestOp::Block => "block",
        }
    }
}

/// A decoded event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// An activity (story source).
    Activity(Activity),
    /// A follow, unfollow, block or unblock.
    Interest {
        /// The event's time (milliseconds since the Unix epoch): the later
        /// of a pair's follow and unfollow (or block and unblock) wins.
        time: Millis,
        /// The user whose interest (or block) changes.
        user: TypedId,
        /// Of whom or what: the `interest` of a follow or unfollow, the
        /// `blocked` of a block or unblock.
        interest: TypedId,
        /// Follow, unfollow, block or unblock.
        op: InterestOp,
    },
    /// The activity `id` is withdrawn everywhere.
    Delete {
        /// The event's time (milliseconds since the Unix epoch).
        time: Millis,
        /// The activity.
        id: String,
    },
}

impl Event {
    /// About the memory this event holds while in flight (its strings and
    /// a fixed overhead), for the in-flight byte budget.
    pub fn approx_bytes(&self) -> u64 {
        let strings = match self {
            Event::Activity(a) => {
                a.id.len()
                    + a.actor.as_str().len()
                    + a.verb.len()
                    + a.object.as_str().len()
                    + a.target.as_ref().map_or(0, |t| t.as_str().len())
                    + a.extra.as_ref().map_or(0, |e| e.len())
            }
            Event::Interest { user, interest, .. } => user.as_str().len() + interest.as_str().len(),
            Event::Delete { id, .. } => id.len(),
        };
        (strings + 96) as u64
    }

    /// The event's own `time`.
    pub fn time(&self) -> Millis {
        match self {
            Event::Activity(a) => a.time,
            Event::Interest { time, .. } | Event::Delete { time, .. } => *time,
        }
    }
}

/// The JSON shape, borrowed where it can be; checked into [`Event`] by [`decode`].
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    time: Option<&'a RawValue>,
    #[serde(borrow)]
    actor: Option<Cow<'a, str>>,
    #[serde(borrow)]
    verb: Option<Cow<'a, str>>,
    #[serde(borrow)]
    object: Option<Cow<'a, str>>,
    #[serde(borrow)]
    target: Option<Cow<'a, str>>,
    #[serde(borrow)]
    extra: Option<&'a RawValue>,
    #[serde(borrow)]
    user: Option<Cow<'a, str>>,
    #[serde(borrow)]
    interest: Option<Cow<'a, str>>,
    #[serde(borrow)]
    blocked: Option<Cow<'a, str>>,
}

fn missing(field: &'static str) -> DecodeError {
    DecodeError::Field {
        field,
        reason: "missing".into(),
    }
}

fn required_id(field: &'static str, value: Option<Cow<'_, str>>) -> Result<String, DecodeError> {
    match value {
        None => Err(missing(field)),
        Some(v) if v.is_empty() => Err(DecodeError::Field {
            field,
            reason: "empty".into(),
        }),
        Some(v) => Ok(v.into_owned()),
    }
}

fn typed_id(
    field: &'static str,
    value: Option<Cow<'_, str>>,
) -> Result<Option<TypedId>, DecodeError> {
    value
        .map(|v| {
            TypedId::parse(&v).ok_or_else(|| DecodeError::Field {
                field,
                reason: format!("{v:?} is not a typed id kind:id"),
            })
        })
        .transpose()
}

fn required_typed_id(
    field: &'static str,
    value: Option<Cow<'_, str>>,
) -> Result<TypedId, DecodeError> {
    typed_id(field, value)?.ok_or_else(|| missing(field))
}

/// Parses an event time: RFC 3339 with any offset (sub-second digits truncated
/// to the millisecond) or an integer of milliseconds since the epoch.
///
/// ```
/// use feedstorm::event::parse_time;
/// assert_eq!(parse_time("1700000000123"), Some(1_700_000_000_123));
/// assert_eq!(parse_time("\"1970-01-01T00:00:01.9999Z\""), Some(1_999));
/// assert_eq!(parse_time("\"1970-01-01T01:00:00+01:00\""), Some(0));
/// assert_eq!(parse_time("1.5"), None);
/// ```
pub fn parse_time(raw_json: &str) -> Option<Millis> {
    if raw_json.starts_with('"') {
        let text: Cow<'_, str> = serde_json::from_str(raw_json).ok()?;
        let parsed =
            time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
                .ok()?;
        i64::try_from(parsed.unix_timestamp_nanos().div_euclid(1_000_000)).ok()
    } else {
        raw_json.parse::<i64>().ok()
    }
}

/// Now, in Unix milliseconds (the wall clock that [`decode_read`] checks
/// times against, and that checkpoints and `/status` stamp).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Formats milliseconds as RFC 3339 UTC with milliseconds, as the HTTP API answers.
///
/// ```
/// assert_eq!(feedstorm::event::format_time(1_795_255_200_000), "2026-11-21T10:00:00.000Z");
/// ```
pub fn format_time(millis: Millis) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(millis as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| millis.to_string())
}

/// What a spout accepts beyond the wire format: size, how far ahead of the
/// wall clock a time may be (SPEC section 1), and how deeply `extra` may nest
/// (so that whatever is accepted can be served back).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// A message larger than this is bad.
    pub max_event_bytes: usize,
    /// A time more than this many milliseconds after the wall clock is bad.
    pub max_future_ms: i64,
    /// `extra` nested deeper than this (objects and arrays) is bad.
    pub max_extra_depth: usize,
}

/// The default nesting bound of `extra`.
pub const MAX_EXTRA_DEPTH: usize = 64;

impl Limits {
    /// The SPEC defaults with `max_event_bytes`: one day ahead at most,
    /// `extra` at most [`MAX_EXTRA_DEPTH`] deep.
    pub fn with_max_bytes(max_event_bytes: usize) -> Limits {
        Limits {
            max_event_bytes,
            max_future_ms: 24 * 3600 * 1000,
            max_extra_depth: MAX_EXTRA_DEPTH,
        }
    }
}

/// Decodes a message as a spout reads it at `now_ms` (wall clock, Unix
/// milliseconds): [`decode`], then the checks of `limits`. A time too far
/// ahead would otherwise move the retention horizon and forget every feed.
///
/// ```
/// use feedstorm::event::{decode_read, Limits};
/// let limits = Limits::with_max_bytes(1 << 20);
/// let now = 1_795_219_200_000;
/// let at = |time: i64| format!(
///     r#"{{"type":"follow","time":{time},"user":"user:a","interest":"user:b"}}"#);
/// assert!(decode_read(at(now + 3_600_000).as_bytes(), &limits, now).is_ok());
/// assert!(decode_read(at(i64::MAX).as_bytes(), &limits, now).is_err());
/// let deep = format!(
///     r#"{{"type":"activity","id":"a","time":{now},"actor":"user:a","verb":"v","object":"x:y","extra":{}1{}}}"#,
///     r#"{"k":"#.repeat(65), "}".repeat(65));
/// assert!(decode_read(deep.as_bytes(), &limits, now).is_err());
/// ```
pub fn decode_read(bytes: &[u8], limits: &Limits, now_ms: i64) -> Result<Event, DecodeError> {
    let event = decode(bytes, limits.max_event_bytes)?;
    let time = event.time();
    if time > now_ms.saturating_add(limits.max_future_ms) {
        return Err(DecodeError::Field {
            field: "time",
            reason: format!(
                "{} is more than max_future ({} s) ahead of the clock ({})",
                format_time(time),
                limits.max_future_ms / 1000,
                format_time(now_ms)
            ),
        });
    }
    if let Event::Activity(activity) = &event {
        if let Some(extra) = &activity.extra {
            let depth = nesting_depth(extra);
            if depth > limits.max_extra_depth {
                return Err(DecodeError::Field {
                    field: "extra",
                    reason: format!("nested {depth} deep, more than {}", limits.max_extra_depth),
                });
            }
        }
    }
    Ok(event)
}

/// How deeply objects and arrays nest in valid JSON text.
fn nesting_depth(json: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0, false, false);
    for byte in json.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Decodes one message. Anything that is not a valid event per SPEC section 1
/// is an error that says what is wrong; unknown fields are ignored and `null`
/// optional fields are absent.
pub fn decode(bytes: &[u8], max_event_bytes: usize) -> Result<Event, DecodeError> {
    if bytes.len() > max_event_bytes {
        return Err(DecodeError::Oversize {
            len: bytes.len(),
            max: max_event_bytes,
        });
    }
    let wire: Wire<'_> = serde_json::from_slice(bytes).map_err(|e| {
        if e.is_data() {
            // A syntactically fine object with an ill-typed field: serde names the type.
            DecodeError::Field {
                field: "(one of the fields)",
                reason: e.to_string(),
            }
        } else {
            DecodeError::NotJson(e.to_string())
        }
    })?;
    let kind = wire.kind.clone().ok_or_else(|| missing("type"))?;
    let time = wire_time(wire.time);
    match kind.as_ref() {
        "activity" => activity(wire, time),
        "delete" => Ok(Event::Delete {
            time: time?,
            id: required_id("id", wire.id)?,
        }),
        other => match InterestOp::from_wire_name(other) {
            Some(op) => {
                let (field, value) = match op.relation() {
                    Relation::Follows => ("interest", wire.interest),
                    Relation::Blocks => ("blocked", wire.blocked),
                };
                Ok(Event::Interest {
                    time: time?,
                    user: required_typed_id("user", wire.user)?,
                    interest: required_typed_id(field, value)?,
                    op,
                })
            }
            None => Err(DecodeError::UnknownType(other.to_owned())),
        },
    }
}

/// The `time` field: RFC 3339 or integer milliseconds, not absent or null.
fn wire_time(raw: Option<&RawValue>) -> Result<Millis, DecodeError> {
    let raw = raw.ok_or_else(|| missing("time"))?;
    if raw.get() == "null" {
        return Err(missing("time"));
    }
    parse_time(raw.get()).ok_or_else(|| DecodeError::Field {
        field: "time",
        reason: format!("{} is neither RFC 3339 nor integer milliseconds", raw.get()),
    })
}

/// An activity's fields, checked in wire order.
fn activity(wire: Wire<'_>, time: Result<Millis, DecodeError>) -> Result<Event, DecodeError> {
    let extra = match wire.extra {
        Some(raw) if raw.get() == "null" => None,
        Some(raw) if raw.get().starts_with('{') => Some(raw.get().into()),
        Some(_) => {
            return Err(DecodeError::Field {
                field: "extra",
                reason: "not a JSON object".into(),
            })
        }
        None => None,
    };
    Ok(Event::Activity(Activity {
        id: required_id("id", wire.id)?.into(),
        time: time?,
        actor: required_typed_id("actor", wire.actor)?,
        verb: required_id("verb", wire.verb)?.into(),
        object: required_typed_id("object", wire.object)?,
        target: typed_id("target", wire.target)?,
        extra,
    }))
}

/// Encodes an event in the wire format (the generator and `produce` use it).
pub fn encode(event: &Event) -> String {
    use serde_json::json;
    let value = match event {
        Event::Activity(a) => {
            let mut v = json!({
                "type": "activity", "id": a.id, "time": a.time, "actor": a.actor,
                "verb": a.verb, "object": a.object,
            });
            if let Some(t) = &a.target {
                v["target"] = json!(t);
            }
            if let Some(extra) = &a.extra {
                v["extra"] = serde_json::from_str(extra).unwrap_or(serde_json::Value::Null);
            }
            v
        }
        Event::Interest {
            time,
            user,
            interest,
            op,
        } => {
            let field = match op.relation() {
                Relation::Follows => "interest",
                Relation::Blocks => "blocked",
            };
            let mut v = json!({"type": op.wire_name(), "time": time, "user": user});
            v[field] = json!(interest);
            v
        }
        Event::Delete { time, id } => json!({"type": "delete", "time": time, "id": id}),
    };
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    #[test]
    fn follow_with_null_optional_and_unknown_fields() {
        let e = decode(
            br#"{"type":"follow","time":5,"user":"user:a","interest":"user:b","target":null,"x":[1]}"#,
            MAX,
        )
        .unwrap();
        assert_eq!(
            e,
            Event::Interest {
                time: 5,
                user: TypedId::parse("user:a").unwrap(),
                interest: TypedId::parse("user:b").unwrap(),
                op: InterestOp::Follow
            }
        );
    }

    #[test]
    fn block_and_unblock_round_trip() {
        for (line, op) in [
            (
                &br#"{"type":"block","time":5,"user":"user:a","blocked":"listing:b"}"#[..],
                InterestOp::Block,
            ),
            (
                &br#"{"type":"unblock","time":5,"user":"user:a","blocked":"listing:b"}"#[..],
                InterestOp::Unblock,
            ),
        ] {
            let event = decode(line, MAX).unwrap();
            let expected = Event::Interest {
                time: 5,
                user: TypedId::parse("user:a").unwrap(),
                interest: TypedId::parse("listing:b").unwrap(),
                op,
            };
            assert_eq!(event, expected);
            assert_eq!(decode(encode(&event).as_bytes(), MAX).unwrap(), expected);
        }
        let no_blocked = br#"{"type":"block","time":5,"user":"user:a","interest":"user:b"}"#;
        assert!(decode(no_blocked, MAX).is_err());
        assert!(InterestOp::Block > InterestOp::Unblock, "block wins ties");
        assert!(
            InterestOp::Unfollow > InterestOp::Follow,
            "unfollow wins ties"
        );
    }

    #[test]
    fn rejects_each_kind_of_bad_event() {
        let bad: &[&[u8]] = &[
            b"not json",
            b"[1,2]",
            br#"{"type":"poke","time":1}"#,
            br#"{"type":"delete","time":1}"#,
            br#"{"type":"delete","time":"yesterday","id":"a"}"#,
            br#"{"type":"delete","time":1.5,"id":"a"}"#,
            br#"{"type":"delete","time":null,"id":"a"}"#,
            br#"{"type":"delete","time":1,"id":7}"#,
            br#"{"type":"delete","time":1,"id":""}"#,
            br#"{"type":"follow","time":1,"user":"rob","interest":"user:b"}"#,
            br#"{"type":"activity","id":"a","time":1,"actor":"user:a","verb":"v","object":"x:y","extra":[1]}"#,
        ];
        for line in bad {
            assert!(
                decode(line, MAX).is_err(),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        let line = br#"{"type":"delete","time":1,"id":"a"}"#;
        assert!(matches!(
            decode(line, 10),
            Err(DecodeError::Oversize { .. })
        ));
    }

    #[test]
    fn extra_is_kept_verbatim_and_story_ids_are_distinct() {
        let line = br#"{"type":"activity","id":"a","time":1,"actor":"user:a","verb":"v","object":"user:a","target":"x:t","extra":{"k": [1, 2]}}"#;
        let Event::Activity(a) = decode(line, MAX).unwrap() else {
            panic!()
        };
        assert_eq!(a.extra.as_deref(), Some(r#"{"k": [1, 2]}"#));
        let ids: Vec<_> = a.story_ids().map(|t| t.as_str()).collect();
        assert_eq!(ids, vec!["user:a", "x:t"]);
        assert_eq!(
            decode(encode(&Event::Activity(a.clone())).as_bytes(), MAX)
                .unwrap()
                .time(),
            1
        );
    }

    #[test]
    fn times_with_offsets_and_negative_fractions() {
        assert_eq!(
            parse_time("\"2026-11-21T23:30:00-02:00\""),
            parse_time("\"2026-11-22T01:30:00Z\"")
        );
        assert_eq!(parse_time("\"1969-12-31T23:59:59.9999Z\""), Some(-1));
        assert_eq!(format_time(-1), "1969-12-31T23:59:59.999Z");
    }
}
