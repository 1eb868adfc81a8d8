//! The read buffer a connection holds while it waits, over in-memory pipes.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use duplex_proto::Role;
use duplex_proto::frame::{Frame, FrameHeader, OpCode};
use futures_core::Stream;
use tokio::io::{AsyncWriteExt, DuplexStream};

use super::WebSocket;
use crate::config::WebSocketConfig;
use crate::error::Result;
use duplex_proto::Message;

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
    ws.core.conn.read_buffer_capacity()
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
    assert!(held < 1024, "{held} bytes held for a 106-byte frame");
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
