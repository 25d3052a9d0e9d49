//! The runtime: timely workers, each driving its spouts into the topology in
//! epochs, with back-pressure and progress tracking.
//!
//! Epochs are wall-clock milliseconds since start (at least one more than the
//! previous epoch), so the workers' inputs advance together even when some
//! have nothing to read, and an epoch completes soon after it is sent.
//! A worker keeps at most `max_inflight_epochs` epochs unwritten; beyond that
//! its spouts are not polled (back-pressure), and when the probe passes an
//! epoch the worker knows it is written (the hook for Kafka acking).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use timely::WorkerConfig;

use crate::checkpoint::{read_part, Checkpoints, RESTORE_EPOCHS};
use crate::cluster::control::Control;
use crate::cluster::hello::{self, Agreement, Hello};
use crate::cluster::Cluster;
use crate::config::{SinkConfig, SpoutConfig, TopologyConfig};
use crate::dead_letter::DeadLetters;
use crate::drpc::Drpc;
use crate::error::{Error, Result};
use crate::push::Pushes;
use crate::spout::{FileSpout, Generator, SourcePosition, Spout, SpoutState};
use crate::status::Status;
use crate::store::{EmbeddedStore, RedisStore, Store};
use crate::topology;

/// A running topology.
pub struct Running {
    /// Counters and progress.
    pub status: Arc<Status>,
    /// The store the sink writes and the API reads.
    pub store: Arc<dyn Store>,
    /// The rebuild-feed desk.
    pub drpc: Arc<Drpc>,
    /// Head changes for the open streams.
    pub pushes: Arc<Pushes>,
    /// This process's place in the cluster.
    pub cluster: Cluster,
    /// What the processes agreed at start (set once the workers met).
    pub agreement: Arc<OnceLock<Agreement>>,
    stop: Arc<AtomicBool>,
    /// Workers whose driver returned (the cluster stopped, or they failed).
    returned: Arc<AtomicUsize>,
    guards: Option<timely::communication::WorkerGuards<()>>,
}

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// This process's place in the cluster (its worker threads included).
    pub cluster: Cluster,
    /// Where this process's HTTP API answers, told to the other processes
    /// (which forward reads of the users this process owns to it).
    pub http: Option<String>,
}

impl RunOptions {
    /// One process with `workers` threads.
    pub fn threads(workers: usize) -> RunOptions {
        RunOptions {
            cluster: Cluster::single(workers),
            http: None,
        }
    }
}

impl Running {
    /// Starts `topology` on worker threads; returns at once.
    pub fn start(topology: &TopologyConfig, options: &RunOptions) -> Result<Running> {
        topology.validate()?;
        let cluster = options.cluster.clone();
        let status = Arc::new(Status::new(&topology.name, cluster.workers));
        let store: Arc<dyn Store> = match &topology.sink {
            SinkConfig::Embedded(embedded) => match &embedded.marks_path {
                Some(path) => Arc::new(EmbeddedStore::with_marks_file(path)?),
                None => Arc::new(EmbeddedStore::new()),
            },
            SinkConfig::Redis(redis) => Arc::new(RedisStore::open(redis)?),
        };
        let names = topology.spouts.iter().map(SpoutConfig::name).collect();
        let checkpoints = Checkpoints::open(topology, &cluster, names)?.map(Arc::new);
        if store.persistent() {
            status.expect_recovery(crate::topology::recovering_operators(topology));
        }
        if let Some(checkpoints) = &checkpoints {
            status.attach_checkpoints(checkpoints.clone());
        }
        let dead_letters = Arc::new(DeadLetters::open(&topology.dead_letter)?);
        let stop = Arc::new(AtomicBool::new(false));
        let returned = Arc::new(AtomicUsize::new(0));
        let agreement = Arc::new(OnceLock::new());
        let drpc = Arc::new(Drpc::new(cluster.first_worker()));
        let pushes = Arc::new(Pushes::new());
        // Fail early on a spout that cannot open; workers open their own copies.
        for spout in &topology.spouts {
            if let SpoutConfig::File(file) = spout {
                std::fs::metadata(&file.path).map_err(|e| Error::Spout {
                    spout: file.path.display().to_string(),
                    message: e.to_string(),
                })?;
            }
        }
        let config = timely::Config {
            communication: cluster.communication(),
            worker: WorkerConfig::default(),
        };
        crate::cluster::watch_for_lost_peers(&cluster);
        if cluster.is_distributed() {
            tracing::info!(
                process = cluster.process,
                processes = cluster.processes,
                "connecting to the other processes"
            );
        }
        let guards = {
            let (topology, status, store, stop, drpc, pushes) = (
                topology.clone(),
                status.clone(),
                store.clone(),
                stop.clone(),
                drpc.clone(),
                pushes.clone(),
            );
            let (checkpoints, cluster, agreement, returned) = (
                checkpoints.clone(),
                cluster.clone(),
                agreement.clone(),
                returned.clone(),
            );
            let http = options.http.clone();
            timely::execute(config, move |worker| {
                let shared = Shared {
                    store: &store,
                    status: &status,
                    dead_letters: &dead_letters,
                    drpc: &drpc,
                    pushes: &pushes,
                    stop: &stop,
                    checkpoints: checkpoints.as_ref(),
                    cluster: &cluster,
                };
                let met = meet(worker, &cluster, http.clone(), checkpoints.as_deref());
                let result = met.and_then(|agreed| {
                    agreement.get_or_init(|| agreed);
                    drive(worker, &topology, shared)
                });
                if let Err(error) = result {
                    tracing::error!(%error, worker = worker.index(), "worker stopped");
                    status.set_failed();
                }
                returned.fetch_add(1, Ordering::SeqCst);
            })
            .map_err(Error::Timely)?
        };
        Ok(Running {
            status,
            store,
            drpc,
            pushes,
            cluster,
            agreement,
            stop,
            returned,
            guards: Some(guards),
        })
    }

    /// Asks the workers to stop after the epochs they have read, and waits.
    pub fn stop(mut self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        self.join_workers()
    }

    /// Asks every process of the cluster to stop at one epoch (with a
    /// checkpoint there); returns at once.
    pub fn ask_to_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Whether every worker's driver returned: the cluster stopped (asked
    /// here or by another process), or the workers failed.
    pub fn workers_returned(&self) -> bool {
        self.returned.load(Ordering::SeqCst) >= self.cluster.workers
    }

    /// Waits until every spout is finished and everything is written (or a
    /// worker failed). A followed file or an endless generator never finishes.
    pub fn wait_finished(&self) {
        while !(self.status.caught_up() && self.status.spouts_finished()) && self.status.healthy() {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// [`wait_finished`](Self::wait_finished), then [`stop`](Self::stop).
    pub fn finish(self) -> Result<()> {
        self.wait_finished();
        self.stop()
    }

    fn join_workers(&mut self) -> Result<()> {
        if let Some(guards) = self.guards.take() {
            for result in guards.join() {
                result.map_err(Error::Timely)?;
            }
        }
        Ok(())
    }
}

impl Drop for Running {
    /// Stops without waiting for writes that fail (a test that panicked, a
    /// store that is down): unwritten epochs are not acked.
    fn drop(&mut self) {
        self.status.abandon();
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.join_workers();
    }
}

fn open_spouts(
    topology: &TopologyConfig,
    index: usize,
    peers: usize,
) -> Result<Vec<Box<dyn Spout>>> {
    topology
        .spouts
        .iter()
        .map(|spout| -> Result<Box<dyn Spout>> {
            Ok(match spout {
                SpoutConfig::File(file) => Box::new(FileSpout::open(
                    &file.path,
                    file.follow,
                    topology.input.limits(),
                    index,
                    peers,
                )?),
                SpoutConfig::Generator(config) => {
                    Box::new(Generator::new(config.clone(), index, peers))
                }
                #[cfg(feature = "kafka")]
                SpoutConfig::Kafka(config) => Box::new(crate::kafka::spout::KafkaSpout::open(
                    &within_budget(config, topology.input.max_inflight_bytes),
                    topology.input.limits(),
                    index,
                    peers,
                )?),
                #[cfg(not(feature = "kafka"))]
                SpoutConfig::Kafka(_) => return Err(Error::needs_kafka("spout", "a kafka spout")),
            })
        })
        .collect()
}

/// The consumer's prefetch bounded by the in-flight byte budget too
/// (librdkafka's default queue is 64 MiB per consumer), unless the topology
/// sets it.
#[cfg(feature = "kafka")]
fn within_budget(
    config: &crate::config::KafkaSpoutConfig,
    budget: u64,
) -> crate::config::KafkaSpoutConfig {
    let mut config = config.clone();
    let kbytes = (budget / 1024).clamp(1024, 64 * 1024);
    config
        .options
        .entry("queued.max.messages.kbytes".into())
        .or_insert_with(|| kbytes.to_string());
    config
}

/// What the workers of a process share.
#[derive(Clone, Copy)]
struct Shared<'a> {
    store: &'a Arc<dyn Store>,
    status: &'a Arc<Status>,
    dead_letters: &'a DeadLetters,
    drpc: &'a Arc<Drpc>,
    pushes: &'a Arc<Pushes>,
    stop: &'a AtomicBool,
    checkpoints: Option<&'a Arc<Checkpoints>>,
    cluster: &'a Cluster,
}

/// The processes' handshake (see [`hello`]): agrees on the run and the
/// checkpoint to resume from, and settles this process's checkpoints on it.
fn meet(
    worker: &mut timely::worker::Worker,
    cluster: &Cluster,
    http: Option<String>,
    checkpoints: Option<&Checkpoints>,
) -> Result<Agreement> {
    let first = worker.index() == cluster.first_worker();
    let (run, candidates) = checkpoints.map_or_else(
        || (crate::event::unix_ms(), Vec::new()),
        Checkpoints::proposal,
    );
    let mine = first.then_some(Hello {
        process: cluster.process,
        http,
        run,
        checkpoints: candidates,
    });
    let agreed = hello::exchange(worker, mine);
    if let Some(checkpoints) = checkpoints {
        checkpoints.settle(agreed.run, agreed.resume.as_deref())?;
    }
    Ok(agreed)
}

/// The spouts' positions after each epoch sent and not yet in a durable
/// checkpoint: a checkpoint at boundary `b` takes those after the last
/// epoch before `b`.
struct PositionLog {
    /// Positions before the oldest epoch listed.
    base: Vec<SourcePosition>,
    sent: VecDeque<(u64, Vec<SourcePosition>)>,
    /// The last boundary this worker gave its positions for.
    reported: u64,
    /// The last durable boundary acked to the spouts.
    acked: u64,
}

impl PositionLog {
    fn new(spouts: &[Box<dyn Spout>]) -> PositionLog {
        PositionLog {
            base: spouts.iter().map(|s| s.position()).collect(),
            sent: VecDeque::new(),
            reported: 0,
            acked: 0,
        }
    }

    fn sent(&mut self, epoch: u64, spouts: &[Box<dyn Spout>]) {
        self.sent
            .push_back((epoch, spouts.iter().map(|s| s.position()).collect()));
    }

    /// Positions after every epoch before `boundary`.
    fn at(&self, boundary: u64) -> Vec<SourcePosition> {
        self.sent
            .iter()
            .rev()
            .find(|(epoch, _)| *epoch < boundary)
            .map_or(&self.base, |(_, positions)| positions)
            .clone()
    }

    /// Forgets what a durable checkpoint at `boundary` holds; returns the
    /// last epoch before it, to ack.
    fn durable(&mut self, boundary: u64) -> Option<u64> {
        let mut last = None;
        while self
            .sent
            .front()
            .is_some_and(|(epoch, _)| *epoch < boundary)
        {
            let (epoch, positions) = self.sent.pop_front().expect("checked");
            self.base = positions;
            last = Some(epoch);
        }
        last
    }
}

/// Checkpoint duties of a driver, each pass of its loop: give its positions
/// for each boundary the sink has passed, and ack what durable checkpoints
/// hold.
struct CheckpointStep {
    /// The probe's frontier: every epoch before it is written.
    written_before: Option<u64>,
    /// Checkpoints after this epoch may be acked (`None`: none may yet).
    ack_after: Option<u64>,
    /// This worker.
    index: usize,
}

fn checkpoint_step(
    checkpoints: &Checkpoints,
    log: &mut PositionLog,
    step: CheckpointStep,
    control: &mut Control,
    spouts: &mut [Box<dyn Spout>],
) -> Result<()> {
    if let Some(written_before) = step.written_before {
        // Every boundary passed, as the operators save every one they pass.
        for boundary in checkpoints.passed(log.reported, written_before) {
            log.reported = boundary;
            checkpoints.add_positions(boundary, step.index, log.at(boundary))?;
        }
    }
    if let Some(durable) = checkpoints.durable() {
        control.durable_here(durable);
    }
    let Some(ack_after) = step.ack_after else {
        return Ok(());
    };
    // Only what every process holds durably: a restart resumes the whole
    // cluster from the newest checkpoint complete everywhere.
    if let Some(durable) = control
        .durable_everywhere()
        .filter(|d| *d > log.acked && *d > ack_after)
    {
        log.acked = durable;
        if let Some(epoch) = log.durable(durable) {
            for spout in spouts.iter_mut() {
                spout.acked(epoch);
            }
        }
    }
    Ok(())
}

/// Sends the checkpoint a start resumes from into the first two epochs
/// (stories, then interests), and moves the spouts to its positions.
/// Returns the epochs used.
fn resume(
    checkpoints: &Checkpoints,
    inputs: &mut topology::Inputs,
    spouts: &mut [Box<dyn Spout>],
    index: usize,
    peers: usize,
) -> Result<Vec<u64>> {
    let Some(resumed) = checkpoints.resumed() else {
        return Ok(Vec::new());
    };
    for (at, spout) in spouts.iter_mut().enumerate() {
        if let Some(position) = resumed.position(at) {
            spout.resume(position)?;
        }
    }
    let started = Instant::now();
    let (mut stories, mut users) = (0, 0);
    for path in resumed.parts("stories", index, peers) {
        let part: crate::bolt::stories::StoriesPart = read_part(&path)?;
        stories += part.records();
        inputs.restore_stories(part);
    }
    inputs.advance_to(1);
    for path in resumed.parts("interests", index, peers) {
        let part: crate::bolt::interests::InterestsPart = read_part(&path)?;
        users += part.users.len();
        inputs.restore_interests(part);
    }
    inputs.advance_to(RESTORE_EPOCHS);
    tracing::info!(
        worker = index,
        stories,
        users,
        read_ms = started.elapsed().as_millis() as u64,
        "checkpoint read"
    );
    Ok((0..RESTORE_EPOCHS).collect())
}

/// One worker's driver loop.
fn drive(
    worker: &mut timely::worker::Worker,
    topology: &TopologyConfig,
    shared: Shared<'_>,
) -> Result<()> {
    let Shared {
        store,
        status,
        dead_letters,
        drpc,
        pushes,
        stop,
        checkpoints,
        cluster,
    } = shared;
    let (index, peers) = (worker.index(), worker.peers());
    let progress_slot = index - cluster.first_worker();
    let mut spouts = open_spouts(topology, index, peers)?;
    let observer = status.operators().observe(worker, &topology::OPERATORS);
    let services = topology::Services {
        store: store.clone(),
        status: status.clone(),
        drpc: drpc.clone(),
        pushes: pushes.clone(),
        checkpoints: checkpoints.cloned(),
    };
    let built = topology::build(worker, topology, services, cluster);
    let probe = built.probe;
    let mut control = Control::build(worker);
    drpc.register_worker();
    let mut inputs = Some(built.inputs);
    let progress = status.worker(progress_slot);
    let clock = Instant::now();
    // Each epoch in flight with the bytes of its events, and their sum.
    let mut inflight: VecDeque<(u64, u64)> = VecDeque::new();
    let mut bytes_in_flight = 0u64;
    let mut records = Vec::new();
    let mut exhausted = vec![false; spouts.len()];
    let input = &topology.input;
    if let (Some(checkpoints), Some(open)) = (checkpoints, inputs.as_mut()) {
        for epoch in resume(checkpoints, open, &mut spouts, index, peers)? {
            progress.begin_epoch();
            inflight.push_back((epoch, 0));
        }
    }
    let mut positions = PositionLog::new(&spouts);
    progress.set_sources(spouts.iter().flat_map(|s| s.position().parts()).collect());
    let mut lag_reported = Instant::now();
    // The last epoch sent with the spouts drained: once it is written, the
    // worker has caught up once.
    let mut drained_epoch: Option<u64> = None;

    loop {
        let mut written = 0;
        while inflight
            .front()
            .is_some_and(|(epoch, _)| !probe.less_equal(epoch))
        {
            // Checked after the probe moved: an abandoned sink may have let
            // this epoch pass unwritten.
            if status.abandoned() {
                return Ok(());
            }
            let (epoch, bytes) = inflight.pop_front().expect("checked");
            bytes_in_flight -= bytes;
            progress.set_bytes_in_flight(bytes_in_flight);
            // With checkpoints, offsets are acked once a durable checkpoint
            // holds them; without, once written, but never while recovery
            // withholds the output.
            if checkpoints.is_none() && status.recovery_written() {
                for spout in spouts.iter_mut() {
                    spout.acked(epoch);
                }
            }
            if drained_epoch == Some(epoch) {
                progress.set_caught_up_once();
            }
            progress.end_epoch(epoch);
            written += 1;
        }
        observer.epochs_written(written);
        if !status.recovered() && status.workers_caught_up_once() {
            status.set_recovered();
        }
        if !status.recovery_written() {
            if let Some(epoch) = status.recovery_epoch() {
                if !probe.less_equal(&epoch) {
                    status.set_recovery_written();
                }
            }
        }
        if let Some(checkpoints) = checkpoints {
            let written_before = probe.with_frontier(|f| f.first().copied());
            // Nothing is acked while recovery withholds the output, nor
            // from a checkpoint whose epochs' output was withheld.
            let ack_after = status
                .recovery_written()
                .then(|| status.recovery_epoch().unwrap_or(0));
            let step = CheckpointStep {
                written_before,
                ack_after,
                index,
            };
            checkpoint_step(checkpoints, &mut positions, step, &mut control, &mut spouts)?;
        }
        // Rebuild answers wait for their epoch to be written.
        // So do the pushed head changes: every worker's writes are then in.
        probe.with_frontier(|frontier| {
            drpc.release_written(frontier.first().copied());
            pushes.release(frontier.first().copied());
        });
        let Some(open) = inputs.as_mut() else {
            if probe.done() || status.abandoned() {
                return Ok(());
            }
            worker.step_or_park(Some(Duration::from_millis(10)));
            continue;
        };
        // Finished spouts do not end the dataflow: it stays up for queries.
        // A stop asked here or anywhere in the cluster halts every worker at
        // one epoch, checkpointed there when checkpoints are on.
        if status.abandoned() {
            inputs = None;
            continue;
        }
        if stop.load(Ordering::SeqCst) || control.stop_heard() {
            progress.set_drained(true);
            control.halt(index, open.epoch());
            match control.stop_epoch() {
                Some(last) => {
                    if let Some(checkpoints) = checkpoints {
                        checkpoints.stop_at(last);
                    }
                    if open.epoch() < last {
                        open.advance_to(last);
                    }
                    let checkpointed = checkpoints.is_none()
                        || control.durable_everywhere().is_some_and(|d| d >= last);
                    if checkpointed && !probe.less_than(&last) {
                        tracing::info!(worker = index, epoch = last, "stopped");
                        inputs = None; // closing the inputs lets the dataflow drain and finish
                        continue;
                    }
                }
                None => stop.store(true, Ordering::SeqCst),
            }
            worker.step_or_park(Some(Duration::from_millis(5)));
            continue;
        }
        if lag_reported.elapsed() > Duration::from_millis(500) {
            lag_reported = Instant::now();
            progress.set_backlog(spouts.iter().flat_map(|s| s.backlog()).collect());
        }
        let mut busy = false;
        if inflight.len() < input.max_inflight_epochs && bytes_in_flight < input.max_inflight_bytes
        {
            records.clear();
            let requests = drpc.take_requests();
            let mut ready = false;
            let mut sent_epoch = None;
            // Shared among the spouts still reading (a finished one leaves its share).
            let reading = exhausted.iter().filter(|done| !**done).count();
            let share = input.epoch_events.div_ceil(reading.max(1));
            let polled = Instant::now();
            for (spout, done) in spouts
                .iter_mut()
                .zip(exhausted.iter_mut())
                .filter(|(_, d)| !**d)
            {
                match spout.poll(share, &mut records)? {
                    SpoutState::Ready => ready = true,
                    SpoutState::Idle => {}
                    SpoutState::Exhausted => *done = true,
                }
            }
            observer.spouts_read(records.len() as u64, polled.elapsed());
            let now = clock.elapsed().as_millis() as u64;
            if records.is_empty() && requests.is_empty() {
                if now > open.epoch() {
                    open.advance_to(now); // keep the frontier moving while idle
                }
            } else if records.is_empty() {
                for request in requests {
                    open.request(request);
                }
                open.advance_to(now.max(open.epoch() + 1));
                busy = true;
            } else {
                progress.begin_epoch();
                let (mut good, mut bad, mut bytes) = (0, 0, 0);
                for record in records.drain(..) {
                    match record {
                        Ok(event) => {
                            good += 1;
                            bytes += event.approx_bytes();
                            open.send(event);
                        }
                        Err(bad_event) => {
                            bad += 1;
                            dead_letters.write(&bad_event)?;
                        }
                    }
                }
                status.add_events(good, bad);
                for request in requests {
                    open.request(request);
                }
                for spout in spouts.iter_mut() {
                    spout.sent(open.epoch());
                }
                if checkpoints.is_some() {
                    positions.sent(open.epoch(), &spouts);
                }
                sent_epoch = Some(open.epoch());
                inflight.push_back((open.epoch(), bytes));
                bytes_in_flight += bytes;
                progress.set_bytes_in_flight(bytes_in_flight);
                open.advance_to(now.max(open.epoch() + 1));
                busy = true;
            }
            progress.set_drained(!ready);
            if !ready && sent_epoch.is_some() {
                drained_epoch = sent_epoch;
            }
            if exhausted.iter().all(|e| *e) {
                progress.set_finished();
            }
        } else {
            busy = true;
        }
        worker.step_or_park(if busy || drpc.answers_pending() {
            Some(Duration::ZERO)
        } else {
            Some(Duration::from_millis(5))
        });
    }
}
