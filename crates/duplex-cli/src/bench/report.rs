//! What a run measured, as a table or as JSON, and the measuring tools the
//! loads share: the latency histogram and the process's CPU time.

use std::time::Duration;

use hdrhistogram::Histogram;

use super::Args;

/// What a run measured.
pub(super) struct Report {
    /// Messages counted during the measurement window: round trips, or (fan-out)
    /// deliveries.
    pub(super) messages: u64,
    /// Fan-out: messages published during the window.
    pub(super) published: u64,
    pub(super) seconds: f64,
    pub(super) latency: Histogram<u64>,
    pub(super) errors: u64,
    pub(super) client_cpu_percent: f64,
    pub(super) deflate: bool,
    /// With --http2: the TCP connections the WebSockets shared.
    pub(super) http2_connections: Option<usize>,
}

impl Report {
    pub(super) fn rate(&self) -> f64 {
        self.messages as f64 / self.seconds
    }

    pub(super) fn percentile(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64
    }

    pub(super) fn json(&self, args: &Args) -> serde_json::Value {
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

    pub(super) fn print(&self, args: &Args) {
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

/// An empty latency histogram, in microseconds.
pub(super) fn histogram() -> Histogram<u64> {
    // 1 µs to 1 minute, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Adds one latency, clamped to the histogram's bounds.
pub(super) fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let micros = (latency.as_micros() as u64).clamp(1, 60_000_000);
    histogram.saturating_record(micros);
}

/// Process CPU time (user + system) so far.
pub(super) fn cpu_time() -> Duration {
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
