//! The `static_and_ws` example's server, run in-process on loopback: files and
//! a WebSocket broadcast on one port, over HTTP/1.1 and HTTP/2 (h2c with prior
//! knowledge here; `tests/browser_http2.rs` has a browser over TLS), the
//! origin check, slow clients, and graceful shutdown.
#![cfg(all(feature = "hyper", feature = "tls"))]

// The example's server itself, not a copy. The example's `main.rs` uses all of
// it; these tests do not.
#[allow(dead_code)]
#[path = "../examples/static_and_ws/app.rs"]
mod app;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use duplex::{ClientBuilder, CloseCode, Error, Message, Role, WebSocket, WebSocketConfig};
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The most any test may take: a hang fails instead of stalling CI.
const LIMIT: Duration = Duration::from_secs(30);

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test timed out")
}

fn public_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/static_and_ws/public")
}

/// The example's server on 127.0.0.1, port chosen by the system.
struct Server {
    addr: SocketAddr,
    app: app::App,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(config: app::Config) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = app::App::new(config);
        let stop = CancellationToken::new();
        let task = tokio::spawn(app.clone().serve(listener, stop.clone().cancelled_owned()));
        Server {
            addr,
            app,
            stop,
            task,
        }
    }

    async fn with_defaults() -> Server {
        Server::start(app::Config::new(public_dir())).await
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Checks that `n` WebSockets are in the broadcast. A client joins it
    /// before its handshake response is sent, so once `connect` returns,
    /// everything broadcast reaches it: no waiting here.
    #[track_caller]
    fn assert_open(&self, n: usize) {
        assert_eq!(self.app.clients(), n, "clients in the broadcast");
    }

    /// Waits until `n` WebSockets are in the broadcast (after some left).
    async fn wait_open(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.app.clients() != n {
            assert!(
                Instant::now() < deadline,
                "expected {n} open WebSockets, there are {}",
                self.app.clients()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Starts the shutdown and returns how long `serve` took to return.
    async fn shut_down(self) -> Duration {
        let started = Instant::now();
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("serve did not return after the shutdown signal")
            .unwrap();
        started.elapsed()
    }
}

/// A GET over HTTP/1.1, or HTTP/2 with prior knowledge (h2c).
async fn get(addr: SocketAddr, path: &str, http2: bool) -> Response<Bytes> {
    let client = Client::builder(TokioExecutor::new())
        .http2_only(http2)
        .build_http::<Empty<Bytes>>();
    let uri = format!("http://{addr}{path}").parse().unwrap();
    let response = client.get(uri).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Response::from_parts(parts, body)
}

/// A WebSocket request written by hand, on a socket with a receive buffer of
/// `recv_buffer` bytes if given; returns the socket after the 101, with no
/// byte of the frames read.
async fn raw_websocket(addr: SocketAddr, recv_buffer: Option<u32>) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let mut tcp = socket.connect(addr).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.unwrap());
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    tcp
}

/// Reads server frames from a raw socket until a close frame: returns the
/// number of data frames before it and the close code and reason.
async fn read_to_close(tcp: &mut TcpStream) -> (usize, u16, String) {
    let mut data_frames = 0;
    loop {
        let b0 = tcp.read_u8().await.unwrap();
        let b1 = tcp.read_u8().await.unwrap();
        assert_eq!(b1 & 0x80, 0, "a server frame is never masked");
        let len = match b1 & 0x7f {
            126 => u64::from(tcp.read_u16().await.unwrap()),
            127 => tcp.read_u64().await.unwrap(),
            n => u64::from(n),
        };
        let mut payload = vec![0; len as usize];
        tcp.read_exact(&mut payload).await.unwrap();
        match b0 & 0x0f {
            0x1 | 0x2 => data_frames += 1,
            0x8 => {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                let reason = String::from_utf8(payload[2..].to_vec()).unwrap();
                return (data_frames, code, reason);
            }
            _ => {}
        }
    }
}

/// A WebSocket over HTTP/2 with prior knowledge: an extended CONNECT (RFC
/// 8441) sent with hyper's client. Returns the request sender too, which
/// keeps the connection's client side alive.
async fn http2_websocket(
    addr: SocketAddr,
) -> (
    WebSocket<TokioIo<hyper::upgrade::Upgraded>>,
    hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    // The server's SETTINGS_ENABLE_CONNECT_PROTOCOL comes in its first
    // SETTINGS frame, which the connection must read before the request goes.
    let mut connection = Box::pin(connection);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !connection.is_extended_connect_protocol_enabled() {
        assert!(
            Instant::now() < deadline,
            "the server did not enable extended CONNECT"
        );
        let _ = tokio::time::timeout(Duration::from_millis(10), connection.as_mut()).await;
    }
    tokio::spawn(connection);
    sender.ready().await.unwrap();
    let mut request = Request::builder()
        .method(Method::CONNECT)
        .version(Version::HTTP_2)
        .uri(format!("http://{addr}/ws"))
        .header("sec-websocket-version", "13")
        .body(Empty::new())
        .unwrap();
    request
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{response:?}");
    let upgraded = hyper::upgrade::on(response).await.unwrap();
    let ws = WebSocket::from_raw_socket(
        TokioIo::new(upgraded),
        Role::Client,
        WebSocketConfig::default(),
    );
    (ws, sender)
}

/// The next message that is not a ping or pong.
async fn next_data<S>(ws: &mut WebSocket<S>) -> Message
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match ws.next().await {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(message)) => return message,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// A message as a failed assertion shows it: large payloads by size.
fn describe(message: &Message) -> String {
    match message {
        Message::Text(text) if text.len() > 80 => format!("Text({} bytes)", text.len()),
        Message::Binary(data) if data.len() > 16 => {
            format!("Binary({} bytes: {:?}...)", data.len(), &data[..16])
        }
        other => format!("{other:?}"),
    }
}

#[track_caller]
fn assert_message(got: &Message, want: &Message, what: impl std::fmt::Display) {
    assert!(
        got == want,
        "{what}: got {}, expected {}",
        describe(got),
        describe(want)
    );
}

#[tokio::test]
async fn serves_files_over_http1_and_http2() {
    within(async {
        let server = Server::with_defaults().await;
        let index = std::fs::read(public_dir().join("index.html")).unwrap();
        let script = std::fs::read(public_dir().join("chat.js")).unwrap();

        for http2 in [false, true] {
            let version = if http2 {
                Version::HTTP_2
            } else {
                Version::HTTP_11
            };
            let page = get(server.addr, "/", http2).await;
            assert_eq!(page.status(), StatusCode::OK);
            assert_eq!(page.version(), version);
            assert_eq!(page.body(), &index[..], "GET / is index.html");
            assert!(
                page.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("text/html"),
                "{:?}",
                page.headers()
            );

            let js = get(server.addr, "/chat.js", http2).await;
            assert_eq!(js.status(), StatusCode::OK);
            assert_eq!(js.body(), &script[..]);

            let missing = get(server.addr, "/no-such-page.html", http2).await;
            assert_eq!(missing.status(), StatusCode::NOT_FOUND);
            // Nothing outside the root.
            let outside = get(server.addr, "/..%2Fapp.rs", http2).await;
            assert_eq!(outside.status(), StatusCode::NOT_FOUND);
        }

        // A WebSocket request anywhere but /ws is not one.
        let err = duplex::connect(format!("ws://{}/chat", server.addr))
            .await
            .unwrap_err();
        match err {
            Error::Rejected(response) => assert_eq!(response.status(), StatusCode::NOT_FOUND),
            other => panic!("expected a 404 rejection, got {other:?}"),
        }
        server.shut_down().await;
    })
    .await;
}

#[tokio::test]
async fn every_message_reaches_every_client_in_order() {
    within(async {
        let server = Server::with_defaults().await;
        let mut a = duplex::connect(server.ws_url()).await.unwrap();
        let mut b = duplex::connect(server.ws_url()).await.unwrap();
        server.assert_open(2);

        // A's messages, text and binary, come back to A and reach B, in order.
        let messages: Vec<Message> = (0..500)
            .map(|i| {
                if i % 2 == 0 {
                    Message::text(format!("message {i} from A: héllo"))
                } else {
                    Message::binary(vec![i as u8; i % 7 * 100])
                }
            })
            .collect();
        for message in &messages {
            a.feed(message.clone()).await.unwrap();
        }
        a.flush().await.unwrap();
        for (i, want) in messages.iter().enumerate() {
            assert_message(&next_data(&mut a).await, want, format!("A's copy of {i}"));
            assert_message(&next_data(&mut b).await, want, format!("B's copy of {i}"));
        }

        // And B's reach A.
        b.send(Message::text("hello from B")).await.unwrap();
        b.send(Message::binary(Bytes::from_static(&[0, 1, 2, 255])))
            .await
            .unwrap();
        for ws in [&mut a, &mut b] {
            assert_eq!(next_data(ws).await, Message::text("hello from B"));
            assert_eq!(
                next_data(ws).await,
                Message::binary(Bytes::from_static(&[0, 1, 2, 255]))
            );
        }

        // duplex clients offer compression when they can, and the server
        // agrees; its broadcasts still go out as prepared, uncompressed.
        #[cfg(feature = "deflate")]
        assert!(a.deflate().is_some() && b.deflate().is_some());

        // A client that leaves is out of the broadcast; the other carries on.
        a.close(CloseCode::NORMAL, "bye").await.unwrap();
        assert!(a.close_info().unwrap().was_clean);
        server.wait_open(1).await;
        b.send(Message::text("anyone?")).await.unwrap();
        assert_eq!(next_data(&mut b).await, Message::text("anyone?"));
        drop(b);
        server.shut_down().await;
    })
    .await;
}

#[tokio::test]
async fn http1_and_http2_websockets_share_the_broadcast() {
    within(async {
        let server = Server::with_defaults().await;
        let mut h1 = duplex::connect(server.ws_url()).await.unwrap();
        let (mut h2, _sender) = http2_websocket(server.addr).await;
        // One upgrade, one extended CONNECT (answered 200, as
        // `http2_websocket` checks).
        server.assert_open(2);

        h2.send(Message::text("over an HTTP/2 stream"))
            .await
            .unwrap();
        for (name, got) in [
            ("HTTP/1.1", next_data(&mut h1).await),
            ("HTTP/2", next_data(&mut h2).await),
        ] {
            assert_message(&got, &Message::text("over an HTTP/2 stream"), name);
        }
        h1.send(Message::binary(vec![7u8; 70_000])).await.unwrap();
        for (name, got) in [
            ("HTTP/1.1", next_data(&mut h1).await),
            ("HTTP/2", next_data(&mut h2).await),
        ] {
            assert_message(&got, &Message::binary(vec![7u8; 70_000]), name);
        }
        for i in 0..100 {
            h2.feed(Message::text(format!("h2 {i}"))).await.unwrap();
        }
        h2.flush().await.unwrap();

        for (i, want) in (0..100)
            .map(|i| Message::text(format!("h2 {i}")))
            .enumerate()
        {
            assert_message(
                &next_data(&mut h1).await,
                &want,
                format!("HTTP/1.1 client, {i}"),
            );
            assert_message(
                &next_data(&mut h2).await,
                &want,
                format!("HTTP/2 client, {i}"),
            );
        }

        // Shutdown closes the HTTP/2 one with 1001 too, and the connection
        // under it drains.
        let shutdown = tokio::spawn(server.shut_down());
        match next_data(&mut h1).await {
            Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::GOING_AWAY),
            other => panic!("expected close 1001, got {other:?}"),
        }
        match next_data(&mut h2).await {
            Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::GOING_AWAY),
            other => panic!("expected close 1001, got {other:?}"),
        }
        assert!(h2.next().await.is_none());
        assert!(h1.next().await.is_none());
        let took = shutdown.await.unwrap();
        assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    })
    .await;
}

#[tokio::test]
async fn a_foreign_origin_is_refused_with_403_before_any_upgrade() {
    within(async {
        let server = Server::with_defaults().await;
        let err = ClientBuilder::new(server.ws_url())
            .header("Origin", "https://evil.example")
            .unwrap()
            .connect()
            .await
            .unwrap_err();
        match err {
            Error::Rejected(response) => {
                assert_eq!(response.status(), StatusCode::FORBIDDEN);
                assert_eq!(response.body(), "origin not allowed\n");
            }
            other => panic!("expected a 403 rejection, got {other:?}"),
        }
        // Same host, another port: another origin.
        let other_port = format!("http://127.0.0.1:{}", server.addr.port() + 1);
        let err = ClientBuilder::new(server.ws_url())
            .header("Origin", other_port.as_str())
            .unwrap()
            .connect()
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Rejected(r) if r.status() == StatusCode::FORBIDDEN),
            "{err:?}"
        );
        server.assert_open(0);

        // The page's own origin is fine, and so is no Origin at all (not a
        // browser).
        let mut same = ClientBuilder::new(server.ws_url())
            .header("Origin", format!("http://{}", server.addr).as_str())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut none = duplex::connect(server.ws_url()).await.unwrap();
        server.assert_open(2);
        same.send(Message::text("same origin")).await.unwrap();
        assert_eq!(next_data(&mut same).await, Message::text("same origin"));
        assert_eq!(next_data(&mut none).await, Message::text("same origin"));
        drop((same, none));
        server.shut_down().await;
    })
    .await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_with_1008_and_the_others_keep_up() {
    within(async {
        let mut config = app::Config::new(public_dir());
        // Long enough that the stuck client can still read its close frame
        // when this test gets to it.
        config.close_timeout = Duration::from_secs(30);
        let server = Server::start(config).await;
        let a = duplex::connect(server.ws_url()).await.unwrap();
        let b = duplex::connect(server.ws_url()).await.unwrap();
        // Reads nothing after the handshake, with a small receive buffer.
        let mut stuck = raw_websocket(server.addr, Some(4096)).await;
        server.assert_open(3);

        // 1000 messages of 16 KiB: 16 MiB, far more than the stuck client's
        // socket buffers, write buffer and queue of 256 hold.
        const COUNT: usize = 1000;
        const SIZE: usize = 16 << 10;
        let message = |i: usize| {
            let mut data = vec![(i % 251) as u8; SIZE];
            data[..8].copy_from_slice(&(i as u64).to_be_bytes());
            Message::binary(data)
        };
        // A and B read as they go, in tasks of their own.
        let (a_read, mut a_write) = a.split();
        let (mut b_read, mut b_write) = b.split();
        // Each reader gives back a place in its window for every message.
        let read_all = |name: &'static str,
                        mut read: duplex::ReadHalf<_>,
                        window: Arc<Semaphore>| {
            tokio::spawn(async move {
                for i in 0..COUNT {
                    loop {
                        match read.next().await {
                            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                            Some(Ok(got)) => {
                                assert_message(&got, &message(i), format!("{name}'s copy of {i}"));
                                break;
                            }
                            other => panic!("{name}: expected message {i}, got {other:?}"),
                        }
                    }
                    window.add_permits(1);
                }
                read
            })
        };
        let started = Instant::now();
        // Clients that keep up: A sends the next message only while A and B
        // each have fewer than 64 not yet read, so their queues never near
        // 256 however the scheduler treats them; the stuck client falls one
        // message further behind each time.
        let a_window = Arc::new(Semaphore::new(64));
        let b_window = Arc::new(Semaphore::new(64));
        let a_reader = read_all("A", a_read, a_window.clone());
        let b_reader = read_all("B", b_read, b_window.clone());
        for i in 0..COUNT {
            a_window.acquire().await.unwrap().forget();
            b_window.acquire().await.unwrap().forget();
            a_write.send(message(i)).await.unwrap();
        }
        let a_read = a_reader.await.unwrap();
        b_read = b_reader.await.unwrap();
        let took = started.elapsed();
        eprintln!("16 MiB broadcast to the two readers in {took:?}");
        assert!(
            took < Duration::from_secs(15),
            "the readers waited on the stuck one"
        );

        // The stuck client is out of the broadcast; A and B are in it.
        server.assert_open(2);

        // The stuck client, reading at last, finds part of the broadcast and
        // then the close frame that says why it was dropped.
        let (received, code, reason) = read_to_close(&mut stuck).await;
        eprintln!("the stuck client got {received} messages, then {code} {reason:?}");
        assert!(received < COUNT - 256, "it fell behind: {received}");
        assert_eq!(code, 1008);
        assert!(reason.contains("too slow"), "{reason:?}");

        // The others are still served.
        b_write.send(Message::text("still here")).await.unwrap();
        loop {
            match b_read.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(got)) => break assert_eq!(got, Message::text("still here")),
                other => panic!("B: {other:?}"),
            }
        }
        drop((stuck, a_read, a_write, b_read, b_write));
        server.shut_down().await;
    })
    .await;
}

#[tokio::test]
async fn shutdown_closes_websockets_with_1001_and_idle_connections_do_not_hold_it() {
    within(async {
        let server = Server::with_defaults().await;
        let mut a = duplex::connect(server.ws_url()).await.unwrap();
        let mut b = duplex::connect(server.ws_url()).await.unwrap();
        server.assert_open(2);

        // An HTTP/1.1 keep-alive connection that asked for a page and is idle.
        let mut idle = TcpStream::connect(server.addr).await.unwrap();
        idle.write_all(b"GET /chat.js HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let script_len = std::fs::metadata(public_dir().join("chat.js"))
            .unwrap()
            .len() as usize;
        let mut response = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = idle.read(&mut chunk).await.unwrap();
            assert_ne!(n, 0, "closed before the response");
            response.extend_from_slice(&chunk[..n]);
            if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n")
                && response.len() - (end + 4) == script_len
            {
                break;
            }
        }
        assert!(response.starts_with(b"HTTP/1.1 200 OK\r\n"));
        // And a TCP connection that never sent a byte.
        let mut silent = TcpStream::connect(server.addr).await.unwrap();

        let addr = server.addr;
        let shutdown = tokio::spawn(server.shut_down());
        for (name, ws) in [("A", &mut a), ("B", &mut b)] {
            match next_data(ws).await {
                Message::Close(Some(frame)) => {
                    assert_eq!(frame.code, CloseCode::GOING_AWAY, "{name}");
                    assert_eq!(
                        frame.reason.as_str(),
                        "the server is shutting down",
                        "{name}"
                    );
                }
                other => panic!("{name}: expected close 1001, got {other:?}"),
            }
            // duplex answers the close frame; the server then ends the stream.
            assert!(ws.next().await.is_none(), "{name}");
            let info = ws.close_info().unwrap();
            assert_eq!(info.code, CloseCode::GOING_AWAY, "{name}");
            assert!(info.was_clean, "{name}: {info:?}");
        }
        for (name, tcp) in [("idle", &mut idle), ("silent", &mut silent)] {
            let n = tokio::time::timeout(Duration::from_secs(3), tcp.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("the {name} connection was not closed"))
                .unwrap_or(0);
            assert_eq!(n, 0, "{name}: EOF");
        }
        let took = shutdown.await.unwrap();
        eprintln!("shutdown took {took:?}");
        assert!(
            took < Duration::from_secs(2),
            "shutdown took {took:?}: something waited for the 5 s close timeout"
        );
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "still accepting after shutdown"
        );
    })
    .await;
}

#[tokio::test]
async fn shutdown_gives_up_on_a_client_that_ignores_the_close_after_the_close_timeout() {
    within(async {
        let mut config = app::Config::new(public_dir());
        config.close_timeout = Duration::from_millis(500);
        let server = Server::start(config).await;
        let mut deaf = raw_websocket(server.addr, None).await;
        server.assert_open(1);

        let took = server.shut_down().await;
        eprintln!("shutdown took {took:?}");
        assert!(
            took >= Duration::from_millis(450) && took < Duration::from_secs(3),
            "shutdown should wait for the close handshake up to the 500 ms close timeout, took {took:?}"
        );
        // It was sent 1001, and then the connection was dropped.
        let (_, code, reason) = read_to_close(&mut deaf).await;
        assert_eq!(code, 1001);
        assert_eq!(reason, "the server is shutting down");
        let mut rest = Vec::new();
        let end = tokio::time::timeout(Duration::from_secs(3), deaf.read_to_end(&mut rest)).await;
        assert!(end.is_ok(), "the connection was not dropped");
    })
    .await;
}
