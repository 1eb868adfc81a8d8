//! Helpers for the connection tests: frames as bytes, and what a connection did.
#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use duplex_proto::frame::{Frame, FrameDecoder, FrameHeader, OpCode, Role};
use duplex_proto::rng::SequenceMask;
use duplex_proto::{CloseCode, Connection, Limits, Message, ProtocolError, ReadyState};

/// A connection in `role` with default limits and, for a client, a
/// deterministic mask.
pub fn conn(role: Role) -> Connection {
    conn_with(role, Limits::default())
}

pub fn conn_with(role: Role, config: Limits) -> Connection {
    match role {
        Role::Server => Connection::server(config),
        Role::Client => {
            Connection::client_with_mask_source(config, Box::new(SequenceMask::new(42)))
        }
    }
}

/// The role at the other end.
pub fn peer_of(role: Role) -> Role {
    match role {
        Role::Client => Role::Server,
        Role::Server => Role::Client,
    }
}

/// The bytes of a frame as the peer of `role` sends it: masked when the peer is
/// a client.
pub fn frame_to(role: Role, fin: bool, rsv: u8, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mask = (role == Role::Server).then_some([0x11, 0x22, 0x33, 0x44]);
    let frame = Frame {
        header: FrameHeader {
            fin,
            rsv,
            opcode,
            mask,
            payload_len: payload.len() as u64,
        },
        payload: Bytes::copy_from_slice(payload),
    };
    let mut out = BytesMut::new();
    frame.encode(&mut out);
    out.to_vec()
}

/// A whole, final frame to `role`.
pub fn msg_to(role: Role, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    frame_to(role, true, 0, opcode, payload)
}

/// A close frame payload.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

/// Every result `next_message` gives until `Ok(None)`.
pub fn drain(conn: &mut Connection) -> Vec<Result<Message, ProtocolError>> {
    let mut out = Vec::new();
    loop {
        match conn.next_message() {
            Ok(Some(m)) => out.push(Ok(m)),
            Ok(None) => return out,
            Err(e) => out.push(Err(e)),
        }
    }
}

/// Feeds `bytes` and returns every result.
pub fn feed(conn: &mut Connection, bytes: &[u8]) -> Vec<Result<Message, ProtocolError>> {
    conn.receive(bytes);
    drain(conn)
}

/// The frames a connection has queued, decoded as its peer would.
pub fn sent_frames(conn: &mut Connection) -> Vec<Frame> {
    let mut wire = BytesMut::new();
    while let Some(chunk) = conn.take_output() {
        wire.extend_from_slice(&chunk);
    }
    let mut decoder = FrameDecoder::new(peer_of(conn.role()), usize::MAX);
    let mut frames = Vec::new();
    while let Some(frame) = decoder.decode(&mut wire).expect("our own output decodes") {
        frames.push(frame);
    }
    assert!(wire.is_empty(), "trailing partial frame in output");
    frames
}

/// Asserts that feeding `bytes` to a fresh connection in `role` fails it with
/// `error`, that the close frame queued carries `code`, that the connection then
/// wants the transport closed, and that later input is ignored.
pub fn assert_fails(role: Role, bytes: &[u8], error: ProtocolError, code: CloseCode) {
    assert_fails_with(conn(role), bytes, error, code);
}

pub fn assert_fails_with(mut c: Connection, bytes: &[u8], error: ProtocolError, code: CloseCode) {
    let results = feed(&mut c, bytes);
    assert_eq!(
        results.last(),
        Some(&Err(error.clone())),
        "results: {results:?}"
    );
    assert_eq!(error.close_code(), code);
    let frames = sent_frames(&mut c);
    let close = frames.last().expect("a close frame was queued");
    assert_eq!(close.header.opcode, OpCode::Close);
    assert_eq!(
        u16::from_be_bytes([close.payload[0], close.payload[1]]),
        code.0
    );
    assert!(c.should_close_transport());
    assert_eq!(c.ready_state(), ReadyState::Closing);
    assert_eq!(c.failure(), Some(&error));
    // Input after the failure is discarded; nothing more is reported.
    let more = msg_to(c.role(), OpCode::Text, b"ignored");
    assert!(feed(&mut c, &more).is_empty());
}
