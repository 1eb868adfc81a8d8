//! `WebSocket<S>`: a duplex-proto connection driven over an async byte stream.

mod driver;

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use duplex_proto::{
    CloseCode, CloseFrame, CloseInfo, CloseStatus, Fragment, Message, PreparedMessage, ReadyState,
    Role,
};
use futures_core::Stream;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite};

pub(crate) use self::driver::Core;
use crate::config::WebSocketConfig;
use crate::error::{Error, Result};
use crate::split::{ReadHalf, WriteHalf, split};

/// A WebSocket connection over the byte stream `S` (a `TcpStream`, a TLS
/// stream, an upgraded HTTP connection, anything `AsyncRead + AsyncWrite`).
///
/// It is a [`Stream`] of received messages and a [`Sink`] of messages to send,
/// with `send`, `recv` and `close` helpers in the shape of the browser's API.
/// Pings are answered, close frames echoed, and keepalive and close timeouts
/// kept, as the connection is polled: keep reading (`recv`, or `next` from
/// `StreamExt`) for as long as the connection should live.
///
/// Writing is batched: [`feed`] queues without waiting for the socket, and
/// whatever is queued is written in one vectored write when the connection next
/// flushes, which reading does before it waits for input. [`send`](Self::send)
/// queues and flushes.
///
/// Reading needs no buffer of its own while the connection waits: bytes are
/// read into a buffer shared by the connections of a thread, which one keeps
/// only until what it read is decoded (or, for a frame that arrives in
/// pieces, until the frame is whole). A received payload of
/// [`SHARE_MIN`](duplex_proto::frame::SHARE_MIN) bytes (8 KiB) or more is a
/// view of that buffer, without a copy, and keeps the buffer (64 KiB, or the
/// size of the frame that grew it) alive while it is held: copy it
/// (`Bytes::copy_from_slice`) to keep it for long. Shorter payloads are
/// copied out and hold nothing else.
///
/// [`feed`]: futures_util::SinkExt::feed
pub struct WebSocket<S> {
    core: Core<S>,
}

impl<S> WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Wraps a stream on which the opening handshake is already done.
    ///
    /// `read_buf` holds bytes read past the handshake (frames that came in the
    /// same read); `protocol` is the subprotocol agreed. This is how HTTP
    /// server integrations hand over an upgraded connection.
    pub fn from_partially_read(
        io: S,
        role: Role,
        read_buf: Bytes,
        protocol: Option<String>,
        config: WebSocketConfig,
    ) -> Self {
        WebSocket {
            core: Core::new(io, role, read_buf, protocol, config),
        }
    }

    /// Turns on permessage-deflate with the parameters the opening handshake
    /// agreed. For HTTP server integrations and hand-made handshakes; `connect`
    /// and `accept` do it themselves. Call it before any message is exchanged.
    #[cfg(feature = "deflate")]
    pub fn with_deflate(mut self, params: duplex_proto::deflate::DeflateParams) -> Self {
        self.core.conn.set_deflate(params);
        self
    }

    /// Sends prepared messages with nothing queued ahead straight to
    /// `socket`, the plain TCP socket under this connection's stream (see
    /// [`TcpIo`](crate::upgrade::TcpIo)).
    #[cfg(feature = "hyper")]
    pub(crate) fn with_direct_socket(mut self, socket: &crate::upgrade::TcpHandle) -> Self {
        #[cfg(unix)]
        {
            self.core.direct = Some(socket.direct());
        }
        #[cfg(not(unix))]
        let _ = socket;
        self
    }

    /// Keeps what the opening handshake left: the request a server accepted or
    /// the response a client got, and the data a request check attached.
    pub(crate) fn with_handshake(mut self, handshake: Handshake) -> Self {
        let empty = handshake.request.is_none()
            && handshake.response.is_none()
            && handshake.data.is_empty();
        self.core.handshake = (!empty).then(|| Box::new(handshake));
        self
    }

    /// Wraps a stream on which the opening handshake is already done, with no
    /// bytes read past it.
    pub fn from_raw_socket(io: S, role: Role, config: WebSocketConfig) -> Self {
        Self::from_partially_read(io, role, Bytes::new(), None, config)
    }

    /// Sends a message: queues it and waits until the socket has taken
    /// everything queued.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] once a close frame was sent or the connection ended;
    /// [`Error::Send`] for a message the protocol does not allow (a control
    /// frame over 125 bytes, a close code that may not be sent); [`Error::Io`]
    /// if the socket fails.
    pub async fn send(&mut self, message: impl Into<Message>) -> Result<()> {
        let message = message.into();
        poll_fn(|cx| self.core.poll_ready(cx)).await?;
        self.core.start_send(message)?;
        poll_fn(|cx| self.core.poll_flush(cx)).await
    }

    /// Sends a message encoded once for many connections (a broadcast): queues
    /// the prepared frame by reference and waits until the socket has taken
    /// everything queued. See [`PreparedMessage`].
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub async fn send_prepared(&mut self, prepared: &PreparedMessage) -> Result<()> {
        self.feed_prepared(prepared).await?;
        poll_fn(|cx| self.core.poll_flush(cx)).await
    }

    /// Queues a prepared message without waiting for the socket (beyond the
    /// write buffer bound): many queued messages then leave in one write, at the
    /// next flush or when the connection next waits for input.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub async fn feed_prepared(&mut self, prepared: &PreparedMessage) -> Result<()> {
        poll_fn(|cx| self.core.poll_ready(cx)).await?;
        let core = &mut self.core;
        core.conn
            .send_prepared(prepared)
            .map_err(|err| core.send_error(err))
    }

    /// Sends one frame of a fragmented message and waits until the socket has
    /// taken everything queued: a [`Fragment::Text`] or [`Fragment::Binary`]
    /// first, then [`Fragment::Continuation`]s, the last with `fin` set (RFC
    /// 6455 section 5.4). For streaming a message whose size is not known in
    /// advance. Fragmented messages are sent uncompressed.
    ///
    /// # Errors
    ///
    /// [`Error::Send`] for a fragment out of sequence, or text that is not
    /// UTF-8 once the fragments so far are joined; [`Error::Closed`];
    /// [`Error::Io`].
    pub async fn send_fragment(
        &mut self,
        kind: Fragment,
        payload: impl Into<Bytes>,
        fin: bool,
    ) -> Result<()> {
        let payload = payload.into();
        poll_fn(|cx| self.core.poll_ready(cx)).await?;
        let core = &mut self.core;
        core.conn
            .send_fragment(kind, payload, fin)
            .map_err(|err| core.send_error(err))?;
        poll_fn(|cx| self.core.poll_flush(cx)).await
    }

    /// Receives the next message; `None` once the connection is closed.
    ///
    /// A close frame from the peer arrives as `Message::Close` and is answered;
    /// the stream ends when the transport closes. A transport that ends without
    /// the closing handshake yields one `Err` first:
    /// [`Error::Closed`] with `was_clean: false`.
    pub async fn recv(&mut self) -> Option<Result<Message>> {
        poll_fn(|cx| self.core.poll_next(cx)).await
    }

    /// Runs the closing handshake: sends a close frame with `code` and `reason`
    /// (unless one was sent), then reads, discarding messages, until the peer's
    /// close frame arrives and the transport is closed, or the close timeout
    /// passes.
    ///
    /// # Errors
    ///
    /// [`Error::Send`] for a code that may not be sent (1005, 1006, 1015,
    /// unassigned codes) or a reason over 123 bytes; [`Error::Timeout`] if the
    /// peer did not answer in time; a protocol or I/O error that ended the
    /// connection meanwhile.
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<()> {
        self.core.begin_close(Some(CloseFrame::new(code, reason)))?;
        let mut outcome = Ok(());
        while let Some(item) = self.recv().await {
            if let Err(err) = item {
                outcome = Err(err);
            }
        }
        outcome
    }

    /// Splits the connection into a reading half and a writing half, each usable
    /// from its own task.
    pub fn split(self) -> (ReadHalf<S>, WriteHalf<S>) {
        split(self.core)
    }
}

impl<S> WebSocket<S> {
    /// The connection's state: `Open`, `Closing` (a close frame sent or
    /// received), `Closed`.
    pub fn ready_state(&self) -> ReadyState {
        self.core.conn.ready_state()
    }

    /// Bytes queued and not yet taken by the socket (the browser's
    /// `bufferedAmount`, frame headers included).
    pub fn buffered_amount(&self) -> usize {
        self.core.conn.buffered_amount()
    }

    /// The subprotocol agreed in the opening handshake.
    pub fn protocol(&self) -> Option<&str> {
        self.core.protocol.as_deref()
    }

    /// The upgrade request this server accepted: method, path and query,
    /// headers (Origin, cookies, Authorization). `None` on the client side, and
    /// on a server whose [`Acceptor::keep_request`](crate::Acceptor::keep_request)
    /// is off.
    pub fn request(&self) -> Option<&http::Request<()>> {
        self.core.handshake.as_ref()?.request.as_ref()
    }

    /// The response that opened this client's connection: `101 Switching
    /// Protocols` with the server's headers (over HTTP/2, `200`). `None` on the
    /// server side.
    pub fn response(&self) -> Option<&http::Response<()>> {
        self.core.handshake.as_ref()?.response.as_ref()
    }

    /// The value of type `T` that the server's request check attached with
    /// [`Acceptance::data`](crate::Acceptance::data): the user it authenticated, the
    /// room the path named.
    pub fn data<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.core.handshake.as_ref()?.data.get()
    }

    /// The permessage-deflate parameters agreed, if compression is on.
    #[cfg(feature = "deflate")]
    pub fn deflate(&self) -> Option<&duplex_proto::deflate::DeflateParams> {
        self.core.conn.deflate_params()
    }

    /// The close frame received from the peer, if one was: its code and
    /// reason, or [`CloseStatus::Empty`] for a frame without a code.
    pub fn received_close(&self) -> Option<&CloseStatus> {
        self.core.conn.received_close()
    }

    /// How the connection ended (code, reason, whether it was clean), once it
    /// is closed; as the browser's `CloseEvent`.
    pub fn close_info(&self) -> Option<CloseInfo> {
        self.core.conn.close_info()
    }

    /// This end's role.
    pub fn role(&self) -> Role {
        self.core.conn.role()
    }

    /// The settings in force.
    pub fn config(&self) -> &WebSocketConfig {
        &self.core.config
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.core.io
    }

    /// The underlying stream, mutably. Reading or writing it directly corrupts
    /// the connection.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.core.io
    }

    /// Gives up the WebSocket and returns the stream, for a caller that speaks
    /// the protocol itself from here on (a load generator, a proxy). Bytes
    /// already read from the stream but not yet decoded, and bytes queued but not
    /// yet written, are dropped: call it right after the handshake, or after a
    /// flush with nothing left to read.
    pub fn into_inner(self) -> S {
        self.core.io
    }
}

impl<S> std::fmt::Debug for WebSocket<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket")
            .field("connection", &self.core.conn)
            .field("protocol", &self.core.protocol)
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WebSocket<S> {
    type Item = Result<Message>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().core.poll_next(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WebSocket<S> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().core.poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<()> {
        self.get_mut().core.start_send(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().core.poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().core.poll_close(cx)
    }
}

/// What the opening handshake leaves for the connection's user, kept out of
/// line: most connections hold none of it.
#[derive(Debug, Default)]
pub(crate) struct Handshake {
    /// The request a server accepted.
    pub(crate) request: Option<http::Request<()>>,
    /// The response a client was opened with.
    pub(crate) response: Option<http::Response<()>>,
    /// What a server's request check attached.
    pub(crate) data: http::Extensions,
}

#[cfg(test)]
mod tests;
