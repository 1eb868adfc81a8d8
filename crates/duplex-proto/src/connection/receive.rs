//! Input: bytes from the transport decoded into messages, the replies
//! they call for queued, and the failures they cause.

use bytes::{Buf, Bytes, BytesMut};

use super::Connection;
use crate::close::{CloseFrame, truncate_reason};
use crate::error::ProtocolError;
use crate::frame::{Frame, FrameEvent, FrameHeader, OpCode, RSV1, SHARE_MIN};
use crate::mask::apply_mask;
use crate::message::Message;
use crate::utf8::{Utf8Bytes, Utf8Validator};

/// The message being received, from its first frame's header on.
#[derive(Debug)]
pub(super) struct Incoming {
    text: bool,
    /// RSV1 on the first frame: the payload is DEFLATE (RFC 7692), and
    /// `fragments` holds what it inflates to.
    compressed: bool,
    size: u64,
    utf8: Utf8Validator,
    /// The payloads of the frames before the last; empty for a one-frame message.
    fragments: BytesMut,
}

impl Connection {
    /// Appends bytes read from the transport. Ignored once no more input is
    /// wanted (after a close frame was received, or a failure).
    pub fn receive(&mut self, data: &[u8]) {
        if !self.input_done && !data.is_empty() {
            self.read_buf.extend_from_slice(data);
            self.timers.heard();
        }
    }

    /// Whether the connection wants more input: false once a close frame was
    /// received, the connection failed or the transport closed.
    pub fn wants_input(&self) -> bool {
        !self.input_done && !self.eof
    }

    /// Reports that the transport has no more input. Buffered bytes are still
    /// decoded by [`next_message`](Self::next_message); once it returns `Ok(None)`
    /// the connection is closed (abnormally, unless the close handshake was done).
    pub fn receive_eof(&mut self) {
        self.eof = true;
    }

    /// Decodes the next message from the buffered input.
    ///
    /// Returns `Ok(None)` when the buffered bytes hold no further whole message.
    /// Pings are answered with a pong and a close frame with a close (section
    /// 5.5), before the ping or close is returned. After a close frame, further
    /// input is ignored.
    ///
    /// # Errors
    ///
    /// The first protocol violation in the input, once; a close frame with its
    /// code is then queued, and later calls return `Ok(None)`.
    #[inline]
    pub fn next_message(&mut self) -> Result<Option<Message>, ProtocolError> {
        // An empty buffer holds no frame, nor the rest of one: a header is
        // consumed only with the bytes after it that are there, and a frame
        // whose payload is all there is decoded at once. This is the usual
        // answer when the caller is about to read, so it is given here,
        // without a call.
        if self.read_buf.is_empty() && !self.eof {
            return Ok(None);
        }
        if let Some(message) = self.next_short_message() {
            return message;
        }
        self.decode_messages()
    }

    /// The usual frame on a short path: a whole text or binary message in
    /// one final, uncompressed frame shorter than [`SHARE_MIN`] (so copied
    /// out), with no other message in progress and within the limits. The
    /// header is read by [`FrameDecoder::parse_header`], as for any frame;
    /// for any other frame, or bytes that break a rule, it returns `None`
    /// and the general decoder takes them (and reports what is wrong).
    #[inline]
    fn next_short_message(&mut self) -> Option<Result<Option<Message>, ProtocolError>> {
        if self.input_done || self.incoming.is_some() || self.decoder.is_mid_frame() {
            return None;
        }
        // A whole text or binary message in one frame (FIN set, no RSV
        // bits): tested on the first byte before the header is parsed, so
        // that the parse, inlined here, has the opcode's and the bits'
        // checks folded away.
        let text = match self.read_buf.first() {
            Some(0x81) => true,
            Some(0x82) => false,
            _ => return None,
        };
        let Ok(Some((header, header_len))) = self.decoder.parse_header(&self.read_buf) else {
            return None;
        };
        // `parse_header` checked the length against the frame size limit,
        // a usize.
        let len = header.payload_len as usize;
        if len >= SHARE_MIN
            || self.read_buf.len() - header_len < len
            || len > self.config.max_message_size
        {
            return None;
        }
        let frame = &mut self.read_buf[..header_len + len];
        let payload = &mut frame[header_len..];
        if let Some(key) = header.mask {
            apply_mask(payload, key);
        }
        if text && crate::utf8::validate(payload).is_err() {
            return Some(Err(self.fail(ProtocolError::InvalidUtf8)));
        }
        let payload = if len == 0 {
            Bytes::new()
        } else {
            Bytes::copy_from_slice(payload)
        };
        self.read_buf.advance(header_len + len);
        Some(Ok(Some(if text {
            Message::Text(Utf8Bytes::from_validated(payload))
        } else {
            Message::Binary(payload)
        })))
    }

    fn decode_messages(&mut self) -> Result<Option<Message>, ProtocolError> {
        while !self.input_done && !self.read_buf.is_empty() {
            let frame = match self.decode_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(err) => return Err(self.fail(err)),
            };
            match self.on_frame(frame) {
                Ok(Some(message)) => return Ok(Some(message)),
                Ok(None) => {}
                Err(err) => return Err(self.fail(err)),
            }
        }
        if self.eof && !self.transport_closed {
            self.transport_closed();
        }
        Ok(None)
    }

    /// Decodes one frame, checking message-level rules on the header and
    /// validating text as its bytes are unmasked.
    fn decode_frame(&mut self) -> Result<Option<Frame>, ProtocolError> {
        let compression = self.compression_agreed();
        let Connection {
            decoder,
            read_buf,
            incoming,
            config,
            ..
        } = self;
        decoder.decode_with(read_buf, |event| match event {
            FrameEvent::Header(header) => {
                start_frame(header, incoming, config.max_message_size, compression)
            }
            FrameEvent::Payload(header, piece) => match incoming {
                // Compressed text is validated as it inflates.
                Some(Incoming {
                    text: true,
                    compressed: false,
                    utf8,
                    ..
                }) if !header.opcode.is_control() => {
                    utf8.feed(piece).map_err(|_| ProtocolError::InvalidUtf8)
                }
                _ => Ok(()),
            },
        })
    }

    fn on_frame(&mut self, frame: Frame) -> Result<Option<Message>, ProtocolError> {
        let Frame { header, payload } = frame;
        match header.opcode {
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                // `start_frame` opened the message when the header arrived.
                let Some(incoming) = self.incoming.as_mut() else {
                    return Err(ProtocolError::UnexpectedContinuation);
                };
                #[cfg(feature = "deflate")]
                if incoming.compressed {
                    return self.on_compressed_frame(header.fin, &payload);
                }
                if !header.fin {
                    incoming.fragments.extend_from_slice(&payload);
                    return Ok(None);
                }
                let mut incoming = self
                    .incoming
                    .take()
                    .ok_or(ProtocolError::UnexpectedContinuation)?;
                let data = if incoming.fragments.is_empty() {
                    payload
                } else {
                    incoming.fragments.extend_from_slice(&payload);
                    std::mem::take(&mut incoming.fragments).freeze()
                };
                finish_message(incoming, data)
            }
            OpCode::Ping => {
                // Section 5.5.2: answer with a pong carrying the same data, unless
                // our close is sent (nothing may follow it).
                if self.close_sent.is_none() {
                    self.write_frame(OpCode::Pong, true, 0, payload.clone());
                }
                Ok(Some(Message::Ping(payload)))
            }
            // The answer to our own keepalive ping is not news.
            OpCode::Pong if self.timers.on_pong(&payload) => Ok(None),
            OpCode::Pong => Ok(Some(Message::Pong(payload))),
            OpCode::Close => {
                let frame = CloseFrame::parse(&payload)?;
                self.close_received = Some(Box::new(frame.clone().into()));
                self.input_done = true;
                self.read_buf = BytesMut::new();
                if self.close_sent.is_none() {
                    // Section 5.5.1: answer with a close, echoing the code (and
                    // the reason, so the side that closed sees its own words in
                    // the close event, as with Python websockets and Node ws).
                    let echo = frame.as_ref().cloned();
                    self.write_close(echo);
                }
                Ok(Some(Message::Close(frame)))
            }
        }
    }

    /// Inflates a frame of a compressed message; after the last, returns the
    /// message.
    #[cfg(feature = "deflate")]
    fn on_compressed_frame(
        &mut self,
        fin: bool,
        payload: &[u8],
    ) -> Result<Option<Message>, ProtocolError> {
        let max = self.config.max_message_size;
        let (Some(incoming), Some(deflate)) = (self.incoming.as_mut(), self.deflate.as_mut())
        else {
            // `start_frame` marks a message compressed only once deflate is on.
            return Err(ProtocolError::ReservedBits(RSV1));
        };
        let Incoming {
            text,
            utf8,
            fragments,
            ..
        } = incoming;
        let mut check = |piece: &[u8]| {
            if *text {
                utf8.feed(piece).map_err(|_| ProtocolError::InvalidUtf8)
            } else {
                Ok(())
            }
        };
        deflate
            .inflater
            .inflate(payload, fragments, max, &mut check)?;
        if !fin {
            return Ok(None);
        }
        deflate.inflater.finish(fragments, max, &mut check)?;
        let mut incoming = self
            .incoming
            .take()
            .ok_or(ProtocolError::UnexpectedContinuation)?;
        let data = std::mem::take(&mut incoming.fragments).freeze();
        finish_message(incoming, data)
    }

    /// Fails the connection: queues a close frame with the error's code (unless
    /// one was sent), and stops reading.
    pub(super) fn fail(&mut self, err: ProtocolError) -> ProtocolError {
        if self.close_sent.is_none() {
            let reason = err.to_string();
            let frame = CloseFrame::new(err.close_code(), truncate_reason(&reason));
            self.write_close(Some(frame));
        }
        self.failure = Some(err.clone());
        self.stop_input();
        err
    }

    pub(super) fn stop_input(&mut self) {
        self.input_done = true;
        self.read_buf = BytesMut::new();
        self.incoming = None;
    }
}

/// The message a finished `incoming` holds, `data` being all its payload:
/// text is checked to end on a code point boundary (section 8.1).
fn finish_message(mut incoming: Incoming, data: Bytes) -> Result<Option<Message>, ProtocolError> {
    if incoming.text {
        incoming
            .utf8
            .finish()
            .map_err(|_| ProtocolError::InvalidUtf8)?;
        Ok(Some(Message::Text(Utf8Bytes::from_validated(data))))
    } else {
        Ok(Some(Message::Binary(data)))
    }
}

/// Message-level checks on a frame header, the moment it is whole (section 5.4):
/// fragments in sequence and the message within its size limit. Opens the
/// incoming message on its first frame. With compression agreed, RSV1 marks a
/// compressed message and is allowed on a message's first frame only (RFC 7692
/// section 6.1).
fn start_frame(
    header: &FrameHeader,
    incoming: &mut Option<Incoming>,
    max_message_size: usize,
    compression: bool,
) -> Result<(), ProtocolError> {
    let compressed = header.rsv & RSV1 != 0;
    if compressed
        && (!compression || header.opcode.is_control() || header.opcode == OpCode::Continuation)
    {
        return Err(ProtocolError::ReservedBits(header.rsv));
    }
    let text = match header.opcode {
        OpCode::Text => true,
        OpCode::Binary => false,
        OpCode::Continuation => {
            let Some(message) = incoming.as_mut() else {
                return Err(ProtocolError::UnexpectedContinuation);
            };
            return grow(message, header.payload_len, max_message_size);
        }
        // Control frames may arrive between fragments and are whole in themselves.
        OpCode::Close | OpCode::Ping | OpCode::Pong => return Ok(()),
    };
    if incoming.is_some() {
        return Err(ProtocolError::ExpectedContinuation);
    }
    let message = incoming.insert(Incoming {
        text,
        compressed,
        size: 0,
        utf8: Utf8Validator::new(),
        fragments: BytesMut::new(),
    });
    grow(message, header.payload_len, max_message_size)
}

fn grow(message: &mut Incoming, len: u64, max: usize) -> Result<(), ProtocolError> {
    let size = message.size.saturating_add(len);
    if size > max as u64 {
        return Err(ProtocolError::MessageTooLarge { size, max });
    }
    message.size = size;
    Ok(())
}
