//! One worker's driver: the loop that polls its spouts into the topology's
//! inputs in epochs, within the in-flight budget (back-pressure); retires
//! the epochs the probe has passed (acking); takes its part in checkpoints
//! and in a stop; and steps the timely worker between.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use timely::dataflow::ProbeHandle;

use super::Shared;
use crate::checkpoint::{read_part, Checkpoints, RESTORE_EPOCHS};
use crate::cluster::control::Control;
use crate::config::{SpoutConfig, TopologyConfig};
#[cfg(not(feature = "kafka"))]
use crate::error::Error;
use crate::error::Result;
use crate::event::Event;
use crate::observe::Observer;
use crate::spout::{BadEvent, FileSpout, Generator, SourcePosition, Spout, SpoutState};
use crate::status::WorkerProgress;
use crate::topology;

/// Epochs a worker sends events in are multiples of this many
/// milliseconds, and a worker with a backlog puts each batch in the next
/// window after the last. The workers poll milliseconds apart (tens, at a
/// start), so epochs taken from each one's clock put each worker's batch
/// in an epoch of its own, and every bolt's end-of-epoch work (heads,
/// digests, the sink's write) is paid once per worker instead of once: a
/// catch-up with digests took 1.5x as long. Costs at most this much
/// latency.
const EPOCH_WINDOW_MS: u64 = 10;

/// How far (milliseconds) a worker with a backlog may run its epochs ahead
/// of its clock a window at a time. Past it, one epoch at a time: a worker
/// that is idle follows only the clock, and an epoch completes once every
/// worker has passed it.
const MAX_AHEAD_MS: u64 = 10 * EPOCH_WINDOW_MS;

/// The epoch to open after sending in `epoch`: past the rebuild asked in
/// `asked`, and with more `ready` (catching up) the next window rather than
/// the clock's, so that every worker's k-th batch of a backlog shares an
/// epoch however far apart their polls are.
fn next_epoch(epoch: u64, asked: u64, clock: u64, ready: bool) -> u64 {
    let next = (epoch + 1).max(asked);
    if !ready {
        return next.max(clock).next_multiple_of(EPOCH_WINDOW_MS);
    }
    let window = next.next_multiple_of(EPOCH_WINDOW_MS);
    if window <= clock + MAX_AHEAD_MS {
        window
    } else {
        next
    }
}

/// Runs one worker's driver until the topology is done (stopped, or
/// abandoned after a failure).
pub(super) fn drive(
    worker: &mut timely::worker::Worker,
    topology: &TopologyConfig,
    shared: Shared<'_>,
) -> Result<()> {
    let mut driver = Driver::start(worker, topology, shared)?;
    loop {
        match driver.turn()? {
            Next::Again => {}
            Next::Step(park) => {
                worker.step_or_park(Some(park));
            }
            Next::Done => return Ok(()),
        }
    }
}

/// What the loop does after a turn.
enum Next {
    /// Turn again at once.
    Again,
    /// Step the worker, parking up to this long when it has nothing to do.
    Step(Duration),
    /// The worker is done.
    Done,
}

/// One worker's driver: what its loop keeps between turns.
struct Driver<'a> {
    shared: Shared<'a>,
    input: &'a crate::config::InputConfig,
    index: usize,
    spouts: Vec<Box<dyn Spout>>,
    /// Per spout, whether it has nothing more to read (the end of a file).
    exhausted: Vec<bool>,
    observer: Observer,
    probe: ProbeHandle<u64>,
    control: Control,
    /// The topology's inputs; `None` once closed (a stop, or a failure).
    inputs: Option<topology::Inputs>,
    progress: &'a WorkerProgress,
    /// Epochs are milliseconds since this, shared by the workers of this
    /// process.
    clock: Instant,
    /// Each epoch in flight with the bytes of its events, and their sum.
    inflight: VecDeque<(u64, u64)>,
    bytes_in_flight: u64,
    records: Vec<std::result::Result<Event, BadEvent>>,
    positions: PositionLog,
    lag_reported: Instant,
    /// The last epoch sent with the spouts drained: once it is written, the
    /// worker has caught up once.
    drained_epoch: Option<u64>,
    /// The store forgot which users it wrote before this (Unix ms).
    writes_forgotten_before: u64,
}

impl<'a> Driver<'a> {
    /// Opens the worker's spouts, builds the topology on it and, with a
    /// checkpoint to resume from, sends its state into the first epochs.
    fn start(
        worker: &mut timely::worker::Worker,
        topology: &'a TopologyConfig,
        shared: Shared<'a>,
    ) -> Result<Driver<'a>> {
        let (index, peers) = (worker.index(), worker.peers());
        let mut spouts = open_spouts(topology, index, peers)?;
        let status = shared.status;
        let observer = status.operators().observe(worker, &topology::OPERATORS);
        let services = topology::Services {
            store: shared.store.clone(),
            status: status.clone(),
            drpc: shared.drpc.clone(),
            pushes: shared.pushes.clone(),
            checkpoints: shared.checkpoints.cloned(),
        };
        let built = topology::build(worker, topology, services, shared.cluster);
        let control = Control::build(worker);
        shared.drpc.register_worker();
        let mut inputs = built.inputs;
        let progress = status.worker(index - shared.cluster.first_worker());
        let mut inflight = VecDeque::new();
        if let Some(checkpoints) = shared.checkpoints {
            for epoch in resume(checkpoints, &mut inputs, &mut spouts, index, peers)? {
                progress.begin_epoch();
                inflight.push_back((epoch, 0));
            }
        }
        let positions = PositionLog::new(&spouts);
        progress.set_sources(spouts.iter().flat_map(|s| s.position().parts()).collect());
        Ok(Driver {
            shared,
            input: &topology.input,
            index,
            exhausted: vec![false; spouts.len()],
            spouts,
            observer,
            probe: built.probe,
            control,
            inputs: Some(inputs),
            progress,
            clock: shared.status.epoch_clock(),
            inflight,
            bytes_in_flight: 0,
            records: Vec::new(),
            positions,
            lag_reported: Instant::now(),
            drained_epoch: None,
            writes_forgotten_before: 0,
        })
    }

    /// One pass of the loop.
    fn turn(&mut self) -> Result<Next> {
        let status = self.shared.status;
        if !self.retire_written() {
            return Ok(Next::Done);
        }
        self.note_recovery();
        if let Some(checkpoints) = self.shared.checkpoints {
            self.checkpoint_duties(checkpoints)?;
        }
        // Rebuild answers wait for their epoch to be written.
        // So do the pushed head changes: every worker's writes are then in.
        self.probe.with_frontier(|frontier| {
            self.shared.drpc.release_written(frontier.first().copied());
            self.shared.pushes.release(frontier.first().copied());
        });
        if self.inputs.is_none() {
            if self.probe.done() || status.abandoned() {
                return Ok(Next::Done);
            }
            return Ok(Next::Step(Duration::from_millis(10)));
        }
        // Finished spouts do not end the dataflow: it stays up for queries.
        if status.abandoned() {
            self.inputs = None;
            return Ok(Next::Again);
        }
        if self.shared.stop.load(Ordering::SeqCst) || self.control.stop_heard() {
            return Ok(self.stopping());
        }
        if self.lag_reported.elapsed() > Duration::from_millis(500) {
            self.lag_reported = Instant::now();
            let backlog = self.spouts.iter().flat_map(|s| s.backlog()).collect();
            self.progress.set_backlog(backlog);
        }
        let within_budget = self.inflight.len() < self.input.max_inflight_epochs
            && self.bytes_in_flight < self.input.max_inflight_bytes;
        let busy = !within_budget || self.poll_and_send()?;
        Ok(Next::Step(if busy || self.shared.drpc.answers_pending() {
            Duration::ZERO
        } else {
            Duration::from_millis(5)
        }))
    }

    /// Retires the epochs the probe has passed: they are written. Acks
    /// them without checkpoints. `false` once the sink was abandoned.
    fn retire_written(&mut self) -> bool {
        let status = self.shared.status;
        let mut written = 0;
        while let Some(&(epoch, bytes)) = self.inflight.front() {
            if self.probe.less_equal(&epoch) {
                break;
            }
            // Checked after the probe moved: an abandoned sink may have let
            // this epoch pass unwritten.
            if status.abandoned() {
                return false;
            }
            self.inflight.pop_front();
            self.bytes_in_flight -= bytes;
            self.progress.set_bytes_in_flight(self.bytes_in_flight);
            // With checkpoints, offsets are acked once a durable checkpoint
            // holds them; without, once written, but never while recovery
            // withholds the output.
            if self.shared.checkpoints.is_none() && status.recovery_written() {
                for spout in self.spouts.iter_mut() {
                    spout.acked(epoch);
                }
            }
            if self.drained_epoch == Some(epoch) {
                self.progress.set_caught_up_once();
            }
            self.progress.end_epoch(epoch);
            written += 1;
        }
        self.observer.epochs_written(written);
        true
    }

    /// Notes when a restart on a persistent store has recovered (every
    /// worker caught up once) and when the recovered state is written.
    fn note_recovery(&self) {
        let status = self.shared.status;
        if !status.recovered() && status.workers_caught_up_once() {
            status.set_recovered();
        }
        if !status.recovery_written() {
            if let Some(epoch) = status.recovery_epoch() {
                if !self.probe.less_equal(&epoch) {
                    status.set_recovery_written();
                    if let Some(checkpoints) = self.shared.checkpoints {
                        checkpoints.store_whole_from(epoch + 1);
                    }
                }
            }
        }
    }

    /// Gives this worker's positions to the checkpoints the sink has
    /// passed and acks what durable checkpoints hold.
    fn checkpoint_duties(&mut self, checkpoints: &Checkpoints) -> Result<()> {
        let status = self.shared.status;
        let written_before = self.probe.with_frontier(|f| f.first().copied());
        // Nothing is acked while recovery withholds the output, nor
        // from a checkpoint whose epochs' output was withheld.
        let ack_after = status
            .recovery_written()
            .then(|| status.recovery_epoch().unwrap_or(0));
        let step = CheckpointStep {
            written_before,
            ack_after,
            index: self.index,
        };
        let (log, control) = (&mut self.positions, &mut self.control);
        checkpoint_step(checkpoints, log, step, control, &mut self.spouts)?;
        self.forget_old_writes(checkpoints);
        Ok(())
    }

    /// Lets the store forget which users it wrote before every checkpoint
    /// kept (once a recovery's writes are in: until then a resume still
    /// needs them). One worker per process asks.
    fn forget_old_writes(&mut self, checkpoints: &Checkpoints) {
        let status = self.shared.status;
        if self.index != self.shared.cluster.first_worker() || !status.recovery_written() {
            return;
        }
        let Some(from) = checkpoints.written_needed_from() else {
            return;
        };
        if self.writes_forgotten_before >= from {
            return;
        }
        match self.shared.store.forget_written_before(from) {
            Ok(()) => self.writes_forgotten_before = from,
            Err(error) => tracing::warn!(%error, "cannot trim the record of users written"),
        }
    }

    /// A stop asked here or anywhere in the cluster halts every worker at
    /// one epoch, checkpointed there when checkpoints are on; then the
    /// inputs close and the dataflow drains.
    fn stopping(&mut self) -> Next {
        let open = self.inputs.as_mut().expect("inputs open while stopping");
        self.progress.set_drained(true);
        self.control.halt(self.index, open.epoch());
        let Some(last) = self.control.stop_epoch() else {
            self.shared.stop.store(true, Ordering::SeqCst);
            return Next::Step(Duration::from_millis(5));
        };
        let checkpoints = self.shared.checkpoints;
        if let Some(checkpoints) = checkpoints {
            checkpoints.stop_at(last);
        }
        if open.epoch() < last {
            open.advance_to(last);
        }
        let checkpointed =
            checkpoints.is_none() || self.control.durable_everywhere().is_some_and(|d| d >= last);
        if checkpointed && !self.probe.less_than(&last) {
            tracing::info!(worker = self.index, epoch = last, "stopped");
            self.inputs = None; // closing the inputs lets the dataflow drain and finish
            return Next::Again;
        }
        Next::Step(Duration::from_millis(5))
    }

    /// Polls the spouts still reading for one epoch's events, sends them
    /// (and the rebuild requests waiting) into the open epoch and opens the
    /// next. Whether it sent anything.
    fn poll_and_send(&mut self) -> Result<bool> {
        self.records.clear();
        let requests = self.shared.drpc.take_requests();
        let ready = self.poll()?;
        let clock = self.clock.elapsed().as_millis() as u64;
        // Past the epoch of any rebuild asked here, so its answer need not
        // wait for this worker's clock.
        let asked = self.shared.drpc.requested_epoch() + 1;
        let open = self.inputs.as_mut().expect("inputs open while polling");
        let mut sent_epoch = None;
        let busy = if self.records.is_empty() && requests.is_empty() {
            // Keep the frontier moving while idle, to the start of the
            // clock's window: what arrives next goes in with the other
            // workers' arrivals of that window.
            let now = (clock - clock % EPOCH_WINDOW_MS).max(asked);
            if now > open.epoch() {
                open.advance_to(now);
            }
            false
        } else {
            if !requests.is_empty() {
                self.shared.drpc.note_requests_in(open.epoch());
            }
            if !self.records.is_empty() {
                sent_epoch = Some(open.epoch());
                self.send_records()?;
            }
            let open = self.inputs.as_mut().expect("inputs open while polling");
            for request in requests {
                open.request(request);
            }
            open.advance_to(next_epoch(open.epoch(), asked, clock, ready));
            true
        };
        self.progress.set_drained(!ready);
        if !ready && sent_epoch.is_some() {
            self.drained_epoch = sent_epoch;
        }
        if self.exhausted.iter().all(|e| *e) {
            self.progress.set_finished();
        }
        Ok(busy)
    }

    /// Polls each spout still reading for its share of an epoch's events
    /// into `records`. Whether any spout has more ready.
    fn poll(&mut self) -> Result<bool> {
        // Shared among the spouts still reading (a finished one leaves its share).
        let reading = self.exhausted.iter().filter(|done| !**done).count();
        let share = self.input.epoch_events.div_ceil(reading.max(1));
        let polled = Instant::now();
        let mut ready = false;
        for (spout, done) in self
            .spouts
            .iter_mut()
            .zip(self.exhausted.iter_mut())
            .filter(|(_, d)| !**d)
        {
            match spout.poll(share, &mut self.records)? {
                SpoutState::Ready => ready = true,
                SpoutState::Idle => {}
                SpoutState::Exhausted => *done = true,
            }
        }
        self.observer
            .spouts_read(self.records.len() as u64, polled.elapsed());
        Ok(ready)
    }

    /// Sends the polled records into the open epoch (bad ones to the dead
    /// letters) and notes the epoch in flight.
    fn send_records(&mut self) -> Result<()> {
        let status = self.shared.status;
        let open = self.inputs.as_mut().expect("inputs open while sending");
        self.progress.begin_epoch();
        let (mut good, mut bad, mut bytes) = (0, 0, 0);
        let polled = self.records.len();
        for record in self.records.drain(..) {
            match record {
                Ok(event) => {
                    good += 1;
                    bytes += event.approx_bytes();
                    open.send(event);
                }
                Err(bad_event) => {
                    bad += 1;
                    self.shared.dead_letters.write(&bad_event)?;
                }
            }
        }
        crate::bolt::release_unused(&mut self.records, polled);
        status.add_events(good, bad);
        let epoch = open.epoch();
        for spout in self.spouts.iter_mut() {
            spout.sent(epoch);
        }
        if self.shared.checkpoints.is_some() {
            self.positions.sent(epoch, &self.spouts);
        }
        self.inflight.push_back((epoch, bytes));
        self.bytes_in_flight += bytes;
        self.progress.set_bytes_in_flight(self.bytes_in_flight);
        Ok(())
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
    // Saved by as many workers: each part's ids route to the worker that
    // saved it, which loads it whole.
    let manifest = &resumed.manifest;
    let saved_by = (manifest.workers * manifest.processes == peers).then_some(index);
    for path in resumed.parts("stories", index, peers) {
        let part: crate::bolt::stories::LoadedStories = read_part(&path)?;
        stories += part.records();
        inputs.restore_stories(part, saved_by);
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

#[cfg(test)]
mod tests {
    use super::next_epoch;

    #[test]
    fn a_backlog_moves_a_window_per_batch_and_a_drained_worker_follows_the_clock() {
        assert_eq!(next_epoch(40, 1, 43, true), 50);
        assert_eq!(next_epoch(40, 1, 57, true), 50);
        assert_eq!(next_epoch(40, 1, 43, false), 50);
        assert_eq!(next_epoch(40, 1, 57, false), 60);
        // A rebuild asked at epoch 70 is answered past it.
        assert_eq!(next_epoch(40, 71, 43, true), 80);
        // Far ahead of the clock: one epoch at a time.
        assert_eq!(next_epoch(400, 1, 43, true), 401);
    }
}
