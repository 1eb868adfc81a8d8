//! The client through real proxies: Debian's tinyproxy (HTTP CONNECT with
//! Basic auth) and microsocks (SOCKS5 with a user and password), ws:// and
//! wss:// to duplex echo servers on loopback; and through scripted proxies
//! that misbehave in ways the real ones do not. The tests with real proxies
//! run with the `external` feature (scripts/test.sh); the scripted ones in
//! every `cargo test`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duplex::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use duplex::{ClientBuilder, CloseCode, Error, Message, Proxy, ProxyErrorKind, Timeout};
use duplex_harness::proxies::{PASSWORD, ProxyProcess, USER, free_port};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

const LIMIT: Duration = Duration::from_secs(20);

/// Runs `f` under a time limit, so a hang fails the test instead of CI.
async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test timed out")
}

/// Listeners on `127.0.0.1` and, where the machine has it, `[::1]` on the
/// same port: a proxy may resolve `localhost` to either.
async fn listeners() -> (u16, Vec<TcpListener>) {
    let v4 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = v4.local_addr().unwrap().port();
    let mut all = vec![v4];
    if let Ok(v6) = TcpListener::bind(("::1", port)).await {
        all.push(v6);
    }
    (port, all)
}

/// Echoes text and binary messages until the peer closes.
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(stream: S) {
    let Ok(mut ws) = duplex::accept(stream).await else {
        return;
    };
    while let Some(Ok(message)) = ws.next().await {
        if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
            return;
        }
    }
}

/// A ws:// echo server; returns its port.
async fn ws_target() -> u16 {
    let (port, listeners) = listeners().await;
    for listener in listeners {
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(echo(tcp));
            }
        });
    }
    port
}

/// A wss:// echo server with a self-signed certificate for `localhost`
/// only: its port, the certificate to trust, and the server names (SNI)
/// its clients sent.
async fn wss_target() -> (
    u16,
    CertificateDer<'static>,
    Arc<Mutex<Vec<Option<String>>>>,
) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_der = cert.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let config = duplex::tls::server_config(vec![cert_der.clone()], key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let names = Arc::new(Mutex::new(Vec::new()));
    let (port, listeners) = listeners().await;
    for listener in listeners {
        let acceptor = acceptor.clone();
        let names = names.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let names = names.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let name = tls.get_ref().1.server_name().map(str::to_owned);
                    names.lock().unwrap().push(name);
                    echo(tls).await;
                });
            }
        });
    }
    (port, cert_der, names)
}

/// Sends a text message, expects it back, closes cleanly.
async fn round_trip<S: AsyncRead + AsyncWrite + Unpin>(mut ws: duplex::WebSocket<S>, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(text));
    ws.close(CloseCode::NORMAL, "").await.unwrap();
    assert!(ws.close_info().unwrap().was_clean);
}

/// The proxy error in `err`, or a panic saying what came instead.
fn proxy_error(err: &Error) -> &duplex::ProxyError {
    match err {
        Error::Proxy(err) => err,
        other => panic!("expected a proxy error, got {other:?}: {other}"),
    }
}

// ----- HTTP CONNECT: tinyproxy -----

#[tokio::test]
#[cfg_attr(
    not(feature = "external"),
    ignore = "runs tinyproxy or microsocks: --features external"
)]
async fn ws_and_wss_through_tinyproxy_with_basic_auth() {
    within(async {
        let ws_port = ws_target().await;
        let (wss_port, cert, names) = wss_target().await;
        let tinyproxy = ProxyProcess::tinyproxy(&[ws_port, wss_port]);
        let proxy = Proxy::new(&tinyproxy.url_with_auth("http")).unwrap();

        let ws = ClientBuilder::new(format!("ws://127.0.0.1:{ws_port}/"))
            .proxy(proxy.clone())
            .connect()
            .await
            .unwrap();
        round_trip(ws, "through CONNECT").await;

        // The certificate names localhost only, not the proxy's 127.0.0.1:
        // it verifies because TLS runs to the target inside the tunnel.
        let ws = ClientBuilder::new(format!("wss://localhost:{wss_port}/"))
            .proxy(proxy)
            .tls_root(cert)
            .connect()
            .await
            .unwrap();
        assert!(ws.get_ref().is_tls());
        round_trip(ws, "TLS inside CONNECT").await;
        assert_eq!(*names.lock().unwrap(), [Some("localhost".to_owned())]);

        let log = tinyproxy.log();
        assert!(
            log.contains(&format!("CONNECT 127.0.0.1:{ws_port} ")),
            "{log}"
        );
        assert!(
            log.contains(&format!("CONNECT localhost:{wss_port} ")),
            "{log}"
        );
    })
    .await;
}

#[tokio::test]
#[cfg_attr(
    not(feature = "external"),
    ignore = "runs tinyproxy or microsocks: --features external"
)]
async fn tinyproxy_without_or_with_wrong_credentials_refuses_naming_the_proxy() {
    within(async {
        let port = ws_target().await;
        let tinyproxy = ProxyProcess::tinyproxy(&[port]);
        let url = format!("ws://127.0.0.1:{port}/");

        let without = Proxy::new(&tinyproxy.url("http")).unwrap();
        let err = ClientBuilder::new(&url).proxy(without).connect().await.unwrap_err();
        let proxy = proxy_error(&err);
        assert_eq!(proxy.proxy(), tinyproxy.url("http"));
        assert!(matches!(
            proxy.kind(),
            ProxyErrorKind::AuthenticationRequired {
                status: Some(http::StatusCode::PROXY_AUTHENTICATION_REQUIRED),
                credentials_sent: false
            }
        ));
        assert_eq!(
            err.to_string(),
            format!(
                "proxy http://{}: authentication required (HTTP 407): no user name and password were given",
                tinyproxy.addr
            )
        );

        let wrong = Proxy::new(&format!("http://{USER}:wrong-password@{}", tinyproxy.addr)).unwrap();
        let err = ClientBuilder::new(&url).proxy(wrong).connect().await.unwrap_err();
        // tinyproxy answers wrong credentials with 401, not 407.
        assert!(
            matches!(
                proxy_error(&err).kind(),
                ProxyErrorKind::AuthenticationRequired {
                    status: Some(http::StatusCode::UNAUTHORIZED),
                    credentials_sent: true
                }
            ),
            "{err:?}"
        );
        let text = err.to_string();
        assert_eq!(
            text,
            format!(
                "proxy http://{}: authentication required (HTTP 401): the user name and password were refused",
                tinyproxy.addr
            )
        );
        assert!(!text.contains("wrong-password"), "{text}");
    })
    .await;
}

#[tokio::test]
#[cfg_attr(
    not(feature = "external"),
    ignore = "runs tinyproxy or microsocks: --features external"
)]
async fn tinyproxy_refusing_the_tunnel_is_a_status_error() {
    within(async {
        let allowed = ws_target().await;
        let other = ws_target().await;
        let nothing = free_port();
        let tinyproxy = ProxyProcess::tinyproxy(&[allowed, nothing]);
        let proxy = Proxy::new(&tinyproxy.url_with_auth("http")).unwrap();

        // A port not in ConnectPort: 403.
        let err = ClientBuilder::new(format!("ws://127.0.0.1:{other}/"))
            .proxy(proxy.clone())
            .connect()
            .await
            .unwrap_err();
        match proxy_error(&err).kind() {
            ProxyErrorKind::Status(status) => assert_eq!(status.as_u16(), 403),
            other => panic!("expected a status, got {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "proxy http://{}: the proxy refused the tunnel with HTTP 403",
                tinyproxy.addr
            )),
            "{text}"
        );
        assert!(!text.contains(PASSWORD), "{text}");

        // Allowed, but nothing listens there: tinyproxy says 500.
        let err = ClientBuilder::new(format!("ws://127.0.0.1:{nothing}/"))
            .proxy(proxy)
            .connect()
            .await
            .unwrap_err();
        match proxy_error(&err).kind() {
            ProxyErrorKind::Status(status) => assert_eq!(status.as_u16(), 500),
            other => panic!("expected a status, got {other:?}"),
        }
    })
    .await;
}

// ----- SOCKS5: microsocks -----

#[tokio::test]
#[cfg_attr(
    not(feature = "external"),
    ignore = "runs tinyproxy or microsocks: --features external"
)]
async fn ws_and_wss_through_microsocks_socks5_and_socks5h_with_a_password() {
    within(async {
        let ws_port = ws_target().await;
        let (wss_port, cert, names) = wss_target().await;
        let microsocks = ProxyProcess::microsocks();
        for scheme in ["socks5", "socks5h"] {
            let proxy = Proxy::new(&microsocks.url_with_auth(scheme)).unwrap();
            let ws = ClientBuilder::new(format!("ws://127.0.0.1:{ws_port}/"))
                .proxy(proxy.clone())
                .connect()
                .await
                .unwrap();
            round_trip(ws, scheme).await;

            // By name: resolved here for socks5, by the proxy for socks5h;
            // TLS checks the name either way.
            let ws = ClientBuilder::new(format!("wss://localhost:{wss_port}/"))
                .proxy(proxy)
                .tls_root(cert.clone())
                .connect()
                .await
                .unwrap();
            round_trip(ws, scheme).await;
        }
        assert_eq!(
            *names.lock().unwrap(),
            [Some("localhost".to_owned()), Some("localhost".to_owned())]
        );
    })
    .await;
}

#[tokio::test]
async fn socks5h_sends_the_name_and_socks5_the_address() {
    // What the proxy is asked for, read off the wire by a scripted SOCKS5
    // server that refuses every request after reading it (reply 2).
    within(async {
        for (scheme, expected) in [
            ("socks5h", {
                let mut r = vec![5, 1, 0, 3, 9];
                r.extend_from_slice(b"localhost");
                r.extend_from_slice(&443u16.to_be_bytes());
                r
            }),
            ("socks5", {
                // What localhost resolves to here, as the client resolves it.
                let local = std::net::ToSocketAddrs::to_socket_addrs(&("localhost", 443))
                    .unwrap()
                    .next()
                    .unwrap();
                let mut r = vec![5, 1, 0];
                match local.ip() {
                    std::net::IpAddr::V4(ip) => r.extend([1].iter().chain(&ip.octets())),
                    std::net::IpAddr::V6(ip) => r.extend([4].iter().chain(&ip.octets())),
                }
                r.extend_from_slice(&443u16.to_be_bytes());
                r
            }),
        ] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(async move {
                let (mut tcp, _) = listener.accept().await.unwrap();
                let mut greeting = [0u8; 3];
                tcp.read_exact(&mut greeting).await.unwrap();
                assert_eq!(greeting, [5, 1, 0], "no credentials: method 0 only");
                tcp.write_all(&[5, 0]).await.unwrap();
                let mut request = vec![0u8; expected.len()];
                tcp.read_exact(&mut request).await.unwrap();
                tcp.write_all(&[5, 2, 0, 1, 0, 0, 0, 0, 0, 0])
                    .await
                    .unwrap();
                request == expected
            });
            // Port 443, what a wss URL defaults to.
            let proxy = Proxy::new(&format!("{scheme}://{addr}")).unwrap();
            let err = ClientBuilder::new("wss://localhost/")
                .proxy(proxy)
                .connect()
                .await
                .unwrap_err();
            match proxy_error(&err).kind() {
                ProxyErrorKind::SocksReply { code: 2, meaning } => {
                    assert_eq!(*meaning, "connection not allowed by ruleset")
                }
                other => panic!("expected reply 2, got {other:?}"),
            }
            assert!(server.await.unwrap(), "{scheme}: the request on the wire");
        }
    })
    .await;
}

#[tokio::test]
#[cfg_attr(
    not(feature = "external"),
    ignore = "runs tinyproxy or microsocks: --features external"
)]
async fn microsocks_refuses_a_wrong_or_missing_password() {
    within(async {
        let port = ws_target().await;
        let microsocks = ProxyProcess::microsocks();
        let url = format!("ws://127.0.0.1:{port}/");

        let wrong = Proxy::new(&format!("socks5://{USER}:nope@{}", microsocks.addr)).unwrap();
        let err = ClientBuilder::new(&url).proxy(wrong).connect().await.unwrap_err();
        assert!(
            matches!(
                proxy_error(&err).kind(),
                ProxyErrorKind::AuthenticationRequired {
                    status: None,
                    credentials_sent: true
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "proxy socks5://{}: authentication required (SOCKS5): the user name and password were refused",
                microsocks.addr
            )
        );

        let none = Proxy::new(&microsocks.url("socks5h")).unwrap();
        let err = ClientBuilder::new(&url).proxy(none).connect().await.unwrap_err();
        assert!(
            matches!(
                proxy_error(&err).kind(),
                ProxyErrorKind::AuthenticationRequired {
                    status: None,
                    credentials_sent: false
                }
            ),
            "{err:?}"
        );
    })
    .await;
}

#[tokio::test]
#[cfg_attr(
    not(feature = "external"),
    ignore = "runs tinyproxy or microsocks: --features external"
)]
async fn microsocks_reply_code_for_a_target_nobody_listens_on() {
    within(async {
        let microsocks = ProxyProcess::microsocks();
        let proxy = Proxy::new(&microsocks.url_with_auth("socks5")).unwrap();
        let err = ClientBuilder::new(format!("ws://127.0.0.1:{}/", free_port()))
            .proxy(proxy)
            .connect()
            .await
            .unwrap_err();
        match proxy_error(&err).kind() {
            ProxyErrorKind::SocksReply { code: 5, meaning } => {
                assert_eq!(*meaning, "connection refused")
            }
            other => panic!("expected reply 5, got {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            format!(
                "proxy socks5://{}: the proxy refused the tunnel: connection refused (SOCKS5 reply 5)",
                microsocks.addr
            )
        );
    })
    .await;
}

// ----- no proxy there -----

#[tokio::test]
async fn an_unreachable_proxy_is_named_with_the_io_error_as_source() {
    within(async {
        let target = ws_target().await;
        for scheme in ["http", "socks5", "socks5h"] {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let proxy = Proxy::new(&format!("{scheme}://{USER}:{PASSWORD}@{addr}")).unwrap();
            let err = ClientBuilder::new(format!("ws://127.0.0.1:{target}/"))
                .proxy(proxy)
                .connect()
                .await
                .unwrap_err();
            let ProxyErrorKind::Unreachable(io) = proxy_error(&err).kind() else {
                panic!("{scheme}: expected unreachable, got {err:?}");
            };
            assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
            assert_eq!(
                err.to_string(),
                format!("proxy {scheme}://{addr}: cannot connect to the proxy")
            );
            let source = std::error::Error::source(proxy_error(&err)).expect("the I/O error");
            assert_eq!(source.to_string(), io.to_string());
        }
    })
    .await;
}

// ----- the environment -----

#[tokio::test]
#[cfg_attr(
    not(feature = "external"),
    ignore = "runs tinyproxy or microsocks: --features external"
)]
async fn the_environment_picks_the_proxy_by_scheme_and_no_proxy_bypasses_it() {
    within(async {
        let ws_port = ws_target().await;
        let (wss_port, cert, _) = wss_target().await;
        let tinyproxy = ProxyProcess::tinyproxy(&[ws_port, wss_port]);
        let microsocks = ProxyProcess::microsocks();
        let http_url = tinyproxy.url_with_auth("http");
        let socks_url = microsocks.url_with_auth("socks5h");
        let env = |no_proxy: &str| {
            let (http, socks, no_proxy) =
                (http_url.clone(), socks_url.clone(), no_proxy.to_owned());
            move |name: &str| match name {
                "http_proxy" => Some(http.clone()),
                "HTTPS_PROXY" => Some(socks.clone()),
                "no_proxy" => Some(no_proxy.clone()),
                _ => None,
            }
        };
        let ws_url = format!("ws://127.0.0.1:{ws_port}/");
        let wss_url = format!("wss://localhost:{wss_port}/");

        let chosen = Proxy::from_vars(&ws_url, env("")).unwrap().unwrap();
        assert_eq!(chosen.to_string(), tinyproxy.url("http"));
        let ws = ClientBuilder::new(&ws_url)
            .proxy(chosen)
            .connect()
            .await
            .unwrap();
        round_trip(ws, "http_proxy").await;
        assert!(
            tinyproxy
                .log()
                .contains(&format!("CONNECT 127.0.0.1:{ws_port} "))
        );

        let chosen = Proxy::from_vars(&wss_url, env("")).unwrap().unwrap();
        assert_eq!(chosen.to_string(), microsocks.url("socks5h"));
        let ws = ClientBuilder::new(&wss_url)
            .proxy(chosen)
            .tls_root(cert.clone())
            .connect()
            .await
            .unwrap();
        round_trip(ws, "HTTPS_PROXY").await;

        // NO_PROXY: by address, by CIDR range, by name with the port.
        let with_port = format!("other.example, 127.0.0.1:{ws_port}");
        for no_proxy in ["127.0.0.1", "127.0.0.0/8", &with_port] {
            assert!(
                Proxy::from_vars(&ws_url, env(no_proxy)).unwrap().is_none(),
                "{no_proxy}"
            );
        }
        assert!(
            Proxy::from_vars(&ws_url, env("127.0.0.1:1"))
                .unwrap()
                .is_some()
        );
        assert!(
            Proxy::from_vars(&wss_url, env("localhost"))
                .unwrap()
                .is_none()
        );
        let port_entry = format!("localhost:{wss_port}");
        assert!(
            Proxy::from_vars(&wss_url, env(&port_entry))
                .unwrap()
                .is_none()
        );
        assert!(
            Proxy::from_vars(&wss_url, env("localhost:1"))
                .unwrap()
                .is_some()
        );
        // Bypassed, the connection is direct.
        let ws = ClientBuilder::new(&ws_url)
            .no_proxy()
            .connect()
            .await
            .unwrap();
        round_trip(ws, "direct").await;
    })
    .await;
}

// ----- scripted proxies: replies no real proxy should send -----

/// A one-connection HTTP "proxy" that reads the request head, answers with
/// `reply`, and returns the request it read.
async fn scripted_http_proxy(reply: Vec<u8>) -> (SocketAddr, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut byte = [0u8; 1];
        while !request.ends_with(b"\r\n\r\n") && tcp.read(&mut byte).await.unwrap() == 1 {
            request.push(byte[0]);
        }
        tcp.write_all(&reply).await.unwrap();
        let _ = tcp.shutdown().await;
        // Hold the socket until the client is done with it.
        let _ = tcp.read(&mut byte).await;
        String::from_utf8(request).unwrap()
    });
    (addr, task)
}

#[tokio::test]
async fn the_connect_request_names_the_target_and_carries_basic_auth() {
    within(async {
        let (addr, request) =
            scripted_http_proxy(b"HTTP/1.1 502 Bad Gateway\r\n\r\n".to_vec()).await;
        let proxy = Proxy::new(&format!("http://Aladdin:open%20sesame@{addr}")).unwrap();
        let err = ClientBuilder::new("wss://[::1]:8443/chat")
            .proxy(proxy)
            .connect()
            .await
            .unwrap_err();
        match proxy_error(&err).kind() {
            ProxyErrorKind::Status(status) => assert_eq!(status.as_u16(), 502),
            other => panic!("expected 502, got {other:?}"),
        }
        assert_eq!(
            request.await.unwrap(),
            "CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n\
             Proxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n\r\n"
        );
    })
    .await;
}

#[tokio::test]
async fn malformed_connect_replies_are_errors_that_say_so() {
    within(async {
        let mut huge = b"HTTP/1.1 200 OK\r\nX-Pad: ".to_vec();
        huge.extend(std::iter::repeat_n(b'x', 9000));
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        many.extend(std::iter::repeat_n(b"X-A: 1\r\n".as_slice(), 100).flatten());
        many.extend(b"\r\n");
        for (reply, says) in [
            (
                b"HTTP/1.1 200 Connection established\r\n\r\nHELLO".to_vec(),
                "5 bytes followed the reply's head",
            ),
            (b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec(), "not an HTTP reply"),
            (
                b"HTTP/1.1 200 OK\r\nX: ".to_vec(),
                "closed the connection before its reply was complete",
            ),
            (huge, "over 8 KiB"),
            (many, "more than 64 header lines"),
        ] {
            let (addr, _request) = scripted_http_proxy(reply).await;
            let proxy = Proxy::new(&format!("http://{addr}")).unwrap();
            let err = ClientBuilder::new("ws://example.test/")
                .proxy(proxy)
                .connect()
                .await
                .unwrap_err();
            assert!(
                matches!(proxy_error(&err).kind(), ProxyErrorKind::Malformed(_)),
                "{err:?}"
            );
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("proxy http://{addr}: malformed reply: ")),
                "{text}"
            );
            assert!(text.contains(says), "{text}");
        }
    })
    .await;
}

#[tokio::test]
async fn a_proxy_that_never_answers_times_out_in_the_proxy_phase() {
    within(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                held.push(tcp);
            }
        });
        for scheme in ["http", "socks5h"] {
            let proxy = Proxy::new(&format!("{scheme}://{addr}")).unwrap();
            let err = ClientBuilder::new("ws://example.test/")
                .proxy(proxy)
                .connect_timeout(Duration::from_millis(300))
                .connect()
                .await
                .unwrap_err();
            assert!(
                matches!(err, Error::Timeout(Timeout::Proxy)),
                "{scheme}: {err:?}"
            );
            assert_eq!(err.to_string(), "the proxy did not open the tunnel in time");
        }
    })
    .await;
}
