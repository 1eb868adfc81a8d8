//! WebSocket on a hyper 1 server: one port for HTTP and WebSocket.
//!
//! An HTTP service answers ordinary requests itself and hands upgrade requests
//! to [`upgrade`], which checks the request with an [`Acceptor`]'s settings
//! (subprotocols, limits, compression, origins, request check) and returns the
//! response to send and a future that resolves to the [`WebSocket`] once hyper
//! hands over the connection.
//!
//! Both ways a browser opens a WebSocket are accepted: an HTTP/1.1 `Upgrade`
//! (RFC 6455), and an HTTP/2 extended CONNECT (RFC 8441) on a stream of a
//! connection the browser already holds, when the server enables it with
//! hyper's `enable_connect_protocol()`.
//!
//! ```no_run
//! use bytes::Bytes;
//! use duplex::upgrade::{self, Body};
//! use futures_util::StreamExt;
//! use http::{Request, Response};
//!
//! async fn handle(
//!     mut request: Request<hyper::body::Incoming>,
//!     server: duplex::Acceptor,
//! ) -> Result<Response<Body>, std::convert::Infallible> {
//!     if !upgrade::is_upgrade_request(&request) {
//!         return Ok(Response::new(Body::from(Bytes::from_static(b"hello, HTTP"))));
//!     }
//!     match upgrade::upgrade(&mut request, &server) {
//!         Ok((response, websocket)) => {
//!             tokio::spawn(async move {
//!                 let Ok(mut ws) = websocket.await else { return };
//!                 while let Some(Ok(message)) = ws.next().await {
//!                     if message.is_text() || message.is_binary() {
//!                         let _ = ws.send(message).await;
//!                     }
//!                 }
//!             });
//!             Ok(response)
//!         }
//!         Err(refused) => Ok(refused.into_response()),
//!     }
//! }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use duplex_proto::HandshakeError;
use duplex_proto::handshake::{self, UpgradeRequest};
use http::header::{ALLOW, HeaderValue, UPGRADE};
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use hyper_util::rt::TokioIo;

pub use crate::direct::{TcpHandle, TcpIo};
use crate::error::{Error, Result};
use crate::server::{Acceptor, Agreed, Rejection};
use crate::websocket::WebSocket;

/// The stream of an upgraded hyper connection (or HTTP/2 stream), as tokio I/O.
pub type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

/// The body type of the responses [`upgrade`] returns.
pub type Body = http_body_util::Full<Bytes>;

/// Whether `request` asks for a WebSocket: `Upgrade: websocket` over HTTP/1.1,
/// or an extended CONNECT with `:protocol` `websocket` over HTTP/2. Route the
/// ones that do to [`upgrade`] and answer the others as HTTP.
pub fn is_upgrade_request<B>(request: &Request<B>) -> bool {
    asks_for_websocket(
        request.method(),
        request.version(),
        request.headers(),
        request.extensions().get(),
    )
}

/// [`is_upgrade_request`] on a request's parts.
pub(crate) fn asks_for_websocket(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
    protocol: Option<&hyper::ext::Protocol>,
) -> bool {
    if version == Version::HTTP_2 {
        method == Method::CONNECT
            && protocol.is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
    } else {
        headers
            .get_all(UPGRADE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("websocket"))
    }
}

/// Answers a WebSocket request received by a hyper server: validates it
/// (RFC 6455 over HTTP/1.1, RFC 8441 over HTTP/2), runs `acceptor`'s origin policy
/// and request check, and agrees on the subprotocol and compression.
///
/// Returns the response to send (101, or 200 over HTTP/2) and a future that
/// resolves to the open connection once hyper has sent the response and handed
/// over the stream; spawn a task to await it.
///
/// # Errors
///
/// [`Rejection`]: the error response to send (400, 403, 405, 426...) and why.
pub fn upgrade<B>(
    request: &mut Request<B>,
    acceptor: &Acceptor,
) -> std::result::Result<(Response<Body>, PendingWebSocket), Rejection> {
    let head = request_head(
        request.method(),
        request.uri(),
        request.version(),
        request.headers(),
    );
    let upgrade = validate(&head, request.extensions().get())?;
    let (response, agreed) = answer(acceptor, head, &upgrade)?;
    let socket = direct_socket(request.version(), request.extensions());
    let pending = PendingWebSocket::new(
        hyper::upgrade::on(request),
        acceptor.clone(),
        agreed,
        socket,
    );
    Ok((response, pending))
}

/// The socket a WebSocket upgraded from a request may write to directly:
/// the [`TcpHandle`] in its extensions, over HTTP/1.1 only (over HTTP/2 the
/// WebSocket is one stream of the connection, and goes through hyper).
pub(crate) fn direct_socket(version: Version, extensions: &http::Extensions) -> Option<TcpHandle> {
    extensions
        .get::<TcpHandle>()
        .filter(|_| version == Version::HTTP_11)
        .cloned()
}

// The steps of `upgrade`, shared with the axum extractor, which takes them at
// two different times: `validate` when extracting, the others once the handler
// has settled the server's settings.

/// A request's head without its body and extensions: what the handshake
/// validation, the origin policy and the request check look at.
pub(crate) fn request_head(
    method: &Method,
    uri: &Uri,
    version: Version,
    headers: &HeaderMap,
) -> Request<()> {
    let mut head = Request::new(());
    *head.method_mut() = method.clone();
    *head.uri_mut() = uri.clone();
    *head.version_mut() = version;
    *head.headers_mut() = headers.clone();
    head
}

/// Validates `head` as an RFC 6455 upgrade (HTTP/1.x) or an RFC 8441 extended
/// CONNECT (HTTP/2, whose `:protocol` hyper hands over as `protocol`).
pub(crate) fn validate(
    head: &Request<()>,
    protocol: Option<&hyper::ext::Protocol>,
) -> std::result::Result<UpgradeRequest, Rejection> {
    let http2 = head.version() == Version::HTTP_2;
    let validated = if http2 {
        handshake::validate_extended_connect(head, protocol.map(|p| p.as_str()))
    } else {
        handshake::validate_request(head)
    };
    validated.map_err(|err| handshake_rejection(err, http2))
}

/// Runs `acceptor`'s origin policy and request check on a valid request, and
/// agrees on the subprotocol and compression: the response to send (101, or
/// 200 over HTTP/2) and what the connection is to run with.
pub(crate) fn answer(
    acceptor: &Acceptor,
    head: Request<()>,
    upgrade: &UpgradeRequest,
) -> std::result::Result<(Response<Body>, Agreed), Rejection> {
    let http2 = upgrade.is_http2();
    let accept = acceptor
        .check(&head)
        .map_err(|rejection| rejection.http2(http2))?;
    let (response, agreed) = acceptor
        .agree(head, upgrade, accept)
        .map_err(|err| handshake_rejection(err, http2))?;
    let (parts, ()) = response.into_parts();
    Ok((Response::from_parts(parts, Body::default()), agreed))
}

/// The open connection, once hyper hands it over; from [`upgrade`].
#[must_use = "the connection opens only when this is awaited"]
pub struct PendingWebSocket(Pin<Box<dyn Future<Output = Result<WebSocket<Upgraded>>> + Send>>);

impl PendingWebSocket {
    /// Waits for hyper to hand over the connection, then opens it as agreed.
    pub(crate) fn new(
        on_upgrade: hyper::upgrade::OnUpgrade,
        acceptor: Acceptor,
        agreed: Agreed,
        socket: Option<TcpHandle>,
    ) -> Self {
        PendingWebSocket(Box::pin(async move {
            let upgraded = on_upgrade.await.map_err(|err| {
                Error::Io(std::io::Error::other(format!(
                    "hyper did not hand over the connection: {err}"
                )))
            })?;
            let ws = acceptor.open(TokioIo::new(upgraded), Bytes::new(), agreed);
            Ok(match socket {
                Some(socket) => ws.with_direct_socket(&socket),
                None => ws,
            })
        }))
    }
}

impl Future for PendingWebSocket {
    type Output = Result<WebSocket<Upgraded>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl fmt::Debug for PendingWebSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingWebSocket").finish_non_exhaustive()
    }
}

/// The rejection of a request that broke the handshake with `err`.
fn handshake_rejection(err: HandshakeError, http2: bool) -> Rejection {
    let method = match (&err, http2) {
        (HandshakeError::MethodNotAllowed(method), true) => Some(method.clone()),
        _ => None,
    };
    let rejection = Rejection::handshake(err).http2(http2);
    let Some(method) = method else {
        return rejection;
    };
    // Over HTTP/2 a WebSocket opens with an extended CONNECT (RFC 8441
    // section 4), not with the GET the error's text names.
    let body = format!(
        "method {method} not allowed; a WebSocket over HTTP/2 opens with an \
         extended CONNECT (RFC 8441)\n"
    );
    rejection
        .replace_header(ALLOW, HeaderValue::from_static("CONNECT"))
        .body(body)
}
