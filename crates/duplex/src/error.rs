//! The one error type of the crate.

use std::fmt;
use std::io;

use bytes::Bytes;
use duplex_proto::{HandshakeError, ProtocolError, SendError};
use http::Response;

use crate::proxy::ProxyError;

/// A `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which deadline passed, in [`Error::Timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Timeout {
    /// The TCP connection (or TLS handshake) did not complete in time.
    Connect,
    /// The proxy did not open the tunnel in time (after the TCP connection
    /// to it; under the same connect timeout).
    Proxy,
    /// The opening handshake did not complete in time.
    Handshake,
    /// The peer did not answer our close frame in time.
    Close,
    /// The peer did not answer a keepalive ping in time.
    Keepalive,
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Timeout::Connect => "connecting timed out",
            Timeout::Proxy => "the proxy did not open the tunnel in time",
            Timeout::Handshake => "the opening handshake timed out",
            Timeout::Close => "the peer did not answer the close frame in time",
            Timeout::Keepalive => "the peer did not answer a keepalive ping in time",
        })
    }
}

/// Everything that can go wrong with a WebSocket, as one enum to match on.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The transport failed.
    Io(io::Error),
    /// TLS failed: a certificate that does not verify, a handshake failure, or a
    /// bad certificate or key file.
    Tls(Box<dyn std::error::Error + Send + Sync>),
    /// The URL cannot be connected to.
    Url(String),
    /// The proxy could not be reached or would not open a tunnel to the
    /// server: which proxy, and what happened.
    Proxy(ProxyError),
    /// A builder setting is invalid (a header name or value, a certificate or
    /// key file, a proxy URL given or read from the environment).
    Config(String),
    /// The opening handshake broke RFC 6455 (either side's view).
    Handshake(HandshakeError),
    /// The server answered the upgrade request with an HTTP status other than
    /// 101; the response carries its headers and body (at most 64 KiB of it).
    Rejected(Box<Response<Bytes>>),
    /// The peer broke the protocol; the connection was failed with the close
    /// code [`ProtocolError::close_code`] names.
    Protocol(ProtocolError),
    /// A send the protocol does not allow (a control frame over 125 bytes, a
    /// close code that may not be sent, fragments out of order). Nothing was sent.
    Send(SendError),
    /// The connection is closing or closed: nothing more can be sent, or the
    /// transport ended without a close frame.
    Closed,
    /// A deadline passed.
    Timeout(Timeout),
    /// HTTP/2 failed (RFC 8441): the server does not take WebSockets over
    /// HTTP/2, the connection is gone, or the stream was reset; the text says
    /// which and in what phase.
    Http2(String),
}

impl Error {
    /// Whether the connection is closed or closing (sending after close, or the
    /// transport ending without the closing handshake).
    pub fn is_closed(&self) -> bool {
        matches!(self, Error::Closed)
    }

    /// Whether a deadline passed.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout(_))
    }

    /// The HTTP status the server answered with, for [`Error::Rejected`].
    pub fn status(&self) -> Option<http::StatusCode> {
        match self {
            Error::Rejected(response) => Some(response.status()),
            _ => None,
        }
    }

    /// Whether the peer exceeded a size limit (close code 1009).
    pub fn is_capacity(&self) -> bool {
        matches!(
            self,
            Error::Protocol(
                ProtocolError::FrameTooLarge { .. } | ProtocolError::MessageTooLarge { .. }
            )
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(err) => write!(f, "I/O error: {err}"),
            Error::Tls(err) => write!(f, "TLS error: {err}"),
            Error::Url(why) => write!(f, "invalid WebSocket URL: {why}"),
            Error::Proxy(err) => write!(f, "{err}"),
            Error::Config(why) => write!(f, "invalid setting: {why}"),
            Error::Handshake(err) => write!(f, "WebSocket handshake failed: {err}"),
            Error::Rejected(response) => {
                write!(
                    f,
                    "the server refused the WebSocket upgrade with HTTP {}",
                    response.status()
                )?;
                let body = String::from_utf8_lossy(response.body());
                let body = body.trim();
                if !body.is_empty() {
                    let shown: String = body.chars().take(200).collect();
                    write!(f, ": {shown}")?;
                }
                Ok(())
            }
            Error::Protocol(err) => write!(
                f,
                "the peer broke the WebSocket protocol: {err} (closed with {})",
                err.close_code()
            ),
            Error::Send(err) => write!(f, "cannot send: {err}"),
            Error::Closed => f.write_str("the WebSocket connection is closed"),
            Error::Timeout(which) => write!(f, "{which}"),
            Error::Http2(why) => write!(f, "HTTP/2 error: {why}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(err) => Some(err),
            Error::Tls(err) => Some(err.as_ref()),
            Error::Handshake(err) => Some(err),
            Error::Proxy(err) => Some(err),
            Error::Protocol(err) => Some(err),
            Error::Send(err) => Some(err),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Self {
        // tokio-rustls reports TLS failures as I/O errors wrapping rustls's.
        #[cfg(feature = "tls")]
        if err
            .get_ref()
            .is_some_and(|inner| inner.is::<rustls::Error>())
        {
            if let Some(inner) = err.into_inner() {
                return Error::Tls(inner);
            }
            return Error::Io(io::Error::other("TLS error"));
        }
        Error::Io(err)
    }
}

impl From<ProxyError> for Error {
    fn from(err: ProxyError) -> Self {
        Error::Proxy(err)
    }
}

impl From<ProtocolError> for Error {
    fn from(err: ProtocolError) -> Self {
        Error::Protocol(err)
    }
}

impl From<HandshakeError> for Error {
    fn from(err: HandshakeError) -> Self {
        Error::Handshake(err)
    }
}

impl From<SendError> for Error {
    fn from(err: SendError) -> Self {
        match err {
            SendError::Closed => Error::Closed,
            other => Error::Send(other),
        }
    }
}
