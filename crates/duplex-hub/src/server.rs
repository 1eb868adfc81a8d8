//! Serving the hub on a listener: TCP or TLS, HTTP/1.1 or HTTP/2 (hyper-util
//! auto, with RFC 8441 WebSockets), the feed and the history trimmer, and a
//! graceful shutdown (every WebSocket closed with 1001).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use duplex::Acceptor;
use duplex::tls::rustls::ServerConfig;
use duplex::upgrade::{TcpHandle, TcpIo};
use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::config::Config;
use crate::hub::Hub;
use crate::protocol::HubError;
use crate::service::{Service, origins};
use crate::storage::TRIM_INTERVAL;

/// How long a connection the hub closes gets to answer its close frame
/// (and a client that closes, to see the server close the TCP connection):
/// shorter than the library's 10 s, as a shutdown waits for the slowest.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client gets to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for connections before dropping them.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// A hub ready to serve.
#[derive(Debug)]
pub struct Server {
    hub: Arc<Hub>,
    tls: Option<Arc<ServerConfig>>,
}

impl Server {
    /// Opens the hub with `config`, its storage in `data_dir`.
    ///
    /// # Errors
    ///
    /// As [`Hub::open`].
    pub async fn open(config: Config, data_dir: &Path) -> Result<Server, HubError> {
        Server::open_with_clock(config, data_dir, Clock::system()).await
    }

    /// [`Server::open`], the hub's time of day read from `clock` (see
    /// [`Hub::open_with_clock`]).
    ///
    /// # Errors
    ///
    /// As [`Hub::open`].
    pub async fn open_with_clock(
        config: Config,
        data_dir: &Path,
        clock: Clock,
    ) -> Result<Server, HubError> {
        Ok(Server {
            hub: Hub::open_with_clock(config, data_dir, clock).await?,
            tls: None,
        })
    }

    /// Serves over TLS with this configuration; its ALPN is set to `h2` and
    /// `http/1.1`.
    pub fn tls(mut self, config: Arc<ServerConfig>) -> Self {
        let mut config = Arc::unwrap_or_clone(config);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        self.tls = Some(Arc::new(config));
        self
    }

    /// The hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Serves `listener` until `shutdown` completes; then stops accepting,
    /// closes every WebSocket with 1001, lets HTTP requests finish (up to 5
    /// seconds), and stops the storage writer once it has committed what it
    /// was given.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let hub = self.hub;
        let config = hub.config();
        let limits = &config.limits;
        // The HTTP handler reads what it needs from the request before the
        // upgrade; connections need not keep it.
        let mut websocket = Acceptor::new()
            .keep_request(false)
            .close_timeout(CLOSE_TIMEOUT)
            .max_message_size(limits.max_message_size)
            .max_frame_size(limits.max_message_size);
        if let Some(keepalive) = config.server.keepalive() {
            websocket = websocket.keepalive(keepalive);
        }
        let tracker = TaskTracker::new();
        let closing = CancellationToken::new();
        let service = Service {
            hub: hub.clone(),
            websocket,
            origins: origins(&config.server.allowed_origins),
            tracker: tracker.clone(),
            closing: closing.clone(),
        };
        tracker.spawn(crate::feed::run(hub.clone(), closing.clone()));
        tracker.spawn(trim_periodically(hub.clone(), closing.clone()));

        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http1().timer(TokioTimer::new());
        http.http2()
            .timer(TokioTimer::new())
            .enable_connect_protocol();
        let tls = self.tls.map(TlsAcceptor::from);
        let graceful = GracefulShutdown::new();
        let abort = CancellationToken::new();

        let mut shutdown = pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        tracing::warn!(%err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let connection = serve_connection(
                service.clone(),
                tcp,
                peer,
                tls.clone(),
                http.clone(),
                graceful.watcher(),
            );
            let abort = abort.clone();
            tracker.spawn(async move {
                tokio::select! {
                    () = abort.cancelled() => {}
                    () = connection => {}
                }
            });
        }
        drop(listener);
        tracing::info!("shutting down: closing WebSockets");
        closing.cancel();
        tracker.close();
        let drain = async {
            tokio::join!(graceful.shutdown(), tracker.wait());
        };
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, drain).await.is_err() {
            tracing::warn!(
                tasks = tracker.len(),
                "shutdown timed out: dropping the rest"
            );
            abort.cancel();
        }
        hub.shutdown().await;
        tracing::info!("shut down");
    }
}

/// Deletes expired history every [`TRIM_INTERVAL`].
async fn trim_periodically(hub: Arc<Hub>, stop: CancellationToken) {
    let mut interval = tokio::time::interval(TRIM_INTERVAL);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => hub.engine().trim(hub.retentions()),
        }
    }
}

/// Serves one TCP connection from `peer`: TLS if configured, then HTTP/1.1
/// or HTTP/2.
async fn serve_connection(
    service: Service,
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    http: auto::Builder<TokioExecutor>,
    watcher: Watcher,
) {
    let closing = service.closing.clone();
    // Without TLS, each request carries the socket, so that a WebSocket
    // upgraded over HTTP/1.1 writes its pushes to it directly.
    let handler = |socket: Option<TcpHandle>| {
        service_fn(move |mut request: Request<Incoming>| {
            if let Some(socket) = &socket {
                request.extensions_mut().insert(socket.clone());
            }
            let service = service.clone();
            async move { Ok::<_, Infallible>(service.handle(request, peer).await) }
        })
    };
    let served = match tls {
        None => {
            let io = TcpIo::new(tcp);
            let handler = handler(Some(io.handle()));
            let connection = http.serve_connection_with_upgrades(io, handler);
            watcher.watch(connection).await
        }
        Some(acceptor) => {
            let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
            let stream = tokio::select! {
                () = closing.cancelled() => return,
                handshake = handshake => match handshake {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(err)) => {
                        tracing::debug!(%err, %peer, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                },
            };
            let connection =
                http.serve_connection_with_upgrades(TokioIo::new(stream), handler(None));
            watcher.watch(connection).await
        }
    };
    if let Err(err) = served {
        tracing::debug!(%err, "HTTP connection ended with an error");
    }
}
