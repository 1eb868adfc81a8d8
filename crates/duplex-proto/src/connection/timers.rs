//! The connection's timers: keepalive (a ping after silence, a deadline for
//! its pong) and the close timeout, kept with times the caller passes in.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Connection, ReadyState};
use crate::close::{CloseCode, CloseFrame};
use crate::frame::OpCode;

/// Keepalive settings: ping the peer after `interval` without hearing from
/// it, and give up on it if nothing comes back within `timeout` of the ping.
///
/// ```
/// use std::time::Duration;
/// use duplex_proto::Keepalive;
/// let keepalive = Keepalive::new(Duration::from_secs(20), Duration::from_secs(10));
/// assert_eq!(keepalive.interval, Duration::from_secs(20));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Keepalive {
    /// How long the peer may be silent before it is pinged.
    pub interval: Duration,
    /// How long after the ping it has to send anything at all.
    pub timeout: Duration,
}

impl Keepalive {
    /// A ping after `interval` of silence, and the connection given up if
    /// nothing arrives within `timeout` of it.
    pub const fn new(interval: Duration, timeout: Duration) -> Self {
        Keepalive { interval, timeout }
    }
}

/// A timer that ended the connection, as
/// [`Connection::handle_timeout`] reports it. From then on
/// [`should_close_transport`](Connection::should_close_transport) is true.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Expired {
    /// Nothing came from the peer within the keepalive timeout of our ping.
    /// A close frame with 1011 is queued: write what the transport takes at
    /// once, without waiting, and close it.
    Keepalive,
    /// The close timeout passed after the closing handshake began: the peer
    /// did not answer our close frame in time (or, once the handshake is
    /// done, the server did not close the transport). Close it.
    Close,
}

/// The timers' settings and state.
#[derive(Debug, Default)]
pub(super) struct Timers {
    close_timeout: Option<Duration>,
    /// When the closing handshake runs out of time, once it began and
    /// `handle_timeout` has dated it.
    close_deadline: Option<Instant>,
    /// Boxed: keepalive is off by default, and an idle connection is the
    /// smaller for it.
    keepalive: Option<Box<KeepaliveState>>,
    pub(super) expired: Option<Expired>,
}

#[derive(Debug)]
struct KeepaliveState {
    config: Keepalive,
    /// When the peer was last heard from, as `handle_timeout` dated it;
    /// `None` before its first call.
    last_heard: Option<Instant>,
    /// Bytes arrived since the last `handle_timeout`.
    heard: bool,
    /// When our unanswered ping was sent.
    ping_sent: Option<Instant>,
    /// Keepalive pings sent: the payload of the last one, which its pong
    /// echoes.
    pings: u64,
}

impl KeepaliveState {
    fn deadline(&self) -> Option<Instant> {
        let heard = self.last_heard?;
        Some(match self.ping_sent {
            Some(sent) => sent.max(heard) + self.config.timeout,
            None => heard + self.config.interval,
        })
    }
}

impl Timers {
    /// Notes that bytes arrived from the peer.
    #[inline]
    pub(super) fn heard(&mut self) {
        if let Some(keepalive) = self.keepalive.as_mut() {
            keepalive.heard = true;
        }
    }

    /// Notes a pong; true if it answers our own keepalive ping, and so is
    /// not the application's business.
    pub(super) fn on_pong(&mut self, payload: &[u8]) -> bool {
        let Some(keepalive) = self.keepalive.as_mut() else {
            return false;
        };
        // Any pong shows the peer is there; only our own is swallowed.
        keepalive.ping_sent = None;
        keepalive.pings > 0 && payload == keepalive.pings.to_be_bytes()
    }
}

impl Connection {
    /// Turns keepalive on (or off, with `None`). The silence is counted from
    /// the next [`handle_timeout`](Self::handle_timeout). Pongs that answer
    /// keepalive pings are not returned by
    /// [`next_message`](Self::next_message).
    ///
    /// Default: off.
    pub fn set_keepalive(&mut self, keepalive: Option<Keepalive>) {
        self.timers.keepalive = keepalive.map(|config| {
            Box::new(KeepaliveState {
                config,
                last_heard: None,
                heard: true,
                ping_sent: None,
                pings: 0,
            })
        });
    }

    /// The keepalive in force.
    pub fn keepalive(&self) -> Option<Keepalive> {
        self.timers.keepalive.as_ref().map(|k| k.config)
    }

    /// Sets how long the closing handshake may take, counted from the
    /// [`handle_timeout`](Self::handle_timeout) that follows the first close
    /// frame sent or received: the wait for the peer's close frame after
    /// ours, and (on a client) for the server to close the transport after
    /// the handshake (RFC 6455 section 7.1.1).
    ///
    /// Default: none; the connection waits as long as the caller does.
    pub fn set_close_timeout(&mut self, timeout: Option<Duration>) {
        self.timers.close_timeout = timeout;
    }

    /// Whether [`handle_timeout`](Self::handle_timeout) has anything to do,
    /// now or later: keepalive is on, or a close timeout is set and the
    /// closing handshake has begun. While it is false the caller need not
    /// read its clock before waiting (no timer runs, and nothing needs a
    /// date); once it turns true, the next `handle_timeout` dates what
    /// happened since.
    #[inline]
    pub fn wants_timeout(&self) -> bool {
        (self.timers.keepalive.is_some()
            || self.timers.close_timeout.is_some() && self.ready_state() != ReadyState::Open)
            && self.timers.expired.is_none()
            && !self.transport_closed
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has something to
    /// do: the earliest of the close deadline and, while the connection is
    /// open, the keepalive's (a ping to send, or a pong overdue). `None` when
    /// no timer runs. Events since the last `handle_timeout` (bytes that
    /// arrived, a close begun) are not counted until it dates them.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.timers.expired.is_some() || self.transport_closed {
            return None;
        }
        let keepalive = match &self.timers.keepalive {
            Some(k) if self.ready_state() == ReadyState::Open => k.deadline(),
            _ => None,
        };
        match (self.timers.close_deadline, keepalive) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Tells the connection the time: `now`, from the caller's clock (the
    /// connection reads none). Call it whenever the caller is about to wait
    /// (for input, or until [`poll_timeout`](Self::poll_timeout)) and when
    /// that deadline passes.
    ///
    /// It dates what happened since the last call (bytes from the peer, the
    /// first close frame sent or received) at `now`, then does what is due:
    /// sends a keepalive ping (take the output and write it), or ends the
    /// connection and returns the timer that ended it, once.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Expired> {
        if self.timers.expired.is_some() || self.transport_closed {
            return None;
        }
        let open = self.ready_state() == ReadyState::Open;
        if !open
            && self.timers.close_deadline.is_none()
            && let Some(timeout) = self.timers.close_timeout
        {
            self.timers.close_deadline = Some(now + timeout);
        }
        if self
            .timers
            .close_deadline
            .is_some_and(|deadline| now >= deadline)
        {
            self.timers.expired = Some(Expired::Close);
            return self.timers.expired;
        }
        let keepalive = self.timers.keepalive.as_mut()?;
        if !open {
            // Closing: the close timeout is in charge now.
            self.timers.keepalive = None;
            return None;
        }
        if std::mem::take(&mut keepalive.heard) {
            keepalive.last_heard = Some(now);
        }
        if keepalive.deadline().is_none_or(|deadline| now < deadline) {
            return None;
        }
        if keepalive.ping_sent.is_some() {
            // The peer is gone: say why, if the transport takes it, and stop.
            self.timers.keepalive = None;
            self.timers.expired = Some(Expired::Keepalive);
            let reason = CloseFrame::new(CloseCode::INTERNAL_ERROR, "keepalive timeout");
            self.write_close(Some(reason));
            return self.timers.expired;
        }
        keepalive.pings += 1;
        keepalive.ping_sent = Some(now);
        let payload = Bytes::copy_from_slice(&keepalive.pings.to_be_bytes());
        self.write_frame(OpCode::Ping, true, 0, payload);
        None
    }

    /// The timer that ended the connection, if one did.
    pub fn expired(&self) -> Option<Expired> {
        self.timers.expired
    }
}
