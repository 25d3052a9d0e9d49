//! Spouts: where events come from. A spout is polled by its worker's driver
//! loop (see [`crate::runtime`]), which puts what it returns into the
//! dataflow's inputs in epochs. Each worker runs its own instance, which reads
//! only that worker's share of the source, so no record is read twice.
//!
//! | spout | reads |
//! |---|---|
//! | [`file`](mod@file) | a JSONL file, each worker its share of the lines, optionally followed |
//! | [`generator`] | a seeded synthetic workload (power-law graph, skew, late events) |
//! | `crate::kafka::spout` | (feature `kafka`) assigned Kafka partitions, offsets acked once durable |

pub mod file;
pub mod generator;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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

/// How far a spout has read, as a checkpoint records it: every record
/// before it has entered the dataflow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourcePosition {
    /// Kafka: the next offset to read of each partition, keyed
    /// `topic/partition`.
    Kafka {
        /// Next offset per partition.
        next: BTreeMap<String, i64>,
    },
    /// A sequence shared out in turns (file lines, generated events):
    /// record `i` (from 0) falls to worker `i % peers`, and every record of
    /// worker `w`'s turn before `next[w]` has been read.
    Turns {
        /// Workers the sequence was shared among.
        peers: u64,
        /// Per worker, the index after the last record of its turn read.
        next: BTreeMap<u64, u64>,
        /// Files: per worker, a line at or before `next[w]` and the byte
        /// it starts at, so that a resume seeks past what every worker
        /// read instead of reading the file again from its start.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        starts: BTreeMap<u64, (u64, u64)>,
    },
}

impl SourcePosition {
    /// The position of a sequence's worker `index` of `peers`.
    pub fn turn(index: usize, peers: usize, next: u64) -> SourcePosition {
        SourcePosition::Turns {
            peers: peers as u64,
            next: BTreeMap::from([(index as u64, next)]),
            starts: BTreeMap::new(),
        }
    }

    /// The position of a file's worker `index` of `peers`; `start`: a line
    /// at or before `next` and the byte it starts at.
    pub fn file_turn(index: usize, peers: usize, next: u64, start: (u64, u64)) -> SourcePosition {
        SourcePosition::Turns {
            peers: peers as u64,
            next: BTreeMap::from([(index as u64, next)]),
            starts: BTreeMap::from([(index as u64, start)]),
        }
    }

    /// For a file: a record every record before which was read, and the
    /// byte it starts at (`(0, 0)` when some worker's share or start is
    /// missing).
    ///
    /// ```
    /// use feedstorm::spout::SourcePosition;
    /// let mut at = SourcePosition::file_turn(0, 2, 6, (6, 60));
    /// at.merge(&SourcePosition::file_turn(1, 2, 3, (3, 30))).unwrap();
    /// assert_eq!(at.read_before(), (3, 30));
    /// // Worker 1's share is missing: it read nothing.
    /// assert_eq!(SourcePosition::file_turn(0, 2, 6, (6, 60)).read_before(), (0, 0));
    /// ```
    pub fn read_before(&self) -> (u64, u64) {
        let SourcePosition::Turns { peers, starts, .. } = self else {
            return (0, 0);
        };
        // Each start line is at or before its worker's `next`, so every
        // line before the earliest of them was read by the worker it fell to.
        (0..*peers)
            .map(|w| starts.get(&w).copied())
            .collect::<Option<Vec<_>>>()
            .and_then(|starts| starts.into_iter().min())
            .unwrap_or((0, 0))
    }

    /// What this position covers: Kafka's `topic/partition`s, or the
    /// record turns (`turn W of P`) of a sequence.
    pub fn parts(&self) -> Vec<String> {
        match self {
            SourcePosition::Kafka { next } => next.keys().cloned().collect(),
            SourcePosition::Turns { peers, next, .. } => next
                .keys()
                .map(|w| format!("turn {w} of {peers}"))
                .collect(),
        }
    }

    /// Adds the position of another worker's share of the same source.
    pub fn merge(&mut self, other: &SourcePosition) -> Result<()> {
        match (self, other) {
            (SourcePosition::Kafka { next }, SourcePosition::Kafka { next: more }) => {
                next.extend(more.iter().map(|(k, v)| (k.clone(), *v)));
                Ok(())
            }
            (
                SourcePosition::Turns {
                    peers,
                    next,
                    starts,
                },
                SourcePosition::Turns {
                    peers: theirs,
                    next: more,
                    starts: more_starts,
                },
            ) if peers == theirs => {
                next.extend(more.iter().map(|(k, v)| (*k, *v)));
                starts.extend(more_starts.iter().map(|(k, v)| (*k, *v)));
                Ok(())
            }
            (mine, other) => Err(crate::error::Error::Checkpoint(format!(
                "positions of different kinds for one spout: {mine:?} and {other:?}"
            ))),
        }
    }

    /// For a sequence: the first record at or after `from` of the turn
    /// that `from` falls in (every `peers`-th) not read before this position.
    ///
    /// ```
    /// use feedstorm::spout::SourcePosition;
    /// let at = SourcePosition::turn(0, 1, 5); // records 0..5 read, one worker
    /// assert_eq!(at.first_unread(1, 2), 5); // the odd turn of two workers
    /// assert_eq!(at.first_unread(0, 2), 6);
    /// ```
    pub fn first_unread(&self, from: u64, peers: u64) -> u64 {
        let mut i = from;
        while self.was_read(i) {
            i += peers.max(1);
        }
        i
    }

    /// For a sequence shared by `peers`: how many of the records before
    /// `n` fall to worker `index`.
    ///
    /// ```
    /// use feedstorm::spout::SourcePosition;
    /// assert_eq!(SourcePosition::turn_count(0, 3, 7), 3); // 0, 3, 6
    /// assert_eq!(SourcePosition::turn_count(2, 3, 7), 2); // 2, 5
    /// assert_eq!(SourcePosition::turn_count(2, 3, 2), 0);
    /// ```
    pub fn turn_count(index: u64, peers: u64, n: u64) -> u64 {
        let peers = peers.max(1);
        n.saturating_sub(index).div_ceil(peers)
    }

    /// For a sequence: whether record `i` was read before this position.
    /// A worker whose share is missing read nothing.
    ///
    /// ```
    /// use feedstorm::spout::SourcePosition;
    /// let mut at = SourcePosition::turn(0, 2, 4);
    /// at.merge(&SourcePosition::turn(1, 2, 1)).unwrap();
    /// let read: Vec<u64> = (0..6).filter(|i| at.was_read(*i)).collect();
    /// assert_eq!(read, [0, 2]);
    /// ```
    pub fn was_read(&self, i: u64) -> bool {
        match self {
            SourcePosition::Turns { peers, next, .. } => {
                next.get(&(i % (*peers).max(1))).is_some_and(|n| i < *n)
            }
            SourcePosition::Kafka { .. } => false,
        }
    }
}

/// How far one part of a source is read, against how far it goes: what
/// the topology page draws as lag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Backlog {
    /// The part: Kafka's `topic/partition`, or a sequence's turn.
    pub part: String,
    /// The next record to read (a Kafka offset; an index in the sequence).
    pub position: u64,
    /// Where the part ends as last known (Kafka's high watermark; what a
    /// generator has due), if the source knows.
    pub high_watermark: Option<u64>,
}

impl Backlog {
    /// Records behind the high watermark, if known.
    ///
    /// ```
    /// use feedstorm::spout::Backlog;
    /// let part = |high| Backlog { part: "t/0".into(), position: 40, high_watermark: high };
    /// assert_eq!(part(Some(100)).lag(), Some(60));
    /// assert_eq!(part(Some(10)).lag(), Some(0));
    /// assert_eq!(part(None).lag(), None);
    /// ```
    pub fn lag(&self) -> Option<u64> {
        self.high_watermark
            .map(|high| high.saturating_sub(self.position))
    }
}

/// A source of events, polled by its worker.
pub trait Spout {
    /// Appends at most `max` records (good events or bad ones) to `out`.
    fn poll(&mut self, max: usize, out: &mut Vec<Result<Event, BadEvent>>) -> Result<SpoutState>;
    /// The records of the polls since the last call entered the dataflow at
    /// `epoch` (bad ones are already in the dead-letter destination).
    fn sent(&mut self, _epoch: u64) {}
    /// Every epoch up to and including `epoch` is fully processed and
    /// written: the spout may acknowledge its records to the source.
    fn acked(&mut self, _epoch: u64) {}
    /// How far this spout has read (everything returned by its polls).
    fn position(&self) -> SourcePosition;

    /// How far this spout has read of each part it reads, against the
    /// part's end where the source knows it (Kafka: the high watermark as
    /// last asked).
    fn backlog(&self) -> Vec<Backlog>;
    /// Continues after `from` (merged from every worker's share, perhaps
    /// of a different number of workers) instead of the source's start.
    /// Called before the first poll.
    fn resume(&mut self, from: &SourcePosition) -> Result<()>;
}
