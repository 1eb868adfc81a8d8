//! `duplex echo --threads 1 --no-deflate`, written on fastwebsockets.
//!
//! One thread (a current_thread tokio runtime), `--listen ADDR` (port 0 picks a
//! free port), `listening on ws://ADDR` as the first line on stdout, TCP_NODELAY
//! on every connection, every text and binary message echoed unchanged. The
//! opening handshake goes through hyper 1 and fastwebsockets' `upgrade` module,
//! as its echo_server example does; pings and close frames are answered by
//! fastwebsockets (`set_auto_pong`, `set_auto_close`), and `FragmentCollector`
//! reassembles fragmented messages, as the other servers do.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use fastwebsockets::{FragmentCollector, OpCode, WebSocketError, upgrade};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

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
            // Ends once the 101 response is written and the connection handed over.
            let http = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service_fn(server_upgrade))
                .with_upgrades();
            let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, http).await;
        });
    }
}

async fn server_upgrade(
    mut request: Request<Incoming>,
) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, upgraded) = upgrade::upgrade(&mut request)?;
    tokio::spawn(async move {
        if let Ok(ws) = upgraded.await {
            let _ = echo(ws).await;
        }
    });
    Ok(response)
}

/// Echoes text and binary messages: fastwebsockets has no write queue, so each
/// `write_frame` is one write to the socket (vectored for payloads over 1 KiB,
/// header and payload copied into one buffer below that), as in its own
/// examples. Pongs and the close reply are written inside `read_frame`.
async fn echo(
    mut ws: fastwebsockets::WebSocket<TokioIo<hyper::upgrade::Upgraded>>,
) -> Result<(), WebSocketError> {
    ws.set_auto_pong(true);
    ws.set_auto_close(true);
    let mut ws = FragmentCollector::new(ws);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            // The close frame was echoed by `read_frame` (auto_close).
            OpCode::Close => return Ok(()),
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
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
    eprintln!("{problem}\nusage: echo-fastwebsockets [--listen ADDR]");
    std::process::exit(2)
}
