//! Where documents are stored: the hub's SQLite ([`DocStore`], one node) or
//! Redis ([`RedisDocs`], shared by every node, which also passes updates and
//! awareness from node to node).

use bytes::Bytes;

use super::store::{DocStore, StoreError, Stored};
use crate::engine::redis::RedisDocs;

/// A document's update log and snapshots.
#[derive(Debug)]
pub(crate) enum DocLog {
    /// SQLite, one node.
    Sqlite(DocStore),
    /// Redis, several nodes.
    Redis(RedisDocs),
}

impl DocLog {
    /// Starts hearing about `doc` from the other nodes (before loading it).
    pub(crate) async fn open(&self, doc: &str) -> Result<(), StoreError> {
        match self {
            DocLog::Sqlite(_) => Ok(()),
            DocLog::Redis(redis) => redis.open(doc).await,
        }
    }

    /// Stops hearing about `doc` (it was unloaded).
    pub(crate) async fn close(&self, doc: &str) {
        if let DocLog::Redis(redis) = self {
            redis.close(doc).await;
        }
    }

    /// Reads a document (empty if it was never written).
    pub(crate) async fn load(&self, doc: &str) -> Result<Stored, StoreError> {
        match self {
            DocLog::Sqlite(store) => store.load(doc).await,
            DocLog::Redis(redis) => redis.load(doc).await,
        }
    }

    /// Appends updates; returns the sequence number given to the first.
    /// SQLite numbers them from `first_seq`, this node's next; Redis from
    /// its own counter, which the other nodes' updates also take from.
    pub(crate) async fn append(
        &self,
        doc: &str,
        first_seq: u64,
        updates: Vec<Bytes>,
    ) -> Result<u64, StoreError> {
        match self {
            DocLog::Sqlite(store) => store
                .append(doc, first_seq, updates)
                .await
                .map(|()| first_seq),
            DocLog::Redis(redis) => redis.append(doc, &updates).await,
        }
    }

    /// The updates with `after < seq < before` (all after `after` without
    /// `before`): what other nodes stored, when this node missed some.
    pub(crate) async fn range(
        &self,
        doc: &str,
        after: u64,
        before: Option<u64>,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        match self {
            // One node: it stored every update itself.
            DocLog::Sqlite(_) => Ok(Vec::new()),
            DocLog::Redis(redis) => redis.range(doc, after, before).await,
        }
    }

    /// Replaces the snapshot with `snapshot` (every update up to `seq`) and
    /// drops the updates it holds.
    pub(crate) async fn compact(
        &self,
        doc: &str,
        seq: u64,
        snapshot: Vec<u8>,
    ) -> Result<(), StoreError> {
        match self {
            DocLog::Sqlite(store) => store.compact(doc, seq, snapshot).await,
            DocLog::Redis(redis) => redis.compact(doc, seq, snapshot).await,
        }
    }

    /// Passes an awareness message on to the other nodes' connections.
    pub(crate) fn publish_awareness(&self, doc: &str, message: &[u8]) {
        if let DocLog::Redis(redis) = self {
            redis.publish_awareness(doc, message.to_vec());
        }
    }

    /// Stops the SQLite writer once what is queued is written.
    pub(crate) async fn shutdown(&self) {
        if let DocLog::Sqlite(store) = self {
            store.shutdown().await;
        }
    }
}
