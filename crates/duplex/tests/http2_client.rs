//! The client over HTTP/2 (RFC 8441) against the library's own server on
//! hyper: h2 over TLS (ALPN) and h2c with prior knowledge, many WebSockets on
//! one TCP connection, permessage-deflate, the fallback to HTTP/1.1, refusals,
//! and streams that end badly (also a bare `h2` server that resets them).
#![cfg(all(
    feature = "http2",
    feature = "hyper",
    feature = "tls",
    feature = "deflate"
))]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use duplex::upgrade::{self, Body};
use duplex::{Acceptor, ClientBuilder, CloseCode, Error, Http2Connection, Message};
use futures_util::StreamExt;
use http::{Response, StatusCode, Version};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

/// What a test server does.
#[derive(Clone, Copy)]
struct Setup {
    tls: bool,
    /// `enable_connect_protocol()`: WebSockets over HTTP/2.
    connect_protocol: bool,
    /// Serve HTTP/2 at all (else HTTP/1.1 only, and ALPN `http/1.1`).
    http2: bool,
    /// SETTINGS_MAX_CONCURRENT_STREAMS, if not hyper's default.
    max_streams: Option<u32>,
}

const H2C: Setup = Setup {
    tls: false,
    connect_protocol: true,
    http2: true,
    max_streams: None,
};
const H2_TLS: Setup = Setup { tls: true, ..H2C };

/// The library's server on hyper-util's auto builder: `/forbidden` answers
/// 403, `/drop` opens the WebSocket and drops it at once, anything else
/// echoes.
struct Server {
    addr: std::net::SocketAddr,
    /// TCP connections accepted.
    accepts: Arc<AtomicUsize>,
    /// WebSockets opened over HTTP/2 and over HTTP/1.1.
    http2_websockets: Arc<AtomicUsize>,
    http1_websockets: Arc<AtomicUsize>,
    /// The connections' tasks, to kill the server mid-way.
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept_loop: JoinHandle<()>,
    cert: rustls::pki_types::CertificateDer<'static>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.accept_loop.abort();
        if let Ok(connections) = self.connections.try_lock() {
            connections.iter().for_each(JoinHandle::abort);
        }
    }
}

impl Server {
    async fn start(setup: Setup) -> Server {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = certified.cert.der().clone();
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        let tls = setup.tls.then(|| {
            let config = duplex::tls::server_config(vec![cert.clone()], key).unwrap();
            let mut config = Arc::unwrap_or_clone(config);
            config.alpn_protocols = if setup.http2 {
                vec![b"h2".to_vec(), b"http/1.1".to_vec()]
            } else {
                vec![b"http/1.1".to_vec()]
            };
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepts = Arc::new(AtomicUsize::new(0));
        let http2_websockets = Arc::new(AtomicUsize::new(0));
        let http1_websockets = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let mut http = auto::Builder::new(TokioExecutor::new());
        if setup.connect_protocol {
            http.http2().enable_connect_protocol();
        }
        if let Some(max) = setup.max_streams {
            http.http2().max_concurrent_streams(max);
        }
        let accept_loop = tokio::spawn({
            let (accepts, connections) = (accepts.clone(), connections.clone());
            let (h2_count, h1_count) = (http2_websockets.clone(), http1_websockets.clone());
            async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    accepts.fetch_add(1, Ordering::SeqCst);
                    let (http, tls) = (http.clone(), tls.clone());
                    let (h2_count, h1_count) = (h2_count.clone(), h1_count.clone());
                    let service = service_fn(move |mut request| {
                        let (h2_count, h1_count) = (h2_count.clone(), h1_count.clone());
                        async move { Ok::<_, Infallible>(handle(&mut request, &h2_count, &h1_count)) }
                    });
                    let task = tokio::spawn(async move {
                        match tls {
                            Some(acceptor) => {
                                let Ok(tls) = acceptor.accept(tcp).await else {
                                    return;
                                };
                                serve(setup, &http, TokioIo::new(tls), service).await;
                            }
                            None => serve(setup, &http, TokioIo::new(tcp), service).await,
                        }
                    });
                    connections.lock().await.push(task);
                }
            }
        });
        Server {
            addr,
            accepts,
            http2_websockets,
            http1_websockets,
            connections,
            accept_loop,
            cert,
        }
    }

    /// A client builder for `path` on this server, trusting its certificate.
    fn client(&self, tls: bool, path: &str) -> ClientBuilder {
        let url = match tls {
            true => format!("wss://localhost:{}{path}", self.addr.port()),
            false => format!("ws://127.0.0.1:{}{path}", self.addr.port()),
        };
        ClientBuilder::new(url)
            .tls_root(self.cert.clone())
            .connect_timeout(Duration::from_secs(5))
            .handshake_timeout(Duration::from_secs(5))
    }

    /// Kills every connection the server has: its TCP streams close.
    async fn kill_connections(&self) {
        for task in self.connections.lock().await.drain(..) {
            task.abort();
            let _ = task.await;
        }
    }
}

/// Serves one connection: HTTP/1.1 and HTTP/2, or HTTP/1.1 only.
async fn serve<I, S>(setup: Setup, http: &auto::Builder<TokioExecutor>, io: I, service: S)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = Response<Body>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let _ = if setup.http2 {
        http.serve_connection_with_upgrades(io, service).await
    } else {
        hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .with_upgrades()
            .await
            .map_err(Into::into)
    };
}

fn handle<B>(
    request: &mut http::Request<B>,
    http2: &AtomicUsize,
    http1: &AtomicUsize,
) -> Response<Body> {
    if request.uri().path() == "/forbidden" {
        return Response::builder()
            .status(StatusCode::FORBIDDEN)
            .body(Body::from(Bytes::from_static(b"no entry here")))
            .unwrap();
    }
    if !upgrade::is_upgrade_request(request) {
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Body::default())
            .unwrap();
    }
    let counter = match request.version() {
        Version::HTTP_2 => http2,
        _ => http1,
    };
    let drop_it = request.uri().path() == "/drop";
    match upgrade::upgrade(request, &Acceptor::new()) {
        Ok((response, pending)) => {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let Ok(mut ws) = pending.await else { return };
                if drop_it {
                    drop(ws);
                    return;
                }
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_text() || message.is_binary() {
                        let _ = ws.send(message).await;
                    }
                }
            });
            response
        }
        Err(refused) => refused.into_response(),
    }
}

/// Runs `f` with a limit, so that a hang fails the test instead of stalling it.
async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("the test ran over 20 seconds")
}

/// Sends a text and a binary message and checks both come back.
async fn echoes(ws: &mut duplex::WebSocket<duplex::ClientStream>, tag: usize) {
    let text = format!("hello {tag}");
    ws.send(Message::text(text.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(text));
    let binary = vec![tag as u8; 3000 + tag];
    ws.send(Message::binary(binary.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(binary));
}

async fn close_cleanly(mut ws: duplex::WebSocket<duplex::ClientStream>) {
    ws.close(CloseCode::NORMAL, "done").await.unwrap();
    let info = ws.close_info().expect("closed");
    assert!(info.was_clean, "{info:?}");
}

#[test]
fn the_connection_and_the_stream_go_between_threads() {
    fn shared<T: Clone + Send + Sync + 'static>() {}
    fn sent<T: Send + 'static>() {}
    shared::<Http2Connection>();
    sent::<duplex::ClientStream>();
    sent::<duplex::WebSocket<duplex::ClientStream>>();
}

#[tokio::test]
async fn h2_over_tls_is_chosen_by_alpn_and_echoes() {
    within(async {
        let server = Server::start(H2_TLS).await;
        let mut ws = server
            .client(true, "/echo")
            .http2(true)
            .connect()
            .await
            .unwrap();
        assert!(ws.get_ref().is_http2());
        assert!(ws.get_ref().is_tls());
        assert!(ws.get_ref().tcp().is_none());
        // Over HTTP/2 the opening response is a 200 (RFC 8441 section 5).
        let response = ws.response().expect("the client keeps its response");
        assert_eq!(response.status(), http::StatusCode::OK);
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(ws.get_ref().peer_addr().unwrap(), server.addr);
        echoes(&mut ws, 1).await;
        close_cleanly(ws).await;
        assert_eq!(server.http2_websockets.load(Ordering::SeqCst), 1);
        assert_eq!(server.http1_websockets.load(Ordering::SeqCst), 0);
    })
    .await;
}

#[tokio::test]
async fn h2c_with_prior_knowledge_echoes() {
    within(async {
        let server = Server::start(H2C).await;
        let mut ws = server
            .client(false, "/echo")
            .http2(true)
            .connect()
            .await
            .unwrap();
        assert!(ws.get_ref().is_http2());
        assert!(!ws.get_ref().is_tls());
        echoes(&mut ws, 2).await;
        close_cleanly(ws).await;
        assert_eq!(server.accepts.load(Ordering::SeqCst), 1);
        assert_eq!(server.http2_websockets.load(Ordering::SeqCst), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_websockets_share_one_tcp_connection() {
    within(async {
        for setup in [H2C, H2_TLS] {
            let server = Server::start(setup).await;
            let connection = Http2Connection::connect(&server.client(setup.tls, "/"))
                .await
                .unwrap();
            assert_eq!(connection.is_tls(), setup.tls);
            let mut sockets = Vec::new();
            for i in 0..100 {
                let builder = server.client(setup.tls, &format!("/echo/{i}"));
                sockets.push(connection.websocket(builder).await.unwrap());
            }
            // All at once: each task echoes on its own stream.
            let tasks: Vec<_> = sockets
                .into_iter()
                .enumerate()
                .map(|(i, mut ws)| {
                    tokio::spawn(async move {
                        echoes(&mut ws, i).await;
                        close_cleanly(ws).await;
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
            assert_eq!(server.accepts.load(Ordering::SeqCst), 1, "one TCP accept");
            assert_eq!(server.http2_websockets.load(Ordering::SeqCst), 100);
        }
    })
    .await;
}

#[tokio::test]
async fn large_messages_pass_the_flow_control_windows_both_ways() {
    within(async {
        let server = Server::start(H2C).await;
        let connection = Http2Connection::connect(&server.client(false, "/"))
            .await
            .unwrap();
        let mut a = connection
            .websocket(server.client(false, "/a").no_deflate())
            .await
            .unwrap();
        let mut b = connection
            .websocket(server.client(false, "/b").no_deflate())
            .await
            .unwrap();
        // 8 MiB, far past the stream (256 KiB) and connection (4 MiB)
        // windows, on two streams at once.
        let big: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
        let (ra, rb) = tokio::join!(
            async {
                a.send(Message::binary(big.clone())).await.unwrap();
                a.next().await.unwrap().unwrap()
            },
            async {
                b.send(Message::binary(big.clone())).await.unwrap();
                b.next().await.unwrap().unwrap()
            }
        );
        assert_eq!(ra, Message::binary(big.clone()));
        assert_eq!(rb, Message::binary(big));
        close_cleanly(a).await;
        close_cleanly(b).await;
    })
    .await;
}

#[tokio::test]
async fn permessage_deflate_is_negotiated_over_http2() {
    within(async {
        let server = Server::start(H2_TLS).await;
        let mut ws = server
            .client(true, "/deflate")
            .protocol("chat")
            .http2(true)
            .connect()
            .await
            .unwrap();
        assert!(ws.get_ref().is_http2());
        assert!(ws.deflate().is_some(), "permessage-deflate agreed");
        let text = "compressible ".repeat(1000);
        ws.send(Message::text(text.clone())).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(text));
        close_cleanly(ws).await;
    })
    .await;
}

#[tokio::test]
async fn without_enable_connect_protocol_the_client_falls_back_to_http1() {
    within(async {
        // h2c: the server speaks HTTP/2 but does not take WebSockets over
        // it, so the client connects again for HTTP/1.1.
        let no_setting = Setup {
            connect_protocol: false,
            ..H2C
        };
        let server = Server::start(no_setting).await;
        let mut ws = server
            .client(false, "/echo")
            .http2(true)
            .connect()
            .await
            .unwrap();
        assert!(!ws.get_ref().is_http2());
        assert!(ws.get_ref().tcp().is_some());
        assert_eq!(
            ws.response().map(|r| r.status()),
            Some(http::StatusCode::SWITCHING_PROTOCOLS)
        );
        echoes(&mut ws, 3).await;
        close_cleanly(ws).await;
        assert_eq!(server.accepts.load(Ordering::SeqCst), 2);
        assert_eq!(server.http1_websockets.load(Ordering::SeqCst), 1);
        let err = Http2Connection::connect(&server.client(false, "/"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Http2(why) if why.contains("SETTINGS_ENABLE_CONNECT_PROTOCOL")),
            "{err}"
        );

        // The same over TLS, where ALPN chose h2.
        let server = Server::start(Setup {
            connect_protocol: false,
            ..H2_TLS
        })
        .await;
        let mut ws = server
            .client(true, "/echo")
            .http2(true)
            .connect()
            .await
            .unwrap();
        assert!(!ws.get_ref().is_http2());
        assert!(ws.get_ref().is_tls());
        echoes(&mut ws, 4).await;
        close_cleanly(ws).await;
        assert_eq!(server.http1_websockets.load(Ordering::SeqCst), 1);
    })
    .await;
}

#[tokio::test]
async fn a_server_without_http2_gets_http1() {
    within(async {
        let http1_only = Setup {
            http2: false,
            ..H2_TLS
        };
        // TLS: the server picks http/1.1 in ALPN and the same connection
        // carries the HTTP/1.1 handshake.
        let server = Server::start(http1_only).await;
        let mut ws = server
            .client(true, "/echo")
            .http2(true)
            .connect()
            .await
            .unwrap();
        assert!(!ws.get_ref().is_http2());
        echoes(&mut ws, 5).await;
        close_cleanly(ws).await;
        assert_eq!(server.accepts.load(Ordering::SeqCst), 1);

        // h2c to a server that speaks only HTTP/1.1: it refuses the preface,
        // and the client connects again.
        let server = Server::start(Setup {
            tls: false,
            ..http1_only
        })
        .await;
        let mut ws = server
            .client(false, "/echo")
            .http2(true)
            .connect()
            .await
            .unwrap();
        assert!(!ws.get_ref().is_http2());
        echoes(&mut ws, 6).await;
        close_cleanly(ws).await;
        assert_eq!(server.accepts.load(Ordering::SeqCst), 2);
        assert_eq!(server.http1_websockets.load(Ordering::SeqCst), 1);
    })
    .await;
}

#[tokio::test]
async fn a_403_is_rejected_with_its_status_and_body() {
    within(async {
        let server = Server::start(H2_TLS).await;
        let err = server
            .client(true, "/forbidden")
            .http2(true)
            .connect()
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::FORBIDDEN), "{err}");
        let Error::Rejected(response) = &err else {
            panic!("{err}")
        };
        assert_eq!(response.body().as_ref(), b"no entry here");
        // The connection stays usable for other streams.
        let connection = Http2Connection::connect(&server.client(true, "/"))
            .await
            .unwrap();
        let err = connection
            .websocket(server.client(true, "/forbidden"))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::FORBIDDEN));
        let mut ws = connection
            .websocket(server.client(true, "/ok"))
            .await
            .unwrap();
        echoes(&mut ws, 7).await;
        // Another server's URL is not for this connection.
        let err = connection
            .websocket(ClientBuilder::new("wss://example.com/"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Url(_)), "{err}");
    })
    .await;
}

#[tokio::test]
async fn a_dropped_server_end_or_a_lost_connection_is_an_error_not_a_hang() {
    within(async {
        let server = Server::start(H2C).await;
        let connection = Http2Connection::connect(&server.client(false, "/"))
            .await
            .unwrap();
        // The server drops its WebSocket without a close frame: the stream
        // ends under the client's WebSocket (1006).
        let mut dropped = connection
            .websocket(server.client(false, "/drop"))
            .await
            .unwrap();
        match dropped.next().await {
            Some(Err(err)) => assert!(err.to_string().contains("1006"), "{err}"),
            other => panic!("a dropped stream read {other:?}"),
        }
        // The connection is still fine for the others.
        let mut ws = connection
            .websocket(server.client(false, "/echo"))
            .await
            .unwrap();
        echoes(&mut ws, 8).await;

        // The server's process is gone: its TCP connection closes.
        server.kill_connections().await;
        match ws.next().await {
            Some(Err(Error::Io(err))) => assert!(err.to_string().contains("HTTP/2"), "{err}"),
            other => panic!("a lost connection read {other:?}"),
        }
        let err = connection
            .websocket(server.client(false, "/echo"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Http2(_)), "{err}");
    })
    .await;
}

/// A bare HTTP/2 server (the `h2` crate): answers each extended CONNECT with
/// 200, then resets the stream (RST_STREAM, CANCEL) after `delay`.
async fn resetting_server(delay: Duration) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut builder = h2::server::Builder::new();
        builder.enable_connect_protocol();
        let mut connection = builder.handshake::<_, Bytes>(tcp).await.unwrap();
        while let Some(Ok((request, mut respond))) = connection.accept().await {
            let mut send = respond.send_response(Response::new(()), false).unwrap();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                send.send_reset(h2::Reason::CANCEL);
                drop(request);
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_rst_stream_from_the_server_is_an_error_on_read_and_write() {
    within(async {
        let addr = resetting_server(Duration::from_millis(100)).await;
        let url = format!("ws://{addr}/");
        let connection = Http2Connection::connect(&ClientBuilder::new(&url))
            .await
            .unwrap();
        let mut ws = connection
            .websocket(ClientBuilder::new(&url).no_deflate())
            .await
            .unwrap();
        assert!(ws.get_ref().is_http2());
        let err = ws.next().await.expect("an item").unwrap_err();
        let Error::Io(io) = &err else {
            panic!("wanted an I/O error, got {err}")
        };
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
        assert!(io.to_string().contains("HTTP/2 stream"), "{err}");

        // A writer that never reads learns of it too.
        let mut ws = connection
            .websocket(ClientBuilder::new(&url).no_deflate())
            .await
            .unwrap();
        let chunk = Message::binary(vec![7u8; 64 << 10]);
        let err = loop {
            if let Err(err) = ws.send(chunk.clone()).await {
                break err;
            }
        };
        assert!(!err.to_string().is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_websocket_past_the_servers_stream_limit_waits_for_a_free_stream() {
    within(async {
        let server = Server::start(Setup {
            max_streams: Some(2),
            ..H2C
        })
        .await;
        let connection = Http2Connection::connect(&server.client(false, "/"))
            .await
            .unwrap();
        let first = connection
            .websocket(server.client(false, "/1"))
            .await
            .unwrap();
        let mut second = connection
            .websocket(server.client(false, "/2"))
            .await
            .unwrap();
        let third = {
            let (connection, builder) = (connection.clone(), server.client(false, "/3"));
            tokio::spawn(async move { connection.websocket(builder).await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !third.is_finished(),
            "a third stream opened past the limit of 2"
        );
        assert_eq!(server.http2_websockets.load(Ordering::SeqCst), 2);
        close_cleanly(first).await;
        let mut third = third.await.unwrap().unwrap();
        echoes(&mut third, 9).await;
        echoes(&mut second, 10).await;
        // A stream limit the handshake timeout cannot outwait is a timeout.
        let err = connection
            .websocket(
                server
                    .client(false, "/4")
                    .handshake_timeout(Duration::from_millis(200)),
            )
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{err}");
    })
    .await;
}
