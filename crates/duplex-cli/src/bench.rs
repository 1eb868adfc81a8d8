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

use std::collections::VecDeque;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use duplex::{ClientBuilder, CloseCode, Message, WebSocket};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::time::Instant;

use crate::parse_size;

#[cfg(target_os = "linux")]
mod uring;

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

/// What a run measured.
struct Report {
    /// Messages counted during the measurement window: round trips, or (fan-out)
    /// deliveries.
    messages: u64,
    /// Fan-out: messages published during the window.
    published: u64,
    seconds: f64,
    latency: Histogram<u64>,
    errors: u64,
    client_cpu_percent: f64,
    deflate: bool,
    /// With --http2: the TCP connections the WebSockets shared.
    http2_connections: Option<usize>,
}

impl Report {
    fn rate(&self) -> f64 {
        self.messages as f64 / self.seconds
    }

    fn percentile(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64
    }

    fn json(&self, args: &Args) -> serde_json::Value {
        let mut value = serde_json::json!({
            "url": args.url,
            "mode": match (args.subscribers, args.rate) {
                (Some(_), _) => "fan-out",
                (None, Some(_)) => "echo, open loop",
                (None, None) => "echo, closed loop",
            },
            "connections": args.subscribers.map_or(args.connections, |s| s + 1),
            "size": args.size,
            "duration_s": self.seconds,
            "deflate": self.deflate,
            "messages": self.messages,
            "messages_per_sec": self.rate(),
            "mb_per_sec": self.rate() * args.size as f64 / 1e6,
            "latency_us": {
                "p50": self.percentile(0.5),
                "p90": self.percentile(0.9),
                "p99": self.percentile(0.99),
                "p99_9": self.percentile(0.999),
                "max": self.latency.max() as f64,
            },
            "client_cpu_percent": self.client_cpu_percent,
            "errors": self.errors,
        });
        if let Some(connections) = self.http2_connections {
            value["http2_connections"] = connections.into();
        }
        if let Some(subscribers) = args.subscribers {
            value["subscribers"] = subscribers.into();
            value["published"] = self.published.into();
            value["published_per_sec"] = (self.published as f64 / self.seconds).into();
            if !args.also.is_empty() {
                value["also"] = args.also.clone().into();
                value["publishers"] = (args.also.len() + 1).into();
                value["connections"] = (subscribers + args.also.len() + 1).into();
            }
        }
        value
    }

    fn print(&self, args: &Args) {
        let kind = if args.text || args.deflate {
            "text"
        } else {
            "binary"
        };
        match args.subscribers {
            Some(subscribers) => println!(
                "{}{}: fan-out to {subscribers} subscribers, {}-byte {kind} messages, {:.1} s",
                args.url,
                args.also
                    .iter()
                    .map(|url| format!(" + {url}"))
                    .collect::<String>(),
                args.size,
                self.seconds
            ),
            None => println!(
                "{}: {} connections, {}-byte {kind} messages, {:.1} s{}",
                args.url,
                args.connections,
                args.size,
                self.seconds,
                args.rate
                    .map(|r| format!(", open loop at {r} messages/s"))
                    .unwrap_or_default()
            ),
        }
        println!(
            "permessage-deflate: {}",
            if self.deflate { "on" } else { "off" }
        );
        if let Some(connections) = self.http2_connections {
            println!("HTTP/2: the WebSockets shared {connections} TCP connections");
        }
        if args.subscribers.is_some() {
            println!(
                "published: {} ({:.0}/s)",
                self.published,
                self.published as f64 / self.seconds
            );
        }
        let what = if args.subscribers.is_some() {
            "delivered"
        } else {
            "messages"
        };
        println!();
        println!(
            "| {what}/s | MB/s | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | client CPU | errors |"
        );
        println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        println!(
            "| {:.0} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {:.0}% | {} |",
            self.rate(),
            self.rate() * args.size as f64 / 1e6,
            self.percentile(0.5),
            self.percentile(0.9),
            self.percentile(0.99),
            self.percentile(0.999),
            self.latency.max(),
            self.client_cpu_percent,
            self.errors
        );
        if self.client_cpu_percent > 90.0 {
            println!(
                "\nnote: the client used {:.0}% of its core; the load generator may be the limit",
                self.client_cpu_percent
            );
        }
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 1 minute, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let micros = (latency.as_micros() as u64).clamp(1, 60_000_000);
    histogram.saturating_record(micros);
}

/// The message every connection sends: zeros, or JSON-like text for
/// compression to work on.
fn payload(size: usize, text: bool, deflate: bool) -> Message {
    if text || deflate {
        let mut json = String::with_capacity(size + 64);
        let mut i = 0;
        while json.len() < size {
            json.push_str(&format!(
                "{{\"symbol\":\"AC{}\",\"price\":{}.{:02},\"volume\":{}}}",
                i % 50,
                100 + i % 37,
                i % 100,
                i * 13 % 1000
            ));
            i += 1;
        }
        json.truncate(size);
        Message::text(json)
    } else {
        Message::binary(Bytes::from(vec![0u8; size]))
    }
}

/// Process CPU time (user + system) so far.
fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    #[allow(unsafe_code)]
    // SAFETY: getrusage writes a rusage into the pointer it is given, which
    // points to one.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
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

/// The measurement window, a progress bar over it, and the count it shows.
struct Window {
    start: Instant,
    end: Instant,
    counted: Rc<AtomicU64>,
    progress: ProgressBar,
}

/// The progress bar of a run: one step per second of warm-up and measurement.
fn progress_bar(args: &Args) -> ProgressBar {
    let progress = ProgressBar::new((args.warmup + args.duration).ceil() as u64);
    progress.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>3} [{bar:30}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    progress
}

impl Window {
    fn new(args: &Args) -> Window {
        let began = Instant::now();
        let start = began + Duration::from_secs_f64(args.warmup);
        let end = start + Duration::from_secs_f64(args.duration);
        let progress = progress_bar(args);
        let window = Window {
            start,
            end,
            counted: Rc::new(AtomicU64::new(0)),
            progress,
        };
        window.tick_progress(began);
        window
    }

    fn tick_progress(&self, began: Instant) {
        let (progress, counted, start, end) = (
            self.progress.clone(),
            self.counted.clone(),
            self.start,
            self.end,
        );
        tokio::task::spawn_local(async move {
            let mut last = (Instant::now(), 0);
            while Instant::now() < end {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let now = Instant::now();
                let count = counted.load(Ordering::Relaxed);
                let rate = (count - last.1) as f64 / (now - last.0).as_secs_f64();
                last = (now, count);
                progress.set_position((now - began).as_secs());
                if now < start {
                    progress.set_message("warming up");
                } else {
                    progress.set_message(format!("{rate:.0} messages/s"));
                }
            }
            progress.finish_and_clear();
        });
    }

    fn measuring(&self, at: Instant) -> bool {
        at >= self.start && at < self.end
    }
}

/// Echo, closed or open loop.
async fn echo(args: &Args, pool: &Pool) -> Result<Report, Box<dyn std::error::Error>> {
    let sockets = connect_all(args, pool, args.connections).await?;
    let deflate = sockets.first().is_some_and(|ws| ws.deflate().is_some());
    #[cfg(target_os = "linux")]
    {
        let plain = sockets.iter().all(is_plain_tcp);
        if args.rate.is_none() && !deflate && plain && uring::available() {
            return echo_on_uring(args, sockets);
        }
    }
    let message = payload(args.size, args.text, args.deflate);
    let window = Rc::new(Window::new(args));
    let cpu_before = Rc::new(std::cell::Cell::new(None));
    let mut tasks = Vec::with_capacity(sockets.len());
    let interval = args
        .rate
        .map(|rate| Duration::from_secs_f64(args.connections as f64 / rate));
    for (i, ws) in sockets.into_iter().enumerate() {
        let (message, window) = (message.clone(), window.clone());
        tasks.push(tokio::task::spawn_local(async move {
            // Uncompressed over plain TCP, the echo of a frame is a frame of
            // known length: the lean path, which keeps the load generator
            // cheaper than any server it measures.
            let lean = !deflate && is_plain_tcp(&ws);
            if !lean {
                return match interval {
                    None => closed_loop(ws, message, &window).await,
                    Some(interval) => open_loop(ws, message, interval, &window).await,
                };
            }
            let Ok(duplex::MaybeTlsStream::Plain(raw)) = ws.into_inner().into_tcp() else {
                let mut outcome = Outcome::new();
                outcome.errors += 1;
                return outcome;
            };
            let frame = RawFrames::new(&message, i as u32);
            match interval {
                None => raw_closed_loop(raw, frame, &window).await,
                Some(interval) => raw_open_loop(raw, frame, interval, &window).await,
            }
        }));
    }
    // Start the CPU clock when measuring starts.
    {
        let (window, cpu_before) = (window.clone(), cpu_before.clone());
        tokio::task::spawn_local(async move {
            tokio::time::sleep_until(window.start).await;
            cpu_before.set(Some(cpu_time()));
        });
    }
    let mut latency = histogram();
    let (mut messages, mut errors) = (0, 0);
    for task in tasks {
        let outcome = task.await?;
        latency.add(&outcome.latency)?;
        messages += outcome.messages;
        errors += outcome.errors;
    }
    let cpu = cpu_time().saturating_sub(cpu_before.get().unwrap_or_default());
    Ok(Report {
        messages,
        published: 0,
        seconds: args.duration,
        latency,
        errors,
        client_cpu_percent: 100.0 * cpu.as_secs_f64() / args.duration,
        deflate,
        http2_connections: args.http2.then(|| pool.count()),
    })
}

/// The frames of the lean path, encoded once per connection: the message to
/// send, masked with one key that is reused for every frame (a real client
/// must draw a fresh key per frame, RFC 6455 section 5.3; the server cannot
/// tell, and it is the server that is measured), and the length of the echo.
struct RawFrames {
    message: Vec<u8>,
    close: Vec<u8>,
    echo_len: usize,
    first_byte: u8,
}

impl RawFrames {
    fn new(message: &Message, seed: u32) -> RawFrames {
        use duplex::proto::frame::{Frame, FrameHeader, OpCode};
        let key = seed
            .wrapping_mul(0x9e37_79b9)
            .wrapping_add(0x7f4a_7c15)
            .to_be_bytes();
        let opcode = if message.is_text() {
            OpCode::Text
        } else {
            OpCode::Binary
        };
        let encode = |opcode, payload: Bytes| {
            let frame = Frame {
                header: FrameHeader {
                    mask: Some(key),
                    ..FrameHeader::new(opcode, payload.len() as u64)
                },
                payload,
            };
            let mut out = bytes::BytesMut::new();
            frame.encode(&mut out);
            out.to_vec()
        };
        let payload = message.clone().into_data();
        let echo_header = FrameHeader::new(opcode, payload.len() as u64).encoded_len();
        RawFrames {
            echo_len: echo_header + payload.len(),
            first_byte: 0x80 | opcode as u8,
            message: encode(opcode, payload),
            close: encode(OpCode::Close, Bytes::from_static(&[0x03, 0xe8])),
        }
    }

    /// Whether `echo` is our message, unmasked, from the server.
    fn is_echo(&self, echo: &[u8]) -> bool {
        echo.first() == Some(&self.first_byte)
    }
}

async fn raw_closed_loop(
    mut tcp: tokio::net::TcpStream,
    frames: RawFrames,
    window: &Window,
) -> Outcome {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    cheap_congestion_control(&tcp);
    let mut outcome = Outcome::new();
    let mut echo = vec![0u8; frames.echo_len];
    // One clock reading per message: the time an echo arrives is the time the
    // next message leaves.
    let mut sent = Instant::now();
    while sent < window.end {
        let exchanged = async {
            tcp.write_all(&frames.message).await?;
            tcp.read_exact(&mut echo).await
        };
        // A server that stops answering does not hold the load: past the
        // grace period, the connection counts as an error.
        let exchanged = tokio::time::timeout_at(window.end + GRACE, exchanged).await;
        if !matches!(exchanged, Ok(Ok(_))) || !frames.is_echo(&echo) {
            outcome.errors += 1;
            return outcome;
        }
        let now = Instant::now();
        if window.measuring(sent) {
            record(&mut outcome.latency, now - sent);
            outcome.messages += 1;
            window.counted.fetch_add(1, Ordering::Relaxed);
        }
        sent = now;
    }
    raw_close(tcp, &frames).await;
    outcome
}

/// Reno for the load generator's own sockets, where the system allows it: on
/// loopback, congestion control does nothing useful, and BBR (a common
/// default) costs the sender a few percent of its CPU per message. The
/// server's sockets keep the system's choice.
fn cheap_congestion_control(tcp: &tokio::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let name = b"reno";
    #[allow(unsafe_code)]
    // SAFETY: setsockopt reads `name.len()` bytes from `name`, which has them;
    // the descriptor is the stream's, open for the duration of the call.
    unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        );
    }
}

async fn raw_open_loop(
    tcp: tokio::net::TcpStream,
    frames: RawFrames,
    interval: Duration,
    window: &Window,
) -> Outcome {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    cheap_congestion_control(&tcp);
    let (mut reader, mut writer) = tcp.into_split();
    let due: Rc<std::cell::RefCell<VecDeque<Instant>>> = Rc::default();
    let sending = {
        let (due, message, end) = (due.clone(), &frames.message, window.end);
        async move {
            let mut next = Instant::now();
            while next < end {
                tokio::time::sleep_until(next).await;
                due.borrow_mut().push_back(next);
                if writer.write_all(message).await.is_err() {
                    return (writer, false);
                }
                next += interval;
            }
            (writer, true)
        }
    };
    let receiving = async {
        let mut outcome = Outcome::new();
        let mut echo = vec![0u8; frames.echo_len];
        let deadline = window.end + GRACE;
        loop {
            let read = tokio::time::timeout_at(deadline, reader.read_exact(&mut echo)).await;
            let Ok(Ok(_)) = read else {
                if read.is_ok() {
                    outcome.errors += 1;
                }
                break;
            };
            if !frames.is_echo(&echo) {
                outcome.errors += 1;
                break;
            }
            let Some(sent) = due.borrow_mut().pop_front() else {
                continue;
            };
            if window.measuring(sent) {
                record(&mut outcome.latency, sent.elapsed());
                outcome.messages += 1;
                window.counted.fetch_add(1, Ordering::Relaxed);
            }
            if Instant::now() >= window.end && due.borrow().is_empty() {
                break;
            }
        }
        outcome
    };
    let ((writer, sent_all), mut outcome) = tokio::join!(sending, receiving);
    if !sent_all {
        outcome.errors += 1;
    }
    if let Ok(tcp) = reader.reunite(writer) {
        raw_close(tcp, &frames).await;
    }
    outcome
}

/// Sends a close frame and waits briefly for the server to end the connection.
async fn raw_close(mut tcp: tokio::net::TcpStream, frames: &RawFrames) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if tcp.write_all(&frames.close).await.is_ok() {
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(1), tcp.read_to_end(&mut rest)).await;
    }
}

/// The closed-loop echo of the lean path, on io_uring.
#[cfg(target_os = "linux")]
fn echo_on_uring(args: &Args, sockets: Vec<Socket>) -> Result<Report, Box<dyn std::error::Error>> {
    let message = payload(args.size, args.text, false);
    let mut streams = Vec::with_capacity(sockets.len());
    for (i, ws) in sockets.into_iter().enumerate() {
        let Ok(duplex::MaybeTlsStream::Plain(tcp)) = ws.into_inner().into_tcp() else {
            return Err("a connection is not plain TCP".into());
        };
        cheap_congestion_control(&tcp);
        streams.push((tcp.into_std()?, RawFrames::new(&message, i as u32)));
    }
    let began = std::time::Instant::now();
    let start = began + Duration::from_secs_f64(args.warmup);
    let end = start + Duration::from_secs_f64(args.duration);
    let progress = progress_bar(args);
    let tally = uring::closed_loop(streams, start, end, &progress)?;
    progress.finish_and_clear();
    Ok(Report {
        messages: tally.messages,
        published: 0,
        seconds: args.duration,
        latency: tally.latency,
        errors: tally.errors,
        client_cpu_percent: 100.0 * tally.cpu.as_secs_f64() / args.duration,
        deflate: false,
        http2_connections: None,
    })
}

/// One connection's tally.
struct Outcome {
    messages: u64,
    latency: Histogram<u64>,
    errors: u64,
}

impl Outcome {
    fn new() -> Outcome {
        Outcome {
            messages: 0,
            latency: histogram(),
            errors: 0,
        }
    }
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

async fn closed_loop(mut ws: Socket, message: Message, window: &Window) -> Outcome {
    let mut outcome = Outcome::new();
    loop {
        let sent = Instant::now();
        if sent >= window.end {
            break;
        }
        if ws.send(message.clone()).await.is_err() {
            outcome.errors += 1;
            return outcome;
        }
        match tokio::time::timeout_at(window.end + GRACE, next_data(&mut ws)).await {
            Ok(Some(Ok(_))) => {}
            _ => {
                outcome.errors += 1;
                return outcome;
            }
        }
        if window.measuring(sent) {
            record(&mut outcome.latency, sent.elapsed());
            outcome.messages += 1;
            window.counted.fetch_add(1, Ordering::Relaxed);
        }
    }
    let _ = ws.close(CloseCode::NORMAL, "").await;
    outcome
}

async fn open_loop(ws: Socket, message: Message, interval: Duration, window: &Window) -> Outcome {
    let (mut reader, mut writer) = ws.split();
    let due: Rc<std::cell::RefCell<VecDeque<Instant>>> = Rc::default();
    let sending = {
        let due = due.clone();
        let end = window.end;
        async move {
            let mut next = Instant::now();
            while next < end {
                tokio::time::sleep_until(next).await;
                due.borrow_mut().push_back(next);
                if writer.send(message.clone()).await.is_err() {
                    return (writer, false);
                }
                next += interval;
            }
            (writer, true)
        }
    };
    let receiving = async {
        let mut outcome = Outcome::new();
        loop {
            let timeout = tokio::time::sleep_until(window.end + GRACE);
            let item = tokio::select! {
                item = reader.next() => item,
                () = timeout => break,
            };
            match item {
                Some(Ok(message)) if message.is_text() || message.is_binary() => {
                    let Some(sent) = due.borrow_mut().pop_front() else {
                        continue;
                    };
                    if window.measuring(sent) {
                        record(&mut outcome.latency, sent.elapsed());
                        outcome.messages += 1;
                        window.counted.fetch_add(1, Ordering::Relaxed);
                    }
                    if Instant::now() >= window.end && due.borrow().is_empty() {
                        break;
                    }
                }
                Some(Ok(_)) => {}
                _ => {
                    outcome.errors += 1;
                    break;
                }
            }
        }
        outcome
    };
    let ((mut writer, sent_all), mut outcome) = tokio::join!(sending, receiving);
    if !sent_all {
        outcome.errors += 1;
    }
    let _ = writer.close(CloseCode::NORMAL, "").await;
    outcome
}

/// How fan-out messages travel: raw binary messages that a broadcast endpoint
/// sends to everyone, or publications on a channel of a duplex hub.
#[derive(Clone)]
enum Route {
    /// Every binary message a client sends reaches every client.
    Broadcast,
    /// `duplex serve`'s protocol: subscribe to the channel, publish to it,
    /// receive `{"push":"message",...}`.
    Hub(Rc<str>),
}

impl Route {
    /// Makes `ws` a receiver: nothing for a broadcast, a subscription on a hub
    /// (answered before the call returns).
    async fn join(&self, ws: &mut Socket) -> Result<(), Box<dyn std::error::Error>> {
        let Route::Hub(channel) = self else {
            return Ok(());
        };
        let request = serde_json::json!({"id": 0, "op": "subscribe", "channel": &**channel});
        ws.send(Message::text(request.to_string())).await?;
        let reply = tokio::time::timeout(Duration::from_secs(10), Route::subscribed(ws));
        reply
            .await
            .map_err(|_| "the hub did not answer the subscription within 10 s")?
    }

    /// Waits for the answer to the subscription request (id 0).
    async fn subscribed(ws: &mut Socket) -> Result<(), Box<dyn std::error::Error>> {
        loop {
            let reply = match next_data(ws).await {
                Some(message) => message?,
                None => return Err("the hub closed the connection while subscribing".into()),
            };
            let reply: serde_json::Value = serde_json::from_slice(&reply.into_data())?;
            if reply.get("id") == Some(&serde_json::Value::from(0)) {
                return match reply["ok"].as_bool() {
                    Some(true) => Ok(()),
                    _ => {
                        Err(format!("the hub refused the subscription: {}", reply["error"]).into())
                    }
                };
            }
        }
    }

    /// The message that publishes `seq`, stamped `nanos` after the epoch,
    /// padded to about `size` bytes.
    fn publication(&self, seq: u64, nanos: u64, size: usize) -> Message {
        match self {
            Route::Broadcast => {
                let mut data = vec![0u8; size.max(16)];
                data[..8].copy_from_slice(&seq.to_be_bytes());
                data[8..16].copy_from_slice(&nanos.to_be_bytes());
                Message::binary(data)
            }
            Route::Hub(channel) => {
                let data = serde_json::json!({
                    "bench_seq": seq,
                    "bench_t": nanos,
                    "pad": "x".repeat(size.saturating_sub(48)),
                });
                let request = serde_json::json!({
                    "id": seq + 1, "op": "publish", "channel": &**channel, "data": data,
                });
                Message::text(request.to_string())
            }
        }
    }

    /// The sequence number and time stamp of a delivered message, if it is a
    /// publication of this run (replies and other pushes are not).
    fn delivered(&self, message: &Message) -> Option<(u64, u64)> {
        let data = message.as_data();
        match self {
            Route::Broadcast => {
                let seq = u64::from_be_bytes(data.get(..8)?.try_into().ok()?);
                let nanos = u64::from_be_bytes(data.get(8..16)?.try_into().ok()?);
                Some((seq, nanos))
            }
            // The hub forwards `data` as it was published; the two numbers are
            // found by key, without parsing the whole push.
            Route::Hub(_) => {
                let seq = number_after(data, b"\"bench_seq\":")?;
                let nanos = number_after(data, b"\"bench_t\":")?;
                Some((seq, nanos))
            }
        }
    }
}

/// The unsigned integer that follows the first `key` in `text`.
fn number_after(text: &[u8], key: &[u8]) -> Option<u64> {
    let at = text.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = text[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&text[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// Fan-out: messages carry their publication time; subscribers measure delivery.
async fn fan_out(
    args: &Args,
    pool: &Pool,
    subscribers: usize,
) -> Result<Report, Box<dyn std::error::Error>> {
    let epoch = Instant::now();
    let route = match &args.hub {
        Some(channel) => Route::Hub(channel.as_str().into()),
        None => Route::Broadcast,
    };
    // The URL, then --also's: receivers go round-robin over them, and each
    // has a publisher.
    let urls: Vec<&str> = std::iter::once(args.url.as_str())
        .chain(args.also.iter().map(String::as_str))
        .collect();
    let mut receivers = Vec::with_capacity(subscribers);
    for i in 0..subscribers {
        receivers.push(connect_to(args, pool, urls[i % urls.len()]).await?);
    }
    for ws in &mut receivers {
        route.join(ws).await?;
    }
    let mut publishers = Vec::with_capacity(urls.len());
    for url in &urls {
        let mut publisher = connect_to(args, pool, url).await?;
        // The publisher receives its own publications too: in the closed loop,
        // their return is its signal to publish the next one.
        route.join(&mut publisher).await?;
        publishers.push(publisher);
    }
    let deflate = publishers[0].deflate().is_some();
    if args.marks {
        eprintln!(
            "subscribed: {subscribers} subscribers over {} servers",
            urls.len()
        );
    }
    let window = Rc::new(Window::new(args));
    let published = Arc::new(AtomicU64::new(0));
    let cpu_before = Rc::new(std::cell::Cell::new(None));
    {
        let (window, cpu_before, marks) = (window.clone(), cpu_before.clone(), args.marks);
        tokio::task::spawn_local(async move {
            tokio::time::sleep_until(window.start).await;
            cpu_before.set(Some(cpu_time()));
            if marks {
                eprintln!("measuring");
                tokio::time::sleep_until(window.end).await;
                eprintln!("measured");
            }
        });
    }

    // One histogram for all the receivers: one each (136 KiB) would be over
    // a gigabyte to zero at 10,000 subscribers, seconds of the load
    // generator's time when the run starts.
    let latency = Rc::new(std::cell::RefCell::new(histogram()));
    let mut tasks = Vec::with_capacity(receivers.len());
    for mut ws in receivers {
        let (window, route, latency) = (window.clone(), route.clone(), latency.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let (mut messages, mut errors) = (0u64, 0u64);
            loop {
                let timeout = tokio::time::sleep_until(window.end + GRACE);
                let item = tokio::select! {
                    item = next_data(&mut ws) => item,
                    () = timeout => break,
                };
                let Some(Ok(message)) = item else {
                    errors += 1;
                    break;
                };
                let Some((_, nanos)) = route.delivered(&message) else {
                    continue;
                };
                let sent = epoch + Duration::from_nanos(nanos);
                if window.measuring(sent) {
                    record(&mut latency.borrow_mut(), sent.elapsed());
                    messages += 1;
                    window.counted.fetch_add(1, Ordering::Relaxed);
                }
                if sent >= window.end {
                    break;
                }
            }
            let _ = ws.close(CloseCode::NORMAL, "").await;
            (messages, errors)
        }));
    }

    // The publishers: on a schedule with --rate (the rate shared between
    // them, their turns interleaved), else one message in flight each.
    let count = publishers.len() as u64;
    let interval = args.rate.map(|rate| Duration::from_secs_f64(1.0 / rate));
    let first = Instant::now();
    let mut publishing = Vec::with_capacity(publishers.len());
    for (index, ws) in publishers.into_iter().enumerate() {
        let publisher = Publisher {
            route: route.clone(),
            size: args.size,
            epoch,
            window: window.clone(),
            published: published.clone(),
            index: index as u64,
            count,
        };
        let schedule = interval.map(|interval| {
            let start = first + interval * index as u32;
            (start, interval * count as u32)
        });
        publishing.push(tokio::task::spawn_local(publisher.run(ws, schedule)));
    }
    let mut publisher_errors = 0;
    for task in publishing {
        publisher_errors += task.await?;
    }
    let (mut messages, mut errors) = (0, publisher_errors);
    for task in tasks {
        let (delivered, failed) = task.await?;
        messages += delivered;
        errors += failed;
    }
    let cpu = cpu_time().saturating_sub(cpu_before.get().unwrap_or_default());
    let latency = latency.borrow().clone();
    Ok(Report {
        messages,
        published: published.load(Ordering::Relaxed),
        seconds: args.duration,
        latency,
        errors,
        client_cpu_percent: 100.0 * cpu.as_secs_f64() / args.duration,
        deflate,
        http2_connections: args.http2.then(|| pool.count()),
    })
}

/// One publisher of a fan-out run: publications `index`, `index + count`,
/// `index + 2 * count` ... of the run's `count` publishers.
struct Publisher {
    route: Route,
    size: usize,
    epoch: Instant,
    window: Rc<Window>,
    published: Arc<AtomicU64>,
    index: u64,
    count: u64,
}

impl Publisher {
    /// Publishes through `ws` until the window ends: on `schedule` (the
    /// first publication's time and the interval) if there is one, else the
    /// next publication when the broadcast brings the last one back. Its
    /// reader runs beside it either way, so that what comes back (the
    /// publications, the hub's replies) never piles up unread. Returns the
    /// errors.
    async fn run(self, ws: Socket, schedule: Option<(Instant, Duration)>) -> u64 {
        let (mut reader, mut writer) = ws.split();
        let (returned_tx, mut returned) = tokio::sync::mpsc::unbounded_channel::<u64>();
        let reading = {
            let (route, end) = (self.route.clone(), self.window.end);
            tokio::task::spawn_local(async move {
                loop {
                    let timeout = tokio::time::sleep_until(end + GRACE);
                    let item = tokio::select! {
                        item = reader.next() => item,
                        () = timeout => break,
                    };
                    match item {
                        Some(Ok(message)) => {
                            if let Some((seq, _)) = route.delivered(&message) {
                                let _ = returned_tx.send(seq);
                            }
                        }
                        _ => break,
                    }
                }
            })
        };
        let mut errors = 0;
        let mut seq = self.index;
        let mut next = schedule.map(|(first, _)| first);
        loop {
            if let (Some(at), Some((_, interval))) = (next.as_mut(), schedule) {
                tokio::time::sleep_until(*at).await;
                *at += interval;
            }
            let now = Instant::now();
            let message =
                self.route
                    .publication(seq, (now - self.epoch).as_nanos() as u64, self.size);
            if writer.send(message).await.is_err() {
                errors += 1;
                break;
            }
            if self.window.measuring(now) {
                self.published.fetch_add(1, Ordering::Relaxed);
            }
            if now >= self.window.end {
                break;
            }
            if schedule.is_none() {
                // Wait for this publication to come back (earlier ones, and
                // the other publishers', may arrive first).
                loop {
                    match returned.recv().await {
                        Some(back) if back % self.count == self.index && back >= seq => break,
                        Some(_) => {}
                        None => {
                            errors += 1;
                            break;
                        }
                    }
                }
                if errors > 0 {
                    break;
                }
            }
            seq += self.count;
        }
        let _ = writer.close(CloseCode::NORMAL, "").await;
        let _ = reading.await;
        errors
    }
}
