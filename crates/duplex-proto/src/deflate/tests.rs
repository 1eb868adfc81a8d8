use bytes::BytesMut;

use super::*;
use crate::frame::{FrameDecoder, OpCode, RSV1, Role};
use crate::handshake::Extension;
use crate::rng::SequenceMask;
use crate::{CloseCode, Connection, Limits, Message, ProtocolError};

fn ext(text: &str) -> Extension {
    let mut headers = http::HeaderMap::new();
    headers.insert("sec-websocket-extensions", text.parse().unwrap());
    let mut all = crate::handshake::parse_extensions(&headers).unwrap();
    assert_eq!(all.len(), 1, "{text}");
    all.remove(0)
}

fn exts(text: &str) -> Vec<Extension> {
    let mut headers = http::HeaderMap::new();
    headers.insert("sec-websocket-extensions", text.parse().unwrap());
    crate::handshake::parse_extensions(&headers).unwrap()
}

fn params() -> DeflateParams {
    DeflateParams {
        local_no_context_takeover: false,
        remote_no_context_takeover: false,
        local_max_window_bits: 15,
        remote_max_window_bits: 15,
        level: 6,
        threshold: 0,
    }
}

/// A client that receives unmasked server frames with deflate on.
fn client(params: DeflateParams) -> Connection {
    let mut c =
        Connection::client_with_mask_source(Limits::default(), Box::new(SequenceMask::new(1)));
    c.set_deflate(params);
    c
}

fn server(params: DeflateParams, config: Limits) -> Connection {
    let mut s = Connection::server(config);
    s.set_deflate(params);
    s
}

fn drain(c: &mut Connection) -> Vec<Result<Message, ProtocolError>> {
    let mut out = Vec::new();
    loop {
        match c.next_message() {
            Ok(Some(m)) => out.push(Ok(m)),
            Ok(None) => return out,
            Err(e) => out.push(Err(e)),
        }
    }
}

fn output(c: &mut Connection) -> Vec<u8> {
    let mut all = Vec::new();
    while let Some(chunk) = c.take_output() {
        all.extend_from_slice(&chunk);
    }
    all
}

fn close_code_sent(c: &mut Connection) -> u16 {
    let mut wire = BytesMut::from(&output(c)[..]);
    let peer = match c.role() {
        Role::Client => Role::Server,
        Role::Server => Role::Client,
    };
    let mut decoder = FrameDecoder::new(peer, usize::MAX);
    decoder.allow_rsv(RSV1);
    let mut last = None;
    while let Some(frame) = decoder.decode(&mut wire).unwrap() {
        last = Some(frame);
    }
    let frame = last.expect("a frame was sent");
    assert_eq!(frame.header.opcode, OpCode::Close);
    u16::from_be_bytes([frame.payload[0], frame.payload[1]])
}

// ----- RFC 7692 section 7.2.3: the examples -----

#[test]
fn rfc_7_2_3_1_a_message_compressed() {
    let mut c = client(params());
    c.receive(&[0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
    assert_eq!(drain(&mut c), [Ok(Message::text("Hello"))]);
}

#[test]
fn rfc_7_2_3_1_fragmented() {
    let mut c = client(params());
    c.receive(&[0x41, 0x03, 0xf2, 0x48, 0xcd]);
    assert!(drain(&mut c).is_empty());
    c.receive(&[0x80, 0x04, 0xc9, 0xc9, 0x07, 0x00]);
    assert_eq!(drain(&mut c), [Ok(Message::text("Hello"))]);
}

#[test]
fn rfc_7_2_3_2_sharing_the_window_between_messages() {
    let mut c = client(params());
    c.receive(&[0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
    c.receive(&[0xc1, 0x05, 0xf2, 0x00, 0x11, 0x00, 0x00]);
    assert_eq!(
        drain(&mut c),
        [Ok(Message::text("Hello")), Ok(Message::text("Hello"))]
    );
}

#[test]
fn rfc_7_2_3_3_a_stored_block() {
    let mut c = client(params());
    c.receive(&[
        0xc1, 0x0b, 0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
    ]);
    assert_eq!(drain(&mut c), [Ok(Message::text("Hello"))]);
}

#[test]
fn rfc_7_2_3_4_a_block_with_bfinal_set() {
    let mut c = client(params());
    c.receive(&[0xc1, 0x08, 0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00]);
    // The stream ended: the next message starts a new one.
    c.receive(&[0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
    assert_eq!(
        drain(&mut c),
        [Ok(Message::text("Hello")), Ok(Message::text("Hello"))]
    );
}

#[test]
fn rfc_7_2_3_5_two_blocks_in_one_message() {
    let mut c = client(params());
    c.receive(&[
        0xc1, 0x0d, 0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
    ]);
    assert_eq!(drain(&mut c), [Ok(Message::text("Hello"))]);
}

#[test]
fn our_compressor_produces_the_rfc_bytes() {
    let mut s = server(params(), Limits::default());
    s.send(Message::text("Hello")).unwrap();
    assert_eq!(
        output(&mut s),
        [0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]
    );
    // Context takeover: the second "Hello" is a back-reference (7.2.3.2).
    s.send(Message::text("Hello")).unwrap();
    assert_eq!(output(&mut s), [0xc1, 0x05, 0xf2, 0x00, 0x11, 0x00, 0x00]);
}

#[test]
fn without_context_takeover_each_message_stands_alone() {
    let mut p = params();
    p.local_no_context_takeover = true;
    let mut s = server(p, Limits::default());
    s.send(Message::text("Hello")).unwrap();
    s.send(Message::text("Hello")).unwrap();
    let frame = [0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    assert_eq!(output(&mut s), [frame, frame].concat());
}

#[test]
fn below_the_threshold_messages_go_uncompressed() {
    let mut p = params();
    p.threshold = 10;
    let mut s = server(p, Limits::default());
    s.send(Message::text("short")).unwrap();
    assert_eq!(output(&mut s), b"\x81\x05short");
    s.send(Message::text("long enough to compress")).unwrap();
    assert_eq!(output(&mut s)[0], 0xc1);
}

// ----- rules and limits -----

#[test]
fn rsv1_on_a_continuation_or_control_frame_is_1002() {
    for wire in [
        &[0x01, 0x01, b'a', 0xc0, 0x01, b'b'][..], // RSV1 on the continuation
        &[0xc9, 0x00],                             // RSV1 on a ping
    ] {
        let mut c = client(params());
        c.receive(wire);
        let results = drain(&mut c);
        assert!(
            matches!(results.last(), Some(Err(ProtocolError::ReservedBits(_)))),
            "{results:?}"
        );
        assert_eq!(close_code_sent(&mut c), 1002);
    }
}

#[test]
fn data_that_does_not_inflate_is_1007() {
    let mut c = client(params());
    c.receive(&[0xc2, 0x03, 0xff, 0xff, 0xff]);
    assert_eq!(drain(&mut c), [Err(ProtocolError::InvalidCompressedData)]);
    assert_eq!(close_code_sent(&mut c), 1007);
}

#[test]
fn compressed_text_that_is_not_utf8_is_1007() {
    let mut s = server(params(), Limits::default());
    // Compress invalid UTF-8 by hand, as a peer would.
    let mut deflater = Deflater::new(&params());
    let payload = deflater.compress(b"valid then \xff").unwrap();
    let mut wire = BytesMut::new();
    let frame = crate::frame::Frame {
        header: crate::frame::FrameHeader {
            rsv: RSV1,
            mask: Some([1, 2, 3, 4]),
            ..crate::frame::FrameHeader::new(OpCode::Text, payload.len() as u64)
        },
        payload,
    };
    frame.encode(&mut wire);
    s.receive(&wire);
    assert_eq!(drain(&mut s), [Err(ProtocolError::InvalidUtf8)]);
}

#[test]
fn a_compression_bomb_stops_at_the_limit() {
    // 16 MiB of zeros deflate to about 16 KiB; the limit is 256 KiB.
    let max = 256 << 10;
    let zeros = vec![0u8; 16 << 20];
    let bomb = Deflater::new(&params()).compress(&zeros).unwrap();
    assert!(bomb.len() < 32 << 10, "{} bytes", bomb.len());

    let config = Limits::default().max_message_size(max);
    let mut s = server(params(), config);
    let mut wire = BytesMut::new();
    let frame = crate::frame::Frame {
        header: crate::frame::FrameHeader {
            rsv: RSV1,
            mask: Some([9, 9, 9, 9]),
            ..crate::frame::FrameHeader::new(OpCode::Binary, bomb.len() as u64)
        },
        payload: bomb,
    };
    frame.encode(&mut wire);
    s.receive(&wire);
    let results = drain(&mut s);
    match results.as_slice() {
        [Err(ProtocolError::MessageTooLarge { size, max: m })] => {
            assert_eq!(*m, max);
            // Inflating stopped one byte past the limit: nothing like 16 MiB.
            assert_eq!(*size, max as u64 + 1);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.failure().unwrap().close_code(),
        CloseCode::MESSAGE_TOO_BIG
    );
}

#[test]
fn many_messages_round_trip_with_and_without_context_takeover() {
    for (client_nct, server_nct) in [(false, false), (true, false), (false, true), (true, true)] {
        let config = DeflateConfig::default()
            .client_no_context_takeover(client_nct)
            .server_no_context_takeover(server_nct)
            .threshold(0);
        let offer = config.offer();
        let (answer, server_params) = config.negotiate(&[offer]).unwrap();
        let client_params = config.accept_response(&[answer]).unwrap().unwrap();
        assert_eq!(client_params.local_no_context_takeover, client_nct);
        assert_eq!(server_params.local_no_context_takeover, server_nct);

        let mut c =
            Connection::client_with_mask_source(Limits::default(), Box::new(SequenceMask::new(3)));
        c.set_deflate(client_params);
        let mut s = server(server_params, Limits::default());
        let messages: Vec<Message> = (0..300)
            .map(|i| match i % 3 {
                0 => Message::text(format!(
                    "{{\"op\":\"publish\",\"channel\":\"chat:lobby\",\"seq\":{i}}}"
                )),
                1 => Message::binary(vec![(i % 7) as u8; i * 10]),
                _ => Message::text(""),
            })
            .collect();
        for m in &messages {
            c.send(m.clone()).unwrap();
            s.send(m.clone()).unwrap();
        }
        let from_client = output(&mut c);
        let from_server = output(&mut s);
        s.receive(&from_client);
        c.receive(&from_server);
        let expected: Vec<_> = messages.into_iter().map(Ok).collect();
        assert_eq!(drain(&mut s), expected);
        assert_eq!(drain(&mut c), expected);
        // Context takeover pays: repeated messages shrink.
        if !client_nct {
            assert!(from_client.len() < 20_000, "{} bytes", from_client.len());
        }
    }
}

// ----- negotiation (RFC 7692 section 7.1) -----

#[test]
fn a_default_server_accepts_a_browser_offer() {
    let config = DeflateConfig::default();
    let (answer, p) = config
        .negotiate(&exts("permessage-deflate; client_max_window_bits"))
        .unwrap();
    assert_eq!(answer.to_string(), "permessage-deflate");
    assert_eq!(
        (p.local_max_window_bits, p.remote_max_window_bits),
        (15, 15)
    );
    assert!(!p.local_no_context_takeover && !p.remote_no_context_takeover);
}

#[test]
fn offers_the_server_cannot_meet_are_declined_and_the_next_taken() {
    let config = DeflateConfig::default();
    let offers = exts(
        "permessage-deflate; x-unknown, permessage-deflate; server_max_window_bits=8, \
         permessage-deflate; client_max_window_bits=16, \
         permessage-deflate; server_no_context_takeover; server_no_context_takeover, \
         permessage-deflate; server_max_window_bits=010, \
         permessage-deflate; server_max_window_bits=10",
    );
    let (answer, p) = config.negotiate(&offers).unwrap();
    assert_eq!(
        answer.to_string(),
        "permessage-deflate; server_max_window_bits=10"
    );
    assert_eq!(p.local_max_window_bits, 10);
    assert!(config.negotiate(&exts("permessage-deflate; x")).is_none());
    assert!(config.negotiate(&exts("x-webkit-deflate-frame")).is_none());
}

#[test]
fn the_server_applies_its_own_limits() {
    let config = DeflateConfig::default()
        .server_no_context_takeover(true)
        .client_no_context_takeover(true)
        .server_max_window_bits(11)
        .client_max_window_bits(12);
    let (answer, p) = config
        .negotiate(&exts("permessage-deflate; client_max_window_bits"))
        .unwrap();
    assert_eq!(
        answer.to_string(),
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
         server_max_window_bits=11; client_max_window_bits=12"
    );
    assert_eq!(p.local_max_window_bits, 11);
    assert_eq!(p.remote_max_window_bits, 12);
    assert!(p.local_no_context_takeover && p.remote_no_context_takeover);

    // A client that cannot be limited keeps 15 bits; the server decompresses with 15.
    let (answer, p) = config.negotiate(&exts("permessage-deflate")).unwrap();
    assert!(!answer.to_string().contains("client_max_window_bits"));
    assert_eq!(p.remote_max_window_bits, 15);

    // A client asking for a smaller server window than ours gets it.
    let (_, p) = config
        .negotiate(&exts("permessage-deflate; server_max_window_bits=9"))
        .unwrap();
    assert_eq!(p.local_max_window_bits, 9);
}

#[test]
fn a_client_at_8_bits_is_decompressed_with_9() {
    let (answer, p) = DeflateConfig::default()
        .negotiate(&exts("permessage-deflate; client_max_window_bits=8"))
        .unwrap();
    assert_eq!(
        answer.to_string(),
        "permessage-deflate; client_max_window_bits=8"
    );
    assert_eq!(p.remote_max_window_bits, 9);
}

#[test]
fn the_client_checks_the_answer() {
    let config = DeflateConfig::default().server_max_window_bits(12);
    assert_eq!(
        config.offer().to_string(),
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits"
    );
    let accept = |answer: &str| config.accept_response(&exts(answer));
    let p = accept("permessage-deflate; server_max_window_bits=10; client_max_window_bits=11")
        .unwrap()
        .unwrap();
    assert_eq!(
        (p.local_max_window_bits, p.remote_max_window_bits),
        (11, 10)
    );
    let p = accept("permessage-deflate; server_max_window_bits=12; server_no_context_takeover")
        .unwrap()
        .unwrap();
    assert!(p.remote_no_context_takeover);
    for bad in [
        "permessage-deflate",                            // window asked for, not given
        "permessage-deflate; server_max_window_bits=13", // larger than asked
        "permessage-deflate; server_max_window_bits=12; x=1", // unknown parameter
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits", // no value
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits=8", // zlib cannot
        "permessage-deflate; server_max_window_bits=12, permessage-deflate; server_max_window_bits=12",
    ] {
        assert!(
            matches!(accept(bad), Err(HandshakeError::Extension(_))),
            "{bad} was accepted"
        );
    }
    assert_eq!(accept("x-other").unwrap(), None);

    let asks_no_context = DeflateConfig::default().server_no_context_takeover(true);
    assert!(
        asks_no_context
            .accept_response(&exts("permessage-deflate"))
            .is_err()
    );
}

#[test]
fn a_client_limited_by_its_own_offer_keeps_the_limit() {
    let config = DeflateConfig::default().client_max_window_bits(10);
    let p = config
        .accept_response(&exts("permessage-deflate"))
        .unwrap()
        .unwrap();
    assert_eq!(p.local_max_window_bits, 10);
    assert!(
        config
            .accept_response(&exts("permessage-deflate; client_max_window_bits=11"))
            .is_err()
    );
}

#[test]
fn server_and_client_agree_end_to_end() {
    for (client, server) in [
        (DeflateConfig::default(), DeflateConfig::default()),
        (
            DeflateConfig::default()
                .server_max_window_bits(10)
                .client_no_context_takeover(true),
            DeflateConfig::default().client_max_window_bits(9),
        ),
        (
            DeflateConfig::default().server_no_context_takeover(true),
            DeflateConfig::default().server_max_window_bits(12),
        ),
    ] {
        let (answer, at_server) = server.negotiate(&[client.offer()]).unwrap();
        let at_client = client.accept_response(&[answer]).unwrap().unwrap();
        assert_eq!(
            at_client.local_max_window_bits,
            at_server.remote_max_window_bits
        );
        assert_eq!(
            at_client.remote_max_window_bits,
            at_server.local_max_window_bits
        );
        assert_eq!(
            at_client.local_no_context_takeover,
            at_server.remote_no_context_takeover
        );
        assert_eq!(
            at_client.remote_no_context_takeover,
            at_server.local_no_context_takeover
        );
    }
}

#[test]
fn parsing_a_single_extension() {
    let e = ext("permessage-deflate; client_max_window_bits=10");
    assert_eq!(
        e.param("client_max_window_bits").collect::<Vec<_>>(),
        [Some("10")]
    );
}
