//! What went wrong with a proxy.

use std::fmt;
use std::io;

#[cfg(doc)]
use crate::error::Error;

/// A proxy failed to open the tunnel, in [`Error::Proxy`]: which proxy, and
/// what happened.
#[derive(Debug)]
pub struct ProxyError {
    /// The proxy's URL, without credentials.
    pub(super) proxy: String,
    pub(super) kind: ProxyErrorKind,
}

impl ProxyError {
    /// The proxy's URL, without credentials.
    pub fn proxy(&self) -> &str {
        &self.proxy
    }

    /// What went wrong.
    pub fn kind(&self) -> &ProxyErrorKind {
        &self.kind
    }
}

/// What went wrong with a proxy, in [`ProxyError`].
#[derive(Debug)]
#[non_exhaustive]
pub enum ProxyErrorKind {
    /// The proxy could not be connected to (nothing listening, no route, a
    /// name that does not resolve).
    Unreachable(io::Error),
    /// The connection to the proxy failed during the exchange.
    Io(io::Error),
    /// The proxy wants credentials (HTTP 407), or refused the ones given
    /// (HTTP 407, or SOCKS5 user/password authentication failing).
    AuthenticationRequired {
        /// The HTTP proxy's status: 407, or 401 as some proxies answer
        /// wrong credentials; `None` from a SOCKS5 proxy.
        status: Option<http::StatusCode>,
        /// Whether credentials were sent, so were refused.
        credentials_sent: bool,
    },
    /// The HTTP proxy refused the tunnel with this status (not 407).
    Status(http::StatusCode),
    /// The SOCKS5 proxy refused the tunnel with this reply (RFC 1928
    /// section 6).
    SocksReply {
        /// The reply code, 1 to 255.
        code: u8,
        /// What the code means.
        meaning: &'static str,
    },
    /// The proxy's reply broke its protocol.
    Malformed(String),
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "proxy {}: ", self.proxy)?;
        match &self.kind {
            ProxyErrorKind::Unreachable(_) => f.write_str("cannot connect to the proxy"),
            ProxyErrorKind::Io(_) => f.write_str("the connection to the proxy failed"),
            ProxyErrorKind::AuthenticationRequired {
                status,
                credentials_sent,
            } => {
                match status {
                    Some(status) => {
                        write!(f, "authentication required (HTTP {})", status.as_u16())?
                    }
                    None => f.write_str("authentication required (SOCKS5)")?,
                }
                f.write_str(if *credentials_sent {
                    ": the user name and password were refused"
                } else {
                    ": no user name and password were given"
                })
            }
            ProxyErrorKind::Status(status) => {
                write!(f, "the proxy refused the tunnel with HTTP {status}")
            }
            ProxyErrorKind::SocksReply { code, meaning } => {
                write!(
                    f,
                    "the proxy refused the tunnel: {meaning} (SOCKS5 reply {code})"
                )
            }
            ProxyErrorKind::Malformed(why) => write!(f, "malformed reply: {why}"),
        }
    }
}

impl std::error::Error for ProxyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ProxyErrorKind::Unreachable(err) | ProxyErrorKind::Io(err) => Some(err),
            _ => None,
        }
    }
}
