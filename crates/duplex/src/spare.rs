//! The read buffer connections borrow while bytes arrive: one spare per
//! thread.
//!
//! A connection with no frame partly received holds no read buffer. To read,
//! it borrows the thread's spare, reads into it, and gives it back once every
//! frame in it is decoded, so that a thousand idle connections cost nothing
//! and a busy one neither allocates nor copies per read: large payloads are
//! views of the buffer (see `FrameDecoder`), and the buffer is reused in place
//! once they are dropped.

use std::cell::Cell;

use bytes::BytesMut;
use duplex_proto::{BufferPool, READ_ROOM};
/// The size of a new spare: twice the room a read needs, so that it is moved
/// back to its start (when nothing read into it is still held) once per 32 KiB
/// read, rather than after every read.
const SPARE_LEN: usize = 2 * READ_ROOM;
/// A buffer grown past this (by a large frame read into it) is not kept.
const MAX_SPARE: usize = 2 * SPARE_LEN;

thread_local! {
    static SPARE: Cell<Option<BytesMut>> = const { Cell::new(None) };
}

/// The thread's spare as the pool a connection borrows its read buffer from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ThreadSpare;

impl BufferPool for ThreadSpare {
    #[inline]
    fn take(&mut self) -> BytesMut {
        take()
    }

    #[inline]
    fn give(&mut self, buf: BytesMut) {
        give(buf);
    }
}

/// An empty buffer with at least [`READ_ROOM`] bytes of room: the thread's
/// spare (moved back to its start if it needs to be, which it can when no
/// payload read into it is still held), or a new one.
#[inline]
pub(crate) fn take() -> BytesMut {
    let kept = SPARE.with(Cell::take);
    if let Some(mut buf) = kept
        && (buf.capacity() >= READ_ROOM || buf.try_reclaim(READ_ROOM))
        && buf.capacity() <= MAX_SPARE
    {
        return buf;
    }
    BytesMut::with_capacity(SPARE_LEN)
}

/// Gives an emptied buffer back to be the thread's spare, if it has more
/// room than the spare there is. A buffer that still holds bytes is dropped:
/// they are never anybody else's input.
#[inline]
pub(crate) fn give(buf: BytesMut) {
    if !buf.is_empty() || buf.capacity() == 0 {
        return;
    }
    SPARE.with(|spare| {
        // Usually there is none: the buffer given back is the one taken.
        let kept = spare.take();
        spare.set(match kept {
            Some(kept) if kept.capacity() > buf.capacity() => Some(kept),
            _ => Some(buf),
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spare_given_back_is_reused_in_place() {
        let mut buf = take();
        buf.extend_from_slice(b"frame");
        let ptr = buf.as_ptr();
        buf.clear();
        give(buf);
        let again = take();
        assert_eq!(again.as_ptr(), ptr);
        assert!(again.capacity() >= READ_ROOM);
    }

    #[test]
    fn a_spare_whose_bytes_are_still_held_is_not_written_over() {
        let mut buf = take();
        buf.extend_from_slice(&[7; 100]);
        let held = buf.split_to(100).freeze();
        give(buf);
        // Another read fills the spare while `held` lives.
        let mut next = take();
        next.resize(READ_ROOM, 1);
        assert_eq!(held[..], [7; 100]);
        next.clear();
        give(next);
    }

    #[test]
    fn a_buffer_grown_large_is_not_kept() {
        let mut big = BytesMut::with_capacity(4 * MAX_SPARE);
        big.extend_from_slice(b"x");
        big.clear();
        give(big);
        assert!(take().capacity() <= MAX_SPARE);
    }

    #[test]
    fn a_buffer_with_bytes_in_it_is_dropped() {
        let _ = SPARE.take();
        let mut buf = BytesMut::with_capacity(READ_ROOM);
        buf.extend_from_slice(b"partial frame");
        give(buf);
        assert!(take().is_empty());
    }
}
