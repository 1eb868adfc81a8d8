//! Arbitrary bytes from the peer into a `Connection`, split into reads.
//!
//! Input layout: `[flags, limit, split_seed, wire bytes...]`.
//!
//! - `flags` bit 0: 0 = server, 1 = client (deterministic `SequenceMask`).
//! - `flags` bits 1-2: limits. 0 = `Limits::default()`; 1 = `max_frame_size =
//!   limit`; 2 = `max_message_size = limit`; 3 = frame `limit`, message `2*limit`.
//! - `flags` bit 3: echo every Text/Binary message back with `send`.
//! - `flags` bit 4: echo instead with `send_fragment`, in two fragments split at
//!   the middle byte (a text split may cut a code point, which is allowed).
//! - `flags` bit 5: start our own closing handshake before any input arrives.
//! - `flags` bit 6: append every other read through `read_buffer()` and
//!   `read_done()` instead of `receive()`.
//! - `flags` bit 7: also answer every message with a ping of its first bytes.
//! - `split_seed`: seeds the generator that chooses the read sizes (0 included).
//!
//! Invariants checked (assert!):
//! 1. The whole input in one read and the same input in pieces give the same
//!    sequence of results (messages and the error), the same output bytes and
//!    the same final close/failure state.
//! 2. At most one error; after it `next_message` returns `Ok(None)` and no
//!    message follows; `should_close_transport()` is true and `failure()` holds it.
//! 3. Nothing follows a received Close message; the close handshake is then done.
//! 4. Received messages respect the limits and RFC 6455 (text is UTF-8, control
//!    payloads at most 125 bytes, close codes sendable).
//! 5. `buffered_amount()` equals the bytes that `take_output()` then hands out.
//! 6. The output decodes with a `FrameDecoder` of the opposite role and no size
//!    limit, ends on a frame boundary, has nothing after a close frame, and every
//!    close frame parses; a peer `Connection` reads all of it without error.
//! 7. After `receive_eof()` and a drain the connection is `Closed`, with no output.
//! 8. Sending (echo, fragments, pings) never panics and fails only with
//!    `SendError::Closed` once our close is sent.
#![no_main]

use bytes::BytesMut;
use duplex_proto::frame::{FrameDecoder, MAX_CONTROL_PAYLOAD, OpCode, Role};
use duplex_proto::rng::SequenceMask;
use duplex_proto::{
    CloseCode, CloseFrame, CloseStatus, Connection, Limits, Fragment, Message, NoPool,
    ProtocolError, ReadyState, SendError,
};
use libfuzzer_sys::fuzz_target;

#[derive(Clone, Copy, Debug)]
struct Setup {
    role: Role,
    max_frame: usize,
    max_message: usize,
    echo: bool,
    echo_fragments: bool,
    close_first: bool,
    use_read_buffer: bool,
    ping_back: bool,
}

impl Setup {
    fn new(flags: u8, limit: u8) -> Setup {
        let def = Limits::default();
        let limit = usize::from(limit);
        let (max_frame, max_message) = match (flags >> 1) & 0b11 {
            0 => (def.max_frame_size, def.max_message_size),
            1 => (limit, def.max_message_size),
            2 => (def.max_frame_size, limit),
            _ => (limit, limit * 2),
        };
        Setup {
            role: if flags & 1 == 0 {
                Role::Server
            } else {
                Role::Client
            },
            max_frame,
            max_message,
            echo: flags & 0x08 != 0,
            echo_fragments: flags & 0x10 != 0,
            close_first: flags & 0x20 != 0,
            use_read_buffer: flags & 0x40 != 0,
            ping_back: flags & 0x80 != 0,
        }
    }

    fn config(&self) -> Limits {
        Limits::default()
            .max_frame_size(self.max_frame)
            .max_message_size(self.max_message)
    }
}

fn connection(role: Role, config: Limits) -> Connection {
    match role {
        Role::Server => Connection::server(config),
        Role::Client => Connection::client_with_mask_source(config, Box::new(SequenceMask::new(1))),
    }
}

fn opposite(role: Role) -> Role {
    match role {
        Role::Server => Role::Client,
        Role::Client => Role::Server,
    }
}

/// Read sizes: a small xorshift generator seeded from the input; sizes include 0.
struct Splits {
    state: u32,
    max: usize,
}

impl Splits {
    fn new(seed: u8) -> Splits {
        // The low two bits choose the size range, the rest seed the generator.
        let max = match seed & 0b11 {
            0 => 1,
            1 => 8,
            2 => 64,
            _ => 1024,
        };
        Splits {
            state: 0x9e37_79b9 ^ (u32::from(seed) << 8 | 1),
            max,
        }
    }

    fn next(&mut self) -> usize {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.state = x;
        if self.max == 1 {
            1
        } else {
            x as usize % (self.max + 1)
        }
    }
}

#[derive(Debug, PartialEq)]
struct Outcome {
    results: Vec<Result<Message, ProtocolError>>,
    output: Vec<u8>,
    sent_close: Option<CloseStatus>,
    received_close: Option<CloseStatus>,
    failure: Option<ProtocolError>,
}

struct Run {
    setup: Setup,
    conn: Connection,
    results: Vec<Result<Message, ProtocolError>>,
    output: Vec<u8>,
    errored: bool,
    closed_received: bool,
    eof: bool,
}

impl Run {
    fn new(setup: Setup) -> Run {
        let mut conn = connection(setup.role, setup.config());
        if setup.close_first {
            conn.close(CloseCode::NORMAL, "bye")
                .expect("close on a fresh connection");
        }
        let mut run = Run {
            setup,
            conn,
            results: Vec::new(),
            output: Vec::new(),
            errored: false,
            closed_received: false,
            eof: false,
        };
        // Take the close frame now: EOF (transport closed) drops unwritten output,
        // and a run with no reads would otherwise never take it.
        run.take_output();
        run
    }

    fn feed(&mut self, chunk: &[u8], index: usize) {
        if self.setup.use_read_buffer && index % 2 == 1 {
            self.conn.read_buffer(&mut NoPool).extend_from_slice(chunk);
            self.conn.read_done(chunk.len(), &mut NoPool);
        } else {
            self.conn.receive(chunk);
        }
        self.drain();
        self.take_output();
    }

    fn take_output(&mut self) {
        let buffered = self.conn.buffered_amount();
        assert_eq!(buffered == 0, !self.conn.has_output());
        let mut taken = 0;
        while let Some(chunk) = self.conn.take_output() {
            assert!(!chunk.is_empty(), "take_output handed out an empty chunk");
            taken += chunk.len();
            self.output.extend_from_slice(&chunk);
        }
        assert_eq!(
            taken, buffered,
            "buffered_amount disagrees with take_output"
        );
        assert_eq!(self.conn.buffered_amount(), 0);
    }

    fn drain(&mut self) {
        loop {
            match self.conn.next_message() {
                Ok(None) => break,
                Ok(Some(message)) => {
                    assert!(!self.errored, "message {message:?} after an error");
                    assert!(!self.closed_received, "message {message:?} after a close");
                    self.check_message(&message);
                    if let Message::Close(_) = message {
                        self.closed_received = true;
                        assert!(self.conn.is_close_handshake_done());
                        assert_eq!(self.conn.ready_state(), ReadyState::Closing);
                        if self.setup.role == Role::Server {
                            assert!(self.conn.should_close_transport());
                        }
                    }
                    self.answer(&message);
                    self.results.push(Ok(message));
                }
                Err(err) => {
                    assert!(!self.errored, "second error {err:?}");
                    assert!(!self.closed_received, "error {err:?} after a close");
                    self.errored = true;
                    assert!(self.conn.should_close_transport(), "no close after {err:?}");
                    assert_eq!(self.conn.failure(), Some(&err));
                    assert!(self.conn.sent_close().is_some());
                    assert!(!self.conn.wants_input());
                    assert_eq!(self.conn.next_message(), Ok(None));
                    assert_eq!(self.conn.next_message(), Ok(None));
                    self.results.push(Err(err));
                    break;
                }
            }
        }
        // Until the transport is reported closed (EOF here), a failed connection
        // keeps asking for it to be closed.
        if self.errored && !self.eof {
            assert!(self.conn.should_close_transport());
        }
    }

    fn check_message(&self, message: &Message) {
        match message {
            Message::Text(text) => {
                assert!(std::str::from_utf8(text.as_bytes()).is_ok());
                assert!(text.len() <= self.setup.max_message);
            }
            Message::Binary(data) => assert!(data.len() <= self.setup.max_message),
            Message::Ping(data) | Message::Pong(data) => {
                assert!(data.len() <= MAX_CONTROL_PAYLOAD)
            }
            Message::Close(None) => {}
            Message::Close(Some(frame)) => {
                assert!(
                    frame.code.is_sendable(),
                    "received close code {:?}",
                    frame.code
                );
                assert!(frame.payload_len() <= MAX_CONTROL_PAYLOAD);
                assert!(frame.check_sendable().is_ok());
            }
        }
    }

    fn answer(&mut self, message: &Message) {
        let closed = self.conn.sent_close().is_some();
        let check = |result: Result<(), SendError>, what: &str| match result {
            Ok(()) => assert!(!closed, "{what} accepted after our close"),
            Err(SendError::Closed) => assert!(closed, "{what}: Closed before our close"),
            Err(err) => panic!("{what} of a received message failed: {err:?}"),
        };
        if message.is_text() || message.is_binary() {
            if self.setup.echo_fragments {
                let (kind, data) = match message.clone() {
                    Message::Text(t) => (Fragment::Text, t.into_bytes()),
                    Message::Binary(b) => (Fragment::Binary, b),
                    _ => unreachable!(),
                };
                let mid = data.len() / 2;
                check(
                    self.conn.send_fragment(kind, data.slice(..mid), false),
                    "first fragment",
                );
                if !closed {
                    check(
                        self.conn
                            .send_fragment(Fragment::Continuation, data.slice(mid..), true),
                        "last fragment",
                    );
                }
            } else if self.setup.echo {
                check(self.conn.send(message.clone()), "echo");
            }
        }
        if self.setup.ping_back {
            let data = message.clone().into_data();
            let len = data.len().min(MAX_CONTROL_PAYLOAD);
            check(self.conn.send(Message::Ping(data.slice(..len))), "ping");
            let long = bytes::Bytes::from(vec![0u8; MAX_CONTROL_PAYLOAD + 1]);
            match self.conn.send(Message::Pong(long)) {
                Err(SendError::ControlPayloadTooLong(126)) | Err(SendError::Closed) => {}
                other => panic!("126-byte pong: {other:?}"),
            }
        }
    }

    fn finish(mut self) -> Outcome {
        self.conn.receive_eof();
        self.eof = true;
        assert!(!self.conn.wants_input());
        let before = self.results.len();
        self.drain();
        // Whatever arrived was decoded before EOF; EOF adds no result.
        assert_eq!(self.results.len(), before, "EOF produced a result");
        assert_eq!(self.conn.ready_state(), ReadyState::Closed);
        assert!(!self.conn.should_close_transport());
        assert!(self.conn.take_output().is_none());
        assert_eq!(self.conn.next_message(), Ok(None));
        let info = self
            .conn
            .close_info()
            .expect("closed connection has close info");
        if self.errored {
            assert!(!info.was_clean);
        }
        Outcome {
            results: self.results,
            output: self.output,
            sent_close: self.conn.sent_close().cloned(),
            received_close: self.conn.received_close().cloned(),
            failure: self.conn.failure().cloned(),
        }
    }
}

/// The bytes this end wrote must be valid frames for the other end.
fn check_output(role: Role, output: &[u8]) {
    let peer = opposite(role);
    let mut decoder = FrameDecoder::new(peer, usize::MAX);
    let mut buf = BytesMut::from(output);
    let mut close_seen = false;
    loop {
        match decoder.decode(&mut buf) {
            Ok(Some(frame)) => {
                assert!(!close_seen, "frame {:?} after our close", frame.header);
                assert_eq!(frame.header.payload_len, frame.payload.len() as u64);
                assert_eq!(frame.header.rsv, 0);
                if frame.header.opcode.is_control() {
                    assert!(frame.payload.len() <= MAX_CONTROL_PAYLOAD);
                }
                if frame.header.opcode == OpCode::Close {
                    close_seen = true;
                    if let Err(err) = CloseFrame::parse(&frame.payload) {
                        panic!("our close frame {:?} does not parse: {err}", frame.payload);
                    }
                }
            }
            Ok(None) => break,
            Err(err) => panic!("our output does not decode as {peer:?}: {err}"),
        }
    }
    assert!(
        buf.is_empty() && !decoder.is_mid_frame(),
        "output ends inside a frame"
    );

    // A peer connection with no limits reads all of it without a protocol error.
    let unlimited = Limits::default()
        .max_frame_size(usize::MAX)
        .max_message_size(usize::MAX);
    let mut peer_conn = connection(peer, unlimited);
    peer_conn.receive(output);
    loop {
        match peer_conn.next_message() {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(err) => panic!("peer {peer:?} rejects our output: {err}"),
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let [flags, limit, split_seed, data @ ..] = input else {
        return;
    };
    let setup = Setup::new(*flags, *limit);

    // All at once.
    let mut whole = Run::new(setup);
    whole.feed(data, 0);
    let whole = whole.finish();

    // In pieces.
    let mut pieces = Run::new(setup);
    let mut splits = Splits::new(*split_seed);
    let mut rest = data;
    let mut index = 0;
    while !rest.is_empty() {
        let n = splits.next().min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        pieces.feed(chunk, index);
        rest = tail;
        index += 1;
    }
    let pieces = pieces.finish();

    assert_eq!(
        whole.results, pieces.results,
        "results depend on how reads split"
    );
    assert_eq!(whole, pieces, "state or output depends on how reads split");

    check_output(setup.role, &whole.output);
});
