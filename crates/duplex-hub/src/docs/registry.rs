//! The loaded documents: each one's task, loaded on the first join and
//! taken out when it unloads, and the routing of what other nodes say of
//! a document to its task.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::doc::{self, Cmd};
use super::log::DocLog;
use super::store::{DocStore, StoreError};
use super::{DocMetrics, DocsConfig, Peer};
use crate::clock::Clock;
use crate::engine::redis::{DocEvent, RedisDocs};
use crate::metrics::bump;

/// Commands queued for one document, at most; connections wait beyond.
const MAILBOX: usize = 1024;

/// A loaded document: its task's generation and command queue.
struct Entry {
    generation: u64,
    commands: mpsc::Sender<Cmd>,
}

/// The loaded documents and their store.
pub struct Docs {
    pub(super) config: DocsConfig,
    pub(super) log: DocLog,
    pub(super) metrics: Arc<DocMetrics>,
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
    pub(super) async fn join(
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
    pub(super) fn remove(&self, name: &str, generation: u64) {
        let mut loaded = self.lock();
        if loaded.get(name).is_some_and(|e| e.generation == generation) {
            loaded.remove(name);
        }
    }

    /// Takes document `name` out of the registry if it has no command
    /// waiting; true if it did.
    pub(super) fn remove_if_idle(
        &self,
        name: &str,
        generation: u64,
        commands: &mpsc::Receiver<Cmd>,
    ) -> bool {
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
