//! A client that reconnects by itself: a stream of [`Event`]s over as many
//! connections as it takes.
//!
//! [`Reconnect`] wraps a [`ClientBuilder`]; [`start`](Reconnect::start)
//! spawns a task that connects, reports what happens as [`Event`]s, and
//! connects again when a connection ends, after a delay that grows with each
//! failed attempt ([`Backoff`], exponential with full jitter), until something
//! says not to come back (see below) or the caller closes it.
//!
//! ```no_run
//! use duplex::reconnect::{Event, Reconnect};
//! use duplex::{ClientBuilder, Message};
//! use futures_util::StreamExt;
//! # async fn run() {
//! let mut client = Reconnect::new(ClientBuilder::new("wss://example.com/feed"))
//!     // Sent first on every connection, before anything queued.
//!     .on_open(|| async { vec![Message::text(r#"{"op":"subscribe","channel":"prices"}"#)] })
//!     .start();
//! while let Some(event) = client.next().await {
//!     match event {
//!         Event::Open { attempt, .. } => println!("open after {attempt} attempt(s)"),
//!         Event::Message(message) => println!("{message:?}"),
//!         Event::Closed(info) => println!("closed: {} {}", info.code, info.reason),
//!         Event::Reconnecting { attempt, delay, .. } => {
//!             println!("reconnecting in {delay:?} (attempt {attempt})")
//!         }
//!         Event::Stopped(why) => println!("gave up: {why}"),
//!         _ => {}
//!     }
//! }
//! # }
//! ```
//!
//! # What stops retrying
//!
//! - A close frame from the server with code 1008 (policy violation: the
//!   server refuses this client, and would again), or with a code given to
//!   [`Reconnect::stop_on_close`].
//! - An HTTP status in answer to the upgrade request from 400 to 499, except
//!   408 (request timeout) and 429 (too many requests): the request itself is
//!   refused (401, 403, 404), and sending it again changes nothing. 429 and
//!   503 are retried no sooner than their `Retry-After` says (seconds or an
//!   HTTP date; at most a day); other statuses are retried with the backoff.
//! - A URL or setting that is not valid, a TLS failure that rustls reports (a
//!   certificate that does not verify does not start verifying on its own;
//!   a connection that breaks during the TLS handshake is retried), and a
//!   proxy that refuses the credentials.
//! - [`Reconnect::max_attempts`] failed attempts in a row, if set.
//! - [`Reconnecting::close`], and dropping the [`Reconnecting`] stream.
//!
//! Everything else is retried: a refused or reset TCP connection, a timeout,
//! a server that closes with any other code (1001 when it restarts, 1000, 1011),
//! and a peer that stops answering pings (keepalive is on, see
//! [`Reconnect::new`]).
//!
//! # Sending across reconnections
//!
//! [`Reconnecting::send`] (or a [`Handle`]'s) puts a message in one bounded
//! queue, in order. While a connection is open it is written at once; while
//! there is none it waits, and goes out on the next connection after the
//! [`on_open`](Reconnect::on_open) messages. When the queue is full
//! ([`queue`](Reconnect::queue), 1,024 messages by default), `send` waits for
//! room and `try_send` refuses with [`TrySendError::Full`]: nothing is dropped
//! without the sender knowing. A message is sent at most once: one written to a
//! connection that then fails may be lost with it; an application that must
//! not lose any acknowledges at its own level (the hub's `since` recovery).

use std::fmt;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use duplex_proto::rng::{MaskSource, ThreadRngMask};
use duplex_proto::{CloseCode, CloseInfo, Keepalive, Message};
use futures_core::Stream;
use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Response, StatusCode};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep};

use crate::client::ClientBuilder;
use crate::error::{Error, Result};
use crate::proxy::ProxyErrorKind;
use crate::split::{TrySendError, WriteHalf};

/// The keepalive a reconnecting client uses unless its builder sets one: a
/// ping after 20 s of silence, and 20 s for the answer. A dead peer (a server
/// gone without a FIN, a NAT that forgot the connection) is found within 40 s,
/// and an idle connection sends a few bytes every 20 s, under the 60 s after
/// which proxies such as nginx drop idle connections.
pub const DEFAULT_KEEPALIVE: Keepalive =
    Keepalive::new(Duration::from_secs(20), Duration::from_secs(20));

/// The longest a `Retry-After` header is waited for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// Events buffered for a caller that reads them slowly; past this the client
/// stops reading from the server until the caller catches up.
const EVENT_BUFFER: usize = 16;

/// How long to wait before each attempt: exponential backoff with full
/// jitter.
///
/// Attempt `n` (1 for the first retry after a failure) waits a random time
/// between zero and `min(max, initial * factor^(n-1))`. The randomness spreads
/// the clients of a server that restarts over the whole window instead of
/// sending them back all at once; the first retry may come at once, for the
/// blip that is over by then.
///
/// The defaults, `initial` 1 s, `factor` 2 and `max` 30 s, retry a few times
/// within the first seconds of an outage (most are restarts and deploys) and
/// then settle at no more than one attempt per 30 s per client, which a
/// recovering server with tens of thousands of clients can take.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The window of the first retry.
    pub initial: Duration,
    /// The largest window.
    pub max: Duration,
    /// How much the window grows with each failed attempt (at least 1).
    pub factor: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            factor: 2.0,
        }
    }
}

impl Backoff {
    /// The window for `attempt` (1-based): `min(max, initial * factor^(attempt-1))`.
    pub fn window(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let grown = self.initial.as_secs_f64() * self.factor.max(1.0).powi(exponent);
        if grown.is_finite() && grown < self.max.as_secs_f64() {
            Duration::from_secs_f64(grown)
        } else {
            self.max
        }
    }

    /// The delay for `attempt`: `window(attempt)` scaled by `random`, a number
    /// in `[0, 1)` (clamped to it).
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        self.window(attempt).mul_f64(random.clamp(0.0, 1.0))
    }
}

/// What happens to a reconnecting client, in order.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A connection opened.
    Open {
        /// Which attempt this was, counted since the last connection that
        /// stayed open for [`stable_after`](Reconnect::stable_after) (1 when
        /// the first try succeeded): connections that close sooner count as
        /// failed attempts, so a server that accepts and drops at once is
        /// retried ever more slowly.
        attempt: u32,
        /// The server's `101 Switching Protocols` response.
        response: Response<()>,
    },
    /// A text or binary message from the server.
    Message(Message),
    /// The open connection ended: the server's close code and reason (1006 if
    /// it ended without a closing handshake), and whether the close was clean.
    Closed(CloseInfo),
    /// The client waits `delay`, then makes attempt number `attempt`.
    Reconnecting {
        /// The attempt about to be made, counted as in [`Event::Open`].
        attempt: u32,
        /// How long the client waits first.
        delay: Duration,
        /// Why the last attempt failed; `None` after a connection that was
        /// open (the [`Closed`](Event::Closed) event before says how it ended).
        error: Option<Error>,
    },
    /// The client stopped for good; no event follows.
    Stopped(Stop),
}

/// Why a reconnecting client stopped.
#[derive(Debug)]
#[non_exhaustive]
pub enum Stop {
    /// [`Reconnecting::close`] was called.
    Closed,
    /// The server closed with a code that means "do not come back": 1008, or
    /// one given to [`Reconnect::stop_on_close`].
    CloseCode(CloseCode),
    /// An attempt failed in a way that retrying cannot mend: a 4xx answer
    /// other than 408 and 429, an invalid URL or setting, a TLS failure, a
    /// proxy that refuses the credentials.
    Failed(Error),
    /// [`Reconnect::max_attempts`] attempts failed in a row; the last one's
    /// error.
    GaveUp(Error),
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::Closed => f.write_str("closed by the client"),
            Stop::CloseCode(code) => write!(
                f,
                "the server closed with {code}, which means do not reconnect"
            ),
            Stop::Failed(err) => write!(f, "{err}"),
            Stop::GaveUp(err) => write!(f, "too many failed attempts; the last: {err}"),
        }
    }
}

type OnOpen = Arc<dyn Fn() -> BoxFuture<'static, Vec<Message>> + Send + Sync>;

/// Settings for a reconnecting client: the [`ClientBuilder`] each attempt
/// connects with, the backoff, what stops it, the send queue, and what to send
/// on every fresh connection.
#[must_use = "nothing connects until `start` is called"]
pub struct Reconnect {
    builder: ClientBuilder,
    backoff: Backoff,
    stable_after: Duration,
    stop_codes: Vec<CloseCode>,
    queue: usize,
    max_attempts: Option<u32>,
    on_open: Option<OnOpen>,
}

impl fmt::Debug for Reconnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reconnect")
            .field("builder", &self.builder)
            .field("backoff", &self.backoff)
            .field("stable_after", &self.stable_after)
            .field("stop_codes", &self.stop_codes)
            .field("queue", &self.queue)
            .field("max_attempts", &self.max_attempts)
            .field("on_open", &self.on_open.is_some())
            .finish()
    }
}

impl Reconnect {
    /// Reconnects with `builder`'s URL and settings, and [`DEFAULT_KEEPALIVE`]
    /// if the builder sets no keepalive of its own: without pings a client
    /// cannot tell a dead connection from a quiet one.
    pub fn new(builder: ClientBuilder) -> Self {
        let builder = match builder.keepalive_setting() {
            Some(_) => builder,
            None => builder.keepalive(DEFAULT_KEEPALIVE),
        };
        Reconnect {
            builder,
            backoff: Backoff::default(),
            stable_after: Duration::from_secs(10),
            stop_codes: vec![CloseCode::POLICY_VIOLATION],
            queue: 1024,
            max_attempts: None,
            on_open: None,
        }
    }

    /// The delays between attempts. Default: [`Backoff::default`].
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How long a connection must stay open for the backoff to start over
    /// from its first window when it ends. Default: 10 s, longer than a server
    /// that accepts and then crashes takes, so a crash loop still backs off.
    pub fn stable_after(mut self, duration: Duration) -> Self {
        self.stable_after = duration;
        self
    }

    /// Stops instead of reconnecting when the server closes with `code`
    /// (besides 1008, which always stops). Repeatable.
    pub fn stop_on_close(mut self, code: CloseCode) -> Self {
        self.stop_codes.push(code);
        self
    }

    /// How many messages may wait to be sent (at least 1). Default: 1,024.
    pub fn queue(mut self, messages: usize) -> Self {
        self.queue = messages.max(1);
        self
    }

    /// Stops after this many failed attempts in a row (at least 1). Default:
    /// no limit.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts.max(1));
        self
    }

    /// What to send first on every connection, before any queued message:
    /// the subscriptions and state a fresh connection needs. Called once per
    /// connection, after it opens.
    pub fn on_open<F, Fut>(mut self, messages: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Message>> + Send + 'static,
    {
        self.on_open = Some(Arc::new(move || Box::pin(messages())));
        self
    }

    /// Starts connecting, on a task of the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn start(self) -> Reconnecting {
        let (events_tx, events) = mpsc::channel(EVENT_BUFFER);
        let (outgoing_tx, outgoing) = mpsc::channel(self.queue);
        let (closing_tx, closing) = watch::channel(None);
        let handle = Handle {
            outgoing: outgoing_tx,
            closing: Arc::new(closing_tx),
        };
        tokio::spawn(
            Driver {
                settings: self,
                events: events_tx,
                outgoing,
                closing,
            }
            .run(),
        );
        Reconnecting { events, handle }
    }
}

/// A running reconnecting client: a [`Stream`] of [`Event`]s that ends after
/// [`Event::Stopped`], and the sending side. Dropping it stops the client
/// (closing an open connection with 1001).
#[derive(Debug)]
pub struct Reconnecting {
    events: mpsc::Receiver<Event>,
    handle: Handle,
}

impl Reconnecting {
    /// A handle that sends and closes from elsewhere (another task).
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Queues `message`; see [`Handle::send`].
    ///
    /// # Errors
    ///
    /// As [`Handle::send`].
    pub async fn send(&self, message: impl Into<Message>) -> Result<()> {
        self.handle.send(message).await
    }

    /// Queues `message` if there is room; see [`Handle::try_send`].
    ///
    /// # Errors
    ///
    /// As [`Handle::try_send`].
    pub fn try_send(&self, message: impl Into<Message>) -> Result<(), TrySendError> {
        self.handle.try_send(message)
    }

    /// Stops the client; see [`Handle::close`].
    pub fn close(&self, code: CloseCode, reason: &str) {
        self.handle.close(code, reason);
    }
}

impl Stream for Reconnecting {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.events.poll_recv(cx)
    }
}

/// The sending side of a [`Reconnecting`] client, for other tasks.
#[derive(Debug, Clone)]
pub struct Handle {
    outgoing: mpsc::Sender<Message>,
    closing: Arc<watch::Sender<Option<(CloseCode, String)>>>,
}

impl Handle {
    /// Queues `message`, waiting for room while the queue is full. It is
    /// written at once while a connection is open, and on the next connection
    /// otherwise.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] once the client has stopped.
    pub async fn send(&self, message: impl Into<Message>) -> Result<()> {
        self.outgoing
            .send(message.into())
            .await
            .map_err(|_| Error::Closed { was_clean: true })
    }

    /// Queues `message` if there is room.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] when the queue is full (nothing was queued);
    /// [`TrySendError::Closed`] once the client has stopped.
    pub fn try_send(&self, message: impl Into<Message>) -> Result<(), TrySendError> {
        self.outgoing
            .try_send(message.into())
            .map_err(|err| match err {
                mpsc::error::TrySendError::Full(_) => TrySendError::Full,
                mpsc::error::TrySendError::Closed(_) => TrySendError::Closed,
            })
    }

    /// Stops the client: an open connection is closed with `code` and
    /// `reason` once what was queued before has been written; no reconnection
    /// follows. The event stream ends with [`Event::Closed`] (if a connection
    /// was open) and [`Event::Stopped`] with [`Stop::Closed`].
    pub fn close(&self, code: CloseCode, reason: &str) {
        self.closing.send_replace(Some((code, reason.to_owned())));
    }
}

/// Whether a failed attempt is worth another, and how soon at the earliest.
#[derive(Debug, PartialEq)]
enum Verdict {
    Retry { after: Option<Duration> },
    Stop,
}

fn verdict(err: &Error) -> Verdict {
    match err {
        Error::Rejected(response) => {
            let status = response.status();
            if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
            {
                Verdict::Retry {
                    after: retry_after(response.headers(), SystemTime::now()),
                }
            } else if status.is_client_error() && status != StatusCode::REQUEST_TIMEOUT {
                Verdict::Stop
            } else {
                Verdict::Retry { after: None }
            }
        }
        Error::Url(_) | Error::Config(_) => Verdict::Stop,
        // A certificate that does not verify will not verify next time; a
        // transport that broke during the TLS handshake may not break again.
        Error::Tls { source, .. } if !source.is::<std::io::Error>() => Verdict::Stop,
        // A proxy that wants other credentials will want them next time too;
        // one that is down or refuses a tunnel for now may come back.
        Error::Proxy(err)
            if matches!(err.kind(), ProxyErrorKind::AuthenticationRequired { .. }) =>
        {
            Verdict::Stop
        }
        _ => Verdict::Retry { after: None },
    }
}

/// The wait a `Retry-After` header asks for (RFC 9110 section 10.2.3): a
/// number of seconds or an HTTP date, at most [`MAX_RETRY_AFTER`].
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let date = httpdate::parse_http_date(value).ok()?;
            date.duration_since(now).unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// A number in `[0, 1)` from the thread's generator.
fn random_fraction() -> f64 {
    let mut bytes = [0u8; 8];
    ThreadRngMask.fill_bytes(&mut bytes);
    (u64::from_ne_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// Completes when the caller has asked the client to close; never if every
/// handle is gone without asking (the event stream's end says so then).
async fn asked_to_close(closing: &mut watch::Receiver<Option<(CloseCode, String)>>) {
    if closing.wait_for(Option::is_some).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Hands `pending` to the write half once it has room, then flushes.
fn write_out<S>(
    write: &mut WriteHalf<S>,
    pending: &mut Option<Message>,
    cx: &mut Context<'_>,
) -> Poll<Result<()>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if pending.is_some() {
        ready!(write.poll_ready_unpin(cx))?;
        if let Some(message) = pending.take() {
            write.start_send_unpin(message)?;
        }
    }
    write.poll_flush_unpin(cx)
}

/// How an open connection ended.
enum Ended {
    /// The connection ended by itself (or failed).
    Closed(Option<CloseInfo>),
    /// The caller asked to stop; the connection was closed.
    ByCaller(Option<CloseInfo>),
    /// Nobody listens any more.
    Abandoned,
}

struct Driver {
    settings: Reconnect,
    events: mpsc::Sender<Event>,
    outgoing: mpsc::Receiver<Message>,
    closing: watch::Receiver<Option<(CloseCode, String)>>,
}

impl Driver {
    async fn run(mut self) {
        // Failed attempts since the last connection that opened.
        let mut failures: u32 = 0;
        loop {
            let attempt = failures + 1;
            let connect = self.settings.builder.clone().connect();
            let connected = tokio::select! {
                connected = connect => connected,
                _ = asked_to_close(&mut self.closing) => {
                    let _ = self.events.send(Event::Stopped(Stop::Closed)).await;
                    return;
                }
                () = self.events.closed() => return,
            };
            let (error, earliest) = match connected {
                Ok(ws) => {
                    let opened = Instant::now();
                    let response = ws.response().cloned().unwrap_or_default();
                    if !self.emit(Event::Open { attempt, response }).await {
                        return;
                    }
                    let first = match &self.settings.on_open {
                        Some(on_open) => on_open().await,
                        None => Vec::new(),
                    };
                    let info = match self.run_open(ws, first).await {
                        Ended::Abandoned => return,
                        Ended::ByCaller(info) => {
                            if let Some(info) = info {
                                self.emit(Event::Closed(info)).await;
                            }
                            self.emit(Event::Stopped(Stop::Closed)).await;
                            return;
                        }
                        Ended::Closed(info) => info,
                    };
                    if let Some(info) = info {
                        let stop = self.settings.stop_codes.contains(&info.code);
                        let code = info.code;
                        if !self.emit(Event::Closed(info)).await {
                            return;
                        }
                        if stop {
                            self.emit(Event::Stopped(Stop::CloseCode(code))).await;
                            return;
                        }
                    }
                    failures = if opened.elapsed() >= self.settings.stable_after {
                        0
                    } else {
                        // A connection that did not last counts as a failed
                        // attempt, so a server that accepts and drops at once
                        // is retried with a growing delay.
                        failures + 1
                    };
                    (None, None)
                }
                Err(err) => {
                    failures += 1;
                    let earliest = match verdict(&err) {
                        Verdict::Stop => {
                            self.emit(Event::Stopped(Stop::Failed(err))).await;
                            return;
                        }
                        Verdict::Retry { after } => after,
                    };
                    if self
                        .settings
                        .max_attempts
                        .is_some_and(|max| failures >= max)
                    {
                        self.emit(Event::Stopped(Stop::GaveUp(err))).await;
                        return;
                    }
                    (Some(err), earliest)
                }
            };
            let attempt = failures + 1;
            // After a connection that lasted, the retry gets the first window.
            let backoff = self
                .settings
                .backoff
                .delay(failures.max(1), random_fraction());
            let delay = earliest.map_or(backoff, |earliest| earliest.max(backoff));
            if !self
                .emit(Event::Reconnecting {
                    attempt,
                    delay,
                    error,
                })
                .await
            {
                return;
            }
            tokio::select! {
                () = sleep(delay) => {}
                _ = asked_to_close(&mut self.closing) => {
                    self.emit(Event::Stopped(Stop::Closed)).await;
                    return;
                }
                () = self.events.closed() => return,
            }
        }
    }

    /// Sends an event; false once nobody listens.
    async fn emit(&self, event: Event) -> bool {
        self.events.send(event).await.is_ok()
    }

    /// Runs one open connection until it ends: sends `first`, then queued
    /// messages as they come; reports messages; stops on the caller's close.
    async fn run_open<S>(&mut self, ws: crate::WebSocket<S>, first: Vec<Message>) -> Ended
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
    {
        let (mut read, mut write) = ws.split();
        let mut failed = false;
        for message in first {
            if write.send(message).await.is_err() {
                failed = true;
                break;
            }
        }
        enum Why {
            Ended,
            Caller,
            Abandoned,
        }
        // The message taken from the queue and not yet written: a write the
        // socket holds up must not stop the reading (keepalive, the close
        // frame) meanwhile, so it is driven as one branch among the others.
        let mut pending: Option<Message> = None;
        let mut unflushed = false;
        let why = loop {
            tokio::select! {
                biased;
                () = asked_to_close(&mut self.closing) => break Why::Caller,
                () = self.events.closed() => break Why::Abandoned,
                written = poll_fn(|cx| write_out(&mut write, &mut pending, cx)),
                    if unflushed && !failed =>
                {
                    unflushed = false;
                    failed |= written.is_err();
                }
                message = self.outgoing.recv(), if !unflushed && !failed => match message {
                    Some(message) => {
                        pending = Some(message);
                        unflushed = true;
                    }
                    None => break Why::Abandoned,
                },
                message = read.next() => match message {
                    Some(Ok(message)) if message.is_text() || message.is_binary() => {
                        if self.events.send(Event::Message(message)).await.is_err() {
                            break Why::Abandoned;
                        }
                    }
                    // Control frames are answered by the connection; a close
                    // frame is followed by the end.
                    Some(Ok(_)) => {}
                    // The end follows; close_info says how it ended.
                    Some(Err(_)) => {}
                    None => break Why::Ended,
                },
            }
        };
        match why {
            Why::Ended => Ended::Closed(read.close_info()),
            Why::Abandoned => {
                let _ = write.close(CloseCode::GOING_AWAY, "").await;
                Ended::Abandoned
            }
            Why::Caller => {
                let (code, reason) = self
                    .closing
                    .borrow()
                    .clone()
                    .unwrap_or((CloseCode::NORMAL, String::new()));
                // What was queued before the close goes first.
                while let Ok(message) = self.outgoing.try_recv() {
                    if write.send(message).await.is_err() {
                        break;
                    }
                }
                let _ = write.close(code, &reason).await;
                // Read to the end: the server's close frame, bounded by the
                // close timeout.
                while let Some(message) = read.next().await {
                    if let Ok(message) = message
                        && (message.is_text() || message.is_binary())
                        && self.events.send(Event::Message(message)).await.is_err()
                    {
                        return Ended::Abandoned;
                    }
                }
                Ended::ByCaller(read.close_info())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_grows_by_the_factor_up_to_the_max() {
        let backoff = Backoff::default();
        let windows: Vec<u64> = (1..=8)
            .map(|n| backoff.window(n).as_millis() as u64)
            .collect();
        assert_eq!(
            windows,
            [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        // Huge attempt numbers and factors neither overflow nor panic.
        assert_eq!(backoff.window(u32::MAX), backoff.max);
        let steep = Backoff {
            factor: 1e300,
            ..backoff
        };
        assert_eq!(steep.window(10), steep.max);
        // A factor under 1 is taken as 1: the window never shrinks.
        let flat = Backoff {
            factor: 0.5,
            ..backoff
        };
        assert_eq!(flat.window(5), flat.initial);
    }

    #[test]
    fn full_jitter_spans_zero_to_the_window() {
        let backoff = Backoff::default();
        assert_eq!(backoff.delay(3, 0.0), Duration::ZERO);
        assert_eq!(backoff.delay(3, 0.5), Duration::from_secs(2));
        assert_eq!(backoff.delay(3, 7.0), Duration::from_secs(4), "clamped");
        let draws: Vec<f64> = (0..1000).map(|_| random_fraction()).collect();
        assert!(draws.iter().all(|r| (0.0..1.0).contains(r)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((0.4..0.6).contains(&mean), "uniform: mean {mean}");
    }

    fn rejected(status: u16, retry_after: Option<&str>) -> Error {
        let mut response = Response::new(bytes::Bytes::new());
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        if let Some(value) = retry_after {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, value.parse().unwrap());
        }
        Error::Rejected(Box::new(response))
    }

    #[test]
    fn what_stops_and_what_retries() {
        for status in [400, 401, 403, 404, 410, 426] {
            assert_eq!(verdict(&rejected(status, None)), Verdict::Stop, "{status}");
        }
        for status in [408, 500, 502, 504] {
            assert_eq!(
                verdict(&rejected(status, None)),
                Verdict::Retry { after: None },
                "{status}"
            );
        }
        assert_eq!(
            verdict(&rejected(429, Some("7"))),
            Verdict::Retry {
                after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(
            verdict(&rejected(503, None)),
            Verdict::Retry { after: None }
        );
        assert_eq!(verdict(&Error::Url("no host".to_owned())), Verdict::Stop);
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(verdict(&Error::Io(refused)), Verdict::Retry { after: None });
        let refused = Error::Connect {
            host: "127.0.0.1".to_owned(),
            addr: ([127, 0, 0, 1], 1).into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(verdict(&refused), Verdict::Retry { after: None });
        let broken = Error::Tls {
            server_name: Some("example.com".to_owned()),
            source: Box::new(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
        };
        assert_eq!(verdict(&broken), Verdict::Retry { after: None });
        let untrusted = Error::Tls {
            server_name: Some("example.com".to_owned()),
            source: "invalid peer certificate: UnknownIssuer".into(),
        };
        assert_eq!(verdict(&untrusted), Verdict::Stop);
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date_and_is_bounded() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let header = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(http::header::RETRY_AFTER, value.parse().unwrap());
            headers
        };
        assert_eq!(
            retry_after(&header("120"), now),
            Some(Duration::from_secs(120))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(
            retry_after(&header(&later), now),
            Some(Duration::from_secs(90))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(retry_after(&header(&past), now), Some(Duration::ZERO));
        assert_eq!(
            retry_after(&header("99999999999"), now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(retry_after(&header("soon"), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }
}
