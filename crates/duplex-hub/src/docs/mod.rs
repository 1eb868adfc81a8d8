//! Collaborative documents: Yjs documents, kept with `yrs`, served over the
//! y-websocket protocol at `/docs/NAME`, stored in the hub's SQLite, or in
//! Redis when several nodes share it (then every node that has a document
//! loaded hears the updates and awareness of the others).
//!
//! The npm `y-websocket` provider connects to `ws://HOST/docs` with the
//! document name as its room, exactly as to the y-websocket server: on
//! connect the server sends SyncStep1 and the awareness states it knows,
//! answers SyncStep1 with SyncStep2, applies and broadcasts updates, relays
//! awareness, and removes a connection's awareness states when it leaves.
//!
//! - [`sync`]: the wire codec (on `yrs`'s lib0 encoding);
//! - [`awareness`]: who is there, with the rules of y-protocols;
//! - [`store`]: the update log and snapshots in SQLite; `log`: SQLite or
//!   Redis (`crate::engine::redis::RedisDocs`);
//! - `doc`: one task per loaded document (validate, store, broadcast;
//!   unload after the last client);
//! - [`endpoint`]: the HTTP route and the WebSocket connections.
//!
//! Access follows the hub's rules: the same Origin policy as `/ws`, a token
//! in `?token=` (required if `auth.required`), and its `docs` claim, a map of
//! document names or `prefix*` patterns to `"read"` or `"write"`
//! ([`access`]). Updates from a read-only connection are ignored, counted and
//! logged; the connection stays open and keeps receiving updates.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use duplex::CloseCode;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::metrics::bump;
use crate::registry::Outbox;

pub mod awareness;
mod doc;
pub mod endpoint;
#[cfg(test)]
mod lifecycle_tests;
mod log;
pub mod store;
pub mod sync;

use doc::Cmd;
pub use doc::MAX_AWARENESS_CLIENTS;
use log::DocLog;
use store::{DocStore, StoreError};

use crate::engine::redis::{DocEvent, RedisDocs};

/// Commands queued for one document, at most; connections wait beyond.
const MAILBOX: usize = 1024;
/// The longest document name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// `[docs]`: collaborative documents.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DocsConfig {
    /// Whether `/docs/NAME` is served. Default: true.
    pub enabled: bool,
    /// The most bytes a document may take in storage (its snapshot and the
    /// updates after it); an update beyond closes its connection with 1009.
    /// Default: 8 MiB.
    pub max_document_size: usize,
    /// The largest message a client may send to `/docs`, in bytes (one
    /// update, or the SyncStep2 of a client coming back with offline edits);
    /// more closes the connection with 1009. Default: 1 MiB.
    pub max_message_size: usize,
    /// Messages (updates and awareness) a connection may send per second on
    /// average; beyond the burst the connection is closed with 1008 (the
    /// provider reconnects and resynchronizes, losing nothing). Default: 100.
    pub messages_per_second: u32,
    /// Messages a connection may send in a burst. Default: 500.
    pub burst: u32,
    /// Milliseconds a document stays loaded after its last client leaves.
    /// Default: 30000.
    pub unload_after_ms: u64,
    /// Updates stored before they are folded into a snapshot. Default: 500.
    pub compact_every: u64,
}

impl Default for DocsConfig {
    fn default() -> Self {
        DocsConfig {
            enabled: true,
            max_document_size: 8 << 20,
            max_message_size: 1 << 20,
            messages_per_second: 100,
            burst: 500,
            unload_after_ms: 30_000,
            compact_every: 500,
        }
    }
}

impl DocsConfig {
    /// Checks values that parse but make no sense.
    ///
    /// # Errors
    ///
    /// A message naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_message_size < 1024 {
            return Err("docs.max_message_size must be at least 1024 bytes".into());
        }
        if self.max_document_size < self.max_message_size {
            return Err("docs.max_document_size must be at least docs.max_message_size".into());
        }
        if self.messages_per_second == 0 || self.burst == 0 {
            return Err("docs.messages_per_second and docs.burst must be at least 1".into());
        }
        if self.compact_every == 0 {
            return Err("docs.compact_every must be at least 1".into());
        }
        Ok(())
    }
}

/// What a connection may do with a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Receive the document and its updates, send awareness; updates sent
    /// are ignored.
    Read,
    /// Edit too.
    Write,
}

/// The access a token's claims give to document `name`: without a `docs`
/// claim, write access to every document; with one (an object of names or
/// `prefix*` patterns to `"read"` or `"write"`), the exact name, else the
/// longest matching pattern, decides; `None` if nothing matches.
pub fn access(claims: Option<&crate::auth::Claims>, name: &str) -> Option<Access> {
    let Some(docs) = claims.and_then(|c| c.docs.as_ref()) else {
        return Some(Access::Write);
    };
    let rules = docs.as_object()?;
    let parse = |v: &Value| match v.as_str() {
        Some("read") => Some(Access::Read),
        Some("write") => Some(Access::Write),
        _ => None,
    };
    if let Some(rule) = rules.get(name) {
        return parse(rule);
    }
    rules
        .iter()
        .filter_map(|(pattern, rule)| {
            let prefix = pattern.strip_suffix('*')?;
            name.starts_with(prefix).then_some((prefix.len(), rule))
        })
        .max_by_key(|(len, _)| *len)
        .and_then(|(_, rule)| parse(rule))
}

/// Whether `name` is a document name: 1 to 128 of `A-Z a-z 0-9 - _ .`, not
/// starting with `.`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

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

/// One connection, as its document sees it.
pub(crate) struct Peer {
    pub(crate) id: u64,
    pub(crate) outbox: Outbox,
    pub(crate) writable: bool,
}

impl Peer {
    /// Asks the connection to close with `code` and `reason` (the first
    /// request wins).
    pub(crate) fn close(&self, code: CloseCode, reason: String) {
        self.outbox.close(code, reason);
    }
}

struct Entry {
    generation: u64,
    commands: mpsc::Sender<Cmd>,
}

/// The loaded documents and their store.
pub struct Docs {
    config: DocsConfig,
    log: DocLog,
    metrics: Arc<DocMetrics>,
    loaded: Mutex<HashMap<String, Entry>>,
    generations: AtomicU64,
    shut: CancellationToken,
}

impl std::fmt::Debug for Docs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Docs")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Why a connection could not join its document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinError(pub &'static str);

impl Docs {
    /// Opens the documents' tables in `data_dir/hub.sqlite3` (the folder must
    /// exist), or, given `redis`, keeps them in Redis; snapshots are dated
    /// by `clock`.
    ///
    /// # Errors
    ///
    /// The database could not be opened.
    pub fn open(
        config: DocsConfig,
        data_dir: &Path,
        redis: Option<RedisDocs>,
        clock: Clock,
    ) -> Result<Arc<Docs>, StoreError> {
        let events = redis.as_ref().and_then(RedisDocs::events);
        let log = match redis {
            Some(redis) => DocLog::Redis(redis),
            None => DocLog::Sqlite(DocStore::open(data_dir, clock)?),
        };
        let docs = Arc::new(Docs {
            log,
            config,
            metrics: Arc::new(DocMetrics::default()),
            loaded: Mutex::new(HashMap::new()),
            generations: AtomicU64::new(1),
            shut: CancellationToken::new(),
        });
        if let Some(events) = events {
            tokio::spawn(route(Arc::downgrade(&docs), events));
        }
        Ok(docs)
    }

    /// The configuration.
    pub fn config(&self) -> &DocsConfig {
        &self.config
    }

    /// The counters.
    pub fn metrics(&self) -> &DocMetrics {
        &self.metrics
    }

    /// How many documents are loaded now.
    pub fn loaded(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.loaded.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The command queue of document `name`, loading it if needed.
    fn commands(self: &Arc<Self>, name: &str) -> mpsc::Sender<Cmd> {
        let mut loaded = self.lock();
        if let Some(entry) = loaded.get(name) {
            return entry.commands.clone();
        }
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        let (commands, mailbox) = mpsc::channel(MAILBOX);
        loaded.insert(
            name.to_string(),
            Entry {
                generation,
                commands: commands.clone(),
            },
        );
        bump(&self.metrics.loaded);
        tokio::spawn(doc::run(
            self.clone(),
            name.to_string(),
            generation,
            mailbox,
        ));
        commands
    }

    /// Joins `peer` to document `name`: once this returns, its first
    /// messages (SyncStep1, awareness) are queued.
    async fn join(
        self: &Arc<Self>,
        name: &str,
        peer: Arc<Peer>,
    ) -> Result<mpsc::Sender<Cmd>, JoinError> {
        // A document that is unloading drops the join: try its successor.
        for _ in 0..16 {
            if self.shut.is_cancelled() {
                return Err(JoinError("the server is shutting down"));
            }
            let commands = self.commands(name);
            let (reply, joined) = oneshot::channel();
            let join = Cmd::Join {
                peer: peer.clone(),
                reply,
            };
            if commands.send(join).await.is_err() {
                self.forget(name, &commands);
                continue;
            }
            if joined.await.is_ok() {
                return Ok(commands);
            }
            if commands.is_closed() {
                self.forget(name, &commands);
            }
        }
        Err(JoinError("the document could not be loaded"))
    }

    /// Takes document `name` out of the registry if its task ended without
    /// doing so itself (it could only have panicked).
    fn forget(&self, name: &str, commands: &mpsc::Sender<Cmd>) {
        let mut loaded = self.lock();
        if loaded
            .get(name)
            .is_some_and(|e| e.commands.same_channel(commands))
        {
            loaded.remove(name);
            crate::metrics::drop_one(&self.metrics.loaded);
            tracing::error!(doc = name, "a document's task ended unexpectedly");
        }
    }

    /// Takes document `name` (of `generation`) out of the registry.
    fn remove(&self, name: &str, generation: u64) {
        let mut loaded = self.lock();
        if loaded.get(name).is_some_and(|e| e.generation == generation) {
            loaded.remove(name);
        }
    }

    /// Takes document `name` out of the registry if it has no command
    /// waiting; true if it did.
    fn remove_if_idle(&self, name: &str, generation: u64, commands: &mpsc::Receiver<Cmd>) -> bool {
        let mut loaded = self.lock();
        if !commands.is_empty() || self.shut.is_cancelled() {
            return false;
        }
        if loaded.get(name).is_some_and(|e| e.generation == generation) {
            loaded.remove(name);
        }
        true
    }

    /// Stores everything, snapshots every loaded document, and stops the
    /// writer. Connections should be closed first.
    pub async fn shutdown(&self) {
        self.shut.cancel();
        let entries: Vec<mpsc::Sender<Cmd>> =
            self.lock().values().map(|e| e.commands.clone()).collect();
        for commands in entries {
            let (reply, done) = oneshot::channel();
            if commands.send(Cmd::Stop { reply }).await.is_ok() {
                let _ = done.await;
            }
        }
        self.log.shutdown().await;
    }
}

/// Hands what other nodes say of a document to its task, if it is loaded
/// here.
async fn route(
    docs: std::sync::Weak<Docs>,
    mut events: mpsc::UnboundedReceiver<(String, DocEvent)>,
) {
    while let Some((name, event)) = events.recv().await {
        let Some(docs) = docs.upgrade() else { return };
        let commands = docs.lock().get(&name).map(|e| e.commands.clone());
        if let Some(commands) = commands {
            let _ = commands.send(Cmd::Remote(event)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn access_rules() {
        let access = |claims: Option<&serde_json::Value>, name: &str| {
            let claims: Option<crate::auth::Claims> =
                claims.map(|c| serde_json::from_value(c.clone()).unwrap());
            super::access(claims.as_ref(), name)
        };
        assert_eq!(access(None, "a"), Some(Access::Write));
        assert_eq!(access(Some(&json!({"sub": "x"})), "a"), Some(Access::Write));
        let claims = json!({"docs": {"notes": "write", "team-*": "read", "team-own*": "write", "*": "read"}});
        assert_eq!(access(Some(&claims), "notes"), Some(Access::Write));
        assert_eq!(access(Some(&claims), "team-x"), Some(Access::Read));
        assert_eq!(
            access(Some(&claims), "team-own-1"),
            Some(Access::Write),
            "the longest pattern"
        );
        assert_eq!(access(Some(&claims), "other"), Some(Access::Read));
        let only = json!({"docs": {"notes": "read"}});
        assert_eq!(access(Some(&only), "other"), None);
        assert_eq!(access(Some(&json!({"docs": {"a": "admin"}})), "a"), None);
        assert_eq!(access(Some(&json!({"docs": []})), "a"), None);
    }

    #[test]
    fn names() {
        assert!(valid_name("notes"));
        assert!(valid_name("team-1_a.md"));
        assert!(!valid_name(""));
        assert!(!valid_name(".."));
        assert!(!valid_name("a/b"));
        assert!(!valid_name("a%20b"));
        assert!(!valid_name(&"a".repeat(129)));
    }

    #[test]
    fn config_checks() {
        assert!(DocsConfig::default().validate().is_ok());
        let bad = DocsConfig {
            compact_every: 0,
            ..DocsConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
