//! `feedstorm produce`: events into a Kafka topic, keyed so that each
//! source's events keep their order (activities by actor, follows and
//! blocks by user, deletes by activity id). Correctness does not depend on it: the topology
//! gives the same feeds in any order.

use std::io::BufRead;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::error::Result;
use crate::event::{decode, encode, Event};
use crate::kafka::Producer;

/// The message key of an event.
///
/// ```
/// use feedstorm::event::decode;
/// use feedstorm::kafka::produce::key_of;
/// let block = br#"{"type":"block","time":1,"user":"user:ann","blocked":"user:bob"}"#;
/// assert_eq!(key_of(&decode(block, 1 << 20).unwrap()), "user:ann");
/// ```
pub fn key_of(event: &Event) -> &str {
    match event {
        Event::Activity(activity) => activity.actor.as_str(),
        Event::Interest { user, .. } => user.as_str(),
        Event::Delete { id, .. } => id,
    }
}

/// What a run produced.
#[derive(Clone, Copy, Debug, Default)]
pub struct Produced {
    /// Messages delivered.
    pub messages: u64,
    /// Lines refused because they exceed `max_event_bytes` (a broker may
    /// accept such messages but consumers never fetch them).
    pub refused: u64,
    /// Seconds from the first message to the last delivery.
    pub seconds: f64,
}

impl Produced {
    /// Messages per second.
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.seconds.max(1e-9)
    }
}

/// Produces `lines` (events in the wire format; lines that do not decode are
/// produced as they are, unkeyed, so that a topic can be given bad events on
/// purpose) to `topic`, with a progress bar on stderr when `progress`.
pub fn produce_lines(
    producer: &Producer,
    topic: &str,
    lines: impl Iterator<Item = std::io::Result<String>>,
    total: Option<u64>,
    max_event_bytes: usize,
    progress: bool,
) -> Result<Produced> {
    let keyed = lines.map(|line| {
        let line = line?;
        let key = decode(line.as_bytes(), max_event_bytes)
            .ok()
            .map(|event| key_of(&event).to_owned());
        Ok((key, line))
    });
    produce_keyed(producer, topic, keyed, total, max_event_bytes, progress)
}

/// Produces `(key, line)` records.
fn produce_keyed(
    producer: &Producer,
    topic: &str,
    records: impl Iterator<Item = std::io::Result<(Option<String>, String)>>,
    total: Option<u64>,
    max_event_bytes: usize,
    progress: bool,
) -> Result<Produced> {
    let bar = match (progress, total) {
        (false, _) => ProgressBar::hidden(),
        (true, Some(total)) => ProgressBar::new(total),
        (true, None) => ProgressBar::new_spinner(),
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} events {per_sec} {eta}")
            .expect("template"),
    );
    let started = Instant::now();
    let mut produced = Produced::default();
    let mut queued = 0u64;
    for (number, record) in records.enumerate() {
        let (key, line) = record?;
        if line.trim().is_empty() {
            continue;
        }
        if line.len() > max_event_bytes {
            tracing::warn!(
                line = number + 1,
                bytes = line.len(),
                max_event_bytes,
                "not produced: larger than max_event_bytes"
            );
            produced.refused += 1;
            continue;
        }
        producer.send(topic, key.as_deref(), line.as_bytes(), None)?;
        queued += 1;
        if queued.is_multiple_of(1024) {
            producer.poll();
            bar.set_position(producer.delivered());
        }
    }
    producer.flush(Duration::from_secs(60))?;
    bar.set_position(producer.delivered());
    bar.finish_and_clear();
    produced.messages = queued;
    produced.seconds = started.elapsed().as_secs_f64();
    Ok(produced)
}

/// Produces the lines of a JSONL file.
pub fn produce_file(
    producer: &Producer,
    topic: &str,
    path: &std::path::Path,
    max_event_bytes: usize,
    progress: bool,
) -> Result<Produced> {
    let file = std::fs::File::open(path)?;
    let total = std::io::BufReader::new(std::fs::File::open(path)?)
        .lines()
        .count() as u64;
    let lines = std::io::BufReader::new(file).lines();
    produce_lines(
        producer,
        topic,
        lines,
        Some(total),
        max_event_bytes,
        progress,
    )
}

/// Produces `events` (e.g. the generator's workload).
pub fn produce_events(
    producer: &Producer,
    topic: &str,
    events: impl Iterator<Item = Event>,
    total: Option<u64>,
    max_event_bytes: usize,
    progress: bool,
) -> Result<Produced> {
    let keyed = events.map(|event| Ok((Some(key_of(&event).to_owned()), encode(&event))));
    produce_keyed(producer, topic, keyed, total, max_event_bytes, progress)
}
