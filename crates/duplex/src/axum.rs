//! WebSocket routes in an axum app, on duplex: [`WebSocketUpgrade`], the
//! extractor axum users know, with duplex's handshake checks, origin policy,
//! subprotocols, limits and compression.
//!
//! A handler takes the extractor, sets what the connection should run with,
//! and answers with [`on_upgrade`](WebSocketUpgrade::on_upgrade), which spawns
//! the callback with the open [`WebSocket`] once hyper hands the connection
//! over. Both ways a browser opens a WebSocket are accepted: an HTTP/1.1 GET
//! with `Upgrade` (RFC 6455), and an HTTP/2 extended CONNECT (RFC 8441), which
//! `axum::serve` enables; route with [`any`](::axum::routing::any) (or
//! `get(..).connect(..)`) so both methods reach the handler.
//!
//! ```no_run
//! use axum::{Router, response::Response, routing::any};
//! use duplex::axum::WebSocketUpgrade;
//! use futures_util::StreamExt;
//!
//! async fn chat(ws: WebSocketUpgrade) -> Response {
//!     ws.protocols(["chat.v1"]).on_upgrade(|mut socket| async move {
//!         while let Some(Ok(message)) = socket.next().await {
//!             let echo = message.is_text() || message.is_binary();
//!             if echo && socket.send(message).await.is_err() {
//!                 break;
//!             }
//!         }
//!     })
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let app = Router::new()
//!     .route("/", axum::routing::get(|| async { "hello, HTTP" }))
//!     .route("/ws", any(chat));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await
//! # }
//! ```
//!
//! A request to the route that is not a WebSocket handshake is answered with
//! the status the handshake error calls for (426 for a plain GET, 400 for a
//! broken handshake, 405 for another method); the extractor's rejection is
//! [`Refused`]. Take `Option<WebSocketUpgrade>` to serve something else to
//! requests that do not ask for a WebSocket at all.
//!
//! To share one set of settings (an origin policy, a request check, limits)
//! between routes, build a [`ServerBuilder`] once, keep it in the state, and
//! hand it over with [`server`](WebSocketUpgrade::server).

use std::fmt;
use std::future::Future;

use ::axum::extract::{FromRequestParts, OptionalFromRequestParts};
use ::axum::response::{IntoResponse, Response};
use bytes::Bytes;
use duplex_proto::handshake::UpgradeRequest;
use http::request::Parts;
use http::{Request, StatusCode};
use hyper::upgrade::OnUpgrade;

use crate::config::WebSocketConfig;
use crate::error::Error;
use crate::origin::Origins;
use crate::server::{Accept, Reject, ServerBuilder};
use crate::upgrade::{self, PendingWebSocket, Refused, Upgraded};
use crate::websocket::WebSocket;

/// Extractor for a WebSocket handshake: a valid upgrade request and hyper's
/// handle on the connection, waiting for the handler to set the server's
/// settings and answer with [`on_upgrade`](Self::on_upgrade).
///
/// It accepts any state (`FromRequestParts<S>` for every `S: Send + Sync`).
/// Its rejection, for a request that is not a valid WebSocket handshake, is
/// [`Refused`], answered with the handshake error's status.
#[must_use = "the handshake is answered by `on_upgrade`"]
pub struct WebSocketUpgrade {
    head: Request<()>,
    upgrade: UpgradeRequest,
    on_upgrade: OnUpgrade,
    server: ServerBuilder,
    on_failed_upgrade: Option<Box<dyn FnOnce(Error) + Send>>,
}

impl fmt::Debug for WebSocketUpgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocketUpgrade")
            .field("request", &self.head)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for WebSocketUpgrade {
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let head = upgrade::request_head(&parts.method, &parts.uri, parts.version, &parts.headers);
        let validated = upgrade::validate(&head, parts.extensions.get())?;
        let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
            return Err(not_upgradable(validated.is_http2()));
        };
        Ok(WebSocketUpgrade {
            head,
            upgrade: validated,
            on_upgrade,
            server: ServerBuilder::new(),
            on_failed_upgrade: None,
        })
    }
}

/// `Option<WebSocketUpgrade>`: `None` for a request that does not ask for a
/// WebSocket at all (no `Upgrade: websocket`, or over HTTP/2 no extended
/// CONNECT), so one route can serve a page and its socket. A request that asks
/// but breaks the handshake is still rejected.
impl<S: Send + Sync> OptionalFromRequestParts<S> for WebSocketUpgrade {
    type Rejection = Refused;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        let asks = upgrade::asks_for_websocket(
            &parts.method,
            parts.version,
            &parts.headers,
            parts.extensions.get(),
        );
        if !asks {
            return Ok(None);
        }
        <Self as FromRequestParts<S>>::from_request_parts(parts, state)
            .await
            .map(Some)
    }
}

/// The refusal when hyper left no handle on the connection: a server that is
/// not hyper, or a layer (or an earlier extractor) that took it.
fn not_upgradable(http2: bool) -> Refused {
    const WHY: &str = "this connection cannot be upgraded: the request carries no hyper \
                       OnUpgrade (serve the app with axum::serve, or hyper with upgrades)";
    let response = http::Response::builder()
        .status(StatusCode::INTERNAL_SERVER_ERROR)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Bytes::from(format!("{WHY}\n")))
        .unwrap_or_default();
    Refused::new(response, Error::Io(std::io::Error::other(WHY)), http2)
}

/// Answers with [`Refused::status`], the headers the status calls for (none
/// that HTTP/2 forbids) and a one-line plain-text body saying what was wrong.
impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        Refused::into_response(self).map(::axum::body::Body::new)
    }
}

impl WebSocketUpgrade {
    /// Uses `server`'s settings (subprotocols, origin policy, request check,
    /// limits, compression) in place of the ones set so far: for one
    /// [`ServerBuilder`] built at start-up and shared by every route. Setters
    /// called after this one adjust it for this connection.
    pub fn server(mut self, server: ServerBuilder) -> Self {
        self.server = server;
        self
    }

    /// The subprotocols this server speaks; the first one the client offers is
    /// chosen. See [`ServerBuilder::protocols`].
    pub fn protocols<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.server = self.server.protocols(protocols);
        self
    }

    /// Which `Origin`s are accepted; a refused one gets 403. See
    /// [`ServerBuilder::origins`].
    pub fn origins(mut self, origins: Origins) -> Self {
        self.server = self.server.origins(origins);
        self
    }

    /// A check run on the request before it is answered, which may choose the
    /// subprotocol, add response headers, or reject. See
    /// [`ServerBuilder::on_request`].
    pub fn on_request<F>(mut self, check: F) -> Self
    where
        F: Fn(&Request<()>) -> Result<Accept, Reject> + Send + Sync + 'static,
    {
        self.server = self.server.on_request(check);
        self
    }

    /// Replaces all connection settings; see [`WebSocketConfig`].
    pub fn config(mut self, config: WebSocketConfig) -> Self {
        self.server = self.server.config(config);
        self
    }

    /// Sets the largest message accepted; default 64 MiB.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.server = self.server.max_message_size(bytes);
        self
    }

    /// Sets the largest frame accepted; default 16 MiB.
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.server = self.server.max_frame_size(bytes);
        self
    }

    /// Sets the write buffer bound; see [`WebSocketConfig::max_write_buffer`].
    pub fn max_write_buffer(mut self, bytes: usize) -> Self {
        self.server = self.server.max_write_buffer(bytes);
        self
    }

    /// Sets the close timeout; see [`WebSocketConfig::close_timeout`].
    pub fn close_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.server = self.server.close_timeout(timeout);
        self
    }

    /// Turns keepalive on; see [`WebSocketConfig::keepalive`].
    pub fn keepalive(mut self, keepalive: crate::Keepalive) -> Self {
        self.server = self.server.keepalive(keepalive);
        self
    }

    /// Sets what permessage-deflate offers are accepted; by default
    /// [`DeflateConfig::default`](crate::DeflateConfig::default).
    #[cfg(feature = "deflate")]
    pub fn deflate(mut self, config: crate::DeflateConfig) -> Self {
        self.server = self.server.deflate(config);
        self
    }

    /// Turns compression off: every offer is declined.
    #[cfg(feature = "deflate")]
    pub fn no_deflate(mut self) -> Self {
        self.server = self.server.no_deflate();
        self
    }

    /// Called with the error if hyper fails to hand over the connection after
    /// the response (the client went away, say), instead of the callback of
    /// [`on_upgrade`](Self::on_upgrade). By default the failure is logged at
    /// debug level.
    pub fn on_failed_upgrade<C>(mut self, callback: C) -> Self
    where
        C: FnOnce(Error) + Send + 'static,
    {
        self.on_failed_upgrade = Some(Box::new(callback));
        self
    }

    /// The request: method, URI, version and headers.
    pub fn request(&self) -> &Request<()> {
        &self.head
    }

    /// The subprotocols the client offered, in its order of preference.
    pub fn offered_protocols(&self) -> &[String] {
        self.upgrade.protocols()
    }

    /// The subprotocol the settings so far choose: the first offered one the
    /// server speaks. A request check set with [`on_request`](Self::on_request)
    /// may choose another.
    pub fn selected_protocol(&self) -> Option<&str> {
        self.server.choose_protocol(self.upgrade.protocols())
    }

    /// Whether the request came as an HTTP/2 extended CONNECT (RFC 8441).
    pub fn is_http2(&self) -> bool {
        self.upgrade.is_http2()
    }

    /// Answers the handshake: runs the origin policy and the request check,
    /// agrees on the subprotocol and compression, and returns the response
    /// that accepts the connection (101, or 200 over HTTP/2). Once hyper has
    /// sent it and handed over the connection, a spawned task calls `callback`
    /// with the open socket.
    ///
    /// A refused request gets its refusal instead (403 for a refused origin,
    /// the request check's rejection), and `callback` is never called.
    pub fn on_upgrade<F, Fut>(self, callback: F) -> Response
    where
        F: FnOnce(WebSocket<Upgraded>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (response, agreed) = match upgrade::answer(&self.server, self.head, &self.upgrade) {
            Ok(answer) => answer,
            Err(refused) => return IntoResponse::into_response(refused),
        };
        let pending = PendingWebSocket::new(self.on_upgrade, self.server, agreed);
        let on_failed_upgrade = self.on_failed_upgrade;
        tokio::spawn(async move {
            match pending.await {
                Ok(socket) => callback(socket).await,
                Err(err) => match on_failed_upgrade {
                    Some(on_failed_upgrade) => on_failed_upgrade(err),
                    None => tracing::debug!("WebSocket upgrade failed: {err}"),
                },
            }
        });
        response.map(|_| ::axum::body::Body::empty())
    }
}
