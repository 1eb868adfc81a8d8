//! The channel registry: who is subscribed where, presence, and the
//! broadcast of committed publications.
//!
//! Each channel has a lock over its last broadcast offset and its
//! subscribers. A broadcast sets the offset and queues the push for every
//! subscriber under that lock; a subscription reads the offset, reads the
//! history it recovers, queues its reply and joins, all under the same lock.
//! So a publication is either before the subscription's offset (and in its
//! recovered history, which storage committed before the broadcast) or after
//! it (and pushed to it after its reply): never lost, never twice.
//!
//! A push is encoded once, as one [`PreparedMessage`], whatever the number of
//! subscribers, and queued with `try_send`: a broadcast never waits. A
//! connection whose queue is full is told to close as a slow consumer.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use duplex::PreparedMessage;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, bump};
use crate::protocol::{self, ClientInfo, ErrorCode, HubError, Publication};

/// A connection's outgoing queue, as the hub sees it.
#[derive(Debug, Clone)]
pub struct Outbox {
    /// The connection's id.
    pub id: u64,
    queue: mpsc::Sender<Arc<PreparedMessage>>,
    slow: CancellationToken,
    metrics: Arc<Metrics>,
}

impl Outbox {
    /// An outbox over `queue`; `slow` is cancelled when the queue overflows.
    pub fn new(
        id: u64,
        queue: mpsc::Sender<Arc<PreparedMessage>>,
        slow: CancellationToken,
        metrics: Arc<Metrics>,
    ) -> Self {
        Outbox {
            id,
            queue,
            slow,
            metrics,
        }
    }

    /// Queues a frame without waiting. A full queue marks the connection as
    /// a slow consumer (it then closes with 1008) and returns false.
    pub fn push(&self, frame: Arc<PreparedMessage>) -> bool {
        match self.queue.try_send(frame) {
            Ok(()) => {
                bump(&self.metrics.messages_out);
                true
            }
            Err(TrySendError::Full(_)) => {
                if !self.slow.is_cancelled() {
                    self.slow.cancel();
                    bump(&self.metrics.dropped);
                    tracing::warn!(
                        client = self.id,
                        "closing a slow consumer: its send queue is full"
                    );
                }
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }

    /// Queues a text frame.
    pub fn push_text(&self, text: String) -> bool {
        self.push(Arc::new(PreparedMessage::text(text)))
    }
}

struct Subscriber {
    outbox: Outbox,
    client: Arc<ClientInfo>,
}

#[derive(Default)]
struct State {
    offset: u64,
    subscribers: HashMap<u64, Subscriber>,
    /// Taken out of the registry: subscribe to its successor instead.
    removed: bool,
}

#[derive(Default)]
struct Channel {
    state: Mutex<State>,
}

impl Channel {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Reads a channel's last offset from storage.
pub type StoredOffset = Box<dyn Fn(&str) -> Result<u64, HubError> + Send + Sync>;

/// A subscription to make: who, where, with presence or not.
pub struct Join<'a> {
    /// The channel's full name.
    pub channel: &'a str,
    /// The subscriber's queue.
    pub outbox: &'a Outbox,
    /// The subscriber as presence lists it.
    pub client: &'a Arc<ClientInfo>,
    /// Whether to push `join` to the others.
    pub presence: bool,
    /// The channel's subscriber limit.
    pub max_subscribers: usize,
}

/// Every channel with subscribers: memory is kept for live channels only.
pub struct Registry {
    live: Mutex<HashMap<String, Arc<Channel>>>,
    metrics: Arc<Metrics>,
    stored: OnceLock<StoredOffset>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    /// An empty registry; channels start at offset 0 until
    /// [`set_stored_offset`](Self::set_stored_offset) says otherwise.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Registry {
            live: Mutex::new(HashMap::new()),
            metrics,
            stored: OnceLock::new(),
        }
    }

    /// How a channel's stored last offset is read, when it becomes live
    /// (set once, before anything is published).
    pub fn set_stored_offset(&self, stored: StoredOffset) {
        let _ = self.stored.set(stored);
    }

    fn stored_offset(&self, channel: &str) -> Result<u64, HubError> {
        match self.stored.get() {
            Some(stored) => stored(channel),
            None => Ok(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Channel>>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The channel's last offset: of its last publication, 0 if none.
    /// May read storage: call from a blocking thread.
    ///
    /// # Errors
    ///
    /// `internal` if storage failed.
    pub fn offset(&self, channel: &str) -> Result<u64, HubError> {
        let live = self.lock().get(channel).cloned();
        match live {
            Some(live) => Ok(live.lock().offset),
            None => self.stored_offset(channel),
        }
    }

    /// The live channel, created (its offset read from storage) if needed.
    /// Created under the registry's lock, which [`broadcast`](Self::broadcast)
    /// takes too: a publication committed before the read is in the offset,
    /// one committed after finds the channel live.
    fn get_or_create(&self, channel: &str) -> Result<Arc<Channel>, HubError> {
        let mut live = self.lock();
        if let Some(existing) = live.get(channel) {
            return Ok(existing.clone());
        }
        let offset = self.stored_offset(channel)?;
        let created = Arc::new(Channel::default());
        created.lock().offset = offset;
        live.insert(channel.to_string(), created.clone());
        Ok(created)
    }

    /// Pushes a committed publication to every subscriber of `channel`:
    /// encoded once, queued without waiting. Called by storage's writer, in
    /// offset order.
    pub fn broadcast(&self, channel: &str, publication: &Publication) {
        bump(&self.metrics.publications);
        let live = self.lock().get(channel).cloned();
        let Some(live) = live else { return };
        let mut state = live.lock();
        if state.removed {
            // Its successor read the stored offset, this publication's
            // included.
            return;
        }
        if publication.offset <= state.offset {
            // Its subscribers got it in their subscribe reply already.
            return;
        }
        state.offset = publication.offset;
        if state.subscribers.is_empty() {
            return;
        }
        let frame = Arc::new(PreparedMessage::text(protocol::message_push(
            channel,
            publication,
        )));
        for subscriber in state.subscribers.values() {
            subscriber.outbox.push(frame.clone());
        }
    }

    /// Subscribes: under the channel's lock, calls `reply` with the channel's
    /// offset for the reply's text (reading recovered history if asked to),
    /// queues that reply, joins, and pushes `join` to the others.
    ///
    /// # Errors
    ///
    /// `channel_full`, or `reply`'s error (`recovery_impossible`, storage);
    /// then the connection is not subscribed.
    pub fn subscribe(
        &self,
        join: Join<'_>,
        reply: impl FnOnce(u64) -> Result<String, HubError>,
    ) -> Result<(), HubError> {
        loop {
            let channel = self.get_or_create(join.channel)?;
            let mut state = channel.lock();
            if state.removed {
                // Taken out between the lookup and the lock: look again.
                continue;
            }
            // Checked and joined under one lock: never a removed channel.
            let joined = self.join_locked(&mut state, &join, reply);
            drop(state);
            if joined.is_err() {
                self.remove_if_empty(join.channel);
            }
            return joined;
        }
    }

    fn join_locked(
        &self,
        state: &mut State,
        join: &Join<'_>,
        reply: impl FnOnce(u64) -> Result<String, HubError>,
    ) -> Result<(), HubError> {
        if state.subscribers.len() >= join.max_subscribers {
            return Err(HubError::new(
                ErrorCode::ChannelFull,
                format!(
                    "channel {} has its maximum of {} subscribers",
                    join.channel, join.max_subscribers
                ),
            ));
        }
        let text = reply(state.offset)?;
        join.outbox.push_text(text);
        if join.presence && !state.subscribers.is_empty() {
            let push = Arc::new(PreparedMessage::text(protocol::presence_push(
                "join",
                join.channel,
                join.client,
            )));
            for subscriber in state.subscribers.values() {
                subscriber.outbox.push(push.clone());
            }
        }
        state.subscribers.insert(
            join.outbox.id,
            Subscriber {
                outbox: join.outbox.clone(),
                client: join.client.clone(),
            },
        );
        self.metrics.subscriptions.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Unsubscribes connection `id`; pushes `leave` to the others if
    /// `presence`. Returns whether it was subscribed.
    pub fn unsubscribe(&self, channel: &str, id: u64, presence: bool) -> bool {
        let Some(live) = self.lock().get(channel).cloned() else {
            return false;
        };
        let mut state = live.lock();
        let Some(gone) = state.subscribers.remove(&id) else {
            return false;
        };
        crate::metrics::drop_one(&self.metrics.subscriptions);
        if presence && !state.subscribers.is_empty() {
            let push = Arc::new(PreparedMessage::text(protocol::presence_push(
                "leave",
                channel,
                &gone.client,
            )));
            for subscriber in state.subscribers.values() {
                subscriber.outbox.push(push.clone());
            }
        }
        let empty = state.subscribers.is_empty();
        drop(state);
        if empty {
            self.remove_if_empty(channel);
        }
        true
    }

    /// The clients subscribed to `channel`.
    pub fn presence(&self, channel: &str) -> Vec<ClientInfo> {
        let Some(live) = self.lock().get(channel).cloned() else {
            return Vec::new();
        };
        let state = live.lock();
        let mut clients: Vec<ClientInfo> = state
            .subscribers
            .values()
            .map(|s| ClientInfo::clone(&s.client))
            .collect();
        clients.sort_by(|a, b| a.client.cmp(&b.client));
        clients
    }

    /// Takes a channel without subscribers out of the registry (its offset
    /// stays known).
    fn remove_if_empty(&self, channel: &str) {
        let mut live = self.lock();
        let Some(existing) = live.get(channel).cloned() else {
            return;
        };
        let mut state = existing.lock();
        if state.subscribers.is_empty() {
            state.removed = true;
            drop(state);
            live.remove(channel);
        }
    }

    /// Channels with subscribers now.
    pub fn live_channels(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn client(
        id: u64,
        metrics: &Arc<Metrics>,
    ) -> (
        Outbox,
        Arc<ClientInfo>,
        mpsc::Receiver<Arc<PreparedMessage>>,
    ) {
        let (queue, frames) = mpsc::channel(4096);
        let outbox = Outbox::new(id, queue, CancellationToken::new(), metrics.clone());
        let info = Arc::new(ClientInfo {
            client: format!("c{id}"),
            user: String::new(),
            info: json!({}),
        });
        (outbox, info, frames)
    }

    fn join<'a>(outbox: &'a Outbox, info: &'a Arc<ClientInfo>) -> Join<'a> {
        Join {
            channel: "chat:x",
            outbox,
            client: info,
            presence: false,
            max_subscribers: 10,
        }
    }

    fn text(frame: &PreparedMessage) -> String {
        frame.message().as_text().unwrap_or_default().to_string()
    }

    #[test]
    fn joining_and_leaving_concurrently_never_loses_a_subscriber() {
        let metrics = Arc::new(Metrics::default());
        let registry = Arc::new(Registry::new(metrics.clone()));
        let churn = |id: u64| {
            let registry = registry.clone();
            let metrics = metrics.clone();
            std::thread::spawn(move || {
                let (outbox, info, _frames) = client(id, &metrics);
                for _ in 0..2000 {
                    registry
                        .subscribe(join(&outbox, &info), |offset| Ok(format!("{offset}")))
                        .unwrap();
                    assert!(registry.unsubscribe("chat:x", id, false));
                }
            })
        };
        let threads = [churn(1), churn(2), churn(3)];
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(registry.live_channels(), 0, "empty channels are taken out");

        let (outbox, info, mut frames) = client(9, &metrics);
        registry
            .subscribe(join(&outbox, &info), |offset| {
                Ok(format!("offset {offset}"))
            })
            .unwrap();
        assert_eq!(text(&frames.try_recv().unwrap()), "offset 0");
        let publication = Publication {
            offset: 1,
            time: 0,
            data: Arc::from("1"),
        };
        registry.broadcast("chat:x", &publication);
        assert!(text(&frames.try_recv().unwrap()).contains("\"offset\":1"));
        assert_eq!(registry.offset("chat:x").unwrap(), 1);
    }

    #[test]
    fn a_full_queue_marks_a_slow_consumer_once() {
        let metrics = Arc::new(Metrics::default());
        let (queue, _frames) = mpsc::channel(2);
        let slow = CancellationToken::new();
        let outbox = Outbox::new(1, queue, slow.clone(), metrics.clone());
        assert!(outbox.push_text("a".into()));
        assert!(outbox.push_text("b".into()));
        assert!(!slow.is_cancelled());
        assert!(!outbox.push_text("c".into()));
        assert!(!outbox.push_text("d".into()));
        assert!(slow.is_cancelled());
        assert_eq!(metrics.dropped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_failed_recovery_does_not_subscribe() {
        let metrics = Arc::new(Metrics::default());
        let registry = Registry::new(metrics.clone());
        registry.set_stored_offset(Box::new(|_| Ok(7)));
        let (outbox, info, mut frames) = client(1, &metrics);
        let err = registry
            .subscribe(join(&outbox, &info), |offset| {
                assert_eq!(offset, 7, "the stored offset");
                Err(HubError::new(ErrorCode::RecoveryImpossible, "gone"))
            })
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::RecoveryImpossible);
        assert!(frames.try_recv().is_err(), "nothing queued");
        assert!(!registry.unsubscribe("chat:x", 1, false));
        assert_eq!(registry.live_channels(), 0);
    }
}
