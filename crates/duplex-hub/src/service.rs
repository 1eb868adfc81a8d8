//! What every route of the hub's port shares: the [`Service`] (the hub,
//! the WebSocket settings, the shutdown's tasks and token), the response
//! [`Body`], and plain-text answers. The routes ([`crate::http`]), the
//! admission step ([`crate::admission`]) and the documents' endpoint
//! ([`crate::docs::endpoint`]) build on it; it depends on none of them.

use std::sync::Arc;

use bytes::Bytes;
use duplex::{Acceptor, Origins};
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::hub::Hub;

/// The body of every response.
pub type Body = Full<Bytes>;

/// What the routes need: the hub, the WebSocket settings, and the tasks and
/// token of the server's shutdown.
#[derive(Clone)]
pub struct Service {
    /// The hub.
    pub hub: Arc<Hub>,
    /// The WebSocket settings (limits, keepalive). Its own origin check is
    /// left open: [`origins`](Self::origins) is checked once, by
    /// [`Service::admit`], before the upgrade.
    pub websocket: Acceptor,
    /// The origin policy, checked by [`Service::admit`] before the token.
    pub origins: Origins,
    /// Where WebSocket tasks are tracked.
    pub tracker: TaskTracker,
    /// Cancelled when shutdown starts.
    pub closing: CancellationToken,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").finish_non_exhaustive()
    }
}

/// The origin policy of a configuration: same-origin if the list is empty.
pub fn origins(allowed: &[String]) -> Origins {
    if allowed.is_empty() {
        Origins::same_origin()
    } else {
        Origins::allow(allowed)
    }
}

/// A `text/plain` response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
