//! `crowd`: many clients of a duplex hub (`duplex serve`'s `/ws`) in one
//! process, driven one command line at a time from stdin, for the density,
//! storm and memory benchmarks (bench/density.py).
//!
//! ```text
//! crowd --url ws://HOST:PORT/ws --clients N [--channel CHANNEL]
//!       [--bind IP[,IP...]] [--concurrency C]
//! ```
//!
//! Every answer is one JSON object on one line of stdout. The commands:
//!
//! - `connect`: every client connects at once (at most C handshakes under
//!   way, default all), and subscribes to CHANNEL if one is given: with
//!   `since` its last offset when it was subscribed before, so a
//!   reconnection recovers what it missed. Answers
//!   `{"event":"connected","clients":N,"seconds":S,"errors":E,"recovered":R}`
//!   once the last is subscribed: S from the command, R the publications
//!   that the subscriptions returned.
//! - `wait OFFSET [SECS]`: answers `{"event":"reached",...}` once every
//!   client has received the publication at OFFSET (or later), with the
//!   wall-clock time (nanoseconds since the epoch) when the first and the
//!   last had it, and how many had not after SECS (default 60). A client
//!   that had it before the command counts with the time it got its last
//!   offset: exact when publications are waited for one at a time.
//! - `drop`: every connection is dropped at once, without a closing
//!   handshake: reset (RST), as a failing network or a restarting proxy
//!   does; answers `{"event":"dropped"}`.
//! - `quit`, or the end of stdin: exits.
//!
//! Connections go from the `--bind` addresses in turn (127.0.0.2,
//! 127.0.0.3 ...), so that many clients need not share one source address's
//! ports. The open-file limit is raised to the hard limit first.

use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use duplex::{ClientBuilder, Message};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpSocket;
use tokio::sync::{Notify, Semaphore, watch};

const USAGE: &str = "usage: crowd --url ws://HOST:PORT/ws --clients N [--channel CHANNEL] \
                     [--bind IP[,IP...]] [--concurrency C]";

/// How long one client gets to connect and subscribe.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(120);

/// Errors printed on stderr per command, at most (the rest are counted).
const ERRORS_SHOWN: usize = 5;

/// What `crowd` was told.
struct Args {
    url: String,
    addr: SocketAddr,
    clients: usize,
    channel: Option<String>,
    binds: Vec<IpAddr>,
    concurrency: usize,
}

/// What the clients share with the command loop.
struct Crowd {
    args: Args,
    /// Each client's last offset received, and when (nanoseconds since the
    /// epoch).
    last: Vec<Cell<u64>>,
    last_at: Vec<Cell<u64>>,
    /// Whether each client was ever subscribed (then it recovers with since).
    subscribed: Vec<Cell<bool>>,
    /// Clients connected and subscribed, and failed, in this `connect`.
    connected: Cell<usize>,
    failed: Cell<usize>,
    recovered: Cell<u64>,
    /// The offset `wait` waits for, and how many clients have it.
    target: Cell<u64>,
    reached: Vec<Cell<bool>>,
    reached_count: Cell<usize>,
    first_ns: Cell<u64>,
    last_ns: Cell<u64>,
    /// Woken when a client connects, fails or reaches the target.
    progress: Notify,
    /// Bumped by `drop`: every client lets its connection go.
    generation: watch::Sender<u64>,
}

fn main() {
    let args = match parse(std::env::args().skip(1).collect()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("crowd: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = loadkit::raise_nofile(args.clients as u64 + 64, "the clients") {
        eprintln!("crowd: {e}");
        std::process::exit(1);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let local = tokio::task::LocalSet::new();
    if let Err(e) = local.block_on(&runtime, run(args)) {
        eprintln!("crowd: {e}");
        std::process::exit(1);
    }
}

fn parse(argv: Vec<String>) -> Result<Args, String> {
    let mut url = None;
    let mut clients = None;
    let mut channel = None;
    let mut binds = Vec::new();
    let mut concurrency = None;
    let mut argv = argv.into_iter();
    while let Some(flag) = argv.next() {
        let mut value = || argv.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => url = Some(value()?),
            "--clients" => clients = Some(loadkit::count("clients", &value()?)?),
            "--channel" => channel = Some(value()?),
            "--concurrency" => concurrency = Some(loadkit::count("concurrency", &value()?)?),
            "--bind" => {
                for ip in value()?.split(',') {
                    binds.push(
                        ip.parse()
                            .map_err(|_| format!("--bind: {ip:?} is not an IP address"))?,
                    );
                }
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let url = url.ok_or("--url is required")?;
    let clients = clients.ok_or("--clients is required")?;
    let authority = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("{url:?} is not a ws:// URL"))?
        .split('/')
        .next()
        .unwrap_or_default();
    let addr = authority
        .parse()
        .map_err(|_| format!("the URL's host {authority:?} is not IP:PORT"))?;
    Ok(Args {
        url,
        addr,
        clients,
        channel,
        binds,
        concurrency: concurrency.unwrap_or(clients),
    })
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn say(value: Value) {
    println!("{value}");
}

async fn run(args: Args) -> Result<(), String> {
    let n = args.clients;
    let crowd = Rc::new(Crowd {
        args,
        last: (0..n).map(|_| Cell::new(0)).collect(),
        last_at: (0..n).map(|_| Cell::new(0)).collect(),
        subscribed: (0..n).map(|_| Cell::new(false)).collect(),
        connected: Cell::new(0),
        failed: Cell::new(0),
        recovered: Cell::new(0),
        target: Cell::new(u64::MAX),
        reached: (0..n).map(|_| Cell::new(false)).collect(),
        reached_count: Cell::new(0),
        first_ns: Cell::new(0),
        last_ns: Cell::new(0),
        progress: Notify::new(),
        generation: watch::channel(0).0,
    });
    say(json!({"event": "ready", "clients": n}));
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines
        .next_line()
        .await
        .map_err(|e| format!("reading stdin: {e}"))?
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["connect"] => connect_all(&crowd).await,
            ["wait", offset, rest @ ..] => {
                let offset = offset
                    .parse()
                    .map_err(|_| format!("wait: {offset:?} is not an offset"))?;
                let secs = match rest.first() {
                    Some(s) => s
                        .parse()
                        .map_err(|_| format!("wait: {s:?} is not seconds"))?,
                    None => 60.0,
                };
                wait(&crowd, offset, Duration::from_secs_f64(secs)).await;
            }
            ["drop"] => {
                crowd.generation.send_modify(|g| *g += 1);
                // Let every client task see it and drop its connection.
                tokio::task::yield_now().await;
                say(json!({"event": "dropped"}));
            }
            ["quit"] => break,
            [] => {}
            _ => return Err(format!("unknown command {line:?}")),
        }
    }
    Ok(())
}

/// `connect`: all clients at once; answers when the last is subscribed.
async fn connect_all(crowd: &Rc<Crowd>) {
    let started = Instant::now();
    crowd.connected.set(0);
    crowd.failed.set(0);
    crowd.recovered.set(0);
    let permits = Rc::new(Semaphore::new(crowd.args.concurrency));
    let generation = *crowd.generation.borrow();
    for index in 0..crowd.args.clients {
        let (crowd, permits) = (crowd.clone(), permits.clone());
        tokio::task::spawn_local(async move {
            let permit = permits.acquire().await;
            let session = tokio::time::timeout(CONNECT_TIMEOUT, open(&crowd, index)).await;
            drop(permit);
            let ws = match session {
                Ok(Ok(ws)) => ws,
                Ok(Err(e)) => return fail(&crowd, index, &e),
                Err(_) => return fail(&crowd, index, "timed out connecting and subscribing"),
            };
            crowd.connected.set(crowd.connected.get() + 1);
            crowd.progress.notify_one();
            receive(&crowd, index, ws, generation).await;
        });
    }
    loop {
        let notified = crowd.progress.notified();
        if crowd.connected.get() + crowd.failed.get() >= crowd.args.clients {
            break;
        }
        notified.await;
    }
    say(json!({
        "event": "connected",
        "clients": crowd.connected.get(),
        "seconds": started.elapsed().as_secs_f64(),
        "errors": crowd.failed.get(),
        "recovered": crowd.recovered.get(),
    }));
}

fn fail(crowd: &Crowd, index: usize, why: &str) {
    let failed = crowd.failed.get() + 1;
    crowd.failed.set(failed);
    if failed <= ERRORS_SHOWN {
        eprintln!("crowd: client {index}: {why}");
    }
    crowd.progress.notify_one();
}

type Socket = duplex::WebSocket<tokio::net::TcpStream>;

/// Connects client `index` and subscribes it (recovering with `since` if it
/// was subscribed before).
async fn open(crowd: &Crowd, index: usize) -> Result<Socket, String> {
    let args = &crowd.args;
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    // Dropped connections are reset, not closed: no TIME_WAIT left on this
    // side for every dropped connection, whose ports the reconnection
    // storm would then have to search past.
    socket
        .set_zero_linger()
        .map_err(|e| format!("SO_LINGER: {e}"))?;
    if !args.binds.is_empty() {
        let ip = args.binds[index % args.binds.len()];
        // The port is chosen at connect(), for this destination: bound
        // first to port 0, each socket would need a port no other socket of
        // that address holds, TIME_WAIT ones included, and after a storm of
        // dropped connections the kernel's search for one takes seconds.
        let yes: libc::c_int = 1;
        // SAFETY: the descriptor is open; the option value is a c_int.
        let set = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&socket),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&raw const yes).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if set != 0 {
            return Err(format!(
                "IP_BIND_ADDRESS_NO_PORT: {}",
                std::io::Error::last_os_error()
            ));
        }
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| format!("bind {ip}: {e}"))?;
    }
    let tcp = socket
        .connect(args.addr)
        .await
        .map_err(|e| format!("connect to {}: {e}", args.addr))?;
    let _ = tcp.set_nodelay(true);
    // No permessage-deflate: a compressor per client (zlib's state, a
    // quarter of a megabyte zeroed on its first message) would make the
    // load generator, not the server, the limit of a storm.
    let mut ws = ClientBuilder::new(&args.url)
        .no_deflate()
        .connect_on(tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let Some(channel) = &args.channel else {
        return Ok(ws);
    };
    let mut request = json!({"id": 1, "op": "subscribe", "channel": channel});
    if crowd.subscribed[index].get() {
        request["since"] = json!({"offset": crowd.last[index].get()});
    }
    ws.send(Message::text(request.to_string()))
        .await
        .map_err(|e| format!("sending the subscription: {e}"))?;
    loop {
        let message = match ws.next().await {
            Some(Ok(message)) => message,
            Some(Err(e)) => return Err(format!("waiting for the subscription: {e}")),
            None => return Err("the hub closed the connection while subscribing".into()),
        };
        let Message::Text(text) = message else {
            continue;
        };
        let reply: Value =
            serde_json::from_str(&text).map_err(|e| format!("a reply that is not JSON: {e}"))?;
        if reply["id"] != json!(1) {
            // A push that came first.
            note_push(crowd, index, &reply);
            continue;
        }
        if reply["ok"] != json!(true) {
            return Err(format!("subscription refused: {}", reply["error"]));
        }
        let result = &reply["result"];
        if let Some(publications) = result["publications"].as_array() {
            crowd
                .recovered
                .set(crowd.recovered.get() + publications.len() as u64);
        }
        if let Some(offset) = result["offset"].as_u64() {
            reach(crowd, index, offset);
        }
        crowd.subscribed[index].set(true);
        return Ok(ws);
    }
}

/// Reads until the connection ends or `drop` bumps the generation.
async fn receive(crowd: &Crowd, index: usize, mut ws: Socket, generation: u64) {
    let mut dropped = crowd.generation.subscribe();
    loop {
        if *dropped.borrow_and_update() != generation {
            return;
        }
        let message = tokio::select! {
            message = ws.next() => message,
            _ = dropped.changed() => return,
        };
        match message {
            Some(Ok(Message::Text(text))) => match push_offset(&text) {
                Some(offset) => reach(crowd, index, offset),
                None => {
                    if let Ok(push) = serde_json::from_str::<Value>(&text) {
                        note_push(crowd, index, &push);
                    }
                }
            },
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return,
        }
    }
}

/// The offset of a publication push as the hub writes it
/// (`{"push":"message","channel":"...","offset":N,...}`), found without
/// parsing the whole message, so that reading 19,000 of them is not the
/// load generator's bottleneck; None for anything else (then parsed).
fn push_offset(text: &str) -> Option<u64> {
    let rest = text.strip_prefix(r#"{"push":"message","channel":""#)?;
    // Channel names hold no quote: the first `","offset":` ends the name.
    let at = rest.find(r#"","offset":"#)? + r#"","offset":"#.len();
    let digits = rest[at..].bytes().take_while(u8::is_ascii_digit).count();
    rest[at..at + digits].parse().ok()
}

fn note_push(crowd: &Crowd, index: usize, push: &Value) {
    if push["push"] == "message"
        && let Some(offset) = push["offset"].as_u64()
    {
        reach(crowd, index, offset);
    }
}

/// Client `index` has everything up to `offset`.
fn reach(crowd: &Crowd, index: usize, offset: u64) {
    let now = now_ns();
    if offset > crowd.last[index].get() {
        crowd.last[index].set(offset);
        crowd.last_at[index].set(now);
    }
    if offset >= crowd.target.get() && !crowd.reached[index].get() {
        crowd.reached[index].set(true);
        arrived(crowd, now);
        crowd.reached_count.set(crowd.reached_count.get() + 1);
        crowd.progress.notify_one();
    }
}

/// Widens the first and last arrival times of the offset waited for.
fn arrived(crowd: &Crowd, at: u64) {
    if crowd.first_ns.get() == 0 || at < crowd.first_ns.get() {
        crowd.first_ns.set(at);
    }
    crowd.last_ns.set(crowd.last_ns.get().max(at));
}

/// `wait OFFSET SECS`.
async fn wait(crowd: &Crowd, offset: u64, limit: Duration) {
    crowd.target.set(offset);
    crowd.reached_count.set(0);
    crowd.first_ns.set(0);
    crowd.last_ns.set(0);
    // Clients that have it already (a publication is often read before
    // the command to wait for it arrives) count with the time they got
    // their last offset: that one, when publications are waited for one at
    // a time.
    let mut already = 0;
    for index in 0..crowd.args.clients {
        let has = crowd.last[index].get() >= offset;
        crowd.reached[index].set(has);
        if has {
            already += 1;
            arrived(crowd, crowd.last_at[index].get());
        }
    }
    crowd.reached_count.set(already);
    let deadline = tokio::time::Instant::now() + limit;
    let everyone = crowd.connected.get();
    loop {
        let notified = crowd.progress.notified();
        if crowd.reached_count.get() >= everyone {
            break;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            break;
        }
    }
    say(json!({
        "event": "reached",
        "offset": offset,
        "clients": crowd.reached_count.get(),
        "already": already,
        "missing": everyone.saturating_sub(crowd.reached_count.get()),
        "first_ns": crowd.first_ns.get(),
        "last_ns": crowd.last_ns.get(),
    }));
    crowd.target.set(u64::MAX);
}
