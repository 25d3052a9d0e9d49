//! The manifest that names a complete checkpoint, finding the newest one,
//! pruning old ones, and `feedstorm checkpoint inspect`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::format_time;
use crate::spout::SourcePosition;

/// The manifest's file name in a checkpoint's directory written by one
/// process; a cluster's process `I` writes `MANIFEST-pI.json`.
pub const FILE: &str = "MANIFEST.json";

/// The manifest file of process `process` of `processes`.
pub fn file_name(process: usize, processes: usize) -> String {
    if processes <= 1 {
        FILE.to_owned()
    } else {
        format!("MANIFEST-p{process}.json")
    }
}

/// The layout version this build writes and reads.
pub const FORMAT: u32 = 1;

/// A complete checkpoint: its parts and every spout's position.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Layout version.
    pub format: u32,
    /// The topology's name.
    pub topology: String,
    /// The run that wrote it (its start, Unix milliseconds).
    pub run: u64,
    /// The boundary: the checkpoint holds every epoch before it.
    pub epoch: u64,
    /// When it became complete (Unix milliseconds).
    pub created_ms: u64,
    /// Workers per process of the run that wrote it.
    pub workers: usize,
    /// Processes of that run.
    pub processes: usize,
    /// The process that wrote this manifest (its workers' parts and its
    /// spouts' positions).
    #[serde(default)]
    pub process: usize,
    /// The parts, each a file in the checkpoint's directory.
    pub parts: Vec<PartInfo>,
    /// Each spout's position, in the topology's spout order.
    pub sources: Vec<SourceEntry>,
    /// With a store that outlives the process: it holds this checkpoint's
    /// state except for the users written since this time (Unix
    /// milliseconds), which a resume rewrites; absent, a resume rewrites
    /// every user (the store did not hold the state at the boundary: a
    /// recovery was still withholding its writes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_since: Option<u64>,
}

impl Manifest {
    /// Adds `other`, another process's manifest of the same checkpoint:
    /// its parts and positions, and the store is trusted only as far as
    /// both trust it. A process whose recovery still withheld its writes at
    /// the boundary (no `store_since`) makes the whole checkpoint rewrite
    /// every user: its users' state may be missing from the store.
    pub fn merge(&mut self, other: &Manifest) -> Result<()> {
        self.parts.extend(other.parts.iter().cloned());
        for (mine, theirs) in self.sources.iter_mut().zip(&other.sources) {
            mine.position.merge(&theirs.position)?;
        }
        self.store_since = self
            .store_since
            .zip(other.store_since)
            .map(|(a, b)| a.min(b));
        Ok(())
    }
}

/// One part of a checkpoint: one bolt's state on one worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartInfo {
    /// Which bolt's state (`stories`, `interests`).
    pub component: String,
    /// The worker that wrote it.
    pub worker: usize,
    /// Its file name.
    pub file: String,
    /// Its size.
    pub bytes: u64,
    /// Records in it (activities and deleted ids, or users).
    pub records: u64,
    /// The xxh3-64 hash of its bytes: a resume passes over a checkpoint
    /// whose part does not match (bit rot, a damaged copy). Absent in
    /// checkpoints written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xxh3: Option<u64>,
}

/// A writer that hashes the bytes it passes on (xxh3-64), so that a part's
/// checksum costs no second read.
pub struct Summed<W> {
    inner: W,
    hasher: xxhash_rust::xxh3::Xxh3Default,
}

impl<W> Summed<W> {
    /// Hashes what is written to `inner`.
    pub fn new(inner: W) -> Self {
        Summed {
            inner,
            hasher: xxhash_rust::xxh3::Xxh3Default::new(),
        }
    }

    /// The writer and the hash of everything written.
    pub fn finish(self) -> (W, u64) {
        (self.inner, self.hasher.digest())
    }
}

impl<W: std::io::Write> std::io::Write for Summed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The xxh3-64 hash of the file at `path`, read in large pieces.
fn checksum_of(path: &Path) -> std::io::Result<u64> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        match file.read(&mut buf)? {
            0 => return Ok(hasher.digest()),
            n => hasher.update(&buf[..n]),
        }
    }
}

/// A spout's position in a checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceEntry {
    /// The spout's name.
    pub spout: String,
    /// Where it resumes.
    pub position: SourcePosition,
}

impl Manifest {
    /// Checks that the checkpoint in `dir` was written for this topology
    /// and these spouts.
    pub fn check_fits(&self, topology: &str, spouts: &[String], dir: &Path) -> Result<()> {
        let saved: Vec<&str> = self.sources.iter().map(|s| s.spout.as_str()).collect();
        let ours: Vec<&str> = spouts.iter().map(String::as_str).collect();
        if self.topology != topology || saved != ours {
            return Err(Error::Checkpoint(format!(
                "{} was written by topology {:?} reading {saved:?}, but this is {topology:?} reading {ours:?}; \
                 point [checkpoint] dir elsewhere, or move that directory away to start from the sources' beginning",
                dir.display(),
                self.topology
            )));
        }
        Ok(())
    }

    /// Whether every part is on disk with its recorded size.
    fn parts_present(&self, dir: &Path) -> bool {
        self.parts
            .iter()
            .all(|p| std::fs::metadata(dir.join(&p.file)).is_ok_and(|m| m.len() == p.bytes))
    }

    /// The parts whose bytes do not hash to their recorded checksum (each
    /// part is read once: a start checks the checkpoints it may resume
    /// from, not every pruning).
    pub fn corrupt_parts(&self, dir: &Path) -> Vec<String> {
        self.parts
            .iter()
            .filter(|p| {
                p.xxh3
                    .is_some_and(|sum| checksum_of(&dir.join(&p.file)).ok() != Some(sum))
            })
            .map(|p| p.file.clone())
            .collect()
    }
}

/// Checkpoint directories under `root`, oldest first.
fn checkpoint_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn read_manifest_file(path: &Path) -> Option<Manifest> {
    let text = std::fs::read_to_string(path).ok()?;
    match serde_json::from_str::<Manifest>(&text) {
        Ok(manifest) if manifest.format == FORMAT => Some(manifest),
        Ok(manifest) => {
            tracing::warn!(path = %path.display(), format = manifest.format, "checkpoint of another layout version: skipped");
            None
        }
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "unreadable checkpoint manifest: skipped");
            None
        }
    }
}

/// Every manifest in a checkpoint's directory (one per process that
/// completed it), by process.
fn read_manifests(dir: &Path) -> Vec<Manifest> {
    let mut manifests: Vec<Manifest> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("MANIFEST") && n.ends_with(".json"))
        })
        .filter_map(|p| read_manifest_file(&p))
        .collect();
    manifests.sort_by_key(|m| m.process);
    manifests
}

/// The checkpoint in `dir` as process `process` of a cluster of `processes`
/// x `workers` resumes from it: every process's manifest merged when all are
/// there (any shape may resume), else this process's own when the shape is
/// the same (each process reads only its own parts). `None`: not usable.
pub fn usable(dir: &Path, process: usize, processes: usize, workers: usize) -> Option<Manifest> {
    let manifests: Vec<Manifest> = read_manifests(dir)
        .into_iter()
        .filter(|m| {
            let whole = m.parts_present(dir);
            if !whole {
                tracing::warn!(dir = %dir.display(), process = m.process, "checkpoint with missing or torn parts: skipped");
            }
            whole
        })
        .collect();
    let writers = manifests.first()?.processes;
    let all_there =
        manifests.len() == writers && manifests.iter().enumerate().all(|(i, m)| m.process == i);
    if all_there {
        let mut merged = manifests[0].clone();
        for more in &manifests[1..] {
            merged.merge(more).ok()?;
        }
        return Some(merged);
    }
    manifests
        .into_iter()
        .find(|m| m.process == process && m.processes == processes && m.workers == workers)
}

/// The checkpoints under `root` that [`usable`] accepts, oldest first.
pub fn usable_dirs(
    root: &Path,
    process: usize,
    processes: usize,
    workers: usize,
) -> Vec<(PathBuf, Manifest)> {
    checkpoint_dirs(root)
        .into_iter()
        .filter_map(|dir| usable(&dir, process, processes, workers).map(|m| (dir, m)))
        .collect()
}

/// Deletes all but the newest `keep` checkpoints in `usable` (oldest
/// first), and the incomplete ones older than every checkpoint kept. An
/// incomplete one newer than that may be in progress: on another process
/// of the cluster (its manifest not yet there), or a stop's boundary that
/// a worker of this process is still saving.
pub fn prune(root: &Path, keep: usize, newest: &Path, usable: &[PathBuf]) {
    let oldest_kept = usable
        .get(usable.len().saturating_sub(keep))
        .map_or(newest, |dir| dir.as_path().min(newest));
    let mut complete = 0;
    for dir in checkpoint_dirs(root).into_iter().rev() {
        let remove = if usable.contains(&dir) {
            complete += 1;
            complete > keep
        } else {
            dir.as_path() < oldest_kept
        };
        if remove {
            if let Err(error) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), %error, "old checkpoint not deleted");
            }
        }
    }
}

/// `feedstorm checkpoint inspect DIR`: every checkpoint under `dir` (a
/// topology's checkpoint directory, or the `[checkpoint] dir` above it),
/// newest last: its epoch, time, spout positions and part sizes.
pub fn inspect(dir: &Path) -> Result<String> {
    let mut roots = vec![dir.to_owned()];
    if checkpoint_dirs(dir)
        .iter()
        .all(|d| read_manifests(d).is_empty() && !d.join(FILE).exists())
    {
        roots = checkpoint_dirs(dir);
    }
    let mut out = String::new();
    for root in roots {
        for checkpoint in checkpoint_dirs(&root) {
            let name = checkpoint.display();
            let manifests = read_manifests(&checkpoint);
            if manifests.is_empty() {
                out.push_str(&format!("{name}: incomplete (no manifest)\n"));
                continue;
            }
            for manifest in manifests {
                let bytes: u64 = manifest.parts.iter().map(|p| p.bytes).sum();
                out.push_str(&format!(
                "{name}: {}{}\n  topology {}, epoch {}, written {}, {} workers x {} processes, {} bytes{}\n",
                if !manifest.parts_present(&checkpoint) { "TORN (parts missing or cut short)" } else if !manifest.corrupt_parts(&checkpoint).is_empty() { "CORRUPT (parts fail their checksum)" } else { "complete" },
                if manifest.processes > 1 { format!(" (process {} of {})", manifest.process, manifest.processes) } else { String::new() },
                manifest.topology,
                manifest.epoch,
                format_time(manifest.created_ms as i64),
                manifest.workers,
                manifest.processes,
                bytes,
                if manifest.parts.is_empty() { "" } else { ":" },
            ));
                for part in &manifest.parts {
                    out.push_str(&format!(
                        "    {:<10} worker {:<3} {:>12} bytes {:>10} records\n",
                        part.component, part.worker, part.bytes, part.records
                    ));
                }
                for source in &manifest.sources {
                    out.push_str(&format!(
                        "  {}: {}\n",
                        source.spout,
                        serde_json::to_string(&source.position).unwrap_or_default()
                    ));
                }
            }
        }
    }
    if out.is_empty() {
        return Err(Error::Checkpoint(format!(
            "no checkpoints under {}",
            dir.display()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::Manifest;

    fn manifest(process: usize, store_since: Option<u64>) -> Manifest {
        Manifest {
            format: super::FORMAT,
            topology: "t".into(),
            run: 1,
            epoch: 10,
            created_ms: 0,
            workers: 1,
            processes: 2,
            process,
            parts: vec![],
            sources: vec![],
            store_since,
        }
    }

    #[test]
    fn a_merged_checkpoint_trusts_the_store_only_as_far_as_every_process_does() {
        let mut merged = manifest(0, Some(20));
        merged.merge(&manifest(1, Some(15))).unwrap();
        assert_eq!(merged.store_since, Some(15));
        let mut merged = manifest(0, Some(20));
        merged.merge(&manifest(1, None)).unwrap();
        assert_eq!(merged.store_since, None);
    }

    #[test]
    fn a_prune_keeps_the_newest_complete_and_the_incomplete_after_the_oldest_kept() {
        let root = tempfile::tempdir().unwrap();
        let dir = |name: &str| root.path().join(name);
        for name in ["1", "2", "3", "4", "5", "6"] {
            std::fs::create_dir(dir(name)).unwrap();
        }
        // 1, 3 and 5 complete; 2, 4 and 6 in progress (4 perhaps on
        // another process).
        let usable = [dir("1"), dir("3"), dir("5")];
        super::prune(root.path(), 2, &dir("5"), &usable);
        let left: Vec<bool> = ["1", "2", "3", "4", "5", "6"]
            .iter()
            .map(|name| dir(name).exists())
            .collect();
        assert_eq!(left, [false, false, true, true, true, true]);
    }
}
