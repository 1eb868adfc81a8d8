//! `duplex echo`: echoes every text and binary message back unchanged.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use duplex::ServerBuilder;
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
    let mut server =
        ServerBuilder::new().handshake_timeout(Duration::from_secs_f64(args.handshake_timeout));
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
        (Some(cert), Some(key)) => Some(TlsAcceptor::from(duplex::tls::server_config_from_pem(
            cert, key,
        )?)),
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
        // One task type per transport: a task is as large as its largest state,
        // and a TLS stream is kilobytes that a plain connection need not carry.
        match tls.clone() {
            Some(acceptor) => tokio::spawn(async move {
                let result = async {
                    let tls = tokio::time::timeout(TLS_TIMEOUT, acceptor.accept(tcp))
                        .await
                        .map_err(|_| duplex::Error::Timeout(duplex::Timeout::Handshake))??;
                    connection(tls, &server).await
                };
                if let Err(err) = result.await {
                    tracing::debug!(%peer, %err, "connection ended with an error");
                }
            }),
            None => tokio::spawn(async move {
                if let Err(err) = connection(tcp, &server).await {
                    tracing::debug!(%peer, %err, "connection ended with an error");
                }
            }),
        };
    }
}

/// How long a client gets for the TLS handshake.
const TLS_TIMEOUT: Duration = Duration::from_secs(10);

async fn connection<S>(stream: S, server: &ServerBuilder) -> duplex::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // The handshake future is boxed: it is large and short-lived, and the task
    // would otherwise keep its size for the whole life of the connection.
    let ws = Box::pin(server.accept(stream)).await?;
    echo(ws).await
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
