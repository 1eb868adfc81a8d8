//! `duplex::upgrade::TcpIo`: a hyper server whose plain TCP connections give
//! their requests a `TcpHandle`, so that a WebSocket upgraded over HTTP/1.1
//! sends prepared messages straight to the socket. Over loopback TCP, with
//! the socket filled past what it takes, and over HTTP/2, where the handle
//! must be ignored.

#![cfg(all(feature = "hyper", feature = "deflate"))]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use duplex::upgrade::{self, Body, TcpHandle, TcpIo};
use duplex::{Acceptor, Message, PreparedMessage, TrySendError, WebSocketConfig};
use futures_util::StreamExt;
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use support::{H2, http1_get, within};

/// Messages each WebSocket is sent, and their size: 12 MiB in all, far more
/// than loopback's socket buffers take while the client does not read.
const MESSAGES: usize = 768;
const SIZE: usize = 16 * 1024;

/// What the server reports of each WebSocket: the HTTP version it came
/// over, whether its sends went to the socket directly, and how many sends
/// found the queue full and were tried again.
#[derive(Debug)]
struct Sent {
    version: Version,
    direct: bool,
    retries: usize,
}

/// A hyper server on loopback that serves every connection as a `TcpIo`
/// with its handle in each request, answers plain requests with "hello,
/// HTTP", and sends `MESSAGES` prepared messages to each WebSocket from
/// another task, through its `Sender`, retrying a send that finds the queue
/// full.
async fn start() -> (SocketAddr, mpsc::UnboundedReceiver<Sent>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (report, reports) = mpsc::unbounded_channel();
    let acceptor = Acceptor::new().config(WebSocketConfig::default());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let io = TcpIo::new(tcp);
            let socket = io.handle();
            let acceptor = acceptor.clone();
            let report = report.clone();
            tokio::spawn(async move {
                let service = service_fn(move |mut request: Request<Incoming>| {
                    request.extensions_mut().insert::<TcpHandle>(socket.clone());
                    handle(request, acceptor.clone(), report.clone())
                });
                let mut builder = auto::Builder::new(TokioExecutor::new());
                builder.http2().enable_connect_protocol();
                let _ = builder.serve_connection_with_upgrades(io, service).await;
            });
        }
    });
    (addr, reports)
}

async fn handle(
    mut request: Request<Incoming>,
    acceptor: Acceptor,
    report: mpsc::UnboundedSender<Sent>,
) -> Result<Response<Body>, Infallible> {
    if !upgrade::is_upgrade_request(&request) {
        return Ok(Response::new(Body::from(Bytes::from_static(
            b"hello, HTTP",
        ))));
    }
    let version = request.version();
    let (response, pending) = upgrade::upgrade(&mut request, &acceptor).unwrap();
    tokio::spawn(async move {
        let (mut read, write) = pending.await.unwrap().split();
        let sender = write.sender();
        let direct = sender.writes_directly();
        let sending = tokio::spawn(async move {
            let mut retries = 0;
            for i in 0..MESSAGES {
                let prepared = PreparedMessage::binary(message(i));
                loop {
                    match sender.try_send_prepared(&prepared) {
                        Ok(()) => break,
                        Err(TrySendError::Full) => {
                            retries += 1;
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        Err(TrySendError::Closed) => panic!("closed at message {i}"),
                    }
                }
            }
            retries
        });
        // The reading half writes what the socket did not take at once.
        let reading = tokio::spawn(async move { while read.next().await.is_some() {} });
        let retries = sending.await.unwrap();
        let _ = report.send(Sent {
            version,
            direct,
            retries,
        });
        reading.await.unwrap();
        drop(write);
    });
    Ok(response)
}

/// Message `i`: its number, then bytes that depend on it.
fn message(i: usize) -> Vec<u8> {
    let mut bytes = vec![0; SIZE];
    bytes[..8].copy_from_slice(&(i as u64).to_be_bytes());
    for (k, byte) in bytes.iter_mut().enumerate().skip(8) {
        *byte = (i + k) as u8;
    }
    bytes
}

/// Reads `MESSAGES` messages off `ws` and checks each is whole and in order.
async fn expect_all<S>(ws: &mut duplex::WebSocket<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    for i in 0..MESSAGES {
        let got = ws.next().await.expect("a message").expect("no error");
        assert!(
            got == Message::binary(message(i)),
            "message {i} arrived changed or out of order"
        );
    }
}

#[tokio::test]
async fn http1_sends_go_to_the_socket_and_arrive_whole_and_in_order_past_a_full_socket() {
    within(async {
        let (addr, mut reports) = start().await;
        let mut ws = duplex::connect(&format!("ws://{addr}/ws")).await.unwrap();
        // Not reading yet: the socket fills, sends are taken in part or not
        // at all, and the rest queues behind them.
        tokio::time::sleep(Duration::from_millis(300)).await;
        expect_all(&mut ws).await;
        let sent = reports.recv().await.unwrap();
        assert_eq!(sent.version, Version::HTTP_11);
        assert!(
            sent.direct,
            "an HTTP/1.1 upgrade on a TcpIo writes directly"
        );
        assert!(
            sent.retries > 0,
            "the socket and the queue filled while the client did not read"
        );
        ws.close(duplex::CloseCode::NORMAL, "").await.unwrap();
        assert!(ws.close_info().unwrap().was_clean);
    })
    .await;
}

#[tokio::test]
async fn http2_ignores_the_handle_and_its_streams_go_through_hyper() {
    within(async {
        let (addr, mut reports) = start().await;
        let mut h2 = H2::connect(addr).await;
        let (mut ws, _) = h2.open_websocket("/ws", &[]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Bytes written to the socket past hyper would break the HTTP/2
        // framing, and the connection with it.
        expect_all(&mut ws).await;
        let sent = reports.recv().await.unwrap();
        assert_eq!(sent.version, Version::HTTP_2);
        assert!(
            !sent.direct,
            "a stream of an HTTP/2 connection is not the socket"
        );
        // The connection still carries ordinary requests.
        let request = Request::get(format!("http://127.0.0.1:{}/", addr.port()))
            .version(Version::HTTP_2)
            .body(http_body_util::Empty::new())
            .unwrap();
        let page = h2.sender.send_request(request).await.unwrap();
        assert_eq!(support::body_text(page).await, "hello, HTTP");
    })
    .await;
}

#[tokio::test]
async fn plain_http_over_tcp_io_is_answered_and_closed() {
    within(async {
        let (addr, _reports) = start().await;
        // `Connection: close`: hyper shuts the socket down after the
        // response, and the client reads to its end.
        let response = http1_get(addr, "/", "").await;
        assert_eq!(response.status, 200);
        assert_eq!(response.body, "hello, HTTP");
    })
    .await;
}
