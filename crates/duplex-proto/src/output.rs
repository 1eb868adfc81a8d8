//! The bytes a connection has produced and not yet handed to the transport.
//!
//! Small frames are copied into one growing buffer, so a burst of small messages
//! leaves as one write. A large payload that needs no masking is queued as its own
//! chunk without a copy, and the chunks go out together in a vectored write.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

/// Payloads up to this size are copied next to their header; larger ones are
/// queued by reference.
const COPY_THRESHOLD: usize = 4096;

/// The most buffer capacity kept once everything is written.
const MAX_IDLE_CAPACITY: usize = 64 << 10;

/// Output waiting for the transport: a queue of chunks, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Output {
    /// Chunks that are complete, oldest first; all older than `tail`.
    chunks: VecDeque<Bytes>,
    /// The newest bytes, still growing.
    tail: BytesMut,
    len: usize,
    /// Bytes handed to the transport so far, over the connection's life.
    written: u64,
    /// Where each waiting frame ends, counted as `written` counts, oldest
    /// first: how many frames still wait.
    ends: VecDeque<u64>,
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
        self.ends.len()
    }

    /// Marks the end of a frame: everything appended so far.
    pub(crate) fn end_frame(&mut self) {
        self.ends.push_back(self.written + self.len as u64);
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
            self.ends.clear();
            self.written += n as u64;
            self.len = 0;
            self.release_or_clear_tail();
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
            self.release_or_clear_tail();
        }
    }

    /// Empties the tail once nothing waits.
    fn release_or_clear_tail(&mut self) {
        if self.tail.capacity() > MAX_IDLE_CAPACITY {
            // A burst is over: do not hold its buffer while idle.
            self.tail = BytesMut::new();
        } else {
            // Reuse the allocation from the start rather than growing it.
            self.tail.clear();
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
        Some(chunk)
    }

    /// Counts `n` bytes as taken by the transport, and the frames they end.
    fn taken(&mut self, n: usize) {
        self.len -= n;
        self.written += n as u64;
        while self.ends.front().is_some_and(|&end| end <= self.written) {
            self.ends.pop_front();
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
}
