//! Opening the tunnel through a proxy: HTTP CONNECT (the reply read with
//! httparse, within bounds) or SOCKS5 (tokio-socks).

use std::io;
use std::net::IpAddr;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use super::{Proxy, ProxyErrorKind, Scheme};
use crate::error::{Error, Result, Timeout};

/// The most bytes of a CONNECT reply's head read before giving up on it.
const MAX_REPLY_HEAD: usize = 8 << 10;
/// The most header lines a CONNECT reply may carry.
const MAX_REPLY_HEADERS: usize = 64;

impl Proxy {
    /// Opens a TCP stream to `host:port` through this proxy by `deadline`:
    /// the connection to the proxy, then the CONNECT or SOCKS5 exchange.
    pub(crate) async fn tunnel(
        &self,
        host: &str,
        port: u16,
        deadline: Instant,
    ) -> Result<TcpStream> {
        let connecting = TcpStream::connect((self.host.as_str(), self.port));
        let mut tcp = match timeout_at(deadline, connecting).await {
            Err(_) => return Err(Error::Timeout(Timeout::Proxy)),
            Ok(Err(err)) => return Err(self.error(ProxyErrorKind::Unreachable(err))),
            Ok(Ok(tcp)) => tcp,
        };
        tcp.set_nodelay(true)?;
        let exchange = async {
            match self.scheme {
                Scheme::Http => self.http_connect(&mut tcp, host, port).await.map(|()| tcp),
                Scheme::Socks5 | Scheme::Socks5h => self.socks5_connect(tcp, host, port).await,
            }
        };
        match timeout_at(deadline, exchange).await {
            Err(_) => Err(Error::Timeout(Timeout::Proxy)),
            Ok(result) => result,
        }
    }

    /// Asks an HTTP proxy for a tunnel with CONNECT and reads its reply.
    async fn http_connect(&self, tcp: &mut TcpStream, host: &str, port: u16) -> Result<()> {
        let target = Proxy::authority(host, port);
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(c) = &self.credentials {
            let token = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", c.user, c.password));
            request.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
        }
        request.push_str("\r\n");
        tcp.write_all(request.as_bytes())
            .await
            .map_err(|err| self.error(ProxyErrorKind::Io(err)))?;

        let mut buf = [0u8; MAX_REPLY_HEAD];
        let mut filled = 0;
        loop {
            let n = tcp
                .read(&mut buf[filled..])
                .await
                .map_err(|err| self.error(ProxyErrorKind::Io(err)))?;
            if n == 0 {
                return Err(self.error(ProxyErrorKind::Malformed(
                    "the proxy closed the connection before its reply was complete".to_owned(),
                )));
            }
            filled += n;
            let mut headers = [httparse::EMPTY_HEADER; MAX_REPLY_HEADERS];
            let mut reply = httparse::Response::new(&mut headers);
            match reply.parse(&buf[..filled]) {
                Ok(httparse::Status::Complete(len)) => {
                    let code = reply.code.unwrap_or(0);
                    return self.http_reply(code, filled - len);
                }
                Ok(httparse::Status::Partial) if filled == buf.len() => {
                    return Err(self.error(ProxyErrorKind::Malformed(format!(
                        "the reply's head is over {} KiB",
                        MAX_REPLY_HEAD >> 10
                    ))));
                }
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(self.error(ProxyErrorKind::Malformed(format!(
                        "the reply has more than {MAX_REPLY_HEADERS} header lines"
                    ))));
                }
                Err(err) => {
                    return Err(self.error(ProxyErrorKind::Malformed(format!(
                        "not an HTTP reply ({err})"
                    ))));
                }
            }
        }
    }

    /// What a CONNECT reply's status (and the bytes read past its head) mean.
    fn http_reply(&self, code: u16, extra: usize) -> Result<()> {
        let status = http::StatusCode::from_u16(code).map_err(|_| {
            self.error(ProxyErrorKind::Malformed(format!(
                "status {code} is not valid"
            )))
        })?;
        // 407 is the status for this (RFC 9110 section 15.5.8); tinyproxy,
        // among others, answers wrong credentials with 401. Either way the
        // target was not reached: it is the proxy's authentication.
        if status == http::StatusCode::PROXY_AUTHENTICATION_REQUIRED
            || status == http::StatusCode::UNAUTHORIZED
        {
            return Err(self.error(ProxyErrorKind::AuthenticationRequired {
                status: Some(status),
                credentials_sent: self.credentials.is_some(),
            }));
        }
        if !status.is_success() {
            return Err(self.error(ProxyErrorKind::Status(status)));
        }
        // Both WebSocket and TLS have the client speak first: nothing the
        // target sent can be here yet, so these bytes are the proxy's error.
        if extra > 0 {
            return Err(self.error(ProxyErrorKind::Malformed(format!(
                "{extra} bytes followed the reply's head before the tunnel was used"
            ))));
        }
        Ok(())
    }

    /// Opens a SOCKS5 tunnel on `tcp`, a connection to this proxy.
    async fn socks5_connect(&self, tcp: TcpStream, host: &str, port: u16) -> Result<TcpStream> {
        use tokio_socks::TargetAddr;
        use tokio_socks::tcp::Socks5Stream;

        let target: TargetAddr<'_> = match (self.scheme, host.parse::<IpAddr>()) {
            (_, Ok(ip)) => TargetAddr::Ip((ip, port).into()),
            (Scheme::Socks5h, Err(_)) => TargetAddr::Domain(host.into(), port),
            (_, Err(_)) => match crate::client::resolve(host, port).await {
                Ok(addrs) => TargetAddr::Ip(addrs[0]),
                // The same error as without a proxy, with the way out.
                Err(Error::Resolve { host, source }) => {
                    return Err(Error::Resolve {
                        host,
                        source: io::Error::new(
                            source.kind(),
                            format!(
                                "{source} (socks5:// resolves names here; socks5h:// lets the proxy)"
                            ),
                        ),
                    });
                }
                Err(err) => return Err(err),
            },
        };
        let result = match &self.credentials {
            Some(c) => {
                Socks5Stream::connect_with_password_and_socket(tcp, target, &c.user, &c.password)
                    .await
            }
            None => Socks5Stream::connect_with_socket(tcp, target).await,
        };
        match result {
            Ok(stream) => Ok(stream.into_inner()),
            Err(err) => Err(self.socks_error(err)),
        }
    }

    fn socks_error(&self, err: tokio_socks::Error) -> Error {
        use tokio_socks::Error as E;
        let reply = |code: u8| {
            self.error(ProxyErrorKind::SocksReply {
                code,
                meaning: socks_reply_meaning(code),
            })
        };
        match err {
            E::Io(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
                self.error(ProxyErrorKind::Malformed(
                    "the proxy closed the connection before its reply was complete".to_owned(),
                ))
            }
            E::Io(err) => self.error(ProxyErrorKind::Io(err)),
            E::PasswordAuthFailure(_) | E::NoAcceptableAuthMethods | E::AuthorizationRequired => {
                self.error(ProxyErrorKind::AuthenticationRequired {
                    status: None,
                    credentials_sent: self.credentials.is_some(),
                })
            }
            E::GeneralSocksServerFailure => reply(1),
            E::ConnectionNotAllowedByRuleset => reply(2),
            E::NetworkUnreachable => reply(3),
            E::HostUnreachable => reply(4),
            E::ConnectionRefused => reply(5),
            E::TtlExpired => reply(6),
            E::CommandNotSupported => reply(7),
            E::AddressTypeNotSupported => reply(8),
            E::InvalidTargetAddress(why) => Error::Url(format!(
                "the target cannot be sent to a SOCKS5 proxy: {why}"
            )),
            E::InvalidAuthValues(why) => Error::Config(format!("proxy {self}: {why}")),
            other => self.error(ProxyErrorKind::Malformed(format!("{other}"))),
        }
    }
}

/// What a SOCKS5 reply code means (RFC 1928 section 6).
fn socks_reply_meaning(code: u8) -> &'static str {
    match code {
        1 => "general SOCKS server failure",
        2 => "connection not allowed by ruleset",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unassigned reply code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::ProxyError;

    #[test]
    fn proxy_errors_say_which_proxy_and_what_happened() {
        let proxy = Proxy::new("http://u:secret@127.0.0.1:3128").unwrap();
        let err = proxy.http_reply(407, 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "proxy http://127.0.0.1:3128: authentication required (HTTP 407): the user name and password were refused"
        );
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let text = refused.to_string();
        let err = proxy.error(ProxyErrorKind::Unreachable(refused));
        assert_eq!(
            err.to_string(),
            "proxy http://127.0.0.1:3128: cannot connect to the proxy"
        );
        let Error::Proxy(inner) = &err else {
            unreachable!()
        };
        let source = std::error::Error::source(inner).unwrap();
        assert_eq!(source.to_string(), text);
        let socks = Proxy::new("socks5://127.0.0.1:1080").unwrap();
        assert_eq!(
            socks
                .socks_error(tokio_socks::Error::ConnectionRefused)
                .to_string(),
            "proxy socks5://127.0.0.1:1080: the proxy refused the tunnel: connection refused (SOCKS5 reply 5)"
        );
        assert_eq!(
            proxy.http_reply(502, 0).unwrap_err().to_string(),
            "proxy http://127.0.0.1:3128: the proxy refused the tunnel with HTTP 502 Bad Gateway"
        );
        assert!(proxy.http_reply(200, 0).is_ok());
        assert!(matches!(
            proxy.http_reply(200, 5),
            Err(Error::Proxy(ProxyError {
                kind: ProxyErrorKind::Malformed(_),
                ..
            }))
        ));
    }
}
