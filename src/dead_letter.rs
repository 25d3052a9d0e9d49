//! The dead-letter destination: bad events, each with its source position and
//! the reason, appended as JSON lines so none is lost and each can be replayed.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;

use serde_json::json;

use crate::error::Result;
use crate::spout::BadEvent;

/// A JSONL dead-letter file shared by the workers of a process.
pub struct DeadLetters {
    file: Mutex<BufWriter<File>>,
}

impl DeadLetters {
    /// Opens (appends to) `path`, creating it and its directory.
    pub fn open(path: &Path) -> Result<DeadLetters> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(DeadLetters {
            file: Mutex::new(BufWriter::new(file)),
        })
    }

    /// Appends one bad event and flushes it, logging where it came from.
    pub fn write(&self, bad: &BadEvent) -> Result<()> {
        tracing::warn!(position = ?bad.position, error = %bad.error, "bad event sent to dead letters");
        let line =
            json!({"position": bad.position, "error": bad.error.to_string(), "raw": bad.raw});
        let mut file = self.file.lock().expect("dead-letter lock");
        writeln!(file, "{line}")?;
        file.flush()?;
        Ok(())
    }
}
