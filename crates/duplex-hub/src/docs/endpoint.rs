//! `/docs/NAME`: the checks before the upgrade, and one y-websocket
//! connection after it.
//!
//! Before the upgrade: the document name (400), the limits per client
//! address (429, 503), the Origin (403, the policy
//! of `/ws`), the token in `?token=` (401 if invalid, or missing while
//! `auth.required`), its `docs` claim (403 without access). After it, the
//! connection reads binary y-websocket messages and hands them to its
//! document; it closes with 1003 on a text message, 1007 on a malformed
//! message or update, 1008 over the message rate or on too much awareness,
//! 1009 when the document would be over its size limit or an awareness
//! message over [`MAX_AWARENESS_SIZE`], 1001 on shutdown,
//! and 1008 as a slow consumer when its send queue fills.

use std::pin::pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use duplex::{CloseCode, Message, WebSocket, upgrade};
use futures_util::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming as Body;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::doc::Cmd;
use super::sync::{self, Incoming};
use super::{Access, Docs, Peer, access, valid_name};
use crate::admission::{Admitted, Route};
use crate::forwarded::ClientAddr;
use crate::limits::TokenBucket;
use crate::metrics::{bump, drop_one};
use crate::registry::Outbox;
use crate::service::{Service, text};

/// The most bytes of JSON one awareness message may carry (a cursor and a
/// name take a few hundred).
pub const MAX_AWARENESS_SIZE: usize = 16 * 1024;

/// Answers a request for `/docs/NAME` from the client at `addr`: refuses
/// it, or upgrades it and runs the connection on the service's tracker.
pub async fn handle(
    service: &Service,
    docs: &Arc<Docs>,
    request: &mut Request<Body>,
    name: &str,
    addr: ClientAddr,
) -> Response<Full<Bytes>> {
    let metrics = service.hub.metrics();
    if !docs.config().enabled {
        return text(
            StatusCode::NOT_FOUND,
            "documents are disabled (docs.enabled = false)\n",
        );
    }
    if !valid_name(name) {
        return text(
            StatusCode::BAD_REQUEST,
            "a document name is 1 to 128 of A-Z a-z 0-9 - _ . (not starting with .)\n",
        );
    }
    let Admitted { addr, claims, slot } = match service.admit(request, addr, Route::Document).await
    {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal,
    };
    let Some(access) = access(claims.as_ref(), name) else {
        bump(&metrics.connections_refused);
        return text(
            StatusCode::FORBIDDEN,
            format!("the token gives no access to document {name:?}\n"),
        );
    };
    let max = docs.config().max_message_size;
    let builder = service
        .websocket
        .clone()
        .max_message_size(max)
        .max_frame_size(max);
    let (response, pending) = match upgrade::upgrade(request, &builder) {
        Ok(accepted) => accepted,
        Err(refused) => {
            bump(&metrics.connections_refused);
            return refused.into_response();
        }
    };
    let docs = docs.clone();
    let hub = service.hub.clone();
    let closing = service.closing.clone();
    let name = name.to_string();
    service.tracker.spawn(async move {
        // Held until the connection ends, given back on every path.
        let _slot = slot;
        match pending.await {
            Ok(ws) => {
                let (id, _) = hub.new_client_id();
                run(
                    docs,
                    hub.metrics().clone(),
                    ws,
                    id,
                    name,
                    access,
                    addr,
                    hub.config().limits.send_queue,
                    closing,
                )
                .await;
            }
            Err(err) => {
                let err = crate::error_chain(&err);
                tracing::debug!(%err, "the upgrade did not complete");
            }
        }
    });
    response
}

/// Runs one document connection (of the client at `addr`) until it ends.
#[allow(clippy::too_many_arguments)]
pub async fn run<S>(
    docs: Arc<Docs>,
    hub_metrics: Arc<crate::metrics::Metrics>,
    ws: WebSocket<S>,
    id: u64,
    name: String,
    access: Access,
    addr: ClientAddr,
    send_queue: usize,
    closing: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let metrics = &docs.metrics;
    bump(&metrics.connections);
    let (mut read, write) = ws.split();
    let peer = Arc::new(Peer {
        id,
        outbox: Outbox::new(id, write.sender(), send_queue, hub_metrics),
        writable: access == Access::Write,
    });
    let config = docs.config().clone();
    let joined = tokio::select! {
        () = closing.cancelled() => None,
        joined = docs.join(&name, peer.clone()) => match joined {
            Ok(commands) => Some(commands),
            Err(err) => {
                tracing::warn!(doc = %name, error = err.0, "a connection could not join its document");
                None
            }
        },
    };
    let Some(commands) = joined else {
        drop(write);
        let _ = read
            .close(CloseCode::TRY_AGAIN_LATER, "the document is unavailable")
            .await;
        drop_one(&metrics.connections);
        return;
    };
    tracing::info!(
        doc = %name,
        peer = id,
        read_only = !peer.writable,
        client_addr = %addr.ip(),
        proxy_addr = addr.proxy().map(tracing::field::display),
        "document connection open"
    );
    let stop: Option<(CloseCode, String)> = {
        let reader = async {
            let mut bucket =
                TokenBucket::new(config.messages_per_second, config.burst, Instant::now());
            while let Some(item) = read.next().await {
                let bytes = match item {
                    Ok(Message::Binary(bytes)) => bytes,
                    Ok(Message::Text(_)) => {
                        return Some((
                            CloseCode::UNSUPPORTED_DATA,
                            "y-websocket messages are binary".to_string(),
                        ));
                    }
                    Ok(_) => continue,
                    Err(err) => {
                        let err = crate::error_chain(&err);
                        tracing::debug!(%err, "document connection failed");
                        return None;
                    }
                };
                bump(&metrics.messages_in);
                if !bucket.take(Instant::now()) {
                    return Some((
                        CloseCode::POLICY_VIOLATION,
                        format!(
                            "too many messages: over {} per second (docs.messages_per_second, burst {})",
                            config.messages_per_second, config.burst
                        ),
                    ));
                }
                let message = match sync::decode(&bytes) {
                    Ok(message) => message,
                    Err(err) => {
                        bump(&metrics.refused);
                        return Some((CloseCode::INVALID_PAYLOAD, err.0.to_string()));
                    }
                };
                if let Incoming::Awareness(update) = &message {
                    let size: usize = update.clients.values().map(|e| e.json.len()).sum();
                    if size > MAX_AWARENESS_SIZE {
                        return Some((
                            CloseCode::MESSAGE_TOO_BIG,
                            format!("awareness states over {MAX_AWARENESS_SIZE} bytes"),
                        ));
                    }
                }
                if let Incoming::Update(update) = &message
                    && !peer.writable
                {
                    // The SyncStep2 of a reader with nothing new.
                    if update.len() <= 2 && update.iter().all(|&b| b == 0) {
                        continue;
                    }
                    bump(&metrics.refused);
                    tracing::info!(doc = %name, peer = id, "update ignored: read-only access");
                    continue;
                }
                if commands
                    .send(Cmd::Message { peer: id, message })
                    .await
                    .is_err()
                {
                    return Some((CloseCode::GOING_AWAY, "the document was closed".into()));
                }
            }
            None
        };
        let mut reader = pin!(reader);
        tokio::select! {
            biased;
            () = closing.cancelled() => Some((CloseCode::GOING_AWAY, "the server is shutting down".into())),
            told = peer.outbox.closed() => Some(told),
            stop = &mut reader => stop,
        }
    };
    let _ = commands.send(Cmd::Leave { peer: id }).await;
    if let Some((code, reason)) = stop {
        tracing::info!(doc = %name, peer = id, code = code.0, %reason, "closing a document connection");
        drop(write);
        if let Err(err) = read.close(code, &reason).await {
            tracing::debug!(%err, "the closing handshake did not complete");
        }
    }
    drop_one(&metrics.connections);
    tracing::info!(
        doc = %name,
        peer = id,
        client_addr = %addr.ip(),
        proxy_addr = addr.proxy().map(tracing::field::display),
        "document connection closed"
    );
}
