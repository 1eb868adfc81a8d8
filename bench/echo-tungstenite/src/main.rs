//! `duplex echo --threads 1 --no-deflate`, written on tokio-tungstenite.
//!
//! One thread (a current_thread tokio runtime), `--listen ADDR` (port 0 picks a
//! free port), `listening on ws://ADDR` as the first line on stdout, TCP_NODELAY
//! on every connection, every text and binary message echoed unchanged.
//! tungstenite answers pings and close frames by itself.
//!
//! `--read-buffer-size BYTES` sets tungstenite's `read_buffer_size` (default:
//! tungstenite's own, 128 KiB, which its docs recommend for high read loads).
//! tungstenite zero-fills that much of its read buffer before every read from
//! the socket, so with small messages a smaller buffer (its docs' other
//! example, 4 KiB) is much faster: bench/compare.sh runs both.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Error;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// What `duplex echo` gives a client to complete the opening handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> std::io::Result<()> {
    let (listen, config) = args();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(listen, config))
}

async fn serve(listen: SocketAddr, config: WebSocketConfig) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on ws://{}", listener.local_addr()?)?;
    stdout.flush()?;
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(_) => {
                // Out of descriptors and the like: wait a little, keep serving.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let accept = tokio_tungstenite::accept_async_with_config(tcp, Some(config));
            if let Ok(Ok(ws)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
                let _ = echo(ws).await;
            }
        });
    }
}

/// Echoes text and binary messages. Replies are queued with `feed` (tungstenite
/// writes them into its write buffer, and to the socket only once that holds
/// 128 KiB) and flushed when the next message is not already there: a burst of
/// messages costs one write, as in `duplex echo`. This is what the
/// `read.forward(write)` of tokio-tungstenite's echo-server example does, without
/// the lock that `split` puts between the two halves.
async fn echo(mut ws: WebSocketStream<TcpStream>) -> Result<(), Error> {
    loop {
        let next = match ws.next().now_or_never() {
            Some(next) => next,
            None => {
                ws.flush().await?;
                ws.next().await
            }
        };
        // None: the close handshake is over (tungstenite echoed the close frame).
        let Some(message) = next else { return Ok(()) };
        let message = message?;
        if message.is_text() || message.is_binary() {
            ws.feed(message).await?;
        }
    }
}

/// `--listen ADDR`, default 127.0.0.1:9001 like `duplex echo`;
/// `--read-buffer-size BYTES`, default tungstenite's.
fn args() -> (SocketAddr, WebSocketConfig) {
    let mut args = std::env::args().skip(1);
    let mut listen = SocketAddr::from(([127, 0, 0, 1], 9001));
    let mut config = WebSocketConfig::default();
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--listen", Some(addr)) => match addr.parse() {
                Ok(addr) => listen = addr,
                Err(err) => usage(&format!("--listen {addr}: {err}")),
            },
            ("--read-buffer-size", Some(size)) => match size.parse() {
                Ok(size) if size > 0 => config = config.read_buffer_size(size),
                _ => usage(&format!(
                    "--read-buffer-size {size}: not a positive number of bytes"
                )),
            },
            _ => usage(&format!("unexpected argument {arg}")),
        }
    }
    (listen, config)
}

fn usage(problem: &str) -> ! {
    eprintln!("{problem}\nusage: echo-tungstenite [--listen ADDR] [--read-buffer-size BYTES]");
    std::process::exit(2)
}
