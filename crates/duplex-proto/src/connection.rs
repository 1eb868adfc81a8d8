//! The connection state machine: bytes in, messages out; messages in, bytes out.

use std::fmt;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

use crate::close::{CloseCode, CloseFrame, truncate_reason};
use crate::config::Limits;
use crate::error::{ProtocolError, SendError};
use crate::frame::{
    Frame, FrameDecoder, FrameEvent, FrameHeader, MAX_CONTROL_PAYLOAD, OpCode, RSV1, Role,
    SHARE_MIN,
};
use crate::mask::apply_mask;
use crate::message::Message;
use crate::output::Output;
use crate::prepared::PreparedMessage;
use crate::rng::MaskSource;
use crate::utf8::{Utf8Bytes, Utf8Validator};

/// The state of a connection, named as in the browser's `WebSocket.readyState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadyState {
    /// The opening handshake is under way. A [`Connection`] never reports it (it
    /// starts after the handshake); the async layer does.
    Connecting,
    /// Messages flow both ways.
    Open,
    /// A close frame was sent or received (or the connection failed); the
    /// transport is not closed yet.
    Closing,
    /// The transport is closed.
    Closed,
}

/// How a connection ended, as the browser's `CloseEvent` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    /// The code from the peer's close frame; 1005 if it had none; 1006 if none
    /// was received (the connection failed or the transport closed first).
    pub code: CloseCode,
    /// The reason from the peer's close frame, or empty.
    pub reason: Utf8Bytes,
    /// Whether both close frames were exchanged before the transport closed.
    pub was_clean: bool,
}

/// Which kind of frame [`Connection::send_fragment`] sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    /// The first frame of a text message.
    Text,
    /// The first frame of a binary message.
    Binary,
    /// A later frame of the message being sent.
    Continuation,
}

/// One WebSocket connection, after the opening handshake, as a state machine.
///
/// It does no I/O and reads no clock. The caller moves bytes between it and the
/// transport, in this order:
///
/// 1. Bytes read from the transport go in with [`receive`](Self::receive) (or are
///    read straight into [`read_buffer`](Self::read_buffer)); end of input is
///    reported with [`receive_eof`](Self::receive_eof).
/// 2. [`next_message`](Self::next_message) is called until it returns `Ok(None)`:
///    each call decodes as far as the buffered bytes allow and returns the next
///    message. Decoding is lazy, so a caller that stops asking stops reading.
/// 3. Messages go out with [`send`](Self::send) and friends; they, and the
///    connection's own replies (pongs, the close echo), become bytes to write,
///    taken with [`take_output`](Self::take_output) or
///    [`output_slices`](Self::output_slices) and
///    [`advance_output`](Self::advance_output).
/// 4. When [`should_close_transport`](Self::should_close_transport) says so,
///    the caller writes what is left and closes the transport, then calls
///    [`transport_closed`](Self::transport_closed).
///
/// A protocol violation by the peer fails the connection: `next_message` returns
/// the error once, a close frame with the matching code is queued, and further
/// input is discarded.
///
/// ```
/// use duplex_proto::{Limits, Connection, Message, ReadyState};
///
/// let mut server = Connection::server(Limits::default());
/// // A masked text frame "Hello" from the client (RFC 6455 section 5.7).
/// server.receive(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
/// assert_eq!(server.next_message().unwrap(), Some(Message::text("Hello")));
/// assert_eq!(server.next_message().unwrap(), None);
///
/// server.send(Message::text("Hi")).unwrap();
/// assert_eq!(&server.take_output().unwrap()[..], b"\x81\x02Hi");
/// assert_eq!(server.ready_state(), ReadyState::Open);
/// ```
pub struct Connection {
    role: Role,
    config: Limits,
    /// Masking keys; only a client has one.
    mask_source: Option<Box<dyn MaskSource>>,

    read_buf: BytesMut,
    decoder: FrameDecoder,
    /// The message being received, from its first frame's header on.
    incoming: Option<Incoming>,
    /// No more input will be read: a close frame was received, the connection
    /// failed, or the transport closed.
    input_done: bool,
    /// The transport reported end of input; buffered bytes may remain.
    eof: bool,

    output: Output,
    /// The fragmented message being sent, if any.
    outgoing: Option<Outgoing>,
    /// permessage-deflate, once agreed.
    #[cfg(feature = "deflate")]
    deflate: Option<Box<Deflate>>,

    /// The close frames sent and received, boxed: each connection has them
    /// once, at its end, and an idle connection is the smaller for it.
    close_sent: Option<Box<Option<CloseFrame>>>,
    close_received: Option<Box<Option<CloseFrame>>>,
    failure: Option<ProtocolError>,
    transport_closed: bool,
}

#[cfg(feature = "deflate")]
struct Deflate {
    params: crate::deflate::DeflateParams,
    deflater: crate::deflate::Deflater,
    inflater: crate::deflate::Inflater,
}

#[derive(Debug)]
struct Incoming {
    text: bool,
    /// RSV1 on the first frame: the payload is DEFLATE (RFC 7692), and
    /// `fragments` holds what it inflates to.
    compressed: bool,
    size: u64,
    utf8: Utf8Validator,
    /// The payloads of the frames before the last; empty for a one-frame message.
    fragments: BytesMut,
}

#[derive(Debug)]
struct Outgoing {
    /// For text, the UTF-8 state of the fragments sent so far.
    utf8: Option<Utf8Validator>,
}

impl Connection {
    /// The server end of a connection.
    pub fn server(config: Limits) -> Self {
        Connection::new(Role::Server, config, None)
    }

    /// The client end of a connection, masking with [`ThreadRngMask`].
    ///
    /// [`ThreadRngMask`]: crate::rng::ThreadRngMask
    #[cfg(feature = "os-rng")]
    pub fn client(config: Limits) -> Self {
        Connection::client_with_mask_source(config, Box::new(crate::rng::ThreadRngMask))
    }

    /// The client end of a connection, masking with keys from `mask_source`.
    pub fn client_with_mask_source(config: Limits, mask_source: Box<dyn MaskSource>) -> Self {
        Connection::new(Role::Client, config, Some(mask_source))
    }

    fn new(role: Role, config: Limits, mask_source: Option<Box<dyn MaskSource>>) -> Self {
        Connection {
            role,
            decoder: FrameDecoder::new(role, config.max_frame_size),
            config,
            mask_source,
            read_buf: BytesMut::new(),
            incoming: None,
            input_done: false,
            eof: false,
            output: Output::default(),
            outgoing: None,
            #[cfg(feature = "deflate")]
            deflate: None,
            close_sent: None,
            close_received: None,
            failure: None,
            transport_closed: false,
        }
    }

    /// This end's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The limits this connection enforces.
    pub fn limits(&self) -> &Limits {
        &self.config
    }

    /// Turns on permessage-deflate with the parameters the opening handshake
    /// agreed (see [`deflate`](crate::deflate)). Call it before any frame is
    /// exchanged.
    #[cfg(feature = "deflate")]
    pub fn set_deflate(&mut self, params: crate::deflate::DeflateParams) {
        self.decoder.allow_rsv(RSV1);
        self.deflate = Some(Box::new(Deflate {
            deflater: crate::deflate::Deflater::new(&params),
            inflater: crate::deflate::Inflater::new(&params),
            params,
        }));
    }

    /// The permessage-deflate parameters in force, if compression was agreed.
    #[cfg(feature = "deflate")]
    pub fn deflate_params(&self) -> Option<&crate::deflate::DeflateParams> {
        self.deflate.as_ref().map(|d| &d.params)
    }

    fn compression_agreed(&self) -> bool {
        #[cfg(feature = "deflate")]
        return self.deflate.is_some();
        #[cfg(not(feature = "deflate"))]
        return false;
    }

    // ----- input -----

    /// Appends bytes read from the transport. Ignored once no more input is
    /// wanted (after a close frame was received, or a failure).
    pub fn receive(&mut self, data: &[u8]) {
        if !self.input_done {
            self.read_buf.extend_from_slice(data);
        }
    }

    /// The buffer received bytes are appended to, for reading from the transport
    /// straight into it without a copy. Reserve space and append; bytes appended
    /// after input is done are ignored.
    pub fn read_buffer(&mut self) -> &mut BytesMut {
        &mut self.read_buf
    }

    /// The size of the frame that `bytes`, the next input, continues or starts
    /// (as [`FrameDecoder::frame_len_hint`]): how much room a read buffer for
    /// it wants. `None` when the bytes do not tell.
    pub fn frame_len_hint(&self, bytes: &[u8]) -> Option<usize> {
        self.decoder.frame_len_hint(bytes)
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
    /// out), its length in 7 or 16 bits, masked as the peer's role requires,
    /// with no other message in progress and within the limits. For any
    /// other bytes it returns `None` without looking further, and the
    /// general decoder takes them (and reports what is wrong with them).
    #[inline]
    fn next_short_message(&mut self) -> Option<Result<Option<Message>, ProtocolError>> {
        if self.input_done || self.incoming.is_some() || self.decoder.is_mid_frame() {
            return None;
        }
        let &[b0, b1, ..] = &self.read_buf[..] else {
            return None;
        };
        // FIN set, no RSV bits, text (1) or binary (2).
        let text = match b0 {
            0x81 => true,
            0x82 => false,
            _ => return None,
        };
        let masked = b1 & 0x80 != 0;
        if masked != (self.role == Role::Server) {
            return None;
        }
        let (len, len_bytes) = match b1 & 0x7f {
            126 => match self.read_buf.get(2..4) {
                // A 16-bit length must be one that 7 bits cannot hold.
                Some(&[hi, lo]) if u16::from_be_bytes([hi, lo]) >= 126 => {
                    (usize::from(u16::from_be_bytes([hi, lo])), 2)
                }
                _ => return None,
            },
            127 => return None,
            len => (usize::from(len), 0),
        };
        let mask_at = 2 + len_bytes;
        let header_len = mask_at + if masked { 4 } else { 0 };
        if len >= SHARE_MIN
            || self.read_buf.len() < header_len + len
            || len > self.config.max_frame_size
            || len > self.config.max_message_size
        {
            return None;
        }
        let frame = &mut self.read_buf[..header_len + len];
        let (header, payload) = frame.split_at_mut(header_len);
        if let &[k0, k1, k2, k3] = &header[mask_at..] {
            apply_mask(payload, [k0, k1, k2, k3]);
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
            OpCode::Pong => Ok(Some(Message::Pong(payload))),
            OpCode::Close => {
                let frame = CloseFrame::parse(&payload)?;
                self.close_received = Some(Box::new(frame.clone()));
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
    fn fail(&mut self, err: ProtocolError) -> ProtocolError {
        if self.close_sent.is_none() {
            let reason = err.to_string();
            let frame = CloseFrame::new(err.close_code(), truncate_reason(&reason));
            self.write_close(Some(frame));
        }
        self.failure = Some(err.clone());
        self.stop_input();
        err
    }

    fn stop_input(&mut self) {
        self.input_done = true;
        self.read_buf = BytesMut::new();
        self.incoming = None;
    }

    // ----- output -----

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

    fn write_close(&mut self, frame: Option<CloseFrame>) {
        let mut payload = BytesMut::new();
        if let Some(frame) = &frame {
            frame.write_payload(&mut payload);
        }
        self.write_frame(OpCode::Close, true, 0, payload.freeze());
        self.close_sent = Some(Box::new(frame));
    }

    /// Encodes a frame into the output: a client masks a copy of the payload; a
    /// server queues the payload as it is.
    fn write_frame(&mut self, opcode: OpCode, fin: bool, rsv: u8, payload: Bytes) {
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

    // ----- closing -----

    /// Whether the caller should, after writing the queued output, close the
    /// transport: after a failure (RFC 6455 section 7.1.7), and on the server once
    /// both close frames are exchanged (section 7.1.1: the server closes the TCP
    /// connection first). A client whose close handshake is done waits for the
    /// server to close, with a timeout of the caller's choosing.
    pub fn should_close_transport(&self) -> bool {
        !self.transport_closed
            && (self.failure.is_some()
                || (self.role == Role::Server && self.is_close_handshake_done()))
    }

    /// Whether close frames have been both sent and received.
    pub fn is_close_handshake_done(&self) -> bool {
        self.close_sent.is_some() && self.close_received.is_some()
    }

    /// Reports that the transport is closed; the connection is then
    /// [`Closed`](ReadyState::Closed). Unwritten output and unread input are
    /// dropped.
    pub fn transport_closed(&mut self) {
        self.transport_closed = true;
        self.stop_input();
        self.output = Output::default();
    }

    /// The connection's state.
    pub fn ready_state(&self) -> ReadyState {
        if self.transport_closed {
            ReadyState::Closed
        } else if self.close_sent.is_some() || self.close_received.is_some() {
            ReadyState::Closing
        } else {
            ReadyState::Open
        }
    }

    /// The close frame received from the peer: `None` if none yet, `Some(None)` if
    /// it carried no code.
    pub fn received_close(&self) -> Option<&Option<CloseFrame>> {
        self.close_received.as_deref()
    }

    /// The close frame this end sent, as [`received_close`](Self::received_close).
    pub fn sent_close(&self) -> Option<&Option<CloseFrame>> {
        self.close_sent.as_deref()
    }

    /// The protocol violation that failed the connection, if one did.
    pub fn failure(&self) -> Option<&ProtocolError> {
        self.failure.as_ref()
    }

    /// How the connection ended, once it is [`Closed`](ReadyState::Closed).
    pub fn close_info(&self) -> Option<CloseInfo> {
        if !self.transport_closed {
            return None;
        }
        let (code, reason) = match self.close_received.as_deref() {
            Some(Some(frame)) => (frame.code, frame.reason.clone()),
            Some(None) => (CloseCode::NO_STATUS, Utf8Bytes::default()),
            None => (CloseCode::ABNORMAL, Utf8Bytes::default()),
        };
        Some(CloseInfo {
            code,
            reason,
            was_clean: self.is_close_handshake_done() && self.failure.is_none(),
        })
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

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.role)
            .field("ready_state", &self.ready_state())
            .field("buffered_input", &self.read_buf.len())
            .field("buffered_output", &self.output.len())
            .field("close_sent", &self.close_sent)
            .field("close_received", &self.close_received)
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}
