//! The JSONL file spout. Every worker opens the file and decodes only the lines
//! whose number falls to it (`line % peers == index`), so parsing runs in
//! parallel and each line enters the dataflow once.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::event::{decode, Event};
use crate::spout::{BadEvent, Position, SourcePosition, Spout, SpoutState};

/// Reads events from a JSONL file, optionally following appended lines.
pub struct FileSpout {
    path: PathBuf,
    name: String,
    reader: BufReader<File>,
    follow: bool,
    max_event_bytes: usize,
    index: u64,
    peers: u64,
    /// Lines read so far (the next line's number is `lines + 1`).
    lines: u64,
    /// A line read up to end-of-file without its newline, while following.
    partial: Vec<u8>,
    /// The index (from 0) after the last line of this worker's turn passed.
    turn_next: u64,
    /// Lines read before a checkpoint: passed over, not decoded again.
    resumed: Option<SourcePosition>,
}

impl FileSpout {
    /// Opens `path` for worker `index` of `peers`.
    pub fn open(
        path: &Path,
        follow: bool,
        max_event_bytes: usize,
        index: usize,
        peers: usize,
    ) -> Result<FileSpout> {
        let file = File::open(path).map_err(|e| Error::Spout {
            spout: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(FileSpout {
            path: path.to_owned(),
            name: format!("file:{}", path.display()),
            reader: BufReader::with_capacity(1 << 20, file),
            follow,
            max_event_bytes,
            index: index as u64,
            peers: peers as u64,
            lines: 0,
            partial: Vec::new(),
            turn_next: 0,
            resumed: None,
        })
    }

    fn take_line(&mut self, line: &[u8], out: &mut Vec<Result<Event, BadEvent>>) {
        self.lines += 1;
        let i = self.lines - 1;
        if i % self.peers != self.index {
            return;
        }
        self.turn_next = self.turn_next.max(i + 1);
        if self.resumed.as_ref().is_some_and(|at| at.was_read(i)) {
            return;
        }
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        out.push(
            decode(line, self.max_event_bytes).map_err(|error| BadEvent {
                position: Position::Line {
                    file: self.path.display().to_string(),
                    line: self.lines,
                },
                error,
                raw: String::from_utf8_lossy(line).into_owned(),
            }),
        );
    }
}

impl Spout for FileSpout {
    fn name(&self) -> &str {
        &self.name
    }

    fn poll(&mut self, max: usize, out: &mut Vec<Result<Event, BadEvent>>) -> Result<SpoutState> {
        let start = out.len();
        let mut buf = std::mem::take(&mut self.partial);
        // Count lines, not only our share, so that all workers leave a poll at
        // about the same place in the file.
        let mut budget = max.saturating_mul(self.peers as usize).max(1);
        let state = loop {
            if budget == 0 || out.len() - start >= max {
                break SpoutState::Ready;
            }
            let read = self
                .reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| Error::Spout {
                    spout: self.name.clone(),
                    message: e.to_string(),
                })?;
            if read == 0 || !buf.ends_with(b"\n") {
                // End of file, possibly inside a line that is still being written.
                if self.follow {
                    self.partial = std::mem::take(&mut buf);
                    break SpoutState::Idle;
                }
                if !buf.is_empty() {
                    let line = std::mem::take(&mut buf);
                    self.take_line(&line, out);
                }
                break SpoutState::Exhausted;
            }
            let line = std::mem::take(&mut buf);
            self.take_line(&line, out);
            buf = line;
            buf.clear();
            budget -= 1;
        };
        Ok(state)
    }

    fn position(&self) -> SourcePosition {
        SourcePosition::turn(self.index as usize, self.peers as usize, self.turn_next)
    }

    fn resume(&mut self, from: &SourcePosition) -> Result<()> {
        match from {
            SourcePosition::Turns { .. } => {
                // The first line of this worker's turn not read before.
                self.turn_next = from.first_unread(self.index, self.peers);
                self.resumed = Some(from.clone());
                Ok(())
            }
            other => Err(Error::Checkpoint(format!(
                "{}: a file spout cannot resume from {other:?}",
                self.name
            ))),
        }
    }
}
