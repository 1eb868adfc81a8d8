//! The per-message transform (RFC 7692 section 7.2): raw DEFLATE with a sync
//! flush, the 4-byte tail removed on sending and put back on receiving.

use bytes::{Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::DeflateParams;
use crate::error::ProtocolError;

/// The empty stored block a sync flush ends with, which the sender removes and
/// the receiver puts back (section 7.2.1, 7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Output produced per inflate step: the granularity at which the message
/// limit is enforced while inflating.
const INFLATE_STEP: usize = 32 << 10;

/// This end's compressor.
pub(crate) struct Deflater {
    compress: Option<Compress>,
    level: u32,
    window_bits: u8,
    no_context_takeover: bool,
}

impl Deflater {
    pub(crate) fn new(params: &DeflateParams) -> Self {
        Deflater {
            compress: None,
            level: params.level,
            window_bits: params.local_max_window_bits,
            no_context_takeover: params.local_no_context_takeover,
        }
    }

    /// Compresses one whole message. `None` if zlib failed, in which case the
    /// message goes out uncompressed (the peer cannot tell) and the next one
    /// starts a fresh stream (which the peer's window cannot tell either).
    pub(crate) fn compress(&mut self, data: &[u8]) -> Option<Bytes> {
        let (level, bits) = (self.level, self.window_bits);
        let compress = self.compress.get_or_insert_with(|| {
            Compress::new_with_window_bits(Compression::new(level), false, bits)
        });
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        let start = compress.total_in();
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let consumed = (compress.total_in() - start) as usize;
            if compress
                .compress_vec(&data[consumed..], &mut out, FlushCompress::Sync)
                .is_err()
            {
                self.compress = None;
                return None;
            }
            // A sync flush is complete once all input is in and zlib stopped
            // with output space to spare.
            let consumed = (compress.total_in() - start) as usize;
            if consumed == data.len() && out.len() < out.capacity() {
                break;
            }
        }
        if self.no_context_takeover {
            // Nothing carries over to the next message: free the window now
            // rather than keep it through idle time.
            self.compress = None;
        }
        if !out.ends_with(&TAIL) {
            self.compress = None;
            return None;
        }
        out.truncate(out.len() - TAIL.len());
        Some(Bytes::from(out))
    }
}

/// This end's decompressor.
pub(crate) struct Inflater {
    decompress: Option<Decompress>,
    window_bits: u8,
    no_context_takeover: bool,
    /// The message's stream ended with a final block; the rest of it is ignored
    /// and the next message starts a new stream.
    stream_ended: bool,
}

impl Inflater {
    pub(crate) fn new(params: &DeflateParams) -> Self {
        Inflater {
            decompress: None,
            window_bits: params.remote_max_window_bits,
            no_context_takeover: params.remote_no_context_takeover,
            stream_ended: false,
        }
    }

    /// Inflates the next piece of a compressed message (a frame's payload),
    /// appending to `out`, which never grows past `max` bytes: a message that
    /// would is stopped with [`ProtocolError::MessageTooLarge`] after at most
    /// `max` bytes are produced. `on_output` sees each piece of output as it is
    /// produced (for UTF-8 validation).
    ///
    /// # Errors
    ///
    /// [`ProtocolError::InvalidCompressedData`] for input that is not DEFLATE,
    /// [`ProtocolError::MessageTooLarge`], or an error from `on_output`.
    pub(crate) fn inflate(
        &mut self,
        input: &[u8],
        out: &mut BytesMut,
        max: usize,
        mut on_output: impl FnMut(&[u8]) -> Result<(), ProtocolError>,
    ) -> Result<(), ProtocolError> {
        if self.stream_ended {
            return Ok(());
        }
        let bits = self.window_bits;
        let decompress = self
            .decompress
            .get_or_insert_with(|| Decompress::new_with_window_bits(false, bits));
        let start_in = decompress.total_in();
        // Output space offered per step: a guess from the input size, doubled
        // while the output keeps filling it (so a short message is not given,
        // and zero-filled, a large buffer), and never past the limit.
        let mut guess = input.len().saturating_mul(4).clamp(1024, INFLATE_STEP);
        loop {
            // Room for one byte past the limit: producing it proves the limit
            // is crossed, without inflating further.
            let room = max.saturating_add(1).saturating_sub(out.len());
            let step = room.min(guess);
            guess = (guess * 2).min(INFLATE_STEP);
            let before = out.len();
            out.resize(before + step, 0);
            let consumed_before = (decompress.total_in() - start_in) as usize;
            let produced_before = decompress.total_out();
            let status = decompress
                .decompress(
                    &input[consumed_before..],
                    &mut out[before..],
                    FlushDecompress::Sync,
                )
                .map_err(|_| ProtocolError::InvalidCompressedData)?;
            let produced = (decompress.total_out() - produced_before) as usize;
            let consumed = (decompress.total_in() - start_in) as usize;
            out.truncate(before + produced);
            if out.len() > max {
                return Err(ProtocolError::MessageTooLarge {
                    size: out.len() as u64,
                    max,
                });
            }
            on_output(&out[before..])?;
            if status == Status::StreamEnd {
                self.stream_ended = true;
                return Ok(());
            }
            if consumed == input.len() && produced < step {
                return Ok(());
            }
            if produced == 0 && consumed == consumed_before {
                // Input left, room left, and no progress: not DEFLATE zlib
                // can follow.
                return Err(ProtocolError::InvalidCompressedData);
            }
        }
    }

    /// Ends a compressed message: puts back the tail the sender removed and
    /// resets the decompressor where context is not kept.
    pub(crate) fn finish(
        &mut self,
        out: &mut BytesMut,
        max: usize,
        on_output: impl FnMut(&[u8]) -> Result<(), ProtocolError>,
    ) -> Result<(), ProtocolError> {
        let result = self.inflate(&TAIL, out, max, on_output);
        if self.no_context_takeover || self.stream_ended {
            self.decompress = None;
            self.stream_ended = false;
        }
        result
    }
}
