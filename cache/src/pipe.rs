//! A bounded pipe between two threads of one transfer (a NAR being dumped and compressed for
//! a peer; a download being decompressed while the archive is unpacked): at most `DEPTH`
//! chunks in flight, so memory does not grow with the NAR. Unlike an OS pipe, a failure on
//! the writing side reaches the reader as an error, not as an end of data that would look
//! like a complete archive.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

pub(crate) const CHUNK: usize = 64 * 1024;
pub(crate) const DEPTH: usize = 4;

enum Piece {
    Data(Vec<u8>),
    End,
    Failed(io::Error),
}

pub(crate) fn pipe(stop: &AtomicBool) -> (PipeWriter<'_>, PipeReader) {
    let (tx, rx) = sync_channel(DEPTH);
    (
        PipeWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
            stop,
        },
        PipeReader {
            rx,
            current: Vec::new(),
            pos: 0,
            ended: false,
        },
    )
}

pub(crate) struct PipeWriter<'a> {
    tx: SyncSender<Piece>,
    buf: Vec<u8>,
    /// The server is stopping: abandon the transfer rather than keep `run` waiting for it.
    stop: &'a AtomicBool,
}

impl PipeWriter<'_> {
    fn send_buffered(&mut self) -> io::Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(io::Error::other("the server is stopping"));
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .send(Piece::Data(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the peer stopped reading"))
    }

    /// Everything was written: the reader sees the end of data.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        self.send_buffered()?;
        // The reader may be gone already (the peer hung up after the last byte): nothing to tell.
        let _ = self.tx.send(Piece::End);
        Ok(())
    }

    /// The transfer failed: the reader's next read returns `error`.
    pub(crate) fn fail(self, error: io::Error) {
        let _ = self.tx.send(Piece::Failed(error));
    }
}

impl Write for PipeWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() >= CHUNK {
            self.send_buffered()?;
        }
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffered()
    }
}

pub(crate) struct PipeReader {
    rx: Receiver<Piece>,
    current: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Piece::Data(chunk)) => {
                    self.current = chunk;
                    self.pos = 0;
                }
                Ok(Piece::End) => self.ended = true,
                Ok(Piece::Failed(error)) => return Err(error),
                // Dropped without End or Failed: the writing thread died (a panic).
                Err(_) => return Err(io::Error::other("the NAR writer stopped unexpectedly")),
            }
        }
        let n = out.len().min(self.current.len() - self.pos);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn carries_every_byte_in_order() {
        let stop = AtomicBool::new(false);
        let (mut writer, mut reader) = pipe(&stop);
        let sent = data(CHUNK * 5 + 123);
        std::thread::scope(|s| {
            s.spawn(|| {
                for piece in sent.chunks(1000) {
                    writer.write_all(piece).expect("write");
                }
                writer.finish().expect("finish");
            });
            let mut got = Vec::new();
            reader.read_to_end(&mut got).expect("read");
            assert_eq!(got, sent);
        });
    }

    #[test]
    fn a_failure_is_an_error_not_an_end() {
        let stop = AtomicBool::new(false);
        let (mut writer, mut reader) = pipe(&stop);
        writer.write_all(b"partial").expect("write");
        writer.flush().expect("flush");
        writer.fail(io::Error::other("disk on fire"));
        let mut got = Vec::new();
        let err = reader.read_to_end(&mut got).expect_err("must fail");
        assert!(err.to_string().contains("disk on fire"), "{err}");
        assert_eq!(got, b"partial");

        let (writer, mut reader) = pipe(&stop);
        drop(writer);
        assert!(reader.read_to_end(&mut Vec::new()).is_err());
    }

    #[test]
    fn a_slow_reader_bounds_what_is_buffered() {
        let stop = AtomicBool::new(false);
        let (mut writer, reader) = pipe(&stop);
        let accepted = AtomicU64::new(0);
        std::thread::scope(|s| {
            let producer = s.spawn(|| {
                let piece = data(4096);
                loop {
                    if writer.write_all(&piece).is_err() {
                        return;
                    }
                    accepted.fetch_add(piece.len() as u64, Ordering::Relaxed);
                }
            });
            std::thread::sleep(Duration::from_millis(200));
            let buffered = accepted.load(Ordering::Relaxed) as usize;
            // The channel's chunks, the one being sent, the one being filled.
            assert!(
                buffered <= (DEPTH + 2) * CHUNK,
                "{buffered} bytes accepted by a pipe nobody reads"
            );
            // The peer hangs up: the producer is told, not left blocked.
            drop(reader);
            producer.join().expect("producer returns");
        });
    }

    #[test]
    fn stopping_abandons_the_transfer() {
        let stop = AtomicBool::new(false);
        let (mut writer, _reader) = pipe(&stop);
        writer.write_all(&data(10)).expect("write");
        stop.store(true, Ordering::Relaxed);
        let err = writer.write_all(&data(CHUNK * 2)).expect_err("stopping");
        assert!(err.to_string().contains("stopping"), "{err}");
    }
}
