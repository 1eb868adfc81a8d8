//! `duplex::axum::WebSocketUpgrade` in an axum app served by `axum::serve`:
//! HTTP and WebSocket routes on one port, over HTTP/1.1 and HTTP/2.

#![cfg(all(feature = "axum", feature = "deflate"))]

mod support;

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use duplex::axum::WebSocketUpgrade;
use duplex::upgrade::Upgraded;
use duplex::{Acceptance, Acceptor, ClientBuilder, CloseCode, Error, Message, Origins, Rejection};
use futures_util::StreamExt;
use http::{Request, StatusCode, Version};
use tokio::net::TcpListener;

use support::{H2, body_text, http1_get, within};

/// The server's end: says which HTTP version the socket came over and which
/// subprotocol was selected, then echoes text and binary.
async fn echo(mut socket: duplex::WebSocket<Upgraded>, hello: String) {
    if socket.send(Message::text(hello)).await.is_err() {
        return;
    }
    while let Some(Ok(message)) = socket.next().await {
        if (message.is_text() || message.is_binary()) && socket.send(message).await.is_err() {
            break;
        }
    }
}

async fn chat(ws: WebSocketUpgrade) -> Response {
    let ws = ws.protocols(["chat.v1"]);
    let hello = format!(
        "{:?} {}",
        ws.request().version(),
        ws.selected_protocol().unwrap_or("-")
    );
    ws.on_upgrade(move |socket| echo(socket, hello))
}

async fn same_origin(ws: WebSocketUpgrade) -> Response {
    ws.origins(Origins::same_origin())
        .on_upgrade(|socket| echo(socket, "same origin".into()))
}

/// A route that takes its settings from an `Acceptor` built once.
async fn shared(State(server): State<Acceptor>, ws: WebSocketUpgrade) -> Response {
    ws.acceptor(server)
        .max_message_size(1 << 10)
        .on_upgrade(|socket| echo(socket, "shared".into()))
}

/// A page and its socket on one path.
async fn page_or_socket(ws: Option<WebSocketUpgrade>) -> Response {
    match ws {
        Some(ws) => ws.on_upgrade(|socket| echo(socket, "socket".into())),
        None => "page".into_response(),
    }
}

async fn start() -> SocketAddr {
    let server = Acceptor::new().on_request(|request: &Request<()>| match request.uri().query() {
        Some("token=secret") => Ok(Acceptance::new()),
        _ => Err(Rejection::new(StatusCode::UNAUTHORIZED).body("no token\n")),
    });
    let app = Router::new()
        .route("/", get(|| async { "hello, HTTP" }))
        .route("/ws", any(chat))
        .route("/same-origin", any(same_origin))
        .route("/shared", any(shared))
        .route("/both", any(page_or_socket))
        .with_state(server);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
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

/// Text and a 1 MiB binary go there and back.
async fn echo_round_trips<S>(ws: &mut duplex::WebSocket<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::text("héllo")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("héllo"));
    let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    match ws.next().await.unwrap().unwrap() {
        Message::Binary(data) => assert!(data == big, "1 MiB echo differs"),
        other => panic!("expected binary, got {other:?}"),
    }
}

#[tokio::test]
async fn http_and_websocket_routes_share_the_port() {
    within(async {
        let addr = start().await;
        let page = http1_get(addr, "/", "").await;
        assert_eq!((page.status, page.body.as_str()), (200, "hello, HTTP"));

        let mut ws = ClientBuilder::new(format!("ws://{addr}/ws"))
            .protocol("chat.v1")
            .connect()
            .await
            .unwrap();
        assert_eq!(ws.protocol(), Some("chat.v1"));
        assert!(ws.deflate().is_some(), "compression agreed");
        assert_eq!(expect_text(&mut ws).await, "HTTP/1.1 chat.v1");
        echo_round_trips(&mut ws).await;
        ws.close(CloseCode(4000), "bye").await.unwrap();
        let info = ws.close_info().unwrap();
        assert!(info.was_clean);
        assert_eq!(info.code, CloseCode(4000), "the server echoes the code");
    })
    .await;
}

#[tokio::test]
async fn requests_that_are_not_websocket_handshakes_get_the_handshake_error() {
    within(async {
        let addr = start().await;

        // A browser navigating to the socket's URL.
        let plain = http1_get(addr, "/ws", "").await;
        assert_eq!(plain.status, 426);
        assert!(
            plain.head.contains("sec-websocket-version: 13"),
            "{}",
            plain.head
        );
        assert!(plain.body.contains("websocket"), "{}", plain.body);

        // A broken handshake: no key.
        let no_key = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n";
        let response = http1_get(addr, "/ws", no_key).await;
        assert_eq!(response.status, 400);
        assert!(
            response.body.contains("Sec-WebSocket-Key"),
            "{}",
            response.body
        );

        // A subprotocol the route does not speak is not agreed.
        let mut ws = ClientBuilder::new(format!("ws://{addr}/ws"))
            .protocol("chat.v9")
            .connect()
            .await
            .unwrap();
        assert_eq!(ws.protocol(), None);
        assert_eq!(expect_text(&mut ws).await, "HTTP/1.1 -");
        ws.close(CloseCode::NORMAL, "").await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_refused_origin_gets_403() {
    within(async {
        let addr = start().await;
        let url = format!("ws://{addr}/same-origin");
        let err = ClientBuilder::new(&url)
            .header("Origin", "https://evil.example")
            .unwrap()
            .connect()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Rejected(_)), "{err}");
        assert_eq!(err.status(), Some(StatusCode::FORBIDDEN));
        assert!(err.to_string().contains("origin not allowed"), "{err}");

        let mut ws = ClientBuilder::new(&url)
            .header("Origin", format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .expect("the page's own origin is let in");
        assert_eq!(expect_text(&mut ws).await, "same origin");
        ws.close(CloseCode::NORMAL, "").await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_shared_server_builder_brings_its_request_check_and_limits() {
    within(async {
        let addr = start().await;
        let err = duplex::connect(format!("ws://{addr}/shared"))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED), "{err}");

        let mut ws = duplex::connect(format!("ws://{addr}/shared?token=secret"))
            .await
            .unwrap();
        assert_eq!(expect_text(&mut ws).await, "shared");
        ws.send(Message::text("small")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("small"));
        // Over the route's 1 KiB limit: the server closes with 1009.
        ws.send(Message::binary(vec![7u8; 4096])).await.unwrap();
        let closed = ws.next().await.unwrap().unwrap();
        assert!(
            matches!(&closed, Message::Close(Some(frame)) if frame.code == CloseCode::MESSAGE_TOO_BIG),
            "{closed:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn option_extractor_serves_the_page_and_the_socket() {
    within(async {
        let addr = start().await;
        let page = http1_get(addr, "/both", "").await;
        assert_eq!((page.status, page.body.as_str()), (200, "page"));
        let mut ws = duplex::connect(format!("ws://{addr}/both")).await.unwrap();
        assert_eq!(expect_text(&mut ws).await, "socket");
        ws.close(CloseCode::NORMAL, "").await.unwrap();

        // Asking for a WebSocket and getting the handshake wrong is an error,
        // not the page.
        let no_key = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n";
        assert_eq!(http1_get(addr, "/both", no_key).await.status, 400);
    })
    .await;
}

#[tokio::test]
async fn http2_extended_connect_reaches_the_extractor() {
    within(async {
        let addr = start().await;
        let mut h2 = H2::connect(addr).await;

        let (mut ws, response) = h2
            .open_websocket("/ws", &[("sec-websocket-protocol", "chat.v1")])
            .await;
        assert!(
            h2.connect_protocol_enabled(),
            "axum::serve enables extended CONNECT"
        );
        assert!(!response.headers().contains_key("sec-websocket-accept"));
        assert_eq!(ws.protocol(), Some("chat.v1"));
        assert!(ws.deflate().is_some(), "compression agreed");
        assert_eq!(expect_text(&mut ws).await, "HTTP/2.0 chat.v1");
        echo_round_trips(&mut ws).await;
        ws.close(CloseCode(4000), "bye").await.unwrap();
        assert!(ws.close_info().unwrap().was_clean);

        // A refused origin over HTTP/2: 403, without HTTP/1.1's headers.
        let refused = h2
            .websocket_request("/same-origin", &[("origin", "https://evil.example")])
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert!(!refused.headers().contains_key("connection"));
        assert_eq!(body_text(refused).await, "origin not allowed\n");
        let own = format!("http://127.0.0.1:{}", addr.port());
        let (mut ws, _) = h2.open_websocket("/same-origin", &[("origin", &own)]).await;
        assert_eq!(expect_text(&mut ws).await, "same origin");
        ws.close(CloseCode::NORMAL, "").await.unwrap();

        // A plain HTTP/2 GET to the socket's URL: 405, naming CONNECT.
        let get = Request::get(format!("http://127.0.0.1:{}/ws", addr.port()))
            .version(Version::HTTP_2)
            .body(http_body_util::Empty::new())
            .unwrap();
        let response = h2.sender.send_request(get).await.unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()["allow"], "CONNECT");
        let body = body_text(response).await;
        assert!(body.contains("CONNECT"), "{body}");
    })
    .await;
}
