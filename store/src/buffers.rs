//! Per-thread I/O buffers. A fresh multi-KiB buffer per task costs an mmap and a page fault per
//! 4 KiB (zeroed memory on first touch), which dominated copying many small files.

use std::cell::RefCell;

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with a buffer of at least `len` bytes whose start is aligned to `align` (a power of
/// two). Contents are whatever the thread's previous task left.
pub fn with_buffer<R>(len: usize, align: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    BUFFER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len + align {
                buf.resize(len + align, 0);
            }
            let start = buf.as_ptr().align_offset(align);
            f(&mut buf[start..start + len])
        }
        // Only if `f` itself asked for a buffer: give it its own.
        Err(_) => {
            let mut buf = vec![0u8; len + align];
            let start = buf.as_ptr().align_offset(align);
            f(&mut buf[start..start + len])
        }
    })
}
