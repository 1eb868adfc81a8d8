//! Settings of an open connection: the protocol limits, the write buffer bound,
//! timeouts and keepalive.

use std::time::Duration;

#[cfg(feature = "deflate")]
use duplex_proto::deflate::DeflateConfig;
use duplex_proto::{Config, Keepalive};

/// How an open WebSocket behaves. The builders set it; it can also be built and
/// passed whole.
///
/// ```
/// use std::time::Duration;
/// use duplex::{Keepalive, WebSocketConfig};
/// let config = WebSocketConfig::default()
///     .max_message_size(1 << 20)
///     .keepalive(Keepalive::new(Duration::from_secs(20), Duration::from_secs(10)));
/// assert_eq!(config.limits.max_message_size, 1 << 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebSocketConfig {
    /// Frame, message and handshake header limits.
    pub limits: Config,
    /// Bytes queued for the socket past which `send` and `poll_ready` wait for
    /// the socket to take some, and reading from the peer pauses: a peer that
    /// sends without reading (a ping flood, say) cannot make the connection
    /// queue replies without bound.
    ///
    /// Default: 256 KiB, enough to keep a fast link busy, small enough that a
    /// peer that stops reading cannot make the process hold much.
    pub max_write_buffer: usize,
    /// How long to wait for the peer's close frame after ours, and for the
    /// server to close the TCP connection after the handshake.
    ///
    /// Default: 10 seconds.
    pub close_timeout: Duration,
    /// Ping the peer after [`Keepalive::interval`] without hearing from it, and
    /// give up on it (closing with 1011, reporting [`Timeout::Keepalive`]) if
    /// nothing comes back within [`Keepalive::timeout`]. The pongs that answer
    /// these pings are not reported as messages.
    ///
    /// [`Timeout::Keepalive`]: crate::Timeout::Keepalive
    ///
    /// Default: off. Turn it on for long-lived connections through NATs and
    /// proxies, which drop idle TCP connections silently.
    pub keepalive: Option<Keepalive>,
    /// permessage-deflate: what a client offers and a server accepts; `None`
    /// turns compression off.
    ///
    /// Default: on, with [`DeflateConfig::default`]: browsers, Node `ws` and
    /// Python `websockets` all offer it, and JSON traffic shrinks several times.
    #[cfg(feature = "deflate")]
    pub deflate: Option<DeflateConfig>,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            limits: Config::default(),
            max_write_buffer: 256 << 10,
            close_timeout: Duration::from_secs(10),
            keepalive: None,
            #[cfg(feature = "deflate")]
            deflate: Some(DeflateConfig::default()),
        }
    }
}

impl WebSocketConfig {
    /// Sets the largest frame accepted; see [`Config::max_frame_size`].
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.limits.max_frame_size = bytes;
        self
    }

    /// Sets the largest message accepted; see [`Config::max_message_size`].
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.limits.max_message_size = bytes;
        self
    }

    /// Sets [`max_write_buffer`](Self::max_write_buffer).
    pub fn max_write_buffer(mut self, bytes: usize) -> Self {
        self.max_write_buffer = bytes;
        self
    }

    /// Sets [`close_timeout`](Self::close_timeout).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Turns keepalive on: a ping after `keepalive.interval` of silence, and
    /// the connection dropped if nothing comes within `keepalive.timeout`.
    pub fn keepalive(mut self, keepalive: Keepalive) -> Self {
        self.keepalive = Some(keepalive);
        self
    }

    /// Sets the permessage-deflate settings; `None` turns compression off.
    #[cfg(feature = "deflate")]
    pub fn deflate(mut self, deflate: Option<DeflateConfig>) -> Self {
        self.deflate = deflate;
        self
    }
}

/// The connection-setting methods both builders share, each setting one field
/// of the builder's `config: WebSocketConfig`.
macro_rules! config_setters {
    () => {
        /// Replaces all connection settings.
        pub fn config(mut self, config: $crate::WebSocketConfig) -> Self {
            self.config = config;
            self
        }

        /// Sets the largest message accepted; default 64 MiB.
        pub fn max_message_size(mut self, bytes: usize) -> Self {
            self.config.limits.max_message_size = bytes;
            self
        }

        /// Sets the largest frame accepted; default 16 MiB.
        pub fn max_frame_size(mut self, bytes: usize) -> Self {
            self.config.limits.max_frame_size = bytes;
            self
        }

        /// Sets the write buffer bound; see
        /// [`WebSocketConfig::max_write_buffer`](crate::WebSocketConfig::max_write_buffer).
        pub fn max_write_buffer(mut self, bytes: usize) -> Self {
            self.config.max_write_buffer = bytes;
            self
        }

        /// Sets the close timeout; see
        /// [`WebSocketConfig::close_timeout`](crate::WebSocketConfig::close_timeout).
        pub fn close_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.config.close_timeout = timeout;
            self
        }

        /// Turns keepalive on; see
        /// [`WebSocketConfig::keepalive`](crate::WebSocketConfig::keepalive).
        pub fn keepalive(mut self, keepalive: $crate::Keepalive) -> Self {
            self.config.keepalive = Some(keepalive);
            self
        }

        /// Sets permessage-deflate: what a client offers, what a server accepts.
        /// By default [`DeflateConfig::default`](crate::DeflateConfig::default).
        #[cfg(feature = "deflate")]
        pub fn deflate(mut self, config: $crate::DeflateConfig) -> Self {
            self.config.deflate = Some(config);
            self
        }

        /// Turns compression off: a client offers none, a server declines every
        /// offer.
        #[cfg(feature = "deflate")]
        pub fn no_deflate(mut self) -> Self {
            self.config.deflate = None;
            self
        }
    };
}

pub(crate) use config_setters;
