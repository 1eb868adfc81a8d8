//! `duplex bench`: load for a WebSocket echo or broadcast server, with
//! throughput and latency percentiles.
//!
//! Three modes:
//! - echo, closed loop (the default): each connection sends a message and
//!   waits for its echo before sending the next; latency is the round trip;
//! - echo, open loop (`--rate`): connections send on a schedule whatever the
//!   answers, and latency runs from the time a message was due, so a stalled
//!   server shows in the figures instead of slowing the load;
//! - fan-out (`--subscribers`): one publisher, N receivers of a broadcast
//!   endpoint; latency is from publishing to delivery. With `--also`, the
//!   receivers are spread over several nodes of one service and each node
//!   has a publisher, the rate shared between them.
//!
//! Everything runs on one thread: pin it to a core (`taskset -c 1`) and the
//! server to another, and the report's client CPU figure says whether the load
//! generator, rather than the server, was the limit.

use std::process::ExitCode;
use std::time::Duration;

use duplex::{ClientBuilder, Message, WebSocket};
use futures_util::StreamExt;

use crate::parse_size;

mod echo;
mod fan_out;
mod raw;
mod report;
#[cfg(target_os = "linux")]
mod uring;
mod window;

use echo::echo;
use fan_out::fan_out;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// ws:// or wss:// URL of an echo server (or, with --subscribers, a
    /// broadcast endpoint).
    url: String,
    /// Connections that send (echo modes).
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Payload bytes per message (e.g. 20, 1K, 16K).
    #[arg(long, default_value = "20", value_parser = parse_size)]
    size: usize,
    /// Seconds of measurement.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Total messages per second, spread over the connections (open loop);
    /// with --subscribers, the publishing rate.
    #[arg(long)]
    rate: Option<f64>,
    /// Offer permessage-deflate, and send compressible JSON-like text.
    #[arg(long)]
    deflate: bool,
    /// Send text messages instead of binary (JSON-like text with --deflate).
    #[arg(long)]
    text: bool,
    /// Fan-out mode: this many receivers and one publisher.
    #[arg(long)]
    subscribers: Option<usize>,
    /// With --subscribers: the endpoint is a duplex hub (`duplex serve`'s
    /// /ws); every receiver subscribes to this channel and the publisher
    /// publishes to it through the hub protocol.
    #[arg(long, value_name = "CHANNEL", requires = "subscribers")]
    hub: Option<String>,
    /// With --subscribers: another node of the same service (repeatable).
    /// The receivers are spread round-robin over URL and these, and each of
    /// them gets a publisher of its own, the rate shared between them.
    #[arg(long, value_name = "URL", requires = "subscribers")]
    also: Vec<String>,
    /// With --subscribers: print `subscribed: ...` on stderr once every
    /// receiver is subscribed, then `measuring` and `measured` when the
    /// measurement starts and ends (for a script that samples the servers'
    /// CPU time over the measurement).
    #[arg(long, requires = "subscribers")]
    marks: bool,
    /// Print the result as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Accept any TLS certificate (self-signed test servers only).
    #[arg(long)]
    insecure: bool,
    /// Open the WebSockets as streams of HTTP/2 connections (RFC 8441; h2
    /// by ALPN for wss://, h2c for ws://); the server must take them.
    #[arg(long)]
    http2: bool,
    /// With --http2: the TCP connections the WebSockets share, per URL
    /// (round-robin).
    #[arg(long, value_name = "M", default_value_t = 1, requires = "http2",
          value_parser = clap::value_parser!(u64).range(1..))]
    http2_connections: u64,
}

pub fn run(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let pool = Pool::default();
    let report = local.block_on(&runtime, async {
        match args.subscribers {
            Some(subscribers) => fan_out(&args, &pool, subscribers).await,
            None => echo(&args, &pool).await,
        }
    })?;
    if args.json {
        println!("{}", report.json(&args));
    } else {
        report.print(&args);
    }
    Ok(if report.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// How long after the end of the measurement a server still gets to answer
/// before the connections waiting for it are given up (as errors).
const GRACE: Duration = Duration::from_secs(2);

type Socket = WebSocket<duplex::ClientStream>;

/// With --http2, the HTTP/2 connections of each URL, opened as the first
/// WebSockets need them and then shared round-robin.
#[derive(Default)]
struct Pool {
    connections: std::cell::RefCell<
        std::collections::HashMap<String, (Vec<duplex::Http2Connection>, usize)>,
    >,
}

impl Pool {
    /// The connection for the next WebSocket to `url`.
    async fn connection(
        &self,
        args: &Args,
        url: &str,
        builder: &ClientBuilder,
    ) -> duplex::Result<duplex::Http2Connection> {
        let wanted = args.http2_connections as usize;
        let existing = {
            let mut connections = self.connections.borrow_mut();
            let (open, next) = connections.entry(url.to_owned()).or_default();
            if open.len() < wanted {
                None
            } else {
                *next += 1;
                Some(open[*next % open.len()].clone())
            }
        };
        if let Some(connection) = existing {
            return Ok(connection);
        }
        let connection = duplex::Http2Connection::connect(builder).await?;
        let mut connections = self.connections.borrow_mut();
        connections
            .entry(url.to_owned())
            .or_default()
            .0
            .push(connection.clone());
        Ok(connection)
    }

    /// How many TCP connections the WebSockets share.
    fn count(&self) -> usize {
        self.connections
            .borrow()
            .values()
            .map(|(open, _)| open.len())
            .sum()
    }
}

async fn connect_to(args: &Args, pool: &Pool, url: &str) -> duplex::Result<Socket> {
    // A load generator measures the server it names: never a proxy the
    // environment happens to set.
    let mut builder = ClientBuilder::new(url)
        .no_proxy()
        .danger_accept_invalid_certs(args.insecure)
        .max_message_size(args.size.max(1 << 20) * 2);
    if !args.deflate {
        builder = builder.no_deflate();
    }
    if args.http2 {
        let connection = pool.connection(args, url, &builder).await?;
        return connection.websocket(builder).await;
    }
    builder.connect().await
}

async fn connect_all(
    args: &Args,
    pool: &Pool,
    count: usize,
) -> Result<Vec<Socket>, Box<dyn std::error::Error>> {
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        sockets.push(connect_to(args, pool, &args.url).await?);
    }
    Ok(sockets)
}

/// Whether the WebSocket has a plain TCP connection of its own.
fn is_plain_tcp(ws: &Socket) -> bool {
    !ws.get_ref().is_tls() && !ws.get_ref().is_http2()
}

/// Waits for the next text or binary message, answering nothing else.
async fn next_data(ws: &mut Socket) -> Option<duplex::Result<Message>> {
    loop {
        match ws.next().await? {
            Ok(message) if message.is_text() || message.is_binary() => return Some(Ok(message)),
            Ok(Message::Close(_)) => return None,
            Ok(_) => continue,
            Err(err) => return Some(Err(err)),
        }
    }
}
