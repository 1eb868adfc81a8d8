//! The driver of a `WebSocket`: the protocol state machine over the stream,
//! reading, writing, and one sleep until the connection's next deadline.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use duplex_proto::{
    CloseCode, CloseFrame, Connection, Expired, Limits, Message, PreparedMessage, ReadyState, Role,
    SendError,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep, sleep_until};

use super::Handshake;
use crate::config::WebSocketConfig;
use crate::error::{Error, Result, Timeout};
use crate::spare::ThreadSpare;

/// Stands in for the direct socket where there is none to have.
#[cfg(not(all(unix, feature = "hyper")))]
enum Never {}

#[cfg(not(all(unix, feature = "hyper")))]
impl Never {
    fn send(&self, _: &[u8]) -> io::Result<usize> {
        match *self {}
    }
}

/// Slices handed to one vectored write.
const MAX_IO_SLICES: usize = 64;

/// The driver: the protocol state machine, the stream, and the timers. Every
/// method makes as much progress as the stream allows without blocking.
// In declared order (`repr(C)`), with what a send from a `Sender` reads
// last: the end of `conn` (see `duplex_proto::Connection`), the stream, the
// direct socket and `unflushed`; std lays out a `Mutex` with its lock after
// the value today, so the lock comes next. A broadcast does this on every
// subscriber: a few adjacent cache lines each, not one at each end of the
// connection's state.
#[repr(C)]
pub(crate) struct Core<S> {
    pub(super) config: WebSocketConfig,
    pub(super) protocol: Option<String>,
    pub(super) handshake: Option<Box<Handshake>>,
    /// The sleep until the connection's next deadline, while it has one.
    timer: Option<Pin<Box<Sleep>>>,
    /// An error to report from the read side before the stream ends; boxed,
    /// since few connections ever have one (an `Error` is 64 bytes).
    pending_error: Option<Box<Error>>,
    pub(crate) conn: Connection,
    pub(super) io: S,
    /// The socket under `io`, when a send may write to it directly: an
    /// HTTP/1.1 upgrade of a plain TCP connection served as a
    /// [`TcpIo`](crate::upgrade::TcpIo).
    #[cfg(all(unix, feature = "hyper"))]
    pub(super) direct: Option<crate::direct::DirectSocket>,
    /// Bytes were written to the stream since it was last flushed.
    unflushed: bool,
    /// The transport ended before the closing handshake and this was reported.
    reported_abnormal: bool,
}

impl<S> Core<S> {
    pub(super) fn new(
        io: S,
        role: Role,
        read_buf: Bytes,
        protocol: Option<String>,
        config: WebSocketConfig,
    ) -> Self {
        let limits: Limits = config.limits.clone();
        let mut conn = match role {
            Role::Server => Connection::server(limits),
            Role::Client => Connection::client(limits),
        };
        if !read_buf.is_empty() {
            conn.receive(&read_buf);
        }
        conn.set_keepalive(config.keepalive);
        conn.set_close_timeout(Some(config.close_timeout));
        Core {
            io,
            conn,
            config,
            protocol,
            handshake: None,
            timer: None,
            pending_error: None,
            #[cfg(all(unix, feature = "hyper"))]
            direct: None,
            reported_abnormal: false,
            unflushed: false,
        }
    }

    /// Whether prepared sends may go to the socket directly.
    pub(crate) fn writes_directly(&self) -> bool {
        #[cfg(all(unix, feature = "hyper"))]
        return self.direct.is_some();
        #[cfg(not(all(unix, feature = "hyper")))]
        false
    }

    /// The bound on bytes queued for the socket.
    pub(crate) fn max_write_buffer(&self) -> usize {
        self.config.max_write_buffer
    }

    /// The error for a send once the connection is closing or closed: clean
    /// unless it failed or the transport ended without the closing handshake.
    fn closed(&self) -> Error {
        let was_clean = self.conn.failure().is_none()
            && self.conn.close_info().is_none_or(|info| info.was_clean);
        Error::Closed { was_clean }
    }

    /// A send the core refused, as the error to report.
    pub(crate) fn send_error(&self, err: SendError) -> Error {
        match err {
            SendError::Closed => self.closed(),
            other => Error::Send(other),
        }
    }

    /// Starts the closing handshake unless it is under way.
    pub(crate) fn begin_close(&mut self, frame: Option<CloseFrame>) -> Result<()> {
        if self.conn.sent_close().is_some() || self.conn.ready_state() == ReadyState::Closed {
            return Ok(());
        }
        if let Some(frame) = &frame {
            frame.check_sendable()?;
        }
        self.conn
            .send(Message::Close(frame))
            .map_err(|err| self.send_error(err))?;
        Ok(())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Core<S> {
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message>>> {
        loop {
            if let Some(err) = self.pending_error.take().map(|err| *err) {
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

            if self.conn.buffered_amount() >= self.config.max_write_buffer {
                // The peer does not read what we send, our own replies
                // included: read nothing more from it until the socket takes
                // some (the write above registered for that), so that it
                // cannot grow our buffer without bound, with a ping flood say.
                if self.poll_timers(cx) {
                    continue;
                }
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
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(err)) => {
                    self.abort();
                    return Poll::Ready(Some(Err(err.into())));
                }
                Poll::Pending => {
                    if self.poll_timers(cx) {
                        continue;
                    }
                    return Poll::Pending;
                }
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
        Some(Error::Closed { was_clean: false })
    }

    /// Before waiting: tells the connection the time, acts on what it did
    /// with it, and sleeps until its next deadline. True if something was
    /// done that calls for another turn of the loop (a keepalive ping to
    /// write, the connection given up, the deadline already passed).
    #[inline]
    fn poll_timers(&mut self, cx: &mut Context<'_>) -> bool {
        if self.conn.wants_timeout() {
            return self.run_timers(cx);
        }
        // No timer runs: the clock is not read (the common case of a
        // connection without keepalive, between its messages).
        if self.timer.is_some() {
            self.timer = None;
        }
        false
    }

    /// [`poll_timers`](Self::poll_timers) once a timer may run.
    fn run_timers(&mut self, cx: &mut Context<'_>) -> bool {
        let queued = self.conn.buffered_amount();
        match self.conn.handle_timeout(Instant::now().into_std()) {
            Some(Expired::Keepalive) => {
                // The peer is gone: say why (1011, queued by the connection)
                // if the socket takes it now, and drop the connection without
                // waiting for a close handshake.
                let _ = self.poll_write_out(cx);
                self.pending_error = Some(Box::new(Error::Timeout(Timeout::Keepalive)));
                self.abort();
                return true;
            }
            Some(Expired::Close) => {
                if !self.conn.is_close_handshake_done() {
                    self.pending_error = Some(Box::new(Error::Timeout(Timeout::Close)));
                }
                self.abort();
                return true;
            }
            None => {}
        }
        if self.conn.buffered_amount() > queued {
            // A keepalive ping.
            self.flush_soon(cx);
            return true;
        }
        let Some(deadline) = self.conn.poll_timeout() else {
            self.timer = None;
            return false;
        };
        let deadline = Instant::from_std(deadline);
        let timer = match &mut self.timer {
            Some(timer) => {
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                timer
            }
            None => self.timer.insert(Box::pin(sleep_until(deadline))),
        };
        timer.as_mut().poll(cx).is_ready()
    }

    /// Gives up on the transport: closes it without further ado.
    fn abort(&mut self) {
        self.reported_abnormal = true;
        self.conn.transport_closed();
        self.timer = None;
    }

    /// Writes queued output if the socket takes it now; an error is kept for the
    /// read side to report.
    fn flush_soon(&mut self, cx: &mut Context<'_>) {
        if (self.conn.has_output() || self.unflushed)
            && let Poll::Ready(Err(err)) = self.poll_write_out(cx)
        {
            self.abort();
            self.pending_error = Some(Box::new(err));
        }
    }

    /// Reads what the stream has into the connection's read buffer, which
    /// the connection sizes and borrows from the thread's spare (see
    /// [`BufferPool`](duplex_proto::BufferPool)).
    fn poll_read_some(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let buf = self.conn.read_buffer(&mut ThreadSpare);
        let read = tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, buf);
        let appended = match read {
            Poll::Ready(Ok(n)) => n,
            _ => 0,
        };
        self.conn.read_done(appended, &mut ThreadSpare);
        read
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
            return Err(self.closed());
        }
        let io = &mut self.io;
        #[cfg(all(unix, feature = "hyper"))]
        let direct = self.direct.as_ref();
        #[cfg(not(all(unix, feature = "hyper")))]
        let direct: Option<&Never> = None;
        let mut failed = None;
        let taken = self.conn.send_prepared_direct(prepared, |frame| {
            let written = match direct {
                // Straight to the socket: nothing sits between, so nothing
                // is left to flush.
                Some(socket) => match socket.send(frame) {
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
                    sent => Poll::Ready(sent),
                },
                None => Pin::new(&mut *io).poll_write(cx, frame),
            };
            match written {
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
            self.pending_error = Some(Box::new(err.into()));
            return Err(Error::Closed { was_clean: false });
        }
        if taken > 0 && direct.is_none() {
            self.unflushed = true;
        }
        self.flush_soon(cx);
        Ok(())
    }

    pub(crate) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.conn.ready_state() == ReadyState::Closed {
            return Poll::Ready(Err(self.closed()));
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
                return Err(self.closed());
            }
            return self.begin_close(frame);
        }
        self.conn.send(message).map_err(|err| self.send_error(err))
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
