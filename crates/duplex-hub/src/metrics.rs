//! Counters and a latency histogram, rendered as Prometheus text
//! (`GET /metrics`).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The upper bounds of the publish latency histogram, in seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A latency histogram with the buckets of [`LATENCY_BUCKETS`].
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one latency.
    pub fn observe(&self, latency: Duration) {
        let secs = latency.as_secs_f64();
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            if secs <= *bound {
                bump(bucket);
            }
        }
        bump(&self.count);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Appends the histogram's Prometheus text, as `name`.
    fn render(&self, out: &mut String, name: &str, help: &str) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", get(bucket));
        }
        let count = get(&self.count);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = get(&self.sum_micros) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// The hub's counters; every field is updated without locks.
#[derive(Debug, Default)]
pub struct Metrics {
    /// WebSocket connections open now.
    pub connections: AtomicU64,
    /// WebSocket connections accepted since start.
    pub connections_total: AtomicU64,
    /// WebSocket requests refused (origin, token, bad handshake).
    pub connections_refused: AtomicU64,
    /// Subscriptions now, over every connection.
    pub subscriptions: AtomicU64,
    /// Protocol messages received from clients.
    pub messages_in: AtomicU64,
    /// Frames queued to clients: replies and pushes.
    pub messages_out: AtomicU64,
    /// Publications stored through this node (clients, the API, the feed).
    pub publications: AtomicU64,
    /// Publications delivered to this node's subscribers of their channel
    /// (from any node), once per publication.
    pub deliveries: AtomicU64,
    /// Connections closed as slow consumers (a full send queue).
    pub dropped: AtomicU64,
    /// Requests refused for the rate limit.
    pub rate_limited: AtomicU64,
    /// Tokens replaced by `refresh`.
    pub token_refreshes: AtomicU64,
    /// Connections closed because their token expired (4001).
    pub tokens_expired: AtomicU64,
    /// Error replies sent.
    pub errors: AtomicU64,
    /// From a publish request to its publication stored.
    pub publish_latency: Histogram,
    /// Round trips of Redis commands (the Redis engine).
    pub engine_latency: Histogram,
    /// Pub/sub connections to Redis made again after a loss.
    pub engine_reconnects: AtomicU64,
    /// Gaps in a channel's offsets filled from history.
    pub engine_gaps_filled: AtomicU64,
    /// Engine requests that failed with `unavailable`.
    pub engine_unavailable: AtomicU64,
    /// Recovery reads of history that went to the engine.
    pub history_reads: AtomicU64,
    /// Recoveries answered by an identical read already under way.
    pub history_reads_merged: AtomicU64,
    /// Tokens refused, by [`Refusal`](crate::auth::Refusal) (in the order of
    /// `Refusal::ALL`).
    pub token_refusals: [AtomicU64; crate::auth::Refusal::ALL.len()],
    /// Fetches of the identity provider's JWKS.
    pub jwks_fetches: AtomicU64,
    /// Fetches of the JWKS that failed.
    pub jwks_fetch_failures: AtomicU64,
    /// Backend hook requests, by op and outcome (see [`crate::hooks`]).
    pub hook_requests: crate::hooks::HookCounters,
    /// Round trips of backend hook requests.
    pub hook_latency: Histogram,
}

/// Adds one to a counter.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Takes one from a gauge, never below zero.
pub fn drop_one(gauge: &AtomicU64) {
    let _ = gauge.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(1))
    });
}

impl Metrics {
    /// Counts a refused token.
    pub fn token_refused(&self, refusal: crate::auth::Refusal) {
        bump(&self.token_refusals[refusal.index()]);
    }

    /// Records the latency of one publication, from the request to the
    /// moment it was stored.
    pub fn observe_publish(&self, latency: Duration) {
        self.publish_latency.observe(latency);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::with_capacity(2048);
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        };
        metric(
            "duplex_connections",
            "gauge",
            "WebSocket connections open.",
            get(&self.connections),
        );
        metric(
            "duplex_connections_total",
            "counter",
            "WebSocket connections accepted.",
            get(&self.connections_total),
        );
        metric(
            "duplex_connections_refused_total",
            "counter",
            "WebSocket requests refused (origin, token, handshake).",
            get(&self.connections_refused),
        );
        metric(
            "duplex_subscriptions",
            "gauge",
            "Channel subscriptions, over every connection.",
            get(&self.subscriptions),
        );
        metric(
            "duplex_messages_in_total",
            "counter",
            "Protocol messages received from clients.",
            get(&self.messages_in),
        );
        metric(
            "duplex_messages_out_total",
            "counter",
            "Frames queued to clients (replies and pushes).",
            get(&self.messages_out),
        );
        metric(
            "duplex_publications_total",
            "counter",
            "Publications stored through this node.",
            get(&self.publications),
        );
        metric(
            "duplex_deliveries_total",
            "counter",
            "Publications delivered to this node's subscribers (from any node).",
            get(&self.deliveries),
        );
        metric(
            "duplex_engine_reconnects_total",
            "counter",
            "Redis pub/sub connections made again after a loss.",
            get(&self.engine_reconnects),
        );
        metric(
            "duplex_engine_gaps_filled_total",
            "counter",
            "Gaps in a channel's offsets filled from history.",
            get(&self.engine_gaps_filled),
        );
        metric(
            "duplex_engine_unavailable_total",
            "counter",
            "Engine requests that failed with unavailable.",
            get(&self.engine_unavailable),
        );
        metric(
            "duplex_history_reads_total",
            "counter",
            "Recovery reads of history that went to the engine.",
            get(&self.history_reads),
        );
        metric(
            "duplex_history_reads_merged_total",
            "counter",
            "Recoveries answered by an identical read already under way.",
            get(&self.history_reads_merged),
        );
        metric(
            "duplex_dropped_connections_total",
            "counter",
            "Connections closed as slow consumers (send queue full).",
            get(&self.dropped),
        );
        metric(
            "duplex_rate_limited_total",
            "counter",
            "Requests refused for the rate limit.",
            get(&self.rate_limited),
        );
        metric(
            "duplex_token_refreshes_total",
            "counter",
            "Connection tokens replaced by a refresh.",
            get(&self.token_refreshes),
        );
        metric(
            "duplex_tokens_expired_total",
            "counter",
            "Connections closed with 4001: their token expired without a refresh.",
            get(&self.tokens_expired),
        );
        metric(
            "duplex_errors_total",
            "counter",
            "Error replies sent.",
            get(&self.errors),
        );

        metric(
            "duplex_jwks_fetches_total",
            "counter",
            "Fetches of the identity provider's JWKS.",
            get(&self.jwks_fetches),
        );
        metric(
            "duplex_jwks_fetch_failures_total",
            "counter",
            "Fetches of the JWKS that failed.",
            get(&self.jwks_fetch_failures),
        );
        let _ = writeln!(
            out,
            "# HELP duplex_token_refusals_total Tokens refused, by the check that failed.\n\
             # TYPE duplex_token_refusals_total counter"
        );
        for (refusal, count) in crate::auth::Refusal::ALL.iter().zip(&self.token_refusals) {
            let _ = writeln!(
                out,
                "duplex_token_refusals_total{{reason=\"{}\"}} {}",
                refusal.label(),
                get(count)
            );
        }

        let _ = writeln!(
            out,
            "# HELP duplex_hook_requests_total Backend hook requests, by op and outcome.\n\
             # TYPE duplex_hook_requests_total counter"
        );
        for (op, counts) in crate::hooks::HookOp::ALL.iter().zip(&self.hook_requests) {
            for (outcome, count) in crate::hooks::Outcome::ALL.iter().zip(counts) {
                let _ = writeln!(
                    out,
                    "duplex_hook_requests_total{{op=\"{}\",outcome=\"{}\"}} {}",
                    op.as_str(),
                    outcome.as_str(),
                    get(count)
                );
            }
        }
        self.hook_latency.render(
            &mut out,
            "duplex_hook_latency_seconds",
            "Round trips of backend hook requests.",
        );
        self.publish_latency.render(
            &mut out,
            "duplex_publish_latency_seconds",
            "From a publish request to its publication stored.",
        );
        self.engine_latency.render(
            &mut out,
            "duplex_engine_latency_seconds",
            "Round trips of Redis commands.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::default();
        m.observe_publish(Duration::from_micros(300));
        m.observe_publish(Duration::from_millis(3));
        m.observe_publish(Duration::from_secs(10));
        let text = m.render();
        assert!(text.contains("duplex_publish_latency_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("duplex_publish_latency_seconds_bucket{le=\"0.005\"} 2\n"));
        assert!(text.contains("duplex_publish_latency_seconds_bucket{le=\"2.5\"} 2\n"));
        assert!(text.contains("duplex_publish_latency_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("duplex_publish_latency_seconds_count 3\n"));
        assert!(text.contains("duplex_publish_latency_seconds_sum 10.0033\n"));
    }

    #[test]
    fn gauges_do_not_underflow() {
        let m = Metrics::default();
        drop_one(&m.connections);
        bump(&m.dropped);
        let text = m.render();
        assert!(text.contains("duplex_connections 0\n"));
        assert!(text.contains("duplex_dropped_connections_total 1\n"));
    }
}
