//! `WebSocket<S>`: a duplex-proto connection driven over an async byte stream.

use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use duplex_proto::{
    CloseCode, CloseFrame, CloseInfo, Config, Connection, Fragment, Message, PreparedMessage,
    ReadyState, Role,
};
use futures_core::Stream;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep, sleep};

use crate::config::WebSocketConfig;
use crate::error::{Error, Result, Timeout};
use crate::spare;
use crate::split::{ReadHalf, WriteHalf, split};

/// The most a read buffer keeps for a frame whose header has arrived while
/// the connection waits for the rest: larger frames grow the buffer as their
/// bytes come, so a header alone cannot make the connection hold much.
const MAX_PREALLOCATION: usize = 64 << 10;
/// Spare room reserved in the read buffer while a frame is partly buffered.
const READ_RESERVE: usize = 16 << 10;
/// Slices handed to one vectored write.
const MAX_IO_SLICES: usize = 64;

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
        Ok(self.core.conn.send_prepared(prepared)?)
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
        self.core.conn.send_fragment(kind, payload, fin)?;
        poll_fn(|cx| self.core.poll_flush(cx)).await
    }

    /// Receives the next message; `None` once the connection is closed.
    ///
    /// A close frame from the peer arrives as `Message::Close` and is answered;
    /// the stream ends when the transport closes. A transport that ends without
    /// the closing handshake yields one `Err` first.
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
    /// on a server whose [`ServerBuilder::keep_request`](crate::ServerBuilder::keep_request)
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
    /// [`Accept::data`](crate::Accept::data): the user it authenticated, the
    /// room the path named.
    pub fn data<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.core.handshake.as_ref()?.data.get()
    }

    /// The permessage-deflate parameters agreed, if compression is on.
    #[cfg(feature = "deflate")]
    pub fn deflate(&self) -> Option<&duplex_proto::deflate::DeflateParams> {
        self.core.conn.deflate_params()
    }

    /// The close frame received from the peer: `None` if none yet, `Some(None)`
    /// if it carried no code.
    pub fn received_close(&self) -> Option<&Option<CloseFrame>> {
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

struct Keepalive {
    interval: std::time::Duration,
    timeout: std::time::Duration,
    timer: Pin<Box<Sleep>>,
    awaiting_pong: bool,
    /// Keepalive pings sent; the payload of the last one, which its pong echoes.
    sent: u64,
}

/// The driver: the protocol state machine, the stream, and the timers. Every
/// method makes as much progress as the stream allows without blocking.
pub(crate) struct Core<S> {
    io: S,
    pub(crate) conn: Connection,
    config: WebSocketConfig,
    protocol: Option<String>,
    handshake: Option<Box<Handshake>>,
    keepalive: Option<Keepalive>,
    close_timer: Option<Pin<Box<Sleep>>>,
    /// An error to report from the read side before the stream ends.
    pending_error: Option<Error>,
    /// The transport ended before the closing handshake and this was reported.
    reported_abnormal: bool,
    /// Bytes were written to the stream since it was last flushed.
    unflushed: bool,
}

impl<S> Core<S> {
    fn new(
        io: S,
        role: Role,
        read_buf: Bytes,
        protocol: Option<String>,
        config: WebSocketConfig,
    ) -> Self {
        let limits: Config = config.limits.clone();
        let mut conn = match role {
            Role::Server => Connection::server(limits),
            Role::Client => Connection::client(limits),
        };
        if !read_buf.is_empty() {
            conn.receive(&read_buf);
        }
        let keepalive = config.keepalive.map(|(interval, timeout)| Keepalive {
            interval,
            timeout,
            timer: Box::pin(sleep(interval)),
            awaiting_pong: false,
            sent: 0,
        });
        Core {
            io,
            conn,
            config,
            protocol,
            handshake: None,
            keepalive,
            close_timer: None,
            pending_error: None,
            reported_abnormal: false,
            unflushed: false,
        }
    }

    /// The bound on bytes queued for the socket.
    pub(crate) fn max_write_buffer(&self) -> usize {
        self.config.max_write_buffer
    }

    /// Starts the closing handshake unless it is under way.
    pub(crate) fn begin_close(&mut self, frame: Option<CloseFrame>) -> Result<()> {
        if self.conn.sent_close().is_some() || self.conn.ready_state() == ReadyState::Closed {
            return Ok(());
        }
        if let Some(frame) = &frame {
            frame.check_sendable()?;
        }
        self.conn.send(Message::Close(frame))?;
        Ok(())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Core<S> {
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message>>> {
        loop {
            if let Some(err) = self.pending_error.take() {
                return Poll::Ready(Some(Err(err)));
            }
            match self.conn.next_message() {
                Ok(Some(message)) => {
                    if message.is_control() {
                        // A pong or a close echo may be queued: send it now. Data
                        // the application queued waits for the next flush, so
                        // that a burst of replies leaves in one write.
                        self.flush_soon(cx);
                    }
                    if let (Message::Pong(payload), Some(ka)) = (&message, self.keepalive.as_mut())
                    {
                        ka.awaiting_pong = false;
                        let deadline = Instant::now() + ka.interval;
                        ka.timer.as_mut().reset(deadline);
                        if payload[..] == ka.sent.to_be_bytes() {
                            // The answer to our own keepalive ping: not news.
                            continue;
                        }
                    }
                    return Poll::Ready(Some(Ok(message)));
                }
                Err(err) => {
                    self.flush_soon(cx);
                    return Poll::Ready(Some(Err(err.into())));
                }
                Ok(None) => {}
            }
            if self.conn.ready_state() == ReadyState::Closed {
                return Poll::Ready(self.abnormal_end().map(Err));
            }

            // Write what is queued: our messages, pongs, the close frame. With
            // nothing written since the last flush there is nothing to flush,
            // and a flush could fail on a transport whose peer has stopped
            // reading after sending what is still to be read: an HTTP/2
            // stream (RFC 8441) that the server resets with NO_ERROR right
            // after its close frame.
            if (self.conn.has_output() || self.unflushed)
                && let Poll::Ready(Err(err)) = self.poll_write_out(cx)
            {
                self.abort();
                return Poll::Ready(Some(Err(err)));
            }
            if self.conn.should_close_transport() && !self.conn.has_output() {
                // Section 7.1.1: the server (or an endpoint failing the
                // connection) closes the transport. Errors here change nothing.
                let _ = ready!(Pin::new(&mut self.io).poll_shutdown(cx));
                self.conn.transport_closed();
                continue;
            }

            if self.close_timer.is_none() && self.conn.ready_state() == ReadyState::Closing {
                self.close_timer = Some(Box::pin(sleep(self.config.close_timeout)));
            }
            if let Some(timer) = self.close_timer.as_mut()
                && timer.as_mut().poll(cx).is_ready()
            {
                if !self.conn.is_close_handshake_done() {
                    self.pending_error = Some(Error::Timeout(Timeout::Close));
                }
                self.abort();
                continue;
            }
            if self.poll_keepalive(cx) {
                continue;
            }
            if self.conn.buffered_amount() >= self.config.max_write_buffer {
                // The peer does not read what we send, our own replies
                // included: read nothing more from it until the socket takes
                // some (the write above registered for that), so that it
                // cannot grow our buffer without bound, with a ping flood say.
                return Poll::Pending;
            }

            match self.poll_read_some(cx) {
                Poll::Ready(Ok(0)) => {
                    self.conn.receive_eof();
                    // The peer closed its side (section 7.1.1: the server
                    // closes first): close ours too, or the peer waits for our
                    // FIN for as long as this WebSocket is kept. Best effort,
                    // never waited for: a plain TCP shutdown is immediate, and
                    // a TLS close_notify the socket cannot take now is dropped
                    // with the stream. Errors change nothing.
                    let _ = Pin::new(&mut self.io).poll_shutdown(cx);
                }
                Poll::Ready(Ok(_)) => {
                    if let Some(ka) = self.keepalive.as_mut() {
                        // Any bytes from the peer show it is alive.
                        let wait = if ka.awaiting_pong {
                            ka.timeout
                        } else {
                            ka.interval
                        };
                        ka.timer.as_mut().reset(Instant::now() + wait);
                    }
                }
                Poll::Ready(Err(err)) => {
                    self.abort();
                    return Poll::Ready(Some(Err(err.into())));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Once, when the transport ended without the closing handshake: the error
    /// that says so.
    fn abnormal_end(&mut self) -> Option<Error> {
        if self.reported_abnormal
            || self.conn.received_close().is_some()
            || self.conn.failure().is_some()
        {
            return None;
        }
        self.reported_abnormal = true;
        Some(Error::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the connection closed without a close frame (1006)",
        )))
    }

    /// Handles the keepalive timer; true if it did something that calls for
    /// another turn of the loop.
    fn poll_keepalive(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(ka) = self.keepalive.as_mut() else {
            return false;
        };
        if ka.timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        if ka.awaiting_pong {
            // The peer is gone: say why (1011) if the socket takes it, and drop
            // the connection without waiting for a close handshake.
            self.keepalive = None;
            let reason = CloseFrame::new(CloseCode::INTERNAL_ERROR, "keepalive timeout");
            let _ = self.begin_close(Some(reason));
            let _ = self.poll_write_out(cx);
            self.pending_error = Some(Error::Timeout(Timeout::Keepalive));
            self.abort();
            return true;
        }
        if self.conn.ready_state() != ReadyState::Open {
            // Closing: the close timeout is in charge now.
            self.keepalive = None;
            return true;
        }
        ka.sent += 1;
        let payload = Bytes::copy_from_slice(&ka.sent.to_be_bytes());
        let _ = self.conn.send(Message::Ping(payload));
        ka.awaiting_pong = true;
        let deadline = Instant::now() + ka.timeout;
        ka.timer.as_mut().reset(deadline);
        self.flush_soon(cx);
        true
    }

    /// Gives up on the transport: closes it without further ado.
    fn abort(&mut self) {
        self.reported_abnormal = true;
        self.conn.transport_closed();
        self.close_timer = None;
        self.keepalive = None;
    }

    /// Writes queued output if the socket takes it now; an error is kept for the
    /// read side to report.
    fn flush_soon(&mut self, cx: &mut Context<'_>) {
        if (self.conn.has_output() || self.unflushed)
            && let Poll::Ready(Err(err)) = self.poll_write_out(cx)
        {
            self.abort();
            self.pending_error = Some(err);
        }
    }

    fn poll_read_some(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if !self.conn.wants_input() {
            // After the close frame, bytes are read only to see the end of the
            // stream, and dropped.
            let mut buf = spare::take();
            let read = tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut buf);
            buf.clear();
            spare::give(buf);
            return read;
        }
        let buf = self.conn.read_buffer();
        if buf.is_empty() {
            // Nothing partly received: read into the buffer the last read
            // left, if it can be reused in place, or else the thread's spare.
            // A connection that waits gives it back, and holds none.
            if buf.capacity() == 0
                || buf.capacity() < spare::READ_ROOM && !buf.try_reclaim(spare::READ_ROOM)
            {
                *buf = spare::take();
            }
            let read = tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, buf);
            if buf.is_empty() {
                spare::give(std::mem::take(buf));
            }
            return read;
        }
        if buf.capacity() - buf.len() < READ_RESERVE / 2 {
            buf.reserve(READ_RESERVE);
        }
        let read = tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, buf);
        if read.is_pending() {
            self.shrink_partial_frame();
        }
        read
    }

    /// Before waiting for the rest of a frame: moves its first bytes out of a
    /// buffer much larger than the frame, so that a connection waiting on a
    /// slow peer holds what the frame needs and no more, and the large buffer
    /// serves other reads.
    fn shrink_partial_frame(&mut self) {
        let mut buf = std::mem::take(self.conn.read_buffer());
        let room = self
            .conn
            .frame_len_hint(&buf)
            .unwrap_or(0)
            .clamp(buf.len(), MAX_PREALLOCATION.max(buf.len()));
        if buf.capacity() >= 2 * room.max(READ_RESERVE) {
            let mut fitted = BytesMut::with_capacity(room);
            fitted.extend_from_slice(&buf);
            buf.clear();
            spare::give(std::mem::replace(&mut buf, fitted));
        }
        *self.conn.read_buffer() = buf;
    }

    /// Writes everything queued, then flushes the stream.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        while self.conn.has_output() {
            ready!(self.poll_write_some(cx))?;
        }
        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        self.unflushed = false;
        Poll::Ready(Ok(()))
    }

    fn poll_write_some(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let chunk = self.conn.output_chunk();
        // Output in one piece (small frames share one buffer) is written as
        // it is; several pieces in one vectored write where the stream has it.
        let written = if chunk.len() == self.conn.buffered_amount() || !self.io.is_write_vectored()
        {
            ready!(Pin::new(&mut self.io).poll_write(cx, chunk))?
        } else {
            let mut slices = [IoSlice::new(&[]); MAX_IO_SLICES];
            let count = self.conn.output_slices(&mut slices);
            ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..count]))?
        };
        if written == 0 {
            return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()));
        }
        self.unflushed = true;
        self.conn.advance_output(written);
        Poll::Ready(Ok(()))
    }

    /// Sends a prepared message from any task, without waiting: written to
    /// the socket at once when nothing is queued ahead of it, as far as the
    /// socket takes it, and the rest queued. Whatever stays queued is written
    /// by the connection's own polling: a socket that takes nothing now is
    /// polled with `cx`, whose waker must wake the task that reads. A
    /// failure of the socket is kept for the reading side to report, and
    /// the connection is given up, as when the reading side writes.
    pub(crate) fn send_prepared_now(
        &mut self,
        prepared: &PreparedMessage,
        cx: &mut Context<'_>,
    ) -> Result<()> {
        if self.conn.ready_state() == ReadyState::Closed {
            return Err(Error::Closed);
        }
        let io = &mut self.io;
        let mut failed = None;
        let taken = self.conn.send_prepared_direct(prepared, |frame| {
            match Pin::new(&mut *io).poll_write(cx, frame) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(err)) => {
                    failed = Some(err);
                    0
                }
                Poll::Pending => 0,
            }
        })?;
        if let Some(err) = failed {
            self.abort();
            self.pending_error = Some(err.into());
            return Err(Error::Closed);
        }
        if taken > 0 {
            self.unflushed = true;
        }
        self.flush_soon(cx);
        Ok(())
    }

    pub(crate) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.conn.ready_state() == ReadyState::Closed {
            return Poll::Ready(Err(Error::Closed));
        }
        // Backpressure: past the bound, wait until the socket takes enough.
        while self.conn.buffered_amount() >= self.config.max_write_buffer {
            ready!(self.poll_write_some(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    pub(crate) fn start_send(&mut self, message: Message) -> Result<()> {
        if let Message::Close(frame) = message {
            if self.conn.sent_close().is_some() {
                return Err(Error::Closed);
            }
            return self.begin_close(frame);
        }
        Ok(self.conn.send(message)?)
    }

    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.conn.ready_state() == ReadyState::Closed && !self.conn.has_output() {
            return Poll::Ready(Ok(()));
        }
        self.poll_write_out(cx)
    }

    /// The sink's close: sends a normal close frame unless one was sent, and
    /// flushes. The rest of the closing handshake happens on the read side.
    pub(crate) fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.conn.ready_state() != ReadyState::Closed {
            self.begin_close(Some(CloseFrame::new(CloseCode::NORMAL, "")))?;
        }
        self.poll_flush(cx)
    }
}

#[cfg(test)]
mod tests {
    use duplex_proto::frame::{Frame, FrameHeader, OpCode};
    use tokio::io::{AsyncWriteExt, DuplexStream};

    use super::*;

    /// A server WebSocket over an in-memory pipe, and the client's end.
    fn server() -> (WebSocket<DuplexStream>, DuplexStream) {
        let (client, server) = tokio::io::duplex(256 << 10);
        let ws = WebSocket::from_raw_socket(server, Role::Server, WebSocketConfig::default());
        (ws, client)
    }

    fn masked(len: usize) -> Vec<u8> {
        let mut wire = BytesMut::new();
        Frame {
            header: FrameHeader {
                mask: Some([0x11, 0x22, 0x33, 0x44]),
                ..FrameHeader::new(OpCode::Binary, len as u64)
            },
            payload: Bytes::from(vec![0xa5; len]),
        }
        .encode(&mut wire);
        wire.to_vec()
    }

    /// Polls for a message once, with nothing to wake.
    fn poll_once(ws: &mut WebSocket<DuplexStream>) -> Poll<Option<Result<Message>>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        Pin::new(ws).poll_next(&mut cx)
    }

    fn read_capacity(ws: &mut WebSocket<DuplexStream>) -> usize {
        ws.core.conn.read_buffer().capacity()
    }

    #[tokio::test]
    async fn a_connection_waiting_for_its_next_message_holds_no_read_buffer() {
        let (mut ws, mut client) = server();
        for len in [0, 20, 1024, 16 << 10, 100 << 10] {
            client.write_all(&masked(len)).await.unwrap();
            let message = ws.recv().await.unwrap().unwrap();
            assert_eq!(message.as_data().len(), len);
            assert!(poll_once(&mut ws).is_pending());
            assert_eq!(read_capacity(&mut ws), 0, "after a message of {len} bytes");
        }
    }

    #[tokio::test]
    async fn a_connection_waiting_for_the_rest_of_a_short_frame_holds_only_that_frame() {
        let (mut ws, mut client) = server();
        let wire = masked(100);
        client.write_all(&wire[..50]).await.unwrap();
        assert!(poll_once(&mut ws).is_pending());
        let held = read_capacity(&mut ws);
        assert!(
            held < READ_RESERVE,
            "{held} bytes held for a 106-byte frame"
        );
        client.write_all(&wire[50..]).await.unwrap();
        let message = ws.recv().await.unwrap().unwrap();
        assert_eq!(message.as_data()[..], [0xa5; 100]);
    }

    #[tokio::test]
    async fn reads_reuse_one_buffer_once_the_payloads_read_into_it_are_dropped() {
        let (mut ws, mut client) = server();
        let mut addresses = Vec::new();
        for _ in 0..6 {
            client.write_all(&masked(16 << 10)).await.unwrap();
            let message = ws.recv().await.unwrap().unwrap();
            let payload = message.as_data();
            assert_eq!(payload[..], [0xa5; 16 << 10]);
            addresses.push(payload.as_ptr() as usize);
        }
        addresses.sort_unstable();
        addresses.dedup();
        // The payloads are views of the buffer they were read into, and the
        // buffer is used again from its start: a few places, not one per read.
        assert!(addresses.len() <= 2, "{addresses:x?}");
    }

    #[tokio::test]
    async fn a_payload_still_held_is_not_written_over_by_later_reads() {
        let (mut ws, mut client) = server();
        let mut held = Vec::new();
        for round in 0..8u8 {
            let mut wire = masked(16 << 10);
            // The payload is the same for every frame; make each one differ
            // in its first byte, after the 8-byte header.
            wire[8] ^= round;
            client.write_all(&wire).await.unwrap();
            held.push((round, ws.recv().await.unwrap().unwrap()));
        }
        for (round, message) in held {
            let payload = message.as_data();
            assert_eq!(payload[0], 0xa5 ^ round);
            assert!(payload[1..].iter().all(|&b| b == 0xa5));
        }
    }
}
