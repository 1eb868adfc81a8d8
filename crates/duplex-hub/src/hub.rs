//! The hub's core: configuration, channels, the engine and metrics together,
//! the one publish path every publisher (clients, the API, the feed) takes,
//! and the one subscribe path.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde_json::Value;

use crate::auth::{self, Claims, TokenError};
use crate::channel::ChannelName;
use crate::clock::Clock;
use crate::config::{Config, NamespaceConfig};
use crate::engine::{Engine, EngineKind, embedded::Embedded, redis::RedisEngine};
use crate::history;
use crate::metrics::{Metrics, bump};
use crate::protocol::{self, ClientInfo, ErrorCode, HubError, Publication};
use crate::registry::{Join, Outbox, Registry};
use crate::storage::Retention;

/// The hub: share it as `Arc<Hub>`.
#[derive(Debug)]
pub struct Hub {
    config: Config,
    api_key: Option<String>,
    registry: Arc<Registry>,
    engine: Engine,
    metrics: Arc<Metrics>,
    docs: Arc<crate::docs::Docs>,
    node: String,
    next_client: AtomicU64,
    client_prefix: String,
    reads: crate::history::Reads,
    verifier: auth::Verifier,
    ip_limits: Arc<crate::abuse::IpLimits>,
    hooks: crate::hooks::Hooks,
    clock: Clock,
}

/// A subscription to make, for [`Hub::subscribe`].
pub struct Subscribe<'a> {
    /// The request's id, for the reply.
    pub id: u64,
    /// The channel.
    pub channel: &'a ChannelName,
    /// Its namespace.
    pub namespace: &'a NamespaceConfig,
    /// The subscriber's queue.
    pub outbox: &'a Outbox,
    /// The subscriber as presence lists it.
    pub client: &'a Arc<ClientInfo>,
    /// Recover the publications after this offset.
    pub since: Option<u64>,
}

impl Hub {
    /// Opens the hub: its engine (SQLite in `data_dir`, created if missing,
    /// for history and documents; or Redis, connected, for both).
    ///
    /// # Errors
    ///
    /// An `internal` [`HubError`] if the configuration is invalid, storage
    /// cannot be opened, or Redis cannot be reached (the message names it).
    pub async fn open(config: Config, data_dir: &Path) -> Result<Arc<Hub>, HubError> {
        Hub::open_with_clock(config, data_dir, Clock::system()).await
    }

    /// [`Hub::open`], with `clock` as the time of day: the `time` of
    /// publications and the age limit of history, tokens' `exp` and `nbf`.
    ///
    /// # Errors
    ///
    /// As [`Hub::open`].
    pub async fn open_with_clock(
        config: Config,
        data_dir: &Path,
        clock: Clock,
    ) -> Result<Arc<Hub>, HubError> {
        config
            .validate()
            .map_err(|err| HubError::new(ErrorCode::Internal, err.to_string()))?;
        let metrics = Arc::new(Metrics::default());
        let verifier = auth::Verifier::from_config(&config.auth, metrics.clone())
            .map_err(|err| HubError::new(ErrorCode::Internal, err))?
            .with_clock(clock.clone());
        let quiet = config
            .namespaces
            .iter()
            .filter(|(_, namespace)| !namespace.join_leave)
            .map(|(name, _)| name.clone());
        let registry = Arc::new(
            Registry::new(metrics.clone(), config.limits.send_queue).without_join_leave(quiet),
        );
        let node = config
            .engine
            .node
            .clone()
            .unwrap_or_else(|| format!("{}:{}", hostname(), std::process::id()));
        let engine = match config.engine.kind {
            EngineKind::Embedded => Engine::Embedded(Embedded::open(
                data_dir,
                registry.clone(),
                metrics.clone(),
                clock.clone(),
            )?),
            EngineKind::Redis => Engine::Redis(
                RedisEngine::connect(&config.engine, &node, registry.clone(), metrics.clone())
                    .await?,
            ),
        };
        let shared = match &engine {
            Engine::Redis(redis) => Some(redis.docs()),
            Engine::Embedded(_) => None,
        };
        let docs = crate::docs::Docs::open(config.docs.clone(), data_dir, shared, clock.clone())
            .map_err(|err| HubError::new(ErrorCode::Internal, err.to_string()))?;
        let ip_limits = crate::abuse::IpLimits::new(
            crate::abuse::IpLimitSettings::from_config(&config.limits),
            Instant::now(),
        );
        let hooks = crate::hooks::Hooks::new(
            &config.proxy,
            metrics.clone(),
            config.limits.max_publication_size,
        );
        let mut prefix = [0u8; 4];
        let _ = getrandom::fill(&mut prefix);
        Ok(Arc::new(Hub {
            api_key: config.api_key(),
            config,
            registry,
            engine,
            metrics,
            docs,
            node,
            next_client: AtomicU64::new(1),
            client_prefix: prefix.iter().map(|b| format!("{b:02x}")).collect(),
            reads: crate::history::Reads::default(),
            verifier,
            ip_limits,
            hooks,
            clock,
        }))
    }

    /// The backend hooks (`[proxy]`).
    pub fn hooks(&self) -> &crate::hooks::Hooks {
        &self.hooks
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The limits per client address (connections, handshakes a second).
    pub fn ip_limits(&self) -> &Arc<crate::abuse::IpLimits> {
        &self.ip_limits
    }

    /// The history reads under way, shared by identical recoveries.
    pub(crate) fn reads(&self) -> &crate::history::Reads {
        &self.reads
    }

    /// The channel registry: this node's subscribers.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// This node's name (`engine.node`, else `hostname:pid`).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The collaborative documents.
    pub fn docs(&self) -> &Arc<crate::docs::Docs> {
        &self.docs
    }

    /// The publish API key, if the API is enabled.
    pub fn api_key(&self) -> Option<&str> {
        self.api_key.as_deref()
    }

    /// A new client id, unique in this process: a random prefix per start,
    /// then a counter.
    pub fn new_client_id(&self) -> (u64, String) {
        let n = self.next_client.fetch_add(1, Ordering::Relaxed);
        (n, format!("{}-{n}", self.client_prefix))
    }

    /// Parses a channel name and finds its namespace.
    ///
    /// # Errors
    ///
    /// `bad_channel` or `unknown_namespace`.
    pub fn channel(&self, name: &str) -> Result<(ChannelName, &NamespaceConfig), HubError> {
        let channel =
            ChannelName::parse(name).map_err(|err| HubError::new(ErrorCode::BadChannel, err.0))?;
        match self.config.namespaces.get(channel.namespace()) {
            Some(namespace) => Ok((channel, namespace)),
            None => {
                let known: Vec<&str> = self.config.namespaces.keys().map(String::as_str).collect();
                Err(HubError::new(
                    ErrorCode::UnknownNamespace,
                    format!(
                        "unknown namespace {:?}; namespaces are {}",
                        channel.namespace(),
                        known.join(", ")
                    ),
                ))
            }
        }
    }

    /// Verifies a token with the configured keys; refusals are counted in
    /// `/metrics` by reason.
    ///
    /// # Errors
    ///
    /// Why it is refused; also when no key is configured.
    pub async fn verify_token(&self, token: &str) -> Result<Claims, TokenError> {
        self.verifier.verify(token).await
    }

    /// Publishes `data` to `channel` (of `namespace`): checks its size,
    /// stores it through the engine, and returns it with its offset once it
    /// is stored. The rules of who may publish are the caller's.
    ///
    /// # Errors
    ///
    /// `message_too_big` over `limits.max_publication_size`; `internal` if
    /// storage failed; `unavailable` if Redis did not answer in time.
    pub async fn publish(
        &self,
        channel: &ChannelName,
        namespace: &NamespaceConfig,
        data: &Value,
    ) -> Result<Publication, HubError> {
        let started = Instant::now();
        let text = data.to_string();
        let max = self.config.limits.max_publication_size;
        if text.len() > max {
            return Err(HubError::new(
                ErrorCode::MessageTooBig,
                format!(
                    "publication data is {} bytes, over the limit of {max} (limits.max_publication_size)",
                    text.len()
                ),
            ));
        }
        let publication = self
            .engine
            .publish(channel.as_str(), Arc::from(text), retention(namespace))
            .await?;
        bump(&self.metrics.publications);
        self.metrics.observe_publish(started.elapsed());
        Ok(publication)
    }

    /// Subscribes a connection, recovering what it missed if asked: the
    /// channel is made live on this node if it is not, the subscriber joins
    /// at the channel's offset `C`, history after `since` up to `C` is read,
    /// and the reply (with it) is queued before any push after `C`. In a
    /// namespace with presence the client is then listed and `join` pushed.
    ///
    /// # Errors
    ///
    /// `channel_full`, `recovery_impossible`, `unavailable`, `internal`;
    /// then the connection is not subscribed.
    pub async fn subscribe(&self, request: Subscribe<'_>) -> Result<(), HubError> {
        let name = request.channel.as_str();
        let channel = self.registry.acquire(name);
        let opened = channel
            .open_once(|| async {
                let offset = self.engine.open_channel(name).await?;
                if self.registry.make_ready(&channel, offset).is_some() {
                    self.engine.catch_up(name).await?;
                }
                Ok(())
            })
            .await;
        if let Err(err) = opened {
            if self.registry.release(&channel) {
                self.engine.close_channel(name);
            }
            return Err(err);
        }
        let join = Join {
            outbox: request.outbox,
            client: request.client,
            max_subscribers: request.namespace.max_subscribers,
        };
        let current = match self.registry.begin_join(&channel, join) {
            Ok(current) => current,
            Err(err) => {
                if !self.registry.is_live(name) {
                    self.engine.close_channel(name);
                }
                return Err(err);
            }
        };
        let result = match request.since {
            None => Ok(format!("{{\"offset\":{current}}}")),
            Some(since) => history::recover(self, name, request.namespace, since, current)
                .await
                .map(|publications| protocol::publications_result(current, &publications)),
        };
        let joined = match result {
            Ok(result) if request.namespace.presence => self
                .engine
                .join(name, request.client)
                .await
                .map(|()| result),
            other => other,
        };
        match joined {
            Ok(result) => {
                self.registry.finish_join(
                    &channel,
                    request.outbox.id,
                    protocol::ok_reply(request.id, &result),
                );
                Ok(())
            }
            Err(err) => {
                let (_, removed) = self.registry.unsubscribe(name, request.outbox.id);
                if removed {
                    self.engine.close_channel(name);
                }
                Err(err)
            }
        }
    }

    /// Unsubscribes connection `outbox` (as `client`) from `channel`;
    /// `leave` is pushed if `presence`. Returns whether it was subscribed.
    pub async fn unsubscribe(
        &self,
        channel: &str,
        outbox: u64,
        client: &Arc<ClientInfo>,
        presence: bool,
    ) -> bool {
        let (was, removed) = self.registry.unsubscribe(channel, outbox);
        if removed {
            self.engine.close_channel(channel);
        }
        if was && presence {
            self.engine.leave(channel, client).await;
        }
        was
    }

    /// The retention of every namespace, for trimming.
    pub fn retentions(&self) -> Vec<(String, Retention)> {
        self.config
            .namespaces
            .iter()
            .map(|(name, ns)| (name.clone(), retention(ns)))
            .collect()
    }

    /// Stops the engine and the documents' writer once what is queued is
    /// stored.
    pub async fn shutdown(&self) {
        self.docs.shutdown().await;
        self.engine.shutdown().await;
    }

    /// The hub's time of day.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }
}

/// A namespace's history retention.
pub fn retention(namespace: &NamespaceConfig) -> Retention {
    Retention {
        size: namespace.history_size,
        ttl_secs: namespace.history_ttl_secs,
    }
}

/// This machine's name, for the default node name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}
