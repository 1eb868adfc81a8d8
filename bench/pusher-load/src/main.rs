//! `pusher-load`: a fan-out load that speaks the Pusher protocol.
//!
//! ```text
//! pusher-load --url ws://HOST:PORT/app/KEY?protocol=7&client=bench&version=1
//!             --api http://HOST:PORT --app-id ID --key KEY --secret SECRET
//!             --subscribers N --rate R --duration SECS
//!             [--channel NAME] [--size BYTES] [--warmup SECS]
//!             [--marks] [--json] [--hold]
//! ```
//!
//! N subscribers (Pusher protocol 7 over WebSocket, at most 200 connecting at
//! a time) subscribe to one public channel. Then publications go through the
//! Pusher HTTP events API (`POST /apps/{app_id}/events`, signed with the
//! app's key and secret, over one kept-alive connection) at R a second on an
//! absolute schedule, for the warm-up and the measurement. Each publication's
//! data is a string carrying its sequence number and its send time
//! (nanoseconds since an epoch of this process), padded to about `--size`
//! bytes, so every subscriber times each delivery from publication to
//! arrival. Deliveries of publications sent inside the measurement window
//! are counted, their latencies kept in one histogram.
//!
//! `--hold` only connects and subscribes the N, prints `subscribed: N` on
//! stderr, answers pings until stdin closes, and closes them: an idle load
//! for a memory measurement.
//!
//! Everything runs on one thread (a current_thread tokio runtime).

mod api;
mod subscriber;

use std::cell::{Cell, RefCell};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::AsyncReadExt;

use subscriber::{Errors, Measure, Target, Window};

const USAGE: &str = "\
usage: pusher-load --url ws://HOST:PORT/app/KEY?protocol=7&client=bench&version=1
                   --api http://HOST:PORT --app-id ID --key KEY --secret SECRET
                   --subscribers N --rate R --duration SECS
                   [--channel NAME] [--size BYTES] [--warmup SECS]
                   [--marks] [--json] [--hold]

Subscribes N Pusher protocol 7 WebSocket clients to one public channel, then
publishes through the Pusher HTTP events API at R a second, and reports the
deliveries and their publish-to-delivery latency.

  --url URL         the WebSocket endpoint (ws:// only)
  --api URL         the HTTP API (http://HOST:PORT)
  --app-id ID       the app's id
  --key KEY         the app's key
  --secret SECRET   the app's secret
  --channel NAME    the channel (default bench)
  --subscribers N   subscribers
  --size BYTES      bytes of data per publication (default 64; e.g. 64, 1K)
  --rate R          publications per second
  --duration SECS   seconds measured
  --warmup SECS     seconds of publishing before measuring (default 1)
  --marks           print `subscribed: N`, `measuring` and `measured` on stderr
  --json            print one JSON object instead of a table
  --hold            connect and subscribe, print `subscribed: N` on stderr,
                    stay idle until stdin closes (needs only --url, --subscribers)";

/// The benchmark's event name.
const EVENT: &str = "bench";

/// Subscribers connecting at the same time.
const CONCURRENCY: usize = 200;

/// Descriptors kept for everything besides the subscribers.
const SPARE_FILES: u64 = 64;

/// Publications waiting for their answers at most; the schedule waits
/// beyond that.
const MAX_IN_FLIGHT: usize = 64;

/// How long after the window a subscriber waits for the last publication.
const GRACE: Duration = Duration::from_secs(2);

/// The largest `--size`.
const MAX_SIZE: usize = 1 << 20;

/// What to do, read from the command line.
struct Args {
    target: Target,
    channel: String,
    subscribers: usize,
    marks: bool,
    json: bool,
    /// `None` with `--hold`.
    publish: Option<Publish>,
}

/// The publishing half of a measured run.
struct Publish {
    api: String,
    app_id: String,
    key: String,
    secret: String,
    size: usize,
    rate: f64,
    duration: f64,
    warmup: f64,
}

/// A command line: a run, or a request for help.
enum Invocation {
    Run(Box<Args>),
    Help,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse(&args) {
        Ok(Invocation::Run(args)) => args,
        Ok(Invocation::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("pusher-load: {e}\n\n{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    match start(&args) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("pusher-load: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the open-file limit, starts the runtime, runs. Returns the errors.
fn start(args: &Args) -> Result<u64, String> {
    loadkit::raise_nofile(
        args.subscribers as u64 + SPARE_FILES,
        &format!("{} subscribers", args.subscribers),
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let local = tokio::task::LocalSet::new();
    runtime.block_on(local.run_until(run(args)))
}

/// Subscribes everyone, then measures or holds. Returns the errors.
async fn run(args: &Args) -> Result<u64, String> {
    let epoch = Instant::now();
    // Checked before anyone connects.
    let publisher = match &args.publish {
        Some(p) => Some(api::Publisher::new(&p.api, &p.app_id, &p.key, &p.secret)?),
        None => None,
    };
    let sockets =
        subscriber::connect_all(&args.target, &args.channel, args.subscribers, CONCURRENCY).await?;
    let (Some(publish), Some(publisher)) = (&args.publish, publisher) else {
        return hold(args, sockets).await;
    };
    if args.marks {
        eprintln!("subscribed: {}", args.subscribers);
    }
    let template = publisher.another();
    let began = Instant::now();
    let start = began + Duration::from_secs_f64(publish.warmup);
    let window = Rc::new(Window {
        start,
        end: start + Duration::from_secs_f64(publish.duration),
    });
    let latency = Rc::new(RefCell::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
            .map_err(|e| format!("cannot make the latency histogram: {e}"))?,
    ));
    let errors = Rc::new(Errors::new());
    let (channel, event): (Rc<str>, Rc<str>) = (args.channel.as_str().into(), EVENT.into());
    let mut tasks = Vec::with_capacity(sockets.len());
    for (index, ws) in sockets.into_iter().enumerate() {
        let measure = Measure {
            channel: channel.clone(),
            event: event.clone(),
            epoch,
            window: window.clone(),
            grace: GRACE,
            latency: latency.clone(),
            errors: errors.clone(),
        };
        tasks.push(tokio::task::spawn_local(subscriber::measure(
            ws,
            measure,
            index + 1,
        )));
    }
    // The marks and the CPU clock, at the window's start and end.
    let cpu = Rc::new(Cell::new((None, None)));
    let clock = {
        let (window, cpu, marks) = (window.clone(), cpu.clone(), args.marks);
        tokio::task::spawn_local(async move {
            tokio::time::sleep_until(window.start.into()).await;
            cpu.set((Some(loadkit::process_cpu()), None));
            if marks {
                eprintln!("measuring");
            }
            tokio::time::sleep_until(window.end.into()).await;
            cpu.set((cpu.get().0, Some(loadkit::process_cpu())));
            if marks {
                eprintln!("measured");
            }
        })
    };

    // The publications, on an absolute schedule, until one is sent at or
    // after the window's end (it tells the subscribers to stop). A server
    // may answer only once it has fanned a publication out: each goes out
    // on an idle connection of the pool, or a new one, without waiting for
    // the answers to the ones before.
    let interval = Duration::from_secs_f64(1.0 / publish.rate);
    let padding: Rc<str> = "x".repeat(publish.size).into();
    let published = Rc::new(Cell::new(0u64));
    let pool = Rc::new(RefCell::new(vec![publisher]));
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut next = began;
    for seq in 0u64.. {
        tokio::time::sleep_until(next.into()).await;
        next += interval;
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return Err("the publications' semaphore closed".into());
        };
        let now = Instant::now();
        let last = now >= window.end;
        let mut publisher = pool
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| template.another());
        let (pool, published, errors, window) = (
            pool.clone(),
            published.clone(),
            errors.clone(),
            window.clone(),
        );
        let (channel, padding, size) = (args.channel.clone(), padding.clone(), publish.size);
        tokio::task::spawn_local(async move {
            let head = format!("seq={seq} at={} ", (now - epoch).as_nanos());
            let data = format!("{head}{}", &padding[..size.saturating_sub(head.len())]);
            match publisher.publish(&channel, EVENT, &data).await {
                Ok(()) if window.measuring(now) => published.set(published.get() + 1),
                Ok(()) => {}
                Err(e) => errors.report(&format!("publication {seq}: {e}")),
            }
            pool.borrow_mut().push(publisher);
            drop(permit);
        });
        if last {
            break;
        }
    }
    // Every answer.
    let _ = in_flight.acquire_many(MAX_IN_FLIGHT as u32).await;
    let published = published.get();
    let mut delivered = 0;
    for task in tasks {
        delivered += task
            .await
            .map_err(|e| format!("a subscriber task failed: {e}"))?;
    }
    let _ = clock.await;
    let client_cpu = match cpu.get() {
        (Some(before), Some(after)) => {
            100.0 * after.saturating_sub(before).as_secs_f64() / publish.duration
        }
        _ => 0.0,
    };
    let latency = latency.borrow();
    let report = Report {
        subscribers: args.subscribers,
        published,
        delivered,
        seconds: publish.duration,
        p50: latency.value_at_quantile(0.5),
        p99: latency.value_at_quantile(0.99),
        max: latency.max(),
        errors: errors.count(),
        client_cpu,
        size: publish.size,
    };
    if args.json {
        println!("{}", report.json());
    } else {
        report.print(args, publish);
    }
    Ok(report.errors)
}

/// `--hold`: keeps the subscriptions until stdin closes. Returns the errors.
async fn hold(args: &Args, sockets: Vec<subscriber::Socket>) -> Result<u64, String> {
    let errors = Rc::new(Errors::new());
    let channel: Rc<str> = args.channel.as_str().into();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(index, ws)| {
            tokio::task::spawn_local(subscriber::hold(
                ws,
                channel.clone(),
                stopped.clone(),
                errors.clone(),
                index + 1,
            ))
        })
        .collect();
    eprintln!("subscribed: {}", args.subscribers);
    let held = Instant::now();
    let mut stdin = tokio::io::stdin();
    let mut buffer = [0u8; 1024];
    while let Ok(n) = stdin.read(&mut buffer).await {
        if n == 0 {
            break;
        }
    }
    let _ = stop.send(true);
    let mut up = 0;
    for task in tasks {
        if task
            .await
            .map_err(|e| format!("a subscriber task failed: {e}"))?
        {
            up += 1;
        }
    }
    eprintln!(
        "held: {up} of {} subscribers for {:.1} s, errors: {}",
        args.subscribers,
        held.elapsed().as_secs_f64(),
        errors.count()
    );
    Ok(errors.count())
}

/// What a measured run counted.
struct Report {
    subscribers: usize,
    published: u64,
    delivered: u64,
    seconds: f64,
    p50: u64,
    p99: u64,
    max: u64,
    errors: u64,
    client_cpu: f64,
    size: usize,
}

impl Report {
    /// The report as one JSON object.
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "subscribers": self.subscribers,
            "size": self.size,
            "duration_s": self.seconds,
            "published": self.published,
            "delivered": self.delivered,
            "expected": self.published * self.subscribers as u64,
            "delivered_per_sec": self.delivered as f64 / self.seconds,
            "latency_us": { "p50": self.p50, "p99": self.p99, "max": self.max },
            "client_cpu_percent": self.client_cpu,
            "errors": self.errors,
        })
    }

    /// The report as a heading and a Markdown table.
    fn print(&self, args: &Args, publish: &Publish) {
        println!(
            "{}: {} subscribers on {:?}, {}-byte data, {} publications/s, {:.1} s",
            args.target.url, self.subscribers, args.channel, self.size, publish.rate, self.seconds
        );
        println!();
        println!(
            "| published | delivered | expected | delivered/s | p50 µs | p99 µs | max µs | client CPU | errors |"
        );
        println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        println!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {:.0}% | {} |",
            self.published,
            self.delivered,
            self.published * self.subscribers as u64,
            self.delivered as f64 / self.seconds,
            self.p50,
            self.p99,
            self.max,
            self.client_cpu,
            self.errors
        );
        if self.client_cpu > 90.0 {
            println!(
                "\nnote: the load used {:.0}% of its core; it may be the limit",
                self.client_cpu
            );
        }
    }
}

/// Reads the command line: `--name VALUE` or `--name=VALUE`, any order.
fn parse(args: &[String]) -> Result<Invocation, String> {
    const SWITCHES: [&str; 3] = ["marks", "json", "hold"];
    const KNOWN: [&str; 11] = [
        "url",
        "api",
        "app-id",
        "key",
        "secret",
        "channel",
        "subscribers",
        "size",
        "rate",
        "duration",
        "warmup",
    ];
    let Some(flags) = loadkit::Flags::parse(args, &KNOWN, &SWITCHES)? else {
        return Ok(Invocation::Help);
    };
    let value = |name: &str| flags.value(name);
    let switch = |name: &str| flags.switch(name);
    let required = |name: &str| flags.required(name);

    let target = Target::parse(required("url")?)?;
    let channel = value("channel").unwrap_or("bench").to_string();
    if channel.is_empty() {
        return Err("--channel is empty".into());
    }
    let subscribers = loadkit::count("subscribers", required("subscribers")?)?;
    let publish = if switch("hold") {
        if let Some(name) = [
            "api", "app-id", "secret", "size", "rate", "duration", "warmup",
        ]
        .into_iter()
        .find(|name| value(name).is_some())
        {
            return Err(format!("--{name} has no use with --hold"));
        }
        None
    } else {
        let size_text = value("size").unwrap_or("64");
        let size = loadkit::parse_size(size_text).map_err(|e| format!("--size: {e}"))?;
        if size > MAX_SIZE {
            return Err(format!("--size {size_text} is over the limit of 1M"));
        }
        let publish = Publish {
            api: required("api")?.to_string(),
            app_id: required("app-id")?.to_string(),
            key: required("key")?.to_string(),
            secret: required("secret")?.to_string(),
            size,
            rate: loadkit::number("rate", required("rate")?, false)?,
            duration: loadkit::number("duration", required("duration")?, false)?,
            warmup: match value("warmup") {
                Some(text) => loadkit::number("warmup", text, true)?,
                None => 1.0,
            },
        };
        if publish.rate > 100_000.0 {
            return Err("--rate is over 100,000 publications per second".into());
        }
        if publish.warmup + publish.duration > 1e6 {
            return Err("--warmup and --duration together are over 1,000,000 seconds".into());
        }
        Some(publish)
    };
    Ok(Invocation::Run(Box::new(Args {
        target,
        channel,
        subscribers,
        marks: switch("marks"),
        json: switch("json"),
        publish,
    })))
}
