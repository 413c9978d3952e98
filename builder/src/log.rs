//! Build logs: compressed with zstd under `var/log` as the build runs, with the last lines kept
//! in memory to show when a build fails.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Lines kept for the failure message.
pub const TAIL_LINES: usize = 25;
/// A line longer than this is cut in the tail (the log file keeps it whole).
const TAIL_LINE_MAX: usize = 400;

pub struct LogWriter {
    encoder: zstd::stream::write::Encoder<'static, fs_err::File>,
    path: PathBuf,
    tail: VecDeque<String>,
    partial: Vec<u8>,
}

impl LogWriter {
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let file = fs_err::File::create(path)?;
        Ok(Self {
            encoder: zstd::stream::write::Encoder::new(file, 3)?,
            path: path.to_owned(),
            tail: VecDeque::with_capacity(TAIL_LINES),
            partial: Vec::new(),
        })
    }

    pub fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.encoder.write_all(data)?;
        for &byte in data {
            if byte == b'\n' {
                let line = std::mem::take(&mut self.partial);
                self.push_line(&line);
            } else if self.partial.len() < TAIL_LINE_MAX {
                self.partial.push(byte);
            }
        }
        Ok(())
    }

    fn push_line(&mut self, line: &[u8]) {
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail
            .push_back(String::from_utf8_lossy(line).into_owned());
    }

    /// The last lines written (a final line without newline included).
    pub fn tail(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.tail.iter().cloned().collect();
        if !self.partial.is_empty() {
            lines.push(String::from_utf8_lossy(&self.partial).into_owned());
            if lines.len() > TAIL_LINES {
                lines.remove(0);
            }
        }
        lines
    }

    /// Finishes the zstd frame. Not fsynced: a log lost to a power cut costs nothing that
    /// matters, and a sync per build would be most of a small build's time.
    pub fn finish(self) -> std::io::Result<PathBuf> {
        self.encoder.finish()?;
        Ok(self.path)
    }
}

/// The uncompressed contents of a log written by [`LogWriter`].
pub fn open(path: &Path) -> std::io::Result<impl Read> {
    zstd::stream::read::Decoder::new(fs_err::File::open(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_round_trips_and_keeps_the_last_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.log.zst");
        let mut log = LogWriter::create(&path).expect("create");
        let mut expected = Vec::new();
        for i in 0..40 {
            let line = format!("line {i}\n");
            // Split writes mid-line, as pipe reads do.
            let (a, b) = line.as_bytes().split_at(3);
            log.write(a).expect("write");
            log.write(b).expect("write");
            expected.extend_from_slice(line.as_bytes());
        }
        log.write(b"no newline").expect("write");
        expected.extend_from_slice(b"no newline");
        let tail = log.tail();
        assert_eq!(tail.len(), TAIL_LINES);
        assert_eq!(tail.last().map(String::as_str), Some("no newline"));
        assert_eq!(tail[0], "line 16");
        let written = log.finish().expect("finish");
        let mut back = Vec::new();
        open(&written)
            .expect("open")
            .read_to_end(&mut back)
            .expect("read");
        assert_eq!(back, expected);
    }
}
