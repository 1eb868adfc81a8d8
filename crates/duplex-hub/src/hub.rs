//! The hub's core: configuration, channels, storage and metrics together, and
//! the one publish path every publisher (clients, the API, the feed) takes.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde_json::Value;

use crate::auth::{self, Claims, TokenError};
use crate::channel::ChannelName;
use crate::config::{Config, NamespaceConfig};
use crate::metrics::Metrics;
use crate::protocol::{ErrorCode, HubError, Publication};
use crate::registry::Registry;
use crate::storage::{self, Retention, Store};

/// The hub: share it as `Arc<Hub>`.
#[derive(Debug)]
pub struct Hub {
    config: Config,
    api_key: Option<String>,
    registry: Arc<Registry>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    docs: Arc<crate::docs::Docs>,
    next_client: AtomicU64,
    client_prefix: String,
}

impl Hub {
    /// Opens the hub's storage in `data_dir` (created if missing) and loads
    /// every channel's last offset.
    ///
    /// # Errors
    ///
    /// An `internal` [`HubError`] if the configuration is invalid or storage
    /// cannot be opened.
    pub fn open(config: Config, data_dir: &Path) -> Result<Arc<Hub>, HubError> {
        config
            .validate()
            .map_err(|err| HubError::new(ErrorCode::Internal, err.to_string()))?;
        let metrics = Arc::new(Metrics::default());
        let registry = Arc::new(Registry::new(metrics.clone()));
        let broadcast = registry.clone();
        let store = Store::open(
            data_dir,
            Arc::new(move |channel: &str, publication: &Publication| {
                broadcast.broadcast(channel, publication);
            }),
        )?;
        let store = Arc::new(store);
        // Weak: the writer thread holds the registry, which must not keep
        // the store alive.
        let stored = Arc::downgrade(&store);
        registry.set_stored_offset(Box::new(move |channel: &str| match stored.upgrade() {
            Some(store) => store.last_offset(channel),
            None => Err(HubError::new(ErrorCode::Internal, "the hub is shut down")),
        }));
        let docs = crate::docs::Docs::open(config.docs.clone(), data_dir)
            .map_err(|err| HubError::new(ErrorCode::Internal, err.to_string()))?;
        let mut prefix = [0u8; 4];
        let _ = getrandom::fill(&mut prefix);
        Ok(Arc::new(Hub {
            api_key: config.api_key(),
            config,
            registry,
            store,
            metrics,
            docs,
            next_client: AtomicU64::new(1),
            client_prefix: prefix.iter().map(|b| format!("{b:02x}")).collect(),
        }))
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The channel registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The storage.
    pub fn store(&self) -> &Store {
        &self.store
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

    /// Verifies a token with the configured secret.
    ///
    /// # Errors
    ///
    /// Why it is refused; also when no secret is configured.
    pub fn verify_token(&self, token: &str) -> Result<Claims, TokenError> {
        match &self.config.auth.hs256_secret {
            Some(secret) => auth::verify(token, secret.as_bytes(), auth::now_secs()),
            None => Err(TokenError(
                "this hub does not accept tokens (no auth.hs256_secret configured)",
            )),
        }
    }

    /// Publishes `data` to `channel` (of `namespace`): checks its size,
    /// stores it, broadcasts it, and returns it with its offset once it is on
    /// disk. The rules of who may publish are the caller's.
    ///
    /// # Errors
    ///
    /// `message_too_big` over `limits.max_publication_size`; `internal` if
    /// storage failed.
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
            .store
            .publish(channel.as_str(), Arc::from(text), retention(namespace))
            .await?;
        self.metrics.observe_publish(started.elapsed());
        Ok(publication)
    }

    /// The retention of every namespace, for trimming.
    pub fn retentions(&self) -> Vec<(String, Retention)> {
        self.config
            .namespaces
            .iter()
            .map(|(name, ns)| (name.clone(), retention(ns)))
            .collect()
    }

    /// Stops the storage writer once what is queued is committed.
    pub async fn shutdown(&self) {
        self.docs.shutdown().await;
        self.store.shutdown().await;
    }

    /// Milliseconds since the epoch, now.
    pub fn now_ms() -> u64 {
        storage::now_ms()
    }
}

/// A namespace's history retention.
pub fn retention(namespace: &NamespaceConfig) -> Retention {
    Retention {
        size: namespace.history_size,
        ttl_secs: namespace.history_ttl_secs,
    }
}
