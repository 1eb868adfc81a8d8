//! The documents' counters, and their Prometheus text.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// The documents' counters, rendered with the hub's metrics.
#[derive(Debug, Default)]
pub struct DocMetrics {
    /// Documents loaded now.
    pub loaded: AtomicU64,
    /// Documents loaded from the store since start.
    pub loads: AtomicU64,
    /// Connections to `/docs` open now.
    pub connections: AtomicU64,
    /// Messages received on `/docs`.
    pub messages_in: AtomicU64,
    /// Updates stored and broadcast.
    pub updates: AtomicU64,
    /// Frames queued to `/docs` connections.
    pub messages_out: AtomicU64,
    /// Updates refused: malformed, not applicable, too big, read-only.
    pub refused: AtomicU64,
    /// Snapshots written.
    pub compactions: AtomicU64,
}

impl DocMetrics {
    /// Prometheus text of every counter.
    pub fn render(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        for (name, kind, help, value) in [
            (
                "duplex_docs_loaded",
                "gauge",
                "Documents loaded.",
                get(&self.loaded),
            ),
            (
                "duplex_docs_loads_total",
                "counter",
                "Documents loaded from storage.",
                get(&self.loads),
            ),
            (
                "duplex_docs_connections",
                "gauge",
                "Connections to /docs.",
                get(&self.connections),
            ),
            (
                "duplex_docs_messages_in_total",
                "counter",
                "y-websocket messages received.",
                get(&self.messages_in),
            ),
            (
                "duplex_docs_updates_total",
                "counter",
                "Document updates stored and broadcast.",
                get(&self.updates),
            ),
            (
                "duplex_docs_messages_out_total",
                "counter",
                "y-websocket messages queued to clients.",
                get(&self.messages_out),
            ),
            (
                "duplex_docs_refused_total",
                "counter",
                "Updates refused (malformed, not applicable, too big, read-only).",
                get(&self.refused),
            ),
            (
                "duplex_docs_compactions_total",
                "counter",
                "Document snapshots written.",
                get(&self.compactions),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}
