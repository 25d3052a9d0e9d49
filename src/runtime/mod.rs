//! The runtime: timely workers, each driving its spouts into the topology in
//! epochs, with back-pressure and progress tracking.
//!
//! Epochs are milliseconds on a clock the process's workers share (at least
//! one more than the previous epoch, in 10 ms windows: see `driver`), so
//! the workers' inputs advance together even when some have nothing to
//! read, and an epoch completes soon after it is sent.
//! A worker keeps at most `max_inflight_epochs` epochs unwritten; beyond that
//! its spouts are not polled (back-pressure), and when the probe passes an
//! epoch the worker knows it is written (the hook for Kafka acking).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use timely::WorkerConfig;

use crate::checkpoint::Checkpoints;
use crate::cluster::hello::{self, Agreement, Hello};
use crate::cluster::Cluster;
use crate::config::{SinkConfig, SpoutConfig, TopologyConfig};
use crate::dead_letter::DeadLetters;
use crate::drpc::Drpc;
use crate::error::{Error, Result};
use crate::push::Pushes;
use crate::status::Status;
use crate::store::{EmbeddedStore, RedisStore, Store};
mod driver;

use driver::drive;

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
    checkpoints: Option<Arc<Checkpoints>>,
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
        let store = open_store(topology)?;
        let names = topology.spouts.iter().map(SpoutConfig::name).collect();
        let checkpoints = Checkpoints::open(topology, &cluster, names)?.map(Arc::new);
        if store.persistent() {
            status.expect_recovery(crate::topology::recovering_operators(topology));
        }
        if let Some(checkpoints) = &checkpoints {
            status.attach_checkpoints(checkpoints.clone());
            if !store.persistent() {
                // Nothing to recover: the store holds every epoch written.
                checkpoints.store_whole_from(0);
            }
        }
        let dead_letters = Arc::new(DeadLetters::open(&topology.dead_letter)?);
        let stop = Arc::new(AtomicBool::new(false));
        let returned = Arc::new(AtomicUsize::new(0));
        let agreement = Arc::new(OnceLock::new());
        let drpc = Arc::new(Drpc::new(cluster.first_worker()));
        let pushes = Arc::new(Pushes::new());
        check_spout_files(topology)?;
        let config = timely_config(&cluster);
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
                let index = worker.index();
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let met = meet(worker, &cluster, http.clone(), checkpoints.as_deref());
                    met.and_then(|agreed| {
                        agreement.get_or_init(|| agreed);
                        drive(worker, &topology, shared)
                    })
                }));
                record_outcome(result, index, &status);
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
            checkpoints,
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
            let results = guards.join();
            if let Some(checkpoints) = &self.checkpoints {
                checkpoints.wait_for_writers();
            }
            for result in results {
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

/// Marks the topology failed when worker `index` returned an error or
/// panicked: a panic fails the worker as an error does (its message is
/// already printed), so that `run` exits instead of the other workers
/// waiting on it for ever.
fn record_outcome(outcome: std::thread::Result<Result<()>>, index: usize, status: &Status) {
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::error!(%error, worker = index, "worker stopped");
            status.set_failed();
        }
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(no message)");
            tracing::error!(worker = index, message, "worker panicked");
            status.set_failed();
        }
    }
}

/// Timely's configuration for `cluster`; with other processes, watches for
/// lost peers and says it connects.
fn timely_config(cluster: &Cluster) -> timely::Config {
    crate::cluster::watch_for_lost_peers(cluster);
    if cluster.is_distributed() {
        tracing::info!(
            process = cluster.process,
            processes = cluster.processes,
            "connecting to the other processes"
        );
    }
    timely::Config {
        communication: cluster.communication(),
        worker: WorkerConfig::default(),
    }
}

/// The store the topology's sink writes.
fn open_store(topology: &TopologyConfig) -> Result<Arc<dyn Store>> {
    Ok(match &topology.sink {
        SinkConfig::Embedded(embedded) => match &embedded.marks_path {
            Some(path) => Arc::new(EmbeddedStore::with_marks_file(path)?),
            None => Arc::new(EmbeddedStore::new()),
        },
        SinkConfig::Redis(redis) if topology.checkpoint.enabled() => {
            Arc::new(RedisStore::open(redis)?.recording_writes())
        }
        SinkConfig::Redis(redis) => Arc::new(RedisStore::open(redis)?),
    })
}

/// Fails early on a file spout that cannot open (the workers open their
/// own copies later, each in its thread).
fn check_spout_files(topology: &TopologyConfig) -> Result<()> {
    for spout in &topology.spouts {
        if let SpoutConfig::File(file) = spout {
            std::fs::metadata(&file.path).map_err(|e| Error::Spout {
                spout: file.path.display().to_string(),
                message: e.to_string(),
            })?;
        }
    }
    Ok(())
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
