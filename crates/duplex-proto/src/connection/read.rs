//! The read buffer: the connection owns it and sizes it, borrowing room
//! from the caller's pool while bytes arrive and giving it back when it
//! holds none.

use bytes::BytesMut;

use super::Connection;

/// The least room a read gets: large enough that a 16 KiB message arrives in
/// one read. A [`BufferPool`] hands out buffers with at least this much.
pub const READ_ROOM: usize = 32 << 10;
/// The most a read buffer keeps for a frame whose header has arrived while
/// the connection waits for the rest: larger frames grow the buffer as their
/// bytes come, so a header alone cannot make the connection hold much.
const MAX_PREALLOCATION: usize = 64 << 10;
/// Spare room kept in the read buffer while a frame is partly buffered.
const READ_RESERVE: usize = 16 << 10;

/// Where a connection borrows room to read into, and gives it back: a pool
/// of buffers shared by many connections (one per thread, say), so that a
/// connection waiting for its next message holds no read buffer at all.
///
/// Payloads of [`SHARE_MIN`](crate::frame::SHARE_MIN) bytes or more are
/// views of the buffer they were read into, so a buffer given back may still
/// be partly held; [`BytesMut::try_reclaim`] tells when its room is free.
pub trait BufferPool {
    /// An empty buffer with at least [`READ_ROOM`] bytes of room.
    fn take(&mut self) -> BytesMut;
    /// A buffer the connection no longer needs, empty.
    fn give(&mut self, buf: BytesMut);
}

/// A pool that keeps nothing: a new buffer for every read that needs one.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPool;

impl BufferPool for NoPool {
    fn take(&mut self) -> BytesMut {
        BytesMut::with_capacity(READ_ROOM)
    }

    fn give(&mut self, _buf: BytesMut) {}
}

impl Connection {
    /// The buffer to read the next bytes from the transport into, by
    /// appending to it; follow the read with
    /// [`read_done`](Self::read_done). With nothing partly received, it is
    /// the buffer the last read left, if it can be used again in place, or
    /// else one from `pool`; with part of a frame received, the buffer
    /// holding it, with room for more. Once no more input is wanted, a
    /// buffer whose bytes are dropped, for reading until the end of input.
    #[inline]
    pub fn read_buffer(&mut self, pool: &mut impl BufferPool) -> &mut BytesMut {
        let buf = &mut self.read_buf;
        if buf.is_empty() || self.input_done {
            buf.clear();
            if buf.capacity() == 0 || buf.capacity() < READ_ROOM && !buf.try_reclaim(READ_ROOM) {
                *buf = pool.take();
            }
        } else if buf.capacity() - buf.len() < READ_RESERVE / 2 {
            buf.reserve(READ_RESERVE);
        }
        buf
    }

    /// Tells the connection that a read into
    /// [`read_buffer`](Self::read_buffer) appended `read` bytes; 0 when the
    /// transport had none to give now (or ended: then call
    /// [`receive_eof`](Self::receive_eof) too).
    ///
    /// After a read of nothing, the connection holds what it needs and no
    /// more: an empty buffer goes back to `pool`, and the first bytes of a
    /// frame whose rest is awaited move out of a buffer much larger than the
    /// frame, which goes back to `pool` to serve other reads.
    #[inline]
    pub fn read_done(&mut self, read: usize, pool: &mut impl BufferPool) {
        if self.input_done {
            // Read only to see the end of the stream.
            self.read_buf.clear();
            pool.give(std::mem::take(&mut self.read_buf));
            return;
        }
        if read > 0 {
            self.timers.heard();
            return;
        }
        if self.read_buf.is_empty() {
            pool.give(std::mem::take(&mut self.read_buf));
            return;
        }
        let len = self.read_buf.len();
        let room = self
            .decoder
            .frame_len_hint(&self.read_buf)
            .unwrap_or(0)
            .clamp(len, MAX_PREALLOCATION.max(len));
        if self.read_buf.capacity() >= 2 * room.max(READ_RESERVE) {
            let mut fitted = BytesMut::with_capacity(room);
            fitted.extend_from_slice(&self.read_buf);
            let mut large = std::mem::replace(&mut self.read_buf, fitted);
            large.clear();
            pool.give(large);
        }
    }

    /// The bytes of read buffer the connection holds: 0 while it waits for
    /// a message with nothing of it received.
    pub fn read_buffer_capacity(&self) -> usize {
        self.read_buf.capacity()
    }
}
