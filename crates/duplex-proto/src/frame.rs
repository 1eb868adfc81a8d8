//! Frames: the header format of RFC 6455 section 5.2, encoding, and an incremental
//! decoder that checks every frame-level rule as soon as the bytes it needs arrive.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::ProtocolError;
use crate::mask::apply_mask_at;

/// Which end of the connection this is. The one difference between the two that
/// the frame layer sees: clients mask every frame they send, servers never do
/// (section 5.1), and each side rejects frames that break that rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The end that sent the opening handshake request.
    Client,
    /// The end that answered it.
    Server,
}

/// A frame opcode (section 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation = 0x0,
    /// 0x1: first frame of a text message.
    Text = 0x1,
    /// 0x2: first frame of a binary message.
    Binary = 0x2,
    /// 0x8: close.
    Close = 0x8,
    /// 0x9: ping.
    Ping = 0x9,
    /// 0xA: pong.
    Pong = 0xA,
}

impl OpCode {
    /// The opcode for a 4-bit value, if RFC 6455 defines one.
    pub const fn from_u8(value: u8) -> Option<OpCode> {
        Some(match value {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    /// Whether this is a control opcode (close, ping, pong).
    pub const fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// The RSV1 bit, as it appears in [`FrameHeader::rsv`].
pub const RSV1: u8 = 0b100;
/// The RSV2 bit, as it appears in [`FrameHeader::rsv`].
pub const RSV2: u8 = 0b010;
/// The RSV3 bit, as it appears in [`FrameHeader::rsv`].
pub const RSV3: u8 = 0b001;

/// The largest payload a control frame may carry (section 5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Payloads of this many bytes or more are decoded without a copy: the
/// payload is a view of the buffer it was read into, and keeps that buffer
/// alive while it is held. Shorter payloads are copied out.
pub const SHARE_MIN: usize = 8 << 10;

/// A frame header: everything before the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    /// FIN: this is the last frame of its message.
    pub fin: bool,
    /// RSV1, RSV2 and RSV3 as three bits: [`RSV1`] | [`RSV2`] | [`RSV3`].
    pub rsv: u8,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, if the payload is masked.
    pub mask: Option<[u8; 4]>,
    /// The payload length in bytes.
    pub payload_len: u64,
}

impl FrameHeader {
    /// The longest header: 2 bytes, a 64-bit length and a masking key.
    pub const MAX_LEN: usize = 14;

    /// A header for a final, unmasked frame with no RSV bits.
    pub fn new(opcode: OpCode, payload_len: u64) -> Self {
        FrameHeader {
            fin: true,
            rsv: 0,
            opcode,
            mask: None,
            payload_len,
        }
    }

    /// The number of bytes [`encode`](Self::encode) writes.
    pub fn encoded_len(&self) -> usize {
        let len_bytes = match self.payload_len {
            0..=125 => 0,
            126..=0xffff => 2,
            _ => 8,
        };
        2 + len_bytes + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Writes the header, with the length in the fewest bytes (section 5.2).
    ///
    /// The payload length must be below 2^63; a larger one is written with its top
    /// bit cleared, as no payload of that size can exist.
    pub fn encode(&self, dst: &mut impl BufMut) {
        let mut bytes = [0; Self::MAX_LEN];
        let len = self.encode_into(&mut bytes);
        dst.put_slice(&bytes[..len]);
    }

    /// Writes the header into `dst`, as [`encode`](Self::encode), and returns
    /// how many bytes it takes.
    pub fn encode_into(&self, dst: &mut [u8; Self::MAX_LEN]) -> usize {
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        dst[0] = (u8::from(self.fin) << 7) | ((self.rsv & 0b111) << 4) | self.opcode as u8;
        let mut at = match self.payload_len {
            len @ 0..=125 => {
                dst[1] = mask_bit | len as u8;
                2
            }
            len @ 126..=0xffff => {
                dst[1] = mask_bit | 126;
                dst[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                4
            }
            len => {
                dst[1] = mask_bit | 127;
                dst[2..10].copy_from_slice(&(len & (u64::MAX >> 1)).to_be_bytes());
                10
            }
        };
        if let Some(key) = self.mask {
            dst[at..at + 4].copy_from_slice(&key);
            at += 4;
        }
        at
    }
}

/// A whole frame: header and payload (unmasked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The header. `payload_len` equals `payload.len()`; `mask` is the key the
    /// payload was (or will be) masked with on the wire.
    pub header: FrameHeader,
    /// The payload, unmasked.
    pub payload: Bytes,
}

impl Frame {
    /// A final frame with this opcode and payload, unmasked.
    pub fn new(opcode: OpCode, payload: impl Into<Bytes>) -> Self {
        let payload = payload.into();
        Frame {
            header: FrameHeader::new(opcode, payload.len() as u64),
            payload,
        }
    }

    /// Appends the frame as it goes on the wire: the header, then the payload,
    /// masked with `header.mask` if there is one.
    pub fn encode(&self, dst: &mut BytesMut) {
        debug_assert_eq!(self.header.payload_len, self.payload.len() as u64);
        self.header.encode(dst);
        let start = dst.len();
        dst.extend_from_slice(&self.payload);
        if let Some(key) = self.header.mask {
            apply_mask_at(&mut dst[start..], key, 0);
        }
    }
}

/// What [`FrameDecoder::decode_with`] reports as a frame arrives.
#[derive(Debug)]
pub enum FrameEvent<'a> {
    /// A header is whole; its payload has not been looked at.
    Header(&'a FrameHeader),
    /// The next piece of the current frame's payload, unmasked.
    Payload(&'a FrameHeader, &'a [u8]),
}

/// Decodes frames from a byte buffer that fills up a read at a time.
///
/// Frame-level rules are checked as soon as the bytes they need are there: an
/// unknown opcode is reported from the first byte, a too-large frame from its
/// length field, before any of its payload is buffered. The rules:
/// RSV bits only where allowed (section 5.2), known opcodes, control frames final
/// and at most 125 bytes (section 5.5), masking by role (section 5.1), a 64-bit
/// length without its top bit, lengths in the fewest bytes (section 5.2), and the
/// configured maximum frame size.
///
/// ```
/// use bytes::BytesMut;
/// use duplex_proto::frame::{FrameDecoder, OpCode, Role};
///
/// // A masked "Hello" from a client (RFC 6455 section 5.7), in two reads.
/// let wire = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
/// let mut decoder = FrameDecoder::new(Role::Server, 1 << 20);
/// let mut buf = BytesMut::from(&wire[..3]);
/// assert!(decoder.decode(&mut buf).unwrap().is_none());
/// buf.extend_from_slice(&wire[3..]);
/// let frame = decoder.decode(&mut buf).unwrap().unwrap();
/// assert_eq!(frame.header.opcode, OpCode::Text);
/// assert_eq!(&frame.payload[..], b"Hello");
/// ```
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    role: Role,
    max_frame_size: usize,
    allowed_rsv: u8,
    in_flight: Option<InFlight>,
}

#[derive(Debug, Clone)]
struct InFlight {
    header: FrameHeader,
    /// How many payload bytes have been unmasked and passed on.
    done: usize,
}

impl FrameDecoder {
    /// A decoder for the frames that arrive at `role` (a server decodes masked
    /// client frames), rejecting frames larger than `max_frame_size`.
    pub fn new(role: Role, max_frame_size: usize) -> Self {
        FrameDecoder {
            role,
            max_frame_size,
            allowed_rsv: 0,
            in_flight: None,
        }
    }

    /// Allows the given RSV bits, for an extension that gives them a meaning.
    pub fn allow_rsv(&mut self, bits: u8) {
        self.allowed_rsv = bits & 0b111;
    }

    /// Whether part of a frame has been decoded and the rest is awaited.
    pub fn is_mid_frame(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Decodes the next whole frame from the front of `buf`, removing its bytes.
    ///
    /// Returns `Ok(None)` when more bytes are needed; call again once they are
    /// appended. A header is consumed as soon as it is whole and its payload is
    /// unmasked in place as it arrives, so no byte is looked at twice. A
    /// payload of [`SHARE_MIN`] bytes or more shares `buf`'s storage; a shorter
    /// one is copied.
    ///
    /// # Errors
    ///
    /// The first frame-level rule the bytes break. After an error, the decoder and
    /// the buffer are in an unspecified state: the connection has failed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        self.decode_with(buf, |_| Ok(()))
    }

    /// Like [`decode`](Self::decode), calling `on_event` with each header as soon
    /// as it is whole (before any payload is buffered) and with each piece of
    /// payload as soon as it is unmasked, so that message-level rules can fail the
    /// connection early.
    ///
    /// # Errors
    ///
    /// A frame-level rule the bytes break, or an error from `on_event`.
    pub fn decode_with(
        &mut self,
        buf: &mut BytesMut,
        mut on_event: impl FnMut(FrameEvent<'_>) -> Result<(), ProtocolError>,
    ) -> Result<Option<Frame>, ProtocolError> {
        let in_flight = match &mut self.in_flight {
            Some(in_flight) => in_flight,
            None => {
                let Some((header, header_len)) = self.parse_header(buf)? else {
                    return Ok(None);
                };
                on_event(FrameEvent::Header(&header))?;
                buf.advance(header_len);
                self.in_flight.insert(InFlight { header, done: 0 })
            }
        };
        // The frame-size check in `parse_header` keeps this within usize.
        let len = in_flight.header.payload_len as usize;
        let available = buf.len().min(len);
        if available > in_flight.done {
            let start = in_flight.done;
            let piece = &mut buf[start..available];
            if let Some(key) = in_flight.header.mask {
                apply_mask_at(piece, key, start);
            }
            in_flight.done = available;
            on_event(FrameEvent::Payload(&in_flight.header, piece))?;
        }
        if in_flight.done < len {
            return Ok(None);
        }
        let header = in_flight.header;
        self.in_flight = None;
        let payload = if len == 0 {
            Bytes::new()
        } else if len < SHARE_MIN {
            // A short payload is copied: it is cheap, and a payload kept for
            // long then keeps nothing else alive.
            let payload = Bytes::copy_from_slice(&buf[..len]);
            buf.advance(len);
            payload
        } else if buf.len() == len && buf.capacity() - len < SHARE_MIN {
            // A frame that is all the buffer holds, with no room after it
            // worth keeping, takes the buffer whole: freezing an unshared
            // buffer costs nothing, where splitting it would allocate to
            // share it.
            std::mem::take(buf).freeze()
        } else {
            // A long payload is a view of the buffer, which the next reads
            // go on filling after it.
            buf.split_to(len).freeze()
        };
        Ok(Some(Frame { header, payload }))
    }

    /// How many bytes, counted from the start of `buf`, the frame being
    /// decoded takes in all: the payload of the frame whose header was already
    /// consumed, or the header and payload of the frame whose header starts
    /// `buf`. `None` while that header is incomplete, or invalid (decoding
    /// reports why). A hint for sizing a read buffer; nothing is consumed.
    pub fn frame_len_hint(&self, buf: &[u8]) -> Option<usize> {
        // The frame-size check in `parse_header` keeps lengths within usize.
        match &self.in_flight {
            Some(in_flight) => Some(in_flight.header.payload_len as usize),
            None => match self.parse_header(buf) {
                Ok(Some((header, header_len))) => {
                    Some((header.payload_len as usize).saturating_add(header_len))
                }
                _ => None,
            },
        }
    }

    /// Parses the header at the front of `buf` without consuming it: its value and
    /// length, or `None` if it is not whole yet.
    ///
    /// Each rule is checked as soon as the bytes it needs are present, in the
    /// order of the bytes, so how the input was split into reads never changes
    /// which error is reported. It is the one header parser: the connection's
    /// short path for small messages reads headers with it too.
    #[inline(always)]
    pub fn parse_header(&self, buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        let Some(&b0) = buf.first() else {
            return Ok(None);
        };
        let fin = b0 & 0x80 != 0;
        let rsv = (b0 >> 4) & 0b111;
        if rsv & !self.allowed_rsv != 0 {
            return Err(ProtocolError::ReservedBits(rsv));
        }
        let opcode = OpCode::from_u8(b0 & 0x0f).ok_or(ProtocolError::UnknownOpcode(b0 & 0x0f))?;
        if opcode.is_control() && !fin {
            return Err(ProtocolError::FragmentedControlFrame);
        }

        let Some(&b1) = buf.get(1) else {
            return Ok(None);
        };
        let masked = b1 & 0x80 != 0;
        match (self.role, masked) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedFrameFromClient),
            (Role::Client, true) => return Err(ProtocolError::MaskedFrameFromServer),
            _ => {}
        }
        let len7 = b1 & 0x7f;
        if opcode.is_control() && usize::from(len7) > MAX_CONTROL_PAYLOAD {
            return Err(ProtocolError::ControlFrameTooLong);
        }

        let (payload_len, mut pos) = match len7 {
            126 => {
                let Some(bytes) = buf.get(2..4) else {
                    return Ok(None);
                };
                let len = u64::from(u16::from_be_bytes([bytes[0], bytes[1]]));
                if len < 126 {
                    return Err(ProtocolError::NonMinimalLength);
                }
                (len, 4)
            }
            127 => {
                // The top bit is in the first length byte: check it on arrival.
                if let Some(&first) = buf.get(2)
                    && first & 0x80 != 0
                {
                    return Err(ProtocolError::PayloadLengthTopBit);
                }
                let Some(bytes) = buf.get(2..10) else {
                    return Ok(None);
                };
                let mut be = [0u8; 8];
                be.copy_from_slice(bytes);
                let len = u64::from_be_bytes(be);
                if len <= 0xffff {
                    return Err(ProtocolError::NonMinimalLength);
                }
                (len, 10)
            }
            len => (u64::from(len), 2),
        };
        if payload_len > self.max_frame_size as u64 {
            return Err(ProtocolError::FrameTooLarge {
                size: payload_len,
                max: self.max_frame_size,
            });
        }

        let mask = if masked {
            let Some(key) = buf.get(pos..pos + 4) else {
                return Ok(None);
            };
            pos += 4;
            Some([key[0], key[1], key[2], key[3]])
        } else {
            None
        };
        Ok(Some((
            FrameHeader {
                fin,
                rsv,
                opcode,
                mask,
                payload_len,
            },
            pos,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(role: Role, wire: &[u8]) -> Result<Option<Frame>, ProtocolError> {
        FrameDecoder::new(role, 1 << 24).decode(&mut BytesMut::from(wire))
    }

    #[test]
    fn header_lengths_use_the_fewest_bytes() {
        for (len, expected) in [
            (0u64, 2usize),
            (125, 2),
            (126, 4),
            (0xffff, 4),
            (0x1_0000, 10),
        ] {
            let header = FrameHeader::new(OpCode::Binary, len);
            let mut out = BytesMut::new();
            header.encode(&mut out);
            assert_eq!(out.len(), expected);
            assert_eq!(header.encoded_len(), expected);
        }
    }

    #[test]
    fn opcodes_round_trip() {
        for v in 0..16u8 {
            match OpCode::from_u8(v) {
                Some(op) => assert_eq!(op as u8, v),
                None => assert!(matches!(v, 3..=7 | 0xb..=0xf)),
            }
        }
        assert!(OpCode::Ping.is_control());
        assert!(!OpCode::Continuation.is_control());
    }

    #[test]
    fn header_split_at_every_byte() {
        let mut wire = BytesMut::new();
        let frame = Frame {
            header: FrameHeader {
                mask: Some([9, 8, 7, 6]),
                ..FrameHeader::new(OpCode::Binary, 70_000)
            },
            payload: Bytes::from(vec![0xab; 70_000]),
        };
        frame.encode(&mut wire);
        for split in 0..20 {
            let mut decoder = FrameDecoder::new(Role::Server, 1 << 20);
            let mut buf = BytesMut::from(&wire[..split]);
            assert_eq!(decoder.decode(&mut buf).unwrap(), None, "split {split}");
            buf.extend_from_slice(&wire[split..]);
            assert_eq!(decoder.decode(&mut buf).unwrap(), Some(frame.clone()));
            assert!(buf.is_empty());
        }
    }

    /// Two masked binary frames with these payload lengths, back to back, in a
    /// buffer with `spare` bytes of room after them.
    fn two_frames(first: usize, second: usize, spare: usize) -> BytesMut {
        let mut wire = BytesMut::with_capacity(first + second + 28 + spare);
        for len in [first, second] {
            Frame {
                header: FrameHeader {
                    mask: Some([1, 2, 3, 4]),
                    ..FrameHeader::new(OpCode::Binary, len as u64)
                },
                payload: Bytes::from(vec![0x5a; len]),
            }
            .encode(&mut wire);
        }
        wire
    }

    fn shares(payload: &Bytes, buf: &std::ops::Range<usize>) -> bool {
        !payload.is_empty() && buf.contains(&(payload.as_ptr() as usize))
    }

    #[test]
    fn long_payloads_share_the_buffer_and_short_ones_are_copied() {
        for (first, second) in [(SHARE_MIN, 20), (20, SHARE_MIN), (SHARE_MIN - 1, 0)] {
            let mut buf = two_frames(first, second, SHARE_MIN);
            let start = buf.as_ptr() as usize;
            let storage = start..start + buf.capacity();
            let mut decoder = FrameDecoder::new(Role::Server, 1 << 20);
            for len in [first, second] {
                let frame = decoder.decode(&mut buf).unwrap().unwrap();
                assert_eq!(frame.payload[..], vec![0x5a; len][..], "{first}, {second}");
                assert_eq!(shares(&frame.payload, &storage), len >= SHARE_MIN, "{len}");
            }
            assert!(buf.is_empty());
            // The room after the frames stays the buffer's, for the next read.
            assert!(buf.capacity() >= SHARE_MIN);
        }
    }

    #[test]
    fn a_long_frame_that_fills_its_buffer_takes_it_whole() {
        let mut wire = two_frames(SHARE_MIN, 0, 0);
        // Only the first frame: the buffer holds it and nothing more.
        wire.truncate(8 + SHARE_MIN);
        let mut buf = BytesMut::with_capacity(wire.len());
        buf.extend_from_slice(&wire);
        let start = buf.as_ptr() as usize;
        let mut decoder = FrameDecoder::new(Role::Server, 1 << 20);
        let frame = decoder.decode(&mut buf).unwrap().unwrap();
        assert!(shares(&frame.payload, &(start..start + wire.len())));
        assert_eq!(buf.capacity(), 0);
    }

    #[test]
    fn frame_len_hint_before_and_during_a_frame() {
        let mut wire = BytesMut::new();
        let frame = Frame {
            header: FrameHeader {
                mask: Some([1, 2, 3, 4]),
                ..FrameHeader::new(OpCode::Binary, 70_000)
            },
            payload: Bytes::from(vec![7; 70_000]),
        };
        frame.encode(&mut wire);
        let mut decoder = FrameDecoder::new(Role::Server, 1 << 20);
        // 2 + 8 bytes of length + 4 of mask, then the payload.
        assert_eq!(decoder.frame_len_hint(&wire[..13]), None);
        assert_eq!(decoder.frame_len_hint(&wire), Some(14 + 70_000));
        // An unmasked frame to a server is an error: no hint.
        assert_eq!(decoder.frame_len_hint(&[0x82, 0x05]), None);
        // Once the header is consumed, the bytes that follow are payload.
        let mut buf = BytesMut::from(&wire[..14]);
        assert_eq!(decoder.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
        assert_eq!(decoder.frame_len_hint(&wire[14..20]), Some(70_000));
    }

    #[test]
    fn top_bit_of_64_bit_length_is_rejected_from_its_first_byte() {
        let wire = [0x82, 0x7f, 0x80];
        assert_eq!(
            decode_all(Role::Client, &wire),
            Err(ProtocolError::PayloadLengthTopBit)
        );
    }

    #[test]
    fn non_minimal_lengths_are_rejected() {
        assert_eq!(
            decode_all(Role::Client, &[0x82, 0x7e, 0x00, 0x05]),
            Err(ProtocolError::NonMinimalLength)
        );
        assert_eq!(
            decode_all(Role::Client, &[0x82, 0x7f, 0, 0, 0, 0, 0, 0, 0xff, 0xff]),
            Err(ProtocolError::NonMinimalLength)
        );
    }

    #[test]
    fn frame_size_limit_is_checked_before_the_payload_arrives() {
        let mut decoder = FrameDecoder::new(Role::Client, 1000);
        let mut buf = BytesMut::from(&[0x82, 0x7e, 0x03, 0xe9][..]);
        assert_eq!(
            decoder.decode(&mut buf),
            Err(ProtocolError::FrameTooLarge {
                size: 1001,
                max: 1000
            })
        );
    }

    #[test]
    fn allowed_rsv_bits_pass() {
        let mut decoder = FrameDecoder::new(Role::Client, 1000);
        decoder.allow_rsv(RSV1);
        let frame = decoder
            .decode(&mut BytesMut::from(&[0xc1, 0x00][..]))
            .unwrap()
            .unwrap();
        assert_eq!(frame.header.rsv, RSV1);
        assert_eq!(
            decoder.decode(&mut BytesMut::from(&[0xa1, 0x00][..])),
            Err(ProtocolError::ReservedBits(0b010))
        );
    }
}
