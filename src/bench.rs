//! `feedstorm bench`: end-to-end throughput and memory of the topology on a
//! generated workload, reported beside a from-scratch recomputation of the
//! same feeds in the same run (the [`reference`](crate::reference) model),
//! since absolute figures on a shared machine mean little.

use std::fmt;
use std::time::Instant;

use crate::config::{FeedConfig, GeneratorConfig, InputConfig, SpoutConfig, TopologyConfig};
use crate::error::Result;
use crate::reference;
use crate::runtime::{RunOptions, Running};
use crate::spout::Generator;

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// The workload.
    pub workload: GeneratorConfig,
    /// Worker threads.
    pub workers: usize,
    /// Feed settings.
    pub feed: FeedConfig,
    /// Whether to check every feed against the reference model afterwards.
    pub verify: bool,
}

/// The measured figures.
#[derive(Clone, Debug)]
pub struct BenchReport {
    /// Events in the workload.
    pub events: u64,
    /// Delivery updates the feed-head bolt consumed.
    pub deliveries: u64,
    /// Entries over all feed heads at the end.
    pub head_entries: u64,
    /// Seconds the topology took, start to all written.
    pub topology_secs: f64,
    /// Seconds the from-scratch recomputation took.
    pub reference_secs: f64,
    /// Peak resident memory growth of the process during the topology run.
    pub peak_rss_growth: u64,
    /// Whether every feed equalled the reference model (`None`: not checked).
    pub verified: Option<bool>,
    /// Worker threads.
    pub workers: usize,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "workers                     {}", self.workers)?;
        writeln!(f, "events                      {}", self.events)?;
        writeln!(f, "feed deliveries             {}", self.deliveries)?;
        writeln!(f, "feed-head entries           {}", self.head_entries)?;
        writeln!(f, "topology                    {:.2} s", self.topology_secs)?;
        writeln!(
            f,
            "  events/s                  {:.0}",
            self.events as f64 / self.topology_secs
        )?;
        writeln!(
            f,
            "  feed deliveries/s         {:.0}",
            self.deliveries as f64 / self.topology_secs
        )?;
        writeln!(
            f,
            "reference recompute         {:.2} s (single thread, from scratch)",
            self.reference_secs
        )?;
        writeln!(
            f,
            "  topology / recompute time {:.2}",
            self.topology_secs / self.reference_secs
        )?;
        writeln!(
            f,
            "peak RSS growth             {} MiB",
            self.peak_rss_growth >> 20
        )?;
        writeln!(
            f,
            "  bytes per feed-head entry {:.0} (all state: arrangements, candidates, store)",
            self.peak_rss_growth as f64 / self.head_entries.max(1) as f64
        )?;
        writeln!(
            f,
            "  bytes per delivery        {:.0}",
            self.peak_rss_growth as f64 / self.deliveries.max(1) as f64
        )?;
        match self.verified {
            Some(true) => writeln!(
                f,
                "verified                    every feed equals the reference model"
            ),
            Some(false) => writeln!(
                f,
                "verified                    MISMATCH against the reference model"
            ),
            None => writeln!(f, "verified                    not checked"),
        }
    }
}

/// Resident set size and its peak, in bytes, from `/proc/self/status`.
pub fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Runs the benchmark.
pub fn run(options: &BenchOptions) -> Result<BenchReport> {
    let events = Generator::total(&options.workload).unwrap_or(0);
    let topology = TopologyConfig {
        name: "bench".into(),
        spouts: vec![SpoutConfig::Generator(options.workload.clone())],
        input: InputConfig::default(),
        feed: options.feed.clone(),
        sink: Default::default(),
        dead_letter: Default::default(),
        drpc: Default::default(),
    };
    let (rss_before, _) = rss();
    let started = Instant::now();
    let running = Running::start(
        &topology,
        &RunOptions {
            workers: options.workers,
        },
    )?;
    let (status, store) = (running.status.clone(), running.store.clone());
    running.finish()?;
    let topology_secs = started.elapsed().as_secs_f64();
    let (_, peak) = rss();

    let all: Vec<_> = Generator::sequence(&options.workload).collect();
    let started = Instant::now();
    let expected = reference::feeds(&all, &options.feed);
    let reference_secs = started.elapsed().as_secs_f64();

    let verified = options.verify.then(|| {
        let users = store.users().unwrap_or_default();
        users.len() == expected.len()
            && expected
                .iter()
                .all(|(user, head)| store.feed_keys(user).ok().as_ref() == Some(head))
    });
    Ok(BenchReport {
        events,
        deliveries: status.feed_deliveries(),
        head_entries: store.stats().entries,
        topology_secs,
        reference_secs,
        peak_rss_growth: peak.saturating_sub(rss_before),
        verified,
        workers: options.workers,
    })
}
