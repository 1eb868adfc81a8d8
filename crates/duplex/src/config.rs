//! Settings of an open connection: the protocol limits, the write buffer bound,
//! timeouts and keepalive.

use std::time::Duration;

#[cfg(feature = "deflate")]
use duplex_proto::deflate::DeflateConfig;
use duplex_proto::{Keepalive, Limits};

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
    pub limits: Limits,
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
            limits: Limits::default(),
            max_write_buffer: 256 << 10,
            close_timeout: Duration::from_secs(10),
            keepalive: None,
            #[cfg(feature = "deflate")]
            deflate: Some(DeflateConfig::default()),
        }
    }
}

/// The connection settings' setters, written once for [`WebSocketConfig`]
/// and for each type that carries one (the client builder, the acceptor, the
/// axum extractor). The type calling it has a method
/// `config_mut(&mut self) -> &mut WebSocketConfig`; `config_setters!(replace)`
/// also writes `config`, which replaces them all.
macro_rules! config_setters {
    (replace) => {
        /// Replaces all connection settings; see
        /// [`WebSocketConfig`](crate::WebSocketConfig).
        pub fn config(mut self, config: $crate::WebSocketConfig) -> Self {
            *self.config_mut() = config;
            self
        }

        $crate::config::config_setters!();
    };
    () => {
        /// Sets the largest frame accepted; see
        /// [`Limits::max_frame_size`](crate::Limits::max_frame_size).
        pub fn max_frame_size(mut self, bytes: usize) -> Self {
            self.config_mut().limits.max_frame_size = bytes;
            self
        }

        /// Sets the largest message accepted; see
        /// [`Limits::max_message_size`](crate::Limits::max_message_size).
        pub fn max_message_size(mut self, bytes: usize) -> Self {
            self.config_mut().limits.max_message_size = bytes;
            self
        }

        /// Sets the write buffer bound; see
        /// [`WebSocketConfig::max_write_buffer`](crate::WebSocketConfig::max_write_buffer).
        pub fn max_write_buffer(mut self, bytes: usize) -> Self {
            self.config_mut().max_write_buffer = bytes;
            self
        }

        /// Sets the close timeout; see
        /// [`WebSocketConfig::close_timeout`](crate::WebSocketConfig::close_timeout).
        pub fn close_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.config_mut().close_timeout = timeout;
            self
        }

        /// Turns keepalive on: a ping after `interval` of silence, and the
        /// connection dropped if no pong comes within `timeout`; see
        /// [`WebSocketConfig::keepalive`](crate::WebSocketConfig::keepalive).
        pub fn keepalive(mut self, keepalive: $crate::Keepalive) -> Self {
            self.config_mut().keepalive = Some(keepalive);
            self
        }

        /// Sets permessage-deflate: what a client offers, what a server
        /// accepts; see [`WebSocketConfig::deflate`](crate::WebSocketConfig::deflate).
        #[cfg(feature = "deflate")]
        pub fn deflate(mut self, config: $crate::DeflateConfig) -> Self {
            self.config_mut().deflate = Some(config);
            self
        }

        /// Turns compression off: a client offers none, a server declines every
        /// offer.
        #[cfg(feature = "deflate")]
        pub fn no_deflate(mut self) -> Self {
            self.config_mut().deflate = None;
            self
        }
    };
}

pub(crate) use config_setters;

impl WebSocketConfig {
    /// Itself, for the setters `config_setters!` writes.
    fn config_mut(&mut self) -> &mut WebSocketConfig {
        self
    }

    config_setters!();
}
