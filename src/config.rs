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
    /// Where feeds are written and read from.
    #[serde(default)]
    pub sink: SinkConfig,
    /// Where bad events go.
    #[serde(default)]
    pub dead_letter: DeadLetterConfig,
    /// Rebuild-feed queries.
    #[serde(default)]
    pub drpc: DrpcConfig,
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
    /// Zipf-like skew of who is followed and who acts (0 = uniform).
    #[serde(default = "default_skew")]
    pub skew: f64,
    /// Event time of the first event, in milliseconds since the epoch.
    #[serde(default = "default_start_time")]
    pub start_time: i64,
    /// Milliseconds of event time between consecutive events.
    #[serde(default = "default_step_ms")]
    pub step_ms: i64,
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
    /// Most events one worker puts into one epoch.
    #[serde(default = "default_epoch_events")]
    pub epoch_events: usize,
    /// Epochs a worker may have in flight (read, not yet written) before its
    /// spouts stop pulling: the back-pressure bound.
    #[serde(default = "default_max_inflight")]
    pub max_inflight_epochs: usize,
}

fn default_max_event_bytes() -> usize {
    1 << 20
}
fn default_epoch_events() -> usize {
    10_000
}
fn default_max_inflight() -> usize {
    4
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

/// `[sink]`: where feeds are written and read from, chosen by `type`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkConfig {
    /// In-process store, served by this process's HTTP API.
    #[default]
    Embedded,
    /// Redis: feeds that apps read directly too (see the README's key layout).
    Redis(RedisSinkConfig),
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
}

fn default_redis_prefix() -> String {
    "feedstorm".into()
}

/// `[dead_letter]`: where bad events go, each with its source position.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// JSONL file that bad events are appended to.
    #[serde(default = "default_dead_letter_path")]
    pub path: PathBuf,
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
