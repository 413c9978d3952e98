//! A command's merged stdout and stderr: drained by a thread of its own, so that a command
//! printing without end neither blocks nor makes us hold more than the limit.

use std::collections::VecDeque;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

const CHUNK: usize = 64 * 1024;

/// The reading end of the output pipe, being drained.
pub(super) struct Capture {
    shared: Arc<(Mutex<Kept>, Condvar)>,
}

/// The first and the last bytes of the output, and how many there were.
struct Kept {
    head: Vec<u8>,
    head_limit: usize,
    tail: VecDeque<u8>,
    tail_limit: usize,
    total: u64,
    eof: bool,
    /// The result has been taken; later output (from leftovers still holding the pipe) is
    /// only drained, so that they never block on a full pipe while we live.
    taken: bool,
}

impl Capture {
    /// Starts the thread draining `read`; it ends at EOF, which may come after the result was
    /// taken (a daemon started by an activation script may hold the pipe as long as it runs).
    pub(super) fn start(read: OwnedFd, limit: usize) -> std::io::Result<Capture> {
        let head_limit = limit - limit / 2;
        let kept = Kept {
            head: Vec::new(),
            head_limit,
            tail: VecDeque::new(),
            tail_limit: limit / 2,
            total: 0,
            eof: false,
            taken: false,
        };
        let shared = Arc::new((Mutex::new(kept), Condvar::new()));
        let drained = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("exec-output".into())
            .spawn(move || drain(std::fs::File::from(read), &drained))?;
        Ok(Capture { shared })
    }

    /// Waits for EOF, but not past `until`, then renders what was kept: lossy UTF-8, with a
    /// marker line where bytes were left out. Returns it with the number of bytes seen.
    pub(super) fn finish(self, until: Instant) -> (String, u64) {
        let (mutex, condvar) = &*self.shared;
        let mut kept = lock(mutex);
        while !kept.eof {
            let now = Instant::now();
            if now >= until {
                break;
            }
            kept = condvar
                .wait_timeout(kept, until - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        kept.taken = true;
        let text = kept.render();
        // Nothing reads them any more.
        kept.head = Vec::new();
        kept.tail = VecDeque::new();
        (text, kept.total)
    }
}

fn lock(mutex: &Mutex<Kept>) -> MutexGuard<'_, Kept> {
    // A panic elsewhere while holding the lock leaves the buffer consistent enough to print.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn drain(mut pipe: std::fs::File, shared: &(Mutex<Kept>, Condvar)) {
    let (mutex, condvar) = shared;
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let n = match pipe.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let mut kept = lock(mutex);
        if !kept.taken {
            kept.push(&buffer[..n]);
        }
    }
    lock(mutex).eof = true;
    condvar.notify_all();
}

impl Kept {
    fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let room = self.head_limit - self.head.len();
        if room > 0 {
            let (first, rest) = bytes.split_at(room.min(bytes.len()));
            self.head.extend_from_slice(first);
            bytes = rest;
        }
        if bytes.len() >= self.tail_limit {
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - self.tail_limit..]);
            return;
        }
        let overflow = (self.tail.len() + bytes.len()).saturating_sub(self.tail_limit);
        self.tail.drain(..overflow);
        self.tail.extend(bytes);
    }

    fn render(&self) -> String {
        let (first, second) = self.tail.as_slices();
        let kept = self.head.len() + first.len() + second.len();
        let omitted = self.total - kept as u64;
        let mut bytes = Vec::with_capacity(kept);
        bytes.extend_from_slice(&self.head);
        if omitted == 0 {
            // One piece: a character split between head and tail stays whole.
            bytes.extend_from_slice(first);
            bytes.extend_from_slice(second);
            return String::from_utf8_lossy(&bytes).into_owned();
        }
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        text.push_str(&format!("\n[… {omitted} bytes omitted …]\n"));
        bytes.clear();
        bytes.extend_from_slice(first);
        bytes.extend_from_slice(second);
        text.push_str(&String::from_utf8_lossy(&bytes));
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(limit: usize) -> Kept {
        Kept {
            head: Vec::new(),
            head_limit: limit - limit / 2,
            tail: VecDeque::new(),
            tail_limit: limit / 2,
            total: 0,
            eof: false,
            taken: false,
        }
    }

    #[test]
    fn keeps_everything_under_the_limit() {
        let mut k = kept(10);
        k.push(b"abc");
        k.push(b"defghij");
        assert_eq!(k.render(), "abcdefghij");
    }

    #[test]
    fn keeps_head_and_tail_over_the_limit() {
        let mut k = kept(6);
        k.push(b"abcd");
        k.push(b"efgh");
        k.push(b"ijklmnop");
        assert_eq!(k.render(), "abc\n[… 10 bytes omitted …]\nnop");
        assert_eq!(k.total, 16);
    }

    #[test]
    fn zero_limit_keeps_only_the_marker() {
        let mut k = kept(0);
        k.push(b"abc");
        assert_eq!(k.render(), "\n[… 3 bytes omitted …]\n");
    }
}
