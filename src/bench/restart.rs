//! `feedstorm bench --restart N`: how much faster a restart from a checkpoint
//! catches up than a full replay of the same events, measured in one run.
//!
//! The workload is written to a JSONL file as history; a full replay reads
//! the history and `N` new events from scratch, and a checkpointed run reads
//! the history, checkpoints it, is dropped without a clean stop, and starts
//! again with the `N` new events appended (checkpointing at the default
//! interval). Both times run from the start of the process to `caught_up`,
//! each on a settled heap (as a new process has it: nothing a run before
//! freed is left for the allocator to sort out on the clock).
//!
//! With `--redis URL` both runs write to Redis (its database emptied before
//! each), as deployed: the heads outlive the process, so the restart
//! rewrites only what the new events change. Into the embedded store (the
//! default) the restart writes every head again, since the store died
//! with the process.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bench::redis_memory;
use crate::bench::{settle_heap, BenchOptions};
use crate::config::{
    CheckpointConfig, DigestConfig, FileSpoutConfig, NotificationsConfig, RedisSinkConfig,
    SinkConfig, SpoutConfig, TopologyConfig,
};
use crate::error::{Error, Result};
use crate::event::encode;
use crate::runtime::{RunOptions, Running};
use crate::spout::Generator;

/// The restart benchmark's figures.
#[derive(Clone, Debug, Serialize)]
pub struct RestartReport {
    /// Where heads were written: `embedded` or `redis`.
    pub sink: &'static str,
    /// Events of history.
    pub history: u64,
    /// Events after the checkpoint.
    pub new: u64,
    /// Full replay of history and new events, start to caught up.
    pub full_replay_secs: f64,
    /// Restart from the checkpoint, reading the new events, start to caught up.
    pub restart_secs: f64,
    /// Events the restart read (the new ones, if the checkpoint held all history).
    pub restart_read: u64,
    /// Bytes of the checkpoint.
    pub checkpoint_bytes: u64,
    /// From its first part written to its manifest.
    pub checkpoint_ms: u64,
    /// Feed-head entries after the history.
    pub head_entries: u64,
}

impl fmt::Display for RestartReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "sink                        {}", self.sink)?;
        writeln!(
            f,
            "history / new events        {} / {}",
            self.history, self.new
        )?;
        writeln!(
            f,
            "full replay                 {:.2} s",
            self.full_replay_secs
        )?;
        writeln!(
            f,
            "restart from a checkpoint   {:.2} s ({} events read)",
            self.restart_secs, self.restart_read
        )?;
        writeln!(
            f,
            "  full replay / restart     {:.1}x",
            self.full_replay_secs / self.restart_secs.max(1e-9)
        )?;
        writeln!(
            f,
            "checkpoint                  {} bytes, written in {} ms",
            self.checkpoint_bytes, self.checkpoint_ms
        )?;
        writeln!(
            f,
            "  bytes per head entry      {:.0} ({} entries)",
            self.checkpoint_bytes as f64 / self.head_entries.max(1) as f64,
            self.head_entries
        )
    }
}

fn write_events(path: &Path, events: impl Iterator<Item = crate::event::Event>) -> Result<u64> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut n = 0;
    for event in events {
        writeln!(out, "{}", encode(&event))?;
        n += 1;
    }
    out.flush()?;
    Ok(n)
}

fn topology(
    options: &BenchOptions,
    events: &Path,
    dir: &Path,
    checkpoint: CheckpointConfig,
) -> TopologyConfig {
    let mut topology: TopologyConfig = toml::from_str("name = \"restart\"").expect("defaults");
    topology.spouts = vec![SpoutConfig::File(FileSpoutConfig {
        path: events.to_owned(),
        follow: true,
    })];
    topology.feed = options.feed.clone();
    topology.digests = if options.digests {
        vec![DigestConfig::default()]
    } else {
        Vec::new()
    };
    topology.notifications = NotificationsConfig {
        enabled: options.digests,
        ..NotificationsConfig::default()
    };
    if let Some(url) = &options.redis {
        topology.sink = SinkConfig::Redis(RedisSinkConfig::new(url, "restart"));
    }
    topology.dead_letter.path = dir.join("dead-letters.jsonl");
    topology.checkpoint = checkpoint;
    topology
}

/// Waits until `running` has read `events` events and caught up.
fn wait_caught_up(running: &Running, events: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(3_600);
    while !(running.status.caught_up() && running.status.events_in() >= events) {
        if Instant::now() > deadline || !running.status.healthy() {
            return Err(Error::Checkpoint(format!(
                "not caught up: {} of {events} events read",
                running.status.events_in()
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Waits for the first checkpoint taken after `running` caught up.
fn checkpoint_after_catching_up(running: &Running) -> Result<crate::checkpoint::Summary> {
    let caught_up_at = running.status.uptime().as_millis() as u64;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        match running.status.last_checkpoint() {
            Some(last) if last.epoch > caught_up_at => return Ok(last),
            _ if Instant::now() > deadline => {
                return Err(Error::Checkpoint("no checkpoint after catching up".into()))
            }
            _ => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Runs the restart benchmark: `new` events after the workload's history.
pub fn run(options: &BenchOptions, new: u64) -> Result<RestartReport> {
    let dir = std::env::temp_dir().join(format!("feedstorm-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let workload = &options.workload;
    let history = Generator::total(workload).ok_or_else(|| Error::Setting {
        setting: "events",
        message: "the restart bench needs a bounded workload".into(),
    })?;
    let mut longer = workload.clone();
    longer.events = workload.events.map(|e| e + new);
    let run = RunOptions::threads(options.workers);

    // The full replay: history and new events from scratch.
    let full = dir.join("full.jsonl");
    let total = write_events(&full, Generator::sequence(&longer))?;
    redis_memory(options, true)?;
    settle_heap();
    let started = Instant::now();
    let running = Running::start(
        &topology(options, &full, &dir, CheckpointConfig::off()),
        &run,
    )?;
    wait_caught_up(&running, total)?;
    let full_replay_secs = started.elapsed().as_secs_f64();
    drop(running);

    // The history, checkpointed, then dropped without a clean stop.
    let events = dir.join("events.jsonl");
    write_events(&events, Generator::sequence(workload))?;
    redis_memory(options, true)?;
    let checkpoint = CheckpointConfig {
        dir: dir.join("checkpoints"),
        interval: Duration::from_secs(1),
        keep: 2,
    };
    let topology = topology(options, &events, &dir, checkpoint);
    let running = Running::start(&topology, &run)?;
    wait_caught_up(&running, history)?;
    let last = checkpoint_after_catching_up(&running)?;
    let head_entries = running.store.stats().entries;
    drop(running);

    // The restart, with the new events appended.
    {
        let mut out = std::fs::OpenOptions::new().append(true).open(&events)?;
        for event in Generator::sequence(&longer).skip(history as usize) {
            writeln!(out, "{}", encode(&event))?;
        }
    }
    // At the default interval, as deployed (1 s only got one soon above).
    let mut topology = topology;
    topology.checkpoint.interval = CheckpointConfig::default().interval;
    settle_heap();
    let started = Instant::now();
    let running = Running::start(&topology, &run)?;
    wait_caught_up(&running, new)?;
    let restart_secs = started.elapsed().as_secs_f64();
    let restart_read = running.status.events_in();
    drop(running);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(RestartReport {
        sink: options.redis.as_ref().map_or("embedded", |_| "redis"),
        history,
        new,
        full_replay_secs,
        restart_secs,
        restart_read,
        checkpoint_bytes: last.bytes,
        checkpoint_ms: last.duration_ms,
        head_entries,
    })
}
