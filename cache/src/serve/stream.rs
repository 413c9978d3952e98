//! Sending a NAR: dumped and compressed on one thread while the worker writes it to the
//! socket, through a bounded pipe.

use std::cell::Cell;
use std::io::{self, Read};
use std::sync::atomic::AtomicBool;

use noodle_store::nar::{self, NarLayout};
use tiny_http::{Header, Request, Response, StatusCode};

use super::{header, pipe, text, Reply, Served};

/// zstd's default: fast enough to keep up with a LAN while still halving most NARs.
const ZSTD_LEVEL: i32 = 3;

/// tiny_http sends a body of unknown length to an HTTP/1.0 peer, or to one asking for no
/// transfer coding (`TE: identity`), by reading it all into memory first: a NAR is never
/// sent that way.
pub(super) fn cannot_stream(request: &Request) -> Option<Reply> {
    if *request.http_version() < (1, 1) {
        return Some(text(
            505,
            "HTTP/1.1 required: NARs are compressed on the fly and sent chunked\n",
        ));
    }
    let identity = request
        .headers()
        .iter()
        .filter(|h| h.field.equiv("TE"))
        .flat_map(|h| h.value.as_str().split(','))
        .any(|coding| {
            let name = coding.split(';').next().unwrap_or_default().trim();
            name.eq_ignore_ascii_case("identity")
        });
    identity.then(|| {
        text(
            400,
            "TE: identity is not supported: NARs are compressed on the fly and sent chunked\n",
        )
    })
}

fn nar_content_type() -> Header {
    header("Content-Type", "application/zstd")
}

/// HEAD: the path is there with that hash; the archive itself is not made.
pub(super) fn head_nar(request: Request) -> Served {
    // Without a length, tiny_http announces chunked and sends no body to a HEAD.
    let response = Response::new(
        StatusCode(200),
        vec![nar_content_type()],
        io::empty(),
        None,
        None,
    );
    Served {
        status: 200,
        bytes: 0,
        problem: request.respond(response).err().map(|e| e.to_string()),
    }
}

/// Counts what the socket side took, for the log.
struct Counted<'a, R> {
    inner: R,
    count: &'a Cell<u64>,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// Dumps and compresses on one thread while this one writes to the socket.
pub(super) fn stream_nar(request: Request, layout: &NarLayout, stop: &AtomicBool) -> Served {
    let (mut writer, reader) = pipe::pipe(stop);
    let count = Cell::new(0);
    let body = Counted {
        inner: reader,
        count: &count,
    };
    let response = Response::new(StatusCode(200), vec![nar_content_type()], body, None, None);
    let (produced, sent) = std::thread::scope(|scope| {
        let producer = scope.spawn(move || {
            let compressed = (|| -> io::Result<()> {
                let mut encoder = zstd::Encoder::new(&mut writer, ZSTD_LEVEL)?;
                nar::dump(layout, &mut encoder).map_err(io::Error::other)?;
                encoder.finish()?;
                Ok(())
            })();
            match compressed {
                Ok(()) => writer.finish().map_err(|e| e.to_string()),
                Err(e) => {
                    let why = e.to_string();
                    writer.fail(e);
                    Err(why)
                }
            }
        });
        // Returns once the body is sent, or the peer is gone; either way the reader is
        // dropped, which unblocks the producer.
        let sent = request.respond(response);
        let produced = producer
            .join()
            .unwrap_or_else(|_| Err("compressing the NAR failed (panic)".into()));
        (produced, sent)
    });
    // The producer's error says why; tiny_http's only repeats it, or hides a hang-up.
    let problem = produced.err().or_else(|| sent.err().map(|e| e.to_string()));
    Served {
        status: 200,
        bytes: count.get(),
        problem,
    }
}
