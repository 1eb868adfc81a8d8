//! One loaded document: a task that owns its `yrs` document, its awareness
//! and the connections editing it.
//!
//! Everything about a document happens in its task, one command at a time,
//! so the order is simple: an update is validated (decoded and applied by
//! `yrs`), stored, and only then broadcast; and before the task sends anything
//! that shows the document (SyncStep1, SyncStep2, awareness), every update it
//! applied before is stored. Updates waiting together are stored in one
//! write.
//!
//! When the last connection leaves, the task waits `unload_after_ms`; then it
//! writes a snapshot, takes itself out of the registry and ends. A
//! connection that joins while it ends is told to join again, and gets a new
//! task that loads the document from the store: nothing is lost, because
//! every update was stored before anyone saw it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use duplex::{CloseCode, PreparedMessage};
use tokio::sync::{mpsc, oneshot};
use yrs::block::ClientID;
use yrs::sync::AwarenessUpdate;
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use super::awareness::States;
use super::log::DocLog;
use super::store::Stored;
use super::sync::{self, Incoming};
use super::{Docs, DocsConfig, Peer};
use crate::engine::redis::DocEvent;
use crate::metrics::bump;

/// Commands handled in one go, at most.
const MAX_BATCH: usize = 64;
/// Awareness client ids one connection may speak for, at most.
pub const MAX_AWARENESS_CLIENTS: usize = 8;

/// What a document's task is asked to do.
pub(crate) enum Cmd {
    /// A connection joins; answered once the first messages are queued.
    Join {
        peer: Arc<Peer>,
        reply: oneshot::Sender<()>,
    },
    /// A connection leaves (its awareness states are removed).
    Leave { peer: u64 },
    /// A message from a connection.
    Message { peer: u64, message: Incoming },
    /// Store everything, write a snapshot and end (server shutdown).
    Stop { reply: oneshot::Sender<()> },
    /// What another node stored or said (several nodes over Redis).
    Remote(DocEvent),
}

struct Pending {
    peer: u64,
    update: Bytes,
}

struct DocTask {
    name: String,
    docs: Arc<Docs>,
    generation: u64,
    config: DocsConfig,
    doc: Doc,
    awareness: States,
    peers: HashMap<u64, Arc<Peer>>,
    /// The awareness client ids each connection spoke for.
    owned: HashMap<u64, HashSet<ClientID>>,
    /// Applied, not yet stored.
    pending: Vec<Pending>,
    last_seq: u64,
    /// Bytes in the store: snapshot and updates.
    stored_size: usize,
    /// Updates stored since the last snapshot.
    since_snapshot: u64,
    /// The document must be loaded again from the store (an update failed
    /// half-way).
    reload: bool,
}

fn store(docs: &Docs) -> &DocLog {
    &docs.log
}

/// Builds a document from what is stored.
pub(crate) fn build(stored: &Stored) -> (Doc, usize) {
    let doc = Doc::new();
    let mut failed = 0;
    {
        let mut txn = doc.transact_mut();
        for bytes in stored.snapshot.iter().chain(stored.updates.iter()) {
            let applied = Update::decode_v1(bytes)
                .map_err(|err| err.to_string())
                .and_then(|u| match guarded(|| txn.apply_update(u)) {
                    Some(result) => result.map_err(|err| err.to_string()),
                    None => Err("yrs panicked".to_string()),
                });
            if let Err(err) = applied {
                failed += 1;
                tracing::error!(%err, "a stored document update could not be applied");
            }
        }
    }
    (doc, failed)
}

/// Runs a document's task until it unloads or is stopped.
pub(crate) async fn run(
    docs: Arc<Docs>,
    name: String,
    generation: u64,
    mut commands: mpsc::Receiver<Cmd>,
) {
    // Other nodes' updates are heard from before the load: none falls
    // between the two.
    let opened = store(&docs).open(&name).await;
    let loaded = match opened {
        Ok(()) => store(&docs).load(&name).await,
        Err(err) => Err(err),
    };
    let stored = match loaded {
        Ok(stored) => stored,
        Err(err) => {
            tracing::error!(%err, doc = %name, "loading a document failed");
            store(&docs).close(&name).await;
            docs.remove(&name, generation);
            drop_gauge(&docs);
            // Joiners see their reply dropped and try again.
            return;
        }
    };
    let (doc, _) = build(&stored);
    bump(&docs.metrics.loads);
    let config = docs.config.clone();
    let mut task = DocTask {
        since_snapshot: stored.updates.len() as u64,
        stored_size: stored.size(),
        last_seq: stored.last_seq,
        name,
        generation,
        config,
        doc,
        awareness: States::default(),
        peers: HashMap::new(),
        owned: HashMap::new(),
        pending: Vec::new(),
        reload: false,
        docs,
    };
    tracing::debug!(doc = %task.name, seq = task.last_seq, "document loaded");
    // Who is on the document at other nodes: they answer with the states
    // their connections own, which this node's joiners then get.
    store(&task.docs).publish_awareness(&task.name, &sync::query_awareness());
    let unload_after = Duration::from_millis(task.config.unload_after_ms);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let first = if task.peers.is_empty() {
            match tokio::time::timeout(unload_after, commands.recv()).await {
                Ok(first) => first,
                Err(_) => {
                    if task.try_unload(&mut commands).await {
                        break;
                    }
                    continue;
                }
            }
        } else {
            commands.recv().await
        };
        let Some(first) = first else { break };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match commands.try_recv() {
                Ok(cmd) => batch.push(cmd),
                Err(_) => break,
            }
        }
        let mut stop = None;
        for cmd in batch.drain(..) {
            match cmd {
                Cmd::Message {
                    peer,
                    message: Incoming::Update(update),
                } => task.apply(peer, update).await,
                Cmd::Stop { reply } => stop = Some(reply),
                Cmd::Remote(event) => {
                    task.flush().await;
                    task.remote(event).await;
                }
                other => {
                    task.flush().await;
                    task.handle(other);
                }
            }
        }
        task.flush().await;
        if let Some(reply) = stop {
            task.snapshot().await;
            task.docs.remove(&task.name, task.generation);
            let _ = reply.send(());
            break;
        }
    }
    store(&task.docs).close(&task.name).await;
    drop_gauge(&task.docs);
    tracing::debug!(doc = %task.name, "document unloaded");
}

fn drop_gauge(docs: &Docs) {
    crate::metrics::drop_one(&docs.metrics.loaded);
}

/// Why an update was not integrated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// It does not decode: the document is untouched.
    Malformed(String),
    /// It decodes but does not apply, or leaves the document unencodable:
    /// the document may hold part of it and must be reloaded.
    DoesNotApply(String),
}

/// Decodes `update` and applies it to `doc`, checking that an update whose
/// parts wait for others still lets the document be encoded (`yrs` can
/// panic there on crafted input): whatever is accepted can be sent on.
pub(crate) fn integrate(doc: &Doc, update: &[u8]) -> Result<(), Refusal> {
    let decoded = match guarded(|| Update::decode_v1(update)) {
        Some(Ok(decoded)) => decoded,
        Some(Err(err)) => return Err(Refusal::Malformed(err.to_string())),
        None => return Err(Refusal::Malformed("yrs panicked decoding it".into())),
    };
    match guarded(|| doc.transact_mut().apply_update(decoded)) {
        Some(Ok(())) => {}
        Some(Err(err)) => return Err(Refusal::DoesNotApply(err.to_string())),
        None => return Err(Refusal::DoesNotApply("yrs panicked applying it".into())),
    }
    let missing = doc.transact().has_missing_updates();
    if missing
        && guarded(|| {
            doc.transact()
                .encode_state_as_update_v1(&StateVector::default())
        })
        .is_none()
    {
        return Err(Refusal::DoesNotApply(
            "the document could not be encoded after it".into(),
        ));
    }
    Ok(())
}

/// Runs `f`, returning `None` if it panics: `yrs` may panic on crafted
/// updates, and one document's bad input must not end its task.
fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok()
}

impl DocTask {
    /// The whole document as one update (pending parts included).
    fn encode_all(&self) -> Vec<u8> {
        self.doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default())
    }

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Join { peer, reply } => {
                let sv = self.doc.transact().state_vector();
                self.send(&peer, sync::sync_step1(&sv));
                if !self.awareness.is_empty() {
                    self.send(&peer, sync::awareness(self.awareness.all()));
                }
                self.peers.insert(peer.id, peer);
                let _ = reply.send(());
            }
            Cmd::Leave { peer } => {
                self.peers.remove(&peer);
                if let Some(owned) = self.owned.remove(&peer) {
                    self.remove_awareness(owned);
                }
            }
            Cmd::Message { peer, message } => self.message(peer, message),
            Cmd::Stop { .. } | Cmd::Remote(_) => {}
        }
    }

    fn message(&mut self, from: u64, message: Incoming) {
        let Some(peer) = self.peers.get(&from).cloned() else {
            return;
        };
        match message {
            Incoming::SyncStep1(sv) => {
                let doc = &self.doc;
                match guarded(|| doc.transact().encode_diff_v1(&sv)) {
                    Some(diff) => self.send(&peer, sync::sync_step2(diff)),
                    None => {
                        tracing::error!(doc = %self.name, "the document could not be encoded");
                        peer.close(
                            CloseCode::INTERNAL_ERROR,
                            "the document could not be encoded".into(),
                        );
                    }
                }
            }
            Incoming::Awareness(update) => self.awareness_from(&peer, update),
            Incoming::QueryAwareness => {
                self.send(&peer, sync::awareness(self.awareness.all()));
            }
            Incoming::Update(_) => {}
            Incoming::Other(tag) => {
                tracing::debug!(doc = %self.name, tag, "ignored a y-websocket message type");
            }
        }
    }

    fn awareness_from(&mut self, peer: &Arc<Peer>, update: AwarenessUpdate) {
        let removed_clocks: std::collections::HashMap<ClientID, u32> = update
            .clients
            .iter()
            .map(|(id, e)| (*id, e.clock))
            .collect();
        let changes = self.awareness.apply(&update);
        if changes.is_empty() {
            return;
        }
        // Like the y-websocket server: a connection speaks for the clients
        // it added, until it removes them.
        let owned = self.owned.entry(peer.id).or_default();
        owned.extend(changes.added.iter().copied());
        for id in &changes.removed {
            owned.remove(id);
        }
        if owned.len() > MAX_AWARENESS_CLIENTS {
            peer.close(
                CloseCode::POLICY_VIOLATION,
                format!("awareness for more than {MAX_AWARENESS_CLIENTS} client ids"),
            );
        }
        let out = sync::awareness(self.awareness.encode(changes.all(), &removed_clocks));
        store(&self.docs).publish_awareness(&self.name, &out);
        // To every connection, the sender too (the provider takes any
        // message as a sign of life).
        self.broadcast(out, None);
    }

    fn remove_awareness(&mut self, owned: HashSet<ClientID>) {
        if let Some(update) = self.awareness.remove(owned) {
            let out = sync::awareness(update);
            store(&self.docs).publish_awareness(&self.name, &out);
            self.broadcast(out, None);
        }
    }

    /// Another node loaded the document: tells it the states this node's
    /// connections own (each node answers for its own, so none is sent
    /// twice over).
    fn answer_awareness_query(&self) {
        let owned: Vec<ClientID> = self.owned.values().flatten().copied().collect();
        if owned.is_empty() {
            return;
        }
        let states = self.awareness.encode(owned, &HashMap::new());
        store(&self.docs).publish_awareness(&self.name, &sync::awareness(states));
    }

    /// What another node stored or said: an update applied and sent to
    /// this node's connections (after any it missed), awareness passed on.
    async fn remote(&mut self, event: DocEvent) {
        match event {
            DocEvent::Update { seq, update } => {
                if seq <= self.last_seq {
                    // Ours, or had already.
                    return;
                }
                if seq > self.last_seq + 1 {
                    self.catch_up(Some(seq)).await;
                }
                if seq > self.last_seq {
                    self.apply_stored(seq, &update);
                }
            }
            DocEvent::Awareness(message) => {
                let update = match sync::decode(&message) {
                    Ok(Incoming::Awareness(update)) => update,
                    Ok(Incoming::QueryAwareness) => return self.answer_awareness_query(),
                    _ => {
                        tracing::debug!(doc = %self.name, "unreadable awareness from another node");
                        return;
                    }
                };
                let changes = self.awareness.apply(&update);
                if !changes.is_empty() {
                    let removed: HashMap<ClientID, u32> = update
                        .clients
                        .iter()
                        .map(|(id, e)| (*id, e.clock))
                        .collect();
                    let out = self.awareness.encode(changes.all(), &removed);
                    self.broadcast(sync::awareness(out), None);
                }
            }
            DocEvent::CatchUp => self.catch_up(None).await,
        }
    }

    /// Applies what other nodes stored after `last_seq` (and before
    /// `before`), in order. If the log no longer holds it all (a node
    /// compacted it meanwhile), the snapshot and the log are applied whole:
    /// Yjs updates apply in any order, and twice.
    async fn catch_up(&mut self, before: Option<u64>) {
        let missed = match store(&self.docs)
            .range(&self.name, self.last_seq, before)
            .await
        {
            Ok(missed) => missed,
            Err(err) => {
                tracing::warn!(%err, doc = %self.name, "reading updates of other nodes failed");
                return;
            }
        };
        let follows = missed
            .iter()
            .zip(self.last_seq + 1..)
            .all(|((seq, _), next)| *seq == next);
        let complete = match before {
            Some(before) => missed.len() as u64 == before.saturating_sub(self.last_seq + 1),
            None => !missed.is_empty(),
        };
        if follows && complete {
            for (seq, update) in missed {
                self.apply_stored(seq, &update);
            }
            return;
        }
        match store(&self.docs).load(&self.name).await {
            Ok(stored) if stored.last_seq > self.last_seq => {
                for update in stored.snapshot.iter().chain(stored.updates.iter()) {
                    if let Err(err) = integrate(&self.doc, update) {
                        tracing::error!(doc = %self.name, ?err, "a stored update does not apply here");
                        self.reload = true;
                    }
                    self.broadcast(sync::update(update.clone()), None);
                }
                self.last_seq = stored.last_seq;
                self.stored_size = stored.size();
                self.since_snapshot = stored.updates.len() as u64;
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(%err, doc = %self.name, "reading the document again failed");
            }
        }
    }

    /// Applies an update another node validated and stored as `seq`, and
    /// sends it to this node's connections.
    fn apply_stored(&mut self, seq: u64, update: &[u8]) {
        if let Err(err) = integrate(&self.doc, update) {
            tracing::error!(doc = %self.name, seq, ?err, "a stored update does not apply here");
            self.reload = true;
        }
        self.last_seq = seq;
        self.stored_size += update.len();
        self.since_snapshot += 1;
        self.broadcast(sync::update(update.to_vec()), None);
    }

    /// Validates and applies an update from `from`; it is stored by the
    /// next [`flush`](Self::flush), and broadcast after.
    async fn apply(&mut self, from: u64, update: Vec<u8>) {
        let Some(peer) = self.peers.get(&from).cloned() else {
            return;
        };
        let metrics = self.docs.metrics.clone();
        if !peer.writable {
            bump(&metrics.refused);
            tracing::info!(doc = %self.name, peer = from, "update ignored: the connection is read-only");
            return;
        }
        // An empty update (SyncStep2 of a peer with nothing new).
        if update.len() <= 2 && update.iter().all(|&b| b == 0) {
            return;
        }
        let max = self.config.max_document_size;
        let pending: usize = self.pending.iter().map(|p| p.update.len()).sum();
        if self.stored_size + pending + update.len() > max && self.since_snapshot > 0 {
            // The log may be much larger than the document it makes.
            self.flush().await;
            self.snapshot().await;
        }
        let pending: usize = self.pending.iter().map(|p| p.update.len()).sum();
        if self.stored_size + pending + update.len() > max {
            bump(&metrics.refused);
            peer.close(
                CloseCode::MESSAGE_TOO_BIG,
                format!("the document is over its limit of {max} bytes (docs.max_document_size)"),
            );
            return;
        }
        let applied = integrate(&self.doc, &update);
        if let Err(Refusal::Malformed(err)) = &applied {
            bump(&metrics.refused);
            tracing::info!(doc = %self.name, %err, "malformed update refused");
            peer.close(CloseCode::INVALID_PAYLOAD, "malformed Yjs update".into());
            return;
        }
        if let Err(Refusal::DoesNotApply(err)) = applied {
            bump(&metrics.refused);
            tracing::info!(doc = %self.name, %err, "update refused: it does not apply");
            peer.close(
                CloseCode::INVALID_PAYLOAD,
                "the Yjs update does not apply to the document".into(),
            );
            // The document may hold part of it: back to what is stored.
            self.reload = true;
            self.flush().await;
            return;
        }
        self.pending.push(Pending {
            peer: from,
            update: Bytes::from(update),
        });
    }

    /// Stores what was applied, then broadcasts it; reloads the document
    /// from the store if an update failed half-way.
    async fn flush(&mut self) {
        if !self.pending.is_empty() {
            let pending = std::mem::take(&mut self.pending);
            let updates: Vec<Bytes> = pending.iter().map(|p| p.update.clone()).collect();
            let size: usize = updates.iter().map(Bytes::len).sum();
            let first = self.last_seq + 1;
            let count = updates.len() as u64;
            match store(&self.docs).append(&self.name, first, updates).await {
                Ok(given) => {
                    if given > first {
                        // Other nodes stored updates meanwhile: theirs
                        // first, as the log has them.
                        self.catch_up(Some(given)).await;
                    }
                    self.last_seq = self.last_seq.max(given + count - 1);
                    self.stored_size += size;
                    self.since_snapshot += count;
                    let metrics = &self.docs.metrics;
                    metrics
                        .updates
                        .fetch_add(count, std::sync::atomic::Ordering::Relaxed);
                    for p in pending {
                        self.broadcast(sync::update(p.update.to_vec()), Some(p.peer));
                    }
                }
                Err(err) => {
                    tracing::error!(%err, doc = %self.name, "updates not stored: their senders are disconnected");
                    for p in &pending {
                        if let Some(peer) = self.peers.get(&p.peer) {
                            peer.close(CloseCode::INTERNAL_ERROR, "storage failed".into());
                        }
                    }
                    self.reload = true;
                }
            }
        }
        if self.reload {
            self.reload = false;
            match store(&self.docs).load(&self.name).await {
                Ok(stored) => {
                    self.doc = build(&stored).0;
                    self.last_seq = stored.last_seq;
                    self.stored_size = stored.size();
                }
                Err(err) => tracing::error!(%err, doc = %self.name, "reloading a document failed"),
            }
        }
        if self.since_snapshot >= self.config.compact_every {
            self.snapshot().await;
        }
    }

    /// Folds the update log into a snapshot.
    async fn snapshot(&mut self) {
        if self.since_snapshot == 0 {
            return;
        }
        let Some(snapshot) = guarded(|| self.encode_all()) else {
            tracing::error!(doc = %self.name, "the document could not be encoded: no snapshot");
            return;
        };
        let size = snapshot.len();
        match store(&self.docs)
            .compact(&self.name, self.last_seq, snapshot)
            .await
        {
            Ok(()) => {
                bump(&self.docs.metrics.compactions);
                self.since_snapshot = 0;
                self.stored_size = size;
            }
            Err(err) => tracing::error!(%err, doc = %self.name, "compacting a document failed"),
        }
    }

    /// After `unload_after_ms` without connections: snapshot, then out of
    /// the registry unless a command came meanwhile. True when unloaded.
    async fn try_unload(&mut self, commands: &mut mpsc::Receiver<Cmd>) -> bool {
        self.snapshot().await;
        if !self
            .docs
            .remove_if_idle(&self.name, self.generation, commands)
        {
            return false;
        }
        // No one can send any more; joiners still queued get their reply
        // dropped and join again (a new task, which loads from the store).
        commands.close();
        while commands.recv().await.is_some() {}
        true
    }

    fn send(&self, peer: &Peer, bytes: Vec<u8>) {
        let frame = PreparedMessage::binary(bytes);
        if peer.outbox.push(&frame) {
            bump(&self.docs.metrics.messages_out);
        }
    }

    fn broadcast(&self, bytes: Vec<u8>, except: Option<u64>) {
        let frame = PreparedMessage::binary(bytes);
        for (id, peer) in &self.peers {
            if Some(*id) != except && peer.outbox.push(&frame) {
                bump(&self.docs.metrics.messages_out);
            }
        }
    }
}
