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

impl Wake for BothWakers {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.read.wake();
        self.write.wake();
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

    /// Sends a close frame and flushes it. The reading half sees the peer's
    /// answer and the end of the connection.
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
