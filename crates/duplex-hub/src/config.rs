//! The hub's configuration: a TOML file (`duplex.toml`), every key optional,
//! unknown keys refused.
//!
//! Without a file, [`Config::default`] gives the defaults of the contract: the
//! `chat` namespace (presence, client publishes, 1000 messages for 24 hours) and
//! the `ticker` namespace (no presence, no client publishes, 100 messages), the
//! simulated feed on, same-origin pages only, no API key, no token required.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use duplex::Keepalive;
use serde::Deserialize;

use crate::forwarded::TrustedProxies;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[server]`: origins and the publish API key.
    pub server: ServerConfig,
    /// `[auth]`: JWT tokens.
    pub auth: AuthConfig,
    /// `[limits]`: per-connection limits.
    pub limits: LimitsConfig,
    /// `[namespaces.NAME]`: the namespaces channels live in (`NAME:channel`).
    pub namespaces: BTreeMap<String, NamespaceConfig>,
    /// `[feed]`: the simulated ticker feed.
    pub feed: FeedConfig,
    /// `[docs]`: collaborative documents (`/docs/NAME`, `/editor`).
    pub docs: crate::docs::DocsConfig,
    /// `[engine]`: SQLite on one node (the default), or Redis shared by
    /// several.
    pub engine: crate::engine::EngineConfig,
    /// `[proxy]`: backend hooks asked about connects, subscribes and
    /// publishes (see [`crate::hooks`]).
    pub proxy: crate::hooks::ProxyConfig,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Origins (`https://example.com`) whose pages may open a WebSocket.
    /// Empty (the default): only pages served by the hub itself.
    pub allowed_origins: Vec<String>,
    /// The key `POST /api/publish` wants as `Authorization: Bearer KEY`.
    /// Unset (the default) and no `DUPLEX_API_KEY` in the environment: the
    /// publish API is disabled and answers 403.
    pub api_key: Option<String>,
    /// Reverse proxies (IP addresses and CIDR ranges) whose `Forwarded` and
    /// `X-Forwarded-For` headers name the client (see [`crate::forwarded`]).
    /// Empty (the default): the headers are ignored and the client is the
    /// TCP peer, so no client can choose the address logged and limited.
    pub trusted_proxies: TrustedProxies,
    /// Seconds of silence on a WebSocket after which the hub pings it; 0
    /// turns pings off. Default: 30, shorter than the idle timeouts of
    /// proxies (nginx's `proxy_read_timeout` is 60 s by default), which
    /// would otherwise cut quiet connections.
    pub ping_interval_secs: u64,
    /// Seconds a pinged WebSocket gets to answer before it is dropped.
    /// Default: 10.
    pub ping_timeout_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            allowed_origins: Vec::new(),
            api_key: None,
            trusted_proxies: TrustedProxies::default(),
            ping_interval_secs: 30,
            ping_timeout_secs: 10,
        }
    }
}

impl ServerConfig {
    /// The WebSocket keepalive, or `None` when `ping_interval_secs` is 0.
    pub fn keepalive(&self) -> Option<Keepalive> {
        (self.ping_interval_secs > 0).then(|| {
            Keepalive::new(
                Duration::from_secs(self.ping_interval_secs),
                Duration::from_secs(self.ping_timeout_secs),
            )
        })
    }
}

/// `[auth]`: the keys tokens are verified with, and the claims checked. With
/// no key at all, tokens are refused (and, unless `required`, not needed).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The HMAC secret of HS256, HS384 and HS512 tokens.
    pub hs256_secret: Option<String>,
    /// PEM public keys (RSA, EC P-256 or P-384, Ed25519); a relative path is
    /// read from the configuration file's directory.
    pub public_keys: Vec<std::path::PathBuf>,
    /// An identity provider's JSON Web Key Set, fetched when needed.
    pub jwks_url: Option<String>,
    /// The least time between two fetches of the JWKS, in seconds, however
    /// many tokens name a key it lacks. Default: 30.
    pub jwks_refetch_secs: u64,
    /// When set, a token's `iss` must be this.
    pub issuer: Option<String>,
    /// When set, a token's `aud` must include this.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds. Default: 5.
    pub leeway_secs: u64,
    /// Whether a connection needs a valid token before anything but
    /// `connect` and `ping`. Default: false.
    pub required: bool,
    /// How long before its token's `exp` a connection gets the `refresh`
    /// push, in seconds; never earlier than halfway from when the token was
    /// given to its `exp`, so a short-lived token gets it too. Default: 30.
    pub refresh_before_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            hs256_secret: None,
            public_keys: Vec::new(),
            jwks_url: None,
            jwks_refetch_secs: 30,
            issuer: None,
            audience: None,
            leeway_secs: 5,
            required: false,
            refresh_before_secs: 30,
        }
    }
}

impl AuthConfig {
    /// Whether any key is configured.
    pub fn has_keys(&self) -> bool {
        self.hs256_secret.is_some() || !self.public_keys.is_empty() || self.jwks_url.is_some()
    }
}

/// `[limits]`: per connection, and per client address before the upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Requests per second a connection may make on average. Default: 50.
    pub requests_per_second: u32,
    /// Requests a connection may make in a burst. Default: 100.
    pub burst: u32,
    /// Channels one connection may subscribe to. Default: 100.
    pub max_channels: usize,
    /// The largest WebSocket message a client may send, in bytes; more
    /// closes the connection with 1009. Default: 65536.
    pub max_message_size: usize,
    /// The largest `data` of a publication, in bytes of JSON; more gets
    /// `message_too_big`. Default: 16384.
    pub max_publication_size: usize,
    /// Frames queued for one connection; a connection with a full queue is
    /// closed as a slow consumer. Default: 1024.
    pub send_queue: usize,
    /// WebSocket connections (`/ws` and `/docs/NAME` together) one client
    /// address may hold open; more get 503 with `Retry-After` before the
    /// upgrade. IPv6 addresses count by /64. 0: no limit. Default: 0, since
    /// behind a proxy that is not in `server.trusted_proxies` every client
    /// has the proxy's address, and load tests open thousands from one.
    pub max_connections_per_ip: u32,
    /// WebSocket handshakes a second one client address may make on average;
    /// more get 429 with `Retry-After` before the origin and the token are
    /// checked. 0: no limit. Default: 0 (see `max_connections_per_ip`).
    pub handshakes_per_second_per_ip: u32,
    /// Handshakes one client address may make at once, with
    /// `handshakes_per_second_per_ip`; 0: one second's worth. Default: 0.
    pub handshake_burst_per_ip: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            requests_per_second: 50,
            burst: 100,
            max_channels: 100,
            max_message_size: 64 * 1024,
            max_publication_size: 16 * 1024,
            send_queue: 1024,
            max_connections_per_ip: 0,
            handshakes_per_second_per_ip: 0,
            handshake_burst_per_ip: 0,
        }
    }
}

/// `[namespaces.NAME]`: the rules of the channels `NAME:*`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NamespaceConfig {
    /// Publications kept per channel. Default: 1000.
    pub history_size: usize,
    /// How long publications are kept, in seconds; 0 keeps them until
    /// `history_size` pushes them out. Default: 86400 (24 hours).
    pub history_ttl_secs: u64,
    /// Whether subscribers are listed (`presence`) and `join`/`leave` are
    /// pushed. Default: true.
    pub presence: bool,
    /// With presence on, whether `join` and `leave` are pushed to the
    /// channel's subscribers. Default: true. Each join goes to every other
    /// subscriber: N clients joining one channel make N(N-1)/2 pushes
    /// (12.5 million for 5,000), so a large channel keeps its presence list
    /// (`op: presence`) and turns the pushes off.
    pub join_leave: bool,
    /// Whether clients may publish (the publish API always may). Default: true.
    pub publish: bool,
    /// Subscribers one channel may have. Default: 10000.
    pub max_subscribers: usize,
    /// Whether `subscribe` needs a subscription token for the channel (a
    /// token whose `channel` claim names it); the connection token's
    /// `channels` claim does not grant these channels. Default: false.
    pub private: bool,
}

impl Default for NamespaceConfig {
    fn default() -> Self {
        NamespaceConfig {
            history_size: 1000,
            history_ttl_secs: 86_400,
            presence: true,
            join_leave: true,
            publish: true,
            max_subscribers: 10_000,
            private: false,
        }
    }
}

/// `[feed]`: the simulated random-walk ticker.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedConfig {
    /// Whether it runs. Default: true.
    pub enabled: bool,
    /// Milliseconds between two prices of one symbol. Default: 500.
    pub interval_ms: u64,
    /// The symbols, published to `NAMESPACE:SYMBOL`. Default: AAPL, MSFT,
    /// GOOG, AMZN, TSLA, NVDA.
    pub symbols: Vec<String>,
    /// The namespace it publishes to. Default: `ticker`.
    pub namespace: String,
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig {
            enabled: true,
            interval_ms: 500,
            symbols: ["AAPL", "MSFT", "GOOG", "AMZN", "TSLA", "NVDA"]
                .map(String::from)
                .to_vec(),
            namespace: "ticker".into(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let mut namespaces = BTreeMap::new();
        namespaces.insert("chat".to_string(), NamespaceConfig::default());
        namespaces.insert(
            "ticker".to_string(),
            NamespaceConfig {
                history_size: 100,
                presence: false,
                publish: false,
                ..NamespaceConfig::default()
            },
        );
        Config {
            server: ServerConfig::default(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            namespaces,
            feed: FeedConfig::default(),
            docs: crate::docs::DocsConfig::default(),
            engine: crate::engine::EngineConfig::default(),
            proxy: crate::hooks::ProxyConfig::default(),
        }
    }
}

/// A configuration that could not be read or makes no sense.
#[derive(Debug)]
pub struct ConfigError(String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Parses a TOML document. A file without `[namespaces]` gets the default
    /// `chat` and `ticker`; one with it gets exactly the namespaces it lists.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the key and line: a syntax error, an unknown
    /// key, a wrong type, or a value out of range.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text)
            .map_err(|err| ConfigError(format!("invalid configuration: {err}")))?;
        if config.namespaces.is_empty() {
            config.namespaces = Config::default().namespaces;
        }
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a TOML file.
    ///
    /// # Errors
    ///
    /// As [`from_toml`](Self::from_toml), with the path, or the file could not
    /// be read.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| ConfigError(format!("cannot read {}: {err}", path.display())))?;
        let mut config = Config::from_toml(&text)
            .map_err(|err| ConfigError(format!("{}: {err}", path.display())))?;
        // Key files are named relative to the file that names them.
        if let Some(dir) = path.parent() {
            for key in &mut config.auth.public_keys {
                *key = dir.join(&*key);
            }
        }
        Ok(config)
    }

    /// The publish API key: `server.api_key`, else the `DUPLEX_API_KEY`
    /// environment variable, else none (the API is disabled).
    pub fn api_key(&self) -> Option<String> {
        self.server
            .api_key
            .clone()
            .or_else(|| std::env::var("DUPLEX_API_KEY").ok())
            .filter(|key| !key.is_empty())
    }

    /// Checks values that parse but make no sense.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |msg: String| Err(ConfigError(msg));
        let server = &self.server;
        if server.ping_interval_secs > 0 && server.ping_timeout_secs == 0 {
            return fail(
                "server.ping_timeout_secs must be at least 1 while pings are on \
                 (server.ping_interval_secs = 0 turns them off)"
                    .into(),
            );
        }
        let day = 86_400;
        if server.ping_interval_secs > day || server.ping_timeout_secs > day {
            return fail(format!(
                "server.ping_interval_secs and server.ping_timeout_secs are at most {day} (a day)"
            ));
        }
        let l = &self.limits;
        if l.requests_per_second == 0 || l.burst == 0 {
            return fail("limits.requests_per_second and limits.burst must be at least 1".into());
        }
        if l.max_channels == 0 || l.send_queue == 0 {
            return fail("limits.max_channels and limits.send_queue must be at least 1".into());
        }
        if l.max_message_size < 1024 {
            return fail(format!(
                "limits.max_message_size = {} is too small: at least 1024 bytes",
                l.max_message_size
            ));
        }
        if l.handshake_burst_per_ip > 0 && l.handshakes_per_second_per_ip == 0 {
            return fail(
                "limits.handshake_burst_per_ip is set but limits.handshakes_per_second_per_ip \
                 is 0 (off): set the rate too"
                    .into(),
            );
        }
        if l.max_publication_size == 0 {
            return fail("limits.max_publication_size must be at least 1".into());
        }
        for (name, ns) in &self.namespaces {
            if !crate::channel::valid_namespace(name) {
                return fail(format!(
                    "namespaces.{name}: a namespace name is 1 to 32 of a-z, 0-9, _ and -"
                ));
            }
            if ns.history_size > 100_000 {
                return fail(format!(
                    "namespaces.{name}.history_size = {} is over the maximum of 100000",
                    ns.history_size
                ));
            }
            if ns.max_subscribers == 0 {
                return fail(format!(
                    "namespaces.{name}.max_subscribers must be at least 1"
                ));
            }
            if ns.private && !self.auth.has_keys() {
                return fail(format!(
                    "namespaces.{name}.private = true needs a key to verify subscription tokens: \
                     auth.hs256_secret, auth.public_keys or auth.jwks_url"
                ));
            }
        }
        self.docs.validate().map_err(ConfigError)?;
        self.engine.validate().map_err(ConfigError)?;
        self.proxy.validate().map_err(ConfigError)?;
        if self.auth.required && !self.auth.has_keys() {
            return fail(
                "auth.required = true needs a key: auth.hs256_secret, auth.public_keys or auth.jwks_url"
                    .into(),
            );
        }
        if let Some(url) = &self.auth.jwks_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return fail(format!(
                "auth.jwks_url = {url:?} is not an http:// or https:// URL"
            ));
        }
        if self.feed.enabled {
            if self.feed.interval_ms == 0 {
                return fail("feed.interval_ms must be at least 1".into());
            }
            if !self.namespaces.contains_key(&self.feed.namespace) {
                return fail(format!(
                    "feed.namespace = {:?} is not a configured namespace",
                    self.feed.namespace
                ));
            }
            for symbol in &self.feed.symbols {
                let channel = format!("{}:{symbol}", self.feed.namespace);
                if crate::channel::ChannelName::parse(&channel).is_err() {
                    return fail(format!(
                        "feed.symbols: {symbol:?} is not a valid channel name"
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_defaults() {
        let config = Config::from_toml("").unwrap();
        assert_eq!(config, Config::default());
        assert!(config.namespaces["chat"].publish);
        assert!(!config.namespaces["ticker"].publish);
        assert_eq!(config.namespaces["ticker"].history_size, 100);
        assert_eq!(config.feed.symbols.len(), 6);
    }

    #[test]
    fn namespaces_replace_the_defaults() {
        let config = Config::from_toml(
            "[feed]\nenabled = false\n[namespaces.room]\nhistory_size = 5\npresence = false\n",
        )
        .unwrap();
        assert_eq!(config.namespaces.len(), 1);
        let room = &config.namespaces["room"];
        assert_eq!(room.history_size, 5);
        assert!(!room.presence);
        assert!(room.publish, "unset keys keep their default");
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = Config::from_toml("[limits]\nrequests_per_sec = 5\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("requests_per_sec"), "{text}");
        let err = Config::from_toml("[nope]\n").unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn nonsense_values_are_refused() {
        assert!(Config::from_toml("[limits]\nburst = 0\n").is_err());
        assert!(Config::from_toml("[limits]\nhandshake_burst_per_ip = 5\n").is_err());
        let ip = Config::from_toml(
            "[limits]\nmax_connections_per_ip = 3\nhandshakes_per_second_per_ip = 2\n",
        )
        .unwrap();
        assert_eq!(ip.limits.max_connections_per_ip, 3);
        assert_eq!(ip.limits.handshake_burst_per_ip, 0);
        assert!(Config::from_toml("[auth]\nrequired = true\n").is_err());
        assert!(Config::from_toml("[namespaces.\"Bad Name\"]\n").is_err());
        assert!(Config::from_toml("[feed]\nnamespace = \"nope\"\n").is_err());
        assert!(Config::from_toml("[limits]\nsend_queue = \"x\"\n").is_err());
        let err = Config::from_toml("[namespaces.dm]\nprivate = true\n").unwrap_err();
        assert!(err.to_string().contains("namespaces.dm.private"), "{err}");
        assert!(
            Config::from_toml(
                "[auth]\nhs256_secret = \"s\"\n[feed]\nenabled = false\n[namespaces.dm]\nprivate = true\n"
            )
                .unwrap()
                .namespaces["dm"]
                .private
        );
        let refresh = Config::from_toml("[auth]\nrefresh_before_secs = 10\n").unwrap();
        assert_eq!(refresh.auth.refresh_before_secs, 10);
        let err = Config::from_toml("[server]\nping_timeout_secs = 0\n").unwrap_err();
        assert!(err.to_string().contains("ping_timeout_secs"), "{err}");
        assert!(
            Config::from_toml("[server]\nping_interval_secs = 0\nping_timeout_secs = 0\n").is_ok()
        );
    }

    #[test]
    fn trusted_proxies_parse_and_a_bad_entry_is_named() {
        let config = Config::from_toml(
            "[server]\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\", \"::1\"]\n",
        )
        .unwrap();
        let proxies = &config.server.trusted_proxies;
        assert!(proxies.contains("10.1.2.3".parse().unwrap()));
        assert!(proxies.contains("::1".parse().unwrap()));
        assert!(!proxies.contains("127.0.0.2".parse().unwrap()));
        let err =
            Config::from_toml("[server]\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/33\"]\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("\"10.0.0.0/33\""), "{err}");
        assert!(err.contains("trusted_proxies"), "{err}");
        assert!(Config::default().server.trusted_proxies.is_empty());
    }

    #[test]
    fn pings_are_configurable_and_zero_turns_them_off() {
        assert_eq!(
            Config::default().server.keepalive(),
            Some(Keepalive::new(
                Duration::from_secs(30),
                Duration::from_secs(10)
            ))
        );
        let config =
            Config::from_toml("[server]\nping_interval_secs = 1\nping_timeout_secs = 2\n").unwrap();
        assert_eq!(
            config.server.keepalive(),
            Some(Keepalive::new(
                Duration::from_secs(1),
                Duration::from_secs(2)
            ))
        );
        let off = Config::from_toml("[server]\nping_interval_secs = 0\n").unwrap();
        assert_eq!(off.server.keepalive(), None);
    }
}
