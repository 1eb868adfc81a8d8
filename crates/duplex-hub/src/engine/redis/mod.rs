//! The Redis engine: several `duplex serve` nodes share one Redis (or
//! several, each holding the channels a stable hash of their name gives it).
//!
//! # What Redis holds, per channel `C`
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `duplex:o:{C}` | string | the last offset (`INCR`); never expires, so offsets are never reused |
//! | `duplex:h:{C}` | stream | history: entry id `0-OFFSET`, fields `t` (ms) and `d` (data), `MAXLEN` = `history_size`, the key expiring `history_ttl_secs` after the last publication |
//! | `duplex:p:{C}` | hash | presence: client id to the client's JSON |
//! | `duplex:e:{C}` | sorted set | presence: client id to the time (ms) its entry expires |
//! | `duplex:c:{C}` | pub/sub channel | `p OFFSET TIME DATA`, `j CLIENT`, `l CLIENT` |
//!
//! # Publishing
//!
//! One Lua script does, atomically: `INCR` the offset, `XADD` the entry
//! (trimmed to `history_size`), set the history's expiry, `PUBLISH` to the
//! channel. A publication is acknowledged once the script returned: Redis
//! holds its offset and history entry.
//!
//! # Delivering, without a gap
//!
//! Each node holds one pub/sub connection per Redis server and subscribes
//! to the channels it has subscribers for. A channel becomes live on a
//! node in this order: `SUBSCRIBE` (confirmed), then `GET` the offset. A
//! publication at or below that offset was stored before the read; one
//! above it was published after the subscription began, so it arrives over
//! pub/sub; what arrives between the two is kept and replayed
//! ([`Registry::make_ready`]).
//!
//! Pub/sub delivers at most once. A node that sees an offset further ahead
//! than the next one fills the gap from the history stream first; a node
//! whose pub/sub connection drops reconnects with backoff, subscribes again
//! and catches every live channel up from history before it delivers on
//! (a PING every few seconds finds a connection that died without a word).
//! If history no longer holds what was missed, the channel's subscribers on
//! that node are closed with 1012 so that they reconnect and recover.
//!
//! A random epoch in `duplex:epoch` tells a node that Redis lost its data
//! (restarted without persistence): then its channels start again from
//! Redis's offsets and their subscribers are told to recover the same way.
//!
//! # Presence
//!
//! Joining writes the client to the hash and its expiry to the sorted set,
//! and publishes `j`; leaving removes both and publishes `l`, in one script
//! each. Every node refreshes the expiry of its own clients every third of
//! `presence_ttl_secs`, and removes expired entries (publishing `l` for
//! each, once, since the script that removes an entry is the one that
//! publishes it): a node killed without a word has its clients gone within
//! `presence_ttl_secs` plus one refresh.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink};
use tokio_util::sync::CancellationToken;

use super::{EngineConfig, History, mask_password, unavailable};
use crate::metrics::{Metrics, bump};
use crate::protocol::{ClientInfo, ErrorCode, HubError, Publication};
use crate::registry::{Delivery, Registry};
use crate::storage::Retention;

mod docs;
mod listener;
mod scripts;
mod shard;

pub use docs::{DocEvent, RedisDocs};
pub use shard::{jump_hash, shard_of};

use listener::{Event, listen, refresh_presence};
use scripts::{
    Scripts, join_script, lease_script, leave_script, presence_script, publish_script,
    refresh_script,
};

/// Every key starts with this.
const PREFIX: &str = "duplex";
/// One Redis server and this node's connections to it.
struct Shard {
    /// Its URL, the password masked.
    name: String,
    client: redis::Client,
    commands: ConnectionManager,
    /// The pub/sub connection's subscribing half; `None` while it is down.
    /// Held across every SUBSCRIBE and UNSUBSCRIBE, so they happen in order.
    subscriptions: tokio::sync::Mutex<Option<PubSubSink>>,
    /// The pub/sub connection is up.
    listening: AtomicBool,
}

struct Inner {
    shards: Vec<Shard>,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    scripts: Scripts,
    timeout: Duration,
    presence_ttl: Duration,
    /// This node's clients in presence, per channel: what it refreshes.
    present: Mutex<HashMap<String, HashMap<String, Arc<ClientInfo>>>>,
    /// Who holds leases: this node's name and a random instance id.
    holder: String,
    stop: CancellationToken,
    /// Documents loaded here, by how many tasks (pub/sub subscriptions).
    doc_refs: Mutex<HashMap<String, usize>>,
    /// Where updates and awareness of loaded documents go.
    doc_events: OnceLock<tokio::sync::mpsc::UnboundedSender<(String, DocEvent)>>,
}

/// Redis, shared by several nodes.
pub struct RedisEngine {
    inner: Arc<Inner>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for RedisEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shards: Vec<&str> = self.inner.shards.iter().map(|s| s.name.as_str()).collect();
        f.debug_struct("RedisEngine")
            .field("shards", &shards)
            .finish_non_exhaustive()
    }
}

fn key(kind: &str, channel: &str) -> String {
    format!("{PREFIX}:{kind}:{{{channel}}}")
}

/// The keys of a channel's presence scripts: hash, sorted set, pub/sub
/// channel (KEYS[1], KEYS[2], KEYS[3]).
fn presence_keys(channel: &str) -> [String; 3] {
    [key("p", channel), key("e", channel), key("c", channel)]
}

fn parse_offset(id: &str) -> Option<u64> {
    id.strip_prefix("0-")?.parse().ok()
}

/// Publications from an `XRANGE`/`XREVRANGE` reply.
fn publications(entries: Vec<(String, Vec<String>)>, min_time: u64) -> Vec<Publication> {
    entries
        .into_iter()
        .filter_map(|(id, fields)| {
            let offset = parse_offset(&id)?;
            let mut time = None;
            let mut data = None;
            for pair in fields.chunks_exact(2) {
                match pair[0].as_str() {
                    "t" => time = pair[1].parse().ok(),
                    "d" => data = Some(Arc::from(pair[1].as_str())),
                    _ => {}
                }
            }
            Some(Publication {
                offset,
                time: time?,
                data: data?,
            })
        })
        .filter(|p| p.time >= min_time)
        .collect()
}

impl RedisEngine {
    /// Connects to every Redis of `config` and starts listening.
    ///
    /// # Errors
    ///
    /// A Redis URL that does not parse, or a Redis that does not answer
    /// within the timeout: the message names it (password masked).
    pub async fn connect(
        config: &EngineConfig,
        node: &str,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
    ) -> Result<RedisEngine, HubError> {
        let timeout = config.timeout();
        let mut shards = Vec::new();
        for url in config.redis_urls() {
            let name = mask_password(&url);
            let failed = |err: &dyn std::fmt::Display| {
                HubError::new(ErrorCode::Internal, format!("Redis {name}: {err}"))
            };
            let client = redis::Client::open(url.as_str()).map_err(|err| failed(&err))?;
            let manager = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_secs(2));
            let mut commands =
                tokio::time::timeout(timeout, client.get_connection_manager_with_config(manager))
                    .await
                    .map_err(|_| failed(&"no answer in time"))?
                    .map_err(|err| failed(&err))?;
            let pong: String =
                tokio::time::timeout(timeout, redis::cmd("PING").query_async(&mut commands))
                    .await
                    .map_err(|_| failed(&"no answer in time"))?
                    .map_err(|err| failed(&err))?;
            debug_assert_eq!(pong, "PONG");
            shards.push(Shard {
                name,
                client,
                commands,
                subscriptions: tokio::sync::Mutex::new(None),
                listening: AtomicBool::new(false),
            });
        }
        let mut instance = [0u8; 4];
        let _ = getrandom::fill(&mut instance);
        let instance: String = instance.iter().map(|b| format!("{b:02x}")).collect();
        let inner = Arc::new(Inner {
            shards,
            registry,
            metrics,
            scripts: Scripts {
                publish: publish_script(),
                join: join_script(),
                leave: leave_script(),
                presence: presence_script(),
                refresh: refresh_script(),
                lease: lease_script(),
                doc_append: docs::append_script(),
                doc_compact: docs::compact_script(),
            },
            timeout,
            presence_ttl: Duration::from_secs(config.presence_ttl_secs),
            present: Mutex::new(HashMap::new()),
            holder: format!("{node}/{instance}"),
            stop: CancellationToken::new(),
            doc_refs: Mutex::new(HashMap::new()),
            doc_events: OnceLock::new(),
        });
        let mut tasks = Vec::new();
        let mut first = Vec::new();
        for index in 0..inner.shards.len() {
            let (connected, ready) = tokio::sync::oneshot::channel();
            first.push(ready);
            tasks.push(tokio::spawn(listen(inner.clone(), index, connected)));
        }
        tasks.push(tokio::spawn(refresh_presence(inner.clone())));
        // Serve once every pub/sub connection is up (or has failed once).
        for ready in first {
            let _ = tokio::time::timeout(timeout, ready).await;
        }
        Ok(RedisEngine {
            inner,
            tasks: Mutex::new(tasks),
        })
    }

    fn shard(&self, channel: &str) -> &Shard {
        self.inner.shard(channel)
    }

    /// The documents' side: their update logs and what nodes tell each
    /// other of them.
    pub fn docs(&self) -> RedisDocs {
        RedisDocs {
            inner: self.inner.clone(),
        }
    }

    pub(super) async fn publish(
        &self,
        channel: &str,
        data: Arc<str>,
        retention: Retention,
    ) -> Result<Publication, HubError> {
        let shard = self.shard(channel);
        let mut invocation = self.inner.scripts.publish.prepare_invoke();
        invocation
            .key(key("o", channel))
            .key(key("h", channel))
            .key(key("c", channel))
            .arg(retention.size)
            .arg(retention.ttl_secs.saturating_mul(1000))
            .arg(&*data);
        let mut commands = shard.commands.clone();
        let (offset, time): (u64, String) = self
            .inner
            .call(shard, invocation.invoke_async(&mut commands))
            .await?;
        Ok(Publication {
            offset,
            time: time.parse().unwrap_or(0),
            data,
        })
    }

    pub(super) async fn last_offset(&self, channel: &str) -> Result<u64, HubError> {
        self.inner.last_offset(channel).await
    }

    pub(super) async fn range(
        &self,
        channel: &str,
        after: u64,
        upto: u64,
        min_time: u64,
    ) -> Result<Vec<Publication>, HubError> {
        self.inner.range(channel, after, upto, min_time).await
    }

    pub(super) async fn newest(
        &self,
        channel: &str,
        before: u64,
        upto: u64,
        min_time: u64,
        limit: usize,
    ) -> Result<Vec<Publication>, HubError> {
        let top = before.saturating_sub(1).min(upto);
        if before == 0 || top == 0 || limit == 0 {
            return Ok(Vec::new());
        }
        let shard = self.shard(channel);
        let mut commands = shard.commands.clone();
        let entries: Vec<(String, Vec<String>)> = self
            .inner
            .call(
                shard,
                commands.xrevrange_count(key("h", channel), format!("0-{top}"), "-", limit),
            )
            .await?;
        let mut found = publications(entries, min_time);
        found.reverse();
        Ok(found)
    }

    pub(super) async fn open_channel(&self, channel: &str) -> Result<u64, HubError> {
        let shard = self.shard(channel);
        {
            let mut subscriptions = shard.subscriptions.lock().await;
            let Some(sink) = subscriptions.as_mut() else {
                bump(&self.inner.metrics.engine_unavailable);
                return Err(unavailable(format!(
                    "Redis {}: not connected (reconnecting)",
                    shard.name
                )));
            };
            self.inner
                .call(shard, sink.subscribe(key("c", channel)))
                .await?;
        }
        self.inner.last_offset(channel).await
    }

    pub(super) fn close_channel(&self, channel: &str) {
        let inner = self.inner.clone();
        let channel = channel.to_string();
        tokio::spawn(async move {
            let shard = inner.shard(&channel);
            let mut subscriptions = shard.subscriptions.lock().await;
            // Live again since: a subscription made after this one was
            // asked for; keep it.
            if inner.registry.is_live(&channel) {
                return;
            }
            if let Some(sink) = subscriptions.as_mut()
                && let Err(err) = inner
                    .call(shard, sink.unsubscribe(key("c", &channel)))
                    .await
            {
                tracing::debug!(%err, channel, "unsubscribing failed");
            }
        });
    }

    pub(super) async fn catch_up(&self, channel: &str) -> Result<(), HubError> {
        super::catch_up(
            self.inner.as_ref(),
            &self.inner.registry,
            &self.inner.metrics,
            channel,
            None,
        )
        .await
    }

    pub(super) async fn join(
        &self,
        channel: &str,
        client: &Arc<ClientInfo>,
    ) -> Result<(), HubError> {
        let shard = self.shard(channel);
        let json = serde_json::to_string(&**client).unwrap_or_default();
        let mut invocation = self.inner.scripts.join.prepare_invoke();
        invocation
            .key(&presence_keys(channel)[..])
            .arg(&client.client)
            .arg(json)
            .arg(self.inner.presence_ttl.as_millis() as u64);
        let mut commands = shard.commands.clone();
        let () = self
            .inner
            .call(shard, async {
                invocation
                    .invoke_async::<i64>(&mut commands)
                    .await
                    .map(|_| ())
            })
            .await?;
        self.inner
            .lock_present()
            .entry(channel.to_string())
            .or_default()
            .insert(client.client.clone(), client.clone());
        Ok(())
    }

    pub(super) async fn leave(&self, channel: &str, client: &Arc<ClientInfo>) {
        {
            let mut present = self.inner.lock_present();
            if let Some(clients) = present.get_mut(channel) {
                clients.remove(&client.client);
                if clients.is_empty() {
                    present.remove(channel);
                }
            }
        }
        let shard = self.shard(channel);
        let json = serde_json::to_string(&**client).unwrap_or_default();
        let mut invocation = self.inner.scripts.leave.prepare_invoke();
        invocation
            .key(&presence_keys(channel)[..])
            .arg(&client.client)
            .arg(json);
        let mut commands = shard.commands.clone();
        let left = self
            .inner
            .call(shard, invocation.invoke_async::<i64>(&mut commands))
            .await;
        if let Err(err) = left {
            // Its entry expires by itself; `leave` is pushed then.
            tracing::debug!(%err, channel, "removing a presence entry failed");
        }
    }

    pub(super) async fn presence(&self, channel: &str) -> Result<Vec<ClientInfo>, HubError> {
        let shard = self.shard(channel);
        let mut invocation = self.inner.scripts.presence.prepare_invoke();
        invocation.key(&presence_keys(channel)[..]);
        let mut commands = shard.commands.clone();
        let listed: Vec<String> = self
            .inner
            .call(shard, invocation.invoke_async(&mut commands))
            .await?;
        let mut clients: Vec<ClientInfo> = listed
            .iter()
            .filter_map(|json| serde_json::from_str(json).ok())
            .collect();
        clients.sort_by(|a, b| a.client.cmp(&b.client));
        Ok(clients)
    }

    pub(super) async fn health(&self) -> Result<(), String> {
        for shard in &self.inner.shards {
            if !shard.listening.load(Ordering::Relaxed) {
                return Err(format!("Redis {}: pub/sub connection down", shard.name));
            }
            let mut commands = shard.commands.clone();
            let ping = self
                .inner
                .call(
                    shard,
                    redis::cmd("PING").query_async::<String>(&mut commands),
                )
                .await;
            if let Err(err) = ping {
                return Err(format!("Redis {}: {}", shard.name, err.message));
            }
        }
        Ok(())
    }

    pub(super) async fn hold_lease(&self, name: &str, ttl: Duration) -> bool {
        let shard = self.shard(name);
        let mut invocation = self.inner.scripts.lease.prepare_invoke();
        invocation
            .key(format!("{PREFIX}:lease:{name}"))
            .arg(&self.inner.holder)
            .arg(ttl.as_millis() as u64);
        let mut commands = shard.commands.clone();
        matches!(
            self.inner
                .call(shard, invocation.invoke_async::<i64>(&mut commands))
                .await,
            Ok(1)
        )
    }

    pub(super) async fn shutdown(&self) {
        self.inner.stop.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for task in tasks {
            let _ = task.await;
        }
    }
}

impl Inner {
    fn shard(&self, channel: &str) -> &Shard {
        &self.shards[shard_of(channel, self.shards.len())]
    }

    fn lock_doc_refs(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.doc_refs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The documents loaded here whose keys live on shard `index`.
    fn docs_of(&self, index: usize) -> Vec<String> {
        self.lock_doc_refs()
            .keys()
            .filter(|doc| shard_of(doc, self.shards.len()) == index)
            .cloned()
            .collect()
    }

    fn lock_present(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<String, Arc<ClientInfo>>>> {
        self.present.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs one Redis command within the timeout, timing it; a failure is
    /// `unavailable`.
    async fn call<T>(
        &self,
        shard: &Shard,
        command: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, HubError> {
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, command).await;
        self.metrics.engine_latency.observe(started.elapsed());
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                bump(&self.metrics.engine_unavailable);
                Err(unavailable(format!("Redis {}: {err}", shard.name)))
            }
            Err(_) => {
                bump(&self.metrics.engine_unavailable);
                Err(unavailable(format!(
                    "Redis {}: no answer within {} ms",
                    shard.name,
                    self.timeout.as_millis()
                )))
            }
        }
    }

    async fn last_offset(&self, channel: &str) -> Result<u64, HubError> {
        let shard = self.shard(channel);
        let mut commands = shard.commands.clone();
        let offset: Option<u64> = self.call(shard, commands.get(key("o", channel))).await?;
        Ok(offset.unwrap_or(0))
    }

    async fn range(
        &self,
        channel: &str,
        after: u64,
        upto: u64,
        min_time: u64,
    ) -> Result<Vec<Publication>, HubError> {
        if upto <= after {
            return Ok(Vec::new());
        }
        let shard = self.shard(channel);
        let mut commands = shard.commands.clone();
        let entries: Vec<(String, Vec<String>)> = self
            .call(
                shard,
                commands.xrange(
                    key("h", channel),
                    format!("0-{}", after + 1),
                    format!("0-{upto}"),
                ),
            )
            .await?;
        Ok(publications(entries, min_time))
    }

    /// Delivers one pub/sub message; fills a gap first if it reveals one.
    async fn handle(&self, channel: &str, event: Event) {
        match event {
            Event::Publication(publication) => {
                if let Delivery::Gap { .. } = self.registry.deliver(channel, &publication) {
                    let upto = Some(publication.offset - 1);
                    if let Err(err) =
                        super::catch_up(self, &self.registry, &self.metrics, channel, upto).await
                    {
                        tracing::warn!(%err, channel, "filling a gap failed");
                        return;
                    }
                    self.registry.deliver(channel, &publication);
                }
            }
            Event::Presence(event, client) => {
                self.registry.presence_event(channel, event, &client);
            }
        }
    }

    /// After a reconnection: every live channel of shard `index` catches
    /// up, and this node's presence entries are written again.
    async fn resync(&self, index: usize, lost_data: bool) {
        let channels: Vec<String> = self
            .registry
            .live_names()
            .into_iter()
            .filter(|c| shard_of(c, self.shards.len()) == index)
            .collect();
        for channel in &channels {
            if lost_data {
                match self.last_offset(channel).await {
                    Ok(offset) => self.registry.lost(channel, offset),
                    Err(err) => tracing::warn!(%err, channel, "reading an offset failed"),
                }
                continue;
            }
            if let Err(err) =
                super::catch_up(self, &self.registry, &self.metrics, channel, None).await
            {
                tracing::warn!(%err, channel, "catching up after a reconnection failed");
            }
        }
        self.refresh(index, true).await;
        if let Some(events) = self.doc_events.get() {
            for doc in self.docs_of(index) {
                let _ = events.send((doc, DocEvent::CatchUp));
            }
        }
    }

    /// Refreshes this node's presence entries on shard `index` (writes them
    /// again if `add`), and expires those of nodes gone.
    async fn refresh(&self, index: usize, add: bool) {
        let present: Vec<(String, Vec<Arc<ClientInfo>>)> = self
            .lock_present()
            .iter()
            .filter(|(channel, _)| shard_of(channel, self.shards.len()) == index)
            .map(|(channel, clients)| (channel.clone(), clients.values().cloned().collect()))
            .collect();
        let shard = &self.shards[index];
        for (channel, clients) in present {
            let mut invocation = self.scripts.refresh.prepare_invoke();
            invocation
                .key(&presence_keys(&channel)[..])
                .arg(self.presence_ttl.as_millis() as u64)
                .arg(if add { "add" } else { "touch" });
            for client in &clients {
                invocation.arg(&client.client);
                if add {
                    invocation.arg(serde_json::to_string(&**client).unwrap_or_default());
                }
            }
            let mut commands = shard.commands.clone();
            if let Err(err) = self
                .call(shard, invocation.invoke_async::<i64>(&mut commands))
                .await
            {
                tracing::debug!(%err, channel, "refreshing presence failed");
            }
        }
    }

    /// The epoch of shard `index`'s data, made if there is none.
    async fn epoch(&self, index: usize) -> Result<String, HubError> {
        let shard = &self.shards[index];
        let mut fresh = [0u8; 8];
        let _ = getrandom::fill(&mut fresh);
        let fresh: String = fresh.iter().map(|b| format!("{b:02x}")).collect();
        let mut commands = shard.commands.clone();
        let key = format!("{PREFIX}:epoch");
        let _: Option<String> = self
            .call(
                shard,
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&fresh)
                    .arg("NX")
                    .query_async(&mut commands),
            )
            .await?;
        self.call(shard, commands.get(&key)).await
    }
}

impl History for Inner {
    async fn last_offset(&self, channel: &str) -> Result<u64, HubError> {
        Inner::last_offset(self, channel).await
    }

    async fn range(
        &self,
        channel: &str,
        after: u64,
        upto: u64,
    ) -> Result<Vec<Publication>, HubError> {
        Inner::range(self, channel, after, upto, 0).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_entries_parse() {
        let entries = vec![
            (
                "0-3".to_string(),
                vec!["t".into(), "10".into(), "d".into(), "1".into()],
            ),
            (
                "0-4".to_string(),
                vec!["t".into(), "20".into(), "d".into(), "2".into()],
            ),
            (
                "7-1".to_string(),
                vec!["t".into(), "30".into(), "d".into(), "3".into()],
            ),
        ];
        let found = publications(entries, 15);
        assert_eq!(found.len(), 1, "too old, and not ours, are skipped");
        assert_eq!((found[0].offset, &*found[0].data), (4, "2"));
    }

    #[test]
    fn keys_name_the_channel() {
        assert_eq!(key("o", "chat:lobby"), "duplex:o:{chat:lobby}");
    }
}
