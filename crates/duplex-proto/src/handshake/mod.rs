//! The opening handshake (RFC 6455 section 4), both roles, on the `http` crate's
//! types.
//!
//! Sans-IO like the rest: parsers take the bytes read so far and say how many
//! make up the head, so the caller hands what follows to the [`Connection`]
//! (frames may arrive in the same read as the handshake).
//!
//! Client: [`ClientRequest`] builds the request; [`write_request`] serializes it;
//! [`parse_response`] and [`ClientHandshake::validate`] check the answer.
//!
//! Server: [`parse_request`], then [`validate_request`] gives an
//! [`UpgradeRequest`] whose [`response`](UpgradeRequest::response) is the 101 to
//! send (the caller may edit it first), or a [`HandshakeError`] whose
//! [`response`](HandshakeError::response) is the error to send.
//!
//! [`Connection`]: crate::Connection

mod client;
mod headers;
mod http1;
mod server;

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};

pub use self::client::{ClientHandshake, ClientRequest, Negotiated};
pub use self::headers::{Extension, parse_extensions};
pub use self::http1::{Body, parse_request, parse_response, write_request, write_response};
pub use self::server::{UpgradeRequest, validate_extended_connect, validate_request};

/// The GUID appended to the key to make the accept value (section 1.3).
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key` (section 4.2.2):
/// base64 of the SHA-1 of the key followed by the protocol's GUID.
///
/// ```
/// // The example of RFC 6455 section 1.3.
/// assert_eq!(
///     duplex_proto::handshake::accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
///     "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
/// );
/// ```
pub fn accept_key(key: &[u8]) -> String {
    let mut sha1 = sha1_smol::Sha1::new();
    sha1.update(key);
    sha1.update(WEBSOCKET_GUID.as_bytes());
    BASE64.encode(sha1.digest().bytes())
}

/// Why an opening handshake failed.
///
/// On the server, [`status`](Self::status) is the HTTP status to answer with and
/// [`response`](Self::response) the whole answer. On the client, the variant says
/// what was wrong with the server's response.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The bytes are not an HTTP/1.1 request or response head.
    Malformed(String),
    /// The head is larger than [`Limits::max_header_bytes`](crate::Limits::max_header_bytes).
    HeadersTooLarge {
        /// The configured maximum.
        max: usize,
    },
    /// The head has more fields than [`Limits::max_headers`](crate::Limits::max_headers).
    TooManyHeaders {
        /// The configured maximum.
        max: usize,
    },
    /// The request's method is not GET.
    MethodNotAllowed(Method),
    /// The request's version is not HTTP/1.1.
    HttpVersion(Version),
    /// The request has no Host header, or several.
    MissingHost,
    /// The request has a body; an upgrade request has none.
    UnexpectedBody,
    /// No `Upgrade: websocket`: an ordinary HTTP request to a WebSocket endpoint.
    NotUpgrade,
    /// `Upgrade: websocket` without `Connection: Upgrade`.
    MissingConnectionUpgrade,
    /// A `Sec-WebSocket-Version` other than 13, or none.
    UnsupportedVersion(String),
    /// No `Sec-WebSocket-Key`, several, or one that is not base64 of 16 bytes.
    InvalidKey,
    /// A header field that breaks its grammar.
    InvalidHeader {
        /// The field.
        name: HeaderName,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The server answered with a status other than 101 Switching Protocols.
    Status(StatusCode),
    /// The response lacks `Upgrade: websocket`.
    ResponseNotUpgrade,
    /// The response lacks `Connection: Upgrade`.
    ResponseMissingConnectionUpgrade,
    /// The response's `Sec-WebSocket-Accept` does not match the key sent.
    InvalidAccept,
    /// The server chose a subprotocol the client did not offer, or several.
    UnrequestedProtocol(String),
    /// The server answered with an extension the client did not offer.
    UnrequestedExtension(String),
    /// The server's answer to an extension offer breaks the extension's rules.
    Extension(&'static str),
    /// The URI cannot be connected to.
    InvalidUri(&'static str),
    /// A subprotocol name that is not an HTTP token.
    InvalidProtocolName(String),
    /// A header the handshake sets itself was given as an extra header.
    ReservedHeader(HeaderName),
    /// The server tried to choose a subprotocol the client did not offer.
    ProtocolNotOffered(String),
    /// The server tried to answer with an extension the client did not offer.
    ExtensionNotOffered(String),
}

impl HandshakeError {
    /// The HTTP status a server answers this failure with, or `None` for an error
    /// that only arises on the client or in the server's own code.
    pub fn status(&self) -> Option<StatusCode> {
        use HandshakeError::*;
        Some(match self {
            Malformed(_) | MissingHost | UnexpectedBody | InvalidKey | InvalidHeader { .. } => {
                StatusCode::BAD_REQUEST
            }
            HeadersTooLarge { .. } | TooManyHeaders { .. } => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            HttpVersion(_) => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            NotUpgrade | MissingConnectionUpgrade | UnsupportedVersion(_) => {
                StatusCode::UPGRADE_REQUIRED
            }
            Status(_)
            | ResponseNotUpgrade
            | ResponseMissingConnectionUpgrade
            | InvalidAccept
            | UnrequestedProtocol(_)
            | UnrequestedExtension(_)
            | Extension(_)
            | InvalidUri(_)
            | InvalidProtocolName(_)
            | ReservedHeader(_)
            | ProtocolNotOffered(_)
            | ExtensionNotOffered(_) => return None,
        })
    }

    /// The error response a server sends for this failure: the status, the
    /// headers the status calls for (`Allow` for 405; `Upgrade`, `Connection` and
    /// `Sec-WebSocket-Version: 13` for 426) and a one-line plain-text body saying
    /// what was wrong. Errors without a status get 500.
    pub fn response(&self) -> Response<Bytes> {
        let status = self.status().unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut builder = Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8");
        if status == StatusCode::METHOD_NOT_ALLOWED {
            builder = builder.header(header::ALLOW, "GET");
        }
        if status == StatusCode::UPGRADE_REQUIRED {
            builder = builder
                .header(header::UPGRADE, "websocket")
                .header(header::CONNECTION, "Upgrade, close")
                .header(header::SEC_WEBSOCKET_VERSION, "13");
        } else {
            builder = builder.header(header::CONNECTION, "close");
        }
        let body = Bytes::from(format!("{self}\n"));
        builder
            .body(body)
            .unwrap_or_else(|_| Response::new(Bytes::new()))
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use HandshakeError::*;
        match self {
            Malformed(what) => write!(f, "malformed HTTP head: {what}"),
            HeadersTooLarge { max } => write!(f, "HTTP head larger than {max} bytes"),
            TooManyHeaders { max } => write!(f, "more than {max} header fields"),
            MethodNotAllowed(method) => {
                write!(
                    f,
                    "method {method} not allowed; a WebSocket handshake uses GET"
                )
            }
            HttpVersion(version) => {
                write!(
                    f,
                    "{version:?} not supported; a WebSocket handshake uses HTTP/1.1"
                )
            }
            MissingHost => f.write_str("the request needs exactly one Host header"),
            UnexpectedBody => f.write_str("an upgrade request must not have a body"),
            NotUpgrade => {
                f.write_str("this is a WebSocket endpoint: the request needs Upgrade: websocket")
            }
            MissingConnectionUpgrade => {
                f.write_str("the request needs Connection: Upgrade next to Upgrade: websocket")
            }
            UnsupportedVersion(v) if v.is_empty() => {
                f.write_str("missing Sec-WebSocket-Version; the supported version is 13")
            }
            UnsupportedVersion(v) => {
                write!(f, "Sec-WebSocket-Version {v:?} is not supported; use 13")
            }
            InvalidKey => f.write_str(
                "Sec-WebSocket-Key must be given once, as the base64 of 16 random bytes",
            ),
            InvalidHeader { name, reason } => write!(f, "invalid {name} header: {reason}"),
            Status(status) => write!(
                f,
                "the server answered {status} instead of 101 Switching Protocols"
            ),
            ResponseNotUpgrade => f.write_str("the server's response lacks Upgrade: websocket"),
            ResponseMissingConnectionUpgrade => {
                f.write_str("the server's response lacks Connection: Upgrade")
            }
            InvalidAccept => f.write_str(
                "the server's Sec-WebSocket-Accept does not match the key sent \
                 (is a proxy or a non-WebSocket server answering?)",
            ),
            UnrequestedProtocol(p) => write!(
                f,
                "the server chose subprotocol {p:?}, which the client did not offer"
            ),
            UnrequestedExtension(e) => write!(
                f,
                "the server enabled extension {e:?}, which the client did not offer"
            ),
            Extension(why) => write!(f, "extension negotiation failed: {why}"),
            InvalidUri(why) => write!(f, "invalid WebSocket URI: {why}"),
            InvalidProtocolName(p) => {
                write!(f, "subprotocol name {p:?} is not an HTTP token")
            }
            ReservedHeader(name) => write!(
                f,
                "the {name} header is set by the handshake itself; use the builder's options"
            ),
            ProtocolNotOffered(p) => {
                write!(
                    f,
                    "cannot choose subprotocol {p:?}: the client did not offer it"
                )
            }
            ExtensionNotOffered(e) => {
                write!(
                    f,
                    "cannot enable extension {e:?}: the client did not offer it"
                )
            }
        }
    }
}

impl std::error::Error for HandshakeError {}

/// `value` as a header value; only called with tokens and base64, which always fit.
fn header_value(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_responses_carry_the_headers_their_status_needs() {
        let resp = HandshakeError::UnsupportedVersion("8".into()).response();
        assert_eq!(resp.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(resp.headers()[header::SEC_WEBSOCKET_VERSION], "13");
        assert_eq!(resp.headers()[header::UPGRADE], "websocket");

        let resp = HandshakeError::MethodNotAllowed(Method::POST).response();
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(resp.headers()[header::ALLOW], "GET");

        let resp = HandshakeError::HeadersTooLarge { max: 10 }.response();
        assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert!(
            std::str::from_utf8(resp.body())
                .unwrap()
                .contains("10 bytes")
        );
    }
}
