//! The channel registry: this node's subscribers, and the delivery of
//! publications and presence events to them.
//!
//! Every publication reaches the registry the same way, whichever node took
//! it: the engine hands it to [`Registry::deliver`] in offset order (the
//! embedded engine after its SQLite commit, the Redis engine from its
//! pub/sub listener). Each channel keeps the offset it delivered last: a
//! publication at or below it is a duplicate and dropped, the next one is
//! pushed, and one further ahead reveals a gap, which the caller fills from
//! history before delivering on ([`Delivery::Gap`]).
//!
//! A subscription is made in three steps that never lose or double a
//! publication, although reading history may wait on the network:
//! [`begin_join`](Registry::begin_join) adds the subscriber in a *joining*
//! state and returns the channel's offset `C`, under the channel's lock; the
//! caller reads the history it recovers, up to `C`; then
//! [`finish_join`](Registry::finish_join) queues the reply and, after it,
//! every push buffered meanwhile (all of them after `C`). Publications up to
//! `C` come from history, those after it from the buffer: each once, in
//! order.
//!
//! A channel becomes live on this node when its first subscriber comes: the
//! engine joins the channel (Redis: `SUBSCRIBE`) and only then reads its
//! offset ([`make_ready`](Registry::make_ready)); publications delivered
//! in between are kept and replayed, so none falls between the read and the
//! live stream.
//!
//! A push is encoded once, as one [`PreparedMessage`], whatever the number of
//! subscribers, and written to each subscriber's socket by the delivering
//! task itself when the socket has room ([`duplex::Sender`]), queued behind
//! what waits if not: a delivery never waits. A connection whose queue is
//! full is told to close as a slow consumer.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use duplex::{CloseCode, PreparedMessage, Sender, TrySendError};
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, bump};
use crate::protocol::{self, ClientInfo, ErrorCode, HubError, Publication};

/// Publications kept for a channel that is not ready yet, at most; beyond,
/// the channel catches up from history once it is.
const MAX_EARLY: usize = 4096;

/// Why a connection is asked to close, with the close frame to send.
#[derive(Debug, Default)]
struct CloseRequest {
    reason: Mutex<Option<(CloseCode, String)>>,
    token: CancellationToken,
}

/// A connection's sending side, as the hub sees it: pushes are written to
/// the socket by whoever makes them (see [`duplex::Sender`]), and what the
/// socket does not take at once waits, up to `limits.send_queue` frames.
#[derive(Debug, Clone)]
pub struct Outbox {
    /// The connection's id.
    pub id: u64,
    sender: Sender,
    limit: usize,
    close: Arc<CloseRequest>,
    metrics: Arc<Metrics>,
}

impl Outbox {
    /// An outbox over `sender`, with at most `limit` frames waiting.
    pub fn new(id: u64, sender: Sender, limit: usize, metrics: Arc<Metrics>) -> Self {
        Outbox {
            id,
            sender: sender.with_queue_limit(limit),
            limit,
            close: Arc::default(),
            metrics,
        }
    }

    /// Sends a frame without waiting. A full queue marks the connection as
    /// a slow consumer (it then closes with 1008) and returns false.
    pub fn push(&self, frame: &PreparedMessage) -> bool {
        let sent = self.send(frame);
        if sent {
            bump(&self.metrics.messages_out);
        }
        sent
    }

    /// Starts loading the connection's send state into the cache: see
    /// [`Sender::prefetch`].
    fn prefetch(&self) {
        self.sender.prefetch();
    }

    /// [`push`](Self::push) without counting the message in the metrics:
    /// a delivery to many subscribers counts them once, at the end.
    fn send(&self, frame: &PreparedMessage) -> bool {
        match self.sender.try_send_prepared(frame) {
            Ok(()) => true,
            Err(TrySendError::Full) => {
                if self.close(
                    CloseCode::POLICY_VIOLATION,
                    format!("slow consumer: send queue full ({} messages)", self.limit),
                ) {
                    bump(&self.metrics.dropped);
                    tracing::warn!(
                        client = self.id,
                        "closing a slow consumer: its send queue is full"
                    );
                }
                false
            }
            Err(TrySendError::Closed) => false,
        }
    }

    /// Queues a text frame.
    pub fn push_text(&self, text: String) -> bool {
        self.push(&PreparedMessage::text(text))
    }

    /// Asks the connection to close with `code` and `reason`; the first
    /// request wins. True if this one did.
    pub fn close(&self, code: CloseCode, reason: String) -> bool {
        let mut slot = self
            .close
            .reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if slot.is_some() {
            return false;
        }
        *slot = Some((code, reason));
        self.close.token.cancel();
        true
    }

    /// Completes once the connection is asked to close, with the close frame.
    pub async fn closed(&self) -> (CloseCode, String) {
        self.close.token.cancelled().await;
        self.close
            .reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or((CloseCode::NORMAL, String::new()))
    }
}

struct Subscriber {
    outbox: Outbox,
    client: Arc<ClientInfo>,
    /// While joining: the pushes that follow its reply.
    joining: Option<Vec<Arc<PreparedMessage>>>,
}

impl Subscriber {
    /// Sends the frame, or buffers it while joining; true if it was sent
    /// now (the caller counts it).
    fn push(&mut self, frame: &Arc<PreparedMessage>, limit: usize) -> bool {
        match &mut self.joining {
            None => self.outbox.send(frame),
            Some(buffer) if buffer.len() < limit => {
                buffer.push(frame.clone());
                false
            }
            Some(_) => {
                // As a full send queue would.
                self.outbox.close(
                    CloseCode::POLICY_VIOLATION,
                    format!("slow consumer: send queue full ({limit} messages)"),
                );
                false
            }
        }
    }
}

#[derive(Default)]
struct State {
    /// The offset of the last publication delivered.
    offset: u64,
    /// The engine joined the channel and its offset is known.
    ready: bool,
    /// Delivered before the channel was ready, in order.
    early: Vec<Publication>,
    /// More than [`MAX_EARLY`] came early: catch up from history.
    early_overflow: bool,
    subscribers: HashMap<u64, Subscriber>,
    /// Subscriptions under way that have not joined yet.
    acquired: usize,
    /// Taken out of the registry: subscribe to its successor instead.
    removed: bool,
}

impl State {
    /// Pushes `frame` to every subscriber but the connections of the client
    /// `except`, and counts those sent now in `metrics`, once.
    fn push_all(
        &mut self,
        frame: &Arc<PreparedMessage>,
        except: Option<&str>,
        limit: usize,
        metrics: &Metrics,
    ) {
        let mut sent = 0;
        // The client's id is read only when one is left out: it lies apart
        // from the subscriber, one more cache line per delivery. The next
        // subscriber's connection is prefetched while this one's is written.
        let mut each = self.subscribers.values_mut().peekable();
        while let Some(subscriber) = each.next() {
            if let Some(next) = each.peek() {
                next.outbox.prefetch();
            }
            if except.is_none_or(|client| client != subscriber.client.client)
                && subscriber.push(frame, limit)
            {
                sent += 1;
            }
        }
        metrics.messages_out.fetch_add(sent, Ordering::Relaxed);
    }

    /// Delivers `publication` if it is the next one.
    fn deliver(
        &mut self,
        channel: &str,
        publication: &Publication,
        limit: usize,
        metrics: &Metrics,
    ) -> Delivery {
        if publication.offset <= self.offset {
            return Delivery::Done;
        }
        if publication.offset > self.offset + 1 {
            return Delivery::Gap { after: self.offset };
        }
        self.offset = publication.offset;
        if !self.subscribers.is_empty() {
            let frame = Arc::new(PreparedMessage::text(protocol::message_push(
                channel,
                publication,
            )));
            self.push_all(&frame, None, limit, metrics);
        }
        Delivery::Done
    }
}

/// One channel with subscribers on this node.
pub struct Channel {
    name: String,
    state: Mutex<State>,
    opened: tokio::sync::OnceCell<()>,
}

impl Channel {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The channel's full name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `open` once for this channel (the engine joins it and reads its
    /// offset, then calls [`Registry::make_ready`]); later callers wait for
    /// the first, and try again if it failed.
    ///
    /// # Errors
    ///
    /// `open`'s error.
    pub async fn open_once<F, Fut>(&self, open: F) -> Result<(), HubError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(), HubError>>,
    {
        self.opened.get_or_try_init(open).await.map(|_| ())
    }
}

/// What [`Registry::deliver`] did with a publication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Delivered, or nothing to do (a duplicate, a channel without
    /// subscribers here, one not ready yet).
    Done,
    /// Publications after `after` are missing before this one: fill the gap
    /// from history, then deliver it again.
    Gap {
        /// The offset delivered last.
        after: u64,
    },
}

/// A presence event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceEvent {
    /// A client subscribed.
    Join,
    /// A client left.
    Leave,
}

impl PresenceEvent {
    /// The push's name.
    pub fn as_str(self) -> &'static str {
        match self {
            PresenceEvent::Join => "join",
            PresenceEvent::Leave => "leave",
        }
    }
}

/// A subscription to make: who, where.
pub struct Join<'a> {
    /// The subscriber's queue.
    pub outbox: &'a Outbox,
    /// The subscriber as presence lists it.
    pub client: &'a Arc<ClientInfo>,
    /// The channel's subscriber limit.
    pub max_subscribers: usize,
}

/// Every channel with subscribers on this node: memory is kept for live
/// channels only.
pub struct Registry {
    live: Mutex<HashMap<String, Arc<Channel>>>,
    metrics: Arc<Metrics>,
    /// Frames a joining subscriber may buffer; set from the send queue.
    buffer_limit: usize,
    /// Namespaces whose `join` and `leave` are not pushed.
    quiet: HashSet<String>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    /// An empty registry; a subscriber joining buffers at most
    /// `buffer_limit` pushes.
    pub fn new(metrics: Arc<Metrics>, buffer_limit: usize) -> Self {
        Registry {
            live: Mutex::new(HashMap::new()),
            metrics,
            buffer_limit: buffer_limit.max(1),
            quiet: HashSet::new(),
        }
    }

    /// The same, pushing no `join` and `leave` on the channels of these
    /// namespaces (`join_leave = false`: presence is listed, not pushed).
    #[must_use]
    pub fn without_join_leave(mut self, namespaces: impl IntoIterator<Item = String>) -> Self {
        self.quiet = namespaces.into_iter().collect();
        self
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Channel>>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, channel: &str) -> Option<Arc<Channel>> {
        self.lock().get(channel).cloned()
    }

    /// The offset this node delivered last on `channel`, if it is live and
    /// ready here.
    pub fn offset(&self, channel: &str) -> Option<u64> {
        let live = self.get(channel)?;
        let state = live.lock();
        state.ready.then_some(state.offset)
    }

    /// The live channel, created if needed, held for a subscription until
    /// [`begin_join`](Self::begin_join) or [`release`](Self::release).
    pub fn acquire(&self, channel: &str) -> Arc<Channel> {
        let mut live = self.lock();
        let entry = live.entry(channel.to_string()).or_insert_with(|| {
            Arc::new(Channel {
                name: channel.to_string(),
                state: Mutex::default(),
                opened: tokio::sync::OnceCell::new(),
            })
        });
        entry.lock().acquired += 1;
        entry.clone()
    }

    /// Gives back a channel [`acquire`](Self::acquire)d for a subscription
    /// that failed before joining. True if the channel left the registry
    /// (the engine may leave it too).
    pub fn release(&self, channel: &Arc<Channel>) -> bool {
        {
            let mut state = channel.lock();
            state.acquired = state.acquired.saturating_sub(1);
        }
        self.remove_if_empty(channel)
    }

    /// Marks `channel` ready at `offset` (the engine joined it, then read
    /// it) and delivers what came meanwhile. Returns the offset to catch up
    /// from if what came early does not follow on.
    pub fn make_ready(&self, channel: &Channel, offset: u64) -> Option<u64> {
        let mut state = channel.lock();
        state.offset = offset;
        state.ready = true;
        let early = std::mem::take(&mut state.early);
        let mut gap = std::mem::take(&mut state.early_overflow);
        for publication in &early {
            if let Delivery::Gap { .. } =
                state.deliver(&channel.name, publication, self.buffer_limit, &self.metrics)
            {
                gap = true;
                break;
            }
        }
        self.metrics
            .deliveries
            .fetch_add(state.offset - offset, Ordering::Relaxed);
        gap.then_some(state.offset)
    }

    /// Delivers a publication to this node's subscribers of `channel`, in
    /// offset order.
    pub fn deliver(&self, channel: &str, publication: &Publication) -> Delivery {
        let Some(live) = self.get(channel) else {
            return Delivery::Done;
        };
        let mut state = live.lock();
        if state.removed {
            return Delivery::Done;
        }
        if !state.ready {
            if state.early.len() < MAX_EARLY {
                state.early.push(publication.clone());
            } else {
                state.early_overflow = true;
            }
            return Delivery::Done;
        }
        let before = state.offset;
        let delivery = state.deliver(channel, publication, self.buffer_limit, &self.metrics);
        if state.offset > before {
            bump(&self.metrics.deliveries);
        }
        delivery
    }

    /// Pushes `join` or `leave` of `client` to this node's other
    /// subscribers of `channel`.
    pub fn presence_event(&self, channel: &str, event: PresenceEvent, client: &ClientInfo) {
        let namespace = channel
            .split_once(':')
            .map_or(channel, |(namespace, _)| namespace);
        if self.quiet.contains(namespace) {
            return;
        }
        let Some(live) = self.get(channel) else {
            return;
        };
        let mut state = live.lock();
        let others = state
            .subscribers
            .values()
            .any(|s| s.client.client != client.client);
        if state.removed || !others {
            return;
        }
        let frame = Arc::new(PreparedMessage::text(protocol::presence_push(
            event.as_str(),
            channel,
            client,
        )));
        state.push_all(
            &frame,
            Some(&client.client),
            self.buffer_limit,
            &self.metrics,
        );
    }

    /// Adds a subscriber to an acquired, ready channel, joining: its pushes
    /// are buffered until [`finish_join`](Self::finish_join). Returns the
    /// channel's offset, the last publication the subscriber will not be
    /// pushed.
    ///
    /// # Errors
    ///
    /// `channel_full` (the channel is released).
    pub fn begin_join(&self, channel: &Arc<Channel>, join: Join<'_>) -> Result<u64, HubError> {
        let mut state = channel.lock();
        state.acquired = state.acquired.saturating_sub(1);
        if state.subscribers.len() >= join.max_subscribers {
            drop(state);
            self.remove_if_empty(channel);
            return Err(HubError::new(
                ErrorCode::ChannelFull,
                format!(
                    "channel {} has its maximum of {} subscribers",
                    channel.name, join.max_subscribers
                ),
            ));
        }
        state.subscribers.insert(
            join.outbox.id,
            Subscriber {
                outbox: join.outbox.clone(),
                client: join.client.clone(),
                joining: Some(Vec::new()),
            },
        );
        self.metrics.subscriptions.fetch_add(1, Ordering::Relaxed);
        debug_assert!(state.ready, "begin_join on a channel that is not ready");
        Ok(state.offset)
    }

    /// Queues the reply of a joining subscriber, then what was pushed to it
    /// meanwhile; from now on it is pushed to directly.
    pub fn finish_join(&self, channel: &Channel, id: u64, reply: String) {
        let mut state = channel.lock();
        let Some(subscriber) = state.subscribers.get_mut(&id) else {
            return;
        };
        subscriber.outbox.push_text(reply);
        for frame in subscriber.joining.take().unwrap_or_default() {
            subscriber.outbox.push(&frame);
        }
    }

    /// Unsubscribes connection `id` from `channel`. Returns whether it was
    /// subscribed, and whether the channel left the registry with it (the
    /// engine may leave it too).
    pub fn unsubscribe(&self, channel: &str, id: u64) -> (bool, bool) {
        let Some(live) = self.get(channel) else {
            return (false, false);
        };
        let gone = live.lock().subscribers.remove(&id).is_some();
        if !gone {
            return (false, false);
        }
        crate::metrics::drop_one(&self.metrics.subscriptions);
        (true, self.remove_if_empty(&live))
    }

    /// The clients subscribed to `channel` on this node, by client id.
    pub fn presence(&self, channel: &str) -> Vec<Arc<ClientInfo>> {
        let Some(live) = self.get(channel) else {
            return Vec::new();
        };
        let state = live.lock();
        let mut clients: Vec<Arc<ClientInfo>> = state
            .subscribers
            .values()
            .map(|s| s.client.clone())
            .collect();
        clients.sort_by(|a, b| a.client.cmp(&b.client));
        clients
    }

    /// Closes every connection subscribed to `channel` here: publications
    /// were missed that history no longer holds. The clients reconnect and
    /// recover (or are told `recovery_impossible`); the channel goes on from
    /// `offset`.
    pub fn lost(&self, channel: &str, offset: u64) {
        let Some(live) = self.get(channel) else {
            return;
        };
        let mut state = live.lock();
        // Also lower, when Redis lost its data and starts offsets again.
        state.offset = offset;
        for subscriber in state.subscribers.values() {
            subscriber.outbox.close(
                CloseCode::SERVICE_RESTART,
                format!("missed publications of {channel}: reconnect and recover"),
            );
        }
        tracing::warn!(
            channel,
            subscribers = state.subscribers.len(),
            "publications were lost between nodes: their subscribers must recover"
        );
    }

    /// Takes a channel without subscribers (and with no subscription under
    /// way) out of the registry. True if it did.
    fn remove_if_empty(&self, channel: &Arc<Channel>) -> bool {
        let mut live = self.lock();
        let mut state = channel.lock();
        if !state.subscribers.is_empty() || state.acquired > 0 || state.removed {
            return false;
        }
        state.removed = true;
        drop(state);
        if live
            .get(&channel.name)
            .is_some_and(|c| Arc::ptr_eq(c, channel))
        {
            live.remove(&channel.name);
        }
        true
    }

    /// Whether `channel` is live on this node.
    pub fn is_live(&self, channel: &str) -> bool {
        self.lock().contains_key(channel)
    }

    /// The names of the channels live on this node.
    pub fn live_names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Channels with subscribers now.
    pub fn live_channels(&self) -> usize {
        self.lock().len()
    }
}

/// A real connection for the hub's unit tests: an [`Outbox`] over the
/// server end of an in-memory pipe, and the client end that reads what it
/// sends.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};

    use duplex::{Message, ReadHalf, Role, WebSocket, WebSocketConfig, WriteHalf};
    use futures_util::StreamExt;
    use tokio::io::DuplexStream;

    use super::Outbox;
    use crate::metrics::Metrics;

    /// The client's end of a test connection.
    pub(crate) struct Peer {
        client: WebSocket<DuplexStream>,
        _server: (ReadHalf<DuplexStream>, WriteHalf<DuplexStream>),
    }

    /// An outbox of connection `id` with `limit` frames of queue, over a
    /// pipe that holds `pipe` bytes before the socket is "full".
    pub(crate) fn outbox(
        id: u64,
        limit: usize,
        pipe: usize,
        metrics: &Arc<Metrics>,
    ) -> (Outbox, Peer) {
        let (client, server) = tokio::io::duplex(pipe);
        let server = WebSocket::from_raw_socket(server, Role::Server, WebSocketConfig::default());
        let (read, write) = server.split();
        let outbox = Outbox::new(id, write.sender(), limit, metrics.clone());
        let client = WebSocket::from_raw_socket(client, Role::Client, WebSocketConfig::default());
        (
            outbox,
            Peer {
                client,
                _server: (read, write),
            },
        )
    }

    impl Peer {
        /// The next message already sent, if there is one.
        pub(crate) fn try_recv(&mut self) -> Result<Message, &'static str> {
            let mut cx = Context::from_waker(Waker::noop());
            match self.client.poll_next_unpin(&mut cx) {
                Poll::Ready(Some(Ok(message))) => Ok(message),
                Poll::Ready(Some(Err(_))) | Poll::Ready(None) => Err("the connection ended"),
                Poll::Pending => Err("nothing sent"),
            }
        }

        /// The next message, waiting for it.
        pub(crate) async fn recv(&mut self) -> Message {
            self.client
                .next()
                .await
                .expect("the connection ended")
                .expect("the connection failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn client(id: u64, metrics: &Arc<Metrics>) -> (Outbox, Arc<ClientInfo>, testing::Peer) {
        let (outbox, frames) = testing::outbox(id, 4096, 1 << 20, metrics);
        let info = Arc::new(ClientInfo {
            client: format!("c{id}"),
            user: String::new(),
            info: json!({}),
        });
        (outbox, info, frames)
    }

    fn join<'a>(outbox: &'a Outbox, info: &'a Arc<ClientInfo>) -> Join<'a> {
        Join {
            outbox,
            client: info,
            max_subscribers: 10,
        }
    }

    fn text(message: &duplex::Message) -> String {
        message.as_text().unwrap_or_default().to_string()
    }

    fn publication(offset: u64) -> Publication {
        Publication {
            offset,
            time: 0,
            data: Arc::from(format!("{offset}")),
        }
    }

    /// A ready channel with one subscriber joined at once.
    fn subscribed(registry: &Registry, outbox: &Outbox, info: &Arc<ClientInfo>) -> Arc<Channel> {
        let channel = registry.acquire("chat:x");
        if registry.offset("chat:x").is_none() {
            assert_eq!(registry.make_ready(&channel, 0), None);
        }
        let offset = registry.begin_join(&channel, join(outbox, info)).unwrap();
        registry.finish_join(&channel, outbox.id, format!("offset {offset}"));
        channel
    }

    #[test]
    fn joining_and_leaving_concurrently_never_loses_a_subscriber() {
        let metrics = Arc::new(Metrics::default());
        let registry = Arc::new(Registry::new(metrics.clone(), 100));
        let churn = |id: u64| {
            let registry = registry.clone();
            let metrics = metrics.clone();
            std::thread::spawn(move || {
                let (outbox, info, _frames) = client(id, &metrics);
                for _ in 0..2000 {
                    let channel = registry.acquire("chat:x");
                    if registry.offset("chat:x").is_none() {
                        registry.make_ready(&channel, 0);
                    }
                    registry.begin_join(&channel, join(&outbox, &info)).unwrap();
                    registry.finish_join(&channel, id, String::new());
                    assert!(registry.unsubscribe("chat:x", id).0);
                }
            })
        };
        let threads = [churn(1), churn(2), churn(3)];
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(registry.live_channels(), 0, "empty channels are taken out");

        let (outbox, info, mut frames) = client(9, &metrics);
        subscribed(&registry, &outbox, &info);
        assert_eq!(text(&frames.try_recv().unwrap()), "offset 0");
        assert_eq!(registry.deliver("chat:x", &publication(1)), Delivery::Done);
        assert!(text(&frames.try_recv().unwrap()).contains("\"offset\":1"));
        assert_eq!(registry.offset("chat:x"), Some(1));
    }

    #[test]
    fn a_full_queue_marks_a_slow_consumer_once() {
        let metrics = Arc::new(Metrics::default());
        // The pipe takes the first frame ("a": 3 bytes) and no more; the
        // next two wait in the queue of 2, and the fourth finds it full.
        let (outbox, _peer) = testing::outbox(1, 2, 3, &metrics);
        assert!(outbox.push_text("a".into()));
        assert!(outbox.push_text("b".into()));
        assert!(outbox.push_text("c".into()));
        assert!(!outbox.push_text("d".into()));
        assert!(!outbox.push_text("e".into()));
        assert_eq!(metrics.dropped.load(Ordering::Relaxed), 1);
        let (code, reason) = futures_util::FutureExt::now_or_never(outbox.closed()).unwrap();
        assert_eq!(code, CloseCode::POLICY_VIOLATION);
        assert_eq!(reason, "slow consumer: send queue full (2 messages)");
    }

    #[test]
    fn duplicates_are_dropped_and_gaps_reported() {
        let metrics = Arc::new(Metrics::default());
        let registry = Registry::new(metrics.clone(), 100);
        let (outbox, info, mut frames) = client(1, &metrics);
        subscribed(&registry, &outbox, &info);
        frames.try_recv().unwrap();
        assert_eq!(registry.deliver("chat:x", &publication(1)), Delivery::Done);
        assert_eq!(registry.deliver("chat:x", &publication(1)), Delivery::Done);
        assert_eq!(
            registry.deliver("chat:x", &publication(3)),
            Delivery::Gap { after: 1 }
        );
        assert_eq!(registry.deliver("chat:x", &publication(2)), Delivery::Done);
        assert_eq!(registry.deliver("chat:x", &publication(3)), Delivery::Done);
        let offsets: Vec<String> = std::iter::from_fn(|| frames.try_recv().ok())
            .map(|f| text(&f))
            .collect();
        assert_eq!(offsets.len(), 3, "1, 2, 3 once each: {offsets:?}");
        assert!(offsets[2].contains("\"offset\":3"));
    }

    #[test]
    fn publications_before_ready_are_replayed_after_the_offset() {
        let metrics = Arc::new(Metrics::default());
        let registry = Registry::new(metrics.clone(), 100);
        let channel = registry.acquire("chat:x");
        // Delivered between the engine joining and the offset read.
        registry.deliver("chat:x", &publication(5));
        registry.deliver("chat:x", &publication(6));
        assert_eq!(registry.make_ready(&channel, 5), None);
        assert_eq!(registry.offset("chat:x"), Some(6), "6 came after the read");

        let other = registry.acquire("chat:y");
        registry.deliver("chat:y", &publication(9));
        assert_eq!(registry.make_ready(&other, 5), Some(5), "6 to 8 missing");
    }

    #[test]
    fn pushes_while_joining_follow_the_reply() {
        let metrics = Arc::new(Metrics::default());
        let registry = Registry::new(metrics.clone(), 100);
        let (first, first_info, _first_frames) = client(1, &metrics);
        let channel = subscribed(&registry, &first, &first_info);
        let (outbox, info, mut frames) = client(2, &metrics);
        let channel2 = registry.acquire("chat:x");
        assert!(Arc::ptr_eq(&channel, &channel2));
        let offset = registry
            .begin_join(&channel2, join(&outbox, &info))
            .unwrap();
        assert_eq!(offset, 0);
        registry.deliver("chat:x", &publication(1));
        assert!(frames.try_recv().is_err(), "buffered while joining");
        registry.finish_join(&channel2, 2, "reply".into());
        assert_eq!(text(&frames.try_recv().unwrap()), "reply");
        assert!(text(&frames.try_recv().unwrap()).contains("\"offset\":1"));
    }

    #[test]
    fn a_namespace_without_join_leave_pushes_none() {
        let metrics = Arc::new(Metrics::default());
        let registry = Registry::new(metrics.clone(), 100).without_join_leave(["chat".to_string()]);
        let (a, a_info, mut a_frames) = client(1, &metrics);
        subscribed(&registry, &a, &a_info);
        a_frames.try_recv().unwrap();
        let (_, c_info, _) = client(3, &metrics);
        registry.presence_event("chat:x", PresenceEvent::Join, &c_info);
        registry.presence_event("chat:x", PresenceEvent::Leave, &c_info);
        assert!(a_frames.try_recv().is_err(), "no join or leave pushed");
        // Publications still are.
        registry.deliver("chat:x", &publication(1));
        assert!(text(&a_frames.try_recv().unwrap()).contains("\"offset\":1"));
    }

    #[test]
    fn presence_events_skip_the_client_itself() {
        let metrics = Arc::new(Metrics::default());
        let registry = Registry::new(metrics.clone(), 100);
        let (a, a_info, mut a_frames) = client(1, &metrics);
        let (b, b_info, mut b_frames) = client(2, &metrics);
        subscribed(&registry, &a, &a_info);
        subscribed(&registry, &b, &b_info);
        a_frames.try_recv().unwrap();
        b_frames.try_recv().unwrap();
        registry.presence_event("chat:x", PresenceEvent::Join, &b_info);
        assert!(text(&a_frames.try_recv().unwrap()).contains("\"push\":\"join\""));
        assert!(b_frames.try_recv().is_err(), "not to itself");
    }

    #[test]
    fn a_full_channel_refuses_and_releases() {
        let metrics = Arc::new(Metrics::default());
        let registry = Registry::new(metrics.clone(), 100);
        let (outbox, info, _frames) = client(1, &metrics);
        let channel = registry.acquire("chat:x");
        registry.make_ready(&channel, 0);
        let full = Join {
            max_subscribers: 0,
            ..join(&outbox, &info)
        };
        let err = registry.begin_join(&channel, full).unwrap_err();
        assert_eq!(err.code, ErrorCode::ChannelFull);
        assert_eq!(registry.live_channels(), 0);
    }
}
