//! The one error type of the crate.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use duplex_proto::{HandshakeError, ProtocolError, SendError};
use http::Response;

use crate::header::InvalidHeader;
use crate::proxy::ProxyError;

/// A `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which deadline passed, in [`Error::Timeout`]: the phase that was under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Timeout {
    /// The TCP connection to the server did not complete within the connect
    /// timeout.
    Tcp,
    /// The TLS handshake did not complete within what was left of the connect
    /// timeout.
    Tls,
    /// The proxy was not connected to, or did not open the tunnel, within the
    /// connect timeout.
    Proxy,
    /// The opening handshake (over HTTP/2, also the connection's preface and
    /// first SETTINGS) did not complete in time.
    Handshake,
    /// The peer did not answer our close frame in time.
    Close,
    /// The peer did not answer a keepalive ping in time.
    Keepalive,
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Timeout::Tcp => "the TCP connection to the server timed out",
            Timeout::Tls => "the TLS handshake timed out",
            Timeout::Proxy => "the proxy did not open the tunnel in time",
            Timeout::Handshake => "the opening handshake timed out",
            Timeout::Close => "the peer did not answer the close frame in time",
            Timeout::Keepalive => "the peer did not answer a keepalive ping in time",
        })
    }
}

/// Everything that can go wrong with a WebSocket, as one enum to match on.
///
/// `Display` says what failed at this layer (which address, which phase);
/// the cause it wraps, if any, is its [`source`](std::error::Error::source),
/// not repeated in the text. Print the chain (`{:#}` with anyhow, or walk
/// `source()`) to show both.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The transport of an open connection failed (a reset, a broken pipe).
    Io(io::Error),
    /// The server's host name did not resolve.
    Resolve {
        /// The name looked up.
        host: String,
        /// Why the lookup failed.
        source: io::Error,
    },
    /// The TCP connection to the server failed (refused, unreachable). When
    /// the name resolved to several addresses, each was tried; this is the
    /// last one.
    Connect {
        /// The host of the URL, a name or an address.
        host: String,
        /// The address connected to.
        addr: SocketAddr,
        /// Why the connection failed.
        source: io::Error,
    },
    /// TLS failed: a certificate that does not verify, a handshake failure,
    /// or a root or client certificate rustls does not take.
    Tls {
        /// The server name of the handshake that failed; `None` when no
        /// handshake was under way (setting up the configuration, or an open
        /// connection).
        server_name: Option<String>,
        /// What went wrong, as rustls (or the transport under it) reports it.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
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
    /// transport ended without the closing handshake.
    Closed {
        /// Whether the closing handshake went as RFC 6455 says (both close
        /// frames exchanged, or ours sent and the close under way), as in
        /// [`CloseInfo::was_clean`](crate::CloseInfo::was_clean): `false`
        /// when the transport ended without it (close code 1006) or the
        /// connection failed.
        was_clean: bool,
    },
    /// A deadline passed.
    Timeout(Timeout),
    /// HTTP/2 failed (RFC 8441): the server does not take WebSockets over
    /// HTTP/2, the connection is gone, or the stream was reset; the text says
    /// which and in what phase.
    Http2(String),
}

impl Error {
    /// Whether the connection is closed or closing (sending after close, or the
    /// transport ending without the closing handshake): [`Error::Closed`].
    pub fn is_closed(&self) -> bool {
        matches!(self, Error::Closed { .. })
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

#[cfg(feature = "tls")]
impl Error {
    /// A failed TLS handshake with `server_name`: the rustls error it carries,
    /// or the transport's.
    pub(crate) fn tls_handshake(server_name: &str, err: io::Error) -> Error {
        let source: Box<dyn std::error::Error + Send + Sync> = if err
            .get_ref()
            .is_some_and(|inner| inner.is::<rustls::Error>())
        {
            match err.into_inner() {
                Some(inner) => inner,
                None => Box::new(io::Error::other("TLS error")),
            }
        } else {
            Box::new(err)
        };
        Error::Tls {
            server_name: Some(server_name.to_owned()),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(_) => f.write_str("the connection's transport failed"),
            Error::Resolve { host, .. } => write!(f, "cannot resolve the host name {host}"),
            Error::Connect { host, addr, .. } => {
                let literal = host.parse::<std::net::IpAddr>() == Ok(addr.ip());
                if literal {
                    write!(f, "cannot connect to {addr}")
                } else {
                    write!(f, "cannot connect to {host} at {addr}")
                }
            }
            Error::Tls {
                server_name: Some(name),
                ..
            } => write!(f, "the TLS handshake with {name} failed"),
            Error::Tls {
                server_name: None, ..
            } => f.write_str("TLS failed"),
            Error::Url(why) => write!(f, "invalid WebSocket URL: {why}"),
            // The proxy's error says which proxy and what happened; this layer
            // adds nothing.
            Error::Proxy(err) => fmt::Display::fmt(err, f),
            Error::Config(why) => write!(f, "invalid setting: {why}"),
            Error::Handshake(_) => f.write_str("the WebSocket opening handshake failed"),
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
                "the peer broke the WebSocket protocol; closed with {}",
                err.close_code()
            ),
            Error::Send(_) => f.write_str("cannot send"),
            Error::Closed { was_clean: true } => f.write_str("the WebSocket connection is closed"),
            Error::Closed { was_clean: false } => {
                f.write_str("the WebSocket connection closed without the closing handshake (1006)")
            }
            Error::Timeout(which) => write!(f, "{which}"),
            Error::Http2(why) => write!(f, "HTTP/2 error: {why}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(err) => Some(err),
            Error::Resolve { source, .. } | Error::Connect { source, .. } => Some(source),
            Error::Tls { source, .. } => Some(source.as_ref()),
            Error::Handshake(err) => Some(err),
            Error::Proxy(err) => err.source(),
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
                return Error::Tls {
                    server_name: None,
                    source: inner,
                };
            }
            return Error::Io(io::Error::other("TLS error"));
        }
        Error::Io(err)
    }
}

impl From<InvalidHeader> for Error {
    fn from(err: InvalidHeader) -> Self {
        Error::Config(err.to_string())
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
            SendError::Closed => Error::Closed { was_clean: true },
            other => Error::Send(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn display_says_this_layer_and_leaves_the_cause_to_source() {
        let errors = [
            Error::Io(io::Error::other("disk on fire")),
            Error::Handshake(HandshakeError::MethodNotAllowed(http::Method::POST)),
            Error::Protocol(ProtocolError::UnmaskedFrameFromClient),
            Error::Send(SendError::CloseReasonTooLong(200)),
        ];
        for err in errors {
            let text = err.to_string();
            let cause = err.source().expect("a cause").to_string();
            assert!(!text.contains(&cause), "{text:?} repeats {cause:?}");
        }
        let protocol = Error::Protocol(ProtocolError::UnmaskedFrameFromClient);
        assert_eq!(
            protocol.to_string(),
            "the peer broke the WebSocket protocol; closed with 1002 (protocol error)"
        );
    }

    #[test]
    fn closed_says_whether_the_close_was_clean() {
        let clean = Error::Closed { was_clean: true };
        let abnormal = Error::Closed { was_clean: false };
        assert!(clean.is_closed() && abnormal.is_closed());
        assert_eq!(clean.to_string(), "the WebSocket connection is closed");
        assert!(abnormal.to_string().contains("1006"), "{abnormal}");
        assert!(Error::from(SendError::Closed).is_closed());
    }
}
