//! The bytes a connection has produced and not yet handed to the transport.
//!
//! Small frames are copied into one growing buffer, so a burst of small messages
//! leaves as one write. A large payload that needs no masking is queued as its own
//! chunk without a copy, and the chunks go out together in a vectored write.
//! A frame shared with other connections (a prepared message) is always
//! queued by reference, however small.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

/// Payloads up to this size are copied next to their header; larger ones are
/// queued by reference.
const COPY_THRESHOLD: usize = 4096;

/// The most buffer capacity kept once everything is written.
const MAX_IDLE_CAPACITY: usize = 64 << 10;

/// The most entries the queues of chunks and frame ends keep once everything
/// is written.
const MAX_IDLE_QUEUE: usize = 4;

/// Output waiting for the transport: a queue of chunks, oldest first.
///
/// In declared order (`repr(C)`): `len`, which every send reads, comes last,
/// next to the fields of [`Connection`](crate::Connection) a send reads.
#[derive(Debug, Default)]
#[repr(C)]
pub(crate) struct Output {
    /// Chunks that are complete, oldest first; all older than `tail`.
    chunks: VecDeque<Bytes>,
    /// The newest bytes, still growing.
    tail: BytesMut,
    /// Where the waiting frames end; boxed, and made by the first frame, so
    /// that a connection that never sends holds one pointer for it.
    ends: Option<Box<FrameEnds>>,
    len: usize,
}

/// The ends of the frames waiting, to count them.
#[derive(Debug, Default)]
struct FrameEnds {
    /// Bytes handed to the transport since this was made.
    taken: u64,
    /// Where each waiting frame ends, counted as `taken` counts, oldest
    /// first.
    queue: VecDeque<u64>,
}

impl Output {
    /// The number of bytes waiting.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of frames not yet wholly taken by the transport.
    pub(crate) fn frames(&self) -> usize {
        // Nothing waits, the usual case: the ends are not looked at (they
        // lie in an allocation of their own, one more cache line to fetch).
        if self.len == 0 {
            debug_assert!(self.ends.as_ref().is_none_or(|ends| ends.queue.is_empty()));
            return 0;
        }
        self.ends.as_ref().map_or(0, |ends| ends.queue.len())
    }

    /// Marks the end of a frame: everything appended so far.
    pub(crate) fn end_frame(&mut self) {
        let ends = self.ends.get_or_insert_with(Box::default);
        ends.queue.push_back(ends.taken + self.len as u64);
    }

    /// Appends bytes written by `write` into the tail buffer.
    pub(crate) fn write(&mut self, write: impl FnOnce(&mut BytesMut)) {
        let before = self.tail.len();
        write(&mut self.tail);
        self.len += self.tail.len() - before;
    }

    /// Appends a frame: its encoded header, then its payload, copied next to
    /// the header if it is small and queued as it is if not.
    pub(crate) fn push_frame(&mut self, header: &[u8], payload: Bytes) {
        if payload.len() <= COPY_THRESHOLD {
            self.tail.reserve(header.len() + payload.len());
            self.tail.extend_from_slice(header);
            self.tail.extend_from_slice(&payload);
            self.len += header.len() + payload.len();
        } else {
            self.write(|tail| tail.extend_from_slice(header));
            self.push(payload);
        }
    }

    /// Appends a payload, copying it if it is small and queuing it as is if not.
    pub(crate) fn push(&mut self, payload: Bytes) {
        if payload.len() <= COPY_THRESHOLD {
            self.write(|tail| tail.extend_from_slice(&payload));
        } else {
            self.seal_tail();
            self.len += payload.len();
            self.chunks.push_back(payload);
        }
    }

    /// Appends a frame shared with other connections (a prepared message's
    /// bytes), always by reference, whatever its size: copying it into this
    /// connection's tail would give every subscriber of a broadcast that
    /// waits a private copy, and leave each with the tail's capacity after.
    pub(crate) fn push_shared(&mut self, frame: Bytes) {
        if frame.is_empty() {
            return;
        }
        self.seal_tail();
        self.len += frame.len();
        self.chunks.push_back(frame);
    }

    fn seal_tail(&mut self) {
        if !self.tail.is_empty() {
            self.chunks.push_back(self.tail.split().freeze());
        }
    }

    /// Fills `dst` with slices of the waiting bytes, in order; returns how many.
    pub(crate) fn io_slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        let tail = (!self.tail.is_empty()).then_some(&self.tail[..]);
        for chunk in self.chunks.iter().map(|c| &c[..]).chain(tail) {
            if n == dst.len() {
                break;
            }
            dst[n] = IoSlice::new(chunk);
            n += 1;
        }
        n
    }

    /// The oldest waiting bytes, as one contiguous slice (empty if none).
    pub(crate) fn first_chunk(&self) -> &[u8] {
        match self.chunks.front() {
            Some(chunk) => chunk,
            None => &self.tail,
        }
    }

    /// Drops the first `n` waiting bytes, which the transport has taken.
    ///
    /// # Panics
    ///
    /// If `n` is more than [`len`](Self::len): the caller claims to have written
    /// bytes it never had.
    pub(crate) fn advance(&mut self, mut n: usize) {
        assert!(
            n <= self.len,
            "advanced {n} bytes past {} waiting",
            self.len
        );
        if n == self.len {
            // Everything is written, the usual case: no chunk to step through
            // (and usually none to drop: small frames share the tail).
            if !self.chunks.is_empty() {
                self.chunks.clear();
            }
            if let Some(ends) = &mut self.ends {
                ends.queue.clear();
                ends.taken += n as u64;
            }
            self.len = 0;
            self.release_idle();
            return;
        }
        self.taken(n);
        while n > 0 {
            match self.chunks.front_mut() {
                Some(chunk) if chunk.len() <= n => {
                    n -= chunk.len();
                    self.chunks.pop_front();
                }
                Some(chunk) => {
                    chunk.advance(n);
                    n = 0;
                }
                None => {
                    self.tail.advance(n);
                    n = 0;
                }
            }
        }
        if self.len == 0 {
            self.release_idle();
        }
    }

    /// Once nothing waits: empties the tail, and gives back what a burst
    /// grew (the tail past [`MAX_IDLE_CAPACITY`], the queues of chunks and
    /// frame ends past [`MAX_IDLE_QUEUE`]), so an idle connection holds no
    /// more than it did before the burst.
    fn release_idle(&mut self) {
        if self.tail.capacity() > MAX_IDLE_CAPACITY {
            self.tail = BytesMut::new();
        } else {
            // Reuse the allocation from the start rather than growing it.
            self.tail.clear();
        }
        if self.chunks.capacity() > MAX_IDLE_QUEUE {
            self.chunks = VecDeque::new();
        }
        if let Some(ends) = &mut self.ends
            && ends.queue.capacity() > MAX_IDLE_QUEUE
        {
            ends.queue = VecDeque::new();
        }
    }

    /// Takes all waiting bytes as one chunk at a time, oldest first.
    pub(crate) fn take_chunk(&mut self) -> Option<Bytes> {
        let chunk = match self.chunks.pop_front() {
            Some(chunk) => chunk,
            None if !self.tail.is_empty() => self.tail.split().freeze(),
            None => return None,
        };
        self.taken(chunk.len());
        if self.len == 0 {
            self.release_idle();
        }
        Some(chunk)
    }

    /// Counts `n` bytes as taken by the transport, and the frames they end.
    fn taken(&mut self, n: usize) {
        self.len -= n;
        if let Some(ends) = &mut self.ends {
            ends.taken += n as u64;
            while ends.queue.front().is_some_and(|&end| end <= ends.taken) {
                ends.queue.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(out: &mut Output) -> Vec<u8> {
        let mut all = Vec::new();
        while let Some(chunk) = out.take_chunk() {
            all.extend_from_slice(&chunk);
        }
        all
    }

    #[test]
    fn keeps_order_across_copied_and_referenced_payloads() {
        let mut out = Output::default();
        let big = Bytes::from(vec![b'B'; COPY_THRESHOLD + 1]);
        out.write(|t| t.extend_from_slice(b"h1"));
        out.push(Bytes::from_static(b"small"));
        out.write(|t| t.extend_from_slice(b"h2"));
        out.push(big.clone());
        out.write(|t| t.extend_from_slice(b"h3"));
        assert_eq!(out.len(), 2 + 5 + 2 + big.len() + 2);

        let mut slices = [IoSlice::new(&[]); 8];
        let n = out.io_slices(&mut slices);
        assert_eq!(n, 3);
        let joined: Vec<u8> = slices[..n].iter().flat_map(|s| s.to_vec()).collect();

        let mut expected = b"h1smallh2".to_vec();
        expected.extend_from_slice(&big);
        expected.extend_from_slice(b"h3");
        assert_eq!(joined, expected);
        assert_eq!(drain(&mut out), expected);
        assert!(out.is_empty());
    }

    #[test]
    fn advance_by_everything_empties_the_queue() {
        let mut out = Output::default();
        out.write(|t| t.extend_from_slice(b"abc"));
        out.push(Bytes::from(vec![b'x'; COPY_THRESHOLD + 10]));
        out.write(|t| t.extend_from_slice(b"def"));
        out.advance(out.len());
        assert!(out.is_empty());
        assert_eq!(out.first_chunk(), b"");
        let mut slices = [IoSlice::new(&[]); 4];
        assert_eq!(out.io_slices(&mut slices), 0);
        out.write(|t| t.extend_from_slice(b"next"));
        assert_eq!(out.first_chunk(), b"next");
        assert_eq!(drain(&mut out), b"next");
    }

    #[test]
    fn advance_across_chunks() {
        let mut out = Output::default();
        out.write(|t| t.extend_from_slice(b"abc"));
        out.push(Bytes::from(vec![b'x'; COPY_THRESHOLD + 10]));
        out.write(|t| t.extend_from_slice(b"def"));
        out.advance(2);
        assert_eq!(out.first_chunk(), b"c");
        out.advance(1 + COPY_THRESHOLD + 10 + 1);
        assert_eq!(out.first_chunk(), b"ef");
        out.advance(2);
        assert!(out.is_empty());
    }

    #[test]
    fn a_shared_frame_is_queued_by_reference_and_the_queues_shrink_after() {
        let frame = Bytes::from(vec![7u8; 100]);
        let mut out = Output::default();
        for _ in 0..64 {
            out.push_shared(frame.clone());
            out.end_frame();
        }
        assert_eq!(out.frames(), 64);
        assert_eq!(out.len(), 6400);
        assert_eq!(out.tail.capacity(), 0, "nothing copied");
        assert!(std::ptr::eq(out.first_chunk().as_ptr(), frame.as_ptr()));
        out.advance(out.len());
        assert!(out.is_empty());
        assert_eq!(out.frames(), 0);
        assert!(out.chunks.capacity() <= MAX_IDLE_QUEUE);
        assert!(out.ends.unwrap().queue.capacity() <= MAX_IDLE_QUEUE);
    }
}
