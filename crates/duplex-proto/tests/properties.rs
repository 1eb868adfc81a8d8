//! Properties over random inputs: encoding then decoding is the identity, and
//! how a byte stream is split into reads never changes what is decoded.

mod util;

use bytes::{Bytes, BytesMut};
use duplex_proto::frame::{Frame, FrameDecoder, FrameHeader, OpCode, Role};
use duplex_proto::{Connection, Fragment, Limits, Message, ProtocolError};
use proptest::prelude::*;
use util::{conn_with, drain, frame_to, peer_of};

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Server), Just(Role::Client)]
}

fn opcode() -> impl Strategy<Value = OpCode> {
    prop_oneof![
        Just(OpCode::Continuation),
        Just(OpCode::Text),
        Just(OpCode::Binary),
        Just(OpCode::Close),
        Just(OpCode::Ping),
        Just(OpCode::Pong),
    ]
}

/// Any frame the header format can carry, control frames kept legal.
fn frame(role: Role) -> impl Strategy<Value = Frame> {
    (
        opcode(),
        any::<bool>(),
        0u8..8,
        any::<[u8; 4]>(),
        prop_oneof![
            3 => proptest::collection::vec(any::<u8>(), 0..130),
            // Past 65,535 bytes the length takes 8 bytes. Made from a seed:
            // one proptest value per byte made this test take 10 s.
            1 => (60_000usize..70_000, any::<u64>()).prop_map(|(len, seed)| noise(len, seed)),
        ],
    )
        .prop_map(move |(opcode, fin, rsv, key, mut payload)| {
            if opcode.is_control() {
                payload.truncate(125);
            }
            Frame {
                header: FrameHeader {
                    fin: fin || opcode.is_control(),
                    rsv,
                    opcode,
                    mask: (role == Role::Server).then_some(key),
                    payload_len: payload.len() as u64,
                },
                payload: Bytes::from(payload),
            }
        })
}

/// `len` bytes of xorshift output from `seed`.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 56) as u8
        })
        .collect()
}

/// Random split points for a stream of `len` bytes.
fn splits(len: usize, cuts: &[usize]) -> Vec<usize> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (len + 1)).collect();
    points.sort_unstable();
    points.dedup();
    points
}

/// Feeds `wire` to `conn` in pieces cut at `points`; returns every result and the
/// output produced.
fn feed_split(mut conn: Connection, wire: &[u8], points: &[usize]) -> Decoded {
    let mut results = Vec::new();
    let mut start = 0;
    for &p in points.iter().chain(std::iter::once(&wire.len())) {
        conn.receive(&wire[start..p]);
        results.extend(drain(&mut conn));
        start = p;
    }
    let mut out = Vec::new();
    while let Some(chunk) = conn.take_output() {
        out.extend_from_slice(&chunk);
    }
    (results, out)
}

/// A short frame as `short_frames_decode_alike_whole_and_byte_by_byte`
/// draws it: the first byte, whether it is masked as the receiver's role
/// requires, whether its length is forced into 16 bits, and the payload.
type ShortFrame = (u8, bool, bool, Vec<u8>);

/// Encodes `frames` for a connection of `role` and decodes them twice, from
/// one read and one byte at a time; returns both results and replies.
fn short_frames_whole_and_by_byte(
    role: Role,
    frames: &[ShortFrame],
    small_limits: bool,
) -> (Decoded, Decoded) {
    let mut wire = Vec::new();
    for (b0, masked_as_required, len16, payload) in frames {
        let masked = masked_as_required == &(role == Role::Server);
        wire.push(*b0);
        let mask_bit = if masked { 0x80 } else { 0 };
        if *len16 || payload.len() >= 126 {
            wire.push(mask_bit | 126);
            wire.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        } else {
            wire.push(mask_bit | payload.len() as u8);
        }
        let key = [0x0f, 0xf0, 0x55, 0xaa];
        if masked {
            wire.extend_from_slice(&key);
        }
        wire.extend(payload.iter().enumerate().map(
            |(i, b)| {
                if masked { b ^ key[i % 4] } else { *b }
            },
        ));
    }
    let config = if small_limits {
        Limits::default().max_frame_size(100).max_message_size(150)
    } else {
        Limits::default()
    };
    let every_byte: Vec<usize> = (1..wire.len()).collect();
    let whole = feed_split(conn_with(role, config.clone()), &wire, &[]);
    let by_byte = feed_split(conn_with(role, config), &wire, &every_byte);
    (whole, by_byte)
}

/// What `feed_split` returns: every result, and the output produced.
type Decoded = (Vec<Result<Message, ProtocolError>>, Vec<u8>);

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn encode_then_decode_is_identity(
        (role, frames) in role().prop_flat_map(|r| (Just(r), proptest::collection::vec(frame(r), 1..6))),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut wire = BytesMut::new();
        for f in &frames {
            let before = wire.len();
            f.encode(&mut wire);
            prop_assert_eq!(wire.len() - before, f.header.encoded_len() + f.payload.len());
        }
        let wire = wire.freeze();
        let mut decoder = FrameDecoder::new(role, usize::MAX);
        decoder.allow_rsv(0b111);
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        let mut start = 0;
        for p in splits(wire.len(), &cuts).into_iter().chain(std::iter::once(wire.len())) {
            buf.extend_from_slice(&wire[start..p]);
            start = p;
            while let Some(f) = decoder.decode(&mut buf).unwrap() {
                decoded.push(f);
            }
        }
        prop_assert_eq!(decoded, frames);
        prop_assert!(buf.is_empty());
    }

    /// Any bytes at all, valid frames mixed with garbage: the results and the
    /// replies are the same however the stream is cut into reads.
    #[test]
    fn any_split_yields_the_same_events(
        role in role(),
        pieces in proptest::collection::vec(
            prop_oneof![
                4 => (opcode(), any::<bool>(), proptest::collection::vec(any::<u8>(), 0..300))
                    .prop_map(|(op, fin, payload)| (Some((op, fin)), payload)),
                1 => proptest::collection::vec(any::<u8>(), 0..12).prop_map(|bytes| (None, bytes)),
            ],
            0..12,
        ),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
        small_limits in any::<bool>(),
    ) {
        let mut wire = Vec::new();
        for (frame, bytes) in &pieces {
            match frame {
                Some((op, fin)) => {
                    let payload = if op.is_control() { &bytes[..bytes.len().min(125)] } else { &bytes[..] };
                    wire.extend(frame_to(role, *fin || op.is_control(), 0, *op, payload));
                }
                None => wire.extend_from_slice(bytes),
            }
        }
        let config = if small_limits {
            Limits::default().max_frame_size(200).max_message_size(400)
        } else {
            Limits::default()
        };
        let whole = feed_split(conn_with(role, config.clone()), &wire, &[]);
        let split = feed_split(conn_with(role, config), &wire, &splits(wire.len(), &cuts));
        prop_assert_eq!(&whole.0, &split.0);
        prop_assert_eq!(&whole.1, &split.1);
        // At most one error, and it is the last result.
        let errors = whole.0.iter().filter(|r| r.is_err()).count();
        prop_assert!(errors <= 1);
        if errors == 1 {
            prop_assert!(whole.0.last().unwrap().is_err());
        }
    }

    /// Short frames with any first byte, masked or not, their length in 7
    /// bits or forced into 16, text valid or not, under tight limits or
    /// none: decoded from one read (the short path takes the whole frames it
    /// can) and one byte at a time (the general decoder's, which consumes a
    /// header before its payload is there) they give the same results and
    /// the same replies.
    #[test]
    fn short_frames_decode_alike_whole_and_byte_by_byte(
        role in role(),
        frames in proptest::collection::vec(
            (
                prop_oneof![
                    6 => prop_oneof![Just(0x81u8), Just(0x82u8)],
                    1 => any::<u8>(),
                ],
                prop_oneof![5 => Just(true), 1 => Just(false)],
                any::<bool>(),
                prop_oneof![
                    3 => "[a-z\u{e9}\u{4e16}]{0,90}".prop_map(String::into_bytes),
                    1 => proptest::collection::vec(any::<u8>(), 0..300),
                ],
            ),
            1..8,
        ),
        small_limits in any::<bool>(),
    ) {
        let (whole, by_byte) = short_frames_whole_and_by_byte(role, &frames, small_limits);
        prop_assert_eq!(&whole.0, &by_byte.0);
        prop_assert_eq!(&whole.1, &by_byte.1);
    }

    /// Messages sent by one end arrive whole and in order at the other, with
    /// fragmentation and reads cut anywhere.
    #[test]
    fn messages_arrive_as_sent(
        role in role(),
        messages in proptest::collection::vec(
            prop_oneof![
                ".{0,200}".prop_map(Message::text),
                proptest::collection::vec(any::<u8>(), 0..3000).prop_map(Message::binary),
                proptest::collection::vec(any::<u8>(), 0..125).prop_map(Message::ping),
            ],
            0..10,
        ),
        fragment_at in proptest::collection::vec(any::<usize>(), 0..10),
        cuts in proptest::collection::vec(any::<usize>(), 0..10),
    ) {
        let mut sender = conn_with(role, Limits::default());
        for (i, m) in messages.iter().enumerate() {
            match (m, fragment_at.get(i)) {
                (Message::Binary(data), Some(&at)) if !data.is_empty() => {
                    let at = at % data.len();
                    sender.send_fragment(Fragment::Binary, data.slice(..at), false).unwrap();
                    sender.send_fragment(Fragment::Continuation, data.slice(at..), true).unwrap();
                }
                (Message::Text(text), Some(&at)) if !text.is_empty() => {
                    // Cut at any byte, even inside a code point.
                    let bytes = text.clone().into_bytes();
                    let at = at % bytes.len();
                    sender.send_fragment(Fragment::Text, bytes.slice(..at), false).unwrap();
                    sender.send_fragment(Fragment::Continuation, bytes.slice(at..), true).unwrap();
                }
                _ => sender.send(m.clone()).unwrap(),
            }
        }
        let mut wire = Vec::new();
        while let Some(chunk) = sender.take_output() {
            wire.extend_from_slice(&chunk);
        }
        let receiver = conn_with(peer_of(role), Limits::default());
        let (results, _) = feed_split(receiver, &wire, &splits(wire.len(), &cuts));
        let expected: Vec<_> = messages.into_iter().map(Ok).collect();
        prop_assert_eq!(results, expected);
    }
}

#[cfg(feature = "deflate")]
proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// With permessage-deflate on, any parameters: messages arrive as sent,
    /// compressed or not (short ones stay below the threshold), whatever the
    /// reads.
    #[test]
    fn compressed_messages_arrive_as_sent(
        role in role(),
        no_context_takeover in any::<(bool, bool)>(),
        bits in (9u8..=15, 9u8..=15),
        threshold in 0usize..64,
        messages in proptest::collection::vec(
            prop_oneof![
                "[a-z \\{\\}\":,0-9]{0,400}".prop_map(Message::text),
                proptest::collection::vec(0u8..4, 0..5000).prop_map(Message::binary),
                proptest::collection::vec(any::<u8>(), 0..2000).prop_map(Message::binary),
            ],
            1..20,
        ),
        cuts in proptest::collection::vec(any::<usize>(), 0..10),
    ) {
        use duplex_proto::deflate::DeflateParams;
        let sender_params = DeflateParams {
            local_no_context_takeover: no_context_takeover.0,
            remote_no_context_takeover: no_context_takeover.1,
            local_max_window_bits: bits.0,
            remote_max_window_bits: bits.1,
            level: 6,
            threshold,
        };
        let receiver_params = DeflateParams {
            local_no_context_takeover: no_context_takeover.1,
            remote_no_context_takeover: no_context_takeover.0,
            local_max_window_bits: bits.1,
            remote_max_window_bits: bits.0,
            level: 6,
            threshold,
        };
        let mut sender = conn_with(role, Limits::default());
        sender.set_deflate(sender_params);
        for m in &messages {
            sender.send(m.clone()).unwrap();
        }
        let mut wire = Vec::new();
        while let Some(chunk) = sender.take_output() {
            wire.extend_from_slice(&chunk);
        }
        let mut receiver = conn_with(peer_of(role), Limits::default());
        receiver.set_deflate(receiver_params);
        let (results, _) = feed_split(receiver, &wire, &splits(wire.len(), &cuts));
        let expected: Vec<_> = messages.into_iter().map(Ok).collect();
        prop_assert_eq!(results, expected);
    }
}

// The cases proptest found, kept with their literal input.

/// A text frame whose 3-byte payload (one CJK character) has its length
/// in 16 bits, which 7 bits could hold: the short path must leave it to the
/// general decoder, which rejects the length (RFC 6455 section 5.2), read
/// whole or byte by byte.
#[test]
fn regression_short_text_with_a_non_minimal_16_bit_length() {
    let frames = [(0x81, true, true, vec![228, 184, 150])];
    let (whole, by_byte) = short_frames_whole_and_by_byte(Role::Server, &frames, false);
    assert_eq!(whole, by_byte);
    assert_eq!(whole.0, [Err(ProtocolError::NonMinimalLength)]);
    // The close frame that fails the connection: 1002.
    assert_eq!((whole.1[0], &whole.1[2..4]), (0x88, &[0x03, 0xea][..]));
}

/// A one-byte text frame that is a lone UTF-8 continuation byte: the short
/// path fails it with 1007, as the general decoder does byte by byte.
#[test]
fn regression_short_text_of_a_lone_continuation_byte() {
    let frames = [(0x81, true, false, vec![128])];
    let (whole, by_byte) = short_frames_whole_and_by_byte(Role::Server, &frames, false);
    assert_eq!(whole, by_byte);
    assert_eq!(whole.0, [Err(ProtocolError::InvalidUtf8)]);
    assert_eq!((whole.1[0], &whole.1[2..4]), (0x88, &[0x03, 0xef][..]));
}
