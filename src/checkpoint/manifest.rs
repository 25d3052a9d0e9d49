//! The manifest that names a complete checkpoint, finding the newest one,
//! pruning old ones, and `feedstorm checkpoint inspect`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::format_time;
use crate::spout::SourcePosition;

/// The manifest's file name in a checkpoint's directory.
pub const FILE: &str = "MANIFEST.json";

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
    /// The parts, each a file in the checkpoint's directory.
    pub parts: Vec<PartInfo>,
    /// Each spout's position, in the topology's spout order.
    pub sources: Vec<SourceEntry>,
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

fn read_manifest(dir: &Path) -> Option<Manifest> {
    let text = std::fs::read_to_string(dir.join(FILE)).ok()?;
    match serde_json::from_str::<Manifest>(&text) {
        Ok(manifest) if manifest.format == FORMAT => Some(manifest),
        Ok(manifest) => {
            tracing::warn!(dir = %dir.display(), format = manifest.format, "checkpoint of another layout version: skipped");
            None
        }
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "unreadable checkpoint manifest: skipped");
            None
        }
    }
}

/// The newest checkpoint under `root` whose manifest and parts are whole.
pub fn newest_complete(root: &Path) -> Result<Option<(PathBuf, Manifest)>> {
    for dir in checkpoint_dirs(root).into_iter().rev() {
        let Some(manifest) = read_manifest(&dir) else {
            continue;
        };
        if manifest.parts_present(&dir) {
            return Ok(Some((dir, manifest)));
        }
        tracing::warn!(dir = %dir.display(), "checkpoint with missing or torn parts: skipped");
    }
    Ok(None)
}

/// Deletes all but the newest `keep` complete checkpoints, and incomplete
/// ones older than `newest` (a newer incomplete one may be in progress).
pub fn prune(root: &Path, keep: usize, newest: &Path) {
    let mut complete = 0;
    for dir in checkpoint_dirs(root).into_iter().rev() {
        let whole = read_manifest(&dir).is_some_and(|m| m.parts_present(&dir));
        let remove = if whole {
            complete += 1;
            complete > keep
        } else {
            dir.as_path() < newest
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
    if checkpoint_dirs(dir).iter().all(|d| !d.join(FILE).exists()) {
        roots = checkpoint_dirs(dir);
    }
    let mut out = String::new();
    for root in roots {
        for checkpoint in checkpoint_dirs(&root) {
            let name = checkpoint.display();
            let Some(manifest) = read_manifest(&checkpoint) else {
                out.push_str(&format!("{name}: incomplete (no manifest)\n"));
                continue;
            };
            let bytes: u64 = manifest.parts.iter().map(|p| p.bytes).sum();
            out.push_str(&format!(
                "{name}: {}\n  topology {}, epoch {}, written {}, {} workers x {} processes, {} bytes{}\n",
                if manifest.parts_present(&checkpoint) { "complete" } else { "TORN (parts missing or cut short)" },
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
    if out.is_empty() {
        return Err(Error::Checkpoint(format!(
            "no checkpoints under {}",
            dir.display()
        )));
    }
    Ok(out)
}
