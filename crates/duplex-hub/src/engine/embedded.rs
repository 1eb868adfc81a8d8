//! The embedded engine: one node, history and offsets in SQLite
//! ([`Store`]), presence in this process.
//!
//! The store's writer thread commits publications in batches and hands each
//! one, in commit order, to a delivery task, which delivers it to the
//! registry and only then acknowledges it to its publisher: whatever a
//! publisher is told is stored, and pushed to every subscriber of this node.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::History;
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::protocol::{ClientInfo, ErrorCode, HubError, Publication};
use crate::registry::{Delivery, PresenceEvent, Registry};
use crate::storage::{Committed, Retention, Store};

/// SQLite and this process.
#[derive(Debug)]
pub struct Embedded {
    store: Arc<Store>,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    delivery: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Embedded {
    /// Opens the store in `data_dir` (publications stamped by `clock`) and
    /// starts delivering what it commits to `registry`.
    ///
    /// # Errors
    ///
    /// As [`Store::open`].
    pub fn open(
        data_dir: &Path,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Result<Embedded, HubError> {
        let (on_commit, committed) = mpsc::unbounded_channel();
        let store = Arc::new(Store::open(data_dir, on_commit, clock)?);
        let delivery = tokio::spawn(deliver(
            committed,
            store.clone(),
            registry.clone(),
            metrics.clone(),
        ));
        Ok(Embedded {
            store,
            registry,
            metrics,
            delivery: tokio::sync::Mutex::new(Some(delivery)),
        })
    }

    /// The SQLite store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub(super) async fn publish(
        &self,
        channel: &str,
        data: Arc<str>,
        retention: Retention,
    ) -> Result<Publication, HubError> {
        self.store.publish(channel, data, retention).await
    }

    fn reader(&self) -> Reader {
        Reader(self.store.clone())
    }

    pub(super) async fn last_offset(&self, channel: &str) -> Result<u64, HubError> {
        self.reader().last_offset(channel).await
    }

    pub(super) async fn range(
        &self,
        channel: &str,
        after: u64,
        upto: u64,
        min_time: u64,
    ) -> Result<Vec<Publication>, HubError> {
        let channel = channel.to_string();
        self.reader()
            .read(move |store| store.range(&channel, after, upto, min_time))
            .await
    }

    pub(super) async fn newest(
        &self,
        channel: &str,
        before: u64,
        upto: u64,
        min_time: u64,
        limit: usize,
    ) -> Result<Vec<Publication>, HubError> {
        let channel = channel.to_string();
        self.reader()
            .read(move |store| store.newest(&channel, before, upto, min_time, limit))
            .await
    }

    pub(super) async fn catch_up(&self, channel: &str) -> Result<(), HubError> {
        super::catch_up(&self.reader(), &self.registry, &self.metrics, channel, None).await
    }

    pub(super) fn join(&self, channel: &str, client: &ClientInfo) {
        self.registry
            .presence_event(channel, PresenceEvent::Join, client);
    }

    pub(super) fn leave(&self, channel: &str, client: &ClientInfo) {
        self.registry
            .presence_event(channel, PresenceEvent::Leave, client);
    }

    pub(super) fn presence(&self, channel: &str) -> Vec<ClientInfo> {
        self.registry
            .presence(channel)
            .iter()
            .map(|client| ClientInfo::clone(client))
            .collect()
    }

    pub(super) fn trim(&self, namespaces: Vec<(String, Retention)>) {
        self.store.trim(namespaces);
    }

    pub(super) async fn shutdown(&self) {
        self.store.shutdown().await;
        // The writer is gone: the delivery task ends once it has delivered
        // and acknowledged what was committed.
        if let Some(delivery) = self.delivery.lock().await.take() {
            let _ = delivery.await;
        }
    }
}

/// Delivers committed publications in commit order, then acknowledges them.
async fn deliver(
    mut committed: mpsc::UnboundedReceiver<Committed>,
    store: Arc<Store>,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
) {
    let reader = Reader(store);
    while let Some(next) = committed.recv().await {
        if let Delivery::Gap { .. } = registry.deliver(&next.channel, &next.publication) {
            // Not expected with one writer; history has it, in any case.
            let upto = Some(next.publication.offset);
            if let Err(err) =
                super::catch_up(&reader, &registry, &metrics, &next.channel, upto).await
            {
                tracing::error!(%err, channel = next.channel, "catching up failed");
            }
        }
        next.acknowledge();
    }
}

/// The store, read off the async threads.
struct Reader(Arc<Store>);

impl Reader {
    /// Runs a blocking SQLite read on a blocking thread.
    async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> Result<T, HubError> + Send + 'static,
    ) -> Result<T, HubError> {
        let store = self.0.clone();
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .unwrap_or_else(|err| {
                Err(HubError::new(
                    ErrorCode::Internal,
                    format!("hub task failed: {err}"),
                ))
            })
    }
}

impl History for Reader {
    async fn last_offset(&self, channel: &str) -> Result<u64, HubError> {
        let channel = channel.to_string();
        self.read(move |store| store.last_offset(&channel)).await
    }

    async fn range(
        &self,
        channel: &str,
        after: u64,
        upto: u64,
    ) -> Result<Vec<Publication>, HubError> {
        let channel = channel.to_string();
        self.read(move |store| store.range(&channel, after, upto, 0))
            .await
    }
}
