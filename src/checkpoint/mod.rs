//! Checkpoints, after Trident's state and Flink's and Arroyo's checkpoints:
//! at an epoch boundary each worker saves what its bolts need to resume,
//! with every spout's position at that boundary, and a start resumes from
//! the newest complete checkpoint instead of replaying the sources.
//!
//! - **What is saved.** The bolts whose state is the topology's input, as
//!   a compacted log: the interests bolt's last-writer-wins state (each
//!   pair with its time, unfollows included) and the stories bolt's
//!   retained activities, deleted ids and retention horizon. Heads,
//!   digests and notification groups are functions of these, so a resume
//!   rebuilds them from the saved state in two epochs (stories, then
//!   interests: each user's head is backfilled from its interests' newest
//!   stories, without replaying one delivery of history). Notification
//!   marks live in the store already.
//! - **When.** Boundaries are multiples of `[checkpoint] interval` in epoch
//!   time. An operator writes its part when its input passes a boundary,
//!   before it applies any later epoch, so every part holds exactly the
//!   epochs before the boundary; each driver adds its spouts' positions
//!   after the last epoch it sent before the boundary, once the sink has
//!   written everything before it.
//! - **Atomic.** Parts are written to temporary files, synced and renamed;
//!   the manifest, written the same way once every part and position is
//!   in, names a complete set with each part's size and xxh3-64 checksum.
//!   A checkpoint without a manifest, or whose parts do not match it (cut
//!   short, or bytes changed), is ignored in favour of the one before.
//! - **Acking.** A Kafka offset is committed once the checkpoint holding
//!   it is durable and the sink wrote every epoch before its boundary.
//!   While a restart on a persistent store withholds its output, the
//!   checkpoints are still taken (the state they hold is whole), but
//!   nothing is acked until the recovered state is written.
//! - **The store.** With a store that outlives the process, a checkpoint
//!   taken once the store holds the topology's state names the time from
//!   which the store records the users it writes (`store_since`): a resume
//!   from it rewrites only those and the users the replay changes (see
//!   [`crate::bolt::recovery`]), not every head.
//! - **Other worker counts.** Every part is a set of keyed events: a start
//!   on another number of workers reads them all and routes each by its
//!   key, and spout positions are per partition (Kafka) or per record
//!   (files, the generator), so a checkpoint resumes on any worker count.
//!
//! Layout: `DIR/TOPOLOGY/RUN-BOUNDARY/` holds `PART-wWORKER.bin`
//! (bincode) and `MANIFEST.json`; `RUN` is the start time of the process in
//! Unix milliseconds and `BOUNDARY` the epoch, both zero-padded, so names
//! sort oldest first.

mod decode;
mod manifest;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cluster::Cluster;
use crate::config::TopologyConfig;
use crate::error::{Error, Result};
use crate::event::unix_ms;
use crate::spout::SourcePosition;

pub use decode::{pooled_verb, presize, presized, shared_str, Presized, SharedIds};
use manifest::Summed;
pub use manifest::{inspect, Manifest, PartInfo, SourceEntry};

/// The bolts that write a part of each checkpoint, on every worker.
pub const PARTS: [&str; 2] = ["stories", "interests"];

/// Epochs a resume uses for the saved state before the spouts' first:
/// stories in epoch 0, interests in epoch 1.
pub const RESTORE_EPOCHS: u64 = 2;

/// Boundaries passed at once that a participant still saves (the newest).
pub const CATCH_UP: usize = 4;

/// What `/status` shows of the newest durable checkpoint.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Its boundary (epoch).
    pub epoch: u64,
    /// When it became durable (Unix milliseconds).
    pub written_at_ms: u64,
    /// From the first part written to the manifest, in milliseconds.
    pub duration_ms: u64,
    /// Bytes of all its parts.
    pub bytes: u64,
}

/// The checkpoints of one process's workers: where parts go, which
/// boundaries are complete, and the checkpoint this run resumed from.
pub struct Checkpoints {
    root: PathBuf,
    topology: String,
    interval: u64,
    keep: usize,
    cluster: Cluster,
    spouts: Vec<String>,
    state: Mutex<State>,
    /// This process's proposal for the run, and the checkpoints it can
    /// resume from (what it says in its hello).
    proposed_run: u64,
    candidates: Vec<String>,
    /// What the cluster agreed on (see [`settle`](Self::settle)).
    run: OnceLock<u64>,
    resumed: OnceLock<Option<Resumed>>,
    /// The boundary every process stops at, once agreed.
    stop_at: Mutex<Option<u64>>,
    /// Part writers still running: a stopped topology waits for them, so
    /// that none completes or prunes a checkpoint after it (a restart in
    /// the same process could be reading the checkpoint they would prune).
    writers: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Checkpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoints")
            .field("root", &self.root)
            .field("run", &self.run())
            .field("interval_ms", &self.interval)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    pending: BTreeMap<u64, Pending>,
    durable: Option<u64>,
    summary: Option<Summary>,
    /// The first epoch from which the store holds the topology's state
    /// (after a recovery's writes; from the start without one).
    store_whole_from: Option<u64>,
    /// The oldest `store_since` of the checkpoints kept: what the store
    /// must still remember of the users it wrote.
    written_needed_from: Option<u64>,
}

struct Pending {
    parts: Vec<PartInfo>,
    positions: BTreeMap<usize, Vec<SourcePosition>>,
    started: Instant,
}

impl Pending {
    fn new(started: Instant) -> Pending {
        Pending {
            parts: Vec::new(),
            positions: BTreeMap::new(),
            started,
        }
    }
}

/// The checkpoint a start resumed from.
pub struct Resumed {
    dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

impl Resumed {
    /// The files of part `component` that worker `index` of `peers` reads:
    /// those the checkpoint's workers `j` wrote with `j % peers == index`.
    pub fn parts(&self, component: &str, index: usize, peers: usize) -> Vec<PathBuf> {
        self.manifest
            .parts
            .iter()
            .filter(|p| p.component == component && p.worker % peers == index)
            .map(|p| self.dir.join(&p.file))
            .collect()
    }

    /// The saved position of spout number `spout`.
    pub fn position(&self, spout: usize) -> Option<&SourcePosition> {
        self.manifest.sources.get(spout).map(|s| &s.position)
    }
}

fn io_error(path: &Path, error: impl std::fmt::Display) -> Error {
    Error::Checkpoint(format!("{}: {error}", path.display()))
}

/// Writes `value` to `path` atomically: a temporary file, synced, renamed.
/// Returns the bytes written.
fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<Summed<File>>) -> Result<()>,
) -> Result<(u64, u64)> {
    let tmp = path.with_extension("tmp");
    let file = File::create(&tmp).map_err(|e| io_error(&tmp, e))?;
    // Hashed below the buffer: the hasher sees large pieces.
    let mut out = BufWriter::with_capacity(1 << 20, Summed::new(file));
    write(&mut out)?;
    let (file, xxh3) = out
        .into_inner()
        .map_err(|e| io_error(&tmp, e.error()))?
        .finish();
    file.sync_all().map_err(|e| io_error(&tmp, e))?;
    let bytes = file.metadata().map_err(|e| io_error(&tmp, e))?.len();
    std::fs::rename(&tmp, path).map_err(|e| io_error(path, e))?;
    Ok((bytes, xxh3))
}

/// Makes renames in `dir` durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))
}

/// Reads a part written by [`Checkpoints::write_part`].
pub fn read_part<T: DeserializeOwned>(path: &Path) -> Result<T> {
    // Read whole, then decoded from memory: bincode decodes a slice in
    // place, where a reader costs a call and a copy per field (a third of
    // a stories part's decoding).
    let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
    bincode::deserialize(&bytes).map_err(|e| io_error(path, e))
}

impl Checkpoints {
    /// The checkpoints of `topology` for this process of `cluster`, with
    /// the checkpoints it could resume from listed; `None` when checkpoints
    /// are off. The processes then agree which one to resume from
    /// ([`settle`](Self::settle)).
    pub fn open(
        topology: &TopologyConfig,
        cluster: &Cluster,
        spouts: Vec<String>,
    ) -> Result<Option<Checkpoints>> {
        let config = &topology.checkpoint;
        if !config.enabled() {
            return Ok(None);
        }
        let root = config.dir.join(&topology.name);
        std::fs::create_dir_all(&root).map_err(|e| io_error(&root, e))?;
        let mut usable =
            manifest::usable_dirs(&root, cluster.process, cluster.processes, cluster.workers);
        // A run named after the last one's, even if the clock went back.
        let newest_run = usable.iter().map(|(_, m)| m.run + 1).max().unwrap_or(0);
        usable.retain(|(dir, manifest)| {
            let corrupt = manifest.corrupt_parts(dir);
            if !corrupt.is_empty() {
                tracing::warn!(dir = %dir.display(), ?corrupt, "checkpoint with parts that fail their checksum: skipped");
            }
            corrupt.is_empty()
        });
        if let Some((dir, manifest)) = usable.last() {
            manifest.check_fits(&topology.name, &spouts, dir)?;
        }
        let candidates = usable
            .iter()
            .filter_map(|(dir, _)| Some(dir.file_name()?.to_str()?.to_owned()))
            .collect();
        Ok(Some(Checkpoints {
            root,
            topology: topology.name.clone(),
            interval: (config.interval.as_millis() as u64).max(1),
            keep: config.keep.max(1),
            cluster: cluster.clone(),
            spouts,
            state: Mutex::new(State::default()),
            proposed_run: unix_ms().max(newest_run),
            candidates,
            run: OnceLock::new(),
            resumed: OnceLock::new(),
            stop_at: Mutex::new(None),
            writers: Mutex::default(),
        }))
    }

    /// What this process proposes: its run, and the checkpoints (directory
    /// names) it can resume from.
    pub fn proposal(&self) -> (u64, Vec<String>) {
        (self.proposed_run, self.candidates.clone())
    }

    /// Takes what the cluster agreed: the run, and the checkpoint to resume
    /// from (loaded here). Every worker calls it; the first call counts.
    pub fn settle(&self, run: u64, resume: Option<&str>) -> Result<()> {
        self.run.get_or_init(|| run);
        if self.resumed.get().is_some() {
            return Ok(());
        }
        let resumed = match resume {
            Some(name) => {
                let dir = self.root.join(name);
                let c = &self.cluster;
                let manifest = manifest::usable(&dir, c.process, c.processes, c.workers)
                    .ok_or_else(|| {
                        Error::Checkpoint(format!(
                            "{}: the checkpoint the cluster resumes from is no longer whole here",
                            dir.display()
                        ))
                    })?;
                manifest.check_fits(&self.topology, &self.spouts, &dir)?;
                tracing::info!(
                    epoch = manifest.epoch,
                    workers = manifest.workers,
                    processes = manifest.processes,
                    dir = %dir.display(),
                    "resuming from a checkpoint"
                );
                Some(Resumed { dir, manifest })
            }
            None => None,
        };
        let _ = self.resumed.set(resumed);
        Ok(())
    }

    /// The run (agreed, or this process's proposal before the agreement).
    pub fn run(&self) -> u64 {
        self.run.get().copied().unwrap_or(self.proposed_run)
    }

    /// The checkpoint this run resumed from.
    pub fn resumed(&self) -> Option<&Resumed> {
        self.resumed.get().and_then(Option::as_ref)
    }

    /// Whether a checkpoint at or after every one of `boundaries` is durable.
    fn superseded(&self, boundaries: &[u64]) -> bool {
        let durable = self.state.lock().expect("checkpoint lock").durable;
        boundaries
            .last()
            .is_some_and(|newest| durable.is_some_and(|d| d >= *newest))
    }

    /// Keeps `writer` to wait for in [`wait_for_writers`](Self::wait_for_writers).
    fn track(&self, writer: std::thread::JoinHandle<()>) {
        let mut writers = self.writers.lock().expect("checkpoint writers");
        writers.retain(|w| !w.is_finished());
        writers.push(writer);
    }

    /// Waits for every part writer started so far (after the workers
    /// stopped, no new one starts).
    pub fn wait_for_writers(&self) {
        let writers = std::mem::take(&mut *self.writers.lock().expect("checkpoint writers"));
        for writer in writers {
            let _ = writer.join();
        }
    }

    /// Says that the store holds the topology's state for every epoch from
    /// `epoch` on (a recovery's writes are in); the first call counts.
    pub fn store_whole_from(&self, epoch: u64) {
        let mut state = self.state.lock().expect("checkpoint lock");
        state.store_whole_from.get_or_insert(epoch);
    }

    /// For a resume on a store that outlives the process: the users
    /// written since this time (Unix milliseconds) are all whose stored
    /// state may differ from the checkpoint's. `None`: every user's may
    /// (or the checkpoint was written by another cluster shape, whose
    /// users were written by other processes).
    pub fn resumed_store_since(&self) -> Option<u64> {
        let resumed = self.resumed()?;
        let manifest = &resumed.manifest;
        let same_shape = manifest.workers == self.cluster.workers
            && manifest.processes == self.cluster.processes;
        manifest.store_since.filter(|_| same_shape)
    }

    /// The oldest time from which the store must remember which users it
    /// wrote, for the checkpoints kept (see [`Manifest::store_since`]).
    pub fn written_needed_from(&self) -> Option<u64> {
        self.state
            .lock()
            .expect("checkpoint lock")
            .written_needed_from
    }

    /// Makes `boundary` a checkpoint boundary too: the one every process
    /// stops at.
    pub fn stop_at(&self, boundary: u64) {
        *self.stop_at.lock().expect("checkpoint lock") = Some(boundary);
    }

    /// The boundaries after `after` up to `upto`, at most the newest
    /// [`CATCH_UP`], that a checkpoint may be taken at (after the restore
    /// epochs), oldest first.
    pub fn passed(&self, after: u64, upto: u64) -> Vec<u64> {
        let newest = upto / self.interval * self.interval;
        let oldest = (after / self.interval + 1) * self.interval;
        let oldest = oldest
            .max(newest.saturating_sub((CATCH_UP as u64 - 1) * self.interval))
            .max(RESTORE_EPOCHS.div_ceil(self.interval) * self.interval);
        let mut passed: Vec<u64> = (oldest..=newest)
            .step_by(self.interval as usize)
            .filter(|b| *b > after)
            .collect();
        if let Some(stop) = *self.stop_at.lock().expect("checkpoint lock") {
            if stop > after && stop <= upto && !passed.contains(&stop) {
                passed.push(stop);
                passed.sort_unstable();
            }
        }
        passed
    }

    /// The boundary of the newest durable checkpoint of this run.
    pub fn durable(&self) -> Option<u64> {
        self.state.lock().expect("checkpoint lock").durable
    }

    /// What `/status` shows of the newest durable checkpoint.
    pub fn summary(&self) -> Option<Summary> {
        self.state.lock().expect("checkpoint lock").summary.clone()
    }

    fn dir_of(&self, boundary: u64) -> PathBuf {
        self.root
            .join(format!("{:013}-{:012}", self.run(), boundary))
    }

    /// Writes worker `worker`'s part `component` of the checkpoints at
    /// `boundaries` (one file, linked into each checkpoint's directory;
    /// `records` counted for `inspect`).
    pub fn write_part<T: Serialize>(
        &self,
        boundaries: &[u64],
        component: &str,
        worker: usize,
        records: u64,
        value: &T,
    ) -> Result<()> {
        let Some((&newest, older)) = boundaries.split_last() else {
            return Ok(());
        };
        let started = Instant::now();
        let file = format!("{component}-w{worker}.bin");
        let dir = self.dir_of(newest);
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        let path = dir.join(&file);
        let (bytes, xxh3) = write_atomic(&path, |out| {
            bincode::serialize_into(out, value).map_err(|e| io_error(&path, e))
        })?;
        tracing::debug!(
            ?boundaries,
            component,
            worker,
            bytes,
            records,
            "checkpoint part written"
        );
        for &boundary in older {
            let other = self.dir_of(boundary);
            std::fs::create_dir_all(&other).map_err(|e| io_error(&other, e))?;
            let link = other.join(&file);
            let _ = std::fs::remove_file(&link);
            std::fs::hard_link(&path, &link).map_err(|e| io_error(&link, e))?;
        }
        let mut state = self.state.lock().expect("checkpoint lock");
        for &boundary in boundaries {
            if state.durable.is_some_and(|d| d >= boundary) {
                continue;
            }
            let pending = state
                .pending
                .entry(boundary)
                .or_insert_with(|| Pending::new(started));
            pending.parts.push(PartInfo {
                component: component.to_owned(),
                worker,
                file: file.clone(),
                bytes,
                records,
                xxh3: Some(xxh3),
            });
            self.complete_if_ready(&mut state, boundary)?;
        }
        Ok(())
    }

    /// Worker `worker`'s spout positions after the last epoch it sent
    /// before `boundary`, once the sink has written every such epoch.
    pub fn add_positions(
        &self,
        boundary: u64,
        worker: usize,
        positions: Vec<SourcePosition>,
    ) -> Result<()> {
        let mut state = self.state.lock().expect("checkpoint lock");
        if state.durable.is_some_and(|d| d >= boundary) {
            return Ok(());
        }
        let pending = state
            .pending
            .entry(boundary)
            .or_insert_with(|| Pending::new(Instant::now()));
        pending.positions.insert(worker, positions);
        self.complete_if_ready(&mut state, boundary)
    }

    fn complete_if_ready(&self, state: &mut State, boundary: u64) -> Result<()> {
        let ready = state.pending.get(&boundary).is_some_and(|p| {
            p.parts.len() == PARTS.len() * self.cluster.workers
                && p.positions.len() == self.cluster.workers
        });
        if !ready {
            return Ok(());
        }
        let pending = state.pending.remove(&boundary).expect("checked");
        let mut sources: Vec<Option<SourcePosition>> = vec![None; self.spouts.len()];
        for positions in pending.positions.values() {
            for (at, position) in positions.iter().enumerate() {
                match &mut sources[at] {
                    Some(merged) => merged.merge(position)?,
                    slot @ None => *slot = Some(position.clone()),
                }
            }
        }
        // The sink records writes at the run's start plus their epoch. A
        // checkpoint taken while a recovery withholds its writes gets
        // none: the state it holds went past the store by changes that
        // were never written, and that a resume from it would not replay.
        let store_since = state
            .store_whole_from
            .filter(|from| boundary >= *from)
            .map(|_| self.run() + boundary);
        let manifest = Manifest {
            store_since,
            format: manifest::FORMAT,
            topology: self.topology.clone(),
            run: self.run(),
            epoch: boundary,
            created_ms: unix_ms(),
            workers: self.cluster.workers,
            processes: self.cluster.processes,
            process: self.cluster.process,
            parts: pending.parts,
            sources: self
                .spouts
                .iter()
                .zip(sources)
                .filter_map(|(spout, position)| {
                    Some(SourceEntry {
                        spout: spout.clone(),
                        position: position?,
                    })
                })
                .collect(),
        };
        let dir = self.dir_of(boundary);
        sync_dir(&dir)?;
        let path = dir.join(manifest::file_name(
            self.cluster.process,
            self.cluster.processes,
        ));
        write_atomic(&path, |out| {
            serde_json::to_writer_pretty(&mut *out, &manifest).map_err(|e| io_error(&path, e))?;
            out.write_all(b"\n").map_err(|e| io_error(&path, e))
        })?;
        sync_dir(&dir)?;
        let bytes = manifest.parts.iter().map(|p| p.bytes).sum();
        let duration_ms = pending.started.elapsed().as_millis() as u64;
        tracing::info!(epoch = boundary, bytes, duration_ms, dir = %dir.display(), "checkpoint durable");
        state.durable = Some(boundary);
        state.summary = Some(Summary {
            epoch: boundary,
            written_at_ms: manifest.created_ms,
            duration_ms,
            bytes,
        });
        // Boundaries some worker skipped can never complete now.
        let stale: Vec<u64> = state.pending.range(..boundary).map(|(b, _)| *b).collect();
        for b in stale {
            state.pending.remove(&b);
        }
        state.written_needed_from = self.prune(&dir);
        Ok(())
    }

    /// Deletes all but the newest `keep` complete checkpoints (and
    /// incomplete ones older than `newest`); returns the oldest
    /// `store_since` of those kept (one that would rewrite every user
    /// needs nothing remembered).
    fn prune(&self, newest: &Path) -> Option<u64> {
        let c = &self.cluster;
        let usable = manifest::usable_dirs(&self.root, c.process, c.processes, c.workers);
        let dirs: Vec<PathBuf> = usable.iter().map(|(dir, _)| dir.clone()).collect();
        manifest::prune(&self.root, self.keep, newest, &dirs);
        usable
            .iter()
            .rev()
            .take(self.keep)
            .filter_map(|(_, m)| m.store_since)
            .min()
    }
}

/// Writes checkpoint parts for one operator on one worker: tells it which
/// boundary, if any, to save before it applies an epoch.
pub struct Snapshots {
    checkpoints: Option<Arc<Checkpoints>>,
    component: &'static str,
    worker: usize,
    done: u64,
}

impl Snapshots {
    /// For part `component` of worker `worker`.
    pub fn new(
        checkpoints: Option<Arc<Checkpoints>>,
        component: &'static str,
        worker: usize,
    ) -> Self {
        Snapshots {
            checkpoints,
            component,
            worker,
            done: 0,
        }
    }

    /// Before applying epoch `next`, or when the input frontier is at
    /// `next`: the boundaries passed since the last call, to save now
    /// (they all hold the same epochs). Workers may pass several at once
    /// and each at another moment, so each saves every boundary it passed
    /// (the newest [`CATCH_UP`]) and a checkpoint completes wherever all meet.
    pub fn due(&mut self, next: u64) -> Vec<u64> {
        let Some(checkpoints) = self.checkpoints.as_ref() else {
            return Vec::new();
        };
        let passed = checkpoints.passed(self.done, next);
        if let Some(&newest) = passed.last() {
            self.done = newest;
        }
        passed
    }

    /// Saves `value` (`records` of it) as this operator's part at each of
    /// `boundaries`, on a thread of its own so that the worker goes on with
    /// its epochs while the part is serialized and synced. A failure is
    /// logged: that checkpoint is then incomplete and ignored.
    pub fn save<T: Serialize + Send + 'static>(&self, boundaries: &[u64], records: u64, value: T) {
        let Some(checkpoints) = self.checkpoints.clone() else {
            return;
        };
        let (boundaries, component, worker) = (boundaries.to_vec(), self.component, self.worker);
        let write = move || {
            if let Err(error) =
                checkpoints.write_part(&boundaries, component, worker, records, &value)
            {
                // A newer checkpoint completed first and pruned this one's
                // directory under the writer: nothing is missing.
                if checkpoints.superseded(&boundaries) {
                    tracing::debug!(%error, ?boundaries, part = component, "checkpoint part of a superseded boundary not written");
                } else {
                    tracing::error!(%error, ?boundaries, part = component, "checkpoint part not written");
                }
            }
        };
        let name = format!("checkpoint-{component}-{worker}");
        match std::thread::Builder::new().name(name).spawn(write) {
            Ok(writer) => self.checkpoints.as_ref().expect("checked").track(writer),
            Err(error) => tracing::error!(%error, "cannot start a checkpoint writer"),
        }
    }
}
