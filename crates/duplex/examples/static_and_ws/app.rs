//! The server of the `static_and_ws` example: files and a WebSocket broadcast
//! on one port, over HTTP/1.1 and HTTP/2, with or without TLS.
//!
//! - `GET /anything`: the file under the root directory ([`ServeDir`]);
//! - `/ws`: a WebSocket (an HTTP/1.1 upgrade, or an RFC 8441 extended CONNECT
//!   on an HTTP/2 connection), same-origin pages only; every text or binary
//!   message a client sends goes to every connected client, itself included;
//! - `GET /stats`: counters as JSON ([`Stats`]): requests and WebSockets by
//!   HTTP version, slow clients dropped.
//!
//! `main.rs` runs it from the command line; the tests
//! (`tests/static_and_ws.rs`, `tests/browser_http2.rs`) include this file and
//! run it in-process.
//!
//! # Broadcast
//!
//! A message is encoded once, as a [`PreparedMessage`] (a server frame is not
//! masked, so the same bytes are valid on every connection), and the same
//! reference-counted frame goes to every client through its [`Sender`]:
//! written to its socket there and then by the task that broadcasts, when
//! the socket has room (the usual case), and queued behind what waits when
//! not, the queue written out by the client's own task as its socket drains.
//! A broadcast never waits for anyone. A client that falls a whole queue
//! behind is disconnected with 1008 (policy violation) and "too slow",
//! instead of holding memory or slowing the rest.
//!
//! # Shutdown
//!
//! When the shutdown future passed to [`App::serve`] completes, the server
//! stops accepting, closes every WebSocket with 1001 (going away), lets HTTP
//! connections finish their requests and close (hyper-util's
//! [`GracefulShutdown`]: idle keep-alive connections close at once), and waits
//! for all of that up to [`Config::shutdown_timeout`]; whatever is left then is
//! dropped.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use duplex::tls::rustls::ServerConfig;
use duplex::upgrade::{self, Upgraded};
use duplex::{
    CloseCode, Keepalive, Message, Origins, PreparedMessage, Sender, ServerBuilder, TrySendError,
    WebSocket,
};
use futures_util::StreamExt;
use http::{Method, Request, Response, StatusCode, Version, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::services::ServeDir;

/// The path of the WebSocket endpoint.
pub const WS_PATH: &str = "/ws";
/// The path of the counters.
pub const STATS_PATH: &str = "/stats";
/// How long a client gets to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The body of every response: a file, a JSON document, or an empty body.
pub type HttpBody = UnsyncBoxBody<Bytes, io::Error>;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The directory whose files are served.
    pub root: PathBuf,
    /// TLS, with ALPN offering `h2` and `http/1.1` (see [`with_http2_alpn`]);
    /// `None` for plain TCP (HTTP/1.1, or HTTP/2 with prior knowledge).
    pub tls: Option<Arc<ServerConfig>>,
    /// Messages queued per client; a client with this many waiting when
    /// another arrives is dropped as too slow. Default: 256.
    pub queue: usize,
    /// How long shutdown waits for WebSockets to close and HTTP connections to
    /// finish before dropping them. Default: 5 seconds.
    pub shutdown_timeout: Duration,
    /// How long a WebSocket being closed (shutdown, or a slow client) gets to
    /// answer the close frame. Default: 5 seconds.
    pub close_timeout: Duration,
    /// The largest message a client may send. Default: 1 MiB.
    pub max_message_size: usize,
}

impl Config {
    /// The defaults, serving `root`.
    pub fn new(root: impl Into<PathBuf>) -> Config {
        Config {
            root: root.into(),
            tls: None,
            queue: 256,
            shutdown_timeout: Duration::from_secs(5),
            close_timeout: Duration::from_secs(5),
            max_message_size: 1 << 20,
        }
    }
}

/// `config` with ALPN set to `h2` then `http/1.1`, so that browsers speak
/// HTTP/2 and open their WebSockets as streams of it (RFC 8441).
/// `duplex::tls::server_config*` offer only `http/1.1`, the right choice for a
/// server that speaks nothing but WebSocket upgrades.
pub fn with_http2_alpn(config: Arc<ServerConfig>) -> Arc<ServerConfig> {
    let mut config = Arc::unwrap_or_clone(config);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Counts by HTTP version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByVersion {
    /// HTTP/1.0 and HTTP/1.1.
    pub http1: u64,
    /// HTTP/2.
    pub http2: u64,
}

/// What the server has seen, as `GET /stats` returns it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// HTTP requests, WebSocket requests included.
    pub requests: ByVersion,
    /// WebSockets opened: HTTP/1.1 upgrades, HTTP/2 extended CONNECTs.
    pub websockets: ByVersion,
    /// WebSockets opened with permessage-deflate agreed.
    pub websockets_deflate: u64,
    /// WebSockets open now (in the broadcast).
    pub websockets_open: u64,
    /// WebSocket requests refused (a foreign Origin, a bad request).
    pub websockets_refused: u64,
    /// Messages broadcast.
    pub messages: u64,
    /// Clients disconnected for falling a whole queue behind.
    pub slow_clients_dropped: u64,
}

#[derive(Default)]
struct Counters {
    requests_http1: AtomicU64,
    requests_http2: AtomicU64,
    websockets_http1: AtomicU64,
    websockets_http2: AtomicU64,
    websockets_deflate: AtomicU64,
    websockets_refused: AtomicU64,
    messages: AtomicU64,
    slow_clients_dropped: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// One connected client, as the broadcast sees it.
struct Peer {
    to: Outlet,
    /// Cancelled when the client is dropped as too slow.
    kick: CancellationToken,
}

/// Where a client's broadcasts go: held for it until its WebSocket is
/// running, then sent to it directly.
enum Outlet {
    /// Joined, the upgrade not yet done: what was broadcast meanwhile.
    Waiting(Vec<Arc<PreparedMessage>>),
    /// Its WebSocket's sender.
    Open(Sender),
}

/// A client's part in the broadcast: its id, and the token cancelled if it
/// is dropped as too slow.
type Joined = (u64, CancellationToken);

/// The connected clients.
struct Hub {
    peers: Mutex<HashMap<u64, Peer>>,
    next_id: AtomicU64,
    capacity: usize,
}

impl Hub {
    fn join(&self) -> Joined {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let kick = CancellationToken::new();
        let peer = Peer {
            to: Outlet::Waiting(Vec::new()),
            kick: kick.clone(),
        };
        self.lock().insert(id, peer);
        (id, kick)
    }

    /// The client's WebSocket runs: it gets what was broadcast since it
    /// joined, then every broadcast directly.
    fn open(&self, id: u64, sender: Sender, counters: &Counters) {
        let sender = sender.with_queue_limit(self.capacity);
        let mut peers = self.lock();
        let Some(peer) = peers.get_mut(&id) else {
            return;
        };
        if let Outlet::Waiting(waiting) = std::mem::replace(&mut peer.to, Outlet::Open(sender)) {
            for message in waiting {
                if !self.send(&mut peers, id, &message, counters) {
                    break;
                }
            }
        }
    }

    fn leave(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    /// Sends `message` to every client, without waiting for any: a client
    /// that falls a whole queue behind is removed and told to go.
    /// Broadcasts are serialized by the lock, so every client gets them in
    /// the same order.
    fn broadcast(&self, message: PreparedMessage, counters: &Counters) {
        let message = Arc::new(message);
        let mut peers = self.lock();
        let ids: Vec<u64> = peers.keys().copied().collect();
        for id in ids {
            self.send(&mut peers, id, &message, counters);
        }
    }

    /// Sends to one client; false if it was dropped as too slow.
    fn send(
        &self,
        peers: &mut HashMap<u64, Peer>,
        id: u64,
        message: &Arc<PreparedMessage>,
        counters: &Counters,
    ) -> bool {
        let Some(peer) = peers.get_mut(&id) else {
            return false;
        };
        let full = match &mut peer.to {
            Outlet::Waiting(waiting) if waiting.len() < self.capacity => {
                waiting.push(message.clone());
                false
            }
            Outlet::Waiting(_) => true,
            // Closed: its task is ending and removes it.
            Outlet::Open(sender) => sender.try_send_prepared(message) == Err(TrySendError::Full),
        };
        if full && let Some(peer) = peers.remove(&id) {
            peer.kick.cancel();
            bump(&counters.slow_clients_dropped);
            tracing::warn!(
                client = id,
                queued = self.capacity,
                "dropping a client too slow to keep up with the broadcast"
            );
        }
        !full
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Peer>> {
        self.peers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct State {
    config: Config,
    server: ServerBuilder,
    files: ServeDir,
    hub: Hub,
    counters: Counters,
    /// Every task the server spawns: connections and WebSockets.
    tracker: TaskTracker,
    /// Cancelled when shutdown starts: WebSockets close with 1001.
    closing: CancellationToken,
    /// Cancelled when the shutdown timeout passes: every task ends at once.
    abort: CancellationToken,
}

/// The server: cheap to clone, every clone the same server.
#[derive(Clone)]
pub struct App {
    state: Arc<State>,
}

/// Why a WebSocket's writer stopped.
enum Stop {
    /// The connection ended (the client closed, or it failed).
    Ended,
    /// The server closes it, with this code and reason.
    Close(CloseCode, String),
}

impl App {
    /// A server with these settings; [`serve`](Self::serve) runs it.
    pub fn new(config: Config) -> App {
        let server = ServerBuilder::new()
            // Browsers send the page's origin and do not ask the server's
            // permission for WebSockets: without this check, any site could
            // open a socket here with the user's cookies.
            .origins(Origins::same_origin())
            .max_message_size(config.max_message_size)
            .close_timeout(config.close_timeout)
            .keepalive(Keepalive::new(
                Duration::from_secs(30),
                Duration::from_secs(10),
            ));
        let files = ServeDir::new(&config.root);
        let hub = Hub {
            peers: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            capacity: config.queue.max(1),
        };
        App {
            state: Arc::new(State {
                config,
                server,
                files,
                hub,
                counters: Counters::default(),
                tracker: TaskTracker::new(),
                closing: CancellationToken::new(),
                abort: CancellationToken::new(),
            }),
        }
    }

    /// The counters now.
    pub fn stats(&self) -> Stats {
        let c = &self.state.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Stats {
            requests: ByVersion {
                http1: get(&c.requests_http1),
                http2: get(&c.requests_http2),
            },
            websockets: ByVersion {
                http1: get(&c.websockets_http1),
                http2: get(&c.websockets_http2),
            },
            websockets_deflate: get(&c.websockets_deflate),
            websockets_open: self.state.hub.len() as u64,
            websockets_refused: get(&c.websockets_refused),
            messages: get(&c.messages),
            slow_clients_dropped: get(&c.slow_clients_dropped),
        }
    }

    /// Serves connections from `listener` until `shutdown` completes, then
    /// shuts down gracefully (see the module's documentation) and returns
    /// once every connection is gone, or the shutdown timeout passed and the
    /// rest were dropped. One call per `App`.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let state = &self.state;
        let mut http = auto::Builder::new(TokioExecutor::new());
        // The timer lets hyper time out clients slow to send their headers.
        http.http1().timer(TokioTimer::new());
        // SETTINGS_ENABLE_CONNECT_PROTOCOL: what lets browsers open
        // WebSockets on the HTTP/2 connection (RFC 8441).
        http.http2()
            .timer(TokioTimer::new())
            .enable_connect_protocol();
        let tls = state.config.tls.clone().map(TlsAcceptor::from);
        let graceful = GracefulShutdown::new();

        let mut shutdown = pin!(shutdown);
        loop {
            let tcp = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(err) => {
                        // Out of file descriptors, say: wait a little rather
                        // than spin.
                        tracing::warn!(%err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let connection =
                self.clone()
                    .serve_connection(tcp, tls.clone(), http.clone(), graceful.watcher());
            let abort = state.abort.clone();
            state.tracker.spawn(async move {
                tokio::select! {
                    () = abort.cancelled() => {}
                    () = connection => {}
                }
            });
        }
        drop(listener);

        tracing::info!(
            websockets = state.hub.len(),
            "shutting down: closing WebSockets, finishing requests"
        );
        state.closing.cancel();
        state.tracker.close();
        let drain = async {
            tokio::join!(graceful.shutdown(), state.tracker.wait());
        };
        if tokio::time::timeout(state.config.shutdown_timeout, drain)
            .await
            .is_err()
        {
            tracing::warn!(
                timeout = ?state.config.shutdown_timeout,
                tasks = state.tracker.len(),
                "shutdown timed out: dropping what is left"
            );
            state.abort.cancel();
            state.tracker.wait().await;
        }
        tracing::info!("shut down");
    }

    /// Serves one TCP connection: TLS if configured, then HTTP/1.1 or HTTP/2,
    /// whichever the client speaks.
    async fn serve_connection(
        self,
        tcp: TcpStream,
        tls: Option<TlsAcceptor>,
        http: auto::Builder<TokioExecutor>,
        watcher: Watcher,
    ) {
        let app = self.clone();
        let service = service_fn(move |request| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(app.handle(request).await) }
        });
        let served = match tls {
            None => {
                let connection = http.serve_connection_with_upgrades(TokioIo::new(tcp), service);
                watcher.watch(connection).await
            }
            Some(acceptor) => {
                let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
                let stream = tokio::select! {
                    () = self.state.closing.cancelled() => return,
                    handshake = handshake => match handshake {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(err)) => {
                            tracing::debug!(%err, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake timed out");
                            return;
                        }
                    },
                };
                let connection = http.serve_connection_with_upgrades(TokioIo::new(stream), service);
                watcher.watch(connection).await
            }
        };
        if let Err(err) = served {
            tracing::debug!(%err, "HTTP connection ended with an error");
        }
    }

    /// Answers one request.
    async fn handle(&self, mut request: Request<Incoming>) -> Response<HttpBody> {
        let counters = &self.state.counters;
        bump(if request.version() == Version::HTTP_2 {
            &counters.requests_http2
        } else {
            &counters.requests_http1
        });
        let path = request.uri().path();
        if path == WS_PATH {
            return self.websocket(&mut request);
        }
        if upgrade::is_upgrade_request(&request) {
            return plain(StatusCode::NOT_FOUND, "WebSockets are at /ws\n");
        }
        if path == STATS_PATH && matches!(*request.method(), Method::GET | Method::HEAD) {
            let json = serde_json::to_vec(&self.stats()).expect("stats serialize");
            let mut response = Response::new(full(json));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            headers.insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-store"),
            );
            return response;
        }
        let mut files = self.state.files.clone();
        match files.try_call(request).await {
            Ok(response) => response.map(BodyExt::boxed_unsync),
            Err(err) => {
                tracing::warn!(%err, "serving a file failed");
                plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "could not read the file\n",
                )
            }
        }
    }

    /// Answers a request to `/ws`: 101 (HTTP/1.1) or 200 (HTTP/2) and a task
    /// that runs the WebSocket, or the refusal (403 for a foreign origin, 400,
    /// 426...).
    fn websocket(&self, request: &mut Request<Incoming>) -> Response<HttpBody> {
        let version = request.version();
        let (response, pending) = match upgrade::upgrade(request, &self.state.server) {
            Ok(accepted) => accepted,
            Err(refused) => {
                bump(&self.state.counters.websockets_refused);
                tracing::info!(status = %refused.status(), error = %refused.error(), "WebSocket refused");
                return refused.into_response().map(box_full);
            }
        };
        // Joined now, before the response goes: whatever is broadcast once
        // the client sees the socket open reaches it (queued until its task
        // runs).
        let peer = self.state.hub.join();
        let app = self.clone();
        let abort = self.state.abort.clone();
        self.state.tracker.spawn(async move {
            let run = async {
                match pending.await {
                    Ok(ws) => app.run_socket(ws, version, peer).await,
                    Err(err) => {
                        app.state.hub.leave(peer.0);
                        tracing::debug!(%err, "the upgrade did not complete");
                    }
                }
            };
            tokio::select! {
                () = abort.cancelled() => {}
                () = run => {}
            }
        });
        response.map(box_full)
    }

    /// Runs one WebSocket: what it sends is broadcast, what is broadcast is
    /// written to it, until it closes, falls too far behind, or the server
    /// shuts down.
    async fn run_socket(&self, ws: WebSocket<Upgraded>, version: Version, peer: Joined) {
        let state = &self.state;
        let counters = &state.counters;
        bump(if version == Version::HTTP_2 {
            &counters.websockets_http2
        } else {
            &counters.websockets_http1
        });
        if compressed(&ws) {
            bump(&counters.websockets_deflate);
        }
        let (id, kicked) = peer;
        tracing::debug!(client = id, ?version, "WebSocket open");

        let (mut read, mut write) = ws.split();
        state.hub.open(id, write.sender(), counters);
        let reader = async {
            while let Some(item) = read.next().await {
                let prepared = match item {
                    Ok(Message::Text(text)) => PreparedMessage::text(text),
                    Ok(Message::Binary(data)) => PreparedMessage::binary(data),
                    Ok(_) => continue,
                    Err(err) => {
                        tracing::debug!(client = id, %err, "WebSocket error");
                        continue;
                    }
                };
                bump(&counters.messages);
                state.hub.broadcast(prepared, counters);
                // A burst read in one go would otherwise be broadcast without
                // a pause, filling the queues of clients whose sockets are
                // full faster than their tasks (which may be waiting for
                // this thread) can write them out: let them run between two
                // broadcasts.
                tokio::task::yield_now().await;
            }
        };
        let mut reader = pin!(reader);

        let stop = tokio::select! {
            biased;
            () = state.closing.cancelled() => {
                Stop::Close(CloseCode::GOING_AWAY, "the server is shutting down".into())
            }
            () = kicked.cancelled() => Stop::Close(
                CloseCode::POLICY_VIOLATION,
                format!("too slow: {} messages were waiting", state.hub.capacity),
            ),
            () = &mut reader => Stop::Ended,
        };
        state.hub.leave(id);

        match stop {
            Stop::Ended => {}
            Stop::Close(code, reason) => {
                // The reader runs the closing handshake to its end: the
                // client's close frame and the end of the stream, or duplex's
                // close timeout. It is polled right after the close frame is
                // queued, so that the timeout starts even if nothing comes.
                let closing = async {
                    if let Err(err) = write.close(code, &reason).await {
                        tracing::debug!(client = id, %err, "sending the close frame failed");
                    }
                    std::future::pending::<()>().await;
                };
                let handshake = async {
                    tokio::select! {
                        biased;
                        () = closing => {}
                        () = &mut reader => {}
                    }
                };
                let _ = tokio::time::timeout(state.config.close_timeout, handshake).await;
            }
        }
        tracing::debug!(client = id, "WebSocket closed");
    }
}

#[cfg(feature = "deflate")]
fn compressed(ws: &WebSocket<Upgraded>) -> bool {
    ws.deflate().is_some()
}

#[cfg(not(feature = "deflate"))]
fn compressed(_: &WebSocket<Upgraded>) -> bool {
    false
}

fn full(bytes: impl Into<Bytes>) -> HttpBody {
    box_full(Full::new(bytes.into()))
}

fn box_full(body: Full<Bytes>) -> HttpBody {
    body.map_err(|never| match never {}).boxed_unsync()
}

fn plain(status: StatusCode, text: &'static str) -> Response<HttpBody> {
    let mut response = Response::new(full(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
