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
//! [`Rejection`]. Take `Option<WebSocketUpgrade>` to serve something else to
//! requests that do not ask for a WebSocket at all.
//!
//! To share one set of settings (an origin policy, a request check, limits)
//! between routes, build an [`Acceptor`] once, keep it in the state, and
//! hand it over with [`acceptor`](WebSocketUpgrade::acceptor).

use std::fmt;
use std::future::Future;

use ::axum::extract::{FromRequestParts, OptionalFromRequestParts};
use ::axum::response::{IntoResponse, Response};
use duplex_proto::handshake::UpgradeRequest;
use http::request::Parts;
use http::{Request, StatusCode};
use hyper::upgrade::OnUpgrade;

use crate::config::WebSocketConfig;
use crate::error::Error;
use crate::origin::Origins;
use crate::server::{Acceptance, Acceptor, Rejection};
use crate::upgrade::{self, PendingWebSocket, Upgraded};
use crate::websocket::WebSocket;

/// Extractor for a WebSocket handshake: a valid upgrade request and hyper's
/// handle on the connection, waiting for the handler to set the server's
/// settings and answer with [`on_upgrade`](Self::on_upgrade).
///
/// It accepts any state (`FromRequestParts<S>` for every `S: Send + Sync`).
/// Its rejection, for a request that is not a valid WebSocket handshake, is
/// [`Rejection`], answered with the handshake error's status.
#[must_use = "the handshake is answered by `on_upgrade`"]
pub struct WebSocketUpgrade {
    head: Request<()>,
    upgrade: UpgradeRequest,
    on_upgrade: OnUpgrade,
    /// The plain TCP socket under the connection, if the server gave one.
    socket: Option<upgrade::TcpHandle>,
    acceptor: Acceptor,
    on_failed_upgrade: Option<Box<dyn FnOnce(Error) + Send>>,
}

impl fmt::Debug for WebSocketUpgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocketUpgrade")
            .field("request", &self.head)
            .field("acceptor", &self.acceptor)
            .finish_non_exhaustive()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for WebSocketUpgrade {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let head = upgrade::request_head(&parts.method, &parts.uri, parts.version, &parts.headers);
        let validated = upgrade::validate(&head, parts.extensions.get())?;
        let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
            return Err(not_upgradable(validated.is_http2()));
        };
        let socket = upgrade::direct_socket(parts.version, &parts.extensions);
        Ok(WebSocketUpgrade {
            head,
            upgrade: validated,
            on_upgrade,
            socket,
            acceptor: Acceptor::new(),
            on_failed_upgrade: None,
        })
    }
}

/// `Option<WebSocketUpgrade>`: `None` for a request that does not ask for a
/// WebSocket at all (no `Upgrade: websocket`, or over HTTP/2 no extended
/// CONNECT), so one route can serve a page and its socket. A request that asks
/// but breaks the handshake is still rejected.
impl<S: Send + Sync> OptionalFromRequestParts<S> for WebSocketUpgrade {
    type Rejection = Rejection;

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
fn not_upgradable(http2: bool) -> Rejection {
    const WHY: &str = "this connection cannot be upgraded: the request carries no hyper \
                       OnUpgrade (serve the app with axum::serve, or hyper with upgrades)";
    Rejection::new(StatusCode::INTERNAL_SERVER_ERROR)
        .body(format!("{WHY}\n"))
        .http2(http2)
}

/// Answers with [`Rejection::status`], the headers the status calls for (none
/// that HTTP/2 forbids) and a one-line plain-text body saying what was wrong.
impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        Rejection::into_response(self).map(::axum::body::Body::new)
    }
}

impl WebSocketUpgrade {
    /// Uses `acceptor`'s settings (subprotocols, origin policy, request check,
    /// limits, compression) in place of the ones set so far: for one
    /// [`Acceptor`] built at start-up and shared by every route. Setters
    /// called after this one adjust it for this connection.
    pub fn acceptor(mut self, acceptor: Acceptor) -> Self {
        self.acceptor = acceptor;
        self
    }

    /// The subprotocols this server speaks; the first one the client offers is
    /// chosen. See [`Acceptor::protocols`].
    pub fn protocols<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.acceptor = self.acceptor.protocols(protocols);
        self
    }

    /// Which `Origin`s are accepted; a refused one gets 403. See
    /// [`Acceptor::origins`].
    pub fn origins(mut self, origins: Origins) -> Self {
        self.acceptor = self.acceptor.origins(origins);
        self
    }

    /// A check run on the request before it is answered, which may choose the
    /// subprotocol, add response headers, or reject. See
    /// [`Acceptor::on_request`].
    pub fn on_request<F>(mut self, check: F) -> Self
    where
        F: Fn(&Request<()>) -> Result<Acceptance, Rejection> + Send + Sync + 'static,
    {
        self.acceptor = self.acceptor.on_request(check);
        self
    }

    crate::config::config_setters!(replace);

    /// The connection settings, for the setters.
    fn config_mut(&mut self) -> &mut WebSocketConfig {
        self.acceptor.config_mut()
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
        self.acceptor.choose_protocol(self.upgrade.protocols())
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
        let (response, agreed) = match upgrade::answer(&self.acceptor, self.head, &self.upgrade) {
            Ok(answer) => answer,
            Err(refused) => return IntoResponse::into_response(refused),
        };
        let pending = PendingWebSocket::new(self.on_upgrade, self.acceptor, agreed, self.socket);
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
