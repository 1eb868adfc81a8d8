//! Keepalive and the close timeout, with time driven by hand: the tests
//! pass instants to `handle_timeout` and read deadlines from
//! `poll_timeout`; no runtime, no sleeping.

mod util;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use duplex_proto::frame::{OpCode, Role};
use duplex_proto::{
    BufferPool, CloseCode, Connection, Expired, Keepalive, Message, READ_ROOM, ReadyState,
};
use util::{close_payload, conn, feed, msg_to, sent_frames};

const INTERVAL: Duration = Duration::from_secs(20);
const TIMEOUT: Duration = Duration::from_secs(10);
const SECOND: Duration = Duration::from_secs(1);

/// A connection of `role` with keepalive on, its clock started at `t0`.
fn with_keepalive(role: Role, t0: Instant) -> Connection {
    let mut c = conn(role);
    c.set_keepalive(Some(Keepalive::new(INTERVAL, TIMEOUT)));
    assert_eq!(c.handle_timeout(t0), None);
    c
}

/// The payload of the single ping `c` queued.
fn sent_ping(c: &mut Connection) -> Vec<u8> {
    let frames = sent_frames(c);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0].header.opcode, OpCode::Ping);
    frames[0].payload.to_vec()
}

#[test]
fn no_timer_runs_unless_one_is_set() {
    let t0 = Instant::now();
    let mut c = conn(Role::Server);
    assert_eq!(c.handle_timeout(t0), None);
    c.close(CloseCode::NORMAL, "").unwrap();
    assert_eq!(c.handle_timeout(t0 + 3600 * SECOND), None);
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn the_clock_is_wanted_only_while_a_timer_can_run() {
    let t0 = Instant::now();
    // Neither timer set: never.
    let mut c = conn(Role::Server);
    assert!(!c.wants_timeout());
    c.close(CloseCode::NORMAL, "").unwrap();
    assert!(!c.wants_timeout());

    // A close timeout: from the first close frame on, until it fires.
    let mut c = conn(Role::Server);
    c.set_close_timeout(Some(TIMEOUT));
    assert!(!c.wants_timeout(), "open, no keepalive");
    c.close(CloseCode::NORMAL, "").unwrap();
    assert!(c.wants_timeout());
    assert_eq!(c.handle_timeout(t0), None);
    assert_eq!(c.poll_timeout(), Some(t0 + TIMEOUT));
    assert_eq!(c.handle_timeout(t0 + TIMEOUT), Some(Expired::Close));
    assert!(!c.wants_timeout(), "fired once, and done");

    // Keepalive: all along.
    let c = with_keepalive(Role::Client, t0);
    assert!(c.wants_timeout());
}

#[test]
fn a_silent_peer_is_pinged_after_the_interval_and_given_up_after_the_timeout() {
    for role in [Role::Server, Role::Client] {
        let t0 = Instant::now();
        let mut c = with_keepalive(role, t0);
        assert_eq!(c.poll_timeout(), Some(t0 + INTERVAL));
        // Early: nothing happens.
        assert_eq!(c.handle_timeout(t0 + INTERVAL - SECOND), None);
        assert!(!c.has_output());

        assert_eq!(c.handle_timeout(t0 + INTERVAL), None);
        assert_eq!(sent_ping(&mut c), 1u64.to_be_bytes());
        assert_eq!(c.poll_timeout(), Some(t0 + INTERVAL + TIMEOUT));

        let end = t0 + INTERVAL + TIMEOUT;
        assert_eq!(c.handle_timeout(end), Some(Expired::Keepalive));
        assert_eq!(c.expired(), Some(Expired::Keepalive));
        // Once: the timer is spent.
        assert_eq!(c.handle_timeout(end + SECOND), None);
        assert_eq!(c.poll_timeout(), None);
        // Why, for a peer that still reads: 1011 (RFC 6455 section 7.4.1).
        let frames = sent_frames(&mut c);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].header.opcode, OpCode::Close);
        assert_eq!(frames[0].payload[..2], 1011u16.to_be_bytes());
        assert!(c.should_close_transport());
        assert_eq!(c.ready_state(), ReadyState::Closing);
    }
}

#[test]
fn bytes_from_the_peer_put_the_ping_off() {
    let t0 = Instant::now();
    let mut c = with_keepalive(Role::Server, t0);
    let heard = t0 + 15 * SECOND;
    feed(&mut c, &msg_to(Role::Server, OpCode::Text, b"hi"));
    // Dated by the next call.
    assert_eq!(c.handle_timeout(heard), None);
    assert_eq!(c.poll_timeout(), Some(heard + INTERVAL));
    assert_eq!(c.handle_timeout(t0 + INTERVAL), None);
    assert!(!c.has_output(), "no ping 5 s after hearing from the peer");
    assert_eq!(c.handle_timeout(heard + INTERVAL), None);
    assert_eq!(sent_ping(&mut c), 1u64.to_be_bytes());
}

#[test]
fn bytes_after_the_ping_put_the_deadline_off_and_the_pong_is_not_reported() {
    let t0 = Instant::now();
    let mut c = with_keepalive(Role::Server, t0);
    c.handle_timeout(t0 + INTERVAL);
    let ping = sent_ping(&mut c);

    // Something else arrives first: the peer is alive, give it more time.
    let later = t0 + INTERVAL + 5 * SECOND;
    feed(&mut c, &msg_to(Role::Server, OpCode::Binary, b"data"));
    assert_eq!(c.handle_timeout(later), None);
    assert_eq!(c.poll_timeout(), Some(later + TIMEOUT));

    // The pong to our ping is swallowed; another pong is the application's.
    let pong = msg_to(Role::Server, OpCode::Pong, &ping);
    assert_eq!(feed(&mut c, &pong), []);
    let other = msg_to(Role::Server, OpCode::Pong, b"theirs");
    assert_eq!(feed(&mut c, &other), [Ok(Message::Pong("theirs".into()))]);
    let answered = later + SECOND;
    assert_eq!(c.handle_timeout(answered), None);
    assert_eq!(c.poll_timeout(), Some(answered + INTERVAL));
    assert_eq!(c.handle_timeout(answered + INTERVAL), None);
    assert_eq!(sent_ping(&mut c), 2u64.to_be_bytes());
}

#[test]
fn the_close_timeout_counts_from_the_first_close_frame() {
    for role in [Role::Server, Role::Client] {
        let t0 = Instant::now();
        let mut c = conn(role);
        c.set_close_timeout(Some(3 * SECOND));
        assert_eq!(c.handle_timeout(t0), None);
        assert_eq!(c.poll_timeout(), None, "open: no deadline");

        let closed = t0 + 60 * SECOND;
        c.close(CloseCode::NORMAL, "bye").unwrap();
        assert_eq!(c.handle_timeout(closed), None);
        assert_eq!(c.poll_timeout(), Some(closed + 3 * SECOND));
        assert_eq!(c.handle_timeout(closed + 2 * SECOND), None);
        assert_eq!(c.handle_timeout(closed + 3 * SECOND), Some(Expired::Close));
        assert!(c.should_close_transport());
        assert!(!c.is_close_handshake_done());
        c.transport_closed();
        assert!(!c.close_info().unwrap().was_clean);
        assert_eq!(c.poll_timeout(), None);
    }
}

#[test]
fn the_close_timeout_also_runs_after_the_peer_closes_first() {
    let t0 = Instant::now();
    let mut c = conn(Role::Client);
    c.set_close_timeout(Some(3 * SECOND));
    let close = msg_to(Role::Client, OpCode::Close, &close_payload(1000, ""));
    feed(&mut c, &close);
    assert!(c.is_close_handshake_done());
    // A client waits for the server to close the TCP connection (section
    // 7.1.1), and no longer than the close timeout.
    assert!(!c.should_close_transport());
    assert_eq!(c.handle_timeout(t0), None);
    assert_eq!(c.handle_timeout(t0 + 3 * SECOND), Some(Expired::Close));
    assert!(c.should_close_transport());
}

#[test]
fn keepalive_gives_way_to_the_close_timeout_once_closing() {
    let t0 = Instant::now();
    let mut c = with_keepalive(Role::Server, t0);
    c.set_close_timeout(Some(60 * SECOND));
    c.close(CloseCode::NORMAL, "").unwrap();
    sent_frames(&mut c);
    assert_eq!(c.handle_timeout(t0 + SECOND), None);
    assert_eq!(c.poll_timeout(), Some(t0 + 61 * SECOND));
    assert_eq!(c.handle_timeout(t0 + INTERVAL + TIMEOUT), None);
    assert!(!c.has_output(), "no ping after our close frame");
}

/// A pool that counts what it lends and gets back.
#[derive(Default)]
struct CountingPool {
    taken: usize,
    given: Vec<usize>,
}

impl BufferPool for CountingPool {
    fn take(&mut self) -> BytesMut {
        self.taken += 1;
        BytesMut::with_capacity(2 * READ_ROOM)
    }

    fn give(&mut self, buf: BytesMut) {
        assert!(buf.is_empty());
        self.given.push(buf.capacity());
    }
}

/// Reads `bytes` as a transport would: into the connection's buffer, then a
/// read that finds nothing more.
fn read(c: &mut Connection, pool: &mut CountingPool, bytes: &[u8]) {
    c.read_buffer(pool).extend_from_slice(bytes);
    c.read_done(bytes.len(), pool);
}

#[test]
fn the_read_buffer_goes_back_to_the_pool_while_no_frame_is_partly_received() {
    let mut pool = CountingPool::default();
    let mut c = conn(Role::Server);
    read(
        &mut c,
        &mut pool,
        &msg_to(Role::Server, OpCode::Text, b"hi"),
    );
    assert_eq!(c.next_message().unwrap(), Some(Message::text("hi")));
    assert_eq!(c.next_message().unwrap(), None);
    // The next read finds nothing: the buffer goes back.
    c.read_buffer(&mut pool);
    c.read_done(0, &mut pool);
    assert_eq!(c.read_buffer_capacity(), 0);
    assert_eq!((pool.taken, pool.given.len()), (1, 1));
}

#[test]
fn a_partly_received_frame_keeps_a_buffer_of_its_size_only() {
    let mut pool = CountingPool::default();
    let mut c = conn(Role::Server);
    let wire = msg_to(Role::Server, OpCode::Binary, &[7; 100]);
    read(&mut c, &mut pool, &wire[..50]);
    assert_eq!(c.next_message().unwrap(), None);
    c.read_buffer(&mut pool);
    c.read_done(0, &mut pool);
    assert!(
        c.read_buffer_capacity() < 1024,
        "{}",
        c.read_buffer_capacity()
    );
    // The large buffer went back (less the header the decoder consumed).
    assert_eq!(pool.given.len(), 1);
    assert!(pool.given[0] > READ_ROOM, "{:?}", pool.given);
    read(&mut c, &mut pool, &wire[50..]);
    assert_eq!(
        c.next_message().unwrap(),
        Some(Message::binary(vec![7; 100]))
    );
}

#[test]
fn bytes_read_after_a_close_frame_are_dropped() {
    let mut pool = CountingPool::default();
    let mut c = conn(Role::Server);
    let mut wire = msg_to(Role::Server, OpCode::Close, &close_payload(1000, ""));
    wire.extend_from_slice(&msg_to(Role::Server, OpCode::Text, b"late"));
    read(&mut c, &mut pool, &wire);
    assert!(matches!(c.next_message(), Ok(Some(Message::Close(_)))));
    read(&mut c, &mut pool, b"more");
    assert_eq!(c.next_message().unwrap(), None);
    assert_eq!(c.read_buffer_capacity(), 0);
}
