//! `duplex::upgrade` on a plain hyper 1 server: one port for HTTP and
//! WebSocket, over HTTP/1.1 (RFC 6455) and HTTP/2 extended CONNECT (RFC 8441).

#![cfg(all(feature = "hyper", feature = "deflate"))]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use duplex::upgrade::{self, Body, PendingWebSocket};
use duplex::{
    Acceptor, ClientBuilder, CloseCode, CloseInfo, Error, HandshakeError, Message, Origins,
};
use futures_util::StreamExt;
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use support::{H2, body_text, http1_get, within};

/// What the server saw, for the tests to check.
#[derive(Debug)]
enum Seen {
    /// `upgrade` refused a request.
    Rejection {
        status: StatusCode,
        /// The handshake error, if that was why.
        handshake: Option<HandshakeError>,
        /// The rejection's status, if the origin policy or check rejected it.
        rejected: Option<StatusCode>,
    },
    /// A WebSocket that came over `version` ended.
    Closed { version: Version, info: CloseInfo },
}

/// A hyper server on loopback: `is_upgrade_request` requests go to
/// `upgrade::upgrade` with `server`'s settings and get an echo; others get
/// "hello, HTTP". HTTP/2 extended CONNECT is enabled when `connect_protocol`.
async fn start(
    server: Acceptor,
    connect_protocol: bool,
) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen, events) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let server = server.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let service =
                    service_fn(move |request| handle(request, server.clone(), seen.clone()));
                let mut builder = auto::Builder::new(TokioExecutor::new());
                if connect_protocol {
                    builder.http2().enable_connect_protocol();
                }
                let _ = builder
                    .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, events)
}

async fn handle(
    mut request: Request<Incoming>,
    server: Acceptor,
    seen: mpsc::UnboundedSender<Seen>,
) -> Result<Response<Body>, Infallible> {
    if !upgrade::is_upgrade_request(&request) {
        return Ok(Response::new(Body::from(Bytes::from_static(
            b"hello, HTTP",
        ))));
    }
    let version = request.version();
    match upgrade::upgrade(&mut request, &server) {
        Ok((response, websocket)) => {
            tokio::spawn(echo(websocket, version, seen));
            Ok(response)
        }
        Err(refused) => {
            let handshake = refused.handshake_error().cloned();
            let rejected = handshake.is_none().then(|| refused.status());
            let _ = seen.send(Seen::Rejection {
                status: refused.status(),
                handshake,
                rejected,
            });
            Ok(refused.into_response())
        }
    }
}

/// The server's end: says which HTTP version the socket came over, echoes text
/// and binary, closes with 4001 when asked, and reports how it ended.
async fn echo(websocket: PendingWebSocket, version: Version, seen: mpsc::UnboundedSender<Seen>) {
    let mut ws = websocket.await.expect("hyper hands over the connection");
    // The connection keeps the request it came with, over either version.
    let request = ws.request().expect("the request is kept by default");
    assert_eq!(request.version(), version);
    assert!(request.uri().path().starts_with('/'));
    ws.send(Message::text(format!("{version:?}")))
        .await
        .unwrap();
    while let Some(Ok(message)) = ws.next().await {
        if message == Message::text("please close") {
            ws.close(CloseCode(4001), "server says bye").await.unwrap();
        } else if message.is_text() || message.is_binary() {
            ws.send(message).await.unwrap();
        }
    }
    let info = ws.close_info().expect("the connection ended");
    let _ = seen.send(Seen::Closed { version, info });
}

async fn next_seen(events: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    events.recv().await.expect("the server reports")
}

async fn expect_text<S>(ws: &mut duplex::WebSocket<S>) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match ws.next().await {
        Some(Ok(Message::Text(text))) => text.to_string(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// Text, binary and a 1 MiB binary go there and back.
async fn echo_round_trips<S>(ws: &mut duplex::WebSocket<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::text("héllo")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("héllo"));
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![0u8, 1, 2, 255])
    );
    let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    match ws.next().await.unwrap().unwrap() {
        Message::Binary(data) => assert!(data == big, "1 MiB echo differs"),
        other => panic!("expected binary, got {other:?}"),
    }
}

#[tokio::test]
async fn http1_plain_http_and_websocket_share_the_port() {
    within(async {
        let server = Acceptor::new().protocols(["chat.v2", "chat.v1"]);
        let (addr, mut seen) = start(server, true).await;

        let page = http1_get(addr, "/", "").await;
        assert_eq!((page.status, page.body.as_str()), (200, "hello, HTTP"));

        let mut ws = ClientBuilder::new(format!("ws://{addr}/ws"))
            .protocols(["x-unknown", "chat.v1", "chat.v2"])
            .connect()
            .await
            .unwrap();
        assert_eq!(
            ws.protocol(),
            Some("chat.v1"),
            "the client's first choice the server speaks"
        );
        assert!(ws.deflate().is_some(), "compression agreed");
        assert_eq!(expect_text(&mut ws).await, "HTTP/1.1");
        echo_round_trips(&mut ws).await;

        ws.close(CloseCode(4000), "client says bye").await.unwrap();
        let info = ws.close_info().unwrap();
        assert!(info.was_clean);
        assert_eq!(info.code, CloseCode(4000), "the server echoes the code");
        match next_seen(&mut seen).await {
            Seen::Closed { version, info } => {
                assert_eq!(version, Version::HTTP_11);
                assert!(info.was_clean);
                assert_eq!(
                    (info.code, info.reason.as_str()),
                    (CloseCode(4000), "client says bye")
                );
            }
            other => panic!("expected the close, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn http1_server_close_code_and_reason_reach_the_client() {
    within(async {
        let (addr, mut seen) = start(Acceptor::new(), true).await;
        let mut ws = duplex::connect(format!("ws://{addr}/ws")).await.unwrap();
        assert_eq!(ws.protocol(), None, "no subprotocol offered, none agreed");
        assert_eq!(expect_text(&mut ws).await, "HTTP/1.1");
        ws.send(Message::text("please close")).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::close(CloseCode(4001), "server says bye")
        );
        assert!(ws.next().await.is_none());
        let info = ws.close_info().unwrap();
        assert!(info.was_clean);
        assert_eq!(
            (info.code, info.reason.as_str()),
            (CloseCode(4001), "server says bye")
        );
        match next_seen(&mut seen).await {
            Seen::Closed { info, .. } => assert!(info.was_clean),
            other => panic!("expected the close, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn http1_bad_requests_get_the_status_the_error_calls_for() {
    within(async {
        let (addr, mut seen) = start(Acceptor::new(), true).await;
        let upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\n";

        // No Sec-WebSocket-Key: 400.
        let missing_key = format!("{upgrade}Sec-WebSocket-Version: 13\r\n");
        let response = http1_get(addr, "/ws", &missing_key).await;
        assert_eq!(response.status, 400);
        assert!(
            response.body.contains("Sec-WebSocket-Key"),
            "{}",
            response.body
        );
        match next_seen(&mut seen).await {
            Seen::Rejection {
                status, handshake, ..
            } => {
                assert_eq!(status, StatusCode::BAD_REQUEST);
                assert_eq!(handshake, Some(HandshakeError::InvalidKey));
            }
            other => panic!("expected a refusal, got {other:?}"),
        }

        // Version 8: 426, naming the version the server speaks.
        let old = format!(
            "{upgrade}Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        );
        let response = http1_get(addr, "/ws", &old).await;
        assert_eq!(response.status, 426);
        assert!(
            response.head.contains("sec-websocket-version: 13"),
            "{}",
            response.head
        );
        assert!(matches!(
            next_seen(&mut seen).await,
            Seen::Rejection {
                status: StatusCode::UPGRADE_REQUIRED,
                ..
            }
        ));
    })
    .await;
}

#[tokio::test]
async fn http1_refused_origin_gets_403() {
    within(async {
        let server = Acceptor::new().origins(Origins::allow(["https://app.example"]));
        let (addr, mut seen) = start(server, true).await;
        let url = format!("ws://{addr}/ws");

        let err = ClientBuilder::new(&url)
            .header("Origin", "https://evil.example")
            .unwrap()
            .connect()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Rejected(_)), "{err}");
        assert_eq!(err.status(), Some(StatusCode::FORBIDDEN));
        assert!(err.to_string().contains("origin not allowed"), "{err}");
        match next_seen(&mut seen).await {
            Seen::Rejection {
                status, rejected, ..
            } => {
                assert_eq!(status, StatusCode::FORBIDDEN);
                assert_eq!(rejected, Some(StatusCode::FORBIDDEN));
            }
            other => panic!("expected a refusal, got {other:?}"),
        }

        let mut ws = ClientBuilder::new(&url)
            .header("Origin", "https://app.example")
            .unwrap()
            .connect()
            .await
            .expect("a listed origin is let in");
        assert_eq!(expect_text(&mut ws).await, "HTTP/1.1");
        ws.close(CloseCode::NORMAL, "").await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn http2_extended_connect_opens_a_websocket() {
    within(async {
        let server = Acceptor::new().protocols(["chat.v1"]);
        let (addr, mut seen) = start(server, true).await;
        let mut h2 = H2::connect(addr).await;

        // Ordinary requests share the HTTP/2 connection.
        let request = Request::get(format!("http://127.0.0.1:{}/", addr.port()))
            .version(Version::HTTP_2)
            .body(http_body_util::Empty::new())
            .unwrap();
        let page = h2.sender.send_request(request).await.unwrap();
        assert_eq!(page.version(), Version::HTTP_2);
        assert_eq!(body_text(page).await, "hello, HTTP");

        let (mut ws, response) = h2
            .open_websocket("/ws", &[("sec-websocket-protocol", "chat.v1")])
            .await;
        assert!(
            h2.connect_protocol_enabled(),
            "SETTINGS_ENABLE_CONNECT_PROTOCOL sent"
        );
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers();
        assert!(
            !headers.contains_key("sec-websocket-accept"),
            "no key over HTTP/2"
        );
        assert!(!headers.contains_key("upgrade") && !headers.contains_key("connection"));
        assert_eq!(ws.protocol(), Some("chat.v1"));
        assert!(ws.deflate().is_some(), "compression agreed");

        assert_eq!(
            expect_text(&mut ws).await,
            "HTTP/2.0",
            "the server saw HTTP/2"
        );
        echo_round_trips(&mut ws).await;

        // A second WebSocket on the same connection, as browsers do.
        let (mut second, _) = h2
            .open_websocket("/ws", &[("sec-websocket-protocol", "chat.v1")])
            .await;
        assert_eq!(expect_text(&mut second).await, "HTTP/2.0");
        second.send(Message::text("second")).await.unwrap();
        assert_eq!(
            second.next().await.unwrap().unwrap(),
            Message::text("second")
        );
        second.close(CloseCode::NORMAL, "").await.unwrap();

        // hyper resets the stream (RST_STREAM NO_ERROR) right after the
        // server's close frame, here before the client has read that frame:
        // the close is still clean, not a write error.
        ws.close(CloseCode(4000), "client says bye").await.unwrap();
        let info = ws.close_info().unwrap();
        assert!(info.was_clean);
        assert_eq!(info.code, CloseCode(4000));
        let mut reasons = Vec::new();
        for _ in 0..2 {
            match next_seen(&mut seen).await {
                Seen::Closed { version, info } => {
                    assert_eq!(version, Version::HTTP_2);
                    assert!(info.was_clean);
                    reasons.push(info.reason.to_string());
                }
                other => panic!("expected a close, got {other:?}"),
            }
        }
        reasons.sort();
        assert_eq!(reasons, ["", "client says bye"]);
    })
    .await;
}

#[tokio::test]
async fn http2_refusals_have_their_status_and_no_connection_headers() {
    within(async {
        let server = Acceptor::new().origins(Origins::allow(["https://app.example"]));
        let (addr, mut seen) = start(server, true).await;
        let mut h2 = H2::connect(addr).await;

        let response = h2
            .websocket_request("/ws", &[("origin", "https://evil.example")])
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(!response.headers().contains_key("connection"));
        assert_eq!(body_text(response).await, "origin not allowed\n");
        assert!(matches!(
            next_seen(&mut seen).await,
            Seen::Rejection {
                rejected: Some(StatusCode::FORBIDDEN),
                ..
            }
        ));

        let response = h2
            .websocket_request(
                "/ws",
                &[("sec-websocket-key", "x"), ("sec-websocket-version", "8")],
            )
            .await
            .unwrap();
        // Two version fields (13 and 8) are not "version 13".
        assert_eq!(response.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(response.headers()["sec-websocket-version"], "13");
        assert!(!response.headers().contains_key("upgrade"));
        assert!(!response.headers().contains_key("connection"));

        // The connection is still good for a WebSocket from a listed origin.
        let response = h2
            .websocket_request("/ws", &[("origin", "https://app.example")])
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    })
    .await;
}

#[tokio::test]
async fn http2_without_enable_connect_protocol_refuses_extended_connect() {
    within(async {
        let (addr, mut seen) = start(Acceptor::new(), false).await;
        let mut h2 = H2::connect(addr).await;
        let result = h2.websocket_request("/ws", &[]).await;
        assert!(
            !h2.connect_protocol_enabled(),
            "the server did not offer extended CONNECT"
        );
        match result {
            Err(_) => {}
            Ok(response) => assert_ne!(response.status(), StatusCode::OK, "{response:?}"),
        }
        assert!(
            seen.try_recv().is_err(),
            "the request never reached the service"
        );
    })
    .await;
}
