//! Close codes and close frames (RFC 6455 sections 5.5.1 and 7.4).

use std::fmt;

use bytes::{BufMut, Bytes};

use crate::error::ProtocolError;
use crate::utf8::{self, Utf8Bytes};

/// The longest close reason that fits in a close frame: 125 bytes of control
/// payload less 2 for the code.
pub const MAX_REASON_LEN: usize = 123;

/// A close status code (RFC 6455 section 7.4).
///
/// Any `u16` can be held, since a peer may send anything; [`is_sendable`]
/// says whether a code may appear in a close frame.
///
/// [`is_sendable`]: CloseCode::is_sendable
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection has been fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the endpoint is going away (server shutdown, page navigation).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: the endpoint cannot accept this kind of data (text or binary).
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1005: no code was present in the close frame. Never sent; only reported.
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: the connection closed without a close frame. Never sent; only reported.
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: a message's data did not match its type (text that is not UTF-8).
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: a message violated the endpoint's policy.
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: a frame or message was larger than the endpoint accepts.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1010: the client needed an extension the server did not negotiate.
    pub const MANDATORY_EXTENSION: CloseCode = CloseCode(1010);
    /// 1011: the server met an unexpected condition.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1012: the service is restarting.
    pub const SERVICE_RESTART: CloseCode = CloseCode(1012);
    /// 1013: try again later (temporary overload).
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
    /// 1014: a gateway received an invalid response from upstream.
    pub const BAD_GATEWAY: CloseCode = CloseCode(1014);
    /// 1015: the TLS handshake failed. Never sent; only reported.
    pub const TLS_HANDSHAKE: CloseCode = CloseCode(1015);

    /// Whether this code may appear in a close frame on the wire: 1000-1003,
    /// 1007-1014 (defined by RFC 6455 and registered with IANA) and 3000-4999
    /// (libraries, frameworks and applications). 1004 is reserved, 1005, 1006
    /// and 1015 are only ever local results, and the rest are unassigned.
    pub const fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }

    /// A short name for the code, for logs and error messages.
    pub const fn name(self) -> &'static str {
        match self.0 {
            1000 => "normal closure",
            1001 => "going away",
            1002 => "protocol error",
            1003 => "unsupported data",
            1005 => "no status received",
            1006 => "abnormal closure",
            1007 => "invalid payload data",
            1008 => "policy violation",
            1009 => "message too big",
            1010 => "mandatory extension",
            1011 => "internal error",
            1012 => "service restart",
            1013 => "try again later",
            1014 => "bad gateway",
            1015 => "TLS handshake failure",
            3000..=3999 => "registered code",
            4000..=4999 => "application code",
            _ => "unassigned code",
        }
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        CloseCode(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> Self {
        code.0
    }
}

impl fmt::Debug for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CloseCode({})", self.0)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.0, self.name())
    }
}

/// The body of a close frame: a code and a reason.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CloseFrame {
    /// The status code.
    pub code: CloseCode,
    /// The reason, at most [`MAX_REASON_LEN`] bytes of UTF-8; often empty.
    pub reason: Utf8Bytes,
}

impl CloseFrame {
    /// A close frame with this code and reason.
    pub fn new(code: CloseCode, reason: impl Into<Utf8Bytes>) -> Self {
        CloseFrame {
            code,
            reason: reason.into(),
        }
    }

    /// Parses a received close payload (RFC 6455 section 5.5.1).
    ///
    /// An empty payload is a close without a code (`Ok(None)`).
    ///
    /// # Errors
    ///
    /// A 1-byte payload or a code that may not be sent is a protocol error (1002); a
    /// reason that is not UTF-8 is invalid data (1007).
    pub fn parse(payload: &Bytes) -> Result<Option<CloseFrame>, ProtocolError> {
        match payload.len() {
            0 => Ok(None),
            1 => Err(ProtocolError::CloseFrameTooShort),
            _ => {
                let code = CloseCode(u16::from_be_bytes([payload[0], payload[1]]));
                if !code.is_sendable() {
                    return Err(ProtocolError::InvalidCloseCode(code.0));
                }
                let reason = payload.slice(2..);
                utf8::validate(&reason).map_err(|_| ProtocolError::InvalidCloseReason)?;
                Ok(Some(CloseFrame {
                    code,
                    reason: Utf8Bytes::from_validated(reason),
                }))
            }
        }
    }

    /// Checks that this frame may be sent: a sendable code and a reason that fits.
    pub fn check_sendable(&self) -> Result<(), crate::SendError> {
        if !self.code.is_sendable() {
            return Err(crate::SendError::InvalidCloseCode(self.code.0));
        }
        if self.reason.len() > MAX_REASON_LEN {
            return Err(crate::SendError::CloseReasonTooLong(self.reason.len()));
        }
        Ok(())
    }

    /// Appends the frame's payload (code then reason) to `dst`.
    pub fn write_payload(&self, dst: &mut impl BufMut) {
        dst.put_u16(self.code.0);
        dst.put_slice(self.reason.as_bytes());
    }

    /// The length of the payload [`write_payload`](Self::write_payload) writes.
    pub fn payload_len(&self) -> usize {
        2 + self.reason.len()
    }
}

impl fmt::Display for CloseFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reason.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{}: {}", self.code, self.reason)
        }
    }
}

/// A close frame as it was sent or received: with a status code and a
/// reason, or empty (RFC 6455 section 5.5.1), which a close event reports as
/// 1005 ([`CloseCode::NO_STATUS`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CloseStatus {
    /// The frame carried a code, and a reason that may be empty.
    Frame(CloseFrame),
    /// The frame had no payload: no code.
    Empty,
}

impl CloseStatus {
    /// The frame's code and reason, unless it was empty.
    pub fn frame(&self) -> Option<&CloseFrame> {
        match self {
            CloseStatus::Frame(frame) => Some(frame),
            CloseStatus::Empty => None,
        }
    }

    /// The code, or [`CloseCode::NO_STATUS`] (1005) for an empty frame.
    pub fn code(&self) -> CloseCode {
        self.frame()
            .map_or(CloseCode::NO_STATUS, |frame| frame.code)
    }

    /// The reason; empty for an empty frame.
    pub fn reason(&self) -> &str {
        self.frame().map_or("", |frame| frame.reason.as_str())
    }
}

impl From<Option<CloseFrame>> for CloseStatus {
    fn from(frame: Option<CloseFrame>) -> Self {
        frame.map_or(CloseStatus::Empty, CloseStatus::Frame)
    }
}

impl From<CloseFrame> for CloseStatus {
    fn from(frame: CloseFrame) -> Self {
        CloseStatus::Frame(frame)
    }
}

impl From<CloseStatus> for Option<CloseFrame> {
    fn from(status: CloseStatus) -> Self {
        match status {
            CloseStatus::Frame(frame) => Some(frame),
            CloseStatus::Empty => None,
        }
    }
}

impl fmt::Display for CloseStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseStatus::Frame(frame) => frame.fmt(f),
            CloseStatus::Empty => write!(f, "{} (empty close frame)", CloseCode::NO_STATUS.0),
        }
    }
}

/// Shortens `reason` to at most [`MAX_REASON_LEN`] bytes, on a character boundary.
pub(crate) fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= MAX_REASON_LEN {
        return reason;
    }
    let mut end = MAX_REASON_LEN;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sendable_codes_are_exactly_the_rfc_ranges() {
        for code in 0..=u16::MAX {
            let expected = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            assert_eq!(CloseCode(code).is_sendable(), expected, "{code}");
        }
        for local_only in [1005, 1006, 1015] {
            assert!(!CloseCode(local_only).is_sendable());
        }
    }

    #[test]
    fn parse_empty_is_no_status() {
        assert_eq!(CloseFrame::parse(&Bytes::new()), Ok(None));
    }

    #[test]
    fn parse_one_byte_is_a_protocol_error() {
        let err = CloseFrame::parse(&Bytes::from_static(&[0x03])).unwrap_err();
        assert_eq!(err, ProtocolError::CloseFrameTooShort);
        assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);
    }

    #[test]
    fn parse_code_and_reason() {
        let frame = CloseFrame::parse(&Bytes::from_static(b"\x03\xe8bye")).unwrap();
        assert_eq!(frame, Some(CloseFrame::new(CloseCode::NORMAL, "bye")));
    }

    #[test]
    fn parse_rejects_codes_that_may_not_be_sent() {
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            let payload = Bytes::copy_from_slice(&code.to_be_bytes());
            let err = CloseFrame::parse(&payload).unwrap_err();
            assert_eq!(err, ProtocolError::InvalidCloseCode(code));
            assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);
        }
    }

    #[test]
    fn parse_rejects_a_reason_that_is_not_utf8() {
        let err = CloseFrame::parse(&Bytes::from_static(b"\x03\xe8\xff")).unwrap_err();
        assert_eq!(err, ProtocolError::InvalidCloseReason);
        assert_eq!(err.close_code(), CloseCode::INVALID_PAYLOAD);
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        let long = "é".repeat(100); // 200 bytes
        let cut = truncate_reason(&long);
        assert!(cut.len() <= MAX_REASON_LEN);
        assert_eq!(cut.len(), 122);
        assert_eq!(truncate_reason("short"), "short");
    }
}
