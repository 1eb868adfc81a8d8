//! What can go wrong: the peer breaking the protocol ([`ProtocolError`]), and the
//! caller asking for something the protocol does not allow ([`SendError`]).

use std::fmt;

use crate::close::{CloseCode, MAX_REASON_LEN};

/// The peer broke RFC 6455, or exceeded a configured limit.
///
/// Each kind fails the connection with the close code [`close_code`] names; that
/// method is the one place where failures map to close codes.
///
/// [`close_code`]: ProtocolError::close_code
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// RSV1, RSV2 or RSV3 was set without an extension that gives it a meaning
    /// (section 5.2). Holds the three bits as `0b(rsv1)(rsv2)(rsv3)`.
    ReservedBits(u8),
    /// An opcode RFC 6455 does not define (section 5.2).
    UnknownOpcode(u8),
    /// A control frame without FIN (section 5.5: control frames MUST NOT be
    /// fragmented).
    FragmentedControlFrame,
    /// A control frame with more than 125 bytes of payload (section 5.5).
    ControlFrameTooLong,
    /// A client sent an unmasked frame (section 5.1).
    UnmaskedFrameFromClient,
    /// A server sent a masked frame (section 5.1).
    MaskedFrameFromServer,
    /// A 64-bit payload length with its most significant bit set (section 5.2).
    PayloadLengthTopBit,
    /// A payload length not written in the minimal number of bytes (section 5.2).
    NonMinimalLength,
    /// A continuation frame with no fragmented message to continue (section 5.4).
    UnexpectedContinuation,
    /// A text or binary frame while a fragmented message was unfinished (section 5.4).
    ExpectedContinuation,
    /// A close frame with a 1-byte payload (section 5.5.1).
    CloseFrameTooShort,
    /// A close frame with a code that may not be sent (section 7.4).
    InvalidCloseCode(u16),
    /// A text message that is not valid UTF-8 (section 8.1).
    InvalidUtf8,
    /// A close reason that is not valid UTF-8 (section 5.5.1).
    InvalidCloseReason,
    /// A compressed message (permessage-deflate, RFC 7692) that does not inflate.
    InvalidCompressedData,
    /// A frame larger than the configured maximum.
    FrameTooLarge {
        /// The frame's payload length.
        size: u64,
        /// The configured maximum.
        max: usize,
    },
    /// A message larger than the configured maximum.
    MessageTooLarge {
        /// The size the message reached, at least.
        size: u64,
        /// The configured maximum.
        max: usize,
    },
}

impl ProtocolError {
    /// The close code this failure is reported to the peer with: 1002 for a
    /// protocol violation, 1007 for data that does not match its type, 1009 for
    /// a frame or message over the limit.
    pub fn close_code(&self) -> CloseCode {
        use ProtocolError::*;
        match self {
            InvalidUtf8 | InvalidCloseReason | InvalidCompressedData => CloseCode::INVALID_PAYLOAD,
            FrameTooLarge { .. } | MessageTooLarge { .. } => CloseCode::MESSAGE_TOO_BIG,
            ReservedBits(_)
            | UnknownOpcode(_)
            | FragmentedControlFrame
            | ControlFrameTooLong
            | UnmaskedFrameFromClient
            | MaskedFrameFromServer
            | PayloadLengthTopBit
            | NonMinimalLength
            | UnexpectedContinuation
            | ExpectedContinuation
            | CloseFrameTooShort
            | InvalidCloseCode(_) => CloseCode::PROTOCOL_ERROR,
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ProtocolError::*;
        match self {
            ReservedBits(bits) => write!(
                f,
                "reserved bits {bits:03b} set without a negotiated extension"
            ),
            UnknownOpcode(op) => write!(f, "unknown opcode {op:#x}"),
            FragmentedControlFrame => f.write_str("fragmented control frame"),
            ControlFrameTooLong => f.write_str("control frame payload over 125 bytes"),
            UnmaskedFrameFromClient => f.write_str("unmasked frame from client"),
            MaskedFrameFromServer => f.write_str("masked frame from server"),
            PayloadLengthTopBit => f.write_str("64-bit payload length with the top bit set"),
            NonMinimalLength => f.write_str("payload length not minimally encoded"),
            UnexpectedContinuation => f.write_str("continuation frame without a message"),
            ExpectedContinuation => f.write_str("new data frame inside a fragmented message"),
            CloseFrameTooShort => f.write_str("close frame with a 1-byte payload"),
            InvalidCloseCode(code) => write!(f, "invalid close code {code}"),
            InvalidUtf8 => f.write_str("text message is not valid UTF-8"),
            InvalidCloseReason => f.write_str("close reason is not valid UTF-8"),
            InvalidCompressedData => f.write_str("compressed message does not inflate"),
            FrameTooLarge { size, max } => {
                write!(f, "frame of {size} bytes exceeds the limit of {max}")
            }
            MessageTooLarge { size, max } => {
                write!(
                    f,
                    "message of {size} bytes or more exceeds the limit of {max}"
                )
            }
        }
    }
}

impl std::error::Error for ProtocolError {}

/// A send the protocol does not allow. Nothing was queued.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// A close frame was already sent, or the connection failed: nothing more may
    /// be sent (RFC 6455 section 5.5.1).
    Closed,
    /// A control frame (ping, pong, close) payload over 125 bytes.
    ControlPayloadTooLong(usize),
    /// A close code that may not appear on the wire (1005, 1006, 1015, reserved or
    /// unassigned codes).
    InvalidCloseCode(u16),
    /// A close reason over 123 bytes.
    CloseReasonTooLong(usize),
    /// A new message while a fragmented message is still being sent.
    MessageInProgress,
    /// A continuation fragment with no fragmented message being sent.
    NoMessageInProgress,
    /// A text fragment that is not valid UTF-8, or a text message that ended
    /// inside a code point.
    InvalidUtf8,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use SendError::*;
        match self {
            Closed => f.write_str("the connection is closing or closed; nothing more can be sent"),
            ControlPayloadTooLong(len) => write!(
                f,
                "control frame payload of {len} bytes; ping, pong and close carry at most 125"
            ),
            InvalidCloseCode(code) => write!(
                f,
                "close code {code} may not be sent; use 1000-1003, 1007-1014 or 3000-4999"
            ),
            CloseReasonTooLong(len) => write!(
                f,
                "close reason of {len} bytes; at most {MAX_REASON_LEN} fit in a close frame"
            ),
            MessageInProgress => f.write_str(
                "a fragmented message is being sent; finish it with a final continuation first",
            ),
            NoMessageInProgress => {
                f.write_str("continuation fragment without a fragmented message to continue")
            }
            InvalidUtf8 => f.write_str("text fragment is not valid UTF-8"),
        }
    }
}

impl std::error::Error for SendError {}
