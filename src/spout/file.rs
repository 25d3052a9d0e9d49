//! The JSONL file spout. Every worker opens the file and decodes only the lines
//! whose number falls to it (`line % peers == index`), so parsing runs in
//! parallel and each line enters the dataflow once.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::DecodeError;
use crate::error::{Error, Result};
use crate::event::{decode_read, Event, Limits};
use crate::spout::{Backlog, BadEvent, Position, SourcePosition, Spout, SpoutState};

/// Reads events from a JSONL file, optionally following appended lines.
pub struct FileSpout {
    path: PathBuf,
    name: String,
    reader: BufReader<File>,
    follow: bool,
    limits: Limits,
    index: u64,
    peers: u64,
    /// Lines read so far (the next line's number is `lines + 1`).
    lines: u64,
    /// Bytes of those lines: where the next line starts.
    offset: u64,
    /// A line at or before `turn_next` and the byte it starts at.
    turn_start: (u64, u64),
    /// A line read up to end-of-file without its newline, while following.
    partial: Vec<u8>,
    /// The whole length of the line in `partial` (only its first
    /// `max_event_bytes` are kept).
    partial_len: usize,
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
        limits: Limits,
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
            limits,
            index: index as u64,
            peers: peers as u64,
            lines: 0,
            offset: 0,
            turn_start: (0, 0),
            partial: Vec::new(),
            partial_len: 0,
            turn_next: 0,
            resumed: None,
        })
    }

    /// `line` as read (at most `max_event_bytes` and a line end of it);
    /// `len`: the whole line's length, line end included.
    fn take_line(&mut self, line: &[u8], len: usize, out: &mut Vec<Result<Event, BadEvent>>) {
        self.lines += 1;
        self.offset += len as u64;
        let i = self.lines - 1;
        if i % self.peers != self.index {
            return;
        }
        if i + 1 > self.turn_next {
            self.turn_next = i + 1;
            self.turn_start = (i + 1, self.offset);
        }
        if self.resumed.as_ref().is_some_and(|at| at.was_read(i)) {
            return;
        }
        let ends = line.len() - line.strip_suffix(b"\n").map_or(line.len(), <[u8]>::len);
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) && len == line.len() + ends {
            return;
        }
        let whole = len - ends;
        let decoded = if whole > self.limits.max_event_bytes {
            // Only its first max_event_bytes were kept: it is bad whatever it says.
            Err(DecodeError::Oversize {
                len: whole,
                max: self.limits.max_event_bytes,
            })
        } else {
            decode_read(line, &self.limits, crate::event::unix_ms() as i64)
        };
        // An oversize line is dead-lettered with its first max_event_bytes
        // (its line number finds the rest).
        let raw = &line[..line.len().min(self.limits.max_event_bytes)];
        out.push(decoded.map_err(|error| BadEvent {
            position: Position::Line {
                file: self.path.display().to_string(),
                line: self.lines,
            },
            error,
            raw: String::from_utf8_lossy(raw).into_owned(),
        }));
    }
}

/// Reads to the end of the line (or of the input), keeping at most `keep`
/// bytes of it in `buf` and counting every byte in `len`, so that a line of
/// any length costs bounded memory. Returns whether a line end was reached.
fn read_line_capped(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    keep: usize,
    len: &mut usize,
) -> std::io::Result<bool> {
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(false);
        }
        let (n, ended) = match available.iter().position(|b| *b == b'\n') {
            Some(at) => (at + 1, true),
            None => (available.len(), false),
        };
        let room = keep.saturating_sub(buf.len()).min(n);
        buf.extend_from_slice(&available[..room]);
        *len += n;
        reader.consume(n);
        if ended {
            return Ok(true);
        }
    }
}

impl Spout for FileSpout {
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
            let keep = self.limits.max_event_bytes + 2; // and a line end
            let ended = read_line_capped(&mut self.reader, &mut buf, keep, &mut self.partial_len)
                .map_err(|e| Error::Spout {
                spout: self.name.clone(),
                message: e.to_string(),
            })?;
            if !ended {
                // End of file, possibly inside a line that is still being written.
                if self.follow {
                    self.partial = std::mem::take(&mut buf);
                    break SpoutState::Idle;
                }
                if self.partial_len > 0 {
                    let line = std::mem::take(&mut buf);
                    let len = std::mem::take(&mut self.partial_len);
                    self.take_line(&line, len, out);
                }
                break SpoutState::Exhausted;
            }
            let line = std::mem::take(&mut buf);
            let len = std::mem::take(&mut self.partial_len);
            self.take_line(&line, len, out);
            buf = line;
            buf.clear();
            budget -= 1;
        };
        Ok(state)
    }

    fn backlog(&self) -> Vec<Backlog> {
        vec![Backlog {
            part: format!("{} turn {} of {}", self.name, self.index, self.peers),
            position: SourcePosition::turn_count(self.index, self.peers, self.turn_next),
            high_watermark: None,
        }]
    }

    fn position(&self) -> SourcePosition {
        SourcePosition::file_turn(
            self.index as usize,
            self.peers as usize,
            self.turn_next,
            self.turn_start,
        )
    }

    fn resume(&mut self, from: &SourcePosition) -> Result<()> {
        match from {
            SourcePosition::Turns { .. } => {
                // Past the lines every worker read, then the first line
                // of this worker's turn not read before.
                let (line, start) = from.read_before();
                self.reader
                    .seek(SeekFrom::Start(start))
                    .map_err(|e| Error::Spout {
                        spout: self.name.clone(),
                        message: e.to_string(),
                    })?;
                (self.lines, self.offset) = (line, start);
                self.turn_next = from.first_unread(self.index, self.peers);
                self.turn_start = (line, start);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn activity(n: u64) -> String {
        format!(
            r#"{{"type":"activity","id":"a{n}","time":{n},"actor":"user:u{n}","verb":"post","object":"thing:t"}}"#
        )
    }

    fn ids(out: Vec<std::result::Result<Event, BadEvent>>) -> Vec<String> {
        out.into_iter()
            .map(|e| match e.expect("a good line") {
                Event::Activity(a) => a.id.to_string(),
                other => panic!("not an activity: {other:?}"),
            })
            .collect()
    }

    /// Two workers read part of a file; one worker resumes from their
    /// merged positions and reads exactly the lines they did not. It
    /// seeks past what both read: that part of the file is overwritten
    /// with bytes without a line end, which a re-read would take as one
    /// long line and shift every line number after it.
    #[test]
    fn a_resume_seeks_past_the_lines_every_worker_read() {
        let dir = std::env::temp_dir().join(format!("feedstorm-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        let lines: Vec<String> = (0..40).map(activity).collect();
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let limits = Limits::with_max_bytes(1 << 16);
        let mut at: Option<SourcePosition> = None;
        let mut read = Vec::new();
        for (index, polls) in [(0, 3), (1, 7)] {
            let mut spout = FileSpout::open(&path, false, limits, index, 2).unwrap();
            let mut out = Vec::new();
            for _ in 0..polls {
                spout.poll(1, &mut out).unwrap();
            }
            read.extend(ids(out));
            match &mut at {
                None => at = Some(spout.position()),
                Some(at) => at.merge(&spout.position()).unwrap(),
            }
        }
        let at = at.unwrap();
        let (line, byte) = at.read_before();
        assert_eq!(line, 5, "worker 0 read lines 0, 2 and 4, worker 1 more");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[..byte as usize].fill(b'x');
        std::fs::write(&path, bytes).unwrap();

        let mut resumed = FileSpout::open(&path, false, limits, 0, 1).unwrap();
        resumed.resume(&at).unwrap();
        let mut out = Vec::new();
        while resumed.poll(100, &mut out).unwrap() != SpoutState::Exhausted {}
        read.extend(ids(out));
        read.sort();
        let mut all: Vec<String> = (0..40).map(|n| format!("a{n}")).collect();
        all.sort();
        assert_eq!(read, all, "every line read exactly once");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
