//! The engine: where publications get their offsets and live on, how they
//! reach every node, and where presence is kept. One seam, two
//! implementations, so routing, limits and the protocol are written once:
//!
//! - [`embedded`]: one node; history and offsets in SQLite under `--data`
//!   (the default).
//! - [`redis`]: several nodes sharing one Redis (or several, sharded by
//!   channel): offsets, history and presence in Redis, publications from
//!   node to node over Redis pub/sub.
//!
//! Whatever the engine, a publication reaches this node's subscribers
//! through [`Registry::deliver`], in offset order: the node that took a
//! publication delivers it the same way as every other node does.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::metrics::{Metrics, bump};
use crate::protocol::{ClientInfo, ErrorCode, HubError, Publication};
use crate::registry::{Delivery, Registry};
use crate::storage::Retention;

pub mod embedded;
pub mod redis;

/// `[engine]`: which engine, and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// `"embedded"` (the default: SQLite under `--data`, one node) or
    /// `"redis"` (several nodes sharing Redis).
    pub kind: EngineKind,
    /// The Redis URL, `redis://` or `rediss://` (TLS), a password in the URL
    /// if needed: `redis://:secret@10.0.0.5:6379/0`.
    pub url: Option<String>,
    /// Several Redis servers instead of `url`: channels are spread over them
    /// by a stable hash of their name.
    pub urls: Vec<String>,
    /// This node's name in metrics and logs. Default: `hostname:port`.
    pub node: Option<String>,
    /// How long one Redis command may take before the request that needs it
    /// fails with `unavailable`, in milliseconds. Default: 2000.
    pub timeout_ms: u64,
    /// Seconds a presence entry lives in Redis unless its node refreshes it
    /// (every third of that): a node that dies without a word has its
    /// clients' entries gone, with `leave` pushed, within this time plus one
    /// refresh. Default: 20.
    pub presence_ttl_secs: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            kind: EngineKind::Embedded,
            url: None,
            urls: Vec::new(),
            node: None,
            timeout_ms: 2000,
            presence_ttl_secs: 20,
        }
    }
}

/// `engine.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// SQLite, one node.
    Embedded,
    /// Redis, several nodes.
    Redis,
}

impl EngineKind {
    /// The name used in the configuration and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Embedded => "embedded",
            EngineKind::Redis => "redis",
        }
    }
}

impl EngineConfig {
    /// The Redis servers to use: `urls`, else `url`.
    pub fn redis_urls(&self) -> Vec<String> {
        if self.urls.is_empty() {
            self.url.iter().cloned().collect()
        } else {
            self.urls.clone()
        }
    }

    /// How long one Redis command may take.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Checks values that parse but make no sense.
    ///
    /// # Errors
    ///
    /// A message naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.url.is_some() && !self.urls.is_empty() {
            return Err("engine.url and engine.urls: give one or the other".into());
        }
        if self.kind == EngineKind::Redis && self.redis_urls().is_empty() {
            return Err("engine.kind = \"redis\" needs engine.url (or engine.urls)".into());
        }
        if self.kind == EngineKind::Embedded && !self.redis_urls().is_empty() {
            return Err(
                "engine.url (or engine.urls) is set but engine.kind is \"embedded\": \
                 set engine.kind = \"redis\""
                    .into(),
            );
        }
        for url in self.redis_urls() {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(format!(
                    "engine.url {}: a Redis URL starts with redis:// or rediss://",
                    mask_password(&url)
                ));
            }
        }
        if self.timeout_ms == 0 {
            return Err("engine.timeout_ms must be at least 1".into());
        }
        if self.presence_ttl_secs < 3 {
            return Err("engine.presence_ttl_secs must be at least 3".into());
        }
        Ok(())
    }
}

/// `url` with its password (if any) replaced by `***`, for messages.
pub fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(user, _)| user);
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{path}")
            } else {
                format!("{scheme}://***@{host}{path}")
            }
        }
        None => url.to_string(),
    }
}

/// The error of a request the engine could not serve in time.
pub fn unavailable(what: impl std::fmt::Display) -> HubError {
    HubError::new(
        ErrorCode::Unavailable,
        format!("the engine is unavailable: {what}; retry later"),
    )
}

/// What an engine reads of history, for catching up.
pub(crate) trait History {
    /// A channel's last offset.
    async fn last_offset(&self, channel: &str) -> Result<u64, HubError>;
    /// The publications with `after < offset <= upto`, ascending.
    async fn range(
        &self,
        channel: &str,
        after: u64,
        upto: u64,
    ) -> Result<Vec<Publication>, HubError>;
}

/// Brings this node's `channel` up to the engine's last offset, from
/// history: the gap filling of a node that missed publications (a pub/sub
/// connection lost, a message out of order). If history no longer holds
/// them all, the channel's subscribers here are told to recover.
///
/// # Errors
///
/// The engine could not be read (try again later).
pub(crate) async fn catch_up(
    history: &impl History,
    registry: &Registry,
    metrics: &Metrics,
    channel: &str,
    upto: Option<u64>,
) -> Result<(), HubError> {
    let Some(after) = registry.offset(channel) else {
        return Ok(());
    };
    let upto = match upto {
        Some(upto) => upto,
        None => history.last_offset(channel).await?,
    };
    if upto <= after {
        return Ok(());
    }
    let missed = history.range(channel, after, upto).await?;
    for publication in &missed {
        if let Delivery::Gap { .. } = registry.deliver(channel, publication) {
            // History has a hole: what follows cannot be delivered.
            break;
        }
    }
    if registry.offset(channel).is_some_and(|offset| offset < upto) {
        registry.lost(channel, upto);
    } else {
        bump(&metrics.engine_gaps_filled);
        tracing::info!(channel, after, upto, "filled a gap from history");
    }
    Ok(())
}

/// The engine of a hub.
#[derive(Debug)]
pub enum Engine {
    /// SQLite, one node.
    Embedded(embedded::Embedded),
    /// Redis, several nodes.
    Redis(redis::RedisEngine),
}

impl Engine {
    /// The engine's kind.
    pub fn kind(&self) -> EngineKind {
        match self {
            Engine::Embedded(_) => EngineKind::Embedded,
            Engine::Redis(_) => EngineKind::Redis,
        }
    }

    /// Stores a publication (its offset given atomically) and returns it
    /// once it is stored: in SQLite and handed to this node's subscribers,
    /// or in Redis and published to every node.
    ///
    /// # Errors
    ///
    /// `internal` (SQLite), `unavailable` (Redis down or too slow).
    pub async fn publish(
        &self,
        channel: &str,
        data: Arc<str>,
        retention: Retention,
    ) -> Result<Publication, HubError> {
        match self {
            Engine::Embedded(engine) => engine.publish(channel, data, retention).await,
            Engine::Redis(engine) => engine.publish(channel, data, retention).await,
        }
    }

    /// A channel's last offset, 0 if never published to.
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish).
    pub async fn last_offset(&self, channel: &str) -> Result<u64, HubError> {
        match self {
            Engine::Embedded(engine) => engine.last_offset(channel).await,
            Engine::Redis(engine) => engine.last_offset(channel).await,
        }
    }

    /// The publications of `channel` with `after < offset <= upto`, not
    /// older than `min_time`, ascending.
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish).
    pub async fn range(
        &self,
        channel: &str,
        after: u64,
        upto: u64,
        min_time: u64,
    ) -> Result<Vec<Publication>, HubError> {
        match self {
            Engine::Embedded(engine) => engine.range(channel, after, upto, min_time).await,
            Engine::Redis(engine) => engine.range(channel, after, upto, min_time).await,
        }
    }

    /// The `limit` newest publications of `channel` with `offset < before`
    /// and `offset <= upto`, not older than `min_time`, ascending.
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish).
    pub async fn newest(
        &self,
        channel: &str,
        before: u64,
        upto: u64,
        min_time: u64,
        limit: usize,
    ) -> Result<Vec<Publication>, HubError> {
        match self {
            Engine::Embedded(engine) => engine.newest(channel, before, upto, min_time, limit).await,
            Engine::Redis(engine) => engine.newest(channel, before, upto, min_time, limit).await,
        }
    }

    /// Makes `channel` live on this node: from now on its publications are
    /// delivered here. Returns its offset, read after that point.
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish).
    pub async fn open_channel(&self, channel: &str) -> Result<u64, HubError> {
        match self {
            Engine::Embedded(engine) => engine.last_offset(channel).await,
            Engine::Redis(engine) => engine.open_channel(channel).await,
        }
    }

    /// `channel` left this node's registry: stop delivering it here.
    pub fn close_channel(&self, channel: &str) {
        match self {
            Engine::Embedded(_) => {}
            Engine::Redis(engine) => engine.close_channel(channel),
        }
    }

    /// Brings this node's `channel` up to the engine's last offset from
    /// history (after a gap); if history no longer holds it all, the
    /// channel's subscribers here are closed with 1012 to recover.
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish).
    pub async fn catch_up(&self, channel: &str) -> Result<(), HubError> {
        match self {
            Engine::Embedded(engine) => engine.catch_up(channel).await,
            Engine::Redis(engine) => engine.catch_up(channel).await,
        }
    }

    /// `client` subscribed to `channel` (a namespace with presence): listed
    /// from now on, and `join` pushed to the channel's other subscribers on
    /// every node.
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish).
    pub async fn join(&self, channel: &str, client: &Arc<ClientInfo>) -> Result<(), HubError> {
        match self {
            Engine::Embedded(engine) => {
                engine.join(channel, client);
                Ok(())
            }
            Engine::Redis(engine) => engine.join(channel, client).await,
        }
    }

    /// `client` left `channel`: no longer listed, `leave` pushed.
    pub async fn leave(&self, channel: &str, client: &Arc<ClientInfo>) {
        match self {
            Engine::Embedded(engine) => engine.leave(channel, client),
            Engine::Redis(engine) => engine.leave(channel, client).await,
        }
    }

    /// The clients subscribed to `channel` on every node, by client id.
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish).
    pub async fn presence(&self, channel: &str) -> Result<Vec<ClientInfo>, HubError> {
        match self {
            Engine::Embedded(engine) => Ok(engine.presence(channel)),
            Engine::Redis(engine) => engine.presence(channel).await,
        }
    }

    /// Deletes publications older than each namespace's ttl (SQLite; Redis
    /// expires them by itself).
    pub fn trim(&self, namespaces: Vec<(String, Retention)>) {
        match self {
            Engine::Embedded(engine) => engine.trim(namespaces),
            Engine::Redis(_) => {}
        }
    }

    /// Whether the engine can serve requests now; else why not.
    ///
    /// # Errors
    ///
    /// The reason, for `/healthz`.
    pub async fn health(&self) -> Result<(), String> {
        match self {
            Engine::Embedded(_) => Ok(()),
            Engine::Redis(engine) => engine.health().await,
        }
    }

    /// Takes or keeps the lease `name` for `ttl` (a job one node of the
    /// cluster does at a time, such as the simulated feed). True while this
    /// node holds it; always true with one node.
    pub async fn hold_lease(&self, name: &str, ttl: Duration) -> bool {
        match self {
            Engine::Embedded(_) => true,
            Engine::Redis(engine) => engine.hold_lease(name, ttl).await,
        }
    }

    /// Stops the engine once what it was given is stored.
    pub async fn shutdown(&self) {
        match self {
            Engine::Embedded(engine) => engine.shutdown().await,
            Engine::Redis(engine) => engine.shutdown().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask_password("redis://:secret@10.0.0.5:6379/0"),
            "redis://:***@10.0.0.5:6379/0"
        );
        assert_eq!(
            mask_password("rediss://user:pw@host/1"),
            "rediss://user:***@host/1"
        );
        assert_eq!(mask_password("redis://token@host"), "redis://***@host");
        assert_eq!(
            mask_password("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(mask_password("nonsense"), "nonsense");
    }

    #[test]
    fn config_checks() {
        assert!(EngineConfig::default().validate().is_ok());
        let redis = EngineConfig {
            kind: EngineKind::Redis,
            ..EngineConfig::default()
        };
        assert!(redis.validate().unwrap_err().contains("engine.url"));
        let bad = EngineConfig {
            kind: EngineKind::Redis,
            url: Some("http://:pw@x".into()),
            ..EngineConfig::default()
        };
        let err = bad.validate().unwrap_err();
        assert!(err.contains("redis://") && !err.contains("pw"), "{err}");
        let embedded = EngineConfig {
            url: Some("redis://a".into()),
            ..EngineConfig::default()
        };
        assert!(embedded.validate().unwrap_err().contains("kind"));
        let both = EngineConfig {
            kind: EngineKind::Redis,
            url: Some("redis://a".into()),
            urls: vec!["redis://b".into()],
            ..EngineConfig::default()
        };
        assert!(both.validate().is_err());
    }
}
