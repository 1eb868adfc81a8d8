//! The HTTP service: the routes of one port.
//!
//! - `GET /`, `/chat`, `/ticker`, `/static/FILE`: the embedded pages;
//! - `/ws`: the hub's WebSocket (HTTP/1.1 upgrade or HTTP/2 extended
//!   CONNECT); a client over the limits of its address gets 429 or 503, a
//!   foreign `Origin` 403, a bad `?token=` 401, all before any upgrade;
//! - `POST /api/publish`: publish from a back end, with the API key;
//! - `GET /metrics`: Prometheus text; `GET /healthz`: `ok`.

use std::net::SocketAddr;

use bytes::Bytes;
use duplex::upgrade;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::admission::{Admitted, Route};
use crate::conn;
use crate::forwarded::ClientAddr;
use crate::metrics::bump;
use crate::pages;
use crate::protocol::{ErrorCode, HubError};
use crate::service::{Body, Service, text};

fn json(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn json_error(status: StatusCode, error: &HubError) -> Response<Body> {
    json(
        status,
        &serde_json::json!({"error": {"code": error.code.as_str(), "message": error.message}}),
    )
}

impl Service {
    /// Answers one request that came over a TCP connection from `peer`
    /// (the client's address is `peer`, or the client a trusted proxy names:
    /// see [`crate::forwarded`]).
    pub async fn handle(&self, mut request: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let path = request.uri().path().to_string();
        if path == "/ws" || path.starts_with("/docs/") {
            let addr = ClientAddr::resolve(
                peer,
                request.headers(),
                &self.hub.config().server.trusted_proxies,
            );
            if let Some(name) = path.strip_prefix("/docs/") {
                return crate::docs::endpoint::handle(
                    self,
                    self.hub.docs(),
                    &mut request,
                    name,
                    addr,
                )
                .await;
            }
            return self.websocket(&mut request, addr).await;
        }
        if upgrade::is_upgrade_request(&request) {
            return text(StatusCode::NOT_FOUND, "the WebSocket is at /ws\n");
        }
        let method = request.method().clone();
        let get = method == Method::GET || method == Method::HEAD;
        match path.as_str() {
            "/api/publish" if method == Method::POST => self.api_publish(request).await,
            "/api/publish" => method_not_allowed("POST"),
            "/metrics" if get => {
                let mut metrics = self.hub.metrics().render();
                metrics.push_str(&self.hub.docs().metrics().render());
                self.hub.ip_limits().render(&mut metrics);
                metrics.push_str(&format!(
                    "# HELP duplex_engine_info The engine and this node's name.\n\
                     # TYPE duplex_engine_info gauge\n\
                     duplex_engine_info{{kind=\"{}\",node={}}} 1\n",
                    self.hub.engine().kind().as_str(),
                    Value::from(self.hub.node()),
                ));
                let mut response = text(StatusCode::OK, metrics);
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            "/healthz" if get => match self.hub.engine().health().await {
                Ok(()) => text(StatusCode::OK, "ok"),
                Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
            },
            _ => match pages::page(&path) {
                Some(page) if get => {
                    let mut response =
                        Response::new(Full::new(Bytes::from_static(page.body.as_bytes())));
                    let headers = response.headers_mut();
                    headers.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static(page.content_type),
                    );
                    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                    response
                }
                Some(_) => method_not_allowed("GET, HEAD"),
                None if matches!(path.as_str(), "/metrics" | "/healthz") => {
                    method_not_allowed("GET, HEAD")
                }
                None => text(StatusCode::NOT_FOUND, "not found\n"),
            },
        }
    }

    /// `/ws`: the admission (origin, token in the URL), then the upgrade.
    async fn websocket(&self, request: &mut Request<Incoming>, addr: ClientAddr) -> Response<Body> {
        let metrics = self.hub.metrics();
        let Admitted { addr, claims, slot } = match self.admit(request, addr, Route::Hub).await {
            Ok(admitted) => admitted,
            Err(refusal) => return refusal,
        };
        // Only with a connect hook: what it is told of the client's request.
        let headers = self.hub.hooks().keep_headers(request.headers());
        let (response, pending) = match upgrade::upgrade(request, &self.websocket) {
            Ok(accepted) => accepted,
            Err(refused) => {
                bump(&metrics.connections_refused);
                tracing::info!(
                    status = %refused.status(),
                    error = %crate::error_chain(&refused),
                    client_addr = %addr.ip(),
                    proxy_addr = addr.proxy().map(tracing::field::display),
                    "WebSocket refused"
                );
                return refused.into_response();
            }
        };
        let hub = self.hub.clone();
        let closing = self.closing.clone();
        self.tracker.spawn(async move {
            // Held until the connection ends, given back on every path.
            let _slot = slot;
            match pending.await {
                Ok(ws) => conn::run(hub, ws, claims, headers, addr, closing).await,
                Err(err) => {
                    let err = crate::error_chain(&err);
                    tracing::debug!(err, "the upgrade did not complete");
                }
            }
        });
        response
    }

    /// `POST /api/publish`.
    async fn api_publish(&self, request: Request<Incoming>) -> Response<Body> {
        let Some(key) = self.hub.api_key() else {
            return json_error(
                StatusCode::FORBIDDEN,
                &HubError::new(
                    ErrorCode::Forbidden,
                    "the publish API is disabled: set server.api_key in the configuration \
                     or DUPLEX_API_KEY in the environment",
                ),
            );
        };
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        // Comparing digests: the time taken says nothing about the key.
        if Sha256::digest(given.as_bytes()) != Sha256::digest(key.as_bytes()) {
            return json_error(
                StatusCode::UNAUTHORIZED,
                &HubError::new(
                    ErrorCode::Unauthorized,
                    "missing or wrong API key: send Authorization: Bearer KEY",
                ),
            );
        }
        let max = self.hub.config().limits.max_publication_size;
        // Room for the channel and the JSON around the data.
        let limit = max.saturating_add(1024);
        let body = match Limited::new(request.into_body(), limit).collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => {
                return json_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &HubError::new(
                        ErrorCode::MessageTooBig,
                        format!(
                            "the request body is over {limit} bytes (limits.max_publication_size = {max})"
                        ),
                    ),
                );
            }
        };
        #[derive(Deserialize)]
        struct ApiPublish {
            channel: String,
            data: Value,
        }
        let parsed: ApiPublish = match serde_json::from_slice(&body) {
            Ok(parsed) => parsed,
            Err(err) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    &HubError::new(
                        ErrorCode::BadRequest,
                        format!("the body must be {{\"channel\":\"ns:name\",\"data\":...}}: {err}"),
                    ),
                );
            }
        };
        let (channel, namespace) = match self.hub.channel(&parsed.channel) {
            Ok(found) => found,
            Err(err) => return json_error(status_of(err.code), &err),
        };
        let namespace = namespace.clone();
        match self.hub.publish(&channel, &namespace, &parsed.data).await {
            Ok(publication) => json(
                StatusCode::OK,
                &serde_json::json!({"offset": publication.offset}),
            ),
            Err(err) => json_error(status_of(err.code), &err),
        }
    }
}

fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::UnknownNamespace => StatusCode::NOT_FOUND,
        ErrorCode::MessageTooBig => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    }
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}
