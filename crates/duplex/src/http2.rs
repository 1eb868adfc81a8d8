//! WebSockets over HTTP/2 (RFC 8441): many WebSockets as streams of one
//! connection, with the `h2` crate.
//!
//! An [`Http2Connection`] is one TCP connection (TLS with ALPN `h2` for
//! `wss://` URLs; HTTP/2 with prior knowledge, h2c, for `ws://`) whose frames
//! a spawned task reads and writes. Each
//! [`websocket`](Http2Connection::websocket) opens a stream with an extended
//! CONNECT (`:protocol: websocket`) and runs the WebSocket on it: the same
//! frames as over HTTP/1.1, masked as a client's must be (RFC 8441 section 5),
//! inside HTTP/2 DATA frames.
//!
//! [`ClientBuilder::http2`] does the same for one WebSocket and falls back
//! to HTTP/1.1 when the server does not offer WebSockets over HTTP/2.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use duplex_proto::rng::ThreadRngMask;
use h2::client::SendRequest;
use h2::{Ping, RecvStream, SendStream};
use http::{Response, Uri};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use crate::client::{ClientBuilder, Target, build_error};
use crate::error::{Error, Result, Timeout};
use crate::head::MAX_ERROR_BODY;
use crate::stream::{ClientStream, MaybeTlsStream};
use crate::websocket::WebSocket;

/// Each stream's receive window: how much the server may send on one
/// WebSocket before it has read any. Released as the WebSocket reads.
const STREAM_WINDOW: u32 = 256 << 10;

/// The connection's receive window, shared by its streams.
const CONNECTION_WINDOW: u32 = 4 << 20;

/// The most bytes one write hands to HTTP/2 at a time: writes wait for the
/// server's flow-control window instead of queueing without bound.
const MAX_WRITE: usize = 64 << 10;

/// One HTTP/2 connection to a server that takes WebSockets as streams (RFC
/// 8441), with a task of its own reading and writing its frames. Cheap to
/// clone: the clones share the connection, which closes when the last clone
/// and the last WebSocket on it are gone.
///
/// ```no_run
/// use duplex::{ClientBuilder, Http2Connection, Message};
/// use futures_util::StreamExt;
/// # async fn run() -> duplex::Result<()> {
/// let url = "wss://example.com/socket";
/// let connection = Http2Connection::connect(&ClientBuilder::new(url)).await?;
/// let mut sockets = Vec::new();
/// for _ in 0..10 {
///     // Ten WebSockets, one TCP connection.
///     sockets.push(connection.websocket(ClientBuilder::new(url)).await?);
/// }
/// for ws in &mut sockets {
///     assert!(ws.get_ref().is_http2());
///     ws.send(Message::text("hello")).await?;
///     println!("{:?}", ws.next().await);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Http2Connection {
    send: SendRequest<Bytes>,
    shared: Arc<Shared>,
}

/// What every clone and stream of a connection knows about it.
#[derive(Debug)]
struct Shared {
    target: Target,
    local_addr: SocketAddr,
    peer_addr: SocketAddr,
}

/// What trying HTTP/2 came to.
pub(crate) enum Attempt {
    /// The server takes WebSockets over HTTP/2.
    Http2(Http2Connection),
    /// The server chose HTTP/1.1 in ALPN: the stream is ready for an
    /// HTTP/1.1 handshake.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    Http1(MaybeTlsStream<TcpStream>),
    /// The connection cannot serve a WebSocket (why): a new one is needed
    /// for HTTP/1.1.
    Reconnect(String),
}

impl Http2Connection {
    /// Connects to the server of `builder`'s URL over HTTP/2, with its TLS
    /// settings and connect timeout: TLS with ALPN `h2` for `wss://`, h2c
    /// with prior knowledge for `ws://`. Returns once the server's first
    /// SETTINGS frame has come and announced `SETTINGS_ENABLE_CONNECT_PROTOCOL`
    /// (RFC 8441 section 3). Only the URL's scheme, host and port count here;
    /// each [`websocket`](Self::websocket) brings its own path and settings.
    ///
    /// # Errors
    ///
    /// As [`ClientBuilder::connect`] for the URL and the connection;
    /// [`Error::Http2`] if the server does not speak HTTP/2 or does not take
    /// WebSockets over it (chose `http/1.1` in ALPN, or no
    /// `SETTINGS_ENABLE_CONNECT_PROTOCOL`); [`Error::Timeout`] with
    /// [`Timeout::Handshake`] if its SETTINGS do not come within the connect
    /// timeout.
    pub async fn connect(builder: &ClientBuilder) -> Result<Http2Connection> {
        let uri = builder.uri()?;
        let target = ClientBuilder::target(&uri)?;
        match attempt(builder, &target, builder.connect_deadline()).await? {
            Attempt::Http2(connection) => Ok(connection),
            Attempt::Http1(_) => Err(Error::Http2(format!(
                "{}:{} chose HTTP/1.1 in the TLS handshake (ALPN)",
                target.host, target.port
            ))),
            Attempt::Reconnect(why) => Err(Error::Http2(why)),
        }
    }

    /// Opens a WebSocket on a new stream of this connection: an extended
    /// CONNECT with `builder`'s path and query, subprotocols, headers and
    /// compression offer, within its handshake timeout; 200 opens it. The
    /// builder's URL must name this connection's scheme, host and port; its
    /// connection settings (timeouts to connect, TLS) do not apply. When the
    /// server's limit of concurrent streams (`SETTINGS_MAX_CONCURRENT_STREAMS`)
    /// is reached, this waits for a stream to end, within the handshake
    /// timeout.
    ///
    /// # Errors
    ///
    /// [`Error::Url`] for a URL of another server; [`Error::Rejected`] if the
    /// server answers with a status other than 200 (with its headers and at
    /// most 64 KiB of its body); [`Error::Handshake`] for an answer that
    /// breaks the handshake (an unrequested subprotocol or extension);
    /// [`Error::Http2`] if the connection is gone or the stream was reset;
    /// [`Error::Timeout`].
    pub async fn websocket(&self, mut builder: ClientBuilder) -> Result<WebSocket<ClientStream>> {
        let uri = builder.uri()?;
        let target = ClientBuilder::target(&uri)?;
        let ours = &self.shared.target;
        let same_host = target.host.eq_ignore_ascii_case(&ours.host);
        if target.tls != ours.tls || target.port != ours.port || !same_host {
            return Err(Error::Url(format!(
                "{uri} is not on this HTTP/2 connection's server ({}://{}:{})",
                if ours.tls { "wss" } else { "ws" },
                ours.host,
                ours.port
            )));
        }
        let (mut request, expected) = builder
            .request(uri)
            .build_http2(&mut ThreadRngMask)
            .map_err(build_error)?;
        request
            .extensions_mut()
            .insert(h2::ext::Protocol::from_static("websocket"));
        let deadline = builder.handshake_deadline();
        let exchange = async {
            let mut send = self
                .send
                .clone()
                .ready()
                .await
                .map_err(|e| h2_error("opening a stream", e))?;
            let (response, stream) = send
                .send_request(request, false)
                .map_err(|e| h2_error("sending the extended CONNECT", e))?;
            let response = response
                .await
                .map_err(|e| h2_error("waiting for the response to the extended CONNECT", e))?;
            let (parts, recv) = response.into_parts();
            let head = Response::from_parts(parts, ());
            match expected.validate_http2(&head) {
                Ok(negotiated) => Ok((negotiated, stream, recv, head)),
                Err(duplex_proto::HandshakeError::Status(_)) => {
                    let body = read_error_body(recv).await;
                    let (parts, ()) = head.into_parts();
                    Err(Error::Rejected(Box::new(Response::from_parts(parts, body))))
                }
                Err(err) => Err(Error::Handshake(err)),
            }
        };
        let (negotiated, send, recv, response) = match timeout_at(deadline, exchange).await {
            Err(_) => return Err(Error::Timeout(Timeout::Handshake)),
            Ok(result) => result?,
        };
        let stream = H2Stream {
            send,
            recv,
            unread: Bytes::new(),
            ended: false,
            connection: self.clone(),
        };
        builder.open(
            ClientStream::http2(stream),
            Bytes::new(),
            negotiated,
            response,
        )
    }

    /// Whether the connection is encrypted (`wss://`).
    pub fn is_tls(&self) -> bool {
        self.shared.target.tls
    }

    /// The local address of the TCP connection.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The server's address of the TCP connection.
    pub fn peer_addr(&self) -> SocketAddr {
        self.shared.peer_addr
    }
}

impl std::fmt::Debug for Http2Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http2Connection")
            .field("host", &self.shared.target.host)
            .field("port", &self.shared.target.port)
            .field("tls", &self.shared.target.tls)
            .field("peer_addr", &self.shared.peer_addr)
            .finish_non_exhaustive()
    }
}

/// Connects with `builder`'s settings over HTTP/2 by `deadline`: what came
/// of it.
pub(crate) async fn attempt(
    builder: &ClientBuilder,
    target: &Target,
    deadline: Instant,
) -> Result<Attempt> {
    let stream = builder.transport(target, true, deadline).await?;
    let (local_addr, peer_addr) = (
        stream.get_ref().local_addr()?,
        stream.get_ref().peer_addr()?,
    );
    let shared = Arc::new(Shared {
        target: target.clone(),
        local_addr,
        peer_addr,
    });
    let server = format!("{}:{}", target.host, target.port);
    match stream {
        MaybeTlsStream::Plain(tcp) => {
            // h2c with prior knowledge: a server that does not speak HTTP/2
            // answers the preface with an HTTP/1.1 error or closes.
            match handshake(tcp, builder, shared, deadline).await? {
                Ok(connection) => Ok(Attempt::Http2(connection)),
                Err(NoWebSockets::NotHttp2(why) | NoWebSockets::NoSetting(why)) => {
                    Ok(Attempt::Reconnect(format!("{server}: {why}")))
                }
            }
        }
        #[cfg(feature = "tls")]
        MaybeTlsStream::Tls(tls) => {
            if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                return Ok(Attempt::Http1(MaybeTlsStream::Tls(tls)));
            }
            match handshake(tls, builder, shared, deadline).await? {
                Ok(connection) => Ok(Attempt::Http2(connection)),
                Err(NoWebSockets::NoSetting(why)) => {
                    Ok(Attempt::Reconnect(format!("{server}: {why}")))
                }
                Err(NoWebSockets::NotHttp2(why)) => Err(Error::Http2(format!(
                    "{server} chose HTTP/2 in the TLS handshake (ALPN), then: {why}"
                ))),
            }
        }
    }
}

/// [`ClientBuilder::connect`] with `http2` on: HTTP/2 if the server takes
/// WebSockets over it, else HTTP/1.1.
pub(crate) async fn connect(
    builder: ClientBuilder,
    uri: Uri,
    target: Target,
) -> Result<WebSocket<ClientStream>> {
    let deadline = builder.connect_deadline();
    let stream = match attempt(&builder, &target, deadline).await? {
        Attempt::Http2(connection) => return connection.websocket(builder).await,
        Attempt::Http1(stream) => stream,
        Attempt::Reconnect(why) => {
            tracing::debug!(%why, "no WebSocket over HTTP/2; connecting again for HTTP/1.1");
            builder.transport(&target, false, deadline).await?
        }
    };
    builder.handshake(uri, ClientStream::from(stream)).await
}

/// Why a connection cannot take WebSockets over HTTP/2.
enum NoWebSockets {
    /// The server does not speak HTTP/2 (or broke it).
    NotHttp2(String),
    /// It does, without `SETTINGS_ENABLE_CONNECT_PROTOCOL`.
    NoSetting(String),
}

/// The HTTP/2 handshake on `io`, and the server's first SETTINGS frame:
/// the connection, or (inner `Err`) why it cannot take WebSockets.
async fn handshake<T>(
    io: T,
    builder: &ClientBuilder,
    shared: Arc<Shared>,
    deadline: Instant,
) -> Result<std::result::Result<Http2Connection, NoWebSockets>>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = &builder.websocket_config().limits;
    let mut settings = h2::client::Builder::new();
    settings
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .enable_push(false);
    let (send, mut connection) = match timeout_at(deadline, settings.handshake(io)).await {
        Err(_) => return Err(Error::Timeout(Timeout::Handshake)),
        Ok(Err(err)) => {
            return Ok(Err(NoWebSockets::NotHttp2(format!(
                "the HTTP/2 handshake failed: {err}"
            ))));
        }
        Ok(Ok(pair)) => pair,
    };
    let Some(mut ping) = connection.ping_pong() else {
        return Err(Error::Http2(
            "the HTTP/2 connection has no PING handle".to_owned(),
        ));
    };
    let host = shared.target.host.clone();
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(%host, %err, "HTTP/2 connection ended with an error");
        }
    });
    // The server's SETTINGS frame is the first frame it sends (RFC 9113
    // section 3.4), and `h2` applies (and acknowledges) a SETTINGS frame
    // before it reads the next frame: once our PING's answer is in, the
    // server's settings are known.
    match timeout_at(deadline, ping.ping(Ping::opaque())).await {
        Err(_) => return Err(Error::Timeout(Timeout::Handshake)),
        Ok(Err(err)) => {
            return Ok(Err(NoWebSockets::NotHttp2(format!(
                "the server does not speak HTTP/2: {err}"
            ))));
        }
        Ok(Ok(_pong)) => {}
    }
    if !send.is_extended_connect_protocol_enabled() {
        return Ok(Err(NoWebSockets::NoSetting(
            "the server does not announce SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441)".to_owned(),
        )));
    }
    Ok(Ok(Http2Connection { send, shared }))
}

/// The body of a refused extended CONNECT, at most [`MAX_ERROR_BODY`] of it.
async fn read_error_body(mut recv: RecvStream) -> Bytes {
    let mut body = BytesMut::new();
    while body.len() < MAX_ERROR_BODY {
        match recv.data().await {
            Some(Ok(chunk)) => {
                let _ = recv.flow_control().release_capacity(chunk.len());
                let room = MAX_ERROR_BODY - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Some(Err(_)) | None => break,
        }
    }
    body.freeze()
}

/// An `h2` error, as [`Error::Http2`] naming the phase it happened in.
fn h2_error(phase: &str, err: h2::Error) -> Error {
    Error::Http2(format!("{phase}: {err}"))
}

/// An `h2` error on an open stream, as an I/O error.
fn stream_error(err: h2::Error) -> io::Error {
    let kind = if err.is_reset() || err.is_go_away() {
        io::ErrorKind::ConnectionReset
    } else if err.is_io() {
        err.get_io().map_or(io::ErrorKind::Other, io::Error::kind)
    } else {
        io::ErrorKind::Other
    };
    io::Error::new(kind, format!("HTTP/2 stream: {err}"))
}

/// A WebSocket's HTTP/2 stream as a byte stream.
///
/// Reading releases the flow-control window as bytes are taken, so the
/// server may send as much again; at most one DATA frame waits here beside
/// what `h2` holds within the window. Writing waits for window from the
/// server and hands `h2` at most that much (and at most [`MAX_WRITE`]) at a
/// time. Shutting down sends END_STREAM. A RST_STREAM or the connection's
/// loss is an error on both sides.
pub(crate) struct H2Stream {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// The rest of the last DATA frame read.
    unread: Bytes,
    /// END_STREAM sent.
    ended: bool,
    connection: Http2Connection,
}

impl std::fmt::Debug for H2Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Stream")
            .field("stream_id", &self.send.stream_id())
            .field("connection", &self.connection)
            .finish_non_exhaustive()
    }
}

impl H2Stream {
    pub(crate) fn connection(&self) -> &Http2Connection {
        &self.connection
    }
}

impl AsyncRead for H2Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.unread.is_empty() {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => this.unread = data,
                Some(Err(err)) => return Poll::Ready(Err(stream_error(err))),
                // END_STREAM: the server is done sending.
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = this.unread.len().min(buf.remaining());
        buf.put_slice(&this.unread[..n]);
        this.unread.advance(n);
        // The stream may be closing already; the window no longer matters then.
        let _ = this.recv.flow_control().release_capacity(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.ended {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "HTTP/2 stream: already ended (END_STREAM sent)",
            )));
        }
        while this.send.capacity() == 0 {
            this.send.reserve_capacity(buf.len().min(MAX_WRITE));
            match ready!(this.send.poll_capacity(cx)) {
                Some(Ok(_)) => {}
                Some(Err(err)) => return Poll::Ready(Err(stream_error(err))),
                None => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "HTTP/2 stream: closed by the server",
                    )));
                }
            }
        }
        let n = this.send.capacity().min(buf.len()).min(MAX_WRITE);
        match this
            .send
            .send_data(Bytes::copy_from_slice(&buf[..n]), false)
        {
            Ok(()) => Poll::Ready(Ok(n)),
            Err(err) => Poll::Ready(Err(stream_error(err))),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let buf = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &**b);
        self.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The connection's task writes what `h2` holds as soon as it can.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(Ok(()));
        }
        this.ended = true;
        match this.send.send_data(Bytes::new(), true) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(err) => Poll::Ready(Err(stream_error(err))),
        }
    }
}
