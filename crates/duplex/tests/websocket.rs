//! The async client and server against each other: over loopback TCP for what
//! the network does, over in-memory pipes with paused time for timeouts.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use duplex::{
    Acceptance, Acceptor, ClientBuilder, CloseCode, Error, Keepalive, Message, ReadyState,
    Rejection, Role, Timeout, WebSocket, WebSocketConfig,
};
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const LIMIT: Duration = Duration::from_secs(20);

/// Runs `f` under a time limit, so a hang fails the test instead of CI.
async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test timed out")
}

/// An echo server on loopback for one connection, built by `server`; returns
/// its URL and the task, which yields the server's view at the end.
async fn echo_server(
    server: Acceptor,
) -> (String, JoinHandle<duplex::Result<WebSocket<TcpStream>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut ws = server.accept(tcp).await?;
        while let Some(message) = ws.next().await {
            let message = message?;
            if message.is_text() || message.is_binary() {
                ws.send(message).await?;
            }
        }
        Ok(ws)
    });
    (url, task)
}

#[tokio::test]
async fn text_binary_and_a_16_mib_message_echo() {
    within(async {
        let (url, server) = echo_server(Acceptor::new()).await;
        let mut ws = duplex::connect(&url).await.unwrap();
        assert_eq!(ws.ready_state(), ReadyState::Open);

        ws.send(Message::text("héllo")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("héllo"));
        ws.send(Message::binary(vec![0u8, 1, 2, 255]))
            .await
            .unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::binary(vec![0u8, 1, 2, 255])
        );

        let big: Vec<u8> = (0..16 << 20).map(|i| (i % 251) as u8).collect();
        ws.send(Message::binary(big.clone())).await.unwrap();
        match ws.next().await.unwrap().unwrap() {
            Message::Binary(data) => assert!(data == big, "16 MiB echo differs"),
            other => panic!("expected binary, got {other:?}"),
        }

        ws.close(CloseCode::NORMAL, "done").await.unwrap();
        let server = server.await.unwrap().unwrap();
        assert_eq!(server.close_info().unwrap().reason, "done");
    })
    .await;
}

#[tokio::test]
async fn pings_are_answered_with_the_same_payload() {
    within(async {
        let (url, _server) = echo_server(Acceptor::new()).await;
        let mut ws = duplex::connect(&url).await.unwrap();
        ws.send(Message::ping(&b"are you there"[..])).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::pong(&b"are you there"[..])
        );
        assert!(matches!(
            ws.send(Message::ping(vec![0u8; 126])).await,
            Err(Error::Send(_))
        ));
    })
    .await;
}

#[tokio::test]
async fn client_close_with_code_and_reason_is_clean_on_both_ends() {
    within(async {
        let (url, server) = echo_server(Acceptor::new()).await;
        let mut ws = duplex::connect(&url).await.unwrap();
        ws.close(CloseCode(4000), "bye now").await.unwrap();
        assert_eq!(ws.ready_state(), ReadyState::Closed);
        let info = ws.close_info().unwrap();
        assert!(info.was_clean);
        assert_eq!(info.code, CloseCode(4000), "the server echoes the code");

        let server = server.await.unwrap().unwrap();
        let info = server.close_info().unwrap();
        assert!(info.was_clean);
        assert_eq!(
            (info.code, info.reason.as_str()),
            (CloseCode(4000), "bye now")
        );
        assert!(matches!(
            ws.send(Message::text("late")).await,
            Err(Error::Closed { was_clean: true })
        ));
    })
    .await;
}

#[tokio::test]
async fn server_close_reaches_the_client_as_a_close_message() {
    within(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = duplex::accept(tcp).await.unwrap();
            ws.close(CloseCode::GOING_AWAY, "restarting").await.unwrap();
            ws.close_info().unwrap()
        });
        let mut ws = duplex::connect(&url).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::close(CloseCode::GOING_AWAY, "restarting")
        );
        assert!(ws.next().await.is_none());
        let info = ws.close_info().unwrap();
        assert!(info.was_clean);
        assert_eq!(
            (info.code, info.reason.as_str()),
            (CloseCode::GOING_AWAY, "restarting")
        );
        assert!(server.await.unwrap().was_clean);
    })
    .await;
}

/// Once the server has closed the TCP connection after the closing handshake,
/// the client closes its side too, even while the application keeps the
/// `WebSocket` (to read `close_info`, say): servers such as Python websockets
/// and Node ws wait for the client's FIN before they call the connection closed.
#[tokio::test]
async fn the_client_closes_its_side_of_tcp_after_the_closing_handshake() {
    within(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = duplex::accept(tcp).await.unwrap();
            while ws.next().await.is_some() {}
            // The server has shut down its side; now the client's FIN must come.
            let mut rest = Vec::new();
            ws.get_mut().read_to_end(&mut rest).await.unwrap();
            rest
        });
        let mut ws = duplex::connect(&url).await.unwrap();
        ws.close(CloseCode(4000), "bye").await.unwrap();
        assert!(ws.close_info().unwrap().was_clean);
        let rest = tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the client kept its side of the TCP connection open")
            .unwrap();
        assert!(rest.is_empty(), "bytes after the close frame: {rest:?}");
        drop(ws);
    })
    .await;
}

#[tokio::test]
async fn abrupt_end_is_an_error_then_the_end_and_not_clean() {
    within(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let ws = duplex::accept(tcp).await.unwrap();
            drop(ws); // no close frame
        });
        let mut ws = duplex::connect(&url).await.unwrap();
        let err = ws.next().await.unwrap().unwrap_err();
        assert!(matches!(err, Error::Closed { was_clean: false }), "{err}");
        assert!(err.is_closed());
        assert!(ws.next().await.is_none());
        let info = ws.close_info().unwrap();
        assert_eq!(info.code, CloseCode::ABNORMAL);
        assert!(!info.was_clean);
    })
    .await;
}

#[tokio::test]
async fn split_halves_work_from_two_tasks() {
    within(async {
        let (url, _server) = echo_server(Acceptor::new()).await;
        let ws = duplex::connect(&url).await.unwrap();
        let (mut reader, mut writer) = ws.split();
        let writing = tokio::spawn(async move {
            for i in 0..2000 {
                writer
                    .send(Message::text(format!("message {i}")))
                    .await
                    .unwrap();
            }
            writer
        });
        for i in 0..2000 {
            let message = reader.next().await.unwrap().unwrap();
            assert_eq!(message, Message::text(format!("message {i}")));
        }
        let mut writer = writing.await.unwrap();
        writer.close(CloseCode::NORMAL, "").await.unwrap();
        assert!(matches!(reader.next().await, Some(Ok(Message::Close(_)))));
        assert!(reader.next().await.is_none());
        assert!(reader.close_info().unwrap().was_clean);
    })
    .await;
}

#[tokio::test]
async fn subprotocol_follows_the_clients_preference_among_the_servers() {
    within(async {
        let server = Acceptor::new().protocols(["b", "a"]);
        let (url, _server) = echo_server(server.clone()).await;
        let ws = ClientBuilder::new(&url)
            .protocols(["x", "a", "b"])
            .connect()
            .await
            .unwrap();
        assert_eq!(ws.protocol(), Some("a"));

        let (url, _server) = echo_server(server).await;
        let ws = ClientBuilder::new(&url)
            .protocol("z")
            .connect()
            .await
            .unwrap();
        assert_eq!(ws.protocol(), None);
    })
    .await;
}

#[tokio::test]
async fn request_check_sees_path_query_and_headers_and_may_reject() {
    within(async {
        let server = Acceptor::new().on_request(|request| {
            let origin = request
                .headers()
                .get("origin")
                .and_then(|v| v.to_str().ok());
            if origin != Some("https://good.example") {
                return Err(Rejection::new(StatusCode::FORBIDDEN).body("origin not allowed"));
            }
            assert_eq!(request.uri().path(), "/chat");
            assert_eq!(request.uri().query(), Some("room=1"));
            assert_eq!(request.headers()["authorization"], "Bearer t0k3n");
            Ok(Acceptance::new()
                .protocol("v1")
                .header("x-served-by", "duplex")?)
        });

        let (url, _server) = echo_server(server.clone()).await;
        let err = ClientBuilder::new(format!("{url}chat?room=1"))
            .header("Origin", "https://evil.example")
            .unwrap()
            .connect()
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::FORBIDDEN));
        match &err {
            Error::Rejected(response) => assert_eq!(&response.body()[..], b"origin not allowed"),
            other => panic!("expected a rejection, got {other:?}"),
        }
        assert!(err.to_string().contains("403"), "{err}");

        let (url, _server) = echo_server(server).await;
        let mut ws = ClientBuilder::new(format!("{url}chat?room=1"))
            .protocol("v1")
            .header("Origin", "https://good.example")
            .unwrap()
            .header("Authorization", "Bearer t0k3n")
            .unwrap()
            .connect()
            .await
            .unwrap();
        assert_eq!(ws.protocol(), Some("v1"));
        ws.send(Message::text("in")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("in"));
    })
    .await;
}

#[tokio::test]
async fn the_handshake_stays_visible_on_both_ends_with_the_checks_data() {
    #[derive(Clone, Debug, PartialEq)]
    struct Room(String);

    within(async {
        for keep_request in [true, false] {
            let server = Acceptor::new()
                .protocols(["v1"])
                .keep_request(keep_request)
                .on_request(|request| {
                    let room = request.uri().path().trim_start_matches("/rooms/");
                    Ok(Acceptance::new()
                        .data(Room(room.to_owned()))
                        .header("x-room", room)?)
                });
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let accepted = tokio::spawn(async move {
                let (tcp, _) = listener.accept().await.unwrap();
                server.accept(tcp).await.unwrap()
            });
            let ws = ClientBuilder::new(format!("ws://{addr}/rooms/lobby?since=7"))
                .protocol("v1")
                .header("Cookie", "session=abc")
                .unwrap()
                .connect()
                .await
                .unwrap();
            let server_ws = accepted.await.unwrap();

            // The client sees the 101 with the server's headers.
            let response = ws.response().expect("a client keeps its response");
            assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
            assert_eq!(response.headers()["x-room"], "lobby");
            assert_eq!(response.headers()["sec-websocket-protocol"], "v1");
            assert!(ws.request().is_none());
            assert!(ws.data::<Room>().is_none());

            // The server sees the request it accepted, and the check's data.
            assert!(server_ws.response().is_none());
            assert_eq!(server_ws.data::<Room>(), Some(&Room("lobby".to_owned())));
            match server_ws.request() {
                Some(request) => {
                    assert!(keep_request);
                    assert_eq!(request.uri().path(), "/rooms/lobby");
                    assert_eq!(request.uri().query(), Some("since=7"));
                    assert_eq!(request.headers()["cookie"], "session=abc");
                }
                None => assert!(!keep_request, "keep_request is on by default"),
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_non_websocket_server_is_reported_with_status_and_body() {
    within(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 1024];
            let _ = tcp.read(&mut head).await;
            tcp.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 12\r\n\r\n<h1>hi</h1>\n")
                .await
                .unwrap();
        });
        let err = duplex::connect(&url).await.unwrap_err();
        match err {
            Error::Rejected(response) => {
                assert_eq!(response.status(), StatusCode::OK);
                assert_eq!(response.headers()["content-type"], "text/html");
                assert_eq!(&response.body()[..], b"<h1>hi</h1>\n");
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn a_plain_http_request_gets_426_from_the_server() {
    within(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            duplex::accept(tcp).await
        });
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        tcp.read_to_string(&mut response).await.unwrap();
        assert!(
            response.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
            "{response}"
        );
        assert!(
            response.contains("sec-websocket-version: 13\r\n"),
            "{response}"
        );
        assert!(matches!(server.await.unwrap(), Err(Error::Handshake(_))));
    })
    .await;
}

#[tokio::test]
async fn bad_urls_are_refused_before_connecting() {
    for url in [
        "http://example.com/",
        "example.com",
        "ws://",
        "ws://h/#frag",
    ] {
        let err = duplex::connect(url).await.unwrap_err();
        assert!(matches!(err, Error::Url(_)), "{url}: {err}");
    }
    // A bad header is refused by the call that gives it, naming it.
    let err = ClientBuilder::new("ws://127.0.0.1:1/")
        .header("bad name", "x")
        .unwrap_err();
    assert_eq!(err.name(), "bad name");
    assert!(err.to_string().contains("\"bad name\""), "{err}");
    let err = ClientBuilder::new("ws://127.0.0.1:1/")
        .header("X-Token", "a\nb")
        .unwrap_err();
    assert!(!err.is_name());
    assert!(err.to_string().contains("header X-Token"), "{err}");
    assert!(matches!(Error::from(err), Error::Config(_)));
}

#[tokio::test]
async fn json_messages() {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Quote {
        symbol: String,
        price: f64,
    }
    use duplex::JsonMessage;
    within(async {
        let (url, _server) = echo_server(Acceptor::new()).await;
        let mut ws = duplex::connect(&url).await.unwrap();
        let quote = Quote {
            symbol: "ACME".into(),
            price: 12.5,
        };
        ws.send(Message::json(&quote).unwrap()).await.unwrap();
        let back: Quote = ws.next().await.unwrap().unwrap().json().unwrap();
        assert_eq!(back, quote);
    })
    .await;
}

// ----- TLS -----

#[tokio::test]
async fn wss_with_a_self_signed_certificate() {
    use duplex::tls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    within(async {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert_der = cert.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
        let config = duplex::tls::server_config(vec![cert_der.clone()], key).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut ws = duplex::accept(tls).await.unwrap();
                    while let Some(Ok(message)) = ws.next().await {
                        if message.is_text() {
                            ws.send(message).await.unwrap();
                        }
                    }
                });
            }
        });

        let url = format!("wss://localhost:{port}/");
        let err = duplex::connect(&url).await.unwrap_err();
        assert!(
            matches!(&err, Error::Tls { server_name: Some(name), .. } if name == "localhost"),
            "an untrusted certificate must fail: {err}"
        );
        // Which server name, and why: the certificate (in the source).
        assert_eq!(err.to_string(), "the TLS handshake with localhost failed");
        let why = std::error::Error::source(&err)
            .expect("a cause")
            .to_string();
        assert!(why.contains("certificate"), "{why}");

        let mut ws = ClientBuilder::new(&url)
            .tls_root(cert_der)
            .connect()
            .await
            .unwrap();
        assert!(ws.get_ref().is_tls());
        ws.send(Message::text("secret")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("secret"));
        ws.close(CloseCode::NORMAL, "").await.unwrap();
        assert!(ws.close_info().unwrap().was_clean);

        let mut ws = ClientBuilder::new(&url)
            .danger_accept_invalid_certs(true)
            .connect()
            .await
            .unwrap();
        ws.send(Message::text("insecure")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("insecure"));
    })
    .await;
}

// ----- timing, backpressure and batching, over in-memory pipes -----

/// A client and server connected by an in-memory pipe of `capacity` bytes.
/// Keepalive, if configured, applies to the client only.
async fn pipe_pair(
    capacity: usize,
    config: WebSocketConfig,
) -> (WebSocket<DuplexStream>, WebSocket<DuplexStream>) {
    let (a, b) = tokio::io::duplex(capacity);
    let mut server_config = config.clone();
    server_config.keepalive = None;
    let builder = Acceptor::new().config(server_config);
    let server = tokio::spawn(async move { builder.accept(b).await });
    let client = ClientBuilder::new("ws://test/")
        .config(config)
        .connect_on(a)
        .await
        .unwrap();
    (client, server.await.unwrap().unwrap())
}

#[tokio::test(start_paused = true)]
async fn keepalive_detects_a_silent_peer() {
    let config = WebSocketConfig::default().keepalive(Keepalive::new(
        Duration::from_secs(20),
        Duration::from_secs(10),
    ));
    let (mut client, server) = pipe_pair(1 << 16, config).await;
    // The server is alive but never polled: it answers no ping.
    let started = tokio::time::Instant::now();
    let err = client.next().await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Timeout(Timeout::Keepalive)), "{err}");
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(30),
        "ping after 20 s, give up 10 s later"
    );
    assert!(client.next().await.is_none());
    let info = client.close_info().unwrap();
    assert_eq!(info.code, CloseCode::ABNORMAL);
    assert!(!info.was_clean);
    drop(server);
}

#[tokio::test(start_paused = true)]
async fn keepalive_is_satisfied_by_a_live_peer() {
    let config = WebSocketConfig::default().keepalive(Keepalive::new(
        Duration::from_secs(5),
        Duration::from_secs(2),
    ));
    let (mut client, mut server) = pipe_pair(1 << 16, config).await;
    let serving = tokio::spawn(async move {
        let mut pings = 0;
        while let Some(Ok(message)) = server.next().await {
            if matches!(message, Message::Ping(_)) {
                pings += 1;
            }
        }
        pings
    });
    // A minute of silence from the application: pings keep the link alive.
    let quiet = tokio::time::timeout(Duration::from_secs(60), client.next()).await;
    assert!(
        quiet.is_err(),
        "nothing should arrive, and no error either: {quiet:?}"
    );
    client.close(CloseCode::NORMAL, "").await.unwrap();
    let pings = serving.await.unwrap();
    assert!(
        (10..=13).contains(&pings),
        "{pings} pings in a minute at a 5 s interval"
    );
}

#[tokio::test(start_paused = true)]
async fn close_times_out_when_the_peer_never_answers() {
    let config = WebSocketConfig::default().close_timeout(Duration::from_secs(3));
    let (mut client, _server) = pipe_pair(1 << 16, config).await;
    let started = tokio::time::Instant::now();
    let err = client.close(CloseCode::NORMAL, "").await.unwrap_err();
    assert!(matches!(err, Error::Timeout(Timeout::Close)), "{err}");
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    assert_eq!(client.ready_state(), ReadyState::Closed);
    assert!(!client.close_info().unwrap().was_clean);
}

#[tokio::test(start_paused = true)]
async fn handshake_timeout_against_a_silent_client() {
    let (_client, server) = tokio::io::duplex(1024);
    let started = tokio::time::Instant::now();
    let err = Acceptor::new()
        .handshake_timeout(Duration::from_secs(2))
        .accept(server)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout(Timeout::Handshake)), "{err}");
    assert_eq!(started.elapsed(), Duration::from_secs(2));
}

#[tokio::test]
async fn send_waits_when_the_write_buffer_is_full() {
    // Without compression, so that every byte sent counts.
    let config = WebSocketConfig::default()
        .max_write_buffer(64 << 10)
        .no_deflate();
    let (mut client, mut server) = pipe_pair(8 << 10, config).await;
    let chunk = Bytes::from(vec![7u8; 4 << 10]);
    // The server reads nothing: the pipe fills, then our buffer, then we wait.
    let mut queued = 0;
    loop {
        let fed = tokio::time::timeout(
            Duration::from_millis(100),
            client.feed(Message::Binary(chunk.clone())),
        )
        .await;
        match fed {
            Ok(result) => {
                result.unwrap();
                queued += 1;
                assert!(queued < 1000, "send never waited");
            }
            Err(_) => break,
        }
    }
    let buffered = client.buffered_amount();
    assert!(
        ((60 << 10)..=(64 << 10) + (4 << 10) + 14).contains(&buffered),
        "{buffered}"
    );
    // Once the server reads, everything arrives in order.
    let reading = tokio::spawn(async move {
        for _ in 0..queued {
            assert_eq!(server.next().await.unwrap().unwrap().len(), 4 << 10);
        }
        server
    });
    within(client.flush()).await.unwrap();
    assert_eq!(client.buffered_amount(), 0);
    within(reading).await.unwrap();
}

/// A stream that counts the writes made to it.
struct CountingStream {
    inner: DuplexStream,
    writes: Arc<AtomicUsize>,
}

impl AsyncRead for CountingStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountingStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn many_queued_messages_leave_in_one_write() {
    let (a, b) = tokio::io::duplex(1 << 20);
    let writes = Arc::new(AtomicUsize::new(0));
    let counting = CountingStream {
        inner: a,
        writes: writes.clone(),
    };
    let mut ws = WebSocket::from_raw_socket(counting, Role::Server, WebSocketConfig::default());
    for i in 0..500 {
        ws.feed(Message::text(format!("update {i}"))).await.unwrap();
    }
    assert_eq!(writes.load(Ordering::SeqCst), 0, "feeding does not write");
    ws.flush().await.unwrap();
    assert_eq!(
        writes.load(Ordering::SeqCst),
        1,
        "500 small messages, one write"
    );

    let mut peer = WebSocket::from_raw_socket(b, Role::Client, WebSocketConfig::default());
    for i in 0..500 {
        assert_eq!(
            peer.next().await.unwrap().unwrap(),
            Message::text(format!("update {i}"))
        );
    }
}

#[tokio::test]
async fn a_protocol_error_from_the_server_fails_the_client_with_1002() {
    within(async {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let mut ws = WebSocket::from_raw_socket(a, Role::Client, WebSocketConfig::default());
        // A masked frame from a "server".
        b.write_all(&[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2])
            .await
            .unwrap();
        let err = ws.next().await.unwrap().unwrap_err();
        assert!(
            matches!(
                err,
                Error::Protocol(duplex::ProtocolError::MaskedFrameFromServer)
            ),
            "{err}"
        );
        assert!(ws.next().await.is_none());
        // The client sent a masked close frame with 1002 before closing.
        let mut wire = Vec::new();
        b.read_to_end(&mut wire).await.unwrap();
        assert_eq!(wire[0], 0x88);
        let key = [wire[2], wire[3], wire[4], wire[5]];
        let code = u16::from_be_bytes([wire[6] ^ key[0], wire[7] ^ key[1]]);
        assert_eq!(code, 1002);
    })
    .await;
}

#[tokio::test]
async fn a_ping_flood_from_a_peer_that_does_not_read_is_held_back() {
    let (ours, theirs) = tokio::io::duplex(4096);
    let config = WebSocketConfig::default().max_write_buffer(8 << 10);
    let mut server = WebSocket::from_raw_socket(ours, Role::Server, config);
    // The peer writes masked pings with 125-byte payloads and reads nothing.
    let (_their_reader, mut their_writer) = tokio::io::split(theirs);
    let mut ping = vec![0x89, 0x80 | 125, 0, 0, 0, 0];
    ping.extend([b'p'; 125]);
    let flood = tokio::spawn(async move {
        for _ in 0..100_000 {
            their_writer.write_all(&ping).await?;
        }
        std::io::Result::Ok(())
    });
    let serving = tokio::time::timeout(Duration::from_millis(500), async {
        while let Some(message) = server.next().await {
            assert!(matches!(message.unwrap(), Message::Ping(_)));
        }
    })
    .await;
    assert!(serving.is_err(), "the server kept serving");
    // Bounded: the limit, plus the pongs for the pings of the last read (a
    // read takes at most 16 KiB, and a pong is smaller than its ping).
    let buffered = server.buffered_amount();
    assert!(
        buffered <= (8 << 10) + (16 << 10),
        "{buffered} bytes of pongs queued"
    );
    assert!(!flood.is_finished(), "the flood was not held back");
}

#[tokio::test]
async fn a_refused_origin_gets_403_before_any_upgrade() {
    within(async {
        let server = Acceptor::new().origins(duplex::Origins::same_origin());
        let (url, _server) = echo_server(server.clone()).await;
        let err = ClientBuilder::new(&url)
            .header("Origin", "https://evil.example")
            .unwrap()
            .connect()
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::FORBIDDEN), "{err}");

        // The page's own origin, and a client that sends none, are let in.
        let (url, _server) = echo_server(server.clone()).await;
        let host = url.trim_start_matches("ws://").trim_end_matches('/');
        let mut ws = ClientBuilder::new(&url)
            .header("Origin", format!("http://{host}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        ws.send(Message::text("same origin")).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text("same origin")
        );
        let (url, _server) = echo_server(server).await;
        duplex::connect(&url).await.unwrap();
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_close_from_the_write_half_starts_the_close_timeout() {
    let config = WebSocketConfig::default().close_timeout(Duration::from_secs(3));
    let (client, _server) = pipe_pair(1 << 16, config).await;
    let (mut reader, mut writer) = client.split();
    let reading = tokio::spawn(async move {
        let mut results = Vec::new();
        while let Some(item) = reader.next().await {
            results.push(item.map_err(|e| e.to_string()));
        }
        (results, reader.close_info())
    });
    tokio::task::yield_now().await;
    let started = tokio::time::Instant::now();
    // The reader is waiting for input when the writer closes; the peer (never
    // polled) does not answer.
    writer.close(CloseCode::NORMAL, "bye").await.unwrap();
    let (results, info) = within(reading).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    assert_eq!(results.len(), 1, "{results:?}");
    assert!(
        results[0].as_ref().unwrap_err().contains("close frame"),
        "{results:?}"
    );
    assert!(!info.unwrap().was_clean);
}

#[tokio::test(start_paused = true)]
async fn the_reading_half_closes_and_waits_for_the_peer_to_answer() {
    let config = WebSocketConfig::default().close_timeout(Duration::from_secs(3));
    let (client, mut server) = pipe_pair(1 << 16, config).await;
    let serving = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(Ok(message)) = server.next().await {
            got.push(message);
        }
        (got, server.close_info())
    });
    let (mut reader, writer) = client.split();
    let started = tokio::time::Instant::now();
    reader.close(CloseCode(4000), "done").await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(reader.ready_state(), ReadyState::Closed);
    assert_eq!(writer.ready_state(), ReadyState::Closed);
    let info = reader.close_info().unwrap();
    assert!(info.was_clean);
    assert_eq!(info.code, CloseCode(4000), "the server echoes our code");
    let (got, server_info) = within(serving).await.unwrap();
    assert_eq!(
        got,
        [Message::Close(Some(duplex::CloseFrame::new(
            CloseCode(4000),
            "done"
        )))]
    );
    assert!(server_info.unwrap().was_clean);
}

#[tokio::test(start_paused = true)]
async fn the_reading_half_gives_up_on_a_silent_peer_after_the_close_timeout() {
    let config = WebSocketConfig::default().close_timeout(Duration::from_secs(3));
    let (client, _server) = pipe_pair(1 << 16, config).await;
    let (mut reader, _writer) = client.split();
    let started = tokio::time::Instant::now();
    let err = reader.close(CloseCode::NORMAL, "").await.unwrap_err();
    assert!(matches!(err, Error::Timeout(Timeout::Close)), "{err}");
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    assert_eq!(reader.ready_state(), ReadyState::Closed);
    assert!(!reader.close_info().unwrap().was_clean);
}
