//! The reconnecting client against real servers on loopback: a server
//! restarted under it, refusals that stop it or delay it, a silent peer found
//! by keepalive, and the send queue across reconnections.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use duplex::reconnect::{Backoff, Event, Reconnect, Reconnecting, Stop};
use duplex::{
    Acceptance, Acceptor, ClientBuilder, CloseCode, Error, Keepalive, Message, Rejection,
    TrySendError,
};
use futures_util::StreamExt;
use http::StatusCode;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use support::within;

/// Short delays, so the tests take milliseconds.
fn quick() -> Backoff {
    Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
        factor: 2.0,
    }
}

/// An echo server on `listener` that reports each text message it receives
/// on `seen`, tagged with the number of the connection (from 1).
fn echo_server(
    listener: TcpListener,
    server: Acceptor,
    seen: mpsc::UnboundedSender<(usize, String)>,
) -> JoinHandle<()> {
    let connections = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        // Aborting this task drops the set, which aborts every connection.
        let mut tasks = tokio::task::JoinSet::new();
        while let Ok((tcp, _)) = listener.accept().await {
            let server = server.clone();
            let seen = seen.clone();
            let number = connections.fetch_add(1, Ordering::SeqCst) + 1;
            tasks.spawn(async move {
                let Ok(mut ws) = server.accept(tcp).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if let Message::Text(text) = &message {
                        let text = text.to_string();
                        if let Some(code) = text.strip_prefix("close with ") {
                            let code = CloseCode(code.parse().unwrap());
                            let _ = ws.close(code, "as asked").await;
                            continue;
                        }
                        let _ = seen.send((number, text));
                    }
                    if message.is_text() || message.is_binary() {
                        let _ = ws.send(message).await;
                    }
                }
            });
        }
    })
}

/// Stops a server task and every connection it holds.
struct Server(JoinHandle<()>);

impl Drop for Server {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn next_event(client: &mut Reconnecting) -> Event {
    client
        .next()
        .await
        .expect("the client reports until it stops")
}

async fn expect_open(client: &mut Reconnecting) -> u32 {
    loop {
        match next_event(client).await {
            Event::Open { attempt, response } => {
                assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
                return attempt;
            }
            Event::Reconnecting { .. } | Event::Closed(_) => {}
            other => panic!("expected the connection to open, got {other:?}"),
        }
    }
}

async fn expect_message(client: &mut Reconnecting) -> Message {
    match next_event(client).await {
        Event::Message(message) => message,
        other => panic!("expected a message, got {other:?}"),
    }
}

#[tokio::test]
async fn the_server_restarted_under_the_client() {
    within(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (seen_tx, mut seen) = mpsc::unbounded_channel();
        let server = Server(echo_server(listener, Acceptor::new(), seen_tx.clone()));

        let opened = Arc::new(AtomicUsize::new(0));
        let counter = opened.clone();
        let mut client = Reconnect::new(ClientBuilder::new(format!("ws://{addr}/")))
            .backoff(quick())
            .on_open(move || {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                async move { vec![Message::text(format!("hello #{n}"))] }
            })
            .start();
        assert_eq!(expect_open(&mut client).await, 1);
        assert_eq!(seen.recv().await.unwrap(), (1, "hello #1".to_owned()));
        assert_eq!(expect_message(&mut client).await, Message::text("hello #1"));
        client.send("before").await.unwrap();
        assert_eq!(expect_message(&mut client).await, Message::text("before"));
        assert_eq!(seen.recv().await.unwrap(), (1, "before".to_owned()));

        // The server goes away without a closing handshake.
        drop(server);
        match next_event(&mut client).await {
            Event::Closed(info) => {
                assert_eq!(info.code, CloseCode::ABNORMAL);
                assert!(!info.was_clean);
            }
            other => panic!("expected the close, got {other:?}"),
        }
        // Sent while there is no connection: queued.
        client.send("while down").await.unwrap();

        // Attempts fail while nothing listens; then the server is back on
        // the same port.
        let mut failed_attempts = 0;
        loop {
            match next_event(&mut client).await {
                Event::Reconnecting {
                    error: Some(err),
                    attempt,
                    ..
                } => {
                    assert!(matches!(err, Error::Connect { .. }), "{err}");
                    assert!(attempt >= 2);
                    failed_attempts += 1;
                    if failed_attempts == 2 {
                        break;
                    }
                }
                Event::Reconnecting { error: None, .. } => {}
                other => panic!("expected reconnection attempts, got {other:?}"),
            }
        }
        let listener = TcpListener::bind(addr).await.unwrap();
        let _server = Server(echo_server(listener, Acceptor::new(), seen_tx));
        assert!(expect_open(&mut client).await >= 3);

        // The fresh connection gets the on_open message first, then what
        // was queued while down.
        assert_eq!(seen.recv().await.unwrap(), (1, "hello #2".to_owned()));
        assert_eq!(seen.recv().await.unwrap(), (1, "while down".to_owned()));
        assert_eq!(expect_message(&mut client).await, Message::text("hello #2"));
        assert_eq!(
            expect_message(&mut client).await,
            Message::text("while down")
        );

        // close() ends it cleanly, for good.
        client.close(CloseCode::NORMAL, "done");
        match next_event(&mut client).await {
            Event::Closed(info) => assert!(info.was_clean, "{info:?}"),
            other => panic!("expected the close, got {other:?}"),
        }
        assert!(matches!(
            next_event(&mut client).await,
            Event::Stopped(Stop::Closed)
        ));
        assert!(client.next().await.is_none());
        assert!(matches!(
            client.send("late").await,
            Err(Error::Closed { .. })
        ));
    })
    .await;
}

/// A server whose request check answers the first `refusals` upgrade requests
/// with `status` (and `Retry-After` if given), then accepts.
async fn refusing_server(
    refusals: usize,
    status: StatusCode,
    retry_after: Option<&'static str>,
) -> (SocketAddr, Server, Arc<AtomicUsize>) {
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    let server = Acceptor::new().on_request(move |_| {
        if counter.fetch_add(1, Ordering::SeqCst) < refusals {
            let mut reject = Rejection::new(status).body("not now");
            if let Some(seconds) = retry_after {
                reject = reject.header("retry-after", seconds).unwrap();
            }
            Err(reject)
        } else {
            Ok(Acceptance::new())
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen, _) = mpsc::unbounded_channel();
    (addr, Server(echo_server(listener, server, seen)), requests)
}

#[tokio::test]
async fn a_503_is_retried_until_the_server_accepts() {
    within(async {
        let (addr, _server, requests) =
            refusing_server(2, StatusCode::SERVICE_UNAVAILABLE, None).await;
        let mut client = Reconnect::new(ClientBuilder::new(format!("ws://{addr}/")))
            .backoff(quick())
            .start();
        for attempt in [2, 3] {
            match next_event(&mut client).await {
                Event::Reconnecting {
                    attempt: next,
                    error: Some(err),
                    ..
                } => {
                    assert_eq!(next, attempt);
                    assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
                }
                other => panic!("expected a retry after the 503, got {other:?}"),
            }
        }
        assert_eq!(expect_open(&mut client).await, 3);
        assert_eq!(requests.load(Ordering::SeqCst), 3);
    })
    .await;
}

#[tokio::test]
async fn a_429_waits_as_long_as_retry_after_says() {
    within(async {
        let (addr, _server, _) = refusing_server(1, StatusCode::TOO_MANY_REQUESTS, Some("1")).await;
        let mut client = Reconnect::new(ClientBuilder::new(format!("ws://{addr}/")))
            .backoff(quick())
            .start();
        let refused_at = match next_event(&mut client).await {
            Event::Reconnecting {
                delay,
                error: Some(err),
                ..
            } => {
                assert_eq!(err.status(), Some(StatusCode::TOO_MANY_REQUESTS));
                // The backoff alone would wait at most 50 ms.
                assert!(delay >= Duration::from_secs(1), "{delay:?}");
                Instant::now()
            }
            other => panic!("expected a delayed retry, got {other:?}"),
        };
        assert_eq!(expect_open(&mut client).await, 2);
        assert!(refused_at.elapsed() >= Duration::from_millis(990));
    })
    .await;
}

#[tokio::test]
async fn a_401_stops_at_once() {
    within(async {
        let (addr, _server, requests) =
            refusing_server(usize::MAX, StatusCode::UNAUTHORIZED, None).await;
        let mut client = Reconnect::new(ClientBuilder::new(format!("ws://{addr}/")))
            .backoff(quick())
            .start();
        match next_event(&mut client).await {
            Event::Stopped(Stop::Failed(err)) => {
                assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));
            }
            other => panic!("expected to stop, got {other:?}"),
        }
        assert!(client.next().await.is_none());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(requests.load(Ordering::SeqCst), 1, "no second request");
    })
    .await;
}

#[tokio::test]
async fn close_codes_that_mean_do_not_come_back_stop_it() {
    within(async {
        for (code, stop_on) in [(1008, None), (4003, Some(CloseCode(4003)))] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (seen, _) = mpsc::unbounded_channel();
            let _server = Server(echo_server(listener, Acceptor::new(), seen));
            let mut reconnect = Reconnect::new(ClientBuilder::new(format!("ws://{addr}/")))
                .backoff(quick());
            if let Some(code) = stop_on {
                reconnect = reconnect.stop_on_close(code);
            }
            let mut client = reconnect.start();
            expect_open(&mut client).await;
            client.send(format!("close with {code}")).await.unwrap();
            match next_event(&mut client).await {
                Event::Closed(info) => {
                    assert_eq!(info.code, CloseCode(code));
                    assert_eq!(info.reason, "as asked");
                    assert!(info.was_clean);
                }
                other => panic!("expected the close, got {other:?}"),
            }
            match next_event(&mut client).await {
                Event::Stopped(Stop::CloseCode(stopped)) => assert_eq!(stopped, CloseCode(code)),
                other => panic!("expected to stop, got {other:?}"),
            }
            assert!(client.next().await.is_none());
        }

        // Any other code comes back.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (seen, _) = mpsc::unbounded_channel();
        let _server = Server(echo_server(listener, Acceptor::new(), seen));
        let mut client = Reconnect::new(ClientBuilder::new(format!("ws://{addr}/")))
            .backoff(quick())
            .start();
        expect_open(&mut client).await;
        client.send("close with 1001").await.unwrap();
        assert!(matches!(next_event(&mut client).await, Event::Closed(info) if info.code == CloseCode::GOING_AWAY));
        expect_open(&mut client).await;
    })
    .await;
}

#[tokio::test]
async fn a_silent_peer_is_found_by_keepalive_and_left() {
    within(async {
        // The first connection's server stops reading after the handshake and
        // never answers a ping; the second one is an echo server.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _server = Server(tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let silent = duplex::accept(tcp).await.unwrap();
            let (seen, _) = mpsc::unbounded_channel();
            let echo = echo_server(listener, Acceptor::new(), seen);
            let _ = echo.await;
            drop(silent);
        }));
        let builder = ClientBuilder::new(format!("ws://{addr}/")).keepalive(Keepalive::new(
            Duration::from_millis(200),
            Duration::from_millis(200),
        ));
        let mut client = Reconnect::new(builder).backoff(quick()).start();
        let opened = Instant::now();
        expect_open(&mut client).await;
        match next_event(&mut client).await {
            Event::Closed(info) => {
                assert!(!info.was_clean);
                // A ping after 200 ms of silence, 200 ms for the answer.
                assert!(opened.elapsed() >= Duration::from_millis(400));
            }
            other => panic!("expected keepalive to end it, got {other:?}"),
        }
        expect_open(&mut client).await;
        client.send("alive").await.unwrap();
        assert_eq!(expect_message(&mut client).await, Message::text("alive"));
    })
    .await;
}

#[tokio::test]
async fn the_queue_is_bounded_and_says_when_it_is_full() {
    within(async {
        // Nothing listens: every message waits in the queue.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let client = Reconnect::new(ClientBuilder::new(format!("ws://{addr}/")))
            .backoff(quick())
            .queue(3)
            .start();
        for n in 0..3 {
            client.try_send(format!("{n}")).unwrap();
        }
        assert_eq!(client.try_send("one too many"), Err(TrySendError::Full));
        let handle = client.handle();
        let blocked = tokio::time::timeout(Duration::from_millis(100), handle.send("waits")).await;
        assert!(blocked.is_err(), "send waits for room");
    })
    .await;
}

#[tokio::test]
async fn max_attempts_gives_up_with_the_last_error() {
    within(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let mut client = Reconnect::new(ClientBuilder::new(format!("ws://{addr}/")))
            .backoff(quick())
            .max_attempts(3)
            .start();
        let mut retries = 0;
        loop {
            match next_event(&mut client).await {
                Event::Reconnecting { .. } => retries += 1,
                Event::Stopped(Stop::GaveUp(err)) => {
                    assert!(matches!(err, Error::Connect { .. }), "{err}");
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(retries, 2, "three attempts: the first and two retries");
    })
    .await;
}

#[tokio::test]
async fn dropping_the_client_closes_its_connection_with_1001() {
    within(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (closed_tx, mut closed) = mpsc::unbounded_channel();
        let _server = Server(tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = duplex::accept(tcp).await.unwrap();
            while ws.next().await.is_some() {}
            let _ = closed_tx.send(ws.close_info().unwrap());
        }));
        let mut client = Reconnect::new(ClientBuilder::new(format!("ws://{addr}/"))).start();
        expect_open(&mut client).await;
        // An idle connection: nothing to send, nothing arriving.
        let handle = client.handle();
        drop(client);
        let info = closed.recv().await.unwrap();
        assert_eq!(info.code, CloseCode::GOING_AWAY);
        assert!(info.was_clean);
        assert_eq!(handle.try_send("late"), Err(TrySendError::Closed));
    })
    .await;
}
