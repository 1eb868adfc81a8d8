//! The example frames of RFC 6455 section 5.7, byte for byte, decoded and
//! produced.

mod util;

use bytes::Bytes;
use duplex_proto::frame::{OpCode, Role};
use duplex_proto::rng::FixedMask;
use duplex_proto::{Connection, Fragment, Limits, Message};
use util::{conn, drain, feed, sent_frames};

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn masked_client() -> Connection {
    Connection::client_with_mask_source(Limits::default(), Box::new(FixedMask(MASK)))
}

fn output(conn: &mut Connection) -> Vec<u8> {
    let mut all = Vec::new();
    while let Some(chunk) = conn.take_output() {
        all.extend_from_slice(&chunk);
    }
    all
}

#[test]
fn single_frame_unmasked_text() {
    let wire = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    assert_eq!(
        feed(&mut conn(Role::Client), &wire),
        [Ok(Message::text("Hello"))]
    );

    let mut server = conn(Role::Server);
    server.send(Message::text("Hello")).unwrap();
    assert_eq!(output(&mut server), wire);
}

#[test]
fn single_frame_masked_text() {
    let wire = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    assert_eq!(
        feed(&mut conn(Role::Server), &wire),
        [Ok(Message::text("Hello"))]
    );

    let mut client = masked_client();
    client.send(Message::text("Hello")).unwrap();
    assert_eq!(output(&mut client), wire);
}

#[test]
fn fragmented_unmasked_text() {
    let first = [0x01, 0x03, 0x48, 0x65, 0x6c];
    let second = [0x80, 0x02, 0x6c, 0x6f];
    let mut client = conn(Role::Client);
    assert!(feed(&mut client, &first).is_empty());
    assert_eq!(feed(&mut client, &second), [Ok(Message::text("Hello"))]);

    let mut server = conn(Role::Server);
    server
        .send_fragment(Fragment::Text, Bytes::from_static(b"Hel"), false)
        .unwrap();
    server
        .send_fragment(Fragment::Continuation, Bytes::from_static(b"lo"), true)
        .unwrap();
    assert_eq!(output(&mut server), [&first[..], &second[..]].concat());
}

#[test]
fn unmasked_ping_and_masked_pong_reply() {
    let ping = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    let mut client = masked_client();
    assert_eq!(feed(&mut client, &ping), [Ok(Message::ping(&b"Hello"[..]))]);
    // The automatic reply is the section's masked pong example, exactly.
    assert_eq!(
        output(&mut client),
        [
            0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
        ]
    );

    let mut server = conn(Role::Server);
    server.send(Message::ping(&b"Hello"[..])).unwrap();
    assert_eq!(output(&mut server), ping);
}

#[test]
fn binary_256_bytes_uses_a_16_bit_length() {
    let payload: Vec<u8> = (0..=255).collect();
    let mut wire = vec![0x82, 0x7e, 0x01, 0x00];
    wire.extend_from_slice(&payload);
    assert_eq!(
        feed(&mut conn(Role::Client), &wire),
        [Ok(Message::binary(payload.clone()))]
    );

    let mut server = conn(Role::Server);
    server.send(Message::binary(payload)).unwrap();
    assert_eq!(output(&mut server), wire);
}

#[test]
fn binary_64_kib_uses_a_64_bit_length() {
    let payload = vec![0x42u8; 65536];
    let mut wire = vec![0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0];
    wire.extend_from_slice(&payload);
    assert_eq!(
        feed(&mut conn(Role::Client), &wire),
        [Ok(Message::binary(payload.clone()))]
    );

    let mut server = conn(Role::Server);
    server.send(Message::binary(payload)).unwrap();
    assert_eq!(output(&mut server), wire);
}

#[test]
fn every_example_split_at_every_byte() {
    let mut stream = vec![
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    stream.extend_from_slice(&[
        0x89, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ]);
    let expected = [Ok(Message::text("Hello")), Ok(Message::ping(&b"Hello"[..]))];
    for split in 0..=stream.len() {
        let mut server = conn(Role::Server);
        let mut got = feed(&mut server, &stream[..split]);
        got.extend(feed(&mut server, &stream[split..]));
        assert_eq!(got, expected, "split at {split}");
        // The ping was answered with an unmasked pong.
        let frames = sent_frames(&mut server);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].header.opcode, OpCode::Pong);
        assert_eq!(frames[0].header.mask, None);
        assert!(drain(&mut server).is_empty());
    }
}
