//! One admission step for the hub's WebSockets, `/ws` and `/docs/NAME`: who
//! the client is (its address, and the claims of a `?token=`), or the HTTP
//! answer that refuses it, before any upgrade.

use http::header;
use http::{Request, Response, StatusCode};

use std::time::Instant;

use crate::abuse::{ConnectionSlot, IpRefusal};
use crate::auth::{Claims, MAX_TOKEN_LEN};
use crate::forwarded::ClientAddr;
use crate::metrics::bump;
use crate::service::{Body, Service, text};

/// Which WebSocket route a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/ws`: a token may also come later, in the `connect` op.
    Hub,
    /// `/docs/NAME`: the URL's token is the only one.
    Document,
}

impl Route {
    fn name(self) -> &'static str {
        match self {
            Route::Hub => "WebSocket",
            Route::Document => "document WebSocket",
        }
    }
}

/// A client let in: where it is, what its token says, and its slot in its
/// address's connection count.
#[derive(Debug)]
pub struct Admitted {
    /// The client's address (through trusted proxies).
    pub addr: ClientAddr,
    /// The claims of the URL's `token`, verified; `None` without one.
    pub claims: Option<Claims>,
    /// The connection's slot while `limits.max_connections_per_ip` is on:
    /// the connection's task holds it until the connection ends.
    pub slot: Option<ConnectionSlot>,
}

impl Service {
    /// Admits a WebSocket request from the client at `addr`, or answers it:
    /// first the limits per client address (429 over the handshake rate,
    /// 503 over the connections open, both with `Retry-After`, so a flood
    /// costs no token verification), then 403 for a page of a foreign
    /// origin, 401 for a `token` that does not verify or is a subscription
    /// token (or, on [`Route::Document`], for none when `auth.required`).
    /// Every refusal is counted in `duplex_connections_refused_total` and
    /// logged with the client's address (never the token).
    ///
    /// # Errors
    ///
    /// The response that refuses the request.
    pub async fn admit<B>(
        &self,
        request: &Request<B>,
        addr: ClientAddr,
        route: Route,
    ) -> Result<Admitted, Response<Body>> {
        let refuse = |status: StatusCode, why: &str, body: String| {
            bump(&self.hub.metrics().connections_refused);
            tracing::info!(
                client_addr = %addr.ip(),
                proxy_addr = addr.proxy().map(tracing::field::display),
                %status,
                reason = why,
                "{} refused",
                route.name()
            );
            text(status, body)
        };
        let slot = match self.hub.ip_limits().admit(addr.ip(), Instant::now()) {
            Ok(slot) => slot,
            Err(refusal) => {
                let status = match refusal {
                    IpRefusal::Rate { .. } => StatusCode::TOO_MANY_REQUESTS,
                    IpRefusal::Connections { .. } | IpRefusal::Tracked { .. } => {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                };
                let mut response = refuse(status, refusal.label(), format!("{refusal}\n"));
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, refusal.retry_after_secs().into());
                return Err(response);
            }
        };
        if let Err(reject) = self.origins.check(request.headers(), request.uri()) {
            let origin = request
                .headers()
                .get(header::ORIGIN)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            return Err(refuse(
                reject.status(),
                "origin",
                format!("origin {origin:?} not allowed\n"),
            ));
        }
        let claims = match query_token(request.uri().query()) {
            Some(token) => match self.hub.verify_token(&token).await {
                // A grant of one channel must not open the rest.
                Ok(claims) if claims.channel.is_some() => {
                    return Err(refuse(
                        StatusCode::UNAUTHORIZED,
                        "subscription token",
                        "a subscription token (with a channel claim) is not a connection token\n"
                            .into(),
                    ));
                }
                Ok(claims) => Some(claims),
                Err(err) => {
                    return Err(refuse(
                        StatusCode::UNAUTHORIZED,
                        err.refusal.label(),
                        format!("{err}\n"),
                    ));
                }
            },
            None if route == Route::Document && self.hub.config().auth.required => {
                return Err(refuse(
                    StatusCode::UNAUTHORIZED,
                    "no token",
                    "this hub requires a token: open /docs/NAME?token=...\n".into(),
                ));
            }
            None => None,
        };
        Ok(Admitted { addr, claims, slot })
    }
}

/// The `token` parameter of a query string, `%XX` decoded, at most
/// [`MAX_TOKEN_LEN`] bytes and one more (which the verifier refuses as too
/// long) however long the parameter is.
pub fn query_token(query: Option<&str>) -> Option<String> {
    let value = query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))?;
    if value.is_empty() {
        return None;
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len().min(MAX_TOKEN_LEN + 1));
    let mut i = 0;
    while i < bytes.len() && out.len() <= MAX_TOKEN_LEN {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_from_queries() {
        assert_eq!(query_token(Some("token=a.b.c")), Some("a.b.c".into()));
        assert_eq!(query_token(Some("x=1&token=a%2Eb")), Some("a.b".into()));
        assert_eq!(query_token(Some("token=")), None);
        assert_eq!(query_token(Some("tok=1")), None);
        assert_eq!(query_token(None), None);
        assert_eq!(query_token(Some("token=%")), Some("%".into()));
        assert_eq!(query_token(Some("token=%4")), Some("%4".into()));
        // A huge parameter is cut just past the limit, not copied whole.
        let huge = format!("token={}", "a".repeat(10 * MAX_TOKEN_LEN));
        assert_eq!(query_token(Some(&huge)).unwrap().len(), MAX_TOKEN_LEN + 1);
    }
}
