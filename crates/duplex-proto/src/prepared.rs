//! Messages encoded once, sent on many connections: the unit of a broadcast.

use bytes::{Bytes, BytesMut};

use crate::frame::{FrameHeader, OpCode};
use crate::message::Message;
use crate::utf8::Utf8Bytes;

/// A text or binary message already encoded as the frame a server sends.
///
/// A server's frames are not masked, so the same bytes are valid on every
/// connection: a broadcast to ten thousand clients encodes the message once and
/// queues the same reference-counted bytes ten thousand times, with no copy for
/// payloads over 4 KiB. Sending it with
/// [`Connection::send_prepared`](crate::Connection::send_prepared) skips
/// permessage-deflate (a compressor's state differs per connection, and any
/// message may go uncompressed); a client, which must mask, encodes it afresh.
///
/// ```
/// use duplex_proto::{Limits, Connection, PreparedMessage};
/// let prepared = PreparedMessage::text("price: 101.25");
/// let mut a = Connection::server(Limits::default());
/// let mut b = Connection::server(Limits::default());
/// a.send_prepared(&prepared).unwrap();
/// b.send_prepared(&prepared).unwrap();
/// assert_eq!(a.take_output(), b.take_output());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedMessage {
    message: Message,
    frame: Bytes,
}

impl PreparedMessage {
    /// A text message, prepared.
    pub fn text(text: impl Into<Utf8Bytes>) -> Self {
        Self::encode(Message::Text(text.into()), OpCode::Text)
    }

    /// A binary message, prepared.
    pub fn binary(data: impl Into<Bytes>) -> Self {
        Self::encode(Message::Binary(data.into()), OpCode::Binary)
    }

    fn encode(message: Message, opcode: OpCode) -> Self {
        let payload = match &message {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(data) => &data[..],
            _ => &[],
        };
        let header = FrameHeader::new(opcode, payload.len() as u64);
        let mut frame = BytesMut::with_capacity(header.encoded_len() + payload.len());
        header.encode(&mut frame);
        frame.extend_from_slice(payload);
        PreparedMessage {
            frame: frame.freeze(),
            message,
        }
    }

    /// The message.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The frame as a server puts it on the wire.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }
}
