//! `duplex echo --threads 1 --no-deflate`, written on tokio-websockets.
//!
//! One thread (a current_thread tokio runtime), `--listen ADDR` (port 0 picks a
//! free port), `listening on ws://ADDR` as the first line on stdout, TCP_NODELAY
//! on every connection, every text and binary message echoed unchanged.
//! tokio-websockets answers pings and close frames by itself.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_websockets::{Error, ServerBuilder, WebSocketStream};

/// What `duplex echo` gives a client to complete the opening handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> std::io::Result<()> {
    let listen = listen_arg();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(listen))
}

async fn serve(listen: SocketAddr) -> std::io::Result<()> {
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
            let server = ServerBuilder::new();
            let accept = server.accept(tcp);
            if let Ok(Ok((_request, ws))) = tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
                let _ = echo(ws).await;
            }
        });
    }
}

/// Echoes text and binary messages, as tokio-websockets' echo_server example
/// does, but with `feed` instead of `send`. The stream keeps encoded frames in a
/// queue (written early only past its 8 KiB `flush_threshold`) and writes what
/// is queued, vectored, every time it is polled for the next message, before it
/// looks at the read buffer: so no reply waits while the connection waits for
/// input and no explicit flush is needed, but in a burst of messages each reply
/// still gets its own write (the library offers no way to defer that).
async fn echo(mut ws: WebSocketStream<TcpStream>) -> Result<(), Error> {
    // None: the close handshake is over (tokio-websockets echoed the close frame).
    while let Some(message) = ws.next().await {
        let message = message?;
        if message.is_text() || message.is_binary() {
            ws.feed(message).await?;
        }
    }
    Ok(())
}

/// `--listen ADDR`, default 127.0.0.1:9001 like `duplex echo`.
fn listen_arg() -> SocketAddr {
    let mut args = std::env::args().skip(1);
    let mut listen = SocketAddr::from(([127, 0, 0, 1], 9001));
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--listen", Some(addr)) => match addr.parse() {
                Ok(addr) => listen = addr,
                Err(err) => usage(&format!("--listen {addr}: {err}")),
            },
            _ => usage(&format!("unexpected argument {arg}")),
        }
    }
    listen
}

fn usage(problem: &str) -> ! {
    eprintln!("{problem}\nusage: echo-tokio-websockets [--listen ADDR]");
    std::process::exit(2)
}
