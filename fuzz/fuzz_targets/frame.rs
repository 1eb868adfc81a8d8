//! `FrameDecoder::decode` on arbitrary bytes, for both roles.
//!
//! Input layout: `[flags, split_seed, wire bytes...]`.
//!
//! - `flags` bits 0-2: the RSV bits the decoder allows (`allow_rsv`).
//! - `flags` bits 3-4: `max_frame_size`: `usize::MAX`, 0, 125 or 70 000.
//! - `split_seed`: read sizes for the piecewise decode.
//!
//! The bytes are decoded once as a server and once as a client. Invariants:
//! 1. Every frame obeys the rules the decoder promises: RSV only as allowed,
//!    control frames final and at most 125 bytes, masked exactly when a server
//!    decodes, payload length as the header says and within the limit.
//! 2. `Frame::encode` of a decoded frame gives back exactly the bytes it was
//!    decoded from (the decoder only accepts minimal lengths), and those bytes
//!    decode again, with a fresh decoder, to the same frame and nothing else.
//! 3. `parse_header` on those bytes gives the same header and its length.
//! 4. Decoding the input in pieces gives the same frames and the same error as
//!    decoding it at once.
#![no_main]

use bytes::BytesMut;
use duplex_proto::ProtocolError;
use duplex_proto::frame::{Frame, FrameDecoder, MAX_CONTROL_PAYLOAD, Role};
use libfuzzer_sys::fuzz_target;

fn decoder(role: Role, max: usize, rsv: u8) -> FrameDecoder {
    let mut decoder = FrameDecoder::new(role, max);
    decoder.allow_rsv(rsv);
    decoder
}

/// Decodes everything in one buffer: the frames, each with the wire bytes it came
/// from, and the error that stopped decoding, if any.
fn decode_whole(
    role: Role,
    max: usize,
    rsv: u8,
    data: &[u8],
) -> (Vec<(Frame, Vec<u8>)>, Option<ProtocolError>) {
    let mut dec = decoder(role, max, rsv);
    let mut buf = BytesMut::from(data);
    let mut offset = 0;
    let mut frames = Vec::new();
    loop {
        let before = buf.len();
        match dec.decode(&mut buf) {
            Ok(Some(frame)) => {
                let used = before - buf.len();
                frames.push((frame, data[offset..offset + used].to_vec()));
                offset += used;
            }
            Ok(None) => return (frames, None),
            Err(err) => return (frames, Some(err)),
        }
    }
}

fn decode_pieces(
    role: Role,
    max: usize,
    rsv: u8,
    data: &[u8],
    seed: u8,
) -> (Vec<Frame>, Option<ProtocolError>) {
    let mut dec = decoder(role, max, rsv);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut state = 0x2545_f491u32 ^ u32::from(seed);
    let range = [1usize, 4, 16, 300][usize::from(seed & 3)];
    let mut rest = data;
    loop {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state as usize % (range + 1)).min(rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(err) => return (frames, Some(err)),
            }
        }
        if rest.is_empty() {
            return (frames, None);
        }
    }
}

fn check_frame(role: Role, max: usize, rsv: u8, frame: &Frame, wire: &[u8]) {
    let header = &frame.header;
    assert_eq!(header.payload_len, frame.payload.len() as u64);
    assert!(frame.payload.len() <= max);
    assert_eq!(
        header.rsv & !rsv,
        0,
        "RSV bits {:03b} not allowed",
        header.rsv
    );
    if header.opcode.is_control() {
        assert!(header.fin, "fragmented control frame decoded");
        assert!(frame.payload.len() <= MAX_CONTROL_PAYLOAD);
    }
    assert_eq!(
        header.mask.is_some(),
        role == Role::Server,
        "masking by role"
    );

    // The header parses alone to the same value.
    let (parsed, header_len) = decoder(role, max, rsv)
        .parse_header(wire)
        .expect("header of a decoded frame parses")
        .expect("header of a decoded frame is whole");
    assert_eq!(&parsed, header);
    assert_eq!(header_len, header.encoded_len());
    assert_eq!(header_len + frame.payload.len(), wire.len());

    // Re-encoding gives the same bytes...
    let mut encoded = BytesMut::new();
    frame.encode(&mut encoded);
    assert_eq!(
        &encoded[..],
        wire,
        "re-encoded frame differs from its wire bytes"
    );

    // ...which decode to the same frame, with nothing left over.
    let mut again = decoder(role, usize::MAX, rsv);
    let decoded = again
        .decode(&mut encoded)
        .expect("re-encoded frame decodes")
        .expect("re-encoded frame is whole");
    assert_eq!(&decoded, frame);
    assert!(encoded.is_empty());
    assert!(!again.is_mid_frame());
}

fuzz_target!(|input: &[u8]| {
    let [flags, split_seed, data @ ..] = input else {
        return;
    };
    let rsv = flags & 0b111;
    let max = [usize::MAX, 0, MAX_CONTROL_PAYLOAD, 70_000][usize::from((flags >> 3) & 0b11)];

    for role in [Role::Server, Role::Client] {
        let (frames, error) = decode_whole(role, max, rsv, data);
        for (frame, wire) in &frames {
            check_frame(role, max, rsv, frame, wire);
        }

        let (pieces, pieces_error) = decode_pieces(role, max, rsv, data, *split_seed);
        let whole: Vec<&Frame> = frames.iter().map(|(frame, _)| frame).collect();
        let pieces: Vec<&Frame> = pieces.iter().collect();
        assert_eq!(whole, pieces, "frames depend on how reads split");
        assert_eq!(error, pieces_error, "error depends on how reads split");
    }
});
