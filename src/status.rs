//! Counters and progress shared by the workers and the HTTP API.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Instant;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};

use crate::event::unix_ms;
use crate::observe::Operators;
use crate::spout::Backlog;
use crate::store::StoreStats;

/// One worker's spout progress, for `caught_up`.
#[derive(Debug, Default)]
pub struct WorkerProgress {
    /// Epochs this worker put in that are not yet fully written.
    pending: AtomicU64,
    /// The worker's spouts had nothing more at their last poll.
    drained: AtomicBool,
    /// Every spout of the worker is exhausted (finite sources only).
    finished: AtomicBool,
    /// An epoch after which the spouts had nothing more is written: the
    /// worker has caught up once, though a steady stream may keep an epoch
    /// in flight at every moment since.
    caught_up_once: AtomicBool,
    /// What each of its spouts reads (Kafka: `topic/partition`).
    sources: std::sync::Mutex<Vec<String>>,
    /// Per part read, how far it is read and where it ends.
    backlog: std::sync::Mutex<Vec<Backlog>>,
    /// Epochs put in and written since the start, and the latest written.
    written: AtomicU64,
    last_written: AtomicU64,
    /// Bytes of events read and not yet written, now and at most so far.
    bytes_in_flight: AtomicU64,
    bytes_in_flight_peak: AtomicU64,
}

impl WorkerProgress {
    /// Records what the worker's spouts read.
    pub fn set_sources(&self, sources: Vec<String>) {
        *self.sources.lock().expect("status lock") = sources;
    }
    /// Records the bytes of events in flight.
    pub fn set_bytes_in_flight(&self, bytes: u64) {
        self.bytes_in_flight.store(bytes, SeqCst);
        self.bytes_in_flight_peak.fetch_max(bytes, SeqCst);
    }
    /// Records how far the worker's spouts have read.
    pub fn set_backlog(&self, backlog: Vec<Backlog>) {
        *self.backlog.lock().expect("status lock") = backlog;
    }
    /// How far the worker's spouts have read, as last recorded.
    pub fn backlog(&self) -> Vec<Backlog> {
        self.backlog.lock().expect("status lock").clone()
    }
    /// Epochs put in and not yet written.
    pub fn epochs_in_flight(&self) -> u64 {
        self.pending.load(SeqCst)
    }
    /// Epochs put in and written since the start.
    pub fn epochs_written(&self) -> u64 {
        self.written.load(SeqCst)
    }
    /// The latest epoch written (0 before any).
    pub fn last_written(&self) -> u64 {
        self.last_written.load(SeqCst)
    }
    /// What the worker's spouts read.
    pub fn sources(&self) -> Vec<String> {
        self.sources.lock().expect("status lock").clone()
    }
    /// Called before an epoch's events are counted in, so that a reader who
    /// sees the new `events_in` also sees the epoch pending.
    pub fn begin_epoch(&self) {
        self.pending.fetch_add(1, SeqCst);
        self.drained.store(false, SeqCst);
    }
    /// `epoch` is written.
    pub fn end_epoch(&self, epoch: u64) {
        self.pending.fetch_sub(1, SeqCst);
        self.written.fetch_add(1, SeqCst);
        self.last_written.fetch_max(epoch, SeqCst);
    }
    /// Whether the spouts had nothing more at their last poll.
    pub fn set_drained(&self, drained: bool) {
        self.drained.store(drained, SeqCst);
    }
    /// Every spout of the worker is exhausted.
    pub fn set_finished(&self) {
        self.finished.store(true, SeqCst);
    }
    /// An epoch read up to everything then available is written.
    pub fn set_caught_up_once(&self) {
        self.caught_up_once.store(true, SeqCst);
    }
    fn caught_up(&self) -> bool {
        self.drained.load(SeqCst) && self.pending.load(SeqCst) == 0
    }
    fn was_caught_up(&self) -> bool {
        self.caught_up_once.load(SeqCst) || self.caught_up()
    }
}

/// A gauge holding `value`.
fn gauge(value: u64) -> Gauge {
    let gauge = Gauge::default();
    gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
    gauge
}

/// Process-wide status.
#[derive(Debug)]
pub struct Status {
    name: String,
    started: Instant,
    /// When the first worker began sending epochs (see [`Status::epoch_clock`]).
    epoch_clock: std::sync::OnceLock<Instant>,
    events_in: AtomicU64,
    events_bad: AtomicU64,
    deliveries: AtomicU64,
    head_changes: AtomicU64,
    digest_updates: AtomicU64,
    drpc_mismatches: AtomicU64,
    sink_ok: AtomicBool,
    failed: AtomicBool,
    abandoned: AtomicBool,
    recovered: AtomicBool,
    /// Recovering operators over all local workers.
    recovery_emitters: std::sync::atomic::AtomicUsize,
    /// Operators whose recovered state was emitted, and the latest epoch of them.
    recovery_emitted: std::sync::Mutex<(usize, u64)>,
    recovery_written: AtomicBool,
    workers: Vec<WorkerProgress>,
    checkpoints: std::sync::OnceLock<std::sync::Arc<crate::checkpoint::Checkpoints>>,
    operators: std::sync::Arc<Operators>,
}

impl Status {
    /// Status for a topology with `workers` local workers.
    pub fn new(name: &str, workers: usize) -> Status {
        Status {
            name: name.to_owned(),
            started: Instant::now(),
            epoch_clock: std::sync::OnceLock::new(),
            events_in: AtomicU64::new(0),
            events_bad: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            head_changes: AtomicU64::new(0),
            digest_updates: AtomicU64::new(0),
            drpc_mismatches: AtomicU64::new(0),
            sink_ok: AtomicBool::new(true),
            failed: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
            recovered: AtomicBool::new(false),
            recovery_emitters: std::sync::atomic::AtomicUsize::new(0),
            recovery_emitted: std::sync::Mutex::new((0, 0)),
            recovery_written: AtomicBool::new(true),
            workers: (0..workers).map(|_| WorkerProgress::default()).collect(),
            checkpoints: std::sync::OnceLock::new(),
            operators: std::sync::Arc::new(Operators::new(workers)),
        }
    }

    /// Each operator's figures from timely's logging.
    pub fn operators(&self) -> &std::sync::Arc<Operators> {
        &self.operators
    }

    /// Time since the topology started.
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// The clock this process's workers count epochs on: set by the first
    /// to ask, once the processes have met, so that the workers' epochs
    /// line up with each other's and, within milliseconds, with those of
    /// the other processes (which met at the same moment).
    pub fn epoch_clock(&self) -> Instant {
        *self.epoch_clock.get_or_init(Instant::now)
    }

    /// Shows `checkpoints` in `/status` and `/metrics`.
    pub fn attach_checkpoints(&self, checkpoints: std::sync::Arc<crate::checkpoint::Checkpoints>) {
        let _ = self.checkpoints.set(checkpoints);
    }

    /// For a resume on a persistent store: the users written since this
    /// time are all whose stored state may be stale (see
    /// [`Checkpoints::resumed_store_since`](crate::checkpoint::Checkpoints::resumed_store_since)).
    pub fn resumed_store_since(&self) -> Option<u64> {
        self.checkpoints.get()?.resumed_store_since()
    }

    /// The run's start (Unix milliseconds) that epochs count from in
    /// checkpoints: the agreed run with checkpoints, else the start of the
    /// workers' [`epoch_clock`](Self::epoch_clock).
    pub fn run_ms(&self) -> u64 {
        match self.checkpoints.get() {
            Some(checkpoints) => checkpoints.run(),
            None => crate::event::unix_ms()
                .saturating_sub(self.epoch_clock().elapsed().as_millis() as u64),
        }
    }

    /// The newest durable checkpoint, if checkpoints are on and one was taken.
    pub fn last_checkpoint(&self) -> Option<crate::checkpoint::Summary> {
        self.checkpoints.get()?.summary()
    }

    /// The `checkpoint` object of `/status`.
    fn checkpoint_json(&self) -> Value {
        let Some(checkpoints) = self.checkpoints.get() else {
            return json!({"enabled": false});
        };
        let resumed = checkpoints.resumed().map(|r| r.manifest.epoch);
        match checkpoints.summary() {
            None => json!({"enabled": true, "resumed_from_epoch": resumed, "last": null}),
            Some(last) => json!({
                "enabled": true,
                "resumed_from_epoch": resumed,
                "last": {
                    "epoch": last.epoch,
                    "age_seconds": unix_ms().saturating_sub(last.written_at_ms) as f64 / 1000.0,
                    "duration_ms": last.duration_ms,
                    "bytes": last.bytes,
                },
            }),
        }
    }

    /// Worker `index`'s progress.
    pub fn worker(&self, index: usize) -> &WorkerProgress {
        &self.workers[index % self.workers.len()]
    }

    /// Counts events read (good and bad).
    pub fn add_events(&self, good: u64, bad: u64) {
        self.events_in.fetch_add(good + bad, SeqCst);
        self.events_bad.fetch_add(bad, SeqCst);
    }

    /// Counts delivery updates consumed by the feed-head bolt.
    pub fn add_deliveries(&self, n: u64) {
        self.deliveries.fetch_add(n, SeqCst);
    }

    /// Counts head changes written.
    pub fn add_head_changes(&self, n: u64) {
        self.head_changes.fetch_add(n, SeqCst);
    }

    /// Counts digest group changes emitted (puts and removes).
    pub fn add_digest_updates(&self, n: u64) {
        self.digest_updates.fetch_add(n, SeqCst);
    }

    /// Digest group changes emitted.
    pub fn digest_updates(&self) -> u64 {
        self.digest_updates.load(SeqCst)
    }

    /// Counts a rebuild answer that differed from the live head at the same
    /// epoch (a bug if ever non-zero; tests assert it stays zero).
    pub fn add_drpc_mismatch(&self) {
        self.drpc_mismatches.fetch_add(1, SeqCst);
    }

    /// Rebuild answers that differed from the live head.
    pub fn drpc_mismatches(&self) -> u64 {
        self.drpc_mismatches.load(SeqCst)
    }

    /// Whether the last sink write succeeded.
    pub fn sink_ok(&self) -> bool {
        self.sink_ok.load(SeqCst)
    }

    /// Whether a worker failed.
    pub fn failed(&self) -> bool {
        self.failed.load(SeqCst)
    }

    /// Whether the topology has caught up at least once (and written what a
    /// restart recovered).
    pub fn caught_up_once(&self) -> bool {
        self.workers_caught_up_once() && self.recovery_written.load(SeqCst)
    }

    /// Records whether the last sink write succeeded; returns whether this
    /// changed the state (to log once per outage).
    pub fn set_sink_ok(&self, ok: bool) -> bool {
        self.sink_ok.swap(ok, SeqCst) != ok
    }

    /// Gives up on what is not yet written: the sink stops retrying, and
    /// workers stop at once without acking anything more (unacked epochs are
    /// read again by the next run). For a shutdown that cannot wait.
    pub fn abandon(&self) {
        self.abandoned.store(true, SeqCst);
    }

    /// Whether [`abandon`](Self::abandon) was called.
    pub fn abandoned(&self) -> bool {
        self.abandoned.load(SeqCst)
    }

    /// Records that a worker stopped on an error.
    pub fn set_failed(&self) {
        self.failed.store(true, SeqCst);
    }

    /// Events read, good and bad.
    pub fn events_in(&self) -> u64 {
        self.events_in.load(SeqCst)
    }

    /// Bad events read.
    pub fn events_bad(&self) -> u64 {
        self.events_bad.load(SeqCst)
    }

    /// Delivery updates consumed by the feed-head bolt.
    pub fn feed_deliveries(&self) -> u64 {
        self.deliveries.load(SeqCst)
    }

    /// Feed-head entries written or removed.
    pub fn head_changes(&self) -> u64 {
        self.head_changes.load(SeqCst)
    }

    /// Whether every event available to the spouts so far is processed and
    /// written (after a restart on a persistent store: and the recovered
    /// heads are written).
    pub fn caught_up(&self) -> bool {
        self.workers_caught_up() && self.recovery_written.load(SeqCst)
    }

    /// Whether every worker has processed and written what it has read.
    pub fn workers_caught_up(&self) -> bool {
        self.workers.iter().all(WorkerProgress::caught_up)
    }

    /// Whether every worker has, at some moment, written everything its
    /// spouts had then (a restart's backlog is behind it).
    pub fn workers_caught_up_once(&self) -> bool {
        self.workers.iter().all(WorkerProgress::was_caught_up)
    }

    /// The store outlives the process: `caught_up` waits until each of the
    /// `per_worker` recovering operators of every worker has written its
    /// recovered state.
    pub fn expect_recovery(&self, per_worker: usize) {
        self.recovery_emitters
            .store(per_worker * self.workers.len(), SeqCst);
        self.recovery_written.store(false, SeqCst);
    }

    /// A recovering operator emitted its recovered state at `epoch`.
    pub fn recovery_emitted(&self, epoch: u64) {
        let mut emitted = self.recovery_emitted.lock().expect("status lock");
        emitted.0 += 1;
        emitted.1 = emitted.1.max(epoch);
    }

    /// The epoch after which all recovered state is written, once every
    /// recovering operator has emitted its own.
    pub fn recovery_epoch(&self) -> Option<u64> {
        let emitted = self.recovery_emitted.lock().expect("status lock");
        (emitted.0 >= self.recovery_emitters.load(SeqCst)).then_some(emitted.1)
    }

    /// Whether the recovered heads are written (always, for a fresh store).
    pub fn recovery_written(&self) -> bool {
        self.recovery_written.load(SeqCst)
    }

    /// Notes that the recovered heads are written.
    pub fn set_recovery_written(&self) {
        self.recovery_written.store(true, SeqCst);
    }

    /// Whether every worker's spouts are exhausted.
    pub fn spouts_finished(&self) -> bool {
        self.workers.iter().all(|w| w.finished.load(SeqCst))
    }

    /// Notes that the topology has caught up once since it started.
    pub fn set_recovered(&self) {
        self.recovered.store(true, SeqCst);
    }

    /// Whether the topology has caught up once since it started (after a
    /// restart, its state is rebuilt from the sources by then).
    pub fn recovered(&self) -> bool {
        self.recovered.load(SeqCst)
    }

    /// Whether the sink is writing and no worker failed.
    pub fn healthy(&self) -> bool {
        self.sink_ok.load(SeqCst) && !self.failed.load(SeqCst)
    }

    /// The `/status` document.
    pub fn to_json(&self, store: StoreStats) -> Value {
        let lag = self.lag();
        let lag_total: u64 = lag.values().sum();
        json!({
            "topology": self.name,
            "events_in": self.events_in(),
            "events_bad": self.events_bad(),
            "caught_up": self.caught_up(),
            "feed_deliveries": self.feed_deliveries(),
            "head_changes": self.head_changes(),
            "digest_updates": self.digest_updates(),
            "drpc_mismatches": self.drpc_mismatches(),
            "sink": if self.sink_ok.load(SeqCst) { "ok" } else { "degraded" },
            "failed": self.failed.load(SeqCst),
            "workers": self.workers.len(),
            "uptime_seconds": self.started.elapsed().as_secs_f64(),
            "store": {"feeds": store.feeds, "entries": store.entries, "activities": store.activities},
            "checkpoint": self.checkpoint_json(),
            "bytes_in_flight": self.workers.iter().map(|w| w.bytes_in_flight.load(SeqCst)).sum::<u64>(),
            "bytes_in_flight_peak_per_worker": self.bytes_in_flight_peak(),
            "lag": lag,
            "lag_total": lag_total,
        })
    }

    /// The most bytes of events any one worker had in flight so far.
    pub fn bytes_in_flight_peak(&self) -> u64 {
        self.workers
            .iter()
            .map(|w| w.bytes_in_flight_peak.load(SeqCst))
            .max()
            .unwrap_or(0)
    }

    /// Records behind the high watermark, per part this process's workers
    /// read whose end is known (Kafka partitions as last asked of the
    /// broker; a paced generator's turns).
    pub fn lag(&self) -> std::collections::BTreeMap<String, u64> {
        self.workers
            .iter()
            .flat_map(|w| w.backlog())
            .filter_map(|part| Some((part.lag()?, part.part)))
            .map(|(lag, part)| (part, lag))
            .collect()
    }

    /// The counters, as they are now.
    fn register_counters(&self, registry: &mut Registry) {
        let counters = [
            (
                "events_in",
                "Events read by the spouts, good and bad",
                self.events_in(),
            ),
            (
                "events_bad",
                "Bad events sent to the dead-letter destination",
                self.events_bad(),
            ),
            (
                "feed_deliveries",
                "Delivery updates consumed by the feed-head bolt",
                self.feed_deliveries(),
            ),
            (
                "head_changes",
                "Feed-head entries written or removed",
                self.head_changes(),
            ),
            (
                "digest_updates",
                "Digest and notification group changes emitted",
                self.digest_updates(),
            ),
        ];
        for (name, help, value) in counters {
            let counter: Counter = Counter::default();
            counter.inc_by(value);
            registry.register(name, help, counter);
        }
    }

    /// The gauges, as they are now.
    fn register_gauges(&self, registry: &mut Registry, store: StoreStats) {
        let last = self.last_checkpoint();
        let gauges = [
            (
                "caught_up",
                "1 when every available event is processed and written",
                self.caught_up() as u64,
            ),
            (
                "sink_ok",
                "1 while the sink writes succeed",
                self.sink_ok.load(SeqCst) as u64,
            ),
            ("feeds", "Users with a non-empty feed head", store.feeds),
            ("feed_entries", "Entries over all feed heads", store.entries),
            ("activities", "Stored activities", store.activities),
            (
                "checkpoint_epoch",
                "Boundary epoch of the newest durable checkpoint (0: none)",
                last.as_ref().map_or(0, |c| c.epoch),
            ),
            (
                "checkpoint_age_seconds",
                "Seconds since the newest durable checkpoint was written (0: none)",
                last.as_ref()
                    .map_or(0, |c| unix_ms().saturating_sub(c.written_at_ms) / 1000),
            ),
            (
                "checkpoint_duration_milliseconds",
                "Time from its first part written to its manifest",
                last.as_ref().map_or(0, |c| c.duration_ms),
            ),
            (
                "checkpoint_bytes",
                "Bytes of the newest durable checkpoint's parts",
                last.as_ref().map_or(0, |c| c.bytes),
            ),
        ];
        for (name, help, value) in gauges {
            registry.register(name, help, gauge(value));
        }
    }

    /// The `/metrics` text (OpenMetrics, which Prometheus reads), encoded
    /// by `prometheus-client` from a registry filled at each scrape: every
    /// figure is read from the counters as they are then.
    pub fn to_prometheus(&self, store: StoreStats) -> String {
        let mut registry = Registry::with_prefix("feedstorm");
        self.register_counters(&mut registry);
        self.register_gauges(&mut registry, store);
        let lag = Family::<Vec<(String, String)>, Gauge>::default();
        for (partition, behind) in self.lag() {
            lag.get_or_create(&vec![("partition".to_owned(), partition)])
                .set(i64::try_from(behind).unwrap_or(i64::MAX));
        }
        registry.register(
            "spout_lag",
            "Records behind the part's high watermark (Kafka partitions, generator turns)",
            lag,
        );
        let mut text = String::new();
        encode(&mut text, &registry).expect("writing to a String does not fail");
        text
    }
}
