//! The Kafka spout (feature `kafka`), after rust-rdkafka's
//! `at_least_once.rs` and the Kafka sources of Arroyo and Materialize:
//!
//! - auto-commit off; partitions are assigned, not subscribed: partition p of
//!   each topic goes to worker p mod all workers, so no group rebalance can
//!   move a partition under a running dataflow;
//! - the worker is woken by the consumer (librdkafka's queue callback
//!   unparks the worker thread), not by busy polling;
//! - acking: an offset is committed once a durable checkpoint holds it and
//!   the sink wrote every epoch before it (without checkpoints: once its
//!   epoch is written), never before ([`Spout::acked`]);
//! - restart: each partition is read from the newest complete checkpoint's
//!   offset ([`Spout::resume`]), or from its beginning without one (what lies
//!   before the committed offset then rebuilds interests and stories). A
//!   persistent store writes nothing until the topology has caught up once.
//!   Events read again are harmless: processing is idempotent (SPEC section 1).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::config::KafkaSpoutConfig;
use crate::error::kafka_retryable as retryable;
use crate::error::{DecodeError, Error, Result};
use crate::event::{decode_read, Event, Limits};
use crate::kafka::client_config;
use crate::retry::Backoff;
use crate::spout::{Backlog, BadEvent, Position, SourcePosition, Spout, SpoutState};

/// How long a metadata, offset or watermark request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the high watermarks are asked again.
const WATERMARK_REFRESH: Duration = Duration::from_millis(100);

/// One assigned partition.
#[derive(Debug)]
struct Partition {
    topic: String,
    partition: i32,
    /// Next offset to read.
    next: i64,
    /// The offset committed for the group (when this run started, then as
    /// this spout commits); -1 if none.
    committed: i64,
    /// Whether records were read since the last [`Spout::sent`].
    unsent: bool,
}

/// The Kafka spout of one worker.
pub struct KafkaSpout {
    name: String,
    consumer: BaseConsumer,
    limits: Limits,
    partitions: Vec<Partition>,
    by_name: HashMap<(String, i32), usize>,
    /// Per epoch sent and not yet acked: the next offsets of the partitions
    /// read for it.
    unacked: VecDeque<(u64, Vec<(usize, i64)>)>,
    watermarks: Arc<Watermarks>,
    last_error: Option<Instant>,
}

/// High watermarks, asked by a thread of their own: a watermark request is a
/// broker round trip, and the worker thread must not wait for it.
struct Watermarks {
    /// Per assigned partition; -1 until asked.
    high: Vec<AtomicI64>,
    stop: AtomicBool,
}

impl Watermarks {
    /// Starts asking for the watermarks of `partitions` every
    /// [`WATERMARK_REFRESH`], with a consumer of its own.
    fn watch(consumer: BaseConsumer, partitions: Vec<(String, i32)>) -> Arc<Watermarks> {
        let watermarks = Arc::new(Watermarks {
            high: partitions.iter().map(|_| AtomicI64::new(-1)).collect(),
            stop: AtomicBool::new(false),
        });
        let shared = watermarks.clone();
        std::thread::spawn(move || {
            while !shared.stop.load(Ordering::Relaxed) {
                for ((topic, partition), high) in partitions.iter().zip(&shared.high) {
                    if let Ok((_, at)) =
                        consumer.fetch_watermarks(topic, *partition, REQUEST_TIMEOUT)
                    {
                        high.store(at, Ordering::Release);
                    }
                }
                std::thread::sleep(WATERMARK_REFRESH);
            }
        });
        watermarks
    }
}

impl Drop for KafkaSpout {
    fn drop(&mut self) {
        self.watermarks.stop.store(true, Ordering::Relaxed);
    }
}

fn spout_error(name: &str, message: impl std::fmt::Display) -> Error {
    Error::Spout {
        spout: name.to_owned(),
        message: message.to_string(),
    }
}

/// Assigns `partitions` to `consumer`, each from its low watermark (the
/// start of what the broker keeps: interests and stories are rebuilt from
/// it), noting each one's committed offset.
fn assign(consumer: &mut BaseConsumer, name: &str, partitions: &mut [Partition]) -> Result<()> {
    let mut list = TopicPartitionList::new();
    for p in partitions.iter() {
        list.add_partition(&p.topic, p.partition);
    }
    let committed = retry(name, "committed offsets", || {
        consumer.committed_offsets(list.clone(), REQUEST_TIMEOUT)
    })?;
    let mut assignment = TopicPartitionList::new();
    for p in partitions.iter_mut() {
        if let Some(Offset::Offset(at)) = committed
            .find_partition(&p.topic, p.partition)
            .map(|e| e.offset())
        {
            p.committed = at;
        }
        let (low, high) = retry(name, "watermarks", || {
            consumer.fetch_watermarks(&p.topic, p.partition, REQUEST_TIMEOUT)
        })?;
        p.next = low;
        assignment
            .add_partition_offset(&p.topic, p.partition, Offset::Offset(low))
            .map_err(|e| spout_error(name, e))?;
        tracing::info!(
            topic = %p.topic,
            partition = p.partition,
            committed = p.committed,
            low,
            high,
            "kafka partition assigned: replaying from its start, new events from the committed offset"
        );
    }
    consumer
        .assign(&assignment)
        .map_err(|e| spout_error(name, e))?;
    Ok(())
}

impl KafkaSpout {
    /// The share of worker `index` of `peers` (all workers of all processes).
    /// Waits, with back-off, for brokers that do not answer yet; a topic that
    /// does not exist is an error.
    pub fn open(
        config: &KafkaSpoutConfig,
        limits: Limits,
        index: usize,
        peers: usize,
    ) -> Result<KafkaSpout> {
        let name = format!("kafka:{}", config.topics.join(","));
        let mut client = client_config(&config.brokers, &config.options);
        client
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false");
        let mut consumer: BaseConsumer = client.create().map_err(|e| spout_error(&name, e))?;
        let watcher: BaseConsumer = client.create().map_err(|e| spout_error(&name, e))?;

        let mut partitions = Vec::new();
        for topic in &config.topics {
            let count = partition_count(&consumer, &name, topic)?;
            for partition in (0..count).filter(|p| *p as usize % peers == index) {
                partitions.push(Partition {
                    topic: topic.clone(),
                    partition,
                    next: 0,
                    committed: -1,
                    unsent: false,
                });
            }
        }
        if !partitions.is_empty() {
            assign(&mut consumer, &name, &mut partitions)?;
            let worker = std::thread::current();
            consumer.set_nonempty_callback(move || worker.unpark());
        }
        let watermarks = Watermarks::watch(
            watcher,
            partitions
                .iter()
                .map(|p| (p.topic.clone(), p.partition))
                .collect(),
        );
        let by_name = partitions
            .iter()
            .enumerate()
            .map(|(i, p)| ((p.topic.clone(), p.partition), i))
            .collect();
        Ok(KafkaSpout {
            name,
            consumer,
            limits,
            partitions,
            by_name,
            unacked: VecDeque::new(),
            watermarks,
            last_error: None,
        })
    }

    /// Whether every partition has been read up to its high watermark (as
    /// last asked; unknown counts as not).
    fn at_high_watermarks(&self) -> bool {
        self.partitions
            .iter()
            .zip(&self.watermarks.high)
            .all(|(p, high)| {
                let high = high.load(Ordering::Acquire);
                high >= 0 && p.next >= high
            })
    }

    fn warn(&mut self, error: &KafkaError) {
        // Once a second at most: a broker that is down fails every poll.
        if self
            .last_error
            .is_none_or(|t| t.elapsed() > Duration::from_secs(1))
        {
            tracing::warn!(spout = %self.name, %error, "kafka consumer error; librdkafka retries");
            self.last_error = Some(Instant::now());
        }
    }
}

/// The number of partitions of `topic`, waiting for brokers that do not
/// answer yet.
fn partition_count(consumer: &BaseConsumer, name: &str, topic: &str) -> Result<i32> {
    let metadata = retry(name, "metadata", || {
        consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT)
    })?;
    let found = metadata.topics().iter().find(|t| t.name() == topic);
    match found {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
            Ok(t.partitions().len() as i32)
        }
        _ => Err(spout_error(
            name,
            format!("topic {topic} does not exist (create it first, e.g. `tansu topic create {topic} --partitions N`)"),
        )),
    }
}

/// Runs `request` until it succeeds, backing off while the brokers are
/// unreachable.
fn retry<T>(
    name: &str,
    what: &str,
    request: impl FnMut() -> rdkafka::error::KafkaResult<T>,
) -> Result<T> {
    crate::retry::retry(Backoff::default(), request, retryable, |error| {
        tracing::warn!(spout = name, %error, "kafka {what} request failed; retrying");
    })
    .map_err(|error| spout_error(name, format!("kafka {what} request failed: {error}")))
}

impl Spout for KafkaSpout {
    fn poll(&mut self, max: usize, out: &mut Vec<Result<Event, BadEvent>>) -> Result<SpoutState> {
        let mut read = 0;
        while read < max {
            let message = match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Err(error)) => {
                    self.warn(&error);
                    break;
                }
                Some(Ok(message)) => message,
            };
            let Some(&at) = self
                .by_name
                .get(&(message.topic().to_owned(), message.partition()))
            else {
                continue;
            };
            let partition = &mut self.partitions[at];
            if message.offset() < partition.next {
                continue; // already read (librdkafka re-fetches after errors)
            }
            partition.next = message.offset() + 1;
            partition.unsent = true;
            read += 1;
            let payload = message.payload().unwrap_or_default();
            let decoded = if message.payload().is_none() {
                Err(DecodeError::NotJson("a message without a payload".into()))
            } else {
                decode_read(payload, &self.limits, crate::event::unix_ms() as i64)
            };
            out.push(decoded.map_err(|error| BadEvent {
                position: Position::Kafka {
                    topic: partition.topic.clone(),
                    partition: partition.partition,
                    offset: message.offset(),
                },
                error,
                raw: String::from_utf8_lossy(payload).into_owned(),
            }));
        }
        for p in self.partitions.iter().filter(|p| p.unsent) {
            tracing::debug!(topic = %p.topic, partition = p.partition, next = p.next, "kafka read");
        }
        Ok(if read == max || !self.at_high_watermarks() {
            SpoutState::Ready
        } else {
            SpoutState::Idle
        })
    }

    fn sent(&mut self, epoch: u64) {
        let read: Vec<(usize, i64)> = self
            .partitions
            .iter_mut()
            .enumerate()
            .filter(|(_, p)| p.unsent)
            .map(|(i, p)| {
                p.unsent = false;
                (i, p.next)
            })
            .collect();
        if !read.is_empty() {
            self.unacked.push_back((epoch, read));
        }
    }

    fn backlog(&self) -> Vec<Backlog> {
        self.partitions
            .iter()
            .zip(&self.watermarks.high)
            .map(|(p, high)| Backlog {
                part: format!("{}/{}", p.topic, p.partition),
                position: p.next.max(0) as u64,
                high_watermark: u64::try_from(high.load(Ordering::Acquire)).ok(),
            })
            .collect()
    }

    fn position(&self) -> SourcePosition {
        SourcePosition::Kafka {
            next: self
                .partitions
                .iter()
                .map(|p| (format!("{}/{}", p.topic, p.partition), p.next))
                .collect(),
        }
    }

    fn resume(&mut self, from: &SourcePosition) -> Result<()> {
        let SourcePosition::Kafka { next } = from else {
            return Err(Error::Checkpoint(format!(
                "{}: a kafka spout cannot resume from {from:?}",
                self.name
            )));
        };
        if self.partitions.is_empty() {
            return Ok(());
        }
        let mut assignment = TopicPartitionList::new();
        for p in self.partitions.iter_mut() {
            let key = format!("{}/{}", p.topic, p.partition);
            let low = p.next; // the low watermark, as opened
            match next.get(&key) {
                Some(&at) if at >= low => p.next = at,
                Some(&at) => {
                    // The broker deleted records the checkpoint had not
                    // read: they are lost to this topology.
                    tracing::error!(
                        partition = %key,
                        checkpoint = at,
                        low,
                        "records after the checkpoint expired from kafka; resuming from the oldest kept"
                    );
                }
                None => {} // a partition added since: from its start
            }
            assignment
                .add_partition_offset(&p.topic, p.partition, Offset::Offset(p.next))
                .map_err(|e| spout_error(&self.name, e))?;
            tracing::info!(
                topic = %p.topic,
                partition = p.partition,
                next = p.next,
                committed = p.committed,
                "kafka partition resumed from the checkpoint"
            );
        }
        self.consumer
            .assign(&assignment)
            .map_err(|e| spout_error(&self.name, e))
    }

    fn acked(&mut self, epoch: u64) {
        let mut commit: HashMap<usize, i64> = HashMap::new();
        while self.unacked.front().is_some_and(|(e, _)| *e <= epoch) {
            let (_, read) = self.unacked.pop_front().expect("checked");
            commit.extend(read);
        }
        let mut list = TopicPartitionList::new();
        for (at, next) in commit {
            let p = &mut self.partitions[at];
            // Replaying history must never move the committed offset back.
            if next > p.committed {
                p.committed = next;
                let _ = list.add_partition_offset(&p.topic, p.partition, Offset::Offset(next));
            }
        }
        if list.count() > 0 {
            if let Err(error) = self.consumer.commit(&list, CommitMode::Async) {
                // The next ack commits a later offset, which covers this one.
                tracing::warn!(spout = %self.name, %error, "kafka offset commit failed");
            }
            tracing::debug!(offsets = ?list, "kafka commit");
        }
    }
}
