//! Backend hooks (`[proxy]`): the hub asks the application's HTTP endpoints
//! whether a client may connect, subscribe or publish.
//!
//! For each op with a URL configured, the hub POSTs one JSON object:
//!
//! ```json
//! {"op":"connect","client":"ID","remote_addr":"IP:PORT",
//!  "headers":{"cookie":"sid=...","user-agent":"..."},
//!  "user":"...","channel":"...","data":...}
//! ```
//!
//! with the fields that apply (`headers` on connect only; `user` once known;
//! `channel` on subscribe and publish; `data` on publish). The backend answers
//! 200 with `{"result":{"user":...,"info":...,"channels":[...],"data":...}}`
//! (allow; every field optional) or `{"error":{"code":...,"message":...}}`
//! (deny). A backend that cannot be reached, does not answer within
//! `timeout_ms`, answers anything but 200, or answers something else than
//! one of the two objects denies the request with `unavailable` and a
//! message naming the hook. See docs/PROTOCOL.md, "Backend hooks".

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::Semaphore;

use crate::fetch::HttpClient;
use crate::forwarded::ClientAddr;
use crate::metrics::{Metrics, bump};
use crate::protocol::{ErrorCode, HubError, MAX_INFO_SIZE};

/// The request headers kept from the upgrade for the connect hook.
pub const KEPT_HEADERS: [&str; 11] = [
    "cookie",
    "authorization",
    "user-agent",
    "origin",
    "accept-language",
    "referer",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
];

/// The largest answer read from a backend, beyond the publication size.
const MAX_ANSWER_EXTRA: usize = 64 * 1024;

/// `[proxy]`: the backend's URLs and the bounds of the exchange.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Asked on `connect` without a token. Unset (the default): no hook.
    pub connect: Option<String>,
    /// Asked on every `subscribe`. Unset (the default): no hook.
    pub subscribe: Option<String>,
    /// Asked on every client `publish`. Unset (the default): no hook.
    pub publish: Option<String>,
    /// How long one hook request may take, connection included, in
    /// milliseconds. Default: 2000.
    pub timeout_ms: u64,
    /// Hook requests in flight at once, over the whole hub; a request past
    /// it is denied at once with `unavailable`. Default: 256.
    pub max_in_flight: usize,
    /// The most bytes of request headers (names and values of
    /// [`KEPT_HEADERS`]) kept for the connect hook; headers past it are left
    /// out. Default: 8192.
    pub max_header_bytes: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            connect: None,
            subscribe: None,
            publish: None,
            timeout_ms: 2000,
            max_in_flight: 256,
            max_header_bytes: 8192,
        }
    }
}

impl ProxyConfig {
    /// Checks the URLs and bounds.
    ///
    /// # Errors
    ///
    /// What is wrong, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        for (key, url) in [
            ("connect", &self.connect),
            ("subscribe", &self.subscribe),
            ("publish", &self.publish),
        ] {
            if let Some(url) = url {
                let ok = (url.starts_with("http://") || url.starts_with("https://"))
                    && url.parse::<http::Uri>().is_ok();
                if !ok {
                    return Err(format!(
                        "proxy.{key} = {url:?} is not an http:// or https:// URL"
                    ));
                }
            }
        }
        if self.timeout_ms == 0 || self.timeout_ms > 60_000 {
            return Err("proxy.timeout_ms is 1 to 60000".into());
        }
        if self.max_in_flight == 0 {
            return Err("proxy.max_in_flight must be at least 1".into());
        }
        Ok(())
    }
}

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookOp {
    /// `connect`.
    Connect,
    /// `subscribe`.
    Subscribe,
    /// `publish`.
    Publish,
}

impl HookOp {
    /// Every hook, in the order of the metrics.
    pub const ALL: [HookOp; 3] = [HookOp::Connect, HookOp::Subscribe, HookOp::Publish];

    /// The op's name, as in the request's `op`.
    pub fn as_str(self) -> &'static str {
        match self {
            HookOp::Connect => "connect",
            HookOp::Subscribe => "subscribe",
            HookOp::Publish => "publish",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How a hook request ended, for `duplex_hook_requests_total{outcome=...}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The backend allowed.
    Allowed,
    /// The backend denied.
    Denied,
    /// No usable answer (down, timeout, non-200, bad JSON, too many in
    /// flight).
    Failed,
}

impl Outcome {
    /// Every outcome, in the order of the metrics.
    pub const ALL: [Outcome; 3] = [Outcome::Allowed, Outcome::Denied, Outcome::Failed];

    /// The label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
        }
    }
}

/// Hook requests by op and outcome: `[op][outcome]`.
pub type HookCounters = [[AtomicU64; 3]; 3];

/// The request headers kept from the upgrade until `connect`: those of
/// [`KEPT_HEADERS`], at most `max_header_bytes` in all. Kept only when the
/// connect hook is configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHeaders(Vec<(&'static str, String)>);

impl RequestHeaders {
    /// The kept headers of `headers`; values that are not text are left out,
    /// repeated headers joined (`; ` for cookies, `, ` for the others).
    pub fn capture(headers: &HeaderMap, max_bytes: usize) -> RequestHeaders {
        let mut kept = Vec::new();
        let mut size = 0usize;
        for name in KEPT_HEADERS {
            let separator = if name == "cookie" { "; " } else { ", " };
            let mut value = String::new();
            for v in headers.get_all(name) {
                let Ok(v) = v.to_str() else { continue };
                if !value.is_empty() {
                    value.push_str(separator);
                }
                value.push_str(v);
            }
            if value.is_empty() {
                continue;
            }
            let cost = name.len() + value.len();
            if size + cost > max_bytes {
                continue;
            }
            size += cost;
            kept.push((name, value));
        }
        RequestHeaders(kept)
    }

    fn to_json(&self) -> Value {
        Value::Object(
            self.0
                .iter()
                .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
                .collect::<Map<String, Value>>(),
        )
    }
}

/// What a hook request says about the client and its request.
#[derive(Debug, Clone, Copy)]
pub struct HookRequest<'a> {
    /// The client's id.
    pub client: &'a str,
    /// Where it connects from.
    pub addr: ClientAddr,
    /// The upgrade's headers (connect).
    pub headers: Option<&'a RequestHeaders>,
    /// The user, once known (subscribe, publish).
    pub user: Option<&'a str>,
    /// The channel (subscribe, publish).
    pub channel: Option<&'a str>,
    /// The publication's data (publish).
    pub data: Option<&'a Value>,
}

/// A backend's allow: every field optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Allowed {
    /// The connection's user (connect).
    pub user: Option<String>,
    /// The connection's presence info (connect).
    pub info: Option<Value>,
    /// The channels the connection may use, as a token's `channels` claim
    /// (connect); absent: every channel.
    pub channels: Option<Vec<String>>,
    /// The data published instead of the client's (publish).
    pub data: Option<Value>,
}

#[derive(Deserialize)]
struct Answer {
    result: Option<Allowed>,
    error: Option<Denial>,
}

#[derive(Deserialize)]
struct Denial {
    #[serde(default)]
    code: Value,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Serialize)]
struct Body<'a> {
    op: &'static str,
    client: &'a str,
    remote_addr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    headers: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a Value>,
}

/// The codes a backend's error keeps; any other code becomes `forbidden`.
const PASSED_CODES: [ErrorCode; 8] = [
    ErrorCode::BadRequest,
    ErrorCode::BadChannel,
    ErrorCode::Forbidden,
    ErrorCode::Unauthorized,
    ErrorCode::TooManyRequests,
    ErrorCode::MessageTooBig,
    ErrorCode::Internal,
    ErrorCode::Unavailable,
];

/// The hooks of one hub: the URLs, one pooled HTTP client, the bound on
/// requests in flight.
#[derive(Debug)]
pub struct Hooks {
    config: ProxyConfig,
    client: HttpClient,
    in_flight: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    max_answer: usize,
}

impl Hooks {
    /// The hooks of `config`, counted in `metrics`; `max_publication_size`
    /// bounds (with room around it) the answers read.
    pub fn new(config: &ProxyConfig, metrics: Arc<Metrics>, max_publication_size: usize) -> Hooks {
        Hooks {
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            config: config.clone(),
            client: HttpClient::new(),
            metrics,
            max_answer: max_publication_size.saturating_add(MAX_ANSWER_EXTRA),
        }
    }

    /// The URL of `op`'s hook, if configured.
    pub fn url(&self, op: HookOp) -> Option<&str> {
        match op {
            HookOp::Connect => self.config.connect.as_deref(),
            HookOp::Subscribe => self.config.subscribe.as_deref(),
            HookOp::Publish => self.config.publish.as_deref(),
        }
    }

    /// Whether `op` has a hook.
    pub fn has(&self, op: HookOp) -> bool {
        self.url(op).is_some()
    }

    /// The headers to keep from an upgrade: `None` unless the connect hook
    /// is configured (nothing is kept then).
    pub fn keep_headers(&self, headers: &HeaderMap) -> Option<Box<RequestHeaders>> {
        self.has(HookOp::Connect).then(|| {
            Box::new(RequestHeaders::capture(
                headers,
                self.config.max_header_bytes,
            ))
        })
    }

    /// Asks `op`'s hook about `request`: what the backend allows, or the
    /// error the client gets. Without a hook for `op`, allows with nothing.
    ///
    /// # Errors
    ///
    /// The backend's denial (its code if it is one of the hub's codes a
    /// backend may use, else `forbidden`), or `unavailable` naming the hook
    /// when there is no usable answer.
    pub async fn ask(&self, op: HookOp, request: HookRequest<'_>) -> Result<Allowed, HubError> {
        let Some(url) = self.url(op) else {
            return Ok(Allowed::default());
        };
        let started = Instant::now();
        let result = self.exchange(op, url, request).await;
        let outcome = match &result {
            Ok(_) => Outcome::Allowed,
            Err((outcome, _)) => *outcome,
        };
        bump(&self.metrics.hook_requests[op.index()][outcome as usize]);
        self.metrics.hook_latency.observe(started.elapsed());
        if let Err((outcome, error)) = &result {
            tracing::info!(
                hook = op.as_str(),
                client = request.client,
                client_addr = %request.addr.ip(),
                outcome = outcome.as_str(),
                "{error}"
            );
        }
        result.map_err(|(_, error)| error)
    }

    async fn exchange(
        &self,
        op: HookOp,
        url: &str,
        request: HookRequest<'_>,
    ) -> Result<Allowed, (Outcome, HubError)> {
        let failed = |why: String| {
            (
                Outcome::Failed,
                HubError::new(
                    ErrorCode::Unavailable,
                    format!("the {} hook failed: {url} {why}", op.as_str()),
                ),
            )
        };
        let Ok(_permit) = self.in_flight.clone().try_acquire_owned() else {
            return Err(failed(format!(
                "was not asked: {} hook requests in flight already (proxy.max_in_flight)",
                self.config.max_in_flight
            )));
        };
        let addr = request.addr;
        let remote_addr = if addr.proxy().is_none() {
            addr.peer().to_string()
        } else {
            // Behind a proxy the client's port is not known.
            std::net::SocketAddr::new(addr.ip(), 0).to_string()
        };
        let body = Body {
            op: op.as_str(),
            client: request.client,
            remote_addr,
            headers: request.headers.map(RequestHeaders::to_json),
            user: request.user,
            channel: request.channel,
            data: request.data,
        };
        let body = serde_json::to_vec(&body).map_err(|err| failed(format!("(JSON: {err})")))?;
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let answer = self
            .client
            .post_json(url, Bytes::from(body), timeout, self.max_answer)
            .await
            .map_err(failed)?;
        let answer: Answer = serde_json::from_slice(&answer).map_err(|err| {
            failed(format!(
                "answered no JSON object {{\"result\":...}} or {{\"error\":...}}: {err}"
            ))
        })?;
        match answer {
            Answer {
                error: Some(denial),
                ..
            } => Err((Outcome::Denied, denial_error(op, denial))),
            Answer {
                result: Some(allowed),
                ..
            } => {
                check_allowed(op, &allowed).map_err(failed)?;
                Ok(allowed)
            }
            _ => Err(failed(
                "answered neither \"result\" nor \"error\"".to_string(),
            )),
        }
    }
}

/// The client's error for a backend's denial.
fn denial_error(op: HookOp, denial: Denial) -> HubError {
    let given = match &denial.code {
        Value::String(code) => code.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let message = denial
        .message
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| format!("the {} hook denied the request", op.as_str()));
    let message: String = message.chars().take(1024).collect();
    match PASSED_CODES.iter().find(|code| code.as_str() == given) {
        Some(code) => HubError::new(*code, message),
        None if given.is_empty() => HubError::new(ErrorCode::Forbidden, message),
        None => {
            let given: String = given.chars().take(64).collect();
            HubError::new(
                ErrorCode::Forbidden,
                format!("{message} (backend code {given})"),
            )
        }
    }
}

/// Checks what an allow carries.
fn check_allowed(op: HookOp, allowed: &Allowed) -> Result<(), String> {
    if op == HookOp::Connect {
        if let Some(info) = &allowed.info {
            let size = info.to_string().len();
            if size > MAX_INFO_SIZE {
                return Err(format!(
                    "answered an info of {size} bytes, over the limit of {MAX_INFO_SIZE}"
                ));
            }
        }
        if let Some(user) = &allowed.user
            && user.len() > 256
        {
            return Err(format!("answered a user of {} bytes, over 256", user.len()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_kept_are_bounded_and_joined() {
        let mut headers = HeaderMap::new();
        headers.append("cookie", "a=1".parse().unwrap());
        headers.append("cookie", "b=2".parse().unwrap());
        headers.append("user-agent", "test".parse().unwrap());
        headers.append("x-secret", "no".parse().unwrap());
        let kept = RequestHeaders::capture(&headers, 8192);
        assert_eq!(
            kept.to_json(),
            serde_json::json!({"cookie": "a=1; b=2", "user-agent": "test"})
        );
        // Over the bound: the cookie (first) fits, the user agent does not.
        let kept = RequestHeaders::capture(&headers, 16);
        assert_eq!(kept.to_json(), serde_json::json!({"cookie": "a=1; b=2"}));
    }

    #[test]
    fn denials_keep_known_codes_only() {
        let denial = |code: Value, message: Option<&str>| Denial {
            code,
            message: message.map(String::from),
        };
        let e = denial_error(
            HookOp::Connect,
            denial("unauthorized".into(), Some("log in")),
        );
        assert_eq!(e, HubError::new(ErrorCode::Unauthorized, "log in"));
        let e = denial_error(HookOp::Subscribe, denial(4403.into(), Some("no")));
        assert_eq!(
            e,
            HubError::new(ErrorCode::Forbidden, "no (backend code 4403)")
        );
        let e = denial_error(HookOp::Publish, denial(Value::Null, None));
        assert_eq!(e.code, ErrorCode::Forbidden);
        assert!(e.message.contains("publish hook"), "{e}");
    }

    #[test]
    fn config_is_checked() {
        assert!(ProxyConfig::default().validate().is_ok());
        let bad = ProxyConfig {
            connect: Some("ftp://x".into()),
            ..ProxyConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("proxy.connect"));
        let bad = ProxyConfig {
            max_in_flight: 0,
            ..ProxyConfig::default()
        };
        assert!(bad.validate().is_err());
    }

    #[tokio::test]
    async fn a_backend_that_is_down_denies_with_unavailable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let config = ProxyConfig {
            connect: Some(format!("http://127.0.0.1:{port}/connect")),
            ..ProxyConfig::default()
        };
        let metrics = Arc::new(Metrics::default());
        let hooks = Hooks::new(&config, metrics.clone(), 1024);
        let addr = ClientAddr::direct("127.0.0.1:5000".parse().unwrap());
        let request = HookRequest {
            client: "c1",
            addr,
            headers: None,
            user: None,
            channel: None,
            data: None,
        };
        let err = hooks.ask(HookOp::Connect, request).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::Unavailable);
        assert!(err.message.contains("connect hook"), "{err}");
        assert!(
            metrics
                .render()
                .contains("duplex_hook_requests_total{op=\"connect\",outcome=\"failed\"} 1\n")
        );
        // No hook for subscribe: allowed, nothing asked.
        assert_eq!(
            hooks.ask(HookOp::Subscribe, request).await,
            Ok(Allowed::default())
        );
    }
}
