//! Settings. The doc comments on these structs are the user documentation of
//! `topologies/*.toml` (one topology each) and `config/*.toml` (process-wide).
//! Unknown keys are errors, so a typo never silently falls back to a default.
//!
//! ```
//! let topology: feedstorm::config::TopologyConfig = toml::from_str(r#"
//!     [[spout]]
//!     type = "file"
//!     path = "events.jsonl"
//!     [feed]
//!     feed_size = 50
//! "#).unwrap();
//! assert_eq!(topology.feed.feed_size, 50);
//! assert_eq!(topology.feed.retention.as_secs(), 30 * 24 * 3600);
//! assert!(toml::from_str::<feedstorm::config::TopologyConfig>("[feed]\nfeedsize = 5").is_err());
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};

/// One topology: where events come from (spouts), how feeds are kept (the
/// bolts' settings) and where they go (the sink).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyConfig {
    /// Name, shown in logs and `/status`.
    #[serde(default = "default_name")]
    pub name: String,
    /// Event sources, Storm's spouts: `[[spout]]` tables. `--input FILE`
    /// replaces them with one file spout.
    #[serde(default, rename = "spout")]
    pub spouts: Vec<SpoutConfig>,
    /// How events enter the dataflow.
    #[serde(default)]
    pub input: InputConfig,
    /// Feed semantics: head size, self-interest, retention.
    #[serde(default)]
    pub feed: FeedConfig,
    /// Digests (aggregated feeds, SPEC section 3): `[[digest]]` tables, each
    /// served at `GET /feeds/USER/digest?name=NAME`. Absent means one digest
    /// named `default` with the SPEC defaults; `digest = []` means none.
    #[serde(default = "default_digests", rename = "digest")]
    pub digests: Vec<DigestConfig>,
    /// The notification feed (SPEC section 4).
    #[serde(default)]
    pub notifications: NotificationsConfig,
    /// Where feeds are written and read from.
    #[serde(default)]
    pub sink: SinkConfig,
    /// Where bad events go.
    #[serde(default)]
    pub dead_letter: DeadLetterConfig,
    /// Rebuild-feed queries.
    #[serde(default)]
    pub drpc: DrpcConfig,
    /// Checkpoints: where and how often the state is saved, so that a
    /// restart resumes from it instead of replaying every source.
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
}

/// `[checkpoint]`: each worker saves, at an epoch boundary, what its bolts
/// need to resume (interests with their times, retained stories, deleted
/// ids, the retention horizon) and each spout's position; a start loads the
/// newest complete checkpoint and reads each source from there. Kafka
/// offsets are committed only once the checkpoint that holds them is on disk.
///
/// ```
/// let topology: feedstorm::config::TopologyConfig = toml::from_str(r#"
///     [checkpoint]
///     dir = "/var/lib/feedstorm"
///     interval = "30s"
/// "#).unwrap();
/// assert_eq!(topology.checkpoint.interval.as_secs(), 30);
/// assert_eq!(topology.checkpoint.keep, 3);
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Directory (local, or shared by the cluster's processes) that holds
    /// the checkpoints, under a subdirectory named after the topology.
    #[serde(default = "default_checkpoint_dir")]
    pub dir: PathBuf,
    /// How often a checkpoint is taken (in epoch time); `"0s"` turns
    /// checkpoints off, and every start replays its sources from the start.
    #[serde(default = "default_checkpoint_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Complete checkpoints kept; older ones are deleted.
    #[serde(default = "default_checkpoint_keep")]
    pub keep: usize,
}

fn default_checkpoint_dir() -> PathBuf {
    "checkpoints".into()
}
fn default_checkpoint_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_checkpoint_keep() -> usize {
    3
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

impl CheckpointConfig {
    /// Checkpoints off: every start replays the sources.
    pub fn off() -> CheckpointConfig {
        CheckpointConfig {
            interval: Duration::ZERO,
            ..CheckpointConfig::default()
        }
    }

    /// Whether checkpoints are taken.
    pub fn enabled(&self) -> bool {
        !self.interval.is_zero()
    }
}

/// `[drpc]`: rebuild-feed queries (SPEC section 5).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrpcConfig {
    /// A rebuild not answered within this time fails with a clear error.
    #[serde(default = "default_drpc_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_drpc_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for DrpcConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

/// Which feed heads are kept live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Materialize {
    /// Every user's head, always.
    #[default]
    All,
    /// Only heads read within `active_window`; reading another user's feed
    /// rebuilds it through DRPC and makes it live again.
    Active,
}

fn default_name() -> String {
    "feedstorm".into()
}

impl TopologyConfig {
    /// Reads and checks a topology file.
    pub fn load(path: &Path) -> Result<TopologyConfig> {
        let config: TopologyConfig = load_toml(path)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges that the types cannot express.
    pub fn validate(&self) -> Result<()> {
        if self.feed.feed_size == 0 {
            return Err(Error::Setting {
                setting: "feed.feed_size",
                message: "must be at least 1".into(),
            });
        }
        let mut names = std::collections::HashSet::new();
        for digest in &self.digests {
            digest.validate()?;
            if !names.insert(digest.name.as_str()) {
                return Err(Error::Setting {
                    setting: "digest.name",
                    message: format!("two digests are named {:?}", digest.name),
                });
            }
        }
        if self.notifications.enabled {
            self.notifications.sizes().validate()?;
        }
        if self.checkpoint.enabled() && self.checkpoint.keep == 0 {
            return Err(Error::Setting {
                setting: "checkpoint.keep",
                message: "must be at least 1 (turn checkpoints off with interval = \"0s\")".into(),
            });
        }
        if self.input.epoch_events == 0 {
            return Err(Error::Setting {
                setting: "input.epoch_events",
                message: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

/// One spout, chosen by `type`.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SpoutConfig {
    /// A JSONL file, one event per line; blank lines are skipped.
    File(FileSpoutConfig),
    /// The seeded synthetic workload (a power-law social graph and activity stream).
    Generator(GeneratorConfig),
    /// Kafka topics (needs the `kafka` cargo feature).
    Kafka(KafkaSpoutConfig),
}

impl SpoutConfig {
    /// The name a spout goes by in logs and checkpoints.
    pub fn name(&self) -> String {
        match self {
            SpoutConfig::File(file) => format!("file:{}", file.path.display()),
            SpoutConfig::Generator(_) => "generator".into(),
            SpoutConfig::Kafka(kafka) => format!("kafka:{}", kafka.topics.join(",")),
        }
    }
}

/// `type = "kafka"`: events from Kafka topics. Every partition of every topic
/// goes to one worker (partition p of a topic to worker p mod all workers of
/// all processes), assigned directly, without consumer-group rebalances.
/// Offsets are committed under `group_id` only once a durable checkpoint
/// holds them and the sink wrote everything before it. At start each
/// partition is read from the newest complete checkpoint's offset (see
/// `[checkpoint]`), or from its beginning without one. So a topic needs to
/// keep what the kept checkpoints have not read; without checkpoints, give
/// activity topics a retention of at least `[feed] retention`, and never
/// expire follows.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSpoutConfig {
    /// Bootstrap brokers, `host:port[,host:port...]`.
    pub brokers: String,
    /// Topics to read; each may carry activities, follows and deletes.
    pub topics: Vec<String>,
    /// Consumer group id under which offsets are committed.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// More librdkafka settings (`security.protocol`, `sasl.*`, `fetch.*`...).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

fn default_group_id() -> String {
    "feedstorm".into()
}

/// `type = "file"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpoutConfig {
    /// Path of the JSONL file.
    pub path: PathBuf,
    /// Keep reading lines appended to the file after its end (like `tail -f`).
    #[serde(default)]
    pub follow: bool,
}

/// `type = "generator"`: a deterministic workload; the same seed gives the same
/// events on any number of workers.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorConfig {
    /// Seed of the workload.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Number of users (`user:u0` ...).
    #[serde(default = "default_users")]
    pub users: u64,
    /// Number of things users can follow and act on (`listing:l0` ...).
    #[serde(default = "default_listings")]
    pub listings: u64,
    /// Follow events that build the initial graph before activities start.
    #[serde(default = "default_follows")]
    pub follows: u64,
    /// Events after the initial graph (activities with some follows,
    /// unfollows and deletes mixed in); absent means unbounded.
    #[serde(default)]
    pub events: Option<u64>,
    /// Events per second after the initial graph; absent means as fast as possible.
    #[serde(default)]
    pub rate: Option<u64>,
    /// With `rate`: the events due are released together this often (`1s`),
    /// as a producer that batches its sends; `0s` (the default) releases
    /// each as it falls due. A stream released in bursts has moments when
    /// everything released is written (`caught_up`), and larger epochs.
    #[serde(default, with = "humantime_serde")]
    pub release_every: Duration,
    /// Zipf-like skew of who is followed and who acts (0 = uniform).
    #[serde(default = "default_skew")]
    pub skew: f64,
    /// Event time of the first event, in milliseconds since the epoch.
    #[serde(default = "default_start_time")]
    pub start_time: i64,
    /// Milliseconds of event time between consecutive events.
    #[serde(default = "default_step_ms")]
    pub step_ms: i64,
    /// Share of events after the graph that are follows.
    #[serde(default = "default_follow_share")]
    pub follow_share: f64,
    /// Share of events after the graph that are unfollows (of initial edges).
    #[serde(default = "default_unfollow_share")]
    pub unfollow_share: f64,
    /// Share of events after the graph that delete a recent activity.
    #[serde(default = "default_delete_share")]
    pub delete_share: f64,
    /// Share of events that arrive late: their time is set back by up to `late_by`.
    #[serde(default)]
    pub late_share: f64,
    /// How late a late event is at most (`12h`).
    #[serde(default = "default_late_by", with = "humantime_serde")]
    pub late_by: Duration,
}

fn default_follow_share() -> f64 {
    0.07
}
fn default_unfollow_share() -> f64 {
    0.05
}
fn default_delete_share() -> f64 {
    0.03
}
fn default_late_by() -> Duration {
    Duration::from_secs(12 * 3600)
}

fn default_seed() -> u64 {
    42
}
fn default_users() -> u64 {
    2_000
}
fn default_listings() -> u64 {
    1_000
}
fn default_follows() -> u64 {
    40_000
}
fn default_skew() -> f64 {
    1.5
}
fn default_start_time() -> i64 {
    1_795_219_200_000 // 2026-11-21T00:00:00Z
}
fn default_step_ms() -> i64 {
    1_000
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

/// `[input]`: how events enter the dataflow.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// A message larger than this is a bad event.
    #[serde(default = "default_max_event_bytes")]
    pub max_event_bytes: usize,
    /// An event whose time is more than this ahead of the wall clock when
    /// it is read is a bad event (SPEC section 1): a far-future time would
    /// otherwise move the retention horizon and forget every feed.
    #[serde(default = "default_max_future", with = "humantime_serde")]
    pub max_future: Duration,
    /// Most events one worker puts into one epoch. Live, an epoch holds what
    /// arrived since the last; catching up, bigger epochs amortize each
    /// epoch's head and digest output: every user's head and digest turn
    /// over in each epoch (replaying a million events with digests took
    /// half the time at 160,000 as at 40,000). An epoch's events are read
    /// whole, whatever `max_inflight_bytes` says: with events of several
    /// kilobytes, lower this so that one epoch stays well inside memory.
    #[serde(default = "default_epoch_events")]
    pub epoch_events: usize,
    /// Epochs a worker may have in flight (read, not yet written) before its
    /// spouts stop pulling: the back-pressure bound.
    #[serde(default = "default_max_inflight")]
    pub max_inflight_epochs: usize,
    /// Bytes of events a worker may have in flight (read, not yet written)
    /// before its spouts stop pulling, whatever the epoch count: a burst far
    /// above the sustainable rate waits in the source, not in memory. An
    /// epoch is not cut, so the bound is this plus one epoch's events.
    #[serde(default = "default_max_inflight_bytes")]
    pub max_inflight_bytes: u64,
}

fn default_max_event_bytes() -> usize {
    1 << 20
}
fn default_max_future() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_epoch_events() -> usize {
    160_000
}
fn default_max_inflight_bytes() -> u64 {
    256 << 20
}
fn default_max_inflight() -> usize {
    4
}

impl InputConfig {
    /// What a spout accepts (`extra` nested at most
    /// [`MAX_EXTRA_DEPTH`](crate::event::MAX_EXTRA_DEPTH) deep).
    pub fn limits(&self) -> crate::event::Limits {
        crate::event::Limits {
            max_event_bytes: self.max_event_bytes,
            max_future_ms: self.max_future.as_millis().min(i64::MAX as u128) as i64,
            max_extra_depth: crate::event::MAX_EXTRA_DEPTH,
        }
    }
}

impl Default for InputConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

/// `[feed]`: SPEC section 2.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    /// Entries in a feed head.
    #[serde(default = "default_feed_size")]
    pub feed_size: usize,
    /// Candidates kept per user beyond `feed_size`: a user's state holds at
    /// most `feed_size + slack` entries. A retraction that leaves fewer than
    /// `feed_size` refills the user from the stories (exact, but work), so
    /// slack trades a little memory for fewer refills.
    #[serde(default = "default_slack")]
    pub slack: usize,
    /// Every user is also interested in themselves.
    #[serde(default = "default_true")]
    pub follow_self: bool,
    /// Stories older than this, relative to the newest event time seen, are
    /// forgotten (`30d`, `12h`, ...).
    #[serde(default = "default_retention", with = "humantime_serde")]
    pub retention: Duration,
    /// `"all"` keeps every user's head live; `"active"` only recently read ones.
    #[serde(default)]
    pub materialize: Materialize,
    /// In `active` mode, a head not read for this long is evicted (`7days`).
    #[serde(default = "default_active_window", with = "humantime_serde")]
    pub active_window: Duration,
}

fn default_active_window() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

fn default_feed_size() -> usize {
    200
}
fn default_slack() -> usize {
    50
}
fn default_true() -> bool {
    true
}
fn default_retention() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}

impl Default for FeedConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

/// A part of an activity that a digest's aggregation key may include.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyField {
    /// The activity's verb.
    Verb,
    /// Who did it.
    Actor,
    /// What it was done to.
    Object,
    /// Its target (absent targets form their own group).
    Target,
}

/// `[[digest]]`: one aggregated feed (SPEC section 3). A user's retained
/// feed activities that share the key fields and the time bucket form a group.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestConfig {
    /// Name: `GET /feeds/USER/digest?name=NAME` (the first digest is served
    /// without `name`). `notifications` is reserved.
    #[serde(default = "default_digest_name")]
    pub name: String,
    /// Key fields besides the time bucket, any of `verb`, `actor`, `object`,
    /// `target` (written into the key in that order, whatever the order here).
    #[serde(default = "default_digest_key")]
    pub key: Vec<KeyField>,
    /// Time bucket of the key (`1d`, `6h`, ...). Buckets are aligned to the
    /// Unix epoch, so `1d` buckets are UTC days.
    #[serde(default = "default_window", with = "humantime_serde")]
    pub window: Duration,
    /// Distinct actors listed per group (newest first); `actor_count` counts all.
    #[serde(default = "default_fifteen")]
    pub max_actors: usize,
    /// Activity ids listed per group (newest first); `activity_count` counts all.
    #[serde(default = "default_fifteen")]
    pub max_activities: usize,
    /// Groups in the digest head (the newest ones).
    #[serde(default = "default_digest_size")]
    pub digest_size: usize,
}

/// The bounds of a digest's groups and head (see [`DigestConfig`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DigestSizes {
    /// Distinct actors listed per group.
    pub max_actors: usize,
    /// Activity ids listed per group.
    pub max_activities: usize,
    /// Groups in the digest head.
    pub digest_size: usize,
}

impl DigestSizes {
    fn validate(&self) -> Result<()> {
        for (setting, value) in [
            ("digest.max_actors", self.max_actors),
            ("digest.max_activities", self.max_activities),
            ("digest.digest_size", self.digest_size),
        ] {
            if value == 0 {
                return Err(Error::Setting {
                    setting,
                    message: "must be at least 1".into(),
                });
            }
        }
        Ok(())
    }
}

impl DigestConfig {
    /// The group and head bounds.
    pub fn sizes(&self) -> DigestSizes {
        DigestSizes {
            max_actors: self.max_actors,
            max_activities: self.max_activities,
            digest_size: self.digest_size,
        }
    }

    fn validate(&self) -> Result<()> {
        let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
        if self.name == NOTIFICATIONS || self.name.is_empty() || !self.name.chars().all(plain) {
            return Err(Error::Setting {
                setting: "digest.name",
                message: format!(
                    "{:?}: use letters, digits, `_`, `-`, `.` (`notifications` is reserved)",
                    self.name
                ),
            });
        }
        if self.window.as_millis() == 0 {
            return Err(Error::Setting {
                setting: "digest.window",
                message: "must be at least 1ms".into(),
            });
        }
        self.sizes().validate()
    }
}

/// The store name of the notification feed's digest.
pub const NOTIFICATIONS: &str = "notifications";

fn default_digests() -> Vec<DigestConfig> {
    vec![DigestConfig::default()]
}
fn default_digest_name() -> String {
    "default".into()
}
fn default_digest_key() -> Vec<KeyField> {
    vec![KeyField::Verb, KeyField::Object]
}
fn default_window() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_fifteen() -> usize {
    15
}
fn default_digest_size() -> usize {
    100
}

impl Default for DigestConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

/// `[notifications]`: each user's notification feed, the activities whose
/// `target` is the user (except their own), digested by verb + object + UTC
/// day, with seen and read flags.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsConfig {
    /// Keep notification feeds.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Distinct actors listed per group (newest first); `actor_count` counts all.
    #[serde(default = "default_fifteen")]
    pub max_actors: usize,
    /// Activity ids listed per group (newest first); `activity_count` counts all.
    #[serde(default = "default_fifteen")]
    pub max_activities: usize,
    /// Groups in the digest head (the newest ones).
    #[serde(default = "default_digest_size")]
    pub digest_size: usize,
}

impl NotificationsConfig {
    /// The group and head bounds.
    pub fn sizes(&self) -> DigestSizes {
        DigestSizes {
            max_actors: self.max_actors,
            max_activities: self.max_activities,
            digest_size: self.digest_size,
        }
    }
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

/// `[sink]`: where feeds are written and read from, chosen by `type`.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkConfig {
    /// In-process store, served by this process's HTTP API.
    Embedded(EmbeddedSinkConfig),
    /// Redis: feeds that apps read directly too (see the README's key layout).
    Redis(RedisSinkConfig),
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig::Embedded(EmbeddedSinkConfig::default())
    }
}

/// `type = "embedded"`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedSinkConfig {
    /// A file that keeps notification seen/read marks across restarts
    /// (appended to; read at start). Absent: marks live in memory only.
    /// Feeds themselves are recomputed from the spouts at each start.
    #[serde(default)]
    pub marks_path: Option<PathBuf>,
}

/// `type = "redis"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSinkConfig {
    /// `redis://[:password@]host:port[/db]`, or `rediss://` for TLS.
    pub url: String,
    /// Prefix of every key this topology writes.
    #[serde(default = "default_redis_prefix")]
    pub prefix: String,
    /// Writes per MULTI/EXEC pipeline (one round trip). An epoch's writes
    /// are cut into pipelines of about this many, never inside one user's
    /// changes; a user's run of one command on one key goes as one variadic
    /// command (a head written whole is a DEL and one ZADD), counted here
    /// by the members or fields it holds.
    #[serde(default = "default_pipeline")]
    pub pipeline: usize,
    /// `url` is one node of a Redis Cluster: the topology asks it for the
    /// cluster's slots (`CLUSTER SLOTS`) and sends each key to the master
    /// that owns it. A user's keys share a slot (`{USER}` is a hash tag).
    #[serde(default)]
    pub cluster: bool,
    /// PEM file of the certificate authority that signed the server's TLS
    /// certificate (`rediss://` URLs), when it is not one of the system's
    /// trusted roots.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
}

impl RedisSinkConfig {
    /// `url` under `prefix`, other settings at their defaults.
    pub fn new(url: &str, prefix: &str) -> RedisSinkConfig {
        RedisSinkConfig {
            url: url.to_owned(),
            prefix: prefix.to_owned(),
            pipeline: default_pipeline(),
            cluster: false,
            tls_ca_file: None,
        }
    }
}

fn default_pipeline() -> usize {
    10_000
}

fn default_redis_prefix() -> String {
    "feedstorm".into()
}

/// `[dead_letter]`: where bad events go, each with its source position.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// JSONL file that bad events are appended to (unless `topic` is set).
    #[serde(default = "default_dead_letter_path")]
    pub path: PathBuf,
    /// A Kafka topic instead of the file (needs the `kafka` cargo feature):
    /// each bad event as it was read, with headers `source_topic`,
    /// `source_partition`, `source_offset` (or `source_file`, `source_line`)
    /// and `error`.
    #[serde(default)]
    pub topic: Option<String>,
    /// Brokers of the dead-letter topic (`host:port[,...]`).
    #[serde(default)]
    pub brokers: Option<String>,
}

fn default_dead_letter_path() -> PathBuf {
    "dead-letters.jsonl".into()
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

/// Process-wide settings, `config/default.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessConfig {
    /// Address of the HTTP API. Loopback by default.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Timely worker threads in this process.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Log filter, as `RUST_LOG` takes it (`RUST_LOG` wins when set).
    #[serde(default = "default_log")]
    pub log: String,
    /// Largest `limit` a feed request may ask for.
    #[serde(default = "default_max_limit")]
    pub max_page_limit: usize,
    /// Run as one process of a worker cluster (`--processes`, `--process`
    /// and `--hosts` override it). Absent: a cluster of one.
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
    /// Access to the HTTP API.
    #[serde(default)]
    pub http: HttpConfig,
}

/// `[http]`: access to the HTTP API.
///
/// ```
/// let config: feedstorm::config::ProcessConfig =
///     toml::from_str("[http]\ntoken_env = \"FEEDSTORM_TOKEN\"").unwrap();
/// assert_eq!(config.http.token_env.as_deref(), Some("FEEDSTORM_TOKEN"));
/// ```
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// The name of an environment variable holding a bearer token. When
    /// set, every route except `/health` and `/ready` needs
    /// `Authorization: Bearer TOKEN` (401 otherwise). The token itself is
    /// never written in a file, logged or shown.
    pub token_env: Option<String>,
}

impl HttpConfig {
    /// The token, read from the variable `token_env` names (`None`: no
    /// token configured). A named variable that is unset or empty is an error.
    pub fn token(&self) -> Result<Option<String>> {
        let Some(name) = &self.token_env else {
            return Ok(None);
        };
        match std::env::var(name) {
            Ok(token) if !token.trim().is_empty() => Ok(Some(token.trim().to_owned())),
            _ => Err(Error::Setting {
                setting: "http.token_env",
                message: format!("the environment variable {name} is not set (or empty)"),
            }),
        }
    }
}

/// `[cluster]`: this process's place in a worker cluster (timely's own
/// multi-process mode). Every process runs the same topology with the same
/// `workers`; Kafka partitions spread over all `processes x workers`.
///
/// ```
/// let config: feedstorm::config::ProcessConfig = toml::from_str(r#"
///     workers = 2
///     [cluster]
///     processes = 2
///     process = 1
///     hosts = "config/hosts.txt"
/// "#).unwrap();
/// assert_eq!(config.cluster.unwrap().process, 1);
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Processes in the cluster.
    pub processes: usize,
    /// This process, from 0; it listens on line `process` of `hosts`.
    pub process: usize,
    /// Timely's hosts file: one `host:port` a line, process 0 first. The
    /// ports carry the dataflow's own traffic (not the HTTP API).
    pub hosts: PathBuf,
}

fn default_listen() -> SocketAddr {
    "127.0.0.1:7070".parse().expect("literal")
}
fn default_workers() -> usize {
    2
}
fn default_log() -> String {
    "info".into()
}
fn default_max_limit() -> usize {
    1_000
}

impl Default for ProcessConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

impl ProcessConfig {
    /// Reads a process config file.
    pub fn load(path: &Path) -> Result<ProcessConfig> {
        load_toml(path)
    }
}

fn load_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| Error::Config {
        path: path.to_owned(),
        message: e.to_string(),
    })
}
