//! Spouts: where events come from. A spout is polled by its worker's driver
//! loop (see [`crate::runtime`]), which puts what it returns into the
//! dataflow's inputs in epochs. Each worker runs its own instance, which reads
//! only that worker's share of the source, so no record is read twice.

pub mod file;
pub mod generator;
#[cfg(feature = "kafka")]
pub mod kafka;

use serde::Serialize;

use crate::error::{DecodeError, Result};
use crate::event::Event;

pub use file::FileSpout;
pub use generator::Generator;

/// Where a record came from; dead letters carry it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    /// A line of a JSONL file (1-based).
    Line {
        /// The file.
        file: String,
        /// Line number, counting from 1.
        line: u64,
    },
    /// An event of the generator.
    Generated {
        /// Index in the generated sequence.
        index: u64,
    },
    /// A Kafka message.
    Kafka {
        /// Its topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// Its offset in the partition.
        offset: i64,
    },
}

/// A record that did not decode, with everything needed to find and replay it.
#[derive(Clone, Debug)]
pub struct BadEvent {
    /// Where it came from.
    pub position: Position,
    /// Why it was rejected.
    pub error: DecodeError,
    /// The record as read (lossy UTF-8).
    pub raw: String,
}

/// What a spout has to say after a poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpoutState {
    /// More records are available right now.
    Ready,
    /// Nothing available now; more may come later (a followed file, a rate limit).
    Idle,
    /// The source is finished; this spout will never produce again.
    Exhausted,
}

/// A source of events, polled by its worker.
pub trait Spout {
    /// A name for logs.
    fn name(&self) -> &str;
    /// Appends at most `max` records (good events or bad ones) to `out`.
    fn poll(&mut self, max: usize, out: &mut Vec<Result<Event, BadEvent>>) -> Result<SpoutState>;
    /// The records of the polls since the last call entered the dataflow at
    /// `epoch` (bad ones are already in the dead-letter destination).
    fn sent(&mut self, _epoch: u64) {}
    /// Every epoch up to and including `epoch` is fully processed and
    /// written: the spout may acknowledge its records to the source.
    fn acked(&mut self, _epoch: u64) {}
}
