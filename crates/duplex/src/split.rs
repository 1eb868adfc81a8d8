//! Owned read and write halves of a WebSocket, for two tasks.
//!
//! Both halves drive one connection: reading may write (pongs, the close echo)
//! and writing may need the read side's state. They share it behind a mutex held
//! only for the length of a non-blocking poll. The stream underneath keeps one
//! waker per direction, so each half polls it with a waker that wakes both
//! halves: whichever task the stream wakes, the other is not left asleep.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use duplex_proto::{CloseCode, CloseFrame, CloseInfo, Message, PreparedMessage, ReadyState};
use futures_core::Stream;
use futures_sink::Sink;
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{Error, Result};
use crate::websocket::Core;

struct Shared<S> {
    core: Mutex<Core<S>>,
    wakers: Arc<BothWakers>,
}

#[derive(Default)]
struct BothWakers {
    read: AtomicWaker,
    write: AtomicWaker,
}

impl BothWakers {
    fn wake_by_ref_both(&self) {
        self.read.wake();
        self.write.wake();
    }
}

impl Wake for BothWakers {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_by_ref_both();
    }
}

impl<S> Shared<S> {
    fn lock(&self) -> MutexGuard<'_, Core<S>> {
        // A panic in another half's poll leaves the state as consistent as any
        // poll does; carry on rather than poison both halves.
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub(crate) fn split<S>(core: Core<S>) -> (ReadHalf<S>, WriteHalf<S>) {
    let wakers = Arc::new(BothWakers::default());
    let waker = Waker::from(wakers.clone());
    let shared = Arc::new(Shared {
        core: Mutex::new(core),
        wakers,
    });
    (
        ReadHalf {
            shared: shared.clone(),
            waker: waker.clone(),
        },
        WriteHalf { shared, waker },
    )
}

/// The reading half of a split WebSocket: a [`Stream`] of messages.
///
/// It must keep being polled for pings to be answered and the closing handshake
/// to complete, as with an unsplit `WebSocket`.
pub struct ReadHalf<S> {
    shared: Arc<Shared<S>>,
    waker: Waker,
}

/// The writing half of a split WebSocket: a [`Sink`] of messages.
pub struct WriteHalf<S> {
    shared: Arc<Shared<S>>,
    waker: Waker,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ReadHalf<S> {
    /// Receives the next message; `None` once the connection is closed.
    pub async fn recv(&mut self) -> Option<Result<Message>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// Runs the closing handshake from the reading half, as
    /// [`WebSocket::close`](crate::WebSocket::close) does: sends a close
    /// frame with `code` and `reason` (unless one was sent, by either half),
    /// then reads, discarding messages, until the peer's close frame has
    /// arrived and the transport is closed, or the configured
    /// [`close_timeout`](crate::WebSocketConfig::close_timeout) has passed.
    /// The writing half needs no polling meanwhile; once this returns, it
    /// sends nothing more.
    ///
    /// # Errors
    ///
    /// [`Error::Send`] for a code that may not be sent or a reason over 123
    /// bytes; [`Error::Timeout`] if the peer did not answer in time; a
    /// protocol or I/O error that ended the connection meanwhile.
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<()> {
        self.shared
            .lock()
            .begin_close(Some(CloseFrame::new(code, reason)))?;
        let mut outcome = Ok(());
        while let Some(item) = self.recv().await {
            if let Err(err) = item {
                outcome = Err(err);
            }
        }
        outcome
    }
}

impl<S> ReadHalf<S> {
    /// The connection's state.
    pub fn ready_state(&self) -> ReadyState {
        self.shared.lock().conn.ready_state()
    }

    /// How the connection ended, once it is closed.
    pub fn close_info(&self) -> Option<CloseInfo> {
        self.shared.lock().conn.close_info()
    }

    /// Whether `other` is the writing half of the same connection.
    pub fn is_pair_of(&self, other: &WriteHalf<S>) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for ReadHalf<S> {
    type Item = Result<Message>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.shared.wakers.read.register(cx.waker());
        let mut both = Context::from_waker(&self.waker);
        let mut core = self.shared.lock();
        let poll = core.poll_next(&mut both);
        if core.conn.ready_state() == ReadyState::Closed {
            // A writer waiting for the socket would otherwise wait forever.
            self.shared.wakers.write.wake();
        }
        poll
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WriteHalf<S> {
    /// Sends a message and waits until the socket has taken everything queued.
    ///
    /// # Errors
    ///
    /// As [`WebSocket::send`](crate::WebSocket::send).
    pub async fn send(&mut self, message: impl Into<Message>) -> Result<()> {
        let message = message.into();
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_ready(cx)).await?;
        Pin::new(&mut *self).start_send(message)?;
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_flush(cx)).await
    }

    /// Sends a prepared message (see [`PreparedMessage`]) and waits until the
    /// socket has taken everything queued.
    ///
    /// # Errors
    ///
    /// As [`WebSocket::send`](crate::WebSocket::send).
    pub async fn send_prepared(&mut self, prepared: &PreparedMessage) -> Result<()> {
        self.feed_prepared(prepared).await?;
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_flush(cx)).await
    }

    /// Queues a prepared message without waiting for the socket beyond the
    /// write buffer bound; `flush` (or the reading half) writes it.
    ///
    /// # Errors
    ///
    /// As [`WebSocket::send`](crate::WebSocket::send).
    pub async fn feed_prepared(&mut self, prepared: &PreparedMessage) -> Result<()> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_ready(cx)).await?;
        Ok(self.shared.lock().conn.send_prepared(prepared)?)
    }

    /// Sends a close frame and flushes it, without waiting for the peer's
    /// answer: the reading half, which must keep being polled, sees it and
    /// the end of the connection. [`ReadHalf::close`] runs the whole
    /// handshake instead.
    ///
    /// # Errors
    ///
    /// [`Error::Send`] for a code that may not be sent or a reason over 123
    /// bytes; an I/O error while flushing.
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<()> {
        self.shared
            .lock()
            .begin_close(Some(CloseFrame::new(code, reason)))?;
        self.closing_started();
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_flush(cx)).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> WriteHalf<S> {
    /// A [`Sender`] for this connection: a handle any task may hold to send
    /// prepared messages at once, with no writer task in between.
    pub fn sender(&self) -> Sender {
        Sender {
            byte_limit: self.shared.lock().max_write_buffer(),
            shared: self.shared.clone(),
            waker: self.waker.clone(),
            queue_limit: usize::MAX,
        }
    }
}

impl<S> WriteHalf<S> {
    /// Our close frame is queued: the reading half, which keeps the close
    /// timeout and sees the peer's answer, must look again even if it is
    /// waiting for input.
    fn closing_started(&self) {
        self.shared.wakers.read.wake();
    }

    /// Bytes queued and not yet taken by the socket.
    pub fn buffered_amount(&self) -> usize {
        self.shared.lock().conn.buffered_amount()
    }

    /// The connection's state.
    pub fn ready_state(&self) -> ReadyState {
        self.shared.lock().conn.ready_state()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WriteHalf<S> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.shared.wakers.write.register(cx.waker());
        let mut both = Context::from_waker(&self.waker);
        self.shared.lock().poll_ready(&mut both)
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<()> {
        let closing = matches!(item, Message::Close(_));
        self.shared.lock().start_send(item)?;
        if closing {
            self.closing_started();
        }
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.shared.wakers.write.register(cx.waker());
        let mut both = Context::from_waker(&self.waker);
        self.shared.lock().poll_flush(&mut both)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.shared.wakers.write.register(cx.waker());
        let mut both = Context::from_waker(&self.waker);
        let poll = self.shared.lock().poll_close(&mut both);
        self.closing_started();
        poll
    }
}

/// Why [`Sender::try_send_prepared`] sent nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrySendError {
    /// The queue is at its bound: the peer does not read as fast as it is
    /// sent to (a slow consumer). The message was not queued.
    Full,
    /// The connection is closing or closed.
    Closed,
}

impl std::fmt::Display for TrySendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TrySendError::Full => "the send queue is full",
            TrySendError::Closed => "the connection is closed",
        })
    }
}

impl std::error::Error for TrySendError {}

/// A handle on a connection's sending side for any task: the broadcast path.
///
/// [`try_send_prepared`](Self::try_send_prepared) writes a prepared message
/// to the socket there and then when nothing is queued ahead of it, the usual
/// case of a reader that keeps up, so a publication to ten thousand
/// connections is ten thousand writes from the task that publishes: no
/// queue, no wake-up and no poll of each connection's task. What the socket
/// does not take at once is queued, in order, and written by the connection's
/// reading half as the socket drains, which therefore must keep being polled
/// (as it must anyway, for pings and the closing handshake). The queue is
/// bounded by the connection's `max_write_buffer` and by
/// [`with_queue_limit`](Self::with_queue_limit); past either, sending fails
/// with [`TrySendError::Full`] and the caller decides (a hub closes the slow
/// consumer with 1008).
///
/// Cloning is cheap; every clone sends on the same connection. Made by
/// [`WriteHalf::sender`].
#[derive(Clone)]
pub struct Sender {
    shared: Arc<dyn SendNow>,
    waker: Waker,
    queue_limit: usize,
    /// The connection's `max_write_buffer`, fixed when it was made: kept
    /// here, beside the frame bound, so that a send reads no configuration
    /// behind the lock.
    byte_limit: usize,
}

impl Sender {
    /// Bounds the queue to `frames` frames not yet taken by the socket, on
    /// top of the connection's `max_write_buffer` bytes.
    #[must_use]
    pub fn with_queue_limit(mut self, frames: usize) -> Self {
        self.queue_limit = frames;
        self
    }

    /// Sends a prepared message now, without waiting: see [`Sender`].
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] when the queue is at its bound (nothing is
    /// queued); [`TrySendError::Closed`] once a close frame was sent or the
    /// connection ended (a failure of the socket is reported by the reading
    /// half).
    pub fn try_send_prepared(&self, prepared: &PreparedMessage) -> Result<(), TrySendError> {
        let mut cx = Context::from_waker(&self.waker);
        // Outside tokio's cooperative budget. A broadcast calls this once
        // per subscriber from one task, in a loop that does not yield
        // either way; within the budget, every write past the task's 128th
        // would be refused (Pending) by tokio, and that subscriber's frame
        // queued and its task woken to write it: the slow path for all but
        // the first 128 subscribers of every publication.
        let mut send = tokio::task::coop::unconstrained(std::future::poll_fn(|cx| {
            Poll::Ready(self.shared.send_prepared_now(
                prepared,
                self.queue_limit,
                self.byte_limit,
                cx,
            ))
        }));
        match Pin::new(&mut send).poll(&mut cx) {
            Poll::Ready(sent) => sent,
            Poll::Pending => unreachable!("the send is ready when first polled"),
        }
    }

    /// Starts loading what a send to this connection reads into the
    /// processor's cache, and returns without waiting: a hint, with no
    /// effect on the connection.
    ///
    /// A loop that sends to many connections calls it on the next one before
    /// it sends to the current one. Each connection's state then arrives
    /// while the previous write is in the kernel, instead of stalling the
    /// send that needs it. A broadcast to thousands of connections misses the
    /// cache on every one of them otherwise. On processors without a stable
    /// prefetch instruction in Rust, it does nothing.
    #[inline]
    pub fn prefetch(&self) {
        self.shared.prefetch();
    }

    /// Whether a send with nothing queued ahead goes to the socket itself,
    /// past the connection's stream: a WebSocket upgraded over HTTP/1.1 on a
    /// connection served as a [`TcpIo`](crate::upgrade::TcpIo), whose
    /// request carried its handle. A check that a server is set up for it.
    pub fn writes_directly(&self) -> bool {
        self.shared.writes_directly()
    }

    /// Frames queued and not yet wholly taken by the socket.
    pub fn queued_frames(&self) -> usize {
        self.shared.queued_frames()
    }

    /// Bytes queued and not yet taken by the socket.
    pub fn buffered_amount(&self) -> usize {
        self.shared.buffered_amount()
    }
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("queued_frames", &self.queued_frames())
            .field("queue_limit", &self.queue_limit)
            .finish_non_exhaustive()
    }
}

/// What a [`Sender`] needs of a connection, whatever its stream.
trait SendNow: Send + Sync {
    fn send_prepared_now(
        &self,
        prepared: &PreparedMessage,
        queue_limit: usize,
        byte_limit: usize,
        cx: &mut Context<'_>,
    ) -> Result<(), TrySendError>;
    fn prefetch(&self);
    fn writes_directly(&self) -> bool;
    fn queued_frames(&self) -> usize;
    fn buffered_amount(&self) -> usize;
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> SendNow for Shared<S> {
    fn send_prepared_now(
        &self,
        prepared: &PreparedMessage,
        queue_limit: usize,
        byte_limit: usize,
        cx: &mut Context<'_>,
    ) -> Result<(), TrySendError> {
        let mut core = self.lock();
        if core.conn.ready_state() != ReadyState::Open {
            return Err(TrySendError::Closed);
        }
        if core.conn.queued_frames() >= queue_limit || core.conn.buffered_amount() >= byte_limit {
            return Err(TrySendError::Full);
        }
        let sent = core.send_prepared_now(prepared, cx);
        let closed = core.conn.ready_state() == ReadyState::Closed;
        drop(core);
        if closed {
            // The socket failed: the reading half reports it.
            self.wakers.wake_by_ref_both();
        }
        sent.map_err(|_| TrySendError::Closed)
    }

    fn prefetch(&self) {
        // A send reads the end of the connection's state: the lock and the
        // fields laid out beside it (see `Core`), three cache lines at most.
        let start = (&raw const self.core).cast::<u8>();
        let size = size_of::<Mutex<Core<S>>>();
        for back in [1, 65, 129] {
            if let Some(offset) = size.checked_sub(back) {
                prefetch_line(start.wrapping_add(offset));
            }
        }
    }

    fn writes_directly(&self) -> bool {
        self.lock().writes_directly()
    }

    fn queued_frames(&self) -> usize {
        self.lock().conn.queued_frames()
    }

    fn buffered_amount(&self) -> usize {
        self.lock().conn.buffered_amount()
    }
}

/// Asks the processor to load the cache line holding `address`; a hint that
/// never faults, whatever the address.
#[inline(always)]
fn prefetch_line(address: *const u8) {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse"))]
    #[allow(unsafe_code)]
    // SAFETY: this build enables SSE (the cfg above), and a prefetch neither
    // reads the memory for the program nor faults on any address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address.cast());
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse")))]
    let _ = address;
}

impl<S> std::fmt::Debug for ReadHalf<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadHalf").finish_non_exhaustive()
    }
}

impl<S> std::fmt::Debug for WriteHalf<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteHalf").finish_non_exhaustive()
    }
}
