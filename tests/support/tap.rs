//! [`Tap`]: a stream wrapper that counts the bytes read and written and keeps
//! the first HTTP head each way, so that a test can tell how many bytes crossed
//! the wire (compressed or not) and what `Sec-WebSocket-Extensions` offer and
//! answer were really sent.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most bytes of each direction's first head that are kept.
const HEAD_MAX: usize = 16 << 10;

/// What a [`Tap`] saw; shared, so it can be read while the stream is in use
/// or after it was consumed.
#[derive(Debug, Default)]
pub struct TapCounts {
    read: AtomicU64,
    written: AtomicU64,
    read_head: Mutex<Vec<u8>>,
    written_head: Mutex<Vec<u8>>,
}

impl TapCounts {
    /// Bytes read from the stream so far.
    pub fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// Bytes written to the stream so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// The value of header `name` in the first HTTP head read (a client's view
    /// of the response, a server's view of the request); several values are
    /// joined with ", ".
    pub fn read_header(&self, name: &str) -> Option<String> {
        header_of(&self.read_head.lock().unwrap(), name)
    }

    /// The value of header `name` in the first HTTP head written (the request a
    /// client sent, the response a server sent).
    pub fn written_header(&self, name: &str) -> Option<String> {
        header_of(&self.written_head.lock().unwrap(), name)
    }
}

/// Keeps `data` while the head is incomplete.
fn capture(head: &Mutex<Vec<u8>>, data: &[u8]) {
    let mut head = head.lock().unwrap();
    if head.len() >= HEAD_MAX || head.windows(4).any(|w| w == b"\r\n\r\n") {
        return;
    }
    let take = (HEAD_MAX - head.len()).min(data.len());
    head.extend_from_slice(&data[..take]);
}

/// The value of header `name` (case-insensitive) in an HTTP head.
fn header_of(head: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(head);
    let end = text.find("\r\n\r\n")?;
    let values: Vec<&str> = text[..end]
        .split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// A stream that counts what goes through it; see [`TapCounts`].
#[derive(Debug)]
pub struct Tap<S> {
    inner: S,
    counts: Arc<TapCounts>,
}

impl<S> Tap<S> {
    /// Wraps `inner`, counting from zero.
    pub fn new(inner: S) -> Tap<S> {
        Tap {
            inner,
            counts: Arc::default(),
        }
    }

    /// The counts, shared with the stream.
    pub fn counts(&self) -> Arc<TapCounts> {
        self.counts.clone()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tap<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let new = &buf.filled()[before..];
        self.counts
            .read
            .fetch_add(new.len() as u64, Ordering::Relaxed);
        capture(&self.counts.read_head, new);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tap<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
        self.counts.written.fetch_add(n as u64, Ordering::Relaxed);
        capture(&self.counts.written_head, &buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, bufs))?;
        self.counts.written.fetch_add(n as u64, Ordering::Relaxed);
        let mut left = n;
        for buf in bufs {
            let take = left.min(buf.len());
            capture(&self.counts.written_head, &buf[..take]);
            left -= take;
            if left == 0 {
                break;
            }
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::header_of;

    #[test]
    fn headers_are_found_case_insensitively_and_joined() {
        let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
            sec-websocket-extensions: permessage-deflate; client_max_window_bits=10\r\n\
            Sec-WebSocket-Extensions: x-other\r\n\r\nframes";
        assert_eq!(
            header_of(head, "Sec-WebSocket-Extensions").as_deref(),
            Some("permessage-deflate; client_max_window_bits=10, x-other")
        );
        assert_eq!(header_of(head, "X-Missing"), None);
        assert_eq!(header_of(b"HTTP/1.1 101 Incomplete\r\nA: b\r\n", "A"), None);
    }
}
