//! Output: messages, fragments and control frames encoded into the queue
//! of bytes for the transport, and that queue taken a piece at a time.

use std::io::IoSlice;

use bytes::{Bytes, BytesMut};

use super::{Connection, Fragment};
use crate::close::{CloseCode, CloseFrame};
use crate::error::SendError;
#[cfg(feature = "deflate")]
use crate::frame::RSV1;
use crate::frame::{FrameHeader, MAX_CONTROL_PAYLOAD, OpCode, Role};
use crate::mask::apply_mask;
use crate::message::Message;
use crate::prepared::PreparedMessage;
use crate::utf8::Utf8Validator;

/// The fragmented message being sent.
#[derive(Debug)]
pub(super) struct Outgoing {
    /// For text, the UTF-8 state of the fragments sent so far.
    utf8: Option<Utf8Validator>,
}

impl Connection {
    /// Queues a message: text, binary, ping, pong or close.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] after our close frame (RFC 6455 section 5.5.1: no
    /// frame may follow it); [`SendError::MessageInProgress`] for a text or binary
    /// message while a fragmented one is unfinished; the errors of
    /// [`close`](Self::close) for a close, and of control frames over 125 bytes.
    /// On error nothing is queued.
    pub fn send(&mut self, message: Message) -> Result<(), SendError> {
        match message {
            Message::Text(text) => self.send_data(OpCode::Text, text.into_bytes()),
            Message::Binary(data) => self.send_data(OpCode::Binary, data),
            Message::Ping(data) => self.send_control(OpCode::Ping, data),
            Message::Pong(data) => self.send_control(OpCode::Pong, data),
            Message::Close(frame) => self.send_close(frame),
        }
    }

    /// Sends a message encoded once for many connections (see
    /// [`PreparedMessage`]): a server queues the prepared frame's bytes by
    /// reference, uncompressed; a client, which must mask, encodes it afresh.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send) for a text or binary message.
    pub fn send_prepared(&mut self, prepared: &PreparedMessage) -> Result<(), SendError> {
        if self.role == Role::Client {
            return self.send(prepared.message().clone());
        }
        self.check_open()?;
        if self.outgoing.is_some() {
            return Err(SendError::MessageInProgress);
        }
        self.output.push_shared(prepared.frame().clone());
        self.output.end_frame();
        Ok(())
    }

    /// Sends a prepared message, offering its frame to `write` first when
    /// nothing is queued ahead of it: `write` hands the bytes to the transport
    /// at once and returns how many it took (0 for none), and only the rest is
    /// queued. This is the broadcast path of a socket with room: one write
    /// from the shared frame, no copy into this connection's output. With
    /// output waiting (order comes first), or as a client (which must mask
    /// its own copy), `write` is not called and this is
    /// [`send_prepared`](Self::send_prepared). Returns the bytes `write` took.
    ///
    /// # Errors
    ///
    /// As [`send_prepared`](Self::send_prepared); `write` is not called.
    pub fn send_prepared_direct(
        &mut self,
        prepared: &PreparedMessage,
        write: impl FnOnce(&[u8]) -> usize,
    ) -> Result<usize, SendError> {
        if self.role == Role::Client || self.has_output() {
            return self.send_prepared(prepared).map(|()| 0);
        }
        self.check_open()?;
        if self.outgoing.is_some() {
            return Err(SendError::MessageInProgress);
        }
        let frame = prepared.frame();
        let taken = write(frame).min(frame.len());
        if taken < frame.len() {
            self.output.push_shared(frame.slice(taken..));
            self.output.end_frame();
        }
        Ok(taken)
    }

    /// Starts the closing handshake with this code and reason.
    ///
    /// # Errors
    ///
    /// [`SendError::InvalidCloseCode`] for a code that may not be sent (1005,
    /// 1006, 1015 and unassigned codes); [`SendError::CloseReasonTooLong`] for a
    /// reason over 123 bytes; [`SendError::Closed`] if a close was already sent.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        self.send_close(Some(CloseFrame::new(code, reason)))
    }

    /// Sends one frame of a fragmented message (section 5.4): first a
    /// [`Fragment::Text`] or [`Fragment::Binary`], then any number of
    /// [`Fragment::Continuation`]s, the last with `fin` set. A first frame with
    /// `fin` set is a whole message. Pings, pongs and a close may be sent between
    /// fragments; other messages may not.
    ///
    /// Text fragments may split a code point between them; the text as a whole
    /// is checked to be UTF-8 as it goes.
    ///
    /// # Errors
    ///
    /// [`SendError::MessageInProgress`], [`SendError::NoMessageInProgress`] for a
    /// frame out of sequence, [`SendError::InvalidUtf8`] for text that is not
    /// UTF-8, [`SendError::Closed`] after our close. On error nothing is queued and
    /// the message in progress stays as it was.
    pub fn send_fragment(
        &mut self,
        kind: Fragment,
        payload: impl Into<Bytes>,
        fin: bool,
    ) -> Result<(), SendError> {
        self.check_open()?;
        let payload = payload.into();
        let (opcode, mut utf8) = match (kind, &self.outgoing) {
            (Fragment::Text | Fragment::Binary, Some(_)) => {
                return Err(SendError::MessageInProgress);
            }
            (Fragment::Continuation, None) => return Err(SendError::NoMessageInProgress),
            (Fragment::Text, None) => (OpCode::Text, Some(Utf8Validator::new())),
            (Fragment::Binary, None) => (OpCode::Binary, None),
            (Fragment::Continuation, Some(out)) => (OpCode::Continuation, out.utf8.clone()),
        };
        if let Some(utf8) = utf8.as_mut() {
            utf8.feed(&payload).map_err(|_| SendError::InvalidUtf8)?;
            if fin {
                utf8.finish().map_err(|_| SendError::InvalidUtf8)?;
            }
        }
        self.outgoing = (!fin).then_some(Outgoing { utf8 });
        self.write_frame(opcode, fin, 0, payload);
        Ok(())
    }

    fn check_open(&self) -> Result<(), SendError> {
        if self.close_sent.is_some() || self.transport_closed {
            Err(SendError::Closed)
        } else {
            Ok(())
        }
    }

    fn send_data(&mut self, opcode: OpCode, payload: Bytes) -> Result<(), SendError> {
        self.check_open()?;
        if self.outgoing.is_some() {
            return Err(SendError::MessageInProgress);
        }
        #[cfg(feature = "deflate")]
        if let Some(deflate) = self.deflate.as_mut()
            && payload.len() >= deflate.params.threshold
            && let Some(compressed) = deflate.deflater.compress(&payload)
        {
            self.write_frame(opcode, true, RSV1, compressed);
            return Ok(());
        }
        self.write_frame(opcode, true, 0, payload);
        Ok(())
    }

    fn send_control(&mut self, opcode: OpCode, payload: Bytes) -> Result<(), SendError> {
        self.check_open()?;
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(SendError::ControlPayloadTooLong(payload.len()));
        }
        self.write_frame(opcode, true, 0, payload);
        Ok(())
    }

    fn send_close(&mut self, frame: Option<CloseFrame>) -> Result<(), SendError> {
        self.check_open()?;
        if let Some(frame) = &frame {
            frame.check_sendable()?;
        }
        self.write_close(frame);
        Ok(())
    }

    pub(super) fn write_close(&mut self, frame: Option<CloseFrame>) {
        let mut payload = BytesMut::new();
        if let Some(frame) = &frame {
            frame.write_payload(&mut payload);
        }
        self.write_frame(OpCode::Close, true, 0, payload.freeze());
        self.close_sent = Some(Box::new(frame.into()));
    }

    /// Encodes a frame into the output: a client masks a copy of the payload; a
    /// server queues the payload as it is.
    pub(super) fn write_frame(&mut self, opcode: OpCode, fin: bool, rsv: u8, payload: Bytes) {
        let mask = self.mask_source.as_mut().map(|m| m.next_mask());
        let header = FrameHeader {
            fin,
            rsv,
            opcode,
            mask,
            payload_len: payload.len() as u64,
        };
        match mask {
            None => {
                let mut bytes = [0; FrameHeader::MAX_LEN];
                let len = header.encode_into(&mut bytes);
                self.output.push_frame(&bytes[..len], payload);
            }
            Some(key) => self.output.write(|out| {
                header.encode(out);
                let start = out.len();
                out.extend_from_slice(&payload);
                apply_mask(&mut out[start..], key);
            }),
        }
        self.output.end_frame();
    }

    /// The number of bytes queued and not yet taken by the transport, like the
    /// browser's `bufferedAmount` (which also counts frame headers here).
    pub fn buffered_amount(&self) -> usize {
        self.output.len()
    }

    /// The number of frames queued and not yet wholly taken by the
    /// transport (control frames included): a send queue's length, where
    /// [`buffered_amount`](Self::buffered_amount) is its size.
    pub fn queued_frames(&self) -> usize {
        self.output.frames()
    }

    /// Whether there are bytes to write.
    pub fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    /// Takes the oldest queued output, one chunk at a time; `None` when there is
    /// none.
    pub fn take_output(&mut self) -> Option<Bytes> {
        self.output.take_chunk()
    }

    /// Fills `dst` with slices of the queued output, oldest first, for a vectored
    /// write; returns how many were filled. Follow with
    /// [`advance_output`](Self::advance_output) by the number of bytes written.
    pub fn output_slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        self.output.io_slices(dst)
    }

    /// The oldest queued output as one contiguous slice, for a plain write.
    pub fn output_chunk(&self) -> &[u8] {
        self.output.first_chunk()
    }

    /// Marks the first `n` bytes of queued output as written.
    ///
    /// # Panics
    ///
    /// If `n` is larger than [`buffered_amount`](Self::buffered_amount).
    pub fn advance_output(&mut self, n: usize) {
        self.output.advance(n);
    }
}
