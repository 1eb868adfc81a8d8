//! A plain TCP connection served by hyper whose WebSockets may write to the
//! socket themselves: [`TcpIo`] and its [`TcpHandle`].
//!
//! hyper hands over an upgraded connection as a boxed stream of its own, and
//! every write a WebSocket makes goes through it and through tokio's
//! readiness record before it reaches the socket: two more cache lines per
//! write, on a broadcast to thousands of connections two cache misses per
//! subscriber. A connection served as a [`TcpIo`] gives its requests a
//! [`TcpHandle`]; a WebSocket upgraded from one over HTTP/1.1 sends what
//! [`Sender::try_send_prepared`](crate::Sender::try_send_prepared) finds
//! nothing queued ahead of with one non-blocking `send(2)` on the socket. What
//! the socket does not take, and every other write, goes through hyper and
//! tokio as before, in order.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP connection for a hyper server to serve, in place of
/// `TokioIo::new(tcp)`, whose WebSockets write to the socket directly.
///
/// Put its [`handle`](Self::handle) in the extensions of each request the
/// connection carries, before [`upgrade`](crate::upgrade::upgrade) sees it:
///
/// ```no_run
/// use duplex::upgrade::TcpIo;
/// # async fn serve(tcp: tokio::net::TcpStream) {
/// let io = TcpIo::new(tcp);
/// let socket = io.handle();
/// let service = hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
///     request.extensions_mut().insert(socket.clone());
///     async move { Ok::<_, std::convert::Infallible>(http::Response::new(duplex::upgrade::Body::default())) }
/// });
/// let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
/// let _ = builder.serve_connection_with_upgrades(io, service).await;
/// # }
/// ```
///
/// Only for a connection without TLS: over TLS, the bytes on the socket must
/// be the encrypted ones, so serve `TokioIo::new(tls_stream)` and give no
/// handle. Over HTTP/2 the handle is ignored (a WebSocket is one stream of
/// the connection, written through hyper).
#[derive(Debug)]
pub struct TcpIo {
    io: TokioIo<SharedTcp>,
}

impl TcpIo {
    /// Serves `stream`.
    pub fn new(stream: TcpStream) -> Self {
        TcpIo {
            io: TokioIo::new(SharedTcp(Arc::new(stream))),
        }
    }

    /// The socket, for the extensions of the connection's requests.
    pub fn handle(&self) -> TcpHandle {
        TcpHandle {
            socket: self.io.inner().0.clone(),
        }
    }
}

/// The plain TCP socket an HTTP connection runs on, from [`TcpIo::handle`]: in
/// a request's extensions, it lets a WebSocket upgraded from the request over
/// HTTP/1.1 write to the socket directly.
#[derive(Clone, Debug)]
pub struct TcpHandle {
    socket: Arc<TcpStream>,
}

impl TcpHandle {
    /// What a WebSocket keeps to write to the socket.
    #[cfg(unix)]
    pub(crate) fn direct(&self) -> DirectSocket {
        use std::os::fd::AsRawFd;
        DirectSocket {
            fd: self.socket.as_raw_fd(),
            _socket: self.socket.clone(),
        }
    }
}

/// A socket a WebSocket writes its frames to with `send(2)`, bypassing the
/// stream it reads from; the descriptor is kept beside the connection's
/// state, so that a write reads nothing else.
#[cfg(unix)]
#[derive(Debug)]
pub(crate) struct DirectSocket {
    fd: std::os::fd::RawFd,
    /// Keeps the socket, and so `fd`, open.
    _socket: Arc<TcpStream>,
}

#[cfg(unix)]
impl DirectSocket {
    /// One non-blocking write of what the socket takes of `buf`;
    /// `WouldBlock` when it takes nothing now.
    pub(crate) fn send(&self, buf: &[u8]) -> io::Result<usize> {
        #[allow(unsafe_code)]
        // SAFETY: `fd` is the descriptor of the socket `_socket` holds open
        // for as long as `self` lives, and `buf` is valid for `buf.len()`
        // bytes to read.
        let sent = unsafe {
            libc::send(
                self.fd,
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        usize::try_from(sent).map_err(|_| io::Error::last_os_error())
    }
}

/// The stream hyper reads and writes, shared with the handles: tokio's
/// readiness methods take `&TcpStream`.
#[derive(Debug)]
struct SharedTcp(Arc<TcpStream>);

impl SharedTcp {
    /// Waits until the socket is writable and makes `write`, again while the
    /// socket turns out not to be.
    fn poll_write_with(
        &self,
        cx: &mut Context<'_>,
        write: impl Fn(&TcpStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match write(&self.0) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(result),
            }
        }
    }
}

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read_buf(buf) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(result.map(drop)),
            }
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, |stream| stream.try_write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, |stream| stream.try_write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&*self.0).shutdown(std::net::Shutdown::Write))
    }
}

impl hyper::rt::Read for TcpIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for TcpIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
