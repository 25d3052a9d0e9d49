//! # feedstorm
//!
//! A Storm-like stream-processing topology for activity feeds, on
//! [timely](https://docs.rs/timely) and
//! [differential](https://docs.rs/differential-dataflow) dataflow.
//!
//! Spouts read activity events; bolts keep **interests** (who follows whom and
//! what), **stories** (activities about each person or thing) and **feed
//! heads** up to date; a sink writes the heads to a store that the HTTP API
//! serves. Results never depend on the number of workers.
//!
//! ## Layout
//!
//! | module | Storm's word | what it holds |
//! |---|---|---|
//! | [`event`] | tuple | the wire format: decoding, typed ids, times |
//! | [`spout`] | spout | sources: JSONL file, seeded generator, Kafka (acked per epoch) |
//! | `kafka` | — | (feature `kafka`) client settings, a delivery-confirming producer, `feedstorm produce` |
//! | [`topology`] | topology | wiring spouts → bolts → sink as one dataflow |
//! | [`bolt`] | bolt | one operator per file: interests (and blocks), stories, feed heads and digests, notifications, the sink (`WriteTo`, whose frontier acks) |
//! | [`digest`] | — | digests and notifications: aggregation keys, groups, seen/read marks |
//! | [`drpc`] | DRPC | the answer desk for rebuild-feed requests (the feed-head bolt answers them at their epoch) |
//! | [`grouping`] | fields grouping | which worker owns a user, a typed id, an activity |
//! | [`store`] | (state store) | the store trait the sink writes and the HTTP API reads: embedded, Redis |
//! | [`runtime`] | worker / acking | timely workers, epochs, back-pressure, progress |
//! | [`cluster`] | worker cluster (supervisor) | processes, their handshake, cluster-wide durability and stop, lost peers |
//! | [`checkpoint`] | (Trident state) | snapshots of the bolts' state with the spouts' positions; resume and acking |
//! | [`http`] | Storm UI | the HTTP API of SPEC section 6, the topology page `/ui` |
//! | [`push`] | — | feed-head changes handed to the open streams (`/feeds/USER/stream`) as epochs are written |
//! | [`observe`] | Storm UI's metrics | per-operator records, rates, busy shares and edges, from timely's logging |
//! | `reference/` (its own crate) | — | the from-scratch oracle the tests and `bench` compare against: its own parser and types, no code shared with the engine |
//! | [`config`] | topology conf | settings; their doc comments are the user docs |
//! | [`status`], [`dead_letter`], [`error`], [`feed`] | — | counters, bad events, errors, feed order |
//! | `bench` (feature `bench`) | — | `feedstorm bench`: end-to-end throughput, memory and latency against the reference |
//! | [`retry`] | — | the one retry policy: exponential back-off, final errors returned at once |

#![forbid(missing_docs)]

#[cfg(feature = "bench")]
pub mod bench;
pub mod bolt;
pub mod checkpoint;
pub mod cluster;
pub mod config;
pub mod dead_letter;
pub mod digest;
pub mod drpc;
pub mod error;
pub mod event;
pub mod feed;
pub mod grouping;
pub mod http;
#[cfg(any(test, feature = "bench"))]
mod judge;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod observe;
pub mod push;
pub mod retry;
pub mod runtime;
pub mod spout;
pub mod status;
pub mod store;
pub mod topology;

pub use error::{Error, Result};
