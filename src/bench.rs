//! `feedstorm bench`: end-to-end throughput and memory of the topology on a
//! generated workload, reported beside a from-scratch recomputation of the
//! same feeds in the same run (the reference model, the `feedstorm-reference`
//! crate), since absolute figures on a shared machine mean little.

use std::fmt;
use std::time::Instant;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{
    DeadLetterConfig, DigestConfig, FeedConfig, FileSpoutConfig, GeneratorConfig, InputConfig,
    Materialize, NotificationsConfig, SpoutConfig, TopologyConfig,
};
use crate::config::{RedisSinkConfig, SinkConfig};
use crate::error::Result;
use crate::event::{encode, Event, InterestOp, TypedId};
use crate::judge;
use crate::runtime::{RunOptions, Running};
use crate::spout::Generator;
use feedstorm_reference as reference;

pub mod plot;
pub mod restart;

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// The workload.
    pub workload: GeneratorConfig,
    /// Worker threads.
    pub workers: usize,
    /// Feed settings (including `materialize`).
    pub feed: FeedConfig,
    /// Keep the default digest and notification feeds too.
    pub digests: bool,
    /// Whether to check feeds against the reference model afterwards.
    pub verify: bool,
    /// In `active` mode, the share of users who read their feed at the start.
    pub active_fraction: f64,
    /// Rebuild requests timed per probe user.
    pub latency_samples: usize,
    /// Write feeds to this Redis database instead of the embedded store. The
    /// benchmark empties it (FLUSHDB) first: give it a spare database.
    pub redis: Option<String>,
}

/// The measured figures of one run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchReport {
    /// `all` or `active`.
    pub materialize: String,
    /// Events in the workload.
    pub events: u64,
    /// Delivery updates the feed-head bolt consumed.
    pub deliveries: u64,
    /// Digest and notification group changes emitted (0 without digests).
    pub digest_updates: u64,
    /// Entries over all materialized feed heads at the end.
    pub head_entries: u64,
    /// Users whose head is live (`active` mode) or with a non-empty head (`all`).
    pub live_users: u64,
    /// Seconds the topology took, start to all written.
    pub topology_secs: f64,
    /// Seconds the from-scratch recomputation took.
    pub reference_secs: f64,
    /// Peak resident memory growth of the process during the topology run.
    pub peak_rss_growth: u64,
    /// Resident memory growth held at the end of the run, after freed memory
    /// is returned to the OS: the state the topology keeps.
    pub held_rss_growth: u64,
    /// Rebuild latency per probe user: (interests, p50 ms, p99 ms).
    pub rebuild_latency: Vec<(usize, f64, f64)>,
    /// Every timed rebuild per probe user: (interests, milliseconds, sorted).
    #[serde(default)]
    pub rebuild_samples: Vec<(usize, Vec<f64>)>,
    /// The run sampled every [`SAMPLE_EVERY`]: for `bench --plot`.
    #[serde(default)]
    pub timeline: Vec<Sample>,
    /// With Redis: `used_memory` growth of the server (INFO memory).
    pub redis_memory_growth: Option<u64>,
    /// With Redis: head changes written per second (ZADD/ZREM in pipelines).
    pub redis_writes_per_sec: Option<f64>,
    /// With Redis: `redis-benchmark -t zadd -P 64` on the same server, same run.
    pub redis_benchmark_zadd_per_sec: Option<f64>,
    /// Whether every checked feed equalled the reference model (`None`: not checked).
    pub verified: Option<bool>,
    /// Worker threads.
    pub workers: usize,
    /// Share of users who follow the most followed typed id at the end (skew).
    pub top_followed_share: f64,
    /// Share of events whose time is older than the newest time before them.
    pub late_share: f64,
}

/// How often the topology run is sampled for the timeline.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// The run at one moment.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the topology started.
    pub secs: f64,
    /// Feed deliveries so far.
    pub deliveries: u64,
    /// Resident memory growth since the start, in bytes.
    pub rss_growth: u64,
}

/// Samples `status` and the resident memory until `done` is set.
fn sample_run(
    status: std::sync::Arc<crate::status::Status>,
    rss_before: u64,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<Sample>> {
    let started = Instant::now();
    std::thread::spawn(move || {
        let mut samples = Vec::new();
        loop {
            samples.push(Sample {
                secs: started.elapsed().as_secs_f64(),
                deliveries: status.feed_deliveries(),
                rss_growth: rss().0.saturating_sub(rss_before),
            });
            if done.load(std::sync::atomic::Ordering::Acquire) {
                return samples;
            }
            std::thread::sleep(SAMPLE_EVERY);
        }
    })
}

/// Of the users, the share following the most followed typed id at the end
/// (last writer wins), and the share of events that arrived out of time order.
fn workload_shape(events: &[Event], judged: &[reference::Event]) -> (f64, f64) {
    let mut users = std::collections::HashSet::new();
    let (mut newest, mut late) = (i64::MIN, 0usize);
    for event in events {
        if event.time() < newest {
            late += 1;
        }
        newest = newest.max(event.time());
        if let Event::Interest { user, .. } = event {
            users.insert(user);
        }
    }
    let mut followers: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for followed in reference::in_force(judged, reference::Relation::Follow).into_values() {
        for interest in followed {
            *followers.entry(interest).or_default() += 1;
        }
    }
    let top = followers.values().copied().max().unwrap_or(0);
    (
        top as f64 / users.len().max(1) as f64,
        late as f64 / events.len().max(1) as f64,
    )
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_rates(f)?;
        self.fmt_memory(f)?;
        self.fmt_redis(f)?;
        self.fmt_rebuilds(f)
    }
}

impl BenchReport {
    /// The workload, the throughput and the reference's time.
    fn fmt_rates(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "materialize                 {}", self.materialize)?;
        writeln!(f, "workers                     {}", self.workers)?;
        writeln!(f, "events                      {}", self.events)?;
        writeln!(
            f,
            "  most followed / users     {:.2} (skew)",
            self.top_followed_share
        )?;
        writeln!(f, "  late events               {:.3}", self.late_share)?;
        writeln!(f, "feed deliveries             {}", self.deliveries)?;
        writeln!(
            f,
            "live feeds / head entries   {} / {}",
            self.live_users, self.head_entries
        )?;
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
        if self.digest_updates > 0 {
            writeln!(
                f,
                "  digest updates/s          {:.0} ({:.3} per feed delivery)",
                self.digest_updates as f64 / self.topology_secs,
                self.digest_updates as f64 / self.deliveries as f64
            )?;
        }
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
        Ok(())
    }

    /// Memory, per head entry and per delivery.
    fn fmt_memory(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "peak RSS growth             {} MiB",
            self.peak_rss_growth >> 20
        )?;
        writeln!(
            f,
            "held RSS growth             {} MiB (at the end, after malloc_trim)",
            self.held_rss_growth >> 20
        )?;
        writeln!(
            f,
            "  held bytes per head entry {:.0} (all state: stories, interests, candidates, store)",
            self.held_rss_growth as f64 / self.head_entries.max(1) as f64
        )?;
        writeln!(
            f,
            "  peak bytes per head entry {:.0}",
            self.peak_rss_growth as f64 / self.head_entries.max(1) as f64
        )?;
        writeln!(
            f,
            "  bytes per delivery        {:.0}",
            self.peak_rss_growth as f64 / self.deliveries.max(1) as f64
        )?;
        Ok(())
    }

    /// Redis figures, when the run wrote to Redis.
    fn fmt_redis(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let (Some(memory), Some(writes), Some(zadd)) = (
            self.redis_memory_growth,
            self.redis_writes_per_sec,
            self.redis_benchmark_zadd_per_sec,
        ) {
            writeln!(f, "redis used_memory growth    {} MiB", memory >> 20)?;
            writeln!(
                f,
                "  bytes per feed-head entry {:.0} (INFO memory)",
                memory as f64 / self.head_entries.max(1) as f64
            )?;
            let deliveries = self.deliveries as f64 / self.topology_secs;
            writeln!(
                f,
                "redis-benchmark zadd -P 64  {zadd:.0} /s (same server, same run)"
            )?;
            writeln!(
                f,
                "  deliveries/s into Redis / redis-benchmark  {:.2}",
                deliveries / zadd
            )?;
            writeln!(
                f,
                "  head writes/s (ZADD/ZREM/DEL) / redis-benchmark  {:.3}",
                writes / zadd
            )?;
        }
        Ok(())
    }

    /// Rebuild latencies and the verdict against the reference.
    fn fmt_rebuilds(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (interests, p50, p99) in &self.rebuild_latency {
            writeln!(
                f,
                "rebuild, {interests:>4} interests     p50 {p50:.2} ms  p99 {p99:.2} ms"
            )?;
        }
        match self.verified {
            Some(true) => writeln!(
                f,
                "verified                    every checked feed equals the reference model"
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

/// Returns freed heap memory to the OS. Before a timed start, the start
/// then meets the heap a new process has: no pages a run before freed to
/// reuse (which made a restart look faster than a new process is), nor
/// small free chunks to consolidate.
pub fn settle_heap() {
    // SAFETY: malloc_trim only releases free heap pages; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Resident memory after returning freed heap memory to the OS.
pub fn held_rss() -> u64 {
    settle_heap();
    rss().0
}

/// The server's `used_memory`; with `flush`, empties the database first.
fn redis_used_memory(url: &str, flush: bool) -> Result<u64> {
    let fail = |e: redis::RedisError| crate::Error::Sink(format!("redis: {e}"));
    let mut connection = redis::Client::open(url)
        .map_err(fail)?
        .get_connection()
        .map_err(fail)?;
    if flush {
        redis::cmd("FLUSHDB")
            .query::<()>(&mut connection)
            .map_err(fail)?;
    }
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query(&mut connection)
        .map_err(fail)?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

/// Runs `redis-benchmark -t zadd -P 64 -q` against the server of `url`.
fn redis_benchmark_zadd(url: &str) -> Result<f64> {
    let info = redis::Client::open(url)
        .map_err(|e| crate::Error::Sink(e.to_string()))?
        .get_connection_info()
        .clone();
    let (host, port) = match info.addr() {
        redis::ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
        other => {
            return Err(crate::Error::Sink(format!(
                "redis-benchmark needs a TCP address, not {other:?}"
            )))
        }
    };
    let output = std::process::Command::new("redis-benchmark")
        .args([
            "-h",
            &host,
            "-p",
            &port.to_string(),
            "-t",
            "zadd",
            "-P",
            "64",
            "-q",
            "-n",
            "2000000",
        ])
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    // "ZADD: 1234567.00 requests per second, p50=..." (the last \r-separated report)
    text.rsplit(['\r', '\n'])
        .find_map(|part| part.trim().strip_prefix("ZADD: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| crate::Error::Sink(format!("cannot read redis-benchmark output: {text:?}")))
}

const PROBES: [usize; 3] = [10, 100, 1_000];

/// Follow events giving `user:probeN` exactly N interests, early in the workload.
fn probe_events(workload: &GeneratorConfig) -> Vec<Event> {
    let mut events = Vec::new();
    for n in PROBES {
        let user = TypedId::parse(&format!("user:probe{n}")).expect("valid");
        for i in 0..n as u64 {
            let interest = if i % 2 == 0 {
                format!("user:u{}", (i / 2) % workload.users.max(1))
            } else {
                format!("listing:l{}", (i / 2) % workload.listings.max(1))
            };
            events.push(Event::Interest {
                time: workload.start_time,
                user: user.clone(),
                interest: TypedId::parse(&interest).expect("valid"),
                op: InterestOp::Follow,
            });
        }
    }
    events
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The bench's topology: the generator's workload, then the probe users'
/// events from a file in `dir`, into the embedded store (or Redis). Returns
/// it with the probe events.
fn bench_topology(
    options: &BenchOptions,
    dir: &std::path::Path,
) -> Result<(TopologyConfig, Vec<Event>)> {
    std::fs::create_dir_all(dir)?;
    let probe_path = dir.join("probes.jsonl");
    let probes = probe_events(&options.workload);
    std::fs::write(
        &probe_path,
        probes.iter().map(|e| encode(e) + "\n").collect::<String>(),
    )?;
    let topology = TopologyConfig {
        name: "bench".into(),
        spouts: vec![
            SpoutConfig::Generator(options.workload.clone()),
            SpoutConfig::File(FileSpoutConfig {
                path: probe_path,
                follow: false,
            }),
        ],
        input: InputConfig::default(),
        feed: options.feed.clone(),
        digests: if options.digests {
            vec![DigestConfig::default()]
        } else {
            Vec::new()
        },
        notifications: NotificationsConfig {
            enabled: options.digests,
            ..NotificationsConfig::default()
        },
        sink: match &options.redis {
            None => SinkConfig::default(),
            Some(url) => SinkConfig::Redis(RedisSinkConfig::new(url, "bench")),
        },
        dead_letter: DeadLetterConfig {
            path: dir.join("dead-letters.jsonl"),
            topic: None,
            brokers: None,
        },
        drpc: Default::default(),
        checkpoint: crate::config::CheckpointConfig::off(),
    };
    Ok((topology, probes))
}

/// Rebuild latencies (p50, p99) and samples per probe user, and the heads
/// the rebuilds answered.
#[allow(clippy::type_complexity)]
fn time_rebuilds(
    running: &Running,
    options: &BenchOptions,
    timeout: Duration,
) -> Result<(
    Vec<(usize, f64, f64)>,
    Vec<(usize, Vec<f64>)>,
    Vec<(TypedId, Vec<crate::feed::FeedKey>)>,
)> {
    let mut rebuild_latency = Vec::new();
    let mut rebuild_samples = Vec::new();
    let mut rebuilt = Vec::new();
    for n in PROBES {
        let user = TypedId::parse(&format!("user:probe{n}")).expect("valid");
        let mut millis = Vec::new();
        for _ in 0..options.latency_samples.max(1) {
            let t = Instant::now();
            let head = running
                .drpc
                .call_blocking(user.clone(), timeout)
                .map_err(|e| crate::Error::Sink(e.to_string()))?;
            millis.push(t.elapsed().as_secs_f64() * 1e3);
            rebuilt.push((user.clone(), head));
        }
        millis.sort_by(f64::total_cmp);
        rebuild_latency.push((n, percentile(&millis, 0.5), percentile(&millis, 0.99)));
        rebuild_samples.push((n, millis));
    }
    Ok((rebuild_latency, rebuild_samples, rebuilt))
}

/// The heads a run left, against the reference's.
struct Heads<'a> {
    store: &'a dyn crate::store::Store,
    expected: &'a std::collections::BTreeMap<String, Vec<reference::Entry>>,
    /// In `active` mode, the users who read their feed (the only live heads).
    readers: Option<&'a [TypedId]>,
}

impl Heads<'_> {
    fn head_of(&self, user: &TypedId) -> Vec<reference::Entry> {
        self.expected
            .get(user.as_str())
            .cloned()
            .unwrap_or_default()
    }

    /// `user`'s head as the store holds it.
    fn stored(&self, user: &TypedId) -> Option<Vec<reference::Entry>> {
        self.store
            .feed_keys(user)
            .ok()
            .map(|keys| judge::entries(&keys))
    }

    /// Whether every live head equals the reference (and, in `all` mode,
    /// every user with a feed has one).
    fn right(&self) -> bool {
        match self.readers {
            Some(readers) => readers
                .iter()
                .all(|u| self.stored(u) == Some(self.head_of(u))),
            None => {
                let users = self.store.users().unwrap_or_default();
                users.len() == self.expected.len()
                    && users
                        .iter()
                        .all(|u| self.stored(u) == Some(self.head_of(u)))
            }
        }
    }
}

/// In active mode, the share of the users who read their feed at the start.
fn readers(options: &BenchOptions) -> Vec<TypedId> {
    if options.feed.materialize != Materialize::Active {
        return Vec::new();
    }
    let every = (1.0 / options.active_fraction.max(1e-9)).round().max(1.0) as u64;
    (0..options.workload.users)
        .filter(|u| u % every == 0)
        .map(|u| TypedId::parse(&format!("user:u{u}")).expect("valid"))
        .collect()
}

/// Waits for the topology to finish its input, sampling deliveries and
/// memory meanwhile; returns the seconds since `started` and the samples.
fn wait_sampled(running: &Running, started: Instant, rss_before: u64) -> (f64, Vec<Sample>) {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_run(running.status.clone(), rss_before, done.clone());
    running.wait_finished();
    let secs = started.elapsed().as_secs_f64();
    done.store(true, std::sync::atomic::Ordering::Release);
    (secs, sampler.join().unwrap_or_default())
}

/// Redis's `used_memory` when the run writes to Redis (`flush`: empty the
/// database first).
pub(crate) fn redis_memory(options: &BenchOptions, flush: bool) -> Result<Option<u64>> {
    options
        .redis
        .as_deref()
        .map(|url| redis_used_memory(url, flush))
        .transpose()
}

/// Waits for the rebuild answers `pending` (the active readers' first reads).
fn wait_for_answers(
    running: &Running,
    pending: Vec<(
        u64,
        tokio::sync::oneshot::Receiver<Vec<crate::feed::FeedKey>>,
    )>,
    timeout: Duration,
) -> Result<()> {
    let waiter = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    for (id, answer) in pending {
        let _ = waiter.block_on(running.drpc.wait(id, answer, timeout));
    }
    Ok(())
}

/// `f`'s result and the seconds it took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let started = Instant::now();
    let result = f();
    (result, started.elapsed().as_secs_f64())
}

/// Runs the benchmark in this process, in the mode `options.feed.materialize` says.
pub fn run(options: &BenchOptions) -> Result<BenchReport> {
    let dir = std::env::temp_dir().join(format!("feedstorm-bench-{}", std::process::id()));
    let (topology, probes) = bench_topology(options, &dir)?;
    let events = Generator::total(&options.workload).unwrap_or(0) + probes.len() as u64;
    let redis_before = redis_memory(options, true)?;
    let rss_before = held_rss();
    let started = Instant::now();
    let running = Running::start(&topology, &RunOptions::threads(options.workers))?;
    let active_mode = options.feed.materialize == Materialize::Active;
    let readers = readers(options);
    let pending: Vec<_> = readers
        .iter()
        .map(|u| running.drpc.submit(u.clone()))
        .collect();
    let (topology_secs, timeline) = wait_sampled(&running, started, rss_before);
    let (_, peak) = rss();
    let held = held_rss();
    let redis_memory_growth = redis_memory(options, false)?
        .zip(redis_before)
        .map(|(after, before)| after.saturating_sub(before));
    let timeout = Duration::from_secs(60);
    wait_for_answers(&running, pending, timeout)?;

    let (rebuild_latency, rebuild_samples, rebuilt) = time_rebuilds(&running, options, timeout)?;
    let (status, store) = (running.status.clone(), running.store.clone());
    let live_users = if active_mode {
        running.drpc.active_users() as u64
    } else {
        store.stats().feeds
    };
    running.stop()?;
    let _ = std::fs::remove_dir_all(&dir);

    let judged = Judged::of(options, probes, store.as_ref(), &readers, &rebuilt);
    let verified = judged.verified.map(|v| v && status.drpc_mismatches() == 0);
    let head_changes = status.head_changes();
    Ok(BenchReport {
        redis_memory_growth,
        redis_writes_per_sec: options
            .redis
            .as_ref()
            .map(|_| head_changes as f64 / topology_secs),
        redis_benchmark_zadd_per_sec: options
            .redis
            .as_deref()
            .map(redis_benchmark_zadd)
            .transpose()?,
        materialize: if active_mode { "active" } else { "all" }.into(),
        events,
        deliveries: status.feed_deliveries(),
        digest_updates: status.digest_updates(),
        head_entries: store.stats().entries,
        live_users,
        topology_secs,
        reference_secs: judged.reference_secs,
        peak_rss_growth: peak.saturating_sub(rss_before),
        held_rss_growth: held.saturating_sub(rss_before),
        rebuild_latency,
        rebuild_samples,
        timeline,
        verified,
        workers: options.workers,
        top_followed_share: judged.top_followed_share,
        late_share: judged.late_share,
    })
}

/// A run against the reference model.
struct Judged {
    reference_secs: f64,
    verified: Option<bool>,
    top_followed_share: f64,
    late_share: f64,
}

impl Judged {
    /// Recomputes the run's feeds with the reference (timed), and checks
    /// the heads the run left (in `active` mode, the `readers`' only), the
    /// `rebuilt` answers and, with digests, every digest.
    fn of(
        options: &BenchOptions,
        probes: Vec<Event>,
        store: &dyn crate::store::Store,
        readers: &[TypedId],
        rebuilt: &[(TypedId, Vec<crate::feed::FeedKey>)],
    ) -> Judged {
        let mut all: Vec<Event> = Generator::sequence(&options.workload).collect();
        all.extend(probes);
        let judged = judge::events(&all);
        let (top_followed_share, late_share) = workload_shape(&all, &judged);
        let settings = judge::settings(&options.feed);
        let (expected, reference_secs) = timed(|| reference::feeds(&judged, &settings));
        let active_mode = options.feed.materialize == Materialize::Active;
        let heads = Heads {
            store,
            expected: &expected,
            readers: active_mode.then_some(readers),
        };
        let verified = options.verify.then(|| {
            heads.right()
                && rebuilt
                    .iter()
                    .all(|(u, head)| judge::entries(head) == heads.head_of(u))
                && (!options.digests || digests_right(store, &judged, options))
        });
        Judged {
            reference_secs,
            verified,
            top_followed_share,
            late_share,
        }
    }
}

/// Whether every default digest and notification feed equals the reference.
fn digests_right(
    store: &dyn crate::store::Store,
    events: &[reference::Event],
    options: &BenchOptions,
) -> bool {
    let settings = judge::settings(&options.feed);
    let digest = DigestConfig::default();
    let expected = [
        (
            digest.name.as_str(),
            reference::digests(events, &settings, &judge::digest_settings(&digest)),
        ),
        (
            crate::config::NOTIFICATIONS,
            reference::notifications(
                events,
                &settings,
                &judge::notification_settings(&NotificationsConfig::default()),
            ),
        ),
    ];
    expected.iter().all(|(name, expected)| {
        let users = store.digest_users(name).unwrap_or_default();
        users.len() == expected.len()
            && users.iter().all(|user| {
                let stored = store.digest_groups(user, name).unwrap_or_default();
                let stored: Vec<reference::Group> =
                    stored.iter().map(|g| judge::group(g)).collect();
                expected.get(user.as_str()) == Some(&stored)
            })
    })
}
