//! The server of the `static_and_ws` example: files and a WebSocket broadcast
//! on one port, over HTTP/1.1 and HTTP/2, with or without TLS. It is written
//! to be read; the real server, with channels, presence and history, is
//! `duplex serve` (the duplex-hub crate).
//!
//! - `GET /anything`: the file under the root directory ([`ServeDir`]);
//! - `/ws`: a WebSocket (an HTTP/1.1 upgrade, or an RFC 8441 extended CONNECT
//!   on an HTTP/2 connection), same-origin pages only; every text or binary
//!   message a client sends goes to every connected client, itself included.
//!
//! # Broadcast
//!
//! A message is encoded once, as a [`PreparedMessage`] (a server frame is not
//! masked, so the same bytes are valid on every connection), and the same
//! reference-counted frame goes to every client through its [`Sender`]:
//! written to the socket at once when it has room, queued when not. A
//! broadcast never waits for anyone; a client that falls a whole queue behind
//! is closed with 1008 (policy violation) and "too slow" instead of holding
//! memory or slowing the rest.
//!
//! # Shutdown
//!
//! When the shutdown future passed to [`App::serve`] completes, the server
//! stops accepting, closes every WebSocket with 1001 (going away), lets HTTP
//! connections finish their requests (hyper-util's [`GracefulShutdown`]:
//! idle keep-alive connections close at once), and returns when all of that
//! is done. A client that does not answer the close frame is dropped after
//! [`Config::close_timeout`].
//!
//! `main.rs` runs it from the command line; the tests
//! (`tests/static_and_ws.rs`, `tests/browser_http2.rs`) include this file and
//! run it in-process.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use duplex::tls::rustls::ServerConfig;
use duplex::upgrade::{self, TcpHandle, TcpIo, Upgraded};
use duplex::{
    Acceptor, CloseCode, Keepalive, Message, Origins, PreparedMessage, Sender, TrySendError,
    WebSocket,
};
use futures_util::StreamExt;
use http::{Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::services::ServeDir;

/// The path of the WebSocket endpoint.
pub const WS_PATH: &str = "/ws";
/// How long a client gets to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The body of every response: a file, or a short text.
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
    /// another arrives is closed as too slow. Default: 256.
    pub queue: usize,
    /// How long a WebSocket being closed (shutdown, or a slow client) gets to
    /// answer the close frame. Default: 5 seconds.
    pub close_timeout: Duration,
}

impl Config {
    /// The defaults, serving `root`.
    pub fn new(root: impl Into<PathBuf>) -> Config {
        Config {
            root: root.into(),
            tls: None,
            queue: 256,
            close_timeout: Duration::from_secs(5),
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

/// Where a client's broadcasts go.
enum Outlet {
    /// Its upgrade is not done yet: what was broadcast meanwhile.
    Waiting(Vec<Arc<PreparedMessage>>),
    /// Its WebSocket's sender.
    Open(Sender),
}

/// One connected client, as the broadcast sees it.
struct Client {
    outlet: Outlet,
    /// Cancelled when the client is dropped as too slow.
    kick: CancellationToken,
}

impl Client {
    /// Its WebSocket's sender, once the upgrade is done.
    fn sender(&self) -> Option<&Sender> {
        match &self.outlet {
            Outlet::Open(sender) => Some(sender),
            Outlet::Waiting(_) => None,
        }
    }
}

/// The connected clients, by id.
struct Broadcast {
    clients: Mutex<HashMap<u64, Client>>,
    next_id: AtomicU64,
    queue: usize,
}

impl Broadcast {
    /// Adds a client whose handshake is under way, so that what is broadcast
    /// from now on reaches it; returns its id and the token cancelled if it
    /// is dropped as too slow.
    fn join(&self) -> (u64, CancellationToken) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let kick = CancellationToken::new();
        let client = Client {
            outlet: Outlet::Waiting(Vec::new()),
            kick: kick.clone(),
        };
        self.lock().insert(id, client);
        (id, kick)
    }

    /// The client's WebSocket runs: it gets what was broadcast since it
    /// joined, then every broadcast directly.
    fn open(&self, id: u64, sender: Sender) {
        let mut clients = self.lock();
        let Some(client) = clients.get_mut(&id) else {
            return;
        };
        let open = Outlet::Open(sender.with_queue_limit(self.queue));
        if let Outlet::Waiting(waiting) = std::mem::replace(&mut client.outlet, open) {
            let kept = waiting.iter().all(|message| self.deliver(client, message));
            if !kept && let Some(client) = clients.remove(&id) {
                Self::kick(id, &client);
            }
        }
    }

    fn leave(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Sends `message` to every client, without waiting for any. Broadcasts
    /// are serialized by the lock, so every client gets them in one order.
    /// Each client is visited where it lies in the map, in one pass, and the
    /// next one's connection is prefetched while this one's is written to.
    fn broadcast(&self, message: PreparedMessage) {
        let message = Arc::new(message);
        let mut clients = self.lock();
        let mut kicked = Vec::new();
        let mut each = clients.iter_mut().peekable();
        while let Some((&id, client)) = each.next() {
            if let Some(next) = each.peek().and_then(|(_, next)| next.sender()) {
                next.prefetch();
            }
            if !self.deliver(client, &message) {
                Self::kick(id, client);
                kicked.push(id);
            }
        }
        for id in kicked {
            clients.remove(&id);
        }
    }

    /// Sends to one client; false if its queue is full and it must go.
    fn deliver(&self, client: &mut Client, message: &Arc<PreparedMessage>) -> bool {
        match &mut client.outlet {
            Outlet::Waiting(waiting) if waiting.len() < self.queue => {
                waiting.push(message.clone());
                true
            }
            Outlet::Waiting(_) => false,
            // A closed sender: its task is ending and removes it.
            Outlet::Open(sender) => sender.try_send_prepared(message) != Err(TrySendError::Full),
        }
    }

    /// Tells a client too slow for the broadcast to go.
    fn kick(id: u64, client: &Client) {
        client.kick.cancel();
        tracing::warn!(client = id, "dropping a client too slow for the broadcast");
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Client>> {
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct State {
    config: Config,
    server: Acceptor,
    files: ServeDir,
    broadcast: Broadcast,
    /// The WebSockets' tasks, which shutdown waits for.
    websockets: TaskTracker,
    /// Cancelled when shutdown starts: WebSockets close with 1001.
    closing: CancellationToken,
}

/// The server: cheap to clone, every clone the same server.
#[derive(Clone)]
pub struct App {
    state: Arc<State>,
}

impl App {
    /// A server with these settings; [`serve`](Self::serve) runs it.
    pub fn new(config: Config) -> App {
        let server = Acceptor::new()
            // Browsers send the page's origin and do not ask the server's
            // permission for WebSockets: without this check, any site could
            // open a socket here with the user's cookies.
            .origins(Origins::same_origin())
            .max_message_size(1 << 20)
            .close_timeout(config.close_timeout)
            .keepalive(Keepalive::new(
                Duration::from_secs(30),
                Duration::from_secs(10),
            ));
        let broadcast = Broadcast {
            clients: Mutex::default(),
            next_id: AtomicU64::new(1),
            queue: config.queue.max(1),
        };
        App {
            state: Arc::new(State {
                files: ServeDir::new(&config.root),
                config,
                server,
                broadcast,
                websockets: TaskTracker::new(),
                closing: CancellationToken::new(),
            }),
        }
    }

    /// How many clients the broadcast reaches now.
    pub fn clients(&self) -> usize {
        self.state.broadcast.lock().len()
    }

    /// Serves connections from `listener` until `shutdown` completes, then
    /// shuts down gracefully (see the module's documentation) and returns
    /// once every connection is gone. One call per `App`.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let mut http = auto::Builder::new(TokioExecutor::new());
        // The timer lets hyper time out clients slow to send their headers.
        http.http1().timer(TokioTimer::new());
        // SETTINGS_ENABLE_CONNECT_PROTOCOL: what lets browsers open
        // WebSockets on the HTTP/2 connection (RFC 8441).
        http.http2()
            .timer(TokioTimer::new())
            .enable_connect_protocol();
        let tls = self.state.config.tls.clone().map(TlsAcceptor::from);
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
            tokio::spawn(connection);
        }
        drop(listener);

        let state = &self.state;
        tracing::info!(websockets = self.clients(), "shutting down");
        state.closing.cancel();
        state.websockets.close();
        tokio::join!(graceful.shutdown(), state.websockets.wait());
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
        // Without TLS, each request carries the socket, so that a WebSocket
        // upgraded over HTTP/1.1 writes its broadcasts to it directly.
        let service = |socket: Option<TcpHandle>| {
            service_fn(move |mut request: Request<Incoming>| {
                if let Some(socket) = &socket {
                    request.extensions_mut().insert(socket.clone());
                }
                let app = app.clone();
                async move { Ok::<_, Infallible>(app.handle(request).await) }
            })
        };
        let served = match tls {
            None => {
                let io = TcpIo::new(tcp);
                let service = service(Some(io.handle()));
                let connection = http.serve_connection_with_upgrades(io, service);
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
                let connection =
                    http.serve_connection_with_upgrades(TokioIo::new(stream), service(None));
                watcher.watch(connection).await
            }
        };
        if let Err(err) = served {
            tracing::debug!(%err, "HTTP connection ended with an error");
        }
    }

    /// Answers one request: the WebSocket, or a file.
    async fn handle(&self, mut request: Request<Incoming>) -> Response<HttpBody> {
        if request.uri().path() == WS_PATH {
            return self.websocket(&mut request);
        }
        if upgrade::is_upgrade_request(&request) {
            return plain(StatusCode::NOT_FOUND, "WebSockets are at /ws\n");
        }
        match self.state.files.clone().try_call(request).await {
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
        let (response, pending) = match upgrade::upgrade(request, &self.state.server) {
            Ok(accepted) => accepted,
            Err(refused) => {
                match refused.handshake_error() {
                    Some(err) => {
                        tracing::info!(status = %refused.status(), %err, "WebSocket refused")
                    }
                    None => {
                        tracing::info!(status = %refused.status(), "WebSocket refused: {refused}")
                    }
                }
                return refused.into_response().map(boxed);
            }
        };
        // Joined now, before the response goes: whatever is broadcast once
        // the client sees its socket open reaches it.
        let (id, kicked) = self.state.broadcast.join();
        let app = self.clone();
        self.state.websockets.spawn(async move {
            match pending.await {
                Ok(ws) => app.run_socket(ws, id, kicked).await,
                Err(err) => {
                    app.state.broadcast.leave(id);
                    tracing::debug!(%err, "the upgrade did not complete");
                }
            }
        });
        response.map(boxed)
    }

    /// Runs one WebSocket: what it sends is broadcast, what is broadcast is
    /// written to it, until it closes, falls too far behind, or the server
    /// shuts down.
    async fn run_socket(&self, ws: WebSocket<Upgraded>, id: u64, kicked: CancellationToken) {
        let state = &self.state;
        let (mut read, mut write) = ws.split();
        state.broadcast.open(id, write.sender());
        let reader = async {
            while let Some(item) = read.next().await {
                let message = match item {
                    Ok(Message::Text(text)) => PreparedMessage::text(text),
                    Ok(Message::Binary(data)) => PreparedMessage::binary(data),
                    // Pings, pongs and the close: duplex answers them.
                    Ok(_) => continue,
                    Err(err) => {
                        tracing::debug!(client = id, %err, "WebSocket error");
                        continue;
                    }
                };
                state.broadcast.broadcast(message);
                // A burst read in one go would otherwise be broadcast without
                // a pause, filling the queues of clients whose tasks (which
                // write them out) wait for this thread: let them run.
                tokio::task::yield_now().await;
            }
        };
        let mut reader = pin!(reader);

        let stop = tokio::select! {
            biased;
            () = state.closing.cancelled() => {
                Some((CloseCode::GOING_AWAY, "the server is shutting down".to_owned()))
            }
            () = kicked.cancelled() => Some((
                CloseCode::POLICY_VIOLATION,
                format!("too slow: {} messages were waiting", state.broadcast.queue),
            )),
            // The client closed, or the connection failed.
            () = &mut reader => None,
        };
        state.broadcast.leave(id);
        let Some((code, reason)) = stop else {
            return;
        };
        // The reader runs the closing handshake to its end: the client's
        // close frame and the end of the stream, or duplex's close timeout.
        // It is polled right after the close frame is queued, so that the
        // timeout starts even if nothing comes.
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

fn boxed(body: Full<Bytes>) -> HttpBody {
    body.map_err(|never| match never {}).boxed_unsync()
}

fn plain(status: StatusCode, text: &'static str) -> Response<HttpBody> {
    let mut response = Response::new(boxed(Full::new(Bytes::from_static(text.as_bytes()))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
