//! The stream a client connects over: plain TCP, TLS over TCP, or a stream of
//! an HTTP/2 connection.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP stream, with TLS for `wss://` URLs.
#[derive(Debug)]
#[non_exhaustive]
pub enum MaybeTlsStream<S = TcpStream> {
    /// `ws://`: the stream as it is.
    Plain(S),
    /// `wss://`: TLS (rustls) over the stream.
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::client::TlsStream<S>>),
}

impl<S> MaybeTlsStream<S> {
    /// The stream under any TLS layer.
    pub fn get_ref(&self) -> &S {
        match self {
            MaybeTlsStream::Plain(s) => s,
            #[cfg(feature = "tls")]
            MaybeTlsStream::Tls(s) => s.get_ref().0,
        }
    }

    /// Whether the stream is encrypted.
    pub fn is_tls(&self) -> bool {
        !matches!(self, MaybeTlsStream::Plain(_))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for MaybeTlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(feature = "tls")]
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MaybeTlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(feature = "tls")]
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            #[cfg(feature = "tls")]
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTlsStream::Plain(s) => s.is_write_vectored(),
            #[cfg(feature = "tls")]
            MaybeTlsStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_flush(cx),
            #[cfg(feature = "tls")]
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(feature = "tls")]
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The stream a client's WebSocket runs over, whichever way it connected:
/// its own TCP connection (with TLS for `wss://`), or a stream of an HTTP/2
/// connection it shares with other WebSockets (RFC 8441; feature `http2`,
/// with [`ClientBuilder::http2`](crate::ClientBuilder::http2) or
/// [`Http2Connection`](crate::Http2Connection)).
#[derive(Debug)]
pub struct ClientStream(Transport);

#[derive(Debug)]
enum Transport {
    Tcp(MaybeTlsStream<TcpStream>),
    #[cfg(feature = "http2")]
    Http2(Box<crate::http2::H2Stream>),
}

impl ClientStream {
    /// Whether the bytes are encrypted (`wss://`, over HTTP/1.1 or HTTP/2).
    pub fn is_tls(&self) -> bool {
        match &self.0 {
            Transport::Tcp(s) => s.is_tls(),
            #[cfg(feature = "http2")]
            Transport::Http2(s) => s.connection().is_tls(),
        }
    }

    /// Whether the WebSocket runs on a stream of an HTTP/2 connection (RFC
    /// 8441) rather than on a TCP connection of its own.
    pub fn is_http2(&self) -> bool {
        match &self.0 {
            Transport::Tcp(_) => false,
            #[cfg(feature = "http2")]
            Transport::Http2(_) => true,
        }
    }

    /// The TCP stream, when the WebSocket has one of its own; `None` over
    /// HTTP/2, where the connection's task owns the shared TCP stream.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match &self.0 {
            Transport::Tcp(s) => Some(s.get_ref()),
            #[cfg(feature = "http2")]
            Transport::Http2(_) => None,
        }
    }

    /// The HTTP/2 connection the WebSocket runs on, to open more WebSockets
    /// on it; `None` over HTTP/1.1.
    #[cfg(feature = "http2")]
    pub fn http2_connection(&self) -> Option<&crate::Http2Connection> {
        match &self.0 {
            Transport::Tcp(_) => None,
            Transport::Http2(s) => Some(s.connection()),
        }
    }

    /// The local address of the TCP connection (shared, over HTTP/2).
    ///
    /// # Errors
    ///
    /// As [`TcpStream::local_addr`].
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.0 {
            Transport::Tcp(s) => s.get_ref().local_addr(),
            #[cfg(feature = "http2")]
            Transport::Http2(s) => Ok(s.connection().local_addr()),
        }
    }

    /// The server's address of the TCP connection (shared, over HTTP/2).
    ///
    /// # Errors
    ///
    /// As [`TcpStream::peer_addr`].
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        match &self.0 {
            Transport::Tcp(s) => s.get_ref().peer_addr(),
            #[cfg(feature = "http2")]
            Transport::Http2(s) => Ok(s.connection().peer_addr()),
        }
    }

    /// The TCP (or TLS) stream itself, for a caller that speaks the protocol
    /// itself from here on; gives the stream back over HTTP/2, where there is
    /// no stream of its own to take.
    ///
    /// # Errors
    ///
    /// `self`, unchanged, over HTTP/2.
    pub fn into_tcp(self) -> Result<MaybeTlsStream<TcpStream>, Self> {
        match self.0 {
            Transport::Tcp(s) => Ok(s),
            #[cfg(feature = "http2")]
            other @ Transport::Http2(_) => Err(ClientStream(other)),
        }
    }

    #[cfg(feature = "http2")]
    pub(crate) fn http2(stream: crate::http2::H2Stream) -> Self {
        ClientStream(Transport::Http2(Box::new(stream)))
    }
}

impl From<MaybeTlsStream<TcpStream>> for ClientStream {
    fn from(stream: MaybeTlsStream<TcpStream>) -> Self {
        ClientStream(Transport::Tcp(stream))
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Transport::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(feature = "http2")]
            Transport::Http2(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            Transport::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(feature = "http2")]
            Transport::Http2(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            Transport::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            #[cfg(feature = "http2")]
            Transport::Http2(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.0 {
            Transport::Tcp(s) => s.is_write_vectored(),
            #[cfg(feature = "http2")]
            Transport::Http2(_) => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Transport::Tcp(s) => Pin::new(s).poll_flush(cx),
            #[cfg(feature = "http2")]
            Transport::Http2(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Transport::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(feature = "http2")]
            Transport::Http2(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
