//! permessage-deflate (RFC 7692): negotiation in both roles, and the
//! per-message transform.
//!
//! [`DeflateConfig`] is what an endpoint is willing to do. A client turns it into
//! an offer ([`DeflateConfig::offer`]) and checks the server's answer
//! ([`DeflateConfig::accept_response`]); a server picks the first offer it can
//! meet ([`DeflateConfig::negotiate`]) and declines the rest. Either way the
//! result is a [`DeflateParams`], given to the [`Connection`] with
//! [`Connection::set_deflate`].
//!
//! zlib cannot compress with a window of 8 bits (it silently uses 9), so an offer
//! that requires our compressor to use 8 bits is declined, and a response that
//! requires it fails the client's handshake. Decompressing an 8-bit window with a
//! 9-bit one is fine and is what happens.
//!
//! [`Connection`]: crate::Connection
//! [`Connection::set_deflate`]: crate::Connection::set_deflate

mod codec;

pub(crate) use self::codec::{Deflater, Inflater};

use crate::handshake::{Extension, HandshakeError};

/// The extension's name in `Sec-WebSocket-Extensions`.
pub const EXTENSION_NAME: &str = "permessage-deflate";

const MIN_WINDOW_BITS: u8 = 9;
const MAX_WINDOW_BITS: u8 = 15;

/// What an endpoint is willing to agree to. The same settings serve a client
/// (they become its offer) and a server (they bound what it accepts).
///
/// ```
/// use duplex_proto::deflate::DeflateConfig;
/// // Cut the memory of every connection: no context kept between messages on
/// // either side, and smaller windows.
/// let lean = DeflateConfig::default()
///     .server_no_context_takeover(true)
///     .client_no_context_takeover(true)
///     .server_max_window_bits(10)
///     .client_max_window_bits(10);
/// assert_eq!(
///     lean.offer().to_string(),
///     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
///      server_max_window_bits=10; client_max_window_bits=10"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// Whether the server resets its compressor after each message. A client
    /// with this set asks for it; a server with it set always does it.
    ///
    /// Default: false: context kept, the better ratio for chatty JSON.
    pub server_no_context_takeover: bool,
    /// Whether the client resets its compressor after each message. A client
    /// with this set does it and says so; a server with it set requires it.
    ///
    /// Default: false.
    pub client_no_context_takeover: bool,
    /// The largest LZ77 window, in bits (9 to 15), of the server's compressor.
    /// Below 15 a client asks for it, a server limits itself to it.
    ///
    /// Default: 15.
    pub server_max_window_bits: u8,
    /// The largest LZ77 window, in bits (9 to 15), of the client's compressor.
    /// A client offers to limit itself to it (or says it can be limited, at 15);
    /// a server below 15 asks clients that can be limited to use it.
    ///
    /// Default: 15.
    pub client_max_window_bits: u8,
    /// The compression level, 0 (store) to 9 (smallest).
    ///
    /// Default: 1. On a feed of small JSON messages it compresses about ten
    /// times as many messages per second as zlib's usual 6, for about 13% more
    /// bytes (docs/BENCHMARKS.md); a real-time server spends its CPU better so.
    pub level: u32,
    /// Messages shorter than this many bytes are sent uncompressed: on a few
    /// bytes, compression costs more time than it saves bytes.
    ///
    /// Default: 64.
    pub threshold: usize,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: MAX_WINDOW_BITS,
            client_max_window_bits: MAX_WINDOW_BITS,
            level: 1,
            threshold: 64,
        }
    }
}

/// What was agreed, seen from one end: its compressor ("local") and the peer's,
/// which its decompressor must follow ("remote").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// This end resets its compressor after each message.
    pub local_no_context_takeover: bool,
    /// The peer resets its compressor after each message, so this end resets its
    /// decompressor too.
    pub remote_no_context_takeover: bool,
    /// The window of this end's compressor, in bits.
    pub local_max_window_bits: u8,
    /// The window of the peer's compressor, in bits, which this end's
    /// decompressor uses (at least 9).
    pub remote_max_window_bits: u8,
    /// This end's compression level.
    pub level: u32,
    /// Messages shorter than this are sent uncompressed.
    pub threshold: usize,
}

impl DeflateConfig {
    /// Sets [`server_no_context_takeover`](Self::server_no_context_takeover).
    pub fn server_no_context_takeover(mut self, on: bool) -> Self {
        self.server_no_context_takeover = on;
        self
    }

    /// Sets [`client_no_context_takeover`](Self::client_no_context_takeover).
    pub fn client_no_context_takeover(mut self, on: bool) -> Self {
        self.client_no_context_takeover = on;
        self
    }

    /// Sets [`server_max_window_bits`](Self::server_max_window_bits), clamped
    /// to 9..=15.
    pub fn server_max_window_bits(mut self, bits: u8) -> Self {
        self.server_max_window_bits = bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
        self
    }

    /// Sets [`client_max_window_bits`](Self::client_max_window_bits), clamped
    /// to 9..=15.
    pub fn client_max_window_bits(mut self, bits: u8) -> Self {
        self.client_max_window_bits = bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
        self
    }

    /// Sets [`level`](Self::level), clamped to 0..=9.
    pub fn level(mut self, level: u32) -> Self {
        self.level = level.min(9);
        self
    }

    /// Sets [`threshold`](Self::threshold).
    pub fn threshold(mut self, bytes: usize) -> Self {
        self.threshold = bytes;
        self
    }

    /// The client's offer for `Sec-WebSocket-Extensions`.
    pub fn offer(&self) -> Extension {
        let mut offer = Extension::new(EXTENSION_NAME);
        if self.server_no_context_takeover {
            offer = offer.with_param("server_no_context_takeover", None);
        }
        if self.client_no_context_takeover {
            offer = offer.with_param("client_no_context_takeover", None);
        }
        let server_bits = self
            .server_max_window_bits
            .clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
        if server_bits < MAX_WINDOW_BITS {
            offer = offer.with_param("server_max_window_bits", Some(&server_bits.to_string()));
        }
        // Always present: it tells the server our window can be limited.
        let client_bits = self
            .client_max_window_bits
            .clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
        let value = (client_bits < MAX_WINDOW_BITS).then(|| client_bits.to_string());
        offer.with_param("client_max_window_bits", value.as_deref())
    }

    /// Checks the server's answer to [`offer`](Self::offer) (RFC 7692 section
    /// 7.1), given the extensions the server enabled. `Ok(None)`: the server
    /// declined compression.
    ///
    /// # Errors
    ///
    /// [`HandshakeError::Extension`] for an answer the offer does not allow: a
    /// parameter twice or with a bad value, permessage-deflate twice, no
    /// `server_no_context_takeover` when asked for, a window larger than asked
    /// for, or a client window of 8 bits (which zlib cannot produce).
    pub fn accept_response(
        &self,
        enabled: &[Extension],
    ) -> Result<Option<DeflateParams>, HandshakeError> {
        let mut answers = enabled.iter().filter(|e| e.name == EXTENSION_NAME);
        let Some(answer) = answers.next() else {
            return Ok(None);
        };
        let fail = |why: &'static str| HandshakeError::Extension(why);
        if answers.next().is_some() {
            return Err(fail("permessage-deflate enabled twice"));
        }
        let got = Params::parse(answer, false).map_err(fail)?;
        if self.server_no_context_takeover && !got.server_no_context_takeover {
            return Err(fail("the server did not accept server_no_context_takeover"));
        }
        let asked_server_bits = self
            .server_max_window_bits
            .clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
        let server_bits = match got.server_max_window_bits {
            Some(bits) if bits > asked_server_bits => {
                return Err(fail("server_max_window_bits larger than asked for"));
            }
            Some(bits) => bits,
            None if asked_server_bits < MAX_WINDOW_BITS => {
                return Err(fail("the server did not accept server_max_window_bits"));
            }
            None => MAX_WINDOW_BITS,
        };
        let offered_client_bits = self
            .client_max_window_bits
            .clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
        let client_bits = match got.client_max_window_bits {
            Some(Some(bits)) if bits > offered_client_bits => {
                return Err(fail("client_max_window_bits larger than offered"));
            }
            Some(Some(bits)) if bits < MIN_WINDOW_BITS => {
                return Err(fail("client_max_window_bits=8 cannot be met by zlib"));
            }
            Some(Some(bits)) => bits,
            Some(None) => return Err(fail("client_max_window_bits without a value")),
            None => offered_client_bits,
        };
        Ok(Some(DeflateParams {
            local_no_context_takeover: self.client_no_context_takeover
                || got.client_no_context_takeover,
            remote_no_context_takeover: got.server_no_context_takeover,
            local_max_window_bits: client_bits,
            remote_max_window_bits: server_bits.max(MIN_WINDOW_BITS),
            level: self.level.min(9),
            threshold: self.threshold,
        }))
    }

    /// A server's choice among the client's offers (RFC 7692 section 7.1): the
    /// first permessage-deflate offer it can meet, with the response to send.
    /// Offers it cannot meet (unknown or repeated parameters, bad values, a
    /// server window of 8 bits) are declined, never failed: `None` means no
    /// compression.
    pub fn negotiate(&self, offers: &[Extension]) -> Option<(Extension, DeflateParams)> {
        offers
            .iter()
            .filter(|offer| offer.name == EXTENSION_NAME)
            .find_map(|offer| self.answer(offer))
    }

    fn answer(&self, offer: &Extension) -> Option<(Extension, DeflateParams)> {
        let asked = Params::parse(offer, true).ok()?;
        let server_no_context_takeover =
            self.server_no_context_takeover || asked.server_no_context_takeover;
        let client_no_context_takeover =
            self.client_no_context_takeover || asked.client_no_context_takeover;
        let our_server_bits = self
            .server_max_window_bits
            .clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
        let server_bits = match asked.server_max_window_bits {
            Some(bits) if bits < MIN_WINDOW_BITS => return None,
            Some(bits) => Some(bits.min(our_server_bits)),
            None => (our_server_bits < MAX_WINDOW_BITS).then_some(our_server_bits),
        };
        let our_client_bits = self
            .client_max_window_bits
            .clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
        let client_bits = match asked.client_max_window_bits {
            // The client cannot be limited: it uses 15.
            None => None,
            Some(None) => (our_client_bits < MAX_WINDOW_BITS).then_some(our_client_bits),
            Some(Some(bits)) => Some(bits.min(our_client_bits)),
        };

        let mut response = Extension::new(EXTENSION_NAME);
        if server_no_context_takeover {
            response = response.with_param("server_no_context_takeover", None);
        }
        if client_no_context_takeover {
            response = response.with_param("client_no_context_takeover", None);
        }
        if let Some(bits) = server_bits {
            response = response.with_param("server_max_window_bits", Some(&bits.to_string()));
        }
        if let Some(bits) = client_bits {
            response = response.with_param("client_max_window_bits", Some(&bits.to_string()));
        }
        let params = DeflateParams {
            local_no_context_takeover: server_no_context_takeover,
            remote_no_context_takeover: client_no_context_takeover,
            local_max_window_bits: server_bits.unwrap_or(MAX_WINDOW_BITS),
            remote_max_window_bits: client_bits.unwrap_or(MAX_WINDOW_BITS).max(MIN_WINDOW_BITS),
            level: self.level.min(9),
            threshold: self.threshold,
        };
        Some((response, params))
    }
}

/// The parameters of one offer or response, checked against RFC 7692 section 7.
#[derive(Debug, Default)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: present without a value (allowed in offers only).
    client_max_window_bits: Option<Option<u8>>,
}

impl Params {
    fn parse(extension: &Extension, is_offer: bool) -> Result<Params, &'static str> {
        let mut params = Params::default();
        for (name, value) in &extension.params {
            match name.to_ascii_lowercase().as_str() {
                "server_no_context_takeover" => {
                    if params.server_no_context_takeover || value.is_some() {
                        return Err("bad server_no_context_takeover");
                    }
                    params.server_no_context_takeover = true;
                }
                "client_no_context_takeover" => {
                    if params.client_no_context_takeover || value.is_some() {
                        return Err("bad client_no_context_takeover");
                    }
                    params.client_no_context_takeover = true;
                }
                "server_max_window_bits" => {
                    if params.server_max_window_bits.is_some() {
                        return Err("server_max_window_bits given twice");
                    }
                    let bits = value.as_deref().and_then(window_bits);
                    params.server_max_window_bits =
                        Some(bits.ok_or("bad server_max_window_bits value")?);
                }
                "client_max_window_bits" => {
                    if params.client_max_window_bits.is_some() {
                        return Err("client_max_window_bits given twice");
                    }
                    let bits = match value {
                        None if is_offer => None,
                        None => return Err("client_max_window_bits without a value"),
                        Some(v) => Some(window_bits(v).ok_or("bad client_max_window_bits value")?),
                    };
                    params.client_max_window_bits = Some(bits);
                }
                _ => return Err("unknown permessage-deflate parameter"),
            }
        }
        Ok(params)
    }
}

/// A window size value: a decimal 8 to 15, without leading zeros (section 7.1.2).
fn window_bits(value: &str) -> Option<u8> {
    match value.parse::<u8>() {
        Ok(bits @ 8..=15) if !value.starts_with('0') && !value.starts_with('+') => Some(bits),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
