//! `duplex echo`: echoes every text and binary message back unchanged.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use duplex::Acceptor;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;

use crate::parse_size;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// PEM certificate chain: serve wss:// (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Worker threads (default: one per core). 1 runs everything on one thread.
    #[arg(long)]
    threads: Option<usize>,
    /// Largest message accepted (e.g. 64M); larger ones close with 1009.
    #[arg(long, value_parser = parse_size)]
    max_message_size: Option<usize>,
    /// Largest frame accepted (e.g. 16M); larger ones close with 1009.
    #[arg(long, value_parser = parse_size)]
    max_frame_size: Option<usize>,
    /// Seconds a client gets to complete the opening handshake.
    #[arg(long, default_value_t = 10.0)]
    handshake_timeout: f64,
    /// Decline permessage-deflate, even when clients offer it.
    #[arg(long)]
    no_deflate: bool,
    /// Serve through hyper: HTTP/1.1, and HTTP/2 (h2 by ALPN with TLS, h2c
    /// without) whose streams may be WebSockets (RFC 8441).
    #[arg(long)]
    http2: bool,
}

pub fn run(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(serve(args))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    // An echo needs nothing of the request once it has answered it: the
    // connections need not keep its headers.
    let mut server = Acceptor::new()
        .keep_request(false)
        .handshake_timeout(Duration::from_secs_f64(args.handshake_timeout));
    if let Some(max) = args.max_message_size {
        server = server.max_message_size(max);
    }
    if let Some(max) = args.max_frame_size {
        server = server.max_frame_size(max);
    }
    if args.no_deflate {
        server = server.no_deflate();
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let config = duplex::tls::server_config_from_pem(cert, key)?;
            let config = match args.http2 {
                true => {
                    let mut config = Arc::unwrap_or_clone(config);
                    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
                    Arc::new(config)
                }
                false => config,
            };
            Some(TlsAcceptor::from(config))
        }
        _ => None,
    };
    let listener = crate::listen(args.listen)?;
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    println!("listening on {scheme}://{}", listener.local_addr()?);
    let server = Arc::new(server);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of descriptors and the like: wait a little, keep serving.
                tracing::warn!(%err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, %err, "cannot set TCP_NODELAY");
        }
        let server = server.clone();
        if args.http2 {
            let tls = tls.clone();
            tokio::spawn(async move {
                let result = match tls {
                    Some(acceptor) => {
                        match tokio::time::timeout(TLS_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(tls)) => http2::serve(tls, server).await,
                            Ok(Err(err)) => Err(err.into()),
                            Err(_) => Err("the TLS handshake timed out".into()),
                        }
                    }
                    None => http2::serve(tcp, server).await,
                };
                if let Err(err) = result {
                    let err = duplex_hub::error_chain(err.as_ref());
                    tracing::debug!(%peer, %err, "connection ended with an error");
                }
            });
            continue;
        }
        // One task type per transport: a task is as large as its largest state,
        // and a TLS stream is kilobytes that a plain connection need not carry.
        match tls.clone() {
            Some(acceptor) => tokio::spawn(async move {
                let result = async {
                    let tls = tokio::time::timeout(TLS_TIMEOUT, acceptor.accept(tcp))
                        .await
                        .map_err(|_| duplex::Error::Timeout(duplex::Timeout::Tls))??;
                    connection(tls, &server).await
                };
                if let Err(err) = result.await {
                    let err = duplex_hub::error_chain(&err);
                    tracing::debug!(%peer, err, "connection ended with an error");
                }
            }),
            None => tokio::spawn(async move {
                if let Err(err) = connection(tcp, &server).await {
                    let err = duplex_hub::error_chain(&err);
                    tracing::debug!(%peer, err, "connection ended with an error");
                }
            }),
        };
    }
}

/// How long a client gets for the TLS handshake.
const TLS_TIMEOUT: Duration = Duration::from_secs(10);

async fn connection<S>(stream: S, server: &Acceptor) -> duplex::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // The handshake future is boxed: it is large and short-lived, and the task
    // would otherwise keep its size for the whole life of the connection.
    let ws = Box::pin(server.accept(stream)).await?;
    echo(ws).await
}

/// `--http2`: connections served by hyper, WebSockets by upgrade.
mod http2 {
    use std::convert::Infallible;
    use std::sync::Arc;

    use duplex::Acceptor;
    use duplex::upgrade::{self, Body};
    use http::{Response, StatusCode};
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    use tokio::io::{AsyncRead, AsyncWrite};

    /// Serves one connection, HTTP/1.1 or HTTP/2 (prior knowledge or ALPN):
    /// every WebSocket request opens an echoing WebSocket; other requests
    /// get 426.
    pub async fn serve<S>(
        stream: S,
        server: Arc<Acceptor>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = service_fn(move |mut request| {
            let server = server.clone();
            async move {
                if !upgrade::is_upgrade_request(&request) {
                    let refused = Response::builder()
                        .status(StatusCode::UPGRADE_REQUIRED)
                        .header("upgrade", "websocket")
                        .body(Body::from("a WebSocket echo server\n"))
                        .expect("a valid response");
                    return Ok::<_, Infallible>(refused);
                }
                Ok(match upgrade::upgrade(&mut request, &server) {
                    Ok((response, pending)) => {
                        tokio::spawn(async move {
                            match pending.await {
                                Ok(ws) => {
                                    if let Err(err) = super::echo(ws).await {
                                        let err = duplex_hub::error_chain(&err);
                                        tracing::debug!(err, "WebSocket ended with an error");
                                    }
                                }
                                Err(err) => {
                                    let err = duplex_hub::error_chain(&err);
                                    tracing::debug!(err, "upgrade failed");
                                }
                            }
                        });
                        response
                    }
                    Err(refused) => refused.into_response(),
                })
            }
        });
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http2().enable_connect_protocol();
        http.serve_connection_with_upgrades(TokioIo::new(stream), service)
            .await
    }
}

/// Echoes text and binary messages. Replies are queued with `feed` and written
/// together when the connection next waits for input, so a burst of messages
/// costs one write.
async fn echo<S>(mut ws: duplex::WebSocket<S>) -> duplex::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(message) = ws.next().await {
        let message = message?;
        if message.is_text() || message.is_binary() {
            ws.feed(message).await?;
        }
    }
    Ok(())
}
