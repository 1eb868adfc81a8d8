//! One test per protocol rule duplex holds, each showing the close code the
//! violation produces (RFC 6455 sections cited). Rules that bind both ends are
//! checked in both roles.

mod util;

use duplex_proto::frame::{OpCode, RSV1, RSV2, RSV3, Role};
use duplex_proto::{CloseCode, Limits, Message, ProtocolError};
use util::{
    assert_fails, assert_fails_with, close_payload, conn, conn_with, feed, frame_to, msg_to,
};

const BOTH: [Role; 2] = [Role::Server, Role::Client];

/// Section 5.2: RSV1-3 MUST be 0 unless an extension defines them.
#[test]
fn reserved_bits_without_extension_1002() {
    for role in BOTH {
        for rsv in [RSV1, RSV2, RSV3, RSV1 | RSV3] {
            let wire = frame_to(role, true, rsv, OpCode::Text, b"x");
            assert_fails(
                role,
                &wire,
                ProtocolError::ReservedBits(rsv),
                CloseCode::PROTOCOL_ERROR,
            );
        }
    }
}

/// Section 5.2: an unknown opcode MUST fail the connection.
#[test]
fn unknown_opcodes_1002() {
    for role in BOTH {
        for op in [3u8, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
            // Built by hand: the encoder only knows defined opcodes.
            let mut wire = msg_to(role, OpCode::Binary, b"");
            wire[0] = 0x80 | op;
            assert_fails(
                role,
                &wire,
                ProtocolError::UnknownOpcode(op),
                CloseCode::PROTOCOL_ERROR,
            );
        }
    }
}

/// Section 5.5: control frames MUST NOT be fragmented.
#[test]
fn fragmented_control_frame_1002() {
    for role in BOTH {
        for op in [OpCode::Ping, OpCode::Pong, OpCode::Close] {
            let wire = frame_to(role, false, 0, op, b"");
            assert_fails(
                role,
                &wire,
                ProtocolError::FragmentedControlFrame,
                CloseCode::PROTOCOL_ERROR,
            );
        }
    }
}

/// Section 5.5: control frames carry at most 125 bytes.
#[test]
fn control_payload_over_125_bytes_1002() {
    for role in BOTH {
        for op in [OpCode::Ping, OpCode::Pong, OpCode::Close] {
            let wire = msg_to(role, op, &[b'a'; 126]);
            assert_fails(
                role,
                &wire,
                ProtocolError::ControlFrameTooLong,
                CloseCode::PROTOCOL_ERROR,
            );
        }
        // 125 is fine.
        let ok = feed(&mut conn(role), &msg_to(role, OpCode::Ping, &[b'a'; 125]));
        assert!(matches!(ok[..], [Ok(Message::Ping(ref p))] if p.len() == 125));
    }
}

/// Section 5.1: a server MUST close on an unmasked frame.
#[test]
fn unmasked_client_frame_1002() {
    let wire = msg_to(Role::Client, OpCode::Text, b"no mask"); // as a server sends it
    assert_fails(
        Role::Server,
        &wire,
        ProtocolError::UnmaskedFrameFromClient,
        CloseCode::PROTOCOL_ERROR,
    );
}

/// Section 5.1: a client MUST close on a masked frame.
#[test]
fn masked_server_frame_1002() {
    let wire = msg_to(Role::Server, OpCode::Text, b"masked"); // as a client sends it
    assert_fails(
        Role::Client,
        &wire,
        ProtocolError::MaskedFrameFromServer,
        CloseCode::PROTOCOL_ERROR,
    );
}

/// Section 5.4: a continuation needs a fragmented message to continue.
#[test]
fn continuation_without_message_1002() {
    for role in BOTH {
        for fin in [true, false] {
            let wire = frame_to(role, fin, 0, OpCode::Continuation, b"x");
            assert_fails(
                role,
                &wire,
                ProtocolError::UnexpectedContinuation,
                CloseCode::PROTOCOL_ERROR,
            );
        }
        // Also right after a message ended.
        let mut wire = msg_to(role, OpCode::Text, b"done");
        wire.extend(frame_to(role, true, 0, OpCode::Continuation, b"x"));
        assert_fails(
            role,
            &wire,
            ProtocolError::UnexpectedContinuation,
            CloseCode::PROTOCOL_ERROR,
        );
    }
}

/// Section 5.4: the fragments of one message may not be interleaved with another.
#[test]
fn new_data_frame_inside_fragmented_message_1002() {
    for role in BOTH {
        for second in [OpCode::Text, OpCode::Binary] {
            let mut wire = frame_to(role, false, 0, OpCode::Text, b"part");
            wire.extend(frame_to(role, true, 0, second, b"other"));
            assert_fails(
                role,
                &wire,
                ProtocolError::ExpectedContinuation,
                CloseCode::PROTOCOL_ERROR,
            );
        }
    }
}

/// Section 5.5.1: a close body is empty or starts with a 2-byte code.
#[test]
fn close_payload_of_one_byte_1002() {
    for role in BOTH {
        let wire = msg_to(role, OpCode::Close, &[0x03]);
        assert_fails(
            role,
            &wire,
            ProtocolError::CloseFrameTooShort,
            CloseCode::PROTOCOL_ERROR,
        );
    }
}

/// Section 7.4: only 1000-1003, 1007-1014 and 3000-4999 may be sent.
#[test]
fn invalid_close_codes_1002() {
    for role in BOTH {
        for code in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            let wire = msg_to(role, OpCode::Close, &close_payload(code, ""));
            assert_fails(
                role,
                &wire,
                ProtocolError::InvalidCloseCode(code),
                CloseCode::PROTOCOL_ERROR,
            );
        }
        for code in [1000u16, 1003, 1007, 1014, 3000, 4999] {
            let results = feed(
                &mut conn(role),
                &msg_to(role, OpCode::Close, &close_payload(code, "")),
            );
            assert_eq!(results, [Ok(Message::close(CloseCode(code), ""))]);
        }
    }
}

/// Section 8.1: text that is not UTF-8 fails with 1007.
#[test]
fn invalid_utf8_text_1007() {
    for role in BOTH {
        let wire = msg_to(role, OpCode::Text, b"bad \xff byte");
        assert_fails(
            role,
            &wire,
            ProtocolError::InvalidUtf8,
            CloseCode::INVALID_PAYLOAD,
        );
        // Ending inside a code point is invalid too.
        let wire = msg_to(role, OpCode::Text, b"cut \xe2\x82");
        assert_fails(
            role,
            &wire,
            ProtocolError::InvalidUtf8,
            CloseCode::INVALID_PAYLOAD,
        );
    }
}

/// Section 5.5.1: the close reason is UTF-8.
#[test]
fn invalid_utf8_close_reason_1007() {
    for role in BOTH {
        let mut payload = close_payload(1000, "");
        payload.extend_from_slice(b"\xc3\x28");
        let wire = msg_to(role, OpCode::Close, &payload);
        assert_fails(
            role,
            &wire,
            ProtocolError::InvalidCloseReason,
            CloseCode::INVALID_PAYLOAD,
        );
    }
}

/// Invalid UTF-8 is caught at the first bad byte: in a later fragment of a
/// fragmented message, and before the frame that holds it is complete.
#[test]
fn invalid_utf8_fails_fast_mid_message_and_mid_frame() {
    for role in BOTH {
        // Fragment 1 is fine; fragment 2 has the bad byte near its start. Only the
        // first 20 bytes of fragment 2 arrive (its header and a few payload bytes).
        let mut wire = frame_to(role, false, 0, OpCode::Text, b"good start ");
        let mut second = b"ok \xf0\x28".to_vec();
        second.extend(vec![b'x'; 10_000]);
        let fragment = frame_to(role, true, 0, OpCode::Continuation, &second);
        wire.extend_from_slice(&fragment[..20]);
        assert_fails(
            role,
            &wire,
            ProtocolError::InvalidUtf8,
            CloseCode::INVALID_PAYLOAD,
        );
    }
}

/// A code point split between fragments is fine when the next completes it.
#[test]
fn code_point_split_across_fragments_is_valid() {
    for role in BOTH {
        let euro = "€".as_bytes();
        let mut wire = frame_to(role, false, 0, OpCode::Text, &[b'a', euro[0]]);
        wire.extend(frame_to(role, false, 0, OpCode::Continuation, &euro[1..2]));
        wire.extend(frame_to(
            role,
            true,
            0,
            OpCode::Continuation,
            &[euro[2], b'b'],
        ));
        assert_eq!(feed(&mut conn(role), &wire), [Ok(Message::text("a€b"))]);
    }
}

/// Section 5.4: control frames may be injected between fragments.
#[test]
fn control_frames_between_fragments() {
    for role in BOTH {
        let mut c = conn(role);
        let mut wire = frame_to(role, false, 0, OpCode::Binary, b"one ");
        wire.extend(msg_to(role, OpCode::Ping, b"p"));
        wire.extend(frame_to(role, false, 0, OpCode::Continuation, b""));
        wire.extend(msg_to(role, OpCode::Pong, b"q"));
        wire.extend(frame_to(role, true, 0, OpCode::Continuation, b"two"));
        assert_eq!(
            feed(&mut c, &wire),
            [
                Ok(Message::ping(&b"p"[..])),
                Ok(Message::pong(&b"q"[..])),
                Ok(Message::binary(&b"one two"[..])),
            ]
        );
    }
}

/// Section 5.2: a 64-bit length has its most significant bit 0.
#[test]
fn length_with_top_bit_1002() {
    for role in BOTH {
        let mut wire = msg_to(role, OpCode::Binary, &[0u8; 70_000]);
        wire[2] |= 0x80;
        assert_fails(
            role,
            &wire[..3],
            ProtocolError::PayloadLengthTopBit,
            CloseCode::PROTOCOL_ERROR,
        );
    }
}

/// Section 5.2: the minimal number of bytes MUST be used to encode the length.
#[test]
fn non_minimal_length_1002() {
    for role in BOTH {
        let mut wire = vec![0x82, 126, 0, 100];
        if role == Role::Server {
            wire[1] |= 0x80;
            wire.extend_from_slice(&[0, 0, 0, 0]);
        }
        wire.extend_from_slice(&[0u8; 100]);
        assert_fails(
            role,
            &wire,
            ProtocolError::NonMinimalLength,
            CloseCode::PROTOCOL_ERROR,
        );
    }
}

/// A frame over `max_frame_size` closes with 1009 from its header alone.
#[test]
fn frame_over_limit_1009_before_payload() {
    for role in BOTH {
        let c = conn_with(role, Limits::default().max_frame_size(1000));
        let wire = msg_to(role, OpCode::Binary, &[0u8; 1001]);
        let header_only = &wire[..wire.len() - 1001];
        assert_fails_with(
            c,
            header_only,
            ProtocolError::FrameTooLarge {
                size: 1001,
                max: 1000,
            },
            CloseCode::MESSAGE_TOO_BIG,
        );
    }
}

/// A fragmented message over `max_message_size` closes with 1009 from the header
/// of the fragment that would exceed it.
#[test]
fn message_over_limit_1009_before_payload() {
    for role in BOTH {
        let c = conn_with(role, Limits::default().max_message_size(1000));
        let mut wire = frame_to(role, false, 0, OpCode::Text, &[b'a'; 600]);
        let second = frame_to(role, true, 0, OpCode::Continuation, &[b'a'; 401]);
        wire.extend_from_slice(&second[..second.len() - 401]);
        assert_fails_with(
            c,
            &wire,
            ProtocolError::MessageTooLarge {
                size: 1001,
                max: 1000,
            },
            CloseCode::MESSAGE_TOO_BIG,
        );
        // Exactly at the limit is accepted.
        let mut c = conn_with(role, Limits::default().max_message_size(1000));
        let mut wire = frame_to(role, false, 0, OpCode::Text, &[b'a'; 600]);
        wire.extend(frame_to(role, true, 0, OpCode::Continuation, &[b'a'; 400]));
        assert!(matches!(feed(&mut c, &wire)[..], [Ok(Message::Text(ref t))] if t.len() == 1000));
    }
}

/// Control frames never count against the message limit.
#[test]
fn control_frames_do_not_count_toward_message_size() {
    for role in BOTH {
        let mut c = conn_with(role, Limits::default().max_message_size(10));
        let mut wire = frame_to(role, false, 0, OpCode::Binary, &[1; 10]);
        wire.extend(msg_to(role, OpCode::Ping, &[2; 100]));
        wire.extend(frame_to(role, true, 0, OpCode::Continuation, b""));
        let results = feed(&mut c, &wire);
        assert_eq!(results.len(), 2);
        assert_eq!(results[1], Ok(Message::binary(vec![1; 10])));
    }
}
