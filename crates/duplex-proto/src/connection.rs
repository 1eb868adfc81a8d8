//! The connection state machine: bytes in, messages out; messages in, bytes
//! out; time in, pings and timeouts out. This module holds the type and its
//! state; its children hold input ([`receive`]), output ([`send`]), the read
//! buffer ([`read`]) and the timers ([`timers`]).

mod read;
mod receive;
mod send;
mod timers;

use std::fmt;

use bytes::BytesMut;

pub use self::read::{BufferPool, NoPool, READ_ROOM};
use self::receive::Incoming;
use self::send::Outgoing;
use self::timers::Timers;
pub use self::timers::{Expired, Keepalive};
use crate::close::{CloseCode, CloseStatus};
use crate::config::Limits;
use crate::error::ProtocolError;
#[cfg(feature = "deflate")]
use crate::frame::RSV1;
use crate::frame::{FrameDecoder, Role};
use crate::output::Output;
use crate::rng::MaskSource;
use crate::utf8::Utf8Bytes;

/// The state of a connection, named as in the browser's `WebSocket.readyState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadyState {
    /// The opening handshake is under way. A [`Connection`] never reports it (it
    /// starts after the handshake); the async layer does.
    Connecting,
    /// Messages flow both ways.
    Open,
    /// A close frame was sent or received (or the connection failed); the
    /// transport is not closed yet.
    Closing,
    /// The transport is closed.
    Closed,
}

/// How a connection ended, as the browser's `CloseEvent` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    /// The code from the peer's close frame; 1005 if it had none; 1006 if none
    /// was received (the connection failed or the transport closed first).
    pub code: CloseCode,
    /// The reason from the peer's close frame, or empty.
    pub reason: Utf8Bytes,
    /// Whether both close frames were exchanged before the transport closed.
    pub was_clean: bool,
}

/// Which kind of frame [`Connection::send_fragment`] sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    /// The first frame of a text message.
    Text,
    /// The first frame of a binary message.
    Binary,
    /// A later frame of the message being sent.
    Continuation,
}

/// One WebSocket connection, after the opening handshake, as a state machine.
///
/// It does no I/O and reads no clock. The caller moves bytes between it and the
/// transport, and brings it the time, in this order:
///
/// 1. Bytes read from the transport go in with [`receive`](Self::receive), or
///    are read straight into [`read_buffer`](Self::read_buffer) and reported
///    with [`read_done`](Self::read_done); end of input is reported with
///    [`receive_eof`](Self::receive_eof).
/// 2. [`next_message`](Self::next_message) is called until it returns `Ok(None)`:
///    each call decodes as far as the buffered bytes allow and returns the next
///    message. Decoding is lazy, so a caller that stops asking stops reading.
/// 3. Messages go out with [`send`](Self::send) and friends; they, and the
///    connection's own replies (pongs, the close echo, keepalive pings), become
///    bytes to write, taken with [`take_output`](Self::take_output) or
///    [`output_slices`](Self::output_slices) and
///    [`advance_output`](Self::advance_output).
/// 4. Before waiting (for input, or for the transport to take output), the
///    caller passes the time to [`handle_timeout`](Self::handle_timeout),
///    which dates what happened since its last call (bytes heard from the
///    peer, a close begun) and does what is due, then waits no later than
///    [`poll_timeout`](Self::poll_timeout), and calls `handle_timeout` again
///    then. Only the close timeout and keepalive, if set, use time; without
///    them, these calls do nothing.
/// 5. When [`should_close_transport`](Self::should_close_transport) says so,
///    the caller writes what is left and closes the transport, then calls
///    [`transport_closed`](Self::transport_closed).
///
/// A protocol violation by the peer fails the connection: `next_message` returns
/// the error once, a close frame with the matching code is queued, and further
/// input is discarded.
///
/// ```
/// use duplex_proto::{Limits, Connection, Message, ReadyState};
///
/// let mut server = Connection::server(Limits::default());
/// // A masked text frame "Hello" from the client (RFC 6455 section 5.7).
/// server.receive(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
/// assert_eq!(server.next_message().unwrap(), Some(Message::text("Hello")));
/// assert_eq!(server.next_message().unwrap(), None);
///
/// server.send(Message::text("Hi")).unwrap();
/// assert_eq!(&server.take_output().unwrap()[..], b"\x81\x02Hi");
/// assert_eq!(server.ready_state(), ReadyState::Open);
/// ```
// In declared order (`repr(C)`), with what a send looks at last: the output
// queue's length, the message being sent, the close frames and the flags.
// A broadcast to many connections reads these on each one, and together they
// share one or two cache lines instead of lying at both ends of the struct.
#[repr(C)]
pub struct Connection {
    config: Limits,
    /// Masking keys; only a client has one.
    mask_source: Option<Box<dyn MaskSource>>,

    read_buf: BytesMut,
    decoder: FrameDecoder,
    /// The message being received, from its first frame's header on.
    incoming: Option<Incoming>,
    /// permessage-deflate, once agreed.
    #[cfg(feature = "deflate")]
    deflate: Option<Box<Deflate>>,
    failure: Option<ProtocolError>,
    timers: Timers,

    output: Output,
    /// The fragmented message being sent, if any.
    outgoing: Option<Outgoing>,
    /// The close frames sent and received, boxed: each connection has them
    /// once, at its end, and an idle connection is the smaller for it.
    close_sent: Option<Box<CloseStatus>>,
    close_received: Option<Box<CloseStatus>>,
    role: Role,
    transport_closed: bool,
    /// No more input will be read: a close frame was received, the connection
    /// failed, or the transport closed.
    input_done: bool,
    /// The transport reported end of input; buffered bytes may remain.
    eof: bool,
}

#[cfg(feature = "deflate")]
struct Deflate {
    params: crate::deflate::DeflateParams,
    deflater: crate::deflate::Deflater,
    inflater: crate::deflate::Inflater,
}

impl Connection {
    /// The server end of a connection.
    pub fn server(config: Limits) -> Self {
        Connection::new(Role::Server, config, None)
    }

    /// The client end of a connection, masking with [`ThreadRngMask`].
    ///
    /// [`ThreadRngMask`]: crate::rng::ThreadRngMask
    #[cfg(feature = "os-rng")]
    pub fn client(config: Limits) -> Self {
        Connection::client_with_mask_source(config, Box::new(crate::rng::ThreadRngMask))
    }

    /// The client end of a connection, masking with keys from `mask_source`.
    pub fn client_with_mask_source(config: Limits, mask_source: Box<dyn MaskSource>) -> Self {
        Connection::new(Role::Client, config, Some(mask_source))
    }

    fn new(role: Role, config: Limits, mask_source: Option<Box<dyn MaskSource>>) -> Self {
        Connection {
            role,
            decoder: FrameDecoder::new(role, config.max_frame_size),
            config,
            mask_source,
            read_buf: BytesMut::new(),
            incoming: None,
            input_done: false,
            eof: false,
            output: Output::default(),
            outgoing: None,
            #[cfg(feature = "deflate")]
            deflate: None,
            close_sent: None,
            close_received: None,
            failure: None,
            transport_closed: false,
            timers: Timers::default(),
        }
    }

    /// This end's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The limits this connection enforces.
    pub fn limits(&self) -> &Limits {
        &self.config
    }

    /// Turns on permessage-deflate with the parameters the opening handshake
    /// agreed (see [`deflate`](crate::deflate)). Call it before any frame is
    /// exchanged.
    #[cfg(feature = "deflate")]
    pub fn set_deflate(&mut self, params: crate::deflate::DeflateParams) {
        self.decoder.allow_rsv(RSV1);
        self.deflate = Some(Box::new(Deflate {
            deflater: crate::deflate::Deflater::new(&params),
            inflater: crate::deflate::Inflater::new(&params),
            params,
        }));
    }

    /// The permessage-deflate parameters in force, if compression was agreed.
    #[cfg(feature = "deflate")]
    pub fn deflate_params(&self) -> Option<&crate::deflate::DeflateParams> {
        self.deflate.as_ref().map(|d| &d.params)
    }

    fn compression_agreed(&self) -> bool {
        #[cfg(feature = "deflate")]
        return self.deflate.is_some();
        #[cfg(not(feature = "deflate"))]
        return false;
    }

    // ----- closing and state -----

    /// Whether the caller should, after writing the queued output, close the
    /// transport: after a failure (RFC 6455 section 7.1.7), and on the server once
    /// both close frames are exchanged (section 7.1.1: the server closes the TCP
    /// connection first). A client whose close handshake is done waits for the
    /// server to close, with a timeout of the caller's choosing.
    pub fn should_close_transport(&self) -> bool {
        !self.transport_closed
            && (self.failure.is_some()
                || self.timers.expired.is_some()
                || (self.role == Role::Server && self.is_close_handshake_done()))
    }

    /// Whether close frames have been both sent and received.
    pub fn is_close_handshake_done(&self) -> bool {
        self.close_sent.is_some() && self.close_received.is_some()
    }

    /// Reports that the transport is closed; the connection is then
    /// [`Closed`](ReadyState::Closed). Unwritten output and unread input are
    /// dropped.
    pub fn transport_closed(&mut self) {
        self.transport_closed = true;
        self.stop_input();
        self.output = Output::default();
    }

    /// The connection's state.
    pub fn ready_state(&self) -> ReadyState {
        if self.transport_closed {
            ReadyState::Closed
        } else if self.close_sent.is_some() || self.close_received.is_some() {
            ReadyState::Closing
        } else {
            ReadyState::Open
        }
    }

    /// The close frame received from the peer, if one was: its code and
    /// reason, or [`CloseStatus::Empty`] for a frame without a code.
    pub fn received_close(&self) -> Option<&CloseStatus> {
        self.close_received.as_deref()
    }

    /// The close frame this end sent, as [`received_close`](Self::received_close).
    pub fn sent_close(&self) -> Option<&CloseStatus> {
        self.close_sent.as_deref()
    }

    /// The protocol violation that failed the connection, if one did.
    pub fn failure(&self) -> Option<&ProtocolError> {
        self.failure.as_ref()
    }

    /// How the connection ended, once it is [`Closed`](ReadyState::Closed).
    pub fn close_info(&self) -> Option<CloseInfo> {
        if !self.transport_closed {
            return None;
        }
        let (code, reason) = match self.close_received.as_deref() {
            Some(CloseStatus::Frame(frame)) => (frame.code, frame.reason.clone()),
            Some(CloseStatus::Empty) => (CloseCode::NO_STATUS, Utf8Bytes::default()),
            None => (CloseCode::ABNORMAL, Utf8Bytes::default()),
        };
        Some(CloseInfo {
            code,
            reason,
            was_clean: self.is_close_handshake_done() && self.failure.is_none(),
        })
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.role)
            .field("ready_state", &self.ready_state())
            .field("buffered_input", &self.read_buf.len())
            .field("buffered_output", &self.output.len())
            .field("close_sent", &self.close_sent)
            .field("close_received", &self.close_received)
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}
